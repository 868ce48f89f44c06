//! Running daemons: one watcher thread holds the only metadata long-poll and hands every new
//! document to one thread per daemon; a daemon acts only when its own slice of the document
//! changed. Each daemon thread holds its original lock file, survives its daemon's errors
//! and panics (logged, restarted with backoff), re-reads the configuration on SIGHUP, and
//! stops within a second of SIGTERM.
//!
//! The standalone applets (`google_clock_skew_daemon`, ...) are the same runner with one
//! daemon; there a lock held by another process means "already running": warn, exit 0.
//!
//! The runner knows no feature by name: the applets layer hands it [`DaemonSpec`]s.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tinyjson::JsonValue;

use crate::json::{self, Slice};

use crate::error::Result;
use crate::fsutil::{self, LockGuard};
use crate::mds::{Client, Watcher};
use crate::settings::Settings;
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
    /// The parts of the metadata document this daemon acts on, borrowed from it; `apply`
    /// runs only when they differ from those of the last document applied successfully.
    /// Nothing is copied: the documents are compared in place.
    fn slice<'d>(&self, doc: &'d JsonValue) -> Slice<'d>;

    /// Acts on a new document (whose slice changed). An error is logged and the same
    /// document is applied again after a backoff. The document is shared with the other
    /// daemons: keep the `Arc`, never a copy.
    fn apply(&mut self, doc: &Arc<JsonValue>) -> Result<()>;

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
    fn reload(&mut self, _settings: &Settings) {}
}

/// A daemon as the runner knows it: its names, switch and how to make one.
pub struct DaemonSpec {
    /// Short name (`accounts`, `clock_skew`, `ip_forwarding`), used by test fault injection.
    pub name: &'static str,
    /// The logger name its lines carry.
    pub logger: &'static str,
    /// Lock file name under `/var/lock`.
    pub lock: &'static str,
    /// Whether the configuration enables it in `google_guest_daemon`.
    pub enabled: fn(&Settings) -> bool,
    /// Makes a fresh daemon (also after a panic).
    pub make: fn(&Settings) -> Box<dyn Daemon>,
}

enum Msg {
    Document(Arc<JsonValue>),
    Reload,
    Stop,
}

fn lock_path(spec: &DaemonSpec) -> PathBuf {
    PathBuf::from(LOCK_DIR).join(spec.lock)
}

fn locked_message(spec: &DaemonSpec) -> String {
    format!(
        "Exception locking {}. File already locked.",
        lock_path(spec).display()
    )
}

/// Runs one daemon as its own program (`google_clock_skew_daemon`, ...).
pub fn run_standalone(spec: &'static DaemonSpec) -> i32 {
    let signals = signals::install();
    let settings = Settings::load();
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
    run(&[spec], settings, signals, Some(lock))
}

/// Runs every enabled daemon of `specs` in this process (`google_guest_daemon`).
pub fn run_combined(specs: &[&'static DaemonSpec]) -> i32 {
    let signals = signals::install();
    let settings = Settings::load();
    let enabled: Vec<&'static DaemonSpec> = specs
        .iter()
        .copied()
        .filter(|s| (s.enabled)(&settings))
        .collect();
    if enabled.is_empty() {
        warn!("Every daemon is disabled in the configuration; nothing to do.");
        return 0;
    }
    let names: Vec<&str> = enabled.iter().map(|s| s.logger).collect();
    info!("Starting daemons: {}.", names.join(", "));
    run(&enabled, settings, signals, None)
}

fn run(
    specs: &[&'static DaemonSpec],
    settings: Settings,
    signals: &'static Signals,
    held: Option<LockGuard>,
) -> i32 {
    install_panic_logger();
    let settings = Arc::new(settings);
    let mut senders: Vec<Sender<Msg>> = Vec::new();
    let mut workers = Vec::new();
    for &spec in specs {
        let (tx, rx) = mpsc::channel();
        senders.push(tx);
        let settings = Arc::clone(&settings);
        let standalone = held.is_some();
        let thread = std::thread::Builder::new()
            .name(spec.name.into())
            .spawn(move || daemon_thread(spec, &settings, rx, signals, standalone));
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
                let doc = snapshot.doc;
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

/// One daemon thread: in the combined daemon, wait for the lock (a standalone copy may
/// hold it), then run the daemon's turns until SIGTERM.
fn daemon_thread(
    spec: &'static DaemonSpec,
    settings: &Settings,
    rx: Receiver<Msg>,
    signals: &Signals,
    standalone: bool,
) {
    crate::log::set_thread_name(spec.logger);
    let mut latest: Option<Arc<JsonValue>> = None;
    let _lock = if standalone {
        None
    } else {
        match wait_for_lock(spec, &rx, &mut latest) {
            Some(lock) => Some(lock),
            None => return,
        }
    };
    DaemonTurns::new(spec, settings.clone(), latest).run(&rx, signals);
}

/// Takes the daemon's lock, trying again every 30 seconds while another process holds it
/// and keeping the newest document meanwhile. `None` when stopped or the lock file is
/// unusable (logged).
fn wait_for_lock(
    spec: &DaemonSpec,
    rx: &Receiver<Msg>,
    latest: &mut Option<Arc<JsonValue>>,
) -> Option<LockGuard> {
    let mut warned = false;
    loop {
        match fsutil::try_lock(&lock_path(spec)) {
            Ok(Some(lock)) => {
                if warned {
                    info!("Lock {} acquired; starting.", lock_path(spec).display());
                }
                return Some(lock);
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
                return None;
            }
        }
        let until = Instant::now() + scaled(LOCK_RETRY);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(Msg::Document(doc)) => *latest = Some(doc),
                Ok(Msg::Reload) => {}
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
    }
}

/// The state of one running daemon between its turns: one guarded call into the daemon
/// per turn (a new document, or its own timer), then one event.
struct DaemonTurns {
    spec: &'static DaemonSpec,
    settings: Settings,
    daemon: Box<dyn Daemon>,
    /// The newest document received.
    latest: Option<Arc<JsonValue>>,
    /// The last document applied successfully (shared, not a copy).
    applied: Option<Arc<JsonValue>>,
    /// When a failed update is tried again.
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// Updates attempted, for the test fault injection.
    updates: u64,
    /// The latest document is still to be looked at.
    pending: bool,
}

impl DaemonTurns {
    fn new(
        spec: &'static DaemonSpec,
        settings: Settings,
        latest: Option<Arc<JsonValue>>,
    ) -> DaemonTurns {
        DaemonTurns {
            spec,
            daemon: (spec.make)(&settings),
            settings,
            pending: latest.is_some(),
            latest,
            applied: None,
            retry_at: None,
            backoff: Backoff::default(),
            updates: 0,
        }
    }

    fn run(mut self, rx: &Receiver<Msg>, signals: &Signals) {
        loop {
            match self.call_daemon() {
                None => {}
                Some(CallOutcome::Done) => self.on_done(),
                Some(CallOutcome::Failed(e)) => self.on_failed(e),
                Some(CallOutcome::Crashed) => {
                    if self.on_crashed(signals) == Wake::Stop {
                        return;
                    }
                    continue;
                }
            }
            match self.next_message(rx) {
                Ok(Msg::Document(doc)) => self.on_document(doc),
                Ok(Msg::Reload) => self.on_reload(),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => self.on_timeout(),
            }
        }
    }

    /// Applies the latest document if its slice changed, else calls the daemon's timer if
    /// it is due; `None` when neither was called for.
    fn call_daemon(&mut self) -> Option<CallOutcome> {
        if !self.pending {
            if self.daemon.next_wake().is_some_and(|t| t <= Instant::now()) {
                let daemon = &mut self.daemon;
                return Some(guarded(|| daemon.wake()));
            }
            return None;
        }
        self.pending = false;
        let doc = self.latest.clone()?;
        if let Some(applied) = &self.applied {
            if Arc::ptr_eq(applied, &doc)
                || json::same_slices(&self.daemon.slice(applied), &self.daemon.slice(&doc))
            {
                return None;
            }
        }
        self.updates += 1;
        let (n, name, daemon) = (self.updates, self.spec.name, &mut self.daemon);
        let outcome = guarded(|| {
            if injected_panic(name, n) {
                panic!("injected test fault in {}", name);
            }
            daemon.apply(&doc)
        });
        if matches!(outcome, CallOutcome::Done) {
            self.applied = Some(doc);
        }
        Some(outcome)
    }

    fn on_done(&mut self) {
        self.retry_at = None;
        self.backoff.reset();
    }

    fn on_failed(&mut self, e: crate::Error) {
        let wait = self.backoff.next_wait();
        error!("{}; trying again in {:.1} s.", e, wait.as_secs_f64());
        // Applied again from the latest document once the wait is over.
        self.applied = None;
        self.retry_at = Some(Instant::now() + wait);
    }

    /// Waits out the backoff and makes a fresh daemon (unless SIGTERM came meanwhile).
    fn on_crashed(&mut self, signals: &Signals) -> Wake {
        let wait = self.backoff.next_wait();
        error!(
            "The {} daemon crashed; restarting it in {:.1} s.",
            self.spec.name,
            wait.as_secs_f64()
        );
        if signals.sleep(wait) == Wake::Stop {
            return Wake::Stop;
        }
        self.daemon = (self.spec.make)(&self.settings);
        self.applied = None;
        self.retry_at = None;
        self.pending = true;
        Wake::Timeout
    }

    /// The next message, or a timeout when a retry or the daemon's timer is due.
    fn next_message(&self, rx: &Receiver<Msg>) -> std::result::Result<Msg, RecvTimeoutError> {
        let wake_at = [self.retry_at, self.daemon.next_wake()]
            .into_iter()
            .flatten()
            .min();
        match wake_at {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        }
    }

    fn on_document(&mut self, doc: Arc<JsonValue>) {
        self.latest = Some(doc);
        self.pending = true;
    }

    fn on_reload(&mut self) {
        self.settings = Settings::load();
        self.daemon.reload(&self.settings);
        self.applied = None;
        self.pending = true;
    }

    fn on_timeout(&mut self) {
        if self.retry_at.is_some_and(|t| t <= Instant::now()) {
            self.retry_at = None;
            self.pending = true;
        }
    }
}

/// How one call into a daemon went.
#[derive(Debug)]
enum CallOutcome {
    Done,
    Failed(crate::Error),
    Crashed,
}

/// Calls into a daemon, turning a panic (already logged by the panic hook) into a value.
fn guarded(f: impl FnOnce() -> Result<()>) -> CallOutcome {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CallOutcome::Done,
        Ok(Err(e)) => CallOutcome::Failed(e),
        Err(_) => CallOutcome::Crashed,
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
