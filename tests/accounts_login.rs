//! Real logins through keys the accounts daemon put in place, all inside the sandbox:
//! OpenSSH's `sshd` and `dropbear` on loopback, OpenSSH's client, `sudo -n` through
//! `google-sudoers`. A key removed from metadata stops working; a key with a
//! `google-ssh {"expireOn": ...}` comment stops working at its expiry (the daemon's timer,
//! not a later poll), with either server; and on a busybox-only userland (no shadow-utils
//! on `PATH`) the daemon switches to `adduser`/`addgroup`/`chpasswd`/`delgroup` by itself,
//! the account it makes has no usable password yet accepts key logins, and a removed key
//! stops working there too.
//!
//! Run: `cargo test --features emulator,test-hooks --test integration accounts_login::` (as root).

#![cfg(feature = "emulator")]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::accounts_support::{self, *};
use crate::common::{self, Sandbox};

const SSHD_PORT: u16 = 2222;
const DROPBEAR_PORT: u16 = 2223;

/// A sandbox with recorders and no key yet in metadata.
fn sandbox() -> common::SandboxBuilder {
    recording_builder()
}

#[test]
fn openssh_login_follows_the_metadata_keys() {
    let sb = sandbox_or_skip!(sandbox());
    let alice = key_pair(&sb, "alice");
    let bob = key_pair(&sb, "bob");
    let _sshd = start_sshd(&sb, SSHD_PORT);
    let mut daemon = spawn_daemon(&sb);
    set_keys(&sb, &format!("alice:{}\nbob:{}", alice, bob));
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| {
        k.contains(&alice)
    });
    wait_keys(&sb, "bob", Duration::from_secs(20), |k| k.contains(&bob));

    let user = sb.user("alice").expect("alice was created");
    assert!(user.uid >= 1000, "{:?}", user);
    let sudoers = sb.group(SUDOERS_GROUP).expect("google-sudoers exists");
    assert!(
        sudoers.members.contains(&"alice".to_string()),
        "{:?}",
        sudoers
    );
    assert_login_and_sudo(&sb, SSHD_PORT, "alice", "alice");
    assert_login_and_sudo(&sb, SSHD_PORT, "bob", "bob");
    // The key of one user does not open another's account.
    assert_login_refused(&sb, SSHD_PORT, "bob", "alice");

    // Alice's key leaves metadata: her Google line goes, her login stops; bob is untouched.
    set_keys(&sb, &format!("bob:{}", bob));
    wait_keys(&sb, "alice", Duration::from_secs(10), |k| {
        !k.contains(&alice)
    });
    assert_login_refused(&sb, SSHD_PORT, "alice", "alice");
    assert_login_and_sudo(&sb, SSHD_PORT, "bob", "bob");
    assert!(
        !sb.group(SUDOERS_GROUP)
            .unwrap()
            .members
            .contains(&"alice".to_string()),
        "alice left google-sudoers"
    );
    wait_ledger(&sb, &["bob"], Duration::from_secs(2));
    assert_running(&sb, &mut daemon);
}

/// Gives alice `permanent` and the key `body` with a `google-ssh` `expireOn` of `expire_on`,
/// and waits until both are in place (before `expire_on`, or the test proves nothing).
fn add_expiring_key(sb: &Sandbox, permanent: &str, body: &str, expire_on: i64) {
    let expiring = format!(
        r#"{} google-ssh {{"userName":"alice@x","expireOn":"{}"}}"#,
        body,
        rfc3339(expire_on)
    );
    set_keys(sb, &format!("alice:{}\nalice:{}", permanent, expiring));
    wait_keys(sb, "alice", Duration::from_secs(5), |k| {
        k.contains(&expiring)
    });
    assert!(
        gce_guest::timing::unix_now() < expire_on,
        "the key was applied too late to test its expiry"
    );
}

#[test]
fn an_expiring_key_works_until_expire_on_and_is_removed_by_the_timer() {
    let sb = sandbox_or_skip!(sandbox());
    let permanent = key_pair(&sb, "perm");
    let short = key_pair(&sb, "short");
    let _sshd = start_sshd(&sb, SSHD_PORT);
    let mut daemon = spawn_daemon(&sb);
    // Long enough for the account to be made and one login; the first key makes the account.
    set_keys(&sb, &format!("alice:{}", permanent));
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| {
        k.contains(&permanent)
    });

    let expire_on = gce_guest::timing::unix_now() + 5;
    let body = short.rsplit_once(' ').unwrap().0;
    add_expiring_key(&sb, &permanent, body, expire_on);
    assert_login_and_sudo(&sb, SSHD_PORT, "short", "alice");

    // Metadata does not change again: only the daemon's timer can remove the key. It must
    // be gone within 2 s of expireOn (a generous bound: it goes at expireOn itself).
    let deadline = std::time::UNIX_EPOCH + Duration::from_secs(expire_on as u64 + 2);
    let mut gone_at = None;
    while std::time::SystemTime::now() < deadline + Duration::from_millis(500) {
        if !keys_of(&sb, "alice").contains(body) {
            gone_at = Some(std::time::SystemTime::now());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone_at = gone_at.unwrap_or_else(|| {
        panic!(
            "the expired key was still there 2.5 s after expireOn:\n{}\n{}",
            keys_of(&sb, "alice"),
            sb.log_lines().join("\n")
        )
    });
    let after = gone_at
        .duration_since(std::time::UNIX_EPOCH + Duration::from_secs(expire_on as u64))
        .unwrap_or_default();
    assert!(
        gone_at <= deadline,
        "removed {:?} after expireOn, later than 2 s",
        after
    );
    assert_login_refused(&sb, SSHD_PORT, "short", "alice");
    assert_login_and_sudo(&sb, SSHD_PORT, "perm", "alice");
    assert_eq!(google_keys(&keys_of(&sb, "alice")), [permanent]);
    assert_running(&sb, &mut daemon);
}

#[test]
fn dropbear_login_follows_the_metadata_keys_and_expire_on() {
    let sb = sandbox_or_skip!(sandbox());
    let alice = key_pair(&sb, "alice");
    let _dropbear = start_dropbear(&sb, DROPBEAR_PORT);
    let mut daemon = spawn_daemon(&sb);
    set_keys(&sb, &format!("alice:{}", alice));
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| {
        k.contains(&alice)
    });
    assert_login_and_sudo(&sb, DROPBEAR_PORT, "alice", "alice");

    // dropbear's own client too, with the same key converted to its format.
    sb.sh(
        "dropbearconvert openssh dropbear /run/sshtest/alice /run/sshtest/alice.db >/dev/null 2>&1",
    )
    .assert_success();
    let out = sb
        .program([
            "dbclient",
            "-y",
            "-y",
            "-i",
            "/run/sshtest/alice.db",
            "-p",
            &DROPBEAR_PORT.to_string(),
            "alice@127.0.0.1",
            "sudo -n id -u",
        ])
        .output();
    assert!(out.success() && out.stdout_text() == "0\n", "{:?}", out);

    // A key with an expireOn logs in until then; after it, the daemon's timer removes it
    // and dropbear refuses it.
    let short = key_pair(&sb, "short");
    let body = short.rsplit_once(' ').unwrap().0;
    add_expiring_key(&sb, &alice, body, gce_guest::timing::unix_now() + 4);
    assert_login_and_sudo(&sb, DROPBEAR_PORT, "short", "alice");
    wait_keys(&sb, "alice", Duration::from_secs(10), |k| !k.contains(body));
    assert_login_refused(&sb, DROPBEAR_PORT, "short", "alice");
    assert_login_and_sudo(&sb, DROPBEAR_PORT, "alice", "alice");

    set_keys(&sb, "");
    wait_keys(&sb, "alice", Duration::from_secs(10), |k| {
        !k.contains(&alice)
    });
    assert_login_refused(&sb, DROPBEAR_PORT, "alice", "alice");
    assert_running(&sb, &mut daemon);
}

/// The applets a busybox userland offers for accounts, recorded like the shadow-utils
/// commands.
const BUSYBOX_APPLETS: [&str; 5] = ["adduser", "addgroup", "deluser", "delgroup", "chpasswd"];

fn busybox_binary() -> Option<String> {
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/busybox/build.sh"
        ))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "busybox build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!path.is_empty()).then_some(path)
}

#[test]
fn a_busybox_userland_gets_an_unlocked_account_that_logs_in_until_removed() {
    let Some(busybox) = busybox_binary() else {
        common::skip_or_fail("cannot build a busybox with adduser (tests/busybox/build.sh)");
        return;
    };
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(&keys_document("")));
    // The only PATH entry: a directory with the busybox applets (recorded like the
    // shadow-utils commands elsewhere), so no useradd, no /usr/sbin, no /sbin. It lives in
    // the sandbox directory, which has the same path inside and outside, because the
    // host's nsenter that starts the daemon is looked up through the same PATH: a link to
    // it is the only other entry.
    let bin = sb.dir().join("bb");
    std::fs::create_dir(&bin).unwrap();
    for applet in BUSYBOX_APPLETS {
        let script = format!(
            "#!/bin/sh\n{{ printf '%s' {applet}; for a in \"$@\"; do printf '\\t%s' \"$a\"; done; printf '\\n'; }} >> {CALLS}\n\\
             exec {busybox} {applet} \"$@\"\n"
        );
        std::fs::write(bin.join(applet), script).unwrap();
        std::fs::set_permissions(bin.join(applet), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink("/usr/bin/nsenter", bin.join("nsenter")).unwrap();
    let path = bin.to_str().unwrap().to_string();
    assert!(
        sb.program(["/bin/sh", "-c", "command -v useradd"])
            .env("PATH", &path)
            .output()
            .code()
            != Some(0)
    );
    let alice = key_pair(&sb, "alice");
    let _sshd = start_sshd(&sb, SSHD_PORT);
    let mut daemon = sb.spawn_env(["google_accounts_daemon"], &[("PATH", path.as_str())]);
    set_keys(&sb, &format!("alice:{}", alice));
    wait_keys(&sb, "alice", Duration::from_secs(20), |k| {
        k.contains(&alice)
    });

    let calls = calls(&sb);
    let programs: Vec<&str> = calls.iter().map(|c| c[0].as_str()).collect();
    assert!(
        calls
            .iter()
            .any(|c| c[..] == ["adduser", "-D", "-s", "/bin/bash", "alice"]),
        "{:?}",
        calls
    );
    assert!(
        calls.iter().any(|c| c[..] == ["chpasswd", "-e"]),
        "{:?}",
        calls
    );
    assert!(
        calls
            .iter()
            .any(|c| c[..] == ["addgroup", "alice", SUDOERS_GROUP]),
        "{:?}",
        calls
    );
    assert!(
        programs.iter().all(|p| BUSYBOX_APPLETS.contains(p)),
        "{:?}",
        programs
    );

    // No usable password ("*"), but not locked ("!"): OpenSSH accepts the key.
    let shadow = sb.read_string("/etc/shadow").unwrap();
    let line = shadow
        .lines()
        .find(|l| l.starts_with("alice:"))
        .expect("alice is in /etc/shadow");
    assert_eq!(line.split(':').nth(1), Some("*"), "{}", line);
    assert!(sb
        .group(SUDOERS_GROUP)
        .expect("google-sudoers was made with addgroup")
        .members
        .contains(&"alice".to_string()));
    let sudoers = sb.sh("stat -c %a /etc/sudoers.d/google_sudoers");
    assert_eq!(sudoers.stdout_text().trim(), "440");
    assert_login_and_sudo(&sb, SSHD_PORT, "alice", "alice");

    // Removed from metadata: out of google-sudoers through busybox delgroup, and the key
    // no longer logs in.
    set_keys(&sb, "");
    wait_keys(&sb, "alice", Duration::from_secs(10), |k| {
        !k.contains(&alice)
    });
    assert_login_refused(&sb, SSHD_PORT, "alice", "alice");
    let later = accounts_support::calls(&sb);
    assert!(
        later
            .iter()
            .any(|c| c[..] == ["delgroup", "alice", SUDOERS_GROUP]),
        "{:?}",
        later
    );
    assert!(!sb
        .group(SUDOERS_GROUP)
        .unwrap()
        .members
        .contains(&"alice".to_string()));
    assert_running(&sb, &mut daemon);
}
