//! `google_optimize_local_ssd`: the local-SSD tuning step on its own
//! ([`crate::setup::local_ssd`]), on the running system (or the `--root` one).

use super::Invocation;

pub(super) const USAGE: &str = "[-d]";

pub(super) fn main(inv: &Invocation) -> i32 {
    inv.without_arguments(|| {
        crate::setup::local_ssd::run(&crate::setup::sysfs::Tree::system());
        0
    })
}
