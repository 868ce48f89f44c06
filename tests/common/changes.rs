//! What changed inside the sandbox, read from the overlay upper directories on the host.
//!
//! Everything written under an overlaid directory (`/etc`, `/var`, `/home`, `/root`, `/run`)
//! lands in that overlay's upper directory: new and modified entries as themselves, deleted
//! ones as whiteouts (character devices 0:0), a directory deleted and made again as an
//! "opaque" directory. Comparing each upper entry with the host's own (lower) entry says
//! whether it was added, modified or deleted; entries copied up without a real change (a
//! parent directory, a file opened for writing and left as it was) are not reported.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::fs::{self, Metadata};
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// How an entry differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// It exists inside but not on the host (or not at the start).
    Added,
    /// It exists on both sides with other content, type, mode or owner.
    Modified,
    /// It exists on the host (or at the start) but was removed inside.
    Deleted,
}

/// The type of a changed entry (for a deletion, the type it had).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// One changed path inside the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Change {
    /// The absolute path inside the sandbox, for example `/etc/passwd`.
    pub path: String,
    /// Added, modified or deleted.
    pub kind: ChangeKind,
    /// What the entry is (or was).
    pub entry: EntryType,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
        };
        let entry = match self.entry {
            EntryType::File => "file",
            EntryType::Dir => "directory",
            EntryType::Symlink => "symlink",
            EntryType::Other => "special file",
        };
        write!(f, "{} {} {}", kind, entry, self.path)
    }
}

/// One upper entry that differs from the host: its change and a fingerprint of its state,
/// so a later scan can tell whether it changed again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    kind: ChangeKind,
    entry: EntryType,
    fingerprint: u64,
}

/// Every difference between the upper directories and the host, by inside path.
pub type Scan = BTreeMap<String, Entry>;

/// Scans the upper directories: `uppers` pairs each overlaid inside path (`/etc`) with the
/// host path of its upper directory.
pub fn scan(uppers: &[(String, PathBuf)]) -> Scan {
    let mut out = Scan::new();
    for (inside, upper) in uppers {
        walk(upper, Path::new(inside), &mut out);
    }
    out
}

/// The changes between the state `baseline` describes and the state `now` describes:
/// entries whose state differs, and entries of the baseline that are gone (back to the
/// host's version, or removed).
pub fn diff(baseline: &Scan, now: &Scan) -> Vec<Change> {
    let mut changes = Vec::new();
    for (path, entry) in now {
        let before = baseline.get(path);
        if before == Some(entry) {
            continue;
        }
        let kind = match (before.map(|b| b.kind), entry.kind) {
            (None, kind) => kind,
            (Some(ChangeKind::Deleted), _) => ChangeKind::Added,
            (Some(_), ChangeKind::Deleted) => ChangeKind::Deleted,
            (Some(_), _) => ChangeKind::Modified,
        };
        changes.push(Change {
            path: path.clone(),
            kind,
            entry: entry.entry,
        });
    }
    for (path, before) in baseline {
        if !now.contains_key(path) {
            let kind = match before.kind {
                ChangeKind::Added => ChangeKind::Deleted,
                ChangeKind::Modified => ChangeKind::Modified,
                ChangeKind::Deleted => ChangeKind::Added,
            };
            changes.push(Change {
                path: path.clone(),
                kind,
                entry: before.entry,
            });
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

fn walk(upper_dir: &Path, inside_dir: &Path, out: &mut Scan) {
    let Ok(entries) = fs::read_dir(upper_dir) else {
        return;
    };
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    if is_opaque(upper_dir) {
        // Everything the host has below an opaque directory is hidden: deleted, unless an
        // upper entry of the same name replaces it (that one is compared below).
        if let Ok(lower) = fs::read_dir(inside_dir) {
            for lower_entry in lower.filter_map(Result::ok) {
                let name = lower_entry.file_name();
                if names.contains(&name) {
                    continue;
                }
                let path = inside_dir.join(&name);
                if let Some(meta) = lower_metadata(&path) {
                    let entry = Entry {
                        kind: ChangeKind::Deleted,
                        entry: entry_type(&meta),
                        fingerprint: 0,
                    };
                    out.insert(path.to_string_lossy().into_owned(), entry);
                }
            }
        }
    }
    for name in names {
        let upper = upper_dir.join(&name);
        let inside = inside_dir.join(&name);
        let Ok(meta) = fs::symlink_metadata(&upper) else {
            continue;
        };
        let lower = lower_metadata(&inside);
        let key = inside.to_string_lossy().into_owned();
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            if let Some(lower) = lower {
                out.insert(
                    key,
                    Entry {
                        kind: ChangeKind::Deleted,
                        entry: entry_type(&lower),
                        fingerprint: 0,
                    },
                );
            }
            continue;
        }
        let entry = entry_type(&meta);
        let fingerprint = fingerprint(&upper, &meta);
        let kind = match &lower {
            None => Some(ChangeKind::Added),
            Some(lower_meta) if entry_type(lower_meta) != entry => Some(ChangeKind::Modified),
            Some(lower_meta) => {
                let same_owner_and_mode = lower_meta.mode() == meta.mode()
                    && lower_meta.uid() == meta.uid()
                    && lower_meta.gid() == meta.gid();
                let same = same_owner_and_mode
                    && match entry {
                        EntryType::Dir => !is_opaque(&upper),
                        EntryType::File => files_equal(&upper, &inside),
                        EntryType::Symlink => {
                            fs::read_link(&upper).ok() == fs::read_link(&inside).ok()
                        }
                        EntryType::Other => lower_meta.rdev() == meta.rdev(),
                    };
                (!same).then_some(ChangeKind::Modified)
            }
        };
        if let Some(kind) = kind {
            out.insert(
                key,
                Entry {
                    kind,
                    entry,
                    fingerprint,
                },
            );
        }
        if entry == EntryType::Dir {
            walk(&upper, &inside, out);
        }
    }
}

/// The host's metadata of `path` without following any symlink on the way: `None` when it
/// does not exist or a parent is not a real directory (then the inside path cannot be the
/// host's entry).
fn lower_metadata(path: &Path) -> Option<Metadata> {
    let mut prefix = PathBuf::from("/");
    let components: Vec<Component<'_>> = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir))
        .collect();
    for (i, component) in components.iter().enumerate() {
        prefix.push(component.as_os_str());
        let meta = fs::symlink_metadata(&prefix).ok()?;
        if i + 1 == components.len() {
            return Some(meta);
        }
        if !meta.file_type().is_dir() {
            return None;
        }
    }
    None
}

fn entry_type(meta: &Metadata) -> EntryType {
    let t = meta.file_type();
    if t.is_dir() {
        EntryType::Dir
    } else if t.is_file() {
        EntryType::File
    } else if t.is_symlink() {
        EntryType::Symlink
    } else {
        EntryType::Other
    }
}

/// Whether the overlay marked this upper directory opaque (it replaced the host's one).
fn is_opaque(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 4];
    for name in [c"trusted.overlay.opaque", c"user.overlay.opaque"] {
        // SAFETY: valid C strings and a buffer of the given length.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n >= 1 && value[0] == b'y' {
            return true;
        }
    }
    false
}

fn files_equal(a: &Path, b: &Path) -> bool {
    match (fs::read(a), fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn fingerprint(path: &Path, meta: &Metadata) -> u64 {
    let mut h = DefaultHasher::new();
    (meta.mode(), meta.uid(), meta.gid(), meta.rdev()).hash(&mut h);
    match entry_type(meta) {
        EntryType::File => fs::read(path).ok().hash(&mut h),
        EntryType::Symlink => fs::read_link(path).ok().hash(&mut h),
        EntryType::Dir => is_opaque(path).hash(&mut h),
        EntryType::Other => {}
    }
    h.finish()
}
