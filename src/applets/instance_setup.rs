//! `google_instance_setup`: the boot-time setup steps ([`crate::setup`]), then exit. Exit
//! status 0 unless the configuration could not be regenerated; a failing step is logged.

use super::{Applet, Invocation, Output};

pub(crate) static APPLET: Applet = Applet {
    name: "google_instance_setup",
    run: main,
    logger: "instance-setup",
    output: Output::System,
    summary: "boot-time setup: config, host keys, boto, local SSD, multiqueue, hostname",
    usage: "[-d]",
};

fn main(inv: &Invocation) -> i32 {
    inv.without_arguments(|| {
        let outcome = crate::setup::run();
        if outcome.config_unusable {
            1
        } else {
            0
        }
    })
}
