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
//! - after writes, at most every [`PASSIVE_EVERY`], a `PASSIVE` checkpoint: it copies what no
//!   reader still needs, and neither waits for nor blocks anyone;
//! - when the log is still [`RESTART_AFTER_PAGES`] pages or more after it, at most every
//!   [`RESTART_EVERY`], a `RESTART` checkpoint while it holds the store's writer connection:
//!   this process's writes queue for the copy of the last pages and the two syncs, and the next
//!   write starts the log over. It waits for readers and other processes' writers up to
//!   [`RESTART_WAIT`], and when that runs out it tries again later.
//!
//! So the log holds at most about what [`RESTART_EVERY`] of writes add (SQLite's own default
//! does not bound it: under steady writes it grew past 1 GB in 10 s in the benchmark). The file
//! keeps its largest size while the store is open: cutting it back when the log starts over
//! (`journal_size_limit`) made the next writes wait for the file system to give the space back
//! (p99 of a `/login` run 70 ms, against 27 ms without). Other processes sharing the file keep
//! their own settings; the last connection to close a file checkpoints it and deletes the log,
//! as SQLite always does.

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use tokio::sync::Notify;

/// The shortest pause between two checkpoints.
pub(super) const PASSIVE_EVERY: Duration = Duration::from_millis(100);

/// The log's length, in pages, from which a `RESTART` checkpoint is due (16 MiB of 4 KiB pages,
/// four times SQLite's own trigger).
pub(super) const RESTART_AFTER_PAGES: i64 = 4096;

/// The shortest pause between two `RESTART` checkpoints: each holds up this process's writes
/// for two syncs, so they are spaced out.
pub(super) const RESTART_EVERY: Duration = Duration::from_secs(1);

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
    stop: AtomicBool,
}

impl Checkpointer {
    /// Starts checkpointing on `connection` (the task's own), holding `writer` (the store's
    /// writer pool) during `RESTART` checkpoints.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub(super) fn spawn(connection: SqliteConnection, writer: SqlitePool) -> Self {
        let shared = Arc::new(Shared {
            wrote: Notify::new(),
            stop: AtomicBool::new(false),
        });
        tokio::spawn(checkpoint_forever(connection, writer, Arc::clone(&shared)));
        Self { shared }
    }

    /// Tells the task that the log has grown. Cheap: at most one wake-up is stored.
    pub(super) fn wrote(&self) {
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
    writer: SqlitePool,
    shared: Arc<Shared>,
) {
    let mut last_restart = Instant::now();
    loop {
        shared.wrote.notified().await;
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        match checkpoint(&mut connection, Mode::Passive).await {
            Ok(pages)
                if pages >= RESTART_AFTER_PAGES && last_restart.elapsed() >= RESTART_EVERY =>
            {
                last_restart = Instant::now();
                // Held, so that no write of this process lands during the checkpoint: it can
                // then copy every page, and the next write starts the log over.
                let held = writer.acquire().await;
                if let Err(error) = checkpoint(&mut connection, Mode::Restart).await {
                    warn(&error);
                }
                drop(held);
            }
            Ok(_) => {}
            Err(error) => warn(&error),
        }
        tokio::time::sleep(PASSIVE_EVERY).await;
    }
    let _ = connection.close().await;
}

#[derive(Clone, Copy)]
enum Mode {
    Passive,
    Restart,
}

/// Runs one checkpoint; returns the log's length in pages, as it was when it began. A
/// checkpoint that could not finish (readers or another checkpoint in the way) is no error: the
/// next one carries on.
async fn checkpoint(connection: &mut SqliteConnection, mode: Mode) -> Result<i64, sqlx::Error> {
    let sql = match mode {
        Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Mode::Restart => "PRAGMA wal_checkpoint(RESTART)",
    };
    // (busy, pages in the log, pages copied back); -1 pages when the file is not in WAL mode.
    let (_busy, pages, _copied): (i64, i64, i64) =
        sqlx::query_as(sql).fetch_one(&mut *connection).await?;
    Ok(pages)
}

fn warn(error: &sqlx::Error) {
    tracing::warn!(
        store = "sqlite",
        error = error as &dyn StdError,
        "failed to checkpoint the write-ahead log; retrying after the next write"
    );
}
