//! Planner tests on byte buffers: tables built here sector by sector on a sparse in-memory
//! disk, planned, the plan applied to the buffer, and the result read back.

use std::collections::BTreeMap;

use super::crc32::crc32;
use super::table::{self, put32, put64, Geometry, ReadAt, Table, MIB};

const GIB: u64 = 1 << 30;

/// A sparse disk: sectors never written read as zeros.
struct Image {
    geometry: Geometry,
    sectors: BTreeMap<u64, Vec<u8>>,
}

impl Image {
    fn new(size_bytes: u64, sector_size: u32) -> Image {
        Image {
            geometry: Geometry {
                size_bytes,
                sector_size,
            },
            sectors: BTreeMap::new(),
        }
    }

    fn ss(&self) -> u64 {
        u64::from(self.geometry.sector_size)
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let ss = self.ss();
        assert_eq!(offset % ss, 0);
        for (i, chunk) in bytes.chunks(ss as usize).enumerate() {
            let mut sector = chunk.to_vec();
            sector.resize(ss as usize, 0);
            self.sectors.insert(offset / ss + i as u64, sector);
        }
    }

    fn grow_to(&mut self, size_bytes: u64) {
        self.geometry.size_bytes = size_bytes;
    }

    fn apply(&mut self, decision: &table::Decision) {
        for w in &decision.growth.as_ref().expect("a growth").writes {
            self.write(w.offset, &w.bytes);
        }
    }

    fn checksum(&self) -> u32 {
        let mut all = Vec::new();
        for (lba, s) in &self.sectors {
            all.extend_from_slice(&lba.to_le_bytes());
            all.extend_from_slice(s);
        }
        crc32(&all)
    }
}

impl ReadAt for Image {
    fn read_at(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        if offset + len as u64 > self.geometry.size_bytes {
            return None;
        }
        let ss = self.ss();
        let mut out = Vec::with_capacity(len);
        let mut lba = offset / ss;
        let mut skip = (offset % ss) as usize;
        while out.len() < len {
            let zero = vec![0u8; ss as usize];
            let sector = self.sectors.get(&lba).unwrap_or(&zero);
            let take = (ss as usize - skip).min(len - out.len());
            out.extend_from_slice(&sector[skip..skip + take]);
            skip = 0;
            lba += 1;
        }
        Some(out)
    }
}

fn mbr_entry(sector: &mut [u8], slot: usize, kind: u8, start: u32, sectors: u32) {
    let at = 446 + slot * 16;
    sector[at + 4] = kind;
    put32(sector, at + 8, start);
    put32(sector, at + 12, sectors);
}

fn signed_sector(ss: u64) -> Vec<u8> {
    let mut s = vec![0u8; ss as usize];
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

const LINUX_FS: [u8; 16] = [
    0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
];

/// Writes a GPT like sfdisk's (128 entries of 128 bytes, backup at the last sector) for a disk
/// of `table_bytes`, with the given (first, last) partitions.
fn make_gpt(img: &mut Image, table_bytes: u64, parts: &[(u64, u64)]) {
    let ss = img.ss();
    let sectors = table_bytes / ss;
    let array_sectors = 128 * 128 / ss;
    let mut pmbr = signed_sector(ss);
    mbr_entry(
        &mut pmbr,
        0,
        0xEE,
        1,
        (sectors - 1).min(u64::from(u32::MAX)) as u32,
    );
    img.write(0, &pmbr);
    let mut entries = vec![0u8; 128 * 128];
    for (i, &(first, last)) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[..16].copy_from_slice(&LINUX_FS);
        for (j, b) in e[16..32].iter_mut().enumerate() {
            *b = (i * 16 + j) as u8 + 1;
        }
        put64(e, 32, first);
        put64(e, 40, last);
        put64(e, 48, 1 << 60 | i as u64);
        for (j, c) in "root".encode_utf16().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&c.to_le_bytes());
        }
    }
    let header = |my: u64, alt: u64, entries_lba: u64| {
        let mut h = vec![0u8; ss as usize];
        h[..8].copy_from_slice(b"EFI PART");
        put32(&mut h, 8, 0x0001_0000);
        put32(&mut h, 12, 92);
        put64(&mut h, 24, my);
        put64(&mut h, 32, alt);
        put64(&mut h, 40, 2 + array_sectors);
        put64(&mut h, 48, sectors - 2 - array_sectors);
        h[56..72].copy_from_slice(&[0x5A; 16]);
        put64(&mut h, 72, entries_lba);
        put32(&mut h, 80, 128);
        put32(&mut h, 84, 128);
        put32(&mut h, 88, crc32(&entries));
        let c = crc32(&h[..92]);
        put32(&mut h, 16, c);
        h
    };
    img.write(ss, &header(1, sectors - 1, 2));
    img.write(2 * ss, &entries);
    img.write((sectors - 1 - array_sectors) * ss, &entries);
    img.write(
        (sectors - 1) * ss,
        &header(sectors - 1, 1, sectors - 1 - array_sectors),
    );
}

/// Checks the backup GPT at the end of the disk: CRCs, locations, same array as primary.
fn check_backup(img: &Image) {
    let ss = img.ss();
    let last = img.geometry.sectors() - 1;
    let backup = img.read_at(last * ss, ss as usize).unwrap();
    assert_eq!(&backup[..8], b"EFI PART");
    let mut copy = backup[..92].to_vec();
    let stored = u32::from_le_bytes(copy[16..20].try_into().unwrap());
    copy[16..20].fill(0);
    assert_eq!(crc32(&copy), stored, "backup header CRC");
    assert_eq!(table::le64(&backup, 24), last, "backup's own LBA");
    assert_eq!(table::le64(&backup, 32), 1, "backup points at the primary");
    let entries_lba = table::le64(&backup, 72);
    let entries = img.read_at(entries_lba * ss, 128 * 128).unwrap();
    assert_eq!(
        crc32(&entries),
        table::le32(&backup, 88),
        "backup array CRC"
    );
    assert_eq!(entries_lba, last - 128 * 128 / ss);
    let primary = img.read_at(ss, ss as usize).unwrap();
    assert_eq!(
        table::le64(&primary, 32),
        last,
        "primary points at the backup"
    );
    assert_eq!(table::le64(&primary, 48), table::le64(&backup, 48));
    assert_eq!(img.read_at(2 * ss, 128 * 128).unwrap(), entries);
}

fn gpt_grows_the_last_partition(ss: u32) {
    let ssu = u64::from(ss);
    let mut img = Image::new(GIB, ss);
    let mib = MIB / ssu;
    make_gpt(
        &mut img,
        GIB,
        &[(mib, 100 * mib - 1), (100 * mib, GIB / ssu - 40)],
    );
    let before = img.read_at(2 * ssu, 128 * 128).unwrap();
    // 3 GiB and three sectors: too few for the backup table, so the end is 1 MiB lower.
    img.grow_to(3 * GIB + 3 * ssu);
    let d = table::plan_grow(&img, img.geometry, 2, 512 * MIB).unwrap();
    let g = d.growth.clone().expect("grows");
    assert_eq!((g.new_last + 1) * ssu % MIB, 0, "end aligned to 1 MiB");
    assert_eq!(
        (g.new_last + 1) * ssu,
        3 * GIB - MIB,
        "the last whole MiB before the backup"
    );
    assert_eq!(d.partition.last, GIB / ssu - 40);
    let pmbr_at = 446 + 12;
    img.apply(&d);
    check_backup(&img);
    let Table::Gpt(t) = table::read(&img, img.geometry).unwrap() else {
        panic!("not a GPT");
    };
    assert_eq!(t.partitions[1].last, g.new_last);
    assert_eq!(t.alternate_lba, img.geometry.sectors() - 1);
    assert_eq!(
        u64::from(table::le32(&t.protective_mbr, pmbr_at)),
        img.geometry.sectors() - 1
    );
    // Every byte of the array but partition 2's end is kept (GUIDs, names, attributes).
    let mut expected = before.clone();
    put64(&mut expected, 128 + 40, g.new_last);
    assert_eq!(t.entries, expected);
    // The old backup header is cleared.
    let old = img.read_at((GIB / ssu - 1) * ssu, 8).unwrap();
    assert_eq!(old, vec![0; 8]);
    // A second run has nothing to do.
    let again = table::plan_grow(&img, img.geometry, 2, 512 * MIB).unwrap();
    assert!(again.growth.is_none());
    assert!(again.reason.contains("already"), "{}", again.reason);
}

#[test]
fn gpt_with_512_byte_sectors_grows_to_the_aligned_end() {
    gpt_grows_the_last_partition(512);
}

#[test]
fn gpt_with_4096_byte_sectors_grows_to_the_aligned_end() {
    gpt_grows_the_last_partition(4096);
}

#[test]
fn gpt_entries_out_of_order_are_fine_when_the_target_is_last_on_disk() {
    // GCE's images: partition 1 is root at the end, 14 and 15 come first on the disk.
    let mut img = Image::new(GIB, 512);
    make_gpt(
        &mut img,
        GIB,
        &[(262_144, 2_097_118), (2048, 8191), (8192, 262_143)],
    );
    img.grow_to(10 * GIB);
    let d = table::plan_grow(&img, img.geometry, 1, 512 * MIB).unwrap();
    assert!(d.growth.is_some());
    let err = table::plan_grow(&img, img.geometry, 3, 512 * MIB).unwrap_err();
    assert!(err.contains("not the last"), "{}", err);
}

#[test]
fn gpt_partition_not_last_is_refused() {
    let mut img = Image::new(GIB, 512);
    make_gpt(&mut img, GIB, &[(2048, 4095), (4096, 1_000_000)]);
    img.grow_to(2 * GIB);
    let err = table::plan_grow(&img, img.geometry, 1, 0).unwrap_err();
    assert!(err.contains("partition 1 is not the last"), "{}", err);
    let err = table::plan_grow(&img, img.geometry, 9, 0).unwrap_err();
    assert!(err.contains("no partition 9"), "{}", err);
}

#[test]
fn gpt_gap_below_the_minimum_changes_nothing() {
    let mut img = Image::new(GIB, 512);
    make_gpt(&mut img, GIB, &[(2048, 2_097_118)]);
    img.grow_to(GIB + 511 * MIB);
    let d = table::plan_grow(&img, img.geometry, 1, 512 * MIB).unwrap();
    assert!(d.growth.is_none());
    assert!(d.reason.contains("minimum is 512 MiB"), "{}", d.reason);
    // With a smaller minimum it grows.
    let d = table::plan_grow(&img, img.geometry, 1, 256 * MIB).unwrap();
    assert!(d.growth.is_some());
}

#[test]
fn gpt_with_a_bad_crc_is_refused() {
    let mut img = Image::new(GIB, 512);
    make_gpt(&mut img, GIB, &[(2048, 2_097_118)]);
    img.grow_to(3 * GIB);
    let mut header = img.read_at(512, 512).unwrap();
    header[60] ^= 1;
    img.write(512, &header);
    let err = table::plan_grow(&img, img.geometry, 1, 0).unwrap_err();
    assert!(err.contains("header's CRC is wrong"), "{}", err);

    let mut img = Image::new(GIB, 512);
    make_gpt(&mut img, GIB, &[(2048, 2_097_118)]);
    let mut entries = img.read_at(1024, 512).unwrap();
    entries[100] ^= 1;
    img.write(1024, &entries);
    let err = table::plan_grow(&img, img.geometry, 1, 0).unwrap_err();
    assert!(err.contains("entry array's CRC is wrong"), "{}", err);
}

#[test]
fn gpt_overlapping_or_reversed_entries_are_refused() {
    let mut img = Image::new(GIB, 512);
    make_gpt(&mut img, GIB, &[(2048, 10_000), (9000, 2_000_000)]);
    img.grow_to(3 * GIB);
    let err = table::plan_grow(&img, img.geometry, 2, 0).unwrap_err();
    assert!(err.contains("overlap"), "{}", err);

    let mut img = Image::new(GIB, 512);
    make_gpt(&mut img, GIB, &[(20_000, 10_000)]);
    let err = table::plan_grow(&img, img.geometry, 1, 0).unwrap_err();
    assert!(err.contains("ends before it starts"), "{}", err);
}

#[test]
fn hybrid_mbr_is_refused() {
    let mut img = Image::new(GIB, 512);
    make_gpt(&mut img, GIB, &[(2048, 2_097_118)]);
    let mut pmbr = img.read_at(0, 512).unwrap();
    mbr_entry(&mut pmbr, 1, 0x83, 2048, 4096);
    img.write(0, &pmbr);
    img.grow_to(3 * GIB);
    let err = table::plan_grow(&img, img.geometry, 1, 0).unwrap_err();
    assert!(err.contains("hybrid MBR"), "{}", err);
}

#[test]
fn no_table_is_refused() {
    let img = Image::new(GIB, 512);
    let err = table::plan_grow(&img, img.geometry, 1, 0).unwrap_err();
    assert!(err.contains("no partition table"), "{}", err);
}

#[test]
fn gpt_protective_size_is_capped_on_huge_disks() {
    let mut img = Image::new(GIB, 512);
    make_gpt(&mut img, GIB, &[(2048, 2_097_118)]);
    img.grow_to(4 << 40);
    let d = table::plan_grow(&img, img.geometry, 1, 0).unwrap();
    img.apply(&d);
    let Table::Gpt(t) = table::read(&img, img.geometry).unwrap() else {
        panic!("not a GPT");
    };
    assert_eq!(table::le32(&t.protective_mbr, 446 + 12), u32::MAX);
    check_backup(&img);
}

fn mbr_disk(ss: u32, table_bytes: u64, parts: &[(u8, u32, u32)]) -> Image {
    let mut img = Image::new(table_bytes, ss);
    let mut s = signed_sector(u64::from(ss));
    put32(&mut s, 440, 0xDEAD_BEEF);
    for (slot, &(kind, start, sectors)) in parts.iter().enumerate() {
        mbr_entry(&mut s, slot, kind, start, sectors);
    }
    img.write(0, &s);
    img
}

fn mbr_primary_grows(ss: u32) {
    let ssu = u64::from(ss);
    let mib = (MIB / ssu) as u32;
    let total = (GIB / ssu) as u32;
    let mut img = mbr_disk(
        ss,
        GIB,
        &[(0x83, mib, 100 * mib), (0x83, 101 * mib, total - 101 * mib)],
    );
    img.grow_to(3 * GIB + 3 * ssu);
    let d = table::plan_grow(&img, img.geometry, 2, 512 * MIB).unwrap();
    let g = d.growth.clone().expect("grows");
    assert_eq!((g.new_last + 1) * ssu, 3 * GIB);
    assert_eq!(g.writes.len(), 1);
    img.apply(&d);
    let Table::Mbr(t) = table::read(&img, img.geometry).unwrap() else {
        panic!("not an MBR");
    };
    assert_eq!(t.partitions[1].last, g.new_last);
    assert_eq!(t.partitions[1].partuuid, "deadbeef-02");
    assert_eq!(t.partitions[0].last, u64::from(101 * mib - 1));
    let err = table::plan_grow(&img, img.geometry, 1, 0).unwrap_err();
    assert!(err.contains("not the last"), "{}", err);
    assert!(table::plan_grow(&img, img.geometry, 2, 0)
        .unwrap()
        .growth
        .is_none());
}

#[test]
fn mbr_primary_with_512_byte_sectors_grows() {
    mbr_primary_grows(512);
}

#[test]
fn mbr_primary_with_4096_byte_sectors_grows() {
    mbr_primary_grows(4096);
}

#[test]
fn mbr_is_capped_at_2_pow_32_sectors_with_a_warning() {
    let mut img = mbr_disk(512, GIB, &[(0x83, 2048, 2_095_104)]);
    img.grow_to(3 << 40);
    let d = table::plan_grow(&img, img.geometry, 1, 0).unwrap();
    let g = d.growth.clone().expect("grows");
    assert_eq!(g.new_last, (1u64 << 32) - 1);
    assert!(g.warnings[0].contains("2^32"), "{:?}", g.warnings);
    img.apply(&d);
    let Table::Mbr(t) = table::read(&img, img.geometry).unwrap() else {
        panic!("not an MBR");
    };
    assert_eq!(t.primary[0].sectors, u32::MAX - 2047);
}

/// An MBR with partition 1 primary and an extended partition 2 holding logicals 5 and 6.
fn mbr_with_logicals(ss: u32) -> Image {
    let ssu = u64::from(ss);
    let mib = (MIB / ssu) as u32;
    let total = (GIB / ssu) as u32;
    let ext_start = 101 * mib;
    let mut img = mbr_disk(
        ss,
        GIB,
        &[(0x83, mib, 100 * mib), (0x05, ext_start, total - ext_start)],
    );
    // EBR 1 at the extended start: logical 5 (50 MiB), link to EBR 2.
    let mut ebr1 = signed_sector(ssu);
    mbr_entry(&mut ebr1, 0, 0x83, mib, 50 * mib);
    mbr_entry(&mut ebr1, 1, 0x05, 52 * mib, total - ext_start - 52 * mib);
    img.write(u64::from(ext_start) * ssu, &ebr1);
    let mut ebr2 = signed_sector(ssu);
    mbr_entry(&mut ebr2, 0, 0x83, mib, total - ext_start - 53 * mib);
    img.write(u64::from(ext_start + 52 * mib) * ssu, &ebr2);
    img
}

#[test]
fn mbr_last_logical_grows_with_its_extended_partition() {
    for ss in [512u32, 4096] {
        let ssu = u64::from(ss);
        let mut img = mbr_with_logicals(ss);
        img.grow_to(3 * GIB);
        let Table::Mbr(t) = table::read(&img, img.geometry).unwrap() else {
            panic!("not an MBR");
        };
        let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 5, 6]);
        let d = table::plan_grow(&img, img.geometry, 6, 512 * MIB).unwrap();
        let g = d.growth.clone().expect("grows");
        assert_eq!((g.new_last + 1) * ssu, 3 * GIB);
        assert_eq!(g.writes.len(), 2, "the MBR (extended) first, then the EBR");
        assert_eq!(g.writes[0].offset, 0);
        img.apply(&d);
        let Table::Mbr(t) = table::read(&img, img.geometry).unwrap() else {
            panic!("not an MBR");
        };
        assert_eq!(t.partitions[2].last, g.new_last);
        let ext = t.primary[1];
        assert_eq!(
            u64::from(ext.start) + u64::from(ext.sectors) - 1,
            g.new_last
        );
        let err = table::plan_grow(&img, img.geometry, 5, 0).unwrap_err();
        assert!(err.contains("not the last"), "{}", err);
    }
}

#[test]
fn mbr_ebr_chains_that_loop_or_leave_the_extended_partition_are_refused() {
    let mut img = mbr_with_logicals(512);
    let before = img.checksum();
    let ext_start = 101 * 2048u64;
    // EBR 2 links back to EBR 1.
    let mut ebr2 = img.read_at((ext_start + 52 * 2048) * 512, 512).unwrap();
    mbr_entry(&mut ebr2, 1, 0x05, 0, 100);
    img.write((ext_start + 52 * 2048) * 512, &ebr2);
    img.grow_to(3 * GIB);
    let err = table::plan_grow(&img, img.geometry, 6, 0).unwrap_err();
    assert!(err.contains("EBR chain"), "{}", err);
    assert_ne!(before, img.checksum());

    let mut img = mbr_with_logicals(512);
    let mut ebr2 = img.read_at((ext_start + 52 * 2048) * 512, 512).unwrap();
    mbr_entry(&mut ebr2, 0, 0x83, 2048, 5_000_000);
    img.write((ext_start + 52 * 2048) * 512, &ebr2);
    let err = table::plan_grow(&img, img.geometry, 6, 0).unwrap_err();
    assert!(err.contains("outside its extended"), "{}", err);
}

#[test]
fn mbr_primary_after_the_extended_partition_blocks_the_logicals() {
    let mut img = mbr_with_logicals(512);
    // Shrink nothing; add a primary 3 after the extended partition's end by moving the
    // extended partition's end back.
    let mut s = img.read_at(0, 512).unwrap();
    mbr_entry(&mut s, 1, 0x05, 101 * 2048, 1_000_000);
    mbr_entry(&mut s, 2, 0x83, 101 * 2048 + 1_000_000, 100_000);
    img.write(0, &s);
    let mut ebr2 = img.read_at((101 * 2048 + 52 * 2048) * 512, 512).unwrap();
    mbr_entry(&mut ebr2, 0, 0x83, 2048, 1_000_000 - 54 * 2048);
    img.write((101 * 2048 + 52 * 2048) * 512, &ebr2);
    img.grow_to(3 * GIB);
    let err = table::plan_grow(&img, img.geometry, 6, 0).unwrap_err();
    assert!(
        err.contains("extended partition that is not the last"),
        "{}",
        err
    );
}

#[test]
fn the_root_spec_forms_are_recognised() {
    use super::{parse_root_spec, root_spec, RootSpec};
    use std::path::PathBuf;
    let cmdline = "BOOT_IMAGE=/vmlinuz root=/dev/sdb1 ro root=block:PARTUUID=ABC-01 quiet";
    assert_eq!(root_spec(cmdline).as_deref(), Some("PARTUUID=ABC-01"));
    assert_eq!(
        parse_root_spec("PARTUUID=ABC-01"),
        Some(RootSpec::PartUuid("ABC-01".into()))
    );
    assert_eq!(
        parse_root_spec("/dev/disk/by-uuid/1234"),
        Some(RootSpec::Uuid("1234".into()))
    );
    assert_eq!(
        parse_root_spec("LABEL=cloudimg-rootfs"),
        Some(RootSpec::Label("cloudimg-rootfs".into()))
    );
    assert_eq!(
        parse_root_spec("/dev/vda1"),
        Some(RootSpec::Path(PathBuf::from("/dev/vda1")))
    );
    assert!(matches!(parse_root_spec("8:1"), Some(RootSpec::DevNum(_))));
    assert_eq!(parse_root_spec("nfs"), None);
    assert_eq!(root_spec("quiet"), None);
}

#[test]
fn a_plan_describes_its_writes() {
    let mut img = Image::new(GIB, 512);
    make_gpt(&mut img, GIB, &[(2048, 2_097_118)]);
    img.grow_to(2 * GIB);
    let d = table::plan_grow(&img, img.geometry, 1, 0).unwrap();
    let text = d.describe().join("\n");
    assert!(
        text.contains("GPT table, 512-byte sectors; partition 1"),
        "{}",
        text
    );
    assert!(text.contains("backup GPT header"), "{}", text);
    assert!(text.contains("primary GPT header"), "{}", text);
}

/// Tables `sfdisk` made (the fuzz seeds: three bytes of fuzz header, then the disk's start).
fn sfdisk_seed(name: &str) -> Vec<u8> {
    let bytes: &[u8] = match name {
        "gpt-512" => include_bytes!("../../tests/fuzz/seeds/disk_table/gpt-512"),
        "gpt-4096" => include_bytes!("../../tests/fuzz/seeds/disk_table/gpt-4096"),
        _ => include_bytes!("../../tests/fuzz/seeds/disk_table/mbr-logicals-512"),
    };
    bytes[3..].to_vec()
}

#[test]
fn tables_sfdisk_made_are_read_as_sfdisk_dumps_them() {
    // sfdisk -d: 1 MiB disk, partitions at 34+100 and 134+100 (512) / 6+100 and 106+100
    // (4096 on an 8 MiB disk); MBR 1+10, extended 11+100 with logicals 13+20 and 40+50.
    for (name, ss, size, expected) in [
        ("gpt-512", 512u32, MIB, vec![(1, 34, 133), (2, 134, 233)]),
        ("gpt-4096", 4096, 8 * MIB, vec![(1, 6, 105), (2, 106, 205)]),
        (
            "mbr-logicals-512",
            512,
            MIB,
            vec![(1, 1, 10), (5, 13, 32), (6, 40, 89)],
        ),
    ] {
        let bytes = sfdisk_seed(name);
        let geometry = Geometry {
            size_bytes: size,
            sector_size: ss,
        };
        let mut disk = Image::new(size, ss);
        disk.write(0, &bytes[..bytes.len() / ss as usize * ss as usize]);
        let t = table::read(&disk, geometry).unwrap_or_else(|e| panic!("{}: {}", name, e));
        let got: Vec<(u32, u64, u64)> = t
            .partitions()
            .iter()
            .map(|p| (p.number, p.first, p.last))
            .collect();
        assert_eq!(got, expected, "{}", name);
        // Grown by 64 MiB, the last partition takes it (minimum 0).
        disk.grow_to(size + 64 * MIB);
        let last = expected.last().unwrap().0;
        let d = table::plan_grow(&disk, disk.geometry, last, 0).unwrap();
        let g = d.growth.clone().expect("grows");
        disk.apply(&d);
        let again = table::read(&disk, disk.geometry).unwrap();
        assert_eq!(
            again.partitions().last().unwrap().last,
            g.new_last,
            "{}",
            name
        );
    }
}

#[test]
fn mbr_partition_in_the_last_partial_mib_is_left_alone() {
    // Found by the fuzzer: the aligned end lies before the partition's start.
    let mut img = mbr_disk(512, 3 * MIB + 100 * 512, &[(0x83, 6144, 50)]);
    img.grow_to(3 * MIB + 100 * 512);
    let d = table::plan_grow(&img, img.geometry, 1, 0).unwrap();
    assert!(d.growth.is_none());
    assert!(d.reason.contains("already reaches"), "{}", d.reason);
    // A partition that ends beyond the disk is refused.
    let img = mbr_disk(512, 3 * MIB, &[(0x83, 2048, 100_000)]);
    let err = table::plan_grow(&img, img.geometry, 1, 0).unwrap_err();
    assert!(err.contains("beyond the disk"), "{}", err);
}

#[test]
fn mbr_last_logical_followed_by_an_empty_ebr_is_refused() {
    // Found by the fuzzer: growing logical 6 over a later (empty) EBR broke the chain.
    let mut img = mbr_with_logicals(512);
    let ext_start = 101 * 2048u64;
    let ebr2_at = ext_start + 52 * 2048;
    let mut ebr2 = img.read_at(ebr2_at * 512, 512).unwrap();
    mbr_entry(&mut ebr2, 0, 0x83, 2048, 100 * 2048);
    mbr_entry(&mut ebr2, 1, 0x05, (52 + 200) * 2048, 2048);
    img.write(ebr2_at * 512, &ebr2);
    img.write((ext_start + 252 * 2048) * 512, &signed_sector(512));
    img.grow_to(3 * GIB);
    let Table::Mbr(t) = table::read(&img, img.geometry).unwrap() else {
        panic!("not an MBR");
    };
    assert_eq!(t.logical.len(), 2);
    let err = table::plan_grow(&img, img.geometry, 6, 0).unwrap_err();
    assert!(err.contains("another EBR follows"), "{}", err);
}
