//! RedisStore against a `redis-server` each test starts for itself (so it can count every
//! command, kill it or stall it without disturbing other tests): round trips per request, and
//! behaviour while Redis is down or stalled.
#![cfg(feature = "redis")]

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use cloakroom::Id;
use cloakroom::store::redis::RedisStore;
use cloakroom::store::{ErrorKind, SessionStore};
use common::{Reply, assert_failure_response, counter_routes, get, layer_on};
use serde_json::json;

/// A `redis-server` child on a free 127.0.0.1 port, killed when dropped.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer { port, child: None };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port, and waits until it answers.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (./scripts/test.sh installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if self.cli(&["PING"]).is_some_and(|pong| pong == "PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} did not start in 5 s", self.port);
    }

    /// `kill -9`: connections drop at once, nothing is saved.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -STOP` (`pause`) and `kill -CONT` (`resume`): a stalled server keeps its sockets
    /// open and answers nothing.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `redis-cli -p <port> <args>`, straight to the server; `None` when it fails.
    fn cli(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// `INFO commandstats` as command name -> calls, leaving out the test's own `CONFIG` and
    /// `INFO`.
    fn command_calls(&self) -> BTreeMap<String, u64> {
        let info = self.cli(&["INFO", "commandstats"]).unwrap();
        info.lines()
            .filter_map(|line| line.strip_prefix("cmdstat_"))
            .filter_map(|line| {
                let (name, stats) = line.split_once(':')?;
                let calls = stats.strip_prefix("calls=")?.split(',').next()?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .filter(|(name, _)| !name.starts_with("config") && name != "info")
            .collect()
    }

    fn reset_stats(&self) {
        assert_eq!(self.cli(&["CONFIG", "RESETSTAT"]).as_deref(), Some("OK"));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill();
    }
}

/// A TCP proxy in front of a server that counts round trips: each time the client starts
/// sending after the server has answered (or for the first time) is one. A pipeline goes out in
/// one write and its replies come back together, so it is one round trip, as it should be.
/// Plain threads and blocking sockets: they end when the connections close.
struct RoundTripCounter {
    port: u16,
    round_trips: Arc<AtomicUsize>,
}

impl RoundTripCounter {
    fn start(upstream: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let round_trips = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&round_trips);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                relay(client, server, Arc::clone(&counter));
            }
        });
        RoundTripCounter { port, round_trips }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn take(&self) -> usize {
        self.round_trips.swap(0, Ordering::SeqCst)
    }
}

fn relay(client: TcpStream, server: TcpStream, round_trips: Arc<AtomicUsize>) {
    let client_talking = Arc::new(AtomicBool::new(false));
    let talking = Arc::clone(&client_talking);
    let (mut from_client, mut to_server) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (mut from_server, mut to_client) = (server, client);
    std::thread::spawn(move || {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from_client.read(&mut buffer) {
            if !talking.swap(true, Ordering::SeqCst) {
                round_trips.fetch_add(1, Ordering::SeqCst);
            }
            if to_server.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from_server.read(&mut buffer) {
            client_talking.store(false, Ordering::SeqCst);
            if to_client.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to_client.shutdown(Shutdown::Write);
    });
}

/// `/` counts views (reads and writes the session), `/peek` only reads it, `/untouched` never
/// uses it.
fn app(store: RedisStore, touch_after: Duration) -> Router {
    let layer = layer_on(store, Duration::from_secs(60))
        .with_touch_after(touch_after)
        .build()
        .unwrap();
    counter_routes().layer(layer)
}

fn calls(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_round_trip_to_read_two_to_change() {
    let server = RedisServer::start();
    let proxy = RoundTripCounter::start(server.port);
    let store = RedisStore::connect(&proxy.url()).await.unwrap();
    // The middleware touches a loaded session it does not save once `touch_after` has passed
    // since the stored expiry was set; 0 (the default, as express) touches on every request.
    let lazy_touch = app(store.clone(), Duration::from_secs(30));
    let eager_touch = app(store, Duration::ZERO);

    let first = get(&lazy_touch, "/", None).await;
    assert_eq!(first.body, "views 1");
    let pair = first.cookie_pair("connect.sid");

    // The first compare-and-set on this server: EVALSHA answers NOSCRIPT, so the script is
    // loaded and run again, two extra round trips, once per server.
    proxy.take();
    let reply = get(&lazy_touch, "/", Some(&pair)).await;
    assert_eq!(reply.body, "views 2");
    assert_eq!(
        proxy.take(),
        4,
        "get, EVALSHA (NOSCRIPT), SCRIPT LOAD, EVALSHA"
    );

    // INFO commandstats counts each command of a pipeline, and each command a script runs,
    // separately; the proxy counts round trips. Both are shown.
    server.reset_stats();
    proxy.take();
    let reply = get(&lazy_touch, "/peek", Some(&pair)).await;
    assert_eq!(reply.body, "views 2");
    assert_eq!(proxy.take(), 1, "a read-only request is one round trip");
    // This process wrote the session last, so it knows when the key expires: no PTTL.
    assert_eq!(server.command_calls(), calls(&[("getrange", 1)]));
    // Another process asks for it, in the same round trip.
    let other = app(
        RedisStore::connect(&proxy.url()).await.unwrap(),
        Duration::from_secs(30),
    );
    server.reset_stats();
    proxy.take();
    let reply = get(&other, "/peek", Some(&pair)).await;
    assert_eq!(reply.body, "views 2");
    assert_eq!(proxy.take(), 1, "a read-only request is one round trip");
    assert_eq!(
        server.command_calls(),
        calls(&[("getrange", 1), ("pttl", 1)])
    );

    server.reset_stats();
    let reply = get(&lazy_touch, "/", Some(&pair)).await;
    assert_eq!(reply.body, "views 3");
    assert_eq!(proxy.take(), 2, "a changing request is two round trips");
    // The GET and the SET run inside the script.
    assert_eq!(
        server.command_calls(),
        calls(&[("evalsha", 1), ("get", 1), ("getrange", 1), ("set", 1)])
    );

    server.reset_stats();
    let reply = get(&eager_touch, "/peek", Some(&pair)).await;
    assert_eq!(reply.body, "views 3");
    assert_eq!(proxy.take(), 2, "a read-only request with its touch");
    assert_eq!(
        server.command_calls(),
        calls(&[("expire", 1), ("getrange", 1)])
    );

    server.reset_stats();
    let reply = get(&lazy_touch, "/untouched", Some(&pair)).await;
    assert_eq!(reply.body, "no session used");
    assert_eq!(
        proxy.take(),
        0,
        "a handler that never uses its session costs nothing"
    );
    assert_eq!(server.command_calls(), calls(&[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_are_matched_literally_and_kept_apart() {
    // A server of its own: with COUNT 1, a SCAN takes one round trip per key of the whole
    // keyspace, too slow on the shared server full of other tests' sessions.
    let server = RedisServer::start();
    // Unescaped, the pattern `a:*?[ab]:*` would also match the neighbour's `a:xyzb:`.
    let globby = RedisStore::builder(server.url())
        .with_prefix("a:*?[ab]:")
        .with_scan_count(1)
        .build()
        .await
        .unwrap();
    let neighbour = RedisStore::builder(server.url())
        .with_prefix("a:xyzb:")
        .build()
        .await
        .unwrap();
    let hour = Some(Duration::from_secs(3600));
    for n in 0..25 {
        let record = cloakroom_testkit::record(json!({"n": n}), hour);
        cloakroom_testkit::write(&globby, &Id::generate(), &record, None).await;
        cloakroom_testkit::write(&neighbour, &Id::generate(), &record, None).await;
    }
    // COUNT 1: many SCAN round trips, each key still counted once.
    assert_eq!(globby.len().await.unwrap(), 25);
    assert_eq!(globby.all().await.unwrap().len(), 25);
    globby.clear().await.unwrap();
    assert!(globby.is_empty().await.unwrap());
    assert_eq!(
        neighbour.len().await.unwrap(),
        25,
        "clear stayed in its prefix"
    );
    assert_eq!(server.cli(&["DBSIZE"]).as_deref(), Some("25"));
}

/// Longer than any request may take: the store's timeout is 500 ms.
const HANG: Duration = Duration::from_secs(3);

/// One request that must finish within [`HANG`]: a hang check, not a benchmark.
async fn request(app: &Router, path: &str, cookie: Option<&str>) -> Reply {
    within(HANG, get(app, path, cookie)).await
}

async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("hung for more than {limit:?}"))
}

/// The store error behind a failure response.
fn store_error_kind(reply: &Reply) -> ErrorKind {
    match assert_failure_response(reply, StatusCode::SERVICE_UNAVAILABLE) {
        cloakroom::Error::Load(error) | cloakroom::Error::Save(error) => error.kind(),
        other => panic!("expected a store failure, got {other:?}"),
    }
}

/// Sends requests until one succeeds, for at most 10 s; the others must fail with the 503.
async fn until_recovered(app: &Router) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..200 {
        let reply = request(app, "/", None).await;
        if reply.status == StatusCode::OK {
            return reply;
        }
        store_error_kind(&reply);
        assert!(Instant::now() < deadline, "not back within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not back after 200 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_fast_while_redis_is_down_or_stalled_and_recover_without_a_restart() {
    let mut server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .with_response_timeout(Duration::from_millis(500))
        .with_connection_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let app = app(store, Duration::ZERO);
    let first = request(&app, "/", None).await;
    assert_eq!(first.body, "views 1");
    let pair = first.cookie_pair("connect.sid");

    // Killed: the dropped connection and the refused reconnections are transient failures.
    server.kill();
    for _ in 0..5 {
        let reply = request(&app, "/", Some(&pair)).await;
        let kind = store_error_kind(&reply);
        assert!(
            matches!(kind, ErrorKind::Unavailable | ErrorKind::Timeout),
            "{kind:?}"
        );
    }

    // Back (empty: it saved nothing), and the same app and store use it again.
    server.restart();
    let reply = until_recovered(&app).await;
    assert_eq!(reply.body, "views 1");
    let pair = reply.cookie_pair("connect.sid");
    let reply = request(&app, "/", Some(&pair)).await;
    assert_eq!(reply.body, "views 2");

    // Stalled: the connection stays open and nothing answers, so the timeout decides.
    server.signal("-STOP");
    for _ in 0..3 {
        let started = Instant::now();
        let reply = request(&app, "/", Some(&pair)).await;
        assert_eq!(store_error_kind(&reply), ErrorKind::Timeout);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(400),
            "gave up early: {took:?}"
        );
    }
    server.signal("-CONT");
    let reply = until_recovered(&app).await;
    assert_eq!(reply.body, "views 1");
    let reply = request(&app, "/", Some(&pair)).await;
    assert_eq!(
        reply.body, "views 3",
        "the session written before the stall is intact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_made_while_redis_restarts_waits_for_it_within_the_timeout() {
    let mut server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .with_response_timeout(Duration::from_secs(5))
        .with_connection_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let id = Id::generate();
    cloakroom_testkit::write(&store, &id, &cloakroom::Record::default(), None).await;

    // Killed: the connection drops at once, and the store starts reconnecting.
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Back 300 ms later (empty: it saved nothing).
    let restarted = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        server.restart();
        server
    });
    let started = Instant::now();
    let read = within(HANG, store.get(&id)).await;
    let _server = restarted.join().unwrap();
    assert!(
        matches!(read, Ok(None)),
        "waited for the reconnection and read the restarted, empty server: {:?}",
        read.map(|loaded| loaded.is_some())
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "answered before Redis was back: {:?}",
        started.elapsed()
    );
}
