//! [`MySqlStore`]: sessions in MariaDB or MySQL, in express-mysql-session's table.
//!
//! # Schema
//! One row a session, in the table express-mysql-session 3 creates:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS `sessions` (
//!   `session_id` varchar(128) COLLATE utf8mb4_bin NOT NULL,
//!   `expires` int(11) unsigned NOT NULL,
//!   `data` mediumtext COLLATE utf8mb4_bin,
//!   PRIMARY KEY (`session_id`)
//! ) ENGINE=InnoDB
//! ```
//!
//! `data` is express-session's JSON, byte for byte (`JSON.stringify` of the session). The
//! table and its columns can be renamed, as express-mysql-session's `schema` option does
//! ([`with_table_name`](MySqlStoreBuilder::with_table_name),
//! [`with_column_names`](MySqlStoreBuilder::with_column_names)); older tables whose `data` is
//! `text`, and `longtext` or MariaDB's `JSON` (a `longtext`), work alike. MySQL's native `JSON`
//! type does not: MySQL rewrites the text it stores. Unlike express-mysql-session, the store
//! does not create the table unless asked to
//! ([`with_create_table_if_missing`](MySqlStoreBuilder::with_create_table_if_missing)).
//!
//! # Expiry
//! `expires` is whole Unix seconds, written as express-mysql-session writes it: the cookie's
//! expiry rounded to the nearest second (`Math.round`), or for a browser-session cookie
//! `now + ttl` ([`with_default_ttl`](MySqlStoreBuilder::with_default_ttl), one day by default,
//! its `expiration`), on every save and touch. A row is live while
//! `expires >= round(now)`, with `now` taken from this process's clock (as express-mysql-session
//! uses Node's).
//!
//! # Compare-and-set
//! A record's [`Version`](super::Version) is its stored `data` text. A compare-and-set is one
//! `UPDATE … WHERE session_id = ? AND CAST(data AS BINARY) = ? AND expires >= ?`: it writes only
//! if the row is still live and holds exactly those bytes, so a concurrent write is never
//! overwritten and a destroyed or expired session is never brought back. sqlx connects with
//! `CLIENT_FOUND_ROWS`, so the server counts the rows the `WHERE` matched, not those it
//! changed: a write of identical bytes still counts as written.
//!
//! A new session is a plain `INSERT`; if the id is taken, an `UPDATE … WHERE session_id = ? AND
//! expires < ?` takes over the row only if it has expired. (`INSERT … ON DUPLICATE KEY UPDATE`
//! cannot say which it did: with `CLIENT_FOUND_ROWS` a live row it leaves alone counts one, as
//! an insert does.) A touch changes `expires` only, so it never changes the version.
//!
//! # Under load: one statement for many sessions
//! When every pooled connection is busy, requests wait for one. Reads (`get`) and
//! compare-and-sets (a save of a loaded session, without a session lock) that wait at the same
//! time are run together: the first to get a connection takes the others of its kind (up to
//! 128) and runs them as one statement, and each gets its own answer. Nothing waits for a batch
//! to fill: with a connection free, a call runs alone, as before. MySQL has no arrays, so each
//! statement comes in lists of 2, 4, 8 … 128 entries (the last entry repeated to fill one),
//! and each connection prepares a handful.
//!
//! - Reads: `SELECT … WHERE session_id IN (…)`.
//! - Compare-and-sets: `UPDATE … JOIN (SELECT ? … UNION ALL SELECT ? …) AS v ON session_id =
//!   v_sid AND data = v_expected AND expires >= <now> SET …`, in a transaction. MySQL says how
//!   many rows an `UPDATE` matched, not which, so the transaction is committed only when every
//!   write matched its row; otherwise it is rolled back and each write is made alone, under its
//!   own condition (as are two writes to one session that meet in one batch, which match one
//!   row). Either way a batch writes exactly what the same writes would one after the other.
//!   The writes are joined in id order, so batches running at once lock their rows in one
//!   order and never deadlock each other; a deadlock or lock timeout with another client's
//!   transaction rolls the batch back to writes made alone too.
//!
//! If the call running a batch is dropped (its timeout ran out) or its statement fails, the
//! other reads each run alone, so their outcomes and errors are their own; the other writes
//! fail with [`ErrorKind::Unavailable`], since the batch may have been committed (run again, a
//! write would find itself and report a conflict, and a caller would apply its change twice).
//! New sessions, deletes, touches and writes under a session lock are not batched.
//!
//! # Session lock
//! With [`with_session_lock`](crate::SessionLayerBuilder::with_session_lock), a session's lock is
//! a row of a second table beside the sessions' (`sessions_lock` for the default table),
//! created on first use:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS `sessions_lock` (
//!   `sid` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
//!   `token` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
//!   `until` BIGINT NOT NULL
//! )
//! ```
//!
//! `until` is when the lease runs out, in milliseconds by the server's clock. Taking the lock is
//! an insert, or where a row is there, an update that succeeds only if its lease has run out;
//! a write under the lock adds `AND EXISTS (…the lock row with the holder's token, still
//! running…)` to its compare-and-set (fencing). express-mysql-session never reads this table.
//!
//! # Pruning
//! Expired rows are hidden at once and deleted, as express-mysql-session's `clearExpired` does
//! (`DELETE FROM sessions WHERE expires < ?`), by a background task every 15 minutes (its
//! `checkExpirationInterval`; each delay randomized to 50–150 % so processes sharing the table
//! do not prune in step), started on the tokio runtime that builds the store and stopped when
//! the last clone of the store is dropped. A failed prune is logged and retried at the next
//! interval. [`MySqlStore::prune_expired`] prunes on demand. The table has no index on
//! `expires` (express-mysql-session makes none), so each prune reads the whole table.
//!
//! # Sessions by owner
//! The store implements [`OwnerIndex`](super::OwnerIndex) with a generated column and its index, added to the
//! table beside express-mysql-session's columns
//! ([`with_create_table_if_missing`](MySqlStoreBuilder::with_create_table_if_missing) adds
//! them, to an existing table too):
//!
//! ```sql
//! ALTER TABLE `sessions`
//!   ADD COLUMN `cloakroom_owner` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin AS (LEFT(
//!     CASE WHEN JSON_VALID(`data`) THEN JSON_VALUE(`data`, '$."passport"."user"')
//!     WHEN JSON_VALID(REGEXP_REPLACE(`data`, CONCAT(REPEAT(CHAR(92 USING utf8mb4), 2), 'u[dD][89a-fA-F][0-9a-fA-F]{2}'), '?'))
//!     THEN JSON_VALUE(REGEXP_REPLACE(`data`, CONCAT(REPEAT(CHAR(92 USING utf8mb4), 2), 'u[dD][89a-fA-F][0-9a-fA-F]{2}'), '?'), '$."passport"."user"')
//!     END, 255)) VIRTUAL,
//!   ADD INDEX `sessions_owner_idx` (`cloakroom_owner`)
//! ```
//!
//! The server computes the column and updates its index in the statement that writes the row,
//! Express's writes included, so the index is never behind the data. The column is virtual (not
//! stored) and express-mysql-session names the columns it writes, so it reads and writes the
//! table as before. The owner is at the owner path
//! ([`with_owner_path`](MySqlStoreBuilder::with_owner_path), `passport.user` by default);
//! changing the path needs the column dropped and made again.
//!
//! The expression must never fail, or it would fail the write: `JSON_VALID` guards
//! `JSON_VALUE`, and MariaDB finds a JSON escape of a lone UTF-16 surrogate invalid (which
//! `JSON.stringify` writes for a string with half a pair), so for such a row the escapes of
//! surrogates are read as `?` first. The owner is cut to 255 characters, in the index and in
//! the query alike; the store checks each row it finds against the whole owner. Tested on
//! MariaDB 10.11; MySQL 8.0.21 or later has the same functions, but was not tested.
//!
//! # Sharing the table with express-mysql-session
//! Point both at the same table and they read each other's sessions: the rows, the expiry
//! rule and the queries are express-mysql-session's, and the session cookie is
//! express-session's (use the same `secret` and cookie `name`). Use the same lifetime for
//! browser-session cookies (its `expiration`,
//! [`with_default_ttl`](MySqlStoreBuilder::with_default_ttl) here). express-mysql-session has no
//! compare-and-set, so a Node process can still overwrite a concurrent write from this store
//! (last write wins there, as it always has).
//!
//! # Failures and timeouts
//! Every call through [`SessionStore`](super::SessionStore) is bounded by the store's
//! [timeout](MySqlStoreBuilder::with_timeout) (5 s by default), the wait for a free or new
//! connection included, and fails with [`ErrorKind::Timeout`] when it runs out. A dropped
//! connection fails with [`ErrorKind::Unavailable`]; while the server refuses connections, sqlx
//! keeps trying to open one until the timeout runs out. Both are transient: the middleware
//! answers 503 and the next request tries again. The pool replaces broken connections by
//! itself, so requests succeed again once the server is back, without rebuilding the store: a
//! pooled connection unused for a second or more is checked with a round trip before it is
//! used (one used more recently is not, which spares busy pools a round trip per query). A
//! write that times out may still have been applied. [`MySqlStore::prune_expired`] and the
//! background pruning are not bounded: no request waits for them.
//!
//! A row whose `data` is not an express-session record (not JSON, no `cookie`, not UTF-8, or
//! NULL) fails the load of that session only, with [`ErrorKind::Decode`].

mod calls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::error::DatabaseError;
use sqlx::mysql::{
    MySql, MySqlArguments, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlRow,
};
use sqlx::query::{Query, QueryAs};

use super::batch::Batches;
pub use super::sql::InvalidName;
use super::sql::batch::{Read, Write};
use super::sql::ops::Replacement;
use super::sql::{
    self, Arg, Backend, Dialect, LoadableRow, PruneTask, Rounding, Settings, Statement, Statements,
};
use super::{Error, ErrorKind, OwnerPath};

/// express-mysql-session's table name.
const DEFAULT_TABLE: &str = "sessions";

/// express-mysql-session's column names: session id, expiry, data.
const DEFAULT_COLUMNS: [&str; 3] = ["session_id", "expires", "data"];

/// The generated column the owner index is on.
const OWNER_COLUMN: &str = "cloakroom_owner";

/// How many characters of an owner the index keeps (a `VARCHAR(255)` of utf8mb4 is within
/// InnoDB's key size).
const OWNER_CHARS: usize = 255;

/// Sessions in MariaDB or MySQL, in express-mysql-session's table and format, so Node and Rust
/// services can share them (see the [module docs](self)).
///
/// Supports compare-and-set, session locks ([`LockStore`](super::LockStore)) and every optional method (`all`,
/// `len`, `clear` count and return live sessions only), and finds sessions by owner
/// ([`OwnerIndex`](super::OwnerIndex)). Cloning is cheap and every clone is the same store.
///
/// ```no_run
/// # async fn run() -> Result<(), cloakroom::store::Error> {
/// use cloakroom::store::mysql::MySqlStore;
///
/// let store = MySqlStore::builder("mysql://app@localhost/app")
///     .with_create_table_if_missing(true)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MySqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: MySqlPool,
    /// The table's name, unquoted, for `Debug`.
    table: String,
    statements: Statements,
    /// Reads waiting for a connection, to be run together.
    gets: Batches<calls::Get>,
    replaces: Batches<calls::Replace>,
    /// Whether the session locks' table is known to exist: it is created on first use of the
    /// session lock.
    locks_ready: tokio::sync::OnceCell<()>,
    settings: Settings,
    prune_interval: Option<Duration>,
    /// Dropped with the store, which ends the pruning task.
    _pruner: Option<PruneTask>,
}

/// Where a builder gets its connections.
enum Source {
    Pool(MySqlPool),
    Url(String),
}

/// Options for a [`MySqlStore`].
#[must_use]
pub struct MySqlStoreBuilder {
    source: Source,
    table: String,
    columns: [String; 3],
    create_table_if_missing: bool,
    settings: Settings,
    prune_interval: Option<Duration>,
}

impl MySqlStore {
    /// A store on the database at `url` with the default options: table `sessions` (which
    /// must exist), one-day default lifetime, pruning every 15 minutes, a 5-second timeout on
    /// each call.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), cloakroom::store::Error> {
    /// let store = cloakroom::store::mysql::MySqlStore::connect("mysql://app@localhost/app").await?;
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
    /// the application, and it carries every pool setting: size, idle and lifetime limits).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use cloakroom::store::mysql::MySqlStore;
    ///
    /// let pool = sqlx::mysql::MySqlPoolOptions::new()
    ///     .max_connections(20)
    ///     .connect("mysql://app@localhost/app")
    ///     .await?;
    /// let store = MySqlStore::builder_with_pool(pool).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder_with_pool(pool: MySqlPool) -> MySqlStoreBuilder {
        MySqlStoreBuilder::new(Source::Pool(pool))
    }

    /// Configures a store on a new pool for `url`, opened by
    /// [`build`](MySqlStoreBuilder::build) with sqlx's defaults except a 5-second wait for a
    /// free connection. For other pool settings, make the pool and use
    /// [`builder_with_pool`](Self::builder_with_pool).
    pub fn builder(url: impl Into<String>) -> MySqlStoreBuilder {
        MySqlStoreBuilder::new(Source::Url(url.into()))
    }

    /// The store's connection pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.inner.pool
    }

    /// Deletes every expired row now, returning how many (express-mysql-session's
    /// `clearExpiredSessions`). The background task does this periodically.
    ///
    /// # Errors
    /// When the database cannot be reached or the delete fails.
    pub async fn prune_expired(&self) -> Result<u64, Error> {
        sql::ops::prune(&*self.inner).await
    }
}

impl MySqlStoreBuilder {
    fn new(source: Source) -> Self {
        MySqlStoreBuilder {
            source,
            table: DEFAULT_TABLE.to_owned(),
            columns: DEFAULT_COLUMNS.map(str::to_owned),
            create_table_if_missing: false,
            settings: Settings {
                default_ttl: sql::DEFAULT_TTL,
                max_record_size: super::DEFAULT_MAX_RECORD_SIZE,
                timeout: sql::DEFAULT_TIMEOUT,
                owner_path: OwnerPath::default(),
            },
            prune_interval: Some(sql::DEFAULT_PRUNE_INTERVAL),
        }
    }

    /// The table's name (default `sessions`, express-mysql-session's `schema.tableName`), in
    /// the connection's database.
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::MySqlPool) -> Result<(), cloakroom::store::mysql::InvalidName> {
    /// let builder = cloakroom::store::mysql::MySqlStore::builder_with_pool(pool).with_table_name("web_sessions")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`InvalidName::Table`] unless the name is 1 to 63 ASCII letters, digits and underscores,
    /// not starting with a digit. It is quoted with backticks in SQL.
    pub fn with_table_name(mut self, table: impl Into<String>) -> Result<Self, InvalidName> {
        let table = table.into();
        if !sql::is_plain_identifier(&table) {
            return Err(InvalidName::Table);
        }
        self.table = table;
        Ok(self)
    }

    /// The columns' names: session id, expiry and data (default `session_id`, `expires` and
    /// `data`, express-mysql-session's `schema.columnNames`).
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::MySqlPool) -> Result<(), cloakroom::store::mysql::InvalidName> {
    /// let builder = cloakroom::store::mysql::MySqlStore::builder_with_pool(pool)
    ///     .with_column_names("sid", "expires_at", "payload")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`InvalidName::Column`] unless each name is 1 to 63 ASCII letters, digits and
    /// underscores, not starting with a digit, and none is the owner index's column
    /// (`cloakroom_owner`) or another's name.
    pub fn with_column_names(
        mut self,
        session_id: impl Into<String>,
        expires: impl Into<String>,
        data: impl Into<String>,
    ) -> Result<Self, InvalidName> {
        let columns = [session_id.into(), expires.into(), data.into()];
        let taken = |i: usize, name: &str| {
            name.eq_ignore_ascii_case(OWNER_COLUMN)
                || columns[..i]
                    .iter()
                    .any(|other| other.eq_ignore_ascii_case(name))
        };
        for (i, name) in columns.iter().enumerate() {
            if !sql::is_plain_identifier(name) || taken(i, name) {
                return Err(InvalidName::Column);
            }
        }
        self.columns = columns;
        Ok(self)
    }

    /// Whether [`build`](Self::build) creates the table when missing, with
    /// express-mysql-session's statement (default false; express-mysql-session's
    /// `createDatabaseTable` is true by default).
    ///
    /// It also adds the owner index's generated column and index (see the
    /// [module docs](self#sessions-by-owner)) when missing, to an existing table too: on a large
    /// table, MySQL and MariaDB add a virtual column in place, but building the index reads
    /// every row. Where this user may not alter the table, a warning is logged and the store
    /// works without the index ([`sessions_of`](super::OwnerIndex::sessions_of) then fails).
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::MySqlPool) {
    /// let builder = cloakroom::store::mysql::MySqlStore::builder_with_pool(pool).with_create_table_if_missing(true);
    /// # }
    /// ```
    pub fn with_create_table_if_missing(mut self, create: bool) -> Self {
        self.create_table_if_missing = create;
        self
    }

    /// How long a session whose cookie has no expiry lives after its last save or touch
    /// (default one day, express-mysql-session's `expiration`). Rounded to the nearest second in
    /// the table.
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::MySqlPool) {
    /// use std::time::Duration;
    /// let builder = cloakroom::store::mysql::MySqlStore::builder_with_pool(pool)
    ///     .with_default_ttl(Duration::from_secs(8 * 3600));
    /// # }
    /// ```
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.settings.default_ttl = ttl;
        self
    }

    /// How often expired rows are deleted (default every 15 minutes, express-mysql-session's
    /// `checkExpirationInterval`, each delay randomized to 50–150 %); `None` turns the
    /// background task off, as its `clearExpired: false` (expired rows stay hidden; delete them
    /// with [`MySqlStore::prune_expired`] or another process).
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::MySqlPool) {
    /// use std::time::Duration;
    /// let builder = cloakroom::store::mysql::MySqlStore::builder_with_pool(pool)
    ///     .with_prune_interval(Some(Duration::from_secs(60)));
    /// # }
    /// ```
    pub fn with_prune_interval(mut self, interval: Option<Duration>) -> Self {
        self.prune_interval = sql::prune_interval(interval);
        self
    }

    /// How long one call through [`SessionStore`](super::SessionStore) may take, the wait for a free or new
    /// connection included, before it fails with [`ErrorKind::Timeout`] (default 5 s). Keeps
    /// requests from hanging on a database that is down or stalled: the middleware answers 503
    /// within this time. A write that times out may still have been applied.
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::MySqlPool) {
    /// use std::time::Duration;
    /// let builder = cloakroom::store::mysql::MySqlStore::builder_with_pool(pool)
    ///     .with_timeout(Duration::from_millis(500));
    /// # }
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// The largest record written or read, in bytes of JSON (default
    /// [`DEFAULT_MAX_RECORD_SIZE`](crate::store::DEFAULT_MAX_RECORD_SIZE), 1 MiB). A bigger save
    /// fails with [`ErrorKind::TooLarge`] and writes nothing; a bigger stored row (written by
    /// express-mysql-session, say) fails the load the same way, and is left as it is. The server
    /// compares the size, so such a row is never transferred: the query returns its length only.
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::MySqlPool) {
    /// let builder = cloakroom::store::mysql::MySqlStore::builder_with_pool(pool)
    ///     .with_max_record_size(64 * 1024);
    /// # }
    /// ```
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.settings.max_record_size = bytes;
        self
    }

    /// Where a session's owner is in its data, for [`OwnerIndex`](super::OwnerIndex) (default `passport.user`,
    /// where passport.js keeps the signed-in user). The owner column is made for one path: to
    /// change the path of a table that has it, drop the column `cloakroom_owner` and let
    /// [`with_create_table_if_missing`](Self::with_create_table_if_missing) add it again.
    ///
    /// ```no_run
    /// # fn run(pool: sqlx::MySqlPool) -> Result<(), cloakroom::store::InvalidOwnerPath> {
    /// let builder = cloakroom::store::mysql::MySqlStore::builder_with_pool(pool)
    ///     .with_owner_path("account.id".parse()?);
    /// # Ok(()) }
    /// ```
    pub fn with_owner_path(mut self, path: OwnerPath) -> Self {
        self.settings.owner_path = path;
        self
    }

    /// Opens the pool (for a URL), creates the table and the owner index if asked to, and
    /// starts the pruning task on the current tokio runtime.
    ///
    /// # Errors
    /// When the URL is invalid, the server cannot be reached, or creating the table fails.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn build(self) -> Result<MySqlStore, Error> {
        let pool = match self.source {
            Source::Pool(pool) => pool,
            Source::Url(url) => {
                // A pool retries a refused connection until its acquire timeout and then reports
                // only the timeout: one plain connection first says why it cannot connect.
                let probe =
                    tokio::time::timeout(self.settings.timeout, MySqlConnection::connect(&url));
                match probe.await {
                    Ok(Ok(connection)) => {
                        let _ = connection.close().await;
                    }
                    Ok(Err(error)) => return Err(mysql_error(error)),
                    Err(elapsed) => return Err(Error::new(ErrorKind::Timeout, elapsed)),
                }
                sql::pool_options()
                    .connect(&url)
                    .await
                    .map_err(mysql_error)?
            }
        };
        let dialect = MySqlDialect::new(&self.columns);
        let table = quoted(&self.table);
        let statements = Statements::new(
            &dialect,
            &table,
            &quoted(&sql::lock_table_name(&self.table)),
            &quoted(&sql::owner_index_name(&self.table)),
            &self.settings.owner_path,
        );
        if self.create_table_if_missing {
            create_table(&pool, &self.table, &self.columns, &statements).await?;
        }
        let gets = Batches::new(calls::Get::new(&dialect, &table, statements.get.clone()));
        let replaces = Batches::new(calls::Replace::new(
            &dialect,
            &table,
            statements.replace.clone(),
        ));
        let inner = Arc::new_cyclic(|weak| Inner {
            pool,
            table: self.table,
            statements,
            gets,
            replaces,
            locks_ready: tokio::sync::OnceCell::new(),
            settings: self.settings,
            prune_interval: self.prune_interval,
            _pruner: self
                .prune_interval
                .map(|interval| sql::spawn_pruner(weak.clone(), interval)),
        });
        Ok(MySqlStore { inner })
    }
}

/// `` `name` ``: a validated name (ASCII letters, digits and underscores), quoted.
fn quoted(name: &str) -> String {
    debug_assert!(
        name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "only validated names are quoted"
    );
    format!("`{name}`")
}

/// express-mysql-session's `CREATE TABLE`, for `table` with `columns` (id, expiry, data).
fn create_table_statement(table: &str, columns: &[String; 3]) -> String {
    let [id, expires, data] = columns.each_ref().map(|name| quoted(name));
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({id} varchar(128) COLLATE utf8mb4_bin NOT NULL, \
         {expires} int(11) unsigned NOT NULL, {data} mediumtext COLLATE utf8mb4_bin, \
         PRIMARY KEY ({id})) ENGINE=InnoDB",
        quoted(table)
    )
}

/// Creates the table unless it exists, and adds the owner column and index unless the table
/// has the column. Two processes starting together may both try to add it: the second finds
/// it there (a duplicate column), which is as good.
async fn create_table(
    pool: &MySqlPool,
    table: &str,
    columns: &[String; 3],
    statements: &Statements,
) -> Result<(), Error> {
    sqlx::query(&create_table_statement(table, columns))
        .execute(pool)
        .await
        .map_err(mysql_error)?;
    let (present,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
    )
    .bind(table)
    .bind(OWNER_COLUMN)
    .fetch_one(pool)
    .await
    .map_err(mysql_error)?;
    if present > 0 {
        return Ok(());
    }
    match sqlx::query(&statements.create_owner_index)
        .execute(pool)
        .await
    {
        Ok(_) => Ok(()),
        Err(error) => match error_number(&error) {
            // Duplicate column or index name: another process added them.
            Some(1060 | 1061) => Ok(()),
            // Table or command access denied: the store works without the index.
            Some(1142 | 1044 | 1045) => {
                tracing::warn!(
                    store = "mysql",
                    error = &error as &dyn std::error::Error,
                    "cannot add the owner column and index (no ALTER privilege on the sessions' \
                     table); finding sessions by owner fails until they are added"
                );
                Ok(())
            }
            _ => Err(mysql_error(error)),
        },
    }
}

/// MySQL's spelling of the shared statements: positional `?` parameters, `expires` whole
/// seconds, the configured column names quoted with backticks, the owner a generated column.
struct MySqlDialect {
    /// Session id, data, expiry: quoted.
    columns: [String; 3],
    sess_text: String,
    sess_len: String,
}

impl MySqlDialect {
    /// For `columns` in express-mysql-session's order: id, expiry, data.
    fn new(columns: &[String; 3]) -> Self {
        let [id, expires, data] = columns.each_ref().map(|name| quoted(name));
        MySqlDialect {
            // Compared as bytes: `utf8mb4_bin` still ignores trailing spaces.
            sess_text: format!("CAST({data} AS BINARY)"),
            // Bytes, not characters; signed, as sqlx reads an `i64`.
            sess_len: format!("CAST(LENGTH({data}) AS SIGNED)"),
            columns: [id, data, expires],
        }
    }

    /// The owner at `path` out of the data: see the [module docs](self#sessions-by-owner).
    fn owner_expression(&self, path: &OwnerPath) -> String {
        // Segments are letters, digits, `_` and `-`: quoting them cannot be escaped.
        let json_path: String = path
            .segments()
            .map(|segment| format!(".\"{segment}\""))
            .collect();
        let data = &self.columns[1];
        // A backslash written without one in the SQL, so `NO_BACKSLASH_ESCAPES` cannot change
        // what the pattern means.
        let surrogates = format!(
            "REGEXP_REPLACE({data}, CONCAT(REPEAT(CHAR(92 USING utf8mb4), 2), \
             'u[dD][89a-fA-F][0-9a-fA-F]{{2}}'), '?')"
        );
        format!(
            "LEFT(CASE WHEN JSON_VALID({data}) THEN JSON_VALUE({data}, '${json_path}') \
             WHEN JSON_VALID({surrogates}) THEN JSON_VALUE({surrogates}, '${json_path}') \
             END, {OWNER_CHARS})"
        )
    }
}

impl Dialect for MySqlDialect {
    fn param(&self, _n: usize) -> Option<String> {
        None
    }

    fn time(&self, param: &str) -> String {
        param.to_owned()
    }

    fn expire_ms(&self) -> String {
        format!("CAST({} AS SIGNED) * 1000", self.columns[2])
    }

    fn sess_text(&self) -> &str {
        &self.sess_text
    }

    fn sess_len(&self) -> &str {
        &self.sess_len
    }

    fn sess_value(&self, param: &str) -> String {
        param.to_owned()
    }

    fn now_ms(&self) -> &'static str {
        "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)"
    }

    fn lock_columns(&self) -> (&'static str, &'static str) {
        (
            "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            "BIGINT",
        )
    }

    // The index is on a generated column: queries name the column.
    fn owner(&self, _path: &OwnerPath) -> String {
        quoted(OWNER_COLUMN)
    }

    fn owner_param(&self, param: &str) -> String {
        format!("LEFT({param}, {OWNER_CHARS})")
    }

    fn create_owner_index(&self, table: &str, index: &str, path: &OwnerPath) -> String {
        format!(
            "ALTER TABLE {table} ADD COLUMN {} VARCHAR({OWNER_CHARS}) CHARACTER SET utf8mb4 \
             COLLATE utf8mb4_bin AS ({}) VIRTUAL, ADD INDEX {index} ({})",
            quoted(OWNER_COLUMN),
            self.owner_expression(path),
            quoted(OWNER_COLUMN)
        )
    }

    fn columns(&self) -> [&str; 3] {
        self.columns.each_ref().map(String::as_str)
    }

    fn quote(&self, name: &str) -> String {
        quoted(name)
    }

    fn conditional_upsert(&self) -> bool {
        false
    }
}

fn mysql_error(error: sqlx::Error) -> Error {
    sql::store_error(error, database_kind)
}

/// The server's error number, for an error the server returned.
fn error_number(error: &sqlx::Error) -> Option<u16> {
    error
        .as_database_error()
        .and_then(|error| error.try_downcast_ref::<MySqlDatabaseError>())
        .map(MySqlDatabaseError::number)
}

/// Server errors by number: the ones that mean "down" or "too slow" are transient.
fn database_kind(error: &dyn DatabaseError) -> ErrorKind {
    let number = error
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(MySqlDatabaseError::number);
    match number {
        // ER_CON_COUNT_ERROR, ER_SERVER_SHUTDOWN, ER_NORMAL_SHUTDOWN, ER_CONNECTION_KILLED
        // (MariaDB), ER_SERVER_OFFLINE_MODE (MySQL)
        Some(1040 | 1053 | 1077 | 1927 | 3032) => ErrorKind::Unavailable,
        // ER_LOCK_WAIT_TIMEOUT, ER_STATEMENT_TIMEOUT (MariaDB), ER_QUERY_TIMEOUT (MySQL)
        Some(1205 | 1969 | 3024) => ErrorKind::Timeout,
        _ => ErrorKind::Backend,
    }
}

/// Binds the shared operations' parameters to an sqlx MySQL query, in the order the statement
/// takes them.
fn query<'q>(sql: &'q Statement, args: &[Arg<'q>]) -> Query<'q, MySql, MySqlArguments> {
    sql.bind_order(args)
        .into_iter()
        .fold(sqlx::query(sql), |query, arg| match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(n) => query.bind(n),
        })
}

fn query_as<'q, O>(sql: &'q Statement, args: &[Arg<'q>]) -> QueryAs<'q, MySql, O, MySqlArguments>
where
    O: for<'r> sqlx::FromRow<'r, MySqlRow>,
{
    sql.bind_order(args)
        .into_iter()
        .fold(sqlx::query_as(sql), |query, arg| match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(n) => query.bind(n),
        })
}

/// Text read as bytes: sqlx refuses to read a `utf8mb4_bin` column (flagged binary) as a
/// string. Not UTF-8 is a decode error, which names no byte of it.
fn text(bytes: Vec<u8>) -> Result<String, sqlx::Error> {
    String::from_utf8(bytes).map_err(|error| sqlx::Error::Decode(Box::new(error.utf8_error())))
}

/// A [`LoadableRow`] as read, its text still bytes.
pub(super) type LoadableBytes = (Vec<u8>, Option<Vec<u8>>, i64, i64);

fn text_or_null(bytes: Option<Vec<u8>>) -> Result<Option<String>, sqlx::Error> {
    bytes.map(text).transpose()
}

impl Backend for Inner {
    const STORE: &'static str = "mysql";
    const ROUNDING: Rounding = Rounding::Nearest;

    fn statements(&self) -> &Statements {
        &self.statements
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn error(error: sqlx::Error) -> Error {
        mysql_error(error)
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
        let request = || Read {
            sid: sid.to_owned(),
            now,
            max_size,
        };
        self.gets.call(&self.pool, request).await
    }

    async fn replace(&self, write: Replacement<'_>) -> Result<bool, sqlx::Error> {
        self.replaces.call(&self.pool, || Write::new(write)).await
    }

    async fn fetch_one_record(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> Result<Option<(Option<String>, i64, i64)>, sqlx::Error> {
        let row: Option<(Option<Vec<u8>>, i64, i64)> =
            query_as(sql, args).fetch_optional(&self.pool).await?;
        row.map(|(sess, len, expires)| Ok((text_or_null(sess)?, len, expires)))
            .transpose()
    }

    async fn fetch_records(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> Result<Vec<(String, Option<String>, i64)>, sqlx::Error> {
        let rows: Vec<(Vec<u8>, Option<Vec<u8>>, i64)> =
            query_as(sql, args).fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|(sid, sess, len)| Ok((text(sid)?, text_or_null(sess)?, len)))
            .collect()
    }

    async fn fetch_loadable_records(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> Result<Vec<LoadableRow>, sqlx::Error> {
        let rows: Vec<LoadableBytes> = query_as(sql, args).fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|(sid, sess, len, expires)| Ok((text(sid)?, text_or_null(sess)?, len, expires)))
            .collect()
    }

    /// Creates the locks' table unless it exists, once per store (`IF NOT EXISTS` makes
    /// processes starting together agree).
    async fn ensure_lock_table(&self) -> Result<(), Error> {
        self.locks_ready
            .get_or_try_init(|| async {
                sqlx::query(&self.statements.create_locks)
                    .execute(&self.pool)
                    .await
                    .map(drop)
                    .map_err(mysql_error)
            })
            .await?;
        Ok(())
    }

    fn has_lock_table(&self) -> bool {
        self.locks_ready.initialized()
    }
}

sql::impl_sql_store!(MySqlStore);

impl fmt::Debug for MySqlStore {
    // The pool is left out: its options hold the connection password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStore")
            .field("table", &self.inner.table)
            .field("default_ttl", &self.inner.settings.default_ttl)
            .field("prune_interval", &self.inner.prune_interval)
            .field("timeout", &self.inner.settings.timeout)
            .field("owner_path", &self.inner.settings.owner_path)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for MySqlStoreBuilder {
    // The URL or pool is left out: either holds the connection password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStoreBuilder")
            .field("table", &self.table)
            .field("columns", &self.columns)
            .field("create_table_if_missing", &self.create_table_if_missing)
            .field("default_ttl", &self.settings.default_ttl)
            .field("prune_interval", &self.prune_interval)
            .field("timeout", &self.settings.timeout)
            .field("owner_path", &self.settings.owner_path)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements() -> Statements {
        Statements::new(
            &MySqlDialect::new(&DEFAULT_COLUMNS.map(str::to_owned)),
            "`sessions`",
            "`sessions_lock`",
            "`sessions_owner_idx`",
            &OwnerPath::default(),
        )
    }

    #[test]
    fn statements_are_express_mysql_sessions() {
        let statements = statements();
        assert_eq!(
            statements.insert,
            "INSERT INTO `sessions` (`data`, `expires`, `session_id`) VALUES (?, ?, ?)"
        );
        assert_eq!(
            statements.replace_expired,
            "UPDATE `sessions` SET `data` = ?, `expires` = ? \
             WHERE `session_id` = ? AND `expires` < ?"
        );
        assert_eq!(
            statements.touch,
            "UPDATE `sessions` SET `expires` = ? WHERE `session_id` = ? AND `expires` >= ?"
        );
        assert_eq!(
            statements.prune,
            "DELETE FROM `sessions` WHERE `expires` < ?"
        );
        // The size limit comes first in the text, third in the arguments.
        assert_eq!(
            statements.get,
            "SELECT CASE WHEN CAST(LENGTH(`data`) AS SIGNED) > ? THEN NULL \
             ELSE CAST(`data` AS BINARY) END, CAST(LENGTH(`data`) AS SIGNED), \
             CAST(`expires` AS SIGNED) * 1000 FROM `sessions` \
             WHERE `session_id` = ? AND `expires` >= ?"
        );
        assert_eq!(statements.get.bind_order(&[1, 2, 3]), [3, 1, 2]);
        assert_eq!(statements.relock.bind_order(&[1, 2, 3]), [2, 3, 1]);
        assert_eq!(
            statements.sessions_of,
            "SELECT `session_id`, CASE WHEN CAST(LENGTH(`data`) AS SIGNED) > ? THEN NULL \
             ELSE CAST(`data` AS BINARY) END, CAST(LENGTH(`data`) AS SIGNED), \
             CAST(`expires` AS SIGNED) * 1000 FROM `sessions` \
             WHERE (`cloakroom_owner`) = LEFT(?, 255) AND `expires` >= ?"
        );
    }

    #[test]
    fn the_create_table_statement_is_express_mysql_sessions() {
        assert_eq!(
            create_table_statement("sessions", &DEFAULT_COLUMNS.map(str::to_owned)),
            "CREATE TABLE IF NOT EXISTS `sessions` (`session_id` varchar(128) COLLATE utf8mb4_bin \
             NOT NULL, `expires` int(11) unsigned NOT NULL, `data` mediumtext COLLATE utf8mb4_bin, \
             PRIMARY KEY (`session_id`)) ENGINE=InnoDB"
        );
    }

    /// The statement in the module docs, on one line.
    #[test]
    fn the_owner_column_is_the_documented_one() {
        let surrogates = "REGEXP_REPLACE(`data`, CONCAT(REPEAT(CHAR(92 USING utf8mb4), 2), \
                          'u[dD][89a-fA-F][0-9a-fA-F]{2}'), '?')";
        let path = r#"'$."passport"."user"'"#;
        assert_eq!(
            statements().create_owner_index,
            format!(
                "ALTER TABLE `sessions` ADD COLUMN `cloakroom_owner` VARCHAR(255) CHARACTER SET \
                 utf8mb4 COLLATE utf8mb4_bin AS (LEFT(CASE WHEN JSON_VALID(`data`) THEN \
                 JSON_VALUE(`data`, {path}) WHEN JSON_VALID({surrogates}) THEN \
                 JSON_VALUE({surrogates}, {path}) END, 255)) VIRTUAL, \
                 ADD INDEX `sessions_owner_idx` (`cloakroom_owner`)"
            )
        );
    }

    #[test]
    fn names_are_validated() {
        let builder = || MySqlStore::builder("mysql://localhost/db");
        assert_eq!(
            builder().with_table_name("a`b").unwrap_err(),
            InvalidName::Table
        );
        assert_eq!(
            builder()
                .with_column_names("id", "expires", "x; drop")
                .unwrap_err(),
            InvalidName::Column
        );
        assert_eq!(
            builder().with_column_names("id", "ID", "data").unwrap_err(),
            InvalidName::Column
        );
        assert_eq!(
            builder()
                .with_column_names("id", "expires", "cloakroom_owner")
                .unwrap_err(),
            InvalidName::Column
        );
        assert!(builder().with_column_names("sid", "exp", "sess").is_ok());
    }

    #[test]
    fn debug_hides_the_url() {
        let builder = MySqlStore::builder("mysql://user:hunter2@localhost/db");
        assert!(!format!("{builder:?}").contains("hunter2"));
    }
}
