//! The routes of the express-session tutorials, with the same session keys (`views`,
//! `username`, `visits`, `user`, and `csrfToken` for the forms' token), so an Express app
//! sharing the store sees the same data.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::{OwnerIndex, Session, SessionLayer, SessionRegistry};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::login_limit::LoginLimiter;
use crate::options::User;
use crate::{csrf, device, pages};

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The one account that can log in.
    pub user: Arc<User>,
    /// Failed logins per client address and per user name.
    pub login_limiter: Arc<LoginLimiter>,
    /// Every session of a user, on the layer's store: the "Your sessions" page.
    pub registry: SessionRegistry<Arc<dyn OwnerIndex>>,
}

/// The app: every route under one session layer, and every response with the security headers.
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the login limit counts
/// failures per client address.
pub(crate) fn app(state: AppState, sessions: SessionLayer) -> Router {
    Router::new()
        .route("/", get(views))
        .route("/set-session", get(set_session))
        .route("/get-session", get(get_session))
        .route("/login", get(login_form).post(login))
        .route("/dashboard", get(dashboard))
        .route("/logout", get(logout_needs_post).post(logout))
        .route("/sessions", get(sessions_page))
        .route("/sessions/revoke", post(revoke_session))
        .route("/sessions/revoke-others", post(revoke_other_sessions))
        .route("/api/sessions", get(sessions_api))
        .route("/style.css", get(style))
        .with_state(state)
        .layer(sessions)
        // Outermost, so the session layer's own failure responses get the headers too.
        .layer(axum::middleware::map_response(security_headers))
}

/// The Content-Security-Policy of every response: the stylesheet from this origin, nothing
/// else (no script at all), forms posting only here, no framing (clickjacking), no `<base>`.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the headers every response needs. `Cache-Control: no-store` keeps pages with session
/// data out of shared and back-button caches; a handler that sets its own Cache-Control (the
/// stylesheet) keeps it.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

type Page = Result<Response, cloakroom::Error>;

/// The logged-in user, as express tutorials store it.
#[derive(Serialize, Deserialize)]
struct LoggedIn {
    username: String,
    role: String,
}

/// A counter: `update` is the read-modify-write that no concurrent request can undo (two tabs
/// reloading at once both count).
async fn views(session: Session) -> Page {
    let views = session
        .update("views", |views: Option<u64>| views.unwrap_or(0) + 1)
        .await?;
    Ok(pages::views(views).into_response())
}

async fn set_session(session: Session) -> Page {
    session.insert("username", "john").await?;
    session
        .update("visits", |visits: Option<u64>| visits.unwrap_or(0) + 1)
        .await?;
    Ok(pages::message("Session data set").into_response())
}

async fn get_session(session: Session) -> Page {
    let username: Option<String> = session.get("username").await?;
    let visits: Option<u64> = session.get("visits").await?;
    let text = match (username, visits) {
        (Some(name), Some(visits)) => {
            let times = if visits == 1 { "time" } else { "times" };
            format!("Welcome back, {name}! You've visited {visits} {times}.")
        }
        _ => "No session data found".to_owned(),
    };
    Ok(pages::message(&text).into_response())
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        pages::STYLE,
    )
}

/// What a POST that did not carry the session's token gets: 403, and nothing done.
const FORGED_FORM: &str = "This form has expired. Reload the page and try again.";

fn forged_form() -> Response {
    (StatusCode::FORBIDDEN, pages::message(FORGED_FORM)).into_response()
}

async fn login_form(session: Session) -> Page {
    let token = csrf::token(&session).await?;
    Ok(pages::login(None, "", &token).into_response())
}

/// The login form's fields. Each defaults to empty, and a body that is not a form counts as an
/// empty form: a missing token is a 403 like a wrong one (not the extractor's 415 or 422).
#[derive(Default, Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "_csrf")]
    csrf_token: String,
}

/// Checks, in this order: the form's token (403, nothing counted), the failed-login limit (429,
/// before the password is looked at), the credentials (401, one more failure).
async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    session: Session,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Page {
    let form = form.map(|Form(form)| form).unwrap_or_default();
    if !csrf::verify(&session, &form.csrf_token).await? {
        return Ok(forged_form());
    }
    let limiter = &state.login_limiter;
    if let Err(retry_after) = limiter.check(client.ip(), &form.username, Instant::now()) {
        // Whole seconds, rounded up: a client retrying on time is never early.
        let seconds = (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1);
        let minutes = seconds.div_ceil(60);
        let unit = if minutes == 1 { "minute" } else { "minutes" };
        let text = format!("Too many failed logins. Try again in {minutes} {unit}.");
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, seconds.to_string())],
            pages::message(&text),
        )
            .into_response());
    }
    let user = &state.user;
    // Compare both in constant time, and both always, so timing says nothing about which failed.
    let name_ok = form.username.as_bytes().ct_eq(user.name.as_bytes());
    let password_ok = form.password.as_bytes().ct_eq(user.password.as_bytes());
    if !bool::from(name_ok & password_ok) {
        limiter.record_failure(client.ip(), &form.username, Instant::now());
        let token = csrf::token(&session).await?;
        let page = pages::login(
            Some("Invalid username or password."),
            &form.username,
            &token,
        );
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    limiter.record_success(&form.username);
    // A new id at login: whoever planted or saw the old one gets nothing. The new session gets
    // a new token too: one seen before the login is worth nothing after it.
    session.regenerate().await?;
    // The session is the user's now: listed on their "Your sessions" page, revocable from it.
    session.set_owner(&form.username).await?;
    session.set_session_info(session_info(&headers)).await?;
    let logged_in = LoggedIn {
        username: form.username,
        role: "admin".to_owned(),
    };
    session.insert("user", logged_in).await?;
    csrf::renew(&session).await?;
    Ok(Redirect::to("/dashboard").into_response())
}

async fn dashboard(session: Session) -> Page {
    let Some(user) = session.get::<LoggedIn>("user").await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let expires = session
        .cookie()
        .await?
        .and_then(|cookie| cookie.expires())
        .map(|at| at.to_http_date());
    // A session logged in before tokens existed gets one here.
    let token = csrf::token(&session).await?;
    Ok(pages::dashboard(&user.username, expires.as_deref(), &token).into_response())
}

/// The logout form's field (missing, or a body that is not a form: empty).
#[derive(Default, Deserialize)]
struct TokenForm {
    #[serde(default, rename = "_csrf")]
    csrf_token: String,
}

/// Destroys the session (the response also expires the cookie) and sends the browser to the
/// login page. `Redirect::to` answers 303 See Other, as express tutorials do.
async fn logout(session: Session, form: Result<Form<TokenForm>, FormRejection>) -> Page {
    let form = form.map(|Form(form)| form).unwrap_or_default();
    if !csrf::verify(&session, &form.csrf_token).await? {
        return Ok(forged_form());
    }
    session.destroy().await?;
    Ok(Redirect::to("/login").into_response())
}

/// `GET /logout` changes nothing: a link or an image on another site could point here, and a
/// browser may prefetch it. The dashboard's button posts instead.
async fn logout_needs_post() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST")],
        pages::message("Log out with the button on your dashboard."),
    )
        .into_response()
}

/// What the session list shows about a session: the device, in a few fixed words (never the
/// header's own text, which the client chose).
fn session_info(headers: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok());
    let mut info = serde_json::Map::new();
    info.insert("device".to_owned(), device::describe(agent).into());
    info
}

/// The name of the user the session is logged in as, for the session list. A session logged in
/// without an owner (before the demo recorded one, or by the Express app sharing the store)
/// gets it recorded here, so it shows in its own list and "sign out the others" spares it.
async fn signed_in(session: &Session) -> Result<Option<String>, cloakroom::Error> {
    let Some(user) = session.get::<LoggedIn>("user").await? else {
        return Ok(None);
    };
    if session.owner().await?.as_deref() != Some(user.username.as_str()) {
        session.set_owner(&user.username).await?;
    }
    Ok(Some(user.username))
}

/// `GET /sessions`: where the user is signed in, with a button to sign each other session out.
async fn sessions_page(State(state): State<AppState>, session: Session) -> Page {
    let Some(owner) = signed_in(&session).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let list = state.registry.list(&owner, &session).await?;
    let token = csrf::token(&session).await?;
    Ok(pages::sessions(&list, &token).into_response())
}

/// `GET /api/sessions`: the same list as JSON. Handles, never session ids: a handle revokes a
/// session of its owner only, an id would be the session itself.
async fn sessions_api(State(state): State<AppState>, session: Session) -> Page {
    let Some(owner) = signed_in(&session).await? else {
        let body = serde_json::json!({ "error": "not logged in" });
        return Ok((StatusCode::UNAUTHORIZED, Json(body)).into_response());
    };
    let list = state.registry.list(&owner, &session).await?;
    Ok(Json(list).into_response())
}

/// The revoke form's fields (missing, or a body that is not a form: empty, so a 403).
#[derive(Default, Deserialize)]
struct RevokeForm {
    #[serde(default)]
    handle: String,
    #[serde(default, rename = "_csrf")]
    csrf_token: String,
}

/// `POST /sessions/revoke`: signs one of the user's sessions out. A handle that names none of
/// them (another user's, forged, or ended) is a 404, and nothing is done. The current session's
/// own handle logs it out, as the logout button does.
async fn revoke_session(
    State(state): State<AppState>,
    session: Session,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Page {
    let form = form.map(|Form(form)| form).unwrap_or_default();
    if !csrf::verify(&session, &form.csrf_token).await? {
        return Ok(forged_form());
    }
    let Some(owner) = signed_in(&session).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let list = state.registry.list(&owner, &session).await?;
    let Some(target) = list.iter().find(|info| info.handle == form.handle) else {
        return Ok(no_such_session());
    };
    if target.current {
        session.destroy().await?;
        return Ok(Redirect::to("/login").into_response());
    }
    // It may have ended since the list was read: then it is not found either.
    if !state.registry.revoke(&owner, &form.handle).await? {
        return Ok(no_such_session());
    }
    Ok(Redirect::to("/sessions").into_response())
}

fn no_such_session() -> Response {
    (
        StatusCode::NOT_FOUND,
        pages::message("No such session: it may have ended already."),
    )
        .into_response()
}

/// `POST /sessions/revoke-others`: "sign out everywhere else".
async fn revoke_other_sessions(
    State(state): State<AppState>,
    session: Session,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Page {
    let form = form.map(|Form(form)| form).unwrap_or_default();
    if !csrf::verify(&session, &form.csrf_token).await? {
        return Ok(forged_form());
    }
    let Some(owner) = signed_in(&session).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    state.registry.revoke_others(&owner, &session).await?;
    Ok(Redirect::to("/sessions").into_response())
}
