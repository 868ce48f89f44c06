//! A client for the metadata emulator's admin API (`/emulator/...`), spoken as plain
//! HTTP/1.1 over the emulator's unix socket, which the test process reaches from outside the
//! sandbox's network namespace.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use tinyjson::JsonValue;

/// How long one admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin handle of one sandbox's emulator (see `Sandbox::emulator`).
#[derive(Clone, Debug)]
pub struct Emulator {
    socket: PathBuf,
}

/// A reply of the admin API.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body (after de-chunking).
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics if it is not.
    pub fn json(&self) -> JsonValue {
        self.text().parse().unwrap_or_else(|e| {
            panic!(
                "emulator admin: the reply is not JSON ({:?}): {}",
                e,
                self.text()
            )
        })
    }
}

/// One record of the emulator's request log (`GET /emulator/requests`).
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The connection's number (one request per connection, from 1).
    pub conn: u64,
    /// The HTTP method.
    pub method: String,
    /// The path as sent, without the query.
    pub path: String,
    /// The query as sent, without `?`; empty if none.
    pub query: String,
    /// Whether the request carried a `Metadata-Flavor` header.
    pub flavor: bool,
    /// The status sent; 0 while running or when nothing was sent (reset, hang).
    pub status: u16,
    /// Whether it asked for `wait_for_change=true`.
    pub wait_for_change: bool,
    /// When it was read, in ms since the emulator started.
    pub start_ms: u64,
    /// When it finished; `None` while still running.
    pub end_ms: Option<u64>,
    /// The fault applied to it, by mode name.
    pub fault: Option<String>,
}

impl Request {
    /// Reads one record of the JSON form; panics on a record of another shape.
    pub fn from_json(value: &JsonValue) -> Request {
        let JsonValue::Object(map) = value else {
            panic!(
                "emulator admin: a request record is not an object: {:?}",
                value
            );
        };
        let field = |name: &str| {
            map.get(name).unwrap_or_else(|| {
                panic!(
                    "emulator admin: request record without {}: {:?}",
                    name, value
                )
            })
        };
        let text = |name: &str| match field(name) {
            JsonValue::String(s) => s.clone(),
            other => panic!("emulator admin: {} is not a string: {:?}", name, other),
        };
        let number = |name: &str| match field(name) {
            JsonValue::Number(n) => *n as u64,
            other => panic!("emulator admin: {} is not a number: {:?}", name, other),
        };
        let flag = |name: &str| match field(name) {
            JsonValue::Boolean(b) => *b,
            other => panic!("emulator admin: {} is not a boolean: {:?}", name, other),
        };
        Request {
            conn: number("conn"),
            method: text("method"),
            path: text("path"),
            query: text("query"),
            flavor: flag("flavor"),
            status: number("status") as u16,
            wait_for_change: flag("wait_for_change"),
            start_ms: number("start_ms"),
            end_ms: match map.get("end_ms") {
                Some(JsonValue::Number(n)) => Some(*n as u64),
                _ => None,
            },
            fault: match map.get("fault") {
                Some(JsonValue::String(s)) => Some(s.clone()),
                _ => None,
            },
        }
    }
}

impl Emulator {
    /// An admin handle talking to the unix socket at `socket`.
    pub fn new(socket: PathBuf) -> Emulator {
        Emulator { socket }
    }

    /// Sends one request and returns the reply, whatever its status; panics only when the
    /// socket cannot be reached or the reply is not HTTP.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let context = format!(
            "emulator admin {} {} via {}",
            method,
            path,
            self.socket.display()
        );
        let mut stream = UnixStream::connect(&self.socket)
            .unwrap_or_else(|e| panic!("{}: cannot connect: {}", context, e));
        let _ = stream.set_read_timeout(Some(ADMIN_TIMEOUT));
        let _ = stream.set_write_timeout(Some(ADMIN_TIMEOUT));
        let body = body.unwrap_or("");
        let head = format!(
            "{} {} HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            method,
            path,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(body.as_bytes()))
            .unwrap_or_else(|e| panic!("{}: cannot send: {}", context, e));
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .unwrap_or_else(|e| panic!("{}: cannot read the reply: {}", context, e));
        parse_reply(&raw)
            .unwrap_or_else(|e| panic!("{}: {}: {:?}", context, e, String::from_utf8_lossy(&raw)))
    }

    /// Sends a request and panics unless the status is 2xx; returns the reply.
    fn expect_ok(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let reply = self.request(method, path, body);
        if !(200..300).contains(&reply.status) {
            panic!(
                "emulator admin {} {} answered {}: {}\nrequest body: {}",
                method,
                path,
                reply.status,
                reply.text(),
                body.unwrap_or("")
            );
        }
        reply
    }

    /// The document being served.
    pub fn metadata(&self) -> JsonValue {
        self.expect_ok("GET", "/emulator/metadata", None).json()
    }

    /// Replaces the whole document (a JSON object, as text).
    pub fn set_metadata(&self, json: &str) {
        self.expect_ok("PUT", "/emulator/metadata", Some(json));
    }

    /// Applies a JSON merge patch (RFC 7396) to the document.
    pub fn patch(&self, json: &str) {
        self.expect_ok("PATCH", "/emulator/metadata", Some(json));
    }

    /// As [`patch`](Self::patch); returns when the change took effect in the emulator.
    pub fn patch_at(&self, json: &str) -> std::time::SystemTime {
        let reply = self
            .expect_ok("PATCH", "/emulator/metadata", Some(json))
            .json();
        match &reply {
            JsonValue::Object(map) => match map.get("changedAtMicros") {
                Some(JsonValue::Number(us)) => {
                    std::time::UNIX_EPOCH + Duration::from_micros(*us as u64)
                }
                _ => panic!("emulator admin: no changedAtMicros in {:?}", reply),
            },
            _ => panic!(
                "emulator admin: the PATCH reply is not an object: {:?}",
                reply
            ),
        }
    }

    /// Queues one fault (a JSON object) or several (an array), for example
    /// `{"mode":"status","status":503,"count":5}`.
    pub fn fault(&self, json: &str) {
        self.expect_ok("POST", "/emulator/faults", Some(json));
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.expect_ok("DELETE", "/emulator/faults", None);
    }

    /// The request log as the API serves it (one JSON object per request).
    pub fn requests_json(&self) -> Vec<JsonValue> {
        match self.expect_ok("GET", "/emulator/requests", None).json() {
            JsonValue::Array(items) => items,
            other => panic!(
                "emulator admin: the request log is not an array: {:?}",
                other
            ),
        }
    }

    /// The request log, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.requests_json()
            .iter()
            .map(Request::from_json)
            .collect()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.expect_ok("DELETE", "/emulator/requests", None);
    }

    /// The guest attributes written so far, as a JSON tree (namespace -> key -> value).
    pub fn guest_attributes(&self) -> JsonValue {
        self.expect_ok("GET", "/emulator/guest-attributes", None)
            .json()
    }
}

/// Parses a whole `Connection: close` response: status line, headers, and a body delimited
/// by `Content-Length`, chunked encoding, or the end of the stream.
fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the response head")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "the response head is not UTF-8")?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {:?}", status_line))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            chunked = true;
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        if rest.len() < n {
            return Err(format!("body cut short: {} of {} bytes", rest.len(), n));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Reply { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line cut short")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {:?}", size_text))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("chunk cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
