//! What setup needs from the metadata server, read once at the start: the bounded wait for
//! the server (warn and go on offline, so boot never hangs), the instance id and numeric
//! project id as text (19 digits do not survive a JSON f64), the host name, the primary
//! internal IP, the machine type and the `google-instance-configs` text that feeds
//! [`crate::settings::config::regenerate_at`].

use std::time::Duration;

use tinyjson::JsonValue;

use crate::mds::{self, Client};

/// The metadata facts setup uses; all absent when the server was not reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceFacts {
    /// `instance/id`, as the server's text.
    pub instance_id: Option<String>,
    /// `project/numeric-project-id`, as text.
    pub numeric_project_id: Option<String>,
    /// `instance/hostname` (the FQDN).
    pub hostname: Option<String>,
    /// `instance/network-interfaces/0/ip`.
    pub ip: Option<String>,
    /// `instance/machine-type` (a path ending in the type's name).
    pub machine_type: Option<String>,
    /// `google-instance-configs` (instance, else project).
    pub config_text: Option<String>,
}

impl InstanceFacts {
    /// The facts a recursive metadata document holds (ids come separately, as text).
    pub fn from_document(doc: &JsonValue) -> InstanceFacts {
        let text = |path: &str| crate::json::lookup_str(doc, path).map(str::to_string);
        InstanceFacts {
            instance_id: None,
            numeric_project_id: None,
            hostname: text("instance/hostname"),
            ip: text("instance/networkInterfaces/0/ip"),
            machine_type: text("instance/machineType"),
            config_text: crate::settings::config::metadata_config_text(doc).map(str::to_string),
        }
    }

    /// The machine type's own name is `e2-*`.
    pub fn machine_type_is_e2(&self) -> bool {
        self.machine_type
            .as_deref()
            .and_then(|t| t.rsplit('/').next())
            .is_some_and(|name| name.starts_with("e2-"))
    }
}

/// A metadata id as text: digits only, else `None` (so it can go into a file name or the
/// configuration safely).
pub fn clean_id(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty() && t.len() <= 32 && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.into())
}

/// Waits up to `budget` (scaled) for the metadata server and reads the facts. `None` (with a
/// warning) when it did not answer in time.
pub fn wait_for_metadata(client: &Client, budget: Duration) -> Option<InstanceFacts> {
    let doc = match client.get_json_retrying("", budget) {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            warn!("The metadata server has no document; running the offline steps only.");
            return None;
        }
        Err(e) => {
            warn!(
                "The metadata server was not reachable within {} s ({}); running the offline \
                 steps only.",
                budget.as_secs(),
                e
            );
            return None;
        }
    };
    let mut facts = InstanceFacts::from_document(&doc);
    let short = Duration::from_secs(10);
    let text = |path: &str| match mds::retrying(short, || client.get_text(path)) {
        Ok(Some(t)) => clean_id(&t),
        Ok(None) => None,
        Err(e) => {
            warn!("Could not read {}: {}", path, e);
            None
        }
    };
    facts.instance_id = text("instance/id");
    if facts.instance_id.is_none() {
        warn!("Instance ID was not found in metadata.");
    }
    facts.numeric_project_id = text("project/numeric-project-id");
    Some(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_come_from_the_document() {
        let doc: JsonValue = r#"{"instance": {"hostname": "vm.c.p.internal",
            "machineType": "projects/1/machineTypes/e2-medium",
            "networkInterfaces": [{"ip": "10.0.0.2"}],
            "attributes": {"google-instance-configs": "[A]\na=1\n"}},
            "project": {"attributes": {}}}"#
            .parse()
            .unwrap();
        let facts = InstanceFacts::from_document(&doc);
        assert_eq!(facts.hostname.as_deref(), Some("vm.c.p.internal"));
        assert_eq!(facts.ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(facts.config_text.as_deref(), Some("[A]\na=1\n"));
        assert!(facts.machine_type_is_e2());
        let n2 = InstanceFacts {
            machine_type: Some("projects/1/machineTypes/n2-e2-x".into()),
            ..InstanceFacts::default()
        };
        assert!(!n2.machine_type_is_e2());
        assert!(!InstanceFacts::default().machine_type_is_e2());
    }

    #[test]
    fn ids_are_digits_kept_as_text() {
        assert_eq!(
            clean_id("1234567890123456789\n").as_deref(),
            Some("1234567890123456789")
        );
        assert_eq!(clean_id("12a"), None);
        assert_eq!(clean_id(""), None);
        assert_eq!(clean_id("../1"), None);
    }
}
