//! Fuzz target for `gce_guest::ini`: any bytes (as lossy UTF-8) parse without panicking,
//! every getter works on the result, and the writer round-trips: what we write parses
//! back without warnings to the same sections, options and values (as read, i.e.
//! interpolated), and writing that again gives the same text.

#![no_main]

use gce_guest::ini::{Ini, DEFAULT_SECTION};
use libfuzzer_sys::fuzz_target;

/// What a reader of the document sees: per section (DEFAULT first), its own options and,
/// for every option readable there, the interpolated value and `getboolean` result.
type View = Vec<(
    String,
    Vec<String>,
    Vec<(String, Option<String>, Option<Result<bool, String>>)>,
)>;

fn view(ini: &Ini) -> View {
    let defaults: Vec<&str> = ini.options(DEFAULT_SECTION).collect();
    std::iter::once(DEFAULT_SECTION)
        .chain(ini.sections())
        .map(|section| {
            let own: Vec<String> = ini.options(section).map(str::to_string).collect();
            let readable = own
                .iter()
                .map(String::as_str)
                .chain(defaults.iter().copied());
            let values = readable
                .map(|option| {
                    assert!(
                        ini.get(section, option).is_some(),
                        "[{section}] {option} lost"
                    );
                    let value = ini
                        .get_interpolated(section, option)
                        .map(|v| v.into_owned());
                    (option.to_string(), value, ini.get_bool(section, option))
                })
                .collect();
            (section.to_string(), own, values)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (ini, _warnings) = Ini::parse(&text, "fuzz input");
    let before = view(&ini);

    let written = ini.to_string();
    let (again, warnings) = Ini::parse(&written, "fuzz output");
    assert!(
        warnings.is_empty(),
        "our own output gives warnings: {warnings:?}\n{written:?}"
    );
    assert_eq!(
        view(&again),
        before,
        "values changed through the writer\n{written:?}"
    );
    assert_eq!(again.to_string(), written, "writing is not stable");
});
