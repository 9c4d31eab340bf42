//! The routes of the express-session tutorials, with the same session keys (`views`,
//! `username`, `visits`, `user`, and `csrfToken` for the forms' token), so an Express app
//! sharing the store sees the same data.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use cloakroom::{Session, SessionLayer};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::login_limit::LoginLimiter;
use crate::options::User;
use crate::{csrf, pages};

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The one account that can log in.
    pub user: Arc<User>,
    /// Failed logins per client address and per user name.
    pub login_limiter: Arc<LoginLimiter>,
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
