//! Calls that wait for a connection are answered together, by one statement.
//!
//! Under load, requests wait for a pooled connection. A call of a batched kind (a read, a
//! compare-and-set) puts what it asks in a queue and waits for a connection; whichever call
//! gets one first takes every request of its kind queued (up to [`BATCH_AT_MOST`]) and runs
//! them all as one statement, then hands each waiting call its answer. A call whose answer
//! another call brought stops waiting for a connection. With connections to spare, a call finds
//! one at once and runs alone, with the same statement as before, so batching adds no wait.
//!
//! A database spends most of a primary-key read or update on the statement around it (parse or
//! bind, snapshot, executor start, the commit, the reply), and the driver most of its on the
//! round trip: one statement for many sessions costs both little more than one for a single
//! session.
//!
//! A batch runs on the connection of the call that took it. If that call is dropped (its
//! timeout ran out) or the statement fails, the calls it took hear nothing. A read then runs
//! alone, so its outcome and error are its own. A write fails ([`abandoned`]): the statement
//! may have been applied all the same (a dropped query can still run on the server, and a
//! connection can break after the commit), and run again it would find its own write and call
//! it a conflict, which a caller would retry (applying its change twice).

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};
use tokio::sync::oneshot;

/// The most requests one statement runs.
const BATCH_AT_MOST: usize = 128;

/// A kind of call that can be batched.
pub(crate) trait Kind: Send + Sync {
    /// The database it runs on.
    type Database: Database;
    /// What one call asks.
    type Request: Send;
    /// What it gets.
    type Answer: Send;
    /// Whether a request whose batch was abandoned or failed may run again, alone: true for a
    /// read; false for a write, which the batch may have made.
    const REPEATABLE: bool;

    /// Runs `requests` as one statement on `connection`: one answer each, in order.
    fn run(
        &self,
        connection: &mut <Self::Database as Database>::Connection,
        requests: &[Self::Request],
    ) -> impl Future<Output = Result<Vec<Self::Answer>, sqlx::Error>> + Send;
}

/// The calls of one kind waiting for a connection.
pub(crate) struct Batches<K: Kind> {
    kind: K,
    queue: Mutex<Vec<Waiting<K>>>,
}

/// A call in the queue.
struct Waiting<K: Kind> {
    request: K::Request,
    reply: oneshot::Sender<K::Answer>,
}

/// What a call gets first.
enum First<A, DB: Database> {
    Answer(A),
    /// The call that took this one's request was dropped or its statement failed.
    Orphaned,
    Connection(PoolConnection<DB>),
}

impl<K: Kind> Batches<K> {
    pub(crate) fn new(kind: K) -> Self {
        Batches {
            kind,
            queue: Mutex::new(Vec::new()),
        }
    }

    /// Runs the request `request()` makes, together with others waiting at the same time where
    /// there are any. `request` is called again if this call has to run alone after all.
    pub(crate) async fn call(
        &self,
        pool: &Pool<K::Database>,
        request: impl Fn() -> K::Request,
    ) -> Result<K::Answer, sqlx::Error> {
        let (reply, mut answer) = oneshot::channel();
        self.lock().push(Waiting {
            request: request(),
            reply,
        });
        let mut acquire = pin!(pool.acquire());
        let first = poll_fn(|cx| {
            if let Poll::Ready(answer) = Pin::new(&mut answer).poll(cx) {
                return Poll::Ready(Ok(answer.map_or(First::Orphaned, First::Answer)));
            }
            acquire.as_mut().poll(cx).map_ok(First::Connection)
        })
        .await?;
        let mut connection = match first {
            First::Answer(answer) => return Ok(answer),
            First::Orphaned if !K::REPEATABLE => return Err(abandoned()),
            First::Orphaned => acquire.await?,
            First::Connection(mut connection) => loop {
                match answer.try_recv() {
                    Ok(answer) => return Ok(answer),
                    Err(oneshot::error::TryRecvError::Closed) if !K::REPEATABLE => {
                        return Err(abandoned());
                    }
                    Err(oneshot::error::TryRecvError::Closed) => break connection,
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
                let Some(batch) = self.take() else {
                    // Another call took this one's request and is running it.
                    drop(connection);
                    match answer.await {
                        Ok(answer) => return Ok(answer),
                        Err(_) if !K::REPEATABLE => return Err(abandoned()),
                        Err(_) => break pool.acquire().await?,
                    }
                };
                if run(&self.kind, &mut connection, batch).await.is_err() {
                    // The batch's calls, this one too if it was there, hear nothing; if they
                    // run alone, on another connection, in case this one broke.
                    drop(connection);
                    connection = pool.acquire().await?;
                }
            },
        };
        let mut answers = self.kind.run(&mut connection, &[request()]).await?;
        answers.pop().ok_or_else(missing_answer)
    }

    /// The next batch: up to [`BATCH_AT_MOST`] calls from the front of the queue, leaving out
    /// those whose callers are gone; `None` when none are left.
    fn take(&self) -> Option<Vec<Waiting<K>>> {
        let mut queue = self.lock();
        while !queue.is_empty() {
            let end = queue.len().min(BATCH_AT_MOST);
            let batch: Vec<Waiting<K>> = queue
                .drain(..end)
                .filter(|waiting| !waiting.reply.is_closed())
                .collect();
            if !batch.is_empty() {
                return Some(batch);
            }
        }
        None
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Waiting<K>>> {
        // Every change is one push or one drain, so a panic cannot leave the queue half-changed.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs a batch and hands each call its answer.
async fn run<K: Kind>(
    kind: &K,
    connection: &mut <K::Database as Database>::Connection,
    batch: Vec<Waiting<K>>,
) -> Result<(), sqlx::Error> {
    let (requests, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|waiting| (waiting.request, waiting.reply))
        .unzip();
    let answers = kind.run(connection, &requests).await?;
    if answers.len() != replies.len() {
        return Err(missing_answer());
    }
    for (reply, answer) in replies.into_iter().zip(answers) {
        // A caller gone since the statement began is no loss.
        let _ = reply.send(answer);
    }
    Ok(())
}

/// A write whose batch was abandoned or failed: it may have been made, as a write cut short
/// may (transient, as a broken connection is).
fn abandoned() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the statement that carried this write was abandoned or failed; it may have been applied",
    ))
}

/// A batch whose statement gave fewer answers than it had requests: never, by construction.
fn missing_answer() -> sqlx::Error {
    sqlx::Error::Protocol("a batched statement gave no answer for a request".to_owned())
}

/// A read of one session, as the stores batch it: its id, now in seconds (its row must be live
/// then), and the size limit.
pub(crate) struct Read {
    pub(crate) sid: String,
    pub(crate) now: i64,
    pub(crate) max_size: i64,
}

/// A session's row as `get` reads it: `sess` (NULL when over the size limit), its length in
/// bytes, and the expiry in milliseconds; `None` when there is no live row.
pub(crate) type Row = Option<(Option<String>, i64, i64)>;

impl Read {
    /// `get`'s parameters for a batch of reads: now, the latest of theirs, which is no earlier
    /// than any of them began (every row must be live then), and the size limit.
    pub(crate) fn parameters(reads: &[Read]) -> (i64, i64) {
        let now = reads.iter().map(|read| read.now).max().unwrap_or(0);
        let max_size = reads.iter().map(|read| read.max_size).max().unwrap_or(0);
        (now, max_size)
    }

    /// Each read's row among `rows` (`sid`, then the row), found by id: an id read twice gets
    /// its row twice.
    pub(crate) fn answers(
        reads: &[Read],
        rows: impl IntoIterator<Item = (String, (Option<String>, i64, i64))>,
    ) -> Vec<Row> {
        let rows: HashMap<String, (Option<String>, i64, i64)> = rows.into_iter().collect();
        reads
            .iter()
            .map(|read| rows.get(&read.sid).cloned())
            .collect()
    }
}
