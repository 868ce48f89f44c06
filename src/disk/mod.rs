//! Root disk expansion: finds the root partition and its disk through sysfs,
//! plans growing it with the pure table readers ([`gpt`], [`mbr`], [`table`]), applies the
//! plan under `flock` on the whole disk ([`device`], the only block-device I/O), tells the
//! kernel, then grows the file system ([`grow_fs`]) — always, also when the partition had
//! already been grown, so a crash between the two steps is finished by the next run.
//!
//! Automatic runs (no `--device`) keep per-boot markers under `/run/google_disk_expand/`:
//! `partition` once the partition step is settled, `done` once the file system is too; a
//! second run in the same boot says so and does nothing.

pub(crate) mod crc32;
pub(crate) mod device;
pub(crate) mod gpt;
pub(crate) mod grow_fs;
pub(crate) mod mbr;
pub mod table;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Context, Error, Result};
use crate::settings::SetupSettings;
use device::{BlockDev, DevNum, Disk};
use grow_fs::FsOutcome;
use table::{Decision, ReadAt, MIB};

/// Which partition to grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The root file system's partition (or the kernel command line's `root=`).
    Root,
    /// A disk (block device or image file) and a partition number.
    Explicit { device: PathBuf, partition: u32 },
}

/// One run's request.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub target: Target,
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// Only the partition step (initramfs, before the root is mounted).
    pub partition_only: bool,
    /// Grow an unmounted ext file system offline with e2fsck + resize2fs.
    pub offline_fs: bool,
    /// Logical sector size of an image file.
    pub sector_size: Option<u32>,
}

/// Where automatic runs leave their per-boot markers.
pub(crate) const MARKER_DIR: &str = "/run/google_disk_expand";
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// Test hook (the only place it is read; only in builds with the `test-hooks` feature):
/// `after-table` makes the process SIGKILL itself right after the table is written, before
/// the kernel is told and the file system grown.
#[cfg(feature = "test-hooks")]
const TEST_KILL_ENV: &str = "GCE_GUEST_TEST_DISK_EXPAND_KILL";

/// What was done, for the exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Done, or nothing to do.
    Done,
    /// Left alone on purpose (stacked root, partition not last, doubtful table): logged.
    Refused,
}

fn marker(name: &str) -> PathBuf {
    Path::new(MARKER_DIR).join(name)
}

fn set_marker(name: &str) {
    let _ = std::fs::create_dir_all(MARKER_DIR);
    if let Err(e) = std::fs::write(marker(name), b"") {
        warn!("cannot write the marker {}: {}", marker(name).display(), e);
    }
}

/// The partition to grow: its disk's device node (or image file) and its number.
struct Located {
    disk_node: PathBuf,
    number: u32,
}

/// Runs one request.
pub(crate) fn run(req: &Request, settings: &SetupSettings) -> Result<Status> {
    let automatic = req.target == Target::Root;
    if automatic
        && !req.dry_run
        && (marker("done").exists() || (req.partition_only && marker("partition").exists()))
    {
        info!(
            "already ran in this boot (marker under {}): nothing to do",
            MARKER_DIR
        );
        return Ok(Status::Done);
    }
    let located = match &req.target {
        Target::Explicit { device, partition } => Located {
            disk_node: device.clone(),
            number: *partition,
        },
        Target::Root => match locate_root()? {
            Ok(l) => l,
            Err(why) => {
                info!("root disk not expanded: {}", why);
                if !req.dry_run {
                    set_marker("partition");
                    set_marker("done");
                }
                return Ok(Status::Refused);
            }
        },
    };
    let skip_partition = automatic && !req.dry_run && marker("partition").exists();
    let disk = Disk::open(&located.disk_node, req.sector_size)?;
    if skip_partition {
        info!("partition step already done in this boot");
    } else if !partition_step(&disk, located.number, req, settings)? {
        if automatic && !req.dry_run {
            set_marker("partition");
            set_marker("done");
        }
        return Ok(Status::Refused);
    }
    if automatic && !req.dry_run {
        set_marker("partition");
    }
    if req.partition_only {
        return Ok(Status::Done);
    }
    if req.dry_run {
        println!(
            "then: grow the file system on partition {} to fill it",
            located.number
        );
        return Ok(Status::Done);
    }
    let fs_done = fs_step(&disk, located.number, req)?;
    if automatic && fs_done {
        set_marker("done");
    }
    Ok(Status::Done)
}

/// Plans and applies the partition step; `false` when the disk is left alone on purpose.
fn partition_step(
    disk: &Disk,
    number: u32,
    req: &Request,
    settings: &SetupSettings,
) -> Result<bool> {
    if !req.dry_run {
        disk.lock(LOCK_TIMEOUT)?;
    }
    let decision = match table::plan_grow(
        disk as &dyn ReadAt,
        disk.geometry,
        number,
        settings.disk_expand_min_mib.saturating_mul(MIB),
    ) {
        Ok(d) => d,
        Err(why) => {
            warn!("{} not changed: {}", disk.path.display(), why);
            if req.dry_run {
                println!("no change: {}", why);
            }
            return Ok(false);
        }
    };
    if req.dry_run {
        println!(
            "{}: {} bytes",
            disk.path.display(),
            disk.geometry.size_bytes
        );
        for line in decision.describe() {
            println!("{}", line);
        }
        return Ok(true);
    }
    if let Some(growth) = &decision.growth {
        for w in &growth.warnings {
            warn!("{}", w);
        }
        for w in &growth.writes {
            disk.write(w)?;
        }
        info!(
            "grew partition {} of {} from {} MiB to {} MiB ({} table)",
            number,
            disk.path.display(),
            decision.partition.sectors() * u64::from(decision.sector_size) / MIB,
            decision.final_bytes() / MIB,
            decision.label.name()
        );
        test_hook_after_table();
    } else {
        info!(
            "partition {} of {}: {}",
            number,
            disk.path.display(),
            decision.reason
        );
    }
    tell_kernel(disk, &decision)?;
    Ok(true)
}

#[cfg(feature = "test-hooks")]
fn test_hook_after_table() {
    if std::env::var(TEST_KILL_ENV).as_deref() == Ok("after-table") {
        crate::sys::kill_self(libc::SIGKILL);
    }
}

#[cfg(not(feature = "test-hooks"))]
fn test_hook_after_table() {}

/// Makes the kernel's idea of the partition match the table (also after a crash between
/// the table write and this step): `BLKPG_RESIZE_PARTITION`, checked in sysfs; `BLKRRPART`
/// only when the kernel does not know the partition and nothing on the disk is mounted.
fn tell_kernel(disk: &Disk, decision: &Decision) -> Result<()> {
    let Some(block) = &disk.block else {
        return Ok(());
    };
    let start = decision.start_bytes();
    let length = decision.final_bytes();
    let number = decision.partition.number;
    let want_512 = length / 512;
    match block.partition(number) {
        Some(part) if part.size_512() == Some(want_512) => return Ok(()),
        Some(part) if part.size_512() > Some(want_512) => {
            warn!(
                "the kernel sees {} bigger than its table entry: left as it is",
                part.name
            );
        }
        Some(part) => {
            disk.resize_partition(number, start, length)
                .context("resize the kernel's partition (BLKPG) on", &disk.path)?;
            let now = part.size_512();
            if now != Some(want_512) {
                return Err(Error::Msg(format!(
                    "the kernel still sees {} with {:?} sectors of 512 bytes, not {}",
                    part.name, now, want_512
                )));
            }
            info!(
                "the kernel now sees {} with {} MiB",
                part.name,
                length / MIB
            );
        }
        None => {
            let busy = disk_in_use(block);
            if busy {
                warn!(
                    "the kernel does not know partition {} of {} and the disk is in use: it sees the new size after a reboot",
                    number,
                    disk.path.display()
                );
            } else {
                match disk.reread() {
                    Ok(()) => info!("the kernel re-read the table of {}", disk.path.display()),
                    Err(e) => warn!(
                        "cannot make the kernel re-read {}: {}",
                        disk.path.display(),
                        e
                    ),
                }
            }
        }
    }
    Ok(())
}

/// Whether the disk or any of its partitions is mounted.
fn disk_in_use(block: &BlockDev) -> bool {
    let mut devs: Vec<DevNum> = block.partitions().iter().map(|p| p.dev).collect();
    devs.push(block.dev);
    device::mounts().iter().any(|m| devs.contains(&m.dev))
}

/// Grows the file system; `true` when this boot's work is finished (grown, full, or not
/// growable), `false` when it waits for the root to be mounted.
fn fs_step(disk: &Disk, number: u32, req: &Request) -> Result<bool> {
    let Some(block) = &disk.block else {
        info!(
            "{} is an image file: its file system is not grown here (grow it once it is on a disk, or with resize2fs/xfs_growfs)",
            disk.path.display()
        );
        return Ok(true);
    };
    let Some(part) = block.partition(number) else {
        warn!(
            "the kernel does not know partition {} of {}: file system not grown",
            number,
            disk.path.display()
        );
        return Ok(false);
    };
    let node = part.node()?;
    let bytes = part.size_512().unwrap_or(0) * 512;
    let mounts = device::mounts();
    let mount = mounts
        .iter()
        .filter(|m| m.dev == part.dev)
        .min_by_key(|m| m.root != "/")
        .map(|m| m.mount_point.clone());
    let outcome = grow_fs::grow(&grow_fs::FsTarget {
        node: &node,
        partition_bytes: bytes,
        mount_point: mount.as_deref(),
        offline: req.offline_fs,
    })?;
    Ok(match outcome {
        FsOutcome::Grown { from, to } => {
            info!(
                "grew the file system on {} from {} MiB to {} MiB",
                part.name,
                from / MIB,
                to / MIB
            );
            true
        }
        FsOutcome::AlreadyFull => {
            info!(
                "the file system on {} already fills its partition",
                part.name
            );
            true
        }
        FsOutcome::Deferred => {
            info!(
                "{} is not mounted: its file system is grown by a run after it is mounted",
                part.name
            );
            false
        }
        FsOutcome::NotGrown(why) => {
            warn!("{}", why);
            true
        }
    })
}

/// Finds the root partition: the device of `/`, or `root=` on the kernel command line when
/// `/` is still the initramfs. `Ok(Err(why))` when the root is not something to grow.
fn locate_root() -> Result<std::result::Result<Located, String>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/").context("stat", "/")?;
    let dev = DevNum::from_raw(meta.dev());
    let root_dev = if dev.major != 0 {
        BlockDev::from_dev(dev)?
    } else {
        let fs_type = device::mounts()
            .into_iter()
            .rev()
            .find(|m| m.mount_point == Path::new("/"))
            .map(|m| m.fs_type)
            .unwrap_or_default();
        if !matches!(fs_type.as_str(), "rootfs" | "tmpfs" | "ramfs") {
            return Ok(Err(format!(
                "the root file system ({}) is not on a block device",
                fs_type
            )));
        }
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let Some(spec) = root_spec(&cmdline) else {
            return Ok(Err("no root= on the kernel command line".into()));
        };
        match resolve_root_spec(&spec)? {
            Some(d) => d,
            None => return Ok(Err(format!("no block device matches root={}", spec))),
        }
    };
    stacking_check(&root_dev)
}

fn stacking_check(root: &BlockDev) -> Result<std::result::Result<Located, String>> {
    if let Some(kind) = root.stacked_kind() {
        return Ok(Err(format!("the root {} is {}", root.name, kind)));
    }
    let Some(number) = root.partition_number() else {
        return Ok(Err(format!(
            "the root {} is a whole disk, not a partition",
            root.name
        )));
    };
    let disk = root.disk()?;
    if let Some(kind) = disk.stacked_kind() {
        return Ok(Err(format!("the root's disk {} is {}", disk.name, kind)));
    }
    Ok(Ok(Located {
        disk_node: disk.node()?,
        number,
    }))
}

/// The value of the last `root=` on a kernel command line, without a `block:` prefix.
pub(crate) fn root_spec(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("root="))
        .map(|v| {
            v.strip_prefix("block:")
                .unwrap_or(v)
                .trim_matches('"')
                .to_string()
        })
}

/// A `root=` value in one of the forms resolved without udev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RootSpec {
    Path(PathBuf),
    DevNum(DevNum),
    Uuid(String),
    PartUuid(String),
    Label(String),
}

/// Classifies a `root=` value; udev's `/dev/disk/by-*` links are turned into the tags they
/// stand for (they may not exist before udev has run).
pub(crate) fn parse_root_spec(spec: &str) -> Option<RootSpec> {
    let by = |prefix: &str| spec.strip_prefix(prefix).map(str::to_string);
    if let Some(v) = by("UUID=").or_else(|| by("/dev/disk/by-uuid/")) {
        return Some(RootSpec::Uuid(v));
    }
    if let Some(v) = by("PARTUUID=").or_else(|| by("/dev/disk/by-partuuid/")) {
        return Some(RootSpec::PartUuid(v));
    }
    if let Some(v) = by("LABEL=").or_else(|| by("/dev/disk/by-label/")) {
        return Some(RootSpec::Label(v));
    }
    if spec.starts_with('/') {
        return Some(RootSpec::Path(PathBuf::from(spec)));
    }
    if let Some(d) = DevNum::parse(spec) {
        return Some(RootSpec::DevNum(d));
    }
    None
}

fn resolve_root_spec(spec: &str) -> Result<Option<BlockDev>> {
    use std::os::unix::fs::MetadataExt;
    let Some(parsed) = parse_root_spec(spec) else {
        return Ok(None);
    };
    let all = BlockDev::all();
    let mut parts = all.iter().filter(|d| d.partition_number().is_some());
    Ok(match parsed {
        RootSpec::Path(p) => match std::fs::metadata(&p) {
            Ok(m) => Some(BlockDev::from_dev(DevNum::from_raw(m.rdev()))?),
            Err(_) => None,
        },
        RootSpec::DevNum(d) => Some(BlockDev::from_dev(d)?),
        RootSpec::Uuid(u) => parts
            .find(|p| fs_info(p).is_some_and(|i| i.uuid.eq_ignore_ascii_case(&u)))
            .cloned(),
        RootSpec::Label(l) => parts
            .find(|p| fs_info(p).is_some_and(|i| i.label == l))
            .cloned(),
        RootSpec::PartUuid(u) => parts
            .find(|p| partuuid(p).is_some_and(|x| x.eq_ignore_ascii_case(&u)))
            .cloned(),
    })
}

fn fs_info(part: &BlockDev) -> Option<grow_fs::FsInfo> {
    let node = part.node().ok()?;
    grow_fs::identify(&device::read_start(&node, grow_fs::PROBE_BYTES).ok()?)
}

fn partuuid(part: &BlockDev) -> Option<String> {
    let number = part.partition_number()?;
    let disk = Disk::open_read_only(&part.disk().ok()?.node().ok()?).ok()?;
    let table = table::read(&disk as &dyn ReadAt, disk.geometry).ok()?;
    table
        .partitions()
        .iter()
        .find(|p| p.number == number)
        .map(|p| p.partuuid.clone())
}

#[cfg(test)]
mod tests;
