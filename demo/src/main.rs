//! The express-session tutorial apps in Rust: `cargo run --release -p cloakroom-demo`, then
//! open http://127.0.0.1:3000. `--help` lists the options.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use cloakroom::{CookieOptions, SameSite, SessionLayer};

mod options;
mod pages;
mod routes;
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
    let sessions = SessionLayer::builder(store)
        .with_secrets(&secrets)
        .with_name(&options.cookie_name)
        .with_cookie(cookie)
        .with_rolling(options.rolling)
        .with_proxy(options.trust_proxy)
        .build()
        .context("invalid session options")?;
    let state = routes::AppState {
        user: Arc::new(options.user.clone()),
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
    axum::serve(listener, app)
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
    if let Ok(kept) = std::fs::read_to_string(&path)
        && !kept.trim().is_empty()
    {
        tracing::warn!(
            "no --secret given: using the one kept in {}",
            path.display()
        );
        return Ok(vec![kept.trim().to_owned()]);
    }
    let secret = random_secret()?;
    write_private(&path, &secret)
        .with_context(|| format!("cannot keep the generated secret in {}", path.display()))?;
    tracing::warn!(
        "no --secret given: generated one and kept it in {}",
        path.display()
    );
    Ok(vec![secret])
}

fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a secret: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    open.open(path)?.write_all(contents.as_bytes())
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
