//! What the partition-table readers and planners share, and the one entry point that tells
//! the label types apart: [`read`] a table from any [`ReadAt`] source (a byte buffer in tests
//! and the fuzz target, the device in production) and [`plan_grow`] a partition to the end
//! of the disk. Everything here is pure: no file, no ioctl.

use super::{gpt, mbr};

/// One mebibyte, the alignment of a grown partition's end.
pub const MIB: u64 = 1 << 20;

/// Where table bytes come from.
pub trait ReadAt {
    /// `len` bytes at byte `offset`, or `None` when they are not all there.
    fn read_at(&self, offset: u64, len: usize) -> Option<Vec<u8>>;
}

impl ReadAt for [u8] {
    fn read_at(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        self.get(start..end).map(<[u8]>::to_vec)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        self.as_slice().read_at(offset, len)
    }
}

/// The disk as the planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The real size of the device (or image file), in bytes.
    pub size_bytes: u64,
    /// The logical sector size: table units.
    pub sector_size: u32,
}

impl Geometry {
    /// Whole logical sectors on the disk.
    pub fn sectors(&self) -> u64 {
        self.size_bytes / u64::from(self.sector_size)
    }

    /// Sectors per MiB (at least 1).
    pub fn sectors_per_mib(&self) -> u64 {
        (MIB / u64::from(self.sector_size)).max(1)
    }

    /// `lba` rounded down to a MiB boundary.
    pub fn align_down(&self, lba: u64) -> u64 {
        lba - lba % self.sectors_per_mib()
    }
}

/// The label type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    Gpt,
    Mbr,
}

impl Label {
    /// Its usual name.
    pub fn name(self) -> &'static str {
        match self {
            Label::Gpt => "GPT",
            Label::Mbr => "MBR",
        }
    }
}

/// One partition as a table lists it: number as Linux numbers it, inclusive sector range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based; MBR logical partitions are 5, 6, ...
    pub number: u32,
    /// First sector.
    pub first: u64,
    /// Last sector (inclusive).
    pub last: u64,
    /// The PARTUUID Linux shows: the GPT unique GUID, or `SSSSSSSS-NN` for MBR.
    pub partuuid: String,
}

impl Partition {
    /// Sectors it covers.
    pub fn sectors(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// A table that was read and checked.
#[derive(Clone, Debug)]
pub enum Table {
    Gpt(gpt::Gpt),
    Mbr(mbr::Mbr),
}

impl Table {
    /// Its label type.
    pub fn label(&self) -> Label {
        match self {
            Table::Gpt(_) => Label::Gpt,
            Table::Mbr(_) => Label::Mbr,
        }
    }

    /// Its partitions, in table order.
    pub fn partitions(&self) -> &[Partition] {
        match self {
            Table::Gpt(t) => &t.partitions,
            Table::Mbr(t) => &t.partitions,
        }
    }
}

/// Sectors to write, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectorWrite {
    /// Byte offset (a multiple of the sector size).
    pub offset: u64,
    /// Whole sectors.
    pub bytes: Vec<u8>,
    /// What they are, for the plan and the log.
    pub what: &'static str,
}

/// A change to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Growth {
    /// The new last sector of the partition.
    pub new_last: u64,
    /// The writes, in the order that keeps a readable table after a crash at any point.
    pub writes: Vec<SectorWrite>,
    /// Things to say (the MBR 2 TiB cap).
    pub warnings: Vec<String>,
}

/// What the planner decided for a partition it may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub label: Label,
    pub sector_size: u32,
    /// The partition as the table has it now.
    pub partition: Partition,
    /// `Some` when it is to grow; `None` when it stays, with `reason` saying why.
    pub growth: Option<Growth>,
    /// Why nothing changes (empty when it grows).
    pub reason: String,
}

impl Decision {
    /// The partition's size in bytes once the plan is applied (now, when nothing changes).
    pub fn final_bytes(&self) -> u64 {
        let last = self
            .growth
            .as_ref()
            .map_or(self.partition.last, |g| g.new_last);
        (last - self.partition.first + 1) * u64::from(self.sector_size)
    }

    /// The partition's first byte.
    pub fn start_bytes(&self) -> u64 {
        self.partition.first * u64::from(self.sector_size)
    }

    /// Lines describing the plan, for `--dry-run` and the log.
    pub fn describe(&self) -> Vec<String> {
        let ss = u64::from(self.sector_size);
        let p = &self.partition;
        let mut lines = vec![format!(
            "{} table, {}-byte sectors; partition {}: sectors {}..{} ({} MiB)",
            self.label.name(),
            self.sector_size,
            p.number,
            p.first,
            p.last,
            p.sectors() * ss / MIB
        )];
        match &self.growth {
            None => lines.push(format!("no change: {}", self.reason)),
            Some(g) => {
                lines.push(format!(
                    "grow partition {} to sectors {}..{} ({} MiB, +{} MiB)",
                    p.number,
                    p.first,
                    g.new_last,
                    (g.new_last - p.first + 1) * ss / MIB,
                    (g.new_last - p.last) * ss / MIB
                ));
                for w in &g.writes {
                    lines.push(format!(
                        "write {} bytes at byte {} (sector {}): {}",
                        w.bytes.len(),
                        w.offset,
                        w.offset / ss,
                        w.what
                    ));
                }
                lines.extend(g.warnings.iter().map(|w| format!("warning: {}", w)));
            }
        }
        lines
    }
}

/// Little-endian field readers over a byte slice the callers have already sized.
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Reads and checks the table: GPT when the first sector holds a protective MBR, MBR when it
/// holds an ordinary one. `Err` says why the disk is left alone.
pub fn read(src: &dyn ReadAt, geometry: Geometry) -> Result<Table, String> {
    if !matches!(geometry.sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(format!(
            "unsupported logical sector size {}",
            geometry.sector_size
        ));
    }
    let first = src
        .read_at(0, geometry.sector_size as usize)
        .ok_or("cannot read the first sector")?;
    match mbr::classify(&first)? {
        mbr::Kind::Protective => gpt::read(src, geometry, &first).map(Table::Gpt),
        mbr::Kind::Ordinary => mbr::read(src, geometry, &first).map(Table::Mbr),
    }
}

/// Reads the table and plans growing partition `number` to the end of the disk when it is
/// the last one and at least `min_bytes` would be gained. `Err` says why nothing may be
/// changed (unknown or inconsistent table, partition not last or absent).
pub fn plan_grow(
    src: &dyn ReadAt,
    geometry: Geometry,
    number: u32,
    min_bytes: u64,
) -> Result<Decision, String> {
    match read(src, geometry)? {
        Table::Gpt(t) => gpt::plan_grow(&t, geometry, number, min_bytes),
        Table::Mbr(t) => mbr::plan_grow(src, &t, geometry, number, min_bytes),
    }
}

/// Checks that the partitions do not overlap and that `number` is the last one on the disk;
/// returns it.
pub(crate) fn last_partition(parts: &[Partition], number: u32) -> Result<&Partition, String> {
    let mut sorted: Vec<&Partition> = parts.iter().collect();
    sorted.sort_by_key(|p| (p.first, p.last));
    for pair in sorted.windows(2) {
        if pair[1].first <= pair[0].last {
            return Err(format!(
                "partitions {} and {} overlap",
                pair[0].number, pair[1].number
            ));
        }
    }
    let target = parts
        .iter()
        .find(|p| p.number == number)
        .ok_or_else(|| format!("the table has no partition {}", number))?;
    match sorted.last() {
        Some(last) if last.number != number => Err(format!(
            "partition {} is not the last one on the disk (partition {} follows it)",
            number, last.number
        )),
        _ => Ok(target),
    }
}

/// The common end of both planners: decides whether growing `part` to `new_last` is worth it.
pub(crate) fn gain_reason(
    part: &Partition,
    new_last: u64,
    geometry: Geometry,
    min_bytes: u64,
) -> Option<String> {
    let ss = u64::from(geometry.sector_size);
    if new_last <= part.last {
        return Some(format!(
            "partition {} already reaches the end of the disk",
            part.number
        ));
    }
    let gain = (new_last - part.last) * ss;
    if gain < min_bytes {
        return Some(format!(
            "only {} MiB would be gained after partition {} (the minimum is {} MiB)",
            gain / MIB,
            part.number,
            min_bytes / MIB
        ));
    }
    None
}
