//! The multicall front door, run as a user would: `gce-guest APPLET`, links named like
//! applets, `--list`, `--install`, `--help`, `--version`, unknown names.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::common::{self, Scratch};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gce-guest"))
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_remove("GCE_METADATA_HOST")
        .output()
        .expect("run gce-guest")
}

/// Copies the binary to `to`, to run it there. `cp` writes the copy: this process never
/// holds it open for writing, since a child another test thread forks meanwhile would hold
/// that descriptor too until it execs, and running the copy would then fail with `ETXTBSY`
/// ("Text file busy").
fn copy_binary(to: &Path) {
    let status = Command::new("cp")
        .arg(bin())
        .arg(to)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp to {} failed", to.display());
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn applet_names() -> Vec<String> {
    stdout(&run(&bin(), &["--list"]))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn list_names_every_applet_sorted() {
    let names = applet_names();
    for expected in [
        "google_accounts_daemon",
        "google_clock_skew_daemon",
        "google_disk_expand",
        "google_guest_daemon",
        "google_instance_setup",
        "google_ip_forwarding_daemon",
        "google_metadata_get",
        "google_metadata_script_runner",
        "google_network_daemon",
        "google_nvme_id",
        "google_optimize_local_ssd",
        "google_prepare_image",
        "google_set_multiqueue",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{} missing from --list: {:?}",
            expected,
            names
        );
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn version_names_the_commit() {
    let out = run(&bin(), &["--version"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.starts_with("gce-guest "), "{}", text);
    assert!(text.contains('('), "{}", text);
    let via_applet = run(&bin(), &["google_metadata_get", "--version"]);
    assert_eq!(stdout(&via_applet), text);
}

#[test]
fn every_applet_answers_help_through_the_multiplexer_and_a_link() {
    let dir = Scratch::new("cli-help");
    for name in applet_names() {
        let out = run(&bin(), &[&name, "--help"]);
        assert!(out.status.success(), "{} --help failed", name);
        assert!(
            stdout(&out).contains(&name),
            "{} --help does not name itself",
            name
        );
        let link = dir.join(&name);
        std::os::unix::fs::symlink(bin(), &link).unwrap();
        let out = run(&link, &["--help"]);
        assert!(out.status.success(), "link {} --help failed", name);
        assert!(stdout(&out).contains(&format!("Usage: {}", name)));
    }
}

#[test]
fn unknown_names_exit_127() {
    let out = run(&bin(), &["google_nonexistent"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("applet not found"));
    let dir = Scratch::new("cli-unknown");
    let link = dir.join("something_else");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    assert_eq!(run(&link, &[]).status.code(), Some(127));
}

#[test]
fn install_makes_links_idempotently_and_leaves_foreign_files_alone() {
    let dir = Scratch::new("cli-install");
    let exe = dir.join("gce-guest");
    copy_binary(&exe);
    std::fs::write(dir.join("google_accounts_daemon"), b"#!/usr/bin/python\n").unwrap();
    let first = run(&exe, &["--install", "-s", dir.to_str().unwrap()]);
    assert_eq!(first.status.code(), Some(1), "a foreign file is reported");
    assert_eq!(
        std::fs::read(dir.join("google_accounts_daemon")).unwrap(),
        b"#!/usr/bin/python\n"
    );
    for name in applet_names()
        .iter()
        .filter(|n| *n != "google_accounts_daemon")
    {
        let link = dir.join(name);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from("gce-guest"),
            "{} is a relative symlink",
            name
        );
        let out = run(&link, &["--version"]);
        assert!(out.status.success());
    }
    let again = run(&exe, &["--install", "-s", dir.to_str().unwrap()]);
    assert!(
        stdout(&again).is_empty(),
        "second run changes nothing: {}",
        stdout(&again)
    );
    let forced = run(&exe, &["--install", "-s", "-f", dir.to_str().unwrap()]);
    assert!(forced.status.success());
    assert!(std::fs::read_link(dir.join("google_accounts_daemon")).is_ok());
    // Hard links by default, as busybox does.
    let hard = Scratch::new("cli-install-hard");
    let out = run(&exe, &["--install", hard.to_str().unwrap()]);
    assert!(out.status.success());
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(hard.join("google_metadata_get")).unwrap();
    let b = std::fs::metadata(&exe).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
}

/// The race behind an `ETXTBSY` of the install test above: a binary copied and run at once
/// while other threads of the test process fork children that wait before they exec (and
/// until then hold every descriptor the process had open when it forked). The copy, made as
/// `copy_binary` makes it, runs every time.
#[test]
fn a_copied_binary_runs_while_other_threads_fork() {
    let dir = Scratch::new("cli-copy");
    let stop = Arc::new(AtomicBool::new(false));
    let forkers: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut child = Command::new("true");
                    // SAFETY: the hook only calls usleep, which is async-signal-safe.
                    unsafe {
                        child.pre_exec(|| {
                            libc::usleep(50_000);
                            Ok(())
                        });
                    }
                    let _ = child.status();
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for i in 0..10 {
        let exe = dir.join(format!("gce-guest-{}", i));
        copy_binary(&exe);
        if let Err(e) = Command::new(&exe).arg("--version").output() {
            failures.push(format!("{}: {}", exe.display(), e));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for forker in forkers {
        forker.join().expect("a forking thread");
    }
    assert!(
        failures.is_empty(),
        "copies that did not run: {:?}",
        failures
    );
}

/// The four test-only switches exist only in builds with the `test-hooks` feature: the test
/// build has their names, the product binary (the release build `make test` names in
/// `GCE_GUEST_PRODUCT_BINARY`) has none of them.
#[test]
fn the_product_binary_has_no_test_hooks() {
    const HOOKS: [&str; 5] = [
        "GCE_GUEST_TEST_PANIC",
        "GCE_GUEST_TEST_DISK_EXPAND_KILL",
        "GCE_GUEST_STORAGE_ENDPOINT",
        "GCE_GUEST_HTTPS_VIA",
        "GCE_GUEST_TIME_SCALE",
    ];
    let test_build = names_in(&bin(), &HOOKS);
    assert_eq!(
        test_build.len(),
        HOOKS.len(),
        "the test build has only {:?}",
        test_build
    );
    let Some(product) = std::env::var_os("GCE_GUEST_PRODUCT_BINARY") else {
        common::skip_or_fail(
            "GCE_GUEST_PRODUCT_BINARY names no release binary (make test sets it)",
        );
        return;
    };
    let product = PathBuf::from(product);
    let found = names_in(&product, &HOOKS);
    assert!(found.is_empty(), "{} has {:?}", product.display(), found);
}

/// Which of `names` occur anywhere in a file's bytes (string constants are stored one after
/// another, without separators).
fn names_in<'a>(file: &Path, names: &[&'a str]) -> std::collections::BTreeSet<&'a str> {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {}", file.display(), e));
    let mut found = std::collections::BTreeSet::new();
    let mut at = 0;
    while let Some(offset) = bytes[at..].iter().position(|b| *b == b'G') {
        let start = at + offset;
        at = start + 1;
        found.extend(
            names
                .iter()
                .filter(|n| bytes[start..].starts_with(n.as_bytes())),
        );
    }
    found
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(run(&bin(), &["google_metadata_get"]).status.code(), Some(2));
    assert_eq!(
        run(&bin(), &["google_metadata_get", "--bogus", "x"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(run(&bin(), &[]).status.code(), Some(2));
}

/// build.rs links the static binary with `src/link/hot-code.ld` (the profiled code gathered
/// in `.text.hot`) and packed relative relocations (`.relr.dyn`), which musl applies at
/// start: the sections are there, the script still matches a good share of the code, and
/// the binary runs. (How much memory that saves is `make bench`'s to print.)
#[test]
#[cfg(target_env = "musl")]
fn the_binary_gathers_its_hot_code_and_packs_its_relocations() {
    let out = Command::new(common::tool("readelf"))
        .args(["-SW"])
        .arg(bin())
        .output()
        .expect("run readelf");
    assert!(out.status.success(), "readelf: {:?}", out);
    let sections: Vec<(String, u64)> = stdout(&out)
        .lines()
        .filter_map(|line| {
            let line = line.replace("[ ", "[");
            let fields: Vec<&str> = line.split_whitespace().collect();
            let size = u64::from_str_radix(fields.get(5)?, 16).ok()?;
            Some((fields.get(1)?.to_string(), size))
        })
        .collect();
    let size = |name: &str| sections.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
    let hot = size(".text.hot").expect("a .text.hot section");
    assert!(hot >= 64 * 1024, ".text.hot holds only {} bytes", hot);
    assert!(size(".relr.dyn").is_some(), "no .relr.dyn: {:?}", sections);
    assert!(run(&bin(), &["--version"]).status.success());
}
