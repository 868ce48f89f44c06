//! The local account facts the planner needs, parsed from file contents: entries of
//! `/etc/passwd` (uid, gid, home, shell) and `UID_MIN` from `/etc/login.defs`.
//!
//! This reads the files, not NSS: a static musl binary has no NSS modules either, so LDAP or
//! OS Login accounts are invisible here, as they are to musl's own `getpwnam`. The daemon
//! only manages local accounts.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The local account database.
pub const PASSWD_PATH: &str = "/etc/passwd";
/// Where `UID_MIN` is configured.
pub const LOGIN_DEFS_PATH: &str = "/etc/login.defs";
/// `UID_MIN` when `/etc/login.defs` does not set it (shadow-utils' default).
pub const DEFAULT_UID_MIN: u32 = 1000;

/// One local account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalUser {
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell (empty means `/bin/sh`).
    pub shell: String,
}

impl LocalUser {
    /// Whether the shell's file name is `nologin` (`/sbin/nologin`, `/usr/sbin/nologin`):
    /// such users get no key management, as in Python 2.8.
    pub fn has_nologin_shell(&self) -> bool {
        self.shell.rsplit('/').next() == Some("nologin")
    }

    /// Whether the account may be given sudo (`google-sudoers`): a person's account, not
    /// root (which needs no group), not a system account (uid below `uid_min`), and not one
    /// whose shell refuses logins (`nologin`, `false`). `nobody:KEY` in metadata must not
    /// make every process running as `nobody` root.
    pub fn may_get_sudo(&self, uid_min: u32) -> bool {
        let shell = self.shell.rsplit('/').next();
        self.uid != 0 && self.uid >= uid_min && shell != Some("nologin") && shell != Some("false")
    }
}

/// Local accounts by name.
pub type LocalUsers = BTreeMap<String, LocalUser>;

/// Parses `/etc/passwd` content. Malformed lines, comments and NIS `+`/`-` lines are
/// skipped; when a name appears twice the first entry counts, as for `getpwnam`.
pub fn parse_passwd(content: &[u8]) -> LocalUsers {
    let mut users = LocalUsers::new();
    for line in content.split(|&b| b == b'\n') {
        if line.is_empty() || line[0] == b'#' || line[0] == b'+' || line[0] == b'-' {
            continue;
        }
        let fields: Vec<&[u8]> = line.split(|&b| b == b':').collect();
        let [name, _password, uid, gid, _gecos, home, shell] = fields[..] else {
            continue;
        };
        let (Some(uid), Some(gid)) = (decimal(uid), decimal(gid)) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        let name = String::from_utf8_lossy(name).into_owned();
        users.entry(name).or_insert_with(|| LocalUser {
            uid,
            gid,
            home: PathBuf::from(OsStr::from_bytes(home)),
            shell: String::from_utf8_lossy(shell).into_owned(),
        });
    }
    users
}

fn decimal(field: &[u8]) -> Option<u32> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// `UID_MIN` from `/etc/login.defs` content, read as shadow-utils reads it: `#` comments,
/// name and value separated by blanks, optional double quotes, the last setting wins, the
/// number in C notation (`0x` hex, leading `0` octal). Unset or unreadable: 1000.
pub fn parse_uid_min(content: &[u8]) -> u32 {
    let mut value: Option<&[u8]> = None;
    for line in content.split(|&b| b == b'\n') {
        let line = trim_blanks(line);
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let name_end = line
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(line.len());
        if &line[..name_end] != b"UID_MIN" {
            continue;
        }
        let rest = &line[name_end..];
        let start = rest
            .iter()
            .position(|&b| !matches!(b, b' ' | b'\t' | b'"'))
            .unwrap_or(rest.len());
        let rest = &rest[start..];
        let end = rest
            .iter()
            .position(|&b| matches!(b, b' ' | b'\t' | b'"'))
            .unwrap_or(rest.len());
        value = Some(&rest[..end]);
    }
    value.and_then(c_number).unwrap_or(DEFAULT_UID_MIN)
}

fn trim_blanks(line: &[u8]) -> &[u8] {
    let is_blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\r');
    let start = line.iter().position(|b| !is_blank(b)).unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !is_blank(b))
        .map_or(start, |i| i + 1);
    &line[start..end]
}

/// An unsigned number as `strtoul(s, &end, 0)` reads it, the whole text.
fn c_number(text: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(text).ok()?;
    let (digits, radix) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (hex, 16)
        } else if text.len() > 1 && text.starts_with('0') {
            (&text[1..], 8)
        } else {
            (text, 10)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
# a comment\n\
\n\
alice:x:1001:1001:Alice,,,:/home/alice:/bin/bash\n\
svc:x:998:998::/var/lib/svc:/sbin/nologin\n\
plain:x:1002:1002::/home/plain:\n\
+nisuser::::::\n\
-other::::::\n\
broken:x:abc:1::/home/b:/bin/sh\n\
short:x:5:5\n\
neg:x:-1:1::/:/bin/sh\n\
big:x:4294967296:1::/:/bin/sh\n\
alice:x:2000:2000::/elsewhere:/bin/sh\n\
odd:x:1003:1003::/home/caf\xe9:/bin/sh\n\
:x:7:7::/:/bin/sh\n";

    #[test]
    fn passwd_entries() {
        let users = parse_passwd(PASSWD);
        let names: Vec<&str> = users.keys().map(String::as_str).collect();
        assert_eq!(names, ["alice", "daemon", "odd", "plain", "root", "svc"]);
        let alice = &users["alice"];
        assert_eq!((alice.uid, alice.gid), (1001, 1001));
        assert_eq!(alice.home, PathBuf::from("/home/alice"));
        assert_eq!(alice.shell, "/bin/bash");
        assert_eq!(users["root"].uid, 0);
        assert_eq!(users["odd"].home.as_os_str().as_bytes(), b"/home/caf\xe9");
        assert_eq!(users["plain"].shell, "");
    }

    #[test]
    fn nologin_shells() {
        let cases = [
            ("/sbin/nologin", true),
            ("/usr/sbin/nologin", true),
            ("nologin", true),
            ("/bin/bash", false),
            ("/bin/false", false),
            ("", false),
            ("/usr/bin/nologin-not", false),
            ("/sbin/nologin/", false),
        ];
        for (shell, expected) in cases {
            let user = LocalUser {
                uid: 1,
                gid: 1,
                home: "/".into(),
                shell: shell.into(),
            };
            assert_eq!(user.has_nologin_shell(), expected, "{shell}");
        }
    }

    #[test]
    fn uid_min_from_login_defs() {
        let cases: &[(&[u8], u32)] = &[
            (b"", 1000),
            (b"UID_MIN 500\n", 500),
            (b"UID_MIN\t\t\t 2000\n", 2000),
            (b"   UID_MIN 600   \n", 600),
            (b"UID_MIN \"700\"\n", 700),
            (b"UID_MIN 500\r\n", 500),
            (b"# UID_MIN 500\n", 1000),
            (b"UID_MAX 60000\nSYS_UID_MIN 100\nUID_MINX 5\n", 1000),
            (b"UID_MIN 500\nUID_MIN 1500\n", 1500),
            (b"UID_MIN 500\nUID_MIN bogus\n", 1000),
            (b"UID_MIN 0x3e8\n", 1000),
            (b"UID_MIN 0X10\n", 16),
            (b"UID_MIN 0100\n", 64),
            (b"UID_MIN 0\n", 0),
            (b"UID_MIN 09\n", 1000),
            (b"UID_MIN -5\n", 1000),
            (b"UID_MIN 99999999999\n", 1000),
            (b"UID_MIN\n", 1000),
            (b"UID_MIN 500 # trailing\n", 500),
            (
                b"MAIL_DIR /var/mail\nUID_MIN                  1000\nUID_MAX 60000\n",
                1000,
            ),
        ];
        for (content, expected) in cases {
            assert_eq!(
                parse_uid_min(content),
                *expected,
                "{:?}",
                String::from_utf8_lossy(content)
            );
        }
    }
}
