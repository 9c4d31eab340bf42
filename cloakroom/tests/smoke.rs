//! The basic flow end to end through an axum `Router`.

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get as route_get;
use cloakroom::{CookieOptions, Session, SessionLayer};
use common::*;

fn counter_app(store: CountingStore) -> Router {
    let layer = SessionLayer::builder(store)
        .with_secret(SECRET)
        .with_cookie(CookieOptions::new().with_max_age(Duration::from_secs(60)))
        .build()
        .unwrap();
    Router::new()
        .route(
            "/",
            route_get(|session: Session| async move {
                let views: u64 = session.get("views").await?.unwrap_or(0) + 1;
                session.insert("views", views).await?;
                Ok::<_, cloakroom::Error>(format!("Number of views {views}"))
            }),
        )
        .route("/untouched", route_get(|| async { "no session used" }))
        .layer(layer)
}

#[tokio::test]
async fn views_count_up_across_requests() {
    let store = CountingStore::new();
    let app = counter_app(store.clone());
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "Number of views 1");
    let cookie = first
        .session_cookie("connect.sid")
        .expect("cookie on first visit");
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "HttpOnly"]);
    let pair = first.cookie_pair("connect.sid");
    let second = get(&app, "/", Some(&pair)).await;
    assert_eq!(second.body, "Number of views 2");
    let third = get(&app, "/", Some(&pair)).await;
    assert_eq!(third.body, "Number of views 3");
    assert_eq!(store.len().await, 1);
    let stored = store.record(&cookie.session_id()).await.unwrap();
    assert!(
        stored
            .to_json()
            .starts_with(r#"{"cookie":{"originalMaxAge":60000,"expires":""#)
    );
    assert!(
        stored
            .to_json()
            .ends_with(r#""httpOnly":true,"path":"/"},"views":3}"#)
    );
}

#[tokio::test]
async fn a_handler_that_never_uses_the_session_costs_nothing() {
    let store = CountingStore::new();
    let app = counter_app(store.clone());
    let pair = get(&app, "/", None).await.cookie_pair("connect.sid");
    store.counts.reset();
    let reply = get(&app, "/untouched", Some(&pair)).await;
    assert_eq!(reply.body, "no session used");
    assert!(reply.set_cookies().is_empty());
    assert_eq!(store.counts.all(), (0, 0, 0, 0));
}
