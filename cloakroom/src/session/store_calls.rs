//! [`StoreCalls`]: the one way a session calls the layer's store.

use std::time::Duration;

use crate::id::Id;
use crate::record::Record;
use crate::store::{self, Condition, Loaded, OwnerPath, SessionStore, SetOutcome};

/// Every call a session makes to the layer's store goes through here, so the metrics (when on)
/// see each one, and a layer without them runs no metrics code: not a wrapper store, whose
/// every call would box one more future.
#[derive(Clone, Copy)]
pub(crate) struct StoreCalls<'a> {
    pub(super) store: &'a dyn SessionStore,
    #[cfg(feature = "metrics")]
    pub(super) metrics: Option<&'a crate::metrics::StoreMetrics>,
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
