//! express-session's `test/session.js` `describe('req.session')`: the session itself and its
//! methods (`.destroy()`, `.regenerate()`, `.reload()`, `.save()`, `.touch()`, `.cookie.*`),
//! ported to cloakroom's `Session` through an axum `Router`.
//!
//! Harness as upstream: secret `keyboard cat`, `cookie: { maxAge: 60000 }` unless the test sets
//! its own `cookie`. Upstream relies on express 1's defaults `resave: true, saveUninitialized:
//! true`; ours are false, so [`upstream_builder`] sets them explicitly. Our session is lazy, so
//! upstream's default handler (`res.end()`) becomes one that calls `session.id()`.
//!
//! express's `req.session.cookie.x = …` is our `session.update_cookie(|c| …)`. Unlike express, a
//! cookie change counts as a modification (lib.rs differences table); where upstream also changes
//! data or the session is new, that makes no difference.
//!
//! Not applicable (upstream title, reason):
//! - req.session > "should not have enumerable methods": JavaScript `for..in`; `Session` is a
//!   handle with methods, its data is only reachable by key (stored keys: see express_session.rs
//!   "should only have session data enumerable (and cookie)").
//! - req.session > "should not be set if store is disconnected", "should be set when store
//!   reconnects": express watches the store's EventEmitter `disconnect`/`connect` events; our
//!   stores have no such events (a failing store yields the failure response instead).

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use cloakroom::store::SessionStore;
use cloakroom::{
    ConfigError, CookieOptions, Error, MemoryStore, Priority, SecureConnection, Session,
    SessionLayer, Timestamp, Unset,
};
use common::*;
use http::header::SET_COOKIE;
use http::{HeaderMap, StatusCode, Uri};

/// upstream's default `res.end()` handler; ours must use the session (lazy).
async fn use_session(session: Session) -> Result<&'static str, Error> {
    session.id().await?;
    Ok("")
}

/// upstream `req.session.count = (req.session.count || 0) + 1; res.end('hits: ' + count)`.
async fn count_hits(session: Session) -> Result<String, Error> {
    let count = session.get::<u64>("count").await?.unwrap_or(0) + 1;
    session.insert("count", count).await?;
    Ok(format!("hits: {count}"))
}

fn session_cookie(reply: &Reply) -> SetCookie {
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    reply
        .session_cookie("connect.sid")
        .unwrap_or_else(|| panic!("expected a Set-Cookie, got {:?}", reply.headers))
}

fn assert_no_cookie(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    assert!(
        reply.headers.get(SET_COOKIE).is_none(),
        "unexpected Set-Cookie: {:?}",
        reply.headers
    );
}

fn max_age(ms: u64) -> CookieOptions {
    CookieOptions::new().with_max_age(Duration::from_millis(ms))
}

/// Asserts `Expires` is `maxAge` after the request (express: `Expires − Date == maxAge`): the
/// stored expiry lies `ms` after a moment between `before` and `after`, and the attribute is that
/// same instant.
async fn assert_expires_in(
    reply: &Reply,
    store: &CountingStore,
    before: Timestamp,
    after: Timestamp,
    ms: i64,
) {
    let cookie = session_cookie(reply);
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "HttpOnly"]);
    let record = store.record(&cookie.session_id()).await.unwrap();
    let expires = assert_expires_matches_record(&cookie, &record);
    assert!(
        expires >= before.add_millis(ms) && expires <= after.add_millis(ms),
        "expires {expires:?} not {ms} ms after the request ({before:?}..{after:?})"
    );
    assert_eq!(
        record.cookie().original_max_age(),
        Some(Duration::from_millis(ms as u64))
    );
}

// ---------------------------------------------------------------------------------------------
// req.session

// upstream: req.session > "should persist"
#[tokio::test]
async fn should_persist() {
    let store = CountingStore::new();
    let app = app_with(upstream_builder(store.clone()).build().unwrap(), count_hits);
    let first = get(&app, "/", None).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "hits: 1")
    );
    let id = session_cookie(&first).session_id();
    let record = store.record(&id).await.expect("store.load finds it");
    assert_eq!(record.data()["count"], serde_json::json!(1));
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "hits: 2")
    );
    let record = store.record(&id).await.unwrap();
    assert_eq!(record.data()["count"], serde_json::json!(2));
}

// upstream: req.session > "should only set-cookie when modified"
#[tokio::test]
async fn should_only_set_cookie_when_modified() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |uri: Uri, session: Session| async move {
            let mut count = session.get::<u64>("count").await?.unwrap_or(0);
            if uri.path() != "/unmodified" {
                count += 1;
                session.insert("count", count).await?;
            }
            Ok::<_, Error>(count.to_string())
        },
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "1");
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(second.body, "2");
    let pair = second.cookie_pair("connect.sid");
    assert_eq!(pair, first.cookie_pair("connect.sid"), "same session");

    let third = get(&app, "/unmodified", Some(&pair)).await;
    assert_eq!(third.body, "2");
    assert_no_cookie(&third);

    let fourth = get(&app, "/", Some(&pair)).await;
    assert_eq!(fourth.body, "3");
    let cookie = session_cookie(&fourth);
    assert_expires_matches_record(&cookie, &store.record(&cookie.session_id()).await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// .destroy()

// upstream: req.session > .destroy() > "should destroy the previous session"
#[tokio::test]
async fn destroy_should_destroy_the_previous_session() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            session.destroy().await?;
            Ok::<_, Error>(match session.id().await? {
                Some(_) => "defined",
                None => "undefined",
            })
        },
    );
    let reply = get(&app, "/", None).await;
    assert_eq!(reply.body, "undefined");
    assert_no_cookie(&reply);
    assert_eq!(store.len().await, 0);
    // express calls `store.destroy` even for a session it never saved; we skip that no-op.
    assert_eq!(
        store.counts.all(),
        (0, 0, 0, 0),
        "(get, set, touch, destroy)"
    );
}

// Ours: destroying a session the client holds also expires its cookie (lib.rs differences
// table: express 1 leaves it, express 2 expires it).
#[tokio::test]
async fn destroy_of_an_existing_session_expires_the_client_cookie() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |uri: Uri, session: Session| async move {
            if uri.path() == "/logout" {
                session.destroy().await?;
                return Ok::<_, Error>("bye".to_owned());
            }
            count_hits(session).await
        },
    );
    let first = get(&app, "/", None).await;
    let id = session_cookie(&first).session_id();
    store.counts.reset();
    let reply = get(&app, "/logout", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(reply.body, "bye");
    let cookie = session_cookie(&reply);
    assert_eq!(cookie.value, "");
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "HttpOnly"]);
    assert_eq!(cookie.expires(), Some("Thu, 01 Jan 1970 00:00:00 GMT"));
    assert!(store.record(&id).await.is_none());
    assert_eq!(
        store.counts.all(),
        (1, 0, 0, 1),
        "(get, set, touch, destroy)"
    );
}

// express-session behaviour (docs/behaviour.md): "destroy + `unset:'destroy'` double destroy"
// Ours: express destroys twice (once in `destroy()`, again at the end because `req.session` is
// gone); we destroy once (decide.rs: a destroyed session has nothing left to decide).
#[tokio::test]
async fn destroy_with_unset_destroy_destroys_once() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_unset(Unset::Destroy)
            .build()
            .unwrap(),
        |uri: Uri, session: Session| async move {
            if uri.path() == "/logout" {
                session.destroy().await?;
                return Ok::<_, Error>("bye".to_owned());
            }
            count_hits(session).await
        },
    );
    let first = get(&app, "/", None).await;
    store.counts.reset();
    let reply = get(&app, "/logout", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(reply.body, "bye");
    assert_eq!(
        store.counts.all(),
        (1, 0, 0, 1),
        "(get, set, touch, destroy)"
    );
    assert_eq!(store.len().await, 0);
}

// ---------------------------------------------------------------------------------------------
// .regenerate()

// upstream: req.session > .regenerate() > "should destroy/replace the previous session"
#[tokio::test]
async fn regenerate_should_destroy_and_replace_the_previous_session() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            let id = session.id().await?;
            session.regenerate().await?;
            Ok::<_, Error>((session.id().await? == id).to_string())
        },
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "false");
    let first_id = session_cookie(&first).session_id();
    assert!(store.record(&first_id).await.is_some());

    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(second.body, "false");
    let cookie = session_cookie(&second);
    assert_ne!(cookie.session_id(), first_id);
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "HttpOnly"]);
    assert_expires_matches_record(&cookie, &store.record(&cookie.session_id()).await.unwrap());
    assert!(
        store.record(&first_id).await.is_none(),
        "old record destroyed"
    );
    assert_eq!(store.len().await, 1);
    assert_eq!(
        store.counts.all(),
        (1, 1, 0, 1),
        "(get, set, touch, destroy)"
    );
}

// express-session behaviour (docs/behaviour.md): "regenerate double save"
// express: `regenerate()` + `save()` ⇒ destroy, set, set (the regenerated session's save is not
// wrapped). Ours saves twice as well (the new id differs from the loaded one, so the explicit save
// does not count as "saved as loaded"), and destroys the old record after the first save instead
// of before (lib.rs differences table).
#[tokio::test]
async fn regenerate_then_save_saves_twice() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |uri: Uri, session: Session| async move {
            if uri.path() == "/login" {
                session.regenerate().await?;
                session.insert("user", "bob").await?;
                session.save().await?;
                return Ok::<_, Error>("logged in".to_owned());
            }
            count_hits(session).await
        },
    );
    let first = get(&app, "/", None).await;
    let old_id = session_cookie(&first).session_id();
    store.counts.reset();
    let reply = get(&app, "/login", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(reply.body, "logged in");
    assert_eq!(
        store.counts.all(),
        (1, 2, 0, 1),
        "(get, set, touch, destroy)"
    );
    let cookie = session_cookie(&reply);
    assert_ne!(cookie.session_id(), old_id);
    assert!(store.record(&old_id).await.is_none());
    let record = store.record(&cookie.session_id()).await.unwrap();
    assert_eq!(
        record.data().keys().collect::<Vec<_>>(),
        ["user"],
        "a fresh session"
    );
}

// Ours only: `regenerate_keep_data` (lib.rs differences table) gives a new id, same data.
#[tokio::test]
async fn regenerate_keep_data_keeps_the_data_under_a_new_id() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |uri: Uri, session: Session| async move {
            if uri.path() == "/login" {
                session.regenerate_keep_data().await?;
            }
            count_hits(session).await
        },
    );
    let first = get(&app, "/", None).await;
    let old_id = session_cookie(&first).session_id();
    let reply = get(&app, "/login", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(reply.body, "hits: 2");
    let new_id = session_cookie(&reply).session_id();
    assert_ne!(new_id, old_id);
    assert!(store.record(&old_id).await.is_none());
    let record = store.record(&new_id).await.unwrap();
    assert_eq!(record.data()["count"], serde_json::json!(2));
}

// ---------------------------------------------------------------------------------------------
// .reload()

// upstream: req.session > .reload() > "should reload session from store"
#[tokio::test]
async fn reload_should_reload_session_from_store() {
    let store = CountingStore::new();
    let server: Arc<OnceLock<Router>> = Arc::new(OnceLock::new());
    let this_server = Arc::clone(&server);
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        move |uri: Uri, headers: HeaderMap, session: Session| {
            let server = Arc::clone(&this_server);
            async move {
                if uri.path() == "/" {
                    session.insert("active", true).await?;
                    return Ok::<_, Error>("session created".to_owned());
                }
                session.insert("url", uri.path()).await?;
                if uri.path() == "/bar" {
                    return Ok(format!("saw {}", uri.path()));
                }
                // A concurrent request on the same session writes `url = /bar`.
                let cookie = headers[http::header::COOKIE].to_str().unwrap();
                let other = get(server.get().unwrap(), "/bar", Some(cookie)).await;
                assert_eq!(
                    (other.status, other.body.as_str()),
                    (StatusCode::OK, "saw /bar")
                );
                session.reload().await?;
                let url: String = session.get("url").await?.unwrap();
                Ok(format!("saw {url}"))
            }
        },
    );
    server.set(app.clone()).unwrap();
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "session created");
    let reply = get(&app, "/foo", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "saw /bar")
    );
    let id = session_cookie(&first).session_id();
    assert_eq!(
        store.record(&id).await.unwrap().data()["url"],
        serde_json::json!("/bar")
    );
}

// upstream: req.session > .reload() > "should error is session missing"
// Ours: `reload` returns `Error::NotFound` ("failed to load session: not in the store"); it is
// the handler's error to answer, not a store failure.
#[tokio::test]
async fn reload_should_error_if_session_missing() {
    let store = CountingStore::new();
    let this_store = store.clone();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        move |uri: Uri, session: Session| {
            let store = this_store.clone();
            async move {
                if uri.path() == "/" {
                    session.insert("active", true).await?;
                    return Ok::<_, Error>((StatusCode::OK, "session created".to_owned()));
                }
                session.id().await?;
                store.clear().await.unwrap();
                Ok(match session.reload().await {
                    Ok(()) => (StatusCode::OK, String::new()),
                    Err(error) => {
                        assert!(matches!(error, Error::NotFound));
                        (StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
                    }
                })
            }
        },
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "session created");
    let reply = get(&app, "/foo", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body, "failed to load session: not in the store");
    assert!(reply.body.starts_with("failed to load session"));
    // The cleared session is not brought back by the end-of-request save.
    assert_eq!(store.len().await, 0);
}

// upstream: req.session > .reload() > "should not override an overridden `reload` in case of errors"
// Ours: nothing is overridden; repeated failing reloads must simply keep failing cleanly.
#[tokio::test]
async fn reload_should_survive_repeated_failing_reloads() {
    let store = CountingStore::new();
    let this_store = store.clone();
    let app = app_with(
        upstream_builder(store.clone())
            .with_resave(false)
            .build()
            .unwrap(),
        move |uri: Uri, session: Session| {
            let store = this_store.clone();
            async move {
                if uri.path() == "/" {
                    session.insert("active", true).await?;
                    return Ok::<_, Error>("session created");
                }
                session.id().await?;
                store.clear().await.unwrap();
                for _ in 1..20 {
                    match session.reload().await {
                        Err(Error::NotFound) => {}
                        other => panic!("expected NotFound, got {other:?}"),
                    }
                }
                Ok("ok")
            }
        },
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "session created");
    store.counts.reset();
    let reply = get(&app, "/foo", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(store.counts.get(), 20, "one load and 19 reloads");
}

// ---------------------------------------------------------------------------------------------
// .save()

// upstream: req.session > .save() > "should save session to store"
#[tokio::test]
async fn save_should_save_session_to_store() {
    let store = CountingStore::new();
    let this_store = store.clone();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        move |session: Session| {
            let store = this_store.clone();
            async move {
                session.insert("hit", true).await?;
                session.save().await?;
                let id = session.id().await?.unwrap();
                Ok::<_, Error>(match store.record(id.as_str()).await {
                    Some(_) => "stored",
                    None => "empty",
                })
            }
        },
    );
    let reply = get(&app, "/", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "stored")
    );
    assert_eq!(store.counts.set(), 1);
}

/// upstream: `req.session.hit = true; req.session.save(cb → res.end('saved'))`.
async fn hit_and_save(session: Session) -> Result<&'static str, Error> {
    session.insert("hit", true).await?;
    session.save().await?;
    Ok("saved")
}

// upstream: req.session > .save() > "should prevent end-of-request save"
// Also express-session's behaviour "explicit save + end touch": on an existing session the explicit save
// is followed by a touch, not a second set.
#[tokio::test]
async fn save_should_prevent_end_of_request_save() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        hit_and_save,
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "saved");
    session_cookie(&first);
    assert_eq!(
        store.counts.all(),
        (0, 1, 0, 0),
        "(get, set, touch, destroy)"
    );
    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(second.body, "saved");
    assert_eq!(
        store.counts.all(),
        (1, 1, 1, 0),
        "(get, set, touch, destroy)"
    );
}

// upstream: req.session > .save() > "should prevent end-of-request save on reloaded session"
#[tokio::test]
async fn save_should_prevent_end_of_request_save_on_reloaded_session() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            session.insert("hit", true).await?;
            // upstream ignores the reload error (a new session is not in the store yet).
            let _ = session.reload().await;
            session.save().await?;
            Ok::<_, Error>("saved")
        },
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "saved");
    assert_eq!(store.counts.set(), 1);
    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(second.body, "saved");
    assert_eq!(store.counts.set(), 1);
    assert_eq!(store.counts.get(), 2, "load and reload");
}

// upstream: req.session > .save() > when saveUninitialized is false > "should prevent end-of-request save"
#[tokio::test]
async fn save_with_save_uninitialized_false_should_prevent_end_of_request_save() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_save_uninitialized(false)
            .build()
            .unwrap(),
        hit_and_save,
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "saved");
    session_cookie(&first);
    assert_eq!(store.counts.set(), 1);
    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(second.body, "saved");
    assert_eq!(store.counts.set(), 1);
}

// ---------------------------------------------------------------------------------------------
// .touch()

// upstream: req.session > .touch() > "should reset session expiration"
// Upstream reads the stored `cookie.expires` before and after a later request. With an
// express-style store (RawStore: `touch` rewrites the stored cookie) we check exactly that. With
// our MemoryStore the stored JSON is not rewritten by `touch` (only the entry's expiry moves), so
// there we check the observable effect: the session outlives its original expiry.
#[tokio::test]
async fn touch_should_reset_session_expiration() {
    async fn hit_and_touch(session: Session) -> Result<&'static str, Error> {
        session.insert("hit", true).await?;
        session.touch().await?;
        Ok("")
    }

    let store = RawStore::new();
    let app = app_with(
        harness_builder(store.clone())
            .with_save_uninitialized(true)
            .build()
            .unwrap(),
        hit_and_touch,
    );
    let first = get(&app, "/", None).await;
    let id = session_cookie(&first).session_id();
    let stored = |json: String| cloakroom::Record::from_json(&json).unwrap();
    let original = stored(store.raw(&id).unwrap()).cookie().expires().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_no_cookie(&second);
    let touched = stored(store.raw(&id).unwrap()).cookie().expires().unwrap();
    assert!(touched.millis_since(original) >= 20, "stored expiry moved");

    // MemoryStore: maxAge 80 ms; touched at ~40 ms, the session is still there at ~90 ms.
    let store = CountingStore::new();
    let app = app_with(
        harness_builder(store.clone())
            .with_save_uninitialized(true)
            .with_cookie(max_age(80))
            .build()
            .unwrap(),
        |session: Session| async move {
            let hit = session.get::<bool>("hit").await?.is_some();
            session.insert("hit", true).await?;
            session.touch().await?;
            Ok::<_, Error>(hit.to_string())
        },
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "false");
    let pair = first.cookie_pair("connect.sid");
    tokio::time::sleep(Duration::from_millis(40)).await;
    store.counts.reset();
    let second = get(&app, "/", Some(&pair)).await;
    assert_eq!(second.body, "true");
    assert_eq!(
        store.counts.all(),
        (1, 0, 1, 0),
        "(get, set, touch, destroy)"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third = get(&app, "/", Some(&pair)).await;
    assert_eq!(third.body, "true", "still alive past the original expiry");
}

// ---------------------------------------------------------------------------------------------
// .cookie / .*

// upstream: req.session > .cookie > .* > "should serialize as parameters"
#[tokio::test]
async fn cookie_should_serialize_as_parameters() {
    let app = app_with(
        upstream_builder(CountingStore::new())
            .with_proxy(true)
            .build()
            .unwrap(),
        |session: Session| async move {
            session
                .update_cookie(|c| {
                    c.set_http_only(false);
                    c.set_secure(Some(true));
                })
                .await?;
            Ok::<_, Error>("")
        },
    );
    let reply = send(
        &app,
        request_to("/", None, &[("x-forwarded-proto", "https")]),
    )
    .await;
    let cookie = session_cookie(&reply);
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "Secure"]);
}

// upstream: req.session > .cookie > .* > "should default to a browser-session length cookie"
#[tokio::test]
async fn cookie_should_default_to_a_browser_session_length_cookie() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_cookie(CookieOptions::new().with_path("/admin"))
            .build()
            .unwrap(),
        use_session,
    );
    let cookie = session_cookie(&get(&app, "/admin", None).await);
    assert_eq!(cookie.attribute_names(), ["Path", "HttpOnly"]);
    assert_eq!(cookie.attribute("Path"), Some(Some("/admin")));
    let json = store.record(&cookie.session_id()).await.unwrap().to_json();
    assert_eq!(
        json,
        r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/admin"}}"#
    );
}

// upstream: req.session > .cookie > .* > "should Set-Cookie only once for browser-session cookies"
#[tokio::test]
async fn cookie_should_set_cookie_only_once_for_browser_session_cookies() {
    let app = app_with(
        upstream_builder(CountingStore::new())
            .with_cookie(CookieOptions::new().with_path("/admin"))
            .build()
            .unwrap(),
        use_session,
    );
    let first = get(&app, "/admin/foo", None).await;
    session_cookie(&first);
    let second = get(&app, "/admin", Some(&first.cookie_pair("connect.sid"))).await;
    assert_no_cookie(&second);
}

// upstream: req.session > .cookie > .* > "should override defaults"
#[tokio::test]
async fn cookie_should_override_defaults() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_cookie(
                max_age(5000)
                    .with_http_only(false)
                    .with_path("/admin")
                    .with_priority(Priority::High)
                    .with_secure(true),
            )
            .build()
            .unwrap(),
        |session: Session| async move {
            session.update_cookie(|c| c.set_secure(Some(false))).await?;
            Ok::<_, Error>("")
        },
    );
    let before = Timestamp::now();
    let reply = get(&app, "/admin", None).await;
    let after = Timestamp::now();
    let cookie = session_cookie(&reply);
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "Priority"]);
    assert_eq!(cookie.attribute("Path"), Some(Some("/admin")));
    assert_eq!(cookie.attribute("Priority"), Some(Some("High")));
    let record = store.record(&cookie.session_id()).await.unwrap();
    let expires = assert_expires_matches_record(&cookie, &record);
    assert!(expires >= before.add_millis(5000) && expires <= after.add_millis(5000));
}

// upstream: req.session > .cookie > .* > "should forward errors setting cookie"
// Ours: an invalid `expires` cannot be expressed (`SystemTime`), and an invalid domain in the
// options is refused when the layer is built. One set on a session at run time makes the cookie
// unserializable: as in express, the response completes without the cookie (the error is logged,
// express passes it to `next`), and the session is still saved.
#[tokio::test]
async fn cookie_should_forward_errors_setting_cookie() {
    let invalid = SessionLayer::builder(MemoryStore::new())
        .with_secret(SECRET)
        .with_cookie(max_age(60_000).with_domain("bad domain"))
        .build()
        .unwrap_err();
    assert_eq!(invalid, ConfigError::InvalidDomain);

    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            session
                .update_cookie(|c| c.set_domain(Some("bad domain".into())))
                .await?;
            Ok::<_, Error>("")
        },
    );
    let reply = get(&app, "/admin", None).await;
    assert_no_cookie(&reply);
    assert_eq!(store.counts.set(), 1);
    assert_eq!(store.len().await, 1);
}

// upstream: req.session > .cookie > .* > "should preserve cookies set before writeHead is called"
#[tokio::test]
async fn cookie_should_preserve_cookies_set_before_write_head() {
    let app = app_with(
        upstream_builder(CountingStore::new()).build().unwrap(),
        |session: Session| async move {
            session.id().await?;
            // express's `new Cookie().serialize('previous', 'cookieValue')`.
            Ok::<_, Error>([(SET_COOKIE, "previous=cookieValue; Path=/; HttpOnly")])
        },
    );
    let reply = get(&app, "/", None).await;
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 2);
    assert_eq!(
        (cookies[0].name.as_str(), cookies[0].value.as_str()),
        ("previous", "cookieValue")
    );
    assert_eq!(cookies[0].raw, "previous=cookieValue; Path=/; HttpOnly");
    assert_eq!(cookies[1].name, "connect.sid", "ours goes last");
}

// upstream: req.session > .cookie > .* > "should preserve cookies set in writeHead"
// Ours: `writeHead` is building the whole response with its headers; here with two cookies of
// its own, both kept in order before ours.
#[tokio::test]
async fn cookie_should_preserve_cookies_set_in_write_head() {
    let app = app_with(
        upstream_builder(CountingStore::new()).build().unwrap(),
        |session: Session| async move {
            session.id().await?;
            let response = http::Response::builder()
                .status(StatusCode::OK)
                .header(SET_COOKIE, "previous=cookieValue; Path=/; HttpOnly")
                .header(SET_COOKIE, "other=1")
                .body(axum::body::Body::empty())
                .unwrap();
            Ok::<_, Error>(response.into_response())
        },
    );
    let reply = get(&app, "/", None).await;
    let names: Vec<_> = reply.set_cookies().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["previous", "other", "connect.sid"]);
    assert_eq!(reply.set_cookies()[0].value, "cookieValue");
}

// ---------------------------------------------------------------------------------------------
// .cookie / .originalMaxAge

/// upstream `res.end(JSON.stringify(req.session.cookie.originalMaxAge))`.
async fn show_original_max_age(session: Session) -> Result<String, Error> {
    let cookie = session.cookie().await?.unwrap();
    Ok(match cookie.original_max_age() {
        Some(max_age) => max_age.as_millis().to_string(),
        None => "null".to_owned(),
    })
}

// upstream: req.session > .cookie > .originalMaxAge > "should equal original maxAge"
// Ours is exact (upstream accepts 2000 or 1999: lib.rs differences table).
#[tokio::test]
async fn original_max_age_should_equal_original_max_age() {
    let app = app_with(
        upstream_builder(CountingStore::new())
            .with_cookie(max_age(2000))
            .build()
            .unwrap(),
        show_original_max_age,
    );
    let reply = get(&app, "/", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "2000")
    );
}

// upstream: req.session > .cookie > .originalMaxAge > "should equal original maxAge for all requests"
#[tokio::test]
async fn original_max_age_should_equal_original_max_age_for_all_requests() {
    let app = app_with(
        upstream_builder(CountingStore::new())
            .with_cookie(max_age(2000))
            .build()
            .unwrap(),
        show_original_max_age,
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "2000");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "2000")
    );
}

// upstream: req.session > .cookie > .originalMaxAge > "should equal original maxAge for all requests"
// (the second test of that name: upstream's SmartStore returns `expires` as a Date; ours is a
// store that keeps express's JSON text, RawStore)
#[tokio::test]
async fn original_max_age_should_equal_original_max_age_for_all_requests_json_store() {
    let store = RawStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_cookie(max_age(2000))
            .build()
            .unwrap(),
        show_original_max_age,
    );
    let first = get(&app, "/", None).await;
    assert_eq!(first.body, "2000");
    let id = session_cookie(&first).session_id();
    assert!(
        store
            .raw(&id)
            .unwrap()
            .starts_with(r#"{"cookie":{"originalMaxAge":2000,"expires":""#)
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "2000")
    );
}

// ---------------------------------------------------------------------------------------------
// .cookie / .secure

/// upstream: `createRequestListener({ secret: 'keyboard cat', cookie: { secure: true } })`.
fn secure_cookie_app(store: CountingStore) -> Router {
    app_with(
        upstream_builder(store)
            .with_cookie(CookieOptions::new().with_secure(true))
            .build()
            .unwrap(),
        use_session,
    )
}

// upstream: req.session > .cookie > .secure > "should set cookie when secure"
// Ours: upstream's real HTTPS server becomes the SecureConnection extension a TLS acceptor sets.
#[tokio::test]
async fn secure_should_set_cookie_when_secure() {
    let app = secure_cookie_app(CountingStore::new());
    let mut request = request_to("/", None, &[]);
    request.extensions_mut().insert(SecureConnection);
    let cookie = session_cookie(&send(&app, request).await);
    assert_eq!(cookie.attribute_names(), ["Path", "HttpOnly", "Secure"]);
}

// upstream: req.session > .cookie > .secure > "should not set-cookie when insecure"
#[tokio::test]
async fn secure_should_not_set_cookie_when_insecure() {
    let store = CountingStore::new();
    let app = secure_cookie_app(store.clone());
    assert_no_cookie(&get(&app, "/", None).await);
}

// ---------------------------------------------------------------------------------------------
// .cookie / .maxAge

/// upstream's `.maxAge` server: `switch (++req.session.count)`: 1 → nothing, 2 → maxAge 5000,
/// 3 → maxAge 3000000000, else count = 0 (the `before` request, where `++undefined` is NaN).
fn max_age_app(store: CountingStore) -> Router {
    app_with(
        upstream_builder(store)
            .with_cookie(max_age(2000))
            .build()
            .unwrap(),
        |session: Session| async move {
            let mut count = session.get::<u64>("count").await?.map_or(0, |c| c + 1);
            match count {
                1 => {}
                2 => {
                    session
                        .update_cookie(|c| c.set_max_age(Some(Duration::from_millis(5000))))
                        .await?
                }
                3 => {
                    session
                        .update_cookie(|c| {
                            c.set_max_age(Some(Duration::from_millis(3_000_000_000)))
                        })
                        .await?
                }
                _ => count = 0,
            }
            session.insert("count", count).await?;
            Ok::<_, Error>(count.to_string())
        },
    )
}

/// Runs upstream's `before` request and the earlier tests' requests, returning the cookie pair
/// to continue with.
async fn max_age_session(app: &Router, earlier_requests: usize) -> String {
    let before = get(app, "/", None).await;
    assert_eq!(before.body, "0");
    let pair = before.cookie_pair("connect.sid");
    for expected in 1..=earlier_requests {
        assert_eq!(get(app, "/", Some(&pair)).await.body, expected.to_string());
    }
    pair
}

// upstream: req.session > .cookie > .maxAge > "should set cookie expires relative to maxAge"
#[tokio::test]
async fn max_age_should_set_cookie_expires_relative_to_max_age() {
    let store = CountingStore::new();
    let app = max_age_app(store.clone());
    let pair = max_age_session(&app, 0).await;
    let before = Timestamp::now();
    let reply = get(&app, "/", Some(&pair)).await;
    let after = Timestamp::now();
    assert_eq!(reply.body, "1");
    assert_expires_in(&reply, &store, before, after, 2000).await;
}

// upstream: req.session > .cookie > .maxAge > "should modify cookie expires when changed"
#[tokio::test]
async fn max_age_should_modify_cookie_expires_when_changed() {
    let store = CountingStore::new();
    let app = max_age_app(store.clone());
    let pair = max_age_session(&app, 1).await;
    let before = Timestamp::now();
    let reply = get(&app, "/", Some(&pair)).await;
    let after = Timestamp::now();
    assert_eq!(reply.body, "2");
    assert_expires_in(&reply, &store, before, after, 5000).await;
}

// upstream: req.session > .cookie > .maxAge > "should modify cookie expires when changed to large value"
#[tokio::test]
async fn max_age_should_modify_cookie_expires_when_changed_to_large_value() {
    let store = CountingStore::new();
    let app = max_age_app(store.clone());
    let pair = max_age_session(&app, 2).await;
    let before = Timestamp::now();
    let reply = get(&app, "/", Some(&pair)).await;
    let after = Timestamp::now();
    assert_eq!(reply.body, "3");
    assert_expires_in(&reply, &store, before, after, 3_000_000_000).await;
}

// ---------------------------------------------------------------------------------------------
// .cookie / .expires

// upstream: req.session > .cookie > .expires > when given a Date > "should set absolute"
#[tokio::test]
async fn expires_when_given_a_date_should_set_absolute() {
    let app = app_with(
        upstream_builder(CountingStore::new()).build().unwrap(),
        |session: Session| async move {
            session
                .update_cookie(|c| c.set_expires(Some(Timestamp::EPOCH)))
                .await?;
            Ok::<_, Error>("")
        },
    );
    let cookie = session_cookie(&get(&app, "/", None).await);
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "HttpOnly"]);
    assert_eq!(cookie.expires(), Some("Thu, 01 Jan 1970 00:00:00 GMT"));
}

/// upstream: `req.session.cookie.expires = null`, optionally also `hit++`.
fn expires_null_app(store: CountingStore, modify: bool) -> Router {
    app_with(
        upstream_builder(store).build().unwrap(),
        move |session: Session| async move {
            session.update_cookie(|c| c.set_expires(None)).await?;
            if modify {
                let hit = session.get::<u64>("hit").await?.unwrap_or(0) + 1;
                session.insert("hit", hit).await?;
            }
            Ok::<_, Error>("")
        },
    )
}

// upstream: req.session > .cookie > .expires > when null > "should be a browser-session cookie"
#[tokio::test]
async fn expires_when_null_should_be_a_browser_session_cookie() {
    let store = CountingStore::new();
    let app = expires_null_app(store.clone(), false);
    let cookie = session_cookie(&get(&app, "/", None).await);
    assert_eq!(cookie.attribute_names(), ["Path", "HttpOnly"]);
    let record = store.record(&cookie.session_id()).await.unwrap();
    assert_eq!(
        record.to_json(),
        r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}}"#
    );
}

// upstream: req.session > .cookie > .expires > when null > "should not reset cookie"
#[tokio::test]
async fn expires_when_null_should_not_reset_cookie() {
    let store = CountingStore::new();
    let app = expires_null_app(store.clone(), false);
    let first = get(&app, "/", None).await;
    assert_eq!(
        session_cookie(&first).attribute_names(),
        ["Path", "HttpOnly"]
    );
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_no_cookie(&second);
}

// upstream: req.session > .cookie > .expires > when null > "should not reset cookie when modified"
#[tokio::test]
async fn expires_when_null_should_not_reset_cookie_when_modified() {
    let store = CountingStore::new();
    let app = expires_null_app(store.clone(), true);
    let first = get(&app, "/", None).await;
    let id = session_cookie(&first).session_id();
    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_no_cookie(&second);
    assert_eq!(store.counts.set(), 1, "saved, just not re-sent");
    let record = store.record(&id).await.unwrap();
    assert_eq!(record.data()["hit"], serde_json::json!(2));
}

// ---------------------------------------------------------------------------------------------
// .cookie / .partitioned

fn partitioned_app(store: CountingStore, partitioned: Option<bool>) -> Router {
    let mut cookie = max_age(60_000);
    if let Some(partitioned) = partitioned {
        // Ours: `build` refuses `Partitioned` without `Secure` (browsers drop such a cookie);
        // `secure: 'auto'` leaves a plain-HTTP request's cookie as upstream's.
        cookie = cookie.with_partitioned(partitioned).with_secure_auto();
    }
    app_with(
        upstream_builder(store).with_cookie(cookie).build().unwrap(),
        use_session,
    )
}

// upstream: req.session > .cookie > .partitioned > by default > "should not set partitioned attribute"
#[tokio::test]
async fn partitioned_by_default_should_not_set_partitioned_attribute() {
    let store = CountingStore::new();
    let app = partitioned_app(store.clone(), None);
    let cookie = session_cookie(&get(&app, "/", None).await);
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "HttpOnly"]);
    let json = store.record(&cookie.session_id()).await.unwrap().to_json();
    assert!(!json.contains("partitioned"), "{json}");
}

// upstream: req.session > .cookie > .partitioned > when "false" > "should not set partitioned attribute"
#[tokio::test]
async fn partitioned_when_false_should_not_set_partitioned_attribute() {
    let store = CountingStore::new();
    let app = partitioned_app(store.clone(), Some(false));
    let cookie = session_cookie(&get(&app, "/", None).await);
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "HttpOnly"]);
    let json = store.record(&cookie.session_id()).await.unwrap().to_json();
    assert!(
        json.starts_with(r#"{"cookie":{"originalMaxAge":60000,"partitioned":false,"expires":"#),
        "{json}"
    );
}

// upstream: req.session > .cookie > .partitioned > when "true" > "should set partitioned attribute"
#[tokio::test]
async fn partitioned_when_true_should_set_partitioned_attribute() {
    let store = CountingStore::new();
    let app = partitioned_app(store.clone(), Some(true));
    let cookie = session_cookie(&get(&app, "/", None).await);
    assert_eq!(
        cookie.attribute_names(),
        ["Path", "Expires", "HttpOnly", "Partitioned"]
    );
    let record = store.record(&cookie.session_id()).await.unwrap();
    assert_expires_matches_record(&cookie, &record);
    assert!(
        record
            .to_json()
            .starts_with(r#"{"cookie":{"originalMaxAge":60000,"partitioned":true,"expires":"#)
    );
}
