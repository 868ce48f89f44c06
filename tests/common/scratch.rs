//! Scratch directories: each a fresh, uniquely named directory (process id and a counter in
//! its name), removed with everything in it when its [`Scratch`] is dropped, even by a
//! failing test. The sandbox makes its own directories with the same [`unique_dir`].

use std::fs;
use std::io;
use std::ops::Deref;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes a new directory `<prefix><pid>-<n>` (mode 0755) under `base`, with the first `n`
/// of this process whose name is free.
pub fn unique_dir(base: &Path, prefix: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{}{}-{}", prefix, std::process::id(), n));
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A test's own directory in the temporary directory; it derefs to its [`Path`].
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A fresh directory named `gce-guest-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Scratch {
        let base = std::env::temp_dir();
        match unique_dir(&base, &format!("gce-guest-{}-", tag)) {
            Ok(path) => Scratch { path },
            Err(e) => panic!(
                "cannot make a scratch directory in {}: {}",
                base.display(),
                e
            ),
        }
    }
}

impl Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("cannot remove {}: {}", self.path.display(), e);
        }
    }
}
