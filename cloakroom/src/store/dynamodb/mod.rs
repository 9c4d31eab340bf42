//! [`DynamoDbStore`]: sessions in Amazon DynamoDB, in connect-dynamodb's item layout.
//!
//! ```no_run
//! # async fn example() -> Result<(), cloakroom::store::Error> {
//! use cloakroom::store::dynamodb::DynamoDbStore;
//!
//! // Region, credentials and endpoint from the standard AWS configuration (environment,
//! // `~/.aws/config` and `~/.aws/credentials`, web identity, container or instance roles).
//! let store = DynamoDbStore::builder()
//!     .with_table_name("sessions")
//!     .with_create_table_if_missing(true)
//!     .build()
//!     .await?;
//! # let _ = store;
//! # Ok(())
//! # }
//! ```
//!
//! # Item layout
//! One item a session, as connect-dynamodb 3.0.5 writes it, in a table whose hash key is a
//! string (`id` by default, [`with_hash_key`](DynamoDbStoreBuilder::with_hash_key)):
//!
//! | attribute | type | value |
//! | --- | --- | --- |
//! | `id` | S | the prefix (`sess:` by default) and the session id |
//! | `expires` | N | when the session expires, in seconds since the epoch (see below) |
//! | `type` | S | `connect-session` |
//! | `sess` | S | express-session's JSON, byte for byte |
//! | `owner` | S | this store only: the session's owner, when it has one (see below) |
//!
//! The table holds nothing else of this store's (no lock items, no counters), so
//! connect-dynamodb reads and writes it as before. connect-dynamodb's `specialKeys` (top-level
//! copies of session fields) are not written: a write from this store replaces the whole item,
//! as connect-dynamodb's own does, so they are dropped until Node writes the session again.
//!
//! # Expiry and TTL
//! `expires` is connect-dynamodb's: `floor(now / 1000)` seconds plus the cookie's remaining
//! `maxAge` in seconds (so it often has a fraction: `1700000059.993`), or plus the default
//! lifetime ([`with_default_ttl`](DynamoDbStoreBuilder::with_default_ttl), one day) for a
//! browser-session cookie. An item is read as expired, as Node reads it, once
//! `floor(now_seconds) >= expires`; an item without `expires` never expires. Clocks are this
//! process's, as connect-dynamodb uses Node's.
//!
//! DynamoDB deletes expired items itself when the table's Time to Live is set on `expires`
//! (connect-dynamodb's README recommends it): a table this store creates gets it
//! ([`with_create_table_if_missing`](DynamoDbStoreBuilder::with_create_table_if_missing)).
//! DynamoDB deletes them up to a few days late, and stand-ins such as dynalite never, so every
//! read checks the expiry too, and [`DynamoDbStore::prune_expired`] deletes expired items on
//! demand (connect-dynamodb's optional `reapInterval` does the same with a scan).
//!
//! # Compare-and-set
//! Every write is one conditional `PutItem` (a record already expired: a conditional
//! `DeleteItem`); a failed condition is a [`SetOutcome::Conflict`]:
//!
//! - a new session: `attribute_not_exists(sess) OR expires <= :now` (no item has no `sess`
//!   either), so a live session is never overwritten, while an expired item or a stub (below)
//!   is;
//! - a loaded session: `sess = :loaded AND NOT expires <= :now`: Node's rule, word for word (a
//!   missing `expires`, or one that is not a number, compares false: never expired). The
//!   record's [`Version`] is its stored `sess` text, as for `PostgresStore`. No version
//!   attribute is needed, so a write from Node (which replaces the item whole and would drop
//!   one) still changes what is compared: a Rust request that loaded a session before an
//!   Express app rewrote it gets a conflict rather than overwriting Node's change. Identical
//!   text written again keeps the version, which is harmless: the content is the same.
//!
//! The loaded text is sent with the write, so a compare-and-set request is up to twice the
//! record's size (still well within DynamoDB's request limits). A write whose answer was lost
//! (a dropped connection, a 5xx) may still have landed, and its retry then fails its own
//! condition: so the store retries conditional writes itself (the client's retries are off for
//! them), up to three attempts within the timeout, and after a retry reads a failed condition's
//! record back: exactly this write's text means it landed ([`SetOutcome::Written`]), anything
//! else is a conflict. Without a retry a failed condition is a conflict, even where the stored
//! text happens to be the same. A touch is an `UpdateItem` of
//! `expires` (and of `owner` where it is missing, see below) under `attribute_exists(sess) AND
//! NOT expires <= :now`: it never creates an item and never changes the version.
//! connect-dynamodb's own touch has no condition, so touching a destroyed session from Node
//! leaves a stub, `{id, expires}`, with no `sess`: this store reads it as absent, as Node does,
//! and a new session may take its place.
//!
//! connect-dynamodb itself has no compare-and-set: a Node process can still overwrite a
//! concurrent write from this store (last write wins there, as it always has).
//!
//! The conditions are written in the fewest terms that say them: a stand-in such as dynalite
//! parses every expression anew, and the longer forms these replaced (`attribute_not_exists`
//! inside a parenthesised `OR`) cost it about 1.5 times as much CPU per compare-and-set in the
//! benchmark (the README's MySQL and DynamoDB figures).
//!
//! # Size limit
//! DynamoDB refuses items over 400 KB, names and values counted, so the largest record this
//! store writes is that less the other attributes (about 400 KB less 60 bytes and the key), or
//! [`with_max_record_size`](DynamoDbStoreBuilder::with_max_record_size) if smaller; a larger
//! one is an [`ErrorKind::TooLarge`] error and nothing is written.
//!
//! # Sessions by owner
//! The store implements [`OwnerIndex`]. A session with an owner (at the owner path,
//! [`with_owner_path`](DynamoDbStoreBuilder::with_owner_path), `passport.user` by default) is
//! written with a top-level `owner` attribute, in the same `PutItem` as the rest of the item, so
//! the item and its owner change together, atomically. A table this store creates has a global
//! secondary index on it, `owner-index` (keys only, sparse: sessions without an owner have no
//! entry). [`sessions_of`](OwnerIndex::sessions_of) queries that index, then reads each session
//! it names with a strongly consistent `GetItem` and keeps it only if it is live and still names
//! the owner: what it returns is exact.
//!
//! What is not atomic, and why: a global secondary index is updated after the write returns,
//! and DynamoDB offers no consistent read of one, so on DynamoDB itself a session written a
//! moment ago (typically well under a second) can be missing from `sessions_of`, and one signed
//! out a moment ago is skipped by the verifying read. DynamoDB has no way to make that
//! exact short of reading the whole table: a table without the index (one connect-dynamodb
//! created) is read that way, with a strongly consistent `Scan` filtered on `owner`, which is
//! exact but costs a read of every item. dynalite updates its indexes within the write.
//!
//! Sessions an Express app writes have no `owner` attribute (connect-dynamodb replaces the
//! item whole), so they are found once this store writes or touches them: a touch sets `owner`
//! where it is missing.
//!
//! # Table
//! Like connect-dynamodb, the store creates the table only when asked
//! ([`with_create_table_if_missing`](DynamoDbStoreBuilder::with_create_table_if_missing)), with
//! connect-dynamodb's key schema and 5 read and 5 write capacity units, the `owner-index`, and
//! Time to Live on `expires` (skipped, with a warning, where the server has no such operation,
//! as in dynalite).
//!
//! # Under load
//! The store sends at most [`with_reads_in_flight`](DynamoDbStoreBuilder::with_reads_in_flight)
//! reads (8 by default) at a time. A read that finds them all out waits, and the first to get a
//! turn sends every read waiting then, up to 100, as one strongly consistent `BatchGetItem`;
//! each read gets its own item. Nothing waits for a batch to fill: with a turn free, a read is a
//! `GetItem` of its own, sent at once. The client spends most of a read on signing and sending
//! its request, and a stand-in such as dynalite most of its on taking one in, so one request for
//! many sessions costs both little more than one for a single session; DynamoDB bills a batch's
//! reads as it bills them alone. A read DynamoDB leaves out of a batch (`UnprocessedKeys`:
//! throttled, or the answer over its 16 MB limit) is made again alone, in the batch's turn; every
//! read of a batch that fails, or whose sender's timeout ran out, is made again alone too.
//! Writes are not batched: `BatchWriteItem` takes no conditions.
//!
//! # Failures and timeouts
//! Every call is bounded by the store's [timeout](DynamoDbStoreBuilder::with_timeout) (5 s by
//! default), retries included, and fails with [`ErrorKind::Timeout`] when it runs out. A
//! refused or dropped connection, throttling, and DynamoDB's 5xx answers are
//! [`ErrorKind::Unavailable`]: both are transient, the middleware answers 503 and the next
//! request tries again; the client reconnects by itself. A write that times out may still have
//! been applied. Errors name the operation and DynamoDB's error code, never a key, an item or
//! DynamoDB's message.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{
    BehaviorVersion, Credentials, Region, StalledStreamProtectionConfig,
};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    Projection, ProjectionType, ProvisionedThroughput, ScalarAttributeType, Select,
    TimeToLiveSpecification,
};

use super::join::join_all;
use super::{
    Condition, Error, ErrorKind, Loaded, OwnerIndex, OwnerPath, SessionStore, SetOutcome, Version,
};
use crate::id::Id;
use crate::record::Record;
use crate::time::Timestamp;

mod calls;
mod item;
mod reads;

/// The AWS SDK's DynamoDB crate this store is built on, for
/// [`with_client`](DynamoDbStoreBuilder::with_client) and [`DynamoDbStore::client`].
pub use aws_sdk_dynamodb;

use calls::{CallFailed, Outcome};
use item::{EXPIRES, SESS, Stored};
use reads::InFlight;

use super::batch::Batches;

/// connect-dynamodb's table name.
const DEFAULT_TABLE: &str = "sessions";
/// connect-dynamodb's hash key.
const DEFAULT_HASH_KEY: &str = "id";
/// connect-dynamodb's prefix (its README says `sess`; its code uses `sess:`).
const DEFAULT_PREFIX: &str = "sess:";
/// connect-dynamodb's lifetime for a cookie without `maxAge`: one day.
const DEFAULT_TTL: Duration = Duration::from_secs(86_400);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The owner attribute, and the index on it.
const OWNER: &str = "owner";
const OWNER_INDEX: &str = "owner-index";
/// connect-dynamodb's capacity for a table it creates.
const CAPACITY_UNITS: i64 = 5;
/// How many deletes `clear` and `prune_expired` keep in flight.
const DELETES_IN_FLIGHT: usize = 16;
/// How many reads `sessions_of` asks for at once.
const READS_IN_FLIGHT: usize = 16;
/// How many reads the store sends at a time by default; the others wait and go together.
const DEFAULT_READS_IN_FLIGHT: usize = 8;

/// Sessions in DynamoDB, in connect-dynamodb's item layout, so Node and Rust services can share
/// them (see the [module docs](self)).
///
/// Supports compare-and-set and every optional method (`all`, `len` and `clear` scan the table
/// for the store's prefix), and finds sessions by owner ([`OwnerIndex`]). Cloning is cheap and
/// every clone is the same store.
#[derive(Clone)]
pub struct DynamoDbStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// `client` with its retries off, for conditional writes: a retry of one that landed would
    /// fail its own condition, so the store retries them itself (`conditional_write`). Built
    /// once rather than as a per-call config override, which the SDK turns into runtime
    /// plugins again on every call.
    writer: Client,
    table: String,
    hash_key: String,
    prefix: String,
    default_ttl_ms: i64,
    default_ttl: Duration,
    timeout: Duration,
    max_record_size: usize,
    owner_path: OwnerPath,
    /// Whether the table has the owner index: asked once, on first use.
    owner_index: tokio::sync::OnceCell<bool>,
    /// `get`'s reads, and their turns (see "Under load" in the module docs).
    reads: Batches<reads::Get>,
    in_flight: InFlight,
}

/// Builds a [`DynamoDbStore`]; see [`DynamoDbStore::builder`].
pub struct DynamoDbStoreBuilder {
    client: Option<Client>,
    endpoint_url: Option<String>,
    region: Option<String>,
    credentials: Option<(String, String)>,
    table: String,
    hash_key: String,
    prefix: String,
    default_ttl: Duration,
    timeout: Duration,
    max_record_size: usize,
    owner_path: OwnerPath,
    create_table: bool,
    reads_in_flight: usize,
}

impl fmt::Debug for DynamoDbStoreBuilder {
    // Credentials never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoDbStoreBuilder")
            .field("client", &self.client.as_ref().map(|_| "given"))
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("credentials", &self.credentials.as_ref().map(|_| "given"))
            .field("table", &self.table)
            .field("hash_key", &self.hash_key)
            .field("prefix", &self.prefix)
            .field("default_ttl", &self.default_ttl)
            .field("timeout", &self.timeout)
            .field("max_record_size", &self.max_record_size)
            .field("owner_path", &self.owner_path)
            .field("create_table", &self.create_table)
            .field("reads_in_flight", &self.reads_in_flight)
            .finish()
    }
}

impl DynamoDbStoreBuilder {
    /// A client of your own, configured as you like, instead of one from the standard AWS
    /// configuration. The endpoint, region and credentials given to this builder are then
    /// ignored, and so is the store's retry policy: the store's timeout still bounds each call.
    #[must_use]
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Where DynamoDB is, such as `http://127.0.0.1:8000` for a local stand-in (dynalite,
    /// DynamoDB Local). By default the standard AWS configuration decides
    /// (`AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL`, the profile's `endpoint_url`), and
    /// otherwise the region's own endpoint.
    #[must_use]
    pub fn with_endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// The AWS region, such as `eu-west-1`. By default the standard AWS configuration decides
    /// (`AWS_REGION`, the profile's `region`, …).
    #[must_use]
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Static credentials, instead of the standard AWS configuration's (environment, profile
    /// files, web identity, container and instance roles). Mostly for local stand-ins, which
    /// accept any.
    #[must_use]
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some((access_key_id.into(), secret_access_key.into()));
        self
    }

    /// The table: connect-dynamodb's `table` option, `sessions` by default.
    #[must_use]
    pub fn with_table_name(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The table's hash key attribute (a string): connect-dynamodb's `hashKey` option, `id` by
    /// default.
    #[must_use]
    pub fn with_hash_key(mut self, hash_key: impl Into<String>) -> Self {
        self.hash_key = hash_key.into();
        self
    }

    /// The key prefix: connect-dynamodb's `prefix` option, `sess:` by default (`""` for none).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a session whose cookie has no expiry (a browser-session cookie) lives after its
    /// last save or touch: one day by default, as connect-dynamodb.
    #[must_use]
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How long one call may take, retries included, before it fails with
    /// [`ErrorKind::Timeout`]: 5 s by default.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest record, in bytes of JSON, written or read
    /// ([`DEFAULT_MAX_RECORD_SIZE`](super::DEFAULT_MAX_RECORD_SIZE) by default); DynamoDB's
    /// 400 KB item limit applies on top of it (see the [module docs](self#size-limit)).
    #[must_use]
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
    }

    /// Where a session's owner is in its data, for the owner attribute and
    /// [`OwnerIndex`]: `passport.user` by default.
    #[must_use]
    pub fn with_owner_path(mut self, path: OwnerPath) -> Self {
        self.owner_path = path;
        self
    }

    /// How many reads the store sends to DynamoDB at a time: 8 by default (at least 1). Reads
    /// beyond that wait, and go together as one `BatchGetItem` when a turn frees (see "Under
    /// load" in the [module docs](self#under-load)). With fewer reads at once than this, every
    /// read is a `GetItem` of its own, sent at once.
    #[must_use]
    pub fn with_reads_in_flight(mut self, reads: usize) -> Self {
        self.reads_in_flight = reads;
        self
    }

    /// Whether `build` creates the table when it does not exist (with the owner index and Time
    /// to Live, see the [module docs](self#table)); off by default, as in connect-dynamodb.
    #[must_use]
    pub fn with_create_table_if_missing(mut self, create: bool) -> Self {
        self.create_table = create;
        self
    }

    /// Loads the AWS configuration (unless a client was given) and, if asked, creates the
    /// table. Without table creation, nothing is sent to DynamoDB yet.
    ///
    /// # Errors
    /// When the table cannot be described or created: [`ErrorKind::Unavailable`] or
    /// [`ErrorKind::Timeout`] while DynamoDB cannot be reached, [`ErrorKind::Backend`] when it
    /// refuses.
    pub async fn build(self) -> Result<DynamoDbStore, Error> {
        let client = match self.client {
            Some(client) => client,
            None => {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    // Fail over quickly: the store's timeout bounds the whole call, and the
                    // middleware answers 503 rather than holding the request.
                    .retry_config(
                        RetryConfig::standard()
                            .with_max_attempts(3)
                            .with_initial_backoff(Duration::from_millis(20))
                            .with_max_backoff(Duration::from_millis(500)),
                    )
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(1))
                            .build(),
                    )
                    // For streaming bodies; the store's timeout bounds each call already.
                    .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
                if let Some(url) = self.endpoint_url {
                    loader = loader.endpoint_url(url);
                }
                if let Some(region) = self.region {
                    loader = loader.region(Region::new(region));
                }
                if let Some((id, secret)) = self.credentials {
                    loader = loader.credentials_provider(Credentials::new(
                        id,
                        secret,
                        None,
                        None,
                        "cloakroom",
                    ));
                }
                Client::new(&loader.load().await)
            }
        };
        let default_ttl_ms = i64::try_from(self.default_ttl.as_millis()).unwrap_or(i64::MAX);
        // The same HTTP client and connections, without retries.
        let writer = Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        let reads = Batches::new(reads::Get {
            client: client.clone(),
            table: self.table.clone(),
            hash_key: self.hash_key.clone(),
            timeout: self.timeout,
        });
        let store = DynamoDbStore {
            inner: Arc::new(Inner {
                client,
                writer,
                table: self.table,
                hash_key: self.hash_key,
                prefix: self.prefix,
                default_ttl_ms,
                default_ttl: self.default_ttl,
                timeout: self.timeout,
                max_record_size: self.max_record_size,
                owner_path: self.owner_path,
                owner_index: tokio::sync::OnceCell::new(),
                reads,
                in_flight: InFlight::new(self.reads_in_flight),
            }),
        };
        if self.create_table {
            store.create_table_if_missing().await?;
        }
        Ok(store)
    }
}

impl DynamoDbStore {
    /// A builder with connect-dynamodb's defaults: table `sessions`, hash key `id`, prefix
    /// `sess:`, and the region, credentials and endpoint of the standard AWS configuration.
    pub fn builder() -> DynamoDbStoreBuilder {
        DynamoDbStoreBuilder {
            client: None,
            endpoint_url: None,
            region: None,
            credentials: None,
            table: DEFAULT_TABLE.to_owned(),
            hash_key: DEFAULT_HASH_KEY.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            default_ttl: DEFAULT_TTL,
            timeout: DEFAULT_TIMEOUT,
            max_record_size: super::DEFAULT_MAX_RECORD_SIZE,
            owner_path: OwnerPath::default(),
            create_table: false,
            reads_in_flight: DEFAULT_READS_IN_FLIGHT,
        }
    }

    /// The DynamoDB client, for calls of your own.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.inner.table
    }

    fn key(&self, id: &Id) -> String {
        let mut key = String::with_capacity(self.inner.prefix.len() + id.as_str().len());
        key.push_str(&self.inner.prefix);
        key.push_str(id.as_str());
        key
    }

    fn key_value(&self, id: &Id) -> AttributeValue {
        AttributeValue::S(self.key(id))
    }

    /// The id in a key under the prefix; `None` for a key outside it.
    fn id_of(&self, item: &std::collections::HashMap<String, AttributeValue>) -> Option<Id> {
        match item.get(&self.inner.hash_key) {
            Some(AttributeValue::S(key)) => key
                .strip_prefix(self.inner.prefix.as_str())
                .map(Id::from_string),
            _ => None,
        }
    }

    /// Creates the table as described in the [module docs](self#table), unless it exists.
    async fn create_table_if_missing(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let described = calls::run(
            "DescribeTable",
            inner.timeout,
            inner
                .client
                .describe_table()
                .table_name(&inner.table)
                .send(),
        )
        .await;
        match described {
            Ok(_) => return Ok(()),
            Err(error) if is_code(&error, "ResourceNotFoundException") => {}
            Err(error) => return Err(error),
        }
        let throughput = || {
            ProvisionedThroughput::builder()
                .read_capacity_units(CAPACITY_UNITS)
                .write_capacity_units(CAPACITY_UNITS)
                .build()
                .map_err(built)
        };
        let string_attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(built)
        };
        let hash = |name: &str| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(KeyType::Hash)
                .build()
                .map_err(built)
        };
        let owner_index = GlobalSecondaryIndex::builder()
            .index_name(OWNER_INDEX)
            .key_schema(hash(OWNER)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .provisioned_throughput(throughput()?)
            .build()
            .map_err(built)?;
        let created = calls::run(
            "CreateTable",
            inner.timeout,
            inner
                .client
                .create_table()
                .table_name(&inner.table)
                .attribute_definitions(string_attribute(&inner.hash_key)?)
                .attribute_definitions(string_attribute(OWNER)?)
                .key_schema(hash(&inner.hash_key)?)
                .provisioned_throughput(throughput()?)
                .global_secondary_indexes(owner_index)
                .send(),
        )
        .await;
        match created {
            Ok(_) => {}
            // Another process created it first.
            Err(error) if is_code(&error, "ResourceInUseException") => return Ok(()),
            Err(error) => return Err(error),
        }
        self.wait_until_active().await?;
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(EXPIRES)
            .build()
            .map_err(built)?;
        let enabled = calls::plain(
            "UpdateTimeToLive",
            inner.timeout,
            inner
                .client
                .update_time_to_live()
                .table_name(&inner.table)
                .time_to_live_specification(ttl)
                .send(),
        )
        .await;
        match enabled {
            Ok(_) => Ok(()),
            // dynalite: expired items are still never read, and `prune_expired` deletes them.
            Err(error) if is_code(&error, "UnknownOperationException") => {
                tracing::warn!(
                    table = %inner.table,
                    "this DynamoDB server cannot set Time to Live: expired sessions stay until pruned"
                );
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Waits, within the timeout, until a table just created is `ACTIVE` (DynamoDB takes a few
    /// seconds; dynalite a moment).
    async fn wait_until_active(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + inner.timeout.max(Duration::from_secs(30));
        loop {
            let described = calls::plain(
                "DescribeTable",
                inner.timeout,
                inner
                    .client
                    .describe_table()
                    .table_name(&inner.table)
                    .send(),
            )
            .await?;
            let active = described
                .table()
                .and_then(|table| table.table_status())
                .is_some_and(|status| status.as_str() == "ACTIVE");
            if active {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    CallFailed::new("CreateTable", "the table did not become active"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the table has the owner index; asked once.
    async fn has_owner_index(&self) -> Result<bool, Error> {
        let inner = &self.inner;
        inner
            .owner_index
            .get_or_try_init(|| async {
                let described = calls::plain(
                    "DescribeTable",
                    inner.timeout,
                    inner
                        .client
                        .describe_table()
                        .table_name(&inner.table)
                        .send(),
                )
                .await?;
                Ok(described.table().is_some_and(|table| {
                    table
                        .global_secondary_indexes()
                        .iter()
                        .any(|index| index.index_name() == Some(OWNER_INDEX))
                }))
            })
            .await
            .copied()
    }

    /// Deletes every expired session under the prefix now (a strongly consistent scan, then a
    /// conditional delete of each, so a session written again meanwhile is kept), and returns
    /// how many. Not needed where the table's Time to Live is on, except to delete sooner than
    /// DynamoDB does.
    ///
    /// # Errors
    /// As for any call; deletes done before a failure stay done.
    pub async fn prune_expired(&self) -> Result<u64, Error> {
        let now = Timestamp::now();
        let now_text = item::whole_seconds(now).to_string();
        let keys = self
            .scan_keys(
                Some("#e <= :now"),
                vec![(":now", AttributeValue::N(now_text.clone()))],
            )
            .await?;
        let deleted = self
            .delete_all(keys, Some(("#e <= :now", now_text)))
            .await?;
        Ok(deleted)
    }

    /// Keys of the items under the prefix that pass `filter` (names `#k`, `#e`, `#s` and
    /// `#o` may be used), by a strongly consistent scan.
    async fn scan_keys(
        &self,
        filter: Option<&str>,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Vec<AttributeValue>, Error> {
        let items = self.scan(filter, values, Some("#k")).await?;
        Ok(items
            .into_iter()
            .filter_map(|mut item| item.remove(&self.inner.hash_key))
            .collect())
    }

    /// Every item under the prefix that passes `filter`, page by page, strongly consistent,
    /// with only the attributes of `projection` if given.
    async fn scan(
        &self,
        filter: Option<&str>,
        values: Vec<(&str, AttributeValue)>,
        projection: Option<&str>,
    ) -> Result<Vec<std::collections::HashMap<String, AttributeValue>>, Error> {
        let inner = &self.inner;
        let (expression, values) = self.prefix_filter(filter, values);
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut request = inner
                .client
                .scan()
                .table_name(&inner.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if let Some(expression) = &expression {
                request = request.filter_expression(expression);
            }
            if let Some(projection) = projection {
                request = request.projection_expression(projection);
            }
            request = add_names(request, &inner.hash_key, expression.as_deref(), projection);
            for (name, value) in &values {
                request = request.expression_attribute_values(*name, value.clone());
            }
            let page = calls::plain("Scan", inner.timeout, request.send()).await?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(items)
    }

    /// How many items under the prefix pass `filter`, counted by DynamoDB.
    async fn count(
        &self,
        filter: Option<&str>,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<usize, Error> {
        let inner = &self.inner;
        let (expression, values) = self.prefix_filter(filter, values);
        let mut total = 0usize;
        let mut start = None;
        loop {
            let mut request = inner
                .client
                .scan()
                .table_name(&inner.table)
                .consistent_read(true)
                .select(Select::Count)
                .set_exclusive_start_key(start.take());
            if let Some(expression) = &expression {
                request = request.filter_expression(expression);
                request = add_names(request, &inner.hash_key, Some(expression), None);
            }
            for (name, value) in &values {
                request = request.expression_attribute_values(*name, value.clone());
            }
            let page = calls::plain("Scan", inner.timeout, request.send()).await?;
            total += usize::try_from(page.count).unwrap_or(0);
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(total)
    }

    /// `filter` and `begins_with(#k, :prefix)`, with the prefix's value added.
    fn prefix_filter<'a>(
        &self,
        filter: Option<&str>,
        mut values: Vec<(&'a str, AttributeValue)>,
    ) -> (Option<String>, Vec<(&'a str, AttributeValue)>) {
        let prefix = &self.inner.prefix;
        let expression = match (prefix.is_empty(), filter) {
            (true, None) => None,
            (true, Some(filter)) => Some(filter.to_owned()),
            (false, filter) => {
                values.push((":prefix", AttributeValue::S(prefix.clone())));
                Some(match filter {
                    Some(filter) => format!("begins_with(#k, :prefix) AND ({filter})"),
                    None => "begins_with(#k, :prefix)".to_owned(),
                })
            }
        };
        (expression, values)
    }

    /// Deletes each key, a few at a time, under `condition` (an expression on `#e` with
    /// `:now`) if given; returns how many were deleted (a failed condition is not).
    async fn delete_all(
        &self,
        keys: Vec<AttributeValue>,
        condition: Option<(&str, String)>,
    ) -> Result<u64, Error> {
        let inner = &self.inner;
        let mut deleted = 0;
        for batch in keys.chunks(DELETES_IN_FLIGHT) {
            let deletes = batch.iter().map(|key| {
                let mut request = inner
                    .client
                    .delete_item()
                    .table_name(&inner.table)
                    .key(&inner.hash_key, key.clone());
                if let Some((expression, now)) = &condition {
                    request = request
                        .condition_expression(*expression)
                        .expression_attribute_names("#e", EXPIRES)
                        .expression_attribute_values(":now", AttributeValue::N(now.clone()));
                }
                calls::run("DeleteItem", inner.timeout, request.send())
            });
            for outcome in join_all(deletes).await {
                if let Outcome::Done(_) = outcome? {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// The ids whose `owner` attribute is `owner`: from the index, or by a scan without it.
    async fn ids_owned_by(&self, owner: &str) -> Result<Vec<Id>, Error> {
        let inner = &self.inner;
        let owner_value = AttributeValue::S(owner.to_owned());
        if !self.has_owner_index().await? {
            let items = self
                .scan(
                    Some("#o = :owner"),
                    vec![(":owner", owner_value)],
                    Some("#k"),
                )
                .await?;
            return Ok(items.iter().filter_map(|item| self.id_of(item)).collect());
        }
        let mut ids = Vec::new();
        let mut start = None;
        loop {
            let request = inner
                .client
                .query()
                .table_name(&inner.table)
                .index_name(OWNER_INDEX)
                .key_condition_expression("#o = :owner")
                .expression_attribute_names("#o", OWNER)
                .expression_attribute_values(":owner", owner_value.clone())
                .set_exclusive_start_key(start.take());
            let page = calls::plain("Query", inner.timeout, request.send()).await?;
            ids.extend(
                page.items
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|item| self.id_of(item)),
            );
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(ids)
    }

    /// A conditional write, attempted up to three times within the store's timeout while it
    /// fails transiently (a dropped connection, throttling, a 5xx). The client's own retries
    /// are off for it (`Inner::writer`): this one tells the caller that a retry happened, so a
    /// failed condition after one can be checked ([`Outcome::Retried`]).
    async fn conditional_write<T, E, R, F>(
        &self,
        operation: &'static str,
        attempt: impl Fn() -> F,
    ) -> Result<Outcome<(T, bool)>, Error>
    where
        F: Future<Output = Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>>,
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
        R: fmt::Debug + calls::HasStatus,
    {
        let timeout = self.inner.timeout;
        let attempts = async {
            let mut tries = 0;
            let mut backoff = Duration::from_millis(20);
            loop {
                tries += 1;
                let retried = tries > 1;
                match calls::run(operation, timeout, attempt()).await {
                    Ok(Outcome::Done(output)) => return Ok(Outcome::Done((output, retried))),
                    Ok(_) if retried => return Ok(Outcome::Retried),
                    Ok(_) => return Ok(Outcome::ConditionFailed),
                    Err(error) if error.kind() == ErrorKind::Unavailable && tries < 3 => {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        match tokio::time::timeout(timeout, attempts).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                CallFailed::new(operation, format!("no answer within {timeout:?}")),
            )),
        }
    }

    /// The owner attribute for `record`, if it has an owner.
    fn owner_of(&self, record: &Record) -> Option<String> {
        self.inner.owner_path.owner_of(record.data())
    }
}

/// Adds the attribute names that `expression` or `projection` use (DynamoDB refuses unused
/// ones).
fn add_names(
    mut request: aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder,
    hash_key: &str,
    expression: Option<&str>,
    projection: Option<&str>,
) -> aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder {
    let uses = |name: &str| {
        expression.is_some_and(|text| text.contains(name))
            || projection.is_some_and(|text| text.contains(name))
    };
    for (placeholder, attribute) in [
        ("#k", hash_key),
        ("#e", EXPIRES),
        ("#s", SESS),
        ("#o", OWNER),
    ] {
        if uses(placeholder) {
            request = request.expression_attribute_names(placeholder, attribute);
        }
    }
    request
}

/// Whether `error` is DynamoDB's error `code`.
fn is_code(error: &Error, code: &str) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<CallFailed>())
        .is_some_and(|failed| failed.code() == Some(code))
}

/// A request that could not be built: a bug here.
fn built(error: aws_sdk_dynamodb::error::BuildError) -> Error {
    Error::new(ErrorKind::Backend, error)
}

/// A live item's JSON as a [`Loaded`], checked against the size limit first.
fn loaded(
    json: String,
    expires_at: Option<Timestamp>,
    max_record_size: usize,
) -> Result<Loaded, Error> {
    super::check_record_size(json.len(), max_record_size)?;
    let record = super::decode_record(&json)?;
    Ok(Loaded {
        record,
        version: Version::from_bytes(json.into_bytes()),
        expires_at,
    })
}

#[async_trait]
impl SessionStore for DynamoDbStore {
    fn owner_path(&self) -> &OwnerPath {
        &self.inner.owner_path
    }

    /// A strongly consistent `GetItem`; under load, with other reads in one `BatchGetItem`.
    async fn get(&self, id: &Id) -> Result<Option<Loaded>, Error> {
        let inner = &self.inner;
        // Taken before asking, so `expires_at` errs early, never late.
        let now = Timestamp::now();
        let key = self.key(id);
        let read = inner.reads.call(&inner.in_flight, || key.clone());
        let item = tokio::time::timeout(inner.timeout, read)
            .await
            .map_err(|_| reads::timed_out(inner.timeout))??;
        match item::read(item, now) {
            Stored::Absent => Ok(None),
            Stored::Live { json, expires_at } => {
                loaded(json, expires_at, inner.max_record_size).map(Some)
            }
        }
    }

    async fn set(
        &self,
        id: &Id,
        record: &Record,
        condition: Condition<'_>,
    ) -> Result<SetOutcome, Error> {
        let inner = &self.inner;
        if condition.lease().is_some() {
            // Not a `LockStore`: no lease can hold a lock here.
            return Err(Error::unsupported());
        }
        let expected = match condition.expected() {
            None => None,
            // Versions this store hands out are stored text; any other cannot match.
            Some(version) => match version.as_bytes().map(std::str::from_utf8) {
                Some(Ok(text)) => Some(text),
                _ => return Ok(SetOutcome::Conflict),
            },
        };
        let now = Timestamp::now();
        let now_text = item::whole_seconds(now).to_string();
        let expires_ms = item::expires_millis(record.cookie().expires(), inner.default_ttl_ms, now);
        let json = record.to_json();
        let key = self.key(id);
        let expired = item::expires_already(expires_ms, now);
        let owner = if expired { None } else { self.owner_of(record) };
        let others = item::item_size(
            &inner.hash_key,
            &key,
            "",
            owner.as_deref().map(|owner| (OWNER, owner)),
        );
        let limit = inner
            .max_record_size
            .min(item::MAX_ITEM_SIZE.saturating_sub(others));
        super::check_record_size(json.len(), limit)?;

        let mut values = vec![(":now", AttributeValue::N(now_text))];
        let expression = match expected {
            None => "attribute_not_exists(#s) OR #e <= :now",
            Some(text) => {
                values.push((":loaded", AttributeValue::S(text.to_owned())));
                "#s = :loaded AND NOT #e <= :now"
            }
        };
        let version = Version::from_bytes(json.as_bytes());
        let outcome = if expired {
            let mut request = inner
                .writer
                .delete_item()
                .table_name(&inner.table)
                .key(&inner.hash_key, AttributeValue::S(key))
                .condition_expression(expression)
                .expression_attribute_names("#s", SESS)
                .expression_attribute_names("#e", EXPIRES);
            for (name, value) in values {
                request = request.expression_attribute_values(name, value);
            }
            self.conditional_write("DeleteItem", || request.clone().send())
                .await?
                .map(|(_, retried)| retried)
        } else {
            let item = item::session_item(
                &inner.hash_key,
                key,
                expires_ms,
                json,
                owner.map(|owner| (OWNER, owner)),
            );
            let mut request = inner
                .writer
                .put_item()
                .table_name(&inner.table)
                .set_item(Some(item))
                .condition_expression(expression)
                .expression_attribute_names("#s", SESS)
                .expression_attribute_names("#e", EXPIRES);
            for (name, value) in values {
                request = request.expression_attribute_values(name, value);
            }
            self.conditional_write("PutItem", || request.clone().send())
                .await?
                .map(|(_, retried)| retried)
        };
        match outcome {
            Outcome::Done(_) => Ok(SetOutcome::Written(version)),
            // After a retry, a failed condition may be this write's own first attempt, landed
            // with its answer lost: what is stored tells. Without one it is a conflict.
            Outcome::Retried => {
                let stored = self.get(id).await?;
                let landed = if expired {
                    stored.is_none()
                } else {
                    stored.is_some_and(|stored| stored.version == version)
                };
                Ok(if landed {
                    SetOutcome::Written(version)
                } else {
                    SetOutcome::Conflict
                })
            }
            Outcome::ConditionFailed => Ok(SetOutcome::Conflict),
        }
    }

    /// `DeleteItem`.
    async fn destroy(&self, id: &Id) -> Result<(), Error> {
        let inner = &self.inner;
        calls::plain(
            "DeleteItem",
            inner.timeout,
            inner
                .client
                .delete_item()
                .table_name(&inner.table)
                .key(&inner.hash_key, self.key_value(id))
                .send(),
        )
        .await?;
        Ok(())
    }

    /// An `UpdateItem` of `expires` (and of `owner` where missing) on a live session only.
    async fn touch(&self, id: &Id, record: &Record) -> Result<(), Error> {
        let inner = &self.inner;
        let now = Timestamp::now();
        let expires_ms = item::expires_millis(record.cookie().expires(), inner.default_ttl_ms, now);
        let mut request = inner
            .client
            .update_item()
            .table_name(&inner.table)
            .key(&inner.hash_key, self.key_value(id))
            .condition_expression("attribute_exists(#s) AND NOT #e <= :now")
            .expression_attribute_names("#s", SESS)
            .expression_attribute_names("#e", EXPIRES)
            .expression_attribute_values(
                ":now",
                AttributeValue::N(item::whole_seconds(now).to_string()),
            )
            .expression_attribute_values(":e", AttributeValue::N(item::seconds_text(expires_ms)));
        request = match self.owner_of(record) {
            // A session Express wrote has no owner attribute: index it now. One this store
            // wrote keeps its own, which follows its data.
            Some(owner) => request
                .update_expression("SET #e = :e, #o = if_not_exists(#o, :owner)")
                .expression_attribute_names("#o", OWNER)
                .expression_attribute_values(":owner", AttributeValue::S(owner)),
            None => request.update_expression("SET #e = :e"),
        };
        // A failed condition: unknown, destroyed or expired, left alone.
        calls::run("UpdateItem", inner.timeout, request.send()).await?;
        Ok(())
    }

    fn default_ttl(&self) -> Option<Duration> {
        Some(self.inner.default_ttl)
    }

    /// Every live session under the prefix, by a strongly consistent scan. Holds them all in
    /// memory; an undecodable one fails the whole call with [`ErrorKind::Decode`].
    async fn all(&self) -> Result<Vec<(Id, Record)>, Error> {
        let now = Timestamp::now();
        let items = self.scan(None, Vec::new(), None).await?;
        let mut records = Vec::with_capacity(items.len());
        for item in items {
            let Some(id) = self.id_of(&item) else {
                continue;
            };
            if let Stored::Live { json, expires_at } = item::read(Some(item), now) {
                records.push((
                    id,
                    loaded(json, expires_at, self.inner.max_record_size)?.record,
                ));
            }
        }
        Ok(records)
    }

    /// How many live sessions the prefix has: a strongly consistent scan, counted by DynamoDB.
    async fn len(&self) -> Result<usize, Error> {
        let now = item::whole_seconds(Timestamp::now()).to_string();
        self.count(
            Some("attribute_type(#s, :string) AND NOT #e <= :now"),
            vec![
                (":string", AttributeValue::S("S".to_owned())),
                (":now", AttributeValue::N(now)),
            ],
        )
        .await
    }

    /// Deletes every item under the prefix (a scan, then a `DeleteItem` of each). Items
    /// written while it runs may survive.
    async fn clear(&self) -> Result<(), Error> {
        let keys = self.scan_keys(None, Vec::new()).await?;
        self.delete_all(keys, None).await?;
        Ok(())
    }
}

#[async_trait]
impl OwnerIndex for DynamoDbStore {
    /// The ids the owner index (or, without it, a consistent scan) names, each read again with
    /// a strongly consistent `GetItem` and kept only if live and still the owner's.
    async fn sessions_of(&self, owner: &str) -> Result<Vec<(Id, Loaded)>, Error> {
        let ids = self.ids_owned_by(owner).await?;
        let mut found = Vec::new();
        let mut results = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(READS_IN_FLIGHT) {
            results.extend(join_all(chunk.iter().map(|id| self.get(id))).await);
        }
        for (id, loaded) in ids.into_iter().zip(results) {
            if let Some(loaded) = loaded?
                && self.owner_of(&loaded.record).as_deref() == Some(owner)
            {
                found.push((id, loaded));
            }
        }
        Ok(found)
    }
}

impl fmt::Debug for DynamoDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoDbStore")
            .field("table", &self.inner.table)
            .field("hash_key", &self.inner.hash_key)
            .field("prefix", &self.inner.prefix)
            .field("default_ttl", &self.inner.default_ttl)
            .field("timeout", &self.inner.timeout)
            .field("max_record_size", &self.inner.max_record_size)
            .field("owner_path", &self.inner.owner_path)
            .finish_non_exhaustive()
    }
}
