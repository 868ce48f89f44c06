//! Serving connections: the accept loops, one thread per connection, the metadata paths
//! (flavor and `X-Forwarded-For` checks, reads, long-polls, guest-attribute writes,
//! tokens) and the injected faults. Admin paths are handed to `admin`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::io::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tinyjson::JsonValue;

use super::fault::{Fault, FaultMode};
use super::http::{self, ReadError, Request, Response};
use super::tree::{self, Keys};
use super::{admin, RequestRecord, Shared, State, DEFAULT_TOKEN, SERVER_HEADER};

/// The metadata path prefix.
const PREFIX: &str = "/computeMetadata/v1";
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 4096;
/// How long a silent client may keep a connection before it is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Default and largest `timeout_sec` of a long-poll.
const DEFAULT_WAIT_SEC: u64 = 3600;
const MAX_WAIT_SEC: u64 = 7 * 24 * 3600;
/// How often a long-poll checks that its client is still there.
const PEER_CHECK: Duration = Duration::from_secs(1);
const TEXT: &str = "application/text";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=UTF-8";

/// A connection the server can answer on: TCP or unix.
pub(super) trait Conn: Read + Write + AsRawFd + Send + 'static {
    fn set_timeouts(&self, d: Duration);
    fn shutdown_write(&self);
    /// Ends the connection without an answer: an RST for TCP.
    fn reset(self);
}

impl Conn for TcpStream {
    fn set_timeouts(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
        let _ = self.set_write_timeout(Some(d));
    }

    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }

    fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let _ = crate::sys::setsockopt(self.as_fd(), libc::SOL_SOCKET, libc::SO_LINGER, &linger);
        drop(self);
    }
}

impl Conn for UnixStream {
    fn set_timeouts(&self, d: Duration) {
        let _ = self.set_read_timeout(Some(d));
        let _ = self.set_write_timeout(Some(d));
    }

    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }

    fn reset(self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

/// Whether the peer has closed its side (a long-poll whose client went away).
fn peer_gone(fd: RawFd) -> bool {
    match crate::sys::peek_nonblocking(fd) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

/// Accepts connections until the emulator stops, each on its own thread.
pub(super) fn accept_loop<S: Conn>(
    shared: &Arc<Shared>,
    mut accept: impl FnMut() -> io::Result<S>,
) {
    loop {
        let accepted = accept();
        if shared.stopping() {
            return;
        }
        match accepted {
            Ok(stream) => spawn_connection(shared, stream),
            Err(e) => {
                debug!("metadata emulator: accept failed: {}", e);
                if !matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) {
                    // Out of descriptors, most likely: do not spin.
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// Decrements the connection count when a connection thread ends (or never starts).
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

fn spawn_connection<S: Conn>(shared: &Arc<Shared>, stream: S) {
    if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        shared.connections.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let slot = Slot(Arc::clone(shared));
    let conn = shared.next_conn.fetch_add(1, Ordering::SeqCst) + 1;
    let spawned = std::thread::Builder::new()
        .name("emulator-conn".into())
        .spawn(move || {
            let slot = slot;
            handle_connection(&slot.0, stream, conn);
        });
    if let Err(e) = spawned {
        debug!("metadata emulator: cannot start a connection thread: {}", e);
    }
}

/// Writes `resp` (only `body_bytes` of its body), calls `sent`, then closes gracefully: FIN
/// first, then whatever the client still sends is read away so the close does not turn
/// into an RST that could destroy the answer.
fn finish<S: Conn>(mut stream: S, resp: &Response, body_bytes: usize, sent: impl FnOnce()) {
    // Logged before the write, so a client holding its answer always finds the record done.
    sent();
    let written = resp.write_to(&mut stream, body_bytes);
    if written.is_err() {
        return;
    }
    stream.shutdown_write();
    stream.set_timeouts(Duration::from_secs(1));
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while total < 1 << 20 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

fn handle_connection<S: Conn>(shared: &Shared, mut stream: S, conn: u64) {
    stream.set_timeouts(IO_TIMEOUT);
    let req = match http::read_request(&mut stream) {
        Ok(req) => req,
        Err(ReadError::Closed) => return,
        Err(ReadError::Bad(status, msg)) => {
            let resp = Response::new(status, "text/plain; charset=utf-8", format!("{}\n", msg))
                .with("Server", SERVER_HEADER);
            finish(stream, &resp, usize::MAX, || {});
            return;
        }
    };
    if req.path == "/emulator" || req.path.starts_with("/emulator/") {
        let resp = admin::handle(shared, &req);
        finish(stream, &resp, usize::MAX, || {});
        return;
    }
    serve_metadata(shared, stream, &req, conn);
}

fn is_true(v: &str) -> bool {
    v.eq_ignore_ascii_case("true") || v == "1"
}

/// Adds the headers every metadata reply carries (and an ETag of the body if none yet).
fn metadata_reply(mut resp: Response) -> Response {
    if resp.header("ETag").is_none() {
        let tag = tree::etag(&resp.body);
        resp = resp.with("ETag", tag);
    }
    resp.with("Metadata-Flavor", "Google")
        .with("Server", SERVER_HEADER)
}

fn error_page(status: u16, message: &str) -> Response {
    metadata_reply(Response::new(
        status,
        HTML,
        http::google_error_page(status, message),
    ))
}

fn not_found(path: &str) -> Response {
    error_page(
        404,
        &format!(
            "The requested URL <code>{}</code> was not found on this server.",
            http::html_escape(path)
        ),
    )
}

fn serve_metadata<S: Conn>(shared: &Shared, stream: S, req: &Request, conn: u64) {
    let fault = if req.path.starts_with("/computeMetadata/") {
        shared.take_fault()
    } else {
        None
    };
    let wait = req.param("wait_for_change").is_some_and(|v| is_true(&v));
    let id = shared.log_start(RequestRecord {
        conn,
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        flavor: req.header("Metadata-Flavor").is_some(),
        status: 0,
        wait_for_change: wait,
        start_ms: shared.now_ms(),
        end_ms: None,
        fault: fault.as_ref().map(Fault::name),
    });
    answer_with_fault(shared, stream, req, fault.map(|f| f.mode), id);
}

/// Answers (or, as a fault says, does not answer) one metadata request, and closes its
/// log record `id` with the status sent (0 for none) as soon as the answer is out.
fn answer_with_fault<S: Conn>(
    shared: &Shared,
    stream: S,
    req: &Request,
    mode: Option<FaultMode>,
    id: u64,
) {
    let fd = stream.as_raw_fd();
    let head_only = req.method == "HEAD";
    let resp = match &mode {
        Some(FaultMode::Reset) => {
            stream.reset();
            shared.log_end(id, 0);
            return;
        }
        Some(FaultMode::Hang { seconds }) => {
            shared.sleep(Duration::from_secs_f64(*seconds));
            drop(stream);
            shared.log_end(id, 0);
            return;
        }
        Some(FaultMode::Status { status, body }) => match body {
            Some(b) => {
                let ctype = if crate::json::parse_json(b).is_ok() { JSON } else { HTML };
                metadata_reply(Response::new(*status, ctype, b.as_bytes()))
            }
            None => error_page(
                *status,
                "The server cannot process the request because it is overloaded or down for maintenance.",
            ),
        },
        Some(FaultMode::Html) => metadata_reply(Response::new(
            200,
            HTML,
            http::google_error_page(
                502,
                "The server encountered a temporary error and could not complete your request.",
            ),
        )),
        other => {
            if let Some(FaultMode::Delay { ms }) = other {
                shared.sleep(Duration::from_millis(*ms));
            }
            let at_once = matches!(
                other,
                Some(FaultMode::NoEtag | FaultMode::FixedEtag | FaultMode::FreshEtag)
            );
            let Some(mut resp) = answer(shared, req, at_once, &|| peer_gone(fd)) else {
                shared.log_end(id, 0);
                return;
            };
            match other {
                Some(FaultMode::NoEtag) => resp.without("ETag"),
                Some(FaultMode::FreshEtag) => {
                    static FRESH: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    let n = FRESH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let etag = format!("{}-fresh-{}", resp.header("ETag").unwrap_or("x"), n);
                    resp.without("ETag");
                    resp = resp.with("ETag", etag);
                }
                Some(FaultMode::NoFlavor) => resp.without("Metadata-Flavor"),
                _ => {}
            }
            resp
        }
    };
    let body_bytes = match mode {
        _ if head_only => 0,
        Some(FaultMode::Truncate) => resp.body.len() / 2,
        _ => usize::MAX,
    };
    finish(stream, &resp, body_bytes, || {
        shared.log_end(id, resp.status)
    });
}

/// What a read asks for.
struct Query {
    /// Decoded path segments below `computeMetadata/v1/`.
    segments: Vec<String>,
    recursive: bool,
    json: bool,
    wait: bool,
    last_etag: Option<String>,
    timeout: Duration,
}

/// The normal answer to a metadata request; `None` when a long-poll's client went away.
fn answer(
    shared: &Shared,
    req: &Request,
    at_once: bool,
    gone: &dyn Fn() -> bool,
) -> Option<Response> {
    let path = req.path.as_str();
    if req.header("X-Forwarded-For").is_some() {
        return Some(error_page(
            403,
            &format!(
                "Your client does not have permission to get URL <code>{}</code> from this server. \
                 Requests with an X-Forwarded-For header are refused.",
                http::html_escape(path)
            ),
        ));
    }
    match path {
        "/" => {
            return Some(metadata_reply(Response::new(
                200,
                TEXT,
                "computeMetadata/\n",
            )))
        }
        "/computeMetadata" | "/computeMetadata/" => {
            return Some(metadata_reply(Response::new(200, TEXT, "v1/\n")))
        }
        _ => {}
    }
    let Some(rest) = path
        .strip_prefix(PREFIX)
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return Some(not_found(path));
    };
    if req.header("Metadata-Flavor") != Some("Google") {
        return Some(error_page(
            403,
            &format!(
                "Your client does not have permission to get URL <code>{}</code> from this server. \
                 Missing Metadata-Flavor:Google header.",
                http::html_escape(path)
            ),
        ));
    }
    let segments: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| http::decode(s, false))
        .collect();
    match req.method.as_str() {
        "GET" | "HEAD" => {}
        "PUT" | "DELETE" => return Some(write_guest_attribute(shared, req, &segments)),
        _ => {
            return Some(
                error_page(405, "The request method is not supported for this URL.")
                    .with("Allow", "GET, HEAD"),
            )
        }
    }
    let recursive = req.param("recursive").is_some_and(|v| is_true(&v));
    let json = match req.param("alt").as_deref() {
        None | Some("") => recursive,
        Some("json") => true,
        Some("text") => false,
        Some(_) => return Some(error_page(400, "Invalid alt parameter: use json or text.")),
    };
    let timeout_sec = match req.param("timeout_sec") {
        None => DEFAULT_WAIT_SEC,
        Some(t) => match t.trim().parse::<u64>() {
            Ok(t) => t.min(MAX_WAIT_SEC),
            Err(_) => return Some(error_page(400, "Invalid timeout_sec parameter.")),
        },
    };
    let query = Query {
        segments,
        recursive,
        json,
        wait: !at_once && req.param("wait_for_change").is_some_and(|v| is_true(&v)),
        last_etag: req.param("last_etag"),
        timeout: Duration::from_secs(timeout_sec),
    };
    long_poll(shared, &query, path, gone)
}

/// Renders the answer; for `wait_for_change` waits until its ETag differs from `last_etag`
/// (or from the first rendering when none was given), or until the timeout.
fn long_poll(shared: &Shared, q: &Query, path: &str, gone: &dyn Fn() -> bool) -> Option<Response> {
    let deadline = Instant::now() + q.timeout;
    let mut baseline = q.last_etag.clone();
    let mut st = shared.lock();
    loop {
        let resp = render_cached(&mut st, q, path);
        if !q.wait || resp.status != 200 {
            return Some(resp);
        }
        let tag = resp.header("ETag").unwrap_or_default().to_string();
        match &baseline {
            Some(b) if *b != tag => return Some(resp),
            Some(_) => {}
            None => baseline = Some(tag),
        }
        let seen = st.version;
        loop {
            let now = Instant::now();
            if now >= deadline || shared.stopping() {
                return Some(resp);
            }
            st = shared
                .changed
                .wait_timeout(st, (deadline - now).min(PEER_CHECK))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
            if st.version != seen {
                break;
            }
            if gone() {
                return None;
            }
        }
    }
}

fn is_guest_path(segments: &[String]) -> bool {
    segments.len() >= 2 && segments[0] == "instance" && segments[1] == "guest-attributes"
}

/// The access token for service account `account`, if the document has that account.
fn token(doc: &JsonValue, account: &str) -> Option<String> {
    let accounts = match crate::json::lookup(doc, "instance/serviceAccounts") {
        Some(JsonValue::Object(map)) => map,
        _ => return None,
    };
    let entry = accounts.get(account).or_else(|| {
        accounts.values().find(|sa| {
            matches!(crate::json::lookup(sa, "email"), Some(JsonValue::String(e)) if e == account)
        })
    })?;
    let own = crate::json::lookup_str(entry, "token");
    let default = crate::json::lookup_str(doc, "instance/serviceAccounts/default/token");
    Some(own.or(default).unwrap_or(DEFAULT_TOKEN).to_string())
}

/// [`render`], remembering the last answer: a watch's next request (which renders only to
/// compare ETags), and every other watch of the same path, reuse it until the next change.
fn render_cached(st: &mut State, q: &Query, path: &str) -> Response {
    let key = (st.version, path.to_string(), q.recursive, q.json);
    if let Some((cached_key, resp)) = &st.last_render {
        if *cached_key == key {
            return resp.clone();
        }
    }
    let resp = render(st, q, path);
    st.last_render = Some((key, resp.clone()));
    resp
}

/// Renders the current answer to a read (200 with its ETag, or 404), without waiting.
fn render(st: &State, q: &Query, path: &str) -> Response {
    let segs = &q.segments;
    if segs.len() == 4
        && segs[0] == "instance"
        && segs[1] == "service-accounts"
        && segs[3] == "token"
    {
        return match token(&st.doc, &segs[2]) {
            Some(t) => {
                let mut body = String::from("{\"access_token\":");
                tree::write_json_string(&mut body, &t);
                body.push_str(",\"expires_in\":3599,\"token_type\":\"Bearer\"}");
                metadata_reply(Response::new(200, JSON, body))
            }
            None => not_found(path),
        };
    }
    let guest;
    let found = if is_guest_path(segs) {
        guest = st.guest_json();
        tree::resolve(&guest, &segs[2..], Keys::Verbatim)
    } else {
        tree::resolve(&st.doc, segs, Keys::Hyphenated)
    };
    let Some((value, keys)) = found else {
        return not_found(path);
    };
    let dir = tree::is_dir(value);
    let (ctype, body) = match (q.json, q.recursive, dir) {
        (true, true, _) | (true, _, false) => (JSON, tree::to_json(value)),
        (true, false, true) => {
            let names = tree::listing_names(value, keys)
                .into_iter()
                .map(JsonValue::String)
                .collect();
            (JSON, tree::to_json(&JsonValue::Array(names)))
        }
        (false, _, false) => (TEXT, tree::leaf_text(value)),
        (false, true, true) => (TEXT, tree::recursive_text(value, keys)),
        (false, false, true) => (TEXT, tree::listing(value, keys)),
    };
    metadata_reply(Response::new(200, ctype, body))
}

/// `PUT` / `DELETE instance/guest-attributes/<ns>/<key>`.
fn write_guest_attribute(shared: &Shared, req: &Request, segments: &[String]) -> Response {
    if !is_guest_path(segments) {
        return error_page(405, "The request method is not supported for this URL.")
            .with("Allow", "GET, HEAD");
    }
    let [_, _, ns, key] = segments else {
        return error_page(
            400,
            "Guest attributes are written as instance/guest-attributes/NAMESPACE/KEY.",
        );
    };
    let mut st = shared.lock();
    if req.method == "PUT" {
        let Ok(value) = String::from_utf8(req.body.clone()) else {
            return error_page(400, "A guest attribute value must be UTF-8 text.");
        };
        st.guest
            .entry(ns.clone())
            .or_default()
            .insert(key.clone(), value);
    } else {
        let removed = st.guest.get_mut(ns).and_then(|keys| keys.remove(key));
        if removed.is_none() {
            return not_found(&req.path);
        }
        st.guest.retain(|_, keys| !keys.is_empty());
    }
    shared.bump(&mut st);
    metadata_reply(Response::new(200, TEXT, ""))
}
