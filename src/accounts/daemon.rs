//! The accounts daemon proper: on every metadata change of its slice (and at each key's
//! `expireOn`) it rebuilds the wanted state, reads the system fresh, plans, and applies.
//! Failed users are retried by the runner's backoff; everything else is left alone.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tinyjson::JsonValue;

use super::commands::Commands;
use super::desired::{DesiredAccounts, KeyLineCache};
use super::plan::{plan, AppliedKeys, PlanConfig, SystemView};
use super::system::{ensure_sudoers, Applier, SystemCache, SystemState};
use super::NoteLog;
use crate::error::{Error, Result};
use crate::json::{self, Slice};
use crate::mds::Snapshot;
use crate::settings::AccountsSettings;

/// The attributes the accounts daemon reads; a change anywhere else does not wake it.
const INSTANCE_KEYS: [&str; 4] = [
    "ssh-keys",
    "sshKeys",
    "block-project-ssh-keys",
    "enable-oslogin",
];
const PROJECT_KEYS: [&str; 3] = ["ssh-keys", "sshKeys", "enable-oslogin"];

fn now_f64() -> f64 {
    crate::timing::unix_micros() as f64 / 1e6
}

/// State kept between metadata changes.
pub struct AccountsDaemon {
    commands: Commands,
    deprovision_remove: bool,
    applied: AppliedKeys,
    key_lines: KeyLineCache,
    system: SystemCache,
    notes: NoteLog,
    applier: Applier,
    last: Option<Snapshot>,
    next_expiry: Option<i64>,
    oslogin: Option<bool>,
}

impl AccountsDaemon {
    /// A daemon configured by `settings`.
    pub fn new(settings: &AccountsSettings) -> AccountsDaemon {
        AccountsDaemon {
            commands: Commands::from_settings(settings),
            deprovision_remove: settings.deprovision_remove,
            applied: AppliedKeys::new(),
            key_lines: KeyLineCache::default(),
            system: SystemCache::default(),
            notes: NoteLog::default(),
            applier: Applier::default(),
            last: None,
            next_expiry: None,
            oslogin: None,
        }
    }

    fn oslogin_changed(&mut self, enabled: bool) {
        if self.oslogin == Some(enabled) {
            return;
        }
        self.oslogin = Some(enabled);
        let action = if enabled { "activate" } else { "deactivate" };
        match crate::exec::find_program("google_oslogin_control") {
            Some(program) => {
                // As Python 2.8: act only when `status` (exit 0 = configured) differs from
                // what metadata wants; a needless `deactivate` restarts sshd at every start.
                let mut status = std::process::Command::new(&program);
                status.arg("status");
                let configured = matches!(crate::exec::run(status, Duration::from_secs(120)), Ok(out) if out.outcome.success());
                if configured == enabled {
                    return;
                }
                info!("{} OS Login.", if enabled { "Activating" } else { "Deactivating" });
                let mut cmd = std::process::Command::new(program);
                cmd.arg(action);
                match crate::exec::run(cmd, Duration::from_secs(120)) {
                    Ok(out) if out.outcome.success() => {}
                    Ok(out) => warn!("google_oslogin_control {} failed: {}", action, out.text()),
                    Err(e) => warn!("{}", e),
                }
            }
            None if enabled => warn!("OS Login is enabled in metadata but not installed; metadata SSH keys are not managed."),
            None => {}
        }
    }

    /// One full round: wanted state from `snapshot` at this moment, plan, apply.
    fn round(&mut self, snapshot: &Snapshot) -> Result<()> {
        let now = crate::timing::unix_now();
        // A document the planner refuses (no `instance`) changes nothing and is not retried:
        // the same document would be refused again. The next change is looked at afresh.
        let (desired, notes) =
            match DesiredAccounts::from_snapshot_cached(snapshot, now, &mut self.key_lines) {
                Ok(read) => read,
                Err(e) => {
                    warn!("{}; leaving every account as it is.", e);
                    return Ok(());
                }
            };
        self.notes.log(&notes);
        self.next_expiry = desired.next_expiry_check();
        self.oslogin_changed(desired.oslogin_enabled());
        if !desired.users().is_empty() {
            if let Err(e) = ensure_sudoers(&self.commands) {
                warn!("{}", e);
            }
        }
        let mut state = SystemState::read_cached(&mut self.system)?;
        let view = SystemView {
            ledger: &state.ledger,
            created: &state.created,
            local_users: &state.local_users,
        };
        let config = PlanConfig {
            deprovision_remove: self.deprovision_remove,
            uid_min: state.uid_min,
        };
        let actions = plan(&desired, &self.applied, &view, &config);
        if actions.is_empty() {
            return Ok(());
        }
        debug!("{} actions planned", actions.len());
        let failed: BTreeSet<_> = match self.applier.apply(&actions, &self.commands, &mut state) {
            Ok(failed) => failed,
            Err(e) => {
                // Nothing after the ledger write was applied: check every user next time.
                self.applied = AppliedKeys::new();
                return Err(e);
            }
        };
        // A name refused for a shared home is looked at again next time, as a failure is.
        let mut not_applied = failed.clone();
        not_applied.extend(actions.iter().filter_map(|a| match a {
            super::plan::Action::RefuseSharedHome { user, .. } => Some(user.clone()),
            _ => None,
        }));
        let planned: BTreeSet<_> = actions.iter().filter_map(|a| a.user().cloned()).collect();
        self.applied.settle_with_impossible(
            desired,
            &not_applied,
            self.applier.impossible(),
            &planned,
        );
        if failed.is_empty() {
            Ok(())
        } else {
            let names: Vec<&str> = failed.iter().map(|u| u.as_str()).collect();
            Err(Error::Msg(format!(
                "Accounts not fully updated for: {}",
                names.join(", ")
            )))
        }
    }
}

/// The daemon's side of the runner's calls (see `crate::daemon::Daemon`).
impl AccountsDaemon {
    /// The attributes it reads; a change anywhere else does not wake it.
    pub fn slice<'d>(&self, doc: &'d JsonValue) -> Slice<'d> {
        let pick = |scope: &'static str, keys: &'static [&'static str]| {
            keys.iter()
                .map(move |key| json::lookup(doc, &format!("{}/attributes/{}", scope, key)))
        };
        let mut slice: Slice<'d> = pick("instance", &INSTANCE_KEYS)
            .chain(pick("project", &PROJECT_KEYS))
            .collect();
        // So that a document without `instance` is still a change to act on (and be
        // refused by the planner) rather than silently equal to an empty one.
        slice.push(json::lookup(doc, "instance").map(|_| &json::PRESENT));
        slice
    }

    /// Brings users and keys in line with `doc` (kept shared for the expiry timer).
    pub fn apply(&mut self, doc: &Arc<JsonValue>) -> Result<()> {
        let snapshot = Snapshot {
            etag: None,
            doc: Arc::clone(doc),
        };
        let result = self.round(&snapshot);
        self.last = Some(snapshot);
        result
    }

    /// When the next key expires: just after its `expireOn` second begins (a millisecond
    /// late, so the wall clock read then is surely in that second).
    pub fn next_wake(&self) -> Option<Instant> {
        let at = self.next_expiry? as f64 + 0.001;
        let wait = (at - now_f64()).max(0.0);
        Some(Instant::now() + Duration::from_secs_f64(wait))
    }

    /// Removes the keys that have expired.
    pub fn wake(&mut self) -> Result<()> {
        let Some(snapshot) = self.last.clone() else {
            self.next_expiry = None;
            return Ok(());
        };
        debug!("a key's expiry time has come");
        self.round(&snapshot)
    }

    /// Takes new settings (SIGHUP).
    pub fn reload(&mut self, settings: &AccountsSettings) {
        self.commands = Commands::from_settings(settings);
        self.deprovision_remove = settings.deprovision_remove;
    }
}
