//! The axum targets: bare axum, cloakroom with each of its stores, tower-sessions with each of
//! its stores, and axum_session (in `axum_session_targets`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::{
    AWS_REGION, Args, COOKIE_NAME, Counter, FAKE_AWS_ACCESS_KEY_ID, FAKE_AWS_SECRET_ACCESS_KEY,
    SIGNING_KEY, Target, announce_ready, axum_session_targets,
};

pub(crate) async fn serve(args: Args) -> anyhow::Result<()> {
    let app = match args.target {
        Target::Bare => bare::router(),
        Target::CloakroomMemory => {
            // Big enough that a memory run of 1,000,000 sessions evicts none of them.
            let store = cloakroom::MemoryStore::builder()
                .with_max_entries(2_000_000)
                .build();
            with_cloakroom(store, &args)?
        }
        Target::CloakroomSqlite => {
            let path = args
                .sqlite_path
                .clone()
                .context("cloakroom-sqlite needs --sqlite-path")?;
            with_cloakroom(cloakroom::SqliteStore::connect(path).await?, &args)?
        }
        Target::CloakroomRedis => with_cloakroom(
            cloakroom::RedisStore::connect(&args.redis_url).await?,
            &args,
        )?,
        Target::CloakroomPostgres => {
            let url = args
                .postgres_url
                .clone()
                .context("cloakroom-postgres needs --postgres-url")?;
            let store = cloakroom::PostgresStore::builder(url)
                .with_create_table_if_missing(true)
                .build()
                .await?;
            with_cloakroom(store, &args)?
        }
        Target::CloakroomMysql => {
            let url = args
                .mysql_url
                .clone()
                .context("cloakroom-mysql needs --mysql-url")?;
            // express-mysql-session's table `sessions`, created if missing; sqlx's default pool
            // (up to 10 connections), as the other SQL targets.
            let store = cloakroom::MySqlStore::builder(url)
                .with_create_table_if_missing(true)
                .build()
                .await?;
            with_cloakroom(store, &args)?
        }
        Target::CloakroomDynamodb => {
            let url = args
                .dynamodb_url
                .clone()
                .context("cloakroom-dynamodb needs --dynamodb-url")?;
            // connect-dynamodb's table `sessions`, created if missing (with the store's owner
            // index, unused here: no session has an owner).
            let store = cloakroom::DynamoDbStore::builder()
                .with_endpoint_url(url)
                .with_region(AWS_REGION)
                .with_credentials(FAKE_AWS_ACCESS_KEY_ID, FAKE_AWS_SECRET_ACCESS_KEY)
                .with_create_table_if_missing(true)
                .build()
                .await?;
            with_cloakroom_unlocked(store, &args)?
        }
        Target::TowerSessionsMemory => {
            tower_latest::router(tower_sessions_latest::MemoryStore::default())
        }
        Target::TowerSessionsRedis => tower::router(tower::redis_store(&args.redis_url).await?),
        Target::TowerSessionsSqlite => {
            let path = args
                .sqlite_path
                .as_deref()
                .context("tower-sessions-sqlite needs --sqlite-path")?;
            tower::router(tower::sqlite_store(path).await?)
        }
        Target::TowerSessionsPostgres => {
            let url = args
                .postgres_url
                .as_deref()
                .context("tower-sessions-postgres needs --postgres-url")?;
            tower::router(tower::postgres_store(url).await?)
        }
        Target::TowerSessionsMysql => {
            let url = args
                .mysql_url
                .as_deref()
                .context("tower-sessions-mysql needs --mysql-url")?;
            tower::router(tower::mysql_store(url).await?)
        }
        Target::TowerSessionsDynamodb => {
            let url = args
                .dynamodb_url
                .as_deref()
                .context("tower-sessions-dynamodb needs --dynamodb-url")?;
            tower::router(tower::dynamodb_store(url).await?)
        }
        Target::AxumSessionSqlite | Target::AxumSessionPostgres | Target::AxumSessionRedis => {
            axum_session_targets::router(&args).await?
        }
        Target::ActixSessionRedis => unreachable!("actix-web runs on its own runtime"),
    };

    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("failed to listen on {}", args.addr))?;
    announce_ready(listener.local_addr()?)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(terminated())
        .await
        .context("failed to serve")
}

/// Resolves on SIGTERM (how the harness stops a server) or Ctrl-C.
async fn terminated() {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a process can always install a SIGTERM handler");
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Maps a session library's error to a plain 500; the detail is not the benchmark's business.
fn internal_error<E>(_: E) -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

fn with_cloakroom<S: cloakroom::store::LockStore>(store: S, args: &Args) -> anyhow::Result<Router> {
    let mut sessions = cloakroom_sessions(store);
    if args.session_lock {
        sessions = sessions.with_session_lock(cloakroom::SessionLock::new());
    }
    cloakroom_router(sessions, args)
}

/// As `with_cloakroom`, for a store without the session lock (`DynamoDbStore`).
fn with_cloakroom_unlocked<S: cloakroom::store::SessionStore>(
    store: S,
    args: &Args,
) -> anyhow::Result<Router> {
    anyhow::ensure!(!args.session_lock, "this store has no session lock");
    cloakroom_router(cloakroom_sessions(store), args)
}

fn cloakroom_sessions<S: cloakroom::store::SessionStore>(
    store: S,
) -> cloakroom::SessionLayerBuilder<S> {
    cloakroom::SessionLayer::builder(store)
        .with_secret(SIGNING_KEY)
        .with_name(COOKIE_NAME)
        // Throttled touches, cloakroom's recommended production setting: a read-only request
        // skips the expiry refresh when the store's expiry was refreshed under a minute ago,
        // so it costs one store round trip instead of two.
        .with_touch_after(Duration::from_secs(60))
}

fn cloakroom_router<S: cloakroom::store::SessionStore>(
    sessions: cloakroom::SessionLayerBuilder<S>,
    args: &Args,
) -> anyhow::Result<Router> {
    let counter = match args.counter {
        Counter::Update => get(cloakroom_routes::counter),
        Counter::Insert => get(cloakroom_routes::counter_insert),
    };
    let login = if args.owned_login {
        get(cloakroom_routes::owned_login)
    } else {
        get(cloakroom_routes::login)
    };
    Ok(Router::new()
        .route("/login", login)
        .route("/read", get(cloakroom_routes::read))
        .route("/counter", counter)
        .layer(sessions.build()?))
}

mod bare {
    use super::*;

    /// A process-global count: the bare server's stand-in for a session write.
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    pub(super) fn router() -> Router {
        Router::new()
            .route("/login", get(|| async { "ok" }))
            .route("/read", get(|| async { "user: bench" }))
            .route(
                "/counter",
                get(|| async { (COUNTER.fetch_add(1, Ordering::Relaxed) + 1).to_string() }),
            )
    }
}

mod cloakroom_routes {
    use cloakroom::Session;

    pub(super) async fn login(session: Session) -> Result<&'static str, cloakroom::Error> {
        session.insert("user", "bench").await?;
        Ok("ok")
    }

    /// As `login`, and the session is one of 100,000 users' (in turn), so the owner index grows
    /// as a real site's would: many users, a few sessions each (a measured run makes about
    /// 200,000 logins: two or three per user).
    pub(super) async fn owned_login(session: Session) -> Result<&'static str, cloakroom::Error> {
        static NEXT_USER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let user = NEXT_USER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100_000;
        session.insert("user", "bench").await?;
        session.set_owner(&format!("user-{user}")).await?;
        Ok("ok")
    }

    pub(super) async fn read(session: Session) -> Result<String, cloakroom::Error> {
        let user: Option<String> = session.get("user").await?;
        Ok(format!("user: {}", user.as_deref().unwrap_or("none")))
    }

    pub(super) async fn counter(session: Session) -> Result<String, cloakroom::Error> {
        let views = session
            .update("views", |views: Option<u64>| views.unwrap_or(0) + 1)
            .await?;
        Ok(views.to_string())
    }

    pub(super) async fn counter_insert(session: Session) -> Result<String, cloakroom::Error> {
        let views = session.get::<u64>("views").await?.unwrap_or(0) + 1;
        session.insert("views", views).await?;
        Ok(views.to_string())
    }
}

/// The router and handlers of a tower-sessions target, for the release `$crate_name` names:
/// tower-sessions 0.14 (the release its Redis and sqlx stores are built on) and 0.15 (its newest,
/// for the memory store) have the same API but distinct types.
macro_rules! tower_routes {
    ($crate_name:ident) => {
        use $crate_name::cookie::Key;
        use $crate_name::{Expiry, Session, SessionManagerLayer, SessionStore};

        /// tower-sessions configured like the others. Its defaults already match express's
        /// resave/saveUninitialized/rolling = false (it saves only modified sessions and never sends
        /// the cookie of an empty one); `Secure` is turned off because the benchmark is plain HTTP.
        pub(super) fn router(store: impl SessionStore + Clone) -> Router {
            let sessions = SessionManagerLayer::new(store)
                .with_name(COOKIE_NAME)
                .with_secure(false)
                .with_expiry(Expiry::OnSessionEnd)
                .with_signed(Key::from(SIGNING_KEY));
            Router::new()
                .route("/login", get(login))
                .route("/read", get(read))
                .route("/counter", get(counter))
                .layer(sessions)
        }

        async fn login(session: Session) -> Result<&'static str, StatusCode> {
            session
                .insert("user", "bench")
                .await
                .map_err(internal_error)?;
            Ok("ok")
        }

        async fn read(session: Session) -> Result<String, StatusCode> {
            let user: Option<String> = session.get("user").await.map_err(internal_error)?;
            Ok(format!("user: {}", user.as_deref().unwrap_or("none")))
        }

        async fn counter(session: Session) -> Result<String, StatusCode> {
            let views = session
                .get::<u64>("views")
                .await
                .map_err(internal_error)?
                .unwrap_or(0)
                + 1;
            session
                .insert("views", views)
                .await
                .map_err(internal_error)?;
            Ok(views.to_string())
        }
    };
}

/// tower-sessions 0.15 with its memory store.
mod tower_latest {
    use super::*;

    tower_routes!(tower_sessions_latest);
}

/// tower-sessions 0.14 with its Redis, SQLite, Postgres, MySQL and DynamoDB stores.
mod tower {
    use std::path::Path;

    use tower_sessions_dynamodb_store::aws_sdk_dynamodb::config::Credentials;
    use tower_sessions_dynamodb_store::aws_sdk_dynamodb::types::{
        AttributeDefinition, KeySchemaElement, KeyType, ProvisionedThroughput, ScalarAttributeType,
    };
    use tower_sessions_dynamodb_store::{
        DynamoDBStore, DynamoDBStoreProps, aws_config, aws_sdk_dynamodb,
    };
    use tower_sessions_redis_store::RedisStore;
    use tower_sessions_redis_store::fred::prelude::{ClientLike as _, Config, Pool};
    // sqlx 0.8, the one tower-sessions-sqlx-store is built on (the crate's own `sqlx` is 0.9,
    // for axum_session).
    use tower_sessions_sqlx_store::sqlx::mysql::MySqlPool;
    use tower_sessions_sqlx_store::sqlx::postgres::PgPool;
    use tower_sessions_sqlx_store::sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    use tower_sessions_sqlx_store::{MySqlStore, PostgresStore, SqliteStore};

    use super::*;

    tower_routes!(tower_sessions);

    /// tower-sessions-redis-store over a single fred connection, like actix-session's store.
    pub(super) async fn redis_store(url: &str) -> anyhow::Result<RedisStore<Pool>> {
        let config = Config::from_url(url).context("invalid --redis-url")?;
        let pool = Pool::new(config, None, None, None, 1)?;
        let _connection = pool.connect();
        pool.wait_for_connect()
            .await
            .context("failed to connect to redis")?;
        Ok(RedisStore::new(pool))
    }

    /// tower-sessions-sqlx-store's SQLite store as its README sets it up: a pool with sqlx's
    /// defaults (up to 10 connections, SQLite's own rollback journal and `synchronous=FULL`,
    /// where cloakroom's store asks for WAL and `synchronous=NORMAL`), and `migrate()` to create
    /// its table. The only addition is `create_if_missing`: the harness hands over a path to a
    /// file that does not exist yet. No expired-session deletion task: nothing expires during a
    /// run, and its periodic DELETE would only add noise.
    pub(super) async fn sqlite_store(path: &Path) -> anyhow::Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options)
            .await
            .with_context(|| format!("failed to open {}", path.display()))?;
        let store = SqliteStore::new(pool);
        store
            .migrate()
            .await
            .context("failed to create tower-sessions' SQLite table")?;
        Ok(store)
    }

    /// tower-sessions-sqlx-store's Postgres store as its README sets it up: `PgPool::connect`
    /// (sqlx's defaults, up to 10 connections, as cloakroom's store uses) and `migrate()`, which
    /// creates the schema `tower_sessions` and its table `session`.
    pub(super) async fn postgres_store(url: &str) -> anyhow::Result<PostgresStore> {
        let pool = PgPool::connect(url)
            .await
            .context("failed to connect to postgres")?;
        let store = PostgresStore::new(pool);
        store
            .migrate()
            .await
            .context("failed to create tower-sessions' Postgres table")?;
        Ok(store)
    }

    /// tower-sessions-sqlx-store's MySQL store as its README sets it up: `MySqlPool::connect`
    /// (sqlx's defaults, up to 10 connections, as cloakroom's store uses) and `migrate()`, which
    /// creates the database `tower_sessions` and its table `session` (`id char(22)`, `data
    /// blob`, `expiry_date timestamp(6)`). No expired-session deletion task, as for the others.
    pub(super) async fn mysql_store(url: &str) -> anyhow::Result<MySqlStore> {
        let pool = MySqlPool::connect(url)
            .await
            .context("failed to connect to mysql")?;
        let store = MySqlStore::new(pool);
        store
            .migrate()
            .await
            .context("failed to create tower-sessions' MySQL table")?;
        Ok(store)
    }

    /// tower-sessions-dynamodb-store as its README and example set it up: a client from
    /// `aws_config`'s defaults (here with the endpoint, region and fake credentials given
    /// explicitly, as cloakroom's target does), `DynamoDBStoreProps::default()` (table
    /// `TowerSessions`, hash key `session_id`, no sort key), and the table created as its example
    /// creates it (the store itself never creates one). No expired-session deletion task.
    pub(super) async fn dynamodb_store(url: &str) -> anyhow::Result<DynamoDBStore> {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(url)
            .region(aws_config::Region::new(AWS_REGION))
            .credentials_provider(Credentials::new(
                FAKE_AWS_ACCESS_KEY_ID,
                FAKE_AWS_SECRET_ACCESS_KEY,
                None,
                None,
                "bench",
            ))
            .load()
            .await;
        let client = aws_sdk_dynamodb::Client::new(&config);
        let props = DynamoDBStoreProps::default();
        let exists = client
            .describe_table()
            .table_name(&props.table_name)
            .send()
            .await
            .is_ok();
        if !exists {
            client
                .create_table()
                .table_name(&props.table_name)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(&props.partition_key.name)
                        .attribute_type(ScalarAttributeType::S)
                        .build()?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(&props.partition_key.name)
                        .key_type(KeyType::Hash)
                        .build()?,
                )
                .provisioned_throughput(
                    ProvisionedThroughput::builder()
                        .read_capacity_units(10)
                        .write_capacity_units(5)
                        .build()?,
                )
                .send()
                .await
                .context("failed to create tower-sessions' DynamoDB table")?;
        }
        // A new table is CREATING for a moment (dynalite: half a second): wait until ACTIVE.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status = client
                .describe_table()
                .table_name(&props.table_name)
                .send()
                .await
                .context("failed to describe tower-sessions' DynamoDB table")?
                .table
                .and_then(|table| table.table_status);
            if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "tower-sessions' DynamoDB table is not active after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(DynamoDBStore::new(client, props))
    }
}
