//! Arbitrary `Cookie` headers through the real layer: no panic, and no session is ever loaded
//! without a valid signature.

mod common;

use std::sync::{Mutex, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::routing::get as route_get;
use cloakroom::{Session, SessionLayer};
use common::*;
use http::{HeaderValue, Request};
use proptest::prelude::*;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    store: CountingStore,
    app: Router,
    /// The decoded cookie value of a real session in the store: `s:<id>.<mac>`.
    valid: String,
    /// Test threads share the fixture; one probe at a time keeps the load counts exact.
    one_at_a_time: Mutex<()>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = CountingStore::new();
        let layer = SessionLayer::builder(store.clone())
            .with_secret(SECRET)
            .build()
            .unwrap();
        let app = Router::new()
            .route(
                "/",
                route_get(|session: Session| async move {
                    let known = session.get::<bool>("known").await?.unwrap_or(false);
                    session.insert("known", true).await?;
                    Ok::<_, cloakroom::Error>(if known { "known" } else { "new" })
                }),
            )
            .layer(layer);
        let first = runtime.block_on(get(&app, "/", None));
        let valid = percent_decode(&first.session_cookie("connect.sid").unwrap().value);
        Fixture {
            runtime,
            store,
            app,
            valid,
            one_at_a_time: Mutex::new(()),
        }
    })
}

/// Sends `header` as the `Cookie` header; returns the body and how many store loads it caused.
fn probe(header: &[u8]) -> Option<(String, usize)> {
    let header = HeaderValue::from_bytes(header).ok()?;
    let f = fixture();
    let request = Request::get("/")
        .header(http::header::COOKIE, header)
        .body(Body::empty())
        .unwrap();
    let _guard = f.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
    let before = f.store.counts.get();
    let reply = f.runtime.block_on(send(&f.app, request));
    assert_eq!(
        reply.status, 200,
        "any Cookie header gives a normal response"
    );
    Some((reply.body, f.store.counts.get() - before))
}

/// Bytes a header value may hold: visible ASCII, space, tab and obs-text.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            8 => 0x20u8..0x7f,
            1 => Just(b'\t'),
            1 => 0x80u8..=0xff,
            2 => prop::sample::select(b";=%\"s:.".to_vec()),
        ],
        0..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_headers_never_load_a_session(bytes in header_bytes()) {
        if let Some((body, loads)) = probe(&bytes) {
            prop_assert_eq!(body, "new");
            prop_assert_eq!(loads, 0);
        }
    }

    #[test]
    fn random_values_under_the_session_name_never_load(value in header_bytes(), signed in any::<bool>()) {
        let mut header = b"connect.sid=".to_vec();
        if signed {
            header.extend_from_slice(b"s%3A");
        }
        header.extend_from_slice(&value);
        if let Some((body, loads)) = probe(&header) {
            prop_assert_eq!(body, "new");
            prop_assert_eq!(loads, 0);
        }
    }

    #[test]
    fn a_valid_cookie_with_one_byte_changed_never_loads(
        position in any::<prop::sample::Index>(),
        replacement in 0x21u8..0x7f,
    ) {
        let valid = fixture().valid.clone();
        let mut tampered = valid.clone().into_bytes();
        let at = position.index(tampered.len());
        tampered[at] = replacement;
        prop_assume!(tampered != valid.as_bytes());
        let mut header = b"connect.sid=".to_vec();
        header.extend_from_slice(&tampered);
        if let Some((body, loads)) = probe(&header) {
            prop_assert_eq!(body, "new");
            prop_assert_eq!(loads, 0);
        }
    }

    #[test]
    fn the_valid_cookie_among_noise_loads_its_session(
        before in prop::collection::vec("[a-z]{1,8}=[a-zA-Z0-9]{0,16}", 0..5),
        after in prop::collection::vec("[a-z]{1,8}=[a-zA-Z0-9]{0,16}", 0..5),
    ) {
        // The positive control: without it the properties above would pass on a layer that
        // never loads anything.
        let valid = fixture().valid.clone();
        let encoded = valid.replace('%', "%25").replace(':', "%3A").replace('+', "%2B").replace('/', "%2F");
        let mut pairs: Vec<String> = before.into_iter().filter(|p| !p.starts_with("connect.sid=")).collect();
        pairs.push(format!("connect.sid={encoded}"));
        pairs.extend(after);
        let (body, loads) = probe(pairs.join("; ").as_bytes()).unwrap();
        prop_assert_eq!(body, "known");
        prop_assert_eq!(loads, 1);
    }

    #[test]
    fn a_second_cookie_of_the_same_name_is_never_used(junk in "[a-zA-Z0-9%]{0,40}") {
        // First cookie of a name wins (express): a bad first value hides a valid second one.
        let valid = fixture().valid.clone();
        let encoded = valid.replace(':', "%3A").replace('+', "%2B").replace('/', "%2F");
        let header = format!("connect.sid={junk}; connect.sid={encoded}");
        let (body, loads) = probe(header.as_bytes()).unwrap();
        prop_assert_eq!(body, "new");
        prop_assert_eq!(loads, 0);
    }
}
