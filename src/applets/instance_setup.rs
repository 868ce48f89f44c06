//! `google_instance_setup`: the boot-time setup steps ([`crate::setup`]), then exit. Exit
//! status 0 unless the configuration could not be regenerated; a failing step is logged.

use super::Invocation;

pub(super) const USAGE: &str = "[-d]";

pub(super) fn main(inv: &Invocation) -> i32 {
    inv.without_arguments(|| {
        let outcome = crate::setup::run();
        if outcome.config_unusable {
            1
        } else {
            0
        }
    })
}
