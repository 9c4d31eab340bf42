//! Records of extreme shapes, built from the input by `builders::record_text`: a value nested up
//! to thousands of levels deep (arrays, objects, or both; balanced or cut short), arrays and
//! objects of up to 65,535 elements, long strings and numbers, as a data value, inside the
//! cookie, as the cookie, or as the whole text. `decode_record` never panics and never
//! overflows the stack, whatever the depth; a data value no deeper than `MAX_VALUE_DEPTH` (the
//! deepest `Session::insert` accepts) always loads; and what decodes survives a round trip
//! through `to_json` unchanged.
#![no_main]

mod builders;

use cloakroom::MAX_VALUE_DEPTH;
use cloakroom::store::decode_record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let built = builders::record_text(data);
    let decoded = decode_record(&built.text);
    if let Some(depth) = built.value_depth
        && depth <= MAX_VALUE_DEPTH
    {
        assert!(
            decoded.is_ok(),
            "a value as deep as Session::insert accepts did not load"
        );
    }
    let Ok(record) = decoded else {
        return;
    };
    let json = record.to_json();
    let again = decode_record(&json).expect("what to_json writes decodes");
    assert!(again == record, "the record changed on a round trip");
    assert!(again.to_json() == json, "the JSON changed on a round trip");
});
