//! Each store's size limit on reads, against real servers (`./scripts/test.sh` starts them): a
//! record over the limit, written by another program, fails `get` and `all` with `TooLarge`,
//! is left as it is, and is never transferred whole: a relay between the store and the server
//! counts the bytes the server sends (SQLite, in the process, gets a record that cannot be read
//! at all instead). A record exactly at the limit loads.
#![cfg(any(feature = "redis", feature = "postgres", feature = "sqlite"))]

use cloakroom::Id;
use cloakroom::store::{ErrorKind, SessionStore};

/// The stores' limit in these tests.
const LIMIT: usize = 4 * 1024;

/// The size of the record over the limit: far enough over that transferring it would show.
const OVERSIZED: usize = 2 * 1024 * 1024;

/// What a refused read may cost in bytes from the server: the reply with the length, or the
/// value cut one byte past the limit, and a new connection's greeting.
const REFUSED_READ_BYTES: u64 = 64 * 1024;

/// The JSON of a record, around the padding that gives it the length wanted.
const RECORD_HEAD: &str = r#"{"cookie":{"path":"/"},"pad":""#;
const RECORD_TAIL: &str = r#""}"#;

/// How much padding a record of `len` bytes of JSON has.
fn pad_len(len: usize) -> usize {
    len.checked_sub(RECORD_HEAD.len() + RECORD_TAIL.len())
        .expect("longer than an empty record")
}

/// An express-session record of exactly `len` bytes of JSON.
fn record_json(len: usize) -> String {
    format!("{RECORD_HEAD}{}{RECORD_TAIL}", "x".repeat(pad_len(len)))
}

/// Asserts that `error` is the size limit's, and says nothing of the session.
fn assert_too_large(error: &cloakroom::store::Error, id: &Id) {
    assert_eq!(error.kind(), ErrorKind::TooLarge, "{error:?}");
    let described = format!("{error} {error:?}");
    assert!(!described.contains(id.as_str()), "{described}");
    assert!(!described.contains("xxxx"), "{described}");
}

/// `host:port` in a URL such as `redis://127.0.0.1:6379` or
/// `postgres://user@127.0.0.1:5432/db`.
#[cfg(any(feature = "redis", feature = "postgres"))]
fn address_in(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// A TCP relay in front of a real server that counts the bytes the server sends, to tell
/// whether a read transferred a value. Every byte goes through unchanged, both ways.
#[cfg(any(feature = "redis", feature = "postgres"))]
mod relay {
    use std::io;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::net::{TcpListener, TcpStream};

    #[derive(Debug)]
    pub(crate) struct Relay {
        pub(crate) address: SocketAddr,
        from_server: Arc<AtomicU64>,
    }

    impl Relay {
        /// Listens on a free local port and relays each connection to `upstream`, until the
        /// test's runtime ends.
        pub(crate) async fn start(upstream: &str) -> Relay {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let from_server = Arc::new(AtomicU64::new(0));
            let counter = Arc::clone(&from_server);
            let upstream = upstream.to_owned();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let counter = Arc::clone(&counter);
                    tokio::spawn(async move {
                        // Either side closing ends both.
                        tokio::select! {
                            _ = forward(&client, &server, None) => {}
                            _ = forward(&server, &client, Some(&counter)) => {}
                        }
                    });
                }
            });
            Relay {
                address,
                from_server,
            }
        }

        /// Every byte the server has sent through the relay so far.
        pub(crate) fn bytes_from_server(&self) -> u64 {
            self.from_server.load(Ordering::SeqCst)
        }
    }

    /// Copies `from` to `to` until `from` closes, adding what it copies to `counter`.
    async fn forward(
        from: &TcpStream,
        to: &TcpStream,
        counter: Option<&AtomicU64>,
    ) -> io::Result<()> {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            from.readable().await?;
            let read = match from.try_read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            };
            if let Some(counter) = counter {
                counter.fetch_add(read as u64, Ordering::SeqCst);
            }
            let mut rest = &buffer[..read];
            while !rest.is_empty() {
                to.writable().await?;
                match to.try_write(rest) {
                    Ok(written) => rest = &rest[written..],
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }
}

/// The stored records of a test, by what they hold.
struct Ids {
    oversized: Id,
    at_limit: Id,
    over_by_one: Id,
}

impl Ids {
    fn new() -> Self {
        Ids {
            oversized: Id::generate(),
            at_limit: Id::generate(),
            over_by_one: Id::generate(),
        }
    }
}

/// What every store must do with the records of `ids`: refuse the two over the limit, in `get`
/// and in `all`, without moving the oversized one (as `bytes_from_server` counts the bytes the
/// server sends), and load the one at the limit.
async fn check_reads(store: &dyn SessionStore, ids: &Ids, bytes_from_server: impl Fn() -> u64) {
    let before = bytes_from_server();
    let error = store.get(&ids.oversized).await.unwrap_err();
    let refused_get = bytes_from_server() - before;
    assert!(
        refused_get < REFUSED_READ_BYTES,
        "get moved {refused_get} bytes: the oversized record was transferred"
    );
    assert_too_large(&error, &ids.oversized);

    let loaded = store
        .get(&ids.at_limit)
        .await
        .unwrap()
        .expect("the record at the limit loads");
    assert_eq!(loaded.version.as_bytes().map(<[u8]>::len), Some(LIMIT));
    assert_eq!(
        loaded.record.data()["pad"].as_str().map(str::len),
        Some(pad_len(LIMIT))
    );
    let error = store.get(&ids.over_by_one).await.unwrap_err();
    assert_too_large(&error, &ids.over_by_one);

    let before = bytes_from_server();
    let error = match store.all().await {
        Ok(records) => panic!("all loaded {} records, two over the limit", records.len()),
        Err(error) => error,
    };
    let refused_all = bytes_from_server() - before;
    assert!(
        refused_all < REFUSED_READ_BYTES,
        "all moved {refused_all} bytes: the oversized record was transferred"
    );
    assert_eq!(error.kind(), ErrorKind::TooLarge, "all: {error:?}");
}

#[cfg(feature = "redis")]
mod redis_store {
    use cloakroom::store::redis::RedisStore;
    use cloakroom_testkit::{server_url, unique_name};
    use redis::aio::ConnectionLike;

    use super::relay::Relay;
    use super::*;

    const HOW: &str = "Run ./scripts/test.sh, or start the servers with \
        `source scripts/services.sh; start_services`.";

    fn prefix() -> String {
        unique_name("cloakroom-limits:") + ":"
    }

    /// Writes the records of `ids` under `prefix` as another program would, with `SET`.
    async fn write_raw(connection: &mut impl ConnectionLike, prefix: &str, ids: &Ids) {
        for (id, len) in [
            (&ids.oversized, OVERSIZED),
            (&ids.at_limit, LIMIT),
            (&ids.over_by_one, LIMIT + 1),
        ] {
            let key = format!("{prefix}{}", id.as_str());
            redis::cmd("SET")
                .arg(key)
                .arg(record_json(len))
                .arg("EX")
                .arg(600)
                .exec_async(connection)
                .await
                .unwrap();
        }
    }

    /// The length and TTL of the value under `key`.
    async fn stored(connection: &mut impl ConnectionLike, key: &str) -> (usize, i64) {
        let len: usize = redis::cmd("STRLEN")
            .arg(key)
            .query_async(connection)
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(connection)
            .await
            .unwrap();
        (len, ttl)
    }

    #[tokio::test]
    async fn a_value_over_the_limit_is_refused_without_being_transferred() {
        let url = server_url("CLOAKROOM_REDIS_URL", HOW);
        let relay = Relay::start(address_in(&url)).await;
        let prefix = prefix();
        let store = RedisStore::builder(format!("redis://{}", relay.address))
            .with_prefix(&prefix)
            .with_max_record_size(LIMIT)
            .build()
            .await
            .unwrap();
        let mut raw = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ids = Ids::new();
        write_raw(&mut raw, &prefix, &ids).await;

        check_reads(&store, &ids, || relay.bytes_from_server()).await;
        let key = format!("{prefix}{}", ids.oversized.as_str());
        let (len, ttl) = stored(&mut raw, &key).await;
        assert_eq!(len, OVERSIZED, "the value is left as it is");
        assert!(ttl > 500, "and so is its TTL: {ttl}");
        store.clear().await.unwrap();
    }

    #[tokio::test]
    async fn an_empty_value_is_no_session_and_is_left_alone() {
        let url = server_url("CLOAKROOM_REDIS_URL", HOW);
        let prefix = prefix();
        let store = RedisStore::builder(&url)
            .with_prefix(&prefix)
            .build()
            .await
            .unwrap();
        let mut raw = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let id = Id::generate();
        let key = format!("{prefix}{}", id.as_str());
        redis::cmd("SET")
            .arg(&key)
            .arg("")
            .arg("EX")
            .arg(600)
            .exec_async(&mut raw)
            .await
            .unwrap();
        assert!(store.get(&id).await.unwrap().is_none());
        assert!(store.all().await.unwrap().is_empty());
        assert_eq!(stored(&mut raw, &key).await.0, 0);
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(exists, 1, "the key is left alone");
        store.clear().await.unwrap();
    }

    #[tokio::test]
    async fn a_value_over_the_limit_is_refused_in_a_cluster() {
        let urls: Vec<String> = server_url("CLOAKROOM_REDIS_CLUSTER_URLS", HOW)
            .split(',')
            .map(str::to_owned)
            .collect();
        let prefix = prefix();
        let store = RedisStore::cluster_builder(&urls)
            .with_prefix(&prefix)
            .with_max_record_size(LIMIT)
            .build()
            .await
            .unwrap();
        let mut raw = redis::cluster::ClusterClient::new(urls)
            .unwrap()
            .get_async_connection()
            .await
            .unwrap();
        let ids = Ids::new();
        write_raw(&mut raw, &prefix, &ids).await;
        // Keys in several slots, so `all` reads from several nodes.
        for n in 0..20 {
            let key = format!("{prefix}small-{n}");
            redis::cmd("SET")
                .arg(key)
                .arg(record_json(100))
                .exec_async(&mut raw)
                .await
                .unwrap();
        }
        // No relay in a cluster (its nodes announce their own addresses): no byte count.
        check_reads(&store, &ids, || 0).await;
        let key = format!("{prefix}{}", ids.oversized.as_str());
        assert_eq!(stored(&mut raw, &key).await.0, OVERSIZED);
        store.destroy(&ids.oversized).await.unwrap();
        store.destroy(&ids.over_by_one).await.unwrap();
        assert_eq!(store.all().await.unwrap().len(), 21, "the rest all load");
        store.clear().await.unwrap();
    }
}

#[cfg(feature = "postgres")]
mod postgres_store {
    use cloakroom::store::postgres::PostgresStore;
    use cloakroom_testkit::{server_url, unique_name};
    use sqlx::PgPool;

    use super::relay::Relay;
    use super::*;

    #[tokio::test]
    async fn a_row_over_the_limit_is_refused_without_being_transferred() {
        let url = server_url(
            "CLOAKROOM_POSTGRES_URL",
            "Run ./scripts/test.sh, which starts PostgreSQL and sets it.",
        );
        let upstream = address_in(&url);
        let relay = Relay::start(upstream).await;
        let schema = unique_name("cloakroom_limits_");
        let store = PostgresStore::builder(url.replace(upstream, &relay.address.to_string()))
            .with_schema_name(&schema)
            .unwrap()
            .with_create_table_if_missing(true)
            .with_prune_interval(None)
            .with_max_record_size(LIMIT)
            .build()
            .await
            .unwrap();
        let raw = PgPool::connect(&url).await.unwrap();
        let ids = Ids::new();
        let insert = format!(
            "INSERT INTO \"{schema}\".session (sid, sess, expire) \
             VALUES ($1, $2::json, now() + interval '1 hour')"
        );
        for (id, len) in [
            (&ids.oversized, OVERSIZED),
            (&ids.at_limit, LIMIT),
            (&ids.over_by_one, LIMIT + 1),
        ] {
            sqlx::query(&insert)
                .bind(id.as_str())
                .bind(record_json(len))
                .execute(&raw)
                .await
                .unwrap();
        }

        check_reads(&store, &ids, || relay.bytes_from_server()).await;
        let (len,): (i32,) = sqlx::query_as(&format!(
            "SELECT octet_length(sess::text) FROM \"{schema}\".session WHERE sid = $1"
        ))
        .bind(ids.oversized.as_str())
        .fetch_one(&raw)
        .await
        .unwrap();
        assert_eq!(
            usize::try_from(len).unwrap(),
            OVERSIZED,
            "the row is left as it is"
        );
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(&raw)
            .await
            .unwrap();
    }
}

#[cfg(feature = "sqlite")]
mod sqlite_store {
    use cloakroom::store::sqlite::SqliteStore;
    use cloakroom_testkit::unique_name;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

    use super::*;

    #[tokio::test]
    async fn a_row_over_the_limit_is_refused_without_being_read() {
        let dir = std::env::temp_dir().join(unique_name("cloakroom-limits-"));
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("sessions.db");
        let store = SqliteStore::builder(&file)
            .with_max_record_size(LIMIT)
            .with_prune_interval(None)
            .build()
            .await
            .unwrap();
        let raw = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&file))
            .await
            .unwrap();
        let ids = Ids::new();
        // The oversized row is not even UTF-8: reading it would fail to decode, so `TooLarge`
        // shows that it was never read.
        sqlx::query(
            "INSERT INTO session (sid, sess, expire) \
             VALUES (?1, CAST(?2 AS TEXT), unixepoch() + 3600)",
        )
        .bind(ids.oversized.as_str())
        .bind(vec![0xffu8; OVERSIZED])
        .execute(&raw)
        .await
        .unwrap();
        for (id, len) in [(&ids.at_limit, LIMIT), (&ids.over_by_one, LIMIT + 1)] {
            sqlx::query(
                "INSERT INTO session (sid, sess, expire) VALUES (?1, ?2, unixepoch() + 3600)",
            )
            .bind(id.as_str())
            .bind(record_json(len))
            .execute(&raw)
            .await
            .unwrap();
        }

        check_reads(&store, &ids, || 0).await;
        let (len,): (i64,) =
            sqlx::query_as("SELECT octet_length(sess) FROM session WHERE sid = ?1")
                .bind(ids.oversized.as_str())
                .fetch_one(&raw)
                .await
                .unwrap();
        assert_eq!(
            usize::try_from(len).unwrap(),
            OVERSIZED,
            "the row is left as it is"
        );
        drop(store);
        raw.close().await;
        // Best effort: a leftover directory in /tmp must not fail a passing test.
        let _ = std::fs::remove_dir_all(&dir);
    }
}
