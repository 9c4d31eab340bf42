//! [`Context`]: what a layer shares with every request's session.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;

use super::Locking;
use super::turns::WriteLocks;
use crate::config::Config;
use crate::error::Error;
use crate::id::Id;
use crate::record::Record;
use crate::signing::Secrets;
use crate::store::{self, Condition, Loaded, OwnerPath, SessionStore, SetOutcome};

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

/// Every call a session makes to the layer's store goes through here, so the metrics (when on)
/// see each one, and a layer without them runs no metrics code: not a wrapper store, whose
/// every call would box one more future.
#[derive(Clone, Copy)]
pub(crate) struct StoreCalls<'a> {
    store: &'a dyn SessionStore,
    #[cfg(feature = "metrics")]
    metrics: Option<&'a crate::metrics::StoreMetrics>,
}

impl<'a> StoreCalls<'a> {
    pub(crate) async fn get(self, id: &Id) -> Result<Option<Loaded>, store::Error> {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.metrics {
            return metrics.get(self.store, id).await;
        }
        self.store.get(id).await
    }

    pub(crate) async fn set(
        self,
        id: &Id,
        record: &Record,
        condition: Condition<'_>,
    ) -> Result<SetOutcome, store::Error> {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.metrics {
            return metrics.set(self.store, id, record, condition).await;
        }
        self.store.set(id, record, condition).await
    }

    pub(crate) async fn destroy(self, id: &Id) -> Result<(), store::Error> {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.metrics {
            return metrics.destroy(self.store, id).await;
        }
        self.store.destroy(id).await
    }

    pub(crate) async fn touch(self, id: &Id, record: &Record) -> Result<(), store::Error> {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.metrics {
            return metrics.touch(self.store, id, record).await;
        }
        self.store.touch(id, record).await
    }

    pub(crate) fn default_ttl(self) -> Option<Duration> {
        self.store.default_ttl()
    }

    pub(crate) fn owner_path(self) -> &'a OwnerPath {
        self.store.owner_path()
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
