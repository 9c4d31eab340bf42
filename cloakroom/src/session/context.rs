//! [`Context`]: what a layer shares with every request's session.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;

use super::Locking;
use super::turns::WriteLocks;
use crate::config::Config;
use crate::error::Error;
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
