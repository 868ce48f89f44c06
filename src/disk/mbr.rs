//! The MBR (DOS) partition table, pure: classifying the first sector (ordinary MBR,
//! protective MBR of a GPT disk, hybrid, or not a table at all), reading the four primary
//! entries and the chain of extended boot records, and planning to grow a primary or the
//! last logical partition to the end of the disk — capped at 2^32 sectors, all an MBR can
//! address.

use super::table::{
    gain_reason, last_partition, le32, put32, Decision, Geometry, Growth, Label, Partition, ReadAt,
    SectorWrite,
};

/// Where the four primary entries start in the first sector (and in every EBR).
const ENTRIES_AT: usize = 446;
const ENTRY_LEN: usize = 16;
const SIGNATURE_AT: usize = 510;
const DISK_SIGNATURE_AT: usize = 440;
/// The GPT protective partition type.
pub const TYPE_PROTECTIVE: u8 = 0xEE;
/// Extended-partition types (CHS, LBA, Linux).
const EXTENDED_TYPES: [u8; 3] = [0x05, 0x0F, 0x85];
/// The most sectors an MBR entry can reach.
pub const MAX_SECTORS: u64 = 1 << 32;
/// A chain longer than this is taken as corrupt.
const MAX_LOGICAL: usize = 128;

/// What the first sector holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A GPT disk's protective MBR (one 0xEE entry, nothing else).
    Protective,
    /// An ordinary partition table.
    Ordinary,
}

/// One 16-byte entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub status: u8,
    pub kind: u8,
    pub start: u32,
    pub sectors: u32,
}

impl Entry {
    fn parse(sector: &[u8], slot: usize) -> Entry {
        let at = ENTRIES_AT + slot * ENTRY_LEN;
        Entry {
            status: sector[at],
            kind: sector[at + 4],
            start: le32(sector, at + 8),
            sectors: le32(sector, at + 12),
        }
    }

    fn is_empty(&self) -> bool {
        self.kind == 0
    }

    fn is_extended(&self) -> bool {
        EXTENDED_TYPES.contains(&self.kind)
    }
}

fn entries(sector: &[u8]) -> [Entry; 4] {
    [0, 1, 2, 3].map(|slot| Entry::parse(sector, slot))
}

fn has_signature(sector: &[u8]) -> bool {
    sector.len() >= 512 && sector[SIGNATURE_AT] == 0x55 && sector[SIGNATURE_AT + 1] == 0xAA
}

/// Classifies the first sector; `Err` when it is no partition table, or a hybrid MBR.
pub fn classify(first: &[u8]) -> Result<Kind, String> {
    if !has_signature(first) {
        return Err("no partition table (no MBR signature in the first sector)".into());
    }
    let all = entries(first);
    if all.iter().any(|e| e.status != 0 && e.status != 0x80) {
        return Err("the first sector is not a partition table (bad boot flags)".into());
    }
    let protective = all.iter().filter(|e| e.kind == TYPE_PROTECTIVE).count();
    let others = all
        .iter()
        .filter(|e| !e.is_empty() && e.kind != TYPE_PROTECTIVE)
        .count();
    match (protective, others) {
        (0, 0) => Err("the MBR lists no partition".into()),
        (0, _) => Ok(Kind::Ordinary),
        (1, 0) => Ok(Kind::Protective),
        _ => Err("hybrid MBR (GPT protective entry beside MBR partitions): not touched".into()),
    }
}

/// A logical partition and the EBR that describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logical {
    /// The sector of its EBR.
    pub ebr: u64,
    /// The EBR's first entry (start relative to the EBR).
    pub entry: Entry,
    pub number: u32,
}

/// A checked MBR table.
#[derive(Clone, Debug)]
pub struct Mbr {
    /// The first sector as read.
    pub first_sector: Vec<u8>,
    /// The four primary entries.
    pub primary: [Entry; 4],
    /// The slot of the extended partition, if any.
    pub extended: Option<usize>,
    /// The logical partitions, in chain order.
    pub logical: Vec<Logical>,
    /// Every partition (primaries without the extended container, then logicals).
    pub partitions: Vec<Partition>,
}

fn partition(number: u32, first: u64, sectors: u64, signature: u32) -> Partition {
    Partition {
        number,
        first,
        last: first + sectors - 1,
        partuuid: format!("{:08x}-{:02x}", signature, number),
    }
}

/// Reads the primary entries and the EBR chain; checks the logicals lie inside the extended
/// partition, in order, without loops.
pub fn read(src: &dyn ReadAt, geometry: Geometry, first: &[u8]) -> Result<Mbr, String> {
    let ss = u64::from(geometry.sector_size);
    let signature = le32(first, DISK_SIGNATURE_AT);
    let primary = entries(first);
    let mut partitions = Vec::new();
    let mut extended = None;
    for (slot, e) in primary.iter().enumerate() {
        if e.is_empty() {
            continue;
        }
        if e.sectors == 0 || e.start == 0 {
            return Err(format!("MBR entry {} has no extent", slot + 1));
        }
        if u64::from(e.start) + u64::from(e.sectors) > geometry.sectors() {
            return Err(format!("MBR partition {} ends beyond the disk", slot + 1));
        }
        if e.is_extended() {
            if extended.is_some() {
                return Err("the MBR has two extended partitions".into());
            }
            extended = Some(slot);
        } else {
            partitions.push(partition(
                slot as u32 + 1,
                e.start.into(),
                e.sectors.into(),
                signature,
            ));
        }
    }
    let mut logical = Vec::new();
    if let Some(slot) = extended {
        let ext = primary[slot];
        let ext_first = u64::from(ext.start);
        let ext_last = ext_first + u64::from(ext.sectors) - 1;
        let mut ebr = ext_first;
        loop {
            if logical.len() >= MAX_LOGICAL {
                return Err("the EBR chain is too long (a loop?)".into());
            }
            let sector = src
                .read_at(ebr * ss, geometry.sector_size as usize)
                .ok_or_else(|| format!("cannot read the EBR at sector {}", ebr))?;
            if !has_signature(&sector) {
                return Err(format!("no signature in the EBR at sector {}", ebr));
            }
            let [here, link, ..] = entries(&sector);
            if !here.is_empty() {
                let start = ebr + u64::from(here.start);
                if here.start == 0 || here.sectors == 0 {
                    return Err(format!("the EBR at sector {} has no extent", ebr));
                }
                let last = start + u64::from(here.sectors) - 1;
                if last > ext_last {
                    return Err(format!(
                        "a logical partition ends outside its extended partition (EBR at sector {})",
                        ebr
                    ));
                }
                let number = 5 + logical.len() as u32;
                partitions.push(partition(number, start, here.sectors.into(), signature));
                logical.push(Logical {
                    ebr,
                    entry: here,
                    number,
                });
            }
            if link.is_empty() || link.sectors == 0 {
                break;
            }
            if !link.is_extended() {
                return Err(format!("the EBR at sector {} links to a non-EBR", ebr));
            }
            let next = ext_first + u64::from(link.start);
            let floor = logical.last().map_or(ebr, |l: &Logical| {
                l.ebr + u64::from(l.entry.start) + u64::from(l.entry.sectors) - 1
            });
            if next <= ebr || next <= floor || next > ext_last {
                return Err(format!(
                    "the EBR chain goes backwards or out of its extended partition at sector {}",
                    ebr
                ));
            }
            ebr = next;
        }
    }
    Ok(Mbr {
        first_sector: first.to_vec(),
        primary,
        extended,
        logical,
        partitions,
    })
}

/// The CHS bytes for `lba` on the 255-head, 63-sector geometry tools assume, or the
/// "beyond CHS" marker.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let cylinder = lba / (HEADS * SECTORS);
    if cylinder > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    [
        head as u8,
        (sector as u8) | (((cylinder >> 2) & 0xC0) as u8),
        (cylinder & 0xFF) as u8,
    ]
}

/// `entry_sector` with entry `slot` ending at `new_last`; `base` is what its start is
/// relative to (0 for the MBR, the EBR's sector for a logical).
fn with_end(entry_sector: &[u8], slot: usize, base: u64, new_last: u64) -> Vec<u8> {
    let mut out = entry_sector.to_vec();
    let at = ENTRIES_AT + slot * ENTRY_LEN;
    let start = base + u64::from(le32(&out, at + 8));
    put32(&mut out, at + 12, (new_last - start + 1) as u32);
    out[at + 5..at + 8].copy_from_slice(&chs(new_last));
    out
}

/// Plans growing partition `number` (a primary, or the last logical together with its
/// extended partition) to the end of the disk.
pub fn plan_grow(
    src: &dyn ReadAt,
    table: &Mbr,
    geometry: Geometry,
    number: u32,
    min_bytes: u64,
) -> Result<Decision, String> {
    let ss = u64::from(geometry.sector_size);
    // Primaries and the extended container must not overlap, whatever is grown.
    let mut outer: Vec<Partition> = table
        .partitions
        .iter()
        .filter(|p| p.number <= 4)
        .cloned()
        .collect();
    if let Some(slot) = table.extended {
        let e = table.primary[slot];
        outer.push(partition(
            slot as u32 + 1,
            e.start.into(),
            e.sectors.into(),
            0,
        ));
    }
    let mut warnings = Vec::new();
    let disk_sectors = geometry.sectors();
    let end = if disk_sectors > MAX_SECTORS {
        warnings.push(format!(
            "the disk has {} sectors but an MBR addresses only 2^32: {} GiB stay unused",
            disk_sectors,
            ((disk_sectors - MAX_SECTORS) * ss) >> 30
        ));
        MAX_SECTORS
    } else {
        disk_sectors
    };
    let new_last = geometry.align_down(end).saturating_sub(1);
    let decision = |part: &Partition, growth: Option<Growth>, reason: String| Decision {
        label: Label::Mbr,
        sector_size: geometry.sector_size,
        partition: part.clone(),
        growth,
        reason,
    };
    if number <= 4 {
        let part = last_partition(&outer, number)?;
        if table.extended == Some(number as usize - 1) {
            return Err(format!("partition {} is the extended container", number));
        }
        if let Some(reason) = gain_reason(part, new_last, geometry, min_bytes) {
            return Ok(decision(part, None, reason));
        }
        let writes = vec![SectorWrite {
            offset: 0,
            bytes: with_end(&table.first_sector, number as usize - 1, 0, new_last),
            what: "MBR",
        }];
        let growth = Growth {
            new_last,
            writes,
            warnings,
        };
        return Ok(decision(part, Some(growth), String::new()));
    }
    let slot = table
        .extended
        .ok_or_else(|| format!("the table has no partition {}", number))?;
    last_partition(&outer, slot as u32 + 1).map_err(|_| {
        format!(
            "partition {} is in an extended partition that is not the last one on the disk",
            number
        )
    })?;
    let logicals: Vec<Partition> = table
        .partitions
        .iter()
        .filter(|p| p.number >= 5)
        .cloned()
        .collect();
    let part = last_partition(&logicals, number)?;
    let logical = table
        .logical
        .iter()
        .find(|l| l.number == number)
        .ok_or_else(|| format!("the table has no partition {}", number))?;
    if let Some(reason) = gain_reason(part, new_last, geometry, min_bytes) {
        return Ok(decision(part, None, reason));
    }
    let mut writes = Vec::new();
    let ext = table.primary[slot];
    if u64::from(ext.start) + u64::from(ext.sectors) - 1 < new_last {
        writes.push(SectorWrite {
            offset: 0,
            bytes: with_end(&table.first_sector, slot, 0, new_last),
            what: "MBR (extended partition)",
        });
    }
    let ebr = src
        .read_at(logical.ebr * ss, geometry.sector_size as usize)
        .ok_or_else(|| format!("cannot read the EBR at sector {}", logical.ebr))?;
    let link = Entry::parse(&ebr, 1);
    if !link.is_empty() && link.sectors != 0 {
        return Err(format!(
            "another EBR follows partition {} in the chain: not touched",
            number
        ));
    }
    writes.push(SectorWrite {
        offset: logical.ebr * ss,
        bytes: with_end(&ebr, 0, logical.ebr, new_last),
        what: "EBR of the logical partition",
    });
    let growth = Growth {
        new_last,
        writes,
        warnings,
    };
    Ok(decision(part, Some(growth), String::new()))
}
