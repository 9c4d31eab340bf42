//! Server-side sessions for tower and axum, with express-session's model and wire formats.
//!
//! A cloakroom hands you a ticket and keeps your coat: the browser holds a signed cookie with a
//! session id, the server keeps the data in a store. cloakroom is express-session for Rust:
//! the same options (`secret`, `name`, `cookie`, `resave`, `saveUninitialized`, `rolling`,
//! `unset`, `genid`, `proxy`), the same session methods (`regenerate`, `destroy`, `save`,
//! `reload`, `touch`), and byte for byte the same signed cookie and stored JSON, so a Rust
//! service and an Express app can share sessions.
//!
//! # Quick start
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use cloakroom::{CookieOptions, MemoryStore, Session, SessionLayer};
//!
//! async fn views(session: Session) -> Result<String, cloakroom::Error> {
//!     // Read-modify-write in one step: concurrent requests never lose a view.
//!     let views = session.update("views", |views: Option<u64>| views.unwrap_or(0) + 1).await?;
//!     Ok(format!("Number of views {views}"))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // cloakroom reports store failures through `tracing` (never with ids or session data).
//!     tracing_subscriber::fmt::init();
//!     let sessions = SessionLayer::builder(MemoryStore::new())
//!         .with_secret(std::env::var("SESSION_SECRET")?)
//!         .with_cookie(CookieOptions::new().with_max_age(Duration::from_secs(30 * 60)))
//!         .build()?;
//!     let app = Router::new().route("/", get(views)).layer(sessions);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! # How a request goes
//! 1. The layer puts a lazy [`Session`] in the request. A handler that never calls it costs no
//!    store I/O and sends no cookie.
//! 2. The first call verifies the cookie's signature (against every secret) and loads the
//!    session; a missing, tampered or unknown cookie means a brand-new session with a fresh id.
//! 3. After the handler, express's decision function picks what to do: save, touch (refresh the
//!    expiry only), or nothing; and whether to send the cookie. The store write finishes
//!    *before* the response leaves, so a redirect never races its own save.
//!
//! # Concurrency
//! Requests on one session at the same time (two tabs, a double-click, several processes) never
//! lose each other's changes silently. Saving an existing session is a compare-and-set against
//! the version it loaded; a new session is written only if its id is free. When another request
//! saved first, this one reloads the newer record and carries its own changes over:
//!
//! | what the handler did to a key | carried over onto the newer record |
//! |---|---|
//! | [`Session::update`] (or [`Session::try_update`]) | the closure runs again on the newer value: N concurrent updates make N |
//! | `get` then `insert`/`remove` | only if nobody changed the key meanwhile; otherwise the save fails with [`Error::Conflict`] (409) |
//! | `insert`/`remove` without reading it | yes: this request's value wins, as if it ran second |
//! | nothing | the newer record's value stays |
//!
//! A session destroyed meanwhile (a logout in another tab) is never brought back. For code that
//! reads and writes the plain way, the opt-in exclusive session lock
//! ([`SessionLayerBuilder::with_session_lock`]) makes requests on one session take turns, across
//! processes. The README's "Concurrency" section has the guarantees and costs per store.
//!
//! # Failures
//! A store failure while loading or saving replaces the response with a fixed, opaque one (503
//! when transient, else 500; see [`SessionLayerBuilder::with_failure_response`]), logs it once
//! through `tracing` (never with ids or data), and attaches the [`Error`] to the response
//! extensions. A bad cookie is never an error: it starts a new session.
//!
//! # Stores
//! Pick the store by what you already run; all of them pass the same conformance suite
//! (`cloakroom-testkit`) against the real server.
//!
//! | store | feature | format | for |
//! |---|---|---|---|
//! | [`MemoryStore`] | always | express JSON in process memory, bounded (flood-resistant eviction) and expiring | one process, tests, development |
//! | `SqliteStore` | `sqlite` | the connect-pg-simple table shape in an SQLite file (WAL) | one machine, nothing to install; the demo's default |
//! | `RedisStore` | `redis` | connect-redis: key `sess:<id>`, value the express JSON, TTL from the cookie | many processes; standalone Redis or Redis Cluster |
//! | `PostgresStore` | `postgres` | connect-pg-simple: table `session (sid, sess json, expire)` | many processes, a database you already run |
//! | `MySqlStore` | `mysql` | express-mysql-session: table `sessions (session_id, expires, data)` | many processes, MariaDB or MySQL you already run |
//! | `DynamoDbStore` | `dynamodb` | connect-dynamodb: item `{id: "sess:<id>", expires, type, sess}` | many processes on AWS, no server to run |
//!
//! Redis, Postgres and MySQL read and write the very records connect-redis, connect-pg-simple
//! and express-mysql-session do, so an Express app and a cloakroom service can share them. Any
//! other store implements [`SessionStore`]; the trait's docs give each method's contract, and
//! `cloakroom-testkit` checks it.
//!
//!
#![doc = include_str!("../docs/express-differences.md")]
//!
//! # Features
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | the [`Session`] extractor (through `axum-core`) |
//! | `sqlite` | no | `SqliteStore` (sqlx) |
//! | `redis` | no | `RedisStore`, standalone and Cluster (redis-rs) |
//! | `postgres` | no | `PostgresStore` (sqlx) |
//! | `mysql` | no | `MySqlStore`, MariaDB and MySQL (sqlx) |
//! | `dynamodb` | no | `DynamoDbStore` (the AWS SDK for Rust, rustls) |
//! | `metrics` | no | `SessionLayerBuilder::with_metrics`: counters and store-call timings through the `metrics` facade |
#![forbid(unsafe_code)]
// On docs.rs: a badge on every item that needs a feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod cookie;
mod error;
mod events;
#[cfg(feature = "axum")]
mod extract;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod id;
#[cfg(feature = "metrics")]
mod metrics;
pub mod middleware;
mod record;
mod registry;
mod session;
mod signing;
pub mod store;
mod time;
mod transport;

/// The attribute that makes `async fn`s in a [`SessionStore`] implementation object-safe, as the
/// trait needs (`Arc<dyn SessionStore>`): `#[cloakroom::async_trait]` on your `impl` block.
pub use async_trait::async_trait;
pub use config::{ConfigError, CookieOptions, Unset};
pub use error::Error;
pub use events::SessionEvent;
#[cfg(feature = "axum")]
pub use extract::MissingSessionLayer;
pub use id::Id;
pub use middleware::{SecureConnection, SessionLayer, SessionLayerBuilder};
pub use record::{DecodeError, MAX_VALUE_DEPTH, Priority, Record, SameSite, SessionCookie};
pub use registry::{Admission, AtLimit, SessionInfo, SessionRegistry};
pub use session::{FLASH_KEY, Session, SessionLock};
#[cfg(feature = "dynamodb")]
pub use store::dynamodb::{DynamoDbStore, DynamoDbStoreBuilder};
pub use store::memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "mysql")]
pub use store::mysql::{MySqlStore, MySqlStoreBuilder};
#[cfg(feature = "postgres")]
pub use store::postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "redis")]
pub use store::redis::{RedisStore, RedisStoreBuilder};
#[cfg(feature = "sqlite")]
pub use store::sqlite::{SqliteStore, SqliteStoreBuilder};
pub use store::{OwnerIndex, OwnerPath, SessionStore};
pub use time::Timestamp;
pub use transport::{MAX_TOKEN_HEADER_LEN, TokenHeader};

/// The guides' and the README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(all(
    doctest,
    feature = "axum",
    feature = "sqlite",
    feature = "redis",
    feature = "postgres",
    feature = "mysql",
    feature = "dynamodb"
))]
mod guides {
    #[doc = include_str!("../../README.md")]
    struct Readme;
    #[doc = include_str!("../../docs/coming-from-express-session.md")]
    struct ComingFromExpressSession;
    #[doc = include_str!("../../docs/coming-from-tower-sessions.md")]
    struct ComingFromTowerSessions;
    #[doc = include_str!("../../docs/choosing-a-store.md")]
    struct ChoosingAStore;
}
