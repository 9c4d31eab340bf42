//! No lost updates: concurrent requests on one session each keep their change.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::Path;
use axum::routing::get as route_get;
use cloakroom::{Session, SessionLayer};
use common::*;
use tokio::sync::Barrier;

/// `/set/{key}` loads the session, waits until `barrier` releases every request (so all of them
/// hold the same loaded version), then sets `key`.
fn racing_app(store: CountingStore, barrier: Arc<Barrier>) -> Router {
    let layer = SessionLayer::builder(store)
        .with_secret(SECRET)
        .build()
        .unwrap();
    Router::new()
        .route(
            "/start",
            route_get(|session: Session| async move {
                session.insert("started", true).await?;
                Ok::<_, cloakroom::Error>("started")
            }),
        )
        .route(
            "/set/{key}",
            route_get(move |session: Session, Path(key): Path<String>| {
                let barrier = Arc::clone(&barrier);
                async move {
                    session.id().await?;
                    barrier.wait().await;
                    session
                        .insert(key.clone(), format!("value of {key}"))
                        .await?;
                    Ok::<_, cloakroom::Error>("ok")
                }
            }),
        )
        .route(
            "/keys",
            route_get(|session: Session| async move {
                let mut keys = Vec::new();
                for i in 0..200 {
                    if session.get_value(&format!("k{i}")).await?.is_some() {
                        keys.push(i);
                    }
                }
                Ok::<_, cloakroom::Error>(format!("{keys:?}"))
            }),
        )
        .layer(layer)
}

async fn race(requests: usize) -> (CountingStore, Vec<Reply>, String) {
    let store = CountingStore::new();
    let barrier = Arc::new(Barrier::new(requests));
    let app = racing_app(store.clone(), barrier);
    let cookie = get(&app, "/start", None).await.cookie_pair("connect.sid");
    store.counts.reset();
    // Each write takes a while, as a networked store's does, so the requests that end while
    // one is written queue behind it (a write made when the session's turn is free runs at
    // once, and with an instant store the turns need never overlap).
    store.delay.set_ms.store(20, Ordering::SeqCst);
    let tasks: Vec<_> = (0..requests)
        .map(|i| {
            let app = app.clone();
            let cookie = cookie.clone();
            tokio::spawn(async move { get(&app, &format!("/set/k{i}"), Some(&cookie)).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    let keys = get(&app, "/keys", Some(&cookie)).await.body;
    (store, replies, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_setting_their_own_key_keep_all_fifty() {
    let (store, replies, keys) = race(50).await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let expected: Vec<usize> = (0..50).collect();
    assert_eq!(keys, format!("{expected:?}"));
    // Every request loaded the same version, so all but the first writer had to merge. They
    // did it without a failed compare-and-set or a reload: the requests that ended while
    // another wrote were written together, in batches, onto the record written before them.
    let (sets, gets) = (store.counts.set(), store.counts.get());
    assert!((1..50).contains(&sets), "{sets} writes for 50 requests");
    assert_eq!(
        gets, 51,
        "one load per request (and the final read), no reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_written_concurrently_ends_with_one_of_the_writes() {
    let store = CountingStore::new();
    let barrier = Arc::new(Barrier::new(2));
    let layer = SessionLayer::builder(store.clone())
        .with_secret(SECRET)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/start",
            route_get(|session: Session| async move {
                session.insert("color", "none").await?;
                Ok::<_, cloakroom::Error>("started")
            }),
        )
        .route(
            "/color/{color}",
            route_get(move |session: Session, Path(color): Path<String>| {
                let barrier = Arc::clone(&barrier);
                async move {
                    session.id().await?;
                    barrier.wait().await;
                    session.insert("color", color).await?;
                    Ok::<_, cloakroom::Error>("ok")
                }
            }),
        )
        .layer(layer);
    let first = get(&app, "/start", None).await;
    let cookie = first.cookie_pair("connect.sid");
    let id = first.session_cookie("connect.sid").unwrap().session_id();
    let (a, b) = tokio::join!(
        get(&app, "/color/red", Some(&cookie)),
        get(&app, "/color/blue", Some(&cookie))
    );
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    let color = store.record(&id).await.unwrap().data()["color"].clone();
    assert!(color == "red" || color == "blue", "got {color}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_racing_a_destroy_does_not_bring_the_session_back() {
    let store = CountingStore::new();
    let barrier = Arc::new(Barrier::new(2));
    let layer = SessionLayer::builder(store.clone())
        .with_secret(SECRET)
        .build()
        .unwrap();
    let writer_barrier = Arc::clone(&barrier);
    let app = Router::new()
        .route(
            "/start",
            route_get(|session: Session| async move {
                session.insert("user", "john").await?;
                Ok::<_, cloakroom::Error>("started")
            }),
        )
        .route(
            "/cart",
            route_get(move |session: Session| {
                let barrier = Arc::clone(&writer_barrier);
                async move {
                    session.id().await?;
                    barrier.wait().await; // loaded before the logout...
                    barrier.wait().await; // ...and saves after it
                    session.insert("cart", 3).await?;
                    Ok::<_, cloakroom::Error>("added")
                }
            }),
        )
        .route(
            "/logout",
            route_get(move |session: Session| {
                let barrier = Arc::clone(&barrier);
                async move {
                    barrier.wait().await; // the cart request has loaded
                    session.destroy().await?;
                    barrier.wait().await; // the cart request may save now
                    Ok::<_, cloakroom::Error>("bye")
                }
            }),
        )
        .layer(layer);
    let first = get(&app, "/start", None).await;
    let cookie = first.cookie_pair("connect.sid");
    let id = first.session_cookie("connect.sid").unwrap().session_id();
    let cart = {
        let app = app.clone();
        let cookie = cookie.clone();
        tokio::spawn(async move { get(&app, "/cart", Some(&cookie)).await })
    };
    let logout = get(&app, "/logout", Some(&cookie)).await;
    assert_eq!(logout.status, 200);
    let cart = cart.await.unwrap();
    assert_eq!(cart.status, 200);
    assert!(store.record(&id).await.is_none(), "the logout stands");
    assert!(cart.session_cookie("connect.sid").is_none());
}
