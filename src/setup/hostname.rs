//! The host name from metadata (what Google's DHCP hook did, without the hook):
//! the short name is `instance/hostname` up to the first dot, only `[A-Za-z0-9-]`, cut to
//! 63 bytes; it is set with `sethostname(2)` and written to `/etc/hostname` (switch
//! `[InstanceSetup] set_hostname`). `/etc/hosts` gets one `# Added by Google` line with the
//! internal IP, the FQDN and the short name, and one for `169.254.169.254
//! metadata.google.internal`; every other line is kept byte for byte. A name that claims
//! `metadata.google.internal`, or is empty after cleaning, changes nothing.

use std::net::Ipv4Addr;
use std::path::Path;

use super::instance_config::InstanceFacts;
use crate::error::{Error, Result};
use crate::fsutil;

/// The marker our `/etc/hosts` lines carry (and by which old ones are found).
pub const MARKER: &str = "Added by Google";
/// The metadata server's name, which no instance may claim.
pub const METADATA_NAME: &str = "metadata.google.internal";
/// Longest host name label (and so `sethostname` name) kept.
pub const MAX_SHORT: usize = 63;
/// Longest FQDN written to `/etc/hosts`.
pub const MAX_FQDN: usize = 253;

/// What to set, or why nothing is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostnamePlan {
    /// Set these.
    Set {
        /// The short name.
        short: String,
        /// The FQDN for `/etc/hosts`, when it is a well-formed name.
        fqdn: Option<String>,
    },
    /// Change nothing, for this reason.
    Refused(String),
}

/// The short name: up to the first dot, only `[A-Za-z0-9-]`, at most 63 bytes, no hyphen
/// at either end.
pub fn short_name(hostname: &str) -> String {
    let first = hostname.split('.').next().unwrap_or("");
    let cleaned: String = first
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(MAX_SHORT)
        .collect();
    cleaned.trim_matches('-').to_string()
}

/// The FQDN when it is a well-formed DNS name (labels of `[A-Za-z0-9-]`, 1–63 bytes,
/// at most 253 in all), else `None`.
pub fn clean_fqdn(hostname: &str) -> Option<String> {
    let name = hostname.trim().trim_end_matches('.');
    let ok = !name.is_empty()
        && name.len() <= MAX_FQDN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_SHORT
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then(|| name.to_string())
}

/// Decides from the metadata host name.
pub fn plan(hostname: &str) -> HostnamePlan {
    if hostname.to_ascii_lowercase().contains(METADATA_NAME) {
        return HostnamePlan::Refused(format!("the host name claims {}", METADATA_NAME));
    }
    let short = short_name(hostname);
    if short.is_empty() {
        return HostnamePlan::Refused("the host name is empty after cleaning".into());
    }
    HostnamePlan::Set {
        short,
        fqdn: clean_fqdn(hostname),
    }
}

/// `/etc/hosts` with our lines replaced: every line without the marker kept as it was,
/// then `<ip> <fqdn> <short>  # Added by Google` and the metadata server's line.
pub fn hosts_content(
    existing: &[u8],
    ip: Option<Ipv4Addr>,
    fqdn: Option<&str>,
    short: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(existing.len() + 128);
    for line in existing.split_inclusive(|&b| b == b'\n') {
        if contains(line, MARKER.as_bytes()) {
            continue;
        }
        out.extend_from_slice(line);
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    if let Some(ip) = ip {
        let mut names = Vec::new();
        if let Some(f) = fqdn.filter(|f| *f != short) {
            names.push(f);
        }
        names.push(short);
        out.extend_from_slice(format!("{} {}  # {}\n", ip, names.join(" "), MARKER).as_bytes());
    }
    out.extend_from_slice(format!("169.254.169.254 {}  # {}\n", METADATA_NAME, MARKER).as_bytes());
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs the step against the real system.
pub fn run(facts: &InstanceFacts, set_hostname: bool) -> Result<()> {
    let Some(hostname) = facts.hostname.as_deref() else {
        debug!("No host name in metadata; the host name is left as it is.");
        return Ok(());
    };
    let (short, fqdn) = match plan(hostname) {
        HostnamePlan::Set { short, fqdn } => (short, fqdn),
        HostnamePlan::Refused(why) => {
            warn!(
                "Not setting the host name {:?}: {}.",
                crate::log::printable(hostname),
                why
            );
            return Ok(());
        }
    };
    let ip = facts
        .ip
        .as_deref()
        .and_then(|ip| ip.trim().parse::<Ipv4Addr>().ok());
    if ip.is_none() {
        warn!("No usable internal IP in metadata; /etc/hosts gets no line for this host.");
    }
    let mut result = Ok(());
    if set_hostname {
        if let Err(e) = set_kernel_hostname(&short) {
            warn!("Could not set the host name: {}", e);
            result = Err(e);
        }
        let path = Path::new("/etc/hostname");
        let content = format!("{}\n", short);
        if fsutil::read_optional(path)?.as_deref() != Some(content.as_bytes()) {
            fsutil::write_atomic(path, content.as_bytes(), 0o644)?;
            fsutil::restorecon(path);
            info!("Set the host name to {}.", short);
        }
    }
    let hosts = Path::new("/etc/hosts");
    let existing = fsutil::read_optional(hosts)?.unwrap_or_default();
    let wanted = hosts_content(&existing, ip, fqdn.as_deref(), &short);
    if wanted != existing {
        let mode = std::fs::metadata(hosts)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o644);
        fsutil::write_atomic(hosts, &wanted, mode)?;
        fsutil::restorecon(hosts);
        info!("Updated /etc/hosts for {}.", short);
    }
    result
}

/// `sethostname(2)`, when the name differs.
fn set_kernel_hostname(short: &str) -> Result<()> {
    if crate::sys::gethostname().is_ok_and(|current| current == short.as_bytes()) {
        return Ok(());
    }
    crate::sys::sethostname(short.as_bytes()).map_err(|e| Error::sys("sethostname", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_cleaned_and_cut() {
        assert_eq!(short_name("vm-1.c.project.internal"), "vm-1");
        assert_eq!(short_name("my_host.x"), "myhost");
        assert_eq!(short_name(&"a".repeat(64)), "a".repeat(63));
        assert_eq!(short_name("a\nb.c"), "ab");
        assert_eq!(short_name("-x-"), "x");
        assert_eq!(short_name("___.x"), "");
    }

    #[test]
    fn fqdns_must_be_well_formed() {
        assert_eq!(
            clean_fqdn("vm.c.p.internal").as_deref(),
            Some("vm.c.p.internal")
        );
        assert_eq!(
            clean_fqdn("vm.c.p.internal.").as_deref(),
            Some("vm.c.p.internal")
        );
        assert_eq!(clean_fqdn("a_b.c"), None);
        assert_eq!(clean_fqdn("a..b"), None);
        assert_eq!(clean_fqdn("a\nb"), None);
        let label = "a".repeat(63);
        let n253 = format!("{l}.{l}.{l}.{}", "b".repeat(61), l = label);
        assert_eq!(n253.len(), 253);
        assert_eq!(clean_fqdn(&n253).as_deref(), Some(n253.as_str()));
        assert_eq!(clean_fqdn(&format!("{}b", n253)), None);
    }

    #[test]
    fn the_metadata_name_and_empty_names_are_refused() {
        assert!(matches!(
            plan("metadata.google.internal"),
            HostnamePlan::Refused(_)
        ));
        assert!(matches!(
            plan("x.METADATA.google.internal"),
            HostnamePlan::Refused(_)
        ));
        assert!(matches!(plan("__"), HostnamePlan::Refused(_)));
        assert_eq!(
            plan("vm.c.p.internal"),
            HostnamePlan::Set {
                short: "vm".into(),
                fqdn: Some("vm.c.p.internal".into())
            }
        );
    }

    #[test]
    fn hosts_keeps_other_lines_and_replaces_ours() {
        let existing = b"127.0.0.1 localhost\n# a comment\n10.0.0.9 old.x old  # Added by Google\n\
                         ::1 ip6\tlocalhost  \n169.254.169.254 metadata.google.internal  # Added by Google\nlast";
        let out = hosts_content(
            existing,
            Some(Ipv4Addr::new(10, 0, 0, 2)),
            Some("vm.c.p"),
            "vm",
        );
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "127.0.0.1 localhost\n# a comment\n::1 ip6\tlocalhost  \nlast\n\
             10.0.0.2 vm.c.p vm  # Added by Google\n\
             169.254.169.254 metadata.google.internal  # Added by Google\n"
        );
        // Idempotent.
        let again = hosts_content(&out, Some(Ipv4Addr::new(10, 0, 0, 2)), Some("vm.c.p"), "vm");
        assert_eq!(again, out);
        let no_ip = hosts_content(b"", None, None, "vm");
        assert_eq!(
            no_ip,
            b"169.254.169.254 metadata.google.internal  # Added by Google\n"
        );
    }
}
