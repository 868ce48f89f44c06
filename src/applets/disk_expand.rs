//! `google_disk_expand`: grows the root partition and its file system to fill the disk
//! before or after the root is mounted. Option parsing and wiring only; the work is in `crate::disk`.

use std::path::PathBuf;

use super::{Applet, Invocation, Output};
use crate::disk::{self, Request, Status, Target};
use crate::settings::Settings;

pub(crate) static APPLET: Applet = Applet {
    name: "google_disk_expand",
    run: main,
    logger: "disk-expand",
    output: Output::System,
    summary: "grow the root partition and file system to fill the disk",
    usage: USAGE,
};

const USAGE: &str = "[--dry-run] [--partition-only] [--offline-fs] [--min-mib N]
                          [--device DISK --partition N [--sector-size BYTES]]

Without --device: the partition of the root file system (or of root= on the kernel
command line while / is still the initramfs), found through sysfs. It is grown when it
is the last partition on its disk and at least [InstanceSetup] disk_expand_min_mib
(default 512) MiB would be gained; then its file system (ext2/3/4, xfs) is grown, also
when the partition had been grown before. Device-mapper (LVM), md and loop roots are
not touched. Automatic runs do their work once per boot (markers in
/run/google_disk_expand/); a second run says so and does nothing.
  -n, --dry-run         print the plan, change nothing
      --partition-only  grow the partition only (initramfs, before / is mounted);
                        the file system is grown by a later run once it is mounted
      --offline-fs      grow an unmounted ext2/3/4 file system with e2fsck + resize2fs
      --device DISK     a whole disk (block device) or an image file
      --partition N     the partition number on DISK (with --device)
      --sector-size B   logical sector size of an image file (default 512)
      --min-mib N       override disk_expand_min_mib
Exit status: 0 grown or nothing to do (also: root left alone on purpose), 1 an error or,
with --device, a disk left alone on purpose, 2 bad usage.";

fn main(inv: &Invocation) -> i32 {
    let mut opts = getopts::Options::new();
    opts.optflag("n", "dry-run", "")
        .optflag("", "partition-only", "")
        .optflag("", "offline-fs", "")
        .optopt("", "device", "", "DISK")
        .optopt("", "partition", "", "N")
        .optopt("", "sector-size", "", "BYTES")
        .optopt("", "min-mib", "", "N");
    let m = match inv.parse(&opts) {
        Ok(m) => m,
        Err(status) => return status,
    };
    if let Some(extra) = m.free.first() {
        return inv.usage_error(format_args!("unexpected argument {} (see --help)", extra));
    }
    let number = |name: &str| m.opt_str(name).map(|v| v.parse::<u32>().map_err(|_| v));
    let target = match (m.opt_str("device"), number("partition")) {
        (None, None) => Target::Root,
        (Some(device), Some(Ok(partition))) if partition > 0 => Target::Explicit {
            device: PathBuf::from(device),
            partition,
        },
        (Some(_), None) | (None, Some(_)) => {
            return inv.usage_error("--device and --partition go together")
        }
        _ => return inv.usage_error("--partition takes a partition number"),
    };
    let sector_size = match number("sector-size") {
        None => None,
        Some(Ok(s)) if [512, 1024, 2048, 4096].contains(&s) => Some(s),
        Some(_) => return inv.usage_error("--sector-size is 512, 1024, 2048 or 4096"),
    };
    let mut settings = Settings::load().setup;
    match number("min-mib") {
        None => {}
        Some(Ok(mib)) => settings.disk_expand_min_mib = u64::from(mib),
        Some(Err(_)) => return inv.usage_error("--min-mib takes whole MiB"),
    }
    let explicit = matches!(target, Target::Explicit { .. });
    let request = Request {
        target,
        dry_run: m.opt_present("n"),
        partition_only: m.opt_present("partition-only"),
        offline_fs: m.opt_present("offline-fs"),
        sector_size,
    };
    match disk::run(&request, &settings) {
        Ok(Status::Done) => 0,
        Ok(Status::Refused) => i32::from(explicit),
        Err(e) => {
            error!("{}", e);
            1
        }
    }
}
