//! The content of a user's `~/.ssh/authorized_keys`: which lines are ours, and the new
//! content with our keys replaced. Bytes in, bytes out: a user's own lines are kept exactly
//! as they are, whatever their encoding.
//!
//! The convention is the original's: a line starting with `# Added by Google` and the line
//! right after it are ours; every other line is the user's (or an administrator's: root's own
//! keys stay) and is kept, in order. Our keys are appended after them, each as the marker
//! line followed by the key line. Lines are split at `\n`; the result ends with `\n` (a
//! last line without one gets it), and a `\r` before a `\n` is left alone.

/// The line that marks the next line as a key this daemon wrote.
pub(crate) const MARKER: &str = "# Added by Google";

/// The lines of `content` (without their `\n`); text after the last `\n` is a line too.
fn split_lines(content: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = content.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Whether a line is our marker.
pub(crate) fn is_marker(line: &[u8]) -> bool {
    line.starts_with(MARKER.as_bytes())
}

/// For each line, whether it is ours: a marker, or the line right after a marker.
fn ours(lines: &[&[u8]]) -> Vec<bool> {
    let mut ours = vec![false; lines.len()];
    for (i, line) in lines.iter().enumerate() {
        if is_marker(line) {
            ours[i] = true;
            if let Some(next) = ours.get_mut(i + 1) {
                *next = true;
            }
        }
    }
    ours
}

/// The lines that are not ours, in order.
pub fn foreign_lines(content: &[u8]) -> Vec<&[u8]> {
    let lines = split_lines(content);
    let ours = ours(&lines);
    lines
        .into_iter()
        .zip(ours)
        .filter(|(_, ours)| !ours)
        .map(|(line, _)| line)
        .collect()
}

#[cfg(test)]
/// The key lines we wrote earlier (the line after each marker that is not a marker itself).
pub(crate) fn our_keys(content: &[u8]) -> Vec<&[u8]> {
    let lines = split_lines(content);
    lines
        .windows(2)
        .filter(|w| is_marker(w[0]) && !is_marker(w[1]))
        .map(|w| w[1])
        .collect()
}

/// The file's new content: the foreign lines of `content`, then each of `keys` under a
/// marker line.
pub fn merge(content: &[u8], keys: &[impl AsRef<str>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        content.len() + keys.iter().map(|k| k.as_ref().len() + 20).sum::<usize>(),
    );
    for line in foreign_lines(content) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    for key in keys {
        out.extend_from_slice(MARKER.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(key.as_ref().as_bytes());
        out.push(b'\n');
    }
    out
}

/// The content with only our lines taken out (deprovisioning: the user's own keys stay).
pub(crate) fn remove_ours(content: &[u8]) -> Vec<u8> {
    let no_keys: &[&str] = &[];
    merge(content, no_keys)
}

/// What to write so the file holds exactly `keys` as ours: `None` when nothing needs
/// writing (the content would not change, or there is no file and no key to put in one).
/// `existing` is the current content, `None` when the file does not exist.
pub(crate) fn rewrite(existing: Option<&[u8]>, keys: &[impl AsRef<str>]) -> Option<Vec<u8>> {
    match existing {
        None if keys.is_empty() => None,
        None => Some(merge(b"", keys)),
        Some(content) => {
            let new = merge(content, keys);
            (new != content).then_some(new)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn merge_table() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("", &[], ""),
            ("", &["k1"], "# Added by Google\nk1\n"),
            (
                "",
                &["k1", "k2"],
                "# Added by Google\nk1\n# Added by Google\nk2\n",
            ),
            // Root's (or any user's) own keys stay, before ours.
            (
                "ssh-rsa AAAA root@admin\n",
                &["k1"],
                "ssh-rsa AAAA root@admin\n# Added by Google\nk1\n",
            ),
            // Our old key is replaced; the user's lines around it keep their order.
            (
                "own1\n# Added by Google\nold\nown2\n",
                &["new"],
                "own1\nown2\n# Added by Google\nnew\n",
            ),
            // Comments and blank lines of the user are kept.
            (
                "# my keys\n\nown\n\n",
                &["k"],
                "# my keys\n\nown\n\n# Added by Google\nk\n",
            ),
            // A missing final newline is added.
            ("own", &[], "own\n"),
            ("own", &["k"], "own\n# Added by Google\nk\n"),
            // A marker as the very last line takes nothing else with it.
            ("own\n# Added by Google\n", &[], "own\n"),
            ("own\n# Added by Google", &[], "own\n"),
            // Two markers in a row: both are ours, and so is the line after the second.
            (
                "# Added by Google\n# Added by Google\nk\nown\n",
                &[],
                "own\n",
            ),
            // A marker with text after it still marks (Python's startswith).
            ("# Added by Google (x)\nk\nown\n", &[], "own\n"),
            // A line merely containing the words is the user's.
            (
                "own # Added by Google\nother\n",
                &[],
                "own # Added by Google\nother\n",
            ),
            (
                "  # Added by Google\nother\n",
                &[],
                "  # Added by Google\nother\n",
            ),
            // CRLF lines of the user are kept as they are; our marker is recognised.
            (
                "own\r\n# Added by Google\r\nold\r\n",
                &["k"],
                "own\r\n# Added by Google\nk\n",
            ),
            // Removing every key of ours leaves the user's lines.
            ("# Added by Google\nk1\n# Added by Google\nk2\n", &[], ""),
            ("\n", &[], "\n"),
        ];
        for (content, wanted, expected) in cases {
            let merged = merge(content.as_bytes(), &keys(wanted));
            assert_eq!(
                String::from_utf8_lossy(&merged),
                *expected,
                "{content:?} + {wanted:?}"
            );
            // Merging again changes nothing.
            assert_eq!(merge(&merged, &keys(wanted)), merged, "{content:?} twice");
        }
    }

    #[test]
    fn foreign_bytes_are_kept_exactly() {
        let content = b"ssh-ed25519 AAAA caf\xe9\n# Added by Google\nold\n\xff\xfe\n";
        let merged = merge(content, &keys(&["k"]));
        assert_eq!(
            merged,
            b"ssh-ed25519 AAAA caf\xe9\n\xff\xfe\n# Added by Google\nk\n"
        );
    }

    #[test]
    fn remove_ours_keeps_an_administrators_keys() {
        let content = b"ssh-rsa AAAA admin@corp\n# Added by Google\nssh-ed25519 BBBB alice\n";
        assert_eq!(remove_ours(content), b"ssh-rsa AAAA admin@corp\n");
        assert_eq!(remove_ours(b""), b"");
    }

    #[test]
    fn our_lines_and_foreign_lines_split_the_file() {
        let content = b"a\n# Added by Google\nk1\nb\n# Added by Google\nk2\n# Added by Google";
        assert_eq!(foreign_lines(content), vec![&b"a"[..], b"b"]);
        assert_eq!(our_keys(content), vec![&b"k1"[..], b"k2"]);
    }

    #[test]
    fn rewrite_only_when_the_content_changes() {
        let ours = "# Added by Google\nk\n";
        let cases: &[(Option<&str>, &[&str], Option<&str>)] = &[
            (None, &[], None),
            (None, &["k"], Some(ours)),
            (Some(ours), &["k"], None),
            (Some(ours), &["k2"], Some("# Added by Google\nk2\n")),
            (Some(ours), &[], Some("")),
            (Some("own\n"), &[], None),
            (Some("own"), &[], Some("own\n")),
            (Some(""), &[], None),
            (Some("own\n# Added by Google\nk\n"), &["k"], None),
            // Same keys in another order is a change (the order is metadata's).
            (
                Some("# Added by Google\na\n# Added by Google\nb\n"),
                &["b", "a"],
                Some("# Added by Google\nb\n# Added by Google\na\n"),
            ),
        ];
        for (existing, wanted, expected) in cases {
            let got = rewrite(existing.map(str::as_bytes), &keys(wanted));
            assert_eq!(
                got.as_deref(),
                expected.map(str::as_bytes),
                "{existing:?} + {wanted:?}"
            );
        }
    }
}
