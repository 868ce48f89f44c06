//! The crate's one error type: every fallible operation returns [`Result`], and each
//! variant carries what a log line needs to say what failed, on what, and why.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong. Messages are lower-case and name the operation and its object.
#[derive(Debug)]
pub enum Error {
    /// A system call on a file or directory failed.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A system call that has no path (a socket, a signal mask) failed.
    Sys { op: &'static str, source: io::Error },
    /// The metadata server could not be reached or gave an unusable answer.
    Metadata { kind: FailureKind, detail: String },
    /// A configuration or data file could not be parsed.
    Parse {
        what: String,
        line: usize,
        msg: String,
    },
    /// An external command could not be run or failed.
    Command { program: String, detail: String },
    /// Another process holds a lock we need.
    Locked { path: PathBuf },
    /// Bad command-line usage.
    Usage(String),
    /// Anything else, already worded for a log line.
    Msg(String),
}

/// Why a metadata request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// No connection could be made.
    Connect,
    /// No complete answer within the client timeout.
    Timeout,
    /// The connection broke (reset, closed early).
    Connection,
    /// An HTTP error status (5xx, 429, 403, ...).
    Status(u16),
    /// A 200 whose body is not what was asked for (HTML, not JSON).
    BadBody,
    /// A body shorter than its `Content-Length`.
    Truncated,
    /// A reply without `Metadata-Flavor: Google`: not the metadata server.
    NoFlavor,
}

impl FailureKind {
    /// Words for a log line.
    pub fn describe(self) -> String {
        match self {
            FailureKind::Connect => "is unreachable".into(),
            FailureKind::Timeout => "did not answer in time".into(),
            FailureKind::Connection => "connection failed".into(),
            FailureKind::Status(code) => format!("answered HTTP {}", code),
            FailureKind::BadBody => "sent an unusable body".into(),
            FailureKind::Truncated => "sent a truncated reply".into(),
            FailureKind::NoFlavor => "reply lacks Metadata-Flavor: Google".into(),
        }
    }
}

/// The crate-wide result.
pub type Result<T> = std::result::Result<T, Error>;

/// Names the operation and path of a failed `std::io` call, turning its error into
/// [`Error::Io`]: `file.sync_all().context("fsync", &path)?`.
pub(crate) trait Context<T> {
    /// The error as `failed to <op> <path>: <cause>`.
    fn context<P: AsRef<Path>>(self, op: &'static str, path: P) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, io::Error> {
    fn context<P: AsRef<Path>>(self, op: &'static str, path: P) -> Result<T> {
        self.map_err(|e| Error::io(op, path.as_ref(), e))
    }
}

impl Error {
    /// An I/O error on `path` during `op` (for example "open", "rename").
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A path-less system call error.
    pub fn sys(op: &'static str, source: io::Error) -> Error {
        Error::Sys { op, source }
    }

    #[cfg(test)]
    /// The underlying OS error number, when there is one.
    pub(crate) fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Sys { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(f, "failed to {} {}: {}", op, path.display(), source)
            }
            Error::Sys { op, source } => write!(f, "failed to {}: {}", op, source),
            Error::Metadata { kind, detail } => {
                write!(f, "metadata server {}: {}", kind.describe(), detail)
            }
            Error::Parse { what, line, msg } if *line > 0 => {
                write!(f, "cannot parse {} line {}: {}", what, line, msg)
            }
            Error::Parse { what, msg, .. } => write!(f, "cannot parse {}: {}", what, msg),
            Error::Command { program, detail } => write!(f, "command {} {}", program, detail),
            Error::Locked { path } => {
                write!(f, "{} is locked by another process", path.display())
            }
            Error::Usage(msg) | Error::Msg(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Sys { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<String> for Error {
    fn from(msg: String) -> Error {
        Error::Msg(msg)
    }
}

impl From<&str> for Error {
    fn from(msg: &str) -> Error {
        Error::Msg(msg.to_string())
    }
}
