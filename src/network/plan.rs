//! The pure half of IP forwarding: metadata `instance.networkInterfaces` -> the local
//! routes wanted on each NIC, and (wanted, what the kernel has) -> what to add and remove,
//! with the log line the Python daemon wrote for it. No file, socket or clock access.
//!
//! Addresses: an IPv4 or IPv6 address alone means that one address (`/32`, `/128`); an
//! alias range `A/N` keeps its prefix. A value that is not an address, a prefix too long
//! for its family, host bits set under the prefix, or a `/0` is refused with a reason; a NIC
//! with refused values gets its missing routes added but none removed that round, so a
//! malformed entry can never make the daemon drop routes it should keep.
//!
//! Some destinations are never made local whatever metadata says, because such a route
//! would take traffic the machine itself needs: loopback, link-local (169.254.0.0/16 holds
//! the metadata server; fe80::/10), multicast, the unspecified and the broadcast address, and
//! ranges wider than /8 (IPv4) or /16 (IPv6) — `0.0.0.0/1` plus `128.0.0.0/1` would make
//! every address local. A range that overlaps one of those blocks is refused too. Such a
//! route found among ours in the kernel is removed even in a round that holds removals back.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use tinyjson::JsonValue;

/// A destination: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The address (for a range, its network address).
    pub addr: IpAddr,
    /// The prefix length, 1..=32 or 1..=128.
    pub len: u8,
}

/// Why an address from metadata was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a string.
    NotText,
    /// Not an IPv4 or IPv6 address.
    NotAnAddress,
    /// The prefix is not a number that fits the family.
    BadPrefix,
    /// Bits are set after the prefix (`10.0.0.1/24`).
    HostBitsSet,
    /// `/0` would make every address local.
    EverythingLocal,
    /// A range wider than /8 (IPv4) or /16 (IPv6).
    TooWide,
    /// Loopback (127.0.0.0/8, ::1) or a range over it.
    Loopback,
    /// Link-local (169.254.0.0/16, fe80::/10), where the metadata server lives.
    LinkLocal,
    /// Multicast (224.0.0.0/4, ff00::/8).
    Multicast,
    /// The unspecified address (0.0.0.0, ::).
    Unspecified,
    /// The limited broadcast address 255.255.255.255.
    Broadcast,
}

impl Refusal {
    /// The reason, worded for a log line.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::NotText => "not a string",
            Refusal::NotAnAddress => "not an IP address",
            Refusal::BadPrefix => "bad prefix length",
            Refusal::HostBitsSet => "address bits set beyond the prefix",
            Refusal::EverythingLocal => "a /0 range would make every address local",
            Refusal::TooWide => "a range wider than /8 (IPv4) or /16 (IPv6) is never made local",
            Refusal::Loopback => "loopback addresses are never made local routes",
            Refusal::LinkLocal => {
                "link-local addresses (the metadata server's) are never made local routes"
            }
            Refusal::Multicast => "multicast addresses are never made local routes",
            Refusal::Unspecified => "the unspecified address is never made a local route",
            Refusal::Broadcast => "the broadcast address is never made a local route",
        }
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// The blocks no route of ours may cover or touch, with the refusal each one gives.
const RESERVED_V4: &[(u32, u8, Refusal)] = &[
    (0x0000_0000, 32, Refusal::Unspecified),
    (0x7f00_0000, 8, Refusal::Loopback),
    (0xa9fe_0000, 16, Refusal::LinkLocal),
    (0xe000_0000, 4, Refusal::Multicast),
    (0xffff_ffff, 32, Refusal::Broadcast),
];
const RESERVED_V6: &[(u128, u8, Refusal)] = &[
    (0, 128, Refusal::Unspecified),
    (1, 128, Refusal::Loopback),
    (0xfe80 << 112, 10, Refusal::LinkLocal),
    (0xff00 << 112, 8, Refusal::Multicast),
];
/// The widest ranges a route of ours may have, per family.
const WIDEST_V4: u8 = 8;
const WIDEST_V6: u8 = 16;

/// Whether two prefixes of one family share an address: the shorter one holds the other's
/// network address. `bits` is the family's width.
fn overlaps(a: u128, a_len: u8, b: u128, b_len: u8, bits: u8) -> bool {
    let shorter = a_len.min(b_len);
    let mask = if shorter == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(shorter)) >> (128 - u32::from(bits))
    };
    a & mask == b & mask
}

/// Why a well-formed prefix must still never become a local route, if it must not.
fn unsafe_destination(addr: &IpAddr, len: u8) -> Option<Refusal> {
    let (value, bits, widest, reserved): (u128, u8, u8, Vec<(u128, u8, Refusal)>) = match addr {
        IpAddr::V4(a) => (
            u128::from(u32::from(*a)),
            32,
            WIDEST_V4,
            RESERVED_V4
                .iter()
                .map(|&(n, l, r)| (u128::from(n), l, r))
                .collect(),
        ),
        IpAddr::V6(a) => (u128::from(*a), 128, WIDEST_V6, RESERVED_V6.to_vec()),
    };
    if len < widest {
        return Some(Refusal::TooWide);
    }
    reserved
        .iter()
        .find(|&&(n, l, _)| overlaps(value, len, n, l, bits))
        .map(|&(_, _, refusal)| refusal)
}

fn host_bits_set(addr: &IpAddr, len: u8) -> bool {
    match addr {
        IpAddr::V4(a) => len < 32 && u32::from(*a) << len != 0,
        IpAddr::V6(a) => len < 128 && u128::from(*a) << len != 0,
    }
}

impl Prefix {
    /// One address (`/32` or `/128`).
    pub fn single(addr: IpAddr) -> Prefix {
        Prefix {
            addr,
            len: max_len(&addr),
        }
    }

    /// Parses `ADDR` or `ADDR/LEN` as metadata gives them. Leading zeros, signs, spaces and
    /// zone ids are refused.
    pub fn parse(text: &str) -> Result<Prefix, Refusal> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| Refusal::NotAnAddress)?;
        let len = match len_text {
            None => max_len(&addr),
            Some(l) => {
                let digits_only =
                    !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit());
                let canonical = l == "0" || !l.starts_with('0');
                match l.parse::<u8>() {
                    Ok(n) if digits_only && canonical && n <= max_len(&addr) => n,
                    _ => return Err(Refusal::BadPrefix),
                }
            }
        };
        if len == 0 {
            return Err(Refusal::EverythingLocal);
        }
        if host_bits_set(&addr, len) {
            return Err(Refusal::HostBitsSet);
        }
        if let Some(refusal) = unsafe_destination(&addr, len) {
            return Err(refusal);
        }
        Ok(Prefix { addr, len })
    }

    /// Whether this may be a local route of ours (see the module doc); a route of ours in
    /// the kernel that may not is always removed.
    pub(crate) fn is_safe_destination(&self) -> bool {
        unsafe_destination(&self.addr, self.len).is_none()
    }

    /// Whether this is one address rather than a range.
    pub(crate) fn is_single(&self) -> bool {
        self.len == max_len(&self.addr)
    }
}

/// `10.0.0.1` for one address, `10.0.0.0/28` for a range (as the Python daemon printed).
impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// Which metadata lists besides `forwardedIps` and `forwardedIpv6s` are wanted
/// (`[IpForwarding] target_instance_ips` and `ip_aliases`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AddressOptions {
    pub target_instance_ips: bool,
    pub ip_aliases: bool,
}

/// A metadata value that was not used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    /// The list it was in (`forwardedIps`, ...), or `networkInterfaces` for the entry itself.
    pub field: &'static str,
    /// The value as JSON text, cut to a printable length.
    pub value: String,
    /// Why.
    pub reason: &'static str,
}

/// One entry of `instance.networkInterfaces`, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NicEntry {
    /// Its position in the list (0 is the primary NIC).
    pub index: usize,
    /// Its MAC address in lower case, when the entry has a usable one.
    pub mac: Option<String>,
    /// The routes wanted, in metadata order, without duplicates.
    pub wanted: Vec<Prefix>,
    /// What was not used.
    pub refused: Vec<Refused>,
    /// The entry carries `dhcpv6Refresh` (the NIC has an IPv6 subnet to ask DHCPv6 for).
    pub dhcpv6_refresh: bool,
}

/// Why `instance.networkInterfaces` could not be read at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// The document has no `instance.networkInterfaces`.
    Missing,
    /// It is there but not a list.
    NotAList,
}

impl Unreadable {
    /// The reason, worded for a log line.
    pub fn describe(self) -> &'static str {
        match self {
            Unreadable::Missing => "The metadata has no network interfaces",
            Unreadable::NotAList => "The metadata's network interfaces are not a list",
        }
    }
}

/// How much of a refused value a log line shows.
const SHOWN_VALUE_CHARS: usize = 64;

fn shown(value: &JsonValue) -> String {
    let text = match value {
        JsonValue::String(s) => format!("{:?}", s),
        other => other.stringify().unwrap_or_default(),
    };
    if text.chars().count() > SHOWN_VALUE_CHARS {
        let cut: String = text.chars().take(SHOWN_VALUE_CHARS).collect();
        format!("{}...", cut)
    } else {
        text
    }
}

/// A MAC address in lower case, if `text` is six colon-separated hex octets.
pub(crate) fn normalize_mac(text: &str) -> Option<String> {
    let text = text.trim();
    let octets: Vec<&str> = text.split(':').collect();
    let valid = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    valid.then(|| text.to_ascii_lowercase())
}

/// Reads one interface entry.
fn read_entry(index: usize, entry: &JsonValue, options: AddressOptions) -> NicEntry {
    let mut nic = NicEntry {
        index,
        mac: None,
        wanted: Vec::new(),
        refused: Vec::new(),
        dhcpv6_refresh: false,
    };
    let JsonValue::Object(fields) = entry else {
        nic.refused.push(Refused {
            field: "networkInterfaces",
            value: shown(entry),
            reason: "not an object",
        });
        return nic;
    };
    match fields.get("mac") {
        None => nic.refused.push(Refused {
            field: "mac",
            value: "null".into(),
            reason: "missing",
        }),
        Some(value) => {
            nic.mac = match value {
                JsonValue::String(text) => normalize_mac(text),
                _ => None,
            };
            if nic.mac.is_none() {
                nic.refused.push(Refused {
                    field: "mac",
                    value: shown(value),
                    reason: "not a MAC address",
                });
            }
        }
    }
    nic.dhcpv6_refresh = match fields.get("dhcpv6Refresh") {
        None | Some(JsonValue::Null) => false,
        Some(JsonValue::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    let lists = [
        ("forwardedIps", true),
        ("forwardedIpv6s", true),
        ("targetInstanceIps", options.target_instance_ips),
        ("ipAliases", options.ip_aliases),
    ];
    let mut seen = BTreeSet::new();
    for (field, wanted) in lists {
        let values = match fields.get(field) {
            None | Some(JsonValue::Null) => continue,
            Some(JsonValue::Array(values)) => values,
            Some(other) => {
                nic.refused.push(Refused {
                    field,
                    value: shown(other),
                    reason: "not a list",
                });
                continue;
            }
        };
        if !wanted {
            continue;
        }
        for value in values {
            let parsed = match value {
                JsonValue::String(text) => Prefix::parse(text),
                _ => Err(Refusal::NotText),
            };
            match parsed {
                Ok(prefix) => {
                    if seen.insert(prefix) {
                        nic.wanted.push(prefix);
                    }
                }
                Err(refusal) => nic.refused.push(Refused {
                    field,
                    value: shown(value),
                    reason: refusal.describe(),
                }),
            }
        }
    }
    nic
}

/// Reads `instance.networkInterfaces` (the value, if the document has one).
pub(crate) fn read_interfaces(
    value: Option<&JsonValue>,
    options: AddressOptions,
) -> Result<Vec<NicEntry>, Unreadable> {
    match value {
        None | Some(JsonValue::Null) => Err(Unreadable::Missing),
        Some(JsonValue::Array(entries)) => Ok(entries
            .iter()
            .enumerate()
            .map(|(i, e)| read_entry(i, e, options))
            .collect()),
        Some(_) => Err(Unreadable::NotAList),
    }
}

/// What to do on one NIC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NicPlan {
    /// The owned routes the kernel has on it, in the kernel's order.
    pub configured: Vec<Prefix>,
    /// The routes wanted, in metadata order.
    pub desired: Vec<Prefix>,
    /// Wanted but missing, sorted.
    pub add: Vec<Prefix>,
    /// There but not wanted, sorted (empty when removals are held back).
    pub remove: Vec<Prefix>,
    /// Stale routes kept this round because the NIC's metadata had refused values.
    pub held_back: Vec<Prefix>,
}

impl NicPlan {
    /// Whether anything changes.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Plans one NIC: add what is wanted and missing, remove what is there and not wanted —
/// unless `may_remove` is false, when the stale routes are only reported as held back.
/// A route of ours that no metadata could ask for (loopback, link-local, too wide...) is
/// removed all the same.
pub(crate) fn plan_nic(configured: &[Prefix], desired: &[Prefix], may_remove: bool) -> NicPlan {
    let have: BTreeSet<&Prefix> = configured.iter().collect();
    let want: BTreeSet<&Prefix> = desired.iter().filter(|p| p.is_safe_destination()).collect();
    let add: Vec<Prefix> = want.difference(&have).map(|p| **p).collect();
    let stale: Vec<Prefix> = have.difference(&want).map(|p| **p).collect();
    let (remove, held_back) = if may_remove {
        (stale, Vec::new())
    } else {
        stale.into_iter().partition(|p| !p.is_safe_destination())
    };
    NicPlan {
        configured: configured.to_vec(),
        desired: desired.to_vec(),
        add,
        remove,
        held_back,
    }
}

/// How many addresses a log line lists before it says how many more there are.
pub(crate) const LOGGED_ADDRESSES: usize = 64;

/// A list as Python printed it in the original log line: `['10.0.0.1', '10.0.0.2']`, or
/// `None` when empty. Past [`LOGGED_ADDRESSES`] entries the rest is counted, not listed.
pub(crate) fn python_list(prefixes: &[Prefix]) -> String {
    if prefixes.is_empty() {
        return "None".into();
    }
    let mut parts: Vec<String> = prefixes
        .iter()
        .take(LOGGED_ADDRESSES)
        .map(|p| format!("'{}'", p))
        .collect();
    if prefixes.len() > LOGGED_ADDRESSES {
        parts.push(format!("... {} more", prefixes.len() - LOGGED_ADDRESSES));
    }
    format!("[{}]", parts.join(", "))
}

/// The original's log line for a change on `nic`; `None` when nothing changes.
pub(crate) fn change_line(nic: &str, plan: &NicPlan) -> Option<String> {
    if plan.is_empty() {
        return None;
    }
    Some(format!(
        "Changing {} IPs from {} to {} by adding {} and removing {}.",
        nic,
        python_list(&plan.configured),
        python_list(&plan.desired),
        python_list(&plan.add),
        python_list(&plan.remove)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_json;

    fn p(text: &str) -> Prefix {
        Prefix::parse(text).unwrap()
    }

    const ALL_LISTS: AddressOptions = AddressOptions {
        target_instance_ips: true,
        ip_aliases: true,
    };

    #[test]
    fn prefixes_parse_strictly() {
        let good = [
            ("10.0.0.1", "10.0.0.1", 32),
            ("10.0.0.1/32", "10.0.0.1", 32),
            ("10.200.0.0/28", "10.200.0.0/28", 28),
            ("2001:db8::9", "2001:db8::9", 128),
            ("2001:db8::/96", "2001:db8::/96", 96),
            ("2001:DB8::9/128", "2001:db8::9", 128),
            ("10.0.0.0/8", "10.0.0.0/8", 8),
            ("2001::/16", "2001::/16", 16),
            ("169.253.255.255", "169.253.255.255", 32),
            ("169.255.0.0/16", "169.255.0.0/16", 16),
            ("223.255.255.255", "223.255.255.255", 32),
            ("fec0::1", "fec0::1", 128),
        ];
        for (text, shown, len) in good {
            let prefix = Prefix::parse(text).unwrap_or_else(|e| panic!("{}: {:?}", text, e));
            assert_eq!(
                (prefix.to_string().as_str(), prefix.len),
                (shown, len),
                "{}",
                text
            );
        }
        let bad = [
            ("", Refusal::NotAnAddress),
            ("10.0.0", Refusal::NotAnAddress),
            ("10.0.0.256", Refusal::NotAnAddress),
            ("010.0.0.1", Refusal::NotAnAddress),
            (" 10.0.0.1", Refusal::NotAnAddress),
            ("10.0.0.1 ", Refusal::NotAnAddress),
            ("fe80::1%eth0", Refusal::NotAnAddress),
            ("10.0.0.1/33", Refusal::BadPrefix),
            ("10.0.0.1/", Refusal::BadPrefix),
            ("10.0.0.1/+8", Refusal::BadPrefix),
            ("10.0.0.0/08", Refusal::BadPrefix),
            ("10.0.0.0/8/8", Refusal::BadPrefix),
            ("10.0.0.1/99999999999", Refusal::BadPrefix),
            ("2001:db8::/129", Refusal::BadPrefix),
            ("10.0.0.1/24", Refusal::HostBitsSet),
            ("2001:db8::1/64", Refusal::HostBitsSet),
            ("0.0.0.0/0", Refusal::EverythingLocal),
            ("::/0", Refusal::EverythingLocal),
            ("0.0.0.0/1", Refusal::TooWide),
            ("128.0.0.0/1", Refusal::TooWide),
            ("64.0.0.0/2", Refusal::TooWide),
            ("10.0.0.0/7", Refusal::TooWide),
            ("2000::/3", Refusal::TooWide),
            ("2000::/15", Refusal::TooWide),
            ("0.0.0.0/32", Refusal::Unspecified),
            ("0.0.0.0", Refusal::Unspecified),
            ("::", Refusal::Unspecified),
            ("127.0.0.1", Refusal::Loopback),
            ("127.0.0.0/8", Refusal::Loopback),
            ("::1", Refusal::Loopback),
            ("169.254.169.254", Refusal::LinkLocal),
            ("169.254.0.0/16", Refusal::LinkLocal),
            ("169.254.169.0/24", Refusal::LinkLocal),
            ("169.0.0.0/8", Refusal::LinkLocal),
            ("fe80::1", Refusal::LinkLocal),
            ("febf::/16", Refusal::LinkLocal),
            ("224.0.0.1", Refusal::Multicast),
            ("239.255.255.250", Refusal::Multicast),
            ("ff02::1", Refusal::Multicast),
            ("255.255.255.255", Refusal::Broadcast),
            ("255.255.255.0/24", Refusal::Broadcast),
        ];
        for (text, refusal) in bad {
            assert_eq!(Prefix::parse(text), Err(refusal), "{:?}", text);
        }
    }

    #[test]
    fn unsafe_routes_of_ours_are_removed_even_when_removals_are_held_back() {
        let wide = |t: &str| {
            let (a, l) = t.split_once('/').unwrap();
            Prefix {
                addr: a.parse().unwrap(),
                len: l.parse().unwrap(),
            }
        };
        let configured = [wide("0.0.0.0/1"), wide("128.0.0.0/1"), p("10.0.0.9")];
        let plan = plan_nic(&configured, &[p("10.0.0.1")], false);
        assert_eq!(plan.add, [p("10.0.0.1")]);
        assert_eq!(plan.remove, [wide("0.0.0.0/1"), wide("128.0.0.0/1")]);
        assert_eq!(plan.held_back, [p("10.0.0.9")]);
        let plan = plan_nic(&configured, &[wide("169.254.169.254/32")], true);
        assert!(plan.add.is_empty());
        assert_eq!(plan.remove.len(), 3);
    }

    #[test]
    fn macs_are_lower_cased_and_checked() {
        assert_eq!(
            normalize_mac("42:01:0A:80:00:02"),
            Some("42:01:0a:80:00:02".into())
        );
        assert_eq!(
            normalize_mac(" 42:01:0a:80:00:02\n"),
            Some("42:01:0a:80:00:02".into())
        );
        for bad in [
            "",
            "42:01:0a:80:00",
            "42:01:0a:80:00:02:03",
            "42-01-0a-80-00-02",
            "4g:01:0a:80:00:02",
            "420:1:0a:80:00:02",
        ] {
            assert_eq!(normalize_mac(bad), None, "{:?}", bad);
        }
    }

    fn interfaces(json: &str, options: AddressOptions) -> Result<Vec<NicEntry>, Unreadable> {
        let doc = parse_json(json).unwrap();
        read_interfaces(
            crate::json::lookup(&doc, "instance/networkInterfaces"),
            options,
        )
    }

    #[test]
    fn every_list_is_read_in_order_without_duplicates() {
        let json = r#"{"instance":{"networkInterfaces":[
            {"mac":"42:01:0A:80:00:02","forwardedIps":["10.0.0.2","10.0.0.1","10.0.0.2"],
             "forwardedIpv6s":["2001:db8::9"],"targetInstanceIps":["10.0.0.1","203.0.113.20"],
             "ipAliases":["10.200.0.0/28"],"dhcpv6Refresh":"2001:db8::/64"},
            {"mac":"42:01:0a:80:00:03"}]}}"#;
        let nics = interfaces(json, ALL_LISTS).unwrap();
        assert_eq!(nics.len(), 2);
        assert_eq!(nics[0].mac.as_deref(), Some("42:01:0a:80:00:02"));
        let wanted: Vec<String> = nics[0].wanted.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            wanted,
            [
                "10.0.0.2",
                "10.0.0.1",
                "2001:db8::9",
                "203.0.113.20",
                "10.200.0.0/28"
            ]
        );
        assert!(nics[0].refused.is_empty());
        assert!(nics[0].dhcpv6_refresh);
        assert_eq!(
            (nics[1].index, nics[1].wanted.len(), nics[1].dhcpv6_refresh),
            (1, 0, false)
        );

        let without = interfaces(
            json,
            AddressOptions {
                target_instance_ips: false,
                ip_aliases: false,
            },
        )
        .unwrap();
        let wanted: Vec<String> = without[0].wanted.iter().map(|p| p.to_string()).collect();
        assert_eq!(wanted, ["10.0.0.2", "10.0.0.1", "2001:db8::9"]);
    }

    #[test]
    fn bad_values_are_refused_one_by_one() {
        let json = r#"{"instance":{"networkInterfaces":[
            {"mac":"42:01:0a:80:00:02","forwardedIps":["10.0.0.1","10.0.0.999",7,"10.0.0.0/40",null],
             "ipAliases":"10.200.0.0/28"},
            {"mac":"not-a-mac","forwardedIps":["10.0.0.5"]},
            "eth9",
            {"forwardedIps":[]}]}}"#;
        let nics = interfaces(json, ALL_LISTS).unwrap();
        assert_eq!(nics[0].wanted, [p("10.0.0.1")]);
        let refused: Vec<(&str, &str, &str)> = nics[0]
            .refused
            .iter()
            .map(|r| (r.field, r.value.as_str(), r.reason))
            .collect();
        assert_eq!(
            refused,
            [
                ("forwardedIps", "\"10.0.0.999\"", "not an IP address"),
                ("forwardedIps", "7", "not a string"),
                ("forwardedIps", "\"10.0.0.0/40\"", "bad prefix length"),
                ("forwardedIps", "null", "not a string"),
                ("ipAliases", "\"10.200.0.0/28\"", "not a list"),
            ]
        );
        assert_eq!(nics[1].mac, None);
        assert_eq!(nics[1].refused[0].field, "mac");
        assert_eq!(
            (nics[2].mac.clone(), nics[2].refused[0].reason),
            (None, "not an object")
        );
        assert_eq!(
            (nics[3].mac.clone(), nics[3].refused[0].reason),
            (None, "missing")
        );
    }

    #[test]
    fn a_missing_or_odd_interface_list_is_unreadable_not_empty() {
        assert_eq!(
            interfaces(r#"{"instance":{}}"#, ALL_LISTS),
            Err(Unreadable::Missing)
        );
        assert_eq!(
            interfaces(r#"{"instance":{"networkInterfaces":null}}"#, ALL_LISTS),
            Err(Unreadable::Missing)
        );
        assert_eq!(
            interfaces(r#"{"instance":{"networkInterfaces":{}}}"#, ALL_LISTS),
            Err(Unreadable::NotAList)
        );
        assert_eq!(
            interfaces(r#"{"instance":{"networkInterfaces":[]}}"#, ALL_LISTS),
            Ok(Vec::new())
        );
    }

    #[test]
    fn huge_values_are_cut_in_log_lines() {
        let long = format!(
            r#"{{"instance":{{"networkInterfaces":[{{"mac":"42:01:0a:80:00:02","forwardedIps":["{}"]}}]}}}}"#,
            "9".repeat(5000)
        );
        let nics = interfaces(&long, ALL_LISTS).unwrap();
        assert!(nics[0].refused[0].value.len() < 80);
    }

    #[test]
    fn plans_add_missing_and_remove_stale() {
        let configured = [p("10.0.0.3"), p("10.0.0.1"), p("10.200.0.0/28")];
        let desired = [p("10.0.0.2"), p("10.0.0.1"), p("2001:db8::9")];
        let plan = plan_nic(&configured, &desired, true);
        assert_eq!(plan.add, [p("10.0.0.2"), p("2001:db8::9")]);
        assert_eq!(plan.remove, [p("10.0.0.3"), p("10.200.0.0/28")]);
        assert!(plan.held_back.is_empty());
        assert_eq!(
            change_line("eth0", &plan).unwrap(),
            "Changing eth0 IPs from ['10.0.0.3', '10.0.0.1', '10.200.0.0/28'] to ['10.0.0.2', '10.0.0.1', '2001:db8::9'] \
             by adding ['10.0.0.2', '2001:db8::9'] and removing ['10.0.0.3', '10.200.0.0/28']."
        );

        let held = plan_nic(&configured, &desired, false);
        assert_eq!(held.add, plan.add);
        assert!(held.remove.is_empty());
        assert_eq!(held.held_back, plan.remove);

        let none = plan_nic(&configured, &configured, true);
        assert!(none.is_empty());
        assert_eq!(change_line("eth0", &none), None);
        let first = plan_nic(&[], &[p("10.0.0.1")], true);
        assert_eq!(
            change_line("eth1", &first).unwrap(),
            "Changing eth1 IPs from None to ['10.0.0.1'] by adding ['10.0.0.1'] and removing None."
        );
        // A range and the single address at its start are different routes.
        let differ = plan_nic(&[p("10.200.0.0/28")], &[p("10.200.0.0")], true);
        assert_eq!(
            (differ.add, differ.remove),
            (vec![p("10.200.0.0")], vec![p("10.200.0.0/28")])
        );
    }

    #[test]
    fn long_lists_are_counted_in_log_lines() {
        let many: Vec<Prefix> = (0..1000u32)
            .map(|i| Prefix::single(IpAddr::V4(((10u32 << 24) + i).into())))
            .collect();
        let line = python_list(&many);
        assert!(
            line.ends_with(", ... 936 more]"),
            "{}",
            &line[line.len() - 40..]
        );
        assert!(line.starts_with("['10.0.0.0', '10.0.0.1', "));
    }
}
