//! What the accounts daemon refuses or records when the system does not go along, and
//! when an expiring key goes:
//!
//! - a half-made account (`useradd` wrote the passwd entry, then could not make the home)
//!   is recorded in `google_users_created`, so `deprovision_remove` deletes it later;
//! - a name `useradd` refuses for good (an existing group's, `adm`) is logged once and
//!   tried again only when that user's metadata changes, not at every round or retry;
//! - two managed names with one home (`root` and its uid-0 alias `toor`): the second is
//!   refused with one log line and never touches the first one's lines;
//! - no key material in the log: a private key pasted into `ssh-keys` is dropped with one
//!   redacted warning, a key without `user:` is named by the reason only, an expired key
//!   by its type and short fingerprint;
//! - expiry on the dot: a key is gone from the file half a second after its `expireOn`
//!   (the exact delay is a `make bench` row).
//!
//! Run: `cargo test --features emulator,test-hooks --test integration accounts_refusals::`
//! (as root).

#![cfg(feature = "emulator")]

use std::time::Duration;

use crate::accounts_support::*;
use crate::common::Sandbox;

#[test]
fn a_half_made_account_is_still_recorded_as_created() {
    let key = fake_key(1, "alice");
    let sb = sandbox_or_skip!(recording_builder()
        // The home cannot be made: a file is in its place.
        .file("/home/alice", "not a directory\n", 0o644)
        .file(
            "/etc/default/instance_configs.cfg",
            "[Accounts]\ndeprovision_remove = true\n",
            0o644
        ));
    // The home cannot be made: /home is read-only.
    sb.sh("mount -t tmpfs -o ro tmpfs /home").assert_success();
    let mut daemon = spawn_daemon(&sb);
    set_keys(&sb, &format!("alice:{}", key));
    let recorded = sb.wait_until(Duration::from_secs(20), || {
        sb.read_string(CREATED)
            .unwrap_or_default()
            .lines()
            .any(|l| l == "alice")
    });
    assert!(
        recorded,
        "useradd made alice in part, yet she is not recorded as created: {:?}\n{}",
        sb.user("alice"),
        sb.log_lines().join("\n")
    );
    assert!(sb.user("alice").is_some());

    // Metadata drops her: the account the daemon made is deleted.
    set_keys(&sb, "");
    let deleted = sb.wait_until(Duration::from_secs(20), || sb.user("alice").is_none());
    assert!(deleted, "{}", sb.log_lines().join("\n"));
    wait_ledger(&sb, &[], Duration::from_secs(10));
    assert_running(&sb, &mut daemon);
}

fn useradd_calls_for(sb: &Sandbox, name: &str) -> usize {
    calls(sb)
        .iter()
        .filter(|c| c[0] == "useradd" && c.last().map(String::as_str) == Some(name))
        .count()
}

#[test]
fn a_name_useradd_refuses_for_good_is_tried_again_only_when_its_metadata_changes() {
    let sb = sandbox_or_skip!(recording_builder());
    let mut daemon = spawn_daemon(&sb);
    // `adm` names an existing group: useradd refuses it for good.
    for round in 0..4u64 {
        set_keys(
            &sb,
            &format!(
                "adm:{}\nbob:{}",
                fake_key(1, "adm"),
                fake_key(10 + round, "bob")
            ),
        );
        wait_keys(&sb, "bob", Duration::from_secs(20), |k| {
            k.contains(&fake_key(10 + round, "bob"))
        });
    }
    // Time for retries, if any were made.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        useradd_calls_for(&sb, "adm"),
        1,
        "{:?}\n{}",
        calls(&sb),
        sb.log_lines().join("\n")
    );
    assert_eq!(count_log(&sb, "Could not create user adm"), 1);

    // adm's own metadata changes: one more try.
    set_keys(
        &sb,
        &format!("adm:{}\nbob:{}", fake_key(2, "adm"), fake_key(13, "bob")),
    );
    assert!(
        sb.wait_until(Duration::from_secs(10), || useradd_calls_for(&sb, "adm")
            == 2)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(useradd_calls_for(&sb, "adm"), 2);
    assert_eq!(count_log(&sb, "Could not create user adm"), 2);
    assert!(sb.user("adm").is_none());
    assert_running(&sb, &mut daemon);
}

#[test]
fn a_key_is_gone_at_its_expire_on_not_a_second_later() {
    let sb = sandbox_or_skip!(recording_builder());
    let mut daemon = spawn_daemon(&sb);
    let permanent = fake_key(1, "perm");
    set_keys(&sb, &format!("alice:{}", permanent));
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| {
        k.contains(&permanent)
    });
    let expire_on = gce_guest::timing::unix_now() + 3;
    let body = fake_key(2, "x");
    let body = body.rsplit_once(' ').unwrap().0;
    let expiring = format!(
        r#"{} google-ssh {{"userName":"alice@x","expireOn":"{}"}}"#,
        body,
        rfc3339(expire_on)
    );
    set_keys(&sb, &format!("alice:{}\nalice:{}", permanent, expiring));
    wait_keys(&sb, "alice", Duration::from_secs(2), |k| k.contains(body));
    // Past expireOn the key must not be accepted: half a second after it (the old wake-up
    // came a whole second late) the file no longer holds it.
    let at = std::time::UNIX_EPOCH + Duration::from_millis(expire_on as u64 * 1000 + 500);
    let wait = at
        .duration_since(std::time::SystemTime::now())
        .expect("set up before expireOn");
    std::thread::sleep(wait);
    let content = keys_of(&sb, "alice");
    assert!(
        !content.contains(body),
        "the key is still there 0.5 s after its expireOn:\n{}",
        content
    );
    assert_eq!(google_keys(&content), [permanent]);
    assert_running(&sb, &mut daemon);
}

#[test]
fn no_key_material_reaches_the_log_and_a_pasted_private_key_is_dropped() {
    let sb = sandbox_or_skip!(recording_builder());
    let mut daemon = spawn_daemon(&sb);
    // A real private key pasted into ssh-keys by mistake, first line after `alice:`.
    let public = key_pair(&sb, "pasted");
    let private = sb.read_string("/run/sshtest/pasted").unwrap();
    let mut value = String::from("alice:");
    value.push_str(&private);
    // A public key without `user:` whose comment has a colon, an expired key, and bob.
    let stray = fake_key(41, "me:laptop");
    let expired = format!(
        r#"{} google-ssh {{"userName":"b@x","expireOn":"2001-01-01T00:00:00Z"}}"#,
        fake_key(42, "x").rsplit_once(' ').unwrap().0
    );
    let bob = fake_key(43, "bob");
    value.push_str(&format!("{}\nbob:{}\nbob:{}\n", stray, expired, bob));
    set_keys(&sb, &value);
    wait_keys(&sb, "bob", Duration::from_secs(20), |k| k.contains(&bob));
    std::thread::sleep(Duration::from_millis(300));

    let log = sb.log_lines().join("\n");
    let mut secrets: Vec<&str> = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    secrets.push(public.split(' ').nth(1).unwrap());
    secrets.push(stray.split(' ').nth(1).unwrap());
    secrets.push(expired.split(' ').nth(1).unwrap());
    for secret in secrets {
        // Any 16 characters of key material would be too many.
        for window in secret.as_bytes().windows(16).step_by(8) {
            let piece = std::str::from_utf8(window).unwrap();
            assert!(
                !log.contains(piece),
                "key material {:?} in the log:\n{}",
                piece,
                log
            );
        }
    }
    assert_eq!(
        count_log(&sb, "look like a private key (not shown)"),
        1,
        "{}",
        log
    );
    assert_eq!(count_log(&sb, "a key without a user name"), 1, "{}", log);
    assert!(
        !sb.exists("/home/alice"),
        "nothing is made from a private key"
    );
    assert_running(&sb, &mut daemon);
}

#[test]
fn a_second_managed_name_for_one_home_is_refused_once() {
    let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd.push_str("toor:x:0:0:root alias:/root:/bin/bash\n");
    let sb = sandbox_or_skip!(recording_builder().file("/etc/passwd", passwd, 0o644));
    let mut daemon = spawn_daemon(&sb);
    let root_key = fake_key(51, "root");
    for round in 0..3u64 {
        let toor_key = fake_key(60 + round, "toor");
        set_keys(&sb, &format!("root:{}\ntoor:{}", root_key, toor_key));
        // Give the daemon time to (wrongly) write toor's key.
        std::thread::sleep(Duration::from_millis(400));
        let keys = google_keys(&keys_of(&sb, "root"));
        assert_eq!(
            keys,
            std::slice::from_ref(&root_key),
            "round {}: /root holds root's key only\n{}",
            round,
            sb.log_lines().join("\n")
        );
    }
    assert_eq!(
        count_log(
            &sb,
            "Not managing user toor: its home is also that of user root"
        ),
        1,
        "{}",
        sb.log_lines().join("\n")
    );
    assert_eq!(ledger(&sb), ["root"]);
    assert_running(&sb, &mut daemon);
}
