//! [`SqliteStore`]: sessions in an SQLite file, in the shape of connect-pg-simple's table.
//!
//! # Schema
//! [`SqliteStore::connect`] creates the file and the table when missing:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "session" (
//!   "sid" TEXT NOT NULL PRIMARY KEY,
//!   "sess" TEXT NOT NULL,
//!   "expire" INTEGER NOT NULL
//! );
//! CREATE INDEX IF NOT EXISTS "IDX_session_expire" ON "session" ("expire");
//! CREATE INDEX IF NOT EXISTS "session_owner_idx" ON "session" ((
//!   CASE WHEN json_valid(sess) THEN CAST(json_extract(sess, '$."passport"."user"') AS TEXT) END
//! )) WHERE (
//!   CASE WHEN json_valid(sess) THEN CAST(json_extract(sess, '$."passport"."user"') AS TEXT) END
//! ) IS NOT NULL;
//! ```
//!
//! `sess` is express-session's JSON, byte for byte. `expire` is the Unix time in whole seconds,
//! the number connect-pg-simple passes to `to_timestamp`: the cookie's expiry rounded up, or for
//! a browser-session cookie `now + ttl` rounded up
//! ([`with_default_ttl`](SqliteStoreBuilder::with_default_ttl), one day by default). A row is
//! live while `expire >= ceil(now)`, so a session lives up to a second past its cookie, exactly
//! as in `PostgresStore`. `datetime(expire, 'unixepoch')`
//! shows it as a date.
//!
//! # Sessions by owner
//! The store implements [`OwnerIndex`](super::OwnerIndex): `session_owner_idx` is on the owner that `sess` names
//! ([`with_owner_path`](SqliteStoreBuilder::with_owner_path), `passport.user` by default), read
//! out of the JSON by the index itself. So any row is indexed however it was written, and the
//! index changes with the row, in the same statement. A row whose `sess` is not valid JSON
//! names no owner rather than failing the write; an integer owner is indexed as its digits.
//! A file made before the index gets it when next opened, which holds the write lock while it
//! builds (other writers wait, up to their busy timeout). The index is made for one path: to
//! change the path of an existing file, drop the index first, and the next
//! [`build`](SqliteStoreBuilder::build) makes it for the new one (without it,
//! [`sessions_of`](super::OwnerIndex::sessions_of) still works, by reading the whole table).
//!
//! # File permissions
//! On Unix, a new file is created readable and writable by its owner only (mode 0600), and
//! SQLite gives its `-wal` and `-shm` files the same mode: the file holds every session. An
//! existing file keeps its mode (see [`SqliteStore::connect`]).
//!
//! # Several processes, one file
//! Connections use write-ahead logging (`journal_mode=WAL`, so readers never wait for the
//! writer), `synchronous=NORMAL` (a commit survives a crash of the process; the last commits can
//! be lost if the machine loses power), and a busy timeout (5 s by default,
//! [`with_busy_timeout`](SqliteStoreBuilder::with_busy_timeout)): SQLite lets one connection
//! write at a time, and a write that finds the file locked by another connection, of this
//! process or another, waits for it, reporting [`ErrorKind::Timeout`] only if the wait runs
//! out. Every call through [`SessionStore`](super::SessionStore) is also bounded by the store's timeout
//! ([`with_timeout`](SqliteStoreBuilder::with_timeout), 5 s by default, as the other stores), so
//! a request never waits longer than that, whatever the busy timeout. Every operation is a
//! single statement, and the writes the store commits together (see below) run in a
//! transaction that takes the write lock before it reads (`BEGIN IMMEDIATE`), so no
//! transaction ever holds a read snapshot while it waits for the write lock (the case where
//! SQLite reports "database is locked" without waiting). WAL needs shared memory between the processes: they must run on one machine, with
//! the file on a local file system (not NFS or SMB).
//!
//! # Connections and checkpoints
//! The store writes through one connection, since SQLite lets one connection write at a time:
//! this process's writes queue for it in order, instead of each sleeping in SQLite's busy
//! handler (up to 100 ms at a time) and trying again. Writes that queue together are committed
//! together, up to 16 in one transaction, each request still hearing of its write only once it
//! is committed; a write that fails is undone alone. A commit logs every page it changed, and
//! writes share pages (the table's last, the `expire` index's last), so the log grows by less
//! than half as much per new session and the requests pay for less copying back: in the
//! benchmark (`bench/run.sh`, one core, three rounds), `/login` went from 21,300 requests a
//! second (the undisturbed round of the run before) to 31,500–34,000, `/counter` from
//! 19,800–21,300 to 21,100–21,600. It reads through one connection per core it may run on
//! ([`available_parallelism`](std::thread::available_parallelism)): readers of a WAL file
//! never wait for each other or for the writer. These are plain connections, each running one
//! statement at a time, not a sqlx pool, whose upkeep after every statement cost a read a fifth
//! of its time. sqlx runs each connection on a thread of its own; after handing the writer a
//! statement, the calling thread gives its core away once, so that on a busy core the writer
//! does not wait out the caller's time slice (the cause of the write tail on one core; figures
//! in the source of `connections::handed_over`). Neither kind ever copies the log back into the
//! database file (`wal_autocheckpoint=0`, where SQLite's default makes the request whose
//! commit passes 1000 pages wait for the copy and two syncs of the disk). A task of the store's
//! does it, on a connection of its own:
//!
//! - after writes, a `PASSIVE` checkpoint, which blocks no one: every 20 ms under steady
//!   writes (short ones take the core from requests for less time), at most once a second
//!   after a few writes;
//! - when the log still holds 4096 pages or more after it, at most once a second, a `RESTART`
//!   checkpoint. This process's writes wait meanwhile, for the copy of the last pages and two
//!   syncs, and the next write starts the log over. Under steady writes it is the only way the
//!   log ever starts over. The longer a restart holds up the writes (a slow disk), the further
//!   apart restarts are kept, so that they hold up writes 0.5 % of the time at most; the log
//!   then holds a few seconds of writes, more on a slow disk.
//!
//! The log file keeps its largest size until the last connection to the file closes (SQLite
//! then copies it back and deletes it).
//!
//! # Compare-and-set
//! A record's [`Version`](super::Version) is its stored `sess` text. A compare-and-set is one
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
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::ConnectOptions as _;
use sqlx::error::DatabaseError;
use sqlx::query::{Query, QueryAs};
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode,
    SqliteSynchronous,
};

pub use super::sql::InvalidName;
use super::sql::{
    self, Arg, Backend, Dialect, LoadableRow, PruneTask, Settings, Statement, Statements,
};
use super::{Error, ErrorKind, OwnerPath};
use checkpoint::Checkpointer;
use connections::Connections;
use writer::Writer;

mod checkpoint;
mod connections;
#[cfg(test)]
mod scratch;
mod writer;

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
/// live sessions only), and finds sessions by owner ([`OwnerIndex`](super::OwnerIndex)). Cloning is cheap and every
/// clone is the same store.
///
/// ```no_run
/// # async fn run() -> Result<(), cloakroom::store::Error> {
/// let store = cloakroom::store::sqlite::SqliteStore::connect("sessions.db").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Reads: one connection per core this process may run on (readers of a WAL file never
    /// wait for each other or for the writer).
    readers: Connections,
    /// Writes: one connection. SQLite lets one connection write at a time, so this process's
    /// writes queue here, in order, rather than sleep in SQLite's busy handler and retry; those
    /// that queue together are committed together.
    writer: Arc<Writer>,
    /// Told of every write; dropped with the store, which ends the checkpoint task.
    checkpointer: Checkpointer,
    path: PathBuf,
    table: String,
    statements: Statements,
    settings: Settings,
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
    settings: Settings,
    prune_interval: Option<Duration>,
    busy_timeout: Duration,
}

impl SqliteStore {
    /// Opens the store in the file at `path` with the default options, creating the file and
    /// its table when missing.
    ///
    /// On Unix, a new file is made readable and writable by its owner only (mode 0600), as
    /// SQLite then makes its `-wal` and `-shm` files. An existing file keeps its mode: whoever
    /// made it chose who may read it (a group that another program sharing the sessions runs
    /// as, say), and the store does not take that away; `chmod 600` tightens it.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), cloakroom::store::Error> {
    /// let store = cloakroom::store::sqlite::SqliteStore::connect("sessions.db").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// When the file cannot be opened or created (its directory must exist), or is not an
    /// SQLite database; [`ErrorKind::Unsupported`] for `:memory:` or an empty path, which are
    /// no file (use [`MemoryStore`](crate::MemoryStore)).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, Error> {
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
            settings: sql::Settings {
                default_ttl: sql::DEFAULT_TTL,
                max_record_size: super::DEFAULT_MAX_RECORD_SIZE,
                timeout: sql::DEFAULT_TIMEOUT,
                owner_path: OwnerPath::default(),
            },
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
        sql::ops::prune(&*self.inner).await
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
        self.settings.default_ttl = ttl;
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
    /// [`DEFAULT_MAX_RECORD_SIZE`](crate::store::DEFAULT_MAX_RECORD_SIZE), 1 MiB). A bigger save fails
    /// with [`ErrorKind::TooLarge`] and writes nothing; a bigger stored row fails the load the
    /// same way, and is left as it is. SQLite compares the size, so such a row is never copied
    /// out of the file: the query returns its length only.
    ///
    /// ```no_run
    /// let builder = cloakroom::store::sqlite::SqliteStore::builder("sessions.db")
    ///     .with_max_record_size(64 * 1024);
    /// ```
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.settings.max_record_size = bytes;
        self
    }

    /// How long one call through [`SessionStore`](super::SessionStore) may take, a wait for the file included,
    /// before it fails with [`ErrorKind::Timeout`] (default 5 s, as the other stores). Keeps
    /// requests from hanging on a file another process holds or a slow disk: the middleware
    /// answers 503 within this time. A write that times out may still have been applied.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let builder = cloakroom::store::sqlite::SqliteStore::builder("sessions.db")
    ///     .with_timeout(Duration::from_millis(500));
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// Where a session's owner is in its data, for [`OwnerIndex`](super::OwnerIndex) (default `passport.user`,
    /// where passport.js keeps the signed-in user). The owner index is made for this path; see
    /// the [module docs](self#sessions-by-owner) to change the path of an existing file.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), cloakroom::store::InvalidOwnerPath> {
    /// let builder = cloakroom::store::sqlite::SqliteStore::builder("sessions.db")
    ///     .with_owner_path("account.id".parse()?);
    /// # Ok(()) }
    /// ```
    pub fn with_owner_path(mut self, path: OwnerPath) -> Self {
        self.settings.owner_path = path;
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
        let table = sql::quoted(&self.table);
        let locks = sql::quoted(&sql::lock_table_name(&self.table));
        let owner_index = sql::quoted(&sql::owner_index_name(&self.table));
        let statements = Statements::new(
            &SqliteDialect,
            &table,
            &locks,
            &owner_index,
            &self.settings.owner_path,
        );
        let Pools {
            readers,
            writer,
            checkpoints,
        } = self.open_until_not_busy(&statements).await?;
        let inner = Arc::new_cyclic(|weak| Inner {
            checkpointer: Checkpointer::spawn(checkpoints, Arc::clone(&writer)),
            readers,
            writer,
            path: self.path,
            statements,
            table: self.table,
            settings: self.settings,
            prune_interval: self.prune_interval,
            _pruner: self
                .prune_interval
                .map(|interval| sql::spawn_pruner(weak.clone(), interval)),
        });
        Ok(SqliteStore { inner })
    }
}

impl SqliteStoreBuilder {
    /// Opens the connections and creates the tables, trying again while the file is busy, up to
    /// the busy timeout. Connections opening a new file at the same moment race to switch it to
    /// WAL, which takes the file to itself; SQLite turns the losers away at once rather than have
    /// them wait (waiting could deadlock), so the busy timeout alone does not cover it.
    async fn open_until_not_busy(&self, statements: &Statements) -> Result<Pools, Error> {
        let deadline = Instant::now() + self.busy_timeout;
        loop {
            match self.open(statements).await {
                Err(error) if error.kind() == ErrorKind::Timeout && Instant::now() < deadline => {
                    tokio::time::sleep(OPEN_RETRY_DELAY).await;
                }
                opened => return opened,
            }
        }
    }

    async fn open(&self, statements: &Statements) -> Result<Pools, Error> {
        // SQLite gives each connection to these a database of its own: the store's writer and
        // readers would not see each other's sessions.
        let name = self.path.as_os_str();
        if name.is_empty() || name == ":memory:" {
            return Err(Error::new(ErrorKind::Unsupported, NotAFile));
        }
        // SQLite creates the file, not its folder; its own error would only say "unable to open".
        if let Some(folder) = self.path.parent().filter(|f| !f.as_os_str().is_empty())
            && !folder.is_dir()
        {
            return Err(Error::new(
                ErrorKind::Unavailable,
                MissingFolder(folder.to_owned()),
            ));
        }
        create_private(&self.path)?;
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        // Checkpoints are the checkpoint task's (see `checkpoint`), not the requests'.
        let requests = options
            .clone()
            .busy_timeout(self.busy_timeout)
            .pragma("wal_autocheckpoint", "0");
        // The writer first: the first connection switches a new file to WAL, and the readers'
        // connections then find it so.
        let writer = Writer::new(requests.connect().await.map_err(sqlite_error)?);
        let table = sql::quoted(&self.table);
        let index = sql::quoted(&sql::expire_index_name(&self.table));
        for statement in [
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (\"sid\" TEXT NOT NULL PRIMARY KEY, \
                 \"sess\" TEXT NOT NULL, \"expire\" INTEGER NOT NULL)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {table} (\"expire\")"),
            statements.create_owner_index.to_string(),
            statements.create_locks.to_string(),
        ] {
            sqlx::query(&statement)
                .execute(&mut *writer.hold().await)
                .await
                .map_err(sqlite_error)?;
        }
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let readers = Connections::open(&requests, cores)
            .await
            .map_err(sqlite_error)?;
        let checkpoints = options
            .busy_timeout(checkpoint::RESTART_WAIT)
            .connect()
            .await
            .map_err(sqlite_error)?;
        Ok(Pools {
            readers,
            writer,
            checkpoints,
        })
    }
}

/// The connections of a store.
struct Pools {
    readers: Connections,
    writer: Arc<Writer>,
    /// The checkpoint task's.
    checkpoints: SqliteConnection,
}

/// SQLite's spelling of the shared statements: `?n` parameters, `expire` in whole seconds, the
/// JSON as plain text, and lock times by this machine's clock (every process sharing the file
/// shares it).
struct SqliteDialect;

impl Dialect for SqliteDialect {
    fn param(&self, n: usize) -> Option<String> {
        Some(format!("?{n}"))
    }
    fn time(&self, param: &str) -> String {
        param.to_owned()
    }
    fn expire_ms(&self) -> String {
        "expire * 1000".to_owned()
    }
    fn sess_text(&self) -> &'static str {
        "sess"
    }
    // Unlike `length`, which counts characters, `octet_length` counts bytes, and SQLite reads
    // them from the row's header without loading the text.
    fn sess_len(&self) -> &'static str {
        "octet_length(sess)"
    }
    fn sess_value(&self, param: &str) -> String {
        param.to_owned()
    }
    fn now_ms(&self) -> &'static str {
        "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
    }
    fn lock_columns(&self) -> (&'static str, &'static str) {
        ("TEXT", "INTEGER")
    }
    // `json_extract` fails on text that is not JSON, which a row another program wrote may
    // hold: such a row names no owner. The cast turns an integer into its digits. Path
    // segments are letters, digits, `_` and `-` only, so quoting them cannot be escaped.
    fn owner(&self, path: &OwnerPath) -> String {
        let json_path: String = path
            .segments()
            .map(|segment| format!(".\"{segment}\""))
            .collect();
        format!(
            "CASE WHEN json_valid(sess) THEN CAST(json_extract(sess, '${json_path}') AS TEXT) END"
        )
    }
}

/// Creates the database file, empty, with mode 0600 when it does not exist yet, before SQLite
/// opens it: SQLite would make it readable by everyone (0644 under the usual umask), and gives
/// the `-wal` and `-shm` files the main file's mode. An existing file is left as it is (see
/// [`SqliteStore::connect`]). `file:` URIs, which SQLite does not take as a path, are left to
/// SQLite (`:memory:` and the empty path are refused before), and so is every file on systems
/// other than Unix.
fn create_private(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let name = path.as_os_str();
        if name.as_encoded_bytes().starts_with(b"file:") {
            return Ok(());
        }
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        // `AlreadyExists`: there before, or just made by another store opening it too.
        if let Err(error) = created
            && error.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(Error::new(ErrorKind::Unavailable, error));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The store was given `:memory:` or an empty path rather than a file.
#[derive(Debug)]
struct NotAFile;

impl fmt::Display for NotAFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "SqliteStore needs a file: with `:memory:` or an empty path, each of its connections \
             would get a database of its own (MemoryStore keeps sessions in memory)",
        )
    }
}

impl std::error::Error for NotAFile {}

/// The folder an SQLite file should be in does not exist.
#[derive(Debug)]
struct MissingFolder(PathBuf);

impl fmt::Display for MissingFolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the folder {} does not exist (SQLite creates the file, not its folder)",
            self.0.display()
        )
    }
}

impl std::error::Error for MissingFolder {}

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

/// Binds the shared operations' parameters to an sqlx SQLite query.
fn query<'q>(sql: &'q str, args: &'q [Arg<'q>]) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    args.iter().fold(sqlx::query(sql), |query, arg| match *arg {
        Arg::Text(text) => query.bind(text),
        Arg::Int(n) => query.bind(n),
    })
}

fn query_as<'q, O>(sql: &'q str, args: &'q [Arg<'q>]) -> QueryAs<'q, Sqlite, O, SqliteArguments<'q>>
where
    O: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
{
    args.iter()
        .fold(sqlx::query_as(sql), |query, arg| match *arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(n) => query.bind(n),
        })
}

impl Backend for Inner {
    const STORE: &'static str = "sqlite";

    fn statements(&self) -> &Statements {
        &self.statements
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn error(error: sqlx::Error) -> Error {
        sqlite_error(error)
    }

    async fn execute(&self, sql: &Statement, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        let done = self.writer.execute(query(sql, args)).await;
        self.checkpointer.wrote();
        done
    }

    async fn count(&self, sql: &Statement, args: &[Arg<'_>]) -> Result<i64, sqlx::Error> {
        let (count,): (i64,) = query_as(sql, args)
            .fetch_one(&mut *self.readers.get().await)
            .await?;
        Ok(count)
    }

    async fn fetch_one_record(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> Result<Option<(Option<String>, i64, i64)>, sqlx::Error> {
        query_as(sql, args)
            .fetch_optional(&mut *self.readers.get().await)
            .await
    }

    async fn fetch_records(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> Result<Vec<(String, Option<String>, i64)>, sqlx::Error> {
        query_as(sql, args)
            .fetch_all(&mut *self.readers.get().await)
            .await
    }

    async fn fetch_loadable_records(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> Result<Vec<LoadableRow>, sqlx::Error> {
        query_as(sql, args)
            .fetch_all(&mut *self.readers.get().await)
            .await
    }
}

sql::impl_sql_store!(SqliteStore);

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("table", &self.inner.table)
            .field("default_ttl", &self.inner.settings.default_ttl)
            .field("timeout", &self.inner.settings.timeout)
            .field("prune_interval", &self.inner.prune_interval)
            .field("owner_path", &self.inner.settings.owner_path)
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

    /// The statement in the module docs: the query spells the owner the same way.
    #[test]
    fn the_owner_index_is_the_documented_one() {
        let owner = r#"CASE WHEN json_valid(sess) THEN CAST(json_extract(sess, '$."passport"."user"') AS TEXT) END"#;
        let statements = Statements::new(
            &SqliteDialect,
            "\"session\"",
            "\"session_lock\"",
            "\"session_owner_idx\"",
            &OwnerPath::default(),
        );
        assert_eq!(
            statements.create_owner_index,
            format!(
                "CREATE INDEX IF NOT EXISTS \"session_owner_idx\" ON \"session\" (({owner})) \
                 WHERE ({owner}) IS NOT NULL"
            )
        );
        assert!(
            statements
                .sessions_of
                .contains(&format!("WHERE ({owner}) = ?1 AND expire >= ?2")),
            "{}",
            statements.sessions_of
        );
    }
}
