//! The store's writer connection, which commits the writes that queue for it together.
//!
//! SQLite appends every page a transaction changes to the write-ahead log, whole, at each
//! commit. A new session changes three pages (the table's last one, a leaf of the `sid` index
//! and the last one of the `expire` index), so on its own it adds about four pages (16 KiB) to
//! the log, which the checkpoint task then copies back into the file. When writes queue for the
//! connection, the first of them opens a transaction (`BEGIN IMMEDIATE`), the writes behind it
//! run in it one after the other, and the last one in the queue, or the
//! [`BATCH_AT_MOST`]th, commits it: the pages they share reach the log once, so the log grows
//! by less than half as much per new session and its copying costs the requests less.
//!
//! Each statement still runs alone and atomically, and every request waits for the commit
//! that holds its write before it hears that the write succeeded, so what other connections see
//! is unchanged: a write is visible once its request returns, never before it is committed. A
//! write with nobody queued behind it commits on its own, as without batching. If a statement
//! fails, the writes before it in the transaction are committed at once (SQLite undoes only the
//! failed statement) and the failed one reports its error; if the commit fails (a full disk),
//! every write in the transaction reports the error and none of them happened.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;

use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

use super::connections::handed_over;

/// The most writes one transaction holds. Bounds how long the first of them waits for its
/// commit (about this many statements' time).
const BATCH_AT_MOST: usize = 16;

/// The connection, with the transaction open on it.
pub(super) struct Writer {
    state: Arc<Mutex<State>>,
    /// Writes waiting for the connection. While there are some, a write leaves its transaction
    /// open for them.
    waiting: AtomicUsize,
}

struct State {
    connection: SqliteConnection,
    /// The transaction open on the connection, if any, and how many writes it holds.
    open: Option<(Arc<Batch>, usize)>,
}

/// The writes of one transaction wait here for its commit.
struct Batch {
    /// Set once, by whoever commits the transaction (or finds it cannot be).
    outcome: OnceLock<Result<(), String>>,
    committed: Notify,
}

impl Writer {
    pub(super) fn new(connection: SqliteConnection) -> Arc<Self> {
        Arc::new(Writer {
            state: Arc::new(Mutex::new(State {
                connection,
                open: None,
            })),
            waiting: AtomicUsize::new(0),
        })
    }

    /// The connection to itself, with no transaction open on it: for statements that are not
    /// session writes (creating the tables) and for holding up writes (a `RESTART` checkpoint).
    pub(super) async fn hold(&self) -> Held {
        loop {
            let state = self.lock().await;
            if state.open.is_none() {
                return Held(state);
            }
            commit(state).await;
        }
    }

    async fn lock(&self) -> OwnedMutexGuard<State> {
        Arc::clone(&self.state).lock_owned().await
    }

    /// Runs `query` (a single statement), committed alone or with the writes queued with it,
    /// and returns how many rows it changed once it is committed.
    pub(super) async fn execute<'q>(
        self: &Arc<Self>,
        query: Query<'q, Sqlite, SqliteArguments<'q>>,
    ) -> Result<u64, sqlx::Error> {
        let mut state = {
            let _waiting = Waiting::count(&self.waiting);
            self.lock().await
        };
        if state.open.is_none() && self.waiting.load(Ordering::Relaxed) == 0 {
            return Ok(handed_over(query.execute(&mut state.connection))
                .await?
                .rows_affected());
        }
        // Marked open before `BEGIN` is sent: should this request be dropped meanwhile, the next
        // write then commits what the transaction holds rather than running in it unawares.
        let opens = state.open.is_none();
        let batch = Arc::clone(
            &state
                .open
                .get_or_insert_with(|| (Arc::new(Batch::new()), 0))
                .0,
        );
        // Held until the batch is committed, here or while waiting below.
        let _unless_dropped = CommitIfDropped::new(self, &batch);
        if opens && let Err(error) = run(&mut state.connection, "BEGIN IMMEDIATE").await {
            state.open = None;
            return Err(error);
        }
        let done = handed_over(query.execute(&mut state.connection)).await;
        // Still open: only the request holding the connection commits.
        let writes = state.open.as_mut().map_or(BATCH_AT_MOST, |(_, writes)| {
            *writes += 1;
            *writes
        });
        let last = writes >= BATCH_AT_MOST || self.waiting.load(Ordering::Relaxed) == 0;
        let rows = match done {
            Ok(done) if !last => {
                drop(state);
                return self.committed(&batch).await.map(|()| done.rows_affected());
            }
            Ok(done) => Ok(done.rows_affected()),
            // Only the failed statement is undone: commit the writes before it.
            Err(error) => Err(error),
        };
        commit(state).await;
        let committed = outcome(&batch);
        rows.and_then(|rows| committed.map(|()| rows))
    }

    /// Waits until `batch`, holding a write of this request, is committed: by a write queued
    /// behind this one, or by this request itself if it gets the connection first. The caller
    /// holds a [`CommitIfDropped`] for the batch meanwhile.
    async fn committed(&self, batch: &Arc<Batch>) -> Result<(), sqlx::Error> {
        loop {
            let notified = batch.committed.notified();
            if batch.outcome.get().is_some() {
                return outcome(batch);
            }
            // The commit first: once it is done, this request's place in the queue is given up.
            let mut notified = pin!(notified);
            let mut lock = pin!(self.lock());
            let got = poll_fn(|cx| match notified.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => lock.as_mut().poll(cx).map(Some),
            })
            .await;
            if let Some(state) = got
                && holds(&state, batch)
            {
                commit(state).await;
            }
        }
    }
}

impl Batch {
    fn new() -> Self {
        Batch {
            outcome: OnceLock::new(),
            committed: Notify::new(),
        }
    }

    fn finish(&self, outcome: Result<(), String>) {
        let _ = self.outcome.set(outcome);
        self.committed.notify_waiters();
    }
}

/// The connection held with no transaction open (see [`Writer::hold`]).
pub(super) struct Held(OwnedMutexGuard<State>);

impl std::ops::Deref for Held {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.0.connection
    }
}

impl std::ops::DerefMut for Held {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.0.connection
    }
}

/// Commits the transaction open on the connection, if any, and tells its writes the outcome;
/// then lets the connection go. In a task of its own: should the request committing be dropped
/// meanwhile (a timeout), the commit still runs to its end and its writes still hear how it
/// went.
async fn commit(mut state: OwnedMutexGuard<State>) {
    let Some((batch, _)) = state.open.take() else {
        return;
    };
    let committing = tokio::spawn(async move {
        let outcome = match run(&mut state.connection, "COMMIT").await {
            Ok(()) => Ok(()),
            Err(error) => {
                // A failed commit can leave the transaction open; SQLite may also have rolled
                // it back already, when this fails too.
                let _ = run(&mut state.connection, "ROLLBACK").await;
                Err(error.to_string())
            }
        };
        batch.finish(outcome);
    });
    // It fails only if the runtime is going away, and the connection with it.
    let _ = committing.await;
}

/// Whether the transaction open on the connection is `batch`.
fn holds(state: &State, batch: &Arc<Batch>) -> bool {
    state
        .open
        .as_ref()
        .is_some_and(|(open, _)| Arc::ptr_eq(open, batch))
}

fn outcome(batch: &Batch) -> Result<(), sqlx::Error> {
    match batch.outcome.get() {
        Some(Ok(())) => Ok(()),
        Some(Err(message)) => Err(sqlx::Error::Io(io::Error::other(format!(
            "the transaction holding this write failed to commit: {message}"
        )))),
        None => Err(sqlx::Error::Io(io::Error::other(
            "the transaction holding this write was interrupted",
        ))),
    }
}

async fn run(connection: &mut SqliteConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    handed_over(sqlx::query(sql).execute(connection)).await?;
    Ok(())
}

/// Counts a write among those waiting for the connection until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request dropped while its write is in a transaction not yet committed (a timeout, a
/// closed connection), during its statement or while it waits for the commit, commits the
/// transaction in a task of its own: were every write of the batch dropped so, no one would
/// commit it, and it would hold the file's write lock until the next write came.
struct CommitIfDropped {
    writer: Arc<Writer>,
    batch: Arc<Batch>,
}

impl CommitIfDropped {
    fn new(writer: &Arc<Writer>, batch: &Arc<Batch>) -> Self {
        CommitIfDropped {
            writer: Arc::clone(writer),
            batch: Arc::clone(batch),
        }
    }
}

impl Drop for CommitIfDropped {
    fn drop(&mut self) {
        if self.batch.outcome.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // The runtime is going: the connection closes with it, and SQLite rolls back.
            return;
        };
        let (writer, batch) = (Arc::clone(&self.writer), Arc::clone(&self.batch));
        runtime.spawn(async move {
            let state = writer.lock().await;
            if holds(&state, &batch) {
                commit(state).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Waker};

    use super::super::scratch::Scratch;
    use super::*;

    fn insert<'q>(key: &'q str, value: Option<&'q str>) -> Query<'q, Sqlite, SqliteArguments<'q>> {
        sqlx::query("INSERT INTO t (k, v) VALUES (?1, ?2)")
            .bind(key)
            .bind(value)
    }

    /// Inserts `count` rows at once (one task each); each task checks that another connection
    /// sees its row as soon as its write returns. Returns each write's result.
    async fn insert_at_once(
        scratch: &Arc<Scratch>,
        writer: &Arc<Writer>,
        count: usize,
        bad: Option<usize>,
    ) -> Vec<Result<u64, String>> {
        let tasks: Vec<_> = (0..count)
            .map(|n| {
                let (scratch, writer) = (Arc::clone(scratch), Arc::clone(writer));
                tokio::spawn(async move {
                    let key = format!("k{n}");
                    let value = (bad != Some(n)).then_some("v");
                    let written = writer.execute(insert(&key, value)).await;
                    if written.is_ok() {
                        let (seen,): (i64,) = sqlx::query_as("SELECT count(*) FROM t WHERE k = ?1")
                            .bind(&key)
                            .fetch_one(&mut scratch.connect().await)
                            .await
                            .unwrap();
                        assert_eq!(seen, 1, "a write is visible once it returns");
                    }
                    written.map_err(|error| error.to_string())
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    }

    #[tokio::test]
    async fn writes_that_queue_together_are_committed_together() {
        let apart = Scratch::new("apart").await;
        let writer = Writer::new(apart.connect().await);
        for n in 0..64 {
            writer
                .execute(insert(&format!("k{n}"), Some("v")))
                .await
                .unwrap();
        }
        let pages_apart = apart.log_pages().await;

        let together = Arc::new(Scratch::new("together").await);
        let writer = Writer::new(together.connect().await);
        let results = insert_at_once(&together, &writer, 64, None).await;
        assert!(results.iter().all(|result| result == &Ok(1)), "{results:?}");
        assert_eq!(together.rows().await, 64);
        let pages_together = together.log_pages().await;
        // Apart, each commit logs the table's page (at least); together, a few commits do.
        assert!(pages_apart >= 64, "{pages_apart}");
        assert!(
            pages_together * 4 < pages_apart,
            "{pages_together} pages logged together, {pages_apart} apart"
        );
    }

    #[tokio::test]
    async fn a_failed_write_loses_none_of_the_writes_committed_with_it() {
        let scratch = Arc::new(Scratch::new("failed").await);
        let writer = Writer::new(scratch.connect().await);
        // The 11th inserts NULL into a NOT NULL column: SQLite undoes that statement alone.
        let results = insert_at_once(&scratch, &writer, 24, Some(10)).await;
        for (n, result) in results.iter().enumerate() {
            if n == 10 {
                assert!(
                    result.as_ref().is_err_and(|e| e.contains("NOT NULL")),
                    "{result:?}"
                );
            } else {
                assert_eq!(result, &Ok(1), "write {n}");
            }
        }
        assert_eq!(scratch.rows().await, 23);
        // And the connection takes writes after it.
        assert_eq!(writer.execute(insert("after", Some("v"))).await.unwrap(), 1);
        assert_eq!(scratch.rows().await, 24);
    }

    /// A transaction left open with one write in it, as when the writes queued behind it have
    /// yet to run.
    async fn open_batch(writer: &Writer) -> Arc<Batch> {
        let mut state = writer.lock().await;
        run(&mut state.connection, "BEGIN IMMEDIATE").await.unwrap();
        insert("open", Some("v"))
            .execute(&mut state.connection)
            .await
            .unwrap();
        let batch = Arc::new(Batch::new());
        state.open = Some((Arc::clone(&batch), 1));
        batch
    }

    /// What a write in `batch` does once its statement ran and others are queued behind it.
    async fn waiting_for_commit(writer: &Arc<Writer>, batch: &Arc<Batch>) {
        let _unless_dropped = CommitIfDropped::new(writer, batch);
        let _ = writer.committed(batch).await;
    }

    /// Polls `future` once, then drops it.
    fn poll_once_and_drop(future: impl Future) {
        let mut future = pin!(future);
        let mut context = Context::from_waker(Waker::noop());
        assert!(future.as_mut().poll(&mut context).is_pending());
    }

    /// Waits (a second at most) for `batch` to be committed, and returns how it went.
    async fn finished(batch: &Batch) -> Option<&Result<(), String>> {
        for _ in 0..100 {
            if batch.outcome.get().is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        batch.outcome.get()
    }

    #[tokio::test]
    async fn writes_dropped_while_waiting_for_their_commit_still_get_it_committed() {
        let scratch = Scratch::new("dropped").await;
        let writer = Writer::new(scratch.connect().await);
        let batch = open_batch(&writer).await;
        // Another holds the connection: the write waits in line for it, and is dropped there.
        let other = writer.lock().await;
        poll_once_and_drop(waiting_for_commit(&writer, &batch));
        drop(other);
        assert_eq!(finished(&batch).await, Some(&Ok(())));
        assert_eq!(scratch.rows().await, 1);
        // The file is free for other connections.
        insert("other", Some("v"))
            .execute(&mut scratch.connect().await)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_write_dropped_while_committing_still_commits() {
        let scratch = Scratch::new("committing").await;
        let writer = Writer::new(scratch.connect().await);
        let batch = open_batch(&writer).await;
        // The connection is free: the write takes it, starts the commit, and is dropped.
        poll_once_and_drop(waiting_for_commit(&writer, &batch));
        assert_eq!(finished(&batch).await, Some(&Ok(())));
        assert_eq!(scratch.rows().await, 1);
    }

    #[tokio::test]
    async fn a_write_dropped_during_its_statement_leaves_no_transaction_open() {
        let scratch = Scratch::new("statement").await;
        let writer = Writer::new(scratch.connect().await);
        // As if another write waited: this one opens a transaction, then is dropped during
        // `BEGIN`, with no write after it to commit.
        writer.waiting.fetch_add(1, Ordering::Relaxed);
        poll_once_and_drop(writer.execute(insert("dropped", Some("v"))));
        writer.waiting.fetch_sub(1, Ordering::Relaxed);
        for _ in 0..100 {
            if writer.lock().await.open.is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(writer.lock().await.open.is_none());
        // The file is free for other connections, and the writer takes writes.
        insert("other", Some("v"))
            .execute(&mut scratch.connect().await)
            .await
            .unwrap();
        assert_eq!(writer.execute(insert("next", Some("v"))).await.unwrap(), 1);
        // The dropped write itself may have landed or not: on another core, its statement can
        // have run before it was dropped.
        assert!((2..=3).contains(&scratch.rows().await));
    }

    #[tokio::test]
    async fn holding_the_connection_commits_what_is_open_first() {
        let scratch = Scratch::new("hold").await;
        let writer = Writer::new(scratch.connect().await);
        let batch = open_batch(&writer).await;
        let mut held = writer.hold().await;
        assert_eq!(batch.outcome.get(), Some(&Ok(())));
        assert_eq!(scratch.rows().await, 1);
        // No transaction is open on it: a statement of its own commits at once.
        insert("held", Some("v")).execute(&mut *held).await.unwrap();
        assert_eq!(scratch.rows().await, 2);
    }
}
