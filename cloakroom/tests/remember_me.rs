//! A per-session cookie setting ("remember me") is stored with the session and sticks on later
//! saves (tower-sessions 0.15, by contrast, falls back to the layer's expiry on the next save).

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get as route_get;
use cloakroom::{CookieOptions, Session, SessionLayer, Timestamp};
use common::*;

const MONTH: Duration = Duration::from_secs(30 * 86_400);

fn app(store: CountingStore) -> Router {
    let layer = SessionLayer::builder(store)
        .with_secret(SECRET)
        .with_cookie(CookieOptions::new().with_max_age(Duration::from_secs(60)))
        .with_rolling(true)
        .build()
        .unwrap();
    Router::new()
        .route(
            "/login",
            route_get(|session: Session| async move {
                session.insert("user", "ann").await?;
                session
                    .update_cookie(|cookie| cookie.set_max_age(Some(MONTH)))
                    .await?;
                Ok::<_, cloakroom::Error>("remembered")
            }),
        )
        .route(
            "/count",
            route_get(|session: Session| async move {
                let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
                session.insert("n", n).await?;
                Ok::<_, cloakroom::Error>(n.to_string())
            }),
        )
        .route(
            "/read",
            route_get(|session: Session| async move {
                Ok::<_, cloakroom::Error>(session.get::<String>("user").await?.unwrap_or_default())
            }),
        )
        .layer(layer)
}

/// Milliseconds from now until a Set-Cookie's Expires.
fn expires_in(reply: &Reply) -> i64 {
    let cookie = reply.session_cookie("connect.sid").expect("a Set-Cookie");
    http_date_millis(cookie.expires().expect("an Expires")) - Timestamp::now().as_millis()
}

fn about_a_month(ms: i64) -> bool {
    let month = MONTH.as_millis() as i64;
    (month - 5_000..=month).contains(&ms)
}

#[tokio::test]
async fn a_longer_lifetime_sticks_on_later_saves_and_rolling_responses() {
    let store = CountingStore::new();
    let app = app(store.clone());
    let login = get(&app, "/login", None).await;
    assert!(about_a_month(expires_in(&login)), "{}", expires_in(&login));
    let cookie = login.cookie_pair("connect.sid");
    let id = login.session_cookie("connect.sid").unwrap().session_id();

    // A later request that changes the data saves the session again: the month stays.
    let count = get(&app, "/count", Some(&cookie)).await;
    assert_eq!(count.body, "1");
    assert!(about_a_month(expires_in(&count)), "{}", expires_in(&count));
    let stored = store.record(&id).await.unwrap();
    assert_eq!(stored.cookie().original_max_age(), Some(MONTH));
    assert!(about_a_month(
        stored
            .cookie()
            .expires()
            .unwrap()
            .millis_since(Timestamp::now())
    ));

    // A read-only request with `rolling` renews the cookie from the session's own lifetime.
    let read = get(&app, "/read", Some(&cookie)).await;
    assert_eq!(read.body, "ann");
    assert!(about_a_month(expires_in(&read)), "{}", expires_in(&read));

    // Another visitor still gets the layer's minute.
    let other = get(&app, "/count", None).await;
    let minute = expires_in(&other);
    assert!((55_000..=60_000).contains(&minute), "{minute}");
}
