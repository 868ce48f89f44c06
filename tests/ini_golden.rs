//! Golden tests for `gce_guest::ini` against the real thing: each input is parsed by
//! Python 3's `configparser.ConfigParser()` (a small script run with `python3`) and by us,
//! and the sections, options, raw and interpolated values, `getboolean` results and the
//! `write()` output must agree. Then our written output is read back by Python, which must
//! see the values we see.
//!
//! Inputs Python refuses (duplicates, lone `%`, malformed lines) are checked against OUR
//! documented lenient behaviour instead, and Python is asserted to refuse them, so the
//! difference stays deliberate.
//!
//! Without `python3` the tests print a skip line, or fail when `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::Scratch;
use gce_guest::ini::{Ini, DEFAULT_SECTION};
use tinyjson::JsonValue;

/// Reads each file named on the command line with `ConfigParser()` and prints one JSON
/// array: per file, the read error (if any), every section (DEFAULT first) with every
/// option readable from it, and the `write()` output.
const PYTHON_DUMP: &str = r#"
import configparser, io, json, sys

def dump(path):
    parser = configparser.ConfigParser()
    error = None
    try:
        with open(path, encoding="utf-8", newline=None) as f:
            parser.read_file(f, path)
    except configparser.Error as e:
        error = type(e).__name__
        parser._join_multiline_values()  # a strict error stops reading half way
    sections = []
    for name in [parser.default_section] + parser.sections():
        if name == parser.default_section:
            own = list(parser._defaults)
            names = own
        else:
            own = list(parser._sections[name])
            names = parser.options(name)
        options = []
        for key in names:
            raw = parser.get(name, key, raw=True)
            try:
                value, get_error = parser.get(name, key), None
            except configparser.Error as e:
                value, get_error = None, type(e).__name__
            try:
                boolean = parser.getboolean(name, key)
            except (ValueError, configparser.Error):
                boolean = None
            options.append({"name": key, "own": key in own, "raw": raw, "value": value,
                            "get_error": get_error, "bool": boolean})
        sections.append({"name": name, "options": options})
    out = io.StringIO()
    parser.write(out)
    return {"error": error, "sections": sections, "written": out.getvalue()}

sys.stdout.reconfigure(encoding="utf-8")
print(json.dumps([dump(path) for path in sys.argv[1:]], ensure_ascii=False))
"#;

/// What a case expects.
enum Expect {
    /// Python reads it without complaint and we agree on everything.
    Agree,
    /// Python refuses it (`python_refuses` is the exception name, raised by `read()` or by
    /// `get()` of some option); we read it leniently: `ours` lists every option stored
    /// (section, option, interpolated value) in order, `warnings` the warned line numbers.
    Lenient {
        python_refuses: &'static str,
        ours: &'static [(&'static str, &'static str, &'static str)],
        warnings: &'static [usize],
    },
}

struct Case {
    name: &'static str,
    input: &'static str,
    expect: Expect,
    /// Whether Python reading our written output must see our values (false only where
    /// Python cannot read a value at all, e.g. a reference cycle).
    round_trip: bool,
}

const fn agree(name: &'static str, input: &'static str) -> Case {
    Case {
        name,
        input,
        expect: Expect::Agree,
        round_trip: true,
    }
}

const fn lenient(
    name: &'static str,
    input: &'static str,
    python_refuses: &'static str,
    ours: &'static [(&'static str, &'static str, &'static str)],
    warnings: &'static [usize],
) -> Case {
    Case {
        name,
        input,
        expect: Expect::Lenient {
            python_refuses,
            ours,
            warnings,
        },
        round_trip: true,
    }
}

const CASES: &[Case] = &[
    agree(
        "basic",
        "[Accounts]\ngroups = adm,dip\nuseradd_cmd = useradd -m -s /bin/bash -p * {user}\n",
    ),
    agree("colon_and_tight_delimiters", "[s]\na:b\nc=d\ne : f\ng= h\n"),
    agree(
        "first_delimiter_wins",
        "[s]\nx : y = z\nurl = http://h:80/p?q=1\ny=a:b=c\n",
    ),
    agree(
        "whole_line_comments",
        "# c\n; c\n[s]\n  # indented\n\t; tab\na = b ; not a comment\nc = d # nor this\n#e = f\n",
    ),
    agree(
        "option_names_lowercased",
        "[S]\nMixed_Case = 1\nUPPER = 2\n[s]\nlower = 3\n",
    ),
    agree(
        "header_junk",
        "[A] trailing junk\na = 1\n[B]]\nb = 2\n[ C ]\nc = 3\n[d=e]\nf = 4\n",
    ),
    agree("multi_line", "[s]\nmulti = one\n  two\n\tthree\nnext = x\n"),
    agree(
        "blank_lines_inside_values",
        "[s]\nv = a\n\n  b\n\n\n  c\n\n\nw = 1\n",
    ),
    agree("trailing_blank_lines_dropped", "[s]\nv = a\n  b\n\n\n\n"),
    agree(
        "comment_inside_continuation",
        "[s]\nv = a\n  # c\n  b\n ;d\n  c\n",
    ),
    agree(
        "empty_values_and_quotes",
        "[s]\na =\nb:\nc = \nd = \"\"\ne = ''\n",
    ),
    agree("empty_first_line", "[s]\nkey =\n  line1\n  line2\n"),
    agree(
        "default_inherited",
        "[DEFAULT]\nshared = 1\nover = d\n[a]\nover = a\n[b]\nown = b\n",
    ),
    agree("default_written_first", "[a]\nx = 1\n[DEFAULT]\ny = 2\n"),
    agree(
        "booleans",
        "[b]\nt1 = 1\nt2 = yes\nt3 = TRUE\nt4 = On\nf1 = 0\nf2 = NO\nf3 = False\nf4 = off\n\
         x1 = 2\nx2 = y\nx3 = truee\nx4 =\nx5 = true\n  false\n",
    ),
    agree(
        "escaped_percent",
        "[s]\npct = 100%%\ntwo = %%%%\nmid = a%%b\n",
    ),
    agree(
        "references",
        "[DEFAULT]\nbase = /srv\n[s]\ndir = %(base)s/data\nlog = %(dir)s/log\nup = %(BASE)s\n",
    ),
    agree(
        "default_reference_resolved_per_section",
        "[DEFAULT]\nhome = /home\nuser_home = %(home)s/u\n[s]\nhome = /h\n[t]\nx = 1\n",
    ),
    agree("reference_to_multi_line", "[s]\nm = a\n  b\nr = <%(m)s>\n"),
    agree("indented_options", "[s]\n  a = 1\n  b = 2\n"),
    agree("indented_header", "  [s]\na = 1\n"),
    agree("crlf", "[s]\r\na = 1\r\nb = 2\r\n  c\r\n"),
    agree("cr_only", "[s]\ra = 1\rb = 2\r  c\r"),
    agree("no_final_newline", "[s]\na = 1"),
    agree("tabs_around_delimiters", "[s]\n\ta\t=\tb\t\nc   :   d   \n"),
    agree(
        "unicode_names",
        "[Ünïcödé]\nKÄSE = Wert ✓\nπ = 3.14\nΣΟΦΙΑ = x\n",
    ),
    agree(
        "unicode_white_space",
        "[s]\n\u{a0}a\u{1f} =\u{3000} b\u{85}\n\u{2003}c = d\u{1c}e\n",
    ),
    agree("empty_file", ""),
    agree("comments_only", "# nothing\n\n; here\n"),
    agree("empty_sections", "[a]\n[b]\n\n[c]\nx = 1\n"),
    agree("default_only", "[DEFAULT]\na = 1\n"),
    agree("brackets_in_values", "[s]\na = [x]\nb = x = y\n"),
    agree("deeper_continuation", "[s]\n  a = 1\n    b\n  c = 2\n"),
    agree("header_inside_value", "[s]\na = 1\n  [t]\nb = 2\n"),
    agree(
        "quotes_and_backslashes",
        "[s]\ncmd = useradd -m -p * {user} \"quoted\" 'single' \\back \\n\n",
    ),
    agree(
        "indented_line_continues",
        "[s]\nmy key = v\n  spaced   key  =  v2  \n",
    ),
    agree(
        "python_written_file",
        include_str!("data/ini/instance_configs.cfg"),
    ),
    agree(
        "hand_edited_template",
        include_str!("data/ini/template.cfg"),
    ),
    // Python: DuplicateOptionError (strict). We take the last value, in the first place.
    lenient(
        "duplicate_option",
        "[s]\na = 1\nb = 2\na = 3\n",
        "DuplicateOptionError",
        &[("s", "a", "3"), ("s", "b", "2")],
        &[4],
    ),
    // Python: DuplicateOptionError; option names compare lower-cased.
    lenient(
        "duplicate_option_other_case",
        "[s]\nKey = 1\nkey = 2\n",
        "DuplicateOptionError",
        &[("s", "key", "2")],
        &[3],
    ),
    // Python: DuplicateSectionError. We merge the second into the first.
    lenient(
        "duplicate_section",
        "[s]\na = 1\n[t]\nb = 2\n[s]\nc = 3\n",
        "DuplicateSectionError",
        &[("s", "a", "1"), ("s", "c", "3"), ("t", "b", "2")],
        &[5],
    ),
    // Python: get() raises InterpolationSyntaxError. We keep a lone % literally.
    lenient(
        "lone_percent",
        "[s]\np = 100%\nq = 5% off\nr = %d\n",
        "InterpolationSyntaxError",
        &[("s", "p", "100%"), ("s", "q", "5% off"), ("s", "r", "%d")],
        &[],
    ),
    // Python: get() raises InterpolationSyntaxError on a malformed reference.
    lenient(
        "malformed_reference",
        "[s]\np = %(x\nq = %(a)d\na = 1\n",
        "InterpolationSyntaxError",
        &[("s", "p", "%(x"), ("s", "q", "%(a)d"), ("s", "a", "1")],
        &[],
    ),
    // Python: get() raises InterpolationMissingOptionError. We keep the reference.
    lenient(
        "missing_reference",
        "[s]\np = %(nope)s/x\n",
        "InterpolationMissingOptionError",
        &[("s", "p", "%(nope)s/x")],
        &[],
    ),
    // Python: a lone % in [DEFAULT] breaks every section's get().
    lenient(
        "lone_percent_in_default",
        "[DEFAULT]\nd = 50%\n[s]\na = 1\n",
        "InterpolationSyntaxError",
        &[("DEFAULT", "d", "50%"), ("s", "a", "1")],
        &[],
    ),
    // Python: ParsingError after reading the whole file. We skip the line.
    lenient(
        "malformed_line",
        "[s]\na = 1\nnot an option\nb = 2\n",
        "ParsingError",
        &[("s", "a", "1"), ("s", "b", "2")],
        &[3],
    ),
    // Python 3: ParsingError (`rem` was a comment only in Python 2).
    lenient(
        "rem_line",
        "[s]\nrem a comment\na = 1\n",
        "ParsingError",
        &[("s", "a", "1")],
        &[2],
    ),
    // Python: ParsingError for an option without a name (and it stores it under "").
    lenient(
        "nameless_option",
        "[s]\n  : v\nb = 2\n",
        "ParsingError",
        &[("s", "b", "2")],
        &[2],
    ),
    // Python: ParsingError; `[]` is not a header.
    lenient(
        "empty_brackets",
        "[s]\n[]\na = 1\n",
        "ParsingError",
        &[("s", "a", "1")],
        &[2],
    ),
    // Python: MissingSectionHeaderError stops reading. We skip to the first header.
    lenient(
        "option_before_section",
        "a = 1\nb = 2\n[s]\nc = 3\n",
        "MissingSectionHeaderError",
        &[("s", "c", "3")],
        &[1],
    ),
    // Python: MissingSectionHeaderError (the BOM is part of the first line). We drop it.
    lenient(
        "byte_order_mark",
        "\u{feff}[s]\na = 1\n",
        "MissingSectionHeaderError",
        &[("s", "a", "1")],
        &[1],
    ),
    // Python: get() raises InterpolationDepthError. We stop expanding at the same depth and
    // keep the innermost reference; Python cannot read this value back either.
    Case {
        name: "reference_cycle",
        input: "[s]\na = x%(b)s\nb = y%(a)s\n",
        expect: Expect::Lenient {
            python_refuses: "InterpolationDepthError",
            ours: &[("s", "a", "xyxyxyxyxy%(a)s"), ("s", "b", "yxyxyxyxyx%(b)s")],
            warnings: &[],
        },
        round_trip: false,
    },
];

fn python_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import configparser, json"])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("python3 with configparser is required when CI=true");
        }
        println!("SKIP ini_golden: python3 not found");
    }
    ok
}

/// Runs the Python dump over `texts` (written to files in `dir`) and returns one JSON
/// object per text.
fn python_dump(dir: &Path, texts: &[String]) -> Vec<JsonValue> {
    let paths: Vec<PathBuf> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let path = dir.join(format!("{:03}.cfg", i));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let out = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_DUMP)
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: JsonValue = String::from_utf8(out.stdout).unwrap().parse().unwrap();
    match json {
        JsonValue::Array(items) => {
            assert_eq!(items.len(), texts.len());
            items
        }
        other => panic!("unexpected python output {:?}", other),
    }
}

fn string(v: &JsonValue) -> Option<&str> {
    v.get::<String>().map(String::as_str)
}

fn array(v: &JsonValue) -> &[JsonValue] {
    v.get::<Vec<JsonValue>>().map(Vec::as_slice).unwrap_or(&[])
}

fn boolean(v: &JsonValue) -> Option<bool> {
    v.get::<bool>().copied()
}

/// Python's view of one option readable from a section.
struct PyOption<'a> {
    name: &'a str,
    own: bool,
    raw: &'a str,
    value: Option<&'a str>,
    get_error: Option<&'a str>,
    boolean: Option<bool>,
}

/// Python's view of one section (DEFAULT first).
struct PySection<'a> {
    name: &'a str,
    options: Vec<PyOption<'a>>,
}

fn py_sections(doc: &JsonValue) -> Vec<PySection<'_>> {
    array(&doc["sections"])
        .iter()
        .map(|s| PySection {
            name: string(&s["name"]).unwrap(),
            options: array(&s["options"])
                .iter()
                .map(|o| PyOption {
                    name: string(&o["name"]).unwrap(),
                    own: boolean(&o["own"]).unwrap(),
                    raw: string(&o["raw"]).unwrap(),
                    value: string(&o["value"]),
                    get_error: string(&o["get_error"]),
                    boolean: boolean(&o["bool"]),
                })
                .collect(),
        })
        .collect()
}

/// Every difference between Python's reading (`doc`) and ours (`ini`); empty when equal.
fn compare_agreeing(case: &str, doc: &JsonValue, ini: &Ini) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut differ = |what: String| diffs.push(format!("{}: {}", case, what));
    if let Some(error) = string(&doc["error"]) {
        differ(format!("python refused the input with {}", error));
    }
    let sections = py_sections(doc);
    let py_names: Vec<&str> = sections.iter().skip(1).map(|s| s.name).collect();
    let our_names: Vec<&str> = ini.sections().collect();
    if py_names != our_names {
        differ(format!(
            "sections: python {:?}, ours {:?}",
            py_names, our_names
        ));
    }
    for section in &sections {
        let py_own: Vec<(&str, &str)> = section
            .options
            .iter()
            .filter(|o| o.own)
            .map(|o| (o.name, o.raw))
            .collect();
        let our_own: Vec<(&str, &str)> = ini.entries(section.name).collect();
        if py_own != our_own {
            differ(format!(
                "[{}] options: python {:?}, ours {:?}",
                section.name, py_own, our_own
            ));
        }
        for option in &section.options {
            let at = format!("[{}] {}", section.name, option.name);
            if ini.get(section.name, option.name) != Some(option.raw) {
                differ(format!(
                    "{} raw: python {:?}, ours {:?}",
                    at,
                    option.raw,
                    ini.get(section.name, option.name)
                ));
            }
            let ours = ini.get_interpolated(section.name, option.name);
            match option.value {
                Some(value) if ours.as_deref() != Some(value) => {
                    differ(format!("{} value: python {:?}, ours {:?}", at, value, ours))
                }
                None => differ(format!(
                    "{} python get() failed: {:?}",
                    at, option.get_error
                )),
                _ => {}
            }
            let our_bool = ini.get_bool(section.name, option.name).and_then(Result::ok);
            if our_bool != option.boolean {
                differ(format!(
                    "{} getboolean: python {:?}, ours {:?}",
                    at, option.boolean, our_bool
                ));
            }
        }
    }
    let written = string(&doc["written"]).unwrap();
    if written != ini.to_string() {
        differ(format!(
            "write(): python {:?}, ours {:?}",
            written,
            ini.to_string()
        ));
    }
    diffs
}

/// Differences between OUR documented reading of a refused input and what we got, plus a
/// check that Python really refuses it.
fn compare_lenient(
    case: &Case,
    doc: &JsonValue,
    ini: &Ini,
    warned: &[usize],
    python_refuses: &str,
    ours: &[(&str, &str, &str)],
    warnings: &[usize],
) -> Vec<String> {
    let mut diffs = Vec::new();
    let read_error = string(&doc["error"]);
    let get_errors: Vec<&str> = py_sections(doc)
        .iter()
        .flat_map(|s| {
            s.options
                .iter()
                .filter_map(|o| o.get_error)
                .collect::<Vec<_>>()
        })
        .collect();
    if read_error != Some(python_refuses) && !get_errors.contains(&python_refuses) {
        diffs.push(format!(
            "{}: expected python to raise {}, it gave {:?} / {:?}",
            case.name, python_refuses, read_error, get_errors
        ));
    }
    let mut got = Vec::new();
    for section in std::iter::once(DEFAULT_SECTION).chain(ini.sections()) {
        for option in ini.options(section) {
            let value = ini
                .get_interpolated(section, option)
                .unwrap_or_default()
                .into_owned();
            got.push((section.to_string(), option.to_string(), value));
        }
    }
    let expected: Vec<(String, String, String)> = ours
        .iter()
        .map(|(s, o, v)| (s.to_string(), o.to_string(), v.to_string()))
        .collect();
    if got != expected {
        diffs.push(format!(
            "{}: ours {:?}, documented {:?}",
            case.name, got, expected
        ));
    }
    if warned != warnings {
        diffs.push(format!(
            "{}: warnings on lines {:?}, documented {:?}",
            case.name, warned, warnings
        ));
    }
    diffs
}

/// Python reading our written output must see exactly our sections and interpolated
/// values, accept it without error, and write it back unchanged.
fn compare_round_trip(case: &str, doc: &JsonValue, ini: &Ini, written: &str) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut differ = |what: String| diffs.push(format!("{} (round trip): {}", case, what));
    if let Some(error) = string(&doc["error"]) {
        differ(format!("python refused our output with {}", error));
    }
    if string(&doc["written"]) != Some(written) {
        differ(format!(
            "python rewrote our output as {:?}",
            string(&doc["written"])
        ));
    }
    let sections = py_sections(doc);
    let py_names: Vec<&str> = sections.iter().skip(1).map(|s| s.name).collect();
    if py_names != ini.sections().collect::<Vec<_>>() {
        differ(format!("sections {:?}", py_names));
    }
    for section in &sections {
        let py_names: Vec<&str> = section
            .options
            .iter()
            .filter(|o| o.own)
            .map(|o| o.name)
            .collect();
        if py_names != ini.options(section.name).collect::<Vec<_>>() {
            differ(format!("[{}] options {:?}", section.name, py_names));
        }
        for option in &section.options {
            let ours = ini.get_interpolated(section.name, option.name);
            if option.value != ours.as_deref() {
                differ(format!(
                    "[{}] {}: python {:?} ({:?}), ours {:?}",
                    section.name, option.name, option.value, option.get_error, ours
                ));
            }
        }
    }
    diffs
}

fn report(diffs: Vec<String>) {
    assert!(
        diffs.is_empty(),
        "{} difference(s):\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn there_are_enough_golden_cases() {
    let agreeing = CASES
        .iter()
        .filter(|c| matches!(c.expect, Expect::Agree))
        .count();
    assert!(agreeing >= 30, "only {} agreeing cases", agreeing);
    let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "case names are unique");
}

#[test]
fn parsing_and_writing_agree_with_python() {
    if !python_available() {
        return;
    }
    let dir = Scratch::new("ini-golden-read");
    let inputs: Vec<String> = CASES.iter().map(|c| c.input.to_string()).collect();
    let docs = python_dump(&dir, &inputs);
    let mut diffs = Vec::new();
    for (case, doc) in CASES.iter().zip(&docs) {
        let (ini, warnings) = Ini::parse(case.input, case.name);
        let warned: Vec<usize> = warnings.iter().map(|w| w.line).collect();
        match &case.expect {
            Expect::Agree => {
                if !warned.is_empty() {
                    diffs.push(format!("{}: unexpected warnings {:?}", case.name, warnings));
                }
                diffs.extend(compare_agreeing(case.name, doc, &ini));
            }
            Expect::Lenient {
                python_refuses,
                ours,
                warnings,
            } => {
                diffs.extend(compare_lenient(
                    case,
                    doc,
                    &ini,
                    &warned,
                    python_refuses,
                    ours,
                    warnings,
                ));
            }
        }
    }
    report(diffs);
}

#[test]
fn python_reads_our_output_as_we_read_the_input() {
    if !python_available() {
        return;
    }
    let dir = Scratch::new("ini-golden-round-trip");
    let cases: Vec<&Case> = CASES.iter().filter(|c| c.round_trip).collect();
    let parsed: Vec<Ini> = cases
        .iter()
        .map(|c| Ini::parse(c.input, c.name).0)
        .collect();
    let written: Vec<String> = parsed.iter().map(Ini::to_string).collect();
    let docs = python_dump(&dir, &written);
    let mut diffs = Vec::new();
    for (((case, ini), text), doc) in cases.iter().zip(&parsed).zip(&written).zip(&docs) {
        diffs.extend(compare_round_trip(case.name, doc, ini, text));
        // And we read our own output back the same way, without warnings.
        let (again, warnings) = Ini::parse(text, case.name);
        if !warnings.is_empty() {
            diffs.push(format!(
                "{}: our output gives warnings {:?}",
                case.name, warnings
            ));
        }
        if again.to_string() != *text {
            diffs.push(format!("{}: writing is not stable", case.name));
        }
    }
    report(diffs);
}
