//! The basic flow end to end through an axum `Router`.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn views_count_up_across_requests() {
    let store = CountingStore::new();
    let app = counter_app(store.clone(), Duration::from_secs(60));
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "views 1");
    let cookie = first
        .session_cookie("connect.sid")
        .expect("cookie on first visit");
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "HttpOnly"]);
    let pair = first.cookie_pair("connect.sid");
    let second = get(&app, "/", Some(&pair)).await;
    assert_eq!(second.body, "views 2");
    let third = get(&app, "/", Some(&pair)).await;
    assert_eq!(third.body, "views 3");
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
    let app = counter_app(store.clone(), Duration::from_secs(60));
    let pair = get(&app, "/", None).await.cookie_pair("connect.sid");
    store.counts.reset();
    let reply = get(&app, "/untouched", Some(&pair)).await;
    assert_eq!(reply.body, "no session used");
    assert!(reply.set_cookies().is_empty());
    assert_eq!(store.counts.all(), (0, 0, 0, 0));
}
