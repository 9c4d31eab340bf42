//! `with_metrics`: what a recorder receives (metrics-util's debugging recorder, installed as
//! the process's recorder, so this file has one test), on SQLite and on the memory store.
#![cfg(all(feature = "metrics", feature = "sqlite"))]

mod common;

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use cloakroom::{MemoryStore, Session, SessionLayer, SessionStore, SqliteStore};
use common::SECRET;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::ServiceExt as _;

fn app<S: SessionStore>(store: S, metrics: bool) -> Router {
    let mut builder = SessionLayer::builder(store).with_secret(SECRET);
    if metrics {
        builder = builder.with_metrics();
    }
    Router::new()
        .route(
            "/count",
            get(|session: Session| async move {
                let n = session
                    .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await?;
                Ok::<_, cloakroom::Error>(n.to_string())
            }),
        )
        .route(
            "/login",
            get(|session: Session| async move {
                session.regenerate().await?;
                session.insert("user", "ann").await?;
                Ok::<_, cloakroom::Error>("ok")
            }),
        )
        .route(
            "/logout",
            get(|session: Session| async move {
                session.destroy().await?;
                Ok::<_, cloakroom::Error>("ok")
            }),
        )
        .layer(builder.build().unwrap())
}

async fn send(app: &Router, path: &str, cookie: Option<&str>) -> Option<String> {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(response.status().is_success());
    response.headers().get("set-cookie").map(|value| {
        value
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    })
}

/// Every metric's value by `name{label=value,…}` (labels sorted); histograms give their count.
fn values(snapshotter: &Snapshotter) -> HashMap<String, u64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            let name = if labels.is_empty() {
                key.key().name().to_owned()
            } else {
                format!("{}{{{}}}", key.key().name(), labels.join(","))
            };
            let value = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => 0,
            };
            (name, value)
        })
        .collect()
}

#[tokio::test]
async fn a_recorder_receives_counts_and_timings_and_a_layer_without_metrics_sends_none() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test process");

    // Without `with_metrics`: nothing, whatever the requests do.
    let quiet = app(MemoryStore::new(), false);
    let cookie = send(&quiet, "/count", None).await.unwrap();
    send(&quiet, "/count", Some(&cookie)).await;
    assert!(values(&snapshotter).is_empty());

    let dir = std::env::temp_dir().join(cloakroom_testkit::unique_name("metrics-"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::connect(dir.join("sessions.db")).await.unwrap();
    let app = app(store, true);
    let first = send(&app, "/count", None).await.unwrap(); // created: set
    send(&app, "/count", Some(&first)).await; // get, set
    let second = send(&app, "/login", Some(&first)).await.unwrap(); // get, set, destroy
    send(&app, "/logout", Some(&second)).await; // get, destroy
    send(&app, "/count", Some(&second)).await; // get (none): expired; set: created

    let seen = values(&snapshotter);
    let expect = |name: &str, value: u64| {
        assert_eq!(seen.get(name).copied(), Some(value), "{name} in {seen:#?}");
    };
    expect("cloakroom_sessions_created_total", 2);
    expect("cloakroom_sessions_regenerated_total", 1);
    expect("cloakroom_sessions_destroyed_total", 1);
    expect("cloakroom_sessions_expired_total", 1);
    expect("cloakroom_sessions_loaded_total{store=SqliteStore}", 3);
    expect("cloakroom_sessions_saved_total{store=SqliteStore}", 4);
    expect(
        "cloakroom_store_call_seconds{call=get,store=SqliteStore}",
        4,
    );
    expect(
        "cloakroom_store_call_seconds{call=set,store=SqliteStore}",
        4,
    );
    expect(
        "cloakroom_store_call_seconds{call=destroy,store=SqliteStore}",
        2,
    );
    assert!(
        seen.iter()
            .filter(|(name, _)| name.contains("errors"))
            .all(|(_, count)| *count == 0),
        "no failures: {seen:#?}"
    );
}
