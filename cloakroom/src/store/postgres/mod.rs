//! [`PostgresStore`]: sessions in PostgreSQL, in connect-pg-simple's table.
//!
//! # Schema
//! One row a session, in connect-pg-simple's `table.sql`:
//!
//! ```sql
//! CREATE TABLE "session" (
//!   "sid" varchar NOT NULL COLLATE "default",
//!   "sess" json NOT NULL,
//!   "expire" timestamp(6) NOT NULL
//! )
//! WITH (OIDS=FALSE);
//! ALTER TABLE "session" ADD CONSTRAINT "session_pkey" PRIMARY KEY ("sid") NOT DEFERRABLE INITIALLY IMMEDIATE;
//! CREATE INDEX "IDX_session_expire" ON "session" ("expire");
//! ```
//!
//! `sess` is express-session's JSON, byte for byte (`json` keeps its input text exactly). The
//! table and its schema can be renamed ([`with_table_name`](PostgresStoreBuilder::with_table_name),
//! [`with_schema_name`](PostgresStoreBuilder::with_schema_name)); like connect-pg-simple, the
//! store does not create the table unless asked to
//! ([`with_create_table_if_missing`](PostgresStoreBuilder::with_create_table_if_missing)).
//!
//! # Expiry
//! `expire` is written as connect-pg-simple writes it: `to_timestamp(s)`, where `s` is the
//! cookie's expiry rounded up to the second, or for a browser-session cookie `now + ttl` rounded
//! up ([`with_default_ttl`](PostgresStoreBuilder::with_default_ttl), one day by default). A row
//! is live while `expire >= to_timestamp(ceil(now))`, with `now` taken from this process's clock
//! (as connect-pg-simple uses Node's), so a session lives up to a second past its cookie.
//!
//! # Compare-and-set
//! A new session is an insert that replaces only an expired row, so it never overwrites a live
//! session under the same id. A record's [`Version`](super::Version) is its stored `sess` text. A compare-and-set is one
//! `UPDATE … WHERE sid = $1 AND sess::text = $2 AND expire >= now`: it writes only if the row is
//! still live and holds exactly what was loaded, so a concurrent write is never overwritten and
//! a destroyed or expired session is never brought back. A touch changes `expire` only, so it
//! never changes the version. Two writes of identical text have the same version; a
//! compare-and-set between them succeeds, which is harmless because the content is the same.
//!
//! # Under load: one statement for many sessions
//! When every pooled connection is busy, requests wait for one. Reads (`get`) and
//! compare-and-sets (the `UPDATE` above, without a session lock) that wait at the same time
//! are run together: the first to get a connection takes the others of its kind and runs them
//! as one statement (`WHERE sid = ANY($1)`, or `UPDATE … FROM unnest(…) WITH ORDINALITY`), and
//! each gets its own answer. Nothing waits for a batch to fill: with a connection free, a call
//! runs alone, as before. Each write keeps its own condition, so a batch writes exactly what
//! the same writes would one after the other; of two writes to one session from the same
//! version, one is made and the other is a conflict. A batch commits as one statement, so
//! PostgreSQL commits many sessions for the price of one. If the call running a batch is
//! dropped (its timeout ran out) or its statement fails, the other reads each run alone, so
//! their outcomes and errors are their own; the other writes fail with
//! [`ErrorKind::Unavailable`], since the statement may have been applied (run again, a write
//! would find itself and report a conflict, and a caller would apply its change twice). New
//! sessions, deletes, touches and writes under a session lock are not batched.
//!
//! # Session lock
//! With [`with_session_lock`](crate::SessionLayerBuilder::with_session_lock), a session's lock is
//! a row of a second table beside the sessions' (in the same schema), created on first use:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "session_lock" (
//!   "sid" varchar NOT NULL PRIMARY KEY,
//!   "token" varchar NOT NULL,
//!   "until" bigint NOT NULL
//! );
//! ```
//!
//! `token` is the holder's random token, `until` when its lease runs out, in milliseconds by the
//! server's clock. Taking the lock is one upsert that succeeds only where no row is or the row's
//! lease has run out; releasing it deletes the row only while it holds the holder's token; a
//! write under the lock adds `AND EXISTS (…the lock row with the holder's token, still
//! running…)` to its compare-and-set, so a holder whose lease ran out cannot write (fencing).
//! A row lock rather than an advisory lock: an advisory lock belongs to a connection, so
//! holding one for a whole request would take a pooled connection out of use for as long, and
//! it has no lease of its own. connect-pg-simple never reads this table.
//!
//! # Pruning
//! Expired rows are hidden at once and deleted by a background task every 15 minutes (each
//! delay randomized to 50–150 %, as connect-pg-simple), started on the tokio runtime that builds
//! the store and stopped when the last clone of the store is dropped. A failed prune is logged
//! and retried at the next interval. [`PostgresStore::prune_expired`] prunes on demand.
//!
//! # Sessions by owner
//! The store implements [`OwnerIndex`](super::OwnerIndex). The owner is read out of `sess` by an expression index,
//! `session_owner_idx`, at the owner path
//! ([`with_owner_path`](PostgresStoreBuilder::with_owner_path), `passport.user` by default, where
//! passport.js keeps the signed-in user). No column is added: connect-pg-simple reads and writes
//! the table as before, the sessions an Express app signs in are indexed too, and the index
//! changes with its row, in the same statement. It is partial, so sessions without an owner
//! have no entry.
//!
//! [`with_create_table_if_missing`](PostgresStoreBuilder::with_create_table_if_missing) creates
//! it, on a table that already exists too. Otherwise create it yourself (`CONCURRENTLY`, on a
//! table in use, so writes go on while it builds); without it,
//! [`sessions_of`](super::OwnerIndex::sessions_of) still works, reading the whole table:
//!
//! ```sql
//! CREATE INDEX IF NOT EXISTS "session_owner_idx" ON "session" ((
//!   CASE WHEN strpos(sess::text, E'\\u') = 0
//!     OR sess::text !~ E'(?<!\\\\)((?:\\\\\\\\)*)\\\\u(?:0000|(?!00[0-7])[0-9A-Fa-f]{4})'
//!   THEN sess #>> '{"passport","user"}'
//!   ELSE regexp_replace(sess::text, E'(?<!\\\\)((?:\\\\\\\\)*)\\\\u(?:0000|(?!00[0-7])[0-9A-Fa-f]{4})',
//!     E'\\1?', 'g')::json #>> '{"passport","user"}'
//!   END
//! )) WHERE (
//!   CASE WHEN strpos(sess::text, E'\\u') = 0
//!     OR sess::text !~ E'(?<!\\\\)((?:\\\\\\\\)*)\\\\u(?:0000|(?!00[0-7])[0-9A-Fa-f]{4})'
//!   THEN sess #>> '{"passport","user"}'
//!   ELSE regexp_replace(sess::text, E'(?<!\\\\)((?:\\\\\\\\)*)\\\\u(?:0000|(?!00[0-7])[0-9A-Fa-f]{4})',
//!     E'\\1?', 'g')::json #>> '{"passport","user"}'
//!   END
//! ) IS NOT NULL;
//! ```
//!
//! Copy it exactly (for another path, change each `'{"passport","user"}'`): a query uses the
//! index only where it spells the expression as the index does. The expression is long because
//! `#>>` turns every string in the document into text, and fails on an escape text cannot hold:
//! `\u0000`, a lone surrogate (the `json` type accepts both, and JavaScript's `JSON.stringify`
//! writes the second), or a character the server's encoding lacks. An index expression that
//! fails fails the write, so where the JSON has such escapes they are read as `?`; the session is
//! indexed all the same, though an owner with one of them in it is never found.
//!
//! # Sharing the table with connect-pg-simple
//! Point both at the same table and they read each other's sessions: the rows, the expiry
//! rule and the queries are connect-pg-simple's, and the session cookie is express-session's
//! (use the same `secret` and cookie `name`). Two things to line up:
//!
//! - **Time zone.** `expire` is a `timestamp` without time zone, so its meaning depends on the
//!   `TimeZone` of the connection that wrote it. node-postgres connections use the server's
//!   default, but sqlx sets `TimeZone` to `UTC` on every connection. If `SHOW timezone` in
//!   `psql` says anything but `UTC` (or `Etc/UTC`), give that zone to
//!   [`with_time_zone`](PostgresStoreBuilder::with_time_zone), or start node-postgres with
//!   `options: '-c TimeZone=UTC'`; otherwise each side reads the other's expiry off by the
//!   zone's offset, and pruning deletes live sessions early.
//! - **Lifetime of browser-session cookies.** Use the same `ttl`
//!   ([`with_default_ttl`](PostgresStoreBuilder::with_default_ttl)).
//!
//! connect-pg-simple has no compare-and-set, so a Node process can still overwrite a
//! concurrent write from this store (last write wins there, as it always has).
//!
//! # Failures and timeouts
//! Every call through [`SessionStore`](super::SessionStore) is bounded by the store's
//! [timeout](PostgresStoreBuilder::with_timeout) (5 s by default), the wait for a free or new
//! connection included, and fails with [`ErrorKind::Timeout`] when it runs out. A dropped
//! connection fails with [`ErrorKind::Unavailable`]; while the server refuses connections, sqlx
//! keeps trying to open one until the timeout runs out. Both are transient: the middleware
//! answers 503 and the next request tries again. The pool replaces broken connections by
//! itself, so requests succeed again once the server is back, without rebuilding the store: a
//! pooled connection unused for a second or more is checked with a round trip before it is
//! used (one used more recently is not, which spares busy pools a round trip per query).
//!
//! A query cut short by the timeout leaves its connection mid-conversation; sqlx checks such a
//! connection with a round trip before returning it to the pool, and closes it if the check
//! fails, so it is never reused in a broken state. While the server is stalled, that check
//! waits too and the connection keeps its place in the pool, so later requests wait for a
//! connection and time out in turn, until the server answers again. A write that times out may
//! still have been applied. [`PostgresStore::prune_expired`] and the background pruning are not
//! bounded: no request waits for them, and deleting many rows can take longer.

mod calls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::error::DatabaseError;
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgRow, Postgres};
use sqlx::query::{Query, QueryAs};

use super::batch::Batches;
pub use super::sql::InvalidName;
use super::sql::batch::{Read, Write};
use super::sql::ops::Replacement;
use super::sql::{
    self, Arg, Backend, Dialect, LoadableRow, PruneTask, Settings, Statement, Statements,
};
use super::{Error, ErrorKind, OwnerPath};

/// connect-pg-simple's table name.
const DEFAULT_TABLE: &str = "session";

/// Serializes table creation between processes (the bytes of `cloakroom`), so two starting
/// at once do not both create it.
const CREATE_LOCK_KEY: i64 = 0x636c_6f61_6b72_6f6f;

/// Sessions in PostgreSQL, in connect-pg-simple's table and format, so Node and Rust services
/// can share them (see the [module docs](self)).
///
/// Supports compare-and-set and every optional method (`all`, `len`, `clear` count and return
/// live sessions only), and finds sessions by owner ([`OwnerIndex`](super::OwnerIndex)). Cloning is cheap and every
/// clone is the same store.
///
/// ```no_run
/// # async fn run() -> Result<(), cloakroom::store::Error> {
/// use cloakroom::store::postgres::PostgresStore;
///
/// let store = PostgresStore::builder("postgres://app@localhost/app")
///     .with_create_table_if_missing(true)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    /// `schema.table`, unquoted, for `Debug`.
    table: String,
    statements: Statements,
    /// Reads and compare-and-sets waiting for a connection, to be run together.
    gets: Option<Batches<calls::Get>>,
    replaces: Option<Batches<calls::Replace>>,
    /// Whether the session locks' table is known to exist: it is created on first use of the
    /// session lock.
    locks_ready: tokio::sync::OnceCell<()>,
    settings: Settings,
    time_zone: Option<String>,
    prune_interval: Option<Duration>,
    /// Dropped with the store, which ends the pruning task.
    _pruner: Option<PruneTask>,
}

/// Where a builder gets its connections.
enum Source {
    Pool(PgPool),
    Url(String),
}

/// Options for a [`PostgresStore`].
#[must_use]
pub struct PostgresStoreBuilder {
    source: Source,
    schema: Option<String>,
    table: String,
    create_table_if_missing: bool,
    settings: Settings,
    prune_interval: Option<Duration>,
    time_zone: Option<String>,
}

impl PostgresStore {
    /// A store on the database at `url` with the default options: table `session` in the
    /// search path (which must exist), one-day default lifetime, pruning every 15 minutes, a
    /// 5-second timeout on each call.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), cloakroom::store::Error> {
    /// let store = cloakroom::store::postgres::PostgresStore::connect("postgres://app@localhost/app").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// When the URL is invalid or the server cannot be reached.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::builder(url).build().await
    }

    /// Configures a store on an existing pool (its connections may be shared with the rest of
    /// the application).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use cloakroom::store::postgres::PostgresStore;
    ///
    /// let pool = sqlx::PgPool::connect("postgres://app@localhost/app").await?;
    /// let store = PostgresStore::builder_with_pool(pool).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder_with_pool(pool: PgPool) -> PostgresStoreBuilder {
        PostgresStoreBuilder::new(Source::Pool(pool))
    }

    /// Configures a store on a new pool for `url`, opened by
    /// [`build`](PostgresStoreBuilder::build) with sqlx's defaults except a 5-second wait for a
    /// free connection. For other pool settings, make the pool and use
    /// [`builder_with_pool`](Self::builder_with_pool).
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder::new(Source::Url(url.into()))
    }

    /// The store's connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Deletes every expired row now, returning how many (connect-pg-simple's `pruneSessions`).
    /// The background task does this periodically.
    ///
    /// # Errors
    /// When the database cannot be reached or the delete fails.
    pub async fn prune_expired(&self) -> Result<u64, Error> {
        sql::ops::prune(&*self.inner).await
    }
}

impl PostgresStoreBuilder {
    fn new(source: Source) -> Self {
        PostgresStoreBuilder {
            source,
            schema: None,
            table: DEFAULT_TABLE.to_owned(),
            create_table_if_missing: false,
            settings: Settings {
                default_ttl: sql::DEFAULT_TTL,
                max_record_size: super::DEFAULT_MAX_RECORD_SIZE,
                timeout: sql::DEFAULT_TIMEOUT,
                owner_path: OwnerPath::default(),
            },
            prune_interval: Some(sql::DEFAULT_PRUNE_INTERVAL),
            time_zone: None,
        }
    }

    /// The table's name (default `session`, connect-pg-simple's `tableName`).
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::PgPool) -> Result<(), cloakroom::store::postgres::InvalidName> {
    /// let builder = cloakroom::store::postgres::PostgresStore::builder_with_pool(pool).with_table_name("web_sessions")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`InvalidName::Table`] unless the name is 1 to 63 ASCII letters, digits and underscores,
    /// not starting with a digit. It is double-quoted in SQL, so its case is kept.
    pub fn with_table_name(mut self, table: impl Into<String>) -> Result<Self, InvalidName> {
        let table = table.into();
        if !sql::is_plain_identifier(&table) {
            return Err(InvalidName::Table);
        }
        self.table = table;
        Ok(self)
    }

    /// The table's schema (connect-pg-simple's `schemaName`); by default the connection's
    /// search path decides.
    ///
    /// # Security
    /// Without a schema the table is named unqualified in every statement, as connect-pg-simple
    /// does, and PostgreSQL looks it up along the connection's `search_path` (by default
    /// `"$user", public`). A role that can create a table in a schema earlier on that path (a
    /// schema named after the application's login role, say) can put its own `session` table
    /// in front of the real one, and so read the sessions written to it or hand out sessions of
    /// its choosing. Name the schema whenever other roles can create objects in the database
    /// (PostgreSQL 15 and later no longer let every role create in `public`, older releases
    /// do).
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::PgPool) -> Result<(), cloakroom::store::postgres::InvalidName> {
    /// let builder = cloakroom::store::postgres::PostgresStore::builder_with_pool(pool).with_schema_name("auth")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`InvalidName::Schema`] unless the name is 1 to 63 ASCII letters, digits and underscores,
    /// not starting with a digit. It is double-quoted in SQL, so its case is kept.
    pub fn with_schema_name(mut self, schema: impl Into<String>) -> Result<Self, InvalidName> {
        let schema = schema.into();
        if !sql::is_plain_identifier(&schema) {
            return Err(InvalidName::Schema);
        }
        self.schema = Some(schema);
        Ok(self)
    }

    /// Whether [`build`](Self::build) creates the table (and its schema) when missing, with
    /// connect-pg-simple's `table.sql` (default false, as connect-pg-simple's
    /// `createTableIfMissing`). The constraint and index are named after the table
    /// (`session_pkey` and `IDX_session_expire` for the default name; for a long table name
    /// the table part is shortened to keep them within PostgreSQL's 63 bytes).
    ///
    /// It also creates the owner index (`session_owner_idx`, see the
    /// [module docs](self#sessions-by-owner)) when missing, on an existing table too. Building
    /// it on a large table holds back writes until it is done: create it beforehand with
    /// `CREATE INDEX CONCURRENTLY` instead. Where this role may not (it does not own an existing
    /// table), a warning is logged and the store works without it.
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::PgPool) {
    /// let builder = cloakroom::store::postgres::PostgresStore::builder_with_pool(pool).with_create_table_if_missing(true);
    /// # }
    /// ```
    pub fn with_create_table_if_missing(mut self, create: bool) -> Self {
        self.create_table_if_missing = create;
        self
    }

    /// How long a session whose cookie has no expiry lives after its last save or touch
    /// (default one day, connect-pg-simple's `ttl`). Rounded up to the second in the table.
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::PgPool) {
    /// use std::time::Duration;
    /// let builder = cloakroom::store::postgres::PostgresStore::builder_with_pool(pool)
    ///     .with_default_ttl(Duration::from_secs(8 * 3600));
    /// # }
    /// ```
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.settings.default_ttl = ttl;
        self
    }

    /// How often expired rows are deleted (default every 15 minutes, each delay randomized to
    /// 50–150 %); `None` turns the background task off, as connect-pg-simple's
    /// `pruneSessionInterval: false` (expired rows stay hidden; delete them with
    /// [`PostgresStore::prune_expired`] or another process).
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::PgPool) {
    /// use std::time::Duration;
    /// let builder = cloakroom::store::postgres::PostgresStore::builder_with_pool(pool)
    ///     .with_prune_interval(Some(Duration::from_secs(60)));
    /// # }
    /// ```
    pub fn with_prune_interval(mut self, interval: Option<Duration>) -> Self {
        self.prune_interval = sql::prune_interval(interval);
        self
    }

    /// The time zone `expire` is written and read in, whatever the connection's `TimeZone`
    /// (sqlx sets `UTC`). Set it to the server's default zone (`SHOW timezone` in `psql`) when
    /// connect-pg-simple shares the table and that zone is not UTC: node-postgres writes
    /// `expire` in it. By default the connection's zone is used.
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::PgPool) -> Result<(), cloakroom::store::postgres::InvalidName> {
    /// let builder = cloakroom::store::postgres::PostgresStore::builder_with_pool(pool).with_time_zone("Europe/Berlin")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`InvalidName::TimeZone`] unless the zone is up to 64 ASCII letters, digits and
    /// `_ + - / : .`. [`build`](Self::build) checks that the server knows it.
    pub fn with_time_zone(mut self, zone: impl Into<String>) -> Result<Self, InvalidName> {
        let zone = zone.into();
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"_+-/:.".contains(&b);
        if zone.is_empty() || zone.len() > 64 || !zone.bytes().all(plain) {
            return Err(InvalidName::TimeZone);
        }
        self.time_zone = Some(zone);
        Ok(self)
    }

    /// How long one call through [`SessionStore`](super::SessionStore) may take, the wait for a free or new
    /// connection included, before it fails with [`ErrorKind::Timeout`] (default 5 s). Keeps
    /// requests from hanging on a database that is down or stalled: the middleware answers 503
    /// within this time. It also caps the pool's own wait for a connection (sqlx's default is
    /// 30 s for a pool given to [`PostgresStore::builder_with_pool`]). A write that times out may still
    /// have been applied.
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::PgPool) {
    /// use std::time::Duration;
    /// let builder = cloakroom::store::postgres::PostgresStore::builder_with_pool(pool)
    ///     .with_timeout(Duration::from_millis(500));
    /// # }
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// The largest record written or read, in bytes of JSON (default
    /// [`DEFAULT_MAX_RECORD_SIZE`](crate::store::DEFAULT_MAX_RECORD_SIZE), 1 MiB). A bigger save fails
    /// with [`ErrorKind::TooLarge`] and writes nothing; a bigger stored row (written by
    /// connect-pg-simple, say) fails the load the same way, and is left as it is. The server
    /// compares the size, so such a row is never transferred: the query returns its length only.
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::PgPool) {
    /// let builder = cloakroom::store::postgres::PostgresStore::builder_with_pool(pool)
    ///     .with_max_record_size(64 * 1024);
    /// # }
    /// ```
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.settings.max_record_size = bytes;
        self
    }

    /// Where a session's owner is in its data, for [`OwnerIndex`](super::OwnerIndex) (default `passport.user`,
    /// where passport.js keeps the signed-in user). The owner index is made for one path: to
    /// change the path of a table that has one, drop `session_owner_idx` and create it for the
    /// new path (see the [module docs](self#sessions-by-owner)); until then
    /// [`sessions_of`](super::OwnerIndex::sessions_of) reads the whole table.
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::PgPool) -> Result<(), cloakroom::store::InvalidOwnerPath> {
    /// let builder = cloakroom::store::postgres::PostgresStore::builder_with_pool(pool)
    ///     .with_owner_path("account.id".parse()?);
    /// # Ok(()) }
    /// ```
    pub fn with_owner_path(mut self, path: OwnerPath) -> Self {
        self.settings.owner_path = path;
        self
    }

    /// Opens the pool (for a URL), checks the time zone, creates the table if asked to, and
    /// starts the pruning task on the current tokio runtime.
    ///
    /// # Errors
    /// When the URL is invalid, the server cannot be reached, it does not know the time zone, or
    /// creating the table fails.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn build(self) -> Result<PostgresStore, Error> {
        let pool = match self.source {
            Source::Pool(pool) => pool,
            Source::Url(url) => {
                // A pool retries a refused connection until its acquire timeout and then reports
                // only the timeout: one plain connection first says why it cannot connect.
                let probe =
                    tokio::time::timeout(self.settings.timeout, PgConnection::connect(&url));
                match probe.await {
                    Ok(Ok(connection)) => {
                        let _ = connection.close().await;
                    }
                    Ok(Err(error)) => return Err(pg_error(error)),
                    Err(elapsed) => return Err(Error::new(ErrorKind::Timeout, elapsed)),
                }
                sql::pool_options().connect(&url).await.map_err(pg_error)?
            }
        };
        let qualify = |table: &str| match &self.schema {
            Some(schema) => format!("{}.{}", sql::quoted(schema), sql::quoted(table)),
            None => sql::quoted(table),
        };
        let qualified = qualify(&self.table);
        let locks = qualify(&sql::lock_table_name(&self.table));
        if let Some(zone) = &self.time_zone {
            sqlx::query(&format!("SELECT now() AT TIME ZONE '{zone}'"))
                .execute(&pool)
                .await
                .map_err(pg_error)?;
        }
        let dialect = PostgresDialect {
            time_zone: self.time_zone.clone(),
        };
        let owner_index = sql::quoted(&sql::owner_index_name(&self.table));
        let statements = Statements::new(
            &dialect,
            &qualified,
            &locks,
            &owner_index,
            &self.settings.owner_path,
        );
        if self.create_table_if_missing {
            let schema = self.schema.as_deref();
            let owner_index = &statements.create_owner_index;
            create_table(&pool, schema, &self.table, &qualified, owner_index).await?;
        }
        let table = match &self.schema {
            Some(schema) => format!("{schema}.{}", self.table),
            None => self.table,
        };
        let gets = statements.get_many.clone().map(|many| {
            Batches::new(calls::Get {
                one: statements.get.clone(),
                many,
            })
        });
        let replaces = statements.replace_many.clone().map(|many| {
            Batches::new(calls::Replace {
                one: statements.replace.clone(),
                many,
            })
        });
        let inner = Arc::new_cyclic(|weak| Inner {
            pool,
            table,
            statements,
            gets,
            replaces,
            locks_ready: tokio::sync::OnceCell::new(),
            settings: self.settings,
            time_zone: self.time_zone,
            prune_interval: self.prune_interval,
            _pruner: self
                .prune_interval
                .map(|interval| sql::spawn_pruner(weak.clone(), interval)),
        });
        Ok(PostgresStore { inner })
    }
}

/// Creates the schema and table (connect-pg-simple's `table.sql`) unless they exist, and the
/// owner index (the statement `owner_index`) unless it exists, holding an advisory lock so
/// processes starting together do not race.
async fn create_table(
    pool: &PgPool,
    schema: Option<&str>,
    table: &str,
    qualified: &str,
    owner_index: &str,
) -> Result<(), Error> {
    let mut tx = pool.begin().await.map_err(pg_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CREATE_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
    if let Some(schema) = schema {
        let (exists,): (bool,) = sqlx::query_as("SELECT to_regnamespace($1::text) IS NOT NULL")
            .bind(sql::quoted(schema))
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_error)?;
        if !exists {
            sqlx::query(&format!("CREATE SCHEMA {}", sql::quoted(schema)))
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
        }
    }
    let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass($1::text) IS NOT NULL")
        .bind(qualified)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_error)?;
    if !exists {
        let primary_key = sql::quoted(&primary_key_name(table));
        let index = sql::quoted(&sql::expire_index_name(table));
        let statements = [
            format!(
                "CREATE TABLE {qualified} (\n  \"sid\" varchar NOT NULL COLLATE \"default\",\n  \
                 \"sess\" json NOT NULL,\n  \"expire\" timestamp(6) NOT NULL\n)\nWITH (OIDS=FALSE)"
            ),
            format!(
                "ALTER TABLE {qualified} ADD CONSTRAINT {primary_key} PRIMARY KEY (\"sid\") \
                 NOT DEFERRABLE INITIALLY IMMEDIATE"
            ),
            format!("CREATE INDEX {index} ON {qualified} (\"expire\")"),
        ];
        for statement in &statements {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
        }
    }
    // Looked up first: `CREATE INDEX IF NOT EXISTS` locks the table against writes, and needs
    // the role to own it, even when the index is there.
    let (indexed,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = to_regclass($1::text)::oid AND c.relname = $2)",
    )
    .bind(qualified)
    .bind(sql::owner_index_name(table))
    .fetch_one(&mut *tx)
    .await
    .map_err(pg_error)?;
    if !indexed && let Err(error) = sqlx::query(owner_index).execute(&mut *tx).await {
        // A table made above is this role's: only one that was there can refuse. The
        // transaction did nothing else then, and the store works without the index.
        if exists && is_insufficient_privilege(&error) {
            tracing::warn!(
                store = "postgres",
                error = &error as &dyn std::error::Error,
                "cannot create the owner index (the role does not own the sessions' table); \
                 finding sessions by owner reads the whole table until it is created"
            );
            return Ok(());
        }
        return Err(pg_error(error));
    }
    tx.commit().await.map_err(pg_error)
}

/// Whether the server refused for want of a privilege (SQLSTATE 42501).
fn is_insufficient_privilege(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(DatabaseError::code)
        .is_some_and(|code| code == "42501")
}

/// PostgreSQL's spelling of the shared statements: `$n` parameters, `expire` a `timestamp`
/// written from seconds with `to_timestamp` (in the configured zone, if any), the JSON as
/// `json`, and lock times by the server's clock.
struct PostgresDialect {
    time_zone: Option<String>,
}

impl Dialect for PostgresDialect {
    fn param(&self, n: usize) -> Option<String> {
        Some(format!("${n}"))
    }

    // `to_timestamp(s)` into a `timestamp` column converts to the connection's zone, as
    // connect-pg-simple writes it; with a zone, the conversion names it instead.
    fn time(&self, param: &str) -> String {
        match &self.time_zone {
            None => format!("to_timestamp({param}::int8)"),
            Some(zone) => format!("(to_timestamp({param}::int8) AT TIME ZONE '{zone}')"),
        }
    }

    fn expire_ms(&self) -> String {
        match &self.time_zone {
            None => "(extract(epoch FROM expire::timestamptz) * 1000)::int8".to_owned(),
            Some(zone) => {
                format!("(extract(epoch FROM expire AT TIME ZONE '{zone}') * 1000)::int8")
            }
        }
    }

    fn sess_text(&self) -> &'static str {
        "sess::text"
    }

    fn sess_len(&self) -> &'static str {
        "octet_length(sess::text)::int8"
    }

    fn sess_value(&self, param: &str) -> String {
        format!("{param}::json")
    }

    fn now_ms(&self) -> &'static str {
        "(extract(epoch FROM clock_timestamp()) * 1000)::int8"
    }

    fn lock_columns(&self) -> (&'static str, &'static str) {
        ("varchar", "bigint")
    }

    fn has_arrays(&self) -> bool {
        true
    }

    // `#>>` turns every string in the document into text and fails on an escape text cannot
    // hold (see the module docs), so where `sess` has one, it is read with those escapes
    // replaced by `?`. `strpos` first: most sessions have no `\u` at all.
    fn owner(&self, path: &OwnerPath) -> String {
        // `'{"passport","user"}'`: each key quoted, so one spelled `NULL` is a key too.
        let keys: Vec<String> = path
            .segments()
            .map(|segment| format!("\"{segment}\""))
            .collect();
        let keys = format!("'{{{}}}'", keys.join(","));
        let unconvertible = escaped_literal(UNCONVERTIBLE_ESCAPE);
        format!(
            "CASE WHEN strpos(sess::text, {backslash_u}) = 0 OR sess::text !~ {unconvertible} \
             THEN sess #>> {keys} \
             ELSE regexp_replace(sess::text, {unconvertible}, {question_mark}, 'g')::json \
             #>> {keys} END",
            backslash_u = escaped_literal(r"\u"),
            question_mark = escaped_literal(r"\1?"),
        )
    }
}

/// A JSON escape that `#>>` may fail to turn into text: of U+0000, or of anything past ASCII (a
/// lone surrogate, a character the server's encoding lacks). Only a real escape matches: its
/// backslash follows an even run of backslashes, so text that reads `\u0000` (`\\u0000` in
/// the JSON) does not. The run before it is kept (group 1).
const UNCONVERTIBLE_ESCAPE: &str = r"(?<!\\)((?:\\\\)*)\\u(?:0000|(?!00[0-7])[0-9A-Fa-f]{4})";

/// `text` as an `E''` string literal, which means the same whatever the server's
/// `standard_conforming_strings`: the index and every query must read it alike.
fn escaped_literal(text: &str) -> String {
    debug_assert!(!text.contains('\''), "only constant patterns are spliced");
    format!("E'{}'", text.replace('\\', "\\\\"))
}

/// The primary key constraint of connect-pg-simple's `table.sql` (`session_pkey` for the default
/// table), named after the table so two tables can share a schema.
pub(crate) fn primary_key_name(table: &str) -> String {
    sql::derived_name("", table, "_pkey")
}

fn pg_error(error: sqlx::Error) -> Error {
    sql::store_error(error, database_kind)
}

/// Server errors by SQLSTATE: the ones that mean "down" or "too slow" are transient.
fn database_kind(error: &dyn DatabaseError) -> ErrorKind {
    match error.code().as_deref() {
        // connection_exception, admin_shutdown, crash_shutdown, cannot_connect_now,
        // too_many_connections
        Some(code) if code.starts_with("08") => ErrorKind::Unavailable,
        Some("57P01" | "57P02" | "57P03" | "53300") => ErrorKind::Unavailable,
        // query_canceled (statement_timeout), lock_not_available (lock_timeout)
        Some("57014" | "55P03") => ErrorKind::Timeout,
        _ => ErrorKind::Backend,
    }
}

/// Binds the shared operations' parameters to an sqlx Postgres query.
fn query<'q>(sql: &'q str, args: &'q [Arg<'q>]) -> Query<'q, Postgres, PgArguments> {
    args.iter().fold(sqlx::query(sql), |query, arg| match *arg {
        Arg::Text(text) => query.bind(text),
        Arg::Int(n) => query.bind(n),
    })
}

fn query_as<'q, O>(sql: &'q str, args: &'q [Arg<'q>]) -> QueryAs<'q, Postgres, O, PgArguments>
where
    O: for<'r> sqlx::FromRow<'r, PgRow>,
{
    args.iter()
        .fold(sqlx::query_as(sql), |query, arg| match *arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(n) => query.bind(n),
        })
}

impl Backend for Inner {
    const STORE: &'static str = "postgres";

    fn statements(&self) -> &Statements {
        &self.statements
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn error(error: sqlx::Error) -> Error {
        pg_error(error)
    }

    async fn execute(&self, sql: &Statement, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        Ok(query(sql, args).execute(&self.pool).await?.rows_affected())
    }

    async fn count(&self, sql: &Statement, args: &[Arg<'_>]) -> Result<i64, sqlx::Error> {
        let (count,): (i64,) = query_as(sql, args).fetch_one(&self.pool).await?;
        Ok(count)
    }

    async fn get_row(
        &self,
        sid: &str,
        now: i64,
        max_size: i64,
    ) -> Result<Option<(Option<String>, i64, i64)>, sqlx::Error> {
        let Some(gets) = &self.gets else {
            let args = [Arg::Text(sid), Arg::Int(now), Arg::Int(max_size)];
            return self.fetch_one_record(&self.statements.get, &args).await;
        };
        let request = || Read {
            sid: sid.to_owned(),
            now,
            max_size,
        };
        gets.call(&self.pool, request).await
    }

    async fn replace(&self, write: Replacement<'_>) -> Result<bool, sqlx::Error> {
        let Some(replaces) = &self.replaces else {
            return Ok(self
                .execute(&self.statements.replace, &write.args())
                .await?
                > 0);
        };
        replaces.call(&self.pool, || Write::new(write)).await
    }

    async fn fetch_one_record(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> Result<Option<(Option<String>, i64, i64)>, sqlx::Error> {
        query_as(sql, args).fetch_optional(&self.pool).await
    }

    async fn fetch_records(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> Result<Vec<(String, Option<String>, i64)>, sqlx::Error> {
        query_as(sql, args).fetch_all(&self.pool).await
    }

    async fn fetch_loadable_records(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> Result<Vec<LoadableRow>, sqlx::Error> {
        query_as(sql, args).fetch_all(&self.pool).await
    }

    /// Creates the locks' table unless it exists, once per store, holding the same advisory
    /// lock as table creation so processes starting together do not race.
    async fn ensure_lock_table(&self) -> Result<(), Error> {
        self.locks_ready
            .get_or_try_init(|| async {
                let mut tx = self.pool.begin().await.map_err(pg_error)?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(CREATE_LOCK_KEY)
                    .execute(&mut *tx)
                    .await
                    .map_err(pg_error)?;
                sqlx::query(&self.statements.create_locks)
                    .execute(&mut *tx)
                    .await
                    .map_err(pg_error)?;
                tx.commit().await.map_err(pg_error)
            })
            .await?;
        Ok(())
    }

    fn has_lock_table(&self) -> bool {
        self.locks_ready.initialized()
    }
}

sql::impl_sql_store!(PostgresStore);

impl fmt::Debug for PostgresStore {
    // The pool is left out: its options hold the connection password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.inner.table)
            .field("default_ttl", &self.inner.settings.default_ttl)
            .field("prune_interval", &self.inner.prune_interval)
            .field("time_zone", &self.inner.time_zone)
            .field("timeout", &self.inner.settings.timeout)
            .field("owner_path", &self.inner.settings.owner_path)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PostgresStoreBuilder {
    // The URL or pool is left out: either holds the connection password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("create_table_if_missing", &self.create_table_if_missing)
            .field("default_ttl", &self.settings.default_ttl)
            .field("prune_interval", &self.prune_interval)
            .field("time_zone", &self.time_zone)
            .field("timeout", &self.settings.timeout)
            .field("owner_path", &self.settings.owner_path)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_connect_pg_simples() {
        let plain = PostgresDialect { time_zone: None };
        let plain = Statements::new(
            &plain,
            "\"session\"",
            "\"session_lock\"",
            "\"session_owner_idx\"",
            &OwnerPath::default(),
        );
        assert_eq!(
            plain.insert,
            "INSERT INTO \"session\" AS s (sess, expire, sid) \
             VALUES ($1::json, to_timestamp($2::int8), $3) \
             ON CONFLICT (sid) DO UPDATE SET sess = excluded.sess, expire = excluded.expire \
             WHERE s.expire < to_timestamp($4::int8)"
        );
        assert_eq!(
            plain.prune,
            "DELETE FROM \"session\" WHERE expire < to_timestamp($1::int8)"
        );
        // The server compares the size: a row over the limit comes back as its length only.
        assert_eq!(
            plain.get,
            "SELECT CASE WHEN octet_length(sess::text)::int8 > $3 THEN NULL ELSE sess::text END, \
             octet_length(sess::text)::int8, (extract(epoch FROM expire::timestamptz) * 1000)::int8 \
             FROM \"session\" WHERE sid = $1 AND expire >= to_timestamp($2::int8)"
        );
        // Many at once: the ids an array; the writes arrays of `replace`'s parameters.
        assert_eq!(
            plain.get_many.unwrap(),
            "SELECT sid, CASE WHEN octet_length(sess::text)::int8 > $3 THEN NULL ELSE sess::text END, \
             octet_length(sess::text)::int8, (extract(epoch FROM expire::timestamptz) * 1000)::int8 \
             FROM \"session\" WHERE sid = ANY($1::text[]) AND expire >= to_timestamp($2::int8)"
        );
        assert_eq!(
            plain.replace_many.unwrap(),
            "UPDATE \"session\" SET sess = v_sess::json, expire = to_timestamp(v_expire::int8) \
             FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[]) \
             WITH ORDINALITY AS v(v_sess, v_expire, v_sid, v_expected, v_n) \
             WHERE sid = v_sid AND sess::text = v_expected AND expire >= to_timestamp($5::int8) \
             RETURNING v_n"
        );
        let zoned = PostgresDialect {
            time_zone: Some("Asia/Kolkata".to_owned()),
        };
        let zoned = Statements::new(
            &zoned,
            "\"s\".\"t\"",
            "\"s\".\"t_lock\"",
            "\"t_owner_idx\"",
            &OwnerPath::default(),
        );
        assert_eq!(
            zoned.touch,
            "UPDATE \"s\".\"t\" SET expire = (to_timestamp($1::int8) AT TIME ZONE 'Asia/Kolkata') \
             WHERE sid = $2 AND expire >= (to_timestamp($3::int8) AT TIME ZONE 'Asia/Kolkata')"
        );
    }

    /// The statement in the module docs, on one line. The query must spell the owner as the
    /// index does, or the planner cannot use the index.
    #[test]
    fn the_owner_index_is_the_documented_one_and_the_query_reads_it() {
        let path = OwnerPath::default();
        let statements = Statements::new(
            &PostgresDialect { time_zone: None },
            "\"session\"",
            "\"session_lock\"",
            "\"session_owner_idx\"",
            &path,
        );
        let owner = r#"CASE WHEN strpos(sess::text, E'\\u') = 0 OR sess::text !~ E'(?<!\\\\)((?:\\\\\\\\)*)\\\\u(?:0000|(?!00[0-7])[0-9A-Fa-f]{4})' THEN sess #>> '{"passport","user"}' ELSE regexp_replace(sess::text, E'(?<!\\\\)((?:\\\\\\\\)*)\\\\u(?:0000|(?!00[0-7])[0-9A-Fa-f]{4})', E'\\1?', 'g')::json #>> '{"passport","user"}' END"#;
        assert_eq!(
            statements.create_owner_index,
            format!(
                "CREATE INDEX IF NOT EXISTS \"session_owner_idx\" ON \"session\" (({owner})) \
                 WHERE ({owner}) IS NOT NULL"
            )
        );
        assert_eq!(
            statements.sessions_of,
            format!(
                "SELECT sid, CASE WHEN octet_length(sess::text)::int8 > $3 THEN NULL ELSE sess::text END, \
                 octet_length(sess::text)::int8, (extract(epoch FROM expire::timestamptz) * 1000)::int8 \
                 FROM \"session\" WHERE ({owner}) = $1 AND expire >= to_timestamp($2::int8)"
            )
        );
        let custom = PostgresDialect { time_zone: None }.owner(&"account.NULL".parse().unwrap());
        assert!(custom.contains(r#"'{"account","NULL"}'"#), "{custom}");
    }

    #[test]
    fn names_are_validated() {
        let builder = || PostgresStore::builder("postgres://localhost/db");
        assert_eq!(
            builder().with_table_name("a\"b").unwrap_err(),
            InvalidName::Table
        );
        assert_eq!(
            builder().with_schema_name("").unwrap_err(),
            InvalidName::Schema
        );
        assert_eq!(
            builder().with_time_zone("UTC'; drop").unwrap_err(),
            InvalidName::TimeZone
        );
        assert!(
            builder()
                .with_time_zone("America/Argentina/Buenos_Aires")
                .is_ok()
        );
        assert!(builder().with_time_zone("UTC+3").is_ok());
    }

    #[test]
    fn debug_hides_the_url() {
        let builder = PostgresStore::builder("postgres://user:hunter2@localhost/db");
        assert!(!format!("{builder:?}").contains("hunter2"));
    }
}
