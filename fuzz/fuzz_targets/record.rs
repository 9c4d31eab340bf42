//! Arbitrary text as a stored record: `decode_record` never panics, and what it decodes survives
//! a round trip through `to_json` unchanged (so a save never alters data it did not touch).
#![no_main]

use cloakroom::store::decode_record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(record) = decode_record(text) else {
        return;
    };
    let json = record.to_json();
    let again = decode_record(&json).expect("what to_json writes decodes");
    assert!(again == record, "the record changed on a round trip");
    assert!(again.to_json() == json, "the JSON changed on a round trip");
});
