//! The daemon applets: `google_guest_daemon` (every enabled daemon, one process) and the
//! compatible standalone names. They take only the shared options.

use super::{Invocation, EXIT_USAGE};
use crate::daemon;

fn no_arguments(inv: &Invocation) -> bool {
    if let Some(extra) = inv.args.first() {
        eprintln!("{}: unexpected argument {} (see --help)", inv.name, extra);
        return false;
    }
    true
}

pub(super) fn guest_daemon(inv: &Invocation) -> i32 {
    if !no_arguments(inv) {
        return EXIT_USAGE;
    }
    daemon::run_combined(daemon::ALL)
}

pub(super) fn clock_skew_daemon(inv: &Invocation) -> i32 {
    if !no_arguments(inv) {
        return EXIT_USAGE;
    }
    daemon::run_standalone(&crate::clock_skew::SPEC)
}

pub(super) fn accounts_daemon(inv: &Invocation) -> i32 {
    if !no_arguments(inv) {
        return EXIT_USAGE;
    }
    daemon::run_standalone(&crate::accounts::daemon::SPEC)
}

pub(super) fn network_daemon(inv: &Invocation) -> i32 {
    if !no_arguments(inv) {
        return EXIT_USAGE;
    }
    daemon::run_standalone(&crate::network::SPEC)
}
