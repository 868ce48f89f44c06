//! Account names: the one place that decides whether a name from metadata or from a ledger
//! file may become a local account. [`Username`] can only be built by [`Username::parse`],
//! so a name that reaches a command, an `authorized_keys` path or a ledger has passed it.
//!
//! The rule is Python 2.8's `\A[A-Za-z0-9._][A-Za-z0-9._-]{0,31}\Z`, plus: not `.`, not
//! `..` and not all digits (`useradd` would read those as a directory or a uid). It keeps
//! out option injection (`-oProxyCommand=x`), path tricks (`../x`), shell metacharacters,
//! white space, control characters and anything non-ASCII.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Longest accepted name (the `{0,31}` of the Python regex, plus the first character).
pub(crate) const MAX_LEN: usize = 32;

/// A name that is safe to hand to `useradd`, to use as a path component and to write to
/// the ledger. Ordered and compared as its text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Username(Arc<str>);

/// Why a name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRefusal {
    /// Nothing before the colon.
    Empty,
    /// More than [`MAX_LEN`] characters.
    TooLong,
    /// Starts with `-` (it would read as a command option).
    LeadingHyphen,
    /// Has a character outside `A-Z a-z 0-9 . _ -`.
    BadCharacter,
    /// `.` or `..`.
    DotName,
    /// Only digits (it would read as a uid).
    AllDigits,
}

impl NameRefusal {
    /// Words for a log line.
    pub fn describe(self) -> &'static str {
        match self {
            NameRefusal::Empty => "empty",
            NameRefusal::TooLong => "longer than 32 characters",
            NameRefusal::LeadingHyphen => "starts with a hyphen",
            NameRefusal::BadCharacter => "has a character other than A-Z a-z 0-9 . _ -",
            NameRefusal::DotName => "is . or ..",
            NameRefusal::AllDigits => "is all digits",
        }
    }
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

impl Username {
    /// Checks `name` against the account-name rule.
    pub fn parse(name: &str) -> Result<Username, NameRefusal> {
        let bytes = name.as_bytes();
        if bytes.is_empty() {
            return Err(NameRefusal::Empty);
        }
        if !bytes.iter().all(|&b| allowed(b)) {
            return Err(NameRefusal::BadCharacter);
        }
        if bytes[0] == b'-' {
            return Err(NameRefusal::LeadingHyphen);
        }
        if bytes.len() > MAX_LEN {
            return Err(NameRefusal::TooLong);
        }
        if name == "." || name == ".." {
            return Err(NameRefusal::DotName);
        }
        if bytes.iter().all(u8::is_ascii_digit) {
            return Err(NameRefusal::AllDigits);
        }
        Ok(Username(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by `Username` be searched with a `&str`.
impl Borrow<str> for Username {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for name in [
            "alice",
            "Bob",
            "a",
            "_",
            "x.y",
            "first.last_2",
            "root",
            "a-b",
            ".hidden",
            "_svc-1",
            "0day",
            "1a",
            "a1234567890123456789012345678901",
        ] {
            let user = Username::parse(name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(user.as_str(), name);
            assert_eq!(user.to_string(), name);
        }
    }

    #[test]
    fn hostile_names_are_refused_with_a_reason() {
        use NameRefusal::*;
        let long33 = "a".repeat(33);
        let cases: &[(&str, NameRefusal)] = &[
            ("", Empty),
            ("-oProxyCommand=x", BadCharacter),
            ("-x", LeadingHyphen),
            ("--help", LeadingHyphen),
            ("../x", BadCharacter),
            ("a/b", BadCharacter),
            ("/etc", BadCharacter),
            (&long33, TooLong),
            ("a b", BadCharacter),
            (" alice", BadCharacter),
            ("alice ", BadCharacter),
            ("a\tb", BadCharacter),
            ("a\nb", BadCharacter),
            ("a\rb", BadCharacter),
            ("a\0b", BadCharacter),
            ("josé", BadCharacter),
            ("ユーザー", BadCharacter),
            ("$(x)", BadCharacter),
            ("`id`", BadCharacter),
            ("a;b", BadCharacter),
            ("a|b", BadCharacter),
            ("a&b", BadCharacter),
            ("a>b", BadCharacter),
            ("a*", BadCharacter),
            ("~x", BadCharacter),
            ("a:b", BadCharacter),
            ("root:x", BadCharacter),
            ("name$", BadCharacter),
            ("a,b", BadCharacter),
            ("a\"b", BadCharacter),
            ("a'b", BadCharacter),
            ("a\\b", BadCharacter),
            ("{user}", BadCharacter),
            (".", DotName),
            ("..", DotName),
            ("0", AllDigits),
            ("1000", AllDigits),
            ("0123456789", AllDigits),
        ];
        for (name, reason) in cases {
            assert_eq!(Username::parse(name), Err(*reason), "{name:?}");
        }
    }

    #[test]
    fn every_refusal_has_words() {
        use NameRefusal::*;
        for r in [
            Empty,
            TooLong,
            LeadingHyphen,
            BadCharacter,
            DotName,
            AllDigits,
        ] {
            assert!(!r.describe().is_empty());
        }
    }

    #[test]
    fn maps_keyed_by_username_are_searchable_by_str() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(Username::parse("alice").unwrap(), 1);
        assert_eq!(map.get("alice"), Some(&1));
        assert_eq!(map.get("bob"), None);
    }
}
