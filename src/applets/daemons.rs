//! The daemon applets: `google_guest_daemon` (every enabled daemon, one process) and the
//! compatible standalone names. They take only the shared options.

use super::Invocation;
use crate::daemon;

pub(super) fn guest_daemon(inv: &Invocation) -> i32 {
    inv.without_arguments(|| daemon::run_combined(daemon::ALL))
}

pub(super) fn clock_skew_daemon(inv: &Invocation) -> i32 {
    inv.without_arguments(|| daemon::run_standalone(&crate::clock_skew::SPEC))
}

pub(super) fn accounts_daemon(inv: &Invocation) -> i32 {
    inv.without_arguments(|| daemon::run_standalone(&crate::accounts::daemon::SPEC))
}

pub(super) fn network_daemon(inv: &Invocation) -> i32 {
    inv.without_arguments(|| daemon::run_standalone(&crate::network::SPEC))
}
