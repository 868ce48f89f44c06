//! SSH key lines from metadata: splitting `user:key`, the plausibility check of the key
//! part (authorized_keys options, key type, base64 blob whose embedded type matches, and
//! comment), and the `google-ssh {"expireOn": ...}` expiry in the comment. Pure functions;
//! what is skipped comes back as [`Note`]s for the daemon to log once.
//!
//! Line rules: a metadata value is split at `\n` only, and each line is trimmed of
//! surrounding ASCII white space, which also takes the `\r` of a value pasted with Windows
//! line ends (a `\r` inside a line is a control character and refuses the key). Blank lines
//! are ignored silently. A line with any non-ASCII character is dropped. The user is what
//! comes before the FIRST colon, verbatim; the key is the rest, trimmed.

use std::fmt;
use std::sync::Arc;

use tinyjson::JsonValue;

use super::username::Username;
use super::Note;
use crate::log::printable;

/// A key part longer than this is refused (the largest real keys and certificates are a
/// few kilobytes; this keeps a huge metadata value out of `authorized_keys`).
pub(crate) const MAX_KEY_LEN: usize = 16 * 1024;

/// The key types accepted in the type position, as OpenSSH names them.
pub(crate) const KEY_TYPES: &[&str] = &[
    "ssh-rsa",
    "ssh-dss",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ssh-dss-cert-v01@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
];

/// Why a line or its key was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Nothing after the colon.
    Empty,
    /// No colon: no user name.
    NoColon,
    /// A character outside ASCII somewhere on the line.
    NonAscii,
    /// A control character (other than space and tab) inside the key.
    ControlCharacter,
    /// Longer than [`MAX_KEY_LEN`].
    TooLong,
    /// Options before the key type that do not parse (unbalanced quote, empty option).
    BadOptions,
    /// The key type is not one of [`KEY_TYPES`].
    UnknownType,
    /// A key type with nothing after it.
    MissingBlob,
    /// The key data is not base64.
    BadBase64,
    /// The key data does not start with the key type it claims.
    TypeMismatch,
    /// A public key line with no `user:` in front (a colon only further on).
    NoUserName,
}

impl SkipReason {
    /// Words for a log line.
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::Empty => "no key after the colon",
            SkipReason::NoColon => "not a complete entry (no colon)",
            SkipReason::NonAscii => "non-ASCII character",
            SkipReason::ControlCharacter => "control character in the key",
            SkipReason::TooLong => "key longer than 16384 bytes",
            SkipReason::BadOptions => "malformed authorized_keys options",
            SkipReason::UnknownType => "unknown key type",
            SkipReason::MissingBlob => "no key data after the key type",
            SkipReason::BadBase64 => "key data is not base64",
            SkipReason::TypeMismatch => "key data does not match its key type",
            SkipReason::NoUserName => "a key without a user name",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A key part that passed the plausibility check, cut into its fields (all borrowed from
/// the checked text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PublicKey<'a> {
    /// The authorized_keys options before the type, if any (`from="..",no-pty`).
    pub options: Option<&'a str>,
    /// The key type word (`ssh-ed25519`).
    pub key_type: &'a str,
    /// The base64 key data.
    pub blob: &'a str,
    /// Everything after the blob, trimmed (may be empty).
    pub comment: &'a str,
}

/// A key's expiry, from its `google-ssh` comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No `google-ssh` comment, or one without `expireOn`.
    Never,
    /// Valid before this second (unix time): expired from the moment the clock reaches it.
    At(i64),
    /// A `google-ssh` comment whose JSON or `expireOn` cannot be read: treated as never
    /// expiring, as the original did.
    Unreadable,
}

impl Expiry {
    /// Whether the key is expired at `now` (whole seconds, the clock rounded down): from
    /// `expireOn` itself on, so a key goes at its time, not a second later. (Python compared
    /// `expireOn < now` with microseconds: expired within a microsecond of it.)
    pub(crate) fn is_expired(self, now: i64) -> bool {
        matches!(self, Expiry::At(t) if now >= t)
    }
}

/// A key wanted for a user, from one metadata line.
/// A key as it goes into `authorized_keys` (options, type, base64 data, comment), shared:
/// the line cache, the wanted state and the applied state hold one copy of the text.
pub type KeyText = Arc<str>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedKey {
    /// The account.
    pub user: Username,
    /// The key line as it goes into `authorized_keys` (trimmed, otherwise verbatim).
    pub key: KeyText,
    /// The `expireOn` second, when the key has one it could read.
    pub expire_on: Option<i64>,
}

/// Whether `word` is a key type we accept.
pub(crate) fn is_key_type(word: &str) -> bool {
    KEY_TYPES.contains(&word)
}

/// One line of an `ssh-keys`/`sshKeys` value, read without regard to the time (so that
/// it can be kept and used again while the line stays in metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineRead {
    /// Nothing but white space: ignored silently.
    Blank,
    /// A usable key line; whether the key has expired depends on the time it is used at.
    Key {
        user: Username,
        key: KeyText,
        expiry: Expiry,
    },
    /// A line that is not used, and why.
    Skipped(Note),
}

impl LineRead {
    /// The key this line gives at time `now`, or `None` with a note pushed explaining why
    /// not (blank lines give neither).
    pub fn wanted_at(&self, now: i64, notes: &mut Vec<Note>) -> Option<WantedKey> {
        let (user, key, expiry) = match self {
            LineRead::Blank => return None,
            LineRead::Skipped(note) => {
                notes.push(note.clone());
                return None;
            }
            LineRead::Key { user, key, expiry } => (user, key, *expiry),
        };
        if expiry.is_expired(now) {
            let key =
                check_public_key(key).map_or_else(|_| "key".to_string(), |k| describe_key(&k));
            notes.push(Note::ExpiredKey {
                user: user.clone(),
                key,
            });
            return None;
        }
        if expiry == Expiry::Unreadable {
            notes.push(Note::UnreadableExpiry { user: user.clone() });
        }
        Some(WantedKey {
            user: user.clone(),
            key: key.clone(),
            expire_on: match expiry {
                Expiry::At(t) => Some(t),
                _ => None,
            },
        })
    }
}

/// Parses one line of an `ssh-keys`/`sshKeys` value at time `now`. Returns the wanted key,
/// or `None` with a note pushed explaining why not (blank lines give neither).
pub fn parse_key_line(line: &str, now: i64, notes: &mut Vec<Note>) -> Option<WantedKey> {
    read_key_line(line).wanted_at(now, notes)
}

/// Reads one line of an `ssh-keys`/`sshKeys` value (see the module doc for the rules).
pub fn read_key_line(line: &str) -> LineRead {
    let line = line.trim_matches(|c: char| c.is_ascii_whitespace());
    if line.is_empty() {
        return LineRead::Blank;
    }
    if looks_like_private_key(line) {
        return LineRead::Skipped(Note::PrivateKeyLine);
    }
    let split = line.split_once(':');
    if !line.is_ascii() {
        let user = split.map(|(user, _)| printable(user));
        return LineRead::Skipped(Note::SkippedKey {
            user,
            reason: SkipReason::NonAscii,
        });
    }
    let Some((user_text, key_text)) = split else {
        return LineRead::Skipped(Note::SkippedKey {
            user: None,
            reason: SkipReason::NoColon,
        });
    };
    let user = match Username::parse(user_text) {
        Ok(user) => user,
        // `ssh-ed25519 AAAA... me:laptop`: the "name" would be the key itself.
        Err(_) if user_text.split(' ').next().is_some_and(is_key_type) => {
            return LineRead::Skipped(Note::SkippedKey {
                user: None,
                reason: SkipReason::NoUserName,
            });
        }
        Err(reason) => {
            return LineRead::Skipped(Note::RefusedName {
                name: printable(user_text),
                reason,
            });
        }
    };
    let key_text = key_text.trim_matches(|c: char| c.is_ascii_whitespace());
    let key = match check_public_key(key_text) {
        Ok(key) => key,
        Err(reason) => {
            return LineRead::Skipped(Note::SkippedKey {
                user: Some(user.to_string()),
                reason,
            });
        }
    };
    LineRead::Key {
        expiry: key_expiry(key.comment),
        user,
        key: Arc::from(key_text),
    }
}

/// Whether a metadata line looks like part of a private key pasted by mistake: a PEM or
/// OpenSSH armour line (`-----BEGIN OPENSSH PRIVATE KEY-----`), or a line of its base64
/// body (one long word of base64 only, possibly after `user:`). Such a line is dropped
/// and never logged.
pub fn looks_like_private_key(line: &str) -> bool {
    if line.contains("-----") && line.contains("PRIVATE KEY") {
        return true;
    }
    let body = |text: &str| {
        text.len() >= 40
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    };
    body(line)
        || line
            .split_once(':')
            .is_some_and(|(_, rest)| body(rest.trim()))
}

/// A key for a log line: its type and short fingerprint, never the key.
pub(crate) fn describe_key(key: &PublicKey<'_>) -> String {
    let blob = decode_base64(key.blob).unwrap_or_default();
    format!(
        "{} {}",
        key.key_type,
        super::fingerprint::short_fingerprint(&blob)
    )
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Checks that `text` (one trimmed key part) looks like an `authorized_keys` key line:
/// optional options, a known key type, base64 data that decodes and starts with that same
/// type name, and an optional comment.
pub(crate) fn check_public_key(text: &str) -> Result<PublicKey<'_>, SkipReason> {
    if text.is_empty() {
        return Err(SkipReason::Empty);
    }
    if text.len() > MAX_KEY_LEN {
        return Err(SkipReason::TooLong);
    }
    if !text.is_ascii() {
        return Err(SkipReason::NonAscii);
    }
    if text.bytes().any(|b| b.is_ascii_control() && !is_blank(b)) {
        return Err(SkipReason::ControlCharacter);
    }
    let first_word = split_word(text).0;
    let (options, rest) = if is_key_type(first_word) {
        (None, text)
    } else {
        let end = options_end(text).ok_or(SkipReason::BadOptions)?;
        let options = &text[..end];
        if !options_are_well_formed(options) {
            return Err(SkipReason::BadOptions);
        }
        (Some(options), text[end..].trim_start_matches([' ', '\t']))
    };
    let (key_type, rest) = split_word(rest);
    if key_type.is_empty() || !is_key_type(key_type) {
        return Err(SkipReason::UnknownType);
    }
    let (blob, comment) = split_word(rest);
    if blob.is_empty() {
        return Err(SkipReason::MissingBlob);
    }
    let data = decode_base64(blob).ok_or(SkipReason::BadBase64)?;
    if embedded_type(&data) != Some(key_type.as_bytes()) {
        return Err(SkipReason::TypeMismatch);
    }
    Ok(PublicKey {
        options,
        key_type,
        blob,
        comment,
    })
}

/// Splits off the first word; the rest has its leading blanks removed.
fn split_word(text: &str) -> (&str, &str) {
    // Bytes, not chars: a blank is ASCII, and a key's base64 word is long.
    match text.bytes().position(is_blank) {
        Some(i) => (&text[..i], text[i..].trim_start_matches([' ', '\t'])),
        None => (text, ""),
    }
}

/// Where the options field ends, as sshd finds it: at the first blank outside double
/// quotes, where `\"` is an escaped quote. `None` for an unterminated quote or no options.
fn options_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut i, mut quoted) = (0, false);
    while i < bytes.len() {
        match bytes[i] {
            b if !quoted && is_blank(b) => break,
            b'\\' if bytes.get(i + 1) == Some(&b'"') => i += 1,
            b'"' => quoted = !quoted,
            _ => {}
        }
        i += 1;
    }
    (!quoted && i > 0).then_some(i)
}

/// Options are `name` or `name="value"` separated by commas; names are letters, digits and
/// `-`/`_`; a value may hold anything but an unescaped `"`.
fn options_are_well_formed(options: &str) -> bool {
    let bytes = options.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-' || bytes[i] == b'_')
        {
            i += 1;
        }
        if i == start {
            return false;
        }
        if bytes.get(i) == Some(&b'=') {
            if bytes.get(i + 1) != Some(&b'"') {
                return false;
            }
            i += 2;
            loop {
                match bytes.get(i) {
                    None => return false,
                    Some(b'\\') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            i += 1;
        }
        match bytes.get(i) {
            None => return true,
            Some(b',') => i += 1,
            Some(_) => return false,
        }
    }
}

/// The type name an SSH wire-format key starts with (a big-endian length and the name),
/// when more key data follows it.
fn embedded_type(data: &[u8]) -> Option<&[u8]> {
    let len_bytes: [u8; 4] = data.get(..4)?.try_into().ok()?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len == 0 || len > 64 {
        return None;
    }
    let name = data.get(4..4 + len)?;
    (data.len() > 4 + len).then_some(name)
}

fn base64_value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes standard base64; padding is optional but, when present, must be right.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let body = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="))
        .unwrap_or(bytes);
    let padding = bytes.len() - body.len();
    if padding > 0 && !bytes.len().is_multiple_of(4) {
        return None;
    }
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    for chunk in body.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | base64_value(c)?;
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let decoded = acc.to_be_bytes();
        out.extend_from_slice(&decoded[1..chunk.len()]);
    }
    Some(out)
}

/// The expiry a key comment declares: `google-ssh {"userName":"..","expireOn":".."}`.
pub(crate) fn key_expiry(comment: &str) -> Expiry {
    let (word, json) = split_word(comment);
    if word != "google-ssh" {
        return Expiry::Never;
    }
    let Ok(JsonValue::Object(fields)) = crate::json::parse_json(json.trim()) else {
        return Expiry::Unreadable;
    };
    match fields.get("expireOn") {
        None => Expiry::Never,
        Some(JsonValue::String(text)) => {
            parse_expire_on(text).map_or(Expiry::Unreadable, Expiry::At)
        }
        Some(_) => Expiry::Unreadable,
    }
}

/// Parses an `expireOn` time to unix seconds (fractions cut off): the original's
/// `%Y-%m-%dT%H:%M:%S+0000`, and RFC 3339 (`T` or `t`, optional fractional seconds, `Z`/`z`
/// or a `±hh:mm` offset). A `±hhmm` offset is accepted with any value, as the Go agent does.
pub(crate) fn parse_expire_on(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &fraction[n..];
    }
    let offset = parse_offset(rest)?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = crate::timing::days_from_civil(year, month as u32, day as u32);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// A UTC offset in seconds from `Z`, `±hh:mm` or `±hhmm` (nothing may follow it).
fn parse_offset(b: &[u8]) -> Option<i64> {
    if b == b"Z" || b == b"z" {
        return Some(0);
    }
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = match b.len() {
        6 if b[3] == b':' => (digits(b, 1, 2)?, digits(b, 4, 2)?),
        5 => (digits(b, 1, 2)?, digits(b, 3, 2)?),
        _ => return None,
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

/// The decimal number in `b[at..at+n]`, all digits.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let part = b.get(at..at + n)?;
    part.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Test fixtures: well-formed keys without real key material.
#[cfg(test)]
pub(crate) mod fixtures {
    /// Standard base64 with padding.
    pub(crate) fn encode_base64(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let mut buf = [0u8; 3];
            buf[..chunk.len()].copy_from_slice(chunk);
            let n = (u32::from(buf[0]) << 16) | (u32::from(buf[1]) << 8) | u32::from(buf[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// The base64 blob of a key of type `key_type` (the type string, then 32 bytes of `seed`).
    pub fn blob(key_type: &str, seed: u8) -> String {
        let mut data = (key_type.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(key_type.as_bytes());
        data.extend_from_slice(&32u32.to_be_bytes());
        data.extend_from_slice(&[seed; 32]);
        encode_base64(&data)
    }

    /// A whole ed25519 key line with a comment.
    pub fn ed25519(seed: u8, comment: &str) -> String {
        format!("ssh-ed25519 {} {}", blob("ssh-ed25519", seed), comment)
            .trim_end()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{blob, ed25519, encode_base64};
    use super::*;
    use crate::timing::days_from_civil;

    /// A real public key (from the metadata sample) so the checker is tested on real bytes.
    const REAL_ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPKkHbgJqZMI6HcgENtI7INWKdoHxd07XKGDtf8SC16Q alice@workstation";
    /// A real 1024-bit RSA public key shape: `ssh-rsa` blob with exponent and modulus.
    fn rsa_key() -> String {
        let mut data = 7u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"ssh-rsa");
        data.extend_from_slice(&3u32.to_be_bytes());
        data.extend_from_slice(&[1, 0, 1]);
        data.extend_from_slice(&129u32.to_be_bytes());
        data.extend_from_slice(&[0x5a; 129]);
        format!("ssh-rsa {} rsa@host", encode_base64(&data))
    }

    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s
    }

    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        for data in [
            &b""[..],
            b"a",
            b"ab",
            b"abc",
            b"abcd",
            b"\x00\xff\x10\x80\x7f",
        ] {
            let text = encode_base64(data);
            assert_eq!(decode_base64(&text).as_deref(), Some(data), "{text}");
            let unpadded = text.trim_end_matches('=');
            assert_eq!(decode_base64(unpadded).as_deref(), Some(data), "{unpadded}");
        }
        for bad in ["A", "AAAAA", "AB=C", "AB=", "A===", "AB*D", "AB D", "QQ==="] {
            assert_eq!(decode_base64(bad), None, "{bad}");
        }
    }

    #[test]
    fn plausible_keys_are_accepted() {
        let ecdsa = format!("ecdsa-sha2-nistp256 {}", blob("ecdsa-sha2-nistp256", 1));
        let sk = format!(
            "sk-ssh-ed25519@openssh.com {} yubikey",
            blob("sk-ssh-ed25519@openssh.com", 2)
        );
        let cert = format!(
            "ssh-ed25519-cert-v01@openssh.com {} cert",
            blob("ssh-ed25519-cert-v01@openssh.com", 3)
        );
        let dss = format!("ssh-dss {}", blob("ssh-dss", 4));
        let p521 = format!("ecdsa-sha2-nistp521 {} c", blob("ecdsa-sha2-nistp521", 5));
        let tabs = format!(
            "ssh-ed25519\t{}\tcomment with  spaces",
            blob("ssh-ed25519", 6)
        );
        let cases: Vec<(String, &str, &str)> = vec![
            (REAL_ED25519.to_string(), "ssh-ed25519", "alice@workstation"),
            (rsa_key(), "ssh-rsa", "rsa@host"),
            (ecdsa, "ecdsa-sha2-nistp256", ""),
            (sk, "sk-ssh-ed25519@openssh.com", "yubikey"),
            (cert, "ssh-ed25519-cert-v01@openssh.com", "cert"),
            (dss, "ssh-dss", ""),
            (p521, "ecdsa-sha2-nistp521", "c"),
            (tabs, "ssh-ed25519", "comment with  spaces"),
        ];
        for (text, key_type, comment) in &cases {
            let key = check_public_key(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(key.options, None);
            assert_eq!(key.key_type, *key_type);
            assert_eq!(key.comment, *comment);
        }
    }

    #[test]
    fn options_before_the_key_are_kept_and_may_hold_quoted_spaces() {
        let b = blob("ssh-ed25519", 9);
        let cases = [
            ("no-port-forwarding", "no-port-forwarding"),
            ("restrict,pty", "restrict,pty"),
            (
                r#"from="10.0.0.0/8,192.168.1.1""#,
                r#"from="10.0.0.0/8,192.168.1.1""#,
            ),
            (
                r#"command="echo hello world",no-pty"#,
                r#"command="echo hello world",no-pty"#,
            ),
            (
                r#"command="echo \"quoted words\"""#,
                r#"command="echo \"quoted words\"""#,
            ),
            (
                r#"environment="A=b c",no-X11-forwarding"#,
                r#"environment="A=b c",no-X11-forwarding"#,
            ),
            (r#"command="""#, r#"command="""#),
        ];
        for (options, expected) in cases {
            let text = format!("{} ssh-ed25519 {} me@host", options, b);
            let key = check_public_key(&text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            assert_eq!(key.options, Some(expected), "{text}");
            assert_eq!(key.key_type, "ssh-ed25519");
            assert_eq!(key.blob, b);
            assert_eq!(key.comment, "me@host");
        }
    }

    #[test]
    fn implausible_keys_are_refused_with_a_reason() {
        use SkipReason::*;
        let b = blob("ssh-ed25519", 1);
        let rsa_blob = blob("ssh-rsa", 1);
        let short = encode_base64(b"\x00\x00\x00\x0bssh-ed25519");
        let huge_len = encode_base64(b"\xff\xff\xff\xffssh-ed25519xxxx");
        let cases: Vec<(String, SkipReason)> = vec![
            ("".into(), Empty),
            ("hello".into(), UnknownType),
            ("not a key".into(), UnknownType),
            ("ssh-ed25519".into(), MissingBlob),
            ("ssh-ed25519 ".into(), MissingBlob),
            ("ssh-ed25519 !!!notbase64!!!".into(), BadBase64),
            ("ssh-ed25519 AAAA=AAA".into(), BadBase64),
            (format!("ssh-ed25519 {rsa_blob}"), TypeMismatch),
            (format!("ssh-rsa {b}"), TypeMismatch),
            (format!("ssh-ed25519 {short}"), TypeMismatch),
            (format!("ssh-ed25519 {huge_len}"), TypeMismatch),
            ("ssh-ed25519 QUFBQQ==".into(), TypeMismatch),
            (format!("SSH-ED25519 {b}"), UnknownType),
            (format!("ssh-foo {b}"), UnknownType),
            (format!("rsa-sha2-256 {b}"), UnknownType),
            (format!("from=\"unterminated ssh-ed25519 {b}"), BadOptions),
            (format!("from=x ssh-ed25519 {b}"), BadOptions),
            (format!("no-pty,,x ssh-ed25519 {b}"), BadOptions),
            (format!(",no-pty ssh-ed25519 {b}"), BadOptions),
            (format!("no-pty, ssh-ed25519 {b}"), BadOptions),
            (format!("from=\"a\"b ssh-ed25519 {b}"), BadOptions),
            (format!("a;b ssh-ed25519 {b}"), BadOptions),
            (format!("no-pty ssh-foo {b}"), UnknownType),
            (format!("no-pty {b}"), UnknownType),
            ("no-pty".into(), UnknownType),
            (
                format!("ssh-ed25519 {b} comment\rinjected"),
                ControlCharacter,
            ),
            (format!("ssh-ed25519 {b} \x1b[2J"), ControlCharacter),
            (format!("ssh-ed25519 {b}\0"), ControlCharacter),
            (format!("ssh-ed25519 {b} é"), NonAscii),
            (
                format!("ssh-ed25519 {b} {}", "x".repeat(MAX_KEY_LEN)),
                TooLong,
            ),
        ];
        for (text, reason) in &cases {
            assert_eq!(check_public_key(text), Err(*reason), "{text:?}");
        }
    }

    #[test]
    fn every_skip_reason_has_words() {
        use SkipReason::*;
        for r in [
            Empty,
            NoColon,
            NonAscii,
            ControlCharacter,
            TooLong,
            BadOptions,
            UnknownType,
            MissingBlob,
            BadBase64,
            TypeMismatch,
            NoUserName,
        ] {
            assert!(!r.describe().is_empty());
            assert_eq!(r.to_string(), r.describe());
        }
    }

    #[test]
    fn expire_on_formats() {
        let base = at(2030, 6, 15, 12, 30, 45);
        let cases: &[(&str, Option<i64>)] = &[
            ("2030-06-15T12:30:45+0000", Some(base)),
            ("2030-06-15T12:30:45Z", Some(base)),
            ("2030-06-15t12:30:45z", Some(base)),
            ("2030-06-15T12:30:45.123Z", Some(base)),
            ("2030-06-15T12:30:45.999999999Z", Some(base)),
            ("2030-06-15T12:30:45+00:00", Some(base)),
            ("2030-06-15T12:30:45-00:00", Some(base)),
            ("2030-06-15T14:30:45+02:00", Some(base)),
            ("2030-06-15T05:30:45-07:00", Some(base)),
            ("2030-06-15T05:30:45-0700", Some(base)),
            ("2030-06-15T18:00:45+05:30", Some(base)),
            ("2030-06-15T14:30:45.5+02:00", Some(base)),
            ("2030-06-16T00:30:45+12:00", Some(base)),
            ("2030-06-14T23:30:45-13:00", Some(base)),
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2024-02-29T00:00:00Z", Some(at(2024, 2, 29, 0, 0, 0))),
            ("2000-02-29T00:00:00Z", Some(at(2000, 2, 29, 0, 0, 0))),
            ("2016-12-31T23:59:60Z", Some(at(2017, 1, 1, 0, 0, 0))),
            ("", None),
            ("2030-06-15", None),
            ("2030-06-15T12:30:45", None),
            ("2030-06-15 12:30:45Z", None),
            ("2030-06-15T12:30Z", None),
            ("2030-06-15T12:30:45.Z", None),
            ("2030-06-15T12:30:45+00", None),
            ("2030-06-15T12:30:45+0:00", None),
            ("2030-06-15T12:30:45+24:00", None),
            ("2030-06-15T12:30:45+00:60", None),
            ("2030-06-15T12:30:45Zjunk", None),
            ("2030-06-15T12:30:45+0000 ", None),
            ("2030-13-01T00:00:00Z", None),
            ("2030-00-01T00:00:00Z", None),
            ("2030-02-29T00:00:00Z", None),
            ("1900-02-29T00:00:00Z", None),
            ("2030-04-31T00:00:00Z", None),
            ("2030-06-00T00:00:00Z", None),
            ("2030-06-15T24:00:00Z", None),
            ("2030-06-15T12:60:00Z", None),
            ("2030-06-15T12:00:61Z", None),
            ("+030-06-15T12:00:00Z", None),
            ("2030/06/15T12:30:45Z", None),
            ("Mon, 15 Jun 2030 12:30:45 GMT", None),
            ("1718454645", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_expire_on(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn expiry_comes_only_from_a_google_ssh_comment() {
        let t = at(2030, 1, 1, 0, 0, 0);
        let cases: &[(&str, Expiry)] = &[
            ("", Expiry::Never),
            ("alice@host", Expiry::Never),
            (
                r#"alice {"expireOn":"2030-01-01T00:00:00+0000"}"#,
                Expiry::Never,
            ),
            (
                r#"google-ssh {"userName":"a@b.c","expireOn":"2030-01-01T00:00:00+0000"}"#,
                Expiry::At(t),
            ),
            (
                r#"google-ssh   {"expireOn":"2030-01-01T00:00:00Z"}  "#,
                Expiry::At(t),
            ),
            (
                r#"google-ssh {"expireOn": "2030-01-01T01:00:00+01:00"}"#,
                Expiry::At(t),
            ),
            (r#"google-ssh {"userName":"a@b.c"}"#, Expiry::Never),
            (r#"google-ssh {"expireOn":"tomorrow"}"#, Expiry::Unreadable),
            (r#"google-ssh {"expireOn":1893456000}"#, Expiry::Unreadable),
            (
                r#"google-ssh {"expireOn":"2030-01-01T00:00:00+0000""#,
                Expiry::Unreadable,
            ),
            ("google-ssh not json", Expiry::Unreadable),
            ("google-ssh", Expiry::Unreadable),
            (r#"google-ssh ["expireOn"]"#, Expiry::Unreadable),
            (
                r#"google-sshx {"expireOn":"2030-01-01T00:00:00Z"}"#,
                Expiry::Never,
            ),
        ];
        for (comment, expected) in cases {
            assert_eq!(key_expiry(comment), *expected, "{comment:?}");
        }
    }

    #[test]
    fn expired_from_expire_on_itself() {
        assert!(!Expiry::At(100).is_expired(99));
        assert!(Expiry::At(100).is_expired(100));
        assert!(Expiry::At(100).is_expired(101));
        assert!(!Expiry::Never.is_expired(i64::MAX));
        assert!(!Expiry::Unreadable.is_expired(i64::MAX));
    }

    fn parse(line: &str, now: i64) -> (Option<WantedKey>, Vec<Note>) {
        let mut notes = Vec::new();
        let key = parse_key_line(line, now, &mut notes);
        (key, notes)
    }

    #[test]
    fn a_line_splits_at_the_first_colon() {
        let key = ed25519(1, "alice@host");
        let (wanted, notes) = parse(&format!("alice:{key}"), 0);
        assert!(notes.is_empty());
        let wanted = wanted.unwrap();
        assert_eq!(wanted.user.as_str(), "alice");
        assert_eq!(&*wanted.key, key);
        assert_eq!(wanted.expire_on, None);

        // A colon inside the key part (an option value, a comment) stays in the key.
        let with_colon = format!(r#"command="echo a:b" {key} c:d"#);
        let (wanted, _) = parse(&format!("bob:{with_colon}"), 0);
        assert_eq!(&*wanted.unwrap().key, with_colon);
        // `root:x:...` can only ever name root, never a user `root:x`.
        let (wanted, notes) = parse("root:x:ssh-ed25519", 0);
        assert_eq!(wanted, None);
        assert_eq!(
            notes,
            vec![Note::SkippedKey {
                user: Some("root".into()),
                reason: SkipReason::BadOptions
            }]
        );
    }

    #[test]
    fn line_ends_and_blanks() {
        let key = ed25519(2, "c");
        for line in [
            format!("alice:{key}\r"),
            format!("alice:{key}  "),
            format!("  alice:{key}"),
            format!("alice:  {key}\t"),
        ] {
            let (wanted, notes) = parse(&line, 0);
            assert!(notes.is_empty(), "{line:?}");
            assert_eq!(&*wanted.unwrap().key, key, "{line:?}");
        }
        for blank in ["", " ", "\r", "\t \r"] {
            assert_eq!(parse(blank, 0), (None, vec![]), "{blank:?}");
        }
        // White space before the colon is part of the name, and refuses it.
        let (wanted, notes) = parse(&format!("alice :{key}"), 0);
        assert_eq!(wanted, None);
        assert!(matches!(&notes[..], [Note::RefusedName { .. }]));
    }

    #[test]
    fn skipped_lines_say_why() {
        use crate::accounts::username::NameRefusal;
        let key = ed25519(3, "c");
        let long = "a".repeat(33);
        let cases: Vec<(String, Note)> = vec![
            (
                "no colon at all".into(),
                Note::SkippedKey {
                    user: None,
                    reason: SkipReason::NoColon,
                },
            ),
            (
                format!("josé:{key}"),
                Note::SkippedKey {
                    user: Some("jos?".into()),
                    reason: SkipReason::NonAscii,
                },
            ),
            (
                format!("alice:{key} café"),
                Note::SkippedKey {
                    user: Some("alice".into()),
                    reason: SkipReason::NonAscii,
                },
            ),
            (
                "ünïcode without colon".into(),
                Note::SkippedKey {
                    user: None,
                    reason: SkipReason::NonAscii,
                },
            ),
            (
                "alice:garbage".into(),
                Note::SkippedKey {
                    user: Some("alice".into()),
                    reason: SkipReason::UnknownType,
                },
            ),
            (
                format!(":{key}"),
                Note::RefusedName {
                    name: "".into(),
                    reason: NameRefusal::Empty,
                },
            ),
            (
                format!("-oProxyCommand=x:{key}"),
                Note::RefusedName {
                    name: "-oProxyCommand=x".into(),
                    reason: NameRefusal::BadCharacter,
                },
            ),
            (
                format!("-x:{key}"),
                Note::RefusedName {
                    name: "-x".into(),
                    reason: NameRefusal::LeadingHyphen,
                },
            ),
            (
                format!("../x:{key}"),
                Note::RefusedName {
                    name: "../x".into(),
                    reason: NameRefusal::BadCharacter,
                },
            ),
            (
                format!("{long}:{key}"),
                Note::RefusedName {
                    name: long.clone(),
                    reason: NameRefusal::TooLong,
                },
            ),
            (
                format!("a b:{key}"),
                Note::RefusedName {
                    name: "a b".into(),
                    reason: NameRefusal::BadCharacter,
                },
            ),
            (
                format!("$(x):{key}"),
                Note::RefusedName {
                    name: "$(x)".into(),
                    reason: NameRefusal::BadCharacter,
                },
            ),
            (
                format!("a;b:{key}"),
                Note::RefusedName {
                    name: "a;b".into(),
                    reason: NameRefusal::BadCharacter,
                },
            ),
            (
                format!("..:{key}"),
                Note::RefusedName {
                    name: "..".into(),
                    reason: NameRefusal::DotName,
                },
            ),
            (
                format!("1000:{key}"),
                Note::RefusedName {
                    name: "1000".into(),
                    reason: NameRefusal::AllDigits,
                },
            ),
            (
                format!("a\x1bb:{key}"),
                Note::RefusedName {
                    name: "a?b".into(),
                    reason: NameRefusal::BadCharacter,
                },
            ),
        ];
        for (line, note) in cases {
            let (wanted, notes) = parse(&line, 0);
            assert_eq!(wanted, None, "{line:?}");
            assert_eq!(notes, vec![note], "{line:?}");
        }
    }

    #[test]
    fn expired_keys_are_dropped_and_future_ones_carry_their_time() {
        let expire = at(2030, 1, 1, 0, 0, 0);
        let key = ed25519(
            4,
            r#"google-ssh {"userName":"a@b.c","expireOn":"2030-01-01T00:00:00+0000"}"#,
        );
        let line = format!("alice:{key}");

        let (wanted, notes) = parse(&line, expire - 1);
        assert!(notes.is_empty());
        assert_eq!(wanted.unwrap().expire_on, Some(expire));

        let (wanted, notes) = parse(&line, expire);
        assert_eq!(wanted, None);
        let blob = decode_base64(key.split(' ').nth(1).unwrap()).unwrap();
        let key_id = format!(
            "ssh-ed25519 {}",
            super::super::fingerprint::short_fingerprint(&blob)
        );
        assert_eq!(
            notes,
            vec![Note::ExpiredKey {
                user: Username::parse("alice").unwrap(),
                key: key_id,
            }]
        );
        // The note names the key without holding it.
        assert!(!notes[0]
            .to_string()
            .contains(key.split(' ').nth(1).unwrap()));
    }

    #[test]
    fn private_key_lines_are_recognised_and_public_keys_are_not() {
        let private = [
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "alice:-----BEGIN RSA PRIVATE KEY-----",
            "-----END OPENSSH PRIVATE KEY-----",
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
            "alice:QyNTUxOQAAACD0yJ8mQm4j5vXh3d0b1gk3M2m0xYq1a8j1E7Vh9bW5nQAAAJgG",
        ];
        for line in private {
            assert!(looks_like_private_key(line), "{line}");
            let (wanted, notes) = parse(line, 0);
            assert_eq!(wanted, None);
            assert_eq!(notes, vec![Note::PrivateKeyLine], "{line}");
        }
        let public = ed25519(1, "alice@laptop");
        for line in [
            format!("alice:{public}"),
            "alice:short".to_string(),
            "# a comment".to_string(),
        ] {
            assert!(!looks_like_private_key(&line), "{line}");
        }
        // A public key without `user:`, a colon in its comment: skipped, never logged.
        let (wanted, notes) = parse(&format!("{public} me:laptop"), 0);
        assert_eq!(wanted, None);
        assert_eq!(
            notes,
            vec![Note::SkippedKey {
                user: None,
                reason: SkipReason::NoUserName
            }]
        );
    }

    #[test]
    fn an_unreadable_expiry_keeps_the_key_with_a_note() {
        let key = ed25519(5, r#"google-ssh {"expireOn":"next tuesday"}"#);
        let (wanted, notes) = parse(&format!("alice:{key}"), i64::MAX);
        let wanted = wanted.unwrap();
        assert_eq!(wanted.expire_on, None);
        assert_eq!(&*wanted.key, key);
        assert_eq!(
            notes,
            vec![Note::UnreadableExpiry {
                user: Username::parse("alice").unwrap()
            }]
        );
    }

    #[test]
    fn expiry_is_read_after_options() {
        let key = format!(
            r#"no-pty,command="x y" {} google-ssh {{"expireOn":"2000-01-01T00:00:00Z"}}"#,
            ed25519(6, "")
        );
        let (wanted, notes) = parse(&format!("alice:{key}"), at(2001, 1, 1, 0, 0, 0));
        assert_eq!(wanted, None);
        assert!(matches!(&notes[..], [Note::ExpiredKey { .. }]));
    }
}
