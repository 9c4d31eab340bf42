//! MemoryStore passes the store conformance suite.

use cloakroom::MemoryStore;

async fn fresh() -> MemoryStore {
    MemoryStore::builder().with_max_entries(20_000).build()
}

async fn prune(store: &MemoryStore) -> usize {
    store.remove_expired()
}

cloakroom_testkit::conformance_suite!(fresh, prune = prune);
