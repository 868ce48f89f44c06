//! JSON helpers over `tinyjson`'s value type: a parser of our own (tinyjson's reads a
//! character at a time; a 500 KB metadata document took it 5 ms, this one copies the runs
//! between escapes whole and is about ten times faster), with a nesting limit, and looking
//! values up by slash-separated path, as metadata paths are written.

use std::collections::HashMap;

use tinyjson::JsonValue;

/// JSON nested deeper than this is refused (the parser recurses).
const MAX_JSON_DEPTH: usize = 256;

/// Parses one JSON value (RFC 8259; white space around it allowed, nothing else). Objects
/// with a repeated key keep the last value, as tinyjson did. Errors say what and where.
pub fn parse_json(text: &str) -> std::result::Result<JsonValue, String> {
    let mut parser = Parser { text, pos: 0 };
    let value = parser.value(0)?;
    parser.skip_blanks();
    if parser.pos != text.len() {
        return Err(parser.error("text after the JSON value"));
    }
    Ok(value)
}

/// Where the run of plain string bytes starting at `from` ends: at the first `"`, `\\` or
/// control character (or the end). Eight bytes at a time while none of them is one.
pub(crate) fn plain_run_end(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Non-zero when a byte of `x` is below `n` (n <= 128): never misses one; may also flag
    // a byte above one that is (the byte loop below finds the exact place).
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGHS;
    let mut i = from;
    // A reference to an array, not copy_from_slice (a memcpy call at opt-level "z").
    while let Some(Ok(w)) = bytes.get(i..i + 8).map(<&[u8; 8]>::try_from) {
        let word = u64::from_le_bytes(*w);
        let special = below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
            | below(word, 0x20);
        if special != 0 {
            break;
        }
        i += 8;
    }
    while bytes
        .get(i)
        .is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20)
    {
        i += 1;
    }
    i
}

/// Whether two byte strings are equal, eight bytes at a time (musl's `memcmp`, which `==`
/// on slices calls, goes a byte at a time; the accounts daemon compares a few hundred KB of
/// metadata values, file contents and key lines every round).
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut left, mut right) = (a.chunks_exact(8), b.chunks_exact(8));
    for (l, r) in left.by_ref().zip(right.by_ref()) {
        let (Ok(l), Ok(r)) = (<&[u8; 8]>::try_from(l), <&[u8; 8]>::try_from(r)) else {
            return false;
        };
        if u64::from_ne_bytes(*l) != u64::from_ne_bytes(*r) {
            return false;
        }
    }
    left.remainder() == right.remainder()
}

/// Whether two JSON values are equal (as `==`, with strings compared by [`same_bytes`]).
pub fn same_value(a: &JsonValue, b: &JsonValue) -> bool {
    match (a, b) {
        (JsonValue::String(a), JsonValue::String(b)) => same_bytes(a.as_bytes(), b.as_bytes()),
        (JsonValue::Array(a), JsonValue::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_value(a, b))
        }
        (JsonValue::Object(a), JsonValue::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// Whether two daemons' slices are equal part by part (see [`Slice`]).
pub fn same_slices(a: &Slice<'_>, b: &Slice<'_>) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Some(a), Some(b)) => same_value(a, b),
            (None, None) => true,
            _ => false,
        })
}

/// A recursive-descent parser over the bytes of a `str` (it splits the text only at ASCII
/// bytes, so every piece it copies is valid UTF-8).
struct Parser<'t> {
    text: &'t str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{} at byte {}", what, self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_blanks(&mut self) {
        let bytes = self.text.as_bytes();
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, word: &str) -> std::result::Result<(), String> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> std::result::Result<JsonValue, String> {
        self.skip_blanks();
        match self.peek() {
            None => Err(self.error("unexpected end")),
            Some(b'{' | b'[') if depth >= MAX_JSON_DEPTH => {
                Err(format!("JSON nested more than {} deep", MAX_JSON_DEPTH))
            }
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(JsonValue::String),
            Some(b't') => self.expect("true").map(|()| JsonValue::Boolean(true)),
            Some(b'f') => self.expect("false").map(|()| JsonValue::Boolean(false)),
            Some(b'n') => self.expect("null").map(|()| JsonValue::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn object(&mut self, depth: usize) -> std::result::Result<JsonValue, String> {
        self.pos += 1;
        let mut map = HashMap::new();
        self.skip_blanks();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(JsonValue::Object(map));
        }
        loop {
            self.skip_blanks();
            if self.peek() != Some(b'"') {
                return Err(self.error("an object key must be a string"));
            }
            let key = self.string()?;
            self.skip_blanks();
            if self.peek() != Some(b':') {
                return Err(self.error("':' expected after an object key"));
            }
            self.pos += 1;
            let value = self.value(depth)?;
            map.insert(key, value);
            self.skip_blanks();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(JsonValue::Object(map));
                }
                _ => return Err(self.error("',' or '}' expected in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> std::result::Result<JsonValue, String> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_blanks();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(JsonValue::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_blanks();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(JsonValue::Array(items));
                }
                _ => return Err(self.error("',' or ']' expected in an array")),
            }
        }
    }

    /// A string at the current `"`; runs without escapes are copied whole.
    fn string(&mut self) -> std::result::Result<String, String> {
        self.pos += 1;
        let bytes = self.text.as_bytes();
        let mut out = String::new();
        loop {
            let run_start = self.pos;
            self.pos = plain_run_end(bytes, self.pos);
            out.push_str(&self.text[run_start..self.pos]);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escaped = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            out.push(self.unicode_escape()?);
                            continue;
                        }
                        _ => return Err(self.error("invalid escape in a string")),
                    };
                    self.pos += 1;
                    out.push(escaped);
                }
                Some(_) => return Err(self.error("control character in a string")),
            }
        }
    }

    fn hex4(&mut self) -> std::result::Result<u32, String> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("\\u needs four hex digits"))?;
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|e| e.to_string())
    }

    /// The character of a `\uXXXX` escape (after the `u`); a UTF-16 surrogate must come
    /// as a pair.
    fn unicode_escape(&mut self) -> std::result::Result<char, String> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.text[self.pos..].starts_with("\\u") {
                    return Err(self.error("unpaired UTF-16 surrogate"));
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("unpaired UTF-16 surrogate"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("unpaired UTF-16 surrogate")),
            code => code,
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, read as an `f64`.
    fn number(&mut self) -> std::result::Result<JsonValue, String> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let digits = |p: &mut usize| {
            let from = *p;
            while bytes.get(*p).is_some_and(u8::is_ascii_digit) {
                *p += 1;
            }
            *p - from
        };
        let mut p = self.pos;
        if bytes.get(p) == Some(&b'-') {
            p += 1;
        }
        let int_start = p;
        let int_digits = digits(&mut p);
        if int_digits == 0 || (int_digits > 1 && bytes[int_start] == b'0') {
            self.pos = p;
            return Err(self.error("invalid number"));
        }
        if bytes.get(p) == Some(&b'.') {
            p += 1;
            if digits(&mut p) == 0 {
                self.pos = p;
                return Err(self.error("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = bytes.get(p) {
            p += 1;
            if let Some(b'+' | b'-') = bytes.get(p) {
                p += 1;
            }
            if digits(&mut p) == 0 {
                self.pos = p;
                return Err(self.error("invalid number"));
            }
        }
        self.pos = p;
        self.text[start..p]
            .parse::<f64>()
            .map(JsonValue::Number)
            .map_err(|e| self.error(&e.to_string()))
    }
}

/// Looks up a slash-separated path of object keys in a JSON document.
pub fn lookup<'a>(doc: &'a JsonValue, path: &str) -> Option<&'a JsonValue> {
    path.split('/')
        .filter(|p| !p.is_empty())
        .try_fold(doc, |v, key| match v {
            JsonValue::Object(map) => map.get(key),
            JsonValue::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

/// A string at `path`, if there is one.
pub fn lookup_str<'a>(doc: &'a JsonValue, path: &str) -> Option<&'a str> {
    match lookup(doc, path) {
        Some(JsonValue::String(s)) => Some(s),
        _ => None,
    }
}

/// The parts of a document one daemon reads, borrowed from it (`None` where a part is
/// absent): two documents are compared part by part without copying them.
pub type Slice<'d> = Vec<Option<&'d JsonValue>>;

/// A slice part that stands for "present" where only presence matters.
pub static PRESENT: JsonValue = JsonValue::Null;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_tinyjson_did() {
        // Valid JSON: the same value as tinyjson's own parser gives.
        for text in [
            r#"{"a":"b","c":[1,-2.5,3e2,0,-0,1E-2,true,false,null],"d":{}}"#,
            " \n\t[ ] ",
            r#""tab\tquote\"back\\slash\/nl\nu\u00e9\u20ac\ud83d\ude00 \b\f\r""#,
            r#"{"dup":1,"dup":2}"#,
            r#"{"ünï":"cödé ✓","e":""}"#,
            "123456789012345678901234567890",
            r#"[[[{"x":[[]]}]]]"#,
        ] {
            let ours = parse_json(text).unwrap_or_else(|e| panic!("{}: {}", text, e));
            let theirs: JsonValue = text.parse().expect("tinyjson parses it");
            assert_eq!(ours, theirs, "{}", text);
        }
        // Invalid JSON: refused by both.
        for text in [
            "",
            " ",
            "{",
            "[1,]",
            "[1 2]",
            r#"{"a" 1}"#,
            r#"{"a":1,}"#,
            r#"{1:2}"#,
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "tru",
            "nul",
            r#""abc"#,
            r#""a\u12""#,
            r#""\x""#,
            "\"a\nb\"",
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            "[1]x",
            "{}{}",
        ] {
            assert!(parse_json(text).is_err(), "accepted {:?}", text);
            assert!(
                text.parse::<JsonValue>().is_err(),
                "tinyjson accepted {:?}",
                text
            );
        }
    }

    #[test]
    fn plain_runs_end_at_quotes_backslashes_and_controls() {
        for (text, from, end) in [
            ("", 0, 0),
            ("abc", 0, 3),
            ("abcdefghijklmnop\"", 0, 16),
            ("abcdefgh\\ijk", 0, 8),
            ("abcdefghijklm\nop", 2, 13),
            ("\u{7f}\u{e9}\u{20ac}xyzabcdef\u{1f}", 0, 15),
            ("a\"", 1, 1),
        ] {
            assert_eq!(plain_run_end(text.as_bytes(), from), end, "{:?}", text);
        }
        // Every position of every byte value, against the plain definition.
        for special in 0u8..=255 {
            for at in 0..20 {
                let mut bytes = vec![b'x'; 20];
                bytes[at] = special;
                let plain = |b: u8| b != b'"' && b != b'\\' && b >= 0x20;
                let expected = bytes.iter().position(|&b| !plain(b)).unwrap_or(20);
                assert_eq!(plain_run_end(&bytes, 0), expected, "{special} at {at}");
            }
        }
    }

    #[test]
    fn same_bytes_and_values_agree_with_eq() {
        let texts: [&[u8]; 7] = [
            b"",
            b"a",
            b"abcdefgh",
            b"abcdefgi",
            b"abcdefghX",
            b"abcdefghY",
            b"bbcdefgh",
        ];
        for a in texts {
            for b in texts {
                assert_eq!(same_bytes(a, b), a == b, "{:?} {:?}", a, b);
            }
        }
        let docs = [
            r#"{"a":"0123456789abcdef","b":[1,{"c":null}]}"#,
            r#"{"a":"0123456789abcdeX","b":[1,{"c":null}]}"#,
            r#"{"a":"0123456789abcdef","b":[1,{"c":false}]}"#,
            r#"{"a":"0123456789abcdef","b":[1,{"c":null}],"d":1}"#,
            r#"["0123456789abcdef"]"#,
        ];
        for a in docs {
            for b in docs {
                let (a, b) = (parse_json(a).unwrap(), parse_json(b).unwrap());
                assert_eq!(same_value(&a, &b), a == b);
                assert_eq!(
                    same_slices(&vec![Some(&a), None], &vec![Some(&b), None]),
                    a == b
                );
            }
        }
        assert!(!same_slices(&vec![None], &vec![Some(&JsonValue::Null)]));
    }

    #[test]
    fn deep_json_is_refused_before_parsing() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(parse_json(&deep).is_err());
        assert!(parse_json(r#"{"a":["[[[[", {"b":1}]}"#).is_ok());
        assert!(parse_json("<html>").is_err());
        assert!(parse_json(r#"{"a":1"#).is_err());
    }

    #[test]
    fn lookup_walks_objects_and_arrays() {
        let doc =
            parse_json(r#"{"instance":{"networkInterfaces":[{"mac":"42:01"}],"id":7}}"#).unwrap();
        assert_eq!(
            lookup_str(&doc, "instance/networkInterfaces/0/mac"),
            Some("42:01")
        );
        assert!(lookup(&doc, "instance/id").is_some());
        assert!(lookup(&doc, "instance/nothing").is_none());
    }
}
