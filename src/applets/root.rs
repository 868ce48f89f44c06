//! `--root DIR`: run the applet chrooted into DIR — for an initramfs, where the real root is
//! mounted at `/sysroot`. `/proc`, `/sys` and `/dev` are bind-mounted into DIR first when
//! they are not already there, so the applet sees the same kernel interfaces either way.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Context, Error, Result};
use crate::sys;

fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Usage(format!("bad path {}", p.display())))
}

/// Whether `inner` is a mount point of its own (its device differs from its parent's).
fn is_mounted(inner: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(inner),
        inner.parent().map(std::fs::metadata),
    ) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Bind-mounts the kernel file systems into `dir`, then chroots there.
pub(super) fn enter(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "--root {} is not a directory",
            dir.display()
        )));
    }
    for fs in ["proc", "sys", "dev"] {
        let inner = dir.join(fs);
        if is_mounted(&inner) {
            continue;
        }
        std::fs::create_dir_all(&inner).context("create", &inner)?;
        let src = c_path(&Path::new("/").join(fs))?;
        let dst = c_path(&inner)?;
        sys::bind_mount_recursive(&src, &dst).context("bind-mount into", &inner)?;
    }
    let c = c_path(dir)?;
    sys::chroot(&c).context("chroot into", dir)?;
    std::env::set_current_dir("/").context("enter", "/")
}
