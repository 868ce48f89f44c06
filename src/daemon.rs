//! Running daemons: one watcher thread holds the only metadata long-poll and hands every new
//! document to one thread per daemon; a daemon acts only when its own slice of the document
//! changed. Each daemon thread holds its original lock file, survives its daemon's errors
//! and panics (logged, restarted with backoff), re-reads the configuration on SIGHUP, and
//! stops within a second of SIGTERM.
//!
//! The standalone applets (`google_clock_skew_daemon`, ...) are the same runner with one
//! daemon; there a lock held by another process means "already running": warn, exit 0.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tinyjson::JsonValue;

use crate::config::Config;
use crate::error::Result;
use crate::fsutil::{self, LockGuard};
use crate::mds::{Client, Watcher};
use crate::signals::{self, Signals, Wake};
use crate::timing::{scaled, Backoff};

/// Where the daemons' lock files live.
pub const LOCK_DIR: &str = "/var/lock";
/// How often a thread whose lock another process holds tries again.
const LOCK_RETRY: Duration = Duration::from_secs(30);
/// How long SIGTERM waits for daemon threads before the process exits anyway.
const STOP_GRACE: Duration = Duration::from_millis(700);
/// Test-only: `NAME[:N]` makes daemon NAME panic on its N-th (default first) update.
#[cfg(feature = "test-hooks")]
pub const TEST_PANIC_ENV: &str = "GCE_GUEST_TEST_PANIC";

/// One daemon's behaviour. The runner owns the thread, the lock and the error handling.
pub trait Daemon: Send {
    /// The part of the metadata document this daemon acts on; `apply` runs only when it
    /// differs from the slice of the last document applied successfully.
    fn slice(&self, doc: &JsonValue) -> Option<JsonValue>;

    /// Acts on a new document (whose slice changed). An error is logged and the same
    /// document is applied again after a backoff.
    fn apply(&mut self, doc: &JsonValue) -> Result<()>;

    /// When the daemon wants [`Daemon::wake`] called without a new document (for example
    /// a key's expiry time).
    fn next_wake(&self) -> Option<Instant> {
        None
    }

    /// Called at the time [`Daemon::next_wake`] asked for.
    fn wake(&mut self) -> Result<()> {
        Ok(())
    }

    /// The configuration was re-read (SIGHUP).
    fn reload(&mut self, _config: &Config) {}
}

/// A daemon as the guest daemon knows it: its names, switches and how to make one.
pub struct Spec {
    /// Short name (`accounts`, `clock_skew`, `ip_forwarding`), used by test fault injection.
    pub name: &'static str,
    /// The logger name its lines carry.
    pub logger: &'static str,
    /// Lock file name under `/var/lock`.
    pub lock: &'static str,
    /// Whether the configuration enables it in `google_guest_daemon`.
    pub enabled: fn(&Config) -> bool,
    /// Makes a fresh daemon (also after a panic).
    pub make: fn(&Config) -> Box<dyn Daemon>,
}

/// Every daemon `google_guest_daemon` knows, in start order.
pub static ALL: &[&Spec] = &[
    &crate::accounts::daemon::SPEC,
    &crate::clock_skew::SPEC,
    &crate::network::SPEC,
];

enum Msg {
    Document(Arc<JsonValue>),
    Reload,
    Stop,
}

fn lock_path(spec: &Spec) -> PathBuf {
    PathBuf::from(LOCK_DIR).join(spec.lock)
}

fn locked_message(spec: &Spec) -> String {
    format!(
        "Exception locking {}. File already locked.",
        lock_path(spec).display()
    )
}

/// Runs one daemon as its own program (`google_clock_skew_daemon`, ...).
pub fn run_standalone(spec: &'static Spec) -> i32 {
    let signals = signals::install();
    let config = Config::load();
    crate::log::set_console(config.get_bool("Logging", "console"));
    let lock = match fsutil::try_lock(&lock_path(spec)) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            warn!("{}", locked_message(spec));
            return 0;
        }
        Err(e) => {
            error!("{}", e);
            return 1;
        }
    };
    info!("Starting {}.", spec.logger);
    run(&[spec], config, signals, Some(lock))
}

/// Runs every enabled daemon of `specs` in this process (`google_guest_daemon`).
pub fn run_combined(specs: &[&'static Spec]) -> i32 {
    let signals = signals::install();
    let config = Config::load();
    crate::log::set_console(config.get_bool("Logging", "console"));
    let enabled: Vec<&'static Spec> = specs
        .iter()
        .copied()
        .filter(|s| (s.enabled)(&config))
        .collect();
    if enabled.is_empty() {
        warn!("Every daemon is disabled in the configuration; nothing to do.");
        return 0;
    }
    let names: Vec<&str> = enabled.iter().map(|s| s.logger).collect();
    info!("Starting daemons: {}.", names.join(", "));
    run(&enabled, config, signals, None)
}

fn run(
    specs: &[&'static Spec],
    config: Config,
    signals: &'static Signals,
    held: Option<LockGuard>,
) -> i32 {
    install_panic_logger();
    let config = Arc::new(config);
    let mut senders: Vec<Sender<Msg>> = Vec::new();
    let mut workers = Vec::new();
    for &spec in specs {
        let (tx, rx) = mpsc::channel();
        senders.push(tx);
        let config = Arc::clone(&config);
        let standalone = held.is_some();
        let thread = std::thread::Builder::new()
            .name(spec.name.into())
            .spawn(move || daemon_thread(spec, &config, rx, signals, standalone));
        match thread {
            Ok(handle) => workers.push(handle),
            Err(e) => error!("cannot start the {} thread: {}", spec.logger, e),
        }
    }
    let watch_senders = senders.clone();
    let spawned = std::thread::Builder::new()
        .name("watcher".into())
        .spawn(move || {
            let mut watcher = Watcher::new(Client::from_env(), "");
            while let Some(snapshot) = watcher.next(signals) {
                let doc = Arc::new(snapshot.doc);
                for tx in &watch_senders {
                    let _ = tx.send(Msg::Document(Arc::clone(&doc)));
                }
            }
        });
    if let Err(e) = spawned {
        error!("cannot start the metadata watcher: {}", e);
        return 1;
    }
    // SIGHUP and SIGTERM reach the daemon threads as messages.
    let mut seen = signals.reloads();
    while let Some(count) = signals.wait_reload(seen) {
        seen = count;
        info!("Reloading the configuration (SIGHUP).");
        for tx in &senders {
            let _ = tx.send(Msg::Reload);
        }
    }
    for tx in &senders {
        let _ = tx.send(Msg::Stop);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for handle in workers {
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    drop(held);
    0
}

/// Logs a panic's message through our logger (the default hook only prints to stderr).
fn install_panic_logger() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        error!("Internal error{}: {}", place, msg);
    }));
}

/// Whether the test-only fault injection asks `name` to panic on update number `n`.
#[cfg(feature = "test-hooks")]
fn injected_panic(name: &str, n: u64) -> bool {
    let Ok(spec) = std::env::var(TEST_PANIC_ENV) else {
        return false;
    };
    spec.split(',').any(|item| {
        let (who, at) = item.split_once(':').unwrap_or((item, "1"));
        who == name && at.parse::<u64>().ok() == Some(n)
    })
}

/// A product build has no fault injection.
#[cfg(not(feature = "test-hooks"))]
fn injected_panic(_name: &str, _n: u64) -> bool {
    false
}

/// The loop of one daemon thread.
fn daemon_thread(
    spec: &'static Spec,
    config: &Config,
    rx: Receiver<Msg>,
    signals: &Signals,
    standalone: bool,
) {
    crate::log::set_thread_name(spec.logger);
    let mut latest: Option<Arc<JsonValue>> = None;
    // In the combined daemon, wait for the lock (a standalone copy may hold it).
    let _lock = if standalone {
        None
    } else {
        let mut warned = false;
        loop {
            match fsutil::try_lock(&lock_path(spec)) {
                Ok(Some(lock)) => {
                    if warned {
                        info!("Lock {} acquired; starting.", lock_path(spec).display());
                    }
                    break Some(lock);
                }
                Ok(None) if !warned => {
                    warn!(
                        "{} Another copy runs; retrying every 30 seconds.",
                        locked_message(spec)
                    );
                    warned = true;
                }
                Ok(None) => {}
                Err(e) => {
                    error!("{}; this daemon stays off.", e);
                    return;
                }
            }
            // Keep the newest document while waiting.
            let until = Instant::now() + scaled(LOCK_RETRY);
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(Msg::Document(doc)) => latest = Some(doc),
                    Ok(Msg::Reload) => {}
                    Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
        }
    };
    let mut config = config.clone();
    let mut daemon = (spec.make)(&config);
    let mut applied: Option<Option<JsonValue>> = None;
    let mut retry_at: Option<Instant> = None;
    let mut backoff = Backoff::default();
    let mut updates = 0u64;
    let mut pending = latest.is_some();
    loop {
        // One guarded call into the daemon per turn: a new document, or its own timer.
        let mut outcome = None;
        if pending {
            pending = false;
            if let Some(doc) = latest.clone() {
                let slice = daemon.slice(&doc);
                if applied.as_ref() != Some(&slice) {
                    updates += 1;
                    let n = updates;
                    let step = guarded(|| {
                        if injected_panic(spec.name, n) {
                            panic!("injected test fault in {}", spec.name);
                        }
                        daemon.apply(&doc)
                    });
                    if matches!(step, Step::Done) {
                        applied = Some(slice);
                    }
                    outcome = Some(step);
                }
            }
        } else if daemon.next_wake().is_some_and(|t| t <= Instant::now()) {
            outcome = Some(guarded(|| daemon.wake()));
        }
        match outcome {
            None => {}
            Some(Step::Done) => {
                retry_at = None;
                backoff.reset();
            }
            Some(Step::Failed(e)) => {
                let wait = backoff.next_wait();
                error!("{}; trying again in {:.1} s.", e, wait.as_secs_f64());
                // Applied again from the latest document once the wait is over.
                applied = None;
                retry_at = Some(Instant::now() + wait);
            }
            Some(Step::Crashed) => {
                let wait = backoff.next_wait();
                error!(
                    "The {} daemon crashed; restarting it in {:.1} s.",
                    spec.name,
                    wait.as_secs_f64()
                );
                if signals.sleep(wait) == Wake::Stop {
                    return;
                }
                daemon = (spec.make)(&config);
                applied = None;
                retry_at = None;
                pending = true;
                continue;
            }
        }
        let wake_at = [retry_at, daemon.next_wake()].into_iter().flatten().min();
        let msg = match wake_at {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(Msg::Document(doc)) => {
                latest = Some(doc);
                pending = true;
            }
            Ok(Msg::Reload) => {
                config = Config::load();
                crate::log::set_console(config.get_bool("Logging", "console"));
                daemon.reload(&config);
                applied = None;
                pending = true;
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                if retry_at.is_some_and(|t| t <= Instant::now()) {
                    retry_at = None;
                    pending = true;
                }
            }
        }
    }
}

/// How one call into a daemon went.
#[derive(Debug)]
enum Step {
    Done,
    Failed(crate::Error),
    Crashed,
}

/// Calls into a daemon, turning a panic (already logged by the panic hook) into a value.
fn guarded(f: impl FnOnce() -> Result<()>) -> Step {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Step::Done,
        Ok(Err(e)) => Step::Failed(e),
        Err(_) => Step::Crashed,
    }
}

#[cfg(all(test, feature = "test-hooks"))]
mod tests {
    use super::*;

    #[test]
    fn injected_panics_name_a_daemon_and_an_update() {
        std::env::set_var(TEST_PANIC_ENV, "accounts:2,clock_skew");
        assert!(!injected_panic("accounts", 1));
        assert!(injected_panic("accounts", 2));
        assert!(injected_panic("clock_skew", 1));
        assert!(!injected_panic("ip_forwarding", 1));
        std::env::remove_var(TEST_PANIC_ENV);
    }
}
