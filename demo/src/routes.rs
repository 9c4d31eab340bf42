//! The routes of the express-session tutorials, with the same session keys (`views`,
//! `username`, `visits`, `user`, `csrfToken` for the forms' token, and connect-flash's `flash`
//! for one-time messages), so an Express app sharing the store sees the same data; and a small
//! JSON API (`/api/…`) for clients that carry a token header instead of a cookie.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{FormRejection, JsonRejection};
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
use crate::pages::Flashes;
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
        .route("/api/login", post(api_login))
        .route("/api/me", get(api_me))
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

/// The flash kinds the pages show, and their texts: `interop/app.js` writes and shows the same
/// (with connect-flash), so a message left by one server is shown by the other.
const ERROR: &str = "error";
const INFO: &str = "info";
const LOGIN_FAILED: &str = "Invalid username or password.";
const LOGGED_OUT: &str = "You have been logged out.";

fn signed_out(count: usize) -> String {
    let sessions = if count == 1 { "session" } else { "sessions" };
    format!("Signed out {count} other {sessions}.")
}

/// Takes the waiting `error` and `info` messages: shown once, gone on reload. A message that is
/// not a string (connect-flash stores whatever it is given) is shown as its JSON text rather
/// than failing the page.
async fn take_flashes(session: &Session) -> Result<Flashes, cloakroom::Error> {
    let text = |messages: Vec<serde_json::Value>| -> Vec<String> {
        messages
            .into_iter()
            .map(|message| match message {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            })
            .collect()
    };
    Ok(Flashes {
        error: text(session.take_flash(ERROR).await?),
        info: text(session.take_flash(INFO).await?),
    })
}

async fn login_form(session: Session) -> Page {
    let waiting = take_flashes(&session).await?;
    let token = csrf::token(&session).await?;
    Ok(pages::login(&waiting, &token).into_response())
}

/// Whole seconds until the limiter lets a login through, rounded up (a client retrying on time
/// is never early), and at least one.
fn retry_seconds(retry_after: Duration) -> u64 {
    (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1)
}

/// Whether `username` and `password` are the account's. Both are compared in constant time, and
/// both always, so timing says nothing about which failed.
fn credentials_match(user: &User, username: &str, password: &str) -> bool {
    let name_ok = username.as_bytes().ct_eq(user.name.as_bytes());
    let password_ok = password.as_bytes().ct_eq(user.password.as_bytes());
    bool::from(name_ok & password_ok)
}

/// What a login stores once the credentials are right, for the form and the API alike: a new
/// id (whoever planted or saw the old one gets nothing), the owner (so the session is listed on
/// the user's "Your sessions" page and revocable from it), the device, and the user.
async fn sign_in(
    session: &Session,
    username: String,
    headers: &HeaderMap,
) -> Result<(), cloakroom::Error> {
    session.regenerate().await?;
    session.set_owner(&username).await?;
    session.set_session_info(session_info(headers)).await?;
    let logged_in = LoggedIn {
        username,
        role: "admin".to_owned(),
    };
    session.insert("user", logged_in).await
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
/// before the password is looked at), the credentials (one more failure, and back to the login
/// page with an error flash: a reload of that page does not repeat the POST or the message).
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
        let seconds = retry_seconds(retry_after);
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
    if !credentials_match(&state.user, &form.username, &form.password) {
        limiter.record_failure(client.ip(), &form.username, Instant::now());
        session.flash(ERROR, LOGIN_FAILED).await?;
        return Ok(Redirect::to("/login").into_response());
    }
    limiter.record_success(&form.username);
    sign_in(&session, form.username, &headers).await?;
    // The new session gets a new token too: one seen before the login is worth nothing after it.
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

/// Destroys the session and sends the browser to the login page with a notice. The notice is a
/// write after `destroy`, so it starts a new, empty session (the response sets its cookie in
/// place of the old one, whose record is gone). `Redirect::to` answers 303 See Other, as
/// express tutorials do.
async fn logout(session: Session, form: Result<Form<TokenForm>, FormRejection>) -> Page {
    let form = form.map(|Form(form)| form).unwrap_or_default();
    if !csrf::verify(&session, &form.csrf_token).await? {
        return Ok(forged_form());
    }
    session.destroy().await?;
    session.flash(INFO, LOGGED_OUT).await?;
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
    let waiting = take_flashes(&session).await?;
    let token = csrf::token(&session).await?;
    Ok(pages::sessions(&list, &waiting, &token).into_response())
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
        session.flash(INFO, LOGGED_OUT).await?;
        return Ok(Redirect::to("/login").into_response());
    }
    // It may have ended since the list was read: then it is not found either.
    if !state.registry.revoke(&owner, &form.handle).await? {
        return Ok(no_such_session());
    }
    session.flash(INFO, signed_out(1)).await?;
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
    let count = state.registry.revoke_others(&owner, &session).await?;
    session.flash(INFO, signed_out(count)).await?;
    Ok(Redirect::to("/sessions").into_response())
}

// ---------------------------------------------------------------------------------------------
// The JSON API, for clients that keep a token instead of a cookie (`Authorization: Bearer
// <token>`; the layer sends a new session's token in `X-Session-Token`).

/// A JSON answer `{"error": text}` with `status`.
fn json_error(status: StatusCode, text: &str) -> Response {
    (status, Json(serde_json::json!({ "error": text }))).into_response()
}

/// `POST /api/login`'s body.
#[derive(Deserialize)]
struct ApiCredentials {
    username: String,
    password: String,
}

/// `POST /api/login`: the form login's checks, in JSON. The body first (415 unless
/// `application/json`, 400 unless the credentials in it; nothing counted), then the failed-login
/// limit (429 with Retry-After), then the credentials (401, one more failure). On success
/// `{"ok": true}`, and the layer puts the new session's token in `X-Session-Token` (never in the
/// body, which caches and logs keep).
///
/// No CSRF token: a header client sends its token only when its own code sets the header,
/// which another site's page cannot make it do (see `cloakroom::TokenHeader`). A browser's
/// cookie does reach this route too, but only `application/json` is accepted, and a cross-site
/// page can send that only through `fetch` with a CORS preflight, which this server never
/// grants: an HTML form can post only urlencoded, multipart or text/plain bodies, all refused
/// here with 415 before anything is done. So a forged request cannot log a browser in (or
/// count a failure against its user).
async fn api_login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    session: Session,
    body: Result<Json<ApiCredentials>, JsonRejection>,
) -> Page {
    let credentials = match body {
        Ok(Json(credentials)) => credentials,
        Err(JsonRejection::MissingJsonContentType(_)) => {
            return Ok(json_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send application/json",
            ));
        }
        Err(JsonRejection::JsonSyntaxError(_) | JsonRejection::JsonDataError(_)) => {
            return Ok(json_error(
                StatusCode::BAD_REQUEST,
                "expected {\"username\": string, \"password\": string}",
            ));
        }
        Err(other) => return Ok(json_error(other.status(), "cannot read the body")),
    };
    let limiter = &state.login_limiter;
    if let Err(retry_after) = limiter.check(client.ip(), &credentials.username, Instant::now()) {
        let mut response = json_error(StatusCode::TOO_MANY_REQUESTS, "too many failed logins");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_seconds(retry_after).into());
        return Ok(response);
    }
    if !credentials_match(&state.user, &credentials.username, &credentials.password) {
        limiter.record_failure(client.ip(), &credentials.username, Instant::now());
        return Ok(json_error(StatusCode::UNAUTHORIZED, "invalid credentials"));
    }
    limiter.record_success(&credentials.username);
    sign_in(&session, credentials.username, &headers).await?;
    // The client has no token yet: it comes back in the X-Session-Token header. (A browser's
    // form login never asks, so its scripts never see a token.)
    session.send_token_header().await?;
    Ok(Json(serde_json::json!({ "ok": true })).into_response())
}

/// `GET /api/me`: who the session (by token or by cookie) is logged in as.
async fn api_me(session: Session) -> Page {
    let Some(user) = session.get::<LoggedIn>("user").await? else {
        return Ok(json_error(StatusCode::UNAUTHORIZED, "not logged in"));
    };
    Ok(Json(serde_json::json!({ "username": user.username })).into_response())
}
