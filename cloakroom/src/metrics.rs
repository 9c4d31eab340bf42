//! Counters and store-call timings through the [`metrics`] facade, turned on with
//! [`with_metrics`](crate::SessionLayerBuilder::with_metrics) (feature `metrics`). Whatever
//! recorder the application installs (Prometheus, StatsD, …) receives them; the names and
//! labels are listed there.

use std::time::Instant;

use metrics::{Counter, Histogram, counter, histogram};

use crate::events::SessionEvent;
use crate::id::Id;
use crate::record::Record;
use crate::store::{Condition, Error, Loaded, SessionStore, SetOutcome};

/// The layer's store calls, timed and counted. The metric handles are registered once, when
/// the layer is built, with the recorder installed then: each call then costs two clock reads
/// and a few handle calls, not a registration. Without a recorder the handles are no-ops and
/// the clock is not read at all. Sessions reach it through their context's store calls, so a
/// layer without metrics runs none of this.
#[derive(Debug)]
pub(crate) struct StoreMetrics {
    /// Whether calls are timed: a recorder was installed when the layer was built.
    timed: bool,
    loaded: Counter,
    saved: Counter,
    touched: Counter,
    conflicts: Counter,
    get: Timed,
    set: Timed,
    destroy: Timed,
    touch: Timed,
}

/// One store call's duration histogram and failure counter.
#[derive(Debug)]
struct Timed {
    seconds: Histogram,
    errors: Counter,
}

impl Timed {
    fn new(store: &'static str, call: &'static str) -> Self {
        Timed {
            seconds: histogram!("cloakroom_store_call_seconds", "store" => store, "call" => call),
            errors: counter!("cloakroom_store_errors_total", "store" => store, "call" => call),
        }
    }

    /// Records a call's duration (when it was timed), and its failure if it failed.
    fn record<T>(&self, started: Option<Instant>, result: &Result<T, Error>) {
        if let Some(started) = started {
            self.seconds.record(started.elapsed());
        }
        if result.is_err() {
            self.errors.increment(1);
        }
    }
}

impl StoreMetrics {
    /// `store` is the `store` label.
    pub(crate) fn new(store: &'static str) -> Self {
        StoreMetrics {
            timed: recorder_installed(),
            loaded: counter!("cloakroom_sessions_loaded_total", "store" => store),
            saved: counter!("cloakroom_sessions_saved_total", "store" => store),
            touched: counter!("cloakroom_sessions_touched_total", "store" => store),
            conflicts: counter!("cloakroom_save_conflicts_total", "store" => store),
            get: Timed::new(store, "get"),
            set: Timed::new(store, "set"),
            destroy: Timed::new(store, "destroy"),
            touch: Timed::new(store, "touch"),
        }
    }

    /// The start of a call to time, or none when nothing would record the time.
    fn start(&self) -> Option<Instant> {
        self.timed.then(Instant::now)
    }

    pub(crate) async fn get(
        &self,
        store: &dyn SessionStore,
        id: &Id,
    ) -> Result<Option<Loaded>, Error> {
        let started = self.start();
        let result = store.get(id).await;
        self.get.record(started, &result);
        if let Ok(Some(_)) = result {
            self.loaded.increment(1);
        }
        result
    }

    pub(crate) async fn set(
        &self,
        store: &dyn SessionStore,
        id: &Id,
        record: &Record,
        condition: Condition<'_>,
    ) -> Result<SetOutcome, Error> {
        let started = self.start();
        let result = store.set(id, record, condition).await;
        self.set.record(started, &result);
        match result {
            Ok(SetOutcome::Written(_)) => self.saved.increment(1),
            Ok(SetOutcome::Conflict) => self.conflicts.increment(1),
            _ => {}
        }
        result
    }

    pub(crate) async fn destroy(&self, store: &dyn SessionStore, id: &Id) -> Result<(), Error> {
        let started = self.start();
        let result = store.destroy(id).await;
        self.destroy.record(started, &result);
        result
    }

    pub(crate) async fn touch(
        &self,
        store: &dyn SessionStore,
        id: &Id,
        record: &Record,
    ) -> Result<(), Error> {
        let started = self.start();
        let result = store.touch(id, record).await;
        self.touch.record(started, &result);
        if result.is_ok() {
            self.touched.increment(1);
        }
        result
    }
}

/// The lifecycle counters, registered once, for the hook the layer adds with metrics on.
pub(crate) struct Lifecycle {
    created: Counter,
    regenerated: Counter,
    destroyed: Counter,
    expired: Counter,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Lifecycle {
            created: counter!("cloakroom_sessions_created_total"),
            regenerated: counter!("cloakroom_sessions_regenerated_total"),
            destroyed: counter!("cloakroom_sessions_destroyed_total"),
            expired: counter!("cloakroom_sessions_expired_total"),
        }
    }

    pub(crate) fn count(&self, event: &SessionEvent) {
        match event {
            SessionEvent::Created { .. } => self.created.increment(1),
            SessionEvent::Regenerated { .. } => self.regenerated.increment(1),
            SessionEvent::Destroyed { .. } => self.destroyed.increment(1),
            SessionEvent::Expired { .. } => self.expired.increment(1),
            // Counted per store call, with its labels, by `StoreMetrics`.
            SessionEvent::StoreError { .. } => {}
        }
    }
}

/// Whether a metrics recorder is installed, for this thread or globally. Without one the
/// metrics crate hands out its no-op recorder, a zero-sized type; the crate has no other way to
/// tell. So a zero-sized recorder counts as none: a recorder that keeps no state of its own
/// gets the counters but no store-call timings.
fn recorder_installed() -> bool {
    metrics::with_recorder(|recorder| std::mem::size_of_val(recorder) != 0)
}

/// The `store` label for a store type: its name without the module path
/// (`cloakroom::store::redis::RedisStore` → `RedisStore`), looking through `Arc`; `dyn` for a
/// store known only as a trait object.
pub(crate) fn store_label<S: ?Sized>() -> &'static str {
    let mut name = std::any::type_name::<S>();
    while let Some(inner) = name
        .strip_prefix("alloc::sync::Arc<")
        .and_then(|rest| rest.strip_suffix('>'))
    {
        name = inner;
    }
    if name.starts_with("dyn ") {
        return "dyn";
    }
    let plain = name.split('<').next().unwrap_or(name);
    plain.rsplit("::").next().unwrap_or(plain)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_recorder_is_seen_and_the_no_op_one_is_not() {
        assert!(!super::recorder_installed(), "no recorder in unit tests");
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        assert!(metrics::with_local_recorder(
            &recorder,
            super::recorder_installed
        ));
    }

    #[test]
    fn store_labels_are_short_type_names() {
        assert_eq!(super::store_label::<crate::MemoryStore>(), "MemoryStore");
        assert_eq!(
            super::store_label::<std::sync::Arc<crate::MemoryStore>>(),
            "MemoryStore"
        );
        assert_eq!(
            super::store_label::<std::sync::Arc<dyn crate::SessionStore>>(),
            "dyn"
        );
    }
}
