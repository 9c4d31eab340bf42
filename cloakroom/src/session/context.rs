//! [`Context`]: what a layer shares with every request's session.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;
use foldhash::fast::RandomState;
use http::Response;

use super::Locking;
use crate::config::Config;
use crate::error::Error;
use crate::id::Id;
use crate::signing::Secrets;
use crate::store::SessionStore;

/// Builds the response sent instead of the handler's when the store fails.
pub(crate) type FailureHandler = Arc<dyn Fn(&Error) -> Response<Bytes> + Send + Sync>;

/// Everything a layer shares with its services and sessions.
pub(crate) struct Context {
    pub(crate) config: Config,
    pub(crate) secrets: Secrets,
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) on_failure: FailureHandler,
    pub(crate) write_locks: WriteLocks,
    /// The exclusive session lock, when on.
    pub(crate) locking: Option<Arc<Locking>>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .field("store", &self.store)
            .field("locking", &self.locking.is_some())
            .finish_non_exhaustive()
    }
}

/// Serialises saves of one session within this process. Requests racing on a session then
/// resolve in turn: each may lose one compare-and-set (it loaded an older version), reloads and
/// merges while no one else here can write, and succeeds. Only writers in other processes can
/// make it retry more, and it never holds its turn while it pauses between retries. Striped,
/// so the table stays small: two sessions sharing a stripe merely save one after the other.
pub(crate) struct WriteLocks {
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: RandomState,
}

impl WriteLocks {
    const STRIPES: usize = 1024;

    pub(crate) fn new() -> Self {
        WriteLocks {
            stripes: (0..Self::STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: RandomState::default(),
        }
    }

    pub(crate) fn for_id(&self, id: &Id) -> &tokio::sync::Mutex<()> {
        &self.stripes[self.hasher.hash_one(id.as_str()) as usize % Self::STRIPES]
    }
}
