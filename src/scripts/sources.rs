//! Which scripts run and where they come from, pure: the `<type>-script-url` and
//! `<type>-script` attributes of the instance (else the project), and how a script URL maps
//! to the address really fetched (Cloud Storage forms to the storage API host).

use tinyjson::JsonValue;

use super::ScriptType;
use crate::json;

/// The Cloud Storage API host.
pub(super) const STORAGE_ENDPOINT: &str = "https://storage.googleapis.com";

/// Where a script comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Text straight from the attribute.
    Inline(String),
    /// An address to download it from.
    Url(String),
}

/// One script to run, named by its metadata key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// The attribute it came from (`startup-script-url`, `startup-script`).
    pub key: String,
    /// Its content or address.
    pub source: Source,
}

/// The scripts of `kind` in a metadata document, in the order they run: instance
/// attributes if they have any of them, else project attributes; the URL one first.
pub fn scripts_in(doc: &JsonValue, kind: ScriptType) -> Vec<Script> {
    let from = |scope: &str| -> Vec<Script> {
        let mut found = Vec::new();
        let url_key = format!("{}-script-url", kind.name());
        let text_key = format!("{}-script", kind.name());
        if let Some(url) = json::lookup_str(doc, &format!("{}/attributes/{}", scope, url_key)) {
            if !url.trim().is_empty() {
                found.push(Script {
                    key: url_key,
                    source: Source::Url(url.trim().to_string()),
                });
            }
        }
        if let Some(text) = json::lookup_str(doc, &format!("{}/attributes/{}", scope, text_key)) {
            let text = text.trim_start();
            if !text.is_empty() {
                found.push(Script {
                    key: text_key,
                    source: Source::Inline(text.to_string()),
                });
            }
        }
        found
    };
    let instance = from("instance");
    if instance.is_empty() {
        from("project")
    } else {
        instance
    }
}

/// Where a URL is really fetched from, and whether it is a Cloud Storage object (which
/// gets the instance's token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// The address to GET.
    pub url: String,
    /// Cloud Storage: send `Authorization: Bearer <token>`.
    pub storage: bool,
}

/// Maps the accepted URL forms onto what is fetched; `Err` says why a URL is refused.
pub fn resolve_url(url: &str, storage_endpoint: &str) -> std::result::Result<Download, String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains white space".into());
    }
    let storage = |bucket_and_object: &str| -> std::result::Result<Download, String> {
        let (bucket, object) = bucket_and_object
            .split_once('/')
            .unwrap_or((bucket_and_object, ""));
        if bucket.is_empty() || object.is_empty() {
            return Err("it names no bucket and object".into());
        }
        Ok(Download {
            url: format!(
                "{}/{}/{}",
                storage_endpoint.trim_end_matches('/'),
                bucket,
                object
            ),
            storage: true,
        })
    };
    if let Some(rest) = url.strip_prefix("gs://") {
        return storage(rest);
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("it has no scheme (gs://, https:// or http://)".into());
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("scheme {} is not supported", scheme));
    }
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err("it names no host".into());
    }
    match host {
        "storage.googleapis.com"
        | "storage.cloud.google.com"
        | "commondatastorage.googleapis.com" => storage(path),
        _ => match host.strip_suffix(".storage.googleapis.com") {
            Some(bucket) if !bucket.is_empty() => storage(&format!("{}/{}", bucket, path)),
            _ => Ok(Download {
                url: url.to_string(),
                storage: false,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> JsonValue {
        json::parse_json(text).unwrap()
    }

    #[test]
    fn instance_scripts_win_over_project_scripts_as_a_whole() {
        let d = doc(r#"{"instance":{"attributes":{"startup-script":"  echo i"}},
                        "project":{"attributes":{"startup-script-url":"gs://b/o","startup-script":"echo p"}}}"#);
        let s = scripts_in(&d, ScriptType::Startup);
        assert_eq!(
            s,
            vec![Script {
                key: "startup-script".into(),
                source: Source::Inline("echo i".into())
            }]
        );
        let d = doc(r#"{"instance":{"attributes":{}},
                        "project":{"attributes":{"startup-script-url":"gs://b/o","startup-script":"echo p"}}}"#);
        let s = scripts_in(&d, ScriptType::Startup);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].key, "startup-script-url", "the URL script runs first");
        assert!(scripts_in(&d, ScriptType::Shutdown).is_empty());
    }

    #[test]
    fn storage_urls_of_every_form_map_to_the_json_api_host() {
        let ep = STORAGE_ENDPOINT;
        for url in [
            "gs://bucket/dir/obj.sh",
            "https://bucket.storage.googleapis.com/dir/obj.sh",
            "https://storage.googleapis.com/bucket/dir/obj.sh",
            "https://storage.cloud.google.com/bucket/dir/obj.sh",
            "http://storage.googleapis.com/bucket/dir/obj.sh",
        ] {
            let d = resolve_url(url, ep).unwrap();
            assert_eq!(
                d.url, "https://storage.googleapis.com/bucket/dir/obj.sh",
                "{}",
                url
            );
            assert!(d.storage);
        }
        let d = resolve_url("https://example.com/s.sh", ep).unwrap();
        assert_eq!(
            d,
            Download {
                url: "https://example.com/s.sh".into(),
                storage: false
            }
        );
        assert!(resolve_url("gs://bucket", ep).is_err());
        assert!(resolve_url("example.com/s.sh", ep).is_err());
        assert!(resolve_url("https://example.com/a b.sh", ep).is_err());
        assert!(resolve_url("ftp://example.com/s.sh", ep).is_err());
        let local = resolve_url("gs://b/o", "http://127.0.0.1:8000/").unwrap();
        assert_eq!(local.url, "http://127.0.0.1:8000/b/o");
    }
}
