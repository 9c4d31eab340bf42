//! PostgresStore against a real PostgreSQL: the conformance suite, pruning, name validation,
//! undecodable rows, error kinds and the owner index.
#![cfg(feature = "postgres")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloakroom::store::postgres::{InvalidName, PostgresStore};
use cloakroom::store::{Condition, ErrorKind, OwnerIndex, SessionStore};
use cloakroom::{Id, Timestamp};
use cloakroom_testkit::{record, server_url, unique_name, write};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

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
cloakroom_testkit::owner_index_suite!(pair);

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

/// The ids `sessions_of` returns, sorted.
async fn ids_of(store: &PostgresStore, owner: &str) -> Vec<String> {
    let mut ids: Vec<String> = store
        .sessions_of(owner)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.as_str().to_owned())
        .collect();
    ids.sort();
    ids
}

/// A row as express-session with passport writes it (through connect-pg-simple), owned by
/// `user` (JSON text).
fn express_row(table: &str, sid: &str, user: &str) -> String {
    format!(
        "INSERT INTO {table} (sid, sess, expire) VALUES ('{sid}', \
         '{{\"cookie\":{{\"originalMaxAge\":3600000,\"expires\":\"2999-01-01T00:00:00.000Z\",\
         \"secure\":false,\"httpOnly\":true,\"path\":\"/\"}},\"passport\":{{\"user\":{user}}}}}', \
         now() + interval '1 hour')"
    )
}

#[tokio::test]
async fn a_custom_owner_path_is_the_one_indexed_and_read() {
    let schema = unique_name("cloakroom_path_");
    let store = PostgresStore::builder(postgres_url())
        .with_schema_name(&schema)
        .unwrap()
        .with_create_table_if_missing(true)
        .with_owner_path("account.id".parse().unwrap())
        .build()
        .await
        .unwrap();
    assert_eq!(store.owner_path().to_string(), "account.id");
    let (by_account, by_passport) = (Id::generate(), Id::generate());
    let minute = Some(Duration::from_secs(60));
    write(
        &store,
        &by_account,
        &record(json!({"account": {"id": "x"}}), minute),
        None,
    )
    .await;
    write(
        &store,
        &by_passport,
        &record(json!({"passport": {"user": "x"}}), minute),
        None,
    )
    .await;
    assert_eq!(ids_of(&store, "x").await, [by_account.as_str()]);
    let (index,): (String,) = sqlx::query_as(
        "SELECT indexdef::text FROM pg_indexes WHERE schemaname = $1 AND indexname = 'session_owner_idx'",
    )
    .bind(&schema)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(index.contains("'{account,id}'"), "{index}");
}

/// Rows connect-pg-simple wrote are indexed too, and read exactly as `get` reads them; the
/// database's text of a value that owns nothing is not taken for an owner.
#[tokio::test]
async fn rows_written_by_express_are_found_as_get_finds_them() {
    let schema = unique_name("cloakroom_express_");
    let store = store_in(&schema, None).await;
    let table = format!("\"{schema}\".session");
    execute(&store, &express_row(&table, "express-x", "\"x\"")).await;
    execute(&store, &express_row(&table, "express-42", "42")).await;
    execute(&store, &express_row(&table, "express-float", "4.5")).await;

    let found = store.sessions_of("x").await.unwrap();
    assert_eq!(found.len(), 1);
    let (id, loaded) = &found[0];
    assert_eq!(id.as_str(), "express-x");
    let got = store.get(id).await.unwrap().unwrap();
    assert_eq!(loaded.version, got.version);
    assert_eq!(loaded.expires_at, got.expires_at);
    assert_eq!(loaded.record, got.record);

    assert_eq!(ids_of(&store, "42").await, ["express-42"]);
    assert!(
        ids_of(&store, "4.5").await.is_empty(),
        "a float owns nothing"
    );
}

/// `#>>` fails on escapes text cannot hold (`\u0000`, a lone surrogate), which `json` accepts:
/// sessions holding them are still written, by this store or by Express, and still indexed.
#[tokio::test]
async fn escapes_the_database_cannot_read_as_text_fail_no_write() {
    let schema = unique_name("cloakroom_escapes_");
    let store = store_in(&schema, None).await;
    let table = format!("\"{schema}\".session");
    let hour = Some(Duration::from_secs(3600));

    let with_nul = Id::generate();
    let data = json!({"note": "a\u{0}b", "passport": {"user": "x"}, "after": "\u{0}"});
    write(&store, &with_nul, &record(data, hour), None).await;
    // Text that reads `\u0000` is no escape: such a session takes the quick path.
    let with_text = Id::generate();
    let data = json!({"note": "\\u0000 \\\\", "passport": {"user": "x"}});
    write(&store, &with_text, &record(data, hour), None).await;
    let mut expected = vec![with_nul.as_str(), with_text.as_str()];
    expected.sort_unstable();
    assert_eq!(ids_of(&store, "x").await, expected);

    // JavaScript's JSON.stringify writes a lone surrogate as an escape: Express's write goes
    // through; this store cannot decode the session, for `sessions_of` as for `get`.
    let lone = format!(
        "INSERT INTO {table} (sid, sess, expire) VALUES ('lone', \
         '{{\"cookie\":{{}},\"note\":\"\\ud800\\u0000\",\"passport\":{{\"user\":\"y\"}}}}', \
         now() + interval '1 hour')"
    );
    execute(&store, &lone).await;
    let error = store.sessions_of("y").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Decode);
    assert_eq!(
        store
            .get(&Id::from_string("lone"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Decode
    );
}

/// A table made before the owner index (by connect-pg-simple, or an older version of this
/// store) gets it from the next store that is allowed to create tables.
#[tokio::test]
async fn an_existing_table_gets_the_owner_index() {
    let schema = unique_name("cloakroom_upgrade_");
    let first = store_in(&schema, None).await;
    execute(
        &first,
        &format!("DROP INDEX \"{schema}\".session_owner_idx"),
    )
    .await;
    let owned = Id::generate();
    let minute = Some(Duration::from_secs(60));
    write(
        &first,
        &owned,
        &record(json!({"passport": {"user": "x"}}), minute),
        None,
    )
    .await;
    assert_eq!(
        ids_of(&first, "x").await,
        [owned.as_str()],
        "found without the index too"
    );
    let second = store_in(&schema, None).await;
    let (indexes,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'session_owner_idx'",
    )
    .bind(&schema)
    .fetch_one(second.pool())
    .await
    .unwrap();
    assert_eq!(indexes, 1);
    assert_eq!(ids_of(&second, "x").await, [owned.as_str()]);
}

/// The store's own owner query, as its connection prepared it, is planned on the owner index,
/// with the parameters' values (a custom plan) and without (a generic plan, which PostgreSQL
/// may switch to after a few runs).
#[tokio::test]
async fn the_owner_query_uses_the_owner_index() {
    let schema = unique_name("cloakroom_explain_");
    // One connection: what the store prepared, the test sees.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&postgres_url())
        .await
        .unwrap();
    let store = PostgresStore::builder_with_pool(pool)
        .with_schema_name(&schema)
        .unwrap()
        .with_create_table_if_missing(true)
        .with_prune_interval(None)
        .build()
        .await
        .unwrap();
    let table = format!("\"{schema}\".session");
    let cookie = r#"{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}"#;
    execute(
        &store,
        &format!(
            "INSERT INTO {table} (sid, sess, expire) \
             SELECT 'owned-' || n, ('{{\"cookie\":{cookie},\"passport\":{{\"user\":\"user-' \
             || n % 1000 || '\"}}}}')::json, now() + interval '1 hour' \
             FROM generate_series(1, 3000) n"
        ),
    )
    .await;
    execute(
        &store,
        &format!(
            "INSERT INTO {table} (sid, sess, expire) \
             SELECT 'anonymous-' || n, '{{\"cookie\":{cookie}}}', now() + interval '1 hour' \
             FROM generate_series(1, 3000) n"
        ),
    )
    .await;
    execute(&store, &format!("ANALYZE {table}")).await;
    assert_eq!(
        ids_of(&store, "user-7").await,
        ["owned-1007", "owned-2007", "owned-7"]
    );

    let (name,): (String,) = sqlx::query_as(
        "SELECT name FROM pg_prepared_statements \
         WHERE statement LIKE 'SELECT sid,%' AND statement LIKE '%#>>%'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    let now = Timestamp::now().as_millis() / 1000;
    for mode in ["force_custom_plan", "force_generic_plan"] {
        execute(&store, &format!("SET plan_cache_mode = {mode}")).await;
        let plan: Vec<(String,)> =
            sqlx::query_as(&format!("EXPLAIN EXECUTE {name}('user-7', {now}, 1048576)"))
                .fetch_all(store.pool())
                .await
                .unwrap();
        let plan: Vec<String> = plan.into_iter().map(|(line,)| line).collect();
        assert!(
            plan.iter().any(|line| line.contains("session_owner_idx")),
            "{mode}: {plan:#?}"
        );
    }
    execute(&store, "RESET plan_cache_mode").await;
}

/// A role that does not own an existing table cannot add the owner index to it: the store
/// still builds (logging a warning), and finds sessions by owner without the index.
#[tokio::test]
async fn a_role_that_cannot_create_the_owner_index_still_gets_a_store() {
    let schema = unique_name("cloakroom_notowner_");
    let owner = store_in(&schema, None).await;
    execute(
        &owner,
        &format!("DROP INDEX \"{schema}\".session_owner_idx"),
    )
    .await;
    let role = unique_name("cloakroom_app_");
    let password = unique_name("pw_");
    for statement in [
        format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"),
        format!("GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\""),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON \"{schema}\".session TO \"{role}\""),
    ] {
        execute(&owner, &statement).await;
    }
    let as_role: PgConnectOptions = postgres_url().parse().unwrap();
    let as_role = as_role.username(&role).password(&password);
    let pool = PgPoolOptions::new().connect_with(as_role).await.unwrap();
    let app = PostgresStore::builder_with_pool(pool)
        .with_schema_name(&schema)
        .unwrap()
        .with_create_table_if_missing(true)
        .with_prune_interval(None)
        .build()
        .await
        .expect("builds without the index");
    let (indexes,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'session_owner_idx'",
    )
    .bind(&schema)
    .fetch_one(owner.pool())
    .await
    .unwrap();
    assert_eq!(indexes, 0, "the role could not create it");
    let id = Id::generate();
    let hour = Some(Duration::from_secs(3600));
    write(
        &app,
        &id,
        &record(json!({"passport": {"user": "x"}}), hour),
        None,
    )
    .await;
    assert_eq!(ids_of(&app, "x").await, [id.as_str()]);
    app.pool().close().await;
    drop(app);
    for statement in [
        format!("DROP OWNED BY \"{role}\""),
        format!("DROP ROLE \"{role}\""),
    ] {
        execute(&owner, &statement).await;
    }
}

/// A store on a pool of one connection, in a schema of its own, and a second pool for the
/// test's own statements.
async fn one_connection_store() -> (PostgresStore, sqlx::PgPool, String) {
    one_connection_store_with_timeout(Duration::from_secs(5)).await
}

async fn one_connection_store_with_timeout(
    timeout: Duration,
) -> (PostgresStore, sqlx::PgPool, String) {
    let schema = unique_name("cloakroom_batch_");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&postgres_url())
        .await
        .unwrap();
    let store = PostgresStore::builder_with_pool(pool)
        .with_schema_name(&schema)
        .unwrap()
        .with_create_table_if_missing(true)
        .with_prune_interval(None)
        .with_timeout(timeout)
        .build()
        .await
        .unwrap();
    let own = PgPoolOptions::new()
        .max_connections(2)
        .connect(&postgres_url())
        .await
        .unwrap();
    // Spelled as the store's statements spell it.
    (store, own, format!("\"{schema}\".\"session\""))
}

/// Waits until the store's connection runs a query that waits for a lock, and returns that
/// query's text and its backend's pid.
async fn blocked_query(own: &sqlx::PgPool, table: &str) -> (String, i32) {
    let mut found = None;
    eventually("the store's query waits for the table lock", async || {
        found = sqlx::query_as::<_, (String, i32)>(
            "SELECT query, pid FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'",
        )
        .bind(table)
        .fetch_optional(own)
        .await
        .unwrap();
        found.is_some()
    })
    .await;
    found.unwrap()
}

/// Reads that wait for a connection are answered by one query, and each gets its own row:
/// a live session its data, an unknown or expired id nothing, an id read twice its row twice.
#[tokio::test]
async fn reads_waiting_for_a_connection_are_answered_together_each_with_its_own_row() {
    let (store, own, table) = one_connection_store().await;
    let hour = Some(Duration::from_secs(3600));
    let mut live = Vec::new();
    for n in 0..10 {
        let id = Id::generate();
        write(&store, &id, &record(json!({ "n": n }), hour), None).await;
        live.push((id, n));
    }
    let expired = Id::generate();
    write(&store, &expired, &record(json!({}), hour), None).await;
    sqlx::query(&format!(
        "UPDATE {table} SET expire = to_timestamp(0) WHERE sid = $1"
    ))
    .bind(expired.as_str())
    .execute(&own)
    .await
    .unwrap();

    // The store's only connection is taken, so every read waits for it.
    let held = store.pool().acquire().await.unwrap();
    let store = Arc::new(store);
    let mut reads = Vec::new();
    let ids = live.iter().map(|(id, n)| (id.clone(), Some(*n))).chain([
        (live[3].0.clone(), Some(3)),
        (Id::generate(), None),
        (expired.clone(), None),
    ]);
    for (id, expected) in ids {
        let store = Arc::clone(&store);
        reads.push(tokio::spawn(async move {
            let loaded = store.get(&id).await.unwrap();
            (
                loaded.map(|loaded| loaded.record.data()["n"].clone()),
                expected,
            )
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Held by the test, the table lock stops the store's next query where it can be seen.
    let mut locker = own.begin().await.unwrap();
    sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut *locker)
        .await
        .unwrap();
    drop(held);
    let (query, _) = blocked_query(&own, &table).await;
    assert!(query.contains("= ANY($1::text[])"), "{query}");
    locker.rollback().await.unwrap();
    for read in reads {
        let (got, expected) = read.await.unwrap();
        assert_eq!(got, expected.map(|n| json!(n)));
    }
}

/// When the query that reads a batch fails (here, its connection is ended), each read of the
/// batch reads alone: none fails for it.
#[tokio::test]
async fn a_failed_batch_leaves_each_read_to_read_alone() {
    let (store, own, table) = one_connection_store().await;
    let hour = Some(Duration::from_secs(3600));
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = Id::generate();
        write(&store, &id, &record(json!({ "n": n }), hour), None).await;
        ids.push(id);
    }
    let held = store.pool().acquire().await.unwrap();
    let store = Arc::new(store);
    let mut reads = Vec::new();
    for (n, id) in ids.into_iter().enumerate() {
        let store = Arc::clone(&store);
        reads.push((n, tokio::spawn(async move { store.get(&id).await })));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut locker = own.begin().await.unwrap();
    sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut *locker)
        .await
        .unwrap();
    drop(held);
    let (query, pid) = blocked_query(&own, &table).await;
    assert!(query.contains("= ANY($1::text[])"), "{query}");
    let (ended,): (bool,) = sqlx::query_as("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&own)
        .await
        .unwrap();
    assert!(ended);
    locker.rollback().await.unwrap();
    for (n, read) in reads {
        let loaded = read.await.unwrap().unwrap().unwrap();
        assert_eq!(loaded.record.data()["n"], json!(n));
    }
}

/// Compare-and-sets that wait for a connection run as one statement, and each gets its own
/// outcome: writes to different sessions are made; of two to one session from the same
/// version, exactly one; a stale version, an expired or a missing session write nothing.
#[tokio::test]
async fn writes_waiting_for_a_connection_run_together_each_with_its_own_outcome() {
    for mixed in [false, true] {
        let (store, own, table) = one_connection_store().await;
        let mut batching = PgBatching {
            pool: store.pool().clone(),
            own,
            table,
            held: None,
        };
        cloakroom_testkit::concurrency::writes_that_meet_in_a_batch_each_get_their_own_outcome(
            Arc::new(store),
            &mut batching,
            mixed,
        )
        .await;
    }
}

/// Holds the store's one connection, then lets its waiting writes go while a table lock shows
/// them as one `UPDATE … WITH ORDINALITY`.
struct PgBatching {
    pool: sqlx::PgPool,
    own: sqlx::PgPool,
    table: String,
    held: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl cloakroom_testkit::concurrency::Batching for PgBatching {
    async fn expire(&self, id: &Id) {
        sqlx::query(&format!(
            "UPDATE {} SET expire = to_timestamp(0) WHERE sid = $1",
            self.table
        ))
        .bind(id.as_str())
        .execute(&self.own)
        .await
        .unwrap();
    }

    async fn hold(&mut self) {
        self.held = Some(self.pool.acquire().await.unwrap());
    }

    async fn release(&mut self) {
        let mut locker = self.own.begin().await.unwrap();
        sqlx::query(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            self.table
        ))
        .execute(&mut *locker)
        .await
        .unwrap();
        self.held = None;
        let (query, _) = blocked_query(&self.own, &self.table).await;
        assert!(query.contains("WITH ORDINALITY"), "{query}");
        locker.rollback().await.unwrap();
    }
}

/// A write whose batch is abandoned (the call running it timed out while the statement waited)
/// fails as transient and is not run again: the abandoned statement may still write it once the
/// table is free, and a write run again after its own would find itself and report a conflict,
/// which a caller retries, applying its change twice.
#[tokio::test]
async fn a_write_whose_batch_is_abandoned_fails_and_is_not_run_again() {
    let (store, own, table) = one_connection_store_with_timeout(Duration::from_millis(400)).await;
    let hour = Some(Duration::from_secs(3600));
    let mut sessions = Vec::new();
    for n in 0..3 {
        let id = Id::generate();
        let version = write(&store, &id, &record(json!({ "n": n }), hour), None).await;
        sessions.push((id, version));
    }
    let held = store.pool().acquire().await.unwrap();
    let store = Arc::new(store);
    let set = |(id, version): (Id, cloakroom::store::Version)| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let written = record(json!({ "written": true }), hour);
            store.set(&id, &written, Condition::version(&version)).await
        })
    };
    // The first write waits longest, so it takes the batch and its timeout runs out first.
    let first = set(sessions[0].clone());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let others: Vec<_> = sessions[1..].iter().cloned().map(set).collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut locker = own.begin().await.unwrap();
    sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut *locker)
        .await
        .unwrap();
    drop(held);
    let (query, _) = blocked_query(&own, &table).await;
    assert!(query.contains("WITH ORDINALITY"), "{query}");
    let error = first.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error:?}");
    locker.rollback().await.unwrap();
    // Not run again: each fails as transient (it may have been made).
    for other in others {
        let error = other.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{error:?}");
    }
}
