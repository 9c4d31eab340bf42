//! express-session's `test/session.js` option describes (proxy, cookie, genid, key, name,
//! rolling, resave, saveUninitialized, secret, unset), ported to cloakroom through an axum
//! `Router`.
//!
//! Harness as upstream: secret `keyboard cat`, `cookie: { maxAge: 60000 }` unless the test sets
//! its own `cookie`. Upstream relies on express 1's defaults `resave: true, saveUninitialized:
//! true`; ours are false, so [`upstream_builder`] sets them explicitly. Our session is lazy, so
//! upstream's default handler (`res.end()`) becomes one that calls `session.id()`.
//!
//! A request is secure for us when it carries the `SecureConnection` extension (express:
//! `req.connection.encrypted`), or with `with_proxy(true)` when `X-Forwarded-Proto` says `https`.
//! Express's `req.secure` (its `trust proxy` setting) has no counterpart (lib.rs differences
//! table): where upstream sets `req.secure = true` with `proxy` unspecified, we use
//! `SecureConnection`.
//!
//! Not applicable (upstream title, reason):
//! - cookie option > when "cookie" is a function > "should call custom function and apply cookie
//!   options", "should provide req argument": `CookieOptions` is a static template; there is no
//!   per-request cookie function (express 1.19.0 feature not provided).
//! - genid option > "should reject non-function values": `with_genid` takes a closure; the
//!   compiler rejects anything else.
//! - unset option > "should reject unknown values": `Unset` is an enum; there are no unknown
//!   values.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use cloakroom::store::ErrorKind;
use cloakroom::{
    ConfigError, CookieOptions, Error, MemoryStore, SameSite, SecureConnection, Session,
    SessionLayer, SessionLayerBuilder, Unset,
};
use common::*;
use http::{Method, Request, StatusCode, Uri};

/// upstream's default `res.end()` handler; ours must use the session (lazy).
async fn use_session(session: Session) -> Result<&'static str, Error> {
    session.id().await?;
    Ok("")
}

/// For path-gated tests: a session exists only under the cookie path.
async fn use_session_if_any(session: Option<Session>) -> Result<&'static str, Error> {
    match session {
        Some(session) => {
            session.id().await?;
            Ok("session")
        }
        None => Ok("no session"),
    }
}

/// upstream `req.session.user = 'bob'; res.end()`.
async fn set_user_bob(session: Session) -> Result<&'static str, Error> {
    session.insert("user", "bob").await?;
    Ok("")
}

/// upstream's `secret option` handler: `set` on the first visit, then `get:"bob"`.
async fn set_then_get(session: Session) -> Result<String, Error> {
    match session.get::<String>("user").await? {
        None => {
            session.insert("user", "bob").await?;
            Ok("set".to_owned())
        }
        Some(user) => Ok(format!("get:{}", serde_json::to_string(&user).unwrap())),
    }
}

/// upstream `res.end(String(req.session.user))`.
async fn show_user(session: Session) -> Result<String, Error> {
    Ok(match session.get::<String>("user").await? {
        Some(user) => user,
        None => "undefined".to_owned(),
    })
}

/// A `GET /` marked as arriving over TLS (express: `req.connection.encrypted`, or `req.secure`).
fn secure_request() -> Request<Body> {
    let mut request = request_to("/", None, &[]);
    request.extensions_mut().insert(SecureConnection);
    request
}

fn cookie_options(max_age_ms: Option<u64>) -> CookieOptions {
    match max_age_ms {
        Some(ms) => CookieOptions::new().with_max_age(Duration::from_millis(ms)),
        None => CookieOptions::new(),
    }
}

fn app(layer: SessionLayer) -> Router {
    app_with(layer, use_session)
}

/// The session cookie, which must be there.
fn session_cookie(reply: &Reply) -> SetCookie {
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    reply
        .session_cookie("connect.sid")
        .unwrap_or_else(|| panic!("expected a Set-Cookie, got {:?}", reply.headers))
}

fn assert_no_cookie(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    assert!(
        reply.headers.get(http::header::SET_COOKIE).is_none(),
        "unexpected Set-Cookie: {:?}",
        reply.headers
    );
}

// ---------------------------------------------------------------------------------------------
// proxy option

/// upstream: `createServer({ proxy: true, cookie: { secure: true, maxAge: 5 }})`.
fn proxy_enabled_app(store: CountingStore) -> Router {
    app(upstream_builder(store)
        .with_proxy(true)
        .with_cookie(cookie_options(Some(5)).with_secure(true))
        .build()
        .unwrap())
}

// upstream: proxy option > when enabled > "should trust X-Forwarded-Proto when string"
#[tokio::test]
async fn proxy_enabled_should_trust_x_forwarded_proto_when_string() {
    let app = proxy_enabled_app(CountingStore::new());
    let reply = send(
        &app,
        request_to("/", None, &[("x-forwarded-proto", "https")]),
    )
    .await;
    let cookie = session_cookie(&reply);
    assert_eq!(
        cookie.attribute_names(),
        ["Path", "Expires", "HttpOnly", "Secure"]
    );
}

// upstream: proxy option > when enabled > "should trust X-Forwarded-Proto when comma-separated list"
#[tokio::test]
async fn proxy_enabled_should_trust_x_forwarded_proto_when_comma_separated_list() {
    let app = proxy_enabled_app(CountingStore::new());
    let reply = send(
        &app,
        request_to("/", None, &[("x-forwarded-proto", "https,http")]),
    )
    .await;
    assert!(session_cookie(&reply).has("Secure"));
    // Only the first value counts.
    let reply = send(
        &app,
        request_to("/", None, &[("x-forwarded-proto", "http,https")]),
    )
    .await;
    assert_no_cookie(&reply);
}

// upstream: proxy option > when enabled > "should work when no header"
#[tokio::test]
async fn proxy_enabled_should_work_when_no_header() {
    let app = proxy_enabled_app(CountingStore::new());
    assert_no_cookie(&get(&app, "/", None).await);
}

/// upstream: `createServer(setup, { proxy: false, cookie: { secure: true }})`.
fn proxy_disabled_app(store: CountingStore) -> Router {
    app(upstream_builder(store)
        .with_proxy(false)
        .with_cookie(cookie_options(None).with_secure(true))
        .build()
        .unwrap())
}

// upstream: proxy option > when disabled > "should not trust X-Forwarded-Proto"
#[tokio::test]
async fn proxy_disabled_should_not_trust_x_forwarded_proto() {
    let app = proxy_disabled_app(CountingStore::new());
    let reply = send(
        &app,
        request_to("/", None, &[("x-forwarded-proto", "https")]),
    )
    .await;
    assert_no_cookie(&reply);
}

// upstream: proxy option > when disabled > "should ignore req.secure"
// Ours: there is no `req.secure`; the port sends every client-side hint that some frameworks turn
// into `req.secure` (X-Forwarded-Proto, X-Forwarded-Ssl, Forwarded) and expects them ignored.
#[tokio::test]
async fn proxy_disabled_should_ignore_req_secure() {
    let app = proxy_disabled_app(CountingStore::new());
    let reply = send(
        &app,
        request_to(
            "/",
            None,
            &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-ssl", "on"),
                ("forwarded", "proto=https"),
            ],
        ),
    )
    .await;
    assert_no_cookie(&reply);
}

/// upstream: `createServer(setup, { cookie: { secure: true }})` (no `proxy`).
fn proxy_unspecified_app(store: CountingStore) -> Router {
    app(upstream_builder(store)
        .with_cookie(cookie_options(None).with_secure(true))
        .build()
        .unwrap())
}

// upstream: proxy option > when unspecified > "should not trust X-Forwarded-Proto"
#[tokio::test]
async fn proxy_unspecified_should_not_trust_x_forwarded_proto() {
    let app = proxy_unspecified_app(CountingStore::new());
    let reply = send(
        &app,
        request_to("/", None, &[("x-forwarded-proto", "https")]),
    )
    .await;
    assert_no_cookie(&reply);
}

// upstream: proxy option > when unspecified > "should use req.secure"
// Ours: `req.secure` becomes the SecureConnection extension (lib.rs differences table).
#[tokio::test]
async fn proxy_unspecified_should_use_req_secure() {
    let app = proxy_unspecified_app(CountingStore::new());
    let reply = send(&app, secure_request()).await;
    let cookie = session_cookie(&reply);
    assert_eq!(cookie.attribute_names(), ["Path", "HttpOnly", "Secure"]);
}

// ---------------------------------------------------------------------------------------------
// cookie option: path

/// upstream: `createServer({ cookie: { path: '/foo/bar' } })`.
fn foo_bar_layer(store: CountingStore) -> SessionLayer {
    upstream_builder(store)
        .with_cookie(cookie_options(None).with_path("/foo/bar"))
        .build()
        .unwrap()
}

// upstream: cookie option > when "path" set to "/foo/bar" > "should not set cookie for "/" request"
#[tokio::test]
async fn cookie_path_should_not_set_cookie_for_root_request() {
    let store = CountingStore::new();
    let app = app_with(foo_bar_layer(store.clone()), use_session_if_any);
    let reply = get(&app, "/", None).await;
    assert_no_cookie(&reply);
    assert_eq!(reply.body, "no session");
    assert_eq!(store.counts.all(), (0, 0, 0, 0));
}

// upstream: cookie option > when "path" set to "/foo/bar" > "should not set cookie for "http://foo/bar" request"
#[tokio::test]
async fn cookie_path_should_not_set_cookie_for_http_foo_bar_request() {
    let store = CountingStore::new();
    let app = app_with(foo_bar_layer(store.clone()), use_session_if_any);
    let reply = send(&app, request_to("/", None, &[("host", "http://foo/bar")])).await;
    assert_no_cookie(&reply);
    assert_eq!(reply.body, "no session");
}

// upstream: cookie option > when "path" set to "/foo/bar" > "should set cookie for "/foo/bar" request"
// (upstream requests `/foo/bar/baz` here, a slip; we request `/foo/bar`)
#[tokio::test]
async fn cookie_path_should_set_cookie_for_foo_bar_request() {
    let app = app_with(foo_bar_layer(CountingStore::new()), use_session_if_any);
    let cookie = session_cookie(&get(&app, "/foo/bar", None).await);
    assert_eq!(cookie.attribute_names(), ["Path", "HttpOnly"]);
    assert_eq!(cookie.attribute("Path"), Some(Some("/foo/bar")));
}

// upstream: cookie option > when "path" set to "/foo/bar" > "should set cookie for "/foo/bar/baz" request"
#[tokio::test]
async fn cookie_path_should_set_cookie_for_foo_bar_baz_request() {
    let app = app_with(foo_bar_layer(CountingStore::new()), use_session_if_any);
    let cookie = session_cookie(&get(&app, "/foo/bar/baz", None).await);
    assert_eq!(cookie.attribute("Path"), Some(Some("/foo/bar")));
}

/// express's `mountAt('/foo')` is axum's `nest("/foo", …)`. With the layer around the nest it sees
/// the original path (express's `originalUrl`); with the layer inside the nest it sees the
/// stripped one.
fn mounted_apps() -> (Router, Router) {
    let outside = Router::new()
        .nest("/foo", Router::new().fallback(use_session_if_any))
        .layer(foo_bar_layer(CountingStore::new()));
    let inside = Router::new().nest(
        "/foo",
        app_with(foo_bar_layer(CountingStore::new()), use_session_if_any),
    );
    (outside, inside)
}

// upstream: cookie option > when "path" set to "/foo/bar" > when mounted at "/foo" > "should set cookie for "/foo/bar" request"
#[tokio::test]
async fn cookie_path_mounted_should_set_cookie_for_foo_bar_request() {
    let (outside, inside) = mounted_apps();
    let cookie = session_cookie(&get(&outside, "/foo/bar", None).await);
    assert_eq!(cookie.attribute("Path"), Some(Some("/foo/bar")));
    // DIFFERS: express checks `req.originalUrl`, so a session middleware mounted under `/foo`
    // still sees `/foo/bar`. Our layer reads the request URI, which axum's `nest` has stripped to
    // `/bar` for layers inside the nest (the original is only in axum's `OriginalUri` extension,
    // which the library, on axum-core, cannot read). So: no session, no cookie.
    let reply = get(&inside, "/foo/bar", None).await;
    assert_no_cookie(&reply);
    assert_eq!(reply.body, "no session");
}

// upstream: cookie option > when "path" set to "/foo/bar" > when mounted at "/foo" > "should not set cookie for "/foo/foo/bar" request"
#[tokio::test]
async fn cookie_path_mounted_should_not_set_cookie_for_foo_foo_bar_request() {
    let (outside, inside) = mounted_apps();
    let reply = get(&outside, "/foo/foo/bar", None).await;
    assert_no_cookie(&reply);
    assert_eq!(reply.body, "no session");
    // DIFFERS: inside the nest our layer sees `/foo/bar` (stripped) and admits it; express
    // checks the original `/foo/foo/bar` and does not.
    let reply = get(&inside, "/foo/foo/bar", None).await;
    assert_eq!(
        session_cookie(&reply).attribute("Path"),
        Some(Some("/foo/bar"))
    );
}

// express-session behaviour (docs/behaviour.md): "path gate is a raw prefix (`/foo` matches `/foobar`)"
#[tokio::test]
async fn cookie_path_gate_is_a_raw_prefix() {
    let layer = upstream_builder(CountingStore::new())
        .with_cookie(cookie_options(None).with_path("/foo"))
        .build()
        .unwrap();
    let app = app_with(layer, use_session_if_any);
    let cookie = session_cookie(&get(&app, "/foobar", None).await);
    assert_eq!(cookie.attribute("Path"), Some(Some("/foo")));
    assert_no_cookie(&get(&app, "/fo", None).await);
}

// ---------------------------------------------------------------------------------------------
// cookie option: secure auto

// upstream: cookie option > when "secure" set to "auto" > when "proxy" is "true" > "should set secure when X-Forwarded-Proto is https"
#[tokio::test]
async fn secure_auto_proxy_true_should_set_secure_when_x_forwarded_proto_is_https() {
    let store = CountingStore::new();
    let app = app(upstream_builder(store.clone())
        .with_proxy(true)
        .with_cookie(cookie_options(Some(5)).with_secure_auto())
        .build()
        .unwrap());
    let reply = send(
        &app,
        request_to("/", None, &[("x-forwarded-proto", "https")]),
    )
    .await;
    let cookie = session_cookie(&reply);
    assert_eq!(
        cookie.attribute_names(),
        ["Path", "Expires", "HttpOnly", "Secure"]
    );
}

// upstream: cookie option > when "secure" set to "auto" > when "proxy" is "false" > "should not set secure when X-Forwarded-Proto is https"
#[tokio::test]
async fn secure_auto_proxy_false_should_not_set_secure_when_x_forwarded_proto_is_https() {
    let store = CountingStore::new();
    let app = app(upstream_builder(store.clone())
        .with_proxy(false)
        .with_cookie(cookie_options(Some(60_000)).with_secure_auto())
        .build()
        .unwrap());
    let reply = send(
        &app,
        request_to("/", None, &[("x-forwarded-proto", "https")]),
    )
    .await;
    let cookie = session_cookie(&reply);
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "HttpOnly"]);
    // The resolved value is stored with the session (docs/wire-formats.md).
    let record = store.record(&cookie.session_id()).await.unwrap();
    assert!(
        record
            .to_json()
            .contains(r#""secure":false,"httpOnly":true"#)
    );
}

// upstream: cookie option > when "secure" set to "auto" > when "proxy" is undefined > "should set secure if req.secure = true"
#[tokio::test]
async fn secure_auto_proxy_undefined_should_set_secure_if_req_secure() {
    let store = CountingStore::new();
    let app = app(upstream_builder(store.clone())
        .with_cookie(cookie_options(None).with_secure_auto())
        .build()
        .unwrap());
    let cookie = session_cookie(&send(&app, secure_request()).await);
    assert_eq!(cookie.attribute_names(), ["Path", "HttpOnly", "Secure"]);
    let record = store.record(&cookie.session_id()).await.unwrap();
    assert!(
        record
            .to_json()
            .contains(r#""secure":true,"httpOnly":true"#)
    );
}

// upstream: cookie option > when "secure" set to "auto" > when "proxy" is undefined > "should not set secure if req.secure = false"
#[tokio::test]
async fn secure_auto_proxy_undefined_should_not_set_secure_if_req_insecure() {
    let app = app(upstream_builder(CountingStore::new())
        .with_cookie(cookie_options(None).with_secure_auto())
        .build()
        .unwrap());
    let cookie = session_cookie(&get(&app, "/", None).await);
    assert_eq!(cookie.attribute_names(), ["Path", "HttpOnly"]);
}

// ---------------------------------------------------------------------------------------------
// cookie option: sameSite auto

/// Ours: `build` refuses `sameSite: 'auto'` unless `secure` is `true` or `'auto'` (with `secure`
/// unset or `false`, a secure request would get `SameSite=None` without `Secure`, which browsers
/// drop). So where upstream leaves `secure` unset, these tests use `'auto'`: the same cookie on
/// plain requests, plus `Secure` on secure ones.
fn same_site_auto_builder(
    store: CountingStore,
    proxy: Option<bool>,
    secure: Option<&str>,
) -> SessionLayerBuilder<CountingStore> {
    let mut cookie = cookie_options(None).with_same_site_auto();
    cookie = match secure {
        Some("true") => cookie.with_secure(true),
        Some("false") => cookie.with_secure(false),
        _ => cookie.with_secure_auto(),
    };
    let mut builder = upstream_builder(store).with_cookie(cookie);
    if let Some(proxy) = proxy {
        builder = builder.with_proxy(proxy);
    }
    builder
}

fn same_site_auto_app(store: CountingStore, proxy: Option<bool>, secure: Option<&str>) -> Router {
    app(same_site_auto_builder(store, proxy, secure)
        .build()
        .unwrap())
}

// upstream: cookie option > when "sameSite" set to "auto" > basic functionality > "should set SameSite=None for secure connections"
#[tokio::test]
async fn same_site_auto_should_set_none_for_secure_connections() {
    let store = CountingStore::new();
    let app = same_site_auto_app(store.clone(), None, None);
    let cookie = session_cookie(&send(&app, secure_request()).await);
    // Upstream has no `Secure` here; see `same_site_auto_builder`.
    assert_eq!(
        cookie.attribute_names(),
        ["Path", "HttpOnly", "Secure", "SameSite"]
    );
    assert_eq!(cookie.attribute("SameSite"), Some(Some("None")));
    // Resolved once and stored (docs/wire-formats.md).
    let record = store.record(&cookie.session_id()).await.unwrap();
    assert_eq!(record.cookie().same_site(), Some(SameSite::None));
    assert!(
        record
            .to_json()
            .ends_with(r#""path":"/","sameSite":"none"}}"#)
    );
}

// upstream: cookie option > when "sameSite" set to "auto" > basic functionality > "should set SameSite=Lax for insecure connections"
#[tokio::test]
async fn same_site_auto_should_set_lax_for_insecure_connections() {
    let store = CountingStore::new();
    let app = same_site_auto_app(store.clone(), None, None);
    let cookie = session_cookie(&get(&app, "/", None).await);
    assert_eq!(cookie.attribute_names(), ["Path", "HttpOnly", "SameSite"]);
    assert_eq!(cookie.attribute("SameSite"), Some(Some("Lax")));
    let record = store.record(&cookie.session_id()).await.unwrap();
    assert!(
        record
            .to_json()
            .ends_with(r#""path":"/","sameSite":"lax"}}"#)
    );
}

// upstream: cookie option > when "sameSite" set to "auto" > with proxy settings > when "proxy" is "true" > "should set SameSite=None when X-Forwarded-Proto is https"
#[tokio::test]
async fn same_site_auto_proxy_true_should_set_none_when_x_forwarded_proto_is_https() {
    let app = same_site_auto_app(CountingStore::new(), Some(true), None);
    let reply = send(
        &app,
        request_to("/", None, &[("x-forwarded-proto", "https")]),
    )
    .await;
    assert_eq!(
        session_cookie(&reply).attribute("SameSite"),
        Some(Some("None"))
    );
}

// upstream: cookie option > when "sameSite" set to "auto" > with proxy settings > when "proxy" is "true" > "should set SameSite=Lax when X-Forwarded-Proto is http"
#[tokio::test]
async fn same_site_auto_proxy_true_should_set_lax_when_x_forwarded_proto_is_http() {
    let app = same_site_auto_app(CountingStore::new(), Some(true), None);
    let reply = send(
        &app,
        request_to("/", None, &[("x-forwarded-proto", "http")]),
    )
    .await;
    assert_eq!(
        session_cookie(&reply).attribute("SameSite"),
        Some(Some("Lax"))
    );
}

// upstream: cookie option > when "sameSite" set to "auto" > with proxy settings > when "proxy" is "false" > "should set SameSite=Lax when X-Forwarded-Proto is https"
#[tokio::test]
async fn same_site_auto_proxy_false_should_set_lax_when_x_forwarded_proto_is_https() {
    let app = same_site_auto_app(CountingStore::new(), Some(false), None);
    let reply = send(
        &app,
        request_to("/", None, &[("x-forwarded-proto", "https")]),
    )
    .await;
    assert_eq!(
        session_cookie(&reply).attribute("SameSite"),
        Some(Some("Lax"))
    );
}

// upstream: cookie option > when "sameSite" set to "auto" > combined with secure auto > when "secure" is "auto" > "should set both Secure and SameSite=None when secure"
#[tokio::test]
async fn same_site_auto_secure_auto_should_set_secure_and_none_when_secure() {
    let app = same_site_auto_app(CountingStore::new(), None, Some("auto"));
    let cookie = session_cookie(&send(&app, secure_request()).await);
    assert_eq!(
        cookie.attribute_names(),
        ["Path", "HttpOnly", "Secure", "SameSite"]
    );
    assert_eq!(cookie.attribute("SameSite"), Some(Some("None")));
}

// upstream: cookie option > when "sameSite" set to "auto" > combined with secure auto > when "secure" is "auto" > "should set neither Secure nor SameSite=None when insecure"
#[tokio::test]
async fn same_site_auto_secure_auto_should_set_neither_when_insecure() {
    let app = same_site_auto_app(CountingStore::new(), None, Some("auto"));
    let cookie = session_cookie(&get(&app, "/", None).await);
    assert_eq!(cookie.attribute_names(), ["Path", "HttpOnly", "SameSite"]);
    assert_eq!(cookie.attribute("SameSite"), Some(Some("Lax")));
}

// upstream: cookie option > when "sameSite" set to "auto" > combined with secure auto > when "secure" is "false" > "should set SameSite=None without Secure when secure"
// upstream: cookie option > when "sameSite" set to "auto" > combined with secure auto > when "secure" is "false" > "should set SameSite=Lax without Secure when insecure"
// Ours: refused when the layer is built, since browsers drop `SameSite=None` without `Secure`.
#[tokio::test]
async fn same_site_auto_secure_false_is_refused() {
    let refused = same_site_auto_builder(CountingStore::new(), None, Some("false")).build();
    assert!(
        matches!(refused, Err(ConfigError::RejectedByBrowsers(_))),
        "{refused:?}"
    );
}

// upstream: cookie option > when "sameSite" set to "auto" > combined with secure auto > when "secure" is "true" > "should set both Secure and SameSite=None when secure"
#[tokio::test]
async fn same_site_auto_secure_true_should_set_secure_and_none_when_secure() {
    let app = same_site_auto_app(CountingStore::new(), None, Some("true"));
    let cookie = session_cookie(&send(&app, secure_request()).await);
    assert_eq!(
        cookie.attribute_names(),
        ["Path", "HttpOnly", "Secure", "SameSite"]
    );
    assert_eq!(cookie.attribute("SameSite"), Some(Some("None")));
}

// upstream: cookie option > when "sameSite" set to "auto" > combined with secure auto > when "secure" is "true" > "should not set cookie when insecure"
#[tokio::test]
async fn same_site_auto_secure_true_should_not_set_cookie_when_insecure() {
    let app = same_site_auto_app(CountingStore::new(), None, Some("true"));
    assert_no_cookie(&get(&app, "/", None).await);
}

// express-session behaviour (docs/behaviour.md): "secure-on-HTTP still saves"
#[tokio::test]
async fn secure_cookie_on_plain_http_is_not_sent_but_the_session_is_saved() {
    let store = CountingStore::new();
    let app = proxy_unspecified_app(store.clone());
    assert_no_cookie(&get(&app, "/", None).await);
    assert_eq!(store.counts.set(), 1);
    assert_eq!(store.len().await, 1);
}

// ---------------------------------------------------------------------------------------------
// genid option

fn genid_app<F>(genid: F) -> Router
where
    F: Fn(&Request<()>) -> String + Send + Sync + 'static,
{
    app(upstream_builder(CountingStore::new())
        .with_genid(genid)
        .build()
        .unwrap())
}

/// Asserts the whole header: the value from express's vectors (docs/wire-formats.md), then
/// `Path=/; Expires; HttpOnly`.
fn assert_cookie_value(reply: &Reply, value: &str) {
    let cookie = session_cookie(reply);
    assert_eq!(cookie.value, value);
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "HttpOnly"]);
    assert_eq!(
        cookie.raw,
        format!(
            "connect.sid={value}; Path=/; Expires={}; HttpOnly",
            cookie.expires().unwrap()
        )
    );
}

// upstream: genid option > "should provide default generator"
#[tokio::test]
async fn genid_should_provide_default_generator() {
    let app = app(upstream_builder(CountingStore::new()).build().unwrap());
    let cookie = session_cookie(&get(&app, "/", None).await);
    let id = cookie.session_id();
    assert_eq!(id.len(), 32);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    // `s:` + id + `.` + 43-character signature, URL-encoded (78 characters before encoding).
    assert_eq!(percent_decode(&cookie.value).len(), 78);
    assert!(cookie.value.starts_with(&format!("s%3A{id}.")));
}

// upstream: genid option > "should allow custom function"
#[tokio::test]
async fn genid_should_allow_custom_function() {
    let app = genid_app(|_| "apple".to_owned());
    assert_cookie_value(
        &get(&app, "/", None).await,
        "s%3Aapple.D8Y%2BpkTAmeR0PobOhY4G97PRW%2Bj7bUnP%2F5m6%2FOn1MCU",
    );
}

// upstream: genid option > "should encode unsafe chars"
#[tokio::test]
async fn genid_should_encode_unsafe_chars() {
    let app = genid_app(|_| "%".to_owned());
    assert_cookie_value(
        &get(&app, "/", None).await,
        "s%3A%25.kzQ6x52kKVdF35Qh62AWk4ZekS28K5XYCXKa%2FOTZ01g",
    );
}

// upstream: genid option > "should provide req argument"
// Ours: the argument is the request head (lib.rs differences table); `req.url` is its path.
#[tokio::test]
async fn genid_should_provide_req_argument() {
    let app = genid_app(|request| request.uri().path().to_owned());
    assert_cookie_value(
        &get(&app, "/foo", None).await,
        "s%3A%2Ffoo.paEKBtAHbV5s1IB8B2zPnzAgYmmnRPIqObW4VRYj%2FMQ",
    );
}

// ---------------------------------------------------------------------------------------------
// key and name options

// upstream: key option > "should default to "connect.sid""
#[tokio::test]
async fn key_should_default_to_connect_sid() {
    let app = app(upstream_builder(CountingStore::new()).build().unwrap());
    let reply = get(&app, "/", None).await;
    assert_eq!(session_cookie(&reply).name, "connect.sid");
    assert_eq!(reply.set_cookies().len(), 1);
}

// upstream: key option > "should allow overriding"
// Ours: express's legacy alias `key` does not exist; `with_name` is the one way.
#[tokio::test]
async fn key_should_allow_overriding() {
    let app = app(upstream_builder(CountingStore::new())
        .with_name("session_id")
        .build()
        .unwrap());
    let reply = get(&app, "/", None).await;
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 1);
    assert_eq!(cookies[0].name, "session_id");
}

// upstream: name option > "should default to "connect.sid""
#[tokio::test]
async fn name_should_default_to_connect_sid() {
    let app = app(upstream_builder(CountingStore::new()).build().unwrap());
    let reply = get(&app, "/", None).await;
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 1);
    assert_eq!(cookies[0].name, "connect.sid");
    assert!(cookies[0].raw.starts_with("connect.sid=s%3A"));
}

// upstream: name option > "should set the cookie name"
#[tokio::test]
async fn name_should_set_the_cookie_name() {
    let app = app_with(
        upstream_builder(CountingStore::new())
            .with_name("session_id")
            .build()
            .unwrap(),
        set_user_bob,
    );
    let first = get(&app, "/", None).await;
    let cookies = first.set_cookies();
    assert_eq!(cookies.len(), 1);
    assert_eq!(cookies[0].name, "session_id");
    // The name is also the one read back.
    let pair = first.cookie_pair("session_id");
    let app_reads = app_with(
        upstream_builder(CountingStore::new())
            .with_name("session_id")
            .build()
            .unwrap(),
        show_user,
    );
    // A different store: not found, so a new session.
    assert_eq!(get(&app_reads, "/", Some(&pair)).await.body, "undefined");
}

// ---------------------------------------------------------------------------------------------
// rolling option

// upstream: rolling option > "should default to false"
#[tokio::test]
async fn rolling_should_default_to_false() {
    let app = app_with(
        upstream_builder(CountingStore::new()).build().unwrap(),
        set_user_bob,
    );
    let first = get(&app, "/", None).await;
    session_cookie(&first);
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_no_cookie(&second);
}

// upstream: rolling option > "should force cookie on unmodified session"
#[tokio::test]
async fn rolling_should_force_cookie_on_unmodified_session() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_rolling(true)
            .build()
            .unwrap(),
        set_user_bob,
    );
    let first = get(&app, "/", None).await;
    let id = session_cookie(&first).session_id();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    let cookie = session_cookie(&second);
    assert_eq!(cookie.session_id(), id);
    assert_eq!(cookie.attribute_names(), ["Path", "Expires", "HttpOnly"]);
    assert_expires_matches_record(&cookie, &store.record(&id).await.unwrap());
}

// upstream: rolling option > "should not force cookie on uninitialized session if saveUninitialized option is set to false"
#[tokio::test]
async fn rolling_should_not_force_cookie_on_uninitialized_session_if_save_uninitialized_false() {
    let store = CountingStore::new();
    let app = app(upstream_builder(store.clone())
        .with_rolling(true)
        .with_save_uninitialized(false)
        .build()
        .unwrap());
    assert_no_cookie(&get(&app, "/", None).await);
    assert_eq!(store.counts.set(), 0);
    assert_eq!(store.len().await, 0);
}

// upstream: rolling option > "should force cookie and save uninitialized session if saveUninitialized option is set to true"
#[tokio::test]
async fn rolling_should_force_cookie_and_save_uninitialized_session_if_save_uninitialized_true() {
    let store = CountingStore::new();
    let app = app(upstream_builder(store.clone())
        .with_rolling(true)
        .with_save_uninitialized(true)
        .build()
        .unwrap());
    let cookie = session_cookie(&get(&app, "/", None).await);
    assert_eq!(store.counts.set(), 1);
    assert!(store.record(&cookie.session_id()).await.is_some());
}

// upstream: rolling option > "should force cookie and save modified session even if saveUninitialized option is set to false"
#[tokio::test]
async fn rolling_should_force_cookie_and_save_modified_session_even_if_save_uninitialized_false() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_rolling(true)
            .with_save_uninitialized(false)
            .build()
            .unwrap(),
        set_user_bob,
    );
    let cookie = session_cookie(&get(&app, "/", None).await);
    assert_eq!(store.counts.set(), 1);
    assert!(store.record(&cookie.session_id()).await.is_some());
}

// ---------------------------------------------------------------------------------------------
// resave option

// upstream: resave option > "should default to true"
// Ours: the default is false (lib.rs differences table): the unmodified second request is
// touched, not saved.
#[tokio::test]
async fn resave_should_default_to_false_for_us() {
    let store = CountingStore::new();
    let app = app_with(
        harness_builder(store.clone()).build().unwrap(),
        set_user_bob,
    );
    let first = get(&app, "/", None).await;
    session_cookie(&first);
    assert_eq!(store.counts.set(), 1);
    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_no_cookie(&second);
    assert_eq!(
        store.counts.all(),
        (1, 0, 1, 0),
        "(get, set, touch, destroy)"
    );
}

// upstream: resave option > when true > "should force save on unmodified session"
#[tokio::test]
async fn resave_true_should_force_save_on_unmodified_session() {
    let store = CountingStore::new();
    let app = app_with(
        harness_builder(store.clone())
            .with_resave(true)
            .with_save_uninitialized(true)
            .build()
            .unwrap(),
        set_user_bob,
    );
    let first = get(&app, "/", None).await;
    assert_eq!(store.counts.set(), 1);
    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_no_cookie(&second);
    assert_eq!(
        store.counts.all(),
        (1, 1, 0, 0),
        "(get, set, touch, destroy)"
    );
}

// upstream: resave option > when false > "should prevent save on unmodified session"
#[tokio::test]
async fn resave_false_should_prevent_save_on_unmodified_session() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_resave(false)
            .build()
            .unwrap(),
        set_user_bob,
    );
    let first = get(&app, "/", None).await;
    assert_eq!(store.counts.set(), 1);
    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_no_cookie(&second);
    assert_eq!(
        store.counts.all(),
        (1, 0, 1, 0),
        "(get, set, touch, destroy)"
    );
}

// upstream: resave option > when false > "should still save modified session"
#[tokio::test]
async fn resave_false_should_still_save_modified_session() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_resave(false)
            .build()
            .unwrap(),
        |method: Method, uri: Uri, session: Session| async move {
            if method == Method::PUT {
                session.insert("token", &uri.path()[1..]).await?;
            }
            let token: Option<String> = session.get("token").await?;
            Ok::<_, Error>(format!("token={}", token.unwrap_or_default()))
        },
    );
    let put = |path: &str, cookie: Option<&str>| {
        let mut builder = Request::put(path);
        if let Some(cookie) = cookie {
            builder = builder.header(http::header::COOKIE, cookie);
        }
        builder.body(Body::empty()).unwrap()
    };

    let first = send(&app, put("/w6RHhwaA", None)).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "token=w6RHhwaA")
    );
    assert_eq!(store.counts.set(), 1);
    let pair = first.cookie_pair("connect.sid");

    store.counts.reset();
    let second = get(&app, "/", Some(&pair)).await;
    assert_eq!(second.body, "token=w6RHhwaA");
    assert_eq!(store.counts.set(), 0);

    store.counts.reset();
    let third = send(&app, put("/zfQ3rzM3", Some(&pair))).await;
    assert_eq!(third.body, "token=zfQ3rzM3");
    assert_eq!(store.counts.set(), 1);
    // Modified with an expiring cookie: re-sent.
    assert_eq!(
        session_cookie(&third).session_id(),
        session_cookie(&first).session_id()
    );
}

// upstream: resave option > when false > "should detect a "cookie" property as modified"
#[tokio::test]
async fn resave_false_should_detect_a_cookie_property_as_modified() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_resave(false)
            .build()
            .unwrap(),
        |session: Session| async move {
            let mut user = session
                .get_value("user")
                .await?
                .unwrap_or_else(|| serde_json::json!({}));
            user["name"] = "bob".into();
            user["cookie"] = (user["cookie"].as_u64().unwrap_or(0) + 1).into();
            session.insert_value("user", user).await?;
            Ok::<_, Error>("")
        },
    );
    let first = get(&app, "/", None).await;
    assert_eq!(store.counts.set(), 1);
    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(store.counts.set(), 1, "a nested `cookie` key is data");
    let id = session_cookie(&second).session_id();
    let json = store.record(&id).await.unwrap().to_json();
    assert!(
        json.ends_with(r#""user":{"name":"bob","cookie":2}}"#),
        "{json}"
    );
}

// upstream: resave option > when false > "should pass session touch error"
// Ours: a failed touch is not fatal: the response goes out as the handler made it, and the error
// is logged and attached to the response extensions (express: emitted after the 200).
#[tokio::test]
async fn resave_false_should_pass_session_touch_error() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_resave(false)
            .build()
            .unwrap(),
        |session: Session| async move {
            session.insert("hit", true).await?;
            Ok::<_, Error>("session saved")
        },
    );
    let first = get(&app, "/", None).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "session saved")
    );
    store.fail.touch.store(true, Ordering::SeqCst);
    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "session saved")
    );
    assert_eq!(
        store.counts.all(),
        (1, 0, 1, 0),
        "(get, set, touch, destroy)"
    );
    let error = second
        .extensions
        .get::<Error>()
        .expect("the touch error is attached");
    assert!(matches!(error, Error::Touch(e) if e.kind() == ErrorKind::Backend));
}

// ---------------------------------------------------------------------------------------------
// saveUninitialized option

// upstream: saveUninitialized option > "should default to true"
// Ours: the default is false (lib.rs differences table): nothing saved, no cookie.
#[tokio::test]
async fn save_uninitialized_should_default_to_false_for_us() {
    let store = CountingStore::new();
    let app = app(harness_builder(store.clone())
        .with_resave(true)
        .build()
        .unwrap());
    assert_no_cookie(&get(&app, "/", None).await);
    assert_eq!(store.counts.set(), 0);
    assert_eq!(store.len().await, 0);
}

// upstream: saveUninitialized option > "should force save of uninitialized session"
#[tokio::test]
async fn save_uninitialized_should_force_save_of_uninitialized_session() {
    let store = CountingStore::new();
    let app = app(harness_builder(store.clone())
        .with_resave(true)
        .with_save_uninitialized(true)
        .build()
        .unwrap());
    let cookie = session_cookie(&get(&app, "/", None).await);
    assert_eq!(store.counts.set(), 1);
    let json = store.record(&cookie.session_id()).await.unwrap().to_json();
    assert!(
        json.ends_with(r#""httpOnly":true,"path":"/"}}"#),
        "no data: {json}"
    );
}

// upstream: saveUninitialized option > "should prevent save of uninitialized session"
#[tokio::test]
async fn save_uninitialized_false_should_prevent_save_of_uninitialized_session() {
    let store = CountingStore::new();
    let app = app(upstream_builder(store.clone())
        .with_save_uninitialized(false)
        .build()
        .unwrap());
    assert_no_cookie(&get(&app, "/", None).await);
    assert_eq!(store.counts.all(), (0, 0, 0, 0));
}

// upstream: saveUninitialized option > "should still save modified session"
#[tokio::test]
async fn save_uninitialized_false_should_still_save_modified_session() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_save_uninitialized(false)
            .build()
            .unwrap(),
        |session: Session| async move {
            let count = session.get::<u64>("count").await?.unwrap_or(0) + 1;
            session.insert("count", count).await?;
            Ok::<_, Error>("")
        },
    );
    let cookie = session_cookie(&get(&app, "/", None).await);
    assert_eq!(store.counts.set(), 1);
    let record = store.record(&cookie.session_id()).await.unwrap();
    assert_eq!(record.data()["count"], serde_json::json!(1));
}

// upstream: saveUninitialized option > "should pass session save error"
// Ours: a failed end-of-request save replaces the response with the opaque failure response
// (lib.rs differences table; express has already sent 200 "session saved").
#[tokio::test]
async fn save_uninitialized_should_pass_session_save_error() {
    let store = CountingStore::new();
    store.fail.set.store(true, Ordering::SeqCst);
    let app = app_with(
        upstream_builder(store.clone()).build().unwrap(),
        |session: Session| async move {
            session.id().await?;
            Ok::<_, Error>("session saved")
        },
    );
    let reply = get(&app, "/", None).await;
    let error = assert_failure_response(&reply, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(matches!(&error, Error::Save(e) if e.kind() == ErrorKind::Backend));
    assert_eq!(store.counts.set(), 1);
    assert_eq!(store.len().await, 0);

    store.fail.transient.store(true, Ordering::SeqCst);
    let reply = get(&app, "/", None).await;
    let error = assert_failure_response(&reply, StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(&error, Error::Save(e) if e.kind() == ErrorKind::Unavailable));
}

// upstream: saveUninitialized option > "should prevent uninitialized session from being touched"
#[tokio::test]
async fn save_uninitialized_false_should_prevent_uninitialized_session_from_being_touched() {
    let store = CountingStore::new();
    let app = app(upstream_builder(store.clone())
        .with_save_uninitialized(false)
        .build()
        .unwrap());
    let reply = get(&app, "/", None).await;
    assert_no_cookie(&reply);
    assert_eq!(store.counts.touch(), 0);
    assert_eq!(store.counts.all(), (0, 0, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// secret option

// upstream: secret option > "should reject empty arrays"
// Ours: a ConfigError when the layer is built (express: TypeError `secret option array must
// contain one or more strings`).
#[tokio::test]
async fn secret_should_reject_empty_arrays() {
    let error = SessionLayer::builder(MemoryStore::new())
        .with_secrets(Vec::<String>::new())
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::MissingSecret);
}

/// Runs upstream's set-then-get flow against a layer with `secret`-style configuration.
async fn assert_signs_and_unsigns<S: cloakroom::SessionStore>(
    builder: cloakroom::SessionLayerBuilder<S>,
) {
    let app = app_with(builder.build().unwrap(), set_then_get);
    let first = get(&app, "/", None).await;
    assert_eq!((first.status, first.body.as_str()), (StatusCode::OK, "set"));
    session_cookie(&first);
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, r#"get:"bob""#)
    );
}

// upstream: secret option > "should sign and unsign with a string"
#[tokio::test]
async fn secret_should_sign_and_unsign_with_a_string() {
    let store = CountingStore::new();
    assert_signs_and_unsigns(upstream_builder(store.clone()).with_secret("awesome cat")).await;
    // And the signature is that secret's: a `keyboard cat` layer on the same store rejects it.
    let signer = app_with(
        upstream_builder(store.clone())
            .with_secret("awesome cat")
            .build()
            .unwrap(),
        set_user_bob,
    );
    let pair = get(&signer, "/", None).await.cookie_pair("connect.sid");
    let other = app_with(upstream_builder(store).build().unwrap(), show_user);
    assert_eq!(get(&other, "/", Some(&pair)).await.body, "undefined");
}

// upstream: secret option > "should sign and unsign with a Buffer"
// Ours: a byte secret, here not valid UTF-8.
#[tokio::test]
async fn secret_should_sign_and_unsign_with_bytes() {
    let secret: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5);
    assert!(std::str::from_utf8(&secret).is_err());
    assert_signs_and_unsigns(upstream_builder(CountingStore::new()).with_secret(secret)).await;
}

// upstream: secret option > when an array > "should sign cookies"
#[tokio::test]
async fn secret_array_should_sign_cookies() {
    let app = app_with(
        upstream_builder(CountingStore::new())
            .with_secrets(["keyboard cat", "nyan cat"])
            .with_genid(|_| "apple".to_owned())
            .build()
            .unwrap(),
        |session: Session| async move {
            session.insert("user", "bob").await?;
            Ok::<_, Error>("bob")
        },
    );
    let reply = get(&app, "/", None).await;
    assert_eq!(reply.body, "bob");
    // Signed with the first element: express's `keyboard cat` vector.
    assert_eq!(
        session_cookie(&reply).value,
        "s%3Aapple.D8Y%2BpkTAmeR0PobOhY4G97PRW%2Bj7bUnP%2F5m6%2FOn1MCU"
    );
}

// upstream: secret option > when an array > "should sign cookies with first element"
#[tokio::test]
async fn secret_array_should_sign_cookies_with_first_element() {
    let store = CountingStore::new();
    let server1 = app_with(
        upstream_builder(store.clone())
            .with_secrets(["keyboard cat", "nyan cat"])
            .build()
            .unwrap(),
        set_user_bob,
    );
    let server2 = app_with(
        upstream_builder(store.clone())
            .with_secret("nyan cat")
            .build()
            .unwrap(),
        show_user,
    );
    let first = get(&server1, "/", None).await;
    session_cookie(&first);
    store.counts.reset();
    let second = get(&server2, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "undefined")
    );
    assert_eq!(store.counts.get(), 0, "the signature did not verify");
}

// upstream: secret option > when an array > "should read cookies using all elements"
#[tokio::test]
async fn secret_array_should_read_cookies_using_all_elements() {
    let store = CountingStore::new();
    let server1 = app_with(
        upstream_builder(store.clone())
            .with_secret("nyan cat")
            .build()
            .unwrap(),
        set_user_bob,
    );
    let server2 = app_with(
        upstream_builder(store.clone())
            .with_secrets(["keyboard cat", "nyan cat"])
            .build()
            .unwrap(),
        show_user,
    );
    let first = get(&server1, "/", None).await;
    let second = get(&server2, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "bob")
    );
}

// express-session behaviour (docs/behaviour.md): "secret rotation keeps old-signed cookie unless a Set-Cookie occurs"
#[tokio::test]
async fn secret_rotation_resigns_only_when_a_cookie_is_sent() {
    let store = CountingStore::new();
    let old = app_with(
        upstream_builder(store.clone())
            .with_secret("keyboard cat")
            .build()
            .unwrap(),
        set_user_bob,
    );
    let rotated = app_with(
        upstream_builder(store.clone())
            .with_secrets(["new cat", "keyboard cat"])
            .build()
            .unwrap(),
        |uri: Uri, session: Session| async move {
            if uri.path() == "/modify" {
                session.insert("user", "alice").await?;
            }
            Ok::<_, Error>(session.get::<String>("user").await?.unwrap_or_default())
        },
    );
    let first = get(&old, "/", None).await;
    let old_pair = first.cookie_pair("connect.sid");
    let id = session_cookie(&first).session_id();

    // Unmodified: the old-signed cookie stays with the client.
    let reply = get(&rotated, "/", Some(&old_pair)).await;
    assert_eq!(reply.body, "bob");
    assert_no_cookie(&reply);

    // Modified: the cookie is re-sent, signed with the new first secret.
    let reply = get(&rotated, "/modify", Some(&old_pair)).await;
    assert_eq!(reply.body, "alice");
    let cookie = session_cookie(&reply);
    assert_eq!(cookie.session_id(), id);
    let new_pair = reply.cookie_pair("connect.sid");
    assert_ne!(new_pair, old_pair);
    // Only the rotated layer can read the new signature.
    assert_eq!(get(&rotated, "/", Some(&new_pair)).await.body, "alice");
    let old_reader = app_with(upstream_builder(store).build().unwrap(), show_user);
    assert_eq!(
        get(&old_reader, "/", Some(&new_pair)).await.body,
        "undefined"
    );
}

// ---------------------------------------------------------------------------------------------
// unset option

/// upstream: `count++; if (count === 2) req.session = null`.
fn unset_on_second_app(store: CountingStore, unset: Option<Unset>) -> Router {
    let mut builder = upstream_builder(store);
    if let Some(unset) = unset {
        builder = builder.with_unset(unset);
    }
    app_with(builder.build().unwrap(), |session: Session| async move {
        let count = session.get::<u64>("count").await?.unwrap_or(0) + 1;
        session.insert("count", count).await?;
        if count == 2 {
            session.unset().await?;
        }
        Ok::<_, Error>("")
    })
}

// upstream: unset option > "should default to keep"
#[tokio::test]
async fn unset_should_default_to_keep() {
    let store = CountingStore::new();
    let app = unset_on_second_app(store.clone(), None);
    let first = get(&app, "/", None).await;
    let id = session_cookie(&first).session_id();
    assert_eq!(store.len().await, 1);
    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_no_cookie(&second);
    assert_eq!(store.len().await, 1);
    assert_eq!(
        store.counts.all(),
        (1, 0, 0, 0),
        "(get, set, touch, destroy)"
    );
    // The change made before unsetting is dropped.
    let record = store.record(&id).await.unwrap();
    assert_eq!(record.data()["count"], serde_json::json!(1));
}

// upstream: unset option > "should allow destroy on req.session = null"
#[tokio::test]
async fn unset_should_allow_destroy_on_req_session_null() {
    let store = CountingStore::new();
    let app = unset_on_second_app(store.clone(), Some(Unset::Destroy));
    let first = get(&app, "/", None).await;
    assert_eq!(store.len().await, 1);
    store.counts.reset();
    let second = get(&app, "/", Some(&first.cookie_pair("connect.sid"))).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(store.len().await, 0);
    assert_eq!(
        store.counts.all(),
        (1, 0, 0, 1),
        "(get, set, touch, destroy)"
    );
}

// upstream: unset option > "should not set cookie if initial session destroyed"
#[tokio::test]
async fn unset_should_not_set_cookie_if_initial_session_destroyed() {
    let store = CountingStore::new();
    let app = app_with(
        upstream_builder(store.clone())
            .with_unset(Unset::Destroy)
            .build()
            .unwrap(),
        |session: Session| async move {
            session.unset().await?;
            Ok::<_, Error>("")
        },
    );
    let reply = get(&app, "/", None).await;
    assert_no_cookie(&reply);
    assert_eq!(store.len().await, 0);
    // As express: the new id is destroyed at the end (a no-op), never saved.
    assert_eq!(
        store.counts.all(),
        (0, 0, 0, 1),
        "(get, set, touch, destroy)"
    );
}

// upstream: unset option > "should pass session destroy error"
// Ours: a failed end-of-request destroy yields the opaque failure response (lib.rs differences
// table; express has already sent 200 "session destroyed").
#[tokio::test]
async fn unset_should_pass_session_destroy_error() {
    let store = CountingStore::new();
    store.fail.destroy.store(true, Ordering::SeqCst);
    let app = app_with(
        upstream_builder(store.clone())
            .with_unset(Unset::Destroy)
            .build()
            .unwrap(),
        |session: Session| async move {
            session.unset().await?;
            Ok::<_, Error>("session destroyed")
        },
    );
    let reply = get(&app, "/", None).await;
    let error = assert_failure_response(&reply, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(matches!(&error, Error::Destroy(e) if e.kind() == ErrorKind::Backend));
    assert_eq!(store.counts.destroy(), 1);
}
