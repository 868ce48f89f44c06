//! Signals without handlers: SIGTERM, SIGINT and SIGHUP are blocked before any thread
//! starts and one thread takes them with `sigwait`, turning them into state every daemon
//! thread can wait on. Workers sleep with [`Signals::sleep`] and so wake at once on SIGTERM.

use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::sys;

/// What a sleeping worker woke up for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The time ran out.
    Timeout,
    /// SIGTERM or SIGINT: finish up and return.
    Stop,
}

#[derive(Default)]
struct State {
    stop: bool,
    reloads: u64,
}

/// The process's signal state.
pub struct Signals {
    state: Mutex<State>,
    changed: Condvar,
}

static SIGNALS: OnceLock<Signals> = OnceLock::new();

fn mask() -> libc::sigset_t {
    sys::sigset(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
}

/// The shared signal state; [`install`] must have run for signals to reach it.
pub fn get() -> &'static Signals {
    SIGNALS.get_or_init(Signals::new)
}

/// Blocks the three signals in the calling thread (call it from `main` before any other
/// thread exists, so all inherit the mask) and starts the thread that receives them.
/// Child processes get an empty mask back from `std::process::Command`.
pub fn install() -> &'static Signals {
    let signals = get();
    let set = mask();
    sys::block_signals(&set);
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if let Ok(sig) = sys::sigwait(&set) {
                signals.deliver(sig);
            }
        });
    if let Err(e) = spawned {
        error!("cannot start the signal thread: {}", e);
    }
    signals
}

impl Signals {
    /// A private signal state that no real signal reaches (for tests and embedding).
    pub fn new() -> Signals {
        Signals {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn deliver(&self, sig: libc::c_int) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if sig == libc::SIGHUP {
            st.reloads += 1;
        } else {
            st.stop = true;
        }
        self.changed.notify_all();
    }

    /// Asks every waiter to stop, as SIGTERM does (also used by tests and fatal errors).
    pub fn request_stop(&self) {
        self.deliver(libc::SIGTERM);
    }

    /// Whether a stop was requested.
    pub(crate) fn stopping(&self) -> bool {
        self.state.lock().map(|s| s.stop).unwrap_or(true)
    }

    /// How many SIGHUPs have arrived; a worker that saw a smaller number re-reads its config.
    pub(crate) fn reloads(&self) -> u64 {
        self.state.lock().map(|s| s.reloads).unwrap_or(0)
    }

    /// Sleeps up to `d`, returning early with [`Wake::Stop`] when a stop is requested.
    pub fn sleep(&self, d: Duration) -> Wake {
        let deadline = Instant::now() + d;
        let Ok(mut st) = self.state.lock() else {
            return Wake::Stop;
        };
        loop {
            if st.stop {
                return Wake::Stop;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wake::Timeout;
            }
            st = match self.changed.wait_timeout(st, deadline - now) {
                Ok((guard, _)) => guard,
                Err(_) => return Wake::Stop,
            };
        }
    }

    /// Waits for the next SIGHUP after the `seen`-th one: `Some(count)`, or `None` on stop.
    pub(crate) fn wait_reload(&self, seen: u64) -> Option<u64> {
        let mut st = self.state.lock().ok()?;
        loop {
            if st.stop {
                return None;
            }
            if st.reloads > seen {
                return Some(st.reloads);
            }
            st = self.changed.wait(st).ok()?;
        }
    }

    /// Waits until a stop is requested.
    #[cfg(feature = "emulator")]
    pub(crate) fn wait_for_stop(&self) {
        while self.sleep(Duration::from_secs(3600)) != Wake::Stop {}
    }
}

impl Default for Signals {
    fn default() -> Signals {
        Signals::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_times_out_and_counts_reloads() {
        let s = Signals::new();
        assert_eq!(s.sleep(Duration::from_millis(10)), Wake::Timeout);
        s.deliver(libc::SIGHUP);
        assert_eq!(s.reloads(), 1);
        assert!(!s.stopping());
    }

    #[test]
    fn a_stop_wakes_a_sleeper_at_once() {
        let s: &'static Signals = Box::leak(Box::new(Signals::new()));
        let start = Instant::now();
        let sleeper = std::thread::spawn(move || s.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        s.request_stop();
        assert_eq!(sleeper.join().unwrap(), Wake::Stop);
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
