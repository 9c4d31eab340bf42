//! axum_session with its SQLite, Postgres and Redis stores (`axum_session_sqlx`,
//! `axum_session_redispool`).
//!
//! Configured as close to the other targets as the library allows:
//!
//! - cookie `sid`, signed with the shared `SIGNING_KEY` (axum_session signs with HMAC-SHA256 and
//!   the key's 32-byte signing half). Its default of signing the client's IP and User-Agent along
//!   with the id is turned off, so that, like the others, the signature covers the id alone.
//! - a browser-session cookie (`with_max_age(None)`; axum_session's default is 100 days), not
//!   `Secure` (its default too; the benchmark is plain HTTP).
//! - Every request loads its session from the store, as with every other target:
//!   `with_memory_lifetime(Duration::ZERO)`, axum_session's documented setting for it. By
//!   default axum_session keeps every session a process has seen in a process-local map (a
//!   `DashMap`) for 60 minutes after its last request and serves requests from it, so `/read`
//!   does no store I/O and `/counter` only the write; but then a change made by another process
//!   (a logout, a revocation, an update) goes unseen for up to an hour, which no other target
//!   allows. That is the speed of a memory store, and cloakroom's memory store is the one to
//!   compare it with.
//!
//! What could not be made alike, so the figures should be read with it in mind:
//!
//! - `SessionMode::Persistent` (its default): every cookie-less request's new session is stored
//!   and given a cookie. The other targets leave an untouched new session unsaved; the mode that
//!   does that here, `OptIn`, needs the client to send back a second cookie (`store=true`) with
//!   every request, or, with no cache in front of the store, it deletes the session on the
//!   next request. Every cookie-less request of the benchmark is a `/login`, which saves its
//!   session anyway, so the mode changes no measured figure.
//! - Writes: a session changed by `set` is written on every request; an unchanged one is
//!   rewritten at most once per `db_update_interval` (default 10 s) to push its expiry forward
//!   (defaults kept: the throttled expiry refresh is the counterpart of cloakroom's
//!   `with_touch_after`).
//! - A new id costs a store round trip: before using a freshly generated id, axum_session asks the
//!   store whether it exists (SQL `SELECT COUNT(*)`, Redis `EXISTS`).
//! - The cookie is sent on every answer, with a second cookie, `store` (a removal, outside
//!   `OptIn` mode): axum_session has no setting to send either only when it changes. Its two
//!   Set-Cookie headers come out of a hash set in no fixed order, so [`session_cookie_last`] puts
//!   the `sid` one last (see there why).
//! - Signing and verifying run on tokio's blocking-thread pool (`spawn_blocking`): the server
//!   process has extra threads beside its single runtime thread (all pinned to the server's core
//!   by the harness, and counted in its CPU time).
//! - Expired sessions are purged by a task axum_session spawns itself (first run after an hour
//!   for memory and six hours for the database: never during a benchmark run).

use std::fmt::Debug;
use std::path::Path;

use anyhow::Context as _;
use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::SET_COOKIE;
use axum::response::Response;
use axum::routing::get;
use axum_session::{
    DatabasePool, Key, Session, SessionConfig, SessionLayer, SessionMode, SessionStore,
};
use axum_session_redispool::SessionRedisPool;
use axum_session_sqlx::{SessionPgPool, SessionSqlitePool};
// sqlx 0.9, the one axum_session_sqlx 0.12 is built on (tower-sessions-sqlx-store and cloakroom
// are on 0.8).
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use crate::{Args, COOKIE_NAME, SIGNING_KEY, Target};

/// The router of an axum-session target, its store connected and its table created.
pub(crate) async fn router(args: &Args) -> anyhow::Result<Router> {
    match args.target {
        Target::AxumSessionSqlite => {
            let path = args
                .sqlite_path
                .as_deref()
                .context("axum-session-sqlite needs --sqlite-path")?;
            with_store(SessionSqlitePool::from(sqlite_pool(path).await?)).await
        }
        Target::AxumSessionPostgres => {
            let url = args
                .postgres_url
                .as_deref()
                .context("axum-session-postgres needs --postgres-url")?;
            // sqlx's defaults (up to 10 connections), as cloakroom's and tower-sessions' stores.
            let pool = PgPool::connect(url)
                .await
                .context("failed to connect to postgres")?;
            with_store(SessionPgPool::from(pool)).await
        }
        Target::AxumSessionRedis => {
            // The pool of axum_session's Redis example (`RedisPool::from(client)`): idle
            // connections kept up to 16, at most 512 open, each taken by one request at a time
            // and checked with an UNWATCH + PING round trip when reused.
            let client =
                redis::Client::open(args.redis_url.as_str()).context("invalid --redis-url")?;
            with_store(SessionRedisPool::from(redis_pool::RedisPool::from(client))).await
        }
        _ => unreachable!("not an axum-session target"),
    }
}

/// A pool with sqlx's defaults, like tower-sessions-sqlx-store's (up to 10 connections, SQLite's
/// rollback journal and `synchronous=FULL`), creating the file the harness names.
async fn sqlite_pool(path: &Path) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    SqlitePool::connect_with(options)
        .await
        .with_context(|| format!("failed to open {}", path.display()))
}

async fn with_store<T>(pool: T) -> anyhow::Result<Router>
where
    T: DatabasePool + Clone + Debug + Sync + Send + 'static,
{
    let config = SessionConfig::default()
        .with_session_name(COOKIE_NAME)
        .with_key(Key::from(SIGNING_KEY))
        .with_ip_and_user_agent(false)
        .with_mode(SessionMode::Persistent)
        .with_max_age(None)
        .with_secure(false)
        .with_memory_lifetime(time::Duration::ZERO);
    // Creates the SQL table (`sessions`) if missing; Redis keys are `sessions:<id>`.
    let store = SessionStore::<T>::new(Some(pool), config)
        .await
        .context("failed to set up axum_session's store")?;
    Ok(Router::new()
        .route("/login", get(login::<T>))
        .route("/read", get(read::<T>))
        .route("/counter", get(counter::<T>))
        .layer(SessionLayer::new(store))
        .layer(axum::middleware::map_response(session_cookie_last)))
}

/// Puts the `sid` Set-Cookie header after the others. wrk's Lua API gives the load script one
/// value per header name, the last one, and axum_session's two Set-Cookie headers (`sid`, and its
/// `store` flag) come in no fixed order, so without this about half the answers would look, to the
/// script, as if they carried no session cookie. The same headers go out, only their order is
/// fixed. Costs axum-session targets a look at the response's Set-Cookie headers.
async fn session_cookie_last(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let is_sid = |value: &HeaderValue| value.as_bytes().starts_with(b"sid=");
    let sid_last = headers.get_all(SET_COOKIE).iter().next_back().is_none_or(is_sid);
    if !sid_last {
        let cookies: Vec<HeaderValue> = headers.get_all(SET_COOKIE).iter().cloned().collect();
        headers.remove(SET_COOKIE);
        let (sid, others): (Vec<_>, Vec<_>) = cookies.into_iter().partition(is_sid);
        for value in others.into_iter().chain(sid) {
            headers.append(SET_COOKIE, value);
        }
    }
    response
}

async fn login<T>(session: Session<T>) -> &'static str
where
    T: DatabasePool + Clone + Debug + Sync + Send + 'static,
{
    session.set("user", "bench");
    "ok"
}

async fn read<T>(session: Session<T>) -> String
where
    T: DatabasePool + Clone + Debug + Sync + Send + 'static,
{
    // axum_session's `get` gives `None` for a missing key and for a value it cannot decode alike.
    let user: Option<String> = session.get("user");
    format!("user: {}", user.as_deref().unwrap_or("none"))
}

async fn counter<T>(session: Session<T>) -> String
where
    T: DatabasePool + Clone + Debug + Sync + Send + 'static,
{
    let views = session.get::<u64>("views").unwrap_or(0) + 1;
    session.set("views", views);
    views.to_string()
}
