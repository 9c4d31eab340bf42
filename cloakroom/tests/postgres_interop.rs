//! PostgresStore and connect-pg-simple see the same rows: a request through the real layer is
//! read back with `psql`, the table matches connect-pg-simple's `table.sql`, and rows written
//! the way connect-pg-simple writes them are read correctly, time zone included.
#![cfg(feature = "postgres")]

mod common;

use std::process::Command;
use std::time::Duration;

use cloakroom::store::SessionStore;
use cloakroom::store::postgres::PostgresStore;
use cloakroom::{Id, Record, Timestamp};
use cloakroom_testkit::{record, server_url, unique_name, write};
use common::{counter_app, get};
use serde_json::json;

/// connect-pg-simple 10's `table.sql`, verbatim.
const TABLE_SQL: &str = r#"CREATE TABLE "session" (
  "sid" varchar NOT NULL COLLATE "default",
  "sess" json NOT NULL,
  "expire" timestamp(6) NOT NULL
)
WITH (OIDS=FALSE);

ALTER TABLE "session" ADD CONSTRAINT "session_pkey" PRIMARY KEY ("sid") NOT DEFERRABLE INITIALLY IMMEDIATE;

CREATE INDEX "IDX_session_expire" ON "session" ("expire");
"#;

fn postgres_url() -> String {
    server_url(
        "CLOAKROOM_POSTGRES_URL",
        "Run ./scripts/test.sh, which starts PostgreSQL and sets it.",
    )
}

/// Runs SQL with the real `psql`, as a client whose connection `TimeZone` is `zone` (as
/// node-postgres on a server whose default zone is `zone`); returns the unaligned output.
fn psql(zone: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .arg(postgres_url())
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", "-c", sql])
        .env("PGTZ", zone)
        .output()
        .expect("psql must be installed: ./scripts/test.sh installs PostgreSQL");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned()
}

async fn store_in(schema: &str) -> PostgresStore {
    PostgresStore::builder(postgres_url())
        .with_schema_name(schema)
        .unwrap()
        .with_create_table_if_missing(true)
        .build()
        .await
        .unwrap()
}

/// `2026-11-22 09:36:52`: how psql shows a `timestamp(6)` with no fraction, in UTC.
fn utc_text(seconds: i64) -> String {
    let iso = Timestamp::from_millis(seconds * 1000).to_iso8601();
    format!("{} {}", &iso[..10], &iso[11..19])
}

/// connect-pg-simple's `Math.ceil(ms / 1000)`.
fn ceil_seconds(ms: i64) -> i64 {
    (ms + 999).div_euclid(1000)
}

#[tokio::test]
async fn a_session_saved_through_the_layer_is_the_row_connect_pg_simple_writes() {
    let schema = unique_name("cloakroom_raw_");
    let app = counter_app(store_in(&schema).await, Duration::from_secs(60));
    let reply = get(&app, "/", None).await;
    assert_eq!(reply.body, "views 1");
    let sid = reply
        .session_cookie("connect.sid")
        .expect("a session cookie")
        .session_id();
    assert!(
        sid.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    );

    let row = psql(
        "UTC",
        &format!("SELECT sess::text, expire FROM \"{schema}\".session WHERE sid = '{sid}'"),
    );
    let (sess, expire) = row.split_once('\t').expect("one row, two columns");

    // express-session's JSON: cookie first, in express's field order, then the data.
    let expires = Record::from_json(sess)
        .unwrap()
        .cookie()
        .expires()
        .expect("a cookie with a max age has an expiry");
    let iso = expires.to_iso8601();
    assert_eq!(
        sess,
        format!(
            r#"{{"cookie":{{"originalMaxAge":60000,"expires":"{iso}","httpOnly":true,"path":"/"}},"views":1}}"#
        )
    );
    assert_eq!(iso.len(), 24, "ISO-8601 with milliseconds: {iso}");

    // connect-pg-simple's expire: to_timestamp(Math.ceil(expires / 1000)).
    let seconds = ceil_seconds(expires.as_millis());
    assert_eq!(expire, utc_text(seconds));
    let node_sid = format!("{sid}-node");
    psql(
        "UTC",
        &format!(
            "INSERT INTO \"{schema}\".session (sess, expire, sid) \
             SELECT '{sess}', to_timestamp({seconds}), '{node_sid}'"
        ),
    );
    assert_eq!(
        psql(
            "UTC",
            &format!(
                "SELECT count(DISTINCT expire) FROM \"{schema}\".session \
                 WHERE sid IN ('{sid}', '{node_sid}')"
            )
        ),
        "1",
        "the same expire as connect-pg-simple's to_timestamp"
    );

    // The row keeps counting through the layer.
    let pair = reply.cookie_pair("connect.sid");
    assert_eq!(get(&app, "/", Some(&pair)).await.body, "views 2");
    let sess = psql(
        "UTC",
        &format!("SELECT sess::text FROM \"{schema}\".session WHERE sid = '{sid}'"),
    );
    assert!(sess.ends_with(r#""path":"/"},"views":2}"#), "{sess}");
}

/// The parts of a table's definition connect-pg-simple relies on, with the schema name left out.
fn describe(schema: &str) -> String {
    psql(
        "UTC",
        &format!(
            "SELECT column_name, data_type, is_nullable, datetime_precision, collation_name \
               FROM information_schema.columns \
              WHERE table_schema = '{schema}' AND table_name = 'session' \
              ORDER BY ordinal_position;
             SELECT conname, contype, pg_get_constraintdef(c.oid), condeferrable, condeferred \
               FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
              WHERE n.nspname = '{schema}' ORDER BY conname;
             SELECT indexname, replace(indexdef, '{schema}.', '') \
               FROM pg_indexes WHERE schemaname = '{schema}' \
                AND indexname <> 'session_owner_idx' ORDER BY indexname;
             SELECT relname, relpersistence, relkind \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = '{schema}' AND relname <> 'session_owner_idx' ORDER BY relname;"
        ),
    )
}

#[tokio::test]
async fn the_created_table_is_connect_pg_simples_table_sql() {
    let ours = unique_name("cloakroom_schema_");
    store_in(&ours).await;
    // What connect-pg-simple's createTableIfMissing runs: table.sql with "session" qualified.
    let theirs = unique_name("cloakroom_reference_");
    psql(
        "UTC",
        &format!(
            "CREATE SCHEMA \"{theirs}\"; {}",
            TABLE_SQL.replace("\"session\"", &format!("\"{theirs}\".\"session\""))
        ),
    );
    // connect-pg-simple's table exactly (`describe` leaves out the owner index, an extra
    // index Express ignores: see the store's docs), and the owner index beside it.
    let described = describe(&ours);
    assert_eq!(described, describe(&theirs));
    assert_eq!(
        psql(
            "UTC",
            &format!(
                "SELECT count(*) FROM pg_indexes \
                  WHERE schemaname = '{ours}' AND indexname = 'session_owner_idx'"
            )
        ),
        "1"
    );
    assert_eq!(
        described,
        "sid\tcharacter varying\tNO\t\t\n\
         sess\tjson\tNO\t\t\n\
         expire\ttimestamp without time zone\tNO\t6\t\n\
         session_pkey\tp\tPRIMARY KEY (sid)\tf\tf\n\
         IDX_session_expire\tCREATE INDEX \"IDX_session_expire\" ON session USING btree (expire)\n\
         session_pkey\tCREATE UNIQUE INDEX session_pkey ON session USING btree (sid)\n\
         IDX_session_expire\tp\ti\n\
         session\tp\tr\n\
         session_pkey\tp\ti"
    );
    // Building again finds the table and leaves it alone.
    let before = describe(&ours);
    store_in(&ours).await;
    assert_eq!(describe(&ours), before);
}

#[tokio::test]
async fn a_table_connect_pg_simple_created_is_used_as_it_is() {
    let schema = unique_name("cloakroom_node_");
    psql(
        "UTC",
        &format!(
            "CREATE SCHEMA \"{schema}\"; {}",
            TABLE_SQL.replace("\"session\"", &format!("\"{schema}\".\"session\""))
        ),
    );
    let store = PostgresStore::builder(postgres_url())
        .with_schema_name(&schema)
        .unwrap()
        .build()
        .await
        .unwrap();
    let id = Id::generate();
    let version = write(&store, &id, &record(json!({"n": 1}), None), None).await;
    assert_eq!(store.get(&id).await.unwrap().unwrap().version, version);
}

/// node-postgres connections use the server's default zone; sqlx's use UTC. With the server's
/// zone given to `with_time_zone`, both sides agree on what `expire` means.
#[tokio::test]
async fn with_the_servers_time_zone_both_sides_agree_on_expire() {
    // No daylight saving, so the offset is fixed: +05:30.
    const ZONE: &str = "Asia/Kolkata";
    const OFFSET_MS: i64 = (5 * 3600 + 1800) * 1000;
    let schema = unique_name("cloakroom_zone_");
    let plain = store_in(&schema).await;
    let zoned = PostgresStore::builder(postgres_url())
        .with_schema_name(&schema)
        .unwrap()
        .with_time_zone(ZONE)
        .unwrap()
        .build()
        .await
        .unwrap();
    let seconds = ceil_seconds(Timestamp::now().as_millis()) + 3600;
    let expires = Timestamp::from_millis(seconds * 1000);

    // connect-pg-simple on a server whose default zone is ZONE writes a session.
    let node_sid = unique_name("node-");
    let sess = format!(
        r#"{{"cookie":{{"originalMaxAge":3600000,"expires":"{}","httpOnly":true,"path":"/"}},"user":"node"}}"#,
        expires.to_iso8601()
    );
    psql(
        ZONE,
        &format!(
            "INSERT INTO \"{schema}\".session (sess, expire, sid) \
             SELECT '{sess}', to_timestamp({seconds}), '{node_sid}' \
             ON CONFLICT (sid) DO UPDATE SET sess='{sess}', expire=to_timestamp({seconds})"
        ),
    );
    let node_id = Id::from_string(node_sid.as_str());
    let loaded = zoned.get(&node_id).await.unwrap().unwrap();
    assert_eq!(loaded.record.to_json(), sess);
    assert_eq!(
        loaded.expires_at,
        Some(expires),
        "read in the writer's zone"
    );
    // Without the zone, the store reads the wall-clock time as UTC: off by the offset.
    let misread = plain.get(&node_id).await.unwrap().unwrap().expires_at;
    assert_eq!(misread, Some(expires.add_millis(OFFSET_MS)));

    // And the other way: what the zoned store writes, connect-pg-simple reads as written.
    let id = Id::generate();
    let mut ours = record(json!({"user": "rust"}), None);
    ours.cookie_mut().set_expires(Some(expires));
    write(&zoned, &id, &ours, None).await;
    let epoch = psql(
        ZONE,
        &format!(
            "SELECT extract(epoch FROM expire::timestamptz)::int8 \
             FROM \"{schema}\".session WHERE sid = '{}'",
            id.as_str()
        ),
    );
    assert_eq!(epoch, seconds.to_string());
    // A touch and a prune in the zone keep to it too.
    zoned.touch(&id, &ours).await.unwrap();
    assert_eq!(zoned.prune_expired().await.unwrap(), 0);
    assert_eq!(
        zoned.get(&id).await.unwrap().unwrap().expires_at,
        Some(expires)
    );
}

#[tokio::test]
async fn an_unknown_time_zone_fails_the_build() {
    let error = PostgresStore::builder(postgres_url())
        .with_time_zone("Mars/Olympus_Mons")
        .unwrap()
        .build()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), cloakroom::store::ErrorKind::Backend);
}
