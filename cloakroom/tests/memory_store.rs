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
cloakroom_testkit::owner_index_suite!(pair);

/// Hints of sessions that ended are dropped: by the sweep, and when an owner's hints double.
#[tokio::test]
async fn the_owner_index_does_not_grow_with_ended_sessions() {
    use cloakroom::{Id, OwnerIndex, SessionStore};
    use serde_json::json;
    use std::time::Duration;

    let store = MemoryStore::builder().with_max_entries(64).build();
    let owned = || {
        cloakroom_testkit::record(
            json!({ "passport": { "user": "alice" } }),
            Some(Duration::from_secs(3600)),
        )
    };
    // 1,000 logins of one owner, each session destroyed right after (a logout): at most the
    // live ones and those since the last check may remain as hints.
    for _ in 0..1000 {
        let id = Id::generate();
        cloakroom_testkit::write(&store, &id, &owned(), None).await;
        store.destroy(&id).await.unwrap();
    }
    let kept = Id::generate();
    cloakroom_testkit::write(&store, &kept, &owned(), None).await;
    let found = store.sessions_of("alice").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, kept);
    // Evicted sessions (the store keeps 64) leave hints too, dropped the same way.
    for _ in 0..1000 {
        cloakroom_testkit::write(&store, &Id::generate(), &owned(), None).await;
    }
    let live = store.len().await.unwrap();
    let found = store.sessions_of("alice").await.unwrap();
    assert_eq!(
        found.len(),
        live,
        "every live session is found ({} of {live})",
        found.len()
    );
    assert!(live <= 64);
}
