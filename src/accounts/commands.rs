//! The user and group commands the accounts daemon runs: the configured templates
//! (`[Accounts] useradd_cmd`, ..., `unlock_cmd`; their shadow-utils defaults are declared in
//! [`crate::settings`]), their busybox equivalents for images without shadow-utils, and
//! running one template without a shell.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::exec;
use crate::settings::AccountsSettings;

/// How long one user or group command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The busybox equivalents of the shadow-utils templates, in the order of
/// [`Commands::resolve`]'s table. Busybox has no usermod: groups are joined one by one with
/// `gpasswd_add_cmd`.
const BUSYBOX_USERADD: &str = "adduser -D -s /bin/sh {user}";
const BUSYBOX_USERDEL: &str = "deluser --remove-home {user}";
const BUSYBOX_USERMOD: &str = "";
const BUSYBOX_GROUPADD: &str = "addgroup {group}";
const BUSYBOX_GPASSWD_ADD: &str = "addgroup {user} {group}";
const BUSYBOX_GPASSWD_REMOVE: &str = "delgroup {user} {group}";
/// `adduser -D` leaves the password locked (`!`), which OpenSSH refuses even for key
/// logins, so this (fed `<user>:*` on stdin) makes it "no password".
const BUSYBOX_UNLOCK: &str = "chpasswd -e";

/// The command templates in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commands {
    pub useradd: String,
    pub userdel: String,
    pub usermod: String,
    pub groupadd: String,
    pub gpasswd_add: String,
    pub gpasswd_remove: String,
    /// Run after `useradd` with `<user>:*` on stdin (empty: no such step).
    pub unlock: String,
    /// `[Accounts] groups`, before filtering to the groups that exist.
    pub groups: Vec<String>,
    /// `useradd`, `usermod` and `gpasswd -a` are all shadow-utils' defaults: a new account
    /// is made with its groups and `google-sudoers` in one `useradd -G` (one command per
    /// new user instead of three; configured templates are run as written).
    pub groups_at_useradd: bool,
}

fn first_word(template: &str) -> &str {
    template.split(' ').find(|w| !w.is_empty()).unwrap_or("")
}

impl Commands {
    /// The templates from the settings. A template left at its shadow-utils default
    /// switches to the busybox equivalent when the image lacks that program but has the
    /// busybox applet; `/bin/bash` in the default becomes `/bin/sh` where bash is missing.
    pub fn from_settings(settings: &AccountsSettings) -> Commands {
        Commands::resolve(
            settings,
            |p| exec::find_program(p).is_some(),
            Path::new("/bin/bash").exists(),
        )
    }

    fn resolve(
        settings: &AccountsSettings,
        have: impl Fn(&str) -> bool,
        have_bash: bool,
    ) -> Commands {
        let shadow = AccountsSettings::default();
        let busybox_userland = !have("useradd") && have("adduser");
        let pick = |configured: &str, shadow_default: &str, busybox: &str, useradd: bool| {
            let is_default = configured.trim().is_empty() || configured == shadow_default;
            let mut chosen = if is_default && busybox_userland {
                busybox.to_string()
            } else if configured.trim().is_empty() {
                shadow_default.to_string()
            } else {
                configured.to_string()
            };
            if have_bash && busybox_userland && useradd && is_default {
                chosen = chosen.replace("/bin/sh", "/bin/bash");
            }
            if !have_bash && is_default {
                chosen = chosen.replace("/bin/bash", "/bin/sh");
            }
            chosen
        };
        let unlock = if !settings.unlock_cmd.trim().is_empty() {
            settings.unlock_cmd.clone()
        } else if busybox_userland {
            BUSYBOX_UNLOCK.to_string()
        } else {
            String::new()
        };
        let s = settings;
        let at_default =
            |configured: &str, default: &str| configured.trim().is_empty() || configured == default;
        let groups_at_useradd = !busybox_userland
            && at_default(&s.useradd_cmd, &shadow.useradd_cmd)
            && at_default(&s.usermod_cmd, &shadow.usermod_cmd)
            && at_default(&s.gpasswd_add_cmd, &shadow.gpasswd_add_cmd);
        Commands {
            groups_at_useradd,
            useradd: pick(&s.useradd_cmd, &shadow.useradd_cmd, BUSYBOX_USERADD, true),
            userdel: pick(&s.userdel_cmd, &shadow.userdel_cmd, BUSYBOX_USERDEL, false),
            usermod: pick(&s.usermod_cmd, &shadow.usermod_cmd, BUSYBOX_USERMOD, false),
            groupadd: pick(
                &s.groupadd_cmd,
                &shadow.groupadd_cmd,
                BUSYBOX_GROUPADD,
                false,
            ),
            gpasswd_add: pick(
                &s.gpasswd_add_cmd,
                &shadow.gpasswd_add_cmd,
                BUSYBOX_GPASSWD_ADD,
                false,
            ),
            gpasswd_remove: pick(
                &s.gpasswd_remove_cmd,
                &shadow.gpasswd_remove_cmd,
                BUSYBOX_GPASSWD_REMOVE,
                false,
            ),
            unlock,
            groups: s
                .groups
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }
}

impl Commands {
    /// The `useradd` template that also joins `{groups}` (comma-separated) when
    /// [`Commands::groups_at_useradd`]: `-G {groups}` before the user name.
    pub fn useradd_with_groups(&self) -> Option<String> {
        if !self.groups_at_useradd || !self.useradd.trim_end().ends_with("{user}") {
            return None;
        }
        let head = self.useradd.trim_end().strip_suffix("{user}")?;
        Some(format!("{}-G {{groups}} {{user}}", head))
    }
}

/// Runs one command template with `vars`; a non-zero exit is an error carrying its output.
pub fn run_template(template: &str, vars: &[(&str, &str)], input: Option<&[u8]>) -> Result<()> {
    let argv = exec::expand_template(template, vars);
    let program = first_word(template).to_string();
    let Some(cmd) = exec::command_from_argv(&argv) else {
        return Err(Error::Command {
            program,
            detail: "is an empty template".into(),
        });
    };
    let out = match input {
        Some(bytes) => exec::run_with_input(cmd, bytes, COMMAND_TIMEOUT)?,
        None => exec::run(cmd, COMMAND_TIMEOUT)?,
    };
    out.checked(&program).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn config(text: &str) -> AccountsSettings {
        Settings::parse(text, "test").accounts
    }

    #[test]
    fn shadow_defaults_stay_where_useradd_exists() {
        let c = Commands::resolve(&config(""), |p| p != "adduser", true);
        assert_eq!(c.useradd, "useradd -m -s /bin/bash -p * {user}");
        assert_eq!(c.usermod, "usermod -G {groups} {user}");
        assert!(c.unlock.is_empty());
        assert_eq!(
            c.groups,
            ["adm", "dip", "docker", "lxd", "plugdev", "video"]
        );
        assert!(c.groups_at_useradd);
        assert_eq!(
            c.useradd_with_groups().as_deref(),
            Some("useradd -m -s /bin/bash -p * -G {groups} {user}")
        );
    }

    #[test]
    fn configured_templates_are_run_as_written_not_merged() {
        for config_text in [
            "[Accounts]\nuseradd_cmd = useradd -m {user}\n",
            "[Accounts]\nusermod_cmd = usermod -aG {groups} {user}\n",
            "[Accounts]\ngpasswd_add_cmd = /usr/sbin/gpasswd -a {user} {group}\n",
        ] {
            let c = Commands::resolve(&config(config_text), |p| p != "adduser", true);
            assert!(!c.groups_at_useradd, "{config_text}");
            assert_eq!(c.useradd_with_groups(), None);
        }
        let busybox = Commands::resolve(&config(""), |p| p == "adduser", false);
        assert_eq!(busybox.useradd_with_groups(), None);
    }

    #[test]
    fn a_busybox_userland_switches_the_defaults_by_itself() {
        let c = Commands::resolve(&config(""), |p| p == "adduser" || p == "addgroup", false);
        assert_eq!(c.useradd, "adduser -D -s /bin/sh {user}");
        assert_eq!(c.gpasswd_add, "addgroup {user} {group}");
        assert_eq!(c.gpasswd_remove, "delgroup {user} {group}");
        assert_eq!(c.unlock, "chpasswd -e");
        assert!(c.usermod.is_empty());
        let with_bash = Commands::resolve(&config(""), |p| p == "adduser", true);
        assert_eq!(with_bash.useradd, "adduser -D -s /bin/bash {user}");
    }

    #[test]
    fn configured_commands_are_kept_even_on_busybox() {
        let c = Commands::resolve(
            &config("[Accounts]\nuseradd_cmd = myadd {user}\n"),
            |p| p == "adduser",
            false,
        );
        assert_eq!(c.useradd, "myadd {user}");
        assert_eq!(c.groupadd, "addgroup {group}");
    }

    #[test]
    fn no_bash_means_sh_in_the_default_useradd() {
        let c = Commands::resolve(&config(""), |_| true, false);
        assert_eq!(c.useradd, "useradd -m -s /bin/sh -p * {user}");
    }
}
