//! The express-session tutorial apps in Rust: `cargo run --release -p cloakroom-demo`, then
//! open http://127.0.0.1:3000. `--help` lists the options.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use cloakroom::{ConfigError, CookieOptions, SameSite, SessionLayer, SessionRegistry, TokenHeader};

mod csrf;
mod device;
mod login_limit;
mod options;
mod pages;
mod routes;
mod secret_file;
mod stores;

use options::{Options, Secure, StoreUrl};

fn main() -> ExitCode {
    // On a bad option, clap prints the whole message (the value, why, and a hint) and exits 2.
    let options = Options::parse();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal, plain text for a file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cloakroom-demo: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cloakroom-demo: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

async fn serve(options: Options) -> anyhow::Result<()> {
    // The store first: a secret kept beside an SQLite file needs the file's folder to exist.
    let store = stores::open(&options.store).await?;
    let secrets = secrets(&options)?;
    if options.user.is_default() {
        tracing::warn!(
            "logging in with the built-in account admin:secret; set --user NAME:PASSWORD"
        );
    }
    let mut cookie = CookieOptions::new()
        .with_max_age(options.max_age)
        .with_same_site(SameSite::Lax);
    cookie = match options.secure {
        Secure::Auto => cookie.with_secure_auto(),
        Secure::True => cookie.with_secure(true),
        Secure::False => cookie.with_secure(false),
    };
    if options.allow_short_secret {
        tracing::warn!(
            "--allow-short-secret: secrets under 32 bytes are accepted; rotate to a long one"
        );
    }
    // The layer and the registry share one store: a session revoked from the list is gone
    // for the layer at its next request.
    let registry = SessionRegistry::new(store.clone());
    let sessions = SessionLayer::builder(store)
        .with_secrets(&secrets)
        .with_short_secrets_allowed(options.allow_short_secret)
        .with_name(&options.cookie_name)
        .with_cookie(cookie)
        .with_rolling(options.rolling)
        .with_proxy(options.trust_proxy)
        // Browsers keep the cookie; API clients (`/api/login`, `/api/me`) send
        // `Authorization: Bearer <token>` instead, and get a new session's token back in
        // `X-Session-Token`. Both reach the same sessions.
        .with_header_transport(TokenHeader::bearer())
        .build()
        .map_err(|error| match error {
            ConfigError::ShortSecret => anyhow::anyhow!(
                "a signing secret is shorter than 32 bytes: use 32 random bytes or more (e.g. \
                 `openssl rand -base64 48`), or pass --allow-short-secret to share the short \
                 secret of an existing Express deployment until you rotate it"
            ),
            other => anyhow::Error::new(other).context("invalid session options"),
        })?;
    let state = routes::AppState {
        user: Arc::new(options.user.clone()),
        login_limiter: Arc::new(login_limit::LoginLimiter::new(login_limit::Policy::DEFAULT)),
        registry,
    };
    let app = routes::app(state, sessions);
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("cannot listen on {}", options.addr))?;
    tracing::info!(
        "serving the cloakroom demo on http://{} (sessions: {})",
        listener.local_addr()?,
        options.store.describe()
    );
    // With the client's address: the login limit counts failures per address.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// An error and its causes on one line, each cause once: drivers often repeat their source's
/// message in their own.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The signing secrets: from the options, or else one kept in a file (made on first run), so
/// sessions survive restarts.
fn secrets(options: &Options) -> anyhow::Result<Vec<String>> {
    if !options.secrets.is_empty() {
        return Ok(options.secrets.clone());
    }
    let path = match &options.store {
        StoreUrl::Sqlite(database) => database.with_extension("secret"),
        _ => PathBuf::from("cloakroom-demo.secret"),
    };
    Ok(vec![secret_file::load_or_generate(&path)?])
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
