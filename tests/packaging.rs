//! The packages, built by `make deb`, `make rpm` and `make tarball` from the test build of
//! `gce-guest` (stripped, as the release binary is), installed and removed for real:
//!
//! - the .deb passes lintian with no error; `dpkg --root` installs it into a throwaway
//!   busybox root (systemd and sysvinit variants, with recording `systemctl`,
//!   `update-rc.d` and `invoke-rc.d`): enable + start on install, `reload-or-restart` on
//!   upgrade (an edited config kept), stop + disable on remove (conffiles stay), nothing
//!   left after purge;
//! - the .rpm: `rpm -i --root`, `rpm -U`, `rpm -e --root`, with the systemd macros' meaning
//!   and the chkconfig fallback, nothing left after erase;
//! - the tarball's `install.sh --init X` under busybox ash for every init system;
//! - `make install`: an existing `instance_configs.cfg` is never replaced, the rsyslog rule
//!   only with `RSYSLOG=1`.
//!
//! Each test prints what the package installed and removed. Run as root:
//! `cargo test --features emulator,test-hooks --test integration packaging:: -- --nocapture`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::Scratch;
use crate::packaging_support::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Units enabled on install (the separate daemons stay disabled: the combined one runs).
const ENABLED_UNITS: &str = "google-instance-setup.service google-guest-daemon.service \
     google-startup-scripts.service google-shutdown-scripts.service google-disk-expand.service";

/// Paths of the package managers' own bookkeeping and the stubs' logs, left out of the
/// before/after comparisons.
fn is_bookkeeping(path: &str) -> bool {
    [
        "var/lib/dpkg",
        "var/lib/rpm",
        "usr/lib/sysimage",
        "var/log/",
        "var/tmp/",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

fn changes(before: &BTreeSet<String>, after: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let plus = added(before, after)
        .into_iter()
        .filter(|p| !is_bookkeeping(p))
        .collect();
    let minus = added(after, before)
        .into_iter()
        .filter(|p| !is_bookkeeping(p))
        .collect();
    (plus, minus)
}

fn print_list(title: &str, items: &[String]) {
    println!("{} ({}):", title, items.len());
    for item in items {
        println!("  {}", item);
    }
}

fn built(out: &std::process::Output) -> PathBuf {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let path = PathBuf::from(last.trim());
    assert!(
        path.is_file(),
        "no package at {:?}; make said:\n{}",
        path,
        text
    );
    path
}

fn size_line(package: &Path) -> String {
    let size = fs::metadata(package).map(|m| m.len()).unwrap_or(0);
    format!(
        "{}: {} bytes",
        package.file_name().unwrap_or_default().to_string_lossy(),
        size
    )
}

fn has(list: &[String], wanted: &str) -> bool {
    list.iter().any(|l| l == wanted)
}

fn assert_has_all(list: &[String], wanted: &[&str], what: &str) {
    for w in wanted {
        assert!(has(list, w), "{}: {} missing from {:#?}", what, w, list);
    }
}

#[test]
fn deb_installs_upgrades_removes_and_purges_cleanly() {
    if !(have_tool("dpkg-deb") && have_tool("fakeroot") && have_tool("lintian") && have_root()) {
        return;
    }
    let scratch = Scratch::new("deb");
    let dist = scratch.join("dist");
    let deb = built(&make(
        "deb",
        &stripped_binary(),
        &[("DISTDIR", &dist.display().to_string())],
    ));
    assert!(deb
        .display()
        .to_string()
        .ends_with(&format!("gce-guest_{}_amd64.deb", VERSION)));
    println!("{}", size_line(&deb));
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    println!("{}", String::from_utf8_lossy(&contents.stdout));

    let field = |name: &str| {
        let out = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(field("Version"), VERSION);
    for relation in ["Conflicts", "Replaces"] {
        let value = field(relation);
        for name in [
            "google-compute-engine",
            "python-google-compute-engine",
            "python3-google-compute-engine",
            "google-guest-agent",
        ] {
            assert!(
                value.split(", ").any(|v| v == name),
                "{} lacks {}: {}",
                relation,
                name,
                value
            );
        }
    }
    let conffiles = run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles"));
    let conffiles: Vec<String> = String::from_utf8_lossy(&conffiles.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_has_all(
        &conffiles,
        &[
            "/etc/init.d/google-guest-daemon",
            "/etc/sysctl.d/11-gce-network-security.conf",
            "/etc/modprobe.d/gce-blacklist.conf",
        ],
        "conffiles",
    );
    assert!(!has(&conffiles, "/etc/default/instance_configs.cfg"));

    let lintian = Command::new("lintian")
        .arg("--fail-on")
        .arg("error")
        .arg(&deb)
        .output()
        .expect("run lintian");
    let report = String::from_utf8_lossy(&lintian.stdout);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    println!(
        "lintian: {} warnings, {} errors",
        report.lines().filter(|l| l.starts_with("W:")).count(),
        errors.len()
    );
    assert!(
        lintian.status.success() && errors.is_empty(),
        "lintian errors:\n{}",
        report
    );

    // systemd image.
    let root = scratch.join("root");
    throwaway_root(
        &root,
        &["etc/default", "var/lib/dpkg/info", "var/lib/dpkg/updates"],
    );
    fs::write(root.join("var/lib/dpkg/status"), b"").expect("dpkg status");
    let dpkg = |args: &str| {
        in_root_namespace(&root, &format!("dpkg --root='{}' {}", root.display(), args))
    };
    let before = tree(&root);

    dpkg(&format!("-i '{}'", deb.display()));
    let (installed, _) = changes(&before, &tree(&root));
    print_list("dpkg -i installed", &installed);
    assert_has_all(
        &installed,
        &[
            "usr/bin/gce-guest",
            "usr/bin/google_guest_daemon -> gce-guest",
            "usr/bin/google_accounts_daemon -> gce-guest",
            "usr/bin/google_nvme_id -> gce-guest",
            "lib/systemd/system/google-guest-daemon.service",
            "lib/systemd/system/google-instance-setup.service",
            "lib/systemd/system-preset/90-gce-guest.preset",
            "lib/udev/rules.d/65-gce-disk-naming.rules",
            "etc/init.d/google-guest-daemon",
            "etc/default/instance_configs.cfg",
            "usr/share/initramfs-tools/scripts/local-premount/gce-disk-expand",
        ],
        "dpkg -i",
    );
    let calls = take_systemctl_calls(&root);
    println!("install: {:#?}", calls);
    assert!(has(&calls, &format!("systemctl enable {}", ENABLED_UNITS)));
    assert!(has(&calls, "systemctl daemon-reload"));
    assert!(has(
        &calls,
        "systemctl start google-guest-daemon.service google-shutdown-scripts.service"
    ));
    assert!(!calls.iter().any(|c| c.contains("reload-or-restart")));

    // Upgrade: the administrator's configuration stays, the daemon reloads or restarts.
    let config = root.join("etc/default/instance_configs.cfg");
    fs::write(&config, "[Accounts]\ngroups = adm\n").expect("edit config");
    dpkg(&format!("-i '{}'", deb.display()));
    let calls = take_systemctl_calls(&root);
    println!("upgrade: {:#?}", calls);
    assert!(has(
        &calls,
        "systemctl reload-or-restart google-guest-daemon.service"
    ));
    assert!(!calls.iter().any(|c| c.contains(" start ")));
    assert_eq!(
        fs::read_to_string(&config).unwrap_or_default(),
        "[Accounts]\ngroups = adm\n"
    );

    // State the daemons leave behind, which purge must take away.
    fs::create_dir_all(root.join("var/lib/google")).expect("state dir");
    fs::write(root.join("var/lib/google/google_users"), "alice\n").expect("ledger");

    let installed_tree = tree(&root);
    dpkg("-r gce-guest");
    let calls = take_systemctl_calls(&root);
    println!("remove: {:#?}", calls);
    assert!(has(&calls, "systemctl stop google-guest-daemon.service google-accounts-daemon.service google-clock-skew-daemon.service google-network-daemon.service"));
    assert!(has(&calls, &format!("systemctl disable {}", ENABLED_UNITS)));
    assert!(!calls
        .iter()
        .any(|c| c.contains("stop google-shutdown-scripts")));
    let (_, removed) = changes(&installed_tree, &tree(&root));
    print_list("dpkg -r removed", &removed);
    let (left, _) = changes(&before, &tree(&root));
    print_list("left after dpkg -r (conffiles, config, state)", &left);
    assert!(has(&removed, "usr/bin/gce-guest"));
    assert!(has(&left, "etc/init.d/google-guest-daemon"));
    assert!(has(&left, "etc/default/instance_configs.cfg"));

    dpkg("-P gce-guest");
    let (left, gone) = changes(&before, &tree(&root));
    print_list("left after dpkg -P", &left);
    assert!(
        left.is_empty() && gone.is_empty(),
        "purge left {:?}, took {:?}",
        left,
        gone
    );

    // sysvinit image: no systemd, update-rc.d and invoke-rc.d record their calls.
    let root = scratch.join("sysv");
    throwaway_root(
        &root,
        &["etc/default", "var/lib/dpkg/info", "var/lib/dpkg/updates"],
    );
    fs::write(root.join("var/lib/dpkg/status"), b"").expect("dpkg status");
    fs::remove_dir_all(root.join("run/systemd")).expect("no systemd");
    fs::remove_file(root.join("usr/bin/systemctl")).expect("no systemctl");
    // A base system's /usr/bin is never empty (dpkg would remove it with the package).
    std::os::unix::fs::symlink("/bin/busybox", root.join("usr/bin/env")).expect("usr/bin/env");
    for tool in ["update-rc.d", "invoke-rc.d", "update-initramfs"] {
        write_executable(
            &root.join("usr/sbin").join(tool),
            &format!(
                "#!/bin/sh\necho \"{} $*\" >> /var/log/systemctl.calls\n",
                tool
            ),
        );
    }
    let before = tree(&root);
    let dpkg = |args: &str| {
        in_root_namespace(
            &root,
            &format!(
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg --root='{}' {}",
                root.display(),
                args
            ),
        )
    };
    dpkg(&format!("-i '{}'", deb.display()));
    let calls = take_systemctl_calls(&root);
    println!("sysvinit install: {:#?}", calls);
    assert_has_all(
        &calls,
        &[
            "update-rc.d google-instance-setup defaults",
            "update-rc.d google-guest-daemon defaults",
            "update-rc.d google-shutdown-scripts defaults",
            "update-rc.d google-accounts-daemon defaults-disabled",
            "invoke-rc.d google-guest-daemon start",
            "invoke-rc.d google-shutdown-scripts start",
            "update-initramfs -u",
        ],
        "sysvinit postinst",
    );
    dpkg("-P gce-guest");
    let calls = take_systemctl_calls(&root);
    println!("sysvinit purge: {:#?}", calls);
    assert!(has(&calls, "invoke-rc.d google-guest-daemon stop"));
    assert!(has(&calls, "update-rc.d google-guest-daemon remove"));
    assert!(
        has(&calls, "update-initramfs -u"),
        "the hook leaves the initramfs"
    );
    let (left, gone) = changes(&before, &tree(&root));
    assert!(
        left.is_empty() && gone.is_empty(),
        "purge left {:?}, took {:?}",
        left,
        gone
    );
}

/// Directories a base RPM system has (owned by other packages there).
const RPM_SYSTEM_DIRS: &[&str] = &[
    "etc/default",
    "etc/init.d",
    "etc/insserv.conf.d",
    "etc/modprobe.d",
    "etc/sysctl.d",
    "usr/lib/dracut/modules.d",
    "usr/lib/systemd/system",
    "usr/lib/systemd/system-preset",
    "usr/lib/udev/rules.d",
    "usr/share/initramfs-tools/hooks",
    "usr/share/initramfs-tools/scripts/local-premount",
    "usr/share/licenses",
    "var/tmp",
];

#[test]
fn rpm_installs_upgrades_and_erases_cleanly() {
    if !(have_tool("rpmbuild") && have_tool("rpm") && have_root()) {
        return;
    }
    let scratch = Scratch::new("rpm");
    let dist = scratch.join("dist");
    let rpm_file = built(&make(
        "rpm",
        &stripped_binary(),
        &[("DISTDIR", &dist.display().to_string())],
    ));
    assert!(rpm_file
        .display()
        .to_string()
        .ends_with(&format!("gce-guest-{}-1.x86_64.rpm", VERSION)));
    println!("{}", size_line(&rpm_file));
    let listing = run(Command::new("rpm").arg("-qlvp").arg(&rpm_file));
    println!("{}", String::from_utf8_lossy(&listing.stdout));
    let info = run(Command::new("rpm")
        .arg("-qp")
        .arg("--conflicts")
        .arg("--obsoletes")
        .arg(&rpm_file));
    let info = String::from_utf8_lossy(&info.stdout);
    for name in ["python-google-compute-engine", "google-guest-agent"] {
        assert!(info.contains(name), "rpm relations lack {}: {}", name, info);
    }

    let root = scratch.join("root");
    throwaway_root(&root, RPM_SYSTEM_DIRS);
    let rpm =
        |args: &str| in_root_namespace(&root, &format!("rpm --root '{}' {}", root.display(), args));
    rpm("--initdb");
    let before = tree(&root);

    rpm(&format!("-i --nodeps '{}'", rpm_file.display()));
    let (installed, _) = changes(&before, &tree(&root));
    print_list("rpm -i installed", &installed);
    assert_has_all(
        &installed,
        &[
            "usr/bin/gce-guest",
            "usr/bin/google_guest_daemon -> gce-guest",
            "usr/lib/systemd/system/google-guest-daemon.service",
            "usr/lib/systemd/system-preset/90-gce-guest.preset",
            "usr/lib/udev/rules.d/65-gce-disk-naming.rules",
            "usr/lib/dracut/modules.d/50gce-disk-expand/module-setup.sh",
            "etc/init.d/google-guest-daemon",
            "etc/default/instance_configs.cfg",
        ],
        "rpm -i",
    );
    let calls = take_systemctl_calls(&root);
    println!("install: {:#?}", calls);
    assert!(has(
        &calls,
        &format!("systemctl --no-reload preset {}", ENABLED_UNITS)
    ));
    assert!(has(
        &calls,
        "systemctl start google-guest-daemon.service google-shutdown-scripts.service"
    ));

    let config = root.join("etc/default/instance_configs.cfg");
    fs::write(&config, "[Accounts]\ngroups = adm\n").expect("edit config");
    rpm(&format!(
        "-U --replacepkgs --nodeps '{}'",
        rpm_file.display()
    ));
    let calls = take_systemctl_calls(&root);
    println!("upgrade: {:#?}", calls);
    assert!(has(
        &calls,
        "systemctl reload-or-restart google-guest-daemon.service"
    ));
    assert!(!has(
        &calls,
        &format!("systemctl --no-reload preset {}", ENABLED_UNITS)
    ));
    assert_eq!(
        fs::read_to_string(&config).unwrap_or_default(),
        "[Accounts]\ngroups = adm\n"
    );

    let installed_tree = tree(&root);
    rpm("-e gce-guest");
    let calls = take_systemctl_calls(&root);
    println!("erase: {:#?}", calls);
    assert!(has(&calls, "systemctl stop google-guest-daemon.service google-accounts-daemon.service google-clock-skew-daemon.service google-network-daemon.service"));
    assert!(calls.iter().any(|c| c.starts_with("systemctl --no-reload disable --now google-instance-setup.service google-guest-daemon.service")));
    let (_, removed) = changes(&installed_tree, &tree(&root));
    print_list("rpm -e removed", &removed);
    let (left, gone) = changes(&before, &tree(&root));
    assert!(
        left.is_empty() && gone.is_empty(),
        "erase left {:?}, took {:?}",
        left,
        gone
    );

    // No systemd: chkconfig and service.
    let root = scratch.join("sysv");
    throwaway_root(&root, RPM_SYSTEM_DIRS);
    fs::remove_dir_all(root.join("run/systemd")).expect("no systemd");
    for (dir, tool) in [
        ("sbin", "chkconfig"),
        ("sbin", "service"),
        ("usr/bin", "dracut"),
    ] {
        write_executable(
            &root.join(dir).join(tool),
            &format!(
                "#!/bin/sh\necho \"{} $*\" >> /var/log/systemctl.calls\n",
                tool
            ),
        );
    }
    let rpm =
        |args: &str| in_root_namespace(&root, &format!("rpm --root '{}' {}", root.display(), args));
    rpm("--initdb");
    rpm(&format!("-i --nodeps '{}'", rpm_file.display()));
    let calls = take_systemctl_calls(&root);
    println!("chkconfig install: {:#?}", calls);
    assert_has_all(
        &calls,
        &[
            "chkconfig --add google-instance-setup",
            "chkconfig --add google-guest-daemon",
            "service google-guest-daemon start",
            "dracut --force",
        ],
        "chkconfig %post",
    );
    rpm("-e gce-guest");
    let calls = take_systemctl_calls(&root);
    assert!(has(&calls, "chkconfig --del google-guest-daemon"));
    assert!(has(&calls, "service google-guest-daemon stop"));
    assert!(
        has(&calls, "dracut --force"),
        "the module leaves the initramfs"
    );
}

/// The file each init system's install must leave, as a witness.
const INIT_WITNESS: &[(&str, &str)] = &[
    (
        "systemd",
        "usr/lib/systemd/system/google-guest-daemon.service",
    ),
    ("sysvinit", "etc/init.d/google-guest-daemon"),
    ("upstart", "etc/init/google-guest-daemon.conf"),
    ("openrc", "etc/init.d/google-guest-daemon"),
    ("busybox", "etc/init.d/S40google-instance-setup"),
];

#[test]
fn tarball_install_sh_installs_every_init_system_under_busybox_ash() {
    if !have_tool("busybox") {
        return;
    }
    let scratch = Scratch::new("tarball");
    let dist = scratch.join("dist");
    let tarball = built(&make(
        "tarball",
        &stripped_binary(),
        &[("DISTDIR", &dist.display().to_string())],
    ));
    assert!(tarball
        .display()
        .to_string()
        .ends_with(&format!("gce-guest-{}-x86_64.tar.gz", VERSION)));
    println!("{}", size_line(&tarball));
    let listing = run(Command::new("tar").arg("-tzvf").arg(&tarball));
    println!("{}", String::from_utf8_lossy(&listing.stdout));
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&*scratch));
    let unpacked = scratch.join(format!("gce-guest-{}", VERSION));
    for (init, witness) in INIT_WITNESS {
        let dest = scratch.join(format!("dest-{}", init));
        fs::create_dir_all(dest.join("etc")).expect("dest");
        if *init == "busybox" {
            fs::write(dest.join("etc/inittab"), "::sysinit:/etc/init.d/rcS\n").expect("inittab");
        }
        for _ in 0..2 {
            run(Command::new(busybox())
                .arg("sh")
                .arg(unpacked.join("install.sh"))
                .arg("--init")
                .arg(init)
                .arg("--destdir")
                .arg(&dest));
        }
        let files = tree(&dest);
        assert!(
            files.contains(*witness),
            "{}: {} not installed",
            init,
            witness
        );
        assert!(files.contains("usr/bin/google_instance_setup -> gce-guest"));
        assert!(files.contains("etc/default/instance_configs.cfg"));
        assert!(!files.contains("etc/rsyslog.d/90-google.conf"));
        if *init == "busybox" {
            let inittab = fs::read_to_string(dest.join("etc/inittab")).unwrap_or_default();
            assert_eq!(
                inittab
                    .matches("::respawn:/usr/bin/google_guest_daemon")
                    .count(),
                1,
                "appended once:\n{}",
                inittab
            );
            assert!(inittab.starts_with("::sysinit:/etc/init.d/rcS\n"));
        }
        println!("install.sh --init {}: {} paths", init, files.len());
    }
    // An unknown init system is refused.
    let status = Command::new(busybox())
        .arg("sh")
        .arg(unpacked.join("install.sh"))
        .arg("--init")
        .arg("launchd")
        .arg("--destdir")
        .arg(scratch.join("nowhere"))
        .status()
        .expect("run install.sh");
    assert_eq!(status.code(), Some(2));
}

#[test]
fn make_install_keeps_an_existing_config_and_adds_rsyslog_only_when_asked() {
    let scratch = Scratch::new("config");
    let dest = scratch.join("dest");
    let config = dest.join("etc/default/instance_configs.cfg");
    fs::create_dir_all(config.parent().unwrap_or(&dest)).expect("etc/default");
    fs::write(&config, "[InstanceSetup]\nset_hostname = false\n").expect("config");
    let dest_var = dest.display().to_string();
    make("install", &test_binary(), &[("DESTDIR", &dest_var)]);
    assert_eq!(
        fs::read_to_string(&config).unwrap_or_default(),
        "[InstanceSetup]\nset_hostname = false\n"
    );
    assert!(!dest.join("etc/rsyslog.d/90-google.conf").exists());
    make(
        "install",
        &test_binary(),
        &[("DESTDIR", &dest_var), ("RSYSLOG", "1"), ("INIT", "openrc")],
    );
    assert!(dest.join("etc/rsyslog.d/90-google.conf").is_file());
    assert!(dest.join("etc/init.d/google-guest-daemon").is_file());

    // A fresh tree gets the commented default file.
    let fresh = scratch.join("fresh");
    make(
        "install",
        &test_binary(),
        &[("DESTDIR", &fresh.display().to_string())],
    );
    let text =
        fs::read_to_string(fresh.join("etc/default/instance_configs.cfg")).unwrap_or_default();
    assert!(
        text.lines().all(|l| l.is_empty() || l.starts_with('#')),
        "{}",
        text
    );
}
