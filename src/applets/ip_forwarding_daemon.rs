//! `google_ip_forwarding_daemon` (and its 2.8 name `google_network_daemon`): the network
//! daemon ([`crate::network`]) on its own, and its entry in `google_guest_daemon`.

use std::sync::Arc;
use std::time::Instant;

use tinyjson::JsonValue;

use crate::json::Slice;

use super::{Applet, Invocation, Output};
use crate::daemon::{self, Daemon, DaemonSpec};
use crate::error::Result;
use crate::network::{self, NetworkDaemon, NETWORKING_LOGGER};
use crate::settings::Settings;

pub(crate) static APPLET: Applet = Applet {
    name: "google_ip_forwarding_daemon",
    run: main,
    logger: "google-ip-forwarding",
    output: Output::System,
    summary: "keep local routes for forwarded and alias IPs",
    usage: "[-d]",
};

/// The same program under the 2.8 name.
pub(crate) static NETWORK_DAEMON_APPLET: Applet = Applet {
    name: "google_network_daemon",
    run: main,
    logger: "google-networking",
    output: Output::System,
    summary: "alias of google_ip_forwarding_daemon (the 2.8 name)",
    usage: "[-d]",
};

/// The network daemon as the runner knows it.
pub(crate) static DAEMON: DaemonSpec = DaemonSpec {
    name: "ip_forwarding",
    logger: NETWORKING_LOGGER,
    lock: "google_networking.lock",
    enabled: network::enabled,
    make: |s| Box::new(NetworkDaemon::new(s)),
};

fn main(inv: &Invocation) -> i32 {
    inv.without_arguments(|| daemon::run_standalone(&DAEMON))
}

impl Daemon for NetworkDaemon {
    fn slice<'d>(&self, doc: &'d JsonValue) -> Slice<'d> {
        NetworkDaemon::slice(self, doc)
    }

    fn apply(&mut self, doc: &Arc<JsonValue>) -> Result<()> {
        NetworkDaemon::apply(self, doc)
    }

    fn next_wake(&self) -> Option<Instant> {
        NetworkDaemon::next_wake(self)
    }

    fn wake(&mut self) -> Result<()> {
        NetworkDaemon::wake(self)
    }

    fn reload(&mut self, settings: &Settings) {
        NetworkDaemon::reload(self, settings)
    }
}
