//! What metadata asks of the accounts daemon: which users get which keys, and whether OS
//! Login has taken over. [`DesiredAccounts`] can only be built from a metadata [`Snapshot`]
//! (which the watcher yields only for a complete, successfully parsed reply), and the
//! builder refuses a document without an `instance` object. So a failed or partial read
//! can never turn into "no users wanted" and deprovision everyone: the daemon keeps its
//! previous state until a good document arrives.
//!
//! Key sources (as Python 2.8 read them): instance `sshKeys`, instance `ssh-keys`, then project
//! `ssh-keys` and project `sshKeys` unless instance `block-project-ssh-keys` is `true` (any
//! case, surrounding white space ignored) or instance `sshKeys` holds anything but white
//! space. `enable-oslogin`: the instance value when it is not blank, else the project
//! value; `true` in any case turns OS Login on, and then no metadata user is wanted.

use std::collections::{BTreeMap, HashMap};

use tinyjson::JsonValue;

use super::keys::{read_key_line, KeyText, LineRead};
use super::username::Username;
use super::Note;
use crate::error::{Error, Result};
use crate::mds::Snapshot;

/// An attributes object of the metadata document (absent = no attributes).
#[derive(Clone, Copy)]
struct Attributes<'a>(Option<&'a HashMap<String, JsonValue>>);

impl<'a> Attributes<'a> {
    /// A string attribute; a non-string value counts as absent.
    fn get(self, key: &str) -> Option<&'a str> {
        match self.0?.get(key)? {
            JsonValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// A string attribute that holds something besides white space.
    fn non_blank(self, key: &str) -> Option<&'a str> {
        self.get(key).filter(|s| !s.trim().is_empty())
    }

    /// Whether the attribute reads `true` in any case.
    fn is_true(self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|s| s.trim().eq_ignore_ascii_case("true"))
    }
}

/// The key lines of the last document, read, in their order: when one key among 1,000
/// users changes, the 999 lines that stayed are not checked again (the time-dependent part,
/// a key's expiry, is still looked at every time). Lines are matched in order, a few ahead
/// (a key added, changed or removed); a document in another order is simply read afresh.
#[derive(Debug, Default)]
pub struct KeyLineCache {
    lines: Vec<(String, LineRead)>,
}

/// How far ahead of the next expected line a line of the last document is looked for.
const LOOK_AHEAD: usize = 4;

impl KeyLineCache {
    /// `line` read: taken from `earlier` (the last document's lines, from `next` on) when
    /// it is there, else read now.
    fn take_or_read(
        earlier: &mut [Option<(String, LineRead)>],
        next: &mut usize,
        line: &str,
    ) -> (String, LineRead) {
        let end = (*next + LOOK_AHEAD).min(earlier.len());
        let window = earlier.get_mut(*next..end).unwrap_or_default();
        for (offset, slot) in window.iter_mut().enumerate() {
            if slot
                .as_ref()
                .is_some_and(|(text, _)| crate::json::same_bytes(text.as_bytes(), line.as_bytes()))
            {
                if let Some(entry) = slot.take() {
                    *next += offset + 1;
                    return entry;
                }
            }
        }
        (line.to_string(), read_key_line(line))
    }
}

/// The users and keys metadata asks for, as of one document and one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredAccounts {
    oslogin: bool,
    users: BTreeMap<Username, Vec<KeyText>>,
    next_expiry_check: Option<i64>,
}

impl DesiredAccounts {
    /// Reads the accounts part of a metadata snapshot at unix time `now` (keys whose
    /// `expireOn` has passed are left out). Returns the wanted state and what was skipped.
    /// Fails, and so changes nothing, when the document has no `instance` object.
    pub fn from_snapshot(snapshot: &Snapshot, now: i64) -> Result<(DesiredAccounts, Vec<Note>)> {
        from_document(&snapshot.doc, now, &mut KeyLineCache::default())
    }

    /// As [`from_snapshot`](Self::from_snapshot), reading only the lines that `cache` has
    /// not seen before, and leaving in it the lines of this document.
    pub fn from_snapshot_cached(
        snapshot: &Snapshot,
        now: i64,
        cache: &mut KeyLineCache,
    ) -> Result<(DesiredAccounts, Vec<Note>)> {
        from_document(&snapshot.doc, now, cache)
    }

    /// Whether OS Login manages logins (then [`users`](Self::users) is empty).
    pub fn oslogin_enabled(&self) -> bool {
        self.oslogin
    }

    /// The users the daemon should manage, each with its keys in order of first appearance,
    /// without duplicates. Every user has at least one key.
    pub fn users(&self) -> &BTreeMap<Username, Vec<KeyText>> {
        &self.users
    }

    /// The wanted users and their keys, taken.
    pub fn into_users(self) -> BTreeMap<Username, Vec<KeyText>> {
        self.users
    }

    /// The keys wanted for `user`, if that user is wanted.
    #[cfg(test)]
    pub fn keys(&self, user: &str) -> Option<Vec<String>> {
        let keys = self.users.get(user)?;
        Some(keys.iter().map(|k| k.to_string()).collect())
    }

    /// The first unix second at which a wanted key will have expired (its `expireOn`): the
    /// daemon re-reads the same document then, so the key goes at its `expireOn` rather
    /// than at the next metadata change. `None` when no wanted key expires.
    pub fn next_expiry_check(&self) -> Option<i64> {
        self.next_expiry_check
    }

    /// A state built directly from user/key pairs, for tests of the planner.
    #[cfg(test)]
    pub(crate) fn for_tests(oslogin: bool, users: &[(&str, &[&str])]) -> DesiredAccounts {
        let users = users
            .iter()
            .map(|(name, keys)| {
                let name = Username::parse(name).expect("test user names are valid");
                (name, keys.iter().map(|k| KeyText::from(*k)).collect())
            })
            .collect();
        DesiredAccounts {
            oslogin,
            users,
            next_expiry_check: None,
        }
    }
}

/// The metadata values holding SSH keys, in the order they are read (see the module doc).
fn key_values<'a>(instance: Attributes<'a>, project: Attributes<'a>) -> Vec<&'a str> {
    let mut values: Vec<&str> = [instance.get("sshKeys"), instance.get("ssh-keys")]
        .into_iter()
        .flatten()
        .collect();
    let blocked =
        instance.is_true("block-project-ssh-keys") || instance.non_blank("sshKeys").is_some();
    if !blocked {
        values.extend(
            [project.get("ssh-keys"), project.get("sshKeys")]
                .into_iter()
                .flatten(),
        );
    }
    values
}

/// `enable-oslogin`: the instance value if not blank, else the project value.
fn oslogin_enabled(instance: Attributes<'_>, project: Attributes<'_>) -> bool {
    match instance.non_blank("enable-oslogin") {
        Some(_) => instance.is_true("enable-oslogin"),
        None => project.is_true("enable-oslogin"),
    }
}

fn attributes<'a>(
    section: Option<&'a JsonValue>,
    name: &'static str,
    notes: &mut Vec<Note>,
) -> Attributes<'a> {
    match section.and_then(|s| crate::json::lookup(s, "attributes")) {
        Some(JsonValue::Object(map)) => Attributes(Some(map)),
        _ => {
            notes.push(Note::MissingAttributes { section: name });
            Attributes(None)
        }
    }
}

fn from_document(
    doc: &JsonValue,
    now: i64,
    cache: &mut KeyLineCache,
) -> Result<(DesiredAccounts, Vec<Note>)> {
    let instance = match doc {
        JsonValue::Object(root) => match root.get("instance") {
            Some(instance @ JsonValue::Object(_)) => instance,
            _ => return Err(bad_document("it has no instance object")),
        },
        _ => return Err(bad_document("it is not a JSON object")),
    };
    let mut notes = Vec::new();
    let instance_attrs = attributes(Some(instance), "Instance", &mut notes);
    let project_attrs = attributes(crate::json::lookup(doc, "project"), "Project", &mut notes);

    let oslogin = oslogin_enabled(instance_attrs, project_attrs);
    let mut users: BTreeMap<Username, Vec<KeyText>> = BTreeMap::new();
    let mut next_expiry: Option<i64> = None;
    let mut earlier: Vec<Option<(String, LineRead)>> = std::mem::take(&mut cache.lines)
        .into_iter()
        .map(Some)
        .collect();
    cache.lines.reserve(earlier.len());
    let mut next = 0;
    if !oslogin {
        let lines = key_values(instance_attrs, project_attrs)
            .into_iter()
            .flat_map(|v| v.split('\n'));
        for line in lines {
            let entry = KeyLineCache::take_or_read(&mut earlier, &mut next, line);
            let wanted = entry.1.wanted_at(now, &mut notes);
            cache.lines.push(entry);
            let Some(wanted) = wanted else {
                continue;
            };
            let keys = users.entry(wanted.user).or_default();
            if keys.contains(&wanted.key) {
                continue;
            }
            keys.push(wanted.key);
            if let Some(t) = wanted.expire_on {
                next_expiry = Some(next_expiry.map_or(t, |n| n.min(t)));
            }
        }
    }
    // The wake-up is at `expireOn` itself: the key is expired from that moment on.
    let next_expiry_check = next_expiry;
    Ok((
        DesiredAccounts {
            oslogin,
            users,
            next_expiry_check,
        },
        notes,
    ))
}

fn bad_document(msg: &str) -> Error {
    Error::Parse {
        what: "metadata document for accounts".into(),
        line: 0,
        msg: msg.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::fixtures::ed25519;
    use super::super::keys::SkipReason;
    use super::super::NameRefusal;
    use super::*;

    fn snapshot(json: &str) -> Snapshot {
        Snapshot {
            etag: None,
            doc: crate::json::parse_json(json)
                .expect("test JSON parses")
                .into(),
        }
    }

    /// A document with the given instance and project attributes (JSON object bodies).
    fn doc(instance: &str, project: &str) -> Snapshot {
        snapshot(&format!(
            r#"{{"instance":{{"id":1,"attributes":{{{}}}}},"project":{{"projectId":"p","attributes":{{{}}}}}}}"#,
            instance, project
        ))
    }

    /// A JSON string value holding `text`.
    fn js(text: &str) -> String {
        JsonValue::String(text.to_string())
            .stringify()
            .expect("strings stringify")
    }

    fn read(snap: &Snapshot) -> (DesiredAccounts, Vec<Note>) {
        DesiredAccounts::from_snapshot(snap, 1_000).expect("document is usable")
    }

    fn names(d: &DesiredAccounts) -> Vec<&str> {
        d.users().keys().map(Username::as_str).collect()
    }

    /// The shape of a real recursive metadata document (trimmed).
    const SAMPLE_DOCUMENT: &str = r##"{
      "instance": {
        "attributes": {
          "enable-oslogin": "FALSE",
          "ssh-keys": "alice:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPKkHbgJqZMI6HcgENtI7INWKdoHxd07XKGDtf8SC16Q alice@workstation\nbob:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKDvOHh4lZwsnHsjRWoSB5W4rTljD1PEJrNsjtwLxwcE google-ssh {\"userName\":\"bob@example.com\",\"expireOn\":\"2099-12-31T23:59:59+0000\"}",
          "startup-script": "#!/bin/sh\necho hello"
        },
        "hostname": "vm.c.p.internal",
        "id": 1234567890123456789,
        "networkInterfaces": [{"ip": "10.128.0.2", "mac": "42:01:0a:80:00:02"}],
        "zone": "projects/123/zones/us-central1-a"
      },
      "oslogin": {"authenticate": {"sessions": {}}},
      "project": {
        "attributes": {
          "enable-guest-attributes": "TRUE",
          "ssh-keys": "carol:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5yCiSzI0G4imYCDbyAsTekLOGsedIuRBS4RVrgQdN9 carol@laptop"
        },
        "numericProjectId": 123,
        "projectId": "p"
      }
    }"##;

    #[test]
    fn the_sample_metadata_document_reads() {
        let snap = snapshot(SAMPLE_DOCUMENT);
        let (d, notes) = read(&snap);
        assert!(notes.is_empty(), "{notes:?}");
        assert!(!d.oslogin_enabled());
        assert_eq!(names(&d), ["alice", "bob", "carol"]);
        assert_eq!(d.keys("alice").map(|k| k.len()), Some(1));
        assert!(d.keys("bob").is_some_and(|k| k[0].contains("google-ssh")));
        let expire = crate::timing::days_from_civil(2099, 12, 31) * 86_400 + 86_399;
        assert_eq!(d.next_expiry_check(), Some(expire));
    }

    #[test]
    fn key_source_precedence() {
        let ik = ed25519(1, "i-ssh-keys");
        let i_legacy = ed25519(2, "i-sshKeys");
        let pk = ed25519(3, "p-ssh-keys");
        let p_legacy = ed25519(4, "p-sshKeys");
        let i_new = format!(r#""ssh-keys":{}"#, js(&format!("u:{ik}")));
        let i_old = format!(r#""sshKeys":{}"#, js(&format!("u:{i_legacy}")));
        let p_both = format!(
            r#""ssh-keys":{},"sshKeys":{}"#,
            js(&format!("u:{pk}")),
            js(&format!("u:{p_legacy}"))
        );
        let block = |v: &str| format!(r#""block-project-ssh-keys":"{}""#, v);
        let cases: Vec<(String, Vec<&String>)> = vec![
            (i_new.clone(), vec![&ik, &pk, &p_legacy]),
            (format!("{i_new},{i_old}"), vec![&i_legacy, &ik]),
            (i_old.clone(), vec![&i_legacy]),
            (format!("{i_new},{}", block("true")), vec![&ik]),
            (format!("{i_new},{}", block("TRUE")), vec![&ik]),
            (format!("{i_new},{}", block(" True ")), vec![&ik]),
            (
                format!("{i_new},{}", block("false")),
                vec![&ik, &pk, &p_legacy],
            ),
            (
                format!("{i_new},{}", block("yes")),
                vec![&ik, &pk, &p_legacy],
            ),
            (
                format!(r#"{i_new},"sshKeys":"""#),
                vec![&ik, &pk, &p_legacy],
            ),
            (
                format!(r#"{i_new},"sshKeys":" \n""#),
                vec![&ik, &pk, &p_legacy],
            ),
            (String::new(), vec![&pk, &p_legacy]),
        ];
        for (instance, expected) in cases {
            let (d, notes) = read(&doc(&instance, &p_both));
            assert!(notes.is_empty(), "{instance}: {notes:?}");
            let expected: Vec<String> = expected.into_iter().cloned().collect();
            assert_eq!(d.keys("u"), Some(expected), "{instance}");
        }
    }

    #[test]
    fn keys_are_deduplicated_in_order_of_first_appearance() {
        let (a, b, c) = (ed25519(1, "a"), ed25519(2, "b"), ed25519(3, "c"));
        let value = format!("u:{b}\nv:{a}\nu:{a}\nu:{b}\r\nu:{c}\n\nu:{a}\n");
        let instance = format!(r#""ssh-keys":{}"#, js(&value));
        let project = format!(r#""ssh-keys":{}"#, js(&format!("u:{c}\nu:{a}")));
        let (d, notes) = read(&doc(&instance, &project));
        assert!(notes.is_empty());
        assert_eq!(d.keys("u"), Some(vec![b.clone(), a.clone(), c]));
        assert_eq!(d.keys("v"), Some(vec![a]));
    }

    #[test]
    fn lines_split_at_newline_only() {
        // A lone `\r` does not end a line: it makes the key implausible.
        let (a, b) = (ed25519(1, "a"), ed25519(2, "b"));
        let instance = format!(r#""ssh-keys":{}"#, js(&format!("u:{a}\rv:{b}")));
        let (d, notes) = read(&doc(&instance, ""));
        assert!(d.users().is_empty());
        assert_eq!(
            notes,
            vec![Note::SkippedKey {
                user: Some("u".into()),
                reason: SkipReason::ControlCharacter
            }]
        );
    }

    #[test]
    fn refused_and_skipped_lines_are_noted_and_left_out() {
        let good = ed25519(1, "ok");
        let value = format!(
            "alice:{good}\n-oProxyCommand=x:{good}\n../x:{good}\n{long}:{good}\nA B:{good}\n\
             ユーザー:{good}\n$(x):{good}\na;b:{good}\n:{good}\nbob:not-a-key\njunk\n",
            long = "a".repeat(33)
        );
        let instance = format!(r#""ssh-keys":{}"#, js(&value));
        let (d, notes) = read(&doc(&instance, ""));
        assert_eq!(names(&d), ["alice"]);
        let refused: Vec<(&str, NameRefusal)> = notes
            .iter()
            .filter_map(|n| match n {
                Note::RefusedName { name, reason } => Some((name.as_str(), *reason)),
                _ => None,
            })
            .collect();
        let long = "a".repeat(33);
        assert_eq!(
            refused,
            vec![
                ("-oProxyCommand=x", NameRefusal::BadCharacter),
                ("../x", NameRefusal::BadCharacter),
                (long.as_str(), NameRefusal::TooLong),
                ("A B", NameRefusal::BadCharacter),
                ("$(x)", NameRefusal::BadCharacter),
                ("a;b", NameRefusal::BadCharacter),
                ("", NameRefusal::Empty),
            ]
        );
        assert!(notes.contains(&Note::SkippedKey {
            user: Some("????".into()),
            reason: SkipReason::NonAscii
        }));
        assert!(notes.contains(&Note::SkippedKey {
            user: Some("bob".into()),
            reason: SkipReason::UnknownType
        }));
        assert!(notes.contains(&Note::SkippedKey {
            user: None,
            reason: SkipReason::NoColon
        }));
        assert_eq!(notes.len(), 10);
    }

    /// A document whose instance `ssh-keys` holds `lines`.
    fn keys_doc(lines: &[String]) -> Snapshot {
        doc(&format!(r#""ssh-keys":{}"#, js(&lines.join("\n"))), "")
    }

    #[test]
    fn the_line_cache_gives_what_a_fresh_read_gives() {
        let line = |user: &str, seed: u8| format!("{}:{}", user, ed25519(seed, "c"));
        let expiring = format!(
            "carol:{}",
            ed25519(
                9,
                r#"google-ssh {"userName":"c@d.e","expireOn":"1970-01-01T00:30:00Z"}"#
            )
        );
        let rounds: Vec<Vec<String>> = vec![
            vec![
                line("a", 1),
                line("b", 2),
                "junk".into(),
                line("c", 3),
                expiring.clone(),
            ],
            // One key changed, one added, one removed.
            vec![
                line("a", 1),
                line("b", 4),
                "junk".into(),
                line("d", 5),
                expiring.clone(),
            ],
            // Another order altogether; a line twice.
            vec![
                expiring.clone(),
                line("d", 5),
                line("a", 1),
                line("a", 1),
                line("b", 4),
            ],
            vec![],
            vec![line("a", 1)],
        ];
        let mut cache = KeyLineCache::default();
        for (round, lines) in rounds.iter().enumerate() {
            // The expiring key is wanted before its expireOn (1800) and not after, even
            // though the line was read and kept earlier.
            for now in [1_000, 2_000] {
                let snap = keys_doc(lines);
                let cached = DesiredAccounts::from_snapshot_cached(&snap, now, &mut cache);
                let fresh = DesiredAccounts::from_snapshot(&snap, now);
                assert_eq!(cached.unwrap(), fresh.unwrap(), "round {round} at {now}");
            }
            // An empty value is one blank line.
            let kept = lines.len().max(1);
            assert_eq!(
                cache.lines.len(),
                kept,
                "only this document's lines are kept"
            );
        }
    }

    #[test]
    fn expired_keys_leave_and_the_earliest_future_expiry_is_exposed() {
        let expiring = |seed, when: &str| {
            ed25519(
                seed,
                &format!(r#"google-ssh {{"userName":"x@y.z","expireOn":"{when}"}}"#),
            )
        };
        let past = expiring(1, "1970-01-01T00:10:00+0000"); // 600
        let soon = expiring(2, "1970-01-01T00:30:00Z"); // 1800
        let later = expiring(3, "1970-01-01T01:00:00.5+00:00"); // 3600
        let forever = ed25519(4, "plain");
        let value = format!("a:{past}\na:{later}\nb:{soon}\nc:{forever}\nd:{past}");
        let snap = doc(&format!(r#""ssh-keys":{}"#, js(&value)), "");

        let (d, notes) = DesiredAccounts::from_snapshot(&snap, 1_000).unwrap();
        assert_eq!(names(&d), ["a", "b", "c"]); // d's only key expired: d is not wanted
        assert_eq!(d.keys("a"), Some(vec![later.clone()]));
        assert_eq!(d.next_expiry_check(), Some(1800));
        assert_eq!(notes.len(), 2);
        assert!(notes.iter().all(|n| matches!(n, Note::ExpiredKey { .. })));

        // Re-read at the time the daemon's timer fires: b's key is gone, a's is next.
        let (d, _) = DesiredAccounts::from_snapshot(&snap, 1800).unwrap();
        assert_eq!(names(&d), ["a", "c"]);
        assert_eq!(d.next_expiry_check(), Some(3600));
        let (d, _) = DesiredAccounts::from_snapshot(&snap, 3600).unwrap();
        assert_eq!(names(&d), ["c"]);
        assert_eq!(d.next_expiry_check(), None);
    }

    #[test]
    fn oslogin_precedence_and_effect() {
        let keys = format!(
            r#""ssh-keys":{}"#,
            js(&format!("alice:{}", ed25519(1, "a")))
        );
        let os = |v: &str| format!(r#""enable-oslogin":"{}""#, v);
        let cases = [
            (String::new(), String::new(), false),
            (os("true"), String::new(), true),
            (os("TRUE"), String::new(), true),
            (os(" True\\n"), String::new(), true),
            (String::new(), os("true"), true),
            (os("false"), os("true"), false),
            (os("FALSE"), os("TRUE"), false),
            (os(""), os("true"), true),
            (os("  "), os("true"), true),
            (os("true"), os("false"), true),
            (os("yes"), String::new(), false),
            (os("1"), String::new(), false),
        ];
        for (instance, project, enabled) in cases {
            let instance_attrs = [keys.as_str(), instance.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(",");
            let (d, _) = read(&doc(&instance_attrs, &project));
            assert_eq!(d.oslogin_enabled(), enabled, "{instance} / {project}");
            assert_eq!(d.users().is_empty(), enabled, "{instance} / {project}");
        }
    }

    #[test]
    fn a_document_without_an_instance_is_refused_not_read_as_empty() {
        for text in [
            "{}",
            "[]",
            "\"text\"",
            "null",
            r#"{"project":{"attributes":{}}}"#,
            r#"{"instance":"x","project":{}}"#,
            r#"{"instance":[],"project":{}}"#,
        ] {
            let err = DesiredAccounts::from_snapshot(&snapshot(text), 0);
            assert!(err.is_err(), "{text}");
        }
    }

    #[test]
    fn missing_attribute_sections_are_noted() {
        let (d, notes) = read(&snapshot(r#"{"instance":{"id":1}}"#));
        assert!(d.users().is_empty());
        assert_eq!(
            notes,
            vec![
                Note::MissingAttributes {
                    section: "Instance"
                },
                Note::MissingAttributes { section: "Project" }
            ]
        );
        // Non-string attribute values count as absent.
        let (d, notes) = read(&doc(
            r#""ssh-keys":7,"block-project-ssh-keys":true"#,
            r#""ssh-keys":null"#,
        ));
        assert!(d.users().is_empty());
        assert!(notes.is_empty());
    }
}
