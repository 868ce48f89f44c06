//! Growing the file system on the grown partition: recognising ext2/3/4 and xfs from their
//! superblocks (pure), then `EXT4_IOC_RESIZE_FS` or `XFS_IOC_FSGROWFSDATA` on the mounted
//! file system; `resize2fs` / `xfs_growfs` only when the kernel lacks the ioctl (ENOTTY).
//! An unmounted ext file system is grown offline with `e2fsck` + `resize2fs` only when the
//! caller asks; otherwise it waits for a run after it is mounted.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::error::{Context, Error, Result};
use crate::exec;
use crate::sys;

const EXT_SUPERBLOCK: usize = 1024;
const EXT_MAGIC: u16 = 0xEF53;
const EXT_INCOMPAT_64BIT: u32 = 0x80;
/// Bytes to read from the start of a partition to identify its file system.
pub const PROBE_BYTES: usize = 4096;

/// How long an external fallback tool may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(600);

/// The file systems this grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    Ext,
    Xfs,
}

/// What a superblock says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    pub kind: FsKind,
    pub uuid: String,
    pub label: String,
    pub block_size: u64,
    pub blocks: u64,
}

fn be_uuid(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{:02x}", x)).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Identifies ext2/3/4 or xfs from the first [`PROBE_BYTES`] of a partition.
pub fn identify(start: &[u8]) -> Option<FsInfo> {
    if start.len() < PROBE_BYTES {
        return None;
    }
    if &start[..4] == b"XFSB" {
        let be32 = |at: usize| {
            u32::from_be_bytes([start[at], start[at + 1], start[at + 2], start[at + 3]])
        };
        let mut d = [0u8; 8];
        d.copy_from_slice(&start[8..16]);
        return Some(FsInfo {
            kind: FsKind::Xfs,
            uuid: be_uuid(&start[32..48]),
            label: text(&start[108..120]),
            block_size: u64::from(be32(4)),
            blocks: u64::from_be_bytes(d),
        });
    }
    let sb = &start[EXT_SUPERBLOCK..EXT_SUPERBLOCK + 1024];
    let le32 = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    if u16::from_le_bytes([sb[56], sb[57]]) != EXT_MAGIC {
        return None;
    }
    let log_block = le32(24);
    if log_block > 6 {
        return None;
    }
    let hi = if le32(0x60) & EXT_INCOMPAT_64BIT != 0 {
        u64::from(le32(0x150))
    } else {
        0
    };
    Some(FsInfo {
        kind: FsKind::Ext,
        uuid: be_uuid(&sb[0x68..0x78]),
        label: text(&sb[0x78..0x88]),
        block_size: 1024 << log_block,
        blocks: hi << 32 | u64::from(le32(4)),
    })
}

/// How the file-system step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsOutcome {
    /// Grown from and to this many bytes.
    Grown { from: u64, to: u64 },
    /// It already fills the partition.
    AlreadyFull,
    /// Not mounted: it is grown by a run after it is mounted.
    Deferred,
    /// Not grown, and why (EPERM, unknown file system): one log line.
    NotGrown(String),
}

/// Where the file system is.
pub struct FsTarget<'a> {
    /// The partition's device node.
    pub node: &'a Path,
    /// The partition's size in bytes (as the kernel now has it).
    pub partition_bytes: u64,
    /// Where it is mounted, if it is.
    pub mount_point: Option<&'a Path>,
    /// Grow an unmounted ext file system offline (`e2fsck -f -p`, `resize2fs`).
    pub offline: bool,
}

fn run_tool(program: &str, args: &[&str], ok_codes: &[i32]) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = exec::run(cmd, TOOL_TIMEOUT)?;
    if ok_codes.contains(&out.outcome.shell_status()) {
        Ok(())
    } else {
        Err(Error::Command {
            program: program.to_string(),
            detail: format!("failed: {}", out.text().trim()),
        })
    }
}

fn not_permitted(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

/// Grows the file system on `target` to fill its partition.
pub fn grow(target: &FsTarget) -> Result<FsOutcome> {
    let start = super::device::read_start(target.node, PROBE_BYTES)?;
    let Some(info) = identify(&start) else {
        return Ok(FsOutcome::NotGrown(format!(
            "no ext2/3/4 or xfs file system on {}",
            target.node.display()
        )));
    };
    let node = target.node.to_string_lossy().into_owned();
    match (info.kind, target.mount_point) {
        (FsKind::Ext, Some(dir)) => grow_ext_online(&info, target.partition_bytes, dir, &node),
        (FsKind::Xfs, Some(dir)) => grow_xfs_online(target.partition_bytes, dir),
        (FsKind::Ext, None) => {
            let want = target.partition_bytes / info.block_size;
            if want <= info.blocks {
                Ok(FsOutcome::AlreadyFull)
            } else if target.offline {
                run_tool("e2fsck", &["-f", "-p", &node], &[0, 1])?;
                run_tool("resize2fs", &[&node], &[0])?;
                Ok(FsOutcome::Grown {
                    from: info.blocks * info.block_size,
                    to: want * info.block_size,
                })
            } else {
                Ok(FsOutcome::Deferred)
            }
        }
        (FsKind::Xfs, None) => {
            let want = target.partition_bytes / info.block_size;
            Ok(if want <= info.blocks {
                FsOutcome::AlreadyFull
            } else {
                FsOutcome::Deferred
            })
        }
    }
}

fn grow_ext_online(
    info: &FsInfo,
    partition_bytes: u64,
    dir: &Path,
    node: &str,
) -> Result<FsOutcome> {
    let want = partition_bytes / info.block_size;
    if want <= info.blocks {
        return Ok(FsOutcome::AlreadyFull);
    }
    let file = File::open(dir).context("open", dir)?;
    match sys::ext4_resize_fs(file.as_fd(), want) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
            run_tool("resize2fs", &[node], &[0])?;
        }
        Err(e) if not_permitted(&e) => {
            return Ok(FsOutcome::NotGrown(format!(
                "file system not grown: the kernel refused the online ext4 resize of {} ({}; it needs CAP_SYS_RESOURCE)",
                dir.display(),
                e
            )))
        }
        Err(e) => return Err(Error::io("grow the ext4 file system on", dir, e)),
    }
    Ok(FsOutcome::Grown {
        from: info.blocks * info.block_size,
        to: want * info.block_size,
    })
}

fn grow_xfs_online(partition_bytes: u64, dir: &Path) -> Result<FsOutcome> {
    let file = File::open(dir).context("open", dir)?;
    let geometry = match sys::xfs_geometry_v1(file.as_fd()) {
        Ok(geometry) => geometry,
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
            run_tool("xfs_growfs", &["-d", &dir.to_string_lossy()], &[0])?;
            return Ok(FsOutcome::Grown {
                from: 0,
                to: partition_bytes,
            });
        }
        Err(e) => return Err(Error::io("read the xfs geometry of", dir, e)),
    };
    let le32 = |at: usize| {
        u32::from_ne_bytes([
            geometry[at],
            geometry[at + 1],
            geometry[at + 2],
            geometry[at + 3],
        ])
    };
    let block_size = u64::from(le32(0));
    let imaxpct = le32(28);
    let mut d = [0u8; 8];
    d.copy_from_slice(&geometry[32..40]);
    let blocks = u64::from_ne_bytes(d);
    if block_size == 0 {
        return Err(Error::Msg(format!(
            "xfs on {} reports a zero block size",
            dir.display()
        )));
    }
    let want = partition_bytes / block_size;
    if want <= blocks {
        return Ok(FsOutcome::AlreadyFull);
    }
    match sys::xfs_grow_data(file.as_fd(), want, imaxpct) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
            run_tool("xfs_growfs", &["-d", &dir.to_string_lossy()], &[0])?;
        }
        Err(e) if not_permitted(&e) => {
            return Ok(FsOutcome::NotGrown(format!(
                "file system not grown: the kernel refused the online xfs grow of {} ({})",
                dir.display(),
                e
            )))
        }
        Err(e) => return Err(Error::io("grow the xfs file system on", dir, e)),
    }
    Ok(FsOutcome::Grown {
        from: blocks * block_size,
        to: want * block_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_and_xfs_superblocks_are_recognised() {
        let mut ext = vec![0u8; PROBE_BYTES];
        let sb = EXT_SUPERBLOCK;
        ext[sb + 4..sb + 8].copy_from_slice(&262_144u32.to_le_bytes());
        ext[sb + 24..sb + 28].copy_from_slice(&2u32.to_le_bytes());
        ext[sb + 56..sb + 58].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        ext[sb + 0x68..sb + 0x78].copy_from_slice(&[0x11; 16]);
        ext[sb + 0x78..sb + 0x7c].copy_from_slice(b"root");
        let info = identify(&ext).expect("ext");
        assert_eq!(info.kind, FsKind::Ext);
        assert_eq!(info.block_size, 4096);
        assert_eq!(info.blocks, 262_144);
        assert_eq!(info.label, "root");
        assert_eq!(info.uuid, "11111111-1111-1111-1111-111111111111");

        let mut xfs = vec![0u8; PROBE_BYTES];
        xfs[..4].copy_from_slice(b"XFSB");
        xfs[4..8].copy_from_slice(&4096u32.to_be_bytes());
        xfs[8..16].copy_from_slice(&1000u64.to_be_bytes());
        let info = identify(&xfs).expect("xfs");
        assert_eq!(
            (info.kind, info.blocks, info.block_size),
            (FsKind::Xfs, 1000, 4096)
        );

        assert_eq!(identify(&vec![0u8; PROBE_BYTES]), None);
        assert_eq!(identify(&[0u8; 10]), None);
    }
}
