//! Injected faults: what the emulator does wrong on purpose, the JSON form a fault takes in
//! the admin API (documented on [`Fault`]), and the FIFO queue they wait in. A fault applies
//! to the next `count` requests below `/computeMetadata/`, never to admin requests.

use std::collections::{HashMap, VecDeque};

use tinyjson::JsonValue;

/// What a fault does to a request.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultMode {
    /// Answer with `status` and `body` (default: Google's HTML error page for the status).
    Status { status: u16, body: Option<String> },
    /// 200 with an HTML error page instead of the value.
    Html,
    /// Announce the full `Content-Length`, send half of the body, close.
    Truncate,
    /// Close the connection with a TCP RST without answering.
    Reset,
    /// Send nothing for `seconds`, then close.
    Hang { seconds: f64 },
    /// Answer normally after `ms` milliseconds.
    Delay { ms: u64 },
    /// Answer at once (even a `wait_for_change` request) without an `ETag` header.
    NoEtag,
    /// Answer at once (even a `wait_for_change` request) with the current, unchanged ETag.
    FixedEtag,
    /// Answer at once (even a `wait_for_change` request) with an ETag never sent before,
    /// though the document is the same.
    FreshEtag,
    /// Answer normally but without the `Metadata-Flavor` header.
    NoFlavor,
}

/// One queued fault. Its JSON form (`POST /emulator/faults`, [`Fault::from_json`]):
///
/// ```text
/// {"mode":"status","status":503,"count":N,"body":"optional"}  an error status (default 503)
/// {"mode":"html","count":N}                200 with an HTML error page
/// {"mode":"truncate","count":N}            full Content-Length, half the body, then close
/// {"mode":"reset","count":N}               read the request, close with RST
/// {"mode":"hang","count":N,"seconds":S}    read the request, send nothing for S s (default 30)
/// {"mode":"delay","count":N,"ms":M}        answer normally after M ms (default 1000)
/// {"mode":"no_etag","count":N}             answer at once (even a watch), no ETag header
/// {"mode":"fixed_etag","count":N}          answer at once (even a watch), current ETag
/// {"mode":"fresh_etag","count":N}          answer at once (even a watch), a new ETag
/// {"mode":"no_flavor","count":N}           normal answer without Metadata-Flavor
/// ```
///
/// `count` defaults to 1, `-1` means until cleared; a `body` that is not a string is sent
/// as its JSON text; unknown fields are refused.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// What it does.
    pub mode: FaultMode,
    /// How many more metadata requests it applies to; negative = until cleared.
    pub count: i64,
}

const DEFAULT_HANG_SECONDS: f64 = 30.0;
const DEFAULT_DELAY_MS: u64 = 1000;

impl Fault {
    /// A fault applying to the next `count` requests (`-1`: until cleared).
    pub fn new(mode: FaultMode, count: i64) -> Fault {
        Fault { mode, count }
    }

    /// The mode's name as the JSON form and the request log write it.
    pub fn name(&self) -> &'static str {
        match self.mode {
            FaultMode::Status { .. } => "status",
            FaultMode::Html => "html",
            FaultMode::Truncate => "truncate",
            FaultMode::Reset => "reset",
            FaultMode::Hang { .. } => "hang",
            FaultMode::Delay { .. } => "delay",
            FaultMode::NoEtag => "no_etag",
            FaultMode::FixedEtag => "fixed_etag",
            FaultMode::FreshEtag => "fresh_etag",
            FaultMode::NoFlavor => "no_flavor",
        }
    }

    /// Reads the JSON form (see the module documentation). Unknown fields are refused so a
    /// typo in a test does not silently inject the wrong fault.
    pub fn from_json(value: &JsonValue) -> Result<Fault, String> {
        let JsonValue::Object(map) = value else {
            return Err("a fault is a JSON object".into());
        };
        let mode = match map.get("mode") {
            Some(JsonValue::String(m)) => m.as_str(),
            _ => return Err("a fault needs \"mode\" (a string)".into()),
        };
        let allowed: &[&str] = match mode {
            "status" => &["status", "body"],
            "hang" => &["seconds"],
            "delay" => &["ms"],
            "html" | "truncate" | "reset" | "no_etag" | "fixed_etag" | "fresh_etag"
            | "no_flavor" => &[],
            other => return Err(format!("unknown fault mode {:?}", other)),
        };
        if let Some(extra) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "mode" | "count") && !allowed.contains(&k.as_str()))
        {
            return Err(format!(
                "unknown field {:?} for fault mode {:?}",
                extra, mode
            ));
        }
        let count = match map.get("count") {
            None => 1,
            Some(JsonValue::Number(n)) if n.fract() == 0.0 && (*n == -1.0 || *n >= 1.0) => {
                *n as i64
            }
            Some(_) => return Err("\"count\" must be a whole number >= 1, or -1".into()),
        };
        let mode = match mode {
            "status" => {
                let status = match map.get("status") {
                    None => 503,
                    Some(JsonValue::Number(n))
                        if n.fract() == 0.0 && (100.0..=599.0).contains(n) =>
                    {
                        *n as u16
                    }
                    Some(_) => return Err("\"status\" must be an HTTP status 100-599".into()),
                };
                let body = match map.get("body") {
                    None | Some(JsonValue::Null) => None,
                    Some(JsonValue::String(s)) => Some(s.clone()),
                    Some(other) => Some(super::tree::to_json(other)),
                };
                FaultMode::Status { status, body }
            }
            "html" => FaultMode::Html,
            "truncate" => FaultMode::Truncate,
            "reset" => FaultMode::Reset,
            "hang" => FaultMode::Hang {
                seconds: match map.get("seconds") {
                    None => DEFAULT_HANG_SECONDS,
                    Some(JsonValue::Number(n)) if *n >= 0.0 && *n <= 86_400.0 => *n,
                    Some(_) => return Err("\"seconds\" must be a number 0-86400".into()),
                },
            },
            "delay" => FaultMode::Delay {
                ms: match map.get("ms") {
                    None => DEFAULT_DELAY_MS,
                    Some(JsonValue::Number(n))
                        if n.fract() == 0.0 && *n >= 0.0 && *n <= 86_400_000.0 =>
                    {
                        *n as u64
                    }
                    Some(_) => return Err("\"ms\" must be whole milliseconds".into()),
                },
            },
            "no_etag" => FaultMode::NoEtag,
            "fixed_etag" => FaultMode::FixedEtag,
            "fresh_etag" => FaultMode::FreshEtag,
            _ => FaultMode::NoFlavor,
        };
        Ok(Fault { mode, count })
    }

    /// The JSON form ([`Fault::from_json`] reads it back).
    pub fn to_json(&self) -> JsonValue {
        let mut map = HashMap::new();
        map.insert(
            "mode".to_string(),
            JsonValue::String(self.name().to_string()),
        );
        map.insert("count".to_string(), JsonValue::Number(self.count as f64));
        match &self.mode {
            FaultMode::Status { status, body } => {
                map.insert("status".into(), JsonValue::Number(f64::from(*status)));
                if let Some(b) = body {
                    map.insert("body".into(), JsonValue::String(b.clone()));
                }
            }
            FaultMode::Hang { seconds } => {
                map.insert("seconds".into(), JsonValue::Number(*seconds));
            }
            FaultMode::Delay { ms } => {
                map.insert("ms".into(), JsonValue::Number(*ms as f64));
            }
            _ => {}
        }
        JsonValue::Object(map)
    }
}

/// Takes the fault that applies to the next metadata request, if any: the front of the
/// queue, whose count goes down by one (and which leaves the queue at zero).
pub fn take(queue: &mut VecDeque<Fault>) -> Option<Fault> {
    loop {
        let front = queue.front_mut()?;
        if front.count == 0 {
            queue.pop_front();
            continue;
        }
        let applied = front.clone();
        if front.count > 0 {
            front.count -= 1;
            if front.count == 0 {
                queue.pop_front();
            }
        }
        return Some(applied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Fault, String> {
        Fault::from_json(&s.parse::<JsonValue>().unwrap())
    }

    #[test]
    fn every_mode_parses_and_round_trips() {
        for text in [
            r#"{"mode":"status","status":503,"count":2,"body":"{\"a\":1}"}"#,
            r#"{"mode":"html"}"#,
            r#"{"mode":"truncate","count":-1}"#,
            r#"{"mode":"reset"}"#,
            r#"{"mode":"hang","seconds":0.5}"#,
            r#"{"mode":"delay","ms":20}"#,
            r#"{"mode":"no_etag"}"#,
            r#"{"mode":"fixed_etag"}"#,
            r#"{"mode":"no_flavor"}"#,
        ] {
            let f = parse(text).unwrap();
            assert_eq!(Fault::from_json(&f.to_json()).unwrap(), f, "{}", text);
        }
        assert_eq!(
            parse(r#"{"mode":"status","body":{"x":[1]}}"#).unwrap(),
            Fault::new(
                FaultMode::Status {
                    status: 503,
                    body: Some(r#"{"x":[1]}"#.into())
                },
                1
            )
        );
    }

    #[test]
    fn bad_faults_are_refused() {
        for text in [
            r#"[]"#,
            r#"{}"#,
            r#"{"mode":"explode"}"#,
            r#"{"mode":"status","status":99}"#,
            r#"{"mode":"status","count":0}"#,
            r#"{"mode":"status","count":1.5}"#,
            r#"{"mode":"hang","seconds":-1}"#,
            r#"{"mode":"delay","ms":"10"}"#,
            r#"{"mode":"html","ms":10}"#,
        ] {
            assert!(parse(text).is_err(), "{}", text);
        }
    }

    #[test]
    fn the_queue_is_fifo_and_counts_down() {
        let mut q = VecDeque::new();
        q.push_back(Fault::new(FaultMode::Reset, 2));
        q.push_back(Fault::new(FaultMode::Html, 0));
        q.push_back(Fault::new(FaultMode::NoEtag, -1));
        assert_eq!(take(&mut q).unwrap().mode, FaultMode::Reset);
        assert_eq!(take(&mut q).unwrap().mode, FaultMode::Reset);
        for _ in 0..5 {
            assert_eq!(take(&mut q).unwrap().mode, FaultMode::NoEtag);
        }
        q.clear();
        assert!(take(&mut q).is_none());
    }
}
