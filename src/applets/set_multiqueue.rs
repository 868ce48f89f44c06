//! `google_set_multiqueue`: the multiqueue step on its own ([`crate::setup::multiqueue`]),
//! on the running system (or the `--root` one).

use super::{Applet, Invocation, Output};

pub(crate) static APPLET: Applet = Applet {
    name: "google_set_multiqueue",
    run: main,
    logger: "set-multiqueue",
    output: Output::System,
    summary: "spread virtio-net and NVMe interrupts and XPS over the CPUs",
    usage: "[-d]",
};

fn main(inv: &Invocation) -> i32 {
    inv.without_arguments(|| {
        crate::setup::multiqueue::run(&crate::setup::sysfs::Tree::system());
        0
    })
}
