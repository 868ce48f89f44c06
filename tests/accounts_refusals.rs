//! What the accounts daemon refuses or records when the system does not go along:
//!
//! - a half-made account (`useradd` wrote the passwd entry, then could not make the home)
//!   is recorded in `google_users_created`, so `deprovision_remove` deletes it later.
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
    let sb = sandbox_or_skip!(
        with_recorders(Sandbox::builder().metadata(&keys_document("")))
            // The home cannot be made: a file is in its place.
            .file("/home/alice", "not a directory\n", 0o644)
            .file(
                "/etc/default/instance_configs.cfg",
                "[Accounts]\ndeprovision_remove = true\n",
                0o644
            )
    );
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
