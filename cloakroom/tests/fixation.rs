//! Session fixation and theft, on every store: an id the server never issued (or no longer
//! holds) is never adopted; after `regenerate` the old cookie no longer reaches the data; after
//! `destroy` the cookie is dead; a cookie signed with a removed secret is refused.
#![cfg(all(feature = "redis", feature = "postgres", feature = "sqlite"))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::routing::get as route_get;
use cloakroom::{Session, SessionLayer, SessionStore};
use common::*;

/// `/visit` (touches the session), `/login` (regenerates, stores `user`), `/whoami`, `/logout`.
/// With `planted`, new sessions get the id `planted-session-id` once (a stand-in for an attacker
/// who got a validly signed cookie for an id of their choosing).
fn app(store: Arc<dyn SessionStore>, secrets: &[&str], planted: Option<Arc<AtomicBool>>) -> Router {
    let mut builder = SessionLayer::builder(store).with_secrets(secrets.iter().copied());
    if let Some(planted) = planted {
        builder = builder.with_genid(move |_| {
            if planted.swap(false, Ordering::SeqCst) {
                "planted-session-id".to_owned()
            } else {
                cloakroom::Id::generate().as_str().to_owned()
            }
        });
    }
    let layer = builder.build().unwrap();
    Router::new()
        .route(
            "/visit",
            route_get(|session: Session| async move {
                let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
                session.insert("visits", visits).await?;
                Ok::<_, cloakroom::Error>("visited")
            }),
        )
        .route(
            "/login",
            route_get(|session: Session| async move {
                session.regenerate().await?;
                session.insert("user", "victim").await?;
                Ok::<_, cloakroom::Error>("logged in")
            }),
        )
        .route(
            "/whoami",
            route_get(|session: Session| async move {
                let user: Option<String> = session.get("user").await?;
                Ok::<_, cloakroom::Error>(user.unwrap_or_else(|| "nobody".into()))
            }),
        )
        .route(
            "/logout",
            route_get(|session: Session| async move {
                session.destroy().await?;
                Ok::<_, cloakroom::Error>("bye")
            }),
        )
        .layer(layer)
}

async fn an_id_the_store_does_not_hold_is_never_adopted(name: &str, store: Arc<dyn SessionStore>) {
    // Obtain a validly signed cookie for an id of our choosing, then make sure the store
    // does not hold it (as for an id that expired or was destroyed).
    let planted = Arc::new(AtomicBool::new(true));
    let app = app(Arc::clone(&store), &[SECRET], Some(planted));
    let issued = get(&app, "/visit", None).await;
    let cookie = issued.session_cookie("connect.sid").unwrap();
    assert_eq!(cookie.session_id(), "planted-session-id", "{name}");
    let id = cloakroom::Id::from_string("planted-session-id");
    store.destroy(&id).await.unwrap();

    let victim = get(&app, "/visit", Some(&issued.cookie_pair("connect.sid"))).await;
    let fresh = victim.session_cookie("connect.sid").expect("a new session");
    assert_ne!(
        fresh.session_id(),
        "planted-session-id",
        "{name}: adopted the planted id"
    );
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "{name}: the planted id was stored"
    );
}

async fn after_regenerate_the_old_cookie_reaches_nothing(name: &str, store: Arc<dyn SessionStore>) {
    let app = app(Arc::clone(&store), &[SECRET], None);
    let before = get(&app, "/visit", None).await.cookie_pair("connect.sid");
    let login = get(&app, "/login", Some(&before)).await;
    let after = login.cookie_pair("connect.sid");
    assert_ne!(before, after, "{name}: login changed the id");
    assert_eq!(
        get(&app, "/whoami", Some(&after)).await.body,
        "victim",
        "{name}"
    );
    assert_eq!(
        get(&app, "/whoami", Some(&before)).await.body,
        "nobody",
        "{name}: the pre-login cookie reaches the logged-in session"
    );
    let old_id = SetCookie::parse(&format!("{before}; Path=/")).session_id();
    assert!(
        store
            .get(&cloakroom::Id::from_string(old_id))
            .await
            .unwrap()
            .is_none(),
        "{name}: the old record was not removed"
    );
}

async fn after_destroy_the_cookie_is_dead(name: &str, store: Arc<dyn SessionStore>) {
    let app = app(Arc::clone(&store), &[SECRET], None);
    let cookie = get(&app, "/login", None).await.cookie_pair("connect.sid");
    assert_eq!(
        get(&app, "/whoami", Some(&cookie)).await.body,
        "victim",
        "{name}"
    );
    let bye = get(&app, "/logout", Some(&cookie)).await;
    let expired = bye
        .session_cookie("connect.sid")
        .expect("logout expires the cookie");
    assert_eq!(
        expired.expires(),
        Some("Thu, 01 Jan 1970 00:00:00 GMT"),
        "{name}"
    );
    // A stolen copy of the cookie, replayed after the logout, reaches nothing.
    assert_eq!(
        get(&app, "/whoami", Some(&cookie)).await.body,
        "nobody",
        "{name}"
    );
    let id = SetCookie::parse(&format!("{cookie}; Path=/")).session_id();
    assert!(
        store
            .get(&cloakroom::Id::from_string(id))
            .await
            .unwrap()
            .is_none(),
        "{name}"
    );
}

async fn a_cookie_signed_with_a_removed_secret_is_refused(
    name: &str,
    store: Arc<dyn SessionStore>,
) {
    let old_only = app(
        Arc::clone(&store),
        &["old secret, obviously fake, 32+ bytes"],
        None,
    );
    let rotating = app(
        Arc::clone(&store),
        &[
            "new secret, obviously fake, 32+ bytes",
            "old secret, obviously fake, 32+ bytes",
        ],
        None,
    );
    let new_only = app(
        Arc::clone(&store),
        &["new secret, obviously fake, 32+ bytes"],
        None,
    );
    let old_cookie = get(&old_only, "/login", None)
        .await
        .cookie_pair("connect.sid");
    assert_eq!(
        get(&rotating, "/whoami", Some(&old_cookie)).await.body,
        "victim",
        "{name}: during rotation the old secret still verifies"
    );
    assert_eq!(
        get(&new_only, "/whoami", Some(&old_cookie)).await.body,
        "nobody",
        "{name}: once removed, the old secret verifies nothing"
    );
}

on_every_store!(
    an_id_the_store_does_not_hold_is_never_adopted,
    after_regenerate_the_old_cookie_reaches_nothing,
    after_destroy_the_cookie_is_dead,
    a_cookie_signed_with_a_removed_secret_is_refused,
);
