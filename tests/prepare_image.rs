//! `google_prepare_image` in the sandbox: a booted instance with a metadata user is
//! prepared for capture (`--dry-run` changes nothing; the real run deprovisions the user,
//! removes host keys, the instance id, the ledgers and the done marker, and nothing else),
//! then a "clone" boots with a new id: fresh host keys and none of the old user's Google
//! keys. With `--remove-users` the accounts the daemon created are deleted.
//!
//! Run: `cargo test --features emulator,test-hooks --test integration prepare_image::` (as
//! root).

#![cfg(feature = "emulator")]

use std::time::Duration;

use crate::accounts_support::*;
use crate::common::Sandbox;

/// A booted instance: alice made by the accounts daemon from metadata, setup run once.
fn booted(sb: &Sandbox, alice_key: &str) {
    let mut daemon = spawn_daemon(sb);
    wait_keys(sb, "alice", Duration::from_secs(20), |k| {
        k.contains(alice_key)
    });
    wait_ledger(sb, &["alice"], Duration::from_secs(5));
    assert_running(sb, &mut daemon);
    drop(daemon);
    let out = sb.run(["google_instance_setup"]);
    assert!(out.success(), "{:?}", out);
    assert!(sb.exists("/etc/ssh/ssh_host_ed25519_key"));
    assert!(sb.exists("/run/google-instance-setup.done"));
}

fn host_keys(sb: &Sandbox) -> String {
    sb.sh("cat /etc/ssh/ssh_host_*_key 2>/dev/null")
        .stdout_text()
}

fn instance_id_line(sb: &Sandbox) -> bool {
    sb.read_string("/etc/default/instance_configs.cfg")
        .unwrap_or_default()
        .contains("instance_id")
}

#[test]
fn a_prepared_image_boots_as_a_first_boot() {
    let alice = fake_key(1, "alice@laptop");
    let sb =
        sandbox_or_skip!(Sandbox::builder().metadata(&keys_document(&format!("alice:{}", alice))));
    sb.sh("rm -f /etc/ssh/ssh_host_*").assert_success();
    booted(&sb, &alice);
    let old_keys = host_keys(&sb);
    assert!(instance_id_line(&sb));

    let before = Checkpoint::take(&sb);
    let dry = sb.run(["google_prepare_image", "--dry-run"]);
    assert!(dry.success(), "{:?}", dry);
    let plan = dry.stdout_text();
    for expected in [
        "would deprovision alice (remove its Google keys and sudo)",
        "would remove [Instance] instance_id from the configuration",
        "would remove /etc/ssh/ssh_host_ed25519_key\n",
        "would remove /etc/ssh/ssh_host_ed25519_key.pub",
        "would remove /var/lib/google/google_users",
        "would remove /run/google-instance-setup.done",
    ] {
        assert!(
            plan.contains(expected),
            "{:?} missing from\n{}",
            expected,
            plan
        );
    }
    assert!(
        Checkpoint::take(&sb).changed_since(&before).is_empty(),
        "--dry-run changed nothing"
    );

    let out = sb.run(["google_prepare_image"]);
    assert!(out.success(), "{:?}", out);
    let report = out.stdout_text();
    assert!(report.contains("done: deprovision alice"), "{}", report);
    assert!(
        report.contains("done: remove /etc/ssh/ssh_host_rsa_key\n"),
        "{}",
        report
    );
    assert!(
        google_keys(&keys_of(&sb, "alice")).is_empty(),
        "{}",
        keys_of(&sb, "alice")
    );
    assert!(
        sb.user("alice").is_some(),
        "without --remove-users the account stays"
    );
    assert!(
        !sb.sh("ls /etc/ssh/ssh_host_*").success(),
        "no host key is left"
    );
    assert!(!instance_id_line(&sb));
    assert!(!sb.exists(LEDGER));
    assert!(!sb.exists(CREATED));
    assert!(!sb.exists("/run/google-instance-setup.done"));
    assert_changed_only(
        &sb,
        &before,
        &[
            "/etc/ssh/",
            "/etc/dropbear/",
            "/etc/default/instance_configs.cfg",
            "/home/alice/.ssh/",
            "/var/lib/google/",
            "/run/google-instance-setup.done",
            "/etc/group",
            "/etc/gshadow",
            "/etc/group-",
            "/etc/gshadow-",
            "/var/lock/",
        ],
    );
    let again = sb.run(["google_prepare_image"]);
    assert!(again.stdout_text().contains("nothing to do"), "{:?}", again);

    // The clone: a new id, metadata without alice.
    sb.emulator().set_metadata(
        r#"{"instance": {"id": "98765", "hostname": "clone.c.p.internal", "attributes": {}},
            "project": {"numericProjectId": 1, "attributes": {}}}"#,
    );
    let out = sb.run(["google_instance_setup"]);
    assert!(out.success(), "{:?}", out);
    let new_keys = host_keys(&sb);
    assert!(!new_keys.is_empty());
    assert_ne!(new_keys, old_keys, "fresh host keys");
    for key in [
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/dropbear/dropbear_ed25519_host_key",
    ] {
        assert!(sb.exists(key), "{} was made again", key);
        assert!(
            !old_keys.contains(&sb.read_string(key).unwrap()),
            "{} is new",
            key
        );
    }
    assert!(sb
        .log_lines()
        .iter()
        .any(|l| l.ends_with("Generating SSH host keys for instance 98765.")));
    assert!(google_keys(&keys_of(&sb, "alice")).is_empty());
}

#[test]
fn remove_users_deletes_the_accounts_the_daemon_created() {
    let alice = fake_key(2, "alice@laptop");
    let sb =
        sandbox_or_skip!(Sandbox::builder().metadata(&keys_document(&format!("alice:{}", alice))));
    booted(&sb, &alice);
    let out = sb.run(["google_prepare_image", "--remove-users"]);
    assert!(out.success(), "{:?}", out);
    assert!(
        out.stdout_text()
            .contains("done: deprovision alice and delete the account"),
        "{:?}",
        out
    );
    assert!(sb.user("alice").is_none(), "alice was deleted");
    assert!(!sb.exists(CREATED));
}
