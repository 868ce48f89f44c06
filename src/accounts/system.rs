//! The accounts daemon's applying half: runs the plan's actions against the real system —
//! the user and group commands ([`super::commands`]), the `google-sudoers` group and
//! sudoers file, `authorized_keys` written fd-relative in a `~/.ssh` opened without
//! following links ([`super::ssh_dir`]), and the two ledgers written atomically.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::authorized_keys::{remove_ours, rewrite};
use super::commands::{run_template, Commands};
use super::keys::KeyText;
use super::ledger::{format_ledger, parse_ledger, CREATED_LEDGER, LEDGER_MODE, USERS_LEDGER};
use super::passwd::{
    parse_passwd, parse_uid_min, LocalUser, LocalUsers, LOGIN_DEFS_PATH, PASSWD_PATH,
};
use super::plan::{ledger_after_failures, Action};
use super::ssh_dir::{
    describe_refusal, open_ssh_dir, read_authorized_keys, remove_key_file_of, KeysRefused,
};
use super::username::Username;
use crate::error::{Context, Error, Result};
use crate::fsutil;
use crate::log::LogOnce;

/// The group whose members may use sudo without a password.
pub const SUDOERS_GROUP: &str = "google-sudoers";
/// The sudoers drop-in for that group.
pub const SUDOERS_FILE: &str = "/etc/sudoers.d/google_sudoers";
const SUDOERS_LINE: &str = "%google-sudoers ALL=(ALL:ALL) NOPASSWD:ALL\n";
const GROUP_PATH: &str = "/etc/group";

/// A well-formed line of `/etc/group`, borrowed from the file's content (nothing is
/// copied: `google-sudoers` can list a thousand members).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLine<'a> {
    pub name: &'a str,
    members: &'a str,
}

impl GroupLine<'_> {
    /// Whether `user` is listed as a member.
    pub fn has_member(&self, user: &str) -> bool {
        !user.is_empty() && self.members.split(',').any(|m| m == user)
    }
}

/// The lines of `/etc/group` content with a name and at least four fields; malformed
/// lines are skipped.
pub fn group_lines(content: &str) -> impl Iterator<Item = GroupLine<'_>> {
    content.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next().filter(|n| !n.is_empty())?;
        let members = fields.nth(2)?;
        Some(GroupLine { name, members })
    })
}

/// The `/etc/group` file as it is now, as text.
fn read_groups() -> Result<String> {
    let bytes = read_required(GROUP_PATH)?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Whether `/etc/group` content names the group `name`.
fn has_group(content: &str, name: &str) -> bool {
    group_lines(content).any(|g| g.name == name)
}

/// Whether `user` is a member of `google-sudoers` in `/etc/group` as it is now.
fn in_sudoers_group(user: &str) -> Result<bool> {
    let groups = read_groups()?;
    let found = group_lines(&groups).any(|g| g.name == SUDOERS_GROUP && g.has_member(user));
    Ok(found)
}

fn read_required(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).context("read", path)
}

/// What the system holds, read fresh before each plan. Every read must succeed. The parsed
/// files are shared with the [`SystemCache`] they came from; a change copies them.
pub struct SystemState {
    pub local_users: Arc<LocalUsers>,
    pub ledger: Arc<BTreeSet<Username>>,
    pub created: Arc<BTreeSet<Username>>,
    pub uid_min: u32,
}

/// A file's parsed content, with the bytes it was parsed from.
struct ParsedFile<T> {
    bytes: Vec<u8>,
    value: Arc<T>,
}

/// `/etc/passwd` and the ledgers as last parsed: each round reads the files afresh, and a
/// file whose bytes are the same as last time is not parsed again (1,000 accounts cost
/// about a millisecond to parse; comparing the bytes, microseconds).
#[derive(Default)]
pub struct SystemCache {
    passwd: Option<ParsedFile<LocalUsers>>,
    ledger: Option<ParsedFile<BTreeSet<Username>>>,
    created: Option<ParsedFile<BTreeSet<Username>>>,
}

/// The parse of `bytes`: the one kept in `slot` when the bytes are the same, else a new one
/// (kept for next time).
fn parsed<T>(
    slot: &mut Option<ParsedFile<T>>,
    bytes: Vec<u8>,
    parse: impl FnOnce(&[u8]) -> T,
) -> Arc<T> {
    match slot {
        Some(file) if crate::json::same_bytes(&file.bytes, &bytes) => Arc::clone(&file.value),
        _ => {
            let value = Arc::new(parse(&bytes));
            *slot = Some(ParsedFile {
                bytes,
                value: Arc::clone(&value),
            });
            value
        }
    }
}

fn ledger_names(path: &str, bytes: &[u8]) -> BTreeSet<Username> {
    let read = parse_ledger(bytes);
    for bad in &read.ignored {
        warn!("Ignoring invalid name {:?} in {}.", bad, path);
    }
    read.names
}

impl SystemState {
    /// Reads `/etc/passwd`, both ledgers and `UID_MIN`.
    pub fn read() -> Result<SystemState> {
        SystemState::read_cached(&mut SystemCache::default())
    }

    /// As [`read`](Self::read), parsing only the files that changed since `cache` saw them.
    pub fn read_cached(cache: &mut SystemCache) -> Result<SystemState> {
        let passwd = read_required(PASSWD_PATH)?;
        let local_users = parsed(&mut cache.passwd, passwd, parse_passwd);
        let uid_min = match fsutil::read_optional(Path::new(LOGIN_DEFS_PATH))? {
            Some(bytes) => parse_uid_min(&bytes),
            None => super::passwd::DEFAULT_UID_MIN,
        };
        // A missing ledger is an empty one.
        let ledger = |slot: &mut Option<ParsedFile<_>>, path: &'static str| -> Result<_> {
            let bytes = fsutil::read_optional(Path::new(path))?.unwrap_or_default();
            Ok(parsed(slot, bytes, |b| ledger_names(path, b)))
        };
        Ok(SystemState {
            local_users,
            ledger: ledger(&mut cache.ledger, USERS_LEDGER)?,
            created: ledger(&mut cache.created, CREATED_LEDGER)?,
            uid_min,
        })
    }
}

fn write_ledger(path: &str, names: &BTreeSet<Username>) -> Result<()> {
    let path = Path::new(path);
    fsutil::create_parent(path)?;
    fsutil::write_atomic(path, format_ledger(names).as_bytes(), LEDGER_MODE)
}

/// Makes sure `google-sudoers` and its sudoers file exist (created only when absent).
pub fn ensure_sudoers(commands: &Commands) -> Result<()> {
    if !has_group(&read_groups()?, SUDOERS_GROUP) {
        run_template(&commands.groupadd, &[("group", SUDOERS_GROUP)], None)
            .map_err(|e| Error::Msg(format!("Could not create the sudoers group. {}", e)))?;
    }
    let file = Path::new(SUDOERS_FILE);
    if std::fs::symlink_metadata(file).is_err() {
        let dir = file.parent().unwrap_or(Path::new("/etc/sudoers.d"));
        if !dir.exists() {
            std::fs::create_dir_all(dir).context("create", dir)?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750));
        }
        fsutil::write_atomic(file, SUDOERS_LINE.as_bytes(), 0o440)?;
        fsutil::restorecon(file);
    }
    Ok(())
}

/// Whether `/etc/group` has a group called `name`.
fn names_a_group(name: &str) -> bool {
    read_groups().is_ok_and(|groups| has_group(&groups, name))
}

/// Carries out plans; remembers which refusals were already logged.
#[derive(Default)]
pub struct Applier {
    refusals_logged: LogOnce,
    impossible: BTreeSet<Username>,
    /// New accounts of this run that `useradd -G` already put in their groups, and in
    /// `google-sudoers`.
    joined_at_creation: BTreeSet<Username>,
    sudo_at_creation: BTreeSet<Username>,
}

impl Applier {
    /// Runs `actions` in order. A failed action skips the rest of that user's actions; the
    /// users that failed are returned (the daemon retries them). A failed ledger write ends
    /// the run there: it is the error, and nothing after it is applied.
    pub fn apply(
        &mut self,
        actions: &[Action],
        commands: &Commands,
        state: &mut SystemState,
    ) -> Result<BTreeSet<Username>> {
        let mut failed: BTreeSet<Username> = BTreeSet::new();
        self.impossible.clear();
        self.joined_at_creation.clear();
        self.sudo_at_creation.clear();
        for action in actions {
            if action
                .user()
                .is_some_and(|u| failed.contains(u) || self.impossible.contains(u))
            {
                continue;
            }
            match self.apply_one(action, commands, state, &failed) {
                Ok(()) => {}
                Err(e) if matches!(action, Action::UpdateLedger(_)) => {
                    return Err(Error::Msg(format!(
                        "Could not write the users ledger {}, so no account was changed \
                         after it. {}",
                        USERS_LEDGER, e
                    )));
                }
                Err(e) => {
                    let user = action.user();
                    if user.is_some_and(|u| self.impossible.contains(u)) {
                        // Logged once per metadata change of that user (it is not retried).
                        warn!("{} It is tried again when its metadata changes.", e);
                        continue;
                    }
                    warn!("{}", e);
                    if let Some(user) = user {
                        failed.insert(user.clone());
                    }
                }
            }
        }
        Ok(failed)
    }

    fn apply_one(
        &mut self,
        action: &Action,
        commands: &Commands,
        state: &mut SystemState,
        failed: &BTreeSet<Username>,
    ) -> Result<()> {
        match action {
            Action::CreateUser(user) => {
                info!("Creating a new user account for {}.", user);
                let name = user.as_str();
                let (template, groups) = self.useradd_template(user, commands)?;
                if let Err(e) =
                    run_template(&template, &[("user", name), ("groups", &groups)], None)
                {
                    self.record_half_made(user, state);
                    if !state.local_users.contains_key(name) && names_a_group(name) {
                        // useradd refuses a name that is a group's (adm, video,
                        // google-sudoers...) for good: no use trying every round.
                        self.impossible.insert(user.clone());
                        return Err(Error::Msg(format!(
                            "Could not create user {}: a group of that name exists. {}.",
                            name, e
                        )));
                    }
                    return Err(Error::Msg(format!(
                        "Could not create user {}. {}.",
                        name, e
                    )));
                }
                if !commands.unlock.trim().is_empty() {
                    let line = format!("{}:*\n", name);
                    run_template(&commands.unlock, &[("user", name)], Some(line.as_bytes()))
                        .map_err(|e| {
                            Error::Msg(format!("Could not unlock user {}. {}.", name, e))
                        })?;
                }
                state.local_users = Arc::new(parse_passwd(&read_required(PASSWD_PATH)?));
                if !state.local_users.contains_key(name) {
                    return Err(Error::Msg(format!(
                        "Could not create user {}: it is not in {}.",
                        name, PASSWD_PATH
                    )));
                }
                Ok(())
            }
            Action::RecordCreated(user) => {
                Arc::make_mut(&mut state.created).insert(user.clone());
                write_ledger(CREATED_LEDGER, &state.created)
            }
            Action::ForgetCreated(user) => {
                Arc::make_mut(&mut state.created).remove(user);
                write_ledger(CREATED_LEDGER, &state.created)
            }
            Action::AddToGroups(user) if self.joined_at_creation.contains(user) => Ok(()),
            Action::AddToGroups(user) => self.add_to_groups(user, commands),
            Action::AddToSudoers(user) => {
                if self.sudo_at_creation.contains(user) {
                    info!("Granted sudo to user {} ({}).", user, SUDOERS_GROUP);
                    return Ok(());
                }
                if in_sudoers_group(user.as_str())? {
                    return Ok(());
                }
                run_template(
                    &commands.gpasswd_add,
                    &[("user", user.as_str()), ("group", SUDOERS_GROUP)],
                    None,
                )
                .map_err(|e| Error::Msg(format!("Could not update user {}. {}.", user, e)))?;
                info!("Granted sudo to user {} ({}).", user, SUDOERS_GROUP);
                Ok(())
            }
            Action::WriteKeys { user, keys } => self.write_keys(user, keys, state),
            Action::RefuseSharedHome { user, owner } => {
                let line = format!(
                    "Not managing user {}: its home is also that of user {}, managed already.",
                    user, owner
                );
                if self.refusals_logged.first_time(&line) {
                    warn!("{}", line);
                }
                Ok(())
            }
            Action::Deprovision {
                user,
                delete_account,
                remove_key_file,
            } => self.deprovision(user, *delete_account, *remove_key_file, commands, state),
            Action::UpdateLedger(names) => {
                let names: BTreeSet<Username> = ledger_after_failures(names, failed, &state.ledger)
                    .into_iter()
                    .collect();
                write_ledger(USERS_LEDGER, &names)?;
                state.ledger = Arc::new(names);
                Ok(())
            }
        }
    }

    /// The users of the last [`Applier::apply`] whose account cannot be made for good
    /// (not in its failed set: they are tried again only when their metadata changes).
    pub fn impossible(&self) -> &BTreeSet<Username> {
        &self.impossible
    }

    /// After a failed `useradd`: if it wrote the passwd entry anyway (the home could not be
    /// made, ...), the account is still one the daemon made (it did not exist before the
    /// call), so it goes into `google_users_created` and can be deleted later.
    fn record_half_made(&self, user: &Username, state: &mut SystemState) {
        let Ok(bytes) = read_required(PASSWD_PATH) else {
            return;
        };
        state.local_users = Arc::new(parse_passwd(&bytes));
        if state.local_users.contains_key(user.as_str()) {
            Arc::make_mut(&mut state.created).insert(user.clone());
            match write_ledger(CREATED_LEDGER, &state.created) {
                Ok(()) => info!("User {} was created in part; it is recorded as ours.", user),
                Err(e) => warn!("{}", e),
            }
        }
    }

    /// The `useradd` template for a new account and its `{groups}`: with the default
    /// templates, the configured groups that exist and `google-sudoers` go to `useradd -G`
    /// (remembered, so the group steps after it run no command).
    fn useradd_template(
        &mut self,
        user: &Username,
        commands: &Commands,
    ) -> Result<(String, String)> {
        let Some(template) = commands.useradd_with_groups() else {
            return Ok((commands.useradd.clone(), String::new()));
        };
        let existing = read_groups()?;
        let exists = |g: &str| has_group(&existing, g);
        let mut groups: Vec<&str> = commands
            .groups
            .iter()
            .map(String::as_str)
            .filter(|g| exists(g))
            .collect();
        if exists(SUDOERS_GROUP) {
            groups.push(SUDOERS_GROUP);
            self.sudo_at_creation.insert(user.clone());
        }
        self.joined_at_creation.insert(user.clone());
        if groups.is_empty() {
            return Ok((commands.useradd.clone(), String::new()));
        }
        Ok((template, groups.join(",")))
    }

    fn add_to_groups(&self, user: &Username, commands: &Commands) -> Result<()> {
        let existing = read_groups()?;
        let groups: Vec<&str> = commands
            .groups
            .iter()
            .map(String::as_str)
            .filter(|g| has_group(&existing, g))
            .collect();
        if groups.is_empty() {
            return Ok(());
        }
        let name = user.as_str();
        if commands.usermod.trim().is_empty() {
            for group in groups {
                run_template(
                    &commands.gpasswd_add,
                    &[("user", name), ("group", group)],
                    None,
                )
                .map_err(|e| Error::Msg(format!("Could not update user {}. {}.", name, e)))?;
            }
            return Ok(());
        }
        let joined = groups.join(",");
        run_template(
            &commands.usermod,
            &[("user", name), ("groups", &joined)],
            None,
        )
        .map_err(|e| Error::Msg(format!("Could not update user {}. {}.", name, e)))
    }

    /// Logs, once per distinct refusal, why a user's keys were left alone on purpose.
    fn refused(&mut self, user: &str, why: KeysRefused) {
        let line = describe_refusal(user, &why);
        if self.refusals_logged.first_time(&line) {
            warn!("{}", line);
        }
    }

    fn write_keys(&mut self, user: &Username, keys: &[KeyText], state: &SystemState) -> Result<()> {
        let Some(local) = state.local_users.get(user.as_str()) else {
            return Err(Error::Msg(format!(
                "Could not update keys for {}: no such account.",
                user
            )));
        };
        let ssh = match open_ssh_dir(local, true)? {
            Ok(Some(dir)) => dir,
            Ok(None) => return Ok(()),
            Err(why) => {
                self.refused(user.as_str(), why);
                return Ok(());
            }
        };
        let existing = match read_authorized_keys(&ssh, local)? {
            Ok(content) => content,
            Err(why) => {
                self.refused(user.as_str(), why);
                return Ok(());
            }
        };
        ssh.remove_stale_temps(Path::new("authorized_keys"));
        let Some(content) = rewrite(existing.as_deref(), keys) else {
            return Ok(());
        };
        debug!("Updating keys for user {}.", user);
        ssh.write_atomic(
            Path::new("authorized_keys"),
            &content,
            0o600,
            Some((local.uid, local.gid)),
        )
        .map_err(|e| {
            Error::Msg(format!(
                "Could not update the authorized keys file for user {}. {}.",
                user, e
            ))
        })
    }

    /// Revokes what the daemon granted `user`, each step whatever became of the others:
    /// sudo first, then the account (when `delete_account`), then the keys. Every failure
    /// is in the error; the caller keeps the user in the ledger so all is tried again.
    fn deprovision(
        &mut self,
        user: &Username,
        delete_account: bool,
        remove_key_file: bool,
        commands: &Commands,
        state: &mut SystemState,
    ) -> Result<()> {
        info!("Removing user {}.", user);
        let name = user.as_str();
        let local = state.local_users.get(name).cloned();
        let mut failures: Vec<String> = Vec::new();

        match in_sudoers_group(name) {
            Ok(false) => {}
            Ok(true) => match run_template(
                &commands.gpasswd_remove,
                &[("user", name), ("group", SUDOERS_GROUP)],
                None,
            ) {
                Ok(()) => info!("Revoked sudo from user {} ({}).", name, SUDOERS_GROUP),
                Err(e) => failures.push(format!(
                    "Could not remove user {} from {}. {}.",
                    name, SUDOERS_GROUP, e
                )),
            },
            Err(e) => failures.push(e.to_string()),
        }

        if delete_account {
            match run_template(&commands.userdel, &[("user", name)], None) {
                Ok(()) => info!("Removed user account {}.", name),
                Err(e) => failures.push(format!("Could not remove user {}. {}.", name, e)),
            }
            match read_required(PASSWD_PATH) {
                Ok(bytes) => state.local_users = Arc::new(parse_passwd(&bytes)),
                Err(e) => failures.push(e.to_string()),
            }
        }

        if let Some(local) = local {
            let revoked = if remove_key_file {
                remove_key_file_of(&local)
            } else {
                self.remove_our_lines(name, &local)
            };
            if let Err(e) = revoked {
                failures.push(format!("Could not remove the keys of user {}. {}", name, e));
            }
        }

        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Msg(failures.join(" ")))
        }
    }

    /// Takes our lines out of the `authorized_keys` of an account that existed before the
    /// daemon (root, an image's admin): every other line stays.
    fn remove_our_lines(&mut self, name: &str, local: &LocalUser) -> Result<()> {
        let ssh = match open_ssh_dir(local, false)? {
            Ok(Some(ssh)) => ssh,
            Ok(None) => return Ok(()),
            Err(why) => {
                self.refused(name, why);
                return Ok(());
            }
        };
        match read_authorized_keys(&ssh, local)? {
            Ok(Some(content)) => {
                let kept = remove_ours(&content);
                if kept != content {
                    ssh.write_atomic(
                        Path::new("authorized_keys"),
                        &kept,
                        0o600,
                        Some((local.uid, local.gid)),
                    )?;
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(why) => {
                self.refused(name, why);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_parsed_again_only_when_its_bytes_change() {
        let mut slot = None;
        let mut parses = 0;
        let mut parse = |bytes: &[u8]| {
            parses += 1;
            bytes.len()
        };
        let first = parsed(&mut slot, b"alice\n".to_vec(), &mut parse);
        let same = parsed(&mut slot, b"alice\n".to_vec(), &mut parse);
        assert!(Arc::ptr_eq(&first, &same));
        let changed = parsed(&mut slot, b"alice\nbob\n".to_vec(), &mut parse);
        assert_eq!((*first, *changed), (6, 10));
        assert_eq!(parses, 2);
    }

    #[test]
    fn group_file_lines_are_parsed() {
        let text = "root:x:0:\ngoogle-sudoers:x:1001:alice,bob\nbroken\n:x:3:carol\n";
        let g: Vec<GroupLine<'_>> = group_lines(text).collect();
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].name, g[1].name), ("root", "google-sudoers"));
        assert!(g[1].has_member("alice") && g[1].has_member("bob"));
        assert!(!g[1].has_member("al") && !g[0].has_member("alice") && !g[0].has_member(""));
        assert!(has_group(text, "root") && !has_group(text, "broken"));
    }
}
