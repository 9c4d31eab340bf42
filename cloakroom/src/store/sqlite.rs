//! [`SqliteStore`]: sessions in an SQLite file, in the shape of connect-pg-simple's table.
//!
//! # Schema
//! [`SqliteStore::open`] creates the file and the table when missing:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "session" (
//!   "sid" TEXT NOT NULL PRIMARY KEY,
//!   "sess" TEXT NOT NULL,
//!   "expire" INTEGER NOT NULL
//! );
//! CREATE INDEX IF NOT EXISTS "IDX_session_expire" ON "session" ("expire");
//! ```
//!
//! `sess` is express-session's JSON, byte for byte. `expire` is the Unix time in whole seconds,
//! the number connect-pg-simple passes to `to_timestamp`: the cookie's expiry rounded up, or for
//! a browser-session cookie `now + ttl` rounded up
//! ([`with_default_ttl`](SqliteStoreBuilder::with_default_ttl), one day by default). A row is
//! live while `expire >= ceil(now)`, so a session lives up to a second past its cookie, exactly
//! as in [`PostgresStore`](super::postgres::PostgresStore). `datetime(expire, 'unixepoch')`
//! shows it as a date.
//!
//! # Several processes, one file
//! Connections use write-ahead logging (`journal_mode=WAL`, so readers never wait for the
//! writer), `synchronous=NORMAL` (a commit survives a crash of the process; the last commits can
//! be lost if the machine loses power), and a busy timeout (5 s by default,
//! [`with_busy_timeout`](SqliteStoreBuilder::with_busy_timeout)): SQLite lets one connection
//! write at a time, and a write that finds the file locked by another connection, of this
//! process or another, waits for it, reporting [`ErrorKind::Timeout`] only if the wait runs
//! out. Every operation is a single statement, so no transaction ever holds a read snapshot
//! while it waits for the write lock (the case where SQLite reports "database is locked" without
//! waiting). WAL needs shared memory between the processes: they must run on one machine, with
//! the file on a local file system (not NFS or SMB).
//!
//! # Compare-and-set
//! A record's [`Version`] is its stored `sess` text. A compare-and-set is one
//! `UPDATE … WHERE sid = ?3 AND sess = ?4 AND expire >= ?5`: it writes only if the row is still
//! live and holds exactly what was loaded, so a concurrent write is never overwritten and a
//! destroyed or expired session is never brought back. A touch changes `expire` only, so it
//! never changes the version.
//!
//! # Session lock
//! With [`with_session_lock`](crate::SessionLayerBuilder::with_session_lock), a session's lock is
//! a row of a second table, created with the first:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "session_lock" (
//!   "sid" TEXT NOT NULL PRIMARY KEY,
//!   "token" TEXT NOT NULL,
//!   "until" INTEGER NOT NULL
//! );
//! ```
//!
//! `token` is the holder's random token, `until` when its lease runs out (milliseconds since the
//! epoch). Taking the lock is one upsert that succeeds only where no row is or the row's lease
//! has run out; releasing it deletes the row only while it holds the holder's token; a write
//! under the lock adds `AND EXISTS (…the lock row with the holder's token, still running…)` to
//! its compare-and-set, so a holder whose lease ran out cannot write (fencing). Rows of holders
//! that never released are replaced when next taken and deleted by the pruning task.
//!
//! # Pruning
//! Expired rows are hidden at once and deleted by a background task every 15 minutes (each
//! delay randomized to 50–150 %), stopped when the last clone of the store is dropped. A failed
//! prune is logged and retried at the next interval. [`SqliteStore::prune_expired`] prunes on
//! demand.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::error::DatabaseError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use super::sql::InvalidName;
use super::sql::{self, Prune, PruneTask};
use super::{
    Condition, Error, ErrorKind, Lease, Loaded, LockStore, SessionStore, SetOutcome, Version,
};
use crate::id::Id;
use crate::record::Record;
use crate::time::Timestamp;

/// connect-pg-simple's table name.
const DEFAULT_TABLE: &str = "session";

/// How long a write waits for another connection to release the file.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The pause before opening a busy file again.
const OPEN_RETRY_DELAY: Duration = Duration::from_millis(10);

/// Sessions in an SQLite file: survives restarts, and several processes on one machine can
/// share the file. See the [module docs](self) for the table and the locking settings.
///
/// Supports compare-and-set and every optional method (`all`, `len`, `clear` count and return
/// live sessions only). Cloning is cheap and every clone is the same store.
///
/// ```no_run
/// # async fn run() -> Result<(), cloakroom::store::Error> {
/// let store = cloakroom::store::sqlite::SqliteStore::open("sessions.db").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    path: PathBuf,
    table: String,
    statements: Statements,
    default_ttl: Duration,
    max_record_size: usize,
    prune_interval: Option<Duration>,
    /// Dropped with the store, which ends the pruning task.
    _pruner: Option<PruneTask>,
}

/// Options for a [`SqliteStore`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    table: String,
    default_ttl: Duration,
    max_record_size: usize,
    prune_interval: Option<Duration>,
    busy_timeout: Duration,
}

impl SqliteStore {
    /// Opens the store in the file at `path` with the default options, creating the file and
    /// its table when missing.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), cloakroom::store::Error> {
    /// let store = cloakroom::store::sqlite::SqliteStore::open("sessions.db").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// When the file cannot be opened or created (its directory must exist), or is not an
    /// SQLite database.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::builder(path).build().await
    }

    /// Configures a store in the file at `path`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let store = cloakroom::store::sqlite::SqliteStore::builder("sessions.db")
    ///     .with_default_ttl(Duration::from_secs(3600))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            default_ttl: sql::DEFAULT_TTL,
            max_record_size: super::DEFAULT_MAX_RECORD_SIZE,
            prune_interval: Some(sql::DEFAULT_PRUNE_INTERVAL),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        }
    }

    /// Deletes every expired row now, returning how many. The background task does this
    /// periodically.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub async fn prune_expired(&self) -> Result<u64, Error> {
        self.inner.prune_expired().await
    }
}

impl SqliteStoreBuilder {
    /// The table's name (default `session`).
    ///
    /// ```no_run
    /// let builder = cloakroom::store::sqlite::SqliteStore::builder("app.db").with_table_name("web_sessions")?;
    /// # Ok::<(), cloakroom::store::sqlite::InvalidName>(())
    /// ```
    ///
    /// # Errors
    /// [`InvalidName::Table`] unless the name is 1 to 63 ASCII letters, digits and underscores,
    /// not starting with a digit.
    pub fn with_table_name(mut self, table: impl Into<String>) -> Result<Self, InvalidName> {
        let table = table.into();
        if !sql::is_plain_identifier(&table) {
            return Err(InvalidName::Table);
        }
        self.table = table;
        Ok(self)
    }

    /// How long a session whose cookie has no expiry lives after its last save or touch
    /// (default one day). Rounded up to the second in the table.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let builder = cloakroom::store::sqlite::SqliteStore::builder("sessions.db")
    ///     .with_default_ttl(Duration::from_secs(8 * 3600));
    /// ```
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How often expired rows are deleted (default every 15 minutes, each delay randomized to
    /// 50–150 %); `None` turns the background task off (expired rows stay hidden; delete them
    /// with [`SqliteStore::prune_expired`]).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let builder = cloakroom::store::sqlite::SqliteStore::builder("sessions.db")
    ///     .with_prune_interval(Some(Duration::from_secs(60)));
    /// ```
    pub fn with_prune_interval(mut self, interval: Option<Duration>) -> Self {
        self.prune_interval = sql::prune_interval(interval);
        self
    }

    /// How long a write waits for another connection or process to release the file before
    /// failing with [`ErrorKind::Timeout`] (default 5 s).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let builder = cloakroom::store::sqlite::SqliteStore::builder("sessions.db")
    ///     .with_busy_timeout(Duration::from_secs(2));
    /// ```
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The largest record written or read, in bytes of JSON (default
    /// [`DEFAULT_MAX_RECORD_SIZE`](super::DEFAULT_MAX_RECORD_SIZE), 1 MiB). A bigger save fails
    /// with [`ErrorKind::TooLarge`] and writes nothing; a bigger stored row fails the load the
    /// same way, and is left as it is.
    ///
    /// ```no_run
    /// let builder = cloakroom::store::sqlite::SqliteStore::builder("sessions.db")
    ///     .with_max_record_size(64 * 1024);
    /// ```
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
    }

    /// Opens the file (creating it and the table when missing) and starts the pruning task on
    /// the current tokio runtime.
    ///
    /// # Errors
    /// When the file cannot be opened or created (its directory must exist), or is not an
    /// SQLite database.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn build(self) -> Result<SqliteStore, Error> {
        let pool = self.open_until_not_busy().await?;
        let table = sql::quoted(&self.table);
        let inner = Arc::new_cyclic(|weak| Inner {
            pool,
            path: self.path,
            statements: Statements::new(&table, &sql::quoted(&sql::lock_table_name(&self.table))),
            table: self.table,
            default_ttl: self.default_ttl,
            max_record_size: self.max_record_size,
            prune_interval: self.prune_interval,
            _pruner: self
                .prune_interval
                .map(|interval| sql::spawn_pruner(weak.clone(), interval)),
        });
        Ok(SqliteStore { inner })
    }
}

impl SqliteStoreBuilder {
    /// Opens the pool and creates the table, trying again while the file is busy, up to the
    /// busy timeout. Connections opening a new file at the same moment race to switch it to WAL,
    /// which takes the file to itself; SQLite turns the losers away at once rather than have
    /// them wait (waiting could deadlock), so the busy timeout alone does not cover it.
    async fn open_until_not_busy(&self) -> Result<SqlitePool, Error> {
        let deadline = Instant::now() + self.busy_timeout;
        loop {
            match self.open().await {
                Err(error) if error.kind() == ErrorKind::Timeout && Instant::now() < deadline => {
                    tokio::time::sleep(OPEN_RETRY_DELAY).await;
                }
                opened => return opened,
            }
        }
    }

    async fn open(&self) -> Result<SqlitePool, Error> {
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(self.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .map_err(sqlite_error)?;
        let table = sql::quoted(&self.table);
        let index = sql::quoted(&sql::expire_index_name(&self.table));
        let locks = sql::quoted(&sql::lock_table_name(&self.table));
        for statement in [
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (\"sid\" TEXT NOT NULL PRIMARY KEY, \
                 \"sess\" TEXT NOT NULL, \"expire\" INTEGER NOT NULL)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {table} (\"expire\")"),
            format!(
                "CREATE TABLE IF NOT EXISTS {locks} (\"sid\" TEXT NOT NULL PRIMARY KEY, \
                 \"token\" TEXT NOT NULL, \"until\" INTEGER NOT NULL)"
            ),
        ] {
            sqlx::query(&statement)
                .execute(&pool)
                .await
                .map_err(sqlite_error)?;
        }
        Ok(pool)
    }
}

/// The store's SQL, made once with the (validated) table names spliced in. Lock times (`until`)
/// are milliseconds since the epoch by this machine's clock, which every process sharing the
/// file shares.
struct Statements {
    get: String,
    is_live: String,
    insert: String,
    delete: String,
    replace: String,
    replace_leased: String,
    delete_if_unchanged: String,
    delete_if_unchanged_leased: String,
    touch: String,
    all: String,
    len: String,
    clear: String,
    prune: String,
    lock: String,
    unlock: String,
    holds_lock: String,
    prune_locks: String,
}

impl Statements {
    fn new(table: &str, locks: &str) -> Self {
        let leased = |sid: &str, token: &str, now: &str| {
            format!(
                " AND EXISTS (SELECT 1 FROM {locks} WHERE sid = {sid} AND token = {token} \
                 AND until > {now})"
            )
        };
        let replace = format!(
            "UPDATE {table} SET sess = ?1, expire = ?2 WHERE sid = ?3 AND sess = ?4 AND expire >= ?5"
        );
        let delete_if_unchanged =
            format!("DELETE FROM {table} WHERE sid = ?1 AND sess = ?2 AND expire >= ?3");
        Statements {
            get: format!("SELECT sess, expire FROM {table} WHERE sid = ?1 AND expire >= ?2"),
            is_live: format!("SELECT count(*) FROM {table} WHERE sid = ?1 AND expire >= ?2"),
            // A new session: written only where no live row is (an expired one is replaced).
            insert: format!(
                "INSERT INTO {table} (sess, expire, sid) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (sid) DO UPDATE SET sess = excluded.sess, expire = excluded.expire \
                 WHERE {table}.expire < ?4"
            ),
            delete: format!("DELETE FROM {table} WHERE sid = ?1"),
            replace_leased: format!("{replace}{}", leased("?3", "?6", "?7")),
            replace,
            delete_if_unchanged_leased: format!(
                "{delete_if_unchanged}{}",
                leased("?1", "?4", "?5")
            ),
            delete_if_unchanged,
            touch: format!("UPDATE {table} SET expire = ?1 WHERE sid = ?2 AND expire >= ?3"),
            all: format!("SELECT sid, sess FROM {table} WHERE expire >= ?1"),
            len: format!("SELECT count(*) FROM {table} WHERE expire >= ?1"),
            clear: format!("DELETE FROM {table}"),
            prune: format!("DELETE FROM {table} WHERE expire < ?1"),
            lock: format!(
                "INSERT INTO {locks} (sid, token, until) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (sid) DO UPDATE SET token = excluded.token, until = excluded.until \
                 WHERE {locks}.until <= ?4"
            ),
            unlock: format!("DELETE FROM {locks} WHERE sid = ?1 AND token = ?2"),
            holds_lock: format!(
                "SELECT count(*) FROM {locks} WHERE sid = ?1 AND token = ?2 AND until > ?3"
            ),
            prune_locks: format!("DELETE FROM {locks} WHERE until <= ?1"),
        }
    }
}

fn sqlite_error(error: sqlx::Error) -> Error {
    sql::store_error(error, database_kind)
}

/// SQLite result codes (the primary code is the low byte of the extended one).
fn database_kind(error: &dyn DatabaseError) -> ErrorKind {
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    const IOERR: i32 = 10;
    const CANTOPEN: i32 = 14;
    let primary = error
        .code()
        .and_then(|code| code.parse::<i32>().ok())
        .map(|code| code & 0xff);
    match primary {
        // The busy timeout ran out while another connection held the lock.
        Some(BUSY | LOCKED) => ErrorKind::Timeout,
        Some(IOERR | CANTOPEN) => ErrorKind::Unavailable,
        _ => ErrorKind::Backend,
    }
}

impl Inner {
    async fn prune_expired(&self) -> Result<u64, Error> {
        let now = Timestamp::now();
        let done = sqlx::query(&self.statements.prune)
            .bind(sql::now_seconds(now))
            .execute(&self.pool)
            .await
            .map_err(sqlite_error)?;
        // Locks whose holders went away without releasing them.
        sqlx::query(&self.statements.prune_locks)
            .bind(now.as_millis())
            .execute(&self.pool)
            .await
            .map_err(sqlite_error)?;
        Ok(done.rows_affected())
    }

    /// Whether `lease` holds the lock on `id` now.
    async fn holds_lock(&self, id: &Id, lease: &Lease) -> Result<bool, Error> {
        let (count,): (i64,) = sqlx::query_as(&self.statements.holds_lock)
            .bind(id.as_str())
            .bind(lease.token())
            .bind(Timestamp::now().as_millis())
            .fetch_one(&self.pool)
            .await
            .map_err(sqlite_error)?;
        Ok(count > 0)
    }
}

impl Prune for Inner {
    const STORE: &'static str = "sqlite";

    fn prune(&self) -> impl Future<Output = Result<u64, Error>> + Send {
        self.prune_expired()
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn get(&self, id: &Id) -> Result<Option<Loaded>, Error> {
        let now = sql::now_seconds(Timestamp::now());
        let row: Option<(String, i64)> = sqlx::query_as(&self.inner.statements.get)
            .bind(id.as_str())
            .bind(now)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(sqlite_error)?;
        let Some((sess, expire)) = row else {
            return Ok(None);
        };
        super::check_record_size(sess.len(), self.inner.max_record_size)?;
        let record = super::decode_record(&sess)?;
        Ok(Some(Loaded {
            record,
            version: Version::from_bytes(sess.into_bytes()),
            expires_at: Some(Timestamp::from_millis(expire.saturating_mul(1000))),
        }))
    }

    async fn set(
        &self,
        id: &Id,
        record: &Record,
        condition: Condition<'_>,
    ) -> Result<SetOutcome, Error> {
        let now = Timestamp::now();
        let now_s = sql::now_seconds(now);
        let expire_s = sql::expire_seconds(record, now, self.inner.default_ttl);
        // Already expired: delete instead of writing (the row would be dead on arrival).
        let expired = expire_s < now_s;
        let json = record.to_json();
        super::check_record_size(json.len(), self.inner.max_record_size)?;
        let statements = &self.inner.statements;
        let pool = &self.inner.pool;
        let written = SetOutcome::Written(Version::from_bytes(json.as_bytes()));
        let Some(version) = condition.expected() else {
            if expired {
                // Nothing to create; but an id that is taken is still taken.
                let (live,): (i64,) = sqlx::query_as(&statements.is_live)
                    .bind(id.as_str())
                    .bind(now_s)
                    .fetch_one(pool)
                    .await
                    .map_err(sqlite_error)?;
                return Ok(if live > 0 {
                    SetOutcome::Conflict
                } else {
                    written
                });
            }
            let done = sqlx::query(&statements.insert)
                .bind(json.as_str())
                .bind(expire_s)
                .bind(id.as_str())
                .bind(now_s)
                .execute(pool)
                .await
                .map_err(sqlite_error)?;
            return Ok(if done.rows_affected() == 0 {
                SetOutcome::Conflict
            } else {
                written
            });
        };
        let Some(expected) = sql::expected_sess(version) else {
            return Ok(SetOutcome::Conflict);
        };
        let now_ms = now.as_millis();
        let query = match (expired, condition.lease()) {
            (false, None) => sqlx::query(&statements.replace),
            (false, Some(_)) => sqlx::query(&statements.replace_leased),
            (true, None) => sqlx::query(&statements.delete_if_unchanged),
            (true, Some(_)) => sqlx::query(&statements.delete_if_unchanged_leased),
        };
        let query = match expired {
            false => query
                .bind(json.as_str())
                .bind(expire_s)
                .bind(id.as_str())
                .bind(expected)
                .bind(now_s),
            true => query.bind(id.as_str()).bind(expected).bind(now_s),
        };
        let query = match condition.lease() {
            Some(lease) => query.bind(lease.token()).bind(now_ms),
            None => query,
        };
        let done = query.execute(pool).await.map_err(sqlite_error)?;
        if done.rows_affected() > 0 {
            return Ok(written);
        }
        match condition.lease() {
            Some(lease) if !self.inner.holds_lock(id, lease).await? => Ok(SetOutcome::LeaseLost),
            _ => Ok(SetOutcome::Conflict),
        }
    }

    async fn destroy(&self, id: &Id) -> Result<(), Error> {
        sqlx::query(&self.inner.statements.delete)
            .bind(id.as_str())
            .execute(&self.inner.pool)
            .await
            .map_err(sqlite_error)?;
        Ok(())
    }

    async fn touch(&self, id: &Id, record: &Record) -> Result<(), Error> {
        let now = Timestamp::now();
        let expire_s = sql::expire_seconds(record, now, self.inner.default_ttl);
        sqlx::query(&self.inner.statements.touch)
            .bind(expire_s)
            .bind(id.as_str())
            .bind(sql::now_seconds(now))
            .execute(&self.inner.pool)
            .await
            .map_err(sqlite_error)?;
        Ok(())
    }

    fn default_ttl(&self) -> Option<Duration> {
        Some(self.inner.default_ttl)
    }

    async fn all(&self) -> Result<Vec<(Id, Record)>, Error> {
        let now = sql::now_seconds(Timestamp::now());
        let rows: Vec<(String, String)> = sqlx::query_as(&self.inner.statements.all)
            .bind(now)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(sqlite_error)?;
        rows.into_iter()
            .map(|(sid, sess)| Ok((Id::from_string(sid), super::decode_record(&sess)?)))
            .collect()
    }

    async fn len(&self) -> Result<usize, Error> {
        let now = sql::now_seconds(Timestamp::now());
        let (count,): (i64,) = sqlx::query_as(&self.inner.statements.len)
            .bind(now)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(sqlite_error)?;
        // `count(*)` is never negative; saturate where usize is narrower.
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    async fn clear(&self) -> Result<(), Error> {
        sqlx::query(&self.inner.statements.clear)
            .execute(&self.inner.pool)
            .await
            .map_err(sqlite_error)?;
        Ok(())
    }
}

/// Session locks are rows of a second table (see the [module docs](self#session-lock)).
#[async_trait]
impl LockStore for SqliteStore {
    async fn try_lock(&self, id: &Id, lease: &Lease) -> Result<bool, Error> {
        let now = Timestamp::now().as_millis();
        let until = now.saturating_add(i64::try_from(lease.duration_millis()).unwrap_or(i64::MAX));
        let done = sqlx::query(&self.inner.statements.lock)
            .bind(id.as_str())
            .bind(lease.token())
            .bind(until)
            .bind(now)
            .execute(&self.inner.pool)
            .await
            .map_err(sqlite_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn unlock(&self, id: &Id, lease: &Lease) -> Result<(), Error> {
        sqlx::query(&self.inner.statements.unlock)
            .bind(id.as_str())
            .bind(lease.token())
            .execute(&self.inner.pool)
            .await
            .map_err(sqlite_error)?;
        Ok(())
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("table", &self.inner.table)
            .field("default_ttl", &self.inner.default_ttl)
            .field("prune_interval", &self.inner.prune_interval)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_validated() {
        let builder = || SqliteStore::builder("unused.db");
        assert_eq!(
            builder().with_table_name("x; drop").unwrap_err(),
            InvalidName::Table
        );
        assert!(builder().with_table_name("web_sessions").is_ok());
    }
}
