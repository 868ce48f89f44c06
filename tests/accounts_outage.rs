//! The accounts daemon while the metadata server misbehaves, under the test time scale:
//! 503s, a 503 whose body is valid JSON with no `ssh-keys` (the reply that makes a naive
//! agent wipe every key), HTML error pages with status 200, truncated 200s, connection
//! resets, requests that hang past the client timeout, a long 503 storm, and a complete
//! 200 document without an `instance` object. During each outage the metadata changes
//! behind the daemon's back; no user may lose a key while the server misbehaves, and once
//! it answers again the real change (a key changed, a user added, a user removed) must be
//! applied.
//!
//! The minutes-long real-time variant is `tests/accounts_long.rs` (`make test-long`).
//!
//! Run: `cargo test --features emulator --test accounts_outage` (as root).

#![cfg(feature = "emulator")]

mod accounts_support;
mod common;

use std::time::{Duration, Instant};

use accounts_support::*;
use common::Sandbox;

/// The keys before the outage and the change made during it.
pub struct Scenario {
    pub before: String,
    pub after: String,
}

fn scenario() -> Scenario {
    Scenario {
        before: format!(
            "alice:{}\nbob:{}",
            fake_key(1, "alice-old"),
            fake_key(2, "bob")
        ),
        after: format!(
            "alice:{}\ncarol:{}",
            fake_key(3, "alice-new"),
            fake_key(4, "carol")
        ),
    }
}

/// The JSON 503 body that looks like a document with no keys at all.
const EMPTY_DOC: &str =
    r#"{"instance":{"id":1,"attributes":{}},"project":{"projectId":"p","attributes":{}}}"#;

/// Runs one outage: `start` makes the server misbehave (after the current long-poll was
/// answered), the keys change behind it (unless `stop` serves the change itself), `during`
/// long the files must stay as they were, then `stop` ends the outage and the change must
/// be applied within `recovery`.
fn outage(
    name: &str,
    during: Duration,
    recovery: Duration,
    start: impl FnOnce(&Sandbox),
    stop: impl FnOnce(&Sandbox),
) {
    outage_with(name, during, recovery, true, start, stop)
}

fn outage_with(
    name: &str,
    during: Duration,
    recovery: Duration,
    change_during: bool,
    start: impl FnOnce(&Sandbox),
    stop: impl FnOnce(&Sandbox),
) {
    let s = scenario();
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(&keys_document(&s.before)));
    let mut daemon = spawn_daemon(&sb);
    wait_keys(&sb, "bob", Duration::from_secs(20), |k| {
        k.contains(&fake_key(2, "bob"))
    });
    wait_keys(&sb, "alice", Duration::from_secs(5), |k| {
        k.contains(&fake_key(1, "alice-old"))
    });
    let alice_before = keys_of(&sb, "alice");
    let bob_before = keys_of(&sb, "bob");
    let emu = sb.emulator();
    emu.clear_requests();

    start(&sb);
    if change_during {
        // Metadata changes while the daemon cannot read it.
        set_keys(&sb, &s.after);
    }
    let until = Instant::now() + during;
    let mut checks = 0;
    while Instant::now() < until {
        assert_eq!(
            keys_of(&sb, "alice"),
            alice_before,
            "{}: alice's keys changed during the outage",
            name
        );
        assert_eq!(
            keys_of(&sb, "bob"),
            bob_before,
            "{}: bob lost his key during the outage",
            name
        );
        assert!(
            !sb.exists("/home/carol"),
            "{}: carol appeared during the outage",
            name
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(checks >= 5);
    assert_eq!(ledger(&sb), ["alice", "bob"], "{}", name);
    assert_running(&sb, &mut daemon);

    stop(&sb);
    let t = Instant::now();
    wait_keys(&sb, "carol", recovery, |k| {
        k.contains(&fake_key(4, "carol"))
    });
    wait_keys(&sb, "alice", Duration::from_secs(2), |k| {
        google_keys(k) == [fake_key(3, "alice-new")]
    });
    wait_keys(&sb, "bob", Duration::from_secs(2), |k| {
        google_keys(k).is_empty()
    });
    wait_ledger(&sb, &["alice", "carol"], Duration::from_secs(2));
    eprintln!(
        "{}: recovered {:?} after the outage ended",
        name,
        t.elapsed()
    );
    assert_running(&sb, &mut daemon);
}

/// Starts `fault` (count -1, its mode named `mode`) and makes the pending long-poll
/// return, so the daemon's next requests meet the fault; returns once one has (a change
/// made earlier could still ride on the answer to the pending long-poll).
fn fault_after_kick(sb: &Sandbox, fault: &str, mode: &str) {
    let emu = sb.emulator();
    emu.fault(fault);
    emu.patch(&instance_patch(&[("kick", "1")]));
    let met = sb.wait_until(Duration::from_secs(10), || {
        emu.requests()
            .iter()
            .any(|r| r.fault.as_deref() == Some(mode))
    });
    assert!(met, "no request met the {} fault", mode);
}

fn assert_faults_served(sb: &Sandbox, mode: &str, at_least: usize) {
    let served = sb
        .emulator()
        .requests()
        .into_iter()
        .filter(|r| r.fault.as_deref() == Some(mode))
        .count();
    assert!(
        served >= at_least,
        "only {} requests met the {} fault",
        served,
        mode
    );
}

fn clear(sb: &Sandbox) {
    sb.emulator().clear_faults();
}

const DURING: Duration = Duration::from_secs(2);
const RECOVERY: Duration = Duration::from_secs(5);

#[test]
fn plain_503s_lose_no_key_and_recover() {
    outage(
        "503",
        DURING,
        RECOVERY,
        |sb| fault_after_kick(sb, r#"{"mode":"status","status":503,"count":-1}"#, "status"),
        |sb| {
            assert_faults_served(sb, "status", 3);
            clear(sb)
        },
    );
}

#[test]
fn a_503_with_a_keyless_json_body_loses_no_key() {
    outage(
        "json 503",
        DURING,
        RECOVERY,
        |sb| {
            fault_after_kick(
                sb,
                &format!(
                    r#"{{"mode":"status","status":503,"count":-1,"body":{}}}"#,
                    EMPTY_DOC
                ),
                "status",
            )
        },
        |sb| {
            assert_faults_served(sb, "status", 3);
            clear(sb)
        },
    );
}

#[test]
fn html_200s_lose_no_key_and_recover() {
    outage(
        "html",
        DURING,
        RECOVERY,
        |sb| fault_after_kick(sb, r#"{"mode":"html","count":-1}"#, "html"),
        |sb| {
            assert_faults_served(sb, "html", 3);
            clear(sb)
        },
    );
}

#[test]
fn truncated_200s_lose_no_key_and_recover() {
    outage(
        "truncate",
        DURING,
        RECOVERY,
        |sb| fault_after_kick(sb, r#"{"mode":"truncate","count":-1}"#, "truncate"),
        |sb| {
            assert_faults_served(sb, "truncate", 3);
            clear(sb)
        },
    );
}

#[test]
fn connection_resets_lose_no_key_and_recover() {
    outage(
        "reset",
        DURING,
        RECOVERY,
        |sb| fault_after_kick(sb, r#"{"mode":"reset","count":-1}"#, "reset"),
        |sb| {
            assert_faults_served(sb, "reset", 3);
            clear(sb)
        },
    );
}

#[test]
fn requests_hanging_past_the_client_timeout_lose_no_key_and_recover() {
    // The watch's client timeout is (60 + 10) s x 0.05 = 4 s here; the server hangs 8 s.
    outage(
        "hang",
        Duration::from_secs(5),
        Duration::from_secs(12),
        |sb| fault_after_kick(sb, r#"{"mode":"hang","seconds":8,"count":-1}"#, "hang"),
        |sb| {
            assert_faults_served(sb, "hang", 1);
            clear(sb)
        },
    );
}

#[test]
fn a_long_503_storm_loses_no_key_and_recovers() {
    // 8 s at the test time scale: 160 s of backoff in real time terms, past the 30 s cap.
    outage(
        "storm",
        Duration::from_secs(8),
        RECOVERY,
        |sb| fault_after_kick(sb, r#"{"mode":"status","status":503,"count":-1}"#, "status"),
        |sb| {
            assert_faults_served(sb, "status", 8);
            clear(sb)
        },
    );
}

#[test]
fn a_complete_document_without_instance_loses_no_key() {
    let s = scenario();
    outage_with(
        "no instance",
        DURING,
        RECOVERY,
        false,
        |sb| {
            sb.emulator()
                .set_metadata(r#"{"project":{"projectId":"p","attributes":{}}}"#)
        },
        move |sb| sb.emulator().set_metadata(&keys_document(&s.after)),
    );
}
