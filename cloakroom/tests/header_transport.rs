//! The session token in a header (`with_header_transport`): API clients log in and come back
//! with `Authorization: Bearer …` or a named header, alone or beside the cookie, on the same
//! sessions; bad tokens start a new session, oversized ones get 431.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, Request, Response, StatusCode, header};
use axum::routing::get;
use cloakroom::{
    ConfigError, MemoryStore, Session, SessionLayer, SessionLayerBuilder, SessionStore, TokenHeader,
};
use common::SECRET;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

const TOKEN: &str = "x-session-token";

/// `/login` (regenerates, stores `user`), `/whoami`, `/logout` (destroys), `/cached` (a handler
/// that sets its own Cache-Control); counts the handler's calls.
fn app(
    layer: impl FnOnce(SessionLayerBuilder<MemoryStore>) -> SessionLayerBuilder<MemoryStore>,
) -> (Router, Arc<AtomicUsize>) {
    app_on(MemoryStore::new(), layer)
}

/// [`app`] on any store.
fn app_on<S: SessionStore>(
    store: S,
    layer: impl FnOnce(SessionLayerBuilder<S>) -> SessionLayerBuilder<S>,
) -> (Router, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let builder = SessionLayer::builder(store).with_secret(SECRET);
    let router = Router::new()
        .route(
            "/login",
            get(|session: Session| async move {
                session.regenerate().await?;
                session.insert("user", "ann").await?;
                Ok::<_, cloakroom::Error>("logged in")
            }),
        )
        .route(
            "/api-login",
            get(|session: Session| async move {
                session.regenerate().await?;
                session.insert("user", "ann").await?;
                session.send_token_header().await?;
                Ok::<_, cloakroom::Error>("logged in")
            }),
        )
        .route(
            "/whoami",
            get(|session: Session| async move {
                let user: Option<String> = session.get("user").await?;
                Ok::<_, cloakroom::Error>(user.unwrap_or_else(|| "nobody".into()))
            }),
        )
        .route(
            "/logout",
            get(|session: Session| async move {
                session.destroy().await?;
                Ok::<_, cloakroom::Error>("bye")
            }),
        )
        .route(
            "/cached",
            get(|session: Session| async move {
                session.insert("seen", true).await?;
                Ok::<_, cloakroom::Error>(([(header::CACHE_CONTROL, "private, max-age=5")], "ok"))
            }),
        )
        .layer(axum::middleware::map_request(
            move |request: Request<Body>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move { request }
            },
        ))
        .layer(layer(builder).build().expect("valid options"));
    (router, calls)
}

struct Answer {
    status: StatusCode,
    body: String,
    token: Option<String>,
    set_cookie: Option<String>,
    cache_control: Option<String>,
}

async fn send(app: &Router, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response: Response<Body> = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let (token, set_cookie, cache_control) = (
        text(TOKEN),
        text("set-cookie").map(|cookie| cookie.split(';').next().unwrap().to_owned()),
        text("cache-control"),
    );
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        token,
        set_cookie,
        cache_control,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn a_bearer_client_logs_in_and_comes_back_with_its_token() {
    let (app, _) = app(|layer| layer.with_header_transport(TokenHeader::bearer()));
    let login = send(&app, "/api-login", &[]).await;
    let token = login
        .token
        .expect("a new session's token comes back in the header, as the handler asked");
    assert!(
        token.starts_with("s:"),
        "the cookie's value, unencoded: {token}"
    );
    assert_eq!(login.cache_control.as_deref(), Some("no-store"));
    assert!(login.set_cookie.is_some(), "and the cookie (it is on)");
    assert!(!login.body.contains(&token), "never in the body");

    let me = send(&app, "/whoami", &[("authorization", &bearer(&token))]).await;
    assert_eq!(me.body, "ann");
    assert_eq!(me.token, None, "an unchanged session sends nothing back");
    assert_eq!(me.set_cookie, None);

    // The same session through its cookie, for a browser: one session, two ways in.
    let cookie = login.set_cookie.unwrap();
    assert_eq!(
        send(&app, "/whoami", &[("cookie", &cookie)]).await.body,
        "ann"
    );
}

#[tokio::test]
async fn a_cookie_client_never_sees_a_token_unasked() {
    let (app, _) = app(|layer| layer.with_header_transport(TokenHeader::bearer()));
    let login = send(&app, "/login", &[]).await;
    let cookie = login.set_cookie.expect("a cookie");
    assert_eq!(login.token, None, "the page's scripts could read it");
    let again = send(&app, "/login", &[("cookie", &cookie)]).await;
    assert_eq!(again.token, None);
    assert!(
        again.set_cookie.is_some(),
        "regenerated: a new cookie, no token"
    );
}

#[tokio::test]
async fn the_header_decides_when_both_come() {
    let (app, _) = app(|layer| layer.with_header_transport(TokenHeader::bearer()));
    let first = send(&app, "/login", &[]).await;
    let cookie = first.set_cookie.unwrap();
    let by_header = send(
        &app,
        "/whoami",
        &[
            ("authorization", "Bearer s:forged.sig"),
            ("cookie", &cookie),
        ],
    )
    .await;
    assert_eq!(
        by_header.body, "nobody",
        "a request with a token header is served by it alone"
    );
    // An Authorization header of another scheme is not a token: the cookie decides.
    let basic = send(
        &app,
        "/whoami",
        &[("authorization", "Basic YW5uOnB3"), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(basic.body, "ann");
}

#[tokio::test]
async fn bad_tokens_start_a_new_session_and_big_ones_get_431() {
    let (app, calls) = app(|layer| layer.with_header_transport(TokenHeader::bearer()));
    for bad in [
        "Bearer ",
        "Bearer not-signed",
        "Bearer s:id.badsignature",
        "Bearer s:ünï.cödé",
    ] {
        let answer = send(&app, "/login", &[("authorization", bad)]).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{bad:?}: like a bad cookie, no error"
        );
        let token = answer.token.expect("a new session's token");
        assert_eq!(
            send(&app, "/whoami", &[("authorization", &bearer(&token))])
                .await
                .body,
            "ann"
        );
        assert_eq!(answer.set_cookie, None, "a header client gets no cookie");
    }
    let before = calls.load(Ordering::SeqCst);
    let huge = bearer(&"x".repeat(cloakroom::MAX_TOKEN_HEADER_LEN));
    let answer = send(&app, "/whoami", &[("authorization", &huge)]).await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "the handler never ran"
    );
}

#[tokio::test]
async fn regenerate_and_destroy_answer_in_the_header() {
    let (app, _) = app(|layer| layer.with_header_transport(TokenHeader::bearer()));
    let old = send(&app, "/api-login", &[]).await.token.unwrap();
    let again = send(&app, "/login", &[("authorization", &bearer(&old))]).await;
    let new = again.token.expect("regenerate sends the new token");
    assert_ne!(new, old);
    assert_eq!(again.set_cookie, None);
    assert_eq!(
        send(&app, "/whoami", &[("authorization", &bearer(&old))])
            .await
            .body,
        "nobody",
        "the old token is dead"
    );
    let bye = send(&app, "/logout", &[("authorization", &bearer(&new))]).await;
    assert_eq!(bye.token.as_deref(), Some(""), "destroyed: an empty token");
    assert_eq!(
        send(&app, "/whoami", &[("authorization", &bearer(&new))])
            .await
            .body,
        "nobody"
    );
}

#[tokio::test]
async fn a_named_header_alone_and_the_handlers_cache_control() {
    let name = HeaderName::from_static(TOKEN);
    let (app, _) = app(|layer| {
        layer
            .with_header_transport(TokenHeader::named(name))
            .with_cookie_transport(false)
    });
    let login = send(&app, "/login", &[]).await;
    assert_eq!(login.set_cookie, None, "the cookie is off");
    let token = login.token.unwrap();
    assert_eq!(send(&app, "/whoami", &[(TOKEN, &token)]).await.body, "ann");
    // A cookie is ignored with the cookie off.
    let cookie = format!("connect.sid={}", token.replace(':', "%3A"));
    assert_eq!(
        send(&app, "/whoami", &[("cookie", &cookie)]).await.body,
        "nobody"
    );
    let cached = send(&app, "/cached", &[]).await;
    assert!(cached.token.is_some());
    assert_eq!(
        cached.cache_control.as_deref(),
        Some("private, max-age=5"),
        "the handler's own Cache-Control is kept"
    );
}

#[test]
fn the_cookie_off_needs_a_header() {
    let built = SessionLayer::builder(MemoryStore::new())
        .with_secret(SECRET)
        .with_cookie_transport(false)
        .build();
    assert_eq!(built.err(), Some(ConfigError::NoTransport));
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "sqlite"))]
/// A bearer client's whole life on every store: log in, read by token, regenerate, log out.
async fn a_bearer_clients_life(_: &str, store: Arc<dyn SessionStore>) {
    let (app, _) = app_on(store, |layer| {
        layer.with_header_transport(TokenHeader::bearer())
    });
    let token = send(&app, "/api-login", &[]).await.token.expect("a token");
    let me = send(&app, "/whoami", &[("authorization", &bearer(&token))]).await;
    assert_eq!(me.body, "ann");
    let new = send(&app, "/login", &[("authorization", &bearer(&token))])
        .await
        .token
        .expect("a new token");
    assert_eq!(
        send(&app, "/whoami", &[("authorization", &bearer(&token))])
            .await
            .body,
        "nobody"
    );
    let bye = send(&app, "/logout", &[("authorization", &bearer(&new))]).await;
    assert_eq!(bye.token.as_deref(), Some(""));
    assert_eq!(
        send(&app, "/whoami", &[("authorization", &bearer(&new))])
            .await
            .body,
        "nobody"
    );
}

#[cfg(all(feature = "redis", feature = "postgres", feature = "sqlite"))]
common::on_every_store!(a_bearer_clients_life);
