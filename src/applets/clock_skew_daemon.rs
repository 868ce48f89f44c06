//! `google_clock_skew_daemon`: the clock-skew daemon ([`crate::clock_skew`]) on its own, and
//! its entry in `google_guest_daemon`.

use tinyjson::JsonValue;

use crate::json::Slice;

use std::sync::Arc;

use super::{Applet, Invocation, Output};
use crate::clock_skew::ClockSkew;
use crate::daemon::{self, Daemon, DaemonSpec};
use crate::error::Result;

pub(crate) static APPLET: Applet = Applet {
    name: "google_clock_skew_daemon",
    run: main,
    logger: "google-clock-skew",
    output: Output::System,
    summary: "set the clock from the hardware clock when the drift token changes",
    usage: "[-d]",
};

/// The clock-skew daemon as the runner knows it.
pub(crate) static DAEMON: DaemonSpec = DaemonSpec {
    name: "clock_skew",
    logger: "google-clock-skew",
    lock: "google_clock_skew.lock",
    enabled: |s| s.daemons.clock_skew_daemon,
    make: |_| Box::new(ClockSkew::new()),
};

fn main(inv: &Invocation) -> i32 {
    inv.without_arguments(|| daemon::run_standalone(&DAEMON))
}

impl Daemon for ClockSkew {
    fn slice<'d>(&self, doc: &'d JsonValue) -> Slice<'d> {
        ClockSkew::slice(self, doc)
    }

    fn apply(&mut self, doc: &Arc<JsonValue>) -> Result<()> {
        ClockSkew::apply(self, doc)
    }
}
