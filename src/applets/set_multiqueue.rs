//! `google_set_multiqueue`: the multiqueue step on its own ([`crate::setup::multiqueue`]),
//! on the running system (or the `--root` one).

use super::Invocation;

pub(super) const USAGE: &str = "[-d]";

pub(super) fn main(inv: &Invocation) -> i32 {
    inv.without_arguments(|| {
        crate::setup::multiqueue::run(&crate::setup::sysfs::Tree::system());
        0
    })
}
