//! The [`OwnerIndex`] cases: every session of an owner is found, exactly, across handles, and
//! leaves the index when it ends or changes hands. Each case takes two handles on one fresh
//! backend (as [`concurrency_suite!`](crate::concurrency_suite) does), standing for two
//! processes, both reading the owner at the default path, `passport.user`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cloakroom::store::{OwnerIndex, Version};
use cloakroom::{Id, Record};
use serde_json::{Value, json};

use crate::{record, write};

type Owners = Arc<dyn OwnerIndex>;

/// A record owned by `owner` (any JSON value: a string, a number, or something that owns
/// nothing), living `max_age`.
fn owned(owner: Value, max_age: Duration) -> Record {
    record(
        json!({ "passport": { "user": owner }, "views": 1 }),
        Some(max_age),
    )
}

const HOUR: Duration = Duration::from_secs(3600);

/// The ids `owner` has, as the store finds them, checking each is what a `get` gives.
async fn ids_of(store: &Owners, owner: &str) -> BTreeSet<String> {
    let found = store
        .sessions_of(owner)
        .await
        .unwrap_or_else(|error| panic!("sessions_of failed: {error} ({error:?})"));
    let mut ids = BTreeSet::new();
    for (id, loaded) in found {
        let stored = store
            .get(&id)
            .await
            .expect("get")
            .expect("sessions_of returned a session get does not find");
        assert_eq!(
            loaded.version, stored.version,
            "sessions_of must give the version get gives"
        );
        assert_eq!(loaded.record, stored.record);
        assert_eq!(
            store.owner_path().owner_of(loaded.record.data()).as_deref(),
            Some(owner),
            "sessions_of returned a session another owner has"
        );
        assert!(ids.insert(id.as_str().to_owned()), "an id was returned twice");
    }
    ids
}

fn set_of(ids: &[&Id]) -> BTreeSet<String> {
    ids.iter().map(|id| id.as_str().to_owned()).collect()
}

/// Sessions are found by their owner, on the other handle too; strings and integers own,
/// other values and unowned sessions are found by nobody.
pub async fn sessions_are_found_by_owner(first: Owners, second: Owners) {
    let owner = crate::unique_name("alice-");
    let (a, b, c) = (Id::generate(), Id::generate(), Id::generate());
    for id in [&a, &b, &c] {
        write(&*first, id, &owned(json!(owner), HOUR), None).await;
    }
    let other = crate::unique_name("bob-");
    let bobs = Id::generate();
    write(&*first, &bobs, &owned(json!(other), HOUR), None).await;
    let unowned = Id::generate();
    write(&*first, &unowned, &record(json!({ "views": 1 }), Some(HOUR)), None).await;
    let not_an_owner = Id::generate();
    write(&*first, &not_an_owner, &owned(json!({ "id": owner }), HOUR), None).await;

    assert_eq!(ids_of(&first, &owner).await, set_of(&[&a, &b, &c]));
    assert_eq!(
        ids_of(&second, &owner).await,
        set_of(&[&a, &b, &c]),
        "another process finds them too"
    );
    assert_eq!(ids_of(&second, &other).await, set_of(&[&bobs]));
    assert!(ids_of(&first, &crate::unique_name("nobody-")).await.is_empty());

    let number = 700_000_000 + i64::from(rand_u16());
    let numbered = Id::generate();
    write(&*second, &numbered, &owned(json!(number), HOUR), None).await;
    assert_eq!(
        ids_of(&first, &number.to_string()).await,
        set_of(&[&numbered]),
        "an integer owner is found by its decimal text"
    );
}

/// A destroyed session, one whose owner changed, and one that no longer names an owner all
/// leave the owner's list at once, whichever handle made the change.
pub async fn ended_and_reassigned_sessions_leave(first: Owners, second: Owners) {
    let owner = crate::unique_name("alice-");
    let other = crate::unique_name("bob-");
    let ids: Vec<Id> = (0..4).map(|_| Id::generate()).collect();
    let mut versions: Vec<Version> = Vec::new();
    for id in &ids {
        versions.push(write(&*first, id, &owned(json!(owner), HOUR), None).await);
    }
    second.destroy(&ids[0]).await.expect("destroy");
    write(
        &*second,
        &ids[1],
        &owned(json!(other), HOUR),
        Some(&versions[1]),
    )
    .await;
    write(
        &*second,
        &ids[2],
        &record(json!({ "passport": {}, "views": 2 }), Some(HOUR)),
        Some(&versions[2]),
    )
    .await;
    assert_eq!(ids_of(&first, &owner).await, set_of(&[&ids[3]]));
    assert_eq!(ids_of(&first, &other).await, set_of(&[&ids[1]]));

    // And a session can come back to its owner.
    let version = second.get(&ids[1]).await.unwrap().unwrap().version;
    write(&*first, &ids[1], &owned(json!(owner), HOUR), Some(&version)).await;
    assert_eq!(ids_of(&second, &owner).await, set_of(&[&ids[1], &ids[3]]));
    assert!(ids_of(&second, &other).await.is_empty());
}

/// An expired session is not found; a touched one is found for as long as the touch keeps it.
pub async fn expiry_and_touch_follow_the_session(first: Owners, second: Owners) {
    let owner = crate::unique_name("alice-");
    let short = Duration::from_millis(1500);
    let (expiring, touched) = (Id::generate(), Id::generate());
    write(&*first, &expiring, &owned(json!(owner), short), None).await;
    write(&*first, &touched, &owned(json!(owner), short), None).await;
    assert_eq!(ids_of(&second, &owner).await, set_of(&[&expiring, &touched]));

    let mut longer = owned(json!(owner), HOUR);
    // The same data as stored: a touch changes the expiry only.
    longer.data_mut().clone_from(
        second
            .get(&touched)
            .await
            .unwrap()
            .expect("still live")
            .record
            .data(),
    );
    second.touch(&touched, &longer).await.expect("touch");
    // Past the first expiry, with a second's slack for stores that round up to whole seconds.
    tokio::time::sleep(short + Duration::from_millis(1200)).await;
    assert_eq!(
        ids_of(&first, &owner).await,
        set_of(&[&touched]),
        "the expired session leaves, the touched one stays"
    );
}

/// Many owners with many sessions each, written at once from both handles: each owner finds
/// exactly its own.
pub async fn many_owners_at_once(first: Owners, second: Owners) {
    let owners: Vec<String> = (0..8).map(|_| crate::unique_name("user-")).collect();
    let mut tasks = Vec::new();
    for (n, owner) in owners.iter().enumerate() {
        for k in 0..6 {
            let store = if (n + k) % 2 == 0 { &first } else { &second };
            let (store, owner) = (Arc::clone(store), owner.clone());
            tasks.push(tokio::spawn(async move {
                let id = Id::generate();
                write(&*store, &id, &owned(json!(owner), HOUR), None).await;
                (owner, id.as_str().to_owned())
            }));
        }
    }
    let mut expected: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for task in tasks {
        let (owner, id) = task.await.expect("a writer panicked");
        expected.entry(owner).or_default().insert(id);
    }
    for owner in &owners {
        assert_eq!(&ids_of(&first, owner).await, &expected[owner]);
    }
}

fn rand_u16() -> u16 {
    let mut bytes = [0u8; 2];
    getrandom::fill(&mut bytes).expect("the OS random number generator must be available");
    u16::from_le_bytes(bytes)
}
