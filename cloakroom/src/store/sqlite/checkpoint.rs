//! Checkpoints of the write-ahead log, off the request path.
//!
//! A checkpoint copies the pages of the log back into the database file and syncs both files
//! to disk. By default SQLite runs one on the connection whose commit takes the log past 1000
//! pages, so the request that made that write waits for the disk. Under steady writes it is
//! worse: the log starts over only when a write begins with every page copied back, which
//! writes landing during a checkpoint prevent, so the log outgrows the limit and nearly every
//! commit checkpoints (and syncs) again. On a slow or busy disk, each of those requests waits
//! for two syncs.
//!
//! The store's connections turn that off (`wal_autocheckpoint=0`). Instead, a task of the
//! store's checkpoints on a connection of its own:
//!
//! - after writes, a `PASSIVE` checkpoint: it copies what no reader still needs, and neither
//!   waits for nor blocks anyone. Every [`PASSIVE_EVERY`] under steady writes, at most once a
//!   second ([`GATHER_AT_MOST`]) after a few;
//! - when the log is still [`RESTART_AFTER_PAGES`] pages or more after it, at most every
//!   [`RESTART_EVERY`], up to [`CATCH_UP_PASSES`] more `PASSIVE` ones (for the writes that
//!   landed meanwhile), then a `RESTART` checkpoint while it holds the store's writer connection:
//!   this process's writes queue for the copy of the last pages and the two syncs, and the next
//!   write starts the log over. It waits for readers and other processes' writers up to
//!   [`RESTART_WAIT`], and when that runs out it tries again later. The slower the disk, the
//!   longer a restart holds the writer, and the further apart restarts are kept
//!   ([`RESTART_SPACING`]).
//!
//! So the log holds the writes of a second or a few on a fast disk, more on a slow one: in the
//! benchmark's `/login` (17,000 new sessions a second, sustained), the log
//! file reached 0.6–1.8 GB in 10 s, and 2.2 GB with syncs slowed to 30 ms. (SQLite's own
//! default does not bound it either: with ten connections it reached 1.2 GB there.) The file
//! keeps its largest size while the store is open: cutting it back when the log starts over
//! (`journal_size_limit`) made the next writes wait for the file system to give the space back
//! (p99 of a `/login` run 70 ms, against 27 ms without). Other processes sharing the file keep
//! their own settings; the last connection to close a file checkpoints it and deletes the log,
//! as SQLite always does.

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::Notify;

use super::writer::Writer;

/// The shortest pause between two checkpoints. Short, so that each copies little: a long copy
/// takes the core from the requests for longer (in the benchmark, with one core, p99 of
/// `/login` was 18–19 ms with 500 ms, 8–9 ms with 20 ms, at p50 3.3–3.6 ms).
const PASSIVE_EVERY: Duration = Duration::from_millis(20);

/// How many writes make a checkpoint due after [`PASSIVE_EVERY`]; fewer wait up to
/// [`GATHER_AT_MOST`], so that a quiet store syncs the disk at most twice a second.
const GATHER_WRITES: u64 = 100;

/// See [`GATHER_WRITES`].
const GATHER_AT_MOST: Duration = Duration::from_secs(1);

/// The log's length, in pages, from which a `RESTART` checkpoint is due (16 MiB of 4 KiB pages,
/// four times SQLite's own trigger).
const RESTART_AFTER_PAGES: i64 = 4096;

/// The shortest pause between two `RESTART` checkpoints: each holds up this process's writes
/// for two syncs, so they are spaced out.
const RESTART_EVERY: Duration = Duration::from_secs(1);

/// A `RESTART` checkpoint that held the writer for a time `t` is followed by none other for
/// `RESTART_SPACING × t` (if longer than [`RESTART_EVERY`]): writes wait for restarts 0.5 % of
/// the time at most. With syncs slowed to 30 ms, one a second made p99 of the benchmark's
/// `/login` 99–110 ms.
const RESTART_SPACING: u32 = 200;

/// How many more `PASSIVE` checkpoints a `RESTART` checkpoint may follow, to copy the writes
/// that landed during the one before, until at most [`CATCH_UP_TO_PAGES`] are left.
const CATCH_UP_PASSES: usize = 3;

/// See [`CATCH_UP_PASSES`].
const CATCH_UP_TO_PAGES: i64 = 256;

/// How long a `RESTART` checkpoint waits for readers and other writers (its connection's busy
/// timeout).
pub(super) const RESTART_WAIT: Duration = Duration::from_millis(100);

/// The store's side of the checkpoint task: [`wrote`](Self::wrote) after each write; dropping
/// it ends the task.
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
}

struct Shared {
    wrote: Notify,
    /// Writes since the last checkpoint began.
    writes: AtomicU64,
    stop: AtomicBool,
}

impl Checkpointer {
    /// Starts checkpointing on `connection` (the task's own), holding `writer` (the store's
    /// writer connection) during `RESTART` checkpoints.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub(super) fn spawn(connection: SqliteConnection, writer: Arc<Writer>) -> Self {
        let shared = Arc::new(Shared {
            wrote: Notify::new(),
            writes: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        tokio::spawn(checkpoint_forever(connection, writer, Arc::clone(&shared)));
        Self { shared }
    }

    /// Tells the task that the log has grown. Cheap: at most one wake-up is stored.
    pub(super) fn wrote(&self) {
        self.shared.writes.fetch_add(1, Ordering::Relaxed);
        self.shared.wrote.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wrote.notify_one();
    }
}

async fn checkpoint_forever(
    mut connection: SqliteConnection,
    writer: Arc<Writer>,
    shared: Arc<Shared>,
) {
    let mut restart_from = Instant::now() + RESTART_EVERY;
    loop {
        shared.wrote.notified().await;
        // Let writes gather: a checkpoint per write would sync the disk twice per write.
        let first_write = Instant::now();
        loop {
            tokio::time::sleep(PASSIVE_EVERY).await;
            if shared.stop.load(Ordering::Relaxed) {
                let _ = connection.close().await;
                return;
            }
            if shared.writes.load(Ordering::Relaxed) >= GATHER_WRITES
                || first_write.elapsed() >= GATHER_AT_MOST
            {
                break;
            }
        }
        shared.writes.store(0, Ordering::Relaxed);
        if let Err(error) = checkpoint_once(&mut connection, &writer, &mut restart_from).await {
            warn(&error);
        }
    }
}

async fn checkpoint_once(
    connection: &mut SqliteConnection,
    writer: &Writer,
    restart_from: &mut Instant,
) -> Result<(), sqlx::Error> {
    let mut log = checkpoint(connection, Mode::Passive).await?;
    if log.pages < RESTART_AFTER_PAGES || Instant::now() < *restart_from {
        return Ok(());
    }
    *restart_from = Instant::now() + RESTART_EVERY;
    // Writes landed while it ran: copy them too, still without holding anyone up, so that the
    // held checkpoint below has little left to copy and sync.
    for _ in 0..CATCH_UP_PASSES {
        if log.pages - log.copied <= CATCH_UP_TO_PAGES {
            break;
        }
        log = checkpoint(connection, Mode::Passive).await?;
    }
    // Held, so that no write of this process lands during the checkpoint: it can then copy
    // every page, and the next write starts the log over.
    let held = writer.hold().await;
    let started = Instant::now();
    let restarted = checkpoint(connection, Mode::Restart).await;
    let held_for = started.elapsed();
    drop(held);
    // On a slow disk, restarts keep further apart, so that they never hold up more than a
    // small share of the writes.
    *restart_from = started + RESTART_EVERY.max(held_for * RESTART_SPACING);
    restarted.map(drop)
}

#[derive(Clone, Copy)]
enum Mode {
    Passive,
    Restart,
}

/// The log's length and how much of it is copied back, in pages, after a checkpoint.
struct Log {
    pages: i64,
    copied: i64,
}

/// Runs one checkpoint. One that could not finish (readers or another checkpoint in the way) is
/// no error: the next one carries on.
async fn checkpoint(connection: &mut SqliteConnection, mode: Mode) -> Result<Log, sqlx::Error> {
    let sql = match mode {
        Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Mode::Restart => "PRAGMA wal_checkpoint(RESTART)",
    };
    // (busy, pages in the log, pages copied back); -1 pages when the file is not in WAL mode.
    let (_busy, pages, copied): (i64, i64, i64) =
        sqlx::query_as(sql).fetch_one(&mut *connection).await?;
    Ok(Log { pages, copied })
}

fn warn(error: &sqlx::Error) {
    tracing::warn!(
        store = "sqlite",
        error = error as &dyn StdError,
        "failed to checkpoint the write-ahead log; retrying after the next write"
    );
}
