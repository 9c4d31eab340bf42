//! Calls that wait for a slot (a pooled connection, a place among the calls in flight) are
//! answered together, by one statement or request.
//!
//! Under load, calls wait for a slot. A call of a batched kind (a read, a compare-and-set) puts
//! what it asks in a queue and waits for a slot; whichever call gets one first takes every
//! request of its kind queued (up to [`Kind::AT_MOST`]) and runs them all at once, then hands
//! each waiting call its answer. A call whose answer another call brought stops waiting for a
//! slot. With slots to spare, a call finds one at once and runs alone, as it would without
//! batching, so batching adds no wait.
//!
//! A database spends most of a primary-key read or update on the statement around it (parse or
//! bind, snapshot, executor start, the commit, the reply), and the client most of its on the
//! round trip (for DynamoDB, on signing and sending one HTTP request): one statement or request
//! for many sessions costs both little more than one for a single session.
//!
//! A batch runs in the slot of the call that took it. If that call is dropped (its timeout ran
//! out) or the batch fails, the calls it took hear nothing. A read then runs alone, so its
//! outcome and error are its own. A write fails ([`Lost::Abandoned`]): the batch may have been
//! applied all the same (a dropped query can still run on the server, and a connection can
//! break after the commit), and run again it would find its own write and call it a conflict,
//! which a caller would retry (applying its change twice).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;

use tokio::sync::oneshot;

/// Where calls get their turn to run: a pool of connections, or a limit on calls in flight.
pub(crate) trait Slots: Send + Sync {
    /// One turn, held while a call or batch runs.
    type Slot: Send;
    /// How calls fail.
    type Error: From<Lost> + Send;

    /// Waits for a slot.
    fn acquire(&self) -> impl Future<Output = Result<Self::Slot, Self::Error>> + Send;
}

/// A kind of call that can be batched.
pub(crate) trait Kind: Send + Sync {
    /// Where it runs.
    type Slots: Slots;
    /// What one call asks.
    type Request: Send;
    /// What it gets.
    type Answer: Send;
    /// Whether a request whose batch was abandoned or failed may run again, alone: true for a
    /// read; false for a write, which the batch may have made.
    const REPEATABLE: bool;
    /// The most requests one batch runs.
    const AT_MOST: usize;

    /// Runs `requests` at once in `slot`: one answer each, in order.
    fn run(
        &self,
        slot: &mut <Self::Slots as Slots>::Slot,
        requests: &[Self::Request],
    ) -> impl Future<Output = Result<Vec<Self::Answer>, Error<Self>>> + Send;
}

/// How a call of kind `K` fails.
type Error<K> = <<K as Kind>::Slots as Slots>::Error;

/// Why a call got no answer of its own.
#[derive(Debug)]
pub(crate) enum Lost {
    /// A write whose batch was abandoned or failed: it may have been made, as a write cut
    /// short may (transient, as a broken connection is).
    Abandoned,
    /// A batch gave fewer answers than it had requests: never, by construction.
    Unanswered,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lost::Abandoned => {
                "the batch that carried this write was abandoned or failed; it may have been applied"
            }
            Lost::Unanswered => "a batch gave no answer for a request",
        })
    }
}

impl std::error::Error for Lost {}

/// The calls of one kind waiting for a slot.
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
enum First<A, S> {
    Answer(A),
    /// The call that took this one's request was dropped or its batch failed.
    Orphaned,
    Slot(S),
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
        slots: &K::Slots,
        request: impl Fn() -> K::Request,
    ) -> Result<K::Answer, Error<K>> {
        let (reply, mut answer) = oneshot::channel();
        self.lock().push(Waiting {
            request: request(),
            reply,
        });
        let mut acquire = pin!(slots.acquire());
        let first = poll_fn(|cx| {
            if let Poll::Ready(answer) = Pin::new(&mut answer).poll(cx) {
                return Poll::Ready(Ok(answer.map_or(First::Orphaned, First::Answer)));
            }
            acquire.as_mut().poll(cx).map_ok(First::Slot)
        })
        .await?;
        let mut slot = match first {
            First::Answer(answer) => return Ok(answer),
            First::Orphaned if !K::REPEATABLE => return Err(Lost::Abandoned.into()),
            First::Orphaned => acquire.await?,
            First::Slot(mut slot) => loop {
                match answer.try_recv() {
                    Ok(answer) => return Ok(answer),
                    Err(oneshot::error::TryRecvError::Closed) if !K::REPEATABLE => {
                        return Err(Lost::Abandoned.into());
                    }
                    Err(oneshot::error::TryRecvError::Closed) => break slot,
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
                let Some(batch) = self.take() else {
                    // Another call took this one's request and is running it.
                    drop(slot);
                    match answer.await {
                        Ok(answer) => return Ok(answer),
                        Err(_) if !K::REPEATABLE => return Err(Lost::Abandoned.into()),
                        Err(_) => break slots.acquire().await?,
                    }
                };
                if run(&self.kind, &mut slot, batch).await.is_err() {
                    // The batch's calls, this one too if it was there, hear nothing; if they
                    // run alone, in another slot (another connection, in case this one broke).
                    drop(slot);
                    slot = slots.acquire().await?;
                }
            },
        };
        let mut answers = self.kind.run(&mut slot, &[request()]).await?;
        answers.pop().ok_or_else(|| Lost::Unanswered.into())
    }

    /// The next batch: up to [`Kind::AT_MOST`] calls from the front of the queue, leaving out
    /// those whose callers are gone; `None` when none are left.
    fn take(&self) -> Option<Vec<Waiting<K>>> {
        let mut queue = self.lock();
        while !queue.is_empty() {
            let end = queue.len().min(K::AT_MOST);
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
    slot: &mut <K::Slots as Slots>::Slot,
    batch: Vec<Waiting<K>>,
) -> Result<(), Error<K>> {
    let (requests, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|waiting| (waiting.request, waiting.reply))
        .unzip();
    let answers = kind.run(slot, &requests).await?;
    if answers.len() != replies.len() {
        return Err(Lost::Unanswered.into());
    }
    for (reply, answer) in replies.into_iter().zip(answers) {
        // A caller gone since the batch began is no loss.
        let _ = reply.send(answer);
    }
    Ok(())
}
