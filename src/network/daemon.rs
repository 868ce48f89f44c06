//! The network daemon: on each change of `instance.networkInterfaces` (and while an
//! unknown MAC is looked for again) it reads the NICs, reconciles their routes, brings up
//! secondary NICs and DHCPv6, and logs what it skipped once while it lasts.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tinyjson::JsonValue;

use super::nics::{self, Link};
use super::plan::{self, NicEntry};
use super::routes::{merge_by_link, reconcile};
use super::{
    as_logger, dhcp, Options, NETWORKING_LOGGER, ROUTES_LOGGER, SETUP_LOGGER, UNKNOWN_MAC_RETRY,
};
use crate::error::{Context, Result};
use crate::json::{self, Slice};
use crate::log::{Level, LogOnce};
use crate::netlink::Netlink;
use crate::settings::Settings;

/// How many unusable values of one NIC are logged one by one.
const LOGGED_REFUSALS: usize = 10;

/// Something worth one log line, logged when it first appears (not on every update).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Notice {
    logger: &'static str,
    level: Level,
    text: String,
}

fn notice(logger: &'static str, level: Level, text: String) -> Notice {
    Notice {
        logger,
        level,
        text,
    }
}

/// The notices of the last update, so each is logged once while it lasts.
#[derive(Default)]
struct NoticeLog {
    once: LogOnce,
}

impl NoticeLog {
    /// Logs the notices that were not in the previous report, and remembers this one.
    fn report(&mut self, notices: &[Notice]) {
        for n in notices {
            if self.once.first_time(&n.text) {
                as_logger(n.logger, || {
                    crate::log::write(n.level, format_args!("{}", n.text))
                });
            }
        }
        self.once.end_round();
    }
}

/// The network daemon. Route state is re-read from the kernel on every update; what it
/// remembers is only what 2.8 remembered (which secondary NICs it last brought up) and
/// what it already logged.
pub struct NetworkDaemon {
    options: Options,
    sys_class_net: PathBuf,
    notes: NoticeLog,
    secondaries: BTreeSet<String>,
    dhcpv6_on: Option<String>,
    last: Option<Arc<JsonValue>>,
    look_again_at: Option<Instant>,
}

impl NetworkDaemon {
    /// A daemon configured by `settings`.
    pub fn new(settings: &Settings) -> NetworkDaemon {
        NetworkDaemon {
            options: Options::from_settings(settings),
            sys_class_net: PathBuf::from(nics::SYS_CLASS_NET),
            notes: NoticeLog::default(),
            secondaries: BTreeSet::new(),
            dhcpv6_on: None,
            last: None,
            look_again_at: None,
        }
    }

    /// Acts on `instance.networkInterfaces` (`None` when the document lacks it).
    fn update(&mut self, interfaces: Option<&JsonValue>) -> Result<()> {
        self.look_again_at = None;
        let mut notes = Vec::new();
        let entries = match plan::read_interfaces(interfaces, self.options.addresses) {
            Ok(entries) => entries,
            Err(why) => {
                let text = format!(
                    "{}; leaving routes and interfaces as they are.",
                    why.describe()
                );
                self.notes
                    .report(&[notice(NETWORKING_LOGGER, Level::Warning, text)]);
                return Ok(());
            }
        };
        let links = nics::read_links(&self.sys_class_net).context("read", &self.sys_class_net)?;
        let mut found: Vec<(&NicEntry, &Link)> = Vec::new();
        for entry in &entries {
            refusal_notes(entry, &mut notes);
            let Some(mac) = &entry.mac else { continue };
            match nics::find_by_mac(&links, mac) {
                Some(link) => found.push((entry, link)),
                None => {
                    notes.push(notice(
                        NETWORKING_LOGGER,
                        Level::Warning,
                        format!("Network interface not found for MAC address: {}.", mac),
                    ));
                    self.look_again_at =
                        Some(Instant::now() + crate::timing::scaled(UNKNOWN_MAC_RETRY));
                }
            }
        }
        if self.options.setup {
            self.set_up_secondaries(&found);
            if self.options.primary_ipv6 {
                self.dhcpv6_on_primary(&found);
            }
        }
        let mut outcome = Ok(());
        let nics = merge_by_link(&found);
        if self.options.forwarding && !nics.is_empty() {
            for nic in nics.iter().filter(|n| !n.may_remove) {
                notes.push(notice(
                    ROUTES_LOGGER,
                    Level::Warning,
                    format!(
                        "Not removing routes from {} while its metadata has unusable addresses.",
                        nic.link.name
                    ),
                ));
            }
            let mut route_notes = Vec::new();
            outcome = Netlink::open()
                .map_err(|e| e.into_error("open a netlink socket"))
                .and_then(|mut nl| {
                    reconcile(&mut nl, self.options.protocol, &nics, &mut route_notes)
                })
                .map(|_| ());
            notes.extend(
                route_notes
                    .into_iter()
                    .map(|t| notice(ROUTES_LOGGER, Level::Warning, t)),
            );
        }
        self.notes.report(&notes);
        outcome
    }

    /// Brings up the secondary NICs when their set changed (2.8: not when it is empty).
    fn set_up_secondaries(&mut self, found: &[(&NicEntry, &Link)]) {
        let names: Vec<String> = found
            .iter()
            .filter(|(e, _)| e.index >= 1)
            .map(|(_, l)| l.name.clone())
            .collect();
        let set: BTreeSet<String> = names.iter().cloned().collect();
        if names.is_empty() || set == self.secondaries {
            return;
        }
        self.secondaries = set;
        let script = Some(self.options.dhclient_script.as_path()).filter(|p| p.is_file());
        let client = dhcp::find_client();
        let steps =
            dhcp::secondary_steps(&names, &self.options.dhcp_command, client.as_ref(), script);
        as_logger(SETUP_LOGGER, || {
            let quoted: Vec<String> = names.iter().map(|n| format!("'{}'", n)).collect();
            info!("Ethernet interfaces: [{}].", quoted.join(", "));
            if steps.is_empty() {
                warn!("No DHCP client (dhclient or udhcpc) to enable Ethernet interfaces with.");
            } else if !dhcp::run_steps(&steps) {
                warn!("Could not enable Ethernet interfaces.");
            }
        });
    }

    /// Runs DHCPv6 on the primary NIC when its entry carries `dhcpv6Refresh`, once per NIC.
    fn dhcpv6_on_primary(&mut self, found: &[(&NicEntry, &Link)]) {
        let custom_dhcp = !self.options.dhcp_command.trim().is_empty();
        let wanted = found
            .iter()
            .find(|(e, _)| e.index == 0 && e.dhcpv6_refresh && !custom_dhcp)
            .map(|(_, l)| l.name.clone());
        if wanted == self.dhcpv6_on {
            return;
        }
        self.dhcpv6_on = wanted.clone();
        let Some(name) = wanted else { return };
        let steps = dhcp::dhcpv6_steps(&name, dhcp::find_client6().as_ref());
        as_logger(SETUP_LOGGER, || {
            info!("Enabling IPv6 on {} with DHCPv6.", name);
            if steps.is_empty() {
                warn!(
                    "No DHCPv6 client (dhclient or udhcpc6) to enable IPv6 on {} with.",
                    name
                );
            } else if !dhcp::run_steps(&steps) {
                warn!("Could not enable IPv6 on {}.", name);
            }
        });
    }
}

/// Notes for the values of one entry that were not used, the first few one by one.
fn refusal_notes(entry: &NicEntry, notes: &mut Vec<Notice>) {
    for refused in entry.refused.iter().take(LOGGED_REFUSALS) {
        let text = if refused.field == "mac" || refused.field == "networkInterfaces" {
            format!(
                "Skipping network interface {}: {} is {}: {}.",
                entry.index, refused.field, refused.reason, refused.value
            )
        } else {
            format!(
                "Could not parse IP address: {} in {} of network interface {} ({}).",
                refused.value, refused.field, entry.index, refused.reason
            )
        };
        notes.push(notice(ROUTES_LOGGER, Level::Warning, text));
    }
    if entry.refused.len() > LOGGED_REFUSALS {
        notes.push(notice(
            ROUTES_LOGGER,
            Level::Warning,
            format!(
                "... and {} more unusable values in network interface {}.",
                entry.refused.len() - LOGGED_REFUSALS,
                entry.index
            ),
        ));
    }
}

fn interfaces(doc: &JsonValue) -> Option<&JsonValue> {
    json::lookup(doc, "instance/networkInterfaces")
}

/// The daemon's side of the runner's calls (see `crate::daemon::Daemon`).
impl NetworkDaemon {
    /// The interface list.
    pub fn slice<'d>(&self, doc: &'d JsonValue) -> Slice<'d> {
        vec![interfaces(doc)]
    }

    /// Brings routes and secondary NICs in line with `doc`.
    pub fn apply(&mut self, doc: &Arc<JsonValue>) -> Result<()> {
        self.last = Some(Arc::clone(doc));
        self.update(interfaces(doc))
    }

    /// When NICs are looked for again (metadata named an unknown MAC).
    pub fn next_wake(&self) -> Option<Instant> {
        self.look_again_at
    }

    /// Looks for the NICs again.
    pub fn wake(&mut self) -> Result<()> {
        let last = self.last.clone();
        let outcome = self.update(last.as_deref().and_then(interfaces));
        if outcome.is_err() {
            self.look_again_at = Some(Instant::now() + crate::timing::scaled(UNKNOWN_MAC_RETRY));
        }
        outcome
    }

    /// Takes new settings (SIGHUP).
    pub fn reload(&mut self, settings: &Settings) {
        self.options = Options::from_settings(settings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_logged_once_while_they_last() {
        let mut log = NoticeLog::default();
        let a = notice(ROUTES_LOGGER, Level::Warning, "a".into());
        let b = notice(ROUTES_LOGGER, Level::Warning, "b".into());
        log.report(&[a.clone(), a.clone()]);
        assert_eq!(log.once.len(), 1);
        log.report(&[a.clone(), b.clone()]);
        log.report(&[b]);
        assert!(!log.once.remembers("a"));
    }

    #[test]
    fn the_slice_is_the_interface_list() {
        let daemon = NetworkDaemon::new(&Settings::parse("", "test"));
        let doc = json::parse_json(
            r#"{"instance":{"id":1,"networkInterfaces":[{"mac":"42:01:0a:80:00:02"}]}}"#,
        )
        .unwrap();
        let other = json::parse_json(
            r#"{"instance":{"id":2,"networkInterfaces":[{"mac":"42:01:0a:80:00:02"}]}}"#,
        )
        .unwrap();
        assert_eq!(daemon.slice(&doc).len(), 1);
        assert!(daemon.slice(&doc)[0].is_some());
        assert_eq!(daemon.slice(&doc), daemon.slice(&other));
        assert_eq!(
            daemon.slice(&json::parse_json(r#"{"instance":{}}"#).unwrap()),
            [None]
        );
    }
}
