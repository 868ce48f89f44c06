//! The network daemon: forwarded, target-instance, alias and IPv6 addresses as
//! local routes on the NIC metadata names by MAC, secondary NICs brought up with DHCP, and
//! DHCPv6 on the primary NIC. `google_ip_forwarding_daemon` and `google_network_daemon`
//! run it alone; `google_guest_daemon` runs it as one of its threads.
//!
//! Its slice is `instance.networkInterfaces` and nothing else. It keeps no route state:
//! every update reads the NICs from `/sys/class/net`, dumps the kernel's owned routes
//! (table local, type local, protocol `ethernet_proto_id`) and diffs them against metadata,
//! adding the missing ones first and then deleting the stale ones, over netlink
//! ([`crate::netlink`]). A change costs one request per route that changes.
//!
//! - [`plan`]: metadata -> wanted routes per NIC, the diff, the log line (pure).
//! - [`nics`]: the MAC -> interface map from sysfs.
//! - [`dhcp`]: which DHCP commands bring up secondary NICs and DHCPv6, and running them.
//! - [`routes`]: the kernel's owned local routes brought to what the NICs want (reconcile).
//! - [`daemon`]: the daemon — on each update, NICs, routes, DHCP, and notes logged once.
//! - here: the switches ([`Options`]) and the logger names.
//!
//! Switches: routes are managed when `[NetworkInterfaces] ip_forwarding` AND `[Daemons]
//! ip_forwarding_daemon` are true (both default true; 2.8 ORed them, so turning one off did
//! nothing — here either one turns route management off, which is what an administrator
//! who touched one of them meant). Secondary NICs need `[NetworkInterfaces] setup`; DHCPv6
//! on the primary needs `setup` and `primary_ipv6`. The thread runs in
//! `google_guest_daemon` when `[Daemons] network_daemon` is true and any of that is on.
//!
//! Bad input is logged once and never removes anything: a missing or malformed
//! `networkInterfaces` changes nothing; an unknown MAC leaves that NIC alone (and is looked
//! for again every 30 s, as a hot-plugged NIC may show up after its metadata); a NIC whose
//! entry has unusable values gets its missing routes but loses none that round.

pub(crate) mod daemon;
pub(crate) mod dhcp;
pub mod nics;
pub mod plan;
pub(crate) mod routes;

use std::path::PathBuf;
use std::time::Duration;

use crate::settings::Settings;
pub(crate) use daemon::NetworkDaemon;
use plan::AddressOptions;
pub use routes::{reconcile, FoundNic, Reconciled};

/// Whether the guest daemon runs the network daemon: `[Daemons] network_daemon` and
/// something to do (routes or secondary NICs).
pub(crate) fn enabled(settings: &Settings) -> bool {
    let options = Options::from_settings(settings);
    settings.daemons.network_daemon && (options.forwarding || options.setup)
}

/// The daemon thread's logger name (2.8's network daemon).
pub(crate) const NETWORKING_LOGGER: &str = "google-networking";
/// The logger name of route changes (2.8's IP-forwarding part and the 2016 daemon).
pub(crate) const ROUTES_LOGGER: &str = "google-ip-forwarding";
/// The logger name of secondary-NIC setup (2.8's network setup).
pub(crate) const SETUP_LOGGER: &str = "network-setup";
/// The default `[IpForwarding] ethernet_proto_id`.
pub(crate) const DEFAULT_PROTOCOL: u8 = 66;
/// How often NICs are looked for again while metadata names a MAC the kernel lacks.
pub(crate) const UNKNOWN_MAC_RETRY: Duration = Duration::from_secs(30);

/// The daemon's switches and settings, from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// Manage local routes.
    pub forwarding: bool,
    /// Bring up secondary NICs.
    pub setup: bool,
    /// DHCPv6 on the primary NIC.
    pub primary_ipv6: bool,
    /// The route protocol that marks our routes.
    pub protocol: u8,
    /// Which address lists count.
    pub addresses: AddressOptions,
    /// `[NetworkInterfaces] dhcp_command`.
    pub dhcp_command: String,
    /// `[NetworkInterfaces] dhclient_script`.
    pub dhclient_script: PathBuf,
}

/// The route protocol id to use for a configured `ethernet_proto_id`: 5..=255. 0 would
/// match routes of every protocol and 1..=4 are the kernel's own (`kernel`, `boot`,
/// `static`), so owning them could delete routes the system needs.
pub(crate) fn protocol_id(configured: u64) -> std::result::Result<u8, String> {
    match u8::try_from(configured) {
        Ok(id) if id > 4 => Ok(id),
        _ => Err(format!(
            "[IpForwarding] ethernet_proto_id = {} cannot mark our routes (use 5 to 255); using {}.",
            configured, DEFAULT_PROTOCOL
        )),
    }
}

impl Options {
    /// Reads the options, logging a warning for an unusable protocol id.
    pub(crate) fn from_settings(settings: &Settings) -> Options {
        let network = &settings.network;
        let protocol = protocol_id(network.ethernet_proto_id).unwrap_or_else(|message| {
            warn!("{}", message);
            DEFAULT_PROTOCOL
        });
        Options {
            forwarding: network.ip_forwarding && settings.daemons.ip_forwarding_daemon,
            setup: network.setup,
            primary_ipv6: network.primary_ipv6,
            protocol,
            addresses: AddressOptions {
                target_instance_ips: network.target_instance_ips,
                ip_aliases: network.ip_aliases,
            },
            dhcp_command: network.dhcp_command.clone(),
            dhclient_script: PathBuf::from(&network.dhclient_script),
        }
    }
}

/// Runs `f` with this thread's log lines carrying `name`, then restores the previous name
/// (also when `f` panics).
pub(crate) fn as_logger<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    struct Restore(&'static str);
    impl Drop for Restore {
        fn drop(&mut self) {
            crate::log::set_thread_name(self.0);
        }
    }
    let _restore = Restore(crate::log::current_name());
    crate::log::set_thread_name(name);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_ids_that_could_own_system_routes_are_refused() {
        assert_eq!(protocol_id(66), Ok(66));
        assert_eq!(protocol_id(5), Ok(5));
        assert_eq!(protocol_id(255), Ok(255));
        for bad in [0, 1, 2, 3, 4, 256, u64::MAX] {
            assert!(protocol_id(bad).is_err(), "{}", bad);
        }
    }

    #[test]
    fn switches_follow_the_configuration() {
        let defaults = Options::from_settings(&Settings::parse("", "test"));
        assert!(defaults.forwarding && defaults.setup && defaults.primary_ipv6);
        assert_eq!(defaults.protocol, 66);
        assert_eq!(
            defaults.addresses,
            AddressOptions {
                target_instance_ips: true,
                ip_aliases: true
            }
        );
        for text in [
            "[Daemons]\nip_forwarding_daemon = false\n",
            "[NetworkInterfaces]\nip_forwarding = false\n",
        ] {
            let options = Options::from_settings(&Settings::parse(text, "test"));
            assert!(
                !options.forwarding,
                "either switch turns routes off: {}",
                text
            );
            assert!(enabled(&Settings::parse(text, "test")), "setup still runs");
        }
        let off = Settings::parse(
            "[Daemons]\nip_forwarding_daemon = false\n[NetworkInterfaces]\nsetup = false\n",
            "test",
        );
        assert!(!enabled(&off));
        assert!(!enabled(&Settings::parse(
            "[Daemons]\nnetwork_daemon = false\n",
            "test"
        )));
        let odd = Options::from_settings(&Settings::parse(
            "[IpForwarding]\nethernet_proto_id = 2\nip_aliases = no\n",
            "test",
        ));
        assert_eq!((odd.protocol, odd.addresses.ip_aliases), (66, false));
    }

    #[test]
    fn logger_names_are_restored() {
        crate::log::set_thread_name(NETWORKING_LOGGER);
        as_logger(ROUTES_LOGGER, || {
            assert_eq!(crate::log::current_name(), ROUTES_LOGGER)
        });
        assert_eq!(crate::log::current_name(), NETWORKING_LOGGER);
        let _ = std::panic::catch_unwind(|| as_logger(SETUP_LOGGER, || panic!("boom")));
        assert_eq!(crate::log::current_name(), NETWORKING_LOGGER);
    }
}
