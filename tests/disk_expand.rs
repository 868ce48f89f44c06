//! `google_disk_expand` for real: the built binary grows partition tables made by `sfdisk`
//! on sparse image files and on loop devices (512- and 4096-byte logical sectors, partitions
//! added with `partx -a` because this kernel has no partition parsers), with `sfdisk -V`,
//! `sgdisk -v`, `df`, `e2fsck -fn` and `xfs_repair -n` as the oracles. Every run happens in
//! a private mount namespace (its own /run, /dev/console and /dev/log on /dev/null); every
//! loop and device-mapper device is detached by a guard, whatever happens.
//!
//! Needs root and the programs of [`TOOLS`] (util-linux, mount, fdisk, gdisk, xfsprogs,
//! e2fsprogs and dmsetup, as `tools/prereqs.sh` lists them); skipped without them, failed
//! under `CI=true`.
//! Run: `cargo test --features emulator,test-hooks --test integration disk_expand::`.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File};
use std::hash::Hasher;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Instant;

use crate::common::{self, Scratch};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const KILL_ENV: &str = "GCE_GUEST_TEST_DISK_EXPAND_KILL";
const TOOLS: [&str; 16] = [
    "blkid",
    "losetup",
    "mount",
    "umount",
    "partx",
    "sfdisk",
    "sgdisk",
    "mkfs.xfs",
    "xfs_repair",
    "mkfs.ext4",
    "e2fsck",
    "dmsetup",
    "unshare",
    "resize2fs",
    "dumpe2fs",
    "mountpoint",
];

/// Skips (or fails under CI=true) unless root and every tool is here.
macro_rules! need_root {
    () => {
        if let Err(reason) = available() {
            common::skip_or_fail(&reason);
            return;
        }
    };
}

fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("disk expansion tests need root".into());
    }
    let path = format!(
        "{}:/sbin:/usr/sbin",
        std::env::var("PATH").unwrap_or_default()
    );
    for tool in TOOLS {
        common::find_tool(tool, path.as_ref())?;
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("no loop devices here".into());
    }
    Ok(())
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&format!("{}:/sbin:/usr/sbin", path))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gce-guest"))
}

/// Runs a command; panics when it cannot start.
fn sh(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {}", program, e))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = sh(program, args);
    assert!(
        out.status.success(),
        "{} {:?} failed: {}{}",
        program,
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A sparse image of `size` bytes with the table `sfdisk` makes from `script`.
fn image(path: &Path, size: u64, script: &str) {
    let _ = fs::remove_file(path);
    File::create(path).unwrap().set_len(size).unwrap();
    partition(path.to_str().unwrap(), script);
}

/// Runs `sfdisk` with `script` on `target` (a file or a disk; the sector size is the disk's).
fn partition(target: &str, script: &str) {
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(target)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sfdisk: {}", text(&out));
}

fn grow_file(path: &Path, size: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(size)
        .unwrap();
}

/// A hash of the whole file: every data extent (found with SEEK_DATA/SEEK_HOLE, so a
/// sparse 3 GiB image hashes quickly) with its offset. Writing even zeros into a hole
/// changes it.
fn checksum(path: &Path) -> u64 {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as i64;
    let mut h = DefaultHasher::new();
    let mut at: i64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    while at < len {
        // SAFETY: lseek on a descriptor we own; no memory is passed.
        let data = unsafe { libc::lseek(f.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
        h.write_i64(data);
        let mut pos = data;
        while pos < hole {
            let n = ((hole - pos) as usize).min(buf.len());
            f.read_exact_at(&mut buf[..n], pos as u64).unwrap();
            h.write(&buf[..n]);
            pos += n as i64;
        }
        h.write_i64(hole);
        at = hole;
    }
    h.finish()
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// Runs `script` in a private mount namespace with /run, /dev/console and /dev/log made
/// private, so log lines and markers stay inside. `$BIN` is the gce-guest binary.
fn in_namespace(script: &str, env: &[(&str, &str)]) -> Output {
    let prelude = "mount -t tmpfs tmpfs /run && mount --bind /dev/null /dev/console && \
                   { [ ! -e /dev/log ] || mount --bind /dev/null /dev/log 2>/dev/null || true; } && ";
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("{}{}", prelude, script))
        .env("BIN", bin())
        .env_remove(KILL_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run unshare")
}

/// `google_disk_expand ARGS` in a private namespace.
fn expand(args: &str) -> Output {
    in_namespace(
        &format!("exec \"$BIN\" google_disk_expand -d {}", args),
        &[],
    )
}

static LOOP_SETUP: Mutex<()> = Mutex::new(());

/// A loop device over an image file (partitions added with `partx -a`); detached on drop.
struct Loop {
    dev: String,
}

impl Loop {
    fn attach(file: &Path, sector_size: u32) -> Loop {
        let _serial = LOOP_SETUP.lock().unwrap_or_else(|e| e.into_inner());
        let dev = ok(
            "losetup",
            &[
                "-f",
                "--show",
                "--sector-size",
                &sector_size.to_string(),
                file.to_str().unwrap(),
            ],
        )
        .trim()
        .to_string();
        Loop { dev }
    }

    fn part(&self, n: u32) -> String {
        format!("{}p{}", self.dev, n)
    }

    fn name(&self) -> &str {
        self.dev.trim_start_matches("/dev/")
    }

    /// The kernel's size of partition `n`, in bytes.
    fn part_bytes(&self, n: u32) -> u64 {
        let p = format!(
            "/sys/class/block/{}/{}p{}/size",
            self.name(),
            self.name(),
            n
        );
        fs::read_to_string(&p)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
            * 512
    }

    /// Tells the loop driver its file grew.
    fn refresh(&self) {
        ok("losetup", &["-c", &self.dev]);
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = sh("partx", &["-d", &self.dev]);
        let _ = sh("losetup", &["-d", &self.dev]);
    }
}

/// A device-mapper linear device; removed on drop.
struct Dm {
    name: String,
}

impl Dm {
    fn linear(name: &str, over: &str, sectors_512: u64) -> Dm {
        let table = format!("0 {} linear {} 0", sectors_512, over);
        ok("dmsetup", &["create", name, "--table", &table]);
        Dm {
            name: name.to_string(),
        }
    }

    fn path(&self) -> String {
        format!("/dev/mapper/{}", self.name)
    }
}

impl Drop for Dm {
    fn drop(&mut self) {
        let _ = sh("dmsetup", &["remove", "--retry", &self.name]);
    }
}

/// `sfdisk -d` as (header lines, partition lines).
fn dump(target: &str) -> String {
    ok("sfdisk", &["-d", target])
}

fn dump_field(dump: &str, key: &str) -> Option<String> {
    dump.lines()
        .find_map(|l| l.strip_prefix(&format!("{}: ", key)).map(str::to_string))
}

/// The (start, size) sfdisk shows for a partition line ending in `name`.
fn dump_extent(dump: &str, name: &str) -> (u64, u64) {
    let line = dump
        .lines()
        .find(|l| l.starts_with(&format!("{} ", name)))
        .unwrap_or_else(|| panic!("{} not in {}", name, dump));
    let num = |key: &str| -> u64 {
        let at = line.find(key).unwrap() + key.len();
        line[at..]
            .trim_start()
            .split(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (num("start="), num("size="))
}

fn assert_sgdisk_clean(target: &str) {
    let out = sh("sgdisk", &["-v", target]);
    let t = text(&out);
    assert!(out.status.success(), "sgdisk -v: {}", t);
    assert!(t.contains("No problems found"), "sgdisk -v: {}", t);
    for bad in ["mismatch", "overlap", "corrupt", "beyond", "Problem"] {
        assert!(!t.contains(bad), "sgdisk -v says {}: {}", bad, t);
    }
}

fn assert_sfdisk_clean(target: &str) {
    let out = sh("sfdisk", &["-V", target]);
    let t = text(&out);
    assert!(out.status.success(), "sfdisk -V: {}", t);
    assert!(t.contains("No errors detected"), "sfdisk -V: {}", t);
    assert!(!t.to_lowercase().contains("warning"), "sfdisk -V: {}", t);
}

/// The end (exclusive, in sectors) a GPT partition grown by the rules reaches: the last
/// usable sector + 1 (disk minus backup array and header), rounded down to 1 MiB.
fn gpt_expected_end(disk_bytes: u64, ss: u64) -> u64 {
    let last_usable = disk_bytes / ss - 1 - 128 * 128 / ss - 1;
    (last_usable + 1) / (MIB / ss) * (MIB / ss)
}

#[test]
fn gpt_image_file_grows_and_sfdisk_and_sgdisk_agree() {
    need_root!();
    let dir = Scratch::new("gpt-file");
    let img = dir.join("disk.img");
    image(
        &img,
        GIB,
        "label: gpt\nsize=100M, type=L, name=boot\ntype=L, name=root\n",
    );
    let before = dump(img.to_str().unwrap());
    grow_file(&img, 3 * GIB);
    let name2 = format!("{}2", img.display());
    let (start, _) = dump_extent(&before, &name2);

    let dry = expand(&format!(
        "--dry-run --device {} --partition 2",
        img.display()
    ));
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("grow partition 2"), "{}", text(&dry));
    let sum = checksum(&img);
    assert_eq!(checksum(&img), sum, "--dry-run wrote nothing");

    let out = expand(&format!("--device {} --partition 2", img.display()));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("grew partition 2"), "{}", text(&out));
    let p = img.to_str().unwrap();
    assert_sfdisk_clean(p);
    assert_sgdisk_clean(p);
    let after = dump(p);
    let (start2, size2) = dump_extent(&after, &name2);
    assert_eq!(start2, start);
    assert_eq!(
        start2 + size2,
        gpt_expected_end(3 * GIB, 512),
        "exact new end"
    );
    // Disk GUID, partition GUIDs and names kept; the backup header at the last sector.
    assert_eq!(
        dump_field(&before, "label-id"),
        dump_field(&after, "label-id")
    );
    for (a, b) in before
        .lines()
        .zip(after.lines())
        .filter(|(a, _)| a.contains("uuid="))
    {
        let uuid = |l: &str| {
            l.split("uuid=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(uuid(a), uuid(b));
        assert_eq!(a.split("name=").nth(1), b.split("name=").nth(1));
    }
    let last = read_at(&img, 3 * GIB - 512, 512);
    assert_eq!(&last[..8], b"EFI PART", "backup header at the end");
    assert_eq!(
        u64::from_le_bytes(last[24..32].try_into().unwrap()),
        3 * GIB / 512 - 1
    );
    assert_eq!(
        dump_field(&after, "last-lba")
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        3 * GIB / 512 - 34
    );

    // A second run changes nothing and says why.
    let sum = checksum(&img);
    let again = expand(&format!("--device {} --partition 2", img.display()));
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("already reaches the end"),
        "{}",
        text(&again)
    );
    assert_eq!(checksum(&img), sum);
}

#[test]
fn gpt_image_file_with_4096_byte_sectors_grows_with_sector_size() {
    need_root!();
    let dir = Scratch::new("gpt-file-4k");
    let img = dir.join("disk.img");
    File::create(&img).unwrap().set_len(GIB).unwrap();
    {
        // sfdisk takes the sector size from the disk: partition through a 4096-byte loop.
        let l = Loop::attach(&img, 4096);
        partition(&l.dev, "label: gpt\n,100M\n,\n");
    }
    grow_file(&img, 3 * GIB);
    let out = expand(&format!(
        "--sector-size 4096 --device {} --partition 2",
        img.display()
    ));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("grew partition 2"), "{}", text(&out));
    let l = Loop::attach(&img, 4096);
    assert_sgdisk_clean(&l.dev);
    assert_sfdisk_clean(&l.dev);
    let (start, size) = dump_extent(&dump(&l.dev), &format!("{}p2", l.dev));
    assert_eq!(
        start + size,
        gpt_expected_end(3 * GIB, 4096),
        "exact new end"
    );
    let last = read_at(&img, 3 * GIB - 4096, 8);
    assert_eq!(
        &last, b"EFI PART",
        "backup header in the last 4096-byte sector"
    );
}

#[test]
fn mbr_image_file_grows_a_primary_and_the_last_logical() {
    need_root!();
    let dir = Scratch::new("mbr-file");
    let img = dir.join("disk.img");
    let p = img.to_str().unwrap().to_string();
    image(&img, GIB, "label: dos\n,100M\n,\n");
    grow_file(&img, 3 * GIB);
    let out = expand(&format!("--device {} --partition 2", p));
    assert!(out.status.success(), "{}", text(&out));
    assert_sfdisk_clean(&p);
    let (start, size) = dump_extent(&dump(&p), &format!("{}2", p));
    assert_eq!(start + size, 3 * GIB / 512, "exact new end");

    image(&img, GIB, "label: dos\n,100M\n,,E\n,50M\n,\n");
    let before = dump(&p);
    grow_file(&img, 3 * GIB);
    let out = expand(&format!("--device {} --partition 6", p));
    assert!(out.status.success(), "{}", text(&out));
    assert_sfdisk_clean(&p);
    let after = dump(&p);
    assert_eq!(
        dump_field(&before, "label-id"),
        dump_field(&after, "label-id")
    );
    let (s6, z6) = dump_extent(&after, &format!("{}6", p));
    let (s2, z2) = dump_extent(&after, &format!("{}2", p));
    assert_eq!(s6 + z6, 3 * GIB / 512);
    assert_eq!(
        s2 + z2,
        3 * GIB / 512,
        "the extended partition grew with it"
    );
    assert_eq!(
        dump_extent(&before, &format!("{}5", p)),
        dump_extent(&after, &format!("{}5", p))
    );
}

#[test]
fn doubtful_disks_are_left_byte_for_byte_alone() {
    need_root!();
    let dir = Scratch::new("refuse");
    let img = dir.join("disk.img");
    let p = img.to_str().unwrap().to_string();
    let cases: [(&str, u32, &str); 4] = [
        ("label: gpt\n,100M\n,500M\n", 1, "is not the last"),
        ("label: dos\n,100M\n,500M\n", 1, "is not the last"),
        ("", 1, "no partition table"),
        ("label: gpt\n,\n", 1, "CRC is wrong"),
    ];
    for (script, number, why) in cases {
        if script.is_empty() {
            let _ = fs::remove_file(&img);
            File::create(&img).unwrap().set_len(GIB).unwrap();
        } else {
            image(&img, GIB, script);
        }
        if why.contains("CRC") {
            // Flip one bit of the partition array.
            let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
            let mut b = read_at(&img, 1024 + 40, 1);
            b[0] ^= 1;
            f.write_all_at(&b, 1024 + 40).unwrap();
        }
        grow_file(&img, 3 * GIB);
        let sum = checksum(&img);
        let out = expand(&format!("--device {} --partition {}", p, number));
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(why), "{}: {}", why, text(&out));
        assert_eq!(checksum(&img), sum, "nothing written ({})", why);
    }
}

/// A 1 GiB GPT image on a loop device with `fs` on partition 2, grown to 3 GiB.
fn loop_disk(dir: &Scratch, ss: u32, mkfs: &[&str]) -> (PathBuf, Loop) {
    loop_disk_labelled(dir, ss, "gpt", mkfs)
}

/// Like [`loop_disk`] with the label type given (`gpt` or `dos`).
fn loop_disk_labelled(dir: &Scratch, ss: u32, label: &str, mkfs: &[&str]) -> (PathBuf, Loop) {
    let img = dir.join("disk.img");
    File::create(&img).unwrap().set_len(GIB).unwrap();
    let l = Loop::attach(&img, ss);
    partition(&l.dev, &format!("label: {}\n,100M\n,\n", label));
    ok("partx", &["-a", &l.dev]);
    let mut args: Vec<&str> = mkfs[1..].to_vec();
    let part = l.part(2);
    args.push(&part);
    ok(mkfs[0], &args);
    grow_file(&img, 3 * GIB);
    l.refresh();
    (img, l)
}

fn df_bytes_script(mnt: &str) -> String {
    format!("df -B1 --output=size {} | tail -1", mnt)
}

/// Mounts partition 2 of `l` under `dir`, runs `google_disk_expand` on the disk while it is
/// mounted, and unmounts it; the run must succeed. Gives its output and the file system's
/// size in bytes (`df`) before and after.
fn grow_mounted(dir: &Scratch, l: &Loop) -> (String, Vec<u64>) {
    let mnt = dir.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let m = mnt.display().to_string();
    let script = format!(
        "mount {part} {m} && {df} && \"$BIN\" google_disk_expand -d --device {dev} --partition 2; \
         rc=$?; {df}; umount {m}; exit $rc",
        part = l.part(2),
        dev = l.dev,
        df = df_bytes_script(&m),
    );
    let out = in_namespace(&script, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{}", t);
    let sizes = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    (t, sizes)
}

fn xfs_grows_online(ss: u32, label: &str) {
    need_root!();
    let dir = Scratch::new(&format!("xfs-{}-{}", ss, label));
    let (_img, l) = loop_disk_labelled(&dir, ss, label, &["mkfs.xfs", "-q", "-f"]);
    let (t, sizes) = grow_mounted(&dir, &l);
    assert_eq!(sizes.len(), 2, "{}", t);
    assert!(sizes[1] > sizes[0] + GIB + GIB / 2, "df grew: {:?}", sizes);
    assert!(t.contains("grew the file system"), "{}", t);
    let ssu = u64::from(ss);
    let (start, size) = dump_extent(&dump(&l.dev), &l.part(2));
    if label == "gpt" {
        assert_eq!(start + size, gpt_expected_end(3 * GIB, ssu));
        assert_sgdisk_clean(&l.dev);
    } else {
        assert_eq!(start + size, 3 * GIB / ssu);
    }
    assert_eq!(l.part_bytes(2), size * ssu, "the kernel was told");
    assert_sfdisk_clean(&l.dev);
    ok("xfs_repair", &["-n", &l.part(2)]);
}

#[test]
fn xfs_on_a_512_byte_sector_loop_disk_grows_online() {
    xfs_grows_online(512, "gpt");
}

#[test]
fn xfs_on_a_4096_byte_sector_loop_disk_grows_online() {
    xfs_grows_online(4096, "gpt");
}

#[test]
fn xfs_on_a_4096_byte_sector_mbr_loop_disk_grows_online() {
    xfs_grows_online(4096, "dos");
}

/// Whether this process holds CAP_SYS_RESOURCE (online ext4 growth needs it).
fn has_sys_resource() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    eff & (1 << 24) != 0
}

#[test]
fn ext4_grows_offline_and_online_or_says_why_not() {
    need_root!();
    let dir = Scratch::new("ext4");
    let (_img, l) = loop_disk(&dir, 4096, &["mkfs.ext4", "-q", "-F"]);
    // Not mounted, no --offline-fs: the partition grows, the file system waits.
    let out = expand(&format!("--device {} --partition 2", l.dev));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is not mounted"), "{}", text(&out));
    // --offline-fs: grown now with e2fsck + resize2fs.
    let out = expand(&format!("--offline-fs --device {} --partition 2", l.dev));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("grew the file system"),
        "{}",
        text(&out)
    );
    ok("e2fsck", &["-fn", &l.part(2)]);
    let info = ok("dumpe2fs", &["-h", &l.part(2)]);
    let field = |k: &str| -> u64 {
        info.lines()
            .find_map(|x| x.strip_prefix(k))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        field("Block count:") * field("Block size:") / MIB,
        l.part_bytes(2) / MIB
    );

    // Online: a second disk, mounted.
    let dir2 = Scratch::new("ext4-online");
    let (_img2, l2) = loop_disk(&dir2, 512, &["mkfs.ext4", "-q", "-F"]);
    let (t, sizes) = grow_mounted(&dir2, &l2);
    if has_sys_resource() {
        assert!(sizes[1] > sizes[0] + GIB, "{:?} {}", sizes, t);
    } else {
        assert_eq!(
            t.matches("file system not grown").count(),
            1,
            "one clear line: {}",
            t
        );
        assert!(t.contains("CAP_SYS_RESOURCE"), "{}", t);
        assert_eq!(sizes[0], sizes[1]);
    }
    assert_eq!(
        l2.part_bytes(2) / 512,
        dump_extent(&dump(&l2.dev), &l2.part(2)).1,
        "the kernel was told"
    );
    ok("e2fsck", &["-fn", &l2.part(2)]);
}

#[test]
fn a_kill_between_the_table_and_the_file_system_is_finished_by_the_next_run() {
    need_root!();
    let dir = Scratch::new("kill");
    let (_img, l) = loop_disk(&dir, 512, &["mkfs.xfs", "-q", "-f"]);
    let old_kernel_size = l.part_bytes(2);
    let mnt = dir.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let m = mnt.display().to_string();
    let run = format!(
        "\"$BIN\" google_disk_expand -d --device {} --partition 2",
        l.dev
    );
    let script = format!(
        "mount {part} {m} && {df} && {{ {run}; echo status=$?; }}; {df}; {run}; rc=$?; {df}; umount {m}; exit $rc",
        part = l.part(2),
        df = df_bytes_script(&m),
    );
    let out = in_namespace(&script, &[(KILL_ENV, "after-table")]);
    // The hook fires on every run that writes a table: only the first one does.
    let t = text(&out);
    assert!(out.status.success(), "{}", t);
    assert!(t.contains("status=137"), "the first run was killed: {}", t);
    let sizes: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(sizes.len(), 3, "{}", t);
    assert_eq!(sizes[0], sizes[1], "killed before the file system grew");
    assert!(sizes[2] > sizes[0] + GIB + GIB / 2, "{:?}", sizes);
    assert!(t.contains("already reaches the end"), "{}", t);
    assert!(t.contains("the kernel now sees"), "{}", t);
    assert!(l.part_bytes(2) > old_kernel_size);
    assert_sgdisk_clean(&l.dev);
    ok("xfs_repair", &["-n", &l.part(2)]);
}

/// Whether the kernel has device-mapper (these machines' kernel does not).
fn device_mapper_available() -> bool {
    fs::read_to_string("/proc/misc")
        .map(|m| m.contains("device-mapper"))
        .unwrap_or(false)
}

/// Shell lines that mount a fake sysfs at `$M/sys` in which the device of `$M`'s file
/// system is `dm-0`, a device-mapper device (for kernels without device-mapper).
const FAKE_DM_SYSFS: &str = "mount -t tmpfs fake \"$M/sys\" && DEV=$(mountpoint -d \"$M\") && \
    mkdir -p \"$M/sys/devices/virtual/block/dm-0/dm\" \"$M/sys/dev/block\" && \
    echo \"$DEV\" > \"$M/sys/devices/virtual/block/dm-0/dev\" && \
    ln -s ../../devices/virtual/block/dm-0 \"$M/sys/dev/block/$DEV\" && ";

#[test]
fn stacked_and_loop_roots_are_not_expanded_and_a_second_run_says_so() {
    need_root!();
    let dir = Scratch::new("stacked");
    let (img, l) = loop_disk(&dir, 512, &["mkfs.ext4", "-q", "-F"]);
    let mnt = dir.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let table_before = dump(&l.dev);
    let ends = |p: &Path| {
        let len = fs::metadata(p).unwrap().len();
        (
            read_at(p, 0, MIB as usize),
            read_at(p, len - MIB, MIB as usize),
        )
    };
    let before = ends(&img);
    // `--root $M` chroots into the mount, so `/` is the device mounted there. With a real
    // device-mapper: a linear dm device over the partition; without: the partition with a
    // sysfs that calls it dm-0.
    let dm = device_mapper_available().then(|| {
        Dm::linear(
            &format!("gce-disk-test-{}", std::process::id()),
            &l.part(2),
            l.part_bytes(2) / 512,
        )
    });
    let dm_root = match &dm {
        Some(dm) => format!("mount {} \"$M\" && ", dm.path()),
        None => format!(
            "mount {} \"$M\" && mkdir -p \"$M/sys\" && {}",
            l.part(2),
            FAKE_DM_SYSFS
        ),
    };
    let run = "mkdir -p \"$M/run\" && mount -t tmpfs run \"$M/run\" && \"$BIN\" --root \"$M\" google_disk_expand -d; echo rc=$?; ";
    let script = format!(
        "M={m}; {dm_root}{run}umount -R \"$M\"; \
         mount {part} \"$M\" && {run}\"$BIN\" --root \"$M\" google_disk_expand -d; echo rc=$?; umount -R \"$M\"",
        m = mnt.display(),
        part = l.part(2),
    );
    let out = in_namespace(&script, &[]);
    let t = text(&out);
    assert!(t.contains("is a device-mapper device"), "{}", t);
    assert!(t.contains("disk loop"), "{}", t);
    assert!(t.contains("is a loop device"), "{}", t);
    assert!(t.contains("already ran in this boot"), "{}", t);
    assert_eq!(t.matches("rc=0").count(), 3, "{}", t);
    drop(dm);
    assert_eq!(dump(&l.dev), table_before);
    assert!(ends(&img) == before, "the table areas are unchanged");
}

#[test]
fn root_on_the_kernel_command_line_is_found_without_udev() {
    need_root!();
    let dir = Scratch::new("cmdline");
    let (_img, l) = loop_disk(&dir, 512, &["mkfs.ext4", "-q", "-F", "-L", "gcetestroot"]);
    let uuid = ok("blkid", &["-s", "UUID", "-o", "value", &l.part(2)]);
    let partuuid = ok("blkid", &["-s", "PARTUUID", "-o", "value", &l.part(2)]);
    let (uuid, partuuid) = (uuid.trim(), partuuid.trim().to_uppercase());
    let cmdline = dir.join("cmdline");
    let m = dir.join("initramfs");
    fs::create_dir_all(&m).unwrap();
    let specs = [
        format!("UUID={}", uuid),
        format!("PARTUUID={}", partuuid),
        format!("/dev/disk/by-partuuid/{}", partuuid),
        "LABEL=gcetestroot".to_string(),
        l.part(2),
    ];
    let disk_line = format!("the root's disk {} is a loop device", l.name());
    // `/` is a tmpfs (an initramfs) whose /proc/cmdline says root=SPEC.
    for spec in specs
        .iter()
        .map(String::as_str)
        .chain(["UUID=00000000-1111-2222-3333-444444444444"])
    {
        fs::write(
            &cmdline,
            format!("BOOT_IMAGE=/vmlinuz root={} ro quiet\n", spec),
        )
        .unwrap();
        let script = format!(
            "M={m}; mount -t tmpfs initramfs \"$M\" && mkdir -p \"$M/proc\" \"$M/run\" && \
             mount -t proc proc \"$M/proc\" && mount --bind {c} \"$M/proc/cmdline\" && \
             \"$BIN\" --root \"$M\" google_disk_expand -d --partition-only; echo rc=$?",
            m = m.display(),
            c = cmdline.display()
        );
        let t = text(&in_namespace(&script, &[]));
        assert!(t.contains("rc=0"), "{}: {}", spec, t);
        if spec.contains("0000") {
            assert!(
                t.contains("no block device matches root=UUID=0000"),
                "{}",
                t
            );
        } else {
            assert!(t.contains(&disk_line), "root={}: {}", spec, t);
        }
    }
}

/// `make bench`: 1 GiB -> 16 GiB GPT image with ext4 on a loop device, ours vs growpart +
/// resize2fs (cloud-guest-utils, installed for the comparison). The partition step and the
/// file-system step (both offline: e2fsck + resize2fs, as root lacks CAP_SYS_RESOURCE here)
/// are timed apart; the median of three runs. Printed, never asserted.
#[test]
#[ignore]
fn bench_grow_1_to_16_gib() {
    need_root!();
    if find_in_path("growpart").is_none() {
        let _ = sh(
            "sh",
            &[
                "-c",
                "apt-get install -y -qq cloud-guest-utils >/dev/null 2>&1",
            ],
        );
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!("\n| 1 GiB -> 16 GiB GPT + ext4 (loop), median of 3 | partition s | file system s | total s |");
    println!("|---|---|---|---|");
    for tool in [
        "gce-guest google_disk_expand",
        "growpart + e2fsck + resize2fs",
    ] {
        let ours = tool.starts_with("gce-guest");
        if !ours && find_in_path("growpart").is_none() {
            println!("| {} | (growpart not available) | | |", tool);
            continue;
        }
        let (mut part_s, mut fs_s) = (Vec::new(), Vec::new());
        for round in 0..3 {
            let dir = Scratch::new(&format!("bench-{}-{}", ours, round));
            let img = dir.join("disk.img");
            image(&img, GIB, "label: gpt\n,100M\n,\n");
            let l = Loop::attach(&img, 512);
            ok("partx", &["-a", &l.dev]);
            ok("mkfs.ext4", &["-q", "-F", &l.part(2)]);
            grow_file(&img, 16 * GIB);
            l.refresh();
            let started = Instant::now();
            if ours {
                let out = expand(&format!(
                    "--partition-only --device {} --partition 2",
                    l.dev
                ));
                assert!(out.status.success(), "{}", text(&out));
            } else {
                let _ = sh("growpart", &[&l.dev, "2"]);
            }
            part_s.push(started.elapsed().as_secs_f64());
            let started = Instant::now();
            if ours {
                let out = expand(&format!("--offline-fs --device {} --partition 2", l.dev));
                assert!(out.status.success(), "{}", text(&out));
            } else {
                ok("e2fsck", &["-f", "-p", &l.part(2)]);
                ok("resize2fs", &[&l.part(2)]);
            }
            fs_s.push(started.elapsed().as_secs_f64());
        }
        let (p, f) = (median(part_s), median(fs_s));
        println!("| {} | {:.3} | {:.3} | {:.3} |", tool, p, f, p + f);
    }
}
