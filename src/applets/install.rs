//! `gce-guest --install [-s] [-f] [DIR]`: one link per applet in DIR (default `/usr/bin`),
//! hard links by default and symbolic with `-s`, as busybox does. Running it again changes
//! nothing; a file of another program already under an applet's name is left alone unless
//! `-f` is given.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{APPLETS, EXIT_USAGE, MULTIPLEXER};

/// Our own executable: `/proc/self/exe`, or argv[0] when it is absolute (chroots without
/// /proc).
fn self_exe() -> io::Result<PathBuf> {
    std::fs::read_link("/proc/self/exe").or_else(|e| {
        let arg0 = PathBuf::from(std::env::args_os().next().unwrap_or_default());
        if arg0.is_absolute() {
            Ok(arg0)
        } else {
            Err(e)
        }
    })
}

/// Whether `link` already is (or points at) `exe`.
fn is_ours(link: &Path, exe: &Path) -> bool {
    match (std::fs::metadata(link), std::fs::metadata(exe)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

pub(super) fn main(args: &[String]) -> i32 {
    let mut symbolic = false;
    let mut force = false;
    let mut dir = PathBuf::from("/usr/bin");
    for arg in args {
        match arg.as_str() {
            "-s" => symbolic = true,
            "-f" => force = true,
            a if a.starts_with('-') => {
                eprintln!(
                    "{}: --install takes [-s] [-f] [DIR], not {}",
                    MULTIPLEXER, a
                );
                return EXIT_USAGE;
            }
            a => dir = PathBuf::from(a),
        }
    }
    let exe = match self_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: cannot find my own executable: {}", MULTIPLEXER, e);
            return 1;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("{}: cannot create {}: {}", MULTIPLEXER, dir.display(), e);
        return 1;
    }
    // A link in the binary's own directory points at the bare name, so a tree built under
    // DESTDIR still works once moved into place.
    let same_dir = exe.parent().and_then(|p| p.canonicalize().ok()) == dir.canonicalize().ok();
    let target = match (same_dir, exe.file_name()) {
        (true, Some(name)) => PathBuf::from(name),
        _ => exe.clone(),
    };
    let mut status = 0;
    for applet in APPLETS {
        let link = dir.join(applet.name);
        if is_ours(&link, &exe) {
            continue;
        }
        if std::fs::symlink_metadata(&link).is_ok() {
            if !force {
                eprintln!(
                    "{}: {} exists and is not gce-guest; left alone (-f replaces it)",
                    MULTIPLEXER,
                    link.display()
                );
                status = 1;
                continue;
            }
            if let Err(e) = std::fs::remove_file(&link) {
                eprintln!("{}: cannot replace {}: {}", MULTIPLEXER, link.display(), e);
                status = 1;
                continue;
            }
        }
        let made = if symbolic {
            std::os::unix::fs::symlink(&target, &link)
        } else {
            std::fs::hard_link(&exe, &link)
        };
        match made {
            Ok(()) => println!("{} -> {}", link.display(), target.display()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                eprintln!("{}: cannot link {}: {}", MULTIPLEXER, link.display(), e);
                status = 1;
            }
        }
    }
    status
}
