//! `google_metadata_script_runner --script-type startup|shutdown` (or the Go runner's
//! positional `startup|shutdown`): runs the metadata scripts, always exits 0.

use std::time::Duration;

use super::{Applet, Invocation, Output};
use crate::scripts::{self, ScriptType};
use crate::settings::Settings;

pub(crate) static APPLET: Applet = Applet {
    name: "google_metadata_script_runner",
    run: main,
    logger: "startup-script",
    output: Output::System,
    summary: "run startup or shutdown scripts from metadata",
    usage: USAGE,
};

const USAGE: &str = "--script-type startup|shutdown  (or: startup|shutdown)";

fn main(inv: &Invocation) -> i32 {
    let mut opts = getopts::Options::new();
    opts.optopt("", "script-type", "", "startup|shutdown");
    let m = match inv.parse(&opts) {
        Ok(m) => m,
        Err(status) => return status,
    };
    let named = m.opt_str("script-type");
    let kind = match (named.as_deref(), m.free.as_slice()) {
        (Some(t), []) => ScriptType::parse(t),
        (None, [t]) => ScriptType::parse(t),
        _ => None,
    };
    let Some(kind) = kind else {
        return inv.usage_error("say which scripts to run: --script-type startup|shutdown");
    };
    crate::log::set_thread_name(kind.logger());
    let settings = Settings::load();
    let enabled = match kind {
        ScriptType::Startup => settings.scripts.startup,
        ScriptType::Shutdown => settings.scripts.shutdown,
    };
    if !enabled {
        info!("{} scripts are disabled in the configuration.", kind.name());
        return 0;
    }
    let network_wait = Duration::from_secs(settings.setup.network_wait_s);
    scripts::run(kind, &settings.scripts, network_wait);
    0
}
