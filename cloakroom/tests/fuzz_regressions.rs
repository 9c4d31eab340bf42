//! Replays the fuzz targets' seeds (`fuzz/corpus/`) and every input that ever made a target fail
//! (`fuzz/regressions/`) through the public paths, on stable, in the normal test run: each
//! cookie-shaped input as the `Cookie` header of a request through the real layer, each record
//! through `decode_record` and through the layer from a store. None may panic, and each gets its
//! defined answer. The fuzzing itself is `scripts/fuzz.sh`.

mod common;

use std::path::{Path, PathBuf};

use axum::body::Body;
use cloakroom::store::decode_record;
use cloakroom::{Id, MemoryStore, Record, SessionStore};
use common::{RawStore, fuzz_app, send};
use http::{HeaderValue, Request, StatusCode};

const KNOWN_ID: &str = "fuzz-known-session";

/// Every file of `corpus/<target>` and `regressions/<target>` (missing folders are empty), as
/// (path relative to `fuzz/`, contents), sorted by path.
fn inputs(targets: &[&str]) -> Vec<(String, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut found = Vec::new();
    for target in targets {
        for folder in ["corpus", "regressions"] {
            let dir: PathBuf = fuzz.join(folder).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_file() {
                    let name = format!(
                        "{folder}/{target}/{}",
                        path.file_name().unwrap().to_string_lossy()
                    );
                    found.push((name, std::fs::read(&path).unwrap()));
                }
            }
        }
    }
    found.sort();
    found
}

fn request(cookie: HeaderValue) -> Request<Body> {
    Request::get("/")
        .header(http::header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn cookie_headers_get_their_own_session_or_a_fresh_one() {
    let store = MemoryStore::new();
    let mut record = Record::default();
    record.data_mut().insert("user".to_owned(), "fuzz".into());
    store
        .set(
            &Id::from_string(KNOWN_ID),
            &record,
            cloakroom::store::Condition::absent(),
        )
        .await
        .unwrap();
    let app = fuzz_app(store);
    let inputs = inputs(&["cookie_header", "layer", "signature"]);
    let mut sent = 0;
    for (name, bytes) in &inputs {
        // What `HeaderValue` refuses never reaches a service.
        let Ok(cookie) = HeaderValue::from_bytes(bytes) else {
            continue;
        };
        let file = name.rsplit('/').next().unwrap();
        let expected = if file.starts_with("known-") {
            "known"
        } else {
            "new"
        };
        let reply = send(&app, request(cookie)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, expected),
            "{name}"
        );
        assert!(
            reply.set_cookies().is_empty(),
            "{name}: a read set a cookie"
        );
        sent += 1;
    }
    assert!(
        sent >= 20,
        "only {sent} inputs: are the seeds in fuzz/corpus?"
    );
}

#[tokio::test]
async fn records_decode_and_round_trip_or_are_the_opaque_error() {
    // The known session's signed cookie, as the seeds carry it.
    let known_cookie = inputs(&["layer"])
        .into_iter()
        .find(|(name, _)| name == "corpus/layer/known-cookie")
        .expect("the known-cookie seed")
        .1;
    let store = RawStore::new();
    let app = fuzz_app(store.clone());
    let inputs = inputs(&["record"]);
    assert!(inputs.len() >= 5, "are the seeds in fuzz/corpus/record?");
    for (name, bytes) in &inputs {
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        let decoded = decode_record(text);
        if let Ok(record) = &decoded {
            let json = record.to_json();
            let again = decode_record(&json).expect("what to_json writes decodes");
            assert!(&again == record, "{name}: changed on a round trip");
            assert_eq!(again.to_json(), json, "{name}: the JSON changed");
        }
        store.put_raw(KNOWN_ID, text);
        let reply = send(
            &app,
            request(HeaderValue::from_bytes(&known_cookie).unwrap()),
        )
        .await;
        if decoded.is_ok() {
            assert_eq!(reply.status, StatusCode::OK, "{name}");
        } else {
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
                "{name}"
            );
            assert!(reply.set_cookies().is_empty(), "{name}");
        }
    }
}
