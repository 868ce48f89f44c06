//! The accounts daemon on real files and real shadow-utils commands in the sandbox:
//!
//! - SIGKILL at several moments of a large update (200 users changing keys, users added and
//!   removed) and a restart: every `authorized_keys` is exactly the old or the new content,
//!   never partial, and once the restarted daemon settles the ledger lists the wanted users;
//! - incremental updates: with many users managed, one user's key change replaces only that
//!   user's file and runs no command for anyone else; a change elsewhere writes nothing;
//! - deprovisioning: the whole file of an account the daemon created goes, other users'
//!   own lines and root's own keys stay, `google-sudoers` membership
//!   goes, and `userdel` runs only with `deprovision_remove = true` and only for an account
//!   the daemon created (never a pre-existing one, uid 0 or a uid below `UID_MIN`);
//! - `/etc/sudoers.d/google_sudoers`: 0440, accepted by `visudo -c -f`, and an
//!   administrator's own file is never replaced;
//! - `enable-oslogin`: metadata users are deprovisioned and come back when it is turned off;
//!   a missing `google_oslogin_control` is logged once, an installed one is run.
//!
//! Commands are recorded by wrappers first in `PATH` (see `accounts_support`).
//!
//! Run: `cargo test --features emulator,test-hooks --test integration accounts::` (as
//! root). The other accounts tests: `accounts_login` (real SSH logins, busybox),
//! `accounts_hostile`, `accounts_outage`, `accounts_long` (`make test-long`),
//! `bench_accounts` (`make bench`).

#![cfg(feature = "emulator")]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::accounts_support::*;
use crate::common::{self, Sandbox};

fn names(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("u{:03}", i)).collect()
}

// ---------------------------------------------------------------------------------------
// SIGKILL during a large update.

/// The wanted state of one round of the kill test: user -> key.
fn round_state(round: u32) -> BTreeMap<String, String> {
    let users = if round % 2 == 1 {
        names(10..210)
    } else {
        names(0..200)
    };
    users
        .into_iter()
        .map(|u| {
            let n: u64 = u[1..].parse().unwrap();
            let key = fake_key(n * 100 + u64::from(round), &format!("r{}", round));
            (u, key)
        })
        .collect()
}

fn round_value(state: &BTreeMap<String, String>) -> String {
    state
        .iter()
        .map(|(u, k)| format!("{}:{}", u, k))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a user's file holds once `round` is applied (after rounds 0..round): our key, or
/// nothing left of ours (empty file) for a seeded user who had one, or no file at all (never
/// had one, or an account the daemon created, u200..u209, whose whole file goes).
fn settled(user: &str, round: u32) -> Option<String> {
    if let Some(key) = round_state(round).get(user) {
        return Some(only_google(std::slice::from_ref(key)));
    }
    let ever = (0..round).any(|r| round_state(r).contains_key(user));
    let created = user >= "u200";
    (ever && !created).then(String::new)
}

/// Every user's file as the host sees it in the overlay's upper directory.
fn all_files(sb: &Sandbox) -> BTreeMap<String, Option<String>> {
    names(0..210)
        .into_iter()
        .map(|u| {
            let path = upper_path(sb, &keys_path(&u));
            let content = std::fs::read_to_string(path).ok();
            (u, content)
        })
        .collect()
}

fn wait_settled(sb: &Sandbox, round: u32, timeout: Duration) -> Duration {
    let start = Instant::now();
    let want: BTreeMap<String, Option<String>> = names(0..210)
        .into_iter()
        .map(|u| {
            let s = settled(&u, round);
            (u, s)
        })
        .collect();
    let names_wanted: Vec<String> = round_state(round).into_keys().collect();
    let ok = sb.wait_until(timeout, || {
        all_files(sb) == want && ledger(sb) == names_wanted
    });
    if !ok {
        let files = all_files(sb);
        let wrong: Vec<&String> = want.keys().filter(|u| files[*u] != want[*u]).collect();
        panic!(
            "round {} did not settle within {:?}: wrong files {:?}, ledger {:?}\n{}",
            round,
            timeout,
            wrong,
            ledger(sb),
            sb.log_lines().join("\n")
        );
    }
    start.elapsed()
}

#[test]
fn sigkill_during_a_large_update_leaves_each_file_old_or_new() {
    let builder = Sandbox::builder().metadata(&keys_document(&round_value(&round_state(0))));
    let seeded = names(0..200);
    let sb = sandbox_or_skip!(with_accounts(
        with_recorders(builder),
        &seeded,
        3000,
        &seeded
    ));
    // Round 0 from a cold start (200 files written) tells how long an update takes.
    let mut daemon = spawn_daemon(&sb);
    let full = wait_settled(&sb, 0, Duration::from_secs(60));
    daemon.signal(libc::SIGTERM);
    daemon
        .wait_timeout(Duration::from_secs(5))
        .expect("SIGTERM ends the daemon");
    eprintln!("a full update took {:?}", full);

    // Each later round: 10 users leave, 10 come (odd rounds create accounts), the other
    // 190 change keys; the daemon is killed part way, then restarted.
    let mut mixed_rounds = 0;
    for (round, fraction) in (1u32..).zip([0.15, 0.4, 0.65, 0.9]) {
        let delay = full.mul_f64(fraction);
        sb.emulator()
            .set_metadata(&keys_document(&round_value(&round_state(round))));
        let mut daemon = spawn_daemon(&sb);
        std::thread::sleep(delay);
        daemon.signal(libc::SIGKILL);
        daemon
            .wait_timeout(Duration::from_secs(5))
            .expect("SIGKILL ends the daemon");
        // Each file is whole: what the previous round left or what this round wants.
        let (mut old, mut new) = (0, 0);
        for (user, content) in all_files(&sb) {
            let before = settled(&user, round - 1);
            let after = settled(&user, round);
            assert!(
                content == before || content == after,
                "round {} killed after {:?}: {}'s file is neither old nor new: {:?}\nold {:?}\nnew {:?}",
                round,
                delay,
                user,
                content,
                before,
                after
            );
            if before != after {
                if content == before {
                    old += 1;
                } else {
                    new += 1;
                }
            }
        }
        let leftovers = sb
            .sh("find /home -name '.authorized_keys.*.tmp' | wc -l")
            .stdout_text();
        eprintln!(
            "round {}: killed after {:?}: {} files old, {} new, {} temp files left",
            round,
            delay,
            old,
            new,
            leftovers.trim()
        );
        if old > 0 && new > 0 {
            mixed_rounds += 1;
        }
        // /etc/passwd and /etc/group still parse (sb.users() panics on a broken line), and
        // every seeded account is still there.
        let users: BTreeSet<String> = sb.users().into_iter().map(|u| u.name).collect();
        let missing: Vec<&String> = seeded.iter().filter(|u| !users.contains(*u)).collect();
        assert!(
            missing.is_empty(),
            "round {}: accounts lost: {:?}",
            round,
            missing
        );
        let _ = sb.groups();

        // A restart settles on this round's state.
        let mut daemon = spawn_daemon(&sb);
        wait_settled(&sb, round, Duration::from_secs(60));
        assert_running(&sb, &mut daemon);
        daemon.signal(libc::SIGTERM);
        daemon
            .wait_timeout(Duration::from_secs(5))
            .expect("SIGTERM ends the daemon");
        // Round 1 made u200..u209 and nothing deletes accounts: the created ledger names
        // exactly those.
        let created = sb.read_string(CREATED).unwrap_or_default();
        assert_eq!(
            created.lines().map(str::to_string).collect::<BTreeSet<_>>(),
            names(200..210).into_iter().collect::<BTreeSet<_>>(),
            "the created ledger after round {}",
            round
        );
    }
    assert!(
        mixed_rounds >= 1,
        "no kill landed in the middle of an update; the test proved nothing"
    );
}

// ---------------------------------------------------------------------------------------
// Key sources, options, expiry formats and nologin users, on real files.

#[test]
fn key_sources_options_expiry_formats_and_nologin_users_on_real_files() {
    let (ka, kp, kl) = (fake_key(1, "a"), fake_key(2, "p"), fake_key(3, "legacy"));
    let kc = format!(
        r#"from="127.0.0.1",command="/bin/true" {}"#,
        fake_key(4, "c")
    );
    let google = |seed: u64, expire: &str| {
        let key = fake_key(seed, "ignored");
        let blob = key.split(' ').nth(1).unwrap().to_string();
        format!(
            r#"ssh-ed25519 {} google-ssh {{"userName":"u@example.com","expireOn":"{}"}}"#,
            blob, expire
        )
    };
    // Each expireOn format once in the future and once in the past.
    let erin = google(5, "2099-01-01T00:00:00+0000");
    let frank = google(6, "2099-01-01T00:00:00Z");
    let dave = google(7, "2001-01-01T00:00:00+0000");
    let gina = google(8, "2001-01-01T00:00:00Z");
    let instance_keys = [
        format!("alice:{}", ka),
        format!("carol:{}", kc),
        format!("erin:{}", erin),
        format!("frank:{}", frank),
        format!("dave:{}", dave),
        format!("gina:{}", gina),
        format!("svc:{}", ka),
    ]
    .join("\n");
    let project_keys = format!("alice:{}", kp);
    let mut passwd = std::fs::read_to_string("/etc/passwd").expect("host /etc/passwd");
    passwd.push_str("svc:x:3100:100::/home/svc:/usr/sbin/nologin\n");
    let sb = sandbox_or_skip!(with_recorders(Sandbox::builder().metadata(&document(
        &[("ssh-keys", &instance_keys)],
        &[("ssh-keys", &project_keys)],
    )))
    .file("/etc/passwd", passwd, 0o644)
    .file("/home/svc/.keep", "", 0o644));
    let _daemon = spawn_daemon(&sb);

    // Instance and project keys together; options kept as they are; each format read.
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| {
        k == only_google(&[ka.clone(), kp.clone()])
    });
    wait_keys(&sb, "frank", Duration::from_secs(10), |k| {
        k == only_google(std::slice::from_ref(&frank))
    });
    assert_eq!(
        keys_of(&sb, "carol"),
        only_google(std::slice::from_ref(&kc))
    );
    assert_eq!(
        keys_of(&sb, "erin"),
        only_google(std::slice::from_ref(&erin))
    );
    // Expired keys make no account; a nologin user gets no keys.
    for gone in ["dave", "gina"] {
        assert!(sb.user(gone).is_none(), "{} was created", gone);
        assert!(!sb.exists(format!("/home/{}", gone)));
    }
    assert!(
        !sb.exists("/home/svc/.ssh"),
        "keys written for a nologin user"
    );
    let users = users_in_calls(&sb);
    assert!(
        !users.contains("dave") && !users.contains("gina"),
        "{:?}",
        users
    );
    // The existing nologin account is not created again (it joins google-sudoers, as 2.8).
    assert!(
        !calls(&sb)
            .iter()
            .any(|c| c[0] == "useradd" && c.contains(&"svc".to_string())),
        "{:?}",
        calls(&sb)
    );

    // block-project-ssh-keys drops the project's keys.
    sb.emulator().patch(&instance_patch(&[
        ("ssh-keys", &instance_keys),
        ("block-project-ssh-keys", "true"),
    ]));
    wait_keys(&sb, "alice", Duration::from_secs(10), |k| {
        k == only_google(std::slice::from_ref(&ka))
    });

    // Instance sshKeys (the legacy name) come first, and still no project keys.
    sb.emulator().patch(&instance_patch(&[
        ("block-project-ssh-keys", "false"),
        ("sshKeys", &format!("alice:{}", kl)),
    ]));
    wait_keys(&sb, "alice", Duration::from_secs(10), |k| {
        k == only_google(&[kl.clone(), ka.clone()])
    });
    assert_eq!(
        keys_of(&sb, "carol"),
        only_google(std::slice::from_ref(&kc))
    );
}

// ---------------------------------------------------------------------------------------
// Incremental updates.

/// (inode, mtime in ns) of each user's file, as the host sees the upper directory.
fn file_stats(sb: &Sandbox, users: &[String]) -> BTreeMap<String, (u64, i64)> {
    users
        .iter()
        .map(|u| {
            let m = std::fs::metadata(upper_path(sb, &keys_path(u))).expect("file exists");
            (
                u.clone(),
                (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()),
            )
        })
        .collect()
}

#[test]
fn one_users_key_change_writes_only_that_file_and_runs_no_other_command() {
    let users = names(0..60);
    // u017's key is the one that changes.
    let key_of = |i: usize, changed: u64| -> String {
        let seed = if i == 17 {
            17 + changed * 1000
        } else {
            i as u64
        };
        fake_key(seed, &users[i])
    };
    let keys = |changed: u64| -> String {
        (0..users.len())
            .map(|i| format!("{}:{}", users[i], key_of(i, changed)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let builder = Sandbox::builder().metadata(&keys_document(&keys(0)));
    let sb = sandbox_or_skip!(with_accounts(with_recorders(builder), &users, 3000, &users));
    let mut daemon = spawn_daemon(&sb);
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    wait_ledger(&sb, &names, Duration::from_secs(30));
    // The ledger is written ahead of the keys: wait for the files themselves.
    let all_written = sb.wait_until(Duration::from_secs(30), || {
        users.iter().enumerate().all(|(i, u)| {
            std::fs::read_to_string(upper_path(&sb, &keys_path(u))).ok()
                == Some(only_google(&[key_of(i, 0)]))
        })
    });
    assert!(all_written, "{}", sb.log_lines().join("\n"));
    // An administrator takes u017 and u005 out of google-sudoers.
    sb.sh("gpasswd -d u017 google-sudoers && gpasswd -d u005 google-sudoers")
        .assert_success();
    let before = file_stats(&sb, &users);
    let checkpoint = Checkpoint::take(&sb);
    clear_calls(&sb);

    set_keys(&sb, &keys(1));
    let new_key = key_of(17, 1);
    wait_keys(&sb, "u017", Duration::from_secs(10), |k| {
        k.contains(&new_key)
    });
    std::thread::sleep(Duration::from_millis(300));
    let after = file_stats(&sb, &users);
    let replaced: Vec<&String> = users.iter().filter(|u| before[*u] != after[*u]).collect();
    assert_eq!(replaced, ["u017"], "only u017's file is written");
    assert_eq!(google_keys(&keys_of(&sb, "u017")), [new_key]);
    // The changed user gets google-sudoers back; nobody else is touched (u005 stays out).
    assert_eq!(
        calls(&sb),
        [["gpasswd", "-a", "u017", SUDOERS_GROUP]],
        "one command, for u017 only"
    );
    assert_changed_only(
        &sb,
        &checkpoint,
        &[
            "/home/u017/.ssh/authorized_keys",
            "/etc/group",
            "/etc/group-",
            "/etc/gshadow",
            "/etc/gshadow-",
        ],
    );

    // A metadata change outside the accounts' attributes writes nothing and runs nothing.
    let checkpoint = Checkpoint::take(&sb);
    clear_calls(&sb);
    sb.emulator()
        .patch(&instance_patch(&[("startup-script", "#!/bin/sh\ntrue")]));
    set_keys(&sb, &keys(1));
    std::thread::sleep(Duration::from_millis(500));
    assert_changed_only(&sb, &checkpoint, &[]);
    assert!(calls(&sb).is_empty(), "{:?}", calls(&sb));
    assert_eq!(file_stats(&sb, &users), after);
    assert_running(&sb, &mut daemon);
}

// ---------------------------------------------------------------------------------------
// Deprovisioning.

const ADMIN_ROOT_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPKkHbgJqZMI6HcgENtI7INWKdoHxd07XKGDtf8SC16Q admin@console";
const BOB_OWN_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKDvOHh4lZwsnHsjRWoSB5W4rTljD1PEJrNsjtwLxwcE bob@laptop";
const ALICE_OWN_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5yCiSzI0G4imYCDbyAsTekLOGsedIuRBS4RVrgQdN9 alice@home";

/// A sandbox with a pre-existing account `bob` (uid 1500) with his own key, a pre-existing
/// `sys1` (uid 500, below UID_MIN), root with an administrator's key, and metadata keys for
/// alice (created by the daemon), bob, root and sys1. The daemon is running and done.
fn deprovision_sandbox(config: Option<&str>) -> Option<(Sandbox, common::Daemon)> {
    let keys = ["alice", "bob", "root", "sys1"]
        .iter()
        .enumerate()
        .map(|(i, u)| format!("{}:{}", u, fake_key(i as u64, &format!("{}-google", u))))
        .collect::<Vec<_>>()
        .join("\n");
    let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd.push_str("bob:x:1500:100::/home/bob:/bin/bash\nsys1:x:500:100::/home/sys1:/bin/bash\n");
    let mut shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    shadow.push_str("bob:*:19000:0:99999:7:::\nsys1:*:19000:0:99999:7:::\n");
    let mut builder = with_recorders(Sandbox::builder().metadata(&keys_document(&keys)))
        .file("/etc/passwd", passwd, 0o644)
        .file("/etc/shadow", shadow, 0o640)
        .file(
            "/home/bob/.ssh/authorized_keys",
            format!("{}\n", BOB_OWN_KEY),
            0o600,
        )
        .file(
            "/root/.ssh/authorized_keys",
            format!("{}\n", ADMIN_ROOT_KEY),
            0o600,
        )
        // A created-accounts ledger that (wrongly) claims root and sys1: the uid rules must
        // still protect them.
        .file(CREATED, "root\nsys1\n", 0o600);
    if let Some(config) = config {
        builder = builder.file("/etc/default/instance_configs.cfg", config, 0o644);
    }
    let sb = builder.build_or_skip()?;
    sb.sh("chown -R bob:users /home/bob && chmod 700 /home/bob/.ssh")
        .assert_success();
    let daemon = spawn_daemon(&sb);
    wait_ledger(
        &sb,
        &["alice", "bob", "root", "sys1"],
        Duration::from_secs(20),
    );
    for user in ["alice", "bob", "root", "sys1"] {
        // The ledger is written ahead: wait for the keys themselves.
        wait_keys(&sb, user, Duration::from_secs(20), |k| {
            google_keys(k).len() == 1
        });
    }
    // Sudo only for people: not root (no group change), not sys1 (uid below UID_MIN).
    let sudoers = |sb: &Sandbox| sb.group(SUDOERS_GROUP).unwrap().members;
    assert!(sb.wait_until(Duration::from_secs(10), || sudoers(&sb) == ["alice", "bob"]));
    // Alice adds a key of her own next to ours.
    sb.sh(&format!(
        "printf '%s\\n' '{}' >> /home/alice/.ssh/authorized_keys",
        ALICE_OWN_KEY
    ))
    .assert_success();
    Some((sb, daemon))
}

fn remove_everyone(sb: &Sandbox) {
    clear_calls(sb);
    set_keys(sb, "");
    wait_ledger(sb, &[], Duration::from_secs(10));
}

#[test]
fn deprovisioning_keeps_own_lines_and_accounts_and_leaves_google_sudoers() {
    let Some((sb, mut daemon)) = deprovision_sandbox(None) else {
        return;
    };
    remove_everyone(&sb);
    // Alice's account is one the daemon created: her whole file goes, her own key too.
    assert!(!sb.exists(keys_path("alice")), "{}", keys_of(&sb, "alice"));
    assert_eq!(keys_of(&sb, "bob"), format!("{}\n", BOB_OWN_KEY));
    assert_eq!(
        keys_of(&sb, "root"),
        format!("{}\n", ADMIN_ROOT_KEY),
        "root's own key stays"
    );
    assert_eq!(keys_of(&sb, "sys1"), "");
    for user in ["alice", "bob", "root", "sys1"] {
        assert!(sb.user(user).is_some(), "{} keeps the account", user);
        assert!(!sb
            .group(SUDOERS_GROUP)
            .unwrap()
            .members
            .contains(&user.to_string()));
        assert_eq!(
            count_log(
                &sb,
                &format!("google-accounts: INFO Removing user {}.", user)
            ),
            1
        );
    }
    let mut calls = calls(&sb);
    calls.sort();
    assert_eq!(
        calls,
        ["alice", "bob"].map(|u| vec![
            "gpasswd".to_string(),
            "-d".into(),
            u.into(),
            SUDOERS_GROUP.into()
        ])
    );
    assert_running(&sb, &mut daemon);
}

#[test]
fn deprovision_remove_deletes_only_accounts_the_daemon_created() {
    let config = "[Accounts]\ndeprovision_remove = true\n";
    let Some((sb, mut daemon)) = deprovision_sandbox(Some(config)) else {
        return;
    };
    let created = sb.read_string(CREATED).unwrap();
    assert_eq!(created, "alice\nroot\nsys1\n");
    remove_everyone(&sb);
    let userdels: Vec<Vec<String>> = calls(&sb)
        .into_iter()
        .filter(|c| c[0] == "userdel")
        .collect();
    assert_eq!(userdels, [["userdel", "-r", "alice"]]);
    assert!(
        sb.user("alice").is_none(),
        "alice, made by the daemon, is deleted"
    );
    assert!(!sb.exists("/home/alice"), "userdel -r removed her home");
    assert!(count_log(&sb, "Removed user account alice.") == 1);
    // Pre-existing, uid 0 and uid < UID_MIN accounts stay whatever the ledger says.
    for user in ["bob", "root", "sys1"] {
        assert!(sb.user(user).is_some(), "{} must not be deleted", user);
    }
    assert_eq!(keys_of(&sb, "bob"), format!("{}\n", BOB_OWN_KEY));
    assert_eq!(keys_of(&sb, "root"), format!("{}\n", ADMIN_ROOT_KEY));
    assert_eq!(sb.read_string(CREATED).unwrap(), "root\nsys1\n");
    assert_running(&sb, &mut daemon);
}

// ---------------------------------------------------------------------------------------
// The sudoers file.

#[test]
fn the_sudoers_file_is_0440_and_accepted_by_visudo() {
    let key = fake_key(1, "alice");
    let sb =
        sandbox_or_skip!(Sandbox::builder().metadata(&keys_document(&format!("alice:{}", key))));
    assert!(!sb.exists("/etc/sudoers.d/google_sudoers"));
    let _daemon = spawn_daemon(&sb);
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| k.contains(&key));
    let st = sb.sh("stat -c '%a %U %G' /etc/sudoers.d/google_sudoers");
    assert_eq!(st.stdout_text().trim(), "440 root root");
    assert_eq!(
        sb.read_string("/etc/sudoers.d/google_sudoers").unwrap(),
        "%google-sudoers ALL=(ALL:ALL) NOPASSWD:ALL\n"
    );
    sb.program(["visudo", "-c", "-f", "/etc/sudoers.d/google_sudoers"])
        .output()
        .assert_success();
    sb.program(["visudo", "-c"]).output().assert_success();
    // sudo itself grants alice root without a password.
    let out = sb.program(["sudo", "-n", "-l", "-U", "alice"]).output();
    assert!(
        out.stdout_text().contains("(ALL : ALL) NOPASSWD: ALL"),
        "{:?}",
        out
    );
}

#[test]
fn an_administrators_sudoers_file_is_left_alone() {
    let key = fake_key(1, "alice");
    let own = "# site policy\n%google-sudoers ALL=(ALL) ALL\n";
    let sb = sandbox_or_skip!(Sandbox::builder()
        .metadata(&keys_document(&format!("alice:{}", key)))
        .file("/etc/sudoers.d/google_sudoers", own, 0o440));
    let _daemon = spawn_daemon(&sb);
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| k.contains(&key));
    assert_eq!(
        sb.read_string("/etc/sudoers.d/google_sudoers").unwrap(),
        own
    );
}

// ---------------------------------------------------------------------------------------
// OS Login.

const OSLOGIN_MISSING: &str =
    "OS Login is enabled in metadata but not installed; metadata SSH keys are not managed.";

#[test]
fn oslogin_deprovisions_metadata_users_and_a_missing_control_is_logged_once() {
    let (a, b, c) = (
        fake_key(1, "alice"),
        fake_key(2, "bob"),
        fake_key(3, "carol"),
    );
    let keys = format!("alice:{}\nbob:{}", a, b);
    let sb = sandbox_or_skip!(with_recorders(
        Sandbox::builder().metadata(&keys_document(&keys))
    ));
    let mut daemon = spawn_daemon(&sb);
    wait_ledger(&sb, &["alice", "bob"], Duration::from_secs(20));

    sb.emulator()
        .patch(&instance_patch(&[("enable-oslogin", "TRUE")]));
    wait_ledger(&sb, &[], Duration::from_secs(10));
    for user in ["alice", "bob"] {
        assert!(
            google_keys(&keys_of(&sb, user)).is_empty(),
            "{}'s key is removed",
            user
        );
        assert!(!sb
            .group(SUDOERS_GROUP)
            .unwrap()
            .members
            .contains(&user.to_string()));
    }
    // More metadata changes while OS Login is on: no user comes back, nothing more logged.
    clear_calls(&sb);
    set_keys(&sb, &format!("{}\ncarol:{}", keys, c));
    std::thread::sleep(Duration::from_millis(400));
    set_keys(&sb, &format!("carol:{}", c));
    std::thread::sleep(Duration::from_millis(400));
    assert!(calls(&sb).is_empty(), "{:?}", calls(&sb));
    assert!(!sb.exists("/home/carol"));
    assert_eq!(
        count_log(&sb, OSLOGIN_MISSING),
        1,
        "{}",
        sb.log_lines().join("\n")
    );

    // Project-level false does not override the instance's true; instance false does.
    sb.emulator()
        .patch(r#"{"project":{"attributes":{"enable-oslogin":"false"}}}"#);
    std::thread::sleep(Duration::from_millis(400));
    assert!(!sb.exists("/home/carol"));
    sb.emulator()
        .patch(&instance_patch(&[("enable-oslogin", "false")]));
    wait_keys(&sb, "carol", Duration::from_secs(10), |k| k.contains(&c));
    wait_ledger(&sb, &["carol"], Duration::from_secs(5));
    assert_eq!(count_log(&sb, OSLOGIN_MISSING), 1);
    assert_running(&sb, &mut daemon);
}

#[test]
fn an_installed_oslogin_control_is_activated_and_deactivated() {
    let a = fake_key(1, "alice");
    // A stand-in with the real one's interface: `status` exits 0 when OS Login is on.
    let control = "#!/bin/sh\necho \"$*\" >> /run/oslogin.calls\ncase \"$1\" in\n\
                   status) [ -e /run/oslogin.on ] ;;\n\
                   activate) : > /run/oslogin.on ;;\n\
                   deactivate) rm -f /run/oslogin.on ;;\nesac\n";
    let sb = sandbox_or_skip!(with_recorders(
        Sandbox::builder().metadata(&keys_document(&format!("alice:{}", a)))
    )
    .file("/run/rec/google_oslogin_control", control, 0o755));
    let mut daemon = spawn_daemon(&sb);
    wait_ledger(&sb, &["alice"], Duration::from_secs(20));
    sb.emulator()
        .patch(&instance_patch(&[("enable-oslogin", "true")]));
    wait_ledger(&sb, &[], Duration::from_secs(10));
    assert!(sb.wait_until(Duration::from_secs(5), || {
        sb.read_string("/run/oslogin.calls")
            .unwrap_or_default()
            .contains("activate")
    }));
    assert!(sb.wait_for_log(
        Duration::from_secs(2),
        "google-accounts: INFO Activating OS Login."
    ));
    sb.emulator()
        .patch(&instance_patch(&[("enable-oslogin", "")]));
    wait_ledger(&sb, &["alice"], Duration::from_secs(10));
    assert!(sb.wait_for_log(
        Duration::from_secs(2),
        "google-accounts: INFO Deactivating OS Login."
    ));
    // At start OS Login was off and not configured: only a status check, no deactivate
    // (which would restart sshd for nothing); then one activate and one deactivate.
    let calls = sb.read_string("/run/oslogin.calls").unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        ["status", "status", "activate", "status", "deactivate"],
        "{}",
        calls
    );
    assert_eq!(count_log(&sb, OSLOGIN_MISSING), 0);
    assert_running(&sb, &mut daemon);
}
