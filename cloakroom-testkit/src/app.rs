//! A small app behind a real [`SessionLayer`], for the cases that check what concurrent requests
//! do to one session: no HTTP server, each request goes through the layer's tower service.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloakroom::store::{LockStore, SessionStore};
use cloakroom::{Session, SessionLayer, SessionLock};
use http::{Request, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

/// The layer's secret: obviously fake.
pub const SECRET: &str = "cloakroom-testkit secret, never use it in production";

type Service = BoxCloneSyncService<Request<()>, Response<Bytes>, Infallible>;

/// Rendezvous points a handler waits at, so a case can order two requests exactly.
#[derive(Debug, Default)]
pub struct Gates {
    /// Notified by `/stale` once it has read the value.
    pub read: Notify,
    /// `/stale` and `/hang` wait for this before going on.
    pub proceed: Notify,
}

/// The app: one session layer over these routes (the session key is `n` unless a path says
/// otherwise):
///
/// | path | what the handler does |
/// |---|---|
/// | `/create` | `insert("n", 0)`: starts a session |
/// | `/update` | `update("n", +1)` |
/// | `/plain` | `get("n")`, a yield, `insert("n", n + 1)` (the read-modify-write a lock makes safe) |
/// | `/stale` | `get("n")`, tells [`Gates::read`], waits for [`Gates::proceed`], `insert("n", n + 1)` |
/// | `/hang` | `get("n")`, tells [`Gates::read`], then waits for [`Gates::proceed`] |
/// | `/set/<key>` | `insert(key, true)` |
/// | `/get/<key>` | answers the key's JSON value (`null` when absent) |
#[derive(Clone)]
pub struct App {
    service: Service,
    /// The gates of `/stale` and `/hang`.
    pub gates: Arc<Gates>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

/// One answer: the status, the cookie value the layer set (if any), and the body.
#[derive(Debug)]
pub struct Answer {
    /// The response status.
    pub status: StatusCode,
    /// `name=value` of the session cookie the response set, if it set one.
    pub cookie: Option<String>,
    /// The response body.
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    ///
    /// # Panics
    /// When the body is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("expected JSON, got {:?}", self.body))
    }
}

impl App {
    /// The app over `store`, without the session lock.
    ///
    /// # Panics
    /// If the layer cannot be built.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        let layer = SessionLayer::builder(store)
            .with_secret(SECRET)
            .build()
            .expect("the testkit's layer options are valid");
        Self::with_layer(layer)
    }

    /// The app over `store`, with the session lock on.
    ///
    /// # Panics
    /// If the layer cannot be built.
    pub fn locked(store: Arc<dyn LockStore>, lock: SessionLock) -> Self {
        let layer = SessionLayer::builder(store)
            .with_secret(SECRET)
            .with_session_lock(lock)
            .build()
            .expect("the testkit's layer options are valid");
        Self::with_layer(layer)
    }

    /// The app over a layer built elsewhere (with a custom `genid`, say).
    pub fn with_layer(layer: SessionLayer) -> Self {
        let gates = Arc::new(Gates::default());
        let handler_gates = Arc::clone(&gates);
        let routes = tower::service_fn(move |request: Request<()>| {
            let gates = Arc::clone(&handler_gates);
            async move { Ok::<_, Infallible>(route(request, &gates).await) }
        });
        App {
            service: BoxCloneSyncService::new(layer.layer(routes)),
            gates,
        }
    }

    /// Sends `GET path` with the session cookie `cookie` (`name=value`), if any.
    ///
    /// # Panics
    /// Never on a response; only if the request cannot be built.
    pub async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut request = Request::get(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let request = request.body(()).expect("a valid test request");
        let Ok(response) = self.service.clone().oneshot(request).await;
        let cookie = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(|value| value.split(';').next())
            .find(|pair| pair.starts_with("connect.sid="))
            .map(str::to_owned);
        Answer {
            status: response.status(),
            cookie,
            body: String::from_utf8_lossy(response.body()).into_owned(),
        }
    }

    /// Starts a session (`/create`) and returns its cookie.
    ///
    /// # Panics
    /// When the request fails or sets no cookie.
    pub async fn start(&self) -> String {
        let answer = self.get("/create", None).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        answer.cookie.expect("a new session sets its cookie")
    }

    /// The value of `key` in the session of `cookie`.
    ///
    /// # Panics
    /// When the request fails.
    pub async fn value(&self, cookie: &str, key: &str) -> Value {
        let answer = self.get(&format!("/get/{key}"), Some(cookie)).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        answer.json()
    }
}

async fn route(request: Request<()>, gates: &Gates) -> Response<Bytes> {
    let Some(session) = request.extensions().get::<Session>().cloned() else {
        return respond(StatusCode::INTERNAL_SERVER_ERROR, "no session layer".into());
    };
    let path = request.uri().path().to_owned();
    match handle(&session, &path, gates).await {
        Ok(body) => respond(StatusCode::OK, body),
        Err(error) => respond(error.status(), error.to_string()),
    }
}

async fn handle(session: &Session, path: &str, gates: &Gates) -> Result<String, cloakroom::Error> {
    if let Some(key) = path.strip_prefix("/set/") {
        session.insert(key, true).await?;
        return Ok(String::new());
    }
    if let Some(key) = path.strip_prefix("/get/") {
        let value: Option<Value> = session.get_value(key).await?;
        return Ok(value.unwrap_or(Value::Null).to_string());
    }
    match path {
        "/create" => session.insert("n", 0).await?,
        "/update" => {
            let n = session
                .update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
                .await?;
            return Ok(json!(n).to_string());
        }
        "/plain" => {
            let n: u64 = session.get("n").await?.unwrap_or(0);
            tokio::task::yield_now().await;
            session.insert("n", n + 1).await?;
        }
        "/stale" => {
            let n: u64 = session.get("n").await?.unwrap_or(0);
            gates.read.notify_one();
            gates.proceed.notified().await;
            session.insert("n", n + 1).await?;
        }
        "/hang" => {
            let _: Option<u64> = session.get("n").await?;
            gates.read.notify_one();
            gates.proceed.notified().await;
        }
        _ => return Ok("unknown path".into()),
    }
    Ok(String::new())
}

fn respond(status: StatusCode, body: String) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response
}

/// Sends `count` requests for `path` with `cookie` at once, alternating between `apps` (so
/// with two apps over two store handles, half go through each "process"). Returns how many
/// answered each status.
///
/// # Panics
/// When a request task panics.
pub async fn all_at_once(
    apps: &[App],
    count: usize,
    path: &str,
    cookie: &str,
) -> HashMap<StatusCode, usize> {
    let tasks: Vec<_> = (0..count)
        .map(|n| {
            let app = apps[n % apps.len()].clone();
            let path = path.replace("{n}", &n.to_string());
            let cookie = cookie.to_owned();
            tokio::spawn(async move { app.get(&path, Some(&cookie)).await.status })
        })
        .collect();
    let mut statuses = HashMap::new();
    for task in tasks {
        *statuses
            .entry(task.await.expect("a request task"))
            .or_default() += 1;
    }
    statuses
}

/// Waits up to `limit` for `notify`.
///
/// # Panics
/// When it is not notified in time.
pub async fn within(limit: Duration, notify: &Notify, what: &str) {
    tokio::time::timeout(limit, notify.notified())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}
