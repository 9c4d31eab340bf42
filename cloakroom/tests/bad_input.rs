//! Bad input through the real layer. Each case has a defined answer (a new session, or the
//! opaque failure response), none panics, and none leaks data.

mod common;

use axum::Router;
use axum::body::Body;
use axum::routing::get as route_get;
use cloakroom::{Session, SessionLayer, SessionStore};
use common::*;
use http::{HeaderValue, Request};

fn app(store: impl SessionStore) -> Router {
    let layer = SessionLayer::builder(store)
        .with_secret(SECRET)
        .build()
        .unwrap();
    Router::new()
        .route(
            "/",
            route_get(|session: Session| async move {
                let known = session.get::<String>("user").await?.is_some();
                session.insert("user", "ann").await?;
                Ok::<_, cloakroom::Error>(if known { "known" } else { "new" })
            }),
        )
        .layer(layer)
}

/// A valid session and its decoded cookie value `s:<id>.<mac>`.
async fn valid_session(app: &Router) -> (String, String) {
    let first = get(app, "/", None).await;
    let cookie = first.session_cookie("connect.sid").unwrap();
    let decoded = percent_decode(&cookie.value);
    (cookie.session_id(), decoded)
}

fn encode(value: &str) -> String {
    value
        .replace('%', "%25")
        .replace(':', "%3A")
        .replace('+', "%2B")
        .replace('/', "%2F")
}

async fn with_header(app: &Router, header: HeaderValue) -> Reply {
    let request = Request::get("/")
        .header(http::header::COOKIE, header)
        .body(Body::empty())
        .unwrap();
    send(app, request).await
}

#[tokio::test]
async fn forged_and_mangled_cookies_start_a_new_session_without_a_store_load() {
    let store = CountingStore::new();
    let app = app(store.clone());
    let (id, valid) = valid_session(&app).await;
    let (signed, mac) = valid.rsplit_once('.').unwrap();
    let cases = [
        ("wrong signature", format!("{signed}.{}", "A".repeat(43))),
        ("truncated signature", format!("{signed}.{}", &mac[..20])),
        ("doubled signature", format!("{valid}.{mac}")),
        ("no signature", signed.to_owned()),
        ("unsigned id", id.clone()),
        ("short id, signed with a guess", format!("s:abc.{mac}")),
        ("foreign alphabet id", format!("s:ключ-ключ.{mac}")),
        ("empty", String::new()),
    ];
    for (what, value) in cases {
        store.counts.reset();
        let reply = get(&app, "/", Some(&format!("connect.sid={}", encode(&value)))).await;
        assert_eq!(
            (reply.status.as_u16(), reply.body.as_str()),
            (200, "new"),
            "{what}"
        );
        assert_eq!(store.counts.get(), 0, "{what}: the store was queried");
        let fresh = reply
            .session_cookie("connect.sid")
            .expect("a new session's cookie");
        assert_ne!(fresh.session_id(), id, "{what}: the old id came back");
    }
    // The control: the same request with the real cookie loads the session.
    store.counts.reset();
    let reply = get(&app, "/", Some(&format!("connect.sid={}", encode(&valid)))).await;
    assert_eq!((reply.body.as_str(), store.counts.get()), ("known", 1));
}

#[tokio::test]
async fn broken_percent_encoding_and_non_utf8_bytes_start_a_new_session() {
    let store = CountingStore::new();
    let app = app(store.clone());
    valid_session(&app).await;
    store.counts.reset();
    for raw in [
        b"connect.sid=s%3Aabc%ZZ.def".as_slice(),
        b"connect.sid=%",
        b"connect.sid=%E2%82",
        b"connect.sid=s%3A\xff\xfe.\xc3(",
        b"\xff\xff=\xff; connect.sid=\x80",
    ] {
        let reply = with_header(&app, HeaderValue::from_bytes(raw).unwrap()).await;
        assert_eq!(
            (reply.status.as_u16(), reply.body.as_str()),
            (200, "new"),
            "{raw:?}"
        );
    }
    assert_eq!(store.counts.get(), 0);
}

#[tokio::test]
async fn huge_and_crowded_cookie_headers_still_find_the_session() {
    let store = CountingStore::new();
    let app = app(store.clone());
    let (_, valid) = valid_session(&app).await;
    let ours = format!("connect.sid={}", encode(&valid));
    for size in [8 * 1024, 64 * 1024] {
        let filler = format!("junk={}", "x".repeat(size));
        let header = format!("{filler}; {ours}");
        let reply = with_header(&app, HeaderValue::from_str(&header).unwrap()).await;
        assert_eq!(reply.body, "known", "{size} bytes");
    }
    let mut crowd: Vec<String> = (0..499).map(|n| format!("c{n}=v{n}")).collect();
    crowd.insert(250, ours.clone());
    let reply = with_header(&app, HeaderValue::from_str(&crowd.join("; ")).unwrap()).await;
    assert_eq!(reply.body, "known", "500 cookies");
    // A 64 KiB value under the session's own name is simply not a valid cookie.
    store.counts.reset();
    let giant = format!("connect.sid=s%3A{}", "a".repeat(64 * 1024));
    let reply = with_header(&app, HeaderValue::from_str(&giant).unwrap()).await;
    assert_eq!((reply.body.as_str(), store.counts.get()), ("new", 0));
}

#[tokio::test]
async fn an_unreadable_stored_record_is_the_opaque_error_and_leaks_nothing() {
    let store = RawStore::new();
    let app = app(store.clone());
    let (id, valid) = valid_session(&app).await;
    let cookie = format!("connect.sid={}", encode(&valid));
    for (what, stored) in [
        ("not JSON", "secret-note: this is not json"),
        ("no cookie", r#"{"user":"secret-note"}"#),
        ("cookie not an object", r#"{"cookie":"secret-note"}"#),
        (
            "bad expires",
            r#"{"cookie":{"expires":"secret-note"},"user":"x"}"#,
        ),
        ("an array", r#"["secret-note"]"#),
    ] {
        store.put_raw(&id, stored);
        let reply = get(&app, "/", Some(&cookie)).await;
        assert_eq!(reply.status, 500, "{what}");
        assert_eq!(reply.body, "Internal Server Error", "{what}");
        assert!(reply.set_cookies().is_empty(), "{what}");
        let error = reply
            .extensions
            .get::<cloakroom::Error>()
            .expect("attached");
        assert!(
            !format!("{error:?}").contains("secret-note"),
            "{what}: the error carries stored data: {error:?}"
        );
        assert_eq!(
            store.raw(&id).as_deref(),
            Some(stored),
            "{what}: the record was changed"
        );
    }
}

/// A handler that stores `?bytes=N` characters under `note` (0: only reads), answering with
/// the length of the note it found.
fn sized_app(store: impl SessionStore) -> Router {
    let layer = SessionLayer::builder(store)
        .with_secret(SECRET)
        .build()
        .unwrap();
    Router::new()
        .route(
            "/",
            route_get(
                |session: Session, query: axum::extract::RawQuery| async move {
                    let found = session.get::<String>("note").await?.unwrap_or_default();
                    let bytes: usize = query
                        .0
                        .and_then(|q| q.strip_prefix("bytes=")?.parse().ok())
                        .unwrap_or(0);
                    if bytes > 0 {
                        session.insert("note", "n".repeat(bytes)).await?;
                    }
                    Ok::<_, cloakroom::Error>(found.len().to_string())
                },
            ),
        )
        .layer(layer)
}

#[tokio::test]
async fn a_save_over_the_record_limit_is_the_opaque_error_and_keeps_the_stored_session() {
    let store = cloakroom::MemoryStore::builder()
        .with_max_record_size(1024)
        .build();
    let app = sized_app(store.clone());

    // A new session too large to store: the opaque 500, no cookie, nothing stored.
    let reply = get(&app, "/?bytes=2000", None).await;
    let error = assert_failure_response(&reply, http::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        matches!(&error, cloakroom::Error::Save(e) if e.kind() == cloakroom::store::ErrorKind::TooLarge),
        "{error:?}"
    );
    assert_eq!(store.len().await.unwrap(), 0);

    // A stored session that would grow past the limit stays as it was.
    let first = get(&app, "/?bytes=100", None).await;
    let cookie = first.cookie_pair("connect.sid");
    let reply = get(&app, "/?bytes=2000", Some(&cookie)).await;
    assert_failure_response(&reply, http::StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(get(&app, "/", Some(&cookie)).await.body, "100");
    // Just under the limit is fine.
    let reply = get(&app, "/?bytes=900", Some(&cookie)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(get(&app, "/", Some(&cookie)).await.body, "900");
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_stored_record_over_the_limit_is_the_opaque_error_and_is_left_alone() {
    use cloakroom::SqliteStore;

    let dir = std::env::temp_dir().join(format!("cloakroom-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sessions.db");
    // One program wrote a big session; another reads the same table with a lower limit.
    let roomy = SqliteStore::connect(&path).await.unwrap();
    let strict = SqliteStore::builder(&path)
        .with_max_record_size(1024)
        .build()
        .await
        .unwrap();
    let writer = sized_app(roomy.clone());
    let reader = sized_app(strict);

    let first = get(&writer, "/?bytes=5000", None).await;
    assert_eq!(first.status, 200);
    let cookie = first.cookie_pair("connect.sid");
    let reply = get(&reader, "/", Some(&cookie)).await;
    let error = assert_failure_response(&reply, http::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        matches!(&error, cloakroom::Error::Load(e) if e.kind() == cloakroom::store::ErrorKind::TooLarge),
        "{error:?}"
    );
    assert_eq!(get(&writer, "/", Some(&cookie)).await.body, "5000");
    drop(roomy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A value `depth` levels deep: `[[…[1]…]]`.
fn nested(depth: usize) -> serde_json::Value {
    let mut value = serde_json::json!(1);
    for _ in 1..depth {
        value = serde_json::json!([value]);
    }
    value
}

#[tokio::test]
async fn a_value_nested_past_the_limit_is_refused_and_the_session_keeps_what_it_had() {
    let store = CountingStore::new();
    let layer = SessionLayer::builder(store.clone())
        .with_secret(SECRET)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/",
            route_get(
                |session: Session, query: axum::extract::RawQuery| async move {
                    let depth: usize = query
                        .0
                        .and_then(|q| q.strip_prefix("depth=")?.parse().ok())
                        .unwrap_or(1);
                    let refused = match session.insert("tree", nested(depth)).await {
                        Err(cloakroom::Error::TooDeep { key, limit }) => {
                            format!("refused {key} {limit}")
                        }
                        Err(other) => return Err(other),
                        Ok(()) => "stored".to_owned(),
                    };
                    session
                        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
                        .await?;
                    Ok::<_, cloakroom::Error>(refused)
                },
            ),
        )
        .layer(layer);
    let limit = cloakroom::MAX_VALUE_DEPTH;

    let first = get(&app, &format!("/?depth={limit}"), None).await;
    assert_eq!(first.body, "stored");
    let cookie = first.cookie_pair("connect.sid");
    let id = first.session_cookie("connect.sid").unwrap().session_id();
    let before = store.record(&id).await.unwrap();
    assert_eq!(before.data()["tree"], nested(limit));

    // One level more is refused, naming the key and the limit; the rest of the request goes on.
    let reply = get(&app, &format!("/?depth={}", limit + 1), Some(&cookie)).await;
    assert_eq!(reply.body, format!("refused tree {limit}"));
    let after = store.record(&id).await.unwrap();
    assert_eq!(
        after.data()["tree"],
        nested(limit),
        "the stored value is kept"
    );
    assert_eq!(after.data()["visits"], 2);
    // Deeper than serde_json reads back (128): refused the same way. (Far deeper values
    // cannot come from parsed input, and serde_json's own serialize and drop recurse.)
    let reply = get(&app, "/?depth=300", Some(&cookie)).await;
    assert_eq!(reply.body, format!("refused tree {limit}"));
}
