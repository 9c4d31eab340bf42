//! SqliteStore on real files: the conformance suite, restarts, several stores (as several
//! processes) sharing one file, pruning, name validation, undecodable rows and the owner index.
#![cfg(feature = "sqlite")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloakroom::store::sqlite::{InvalidName, SqliteStore};
use cloakroom::store::{
    self, Condition, ErrorKind, Lease, Loaded, LockStore, OwnerIndex, OwnerPath, SessionStore,
    SetOutcome,
};
use cloakroom::{Id, Record};
use cloakroom_testkit::{record, unique_name, write};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tokio::task::JoinHandle;

/// A directory of its own under the system's temporary directory, removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(unique_name("cloakroom-sqlite-"));
        std::fs::create_dir(&path).unwrap();
        TempDir(path)
    }

    fn file(&self) -> PathBuf {
        self.0.join("sessions.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in /tmp must not fail a passing test.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store in a file of its own, deleted with the last store on it.
#[derive(Debug)]
struct Fresh {
    store: SqliteStore,
    // Declared last so it is dropped after the store.
    dir: Arc<TempDir>,
}

async fn fresh() -> Fresh {
    let dir = Arc::new(TempDir::new());
    let store = SqliteStore::connect(dir.file()).await.unwrap();
    Fresh { store, dir }
}

/// Two stores with their own pools on one file, as two processes would have.
async fn pair() -> (Fresh, Fresh) {
    let first = fresh().await;
    let second = Fresh {
        store: SqliteStore::connect(first.dir.file()).await.unwrap(),
        dir: Arc::clone(&first.dir),
    };
    (first, second)
}

async fn prune(fresh: &Fresh) -> usize {
    usize::try_from(fresh.store.prune_expired().await.unwrap()).unwrap()
}

#[async_trait]
impl SessionStore for Fresh {
    async fn get(&self, id: &Id) -> Result<Option<Loaded>, store::Error> {
        self.store.get(id).await
    }
    async fn set(
        &self,
        id: &Id,
        record: &Record,
        condition: Condition<'_>,
    ) -> Result<SetOutcome, store::Error> {
        self.store.set(id, record, condition).await
    }
    async fn destroy(&self, id: &Id) -> Result<(), store::Error> {
        self.store.destroy(id).await
    }
    async fn touch(&self, id: &Id, record: &Record) -> Result<(), store::Error> {
        self.store.touch(id, record).await
    }
    fn default_ttl(&self) -> Option<Duration> {
        self.store.default_ttl()
    }
    fn owner_path(&self) -> &OwnerPath {
        self.store.owner_path()
    }
    async fn all(&self) -> Result<Vec<(Id, Record)>, store::Error> {
        self.store.all().await
    }
    async fn len(&self) -> Result<usize, store::Error> {
        self.store.len().await
    }
    async fn clear(&self) -> Result<(), store::Error> {
        self.store.clear().await
    }
}

#[async_trait]
impl LockStore for Fresh {
    async fn try_lock(&self, id: &Id, lease: &Lease) -> Result<bool, store::Error> {
        self.store.try_lock(id, lease).await
    }
    async fn unlock(&self, id: &Id, lease: &Lease) -> Result<(), store::Error> {
        self.store.unlock(id, lease).await
    }
}

#[async_trait]
impl OwnerIndex for Fresh {
    async fn sessions_of(&self, owner: &str) -> Result<Vec<(Id, Loaded)>, store::Error> {
        self.store.sessions_of(owner).await
    }
}

cloakroom_testkit::conformance_suite!(fresh, prune = prune);
cloakroom_testkit::concurrency_suite!(pair);
cloakroom_testkit::locking_suite!(pair);
cloakroom_testkit::owner_index_suite!(pair);

/// A connection pool of the test's own on the store's file, as another process would have.
async fn raw(file: &Path) -> SqlitePool {
    SqlitePool::connect_with(SqliteConnectOptions::new().filename(file))
        .await
        .unwrap()
}

async fn rows(pool: &SqlitePool) -> i64 {
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM session")
        .fetch_one(pool)
        .await
        .unwrap();
    count
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let dir = TempDir::new();
    let id = Id::generate();
    let stored = record(json!({"user": "john"}), Some(Duration::from_secs(600)));
    let version = {
        let store = SqliteStore::connect(dir.file()).await.unwrap();
        write(&store, &id, &stored, None).await
    };
    let reopened = SqliteStore::connect(dir.file()).await.unwrap();
    let loaded = reopened.get(&id).await.unwrap().expect("still there");
    assert_eq!(loaded.record.to_json(), stored.to_json());
    assert_eq!(loaded.version, version, "the version survives too");
}

#[tokio::test]
async fn the_file_uses_write_ahead_logging() {
    let dir = TempDir::new();
    let _store = SqliteStore::connect(dir.file()).await.unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&raw(&dir.file()).await)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

/// How many times the write-ahead log of `file` has started over: the checkpoint sequence number
/// in its header (bytes 12 to 15, big-endian), which SQLite raises each time.
fn log_restarts(file: &Path) -> u32 {
    let mut log = file.as_os_str().to_owned();
    log.push("-wal");
    let header = std::fs::read(log).unwrap_or_default();
    header
        .get(12..16)
        .map_or(0, |bytes| u32::from_be_bytes(bytes.try_into().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_copied_back_and_starts_over_under_steady_writes() {
    // The store's connections never checkpoint (so that no request waits for the disk): its
    // task must, or the log would grow for as long as the writes go on.
    let fresh = fresh().await;
    let file = fresh.dir.file();
    let before = log_restarts(&file);
    // Each session a page of its own, so that the log grows fast.
    let padded = record(
        json!({"pad": "x".repeat(4000)}),
        Some(Duration::from_secs(600)),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut written = 0;
    while log_restarts(&file) == before {
        assert!(
            written < 30_000 && Instant::now() < deadline,
            "the log never started over in {written} writes"
        );
        write(&fresh.store, &Id::generate(), &padded, None).await;
        written += 1;
    }
}

/// Takes the write lock on `pool`'s file and releases it after `duration` (in a task: await
/// the handle to know it is released).
async fn hold_write_lock(pool: &SqlitePool, duration: Duration) -> JoinHandle<()> {
    let lock = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        lock.rollback().await.unwrap();
    })
}

/// Another process holds the write lock: a write waits for it, up to the busy timeout, then
/// fails as a timeout (transient).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_file_is_waited_for_then_a_timeout() {
    let dir = TempDir::new();
    let store = SqliteStore::builder(dir.file())
        .with_busy_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let other = raw(&dir.file()).await;
    let id = Id::generate();
    let stored = record(json!({"n": 1}), None);

    let released = hold_write_lock(&other, Duration::from_millis(100)).await;
    let started = Instant::now();
    write(&store, &id, &stored, None).await;
    assert!(started.elapsed() >= Duration::from_millis(50), "it waited");
    released.await.unwrap();

    let released = hold_write_lock(&other, Duration::from_millis(1500)).await;
    let error = store
        .set(&id, &stored, Condition::absent())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error:?}");
    assert!(error.is_transient());
    assert!(!format!("{error} {error:?}").contains(id.as_str()));
    released.await.unwrap();
    assert!(
        store.get(&id).await.unwrap().is_some(),
        "reads never waited"
    );
}

/// Every store call is bounded by the store's timeout, as on the networked stores: a write
/// stuck behind another process's lock fails as a timeout when the call's time is up, even when
/// the busy timeout is longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_bounded_by_the_store_timeout() {
    let dir = TempDir::new();
    let store = SqliteStore::builder(dir.file())
        .with_busy_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let other = raw(&dir.file()).await;
    let released = hold_write_lock(&other, Duration::from_millis(1500)).await;
    let started = Instant::now();
    let error = store
        .set(
            &Id::generate(),
            &record(json!({"n": 1}), None),
            Condition::absent(),
        )
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1200),
        "failed after {waited:?}"
    );
    released.await.unwrap();
}

/// Two stores with their own pools on one file, as two processes would be: concurrent
/// compare-and-set increments of one counter lose nothing and never fail with "database is
/// locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_never_lose_an_increment() {
    const TASKS_PER_STORE: usize = 8;
    const ROUNDS: u64 = 25;
    let dir = TempDir::new();
    let stores = [
        SqliteStore::connect(dir.file()).await.unwrap(),
        SqliteStore::connect(dir.file()).await.unwrap(),
    ];
    let counter = Id::generate();
    let minute = Some(Duration::from_secs(60));
    write(
        &stores[0],
        &counter,
        &record(json!({"count": 0}), minute),
        None,
    )
    .await;

    let mut tasks = Vec::new();
    for store in &stores {
        for _ in 0..TASKS_PER_STORE {
            let store = store.clone();
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                let mut conflicts = 0u64;
                for _ in 0..ROUNDS {
                    loop {
                        let loaded = store.get(&counter).await.unwrap().unwrap();
                        let count = loaded.record.data()["count"].as_u64().unwrap();
                        let next = record(json!({"count": count + 1}), minute);
                        match store
                            .set(&counter, &next, Condition::version(&loaded.version))
                            .await
                        {
                            Ok(SetOutcome::Written(_)) => break,
                            Ok(_) => conflicts += 1,
                            Err(error) => panic!("a write failed: {error} ({error:?})"),
                        }
                    }
                }
                conflicts
            }));
        }
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let total = stores[1].get(&counter).await.unwrap().unwrap();
    assert_eq!(
        total.record.data()["count"],
        json!(2 * TASKS_PER_STORE as u64 * ROUNDS),
        "lost increments"
    );
    assert!(conflicts > 0, "the stores really raced");
}

#[tokio::test]
async fn the_pruning_task_deletes_expired_rows_and_stops_with_the_store() {
    let dir = TempDir::new();
    let store = SqliteStore::builder(dir.file())
        .with_prune_interval(Some(Duration::from_millis(50)))
        .build()
        .await
        .unwrap();
    let expired_row = "INSERT INTO session (sid, sess, expire) \
                       VALUES (hex(randomblob(8)), '{\"cookie\":{}}', 0)";
    let pool = raw(&dir.file()).await;
    sqlx::query(expired_row).execute(&pool).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows(&pool).await > 0 {
        assert!(Instant::now() < deadline, "the task never pruned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(store);
    sqlx::query(expired_row).execute(&pool).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rows(&pool).await, 1, "the task stopped with the store");
}

#[tokio::test]
async fn table_names_that_are_not_plain_identifiers_are_refused() {
    let builder = || SqliteStore::builder("never-opened.db");
    for bad in [
        "",
        "1st",
        "has space",
        "quo\"te",
        "semi;colon",
        "a.b",
        "naïve",
    ] {
        assert_eq!(
            builder().with_table_name(bad).unwrap_err(),
            InvalidName::Table,
            "{bad:?}"
        );
    }
    assert!(!Path::new("never-opened.db").exists());

    let dir = TempDir::new();
    let store = SqliteStore::builder(dir.file())
        .with_table_name("web_sessions")
        .unwrap()
        .build()
        .await
        .unwrap();
    write(&store, &Id::generate(), &record(json!({}), None), None).await;
    let (index,): (String,) =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'IDX%'")
            .fetch_one(&raw(&dir.file()).await)
            .await
            .unwrap();
    assert_eq!(index, "IDX_web_sessions_expire");
    assert_eq!(store.len().await.unwrap(), 1);
}

#[tokio::test]
async fn a_row_that_is_not_a_session_is_a_decode_error_and_is_kept() {
    let dir = TempDir::new();
    let store = SqliteStore::connect(dir.file()).await.unwrap();
    let pool = raw(&dir.file()).await;
    sqlx::query(
        "INSERT INTO session (sid, sess, expire) \
         VALUES ('not-a-session', '{\"cookie\":\"private data\"}', unixepoch() + 3600)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let id = Id::from_string("not-a-session");
    let error = store.get(&id).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Decode);
    let described = format!("{error} {error:?}");
    assert!(!described.contains("private data"), "{described}");
    assert!(!described.contains("not-a-session"), "{described}");
    assert_eq!(rows(&pool).await, 1, "the row is kept");
}

#[tokio::test]
async fn an_in_memory_database_is_refused_with_a_clear_error() {
    for name in [":memory:", ""] {
        let error = SqliteStore::connect(name).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unsupported, "{name:?}: {error:?}");
        let cause = std::error::Error::source(&error).unwrap().to_string();
        assert!(cause.contains("MemoryStore"), "{cause}");
    }
}

#[tokio::test]
async fn a_file_that_cannot_be_opened_is_an_error() {
    let dir = TempDir::new();
    let error = SqliteStore::connect(dir.0.join("missing-directory").join("sessions.db"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error:?}");
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(
        cause.contains("missing-directory") && cause.contains("does not exist"),
        "{cause}"
    );
}

/// Stores opening one new file at the same moment (processes starting together) all succeed,
/// though only one of them can switch the file to WAL at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_a_new_file_all_succeed() {
    let dir = TempDir::new();
    let file = Arc::new(dir.file());
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let file = Arc::clone(&file);
            tokio::spawn(async move { SqliteStore::connect(&*file).await })
        })
        .collect();
    for open in opens {
        open.await.unwrap().unwrap();
    }
}

/// The mode bits of the file at `path`, and of its `-wal` and `-shm` files, in octal.
#[cfg(unix)]
fn modes(path: &Path) -> [String; 3] {
    use std::os::unix::fs::PermissionsExt;
    ["", "-wal", "-shm"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let metadata = std::fs::metadata(&name)
            .unwrap_or_else(|error| panic!("{}: {error}", Path::new(&name).display()));
        format!("{:o}", metadata.permissions().mode() & 0o777)
    })
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_file_and_its_write_ahead_log_are_private() {
    let dir = TempDir::new();
    let store = SqliteStore::connect(dir.file()).await.unwrap();
    write(
        &store,
        &Id::generate(),
        &record(json!({"n": 1}), None),
        None,
    )
    .await;
    assert_eq!(modes(&dir.file()), ["600", "600", "600"], "owner only");
}

#[cfg(unix)]
#[tokio::test]
async fn an_existing_file_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    // Made by whoever runs the service, readable by a group that shares the sessions.
    std::fs::File::create(dir.file()).unwrap();
    std::fs::set_permissions(dir.file(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let store = SqliteStore::connect(dir.file()).await.unwrap();
    write(
        &store,
        &Id::generate(),
        &record(json!({"n": 1}), None),
        None,
    )
    .await;
    assert_eq!(
        modes(&dir.file()),
        ["640", "640", "640"],
        "SQLite copies the mode"
    );
}

/// The ids `sessions_of` returns, sorted.
async fn ids_of(store: &impl OwnerIndex, owner: &str) -> Vec<String> {
    let mut ids: Vec<String> = store
        .sessions_of(owner)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.as_str().to_owned())
        .collect();
    ids.sort();
    ids
}

/// A session as express-session and passport write it, owned by `user` (JSON text).
fn express_row(sid: &str, user: &str) -> String {
    format!(
        "INSERT INTO session (sid, sess, expire) VALUES ('{sid}', \
         '{{\"cookie\":{{\"originalMaxAge\":3600000,\"expires\":\"2999-01-01T00:00:00.000Z\",\
         \"secure\":false,\"httpOnly\":true,\"path\":\"/\"}},\"passport\":{{\"user\":{user}}}}}', \
         unixepoch() + 3600)"
    )
}

#[tokio::test]
async fn a_custom_owner_path_is_the_one_indexed_and_read() {
    let dir = TempDir::new();
    let store = SqliteStore::builder(dir.file())
        .with_owner_path("account.id".parse().unwrap())
        .build()
        .await
        .unwrap();
    assert_eq!(store.owner_path().to_string(), "account.id");
    let by_account = Id::generate();
    let by_passport = Id::generate();
    let minute = Some(Duration::from_secs(60));
    write(
        &store,
        &by_account,
        &record(json!({"account": {"id": "x"}}), minute),
        None,
    )
    .await;
    write(
        &store,
        &by_passport,
        &record(json!({"passport": {"user": "x"}}), minute),
        None,
    )
    .await;
    assert_eq!(ids_of(&store, "x").await, [by_account.as_str()]);

    let (index,): (String,) =
        sqlx::query_as("SELECT sql FROM sqlite_master WHERE name = 'session_owner_idx'")
            .fetch_one(&raw(&dir.file()).await)
            .await
            .unwrap();
    assert!(index.contains(r#"'$."account"."id"'"#), "{index}");
}

/// Rows another program wrote (as express-session with passport would) are indexed too, and
/// read exactly as `get` reads them; the database's text of a value that owns nothing is not
/// taken for an owner.
#[tokio::test]
async fn rows_written_by_hand_are_found_as_get_finds_them() {
    let dir = TempDir::new();
    let store = SqliteStore::connect(dir.file()).await.unwrap();
    let pool = raw(&dir.file()).await;
    for row in [
        express_row("express-x", "\"x\""),
        express_row("express-42", "42"),
        express_row("express-float", "4.5"),
    ] {
        sqlx::query(&row).execute(&pool).await.unwrap();
    }

    let found = store.sessions_of("x").await.unwrap();
    assert_eq!(found.len(), 1);
    let (id, loaded) = &found[0];
    assert_eq!(id.as_str(), "express-x");
    let got = store.get(id).await.unwrap().unwrap();
    assert_eq!(loaded.version, got.version);
    assert_eq!(loaded.expires_at, got.expires_at);
    assert_eq!(loaded.record, got.record);

    assert_eq!(ids_of(&store, "42").await, ["express-42"]);
    assert!(
        ids_of(&store, "4.5").await.is_empty(),
        "a float owns nothing"
    );
}

/// A row whose `sess` is not JSON names no owner: it fails neither the writes that put it there
/// nor anyone's `sessions_of`, and the store's own writes go on.
#[tokio::test]
async fn rows_that_are_not_json_break_nothing() {
    let dir = TempDir::new();
    let store = SqliteStore::connect(dir.file()).await.unwrap();
    let pool = raw(&dir.file()).await;
    for row in [
        "INSERT INTO session VALUES ('cut-short', '{\"passport\":{\"user\":\"x\"}', unixepoch() + 3600)",
        "INSERT INTO session VALUES ('not-json', 'passport.user = x', unixepoch() + 3600)",
        "INSERT INTO session VALUES ('bytes', x'00ff7b', unixepoch() + 3600)",
        "UPDATE session SET sess = '{\"passport\":' WHERE sid = 'not-json'",
    ] {
        sqlx::query(row).execute(&pool).await.unwrap();
    }
    let id = Id::generate();
    let mine = record(
        json!({"passport": {"user": "x"}}),
        Some(Duration::from_secs(60)),
    );
    let version = write(&store, &id, &mine, None).await;
    assert_eq!(ids_of(&store, "x").await, [id.as_str()]);
    let other = record(
        json!({"passport": {"user": "y"}}),
        Some(Duration::from_secs(60)),
    );
    write(&store, &id, &other, Some(&version)).await;
    assert!(ids_of(&store, "x").await.is_empty());
    assert_eq!(ids_of(&store, "y").await, [id.as_str()]);
    store.destroy(&Id::from_string("cut-short")).await.unwrap();
    assert_eq!(rows(&pool).await, 3);
}

/// The owner query reads the index: SQLite's plan for an equality on the index's own
/// expression (the store's query spells it the same, checked in the unit tests).
#[tokio::test]
async fn the_owner_query_uses_the_owner_index() {
    let dir = TempDir::new();
    let _store = SqliteStore::connect(dir.file()).await.unwrap();
    let pool = raw(&dir.file()).await;
    let (index,): (String,) =
        sqlx::query_as("SELECT sql FROM sqlite_master WHERE name = 'session_owner_idx'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let owner = index
        .split_once(" ((")
        .and_then(|(_, rest)| rest.split_once(")) WHERE "))
        .map(|(owner, _)| owner)
        .unwrap_or_else(|| panic!("{index}"));
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!(
        "EXPLAIN QUERY PLAN SELECT sid FROM session WHERE ({owner}) = ?1 AND expire >= ?2"
    ))
    .bind("x")
    .bind(0_i64)
    .fetch_all(&pool)
    .await
    .unwrap();
    let plan: Vec<&str> = plan.iter().map(|(.., detail)| detail.as_str()).collect();
    assert_eq!(
        plan,
        ["SEARCH session USING INDEX session_owner_idx (<expr>=?)"]
    );
}
