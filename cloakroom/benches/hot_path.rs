//! The per-request work of the session layer, without store I/O.
//!
//! Run with `cargo bench -p cloakroom --bench hot_path`. Each `layer/*` figure is one request
//! driven through a tiny axum `Router` with `tower::ServiceExt::oneshot` (no sockets) on a
//! current-thread runtime, so it includes axum's routing and the handler; `layer/bare` is the
//! same request without the session layer, the floor to subtract. The store is a `MemoryStore`:
//! its load and save are a lock, a map lookup and a JSON decode or encode, no I/O.
//!
//! What each figure includes, beyond `layer/bare`:
//! - `untouched`: a valid cookie, a handler that never calls the session: the layer alone.
//! - `read_no_cookie`: the handler reads a key of a session that does not exist (no cookie):
//!   the decision "nothing to save, no cookie to send".
//! - `read_bad_signature`: a cookie whose signature does not verify: cookie parsing, the HMAC
//!   check, then as `read_no_cookie`.
//! - `read`: a valid cookie: parsing, HMAC verification, the store load (JSON decode), the
//!   read, and the decision (nothing to save).
//! - `counter`: as `read`, plus a write: JSON encode and the store's compare-and-set.
//! - `login`: no cookie; a new id from the OS CSPRNG, a write, the save (JSON encode, store
//!   insert), signing, and the `Set-Cookie` header. The store grows by one entry per
//!   iteration, bounded by `MemoryStore`'s LRU limit.
//!
//! The `pieces/*` figures are the public building blocks on their own.

#![allow(missing_docs)]

use axum::{Router, body::Body, routing::get};
use cloakroom::{Id, MemoryStore, Record, Session, SessionCookie, SessionLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use tokio::runtime::Runtime;
use tower::ServiceExt;

const SECRET: &str = "bench signing secret, a fixed key";

async fn login(session: Session) -> Result<&'static str, cloakroom::Error> {
    session.insert("user", "bench").await?;
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

async fn untouched() -> &'static str {
    "user: bench"
}

fn routes() -> Router {
    Router::new()
        .route("/login", get(login))
        .route("/read", get(read))
        .route("/counter", get(counter))
        .route("/untouched", get(untouched))
}

fn with_sessions() -> Router {
    let layer = SessionLayer::builder(MemoryStore::new())
        .with_secret(SECRET)
        .build()
        .expect("the bench configuration is valid");
    routes().layer(layer)
}

fn request(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(path);
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    builder.body(Body::empty()).expect("a valid request")
}

async fn send(app: &Router, path: &str, cookie: Option<&str>) -> Response<Body> {
    let response = app
        .clone()
        .oneshot(request(path, cookie))
        .await
        .expect("a Router never fails");
    debug_assert_eq!(response.status(), StatusCode::OK);
    response
}

/// Logs in once and returns the `sid=...` pair to send back.
fn session_cookie(rt: &Runtime, app: &Router) -> String {
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
fn tampered(cookie: &str) -> String {
    let mut tampered = cookie.to_owned();
    let last = tampered.pop().expect("a non-empty cookie");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    tampered
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let bare = routes();
    let app = with_sessions();
    let cookie = session_cookie(&rt, &app);
    let bad = tampered(&cookie);
    rt.block_on(send(&app, "/counter", Some(&cookie)));

    let mut group = c.benchmark_group("layer");
    group.bench_function("bare", |b| {
        b.iter(|| rt.block_on(send(&bare, "/untouched", Some(&cookie))))
    });
    group.bench_function("untouched", |b| {
        b.iter(|| rt.block_on(send(&app, "/untouched", Some(&cookie))))
    });
    group.bench_function("read_no_cookie", |b| {
        b.iter(|| rt.block_on(send(&app, "/read", None)))
    });
    group.bench_function("read_bad_signature", |b| {
        b.iter(|| rt.block_on(send(&app, "/read", Some(&bad))))
    });
    group.bench_function("read", |b| {
        b.iter(|| rt.block_on(send(&app, "/read", Some(&cookie))))
    });
    group.bench_function("counter", |b| {
        b.iter(|| rt.block_on(send(&app, "/counter", Some(&cookie))))
    });
    group.bench_function("login", |b| {
        b.iter(|| rt.block_on(send(&app, "/login", None)))
    });
    group.finish();
}

/// A record the size of the bench's login session.
fn login_record() -> Record {
    let mut data = Map::new();
    data.insert("user".to_owned(), Value::from("bench"));
    Record::new(SessionCookie::default(), data)
}

fn pieces(c: &mut Criterion) {
    let record = login_record();
    let json_text = record.to_json();
    debug_assert_eq!(
        serde_json::from_str::<Value>(&json_text)
            .ok()
            .map(|v| v["user"].clone()),
        Some(json!("bench"))
    );

    let mut group = c.benchmark_group("pieces");
    group.bench_function("id_generate", |b| b.iter(Id::generate));
    group.bench_function("record_to_json", |b| {
        b.iter(|| black_box(&record).to_json())
    });
    group.bench_function("record_from_json", |b| {
        b.iter(|| Record::from_json(black_box(&json_text)).expect("a valid record"))
    });
    group.finish();
}

criterion_group!(benches, layer, pieces);
criterion_main!(benches);
