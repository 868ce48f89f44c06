//! JSON helpers over `tinyjson`: parsing with a nesting limit (the parser recurses) and
//! looking values up by slash-separated path, as metadata paths are written.

use tinyjson::JsonValue;

/// JSON nested deeper than this is refused before parsing.
const MAX_JSON_DEPTH: usize = 256;

/// Parses JSON after checking that it is not absurdly nested (the parser recurses).
pub fn parse_json(text: &str) -> std::result::Result<JsonValue, String> {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if max > MAX_JSON_DEPTH {
        return Err(format!("JSON nested {} deep", max));
    }
    text.parse::<JsonValue>().map_err(|e| e.to_string())
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
