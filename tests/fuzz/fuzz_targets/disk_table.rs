//! Fuzz target for `gce_guest::disk::table`: any bytes, taken as the start of a disk with
//! 512- or 4096-byte sectors (the first input byte chooses, the next two the disk's growth),
//! never make the GPT/MBR readers or planners panic, loop or allocate without bound; and
//! every plan they make, once applied, reads back as a table whose partition ends where the
//! plan said.

#![no_main]

use gce_guest::disk::table::{self, Geometry, ReadAt};
use libfuzzer_sys::fuzz_target;

/// The input as a disk of `size` bytes: the bytes, then zeros, plus what plans wrote.
struct Disk {
    bytes: Vec<u8>,
    size: u64,
    written: Vec<(u64, Vec<u8>)>,
}

impl ReadAt for Disk {
    fn read_at(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let end = offset.checked_add(len as u64)?;
        if end > self.size || len > 64 << 20 {
            return None;
        }
        let mut out = vec![0u8; len];
        for (i, b) in out.iter_mut().enumerate() {
            let at = offset + i as u64;
            if let Some(&v) = usize::try_from(at).ok().and_then(|a| self.bytes.get(a)) {
                *b = v;
            }
        }
        for (w_at, data) in &self.written {
            for (i, &v) in data.iter().enumerate() {
                let at = w_at + i as u64;
                if at >= offset && at < end {
                    out[(at - offset) as usize] = v;
                }
            }
        }
        Some(out)
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let sector_size = if data[0] & 1 == 0 { 512 } else { 4096 };
    let growth = u64::from(u16::from_le_bytes([data[1], data[2]]));
    let bytes = data[3..].to_vec();
    let base = (bytes.len() as u64).div_ceil(sector_size) * sector_size;
    let geometry = Geometry {
        size_bytes: base + growth * (1 << 20) + u64::from(data[0] >> 1) * sector_size,
        sector_size: sector_size as u32,
    };
    let mut disk = Disk {
        bytes,
        size: geometry.size_bytes,
        written: Vec::new(),
    };
    let Ok(t) = table::read(&disk, geometry) else {
        return;
    };
    let numbers: Vec<u32> = t.partitions().iter().map(|p| p.number).collect();
    for number in numbers {
        let Ok(decision) = table::plan_grow(&disk, geometry, number, 0) else {
            continue;
        };
        let _ = decision.describe();
        if let Some(g) = decision.growth {
            for w in &g.writes {
                assert_eq!(w.offset % u64::from(geometry.sector_size), 0);
                assert_eq!(w.bytes.len() % geometry.sector_size as usize, 0);
                assert!(w.offset + w.bytes.len() as u64 <= geometry.size_bytes);
            }
            disk.written
                .extend(g.writes.iter().map(|w| (w.offset, w.bytes.clone())));
            let again = table::read(&disk, geometry).expect("our own table reads back");
            let grown = again
                .partitions()
                .iter()
                .find(|p| p.number == number)
                .expect("the partition is still there");
            assert_eq!(grown.last, g.new_last);
            return;
        }
    }
});
