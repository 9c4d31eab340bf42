//! How the writes of one session within this process take turns, and share them.
//!
//! Requests racing on a session save in turn, so each loses at most one compare-and-set to the
//! others of this process, and the turn remembers the last record written: a request that loaded
//! an older version carries its changes onto it and writes once. Requests that end while
//! another holds the turn do not wait for a turn each: they leave their changes in the queue, and
//! one task per stripe takes the turn and writes them all in one store call (group commit). A
//! session used by many requests at once then costs about one store write per turn, not one per
//! request in a row, so a queue of requests never builds up behind one session. A write that
//! finds its session's turn free and nothing queued (the common case) is simply made, in its
//! own request's task.
//!
//! Striped, so the table stays small: two sessions sharing a stripe merely take turns together.

use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use foldhash::fast::RandomState;
use tokio::sync::oneshot;

use super::changes::ChangeSet;
use super::store_calls::StoreCalls;
use crate::error::Error;
use crate::id::Id;
use crate::record::Record;
use crate::store::{Condition, SetOutcome, Version};
use crate::time::Timestamp;

/// How many store writes a turn holder makes for one batch before it hands the rest back.
const BATCH_ATTEMPTS: usize = 3;

/// The turns of every session, by stripe.
pub(crate) struct WriteLocks {
    stripes: Box<[Stripe]>,
    hasher: RandomState,
}

/// One stripe: the turn (holding the last record written) and the queue of requests waiting to
/// have their changes written in someone's turn.
pub(crate) struct Stripe {
    pub(crate) turn: tokio::sync::Mutex<Option<LastWrite>>,
    queue: Mutex<Queue>,
}

/// The writes waiting for a turn, and whether a task runs them.
#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// A [`run_queue`] task is on its way: started by the write that found none, it ends when it
    /// finds the queue empty. One at a time, so that a burst of writes costs one hand-off of the
    /// turn per batch, not one per write (each hand-off waits for the next task to be polled,
    /// which on a busy runtime is a trip through the whole run queue).
    runner: bool,
}

/// The last record a request of this process wrote for a session of this stripe.
pub(crate) struct LastWrite {
    pub(crate) id: Id,
    pub(crate) version: Version,
    pub(crate) record: Record,
    pub(crate) expires_at: Option<Timestamp>,
}

/// A request's end-of-request write, left for the turn holder.
pub(crate) struct Waiting {
    pub(crate) id: Id,
    /// What the handler changed since the request loaded.
    pub(crate) changes: ChangeSet,
    /// The request's view of the session: its data and its cookie.
    pub(crate) record: Record,
    /// The version the request loaded.
    pub(crate) loaded: Version,
    pub(crate) reply: oneshot::Sender<Verdict>,
}

/// What became of a waiting write.
pub(crate) enum Verdict {
    /// Written in a batch, at this version; the store expires the record then.
    Written(Version, Option<Timestamp>),
    /// The session was destroyed or expired meanwhile: nothing to write.
    Vanished,
    /// The store failed.
    Failed(Error),
    /// Not written: the changes do not carry over onto what the batch wrote (or the batch
    /// gave up); the request writes them itself, with a reload.
    Alone(ChangeSet),
}

impl WriteLocks {
    const STRIPES: usize = 1024;

    pub(crate) fn new() -> Self {
        WriteLocks {
            stripes: (0..Self::STRIPES)
                .map(|_| Stripe {
                    turn: tokio::sync::Mutex::new(None),
                    queue: Mutex::new(Queue::default()),
                })
                .collect(),
            hasher: RandomState::default(),
        }
    }

    pub(crate) fn for_id(&self, id: &Id) -> &Stripe {
        &self.stripes[self.hasher.hash_one(id.as_str()) as usize % Self::STRIPES]
    }
}

impl Stripe {
    /// Leaves a write in the queue. True when no task runs the queue: the caller must start
    /// one ([`run_queue`]).
    #[must_use = "without a runner, the write waits forever"]
    pub(crate) fn enqueue(&self, waiting: Waiting) -> bool {
        let mut queue = self.queue();
        queue.waiting.push(waiting);
        !std::mem::replace(&mut queue.runner, true)
    }

    /// Takes the queued writes of `id` out of the queue, oldest first.
    fn take(&self, id: &Id) -> Vec<Waiting> {
        let mut queue = self.queue();
        queue
            .waiting
            .extract_if(.., |waiting| waiting.id == *id)
            .collect()
    }

    /// Whether a write of `id` waits in the queue.
    fn has_queued(&self, id: &Id) -> bool {
        self.queue().waiting.iter().any(|waiting| waiting.id == *id)
    }

    /// The session of the oldest queued write; when there is none, `None`, and the runner
    /// stops (in the same critical section, so a write queued just after starts another).
    fn next_or_stop(&self) -> Option<Id> {
        let mut queue = self.queue();
        let next = queue.waiting.first().map(|waiting| waiting.id.clone());
        if next.is_none() {
            queue.runner = false;
        }
        next
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes `waiting` at once, in the calling task, when nothing stands in its way: the turn of
/// its stripe is free and no write of its session waits for one. Then the write is made alone,
/// as a batch of one, and the caller's own task carries it: no other request's answer depends
/// on it, so a request that goes away abandons only its own write. Otherwise gives `waiting`
/// back, for the queue.
pub(crate) async fn write_if_free(
    write_locks: &WriteLocks,
    store: StoreCalls<'_>,
    waiting: Waiting,
) -> Result<(), Waiting> {
    let stripe = write_locks.for_id(&waiting.id);
    let Ok(mut last) = stripe.turn.try_lock() else {
        return Err(waiting);
    };
    if stripe.has_queued(&waiting.id) {
        return Err(waiting);
    }
    let id = waiting.id.clone();
    // Boxed: inline, the batch's state would make the commit future of every request that
    // writes too large for the allocator's fast path (see `Session::commit_with_store`).
    Box::pin(write_batch(
        stripe,
        &mut last,
        &id,
        store,
        vec![waiting],
        Gather::No,
    ))
    .await;
    Ok(())
}

/// Runs the queue of `id`'s stripe: takes the turn and writes the queued writes of one session
/// in a batch, again and again until the queue is empty. The turn is taken anew for each batch,
/// so writes made alone that wait for it get their turns in between. Run as a task of its own,
/// so a request that goes away never leaves the requests of a batch without an answer.
pub(crate) async fn run_queue(write_locks: &WriteLocks, store: StoreCalls<'_>, id: &Id) {
    let stripe = write_locks.for_id(id);
    let _unwinding = StopOnPanic(stripe);
    loop {
        let mut last = stripe.turn.lock().await;
        let Some(next) = stripe.next_or_stop() else {
            return;
        };
        let pending = stripe.take(&next);
        write_batch(stripe, &mut last, &next, store, pending, Gather::Yes).await;
    }
}

/// Marks the stripe's queue as without a runner if the runner panics, so that the next write
/// queued starts another rather than wait for an answer that never comes.
struct StopOnPanic<'a>(&'a Stripe);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.queue().runner = false;
        }
    }
}

/// Whether a batch takes in the writes of its session that are queued while it writes.
#[derive(Clone, Copy, PartialEq)]
enum Gather {
    Yes,
    /// A write made in its request's own task (see [`write_if_free`]): it answers no one else.
    No,
}

/// Writes `pending`, writes of `id`, in the turn `last` belongs to: merged onto the newest record
/// known, one compare-and-set for all.
async fn write_batch(
    stripe: &Stripe,
    last: &mut Option<LastWrite>,
    id: &Id,
    store: StoreCalls<'_>,
    mut pending: Vec<Waiting>,
    gather: Gather,
) {
    // What the store answered a compare-and-set that lost to another process: the next attempt
    // merges onto it.
    let mut newer: Option<(Record, Version)> = None;
    let mut attempts = 0;
    while !pending.is_empty() && attempts < BATCH_ATTEMPTS {
        attempts += 1;
        // The newest record known: the store's after a lost attempt, else this process's last
        // write, else the first request's own view is written as it is (that is what it would
        // do alone). A lone write whose request loaded that last write has nothing to merge
        // either: its view is that record with its changes.
        let base = newer.clone().or_else(|| {
            last.as_ref()
                .filter(|last| last.id == *id)
                .filter(|last| !(pending.len() == 1 && pending[0].loaded == last.version))
                .map(|last| (last.record.clone(), last.version.clone()))
        });
        // Whether `record` was taken from the lone request's view (given back if the write
        // loses: a merge onto the newer record needs that view).
        let (record, expected, mut included, from_view) = match base {
            None => {
                let mut first = pending.remove(0);
                let record = std::mem::take(&mut first.record);
                (record, first.loaded.clone(), vec![first], true)
            }
            Some((record, version)) => {
                let (record, included, apart) = merge(record, std::mem::take(&mut pending));
                for waiting in apart {
                    let _ = waiting.reply.send(Verdict::Alone(waiting.changes));
                }
                (record, version, included, false)
            }
        };
        match store.set(id, &record, Condition::version(&expected)).await {
            Ok(SetOutcome::Written(version)) => {
                let expires_at = store_expiry(store, &record, Timestamp::now());
                for waiting in included {
                    let _ = waiting
                        .reply
                        .send(Verdict::Written(version.clone(), expires_at));
                }
                *last = Some(LastWrite {
                    id: id.clone(),
                    version,
                    record,
                    expires_at,
                });
                newer = None;
            }
            Ok(SetOutcome::Conflict) => {
                // Another process wrote: start again from what the store holds.
                if from_view {
                    included[0].record = record;
                }
                pending.extend(included);
                match store.get(id).await {
                    Ok(Some(stored)) => newer = Some((stored.record, stored.version)),
                    Ok(None) => {
                        reply_all(pending, || Verdict::Vanished);
                        return;
                    }
                    Err(error) => {
                        let error = Error::Load(error);
                        reply_all(pending, || Verdict::Failed(error.clone()));
                        return;
                    }
                }
            }
            // Batches are never leased (locked sessions are written alone).
            Ok(SetOutcome::LeaseLost) => {
                reply_all(included, || Verdict::Failed(Error::LeaseLost));
            }
            Err(error) => {
                let error = Error::Save(error);
                reply_all(included, || Verdict::Failed(error.clone()));
            }
        }
        // Writes that arrived meanwhile join the next attempt.
        if gather == Gather::Yes {
            pending.extend(stripe.take(id));
        }
    }
    for waiting in pending {
        let _ = waiting.reply.send(Verdict::Alone(waiting.changes));
    }
}

/// Carries each waiting write's changes onto `record`, in order; a write whose changes do not
/// carry over (a key it read and wrote was changed by another) is set apart.
fn merge(mut record: Record, pending: Vec<Waiting>) -> (Record, Vec<Waiting>, Vec<Waiting>) {
    let mut included = Vec::with_capacity(pending.len());
    let mut apart = Vec::new();
    for waiting in pending {
        let mut data = record.data().clone();
        match waiting.changes.merge_onto(waiting.record.data(), &mut data) {
            Ok(()) => {
                record.set_data(data);
                // The latest request's cookie settings (its refreshed expiry).
                *record.cookie_mut() = waiting.record.cookie().clone();
                included.push(waiting);
            }
            Err(_) => apart.push(waiting),
        }
    }
    (record, included, apart)
}

/// When `store` expires `record` if written or touched `now`: at the cookie's expiry, or after
/// the store's default lifetime for a browser-session cookie.
pub(crate) fn store_expiry(
    store: StoreCalls<'_>,
    record: &Record,
    now: Timestamp,
) -> Option<Timestamp> {
    match record.cookie().expires() {
        Some(expires) => Some(expires),
        None => Some(record.cookie().store_expiry(now, store.default_ttl()?)),
    }
}

fn reply_all(pending: Vec<Waiting>, verdict: impl Fn() -> Verdict) {
    for waiting in pending {
        let _ = waiting.reply.send(verdict());
    }
}
