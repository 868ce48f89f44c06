//! `google_guest_daemon`: every enabled daemon in one process on one metadata watch. The
//! list of daemons it knows is here, and only here.

use super::{Applet, Invocation, Output};
use crate::daemon::{self, DaemonSpec};

pub(crate) static APPLET: Applet = Applet {
    name: "google_guest_daemon",
    run: main,
    logger: "google-guest-daemon",
    output: Output::System,
    summary: "all enabled daemons in one process on one metadata watch",
    usage: "[-d]",
};

/// Every daemon `google_guest_daemon` runs, in start order.
pub(crate) static DAEMONS: &[&DaemonSpec] = &[
    &super::accounts_daemon::DAEMON,
    &super::clock_skew_daemon::DAEMON,
    &super::ip_forwarding_daemon::DAEMON,
];

fn main(inv: &Invocation) -> i32 {
    inv.without_arguments(|| daemon::run_combined(DAEMONS))
}
