//! Hostile input to the accounts daemon, in the sandbox with recording wrappers in front of
//! `useradd`/`usermod`/`userdel`/`groupadd`/`gpasswd`:
//!
//! - a managed user who turns `~/.ssh` into a symlink to `/etc`, `authorized_keys` into a
//!   symlink to `/etc/shadow` or a hard link to a root-only file, or hands `~/.ssh` to
//!   another user: the daemon refuses to write (one warning), nothing outside the homes it
//!   legitimately writes changes, and it goes on serving other users;
//! - hostile user names (`-oProxyCommand=x`, `../x`, 33 characters, spaces, non-ASCII,
//!   `$(...)`, `;`, backticks, `.`/`..`, all digits, `root:x:...`): skipped, logged once
//!   across updates, never seen by a command, never in the ledger or `/etc/passwd`;
//! - half a megabyte of `ssh-keys` (thousands of valid keys for many users plus garbage):
//!   every valid key lands, the garbage is logged once per kind, the daemon stays up.
//!
//! Run: `cargo test --features emulator,test-hooks --test integration accounts_hostile::` (as root).

#![cfg(feature = "emulator")]

use std::time::Duration;

use crate::accounts_support::*;
use crate::common::{Daemon, Sandbox};

/// Paths that creating accounts with shadow-utils legitimately touches, besides the homes.
const ACCOUNT_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/passwd-",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/group",
    "/etc/group-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/subuid",
    "/etc/subuid-",
    "/etc/subgid",
    "/etc/subgid-",
    "/etc/sudoers.d/google_sudoers",
    "/var/log/lastlog",
    "/var/log/faillog",
    "/var/lib/google/",
    "/var/lock/google_accounts.lock",
    "/run/lock/google_accounts.lock",
];

/// A sandbox with managed users `mallory` (the attacker) and `zoe` (a bystander processed
/// after her in the same round), both with keys in place, and the daemon running.
struct Attack {
    sb: Sandbox,
    daemon: Daemon,
    round: u64,
}

fn keys_for(round: u64) -> String {
    format!(
        "mallory:{}\nzoe:{}",
        fake_key(1000 + round, "mallory"),
        fake_key(2000 + round, "zoe")
    )
}

impl Attack {
    fn start() -> Option<Attack> {
        let builder = with_recorders(Sandbox::builder().metadata(&keys_document(&keys_for(0))));
        let sb = builder.build_or_skip()?;
        let daemon = spawn_daemon(&sb);
        wait_keys(&sb, "zoe", Duration::from_secs(20), |k| {
            k.contains(&fake_key(2000, "zoe"))
        });
        wait_keys(&sb, "mallory", Duration::from_secs(5), |k| {
            k.contains(&fake_key(1000, "mallory"))
        });
        Some(Attack {
            sb,
            daemon,
            round: 0,
        })
    }

    /// Runs the attack set-up (as root, inside).
    fn prepare(&self, script: &str) {
        self.sb.sh(&format!("set -e\n{}", script)).assert_success();
    }

    /// Changes both users' keys, so the daemon tries to write mallory's file and then
    /// zoe's; waits for zoe's.
    fn change_keys(&mut self) {
        self.round += 1;
        set_keys(&self.sb, &keys_for(self.round));
        let want = fake_key(2000 + self.round, "zoe");
        wait_keys(&self.sb, "zoe", Duration::from_secs(10), |k| {
            k.contains(&want)
        });
    }

    /// Changes the keys three times and checks: only zoe's file changed, no command ran,
    /// `refusal` was logged exactly once, the daemon still runs.
    fn assert_refused(&mut self, refusal: &str) {
        let before = Checkpoint::take(&self.sb);
        clear_calls(&self.sb);
        for _ in 0..3 {
            self.change_keys();
        }
        // Give a wrong write time to land before looking.
        std::thread::sleep(Duration::from_millis(300));
        assert_changed_only(&self.sb, &before, &["/home/zoe/.ssh/authorized_keys"]);
        assert_eq!(
            calls(&self.sb),
            Vec::<Vec<String>>::new(),
            "no command may run"
        );
        assert_eq!(
            count_log(&self.sb, refusal),
            1,
            "the refusal is logged once:\n{}",
            self.sb.log_lines().join("\n")
        );
        assert!(!self.sb.exists("/etc/authorized_keys"));
        assert_running(&self.sb, &mut self.daemon);
        assert_eq!(ledger(&self.sb), ["mallory", "zoe"]);
    }
}

#[test]
fn a_symlinked_ssh_dir_pointing_at_etc_is_refused() {
    let Some(mut t) = Attack::start() else { return };
    t.prepare("rm -rf /home/mallory/.ssh; ln -s /etc /home/mallory/.ssh; chown -h mallory: /home/mallory/.ssh");
    t.assert_refused("Not updating authorized keys for user mallory. ~/.ssh is a symlink.");
}

#[test]
fn an_authorized_keys_symlink_to_etc_shadow_is_refused() {
    let Some(mut t) = Attack::start() else { return };
    let shadow = t.sb.read("/etc/shadow").unwrap();
    t.prepare(
        "ln -sf /etc/shadow /home/mallory/.ssh/authorized_keys; chown -h mallory: /home/mallory/.ssh/authorized_keys",
    );
    t.assert_refused(
        "Not updating authorized keys for user mallory. authorized_keys is a symlink.",
    );
    assert_eq!(t.sb.read("/etc/shadow").unwrap(), shadow);
    let mode = t.sb.sh("stat -c '%a %U' /etc/shadow").stdout_text();
    assert_eq!(mode.trim(), "640 root");
}

#[test]
fn an_authorized_keys_hard_link_to_a_root_only_file_is_refused() {
    let Some(mut t) = Attack::start() else { return };
    // The real attack links /etc/shadow, but /etc and /home are separate overlay mounts in
    // the sandbox (a cross-mount link is EXDEV), so a root-owned 0600 file in /home stands
    // in for it: same owner, same mode, same link count of 2 as seen by the daemon.
    t.prepare(
        "printf 'root-only secret\\n' > /home/secret; chmod 0600 /home/secret; \
         rm -f /home/mallory/.ssh/authorized_keys; ln /home/secret /home/mallory/.ssh/authorized_keys",
    );
    t.assert_refused(
        "Not updating authorized keys for user mallory. The file has other hard links.",
    );
    assert_eq!(
        t.sb.read_string("/home/secret").unwrap(),
        "root-only secret\n"
    );
    let st = t.sb.sh("stat -c '%a %U %h' /home/secret").stdout_text();
    assert_eq!(st.trim(), "600 root 2");
}

#[test]
fn an_ssh_dir_owned_by_another_user_is_refused() {
    let Some(mut t) = Attack::start() else { return };
    let zoe = t.sb.user("zoe").unwrap();
    t.prepare("chown zoe: /home/mallory/.ssh");
    t.assert_refused(&format!(
        "Not updating authorized keys for user mallory. ~/.ssh belongs to uid {}.",
        zoe.uid
    ));
}

/// Names that must never become accounts, with the log text each must produce once.
fn hostile_lines() -> Vec<(String, &'static str)> {
    let k = |i: u64| fake_key(500 + i, "hostile");
    let long = "a".repeat(33);
    vec![
        // The user is `root`; the key part `x:ssh-ed25519 ...` is not a key.
        (
            format!("root:x:{}", k(0)),
            "Skipping an SSH key for user root: malformed authorized_keys options.",
        ),
        (
            format!("-oProxyCommand=x:{}", k(1)),
            "Invalid user account name \"-oProxyCommand=x\"",
        ),
        (
            format!("../x:{}", k(2)),
            "Invalid user account name \"../x\"",
        ),
        (format!("{}:{}", long, k(3)), "(longer than 32 characters)"),
        (format!("a b:{}", k(4)), "Invalid user account name \"a b\""),
        (
            format!("\u{17e}ofia:{}", k(5)),
            "Skipping an SSH key for user ?ofia: non-ASCII character.",
        ),
        (
            format!("$(touch /tmp/pwned):{}", k(6)),
            "Invalid user account name \"$(touch /tmp/pwned)\"",
        ),
        (format!("a;b:{}", k(7)), "Invalid user account name \"a;b\""),
        (
            format!("`touch /tmp/pwned2`:{}", k(8)),
            "Invalid user account name \"`touch /tmp/pwned2`\"",
        ),
        (
            format!("..:{}", k(9)),
            "Invalid user account name \"..\" (is . or ..).",
        ),
        (
            format!("1000:{}", k(10)),
            "Invalid user account name \"1000\" (is all digits).",
        ),
        (
            format!(":{}", k(11)),
            "Invalid user account name \"\" (empty).",
        ),
        (
            format!("tab\tname:{}", k(12)),
            "Invalid user account name \"tab?name\"",
        ),
        (
            format!("-:{}", k(13)),
            "Invalid user account name \"-\" (starts with a hyphen).",
        ),
    ]
}

#[test]
fn hostile_names_are_skipped_logged_once_and_never_reach_a_command() {
    let hostile = hostile_lines();
    let lines: Vec<&str> = hostile.iter().map(|(l, _)| l.as_str()).collect();
    let value = |round: u64| format!("{}\nalice:{}", lines.join("\n"), fake_key(round, "alice"));
    let sb = sandbox_or_skip!(with_recorders(
        Sandbox::builder().metadata(&keys_document(&value(0)))
    ));
    let root_keys = sb.read("/root/.ssh/authorized_keys");
    let mut daemon = spawn_daemon(&sb);
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| {
        k.contains(&fake_key(0, "alice"))
    });
    // More updates with the same hostile lines: each is still logged only once.
    for round in 1..=3 {
        set_keys(&sb, &value(round));
        wait_keys(&sb, "alice", Duration::from_secs(10), |k| {
            k.contains(&fake_key(round, "alice"))
        });
    }
    std::thread::sleep(Duration::from_millis(200));
    for (line, log) in &hostile {
        assert_eq!(
            count_log(&sb, log),
            1,
            "{:?} must be logged once as {:?}:\n{}",
            line,
            log,
            sb.log_lines().join("\n")
        );
    }
    assert_calls_only_name(&sb, &["alice"]);
    assert_eq!(
        users_in_calls(&sb).into_iter().collect::<Vec<_>>(),
        ["alice"]
    );
    assert!(!sb.exists("/tmp/pwned") && !sb.exists("/tmp/pwned2"));
    assert_eq!(ledger(&sb), ["alice"]);
    assert_eq!(
        sb.read("/root/.ssh/authorized_keys"),
        root_keys,
        "root is not managed"
    );
    let host_users = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .count();
    assert_eq!(sb.users().len(), host_users + 1, "only alice was added");
    assert!(!sb.exists("/home/x") && !sb.exists("/x"));
    assert_running(&sb, &mut daemon);

    // Everything that changed is what creating alice legitimately touches.
    let bad: Vec<String> = sb
        .changes()
        .into_iter()
        .map(|c| c.path)
        .filter(|p| {
            !(p == "/home/alice"
                || p.starts_with("/home/alice/")
                || p == CALLS
                || p == "/etc/sudoers.d"
                || p == "/var/lib/google"
                || ACCOUNT_FILES
                    .iter()
                    .any(|a| p == a || (a.ends_with('/') && p.starts_with(a))))
        })
        .collect();
    assert!(bad.is_empty(), "unexpected changes: {:?}", bad);
}

#[test]
fn half_a_megabyte_of_keys_and_garbage() {
    const USERS: u64 = 16;
    const KEYS_EACH: u64 = 125;
    let mut lines = Vec::new();
    for k in 0..KEYS_EACH {
        for u in 0..USERS {
            lines.push(format!(
                "big{:02}:{}",
                u,
                fake_key(u * 1000 + k, &format!("k{}", k))
            ));
        }
        // Garbage between the good lines, of every kind the parser refuses.
        lines.push(format!("no colon at all {}", k));
        lines.push(format!("big00:ssh-ed25519 not*base64 {}", k));
        lines.push(format!(
            "big01:ssh-rsa {}",
            fake_key(k, "x").split(' ').nth(1).unwrap()
        ));
        lines.push(format!(
            "big02:ssh-ed25519 {}\u{1}ctl",
            fake_key(k, "y").split(' ').nth(1).unwrap()
        ));
        lines.push(format!("bad name {}:{}", k, fake_key(k, "z")));
        lines.push(format!("big03:{}", "ssh-ed25519 AAAA".repeat(1200)));
        lines.push("big04:".to_string());
        lines.push(format!("\u{e9}t\u{e9}:{}", fake_key(k, "u")));
    }
    let value = lines.join("\n");
    assert!(value.len() >= 512 * 1024, "at least 512 KB of ssh-keys");
    let sb = sandbox_or_skip!(recording_builder());
    let mut daemon = spawn_daemon(&sb);
    assert!(sb.wait_for_log(Duration::from_secs(10), "Starting google-accounts."));
    set_keys(&sb, &value);
    let want_last = fake_key(
        (USERS - 1) * 1000 + KEYS_EACH - 1,
        &format!("k{}", KEYS_EACH - 1),
    );
    wait_keys(
        &sb,
        &format!("big{:02}", USERS - 1),
        Duration::from_secs(60),
        |k| k.contains(&want_last),
    );
    for u in 0..USERS {
        let user = format!("big{:02}", u);
        let want: Vec<String> = (0..KEYS_EACH)
            .map(|k| fake_key(u * 1000 + k, &format!("k{}", k)))
            .collect();
        assert_eq!(google_keys(&keys_of(&sb, &user)), want, "{}", user);
    }
    let expected: Vec<String> = (0..USERS).map(|u| format!("big{:02}", u)).collect();
    let names: Vec<&str> = expected.iter().map(String::as_str).collect();
    wait_ledger(&sb, &names, Duration::from_secs(5));
    for (needle, what) in [
        (
            "Skipping an SSH key line: not a complete entry (no colon).",
            "no colon",
        ),
        (
            "Skipping an SSH key for user big00: key data is not base64.",
            "base64",
        ),
        (
            "Skipping an SSH key for user big01: key data does not match its key type.",
            "type",
        ),
        (
            "Skipping an SSH key for user big02: control character in the key.",
            "control",
        ),
        (
            "Skipping an SSH key for user big03: key longer than 16384 bytes.",
            "long",
        ),
        (
            "Skipping an SSH key for user big04: no key after the colon.",
            "empty",
        ),
        (
            "Skipping an SSH key for user ?t?: non-ASCII character.",
            "non-ASCII",
        ),
    ] {
        assert_eq!(
            count_log(&sb, needle),
            1,
            "{}: {}",
            what,
            sb.log_lines().join("\n")
        );
    }
    // One warning per distinct refused name (KEYS_EACH of them), not one per line or update.
    assert_eq!(
        count_log(&sb, "Invalid user account name \"bad name"),
        KEYS_EACH as usize
    );
    let total = count_log(&sb, "google-accounts:");
    assert!(total < 400, "{} log lines for one update", total);
    assert_calls_only_name(&sb, &names);
    assert_running(&sb, &mut daemon);
}

/// A document just under the 4 MiB limit (almost all of it `ssh-keys`) is used, and the
/// guest daemon, every thread on the one shared document, stays under 64 MiB; a document
/// over the limit changes nothing and is logged once.
#[test]
fn a_four_mib_document_is_used_in_bounded_memory_and_a_larger_one_is_refused() {
    const USERS: u64 = 8;
    let key_line = |u: u64, k: u64| format!("mem{}:{}", u, fake_key(u * 100_000 + k, "m"));
    let mut lines = Vec::new();
    let mut size = 0usize;
    let mut k = 0;
    while size < (4 << 20) - (64 << 10) {
        for u in 0..USERS {
            let line = key_line(u, k);
            size += line.len() + 1;
            lines.push(line);
        }
        k += 1;
    }
    let per_user = k;
    let sb = sandbox_or_skip!(recording_builder());
    let daemon = sb.spawn_env(["google_guest_daemon"], &[("PATH", RECORD_PATH)]);
    assert!(sb.wait_for_log(Duration::from_secs(10), "Starting daemons:"));
    set_keys(&sb, &lines.join("\n"));
    let last = fake_key((USERS - 1) * 100_000 + per_user - 1, "m");
    wait_keys(
        &sb,
        &format!("mem{}", USERS - 1),
        Duration::from_secs(120),
        |keys| keys.contains(&last),
    );
    let peak = peak_rss_kib(daemon.pid());
    println!(
        "{} keys, {} KiB of ssh-keys: peak RSS {} KiB",
        lines.len(),
        size >> 10,
        peak
    );
    assert!(peak < 64 * 1024, "peak RSS {} KiB", peak);

    // Over the limit: refused, logged once however often it is answered, nothing changes.
    let before = keys_of(&sb, "mem0");
    lines.extend((0..20_000).map(|j| key_line(0, 1_000_000 + j)));
    set_keys(&sb, &lines.join("\n"));
    assert!(
        sb.wait_for_log(Duration::from_secs(20), "reply too large"),
        "{:#?}",
        sb.log_lines().iter().rev().take(20).collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(keys_of(&sb, "mem0"), before);
    assert_eq!(
        count_log(&sb, "reply too large"),
        1,
        "{:#?}",
        sb.log_lines()
    );
    assert!(peak_rss_kib(daemon.pid()) < 64 * 1024);
}
