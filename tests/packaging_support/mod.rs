//! Helpers shared by `tests/init_files.rs` and `tests/packaging.rs`: the test build of
//! `gce-guest` (stripped once for the packages), `make` in the repository, required tools
//! (a missing one fails the test when `CI=true`, naming its package from
//! `tools/prereqs.sh`), file-tree listings, and throwaway roots made of busybox for
//! `dpkg --root` and `rpm --root`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::common;

/// The repository (where the Makefile is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `gce-guest` built for the tests.
pub fn test_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gce-guest"))
}

/// The test binary stripped (the packages carry a stripped binary, as the release build's;
/// lintian wants that), made once per test process.
pub fn stripped_binary() -> PathBuf {
    static STRIPPED: OnceLock<PathBuf> = OnceLock::new();
    STRIPPED
        .get_or_init(|| {
            // Under the build directory (not /tmp): nothing is left behind to clean up.
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            fs::create_dir_all(&dir).expect("create binary directory");
            let out = dir.join("gce-guest-stripped");
            let tmp = dir.join(format!("gce-guest-stripped.{}", std::process::id()));
            run(Command::new("strip").arg("-o").arg(&tmp).arg(test_binary()));
            fs::rename(&tmp, &out).expect("rename the stripped binary");
            out
        })
        .clone()
}

/// Whether a tool is in PATH. When it is not, the test fails under `CI=true` and is
/// skipped (returns false, after saying so) elsewhere.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {} >/dev/null", tool))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        let why = common::find_tool(tool, &std::env::var_os("PATH").unwrap_or_default())
            .err()
            .unwrap_or_else(|| format!("{} is not installed", tool));
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{}", why);
        eprintln!("skipped: {}", why);
    }
    found
}

/// Whether we are root (mount namespaces, chroot). Not root fails under `CI=true`.
pub fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test needs root"
        );
        eprintln!("skipped: needs root");
    }
    root
}

/// Runs a command; panics with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {}", cmd, e));
    assert!(
        out.status.success(),
        "{:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `make -s TARGET VAR=value...` in the repository with the given binary as BIN.
pub fn make(target: &str, bin: &Path, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("make");
    cmd.arg("-s").arg("-C").arg(repo()).arg(target);
    cmd.arg(format!("BIN={}", bin.display()));
    for (k, v) in vars {
        cmd.arg(format!("{}={}", k, v));
    }
    run(&mut cmd)
}

/// Every path under `root`, relative, directories with a trailing `/`, symlinks as
/// `path -> target`.
pub fn tree(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).unwrap_or_default();
            out.insert(format!("{} -> {}", rel, target.display()));
        } else if meta.is_dir() {
            out.insert(format!("{}/", rel));
            walk(root, &path, out);
        } else {
            out.insert(rel);
        }
    }
}

/// What `after` has that `before` has not.
pub fn added(before: &BTreeSet<String>, after: &BTreeSet<String>) -> Vec<String> {
    after.difference(before).cloned().collect()
}

/// Writes an executable file.
pub fn write_executable(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent");
    }
    fs::write(path, text).expect("write executable");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The busybox binary (busybox-static in CI).
pub fn busybox() -> PathBuf {
    let out = run(Command::new("sh").arg("-c").arg("command -v busybox"));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A throwaway root for package managers: busybox and its applets in `/bin`, a
/// `systemctl` stub that appends its arguments to `/var/log/systemctl.calls`,
/// `/run/systemd/system` (so maintainer scripts take their systemd branch), `/dev/null`
/// (bind-mounted by [`in_root_namespace`]) and the directories a base system has.
pub fn throwaway_root(dir: &Path, system_dirs: &[&str]) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).expect("create bin");
    fs::copy(busybox(), bin.join("busybox")).expect("copy busybox");
    let list = run(Command::new(bin.join("busybox")).arg("--list"));
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).expect("link applet");
        }
    }
    write_executable(
        &dir.join("usr/bin/systemctl"),
        "#!/bin/sh\necho \"systemctl $*\" >> /var/log/systemctl.calls\n",
    );
    for d in ["dev", "tmp", "etc", "run/systemd/system", "var/log"]
        .iter()
        .chain(system_dirs)
    {
        fs::create_dir_all(dir.join(d)).expect("create directory");
    }
    fs::write(dir.join("dev/null"), b"").expect("create dev/null");
}

/// Runs `script` with `sh` in a private mount namespace where `ROOT/dev/null` is the real
/// one (maintainer scripts redirect to it).
pub fn in_root_namespace(root: &Path, script: &str) -> Output {
    let full = format!(
        "mount --bind /dev/null '{}/dev/null' && {}",
        root.display(),
        script
    );
    run(Command::new("unshare")
        .arg("--mount")
        .arg("sh")
        .arg("-c")
        .arg(full))
}

/// The commands the `systemctl` stub recorded since the last call, then forgets them.
pub fn take_systemctl_calls(root: &Path) -> Vec<String> {
    let path = root.join("var/log/systemctl.calls");
    let text = fs::read_to_string(&path).unwrap_or_default();
    let _ = fs::remove_file(&path);
    text.lines().map(str::to_string).collect()
}
