//! The accounts daemon: users and SSH keys from metadata. The planning half turns a metadata
//! document into the accounts and keys wanted, and that plus what the system holds into a
//! list of actions; it is pure (no file, command or clock access) and carries most unit
//! tests. The applying half ([`system`]) runs the actions; [`daemon`] drives both.
//!
//! - [`username`]: the account-name rule and the [`Username`] type that proves it was applied.
//! - [`keys`]: `user:key` lines, the public-key plausibility check, `expireOn`.
//! - [`desired`]: metadata document -> [`desired::DesiredAccounts`] (key sources, OS Login).
//! - [`fingerprint`]: SHA-256 and the short key fingerprints log lines carry.
//! - [`authorized_keys`]: merging our `# Added by Google` lines into a user's file.
//! - [`ledger`]: `/var/lib/google/google_users` and `google_users_created`.
//! - [`passwd`]: local accounts (`/etc/passwd`) and `UID_MIN` (`/etc/login.defs`).
//! - [`plan`](mod@plan): the actions that take the system from what it is to what is wanted.
//! - [`commands`]: the user and group command templates and running them.
//! - [`ssh_dir`]: `~/.ssh` and `authorized_keys` opened without following links.
//! - [`system`]: the applying half — sudoers, `authorized_keys` and ledger writes.
//! - [`daemon`]: the daemon loop — plan and apply on each change and at each key expiry.
//!
//! What is skipped on the way (refused names, implausible keys, expired keys) comes back
//! as [`Note`]s rather than log lines, so the daemon can log each one once ([`NoteLog`])
//! instead of on every metadata change.

pub mod authorized_keys;
pub(crate) mod commands;
pub(crate) mod daemon;
pub(crate) mod desired;
pub(crate) mod fingerprint;
pub mod keys;
pub(crate) mod ledger;
pub(crate) mod passwd;
pub(crate) mod plan;
pub(crate) mod ssh_dir;
pub(crate) mod system;
pub(crate) mod username;

use std::fmt;

use crate::log::{Level, LogOnce};

pub(crate) use keys::SkipReason;
pub(crate) use username::NameRefusal;
pub use username::Username;

/// Something the planning step skipped or noticed, worded for one log line. User names in
/// it are already made printable ([`crate::log::printable`]); no note ever holds key material
/// (a key is named by its type and short fingerprint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A metadata user name that is not a safe account name; its keys are not used.
    RefusedName { name: String, reason: NameRefusal },
    /// A line or key that was not used (`user` when the line had a readable one).
    SkippedKey {
        user: Option<String>,
        reason: SkipReason,
    },
    /// A key whose `expireOn` has passed (`key`: its type and short fingerprint).
    ExpiredKey { user: Username, key: String },
    /// A line that looks like part of a private key; its content is never logged.
    PrivateKeyLine,
    /// A key whose `google-ssh` expiry cannot be read; the key is kept.
    UnreadableExpiry { user: Username },
    /// `instance/attributes` or `project/attributes` is missing from the document.
    MissingAttributes { section: &'static str },
}

impl Note {
    /// The level the note is logged at.
    pub fn level(&self) -> Level {
        match self {
            Note::ExpiredKey { .. } => Level::Debug,
            _ => Level::Warning,
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::RefusedName { name, reason } => {
                write!(
                    f,
                    "Invalid user account name \"{}\" ({}).",
                    name,
                    reason.describe()
                )
            }
            Note::SkippedKey {
                user: Some(user),
                reason,
            } => {
                write!(f, "Skipping an SSH key for user {}: {}.", user, reason)
            }
            Note::SkippedKey { user: None, reason } => {
                write!(f, "Skipping an SSH key line: {}.", reason)
            }
            Note::ExpiredKey { user, key } => {
                write!(f, "Expired SSH key for user {} ({}).", user, key)
            }
            Note::PrivateKeyLine => write!(
                f,
                "Dropping metadata SSH key lines that look like a private key (not shown)."
            ),
            Note::UnreadableExpiry { user } => write!(
                f,
                "Could not parse the expireOn time of an SSH key for user {}; keeping the key.",
                user
            ),
            Note::MissingAttributes { section } => {
                write!(f, "{} attributes were not found.", section)
            }
        }
    }
}

/// Logs each distinct note once while it keeps coming back: a note present in the previous
/// report is not logged again; one that went away and returns is.
#[derive(Debug, Default)]
pub(crate) struct NoteLog {
    once: LogOnce,
}

impl NoteLog {
    /// The notes of this report that were not in the previous one (each distinct text once),
    /// and remembers this report.
    pub fn fresh<'a>(&mut self, notes: &'a [Note]) -> Vec<&'a Note> {
        let fresh = notes
            .iter()
            .filter(|note| self.once.first_time(&note.to_string()))
            .collect();
        self.once.end_round();
        fresh
    }

    /// Logs the fresh notes of this report at their levels.
    pub fn log(&mut self, notes: &[Note]) {
        for note in self.fresh(notes) {
            crate::log::write(note.level(), format_args!("{}", note));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Username {
        Username::parse("alice").unwrap()
    }

    #[test]
    fn notes_read_as_log_lines() {
        let cases = [
            (
                Note::RefusedName {
                    name: "-x".into(),
                    reason: NameRefusal::LeadingHyphen,
                },
                "Invalid user account name \"-x\" (starts with a hyphen).",
                Level::Warning,
            ),
            (
                Note::SkippedKey {
                    user: Some("alice".into()),
                    reason: SkipReason::UnknownType,
                },
                "Skipping an SSH key for user alice: unknown key type.",
                Level::Warning,
            ),
            (
                Note::SkippedKey {
                    user: None,
                    reason: SkipReason::NoColon,
                },
                "Skipping an SSH key line: not a complete entry (no colon).",
                Level::Warning,
            ),
            (
                Note::ExpiredKey {
                    user: alice(),
                    key: "ssh-ed25519 SHA256:abc".into(),
                },
                "Expired SSH key for user alice (ssh-ed25519 SHA256:abc).",
                Level::Debug,
            ),
            (
                Note::PrivateKeyLine,
                "Dropping metadata SSH key lines that look like a private key (not shown).",
                Level::Warning,
            ),
            (
                Note::UnreadableExpiry { user: alice() },
                "Could not parse the expireOn time of an SSH key for user alice; keeping the key.",
                Level::Warning,
            ),
            (
                Note::MissingAttributes {
                    section: "Instance",
                },
                "Instance attributes were not found.",
                Level::Warning,
            ),
        ];
        for (note, text, level) in cases {
            assert_eq!(note.to_string(), text);
            assert_eq!(note.level(), level);
        }
    }

    #[test]
    fn note_log_reports_each_note_once_while_it_persists() {
        let a = Note::ExpiredKey {
            user: alice(),
            key: String::new(),
        };
        let b = Note::SkippedKey {
            user: None,
            reason: SkipReason::NoColon,
        };
        let mut log = NoteLog::default();
        assert_eq!(log.fresh(&[a.clone(), a.clone(), b.clone()]), vec![&a, &b]);
        assert!(log.fresh(&[b.clone(), a.clone()]).is_empty());
        // `a` goes away, then comes back: it is reported again; `b` stays quiet.
        assert!(log.fresh(std::slice::from_ref(&b)).is_empty());
        assert_eq!(log.fresh(&[a.clone(), b.clone()]), vec![&a]);
        assert!(log.fresh(&[]).is_empty());
        assert_eq!(log.fresh(std::slice::from_ref(&b)), vec![&b]);
    }
}

/// `make bench`: the daemon's own work in one round for 1,000 users when one key changed
/// (parse the document, read the keys, parse the system files, plan), without I/O, as a
/// breakdown of the end-to-end figure `tests/bench_accounts.rs` measures. `#[ignore]`d;
/// meaningful in a release build.
#[cfg(test)]
mod round_costs {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use super::desired::{DesiredAccounts, KeyLineCache};
    use super::keys::fixtures::encode_base64;
    use super::passwd::parse_passwd;
    use super::plan::{plan, AppliedKeys, PlanConfig, SystemView};
    use super::username::Username;

    fn key(i: u64) -> String {
        let mut data = 11u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"ssh-ed25519");
        data.extend_from_slice(&32u32.to_be_bytes());
        for k in 0..4u64 {
            data.extend_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k).to_le_bytes());
        }
        format!("ssh-ed25519 {} u{:04}", encode_base64(&data), i)
    }

    /// The metadata document with user `changed`'s key replaced by key `version`.
    fn document(users: u64, changed: u64, version: u64) -> String {
        let value: Vec<String> = (0..users)
            .map(|i| {
                let seed = if i == changed { 1_000_000 + version } else { i };
                format!("u{:04}:{}", i, key(seed))
            })
            .collect();
        format!(
            r#"{{"instance":{{"id":1,"attributes":{{"ssh-keys":{}}}}},"project":{{"attributes":{{}}}}}}"#,
            tinyjson::JsonValue::String(value.join("\n"))
                .stringify()
                .expect("a string")
        )
    }

    fn median(mut samples: Vec<Duration>) -> Duration {
        samples.sort();
        samples[samples.len() / 2]
    }

    #[test]
    #[ignore]
    fn bench_one_change_among_1000_users() {
        let users = 1000;
        let passwd: String = (0..users)
            .map(|i| format!("u{:04}:x:{}:100::/home/u{:04}:/bin/bash\n", i, 5000 + i, i))
            .collect();
        let ledger: BTreeSet<Username> = (0..users)
            .map(|i| Username::parse(&format!("u{:04}", i)).expect("valid"))
            .collect();
        let local = parse_passwd(passwd.as_bytes());
        let mut cache = KeyLineCache::default();
        let mut applied = AppliedKeys::new();
        let (mut parse, mut read, mut planning, mut passwd_parse) =
            (vec![], vec![], vec![], vec![]);
        for version in 0..21 {
            let text = document(users, users / 2, version);
            let t = Instant::now();
            let doc = crate::json::parse_json(&text).expect("JSON");
            let parsed = t.elapsed();
            let snapshot = crate::mds::Snapshot {
                etag: None,
                doc: std::sync::Arc::new(doc),
            };
            let t = Instant::now();
            let (desired, _) =
                DesiredAccounts::from_snapshot_cached(&snapshot, 0, &mut cache).expect("usable");
            let desired_read = t.elapsed();
            let t = Instant::now();
            let _ = parse_passwd(passwd.as_bytes());
            let passwd_parsed = t.elapsed();
            let view = SystemView {
                ledger: &ledger,
                created: &ledger,
                local_users: &local,
            };
            let config = PlanConfig {
                deprovision_remove: false,
                uid_min: 1000,
            };
            let t = Instant::now();
            let actions = plan(&desired, &applied, &view, &config);
            let planned = t.elapsed();
            applied.settle(&desired, &BTreeSet::new());
            // The first round reads every line and writes every user.
            if version > 0 {
                assert_eq!(actions.len(), 2, "one user's sudo check and key write");
                parse.push(parsed);
                read.push(desired_read);
                planning.push(planned);
                passwd_parse.push(passwd_parsed);
            }
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "accounts round, 1,000 users, one key changed (median of 20, no I/O): JSON {:.0} us, \
             keys {:.0} us, plan {:.0} us; /etc/passwd parse {:.0} us (skipped when unchanged)",
            us(median(parse)),
            us(median(read)),
            us(median(planning)),
            us(median(passwd_parse))
        );
    }
}
