//! The two ledgers of account names, one name per line:
//!
//! - [`USERS_LEDGER`] (`/var/lib/google/google_users`, the original's file): every user the
//!   daemon manages. Only users in it are ever deprovisioned.
//! - [`CREATED_LEDGER`] (`/var/lib/google/google_users_created`, ours): the accounts the
//!   daemon created itself. Only those may ever be deleted (`deprovision_remove`).
//!
//! Reading is lenient: surrounding white space is dropped, blank lines are skipped, and a
//! line that is not a valid name ([`Username::parse`]) is ignored and reported, so a
//! hand-edited or corrupted file can never feed a hostile name to a command.

use std::collections::BTreeSet;

use super::username::Username;
use crate::log::printable;

/// The managed-users ledger.
pub const USERS_LEDGER: &str = "/var/lib/google/google_users";
/// The created-accounts ledger.
pub const CREATED_LEDGER: &str = "/var/lib/google/google_users_created";
/// Mode of both ledger files.
pub const LEDGER_MODE: u32 = 0o600;

/// A ledger as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerRead {
    /// The valid names.
    pub names: BTreeSet<Username>,
    /// Lines that are not valid names, made printable, for a warning each.
    pub ignored: Vec<String>,
}

/// Parses a ledger file's content.
pub fn parse_ledger(content: &[u8]) -> LedgerRead {
    let mut read = LedgerRead::default();
    for line in content.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let name = line.trim_matches(|c: char| c.is_ascii_whitespace());
        if name.is_empty() {
            continue;
        }
        match Username::parse(name) {
            Ok(user) => {
                read.names.insert(user);
            }
            Err(_) => read.ignored.push(printable(name)),
        }
    }
    read
}

/// A ledger file's content: each name on its own line, in the order given.
pub fn format_ledger<'a>(names: impl IntoIterator<Item = &'a Username>) -> String {
    let mut out = String::new();
    for name in names {
        out.push_str(name.as_str());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<Username> {
        names.iter().map(|n| Username::parse(n).unwrap()).collect()
    }

    #[test]
    fn parse_table() {
        let cases: &[(&[u8], &[&str], &[&str])] = &[
            (b"", &[], &[]),
            (b"alice\n", &["alice"], &[]),
            (b"alice\nbob\n", &["alice", "bob"], &[]),
            (b"bob\nalice", &["alice", "bob"], &[]),
            (b"  alice  \r\n\n\nbob\t\n", &["alice", "bob"], &[]),
            (b"alice\nalice\n", &["alice"], &[]),
            (
                b"alice\n-oProxyCommand=x\n../etc\n$(reboot)\n1000\nbob\n",
                &["alice", "bob"],
                &["-oProxyCommand=x", "../etc", "$(reboot)", "1000"],
            ),
            (b"a b\n", &[], &["a b"]),
            (b"caf\xc3\xa9\n\xff\n", &[], &["caf?", "?"]),
        ];
        for (content, names, ignored) in cases {
            let read = parse_ledger(content);
            assert_eq!(read.names, set(names), "{content:?}");
            assert_eq!(read.ignored, *ignored, "{content:?}");
        }
    }

    #[test]
    fn format_writes_one_name_a_line_and_reads_back() {
        assert_eq!(format_ledger(&set(&[])), "");
        let names = set(&["bob", "alice", "carol"]);
        let text = format_ledger(&names);
        assert_eq!(text, "alice\nbob\ncarol\n");
        assert_eq!(parse_ledger(text.as_bytes()).names, names);
        let ordered = [Username::parse("z").unwrap(), Username::parse("a").unwrap()];
        assert_eq!(format_ledger(&ordered), "z\na\n");
    }
}
