//! Image capture (`google_prepare_image`, for Packer and golden images): every user in the
//! accounts ledger is deprovisioned through the accounts daemon's own plan, as if metadata
//! had no keys (`--remove-users` also deletes the accounts the daemon created); then the SSH
//! host keys, `[Instance] instance_id`, both ledgers and the done marker are removed, so
//! each clone's first boot is a first boot. The plan is made first and can be printed
//! without doing anything (`--dry-run`).

use std::path::{Path, PathBuf};

use crate::accounts::commands::Commands;
use crate::accounts::desired::DesiredAccounts;
use crate::accounts::ledger::{CREATED_LEDGER, USERS_LEDGER};
use crate::accounts::plan::{plan, Action, AppliedKeys, PlanConfig, SystemView};
use crate::accounts::system::{Applier, SystemState};
use crate::error::Result;
use crate::mds::Snapshot;
use crate::settings::config::{Config, Paths};
use crate::settings::AccountsSettings;

use super::host_keys::{DROPBEAR_DIR, OPENSSH_DIR};
use super::notify::DONE_MARKER;

/// What `google_prepare_image` will do.
#[derive(Debug)]
pub struct PreparePlan {
    /// The accounts daemon's actions for "metadata has no keys".
    pub account_actions: Vec<Action>,
    /// Files to remove (host keys, ledgers, the done marker), those that exist.
    pub files: Vec<PathBuf>,
    /// `[Instance] instance_id` is set and goes.
    pub forget_instance_id: bool,
}

/// Whether a file name in an SSH key directory is a host key (private or public).
pub fn is_host_key_file(name: &str) -> bool {
    (name.starts_with("ssh_host_") && (name.ends_with("_key") || name.ends_with("_key.pub")))
        || (name.starts_with("dropbear_") && name.ends_with("_host_key"))
}

/// One line per action, for the plan and the report.
pub fn describe(action: &Action) -> String {
    match action {
        Action::Deprovision {
            user,
            delete_account: true,
            ..
        } => format!("deprovision {} and delete the account", user),
        Action::Deprovision { user, .. } => {
            format!("deprovision {} (remove its Google keys and sudo)", user)
        }
        Action::ForgetCreated(user) => format!("forget that the daemon created {}", user),
        Action::UpdateLedger(_) => format!("empty {}", USERS_LEDGER),
        other => format!("{:?}", other),
    }
}

/// Reads the system and makes the plan.
pub fn make_plan(remove_users: bool, config: &Config) -> Result<PreparePlan> {
    let no_keys = Snapshot {
        etag: None,
        doc: std::sync::Arc::new(
            crate::json::parse_json(
                r#"{"instance": {"attributes": {}}, "project": {"attributes": {}}}"#,
            )
            .map_err(crate::Error::Msg)?,
        ),
    };
    let (desired, _) = DesiredAccounts::from_snapshot(&no_keys, crate::timing::unix_now())?;
    let state = SystemState::read()?;
    let view = SystemView {
        ledger: &state.ledger,
        created: &state.created,
        local_users: &state.local_users,
    };
    let plan_config = PlanConfig {
        deprovision_remove: remove_users,
        uid_min: state.uid_min,
    };
    let account_actions = plan(&desired, &AppliedKeys::new(), &view, &plan_config);

    let mut files = Vec::new();
    for dir in [OPENSSH_DIR, DROPBEAR_DIR] {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| is_host_key_file(n))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        files.extend(names.into_iter().map(|n| Path::new(dir).join(n)));
    }
    for path in [USERS_LEDGER, CREATED_LEDGER, DONE_MARKER] {
        if Path::new(path).exists() {
            files.push(PathBuf::from(path));
        }
    }
    Ok(PreparePlan {
        account_actions,
        files,
        forget_instance_id: config.ini().has_option("Instance", "instance_id"),
    })
}

/// The plan as lines for a person.
pub fn plan_lines(plan: &PreparePlan) -> Vec<String> {
    let mut lines: Vec<String> = plan.account_actions.iter().map(describe).collect();
    if plan.forget_instance_id {
        lines.push("remove [Instance] instance_id from the configuration".into());
    }
    lines.extend(plan.files.iter().map(|f| format!("remove {}", f.display())));
    lines
}

/// Carries the plan out; prints each thing done. Returns whether everything succeeded.
pub fn apply(plan: &PreparePlan, config: &Config) -> bool {
    let mut ok = true;
    if !plan.account_actions.is_empty() {
        let commands = Commands::from_settings(&AccountsSettings::read(config));
        match SystemState::read() {
            Ok(mut state) => {
                let outcome =
                    Applier::default().apply(&plan.account_actions, &commands, &mut state);
                if let Err(e) = &outcome {
                    println!("failed: the accounts ledger: {}", e);
                    ok = false;
                }
                for action in &plan.account_actions {
                    let user_failed = match &outcome {
                        Ok(failed) => action.user().is_some_and(|u| failed.contains(u)),
                        Err(_) => true,
                    };
                    if user_failed {
                        println!("failed: {}", describe(action));
                        ok = false;
                    } else {
                        println!("done: {}", describe(action));
                    }
                }
            }
            Err(e) => {
                println!("failed: reading the accounts: {}", e);
                ok = false;
            }
        }
    }
    if plan.forget_instance_id {
        let paths = Paths::system();
        let mut ini = config.ini().clone();
        ini.remove_option("Instance", "instance_id");
        match Config::from_ini(ini, &paths.config.display().to_string()).save(&paths) {
            Ok(()) => println!("done: remove [Instance] instance_id from the configuration"),
            Err(e) => {
                println!("failed: remove [Instance] instance_id: {}", e);
                ok = false;
            }
        }
    }
    for file in &plan.files {
        match std::fs::remove_file(file) {
            Ok(()) => println!("done: remove {}", file.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                println!("failed: remove {}: {}", file.display(), e);
                ok = false;
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_files_are_recognised() {
        for name in [
            "ssh_host_rsa_key",
            "ssh_host_rsa_key.pub",
            "ssh_host_ed25519_key",
            "dropbear_ecdsa_host_key",
        ] {
            assert!(is_host_key_file(name), "{}", name);
        }
        for name in [
            "sshd_config",
            "moduli",
            "ssh_host_rsa_key-cert.pub",
            "ssh_config.d",
        ] {
            assert!(!is_host_key_file(name), "{}", name);
        }
    }
}
