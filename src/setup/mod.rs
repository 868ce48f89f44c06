//! `google_instance_setup` (SPEC §6, Python 2.8's step order): load the configuration, wait
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

pub mod boto;
pub mod host_keys;
pub mod hostname;
pub mod instance_config;
pub mod local_ssd;
pub mod multiqueue;
pub mod notify;
pub mod prepare_image;
pub mod sysfs;

use std::time::Duration;

use crate::config::{self, Config, Paths};
use crate::mds::Client;

use instance_config::InstanceFacts;

/// The options setup reads, from `[InstanceSetup]` and `[Instance]` (one function reads
/// them: [`SetupOptions::from_config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupOptions {
    /// Use the metadata server at all.
    pub network_enabled: bool,
    /// How long to wait for it before going on with the offline steps.
    pub network_wait: Duration,
    /// Regenerate host keys on a new instance id.
    pub set_host_keys: bool,
    /// The key types made besides the ones present (comma-separated in the file).
    pub host_key_types: Vec<String>,
    /// Write `/etc/boto.cfg`.
    pub set_boto_config: bool,
    /// Tune local SSDs.
    pub optimize_local_ssd: bool,
    /// Spread NIC queues and interrupts.
    pub set_multiqueue: bool,
    /// Set the host name from metadata.
    pub set_hostname: bool,
    /// The instance id host keys were last made for.
    pub instance_id: String,
    /// Log to the serial console.
    pub console: bool,
}

impl SetupOptions {
    /// Reads setup's options from the configuration.
    pub fn from_config(config: &Config) -> SetupOptions {
        let s = "InstanceSetup";
        SetupOptions {
            network_enabled: config.get_bool(s, "network_enabled"),
            network_wait: Duration::from_secs(config.get_u64(s, "network_wait_s")),
            set_host_keys: config.get_bool(s, "set_host_keys"),
            host_key_types: config
                .get_str(s, "host_key_types")
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            set_boto_config: config.get_bool(s, "set_boto_config"),
            optimize_local_ssd: config.get_bool(s, "optimize_local_ssd"),
            set_multiqueue: config.get_bool(s, "set_multiqueue"),
            set_hostname: config.get_bool(s, "set_hostname"),
            instance_id: config.get_str("Instance", "instance_id").trim().to_string(),
            console: config.get_bool("Logging", "console"),
        }
    }
}

/// How a whole run went.
#[derive(Debug, Default)]
pub struct Outcome {
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
pub fn run() -> Outcome {
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
    let first = SetupOptions::from_config(&loaded);
    crate::log::set_console(first.console);

    let client = Client::from_env();
    let facts = if first.network_enabled {
        instance_config::wait_for_metadata(&client, first.network_wait)
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
    let opts = SetupOptions::from_config(&config);
    crate::log::set_console(opts.console);
    let facts = facts.unwrap_or_default();

    let mut new_id = None;
    if opts.set_host_keys {
        step(&mut outcome, "host keys", || {
            new_id = host_keys::run(&opts, &facts, &client)?;
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
