//! The integration-test sandbox, shared by every test in `tests/` (`crate::common`).
//!
//! A [`Sandbox`] runs the built `gce-guest` binary as root inside private namespaces
//! (`unshare --mount --net --pid --uts --ipc`), so `useradd`, `flock`, netlink and files are
//! the real ones while the host's users, files, routes and clock are never touched:
//!
//! - `/etc`, `/var`, `/home`, `/root` and `/run` are overlays whose upper directories live
//!   in the sandbox's temporary directory (so [`Sandbox::changes`] can list what changed);
//!   `/tmp` is a private directory of the sandbox.
//! - `/dev` is a private tmpfs: the host's null, zero, full, random, urandom, tty and
//!   net/tun (TAP devices are made in the sandbox's network namespace), a fresh devpts and
//!   shm, `/dev/console` (a FIFO the test reads: the serial console) and
//!   `/dev/log` (a datagram socket the test process binds: syslog).
//! - `/sys` is a fresh read-only sysfs of the sandbox's network namespace; `/proc/sys`
//!   (except `/proc/sys/net`, which is per namespace) and `/proc/irq` are read-only.
//! - Loopback is up and carries 169.254.169.254, where the metadata emulator
//!   (`gce-guest google_metadata_emulator`) listens on port 80, so the binary's default
//!   address is the one exercised. Its admin API is reached over a unix socket.
//! - Nothing inside holds `CAP_SYS_TIME`: the system clock has no namespace.
//!
//! PID 1 of the sandbox is a small generated shell script; dropping the [`Sandbox`] kills it
//! and with it every process inside, and removes the temporary directory.
//!
//! Tests start one with [`sandbox_or_skip!`], which skips the test (or fails it when `CI`
//! is `true`) where namespaces are not available.

mod admin;
mod capture;
mod changes;
mod exec;
mod passwd;
mod scratch;
mod tools;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use admin::Emulator;
pub use changes::{Change, ChangeKind, EntryType};
pub use exec::{Cmd, Daemon, Output, GUEST_PATH};
pub use passwd::{Group, User};
pub use scratch::Scratch;
pub use tools::{find_tool, tool};

/// The time scale commands get unless a sandbox or command says otherwise.
pub const DEFAULT_TIME_SCALE: f64 = 0.05;
/// The directories that are overlays inside the sandbox.
pub const OVERLAID_DIRS: [&str; 5] = ["/etc", "/var", "/home", "/root", "/run"];
/// Where the metadata emulator listens inside (the binary's default address).
pub const METADATA_ADDRESS: &str = "169.254.169.254:80";
/// How long a sandbox may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Prefix of every sandbox directory's name.
const DIR_PREFIX: &str = "gce-sandbox-";

/// Starts a sandbox, or skips the test: evaluates to a [`Sandbox`] or returns from the
/// calling test after printing `skipped: <reason>`. When the environment variable `CI` is
/// `true` an unavailable sandbox fails the test instead.
///
/// `sandbox_or_skip!()` starts a default sandbox; `sandbox_or_skip!(builder)` builds one
/// from a [`SandboxBuilder`].
#[macro_export]
macro_rules! sandbox_or_skip {
    () => {
        $crate::sandbox_or_skip!($crate::common::Sandbox::builder())
    };
    ($builder:expr) => {
        match $builder.try_build() {
            Ok(sandbox) => sandbox,
            Err(reason) => {
                $crate::common::skip_or_fail(&reason);
                return;
            }
        }
    };
}

/// Sets the time scale of the library code this test process runs itself (the metadata
/// client against an in-process emulator) to [`DEFAULT_TIME_SCALE`]. The library reads it
/// once per process, so every test that runs such code calls this first, whatever the order
/// the tests run in.
pub fn scale_time_in_process() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        std::env::set_var(
            gce_guest::timing::TIME_SCALE_ENV,
            DEFAULT_TIME_SCALE.to_string(),
        )
    });
}

/// Reports an unavailable sandbox: panics when `CI` is `true`, else prints
/// `skipped: <reason>` (the caller then returns).
pub fn skip_or_fail(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "the test sandbox is required in CI but unavailable: {}",
            reason
        );
    }
    println!("skipped: {}", reason);
}

/// Whether sandboxes can run here (root, util-linux `unshare`/`nsenter`, `ip`, overlayfs,
/// a suitable temporary directory); `Err` says why not. Checked once per test process.
pub fn availability() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT.get_or_init(probe).clone()
}

fn probe() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the sandbox needs root (run the tests as root)".into());
    }
    for program in ["unshare", "nsenter", "mount", "ip", "sh"] {
        tools::find_tool(program, &search_path())?;
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return Err("the kernel has no overlay file system".into());
    }
    for dir in OVERLAID_DIRS {
        if !fs::symlink_metadata(dir)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            return Err(format!("{} is not a directory on this host", dir));
        }
    }
    let base = base_dir()?;
    // Try the real thing once: namespaces plus an overlay mount.
    let dir = scratch::unique_dir(&base, &format!("{}probe-", DIR_PREFIX))
        .map_err(|e| format!("cannot create a directory in {}: {}", base.display(), e))?;
    for sub in ["lower", "upper", "work", "merged"] {
        fs::create_dir_all(dir.join(sub))
            .map_err(|e| format!("cannot create {}: {}", dir.display(), e))?;
    }
    let d = dir.display();
    let script = format!(
        "mount -t overlay overlay -o lowerdir={d}/lower,upperdir={d}/upper,workdir={d}/work {d}/merged && \
         ip link set lo up && ip addr add 169.254.169.254/32 dev lo"
    );
    let result = Command::new("unshare")
        .args([
            "--mount",
            "--net",
            "--pid",
            "--uts",
            "--ipc",
            "--fork",
            "--kill-child",
            "--mount-proc",
        ])
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .output();
    let _ = fs::remove_dir_all(&dir);
    match result {
        Err(e) => Err(format!("cannot run unshare: {}", e)),
        Ok(out) if !out.status.success() => Err(format!(
            "namespaces or overlayfs are not usable here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// The directory sandboxes are made in: `$TMPDIR` or `/tmp`, on a file system that can hold
/// overlay upper directories and not itself inside an overlaid directory.
fn base_dir() -> Result<PathBuf, String> {
    let mut reasons = Vec::new();
    for candidate in [std::env::temp_dir(), PathBuf::from("/tmp")] {
        match check_base_dir(&candidate) {
            Ok(dir) => return Ok(dir),
            Err(reason) => reasons.push(reason),
        }
    }
    Err(reasons.join("; "))
}

fn check_base_dir(dir: &Path) -> Result<PathBuf, String> {
    let dir = fs::canonicalize(dir).map_err(|e| format!("{}: {}", dir.display(), e))?;
    if let Some(overlaid) = OVERLAID_DIRS.iter().find(|o| dir.starts_with(o)) {
        return Err(format!(
            "{} is inside {}, which the sandbox overlays",
            dir.display(),
            overlaid
        ));
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| "bad path")?;
    // SAFETY: statfs with a valid path and an out-parameter of the right type.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!(
            "statfs {}: {}",
            dir.display(),
            io::Error::last_os_error()
        ));
    }
    const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
    if st.f_type as i64 == OVERLAYFS_SUPER_MAGIC {
        return Err(format!(
            "{} is on overlayfs, which cannot hold overlay upper directories",
            dir.display()
        ));
    }
    Ok(dir)
}

/// Where host programs are looked for: `PATH`, then the guest's `PATH`.
fn search_path() -> std::ffi::OsString {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    path.push(":");
    path.push(GUEST_PATH);
    path
}

/// Spawns `cmd` from one thread that lives as long as the test process, so the
/// parent-death signal set on sandboxes (see `SandboxBuilder::build`) fires when the test
/// process dies, not when the test thread that happened to start it ends.
fn spawn_from_keeper(cmd: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sandbox-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("sandbox: cannot start the keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("the keeper thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the keeper thread is gone"))?
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Strips the `<PRI>` and the `Mmm dd hh:mm:ss ` timestamp off a syslog datagram or a
/// console line, leaving `name: LEVEL message`.
pub fn strip_syslog_header(line: &str) -> &str {
    let line = match line.strip_prefix('<').and_then(|rest| rest.split_once('>')) {
        Some((pri, rest)) if !pri.is_empty() && pri.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => line,
    };
    let b = line.as_bytes();
    let stamped = b.len() >= 16
        && b[..3].iter().all(u8::is_ascii_alphabetic)
        && b[3] == b' '
        && b[6] == b' '
        && b[9] == b':'
        && b[12] == b':'
        && b[15] == b' ';
    if stamped {
        &line[16..]
    } else {
        line
    }
}

/// Quotes a string for the shell (single quotes).
fn sh_quote(s: impl AsRef<OsStr>) -> String {
    let s = s.as_ref().to_string_lossy();
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A file to create inside before the emulator starts.
#[derive(Clone, Debug)]
struct SeedFile {
    path: PathBuf,
    contents: Vec<u8>,
    mode: u32,
}

/// Configures a [`Sandbox`] before it starts (see [`Sandbox::builder`]).
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until build() or try_build()"]
pub struct SandboxBuilder {
    metadata: Option<String>,
    time_scale: f64,
    files: Vec<SeedFile>,
}

impl SandboxBuilder {
    /// Serves this recursive metadata document (JSON text) instead of the emulator's
    /// built-in sample.
    pub fn metadata(mut self, json: &str) -> SandboxBuilder {
        self.metadata = Some(json.to_string());
        self
    }

    /// The `GCE_GUEST_TIME_SCALE` commands get by default (0.05 unless set).
    pub fn time_scale(mut self, scale: f64) -> SandboxBuilder {
        self.time_scale = scale;
        self
    }

    /// Creates the file `path` (absolute, under an overlaid directory or `/tmp`) with
    /// `contents` and permission bits `mode` inside, before the emulator starts. Parent
    /// directories are created as needed. The files are part of the starting state, so
    /// [`Sandbox::changes`] does not list them unless they change again.
    pub fn file(
        mut self,
        path: impl AsRef<Path>,
        contents: impl AsRef<[u8]>,
        mode: u32,
    ) -> SandboxBuilder {
        let path = path.as_ref().to_path_buf();
        check_inside_path(&path);
        self.files.push(SeedFile {
            path,
            contents: contents.as_ref().to_vec(),
            mode,
        });
        self
    }

    /// Starts the sandbox, or says why sandboxes are not available here. Panics when they
    /// are available but this one fails to start.
    pub fn try_build(self) -> Result<Sandbox, String> {
        availability()?;
        Ok(self.start())
    }

    /// [`SandboxBuilder::try_build`] for helpers that return an `Option`: `None` after
    /// [`skip_or_fail`] when sandboxes are not available (a failure in CI).
    pub fn build_or_skip(self) -> Option<Sandbox> {
        self.try_build()
            .map_err(|reason| skip_or_fail(&reason))
            .ok()
    }

    fn start(self) -> Sandbox {
        let base = base_dir().unwrap_or_else(|e| panic!("sandbox: {}", e));
        let dir = make_sandbox_dir(&base);
        let mut sandbox = Sandbox {
            dir: dir.clone(),
            binary: PathBuf::new(),
            time_scale: self.time_scale,
            unshare: None,
            pid1: 0,
            syslog: None,
            console: None,
            baseline: changes::Scan::new(),
        };
        // From here on a panic drops `sandbox`, which cleans up whatever was started.
        sandbox.binary = prepare_dir(&dir, &self);
        sandbox.console = Some(
            capture::Capture::fifo(&dir.join("console"))
                .unwrap_or_else(|e| panic!("sandbox: cannot open the console FIFO: {}", e)),
        );
        let log = fs::File::create(dir.join("init.log")).expect("sandbox: cannot create init.log");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--net",
            "--pid",
            "--uts",
            "--ipc",
            "--fork",
            "--kill-child",
            "--mount-proc",
        ])
        .arg("/bin/sh")
        .arg(dir.join("init.sh"))
        .current_dir("/")
        .env_clear()
        .env("PATH", GUEST_PATH)
        .env("HOME", "/root")
        .env("GCE_GUEST_TIME_SCALE", self.time_scale.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("sandbox: cannot dup init.log"))
        .stderr(log);
        // SAFETY: the closure only makes async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(|| {
                // The sandbox dies with the test process (see `spawn_from_keeper`).
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                exec::drop_clock_capability()
            });
        }
        sandbox.unshare = Some(
            spawn_from_keeper(cmd).unwrap_or_else(|e| panic!("sandbox: cannot run unshare: {}", e)),
        );
        sandbox.pid1 = sandbox.find_pid1();
        sandbox.wait_for_file("stage-net", "the network namespace");
        let sock = capture::bind_datagram_in_netns(sandbox.pid1, &dir.join("log"))
            .unwrap_or_else(|e| sandbox.fail(&format!("cannot bind the syslog socket: {}", e)));
        sandbox.syslog = Some(
            capture::Capture::datagrams(sock)
                .unwrap_or_else(|e| sandbox.fail(&format!("syslog capture: {}", e))),
        );
        sandbox.wait_for_file("ready", "the metadata emulator");
        sandbox.baseline = sandbox.scan();
        sandbox
    }
}

/// Panics unless `path` is absolute, free of `..`, and below a directory private to the
/// sandbox.
fn check_inside_path(path: &Path) {
    let private = OVERLAID_DIRS
        .iter()
        .chain(["/tmp"].iter())
        .any(|d| path.starts_with(d) && path != Path::new(d));
    let dotdot = path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir));
    if !path.is_absolute() || dotdot || !private {
        panic!(
            "sandbox: {} is not a path below {} or /tmp",
            path.display(),
            OVERLAID_DIRS.join(", ")
        );
    }
}

/// Makes a fresh, uniquely named sandbox directory under `base`.
fn make_sandbox_dir(base: &Path) -> PathBuf {
    remove_stale_dirs(base);
    scratch::unique_dir(base, DIR_PREFIX).unwrap_or_else(|e| {
        panic!(
            "sandbox: cannot create a directory in {}: {}",
            base.display(),
            e
        )
    })
}

/// Removes sandbox directories left by test processes that died (once per process).
fn remove_stale_dirs(base: &Path) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let Ok(entries) = fs::read_dir(base) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
                continue;
            };
            let pid = rest.split('-').find_map(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if pid != std::process::id() && !Path::new(&format!("/proc/{}", pid)).exists() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    });
}

/// Fills the sandbox directory: upper and work directories, mount points, the private
/// `/tmp`, the console FIFO, seed files and the init script. Returns the binary's path as
/// seen inside.
fn prepare_dir(dir: &Path, builder: &SandboxBuilder) -> PathBuf {
    let mk = |p: PathBuf, mode: u32| {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&p)
            .unwrap_or_else(|e| panic!("sandbox: cannot create {}: {}", p.display(), e));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("sandbox: chmod");
    };
    for overlaid in OVERLAID_DIRS {
        let name = &overlaid[1..];
        mk(dir.join("upper").join(name), 0o755);
        mk(dir.join("work").join(name), 0o755);
    }
    mk(dir.join("devfs"), 0o755);
    mk(dir.join("files"), 0o700);
    mk(dir.join("tmp"), 0o1777);
    // Inside, the sandbox directory is bind-mounted back at its own path in the private
    // /tmp, so paths like the admin socket are the same on both sides.
    let inside_tmp_mount = dir
        .strip_prefix("/tmp")
        .ok()
        .map(|rel| dir.join("tmp").join(rel));
    if let Some(mount_point) = &inside_tmp_mount {
        mk(mount_point.clone(), 0o755);
    }
    let fifo =
        std::ffi::CString::new(dir.join("console").as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo with a valid path.
    if unsafe { libc::mkfifo(fifo.as_ptr(), 0o622) } != 0 {
        panic!(
            "sandbox: cannot make the console FIFO: {}",
            io::Error::last_os_error()
        );
    }

    let built = PathBuf::from(env!("CARGO_BIN_EXE_gce-guest"));
    // A binary under /tmp would be hidden by the private /tmp: use a copy in the sandbox.
    let binary = if built.starts_with("/tmp") {
        let copy = dir.join("gce-guest");
        fs::copy(&built, &copy)
            .unwrap_or_else(|e| panic!("sandbox: cannot copy {}: {}", built.display(), e));
        copy
    } else {
        built
    };

    let metadata_arg = match &builder.metadata {
        Some(json) => {
            let file = dir.join("metadata.json");
            fs::write(&file, json).expect("sandbox: cannot write metadata.json");
            format!(" --metadata {}", sh_quote(&file))
        }
        None => String::new(),
    };
    let mut seeds = String::new();
    for (i, seed) in builder.files.iter().enumerate() {
        let payload = dir.join("files").join(i.to_string());
        fs::write(&payload, &seed.contents).expect("sandbox: cannot write a seed file");
        seeds.push_str(&format!(
            "seed {} {} {:o}\n",
            sh_quote(&payload),
            sh_quote(&seed.path),
            seed.mode
        ));
    }
    let tmp_rebind = match &inside_tmp_mount {
        Some(mount_point) => format!("mount --bind \"$SB\" {}\n", sh_quote(mount_point)),
        None => String::new(),
    };
    let script = INIT_SCRIPT
        .replace("@SB@", &sh_quote(dir))
        .replace("@BIN@", &sh_quote(&binary))
        .replace("@METADATA_ARG@", &metadata_arg)
        .replace("@LISTEN@", METADATA_ADDRESS)
        .replace("@SEEDS@\n", &seeds)
        .replace("@TMP_REBIND@\n", &tmp_rebind);
    fs::write(dir.join("init.sh"), script).expect("sandbox: cannot write init.sh");
    binary
}

/// PID 1 of a sandbox. `@...@` are filled in by `prepare_dir`.
const INIT_SCRIPT: &str = r#"#!/bin/sh
# PID 1 of a gce-guest test sandbox, generated by tests/common/mod.rs.
set -eu
SB=@SB@
say() { echo "sandbox init: $*" >&2; }
ro_bind() { [ -e "$1" ] || return 0; mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; }
inside_only() {
    case "$(realpath -m -- "$1")" in
        /etc/?*|/var/?*|/home/?*|/root/?*|/run/?*|/tmp/?*) ;;
        *) say "refusing to write $1 outside the sandbox's private directories"; exit 1 ;;
    esac
}
seed() { inside_only "$2"; mkdir -p -- "$(dirname -- "$2")"; cp -- "$1" "$2"; chmod "$3" "$2"; }

mount --make-rprivate /
# /run first: mount(8) may keep its own state under /run/mount.
for d in run etc var home root; do
    opts="lowerdir=/$d,upperdir=$SB/upper/$d,workdir=$SB/work/$d"
    mount -t overlay overlay -o "$opts,metacopy=off,redirect_dir=off" "/$d" 2>/dev/null ||
        mount -t overlay overlay -o "$opts" "/$d"
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
ro_bind /proc/sys
mount --bind /proc/sys/net /proc/sys/net
mount -o remount,bind,rw /proc/sys/net
ro_bind /proc/irq
ro_bind /proc/sysrq-trigger

ip link set lo up
ip addr add 169.254.169.254/32 dev lo
echo 4096 > /proc/sys/net/unix/max_dgram_qlen
: > "$SB/stage-net"

# The test process binds $SB/log from inside this network namespace.
n=0
while [ ! -S "$SB/log" ]; do
    n=$((n + 1))
    [ "$n" -lt 3000 ] || { say "the syslog socket never appeared"; exit 1; }
    sleep 0.01
done

dev="$SB/devfs"
mount -t tmpfs -o mode=755,nosuid,size=16m sandbox-dev "$dev"
for n in null zero full random urandom tty; do
    : > "$dev/$n"
    mount --bind "/dev/$n" "$dev/$n"
done
if [ -c /dev/net/tun ]; then
    mkdir "$dev/net"
    : > "$dev/net/tun"
    mount --bind /dev/net/tun "$dev/net/tun"
fi
mkdir "$dev/pts" "$dev/shm"
if mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$dev/pts" 2>/dev/null; then
    ln -s pts/ptmx "$dev/ptmx"
else
    mount --rbind /dev/pts "$dev/pts"
    : > "$dev/ptmx"
    mount --bind /dev/ptmx "$dev/ptmx"
fi
mount -t tmpfs -o mode=1777,nosuid,nodev,size=64m sandbox-shm "$dev/shm"
ln -s /proc/self/fd "$dev/fd"
ln -s /proc/self/fd/0 "$dev/stdin"
ln -s /proc/self/fd/1 "$dev/stdout"
ln -s /proc/self/fd/2 "$dev/stderr"
: > "$dev/console"
mount --bind "$SB/console" "$dev/console"
: > "$dev/log"
mount --bind "$SB/log" "$dev/log"
mount --move "$dev" /dev

@TMP_REBIND@
mount --rbind "$SB/tmp" /tmp

@SEEDS@
@BIN@ google_metadata_emulator --listen @LISTEN@@METADATA_ARG@ \
    --admin-socket "$SB/admin.sock" --ready-file "$SB/ready" > /dev/null &
status=0
wait $! || status=$?
say "the metadata emulator exited with status $status"
# Stay PID 1 (reaping orphans) until the test ends the sandbox.
while :; do
    sleep 3600 &
    wait $! || true
done
"#;

/// A running sandbox (see the module documentation). Dropping it ends every process
/// inside and removes its directory.
pub struct Sandbox {
    dir: PathBuf,
    binary: PathBuf,
    time_scale: f64,
    unshare: Option<Child>,
    pid1: i32,
    syslog: Option<capture::Capture>,
    console: Option<capture::Capture>,
    baseline: changes::Scan,
}

impl Sandbox {
    /// A builder for a sandbox with non-default settings.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder {
            metadata: None,
            time_scale: DEFAULT_TIME_SCALE,
            files: Vec::new(),
        }
    }

    /// The sandbox's directory on the host (the same path is valid inside).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `gce-guest` binary's path inside the sandbox.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// PID 1 of the sandbox, as the host numbers it.
    pub fn pid1(&self) -> i32 {
        self.pid1
    }

    fn target(&self) -> exec::Target {
        exec::Target {
            pid1: self.pid1,
            time_scale: self.time_scale,
            dir: self.dir.display().to_string(),
        }
    }

    /// A command running the `gce-guest` binary with `args` (applet first), to configure
    /// and then run with `.output()` or `.spawn()`.
    pub fn cmd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.check_alive();
        let mut argv = vec![self.binary.as_os_str().to_os_string()];
        argv.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        Cmd::new(self.target(), argv)
    }

    /// A command running any program inside (`argv[0]` found through `PATH`). A program
    /// `tools/prereqs.sh` lists must be installed (the sandbox shares the host's `/usr`):
    /// the test fails naming its package otherwise.
    pub fn program<I, S>(&self, argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.check_alive();
        let argv: Vec<std::ffi::OsString> = argv
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        if let Some(name) = argv.first().and_then(|a| a.to_str()) {
            if tools::package_of(name).is_some() {
                tool(name);
            }
        }
        Cmd::new(self.target(), argv)
    }

    /// Runs `gce-guest ARGS` inside and waits for it (60 s at most).
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args).output()
    }

    /// Runs `gce-guest ARGS` inside with extra environment variables.
    pub fn run_env<I, S>(&self, args: I, env: &[(&str, &str)]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args).envs(env).output()
    }

    /// Starts `gce-guest ARGS` in the background inside.
    pub fn spawn<I, S>(&self, args: I) -> Daemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args).spawn()
    }

    /// Starts `gce-guest ARGS` in the background inside with extra environment variables.
    pub fn spawn_env<I, S>(&self, args: I, env: &[(&str, &str)]) -> Daemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args).envs(env).spawn()
    }

    /// Runs `/bin/sh -c SCRIPT` inside.
    pub fn sh(&self, script: &str) -> Output {
        self.program(["/bin/sh", "-c", script]).output()
    }

    /// Reads a file inside; `None` when it does not exist. Panics on other errors.
    pub fn read(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let path = path.as_ref();
        let out = self
            .program([
                "/bin/sh",
                "-c",
                r#"[ -e "$1" ] || exit 3; exec cat -- "$1""#,
                "sh",
            ])
            .args([path])
            .output();
        match out.code() {
            Some(0) => Some(out.stdout),
            Some(3) => None,
            _ => panic!("sandbox: cannot read {}: {:?}", path.display(), out),
        }
    }

    /// Reads a text file inside; `None` when it does not exist.
    pub fn read_string(&self, path: impl AsRef<Path>) -> Option<String> {
        self.read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Whether a path exists inside (a dangling symlink does not).
    pub fn exists(&self, path: impl AsRef<Path>) -> bool {
        self.program(["test", "-e"])
            .args([path.as_ref()])
            .output()
            .success()
    }

    /// Writes a file inside (creating parent directories), keeping the mode of an
    /// existing file (0644 for a new one). Only paths below the sandbox's private
    /// directories (`/etc`, `/var`, `/home`, `/root`, `/run`, `/tmp`) are accepted, after
    /// resolving symlinks inside.
    pub fn write(&self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) {
        self.write_file(path.as_ref(), contents.as_ref(), None);
    }

    /// Writes a file inside and sets its permission bits.
    pub fn write_mode(&self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>, mode: u32) {
        self.write_file(path.as_ref(), contents.as_ref(), Some(mode));
    }

    fn write_file(&self, path: &Path, contents: &[u8], mode: Option<u32>) {
        check_inside_path(path);
        let script = r#"p=$(realpath -m -- "$1")
case "$p" in
    /etc/?*|/var/?*|/home/?*|/root/?*|/run/?*|/tmp/?*) ;;
    *) echo "refusing to write $1: it resolves to $p, outside the sandbox" >&2; exit 4 ;;
esac
mkdir -p -- "$(dirname -- "$p")"
cat > "$p"
[ -z "$2" ] || chmod "$2" "$p""#;
        let mode = mode.map(|m| format!("{:o}", m)).unwrap_or_default();
        let out = self
            .program(["/bin/sh", "-c", script, "sh"])
            .stdin(contents)
            .args([path.as_os_str(), OsStr::new(&mode)])
            .output();
        if !out.success() {
            panic!("sandbox: cannot write {}: {:?}", path.display(), out);
        }
    }

    /// The admin handle of this sandbox's metadata emulator.
    pub fn emulator(&self) -> Emulator {
        Emulator::new(self.dir.join("admin.sock"))
    }

    /// Every syslog datagram received so far, as text (trailing newline removed).
    pub fn syslog(&self) -> Vec<String> {
        let Some(capture) = &self.syslog else {
            return Vec::new();
        };
        capture
            .chunks()
            .iter()
            .map(|d| {
                String::from_utf8_lossy(d)
                    .trim_end_matches(['\n', '\0'])
                    .to_string()
            })
            .collect()
    }

    /// The `name: LEVEL message` part of every syslog datagram so far, in order: the form
    /// tests assert on.
    pub fn log_lines(&self) -> Vec<String> {
        self.syslog()
            .iter()
            .map(|d| strip_syslog_header(d).to_string())
            .collect()
    }

    /// Everything written to the sandbox's `/dev/console` so far.
    pub fn console(&self) -> String {
        let Some(capture) = &self.console else {
            return String::new();
        };
        String::from_utf8_lossy(&capture.bytes()).into_owned()
    }

    /// The console's lines with their timestamps stripped (`name: LEVEL message`).
    pub fn console_lines(&self) -> Vec<String> {
        self.console()
            .lines()
            .map(|l| strip_syslog_header(l).to_string())
            .collect()
    }

    /// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, cond: impl FnMut() -> bool) -> bool {
        wait_until(timeout, cond)
    }

    /// Waits up to `timeout` for a syslog line (as [`Sandbox::log_lines`] gives them)
    /// containing `needle`; returns whether one came.
    pub fn wait_for_log(&self, timeout: Duration, needle: &str) -> bool {
        wait_until(timeout, || {
            self.log_lines().iter().any(|l| l.contains(needle))
        })
    }

    /// What changed under the overlaid directories since the sandbox started (seed files
    /// and the sandbox's own set-up are the starting state), sorted by path.
    pub fn changes(&self) -> Vec<Change> {
        changes::diff(&self.baseline, &self.scan())
    }

    fn scan(&self) -> changes::Scan {
        let uppers: Vec<(String, PathBuf)> = OVERLAID_DIRS
            .iter()
            .map(|d| (d.to_string(), self.dir.join("upper").join(&d[1..])))
            .collect();
        changes::scan(&uppers)
    }

    /// The sandbox's `/etc/passwd`.
    pub fn users(&self) -> Vec<User> {
        passwd::parse_passwd(&self.read_string("/etc/passwd").unwrap_or_default())
    }

    /// The sandbox's `/etc/group`.
    pub fn groups(&self) -> Vec<Group> {
        passwd::parse_group(&self.read_string("/etc/group").unwrap_or_default())
    }

    /// One user of the sandbox's `/etc/passwd`.
    pub fn user(&self, name: &str) -> Option<User> {
        self.users().into_iter().find(|u| u.name == name)
    }

    /// One group of the sandbox's `/etc/group`.
    pub fn group(&self, name: &str) -> Option<Group> {
        self.groups().into_iter().find(|g| g.name == name)
    }

    /// The init script's log (its own messages and the emulator's stderr).
    pub fn init_log(&self) -> String {
        fs::read_to_string(self.dir.join("init.log")).unwrap_or_default()
    }

    /// Panics with the init log when the sandbox's PID 1 is gone.
    fn check_alive(&self) {
        if !process_alive(self.pid1) {
            self.fail("PID 1 is gone");
        }
    }

    /// Panics with `msg` and what the init script logged.
    #[track_caller]
    fn fail(&self, msg: &str) -> ! {
        panic!(
            "sandbox {}: {}\n--- init.log ---\n{}",
            self.dir.display(),
            msg,
            self.init_log()
        );
    }

    /// Finds unshare's child, PID 1 of the new pid namespace.
    fn find_pid1(&mut self) -> i32 {
        let unshare_pid = self.unshare.as_ref().map(Child::id).unwrap_or(0);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare_pid))
                .unwrap_or_default();
            if let Some(pid) = children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
            {
                return pid;
            }
            self.check_unshare();
            std::thread::sleep(Duration::from_millis(2));
        }
        self.fail("unshare started no child");
    }

    fn check_unshare(&mut self) {
        if let Some(child) = self.unshare.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.fail(&format!("unshare exited ({})", status));
            }
        }
    }

    /// Waits until the init script creates `$SB/<name>`.
    fn wait_for_file(&mut self, name: &str, what: &str) {
        let path = self.dir.join(name);
        let deadline = Instant::now() + START_TIMEOUT;
        while !path.exists() {
            self.check_unshare();
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{} was not ready within {:?}",
                    what, START_TIMEOUT
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A diagnostic dump for a failing test: init log, syslog and console tails.
    fn dump(&self) -> String {
        let tail = |lines: Vec<String>| {
            let skip = lines.len().saturating_sub(50);
            lines[skip..].join("\n")
        };
        format!(
            "=== sandbox {} ===\n--- init.log ---\n{}\n--- syslog (last 50) ---\n{}\n--- console (last 50) ---\n{}",
            self.dir.display(),
            self.init_log().trim_end(),
            tail(self.syslog()),
            tail(self.console().lines().map(str::to_string).collect())
        )
    }
}

fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{}/stat", pid)) {
        // The state follows the parenthesised command name; a zombie is not alive.
        Ok(stat) => stat
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
        // --kill-child: unshare's death SIGKILLs PID 1, and the death of PID 1 kills every
        // process of the pid namespace. Mounts vanish with the mount namespace.
        if let Some(mut unshare) = self.unshare.take() {
            let _ = unshare.kill();
            let _ = unshare.wait();
        }
        if self.pid1 > 0 && !wait_until(Duration::from_secs(10), || !process_alive(self.pid1)) {
            eprintln!(
                "sandbox {}: PID 1 ({}) survived its parent",
                self.dir.display(),
                self.pid1
            );
            // SAFETY: kill with a pid and a signal number.
            unsafe {
                libc::kill(self.pid1, libc::SIGKILL);
            }
        }
        self.syslog = None;
        self.console = None;
        if std::env::var_os("GCE_SANDBOX_KEEP").is_some() {
            eprintln!("sandbox kept: {}", self.dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("sandbox: cannot remove {}: {}", self.dir.display(), e);
        }
    }
}
