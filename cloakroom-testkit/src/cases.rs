//! The conformance cases, one function each. Every case takes a fresh, empty store that no
//! other test shares, and panics on the first broken contract of
//! [`SessionStore`](cloakroom::SessionStore).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cloakroom::store::{Condition, ErrorKind, SessionStore, SetOutcome};
use cloakroom::{Id, Timestamp};
use serde_json::{Value, json};

use crate::{express_shaped_record, put, record, write};

type Store = Arc<dyn SessionStore>;

/// Slack for stores that keep expiry in whole seconds (connect-redis rounds a TTL up to the next
/// second; connect-pg-simple does the same for `expire`).
const SECOND_ROUNDING: Duration = Duration::from_millis(1100);

/// Waits until just past the next whole second. Under connect-dynamodb's rule a record is
/// expired once `floor(now in seconds) >= expires`, where `expires` is `floor(now)` at the write
/// plus the remaining life: a record with less than a second to live, written late in one
/// second, reads as expired from the next one on. Started here, a short write and the check
/// right after it fall within one second.
async fn start_of_a_second() {
    let into_second = Timestamp::now().as_millis().rem_euclid(1000);
    let wait = u64::try_from(1020 - into_second).expect("at most 1020 ms");
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).expect("test durations are small")
}

/// get, set and destroy; unknown ids read as `None` and destroy without error.
pub async fn set_get_destroy(store: Store) {
    let id = Id::generate();
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "an unknown id reads as None"
    );
    let record = record(json!({"views": 1}), Some(Duration::from_secs(3600)));
    let version = write(&*store, &id, &record, None).await;
    let loaded = store
        .get(&id)
        .await
        .unwrap()
        .expect("the record just written");
    assert_eq!(loaded.record, record);
    assert_eq!(
        loaded.version, version,
        "get reports the version set returned"
    );
    store.destroy(&id).await.unwrap();
    assert!(store.get(&id).await.unwrap().is_none(), "destroyed");
    store
        .destroy(&id)
        .await
        .expect("destroying an unknown id is not an error");
    let other = Id::generate();
    store.destroy(&other).await.unwrap();
}

/// A write for a new session ([`Condition::absent`]) never replaces a live record under the
/// same id, and every write makes a new version.
pub async fn create_never_overwrites(store: Store) {
    let id = Id::generate();
    let hour = Some(Duration::from_secs(3600));
    let first = write(&*store, &id, &record(json!({"n": 1}), hour), None).await;
    let again = store
        .set(&id, &record(json!({"m": 2}), hour), Condition::absent())
        .await
        .unwrap();
    assert_eq!(
        again,
        SetOutcome::Conflict,
        "a new session must not replace a live one"
    );
    let loaded = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        loaded.record.data()["n"],
        json!(1),
        "the first record stays"
    );
    assert_eq!(loaded.version, first);
    let second = write(&*store, &id, &record(json!({"m": 2}), hour), Some(&first)).await;
    assert_ne!(first, second, "each write makes a new version");
    let loaded = store.get(&id).await.unwrap().unwrap();
    assert_eq!(loaded.record.data().get("n"), None, "replaced, not merged");
    assert_eq!(loaded.version, second);

    // An expired record does not hold its id.
    let brief = Id::generate();
    let life = Duration::from_millis(200);
    write(
        &*store,
        &brief,
        &record(json!({"old": true}), Some(life)),
        None,
    )
    .await;
    tokio::time::sleep(life + SECOND_ROUNDING).await;
    write(&*store, &brief, &record(json!({"new": true}), hour), None).await;
    let loaded = store.get(&brief).await.unwrap().unwrap();
    assert_eq!(loaded.record.data().get("old"), None);
}

/// A record comes back as express's JSON, byte for byte: cookie fields in express's order, data
/// in insertion order.
pub async fn records_keep_express_json_exactly(store: Store) {
    let id = Id::generate();
    let record = express_shaped_record();
    write(&*store, &id, &record, None).await;
    let loaded = store.get(&id).await.unwrap().unwrap();
    assert_eq!(loaded.record.to_json(), record.to_json());
    let browser_session = crate::record(json!({"a": 1}), None);
    put(&*store, &id, &browser_session).await;
    let loaded = store.get(&id).await.unwrap().unwrap();
    assert_eq!(loaded.record.to_json(), browser_session.to_json());
}

/// A record whose expiry has passed is never returned: not when written already expired, and
/// not once its time is up.
pub async fn expired_records_are_never_returned(store: Store) {
    let past = Id::generate();
    let mut expired = record(json!({"late": true}), Some(Duration::from_secs(60)));
    expired
        .cookie_mut()
        .set_expires(Some(Timestamp::now().add_millis(-5000)));
    store
        .set(&past, &expired, Condition::absent())
        .await
        .unwrap();
    assert!(
        store.get(&past).await.unwrap().is_none(),
        "written already expired"
    );

    let short = Id::generate();
    let life = Duration::from_millis(300);
    start_of_a_second().await;
    write(
        &*store,
        &short,
        &record(json!({"brief": true}), Some(life)),
        None,
    )
    .await;
    assert!(store.get(&short).await.unwrap().is_some(), "alive at first");
    tokio::time::sleep(life + SECOND_ROUNDING).await;
    assert!(
        store.get(&short).await.unwrap().is_none(),
        "gone once expired"
    );
}

/// A touch extends the record's life and changes nothing else: not the data, not the version.
pub async fn touch_moves_expiry_only(store: Store) {
    let id = Id::generate();
    let life = Duration::from_millis(300);
    start_of_a_second().await;
    let version = write(&*store, &id, &record(json!({"v": 1}), Some(life)), None).await;
    // The touch carries other data: a store must take only the expiry from it.
    let later = record(
        json!({"v": 2, "extra": true}),
        Some(Duration::from_secs(60)),
    );
    store.touch(&id, &later).await.unwrap();
    tokio::time::sleep(life + SECOND_ROUNDING).await;
    let loaded = store
        .get(&id)
        .await
        .unwrap()
        .expect("the touch extended the record past its first expiry");
    assert_eq!(loaded.record.data(), record(json!({"v": 1}), None).data());
    assert_eq!(loaded.version, version, "a touch keeps the version");
    // A compare-and-set against that version still succeeds: the touch did not disturb it.
    write(
        &*store,
        &id,
        &record(json!({"v": 3}), Some(life)),
        Some(&version),
    )
    .await;
}

/// A touch never creates a record: not for an unknown id, not after a destroy, and not when it
/// races a destroy.
pub async fn touch_never_brings_a_session_back(store: Store) {
    let minute = Some(Duration::from_secs(60));
    let unknown = Id::generate();
    store
        .touch(&unknown, &record(json!({}), minute))
        .await
        .unwrap();
    assert!(
        store.get(&unknown).await.unwrap().is_none(),
        "touch created a record"
    );

    let destroyed = Id::generate();
    write(&*store, &destroyed, &record(json!({"a": 1}), minute), None).await;
    store.destroy(&destroyed).await.unwrap();
    store
        .touch(&destroyed, &record(json!({"a": 1}), minute))
        .await
        .unwrap();
    assert!(
        store.get(&destroyed).await.unwrap().is_none(),
        "touch undid a destroy"
    );

    let mut racers = Vec::new();
    let ids: Vec<Id> = (0..32).map(|_| Id::generate()).collect();
    for id in &ids {
        write(&*store, id, &record(json!({"a": 1}), minute), None).await;
    }
    for id in &ids {
        for touching in [false, true] {
            let store = Arc::clone(&store);
            let id = id.clone();
            racers.push(tokio::spawn(async move {
                if touching {
                    store
                        .touch(&id, &record(json!({"a": 1}), minute))
                        .await
                        .unwrap();
                } else {
                    store.destroy(&id).await.unwrap();
                }
            }));
        }
    }
    for racer in racers {
        racer.await.unwrap();
    }
    for id in &ids {
        assert!(
            store.get(id).await.unwrap().is_none(),
            "a racing touch resurrected a session"
        );
    }
}

/// Compare-and-set: a write at the loaded version succeeds; at a stale version, or once the
/// record is destroyed, it is a conflict that changes nothing.
pub async fn compare_and_set(store: Store) {
    let id = Id::generate();
    let hour = Some(Duration::from_secs(3600));
    let first = write(&*store, &id, &record(json!({"n": 1}), hour), None).await;
    let second = write(&*store, &id, &record(json!({"n": 2}), hour), Some(&first)).await;
    let stale = store
        .set(
            &id,
            &record(json!({"n": 99}), hour),
            Condition::version(&first),
        )
        .await
        .unwrap();
    assert_eq!(stale, SetOutcome::Conflict, "a stale version must conflict");
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().record.data()["n"],
        json!(2)
    );

    store.destroy(&id).await.unwrap();
    let after_destroy = store
        .set(
            &id,
            &record(json!({"n": 3}), hour),
            Condition::version(&second),
        )
        .await
        .unwrap();
    assert_eq!(
        after_destroy,
        SetOutcome::Conflict,
        "a destroyed record must conflict"
    );
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "a compare-and-set must never bring a destroyed session back"
    );
    // As a new session, the id is free to use again.
    write(&*store, &id, &record(json!({"n": 4}), hour), None).await;
}

/// A record of almost 1 MiB of JSON (just under the built-in stores' default limit,
/// [`DEFAULT_MAX_RECORD_SIZE`](cloakroom::store::DEFAULT_MAX_RECORD_SIZE)) is stored and read
/// back whole.
pub async fn large_record(store: Store) {
    large_record_of(store, cloakroom::store::DEFAULT_MAX_RECORD_SIZE).await;
}

/// [`large_record`] for a store whose backend holds less than the default limit (DynamoDB's
/// items are at most 400 KB): a record of about `limit` bytes of JSON, less 1 KiB, is stored and
/// read back whole.
///
/// # Panics
/// When `limit` is under 2 KiB, or the store fails the case.
pub async fn large_record_of(store: Store, limit: usize) {
    assert!(limit >= 2048, "a large record is over 1 KiB");
    let id = Id::generate();
    let blob: String = "0123456789abcdef".repeat((limit - 1024) / 16);
    assert!(blob.len() <= limit - 1024 && blob.len() > limit - 1024 - 16);
    let big = record(
        json!({"blob": blob, "after": "ü"}),
        Some(Duration::from_secs(60)),
    );
    write(&*store, &id, &big, None).await;
    let loaded = store.get(&id).await.unwrap().unwrap();
    assert_eq!(loaded.record.to_json(), big.to_json());
}

/// A value nested as deep as a session accepts ([`cloakroom::MAX_VALUE_DEPTH`]) is stored and
/// read back intact: the limit holds on every store, because every store can load what it
/// lets through.
pub async fn deepest_value_round_trips(store: Store) {
    let id = Id::generate();
    let mut deepest = json!({"leaf": "ü"});
    for level in 2..cloakroom::MAX_VALUE_DEPTH {
        deepest = if level % 2 == 0 {
            json!([deepest])
        } else {
            json!({"k": deepest})
        };
    }
    let deep = record(json!({ "tree": deepest }), Some(Duration::from_secs(60)));
    write(&*store, &id, &deep, None).await;
    let loaded = store.get(&id).await.unwrap().unwrap();
    assert_eq!(loaded.record.to_json(), deep.to_json());
}

/// Ids, keys and values beyond ASCII, and characters JSON must escape, survive a round trip.
pub async fn unicode_ids_keys_and_values(store: Store) {
    let minute = Some(Duration::from_secs(60));
    let data = json!({
        "ключ": "значение",
        "🔑": "🧥 cloakroom",
        "clé": "café",
        "键": "值",
        "quote\"key": "back\\slash",
        "control": "tab\there\u{1}bell\u{7}",
        "nul": "a\u{0}b",
        "astral": "𝄞 \u{10FFFF}",
    });
    // A custom genid may produce any string.
    for raw in ["ünï-id", "id with spaces", "%", "/foo", "a.b.c", "键:🔑"] {
        let id = Id::from_string(raw);
        let stored = record(data.clone(), minute);
        write(&*store, &id, &stored, None).await;
        let loaded = store
            .get(&id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{raw:?}"));
        assert_eq!(loaded.record.to_json(), stored.to_json(), "{raw:?}");
        store.destroy(&id).await.unwrap();
        assert!(store.get(&id).await.unwrap().is_none(), "{raw:?}");
    }
}

/// Runs `each` for `count` ids across 64 tasks at once.
async fn in_parallel<F, Fut>(store: &Store, ids: &Arc<Vec<Id>>, each: F)
where
    F: Fn(Store, Id, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send,
{
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let store = Arc::clone(store);
            let ids = Arc::clone(ids);
            let each = each.clone();
            tokio::spawn(async move {
                for n in (task..ids.len()).step_by(64) {
                    each(Arc::clone(&store), ids[n].clone(), n).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// [`SESSIONS`] sessions written and read back (64 at a time); `len`, where supported, counts
/// them.
pub async fn many_sessions(store: Store) {
    many_sessions_of(store, SESSIONS).await;
}

/// How many sessions [`many_sessions`] writes.
pub const SESSIONS: usize = 10_000;

/// [`many_sessions`] with `count` sessions, for a backend too slow for [`SESSIONS`] in a test
/// run.
pub async fn many_sessions_of(store: Store, count: usize) {
    let ids: Arc<Vec<Id>> = Arc::new((0..count).map(|_| Id::generate()).collect());
    in_parallel(&store, &ids, |store, id, n| async move {
        let stored = record(json!({"n": n}), Some(Duration::from_secs(600)));
        write(&*store, &id, &stored, None).await;
    })
    .await;
    in_parallel(&store, &ids, |store, id, n| async move {
        let loaded = store
            .get(&id)
            .await
            .unwrap()
            .expect("every session is there");
        assert_eq!(loaded.record.data()["n"], json!(n));
    })
    .await;
    match store.len().await {
        Ok(len) => assert_eq!(len, count),
        Err(error) => assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}"),
    }
}

/// 64 tasks at once, [`ROUNDS`] rounds each: each reads and writes its own session, and all of
/// them increment one shared counter with compare-and-set. Not one increment may be lost.
pub async fn sixty_four_tasks_at_once(store: Store) {
    sixty_four_tasks_at_once_for(store, ROUNDS).await;
}

/// How many rounds each task of [`sixty_four_tasks_at_once`] makes.
pub const ROUNDS: u64 = 10;

/// [`sixty_four_tasks_at_once`] with `rounds` rounds, for a backend too slow for [`ROUNDS`] in
/// a test run (64 contending tasks cost about 32 tries per increment).
pub async fn sixty_four_tasks_at_once_for(store: Store, rounds: u64) {
    // Long enough that no session expires while the tasks run, on a slow backend too (dynalite
    // under load can take minutes for the contended increments).
    let lifetime = Some(Duration::from_secs(3600));
    let shared = Id::generate();
    write(
        &*store,
        &shared,
        &record(json!({"count": 0}), lifetime),
        None,
    )
    .await;
    let ids: Arc<Vec<Id>> = Arc::new((0..64).map(|_| Id::generate()).collect());
    let counter = shared.clone();
    in_parallel(&store, &ids, move |store, own, n| {
        let shared = counter.clone();
        async move {
            for round in 0..rounds {
                let mine = record(json!({"task": n, "round": round}), lifetime);
                put(&*store, &own, &mine).await;
                let read = store.get(&own).await.unwrap().unwrap();
                assert_eq!(read.record.data()["round"], json!(round));
                loop {
                    let loaded = store.get(&shared).await.unwrap().expect("shared counter");
                    let count = loaded.record.data()["count"].as_u64().unwrap();
                    let next = record(json!({"count": count + 1}), lifetime);
                    match store
                        .set(&shared, &next, Condition::version(&loaded.version))
                        .await
                        .unwrap()
                    {
                        SetOutcome::Written(_) => break,
                        SetOutcome::Conflict => tokio::task::yield_now().await,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
        }
    })
    .await;
    let total = store.get(&shared).await.unwrap().unwrap();
    assert_eq!(
        total.record.data()["count"],
        json!(64 * rounds),
        "lost increments"
    );
}

/// `all`, `len` and `clear`: either supported with their meaning (live records only), or
/// reporting [`ErrorKind::Unsupported`], never something else.
pub async fn all_len_and_clear(store: Store) {
    let minute = Some(Duration::from_secs(60));
    let ids: Vec<Id> = (0..3).map(|_| Id::generate()).collect();
    for (n, id) in ids.iter().enumerate() {
        write(&*store, id, &record(json!({"n": n}), minute), None).await;
    }
    let short = Id::generate();
    let life = Duration::from_millis(200);
    write(
        &*store,
        &short,
        &record(json!({"short": true}), Some(life)),
        None,
    )
    .await;
    tokio::time::sleep(life + SECOND_ROUNDING).await;

    if let Some(len) = unsupported(store.len().await) {
        assert_eq!(len, 3, "len counts live records only");
        assert_eq!(unsupported(store.is_empty().await), Some(false));
    }
    if let Some(all) = unsupported(store.all().await) {
        let mut found: Vec<(String, Value)> = all
            .iter()
            .map(|(id, r)| (id.as_str().to_owned(), r.data()["n"].clone()))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut expected: Vec<(String, Value)> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| (id.as_str().to_owned(), json!(n)))
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(found, expected, "all returns every live record");
    }
    if unsupported(store.clear().await).is_some() {
        for id in &ids {
            assert!(
                store.get(id).await.unwrap().is_none(),
                "clear deletes every record"
            );
        }
        if let Some(len) = unsupported(store.len().await) {
            assert_eq!(len, 0);
        }
    }
}

/// `Some(value)` when an optional method is supported, `None` when it reports
/// [`ErrorKind::Unsupported`]; any other error fails the test.
fn unsupported<T>(result: Result<T, cloakroom::store::Error>) -> Option<T> {
    match result {
        Err(error) if error.kind() == ErrorKind::Unsupported => None,
        Err(error) => panic!("an optional method failed: {error} ({error:?})"),
        Ok(value) => Some(value),
    }
}

/// When a store reports when it will drop a record (`Loaded::expires_at`), the report is right:
/// the cookie's expiry, or the store's default lifetime for a browser-session cookie.
pub async fn reported_expiry_is_accurate(store: Store) {
    let tolerance = millis(SECOND_ROUNDING) + 1000;
    let id = Id::generate();
    let hour = Duration::from_secs(3600);
    let stored = record(json!({}), Some(hour));
    write(&*store, &id, &stored, None).await;
    let loaded = store.get(&id).await.unwrap().unwrap();
    if let Some(expires_at) = loaded.expires_at {
        let cookie_expiry = stored.cookie().expires().unwrap();
        let off = expires_at.millis_since(cookie_expiry).abs();
        assert!(
            off <= tolerance,
            "reported expiry is {off} ms off the cookie's"
        );
    }
    let browser = Id::generate();
    let before = Timestamp::now();
    write(&*store, &browser, &record(json!({}), None), None).await;
    let loaded = store.get(&browser).await.unwrap().unwrap();
    if let (Some(expires_at), Some(ttl)) = (loaded.expires_at, store.default_ttl()) {
        let off = expires_at
            .millis_since(before.add_millis(millis(ttl)))
            .abs();
        assert!(off <= tolerance, "reported default expiry is {off} ms off");
    }
}

/// Expired records are physically removed by `prune` (a store's background removal, run now,
/// returning how many records it deleted), not merely hidden.
pub async fn expired_records_are_removed<P, Fut>(store: Store, prune: P)
where
    P: Fn() -> Fut,
    Fut: Future<Output = usize>,
{
    let life = Duration::from_millis(200);
    for n in 0..3 {
        write(
            &*store,
            &Id::generate(),
            &record(json!({"n": n}), Some(life)),
            None,
        )
        .await;
    }
    let keeper = Id::generate();
    write(
        &*store,
        &keeper,
        &record(json!({"keep": true}), Some(Duration::from_secs(600))),
        None,
    )
    .await;
    tokio::time::sleep(life + SECOND_ROUNDING).await;
    assert_eq!(
        prune().await,
        3,
        "pruning removes exactly the expired records"
    );
    assert!(
        store.get(&keeper).await.unwrap().is_some(),
        "pruning kept the live record"
    );
    assert_eq!(prune().await, 0, "nothing left to remove");
}
