//! Fuzzes the JSON parser every metadata reply goes through: it must never panic, and what
//! it accepts must be what tinyjson's own (slower) parser reads from the same text. It may
//! refuse more than tinyjson, which takes blanks inside `\u` escapes and after a `-`.
#![no_main]

use gce_guest::json::parse_json;
use libfuzzer_sys::fuzz_target;
use tinyjson::JsonValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ours) = parse_json(text) else {
        return;
    };
    match text.parse::<JsonValue>() {
        // NaN cannot come out of JSON text, so values compare as they should.
        Ok(theirs) => assert_eq!(ours, theirs, "{:?}", text),
        Err(e) => panic!("accepted what tinyjson refuses ({}): {:?}", e, text),
    }
});
