//! `--root DIR`: an applet chrooted into DIR (as from an initramfs with the real root at
//! `/sysroot`), with `/proc`, `/sys` and `/dev` bind-mounted into DIR first when they are
//! not there. Run in the sandbox, whose mount namespace keeps those mounts for inspection.

#![cfg(feature = "emulator")]

use crate::common;

#[test]
fn an_applet_runs_chrooted_with_the_kernel_file_systems_mounted() {
    let sb = sandbox_or_skip!(common::Sandbox::builder()
        .metadata(r#"{"instance":{"id":77,"attributes":{}},"project":{"attributes":{}}}"#)
        .file("/run/sysroot/etc/marker", "the real root\n", 0o644));
    let out = sb.run([
        "--root",
        "/run/sysroot",
        "google_metadata_get",
        "instance/id",
    ]);
    out.assert_success();
    assert_eq!(out.stdout_text(), "77");
    // The bind mounts stay in the sandbox's mount namespace after the applet exits.
    for fs in ["proc/self", "sys/class", "dev/null"] {
        assert!(
            sb.exists(format!("/run/sysroot/{}", fs)),
            "/run/sysroot/{} is missing",
            fs
        );
    }
    // The same form after the applet name, and a second run that finds them mounted.
    let again = sb.run([
        "google_metadata_get",
        "--root",
        "/run/sysroot",
        "instance/id",
    ]);
    again.assert_success();
    let mounts = sb.sh("grep -c ' /run/sysroot/proc ' /proc/self/mountinfo");
    assert_eq!(mounts.stdout_text().trim(), "1", "mounted once, not again");
}

#[test]
fn a_missing_root_is_a_clear_error() {
    let sb = sandbox_or_skip!();
    let out = sb.run([
        "--root",
        "/run/nothing-here",
        "google_metadata_get",
        "instance/id",
    ]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr_text().contains("is not a directory"),
        "{}",
        out.stderr_text()
    );
}
