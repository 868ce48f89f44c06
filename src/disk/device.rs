//! The only place that touches block devices: finding them through sysfs (never by parsing
//! names like `nvme0n1p3`), opening a disk or an image file, `flock` on the whole disk,
//! reading and writing whole sectors (`O_DIRECT` and an fsync after every write on block
//! devices), the size and sector-size ioctls, telling the kernel with
//! `BLKPG_RESIZE_PARTITION` (or `BLKRRPART` when nothing on the disk is mounted), and the
//! mount table.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::table::{Geometry, ReadAt, SectorWrite};
use crate::error::{Context, Error, Result};
use crate::sys;

const SYS_BLOCK: &str = "/sys/class/block";
const SYS_DEV_BLOCK: &str = "/sys/dev/block";

/// Major and minor number of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    /// Splits a `dev_t` as glibc's and musl's `major()`/`minor()` do.
    pub fn from_raw(dev: u64) -> DevNum {
        DevNum {
            major: (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)) as u32,
            minor: ((dev & 0xff) | ((dev >> 12) & !0xff)) as u32,
        }
    }

    fn to_raw(self) -> u64 {
        let (ma, mi) = (u64::from(self.major), u64::from(self.minor));
        (ma & 0xfff) << 8 | (ma & !0xfff) << 32 | (mi & 0xff) | (mi & !0xff) << 12
    }

    /// Parses `MAJ:MIN`.
    pub fn parse(text: &str) -> Option<DevNum> {
        let (ma, mi) = text.trim().split_once(':')?;
        Some(DevNum {
            major: ma.parse().ok()?,
            minor: mi.parse().ok()?,
        })
    }
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// A block device as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDev {
    /// The kernel's name (`sda1`, `nvme0n1p3`): used for messages and `/dev/NAME`, never
    /// parsed.
    pub name: String,
    /// Its sysfs directory (resolved).
    pub sys: PathBuf,
    pub dev: DevNum,
}

fn read_sys(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

impl BlockDev {
    /// The device with these numbers, through `/sys/dev/block/MAJ:MIN`.
    pub fn from_dev(dev: DevNum) -> Result<BlockDev> {
        let link = Path::new(SYS_DEV_BLOCK).join(dev.to_string());
        let sys = std::fs::canonicalize(&link).context("resolve", &link)?;
        BlockDev::at(sys)
    }

    fn at(sys: PathBuf) -> Result<BlockDev> {
        let dev = read_sys(&sys.join("dev"))
            .and_then(|t| DevNum::parse(&t))
            .ok_or_else(|| Error::Msg(format!("{} has no device number", sys.display())))?;
        let name = sys
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(BlockDev { name, sys, dev })
    }

    /// The partition number, when this is a partition.
    pub fn partition_number(&self) -> Option<u32> {
        read_sys(&self.sys.join("partition")).and_then(|t| t.parse().ok())
    }

    /// The disk a partition belongs to: its parent directory in sysfs.
    pub fn disk(&self) -> Result<BlockDev> {
        let parent = self
            .sys
            .parent()
            .ok_or_else(|| Error::Msg(format!("{} has no parent", self.name)))?;
        BlockDev::at(parent.to_path_buf())
    }

    /// What kind of stacked device this is, if it is one that is never grown.
    pub fn stacked_kind(&self) -> Option<&'static str> {
        if self.sys.join("dm").is_dir() {
            Some("a device-mapper device (LVM, LUKS or similar)")
        } else if self.sys.join("md").is_dir() {
            Some("a software RAID (md) device")
        } else if self.sys.join("loop").is_dir() {
            Some("a loop device")
        } else {
            None
        }
    }

    /// The partition with `number` on this disk, as the kernel knows it.
    pub fn partition(&self, number: u32) -> Option<BlockDev> {
        let entries = std::fs::read_dir(&self.sys).ok()?;
        entries
            .flatten()
            .filter_map(|e| BlockDev::at(e.path()).ok())
            .find(|d| d.partition_number() == Some(number))
    }

    /// Every partition of this disk the kernel knows.
    pub fn partitions(&self) -> Vec<BlockDev> {
        let Ok(entries) = std::fs::read_dir(&self.sys) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| BlockDev::at(e.path()).ok())
            .filter(|d| d.partition_number().is_some())
            .collect()
    }

    /// Its size in 512-byte units, as sysfs says (always 512-byte units).
    pub fn size_512(&self) -> Option<u64> {
        read_sys(&self.sys.join("size")).and_then(|t| t.parse().ok())
    }

    /// A path to its device node: `/dev/DEVNAME` when that is really this device, else a
    /// node made under `/run` (no udev links are relied on).
    pub fn node(&self) -> Result<PathBuf> {
        let devname = read_sys(&self.sys.join("uevent"))
            .and_then(|u| {
                u.lines()
                    .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
            })
            .unwrap_or_else(|| self.name.clone());
        let path = Path::new("/dev").join(devname);
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.file_type().is_block_device() && DevNum::from_raw(meta.rdev()) == self.dev {
                return Ok(path);
            }
        }
        let made = PathBuf::from(format!(
            "/run/google_disk_expand.{}-{}",
            self.dev.major, self.dev.minor
        ));
        let _ = std::fs::remove_file(&made);
        let c = std::ffi::CString::new(made.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Msg("bad node path".into()))?;
        sys::mknod_block(&c, 0o600, self.dev.to_raw()).context("make a device node", &made)?;
        Ok(made)
    }

    /// Every block device in sysfs.
    pub fn all() -> Vec<BlockDev> {
        let Ok(entries) = std::fs::read_dir(SYS_BLOCK) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::canonicalize(e.path()).ok())
            .filter_map(|p| BlockDev::at(p).ok())
            .collect()
    }
}

/// A zeroed buffer whose bytes start at a multiple of [`ALIGN`], for `O_DIRECT`: a
/// vector [`ALIGN`] bytes longer than needed, used from its first aligned byte.
struct Aligned {
    bytes: Vec<u8>,
    at: usize,
    len: usize,
}

const ALIGN: usize = 4096;

impl Aligned {
    fn new(len: usize) -> Result<Aligned> {
        let len = len.max(ALIGN);
        let bytes = vec![0u8; len + ALIGN];
        let at = bytes.as_ptr().align_offset(ALIGN);
        if at >= ALIGN {
            return Err(Error::Msg("cannot align an O_DIRECT buffer".into()));
        }
        Ok(Aligned { bytes, at, len })
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.at..self.at + self.len]
    }
}

/// An open disk (block device) or image file.
pub struct Disk {
    pub path: PathBuf,
    file: File,
    /// Set for a block device.
    pub block: Option<BlockDev>,
    pub geometry: Geometry,
    direct: bool,
}

impl Disk {
    /// Opens a whole disk or an image file for reading and writing. For an image file,
    /// `sector_size` is the logical sector size to assume (512 when `None`).
    pub fn open(path: &Path, sector_size: Option<u32>) -> Result<Disk> {
        Disk::open_with(path, sector_size, true)
    }

    /// Opens a whole disk or an image file for reading only (looking for a PARTUUID).
    pub fn open_read_only(path: &Path) -> Result<Disk> {
        Disk::open_with(path, None, false)
    }

    fn open_with(path: &Path, sector_size: Option<u32>, writable: bool) -> Result<Disk> {
        let meta = std::fs::metadata(path).context("stat", path)?;
        if meta.file_type().is_block_device() {
            let block = BlockDev::from_dev(DevNum::from_raw(meta.rdev()))?;
            if block.partition_number().is_some() {
                return Err(Error::Usage(format!(
                    "{} is a partition; give the whole disk and --partition N",
                    path.display()
                )));
            }
            let file = sys::open_direct(path, writable).context("open", path)?;
            let size_bytes =
                sys::block_device_bytes(file.as_fd()).context("get the size of", path)?;
            let sector_size =
                sys::logical_sector_size(file.as_fd()).context("get the sector size of", path)?;
            Ok(Disk {
                path: path.to_path_buf(),
                file,
                block: Some(block),
                geometry: Geometry {
                    size_bytes,
                    sector_size,
                },
                direct: true,
            })
        } else if meta.is_file() {
            let file = OpenOptions::new()
                .read(true)
                .write(writable)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .context("open", path)?;
            Ok(Disk {
                path: path.to_path_buf(),
                file,
                block: None,
                geometry: Geometry {
                    size_bytes: meta.len(),
                    sector_size: sector_size.unwrap_or(512),
                },
                direct: false,
            })
        } else {
            Err(Error::Usage(format!(
                "{} is neither a block device nor a regular file",
                path.display()
            )))
        }
    }

    /// Takes `flock(LOCK_EX)` on the whole disk (what udev and systemd check before probing
    /// or repartitioning), waiting up to `timeout`. Released when the disk is closed.
    pub fn lock(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let e = match sys::flock_exclusive_nonblocking(self.file.as_fd()) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::io("lock", &self.path, e));
            }
            if Instant::now() >= deadline {
                return Err(Error::Locked {
                    path: self.path.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn span(&self, offset: u64, len: usize) -> (u64, usize) {
        let unit = u64::from(self.geometry.sector_size);
        let start = offset - offset % unit;
        let end = (offset + len as u64).div_ceil(unit) * unit;
        (start, (end - start) as usize)
    }

    /// Writes whole sectors and flushes them to the disk before returning.
    pub fn write(&self, w: &SectorWrite) -> Result<()> {
        let unit = u64::from(self.geometry.sector_size);
        if !w.offset.is_multiple_of(unit) || !(w.bytes.len() as u64).is_multiple_of(unit) {
            return Err(Error::Msg(format!("unaligned write of the {}", w.what)));
        }
        let result = if self.direct {
            let mut buf = Aligned::new(w.bytes.len())?;
            buf.as_mut()[..w.bytes.len()].copy_from_slice(&w.bytes);
            self.file
                .write_all_at(&buf.as_mut()[..w.bytes.len()], w.offset)
        } else {
            self.file.write_all_at(&w.bytes, w.offset)
        };
        result
            .and_then(|_| self.file.sync_all())
            .context("write the partition table to", &self.path)
    }

    /// Tells the kernel partition `number` now spans `length` bytes from `start`
    /// (`BLKPG_RESIZE_PARTITION`, which works while the partition is mounted).
    pub fn resize_partition(&self, number: u32, start: u64, length: u64) -> io::Result<()> {
        sys::blkpg_resize_partition(self.file.as_fd(), number, start, length)
    }

    /// Asks the kernel to re-read the whole table (`BLKRRPART`); fails while any partition
    /// of the disk is in use.
    pub fn reread(&self) -> io::Result<()> {
        sys::reread_partition_table(self.file.as_fd())
    }
}

impl ReadAt for Disk {
    fn read_at(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        if offset.checked_add(len as u64)? > self.geometry.size_bytes {
            return None;
        }
        if !self.direct {
            let mut out = vec![0; len];
            self.file.read_exact_at(&mut out, offset).ok()?;
            return Some(out);
        }
        let (start, span) = self.span(offset, len);
        let mut buf = Aligned::new(span).ok()?;
        self.file
            .read_exact_at(&mut buf.as_mut()[..span], start)
            .ok()?;
        let skip = (offset - start) as usize;
        Some(buf.as_mut()[skip..skip + len].to_vec())
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub dev: DevNum,
    /// The path inside the file system that is mounted (`/` for a whole one).
    pub root: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(Mount {
                dev: DevNum::parse(fields.get(2)?)?,
                root: unescape(fields.get(3)?),
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                fs_type: fields.get(dash + 1)?.to_string(),
            })
        })
        .collect()
}

/// The current mount table (empty when it cannot be read).
pub fn mounts() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// Reads the first `len` bytes of a partition (for its file-system superblock).
pub fn read_start(node: &Path, len: usize) -> Result<Vec<u8>> {
    let file = File::open(node).context("open", node)?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, 0).context("read", node)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_round_trip_like_libc() {
        for (major, minor) in [(8, 1), (259, 3), (7, 0), (4095, 1 << 19)] {
            let d = DevNum { major, minor };
            assert_eq!(DevNum::from_raw(d.to_raw()), d);
        }
        assert_eq!(DevNum::from_raw(0x0801), DevNum { major: 8, minor: 1 });
    }

    #[test]
    fn mountinfo_lines_are_split_with_escapes() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    30 22 7:2 /sub /mnt/a\\040b rw - xfs /dev/loop2p1 rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, DevNum { major: 8, minor: 1 });
        assert_eq!(m[0].fs_type, "ext4");
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/a b"));
        assert_eq!(m[1].root, "/sub");
    }
}
