//! The servers under test in cloakroom's benchmark (see `docs/benchmark-method.md`).
//!
//! One binary, one target per run: `bench-servers --target NAME --addr 127.0.0.1:PORT`. Every
//! target serves the same three routes with the same meaning, so the load harness can drive them
//! all alike:
//!
//! - `GET /login` starts a session: sets `user` = "bench", answers "ok" with the session cookie.
//! - `GET /read` reads `user` without changing anything: "user: bench", or "user: none".
//! - `GET /counter` adds one to `views` (a store write on every request) and answers the new number.
//!
//! cloakroom's targets also take `--counter insert` (a plain get then insert instead of
//! `Session::update`), `--session-lock` and `--owned-login` (`/login` names an owner, so the
//! owner index is written), to measure what each costs.
//!
//! The targets: `bare` (axum without sessions), cloakroom with each of its stores
//! (`cloakroom-{memory,sqlite,redis,postgres,mysql,dynamodb}`), and its peers: tower-sessions
//! (`tower-sessions-{memory,sqlite,redis,postgres,mysql,dynamodb}`; 0.15 for memory, 0.14 for the
//! stores built on it), axum_session
//! (`axum-session-{sqlite,postgres,redis}`), actix-session (`actix-session-redis`). The express-session
//! peers are Node servers of their own (`bench/express`).
//!
//! The peers are configured alike: cookie `sid`, a fixed signing key, no resave, no saving of
//! untouched new sessions, no rolling, a browser-session cookie. Where a library cannot be set up
//! so (axum_session re-sends its cookie on every answer and keeps sessions in a process-local
//! cache in front of its store), its module says how it differs. Every target serves from one
//! thread: a tokio `current_thread` runtime for axum, `workers(1)` for actix-web.
//!
//! The server prints `ready <addr>` on stdout once it listens and exits on SIGTERM. It logs
//! nothing per request, and never an id, a cookie or session data.

mod actix;
mod axum_session_targets;
mod axum_targets;

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

/// The signing key of every target. A test key, public on purpose: never use it anywhere else.
/// 64 bytes, because tower-sessions' and actix-session's signed cookies need a 64-byte key.
const SIGNING_KEY: &[u8; 64] = b"bench-only-fake-signing-key-0123456789-not-a-secret-do-not-reuse";

/// The session cookie's name on every target.
const COOKIE_NAME: &str = "sid";

/// The fake static credentials the `*-dynamodb` targets sign with: a local stand-in (dynalite)
/// accepts any. Not a secret.
const FAKE_AWS_ACCESS_KEY_ID: &str = "bench-fake-access-key-id";
const FAKE_AWS_SECRET_ACCESS_KEY: &str = "bench-fake-secret-access-key";
/// The region the `*-dynamodb` targets name (a local stand-in ignores it).
const AWS_REGION: &str = "us-east-1";

#[derive(Parser)]
#[command(about = "A server under test for cloakroom's benchmark")]
struct Args {
    /// Which server to run.
    #[arg(long, value_enum)]
    target: Target,
    /// Where to listen.
    #[arg(long)]
    addr: SocketAddr,
    /// Redis for the `*-redis` targets.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Postgres for the `*-postgres` targets.
    #[arg(long)]
    postgres_url: Option<String>,
    /// MySQL or MariaDB for the `*-mysql` targets, such as `mysql://root@127.0.0.1:3306/cloakroom`.
    #[arg(long)]
    mysql_url: Option<String>,
    /// DynamoDB's endpoint for the `*-dynamodb` targets, such as `http://127.0.0.1:8000` (a
    /// local stand-in: the targets sign with fake static credentials, region `us-east-1`).
    #[arg(long)]
    dynamodb_url: Option<String>,
    /// The database file for the `*-sqlite` targets (created if missing).
    #[arg(long)]
    sqlite_path: Option<std::path::PathBuf>,
    /// How cloakroom's `/counter` adds one: with `Session::update` (the documented way), or
    /// with a plain `get` then `insert`.
    #[arg(long, value_enum, default_value = "update")]
    counter: Counter,
    /// Turn on cloakroom's exclusive session lock.
    #[arg(long)]
    session_lock: bool,
    /// cloakroom's `/login` also names the session's owner (`Session::set_owner`, one of 100,000
    /// users in turn), so the store's owner index is written too.
    #[arg(long)]
    owned_login: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Counter {
    Update,
    Insert,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// axum with the same routes and no sessions: the ceiling.
    Bare,
    CloakroomMemory,
    CloakroomSqlite,
    CloakroomRedis,
    CloakroomPostgres,
    CloakroomMysql,
    CloakroomDynamodb,
    TowerSessionsMemory,
    TowerSessionsSqlite,
    TowerSessionsRedis,
    TowerSessionsPostgres,
    TowerSessionsMysql,
    TowerSessionsDynamodb,
    AxumSessionSqlite,
    AxumSessionPostgres,
    AxumSessionRedis,
    ActixSessionRedis,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.target == Target::ActixSessionRedis {
        // actix-web brings its own single-threaded runtime (an actix `System`).
        return actix_web::rt::System::new().block_on(actix::serve(args));
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?
        .block_on(axum_targets::serve(args))
}

/// Tells the harness the server is listening. It waits for exactly this line.
fn announce_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready {addr}")?;
    stdout.flush()?;
    Ok(())
}
