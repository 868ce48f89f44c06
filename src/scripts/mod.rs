//! The metadata script runner: startup and shutdown scripts from instance (else project)
//! attributes — `<type>-script-url` first, then `<type>-script` — each written to a fresh
//! 0700 directory and run as its `#!` line says (`interpreter [arg] <path>`, read here:
//! the file is never exec'd itself, so a `noexec` run directory works), else as
//! `<default_shell> <path>`; its merged output logged line by line as `<key>: <line>` and
//! then `<key>: Return code <n>.`.
//!
//! Scripts inherit the runner's working directory and environment (as in Python); output
//! lines longer than a log line are logged in pieces; a script ended by a signal shows a
//! negative return code (as Python's `Popen.wait()` gave it).
//!
//! - [`sources`]: which scripts a metadata document holds and where a URL is fetched from
//!   (pure).
//! - `fetch`: downloads with the service-account token, retries and built-in HTTPS.
//! - `external`: `curl` or GNU `wget` for HTTPS in a build without built-in TLS.
//! - here: the run directory, the shell, running one script and logging its output.

mod external;
mod fetch;
pub mod sources;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};
use crate::mds::Client;
use crate::settings::ScriptSettings;
use crate::timing::scaled;
use fetch::download;
pub use sources::{scripts_in, Script, Source};

/// How long shutdown waits for the metadata server (scaled); startup uses `network_wait_s`.
const SHUTDOWN_METADATA_WAIT_SEC: u64 = 20;

/// The longest piece of an output line one log record carries (the log line limit is
/// 8192 bytes, key and level included).
const LOG_PIECE: usize = 8000;

/// Which scripts to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptType {
    Startup,
    Shutdown,
}

impl ScriptType {
    /// `startup` or `shutdown`.
    pub fn name(self) -> &'static str {
        match self {
            ScriptType::Startup => "startup",
            ScriptType::Shutdown => "shutdown",
        }
    }

    /// Parses `startup` or `shutdown`, in any case (as Python compared them).
    pub fn parse(s: &str) -> Option<ScriptType> {
        match s.to_ascii_lowercase().as_str() {
            "startup" => Some(ScriptType::Startup),
            "shutdown" => Some(ScriptType::Shutdown),
            _ => None,
        }
    }

    /// The logger name the original used: `startup-script` or `shutdown-script`.
    pub fn logger(self) -> &'static str {
        match self {
            ScriptType::Startup => "startup-script",
            ScriptType::Shutdown => "shutdown-script",
        }
    }
}

/// A fresh 0700 directory in `base`.
fn make_dir_in(base: &Path, kind: ScriptType) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    for _ in 0..16 {
        let dir = base.join(format!(
            "{}-scripts.{:08x}",
            kind.name(),
            crate::timing::random_u64() as u32
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create", &dir, e)),
        }
    }
    Err(Error::Msg(format!(
        "cannot create a directory in {}",
        base.display()
    )))
}

/// The fresh 0700 directory for this run's scripts: in `run_dir` when it is set (created
/// if missing), else — or when that fails — in `/run`, else in `/tmp`.
fn make_run_dir(run_dir: &str, kind: ScriptType) -> Result<PathBuf> {
    let configured = run_dir.trim();
    if !configured.is_empty() {
        let base = Path::new(configured);
        let made = std::fs::create_dir_all(base)
            .context("create", base)
            .and_then(|()| make_dir_in(base, kind));
        match made {
            Ok(dir) => return Ok(dir),
            Err(e) => warn!(
                "Cannot use run_dir {}: {}; using the default.",
                configured, e
            ),
        }
    }
    let mut last = Error::Msg("neither /run nor /tmp is a directory".into());
    for base in ["/run", "/tmp"].map(Path::new) {
        if base.is_dir() {
            match make_dir_in(base, kind) {
                Ok(dir) => return Ok(dir),
                Err(e) => last = e,
            }
        }
    }
    Err(last)
}

/// The shell scripts run under: the configured one if it exists, else bash, else sh.
fn choose_shell(configured: &str) -> PathBuf {
    let configured = configured.trim();
    if !configured.is_empty() {
        if Path::new(configured).is_file() {
            return PathBuf::from(configured);
        }
        if configured != "/bin/bash" {
            warn!(
                "default_shell {} does not exist; using /bin/sh.",
                configured
            );
        }
    }
    if Path::new("/bin/bash").is_file() {
        PathBuf::from("/bin/bash")
    } else {
        PathBuf::from("/bin/sh")
    }
}

/// Makes a script's output line fit a log line (invalid UTF-8 replaced, NULs shown).
fn output_text(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .replace('\0', "\\0")
        .trim_end_matches('\r')
        .to_string()
}

/// Cuts `text` into pieces of at most `max` bytes on character boundaries, so a long line
/// is logged whole in several records rather than cut off at the log line's limit.
fn pieces(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// What `<key>: Return code <n>.` shows: the exit code, or minus the signal that ended the
/// script (as Python's `Popen.wait()` gave it).
fn python_return_code(outcome: &crate::exec::Outcome) -> i32 {
    outcome.code.or(outcome.signal.map(|s| -s)).unwrap_or(-1)
}

/// The longest `#!` line read, as the kernel reads it (BINPRM_BUF_SIZE since Linux 5.1).
const SHEBANG_MAX: usize = 256;

/// The command that runs the script at `path` whose text is `body`: the interpreter its
/// `#!` line names, with that line's one optional argument (the rest of the line, as the
/// kernel passes it), then the path; without a `#!` line, `shell PATH`. The script file
/// itself is never exec'd, so a run directory mounted `noexec` works.
fn script_command(shell: &Path, path: &Path, body: &[u8]) -> Vec<std::ffi::OsString> {
    use std::os::unix::ffi::OsStrExt;
    let first_line = body
        .strip_prefix(b"#!")
        .map(|rest| {
            let rest = &rest[..rest.len().min(SHEBANG_MAX - 2)];
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            &rest[..end]
        })
        .unwrap_or_default();
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\r');
    let trimmed = |bytes: &[u8]| -> Vec<u8> {
        let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
        let end = bytes
            .iter()
            .rposition(|b| !blank(b))
            .map_or(start, |i| i + 1);
        bytes[start..end.max(start)].to_vec()
    };
    let line = trimmed(first_line);
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if line.is_empty() {
        argv.push(shell.as_os_str().to_owned());
    } else {
        let split = line.iter().position(blank).unwrap_or(line.len());
        argv.push(std::ffi::OsStr::from_bytes(&line[..split]).to_owned());
        let arg = trimmed(&line[split..]);
        if !arg.is_empty() {
            argv.push(std::ffi::OsStr::from_bytes(&arg).to_owned());
        }
    }
    argv.push(path.as_os_str().to_owned());
    argv
}

fn run_one(shell: &Path, dir: &Path, script: &Script, body: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(&script.key);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&path)
        .context("create", &path)?;
    file.write_all(body).context("write", &path)?;
    // Executable whatever the umask.
    file.set_permissions(std::fs::Permissions::from_mode(0o700))
        .context("chmod", &path)?;
    drop(file);
    // The working directory and environment are the runner's, as they were in Python.
    let argv = script_command(shell, &path, body);
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let key = script.key.as_str();
    let outcome = crate::exec::run_streaming(cmd, None, |line| {
        for piece in pieces(&output_text(line), LOG_PIECE) {
            info!("{}: {}", key, piece);
        }
    })?;
    info!("{}: Return code {}.", key, python_return_code(&outcome));
    Ok(())
}

/// Runs the scripts of `kind`. Problems are logged; the runner always finishes, with a
/// line giving the elapsed time (so a shutdown cut off by the platform shows).
/// `network_wait` is how long startup waits for the metadata server.
pub fn run(kind: ScriptType, settings: &ScriptSettings, network_wait: Duration) {
    let started = Instant::now();
    info!("Starting {} scripts.", kind.name());
    run_all(kind, settings, network_wait);
    info!(
        "Finished running {} scripts in {:.1} s.",
        kind.name(),
        started.elapsed().as_secs_f64()
    );
}

fn run_all(kind: ScriptType, settings: &ScriptSettings, network_wait: Duration) {
    let client = Client::from_env();
    let budget = match kind {
        ScriptType::Startup => network_wait,
        ScriptType::Shutdown => Duration::from_secs(SHUTDOWN_METADATA_WAIT_SEC),
    };
    let doc = match client.get_json_retrying("", budget) {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            error!(
                "The metadata server has no document; no {} scripts run.",
                kind.name()
            );
            return;
        }
        Err(e) => {
            error!(
                "Cannot read metadata ({}); giving up on {} scripts after {:.0} s.",
                e,
                kind.name(),
                scaled(budget).as_secs_f64()
            );
            return;
        }
    };
    let scripts = scripts_in(&doc, kind);
    if scripts.is_empty() {
        info!("No {} scripts found in metadata.", kind.name());
        return;
    }
    for script in &scripts {
        info!("Found {} in metadata.", script.key);
    }
    let dir = match make_run_dir(&settings.run_dir, kind) {
        Ok(d) => d,
        Err(e) => {
            error!("No directory to run {} scripts in: {}", kind.name(), e);
            return;
        }
    };
    let shell = choose_shell(&settings.default_shell);
    for script in &scripts {
        let body = match &script.source {
            Source::Inline(text) => text.clone().into_bytes(),
            Source::Url(url) => {
                info!("Downloading {} from {}.", script.key, url);
                match download(&client, url, &dir) {
                    Ok(body) => body,
                    Err(e) => {
                        warn!("Failed to download {}: {}.", script.key, e);
                        continue;
                    }
                }
            }
        };
        if let Err(e) = run_one(&shell, &dir, script, &body) {
            error!("{}: {}", script.key, e);
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        warn!("Cannot remove {}: {}.", dir.display(), e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shebang_line_is_read_as_the_kernel_reads_it() {
        let run = |body: &str| -> Vec<String> {
            script_command(
                Path::new("/bin/bash"),
                Path::new("/run/d/s"),
                body.as_bytes(),
            )
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
        };
        assert_eq!(run("echo hi"), ["/bin/bash", "/run/d/s"]);
        assert_eq!(run(""), ["/bin/bash", "/run/d/s"]);
        assert_eq!(run("#!/bin/sh\necho"), ["/bin/sh", "/run/d/s"]);
        assert_eq!(
            run("#! /usr/bin/python3 \r\nx"),
            ["/usr/bin/python3", "/run/d/s"]
        );
        assert_eq!(
            run("#!/usr/bin/env python3\n"),
            ["/usr/bin/env", "python3", "/run/d/s"]
        );
        // Everything after the interpreter is one argument, as the kernel passes it.
        assert_eq!(
            run("#!/bin/busybox sh -e -x  \n"),
            ["/bin/busybox", "sh -e -x", "/run/d/s"]
        );
        assert_eq!(run("#!\necho"), ["/bin/bash", "/run/d/s"]);
        assert_eq!(run("#!   \t\n"), ["/bin/bash", "/run/d/s"]);
        assert_eq!(run("# !/bin/sh\n"), ["/bin/bash", "/run/d/s"]);
        let long = format!("#!/bin/{}\n", "x".repeat(400));
        assert_eq!(run(&long)[0].len(), SHEBANG_MAX - 2);
    }

    #[test]
    fn long_lines_are_cut_on_character_boundaries_not_lost() {
        assert!(pieces("", 4).is_empty());
        assert_eq!(pieces("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(pieces("ééé", 3), ["é", "é", "é"]);
        let long = "x".repeat(20_000);
        assert_eq!(pieces(&long, LOG_PIECE).concat(), long);
    }

    #[test]
    fn signals_show_as_negative_return_codes() {
        use crate::exec::Outcome;
        assert_eq!(
            python_return_code(&Outcome {
                code: Some(3),
                signal: None,
                timed_out: false
            }),
            3
        );
        assert_eq!(
            python_return_code(&Outcome {
                code: None,
                signal: Some(9),
                timed_out: false
            }),
            -9
        );
    }

    #[test]
    fn script_types_parse_in_any_case() {
        assert_eq!(ScriptType::parse("Startup"), Some(ScriptType::Startup));
        assert_eq!(ScriptType::parse("SHUTDOWN"), Some(ScriptType::Shutdown));
        assert_eq!(ScriptType::parse("boot"), None);
    }

    #[test]
    fn output_lines_are_made_printable() {
        assert_eq!(output_text(b"a\0b\r"), "a\\0b");
        assert_eq!(output_text(&[0xff, b'x']), "\u{fffd}x");
    }
}
