//! `google_guest_daemon` and the clock-skew daemon, run for real in the sandbox: one
//! long-poll for all daemons, each acting only on its own slice, a crashed daemon restarted
//! without disturbing the others, lock files shared with the standalone daemons, SIGTERM
//! within a second. The clock is never set: nothing in the sandbox holds CAP_SYS_TIME,
//! there is no RTC here, and a recording `hwclock` stands first in PATH.

#![cfg(feature = "emulator")]

use std::time::{Duration, Instant};

use crate::common::{Sandbox, SandboxBuilder};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPKkHbgJqZMI6HcgENtI7INWKdoHxd07XKGDtf8SC16Q alice@laptop";
const STUB_PATH: &str = "/run/stub:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const CALLS: &str = "/run/hwclock.calls";

fn metadata(token: &str, keys: &str) -> String {
    format!(
        r#"{{"instance":{{"id":1,"hostname":"vm","virtualClock":{{"driftToken":"{}"}},
            "attributes":{{"ssh-keys":"{}"}},"networkInterfaces":[]}},
           "project":{{"projectId":"p","attributes":{{}}}}}}"#,
        token, keys
    )
}

fn builder(token: &str, keys: &str) -> SandboxBuilder {
    Sandbox::builder().metadata(&metadata(token, keys)).file(
        "/run/stub/hwclock",
        format!("#!/bin/sh\necho \"$*\" >> {}\n", CALLS),
        0o755,
    )
}

fn env() -> [(&'static str, &'static str); 1] {
    [("PATH", STUB_PATH)]
}

fn clock_calls(sb: &Sandbox) -> Vec<String> {
    sb.read_string(CALLS)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn count_log(sb: &Sandbox, needle: &str) -> usize {
    sb.log_lines().iter().filter(|l| l.contains(needle)).count()
}

const SYNCED: &str = "google-clock-skew: INFO Synced system time with hardware clock.";

#[test]
fn a_drift_token_change_sets_the_clock_exactly_once() {
    let sb = sandbox_or_skip!(builder("1", ""));
    let _daemon = sb.spawn_env(["google_clock_skew_daemon"], &env());
    assert!(
        sb.wait_for_log(Duration::from_secs(10), SYNCED),
        "no sync at start: {:?}",
        sb.log_lines()
    );
    assert!(sb
        .log_lines()
        .iter()
        .any(|l| l == "google-clock-skew: INFO Clock drift token has changed: 1."));
    assert_eq!(clock_calls(&sb), ["-s -u"], "hwclock -s -u, once at start");

    // Changes elsewhere in the document: the watch wakes, the clock daemon does not act.
    let emu = sb.emulator();
    for i in 0..5 {
        emu.patch(&format!(
            r#"{{"instance":{{"attributes":{{"other":"{}"}}}}}}"#,
            i
        ));
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(clock_calls(&sb).len(), 1, "unchanged token, no clock set");

    emu.patch(r#"{"instance":{"virtualClock":{"driftToken":"2"}}}"#);
    assert!(sb.wait_until(Duration::from_secs(10), || clock_calls(&sb).len() == 2));
    assert!(sb.wait_for_log(Duration::from_secs(5), "Clock drift token has changed: 2."));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(clock_calls(&sb).len(), 2);
    assert_eq!(count_log(&sb, SYNCED), 2);
}

#[test]
fn an_rtc_in_local_time_is_skipped_with_a_warning() {
    let sb =
        sandbox_or_skip!(builder("1", "").file("/etc/adjtime", "0.0 0 0.0\n0\nLOCAL\n", 0o644));
    let _daemon = sb.spawn_env(["google_clock_skew_daemon"], &env());
    assert!(
        sb.wait_for_log(Duration::from_secs(10), "keeps local time"),
        "{:?}",
        sb.log_lines()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(clock_calls(&sb).is_empty());
    assert_eq!(count_log(&sb, SYNCED), 0);
}

#[test]
fn the_guest_daemon_uses_one_long_poll_for_every_daemon_and_stops_fast() {
    let sb = sandbox_or_skip!(builder("1", &format!("alice:{}", KEY)));
    // The accounts daemon's second update panics (the test hook): a probe that shows
    // whether the accounts thread was handed a document.
    let mut daemon = sb.spawn_env(
        ["google_guest_daemon"],
        &[("PATH", STUB_PATH), ("GCE_GUEST_TEST_PANIC", "accounts:2")],
    );
    assert!(
        sb.wait_for_log(Duration::from_secs(10), SYNCED),
        "{:?}",
        sb.log_lines()
    );
    assert!(sb.wait_until(Duration::from_secs(15), || sb
        .exists("/home/alice/.ssh/authorized_keys")));
    let emu = sb.emulator();
    emu.patch(r#"{"instance":{"virtualClock":{"driftToken":"2"}}}"#);
    assert!(sb.wait_until(Duration::from_secs(10), || clock_calls(&sb).len() == 2));
    // The accounts daemon did not act on the clock change: no second update...
    std::thread::sleep(Duration::from_millis(300));
    const ACCOUNTS_CRASHED: &str = "The accounts daemon crashed";
    assert_eq!(count_log(&sb, ACCOUNTS_CRASHED), 0, "{:?}", sb.log_lines());
    // ...but it does act on a change of its own slice (so the probe works).
    emu.patch(&format!(
        r#"{{"instance":{{"attributes":{{"ssh-keys":"alice:{}\nbob:{}"}}}}}}"#,
        KEY, KEY
    ));
    assert!(
        sb.wait_for_log(Duration::from_secs(10), ACCOUNTS_CRASHED),
        "{:?}",
        sb.log_lines()
    );
    assert_eq!(
        clock_calls(&sb).len(),
        2,
        "the clock daemon ignored the key change"
    );

    let mut polls: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.wait_for_change)
        .collect();
    polls.sort_by_key(|r| r.start_ms);
    assert!(polls.len() >= 2);
    for pair in polls.windows(2) {
        let end = pair[0].end_ms.expect("an earlier long-poll has ended");
        assert!(
            pair[1].start_ms >= end,
            "two long-polls at once: {:?}",
            pair
        );
    }
    assert!(polls
        .iter()
        .all(|r| r.path == "/computeMetadata/v1/" && r.query.contains("recursive=true")));

    let start = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait_timeout(Duration::from_secs(5))
        .expect("exits on SIGTERM");
    let took = start.elapsed();
    assert!(status.success(), "{:?}", status);
    assert!(took < Duration::from_secs(1), "SIGTERM took {:?}", took);
}

#[test]
fn a_crashed_daemon_is_restarted_without_disturbing_the_others() {
    let sb = sandbox_or_skip!(builder("1", &format!("alice:{}", KEY)));
    let _daemon = sb.spawn_env(
        ["google_guest_daemon"],
        &[("PATH", STUB_PATH), ("GCE_GUEST_TEST_PANIC", "accounts:1")],
    );
    assert!(
        sb.wait_for_log(
            Duration::from_secs(10),
            "The accounts daemon crashed; restarting it"
        ),
        "{:?}",
        sb.log_lines()
    );
    assert!(sb
        .log_lines()
        .iter()
        .any(|l| l.contains("google-accounts: ERROR Internal error")
            && l.contains("injected test fault")));
    assert!(
        sb.wait_until(Duration::from_secs(15), || sb
            .exists("/home/alice/.ssh/authorized_keys")),
        "{:?}",
        sb.log_lines()
    );
    assert!(sb.wait_for_log(Duration::from_secs(5), SYNCED));
    assert_eq!(
        clock_calls(&sb).len(),
        1,
        "the clock daemon ran once, undisturbed"
    );
    assert_eq!(count_log(&sb, SYNCED), 1);
    // And it still acts on its own changes, exactly once each.
    sb.emulator()
        .patch(r#"{"instance":{"virtualClock":{"driftToken":"2"}}}"#);
    assert!(sb.wait_until(Duration::from_secs(10), || clock_calls(&sb).len() == 2));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(clock_calls(&sb).len(), 2);
    assert_eq!(count_log(&sb, SYNCED), 2);
}

#[test]
fn a_lock_held_by_a_standalone_daemon_disables_only_that_thread() {
    let sb = sandbox_or_skip!(builder("1", &format!("alice:{}", KEY)));
    let mut standalone = sb.spawn_env(["google_clock_skew_daemon"], &env());
    assert!(sb.wait_for_log(Duration::from_secs(10), SYNCED));

    // A second standalone copy warns and exits 0 at once.
    let second = sb.run_env(["google_clock_skew_daemon"], &env());
    assert_eq!(second.code(), Some(0));
    assert!(sb.wait_for_log(
        Duration::from_secs(5),
        "Exception locking /var/lock/google_clock_skew.lock. File already locked."
    ));

    let _guest = sb.spawn_env(["google_guest_daemon"], &env());
    assert!(
        sb.wait_for_log(
            Duration::from_secs(10),
            "Another copy runs; retrying every 30 seconds."
        ),
        "{:?}",
        sb.log_lines()
    );
    assert!(sb.wait_until(Duration::from_secs(15), || sb
        .exists("/home/alice/.ssh/authorized_keys")));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        clock_calls(&sb).len(),
        1,
        "the clock was set by the standalone daemon only"
    );

    // Once the standalone copy is gone, the thread takes the lock at its next retry (30 s,
    // 1.5 s at the test time scale) and acts on the document it has.
    standalone.signal(libc::SIGTERM);
    standalone
        .wait_timeout(Duration::from_secs(5))
        .expect("the standalone daemon exits");
    assert!(
        sb.wait_until(Duration::from_secs(10), || clock_calls(&sb).len() == 2
            && count_log(&sb, SYNCED) == 2),
        "{:?}",
        sb.log_lines()
    );
}

#[test]
fn sighup_reloads_the_configuration() {
    let sb = sandbox_or_skip!(builder("1", ""));
    let daemon = sb.spawn_env(["google_guest_daemon"], &env());
    assert!(sb.wait_for_log(Duration::from_secs(10), SYNCED));
    // New accounts join the configured groups: the default list has adm (and not audio);
    // the new file names audio only. Only a daemon that re-read the file on SIGHUP uses it.
    sb.write(
        "/etc/default/instance_configs.cfg",
        "[Accounts]\ngroups = audio\n",
    );
    daemon.signal(libc::SIGHUP);
    assert!(sb.wait_for_log(
        Duration::from_secs(5),
        "Reloading the configuration (SIGHUP)."
    ));
    // The reload makes every daemon re-check its slice against the new configuration.
    assert!(
        sb.wait_until(Duration::from_secs(10), || count_log(&sb, SYNCED) == 2),
        "{:?}",
        sb.log_lines()
    );
    sb.emulator().patch(&format!(
        r#"{{"instance":{{"attributes":{{"ssh-keys":"alice:{}"}}}}}}"#,
        KEY
    ));
    assert!(sb.wait_until(Duration::from_secs(15), || {
        sb.exists("/home/alice/.ssh/authorized_keys")
    }));
    let member = |group: &str| {
        sb.group(group)
            .is_some_and(|g| g.members.iter().any(|m| m == "alice"))
    };
    assert!(
        sb.group("audio").is_some(),
        "the sandbox has an audio group"
    );
    assert!(member("audio"), "the reloaded groups apply");
    assert!(!member("adm"), "the built-in groups no longer apply");
}

#[test]
fn a_metadata_outage_is_logged_once_per_kind_and_its_end_once() {
    let sb = sandbox_or_skip!(builder("1", ""));
    let _daemon = sb.spawn_env(["google_guest_daemon"], &env());
    assert!(sb.wait_for_log(Duration::from_secs(10), SYNCED));
    let emu = sb.emulator();
    const FAILED: &str = "GET request error retrieving metadata.";
    emu.fault(r#"{"mode":"status","status":503,"count":-1}"#);
    // The fault bites once the pending long-poll (3 s under the time scale) returns.
    assert!(sb.wait_for_log(Duration::from_secs(10), FAILED));
    std::thread::sleep(Duration::from_secs(2));
    let failed_503 = emu.requests().iter().filter(|r| r.status == 503).count();
    assert!(failed_503 >= 3, "retried: {} requests", failed_503);
    assert_eq!(count_log(&sb, FAILED), 1, "{:?}", sb.log_lines());

    emu.clear_faults();
    emu.fault(r#"{"mode":"reset","count":-1}"#);
    assert!(sb.wait_until(Duration::from_secs(10), || count_log(&sb, FAILED) == 2));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count_log(&sb, FAILED), 2, "a new kind is logged once more");

    emu.clear_faults();
    assert!(sb.wait_for_log(
        Duration::from_secs(10),
        "Metadata server is answering again"
    ));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count_log(&sb, "Metadata server is answering again"), 1);
    assert_eq!(count_log(&sb, FAILED), 2);
}
