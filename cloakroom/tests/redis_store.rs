//! RedisStore against real servers (`./scripts/test.sh` starts them): the conformance suite on a
//! standalone Redis and on a Redis Cluster, connect-redis's format as `redis-cli` sees it, and
//! the owner index's keys and commands.
#![cfg(feature = "redis")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use axum::Router;
use axum::routing::get as route_get;
use cloakroom::store::redis::{RedisStore, RedisStoreBuilder};
use cloakroom::store::{ErrorKind, OwnerIndex, OwnerPath, SessionStore};
use cloakroom::{CookieOptions, Id, Session, SessionLayer, Timestamp};
use common::{SECRET, counter_routes, get};
use serde_json::{Value, json};

const HOW: &str = "Run ./scripts/test.sh, or start the servers with \
    `source scripts/services.sh; start_services`.";

fn standalone_url() -> String {
    cloakroom_testkit::server_url("CLOAKROOM_REDIS_URL", HOW)
}

fn cluster_urls() -> Vec<String> {
    cloakroom_testkit::server_url("CLOAKROOM_REDIS_CLUSTER_URLS", HOW)
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// A prefix no other test uses.
fn unique_prefix() -> String {
    cloakroom_testkit::unique_name("cloakroom-test:") + ":"
}

/// A standalone builder with a prefix no other test uses.
fn unique() -> (RedisStoreBuilder, String) {
    let prefix = unique_prefix();
    (
        RedisStore::builder(standalone_url()).with_prefix(&prefix),
        prefix,
    )
}

async fn standalone_store() -> (RedisStore, String) {
    let (builder, prefix) = unique();
    let store = builder
        .build()
        .await
        .expect("connect to CLOAKROOM_REDIS_URL");
    (store, prefix)
}

async fn cluster_store() -> (RedisStore, String) {
    let prefix = unique_prefix();
    let store = RedisStore::cluster_builder(cluster_urls())
        .with_prefix(&prefix)
        .build()
        .await
        .expect("connect to CLOAKROOM_REDIS_CLUSTER_URLS");
    (store, prefix)
}

mod standalone {
    use cloakroom::store::redis::RedisStore;

    async fn fresh() -> RedisStore {
        super::standalone_store().await.0
    }

    /// Two connections with one prefix, as two processes sharing one Redis.
    async fn pair() -> (RedisStore, RedisStore) {
        let (first, prefix) = super::standalone_store().await;
        let second = RedisStore::builder(super::standalone_url())
            .with_prefix(prefix)
            .build()
            .await
            .expect("connect to CLOAKROOM_REDIS_URL");
        (first, second)
    }

    cloakroom_testkit::conformance_suite!(fresh);
    cloakroom_testkit::concurrency_suite!(pair);
    cloakroom_testkit::locking_suite!(pair);
    cloakroom_testkit::owner_index_suite!(pair);
}

mod cluster {
    use cloakroom::store::redis::RedisStore;

    async fn fresh() -> RedisStore {
        super::cluster_store().await.0
    }

    /// Two cluster connections with one prefix, as two processes sharing one cluster.
    async fn pair() -> (RedisStore, RedisStore) {
        let (first, prefix) = super::cluster_store().await;
        let second = RedisStore::cluster_builder(super::cluster_urls())
            .with_prefix(prefix)
            .build()
            .await
            .expect("connect to CLOAKROOM_REDIS_CLUSTER_URLS");
        (first, second)
    }

    cloakroom_testkit::conformance_suite!(fresh);
    cloakroom_testkit::concurrency_suite!(pair);
    cloakroom_testkit::locking_suite!(pair);
    cloakroom_testkit::owner_index_suite!(pair);
}

/// Runs `redis-cli -u <url> <args>` and returns its output, trimmed of the final newline.
fn redis_cli(url: &str, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .args(args)
        .output()
        .expect("redis-cli must be installed (./scripts/test.sh installs it)");
    assert!(output.status.success(), "redis-cli {args:?} failed");
    let mut text = String::from_utf8(output.stdout).expect("redis-cli prints UTF-8 here");
    if text.ends_with('\n') {
        text.pop();
    }
    text
}

fn ttl_of(url: &str, key: &str) -> i64 {
    redis_cli(url, &["TTL", key])
        .parse()
        .expect("TTL is an integer")
}

/// The counter app of express-session's README, behind a layer on `store`.
fn counter_app(store: RedisStore, cookie: CookieOptions) -> Router {
    let layer = SessionLayer::builder(store)
        .with_secret(SECRET)
        .with_cookie(cookie)
        .build()
        .unwrap();
    counter_routes()
        .route(
            "/user",
            route_get(|session: Session| async move {
                let user: Option<Value> = session.get("user").await?;
                Ok::<_, cloakroom::Error>(user.map(|u| u.to_string()).unwrap_or_default())
            }),
        )
        .layer(layer)
}

#[tokio::test]
async fn a_request_writes_express_json_with_the_cookie_ttl() {
    let url = standalone_url();
    let (store, prefix) = standalone_store().await;
    let app = counter_app(
        store,
        CookieOptions::new().with_max_age(Duration::from_secs(90)),
    );
    let before = Timestamp::now();
    let reply = get(&app, "/", None).await;
    assert_eq!(reply.body, "views 1");
    let cookie = reply.session_cookie("connect.sid").unwrap();
    let key = format!("{prefix}{}", cookie.session_id());

    let stored = redis_cli(&url, &["GET", &key]);
    // express's JSON exactly: cookie first, its fields in express's order, then the data.
    let expires = stored
        .strip_prefix(r#"{"cookie":{"originalMaxAge":90000,"expires":""#)
        .and_then(|rest| rest.strip_suffix(r#"","httpOnly":true,"path":"/"},"views":1}"#))
        .unwrap_or_else(|| panic!("not express's shape: {stored}"));
    let expires = Timestamp::parse_iso8601(expires).expect("an ISO-8601 date with milliseconds");
    assert_eq!(expires.to_iso8601().len(), "2026-11-22T09:36:51.973Z".len());
    let off = expires.millis_since(before.add_millis(90_000));
    assert!(
        (0..2000).contains(&off),
        "expires is {off} ms off now + maxAge"
    );
    // The Set-Cookie and the stored JSON come from the same instant, as in express.
    assert_eq!(cookie.expires(), Some(expires.to_http_date().as_str()));

    let ttl = ttl_of(&url, &key);
    assert!((89..=90).contains(&ttl), "TTL {ttl}, want ceil(90 s)");

    // The second request reads and rewrites the same key.
    let again = get(&app, "/", Some(&reply.cookie_pair("connect.sid"))).await;
    assert_eq!(again.body, "views 2");
    assert!(redis_cli(&url, &["GET", &key]).ends_with(r#","views":2}"#));
}

#[tokio::test]
async fn a_browser_session_cookie_gets_the_store_ttl() {
    let url = standalone_url();
    for (builder, prefix, want) in [
        {
            let (builder, prefix) = unique();
            (builder, prefix, 86_400)
        },
        {
            let (builder, prefix) = unique();
            (builder.with_ttl(Duration::from_secs(600)), prefix, 600)
        },
    ] {
        let store = builder.build().await.unwrap();
        assert_eq!(store.default_ttl(), Some(Duration::from_secs(want as u64)));
        // No maxAge: a browser-session cookie, stored with `expires: null`.
        let app = counter_app(store, CookieOptions::new());
        let reply = get(&app, "/", None).await;
        let cookie = reply.session_cookie("connect.sid").unwrap();
        assert_eq!(cookie.expires(), None);
        let key = format!("{prefix}{}", cookie.session_id());
        assert_eq!(
            redis_cli(&url, &["GET", &key]),
            r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"views":1}"#
        );
        let ttl = ttl_of(&url, &key);
        assert!((want - 1..=want).contains(&ttl), "TTL {ttl}, want {want}");
    }
}

#[tokio::test]
async fn a_session_written_by_express_is_read_and_its_ttl_kept_by_touch() {
    let url = standalone_url();
    let (store, prefix) = standalone_store().await;
    let app = counter_app(
        store.clone(),
        CookieOptions::new().with_max_age(Duration::from_secs(60)),
    );
    let reply = get(&app, "/", None).await;
    let pair = reply.cookie_pair("connect.sid");
    let key = format!(
        "{prefix}{}",
        reply.session_cookie("connect.sid").unwrap().session_id()
    );

    // connect-redis writes the session as an Express app changed it, with its own TTL.
    let expires = Timestamp::now().add_millis(60_000).to_iso8601();
    let from_node = format!(
        r#"{{"cookie":{{"originalMaxAge":60000,"expires":"{expires}","httpOnly":true,"path":"/"}},"views":7,"user":{{"name":"ünï","roles":["admin"]}}}}"#
    );
    redis_cli(&url, &["SET", &key, &from_node, "EX", "30"]);

    // A request that only reads: the data comes through, and the middleware touches the key
    // (EXPIRE to the cookie's 60 s) without rewriting what Node wrote.
    let read = get(&app, "/user", Some(&pair)).await;
    assert_eq!(read.body, r#"{"name":"ünï","roles":["admin"]}"#);
    assert_eq!(redis_cli(&url, &["GET", &key]), from_node);
    let ttl = ttl_of(&url, &key);
    assert!((59..=60).contains(&ttl), "touch set TTL {ttl}, want 60");

    // A request that changes it continues from Node's data.
    let changed = get(&app, "/", Some(&pair)).await;
    assert_eq!(changed.body, "views 8");
}

#[tokio::test]
async fn touch_is_expire_only_and_never_creates() {
    let url = standalone_url();
    let (store, prefix) = standalone_store().await;
    let id = Id::generate();
    let key = format!("{prefix}{}", id.as_str());
    let short = cloakroom_testkit::record(json!({"a": 1}), Some(Duration::from_secs(10)));
    cloakroom_testkit::write(&store, &id, &short, None).await;
    let written = redis_cli(&url, &["GET", &key]);
    let long = cloakroom_testkit::record(json!({"b": 2}), Some(Duration::from_secs(1000)));
    store.touch(&id, &long).await.unwrap();
    assert_eq!(
        redis_cli(&url, &["GET", &key]),
        written,
        "touch rewrote the value"
    );
    assert!((999..=1000).contains(&ttl_of(&url, &key)));

    let loaded = store.get(&id).await.unwrap().unwrap();
    let reported = loaded.expires_at.unwrap();
    let off = reported
        .millis_since(Timestamp::now().add_millis(1_000_000))
        .abs();
    assert!(
        off < 2000,
        "expires_at follows the touched TTL, {off} ms off"
    );

    let unknown = Id::generate();
    store.touch(&unknown, &long).await.unwrap();
    let unknown_key = format!("{prefix}{}", unknown.as_str());
    assert_eq!(redis_cli(&url, &["EXISTS", &unknown_key]), "0");
}

/// A second store on the standalone server with `prefix`, as another process sharing it.
async fn another_process(prefix: &str) -> RedisStore {
    RedisStore::builder(standalone_url())
        .with_prefix(prefix)
        .build()
        .await
        .expect("connect to CLOAKROOM_REDIS_URL")
}

/// A read asks for the key's TTL (`PTTL`) only when this process does not know it: when the
/// process did not write, touch or read the session last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_asks_for_the_ttl_only_when_this_process_does_not_know_it() {
    let url = standalone_url();
    let (this, prefix) = standalone_store().await;
    let other = another_process(&prefix).await;
    // The compare-and-set script loaded once, so no NOSCRIPT retry shows below.
    let warm = Id::generate();
    let warm_record = cloakroom_testkit::record(json!({}), Some(HOUR));
    let version = cloakroom_testkit::write(&this, &warm, &warm_record, None).await;
    cloakroom_testkit::write(&this, &warm, &warm_record, Some(&version)).await;

    let monitor = Monitor::start(&url);
    let id = Id::generate();
    let first = cloakroom_testkit::record(json!({ "views": 1 }), Some(HOUR));
    let version = cloakroom_testkit::write(&this, &id, &first, None).await;
    // A new session is not remembered (many are never read): the first read asks, then the
    // process knows.
    let asked = this.get(&id).await.unwrap().unwrap().expires_at;
    assert!(asked.is_some());
    assert_eq!(this.get(&id).await.unwrap().unwrap().expires_at, asked);
    other.get(&id).await.unwrap().unwrap();
    // An update is remembered by the process that made it; the other's memory no longer
    // matches what it reads, so it answers with the cookie's expiry, then asks again.
    let mut second = first.clone();
    second.data_mut().insert("views".into(), json!(2));
    cloakroom_testkit::write(&this, &id, &second, Some(&version)).await;
    this.get(&id).await.unwrap().unwrap();
    assert_eq!(
        other.get(&id).await.unwrap().unwrap().expires_at,
        second.cookie().expires()
    );
    other.get(&id).await.unwrap().unwrap();
    this.touch(&id, &second).await.unwrap();
    this.get(&id).await.unwrap().unwrap();
    this.destroy(&id).await.unwrap();
    assert!(this.get(&id).await.unwrap().is_none());
    let sentinel = format!("{prefix}sentinel");
    redis_cli(&url, &["EXISTS", &sentinel]);
    assert_eq!(
        monitor.commands_until(id.as_str(), &sentinel),
        [
            "SET", "GETRANGE", "PTTL", "GETRANGE", "GETRANGE", "PTTL", "EVALSHA", "lua GET",
            "lua SET", "GETRANGE", "GETRANGE", "GETRANGE", "PTTL", "EXPIRE", "GETRANGE", "DEL",
            "GETRANGE", "PTTL",
        ],
        "the write; this process's two reads (with PTTL, then without); the other's read (with); \
         the compare-and-set; this process's read (without); the other's read of a value it \
         did not know (without) and the next (with); the touch; this process's read (without); \
         the destroy; the read after it (with)"
    );
}

/// What a read reports of the key's expiry, asked or remembered, is never later than Redis's
/// own, and close to it.
#[tokio::test]
async fn a_reported_expiry_is_never_later_than_the_key_expires() {
    let url = standalone_url();
    let (this, prefix) = standalone_store().await;
    let other = another_process(&prefix).await;
    let id = Id::generate();
    let key = format!("{prefix}{}", id.as_str());
    // What a store reports against the key's expiry by Redis, bracketed by the clock around
    // the question: not after its end, and under 2 s before its start.
    let check = |reported: Option<Timestamp>, what: &str| {
        let reported = reported.unwrap_or_else(|| panic!("{what}: no expiry reported"));
        let before = Timestamp::now();
        let pttl: i64 = redis_cli(&url, &["PTTL", &key]).parse().unwrap();
        let (earliest, latest) = (before.add_millis(pttl), Timestamp::now().add_millis(pttl));
        assert!(
            reported <= latest,
            "{what}: {} ms late",
            reported.millis_since(latest)
        );
        assert!(
            earliest.millis_since(reported) < 2_000,
            "{what}: {} ms early",
            earliest.millis_since(reported)
        );
    };
    let record = cloakroom_testkit::record(json!({ "views": 1 }), Some(HOUR));
    cloakroom_testkit::write(&this, &id, &record, None).await;
    check(
        this.get(&id).await.unwrap().unwrap().expires_at,
        "remembered from the write",
    );
    check(other.get(&id).await.unwrap().unwrap().expires_at, "asked");
    let longer = cloakroom_testkit::record(json!({ "views": 2 }), Some(2 * HOUR));
    this.touch(&id, &longer).await.unwrap();
    check(
        this.get(&id).await.unwrap().unwrap().expires_at,
        "remembered from the touch",
    );
    let remembered = other.get(&id).await.unwrap().unwrap().expires_at.unwrap();
    assert!(
        remembered.millis_since(Timestamp::now()) < 3_600_000,
        "the other process still remembers the hour before the touch, which errs early"
    );
    let shorter = cloakroom_testkit::record(json!({ "views": 2 }), Some(Duration::from_secs(60)));
    this.touch(&id, &shorter).await.unwrap();
    check(
        this.get(&id).await.unwrap().unwrap().expires_at,
        "a touch that shortens",
    );
}

#[tokio::test]
async fn a_record_already_expired_is_deleted_not_written() {
    let url = standalone_url();
    let (store, prefix) = standalone_store().await;
    let id = Id::generate();
    let key = format!("{prefix}{}", id.as_str());
    let live = cloakroom_testkit::record(json!({}), Some(Duration::from_secs(60)));
    let version = cloakroom_testkit::write(&store, &id, &live, None).await;
    let mut expired = live.clone();
    expired
        .cookie_mut()
        .set_expires(Some(Timestamp::now().add_millis(-1)));
    // Through the compare-and-set script, and as a new session.
    cloakroom_testkit::write(&store, &id, &expired, Some(&version)).await;
    assert_eq!(redis_cli(&url, &["EXISTS", &key]), "0");
    let new = Id::generate();
    cloakroom_testkit::write(&store, &new, &expired, None).await;
    let new_key = format!("{prefix}{}", new.as_str());
    assert_eq!(redis_cli(&url, &["EXISTS", &new_key]), "0");
}

#[tokio::test]
async fn cluster_scans_reach_every_primary() {
    let urls = cluster_urls();
    let (store, prefix) = cluster_store().await;
    let hour = Some(Duration::from_secs(3600));
    for n in 0..60 {
        let record = cloakroom_testkit::record(json!({"n": n}), hour);
        cloakroom_testkit::write(&store, &Id::generate(), &record, None).await;
    }
    // Each node holds some of them (60 random ids over 3 primaries), so a count of 60 shows
    // that every primary was scanned.
    let pattern = format!("{prefix}*");
    for url in &urls {
        let here = redis_cli(url, &["--scan", "--pattern", &pattern])
            .lines()
            .count();
        assert!(here > 0, "no keys on {url}: the test proves nothing");
    }
    assert_eq!(store.len().await.unwrap(), 60);
    let mut numbers: Vec<u64> = store
        .all()
        .await
        .unwrap()
        .iter()
        .map(|(_, record)| record.data()["n"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..60).collect::<Vec<_>>());
    store.clear().await.unwrap();
    assert_eq!(store.len().await.unwrap(), 0);
}

#[tokio::test]
async fn undecodable_values_are_decode_errors_that_quote_nothing() {
    let url = standalone_url();
    let (store, prefix) = standalone_store().await;
    let id = Id::generate();
    let key = format!("{prefix}{}", id.as_str());
    redis_cli(
        &url,
        &["SET", &key, r#"{"cookie":"top-secret"}"#, "EX", "60"],
    );
    let error = store.get(&id).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Decode);
    assert!(!error.is_transient());
    let chain = error_chain(&error);
    assert!(!chain.contains("top-secret"), "{chain}");
    assert!(!chain.contains(id.as_str()), "{chain}");

    // Another type under the key: the server's error, as Backend.
    redis_cli(&url, &["DEL", &key]);
    redis_cli(&url, &["RPUSH", &key, "top-secret"]);
    let error = store.get(&id).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Backend);
    let chain = error_chain(&error);
    assert!(!chain.contains(id.as_str()), "{chain}");
    redis_cli(&url, &["DEL", &key]);
}

#[tokio::test]
async fn debug_shows_settings_not_connections() {
    let (store, prefix) = standalone_store().await;
    let debug = format!("{store:?}");
    assert!(
        debug.starts_with("RedisStore { topology: \"standalone\""),
        "{debug}"
    );
    assert!(debug.contains(&prefix));
    assert!(
        !debug.contains("redis://") && !debug.contains("127.0.0.1"),
        "{debug}"
    );
}

#[tokio::test]
async fn connecting_to_nothing_fails_fast_and_transient() {
    // A port nothing listens on: refused at once, a few times, then reported.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let error = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let error = RedisStore::connect("not a url").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Backend);
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = format!("{error} {error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(&format!(" / {cause} {cause:?}"));
        source = cause.source();
    }
    chain
}

// The owner index.

const HOUR: Duration = Duration::from_secs(3600);

/// A record that `passport.user` says `owner` owns, living `max_age`.
fn owned_by(owner: &str, max_age: Duration) -> cloakroom::Record {
    cloakroom_testkit::record(
        json!({ "passport": { "user": owner }, "views": 1 }),
        Some(max_age),
    )
}

/// The documented index key of `owner`: `<prefix>owner:{<UTF-8 bytes in lowercase hex>}`.
fn index_key(prefix: &str, owner: &str) -> String {
    let hex: String = owner.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}owner:{{{hex}}}")
}

/// `redis-cli` on the server a store uses: `-c` follows Cluster redirections.
struct Cli {
    url: String,
    cluster: bool,
}

impl Cli {
    fn standalone() -> Self {
        Cli {
            url: standalone_url(),
            cluster: false,
        }
    }

    fn cluster() -> Self {
        Cli {
            url: cluster_urls().remove(0),
            cluster: true,
        }
    }

    fn run(&self, args: &[&str]) -> String {
        if !self.cluster {
            return redis_cli(&self.url, args);
        }
        let mut with_redirects = vec!["-c"];
        with_redirects.extend_from_slice(args);
        redis_cli(&self.url, &with_redirects)
    }
}

/// The ids `owner` has, as the store finds them.
async fn ids_of(store: &RedisStore, owner: &str) -> Vec<String> {
    let mut ids: Vec<String> = store
        .sessions_of(owner)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.as_str().to_owned())
        .collect();
    ids.sort_unstable();
    ids
}

fn sorted(ids: &[&Id]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    ids.sort_unstable();
    ids
}

/// `redis-cli MONITOR` on the standalone server, started by this test and killed when dropped.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    fn start(url: &str) -> Self {
        let mut child = Command::new("redis-cli")
            .arg("-u")
            .arg(url)
            .arg("MONITOR")
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-cli must be installed (./scripts/test.sh installs it)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let monitor = Monitor { child, lines };
        assert_eq!(monitor.next_line(), "OK", "MONITOR did not start");
        monitor
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("MONITOR printed nothing for 10 s")
    }

    /// The commands naming `marker`, as `name` (from a client) or `lua name` (from inside a
    /// script), up to the first line that names `sentinel`.
    fn commands_until(&self, marker: &str, sentinel: &str) -> Vec<String> {
        let mut commands = Vec::new();
        loop {
            let line = self.next_line();
            if line.contains(sentinel) {
                return commands;
            }
            if !line.contains(marker) {
                continue;
            }
            // `<time> [<db> <client or lua>] "NAME" "arg" ...`
            let (origin, command) = line
                .split_once("] ")
                .unwrap_or_else(|| panic!("not a MONITOR line: {line}"));
            let name = command.split('"').nth(1).unwrap_or_default().to_uppercase();
            if origin.ends_with(" lua") {
                commands.push(format!("lua {name}"));
            } else {
                commands.push(name);
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_without_an_owner_cost_the_commands_they_always_did() {
    let url = standalone_url();
    let (store, prefix) = standalone_store().await;
    let owner = cloakroom_testkit::unique_name("alice-");
    // Every script loaded once, so no NOSCRIPT retry shows below.
    let warm = Id::generate();
    let version = cloakroom_testkit::write(&store, &warm, &owned_by(&owner, HOUR), None).await;
    // A rewrite of an owned session loads the owned-set script (a new one needs no script).
    let version =
        cloakroom_testkit::write(&store, &warm, &owned_by(&owner, 2 * HOUR), Some(&version)).await;
    let unowned = cloakroom_testkit::record(json!({ "views": 1 }), Some(HOUR));
    cloakroom_testkit::write(&store, &warm, &unowned, Some(&version)).await;
    store.touch(&warm, &owned_by(&owner, HOUR)).await.unwrap();
    store.destroy(&warm).await.unwrap();

    let monitor = Monitor::start(&url);
    let id = Id::generate();
    let version = cloakroom_testkit::write(&store, &id, &unowned, None).await;
    let mut changed = unowned.clone();
    changed.data_mut().insert("views".into(), json!(2));
    cloakroom_testkit::write(&store, &id, &changed, Some(&version)).await;
    store.touch(&id, &changed).await.unwrap();
    store.destroy(&id).await.unwrap();
    let sentinel = format!("{prefix}sentinel-1");
    redis_cli(&url, &["EXISTS", &sentinel]);
    assert_eq!(
        monitor.commands_until(&prefix, &sentinel),
        ["SET", "EVALSHA", "lua GET", "lua SET", "EXPIRE", "DEL"],
        "a session without an owner: SET NX, the compare-and-set script, EXPIRE, DEL, and \
         nothing about an index"
    );

    // An owned one: a new session is its index's commands then SET NX, pipelined (Redis 7),
    // and `PEXPIREAT … NX` after when `GT` set nothing (here: the index outlives the session);
    // a rewrite and a touch are one script each. One write in four prunes the index too.
    let id = Id::generate();
    let version = cloakroom_testkit::write(&store, &id, &owned_by(&owner, HOUR), None).await;
    cloakroom_testkit::write(&store, &id, &owned_by(&owner, HOUR), Some(&version)).await;
    store.touch(&id, &owned_by(&owner, 2 * HOUR)).await.unwrap();
    let sentinel = format!("{prefix}sentinel-2");
    redis_cli(&url, &["EXISTS", &sentinel]);
    let from_client: Vec<String> = monitor
        .commands_until(&prefix, &sentinel)
        .into_iter()
        .filter(|name| !name.starts_with("lua "))
        .collect();
    let prunes = usize::from(from_client.get(1).map(String::as_str) == Some("ZREMRANGEBYSCORE"));
    let mut expected = vec![
        "ZADD",
        "PEXPIREAT",
        "SET",
        "PEXPIREAT",
        "EVALSHA",
        "EVALSHA",
    ];
    if prunes == 1 {
        expected.insert(1, "ZREMRANGEBYSCORE");
    }
    assert_eq!(from_client, expected);
    drop(monitor);

    let pattern = format!("{prefix}owner:*");
    let indexes = redis_cli(&url, &["--scan", "--pattern", &pattern]);
    assert_eq!(
        indexes,
        index_key(&prefix, &owner),
        "only the owner has an index"
    );
}

/// The index key's TTL outlasts its latest member, and members past their expiry leave within
/// the owner's next few writes; a destroyed session leaves on reading (standalone) or is
/// filtered out.
async fn the_index_expires_and_prunes_itself(store: RedisStore, prefix: String, cli: Cli) {
    let owner = cloakroom_testkit::unique_name("alice-");
    let key = index_key(&prefix, &owner);
    let long = Id::generate();
    cloakroom_testkit::write(&store, &long, &owned_by(&owner, 2 * HOUR), None).await;
    let pttl = |cli: &Cli| -> i64 { cli.run(&["PTTL", &key]).parse().unwrap() };
    let two_hours_and_slack = 2 * 3_600_000 + 30_000;
    assert!(
        (two_hours_and_slack - 5_000..=two_hours_and_slack).contains(&pttl(&cli)),
        "the index lives as long as its latest member, and the slack: {}",
        pttl(&cli)
    );
    // A shorter session does not shorten it.
    let short = Id::generate();
    cloakroom_testkit::write(&store, &short, &owned_by(&owner, HOUR / 6), None).await;
    assert!(pttl(&cli) > two_hours_and_slack - 5_000);

    // Members long expired (as an owner whose sessions all ended leaves them), and one that
    // expired within the slack.
    let now = Timestamp::now().as_millis();
    let (old, recent) = (now - 3_600_000, now - 1_000);
    cli.run(&["ZADD", &key, &old.to_string(), "expired-long-ago"]);
    cli.run(&["ZADD", &key, &recent.to_string(), "expired-just-now"]);
    assert_eq!(cli.run(&["ZCARD", &key]), "4");
    // About one write in sixteen prunes: 320 writes without one would take a broken prune
    // (or odds of 1 in 10^9).
    let mut later = Vec::new();
    while !cli.run(&["ZSCORE", &key, "expired-long-ago"]).is_empty() {
        assert!(later.len() < 320, "320 owned writes and no prune");
        let id = Id::generate();
        cloakroom_testkit::write(&store, &id, &owned_by(&owner, HOUR), None).await;
        later.push(id);
    }
    assert_eq!(
        cli.run(&["ZSCORE", &key, "expired-just-now"]),
        recent.to_string()
    );
    assert_eq!(cli.run(&["ZCARD", &key]), (3 + later.len()).to_string());
    let mut live = vec![&long, &short];
    live.extend(&later);
    assert_eq!(ids_of(&store, &owner).await, sorted(&live));

    // A destroyed session is not found. Standalone, reading removes its member; in Cluster
    // the member stays until its score passes (it could be a write in flight).
    store.destroy(&short).await.unwrap();
    live.retain(|id| *id != &short);
    assert_eq!(ids_of(&store, &owner).await, sorted(&live));
    let member = cli.run(&["ZSCORE", &key, short.as_str()]);
    if cli.cluster {
        assert_ne!(member, "");
    } else {
        assert_eq!(member, "");
        // As is the member that expired just now, whose key is gone too.
        assert_eq!(cli.run(&["ZSCORE", &key, "expired-just-now"]), "");
    }

    // `clear` removes the indexes with the sessions.
    store.clear().await.unwrap();
    assert_eq!(cli.run(&["EXISTS", &key]), "0");
}

#[tokio::test]
async fn standalone_index_expires_and_prunes_itself() {
    let (store, prefix) = standalone_store().await;
    the_index_expires_and_prunes_itself(store, prefix, Cli::standalone()).await;
}

#[tokio::test]
async fn cluster_index_expires_and_prunes_itself() {
    let (store, prefix) = cluster_store().await;
    the_index_expires_and_prunes_itself(store, prefix, Cli::cluster()).await;
}

/// An owner text with braces, spaces and non-ASCII makes a well-formed key, whose hash tag is
/// the whole encoded owner: in Cluster, the owner's index has one slot whatever it holds.
async fn any_owner_text_works(store: RedisStore, prefix: String, cli: Cli) {
    let unique = cloakroom_testkit::unique_name("");
    let awkward = format!("{{ü}} }}{{ a b {unique} Ω{{");
    let plain = format!("{{ü}}{unique}");
    let (first, second, other) = (Id::generate(), Id::generate(), Id::generate());
    cloakroom_testkit::write(&store, &first, &owned_by(&awkward, HOUR), None).await;
    cloakroom_testkit::write(&store, &second, &owned_by(&awkward, HOUR), None).await;
    cloakroom_testkit::write(&store, &other, &owned_by(&plain, HOUR), None).await;
    assert_eq!(ids_of(&store, &awkward).await, sorted(&[&first, &second]));
    assert_eq!(ids_of(&store, &plain).await, sorted(&[&other]));

    let key = index_key(&prefix, &awkward);
    assert_eq!(cli.run(&["ZCARD", &key]), "2");
    if cli.cluster {
        let hex = key
            .strip_prefix(&format!("{prefix}owner:{{"))
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap();
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            cli.run(&["CLUSTER", "KEYSLOT", &key]),
            cli.run(&["CLUSTER", "KEYSLOT", hex]),
            "the encoded owner is the key's hash tag"
        );
    }
}

#[tokio::test]
async fn standalone_any_owner_text_works() {
    let (store, prefix) = standalone_store().await;
    any_owner_text_works(store, prefix, Cli::standalone()).await;
}

#[tokio::test]
async fn cluster_any_owner_text_works() {
    let (store, prefix) = cluster_store().await;
    any_owner_text_works(store, prefix, Cli::cluster()).await;
}

/// A session an Express app signed in through connect-redis (which knows nothing of the
/// index) is found after `reindex`, not before; one that cloakroom touches is indexed by the
/// touch.
async fn express_sessions_are_indexed_by_reindex_or_touch(
    store: RedisStore,
    prefix: String,
    cli: Cli,
) {
    let owner = cloakroom_testkit::unique_name("alice-");
    let expires = Timestamp::now().add_millis(3_600_000).to_iso8601();
    let from_node = format!(
        r#"{{"cookie":{{"originalMaxAge":3600000,"expires":"{expires}","httpOnly":true,"path":"/"}},"passport":{{"user":"{owner}"}}}}"#
    );
    let (reindexed, touched) = (Id::generate(), Id::generate());
    for id in [&reindexed, &touched] {
        let key = format!("{prefix}{}", id.as_str());
        cli.run(&["SET", &key, &from_node, "EX", "3600"]);
    }
    // And one without an owner, which reindex leaves alone.
    let anonymous = format!("{prefix}{}", Id::generate().as_str());
    cli.run(&[
        "SET",
        &anonymous,
        r#"{"cookie":{"path":"/"}}"#,
        "EX",
        "3600",
    ]);
    assert!(ids_of(&store, &owner).await.is_empty());

    let loaded = store.get(&touched).await.unwrap().unwrap();
    store.touch(&touched, &loaded.record).await.unwrap();
    assert_eq!(ids_of(&store, &owner).await, sorted(&[&touched]));

    assert_eq!(store.reindex().await.unwrap(), 2);
    let found = store.sessions_of(&owner).await.unwrap();
    assert_eq!(found.len(), 2);
    for (id, loaded) in found {
        let stored = store.get(&id).await.unwrap().unwrap();
        assert_eq!(loaded.version, stored.version);
        assert_eq!(loaded.record, stored.record);
    }
    // Running it again changes nothing.
    assert_eq!(store.reindex().await.unwrap(), 2);
    assert_eq!(
        ids_of(&store, &owner).await,
        sorted(&[&reindexed, &touched])
    );
}

#[tokio::test]
async fn standalone_express_sessions_are_indexed_by_reindex_or_touch() {
    let (store, prefix) = standalone_store().await;
    express_sessions_are_indexed_by_reindex_or_touch(store, prefix, Cli::standalone()).await;
}

#[tokio::test]
async fn cluster_express_sessions_are_indexed_by_reindex_or_touch() {
    let (store, prefix) = cluster_store().await;
    express_sessions_are_indexed_by_reindex_or_touch(store, prefix, Cli::cluster()).await;
}

#[tokio::test]
async fn a_custom_owner_path_decides_the_owner() {
    let url = standalone_url();
    let (builder, prefix) = unique();
    let store = builder
        .with_owner_path(OwnerPath::new("account.id").unwrap())
        .build()
        .await
        .unwrap();
    assert_eq!(store.owner_path().to_string(), "account.id");
    let number = Id::generate();
    let record = cloakroom_testkit::record(
        json!({ "account": { "id": 42 }, "passport": { "user": "alice" } }),
        Some(HOUR),
    );
    cloakroom_testkit::write(&store, &number, &record, None).await;
    assert_eq!(ids_of(&store, "42").await, sorted(&[&number]));
    assert!(ids_of(&store, "alice").await.is_empty());
    assert_eq!(
        redis_cli(&url, &["EXISTS", &index_key(&prefix, "alice")]),
        "0"
    );
    assert_eq!(redis_cli(&url, &["EXISTS", &index_key(&prefix, "42")]), "1");

    // Another handle with the default path reads the owner elsewhere.
    let default = RedisStore::builder(url)
        .with_prefix(&prefix)
        .build()
        .await
        .unwrap();
    assert!(ids_of(&default, "42").await.is_empty());
}
