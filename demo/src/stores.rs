//! Opening the store `--store` names, and checking that it answers. Every store the demo
//! offers can list a user's sessions ([`OwnerIndex`]), for the "Your sessions" page.

use std::sync::Arc;

use anyhow::Context as _;
use cloakroom::{
    Id, MemoryStore, OwnerIndex, PostgresStore, RedisStore, SessionStore as _, SqliteStore,
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
    };
    store
        .get(&Id::generate())
        .await
        .with_context(|| format!("the {} session store does not answer", url.describe()))?;
    Ok(store)
}
