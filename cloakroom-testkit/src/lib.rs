//! The conformance suite every cloakroom [`SessionStore`] must pass, public so third-party stores
//! can prove themselves the same way the built-in ones do.
//!
//! Each case in [`cases`], [`concurrency`] and [`owners`] is an async function that takes a fresh, empty
//! store (or two handles on one) and panics on the first broken contract.
//! [`conformance_suite!`], [`concurrency_suite!`] and [`locking_suite!`] expand to one
//! `#[tokio::test]` per case. Run them against the real server, never a stand-in.
//!
//! ```no_run
//! // tests/my_store.rs. A real store would connect to its server here, with a key prefix,
//! // table or file no other test shares:
//! //     let url = cloakroom_testkit::server_url("MY_STORE_URL", "start it with ./my-server");
//! //     let prefix = cloakroom_testkit::unique_name("test:");
//! async fn fresh() -> cloakroom::MemoryStore {
//!     cloakroom::MemoryStore::new()
//! }
//!
//! async fn prune(store: &cloakroom::MemoryStore) -> usize {
//!     store.remove_expired()
//! }
//!
//! cloakroom_testkit::conformance_suite!(fresh, prune = prune);
//!
//! // Two handles on one backend, standing for two processes (for a networked store: two
//! // connections with the same key prefix, table or file).
//! async fn pair() -> (cloakroom::MemoryStore, cloakroom::MemoryStore) {
//!     let store = fresh().await;
//!     (store.clone(), store)
//! }
//!
//! // Concurrent requests on one session through a real session layer: no update is lost.
//! cloakroom_testkit::concurrency_suite!(pair);
//! // For a store that implements `LockStore`: leases, fencing, and the locked layer.
//! cloakroom_testkit::locking_suite!(pair);
//! # fn main() {}
//! ```
//!
//! The suite needs `tokio` with the `macros` and `rt-multi-thread` features in the crate that
//! invokes the macro. Some cases wait for records to expire, so the whole suite takes a few
//! seconds of wall time (the cases run in parallel).
//!
//! [`SessionStore`]: cloakroom::SessionStore

use std::time::Duration;

use cloakroom::store::{Condition, SessionStore, SetOutcome, Version};
use cloakroom::{Id, Record, SessionCookie};
use serde_json::{Map, Value, json};

pub mod app;
pub mod cases;
pub mod concurrency;
pub mod owners;

/// A server URL from the environment. A missing variable fails the test, saying how to get the
/// server: a test never skips quietly.
///
/// # Panics
/// When the variable is not set.
pub fn server_url(variable: &str, how_to_get_it: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: this test needs a real server. {how_to_get_it}")
    })
}

/// `prefix` and 12 random hex characters: a name no other test uses (a key prefix, a table or a
/// file), so tests can share one server and run in parallel.
///
/// # Panics
/// If the operating system has no randomness to give.
pub fn unique_name(prefix: &str) -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS random number generator must be available");
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{suffix}")
}

/// A record with `data` and, if given, a cookie that expires after `max_age`.
///
/// # Panics
/// When `data` is not a JSON object.
pub fn record(data: Value, max_age: Option<Duration>) -> Record {
    let Value::Object(data) = data else {
        panic!("session data must be a JSON object")
    };
    let mut cookie = SessionCookie::default();
    cookie.set_max_age(max_age);
    Record::new(cookie, data)
}

/// A record whose cookie uses every attribute express stores, with data in a deliberately
/// unsorted order, so a round trip shows whether the store keeps express's JSON exactly.
pub fn express_shaped_record() -> Record {
    let mut cookie = SessionCookie::default();
    cookie.set_max_age(Some(Duration::from_secs(3600)));
    cookie.set_domain(Some("example.com".into()));
    cookie.set_partitioned(Some(true));
    cookie.set_priority(Some(cloakroom::Priority::High));
    cookie.set_same_site(Some(cloakroom::SameSite::Lax));
    cookie.set_secure(Some(false));
    let mut data = Map::new();
    data.insert("zeta".into(), json!(1));
    data.insert("alpha".into(), json!({"nested": [1, 2, {"deep": null}]}));
    data.insert("user".into(), json!({"username": "john", "role": "admin"}));
    data.insert("float".into(), json!(0.5));
    Record::new(cookie, data)
}

/// Writes `record` as a new session (`expected: None`) or over `expected`, expecting the write
/// to happen; returns the new version.
///
/// # Panics
/// On a store error or a conflict.
pub async fn write(
    store: &dyn SessionStore,
    id: &Id,
    record: &Record,
    expected: Option<&Version>,
) -> Version {
    let condition = match expected {
        Some(version) => Condition::version(version),
        None => Condition::absent(),
    };
    match store.set(id, record, condition).await {
        Ok(SetOutcome::Written(version)) => version,
        Ok(other) => panic!("expected the write to happen, got {other:?}"),
        Err(error) => panic!("set failed: {error} ({error:?})"),
    }
}

/// Writes `record` whatever is stored under `id`: over the version stored now, or as a new
/// session. For tests that rewrite a record and do not race.
///
/// # Panics
/// On a store error or a conflict.
pub async fn put(store: &dyn SessionStore, id: &Id, record: &Record) -> Version {
    let stored = match store.get(id).await {
        Ok(stored) => stored.map(|loaded| loaded.version),
        Err(error) => panic!("get failed: {error} ({error:?})"),
    };
    write(store, id, record, stored.as_ref()).await
}

/// Expands to one `#[tokio::test]` per conformance case. `$fresh` is an async function (no
/// arguments) returning a new store that shares nothing with any other test.
///
/// With `prune = $prune`, an async function taking `&Store` that deletes expired records now and
/// returns how many (for stores that remove them in a background task), the suite also checks
/// that expired records are physically removed.
///
/// For a slow backend (a stand-in server, a remote service), `largest_record = $bytes`,
/// `sessions = $count` and `rounds = $rounds` follow as well: `large_record` stores one of about
/// `$bytes` of JSON, for a backend that cannot hold a record of the default limit
/// ([`DEFAULT_MAX_RECORD_SIZE`](cloakroom::store::DEFAULT_MAX_RECORD_SIZE));
/// `many_sessions` writes `$count` sessions instead of [`cases::SESSIONS`]; and
/// `sixty_four_tasks_at_once` makes `$rounds` rounds instead of [`cases::ROUNDS`].
#[macro_export]
macro_rules! conformance_suite {
    ($fresh:path) => {
        $crate::conformance_suite!(@cases $fresh);
        $crate::conformance_suite!(@full_size $fresh);
    };
    ($fresh:path, prune = $prune:path) => {
        $crate::conformance_suite!(@pruned $fresh, $prune);
        $crate::conformance_suite!(@full_size $fresh);
    };
    (
        $fresh:path, prune = $prune:path, largest_record = $bytes:expr,
        sessions = $count:expr, rounds = $rounds:expr
    ) => {
        $crate::conformance_suite!(@pruned $fresh, $prune);
        $crate::conformance_suite!(@sized $fresh, large_record, large_record_of, $bytes);
        $crate::conformance_suite!(@sized $fresh, many_sessions, many_sessions_of, $count);
        $crate::conformance_suite!(
            @sized $fresh, sixty_four_tasks_at_once, sixty_four_tasks_at_once_for, $rounds
        );
    };
    (@pruned $fresh:path, $prune:path) => {
        $crate::conformance_suite!(@cases $fresh);

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_expired_records_are_removed() {
            let store = ::std::sync::Arc::new($fresh().await);
            let pruned = ::std::sync::Arc::clone(&store);
            $crate::cases::expired_records_are_removed(store, || {
                let pruned = ::std::sync::Arc::clone(&pruned);
                async move { $prune(&pruned).await }
            })
            .await;
        }
    };
    (@full_size $fresh:path) => {
        $crate::conformance_suite!(@case $fresh, large_record);
        $crate::conformance_suite!(@case $fresh, many_sessions);
        $crate::conformance_suite!(@case $fresh, sixty_four_tasks_at_once);
    };
    (@cases $fresh:path) => {
        $crate::conformance_suite!(@case $fresh, set_get_destroy);
        $crate::conformance_suite!(@case $fresh, create_never_overwrites);
        $crate::conformance_suite!(@case $fresh, records_keep_express_json_exactly);
        $crate::conformance_suite!(@case $fresh, expired_records_are_never_returned);
        $crate::conformance_suite!(@case $fresh, touch_moves_expiry_only);
        $crate::conformance_suite!(@case $fresh, touch_never_brings_a_session_back);
        $crate::conformance_suite!(@case $fresh, compare_and_set);
        $crate::conformance_suite!(@case $fresh, deepest_value_round_trips);
        $crate::conformance_suite!(@case $fresh, unicode_ids_keys_and_values);
        $crate::conformance_suite!(@case $fresh, all_len_and_clear);
        $crate::conformance_suite!(@case $fresh, reported_expiry_is_accurate);
    };
    (@case $fresh:path, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let store: ::std::sync::Arc<dyn ::cloakroom::SessionStore> =
                ::std::sync::Arc::new($fresh().await);
            $crate::cases::$case(store).await;
        }
    };
    (@sized $fresh:path, $case:ident, $sized:ident, $size:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let store: ::std::sync::Arc<dyn ::cloakroom::SessionStore> =
                ::std::sync::Arc::new($fresh().await);
            $crate::cases::$sized(store, $size).await;
        }
    };
}

/// Expands to one `#[tokio::test]` per concurrency case ([`concurrency`]): many requests on one
/// session at once, through a real session layer. `$pair` is an async function (no arguments)
/// returning two handles on one new backend that shares nothing with any other test (two
/// connections to one Redis prefix, one database table, one SQLite file; for an in-process
/// store, two clones), so each handle stands for a separate process.
#[macro_export]
macro_rules! concurrency_suite {
    ($pair:path) => {
        $crate::concurrency_suite!(@two $pair, concurrent_updates_all_count);
        $crate::concurrency_suite!(@two $pair, disjoint_keys_all_merge);
        $crate::concurrency_suite!(@one $pair, stale_plain_write_is_refused);
        $crate::concurrency_suite!(@one $pair, repeated_ids_never_merge);
    };
    (@two $pair:path, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (first, second) = $pair().await;
            $crate::concurrency::$case(::std::sync::Arc::new(first), ::std::sync::Arc::new(second))
                .await;
        }
    };
    (@one $pair:path, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (first, _second) = $pair().await;
            $crate::concurrency::$case(::std::sync::Arc::new(first)).await;
        }
    };
}

/// Expands to one `#[tokio::test]` per session-lock case, for a store that implements
/// [`LockStore`](cloakroom::store::LockStore): the store's lock contract, and the layer with
/// [`with_session_lock`](cloakroom::SessionLayerBuilder::with_session_lock). `$pair` is as for
/// [`concurrency_suite!`].
#[macro_export]
macro_rules! locking_suite {
    ($pair:path) => {
        $crate::concurrency_suite!(@one $pair, locks_are_exclusive_and_leased);
        $crate::concurrency_suite!(@one $pair, writes_under_a_lost_lease_are_refused);
        $crate::concurrency_suite!(@one $pair, abandoned_locks_are_freed);
        $crate::concurrency_suite!(@two $pair, locked_plain_increments_all_count);
    };
}

/// Expands to one `#[tokio::test]` per case of [`owners`], for a store that implements
/// [`OwnerIndex`](cloakroom::store::OwnerIndex) with the default owner path
/// (`passport.user`). `$pair` is as for [`concurrency_suite!`].
#[macro_export]
macro_rules! owner_index_suite {
    ($pair:path) => {
        $crate::owner_index_suite!(@one $pair, sessions_are_found_by_owner);
        $crate::owner_index_suite!(@one $pair, ended_and_reassigned_sessions_leave);
        $crate::owner_index_suite!(@one $pair, expiry_and_touch_follow_the_session);
        $crate::owner_index_suite!(@one $pair, many_owners_at_once);
        $crate::owner_index_suite!(@one $pair, registry_signs_other_clients_out);
        $crate::owner_index_suite!(@one $pair, registry_caps_sessions_per_user);
        $crate::owner_index_suite!(@one $pair, timeouts_end_sessions);
    };
    (@one $pair:path, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (first, second) = $pair().await;
            $crate::owners::$case(::std::sync::Arc::new(first), ::std::sync::Arc::new(second))
                .await;
        }
    };
}
