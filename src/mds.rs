//! The metadata-server client: plain GETs (text or JSON), the ETag long-poll watch, and
//! PUTs of guest attributes, to `http://169.254.169.254/computeMetadata/v1/` (or
//! `GCE_METADATA_HOST`). Every request carries `Metadata-Flavor: Google` and every reply
//! must carry it back; no proxy is ever used; every request has a timeout.
//!
//! A failure is never mistaken for data: a 5xx (JSON body or not), a body that is not JSON,
//! a truncated reply, a reset or a timeout is an error the caller retries, 404 alone means
//! "absent". The watch retries forever with backoff, logs the first failure, a change of
//! kind and the recovery, and cannot be turned into a busy loop by a server that answers
//! without a new ETag.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tinyjson::JsonValue;

pub use crate::error::FailureKind;
use crate::error::{Error, Result};
pub use crate::json::{lookup, lookup_str, parse_json};
use crate::signals::{Signals, Wake};
use crate::timing::{scaled, scaled_secs, Backoff};

/// The metadata server's address: always the IP, never a DNS name.
pub(crate) const DEFAULT_HOST: &str = "169.254.169.254";
/// `host[:port]` overriding [`DEFAULT_HOST`] (the variable Google's client libraries read).
pub(crate) const HOST_ENV: &str = "GCE_METADATA_HOST";
/// Seconds the server may hold a watch before answering unchanged.
pub(crate) const WATCH_TIMEOUT_SEC: u64 = 60;
/// Extra seconds the client waits beyond that before it calls the request hung.
pub(crate) const WATCH_MARGIN_SEC: u64 = 10;
/// Client timeout of a plain request.
pub(crate) const REQUEST_TIMEOUT_SEC: u64 = 10;
/// Replies larger than this are refused (metadata is at most a few MB).
const MAX_BODY: u64 = 4 << 20;
/// The most header bytes a reply may have.
const MAX_HEADERS: usize = 64 << 10;

fn failure(kind: FailureKind, detail: impl Into<String>) -> Error {
    Error::Metadata {
        kind,
        detail: detail.into(),
    }
}

/// One answer from the server.
#[derive(Debug)]
pub struct HttpReply {
    /// The HTTP status.
    pub status: u16,
    /// The `ETag` header, if any.
    pub etag: Option<String>,
    /// The body as received.
    pub body: Vec<u8>,
}

/// A metadata-server client.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
}

impl Default for Client {
    fn default() -> Client {
        Client::from_env()
    }
}

/// Percent-encodes a query value.
pub(crate) fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{:02X}", b));
        }
    }
    out
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn method_name(m: &minreq::Method) -> &'static str {
    match m {
        minreq::Method::Get => "GET",
        minreq::Method::Put => "PUT",
        _ => "request",
    }
}

fn classify(e: minreq::Error) -> Error {
    match e {
        minreq::Error::IoError(io) => {
            use std::io::ErrorKind::*;
            let kind = match io.kind() {
                ConnectionRefused | AddrNotAvailable | NetworkUnreachable | HostUnreachable => {
                    FailureKind::Connect
                }
                TimedOut | WouldBlock => FailureKind::Timeout,
                // The patched client's word for a reply cut short.
                UnexpectedEof => FailureKind::Truncated,
                _ => FailureKind::Connection,
            };
            failure(kind, io.to_string())
        }
        minreq::Error::AddressNotFound => failure(FailureKind::Connect, "address not found"),
        other => failure(FailureKind::Connection, other.to_string()),
    }
}

impl Client {
    /// A client for the default address, or `GCE_METADATA_HOST` when set.
    pub(crate) fn from_env() -> Client {
        let host = std::env::var(HOST_ENV)
            .ok()
            .map(|h| h.trim().trim_end_matches('/').to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Client::with_host(&host)
    }

    /// A client for `host[:port]`.
    pub fn with_host(host: &str) -> Client {
        let host = host.strip_prefix("http://").unwrap_or(host);
        Client {
            base: format!("http://{}/computeMetadata/v1/", host),
        }
    }

    /// The URL of `path` (relative to `computeMetadata/v1/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path.trim_start_matches('/'))
    }

    /// Sends one request and checks the transport-level rules (flavor header, length,
    /// size). Any status comes back as a [`HttpReply`]; callers decide what it means.
    pub fn send(
        &self,
        method: minreq::Method,
        path_query: &str,
        body: Option<&[u8]>,
        timeout_secs: u64,
    ) -> Result<HttpReply> {
        let mut req = minreq::Request::new(method.clone(), self.url(path_query))
            .with_header("Metadata-Flavor", "Google")
            .with_timeout(timeout_secs.max(1))
            .with_max_headers_size(MAX_HEADERS)
            .with_follow_redirects(false);
        if let Some(b) = body {
            req = req.with_body(b.to_vec());
        }
        debug!("{} {}", method_name(&method), path_query);
        let mut resp = req.send_lazy().map_err(|e| {
            let e = classify(e);
            debug!("{} {}: {}", method_name(&method), path_query, e);
            e
        })?;
        debug!(
            "{} {}: HTTP {}",
            method_name(&method),
            path_query,
            resp.status_code
        );
        if header(&resp.headers, "Metadata-Flavor") != Some("Google") {
            return Err(failure(
                FailureKind::NoFlavor,
                format!("HTTP {} from {}", resp.status_code, self.base),
            ));
        }
        let etag = header(&resp.headers, "ETag").map(str::to_string);
        let declared = header(&resp.headers, "Content-Length").and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY) {
            return Err(failure(FailureKind::BadBody, "reply too large"));
        }
        let mut body = Vec::new();
        (&mut resp)
            .take(MAX_BODY + 1)
            .read_to_end(&mut body)
            .map_err(|e| classify(minreq::Error::IoError(e)))?;
        if body.len() as u64 > MAX_BODY {
            return Err(failure(FailureKind::BadBody, "reply too large"));
        }
        if let Some(n) = declared {
            if n != body.len() as u64 {
                return Err(failure(
                    FailureKind::Truncated,
                    format!("{} of {} bytes", body.len(), n),
                ));
            }
        }
        Ok(HttpReply {
            status: resp.status_code,
            etag,
            body,
        })
    }

    /// GET `path_query` expecting 200 (404 gives `Ok(None)`); any other status is an error.
    pub(crate) fn get_raw(&self, path_query: &str, timeout_secs: u64) -> Result<Option<HttpReply>> {
        let reply = self.send(minreq::Method::Get, path_query, None, timeout_secs)?;
        match reply.status {
            200 => Ok(Some(reply)),
            404 => Ok(None),
            code => Err(failure(
                FailureKind::Status(code),
                format!("GET {}", path_query),
            )),
        }
    }

    /// A value as text (`alt=text`); `Ok(None)` when the key is not defined.
    pub fn get_text(&self, path: &str) -> Result<Option<String>> {
        let reply = self.get_raw(path, scaled_secs(REQUEST_TIMEOUT_SEC))?;
        Ok(reply.map(|r| String::from_utf8_lossy(&r.body).into_owned()))
    }

    /// A value or directory as JSON (`recursive=true&alt=json`); `Ok(None)` when absent.
    pub fn get_json(&self, path: &str) -> Result<Option<JsonValue>> {
        let query = format!("{}?recursive=true&alt=json", path);
        match self.get_raw(&query, scaled_secs(REQUEST_TIMEOUT_SEC))? {
            None => Ok(None),
            Some(reply) => Ok(Some(json_body(&reply)?)),
        }
    }

    /// Like [`Client::get_json`], retrying transient failures with backoff for up to
    /// `budget` (scaled). For one-shot applets.
    pub(crate) fn get_json_retrying(
        &self,
        path: &str,
        budget: Duration,
    ) -> Result<Option<JsonValue>> {
        retrying(budget, || self.get_json(path))
    }

    /// PUTs a guest attribute: `instance/guest-attributes/<namespace>/<key>`.
    pub fn put_guest_attribute(&self, namespace: &str, key: &str, value: &str) -> Result<()> {
        let path = format!("instance/guest-attributes/{}/{}", namespace, key);
        let reply = self.send(
            minreq::Method::Put,
            &path,
            Some(value.as_bytes()),
            scaled_secs(REQUEST_TIMEOUT_SEC),
        )?;
        match reply.status {
            200..=299 => Ok(()),
            code => Err(failure(FailureKind::Status(code), format!("PUT {}", path))),
        }
    }

    /// One watch request: returns when the document's ETag differs from `last_etag`, or
    /// after `timeout_sec` unchanged.
    pub fn watch_once(&self, path: &str, last_etag: &str, timeout_sec: u64) -> Result<Snapshot> {
        let query = format!(
            "{}?recursive=true&alt=json&wait_for_change=true&last_etag={}&timeout_sec={}",
            path,
            encode_query(last_etag),
            timeout_sec
        );
        let reply = self
            .get_raw(&query, timeout_sec + scaled_secs(WATCH_MARGIN_SEC))?
            .ok_or_else(|| failure(FailureKind::Status(404), format!("GET {}", path)))?;
        let doc = json_body(&reply)?;
        Ok(Snapshot {
            etag: reply.etag,
            doc: Arc::new(doc),
        })
    }
}

pub(crate) fn json_body(reply: &HttpReply) -> Result<JsonValue> {
    let text = std::str::from_utf8(&reply.body)
        .map_err(|_| failure(FailureKind::BadBody, "body is not UTF-8"))?;
    parse_json(text).map_err(|e| {
        let start: String = text.chars().take(40).collect();
        failure(
            FailureKind::BadBody,
            format!("not JSON ({}): {:?}", e, start),
        )
    })
}

/// Whether an error is worth retrying (everything but a definite answer).
pub(crate) fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Metadata { .. })
}

/// Runs `op` until it gives anything but a transient metadata error, with backoff, for up
/// to `budget` (scaled); the last error when the budget is spent. A wait that would pass the
/// end is cut short, so the last try is made at the end of the budget.
pub fn retrying<T>(budget: Duration, mut op: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + scaled(budget);
    let mut backoff = Backoff::default();
    loop {
        match op() {
            Err(e) if is_transient(&e) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(e);
                }
                let wait = backoff.next_wait().min(left);
                debug!("{}; retrying in {:?}", e, wait);
                std::thread::sleep(wait);
            }
            other => return other,
        }
    }
}

/// A whole metadata document as one watch reply delivered it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Its ETag, when the server sent one.
    pub etag: Option<String>,
    /// The recursive JSON document.
    pub doc: Arc<JsonValue>,
}

/// Logs a run of failures once: the first, each change of kind, and the recovery.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    current: Option<FailureKind>,
    count: u64,
}

impl FailureLog {
    /// Records a failure; logs it if it starts a run or changes its kind.
    pub fn failed(&mut self, e: &Error) {
        let kind = match e {
            Error::Metadata { kind, .. } => Some(*kind),
            _ => None,
        };
        if self.count == 0 || kind != self.current {
            error!("GET request error retrieving metadata. {}.", e);
        }
        self.current = kind;
        self.count += 1;
    }

    /// Records a success; logs the recovery after a run of failures.
    pub(crate) fn succeeded(&mut self) {
        if self.count > 0 {
            info!(
                "Metadata server is answering again after {} failed requests.",
                self.count
            );
        }
        self.count = 0;
        self.current = None;
    }

    /// Failures in the current run.
    pub fn failures(&self) -> u64 {
        self.count
    }
}

/// The long-poll on a metadata path: each [`Watcher::next`] returns the next changed
/// document. The first call answers at once (the ETag starts as `0`).
#[derive(Debug)]
pub struct Watcher {
    client: Client,
    path: String,
    etag: String,
    last_doc: Option<Arc<JsonValue>>,
    failures: FailureLog,
    backoff: Backoff,
    slow_down: Backoff,
    warned_no_etag: bool,
}

impl Watcher {
    /// A watch of `path` (`""` for the whole document).
    pub fn new(client: Client, path: &str) -> Watcher {
        Watcher {
            client,
            path: path.to_string(),
            etag: "0".to_string(),
            last_doc: None,
            failures: FailureLog::default(),
            backoff: Backoff::default(),
            slow_down: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            warned_no_etag: false,
        }
    }

    /// Blocks until the document changes (or, the first time, until it is read), retrying
    /// failures forever. `None` once `signals` asks to stop.
    pub fn next(&mut self, signals: &Signals) -> Option<Snapshot> {
        let timeout_sec = scaled_secs(WATCH_TIMEOUT_SEC);
        loop {
            if signals.stopping() {
                return None;
            }
            let started = Instant::now();
            match self.client.watch_once(&self.path, &self.etag, timeout_sec) {
                Err(e) => {
                    self.failures.failed(&e);
                    if signals.sleep(self.backoff.next_wait()) == Wake::Stop {
                        return None;
                    }
                }
                Ok(snap) => {
                    self.failures.succeeded();
                    self.backoff.reset();
                    let new_etag = snap
                        .etag
                        .as_deref()
                        .filter(|e| !e.is_empty() && *e != self.etag);
                    if let Some(e) = new_etag {
                        self.etag = e.to_string();
                    }
                    // A change is a different document: a new ETag on the same content
                    // is not one.
                    let changed = self.last_doc.as_ref() != Some(&snap.doc);
                    // The real server answers a watch only on a change or at its timeout.
                    let early = started.elapsed() < Duration::from_secs(timeout_sec) / 2;
                    if early && (new_etag.is_none() || !changed) {
                        // Well before the timeout without a change (no new ETag, or a new
                        // one on the same document): the server cannot long-poll for us.
                        // Watch again after 1 s, backing off to 30 s while it goes on.
                        if !self.warned_no_etag {
                            warn!("Metadata server answered a watch at once without a change; polling with backoff.");
                            self.warned_no_etag = true;
                        }
                        if !changed && signals.sleep(self.slow_down.next_wait()) == Wake::Stop {
                            return None;
                        }
                    } else {
                        self.slow_down.reset();
                    }
                    if changed {
                        self.last_doc = Some(Arc::clone(&snap.doc));
                        return Some(snap);
                    }
                }
            }
        }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u64 {
        self.failures.failures()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_use_the_ip_and_the_v1_prefix() {
        let c = Client::with_host(DEFAULT_HOST);
        assert_eq!(
            c.url("instance/id"),
            "http://169.254.169.254/computeMetadata/v1/instance/id"
        );
        assert_eq!(
            Client::with_host("127.0.0.1:8080").url("/"),
            "http://127.0.0.1:8080/computeMetadata/v1/"
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query("abc-123"), "abc-123");
        assert_eq!(encode_query("a&b=c d"), "a%26b%3Dc%20d");
    }
}
