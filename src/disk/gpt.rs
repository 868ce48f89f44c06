//! The GUID partition table, pure: reading and checking the primary header and entry array
//! (signature, both CRC32s, sizes, entries inside the usable area, no overlap), and planning
//! to grow the last partition to the end of the disk: the new end from the real disk size
//! aligned down to 1 MiB, the backup entries and header written at the new end of the disk,
//! both headers' and both arrays' CRCs recomputed, the protective MBR's size fixed, every
//! GUID, name and attribute kept.

use super::crc32::crc32;
use super::mbr::TYPE_PROTECTIVE;
use super::table::{
    gain_reason, last_partition, le32, le64, put32, put64, Decision, Geometry, Growth, Label,
    Partition, ReadAt, SectorWrite,
};

const SIGNATURE: &[u8; 8] = b"EFI PART";
const MIN_HEADER: u32 = 92;
/// An entry array bigger than this is taken as corrupt (the usual one is 16 KiB).
const MAX_ARRAY_BYTES: u64 = 4 << 20;

// Header field offsets.
const HEADER_SIZE_AT: usize = 12;
const HEADER_CRC_AT: usize = 16;
const MY_LBA_AT: usize = 24;
const ALTERNATE_AT: usize = 32;
const FIRST_USABLE_AT: usize = 40;
const LAST_USABLE_AT: usize = 48;
const ENTRIES_LBA_AT: usize = 72;
const ENTRY_COUNT_AT: usize = 80;
const ENTRY_SIZE_AT: usize = 84;
const ENTRIES_CRC_AT: usize = 88;
// Entry field offsets.
const ENTRY_UNIQUE_AT: usize = 16;
const ENTRY_FIRST_AT: usize = 32;
const ENTRY_LAST_AT: usize = 40;

/// A checked GPT (its primary copy).
#[derive(Clone, Debug)]
pub struct Gpt {
    /// The protective MBR sector.
    pub protective_mbr: Vec<u8>,
    /// Which of its four slots is the 0xEE entry.
    pub protective_slot: usize,
    /// The primary header sector, whole.
    pub header: Vec<u8>,
    pub header_size: u32,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    /// The entry array (entry_count × entry_size bytes).
    pub entries: Vec<u8>,
    /// The used entries; number = index + 1.
    pub partitions: Vec<Partition>,
}

impl Gpt {
    /// Sectors the entry array takes.
    pub fn array_sectors(&self, sector_size: u32) -> u64 {
        (self.entries.len() as u64).div_ceil(u64::from(sector_size))
    }
}

/// A GUID in the text form Linux prints (mixed endian, lower case).
pub fn guid_text(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        le32(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// The CRC of a header: over `header_size` bytes with the CRC field taken as zero.
fn header_crc(header: &[u8], size: usize) -> u32 {
    let mut copy = header[..size].to_vec();
    copy[HEADER_CRC_AT..HEADER_CRC_AT + 4].fill(0);
    crc32(&copy)
}

/// Reads and checks the primary GPT; `first` is the protective MBR sector.
pub fn read(src: &dyn ReadAt, geometry: Geometry, first: &[u8]) -> Result<Gpt, String> {
    let ss = geometry.sector_size;
    let ss64 = u64::from(ss);
    let disk_sectors = geometry.sectors();
    let protective_slot = (0..4)
        .find(|slot| first[446 + slot * 16 + 4] == TYPE_PROTECTIVE)
        .ok_or("no protective MBR entry")?;
    let header = src
        .read_at(ss64, ss as usize)
        .ok_or("cannot read the GPT header")?;
    if &header[..8] != SIGNATURE {
        return Err("protective MBR but no GPT header signature at sector 1".into());
    }
    let header_size = le32(&header, HEADER_SIZE_AT);
    if header_size < MIN_HEADER || header_size > ss {
        return Err(format!("GPT header size {} is invalid", header_size));
    }
    let stored = le32(&header, HEADER_CRC_AT);
    if header_crc(&header, header_size as usize) != stored {
        return Err("the primary GPT header's CRC is wrong: not touched".into());
    }
    if le64(&header, MY_LBA_AT) != 1 {
        return Err("the primary GPT header does not say it is at sector 1".into());
    }
    let alternate_lba = le64(&header, ALTERNATE_AT);
    let first_usable = le64(&header, FIRST_USABLE_AT);
    let last_usable = le64(&header, LAST_USABLE_AT);
    let entries_lba = le64(&header, ENTRIES_LBA_AT);
    let entry_count = le32(&header, ENTRY_COUNT_AT);
    let entry_size = le32(&header, ENTRY_SIZE_AT);
    if entry_size < 128 || !entry_size.is_multiple_of(8) {
        return Err(format!("GPT entry size {} is invalid", entry_size));
    }
    let array_bytes = u64::from(entry_count) * u64::from(entry_size);
    if array_bytes == 0 || array_bytes > MAX_ARRAY_BYTES {
        return Err(format!(
            "GPT entry array of {} bytes is invalid",
            array_bytes
        ));
    }
    let array_sectors = array_bytes.div_ceil(ss64);
    if entries_lba < 2
        || entries_lba.saturating_add(array_sectors) > first_usable
        || first_usable > last_usable
        || last_usable >= alternate_lba
        || alternate_lba >= disk_sectors
    {
        return Err(format!(
            "GPT header areas are inconsistent (entries at {}, usable {}..{}, backup at {}, disk of {} sectors)",
            entries_lba, first_usable, last_usable, alternate_lba, disk_sectors
        ));
    }
    let entries = src
        .read_at(entries_lba * ss64, array_bytes as usize)
        .ok_or("cannot read the GPT entry array")?;
    if crc32(&entries) != le32(&header, ENTRIES_CRC_AT) {
        return Err("the GPT entry array's CRC is wrong: not touched".into());
    }
    let mut partitions = Vec::new();
    for (index, entry) in entries.chunks_exact(entry_size as usize).enumerate() {
        if entry[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let number = index as u32 + 1;
        let first = le64(entry, ENTRY_FIRST_AT);
        let last = le64(entry, ENTRY_LAST_AT);
        if last < first {
            return Err(format!("GPT partition {} ends before it starts", number));
        }
        if first < first_usable || last > last_usable {
            return Err(format!(
                "GPT partition {} lies outside the usable area",
                number
            ));
        }
        partitions.push(Partition {
            number,
            first,
            last,
            partuuid: guid_text(&entry[ENTRY_UNIQUE_AT..ENTRY_UNIQUE_AT + 16]),
        });
    }
    Ok(Gpt {
        protective_mbr: first.to_vec(),
        protective_slot,
        header,
        header_size,
        alternate_lba,
        first_usable,
        last_usable,
        entries_lba,
        entry_count,
        entry_size,
        entries,
        partitions,
    })
}

/// `header` with the given location fields and both CRCs set.
fn header_at(
    gpt: &Gpt,
    my_lba: u64,
    alternate: u64,
    last_usable: u64,
    entries_lba: u64,
    entries_crc: u32,
) -> Vec<u8> {
    let mut h = gpt.header.clone();
    put64(&mut h, MY_LBA_AT, my_lba);
    put64(&mut h, ALTERNATE_AT, alternate);
    put64(&mut h, LAST_USABLE_AT, last_usable);
    put64(&mut h, ENTRIES_LBA_AT, entries_lba);
    put32(&mut h, ENTRIES_CRC_AT, entries_crc);
    let crc = header_crc(&h, gpt.header_size as usize);
    put32(&mut h, HEADER_CRC_AT, crc);
    h
}

/// Plans growing partition `number` to the end of the disk.
pub fn plan_grow(
    gpt: &Gpt,
    geometry: Geometry,
    number: u32,
    min_bytes: u64,
) -> Result<Decision, String> {
    let ss = u64::from(geometry.sector_size);
    let part = last_partition(&gpt.partitions, number)?;
    let array_sectors = gpt.array_sectors(geometry.sector_size);
    let new_alternate = geometry.sectors() - 1;
    let new_backup_entries = new_alternate - array_sectors;
    let new_last_usable = new_backup_entries - 1;
    let new_last = geometry.align_down(new_last_usable + 1).saturating_sub(1);
    let reason = gain_reason(part, new_last, geometry, min_bytes);
    let mut decision = Decision {
        label: Label::Gpt,
        sector_size: geometry.sector_size,
        partition: part.clone(),
        growth: None,
        reason: reason.clone().unwrap_or_default(),
    };
    if reason.is_some() {
        return Ok(decision);
    }
    let mut entries = gpt.entries.clone();
    let at = (number as usize - 1) * gpt.entry_size as usize;
    put64(&mut entries, at + ENTRY_LAST_AT, new_last);
    let entries_crc = crc32(&entries);
    let mut padded = entries.clone();
    padded.resize((array_sectors * ss) as usize, 0);
    let backup = header_at(
        gpt,
        new_alternate,
        1,
        new_last_usable,
        new_backup_entries,
        entries_crc,
    );
    let primary = header_at(
        gpt,
        1,
        new_alternate,
        new_last_usable,
        gpt.entries_lba,
        entries_crc,
    );
    let mut writes = vec![
        SectorWrite {
            offset: new_backup_entries * ss,
            bytes: padded.clone(),
            what: "backup GPT entries",
        },
        SectorWrite {
            offset: new_alternate * ss,
            bytes: backup,
            what: "backup GPT header",
        },
    ];
    let mut pmbr = gpt.protective_mbr.clone();
    let size_at = 446 + gpt.protective_slot * 16 + 12;
    put32(
        &mut pmbr,
        size_at,
        new_alternate.min(u64::from(u32::MAX)) as u32,
    );
    if pmbr != gpt.protective_mbr {
        writes.push(SectorWrite {
            offset: 0,
            bytes: pmbr,
            what: "protective MBR",
        });
    }
    // The primary array and header last (array first: a torn write leaves the header's old
    // array CRC failing, and readers fall back to the complete backup).
    writes.push(SectorWrite {
        offset: gpt.entries_lba * ss,
        bytes: padded,
        what: "primary GPT entries",
    });
    writes.push(SectorWrite {
        offset: ss,
        bytes: primary,
        what: "primary GPT header",
    });
    if gpt.alternate_lba != new_alternate && gpt.alternate_lba < new_backup_entries {
        writes.push(SectorWrite {
            offset: gpt.alternate_lba * ss,
            bytes: vec![0; ss as usize],
            what: "old backup GPT header (cleared)",
        });
    }
    decision.growth = Some(Growth {
        new_last,
        writes,
        warnings: Vec::new(),
    });
    Ok(decision)
}
