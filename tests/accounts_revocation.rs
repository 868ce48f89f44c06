//! Revocation that nothing can block, on real files, real shadow-utils and a real `sshd`:
//!
//! - a removed user who made their own `authorized_keys` unreadable for the daemon (past
//!   its size limit) still loses sudo, and, the daemon having created the account, the
//!   whole file goes unread: neither the Google key nor a key the user added logs in, and
//!   `sudo -n true` fails for the account;
//! - `gpasswd -d` failing (`/etc/group.lock` held by another tool) keeps the user in the
//!   ledger, pending removal, and is retried until it works;
//! - write-ahead ledger: when `google_users` cannot be written (a full `/var/lib/google`),
//!   nobody gets a key or sudo, and the round is retried until it can;
//! - sudo only for people: `nobody`, `daemon`, a uid below `UID_MIN`, a `/bin/false` shell
//!   and root never join `google-sudoers` whatever metadata says (`sudo -n` fails for them),
//!   root and sys1 still log in with their keys; grants and revocations are logged;
//! - lock files: an unprivileged user's file or symlink at `/var/lock/google_*.lock` is
//!   replaced by root's own, and the daemons run;
//! - checks on the opened file: `authorized_keys` swapped at full speed between the user's
//!   own file and a hard link to a root-only file while the daemon rewrites it: root's
//!   file never ends up in the user's (a race: before the change it leaked in most runs).
//!
//! Run: `cargo test --features emulator,test-hooks --test integration accounts_revocation::`
//! (as root).

#![cfg(feature = "emulator")]

use std::time::Duration;

use crate::accounts_support::*;
use crate::common::{self, Sandbox};

const SSHD_PORT: u16 = 2232;

fn in_sudoers(sb: &Sandbox, user: &str) -> bool {
    sb.group(SUDOERS_GROUP)
        .is_some_and(|g| g.members.iter().any(|m| m == user))
}

/// Whether `sudo -n true` works for `user` (run as that user inside, no password).
fn sudo_works(sb: &Sandbox, user: &str) -> bool {
    sb.program(["su", "-s", "/bin/sh", user, "-c", "sudo -n true"])
        .timeout(Duration::from_secs(20))
        .output()
        .success()
}

/// A sandbox with recorders and `sshd`, the daemon running and alice (created by it)
/// logging in with her Google key and with a key she added to her own file; sudo works.
fn alice_with_own_key(sb: &Sandbox) -> (common::Daemon, common::Daemon) {
    let google = key_pair(sb, "google");
    let own = key_pair(sb, "own");
    let sshd = start_sshd(sb, SSHD_PORT);
    let daemon = spawn_daemon(sb);
    set_keys(sb, &format!("alice:{}", google));
    wait_keys(sb, "alice", Duration::from_secs(20), |k| {
        k.contains(&google)
    });
    as_alice(
        sb,
        &format!("printf '%s\\n' '{}' >> ~/.ssh/authorized_keys", own),
    );
    assert_login_and_sudo(sb, SSHD_PORT, "google", "alice");
    assert_login_and_sudo(sb, SSHD_PORT, "own", "alice");
    assert!(sudo_works(sb, "alice"));
    (sshd, daemon)
}

/// Runs `script` as alice in the sandbox (her own doing, not root's); it must succeed.
fn as_alice(sb: &Sandbox, script: &str) {
    sb.program(["su", "-s", "/bin/sh", "alice", "-c", script])
        .output()
        .assert_success();
}

#[test]
fn a_removed_user_cannot_block_their_removal_with_an_oversized_key_file() {
    let sb = sandbox_or_skip!(recording_builder());
    let (_sshd, mut daemon) = alice_with_own_key(&sb);
    // Alice makes her file larger than the daemon ever reads (4 MiB).
    as_alice(
        &sb,
        "yes '# padding padding padding' | head -c 6000000 >> ~/.ssh/authorized_keys",
    );
    let size = sb
        .sh(&format!("stat -c %s {}", keys_path("alice")))
        .stdout_text();
    assert!(
        size.trim().parse::<u64>().unwrap_or(0) > 5_000_000,
        "size {:?}",
        size
    );

    set_keys(&sb, "");
    wait_ledger(&sb, &[], Duration::from_secs(20));
    assert!(!in_sudoers(&sb, "alice"), "alice kept google-sudoers");
    assert!(!sudo_works(&sb, "alice"), "sudo -n still works for alice");
    assert!(
        !sb.exists(keys_path("alice")),
        "the whole authorized_keys of an account the daemon created goes\n{}",
        sb.log_lines().join("\n")
    );
    assert!(sb.user("alice").is_some(), "the account stays by default");
    assert_login_refused(&sb, SSHD_PORT, "google", "alice");
    assert_login_refused(&sb, SSHD_PORT, "own", "alice");
    assert_eq!(
        count_log(
            &sb,
            "google-accounts: INFO Revoked sudo from user alice (google-sudoers)."
        ),
        1
    );
    assert_running(&sb, &mut daemon);
}

#[test]
fn a_revocation_blocked_by_the_group_lock_is_retried_until_it_works() {
    let sb = sandbox_or_skip!(recording_builder());
    let mut daemon = spawn_daemon(&sb);
    set_keys(&sb, &format!("alice:{}", fake_key(1, "alice")));
    wait_ledger(&sb, &["alice"], Duration::from_secs(20));
    assert!(sb.wait_until(Duration::from_secs(20), || in_sudoers(&sb, "alice")));

    // Another tool holds /etc/group.lock (shadow-utils' lock file naming a live process:
    // the sandbox's init), so `gpasswd -d` fails. Taken only once no command of the first
    // round holds it (noclobber): overwriting a running useradd's own lock would let that
    // useradd remove it on exit.
    let first = fake_key(1, "alice");
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| {
        k.contains(&first)
    });
    sb.sh("i=0; until (set -C; printf 1 > /etc/group.lock) 2>/dev/null; do i=$((i+1)); [ $i -lt 2000 ] || exit 1; sleep 0.01; done")
        .assert_success();
    clear_calls(&sb);
    set_keys(&sb, "");
    let tried_twice = sb.wait_until(Duration::from_secs(20), || {
        calls(&sb)
            .iter()
            .filter(|c| c[0] == "gpasswd" && c.get(1).map(String::as_str) == Some("-d"))
            .count()
            >= 2
    });
    assert!(
        tried_twice,
        "gpasswd -d was not retried: {:?}\n{}",
        calls(&sb),
        sb.log_lines().join("\n")
    );
    assert!(in_sudoers(&sb, "alice"), "the lock did block gpasswd");
    assert_eq!(
        ledger(&sb),
        ["alice"],
        "alice left the ledger while still in google-sudoers\n{}",
        sb.log_lines().join("\n")
    );

    sb.sh("rm /etc/group.lock").assert_success();
    wait_ledger(&sb, &[], Duration::from_secs(20));
    assert!(!in_sudoers(&sb, "alice"));
    assert_running(&sb, &mut daemon);
}

#[test]
fn nobody_gets_a_key_or_sudo_while_the_ledger_cannot_be_written() {
    let bob = vec!["bob".to_string()];
    let sb = sandbox_or_skip!(with_accounts(recording_builder(), &bob, 1500, &[],));
    sb.sh("mkdir -p /home/bob && chown bob /home/bob")
        .assert_success();
    // /var/lib/google is full: reading works, writing a ledger fails.
    sb.sh(
        "mkdir -p /var/lib/google && mount -t tmpfs -o size=16k tmpfs /var/lib/google \
         && (dd if=/dev/zero of=/var/lib/google/fill bs=1k count=64 2>/dev/null; true)",
    )
    .assert_success();
    let mut daemon = spawn_daemon(&sb);
    let key = fake_key(7, "bob");
    set_keys(&sb, &format!("bob:{}", key));
    assert!(
        sb.wait_for_log(Duration::from_secs(20), "google_users"),
        "no ledger error was logged:\n{}",
        sb.log_lines().join("\n")
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !in_sudoers(&sb, "bob"),
        "bob got sudo while the ledger could not name him\n{}",
        sb.log_lines().join("\n")
    );
    assert!(
        !keys_of(&sb, "bob").contains(&key),
        "bob got a key while the ledger could not name him"
    );

    sb.sh("umount /var/lib/google").assert_success();
    wait_ledger(&sb, &["bob"], Duration::from_secs(20));
    wait_keys(&sb, "bob", Duration::from_secs(10), |k| k.contains(&key));
    assert!(in_sudoers(&sb, "bob"));
    assert_running(&sb, &mut daemon);
}

#[test]
fn sudo_only_for_people_whatever_metadata_says() {
    // sys1: a system account (uid 500 < UID_MIN) with a real shell; shut: a person's uid
    // with /bin/false; nobody and daemon come from the image (nologin shells).
    let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd.push_str("sys1:x:500:100::/home/sys1:/bin/sh\nshut:x:1600:100::/home/shut:/bin/false\n");
    let mut shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    shadow.push_str("sys1:*:19000:0:99999:7:::\nshut:*:19000:0:99999:7:::\n");
    let sb = sandbox_or_skip!(recording_builder().file("/etc/passwd", passwd, 0o644).file(
        "/etc/shadow",
        shadow,
        0o640
    ));
    sb.sh("mkdir -p /home/sys1 /home/shut && chown sys1 /home/sys1 && chown shut /home/shut")
        .assert_success();
    let alice = key_pair(&sb, "alice");
    let root = key_pair(&sb, "root");
    let sys1 = key_pair(&sb, "sys1");
    let _sshd = start_sshd(&sb, SSHD_PORT);
    let mut daemon = spawn_daemon(&sb);
    let other = fake_key(9, "x");
    set_keys(
        &sb,
        &format!(
            "nobody:{other}\ndaemon:{other}\nshut:{other}\nsys1:{sys1}\nroot:{root}\nalice:{alice}"
        ),
    );
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| {
        k.contains(&alice)
    });
    wait_keys(&sb, "root", Duration::from_secs(5), |k| k.contains(&root));
    wait_keys(&sb, "sys1", Duration::from_secs(5), |k| k.contains(&sys1));
    wait_keys(&sb, "shut", Duration::from_secs(5), |k| k.contains(&other));
    assert!(sb.wait_until(Duration::from_secs(5), || in_sudoers(&sb, "alice")));
    let members = sb.group(SUDOERS_GROUP).unwrap().members;
    assert_eq!(
        members,
        ["alice"],
        "only a person's account joins google-sudoers\n{}",
        sb.log_lines().join("\n")
    );
    for user in ["nobody", "daemon", "sys1", "shut"] {
        assert!(!sudo_works(&sb, user), "sudo -n works for {}", user);
    }
    assert_login_and_sudo(&sb, SSHD_PORT, "alice", "alice");
    // Root gets its key, and needs no group.
    let out = ssh(&sb, SSHD_PORT, "root", "root", "id -u");
    assert_eq!(out.stdout_text(), "0\n", "{:?}", out);
    assert!(!sb.group("root").unwrap().members.contains(&"root".into()));
    // sys1 logs in with its key but cannot sudo.
    let out = ssh(&sb, SSHD_PORT, "sys1", "sys1", "sudo -n true");
    assert!(!out.success(), "{:?}", out);
    assert_eq!(
        count_log(&sb, "INFO Granted sudo to user alice (google-sudoers)."),
        1
    );
    assert_eq!(count_log(&sb, "INFO Granted sudo"), 1);

    set_keys(&sb, "");
    wait_ledger(&sb, &[], Duration::from_secs(20));
    assert_eq!(
        count_log(&sb, "INFO Revoked sudo from user alice (google-sudoers)."),
        1
    );
    assert_login_refused(&sb, SSHD_PORT, "alice", "alice");
    assert!(!sudo_works(&sb, "alice"));
    assert_running(&sb, &mut daemon);
}

#[test]
fn a_squatted_lock_file_cannot_switch_the_daemons_off() {
    let sb = sandbox_or_skip!(with_recorders(
        Sandbox::builder().metadata(&keys_document(&format!("alice:{}", fake_key(3, "a"))))
    ));
    // An unprivileged user creates the accounts daemon's lock file before it starts, and a
    // symlink in place of the clock-skew daemon's.
    sb.sh("mkdir -p /run/lock && chmod 1777 /run/lock && \
         su -s /bin/sh nobody -c 'touch /var/lock/google_accounts.lock && \
         ln -s /etc/shadow /var/lock/google_clock_skew.lock'")
        .assert_success();
    let mut daemon = spawn_daemon(&sb);
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| {
        k.contains(&fake_key(3, "a"))
    });
    let owner = sb.sh("stat -L -c %u:%f /var/lock/google_accounts.lock");
    assert_eq!(
        owner.stdout_text(),
        "0:8180\n",
        "root's own regular file, 0600"
    );
    assert_eq!(
        count_log(&sb, "Replacing /var/lock/google_accounts.lock"),
        1,
        "{}",
        sb.log_lines().join("\n")
    );
    assert_running(&sb, &mut daemon);

    let mut clock = sb.spawn_env(["google_clock_skew_daemon"], &[("PATH", RECORD_PATH)]);
    assert!(
        sb.wait_for_log(
            Duration::from_secs(10),
            "Replacing /var/lock/google_clock_skew.lock"
        ),
        "{}",
        sb.log_lines().join("\n")
    );
    assert!(
        sb.wait_until(Duration::from_secs(5), || sb
            .sh("[ -f /var/lock/google_clock_skew.lock ] && [ ! -L /var/lock/google_clock_skew.lock ]")
            .success()),
        "the symlink was replaced by a file"
    );
    assert!(clock.is_running(), "{}", clock.stderr_text());
    assert!(sb.read_string("/etc/shadow").unwrap().contains("root:"));
}

/// Swaps `~/.ssh/authorized_keys` of alice, as fast as `renameat2(RENAME_EXCHANGE)` goes,
/// between her own regular file and a hard link to a root-only file (what a user can do on
/// a kernel with `fs.protected_hardlinks = 0`), keeping one name the hard link. Stops when
/// /run/swap.stop appears.
const SWAPPER: &str = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
d = "/home/alice/.ssh"
ak, other, tmp = d + "/authorized_keys", d + "/.other", d + "/.tmp"
secret = os.stat("/home/root-secret").st_ino
def relink():
    for p in (ak, other):
        if os.lstat(p).st_ino == secret:
            return
    try: os.unlink(tmp)
    except FileNotFoundError: pass
    os.link("/home/root-secret", tmp)
    os.rename(tmp, other)
n = 0
while not os.path.exists("/run/swap.stop"):
    libc.renameat2(-100, ak.encode(), -100, other.encode(), 2)
    n += 1
    if n % 200 == 0:
        try: relink()
        except FileNotFoundError: pass
"#;

#[test]
fn a_hard_link_swapped_in_after_the_checks_is_never_read() {
    let sb = sandbox_or_skip!(with_recorders(
        Sandbox::builder().metadata(&keys_document(&format!("alice:{}", fake_key(0, "k0"))))
    )
    .file("/home/root-secret", "TOPSECRET root only\n", 0o600)
    .file("/run/swapper.py", SWAPPER, 0o644));
    let mut daemon = spawn_daemon(&sb);
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| {
        k.contains(&fake_key(0, "k0"))
    });
    sb.sh("cd /home/alice/.ssh && printf 'own\\n' > .other && chown alice: .other && chmod 600 .other")
        .assert_success();
    let swapper = sb.program(["python3", "/run/swapper.py"]).spawn();
    // Many rewrites while the file keeps changing under the daemon.
    for round in 1..=150u64 {
        set_keys(&sb, &format!("alice:{}", fake_key(round, "k")));
        std::thread::sleep(Duration::from_millis(20));
    }
    sb.sh("touch /run/swap.stop").assert_success();
    let swapped = swapper.wait_output(Duration::from_secs(10));
    assert!(swapped.success(), "{:?}", swapped);
    let files = sb
        .sh("cd /home/alice/.ssh && for f in authorized_keys .other; do [ -L $f ] || cat $f; echo ===; done")
        .stdout_text();
    let leaked = files
        .split("===")
        .any(|f| f.contains("TOPSECRET") && f.contains("# Added by Google"));
    assert!(
        !leaked,
        "root's file was copied into alice's own file:\n{}",
        files
    );
    assert!(
        count_log(&sb, "The file has other hard links.") >= 1,
        "the swap never met the daemon (the test proved nothing)\n{}",
        sb.log_lines().join("\n")
    );
    assert_running(&sb, &mut daemon);
}
