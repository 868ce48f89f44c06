//! `google_optimize_local_ssd`: the local-SSD tuning step on its own
//! ([`crate::setup::local_ssd`]), on the running system (or the `--root` one).

use super::{Applet, Invocation, Output};

pub(crate) static APPLET: Applet = Applet {
    name: "google_optimize_local_ssd",
    run: main,
    logger: "optimize-local-ssd",
    output: Output::System,
    summary: "tune local SSD queues and IRQ affinity",
    usage: "[-d]",
};

fn main(inv: &Invocation) -> i32 {
    inv.without_arguments(|| {
        crate::setup::local_ssd::run(&crate::setup::sysfs::Tree::system());
        0
    })
}
