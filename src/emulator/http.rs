//! The emulator's own small HTTP/1.1 layer: reading one request (request line, headers,
//! a `Content-Length` or chunked body, `Expect: 100-continue`) with hard size limits, and
//! writing one response with `Connection: close`. Nothing here knows about metadata.

use std::io::{self, Read, Write};

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (a whole metadata document fits).
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Most header lines accepted.
const MAX_HEADERS: usize = 100;

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    /// The method, as sent (`GET`, `PUT`, ...).
    pub method: String,
    /// The path part of the target, still percent-encoded.
    pub path: String,
    /// The query part of the target (after `?`), still encoded; empty if none.
    pub query: String,
    /// Header names and values in the order sent, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The decoded value of the first query parameter called `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k, true) == name).then(|| decode(v, true))
        })
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (or timed out) before sending anything.
    Closed,
    /// A malformed or oversized request: answer with this status and message.
    Bad(u16, &'static str),
}

/// Buffered input over a stream, so the head and body can be read without over-reading
/// into nothing (the connection carries one request).
struct Input<'a, S> {
    stream: &'a mut S,
    buf: Vec<u8>,
    pos: usize,
}

impl<S: Read + Write> Input<'_, S> {
    fn fill(&mut self) -> Result<usize, ReadError> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) if self.buf.is_empty() => return Err(ReadError::Closed),
                Err(_) => return Err(ReadError::Bad(408, "request timed out")),
            }
        }
    }

    /// One line without its `\r\n` or `\n`; `limit` bounds its length.
    fn line(&mut self, limit: usize, too_long: ReadError) -> Result<String, ReadError> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let raw = &self.buf[self.pos..self.pos + i];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let line = String::from_utf8_lossy(raw).into_owned();
                self.pos += i + 1;
                return Ok(line);
            }
            if self.buf.len() - self.pos > limit {
                return Err(too_long);
            }
            if self.fill()? == 0 {
                return Err(if self.buf.is_empty() {
                    ReadError::Closed
                } else {
                    ReadError::Bad(400, "request ended early")
                });
            }
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], ReadError> {
        while self.buf.len() - self.pos < n {
            if self.fill()? == 0 {
                return Err(ReadError::Bad(400, "body shorter than announced"));
            }
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..start + n])
    }
}

/// Reads one request from `stream`. Sends `100 Continue` when the client asks for it.
pub fn read_request<S: Read + Write>(stream: &mut S) -> Result<Request, ReadError> {
    let mut input = Input {
        stream,
        buf: Vec::with_capacity(1024),
        pos: 0,
    };
    let too_long = || ReadError::Bad(431, "request head too large");
    let mut request_line = input.line(MAX_HEAD, too_long())?;
    // RFC 9112 allows (and asks servers to ignore) empty lines before the request line.
    for _ in 0..4 {
        if !request_line.is_empty() {
            break;
        }
        request_line = input.line(MAX_HEAD, too_long())?;
    }
    let mut parts = request_line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(400, "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad(505, "only HTTP/1.x is spoken here"));
    }
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ReadError::Bad(400, "malformed method"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    loop {
        if input.pos > MAX_HEAD {
            return Err(too_long());
        }
        let line = input.line(MAX_HEAD, too_long())?;
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ReadError::Bad(431, "too many header lines"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(400, "malformed header line"));
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(ReadError::Bad(400, "malformed header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
    };
    let chunked = req
        .header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = match req.header("Content-Length") {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Err(ReadError::Bad(400, "malformed Content-Length")),
        },
    };
    if length > MAX_BODY {
        return Err(ReadError::Bad(413, "body too large"));
    }
    let expects = req
        .header("Expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects && (chunked || length > 0) && input.buf.len() == input.pos {
        let _ = input.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        let _ = input.stream.flush();
    }
    if chunked {
        req.body = read_chunked(&mut input)?;
    } else if length > 0 {
        req.body = input.take(length)?.to_vec();
    }
    Ok(req)
}

fn read_chunked<S: Read + Write>(input: &mut Input<'_, S>) -> Result<Vec<u8>, ReadError> {
    let bad = || ReadError::Bad(400, "malformed chunked body");
    let mut body = Vec::new();
    loop {
        let line = input.line(256, bad())?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad())?;
        if size == 0 {
            // Trailer lines up to the empty one.
            for _ in 0..MAX_HEADERS {
                if input.line(MAX_HEAD, bad())?.is_empty() {
                    return Ok(body);
                }
            }
            return Err(bad());
        }
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Bad(413, "body too large"));
        }
        body.extend_from_slice(input.take(size)?);
        if !input.line(2, bad())?.is_empty() {
            return Err(bad());
        }
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`, as in queries).
/// Malformed escapes are kept as they are.
pub fn decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| (c as char).to_digit(16);
        if b == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b == b'+' && plus_is_space { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One response, written with `Content-Length` and `Connection: close`.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection`, in order.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a `Content-Type`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Drops every header called `name`.
    pub fn without(&mut self, name: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// The value of header `name`, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The status line and headers, ending with the blank line.
    pub fn head(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        head.push_str("Connection: close\r\n\r\n");
        head.into_bytes()
    }

    /// Writes the head and the first `body_bytes` bytes of the body (all of it for a
    /// normal answer; fewer to emulate a truncated reply).
    pub fn write_to<W: Write>(&self, out: &mut W, body_bytes: usize) -> io::Result<()> {
        let mut bytes = self.head();
        bytes.extend_from_slice(&self.body[..body_bytes.min(self.body.len())]);
        out.write_all(&bytes)?;
        out.flush()
    }
}

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// HTML-escapes text for an error page.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An error page in the shape Google's front ends send (`Error 404 (Not Found)!!1`).
pub fn google_error_page(status: u16, message: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  \
         <meta name=viewport content=\"initial-scale=1, minimum-scale=1, width=device-width\">\n  \
         <title>Error {status} ({reason})!!1</title>\n  \
         <a href=//www.google.com/><span id=logo aria-label=Google></span></a>\n  \
         <p><b>{status}.</b> <ins>That\u{2019}s an error.</ins>\n  \
         <p>{message}  <ins>That\u{2019}s all we know.</ins>\n",
        status = status,
        reason = reason(status),
        message = message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake stream: reads from `input`, collects writes.
    struct Fake {
        input: io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn parse(raw: &[u8]) -> (Result<Request, ReadError>, Vec<u8>) {
        let mut fake = Fake {
            input: io::Cursor::new(raw.to_vec()),
            written: Vec::new(),
        };
        let r = read_request(&mut fake);
        (r, fake.written)
    }

    #[test]
    fn a_plain_get_is_parsed() {
        let (r, _) = parse(b"GET /computeMetadata/v1/?recursive=true&last_etag=a%2Bb HTTP/1.1\r\nHost: x\r\nMetadata-Flavor:  Google \r\n\r\n");
        let r = r.unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/computeMetadata/v1/");
        assert_eq!(r.param("recursive").as_deref(), Some("true"));
        assert_eq!(r.param("last_etag").as_deref(), Some("a+b"));
        assert_eq!(r.param("nothing"), None);
        assert_eq!(r.header("metadata-flavor"), Some("Google"));
    }

    #[test]
    fn bodies_by_length_and_by_chunks() {
        let (r, _) = parse(b"PUT /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(r.unwrap().body, b"hello");
        let (r, cont) = parse(
            b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        );
        assert_eq!(r.unwrap().body, b"abcde");
        assert!(
            cont.is_empty(),
            "the body was already there: no 100 Continue"
        );
        let (r, cont) = parse(b"PUT /x HTTP/1.1\nContent-Length: 2\nExpect: 100-continue\n\n");
        assert!(matches!(r, Err(ReadError::Bad(400, _))));
        assert!(cont.starts_with(b"HTTP/1.1 100 Continue"));
    }

    #[test]
    fn malformed_and_oversized_requests_are_refused() {
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET / HTTP/1.1\r\nHost: x",
        ] {
            assert!(
                matches!(parse(raw).0, Err(ReadError::Bad(400, _))),
                "{:?}",
                raw
            );
        }
        assert!(matches!(parse(b"").0, Err(ReadError::Closed)));
        assert!(matches!(
            parse(b"GET / SPDY/3\r\n\r\n").0,
            Err(ReadError::Bad(505, _))
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD + 10));
        assert!(matches!(
            parse(big.as_bytes()).0,
            Err(ReadError::Bad(431, _))
        ));
        let huge = format!("PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert!(matches!(
            parse(huge.as_bytes()).0,
            Err(ReadError::Bad(413, _))
        ));
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(decode("a%20b%2fc", false), "a b/c");
        assert_eq!(decode("a+b", false), "a+b");
        assert_eq!(decode("a+b", true), "a b");
        assert_eq!(decode("100%", false), "100%");
        assert_eq!(decode("%zz%4", false), "%zz%4");
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = Response::new(404, "text/html", "nope").with("ETag", "abc");
        let mut out = Vec::new();
        r.write_to(&mut out, 2).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 4\r\n"));
        assert!(text.contains("ETag: abc\r\n"));
        assert!(text.ends_with("\r\n\r\nno"));
    }
}
