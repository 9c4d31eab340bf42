//! Replays the seeds (`fuzz/corpus/`) and crash inputs (`fuzz/regressions/`) of the fuzz targets
//! that build their input, `record_shapes` and `many_cookies`, through the same builders
//! (`fuzz/fuzz_targets/builders.rs`) and the public paths, on stable, in the normal test run:
//! each record through `decode_record` and back through `to_json`, each set of `Cookie` headers
//! as a request through the real layer. The fuzzing itself is `scripts/fuzz.sh`.

mod common;

#[path = "../../fuzz/fuzz_targets/builders.rs"]
mod builders;

use std::path::Path;

use axum::body::Body;
use cloakroom::store::{Condition, decode_record};
use cloakroom::{Id, MAX_VALUE_DEPTH, MemoryStore, Record, SessionStore};
use common::{FUZZ_SECRET, fuzz_app, send};
use http::{HeaderValue, Request, StatusCode};

const COOKIE_NAME: &str = "connect.sid";
const KNOWN_ID: &str = "fuzz-known-session";

/// Every file of `corpus/<target>` and `regressions/<target>` (a missing folder is empty), as
/// (path relative to `fuzz/`, contents), sorted by path.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut found = Vec::new();
    for folder in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(folder).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                let name = path.file_name().unwrap().to_string_lossy();
                found.push((
                    format!("{folder}/{target}/{name}"),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    found.sort();
    found
}

/// `s:<id>.<mac>`, as express-session signs an id with [`SECRET`].
fn signed(id: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(FUZZ_SECRET.as_bytes()).unwrap();
    mac.update(id.as_bytes());
    let mac = base64::engine::general_purpose::STANDARD_NO_PAD.encode(mac.finalize().into_bytes());
    format!("s:{id}.{mac}")
}

fn request<'a>(headers: impl IntoIterator<Item = &'a [u8]>) -> Request<Body> {
    let mut request = Request::get("/").body(Body::empty()).unwrap();
    for bytes in headers {
        let value = HeaderValue::from_bytes(bytes).expect("the builder makes valid values");
        request.headers_mut().append(http::header::COOKIE, value);
    }
    request
}

#[test]
fn built_records_decode_and_round_trip() {
    let inputs = inputs("record_shapes");
    assert!(
        inputs.len() >= 20,
        "are the seeds in fuzz/corpus/record_shapes?"
    );
    for (name, bytes) in &inputs {
        let built = builders::record_text(bytes);
        let decoded = decode_record(&built.text);
        if let Some(depth) = built.value_depth
            && depth <= MAX_VALUE_DEPTH
        {
            assert!(decoded.is_ok(), "{name}: a value {depth} deep did not load");
        }
        if let Ok(record) = &decoded {
            let json = record.to_json();
            let again = decode_record(&json).expect("what to_json writes decodes");
            assert!(&again == record, "{name}: changed on a round trip");
            assert_eq!(again.to_json(), json, "{name}: the JSON changed");
        }
    }
}

#[tokio::test]
async fn built_cookie_headers_read_as_their_first_session_cookie() {
    let store = MemoryStore::new();
    let mut record = Record::default();
    record.data_mut().insert("user".to_owned(), "fuzz".into());
    store
        .set(&Id::from_string(KNOWN_ID), &record, Condition::absent())
        .await
        .unwrap();
    let app = fuzz_app(store);
    let signed = signed(KNOWN_ID);
    let inputs = inputs("many_cookies");
    assert!(
        inputs.len() >= 15,
        "are the seeds in fuzz/corpus/many_cookies?"
    );
    let mut genuine = 0;
    for (name, bytes) in &inputs {
        let built = builders::cookie_headers(bytes, COOKIE_NAME, &signed);
        let alone = send(&app, request(built.first_session_cookie.as_deref())).await;
        let whole = send(&app, request(built.headers.iter().map(Vec::as_slice))).await;
        assert_eq!(
            (whole.status, whole.body.as_str()),
            (StatusCode::OK, alone.body.as_str()),
            "{name}: the headers did not read as their first session cookie alone"
        );
        if built.first_is_genuine {
            assert_eq!(
                whole.body, "known",
                "{name}: the genuine cookie did not verify"
            );
            genuine += 1;
        }
        assert!(
            whole.set_cookies().is_empty(),
            "{name}: a read set a cookie"
        );
    }
    assert!(
        genuine >= 10,
        "only {genuine} seeds lead with the genuine cookie"
    );
}
