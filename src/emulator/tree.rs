//! The metadata document as the server shows it: finding a path in the recursive JSON form
//! (hyphenated path segments map to camelCase keys, except below `attributes`), rendering a
//! value as JSON (keys sorted, so equal content is equal bytes), as text, or as a directory
//! listing, the ETag of a body, and RFC 7386 merge patches.
//!
//! Rules followed:
//! - A directory is an object, or an array holding objects or arrays. A list of scalars
//!   (`forwardedIps`, `scopes`, `tags`) is a leaf whose text form is one item per line;
//!   its items can still be reached by index (`forwarded-ips/0`).
//! - Listings name one child per line, hyphenated (verbatim below `attributes` and in guest
//!   attributes), directories with a trailing `/`; array directories list `0/`, `1/`.
//! - Numbers with an integral value print as plain digits (instance ids).

use std::collections::HashMap;
use std::fmt::Write as _;

use tinyjson::JsonValue;

/// How the keys of an object are named on paths and in listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// Metadata keys: camelCase in JSON, hyphenated in paths and listings.
    Hyphenated,
    /// User keys (below `attributes`, guest attributes): the same everywhere.
    Verbatim,
}

/// `networkInterfaces` -> `network-interfaces`.
pub fn camel_to_hyphen(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `network-interfaces` -> `networkInterfaces`.
pub fn hyphen_to_camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper = false;
    for c in s.chars() {
        if c == '-' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The key naming of the children of `key` whose parent names its keys `parent`.
fn child_keys(parent: Keys, key: &str) -> Keys {
    if parent == Keys::Verbatim || key == "attributes" {
        Keys::Verbatim
    } else {
        Keys::Hyphenated
    }
}

/// Finds the value at `segments` below `root` (whose keys are named `keys`). Returns the
/// value and the naming of its own keys.
pub fn resolve<'a>(
    root: &'a JsonValue,
    segments: &[String],
    keys: Keys,
) -> Option<(&'a JsonValue, Keys)> {
    let mut current = root;
    let mut naming = keys;
    for seg in segments {
        match current {
            JsonValue::Object(map) => {
                let (key, value) = match map.get_key_value(seg.as_str()) {
                    Some(found) => found,
                    None if naming == Keys::Hyphenated => {
                        map.get_key_value(hyphen_to_camel(seg).as_str())?
                    }
                    None => return None,
                };
                naming = child_keys(naming, key);
                current = value;
            }
            JsonValue::Array(items) => {
                if seg.len() > 1 && seg.starts_with('0') {
                    return None;
                }
                current = items.get(seg.parse::<usize>().ok()?)?;
            }
            _ => return None,
        }
    }
    Some((current, naming))
}

/// Whether `v` shows as a directory.
pub fn is_dir(v: &JsonValue) -> bool {
    match v {
        JsonValue::Object(_) => true,
        JsonValue::Array(items) => items
            .iter()
            .any(|i| matches!(i, JsonValue::Object(_) | JsonValue::Array(_))),
        _ => false,
    }
}

/// A number as JSON and as text: integral values as plain digits.
pub fn number(n: f64) -> String {
    if !n.is_finite() {
        "null".to_string()
    } else if n.fract() == 0.0 && n.abs() < 1.8e19 {
        if n < 0.0 {
            format!("{}", n as i64)
        } else {
            format!("{}", n as u64)
        }
    } else {
        format!("{}", n)
    }
}

/// `v` as compact JSON with object keys sorted.
pub fn to_json(v: &JsonValue) -> String {
    let mut out = String::new();
    write_json(&mut out, v);
    out
}

fn write_json(out: &mut String, v: &JsonValue) {
    match v {
        JsonValue::Null => out.push_str("null"),
        JsonValue::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        JsonValue::Number(n) => out.push_str(&number(*n)),
        JsonValue::String(s) => write_json_string(out, s),
        JsonValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        JsonValue::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, k);
                out.push(':');
                write_json(out, &map[k]);
            }
            out.push('}');
        }
    }
}

/// A string as a JSON string literal.
pub fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut at = 0;
    loop {
        // Runs that need no escape are copied whole.
        let end = crate::json::plain_run_end(bytes, at);
        out.push_str(&s[at..end]);
        let Some(&b) = bytes.get(end) else {
            break;
        };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c => {
                let _ = write!(out, "\\u{:04x}", c);
            }
        }
        at = end + 1;
    }
    out.push('"');
}

/// A scalar's text form (`alt=text`).
fn scalar_text(v: &JsonValue) -> String {
    match v {
        JsonValue::String(s) => s.clone(),
        JsonValue::Number(n) => number(*n),
        JsonValue::Boolean(b) => b.to_string(),
        JsonValue::Null => String::new(),
        other => to_json(other),
    }
}

/// A leaf's text form: a scalar as itself, a list of scalars one item per line.
pub fn leaf_text(v: &JsonValue) -> String {
    match v {
        JsonValue::Array(items) => items.iter().map(|i| scalar_text(i) + "\n").collect(),
        other => scalar_text(other),
    }
}

/// The child names of a directory, as a listing shows them (sorted, `/` on directories).
pub fn listing_names(v: &JsonValue, keys: Keys) -> Vec<String> {
    match v {
        JsonValue::Object(map) => {
            let mut names: Vec<String> = map
                .iter()
                .map(|(k, child)| {
                    let mut name = match keys {
                        Keys::Verbatim => k.clone(),
                        Keys::Hyphenated => camel_to_hyphen(k),
                    };
                    if is_dir(child) {
                        name.push('/');
                    }
                    name
                })
                .collect();
            names.sort();
            names
        }
        JsonValue::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, child)| {
                if is_dir(child) {
                    format!("{}/", i)
                } else {
                    i.to_string()
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A directory listing: one name per line.
pub fn listing(v: &JsonValue, keys: Keys) -> String {
    listing_names(v, keys)
        .into_iter()
        .map(|n| n + "\n")
        .collect()
}

/// The recursive text form: one `path value` line per leaf (list items as `path/N`).
pub fn recursive_text(v: &JsonValue, keys: Keys) -> String {
    let mut out = String::new();
    walk_text(&mut out, "", v, keys);
    out
}

fn walk_text(out: &mut String, prefix: &str, v: &JsonValue, keys: Keys) {
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{}", prefix, name)
        }
    };
    match v {
        JsonValue::Object(map) => {
            let mut entries: Vec<(&String, &JsonValue)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (k, child) in entries {
                let name = match keys {
                    Keys::Verbatim => k.clone(),
                    Keys::Hyphenated => camel_to_hyphen(k),
                };
                walk_text(out, &join(&name), child, child_keys(keys, k));
            }
        }
        JsonValue::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk_text(out, &join(&i.to_string()), child, keys);
            }
        }
        scalar => {
            let _ = writeln!(out, "{} {}", prefix, scalar_text(scalar));
        }
    }
}

/// The ETag of a body, as 16 hex digits: FNV-1a 64 over the body's 8-byte words (a word at
/// a time, so a 500 KB document hashes in tens of microseconds), then its length.
pub fn etag(body: &[u8]) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = body.chunks_exact(8);
    for w in words.by_ref().filter_map(|w| <&[u8; 8]>::try_from(w).ok()) {
        hash = (hash ^ u64::from_le_bytes(*w)).wrapping_mul(PRIME);
        hash ^= hash >> 29;
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    for word in [u64::from_le_bytes(last), body.len() as u64] {
        hash = (hash ^ word).wrapping_mul(PRIME);
        hash ^= hash >> 29;
    }
    format!("{:016x}", hash)
}

/// Applies an RFC 7386 JSON merge patch: objects merge recursively, `null` deletes a key,
/// anything else replaces.
pub fn merge_patch(target: &mut JsonValue, patch: JsonValue) {
    let JsonValue::Object(changes) = patch else {
        *target = patch;
        return;
    };
    if !matches!(target, JsonValue::Object(_)) {
        *target = JsonValue::Object(HashMap::new());
    }
    if let JsonValue::Object(map) = target {
        for (key, change) in changes {
            if matches!(change, JsonValue::Null) {
                map.remove(&key);
            } else {
                merge_patch(map.entry(key).or_insert(JsonValue::Null), change);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> JsonValue {
        r#"{"instance":{"id":4520031799277581824,"networkInterfaces":[{"mac":"42:01","forwardedIps":["10.0.0.1","10.0.0.2"]}],
            "attributes":{"ssh-keys":"a:b","startupScript":"x"},"virtualClock":{"driftToken":"0"}},
            "project":{"numericProjectId":123456789012}}"#
            .parse()
            .unwrap()
    }

    fn segs(path: &str) -> Vec<String> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    #[test]
    fn names_convert_both_ways() {
        assert_eq!(camel_to_hyphen("networkInterfaces"), "network-interfaces");
        assert_eq!(camel_to_hyphen("forwardedIpv6s"), "forwarded-ipv6s");
        assert_eq!(hyphen_to_camel("numeric-project-id"), "numericProjectId");
        assert_eq!(hyphen_to_camel("mac"), "mac");
        assert_eq!(hyphen_to_camel("-x"), "-x");
    }

    #[test]
    fn paths_map_hyphens_to_camel_case_except_below_attributes() {
        let d = doc();
        let (v, _) = resolve(
            &d,
            &segs("instance/virtual-clock/drift-token"),
            Keys::Hyphenated,
        )
        .unwrap();
        assert_eq!(leaf_text(v), "0");
        let (v, _) = resolve(
            &d,
            &segs("instance/network-interfaces/0/forwarded-ips"),
            Keys::Hyphenated,
        )
        .unwrap();
        assert_eq!(leaf_text(v), "10.0.0.1\n10.0.0.2\n");
        let (v, _) = resolve(
            &d,
            &segs("instance/network-interfaces/0/forwarded-ips/1"),
            Keys::Hyphenated,
        )
        .unwrap();
        assert_eq!(leaf_text(v), "10.0.0.2");
        let (v, keys) = resolve(&d, &segs("instance/attributes"), Keys::Hyphenated).unwrap();
        assert_eq!(keys, Keys::Verbatim);
        assert_eq!(listing(v, keys), "ssh-keys\nstartupScript\n");
        assert!(resolve(
            &d,
            &segs("instance/attributes/startup-script"),
            Keys::Hyphenated
        )
        .is_none());
        assert!(resolve(
            &d,
            &segs("instance/network-interfaces/00"),
            Keys::Hyphenated
        )
        .is_none());
        assert!(resolve(&d, &segs("instance/nothing"), Keys::Hyphenated).is_none());
    }

    #[test]
    fn listings_mark_directories_and_keep_lists_of_scalars_as_leaves() {
        let d = doc();
        let (v, keys) = resolve(&d, &segs("instance"), Keys::Hyphenated).unwrap();
        assert_eq!(
            listing(v, keys),
            "attributes/\nid\nnetwork-interfaces/\nvirtual-clock/\n"
        );
        let (v, keys) =
            resolve(&d, &segs("instance/network-interfaces"), Keys::Hyphenated).unwrap();
        assert_eq!(listing(v, keys), "0/\n");
        let (v, keys) =
            resolve(&d, &segs("instance/network-interfaces/0"), Keys::Hyphenated).unwrap();
        assert_eq!(listing(v, keys), "forwarded-ips\nmac\n");
    }

    #[test]
    fn json_is_sorted_and_ids_are_digits() {
        let d = doc();
        let (v, _) = resolve(&d, &segs("project"), Keys::Hyphenated).unwrap();
        assert_eq!(to_json(v), r#"{"numericProjectId":123456789012}"#);
        let (v, _) = resolve(&d, &segs("instance/id"), Keys::Hyphenated).unwrap();
        assert_eq!(leaf_text(v), "4520031799277581824");
        let again: JsonValue = to_json(&d).parse().unwrap();
        assert_eq!(to_json(&again), to_json(&d));
        let mut s = String::new();
        write_json_string(&mut s, "a\"b\\\n\u{1}é");
        assert_eq!(s, r#""a\"b\\\n\u0001é""#);
        assert_eq!(number(-1.0), "-1");
        assert_eq!(number(0.5), "0.5");
    }

    #[test]
    fn recursive_text_has_one_line_per_leaf() {
        let d: JsonValue = r#"{"a":{"bC":"x","attributes":{"k-K":"v"}},"l":[1,2]}"#
            .parse()
            .unwrap();
        assert_eq!(
            recursive_text(&d, Keys::Hyphenated),
            "a/attributes/k-K v\na/b-c x\nl/0 1\nl/1 2\n"
        );
    }

    #[test]
    fn etags_follow_the_bytes() {
        assert_eq!(etag(b"a"), etag(b"a"));
        assert_eq!(etag(b"a").len(), 16);
        assert_ne!(etag(b"a"), etag(b"b"));
        assert_ne!(etag(b""), etag(b"\0"));
        assert_ne!(etag(b"12345678a"), etag(b"12345678b"));
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut d: JsonValue = r#"{"a":"b","c":{"d":"e","f":"g"}}"#.parse().unwrap();
        let p: JsonValue = r#"{"a":"z","c":{"f":null,"h":[1]},"n":{"m":1}}"#.parse().unwrap();
        merge_patch(&mut d, p);
        assert_eq!(
            to_json(&d),
            r#"{"a":"z","c":{"d":"e","h":[1]},"n":{"m":1}}"#
        );
        merge_patch(&mut d, JsonValue::Array(vec![]));
        assert_eq!(to_json(&d), "[]");
    }
}
