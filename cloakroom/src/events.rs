//! Lifecycle hooks: what happens to sessions, told to the application as it happens, for an
//! audit log, counters, or its own bookkeeping.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;

use crate::error::Error;
use crate::id::Id;

/// Something that happened to a session. The ids are the sessions' own, for an application
/// that keeps records by session; their `Debug` output is redacted, so logging an event as
/// `{event:?}` never writes an id.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A new session was saved for the first time.
    Created {
        /// The new session.
        id: Id,
    },
    /// [`regenerate`](crate::Session::regenerate) replaced a session: the new one is saved and
    /// the old one destroyed.
    Regenerated {
        /// The session that was replaced (now destroyed).
        old: Id,
        /// The session that replaced it.
        new: Id,
    },
    /// A session was destroyed by its request ([`destroy`](crate::Session::destroy), or
    /// [`unset`](crate::Session::unset) with [`Unset::Destroy`](crate::Unset::Destroy)).
    Destroyed {
        /// The destroyed session.
        id: Id,
    },
    /// A request brought a validly signed id whose session has ended: expired in the store,
    /// ended by an idle or absolute timeout (then destroyed), or destroyed elsewhere (another
    /// process, a revocation).
    Expired {
        /// The ended session.
        id: Id,
    },
    /// A store call failed. The request answered with the failure response, or, for a failed
    /// touch or clean-up, went on (see [`Error`]).
    StoreError {
        /// What failed; its `Display` never includes ids or session data.
        error: Error,
    },
}

type SyncHook = dyn Fn(&SessionEvent) + Send + Sync;
type AsyncHook = dyn Fn(SessionEvent) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// The hooks a layer calls, in the order they were added.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    hooks: Vec<Hook>,
}

#[derive(Clone)]
enum Hook {
    Sync(Arc<SyncHook>),
    Async(Arc<AsyncHook>),
}

impl Hooks {
    pub(crate) fn add_sync(&mut self, hook: impl Fn(&SessionEvent) + Send + Sync + 'static) {
        self.hooks.push(Hook::Sync(Arc::new(hook)));
    }

    pub(crate) fn add_async<F, Fut>(&mut self, hook: F)
    where
        F: Fn(SessionEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks
            .push(Hook::Async(Arc::new(move |event| Box::pin(hook(event)))));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Tells every hook. A sync hook runs here, and a panic in it is caught and logged; an
    /// async hook runs in a task of its own (so it never holds up the response), whose panic
    /// is logged too. Without a tokio runtime, async hooks are skipped.
    pub(crate) fn emit(&self, event: SessionEvent) {
        for hook in &self.hooks {
            match hook {
                Hook::Sync(hook) => {
                    if catch_unwind(AssertUnwindSafe(|| hook(&event))).is_err() {
                        tracing::error!(event = kind(&event), "a session hook panicked");
                    }
                }
                Hook::Async(hook) => {
                    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                        continue;
                    };
                    let kind = kind(&event);
                    // Calling the hook may panic too, before there is a future to run.
                    let Ok(future) = catch_unwind(AssertUnwindSafe(|| hook(event.clone()))) else {
                        tracing::error!(event = kind, "a session hook panicked");
                        continue;
                    };
                    let task = runtime.spawn(future);
                    runtime.spawn(async move {
                        if task.await.is_err_and(|error| error.is_panic()) {
                            tracing::error!(event = kind, "a session hook panicked");
                        }
                    });
                }
            }
        }
    }

    /// Tells every hook of a store failure.
    pub(crate) fn store_error(&self, error: &Error) {
        if !self.is_empty() {
            self.emit(SessionEvent::StoreError {
                error: error.clone(),
            });
        }
    }
}

/// The event's name, for logs.
fn kind(event: &SessionEvent) -> &'static str {
    match event {
        SessionEvent::Created { .. } => "created",
        SessionEvent::Regenerated { .. } => "regenerated",
        SessionEvent::Destroyed { .. } => "destroyed",
        SessionEvent::Expired { .. } => "expired",
        SessionEvent::StoreError { .. } => "store_error",
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("count", &self.hooks.len())
            .finish()
    }
}
