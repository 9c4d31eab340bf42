//! `with_touch_after`: a read-only request skips the store touch while the store's expiry is
//! fresh, and makes it once the expiry is old enough.

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get as route_get;
use cloakroom::{CookieOptions, Session, SessionLayer};
use common::*;

fn app(store: CountingStore, max_age: Duration, touch_after: Duration) -> Router {
    let layer = SessionLayer::builder(store)
        .with_secret(SECRET)
        .with_cookie(CookieOptions::new().with_max_age(max_age))
        .with_touch_after(touch_after)
        .build()
        .unwrap();
    Router::new()
        .route(
            "/login",
            route_get(|session: Session| async move {
                session.insert("user", "john").await?;
                Ok::<_, cloakroom::Error>("in")
            }),
        )
        .route(
            "/read",
            route_get(|session: Session| async move {
                let user: Option<String> = session.get("user").await?;
                Ok::<_, cloakroom::Error>(user.unwrap_or_default())
            }),
        )
        .layer(layer)
}

#[tokio::test]
async fn by_default_every_read_touches_as_express() {
    let store = CountingStore::new();
    let app = app(store.clone(), Duration::from_secs(60), Duration::ZERO);
    let cookie = get(&app, "/login", None).await.cookie_pair("connect.sid");
    store.counts.reset();
    for _ in 0..3 {
        assert_eq!(get(&app, "/read", Some(&cookie)).await.body, "john");
    }
    assert_eq!(
        store.counts.all(),
        (3, 0, 3, 0),
        "(get, set, touch, destroy)"
    );
}

#[tokio::test]
async fn a_fresh_expiry_is_not_touched() {
    let store = CountingStore::new();
    let app = app(
        store.clone(),
        Duration::from_secs(600),
        Duration::from_secs(60),
    );
    let cookie = get(&app, "/login", None).await.cookie_pair("connect.sid");
    store.counts.reset();
    for _ in 0..3 {
        assert_eq!(get(&app, "/read", Some(&cookie)).await.body, "john");
    }
    assert_eq!(
        store.counts.all(),
        (3, 0, 0, 0),
        "saved under a minute ago: no touch"
    );
}

#[tokio::test]
async fn a_stale_expiry_is_touched_and_moves_forward() {
    let store = CountingStore::new();
    let app = app(
        store.clone(),
        Duration::from_secs(600),
        Duration::from_millis(20),
    );
    let login = get(&app, "/login", None).await;
    let cookie = login.cookie_pair("connect.sid");
    let id = cloakroom::Id::from_string(login.session_cookie("connect.sid").unwrap().session_id());
    let stored_expiry = || async {
        use cloakroom::SessionStore;
        store
            .inner
            .get(&id)
            .await
            .unwrap()
            .unwrap()
            .expires_at
            .unwrap()
    };
    let saved = stored_expiry().await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    store.counts.reset();
    assert_eq!(get(&app, "/read", Some(&cookie)).await.body, "john");
    assert_eq!(
        store.counts.touch(),
        1,
        "30 ms old, touch_after 20 ms: touched"
    );
    let touched = stored_expiry().await;
    assert!(
        touched.millis_since(saved) >= 30,
        "the store's expiry moved forward by the time that passed"
    );
}
