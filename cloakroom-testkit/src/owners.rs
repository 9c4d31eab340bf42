//! The [`OwnerIndex`] cases: every session of an owner is found, exactly, across handles, and
//! leaves the index when it ends or changes hands. Each case takes two handles on one fresh
//! backend (as [`concurrency_suite!`](crate::concurrency_suite) does), standing for two
//! processes, both reading the owner at the default path, `passport.user`.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloakroom::store::{OwnerIndex, Version};
use cloakroom::{
    Admission, AtLimit, Id, Record, Session, SessionLayer, SessionLayerBuilder, SessionRegistry,
};
use http::{Request, Response, StatusCode, header};
use serde_json::{Value, json};
use tower::util::BoxCloneSyncService;
use tower::{Layer as _, ServiceExt as _};

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
        assert!(
            ids.insert(id.as_str().to_owned()),
            "an id was returned twice"
        );
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
    write(
        &*first,
        &unowned,
        &record(json!({ "views": 1 }), Some(HOUR)),
        None,
    )
    .await;
    let not_an_owner = Id::generate();
    write(
        &*first,
        &not_an_owner,
        &owned(json!({ "id": owner }), HOUR),
        None,
    )
    .await;

    assert_eq!(ids_of(&first, &owner).await, set_of(&[&a, &b, &c]));
    assert_eq!(
        ids_of(&second, &owner).await,
        set_of(&[&a, &b, &c]),
        "another process finds them too"
    );
    assert_eq!(ids_of(&second, &other).await, set_of(&[&bobs]));
    assert!(
        ids_of(&first, &crate::unique_name("nobody-"))
            .await
            .is_empty()
    );

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
    assert_eq!(
        ids_of(&second, &owner).await,
        set_of(&[&expiring, &touched])
    );

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

/// Two "processes" (a layer over each handle) with a [`SessionRegistry`] each, and the routes a
/// "your sessions" page needs.
struct Site {
    processes: [BoxCloneSyncService<Request<()>, Response<Bytes>, Infallible>; 2],
}

impl Site {
    fn new(
        first: &Owners,
        second: &Owners,
        layer: impl Fn(SessionLayerBuilder<Owners>) -> SessionLayerBuilder<Owners>,
    ) -> Self {
        let process = |store: &Owners| {
            let built =
                layer(SessionLayer::builder(Arc::clone(store)).with_secret(crate::app::SECRET))
                    .build()
                    .expect("valid layer options");
            let registry = SessionRegistry::new(Arc::clone(store));
            let routes = tower::service_fn(move |request: Request<()>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(site_route(request, &registry).await) }
            });
            BoxCloneSyncService::new(built.layer(routes))
        };
        Site {
            processes: [process(first), process(second)],
        }
    }

    /// `GET path` on process `n` with `cookie`: the status, the body, and the new cookie if
    /// one was set.
    async fn get(
        &self,
        n: usize,
        path: &str,
        cookie: &str,
    ) -> (StatusCode, String, Option<String>) {
        let request = Request::get(path)
            .header(header::COOKIE, cookie)
            .body(())
            .expect("a valid request");
        let Ok(response) = self.processes[n].clone().oneshot(request).await;
        let set = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok()?.split(';').next().map(str::to_owned))
            .find(|pair| pair.starts_with("connect.sid=") && pair.len() > "connect.sid=".len());
        let body = String::from_utf8_lossy(response.body()).into_owned();
        (response.status(), body, set)
    }

    /// Signs `user` in on process `n` as device `device`; returns the session cookie.
    async fn login(&self, n: usize, user: &str, device: &str) -> String {
        let (status, body, cookie) = self.get(n, &format!("/login/{user}/{device}"), "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        cookie.expect("a login sets the session cookie")
    }

    async fn whoami(&self, n: usize, cookie: &str) -> String {
        let (status, body, _) = self.get(n, "/whoami", cookie).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn list(&self, n: usize, cookie: &str) -> Vec<Value> {
        let (status, body, _) = self.get(n, "/list", cookie).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str::<Vec<Value>>(&body).expect("the list is a JSON array")
    }
}

async fn site_route(request: Request<()>, registry: &SessionRegistry<Owners>) -> Response<Bytes> {
    let session = request
        .extensions()
        .get::<Session>()
        .cloned()
        .expect("the session layer is in front");
    let path = request.uri().path().to_owned();
    let answer = async {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let owner = session.owner().await?;
        Ok::<_, cloakroom::Error>(match (parts.as_slice(), owner) {
            (["login", user, device], _) => {
                session.regenerate().await?;
                session.set_owner(user).await?;
                let mut info = serde_json::Map::new();
                info.insert("device".into(), json!(device));
                session.set_session_info(info).await?;
                (StatusCode::OK, "ok".to_owned())
            }
            (["whoami"], owner) => (StatusCode::OK, owner.unwrap_or_else(|| "nobody".into())),
            (["list"], Some(owner)) => {
                let list = registry.list(&owner, &session).await?;
                (StatusCode::OK, serde_json::to_string(&list).expect("JSON"))
            }
            (["revoke-others"], Some(owner)) => {
                let revoked = registry.revoke_others(&owner, &session).await?;
                (StatusCode::OK, revoked.to_string())
            }
            (["revoke", handle], Some(owner)) => match registry.revoke(&owner, handle).await? {
                true => (StatusCode::OK, "revoked".to_owned()),
                false => (StatusCode::NOT_FOUND, "no such session".to_owned()),
            },
            (["cap", limit, "refuse" | "oldest"], _) => {
                let at_limit = if parts[2] == "refuse" {
                    AtLimit::Refuse
                } else {
                    AtLimit::RevokeOldest
                };
                let limit: usize = limit.parse().expect("a number");
                match registry
                    .make_room("carol", limit, at_limit, &session)
                    .await?
                {
                    Admission::Admitted { revoked } => {
                        session.regenerate().await?;
                        session.set_owner("carol").await?;
                        (StatusCode::OK, revoked.to_string())
                    }
                    Admission::Refused => (StatusCode::CONFLICT, "refused".to_owned()),
                }
            }
            _ => (StatusCode::FORBIDDEN, "not signed in".to_owned()),
        })
    };
    let (status, body) = match answer.await {
        Ok(answer) => answer,
        Err(error) => (error.status(), error.to_string()),
    };
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response
}

/// One user signed in from three clients through two processes: each sees the three, with its
/// own marked current and no session id anywhere; "sign out everywhere else" signs the other
/// two out on both processes; a handle revokes only for its owner.
pub async fn registry_signs_other_clients_out(first: Owners, second: Owners) {
    let site = Site::new(&first, &second, |layer| layer);
    let user = crate::unique_name("alice-");
    let clients = [
        site.login(0, &user, "laptop").await,
        site.login(1, &user, "phone").await,
        site.login(0, &user, "tablet").await,
    ];
    for (n, cookie) in clients.iter().enumerate() {
        assert_eq!(site.whoami(n % 2, cookie).await, user);
    }
    let list = site.list(1, &clients[1]).await;
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(
        list[0]["current"],
        json!(true),
        "the asking session comes first"
    );
    assert_eq!(list[0]["info"]["device"], json!("phone"));
    assert_eq!(
        list.iter().filter(|s| s["current"] == json!(true)).count(),
        1
    );
    let text = serde_json::to_string(&list).unwrap();
    for cookie in &clients {
        let id = crate::concurrency::session_id(cookie);
        assert!(
            !text.contains(id.as_str()),
            "the list must not show session ids"
        );
    }
    for session in &list {
        for field in ["created", "last_seen", "expires"] {
            assert!(session[field].is_string(), "{field} in {session}");
        }
    }

    // Another user cannot use alice's handles.
    let mallory = site.login(1, &crate::unique_name("mallory-"), "x").await;
    let handle = list[1]["handle"].as_str().unwrap();
    let (status, _, _) = site.get(0, &format!("/revoke/{handle}"), &mallory).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = site.get(0, "/revoke/forged-handle", &clients[0]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(site.list(0, &clients[0]).await.len(), 3);

    // Sign out everywhere else, from the phone.
    let (status, body, _) = site.get(0, "/revoke-others", &clients[1]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "2"));
    for n in 0..2 {
        assert_eq!(site.whoami(n, &clients[0]).await, "nobody");
        assert_eq!(site.whoami(n, &clients[2]).await, "nobody");
        assert_eq!(site.whoami(n, &clients[1]).await, user);
    }
    let list = site.list(0, &clients[1]).await;
    assert_eq!(list.len(), 1);

    // A handle revokes once; then it is gone.
    let tablet = site.login(1, &user, "tablet").await;
    let list = site.list(0, &clients[1]).await;
    let handle = list.iter().find(|s| s["current"] == json!(false)).unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, _) = site.get(1, &format!("/revoke/{handle}"), &clients[1]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(site.whoami(0, &tablet).await, "nobody");
    let (status, _, _) = site.get(1, &format!("/revoke/{handle}"), &clients[1]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(site.whoami(1, &mallory).await.starts_with("mallory-"));
}

/// A cap per user: at the limit, the least recently seen session goes, or the login is refused.
pub async fn registry_caps_sessions_per_user(first: Owners, second: Owners) {
    let site = Site::new(&first, &second, |layer| layer);
    // Three logins of "carol" under a cap of 2, revoking the oldest.
    let mut cookies = Vec::new();
    for n in 0..3 {
        let (status, body, cookie) = site.get(n % 2, "/cap/2/oldest", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, if n < 2 { "0" } else { "1" });
        cookies.push(cookie.expect("a cookie"));
        // `seen` is kept in milliseconds: keep the order unambiguous.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        site.whoami(0, &cookies[0]).await,
        "nobody",
        "the oldest was revoked"
    );
    assert_eq!(site.whoami(1, &cookies[1]).await, "carol");
    assert_eq!(site.whoami(0, &cookies[2]).await, "carol");
    let (status, _, cookie) = site.get(1, "/cap/2/refuse", "").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(cookie.is_none());
    assert_eq!(site.list(0, &cookies[2]).await.len(), 2);
    // Clean up for the stores that other cases share nothing with anyway.
    first.sessions_of("carol").await.expect("sessions_of");
}

/// An absolute timeout ends a session however busy, on every process, and regenerate does not
/// extend it; an idle timeout ends a session left alone.
pub async fn timeouts_end_sessions(first: Owners, second: Owners) {
    let absolute = Site::new(&first, &second, |layer| {
        layer.with_absolute_timeout(Duration::from_millis(2500))
    });
    let user = crate::unique_name("dave-");
    let cookie = absolute.login(0, &user, "laptop").await;
    // Busy: a request every 300 ms, alternating processes, past the deadline.
    let started = std::time::Instant::now();
    let mut ended_at = None;
    while started.elapsed() < Duration::from_secs(5) {
        if absolute
            .whoami(started.elapsed().as_millis() as usize % 2, &cookie)
            .await
            != user
        {
            ended_at = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ended_at = ended_at.expect("the absolute timeout ended the session");
    assert!(
        ended_at >= Duration::from_millis(2000),
        "ended too early: {ended_at:?}"
    );

    let idle = Site::new(&first, &second, |layer| {
        layer.with_idle_timeout(Duration::from_millis(1200))
    });
    let cookie = idle.login(1, &user, "phone").await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(idle.whoami(0, &cookie).await, user, "active: not idle");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        idle.whoami(1, &cookie).await,
        "nobody",
        "idle past the timeout"
    );
    assert!(
        first.sessions_of(&user).await.unwrap().is_empty(),
        "an ended session is destroyed, and leaves the index"
    );
}
