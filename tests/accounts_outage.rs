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
//! Run: `cargo test --features emulator,test-hooks --test integration accounts_outage::` (as root).

#![cfg(feature = "emulator")]

use std::time::{Duration, Instant};

use crate::accounts_support::*;
use crate::common::Sandbox;

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
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(&keys_document(&outage_keys_before())));
    let mut daemon = spawn_daemon(&sb);
    let before = wait_outage_start(&sb, Duration::from_secs(20));
    sb.emulator().clear_requests();

    start(&sb);
    if change_during {
        // Metadata changes while the daemon cannot read it.
        set_keys(&sb, &outage_keys_after());
    }
    let until = Instant::now() + during;
    let mut checks = 0;
    while Instant::now() < until {
        assert_outage_untouched(&sb, &before, name);
        checks += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(checks >= 5);
    assert_eq!(ledger(&sb), ["alice", "bob"], "{}", name);
    assert_running(&sb, &mut daemon);

    stop(&sb);
    let took = wait_outage_recovered(&sb, recovery);
    eprintln!("{}: recovered {:?} after the outage ended", name, took);
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

/// One outage whose server misbehaves by `fault` (count -1, mode `mode`) until it is
/// cleared; at least `at_least` requests must have met it by then.
fn fault_outage(
    name: &str,
    fault: &str,
    mode: &str,
    at_least: usize,
    during: Duration,
    recovery: Duration,
) {
    outage(
        name,
        during,
        recovery,
        |sb| fault_after_kick(sb, fault, mode),
        |sb| {
            assert_faults_served(sb, mode, at_least);
            clear(sb)
        },
    );
}

const STATUS_503: &str = r#"{"mode":"status","status":503,"count":-1}"#;

#[test]
fn plain_503s_lose_no_key_and_recover() {
    fault_outage("503", STATUS_503, "status", 3, DURING, RECOVERY);
}

#[test]
fn a_503_with_a_keyless_json_body_loses_no_key() {
    let fault = format!(
        r#"{{"mode":"status","status":503,"count":-1,"body":{}}}"#,
        EMPTY_DOC
    );
    fault_outage("json 503", &fault, "status", 3, DURING, RECOVERY);
}

#[test]
fn html_200s_lose_no_key_and_recover() {
    fault_outage(
        "html",
        r#"{"mode":"html","count":-1}"#,
        "html",
        3,
        DURING,
        RECOVERY,
    );
}

#[test]
fn truncated_200s_lose_no_key_and_recover() {
    let fault = r#"{"mode":"truncate","count":-1}"#;
    fault_outage("truncate", fault, "truncate", 3, DURING, RECOVERY);
}

#[test]
fn connection_resets_lose_no_key_and_recover() {
    fault_outage(
        "reset",
        r#"{"mode":"reset","count":-1}"#,
        "reset",
        3,
        DURING,
        RECOVERY,
    );
}

#[test]
fn requests_hanging_past_the_client_timeout_lose_no_key_and_recover() {
    // The watch's client timeout is (60 + 10) s x 0.05 = 4 s here; the server hangs 8 s.
    let fault = r#"{"mode":"hang","seconds":8,"count":-1}"#;
    fault_outage(
        "hang",
        fault,
        "hang",
        1,
        Duration::from_secs(5),
        Duration::from_secs(12),
    );
}

#[test]
fn a_long_503_storm_loses_no_key_and_recovers() {
    // 8 s at the test time scale: 160 s of backoff in real time terms, past the 30 s cap.
    fault_outage(
        "storm",
        STATUS_503,
        "status",
        8,
        Duration::from_secs(8),
        RECOVERY,
    );
}

#[test]
fn a_complete_document_without_instance_loses_no_key() {
    outage_with(
        "no instance",
        DURING,
        RECOVERY,
        false,
        |sb| {
            sb.emulator()
                .set_metadata(r#"{"project":{"projectId":"p","attributes":{}}}"#)
        },
        |sb| {
            // The daemon did receive the document without `instance`, and refused it.
            assert!(
                sb.log_lines()
                    .iter()
                    .any(|l| l.contains("leaving every account as it is")),
                "the document without instance never reached the daemon: {:?}",
                sb.log_lines()
            );
            sb.emulator()
                .set_metadata(&keys_document(&outage_keys_after()))
        },
    );
}
