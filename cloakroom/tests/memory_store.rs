//! MemoryStore passes the store conformance suite, and the concurrency and session-lock cases
//! (two layers sharing one store stand for two processes).

use cloakroom::MemoryStore;

async fn fresh() -> MemoryStore {
    MemoryStore::builder().with_max_entries(20_000).build()
}

async fn prune(store: &MemoryStore) -> usize {
    store.remove_expired()
}

cloakroom_testkit::conformance_suite!(fresh, prune = prune);

async fn pair() -> (MemoryStore, MemoryStore) {
    let store = fresh().await;
    (store.clone(), store)
}

cloakroom_testkit::concurrency_suite!(pair);
cloakroom_testkit::locking_suite!(pair);
