//! Fuzzes `ssh-keys` metadata: every line goes through the key-line parser, which must never
//! panic, must only ever yield valid account names and single-line keys, and whose merge
//! into an `authorized_keys` file must keep foreign lines and be idempotent.
#![no_main]

use gce_guest::accounts::authorized_keys::{foreign_lines, merge};
use gce_guest::accounts::keys::parse_key_line;
use gce_guest::accounts::Username;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut notes = Vec::new();
    let mut keys = Vec::new();
    for line in text.split('\n') {
        if let Some(wanted) = parse_key_line(line, 1_700_000_000, &mut notes) {
            assert!(Username::parse(wanted.user.as_str()).is_ok());
            assert!(!wanted.key.contains('\n') && !wanted.key.is_empty());
            keys.push(wanted.key);
        }
    }
    for note in &notes {
        let _ = note.to_string();
    }
    // The fuzz input doubles as an existing authorized_keys file.
    let merged = merge(data, &keys);
    assert_eq!(merge(&merged, &keys), merged, "merging twice changes nothing");
    let before: Vec<&[u8]> = foreign_lines(data).into_iter().filter(|l| !l.is_empty()).collect();
    let after: Vec<&[u8]> = foreign_lines(&merged).into_iter().filter(|l| !l.is_empty()).collect();
    assert_eq!(before, after, "foreign lines are kept in order");
});
