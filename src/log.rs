//! Logging without a logging crate: `<logger-name>: <LEVEL> <message>` lines, the shape the
//! Python guest environment wrote, sent to syslog (`/dev/log`, facility daemon), straight to
//! the serial console, and to stderr under `--debug` (or for command-line tools).
//!
//! The logger name is per thread, so each daemon thread of `google_guest_daemon` logs under
//! its original name. Logging never blocks and never panics: a full syslog queue or a slow
//! console drops the line.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

/// Severity, numbered as syslog numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 3,
    Warning = 4,
    Info = 6,
    Debug = 7,
}

impl Level {
    /// The level name Python's logging module prints.
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warning => "WARNING",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

const SYSLOG_PATH: &str = "/dev/log";
const CONSOLE_PATH: &str = "/dev/console";
const LOG_DAEMON: u8 = 3 << 3;
const MAX_MESSAGE: usize = 8192;

static TO_SYSLOG: AtomicBool = AtomicBool::new(false);
static TO_CONSOLE: AtomicBool = AtomicBool::new(false);
static TO_STDERR: AtomicBool = AtomicBool::new(true);
/// Lowest severity number that is still shown on stderr (7 = everything).
static STDERR_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

static PROCESS_NAME: Mutex<&'static str> = Mutex::new("gce-guest");
static SYSLOG: Mutex<Option<UnixDatagram>> = Mutex::new(None);
static CONSOLE: Mutex<Option<File>> = Mutex::new(None);

thread_local! {
    static THREAD_NAME: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Where lines go.
#[derive(Clone, Copy, Debug)]
pub struct Sinks {
    /// `/dev/log`, INFO and above.
    pub syslog: bool,
    /// `/dev/console`, INFO and above.
    pub console: bool,
    /// stderr: INFO and above, or everything with `debug`.
    pub stderr: bool,
    /// `--debug`: stderr gets DEBUG lines too (and is turned on).
    pub debug: bool,
}

/// Sets the process-wide logger name and sinks. Called once by the applet dispatcher.
pub fn init(name: &'static str, sinks: Sinks) {
    if let Ok(mut n) = PROCESS_NAME.lock() {
        *n = name;
    }
    TO_SYSLOG.store(sinks.syslog && !cfg!(test), Ordering::Relaxed);
    TO_CONSOLE.store(sinks.console && !cfg!(test), Ordering::Relaxed);
    TO_STDERR.store(sinks.stderr || sinks.debug, Ordering::Relaxed);
    let floor = if sinks.debug {
        Level::Debug
    } else {
        Level::Info
    };
    STDERR_LEVEL.store(floor as u8, Ordering::Relaxed);
}

/// Turns the serial-console copy off or on (`[Logging] console` in the config).
pub fn set_console(enabled: bool) {
    TO_CONSOLE.store(enabled && !cfg!(test), Ordering::Relaxed);
}

/// Names this thread's logger (for example `google-accounts`).
pub fn set_thread_name(name: &'static str) {
    THREAD_NAME.with(|n| n.set(Some(name)));
}

/// The logger name lines from this thread carry.
pub fn current_name() -> &'static str {
    THREAD_NAME
        .with(|n| n.get())
        .unwrap_or_else(|| PROCESS_NAME.lock().map(|n| *n).unwrap_or("gce-guest"))
}

/// Formats the line every sink shares: `name: LEVEL message`. The message is cut to
/// [`MAX_MESSAGE`] bytes and passed through [`escape_controls`]: whatever a message quotes
/// (metadata values, server replies, users' files, script output) stays on one line.
pub fn format_line(name: &str, level: Level, msg: &str) -> String {
    let mut line = String::with_capacity(name.len() + msg.len() + 10);
    line.push_str(name);
    line.push_str(": ");
    line.push_str(level.name());
    line.push(' ');
    let mut end = msg.len().min(MAX_MESSAGE);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    escape_controls(&msg[..end], &mut line);
    line
}

/// The one escaping of untrusted text in log lines: a control character (tab aside) is
/// written as `\n`, `\r` or `\xNN`, so no value can end a log line early or forge the next
/// one, on the console, in syslog or on stderr.
pub fn escape_controls(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Writes one log record to every enabled sink. Use the macros instead.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    let stderr_wants =
        TO_STDERR.load(Ordering::Relaxed) && (level as u8) <= STDERR_LEVEL.load(Ordering::Relaxed);
    let system_wants = level <= Level::Info
        && (TO_SYSLOG.load(Ordering::Relaxed) || TO_CONSOLE.load(Ordering::Relaxed));
    if !stderr_wants && !system_wants {
        return;
    }
    let msg = fmt::format(args);
    let line = format_line(current_name(), level, &msg);
    if stderr_wants {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.write_all(b"\n");
    }
    if level > Level::Info {
        return;
    }
    let stamp = crate::timing::syslog_timestamp(crate::timing::unix_now());
    if TO_SYSLOG.load(Ordering::Relaxed) {
        send_syslog(&format!("<{}>{} {}", LOG_DAEMON | level as u8, stamp, line));
    }
    if TO_CONSOLE.load(Ordering::Relaxed) {
        write_console(&format!("{} {}\n", stamp, line));
    }
}

fn syslog_connect() -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.connect(SYSLOG_PATH).ok()?;
    sock.set_nonblocking(true).ok()?;
    Some(sock)
}

/// Set while syslog's queue was found full and a wait for room ran out: further lines are
/// dropped at once until one gets through again.
static SYSLOG_CONGESTED: AtomicBool = AtomicBool::new(false);
/// How long a line waits for room in a full syslog queue before it is dropped.
const SYSLOG_WAIT_MS: i32 = 100;

/// Waits up to `ms` for the socket to take another datagram.
fn wait_writable(sock: &UnixDatagram, ms: i32) -> bool {
    use std::os::fd::AsFd;
    crate::sys::poll_one(sock.as_fd(), libc::POLLOUT, ms)
}

/// Sends a datagram; reconnects once when the syslog daemon went away and came back. A full
/// queue (a burst of script output) gets a short wait for room; a syslog daemon that stays
/// stuck costs one such wait, after which lines are dropped until it takes one again.
fn send_syslog(datagram: &str) {
    let Ok(mut guard) = SYSLOG.lock() else { return };
    for attempt in 0..2 {
        if guard.is_none() {
            *guard = syslog_connect();
        }
        let Some(sock) = guard.as_ref() else { return };
        let mut sent = sock.send(datagram.as_bytes());
        if matches!(&sent, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            && !SYSLOG_CONGESTED.load(Ordering::Relaxed)
            && wait_writable(sock, SYSLOG_WAIT_MS)
        {
            sent = sock.send(datagram.as_bytes());
        }
        match sent {
            Ok(_) => {
                SYSLOG_CONGESTED.store(false, Ordering::Relaxed);
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                SYSLOG_CONGESTED.store(true, Ordering::Relaxed);
                return;
            }
            Err(_) if attempt == 0 => *guard = None,
            Err(_) => return,
        }
    }
}

fn write_console(line: &str) {
    let Ok(mut guard) = CONSOLE.lock() else {
        return;
    };
    if guard.is_none() {
        // O_APPEND: harmless on a serial device, and keeps lines of several processes when
        // the console is a plain file (a sandbox, a container).
        *guard = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(CONSOLE_PATH)
            .ok();
    }
    if let Some(console) = guard.as_mut() {
        // A full serial buffer answers EAGAIN: the line is dropped, the daemon goes on.
        let _ = console.write_all(line.as_bytes());
    }
}

/// Makes text from metadata or a file safe to put in a log line: control and non-ASCII
/// characters become `?`, and it is cut to 64 characters.
pub fn printable(text: &str) -> String {
    const LIMIT: usize = 64;
    let mut out: String = text
        .chars()
        .take(LIMIT)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if text.chars().nth(LIMIT).is_some() {
        out.push_str("...");
    }
    out
}

/// How many texts a [`LogOnce`] remembers; past that it starts over, so a text may be
/// logged once more rather than memory growing without bound.
const LOG_ONCE_LIMIT: usize = 1024;

/// Remembers which texts were logged, so a line is logged once rather than on every
/// update. Used in rounds ([`LogOnce::end_round`] after each update), a text logged in
/// the previous round is not logged again while it keeps coming back, and is logged anew
/// after it went away; without rounds, a text is logged once in all.
#[derive(Debug, Default)]
pub struct LogOnce {
    /// What the previous round logged or kept.
    previous: BTreeSet<String>,
    /// What this round has met so far.
    current: BTreeSet<String>,
}

impl LogOnce {
    /// Whether `text` is to be logged now (not met in this round or the previous one);
    /// it is remembered either way.
    pub fn first_time(&mut self, text: &str) -> bool {
        if self.previous.contains(text) || self.current.contains(text) {
            if !self.current.contains(text) {
                self.remember(text);
            }
            return false;
        }
        self.remember(text);
        true
    }

    fn remember(&mut self, text: &str) {
        if self.current.len() >= LOG_ONCE_LIMIT {
            self.current.clear();
        }
        self.current.insert(text.to_string());
    }

    /// Ends a round: texts not met in it will be logged again when they come back.
    pub fn end_round(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    /// Whether `text` was met in this round or the previous one.
    #[cfg(test)]
    pub fn remembers(&self, text: &str) -> bool {
        self.previous.contains(text) || self.current.contains(text)
    }

    /// How many texts are remembered (this round and the previous one).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.previous.union(&self.current).count()
    }
}

/// Logs at ERROR.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($arg)*)) };
}

/// Logs at WARNING.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warning, format_args!($($arg)*)) };
}

/// Logs at INFO.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($arg)*)) };
}

/// Logs at DEBUG (stderr under `--debug` only).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_once_in_rounds_and_in_all() {
        let mut once = LogOnce::default();
        assert!(once.first_time("a"));
        assert!(!once.first_time("a"), "twice in one round");
        once.end_round();
        assert!(!once.first_time("a"), "still there");
        assert!(once.first_time("b"));
        once.end_round();
        once.end_round();
        assert!(once.first_time("a"), "went away and came back");
        let mut ever = LogOnce::default();
        for i in 0..LOG_ONCE_LIMIT {
            assert!(ever.first_time(&i.to_string()));
        }
        assert!(!ever.first_time("0"));
        assert!(ever.first_time("new"), "full: starts over");
        assert_eq!(ever.len(), 1, "bounded");
    }

    #[test]
    fn printable_hides_control_characters_and_cuts_long_text() {
        assert_eq!(printable("alice"), "alice");
        assert_eq!(printable("a\x1b[31mb"), "a?[31mb");
        assert_eq!(printable("a\nb\tc"), "a?b?c");
        assert_eq!(printable("josé"), "jos?");
        let long = "x".repeat(100);
        assert_eq!(printable(&long), format!("{}...", "x".repeat(64)));
        assert_eq!(printable(&"y".repeat(64)), "y".repeat(64));
    }

    #[test]
    fn line_has_the_python_shape() {
        assert_eq!(
            format_line(
                "google-accounts",
                Level::Info,
                "Creating a new user account for alice."
            ),
            "google-accounts: INFO Creating a new user account for alice."
        );
        assert_eq!(format_line("x", Level::Warning, "w"), "x: WARNING w");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let msg = "é".repeat(MAX_MESSAGE);
        let line = format_line("n", Level::Error, &msg);
        assert!(line.len() <= MAX_MESSAGE + 10);
        assert!(line.ends_with('é'));
    }

    #[test]
    fn untrusted_text_cannot_forge_a_line() {
        let url = "http://x/s.sh\ngoogle-accounts: INFO Creating a new user account for eve.";
        let line = format_line("startup-script", Level::Warning, &format!("Failed {}", url));
        assert_eq!(
            line,
            "startup-script: WARNING Failed http://x/s.sh\\ngoogle-accounts: INFO Creating a new \
             user account for eve."
        );
        let line = format_line("n", Level::Info, "a\rb\u{1b}[31mc\td\u{7f}\u{85}é\\n");
        assert_eq!(line, "n: INFO a\\rb\\x1b[31mc\td\\x7f\\x85é\\n");
    }

    #[test]
    fn thread_names_are_per_thread() {
        set_thread_name("google-clock-skew");
        let other = std::thread::spawn(|| {
            set_thread_name("google-accounts");
            current_name()
        })
        .join()
        .unwrap();
        assert_eq!(other, "google-accounts");
        assert_eq!(current_name(), "google-clock-skew");
    }
}
