//! `Cookie` headers of many cookies, built from the input by `builders::cookie_headers`:
//! thousands of cookies, runs repeated up to 4,096 times, duplicates of the session cookie
//! (genuine, tampered, junk, with names padded or nearly the same), values of up to 64 KiB,
//! several headers, up to 1 MiB in all. The headers always read as their first session cookie
//! alone does (no other cookie changes which one is read, or what it says); the layer's fast
//! path (`signed_id`) agrees with `find` then `unsign`; a genuine first session cookie verifies
//! and nothing else does.
#![no_main]

mod builders;
mod shared;

use cloakroom::fuzzing::{find_cookie, signed_id};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secrets = shared::secrets();
    let signed = secrets.sign(shared::KNOWN_ID);
    let built = builders::cookie_headers(data, shared::COOKIE_NAME, &signed);
    let header =
        |bytes: &[u8]| HeaderValue::from_bytes(bytes).expect("the builder makes valid values");
    let headers: Vec<HeaderValue> = built.headers.iter().map(|bytes| header(bytes)).collect();
    let alone = built.first_session_cookie.as_deref().map(header);

    let expected = alone
        .as_ref()
        .and_then(|alone| find_cookie(std::slice::from_ref(alone), shared::COOKIE_NAME));
    let found = find_cookie(&headers, shared::COOKIE_NAME);
    assert!(
        found == expected,
        "the headers did not read as their first session cookie alone"
    );
    let verified = expected.as_deref().and_then(|value| secrets.unsign(value));
    assert!(
        verified.is_none_or(|id| id == shared::KNOWN_ID),
        "a value sign did not produce verified"
    );
    if built.first_is_genuine {
        assert!(
            verified == Some(shared::KNOWN_ID),
            "the genuine session cookie did not verify"
        );
    }
    assert!(
        signed_id(&headers, shared::COOKIE_NAME, &secrets).as_deref() == verified,
        "the fast path and find + unsign disagree"
    );
});
