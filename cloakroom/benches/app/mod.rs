//! The app both benchmarks drive: a tiny axum `Router` with the bench routes, with and without
//! the session layer, and a store that does no I/O at all.

// Each benchmark uses part of this module, and declares it privately.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use async_trait::async_trait;
use axum::{Router, body::Body, routing::get};
use cloakroom::store::{self, Loaded, SetOutcome, Version};
use cloakroom::{
    Id, MemoryStore, Record, Session, SessionCookie, SessionLayer, SessionStore, Timestamp,
};
use http::{Request, Response, StatusCode, header};
use serde_json::{Map, Value};
use tokio::runtime::Runtime;
use tower::ServiceExt;

pub const SECRET: &str = "bench signing secret, a fixed key";

async fn login(session: Session) -> Result<&'static str, cloakroom::Error> {
    session.insert("user", "bench").await?;
    Ok("ok")
}

/// As `login`, and the session names its owner (the owner index and the session's metadata).
async fn login_owned(session: Session) -> Result<&'static str, cloakroom::Error> {
    session.insert("user", "bench").await?;
    session.set_owner("bench").await?;
    Ok("ok")
}

async fn read(session: Session) -> Result<String, cloakroom::Error> {
    let user: Option<String> = session.get("user").await?;
    Ok(format!("user: {}", user.unwrap_or_default()))
}

async fn counter(session: Session) -> Result<String, cloakroom::Error> {
    let count: u64 = session.get("count").await?.unwrap_or(0) + 1;
    session.insert("count", count).await?;
    Ok(count.to_string())
}

async fn counter_update(session: Session) -> Result<String, cloakroom::Error> {
    let count = session
        .update("count", |count: Option<u64>| count.unwrap_or(0) + 1)
        .await?;
    Ok(count.to_string())
}

async fn untouched() -> &'static str {
    "user: bench"
}

pub fn routes() -> Router {
    Router::new()
        .route("/login", get(login))
        .route("/login_owned", get(login_owned))
        .route("/read", get(read))
        .route("/counter", get(counter))
        .route("/counter_update", get(counter_update))
        .route("/untouched", get(untouched))
}

pub fn request(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(path);
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    builder.body(Body::empty()).expect("a valid request")
}

pub async fn send(app: &Router, path: &str, cookie: Option<&str>) -> Response<Body> {
    let response = app
        .clone()
        .oneshot(request(path, cookie))
        .await
        .expect("a Router never fails");
    debug_assert_eq!(response.status(), StatusCode::OK);
    response
}

/// Logs in once and returns the `sid=...` pair to send back.
pub fn session_cookie(rt: &Runtime, app: &Router) -> String {
    let response = rt.block_on(send(app, "/login", None));
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .expect("/login sets a cookie")
        .to_str()
        .expect("an ASCII cookie");
    set_cookie
        .split(';')
        .next()
        .expect("split yields at least one part")
        .to_owned()
}

/// The same cookie with the last character of its signature changed.
pub fn tampered(cookie: &str) -> String {
    let mut tampered = cookie.to_owned();
    let last = tampered.pop().expect("a non-empty cookie");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    tampered
}

/// The session layer over `store`, configured as in the benchmark servers.
pub fn with_store(store: impl SessionStore) -> Router {
    let layer = SessionLayer::builder(store)
        .with_secret(SECRET)
        .with_touch_after(Duration::from_secs(60))
        .build()
        .expect("the bench configuration is valid");
    routes().layer(layer)
}

/// A record the size of the bench's login session.
pub fn login_record() -> Record {
    let mut data = Map::new();
    data.insert("user".to_owned(), Value::from("bench"));
    Record::new(SessionCookie::default(), data)
}

const LIFETIME_MS: i64 = 86_400_000;

/// A store with no I/O and no work: every id holds the same record, every write succeeds
/// without encoding it. What is left of a request is the layer's own work: parsing, verifying,
/// deciding, signing and encoding the cookie.
#[derive(Debug)]
pub struct NullStore {
    record: Record,
}

impl NullStore {
    pub fn new() -> Self {
        let mut record = login_record();
        record.data_mut().insert("views".to_owned(), Value::from(1));
        NullStore { record }
    }
}

#[async_trait]
impl SessionStore for NullStore {
    async fn get(&self, _id: &Id) -> Result<Option<Loaded>, store::Error> {
        Ok(Some(Loaded {
            record: self.record.clone(),
            version: Version::from_counter(1),
            // Refreshed just now, as far as the layer can tell: no touch is due.
            expires_at: Some(Timestamp::now().add_millis(LIFETIME_MS)),
        }))
    }

    async fn set(
        &self,
        _id: &Id,
        _record: &Record,
        _condition: store::Condition<'_>,
    ) -> Result<SetOutcome, store::Error> {
        Ok(SetOutcome::Written(Version::from_counter(1)))
    }

    async fn destroy(&self, _id: &Id) -> Result<(), store::Error> {
        Ok(())
    }

    async fn touch(&self, _id: &Id, _record: &Record) -> Result<(), store::Error> {
        Ok(())
    }

    fn default_ttl(&self) -> Option<Duration> {
        Some(Duration::from_millis(LIFETIME_MS as u64))
    }
}

/// The session layer over a fresh [`MemoryStore`].
pub fn with_memory_store() -> Router {
    with_store(MemoryStore::new())
}

/// As [`with_memory_store`], with `with_metrics` on (and whatever recorder the process has:
/// none in the benches, which is what they measure).
#[cfg(feature = "metrics")]
pub fn with_metered_memory_store() -> Router {
    let layer = SessionLayer::builder(MemoryStore::new())
        .with_secret(SECRET)
        .with_touch_after(Duration::from_secs(60))
        .with_metrics()
        .build()
        .expect("the bench configuration is valid");
    routes().layer(layer)
}

/// A current-thread runtime, as in the benchmark servers.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}
