//! The routes of the express-session tutorials, with the same session keys (`views`,
//! `username`, `visits`, `user`), so an Express app sharing the store sees the same data.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use cloakroom::{Session, SessionLayer};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::options::User;
use crate::pages;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The one account that can log in.
    pub user: Arc<User>,
}

/// The app: every route under one session layer.
pub(crate) fn app(state: AppState, sessions: SessionLayer) -> Router {
    Router::new()
        .route("/", get(views))
        .route("/set-session", get(set_session))
        .route("/get-session", get(get_session))
        .route("/login", get(login_form).post(login))
        .route("/dashboard", get(dashboard))
        .route("/logout", get(logout))
        .with_state(state)
        .layer(sessions)
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
    Ok(Html(pages::views(views)).into_response())
}

async fn set_session(session: Session) -> Page {
    session.insert("username", "john").await?;
    session
        .update("visits", |visits: Option<u64>| visits.unwrap_or(0) + 1)
        .await?;
    Ok(Html(pages::message("Session data set")).into_response())
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
    Ok(Html(pages::message(&text)).into_response())
}

async fn login_form() -> Html<String> {
    Html(pages::login(None, ""))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<Credentials>,
) -> Page {
    let user = &state.user;
    // Compare both in constant time, and both always, so timing says nothing about which failed.
    let name_ok = form.username.as_bytes().ct_eq(user.name.as_bytes());
    let password_ok = form.password.as_bytes().ct_eq(user.password.as_bytes());
    if !bool::from(name_ok & password_ok) {
        let form = pages::login(Some("Invalid username or password."), &form.username);
        return Ok((StatusCode::UNAUTHORIZED, Html(form)).into_response());
    }
    // A new id at login: whoever planted or saw the old one gets nothing.
    session.regenerate().await?;
    let logged_in = LoggedIn {
        username: form.username,
        role: "admin".to_owned(),
    };
    session.insert("user", logged_in).await?;
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
    Ok(Html(pages::dashboard(&user.username, expires.as_deref())).into_response())
}

/// Destroys the session (the response also expires the cookie) and sends the browser to the
/// login page. `Redirect::to` answers 303 See Other, as express tutorials do.
async fn logout(session: Session) -> Page {
    session.destroy().await?;
    Ok(Redirect::to("/login").into_response())
}
