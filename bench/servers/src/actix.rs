//! actix-web 4 with actix-session and its Redis store.

use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_session::storage::RedisSessionStore;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::{App, HttpServer, error, get};
use anyhow::Context as _;

use crate::{Args, COOKIE_NAME, SIGNING_KEY, announce_ready};

pub(crate) async fn serve(args: Args) -> anyhow::Result<()> {
    // One store, so one Redis connection (a multiplexed `ConnectionManager`) for the process.
    let store = RedisSessionStore::new(args.redis_url.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("failed to connect to redis: {e}"))?;
    let key = Key::from(SIGNING_KEY);
    let server = HttpServer::new(move || {
        // Signed (not the default, encrypted) cookies, like the other targets; browser-session
        // cookie, state saved only when changed (actix-session's defaults).
        let sessions = SessionMiddleware::builder(store.clone(), key.clone())
            .cookie_name(COOKIE_NAME.to_owned())
            .cookie_secure(false)
            .cookie_content_security(CookieContentSecurity::Signed)
            .session_lifecycle(BrowserSession::default())
            .build();
        App::new()
            .wrap(sessions)
            .service(login)
            .service(read)
            .service(counter)
    })
    .workers(1)
    // The harness stops a server between runs; don't wait 30 s for idle keep-alive connections.
    .shutdown_timeout(1)
    .bind(args.addr)
    .with_context(|| format!("failed to listen on {}", args.addr))?;
    for addr in server.addrs() {
        announce_ready(addr)?;
    }
    // actix-server stops gracefully on SIGTERM by itself.
    server.run().await.context("failed to serve")
}

#[get("/login")]
async fn login(session: Session) -> actix_web::Result<&'static str> {
    session
        .insert("user", "bench")
        .map_err(error::ErrorInternalServerError)?;
    Ok("ok")
}

#[get("/read")]
async fn read(session: Session) -> actix_web::Result<String> {
    let user: Option<String> = session
        .get("user")
        .map_err(error::ErrorInternalServerError)?;
    Ok(format!("user: {}", user.as_deref().unwrap_or("none")))
}

#[get("/counter")]
async fn counter(session: Session) -> actix_web::Result<String> {
    let views = session
        .get::<u64>("views")
        .map_err(error::ErrorInternalServerError)?
        .unwrap_or(0)
        + 1;
    session
        .insert("views", views)
        .map_err(error::ErrorInternalServerError)?;
    Ok(views.to_string())
}
