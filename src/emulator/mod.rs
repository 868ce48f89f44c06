//! A GCE metadata-server emulator for tests and demos (cargo feature `emulator`, never in
//! release builds). It owns the emulated server: the document, the guest attributes, the
//! fault queue, the request log, and the threads that serve them over TCP and unix sockets.
//!
//! What it serves, with real GCE semantics:
//! - `/computeMetadata/v1/<path>`: `Metadata-Flavor: Google` required (else 403), any
//!   `X-Forwarded-For` refused (403); `recursive=true`, `alt=json|text`,
//!   `wait_for_change=true` with `last_etag` and `timeout_sec` (default 3600); hyphenated
//!   path segments mapped to the camelCase keys of the recursive JSON document (verbatim
//!   below `attributes`); an `ETag` that is a hash of the body; guest attributes
//!   (`PUT`/`GET`/`DELETE instance/guest-attributes/<ns>/<key>`); service-account tokens
//!   (`instance/service-accounts/<sa>/token`). Every reply carries `Metadata-Flavor: Google`,
//!   `Server: Metadata Server for VM`, `Content-Type`, `Content-Length` and `ETag`.
//! - `/emulator/...`: the admin API (below), no flavor needed, never logged or faulted.
//!
//! Where it knowingly differs from GCE: a directory asked for without its trailing slash is
//! served rather than redirected (301); `alt=json` on a directory without `recursive` gives
//! the listing as a JSON array; `recursive=true&alt=text` gives `path value` lines; guest
//! attributes need no `enable-guest-attributes` and are not part of the recursive
//! document (so writing one never wakes a watch of `/`); a watch of a missing key answers
//! 404 at once.
//!
//! # Admin API
//!
//! | request | effect |
//! | --- | --- |
//! | `GET /emulator/metadata` | the current document (JSON, keys sorted) |
//! | `PUT /emulator/metadata` | replace it (body: a JSON object); answers the new document |
//! | `PATCH /emulator/metadata` | RFC 7386 merge patch; answers `{"changedAtMicros": N}`, when the change took effect (wall clock, µs since the epoch; GET has the new document) |
//! | `GET /emulator/faults` | the queued faults (JSON array) |
//! | `POST /emulator/faults` | queue a fault (a JSON object, or an array of them) |
//! | `DELETE /emulator/faults` | clear the queue |
//! | `GET /emulator/requests` | the request log (JSON array of records) |
//! | `DELETE /emulator/requests` | clear the log |
//! | `GET /emulator/guest-attributes` | `{"ns": {"key": "value"}}` |
//! | `DELETE /emulator/guest-attributes` | remove every guest attribute |
//!
//! Bad input answers 400 with a one-line message. Fault JSON: see [`Fault`].
//!
//! Every connection is answered once and closed (`Connection: close`); a thread serves each
//! connection. A long-poll whose client went away is noticed within a second and dropped.

mod admin;
mod fault;
mod http;
mod serve;
mod tree;

pub use fault::{Fault, FaultMode};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tinyjson::JsonValue;

/// The built-in sample document (`tests/data/metadata/sample.json`).
pub const SAMPLE_JSON: &str = include_str!("../../tests/data/metadata/sample.json");

/// The `Server` header the real metadata server sends.
pub const SERVER_HEADER: &str = "Metadata Server for VM";

/// The access token served when the document holds none.
pub const DEFAULT_TOKEN: &str = "emulator-access-token";

/// Records kept in the request log; the oldest tenth goes when it is full.
pub const MAX_LOG: usize = 100_000;

/// Guest attributes: namespace -> key -> value.
pub type GuestAttributes = BTreeMap<String, BTreeMap<String, String>>;

/// The built-in sample document, parsed.
pub fn sample_document() -> JsonValue {
    SAMPLE_JSON
        .parse()
        .unwrap_or_else(|_| JsonValue::Object(HashMap::new()))
}

/// One request as the log keeps it (requests below `/emulator/` are not logged).
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    /// The connection's number (one request per connection; numbered from 1).
    pub conn: u64,
    /// The HTTP method.
    pub method: String,
    /// The path as sent (still percent-encoded), without the query.
    pub path: String,
    /// The query as sent, without `?`; empty if none.
    pub query: String,
    /// Whether a `Metadata-Flavor` header was present (any value).
    pub flavor: bool,
    /// The status sent; 0 while still running or when nothing was sent (reset, hang,
    /// client gone).
    pub status: u16,
    /// Whether it asked for `wait_for_change=true`.
    pub wait_for_change: bool,
    /// When it was read, in ms since the emulator started.
    pub start_ms: u64,
    /// When it was finished, in ms since the emulator started; `None` while running.
    pub end_ms: Option<u64>,
    /// The fault applied to it, by mode name (`"reset"`, `"status"`, ...).
    pub fault: Option<&'static str>,
}

impl RequestRecord {
    /// The JSON form the admin API serves (`end_ms` and `fault` are `null` when absent).
    pub fn to_json(&self) -> JsonValue {
        let mut m = HashMap::new();
        let num = |n: u64| JsonValue::Number(n as f64);
        let text = |s: &str| JsonValue::String(s.to_string());
        m.insert("conn".to_string(), num(self.conn));
        m.insert("method".to_string(), text(&self.method));
        m.insert("path".to_string(), text(&self.path));
        m.insert("query".to_string(), text(&self.query));
        m.insert("flavor".to_string(), JsonValue::Boolean(self.flavor));
        m.insert("status".to_string(), num(u64::from(self.status)));
        m.insert(
            "wait_for_change".to_string(),
            JsonValue::Boolean(self.wait_for_change),
        );
        m.insert("start_ms".to_string(), num(self.start_ms));
        m.insert(
            "end_ms".to_string(),
            self.end_ms.map(num).unwrap_or(JsonValue::Null),
        );
        m.insert(
            "fault".to_string(),
            self.fault.map(text).unwrap_or(JsonValue::Null),
        );
        JsonValue::Object(m)
    }
}

/// Everything the server threads share.
struct State {
    doc: JsonValue,
    /// Goes up on every change of the document or the guest attributes.
    version: u64,
    guest: GuestAttributes,
    faults: VecDeque<Fault>,
    log: Vec<RequestRecord>,
    /// The record id of `log[0]`.
    log_base: u64,
    /// The last answer rendered, for (version, path, recursive, json).
    last_render: Option<((u64, String, bool, bool), http::Response)>,
}

impl State {
    /// The guest attributes as a JSON tree (namespace -> key -> value).
    fn guest_json(&self) -> JsonValue {
        JsonValue::Object(
            self.guest
                .iter()
                .map(|(ns, keys)| {
                    let keys = keys
                        .iter()
                        .map(|(k, v)| (k.clone(), JsonValue::String(v.clone())))
                        .collect();
                    (ns.clone(), JsonValue::Object(keys))
                })
                .collect(),
        )
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Notified on every `version` change and on stop.
    changed: Condvar,
    started: Instant,
    stopping: AtomicBool,
    connections: AtomicUsize,
    next_conn: AtomicU64,
}

impl Shared {
    fn new(doc: JsonValue) -> Shared {
        Shared {
            state: Mutex::new(State {
                doc,
                version: 0,
                guest: BTreeMap::new(),
                faults: VecDeque::new(),
                log: Vec::new(),
                log_base: 0,
                last_render: None,
            }),
            changed: Condvar::new(),
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            next_conn: AtomicU64::new(0),
        }
    }

    /// The state, even after a thread panicked while holding it (the data stays usable).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Marks a change and wakes every waiter to recheck.
    fn bump(&self, st: &mut State) {
        st.version = st.version.wrapping_add(1);
        self.changed.notify_all();
    }

    /// Waits up to `d`, or less when the emulator stops.
    fn sleep(&self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            if now >= deadline || self.stopping() {
                return;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn take_fault(&self) -> Option<Fault> {
        fault::take(&mut self.lock().faults)
    }

    fn log_start(&self, record: RequestRecord) -> u64 {
        let mut st = self.lock();
        let id = st.log_base + st.log.len() as u64;
        st.log.push(record);
        if st.log.len() > MAX_LOG {
            let drop = st.log.len() - MAX_LOG * 9 / 10;
            st.log.drain(..drop);
            st.log_base += drop as u64;
        }
        id
    }

    fn log_end(&self, id: u64, status: u16) {
        let end = self.now_ms();
        let mut st = self.lock();
        let Some(index) = id.checked_sub(st.log_base) else {
            return;
        };
        if let Some(r) = st.log.get_mut(index as usize) {
            r.status = status;
            r.end_ms = Some(end);
        }
    }

    fn clear_log(&self) {
        let mut st = self.lock();
        st.log_base += st.log.len() as u64;
        st.log.clear();
    }

    fn set_document(&self, doc: JsonValue) {
        let mut st = self.lock();
        st.doc = doc;
        self.bump(&mut st);
    }

    /// Applies a merge patch, in place; the result must stay an object, so the patch must
    /// be one. Returns when it took effect (wall clock, microseconds since the epoch).
    fn patch_document(&self, patch: JsonValue) -> Result<u64, String> {
        if !matches!(patch, JsonValue::Object(_)) {
            return Err("the patched document must stay a JSON object".into());
        }
        let mut st = self.lock();
        tree::merge_patch(&mut st.doc, patch);
        self.bump(&mut st);
        Ok(crate::timing::unix_micros())
    }
}

/// How to wake an accept loop so it sees the stop flag.
enum Wake {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

struct Endpoint {
    wake: Wake,
    thread: Option<JoinHandle<()>>,
}

/// A running emulator. Dropping it stops it (without waiting for open connections).
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    endpoints: Mutex<Vec<Endpoint>>,
}

impl Emulator {
    /// Starts serving `doc` on `listen` (`"127.0.0.1:0"` picks a free port).
    pub fn start(listen: &str, doc: JsonValue) -> io::Result<Emulator> {
        let shared = Arc::new(Shared::new(doc));
        let (addr, endpoint) = spawn_tcp(&shared, listen)?;
        Ok(Emulator {
            shared,
            addr,
            endpoints: Mutex::new(vec![endpoint]),
        })
    }

    /// The address of the first listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the same document on one more TCP address; returns the bound address.
    pub fn listen(&self, listen: &str) -> io::Result<SocketAddr> {
        let (addr, endpoint) = spawn_tcp(&self.shared, listen)?;
        self.endpoints_lock().push(endpoint);
        Ok(addr)
    }

    /// Serves the same HTTP (metadata and admin) on a unix socket at `path`. A stale socket
    /// there is replaced; a live one is an error. The socket is removed on stop.
    pub fn serve_unix(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref().to_path_buf();
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(&path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        let shared = Arc::clone(&self.shared);
        let thread = std::thread::Builder::new()
            .name("emulator-unix".into())
            .spawn(move || serve::accept_loop(&shared, || listener.accept().map(|(s, _)| s)))?;
        self.endpoints_lock().push(Endpoint {
            wake: Wake::Unix(path),
            thread: Some(thread),
        });
        Ok(())
    }

    fn endpoints_lock(&self) -> MutexGuard<'_, Vec<Endpoint>> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the document; waiting watches wake and recheck.
    pub fn set_document(&self, doc: JsonValue) {
        self.shared.set_document(doc);
    }

    /// Applies an RFC 7386 merge patch to the document; fails (changing nothing) if the
    /// result would not be an object.
    pub fn patch_document(&self, patch: &JsonValue) -> Result<(), String> {
        self.shared.patch_document(patch.clone()).map(|_| ())
    }

    /// A copy of the current document.
    pub fn document(&self) -> JsonValue {
        self.shared.lock().doc.clone()
    }

    /// Queues a fault behind those already queued.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// Removes every queued fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The queued faults, front first, with their remaining counts.
    pub fn faults(&self) -> Vec<Fault> {
        self.shared.lock().faults.iter().cloned().collect()
    }

    /// A copy of the request log, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().log.clone()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared.clear_log();
    }

    /// A copy of the guest attributes.
    pub fn guest_attributes(&self) -> GuestAttributes {
        self.shared.lock().guest.clone()
    }

    /// Stops accepting, wakes every waiting request and removes unix sockets. Idempotent;
    /// does not wait for connections still being served.
    pub fn stop(&self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        {
            let mut st = self.shared.lock();
            self.shared.bump(&mut st);
        }
        let endpoints = std::mem::take(&mut *self.endpoints_lock());
        for mut endpoint in endpoints {
            let woke = match &endpoint.wake {
                Wake::Tcp(addr) => {
                    let mut target = *addr;
                    if target.ip().is_unspecified() {
                        target.set_ip(match target {
                            SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                        });
                    }
                    TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok()
                }
                Wake::Unix(path) => {
                    let woke = UnixStream::connect(path).is_ok();
                    let _ = std::fs::remove_file(path);
                    woke
                }
            };
            if let (true, Some(thread)) = (woke, endpoint.thread.take()) {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_tcp(shared: &Arc<Shared>, listen: &str) -> io::Result<(SocketAddr, Endpoint)> {
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let shared = Arc::clone(shared);
    let thread = std::thread::Builder::new()
        .name("emulator-tcp".into())
        .spawn(move || serve::accept_loop(&shared, || listener.accept().map(|(s, _)| s)))?;
    Ok((
        addr,
        Endpoint {
            wake: Wake::Tcp(addr),
            thread: Some(thread),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_document_parses_and_has_the_promised_keys() {
        let doc: JsonValue = SAMPLE_JSON.parse().expect("sample.json parses");
        let get = |p: &str| crate::json::lookup(&doc, p).cloned();
        assert_eq!(
            get("instance/hostname"),
            Some(JsonValue::String("demo-vm.c.demo-project.internal".into()))
        );
        assert!(matches!(get("instance/id"), Some(JsonValue::Number(_))));
        assert_eq!(
            get("instance/virtualClock/driftToken"),
            Some(JsonValue::String("0".into()))
        );
        assert_eq!(
            get("instance/networkInterfaces/0/mac"),
            Some(JsonValue::String("42:01:0a:80:00:02".into()))
        );
        assert_eq!(
            get("project/projectId"),
            Some(JsonValue::String("demo-project".into()))
        );
        let keys = crate::json::lookup_str(&doc, "instance/attributes/ssh-keys").unwrap();
        assert!(keys.starts_with("alice:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"));
        assert!(keys.contains("\nbob:ssh-ed25519 ") && keys.contains("google-ssh {"));
        let project = crate::json::lookup_str(&doc, "project/attributes/ssh-keys").unwrap();
        assert!(project.starts_with("carol:"));
    }

    #[test]
    fn the_log_is_capped_and_ids_survive_trimming() {
        let shared = Shared::new(JsonValue::Null);
        let record = RequestRecord {
            conn: 1,
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            flavor: true,
            status: 0,
            wait_for_change: false,
            start_ms: 0,
            end_ms: None,
            fault: None,
        };
        let first = shared.log_start(record.clone());
        let mut last = first;
        for _ in 0..MAX_LOG {
            last = shared.log_start(record.clone());
        }
        assert!(shared.lock().log.len() <= MAX_LOG);
        shared.log_end(first, 200); // trimmed away: ignored
        shared.log_end(last, 404);
        assert_eq!(shared.lock().log.last().map(|r| r.status), Some(404));
        shared.clear_log();
        let id = shared.log_start(record);
        shared.log_end(id, 200);
        assert_eq!(shared.lock().log[0].status, 200);
    }
}
