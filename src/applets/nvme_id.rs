//! `google_nvme_id`: Compute Engine disk names without nvme-cli or udev's helpers.
//! `DEVICE` (or `-d DEVICE` as the original was called: `-d` is the shared debug flag, so
//! both forms work) prints `ID_SERIAL_SHORT=`/`ID_SERIAL=` for udev's `IMPORT{program}` (or,
//! with `-s`, makes the `/dev/disk/by-id/google-*` link itself); `--mdev` is the helper of
//! the busybox `mdev.conf` lines, making and removing the links for `$MDEV` on `$ACTION`.

use std::path::{Path, PathBuf};

use super::{Applet, Invocation, Output};
use crate::nvme_id::{self, DiskName};

pub(crate) static APPLET: Applet = Applet {
    name: "google_nvme_id",
    run: main,
    logger: "google-nvme-id",
    output: Output::Terminal,
    summary: "Compute Engine disk names for udev (ID_SERIAL_SHORT=) and mdev links",
    usage: USAGE,
};

const USAGE: &str = "[-d] DEVICE [-s] | --mdev [--sys DIR] [--dev DIR]

  DEVICE     the NVMe namespace to name (/dev/nvme0n1); a regular file is read as a
             captured Identify Namespace page (nvme id-ns -b). The original's
             `-d DEVICE` works too (-d is the shared --debug: debug lines go to stderr)
  -s         make /dev/disk/by-id/google-NAME[-partN] instead of printing the names
  --mdev     from mdev.conf: links for the device $MDEV on $ACTION (sd*, vd*, nvme*)
  --sys DIR  sysfs (default /sys)
  --dev DIR  the device directory (default /dev)
Exit status 1: the device has no Compute Engine name.";

fn main(inv: &Invocation) -> i32 {
    let mut opts = getopts::Options::new();
    opts.optflag("s", "symlink", "")
        .optflag("", "mdev", "")
        .optopt("", "sys", "", "DIR")
        .optopt("", "dev", "", "DIR");
    let m = match inv.parse(&opts) {
        Ok(m) => m,
        Err(status) => return status,
    };
    let sys = PathBuf::from(m.opt_str("sys").unwrap_or_else(|| "/sys".into()));
    let dev = PathBuf::from(m.opt_str("dev").unwrap_or_else(|| "/dev".into()));
    if m.opt_present("mdev") {
        let name = std::env::var("MDEV").unwrap_or_default();
        let action = std::env::var("ACTION").unwrap_or_default();
        if name.is_empty() || name.contains('/') {
            return inv.usage_error("--mdev needs the device name in $MDEV");
        }
        if let Some(extra) = m.free.first() {
            return inv.usage_error(format_args!("unexpected argument {} (see --help)", extra));
        }
        return mdev(&sys, &dev, &name, &action);
    }
    let [device] = m.free.as_slice() else {
        return inv.usage_error("give one DEVICE or --mdev (see --help)");
    };
    let device = PathBuf::from(device);
    let page = match nvme_id::identify_namespace(&device) {
        Ok(page) => page,
        Err(e) => {
            error!("{}", e);
            return 1;
        }
    };
    let Some(name) = nvme_id::device_name_from_identify(&page) else {
        error!("{}: no device name in the vendor area", device.display());
        return 1;
    };
    let name = DiskName::Persistent(name);
    if !m.opt_present("s") {
        print!("{}", name.udev_properties());
        return 0;
    }
    let kernel_name = device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partition = nvme_id::block_device(&sys, &kernel_name)
        .ok()
        .and_then(|b| b.partition);
    let changes = nvme_id::plan_links("add", &kernel_name, Some(&name), partition);
    apply(&dev, &changes)
}

/// One mdev event: the device's disk is named from sysfs (and the NVMe ioctl), then its
/// link made or removed. A device without a Compute Engine name is left alone (status 0,
/// so mdev goes on quietly).
fn mdev(sys: &Path, dev: &Path, name: &str, action: &str) -> i32 {
    if action == "remove" {
        // The device is gone from sysfs: remove whatever link points at it.
        return remove_links_to(dev, name);
    }
    let block = match nvme_id::block_device(sys, name) {
        Ok(b) => b,
        Err(e) => {
            error!("{}", e);
            return 1;
        }
    };
    let disk_name = match nvme_id::disk_name(sys, dev, &block.disk) {
        Ok(n) => n,
        Err(e) => {
            warn!("{}: {}", name, e);
            return 0;
        }
    };
    let changes = nvme_id::plan_links(action, name, disk_name.as_ref(), block.partition);
    apply(dev, &changes)
}

fn remove_links_to(dev: &Path, name: &str) -> i32 {
    let dir = dev.join(nvme_id::BY_ID_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let changes: Vec<_> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|link| link.starts_with("google-"))
        .map(|link| nvme_id::LinkChange::Remove {
            link,
            target: format!("../../{}", name),
        })
        .collect();
    apply(dev, &changes)
}

fn apply(dev: &Path, changes: &[nvme_id::LinkChange]) -> i32 {
    match nvme_id::apply_links(dev, changes) {
        Ok(()) => 0,
        Err(e) => {
            error!("{}", e);
            1
        }
    }
}
