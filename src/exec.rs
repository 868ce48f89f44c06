//! Running external programs: never through a shell, stdin from /dev/null, stdout and stderr
//! merged into one pipe read line by line, an optional deadline after which the whole
//! process group is killed. A program that leaves a background child holding the pipe does
//! not keep us waiting once it has exited itself.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys;

/// How a program ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code, or `None` when a signal ended it.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Killed by us at the deadline.
    pub timed_out: bool,
}

impl Outcome {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The number a log line shows: the exit code, or 128 + signal as shells do.
    pub fn shell_status(&self) -> i32 {
        self.code.or(self.signal.map(|s| 128 + s)).unwrap_or(-1)
    }
}

/// Output captured by [`run`].
#[derive(Clone, Debug)]
pub struct Captured {
    pub outcome: Outcome,
    /// stdout and stderr, interleaved as written.
    pub output: Vec<u8>,
}

impl Captured {
    /// `Ok` when the program exited 0, else an error naming `program`, its return code and
    /// its output on one line.
    pub fn checked(self, program: &str) -> Result<Captured> {
        if self.outcome.success() {
            return Ok(self);
        }
        Err(Error::Command {
            program: program.to_string(),
            detail: format!(
                "exited {}: {}",
                self.outcome.shell_status(),
                self.text().replace('\n', " ")
            ),
        })
    }

    /// The output as text (invalid UTF-8 replaced), trimmed.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).trim().to_string()
    }
}

/// The program name a log line uses for `cmd`.
pub fn program_name(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// Runs `cmd` to completion (or `timeout`), returning its merged output.
pub fn run(cmd: Command, timeout: Duration) -> Result<Captured> {
    let mut output = Vec::new();
    let outcome = run_streaming(cmd, Some(timeout), |line| {
        output.extend_from_slice(line);
        output.push(b'\n');
    })?;
    Ok(Captured { outcome, output })
}

/// Like [`run`], with `input` (at most a pipe's buffer, 64 KiB) on the program's stdin.
pub fn run_with_input(cmd: Command, input: &[u8], timeout: Duration) -> Result<Captured> {
    let program = program_name(&cmd);
    let (reader, mut writer) = std::io::pipe().map_err(|e| Error::sys("create pipe", e))?;
    std::io::Write::write_all(&mut writer, input).map_err(|e| Error::Command {
        program,
        detail: format!("input could not be prepared: {}", e),
    })?;
    drop(writer);
    let mut output = Vec::new();
    let outcome = run_inner(cmd, Stdio::from(reader), Some(timeout), |line| {
        output.extend_from_slice(line);
        output.push(b'\n');
    })?;
    Ok(Captured { outcome, output })
}

/// Runs `cmd` and calls `on_line` with each line of its merged stdout and stderr (without
/// the newline; a long line arrives in 64 KiB pieces). With no `timeout` it waits forever.
pub fn run_streaming(
    cmd: Command,
    timeout: Option<Duration>,
    on_line: impl FnMut(&[u8]),
) -> Result<Outcome> {
    run_inner(cmd, Stdio::null(), timeout, on_line)
}

fn run_inner(
    mut cmd: Command,
    stdin: Stdio,
    timeout: Option<Duration>,
    mut on_line: impl FnMut(&[u8]),
) -> Result<Outcome> {
    let program = program_name(&cmd);
    let (mut reader, writer) = std::io::pipe().map_err(|e| Error::sys("create pipe", e))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| Error::sys("duplicate pipe", e))?;
    cmd.stdin(stdin)
        .stdout(writer2)
        .stderr(writer)
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| Error::Command {
        program: program.clone(),
        detail: format!("could not be started: {}", e),
    })?;
    // The Command owns the pipe's write ends; dropping it lets us see EOF.
    drop(cmd);
    let _ = sys::set_nonblocking(reader.as_fd());
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut exited: Option<std::process::ExitStatus> = None;
    let mut timed_out = false;
    let mut eof = false;
    let mut exit_nap = Duration::from_micros(50);
    loop {
        if !eof {
            let wait_ms = if exited.is_some() { 0 } else { 100 };
            sys::poll_one(reader.as_fd(), libc::POLLIN, wait_ms);
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        pending.extend_from_slice(&buf[..n]);
                        emit_lines(&mut pending, &mut on_line);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break, // WouldBlock: nothing more right now
                }
            }
        }
        if exited.is_some() {
            break;
        }
        match child.try_wait() {
            Ok(Some(status)) => exited = Some(status),
            Ok(None) if eof => {
                // Output closed but the program runs on (usually it is just exiting): wait
                // for it (with deadline), a short nap first, longer ones as it goes on.
                std::thread::sleep(exit_nap);
                exit_nap = (exit_nap * 2).min(Duration::from_millis(10));
            }
            Ok(None) => {}
            Err(e) => return Err(Error::sys("wait for child", e)),
        }
        if exited.is_none() {
            if let Some(d) = deadline {
                if Instant::now() >= d {
                    // The whole group: the child was made its leader.
                    let _ = sys::kill_group(child.id(), libc::SIGKILL);
                    let _ = child.kill();
                    exited = child.wait().ok();
                    timed_out = true;
                }
            }
        }
    }
    if !pending.is_empty() {
        on_line(&pending);
    }
    let status = exited.ok_or_else(|| Error::Command {
        program,
        detail: "could not be waited for".to_string(),
    })?;
    Ok(Outcome {
        code: status.code(),
        signal: status.signal(),
        timed_out,
    })
}

fn emit_lines(pending: &mut Vec<u8>, on_line: &mut impl FnMut(&[u8])) {
    let mut start = 0;
    while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
        on_line(&pending[start..start + pos]);
        start += pos + 1;
    }
    while pending.len() - start >= 64 * 1024 {
        on_line(&pending[start..start + 64 * 1024]);
        start += 64 * 1024;
    }
    pending.drain(..start);
}

/// Finds a program the way `execvp` would, in `PATH` or, when `PATH` is unset, the usual
/// system directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = Path::new(name);
        return is_executable(p).then(|| p.to_path_buf());
    }
    let path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Turns a command template such as `useradd -m -s /bin/bash -p * {user}` into argv:
/// split on spaces (no shell, no quoting, as the Python package did), then each
/// `{name}` replaced by its value. A value never splits into more words.
pub fn expand_template(template: &str, vars: &[(&str, &str)]) -> Vec<String> {
    template
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(|word| {
            let mut out = word.to_string();
            for (name, value) in vars {
                out = out.replace(&format!("{{{}}}", name), value);
            }
            out
        })
        .collect()
}

/// A `Command` from an argv list; `None` when it is empty.
pub fn command_from_argv(argv: &[String]) -> Option<Command> {
    let (program, args) = argv.split_first()?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    Some(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn merges_stdout_and_stderr_by_line() {
        let out = run(
            sh("echo one; echo two >&2; printf three"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.output, b"one\ntwo\nthree\n");
        assert!(out.outcome.success());
    }

    #[test]
    fn reports_exit_codes_and_signals() {
        let out = run(sh("exit 7"), Duration::from_secs(10)).unwrap();
        assert_eq!(out.outcome.code, Some(7));
        let out = run(sh("kill -TERM $$"), Duration::from_secs(10)).unwrap();
        assert_eq!(out.outcome.signal, Some(libc::SIGTERM));
        assert_eq!(out.outcome.shell_status(), 128 + libc::SIGTERM);
    }

    #[test]
    fn kills_at_the_deadline() {
        let start = Instant::now();
        let out = run(sh("sleep 30"), Duration::from_millis(300)).unwrap();
        assert!(out.outcome.timed_out);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_background_child_holding_the_pipe_does_not_block() {
        let start = Instant::now();
        let out = run(sh("(sleep 20 &) ; echo done"), Duration::from_secs(15)).unwrap();
        assert!(out.outcome.success());
        assert_eq!(out.text(), "done");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn input_reaches_stdin() {
        let out = run_with_input(
            sh("read line; echo got $line"),
            b"alice:*\n",
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.text(), "got alice:*");
    }

    #[test]
    fn a_missing_program_is_an_error() {
        assert!(run(Command::new("/nonexistent/prog"), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn templates_split_on_spaces_and_substitute_whole_values() {
        let argv = expand_template("useradd -m -s /bin/bash -p * {user}", &[("user", "a b")]);
        assert_eq!(argv, ["useradd", "-m", "-s", "/bin/bash", "-p", "*", "a b"]);
        let argv = expand_template(
            "gpasswd -a {user} {group}",
            &[("user", "u"), ("group", "g")],
        );
        assert_eq!(argv, ["gpasswd", "-a", "u", "g"]);
    }
}
