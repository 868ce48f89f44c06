//! Tests of the integration-test sandbox itself (`tests/common`): that what happens inside
//! stays inside (users, files, addresses, clock, the console), that the binary reaches the
//! emulator at its default address, that logs, faults and admin changes come through, and
//! that nothing is left behind.
//!
//! Run: `cargo test --features emulator,test-hooks --test integration sandbox::`.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{self, ChangeKind, EntryType, Sandbox};

/// A small document with values no other test or sample uses.
const METADATA: &str = r#"{
  "instance": {
    "id": 4242424242,
    "hostname": "sandbox-test.c.sandbox-project.internal",
    "attributes": {"greeting": "hello from metadata"}
  },
  "project": {"projectId": "sandbox-project", "numericProjectId": 777, "attributes": {}}
}"#;

fn sandbox_builder() -> common::SandboxBuilder {
    Sandbox::builder().metadata(METADATA)
}

/// Runs a command on the host and returns its stdout.
fn host_output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .expect("host command");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Names and sizes of a host directory's entries, to compare before and after.
fn listing(dir: &str) -> Vec<(String, u64)> {
    let mut entries: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries
}

#[test]
fn useradd_inside_changes_the_sandbox_but_not_the_host() {
    let sb = sandbox_or_skip!(sandbox_builder());
    let host_files = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"];
    let before: Vec<Option<Vec<u8>>> = host_files.iter().map(|f| std::fs::read(f).ok()).collect();
    let home_before = listing("/home");
    assert!(
        sb.changes().is_empty(),
        "a fresh sandbox has no changes: {:?}",
        sb.changes()
    );

    sb.program(["useradd", "-m", "-s", "/bin/sh", "testuser"])
        .output()
        .assert_success();

    let user = sb
        .user("testuser")
        .expect("testuser is in the sandbox's /etc/passwd");
    assert_eq!(user.home, "/home/testuser");
    assert_eq!(user.shell, "/bin/sh");
    assert!(user.uid >= 1000, "{:?}", user);
    assert!(sb.group("testuser").is_some());
    assert!(sb.exists("/home/testuser"));

    let after: Vec<Option<Vec<u8>>> = host_files.iter().map(|f| std::fs::read(f).ok()).collect();
    assert!(before == after, "the host's account files changed");
    assert_eq!(listing("/home"), home_before, "the host's /home changed");
    assert!(!Path::new("/home/testuser").exists());

    let changes = sb.changes();
    let has = |path: &str, kind: ChangeKind, entry: EntryType| {
        changes
            .iter()
            .any(|c| c.path == path && c.kind == kind && c.entry == entry)
    };
    assert!(
        has("/etc/passwd", ChangeKind::Modified, EntryType::File),
        "{:#?}",
        changes
    );
    assert!(
        has("/home/testuser", ChangeKind::Added, EntryType::Dir),
        "{:#?}",
        changes
    );
    assert!(
        !changes.iter().any(|c| c.path == "/home"),
        "a parent copied up without change is not listed: {:#?}",
        changes
    );
}

#[test]
fn changes_list_additions_modifications_and_deletions_after_the_seed_files() {
    let sb = sandbox_or_skip!(sandbox_builder()
        .file(
            "/etc/default/instance_configs.cfg",
            "[Accounts]\ngroups = adm\n",
            0o644
        )
        .file("/var/lib/google/seeded", "x", 0o600));
    assert_eq!(
        sb.read_string("/etc/default/instance_configs.cfg")
            .as_deref(),
        Some("[Accounts]\ngroups = adm\n")
    );
    assert_eq!(
        sb.sh("stat -c %a /var/lib/google/seeded")
            .stdout_text()
            .trim(),
        "600"
    );
    assert!(
        sb.changes().is_empty(),
        "seed files are the starting state: {:?}",
        sb.changes()
    );

    sb.write(
        "/etc/default/instance_configs.cfg",
        "[Accounts]\ngroups = wheel\n",
    );
    sb.write_mode(
        "/root/.ssh/authorized_keys",
        "ssh-ed25519 AAAA test\n",
        0o600,
    );
    sb.sh("rm /etc/hostname /var/lib/google/seeded")
        .assert_success();

    let changes = sb.changes();
    let kind_of = |path: &str| changes.iter().find(|c| c.path == path).map(|c| c.kind);
    assert_eq!(
        kind_of("/etc/default/instance_configs.cfg"),
        Some(ChangeKind::Modified),
        "{:#?}",
        changes
    );
    assert_eq!(
        kind_of("/root/.ssh/authorized_keys"),
        Some(ChangeKind::Added),
        "{:#?}",
        changes
    );
    assert_eq!(
        kind_of("/root/.ssh"),
        Some(ChangeKind::Added),
        "{:#?}",
        changes
    );
    assert_eq!(
        kind_of("/var/lib/google/seeded"),
        Some(ChangeKind::Deleted),
        "{:#?}",
        changes
    );
    if Path::new("/etc/hostname").exists() {
        assert_eq!(
            kind_of("/etc/hostname"),
            Some(ChangeKind::Deleted),
            "{:#?}",
            changes
        );
        assert!(Path::new("/etc/hostname").exists(), "the host's file stays");
    }
    assert!(
        !Path::new("/root/.ssh/authorized_keys").exists() || {
            let host = std::fs::read_to_string("/root/.ssh/authorized_keys").unwrap_or_default();
            !host.contains("ssh-ed25519 AAAA test")
        }
    );
    assert!(
        !Path::new("/var/lib/google/seeded").exists(),
        "seed files are never on the host"
    );
}

#[test]
fn writes_outside_the_private_directories_are_refused() {
    let sb = sandbox_or_skip!();
    let outside = "/usr/local/gce-sandbox-escape-test";
    sb.sh(&format!("ln -s {} /etc/escape", outside))
        .assert_success();
    let through_symlink = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sb.write("/etc/escape", "x")
    }));
    assert!(
        through_symlink.is_err(),
        "a write through a symlink to the host's /usr was accepted"
    );
    let direct = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sb.write(outside, "x")));
    assert!(direct.is_err(), "a write to the host's /usr was accepted");
    assert!(!Path::new(outside).exists());
}

#[test]
fn tmp_is_private() {
    let sb = sandbox_or_skip!();
    sb.sh("echo inside > /tmp/gce-sandbox-private-tmp-test")
        .assert_success();
    assert_eq!(
        sb.read_string("/tmp/gce-sandbox-private-tmp-test")
            .as_deref(),
        Some("inside\n")
    );
    assert!(!Path::new("/tmp/gce-sandbox-private-tmp-test").exists());
    // The sandbox's own directory is reachable inside at the same path.
    assert!(sb.exists(sb.dir().join("admin.sock")));
}

#[test]
fn the_metadata_address_is_on_loopback_inside_only() {
    let sb = sandbox_or_skip!();
    let inside = sb
        .program(["ip", "-o", "addr", "show", "dev", "lo"])
        .output();
    inside.assert_success();
    assert!(
        inside.stdout_text().contains("169.254.169.254/32"),
        "{:?}",
        inside
    );
    assert!(!host_output("ip", &["-o", "addr"]).contains("169.254.169.254"));
    assert!(!host_output("ip", &["route", "show", "table", "local"]).contains("169.254.169.254"));
    let links = sb.program(["ls", "/sys/class/net"]).output();
    assert_eq!(
        links.stdout_text().trim(),
        "lo",
        "/sys shows the sandbox's network namespace"
    );
}

#[test]
fn nics_and_routes_made_inside_stay_inside() {
    let sb = sandbox_or_skip!();
    if !Path::new("/dev/net/tun").exists() {
        println!("skipped: the host has no /dev/net/tun");
        return;
    }
    let mac = "42:01:0a:99:00:02";
    sb.sh(&format!(
        "ip tuntap add eth0 mode tap && ip link set eth0 address {} up && \
         ip route add local 10.99.0.9/32 dev eth0 proto 66 table local",
        mac
    ))
    .assert_success();
    assert_eq!(
        sb.read_string("/sys/class/net/eth0/address").as_deref(),
        Some(format!("{}\n", mac).as_str())
    );
    let routes = sb
        .program(["ip", "route", "show", "table", "local", "proto", "66"])
        .output();
    assert!(routes.stdout_text().contains("10.99.0.9"), "{:?}", routes);
    assert!(!host_output("ip", &["-o", "link"]).contains(mac));
    assert!(!host_output("ip", &["route", "show", "table", "local"]).contains("10.99.0.9"));
}

#[test]
fn metadata_get_reaches_the_emulator_at_the_default_address() {
    let sb = sandbox_or_skip!(sandbox_builder());
    let out = sb.run(["google_metadata_get", "instance/id"]);
    out.assert_success();
    assert_eq!(out.stdout_text(), "4242424242");

    let emulator = sb.emulator();
    let settled = || emulator.requests().iter().all(|r| r.end_ms.is_some());
    assert!(sb.wait_until(Duration::from_secs(5), settled));
    let requests = emulator.requests();
    let get = requests
        .iter()
        .find(|r| r.path == "/computeMetadata/v1/instance/id")
        .unwrap_or_else(|| panic!("no request for instance/id in {:#?}", requests));
    assert!(
        get.flavor && get.status == 200 && get.method == "GET",
        "{:?}",
        get
    );

    let missing = sb.run(["google_metadata_get", "instance/attributes/absent"]);
    missing.assert_code(1);
    assert!(
        missing.stderr_text().contains("not defined"),
        "{:?}",
        missing
    );
}

#[test]
fn admin_patches_and_replacements_are_served_next() {
    let sb = sandbox_or_skip!(sandbox_builder());
    let emulator = sb.emulator();
    assert_eq!(
        sb.run(["google_metadata_get", "instance/attributes/greeting"])
            .stdout_text(),
        "hello from metadata"
    );
    emulator.patch(r#"{"instance":{"attributes":{"greeting":"patched"}}}"#);
    assert_eq!(
        sb.run(["google_metadata_get", "instance/attributes/greeting"])
            .stdout_text(),
        "patched"
    );
    assert_eq!(
        sb.run(["google_metadata_get", "instance/id"]).stdout_text(),
        "4242424242"
    );

    emulator.set_metadata(r#"{"instance":{"id":1},"project":{}}"#);
    assert_eq!(
        sb.run(["google_metadata_get", "instance/id"]).stdout_text(),
        "1"
    );
    sb.run(["google_metadata_get", "instance/attributes/greeting"])
        .assert_code(1);
    assert_eq!(
        emulator.metadata()["instance"]["id"],
        tinyjson::JsonValue::Number(1.0)
    );

    emulator.clear_requests();
    assert!(emulator.requests().is_empty());
}

#[test]
fn a_server_fault_makes_metadata_get_give_up_with_status_2() {
    let sb = sandbox_or_skip!(sandbox_builder());
    let emulator = sb.emulator();
    emulator.fault(r#"{"mode":"status","status":503,"count":100}"#);
    let failed = sb.run(["google_metadata_get", "--timeout", "1", "instance/id"]);
    failed.assert_code(2);
    // The emulator closes a record just after the answer is out: let the last one settle.
    assert!(sb.wait_until(Duration::from_secs(5), || emulator
        .requests()
        .iter()
        .all(|r| r.end_ms.is_some())));
    let requests = emulator.requests();
    assert!(requests.len() >= 2, "it retried: {:#?}", requests);
    assert!(
        requests
            .iter()
            .all(|r| r.status == 503 && r.fault.as_deref() == Some("status")),
        "{:#?}",
        requests
    );

    emulator.clear_faults();
    sb.run(["google_metadata_get", "instance/id"])
        .assert_success();
}

#[test]
fn syslog_datagrams_from_inside_are_captured_in_order() {
    let sb = sandbox_or_skip!();
    sb.program(["logger", "-t", "testtag", "hello from inside"])
        .output()
        .assert_success();
    let lines = sb.log_lines();
    assert!(
        lines.iter().any(|l| l == "testtag: hello from inside"),
        "{:?} (raw: {:?})",
        lines,
        sb.syslog()
    );
    assert!(sb
        .syslog()
        .iter()
        .any(|d| d.starts_with('<') && d.ends_with("testtag: hello from inside")));

    // A burst faster than the reader, far beyond the default queue of 10 datagrams (but
    // within the sender's socket buffer): nothing is dropped and the order is kept.
    let burst = r#"import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect("/dev/log")
s.setblocking(False)
for i in range(200):
    s.send(b"<14>Jan  2 03:04:05 burst: INFO line %d" % i)
"#;
    if sb.sh("command -v python3").success() {
        sb.program(["python3", "-c", burst])
            .output()
            .assert_success();
        let burst_lines: Vec<String> = sb
            .log_lines()
            .into_iter()
            .filter(|l| l.starts_with("burst: "))
            .collect();
        let expected: Vec<String> = (0..200)
            .map(|i| format!("burst: INFO line {}", i))
            .collect();
        assert_eq!(burst_lines, expected);
    }
}

#[test]
fn the_binary_logs_to_syslog_console_and_debug_stderr() {
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(
        r#"{"instance":{"id":5,"attributes":{"startup-script":"echo sandbox-script-output"}},"project":{"attributes":{}}}"#
    ));
    let out = sb.run([
        "google_metadata_script_runner",
        "--debug",
        "--script-type",
        "startup",
    ]);
    out.assert_success();
    let line = "startup-script: INFO startup-script: sandbox-script-output";
    assert!(
        sb.log_lines().iter().any(|l| l == line),
        "syslog: {:#?}",
        sb.log_lines()
    );
    assert!(
        sb.console_lines().iter().any(|l| l == line),
        "console: {:?}",
        sb.console()
    );
    assert!(
        out.stderr_text().lines().any(|l| l == line),
        "--debug copies lines to stderr: {:?}",
        out
    );
    let datagram = sb
        .syslog()
        .into_iter()
        .find(|d| d.ends_with(line))
        .expect("the datagram");
    assert!(
        datagram.starts_with("<30>"),
        "facility daemon, level info: {:?}",
        datagram
    );
}

#[test]
fn the_console_is_captured_and_the_host_console_is_untouched() {
    let sb = sandbox_or_skip!();
    let host_console = std::fs::metadata("/dev/console").ok();
    sb.sh("echo first line > /dev/console; echo second line > /dev/console")
        .assert_success();
    assert_eq!(sb.console(), "first line\nsecond line\n");
    if let Some(before) = host_console {
        let after = std::fs::metadata("/dev/console").expect("the host's /dev/console");
        assert!(after.file_type().is_char_device());
        assert_eq!(after.rdev(), before.rdev());
        assert_eq!(
            after.mtime(),
            before.mtime(),
            "the host's console was written"
        );
    }
}

#[test]
fn nothing_inside_can_set_the_clock_or_host_kernel_knobs() {
    let sb = sandbox_or_skip!();
    let before = std::time::SystemTime::now();
    let date = sb.sh("date -s @86400");
    assert!(!date.success(), "setting the clock worked: {:?}", date);
    assert!(std::time::SystemTime::now() >= before);
    let sysctl = sb.sh("echo 1 > /proc/sys/vm/overcommit_memory");
    assert!(
        !sysctl.success(),
        "a host-wide sysctl was writable: {:?}",
        sysctl
    );
    let sysfs = sb.sh("echo x > /sys/kernel/uevent_helper");
    assert!(!sysfs.success(), "sysfs was writable: {:?}", sysfs);
    sb.sh("echo 1 > /proc/sys/net/ipv4/ip_forward")
        .assert_success();
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .ok()
            .as_deref()
            .map(str::trim),
        Some("0")
    );
}

#[test]
fn commands_get_a_clean_environment_plus_their_own() {
    let sb = sandbox_or_skip!(Sandbox::builder().time_scale(0.5));
    let env = sb.program(["env"]).env("EXTRA", "1").output().stdout_text();
    let mut vars: Vec<&str> = env.lines().collect();
    vars.sort();
    assert_eq!(
        vars,
        [
            "EXTRA=1",
            "GCE_GUEST_TIME_SCALE=0.5",
            "HOME=/root",
            &format!("PATH={}", common::GUEST_PATH)
        ]
    );
    let scaled = sb
        .program(["printenv", "GCE_GUEST_TIME_SCALE"])
        .time_scale(0.25)
        .output();
    assert_eq!(scaled.stdout_text(), "0.25\n");
    let with_env = sb.run_env(["--version"], &[("GCE_METADATA_HOST", "127.0.0.1:1")]);
    with_env.assert_success();
    assert_eq!(
        sb.program(["cat"]).stdin("piped\n").output().stdout_text(),
        "piped\n"
    );
}

#[test]
fn daemons_can_be_signalled_and_waited_for_and_runs_time_out() {
    let sb = sandbox_or_skip!();
    let mut daemon = sb.program(["sleep", "100"]).spawn();
    assert!(daemon.is_running());
    assert!(
        daemon.ns_pid() > 1,
        "the daemon runs in the sandbox's pid namespace"
    );
    assert!(daemon.wait_timeout(Duration::from_millis(50)).is_none());
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait_timeout(Duration::from_secs(5))
        .expect("it ended on SIGTERM");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM)
    );

    let echo = sb
        .program(["sh", "-c", "echo out; echo err >&2; exit 7"])
        .spawn();
    let out = echo.wait_output(Duration::from_secs(10));
    assert_eq!(
        (
            out.code(),
            out.stdout_text().as_str(),
            out.stderr_text().as_str()
        ),
        (Some(7), "out\n", "err\n")
    );

    let started = std::time::Instant::now();
    let slow = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sb.program(["sleep", "30"])
            .timeout(Duration::from_millis(300))
            .output()
    }));
    assert!(slow.is_err(), "a command past its timeout fails the test");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !sb.sh("pgrep -x sleep").success(),
        "the timed-out command was killed"
    );
}

#[test]
fn two_sandboxes_do_not_see_each_other() {
    let a = sandbox_or_skip!(sandbox_builder());
    let b = sandbox_or_skip!(Sandbox::builder().metadata(r#"{"instance":{"id":2},"project":{}}"#));
    assert_eq!(
        a.run(["google_metadata_get", "instance/id"]).stdout_text(),
        "4242424242"
    );
    assert_eq!(
        b.run(["google_metadata_get", "instance/id"]).stdout_text(),
        "2"
    );

    a.program(["useradd", "onlyina"]).output().assert_success();
    a.sh("echo a > /tmp/only-in-a; hostname sandbox-a")
        .assert_success();
    let _sleeper = a.program(["sleep", "300"]).spawn();
    assert!(a.user("onlyina").is_some());
    assert!(b.user("onlyina").is_none());
    assert!(!b.exists("/tmp/only-in-a"));
    assert_ne!(
        b.program(["hostname"]).output().stdout_text().trim(),
        "sandbox-a"
    );
    assert!(!b.sh("pgrep -x sleep").success(), "b sees a's processes");

    a.emulator().patch(r#"{"instance":{"id":3}}"#);
    assert_eq!(
        b.run(["google_metadata_get", "instance/id"]).stdout_text(),
        "2"
    );
    b.program(["logger", "-t", "b", "only in b"])
        .output()
        .assert_success();
    assert!(
        b.log_lines().iter().any(|l| l == "b: only in b"),
        "{:?}",
        b.log_lines()
    );
    assert!(
        !a.log_lines().iter().any(|l| l.contains("only in b")),
        "{:?}",
        a.log_lines()
    );
}

#[test]
fn dropping_a_sandbox_leaves_no_process_or_file_behind() {
    let sb = sandbox_or_skip!();
    let daemon = sb.program(["sleep", "1000"]).spawn();
    let sleeper = daemon.pid();
    let pid1 = sb.pid1();
    let dir = sb.dir().to_path_buf();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(Path::new(&format!("/proc/{}", sleeper)).exists());
    assert!(
        !host_output("pgrep", &["-f", &name]).trim().is_empty(),
        "the emulator runs with the dir name"
    );
    drop(sb); // the daemon is left running: the sandbox's end must take it along

    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{}/stat", pid))
            .map(|s| {
                s.rsplit_once(") ")
                    .map(|(_, r)| r.starts_with('Z'))
                    .unwrap_or(true)
            })
            .unwrap_or(true)
    };
    assert!(gone(pid1), "PID 1 survived");
    assert!(gone(sleeper), "a process inside survived");
    assert_eq!(
        host_output("pgrep", &["-f", &name]).trim(),
        "",
        "processes mention {}",
        name
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&name),
        "a mount leaked to the host: {}",
        mounts
    );
    drop(daemon);
}

#[test]
fn syslog_headers_are_stripped_to_the_asserted_form() {
    use common::strip_syslog_header;
    assert_eq!(
        strip_syslog_header("<30>Nov 25 13:30:00 google-accounts: INFO x"),
        "google-accounts: INFO x"
    );
    assert_eq!(
        strip_syslog_header("<13>Jan  2 03:04:05 tag: hi"),
        "tag: hi"
    );
    assert_eq!(
        strip_syslog_header("Nov 25 13:30:00 name: WARNING w"),
        "name: WARNING w"
    );
    assert_eq!(strip_syslog_header("no header"), "no header");
    assert_eq!(
        strip_syslog_header("<x>Nov 25 13:30:00 a"),
        "<x>Nov 25 13:30:00 a"
    );
}
