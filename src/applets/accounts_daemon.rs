//! `google_accounts_daemon`: the accounts daemon ([`crate::accounts`]) on its own, and its
//! entry in `google_guest_daemon`.

use std::sync::Arc;
use std::time::Instant;

use tinyjson::JsonValue;

use crate::json::Slice;

use super::{Applet, Invocation, Output};
use crate::accounts::daemon::AccountsDaemon;
use crate::daemon::{self, Daemon, DaemonSpec};
use crate::error::Result;
use crate::settings::Settings;

pub(crate) static APPLET: Applet = Applet {
    name: "google_accounts_daemon",
    run: main,
    logger: "google-accounts",
    output: Output::System,
    summary: "manage users and SSH keys from metadata",
    usage: "[-d]",
};

/// The accounts daemon as the runner knows it.
pub(crate) static DAEMON: DaemonSpec = DaemonSpec {
    name: "accounts",
    logger: "google-accounts",
    lock: "google_accounts.lock",
    enabled: |s| s.daemons.accounts_daemon,
    make: |s| Box::new(AccountsDaemon::new(&s.accounts)),
};

fn main(inv: &Invocation) -> i32 {
    inv.without_arguments(|| daemon::run_standalone(&DAEMON))
}

impl Daemon for AccountsDaemon {
    fn slice<'d>(&self, doc: &'d JsonValue) -> Slice<'d> {
        AccountsDaemon::slice(self, doc)
    }

    fn apply(&mut self, doc: &Arc<JsonValue>) -> Result<()> {
        AccountsDaemon::apply(self, doc)
    }

    fn next_wake(&self) -> Option<Instant> {
        AccountsDaemon::next_wake(self)
    }

    fn wake(&mut self) -> Result<()> {
        AccountsDaemon::wake(self)
    }

    fn reload(&mut self, settings: &Settings) {
        AccountsDaemon::reload(self, &settings.accounts)
    }
}
