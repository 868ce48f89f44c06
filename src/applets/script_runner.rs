//! `google_metadata_script_runner --script-type startup|shutdown` (or the Go runner's
//! positional `startup|shutdown`): runs the metadata scripts, always exits 0.

use super::Invocation;
use crate::config::Config;
use crate::scripts::{self, ScriptType};

pub(super) const USAGE: &str = "--script-type startup|shutdown  (or: startup|shutdown)";

pub(super) fn main(inv: &Invocation) -> i32 {
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
    let config = Config::load();
    crate::log::set_console(config.get_bool("Logging", "console"));
    if !config.get_bool("MetadataScripts", kind.name()) {
        info!("{} scripts are disabled in the configuration.", kind.name());
        return 0;
    }
    scripts::run(kind, &config);
    0
}
