//! The options of `/etc/default/instance_configs.cfg`, each declared once — section, name,
//! type, built-in default, one doc line — and read into one plain struct per feature
//! ([`AccountsSettings`], [`DaemonSettings`], [`LoggingSettings`], [`NetworkSettings`],
//! [`ScriptSettings`], [`SetupSettings`]), all together in [`Settings`].
//!
//! Reading is lenient as the Python guest environment was, with our defaults: a missing
//! option takes its built-in default, a value that is not of the option's type logs one
//! warning and takes the default too. [`config`] owns the file itself (parsing,
//! layering, regeneration); its built-in defaults are [`OPTIONS`].
//!
//! Adding an option is one line in the `declare_settings!` block below: it becomes a
//! field of its feature's struct, a built-in default of the written file and a row of the
//! README's option table (a unit test keeps the README in step).

use std::path::Path;

pub mod config;

use config::Config;

/// The type of an option's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `true/false/yes/no/on/off/1/0`.
    Bool,
    /// A non-negative integer.
    Number,
    /// Any text (interpolated as Python read it).
    Text,
}

impl Kind {
    /// The word the README's option table uses.
    #[cfg(test)]
    pub fn word(self) -> &'static str {
        match self {
            Kind::Bool => "boolean",
            Kind::Number => "number",
            Kind::Text => "text",
        }
    }
}

/// One option of the configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionDecl {
    /// The section (case-sensitive, as in Python).
    pub section: &'static str,
    /// The option name (lower case).
    pub name: &'static str,
    /// The value's type.
    pub kind: Kind,
    /// The built-in default, as written to the file.
    pub default: &'static str,
    /// What it does, in one line.
    pub doc: &'static str,
}

/// A Rust type an option can be read as.
trait OptionValue: Sized {
    const KIND: Kind;
    fn read(config: &Config, section: &str, name: &str) -> Self;
}

impl OptionValue for bool {
    const KIND: Kind = Kind::Bool;
    fn read(config: &Config, section: &str, name: &str) -> bool {
        config.get_bool(section, name)
    }
}

impl OptionValue for u64 {
    const KIND: Kind = Kind::Number;
    fn read(config: &Config, section: &str, name: &str) -> u64 {
        config.get_u64(section, name)
    }
}

impl OptionValue for String {
    const KIND: Kind = Kind::Text;
    fn read(config: &Config, section: &str, name: &str) -> String {
        config.get_str(section, name)
    }
}

/// Declares the per-feature structs and [`OPTIONS`] from one list:
/// `field: type = [Section] "name", "default", "doc line";`
macro_rules! declare_settings {
    ($(
        $(#[$struct_doc:meta])*
        $settings:ident {
            $( $field:ident : $ty:ty = [$section:literal] $name:literal, $default:literal, $doc:literal; )*
        }
    )*) => {
        $(
            $(#[$struct_doc])*
            #[derive(Clone, Debug, PartialEq, Eq)]
            pub struct $settings {
                $( #[doc = $doc] pub $field: $ty, )*
            }

            impl $settings {
                /// Reads these options from `config` (defaults for missing or bad values).
                pub fn read(config: &Config) -> $settings {
                    $settings {
                        $( $field: <$ty as OptionValue>::read(config, $section, $name), )*
                    }
                }
            }

            impl Default for $settings {
                /// The built-in defaults.
                fn default() -> $settings {
                    $settings::read(&Config::default())
                }
            }
        )*

        /// Every option, grouped by the struct it is read into.
        pub static OPTIONS: &[OptionDecl] = &[
            $($(
                OptionDecl {
                    section: $section,
                    name: $name,
                    kind: <$ty as OptionValue>::KIND,
                    default: $default,
                    doc: $doc,
                },
            )*)*
        ];
    };
}

declare_settings! {
    /// `[Accounts]`: the accounts daemon's user and group commands and groups.
    AccountsSettings {
        deprovision_remove: bool = ["Accounts"] "deprovision_remove", "false",
            "delete an account the daemon created when its keys leave metadata";
        gpasswd_add_cmd: String = ["Accounts"] "gpasswd_add_cmd", "gpasswd -a {user} {group}",
            "add a user to a group";
        gpasswd_remove_cmd: String = ["Accounts"] "gpasswd_remove_cmd", "gpasswd -d {user} {group}",
            "remove a user from a group";
        groupadd_cmd: String = ["Accounts"] "groupadd_cmd", "groupadd {group}",
            "create a group";
        groups: String = ["Accounts"] "groups", "adm,dip,docker,lxd,plugdev,video",
            "groups new accounts join (those that exist)";
        unlock_cmd: String = ["Accounts"] "unlock_cmd", "",
            "run after useradd_cmd with USER:* on stdin (busybox: chpasswd -e)";
        useradd_cmd: String = ["Accounts"] "useradd_cmd", "useradd -m -s /bin/bash -p * {user}",
            "create an account";
        userdel_cmd: String = ["Accounts"] "userdel_cmd", "userdel -r {user}",
            "delete an account";
        usermod_cmd: String = ["Accounts"] "usermod_cmd", "usermod -G {groups} {user}",
            "set an account's groups";
    }

    /// `[Daemons]`: which threads `google_guest_daemon` runs.
    DaemonSettings {
        accounts_daemon: bool = ["Daemons"] "accounts_daemon", "true",
            "run the accounts daemon";
        clock_skew_daemon: bool = ["Daemons"] "clock_skew_daemon", "true",
            "run the clock-skew daemon";
        ip_forwarding_daemon: bool = ["Daemons"] "ip_forwarding_daemon", "true",
            "manage forwarded-IP routes (with `[NetworkInterfaces] ip_forwarding`)";
        network_daemon: bool = ["Daemons"] "network_daemon", "true",
            "run the network daemon";
    }

    /// `[Instance]` and `[InstanceSetup]`: boot-time setup.
    SetupSettings {
        instance_id: String = ["Instance"] "instance_id", "0",
            "the instance id setup last ran on (written by setup)";
        disk_expand_min_mib: u64 = ["InstanceSetup"] "disk_expand_min_mib", "512",
            "grow the root partition only by at least this many MiB";
        host_key_types: String = ["InstanceSetup"] "host_key_types", "ecdsa,ed25519,rsa",
            "SSH host key types to generate";
        network_enabled: bool = ["InstanceSetup"] "network_enabled", "true",
            "the instance has a network (metadata is reachable)";
        network_wait_s: u64 = ["InstanceSetup"] "network_wait_s", "300",
            "seconds to wait for the metadata server at boot";
        optimize_local_ssd: bool = ["InstanceSetup"] "optimize_local_ssd", "true",
            "tune local SSD queues";
        set_boto_config: bool = ["InstanceSetup"] "set_boto_config", "true",
            "write /etc/boto.cfg";
        set_host_keys: bool = ["InstanceSetup"] "set_host_keys", "true",
            "generate SSH host keys on a new instance";
        set_hostname: bool = ["InstanceSetup"] "set_hostname", "true",
            "set the hostname from metadata";
        set_multiqueue: bool = ["InstanceSetup"] "set_multiqueue", "true",
            "spread virtio-net and NVMe interrupts over the CPUs";
    }

    /// `[IpForwarding]` and `[NetworkInterfaces]`: the network daemon.
    NetworkSettings {
        ethernet_proto_id: u64 = ["IpForwarding"] "ethernet_proto_id", "66",
            "the route protocol that marks our routes (5 to 255)";
        ip_aliases: bool = ["IpForwarding"] "ip_aliases", "true",
            "include ipAliases";
        target_instance_ips: bool = ["IpForwarding"] "target_instance_ips", "true",
            "include targetInstanceIps";
        dhclient_script: String = ["NetworkInterfaces"] "dhclient_script",
            "/sbin/google-dhclient-script",
            "dhclient's -sf script";
        dhcp_command: String = ["NetworkInterfaces"] "dhcp_command", "",
            "run this instead of dhclient (split on spaces, no shell)";
        ip_forwarding: bool = ["NetworkInterfaces"] "ip_forwarding", "true",
            "manage forwarded-IP routes (with `[Daemons] ip_forwarding_daemon`)";
        primary_ipv6: bool = ["NetworkInterfaces"] "primary_ipv6", "true",
            "DHCPv6 on the primary NIC when metadata gives it dhcpv6Refresh";
        setup: bool = ["NetworkInterfaces"] "setup", "true",
            "bring up secondary NICs";
    }

    /// `[Logging]`.
    LoggingSettings {
        console: bool = ["Logging"] "console", "true",
            "also write log lines to the serial console";
    }

    /// `[MetadataScripts]`: the script runner.
    ScriptSettings {
        default_shell: String = ["MetadataScripts"] "default_shell", "/bin/bash",
            "the shell scripts run with";
        run_dir: String = ["MetadataScripts"] "run_dir", "",
            "where script directories are made (empty: /run)";
        shutdown: bool = ["MetadataScripts"] "shutdown", "true",
            "run shutdown scripts";
        startup: bool = ["MetadataScripts"] "startup", "true",
            "run startup scripts";
    }
}

/// Every feature's settings, read from one configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub accounts: AccountsSettings,
    pub daemons: DaemonSettings,
    pub logging: LoggingSettings,
    pub network: NetworkSettings,
    pub scripts: ScriptSettings,
    pub setup: SetupSettings,
}

impl Settings {
    /// Reads every option from `config`.
    pub fn read(config: &Config) -> Settings {
        Settings {
            accounts: AccountsSettings::read(config),
            daemons: DaemonSettings::read(config),
            logging: LoggingSettings::read(config),
            network: NetworkSettings::read(config),
            scripts: ScriptSettings::read(config),
            setup: SetupSettings::read(config),
        }
    }

    /// Parses configuration text (parser warnings logged); `source` names it in warnings.
    #[cfg(test)]
    pub fn parse(text: &str, source: &str) -> Settings {
        Settings::read(&Config::parse(text, source))
    }

    /// Reads `/etc/default/instance_configs.cfg` (see [`Config::load_from`]) and applies the
    /// logging settings.
    pub fn load() -> Settings {
        Settings::load_from(&config::Paths::system().config)
    }

    /// [`Settings::load`] from another file.
    pub fn load_from(path: &Path) -> Settings {
        let settings = Settings::read(&Config::load_from(path));
        crate::log::set_console(settings.logging.console);
        settings
    }
}

/// The declaration of `[section] name` (case-insensitive name), if there is one.
pub fn declaration(section: &str, name: &str) -> Option<&'static OptionDecl> {
    OPTIONS
        .iter()
        .find(|o| o.section == section && o.name.eq_ignore_ascii_case(name))
}

/// The declarations sorted by section then name, the order the written file uses.
#[allow(dead_code)] // For regeneration, whose caller (instance setup) has not landed.
pub fn sorted_options() -> Vec<&'static OptionDecl> {
    let mut sorted: Vec<&OptionDecl> = OPTIONS.iter().collect();
    sorted.sort_unstable_by_key(|o| (o.section, o.name));
    sorted
}

/// The README's option table, one row per option in file order.
#[cfg(test)]
pub fn readme_table() -> String {
    let mut out =
        String::from("| option | type | default | meaning |\n| --- | --- | --- | --- |\n");
    for o in sorted_options() {
        let default = if o.default.is_empty() {
            "empty".to_string()
        } else {
            format!("`{}`", o.default)
        };
        out.push_str(&format!(
            "| `[{}] {}` | {} | {} | {} |\n",
            o.section,
            o.name,
            o.kind.word(),
            default,
            o.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_unique_typed_and_their_defaults_parse() {
        let sorted = sorted_options();
        for pair in sorted.windows(2) {
            assert!(
                (pair[0].section, pair[0].name) < (pair[1].section, pair[1].name),
                "[{}] {} twice",
                pair[1].section,
                pair[1].name
            );
        }
        for o in OPTIONS {
            assert_eq!(o.name, o.name.to_lowercase(), "{}", o.name);
            assert!(!o.doc.is_empty() && !o.doc.contains('\n'), "{}", o.name);
            match o.kind {
                Kind::Bool => assert!(crate::ini::parse_bool(o.default).is_some(), "{}", o.name),
                Kind::Number => assert!(o.default.parse::<u64>().is_ok(), "{}", o.name),
                Kind::Text => {}
            }
        }
    }

    #[test]
    fn defaults_are_the_declared_ones() {
        let s = Settings::default();
        assert!(!s.accounts.deprovision_remove);
        assert_eq!(s.accounts.groups, "adm,dip,docker,lxd,plugdev,video");
        assert_eq!(s.accounts.unlock_cmd, "");
        assert!(s.daemons.accounts_daemon && s.daemons.network_daemon);
        assert_eq!(s.setup.network_wait_s, 300);
        assert_eq!(s.setup.disk_expand_min_mib, 512);
        assert!(s.setup.set_hostname);
        assert_eq!(s.network.ethernet_proto_id, 66);
        assert_eq!(s.network.dhclient_script, "/sbin/google-dhclient-script");
        assert!(s.logging.console);
        assert_eq!(s.scripts.default_shell, "/bin/bash");
    }

    #[test]
    fn file_values_and_bad_values() {
        let s = Settings::parse(
            "[Accounts]\nDeprovision_Remove = yes\n[Daemons]\nclock_skew_daemon = maybe\n\
             [InstanceSetup]\nnetwork_wait_s = soon\n[MetadataScripts]\nrun_dir = /run/%%s\n",
            "test.cfg",
        );
        assert!(s.accounts.deprovision_remove);
        assert!(
            s.daemons.clock_skew_daemon,
            "a bad boolean takes the default"
        );
        assert_eq!(
            s.setup.network_wait_s, 300,
            "a bad number takes the default"
        );
        assert_eq!(s.scripts.run_dir, "/run/%s");
    }

    /// The README's `## Configuration` table is the one [`readme_table`] renders, and every
    /// `[Section] option` the README names elsewhere is declared.
    #[test]
    fn the_readme_lists_every_declared_option() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&readme_table()),
            "README.md's option table is out of date; it should read:\n{}",
            readme_table()
        );
        let mut rest = readme;
        while let Some(start) = rest.find("`[") {
            let after = &rest[start + 2..];
            let Some(close) = after.find(']') else { break };
            let section = &after[..close];
            let names = &after[close + 1..];
            let end = names.find('`').unwrap_or(names.len());
            let name = names[..end].split_whitespace().next().unwrap_or("");
            if !name.is_empty() && section.chars().all(|c| c.is_ascii_alphabetic()) {
                assert!(
                    declaration(section, name).is_some(),
                    "README names [{}] {} which is not declared",
                    section,
                    name
                );
            }
            rest = &after[close..];
        }
    }

    /// The file setup writes holds every declared option with its default, under the
    /// generated header.
    #[test]
    fn the_written_file_holds_every_declaration() {
        let ini = config::builtin_ini();
        let text = format!(
            "{}{}",
            config::header(Path::new("/etc/default/instance_configs.cfg.template")),
            ini
        );
        let reread = Config::parse(&text, "written");
        assert_eq!(Settings::read(&reread), Settings::default());
        for o in OPTIONS {
            assert_eq!(
                ini.get(o.section, o.name),
                Some(o.default),
                "[{}] {}",
                o.section,
                o.name
            );
        }
        let sections: Vec<&str> = ini.sections().collect();
        let mut sorted = sections.clone();
        sorted.sort_unstable();
        assert_eq!(sections, sorted);
    }
}
