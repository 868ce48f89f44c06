//! The scripts in `tools/` that tests depend on: `tools/prereqs.sh`, the one list of the
//! packages the tests use (installed by `make test` and by CI), and `tools/run-tests.sh`,
//! whose closing line counts every test binary's results.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::{self, Scratch};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn a_missing_program_names_the_package_to_install() {
    let why = common::find_tool("visudo", "/nonexistent".as_ref()).unwrap_err();
    assert!(why.contains("install the sudo package"), "{}", why);
    let why = common::find_tool("sshd", "/nonexistent".as_ref()).unwrap_err();
    assert!(
        why.contains("install the openssh-server package"),
        "{}",
        why
    );
    let why = common::find_tool("no-such-program", "/nonexistent".as_ref()).unwrap_err();
    assert!(why.contains("not in tools/prereqs.sh"), "{}", why);
    assert_eq!(
        common::find_tool("sh", "/nonexistent:/bin".as_ref()),
        Ok("/bin/sh".into())
    );
}

/// `make test` installs what the tests use (a fresh machine once had `make demo` pass and
/// `make test` fail for want of `visudo`), from the same list CI installs.
#[test]
fn make_test_and_ci_install_the_packages_from_one_list() {
    let makefile = std::fs::read_to_string(Path::new(ROOT).join("Makefile")).unwrap();
    let recipe: Vec<&str> = makefile
        .lines()
        .skip_while(|l| !l.starts_with("test:"))
        .skip(1)
        .take_while(|l| l.starts_with('\t') || l.ends_with('\\'))
        .collect();
    assert!(
        recipe.iter().any(|l| l.contains("tools/prereqs.sh")),
        "make test does not run tools/prereqs.sh: {:?}",
        recipe
    );
    let ci = std::fs::read_to_string(Path::new(ROOT).join(".ci/run")).unwrap();
    assert!(ci.contains("tools/prereqs.sh"), "{}", ci);
    assert!(
        !ci.contains("apt-get install"),
        "CI keeps a list of its own: {}",
        ci
    );
    // Where the tests must pass (CI), every package is installed by now.
    if std::env::var("CI").as_deref() == Ok("true") {
        let check = Command::new("bash")
            .arg(Path::new(ROOT).join("tools/prereqs.sh"))
            .arg("--check")
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "missing: {}",
            String::from_utf8_lossy(&check.stdout)
        );
    }
}

/// A stand-in for cargo: three test binaries, the first of which fails and the last of which
/// dies of a signal; like cargo, it stops after the first failing binary unless it is given
/// `--no-fail-fast`.
const FAKE_CARGO: &str = r#"#!/bin/sh
echo "     Running unittests src/lib.rs (target/debug/deps/a)"
echo "test result: FAILED. 3 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.1s"
echo "error: test failed, to rerun pass \`--lib\`"
case " $* " in *" --no-fail-fast "*) ;; *) exit 101 ;; esac
echo "     Running tests/tests.rs (target/debug/deps/integration)"
echo "spliced test output test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 2s"
echo "     Running unittests src/main.rs (target/debug/deps/c)"
echo "error: test failed, to rerun pass \`--bin gce-guest\`"
echo "Caused by:"
echo "  process didn't exit successfully: \`target/debug/deps/c\` (signal: 11, SIGSEGV: invalid memory reference)"
exit 101
"#;

#[test]
fn the_runner_counts_every_test_binary_even_when_one_fails() {
    let dir = Scratch::new("tools-runner");
    let cargo = dir.join("cargo");
    std::fs::write(&cargo, FAKE_CARGO).unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut path = dir.as_os_str().to_os_string();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg(Path::new(ROOT).join("tools/run-tests.sh"))
        .args(["--features", "x"])
        .env("PATH", path)
        // `make test` names the vendored crates to test; the fake cargo must not see them.
        .env_remove("GCE_GUEST_VENDORED_TESTS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(101), "{}", stdout);
    assert_eq!(
        stdout.lines().last(),
        Some("tests: 8 passed, 2 failed, 3 skipped"),
        "{}",
        stdout
    );
}
