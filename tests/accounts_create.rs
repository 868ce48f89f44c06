//! New accounts cost one command each: with the default templates `useradd -G` joins the
//! configured groups that exist and `google-sudoers` at once (no `usermod`, no `gpasswd`),
//! and the account can sudo; a configured template is still run as written.
//!
//! Run: `cargo test --features emulator,test-hooks --test integration accounts_create::`
//! (as root).

#![cfg(feature = "emulator")]

use std::time::Duration;

use crate::accounts_support::*;
use crate::common::{self, Sandbox};

fn two_new_users(config: Option<&str>) -> Option<(Sandbox, common::Daemon)> {
    let keys = format!("alice:{}\nbob:{}", fake_key(1, "a"), fake_key(2, "b"));
    let mut builder = with_recorders(Sandbox::builder().metadata(&keys_document(&keys)));
    if let Some(config) = config {
        builder = builder.file("/etc/default/instance_configs.cfg", config, 0o644);
    }
    let sb = builder.build_or_skip()?;
    let daemon = spawn_daemon(&sb);
    wait_keys(&sb, "bob", Duration::from_secs(20), |k| {
        k.contains(&fake_key(2, "b"))
    });
    wait_keys(&sb, "alice", Duration::from_secs(5), |k| {
        k.contains(&fake_key(1, "a"))
    });
    Some((sb, daemon))
}

fn groups_of(sb: &Sandbox, user: &str) -> Vec<String> {
    sb.groups()
        .into_iter()
        .filter(|g| g.members.iter().any(|m| m == user))
        .map(|g| g.name)
        .collect()
}

#[test]
fn a_new_user_costs_one_command_with_the_default_templates() {
    let Some((sb, mut daemon)) = two_new_users(None) else {
        return;
    };
    let calls = calls(&sb);
    let useradd: Vec<&Vec<String>> = calls.iter().filter(|c| c[0] == "useradd").collect();
    assert_eq!(useradd.len(), 2, "{:?}", calls);
    assert_eq!(
        calls.iter().filter(|c| c[0] != "groupadd").count(),
        2,
        "one command per new user: {:?}",
        calls
    );
    for user in ["alice", "bob"] {
        let groups = groups_of(&sb, user);
        assert!(groups.contains(&SUDOERS_GROUP.to_string()), "{:?}", groups);
        assert!(groups.contains(&"adm".to_string()), "{:?}", groups);
        assert_eq!(
            count_log(&sb, &format!("INFO Granted sudo to user {} (", user)),
            1
        );
    }
    let sudo = sb
        .program(["su", "-s", "/bin/sh", "alice", "-c", "sudo -n true"])
        .output();
    assert!(sudo.success(), "{:?}", sudo);
    assert_calls_only_name(&sb, &["alice", "bob"]);
    assert_running(&sb, &mut daemon);
}

#[test]
fn a_configured_template_is_still_run_as_written() {
    let config = "[Accounts]\nusermod_cmd = usermod -a -G {groups} {user}\n";
    let Some((sb, mut daemon)) = two_new_users(Some(config)) else {
        return;
    };
    let calls = calls(&sb);
    for user in ["alice", "bob"] {
        for program in ["useradd", "usermod", "gpasswd"] {
            assert_eq!(
                calls
                    .iter()
                    .filter(|c| c[0] == program && c.iter().any(|a| a == user))
                    .count(),
                1,
                "{} for {}: {:?}",
                program,
                user,
                calls
            );
        }
        assert!(calls.iter().any(|c| c[0] == "usermod" && c[1] == "-a"));
        assert!(groups_of(&sb, user).contains(&SUDOERS_GROUP.to_string()));
    }
    assert_running(&sb, &mut daemon);
}
