//! Arbitrary bytes as a `Cookie` header value: finding the session cookie and verifying its
//! signature never panic, only a value `sign` produced verifies, the layer's fast path
//! (`signed_id`) agrees with the general one (`find` then `unsign`), and the cookie the layer
//! writes is read back after whatever other cookies precede it.
#![no_main]

mod shared;

use cloakroom::fuzzing::{cookie_pair, find_cookie, signed_id};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = HeaderValue::from_bytes(data) else {
        return;
    };
    let secrets = shared::secrets();
    let headers = std::slice::from_ref(&header);
    let found = find_cookie(headers, shared::COOKIE_NAME);
    let verified = found.as_deref().and_then(|value| secrets.unsign(value));
    if let (Some(value), Some(id)) = (&found, verified) {
        assert!(
            secrets.sign(id) == **value,
            "unsign accepted a value that sign did not produce"
        );
    }
    assert!(
        signed_id(headers, shared::COOKIE_NAME, &secrets).as_deref() == verified,
        "the fast path and find + unsign disagree"
    );

    // With valid UTF-8, `None` means no cookie of that name at all (a non-UTF-8 value would
    // also hide later ones), so a cookie appended after the input must be the one found.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if found.is_some() {
        return;
    }
    let signed = secrets.sign(text);
    let pair = cookie_pair(shared::COOKIE_NAME, &signed).expect("a signed id makes a cookie");
    let joined = format!("{text}; {pair}");
    let header = HeaderValue::from_str(&joined).expect("a valid header plus an encoded pair");
    let back = find_cookie(std::slice::from_ref(&header), shared::COOKIE_NAME)
        .expect("the appended cookie is found");
    assert!(back == signed, "the written cookie did not read back");
    assert!(secrets.unsign(&back) == Some(text), "the id did not verify");
});
