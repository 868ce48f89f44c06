//! A user's `~/.ssh` and `authorized_keys` opened for a root write without following
//! links: the home directory and `.ssh` walked by descriptor, anything the user could use
//! to redirect the write (a symlink, a foreign owner, a hard link, not a regular file)
//! refused with a reason to log once.

use std::path::{Path, PathBuf};

use super::passwd::LocalUser;
use crate::error::{Error, Result};
use crate::fsutil::Dir;

/// The largest `authorized_keys` read.
const MAX_AUTHORIZED_KEYS: u64 = 4 << 20;

/// Why a user's `authorized_keys` was left alone on purpose.
#[derive(Debug)]
pub(super) enum KeysRefused {
    Symlink(&'static str),
    NotOwned(&'static str, u32),
    NotAFile,
    HardLinked,
}

pub(super) fn describe_refusal(user: &str, why: &KeysRefused) -> String {
    match why {
        KeysRefused::Symlink(what) => format!(
            "Not updating authorized keys for user {}. {} is a symlink.",
            user, what
        ),
        KeysRefused::NotOwned(what, uid) => {
            format!(
                "Not updating authorized keys for user {}. {} belongs to uid {}.",
                user, what, uid
            )
        }
        KeysRefused::NotAFile => format!(
            "Not updating authorized keys for user {}. It is not a regular file.",
            user
        ),
        KeysRefused::HardLinked => {
            format!(
                "Not updating authorized keys for user {}. The file has other hard links.",
                user
            )
        }
    }
}

/// Opens (creating if needed) `~/.ssh` of `user`, refusing anything the user could use to
/// redirect a root write.
pub(super) fn open_ssh_dir(
    user: &LocalUser,
    create: bool,
) -> Result<std::result::Result<Option<Dir>, KeysRefused>> {
    let home = match std::fs::symlink_metadata(&user.home) {
        Ok(m) if m.file_type().is_symlink() => {
            return Ok(Err(KeysRefused::Symlink("The home directory")))
        }
        Ok(_) => Dir::open_path(&user.home)?,
        Err(_) if !create => return Ok(Ok(None)),
        Err(_) => {
            let parent = user.home.parent().unwrap_or(Path::new("/"));
            let name = user.home.file_name().map(PathBuf::from).unwrap_or_default();
            let parent = Dir::open_path(parent)?;
            parent.mkdir(&name, 0o755)?;
            let home = parent.open_dir(&name)?;
            home.chown(user.uid, user.gid)?;
            home
        }
    };
    let home_stat = home.stat()?;
    if home_stat.uid != user.uid && home_stat.uid != 0 {
        return Ok(Err(KeysRefused::NotOwned(
            "The home directory",
            home_stat.uid,
        )));
    }
    let ssh_name = Path::new(".ssh");
    // Opened first, checked on the descriptor: what is checked is what is used.
    let ssh = match home.open_dir_nofollow(ssh_name) {
        Ok(Some(ssh)) => ssh,
        Ok(None) if !create => return Ok(Ok(None)),
        Ok(None) => {
            home.mkdir(ssh_name, 0o700)?;
            let ssh = home.open_dir(ssh_name)?;
            ssh.chown(user.uid, user.gid)?;
            ssh.chmod(0o700)?;
            return Ok(Ok(Some(ssh)));
        }
        // A symlink gives ELOOP, or ENOTDIR (O_DIRECTORY is checked first); the second
        // look only words the refusal.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            return Ok(Err(match home.stat_entry(ssh_name)? {
                Some(st) if !st.is_symlink() => KeysRefused::NotAFile,
                _ => KeysRefused::Symlink("~/.ssh"),
            }));
        }
        Err(e) => return Err(Error::io("open directory", user.home.join(ssh_name), e)),
    };
    let st = ssh.stat()?;
    if st.uid != user.uid {
        return Ok(Err(KeysRefused::NotOwned("~/.ssh", st.uid)));
    }
    if st.perms() & 0o077 != 0 {
        ssh.chmod(0o700)?;
    }
    Ok(Ok(Some(ssh)))
}

/// Reads the current `authorized_keys`, refusing links and foreign files.
pub(super) fn read_authorized_keys(
    ssh: &Dir,
    user: &LocalUser,
) -> Result<std::result::Result<Option<Vec<u8>>, KeysRefused>> {
    let name = Path::new("authorized_keys");
    // The checks are made with fstat on the descriptor that is then read: a hard link or
    // symlink swapped in after a path lookup cannot slip through.
    let (file, st) = match ssh.open_nofollow(name) {
        Ok(Some(opened)) => opened,
        Ok(None) => return Ok(Ok(None)),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Err(KeysRefused::Symlink("authorized_keys")))
        }
        Err(e) => return Err(Error::io("open", Path::new("~/.ssh/authorized_keys"), e)),
    };
    if !st.is_file() {
        return Ok(Err(KeysRefused::NotAFile));
    }
    if st.nlink > 1 {
        return Ok(Err(KeysRefused::HardLinked));
    }
    if st.uid != user.uid && st.uid != 0 {
        return Ok(Err(KeysRefused::NotOwned("authorized_keys", st.uid)));
    }
    if st.size > MAX_AUTHORIZED_KEYS {
        let e = std::io::Error::new(std::io::ErrorKind::InvalidData, "file too large");
        return Err(Error::io("read", Path::new("~/.ssh/authorized_keys"), e));
    }
    Ok(Ok(Some(ssh.read_open(name, file, MAX_AUTHORIZED_KEYS)?)))
}

/// Removes the whole `~/.ssh/authorized_keys` of an account the daemon created, without
/// reading it (a key the user added must not outlive their removal; nothing the user puts
/// in the file can make this fail): `unlinkat` inside a `~/.ssh` opened without following
/// links. A `~/.ssh` that is a symlink is itself removed, so the server finds no keys
/// through it. A missing home, `~/.ssh` or file is fine.
pub(super) fn remove_key_file_of(user: &LocalUser) -> Result<()> {
    let home = match Dir::open_path(&user.home) {
        Ok(home) => home,
        Err(_) if std::fs::symlink_metadata(&user.home).is_err() => return Ok(()),
        Err(e) => return Err(e),
    };
    let ssh_name = Path::new(".ssh");
    match home.stat_entry(ssh_name)? {
        None => Ok(()),
        Some(st) if st.is_symlink() => home.remove_file(ssh_name),
        Some(st) if !st.is_dir() => Ok(()),
        Some(_) => {
            let ssh = home.open_dir(ssh_name)?;
            let name = Path::new("authorized_keys");
            match ssh.stat_entry(name)? {
                // A directory holds no keys the server would read.
                Some(st) if st.is_dir() => Ok(()),
                Some(_) => ssh.remove_file(name),
                None => Ok(()),
            }
        }
    }
}
