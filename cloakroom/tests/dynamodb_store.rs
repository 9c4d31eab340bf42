//! DynamoDbStore against dynalite (a DynamoDB stand-in, started by `scripts/test.sh`): the
//! conformance suites, connect-dynamodb's item layout and expiry, Node's items read as Node
//! reads them, undecodable items, error kinds and the owner index with and without its GSI.
#![cfg(feature = "dynamodb")]

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemInput;
use aws_sdk_dynamodb::operation::get_item::GetItemInput;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, KeySchemaElement, KeyType, ProvisionedThroughput,
    ScalarAttributeType,
};
use cloakroom::store::dynamodb::DynamoDbStore;
use cloakroom::store::{Condition, ErrorKind, OwnerIndex, SessionStore, SetOutcome};
use cloakroom::{Id, Timestamp};
use cloakroom_testkit::{record, server_url, unique_name, write};
use serde_json::json;

fn dynamodb_url() -> String {
    server_url(
        "CLOAKROOM_DYNAMODB_URL",
        "Run ./scripts/test.sh, which starts dynalite and sets it.",
    )
}

/// A builder on dynalite, with obviously fake credentials (dynalite checks none).
fn builder(table: &str) -> cloakroom::DynamoDbStoreBuilder {
    DynamoDbStore::builder()
        .with_endpoint_url(dynamodb_url())
        .with_region("us-east-1")
        .with_credentials("AKIDFAKEFAKEFAKE", "fake-secret-for-tests")
        .with_table_name(table)
}

/// A store on a table of its own, created by the store.
async fn fresh() -> DynamoDbStore {
    builder(&unique_name("cloakroom-"))
        .with_create_table_if_missing(true)
        .build()
        .await
        .unwrap()
}

async fn prune(store: &DynamoDbStore) -> usize {
    usize::try_from(store.prune_expired().await.unwrap()).unwrap()
}

/// Two stores with their own clients on one table, as two processes would have.
async fn pair() -> (DynamoDbStore, DynamoDbStore) {
    let table = unique_name("cloakroom-");
    let first = builder(&table)
        .with_create_table_if_missing(true)
        .build()
        .await
        .unwrap();
    let second = builder(&table).build().await.unwrap();
    (first, second)
}

// dynalite answers in about a millisecond: the suite's two load cases run smaller on it (2,000
// sessions, 3 rounds of 64 contending tasks) to keep the test run short.
cloakroom_testkit::conformance_suite!(
    fresh,
    prune = prune,
    largest_record = 400 * 1024,
    sessions = 2_000,
    rounds = 3
);
cloakroom_testkit::concurrency_suite!(pair);
cloakroom_testkit::owner_index_suite!(pair);

/// Creates a table as connect-dynamodb does: hash key `id`, no index, no TTL.
async fn create_table_as_node(client: &Client, table: &str) {
    client
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(5)
                .write_capacity_units(5)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    wait_active(client, table).await;
}

/// Waits until a table just created is `ACTIVE` (dynalite keeps it `CREATING` for 500 ms).
async fn wait_active(client: &Client, table: &str) {
    for _ in 0..200 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .unwrap();
        let status = described.table().and_then(|t| t.table_status()).unwrap();
        if status.as_str() == "ACTIVE" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("table {table} did not become active in 10 s");
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn n(text: &str) -> AttributeValue {
    AttributeValue::N(text.to_owned())
}

/// Writes an item as is, as Node (or a person) would.
async fn put_raw(store: &DynamoDbStore, item: &[(&str, AttributeValue)]) {
    let item: HashMap<String, AttributeValue> = item
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    store
        .client()
        .put_item()
        .table_name(store.table_name())
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
}

async fn get_raw(store: &DynamoDbStore, key: &str) -> Option<HashMap<String, AttributeValue>> {
    store
        .client()
        .get_item()
        .table_name(store.table_name())
        .key("id", s(key))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(text) | AttributeValue::N(text)) => text.clone(),
        other => panic!("{name} is {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_have_connect_dynamodb_layout() {
    let store = fresh().await;
    let id = Id::generate();
    let stored = record(json!({"user": "ü", "n": 1}), Some(Duration::from_secs(60)));
    let before = Timestamp::now();
    write(&store, &id, &stored, None).await;
    let after = Timestamp::now();
    let item = get_raw(&store, &format!("sess:{}", id.as_str()))
        .await
        .expect("the item is under sess:<sid>");
    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["expires", "id", "sess", "type"]);
    assert_eq!(text(&item, "type"), "connect-session");
    assert_eq!(text(&item, "sess"), stored.to_json());
    assert!(matches!(item["expires"], AttributeValue::N(_)));
    // floor(now / 1000) + maxAge / 1000, maxAge being the time left at the write.
    let expires: f64 = text(&item, "expires").parse().unwrap();
    let cookie_expires = stored.cookie().expires().unwrap().as_millis() as f64 / 1000.0;
    let floor = |t: Timestamp| t.as_millis().div_euclid(1000) as f64;
    let low = floor(before) + cookie_expires - after.as_millis() as f64 / 1000.0;
    let high = floor(after) + cookie_expires - before.as_millis() as f64 / 1000.0;
    assert!(
        low - 0.001 <= expires && expires <= high + 0.001,
        "{low} <= {expires} <= {high}"
    );

    // A browser-session cookie: now + one day, in whole seconds.
    let browser = Id::generate();
    write(&store, &browser, &record(json!({}), None), None).await;
    let item = get_raw(&store, &format!("sess:{}", browser.as_str()))
        .await
        .unwrap();
    let expires: i64 = text(&item, "expires").parse().expect("a whole number");
    let now_s = Timestamp::now().as_millis().div_euclid(1000);
    assert!((now_s + 86_400 - 2..=now_s + 86_400).contains(&expires));

    // An owned session carries its owner beside the item, for the index.
    let owned = Id::generate();
    let data = json!({"passport": {"user": "alice"}});
    write(&store, &owned, &record(data, None), None).await;
    let item = get_raw(&store, &format!("sess:{}", owned.as_str()))
        .await
        .unwrap();
    assert_eq!(text(&item, "owner"), "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefix_and_hash_key_are_options() {
    let table = unique_name("cloakroom-");
    let client = fresh().await.client().clone();
    // A table keyed `sid`, as connect-dynamodb's `hashKey: 'sid'` would have.
    client
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sid")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sid")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(5)
                .write_capacity_units(5)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    wait_active(&client, &table).await;
    let store = builder(&table)
        .with_hash_key("sid")
        .with_prefix("")
        .build()
        .await
        .unwrap();
    let id = Id::generate();
    write(&store, &id, &record(json!({"a": 1}), None), None).await;
    let item = client
        .get_item()
        .table_name(&table)
        .key("sid", s(id.as_str()))
        .send()
        .await
        .unwrap()
        .item
        .expect("no prefix");
    assert_eq!(text(&item, "type"), "connect-session");
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(store.all().await.unwrap()[0].0, id);
    store.clear().await.unwrap();
    assert!(store.get(&id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_items_are_read_as_node_reads_them() {
    let store = fresh().await;
    let now = Timestamp::now();
    let now_s = now.as_millis().div_euclid(1000);
    let json = r#"{"cookie":{"originalMaxAge":60000,"expires":"2030-01-01T00:00:00.000Z","httpOnly":true,"path":"/"},"n":1}"#;
    let node_item = |id: &Id, expires: Option<AttributeValue>| {
        let mut item = vec![
            ("id", s(&format!("sess:{}", id.as_str()))),
            ("type", s("connect-session")),
            ("sess", s(json)),
        ];
        if let Some(expires) = expires {
            item.push(("expires", expires));
        }
        item
    };

    // A fractional expires, as Node writes it: live, and its end rounded up to the second.
    let fractional = Id::generate();
    put_raw(
        &store,
        &node_item(&fractional, Some(n(&format!("{}.993", now_s + 59)))),
    )
    .await;
    let loaded = store.get(&fractional).await.unwrap().expect("live");
    assert_eq!(loaded.record.to_json(), json, "Node's JSON, byte for byte");
    assert_eq!(
        loaded.expires_at,
        Some(Timestamp::from_millis((now_s + 60) * 1000))
    );

    // Expired once floor(now) reaches it, as Node reads it; the item stays (as with Node).
    let expired = Id::generate();
    put_raw(
        &store,
        &node_item(&expired, Some(n(&(now_s - 1).to_string()))),
    )
    .await;
    assert!(store.get(&expired).await.unwrap().is_none());
    assert!(
        get_raw(&store, &format!("sess:{}", expired.as_str()))
            .await
            .is_some()
    );
    // ... and an expired item is free for a new session.
    write(&store, &expired, &record(json!({"new": true}), None), None).await;

    // No expires: never expires.
    let forever = Id::generate();
    put_raw(&store, &node_item(&forever, None)).await;
    let loaded = store.get(&forever).await.unwrap().expect("live");
    assert_eq!(loaded.expires_at, None);
    // ... and so is one whose `expires` is no number (Node's `+expires` is NaN): both are
    // saved over from what was loaded, and touched, as live sessions.
    let text_expires = Id::generate();
    put_raw(&store, &node_item(&text_expires, Some(s("soon")))).await;
    for id in [&forever, &text_expires] {
        let loaded = store.get(id).await.unwrap().expect("live");
        assert_eq!(loaded.expires_at, None);
        write(
            &store,
            id,
            &record(json!({"saved": true}), None),
            Some(&loaded.version),
        )
        .await;
        put_raw(&store, &node_item(id, Some(s("soon")))).await;
        store
            .touch(id, &record(json!({}), Some(Duration::from_secs(60))))
            .await
            .unwrap();
        let touched = get_raw(&store, &format!("sess:{}", id.as_str()))
            .await
            .expect("still there");
        assert!(
            matches!(touched.get("expires"), Some(AttributeValue::N(_))),
            "the touch set a numeric expires"
        );
    }
    // The stub Node's touch leaves on a destroyed session: absent, and free for a new session,
    // and a touch does not bring it back.
    let stub = Id::generate();
    put_raw(
        &store,
        &[
            ("id", s(&format!("sess:{}", stub.as_str()))),
            ("expires", n(&(now_s + 600).to_string())),
        ],
    )
    .await;
    assert!(store.get(&stub).await.unwrap().is_none());
    store
        .touch(&stub, &record(json!({}), Some(Duration::from_secs(60))))
        .await
        .unwrap();
    assert!(store.get(&stub).await.unwrap().is_none());
    write(&store, &stub, &record(json!({"taken": true}), None), None).await;
    assert!(store.get(&stub).await.unwrap().is_some());

    // `sess` as a map is no session to Node either.
    let map = Id::generate();
    put_raw(
        &store,
        &[
            ("id", s(&format!("sess:{}", map.as_str()))),
            ("sess", AttributeValue::M(HashMap::new())),
        ],
    )
    .await;
    assert!(store.get(&map).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_write_between_load_and_save_is_a_conflict() {
    let store = fresh().await;
    let id = Id::generate();
    let minute = Some(Duration::from_secs(60));
    write(&store, &id, &record(json!({"n": 1}), minute), None).await;
    let loaded = store.get(&id).await.unwrap().unwrap();
    // Express rewrites the item whole (no attribute of ours survives it).
    let node_json = record(json!({"n": 2, "by": "node"}), minute).to_json();
    let expires = (Timestamp::now().as_millis() / 1000 + 60).to_string();
    put_raw(
        &store,
        &[
            ("id", s(&format!("sess:{}", id.as_str()))),
            ("expires", n(&expires)),
            ("type", s("connect-session")),
            ("sess", s(&node_json)),
        ],
    )
    .await;
    let outcome = store
        .set(
            &id,
            &record(json!({"n": 2, "by": "rust"}), minute),
            Condition::version(&loaded.version),
        )
        .await
        .unwrap();
    assert_eq!(outcome, SetOutcome::Conflict, "Node's write is kept");
    let now = store.get(&id).await.unwrap().unwrap();
    assert_eq!(now.record.data()["by"], json!("node"));
    // Loaded again, Rust's write goes through.
    write(
        &store,
        &id,
        &record(json!({"n": 3, "by": "rust"}), minute),
        Some(&now.version),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_fails_that_session_only() {
    let store = fresh().await;
    let bad = Id::from_string("secret-bad-sid");
    put_raw(
        &store,
        &[
            ("id", s("sess:secret-bad-sid")),
            ("type", s("connect-session")),
            ("sess", s(r#"{"cookie":{},"secret-data":"#)),
        ],
    )
    .await;
    let good = Id::generate();
    write(&store, &good, &record(json!({"ok": true}), None), None).await;

    let error = store.get(&bad).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Decode);
    let message = format!("{error} {:?} {}", error, error.source().unwrap());
    assert!(!message.contains("secret"), "{message}");
    assert!(
        store.get(&good).await.unwrap().is_some(),
        "others still load"
    );
    // The bad session can be ended, and its id reused.
    store.destroy(&bad).await.unwrap();
    write(&store, &bad, &record(json!({}), None), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_the_item_limit_are_refused_whole() {
    let store = fresh().await;
    let id = Id::generate();
    let big = record(json!({"blob": "x".repeat(400 * 1024)}), None);
    let error = store.set(&id, &big, Condition::absent()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TooLarge);
    assert!(
        get_raw(&store, &format!("sess:{}", id.as_str()))
            .await
            .is_none()
    );

    // A smaller limit of our own applies too, on write and on read.
    let small = builder(store.table_name())
        .with_max_record_size(100)
        .build()
        .await
        .unwrap();
    let medium = record(json!({"blob": "x".repeat(200)}), None);
    write(&store, &id, &medium, None).await;
    assert_eq!(
        small.get(&id).await.unwrap_err().kind(),
        ErrorKind::TooLarge
    );
    let other = Id::generate();
    assert_eq!(
        small
            .set(&other, &medium, Condition::absent())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::TooLarge
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_kinds_and_name_no_session() {
    // Nothing listens: unavailable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let store = DynamoDbStore::builder()
        .with_endpoint_url(format!("http://127.0.0.1:{port}"))
        .with_region("us-east-1")
        .with_credentials("AKIDFAKEFAKEFAKE", "fake-secret-for-tests")
        .with_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let id = Id::from_string("secret-sid");
    let error = store.get(&id).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error:?}");
    assert!(error.is_transient());
    assert!(!format!("{error:?}").contains("secret"), "{error:?}");

    // Accepts, never answers: a timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let store = DynamoDbStore::builder()
        .with_endpoint_url(format!("http://{address}"))
        .with_region("us-east-1")
        .with_credentials("AKIDFAKEFAKEFAKE", "fake-secret-for-tests")
        .with_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let error = store
        .set(
            &id,
            &record(json!({"secret": 1}), None),
            Condition::absent(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error:?}");
    held.abort();

    // No such table: DynamoDB refuses, not transient.
    let store = builder(&unique_name("cloakroom-missing-"))
        .build()
        .await
        .unwrap();
    let error = store.get(&id).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Backend, "{error:?}");
    let source = error.source().unwrap().to_string();
    assert_eq!(
        source,
        "DynamoDB GetItem failed: ResourceNotFoundException (HTTP 400)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_table_twice_is_fine() {
    let table = unique_name("cloakroom-");
    for _ in 0..2 {
        builder(&table)
            .with_create_table_if_missing(true)
            .build()
            .await
            .unwrap();
    }
}

/// A table connect-dynamodb created has no owner index: sessions are found by a consistent
/// scan, and sessions Express wrote are found once this store touches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_are_found_without_the_index_too() {
    let table = unique_name("cloakroom-node-");
    let first = fresh().await;
    create_table_as_node(first.client(), &table).await;
    let store = builder(&table).build().await.unwrap();
    let hour = Some(Duration::from_secs(3600));
    let mine = Id::generate();
    write(
        &store,
        &mine,
        &record(json!({"passport": {"user": "alice"}}), hour),
        None,
    )
    .await;
    let theirs = Id::generate();
    write(
        &store,
        &theirs,
        &record(json!({"passport": {"user": "bob"}}), hour),
        None,
    )
    .await;
    let found = store.sessions_of("alice").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, mine);

    // Written by Express: no owner attribute, so not found until touched here.
    let express = Id::generate();
    let express_record = record(json!({"passport": {"user": "alice"}}), hour);
    let expires = (Timestamp::now().as_millis() / 1000 + 3600).to_string();
    put_raw(
        &store,
        &[
            ("id", s(&format!("sess:{}", express.as_str()))),
            ("expires", n(&expires)),
            ("type", s("connect-session")),
            ("sess", s(&express_record.to_json())),
        ],
    )
    .await;
    assert_eq!(store.sessions_of("alice").await.unwrap().len(), 1);
    let version = store.get(&express).await.unwrap().unwrap().version;
    store.touch(&express, &express_record).await.unwrap();
    let mut ids: Vec<String> = store
        .sessions_of("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.as_str().to_owned())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![mine.as_str().to_owned(), express.as_str().to_owned()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert_eq!(
        store.get(&express).await.unwrap().unwrap().version,
        version,
        "the touch changed nothing of the session"
    );
}

/// A TCP proxy to dynalite that, once armed, forwards the next `PutItem` and its answer from
/// dynalite, but drops the connection instead of passing the answer on: a write that landed
/// with its answer lost.
struct LossyProxy {
    url: String,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    async fn start(target: &str) -> LossyProxy {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let target = target.strip_prefix("http://").unwrap().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = armed.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&target).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let saw_put = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let seen = saw_put.clone();
                let upstream = tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n) = client_read.read(&mut buffer).await {
                        // Marked before the request goes on, so its answer can't come back
                        // unmarked.
                        if String::from_utf8_lossy(&buffer[..n]).contains("PutItem") {
                            seen.store(true, Ordering::SeqCst);
                        }
                        if n == 0 || server_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let flag = flag.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n) = server_read.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        if saw_put.swap(false, Ordering::SeqCst)
                            && flag.swap(false, Ordering::SeqCst)
                        {
                            // The answer is lost: close the client's connection.
                            upstream.abort();
                            return;
                        }
                        if client_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        LossyProxy { url, armed, task }
    }

    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn fired(&self) -> bool {
        !self.armed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A write that landed but whose answer was lost is retried, and its retry's failed condition
/// is recognised as the write's own: written, not a conflict. A real conflict after a retry is
/// still one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_was_lost_is_found_written() {
    let direct = fresh().await;
    let proxy = LossyProxy::start(&dynamodb_url()).await;
    let store = builder(direct.table_name())
        .with_endpoint_url(proxy.url.clone())
        .build()
        .await
        .unwrap();
    let hour = Some(Duration::from_secs(3600));
    let id = Id::generate();

    proxy.arm();
    let first = record(json!({"n": 1}), hour);
    let outcome = store.set(&id, &first, Condition::absent()).await.unwrap();
    assert!(proxy.fired(), "the answer was dropped");
    assert!(matches!(outcome, SetOutcome::Written(_)), "{outcome:?}");

    let loaded = store.get(&id).await.unwrap().unwrap();
    proxy.arm();
    let second = record(json!({"n": 2}), hour);
    let outcome = store
        .set(&id, &second, Condition::version(&loaded.version))
        .await
        .unwrap();
    assert!(proxy.fired());
    assert!(matches!(outcome, SetOutcome::Written(_)), "{outcome:?}");
    assert_eq!(
        direct.get(&id).await.unwrap().unwrap().record.data()["n"],
        json!(2)
    );

    // A stale version, answer dropped and retried: still a conflict.
    proxy.arm();
    let outcome = store
        .set(
            &id,
            &record(json!({"n": 3}), hour),
            Condition::version(&loaded.version),
        )
        .await
        .unwrap();
    assert_eq!(outcome, SetOutcome::Conflict);
    assert_eq!(
        direct.get(&id).await.unwrap().unwrap().record.data()["n"],
        json!(2)
    );
}

/// Counts the reads a client sends: `GetItem`s and `BatchGetItem`s.
#[derive(Clone, Debug, Default)]
struct ReadCalls(Arc<Mutex<(usize, usize)>>);

impl ReadCalls {
    /// A client for `store`'s server that counts its reads here.
    fn client_for(&self, store: &DynamoDbStore) -> Client {
        Client::from_conf(
            store
                .client()
                .config()
                .to_builder()
                .interceptor(self.clone())
                .build(),
        )
    }

    /// `GetItem`s and `BatchGetItem`s sent since the last call.
    fn take(&self) -> (usize, usize) {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Intercept for ReadCalls {
    fn name(&self) -> &'static str {
        "ReadCalls"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        let mut counts = self.0.lock().unwrap();
        if input.downcast_ref::<GetItemInput>().is_some() {
            counts.0 += 1;
        } else if input.downcast_ref::<BatchGetItemInput>().is_some() {
            counts.1 += 1;
        }
        Ok(())
    }
}

/// Reads `ids` at once, each in a task of its own.
async fn read_at_once(store: &DynamoDbStore, ids: &[Id]) -> Vec<Option<serde_json::Value>> {
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                let loaded = store.get(&id).await.unwrap();
                loaded.map(|loaded| serde_json::Value::Object(loaded.record.data().clone()))
            })
        })
        .collect();
    let mut found = Vec::new();
    for task in tasks {
        found.push(task.await.unwrap());
    }
    found
}

/// A store on a fresh table, a second store on it that sends one read at a time, and the count
/// of the second one's reads.
async fn one_read_at_a_time() -> (DynamoDbStore, DynamoDbStore, ReadCalls) {
    let direct = fresh().await;
    let calls = ReadCalls::default();
    let store = builder(direct.table_name())
        .with_client(calls.client_for(&direct))
        .with_reads_in_flight(1)
        .build()
        .await
        .unwrap();
    (direct, store, calls)
}

/// Reads beyond the turns the store allows wait and go together, as one `BatchGetItem`, and
/// each gets its own item: a session read twice gets it twice, an unknown or expired one none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_beyond_their_turns_go_together() {
    let (direct, store, calls) = one_read_at_a_time().await;
    let hour = Some(Duration::from_secs(3600));
    let mut ids = Vec::new();
    let mut expected = Vec::new();
    for n in 0..12 {
        let id = Id::generate();
        write(&direct, &id, &record(json!({"n": n}), hour), None).await;
        ids.push(id);
        expected.push(Some(n));
    }
    ids.push(ids[3].clone());
    expected.push(Some(3));
    let expired = Id::generate();
    let now_s = Timestamp::now().as_millis().div_euclid(1000);
    put_raw(
        &direct,
        &[
            ("id", s(&format!("sess:{}", expired.as_str()))),
            ("expires", n(&(now_s - 1).to_string())),
            ("type", s("connect-session")),
            ("sess", s(r#"{"cookie":{"path":"/"},"n":99}"#)),
        ],
    )
    .await;
    ids.push(expired);
    expected.push(None);
    ids.push(Id::generate());
    expected.push(None);

    calls.take();
    let found = read_at_once(&store, &ids).await;
    let found: Vec<Option<i64>> = found
        .iter()
        .map(|data| data.as_ref().map(|data| data["n"].as_i64().unwrap()))
        .collect();
    assert_eq!(found, expected);
    let (gets, batches) = calls.take();
    assert!(batches >= 1, "no BatchGetItem ({gets} GetItems)");
    assert!(
        gets + batches < ids.len() / 2,
        "{gets} GetItems and {batches} BatchGetItems for {} reads",
        ids.len()
    );

    // One read at a time: a `GetItem` each, as without batching.
    for (id, expected) in ids.iter().zip(&expected).take(3) {
        let loaded = store.get(id).await.unwrap();
        assert_eq!(
            loaded.map(|loaded| loaded.record.data()["n"].as_i64().unwrap()),
            *expected
        );
    }
    assert_eq!(calls.take(), (3, 0));
}

/// A read DynamoDB leaves out of a batch (its answer would pass the size limit: dynalite's is
/// about 1.4 MB) is made again, alone, and still gets its item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_left_out_of_a_batch_are_made_alone() {
    let (direct, store, calls) = one_read_at_a_time().await;
    let hour = Some(Duration::from_secs(3600));
    let blob = "x".repeat(300 * 1024);
    let mut ids = Vec::new();
    for n in 0..8 {
        let id = Id::generate();
        write(
            &direct,
            &id,
            &record(json!({"n": n, "blob": blob}), hour),
            None,
        )
        .await;
        ids.push(id);
    }

    calls.take();
    let found = read_at_once(&store, &ids).await;
    for (n, data) in found.iter().enumerate() {
        let data = data.as_ref().expect("every session is found");
        assert_eq!(data["n"], json!(n));
        assert_eq!(data["blob"].as_str().map(str::len), Some(blob.len()));
    }
    let (gets, batches) = calls.take();
    assert!(batches >= 1, "no BatchGetItem ({gets} GetItems)");
    // The first read alone, then the batch, then each read it left out.
    assert!(gets >= 2, "no read was made again alone ({gets} GetItems)");
}
