//! A metadata outage of several minutes in real time (time scale 1: the daemon's real
//! backoffs, its 60 s long-poll and 70 s client timeout), for `make test-long`: a 503
//! storm, 503s whose body is a keyless JSON document, HTML 200s, connection resets,
//! requests that hang past the client timeout, then 503s again. The keys change behind the
//! daemon's back at the start; every second of the outage each user's `authorized_keys`
//! must be exactly as before, and after the server recovers the change must be applied
//! within the backoff cap (30 s) plus a margin.
//!
//! `#[ignore]`d; it runs only with `GCE_GUEST_LONG=1` (which `make test-long` sets):
//! `GCE_GUEST_LONG=1 cargo test --features emulator,test-hooks --test integration --
//! --ignored accounts_long::`.

#![cfg(feature = "emulator")]

use std::time::{Duration, Instant};

use crate::accounts_support::*;
use crate::common::Sandbox;

#[test]
#[ignore = "minutes of real time; run by make test-long (GCE_GUEST_LONG=1)"]
fn a_real_time_outage_of_minutes_loses_no_key_and_recovers() {
    if std::env::var("GCE_GUEST_LONG").as_deref() != Ok("1") {
        println!("skipped: set GCE_GUEST_LONG=1 (make test-long)");
        return;
    }
    let sb = sandbox_or_skip!(Sandbox::builder()
        .time_scale(1.0)
        .metadata(&keys_document(&outage_keys_before())));
    let mut daemon = spawn_daemon(&sb);
    let before = wait_outage_start(&sb, Duration::from_secs(30));
    let emu = sb.emulator();

    // (fault, how long it stays, the mode name in the request log)
    let phases: [(String, u64, &str); 6] = [
        (
            r#"{"mode":"status","status":503,"count":-1}"#.into(),
            75,
            "status",
        ),
        (
            format!(
                r#"{{"mode":"status","status":503,"count":-1,"body":{}}}"#,
                EMPTY_DOC
            ),
            40,
            "status",
        ),
        (r#"{"mode":"html","count":-1}"#.into(), 40, "html"),
        (r#"{"mode":"reset","count":-1}"#.into(), 40, "reset"),
        // Longer than the watch's client timeout (60 + 10 s).
        (
            r#"{"mode":"hang","seconds":90,"count":-1}"#.into(),
            80,
            "hang",
        ),
        (
            r#"{"mode":"status","status":503,"count":-1}"#.into(),
            40,
            "status",
        ),
    ];
    let started = Instant::now();
    for (i, (fault, secs, mode)) in phases.iter().enumerate() {
        emu.clear_faults();
        emu.clear_requests();
        emu.fault(fault);
        if i == 0 {
            // Answer the pending long-poll with a harmless change, then change the keys
            // while every request fails.
            emu.patch(&instance_patch(&[("kick", "1")]));
            let met = sb.wait_until(Duration::from_secs(30), || {
                emu.requests().iter().any(|r| r.fault.is_some())
            });
            assert!(met, "no request met the first fault");
            set_keys(&sb, &outage_keys_after());
        }
        let until = Instant::now() + Duration::from_secs(*secs);
        while Instant::now() < until {
            assert_outage_untouched(&sb, &before, &format!("phase {} ({})", i, mode));
            std::thread::sleep(Duration::from_secs(1));
        }
        let met = emu
            .requests()
            .into_iter()
            .filter(|r| r.fault.as_deref() == Some(*mode))
            .count();
        assert!(met >= 1, "phase {}: no request met the {} fault", i, mode);
        eprintln!(
            "phase {} ({}): {} requests failed in {} s",
            i, mode, met, secs
        );
        assert_running(&sb, &mut daemon);
    }
    assert_eq!(ledger(&sb), ["alice", "bob"]);
    emu.clear_faults();
    let outage = started.elapsed();
    let took = wait_outage_recovered(&sb, Duration::from_secs(45));
    eprintln!(
        "outage of {:?}; recovered {:?} after it ended",
        outage, took
    );
    assert_running(&sb, &mut daemon);
}
