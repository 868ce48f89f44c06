//! Compute Engine disk names without udev's helper programs: the device name GCE writes
//! into the vendor-specific area of an NVMe Identify Namespace page (what nvme-cli's
//! `google_nvme_id` reads), the SCSI unit serial (VPD page 0x80, what `scsi_id` reads), the
//! virtio-blk serial, the local-SSD numbering, and the `/dev/disk/by-id/google-*` links
//! made from them (for mdev on busybox images).
//!
//! Parsing and planning are pure functions over bytes; the NVMe admin ioctl (through
//! `sys`), the sysfs reads and the link changes are the thin I/O at the end of this file.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::Context;
use crate::sys;
use crate::{Error, Result};

/// Bytes of an Identify data structure.
pub const IDENTIFY_LEN: usize = 4096;
/// Where the vendor-specific area of Identify Namespace starts (bytes 384..4095).
pub const VENDOR_AREA_OFFSET: usize = 384;
/// The directory the links are made in, under the device directory.
pub const BY_ID_DIR: &str = "disk/by-id";
/// The controller model of NVMe local SSDs.
pub const LOCAL_SSD_MODEL: &str = "nvme_card";
/// The longest device name accepted (GCE names are at most 63 characters).
const MAX_NAME_LEN: usize = 128;

/// What a Compute Engine disk is called, and of which kind it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskName {
    /// A persistent disk (SCSI, virtio or NVMe): the device name given at attach time.
    Persistent(String),
    /// A local NVMe SSD: `local-nvme-ssd-N`.
    LocalSsd(String),
}

impl DiskName {
    /// The short name (`ID_SERIAL_SHORT`, the link's suffix).
    pub fn short(&self) -> &str {
        match self {
            DiskName::Persistent(s) | DiskName::LocalSsd(s) => s,
        }
    }

    /// The properties `udev` imports (`IMPORT{program}`), one `KEY=value` a line.
    pub fn udev_properties(&self) -> String {
        let kind = match self {
            DiskName::Persistent(_) => "Google_PersistentDisk_",
            DiskName::LocalSsd(_) => "Google_EphemeralDisk_",
        };
        format!(
            "ID_SERIAL_SHORT={}\nID_SERIAL={}{}\n",
            self.short(),
            kind,
            self.short()
        )
    }
}

/// Whether `name` is safe as a link name and is what GCE gives: `[A-Za-z0-9_-]`, not empty.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The device name in an Identify Namespace page: the vendor area holds a JSON object
/// (NUL-padded) whose `device_name` is the disk's name. `None` when the area is empty, is
/// not such an object, or the name has characters a link must not have.
pub fn device_name_from_identify(page: &[u8]) -> Option<String> {
    let area = page.get(VENDOR_AREA_OFFSET..)?;
    let end = area.iter().position(|&b| b == 0).unwrap_or(area.len());
    let text = std::str::from_utf8(&area[..end]).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    let name = match crate::json::parse_json(text) {
        Ok(tinyjson::JsonValue::Object(map)) => match map.get("device_name") {
            Some(tinyjson::JsonValue::String(s)) => s.clone(),
            _ => return None,
        },
        // Not valid JSON: the key is still found the way the original script found it.
        _ => scan_device_name(text)?,
    };
    is_valid_name(&name).then_some(name)
}

/// Finds `"device_name":"VALUE"` in text that is not valid JSON.
fn scan_device_name(text: &str) -> Option<String> {
    const KEY: &str = "\"device_name\":\"";
    let start = text.find(KEY)? + KEY.len();
    let rest = &text[start..];
    let len = rest
        .bytes()
        .take_while(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        .count();
    (rest.as_bytes().get(len) == Some(&b'"')).then(|| rest[..len].to_string())
}

/// The unit serial number in a SCSI VPD page 0x80 (as sysfs `vpd_pg80` gives it): byte 1
/// is the page code, bytes 2-3 the big-endian length, the serial follows, space-padded.
pub fn scsi_serial(vpd80: &[u8]) -> Option<String> {
    if vpd80.len() < 4 || vpd80[1] != 0x80 {
        return None;
    }
    let len = u16::from_be_bytes([vpd80[2], vpd80[3]]) as usize;
    let serial = vpd80.get(4..4 + len)?;
    clean_serial(serial)
}

/// A virtio-blk serial (sysfs `serial`), NUL- or space-padded.
pub fn virtio_serial(text: &[u8]) -> Option<String> {
    clean_serial(text)
}

fn clean_serial(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = std::str::from_utf8(&bytes[..end]).ok()?.trim();
    is_valid_name(text).then(|| text.to_string())
}

/// The name of a local NVMe SSD from its namespace id (1-based): `local-nvme-ssd-0` for the
/// first.
pub fn local_ssd_name(nsid: u32) -> Option<String> {
    nsid.checked_sub(1).map(|n| format!("local-nvme-ssd-{}", n))
}

/// The link's file name: `google-NAME` for a disk, `google-NAME-partN` for a partition.
pub fn link_name(short: &str, partition: Option<u32>) -> String {
    match partition {
        Some(n) => format!("google-{}-part{}", short, n),
        None => format!("google-{}", short),
    }
}

/// One change under `/dev/disk/by-id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    /// Make (or replace) `link` pointing at `target`.
    Create { link: String, target: String },
    /// Remove `link` if it still points at `target`.
    Remove { link: String, target: String },
}

/// What an mdev event means for the links: `add`/`change` makes the device's link, `remove`
/// takes it away; a device without a Compute Engine name has none.
pub fn plan_links(
    action: &str,
    dev: &str,
    name: Option<&DiskName>,
    partition: Option<u32>,
) -> Vec<LinkChange> {
    let Some(name) = name else {
        return Vec::new();
    };
    let link = link_name(name.short(), partition);
    let target = format!("../../{}", dev);
    match action {
        "add" | "change" | "" => vec![LinkChange::Create { link, target }],
        "remove" => vec![LinkChange::Remove { link, target }],
        _ => Vec::new(),
    }
}

// ---- I/O ----

/// Admin opcode Identify.
const NVME_ADMIN_IDENTIFY: u8 = 0x06;
/// CNS 0: Identify Namespace.
const NVME_CNS_NAMESPACE: u32 = 0;

/// The Identify Namespace page of an NVMe namespace block device, by the admin ioctl. A
/// regular file is read as a captured page instead (`nvme id-ns -b` output).
pub fn identify_namespace(dev: &Path) -> Result<Vec<u8>> {
    let mut file = File::open(dev).context("open", dev)?;
    let meta = file.metadata().context("stat", dev)?;
    if meta.is_file() {
        let mut page = Vec::with_capacity(IDENTIFY_LEN);
        (&mut file)
            .take(IDENTIFY_LEN as u64)
            .read_to_end(&mut page)
            .context("read", dev)?;
        return Ok(page);
    }
    if !meta.file_type().is_block_device() {
        return Err(Error::Msg(format!(
            "{} is not a block device",
            dev.display()
        )));
    }
    let nsid = sys::nvme_namespace_id(file.as_fd()).context("get the NVMe namespace id of", dev)?;
    let mut page = vec![0u8; IDENTIFY_LEN];
    sys::nvme_admin_read(
        file.as_fd(),
        NVME_ADMIN_IDENTIFY,
        nsid,
        NVME_CNS_NAMESPACE,
        &mut page,
    )
    .context("identify the NVMe namespace", dev)?;
    Ok(page)
}

/// A block device as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDevice {
    /// Its kernel name (`sda1`).
    pub name: String,
    /// The whole disk it is on (itself for a disk).
    pub disk: String,
    /// Its partition number, for a partition.
    pub partition: Option<u32>,
}

fn read_small(path: &Path) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|f| f.take(IDENTIFY_LEN as u64).read_to_end(&mut buf))
        .ok()?;
    Some(buf)
}

/// Finds `name` under `SYS/class/block`: a partition has a `partition` file and its disk
/// is the parent directory of its device directory.
pub fn block_device(sys: &Path, name: &str) -> Result<BlockDevice> {
    let dir = sys.join("class/block").join(name);
    let real = dir.canonicalize().context("find", &dir)?;
    let partition = read_small(&real.join("partition"))
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.trim().parse::<u32>().ok());
    let disk = match partition {
        Some(_) => real
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Msg(format!("no disk above {}", real.display())))?,
        None => name.to_string(),
    };
    Ok(BlockDevice {
        name: name.to_string(),
        disk,
        partition,
    })
}

/// The Compute Engine name of a whole disk: the SCSI unit serial, the virtio serial, the
/// local-SSD number (controller model `nvme_card`) or the NVMe vendor area (identified
/// through `DEV/disk`). `None` for a disk that has none (a loop device, a foreign disk).
pub fn disk_name(sys: &Path, dev: &Path, disk: &str) -> Result<Option<DiskName>> {
    let dir = sys.join("class/block").join(disk);
    if let Some(page) = read_small(&dir.join("device/vpd_pg80")) {
        return Ok(scsi_serial(&page).map(DiskName::Persistent));
    }
    if let Some(serial) = read_small(&dir.join("serial")) {
        return Ok(virtio_serial(&serial).map(DiskName::Persistent));
    }
    if !disk.starts_with("nvme") {
        return Ok(None);
    }
    let model = read_small(&dir.join("device/model"))
        .map(|m| String::from_utf8_lossy(&m).trim().to_string())
        .unwrap_or_default();
    if model == LOCAL_SSD_MODEL {
        let nsid = read_small(&dir.join("nsid"))
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse::<u32>().ok());
        return Ok(nsid.and_then(local_ssd_name).map(DiskName::LocalSsd));
    }
    let page = identify_namespace(&dev.join(disk))?;
    Ok(device_name_from_identify(&page).map(DiskName::Persistent))
}

/// Applies link changes under `DEV/disk/by-id`; each change is said on stdout.
pub fn apply_links(dev: &Path, changes: &[LinkChange]) -> Result<()> {
    let dir = dev.join(BY_ID_DIR);
    for change in changes {
        match change {
            LinkChange::Create { link, target } => {
                std::fs::create_dir_all(&dir).context("create", &dir)?;
                let path = dir.join(link);
                if std::fs::read_link(&path).ok() == Some(PathBuf::from(target)) {
                    continue;
                }
                let tmp = dir.join(format!(".{}.tmp", link));
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(target, &tmp).context("create link", &tmp)?;
                std::fs::rename(&tmp, &path).context("rename", &path)?;
                println!("{} -> {}", path.display(), target);
            }
            LinkChange::Remove { link, target } => {
                let path = dir.join(link);
                if std::fs::read_link(&path).ok() == Some(PathBuf::from(target)) {
                    std::fs::remove_file(&path).context("remove", &path)?;
                    println!("removed {}", path.display());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Identify Namespace page as a PD-NVMe disk returns it: size fields at the start,
    /// the JSON GCE writes at byte 384, NUL padding after it.
    fn identify_page(vendor: &[u8]) -> Vec<u8> {
        let mut page = vec![0u8; IDENTIFY_LEN];
        page[0..8].copy_from_slice(&20_971_520u64.to_le_bytes()); // nsze: 10 GiB of 512 B
        page[8..16].copy_from_slice(&20_971_520u64.to_le_bytes()); // ncap
        page[VENDOR_AREA_OFFSET..VENDOR_AREA_OFFSET + vendor.len()].copy_from_slice(vendor);
        page
    }

    #[test]
    fn the_device_name_is_read_from_the_vendor_area() {
        let page = identify_page(
            br#"{"device_name":"persistent-disk-0","disk_type":"PERSISTENT","gce_id":"1234"}"#,
        );
        assert_eq!(
            device_name_from_identify(&page).as_deref(),
            Some("persistent-disk-0")
        );
    }

    #[test]
    fn json_that_does_not_parse_is_scanned_like_the_original_script() {
        let page = identify_page(br#"{"device_name":"data_1","broken": }"#);
        assert_eq!(device_name_from_identify(&page).as_deref(), Some("data_1"));
    }

    #[test]
    fn an_empty_or_foreign_vendor_area_gives_no_name() {
        assert_eq!(device_name_from_identify(&identify_page(b"")), None);
        assert_eq!(device_name_from_identify(&identify_page(b"   ")), None);
        assert_eq!(
            device_name_from_identify(&identify_page(b"{\"x\":1}")),
            None
        );
        assert_eq!(
            device_name_from_identify(&identify_page(&[0xff, 0xfe])),
            None
        );
        assert_eq!(device_name_from_identify(&[0u8; 100]), None);
    }

    #[test]
    fn names_that_could_escape_the_link_directory_are_refused() {
        for bad in [r#"{"device_name":"../../etc"}"#, r#"{"device_name":"a/b"}"#] {
            assert_eq!(
                device_name_from_identify(&identify_page(bad.as_bytes())),
                None
            );
        }
        assert!(!is_valid_name(&"a".repeat(129)));
        assert!(is_valid_name("Disk_1-x"));
    }

    #[test]
    fn the_scsi_serial_comes_from_vpd_page_0x80() {
        let mut page = vec![0x00, 0x80, 0x00, 20];
        page.extend_from_slice(b"persistent-disk-1   ");
        assert_eq!(scsi_serial(&page).as_deref(), Some("persistent-disk-1"));
        page[1] = 0x83;
        assert_eq!(scsi_serial(&page), None);
        assert_eq!(scsi_serial(&[0, 0x80, 0, 30, b'a']), None);
    }

    #[test]
    fn udev_properties_match_the_original_helpers() {
        let pd = DiskName::Persistent("boot".into());
        assert_eq!(
            pd.udev_properties(),
            "ID_SERIAL_SHORT=boot\nID_SERIAL=Google_PersistentDisk_boot\n"
        );
        let ssd = DiskName::LocalSsd(local_ssd_name(2).unwrap_or_default());
        assert_eq!(
            ssd.udev_properties(),
            "ID_SERIAL_SHORT=local-nvme-ssd-1\nID_SERIAL=Google_EphemeralDisk_local-nvme-ssd-1\n"
        );
        assert_eq!(local_ssd_name(0), None);
    }

    #[test]
    fn a_non_block_non_file_device_is_refused() {
        let err = identify_namespace(Path::new("/dev/null")).err();
        assert!(err.is_some_and(|e| e.to_string().contains("not a block device")));
    }

    #[test]
    fn links_are_planned_per_action() {
        let name = DiskName::Persistent("data".into());
        assert_eq!(
            plan_links("add", "nvme0n2p3", Some(&name), Some(3)),
            vec![LinkChange::Create {
                link: "google-data-part3".into(),
                target: "../../nvme0n2p3".into()
            }]
        );
        assert_eq!(
            plan_links("remove", "sdb", Some(&name), None),
            vec![LinkChange::Remove {
                link: "google-data".into(),
                target: "../../sdb".into()
            }]
        );
        assert!(plan_links("add", "loop0", None, None).is_empty());
        assert!(plan_links("bind", "sdb", Some(&name), None).is_empty());
    }
}
