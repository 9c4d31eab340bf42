//! The failure policy: a store failure gives a fixed, opaque response, is logged exactly once
//! through `tracing` without ids, cookie values or data, and rides along in the response
//! extensions; a hook can build the response instead.

mod common;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get as route_get;
use cloakroom::{Session, SessionLayer};
use common::*;
use tracing_subscriber::fmt::MakeWriter;

/// Everything the subscriber writes, for grepping.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs `test` with every `tracing` event, at every level, captured.
async fn with_captured_logs<F: Future<Output = ()>>(test: impl FnOnce() -> F) -> String {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // tracing caches per call site whether anyone listens. Tests run on parallel threads, and a
    // site first hit on a thread with no subscriber can be cached as "nobody" just as this one
    // arrives; recompute now that it is here. (The tests below that log without checking the
    // logs also capture them, so no thread here ever runs without a subscriber.)
    tracing::callsite::rebuild_interest_cache();
    test().await;
    logs.text()
}

const SECRET_DATA: &str = "the-cloakroom-ticket-is-42";

fn app(store: CountingStore) -> Router {
    let layer = SessionLayer::builder(store)
        .with_secret(SECRET)
        .build()
        .unwrap();
    Router::new()
        .route(
            "/",
            route_get(|session: Session| async move {
                session.insert("note", SECRET_DATA).await?;
                let views: u64 = session.get("views").await?.unwrap_or(0);
                session.insert("views", views + 1).await?;
                Ok::<_, cloakroom::Error>("saved")
            }),
        )
        .route(
            "/read",
            route_get(|session: Session| async move {
                let note: Option<String> = session.get("note").await?;
                Ok::<_, cloakroom::Error>(note.unwrap_or_default())
            }),
        )
        .route(
            "/note-as-number",
            route_get(|session: Session| async move {
                let note: Option<u64> = session.get("note").await?;
                Ok::<_, cloakroom::Error>(note.unwrap_or_default().to_string())
            }),
        )
        .layer(layer)
}

/// The secrets a log line must never show: the id, the cookie value (raw and decoded), the data.
fn assert_no_secrets(logs: &str, reply: &Reply) {
    let cookie = reply.session_cookie("connect.sid").unwrap();
    for secret in [
        cookie.session_id(),
        cookie.value.clone(),
        percent_decode(&cookie.value),
        SECRET_DATA.to_owned(),
    ] {
        assert!(!logs.contains(&secret), "logs leak {secret:?}:\n{logs}");
    }
}

#[tokio::test]
async fn a_load_failure_answers_503_and_is_logged_once_without_secrets() {
    let store = CountingStore::new();
    let app = app(store.clone());
    let first = get(&app, "/", None).await;
    let cookie = first.cookie_pair("connect.sid");

    store.fail.transient.store(true, Ordering::SeqCst);
    store.fail.get.store(true, Ordering::SeqCst);
    let mut reply = None;
    let logs = with_captured_logs(|| async {
        reply = Some(get(&app, "/read", Some(&cookie)).await);
    })
    .await;
    let reply = reply.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "Service Unavailable");
    assert!(reply.set_cookies().is_empty());
    assert!(matches!(
        reply.extensions.get::<cloakroom::Error>(),
        Some(cloakroom::Error::Load(_))
    ));
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "exactly one error event:\n{logs}");
    assert!(errors[0].contains("failed to load session"), "{logs}");
    assert!(errors[0].contains("transient=true"), "{logs}");
    assert_no_secrets(&logs, &first);
}

#[tokio::test]
async fn a_save_failure_answers_500_and_is_logged_once_without_secrets() {
    let store = CountingStore::new();
    let app = app(store.clone());
    let first = get(&app, "/", None).await;
    store.fail.set.store(true, Ordering::SeqCst);
    let cookie = first.cookie_pair("connect.sid");
    let logs = with_captured_logs(|| async {
        let reply = get(&app, "/", Some(&cookie)).await;
        assert_eq!(reply.status, 500);
        assert_eq!(reply.body, "Internal Server Error");
        assert!(matches!(
            reply.extensions.get::<cloakroom::Error>(),
            Some(cloakroom::Error::Save(_))
        ));
    })
    .await;
    assert_eq!(
        logs.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "{logs}"
    );
    assert_no_secrets(&logs, &first);
}

#[tokio::test]
async fn a_touch_failure_is_a_warning_and_the_response_goes_out() {
    let store = CountingStore::new();
    let app = app(store.clone());
    let first = get(&app, "/", None).await;
    store.fail.touch.store(true, Ordering::SeqCst);
    let cookie = first.cookie_pair("connect.sid");
    let logs = with_captured_logs(|| async {
        let reply = get(&app, "/read", Some(&cookie)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, SECRET_DATA);
        assert!(matches!(
            reply.extensions.get::<cloakroom::Error>(),
            Some(cloakroom::Error::Touch(_))
        ));
    })
    .await;
    assert_eq!(store.counts.touch(), 1);
    assert_eq!(
        logs.lines().filter(|l| l.contains("WARN")).count(),
        1,
        "{logs}"
    );
    assert_eq!(
        logs.lines().filter(|l| l.contains("ERROR")).count(),
        0,
        "{logs}"
    );
    assert_no_secrets(&logs, &first);
}

#[tokio::test]
async fn the_failure_response_hook_replaces_the_default() {
    let store = CountingStore::new();
    let layer = SessionLayer::builder(store.clone())
        .with_secret(SECRET)
        .with_failure_response(|error| {
            let mut response =
                http::Response::new(bytes::Bytes::from_static(b"sessions are resting"));
            *response.status_mut() = error.status();
            response
                .headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("5"));
            response
        })
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/",
            route_get(|session: Session| async move {
                session.insert("views", 1).await?;
                Ok::<_, cloakroom::Error>("ok")
            }),
        )
        .layer(layer);
    store.fail.transient.store(true, Ordering::SeqCst);
    store.fail.set.store(true, Ordering::SeqCst);
    let mut reply = None;
    with_captured_logs(|| async {
        reply = Some(get(&app, "/", None).await);
    })
    .await;
    let reply = reply.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "sessions are resting");
    assert_eq!(reply.headers["retry-after"], "5");
    assert!(reply.extensions.get::<cloakroom::Error>().is_some());
}

#[tokio::test]
async fn a_handler_that_swallows_a_load_error_still_gets_the_failure_response() {
    let store = CountingStore::new();
    let layer = SessionLayer::builder(store.clone())
        .with_secret(SECRET)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/",
            route_get(|session: Session| async move {
                session.insert("views", 1).await.ok();
                "handler pretends all is well"
            }),
        )
        .layer(layer);
    let cookie = get(&app, "/", None).await.cookie_pair("connect.sid");
    store.fail.get.store(true, Ordering::SeqCst);
    let mut reply = None;
    with_captured_logs(|| async {
        reply = Some(get(&app, "/", Some(&cookie)).await);
    })
    .await;
    let reply = reply.unwrap();
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body, "Internal Server Error");
    assert_eq!(store.counts.set(), 1, "only the first request saved");
}

/// A session error the handler answers with (here: a stored value of another type) gives the
/// opaque 500, and one log line that names the key and the type, never the value or the id.
#[tokio::test]
async fn a_handler_error_is_logged_naming_the_key_never_the_value() {
    let store = CountingStore::new();
    let app = app(store);
    let first = get(&app, "/", None).await;
    let cookie = first.cookie_pair("connect.sid");
    let mut reply = None;
    let logs = with_captured_logs(|| async {
        reply = Some(get(&app, "/note-as-number", Some(&cookie)).await);
    })
    .await;
    let reply = reply.unwrap();
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body, "Internal Server Error");
    assert!(matches!(
        reply.extensions.get::<cloakroom::Error>(),
        Some(cloakroom::Error::Deserialize { .. })
    ));
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "exactly one error event:\n{logs}");
    assert!(
        errors[0].contains("failed to read session key `note` as u64"),
        "{logs}"
    );
    assert_no_secrets(&logs, &first);
}
