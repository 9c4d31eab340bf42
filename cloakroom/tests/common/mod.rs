//! Shared helpers for the HTTP-level tests: drive an axum `Router` with `oneshot`, parse
//! `Set-Cookie`, and count what reached the store.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::handler::Handler;
use cloakroom::store::{self, Condition, ErrorKind, Loaded, SessionStore, SetOutcome, Version};
use cloakroom::{CookieOptions, Id, MemoryStore, Record, SessionLayer, SessionLayerBuilder};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::Full;
use tower::ServiceExt;

/// The tests' secret. express-session's own tests use `keyboard cat`, which cloakroom refuses
/// (under 32 bytes) unless told otherwise: [`harness_builder`] does, to port them as written.
pub const SECRET: &str = "a test secret, obviously fake, 32+ bytes";

/// The secret of express-session's test harness.
const HARNESS_SECRET: &str = "keyboard cat";

/// The fuzz targets' secret (`fuzz/fuzz_targets/shared.rs`): their seeds are signed with it.
pub const FUZZ_SECRET: &str = "fuzzing secret, not a real one";

/// The app of the fuzz targets' `layer`, for replaying their inputs: a read-only handler that
/// says whether the session holds the known session's data ("known"), someone else's, or
/// nothing ("new").
pub fn fuzz_app(store: impl SessionStore) -> Router {
    // The fuzzing secret is short, and the seeds are signed with it.
    let layer = SessionLayer::builder(store)
        .with_secret(FUZZ_SECRET)
        .with_short_secrets_allowed(true)
        .build()
        .unwrap();
    Router::new()
        .route(
            "/",
            axum::routing::get(|session: cloakroom::Session| async move {
                Ok::<_, cloakroom::Error>(match session.get::<String>("user").await? {
                    Some(user) if user == "fuzz" => "known",
                    Some(_) => "someone else",
                    None => "new",
                })
            }),
        )
        .layer(layer)
}

/// A real [`MemoryStore`] that counts the calls it receives and can be told to fail, to test the
/// middleware's store traffic and failure policy.
#[derive(Clone, Debug, Default)]
pub struct CountingStore {
    pub inner: MemoryStore,
    pub counts: Arc<Counts>,
    pub fail: Arc<Failures>,
    pub delay: Arc<Delays>,
}

/// Artificial latency, to prove the response waits for the store (express's
/// `shouldSetSessionInStore(store, 200)`).
#[derive(Debug, Default)]
pub struct Delays {
    /// Milliseconds each `set` sleeps before writing.
    pub set_ms: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Counts {
    pub get: AtomicUsize,
    pub set: AtomicUsize,
    pub destroy: AtomicUsize,
    pub touch: AtomicUsize,
}

/// Switches that make the next calls of a kind fail with the given transience.
#[derive(Debug, Default)]
pub struct Failures {
    pub get: AtomicBool,
    pub set: AtomicBool,
    pub destroy: AtomicBool,
    pub touch: AtomicBool,
    /// Fail as `Unavailable` (transient, 503) instead of `Backend` (500).
    pub transient: AtomicBool,
    /// Make `get` report every id as not found (express: an `ENOENT` error from the store).
    pub miss: AtomicBool,
}

impl Counts {
    pub fn get(&self) -> usize {
        self.get.load(Ordering::SeqCst)
    }
    pub fn set(&self) -> usize {
        self.set.load(Ordering::SeqCst)
    }
    pub fn destroy(&self) -> usize {
        self.destroy.load(Ordering::SeqCst)
    }
    pub fn touch(&self) -> usize {
        self.touch.load(Ordering::SeqCst)
    }
    /// (get, set, touch, destroy), for compact assertions.
    pub fn all(&self) -> (usize, usize, usize, usize) {
        (self.get(), self.set(), self.touch(), self.destroy())
    }
    pub fn reset(&self) {
        for c in [&self.get, &self.set, &self.destroy, &self.touch] {
            c.store(0, Ordering::SeqCst);
        }
    }
}

impl CountingStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn failure(&self, switch: &AtomicBool) -> Result<(), store::Error> {
        if switch.load(Ordering::SeqCst) {
            let kind = if self.fail.transient.load(Ordering::SeqCst) {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Backend
            };
            return Err(store::Error::new(kind, "boom!"));
        }
        Ok(())
    }

    /// How many live sessions the store holds.
    pub async fn len(&self) -> usize {
        self.inner.len().await.unwrap()
    }

    /// The stored record for an id, read straight from the store.
    pub async fn record(&self, id: &str) -> Option<Record> {
        self.inner
            .get(&Id::from_string(id))
            .await
            .unwrap()
            .map(|l| l.record)
    }
}

#[async_trait]
impl SessionStore for CountingStore {
    async fn get(&self, id: &Id) -> Result<Option<Loaded>, store::Error> {
        self.counts.get.fetch_add(1, Ordering::SeqCst);
        self.failure(&self.fail.get)?;
        if self.fail.miss.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner.get(id).await
    }
    async fn set(
        &self,
        id: &Id,
        record: &Record,
        condition: Condition<'_>,
    ) -> Result<SetOutcome, store::Error> {
        self.counts.set.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay.set_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.failure(&self.fail.set)?;
        self.inner.set(id, record, condition).await
    }
    async fn destroy(&self, id: &Id) -> Result<(), store::Error> {
        self.counts.destroy.fetch_add(1, Ordering::SeqCst);
        self.failure(&self.fail.destroy)?;
        self.inner.destroy(id).await
    }
    async fn touch(&self, id: &Id, record: &Record) -> Result<(), store::Error> {
        self.counts.touch.fetch_add(1, Ordering::SeqCst);
        self.failure(&self.fail.touch)?;
        self.inner.touch(id, record).await
    }
    async fn all(&self) -> Result<Vec<(Id, Record)>, store::Error> {
        self.inner.all().await
    }
    async fn len(&self) -> Result<usize, store::Error> {
        self.inner.len().await
    }
    async fn clear(&self) -> Result<(), store::Error> {
        self.inner.clear().await
    }
}

/// A finished response, body read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub extensions: http::Extensions,
    pub body: String,
}

impl Reply {
    /// The session cookie's `Set-Cookie`, parsed; `None` when not sent.
    pub fn session_cookie(&self, name: &str) -> Option<SetCookie> {
        self.set_cookies().into_iter().find(|c| c.name == name)
    }

    /// Every `Set-Cookie`, parsed, in order.
    pub fn set_cookies(&self) -> Vec<SetCookie> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| SetCookie::parse(v.to_str().expect("Set-Cookie is ASCII")))
            .collect()
    }

    /// The `name=value` pair to send back in a `Cookie` header.
    pub fn cookie_pair(&self, name: &str) -> String {
        let cookie = self
            .session_cookie(name)
            .unwrap_or_else(|| panic!("expected a {name} Set-Cookie, got {:?}", self.headers));
        format!("{}={}", cookie.name, cookie.value)
    }
}

/// One `Set-Cookie` header, split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetCookie {
    pub raw: String,
    pub name: String,
    pub value: String,
    /// Attributes in the order sent: (name, value) with `None` for flags.
    pub attributes: Vec<(String, Option<String>)>,
}

impl SetCookie {
    pub fn parse(raw: &str) -> Self {
        let mut parts = raw.split("; ");
        let (name, value) = parts.next().unwrap().split_once('=').expect("name=value");
        let attributes = parts
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (p.to_owned(), None),
            })
            .collect();
        SetCookie {
            raw: raw.to_owned(),
            name: name.to_owned(),
            value: value.to_owned(),
            attributes,
        }
    }

    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn has(&self, flag: &str) -> bool {
        self.attribute(flag).is_some()
    }

    pub fn expires(&self) -> Option<&str> {
        self.attribute("Expires").flatten()
    }

    /// Attribute names in order, e.g. `["Path", "Expires", "HttpOnly"]`.
    pub fn attribute_names(&self) -> Vec<&str> {
        self.attributes.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The session id inside the signed value `s%3A<id>.<mac>`.
    pub fn session_id(&self) -> String {
        let decoded = percent_decode(&self.value);
        let signed = decoded.strip_prefix("s:").expect("signed value");
        signed.rsplit_once('.').expect("id.mac").0.to_owned()
    }
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Sends one request through `app` and reads the whole response.
pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response: Response<Body> = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        extensions: parts.extensions,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET path`, with an optional `Cookie` header.
pub async fn get(app: &Router, path: &str, cookie: Option<&str>) -> Reply {
    let mut builder = Request::get(path);
    if let Some(cookie) = cookie {
        builder = builder.header(http::header::COOKIE, cookie);
    }
    send(app, builder.body(Body::empty()).unwrap()).await
}

/// Parses an IMF-fixdate (`Thu, 01 Jan 1970 00:00:00 GMT`) into milliseconds since the epoch.
pub fn http_date_millis(text: &str) -> i64 {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = text.split([' ', ':']).collect();
    let day: i64 = parts[1].parse().unwrap();
    let month = MONTHS.iter().position(|m| *m == parts[2]).unwrap() as i64 + 1;
    let year: i64 = parts[3].parse().unwrap();
    let (h, m, s): (i64, i64, i64) = (
        parts[4].parse().unwrap(),
        parts[5].parse().unwrap(),
        parts[6].parse().unwrap(),
    );
    // days_from_civil
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + h) * 60 + m) * 60_000 + s * 1000
}

/// express-session's test harness defaults (`createSession` in `test/session.js`): secret
/// `keyboard cat` (so short secrets are allowed) and `cookie: { maxAge: 60000 }`, with *our*
/// defaults for everything else (`resave` and `saveUninitialized` false).
pub fn harness_builder<S: SessionStore>(store: S) -> SessionLayerBuilder<S> {
    SessionLayer::builder(store)
        .with_secret(HARNESS_SECRET)
        .with_short_secrets_allowed(true)
        .with_cookie(CookieOptions::new().with_max_age(Duration::from_millis(60_000)))
}

/// [`harness_builder`] plus express 1's defaults `resave: true` and `saveUninitialized: true`,
/// which upstream tests rely on without saying so.
pub fn upstream_builder<S: SessionStore>(store: S) -> SessionLayerBuilder<S> {
    harness_builder(store)
        .with_resave(true)
        .with_save_uninitialized(true)
}

/// A request to `path` with optional `Cookie` header and extra headers.
pub fn request_to(path: &str, cookie: Option<&str>, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(path);
    if let Some(cookie) = cookie {
        builder = builder.header(http::header::COOKIE, cookie);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

/// Asserts the middleware's opaque failure response: the status, the reason phrase as the body,
/// no session cookie, and the [`cloakroom::Error`] in the extensions. Returns that error.
pub fn assert_failure_response(reply: &Reply, status: StatusCode) -> cloakroom::Error {
    assert_eq!(reply.status, status, "body: {}", reply.body);
    assert_eq!(reply.body, status.canonical_reason().unwrap());
    assert!(
        reply.set_cookies().is_empty(),
        "a failure response sends no cookie"
    );
    reply
        .extensions
        .get::<cloakroom::Error>()
        .cloned()
        .expect("the failure response carries the error")
}

/// A store that keeps each session as the JSON text express-session would write, like express's
/// own MemoryStore (and connect-redis): records round-trip through [`store::decode_record`], raw text
/// can be planted with [`put_raw`](Self::put_raw), and `touch` replaces only the stored `cookie`.
/// Records are never expired by this store.
#[derive(Clone, Debug, Default)]
pub struct RawStore {
    entries: Arc<Mutex<HashMap<String, (String, u64)>>>,
    versions: Arc<AtomicU64>,
}

impl RawStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Plants `json` under `id`, as another program writing the store would.
    pub fn put_raw(&self, id: &str, json: &str) {
        let version = self.versions.fetch_add(1, Ordering::SeqCst) + 1;
        self.entries
            .lock()
            .unwrap()
            .insert(id.to_owned(), (json.to_owned(), version));
    }

    /// The stored text under `id`.
    pub fn raw(&self, id: &str) -> Option<String> {
        self.entries
            .lock()
            .unwrap()
            .get(id)
            .map(|(json, _)| json.clone())
    }

    pub fn count(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[async_trait]
impl SessionStore for RawStore {
    async fn get(&self, id: &Id) -> Result<Option<Loaded>, store::Error> {
        let Some((json, version)) = self.entries.lock().unwrap().get(id.as_str()).cloned() else {
            return Ok(None);
        };
        // As the store contract asks: a decode error that never quotes the stored text.
        let record = store::decode_record(&json)?;
        Ok(Some(Loaded {
            record,
            version: Version::from_counter(version),
            // This store never expires anything: every touch is due.
            expires_at: None,
        }))
    }

    async fn set(
        &self,
        id: &Id,
        record: &Record,
        condition: Condition<'_>,
    ) -> Result<SetOutcome, store::Error> {
        let mut entries = self.entries.lock().unwrap();
        let stored = entries.get(id.as_str()).map(|(_, v)| *v);
        let holds = match condition.expected() {
            None => stored.is_none(),
            Some(expected) => stored.is_some() && stored == expected.as_counter(),
        };
        if !holds {
            return Ok(SetOutcome::Conflict);
        }
        let version = self.versions.fetch_add(1, Ordering::SeqCst) + 1;
        entries.insert(id.as_str().to_owned(), (record.to_json(), version));
        Ok(SetOutcome::Written(Version::from_counter(version)))
    }

    async fn destroy(&self, id: &Id) -> Result<(), store::Error> {
        self.entries.lock().unwrap().remove(id.as_str());
        Ok(())
    }

    async fn touch(&self, id: &Id, record: &Record) -> Result<(), store::Error> {
        let mut entries = self.entries.lock().unwrap();
        if let Some((json, _)) = entries.get_mut(id.as_str()) {
            // A record the library accepts can still be one serde_json's `Value` cannot hold
            // (an unknown cookie field nested past its 128 levels): leave such a record alone.
            let Ok(mut stored) =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json)
            else {
                return Ok(());
            };
            stored.insert(
                "cookie".to_owned(),
                serde_json::to_value(record.cookie()).unwrap(),
            );
            *json = serde_json::to_string(&stored).unwrap();
        }
        Ok(())
    }

    async fn len(&self) -> Result<usize, store::Error> {
        Ok(self.count())
    }

    async fn clear(&self) -> Result<(), store::Error> {
        self.entries.lock().unwrap().clear();
        Ok(())
    }
}

/// The counter app of express-session's README, without its layer: `/` adds one to `views` and
/// answers `views N`; `/peek` answers the count without changing it; `/untouched` never uses
/// the session. Add routes, then `.layer(…)`.
pub fn counter_routes() -> Router {
    Router::new()
        .route(
            "/",
            axum::routing::get(|session: cloakroom::Session| async move {
                let views = session
                    .update("views", |views: Option<u64>| views.unwrap_or(0) + 1)
                    .await?;
                Ok::<_, cloakroom::Error>(format!("views {views}"))
            }),
        )
        .route(
            "/peek",
            axum::routing::get(|session: cloakroom::Session| async move {
                let views: Option<u64> = session.get("views").await?;
                Ok::<_, cloakroom::Error>(format!("views {}", views.unwrap_or(0)))
            }),
        )
        .route(
            "/untouched",
            axum::routing::get(|| async { "no session used" }),
        )
}

/// The tests' layer on `store`: the test secret, and cookies that live `max_age`.
pub fn layer_on<S: SessionStore>(store: S, max_age: Duration) -> SessionLayerBuilder<S> {
    SessionLayer::builder(store)
        .with_secret(SECRET)
        .with_cookie(CookieOptions::new().with_max_age(max_age))
}

/// [`counter_routes`] behind [`layer_on`] `store`, with cookies that live `max_age`.
pub fn counter_app<S: SessionStore>(store: S, max_age: Duration) -> Router {
    counter_routes().layer(layer_on(store, max_age).build().unwrap())
}

/// A `Router` that sends every path to `handler`, behind `layer` (express's `createServer`).
pub fn app_with<H, T>(layer: SessionLayer, handler: H) -> Router
where
    H: Handler<T, ()>,
    T: 'static,
{
    Router::new().fallback(handler).layer(layer)
}

/// A response body sent in several writes, as express's `res.write(a); res.end(b)`.
#[derive(Debug)]
pub struct Chunks(VecDeque<Full<Bytes>>);

impl Chunks {
    pub fn new(parts: &[&'static str]) -> Self {
        Chunks(
            parts
                .iter()
                .map(|part| Full::new(Bytes::from_static(part.as_bytes())))
                .collect(),
        )
    }
}

/// `Option<Result<Frame<Bytes>, Infallible>>`, named through `http-body-util` (the tests do not
/// depend on `http-body` itself).
type NextFrame =
    <http_body_util::combinators::Frame<'static, Full<Bytes>> as std::future::Future>::Output;

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<NextFrame> {
        while let Some(front) = self.0.front_mut() {
            match Pin::new(front).poll_frame(cx) {
                Poll::Ready(None) => {
                    self.0.pop_front();
                }
                other => return other,
            }
        }
        Poll::Ready(None)
    }
}

/// Asserts that a `Set-Cookie` carries exactly the stored record's expiry (express writes both
/// from the same `Date`), and returns it.
pub fn assert_expires_matches_record(cookie: &SetCookie, record: &Record) -> cloakroom::Timestamp {
    let stored = record
        .cookie()
        .expires()
        .expect("the stored cookie has an expiry");
    assert_eq!(cookie.expires(), Some(stored.to_http_date().as_str()));
    stored
}

/// A fresh store of `kind` (`memory`, `sqlite`, `redis` or `postgres`), isolated by `name` (a
/// Redis key prefix, a Postgres table, an SQLite file), for tests that must hold on every store
/// ([`on_every_store!`]).
#[cfg(all(feature = "redis", feature = "postgres", feature = "sqlite"))]
pub async fn store_of_kind(kind: &str, name: &str) -> Arc<dyn SessionStore> {
    use cloakroom::{PostgresStore, RedisStore, SqliteStore};
    match kind {
        "memory" => Arc::new(MemoryStore::new()),
        "sqlite" => {
            let dir =
                std::env::temp_dir().join(cloakroom_testkit::unique_name(&format!("{name}-")));
            std::fs::create_dir_all(&dir).unwrap();
            Arc::new(SqliteStore::connect(dir.join("sessions.db")).await.unwrap())
        }
        "redis" => {
            let url = cloakroom_testkit::server_url(
                "CLOAKROOM_REDIS_URL",
                "./scripts/test.sh starts Redis and sets it",
            );
            let store = RedisStore::builder(url)
                .with_prefix(cloakroom_testkit::unique_name(&format!("{name}:")))
                .build()
                .await
                .unwrap();
            Arc::new(store)
        }
        "postgres" => {
            let url = cloakroom_testkit::server_url(
                "CLOAKROOM_POSTGRES_URL",
                "./scripts/test.sh starts PostgreSQL and sets it",
            );
            let store = PostgresStore::builder(url)
                .with_table_name(cloakroom_testkit::unique_name(&format!("{name}_")))
                .unwrap()
                .with_create_table_if_missing(true)
                .build()
                .await
                .unwrap();
            Arc::new(store)
        }
        other => panic!("no store of kind {other}"),
    }
}

/// One `#[tokio::test]` per store for each `case`, an `async fn(name: &str, store: Arc<dyn
/// SessionStore>)`: `case::memory`, `case::sqlite`, `case::redis`, `case::postgres`, so a
/// failure names its store and the others still run.
#[allow(unused_macros)] // Each test file that includes this module uses part of it.
macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            $crate::common::on_every_store!(@store $case, memory);
            $crate::common::on_every_store!(@store $case, sqlite);
            $crate::common::on_every_store!(@store $case, redis);
            $crate::common::on_every_store!(@store $case, postgres);
        }
    )*};
    (@store $case:ident, $kind:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $kind() {
            let kind = stringify!($kind);
            let store = $crate::common::store_of_kind(kind, stringify!($case)).await;
            super::$case(kind, store).await;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_every_store;
