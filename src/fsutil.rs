//! Files done safely: single-instance `flock` locks, atomic replacement (temp file, fsync,
//! rename, fsync of the directory), and a directory handle whose every operation is
//! relative to an open descriptor and never follows a symlink — for writing inside
//! directories other users control (their homes) without being redirected.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};
use crate::sys;

fn cstr(bytes: &[u8], path: &Path) -> Result<CString> {
    CString::new(bytes).map_err(|_| {
        Error::io(
            "use",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"),
        )
    })
}

/// A held `flock`. The lock lasts as long as this value; the file is never removed.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// Creates the directories above `path` that do not exist yet.
pub fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => {
            std::fs::create_dir_all(dir).context("create", dir)
        }
        _ => Ok(()),
    }
}

/// Takes an exclusive non-blocking `flock` on `path`, creating it (0600) if needed.
/// `Ok(None)` means another process holds it. `/var/lock` is world-writable: an entry there
/// that is not our own regular file with one link (a symlink, a FIFO, another user's file)
/// was put there by someone else, so it is removed and the lock file created afresh (the
/// directory is sticky, so only its owner or root can do that) — nobody can switch a
/// daemon off by creating its lock file first.
pub fn try_lock(path: &Path) -> Result<Option<LockGuard>> {
    create_parent(path)?;
    let file = open_own_lock_file(path)?;
    match sys::flock_exclusive_nonblocking(file.as_fd()) {
        Ok(()) => Ok(Some(LockGuard { _file: file })),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
        Err(e) => Err(Error::io("lock", path, e)),
    }
}

/// Opens `path` as our own regular lock file, replacing whatever else is there.
fn open_own_lock_file(path: &Path) -> Result<File> {
    let c = cstr(path.as_os_str().as_bytes(), path)?;
    let flags =
        libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let me = sys::geteuid();
    for _ in 0..4 {
        match sys::open(&c, flags, 0o600) {
            Ok(fd) => {
                let file = File::from(fd);
                let st = sys::fstat(file.as_fd()).context("stat lock file", path)?;
                if st.st_uid == me && st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_nlink == 1
                {
                    return Ok(file);
                }
            }
            // A symlink (ELOOP), a directory (EISDIR), a socket (ENXIO), another user's
            // entry that `fs.protected_symlinks`/`protected_regular` deny to root (EACCES).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ELOOP | libc::EISDIR | libc::ENXIO | libc::EACCES)
                ) => {}
            Err(e) => return Err(Error::io("open lock file", path, e)),
        }
        warn!(
            "Replacing {}: it is not our own regular file.",
            crate::log::printable(&path.to_string_lossy())
        );
        match sys::unlink(&c) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                sys::rmdir(&c).context("remove squatted lock directory", path)?
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(Error::io("remove squatted lock file", path, e)),
        }
    }
    Err(Error::io(
        "trust lock file",
        path,
        io::Error::new(io::ErrorKind::PermissionDenied, "keeps being replaced"),
    ))
}

/// Like [`try_lock`], but waits up to `timeout` for another holder to let go.
pub fn lock_wait(path: &Path, timeout: Duration) -> Result<LockGuard> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(guard) = try_lock(path)? {
            return Ok(guard);
        }
        if Instant::now() >= deadline {
            return Err(Error::Locked {
                path: path.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Replaces `path` with `data` atomically: readers see the old or the new content, never a
/// mix, even after a crash. Created with `mode`; the parent directory must exist.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            "write",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
        )
    })?;
    let dir = Dir::open_path(parent)?;
    dir.write_atomic(Path::new(name), data, mode, None)
}

/// Reads a whole file, `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// An open directory. Every operation is relative to its descriptor and refuses symlinks,
/// so a directory a user controls cannot redirect a write made as root.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What is known about an entry, from `fstat`/`fstatat` without following links.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub uid: u32,
    pub mode: u32,
    pub nlink: u64,
    pub size: u64,
}

impl Stat {
    fn from(st: &libc::stat) -> Stat {
        Stat {
            uid: st.st_uid,
            mode: st.st_mode,
            nlink: st.st_nlink,
            size: st.st_size as u64,
        }
    }

    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// Permission bits only.
    pub fn perms(&self) -> u32 {
        self.mode & 0o7777
    }
}

impl Dir {
    /// Opens a directory by path. The last component must not be a symlink.
    pub fn open_path(path: &Path) -> Result<Dir> {
        let c = cstr(path.as_os_str().as_bytes(), path)?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        Ok(Dir {
            fd: sys::open(&c, flags, 0).context("open directory", path)?,
            path: path.to_path_buf(),
        })
    }

    fn child_path(&self, name: &Path) -> PathBuf {
        self.path.join(name)
    }

    fn name_cstr(&self, name: &Path) -> Result<CString> {
        let bytes = name.as_os_str().as_bytes();
        if bytes.is_empty() || bytes.contains(&b'/') || bytes == b"." || bytes == b".." {
            return Err(Error::io(
                "use",
                self.child_path(name),
                io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"),
            ));
        }
        cstr(bytes, &self.child_path(name))
    }

    /// Opens a sub-directory, refusing a symlink.
    pub fn open_dir(&self, name: &Path) -> Result<Dir> {
        let c = self.name_cstr(name)?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        Ok(Dir {
            fd: sys::openat(self.fd.as_fd(), &c, flags, 0)
                .context("open directory", self.child_path(name))?,
            path: self.child_path(name),
        })
    }

    /// Creates a sub-directory with `mode`; an existing entry is left as it is.
    pub fn mkdir(&self, name: &Path, mode: u32) -> Result<()> {
        let c = self.name_cstr(name)?;
        match sys::mkdirat(self.fd.as_fd(), &c, mode) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(Error::io("create directory", self.child_path(name), e)),
        }
    }

    /// This directory's own status.
    pub fn stat(&self) -> Result<Stat> {
        sys::fstat(self.fd.as_fd())
            .map(|st| Stat::from(&st))
            .context("stat", &self.path)
    }

    /// An entry's status without following a symlink; `Ok(None)` when absent.
    pub fn stat_entry(&self, name: &Path) -> Result<Option<Stat>> {
        let c = self.name_cstr(name)?;
        match sys::fstatat_nofollow(self.fd.as_fd(), &c) {
            Ok(st) => Ok(Some(Stat::from(&st))),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(Error::io("stat", self.child_path(name), e)),
        }
    }

    /// Opens an entry for reading without following a symlink (`ELOOP` then) or blocking on
    /// a FIFO, with the status of what was opened (`fstat` on the descriptor: checks made
    /// on it hold for what is read). `Ok(None)` when absent.
    pub fn open_nofollow(&self, name: &Path) -> io::Result<Option<(File, Stat)>> {
        let c = self
            .name_cstr(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"))?;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        let fd = match sys::openat(self.fd.as_fd(), &c, flags, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let file = File::from(fd);
        let st = Stat::from(&sys::fstat(file.as_fd())?);
        Ok(Some((file, st)))
    }

    /// Opens a sub-directory without following a symlink (`ELOOP`; `ENOTDIR` for a
    /// non-directory); `Ok(None)` when absent.
    pub fn open_dir_nofollow(&self, name: &Path) -> io::Result<Option<Dir>> {
        let c = self
            .name_cstr(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"))?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        match sys::openat(self.fd.as_fd(), &c, flags, 0) {
            Ok(fd) => Ok(Some(Dir {
                fd,
                path: self.child_path(name),
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads an open file to its end, failing past `max` bytes.
    pub fn read_open(&self, name: &Path, file: File, max: u64) -> Result<Vec<u8>> {
        let path = self.child_path(name);
        let mut data = Vec::new();
        Read::take(file, max + 1)
            .read_to_end(&mut data)
            .context("read", &path)?;
        if data.len() as u64 > max {
            let e = io::Error::new(io::ErrorKind::InvalidData, "file too large");
            return Err(Error::io("read", path, e));
        }
        Ok(data)
    }

    /// Atomically replaces `name` with `data`: a fresh `O_EXCL|O_NOFOLLOW` temp file in this
    /// directory, mode and owner set by descriptor, fsync, `renameat` (which replaces a
    /// symlink itself, never its target), then fsync of the directory.
    pub fn write_atomic(
        &self,
        name: &Path,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        let target = self.name_cstr(name)?;
        let path = self.child_path(name);
        let (tmp_name, mut file) = self.create_temp(name)?;
        let result = (|| {
            if let Some((uid, gid)) = owner {
                sys::fchown(file.as_fd(), uid, gid).context("chown", &path)?;
            }
            sys::fchmod(file.as_fd(), mode).context("chmod", &path)?;
            file.write_all(data).context("write", &path)?;
            file.sync_all().context("fsync", &path)?;
            sys::renameat(self.fd.as_fd(), &tmp_name, &target)
                .context("rename into place", &path)?;
            Ok(())
        })();
        if result.is_err() {
            // Failing to clean up is harmless.
            let _ = sys::unlinkat(self.fd.as_fd(), &tmp_name);
            return result;
        }
        self.sync()
    }

    /// Removes temporary files an interrupted [`Dir::write_atomic`] of `name` left behind
    /// (`.<name>.XXXXXXXX.tmp`). Only such names are removed, through this descriptor.
    pub fn remove_stale_temps(&self, name: &Path) {
        let prefix = [b".", name.as_os_str().as_bytes(), b"."].concat();
        let listing = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        let Ok(entries) = std::fs::read_dir(&listing) else {
            return;
        };
        for entry in entries.flatten() {
            let file = entry.file_name();
            let bytes = file.as_bytes();
            let is_ours = bytes.len() == prefix.len() + 12
                && bytes.starts_with(&prefix)
                && bytes.ends_with(b".tmp")
                && bytes[prefix.len()..prefix.len() + 8]
                    .iter()
                    .all(u8::is_ascii_hexdigit);
            if is_ours {
                let _ = self.remove_file(Path::new(&file));
            }
        }
    }

    fn create_temp(&self, name: &Path) -> Result<(CString, File)> {
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let base = name.as_os_str().as_bytes();
        let base = &base[..base.len().min(200)];
        for _ in 0..16 {
            let mut tmp = b".".to_vec();
            tmp.extend_from_slice(base);
            tmp.extend_from_slice(
                format!(".{:08x}.tmp", crate::timing::random_u64() as u32).as_bytes(),
            );
            let c = cstr(&tmp, &self.path)?;
            match sys::openat(self.fd.as_fd(), &c, flags, 0o600) {
                Ok(fd) => return Ok((c, File::from(fd))),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => return Err(Error::io("create temporary file in", &self.path, e)),
            }
        }
        let e = io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name");
        Err(Error::io("create temporary file in", &self.path, e))
    }

    /// Removes a file entry (not a directory); absent is fine.
    pub fn remove_file(&self, name: &Path) -> Result<()> {
        let c = self.name_cstr(name)?;
        match sys::unlinkat(self.fd.as_fd(), &c) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(Error::io("remove", self.child_path(name), e)),
        }
    }

    /// Sets this directory's owner by descriptor.
    pub fn chown(&self, uid: u32, gid: u32) -> Result<()> {
        sys::fchown(self.fd.as_fd(), uid, gid).context("chown", &self.path)
    }

    /// Sets this directory's mode by descriptor.
    pub fn chmod(&self, mode: u32) -> Result<()> {
        sys::fchmod(self.fd.as_fd(), mode).context("chmod", &self.path)
    }

    /// Flushes the directory entry changes to disk.
    pub fn sync(&self) -> Result<()> {
        sys::fsync(self.fd.as_fd()).context("fsync", &self.path)
    }
}

/// Relabels `path` for SELinux with `restorecon` when the image has it (as the Python
/// package did after each write); its failure is only logged.
pub fn restorecon(path: &Path) {
    for prog in ["/sbin/restorecon", "/usr/sbin/restorecon"] {
        if Path::new(prog).is_file() {
            let mut cmd = std::process::Command::new(prog);
            cmd.arg(path);
            if let Err(e) = crate::exec::run(cmd, Duration::from_secs(10)) {
                debug!("restorecon {}: {}", path.display(), e);
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gce-guest-fsutil-{}-{}-{}",
            name,
            std::process::id(),
            crate::timing::random_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn atomic_write_replaces_content_and_sets_mode() {
        let dir = scratch("atomic");
        let file = dir.join("f");
        write_atomic(&file, b"one", 0o640).unwrap();
        write_atomic(&file, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files are left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn writes_replace_a_planted_symlink_instead_of_following_it() {
        let dir = scratch("symlink");
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        symlink(&victim, dir.join("authorized_keys")).unwrap();
        let d = Dir::open_path(&dir).unwrap();
        let st = d.stat_entry(Path::new("authorized_keys")).unwrap().unwrap();
        assert!(st.is_symlink());
        let opened = d.open_nofollow(Path::new("authorized_keys"));
        assert_eq!(
            opened.err().and_then(|e| e.raw_os_error()),
            Some(libc::ELOOP)
        );
        d.write_atomic(Path::new("authorized_keys"), b"key", 0o600, None)
            .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn stale_temporary_files_are_removed_and_nothing_else() {
        let dir = scratch("stale");
        for name in [
            ".authorized_keys.0badf00d.tmp",
            ".authorized_keys.keep.tmp",
            "authorized_keys",
            ".other.0badf00d.tmp",
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let d = Dir::open_path(&dir).unwrap();
        d.remove_stale_temps(Path::new("authorized_keys"));
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".authorized_keys.keep.tmp",
                ".other.0badf00d.tmp",
                "authorized_keys"
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_symlinked_directory_is_not_entered() {
        let dir = scratch("symdir");
        std::fs::create_dir(dir.join("real")).unwrap();
        symlink(dir.join("real"), dir.join(".ssh")).unwrap();
        let d = Dir::open_path(&dir).unwrap();
        assert!(d.open_dir(Path::new(".ssh")).is_err());
        assert!(d.open_dir(Path::new("real")).is_ok());
        assert!(d.open_dir(Path::new("../etc")).is_err());
        assert!(Dir::open_path(&dir.join(".ssh")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_lock_on_the_same_file_is_refused() {
        let dir = scratch("lock");
        let path = dir.join("google_test.lock");
        let first = try_lock(&path).unwrap();
        assert!(first.is_some());
        // flock locks belong to the open file description: a second open conflicts.
        assert!(try_lock(&path).unwrap().is_none());
        drop(first);
        assert!(try_lock(&path).unwrap().is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
