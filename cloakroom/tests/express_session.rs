//! express-session's `test/session.js`, the root `describe('session()')` and its
//! store-lifecycle describes, ported to cloakroom through an axum `Router`.
//!
//! Harness as upstream (`createSession`): secret `keyboard cat`, `cookie: { maxAge: 60000 }`.
//! Upstream relies on express 1's defaults `resave: true, saveUninitialized: true`; ours are
//! false, so [`upstream_builder`] sets them explicitly.
//!
//! Our session is lazy: a handler that never calls a `Session` method does nothing. Upstream
//! handlers that only `res.end()` rely on eager sessions, so their ports call `session.id()`.
//!
//! Not applicable (upstream title, reason):
//! - session() > "should export constructors": JavaScript constructors; Rust types are checked
//!   by the compiler.
//! - session() > "should get secret from req.secret": cookie-parser's `req.secret` has no
//!   counterpart; a missing secret is a `ConfigError` at build time (tested below).
//! - session() > "should handle multiple res.end calls": Node `res.end` patching; an axum
//!   handler returns its response once.
//! - session() > "should handle res.end(null) calls": Node-only API.
//! - session() > "should not save with bogus req.sessionID": the id is typed (`Id`, made from a
//!   `String` by `genid`); it cannot be a non-string.
//! - res.end patch > "should correctly handle res.end/res.write patched prior",
//!   "…patched after", "should error when res.end is called twice": Node `res.end`/`res.write`
//!   wrapping; our commit runs on the response value before it leaves, nothing is patched.
//! - synchronous store > "should respond correctly on save", "should respond correctly on
//!   destroy": Node callback timing; stores are `async` here (a store that returns without
//!   awaiting is the same code path). The flows themselves (save; `unset: destroy`) are covered
//!   in express_options.rs and express_methods.rs.
//! - cookieParser() > "should read from req.cookies", "should reject unsigned from req.cookies",
//!   "should reject invalid signature from req.cookies", "should read from req.signedCookies":
//!   cookie-parser's `req.cookies`/`req.signedCookies` do not exist; we read the `Cookie` header
//!   only (unsigned and tampered cookies: see "when sid not properly signed" below).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use cloakroom::store::{ErrorKind, SessionStore};
use cloakroom::{ConfigError, CookieOptions, Error, MemoryStore, Session, SessionLayer};
use common::*;
use http::StatusCode;
use http::header::CONTENT_LENGTH;

/// express's `req.session.num = req.session.num || ++count; res.end('session ' + num)`.
fn numbering_app(layer: SessionLayer) -> axum::Router {
    let count = Arc::new(AtomicU64::new(0));
    app_with(layer, move |session: Session| {
        let count = Arc::clone(&count);
        async move {
            let num = match session.get::<u64>("num").await? {
                Some(num) => num,
                None => count.fetch_add(1, Ordering::SeqCst) + 1,
            };
            session.insert("num", num).await?;
            Ok::<_, Error>(format!("session {num}"))
        }
    })
}

/// express's `isnew = req.session.active === undefined; req.session.active = true`.
fn created_or_read_app(layer: SessionLayer) -> axum::Router {
    app_with(layer, |session: Session| async move {
        let is_new = session.get::<bool>("active").await?.is_none();
        session.insert("active", true).await?;
        Ok::<_, Error>(if is_new {
            "session created"
        } else {
            "session read"
        })
    })
}

/// Asserts the default cookie shape (`Path=/; Expires=…; HttpOnly`) for `name` and that it carries
/// exactly the stored expiry; returns the cookie.
async fn assert_default_session_cookie(
    reply: &Reply,
    name: &str,
    store: &CountingStore,
) -> SetCookie {
    let cookie = reply
        .session_cookie(name)
        .unwrap_or_else(|| panic!("expected a {name} Set-Cookie, got {:?}", reply.headers));
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "HttpOnly"]);
    assert_eq!(cookie.attribute("Path"), Some(Some("/")));
    let id = cookie.session_id();
    assert_eq!(id.len(), 32, "a default id is 32 base64url characters");
    let record = store.record(&id).await.expect("the session is stored");
    assert_expires_matches_record(&cookie, &record);
    cookie
}

// upstream: session() > "should do nothing if req.session exists"
// Ours: `req.session` can only already exist because an outer SessionLayer ran (lib.rs
// differences table); the inner layer then passes the request through untouched.
#[tokio::test]
async fn should_do_nothing_if_req_session_exists() {
    let outer_store = CountingStore::new();
    let inner_store = CountingStore::new();
    let inner = upstream_builder(inner_store.clone())
        .with_name("inner.sid")
        .build()
        .unwrap();
    let outer = upstream_builder(outer_store.clone()).build().unwrap();
    let app = app_with(inner, |session: Session| async move {
        session.id().await?;
        Ok::<_, Error>("")
    })
    .layer(outer);

    let reply = get(&app, "/", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 1, "only the outer layer sets a cookie");
    assert_eq!(cookies[0].name, "connect.sid");
    assert_eq!(inner_store.counts.all(), (0, 0, 0, 0));
    assert_eq!(outer_store.counts.set(), 1);
}

// upstream: session() > "should error without secret"
// Ours: a missing secret is a ConfigError when the layer is built, not a 500 per request (lib.rs
// differences table); the message is express's.
#[tokio::test]
async fn should_error_without_secret() {
    let error = SessionLayer::builder(MemoryStore::new())
        .with_cookie(CookieOptions::new().with_max_age(Duration::from_millis(60_000)))
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::MissingSecret);
    assert_eq!(error.to_string(), "secret option required for sessions");
}

// upstream: session() > "should create a new session"
#[tokio::test]
async fn should_create_a_new_session() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            session.insert("active", true).await?;
            Ok::<_, Error>("session active")
        },
    );
    let reply = get(&app, "/", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "session active");
    let cookie = assert_default_session_cookie(&reply, "connect.sid", &store).await;
    assert_eq!(store.len().await, 1);
    let json = store.record(&cookie.session_id()).await.unwrap().to_json();
    assert!(json.starts_with(r#"{"cookie":{"originalMaxAge":60000,"expires":""#));
    assert!(json.ends_with(r#""httpOnly":true,"path":"/"},"active":true}"#));
}

// upstream: session() > "should load session from cookie sid"
#[tokio::test]
async fn should_load_session_from_cookie_sid() {
    let store = CountingStore::new();
    let app = numbering_app(upstream_builder(store.clone()).build().unwrap());
    let first = get(&app, "/", None).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "session 1")
    );
    let cookie = assert_default_session_cookie(&first, "connect.sid", &store).await;
    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "session 1")
    );
    assert_eq!(store.counts.get(), 1, "loaded from the store");
    // Unmodified and not rolling: no Set-Cookie, but `resave: true` saves it again (docs/behaviour.md).
    assert!(second.set_cookies().is_empty());
    assert_eq!(store.counts.set(), 1);
    assert_eq!(store.len().await, 1);
    assert!(store.record(&cookie.session_id()).await.is_some());
}

// upstream: session() > "should pass session fetch error"
// Ours: express forwards the store error to next() (500, body "boom!"); we answer with the
// opaque failure response (500 for a backend error, 503 when transient) and put the error in
// the response extensions.
#[tokio::test]
async fn should_pass_session_fetch_error() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        // upstream: `res.end('hello, world')`; ours must use the session (lazy).
        |session: Session| async move {
            session.id().await?;
            Ok::<_, Error>("hello, world")
        },
    );
    let first = get(&app, "/", None).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "hello, world")
    );
    let pair = first.cookie_pair("connect.sid");

    store.fail.get.store(true, Ordering::SeqCst);
    let failed = get(&app, "/", Some(&pair)).await;
    let error = assert_failure_response(&failed, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(matches!(&error, Error::Load(e) if e.kind() == ErrorKind::Backend));
    assert!(
        !failed.body.contains("boom"),
        "the cause never reaches the client"
    );

    store.fail.transient.store(true, Ordering::SeqCst);
    let unavailable = get(&app, "/", Some(&pair)).await;
    let error = assert_failure_response(&unavailable, StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(&error, Error::Load(e) if e.kind() == ErrorKind::Unavailable));
}

// upstream: session() > "should treat ENOENT session fetch error as not found"
// Ours: the store contract has no ENOENT; "not found" is `Ok(None)`.
#[tokio::test]
async fn should_treat_enoent_session_fetch_error_as_not_found() {
    let store = CountingStore::new();
    let app = numbering_app(upstream_builder(store.clone()).build().unwrap());
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "session 1");
    let first_id = first.session_cookie("connect.sid").unwrap().session_id();

    store.fail.miss.store(true, Ordering::SeqCst);
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "session 2")
    );
    let cookie = second.session_cookie("connect.sid").expect("a new cookie");
    assert_ne!(
        cookie.session_id(),
        first_id,
        "never reuses the client's id"
    );
}

// upstream: session() > "should create multiple sessions"
#[tokio::test]
async fn should_create_multiple_sessions() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            let is_new = session.get::<u64>("num").await?.is_none();
            session.insert("num", 1).await?;
            Ok::<_, Error>(if is_new {
                "session created"
            } else {
                "session updated"
            })
        },
    );
    let (a, b) = tokio::join!(get(&app, "/", None), get(&app, "/", None));
    assert_eq!(
        (a.status, a.body.as_str()),
        (StatusCode::OK, "session created")
    );
    assert_eq!(
        (b.status, b.body.as_str()),
        (StatusCode::OK, "session created")
    );
    let ids = [a, b].map(|r| r.session_cookie("connect.sid").unwrap().session_id());
    assert_ne!(ids[0], ids[1]);
    assert_eq!(store.inner.all().await.unwrap().len(), 2);
}

// upstream: session() > "should handle empty req.url"
// Ours: an absolute-form request target with an empty path (`http://example.com`); its path is
// `/`, so the default cookie path admits it.
#[tokio::test]
async fn should_handle_empty_req_url() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            session.id().await?;
            Ok::<_, Error>("")
        },
    );
    let request = http::Request::get("http://example.com")
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_default_session_cookie(&reply, "connect.sid", &store).await;
}

// upstream: session() > "should handle reserved properties in storage"
// Ours: a stored key express reserves (`save`) is kept as data instead of being dropped (lib.rs
// differences table); loading still works.
#[tokio::test]
async fn should_handle_reserved_properties_in_storage() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            let num = session.get::<u64>("num").await?.unwrap_or(1);
            session.insert("num", num).await?;
            let save: Option<String> = session.get("save").await?;
            Ok::<_, Error>(format!(
                "session saved ({})",
                save.as_deref().unwrap_or("-")
            ))
        },
    );
    let first = get(&app, "/", None).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "session saved (-)")
    );
    let id = first.session_cookie("connect.sid").unwrap().session_id();
    let loaded = store
        .inner
        .get(&cloakroom::Id::from_string(id.as_str()))
        .await
        .unwrap()
        .unwrap();
    let mut record = loaded.record;
    record
        .data_mut()
        .insert("save".into(), serde_json::json!("nope"));
    store
        .inner
        .set(
            &cloakroom::Id::from_string(id.as_str()),
            &record,
            cloakroom::store::Condition::version(&loaded.version),
        )
        .await
        .unwrap();

    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "session saved (nope)")
    );
    let stored = store.record(&id).await.unwrap();
    assert_eq!(stored.data()["save"], serde_json::json!("nope"));
    assert_eq!(stored.data()["num"], serde_json::json!(1));
}

// upstream: session() > "should only have session data enumerable (and cookie)"
// Ours: no `Object.keys`; the equivalent is the stored JSON's top-level keys.
#[tokio::test]
async fn should_only_have_session_data_enumerable_and_cookie() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            session.insert("test1", 1).await?;
            session.insert("test2", "b").await?;
            Ok::<_, Error>("")
        },
    );
    let reply = get(&app, "/", None).await;
    let id = reply.session_cookie("connect.sid").unwrap().session_id();
    let json = store.record(&id).await.unwrap().to_json();
    let stored: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json).unwrap();
    let mut keys: Vec<&str> = stored.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys.join(","), "cookie,test1,test2");
}

// upstream: session() > "should update cookie expiration when slow write"
// Ours: the slow `res.write` + delayed `res.end` becomes a slow handler (the commit runs after
// it). Upstream waits for the next wall-clock second to compare `Expires` strings; we wait a few
// milliseconds and compare the stored expiry (ms precision), which the `Expires` attribute is
// written from.
#[tokio::test]
async fn should_update_cookie_expiration_when_slow_write() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_rolling(true)
            .build()
            .unwrap(),
        |session: Session| async move {
            session.insert("user", "bob").await?;
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok::<_, Error>("hello, world!")
        },
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.status, StatusCode::OK);
    let cookie = first.session_cookie("connect.sid").expect("cookie");
    let id = cookie.session_id();
    let original = assert_expires_matches_record(&cookie, &store.record(&id).await.unwrap());

    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(second.status, StatusCode::OK);
    let cookie = second
        .session_cookie("connect.sid")
        .expect("rolling cookie");
    assert_eq!(cookie.session_id(), id);
    let renewed = assert_expires_matches_record(&cookie, &store.record(&id).await.unwrap());
    assert!(
        renewed.millis_since(original) >= 40,
        "expiry moved by the slow handler and the wait"
    );
}

/// express's `shouldSetSessionInStore(store, 200)`: each `set` is delayed, and the stored
/// session must be there when the response is complete, after exactly one `set`.
async fn assert_saved_before_response_ended(store: &CountingStore, reply: &Reply) {
    assert_eq!(store.counts.set(), 1, "exactly one set");
    let id = reply.session_cookie("connect.sid").unwrap().session_id();
    let record = store
        .record(&id)
        .await
        .expect("saved before the response ended");
    assert_eq!(record.data()["hit"], serde_json::json!(true));
}

fn slow_store() -> CountingStore {
    let store = CountingStore::new();
    store.delay.set_ms.store(50, Ordering::SeqCst);
    store
}

// upstream: when response ended > "should have saved session"
#[tokio::test]
async fn when_response_ended_should_have_saved_session() {
    let store = slow_store();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            session.insert("hit", true).await?;
            Ok::<_, Error>("session saved")
        },
    );
    let reply = get(&app, "/", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "session saved")
    );
    assert_saved_before_response_ended(&store, &reply).await;
}

// upstream: when response ended > "should have saved session even with empty response"
#[tokio::test]
async fn when_response_ended_should_have_saved_session_even_with_empty_response() {
    let store = slow_store();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            session.insert("hit", true).await?;
            Ok::<_, Error>(([(CONTENT_LENGTH, "0")], ""))
        },
    );
    let reply = get(&app, "/", None).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, ""));
    assert_eq!(reply.headers[CONTENT_LENGTH], "0");
    assert_saved_before_response_ended(&store, &reply).await;
}

// upstream: when response ended > "should have saved session even with multi-write"
#[tokio::test]
async fn when_response_ended_should_have_saved_session_even_with_multi_write() {
    let store = slow_store();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            session.insert("hit", true).await?;
            let mut response = Response::new(Body::new(Chunks::new(&["hello, ", "world"])));
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, http::HeaderValue::from_static("12"));
            Ok::<_, Error>(response)
        },
    );
    let reply = get(&app, "/", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "hello, world")
    );
    assert_eq!(reply.headers[CONTENT_LENGTH], "12");
    assert_saved_before_response_ended(&store, &reply).await;
}

// upstream: when response ended > "should have saved session even with non-chunked response"
#[tokio::test]
async fn when_response_ended_should_have_saved_session_even_with_non_chunked_response() {
    let store = slow_store();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            session.insert("hit", true).await?;
            Ok::<_, Error>(([(CONTENT_LENGTH, "13")], "session saved").into_response())
        },
    );
    let reply = get(&app, "/", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "session saved")
    );
    assert_eq!(reply.headers[CONTENT_LENGTH], "13");
    assert_saved_before_response_ended(&store, &reply).await;
}

// upstream: when response ended > "should have saved session with updated cookie expiration"
// Upstream waits for the next wall-clock second; we compare the stored expiry in milliseconds.
#[tokio::test]
async fn when_response_ended_should_have_saved_session_with_updated_cookie_expiration() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            session.insert("user", "bob").await?;
            Ok::<_, Error>(session.id().await?.unwrap().as_str().to_owned())
        },
    );
    let first = get(&app, "/", None).await;
    let id = first.body.clone();
    let cookie = first.session_cookie("connect.sid").expect("cookie");
    assert_eq!(cookie.session_id(), id);
    let record = store.record(&id).await.expect("session saved to store");
    let original = assert_expires_matches_record(&cookie, &record);

    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, id.as_str())
    );
    let record = store.record(&id).await.expect("session still in store");
    let updated = record.cookie().expires().unwrap();
    assert!(
        updated.millis_since(original) >= 20,
        "session cookie expiration updated"
    );
}

// upstream: when sid not in store > "should create a new session"
#[tokio::test]
async fn when_sid_not_in_store_should_create_a_new_session() {
    let store = CountingStore::new();
    let app = numbering_app(upstream_builder(store.clone()).build().unwrap());
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "session 1");
    store.inner.clear().await.unwrap();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "session 2")
    );
    assert_eq!(store.len().await, 1);
}

// upstream: when sid not in store > "should have a new sid"
#[tokio::test]
async fn when_sid_not_in_store_should_have_a_new_sid() {
    let store = CountingStore::new();
    let app = numbering_app(upstream_builder(store.clone()).build().unwrap());
    let first = get(&app, "/", None).await;
    let first_id = first.session_cookie("connect.sid").unwrap().session_id();
    store.inner.clear().await.unwrap();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(second.body, "session 2");
    let cookie = assert_default_session_cookie(&second, "connect.sid", &store).await;
    assert_ne!(cookie.session_id(), first_id);
}

// upstream: when sid not properly signed > "should generate new session"
// (upstream's `key` option is our `with_name`)
#[tokio::test]
async fn when_sid_not_properly_signed_should_generate_new_session() {
    let store = CountingStore::new();
    let app = created_or_read_app(
        upstream_builder(store.clone())
            .with_name("sessid")
            .build()
            .unwrap(),
    );
    let first = get(&app, "/", None).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "session created")
    );
    let id = assert_default_session_cookie(&first, "sessid", &store)
        .await
        .session_id();
    store.counts.reset();
    // The bare id, without the `s:` prefix and signature.
    let second = get(&app, "/", Some(&format!("sessid={id}"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "session created")
    );
    let cookie = assert_default_session_cookie(&second, "sessid", &store).await;
    assert_ne!(cookie.session_id(), id);
    assert_eq!(
        store.counts.get(),
        0,
        "an unsigned cookie is never looked up"
    );
}

// upstream: when sid not properly signed > "should not attempt fetch from store"
#[tokio::test]
async fn when_sid_not_properly_signed_should_not_attempt_fetch_from_store() {
    let store = CountingStore::new();
    let app = created_or_read_app(
        upstream_builder(store.clone())
            .with_name("sessid")
            .build()
            .unwrap(),
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "session created");
    // upstream: `cookie(res).replace(/...\./, '.')`: drop the three characters before the first
    // dot, i.e. the end of the id, keeping the signature.
    let pair = first.cookie_pair("sessid");
    let dot = pair.find('.').unwrap();
    let tampered = format!("{}{}", &pair[..dot - 3], &pair[dot..]);
    store.counts.reset();
    let second = get(&app, "/", Some(&tampered)).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "session created")
    );
    assert_default_session_cookie(&second, "sessid", &store).await;
    assert_eq!(
        store.counts.get(),
        0,
        "a tampered cookie is never looked up"
    );
}

// upstream: when session expired in store > "should create a new session"
#[tokio::test]
async fn when_session_expired_in_store_should_create_a_new_session() {
    let store = CountingStore::new();
    let app = numbering_app(
        upstream_builder(store.clone())
            .with_cookie(CookieOptions::new().with_max_age(Duration::from_millis(5)))
            .build()
            .unwrap(),
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "session 1");
    assert!(first.session_cookie("connect.sid").is_some());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "session 2")
    );
    assert!(second.session_cookie("connect.sid").is_some());
}

// upstream: when session expired in store > "should have a new sid"
#[tokio::test]
async fn when_session_expired_in_store_should_have_a_new_sid() {
    let store = CountingStore::new();
    let app = numbering_app(
        upstream_builder(store.clone())
            .with_cookie(CookieOptions::new().with_max_age(Duration::from_millis(5)))
            .build()
            .unwrap(),
    );
    let first = get(&app, "/", None).await;
    let first_id = first.session_cookie("connect.sid").unwrap().session_id();
    tokio::time::sleep(Duration::from_millis(15)).await;
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(second.body, "session 2");
    let cookie = second.session_cookie("connect.sid").expect("a new cookie");
    assert_ne!(cookie.session_id(), first_id);
}

// upstream: when session expired in store > "should not exist in store"
#[tokio::test]
async fn when_session_expired_in_store_should_not_exist_in_store() {
    let store = CountingStore::new();
    let app = numbering_app(
        upstream_builder(store.clone())
            .with_cookie(CookieOptions::new().with_max_age(Duration::from_millis(5)))
            .build()
            .unwrap(),
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "session 1");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(store.inner.all().await.unwrap().len(), 0);
    assert_eq!(store.len().await, 0);
}

// upstream: when session without cookie property in store > "should pass error from inflate"
// Ours: the store cannot decode a record without `cookie` (a Decode error), and the middleware
// answers with the opaque 500 instead of express's `Cannot read prop…` message.
#[tokio::test]
async fn when_session_without_cookie_property_in_store_should_pass_error_from_inflate() {
    let store = RawStore::new();
    let app = numbering_app(upstream_builder(store.clone()).build().unwrap());
    let first = get(&app, "/", None).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "session 1")
    );
    let id = first.session_cookie("connect.sid").unwrap().session_id();
    store.put_raw(&id, r#"{"foo":"bar"}"#);
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    let error = assert_failure_response(&second, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(matches!(&error, Error::Load(e) if e.kind() == ErrorKind::Decode));
    assert_eq!(
        store.raw(&id).as_deref(),
        Some(r#"{"foo":"bar"}"#),
        "left alone"
    );
}

// express-session behaviour (docs/behaviour.md): "duplicate cookie names (first wins, no fallback)"
#[tokio::test]
async fn duplicate_cookie_names_first_wins_without_fallback() {
    let store = CountingStore::new();
    let app = created_or_read_app(upstream_builder(store.clone()).build().unwrap());
    let first = get(&app, "/", None).await;
    let valid = first.cookie_pair("connect.sid");
    let id = first.session_cookie("connect.sid").unwrap().session_id();
    // The same id with a wrong signature (the cookie name has a dot too: split at the last).
    let dot = valid.rfind('.').unwrap();
    let invalid = format!("{}.AAAA{}", &valid[..dot], &valid[dot + 5..]);
    assert_ne!(invalid, valid);

    // Invalid first, valid second: the valid one is never consulted.
    store.counts.reset();
    let reply = get(&app, "/", Some(&format!("{invalid}; {valid}"))).await;
    assert_eq!(reply.body, "session created");
    assert_ne!(
        reply.session_cookie("connect.sid").unwrap().session_id(),
        id
    );
    assert_eq!(store.counts.get(), 0);

    // Valid first, anything second: the session loads.
    let reply = get(&app, "/", Some(&format!("{valid}; {invalid}"))).await;
    assert_eq!(reply.body, "session read");
    // The same across two Cookie headers (joined as Node does).
    let request = http::Request::get("/")
        .header(http::header::COOKIE, invalid.as_str())
        .header(http::header::COOKIE, valid.as_str())
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, request).await.body, "session created");
}

// express-session behaviour (docs/behaviour.md): "cookie-only change ⇒ touch, no Set-Cookie"
// Ours: a cookie-only change IS a modification: saved and sent (lib.rs differences table).
#[tokio::test]
async fn cookie_only_change_is_a_modification_for_us() {
    let store = CountingStore::new();
    let app = app_with(
        harness_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            if session.get::<bool>("user").await?.is_none() {
                session.insert("user", true).await?;
            } else {
                session
                    .update_cookie(|c| c.set_max_age(Some(Duration::from_millis(5000))))
                    .await?;
            }
            Ok::<_, Error>("")
        },
    );
    let first = get(&app, "/", None).await;
    let id = first.session_cookie("connect.sid").unwrap().session_id();
    store.counts.reset();
    let before = cloakroom::Timestamp::now();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    let after = cloakroom::Timestamp::now();
    assert_eq!(
        store.counts.all(),
        (1, 1, 0, 0),
        "(get, set, touch, destroy)"
    );
    let cookie = second.session_cookie("connect.sid").expect("sent");
    let record = store.record(&id).await.unwrap();
    let expires = assert_expires_matches_record(&cookie, &record);
    assert!(expires >= before.add_millis(5000) && expires <= after.add_millis(5000));
    assert_eq!(
        record.cookie().original_max_age(),
        Some(Duration::from_millis(5000))
    );
}

// express-session behaviour (docs/behaviour.md): "`expires=false` re-sent on modification"
// express's README makes a browser-session cookie with `cookie.expires = false`; `false != null`,
// so a modified session re-sends it. We cannot represent `false`: a stored `"expires":false` is
// read as no expiry (`null`).
#[tokio::test]
async fn expires_false_resent_on_modification() {
    let store = RawStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_genid(|_| "apple".to_owned())
            .build()
            .unwrap(),
        |session: Session| async move {
            let hits = session.get::<u64>("hit").await?.unwrap_or(0) + 1;
            session.insert("hit", hits).await?;
            Ok::<_, Error>(hits.to_string())
        },
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "1");
    // As express stores a session whose handler set `cookie.expires = false`.
    store.put_raw(
        "apple",
        r#"{"cookie":{"originalMaxAge":false,"expires":false,"httpOnly":true,"path":"/"},"hit":1}"#,
    );
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(second.body, "2");
    // DIFFERS: express sends `Set-Cookie: connect.sid=…; Path=/; HttpOnly` here (modified and
    // `expires !== null`); we read `false` as `null`, so a loaded browser-session cookie is not
    // re-sent, and the record is rewritten with `null`.
    assert!(second.set_cookies().is_empty());
    assert_eq!(
        store.raw("apple").as_deref(),
        Some(
            r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"hit":2}"#
        )
    );
}
