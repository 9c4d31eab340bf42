//! Races on every store: 200 concurrent requests on one session writing distinct keys keep every
//! key; 1,000 concurrent clients with their own sessions never see another client's data.
#![cfg(all(feature = "redis", feature = "postgres", feature = "sqlite"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get as route_get;
use cloakroom::{Session, SessionLayer, SessionStore};
use common::*;
use tokio::sync::Barrier;

/// `/start`, `/set/{key}` (waits at `barrier` between loading and writing, so every racer holds
/// the same loaded version), `/count` (how many `k*` keys the session has), `/me/{name}` and
/// `/whoami`.
fn app(store: Arc<dyn SessionStore>, barrier: Arc<Barrier>) -> Router {
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
                    session.insert(key, true).await?;
                    Ok::<_, cloakroom::Error>("set")
                }
            }),
        )
        .route(
            "/count",
            route_get(|session: Session| async move {
                let mut count = 0;
                for n in 0..200 {
                    if session.get_value(&format!("k{n}")).await?.is_some() {
                        count += 1;
                    }
                }
                Ok::<_, cloakroom::Error>(count.to_string())
            }),
        )
        .route(
            "/me/{name}",
            route_get(|session: Session, Path(name): Path<String>| async move {
                session.insert("name", name).await?;
                Ok::<_, cloakroom::Error>("ok")
            }),
        )
        .route(
            "/whoami",
            route_get(|session: Session| async move {
                Ok::<_, cloakroom::Error>(session.get::<String>("name").await?.unwrap_or_default())
            }),
        )
        .layer(layer)
}

async fn two_hundred_writers_on_one_session_keep_every_key(
    name: &str,
    store: Arc<dyn SessionStore>,
) {
    let app = app(store, Arc::new(Barrier::new(200)));
    let cookie = get(&app, "/start", None).await.cookie_pair("connect.sid");
    let racers: Vec<_> = (0..200)
        .map(|n| {
            let app = app.clone();
            let cookie = cookie.clone();
            tokio::spawn(async move { get(&app, &format!("/set/k{n}"), Some(&cookie)).await })
        })
        .collect();
    let deadline = Duration::from_secs(60);
    for racer in racers {
        let reply = tokio::time::timeout(deadline, racer)
            .await
            .unwrap_or_else(|_| panic!("{name}: a racer took over {deadline:?}"))
            .unwrap();
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
    }
    assert_eq!(
        get(&app, "/count", Some(&cookie)).await.body,
        "200",
        "{name}: lost keys"
    );
}

async fn a_thousand_clients_never_see_each_others_data(name: &str, store: Arc<dyn SessionStore>) {
    let app = app(store, Arc::new(Barrier::new(1)));
    let clients: Vec<_> = (0..1000)
        .map(|n| {
            let app = app.clone();
            tokio::spawn(async move {
                let me = format!("client-{n}");
                let cookie = get(&app, &format!("/me/{me}"), None)
                    .await
                    .cookie_pair("connect.sid");
                let seen = get(&app, "/whoami", Some(&cookie)).await.body;
                (me, seen)
            })
        })
        .collect();
    for client in clients {
        let (me, seen) = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .unwrap_or_else(|_| panic!("{name}: a client took over a minute"))
            .unwrap();
        assert_eq!(seen, me, "{name}: a client saw another client's session");
    }
}

on_every_store!(
    two_hundred_writers_on_one_session_keep_every_key,
    a_thousand_clients_never_see_each_others_data,
);
