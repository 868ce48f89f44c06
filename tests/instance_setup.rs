//! `google_instance_setup` in the sandbox with real tools: host keys made with `ssh-keygen`
//! (or `dropbearkey` on a dropbear-only image) when the instance id changes and kept when it
//! does not, a SIGKILL in the middle leaving each key old or new, the guest attributes the
//! emulator received, `/etc/boto.cfg`, the configuration's five layers, the host name and
//! `/etc/hosts`, `READY=1` and the done marker.
//!
//! Run: `cargo test --features emulator,test-hooks --test integration instance_setup::` (as
//! root).

#![cfg(feature = "emulator")]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{self, Output, Sandbox};
use tinyjson::JsonValue;

/// An instance id that does not survive an f64 (served as the text the real server gives).
const ID: &str = "1234567890123456789";
const NEW_ID: &str = "1234567890123456791";
const CONFIG: &str = "/etc/default/instance_configs.cfg";
/// The key types made by default, with their OpenSSH names.
const TYPES: [(&str, &str); 3] = [
    ("ecdsa", "ecdsa-sha2-nistp256"),
    ("ed25519", "ssh-ed25519"),
    ("rsa", "ssh-rsa"),
];

fn document(id: &str, hostname: &str) -> String {
    format!(
        r#"{{"instance": {{"id": "{}", "hostname": {}, "machineType": "projects/1/machineTypes/n2-standard-2",
        "networkInterfaces": [{{"ip": "10.128.0.7", "mac": "42:01:0a:80:00:07"}}],
        "attributes": {{}}}},
        "project": {{"projectId": "my-project", "numericProjectId": 987654321012, "attributes": {{}}}}}}"#,
        id,
        JsonValue::String(hostname.to_string()).stringify().unwrap()
    )
}

fn builder() -> common::SandboxBuilder {
    Sandbox::builder().metadata(&document(ID, "vm-1.c.my-project.internal"))
}

/// Runs setup and checks it exited 0.
fn setup(sb: &Sandbox) -> Output {
    let out = sb.run(["google_instance_setup"]);
    assert!(out.success(), "{:?}\n{}", out, sb.log_lines().join("\n"));
    out
}

/// Removes whatever host keys the host's /etc/ssh and /etc/dropbear brought in.
fn no_host_keys(sb: &Sandbox) {
    sb.sh("rm -f /etc/ssh/ssh_host_* /etc/dropbear/dropbear_*_host_key")
        .assert_success();
}

/// Every file in a directory with its bytes.
fn files(sb: &Sandbox, dir: &str) -> BTreeMap<String, Vec<u8>> {
    let list = sb
        .sh(&format!("find {} -maxdepth 1 -type f -printf '%f\\n'", dir))
        .stdout_text();
    list.lines()
        .map(|name| {
            let path = format!("{}/{}", dir, name);
            (name.to_string(), sb.read(&path).unwrap_or_default())
        })
        .collect()
}

fn stat(sb: &Sandbox, path: &str) -> String {
    sb.program(["stat", "-c", "%a %u %g", path])
        .output()
        .stdout_text()
        .trim()
        .to_string()
}

fn attributes(sb: &Sandbox) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let JsonValue::Object(namespaces) = sb.emulator().guest_attributes() {
        for (ns, keys) in namespaces {
            if let JsonValue::Object(keys) = keys {
                for (k, v) in keys {
                    if let JsonValue::String(v) = v {
                        out.insert(format!("{}/{}", ns, k), v);
                    }
                }
            }
        }
    }
    out
}

/// Checks the three default keys are valid pairs with the right modes and owner, and that
/// their public halves were published.
fn assert_valid_keys(sb: &Sandbox) {
    let attrs = attributes(sb);
    for (t, name) in TYPES {
        let private = format!("/etc/ssh/ssh_host_{}_key", t);
        let public = format!("{}.pub", private);
        assert_eq!(stat(sb, &private), "600 0 0", "{}", private);
        assert_eq!(stat(sb, &public), "644 0 0", "{}", public);
        let derived = sb.program(["ssh-keygen", "-y", "-f", &private]).output();
        assert!(derived.success(), "{:?}", derived);
        let pub_text = sb.read_string(&public).unwrap();
        let fields: Vec<&str> = pub_text.split_whitespace().collect();
        assert_eq!(fields[0], name);
        assert_eq!(
            derived.stdout_text().split_whitespace().nth(1),
            Some(fields[1]),
            "{} and its .pub are one pair",
            private
        );
        assert_eq!(
            attrs.get(&format!("hostkeys/{}", name)).map(String::as_str),
            Some(fields[1]),
            "{:?}",
            attrs
        );
    }
    let sshable = attrs
        .get("guest-agent/sshable")
        .expect("guest-agent/sshable");
    assert!(sshable.ends_with('Z') && sshable.len() == 20, "{}", sshable);
}

fn stored_id(sb: &Sandbox) -> String {
    let cfg = sb.read_string("/etc/default/instance_configs.cfg").unwrap();
    let mut in_instance = false;
    for line in cfg.lines() {
        if line.starts_with('[') {
            in_instance = line == "[Instance]";
        } else if in_instance {
            if let Some(v) = line.strip_prefix("instance_id = ") {
                return v.to_string();
            }
        }
    }
    panic!("no [Instance] instance_id in\n{}", cfg);
}

#[test]
fn host_keys_are_made_once_per_instance_id_and_published() {
    let sb = sandbox_or_skip!(builder());
    no_host_keys(&sb);
    sb.program([
        "ssh-keygen",
        "-t",
        "rsa",
        "-N",
        "",
        "-q",
        "-f",
        "/etc/ssh/ssh_host_rsa_key",
    ])
    .output()
    .assert_success();
    let old_rsa = sb.read("/etc/ssh/ssh_host_rsa_key").unwrap();
    // Beside OpenSSH, a dropbear key already there is renewed too (not published).
    sb.sh("mkdir -p /etc/dropbear && dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1")
        .assert_success();
    let old_dropbear = sb.read("/etc/dropbear/dropbear_ed25519_host_key").unwrap();

    setup(&sb);
    assert_valid_keys(&sb);
    let dropbear = sb.read("/etc/dropbear/dropbear_ed25519_host_key").unwrap();
    assert_ne!(dropbear, old_dropbear);
    assert_eq!(
        stat(&sb, "/etc/dropbear/dropbear_ed25519_host_key"),
        "600 0 0"
    );
    assert_ne!(sb.read("/etc/ssh/ssh_host_rsa_key").unwrap(), old_rsa);
    assert_eq!(stored_id(&sb), ID, "the id is kept as text, all 19 digits");
    let lines = sb.log_lines();
    assert!(
        lines.contains(&format!(
            "instance-setup: INFO Generating SSH host keys for instance {}.",
            ID
        )),
        "{}",
        lines.join("\n")
    );
    let marker = sb.read_string("/run/google-instance-setup.done").unwrap();
    assert!(
        marker.starts_with(&format!("instance_id={}\ntime=", ID)),
        "{}",
        marker
    );
    let first = files(&sb, "/etc/ssh");
    assert!(
        !sb.sh("ls -A /etc | grep gce-guest-hostkeys").success(),
        "no temporary directory is left"
    );

    // Second boot, same id: byte-identical keys, and the configuration, unchanged, is not
    // written again (same inode: no new file was renamed in).
    let inode = |sb: &Sandbox| {
        sb.program(["stat", "-c", "%i", CONFIG])
            .output()
            .stdout_text()
    };
    let config_before = (inode(&sb), sb.read(CONFIG).unwrap());
    sb.emulator().clear_requests();
    setup(&sb);
    assert_eq!(files(&sb, "/etc/ssh"), first);
    assert_eq!(stored_id(&sb), ID);
    assert_eq!((inode(&sb), sb.read(CONFIG).unwrap()), config_before);

    // A clone: new id, every key new.
    sb.emulator()
        .patch(&format!(r#"{{"instance": {{"id": "{}"}}}}"#, NEW_ID));
    setup(&sb);
    assert_valid_keys(&sb);
    let third = files(&sb, "/etc/ssh");
    for (t, _) in TYPES {
        let name = format!("ssh_host_{}_key", t);
        assert_ne!(third[&name], first[&name], "{} was made anew", name);
    }
    assert_eq!(stored_id(&sb), NEW_ID);
}

#[test]
fn a_sigkill_during_generation_leaves_each_key_old_or_new() {
    let sb = sandbox_or_skip!(builder());
    no_host_keys(&sb);
    for (t, _) in TYPES {
        sb.program([
            "ssh-keygen",
            "-t",
            t,
            "-N",
            "",
            "-q",
            "-f",
            &format!("/etc/ssh/ssh_host_{}_key", t),
        ])
        .output()
        .assert_success();
    }
    let old = files(&sb, "/etc/ssh");
    // An ssh-keygen that stops before making the rsa key (the last one), so setup is killed
    // with two keys new and one not yet.
    sb.write_mode(
        "/run/kgpath/ssh-keygen",
        "#!/bin/sh\ncase \"$*\" in *\"-t rsa\"*) echo $$ > /run/keygen-waiting; exec sleep 60;; esac\nexec /usr/bin/ssh-keygen \"$@\"\n",
        0o755,
    );
    let path = format!("/run/kgpath:{}", common::GUEST_PATH);
    let setup_run = sb.cmd(["google_instance_setup"]).env("PATH", &path).spawn();
    assert!(
        sb.wait_until(Duration::from_secs(30), || sb
            .read_string("/run/keygen-waiting")
            .is_some_and(|pid| pid.ends_with('\n'))),
        "setup did not reach the rsa key"
    );
    let _ = setup_run.kill();
    sb.sh("kill -KILL $(cat /run/keygen-waiting)")
        .assert_success();
    let after = files(&sb, "/etc/ssh");
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        old.keys().collect::<Vec<_>>(),
        "no temporary file in /etc/ssh"
    );
    let mut new = 0;
    for (t, _) in TYPES {
        let name = format!("ssh_host_{}_key", t);
        let pub_name = format!("{}.pub", name);
        let private_old = after[&name] == old[&name];
        let public_old = after[&pub_name] == old[&pub_name];
        assert_eq!(
            private_old, public_old,
            "{}: both halves old or both new",
            name
        );
        if !private_old {
            new += 1;
            let derived = sb
                .program(["ssh-keygen", "-y", "-f", &format!("/etc/ssh/{}", name)])
                .output();
            assert!(derived.success(), "{:?}", derived);
        }
    }
    assert_eq!(new, 2, "ecdsa and ed25519 were new, rsa still old");
    assert_ne!(stored_id(&sb), ID, "the id is stored only after the keys");
    assert!(
        sb.sh("ls -d /etc/.gce-guest-hostkeys.*").success(),
        "the killed run's directory"
    );

    // The next boot finishes the job and removes the leftover directory.
    setup(&sb);
    assert_valid_keys(&sb);
    assert_ne!(
        files(&sb, "/etc/ssh")["ssh_host_rsa_key"],
        old["ssh_host_rsa_key"]
    );
    assert!(!sb.sh("ls -d /etc/.gce-guest-hostkeys.*").success());
    assert_eq!(stored_id(&sb), ID);
}

#[test]
fn a_dropbear_only_image_gets_dropbear_host_keys_that_dropbear_serves() {
    let sb = sandbox_or_skip!(builder());
    // A PATH with dropbear's tools and the basics, but no ssh-keygen.
    sb.sh(
        "mkdir -p /run/dbpath /etc/dropbear && rm -f /etc/dropbear/*_host_key && \
         for p in dropbearkey dropbear dbclient sh cat ls rm mkdir stat sleep id; do \
           ln -s \"$(command -v $p)\" /run/dbpath/$p; done",
    )
    .assert_success();
    let out = sb
        .program([
            "/bin/sh",
            "-c",
            "PATH=/run/dbpath exec \"$0\" google_instance_setup",
        ])
        .args([sb.binary()])
        .output();
    assert!(out.success(), "{:?}\n{}", out, sb.log_lines().join("\n"));
    let attrs = attributes(&sb);
    for (t, name) in TYPES {
        let key = format!("/etc/dropbear/dropbear_{}_host_key", t);
        assert_eq!(stat(&sb, &key), "600 0 0", "{}", key);
        let derived = sb.program(["dropbearkey", "-y", "-f", &key]).output();
        let line = derived
            .stdout_text()
            .lines()
            .find(|l| l.starts_with(name))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{:?}", derived));
        let blob = line.split_whitespace().nth(1).unwrap().to_string();
        assert_eq!(
            attrs.get(&format!("hostkeys/{}", name)),
            Some(&blob),
            "{:?}",
            attrs
        );
    }
    assert!(!sb.exists("/etc/dropbear/.gce-guest-hostkeys"));

    // dropbear serves the ed25519 key and dbclient, trusting only the published key, logs in.
    let blob = attrs["hostkeys/ssh-ed25519"].clone();
    sb.sh("mkdir -p /root/.ssh && chmod 700 /root/.ssh && \
         dropbearkey -t ed25519 -f /run/client_key >/dev/null 2>&1 && \
         dropbearkey -y -f /run/client_key | grep ^ssh- > /root/.ssh/authorized_keys && \
         chmod 600 /root/.ssh/authorized_keys")
        .assert_success();
    let _server = sb
        .program([
            "dropbear",
            "-F",
            "-E",
            "-s",
            "-p",
            "127.0.0.1:2224",
            "-r",
            "/etc/dropbear/dropbear_ed25519_host_key",
        ])
        .spawn();
    std::thread::sleep(Duration::from_millis(500));
    // dbclient accepts the server's key (-y) and names its fingerprint, which must be the
    // fingerprint of the key setup made and published.
    let login = sb
        .program([
            "dbclient",
            "-y",
            "-i",
            "/run/client_key",
            "-p",
            "2224",
            "root@127.0.0.1",
            "echo logged-in",
        ])
        .timeout(Duration::from_secs(20))
        .output();
    assert!(login.stdout_text().contains("logged-in"), "{:?}", login);
    let made = sb
        .program([
            "dropbearkey",
            "-y",
            "-f",
            "/etc/dropbear/dropbear_ed25519_host_key",
        ])
        .output()
        .stdout_text();
    assert!(made.contains(&blob), "{}", made);
    let fingerprint = made
        .lines()
        .find_map(|l| l.strip_prefix("Fingerprint: "))
        .expect("a fingerprint")
        .to_string();
    assert!(
        login.stderr_text().contains(&fingerprint),
        "the server presented {} ? {:?}",
        fingerprint,
        login
    );
}

#[test]
fn boto_cfg_is_the_template_plus_the_project() {
    let sb = sandbox_or_skip!(builder().file(
        "/etc/boto.cfg.template",
        "[Boto]\nhttps_validate_certificates = True\n",
        0o644
    ));
    setup(&sb);
    assert_eq!(
        sb.read_string("/etc/boto.cfg").unwrap(),
        "# This file is automatically created at boot time by the\n\
         # /usr/bin/google_instance_setup script. Do not edit this file directly.\n\
         # If you need to add items to this file, create or edit\n\
         # /etc/boto.cfg.template instead and then re-run the script.\n\n\
         [Boto]\nhttps_validate_certificates = True\n\n\
         [GSUtil]\ndefault_project_id = 987654321012\ndefault_api_version = 2\n\n\
         [GoogleCompute]\nservice_account = default\n\n"
    );
    assert_eq!(stat(&sb, "/etc/boto.cfg"), "644 0 0");
}

/// The option each layer wins: template > metadata > existing > distro > built-in.
#[test]
fn the_configuration_layers_each_win_once() {
    let metadata = r#"{"instance": {"id": "5", "attributes": {"google-instance-configs":
        "[Accounts]\ngroups = from-metadata\nuseradd_cmd = from-metadata\n"}},
        "project": {"attributes": {}}}"#;
    let sb = sandbox_or_skip!(Sandbox::builder()
        .metadata(metadata)
        .file(
            "/etc/default/instance_configs.cfg.template",
            "[Accounts]\ngroups = from-template\n",
            0o644
        )
        .file(
            "/etc/default/instance_configs.cfg",
            "[Accounts]\ngroups = existing\nuseradd_cmd = existing\nusermod_cmd = existing\n",
            0o644
        )
        .file(
            "/etc/default/instance_configs.cfg.distro",
            "[Accounts]\ngroups = distro\nuseradd_cmd = distro\nusermod_cmd = distro\nuserdel_cmd = distro\n",
            0o644
        ));
    setup(&sb);
    let cfg = sb.read_string("/etc/default/instance_configs.cfg").unwrap();
    for line in [
        "groups = from-template\n",
        "useradd_cmd = from-metadata\n",
        "usermod_cmd = existing\n",
        "userdel_cmd = distro\n",
        "gpasswd_add_cmd = gpasswd -a {user} {group}\n",
        "set_hostname = true\n",
    ] {
        assert!(cfg.contains(line), "{:?} missing in\n{}", line, cfg);
    }
    assert!(cfg.starts_with("# This file is automatically created at boot time"));
    assert_eq!(
        sb.read_string("/etc/default/instance_configs.cfg.template")
            .unwrap(),
        "[Accounts]\ngroups = from-template\n"
    );
}

#[test]
fn instance_configs_that_are_not_ini_change_nothing_and_are_logged() {
    let metadata = r#"{"instance": {"id": "5", "attributes": {"google-instance-configs":
        "{\"Accounts\": {\"groups\": \"json\"}}"}}, "project": {"attributes": {}}}"#;
    let existing = "[Accounts]\ngroups = existing\n";
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(metadata).file(
        "/etc/default/instance_configs.cfg",
        existing,
        0o644
    ));
    setup(&sb);
    let cfg = sb.read_string("/etc/default/instance_configs.cfg").unwrap();
    assert!(cfg.contains("\ngroups = existing\n"), "{}", cfg);
    assert!(!cfg.contains("json"), "{}", cfg);
    let lines = sb.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARNING") && l.contains("google-instance-configs")),
        "{}",
        lines.join("\n")
    );
}

/// Runs setup with `hostname` in metadata and returns (kernel host name, /etc/hostname,
/// /etc/hosts).
fn hostname_case(sb: &Sandbox, hostname: &str) -> (String, Option<String>, String) {
    sb.emulator().set_metadata(&document(ID, hostname));
    setup(sb);
    (
        sb.program(["hostname"])
            .output()
            .stdout_text()
            .trim()
            .to_string(),
        sb.read_string("/etc/hostname"),
        sb.read_string("/etc/hosts").unwrap_or_default(),
    )
}

#[test]
fn the_host_name_and_hosts_lines_come_from_metadata() {
    let user_lines = "127.0.0.1\tlocalhost\n# my own comment  \n::1 localhost ip6-localhost\n\
                      10.1.1.1 buildhost\n";
    let sb = sandbox_or_skip!(builder().file("/etc/hosts", user_lines, 0o644).file(
        "/etc/hostname",
        "image-builder\n",
        0o644
    ));
    let before_uts = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();

    let (kernel, file, hosts) = hostname_case(&sb, "vm-1.c.my-project.internal");
    assert_eq!(kernel, "vm-1");
    assert_eq!(file.as_deref(), Some("vm-1\n"));
    assert_eq!(
        hosts,
        format!(
            "{}10.128.0.7 vm-1.c.my-project.internal vm-1  # Added by Google\n\
             169.254.169.254 metadata.google.internal  # Added by Google\n",
            user_lines
        )
    );
    assert_eq!(stat(&sb, "/etc/hosts"), "644 0 0");

    // 63 bytes is kept whole, 64 is cut to 63.
    let l63 = "a".repeat(63);
    let (kernel, _, hosts) = hostname_case(&sb, &format!("{}.c.p.internal", l63));
    assert_eq!(kernel, l63);
    assert!(
        hosts.contains(&format!(" {}.c.p.internal {}  # Added", l63, l63)),
        "{}",
        hosts
    );
    let (kernel, _, _) = hostname_case(&sb, &format!("{}b.c.p.internal", l63));
    assert_eq!(kernel, l63);
    // A 253-byte FQDN is written; its short name is its first label.
    let label = "c".repeat(63);
    let fqdn253 = format!("{l}.{l}.{l}.{}", "d".repeat(61), l = label);
    assert_eq!(fqdn253.len(), 253);
    let (kernel, _, hosts) = hostname_case(&sb, &fqdn253);
    assert_eq!(kernel, label);
    assert!(
        hosts.contains(&format!("10.128.0.7 {} {}  #", fqdn253, label)),
        "{}",
        hosts
    );
    // Underscores and a newline are cleaned out of the short name; the FQDN, not a DNS
    // name, stays out of /etc/hosts (no forged lines).
    let (kernel, _, hosts) = hostname_case(&sb, "my_vm\n1.example\n10.0.0.1 evil");
    assert_eq!(kernel, "myvm1");
    assert!(
        hosts.contains("10.128.0.7 myvm1  # Added by Google\n"),
        "{}",
        hosts
    );
    assert!(!hosts.contains("evil"), "{}", hosts);
    assert!(
        hosts.starts_with(user_lines),
        "user lines kept byte-exact:\n{}",
        hosts
    );
    assert_eq!(hosts.matches("Added by Google").count(), 2, "{}", hosts);

    // A name claiming the metadata server, or empty after cleaning, changes nothing.
    let before = (
        sb.program(["hostname"]).output().stdout_text(),
        sb.read("/etc/hostname"),
        sb.read("/etc/hosts"),
    );
    for bad in ["metadata.google.internal", "___.c.p.internal"] {
        hostname_case(&sb, bad);
        let after = (
            sb.program(["hostname"]).output().stdout_text(),
            sb.read("/etc/hostname"),
            sb.read("/etc/hosts"),
        );
        assert_eq!(after, before, "{}", bad);
    }
    let lines = sb.log_lines().join("\n");
    assert!(
        lines.contains("claims metadata.google.internal"),
        "{}",
        lines
    );
    assert!(lines.contains("empty after cleaning"), "{}", lines);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        before_uts,
        "the host's own name is untouched"
    );
}

#[test]
fn set_hostname_false_leaves_the_name_alone() {
    let sb = sandbox_or_skip!(builder()
        .file(
            "/etc/default/instance_configs.cfg.template",
            "[InstanceSetup]\nset_hostname = false\n",
            0o644
        )
        .file("/etc/hostname", "image-builder\n", 0o644));
    let kernel = sb.program(["hostname"]).output().stdout_text();
    setup(&sb);
    assert_eq!(sb.program(["hostname"]).output().stdout_text(), kernel);
    assert_eq!(
        sb.read_string("/etc/hostname").as_deref(),
        Some("image-builder\n")
    );
}

#[test]
fn ready_is_sent_to_notify_socket_after_the_steps() {
    let sb = sandbox_or_skip!(builder());
    let listener = sb
        .program([
            "python3",
            "-c",
            "import socket\n\
             s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
             s.bind('\\0gce-test-notify')\n\
             open('/run/listening', 'w').close()\n\
             print(s.recv(64).decode(), flush=True)\n",
        ])
        .spawn();
    assert!(sb.wait_until(Duration::from_secs(10), || sb.exists("/run/listening")));
    let out = sb.run_env(
        ["google_instance_setup"],
        &[("NOTIFY_SOCKET", "@gce-test-notify")],
    );
    assert!(out.success(), "{:?}", out);
    let got = listener.wait_output(Duration::from_secs(10));
    assert_eq!(got.stdout_text(), "READY=1\n", "{:?}", got);
    assert!(sb.exists("/run/google-instance-setup.done"));
}

#[test]
fn an_unreachable_metadata_server_still_runs_the_offline_steps() {
    let sb = sandbox_or_skip!(builder().file(
        "/etc/default/instance_configs.cfg.template",
        "[InstanceSetup]\nnetwork_wait_s = 2\n",
        0o644
    ));
    sb.emulator()
        .fault(r#"{"mode": "status", "status": 503, "count": -1}"#);
    no_host_keys(&sb);
    let out = sb.cmd(["google_instance_setup"]).time_scale(1.0).output();
    assert!(out.success(), "{:?}", out);
    let lines = sb.log_lines().join("\n");
    assert!(
        lines.contains("running the offline steps only"),
        "{}",
        lines
    );
    assert!(sb.exists("/etc/default/instance_configs.cfg"));
    assert!(sb.exists("/run/google-instance-setup.done"));
    assert!(
        !sb.exists("/etc/ssh/ssh_host_rsa_key"),
        "no keys without an instance id"
    );
}

#[test]
fn the_tuning_applets_run_on_their_own_and_never_fail_the_boot() {
    let sb = sandbox_or_skip!(builder());
    // The sandbox's /proc/irq and /proc/sys are read-only: what cannot be written is logged.
    for applet in ["google_set_multiqueue", "google_optimize_local_ssd"] {
        let out = sb.run([applet]);
        assert!(out.success(), "{}: {:?}", applet, out);
    }
    assert!(sb
        .log_lines()
        .contains(&"set-multiqueue: INFO Running google_set_multiqueue.".to_string()));
}

#[test]
fn root_runs_the_whole_setup_against_a_sysroot() {
    let sb = sandbox_or_skip!(builder()
        .file("/run/sysroot/etc/hosts", "127.0.0.1 localhost\n", 0o644)
        .file("/run/sysroot/etc/boto.cfg.template", "", 0o644));
    // A root as an initramfs sees it at /sysroot: its own /etc, the system's programs.
    sb.sh(
        "cd /run/sysroot && mkdir -p usr etc/ssh var/lock run tmp && mount --bind /usr usr && \
         ln -s usr/bin bin && ln -s usr/sbin sbin && ln -s usr/lib lib && \
         { [ ! -e /lib64 ] || ln -s usr/lib64 lib64; } && cp /etc/passwd /etc/group etc/",
    )
    .assert_success();
    let own_ssh = files(&sb, "/etc/ssh");
    let out = sb.run(["--root", "/run/sysroot", "google_instance_setup"]);
    assert!(out.success(), "{:?}\n{}", out, sb.log_lines().join("\n"));
    for (t, _) in TYPES {
        let key = format!("/run/sysroot/etc/ssh/ssh_host_{}_key", t);
        assert_eq!(stat(&sb, &key), "600 0 0", "{}", key);
    }
    let cfg = sb
        .read_string("/run/sysroot/etc/default/instance_configs.cfg")
        .unwrap();
    assert!(cfg.contains(&format!("instance_id = {}", ID)), "{}", cfg);
    assert!(sb
        .read_string("/run/sysroot/run/google-instance-setup.done")
        .is_some_and(|m| m.contains(ID)));
    assert_eq!(
        sb.read_string("/run/sysroot/etc/hostname").as_deref(),
        Some("vm-1\n")
    );
    assert!(sb.read_string("/run/sysroot/etc/boto.cfg").is_some());
    assert!(sb
        .read_string("/run/sysroot/etc/hosts")
        .is_some_and(|h| h.starts_with("127.0.0.1 localhost\n10.128.0.7 ")));
    // The initramfs's own files are untouched.
    assert_eq!(files(&sb, "/etc/ssh"), own_ssh);
    assert!(!sb.exists("/run/google-instance-setup.done"));
    assert!(!sb.exists("/etc/boto.cfg"));
}

#[test]
fn e2_machine_types_ask_for_memory_overcommit() {
    let doc = document(ID, "vm-1.c.my-project.internal")
        .replace("machineTypes/n2-standard-2", "machineTypes/e2-medium");
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(&doc));
    // The sandbox's /proc/sys is read-only: the attempt is logged, the boot goes on.
    setup(&sb);
    let lines = sb.log_lines();
    assert!(
        lines.contains(
            &"instance-setup: INFO Setting vm.overcommit_memory=1 for an e2 machine type."
                .to_string()
        ),
        "{}",
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARNING overcommit failed")),
        "{}",
        lines.join("\n")
    );
    assert!(sb.exists("/run/google-instance-setup.done"));
}

#[test]
fn an_unusable_configuration_fails_the_run_after_the_other_steps() {
    // A layer that exists but cannot be read: regeneration must not drop what it holds.
    let sb = sandbox_or_skip!(builder().file(
        "/etc/default/instance_configs.cfg",
        "[Accounts]\ngroups = mine\n",
        0o644
    ));
    sb.sh("mkdir -p /etc/default/instance_configs.cfg.distro")
        .assert_success();
    let out = sb.run(["google_instance_setup"]);
    assert_eq!(out.code(), Some(1), "{:?}", out);
    assert_eq!(
        sb.read_string("/etc/default/instance_configs.cfg")
            .as_deref(),
        Some("[Accounts]\ngroups = mine\n"),
        "the configuration is left as it was"
    );
    let lines = sb.log_lines().join("\n");
    assert!(lines.contains("ERROR Could not regenerate"), "{}", lines);
    // The other steps still ran.
    assert_eq!(sb.read_string("/etc/hostname").as_deref(), Some("vm-1\n"));
    assert!(sb.exists("/run/google-instance-setup.done"));
}
