//! `/etc/default/instance_configs.cfg`: reading the file with the lenient getters
//! [`crate::settings`] builds its typed structs with (the built-in defaults are its
//! declarations), and the boot-time regeneration `google_instance_setup` does —
//! layering `.template` > metadata `google-instance-configs` > the existing file >
//! `.distro` > built-in defaults, then writing the result with the "generated, do not
//! edit" header, atomically, under `/var/lock/google_instance_configs.lock`.
//!
//! Daemons read only the main file ([`Config::load_from`]); a missing option takes its
//! built-in default (not "true for every boolean" as Python 2.8 did) and an unusable value
//! logs one warning and takes the default too.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tinyjson::JsonValue;

use crate::error::Result;
use crate::fsutil;
use crate::ini::{self, Ini, Warning, DEFAULT_SECTION};
use crate::log::LogOnce;
use crate::settings;

/// The program named in the generated file's header.
const GENERATOR: &str = "/usr/bin/google_instance_setup";

/// Width Python's `textwrap.wrap` used for the header.
const HEADER_WIDTH: usize = 70;

/// How long regeneration waits for another writer's lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The metadata attribute holding a configuration text.
const METADATA_ATTRIBUTE: &str = "google-instance-configs";

/// The built-in default of an option (case-insensitive option name), if it has one: the
/// declarations of [`crate::settings`] are the only table of defaults.
pub fn builtin_default(section: &str, option: &str) -> Option<&'static str> {
    settings::declaration(section, option).map(|o| o.default)
}

/// The built-in defaults as a document, sections and options sorted.
pub fn builtin_ini() -> Ini {
    let mut ini = Ini::new();
    for o in settings::sorted_options() {
        ini.set(o.section, o.name, o.default);
    }
    ini
}

/// Where the configuration files live. The program always uses [`Paths::system`]; unit
/// tests point one into a temporary directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// The file daemons read and setup regenerates.
    pub config: PathBuf,
    /// The administrator's overrides, never written by us.
    pub template: PathBuf,
    /// The distribution's defaults.
    pub distro: PathBuf,
    /// The lock every writer of `config` takes.
    pub lock: PathBuf,
}

impl Paths {
    /// The real locations.
    pub fn system() -> Paths {
        Paths::under(Path::new("/"))
    }

    /// The same layout below `root`.
    pub fn under(root: &Path) -> Paths {
        let config = root.join("etc/default/instance_configs.cfg");
        Paths {
            template: PathBuf::from(format!("{}.template", config.display())),
            distro: PathBuf::from(format!("{}.distro", config.display())),
            lock: root.join("var/lock/google_instance_configs.lock"),
            config,
        }
    }
}

impl Default for Paths {
    fn default() -> Paths {
        Paths::system()
    }
}

/// The configuration as the daemons see it: the file's options over the built-in defaults.
#[derive(Debug)]
pub struct Config {
    ini: Ini,
    /// What the options were read from, for warnings.
    source: String,
    /// `[section] option`s already warned about, so a value is complained about once.
    warned: Mutex<LogOnce>,
}

impl Clone for Config {
    fn clone(&self) -> Config {
        Config::from_ini(self.ini.clone(), &self.source)
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::from_ini(Ini::new(), "built-in defaults")
    }
}

fn log_warnings(warnings: &[Warning]) {
    for w in warnings {
        warn!("{}", w);
    }
}

/// Parses configuration bytes read from `what`, logging every warning.
fn parse_logged(bytes: &[u8], what: &str) -> Ini {
    let text = String::from_utf8_lossy(bytes);
    if let std::borrow::Cow::Owned(_) = text {
        warn!("{} is not valid UTF-8; invalid bytes are replaced", what);
    }
    let (ini, warnings) = Ini::parse(&text, what);
    log_warnings(&warnings);
    ini
}

/// Reads and parses an optional configuration file: `Ok(None)` when it does not exist.
fn read_source(path: &Path) -> Result<Option<Ini>> {
    let bytes = fsutil::read_optional(path)?;
    Ok(bytes.map(|b| parse_logged(&b, &path.display().to_string())))
}

impl Config {
    /// Wraps a parsed document; `source` names it in warnings.
    pub fn from_ini(ini: Ini, source: &str) -> Config {
        Config {
            ini,
            source: source.to_string(),
            warned: Mutex::new(LogOnce::default()),
        }
    }

    /// Parses configuration text, logging the parser's warnings.
    #[cfg(test)]
    pub fn parse(text: &str, source: &str) -> Config {
        Config::from_ini(parse_logged(text.as_bytes(), source), source)
    }

    /// Reads the configuration from `path`. A missing file means built-in defaults only;
    /// an unreadable one is logged and means the same.
    pub fn load_from(path: &Path) -> Config {
        let source = path.display().to_string();
        match read_source(path) {
            Ok(Some(ini)) => Config::from_ini(ini, &source),
            Ok(None) => Config::from_ini(Ini::new(), &source),
            Err(e) => {
                warn!("{}; using the built-in defaults", e);
                Config::from_ini(Ini::new(), &source)
            }
        }
    }

    /// The document read (without the built-in defaults).
    pub fn ini(&self) -> &Ini {
        &self.ini
    }

    /// Sets an option to a literal value (a `%` stays a `%` when read back).
    pub fn set(&mut self, section: &str, option: &str, value: &str) {
        self.ini.set(section, option, &ini::escape_percent(value));
    }

    /// The option's value (interpolated as Python read it), else its built-in default,
    /// else empty.
    pub(crate) fn get_str(&self, section: &str, option: &str) -> String {
        match self.ini.get_interpolated(section, option) {
            Some(value) => value.into_owned(),
            None => builtin_default(section, option)
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// The option as a boolean (`1/yes/true/on`, `0/no/false/off`); a missing option takes
    /// its built-in default (false when it has none); a value that is not a boolean logs a
    /// warning once and takes the default.
    pub(crate) fn get_bool(&self, section: &str, option: &str) -> bool {
        let default = builtin_default(section, option)
            .and_then(ini::parse_bool)
            .unwrap_or(false);
        match self.ini.get_bool(section, option) {
            None => default,
            Some(Ok(value)) => value,
            Some(Err(value)) => {
                self.warn_once(section, option, &value, "a boolean", &default.to_string());
                default
            }
        }
    }

    /// The option as a non-negative integer; missing or unusable values take the built-in
    /// default (0 when it has none), an unusable one with a warning logged once.
    pub(crate) fn get_u64(&self, section: &str, option: &str) -> u64 {
        let default = builtin_default(section, option)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        match self.ini.get_interpolated(section, option) {
            None => default,
            Some(value) => value.parse().unwrap_or_else(|_| {
                self.warn_once(section, option, &value, "a number", &default.to_string());
                default
            }),
        }
    }

    fn warn_once(&self, section: &str, option: &str, value: &str, wanted: &str, default: &str) {
        if let Ok(mut warned) = self.warned.lock() {
            if !warned.first_time(&format!("[{}] {}", section, option)) {
                return;
            }
        }
        warn!(
            "{}: [{}] {} = {:?} is not {}; using the default {}",
            self.source, section, option, value, wanted, default
        );
    }

    /// Writes this configuration to `paths.config` as setup does: header, lock, atomic
    /// replacement (for example after storing `[Instance] instance_id`).
    pub fn save(&self, paths: &Paths) -> Result<()> {
        let _lock = fsutil::lock_wait(&paths.lock, LOCK_WAIT)?;
        write_config(paths, &self.ini)
    }
}

/// Splits text into lines of at most `width` characters as Python's
/// `textwrap.wrap(text, width, break_on_hyphens=False)` does: greedy, white space runs
/// collapsed at line ends, words longer than a line cut to fill it.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let munged: String = text
        .chars()
        .map(|c| if crate::ini::is_py_space(c) { ' ' } else { c })
        .collect();
    // Alternating runs of spaces and of other characters, last chunk first.
    let mut chunks: Vec<Vec<char>> = Vec::new();
    for c in munged.chars() {
        match chunks.last_mut() {
            Some(chunk) if (chunk[0] == ' ') == (c == ' ') => chunk.push(c),
            _ => chunks.push(vec![c]),
        }
    }
    chunks.reverse();
    let is_blank = |chunk: &[char]| chunk.iter().all(|&c| c == ' ');
    let mut lines = Vec::new();
    while !chunks.is_empty() {
        if !lines.is_empty() && chunks.last().is_some_and(|c| is_blank(c)) {
            chunks.pop();
        }
        let mut line: Vec<Vec<char>> = Vec::new();
        let mut len = 0;
        while let Some(chunk) = chunks.last() {
            if len + chunk.len() > width {
                break;
            }
            len += chunk.len();
            line.extend(chunks.pop());
        }
        if let Some(long) = chunks.last_mut() {
            if long.len() > width {
                // Python cuts at least one character even when no room is left.
                let room = if width == 0 { 1 } else { width - len };
                let rest = long.split_off(room.min(long.len()));
                line.push(std::mem::replace(long, rest));
            }
        }
        if line.last().is_some_and(|c| is_blank(c)) {
            line.pop();
        }
        if !line.is_empty() {
            lines.push(line.concat().into_iter().collect());
        }
    }
    lines
}

/// The comment block that opens the generated file: what made it and where changes go.
pub fn header(template: &Path) -> String {
    let text = format!(
        "This file is automatically created at boot time by the {} script. Do not edit \
         this file directly. If you need to add items to this file, create or edit {} \
         instead and then run {}.",
        GENERATOR,
        template.display(),
        GENERATOR
    );
    let mut out = String::new();
    for line in wrap(&text, HEADER_WIDTH) {
        out.push_str("# ");
        out.push_str(&line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// Fills every option `base` lacks from `sources`, highest precedence first: each source's
/// sections and options in sorted order, options inherited from its `[DEFAULT]` included,
/// values taken as read (interpolated) and stored literally. Never overwrites; an option
/// `base` gets from its own `[DEFAULT]` counts as present.
pub fn merge(base: Ini, sources: &[Ini]) -> Ini {
    let mut merged = base;
    for source in sources {
        let mut sections: Vec<&str> = source.sections().collect();
        sections.sort_unstable();
        for section in sections {
            let mut options: Vec<&str> = source
                .options(section)
                .chain(source.options(DEFAULT_SECTION))
                .collect();
            options.sort_unstable();
            options.dedup();
            for option in options {
                if let Some(value) = source.get_interpolated(section, option) {
                    merged.set_if_missing(section, option, &ini::escape_percent(&value));
                }
            }
        }
    }
    merged
}

/// Reads the layers and merges them: `.template` > `metadata_config_text` > the existing
/// file > `.distro` > built-in defaults. Missing files are skipped. A layer with parse
/// warnings is still used, the warnings logged (Python dropped a layer that failed to
/// parse as a whole). A file that exists but cannot be read is an error, so that
/// regeneration never drops settings it could not see.
pub fn merged_config(paths: &Paths, metadata_config_text: Option<&str>) -> Result<Ini> {
    let base = read_source(&paths.template)?.unwrap_or_default();
    let mut sources = Vec::new();
    if let Some(text) = metadata_config_text.filter(|t| !t.is_empty()) {
        let what = format!("metadata attribute {}", METADATA_ATTRIBUTE);
        sources.push(parse_logged(text.as_bytes(), &what));
    }
    for path in [&paths.config, &paths.distro] {
        if let Some(ini) = read_source(path)? {
            sources.push(ini);
        }
    }
    sources.push(builtin_ini());
    Ok(merge(base, &sources))
}

/// The mode of the written file.
const CONFIG_MODE: u32 = 0o644;

/// Writes `ini` with the header to `paths.config` (mode 0644, atomically), unless the file
/// already is exactly that: a later boot with nothing changed writes and syncs nothing.
/// The caller holds the lock.
fn write_config(paths: &Paths, ini: &Ini) -> Result<()> {
    let mut text = header(&paths.template);
    text.push_str(&ini.to_string());
    if already_written(&paths.config, text.as_bytes()) {
        debug!("{} is up to date.", paths.config.display());
        return Ok(());
    }
    fsutil::create_parent(&paths.config)?;
    fsutil::write_atomic(&paths.config, text.as_bytes(), CONFIG_MODE)?;
    fsutil::restorecon(&paths.config);
    Ok(())
}

/// Whether `path` is a regular file holding exactly `content`, with the mode and owner
/// [`write_config`] gives it (a symlink, another mode or owner is rewritten as before).
fn already_written(path: &Path, content: &[u8]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    meta.is_file()
        && meta.mode() & 0o7777 == CONFIG_MODE
        && meta.uid() == crate::sys::geteuid()
        && meta.len() == content.len() as u64
        && std::fs::read(path).is_ok_and(|on_disk| on_disk == content)
}

fn regenerate_waiting(
    paths: &Paths,
    metadata_config_text: Option<&str>,
    lock_wait: Duration,
) -> Result<Config> {
    let _lock = fsutil::lock_wait(&paths.lock, lock_wait)?;
    let merged = merged_config(paths, metadata_config_text)?;
    write_config(paths, &merged)?;
    Ok(Config::from_ini(
        merged,
        &paths.config.display().to_string(),
    ))
}

/// Regenerates `paths.config` (`/etc/default/instance_configs.cfg` for
/// [`Paths::system`]; see [`merged_config`]) under its lock and returns the new
/// configuration. `metadata_config_text` is the `google-instance-configs` attribute, see
/// [`metadata_config_text`].
pub fn regenerate_at(paths: &Paths, metadata_config_text: Option<&str>) -> Result<Config> {
    regenerate_waiting(paths, metadata_config_text, LOCK_WAIT)
}

/// The `google-instance-configs` text from a recursive metadata document: the instance
/// attribute, else the project one (an empty value counts as absent, as in Python).
pub fn metadata_config_text(doc: &JsonValue) -> Option<&str> {
    ["instance", "project"]
        .iter()
        .filter_map(|scope| {
            crate::json::lookup_str(doc, &format!("{}/attributes/{}", scope, METADATA_ATTRIBUTE))
        })
        .find(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gce-guest-config-{}-{}-{}",
            name,
            std::process::id(),
            crate::timing::random_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_defaults_table_is_sorted_and_complete() {
        let ini = builtin_ini();
        let sections: Vec<&str> = ini.sections().collect();
        let mut sorted = sections.clone();
        sorted.sort_unstable();
        assert_eq!(sections, sorted);
        for section in sections {
            let names: Vec<&str> = ini.options(section).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(names, sorted, "[{}]", section);
        }
        assert_eq!(
            builtin_default("InstanceSetup", "set_boto_config"),
            Some("true")
        );
        assert_eq!(
            builtin_default("Accounts", "deprovision_remove"),
            Some("false")
        );
        assert_eq!(
            builtin_default("Accounts", "Groups"),
            Some("adm,dip,docker,lxd,plugdev,video")
        );
        assert_eq!(
            builtin_default("NetworkInterfaces", "primary_ipv6"),
            Some("true")
        );
        assert_eq!(
            builtin_default("accounts", "groups"),
            None,
            "sections are case-sensitive"
        );
    }

    #[test]
    fn missing_options_take_their_builtin_default() {
        let config = Config::default();
        assert!(!config.get_bool("Accounts", "deprovision_remove"));
        assert!(config.get_bool("Daemons", "accounts_daemon"));
        assert!(
            !config.get_bool("Daemons", "no_such_daemon"),
            "not true for every boolean"
        );
        assert_eq!(
            config.get_str("MetadataScripts", "default_shell"),
            "/bin/bash"
        );
        assert_eq!(config.get_str("MetadataScripts", "run_dir"), "");
        assert_eq!(config.get_str("Nope", "nothing"), "");
        assert_eq!(config.get_u64("InstanceSetup", "network_wait_s"), 300);
        assert_eq!(config.get_u64("IpForwarding", "ethernet_proto_id"), 66);
        assert_eq!(config.get_u64("Nope", "nothing"), 0);
    }

    #[test]
    fn file_values_win_over_defaults() {
        let config = Config::parse(
            "[DEFAULT]\nstartup = no\n[Accounts]\nDeprovision_Remove = YES\ngroups =\n\
             [Daemons]\nclock_skew_daemon = off\n[InstanceSetup]\nnetwork_wait_s = 30\n\
             [MetadataScripts]\nrun_dir = /run/%%s\n",
            "test.cfg",
        );
        assert!(config.get_bool("Accounts", "deprovision_remove"));
        assert_eq!(
            config.get_str("Accounts", "groups"),
            "",
            "present but empty is empty"
        );
        assert!(!config.get_bool("Daemons", "clock_skew_daemon"));
        assert!(config.get_bool("Daemons", "accounts_daemon"));
        assert_eq!(config.get_u64("InstanceSetup", "network_wait_s"), 30);
        assert_eq!(config.get_str("MetadataScripts", "run_dir"), "/run/%s");
        assert!(
            !config.get_bool("MetadataScripts", "startup"),
            "[DEFAULT] is inherited"
        );
    }

    #[test]
    fn unusable_values_warn_once_and_take_the_default() {
        let config = Config::parse(
            "[Daemons]\naccounts_daemon = maybe\n[Accounts]\ndeprovision_remove = sure\n\
             [InstanceSetup]\nnetwork_wait_s = soon\n",
            "test.cfg",
        );
        assert!(config.get_bool("Daemons", "accounts_daemon"));
        assert!(config.get_bool("Daemons", "accounts_daemon"));
        assert!(!config.get_bool("Accounts", "deprovision_remove"));
        assert_eq!(config.get_u64("InstanceSetup", "network_wait_s"), 300);
        assert_eq!(
            config.warned.lock().unwrap().len(),
            3,
            "one warning per option"
        );
    }

    #[test]
    fn load_from_missing_or_unreadable_files_gives_defaults() {
        let dir = scratch("load");
        let missing = Config::load_from(&dir.join("nope.cfg"));
        assert!(missing.ini().is_empty());
        assert!(missing.get_bool("Daemons", "accounts_daemon"));
        // A directory cannot be read as a file.
        let unreadable = Config::load_from(&dir);
        assert!(unreadable.ini().is_empty());
        let file = dir.join("instance_configs.cfg");
        write(&file, "[Daemons]\naccounts_daemon = false\nbroken line\n");
        let loaded = Config::load_from(&file);
        assert!(!loaded.get_bool("Daemons", "accounts_daemon"));
        std::fs::write(&file, b"[Accounts]\ngroups = adm\xff\n").unwrap();
        assert_eq!(
            Config::load_from(&file).get_str("Accounts", "groups"),
            "adm\u{fffd}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn paths_are_the_real_ones_by_default() {
        let paths = Paths::default();
        assert_eq!(paths.config, Path::new("/etc/default/instance_configs.cfg"));
        assert_eq!(
            paths.template,
            Path::new("/etc/default/instance_configs.cfg.template")
        );
        assert_eq!(
            paths.distro,
            Path::new("/etc/default/instance_configs.cfg.distro")
        );
        assert_eq!(
            paths.lock,
            Path::new("/var/lock/google_instance_configs.lock")
        );
        let under = Paths::under(Path::new("/tmp/x"));
        assert_eq!(
            under.template,
            Path::new("/tmp/x/etc/default/instance_configs.cfg.template")
        );
    }

    #[test]
    fn header_wraps_like_python_textwrap() {
        // Expected text produced by Python's textwrap.wrap(..., break_on_hyphens=False).
        assert_eq!(
            header(Path::new("/etc/default/instance_configs.cfg.template")),
            "# This file is automatically created at boot time by the\n\
             # /usr/bin/google_instance_setup script. Do not edit this file directly.\n\
             # If you need to add items to this file, create or edit\n\
             # /etc/default/instance_configs.cfg.template instead and then run\n\
             # /usr/bin/google_instance_setup.\n\n"
        );
        let long = "/tmp/gce-guest-config-test-123456-abcdefabcdefabcdef/very/long/path/that/\
                    goes/on/etc/default/instance_configs.cfg.template";
        assert_eq!(
            header(Path::new(long)),
            "# This file is automatically created at boot time by the\n\
             # /usr/bin/google_instance_setup script. Do not edit this file directly.\n\
             # If you need to add items to this file, create or edit /tmp/gce-guest-c\n\
             # onfig-test-123456-abcdefabcdefabcdef/very/long/path/that/goes/on/etc/d\n\
             # efault/instance_configs.cfg.template instead and then run\n\
             # /usr/bin/google_instance_setup.\n\n"
        );
        assert_eq!(wrap("  a  b ", 70), ["  a  b"]);
        assert_eq!(wrap("abcdef", 4), ["abcd", "ef"]);
        assert!(wrap("", 70).is_empty());
    }

    #[test]
    fn merge_fills_missing_options_in_sorted_order() {
        let base = Ini::parse("[Zed]\nz = template\n[Accounts]\ngroups = mine\n", "t").0;
        let source = Ini::parse(
            "[DEFAULT]\nd = 1\n[B]\nb2 = 2\nb1 = 1\n[A]\na = 100%%\n",
            "s",
        )
        .0;
        let merged = merge(base, &[source]);
        assert_eq!(
            merged.sections().collect::<Vec<_>>(),
            ["Zed", "Accounts", "A", "B"]
        );
        assert_eq!(merged.options("B").collect::<Vec<_>>(), ["b1", "b2", "d"]);
        assert_eq!(merged.options("A").collect::<Vec<_>>(), ["a", "d"]);
        assert_eq!(merged.get("A", "a"), Some("100%%"));
        assert_eq!(merged.get_interpolated("A", "a").as_deref(), Some("100%"));
        assert_eq!(
            merged.options(DEFAULT_SECTION).count(),
            0,
            "[DEFAULT] is spread, not copied"
        );
        assert_eq!(merged.get("Accounts", "groups"), Some("mine"));
    }

    /// The permission bits of the file at `path`.
    fn file_mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn setup_layers(root: &Path) -> Paths {
        let paths = Paths::under(root);
        write(
            &paths.template,
            "[Accounts]\ngroups = template\n\n[Custom]\nmine = 1\n",
        );
        write(
            &paths.config,
            "# old header\n[Accounts]\ngroups = config\nuseradd_cmd = config\n\
             usermod_cmd = config\n[Instance]\ninstance_id = 12345\n",
        );
        write(
            &paths.distro,
            "[Accounts]\ngroups = distro\nuseradd_cmd = distro\nusermod_cmd = distro\n\
             userdel_cmd = distro\n[Daemons]\nnetwork_daemon = false\n",
        );
        paths
    }

    #[test]
    fn regeneration_follows_the_precedence() {
        let root = scratch("regen");
        let paths = setup_layers(&root);
        let metadata = "[Accounts]\ngroups = metadata\nuseradd_cmd = metadata\n";
        let config = regenerate_at(&paths, Some(metadata)).unwrap();
        assert_eq!(config.get_str("Accounts", "groups"), "template");
        assert_eq!(config.get_str("Accounts", "useradd_cmd"), "metadata");
        assert_eq!(config.get_str("Accounts", "usermod_cmd"), "config");
        assert_eq!(config.get_str("Accounts", "userdel_cmd"), "distro");
        assert_eq!(
            config.get_str("Accounts", "groupadd_cmd"),
            "groupadd {group}"
        );
        assert_eq!(config.get_str("Instance", "instance_id"), "12345");
        assert!(!config.get_bool("Daemons", "network_daemon"));
        assert_eq!(config.get_str("Custom", "mine"), "1");

        let written = std::fs::read_to_string(&paths.config).unwrap();
        assert!(written.starts_with(&header(&paths.template)), "{}", written);
        assert!(!written.contains("old header"));
        let body = &written[header(&paths.template).len()..];
        assert!(
            body.starts_with("[Accounts]\ngroups = template\n"),
            "{}",
            body
        );
        assert_eq!(Ini::parse(&written, "again").0, *config.ini());
        // Every built-in option is there.
        for o in settings::OPTIONS {
            assert!(
                config.ini().has_option(o.section, o.name),
                "[{}] {}",
                o.section,
                o.name
            );
        }
        assert_eq!(file_mode(&paths.config), 0o644);
        assert_eq!(
            std::fs::read_to_string(&paths.template).unwrap(),
            "[Accounts]\ngroups = template\n\n[Custom]\nmine = 1\n"
        );

        // Without metadata the existing file's values now come first.
        let again = regenerate_at(&paths, None).unwrap();
        assert_eq!(again.get_str("Accounts", "useradd_cmd"), "metadata");
        std::fs::remove_dir_all(root).unwrap();
    }

    /// A regeneration that changes nothing leaves the file alone (same inode, no write);
    /// a changed value, mode or a symlink in its place is written (a new file renamed in).
    #[test]
    fn regeneration_writes_only_what_changed() {
        use std::os::unix::fs::MetadataExt;
        let root = scratch("unchanged");
        let paths = setup_layers(&root);
        let inode = |p: &Path| std::fs::symlink_metadata(p).unwrap().ino();
        // The first regeneration may still reorder the options of the old file; from the
        // second on the text is stable.
        regenerate_at(&paths, None).unwrap();
        regenerate_at(&paths, None).unwrap();
        let first = inode(&paths.config);
        let written = std::fs::read(&paths.config).unwrap();
        regenerate_at(&paths, None).unwrap();
        assert_eq!(
            inode(&paths.config),
            first,
            "nothing changed, nothing written"
        );
        assert_eq!(std::fs::read(&paths.config).unwrap(), written);

        regenerate_at(&paths, Some("[Custom]\nnew = 1\n")).unwrap();
        let second = inode(&paths.config);
        assert_ne!(second, first, "a new option is written");
        assert!(Config::load_from(&paths.config)
            .ini()
            .has_option("Custom", "new"));

        std::fs::set_permissions(&paths.config, std::fs::Permissions::from_mode(0o600)).unwrap();
        regenerate_at(&paths, None).unwrap();
        assert_ne!(inode(&paths.config), second, "another mode is rewritten");
        assert_eq!(file_mode(&paths.config), 0o644);

        let elsewhere = root.join("elsewhere.cfg");
        std::fs::rename(&paths.config, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &paths.config).unwrap();
        regenerate_at(&paths, None).unwrap();
        assert!(
            std::fs::symlink_metadata(&paths.config).unwrap().is_file(),
            "a symlink is replaced by the file, as before"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn regeneration_without_any_file_writes_the_defaults() {
        let root = scratch("fresh");
        let paths = Paths::under(&root);
        let config = regenerate_at(&paths, Some("")).unwrap();
        assert_eq!(*config.ini(), builtin_ini());
        let written = std::fs::read_to_string(&paths.config).unwrap();
        assert!(written.contains("\n[Accounts]\ndeprovision_remove = false\n"));
        assert!(written.contains("\n[Instance]\ninstance_id = 0\n\n"));
        assert!(written.ends_with("setup = true\n\n"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn sources_with_warnings_are_still_used() {
        let root = scratch("lenient");
        let paths = Paths::under(&root);
        write(
            &paths.config,
            "[Accounts]\ngroups = a\ngroups = b\nnonsense\n[Daemons]\n",
        );
        let metadata = "junk before any section\n[Logging]\nconsole = false\n";
        let config = regenerate_at(&paths, Some(metadata)).unwrap();
        assert_eq!(config.get_str("Accounts", "groups"), "b");
        assert!(!config.get_bool("Logging", "console"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_unreadable_layer_stops_regeneration_without_writing() {
        let root = scratch("unreadable");
        let paths = setup_layers(&root);
        std::fs::remove_file(&paths.distro).unwrap();
        std::fs::create_dir(&paths.distro).unwrap();
        let before = std::fs::read(&paths.config).unwrap();
        assert!(regenerate_at(&paths, None).is_err());
        assert_eq!(std::fs::read(&paths.config).unwrap(), before);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn regeneration_waits_for_the_lock() {
        let root = scratch("lock");
        let paths = Paths::under(&root);
        let held = fsutil::try_lock(&paths.lock).unwrap().unwrap();
        let refused = regenerate_waiting(&paths, None, Duration::from_millis(50));
        assert!(
            matches!(refused, Err(crate::Error::Locked { .. })),
            "{:?}",
            refused
        );
        assert!(!paths.config.exists());
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        regenerate_at(&paths, None).unwrap();
        releaser.join().unwrap();
        assert!(paths.config.exists());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn save_writes_a_changed_value() {
        let root = scratch("save");
        let paths = Paths::under(&root);
        let mut config = regenerate_at(&paths, None).unwrap();
        config.set("Instance", "instance_id", "987");
        config.set("Custom", "note", "100%");
        config.save(&paths).unwrap();
        let reread = Config::load_from(&paths.config);
        assert_eq!(reread.get_str("Instance", "instance_id"), "987");
        assert_eq!(reread.get_str("Custom", "note"), "100%");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn metadata_text_prefers_the_instance_attribute() {
        let doc: JsonValue =
            r#"{"instance": {"attributes": {"google-instance-configs": "[A]\na = i\n"}},
            "project": {"attributes": {"google-instance-configs": "[A]\na = p\n"}}}"#
                .parse()
                .unwrap();
        assert_eq!(metadata_config_text(&doc), Some("[A]\na = i\n"));
        let doc: JsonValue = r#"{"instance": {"attributes": {"google-instance-configs": ""}},
            "project": {"attributes": {"google-instance-configs": "[A]\na = p\n"}}}"#
            .parse()
            .unwrap();
        assert_eq!(metadata_config_text(&doc), Some("[A]\na = p\n"));
        let doc: JsonValue = r#"{"instance": {"attributes": {}}}"#.parse().unwrap();
        assert_eq!(metadata_config_text(&doc), None);
    }
}
