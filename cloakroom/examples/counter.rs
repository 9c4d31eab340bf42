//! The express-session tutorial's first app: a page that counts your visits.
//!
//! ```text
//! cargo run -p cloakroom --example counter
//! ```
//! Then open http://127.0.0.1:3000 and reload. `/logout` forgets you. The secret comes from
//! `SESSION_SECRET`; without it a throw-away one is used (sessions do not survive a restart).

use std::time::Duration;

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;
use cloakroom::{CookieOptions, Id, MemoryStore, Session, SessionLayer};

async fn views(session: Session) -> Result<String, cloakroom::Error> {
    let views: u64 = session.get("views").await?.unwrap_or(0) + 1;
    session.insert("views", views).await?;
    Ok(format!("Number of views {views}"))
}

async fn logout(session: Session) -> Result<Redirect, cloakroom::Error> {
    session.destroy().await?;
    Ok(Redirect::to("/"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let secret = std::env::var("SESSION_SECRET").unwrap_or_else(|_| {
        tracing::warn!("SESSION_SECRET is not set; using a random secret for this run");
        Id::generate().as_str().to_owned()
    });
    let sessions = SessionLayer::builder(MemoryStore::new())
        .with_secret(secret)
        .with_cookie(CookieOptions::new().with_max_age(Duration::from_secs(30 * 60)))
        .build()?;
    let app = Router::new()
        .route("/", get(views))
        .route("/logout", get(logout))
        .layer(sessions);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    tracing::info!("listening on http://127.0.0.1:3000");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
