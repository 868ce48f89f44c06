//! Embeds the git commit the binary was built from, for `--version`, and sets the layout
//! of the static musl binary: the code the daemons run first (`src/link/hot-code.ld`, from
//! `make hot-code`) and packed relative relocations, so an idle daemon maps few pages of it.

use std::path::Path;
use std::process::Command;

fn main() {
    link_layout();
    commit();
}

/// Both only shrink what a running process keeps resident; neither changes behaviour. musl
/// (1.2.4 and later, as Rust's self-contained one) applies `DT_RELR` in a static PIE.
fn link_layout() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/link/hot-code.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    let musl = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "musl");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if !(musl && linux) {
        return;
    }
    if script.exists() {
        // INSERT in the script adds its section to the default layout instead of
        // replacing it, with GNU ld and lld alike.
        println!("cargo:rustc-link-arg-bins=-Xlinker");
        println!("cargo:rustc-link-arg-bins=--script={}", script.display());
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}

fn commit() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown commit".to_string());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    let suffix = if dirty && commit != "unknown commit" {
        "-dirty"
    } else {
        ""
    };
    println!("cargo:rustc-env=GCE_GUEST_COMMIT={}{}", commit, suffix);
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
