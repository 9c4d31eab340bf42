//! The concurrency cases: many requests on one session at once, through a real
//! [`SessionLayer`](cloakroom::SessionLayer) (see [`App`]), on one store handle or two handles
//! on the same backend (two "processes", each with its own layer). Every case panics on the
//! first lost update or wrong answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom::store::{Condition, Lease, LockStore, SessionStore, SetOutcome};
use cloakroom::{Id, SessionLayer, SessionLock};
use http::StatusCode;
use serde_json::json;

use crate::app::{App, all_at_once, within};
use crate::{record, unique_name, write};

type Store = Arc<dyn SessionStore>;
type Locks = Arc<dyn LockStore>;

/// How long a case waits for a request it steps through.
const STEP: Duration = Duration::from_secs(20);

/// 200 `update` increments of one key at once, half through each of two store handles, end at
/// exactly 200: each update is re-applied to the newest value, never lost.
pub async fn concurrent_updates_all_count(first: Store, second: Store) {
    let apps = [App::new(first), App::new(second)];
    let cookie = apps[0].start().await;
    let statuses = all_at_once(&apps, 200, "/update", &cookie).await;
    assert_eq!(statuses.get(&StatusCode::OK), Some(&200), "{statuses:?}");
    assert_eq!(
        apps[1].value(&cookie, "n").await,
        json!(200),
        "lost updates"
    );
}

/// 100 requests at once, each setting its own key, half through each of two store handles:
/// every key is kept (changes to different keys merge).
pub async fn disjoint_keys_all_merge(first: Store, second: Store) {
    let apps = [App::new(first), App::new(second)];
    let cookie = apps[0].start().await;
    let statuses = all_at_once(&apps, 100, "/set/k{n}", &cookie).await;
    assert_eq!(statuses.get(&StatusCode::OK), Some(&100), "{statuses:?}");
    for n in 0..100 {
        assert_eq!(
            apps[n % 2].value(&cookie, &format!("k{n}")).await,
            json!(true),
            "key k{n} was lost"
        );
    }
    assert_eq!(apps[0].value(&cookie, "n").await, json!(0));
}

/// A plain `get` then `insert` of a key that another request changed in between is refused with
/// 409 Conflict, and the other request's change stays.
pub async fn stale_plain_write_is_refused(first: Store) {
    let app = App::new(first);
    let cookie = app.start().await;
    let stale = tokio::spawn({
        let (app, cookie) = (app.clone(), cookie.clone());
        async move { app.get("/stale", Some(&cookie)).await }
    });
    within(STEP, &app.gates.read, "the stale request's read").await;
    let update = app.get("/update", Some(&cookie)).await;
    assert_eq!(update.status, StatusCode::OK, "{update:?}");
    app.gates.proceed.notify_one();
    let stale = stale.await.expect("the stale request");
    assert_eq!(stale.status, StatusCode::CONFLICT, "{stale:?}");
    assert_eq!(
        app.value(&cookie, "n").await,
        json!(1),
        "the update made meanwhile stays"
    );
}

/// A new session never replaces a stored one: with a custom `genid` that repeats an id, the
/// second session fails to save (500) and the first keeps its data.
pub async fn repeated_ids_never_merge(first: Store) {
    let fixed = unique_name("testkit-fixed-id-");
    let layer = SessionLayer::builder(first)
        .with_secret(crate::app::SECRET)
        .with_genid(move |_| fixed.clone())
        .build()
        .expect("valid options");
    let app = App::with_layer(layer);
    let cookie = app.start().await;
    let update = app.get("/update", Some(&cookie)).await;
    assert_eq!(update.status, StatusCode::OK, "{update:?}");
    let second = app.get("/create", None).await;
    assert_eq!(
        second.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{second:?}"
    );
    assert_eq!(second.cookie, None);
    assert_eq!(
        app.value(&cookie, "n").await,
        json!(1),
        "the first session stays"
    );
}

/// The store's side of the lock: one holder at a time, released only by its holder, and freed
/// by itself when its lease runs out.
pub async fn locks_are_exclusive_and_leased(store: Locks) {
    let id = Id::generate();
    let long = || Lease::new(Duration::from_secs(30));
    let (a, b) = (long(), long());
    assert!(
        store.try_lock(&id, &a).await.unwrap(),
        "a free lock is taken"
    );
    assert!(
        !store.try_lock(&id, &b).await.unwrap(),
        "a held lock is not"
    );
    assert!(
        !store.try_lock(&id, &a).await.unwrap(),
        "not even again by its holder"
    );
    store.unlock(&id, &b).await.unwrap();
    assert!(
        !store.try_lock(&id, &b).await.unwrap(),
        "only the holder releases a lock"
    );
    store.unlock(&id, &a).await.unwrap();
    assert!(store.try_lock(&id, &b).await.unwrap(), "released");
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "a lock makes no record"
    );

    let other = Id::generate();
    let short = Lease::new(Duration::from_millis(300));
    assert!(store.try_lock(&other, &short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let next = long();
    assert!(
        store.try_lock(&other, &next).await.unwrap(),
        "a lease that ran out frees the lock"
    );
    store.unlock(&other, &short).await.unwrap();
    assert!(
        !store.try_lock(&other, &long()).await.unwrap(),
        "an old holder cannot release the new holder's lock"
    );
}

/// Fencing: a write under a lease that ran out (another holder has the lock now) is refused and
/// changes nothing; the new holder's write goes through.
pub async fn writes_under_a_lost_lease_are_refused(store: Locks) {
    let id = Id::generate();
    let hour = Some(Duration::from_secs(3600));
    let v1 = write(&*store, &id, &record(json!({"n": 1}), hour), None).await;
    let short = Lease::new(Duration::from_millis(300));
    assert!(store.try_lock(&id, &short).await.unwrap());
    let v2 = match store
        .set(
            &id,
            &record(json!({"n": 2}), hour),
            Condition::version(&v1).with_lease(&short),
        )
        .await
        .unwrap()
    {
        SetOutcome::Written(version) => version,
        other => panic!("the holder's write was refused: {other:?}"),
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let next = Lease::new(Duration::from_secs(30));
    assert!(store.try_lock(&id, &next).await.unwrap());
    let late = store
        .set(
            &id,
            &record(json!({"n": 3}), hour),
            Condition::version(&v2).with_lease(&short),
        )
        .await
        .unwrap();
    assert_eq!(late, SetOutcome::LeaseLost, "a lost lease must not write");
    let stored = store.get(&id).await.unwrap().unwrap();
    assert_eq!(stored.record.data()["n"], json!(2));
    let by_next = store
        .set(
            &id,
            &record(json!({"n": 4}), hour),
            Condition::version(&v2).with_lease(&next),
        )
        .await
        .unwrap();
    assert!(matches!(by_next, SetOutcome::Written(_)), "{by_next:?}");
}

/// With the session lock on, 200 plain `get` then `insert` increments at once, half through
/// each of two store handles, end at exactly 200: the requests take turns.
pub async fn locked_plain_increments_all_count(first: Locks, second: Locks) {
    let lock = SessionLock::new()
        .with_wait(Duration::from_secs(120))
        .with_lease(Duration::from_secs(30));
    let apps = [App::locked(first, lock), App::locked(second, lock)];
    let cookie = apps[0].start().await;
    let statuses = all_at_once(&apps, 200, "/plain", &cookie).await;
    assert_eq!(statuses.get(&StatusCode::OK), Some(&200), "{statuses:?}");
    assert_eq!(
        apps[1].value(&cookie, "n").await,
        json!(200),
        "lost updates"
    );
}

/// With the session lock on: a holder whose request is dropped mid-way frees the session at
/// once; a holder that crashed (never releases) frees it when its lease runs out; and a request
/// that cannot get the lock within its wait fails with 503.
pub async fn abandoned_locks_are_freed(store: Locks) {
    let lease = Duration::from_millis(1500);
    let lock = SessionLock::new()
        .with_wait(Duration::from_secs(10))
        .with_lease(lease);
    let app = App::locked(Arc::clone(&store), lock);
    let cookie = app.start().await;

    let hung = tokio::spawn({
        let (app, cookie) = (app.clone(), cookie.clone());
        async move { app.get("/hang", Some(&cookie)).await }
    });
    within(STEP, &app.gates.read, "the holder's read").await;
    hung.abort();
    assert!(hung.await.is_err(), "the holder was aborted");
    let started = Instant::now();
    let next = app.get("/update", Some(&cookie)).await;
    assert_eq!(next.status, StatusCode::OK, "{next:?}");
    assert!(
        started.elapsed() < lease,
        "an aborted holder frees the session within its lease (took {:?})",
        started.elapsed()
    );

    // A holder that crashed: its lock is never released.
    let id = session_id(&cookie);
    assert!(store.try_lock(&id, &Lease::new(lease)).await.unwrap());
    let started = Instant::now();
    let after_crash = app.get("/update", Some(&cookie)).await;
    let waited = started.elapsed();
    assert_eq!(after_crash.status, StatusCode::OK, "{after_crash:?}");
    assert!(
        waited >= lease / 2 && waited < lease + Duration::from_secs(3),
        "waited {waited:?} for a lease of {lease:?}"
    );
    assert_eq!(app.value(&cookie, "n").await, json!(2));

    // A lock that outlasts the wait: 503, and nothing changes.
    let impatient = App::locked(
        Arc::clone(&store),
        SessionLock::new().with_wait(Duration::from_millis(300)),
    );
    assert!(
        store
            .try_lock(&id, &Lease::new(Duration::from_secs(30)))
            .await
            .unwrap()
    );
    let refused = impatient.get("/update", Some(&cookie)).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{refused:?}"
    );
}

/// The session id in a `connect.sid=s%3A<id>.<signature>` cookie.
///
/// # Panics
/// When the cookie is not of that shape.
pub fn session_id(cookie: &str) -> Id {
    let value = cookie
        .split_once('=')
        .map(|(_, value)| value)
        .expect("name=value");
    let signed = value
        .strip_prefix("s%3A")
        .expect("a signed express-session cookie");
    let (id, _signature) = signed.rsplit_once('.').expect("id.signature");
    Id::from_string(id)
}

/// The levers of a store that runs calls waiting for a turn together (see
/// [`writes_that_meet_in_a_batch_each_get_their_own_outcome`]), which only its own test can
/// reach.
pub trait Batching {
    /// Ends the session `id` in the store's own terms: its expiry in the past.
    fn expire(&self, id: &Id) -> impl std::future::Future<Output = ()>;
    /// Takes every turn the store has (its pool's one connection), so that calls queue.
    fn hold(&mut self) -> impl std::future::Future<Output = ()>;
    /// Gives the turn back, so that the queued calls run as one batch, and checks that they did
    /// (by the statement the store runs).
    fn release(&mut self) -> impl std::future::Future<Output = ()>;
}

/// Compare-and-sets that wait for a turn together run as one batch, and each gets its own
/// outcome. Four writes to four sessions are all made; with `mixed`, so is one of two writes to
/// one session from the same version, while writes to an expired session, from a stale
/// version, and to a missing session make nothing.
pub async fn writes_that_meet_in_a_batch_each_get_their_own_outcome(
    store: Store,
    batching: &mut impl Batching,
    mixed: bool,
) {
    let hour = Some(Duration::from_secs(3600));
    let mut sessions = Vec::new();
    for n in 0..6 {
        let id = Id::generate();
        let version = write(&*store, &id, &record(json!({ "n": n }), hour), None).await;
        sessions.push((id, version));
    }
    let mut targets: Vec<_> = sessions[..4].to_vec();
    let missing = Id::generate();
    if mixed {
        // Session 5 moves on, so the version loaded before is stale; session 4 expires.
        let (stale_id, stale) = sessions[5].clone();
        write(
            &*store,
            &stale_id,
            &record(json!({ "n": 50 }), hour),
            Some(&stale),
        )
        .await;
        batching.expire(&sessions[4].0).await;
        // Then 4 (expired), 5 (stale), 3 a second time, and a missing session.
        targets.extend([
            sessions[4].clone(),
            sessions[5].clone(),
            sessions[3].clone(),
            (missing.clone(), sessions[0].1.clone()),
        ]);
    }
    let made = write_in_one_batch(&store, batching, targets).await;
    let written: Vec<usize> = (0..made.len()).filter(|&k| made[k]).collect();
    if !mixed {
        assert_eq!(written, [0, 1, 2, 3]);
        return;
    }
    // 0–2 always; one of 3 and 6 (session 3 twice); never 4, 5 or 7.
    assert_eq!(written.len(), 4, "{written:?}");
    assert_eq!(written[..3], [0, 1, 2]);
    assert!(written[3] == 3 || written[3] == 6, "{written:?}");
    for (k, (id, _)) in sessions.iter().enumerate() {
        let data = store
            .get(id)
            .await
            .unwrap()
            .map(|loaded| loaded.record.data().clone());
        let expected = match k {
            0..=2 => Some(json!({ "written": k })),
            3 => Some(json!({ "written": written[3] })),
            4 => None,
            _ => Some(json!({ "n": 50 })),
        };
        assert_eq!(data.map(serde_json::Value::Object), expected, "session {k}");
    }
    assert!(store.get(&missing).await.unwrap().is_none());
}

/// Compare-and-sets of `targets` (an id and the version to expect) queued behind
/// [`Batching::hold`] and let go together by [`Batching::release`]; whether each was made. The
/// `k`th writes `{"written": k}`.
pub async fn write_in_one_batch(
    store: &Store,
    batching: &mut impl Batching,
    targets: Vec<(Id, cloakroom::store::Version)>,
) -> Vec<bool> {
    let hour = Some(Duration::from_secs(3600));
    batching.hold().await;
    let mut writes = Vec::new();
    for (k, (id, version)) in targets.into_iter().enumerate() {
        let store = Arc::clone(store);
        writes.push(tokio::spawn(async move {
            let written = record(json!({ "written": k }), hour);
            let outcome = store
                .set(&id, &written, Condition::version(&version))
                .await
                .unwrap();
            matches!(outcome, SetOutcome::Written(_))
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    batching.release().await;
    let mut made = Vec::new();
    for write in writes {
        made.push(write.await.unwrap());
    }
    made
}
