//! `google_instance_setup` (in Python 2.8's step order): load the configuration, wait
//! (bounded) for the metadata server, regenerate `instance_configs.cfg`, then host keys,
//! boto, local SSD, multiqueue, hostname and `vm.overcommit_memory`, store the instance id,
//! write the done marker and tell systemd it is ready. Each step has its `[InstanceSetup]`
//! switch, is idempotent, and a failing step is logged while the others still run.
//!
//! - [`instance_config`]: the metadata wait, the facts setup needs from it, regeneration.
//! - [`host_keys`]: SSH host keys (OpenSSH or dropbear) and their guest attributes.
//! - [`boto`]: writes `/etc/boto.cfg`.
//! - [`hostname`]: the short host name, `/etc/hostname`, the `/etc/hosts` lines.
//! - [`sysfs`]: the sysfs/procfs tree the tuning steps read and write (one root).
//! - [`local_ssd`], [`multiqueue`]: the two tuning steps.
//! - [`notify`]: `READY=1` to systemd and `/run/google-instance-setup.done`.
//! - [`prepare_image`]: `google_prepare_image`, forgetting this instance before capture.

pub(crate) mod boto;
pub(crate) mod host_keys;
pub(crate) mod hostname;
pub(crate) mod instance_config;
pub mod local_ssd;
pub mod multiqueue;
pub(crate) mod notify;
pub(crate) mod prepare_image;
pub mod sysfs;

use std::time::Duration;

use crate::mds::Client;
use crate::settings::config::{self, Config, Paths};
use crate::settings::{Settings, SetupSettings};

use instance_config::InstanceFacts;

/// The SSH host key types `[InstanceSetup] host_key_types` names (comma-separated, blanks
/// dropped).
pub(crate) fn host_key_types(settings: &SetupSettings) -> Vec<String> {
    settings
        .host_key_types
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The instance id host keys were last made for (`[Instance] instance_id`, trimmed).
pub(crate) fn stored_instance_id(settings: &SetupSettings) -> &str {
    settings.instance_id.trim()
}

/// How a whole run went.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Steps that failed, by name.
    pub failed: Vec<&'static str>,
    /// The configuration could not be regenerated (the only failure that changes the exit
    /// status).
    pub config_unusable: bool,
}

/// Runs one step, logging its failure; a panic in a step is a failure too.
fn step(outcome: &mut Outcome, name: &'static str, f: impl FnOnce() -> crate::Result<()>) {
    debug!("Step {}.", name);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!("{} failed: {}", name, e);
            outcome.failed.push(name);
        }
        Err(_) => {
            error!("{} failed unexpectedly.", name);
            outcome.failed.push(name);
        }
    }
}

/// The whole boot-time setup against the real system. Returns what failed.
pub(crate) fn run() -> Outcome {
    let paths = Paths::system();
    let mut outcome = Outcome::default();
    // As Python loaded it: every layer but metadata (the template may say how long to wait).
    let loaded = match config::merged_config(&paths, None) {
        Ok(ini) => Config::from_ini(ini, &paths.config.display().to_string()),
        Err(e) => {
            warn!("{}", e);
            Config::load_from(&paths.config)
        }
    };
    let first = Settings::read(&loaded);
    crate::log::set_console(first.logging.console);

    let client = Client::from_env();
    let wait = Duration::from_secs(first.setup.network_wait_s);
    let facts = if first.setup.network_enabled {
        instance_config::wait_for_metadata(&client, wait)
    } else {
        info!("Networking is disabled in the configuration; running the offline steps only.");
        None
    };

    let mut config = match config::regenerate_at(
        &paths,
        facts.as_ref().and_then(|f| f.config_text.as_deref()),
    ) {
        Ok(c) => c,
        Err(e) => {
            error!("Could not regenerate {}: {}", paths.config.display(), e);
            outcome.config_unusable = true;
            loaded
        }
    };
    let settings = Settings::read(&config);
    crate::log::set_console(settings.logging.console);
    let opts = &settings.setup;
    let facts = facts.unwrap_or_default();

    let mut new_id = None;
    if opts.set_host_keys {
        step(&mut outcome, "host keys", || {
            new_id = host_keys::run(opts, &facts, &client)?;
            Ok(())
        });
    }
    if opts.set_boto_config {
        step(&mut outcome, "boto config", || boto::run(&facts));
    }
    let tree = sysfs::Tree::system();
    if opts.optimize_local_ssd {
        step(&mut outcome, "local SSD", || {
            local_ssd::run(&tree);
            Ok(())
        });
    }
    if opts.set_multiqueue {
        step(&mut outcome, "multiqueue", || {
            multiqueue::run(&tree);
            Ok(())
        });
    }
    step(&mut outcome, "hostname", || {
        hostname::run(&facts, opts.set_hostname)
    });
    step(&mut outcome, "overcommit", || overcommit(&facts, &tree));

    if let Some(id) = new_id {
        if !outcome.config_unusable {
            config.set("Instance", "instance_id", &id);
            step(&mut outcome, "write config", || config.save(&paths));
        }
    }
    step(&mut outcome, "done marker", || {
        notify::write_done_marker(facts.instance_id.as_deref())
    });
    notify::ready();
    outcome
}

/// `vm.overcommit_memory=1` on `e2-*` machine types (shared-core memory is overcommitted).
fn overcommit(facts: &InstanceFacts, tree: &sysfs::Tree) -> crate::Result<()> {
    if !facts.machine_type_is_e2() {
        return Ok(());
    }
    info!("Setting vm.overcommit_memory=1 for an e2 machine type.");
    tree.write("proc/sys/vm/overcommit_memory", "1")
}
