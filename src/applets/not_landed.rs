//! The programs whose features have not landed in this build yet: they are listed (so
//! `--install` makes their links) and exit 3 with a message.

use super::{Applet, Invocation, Output, EXIT_NOT_LANDED};

pub(crate) static DISK_EXPAND: Applet = Applet {
    name: "google_disk_expand",
    run: not_landed,
    logger: "disk-expand",
    output: Output::System,
    summary: "grow the root partition and file system to fill the disk",
    usage: "[-n] [DEVICE]",
};

pub(crate) static INSTANCE_SETUP: Applet = Applet {
    name: "google_instance_setup",
    run: not_landed,
    logger: "instance-setup",
    output: Output::System,
    summary: "boot-time setup: config, host keys, boto, local SSD, multiqueue, hostname",
    usage: "[-d]",
};

pub(crate) static OPTIMIZE_LOCAL_SSD: Applet = Applet {
    name: "google_optimize_local_ssd",
    run: not_landed,
    logger: "optimize-local-ssd",
    output: Output::System,
    summary: "tune local SSD queues and IRQ affinity",
    usage: "",
};

pub(crate) static SET_MULTIQUEUE: Applet = Applet {
    name: "google_set_multiqueue",
    run: not_landed,
    logger: "set-multiqueue",
    output: Output::System,
    summary: "spread virtio-net and NVMe interrupts and XPS over the CPUs",
    usage: "",
};

fn not_landed(inv: &Invocation) -> i32 {
    eprintln!(
        "{}: not part of this build yet (its issue has not landed)",
        inv.name
    );
    EXIT_NOT_LANDED
}
