//! The network daemon (SPEC §5): forwarded, target-instance, alias and IPv6 addresses as
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

pub mod dhcp;
pub mod nics;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tinyjson::JsonValue;

use crate::error::{Error, Result};
use crate::log::Level;
use crate::mds;
use crate::netlink::route::{add_local, delete_local, list_local, Change, LocalRoute};
use crate::netlink::wire::{AF_INET, AF_INET6};
use crate::netlink::{Netlink, NetlinkError, Transport};
use crate::settings::Settings;
use nics::Link;
use plan::{AddressOptions, NicEntry, NicPlan, Prefix};

/// Whether the guest daemon runs the network daemon: `[Daemons] network_daemon` and
/// something to do (routes or secondary NICs).
pub fn enabled(settings: &Settings) -> bool {
    let options = Options::from_settings(settings);
    settings.daemons.network_daemon && (options.forwarding || options.setup)
}

/// The daemon thread's logger name (2.8's network daemon).
pub const NETWORKING_LOGGER: &str = "google-networking";
/// The logger name of route changes (2.8's IP-forwarding part and the 2016 daemon).
pub const ROUTES_LOGGER: &str = "google-ip-forwarding";
/// The logger name of secondary-NIC setup (2.8's network setup).
pub const SETUP_LOGGER: &str = "network-setup";
/// The default `[IpForwarding] ethernet_proto_id`.
pub const DEFAULT_PROTOCOL: u8 = 66;
/// How often NICs are looked for again while metadata names a MAC the kernel lacks.
pub const UNKNOWN_MAC_RETRY: Duration = Duration::from_secs(30);
/// How many unusable values of one NIC are logged one by one.
const LOGGED_REFUSALS: usize = 10;

/// The daemon's switches and settings, from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
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
pub fn protocol_id(configured: u64) -> std::result::Result<u8, String> {
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
    pub fn from_settings(settings: &Settings) -> Options {
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
fn as_logger<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
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

/// Something worth one log line, logged when it first appears (not on every update).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Note {
    logger: &'static str,
    level: Level,
    text: String,
}

fn note(logger: &'static str, level: Level, text: String) -> Note {
    Note {
        logger,
        level,
        text,
    }
}

/// The notes of the last update, so each is logged once while it lasts.
#[derive(Default)]
struct NoteLog {
    shown: BTreeSet<String>,
}

impl NoteLog {
    /// Logs the notes that were not in the previous report, and remembers this one.
    fn report(&mut self, notes: &[Note]) {
        let mut current = BTreeSet::new();
        for n in notes {
            if !self.shown.contains(&n.text) && !current.contains(&n.text) {
                as_logger(n.logger, || {
                    crate::log::write(n.level, format_args!("{}", n.text))
                });
            }
            current.insert(n.text.clone());
        }
        self.shown = current;
    }
}

/// The kernel errors after which trying the same route again cannot help.
fn is_permanent(errno: i32) -> bool {
    [
        libc::EINVAL,
        libc::EAFNOSUPPORT,
        libc::ERANGE,
        libc::EOPNOTSUPP,
        libc::EACCES,
    ]
    .contains(&errno)
}

/// What one reconcile did, for tests and the bench.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Routes added (including ones the kernel already had under another owner).
    pub added: usize,
    /// Routes deleted.
    pub removed: usize,
    /// Netlink requests sent (dumps included).
    pub requests: usize,
}

/// The NICs metadata names that the kernel has, each with its wanted routes (entries
/// naming the same NIC merged) and whether stale routes may be removed from it.
pub struct FoundNic {
    pub link: Link,
    pub wanted: Vec<Prefix>,
    pub may_remove: bool,
}

/// Brings the owned local routes of the `found` NICs to what they want, over `nl`: dumps
/// both families once, adds what is missing on every NIC, then deletes what is stale, then
/// re-adds an address that moved between NICs (its add met the old route). Routes of other
/// protocols, and of NICs not in `found`, are never touched. Logs one line per changed NIC.
pub fn reconcile<T: Transport>(
    nl: &mut Netlink<T>,
    protocol: u8,
    found: &[FoundNic],
    notes: &mut Vec<String>,
) -> Result<Reconciled> {
    let mut done = Reconciled::default();
    let mut configured: BTreeMap<u32, Vec<Prefix>> = BTreeMap::new();
    for family in [AF_INET, AF_INET6] {
        done.requests += 1;
        match list_local(nl, family, protocol) {
            Ok(routes) => {
                for route in routes {
                    configured.entry(route.ifindex).or_default().push(Prefix {
                        addr: route.dst,
                        len: route.prefix_len,
                    });
                }
            }
            Err(e) if family == AF_INET6 && e.kernel_errno() == Some(libc::EAFNOSUPPORT) => {}
            Err(e) => return Err(e.into_error("list the local routes")),
        }
    }
    let plans: Vec<(&Link, NicPlan)> = found
        .iter()
        .map(|nic| {
            let have = configured
                .get(&nic.link.ifindex)
                .map(Vec::as_slice)
                .unwrap_or_default();
            (&nic.link, plan::plan_nic(have, &nic.wanted, nic.may_remove))
        })
        .collect();
    as_logger(ROUTES_LOGGER, || {
        for (link, plan) in &plans {
            if let Some(line) = plan::change_line(&link.name, plan) {
                info!("{}", line);
            }
        }
    });
    let mut retryable = 0usize;
    let mut failed = |what: &str, prefix: &Prefix, link: &Link, e: NetlinkError| -> Result<()> {
        match e.kernel_errno() {
            Some(errno) if is_permanent(errno) => {
                notes.push(format!(
                    "Could not {} {} on {}: {}.",
                    what, prefix, link.name, e
                ));
                Ok(())
            }
            Some(_) => {
                as_logger(ROUTES_LOGGER, || {
                    warn!("Could not {} {} on {}: {}.", what, prefix, link.name, e)
                });
                retryable += 1;
                Ok(())
            }
            None => Err(e.into_error("change a local route")),
        }
    };
    let route_of = |link: &Link, prefix: &Prefix| LocalRoute {
        dst: prefix.addr,
        prefix_len: prefix.len,
        ifindex: link.ifindex,
    };
    let mut met_old_route: Vec<(&Link, Prefix)> = Vec::new();
    for (link, plan) in &plans {
        for prefix in &plan.add {
            done.requests += 1;
            match add_local(nl, &route_of(link, prefix), protocol) {
                Ok(Change::Made) => done.added += 1,
                Ok(Change::AlreadySo) => met_old_route.push((link, *prefix)),
                Err(e) => failed("add", prefix, link, e)?,
            }
        }
    }
    let mut removed: BTreeSet<(IpAddr, u8)> = BTreeSet::new();
    for (link, plan) in &plans {
        for prefix in &plan.remove {
            done.requests += 1;
            match delete_local(nl, &route_of(link, prefix), protocol) {
                Ok(Change::Made) => {
                    done.removed += 1;
                    removed.insert((prefix.addr, prefix.len));
                }
                Ok(Change::AlreadySo) => {}
                Err(e) => failed("remove", prefix, link, e)?,
            }
        }
    }
    for (link, prefix) in met_old_route {
        if removed.contains(&(prefix.addr, prefix.len)) {
            done.requests += 1;
            match add_local(nl, &route_of(link, &prefix), protocol) {
                Ok(_) => done.added += 1,
                Err(e) => failed("add", &prefix, link, e)?,
            }
        }
    }
    if retryable > 0 {
        return Err(Error::Msg(format!(
            "{} local route change(s) failed",
            retryable
        )));
    }
    Ok(done)
}

/// The network daemon. Route state is re-read from the kernel on every update; what it
/// remembers is only what 2.8 remembered (which secondary NICs it last brought up) and
/// what it already logged.
pub struct NetworkDaemon {
    options: Options,
    sys_class_net: PathBuf,
    notes: NoteLog,
    secondaries: BTreeSet<String>,
    dhcpv6_on: Option<String>,
    last: Option<JsonValue>,
    look_again_at: Option<Instant>,
}

impl NetworkDaemon {
    /// A daemon configured by `settings`.
    pub fn new(settings: &Settings) -> NetworkDaemon {
        NetworkDaemon {
            options: Options::from_settings(settings),
            sys_class_net: PathBuf::from(nics::SYS_CLASS_NET),
            notes: NoteLog::default(),
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
                    .report(&[note(NETWORKING_LOGGER, Level::Warning, text)]);
                return Ok(());
            }
        };
        let links = nics::read_links(&self.sys_class_net)
            .map_err(|e| Error::io("read", &self.sys_class_net, e))?;
        let mut found: Vec<(&NicEntry, &Link)> = Vec::new();
        for entry in &entries {
            refusal_notes(entry, &mut notes);
            let Some(mac) = &entry.mac else { continue };
            match nics::find_by_mac(&links, mac) {
                Some(link) => found.push((entry, link)),
                None => {
                    notes.push(note(
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
                notes.push(note(
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
                    .map(|t| note(ROUTES_LOGGER, Level::Warning, t)),
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
fn refusal_notes(entry: &NicEntry, notes: &mut Vec<Note>) {
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
        notes.push(note(ROUTES_LOGGER, Level::Warning, text));
    }
    if entry.refused.len() > LOGGED_REFUSALS {
        notes.push(note(
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

/// One [`FoundNic`] per kernel interface: entries naming the same MAC are merged.
fn merge_by_link(found: &[(&NicEntry, &Link)]) -> Vec<FoundNic> {
    let mut nics: Vec<FoundNic> = Vec::new();
    for (entry, link) in found {
        match nics.iter_mut().find(|n| n.link.ifindex == link.ifindex) {
            Some(nic) => {
                for prefix in &entry.wanted {
                    if !nic.wanted.contains(prefix) {
                        nic.wanted.push(*prefix);
                    }
                }
                nic.may_remove &= entry.refused.is_empty();
            }
            None => nics.push(FoundNic {
                link: (*link).clone(),
                wanted: entry.wanted.clone(),
                may_remove: entry.refused.is_empty(),
            }),
        }
    }
    nics
}

/// The daemon's side of the runner's calls (see `crate::daemon::Daemon`).
impl NetworkDaemon {
    /// The interface list.
    pub fn slice(&self, doc: &JsonValue) -> Option<JsonValue> {
        mds::lookup(doc, "instance/networkInterfaces").cloned()
    }

    /// Brings routes and secondary NICs in line with `doc`.
    pub fn apply(&mut self, doc: &JsonValue) -> Result<()> {
        self.last = self.slice(doc);
        let last = self.last.clone();
        self.update(last.as_ref())
    }

    /// When NICs are looked for again (metadata named an unknown MAC).
    pub fn next_wake(&self) -> Option<Instant> {
        self.look_again_at
    }

    /// Looks for the NICs again.
    pub fn wake(&mut self) -> Result<()> {
        let last = self.last.clone();
        let outcome = self.update(last.as_ref());
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
    use crate::netlink::route::{local_route_message, owned_local_route};
    use crate::netlink::socket::fake::{done, error_reply, header, Datagram, FakeKernel, PORT};
    use crate::netlink::wire::{
        Messages, RouteMessage, NLM_F_MULTI, RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE,
    };
    use std::cell::RefCell;
    use std::rc::Rc;

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

    /// A fake kernel holding a route table: dumps list it, adds and deletes change it with
    /// the kernel's answers (EEXIST for any route to the same destination, ESRCH when no
    /// route of that protocol matches).
    #[derive(Default)]
    struct Table {
        routes: Vec<(LocalRoute, u8)>,
        requests: Vec<u16>,
    }

    fn kernel(table: Rc<RefCell<Table>>) -> FakeKernel<impl FnMut(&[u8]) -> Vec<Datagram>> {
        FakeKernel::new(move |request| {
            let mut t = table.borrow_mut();
            let (h, payload) = Messages::new(request).next().unwrap().unwrap();
            t.requests.push(h.kind);
            let route = RouteMessage::decode(payload).unwrap();
            match h.kind {
                RTM_GETROUTE => {
                    let mut replies = Vec::new();
                    for (r, proto) in &t.routes {
                        if crate::netlink::route::family_of(&r.dst) == route.family {
                            let message = local_route_message(r, *proto);
                            replies.push(message.to_message(
                                RTM_NEWROUTE,
                                NLM_F_MULTI,
                                h.seq,
                                PORT,
                            ));
                        }
                    }
                    replies.push(done(request, 0, 0));
                    vec![(0, replies.concat())]
                }
                RTM_NEWROUTE => {
                    let new = owned_local_route(&route, route.family, route.protocol).unwrap();
                    let exists = t
                        .routes
                        .iter()
                        .any(|(r, _)| (r.dst, r.prefix_len) == (new.dst, new.prefix_len));
                    if exists {
                        vec![(0, error_reply(request, libc::EEXIST))]
                    } else {
                        t.routes.push((new, route.protocol));
                        vec![(0, error_reply(request, 0))]
                    }
                }
                RTM_DELROUTE => {
                    let old = owned_local_route(&route, route.family, route.protocol).unwrap();
                    let before = t.routes.len();
                    t.routes
                        .retain(|(r, p)| !(*r == old && *p == route.protocol));
                    let errno = if t.routes.len() == before {
                        libc::ESRCH
                    } else {
                        0
                    };
                    vec![(0, error_reply(request, errno))]
                }
                _ => vec![(0, error_reply(request, libc::EOPNOTSUPP))],
            }
        })
    }

    fn link(name: &str, ifindex: u32) -> Link {
        Link {
            name: name.into(),
            ifindex,
            mac: format!("42:01:0a:80:00:{:02x}", ifindex),
        }
    }

    fn nic(name: &str, ifindex: u32, wanted: &[&str], may_remove: bool) -> FoundNic {
        FoundNic {
            link: link(name, ifindex),
            wanted: wanted.iter().map(|w| Prefix::parse(w).unwrap()).collect(),
            may_remove,
        }
    }

    fn routes(table: &Rc<RefCell<Table>>) -> Vec<(String, u32, u8)> {
        let mut all: Vec<_> = table
            .borrow()
            .routes
            .iter()
            .map(|(r, p)| {
                (
                    Prefix {
                        addr: r.dst,
                        len: r.prefix_len,
                    }
                    .to_string(),
                    r.ifindex,
                    *p,
                )
            })
            .collect();
        all.sort();
        all
    }

    fn run(table: &Rc<RefCell<Table>>, nics: &[FoundNic]) -> Reconciled {
        let mut nl = Netlink::new(kernel(Rc::clone(table)));
        let mut notes = Vec::new();
        let done = reconcile(&mut nl, 66, nics, &mut notes).unwrap();
        assert!(notes.is_empty(), "{:?}", notes);
        done
    }

    fn r(text: &str, ifindex: u32, proto: u8) -> (String, u32, u8) {
        (text.to_string(), ifindex, proto)
    }

    #[test]
    fn reconcile_adds_then_removes_and_leaves_other_protocols_alone() {
        let table = Rc::new(RefCell::new(Table::default()));
        let foreign = LocalRoute {
            dst: "10.0.0.9".parse().unwrap(),
            prefix_len: 32,
            ifindex: 2,
        };
        table.borrow_mut().routes.push((foreign, 4));
        let done = run(
            &table,
            &[nic(
                "eth0",
                2,
                &["10.0.0.1", "10.200.0.0/28", "2001:db8::9"],
                true,
            )],
        );
        assert_eq!((done.added, done.removed, done.requests), (3, 0, 5));
        assert_eq!(
            routes(&table),
            [
                r("10.0.0.1", 2, 66),
                r("10.0.0.9", 2, 4),
                r("10.200.0.0/28", 2, 66),
                r("2001:db8::9", 2, 66)
            ]
        );

        // One address changes: two dumps and exactly one add and one delete.
        table.borrow_mut().requests.clear();
        let done = run(
            &table,
            &[nic(
                "eth0",
                2,
                &["10.0.0.2", "10.200.0.0/28", "2001:db8::9"],
                true,
            )],
        );
        assert_eq!((done.added, done.removed), (1, 1));
        assert_eq!(
            table.borrow().requests,
            [RTM_GETROUTE, RTM_GETROUTE, RTM_NEWROUTE, RTM_DELROUTE]
        );

        // Nothing wanted: ours go, the protocol-4 route stays.
        run(&table, &[nic("eth0", 2, &[], true)]);
        assert_eq!(routes(&table), [r("10.0.0.9", 2, 4)]);
        // Metadata wanting the foreign route's address: EEXIST counts as done, nothing changes.
        run(&table, &[nic("eth0", 2, &["10.0.0.9"], true)]);
        run(&table, &[nic("eth0", 2, &[], true)]);
        assert_eq!(routes(&table), [r("10.0.0.9", 2, 4)]);
    }

    #[test]
    fn reconcile_holds_back_removals_and_leaves_unlisted_nics_alone() {
        let table = Rc::new(RefCell::new(Table::default()));
        run(
            &table,
            &[
                nic("eth0", 2, &["10.0.0.1"], true),
                nic("eth1", 3, &["10.1.0.1"], true),
            ],
        );
        // eth1 is not in this update (unknown MAC, say); eth0 had unusable values.
        let done = run(&table, &[nic("eth0", 2, &["10.0.0.2"], false)]);
        assert_eq!((done.added, done.removed), (1, 0));
        assert_eq!(
            routes(&table),
            [
                r("10.0.0.1", 2, 66),
                r("10.0.0.2", 2, 66),
                r("10.1.0.1", 3, 66)
            ]
        );
    }

    #[test]
    fn an_address_that_moves_between_nics_ends_up_on_the_new_one() {
        let table = Rc::new(RefCell::new(Table::default()));
        run(
            &table,
            &[
                nic("eth0", 2, &["10.0.0.1"], true),
                nic("eth1", 3, &[], true),
            ],
        );
        let done = run(
            &table,
            &[
                nic("eth0", 2, &[], true),
                nic("eth1", 3, &["10.0.0.1"], true),
            ],
        );
        assert_eq!((done.added, done.removed), (1, 1));
        assert_eq!(routes(&table), [r("10.0.0.1", 3, 66)]);
    }

    #[test]
    fn kernel_refusals_are_notes_or_retries() {
        let refuse = |errno: i32| {
            FakeKernel::new(move |request: &[u8]| {
                if header(request).kind == RTM_GETROUTE {
                    vec![(0, done(request, 0, 0))]
                } else {
                    vec![(0, error_reply(request, errno))]
                }
            })
        };
        let nics = [nic("eth0", 2, &["10.0.0.1"], true)];
        let mut notes = Vec::new();
        let mut nl = Netlink::new(refuse(libc::EINVAL));
        assert!(
            reconcile(&mut nl, 66, &nics, &mut notes).is_ok(),
            "a permanent refusal is not retried"
        );
        assert_eq!(
            notes,
            ["Could not add 10.0.0.1 on eth0: Invalid argument (os error 22)."]
        );
        let mut nl = Netlink::new(refuse(libc::ENOBUFS));
        assert!(
            reconcile(&mut nl, 66, &nics, &mut Vec::new()).is_err(),
            "a transient one is"
        );
        // No reply at all: the socket is broken, stop at once.
        let mut nl = Netlink::new(FakeKernel::new(|_| Vec::new()));
        assert!(reconcile(&mut nl, 66, &nics, &mut Vec::new()).is_err());
    }

    #[test]
    fn entries_for_the_same_nic_are_merged() {
        let e1 = NicEntry {
            index: 0,
            mac: Some("m".into()),
            wanted: vec![Prefix::parse("10.0.0.1").unwrap()],
            refused: Vec::new(),
            dhcpv6_refresh: false,
        };
        let e2 = NicEntry {
            index: 1,
            wanted: vec![
                Prefix::parse("10.0.0.2").unwrap(),
                Prefix::parse("10.0.0.1").unwrap(),
            ],
            refused: vec![plan::Refused {
                field: "forwardedIps",
                value: "x".into(),
                reason: "bad",
            }],
            ..e1.clone()
        };
        let l = link("eth0", 2);
        let merged = merge_by_link(&[(&e1, &l), (&e2, &l)]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].wanted.len(), 2);
        assert!(!merged[0].may_remove);
    }

    #[test]
    fn notes_are_logged_once_while_they_last() {
        let mut log = NoteLog::default();
        let a = note(ROUTES_LOGGER, Level::Warning, "a".into());
        let b = note(ROUTES_LOGGER, Level::Warning, "b".into());
        log.report(&[a.clone(), a.clone()]);
        assert_eq!(log.shown.len(), 1);
        log.report(&[a.clone(), b.clone()]);
        log.report(&[b]);
        assert!(!log.shown.contains("a"));
    }

    #[test]
    fn the_slice_is_the_interface_list() {
        let daemon = NetworkDaemon::new(&Settings::parse("", "test"));
        let doc = mds::parse_json(
            r#"{"instance":{"id":1,"networkInterfaces":[{"mac":"42:01:0a:80:00:02"}]}}"#,
        )
        .unwrap();
        let other = mds::parse_json(
            r#"{"instance":{"id":2,"networkInterfaces":[{"mac":"42:01:0a:80:00:02"}]}}"#,
        )
        .unwrap();
        assert!(daemon.slice(&doc).is_some());
        assert_eq!(daemon.slice(&doc), daemon.slice(&other));
        assert_eq!(
            daemon.slice(&mds::parse_json(r#"{"instance":{}}"#).unwrap()),
            None
        );
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
