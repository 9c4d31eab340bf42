//! Flash messages on every store: stored as connect-flash stores them (`flash: {kind:
//! [messages]}`), shown once, merged across concurrent requests. (The interop test in
//! `demo/tests/interop.rs` passes them between Express with the real connect-flash and Rust.)
#![cfg(all(feature = "redis", feature = "postgres", feature = "sqlite"))]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use cloakroom::{FLASH_KEY, Session, SessionLayer, SessionStore};
use common::*;
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// `/start` (a session), `/flash/{kind}/{text}`, `/take/{kind}`, `/take-all`, `/raw`.
fn app(store: Arc<dyn SessionStore>) -> Router {
    let layer = SessionLayer::builder(store)
        .with_secret(SECRET)
        .build()
        .unwrap();
    Router::new()
        .route(
            "/start",
            get(|session: Session| async move {
                session.insert("started", true).await?;
                Ok::<_, cloakroom::Error>(String::new())
            }),
        )
        .route(
            "/flash/{kind}/{text}",
            get(
                |session: Session, Path((kind, text)): Path<(String, String)>| async move {
                    let waiting = session.flash(&kind, text).await?;
                    Ok::<_, cloakroom::Error>(waiting.to_string())
                },
            ),
        )
        .route(
            "/take/{kind}",
            get(|session: Session, Path(kind): Path<String>| async move {
                let taken: Vec<String> = session.take_flash(&kind).await?;
                Ok::<_, cloakroom::Error>(json!(taken).to_string())
            }),
        )
        .route(
            "/take-all",
            get(|session: Session| async move {
                let taken = session.take_all_flashes().await?;
                Ok::<_, cloakroom::Error>(Value::Object(taken).to_string())
            }),
        )
        .route(
            "/raw",
            get(|session: Session| async move {
                let raw = session.get_value(FLASH_KEY).await?;
                Ok::<_, cloakroom::Error>(raw.unwrap_or(Value::Null).to_string())
            }),
        )
        .layer(layer)
}

async fn call(app: &Router, path: &str, cookie: &str) -> (String, Option<String>) {
    let mut request = axum::http::Request::get(path);
    if !cookie.is_empty() {
        request = request.header("cookie", cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    let set_cookie = response.headers().get("set-cookie").map(|value| {
        value
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    });
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (String::from_utf8(body.to_vec()).unwrap(), set_cookie)
}

/// connect-flash's test vector, in its layout: kinds in the order first added, messages in
/// order; taking a kind removes it and leaves the object; taking all leaves `{}`.
async fn flashes_are_stored_as_connect_flash_stores_them(_: &str, store: Arc<dyn SessionStore>) {
    let app = app(store);
    let (_, cookie) = call(&app, "/start", "").await;
    let cookie = cookie.expect("a session");
    for (path, waiting) in [
        ("/flash/info/a", "1"),
        ("/flash/info/b%20x", "2"),
        ("/flash/error/e1", "1"),
        ("/flash/error/e2", "2"),
        ("/flash/info/c", "3"),
    ] {
        assert_eq!(call(&app, path, &cookie).await.0, waiting, "{path}");
    }
    assert_eq!(
        call(&app, "/raw", &cookie).await.0,
        r#"{"info":["a","b x","c"],"error":["e1","e2"]}"#
    );
    assert_eq!(
        call(&app, "/take/info", &cookie).await.0,
        r#"["a","b x","c"]"#
    );
    assert_eq!(
        call(&app, "/take/info", &cookie).await.0,
        "[]",
        "shown once"
    );
    assert_eq!(
        call(&app, "/raw", &cookie).await.0,
        r#"{"error":["e1","e2"]}"#
    );
    assert_eq!(
        call(&app, "/take-all", &cookie).await.0,
        r#"{"error":["e1","e2"]}"#
    );
    assert_eq!(call(&app, "/raw", &cookie).await.0, "{}");
    assert_eq!(call(&app, "/take-all", &cookie).await.0, "{}");
}

/// Taking from a session that has no flash changes nothing: a new visitor gets no session.
async fn taking_nothing_saves_nothing(_: &str, store: Arc<dyn SessionStore>) {
    let app = app(Arc::clone(&store));
    let (body, cookie) = call(&app, "/take/info", "").await;
    assert_eq!((body.as_str(), cookie), ("[]", None));
    let (body, cookie) = call(&app, "/take-all", "").await;
    assert_eq!((body.as_str(), cookie), ("{}", None));
}

/// Twenty requests at once each leave a message: all twenty wait afterwards.
async fn concurrent_flashes_all_stay(_: &str, store: Arc<dyn SessionStore>) {
    let app = app(store);
    let (_, cookie) = call(&app, "/start", "").await;
    let cookie = cookie.unwrap();
    let mut tasks = Vec::new();
    for n in 0..20 {
        let (app, cookie) = (app.clone(), cookie.clone());
        tasks.push(tokio::spawn(async move {
            call(&app, &format!("/flash/info/m{n}"), &cookie).await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let taken: Vec<String> =
        serde_json::from_str(&call(&app, "/take/info", &cookie).await.0).unwrap();
    assert_eq!(taken.len(), 20, "{taken:?}");
}

on_every_store!(
    flashes_are_stored_as_connect_flash_stores_them,
    taking_nothing_saves_nothing,
    concurrent_flashes_all_stay,
);
