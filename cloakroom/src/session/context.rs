//! [`Context`]: what a layer shares with every request's session.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;

use super::Locking;
use super::store_calls::StoreCalls;
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
    /// Called through [`store`](Self::store).
    pub(crate) store: Arc<dyn SessionStore>,
    /// With [`with_metrics`](crate::SessionLayerBuilder::with_metrics): the store calls' counters
    /// and timings.
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<crate::metrics::StoreMetrics>,
    pub(crate) on_failure: FailureHandler,
    pub(crate) write_locks: WriteLocks,
    /// The exclusive session lock, when on.
    pub(crate) locking: Option<Arc<Locking>>,
}

impl Context {
    /// The store, for one call.
    pub(crate) fn store(&self) -> StoreCalls<'_> {
        StoreCalls {
            // As `dyn`: a call on the `Arc` would go through `impl SessionStore for Arc<S>`,
            // which boxes one more future per call.
            store: &*self.store,
            #[cfg(feature = "metrics")]
            metrics: self.metrics.as_ref(),
        }
    }
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
