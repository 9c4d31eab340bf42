//! MySqlStore against a real MariaDB: the conformance suite, express-mysql-session's table and
//! formats, pruning, name validation, undecodable rows, timeouts, error kinds and the owner
//! index.
#![cfg(feature = "mysql")]

use std::time::Duration;

use cloakroom::store::mysql::{InvalidName, MySqlStore};
use cloakroom::store::{Condition, ErrorKind, OwnerIndex, SessionStore, SetOutcome};
use cloakroom::{Id, Record, SessionCookie, Timestamp};
use cloakroom_testkit::{record, server_url, unique_name, write};
use serde_json::json;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

fn mysql_url() -> String {
    server_url(
        "CLOAKROOM_MYSQL_URL",
        "Run ./scripts/test.sh, which starts MariaDB and sets it.",
    )
}

/// A store on a table of its own, created with express-mysql-session's statement.
async fn fresh() -> MySqlStore {
    store_on(&unique_name("sessions_"), None).await
}

async fn store_on(table: &str, prune_interval: Option<Duration>) -> MySqlStore {
    MySqlStore::builder(mysql_url())
        .with_table_name(table)
        .unwrap()
        .with_create_table_if_missing(true)
        .with_prune_interval(prune_interval)
        .build()
        .await
        .unwrap()
}

async fn prune(store: &MySqlStore) -> usize {
    usize::try_from(store.prune_expired().await.unwrap()).unwrap()
}

/// Two stores with their own pools on one table, as two processes would have.
async fn pair() -> (MySqlStore, MySqlStore) {
    let table = unique_name("sessions_");
    let first = store_on(&table, None).await;
    let second = store_on(&table, None).await;
    (first, second)
}

cloakroom_testkit::conformance_suite!(fresh, prune = prune);
cloakroom_testkit::concurrency_suite!(pair);
cloakroom_testkit::locking_suite!(pair);
cloakroom_testkit::owner_index_suite!(pair);

async fn execute(pool: &MySqlPool, sql: &str) {
    sqlx::query(sql).execute(pool).await.unwrap();
}

async fn count(pool: &MySqlPool, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM `{table}`");
    let (count,): (i64,) = sqlx::query_as(&sql).fetch_one(pool).await.unwrap();
    count
}

/// `expires` and `data` of a row, as stored.
async fn row(pool: &MySqlPool, table: &str, id: &str) -> (i64, String) {
    let sql = format!(
        "SELECT CAST(expires AS SIGNED), CAST(data AS BINARY) FROM `{table}` WHERE session_id = ?"
    );
    let (expires, data): (i64, Vec<u8>) =
        sqlx::query_as(&sql).bind(id).fetch_one(pool).await.unwrap();
    (expires, String::from_utf8(data).unwrap())
}

/// express-mysql-session's `set`, as it runs it.
async fn express_set(pool: &MySqlPool, table: &str, id: &str, expires: i64, data: Option<&str>) {
    let sql = format!(
        "INSERT INTO `{table}` (`session_id`, `expires`, `data`) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE `expires` = VALUES(`expires`), `data` = VALUES(`data`)"
    );
    sqlx::query(&sql)
        .bind(id)
        .bind(expires)
        .bind(data)
        .execute(pool)
        .await
        .unwrap();
}

fn now_s() -> i64 {
    // Math.round(Date.now() / 1000)
    (Timestamp::now().as_millis() + 500).div_euclid(1000)
}

/// The table express-mysql-session 3.0.3 creates, column by column.
#[tokio::test]
async fn the_table_is_express_mysql_sessions() {
    let table = unique_name("sessions_");
    let store = store_on(&table, None).await;
    let columns: Vec<(String, String, Option<String>, String, String)> = sqlx::query_as(
        "SELECT COLUMN_NAME, COLUMN_TYPE, COLLATION_NAME, IS_NULLABLE, EXTRA \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(&table)
    .fetch_all(store.pool())
    .await
    .unwrap();
    let columns: Vec<_> = columns
        .iter()
        .map(|(name, ty, collation, nullable, extra)| {
            (
                name.as_str(),
                ty.as_str(),
                collation.as_deref(),
                nullable.as_str(),
                extra.as_str(),
            )
        })
        .collect();
    assert_eq!(
        columns,
        [
            ("session_id", "varchar(128)", Some("utf8mb4_bin"), "NO", ""),
            ("expires", "int(11) unsigned", None, "NO", ""),
            ("data", "mediumtext", Some("utf8mb4_bin"), "YES", ""),
            (
                "cloakroom_owner",
                "varchar(255)",
                Some("utf8mb4_bin"),
                "YES",
                "VIRTUAL GENERATED"
            ),
        ]
    );
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY INDEX_NAME",
    )
    .bind(&table)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            ("PRIMARY".to_owned(), "session_id".to_owned()),
            (format!("{table}_owner_idx"), "cloakroom_owner".to_owned()),
        ],
        "no index on expires, as express-mysql-session makes none"
    );
}

/// express-mysql-session's test vectors: a row it wrote is read, and the store writes back
/// the same bytes.
#[tokio::test]
async fn express_rows_are_read_and_written_back_byte_for_byte() {
    let table = unique_name("sessions_");
    let store = store_on(&table, None).await;
    let pool = store.pool();
    let vectors = [
        r#"{"cookie":{"originalMaxAge":60000,"expires":"2023-11-14T22:14:20.000Z","httpOnly":true,"path":"/"},"views":1}"#,
        r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"views":1}"#,
        r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"name":"Zoë ✓ 😀","z":{"b":1,"a":[1.5,null]}}"#,
    ];
    for (n, data) in vectors.into_iter().enumerate() {
        let id = format!("express-{n}");
        // Live, whatever the cookie says: express-mysql-session reads `expires` only.
        let expires = now_s() + 3600;
        express_set(pool, &table, &id, expires, Some(data)).await;
        let loaded = store
            .get(&Id::from_string(id.as_str()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(loaded.record.to_json(), data);
        assert_eq!(loaded.version.as_bytes(), Some(data.as_bytes()));
        assert_eq!(
            loaded.expires_at,
            Some(Timestamp::from_millis(expires * 1000))
        );
        // A compare-and-set of identical bytes still counts as written (CLIENT_FOUND_ROWS).
        let outcome = store
            .set(
                &Id::from_string(id.as_str()),
                &loaded.record,
                Condition::version(&loaded.version),
            )
            .await
            .unwrap();
        assert!(matches!(outcome, SetOutcome::Written(_)), "{outcome:?}");
    }
}

/// Ids are compared byte for byte (`utf8mb4_bin`), though the connection's collation
/// (`utf8mb4_unicode_ci`) would call `a` and `A`, or `e` and `é`, equal.
#[tokio::test]
async fn ids_are_compared_byte_for_byte() {
    let store = fresh().await;
    let ids = ["same-id", "SAME-ID", "samé-id"].map(Id::from_string);
    for (n, id) in ids.iter().enumerate() {
        write(&store, id, &record(json!({ "n": n }), None), None).await;
    }
    for (n, id) in ids.iter().enumerate() {
        let loaded = store.get(id).await.unwrap().unwrap();
        assert_eq!(loaded.record.data()["n"], json!(n));
    }
}

/// `expires` is `Math.round(cookie.expires / 1000)`; for a cookie without expiry,
/// `Math.round((now + expiration) / 1000)`; `data` is `JSON.stringify(session)`.
#[tokio::test]
async fn expires_and_data_are_written_as_express_mysql_session_writes_them() {
    let table = unique_name("sessions_");
    let store = store_on(&table, None).await;
    let pool = store.pool();
    // A whole second in an hour, plus 499 or 500 ms.
    let base = (Timestamp::now().as_millis() / 1000 + 3600) * 1000;
    for (extra, rounded) in [(499, base / 1000), (500, base / 1000 + 1)] {
        let id = Id::generate();
        let mut cookie = SessionCookie::default();
        cookie.set_expires(Some(Timestamp::from_millis(base + extra)));
        let mut data = serde_json::Map::new();
        data.insert("views".into(), json!(1));
        let stored = Record::new(cookie, data);
        write(&store, &id, &stored, None).await;
        let (expires, data) = row(pool, &table, id.as_str()).await;
        assert_eq!(expires, rounded, "+{extra} ms");
        assert_eq!(data, stored.to_json());
        let loaded = store.get(&id).await.unwrap().unwrap();
        assert_eq!(
            loaded.expires_at,
            Some(Timestamp::from_millis(rounded * 1000))
        );
    }

    // No expiry: now + one day (express-mysql-session's `expiration`), on set and on touch.
    let id = Id::generate();
    let mut data = serde_json::Map::new();
    data.insert("views".into(), json!(1));
    let stored = Record::new(SessionCookie::default(), data);
    let before = now_s();
    write(&store, &id, &stored, None).await;
    let after = now_s();
    let (expires, data) = row(pool, &table, id.as_str()).await;
    assert!(
        (before + 86_400..=after + 86_400).contains(&expires),
        "{expires}"
    );
    assert_eq!(
        data,
        r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"views":1}"#
    );
    execute(
        pool,
        &format!(
            "UPDATE `{table}` SET expires = expires - 1000 WHERE session_id = '{}'",
            id.as_str()
        ),
    )
    .await;
    let before = now_s();
    store.touch(&id, &stored).await.unwrap();
    let after = now_s();
    let (touched, untouched) = row(pool, &table, id.as_str()).await;
    assert!(
        (before + 86_400..=after + 86_400).contains(&touched),
        "{touched}"
    );
    assert_eq!(untouched, data, "a touch leaves data alone");
}

/// As express-mysql-session: an expired row is hidden but not deleted by a read, and it is
/// pruned with `expires < now`.
#[tokio::test]
async fn expired_rows_are_hidden_and_pruned() {
    let table = unique_name("sessions_");
    let store = store_on(&table, None).await;
    let pool = store.pool();
    let data = r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}}"#;
    express_set(pool, &table, "gone", now_s() - 10, Some(data)).await;
    express_set(pool, &table, "live", now_s() + 3600, Some(data)).await;
    assert!(store.get(&Id::from_string("gone")).await.unwrap().is_none());
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(count(pool, &table).await, 2, "a read deletes nothing");
    // A new session may take an expired row's id.
    let id = Id::from_string("gone");
    write(&store, &id, &record(json!({"n": 1}), None), None).await;
    assert!(store.get(&id).await.unwrap().is_some());
    express_set(pool, &table, "gone-too", now_s() - 10, Some(data)).await;
    assert_eq!(store.prune_expired().await.unwrap(), 1);
    assert_eq!(count(pool, &table).await, 2);
}

#[tokio::test]
async fn without_a_prune_interval_nothing_is_pruned_in_the_background() {
    let table = unique_name("sessions_noprune_");
    let store = store_on(&table, None).await;
    let id = Id::generate();
    let life = Some(Duration::from_millis(10));
    write(&store, &id, &record(json!({}), life), None).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(store.get(&id).await.unwrap().is_none(), "hidden");
    assert_eq!(count(store.pool(), &table).await, 1, "but still there");
    assert_eq!(store.prune_expired().await.unwrap(), 1);
}

#[tokio::test]
async fn the_pruning_task_deletes_expired_rows() {
    let table = unique_name("sessions_prune_");
    let store = store_on(&table, Some(Duration::from_millis(50))).await;
    let data = r#"{"cookie":{}}"#;
    express_set(store.pool(), &table, "expired", 1, Some(data)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(store.pool(), &table).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the task never pruned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A row written by hand that is not a session fails that session only, with a decode error
/// that quotes neither the id nor the data; the row is kept.
#[tokio::test]
async fn a_row_that_is_not_a_session_is_a_decode_error_for_that_session_only() {
    let table = unique_name("sessions_decode_");
    let store = store_on(&table, None).await;
    let pool = store.pool();
    let live = now_s() + 3600;
    express_set(
        pool,
        &table,
        "secret-malformed",
        live,
        Some("{\"cookie\":{\"private data\""),
    )
    .await;
    express_set(
        pool,
        &table,
        "secret-no-cookie",
        live,
        Some(r#"{"private":"data"}"#),
    )
    .await;
    express_set(pool, &table, "secret-null", live, None).await;
    let good = Id::generate();
    write(&store, &good, &record(json!({"fine": true}), None), None).await;

    for id in ["secret-malformed", "secret-no-cookie", "secret-null"] {
        let error = store.get(&Id::from_string(id)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Decode, "{id}: {error:?}");
        let described = format!("{error} {error:?}");
        assert!(!described.contains("private"), "{described}");
        assert!(!described.contains("secret-"), "{described}");
    }
    assert_eq!(
        store.get(&good).await.unwrap().unwrap().record.data()["fine"],
        json!(true),
        "other sessions are unaffected"
    );
    assert_eq!(store.all().await.unwrap_err().kind(), ErrorKind::Decode);
    assert_eq!(count(pool, &table).await, 4, "nothing is deleted");
    // Never overwritten by a new session; destroyed, its id can be reused.
    let id = Id::from_string("secret-malformed");
    let outcome = store
        .set(&id, &record(json!({}), None), Condition::absent())
        .await
        .unwrap();
    assert_eq!(outcome, SetOutcome::Conflict);
    store.destroy(&id).await.unwrap();
    write(&store, &id, &record(json!({"fixed": true}), None), None).await;
}

#[tokio::test]
async fn names_that_are_not_plain_identifiers_are_refused() {
    let builder = || MySqlStore::builder(mysql_url());
    for bad in [
        "",
        "1st",
        "has space",
        "back`tick",
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
            builder()
                .with_column_names(bad, "expires", "data")
                .unwrap_err(),
            InvalidName::Column,
            "{bad:?}"
        );
    }
    let message = builder()
        .with_column_names("a", "a", "b")
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("invalid column name"), "{message}");
}

/// express-mysql-session's `schema` option: another table and other column names.
#[tokio::test]
async fn custom_table_and_column_names_are_used() {
    let table = unique_name("Web_");
    let store = MySqlStore::builder(mysql_url())
        .with_table_name(&table)
        .unwrap()
        .with_column_names("sid", "expires_at", "payload")
        .unwrap()
        .with_create_table_if_missing(true)
        .with_prune_interval(None)
        .build()
        .await
        .unwrap();
    let id = Id::generate();
    let minute = Some(Duration::from_secs(60));
    write(
        &store,
        &id,
        &record(json!({"passport": {"user": "u1"}}), minute),
        None,
    )
    .await;
    let (sid, payload): (Vec<u8>, String) = sqlx::query_as(&format!(
        "SELECT sid, CAST(payload AS CHAR) FROM `{table}` WHERE expires_at > 0"
    ))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(sid, id.as_str().as_bytes());
    assert!(payload.contains("\"u1\""));
    assert_eq!(store.sessions_of("u1").await.unwrap().len(), 1);
    assert_eq!(store.len().await.unwrap(), 1);
}

#[tokio::test]
async fn a_missing_table_is_not_created_unless_asked() {
    let store = MySqlStore::builder(mysql_url())
        .with_table_name(unique_name("absent_"))
        .unwrap()
        .with_prune_interval(None)
        .build()
        .await
        .unwrap();
    let error = store.get(&Id::generate()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Backend);
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_error() {
    // Nothing listens on port 1.
    let pool = MySqlPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy("mysql://root@127.0.0.1:1/cloakroom")
        .unwrap();
    let store = MySqlStore::builder_with_pool(pool)
        .with_prune_interval(None)
        .build()
        .await
        .unwrap();
    let id = Id::generate();
    let error = store.get(&id).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(!format!("{error} {error:?}").contains(id.as_str()));
    let error = store
        .set(&id, &record(json!({}), None), Condition::absent())
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    let error = MySqlStore::connect("mysql://root@127.0.0.1:1/cloakroom")
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error:?}");
}

/// A call that waits on a row another transaction holds ends at the store's timeout, as a
/// transient [`ErrorKind::Timeout`]; the store works again once the row is free.
#[tokio::test]
async fn a_call_is_bounded_by_the_timeout() {
    let table = unique_name("sessions_timeout_");
    let store = MySqlStore::builder(mysql_url())
        .with_table_name(&table)
        .unwrap()
        .with_create_table_if_missing(true)
        .with_prune_interval(None)
        .with_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let id = Id::generate();
    let version = write(&store, &id, &record(json!({"n": 1}), None), None).await;
    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT session_id FROM `{table}` WHERE session_id = ? FOR UPDATE"
    ))
    .bind(id.as_str())
    .fetch_one(&mut *holder)
    .await
    .unwrap();
    let error = store
        .set(
            &id,
            &record(json!({"n": 2}), None),
            Condition::version(&version),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error:?}");
    assert!(error.is_transient());
    holder.rollback().await.unwrap();
    // The timed-out write may still have been applied: write over whatever is there now.
    let now = store.get(&id).await.unwrap().unwrap();
    write(
        &store,
        &id,
        &record(json!({"n": 3}), None),
        Some(&now.version),
    )
    .await;
}

#[tokio::test]
async fn reported_expiry_is_the_expires_column() {
    let store = fresh().await;
    let id = Id::generate();
    let expires = Timestamp::now().add_millis(3_600_000);
    let mut stored = record(json!({}), Some(Duration::from_secs(3600)));
    stored.cookie_mut().set_expires(Some(expires));
    write(&store, &id, &stored, None).await;
    let loaded = store.get(&id).await.unwrap().unwrap();
    // express-mysql-session: Math.round(expires / 1000), in seconds.
    let expected = (expires.as_millis() + 500).div_euclid(1000) * 1000;
    assert_eq!(loaded.expires_at, Some(Timestamp::from_millis(expected)));
}

/// The ids `sessions_of` returns, sorted.
async fn ids_of(store: &MySqlStore, owner: &str) -> Vec<String> {
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

fn passport(user: &str) -> String {
    format!(
        "{{\"cookie\":{{\"originalMaxAge\":3600000,\"expires\":\"2999-01-01T00:00:00.000Z\",\
         \"httpOnly\":true,\"path\":\"/\"}},\"passport\":{{\"user\":{user}}}}}"
    )
}

/// Whatever JSON Express writes, the owner column never fails its write; the owners Express
/// wrote are found as `get` finds them, and the database's text of a value that owns nothing
/// is not taken for an owner.
#[tokio::test]
async fn express_writes_never_fail_and_are_indexed() {
    let table = unique_name("sessions_express_");
    let store = store_on(&table, None).await;
    let pool = store.pool();
    let live = now_s() + 3600;
    let long = "é".repeat(400);
    let rows = [
        ("x", passport("\"x\"")),
        ("forty-two", passport("42")),
        ("float", passport("4.5")),
        ("true", passport("true")),
        ("object", passport("{\"id\":\"x\"}")),
        ("nul", passport("\"x\\u0000\"")),
        // JSON.stringify writes a lone surrogate as an escape.
        (
            "lone",
            r#"{"cookie":{},"note":"\udc00","passport":{"user":"y"}}"#.to_owned(),
        ),
        ("long", passport(&format!("\"{long}\""))),
        ("not-json", "{\"passport\":{\"user\":\"x\"".to_owned()),
        ("deep", format!("{}1{}", "[".repeat(5000), "]".repeat(5000))),
    ];
    for (id, data) in &rows {
        express_set(pool, &table, id, live, Some(data)).await;
    }
    express_set(pool, &table, "null", live, None).await;
    assert_eq!(count(pool, &table).await, 11, "every write went through");

    let found = store.sessions_of("x").await.unwrap();
    assert_eq!(found.len(), 1);
    let (id, loaded) = &found[0];
    assert_eq!(id.as_str(), "x");
    let got = store.get(id).await.unwrap().unwrap();
    assert_eq!(loaded.version, got.version);
    assert_eq!(loaded.expires_at, got.expires_at);
    assert_eq!(loaded.record, got.record);
    assert_eq!(ids_of(&store, "42").await, ["forty-two"]);
    assert!(
        ids_of(&store, "4.5").await.is_empty(),
        "a float owns nothing"
    );
    assert!(ids_of(&store, "1").await.is_empty(), "true owns nothing");
    assert_eq!(ids_of(&store, "x\u{0}").await, ["nul"]);
    assert_eq!(
        ids_of(&store, &long).await,
        ["long"],
        "longer than the index keeps"
    );
    // The lone surrogate is indexed; like `get`, `sessions_of` cannot decode it.
    assert_eq!(
        store.sessions_of("y").await.unwrap_err().kind(),
        ErrorKind::Decode
    );
}

/// A table express-mysql-session made gets the owner column from the first store allowed to
/// create tables; its rows are indexed at once.
#[tokio::test]
async fn an_existing_express_table_gets_the_owner_column() {
    let table = unique_name("sessions_upgrade_");
    let pool = MySqlPool::connect(&mysql_url()).await.unwrap();
    execute(
        &pool,
        &format!(
            "CREATE TABLE IF NOT EXISTS `{table}` (`session_id` varchar(128) COLLATE utf8mb4_bin \
             NOT NULL, `expires` int(11) unsigned NOT NULL, `data` mediumtext COLLATE utf8mb4_bin, \
             PRIMARY KEY (`session_id`)) ENGINE=InnoDB"
        ),
    )
    .await;
    express_set(
        &pool,
        &table,
        "before",
        now_s() + 3600,
        Some(&passport("\"u\"")),
    )
    .await;
    let store = store_on(&table, None).await;
    assert_eq!(ids_of(&store, "u").await, ["before"]);
    // A second store finds the column there.
    let again = store_on(&table, None).await;
    assert_eq!(ids_of(&again, "u").await, ["before"]);
}

/// A store on a pool of one connection, on a table of its own, and a second pool for the test's
/// own statements.
async fn one_connection_store() -> (MySqlStore, MySqlPool, String) {
    let table = unique_name("sessions_batch_");
    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .connect(&mysql_url())
        .await
        .unwrap();
    let store = MySqlStore::builder_with_pool(pool)
        .with_table_name(&table)
        .unwrap()
        .with_create_table_if_missing(true)
        .with_prune_interval(None)
        .build()
        .await
        .unwrap();
    let own = MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&mysql_url())
        .await
        .unwrap();
    (store, own, table)
}

/// Waits until a query on `table` waits for a table lock, and returns its text and its
/// connection's id.
async fn blocked_query(own: &MySqlPool, table: &str) -> (String, i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found: Option<(String, i64)> = sqlx::query_as(
            "SELECT CAST(INFO AS CHAR), ID FROM information_schema.PROCESSLIST \
             WHERE STATE LIKE 'Waiting for table%' AND INFO LIKE CONCAT('%', ?, '%')",
        )
        .bind(table)
        .fetch_optional(own)
        .await
        .unwrap();
        if let Some(found) = found {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the store's query to wait for the table lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Holds `LOCK TABLES … WRITE` on one connection of `own` until dropped (the connection is
/// then closed, which releases it).
async fn lock_table(own: &MySqlPool, table: &str) -> sqlx::pool::PoolConnection<sqlx::MySql> {
    let mut locker = own.acquire().await.unwrap();
    sqlx::query(&format!("LOCK TABLES `{table}` WRITE"))
        .execute(&mut *locker)
        .await
        .unwrap();
    locker
}

async fn unlock_tables(mut locker: sqlx::pool::PoolConnection<sqlx::MySql>) {
    sqlx::query("UNLOCK TABLES")
        .execute(&mut *locker)
        .await
        .unwrap();
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
        "UPDATE `{table}` SET expires = 0 WHERE session_id = ?"
    ))
    .bind(expired.as_str())
    .execute(&own)
    .await
    .unwrap();

    // The store's only connection is taken, so every read waits for it.
    let held = store.pool().acquire().await.unwrap();
    let store = std::sync::Arc::new(store);
    let mut reads = Vec::new();
    let ids = live.iter().map(|(id, n)| (id.clone(), Some(*n))).chain([
        (live[3].0.clone(), Some(3)),
        (Id::generate(), None),
        (expired.clone(), None),
    ]);
    for (id, expected) in ids {
        let store = std::sync::Arc::clone(&store);
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
    let locker = lock_table(&own, &table).await;
    drop(held);
    let (query, _) = blocked_query(&own, &table).await;
    // 13 ids, in a list of 16.
    assert_eq!(query.matches('?').count(), 2 + 16, "{query}");
    assert!(query.contains("`session_id` IN ("), "{query}");
    unlock_tables(locker).await;
    for read in reads {
        let (got, expected) = read.await.unwrap();
        assert_eq!(got, expected.map(|n| json!(n)));
    }
}

/// When the query that reads a batch fails (here, its connection is killed), each read of the
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
    let store = std::sync::Arc::new(store);
    let mut reads = Vec::new();
    for (n, id) in ids.into_iter().enumerate() {
        let store = std::sync::Arc::clone(&store);
        reads.push((n, tokio::spawn(async move { store.get(&id).await })));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let locker = lock_table(&own, &table).await;
    drop(held);
    let (query, connection) = blocked_query(&own, &table).await;
    assert!(query.contains("`session_id` IN ("), "{query}");
    sqlx::query(&format!("KILL {connection}"))
        .execute(&own)
        .await
        .unwrap();
    unlock_tables(locker).await;
    for (n, read) in reads {
        let loaded = read.await.unwrap().unwrap().unwrap();
        assert_eq!(loaded.record.data()["n"], json!(n));
    }
}

/// Compare-and-sets that wait for a connection run as one `UPDATE`, and each gets its own
/// outcome: when every write's condition holds they are committed together; otherwise (here a
/// stale version, an expired and a missing session, and two writes to one session) the
/// statement is rolled back and each write is made alone.
#[tokio::test]
async fn writes_waiting_for_a_connection_run_together_each_with_its_own_outcome() {
    for mixed in [false, true] {
        let (store, own, table) = one_connection_store().await;
        let mut batching = MySqlBatching {
            pool: store.pool().clone(),
            own,
            table,
            held: None,
        };
        cloakroom_testkit::concurrency::writes_that_meet_in_a_batch_each_get_their_own_outcome(
            std::sync::Arc::new(store),
            &mut batching,
            mixed,
        )
        .await;
    }
}

/// Holds the store's one connection, then lets its waiting writes go while a table lock shows
/// them as one `UPDATE … JOIN (… UNION ALL …)`.
struct MySqlBatching {
    pool: MySqlPool,
    own: MySqlPool,
    table: String,
    held: Option<sqlx::pool::PoolConnection<sqlx::MySql>>,
}

impl cloakroom_testkit::concurrency::Batching for MySqlBatching {
    async fn expire(&self, id: &Id) {
        sqlx::query(&format!(
            "UPDATE `{}` SET expires = 0 WHERE session_id = ?",
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
        let locker = lock_table(&self.own, &self.table).await;
        self.held = None;
        let (query, _) = blocked_query(&self.own, &self.table).await;
        assert!(query.contains("UNION ALL"), "{query}");
        unlock_tables(locker).await;
    }
}

/// The batch's rule counts rows: a list of three (a stale write, then two writes to one session
/// from the same version, whose id is the highest, so the padding repeats it) matches one row,
/// not three, and is rolled back. Were a row that the join finds several times counted each
/// time, the count would equal the writes and the stale one would be reported as made.
#[tokio::test]
async fn a_row_found_several_times_in_a_batch_counts_once() {
    let (store, own, table) = one_connection_store().await;
    let hour = Some(Duration::from_secs(3600));
    let mut ids = [Id::generate(), Id::generate()];
    ids.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    let [low, high] = ids;
    let stale = write(&store, &low, &record(json!({ "n": 0 }), hour), None).await;
    write(&store, &low, &record(json!({ "n": 1 }), hour), Some(&stale)).await;
    let loaded = write(&store, &high, &record(json!({ "n": 0 }), hour), None).await;
    let mut batching = MySqlBatching {
        pool: store.pool().clone(),
        own,
        table,
        held: None,
    };
    let store: std::sync::Arc<dyn SessionStore> = std::sync::Arc::new(store);
    let targets = vec![
        (low.clone(), stale),
        (high.clone(), loaded.clone()),
        (high.clone(), loaded),
    ];
    let made =
        cloakroom_testkit::concurrency::write_in_one_batch(&store, &mut batching, targets).await;
    assert!(!made[0], "the stale write is not made");
    assert!(
        made[1] != made[2],
        "one of the two from one version: {made:?}"
    );
    let low_data = store.get(&low).await.unwrap().unwrap();
    assert_eq!(low_data.record.data()["n"], json!(1));
}
