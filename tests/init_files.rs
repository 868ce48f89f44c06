//! The init files of every init system, checked with the init systems' own tools where this
//! machine has them and run for real where a namespace allows:
//!
//! - lint: every program an init file starts (`ExecStart`, `exec`, `command`, inittab
//!   process, init-script and hook commands, udev and mdev programs) is one `make install
//!   INIT=...` put there, and is an applet of the binary (`--help` answers);
//! - systemd: `systemd-analyze verify` clean over the installed tree, the ordering rules;
//! - sysvinit: `sh -n` under dash and busybox ash, `checkbashisms`, the original LSB
//!   headers, `insserv`'s order (setup, daemons, then ssh, startup scripts last; shutdown
//!   scripts stopped in runlevels 0 and 6), and a daemon script starting, reporting and
//!   stopping a process through `start-stop-daemon` under dash and busybox ash;
//! - upstart (no `init-checkconf` in Debian): every stanza parsed, the original stanzas;
//! - OpenRC: `openrc-run ... depend`, and `supervise-daemon` starting, respawning and
//!   stopping the daemon in a private namespace;
//! - busybox init as PID 1 of a pid namespace: setup once, the daemon respawned, the
//!   shutdown scripts on the `shutdown` action;
//! - initramfs hooks (dracut, initramfs-tools, busybox) run their one command;
//! - disk names: the udev rules under `udevadm test` on a fake sysfs (PD-NVMe through
//!   `google_nvme_id`, local SSD), and busybox `mdev` with the mdev lines making and
//!   removing `/dev/disk/by-id/google-*`.
//!
//! Run as root: `cargo test --features emulator,test-hooks --test integration init_files::`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Scratch;
use crate::packaging_support::*;

const INITS: [&str; 5] = ["systemd", "sysvinit", "upstart", "openrc", "busybox"];

fn init_dir(system: &str) -> PathBuf {
    repo().join("init").join(system)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {}", path.display(), e))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {}", dir.display(), e))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn installed(dest: &Path, init: &str) {
    make(
        "install",
        &test_binary(),
        &[("DESTDIR", &dest.display().to_string()), ("INIT", init)],
    );
}

/// The programs an installed tree's init files start, as (file, program path).
fn programs_started(dest: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut push = |file: &Path, program: &str| {
        let rel = file
            .strip_prefix(dest)
            .unwrap_or(file)
            .display()
            .to_string();
        let program = if program.contains('/') || SYSTEM_PROGRAMS.contains(&program) {
            program.to_string()
        } else {
            // A bare name is found in PATH: the hooks run in an initramfs with /usr/bin.
            format!("/usr/bin/{}", program)
        };
        out.push((rel, program));
    };
    for file in tree(dest)
        .iter()
        .filter(|p| !p.ends_with('/') && !p.contains(" -> "))
        .map(|p| dest.join(p))
    {
        let rel = file
            .strip_prefix(dest)
            .unwrap_or(&file)
            .display()
            .to_string();
        if rel.starts_with("usr/bin/") || rel.starts_with("usr/share/doc") {
            continue;
        }
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            // systemd
            for key in ["ExecStart=", "ExecStop=", "ExecReload=", "ExecStartPre="] {
                if let Some(cmd) = line.strip_prefix(key) {
                    let cmd = cmd.trim_start_matches(['-', '@', '+', '!']);
                    push(&file, cmd.split_whitespace().next().unwrap_or_default());
                }
            }
            // upstart
            if let Some(cmd) = line.strip_prefix("exec ") {
                push(&file, cmd.split_whitespace().next().unwrap_or_default());
            }
            // OpenRC: command="${command:-/usr/bin/x}"
            if let Some(value) = line.strip_prefix("command=") {
                let value = value.trim_matches('"');
                let value = value
                    .strip_prefix("${command:-")
                    .and_then(|v| v.strip_suffix('}'))
                    .unwrap_or(value);
                push(&file, value);
            }
            // sysvinit: DAEMON= / PROGRAM=; hooks: GCE_DISK_EXPAND=
            for key in ["DAEMON=", "PROGRAM=", "GCE_DISK_EXPAND="] {
                if let Some(value) = line.strip_prefix(key) {
                    let value = value.trim_matches('"');
                    let value = value
                        .strip_prefix("${GCE_DISK_EXPAND:-")
                        .and_then(|v| v.strip_suffix('}'))
                        .unwrap_or(value);
                    push(&file, value.split_whitespace().next().unwrap_or_default());
                }
            }
            // busybox inittab: id:runlevels:action:process
            if rel.ends_with("inittab") {
                if let Some(process) = line.splitn(4, ':').nth(3) {
                    push(&file, process.split_whitespace().next().unwrap_or_default());
                }
            }
            // mdev: *command; udev: IMPORT{program}="name args"
            if rel.ends_with("mdev.conf") {
                if let Some(cmd) = line.split_once(" *").map(|(_, c)| c) {
                    push(&file, cmd.split_whitespace().next().unwrap_or_default());
                }
            }
            if let Some((_, rest)) = line.split_once("IMPORT{program}=\"") {
                let program = rest.split_whitespace().next().unwrap_or_default();
                let resolved = if program.starts_with('/') {
                    program.to_string()
                } else {
                    // udev looks relative names up in its own directory.
                    let udev = file.parent().and_then(Path::parent).unwrap_or(dest);
                    format!(
                        "/{}/{}",
                        udev.strip_prefix(dest).unwrap_or(udev).display(),
                        program
                    )
                };
                push(&file, &resolved);
            }
            // Any other /usr/bin/google_* a script runs directly.
            for word in line.split(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                if word.starts_with("/usr/bin/google_") {
                    push(&file, word);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Follows `program` (an absolute path on the image) through links inside `dest`.
fn resolve_in(dest: &Path, program: &str) -> Option<PathBuf> {
    let mut path = dest.join(program.trim_start_matches('/'));
    for _ in 0..10 {
        match fs::read_link(&path) {
            Ok(target) if target.is_absolute() => {
                path = dest.join(target.strip_prefix("/").unwrap_or(&target))
            }
            Ok(target) => path = path.parent()?.join(target),
            Err(_) => return path.exists().then_some(path),
        }
    }
    None
}

/// Programs an init file may start that the system itself provides, not `make install`.
const SYSTEM_PROGRAMS: &[&str] = &["/bin/true", "/bin/kill", "/bin/sh", "/usr/lib/udev/scsi_id"];

#[test]
fn every_program_an_init_file_starts_is_installed_by_make_install() {
    let scratch = Scratch::new("lint");
    for init in INITS {
        let dest = scratch.join(init);
        installed(&dest, init);
        let started = programs_started(&dest);
        let files: BTreeSet<&str> = started.iter().map(|(f, _)| f.as_str()).collect();
        println!(
            "INIT={}: {} commands in {} files",
            init,
            started.len(),
            files.len()
        );
        // Every init file of this system was understood (each starts something).
        let expected_files = match init {
            "systemd" => files_in(&init_dir("systemd"))
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "service"))
                .count(),
            "sysvinit" | "openrc" => files_in(&init_dir(init))
                .iter()
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("google-"))
                })
                .count(),
            "upstart" => files_in(&init_dir("upstart"))
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .count(),
            _ => files_in(&init_dir("busybox/init.d")).len() + 1, // + inittab
        };
        let init_files = files
            .iter()
            .filter(|f| {
                f.starts_with("usr/lib/systemd/system/")
                    || f.starts_with("etc/init.d/")
                    || f.starts_with("etc/init/")
                    || f.ends_with("inittab")
            })
            .count();
        assert!(
            init_files >= expected_files,
            "INIT={}: only {} of {} init files start a program: {:#?}",
            init,
            init_files,
            expected_files,
            started
        );
        for (file, program) in &started {
            if SYSTEM_PROGRAMS.contains(&program.as_str()) {
                assert!(Path::new(program).exists(), "{} on this system", program);
                continue;
            }
            let path = resolve_in(&dest, program);
            assert!(
                path.as_ref().is_some_and(|p| p.is_file()),
                "INIT={}: {} starts {}, which make install did not put there",
                init,
                file,
                program
            );
            let path = path.unwrap_or_default();
            assert_eq!(
                path.file_name().unwrap_or_default(),
                "gce-guest",
                "{}",
                program
            );
            let applet = Path::new(program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let help = Command::new(&path)
                .arg(&applet)
                .arg("--help")
                .output()
                .expect("run the installed program");
            assert!(
                help.status.success(),
                "INIT={}: {} ({}) does not answer --help: {}",
                init,
                program,
                file,
                String::from_utf8_lossy(&help.stderr)
            );
            assert!(
                String::from_utf8_lossy(&help.stdout).contains(&applet),
                "{} is not the applet {}",
                program,
                applet
            );
        }
    }
}

#[test]
fn systemd_units_verify_clean_and_keep_the_ordering() {
    if !(have_tool("systemd-analyze") && have_root()) {
        return;
    }
    let scratch = Scratch::new("systemd");
    let dest = scratch.join("dest");
    installed(&dest, "systemd");
    // The installed /usr over the host's, so ExecStart programs resolve as on an image.
    let verify = Command::new("unshare")
        .arg("--mount")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "mount -t overlay overlay -o lowerdir={}/usr:/usr /usr && \
             systemd-analyze verify --man=no /usr/lib/systemd/system/google-*.service",
            dest.display()
        ))
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "verify:\n{}",
        said
    );

    let unit = |name: &str| read(&init_dir("systemd").join(name));
    let setup = unit("google-instance-setup.service");
    assert!(setup.contains("\nType=notify\n"));
    assert!(setup.contains("Before=ssh.service sshd.service dropbear.service"));
    assert!(setup.contains("After=local-fs.target network-online.target"));
    assert!(unit("google-accounts-daemon.service").contains("After=nss-user-lookup.target"));
    assert!(unit("google-guest-daemon.service").contains("nss-user-lookup.target"));
    assert!(unit("google-startup-scripts.service").contains("After=google-instance-setup.service"));
    let shutdown = unit("google-shutdown-scripts.service");
    assert!(
        shutdown.contains("ExecStop=/usr/bin/google_metadata_script_runner --script-type shutdown")
    );
    assert!(shutdown.contains("TimeoutStopSec=0"));
    // The partition was grown by the initramfs hook, or is grown here, then the file system
    // once / is mounted: after local-fs.target, one run.
    let expand = unit("google-disk-expand.service");
    assert!(expand.contains("\nType=oneshot\n"));
    assert!(expand.contains("\nAfter=local-fs.target\n"));
    assert!(expand.contains("\nExecStart=/usr/bin/google_disk_expand\n"));
    assert!(!expand.contains("Before=local-fs"));
    for file in files_in(&init_dir("systemd")) {
        let text = read(&file);
        assert!(
            !text.lines().any(|l| l.starts_with("Requires=")),
            "{}: Requires= on a unit an image may lack",
            file.display()
        );
    }
    // The preset names only units that exist; the combined daemon is the default.
    let preset = unit("90-gce-guest.preset");
    for line in preset
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            init_dir("systemd").join(name).is_file(),
            "preset names {}",
            name
        );
    }
    assert!(preset.contains("enable google-guest-daemon.service"));
    assert!(preset.contains("disable google-accounts-daemon.service"));
}

/// Every shell script of init/ and packaging/.
fn shell_scripts() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [
        "init/sysvinit",
        "init/openrc",
        "init/busybox/init.d",
        "init/dracut/50gce-disk-expand",
        "init/initramfs-tools/hooks",
        "init/initramfs-tools/scripts/local-premount",
        "packaging",
        "packaging/deb",
        "packaging/rpm",
        "packaging/tarball",
    ] {
        for file in files_in(&repo().join(dir)) {
            let text = read(&file);
            if text.starts_with("#!/bin/sh") || text.starts_with("#!/sbin/openrc-run") {
                out.push(file);
            }
        }
    }
    out.push(repo().join("init/busybox/initramfs-disk-expand.sh"));
    out
}

#[test]
fn shell_scripts_parse_under_dash_and_busybox_ash_and_have_no_bashisms() {
    if !(have_tool("dash") && have_tool("busybox") && have_tool("checkbashisms")) {
        return;
    }
    let scripts = shell_scripts();
    assert!(scripts.len() >= 25, "found only {:?}", scripts);
    for script in &scripts {
        for shell in [vec!["dash"], vec!["busybox", "sh"]] {
            run(Command::new(shell[0])
                .args(&shell[1..])
                .arg("-n")
                .arg(script));
        }
    }
    let out = Command::new("checkbashisms")
        .arg("--force")
        .arg("--extra")
        .args(&scripts)
        .output()
        .expect("run checkbashisms");
    assert!(
        out.status.success(),
        "checkbashisms:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{} scripts checked", scripts.len());
}

/// The LSB header of an init script as (field, value).
fn lsb_header(text: &str) -> Vec<(String, String)> {
    let start = text.find("### BEGIN INIT INFO").expect("LSB header");
    let end = text.find("### END INIT INFO").expect("LSB header end");
    text[start..end]
        .lines()
        .skip(1)
        .filter_map(|l| l.strip_prefix("# "))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(header: &'a [(String, String)], name: &str) -> &'a str {
    header
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

#[test]
fn sysvinit_headers_are_the_originals_and_insserv_orders_them() {
    let dir = init_dir("sysvinit");
    let header = |name: &str| lsb_header(&read(&dir.join(name)));
    for name in [
        "google-instance-setup",
        "google-guest-daemon",
        "google-accounts-daemon",
    ] {
        assert!(field(&header(name), "X-Start-Before")
            .split(' ')
            .any(|s| s == "ssh"));
    }
    for name in [
        "google-guest-daemon",
        "google-accounts-daemon",
        "google-clock-skew-daemon",
        "google-network-daemon",
        "google-startup-scripts",
    ] {
        assert!(
            field(&header(name), "Required-Start").contains("$google_instance_setup"),
            "{}",
            name
        );
    }
    let shutdown = header("google-shutdown-scripts");
    assert_eq!(field(&shutdown, "Default-Stop"), "0 6");
    for name in ["google-guest-daemon", "google-accounts-daemon"] {
        let text = read(&dir.join(name));
        assert!(text.contains("--retry=TERM/30/KILL/5"));
        assert!(text.contains("--make-pidfile --pidfile"));
    }

    if !have_tool("insserv") {
        return;
    }
    let scratch = Scratch::new("insserv");
    let initd = scratch.join("init.d");
    fs::create_dir_all(&initd).expect("init.d");
    for file in files_in(&dir).iter().filter(|f| {
        f.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("google-"))
    }) {
        fs::copy(file, initd.join(file.file_name().unwrap_or_default())).expect("copy");
    }
    // Debian's ssh script as it declares itself.
    write_executable(
        &initd.join("ssh"),
        "#!/bin/sh\n### BEGIN INIT INFO\n# Provides:          sshd\n# Required-Start:    $remote_fs $syslog\n\
         # Required-Stop:     $remote_fs $syslog\n# Default-Start:     2 3 4 5\n# Default-Stop:\n\
         # Short-Description: OpenBSD Secure Shell server\n### END INIT INFO\n",
    );
    let config = scratch.join("insserv.conf");
    let facilities = "$local_fs +mountall\n$network +networking\n$named +named $network\n\
                      $remote_fs $local_fs +mountnfs\n$syslog +rsyslog\n";
    fs::write(
        &config,
        format!("{}{}", facilities, read(&dir.join("insserv.conf.d-google"))),
    )
    .expect("insserv.conf");
    let out = run(Command::new("insserv")
        .arg("-f")
        .arg("-n")
        .arg("-s")
        .arg("-p")
        .arg(&initd)
        .arg("-o")
        .arg(scratch.join("overrides"))
        .arg("-c")
        .arg(&config)
        .stderr(Stdio::null()));
    let order = String::from_utf8_lossy(&out.stdout);
    println!("{}", order);
    let start = |name: &str| -> u32 {
        order
            .lines()
            .find(|l| l.starts_with("S:") && l.ends_with(&format!(":{}", name)))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{} not started:\n{}", name, order))
    };
    assert!(start("google-instance-setup") < start("google-guest-daemon"));
    assert!(start("google-guest-daemon") < start("ssh"));
    assert!(start("google-instance-setup") < start("ssh"));
    assert!(start("ssh") < start("google-startup-scripts"));
    assert!(order
        .lines()
        .any(|l| l == "K:01:0 6:google-shutdown-scripts"));
    assert!(order
        .lines()
        .any(|l| l.starts_with("S:") && l.ends_with(":S:google-disk-expand")));
}

/// A copy of an init script whose paths point into `root`.
fn rooted_script(script: &Path, root: &Path) -> PathBuf {
    let r = root.display().to_string();
    let text = read(script)
        .replace("/usr/bin/", &format!("{}/usr/bin/", r))
        .replace("/var/run/", &format!("{}/run/", r))
        .replace("/etc/default/", &format!("{}/etc/default/", r));
    let out = root.join(script.file_name().unwrap_or_default());
    write_executable(&out, &text);
    out
}

fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{}/stat", pid))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn sysvinit_daemon_script_starts_reports_and_stops_under_dash_and_busybox_ash() {
    if !(have_tool("dash") && have_tool("busybox") && have_tool("start-stop-daemon")) {
        return;
    }
    for shell in ["dash", "busybox"] {
        let scratch = Scratch::new(&format!("sysv-{}", shell));
        let root: &Path = &scratch;
        for d in ["usr/bin", "run", "etc/default"] {
            fs::create_dir_all(root.join(d)).expect("dir");
        }
        // The daemon: a copy of sleep, kept running by its arguments from /etc/default.
        let sleep = run(Command::new("sh").arg("-c").arg("command -v sleep"));
        let daemon = root.join("usr/bin/google_guest_daemon");
        fs::copy(String::from_utf8_lossy(&sleep.stdout).trim(), &daemon).expect("daemon");
        fs::write(
            root.join("etc/default/google-guest-daemon"),
            "DAEMON_ARGS=600\n",
        )
        .expect("defaults");
        let script = rooted_script(&init_dir("sysvinit").join("google-guest-daemon"), root);
        let call = |action: &str| {
            let mut cmd = Command::new(shell);
            if shell == "busybox" {
                cmd.arg("sh");
            }
            cmd.arg(&script)
                .arg(action)
                .output()
                .expect("run init script")
        };
        let pidfile = root.join("run/google-guest-daemon.pid");

        assert!(call("start").status.success());
        let pid: u32 = read(&pidfile).trim().parse().expect("pid in the pid file");
        assert!(running(pid));
        // start-stop-daemon writes the pid file, then the child execs the daemon.
        let exe = || fs::read_link(format!("/proc/{}/exe", pid)).ok();
        let deadline = Instant::now() + Duration::from_secs(10);
        while exe().as_ref() != Some(&daemon) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            fs::read_link(format!("/proc/{}/exe", pid)).ok(),
            Some(daemon.clone()),
            "{}: the pid file names the daemon",
            shell
        );
        assert_eq!(call("status").status.code(), Some(0));
        assert!(call("start").status.success(), "starting twice is fine");
        assert_eq!(
            read(&pidfile).trim(),
            pid.to_string(),
            "still the one daemon"
        );
        assert!(call("stop").status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!running(pid), "{}: stopped", shell);
        assert!(!pidfile.exists());
        assert_eq!(call("status").status.code(), Some(3));
        assert!(
            call("stop").status.success(),
            "stopping a stopped daemon is fine"
        );
        assert_eq!(call("bogus").status.code(), Some(3));
    }
}

/// The stanzas upstart 1.x knows (init(5)).
const UPSTART_STANZAS: &[&str] = &[
    "author",
    "chdir",
    "chroot",
    "console",
    "description",
    "emits",
    "end",
    "env",
    "exec",
    "expect",
    "export",
    "instance",
    "kill",
    "limit",
    "manual",
    "nice",
    "normal",
    "oom",
    "post-start",
    "post-stop",
    "pre-start",
    "pre-stop",
    "respawn",
    "script",
    "setgid",
    "setuid",
    "start",
    "stop",
    "task",
    "umask",
    "usage",
    "version",
];

#[test]
fn upstart_jobs_parse_and_keep_the_original_stanzas() {
    let dir = init_dir("upstart");
    let mut jobs = BTreeSet::new();
    for file in files_in(&dir) {
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = read(&file);
        let mut in_script = false;
        let mut execs = 0;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if in_script {
                in_script = line != "end script";
                continue;
            }
            let word = line.split_whitespace().next().unwrap_or_default();
            assert!(
                UPSTART_STANZAS.contains(&word),
                "{}: unknown stanza {:?}",
                file.display(),
                line
            );
            match word {
                "exec" => execs += 1,
                "script" => {
                    in_script = true;
                    execs += 1
                }
                "start" | "stop" => assert!(
                    line.starts_with("start on ") || line.starts_with("stop on "),
                    "{}",
                    line
                ),
                "oom" => assert!(line.starts_with("oom score ")),
                _ => {}
            }
        }
        assert!(!in_script, "{}: script without end script", file.display());
        if file.extension().is_some_and(|e| e == "conf") {
            assert_eq!(execs, 1, "{}: one exec or script", file.display());
            jobs.insert(name);
        } else {
            assert_eq!(text.lines().last(), Some("manual"), "{}", file.display());
            assert!(dir.join(format!("{}.conf", name)).is_file());
        }
    }
    let job = |name: &str| read(&dir.join(format!("{}.conf", name)));
    let setup = job("google-instance-setup");
    assert!(setup.contains("\ntask\n") && setup.contains("start on started rsyslog"));
    for daemon in [
        "google-guest-daemon",
        "google-accounts-daemon",
        "google-clock-skew-daemon",
        "google-network-daemon",
    ] {
        let text = job(daemon);
        assert!(text.contains("\nrespawn\n"), "{}", daemon);
        assert!(
            text.contains("start on stopped google-instance-setup"),
            "{}",
            daemon
        );
    }
    assert!(job("google-shutdown-scripts").contains("start on starting rc RUNLEVEL=[06]"));
    assert!(job("google-startup-scripts").contains("start on stopped google-instance-setup"));
    // Jobs named in events exist.
    for name in &jobs {
        for line in job(name).lines().filter(|l| l.starts_with("start on")) {
            for word in line.split_whitespace().filter(|w| w.starts_with("google-")) {
                assert!(
                    jobs.contains(word),
                    "{} waits for unknown job {}",
                    name,
                    word
                );
            }
        }
    }
    // Without an override, only the combined daemon starts.
    let overridden: Vec<_> = files_in(&dir)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "override"))
        .collect();
    assert_eq!(overridden.len(), 3);
}

/// OpenRC's state directory, as `openrc sysinit` makes it.
const OPENRC_STATE: &str = "mkdir -p /run/openrc && cd /run/openrc && \
     mkdir daemons exclusive failed hotplugged inactive options scheduled started starting \
     stopping tmp wasinactive && touch softlevel";

#[test]
fn openrc_scripts_declare_dependencies_and_supervise_the_daemon() {
    if !(have_tool("openrc-run") && have_tool("supervise-daemon") && have_root()) {
        return;
    }
    let dir = init_dir("openrc");
    for file in files_in(&dir) {
        let out = run(Command::new("openrc-run").arg(&file).arg("depend"));
        let deps = String::from_utf8_lossy(&out.stdout).to_string();
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        println!("{}: {}", name, deps.replace('\n', "; "));
        match name.as_str() {
            "google-instance-setup" => {
                assert!(deps.contains("need net") && deps.contains("before sshd dropbear"))
            }
            "google-disk-expand" => {
                assert!(deps.contains("before localmount") && deps.contains("after root"))
            }
            _ => assert!(
                deps.contains("need net") && deps.contains("after google-instance-setup"),
                "{}: {}",
                name,
                deps
            ),
        }
    }

    // The guest daemon under supervise-daemon: started, respawned after it dies, stopped.
    let scratch = Scratch::new("openrc");
    let root: &Path = &scratch;
    fs::create_dir_all(root.join("init.d")).expect("init.d");
    fs::create_dir_all(root.join("conf.d")).expect("conf.d");
    let sleep = run(Command::new("sh").arg("-c").arg("command -v sleep"));
    let fake = root.join("google_guest_daemon");
    fs::copy(String::from_utf8_lossy(&sleep.stdout).trim(), &fake).expect("fake daemon");
    fs::copy(
        dir.join("google-guest-daemon"),
        root.join("init.d/google-guest-daemon"),
    )
    .expect("script");
    fs::write(
        root.join("conf.d/google-guest-daemon"),
        format!(
            "command={}\ncommand_args=600\nrespawn_delay=1\n",
            fake.display()
        ),
    )
    .expect("conf.d");
    let script = root.join("init.d/google-guest-daemon");
    let s = script.display();
    let f = fake.display();
    let out = run(Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--mount-proc", "sh", "-c"])
        .arg(format!(
            "set -e; mount -t tmpfs run /run; {OPENRC_STATE}; \
             {s} --nodeps start; sleep 1; first=$(pgrep -xf '{f} 600'); echo first=$first; \
             kill $first; i=0; while [ $i -lt 50 ]; do \
               second=$(pgrep -xf '{f} 600' || true); \
               [ -n \"$second\" ] && [ \"$second\" != \"$first\" ] && break; \
               sleep 0.1; i=$((i+1)); done; echo second=$second; \
             {s} status; {s} --nodeps stop; \
             if pgrep -xf '{f} 600'; then echo left=yes; else echo left=no; fi"
        )));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{}", text);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{}=", key)))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert!(!value("first").is_empty(), "started:\n{}", text);
    assert!(
        !value("second").is_empty() && value("second") != value("first"),
        "respawned:\n{}",
        text
    );
    assert_eq!(value("left"), "no", "stopped:\n{}", text);
}

/// Stub programs that append their name and arguments to `LOG`.
fn stub_programs(bin: &Path, log: &Path, names: &[&str]) {
    for name in names {
        write_executable(
            &bin.join(name),
            &format!("#!/bin/sh\necho \"{} $*\" >> {}\n", name, log.display()),
        );
    }
}

#[test]
fn busybox_init_runs_setup_once_respawns_the_daemon_and_runs_shutdown_scripts() {
    if !(have_tool("busybox") && have_root()) {
        return;
    }
    let scratch = Scratch::new("bbinit");
    let root: &Path = &scratch;
    let bin = root.join("bin");
    let etc = root.join("etc");
    let log = root.join("log");
    stub_programs(
        &bin,
        &log,
        &[
            "google_instance_setup",
            "google_disk_expand",
            "google_metadata_script_runner",
        ],
    );
    // The daemon runs a second, then exits: init must start it again.
    write_executable(
        &bin.join("google_guest_daemon"),
        &format!(
            "#!/bin/sh\necho google_guest_daemon >> {}\nsleep 1\n",
            log.display()
        ),
    );
    let to_stubs = |text: String| text.replace("/usr/bin/", &format!("{}/", bin.display()));
    for file in files_in(&init_dir("busybox/init.d")) {
        let name = file.file_name().unwrap_or_default();
        write_executable(&etc.join("init.d").join(name), &to_stubs(read(&file)));
    }
    write_executable(
        &etc.join("init.d/rcS"),
        "#!/bin/sh\nfor i in /etc/init.d/S??*; do busybox sh \"$i\" start; done\n",
    );
    fs::write(
        etc.join("inittab"),
        format!(
            "::sysinit:/etc/init.d/rcS\n{}",
            to_stubs(read(&init_dir("busybox/inittab")))
        ),
    )
    .expect("inittab");

    let mut init = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--mount-proc", "sh", "-c"])
        .arg(format!(
            "mount --bind {} /etc && CONSOLE=/dev/null exec {} init",
            etc.display(),
            busybox().display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start busybox init");
    let lines = || -> Vec<String> {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines()
        .iter()
        .filter(|l| *l == "google_guest_daemon")
        .count()
        < 2
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    // busybox init is the child of unshare; SIGTERM makes it run the shutdown actions.
    let children = fs::read_to_string(format!("/proc/{}/task/{}/children", init.id(), init.id()))
        .unwrap_or_default();
    let pid: i32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert!(pid > 0, "busybox init is running");
    // SAFETY: kill(2) on the pid of the busybox init this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while init.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = init.kill();
    let _ = init.wait();
    let lines = lines();
    println!("{:#?}", lines);
    let at = |wanted: &str| {
        lines
            .iter()
            .position(|l| l == wanted)
            .unwrap_or_else(|| panic!("{} never ran: {:#?}", wanted, lines))
    };
    assert_eq!(
        lines
            .iter()
            .filter(|l| *l == "google_instance_setup")
            .count(),
        1
    );
    assert!(at("google_disk_expand") < at("google_instance_setup"));
    assert!(at("google_instance_setup") < at("google_guest_daemon"));
    at("google_metadata_script_runner --script-type startup");
    assert!(
        lines.iter().filter(|l| *l == "google_guest_daemon").count() >= 2,
        "respawned"
    );
    assert!(at("google_metadata_script_runner --script-type shutdown") > at("google_guest_daemon"));
}

#[test]
fn initramfs_hooks_run_the_disk_expand_command() {
    if !have_tool("dash") {
        return;
    }
    let scratch = Scratch::new("initramfs");
    let root: &Path = &scratch;
    let log = root.join("log");
    let bin = root.join("usr/bin");
    stub_programs(
        &bin,
        &log,
        &["google_disk_expand", "gce-guest", "mdev", "udevadm"],
    );
    let r = root.display().to_string();
    let rewrite = |text: String| {
        text.replace("/usr/bin/", &format!("{}/usr/bin/", r))
            .replace("/scripts/functions", &format!("{}/functions", r))
    };
    fs::write(
        root.join("functions"),
        format!(
            "log_success_msg() {{ echo \"ok $*\" >> {l}; }}\nlog_warning_msg() {{ echo \"warn $*\" >> {l}; }}\n",
            l = log.display()
        ),
    )
    .expect("functions");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // initramfs-tools local-premount
    let premount = root.join("premount");
    write_executable(
        &premount,
        &rewrite(read(&repo().join(
            "init/initramfs-tools/scripts/local-premount/gce-disk-expand",
        ))),
    );
    let prereqs = run(Command::new("dash").arg(&premount).arg("prereqs"));
    assert!(String::from_utf8_lossy(&prereqs.stdout).trim().is_empty());
    assert!(!log.exists(), "prereqs runs nothing");
    run(Command::new("dash").arg(&premount).env("PATH", &path));
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("google_disk_expand --partition-only\n")
            && text.contains("ok gce-disk-expand: done"),
        "{}",
        text
    );
    let _ = fs::remove_file(&log);

    // dracut pre-mount hook (sourced by dracut's shell, which has `warn`)
    let hook = root.join("hook");
    fs::write(
        &hook,
        format!(
            "warn() {{ echo \"warn $*\" >> {}; }}\n. {}\n",
            log.display(),
            repo()
                .join("init/dracut/50gce-disk-expand/gce-disk-expand.sh")
                .display()
        ),
    )
    .expect("hook");
    run(Command::new("dash").arg(&hook).env("PATH", &path));
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("google_disk_expand"), "{}", text);
    assert!(
        text.contains("google_disk_expand --partition-only\n"),
        "{}",
        text
    );
    let _ = fs::remove_file(&log);
    let setup = read(&repo().join("init/dracut/50gce-disk-expand/module-setup.sh"));
    assert!(setup.contains("inst_hook pre-mount") && setup.contains("check()"));

    // busybox /init snippet
    let snippet = root.join("snippet");
    fs::write(
        &snippet,
        format!(". {}\ngce_disk_expand\n", root.join("snippet.sh").display()),
    )
    .expect("snippet");
    fs::write(
        root.join("snippet.sh"),
        rewrite(read(&repo().join("init/busybox/initramfs-disk-expand.sh"))),
    )
    .expect("snippet.sh");
    run(Command::new("dash").arg(&snippet).env("PATH", &path));
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("google_disk_expand --partition-only\n") && text.contains("mdev -s"),
        "{}",
        text
    );
}

/// A fake sysfs: a SCSI persistent disk with a partition, a virtio disk, a local NVMe SSD
/// and a PD-NVMe namespace, with relative links so it works wherever it is mounted.
fn fake_sysfs(sys: &Path) {
    let put = |rel: &str, content: &[u8]| {
        let path = sys.join(rel);
        fs::create_dir_all(path.parent().unwrap_or(sys)).expect("sysfs dir");
        fs::write(path, content).expect("sysfs file");
    };
    let link = |target: &str, rel: &str| {
        let path = sys.join(rel);
        fs::create_dir_all(path.parent().unwrap_or(sys)).expect("sysfs dir");
        symlink(target, path).expect("sysfs link");
    };
    let uevent = |major: u32, minor: u32, name: &str, kind: &str| {
        format!(
            "MAJOR={}\nMINOR={}\nDEVNAME={}\nDEVTYPE={}\n",
            major, minor, name, kind
        )
    };
    // SCSI: vpd_pg80 = page code 0x80, length, serial.
    let mut vpd = vec![0u8, 0x80, 0, 17];
    vpd.extend_from_slice(b"persistent-disk-1");
    let scsi = "devices/fake/0:0:1:0";
    put(&format!("{}/vpd_pg80", scsi), &vpd);
    put(
        &format!("{}/block/sda/uevent", scsi),
        uevent(8, 0, "sda", "disk").as_bytes(),
    );
    put(&format!("{}/block/sda/dev", scsi), b"8:0\n");
    link("../..", &format!("{}/block/sda/device", scsi));
    put(
        &format!("{}/block/sda/sda1/uevent", scsi),
        uevent(8, 1, "sda1", "partition").as_bytes(),
    );
    put(&format!("{}/block/sda/sda1/dev", scsi), b"8:1\n");
    put(&format!("{}/block/sda/sda1/partition", scsi), b"1\n");
    put(
        "devices/fake/virtio1/block/vda/uevent",
        uevent(254, 0, "vda", "disk").as_bytes(),
    );
    put("devices/fake/virtio1/block/vda/dev", b"254:0\n");
    put("devices/fake/virtio1/block/vda/serial", b"data-disk-2");
    for (ctrl, ns, model, nsid, minor) in [
        ("nvme1", "nvme1n1", "nvme_card", "1", 2),
        ("nvme0", "nvme0n2", "nvme_card-pd", "2", 1),
    ] {
        let dir = format!("devices/fake/nvme/{}", ctrl);
        put(
            &format!("{}/model", dir),
            format!("{:<40}\n", model).as_bytes(),
        );
        put(
            &format!("{}/uevent", dir),
            format!("MAJOR=241\nMINOR={}\nDEVNAME={}\n", minor, ctrl).as_bytes(),
        );
        link("../../../../class/nvme", &format!("{}/subsystem", dir));
        put(
            &format!("{}/{}/uevent", dir, ns),
            uevent(259, minor, ns, "disk").as_bytes(),
        );
        put(
            &format!("{}/{}/dev", dir, ns),
            format!("259:{}\n", minor).as_bytes(),
        );
        put(
            &format!("{}/{}/nsid", dir, ns),
            format!("{}\n", nsid).as_bytes(),
        );
        link("..", &format!("{}/{}/device", dir, ns));
        link(
            "../../../../../class/block",
            &format!("{}/{}/subsystem", dir, ns),
        );
        link(
            &format!("../../{}/{}", dir, ns),
            &format!("class/block/{}", ns),
        );
    }
    fs::create_dir_all(sys.join("class/nvme")).expect("class/nvme");
    link("../../devices/fake/0:0:1:0/block/sda", "class/block/sda");
    link(
        "../../devices/fake/0:0:1:0/block/sda/sda1",
        "class/block/sda1",
    );
    link("../../devices/fake/virtio1/block/vda", "class/block/vda");
}

/// An Identify Namespace page with GCE's JSON in the vendor area.
fn identify_page(name: &str) -> Vec<u8> {
    let mut page = vec![0u8; 4096];
    let json = format!(r#"{{"device_name":"{}","disk_type":"PERSISTENT"}}"#, name);
    page[384..384 + json.len()].copy_from_slice(json.as_bytes());
    page
}

#[test]
fn udev_rules_name_pd_nvme_through_google_nvme_id_and_number_local_ssds() {
    if !(have_tool("udevadm") && have_root()) {
        return;
    }
    let scratch = Scratch::new("udev");
    let root: &Path = &scratch;
    fake_sysfs(&root.join("sys"));
    let lib = root.join("lib");
    fs::create_dir_all(lib.join("rules.d")).expect("rules.d");
    fs::copy(
        repo().join("init/udev/65-gce-disk-naming.rules"),
        lib.join("rules.d/65-gce-disk-naming.rules"),
    )
    .expect("rules");
    symlink(test_binary(), lib.join("google_nvme_id")).expect("helper link");
    fs::write(root.join("nvme0n2"), identify_page("my-data-disk")).expect("page");
    fs::write(root.join("null"), b"").expect("null");
    let test_device = |devpath: &str| {
        let out = run(Command::new("unshare").args(["--mount", "sh", "-c"]).arg(format!(
            "set -e; r={r}; mount --bind /dev/null $r/null; \
             mount --bind $r/sys /sys; mount --bind $r/lib /usr/lib/udev; \
             mount -t tmpfs etc /etc/udev; mount -t tmpfs run /run; mount -t tmpfs dev /dev; \
             touch /dev/null; mount --bind $r/null /dev/null; cp $r/nvme0n2 /dev/nvme0n2; \
             SYSTEMD_DEVICE_VERIFY_SYSFS=0 SYSTEMD_LOG_LEVEL=info udevadm test --action=add {devpath} 2>&1",
            r = root.display()
        )));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let pd = test_device("/sys/devices/fake/nvme/nvme0/nvme0n2");
    println!("{}", pd);
    assert!(pd.contains("ID_SERIAL_SHORT=my-data-disk\n"), "{}", pd);
    assert!(pd.contains("ID_SERIAL=Google_PersistentDisk_my-data-disk\n"));
    assert!(pd.contains("DEVLINKS=/dev/disk/by-id/google-my-data-disk"));
    let ssd = test_device("/sys/devices/fake/nvme/nvme1/nvme1n1");
    assert!(
        ssd.contains("ID_SERIAL_SHORT=local-nvme-ssd-0\n"),
        "{}",
        ssd
    );
    assert!(ssd.contains("ID_SERIAL=Google_EphemeralDisk_local-nvme-ssd-0\n"));
    assert!(ssd.contains("DEVLINKS=/dev/disk/by-id/google-local-nvme-ssd-0"));
    assert!(
        !ssd.contains("google_nvme_id -d"),
        "a local SSD needs no identify"
    );
}

#[test]
fn google_nvme_id_mdev_mode_makes_and_removes_the_links() {
    let scratch = Scratch::new("mdev-applet");
    let sys = scratch.join("sys");
    let dev = scratch.join("dev");
    fake_sysfs(&sys);
    fs::create_dir_all(&dev).expect("dev");
    // The PD-NVMe namespace's node: a captured identify page (read as a regular file).
    fs::write(dev.join("nvme0n2"), identify_page("pd-nvme-data")).expect("page");
    let mdev = |name: &str, action: &str| {
        run(Command::new(test_binary())
            .args(["google_nvme_id", "--mdev", "--sys"])
            .arg(&sys)
            .arg("--dev")
            .arg(&dev)
            .env("MDEV", name)
            .env("ACTION", action))
    };
    for name in ["sda", "sda1", "vda", "nvme1n1", "nvme0n2"] {
        mdev(name, "add");
    }
    let links = tree(&dev.join("disk/by-id"));
    println!("{:#?}", links);
    let expected: BTreeSet<String> = [
        "google-persistent-disk-1 -> ../../sda",
        "google-persistent-disk-1-part1 -> ../../sda1",
        "google-data-disk-2 -> ../../vda",
        "google-local-nvme-ssd-0 -> ../../nvme1n1",
        "google-pd-nvme-data -> ../../nvme0n2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(links, expected);
    mdev("sda1", "remove");
    mdev("nvme0n2", "remove");
    let links = tree(&dev.join("disk/by-id"));
    assert_eq!(links.len(), 3, "{:#?}", links);
    assert!(!links
        .iter()
        .any(|l| l.contains("part1") || l.contains("pd-nvme")));

    // udev form: ID_SERIAL_SHORT for IMPORT{program}, from the captured page.
    let out = run(Command::new(test_binary())
        .args(["google_nvme_id", "-d"])
        .arg(dev.join("nvme0n2")));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ID_SERIAL_SHORT=pd-nvme-data\nID_SERIAL=Google_PersistentDisk_pd-nvme-data\n"
    );
    // A page without a name: exit 1, nothing on stdout (udev imports nothing).
    fs::write(dev.join("blank"), vec![0u8; 4096]).expect("blank");
    let out = Command::new(test_binary())
        .args(["google_nvme_id"])
        .arg(dev.join("blank"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[test]
fn busybox_mdev_with_the_mdev_lines_makes_the_links() {
    if !(have_tool("busybox") && have_root()) {
        return;
    }
    let scratch = Scratch::new("mdev");
    let root: &Path = &scratch;
    fake_sysfs(&root.join("sys"));
    let helper = root.join("bin/google_nvme_id");
    fs::create_dir_all(root.join("bin")).expect("bin");
    symlink(test_binary(), &helper).expect("helper");
    let conf = read(&init_dir("busybox/mdev.conf"))
        .replace("/usr/bin/google_nvme_id", &helper.display().to_string());
    fs::create_dir_all(root.join("etc")).expect("etc");
    fs::write(root.join("etc/mdev.conf"), conf).expect("mdev.conf");
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    fs::write(root.join("etc/group"), "root:x:0:\ndisk:x:6:\n").expect("group");
    let bb = busybox();
    let out = run(Command::new("unshare")
        .args(["--mount", "sh", "-c"])
        .arg(format!(
            "set -e; r={r}; mount --bind $r/sys /sys; mount --bind $r/etc /etc; \
         mount -t tmpfs dev /dev; \
         for d in /devices/fake/0:0:1:0/block/sda /devices/fake/0:0:1:0/block/sda/sda1 \
                  /devices/fake/virtio1/block/vda /devices/fake/nvme/nvme1/nvme1n1; do \
           ACTION=add DEVPATH=$d SUBSYSTEM=block {bb} mdev; done; \
         ls -l /dev/disk/by-id | sed -n 's/.* \\(google-[^ ]*\\) -> \\(.*\\)/\\1 \\2/p'; \
         ACTION=remove DEVPATH=/devices/fake/0:0:1:0/block/sda/sda1 SUBSYSTEM=block {bb} mdev; \
         echo after-remove; ls /dev/disk/by-id",
            r = root.display(),
            bb = bb.display()
        )));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{}", text);
    let (added, after) = text.split_once("after-remove").unwrap_or((&text, ""));
    for line in [
        "google-persistent-disk-1 ../../sda",
        "google-persistent-disk-1-part1 ../../sda1",
        "google-data-disk-2 ../../vda",
        "google-local-nvme-ssd-0 ../../nvme1n1",
    ] {
        assert!(
            added.lines().any(|l| l == line),
            "{} missing:\n{}",
            line,
            text
        );
    }
    assert!(after.contains("google-persistent-disk-1\n"));
    assert!(!after.contains("part1"), "{}", after);
}
