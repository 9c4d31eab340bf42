//! PostgresStore against a real PostgreSQL: the conformance suite, pruning, name validation,
//! undecodable rows and error kinds.
#![cfg(feature = "postgres")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloakroom::store::postgres::{InvalidName, PostgresStore};
use cloakroom::store::{Condition, ErrorKind, SessionStore};
use cloakroom::{Id, Timestamp};
use cloakroom_testkit::{record, server_url, unique_name, write};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

fn postgres_url() -> String {
    server_url(
        "CLOAKROOM_POSTGRES_URL",
        "Run ./scripts/test.sh, which starts PostgreSQL and sets it.",
    )
}

/// A store in a schema of its own, created with connect-pg-simple's table.
async fn fresh() -> PostgresStore {
    store_in(&unique_name("cloakroom_"), None).await
}

async fn store_in(schema: &str, prune_interval: Option<Duration>) -> PostgresStore {
    PostgresStore::builder(postgres_url())
        .with_schema_name(schema)
        .unwrap()
        .with_create_table_if_missing(true)
        .with_prune_interval(prune_interval)
        .build()
        .await
        .unwrap()
}

async fn prune(store: &PostgresStore) -> usize {
    usize::try_from(store.prune_expired().await.unwrap()).unwrap()
}

/// Two stores with their own pools on one table, as two processes would have.
async fn pair() -> (PostgresStore, PostgresStore) {
    let schema = unique_name("cloakroom_");
    let first = store_in(&schema, None).await;
    let second = store_in(&schema, None).await;
    (first, second)
}

cloakroom_testkit::conformance_suite!(fresh, prune = prune);
cloakroom_testkit::concurrency_suite!(pair);
cloakroom_testkit::locking_suite!(pair);

async fn execute(store: &PostgresStore, sql: &str) {
    sqlx::query(sql).execute(store.pool()).await.unwrap();
}

async fn count(pool: &sqlx::PgPool, schema: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM \"{schema}\".session");
    let (count,): (i64,) = sqlx::query_as(&sql).fetch_one(pool).await.unwrap();
    count
}

/// Log lines, captured from `tracing`.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Single-threaded, so the pruning task logs to this test's subscriber.
#[tokio::test]
async fn the_pruning_task_survives_failures_and_stops_with_the_store() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Call sites first hit on another test's thread may have cached "nobody listens".
    tracing::callsite::rebuild_interest_cache();

    let schema = unique_name("cloakroom_prune_");
    let store = store_in(&schema, Some(Duration::from_millis(50))).await;
    let pool = store.pool().clone();
    let table = format!("\"{schema}\".session");
    let expired_row = format!(
        "INSERT INTO {table} (sid, sess, expire) VALUES ('secret-sid-' || gen_random_uuid(), \
         '{{\"cookie\":{{}}}}', to_timestamp(0))"
    );

    // Prunes.
    execute(&store, &expired_row).await;
    eventually("the task prunes", async || count(&pool, &schema).await == 0).await;

    // Fails while the table is gone, and says so.
    execute(&store, &format!("ALTER TABLE {table} RENAME TO moved")).await;
    eventually("a prune fails", async || {
        logs.text().contains("failed to prune expired sessions")
    })
    .await;
    let failures = || logs.text().matches("failed to prune").count();
    let seen = failures();
    eventually("another prune fails", async || failures() > seen).await;

    // Carries on once the table is back.
    execute(
        &store,
        &format!("ALTER TABLE \"{schema}\".moved RENAME TO session"),
    )
    .await;
    execute(&store, &expired_row).await;
    eventually("the task prunes again", async || {
        count(&pool, &schema).await == 0
    })
    .await;
    let text = logs.text();
    assert!(text.contains("WARN"), "{text}");
    assert!(!text.contains("secret-sid"), "ids never reach the log");

    // Stops with the store: an expired row outlives many intervals.
    drop(store);
    sqlx::query(&expired_row).execute(&pool).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&pool, &schema).await, 1, "the task stopped");
}

#[tokio::test]
async fn without_a_prune_interval_nothing_is_pruned_in_the_background() {
    let schema = unique_name("cloakroom_noprune_");
    let store = store_in(&schema, None).await;
    let id = Id::generate();
    let life = Some(Duration::from_millis(10));
    write(&store, &id, &record(json!({}), life), None).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(store.get(&id).await.unwrap().is_none(), "hidden");
    assert_eq!(count(store.pool(), &schema).await, 1, "but still there");
    assert_eq!(store.prune_expired().await.unwrap(), 1);
}

#[tokio::test]
async fn names_that_are_not_plain_identifiers_are_refused() {
    let builder = || PostgresStore::builder(postgres_url());
    for bad in [
        "",
        "1st",
        "has space",
        "quo\"te",
        "semi;colon",
        "dotted.name",
        "naïve",
    ] {
        assert_eq!(
            builder().with_table_name(bad).unwrap_err(),
            InvalidName::Table,
            "{bad:?}"
        );
        assert_eq!(
            builder().with_schema_name(bad).unwrap_err(),
            InvalidName::Schema,
            "{bad:?}"
        );
    }
    assert_eq!(
        builder().with_table_name("x".repeat(64)).unwrap_err(),
        InvalidName::Table
    );
    assert_eq!(
        builder().with_time_zone("UTC' --").unwrap_err(),
        InvalidName::TimeZone
    );
    let message = builder()
        .with_table_name("bad name")
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("invalid table name"), "{message}");
}

#[tokio::test]
async fn names_are_quoted_so_their_case_is_kept() {
    let schema = unique_name("Cloakroom_");
    let store = PostgresStore::builder(postgres_url())
        .with_schema_name(&schema)
        .unwrap()
        .with_table_name("WebSessions")
        .unwrap()
        .with_create_table_if_missing(true)
        .build()
        .await
        .unwrap();
    write(&store, &Id::generate(), &record(json!({}), None), None).await;
    let (table, index): (String, String) = sqlx::query_as(
        "SELECT tablename::text, indexname::text FROM pg_indexes \
         WHERE schemaname = $1 AND indexname LIKE 'IDX%'",
    )
    .bind(&schema)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        (table.as_str(), index.as_str()),
        ("WebSessions", "IDX_WebSessions_expire")
    );
    assert_eq!(store.len().await.unwrap(), 1);
}

#[tokio::test]
async fn the_longest_table_name_works() {
    let store = PostgresStore::builder(postgres_url())
        .with_schema_name(unique_name("cloakroom_long_"))
        .unwrap()
        .with_table_name("t".repeat(63))
        .unwrap()
        .with_create_table_if_missing(true)
        .build()
        .await
        .unwrap();
    let id = Id::generate();
    write(&store, &id, &record(json!({"n": 1}), None), None).await;
    assert!(store.get(&id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_missing_table_is_not_created_unless_asked() {
    let schema = unique_name("cloakroom_absent_");
    let store = PostgresStore::builder(postgres_url())
        .with_schema_name(&schema)
        .unwrap()
        .build()
        .await
        .unwrap();
    let error = store.get(&Id::generate()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Backend);
    let cause = error.source_error();
    assert_eq!(
        cause.as_database_error().unwrap().code().as_deref(),
        Some("42P01"),
        "undefined_table"
    );
}

/// The sqlx error behind a store error.
trait SourceError {
    fn source_error(&self) -> &sqlx::Error;
}

impl SourceError for cloakroom::store::Error {
    fn source_error(&self) -> &sqlx::Error {
        std::error::Error::source(self)
            .and_then(|source| source.downcast_ref::<sqlx::Error>())
            .expect("the driver's error is the source")
    }
}

#[tokio::test]
async fn a_row_that_is_not_a_session_is_a_decode_error_and_is_kept() {
    let schema = unique_name("cloakroom_decode_");
    let store = store_in(&schema, None).await;
    let table = format!("\"{schema}\".session");
    execute(
        &store,
        &format!(
            "INSERT INTO {table} (sid, sess, expire) \
             VALUES ('not-a-session', '{{\"cookie\":\"private data\"}}', now() + interval '1 hour')"
        ),
    )
    .await;
    let id = Id::from_string("not-a-session");
    let error = store.get(&id).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Decode);
    let described = format!("{error} {:?}", error);
    assert!(!described.contains("private data"), "{described}");
    assert!(!described.contains("not-a-session"), "{described}");
    assert_eq!(
        store.all().await.unwrap_err().kind(),
        ErrorKind::Decode,
        "all reports it too"
    );
    assert_eq!(
        count(store.pool(), &schema).await,
        1,
        "the row is left for a person to look at, not deleted"
    );
    // It is never overwritten by a new session, but it can be destroyed, and its id reused.
    let fresh = store
        .set(
            &id,
            &record(json!({"fixed": true}), None),
            Condition::absent(),
        )
        .await
        .unwrap();
    assert_eq!(fresh, cloakroom::store::SetOutcome::Conflict);
    store.destroy(&id).await.unwrap();
    write(&store, &id, &record(json!({"fixed": true}), None), None).await;
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().record.data()["fixed"],
        json!(true)
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_error() {
    // Nothing listens on port 1.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
        .unwrap();
    let store = PostgresStore::builder_with_pool(pool)
        .with_prune_interval(None)
        .build()
        .await
        .unwrap();
    let id = Id::generate();
    let error = store.get(&id).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error:?}");
    assert!(!format!("{error} {error:?}").contains(id.as_str()));
    let error = store
        .set(&id, &record(json!({}), None), Condition::absent())
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
}

#[tokio::test]
async fn reported_expiry_is_the_expire_column() {
    let store = fresh().await;
    let id = Id::generate();
    let expires = Timestamp::now().add_millis(3_600_000);
    let mut stored = record(json!({}), Some(Duration::from_secs(3600)));
    stored.cookie_mut().set_expires(Some(expires));
    write(&store, &id, &stored, None).await;
    let loaded = store.get(&id).await.unwrap().unwrap();
    // connect-pg-simple: Math.ceil(expires / 1000), in seconds.
    let expected = (expires.as_millis() + 999).div_euclid(1000) * 1000;
    assert_eq!(loaded.expires_at, Some(Timestamp::from_millis(expected)));
}
