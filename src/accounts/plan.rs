//! The accounts plan: a pure function from (what metadata wants, what was last applied,
//! what the system holds, the configuration) to the ordered list of [`Action`]s the
//! applying half carries out.
//!
//! - Incremental: a wanted user whose keys equal the last applied ones, and whose account
//!   exists, gets no action; a change that concerns one user yields actions for that user
//!   only. [`AppliedKeys`] starts empty, so at start-up every wanted user is checked once.
//! - Deprovisioning is driven by the ledger alone: a user in `google_users` that metadata
//!   no longer wants (or every one of them, when OS Login is on) loses its `google-sudoers`
//!   membership and our keys (the whole file for an account the daemon created); its
//!   account is deleted only when `deprovision_remove` is on, the daemon created it
//!   (`google_users_created`), and its uid is neither 0 nor below `UID_MIN`. Accounts never
//!   named in metadata are never touched.
//! - The ledger is written ahead: new names are added before any action that grants
//!   access, and names leave it last.
//! - Only a [`DesiredAccounts`] can ask for removals, and one can only be built from a
//!   successfully read metadata document: a failed read plans nothing.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::iter::Peekable;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::desired::DesiredAccounts;
use super::keys::KeyText;
use super::passwd::LocalUsers;
use super::username::Username;

/// One step for the applying half. Actions run in order; when one fails, the applier skips
/// the remaining actions of the same user and reports the user to [`AppliedKeys::settle`],
/// so the next plan tries again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The account does not exist: run `useradd_cmd`
    /// (log `Creating a new user account for <user>.`).
    CreateUser(Username),
    /// The account was just created by us: add it to `google_users_created` and write that
    /// file now, so a crash cannot forget that the daemon owns the account.
    RecordCreated(Username),
    /// A new account joins the configured groups that exist (`usermod_cmd`; Python 2.8 did
    /// this for new accounts only).
    AddToGroups(Username),
    /// `gpasswd_add_cmd`: the user joins `google-sudoers` (after every key change, as 2.8).
    /// Only for an account the daemon creates or one that may get sudo
    /// ([`super::passwd::LocalUser::may_get_sudo`]): never root, a system account or a
    /// `nologin`/`false` shell.
    AddToSudoers(Username),
    /// Our lines of the user's `~/.ssh/authorized_keys` become exactly `keys`
    /// ([`super::authorized_keys::rewrite`]; nothing is written when nothing changes).
    /// Never planned for a user whose shell is `nologin`.
    WriteKeys { user: Username, keys: Vec<KeyText> },
    /// Metadata no longer wants this ledger user (log `Removing user <user>.`). Three steps,
    /// each done whatever became of the others: `gpasswd_remove_cmd` (sudo revoked first),
    /// `userdel_cmd` if `delete_account`, then the keys — with `remove_key_file` (an account
    /// the daemon created) the whole `authorized_keys` is unlinked unread, otherwise only
    /// our lines leave ([`super::authorized_keys::remove_ours`]). The action fails when any
    /// step failed; the user then stays in the ledger and the next round tries again.
    Deprovision {
        user: Username,
        delete_account: bool,
        remove_key_file: bool,
    },
    /// A wanted user whose home is another wanted user's (`toor` and `root`, both
    /// `/root`): nothing is done for it, so the two never overwrite each other's lines
    /// (logged once). It is not in the ledger and is checked again at every plan.
    RefuseSharedHome { user: Username, owner: Username },
    /// Take the name out of `google_users_created` (the account was deleted, or is gone).
    ForgetCreated(Username),
    /// Write `google_users` with these names, plus any user whose `Deprovision` failed
    /// ([`ledger_after_failures`]) so it is tried again. When new users come, the first
    /// action writes the old names plus the new ones (write-ahead: nobody gets a key or sudo
    /// before the ledger names them); when users leave, the last writes the wanted names.
    /// A failed ledger write ends the round: nothing after it is applied.
    UpdateLedger(Vec<Username>),
}

impl Action {
    /// The user the action is about (`None` for the ledger update).
    pub fn user(&self) -> Option<&Username> {
        match self {
            Action::CreateUser(user)
            | Action::RecordCreated(user)
            | Action::AddToGroups(user)
            | Action::AddToSudoers(user)
            | Action::WriteKeys { user, .. }
            | Action::Deprovision { user, .. }
            | Action::RefuseSharedHome { user, .. }
            | Action::ForgetCreated(user) => Some(user),
            Action::UpdateLedger(_) => None,
        }
    }
}

/// The keys last applied per user, kept in memory by the daemon between plans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedKeys {
    users: BTreeMap<Username, Vec<KeyText>>,
    /// Users whose account cannot be made for good (`useradd` refuses the name), with the
    /// keys they had then: not tried again until those change.
    impossible: BTreeMap<Username, Vec<KeyText>>,
}

impl AppliedKeys {
    /// Nothing applied yet: the next plan checks every wanted user.
    pub fn new() -> AppliedKeys {
        AppliedKeys::default()
    }

    /// The keys last applied for `user`.
    #[cfg(test)]
    pub fn keys(&self, user: &str) -> Option<Vec<String>> {
        let keys = self.users.get(user)?;
        Some(keys.iter().map(|k| k.to_string()).collect())
    }

    /// Records the outcome of applying a plan made from `desired`: every wanted user is
    /// now applied except those in `failed`, which the next plan handles again; users no
    /// longer wanted are forgotten.
    #[cfg(test)]
    pub fn settle(&mut self, desired: &DesiredAccounts, failed: &BTreeSet<Username>) {
        let none = BTreeSet::new();
        self.settle_with_impossible(desired.clone(), failed, &none, &none);
    }

    /// As [`AppliedKeys::settle`], with the users whose account cannot be made for good:
    /// they are left alone until their keys in metadata change. `planned`: the users the
    /// plan had actions for (an earlier impossible user not among them stays aside).
    /// `desired` is taken, not copied: its users become the applied ones.
    pub fn settle_with_impossible(
        &mut self,
        desired: DesiredAccounts,
        failed: &BTreeSet<Username>,
        impossible: &BTreeSet<Username>,
        planned: &BTreeSet<Username>,
    ) {
        // Still impossible: refused this time, or earlier with the same keys (not planned).
        let before = std::mem::take(&mut self.impossible);
        let (still, rest): (Vec<_>, Vec<_>) =
            desired.into_users().into_iter().partition(|(user, keys)| {
                impossible.contains(user)
                    || (!planned.contains(user) && before.get(user) == Some(keys))
            });
        self.users = rest
            .into_iter()
            .filter(|(user, _)| !failed.contains(user))
            .collect();
        self.impossible = still.into_iter().collect();
    }
}

/// The configuration the plan depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanConfig {
    /// `[Accounts] deprovision_remove`: delete accounts the daemon created when metadata
    /// drops them.
    pub deprovision_remove: bool,
    /// `UID_MIN` from `/etc/login.defs`: accounts below it are never deleted and never get
    /// sudo.
    pub uid_min: u32,
}

/// What the system holds, as read just before planning. All three must come from reads
/// that succeeded: if `/etc/passwd` or a ledger cannot be read, do not plan this round (an
/// empty account list would make every wanted user look missing and every created name
/// look stale; an empty ledger would stop deprovisioning and be written back).
#[derive(Clone, Copy, Debug)]
pub struct SystemView<'a> {
    /// Names in `google_users`.
    pub ledger: &'a BTreeSet<Username>,
    /// Names in `google_users_created`.
    pub created: &'a BTreeSet<Username>,
    /// Local accounts (`/etc/passwd`).
    pub local_users: &'a LocalUsers,
}

/// The actions that take the system from `system` to `desired`, given what was `applied`
/// last: the write-ahead ledger update when names come, deprovisioning (by name), wanted
/// users (by name), created-ledger cleanup, then the ledger update when names leave.
pub fn plan(
    desired: &DesiredAccounts,
    applied: &AppliedKeys,
    system: &SystemView<'_>,
    config: &PlanConfig,
) -> Vec<Action> {
    let wanted = desired.users();
    let mut actions = Vec::new();

    // Two wanted names with one home: the first (by name) has it, the others are refused.
    let mut home_owner: HashMap<Cow<'_, [u8]>, &Username> = HashMap::with_capacity(wanted.len());
    let mut shared: BTreeMap<&Username, &Username> = BTreeMap::new();
    let mut local_users = system.local_users.iter().peekable();
    for user in wanted.keys() {
        if let Some(local) = seek(&mut local_users, user.as_str()) {
            match home_owner.entry(home_key(&local.home)) {
                Entry::Occupied(owner) => {
                    shared.insert(user, owner.get());
                }
                Entry::Vacant(slot) => {
                    slot.insert(user);
                }
            }
        }
    }
    // The names managed: wanted and not refused for a shared home, in name order.
    let managed = || wanted.keys().filter(|u| !shared.contains_key(*u));

    // Write-ahead: every wanted name is in the ledger before any of them gets access.
    let mut ledger_names = system.ledger.iter().map(|u| (u, ())).peekable();
    let adds_names = managed().any(|u| seek(&mut ledger_names, u.as_str()).is_none());
    if adds_names {
        let names: BTreeSet<&Username> = system.ledger.iter().chain(managed()).collect();
        actions.push(Action::UpdateLedger(names.into_iter().cloned().collect()));
    }

    // Revocations first: nothing granted below can be taken away by them.
    let mut managed_names = managed().map(|u| (u, ())).peekable();
    for user in system
        .ledger
        .iter()
        .filter(|u| seek(&mut managed_names, u.as_str()).is_none())
    {
        // A refused name keeps its place until it is no longer wanted: its home's lines
        // belong to the name that has it.
        if shared.contains_key(user) {
            continue;
        }
        // An account that is already gone only leaves the ledger.
        let Some(local) = system.local_users.get(user.as_str()) else {
            continue;
        };
        let ours = system.created.contains(user) && local.uid != 0 && local.uid >= config.uid_min;
        let delete_account = config.deprovision_remove && ours;
        actions.push(Action::Deprovision {
            user: user.clone(),
            delete_account,
            remove_key_file: ours,
        });
        if delete_account {
            actions.push(Action::ForgetCreated(user.clone()));
        }
    }

    // Walked alongside `wanted` (all three are sorted by name): no lookup per user.
    let mut local_users = system.local_users.iter().peekable();
    let mut applied_users = applied.users.iter().peekable();
    for (user, keys) in wanted {
        let local = seek(&mut local_users, user.as_str());
        let applied_keys = seek(&mut applied_users, user.as_str());
        if let Some(owner) = shared.get(user) {
            actions.push(Action::RefuseSharedHome {
                user: user.clone(),
                owner: (*owner).clone(),
            });
            continue;
        }
        if local.is_some() && applied_keys == Some(keys) {
            continue;
        }
        if local.is_none() && applied.impossible.get(user) == Some(keys) {
            continue;
        }
        let (writes_keys, gets_sudo) = match local {
            None => {
                actions.push(Action::CreateUser(user.clone()));
                actions.push(Action::RecordCreated(user.clone()));
                actions.push(Action::AddToGroups(user.clone()));
                (true, true)
            }
            Some(local) => (
                !local.has_nologin_shell(),
                local.may_get_sudo(config.uid_min),
            ),
        };
        if gets_sudo {
            actions.push(Action::AddToSudoers(user.clone()));
        }
        if writes_keys {
            actions.push(Action::WriteKeys {
                user: user.clone(),
                keys: keys.clone(),
            });
        }
    }

    // A name we created whose account has since gone (deleted by someone else) must not
    // make a later account of the same name look like ours.
    let mut local_names = system.local_users.iter().peekable();
    let mut wanted_names = wanted.iter().peekable();
    for user in system.created {
        let is_local = seek(&mut local_names, user.as_str()).is_some();
        if !is_local && seek(&mut wanted_names, user.as_str()).is_none() {
            actions.push(Action::ForgetCreated(user.clone()));
        }
    }

    // Names no longer wanted leave the ledger once their revocation is planned (a wanted
    // name is managed, or refused for a shared home and keeps its place); the names added
    // above are all wanted.
    let mut wanted_names = wanted.iter().peekable();
    if !system
        .ledger
        .iter()
        .all(|u| seek(&mut wanted_names, u.as_str()).is_some())
    {
        let final_names: BTreeSet<&Username> = system
            .ledger
            .iter()
            .filter(|u| wanted.contains_key(*u))
            .chain(managed())
            .collect();
        actions.push(Action::UpdateLedger(
            final_names.into_iter().cloned().collect(),
        ));
    }
    actions
}

/// The value for `key` in sorted entries (a sorted map's, or sorted names paired with
/// `()`) walked alongside sorted keys: `entries` is left at the first entry not below
/// `key`, so each call must name a key not below the last one's.
fn seek<K: AsRef<str>, V>(
    entries: &mut Peekable<impl Iterator<Item = (K, V)>>,
    key: &str,
) -> Option<V> {
    while let Some((k, _)) = entries.peek() {
        match k.as_ref().cmp(key) {
            Ordering::Less => {
                entries.next();
            }
            Ordering::Equal => return entries.next().map(|(_, v)| v),
            Ordering::Greater => return None,
        }
    }
    None
}

/// Two spellings of one directory (`/root`, `/root/`, `//root`) are one home: the path's
/// bytes with repeated and trailing slashes dropped (as `Path` compares, without its cost).
fn home_key(home: &Path) -> Cow<'_, [u8]> {
    let bytes = home.as_os_str().as_bytes();
    let plain =
        !bytes.windows(2).any(|w| w == b"//") && (bytes.len() < 2 || !bytes.ends_with(b"/"));
    if plain {
        return Cow::Borrowed(bytes);
    }
    let mut key = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if !(b == b'/' && key.last() == Some(&b'/')) {
            key.push(b);
        }
    }
    if key.len() > 1 && key.last() == Some(&b'/') {
        key.pop();
    }
    Cow::Owned(key)
}

/// The `google_users` content to write for an [`Action::UpdateLedger`] after some actions
/// failed: the planned names plus every old ledger name in `failed` (a deprovisioning that
/// failed stays in the ledger so it is tried again), sorted.
pub fn ledger_after_failures(
    planned: &[Username],
    failed: &BTreeSet<Username>,
    old_ledger: &BTreeSet<Username>,
) -> Vec<Username> {
    let mut names: BTreeSet<Username> = planned.iter().cloned().collect();
    names.extend(failed.intersection(old_ledger).cloned());
    names.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::super::keys::fixtures::ed25519;
    use super::super::passwd::{parse_passwd, LocalUser};
    use super::*;
    use Action::*;

    fn u(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    fn set(names: &[&str]) -> BTreeSet<Username> {
        names.iter().map(|n| u(n)).collect()
    }

    fn local(entries: &[(&str, u32, &str)]) -> LocalUsers {
        entries
            .iter()
            .map(|(name, uid, shell)| {
                let user = LocalUser {
                    uid: *uid,
                    gid: *uid,
                    home: format!("/home/{name}").into(),
                    shell: shell.to_string(),
                };
                (name.to_string(), user)
            })
            .collect()
    }

    fn write(name: &str, keys: &[&str]) -> Action {
        WriteKeys {
            user: u(name),
            keys: keys.iter().map(|k| KeyText::from(*k)).collect(),
        }
    }

    fn ledger(names: &[&str]) -> Action {
        UpdateLedger(names.iter().map(|n| u(n)).collect())
    }

    const KEEP: PlanConfig = PlanConfig {
        deprovision_remove: false,
        uid_min: 1000,
    };
    const REMOVE: PlanConfig = PlanConfig {
        deprovision_remove: true,
        uid_min: 1000,
    };

    /// Plans with the given ledgers and local accounts.
    fn run(
        desired: &DesiredAccounts,
        applied: &AppliedKeys,
        ledger_names: &[&str],
        created: &[&str],
        locals: &LocalUsers,
        config: PlanConfig,
    ) -> Vec<Action> {
        let (ledger, created) = (set(ledger_names), set(created));
        let system = SystemView {
            ledger: &ledger,
            created: &created,
            local_users: locals,
        };
        plan(desired, applied, &system, &config)
    }

    #[test]
    fn start_up_checks_every_wanted_user_once() {
        let desired = DesiredAccounts::for_tests(
            false,
            &[
                ("alice", &["ka"]),
                ("bob", &["kb1", "kb2"]),
                ("svc", &["ks"]),
            ],
        );
        let locals = local(&[
            ("bob", 1001, "/bin/bash"),
            ("svc", 999, "/usr/sbin/nologin"),
        ]);
        let actions = run(&desired, &AppliedKeys::new(), &[], &[], &locals, KEEP);
        assert_eq!(
            actions,
            vec![
                ledger(&["alice", "bob", "svc"]),
                CreateUser(u("alice")),
                RecordCreated(u("alice")),
                AddToGroups(u("alice")),
                AddToSudoers(u("alice")),
                write("alice", &["ka"]),
                AddToSudoers(u("bob")),
                write("bob", &["kb1", "kb2"]),
            ]
        );
    }

    #[test]
    fn spellings_of_one_home_have_one_key() {
        let key = |p: &str| home_key(Path::new(p)).into_owned();
        assert_eq!(key("/root"), b"/root");
        for same in ["/root/", "//root", "/root//", "///root///"] {
            assert_eq!(key(same), key("/root"), "{same}");
        }
        assert_eq!(key("/"), b"/");
        assert_eq!(key("//"), b"/");
        assert_ne!(key("/home/a"), key("/home/ab"));
    }

    #[test]
    fn nothing_changed_means_no_action() {
        let desired = DesiredAccounts::for_tests(false, &[("alice", &["ka"]), ("bob", &["kb"])]);
        let mut applied = AppliedKeys::new();
        applied.settle(&desired, &BTreeSet::new());
        let locals = local(&[("alice", 1001, "/bin/bash"), ("bob", 1002, "/bin/bash")]);
        let actions = run(
            &desired,
            &applied,
            &["alice", "bob"],
            &["alice"],
            &locals,
            REMOVE,
        );
        assert_eq!(actions, vec![]);
    }

    #[test]
    fn a_change_for_one_user_touches_that_user_only() {
        let before = DesiredAccounts::for_tests(false, &[("alice", &["ka"]), ("bob", &["kb"])]);
        let mut applied = AppliedKeys::new();
        applied.settle(&before, &BTreeSet::new());
        let locals = local(&[("alice", 1001, "/bin/bash"), ("bob", 1002, "/bin/bash")]);
        let cases: Vec<(DesiredAccounts, Vec<Action>)> = vec![
            (
                DesiredAccounts::for_tests(false, &[("alice", &["ka", "ka2"]), ("bob", &["kb"])]),
                vec![AddToSudoers(u("alice")), write("alice", &["ka", "ka2"])],
            ),
            (
                // A new user.
                DesiredAccounts::for_tests(
                    false,
                    &[("alice", &["ka"]), ("bob", &["kb"]), ("bob2", &["x"])],
                ),
                vec![
                    ledger(&["alice", "bob", "bob2"]),
                    CreateUser(u("bob2")),
                    RecordCreated(u("bob2")),
                    AddToGroups(u("bob2")),
                    AddToSudoers(u("bob2")),
                    write("bob2", &["x"]),
                ],
            ),
            (
                DesiredAccounts::for_tests(false, &[("bob", &["kb"])]),
                vec![
                    Deprovision {
                        user: u("alice"),
                        delete_account: false,
                        remove_key_file: false,
                    },
                    ledger(&["bob"]),
                ],
            ),
        ];
        for (desired, expected) in cases {
            let actions = run(&desired, &applied, &["alice", "bob"], &[], &locals, KEEP);
            assert_eq!(actions, expected);
        }
    }

    #[test]
    fn deprovision_deletes_only_created_non_system_accounts_when_configured() {
        // (deprovision_remove, in created ledger, uid, UID_MIN) -> delete_account
        let cases = [
            (true, true, 1001, 1000, true),
            (true, true, 1000, 1000, true),
            (false, true, 1001, 1000, false),
            (true, false, 1001, 1000, false),
            (true, true, 999, 1000, false),
            (true, true, 0, 1000, false),
            (true, true, 0, 0, false),
            (true, true, 600, 500, true),
            (true, true, 999, 0, true),
        ];
        let desired = DesiredAccounts::for_tests(false, &[]);
        for (remove, created, uid, uid_min, delete) in cases {
            let locals = local(&[("alice", uid, "/bin/bash")]);
            let created_names: &[&str] = if created { &["alice"] } else { &[] };
            let config = PlanConfig {
                deprovision_remove: remove,
                uid_min,
            };
            let actions = run(
                &desired,
                &AppliedKeys::new(),
                &["alice"],
                created_names,
                &locals,
                config,
            );
            let mut expected = vec![Deprovision {
                user: u("alice"),
                delete_account: delete,
                remove_key_file: created && uid != 0 && uid >= uid_min,
            }];
            if delete {
                expected.push(ForgetCreated(u("alice")));
            }
            expected.push(ledger(&[]));
            assert_eq!(
                actions, expected,
                "{remove} {created:?} uid {uid} min {uid_min}"
            );
        }
    }

    #[test]
    fn the_ledger_names_new_users_before_they_get_anything() {
        // carol comes and alice leaves in one change: carol is in the ledger before her
        // account, key or sudo; alice is deprovisioned first and leaves the ledger last.
        let desired = DesiredAccounts::for_tests(false, &[("bob", &["kb"]), ("carol", &["kc"])]);
        let mut applied = AppliedKeys::new();
        applied.settle(&desired, &BTreeSet::new());
        let locals = local(&[("alice", 1001, "/bin/bash"), ("bob", 1002, "/bin/bash")]);
        let actions = run(
            &desired,
            &applied,
            &["alice", "bob"],
            &["alice"],
            &locals,
            KEEP,
        );
        assert_eq!(
            actions,
            vec![
                ledger(&["alice", "bob", "carol"]),
                Deprovision {
                    user: u("alice"),
                    delete_account: false,
                    remove_key_file: true,
                },
                CreateUser(u("carol")),
                RecordCreated(u("carol")),
                AddToGroups(u("carol")),
                AddToSudoers(u("carol")),
                write("carol", &["kc"]),
                ledger(&["bob", "carol"]),
            ]
        );
    }

    #[test]
    fn sudo_only_for_people() {
        let desired = DesiredAccounts::for_tests(
            false,
            &[
                ("alice", &["k"]),
                ("daemon", &["k"]),
                ("mail", &["k"]),
                ("nobody", &["k"]),
                ("root", &["k"]),
                ("shut", &["k"]),
                ("sys1", &["k"]),
            ],
        );
        let locals = local(&[
            ("alice", 1001, "/bin/bash"),
            ("daemon", 1, "/usr/sbin/nologin"),
            ("mail", 8, "/bin/bash"),
            ("nobody", 65534, "/usr/sbin/nologin"),
            ("root", 0, "/bin/bash"),
            ("shut", 1500, "/bin/false"),
            ("sys1", 999, "/bin/sh"),
        ]);
        let actions = run(&desired, &AppliedKeys::new(), &[], &[], &locals, KEEP);
        let sudo: Vec<&Action> = actions
            .iter()
            .filter(|a| matches!(a, AddToSudoers(_)))
            .collect();
        assert_eq!(sudo, vec![&AddToSudoers(u("alice"))]);
        // Everyone but the nologin accounts still gets keys.
        let keyed: Vec<&str> = actions
            .iter()
            .filter_map(|a| match a {
                WriteKeys { user, .. } => Some(user.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(keyed, ["alice", "mail", "root", "shut", "sys1"]);
        // A lower UID_MIN makes sys1 a person.
        let low = PlanConfig {
            deprovision_remove: false,
            uid_min: 500,
        };
        let actions = run(&desired, &AppliedKeys::new(), &[], &[], &locals, low);
        assert!(actions.contains(&AddToSudoers(u("sys1"))));
    }

    #[test]
    fn an_impossible_user_is_tried_again_only_when_its_keys_change() {
        let desired = DesiredAccounts::for_tests(false, &[("adm", &["k"]), ("bob", &["kb"])]);
        let locals = local(&[("bob", 1002, "/bin/bash")]);
        let mut applied = AppliedKeys::new();
        applied.settle_with_impossible(
            desired.clone(),
            &BTreeSet::new(),
            &set(&["adm"]),
            &set(&["adm"]),
        );
        let actions = run(&desired, &applied, &["adm", "bob"], &[], &locals, KEEP);
        assert_eq!(actions, vec![]);
        // A later round that did not try adm keeps it aside.
        let none = BTreeSet::new();
        applied.settle_with_impossible(desired.clone(), &none, &none, &none);
        let actions = run(&desired, &applied, &["adm", "bob"], &[], &locals, KEEP);
        assert_eq!(actions, vec![]);
        let changed = DesiredAccounts::for_tests(false, &[("adm", &["k2"]), ("bob", &["kb"])]);
        let actions = run(&changed, &applied, &["adm", "bob"], &[], &locals, KEEP);
        assert_eq!(actions.first(), Some(&CreateUser(u("adm"))));
        // Planned again (say its account now exists) and not refused: applied as any user.
        let mut later = applied.clone();
        later.settle_with_impossible(desired.clone(), &none, &none, &set(&["adm"]));
        assert_eq!(later.keys("adm"), Some(vec!["k".to_string()]));
    }

    #[test]
    fn a_second_name_for_one_home_is_refused_and_kept_out_of_the_ledger() {
        let locals =
            parse_passwd(b"root:x:0:0:root:/root:/bin/bash\ntoor:x:0:0::/root:/bin/bash\n");
        let desired = DesiredAccounts::for_tests(false, &[("root", &["kr"]), ("toor", &["kt"])]);
        let refused = RefuseSharedHome {
            user: u("toor"),
            owner: u("root"),
        };
        let actions = run(&desired, &AppliedKeys::new(), &[], &[], &locals, KEEP);
        assert_eq!(
            actions,
            vec![ledger(&["root"]), write("root", &["kr"]), refused.clone()]
        );
        // Still refused when root's keys are applied; toor in an old ledger stays there
        // untouched (no deprovisioning of a home that is root's).
        let mut applied = AppliedKeys::new();
        applied.settle(&desired, &set(&["toor"]));
        let actions = run(&desired, &applied, &["root", "toor"], &[], &locals, KEEP);
        assert_eq!(actions, vec![refused]);
        // root leaves: its lines go first, then toor, managed now, writes its own.
        let alone = DesiredAccounts::for_tests(false, &[("toor", &["kt"])]);
        let actions = run(&alone, &applied, &["root", "toor"], &[], &locals, KEEP);
        let deprovision = actions.iter().position(|a| matches!(a, Deprovision { .. }));
        let toor = actions.iter().position(|a| *a == write("toor", &["kt"]));
        assert!(deprovision.is_some() && toor > deprovision, "{actions:?}");
    }

    #[test]
    fn users_outside_the_ledger_are_never_touched() {
        let desired = DesiredAccounts::for_tests(false, &[]);
        let locals = local(&[("root", 0, "/bin/bash"), ("admin", 1000, "/bin/bash")]);
        let actions = run(&desired, &AppliedKeys::new(), &[], &[], &locals, REMOVE);
        assert_eq!(actions, vec![]);
    }

    #[test]
    fn a_ledger_user_whose_account_is_gone_only_leaves_the_ledger() {
        let desired = DesiredAccounts::for_tests(false, &[]);
        let actions = run(
            &desired,
            &AppliedKeys::new(),
            &["ghost"],
            &[],
            &local(&[]),
            REMOVE,
        );
        assert_eq!(actions, vec![ledger(&[])]);
    }

    #[test]
    fn a_created_name_without_an_account_is_forgotten() {
        let desired = DesiredAccounts::for_tests(false, &[("alice", &["ka"])]);
        let locals = local(&[("alice", 1001, "/bin/bash")]);
        let mut applied = AppliedKeys::new();
        applied.settle(&desired, &BTreeSet::new());
        let actions = run(
            &desired,
            &applied,
            &["alice"],
            &["alice", "gone"],
            &locals,
            REMOVE,
        );
        assert_eq!(actions, vec![ForgetCreated(u("gone"))]);
    }

    #[test]
    fn a_wanted_account_deleted_behind_our_back_is_created_again() {
        let desired = DesiredAccounts::for_tests(false, &[("alice", &["ka"])]);
        let mut applied = AppliedKeys::new();
        applied.settle(&desired, &BTreeSet::new());
        let actions = run(
            &desired,
            &applied,
            &["alice"],
            &["alice"],
            &local(&[]),
            KEEP,
        );
        assert_eq!(
            actions,
            vec![
                CreateUser(u("alice")),
                RecordCreated(u("alice")),
                AddToGroups(u("alice")),
                AddToSudoers(u("alice")),
                write("alice", &["ka"]),
            ]
        );
    }

    #[test]
    fn os_login_deprovisions_every_ledger_user() {
        let desired = DesiredAccounts::for_tests(true, &[]);
        let locals = local(&[("alice", 1001, "/bin/bash"), ("bob", 1002, "/bin/bash")]);
        let actions = run(
            &desired,
            &AppliedKeys::new(),
            &["alice", "bob"],
            &["bob"],
            &locals,
            REMOVE,
        );
        assert_eq!(
            actions,
            vec![
                Deprovision {
                    user: u("alice"),
                    delete_account: false,
                    remove_key_file: false,
                },
                Deprovision {
                    user: u("bob"),
                    delete_account: true,
                    remove_key_file: true,
                },
                ForgetCreated(u("bob")),
                ledger(&[]),
            ]
        );
    }

    #[test]
    fn root_named_in_metadata_is_managed_but_never_deleted() {
        let locals = parse_passwd(b"root:x:0:0:root:/root:/bin/bash\n");
        let wanted = DesiredAccounts::for_tests(false, &[("root", &["kr"])]);
        let actions = run(&wanted, &AppliedKeys::new(), &[], &[], &locals, REMOVE);
        assert_eq!(actions, vec![ledger(&["root"]), write("root", &["kr"])]);

        let gone = DesiredAccounts::for_tests(false, &[]);
        let actions = run(
            &gone,
            &AppliedKeys::new(),
            &["root"],
            &["root"],
            &locals,
            REMOVE,
        );
        assert_eq!(
            actions,
            vec![
                Deprovision {
                    user: u("root"),
                    delete_account: false,
                    remove_key_file: false,
                },
                ledger(&[])
            ]
        );
    }

    #[test]
    fn failed_users_are_planned_again() {
        let desired = DesiredAccounts::for_tests(false, &[("alice", &["ka"]), ("bob", &["kb"])]);
        let locals = local(&[("alice", 1001, "/bin/bash"), ("bob", 1002, "/bin/bash")]);
        let mut applied = AppliedKeys::new();
        applied.settle(&desired, &set(&["bob"]));
        assert_eq!(applied.keys("alice"), Some(vec!["ka".to_string()]));
        assert_eq!(applied.keys("bob"), None);
        let actions = run(&desired, &applied, &["alice", "bob"], &[], &locals, KEEP);
        assert_eq!(actions, vec![AddToSudoers(u("bob")), write("bob", &["kb"])]);

        // Users no longer wanted are forgotten by settle, so their return is handled.
        applied.settle(&DesiredAccounts::for_tests(false, &[]), &BTreeSet::new());
        assert_eq!(applied, AppliedKeys::new());
    }

    #[test]
    fn ledger_keeps_names_whose_deprovisioning_failed() {
        let planned = vec![u("alice")];
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&[], &["alice", "bob"], &["alice"]),
            (&["bob"], &["alice", "bob"], &["alice", "bob"]),
            (&["carol"], &["alice", "bob"], &["alice"]),
            (&["alice"], &["alice"], &["alice"]),
        ];
        for (failed, old, expected) in cases {
            let got = ledger_after_failures(&planned, &set(failed), &set(old));
            let expected: Vec<Username> = expected.iter().map(|n| u(n)).collect();
            assert_eq!(got, expected, "failed {failed:?}");
        }
    }

    #[test]
    fn every_action_names_its_user() {
        let all = [
            CreateUser(u("a")),
            RecordCreated(u("a")),
            AddToGroups(u("a")),
            AddToSudoers(u("a")),
            write("a", &[]),
            Deprovision {
                user: u("a"),
                delete_account: false,
                remove_key_file: false,
            },
            ForgetCreated(u("a")),
            RefuseSharedHome {
                user: u("a"),
                owner: u("b"),
            },
        ];
        for action in &all {
            assert_eq!(action.user().map(Username::as_str), Some("a"), "{action:?}");
        }
        assert_eq!(ledger(&["a"]).user(), None);
    }

    /// End to end through the metadata document: hostile names never reach an action, and
    /// a key's expiry changes only its user.
    #[test]
    fn from_metadata_to_actions() {
        use crate::mds::Snapshot;
        let good = ed25519(1, "alice@host");
        let expiring = ed25519(
            2,
            r#"google-ssh {"userName":"b@x.y","expireOn":"1970-01-01T00:16:40Z"}"#,
        );
        let mut value = format!("alice:{good}\nbob:{expiring}\nbob:{good}\n");
        for hostile in [
            "-oProxyCommand=x",
            "../x",
            "$(x)",
            "a;b",
            "a b",
            "",
            "..",
            "123",
            &"x".repeat(33),
        ] {
            value.push_str(&format!("{hostile}:{good}\n"));
        }
        let json = format!(
            r#"{{"instance":{{"attributes":{{"ssh-keys":{}}}}},"project":{{"attributes":{{}}}}}}"#,
            tinyjson::JsonValue::String(value).stringify().unwrap()
        );
        let snap = Snapshot {
            etag: None,
            doc: crate::json::parse_json(&json).unwrap().into(),
        };
        let locals = local(&[("alice", 1001, "/bin/bash"), ("bob", 1002, "/bin/bash")]);

        let (desired, notes) = DesiredAccounts::from_snapshot(&snap, 0).unwrap();
        assert_eq!(notes.len(), 9);
        assert_eq!(desired.next_expiry_check(), Some(1000));
        let actions = run(&desired, &AppliedKeys::new(), &[], &[], &locals, KEEP);
        let users: BTreeSet<&str> = actions
            .iter()
            .filter_map(|a| a.user())
            .map(Username::as_str)
            .collect();
        assert_eq!(users, BTreeSet::from(["alice", "bob"]));
        assert_eq!(actions.first(), Some(&ledger(&["alice", "bob"])));
        let mut applied = AppliedKeys::new();
        applied.settle(&desired, &BTreeSet::new());

        // The timer fires at the expiry check: only bob's keys are rewritten.
        let (later, _) = DesiredAccounts::from_snapshot(&snap, 1000).unwrap();
        let actions = run(&later, &applied, &["alice", "bob"], &[], &locals, KEEP);
        assert_eq!(
            actions,
            vec![AddToSudoers(u("bob")), write("bob", &[&good])]
        );
    }
}
