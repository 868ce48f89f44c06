//! INI text with the semantics of Python 3's `configparser.ConfigParser`, which is what
//! wrote and read `/etc/default/instance_configs.cfg` before us: the reader, the
//! `%` interpolation, the boolean words and a writer that produces Python's `write()`
//! output byte for byte.
//!
//! What Python accepts is read the same way:
//! - `[Section]` headers, names case-sensitive; the name runs to the last `]`, so
//!   `[A] trailing junk` is section `A`; `[DEFAULT]` is inherited by every section.
//! - `key = value` or `key: value`, split at the first `=` or `:`; option names are
//!   lower-cased, names and values stripped of white space; `k =` is an empty string.
//! - Whole-line `#` and `;` comments, even indented; no inline comments (`a = b ; c` is
//!   the value `b ; c`).
//! - A line indented deeper than its option line continues the value, joined with `\n`;
//!   blank lines inside a value are kept, trailing ones dropped.
//! - Interpolation as `BasicInterpolation`: `%%` is `%`, `%(name)s` is the value of
//!   `name` in the same section or `[DEFAULT]`.
//!
//! Where Python raised, this reader is lenient (a daemon must not fall back to defaults
//! over one typo) and returns [`Warning`]s for the caller to log:
//! - a line that is neither header, option, comment nor continuation is skipped, and so
//!   are lines before the first section header and options without a name;
//! - a duplicate option takes the last value (in the first one's place), a duplicate
//!   section is merged into the first;
//! - a leading UTF-8 byte order mark is ignored;
//! - a lone `%`, a malformed `%(`, a reference to a missing option or one nested too
//!   deeply read literally. The writer escapes exactly those as `%%`, so Python reads
//!   back the value we read.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// The section whose options every other section inherits.
pub const DEFAULT_SECTION: &str = "DEFAULT";

/// Python's `MAX_INTERPOLATION_DEPTH`: the outermost value is depth 1.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// Interpolated values longer than this stop expanding references (they stay literal):
/// a few nested references can otherwise grow exponentially.
const MAX_INTERPOLATED_LEN: usize = 64 * 1024;

/// References one interpolation may expand before the rest stay literal.
const MAX_REFERENCE_EXPANSIONS: usize = 10_000;

/// Warnings one parse reports one by one; past these it only counts them, and the last
/// warning says how many more there were.
pub const MAX_WARNINGS: usize = 20;

/// Something the lenient reader stepped over; the caller logs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// What was parsed (a file path, "metadata google-instance-configs").
    pub what: String,
    /// 1-based line number.
    pub line: usize,
    /// What was wrong and what was done about it.
    pub msg: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}: {}", self.what, self.line, self.msg)
    }
}

impl From<Warning> for crate::Error {
    fn from(w: Warning) -> crate::Error {
        crate::Error::Parse {
            what: w.what,
            line: w.line,
            msg: w.msg,
        }
    }
}

/// The options of one section (name, raw value) in file order, with an index by name so
/// that reading a file, setting and looking up are linear in the number of options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Options {
    entries: Vec<(String, String)>,
    by_name: HashMap<String, usize>,
}

impl Options {
    fn find(&self, key: &str) -> Option<usize> {
        self.by_name.get(key).copied()
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.find(key).map(|i| self.entries[i].1.as_str())
    }

    fn has(&self, key: &str) -> bool {
        self.by_name.contains_key(key)
    }

    /// Sets the value, keeping an existing option's place; returns its index.
    fn set(&mut self, key: Cow<'_, str>, value: String) -> usize {
        match self.find(&key) {
            Some(i) => {
                self.entries[i].1 = value;
                i
            }
            None => {
                let key = key.into_owned();
                self.by_name.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
                self.entries.len() - 1
            }
        }
    }

    #[cfg(test)]
    fn remove(&mut self, key: &str) -> bool {
        let Some(at) = self.by_name.remove(key) else {
            return false;
        };
        self.entries.remove(at);
        for index in self.by_name.values_mut() {
            if *index > at {
                *index -= 1;
            }
        }
        true
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One named section and its options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Section {
    name: String,
    options: Options,
}

/// A parsed INI document: the `[DEFAULT]` options and the sections, in file order.
/// Values are stored raw, as in the file (`%%` still doubled); see [`Ini::get_interpolated`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ini {
    defaults: Options,
    sections: Vec<Section>,
    section_by_name: HashMap<String, usize>,
}

/// Where the reader is putting options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Defaults,
    Section(usize),
}

/// Python's `str.isspace()`: Rust's white space plus the four ASCII separators.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Option names as Python's `optionxform` stores them.
fn option_key(name: &str) -> Cow<'_, str> {
    if name.chars().any(|c| c.is_uppercase() || !c.is_ascii()) {
        Cow::Owned(name.to_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Splits text into lines the way Python's text files do (universal newlines):
/// `\n`, `\r\n` and a lone `\r` all end a line.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(['\n', '\r']) {
            Some(i) => {
                let line = &rest[..i];
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
                Some(line)
            }
            None => {
                let line = rest;
                rest = "";
                Some(line)
            }
        }
    })
}

/// The name of a `[section]` header line (already stripped): from after the `[` to the
/// last `]`, at least one character.
fn section_header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?;
    let end = inner.rfind(']')?;
    (end > 0).then(|| &inner[..end])
}

/// Splits an option line (already stripped) at the first `=` or `:`.
fn split_option(line: &str) -> Option<(&str, &str)> {
    let at = line.find(['=', ':'])?;
    let name = line[..at].trim_end_matches(is_py_space);
    let value = py_strip(&line[at + 1..]);
    Some((name, value))
}

/// Reads `true`/`false` the way `getboolean` does: `1/yes/true/on` and `0/no/false/off`,
/// in any case.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    const TRUE: [&str; 4] = ["1", "yes", "true", "on"];
    const FALSE: [&str; 4] = ["0", "no", "false", "off"];
    if TRUE.iter().any(|w| value.eq_ignore_ascii_case(w)) {
        Some(true)
    } else if FALSE.iter().any(|w| value.eq_ignore_ascii_case(w)) {
        Some(false)
    } else {
        None
    }
}

/// Turns a literal value into a raw one: every `%` doubled, so reading it back (here or in
/// Python) gives exactly `literal`.
pub(crate) fn escape_percent(literal: &str) -> Cow<'_, str> {
    if literal.contains('%') {
        Cow::Owned(literal.replace('%', "%%"))
    } else {
        Cow::Borrowed(literal)
    }
}

/// One interpolation token at the start of a string that starts with `%`.
enum Percent<'a> {
    /// `%%`, two bytes.
    Escaped,
    /// `%(name)s`: the name and the token's length in bytes.
    Reference(&'a str, usize),
    /// A `%` Python would have refused.
    Lone,
}

fn percent_token(rest: &str) -> Percent<'_> {
    let after = &rest[1..];
    if after.starts_with('%') {
        return Percent::Escaped;
    }
    if let Some(body) = after.strip_prefix('(') {
        if let Some(close) = body.find(')') {
            if close > 0 && body[close + 1..].starts_with('s') {
                return Percent::Reference(&body[..close], close + 4);
            }
        }
    }
    Percent::Lone
}

/// Mutable state of one interpolation.
struct Expansion {
    out: String,
    references_left: usize,
}

impl Ini {
    /// An empty document.
    pub fn new() -> Ini {
        Ini::default()
    }

    /// Parses `text`; `what` names it in warnings. Never fails: what cannot be used is
    /// skipped and reported in the returned warnings.
    pub fn parse(text: &str, what: &str) -> (Ini, Vec<Warning>) {
        let mut ini = Ini::new();
        let mut warnings = Vec::new();
        // (line of the first warning not listed, how many were not listed)
        let mut unlisted: Option<(usize, usize)> = None;
        let mut warn = |line: usize, msg: String| {
            if warnings.len() < MAX_WARNINGS {
                warnings.push(Warning {
                    what: what.to_string(),
                    line,
                    msg,
                });
            } else {
                let (first, count) = unlisted.get_or_insert((line, 0));
                *first = (*first).min(line);
                *count += 1;
            }
        };
        let text = match text.strip_prefix('\u{feff}') {
            Some(rest) => {
                warn(
                    1,
                    "ignoring the UTF-8 byte order mark at the start".to_string(),
                );
                rest
            }
            None => text,
        };
        let mut target: Option<Target> = None;
        // The option that blank and indented lines continue, as an index into the target.
        let mut open_option: Option<usize> = None;
        // Indentation of the last option, header or skipped line.
        let mut indent_level = 0usize;
        let mut warned_before_section = false;

        for (index, line) in lines(text).enumerate() {
            let number = index + 1;
            let content = py_strip(line);
            if content.starts_with('#') || content.starts_with(';') {
                continue;
            }
            if content.is_empty() {
                if let (Some(t), Some(i)) = (target, open_option) {
                    ini.options_mut(t).entries[i].1.push('\n');
                }
                continue;
            }
            let indent = line.chars().take_while(|&c| is_py_space(c)).count();
            if let (Some(t), Some(i)) = (target, open_option) {
                if indent > indent_level {
                    let value = &mut ini.options_mut(t).entries[i].1;
                    value.push('\n');
                    value.push_str(content);
                    continue;
                }
            }
            indent_level = indent;
            if let Some(name) = section_header(content) {
                target = Some(ini.open_section(name, number, &mut warn));
                open_option = None;
                continue;
            }
            let Some(t) = target else {
                if !warned_before_section {
                    warned_before_section = true;
                    warn(
                        number,
                        "lines before the first [section] header are ignored".into(),
                    );
                }
                continue;
            };
            match split_option(content) {
                None => warn(
                    number,
                    "ignoring a line that is not a [section] header, a name = value option \
                     or a comment"
                        .into(),
                ),
                Some(("", _)) => {
                    warn(number, "ignoring an option without a name".into());
                    open_option = None;
                }
                Some((name, value)) => {
                    let key = option_key(name);
                    if ini.options_mut(t).has(&key) {
                        warn(
                            number,
                            format!(
                                "option {} appears again in section [{}]; \
                                 the last value is used",
                                key,
                                ini.target_name(t)
                            ),
                        );
                    }
                    open_option = Some(ini.options_mut(t).set(key, value.to_string()));
                }
            }
        }
        // Trailing blank lines of multi-line values (Python joins, then rstrips).
        let all = ini.defaults.entries.iter_mut().chain(
            ini.sections
                .iter_mut()
                .flat_map(|s| s.options.entries.iter_mut()),
        );
        for (_, value) in all {
            let kept = value.trim_end_matches(is_py_space).len();
            value.truncate(kept);
        }
        if let Some((line, count)) = unlisted {
            warnings.push(Warning {
                what: what.to_string(),
                line,
                msg: format!("{} more warnings like these are not shown", count),
            });
        }
        (ini, warnings)
    }

    /// Starts (or, for a duplicate header, resumes) a section while parsing.
    fn open_section(
        &mut self,
        name: &str,
        line: usize,
        warn: &mut impl FnMut(usize, String),
    ) -> Target {
        if name == DEFAULT_SECTION {
            // Python merges repeated [DEFAULT] headers silently.
            return Target::Defaults;
        }
        match self.section_index(name) {
            Some(i) => {
                warn(
                    line,
                    format!("section [{}] appears again; its options are merged", name),
                );
                Target::Section(i)
            }
            None => Target::Section(self.push_section(name)),
        }
    }

    fn push_section(&mut self, name: &str) -> usize {
        let index = self.sections.len();
        self.section_by_name.insert(name.to_string(), index);
        self.sections.push(Section {
            name: name.to_string(),
            options: Options::default(),
        });
        index
    }

    fn target_name(&self, target: Target) -> &str {
        match target {
            Target::Defaults => DEFAULT_SECTION,
            Target::Section(i) => &self.sections[i].name,
        }
    }

    fn options_mut(&mut self, target: Target) -> &mut Options {
        match target {
            Target::Defaults => &mut self.defaults,
            Target::Section(i) => &mut self.sections[i].options,
        }
    }

    fn section_index(&self, name: &str) -> Option<usize> {
        self.section_by_name.get(name).copied()
    }

    /// The options stored under `section` itself (`DEFAULT` gives the defaults), or `None`
    /// for a section that does not exist.
    fn own_options(&self, section: &str) -> Option<&Options> {
        if section == DEFAULT_SECTION {
            Some(&self.defaults)
        } else {
            self.section_index(section)
                .map(|i| &self.sections[i].options)
        }
    }

    fn own_entries(&self, section: &str) -> Option<&[(String, String)]> {
        self.own_options(section).map(|o| o.entries.as_slice())
    }

    /// Looks up an already lower-cased option name in `section`, then in the defaults.
    fn lookup<'a>(&'a self, section: Option<&'a Options>, key: &str) -> Option<&'a str> {
        section
            .and_then(|s| s.get(key))
            .or_else(|| self.defaults.get(key))
    }

    /// True when nothing at all is stored.
    pub fn is_empty(&self) -> bool {
        self.defaults.is_empty() && self.sections.is_empty()
    }

    /// Section names in file order, without `DEFAULT`.
    pub fn sections(&self) -> impl Iterator<Item = &str> + '_ {
        self.sections.iter().map(|s| s.name.as_str())
    }

    /// True when the section exists (`DEFAULT` never counts, as in Python).
    pub(crate) fn has_section(&self, section: &str) -> bool {
        self.section_index(section).is_some()
    }

    /// The option names stored in `section` itself, in file order (`DEFAULT` gives the
    /// defaults; inherited ones are not listed). Empty for a missing section.
    pub fn options(&self, section: &str) -> impl Iterator<Item = &str> + '_ {
        self.own_entries(section)
            .unwrap_or(&[])
            .iter()
            .map(|(k, _)| k.as_str())
    }

    /// The (option, raw value) pairs stored in `section` itself, in file order.
    pub fn entries(&self, section: &str) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.own_entries(section)
            .unwrap_or(&[])
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when `option` can be read from `section`, directly or from `[DEFAULT]`.
    pub(crate) fn has_option(&self, section: &str, option: &str) -> bool {
        self.get(section, option).is_some()
    }

    /// The raw value (as in the file, `%%` still doubled) of `option` in `section`, else in
    /// `[DEFAULT]`. Option names are case-insensitive; a missing section gives `None`.
    pub fn get(&self, section: &str, option: &str) -> Option<&str> {
        let own = if section == DEFAULT_SECTION {
            None
        } else {
            Some(self.own_options(section)?)
        };
        self.lookup(own, &option_key(option))
    }

    /// The value with `%%` and `%(name)s` interpolated, as Python's `get()` returns it.
    /// What Python refused (a lone `%`, a missing or too deeply nested reference) stays
    /// literally in the result.
    pub fn get_interpolated(&self, section: &str, option: &str) -> Option<Cow<'_, str>> {
        let raw = self.get(section, option)?;
        if !raw.contains('%') {
            return Some(Cow::Borrowed(raw));
        }
        let own = if section == DEFAULT_SECTION {
            None
        } else {
            self.own_options(section)
        };
        let mut expansion = Expansion {
            out: String::with_capacity(raw.len()),
            references_left: MAX_REFERENCE_EXPANSIONS,
        };
        self.interpolate(raw, own, 1, &mut expansion);
        Some(Cow::Owned(expansion.out))
    }

    fn interpolate(
        &self,
        raw: &str,
        own: Option<&Options>,
        depth: usize,
        expansion: &mut Expansion,
    ) {
        let mut rest = raw;
        while let Some(at) = rest.find('%') {
            expansion.out.push_str(&rest[..at]);
            rest = &rest[at..];
            match percent_token(rest) {
                Percent::Escaped => {
                    expansion.out.push('%');
                    rest = &rest[2..];
                }
                Percent::Lone => {
                    expansion.out.push('%');
                    rest = &rest[1..];
                }
                Percent::Reference(name, len) => {
                    let token = &rest[..len];
                    rest = &rest[len..];
                    let within_budget = expansion.references_left > 0
                        && expansion.out.len() <= MAX_INTERPOLATED_LEN;
                    match self.lookup(own, &option_key(name)) {
                        Some(value) if within_budget && !value.contains('%') => {
                            expansion.references_left -= 1;
                            expansion.out.push_str(value);
                        }
                        Some(value) if within_budget && depth < MAX_INTERPOLATION_DEPTH => {
                            expansion.references_left -= 1;
                            self.interpolate(value, own, depth + 1, expansion);
                        }
                        _ => expansion.out.push_str(token),
                    }
                }
            }
        }
        expansion.out.push_str(rest);
    }

    /// `getboolean`: `None` when the option is missing, `Err(value)` when the
    /// (interpolated) value is not one of the boolean words.
    pub fn get_bool(&self, section: &str, option: &str) -> Option<Result<bool, String>> {
        let value = self.get_interpolated(section, option)?;
        Some(parse_bool(&value).ok_or_else(|| value.into_owned()))
    }

    /// Adds an empty section unless it exists (or is `DEFAULT`). True when added.
    pub(crate) fn add_section(&mut self, section: &str) -> bool {
        if section == DEFAULT_SECTION || self.has_section(section) {
            return false;
        }
        self.push_section(section);
        true
    }

    /// Stores a raw value (`%` sequences are interpreted when read; see
    /// [`escape_percent`] for a literal), adding the section when needed. `DEFAULT`
    /// addresses the defaults. An existing option keeps its place.
    pub fn set(&mut self, section: &str, option: &str, value: &str) {
        let target = if section == DEFAULT_SECTION {
            Target::Defaults
        } else {
            self.add_section(section);
            match self.section_index(section) {
                Some(i) => Target::Section(i),
                None => return,
            }
        };
        self.options_mut(target)
            .set(option_key(option), value.to_string());
    }

    /// [`Ini::set`] unless [`Ini::has_option`] (which counts `[DEFAULT]` for an existing
    /// section, as Python's `has_option` does); true when set. This is the
    /// `overwrite=False` of the Python guest environment's `SetOption`.
    pub(crate) fn set_if_missing(&mut self, section: &str, option: &str, value: &str) -> bool {
        if self.has_option(section, option) {
            return false;
        }
        self.set(section, option, value);
        true
    }

    #[cfg(test)]
    /// Removes an option stored in `section` itself; true when there was one.
    pub(crate) fn remove_option(&mut self, section: &str, option: &str) -> bool {
        let key = option_key(option);
        let options = if section == DEFAULT_SECTION {
            &mut self.defaults
        } else {
            match self.section_index(section) {
                Some(i) => &mut self.sections[i].options,
                None => return false,
            }
        };
        options.remove(&key)
    }

    /// True when a `%(name)s` in a value of `section` can be resolved: by the section or
    /// `[DEFAULT]`, and for a `[DEFAULT]` value by any section it may be read from
    /// (`section_keys`: every option name of every section).
    fn resolvable(
        &self,
        section: Option<&Section>,
        section_keys: &HashSet<&str>,
        name: &str,
    ) -> bool {
        let key = option_key(name);
        self.defaults.has(&key)
            || match section {
                Some(s) => s.options.has(&key),
                None => section_keys.contains(&*key),
            }
    }

    /// The raw value to write so that Python reads back what we read: `%` that we read
    /// literally (lone, malformed, or an unresolvable reference) is doubled.
    fn escape_for_write<'a>(
        &self,
        section: Option<&Section>,
        section_keys: &HashSet<&str>,
        raw: &'a str,
    ) -> Cow<'a, str> {
        if !raw.contains('%') {
            return Cow::Borrowed(raw);
        }
        let mut out = String::with_capacity(raw.len() + 4);
        let mut rest = raw;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            match percent_token(rest) {
                Percent::Escaped => {
                    out.push_str("%%");
                    rest = &rest[2..];
                }
                Percent::Reference(name, len) if self.resolvable(section, section_keys, name) => {
                    out.push_str(&rest[..len]);
                    rest = &rest[len..];
                }
                Percent::Reference(_, len) => {
                    // Read literally as a whole, so every `%` in it is doubled.
                    out.push_str(&rest[..len].replace('%', "%%"));
                    rest = &rest[len..];
                }
                Percent::Lone => {
                    out.push_str("%%");
                    rest = &rest[1..];
                }
            }
        }
        out.push_str(rest);
        Cow::Owned(out)
    }

    fn write_section(
        &self,
        f: &mut fmt::Formatter<'_>,
        name: &str,
        section: Option<&Section>,
        section_keys: &HashSet<&str>,
    ) -> fmt::Result {
        writeln!(f, "[{}]", name)?;
        let options = section.map_or(&self.defaults, |s| &s.options);
        for (key, raw) in &options.entries {
            let value = self.escape_for_write(section, section_keys, raw);
            writeln!(f, "{} = {}", key, value.replace('\n', "\n\t"))?;
        }
        f.write_str("\n")
    }
}

/// The writer: Python's `ConfigParser.write()` format (`[DEFAULT]` first when it has
/// options, then sections in order; `key = value`; continuation lines as `\n\t`; a blank
/// line after each section), with the `%` escaping described in the module docs.
impl fmt::Display for Ini {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only a `[DEFAULT]` value's references may be resolved by any section.
        let defaults_refer = self.defaults.entries.iter().any(|(_, v)| v.contains("%("));
        let section_keys: HashSet<&str> = if defaults_refer {
            self.sections
                .iter()
                .flat_map(|s| s.options.entries.iter().map(|(k, _)| k.as_str()))
                .collect()
        } else {
            HashSet::new()
        };
        if !self.defaults.is_empty() {
            self.write_section(f, DEFAULT_SECTION, None, &section_keys)?;
        }
        for section in &self.sections {
            self.write_section(f, &section.name, Some(section), &section_keys)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Ini, Vec<Warning>) {
        Ini::parse(text, "test.cfg")
    }

    fn parse_clean(text: &str) -> Ini {
        let (ini, warnings) = parse(text);
        assert!(warnings.is_empty(), "unexpected warnings: {:?}", warnings);
        ini
    }

    fn lines_of(text: &str) -> Vec<&str> {
        lines(text).collect()
    }

    #[test]
    fn lines_end_at_any_newline_convention() {
        assert_eq!(lines_of("a\nb\r\nc\rd"), ["a", "b", "c", "d"]);
        assert_eq!(lines_of("a\n\nb\n"), ["a", "", "b"]);
        assert_eq!(lines_of("a\r\r\nb"), ["a", "", "b"]);
        assert!(lines_of("").is_empty());
    }

    #[test]
    fn sections_and_options() {
        let ini = parse_clean("[Accounts]\ngroups = adm,video\nuseradd_cmd: useradd -m {user}\n");
        assert_eq!(ini.sections().collect::<Vec<_>>(), ["Accounts"]);
        assert_eq!(ini.get("Accounts", "groups"), Some("adm,video"));
        assert_eq!(
            ini.get("Accounts", "useradd_cmd"),
            Some("useradd -m {user}")
        );
        assert_eq!(
            ini.get("accounts", "groups"),
            None,
            "section names are case-sensitive"
        );
        assert_eq!(
            ini.get("Accounts", "GROUPS"),
            Some("adm,video"),
            "option names are not"
        );
        assert_eq!(ini.get("Nope", "groups"), None);
    }

    #[test]
    fn the_first_delimiter_splits() {
        let ini = parse_clean("[s]\nx : y = z\na=b:c\nURL = http://h:80/?q=1\n");
        assert_eq!(ini.get("s", "x"), Some("y = z"));
        assert_eq!(ini.get("s", "a"), Some("b:c"));
        assert_eq!(ini.get("s", "url"), Some("http://h:80/?q=1"));
        assert_eq!(ini.options("s").collect::<Vec<_>>(), ["x", "a", "url"]);
    }

    #[test]
    fn comments_are_whole_lines_only() {
        let ini = parse_clean(
            "# top\n[s]\n  ; indented comment\na = b ; not a comment\nc = d # nor this\n",
        );
        assert_eq!(ini.get("s", "a"), Some("b ; not a comment"));
        assert_eq!(ini.get("s", "c"), Some("d # nor this"));
        assert_eq!(ini.options("s").count(), 2);
    }

    #[test]
    fn header_names_run_to_the_last_bracket() {
        let ini = parse_clean("[A] trailing junk\na = 1\n[ B ]\nb = 2\n[x]y]\n[a=b]\n");
        assert_eq!(
            ini.sections().collect::<Vec<_>>(),
            ["A", " B ", "x]y", "a=b"]
        );
        assert_eq!(ini.get("A", "a"), Some("1"));
        assert_eq!(ini.get(" B ", "b"), Some("2"));
    }

    #[test]
    fn empty_brackets_are_not_a_header() {
        let (ini, warnings) = parse("[s]\n[]\na = 1\n");
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].line, 2);
        assert_eq!(ini.get("s", "a"), Some("1"));
    }

    #[test]
    fn continuation_lines() {
        let ini =
            parse_clean("[s]\na = one\n  two\n\n\tthree\n  # comment inside\n   four\n\n\nb = x\n");
        assert_eq!(ini.get("s", "a"), Some("one\ntwo\n\nthree\nfour"));
        assert_eq!(ini.get("s", "b"), Some("x"));
        let ini = parse_clean("[s]\na =\n  first\n");
        assert_eq!(ini.get("s", "a"), Some("\nfirst"));
        let ini = parse_clean("[s]\na = 1\n  [t]\n");
        assert_eq!(ini.get("s", "a"), Some("1\n[t]"));
        assert!(!ini.has_section("t"));
    }

    #[test]
    fn indented_options_after_a_header_are_options() {
        let ini = parse_clean("[s]\n  a = 1\n  b = 2\n    c\n");
        assert_eq!(ini.get("s", "a"), Some("1"));
        assert_eq!(ini.get("s", "b"), Some("2\nc"));
    }

    #[test]
    fn empty_values_and_quotes_are_kept_as_written() {
        let ini = parse_clean("[s]\na =\nb:\nc = \"\"\n");
        assert_eq!(ini.get("s", "a"), Some(""));
        assert_eq!(ini.get("s", "b"), Some(""));
        assert_eq!(ini.get("s", "c"), Some("\"\""));
    }

    #[test]
    fn defaults_are_inherited() {
        let ini = parse_clean("[DEFAULT]\nshared = yes\n[s]\nown = 1\n[t]\nshared = no\n");
        assert_eq!(ini.get("s", "shared"), Some("yes"));
        assert_eq!(ini.get("t", "shared"), Some("no"));
        assert_eq!(ini.get(DEFAULT_SECTION, "shared"), Some("yes"));
        assert_eq!(ini.get(DEFAULT_SECTION, "own"), None);
        assert!(!ini.has_section(DEFAULT_SECTION));
        assert_eq!(ini.sections().count(), 2);
        assert_eq!(ini.options("s").collect::<Vec<_>>(), ["own"]);
        assert_eq!(ini.options(DEFAULT_SECTION).collect::<Vec<_>>(), ["shared"]);
        assert!(ini.has_option("s", "shared"));
        assert_eq!(
            ini.get("missing", "shared"),
            None,
            "a missing section inherits nothing"
        );
    }

    #[test]
    fn booleans() {
        let ini = parse_clean("[s]\na = YES\nb = off\nc = 1\nd = 0\ne = True\nf = maybe\ng = \n");
        assert_eq!(ini.get_bool("s", "a"), Some(Ok(true)));
        assert_eq!(ini.get_bool("s", "b"), Some(Ok(false)));
        assert_eq!(ini.get_bool("s", "c"), Some(Ok(true)));
        assert_eq!(ini.get_bool("s", "d"), Some(Ok(false)));
        assert_eq!(ini.get_bool("s", "e"), Some(Ok(true)));
        assert_eq!(ini.get_bool("s", "f"), Some(Err("maybe".to_string())));
        assert_eq!(ini.get_bool("s", "g"), Some(Err(String::new())));
        assert_eq!(ini.get_bool("s", "h"), None);
        for word in ["on", "ON", "tRuE", "Yes"] {
            assert_eq!(parse_bool(word), Some(true), "{}", word);
        }
        for word in ["2", "y", "t", " true", "enabled", "ｔｒｕｅ"] {
            assert_eq!(parse_bool(word), None, "{}", word);
        }
    }

    #[test]
    fn interpolation_like_basic_interpolation() {
        let ini = parse_clean(
            "[DEFAULT]\nbase = /srv\n[s]\ndir = %(base)s/data\npct = 100%%\nnested = %(DIR)s/x\n",
        );
        assert_eq!(ini.get("s", "dir"), Some("%(base)s/data"));
        assert_eq!(
            ini.get_interpolated("s", "dir").as_deref(),
            Some("/srv/data")
        );
        assert_eq!(ini.get_interpolated("s", "pct").as_deref(), Some("100%"));
        assert_eq!(
            ini.get_interpolated("s", "nested").as_deref(),
            Some("/srv/data/x")
        );
    }

    #[test]
    fn what_python_refuses_to_interpolate_stays_literal() {
        let ini = parse_clean(
            "[s]\nlone = 100%\nend = 50% off\nmissing = %(nope)s!\nbad = %(x\nnotype = %(a)d\n\
             a = %(a)s\n",
        );
        assert_eq!(ini.get_interpolated("s", "lone").as_deref(), Some("100%"));
        assert_eq!(ini.get_interpolated("s", "end").as_deref(), Some("50% off"));
        assert_eq!(
            ini.get_interpolated("s", "missing").as_deref(),
            Some("%(nope)s!")
        );
        assert_eq!(ini.get_interpolated("s", "bad").as_deref(), Some("%(x"));
        assert_eq!(
            ini.get_interpolated("s", "notype").as_deref(),
            Some("%(a)d")
        );
        // A self-reference expands until the depth limit, then stays literal.
        assert_eq!(ini.get_interpolated("s", "a").as_deref(), Some("%(a)s"));
    }

    #[test]
    fn exponential_references_are_bounded() {
        let mut text = String::from("[s]\nv0 = x\n");
        for i in 1..10 {
            text.push_str(&format!(
                "v{} = {}\n",
                i,
                format!("%(v{})s", i - 1).repeat(20)
            ));
        }
        let ini = parse_clean(&text);
        let value = ini.get_interpolated("s", "v9").unwrap();
        assert!(value.len() < 2 * MAX_INTERPOLATED_LEN + text.len());
    }

    #[test]
    fn warnings_stop_after_twenty_with_one_line_that_counts_the_rest() {
        let mut text = String::from("[s]\n");
        for i in 0..1000 {
            text.push_str(&format!("junk line {}\n", i));
        }
        text.push_str("a = 1\n");
        let (ini, warnings) = parse(&text);
        assert_eq!(ini.get("s", "a"), Some("1"));
        assert_eq!(warnings.len(), MAX_WARNINGS + 1);
        assert_eq!(warnings[MAX_WARNINGS - 1].line, 21);
        let last = &warnings[MAX_WARNINGS];
        assert_eq!(
            (last.line, last.msg.as_str()),
            (22, "980 more warnings like these are not shown")
        );
        let (_, few) = parse("[s]\njunk\n");
        assert_eq!(few.len(), 1);
    }

    /// A hostile file (or `google-instance-configs` from metadata) of 100,000 sections, or
    /// one section of 100,000 options, is read, merged, looked up and written in linear
    /// time (the quadratic reader took minutes). The deadline is a guard far above the
    /// linear time (about 3 s in a debug build), not a measurement.
    #[test]
    fn huge_files_are_read_and_written_in_linear_time() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sections = String::new();
            let mut options = String::from("[one]\nbase = b\n");
            for i in 0..100_000 {
                sections.push_str(&format!("[s{}]\nk = {}\n", i, i));
                options.push_str(&format!("k{} = %(base)s {}\n", i, i));
            }
            sections.push_str("[s7]\nk = again\n[DEFAULT]\nd = %(k)s\n");
            let (mut a, warnings) = Ini::parse(&sections, "t");
            assert_eq!(warnings.len(), 2, "{:?}", warnings); // [s7] again, and its k
            assert_eq!(a.get("s99999", "k"), Some("99999"));
            assert_eq!(a.get("s7", "k"), Some("again"));
            let (b, _) = Ini::parse(&options, "t");
            assert_eq!(
                b.get_interpolated("one", "k99999").as_deref(),
                Some("b 99999")
            );
            for (key, value) in b.entries("one") {
                a.set("one", key, value);
            }
            assert!(a.remove_option("one", "k5"));
            assert_eq!(a.get("one", "k6"), Some("%(base)s 6"));
            let written = a.to_string();
            let (c, warnings) = Ini::parse(&written, "t");
            assert!(warnings.is_empty());
            assert_eq!(c, a);
            done.send(()).ok();
        });
        match finished.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the checks failed (see the panic above)")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("100,000 sections or options were not read and written within 60 s")
            }
        }
    }

    #[test]
    fn malformed_lines_are_skipped_with_a_warning() {
        let (ini, warnings) = parse("[s]\na = 1\nno delimiter here\nb = 2\n= nameless\nc = 3\n");
        assert_eq!(ini.options("s").collect::<Vec<_>>(), ["a", "b", "c"]);
        let lines: Vec<usize> = warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [3, 5]);
        assert!(warnings[0].to_string().starts_with("test.cfg line 3: "));
    }

    #[test]
    fn a_skipped_line_keeps_the_open_option_like_python() {
        // Python's reader keeps the current option across a bad line (and raises at the end).
        let (ini, warnings) = parse("[s]\n  a = 1\n junk\n  more\n");
        assert_eq!(warnings.len(), 1);
        assert_eq!(ini.get("s", "a"), Some("1\nmore"));
        // A nameless option closes it.
        let (ini, _) = parse("[s]\na = 1\n= x\n  b = 2\n");
        assert_eq!(ini.get("s", "a"), Some("1"));
        assert_eq!(ini.get("s", "b"), Some("2"));
    }

    #[test]
    fn lines_before_any_section_warn_once() {
        let (ini, warnings) = parse("a = 1\nb = 2\n  c\n[s]\nd = 4\n");
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].line, 1);
        assert_eq!(ini.sections().collect::<Vec<_>>(), ["s"]);
        assert_eq!(ini.options("s").collect::<Vec<_>>(), ["d"]);
    }

    #[test]
    fn duplicates_take_the_last_value_in_the_first_place() {
        let (ini, warnings) = parse("[s]\na = 1\nb = 2\nA = 3\n[t]\n[s]\nc = 4\nb = 5\n");
        assert_eq!(
            warnings.iter().map(|w| w.line).collect::<Vec<_>>(),
            [4, 6, 8]
        );
        assert_eq!(ini.sections().collect::<Vec<_>>(), ["s", "t"]);
        let entries: Vec<_> = ini.entries("s").collect();
        assert_eq!(entries, [("a", "3"), ("b", "5"), ("c", "4")]);
        // Repeated [DEFAULT] headers are merged silently, as Python does.
        let (ini, warnings) = parse("[DEFAULT]\na = 1\n[DEFAULT]\nb = 2\n");
        assert!(warnings.is_empty());
        assert_eq!(ini.options(DEFAULT_SECTION).count(), 2);
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let (ini, warnings) = parse("\u{feff}[s]\na = 1\n");
        assert_eq!(warnings.len(), 1);
        assert_eq!(ini.get("s", "a"), Some("1"));
    }

    #[test]
    fn unicode_white_space_and_names() {
        let ini = parse_clean("[s]\n\u{a0}KÄSE\u{1f} =\u{3000} wert\u{85}\n");
        assert_eq!(ini.get("s", "käse"), Some("wert"));
    }

    #[test]
    fn writer_matches_python_write() {
        let ini = parse_clean(
            "[Accounts]\ngroups=adm\nEmpty =\nmulti = a\n  b\n\n  c\n[DEFAULT]\nd: 1\n[Empty]\n",
        );
        assert_eq!(
            ini.to_string(),
            "[DEFAULT]\nd = 1\n\n[Accounts]\ngroups = adm\nempty = \nmulti = a\n\tb\n\t\n\tc\n\n\
             [Empty]\n\n"
        );
        assert_eq!(Ini::new().to_string(), "");
    }

    #[test]
    fn writer_escapes_only_what_we_read_literally() {
        let ini = parse_clean(
            "[DEFAULT]\nd = %(only_in_t)s %(nowhere)s\n[s]\na = 100% %% %(b)s %(zz)s %(x\nb = 1\n\
             c = %(a%(b)s\n\
             [t]\nonly_in_t = 2\n",
        );
        let text = ini.to_string();
        assert!(
            text.contains("d = %(only_in_t)s %%(nowhere)s\n"),
            "{}",
            text
        );
        assert!(text.contains("c = %%(a%%(b)s\n"), "{}", text);
        assert!(
            text.contains("a = 100%% %% %(b)s %%(zz)s %%(x\n"),
            "{}",
            text
        );
        let (again, warnings) = Ini::parse(&text, "again");
        assert!(warnings.is_empty());
        for (section, option) in [
            ("s", "a"),
            ("s", "c"),
            ("s", "d"),
            ("t", "d"),
            (DEFAULT_SECTION, "d"),
        ] {
            assert_eq!(
                again.get_interpolated(section, option),
                ini.get_interpolated(section, option),
                "{} {}",
                section,
                option
            );
        }
    }

    #[test]
    fn set_and_remove() {
        let mut ini = Ini::new();
        ini.set("Instance", "Instance_ID", "42");
        assert_eq!(ini.get("Instance", "instance_id"), Some("42"));
        ini.set("Instance", "instance_id", "43");
        assert_eq!(ini.options("Instance").collect::<Vec<_>>(), ["instance_id"]);
        assert!(!ini.set_if_missing("Instance", "instance_id", "44"));
        assert_eq!(ini.get("Instance", "instance_id"), Some("43"));
        ini.set(DEFAULT_SECTION, "x", "1");
        assert!(
            !ini.set_if_missing("Instance", "x", "2"),
            "[DEFAULT] counts as present"
        );
        assert!(ini.set_if_missing("Other", "y", "50%"));
        assert!(
            !ini.set_if_missing("Other", "x", "2"),
            "once the section exists"
        );
        assert_eq!(ini.get("Other", "y"), Some("50%"));
        assert!(ini.remove_option("Instance", "INSTANCE_ID"));
        assert!(!ini.remove_option("Instance", "instance_id"));
        assert!(!ini.remove_option("Nope", "x"));
        assert!(ini.remove_option(DEFAULT_SECTION, "x"));
        assert_eq!(ini.to_string(), "[Instance]\n\n[Other]\ny = 50%%\n\n");
        ini.set("Lit", "p", &escape_percent("5% of %(x)s"));
        assert_eq!(
            ini.get_interpolated("Lit", "p").as_deref(),
            Some("5% of %(x)s")
        );
    }

    #[test]
    fn warnings_become_parse_errors() {
        let w = Warning {
            what: "f".into(),
            line: 3,
            msg: "bad".into(),
        };
        let e: crate::Error = w.into();
        assert_eq!(e.to_string(), "cannot parse f line 3: bad");
    }
}
