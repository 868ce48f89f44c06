//! Running commands inside a sandbox: `nsenter` into its namespaces with a clean
//! environment, in a process group of their own (so a timeout kills the command and all it
//! started), without `CAP_SYS_TIME` (so nothing inside can set the host's clock).
//!
//! [`Cmd`] is the builder, [`Output`] what a finished command left, [`Daemon`] a command
//! left running in the background.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `PATH` every command inside gets.
pub const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long a command may run before it is killed and the test fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a finished command's leftovers may keep its output pipes open.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// What a command runs in: the namespaces of one sandbox's PID 1.
#[derive(Clone, Debug)]
pub struct Target {
    /// PID 1 of the sandbox, as the host numbers it.
    pub pid1: i32,
    /// The sandbox's default time scale.
    pub time_scale: f64,
    /// Host path of the sandbox directory (for messages).
    pub dir: String,
}

/// A command to run inside a sandbox (see `Sandbox::cmd` and `Sandbox::program`).
#[must_use = "a Cmd does nothing until output() or spawn()"]
pub struct Cmd {
    target: Target,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    time_scale: f64,
}

impl Cmd {
    /// A command running `argv` (program first) in `target`.
    pub fn new<I, S>(target: Target, argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let argv: Vec<OsString> = argv
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        assert!(!argv.is_empty(), "sandbox: a command needs a program");
        let time_scale = target.time_scale;
        Cmd {
            target,
            argv,
            env: Vec::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
            time_scale,
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.argv
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Adds an environment variable (after the clean defaults, so it may override them).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Adds several environment variables.
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(mut self, vars: &[(K, V)]) -> Cmd {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// Feeds these bytes on stdin (default: `/dev/null`).
    pub fn stdin(mut self, bytes: impl AsRef<[u8]>) -> Cmd {
        self.stdin = Some(bytes.as_ref().to_vec());
        self
    }

    /// Kills the command and fails the test after this long (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    /// Sets `GCE_GUEST_TIME_SCALE` for this command (default: the sandbox's).
    pub fn time_scale(mut self, scale: f64) -> Cmd {
        self.time_scale = scale;
        self
    }

    /// The command line, for messages.
    pub fn describe(&self) -> String {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.target.pid1))
            .args(["--mount", "--net", "--pid", "--uts", "--ipc", "--"])
            .args(&self.argv)
            .env_clear()
            .env("PATH", GUEST_PATH)
            .env("HOME", "/root")
            .env("GCE_GUEST_TIME_SCALE", self.time_scale.to_string());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // SAFETY: the closure only makes async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                drop_clock_capability()
            });
        }
        cmd
    }

    fn start(&self) -> Started {
        let mut child = self.command().spawn().unwrap_or_else(|e| {
            panic!(
                "sandbox: cannot start nsenter for `{}`: {}",
                self.describe(),
                e
            )
        });
        if let Some(bytes) = self.stdin.clone() {
            let mut pipe = child.stdin.take().expect("stdin was piped");
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        let stdout = Pipe::drain(child.stdout.take().expect("stdout was piped"));
        let stderr = Pipe::drain(child.stderr.take().expect("stderr was piped"));
        Started {
            child,
            stdout,
            stderr,
        }
    }

    /// Runs the command to its end and returns what it left. Panics if it runs longer than
    /// the timeout (after killing it), or if `nsenter` itself fails (the sandbox is gone).
    pub fn output(self) -> Output {
        let described = self.describe();
        let Started {
            mut child,
            stdout,
            stderr,
        } = self.start();
        let group = child.id() as i32;
        let deadline = Instant::now() + self.timeout;
        while peek_exit(&child).is_none() {
            if Instant::now() >= deadline {
                kill_group(group);
                let _ = child.wait();
                let out = stdout.finish(group);
                let err = stderr.finish(group);
                panic!(
                    "sandbox: `{}` still ran after {:?} and was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    described,
                    self.timeout,
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // The group leader stays unreaped until the pipes are done, so its id (the group's
        // id) cannot be reused by another process while the group may still be signalled.
        let stdout = stdout.finish(group);
        let stderr = stderr.finish(group);
        let status = child
            .wait()
            .unwrap_or_else(|e| panic!("sandbox: cannot reap `{}`: {}", described, e));
        let output = Output {
            command: described,
            status,
            stdout,
            stderr,
        };
        check_nsenter(&output, &self.target);
        output
    }

    /// Starts the command in the background. It is killed (with all it started) when the
    /// returned [`Daemon`] is dropped.
    pub fn spawn(self) -> Daemon {
        let described = self.describe();
        let Started {
            child,
            stdout,
            stderr,
        } = self.start();
        let group = child.id() as i32;
        let mut daemon = Daemon {
            command: described,
            child: Some(child),
            group,
            program_pid: None,
            stdout: Some(stdout),
            stderr: Some(stderr),
            target: self.target.clone(),
        };
        daemon.program_pid = daemon.find_program(&self.argv[0]);
        daemon
    }
}

/// Removes `CAP_SYS_TIME` from the bounding set, so the process and everything it runs
/// (as root or not) can never set the system clock, which no namespace isolates.
pub fn drop_clock_capability() -> std::io::Result<()> {
    /// `CAP_SYS_TIME` from `<linux/capability.h>` (not exported by the libc crate).
    const CAP_SYS_TIME: libc::c_ulong = 25;
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_TIME, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// SIGKILLs the process group `group` (whose leader, `nsenter`, the caller has not reaped
/// yet) and waits until its other members are gone, reaped by the sandbox's PID 1, so a test
/// looking right after sees none of them.
fn kill_group(group: i32) {
    // SAFETY: kill with a negative pid signals that process group.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    if !super::wait_until(Duration::from_secs(5), || !group_has_members(group)) {
        eprintln!("sandbox: process group {} outlived SIGKILL for 5 s", group);
    }
}

/// Whether a process other than the leader is in process group `group` (zombies count:
/// they still show in `ps` and `pgrep`).
fn group_has_members(group: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            return false;
        };
        if pid == group {
            return false;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // After the parenthesised command name: state, ppid, pgrp.
        let pgrp = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(2));
        pgrp.and_then(|p| p.parse::<i32>().ok()) == Some(group)
    })
}

/// Panics when the failure came from `nsenter` rather than from the command.
fn check_nsenter(output: &Output, target: &Target) {
    if output.status.code() == Some(1) && output.stderr.starts_with(b"nsenter: ") {
        panic!(
            "sandbox: nsenter could not enter {} (pid {}) for `{}`: {}",
            target.dir,
            target.pid1,
            output.command,
            output.stderr_text().trim_end()
        );
    }
}

struct Started {
    child: Child,
    stdout: Pipe,
    stderr: Pipe,
}

/// An output pipe drained into memory by a thread, readable while the command runs.
struct Pipe {
    data: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Pipe {
    fn drain(mut source: impl Read + Send + 'static) -> Pipe {
        let data = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&data);
        let (tx, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
        Pipe {
            data,
            done,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.snapshot_from(0)
    }

    /// The bytes received after the first `offset`.
    fn snapshot_from(&self, offset: usize) -> Vec<u8> {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.get(offset..).unwrap_or_default().to_vec()
    }

    /// Waits for the end of the output; processes of the command's group that still hold
    /// the pipe after a grace period are killed.
    fn finish(mut self, group: i32) -> Vec<u8> {
        if self.done.recv_timeout(PIPE_GRACE).is_err() {
            kill_group(group);
            if self.done.recv_timeout(Duration::from_secs(10)).is_err() {
                panic!("sandbox: a process outside the command's group keeps its output open");
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.snapshot()
    }
}

/// What a finished command left.
#[derive(Clone)]
pub struct Output {
    /// The command line.
    pub command: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote on stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote on stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// The exit code, `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics (showing both outputs) unless it exited 0; returns itself for chaining.
    #[track_caller]
    pub fn assert_success(&self) -> &Output {
        self.assert_code(0)
    }

    /// Panics (showing both outputs) unless it exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Output {
        if self.status.code() != Some(code) {
            panic!("expected exit code {}, got {:?}", code, self);
        }
        self
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            describe_status(self.status),
            self.stdout_text(),
            self.stderr_text()
        )
    }
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("code {}", code),
        (None, Some(sig)) => format!("signal {}", sig),
        _ => "an unknown status".into(),
    }
}

/// A command running in the background inside a sandbox. Dropping it kills it and
/// everything it started.
pub struct Daemon {
    command: String,
    /// The `nsenter` process (it waits for the program and exits as it did); `None` once
    /// reaped. While it is unreaped its id, the id of the process group, cannot be reused.
    child: Option<Child>,
    group: i32,
    program_pid: Option<i32>,
    stdout: Option<Pipe>,
    stderr: Option<Pipe>,
    target: Target,
}

/// The kernel's `comm` for a program run as `program`: its base name, cut to 15 bytes.
fn comm_of(program: &OsStr) -> &[u8] {
    let bytes = program.as_encoded_bytes();
    let base = match bytes.iter().rposition(|b| *b == b'/') {
        Some(slash) => &bytes[slash + 1..],
        None => bytes,
    };
    &base[..base.len().min(15)]
}

impl Daemon {
    /// Finds the program's own process: `nsenter`'s child once it has exec'd the program.
    fn find_program(&mut self, program: &OsStr) -> Option<i32> {
        let nsenter = self.group;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", nsenter))
                .unwrap_or_default();
            if let Some(pid) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<i32>().ok())
            {
                // By `comm`, not `cmdline`: a daemon may rewrite its argv area at once
                // (sshd's "[listener]" title), and a poll that missed the moment between
                // exec and that rewrite would wait here forever.
                let comm = std::fs::read(format!("/proc/{}/comm", pid)).unwrap_or_default();
                if comm.strip_suffix(b"\n") == Some(comm_of(program)) {
                    return Some(pid);
                }
            }
            if self.try_status().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("sandbox: `{}` did not start within 10 s", self.command);
    }

    fn try_status(&self) -> Option<ExitStatus> {
        self.child.as_ref().and_then(peek_exit)
    }

    /// The program's process id as the host numbers it. Panics if it exited before it
    /// could be seen.
    pub fn pid(&self) -> i32 {
        self.program_pid
            .unwrap_or_else(|| panic!("sandbox: `{}` exited before its pid was seen", self.command))
    }

    /// The program's process id inside the sandbox.
    pub fn ns_pid(&self) -> i32 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("sandbox: `{}` is gone: {}", self.command, e));
        status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("sandbox: no NSpid for `{}`", self.command))
    }

    /// Sends `signal` (for example `libc::SIGTERM`) to the program. Panics if it has
    /// already exited.
    pub fn signal(&self, signal: i32) {
        if self.try_status().is_some() {
            panic!("sandbox: cannot signal `{}`: it has exited", self.command);
        }
        // SAFETY: kill with a pid and a signal number.
        if unsafe { libc::kill(self.pid(), signal) } != 0 {
            panic!(
                "sandbox: cannot signal `{}`: {}",
                self.command,
                std::io::Error::last_os_error()
            );
        }
    }

    /// Waits up to `timeout` for the program to end; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the program still runs.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// What it wrote on stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        self.stdout.as_ref().map(Pipe::snapshot).unwrap_or_default()
    }

    /// What it wrote on stdout so far, as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout()).into_owned()
    }

    /// What it wrote on stderr so far, as text.
    pub fn stderr_text(&self) -> String {
        let bytes = self.stderr.as_ref().map(Pipe::snapshot).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// What it wrote on stderr after its first `offset` bytes (raw: a multi-byte character
    /// may be cut at `offset`), for a poll loop that must not copy a long log every time.
    pub fn stderr_since(&self, offset: usize) -> Vec<u8> {
        self.stderr
            .as_ref()
            .map(|pipe| pipe.snapshot_from(offset))
            .unwrap_or_default()
    }

    /// Kills it (and all it started) and returns what it left.
    pub fn kill(mut self) -> Output {
        kill_group(self.group);
        self.finish()
    }

    /// Waits up to `timeout` for it to end by itself and returns what it left; panics
    /// (after killing it) if it is still running then.
    pub fn wait_output(mut self, timeout: Duration) -> Output {
        if self.wait_timeout(timeout).is_none() {
            let command = self.command.clone();
            let out = self.kill();
            panic!(
                "sandbox: `{}` still ran after {:?} and was killed\n{:?}",
                command, timeout, out
            );
        }
        self.finish()
    }

    /// Collects the output of the ended (or killed) program and reaps `nsenter`.
    fn finish(&mut self) -> Output {
        let group = self.group;
        let stdout = self
            .stdout
            .take()
            .map(|p| p.finish(group))
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .map(|p| p.finish(group))
            .unwrap_or_default();
        let mut child = self.child.take().expect("the daemon is reaped once");
        let status = child
            .wait()
            .unwrap_or_else(|e| panic!("sandbox: cannot reap `{}`: {}", self.command, e));
        let output = Output {
            command: self.command.clone(),
            status,
            stdout,
            stderr,
        };
        check_nsenter(&output, &self.target);
        output
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(self.group);
            let _ = child.wait();
        }
    }
}

impl fmt::Debug for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Daemon(`{}`, pid {:?})", self.command, self.program_pid)
    }
}

/// The exit status of `child` if it has ended, without reaping it.
fn peek_exit(child: &Child) -> Option<ExitStatus> {
    // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child with a valid siginfo_t pointer; WNOWAIT leaves it
    // waitable.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            child.id(),
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: the fields are those waitid filled in for a child state change.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if rc != 0 || pid == 0 {
        return None;
    }
    Some(match info.si_code {
        libc::CLD_EXITED => ExitStatus::from_raw((status & 0xff) << 8),
        libc::CLD_DUMPED => ExitStatus::from_raw(status | 0x80),
        _ => ExitStatus::from_raw(status),
    })
}
