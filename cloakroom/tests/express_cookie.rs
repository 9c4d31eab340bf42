//! express-session's `test/cookie.js` (`new Cookie()`), ported to cloakroom: express's `Cookie`
//! class is our `CookieOptions` (the template) and `SessionCookie` (a session's cookie, as
//! `req.session.cookie`). Each test builds a layer from the options, reads the new session's
//! cookie in a handler through a `Router`, and checks the `Set-Cookie` it produces.
//!
//! Not applicable (upstream title, reason):
//! - new Cookie() > with options > "should reject non-objects": `CookieOptions` is a typed
//!   builder; `42`, `'foo'`, `true` or a function do not compile.
//! - new Cookie() > with options > "should ignore "data" option": there is no `data` option to
//!   pass.
//! - new Cookie() > maxAge > "should accept Date object": `with_max_age` takes a `Duration`; a
//!   date is `with_expires`.
//! - new Cookie() > maxAge > "should reject invalid types": typed (`Duration`); strings,
//!   booleans and functions do not compile.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use cloakroom::{CookieOptions, Error, Priority, Session, SessionCookie, SessionLayer, Timestamp};
use common::*;
use http::StatusCode;
use serde_json::{Value, json};

/// The new session's `req.session.cookie` as JSON (express's `cookie.toJSON()`), plus the
/// `maxAge` getter (time left, ms) as express exposes it.
async fn describe_cookie(session: Session) -> Result<String, Error> {
    let cookie = session.cookie().await?.expect("a live session");
    let max_age = cookie.max_age().map(|d| d.as_millis() as u64);
    Ok(json!({ "cookie": cookie, "maxAge": max_age }).to_string())
}

fn app(options: CookieOptions) -> Router {
    let layer = SessionLayer::builder(CountingStore::new())
        .with_secret(SECRET)
        .with_save_uninitialized(true)
        .with_cookie(options)
        .build()
        .unwrap();
    app_with(layer, describe_cookie)
}

/// Requests `path`; returns the described cookie and the `Set-Cookie` it produced.
async fn new_cookie_at(options: CookieOptions, path: &str) -> (Value, SetCookie) {
    let reply = get(&app(options), path, None).await;
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    let described: Value = serde_json::from_str(&reply.body).unwrap();
    let set_cookie = reply
        .session_cookie("connect.sid")
        .expect("the new session's cookie is sent");
    (described, set_cookie)
}

async fn new_cookie(options: CookieOptions) -> (Value, SetCookie) {
    new_cookie_at(options, "/").await
}

/// express's `new Cookie()` as JSON.
const DEFAULT_COOKIE_JSON: &str =
    r#"{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}"#;

// upstream: new Cookie() > "should create a new cookie object"
#[tokio::test]
async fn should_create_a_new_cookie_object() {
    let (described, set_cookie) = new_cookie(CookieOptions::new()).await;
    assert!(described["cookie"].is_object());
    assert_eq!(described["cookie"].to_string(), DEFAULT_COOKIE_JSON);
    // The same as the type's own default.
    assert_eq!(
        serde_json::to_string(&SessionCookie::default()).unwrap(),
        DEFAULT_COOKIE_JSON
    );
    assert_eq!(set_cookie.attribute_names(), ["Path", "HttpOnly"]);
}

// upstream: new Cookie() > "should default expires to null"
#[tokio::test]
async fn should_default_expires_to_null() {
    let (described, set_cookie) = new_cookie(CookieOptions::new()).await;
    assert_eq!(described["cookie"]["expires"], Value::Null);
    assert_eq!(SessionCookie::default().expires(), None);
    assert!(!set_cookie.has("Expires"));
}

// upstream: new Cookie() > "should default httpOnly to true"
#[tokio::test]
async fn should_default_http_only_to_true() {
    let (described, set_cookie) = new_cookie(CookieOptions::new()).await;
    assert_eq!(described["cookie"]["httpOnly"], json!(true));
    assert!(SessionCookie::default().http_only());
    assert_eq!(set_cookie.attribute("HttpOnly"), Some(None));
}

// upstream: new Cookie() > "should default path to "/""
#[tokio::test]
async fn should_default_path_to_root() {
    let (described, set_cookie) = new_cookie(CookieOptions::new()).await;
    assert_eq!(described["cookie"]["path"], json!("/"));
    assert_eq!(SessionCookie::default().path(), "/");
    assert_eq!(set_cookie.attribute("Path"), Some(Some("/")));
}

// upstream: new Cookie() > "should default maxAge to null"
#[tokio::test]
async fn should_default_max_age_to_null() {
    let (described, _) = new_cookie(CookieOptions::new()).await;
    assert_eq!(described["maxAge"], Value::Null);
    assert_eq!(described["cookie"]["originalMaxAge"], Value::Null);
    assert_eq!(SessionCookie::default().max_age(), None);
    assert_eq!(SessionCookie::default().original_max_age(), None);
}

// upstream: new Cookie() > with options > "should create a new cookie object"
// (`new Cookie({})`: empty options are the defaults)
#[tokio::test]
async fn with_options_should_create_a_new_cookie_object() {
    let (described, set_cookie) = new_cookie(CookieOptions::default()).await;
    assert!(described["cookie"].is_object());
    assert_eq!(described["cookie"].to_string(), DEFAULT_COOKIE_JSON);
    assert_eq!(set_cookie.attribute_names(), ["Path", "HttpOnly"]);
}

/// An instant an hour from now, on a whole second (so a few ms of drift keep the same
/// `Expires` text).
fn in_an_hour() -> SystemTime {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::from_secs(now.as_secs() + 3600)
}

// upstream: new Cookie() > expires > "should set expires"
#[tokio::test]
async fn expires_should_set_expires() {
    let expires = in_an_hour();
    let at = Timestamp::from_system_time(expires);
    let (described, set_cookie) = new_cookie(CookieOptions::new().with_expires(expires)).await;
    assert_eq!(described["cookie"]["expires"], json!(at.to_iso8601()));
    assert_eq!(
        set_cookie.attribute_names(),
        ["Path", "Expires", "HttpOnly"]
    );
    assert_eq!(set_cookie.expires(), Some(at.to_http_date().as_str()));
    assert_eq!(
        http_date_millis(set_cookie.expires().unwrap()),
        at.as_millis()
    );
}

// upstream: new Cookie() > expires > "should set maxAge"
#[tokio::test]
async fn expires_should_set_max_age() {
    let expires = in_an_hour();
    let remaining = expires
        .duration_since(SystemTime::now())
        .unwrap()
        .as_millis() as i64;
    let (described, _) = new_cookie(CookieOptions::new().with_expires(expires)).await;
    let max_age = described["maxAge"].as_i64().expect("maxAge is set");
    assert!(
        (remaining - max_age).abs() <= 1000,
        "maxAge {max_age} ≈ {remaining}"
    );
    let original = described["cookie"]["originalMaxAge"].as_i64().unwrap();
    assert!((remaining - original).abs() <= 1000);
}

// upstream: new Cookie() > httpOnly > "should set httpOnly"
#[tokio::test]
async fn http_only_should_set_http_only() {
    let (described, set_cookie) = new_cookie(CookieOptions::new().with_http_only(false)).await;
    assert_eq!(described["cookie"]["httpOnly"], json!(false));
    assert_eq!(set_cookie.attribute_names(), ["Path"]);
}

// upstream: new Cookie() > maxAge > "should set expires"
#[tokio::test]
async fn max_age_should_set_expires() {
    let before = Timestamp::now();
    let (described, set_cookie) =
        new_cookie(CookieOptions::new().with_max_age(Duration::from_millis(60_000))).await;
    let after = Timestamp::now();
    let expires =
        Timestamp::parse_iso8601(described["cookie"]["expires"].as_str().unwrap()).unwrap();
    assert!(expires >= before.add_millis(60_000) && expires <= after.add_millis(60_000));
    assert_eq!(
        set_cookie.attribute_names(),
        ["Path", "Expires", "HttpOnly"]
    );
    // The attribute is written from the expiry at commit time (a few ms later at most).
    let sent = http_date_millis(set_cookie.expires().unwrap());
    assert!(sent >= before.add_millis(60_000).as_millis() - 1000);
    assert!(sent <= after.add_millis(60_000).as_millis());
}

// upstream: new Cookie() > maxAge > "should set maxAge"
#[tokio::test]
async fn max_age_should_set_max_age() {
    let (described, _) =
        new_cookie(CookieOptions::new().with_max_age(Duration::from_millis(60_000))).await;
    let max_age = described["maxAge"].as_u64().unwrap();
    assert!((59_000..=60_000).contains(&max_age), "maxAge {max_age}");
    assert_eq!(described["cookie"]["originalMaxAge"], json!(60_000));
}

// upstream: new Cookie() > partitioned > "should set partitioned"
#[tokio::test]
async fn partitioned_should_set_partitioned() {
    // Ours: `build` refuses `Partitioned` without `Secure` (browsers drop such a cookie), so
    // the test asks for `secure: 'auto'`, which leaves a plain-HTTP request's cookie as
    // upstream's.
    let options = CookieOptions::new()
        .with_partitioned(true)
        .with_secure_auto();
    let (described, set_cookie) = new_cookie(options).await;
    assert_eq!(described["cookie"]["partitioned"], json!(true));
    assert_eq!(
        set_cookie.attribute_names(),
        ["Path", "HttpOnly", "Partitioned"]
    );
}

// upstream: new Cookie() > path > "should set path"
#[tokio::test]
async fn path_should_set_path() {
    let (described, set_cookie) =
        new_cookie_at(CookieOptions::new().with_path("/foo"), "/foo").await;
    assert_eq!(described["cookie"]["path"], json!("/foo"));
    assert_eq!(set_cookie.attribute("Path"), Some(Some("/foo")));
}

// upstream: new Cookie() > priority > "should set priority"
#[tokio::test]
async fn priority_should_set_priority() {
    let (described, set_cookie) =
        new_cookie(CookieOptions::new().with_priority(Priority::High)).await;
    assert_eq!(described["cookie"]["priority"], json!("high"));
    assert_eq!(
        set_cookie.attribute_names(),
        ["Path", "HttpOnly", "Priority"]
    );
    assert_eq!(set_cookie.attribute("Priority"), Some(Some("High")));
}
