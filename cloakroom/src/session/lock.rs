//! The opt-in exclusive session lock: one request at a time per session, as PHP and ASP.NET
//! sessions work, across every process sharing the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use crate::error::Error;
use crate::id::Id;
use crate::store::{Lease, LockStore};

/// How long a request waits for a session another request holds, by default.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// How long a lock lasts if its holder never releases it, by default.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// The first pause between two attempts to take a busy lock; it doubles up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(1);
const MAX_POLL: Duration = Duration::from_millis(25);

/// The options of the exclusive session lock
/// ([`with_session_lock`](crate::SessionLayerBuilder::with_session_lock)).
///
/// With the lock on, the first use of a session in a request takes the session's lock in the
/// store, and the response releases it after the session is saved. Another request for the
/// same session waits meanwhile, up to [`with_wait`](Self::with_wait), then fails with
/// [`Error::LockTimeout`](crate::Error::LockTimeout). So code written the plain way (get,
/// compute, insert) never loses an update, in one process or many.
///
/// A lock is a lease ([`with_lease`](Self::with_lease)): a holder that crashed frees the
/// session when its lease runs out, and a holder that outlived its lease cannot write any more
/// ([`Error::LeaseLost`](crate::Error::LeaseLost)). Keep the lease longer than your slowest
/// request.
///
/// ```
/// use std::time::Duration;
/// use cloakroom::{MemoryStore, SessionLayer, SessionLock};
///
/// # fn main() -> Result<(), cloakroom::ConfigError> {
/// let layer = SessionLayer::builder(MemoryStore::new())
///     .with_secret("a test secret, not for production use")
///     .with_session_lock(
///         SessionLock::new()
///             .with_wait(Duration::from_secs(5))
///             .with_lease(Duration::from_secs(30)),
///     )
///     .build()?;
/// # let _ = layer;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct SessionLock {
    wait: Duration,
    lease: Duration,
}

impl Default for SessionLock {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionLock {
    /// Waits up to 10 s for a busy session; a lease lasts 30 s.
    pub fn new() -> Self {
        SessionLock {
            wait: DEFAULT_WAIT,
            lease: DEFAULT_LEASE,
        }
    }

    /// How long a request waits for the lock before it fails with
    /// [`Error::LockTimeout`](crate::Error::LockTimeout).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// How long a lock lasts when its holder does not release it (it crashed, or hangs). At
    /// least one millisecond.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(1));
        self
    }

    /// How long a request waits for the lock.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// How long a lock lasts unless released.
    pub fn lease(&self) -> Duration {
        self.lease
    }
}

/// The lock in use: the store that keeps the locks, the options, and the queue of this
/// process's requests per session.
pub(crate) struct Locking {
    /// Called through `as_ref()`: on the `Arc`, each call would box one more future.
    store: Arc<dyn LockStore>,
    options: SessionLock,
    /// Requests of this process for one session queue here first, in order, so only the head
    /// of the queue asks the store: the store sees one poller per process, and a process's own
    /// requests are served first come, first served.
    queues: Arc<Mutex<HashMap<Id, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Locking {
    pub(crate) fn new(store: Arc<dyn LockStore>, options: SessionLock) -> Self {
        Locking {
            store,
            options,
            queues: Arc::default(),
        }
    }

    /// Takes the lock on `id`, waiting for it up to the configured bound.
    pub(crate) async fn acquire(&self, id: &Id) -> Result<Held, Error> {
        let deadline = Instant::now() + self.options.wait;
        // Declared first, so that on a timeout it is dropped last and can remove the queue.
        let mut turn = Turn {
            guard: None,
            id: id.clone(),
            queues: Arc::clone(&self.queues),
        };
        let queue = {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(queues.entry(id.clone()).or_default())
        };
        let waited = tokio::time::timeout_at(deadline, queue.lock_owned()).await;
        turn.guard = Some(waited.map_err(|_| Error::LockTimeout)?);
        let lease = Lease::new(self.options.lease);
        let mut pause = FIRST_POLL;
        loop {
            if self
                .store
                .as_ref()
                .try_lock(id, &lease)
                .await
                .map_err(Error::Lock)?
            {
                return Ok(Held {
                    id: id.clone(),
                    lease,
                    _turn: turn,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::LockTimeout);
            }
            tokio::time::sleep(jittered(pause).min(deadline - now)).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// Releases a lock this request holds; the next request of this process in the session's
    /// queue goes on.
    pub(crate) async fn release(&self, held: Held) -> Result<(), Error> {
        self.store
            .as_ref()
            .unlock(&held.id, &held.lease)
            .await
            .map_err(Error::Lock)
    }
}

/// `pause` scaled by a random factor in 50–150 %, so waiters do not poll in step.
fn jittered(pause: Duration) -> Duration {
    let random = getrandom::u32().unwrap_or(u32::MAX / 2);
    pause.mul_f64(0.5 + f64::from(random) / f64::from(u32::MAX))
}

/// A lock this request holds.
pub(crate) struct Held {
    pub(crate) id: Id,
    pub(crate) lease: Lease,
    _turn: Turn,
}

/// A request's place at the head of its process's queue for one session. Dropping it lets the
/// next one in, and removes the queue once nobody waits in it.
struct Turn {
    guard: Option<OwnedMutexGuard<()>>,
    id: Id,
    queues: Arc<Mutex<HashMap<Id, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the table holds it: nobody waits or holds the turn.
        if queues
            .get(&self.id)
            .is_some_and(|queue| Arc::strong_count(queue) == 1)
        {
            queues.remove(&self.id);
        }
    }
}
