//! Opening the store `--store` names, and checking that it answers. Every store the demo
//! offers can list a user's sessions ([`OwnerIndex`]), for the "Your sessions" page.

use std::sync::Arc;

use anyhow::Context as _;
use cloakroom::{
    DynamoDbStore, Id, MemoryStore, MySqlStore, OwnerIndex, PostgresStore, RedisStore,
    SessionStore as _, SqliteStore,
};

use crate::options::StoreUrl;

/// The store, connected and answering: a store that cannot be reached stops the start with one
/// line naming the problem. The same `Arc` serves the session layer and the
/// [`SessionRegistry`](cloakroom::SessionRegistry).
pub(crate) async fn open(url: &StoreUrl) -> anyhow::Result<Arc<dyn OwnerIndex>> {
    let store: Arc<dyn OwnerIndex> = match url {
        StoreUrl::Memory => Arc::new(MemoryStore::new()),
        StoreUrl::Sqlite(path) => Arc::new(
            SqliteStore::connect(path)
                .await
                .with_context(|| format!("cannot open the {}", url.describe()))?,
        ),
        StoreUrl::Redis(redis) => Arc::new(
            RedisStore::connect(redis)
                .await
                .with_context(|| format!("cannot connect to {}", url.describe()))?,
        ),
        // The demo makes connect-pg-simple's table on first run.
        StoreUrl::Postgres(postgres) => Arc::new(
            PostgresStore::builder(postgres.as_str())
                .with_create_table_if_missing(true)
                .build()
                .await
                .with_context(|| format!("cannot connect to {}", url.describe()))?,
        ),
        // The demo makes express-mysql-session's table, and adds the owner column and its index
        // (to a table Express made too).
        StoreUrl::Mysql(mysql) => Arc::new(
            MySqlStore::builder(mysql.as_str())
                .with_create_table_if_missing(true)
                .build()
                .await
                .with_context(|| format!("cannot connect to {}", url.describe()))?,
        ),
        // The demo makes the table (with the owner index and TTL) on first run.
        StoreUrl::Dynamodb { endpoint, table } => {
            let mut builder = DynamoDbStore::builder()
                .with_table_name(table.as_str())
                .with_create_table_if_missing(true);
            if let Some(endpoint) = endpoint {
                builder = builder.with_endpoint_url(endpoint.as_str());
                // A local stand-in (dynalite, DynamoDB Local) accepts any credentials and
                // region: where the environment names none, the demo runs without them.
                if !has_env(&["AWS_ACCESS_KEY_ID", "AWS_PROFILE"]) {
                    tracing::info!(
                        "no AWS credentials configured: using placeholder ones for the local stand-in"
                    );
                    builder = builder.with_credentials("local-stand-in", "local-stand-in");
                }
                if !has_env(&["AWS_REGION", "AWS_DEFAULT_REGION"]) {
                    builder = builder.with_region("us-east-1");
                }
            }
            Arc::new(
                builder
                    .build()
                    .await
                    .with_context(|| format!("cannot open the {}", url.describe()))?,
            )
        }
    };
    store
        .get(&Id::generate())
        .await
        .with_context(|| format!("the {} session store does not answer", url.describe()))?;
    Ok(store)
}

/// Whether any of these environment variables is set.
fn has_env(names: &[&str]) -> bool {
    names.iter().any(|name| std::env::var_os(name).is_some())
}
