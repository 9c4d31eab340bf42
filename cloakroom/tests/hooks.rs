//! Lifecycle hooks (`with_hook`, `with_async_hook`): every event, in order, with the right
//! ids; a panicking hook fails nothing; `Debug` of an event never shows an id.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use cloakroom::{
    Id, MemoryStore, Session, SessionEvent, SessionLayer, SessionLayerBuilder, SessionStore,
};
use common::SECRET;
use tower::ServiceExt as _;

type Seen = Arc<Mutex<Vec<String>>>;

/// An event as text, with each id replaced by its place among the ids seen so far (`#0`,
/// `#1`, …), so a test can say "the id created first was regenerated into the second".
fn describe(event: &SessionEvent, ids: &mut Vec<Id>) -> String {
    let mut name = |id: &Id| {
        let place = ids.iter().position(|seen| seen == id).unwrap_or_else(|| {
            ids.push(id.clone());
            ids.len() - 1
        });
        format!("#{place}")
    };
    match event {
        SessionEvent::Created { id } => format!("created {}", name(id)),
        SessionEvent::Regenerated { old, new } => {
            format!("regenerated {} -> {}", name(old), name(new))
        }
        SessionEvent::Destroyed { id } => format!("destroyed {}", name(id)),
        SessionEvent::Expired { id } => format!("expired {}", name(id)),
        SessionEvent::StoreError { error } => match error {
            cloakroom::Error::Save(error) => format!("store error: save, {:?}", error.kind()),
            other => format!("store error: {other}"),
        },
        _ => "other".to_owned(),
    }
}

fn app<S: SessionStore>(
    store: S,
    hooks: impl FnOnce(SessionLayerBuilder<S>) -> SessionLayerBuilder<S>,
) -> Router {
    let layer = hooks(SessionLayer::builder(store).with_secret(SECRET))
        .build()
        .unwrap();
    Router::new()
        .route(
            "/visit",
            get(|session: Session| async move {
                session.insert("visited", true).await?;
                Ok::<_, cloakroom::Error>("ok")
            }),
        )
        .route(
            "/login",
            get(|session: Session| async move {
                session.regenerate().await?;
                session.insert("user", "ann").await?;
                Ok::<_, cloakroom::Error>("ok")
            }),
        )
        .route(
            "/logout",
            get(|session: Session| async move {
                session.destroy().await?;
                Ok::<_, cloakroom::Error>("ok")
            }),
        )
        .route(
            "/big",
            get(|session: Session| async move {
                session.insert("big", "x".repeat(4096)).await?;
                Ok::<_, cloakroom::Error>("ok")
            }),
        )
        .layer(layer)
}

async fn get_path(app: &Router, path: &str, cookie: Option<&str>) -> (StatusCode, Option<String>) {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|value| {
            value
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned()
        })
        .filter(|pair| pair != "connect.sid=");
    (response.status(), cookie)
}

#[tokio::test]
async fn every_event_in_order_with_its_ids() {
    let seen: Seen = Arc::default();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let (log, names) = (Arc::clone(&seen), Arc::clone(&ids));
    let app = app(
        MemoryStore::builder().with_max_record_size(1024).build(),
        move |layer| {
            layer.with_hook(move |event: &SessionEvent| {
                let line = describe(event, &mut names.lock().unwrap());
                log.lock().unwrap().push(line);
            })
        },
    );
    let (_, first) = get_path(&app, "/visit", None).await;
    let first = first.unwrap();
    let (_, second) = get_path(&app, "/login", Some(&first)).await;
    let second = second.unwrap();
    get_path(&app, "/logout", Some(&second)).await;
    // The destroyed session's cookie, replayed.
    get_path(&app, "/visit", Some(&second)).await;
    let (status, _) = get_path(&app, "/big", None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[..5],
        [
            "created #0",
            "regenerated #0 -> #1",
            "destroyed #1",
            "expired #1",
            "created #2",
        ],
        "{seen:?}"
    );
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(seen[5], "store error: save, TooLarge");
}

#[tokio::test]
async fn a_panicking_hook_fails_nothing_and_the_next_hook_still_hears() {
    let seen: Seen = Arc::default();
    let (log, async_log) = (Arc::clone(&seen), Arc::clone(&seen));
    let app = app(MemoryStore::new(), move |layer| {
        layer
            .with_hook(|_: &SessionEvent| panic!("a broken hook"))
            .with_async_hook(|_: SessionEvent| async { panic!("a broken async hook") })
            .with_hook(move |event: &SessionEvent| {
                log.lock()
                    .unwrap()
                    .push(format!("sync {}", describe(event, &mut Vec::new())));
            })
            .with_async_hook(move |event: SessionEvent| {
                let log = Arc::clone(&async_log);
                async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    log.lock()
                        .unwrap()
                        .push(format!("async {}", describe(&event, &mut Vec::new())));
                }
            })
    });
    let (status, cookie) = get_path(&app, "/visit", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(cookie.is_some());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, ["sync created #0", "async created #0"]);
}

#[test]
fn events_never_print_ids() {
    let id = Id::generate();
    let event = SessionEvent::Regenerated {
        old: id.clone(),
        new: id.clone(),
    };
    assert!(!format!("{event:?}").contains(id.as_str()));
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "sqlite"))]
/// The lifecycle on every store: created, regenerated, destroyed, then expired for the dead id.
async fn the_lifecycle_on_every_store(_: &str, store: Arc<dyn SessionStore>) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let ids = Arc::new(Mutex::new(Vec::new()));
    let app = app(store, move |layer| {
        layer.with_hook(move |event: &SessionEvent| {
            let line = describe(event, &mut ids.lock().unwrap());
            log.lock().unwrap().push(line);
        })
    });
    let first = get_path(&app, "/visit", None).await.1.unwrap();
    let second = get_path(&app, "/login", Some(&first)).await.1.unwrap();
    get_path(&app, "/logout", Some(&second)).await;
    get_path(&app, "/visit", Some(&second)).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "created #0",
            "regenerated #0 -> #1",
            "destroyed #1",
            "expired #1",
            "created #2"
        ]
    );
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "sqlite"))]
common::on_every_store!(the_lifecycle_on_every_store);
