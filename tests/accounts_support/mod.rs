//! Helpers shared by the accounts tests (`tests/accounts*.rs`, `tests/bench_accounts.rs`):
//! metadata documents, well-formed fake keys and real key pairs, recording wrappers for the
//! user and group commands, `sshd`/`dropbear` inside the sandbox and logins through them,
//! and a checkpoint of the overlay upper directories so a test can list exactly what
//! changed between two moments (the sandbox's own `changes()` is relative to its start).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{Daemon, Output, Sandbox, SandboxBuilder, OVERLAID_DIRS};

/// Where the recording wrappers live; first in [`RECORD_PATH`].
pub const RECORD_DIR: &str = "/run/rec";
/// The log the wrappers append to: one line per call, the program's name and its
/// arguments separated by tabs.
pub const CALLS: &str = "/run/rec-calls.log";
/// `PATH` for a daemon whose user and group commands are recorded.
pub const RECORD_PATH: &str =
    "/run/rec:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The commands the wrappers stand in for.
pub const RECORDED: [&str; 5] = ["useradd", "usermod", "userdel", "groupadd", "gpasswd"];

/// The sudoers group.
pub const SUDOERS_GROUP: &str = "google-sudoers";
/// The managed-users ledger.
pub const LEDGER: &str = "/var/lib/google/google_users";
/// The created-accounts ledger.
pub const CREATED: &str = "/var/lib/google/google_users_created";

/// Quotes text as a JSON string.
pub fn js(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn attrs_json(attrs: &[(&str, &str)]) -> String {
    let body: Vec<String> = attrs
        .iter()
        .map(|(k, v)| format!("{}:{}", js(k), js(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// A recursive metadata document with these instance and project attributes.
pub fn document(instance: &[(&str, &str)], project: &[(&str, &str)]) -> String {
    format!(
        r#"{{"instance":{{"id":1,"hostname":"vm.c.p.internal","zone":"projects/1/zones/z",
           "networkInterfaces":[],"attributes":{}}},
           "project":{{"projectId":"p","numericProjectId":1,"attributes":{}}}}}"#,
        attrs_json(instance),
        attrs_json(project)
    )
}

/// A document whose instance `ssh-keys` is `keys` and nothing else of interest.
pub fn keys_document(keys: &str) -> String {
    document(&[("ssh-keys", keys)], &[])
}

/// A merge patch setting instance attributes.
pub fn instance_patch(attrs: &[(&str, &str)]) -> String {
    format!(r#"{{"instance":{{"attributes":{}}}}}"#, attrs_json(attrs))
}

/// Sets the instance `ssh-keys` through the emulator.
pub fn set_keys(sb: &Sandbox, keys: &str) {
    sb.emulator().patch(&instance_patch(&[("ssh-keys", keys)]));
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A well-formed `ssh-ed25519` public key line (no private half exists) that differs for
/// every `seed`, with `comment`.
pub fn fake_key(seed: u64, comment: &str) -> String {
    let mut blob = Vec::with_capacity(51);
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    let mut state = seed ^ 0x5eed;
    for _ in 0..4 {
        blob.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    format!("ssh-ed25519 {} {}", base64(&blob), comment)
}

/// Seconds since the epoch as RFC 3339 UTC (`2024-05-01T12:00:00Z`).
pub fn rfc3339(t: i64) -> String {
    let secs = t.rem_euclid(86_400);
    let (year, month, day) = gce_guest::timing::civil_from_days(t.div_euclid(86_400));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        year,
        month,
        day,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A sandbox with no metadata keys yet and the recording wrappers (see [`with_recorders`]).
pub fn recording_builder() -> SandboxBuilder {
    with_recorders(Sandbox::builder().metadata(&keys_document("")))
}

/// Adds recording wrappers for [`RECORDED`] under [`RECORD_DIR`]: each appends its argv to
/// [`CALLS`] and then runs the real program. Run the daemon with `PATH` = [`RECORD_PATH`].
pub fn with_recorders(mut builder: SandboxBuilder) -> SandboxBuilder {
    for name in RECORDED {
        let script = format!(
            "#!/bin/sh\n{{ printf '%s' {name}; for a in \"$@\"; do printf '\\t%s' \"$a\"; done; printf '\\n'; }} >> {CALLS}\n\
             PATH=/usr/sbin:/usr/bin:/sbin:/bin exec {name} \"$@\"\n"
        );
        builder = builder.file(format!("{}/{}", RECORD_DIR, name), script, 0o755);
    }
    builder
}

/// The recorded calls so far: program name, then arguments.
pub fn calls(sb: &Sandbox) -> Vec<Vec<String>> {
    sb.read_string(CALLS)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Empties the call log.
pub fn clear_calls(sb: &Sandbox) {
    sb.sh(&format!("rm -f {}", CALLS)).assert_success();
}

/// Panics unless every argument of every recorded call is an option or value the daemon's
/// templates use, an existing group (list), or one of `users`.
pub fn assert_calls_only_name(sb: &Sandbox, users: &[&str]) {
    let groups: BTreeSet<String> = sb.groups().into_iter().map(|g| g.name).collect();
    let fixed = [
        "-m",
        "-s",
        "/bin/bash",
        "/bin/sh",
        "-p",
        "*",
        "-G",
        "-a",
        "-d",
        "-r",
    ];
    for call in calls(sb) {
        for arg in &call[1..] {
            let ok = fixed.contains(&arg.as_str())
                || users.contains(&arg.as_str())
                || arg.split(',').all(|g| groups.contains(g));
            assert!(
                ok,
                "a command got an unexpected argument {:?}: {:?}",
                arg, call
            );
        }
    }
}

/// The users named in recorded calls (the last argument of `useradd`/`usermod`/`userdel`,
/// the user of `gpasswd -a/-d`).
pub fn users_in_calls(sb: &Sandbox) -> BTreeSet<String> {
    calls(sb)
        .into_iter()
        .filter_map(|c| match c[0].as_str() {
            "useradd" | "usermod" | "userdel" => c.last().cloned(),
            "gpasswd" => c.get(2).cloned(),
            _ => None,
        })
        .collect()
}

/// Seeds local accounts `names` (uids from `uid_base`, group `users`, home
/// `/home/<name>`, not created yet, `/bin/bash`) into the sandbox's `/etc/passwd` and
/// `/etc/shadow`, and a `google-sudoers` group (also in `/etc/gshadow`) (gid 2999) with `sudoers` as members, as if
/// they had been made before the daemon started. Creating hundreds of accounts with
/// `useradd` would cost a minute; the daemon treats these as any existing account.
pub fn with_accounts(
    builder: SandboxBuilder,
    names: &[String],
    uid_base: u32,
    sudoers: &[String],
) -> SandboxBuilder {
    let mut passwd = std::fs::read_to_string("/etc/passwd").expect("host /etc/passwd");
    let mut shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let mut group = std::fs::read_to_string("/etc/group").expect("host /etc/group");
    for (i, name) in names.iter().enumerate() {
        passwd.push_str(&format!(
            "{}:x:{}:100::/home/{}:/bin/bash\n",
            name,
            uid_base + i as u32,
            name
        ));
        shadow.push_str(&format!("{}:*:19000:0:99999:7:::\n", name));
    }
    let mut gshadow = std::fs::read_to_string("/etc/gshadow").unwrap_or_default();
    group.push_str(&format!("{}:x:2999:{}\n", SUDOERS_GROUP, sudoers.join(",")));
    gshadow.push_str(&format!("{}:!::{}\n", SUDOERS_GROUP, sudoers.join(",")));
    builder
        .file("/etc/gshadow", gshadow, 0o640)
        .file("/etc/passwd", passwd, 0o644)
        .file("/etc/shadow", shadow, 0o640)
        .file("/etc/group", group, 0o644)
}

/// The content a managed user's file has when it holds only our `keys`.
pub fn only_google(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("# Added by Google\n{}\n", k))
        .collect()
}

/// `/home/<user>/.ssh/authorized_keys`.
pub fn keys_path(user: &str) -> String {
    if user == "root" {
        "/root/.ssh/authorized_keys".into()
    } else {
        format!("/home/{}/.ssh/authorized_keys", user)
    }
}

/// A user's `authorized_keys` ("" when absent, also when it goes while being read: the
/// daemon removes the whole file of an account it created when the user is removed).
pub fn keys_of(sb: &Sandbox, user: &str) -> String {
    sb.sh(&format!("cat -- {} 2>/dev/null; true", keys_path(user)))
        .stdout_text()
}

/// The key lines under `# Added by Google` markers in `content`.
pub fn google_keys(content: &str) -> Vec<String> {
    let lines: Vec<&str> = content.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0].starts_with("# Added by Google"))
        .map(|w| w[1].to_string())
        .collect()
}

/// Waits until `user`'s `authorized_keys` satisfies `cond`; panics with the file and the log
/// after `timeout`.
pub fn wait_keys(sb: &Sandbox, user: &str, timeout: Duration, cond: impl Fn(&str) -> bool) {
    if !sb.wait_until(timeout, || cond(&keys_of(sb, user))) {
        panic!(
            "{}'s authorized_keys did not reach the expected state within {:?}:\n{}\n--- log ---\n{}",
            user,
            timeout,
            keys_of(sb, user),
            sb.log_lines().join("\n")
        );
    }
}

/// Lines of the log containing `needle`.
pub fn count_log(sb: &Sandbox, needle: &str) -> usize {
    sb.log_lines().iter().filter(|l| l.contains(needle)).count()
}

/// The names in the managed-users ledger.
pub fn ledger(sb: &Sandbox) -> Vec<String> {
    sb.read_string(LEDGER)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until the ledger lists exactly `names`; panics with the log after `timeout`.
pub fn wait_ledger(sb: &Sandbox, names: &[&str], timeout: Duration) {
    if !sb.wait_until(timeout, || ledger(sb) == names) {
        panic!(
            "the ledger is {:?}, not {:?}\n--- log ---\n{}",
            ledger(sb),
            names,
            sb.log_lines().join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------
// Metadata outages (accounts_outage under the test time scale, accounts_long in real time):
// alice and bob have keys; behind the daemon's back alice's key changes, bob leaves and
// carol comes; while the server misbehaves nothing may change, afterwards the change must.

/// The keys before an outage.
pub fn outage_keys_before() -> String {
    format!(
        "alice:{}\nbob:{}",
        fake_key(1, "alice-old"),
        fake_key(2, "bob")
    )
}

/// The keys metadata holds once they changed during the outage.
pub fn outage_keys_after() -> String {
    format!(
        "alice:{}\ncarol:{}",
        fake_key(3, "alice-new"),
        fake_key(4, "carol")
    )
}

/// A 503 body that looks like a document with no keys at all.
pub const EMPTY_DOC: &str =
    r#"{"instance":{"id":1,"attributes":{}},"project":{"projectId":"p","attributes":{}}}"#;

/// alice's and bob's files once the daemon applied [`outage_keys_before`].
pub fn wait_outage_start(sb: &Sandbox, timeout: Duration) -> (String, String) {
    wait_keys(sb, "bob", timeout, |k| k.contains(&fake_key(2, "bob")));
    wait_keys(sb, "alice", Duration::from_secs(5), |k| {
        k.contains(&fake_key(1, "alice-old"))
    });
    (keys_of(sb, "alice"), keys_of(sb, "bob"))
}

/// Nothing changed: alice's and bob's files as `before`, no carol.
pub fn assert_outage_untouched(sb: &Sandbox, before: &(String, String), what: &str) {
    assert_eq!(
        keys_of(sb, "alice"),
        before.0,
        "{}: alice's keys changed",
        what
    );
    assert_eq!(keys_of(sb, "bob"), before.1, "{}: bob lost his key", what);
    assert!(!sb.exists("/home/carol"), "{}: carol appeared", what);
}

/// Waits (up to `recovery` for carol's key) until [`outage_keys_after`] is applied: alice's
/// new key only, none of ours for bob, the ledger alice and carol. Returns how long it took.
pub fn wait_outage_recovered(sb: &Sandbox, recovery: Duration) -> Duration {
    let t = std::time::Instant::now();
    wait_keys(sb, "carol", recovery, |k| k.contains(&fake_key(4, "carol")));
    wait_keys(sb, "alice", Duration::from_secs(2), |k| {
        google_keys(k) == [fake_key(3, "alice-new")]
    });
    wait_keys(sb, "bob", Duration::from_secs(2), |k| {
        google_keys(k).is_empty()
    });
    wait_ledger(sb, &["alice", "carol"], Duration::from_secs(2));
    t.elapsed()
}

/// Starts `google_accounts_daemon` with `PATH` = [`RECORD_PATH`] (recording wrappers
/// first; they are only there when the sandbox was built [`with_recorders`]).
pub fn spawn_daemon(sb: &Sandbox) -> Daemon {
    sb.spawn_env(["google_accounts_daemon"], &[("PATH", RECORD_PATH)])
}

/// Whether the daemon still runs, with the log in the message when it does not.
pub fn assert_running(sb: &Sandbox, daemon: &mut Daemon) {
    assert!(
        daemon.is_running(),
        "the accounts daemon exited\n--- stderr ---\n{}\n--- log ---\n{}",
        daemon.stderr_text(),
        sb.log_lines().join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Checkpoints of the overlay upper directories.

/// The state of every entry of the overlay upper directories at one moment.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    entries: BTreeMap<String, u64>,
}

fn fingerprint(path: &Path, meta: &std::fs::Metadata) -> u64 {
    let mut h = DefaultHasher::new();
    let t = meta.file_type();
    (meta.mode(), meta.uid(), meta.gid(), meta.rdev()).hash(&mut h);
    if t.is_file() {
        std::fs::read(path).ok().hash(&mut h);
    } else if t.is_symlink() {
        std::fs::read_link(path).ok().hash(&mut h);
    } else if t.is_char_device() {
        "whiteout".hash(&mut h);
    }
    h.finish()
}

fn walk(upper: &Path, inside: &Path, out: &mut BTreeMap<String, u64>) {
    let Ok(entries) = std::fs::read_dir(upper) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let up = entry.path();
        let ins = inside.join(entry.file_name());
        let Ok(meta) = std::fs::symlink_metadata(&up) else {
            continue;
        };
        if meta.is_dir() {
            // A directory copied up unchanged is no change: compare with the host's.
            let same_as_host = std::fs::symlink_metadata(&ins).is_ok_and(|h| {
                h.is_dir()
                    && h.mode() == meta.mode()
                    && h.uid() == meta.uid()
                    && h.gid() == meta.gid()
            });
            if !same_as_host {
                out.insert(ins.to_string_lossy().into_owned(), fingerprint(&up, &meta));
            }
            walk(&up, &ins, out);
        } else {
            out.insert(ins.to_string_lossy().into_owned(), fingerprint(&up, &meta));
        }
    }
}

impl Checkpoint {
    /// Records the upper directories of `sb` now.
    pub fn take(sb: &Sandbox) -> Checkpoint {
        let mut entries = BTreeMap::new();
        for dir in OVERLAID_DIRS {
            walk(
                &sb.dir().join("upper").join(&dir[1..]),
                Path::new(dir),
                &mut entries,
            );
        }
        Checkpoint { entries }
    }

    /// The inside paths that were added, removed or changed (content, type, mode, owner)
    /// between `self` and `later`, sorted.
    pub fn changed_since(&self, later: &Checkpoint) -> Vec<String> {
        let mut paths: BTreeSet<&String> = BTreeSet::new();
        for (p, f) in &later.entries {
            if self.entries.get(p) != Some(f) {
                paths.insert(p);
            }
        }
        for p in self.entries.keys() {
            if !later.entries.contains_key(p) {
                paths.insert(p);
            }
        }
        paths.into_iter().cloned().collect()
    }
}

/// Panics unless every path changed between `before` and now matches one of `allowed`
/// (a path, or a prefix ending in `/`). `/run/rec-calls.log` and `/run/sshtest/`, the
/// tests' own files, are always allowed.
pub fn assert_changed_only(sb: &Sandbox, before: &Checkpoint, allowed: &[&str]) {
    let now = Checkpoint::take(sb);
    let bad: Vec<String> = before
        .changed_since(&now)
        .into_iter()
        .filter(|p| {
            let ours = [CALLS, "/run/sshtest/"];
            !ours.iter().chain(allowed.iter()).any(|a| {
                if a.ends_with('/') {
                    p.starts_with(a) || format!("{}/", p) == *a
                } else {
                    p == a
                }
            })
        })
        .collect();
    assert!(
        bad.is_empty(),
        "paths changed that must not have: {:?}\n--- log ---\n{}",
        bad,
        sb.log_lines().join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Real SSH: key pairs, servers and logins, all inside the sandbox.

/// The directory for host keys, configurations and client keys.
pub const SSH_DIR: &str = "/run/sshtest";

/// Makes an ed25519 key pair at `/run/sshtest/<name>` and returns the public key line.
pub fn key_pair(sb: &Sandbox, name: &str) -> String {
    crate::common::tool("ssh-keygen");
    let path = format!("{}/{}", SSH_DIR, name);
    sb.sh(&format!(
        "mkdir -p {SSH_DIR} && rm -f {path} {path}.pub && ssh-keygen -q -t ed25519 -N '' -C {name}@test -f {path}"
    ))
    .assert_success();
    sb.read_string(format!("{}.pub", path))
        .expect("ssh-keygen wrote the public key")
        .trim()
        .to_string()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port` inside.
fn wait_port(sb: &Sandbox, port: u16, server: &mut Daemon) {
    let ok = sb.wait_until(Duration::from_secs(10), || {
        sb.program([
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/127.0.0.1/{}", port),
        ])
        .output()
        .success()
    });
    assert!(
        ok,
        "the SSH server did not listen on port {}: running={} stderr:\n{}",
        port,
        server.is_running(),
        server.stderr_text()
    );
}

/// Starts OpenSSH's `sshd` inside on 127.0.0.1:`port` with its own host key and
/// configuration (`StrictModes yes`, `UsePAM no`, public keys only).
pub fn start_sshd(sb: &Sandbox, port: u16) -> Daemon {
    crate::common::tool("sshd");
    let script = format!(
        r#"set -e
mkdir -p {SSH_DIR} /run/sshd
chmod 0755 /run/sshd
rm -f {SSH_DIR}/host_key {SSH_DIR}/host_key.pub
ssh-keygen -q -t ed25519 -N '' -f {SSH_DIR}/host_key
cat > {SSH_DIR}/sshd_config <<EOF
ListenAddress 127.0.0.1:{port}
HostKey {SSH_DIR}/host_key
PidFile none
UsePAM no
StrictModes yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
LogLevel VERBOSE
EOF
/usr/sbin/sshd -t -f {SSH_DIR}/sshd_config"#
    );
    sb.sh(&script).assert_success();
    let mut sshd = sb
        .program([
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-f",
            &format!("{}/sshd_config", SSH_DIR),
        ])
        .spawn();
    wait_port(sb, port, &mut sshd);
    sshd
}

/// Starts `dropbear` inside on 127.0.0.1:`port` (public keys only) with an ed25519 host key.
pub fn start_dropbear(sb: &Sandbox, port: u16) -> Daemon {
    crate::common::tool("dropbearkey");
    sb.sh(&format!(
        "set -e; mkdir -p {SSH_DIR}; rm -f {SSH_DIR}/db_host_key; dropbearkey -t ed25519 -f {SSH_DIR}/db_host_key >/dev/null 2>&1"
    ))
    .assert_success();
    let mut server = sb
        .program([
            "dropbear",
            "-F",
            "-E",
            "-s",
            "-P",
            &format!("{}/dropbear.pid", SSH_DIR),
            "-p",
            &format!("127.0.0.1:{}", port),
            "-r",
            &format!("{}/db_host_key", SSH_DIR),
        ])
        .spawn();
    wait_port(sb, port, &mut server);
    server
}

/// Runs `command` as `user` through SSH on 127.0.0.1:`port` with the private key
/// `/run/sshtest/<key>` (OpenSSH's client, inside the sandbox).
pub fn ssh(sb: &Sandbox, port: u16, key: &str, user: &str, command: &str) -> Output {
    sb.program([
        "ssh",
        "-i",
        &format!("{}/{}", SSH_DIR, key),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
        "-p",
        &port.to_string(),
        &format!("{}@127.0.0.1", user),
        command,
    ])
    .timeout(Duration::from_secs(30))
    .output()
}

/// Asserts that `user` logs in with `key` and that `sudo -n` works there.
pub fn assert_login_and_sudo(sb: &Sandbox, port: u16, key: &str, user: &str) {
    let out = ssh(
        sb,
        port,
        key,
        user,
        "id -un && sudo -n true && sudo -n id -u",
    );
    assert!(
        out.success() && out.stdout_text() == format!("{}\n0\n", user),
        "login as {} with {} and sudo failed: {:?}\n--- log ---\n{}",
        user,
        key,
        out,
        sb.log_lines().join("\n")
    );
}

/// Asserts that `user` can no longer log in with `key` (the server refuses the key).
pub fn assert_login_refused(sb: &Sandbox, port: u16, key: &str, user: &str) {
    let out = ssh(sb, port, key, user, "true");
    assert_eq!(
        out.code(),
        Some(255),
        "login as {} with {} should be refused: {:?}",
        user,
        key,
        out
    );
    assert!(
        out.stderr_text().contains("Permission denied"),
        "expected a refused key, got {:?}",
        out
    );
}

/// A host path for an inside path under an overlaid directory, valid once the entry has
/// been written inside (it is then in the overlay's upper directory).
pub fn upper_path(sb: &Sandbox, inside: &str) -> PathBuf {
    sb.dir().join("upper").join(inside.trim_start_matches('/'))
}

/// Peak resident memory of a process in KiB (VmHWM).
pub fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid)).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM for {}", pid))
}
