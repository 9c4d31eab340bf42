//! [`RedisStore`]: sessions in Redis or Redis Cluster, in connect-redis's format.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use cloakroom::store::redis::RedisStore;
//! use cloakroom::{CookieOptions, SessionLayer};
//!
//! let store = RedisStore::builder("redis://127.0.0.1:6379")
//!     .with_prefix("sess:") // connect-redis's default: an Express app can share the sessions
//!     .build()
//!     .await?;
//! let sessions = SessionLayer::builder(store)
//!     .with_secret(std::env::var("SESSION_SECRET")?)
//!     .with_cookie(CookieOptions::new().with_max_age(Duration::from_secs(30 * 60)))
//!     .with_touch_after(Duration::from_secs(60))
//!     .build()?;
//! # let _ = sessions;
//! # Ok(())
//! # }
//! ```
//!
//! # Format
//! The same keys and values as Node's [connect-redis], so an Express app and a cloakroom app can
//! share one Redis (with the same secret and cookie name, they share sessions):
//!
//! - key: `<prefix><session id>`, prefix `sess:` by default;
//! - value: express-session's JSON, `cookie` first (see [`Record::to_json`]);
//! - lifetime: a Redis TTL of `ceil((cookie.expires - now) / 1 s)` seconds, or the store's
//!   [`ttl`](RedisStoreBuilder::with_ttl) (one day by default) when the cookie has no expiry.
//!   A record whose TTL would be zero or less is deleted instead of written.
//!
//! Because the TTL is rounded up to whole seconds (as connect-redis does), a record can outlive
//! its cookie's expiry by up to a second.
//!
//! # Commands and round trips
//! | Store call | Redis commands | Round trips |
//! |---|---|---|
//! | `get` | `GETRANGE key 0 <size limit>`, and `PTTL key` pipelined with it unless this process [knows when the key expires](#expiry) | 1 |
//! | `set`, new session | `SET key value EX ttl NX` | 1 |
//! | `set`, compare-and-set (or with a lease) | `EVALSHA` of a short Lua script (`GET`, compare, `SET`; a shorter one without a lease) | 1 |
//! | `set`, new session with an owner, standalone, Redis 7 or later | the [index update](#owner-index) as commands (`ZADD index GT expiry id`, on one write in sixteen `ZREMRANGEBYSCORE index -inf <now − 30 s>`, `PEXPIREAT index <expiry + 30 s> GT`), then `SET key value EX ttl NX`, pipelined; when `GT` set nothing (the owner's first session: a new index key), `PEXPIREAT index <expiry + 30 s> NX` after | 1, or 2 |
//! | `set` with an owner, standalone, otherwise | `EVALSHA` of the owned-set script: the write as above and, if it is made, the index update | 1 |
//! | `set` with an owner, Cluster | the index update on the owner's index key (the commands above on Redis 7 or later, `PEXPIREAT … NX` in a round trip of its own when the key is new; else `EVALSHA` of the index script), then the write as above | 2, or 3 |
//! | `touch` | `EXPIRE key ttl` (never rewrites the value) | 1 |
//! | `touch` with an owner, standalone | `EVALSHA` of a script: `EXPIRE key ttl`, and the index update if the key exists | 1 |
//! | `touch` with an owner, Cluster | the index update as for `set`, then `EXPIRE key ttl` | 2, or 3 |
//! | `destroy` | `DEL key` (with or without an owner) | 1 |
//! | `try_lock` (session lock) | `SET lock token PX lease NX` | 1 |
//! | `unlock` (session lock) | `EVALSHA` of a compare-and-delete script | 1 |
//! | `sessions_of` | `ZRANGEBYSCORE index <now − 30 s> +inf`, then `GETRANGE` and `PTTL` of each session it names (as `get`), a batch of n at once; standalone, one `EVALSHA` more for a batch with ended or reassigned sessions | 2 or more |
//! | `all` | `SCAN MATCH <prefix>* COUNT n`, then `GETRANGE` of each key, a batch of n at once | many |
//! | `len`, `clear` | `SCAN MATCH <prefix>* COUNT n`, then `DEL` in batches for `clear` | many |
//! | [`reindex`](RedisStore::reindex) | `SCAN` as `all`, then `GETRANGE` and `PTTL` of each key and the index script for each owned session, a batch of n at once | many |
//!
//! A set or touch of a session without an owner, or of one whose cookie has expired (the key
//! is deleted), makes exactly the commands of the rows without an owner: the index costs
//! nothing to sessions nobody is signed in to.
//!
//! So a request that only reads its session costs one round trip, plus the middleware's touch
//! unless [`with_touch_after`](crate::SessionLayerBuilder::with_touch_after) on the layer skips
//! it, and one that changes it costs two (more only when a concurrent write makes the
//! compare-and-set conflict and the middleware retries; in Cluster, one more when the session
//! has an owner). The first call of each script after Redis starts (or after `SCRIPT FLUSH`)
//! costs two more round trips: Redis answers `NOSCRIPT` and the store loads the script with
//! `SCRIPT LOAD`, once per server.
//!
//! # Expiry
//! A read reports when the key expires ([`Loaded::expires_at`]), which the middleware's touch
//! throttle ([`with_touch_after`](crate::SessionLayerBuilder::with_touch_after)) needs. Asking
//! Redis costs a `PTTL` beside the `GETRANGE`, so the store remembers, for up to 4,096 sessions
//! it recently updated, touched or read (not a new session's first save: many are never read),
//! a fingerprint of the value and when the key expires at the earliest, and a read that finds
//! the same value leaves `PTTL` out. A value another client wrote meanwhile is answered with
//! its `cookie.expires` (which the key's TTL reaches) and asked about at the next read. What is
//! remembered is trusted for a minute, then asked again, so another client's touch that
//! shortens a TTL without a write is seen within a minute. A reported expiry errs early, never
//! late, except in that minute. `sessions_of` and `reindex` always ask.
//!
//! # Size limit
//! A read asks for one byte more than the store's [size
//! limit](RedisStoreBuilder::with_max_record_size) at most (`GETRANGE key 0 <limit>`, which
//! costs Redis what `GET` does), so a value over the limit, written by another program or before
//! the limit was lowered, fails the read with [`ErrorKind::TooLarge`] without crossing the
//! network, and is left as it is. `GETRANGE` answers a missing key with an empty string, so an
//! empty value reads as no session too (no program writes one: it is not a record).
//!
//! # Compare-and-set
//! A new session is written with `SET … NX`, so it never replaces a record already under its
//! id. A record's [`Version`] is its stored value, byte for byte. A compare-and-set runs a Lua
//! script that reads the key and writes the new value (or deletes the key when its TTL is ≤ 0)
//! only if the stored value still equals the expected one. A missing key is a conflict, so a
//! write never brings back a session that was destroyed or expired meanwhile. No `WATCH`, no
//! transaction: the script is atomic, and works in Cluster because its keys share a slot.
//!
//! Every write changes the value in practice, because the JSON holds the cookie's expiry in
//! milliseconds. Two writes of identical bytes are the same state, so a compare-and-set that
//! matches an older but identical value (ABA) overwrites nothing that differs: it is harmless.
//! A touch changes only the TTL, never the value, so it never changes the version.
//!
//! The expected value travels with the compare-and-set, so a save sends the session twice. For
//! sessions of a few kilobytes this does not matter; for very large ones it doubles the bytes
//! written.
//!
//! # Owner index
//! The store implements [`OwnerIndex`]: [`sessions_of`](OwnerIndex::sessions_of) finds every
//! live session of one owner, the value at the store's [owner
//! path](RedisStoreBuilder::with_owner_path) (`passport.user` by default) in the session's data.
//! Sessions keep connect-redis's keys and values; beside them, each owner has one sorted set:
//!
//! - key: `<prefix>owner:{<hex>}`, where `<hex>` is the owner text's UTF-8 bytes in lowercase
//!   hexadecimal (`sess:owner:{616c696365}` for `alice`), so any owner text, braces, spaces and
//!   all, makes a key whose Cluster hash tag is the whole encoded owner (with a hash tag in the
//!   prefix, the prefix's tag decides instead): one owner's index lives in one slot;
//! - members: session ids, as in the session keys;
//! - scores: when the session's key expires, in milliseconds since the epoch (the writer's
//!   clock, the TTL rounded up as it is written); a member's score only ever grows, so it is
//!   never earlier than the expiry cloakroom last gave its session;
//! - lifetime: owned writes and touches remove the members that expired over 30 s ago
//!   (`ZREMRANGEBYSCORE`; the script does it on every call, the plain commands of a new
//!   session on one write in sixteen, picked by a hash of the id) and give the key a TTL that
//!   lasts 30 s past its latest member. The 30 s absorb differences between the clocks of the
//!   processes sharing the store. If the connection drops between the two round trips of a
//!   new index key (see the table), that key has no TTL until the owner's next owned write or
//!   touch gives it one.
//!
//! The index holds hints, not truth: `sessions_of` reads each session it names (as `get`), and
//! returns only those that are live and name the owner when read. A hint outlives its session
//! when the session is destroyed (`destroy` knows only the id, and reads nothing), when a write
//! names another owner or none, or when an Express app extends it (below). Such hints are left
//! out of the answer, and leave the index when their score passes. On a standalone Redis,
//! `sessions_of` also removes them at once, with a script that checks, atomically, that the
//! session is still gone or still holds exactly what was read.
//!
//! On a standalone Redis, the index is updated in the same script as the session's write, so
//! the two change together. In Cluster, the session's key and the index are in different
//! slots, which no script can span: the index is updated first, then the session written, so a
//! live owned session is never missing from its owner's index, at the price of a hint for a
//! write that then conflicts or fails. For the same reason `sessions_of` in Cluster never
//! removes a hint whose session it does not find: that session may be a write in flight.
//!
//! A custom session id that begins with `owner:{` would be taken for an index key; generated
//! ids are base64url and never do.
//!
//! ## Sessions written by Express
//! An Express app that signs a user in through connect-redis writes `passport.user`, but not
//! the index. Such a session is indexed the next time cloakroom writes or touches it; until
//! then, and when the Express app alone keeps a session alive past the expiry cloakroom last
//! indexed, its owner's `sessions_of` does not find it. [`RedisStore::reindex`] indexes every
//! session under the prefix: run it once when adopting the index on a Redis that already holds
//! sessions, and after a period in which only an Express app served them.
//!
//! # Session lock
//! With [`with_session_lock`](crate::SessionLayerBuilder::with_session_lock), a session's lock is
//! a key beside it: `{sess:<id>}:lock` for the session key `sess:<id>` (with a prefix that has a
//! Cluster hash tag, `{tag}:lock:<session key>`). Its value is the holder's random token, its
//! `PX` TTL the lease, so a crashed holder frees it by itself. It is taken with `SET … NX`
//! (nothing waits inside Redis: the middleware polls with a growing pause), released by a script
//! that deletes it only while it still holds the holder's token, and a write under the lock runs
//! the compare-and-set script with the lock key too, which refuses the write once the key no
//! longer holds the token (fencing). The braces put the lock key in the session key's Cluster
//! slot, so the script works in Cluster. connect-redis never reads these keys.
//!
//! # Standalone and Cluster
//! [`RedisStore::builder`] uses one connection, shared by every request and every clone of the
//! store: there is no pool and no checkout. Requests are written back to back as they come,
//! and each waits for its own answer (Redis answers in order). cloakroom drives this connection
//! itself rather than through redis-rs's `ConnectionManager`, whose codec, channel and
//! reconnection layers cost more per round trip, and packs the commands of a round trip
//! straight into the bytes it sends.
//! [`RedisStore::cluster_builder`] uses redis-rs's `ClusterConnection`, one multiplexed
//! connection per node, with keys routed by slot. In Cluster, `all`, `len` and
//! `clear` scan every primary. A scan that runs while slots migrate between nodes may miss or
//! repeat keys (repeats are removed). `SCAN` walks every key of a node, not only the sessions,
//! so these three cost time in proportion to everything stored in Redis: they are for
//! maintenance, not for request handling.
//!
//! URLs are redis-rs's (`redis://[user:password@]host:port[/db]`). TLS (`rediss://`) needs
//! redis-rs's TLS features, which cloakroom does not enable.
//!
//! # Failures and reconnection
//! Every round trip is bounded by the [response
//! timeout](RedisStoreBuilder::with_response_timeout), including any wait for a reconnection, and
//! fails with [`ErrorKind::Timeout`] when it runs out. A connection that drops fails the requests
//! in flight on it with [`ErrorKind::Unavailable`] (in Cluster, a refused connection does too).
//! Both are transient: the middleware answers 503 and the next request tries again. The
//! connection reconnects by itself in the background, with a backoff of at most a second between
//! attempts, so requests succeed again shortly after Redis is back, without rebuilding the store.
//! A request made while a reconnection is under way waits for it, up to the timeout, so an
//! outage shorter than the timeout only delays requests. A write that times out, or whose
//! connection dropped, may still have been applied.
//!
//! Errors never contain a session id or session data: a value that cannot be decoded is reported
//! by what is wrong with it and where, not by its text.
//!
//! [connect-redis]: https://github.com/tj/connect-redis

use std::collections::{HashMap, HashSet};
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionLike;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Script, ServerErrorKind, Value};

use super::join::join_all;
use super::{
    Condition, Error, ErrorKind, Lease, Loaded, LockStore, OwnerIndex, OwnerPath, SessionStore,
    SetOutcome, Version,
};
use crate::id::Id;
use crate::record::Record;
use crate::time::Timestamp;

mod expiries;
mod link;
mod owners;
mod resp;

use expiries::Expiries;
use link::Link;
use owners::{INDEX_KEY_INFIX, IndexEntry, OWNED_TOUCH};
use resp::{Args, Commands, Form};

/// connect-redis's default prefix.
const DEFAULT_PREFIX: &str = "sess:";
/// connect-redis's default lifetime for a browser-session cookie: one day.
const DEFAULT_TTL_SECS: u64 = 86_400;
/// connect-redis's default `SCAN` batch size.
const DEFAULT_SCAN_COUNT: usize = 100;
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest TTL, in seconds: that of a JavaScript `Date` at its maximum, far below what
/// Redis accepts.
const MAX_TTL_SECS: u64 = 8_640_000_000_000;

/// Lua: a conditional write. `lock`, with a lease only: the session's lock key, and `token`
/// the lease's. `mode`: `v` to expect the value `expected` (the version the request loaded),
/// `a` to expect no key. `ttl` ≤ 0 deletes the key.
/// Returns 1 when written (or deleted), 0 on a conflict, 2 when the lease no longer holds the
/// lock. A missing key reads as `false`, never equal to a string, so for `v` it is a conflict:
/// a destroyed session is never brought back.
const WRITE_LUA: &str = r"local function write(key, lock, token, mode, expected, value, ttl)
  if lock and redis.call('GET', lock) ~= token then
    return 2
  end
  local stored = redis.call('GET', key)
  if mode == 'a' then
    if stored then
      return 0
    end
  elseif stored ~= expected then
    return 0
  end
  if tonumber(ttl) > 0 then
    redis.call('SET', key, value, 'EX', ttl)
  else
    redis.call('DEL', key)
  end
  return 1
end
";

/// A conditional write ([`WRITE_LUA`]). KEYS[1]: the session's key; KEYS[2], with a lease
/// only: the session's lock key. ARGV[1]: the mode; ARGV[2]: the expected value; ARGV[3]: the
/// new value; ARGV[4]: its TTL in seconds; ARGV[5], with a lease only: the lease's token.
static CONDITIONAL_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{WRITE_LUA}return write(KEYS[1], KEYS[2], ARGV[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])"
    ))
});

/// The common compare-and-set, without a lease and with a positive TTL: [`CONDITIONAL_SET`]'s
/// `v` mode with its branches taken out. KEYS[1]: the session's key; ARGV[1]: the expected
/// value; ARGV[2]: the new value; ARGV[3]: its TTL in seconds. Returns 1 when written, 0 on a
/// conflict. With a 163-byte session, `redis-benchmark -P 16` ran it at 287,000–297,000 calls
/// a second against the general script's 270,000–274,000: the branches cost Redis about
/// 0.2 µs on every compare-and-set.
static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1",
    )
});

/// Releases a session lock. KEYS[1]: the lock key; ARGV[1]: the lease's token. Deletes the key
/// only if it still holds that token, so a holder whose lease ran out never frees the lock of
/// the next holder.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0",
    )
});

/// Sessions in Redis or Redis Cluster, in connect-redis's format; see the [module
/// docs](self) for the format, the commands each call makes, and failure handling.
///
/// Cloning is cheap: every clone shares the one connection.
///
/// ```no_run
/// # async fn example() -> Result<(), cloakroom::store::Error> {
/// use cloakroom::store::redis::RedisStore;
///
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    prefix: Arc<str>,
    /// The `SCAN MATCH` pattern for `prefix`: the prefix with glob characters escaped, then `*`.
    pattern: Arc<str>,
    /// How lock keys begin when the prefix has a hash tag (`{tag}:lock:`), to leave them out of
    /// scans.
    lock_keys: Option<Arc<[u8]>>,
    /// How owner index keys begin (`<prefix>owner:{`), to tell them from sessions in scans.
    index_keys: Arc<[u8]>,
    owner_path: Arc<OwnerPath>,
    /// The server has `ZADD … GT` and `PEXPIREAT … NX | GT` (Redis 7.0 and later), so an
    /// owner index is kept with plain commands rather than a script (see [`index_commands`]).
    index_commands: bool,
    ttl_secs: u64,
    scan_count: usize,
    max_record_size: usize,
    response_timeout: Duration,
    connection_timeout: Duration,
    /// When the sessions this process recently updated, touched or read expire, so `get` can
    /// leave out `PTTL` (see [`expiries`]).
    expiries: Arc<Expiries>,
}

/// Options for a [`RedisStore`] ([`RedisStore::builder`] or [`RedisStore::cluster_builder`]),
/// then [`build`](Self::build).
///
/// ```no_run
/// # async fn example() -> Result<(), cloakroom::store::Error> {
/// use std::time::Duration;
/// use cloakroom::store::redis::RedisStore;
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .with_prefix("myapp:sess:")
///     .with_ttl(Duration::from_secs(3600))
///     .with_response_timeout(Duration::from_millis(500))
///     .build()
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisStoreBuilder {
    servers: Servers,
    prefix: String,
    owner_path: OwnerPath,
    ttl_secs: u64,
    scan_count: usize,
    max_record_size: usize,
    response_timeout: Duration,
    connection_timeout: Duration,
}

/// Where a builder connects.
#[derive(Clone)]
enum Servers {
    Standalone(String),
    Cluster(Vec<String>),
}

impl fmt::Debug for Servers {
    // The URLs may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Servers::Standalone(_) => "Standalone",
            Servers::Cluster(_) => "Cluster",
        })
    }
}

impl RedisStoreBuilder {
    fn new(servers: Servers) -> Self {
        RedisStoreBuilder {
            servers,
            prefix: DEFAULT_PREFIX.to_owned(),
            owner_path: OwnerPath::default(),
            ttl_secs: DEFAULT_TTL_SECS,
            scan_count: DEFAULT_SCAN_COUNT,
            max_record_size: super::DEFAULT_MAX_RECORD_SIZE,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
        }
    }
}

impl RedisStoreBuilder {
    /// The text before each session id in its key (default `sess:`, as connect-redis). Give
    /// each application sharing a Redis its own prefix, or the same one to share sessions.
    ///
    /// ```
    /// let builder = cloakroom::store::redis::RedisStore::builder("redis://127.0.0.1:6379").with_prefix("myapp:sess:");
    /// # let _ = builder;
    /// ```
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Where a session's owner is in its data: what the [owner index](self#owner-index) reads
    /// and [`Session::set_owner`](crate::Session::set_owner) writes (default `passport.user`,
    /// where passport.js keeps the signed-in user). Every process sharing the prefix should use
    /// the same path: the index follows what the writer reads.
    ///
    /// ```
    /// use cloakroom::store::OwnerPath;
    /// let builder = cloakroom::store::redis::RedisStore::builder("redis://127.0.0.1:6379")
    ///     .with_owner_path(OwnerPath::new("account.id").unwrap());
    /// # let _ = builder;
    /// ```
    pub fn with_owner_path(mut self, path: OwnerPath) -> Self {
        self.owner_path = path;
        self
    }

    /// How long a session whose cookie has no expiry (a browser-session cookie) lives after its
    /// last save or touch (default one day, as connect-redis). The store writes TTLs in whole
    /// seconds, as connect-redis, so this is rounded up to a whole number of seconds, and is at
    /// least one.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let builder =
    ///     cloakroom::store::redis::RedisStore::builder("redis://127.0.0.1:6379").with_ttl(Duration::from_secs(3600));
    /// # let _ = builder;
    /// ```
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        let secs = ttl.as_millis().div_ceil(1000);
        self.ttl_secs = u64::try_from(secs)
            .unwrap_or(MAX_TTL_SECS)
            .clamp(1, MAX_TTL_SECS);
        self
    }

    /// The `COUNT` hint of each `SCAN` that [`all`](SessionStore::all),
    /// [`len`](SessionStore::len) and [`clear`](SessionStore::clear) make (default 100, as
    /// connect-redis), and the number of keys per `MGET` or `DEL` they send. At least one.
    ///
    /// ```
    /// let builder = cloakroom::store::redis::RedisStore::builder("redis://127.0.0.1:6379").with_scan_count(1000);
    /// # let _ = builder;
    /// ```
    pub fn with_scan_count(mut self, count: usize) -> Self {
        self.scan_count = count.max(1);
        self
    }

    /// The largest record written or read, in bytes of JSON (default
    /// [`DEFAULT_MAX_RECORD_SIZE`](crate::store::DEFAULT_MAX_RECORD_SIZE), 1 MiB). A bigger save fails
    /// with [`ErrorKind::TooLarge`] and writes nothing; a bigger stored value (written by another
    /// program) fails the load the same way without being transferred (the read stops one byte
    /// past the limit), and is left as it is.
    ///
    /// ```
    /// let builder = cloakroom::store::redis::RedisStore::builder("redis://127.0.0.1:6379").with_max_record_size(64 * 1024);
    /// # let _ = builder;
    /// ```
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
    }

    /// How long one round trip to Redis may take, including any wait for a reconnection, before
    /// the store call fails with [`ErrorKind::Timeout`] (default 2 s). Keeps requests from
    /// hanging on a Redis that is down or stalled.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let builder = cloakroom::store::redis::RedisStore::builder("redis://127.0.0.1:6379")
    ///     .with_response_timeout(Duration::from_millis(500));
    /// # let _ = builder;
    /// ```
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long one attempt to open a connection may take (default 1 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let builder = cloakroom::store::redis::RedisStore::builder("redis://127.0.0.1:6379")
    ///     .with_connection_timeout(Duration::from_millis(500));
    /// # let _ = builder;
    /// ```
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Connects: to the standalone Redis (one multiplexed connection, re-opened by itself
    /// when it drops), or to the cluster (its other nodes are discovered).
    ///
    /// # Errors
    /// When a URL is not valid or none is given ([`ErrorKind::Backend`]), or Redis cannot be
    /// reached after a few attempts ([`ErrorKind::Unavailable`] or [`ErrorKind::Timeout`]), or
    /// refuses the connection's setup, such as a wrong password ([`ErrorKind::Backend`]).
    pub async fn build(self) -> Result<RedisStore, Error> {
        let connection = match &self.servers {
            Servers::Standalone(url) => Connection::Standalone(
                Link::connect(url, self.connection_timeout, self.response_timeout)
                    .await
                    .map_err(redis_error)?,
            ),
            Servers::Cluster(urls) => {
                let client = ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(self.connection_timeout)
                    .response_timeout(self.response_timeout)
                    .build()
                    .map_err(redis_error)?;
                Connection::Cluster(client.get_async_connection().await.map_err(redis_error)?)
            }
        };
        let mut store = self.with_connection(connection);
        store.index_commands = store.server_major_version().await? >= 7;
        Ok(store)
    }

    fn with_connection(self, connection: Connection) -> RedisStore {
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let lock_keys =
            hash_tag(&self.prefix).map(|tag| format!("{{{tag}}}:lock:").into_bytes().into());
        let index_keys = format!("{}{INDEX_KEY_INFIX}", self.prefix)
            .into_bytes()
            .into();
        RedisStore {
            connection,
            prefix: self.prefix.into(),
            pattern: pattern.into(),
            lock_keys,
            index_keys,
            owner_path: Arc::new(self.owner_path),
            // Known once connected (see `build`).
            index_commands: false,
            ttl_secs: self.ttl_secs,
            scan_count: self.scan_count,
            max_record_size: self.max_record_size,
            response_timeout: self.response_timeout,
            connection_timeout: self.connection_timeout,
            expiries: Arc::new(Expiries::new()),
        }
    }
}

impl RedisStore {
    /// Configures a store on a standalone Redis (or a primary behind a proxy), given a
    /// redis-rs URL such as `redis://user:password@host:6379/0`: prefix, default lifetime,
    /// scan batch size and timeouts, then [`build`](RedisStoreBuilder::build).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Servers::Standalone(url.into()))
    }

    /// Configures a store on a Redis Cluster, given the URLs of one or more of its nodes.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), cloakroom::store::Error> {
    /// let store = cloakroom::store::redis::RedisStore::cluster_builder([
    ///     "redis://10.0.0.1:6379",
    ///     "redis://10.0.0.2:6379",
    /// ])
    /// .build()
    /// .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn cluster_builder<I>(urls: I) -> RedisStoreBuilder
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let urls = urls
            .into_iter()
            .map(|url| url.as_ref().to_owned())
            .collect();
        RedisStoreBuilder::new(Servers::Cluster(urls))
    }

    /// Connects to a standalone Redis with the default options (see [`builder`](Self::builder)).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), cloakroom::store::Error> {
    /// let store = cloakroom::store::redis::RedisStore::connect("redis://127.0.0.1:6379").await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`RedisStoreBuilder::build`].
    pub async fn connect(url: &str) -> Result<RedisStore, Error> {
        Self::builder(url).build().await
    }

    /// Connects to a Redis Cluster with the default options (see
    /// [`cluster_builder`](Self::cluster_builder)).
    ///
    /// # Errors
    /// As [`RedisStoreBuilder::build`].
    pub async fn connect_cluster<I>(urls: I) -> Result<RedisStore, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::cluster_builder(urls).build().await
    }

    fn key(&self, id: &Id) -> String {
        let mut key = String::with_capacity(self.prefix.len() + id.as_str().len());
        key.push_str(&self.prefix);
        key.push_str(id.as_str());
        key
    }

    /// The key of the session's lock: in the same Redis Cluster hash slot as the session's key
    /// (so one script can check the lock and write the session), and outside the prefix's
    /// `SCAN` pattern only when the prefix itself has a hash tag.
    fn lock_key(&self, id: &Id) -> Result<String, Error> {
        lock_key_for(&self.key(id))
    }

    /// connect-redis's TTL in seconds: until the cookie expires, rounded up, or the default
    /// lifetime for a browser-session cookie. Zero or less means the record has expired.
    fn ttl_secs(&self, record: &Record, now: Timestamp) -> i64 {
        match record.cookie().expires() {
            Some(expires) => {
                let left_ms = expires.millis_since(now);
                if left_ms <= 0 {
                    0
                } else {
                    (left_ms + 999) / 1000
                }
            }
            None => i64::try_from(self.ttl_secs).unwrap_or(i64::MAX),
        }
    }

    /// Runs one round trip, bounded by the response timeout: for what goes through redis-rs
    /// (see [`query`](Self::query)); what requests send is bounded in
    /// [`round_trip`](Self::round_trip).
    async fn bounded<T>(
        &self,
        round_trip: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.response_timeout, round_trip).await {
            Ok(result) => result.map_err(redis_error),
            Err(elapsed) => Err(Error::new(ErrorKind::Timeout, elapsed)),
        }
    }

    /// Sends one redis-rs command: for the calls no request makes (scans, maintenance, the
    /// session list). What requests send goes through [`ask`](Self::ask).
    async fn query(&self, cmd: &Cmd) -> Result<Value, Error> {
        let mut connection = self.connection.clone();
        self.bounded(cmd.query_async(&mut connection)).await
    }

    /// Commands for one round trip on this store's connection (see [`ask`](Self::ask)).
    fn commands(&self) -> Commands {
        match self.connection {
            Connection::Standalone(_) => Commands::packed(),
            Connection::Cluster(_) => Commands::pipeline(),
        }
    }

    /// Sends `commands` in one round trip and returns their replies, in order. An error reply
    /// fails the whole, as a redis-rs pipeline does.
    async fn ask(&self, commands: &Commands) -> Result<Vec<Value>, Error> {
        self.round_trip(commands).await.map_err(redis_error)
    }

    /// [`ask`](Self::ask), with redis-rs's error. Bounded by the response timeout: by the
    /// link itself on a standalone connection (one timer for every request in flight), by a
    /// timer of its own in Cluster.
    async fn round_trip(&self, commands: &Commands) -> RedisResult<Vec<Value>> {
        match (commands.form(), &self.connection) {
            (Form::Packed { bytes, count }, Connection::Standalone(link)) => {
                let replies = link.send(bytes, *count).await?;
                let error = replies.iter().find_map(|reply| match reply {
                    Value::ServerError(error) => Some(error),
                    _ => None,
                });
                match error {
                    Some(error) => Err(RedisError::from(error.clone())),
                    None => Ok(replies),
                }
            }
            // Boxed: inline, redis-rs's Cluster future and the timer would make every
            // standalone call's future several times larger, too large for the allocator's
            // per-thread cache when the store's `async_trait` methods box it.
            (Form::Pipeline(pipeline), _) => {
                Box::pin(async {
                    let mut connection = self.connection.clone();
                    let mut each = pipeline.cmd_iter();
                    let round_trip = async {
                        match (each.next(), each.next()) {
                            // One command alone is sent as one, so Cluster routes it as
                            // any command.
                            (Some(command), None) => {
                                Ok(vec![command.query_async(&mut connection).await?])
                            }
                            _ => pipeline.query_async(&mut connection).await,
                        }
                    };
                    match tokio::time::timeout(self.response_timeout, round_trip).await {
                        Ok(result) => result,
                        Err(_) => Err(RedisError::from(link::timed_out())),
                    }
                })
                .await
            }
            // `commands()` packs only for a standalone connection.
            (Form::Packed { .. }, Connection::Cluster(_)) => Err(RedisError::from((
                redis::ErrorKind::Client,
                "commands packed for a standalone connection",
            ))),
        }
    }

    /// The one reply of `commands`, one command (see [`ask`](Self::ask)).
    fn one_reply(mut replies: Vec<Value>, what: &'static str) -> Result<Value, Error> {
        match (replies.pop(), replies.is_empty()) {
            (Some(reply), true) => Ok(reply),
            _ => Err(unexpected(what)),
        }
    }

    /// Runs `script` as one `EVALSHA` command: its first `keys` arguments, which `args` adds
    /// after the count, are keys (the order the script reads them). On `NOSCRIPT` (Redis
    /// restarted, or its scripts were flushed), `SCRIPT LOAD` and the call again, each round
    /// trip within the response timeout.
    async fn invoke(
        &self,
        script: &Script,
        keys: usize,
        args: impl FnOnce(&mut Args<'_>),
    ) -> Result<Value, Error> {
        let mut call = self.commands();
        call.push("EVALSHA", |call| {
            call.arg(script.get_hash()).arg(keys);
            args(call);
        });
        let replies = match self.round_trip(&call).await {
            // Once per script and server (boxed, so the common path's future stays small).
            Err(error) if error.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                Box::pin(async {
                    let mut connection = self.connection.clone();
                    self.bounded(script.load_async(&mut connection)).await?;
                    self.ask(&call).await
                })
                .await?
            }
            result => result.map_err(redis_error)?,
        };
        Self::one_reply(replies, "EVALSHA")
    }

    /// The session under `key` and when its key expires: `GETRANGE` and `PTTL`, pipelined.
    async fn load(&self, key: &[u8]) -> Result<Option<Loaded>, Error> {
        // Taken before asking, so `expires_at` errs early, never late: a late one could make
        // the middleware skip a touch that was due.
        let now = Timestamp::now();
        let mut read = self.commands();
        read.push("GETRANGE", |args| self.read_value(key, args))
            .push("PTTL", |args| {
                args.arg(key);
            });
        let mut replies = self.ask(&read).await?;
        let (Some(pttl), Some(value), None) = (replies.pop(), replies.pop(), replies.pop()) else {
            return Err(unexpected("GETRANGE, PTTL"));
        };
        // A pipeline is not atomic: another client may write or delete the key between the two
        // commands. A key gone by the PTTL (-2) was destroyed or expired: report it gone. A TTL
        // that belongs to a newer value only shifts `expires_at`, which decides whether a touch
        // is due; the version still names what was read.
        let expires_at = match pttl {
            Value::Int(-2) => return Ok(None),
            Value::Int(-1) => None,
            Value::Int(ms) if ms >= 0 => Some(now.add_millis(ms)),
            _ => return Err(unexpected("PTTL")),
        };
        self.loaded(value, expires_at)
    }

    /// The session under `key`, without its expiry: `GETRANGE` alone.
    async fn load_value(&self, key: &[u8]) -> Result<Option<Loaded>, Error> {
        let mut read = self.commands();
        read.push("GETRANGE", |args| self.read_value(key, args));
        let value = Self::one_reply(self.ask(&read).await?, "GETRANGE")?;
        self.loaded(value, None)
    }

    /// The session a `GETRANGE` reply holds, if any.
    fn loaded(&self, value: Value, expires_at: Option<Timestamp>) -> Result<Option<Loaded>, Error> {
        let Some(value) = self.read_reply(value)? else {
            return Ok(None);
        };
        let record = decode(&value)?;
        Ok(Some(Loaded {
            record,
            version: Version::from_bytes(value),
            expires_at,
        }))
    }

    /// The owner index entry of a write or touch of `record` at `now` giving the key `ttl`, if
    /// the record has an owner. A TTL of zero or less deletes the key: nothing to index.
    fn index_entry<'a>(
        &self,
        id: &'a Id,
        record: &Record,
        now: Timestamp,
        ttl: i64,
    ) -> Option<IndexEntry<'a>> {
        if ttl <= 0 {
            return None;
        }
        let owner = self.owner_path.owner_of(record.data())?;
        Some(IndexEntry::new(self.index_key(&owner), id, now, ttl))
    }

    /// [`set`](SessionStore::set), with its time and the TTL it gives the key.
    async fn save(
        &self,
        id: &Id,
        record: &Record,
        condition: Condition<'_>,
        now: Timestamp,
        ttl: i64,
    ) -> Result<SetOutcome, Error> {
        let key = self.key(id);
        let value = record.to_json();
        super::check_record_size(value.len(), self.max_record_size)?;
        let expected = match condition.expected() {
            None => None,
            // Versions this store hands out are always bytes; any other cannot match.
            Some(version) => match version.as_bytes() {
                Some(expected) => Some(expected),
                None => return Ok(SetOutcome::Conflict),
            },
        };
        let write = Write {
            key: &key,
            value: &value,
            ttl,
            expected,
            lease: condition.lease(),
        };
        // The owned writes are boxed, so that an unowned one's future stays small.
        if let Some(entry) = self.index_entry(id, record, now, ttl) {
            let creates = write.expected.is_none() && write.lease.is_none();
            match &self.connection {
                Connection::Standalone(_) if creates && self.index_commands => {
                    return Box::pin(self.create_owned(&write, &entry)).await;
                }
                Connection::Standalone(_) => {
                    return Box::pin(self.write_owned(id, &write, &entry)).await;
                }
                // The index first, as a hint: a live owned session is then never missing
                // from it, even if the write fails after.
                Connection::Cluster(_) => Box::pin(self.add_to_index(&entry)).await?,
            }
        }
        self.write(id, &write).await
    }

    /// [`touch`](SessionStore::touch), with its time and the TTL it gives the key.
    async fn expire(
        &self,
        id: &Id,
        record: &Record,
        now: Timestamp,
        ttl: i64,
    ) -> Result<(), Error> {
        let key = self.key(id);
        // The member's score follows the new expiry, or the index would drop a session the
        // touch keeps alive. Without XX: a session not indexed yet (written by Express) is
        // indexed now.
        if let Some(entry) = self.index_entry(id, record, now, ttl) {
            match &self.connection {
                Connection::Standalone(_) => {
                    let reply = self
                        .invoke(&OWNED_TOUCH, 2, |call| {
                            call.arg(&key)
                                .arg(&entry.key)
                                .arg(ttl)
                                .arg(id.as_str())
                                .arg(entry.expires_ms)
                                .arg(entry.horizon_ms);
                        })
                        .await?;
                    return match reply {
                        Value::Int(1) => Ok(()),
                        _ => Err(unexpected("EVALSHA")),
                    };
                }
                // The index first, as for `set`.
                Connection::Cluster(_) => self.add_to_index(&entry).await?,
            }
        }
        // EXPIRE never creates a key, and never rewrites the value (so the stored
        // `cookie.expires` stays as last saved, as with connect-redis). A TTL of zero or less
        // makes Redis delete the key: the session has expired.
        let mut expire = self.commands();
        expire.push("EXPIRE", |args| {
            args.arg(&key).arg(ttl);
        });
        self.ask(&expire).await?;
        Ok(())
    }

    /// Writes a session without touching any index: `SET … NX` for a new session, else the
    /// compare-and-set script.
    async fn write(&self, id: &Id, write: &Write<'_>) -> Result<SetOutcome, Error> {
        // The common first save of a new session: one plain command, no script.
        if write.expected.is_none() && write.lease.is_none() && write.ttl > 0 {
            let mut set = self.commands();
            write.push_create(&mut set);
            let reply = Self::one_reply(self.ask(&set).await?, "SET")?;
            return write.create_outcome(Some(reply));
        }
        if let (Some(expected), None, true) = (write.expected, write.lease, write.ttl > 0) {
            let reply = self
                .invoke(&REPLACE, 1, |call| {
                    call.arg(write.key)
                        .arg(expected)
                        .arg(write.value)
                        .arg(write.ttl);
                })
                .await?;
            return write.outcome(reply);
        }
        let lock_key = write.lease.map(|_| self.lock_key(id)).transpose()?;
        let keys = 1 + usize::from(lock_key.is_some());
        let reply = self
            .invoke(&CONDITIONAL_SET, keys, |call| {
                call.arg(write.key).arg(lock_key.as_deref());
                write.add_args(call);
                call.arg(write.lease.map(Lease::token));
            })
            .await?;
        write.outcome(reply)
    }

    /// Every key under the prefix, each once. `SCAN` can return a key more than once, and in
    /// Cluster it runs on every primary.
    async fn keys(&self) -> Result<Scanned, Error> {
        let mut keys = Scanned::default();
        match &self.connection {
            Connection::Standalone(_) => self.scan_node(None, &mut keys).await?,
            Connection::Cluster(_) => {
                for slot in self.primary_slots().await? {
                    self.scan_node(Some(slot), &mut keys).await?;
                }
            }
        }
        Ok(keys)
    }

    /// One slot served by each primary of the cluster, to route a `SCAN` to that primary. Routing
    /// by slot rather than by address lets redis-rs resolve the node from its own slot map.
    async fn primary_slots(&self) -> Result<Vec<u16>, Error> {
        let mut slots = redis::cmd("CLUSTER");
        slots.arg("SLOTS");
        let reply = self
            .route(
                slots,
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let Value::Array(ranges) = reply else {
            return Err(unexpected("CLUSTER SLOTS"));
        };
        // Each range: [start, end, [host, port, node id, ...] of the primary, replicas...].
        let mut slot_by_primary: HashMap<Vec<u8>, u16> = HashMap::new();
        for range in &ranges {
            let Value::Array(range) = range else {
                return Err(unexpected("CLUSTER SLOTS"));
            };
            let (Some(Value::Int(start)), Some(Value::Array(primary))) =
                (range.first(), range.get(2))
            else {
                return Err(unexpected("CLUSTER SLOTS"));
            };
            let start = u16::try_from(*start).map_err(|_| unexpected("CLUSTER SLOTS"))?;
            // The node id identifies the primary; its address does if the id is missing.
            let identity = match (primary.get(2), primary.first(), primary.get(1)) {
                (Some(Value::BulkString(id)), _, _) => id.clone(),
                (_, Some(Value::BulkString(host)), Some(Value::Int(port))) => {
                    let mut address = host.clone();
                    address.extend_from_slice(format!(":{port}").as_bytes());
                    address
                }
                _ => return Err(unexpected("CLUSTER SLOTS")),
            };
            slot_by_primary.entry(identity).or_insert(start);
        }
        Ok(slot_by_primary.into_values().collect())
    }

    /// Adds to `keys` every key under the prefix on one node: the standalone server (`None`), or
    /// the cluster primary serving `slot`.
    async fn scan_node(&self, slot: Option<u16>, keys: &mut Scanned) -> Result<(), Error> {
        let mut cursor = b"0".to_vec();
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(&cursor)
                .arg("MATCH")
                .arg(&*self.pattern)
                .arg("COUNT")
                .arg(self.scan_count);
            let reply = match slot {
                None => self.query(&scan).await?,
                Some(slot) => {
                    let primary = Route::new(slot, SlotAddr::Master);
                    self.route(
                        scan,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(primary)),
                    )
                    .await?
                }
            };
            let Value::Array(mut reply) = reply else {
                return Err(unexpected("SCAN"));
            };
            let (Some(Value::Array(batch)), Some(Value::BulkString(next)), None) =
                (reply.pop(), reply.pop(), reply.pop())
            else {
                return Err(unexpected("SCAN"));
            };
            for key in batch {
                let Value::BulkString(key) = key else {
                    return Err(unexpected("SCAN"));
                };
                if key.starts_with(&self.index_keys) {
                    keys.indexes.insert(key);
                } else if !self
                    .lock_keys
                    .as_deref()
                    // With a hash tag in the prefix, lock keys can match the prefix's pattern.
                    .is_some_and(|head| key.starts_with(head))
                {
                    keys.sessions.insert(key);
                }
            }
            if next == b"0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Sends `cmd` to the cluster node `routing` names.
    async fn route(&self, cmd: Cmd, routing: RoutingInfo) -> Result<Value, Error> {
        match &self.connection {
            Connection::Cluster(connection) => {
                let mut connection = connection.clone();
                // Unlike `query_async`, `route_command` leaves error replies inside the value.
                let round_trip = async move {
                    connection
                        .route_command(cmd, routing)
                        .await?
                        .extract_error()
                };
                self.bounded(round_trip).await
            }
            Connection::Standalone(_) => self.query(&cmd).await,
        }
    }

    /// The session id in `key`, which `SCAN MATCH` guarantees starts with the prefix.
    fn id_of(&self, key: &[u8]) -> Result<Id, Error> {
        let id = key.strip_prefix(self.prefix.as_bytes()).unwrap_or(key);
        let id = std::str::from_utf8(id)
            .map_err(|_| Error::new(ErrorKind::Decode, Undecodable::KeyNotUtf8))?;
        Ok(Id::from_string(id))
    }

    /// `GETRANGE key 0 <limit>`: the stored value, cut one byte past the size limit, so a value
    /// over it is known to be over without being transferred (see the [module
    /// docs](self#size-limit)).
    fn read_value(&self, key: &[u8], args: &mut Args<'_>) {
        // The end is inclusive; a limit past what Redis can hold reads every value whole.
        let end = i64::try_from(self.max_record_size).unwrap_or(i64::MAX);
        args.arg(key).arg(0i64).arg(end);
    }

    /// The value in a reply to [`read_value`](Self::read_value): `None` for a missing key (an
    /// empty string, which an empty value also gives), [`ErrorKind::TooLarge`] for a value that
    /// reached past the limit.
    fn read_reply(&self, reply: Value) -> Result<Option<Vec<u8>>, Error> {
        let value = match reply {
            Value::BulkString(value) => value,
            // Never from Redis itself, but harmless from a proxy.
            Value::Nil => return Ok(None),
            _ => return Err(unexpected("GETRANGE")),
        };
        if value.is_empty() {
            return Ok(None);
        }
        // `check_record_size`'s rule, but only a lower bound of the size is known.
        if value.len() > self.max_record_size {
            return Err(Error::new(
                ErrorKind::TooLarge,
                OverLimit {
                    limit: self.max_record_size,
                },
            ));
        }
        Ok(Some(value))
    }
}

/// The keys a scan found under the prefix, each once.
#[derive(Default)]
struct Scanned {
    sessions: HashSet<Vec<u8>>,
    /// Owner index keys.
    indexes: HashSet<Vec<u8>>,
}

/// A session write, as `set` makes it with or without an index.
struct Write<'a> {
    key: &'a str,
    value: &'a str,
    /// In seconds; zero or less deletes the key.
    ttl: i64,
    /// The stored value to expect, or `None` for no key.
    expected: Option<&'a [u8]>,
    lease: Option<&'a Lease>,
}

impl Write<'_> {
    /// ARGV[1] to ARGV[4] of the write scripts (see [`WRITE_LUA`]).
    fn add_args(&self, call: &mut Args<'_>) {
        match self.expected {
            None => call.arg("a").arg(""),
            Some(expected) => call.arg("v").arg(expected),
        };
        call.arg(self.value).arg(self.ttl);
    }

    /// `SET key value EX ttl NX`: the first save of a new session, no script.
    fn push_create(&self, commands: &mut Commands) {
        commands.push("SET", |args| {
            args.arg(self.key)
                .arg(self.value)
                .arg("EX")
                .arg(self.ttl)
                .arg("NX");
        });
    }

    /// The outcome the reply to [`push_create`](Self::push_create)'s command means.
    fn create_outcome(&self, reply: Option<Value>) -> Result<SetOutcome, Error> {
        match reply {
            Some(Value::Okay) => Ok(self.written()),
            Some(Value::Nil) => Ok(SetOutcome::Conflict),
            _ => Err(unexpected("SET")),
        }
    }

    /// The outcome of a write that was made: the value is the key's version now.
    fn written(&self) -> SetOutcome {
        SetOutcome::Written(Version::from_bytes(self.value.as_bytes()))
    }

    /// The outcome a write script's reply means.
    fn outcome(&self, reply: Value) -> Result<SetOutcome, Error> {
        match reply {
            Value::Int(1) => Ok(self.written()),
            Value::Int(0) => Ok(SetOutcome::Conflict),
            Value::Int(2) => Ok(SetOutcome::LeaseLost),
            _ => Err(unexpected("EVALSHA")),
        }
    }
}

/// The bytes of a version this store made (always from bytes).
fn version_bytes(version: &Version) -> &[u8] {
    version.as_bytes().unwrap_or_default()
}

/// Whether `error` is about one stored record (not decodable, or over the size limit), so a
/// call over many sessions leaves that one out rather than fail.
fn is_bad_record(error: &Error) -> bool {
    matches!(error.kind(), ErrorKind::Decode | ErrorKind::TooLarge)
}

#[async_trait]
impl SessionStore for RedisStore {
    fn owner_path(&self) -> &OwnerPath {
        &self.owner_path
    }

    /// `GETRANGE` and `PTTL`, or `GETRANGE` alone when this process knows when the key
    /// expires (see the [module docs](self#expiry)).
    async fn get(&self, id: &Id) -> Result<Option<Loaded>, Error> {
        let key = self.key(id);
        let now = Timestamp::now();
        let Some(known) = self.expiries.recall(id, now) else {
            let loaded = self.load(key.as_bytes()).await?;
            match &loaded {
                Some(Loaded {
                    version,
                    expires_at: Some(expires_at),
                    ..
                }) => self
                    .expiries
                    .remember(id, version_bytes(version), *expires_at, now),
                _ => self.expiries.forget(id),
            }
            return Ok(loaded);
        };
        let Some(mut loaded) = self.load_value(key.as_bytes()).await? else {
            self.expiries.forget(id);
            return Ok(None);
        };
        // Written by another client since: its key lasts at least until the cookie expires,
        // which is when connect-redis and this store make it expire.
        loaded.expires_at = self
            .expiries
            .expiry(known, version_bytes(&loaded.version))
            .or_else(|| loaded.record.cookie().expires());
        Ok(Some(loaded))
    }

    async fn set(
        &self,
        id: &Id,
        record: &Record,
        condition: Condition<'_>,
    ) -> Result<SetOutcome, Error> {
        // Taken before writing, so the expiry remembered errs early, never late.
        let now = Timestamp::now();
        let ttl = self.ttl_secs(record, now);
        let outcome = self.save(id, record, condition, now, ttl).await;
        // Not for a new session: many are never read again (a login, a bot's visit), and the
        // first read asks. An update is followed by reads that would find a value unknown.
        let updates = condition.expected().is_some();
        if let (Ok(SetOutcome::Written(version)), true) = (&outcome, updates) {
            self.expiries.written(id, version_bytes(version), now, ttl);
        }
        outcome
    }

    async fn destroy(&self, id: &Id) -> Result<(), Error> {
        // An owner's index keeps the id as a hint (see the module docs): finding the owner
        // would cost a read.
        let mut delete = self.commands();
        delete.push("DEL", |args| {
            args.arg(&self.key(id));
        });
        self.expiries.forget(id);
        self.ask(&delete).await?;
        Ok(())
    }

    async fn touch(&self, id: &Id, record: &Record) -> Result<(), Error> {
        // Taken before asking, as in `set`.
        let now = Timestamp::now();
        let ttl = self.ttl_secs(record, now);
        self.expire(id, record, now, ttl).await?;
        self.expiries.touched(id, now, ttl);
        Ok(())
    }

    fn default_ttl(&self) -> Option<Duration> {
        Some(Duration::from_secs(self.ttl_secs))
    }

    /// Every live record: `SCAN` (on every primary in Cluster), then a `GETRANGE` of each key,
    /// a batch at a time. Holds every key and record in memory. A record over the size limit
    /// fails the whole call with [`ErrorKind::TooLarge`], as an undecodable one does with
    /// [`ErrorKind::Decode`], without being transferred.
    async fn all(&self) -> Result<Vec<(Id, Record)>, Error> {
        let keys: Vec<Vec<u8>> = self.keys().await?.sessions.into_iter().collect();
        let mut records = Vec::with_capacity(keys.len());
        for batch in keys.chunks(self.scan_count) {
            // One command a key, all sent before any reply is awaited, so the multiplexed
            // connection carries them as a pipeline would; a pipeline itself cannot span the
            // slots of a Cluster, and `MGET` would fetch values whole.
            let reads: Vec<Commands> = batch
                .iter()
                .map(|key| {
                    let mut read = self.commands();
                    read.push("GETRANGE", |args| self.read_value(key, args));
                    read
                })
                .collect();
            let replies = join_all(reads.iter().map(|read| self.ask(read))).await;
            for (key, replies) in batch.iter().zip(replies) {
                // None: expired or deleted since the scan.
                if let Some(value) = self.read_reply(Self::one_reply(replies?, "GETRANGE")?)? {
                    records.push((self.id_of(key)?, decode(&value)?));
                }
            }
        }
        Ok(records)
    }

    /// How many sessions the prefix has, by `SCAN` (on every primary in Cluster). Holds every
    /// key in memory to count each once.
    async fn len(&self) -> Result<usize, Error> {
        Ok(self.keys().await?.sessions.len())
    }

    /// Deletes every key under the prefix, sessions and owner indexes: `SCAN` (on every
    /// primary in Cluster), then `DEL` in batches. Keys written while it runs may survive.
    async fn clear(&self) -> Result<(), Error> {
        self.expiries.forget_all();
        let scanned = self.keys().await?;
        let keys: Vec<Vec<u8>> = scanned
            .sessions
            .into_iter()
            .chain(scanned.indexes)
            .collect();
        for batch in keys.chunks(self.scan_count) {
            self.query(redis::cmd("DEL").arg(batch)).await?;
        }
        Ok(())
    }
}

/// Session locks are keys beside the sessions (see the [module docs](self#session-lock)).
#[async_trait]
impl LockStore for RedisStore {
    async fn try_lock(&self, id: &Id, lease: &Lease) -> Result<bool, Error> {
        let lock_key = self.lock_key(id)?;
        let mut set = self.commands();
        set.push("SET", |args| {
            args.arg(&lock_key)
                .arg(lease.token())
                .arg("PX")
                .arg(lease.duration_millis())
                .arg("NX");
        });
        match Self::one_reply(self.ask(&set).await?, "SET")? {
            Value::Okay => Ok(true),
            Value::Nil => Ok(false),
            _ => Err(unexpected("SET")),
        }
    }

    async fn unlock(&self, id: &Id, lease: &Lease) -> Result<(), Error> {
        let lock_key = self.lock_key(id)?;
        self.invoke(&UNLOCK, 1, |call| {
            call.arg(&lock_key).arg(lease.token());
        })
        .await?;
        Ok(())
    }
}

impl fmt::Debug for RedisStore {
    // The connection is left out: its URLs may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topology = match self.connection {
            Connection::Standalone(_) => "standalone",
            Connection::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("topology", &topology)
            .field("prefix", &self.prefix)
            .field("owner_path", &self.owner_path)
            .field("ttl_secs", &self.ttl_secs)
            .field("scan_count", &self.scan_count)
            .field("response_timeout", &self.response_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .finish()
    }
}

/// The one multiplexed connection, to a standalone server or to a cluster. Cloning it is cheap
/// and every clone shares the same sockets.
#[derive(Clone)]
enum Connection {
    Standalone(Link),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Standalone(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Standalone(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// A store error of the kind `error` is, with `error` as its source.
fn redis_error(error: RedisError) -> Error {
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
    } else if error.is_io_error() {
        // Refused, reset, closed: the server is not there (or not yet back).
        ErrorKind::Unavailable
    } else {
        match error.kind() {
            // No node to send to yet, or a state the server leaves by itself (loading its data,
            // a cluster healing or resharding, a failover): try again later.
            redis::ErrorKind::ClusterConnectionNotFound
            | redis::ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown,
            ) => ErrorKind::Unavailable,
            _ => ErrorKind::Backend,
        }
    };
    Error::new(kind, error)
}

fn decode(value: &[u8]) -> Result<Record, Error> {
    let json = std::str::from_utf8(value)
        .map_err(|_| Error::new(ErrorKind::Decode, Undecodable::ValueNotUtf8))?;
    super::decode_record(json)
}

/// The lock key for the session key `key`, in the same Redis Cluster hash slot, so one script
/// can check the lock and write the session: `{key}:lock` when `key` has no braces (Cluster then
/// hashes exactly `key` for both), `{tag}:lock:key` when `key` has a hash tag (the tag then
/// decides the slot of both). A key with braces but no usable tag has no lock key in its slot:
/// an error.
fn lock_key_for(key: &str) -> Result<String, Error> {
    if !key.contains(['{', '}']) {
        return Ok(format!("{{{key}}}:lock"));
    }
    match hash_tag(key) {
        Some(tag) => Ok(format!("{{{tag}}}:lock:{key}")),
        None => Err(Error::new(ErrorKind::Backend, UnlockableKey)),
    }
}

/// Redis Cluster's hash tag of `key`: what is between its first `{` and the next `}`, if that
/// is not empty.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let rest = &key[open + 1..];
    let close = rest.find('}')?;
    (close > 0).then(|| &rest[..close])
}

/// A session key with braces that do not form a Redis Cluster hash tag.
#[derive(Debug)]
struct UnlockableKey;

impl fmt::Display for UnlockableKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("session key has `{` or `}` without a hash tag: no lock key can share its slot")
    }
}

impl StdError for UnlockableKey {}

/// A reply of a shape the command never gives (a misbehaving proxy, or a different server).
fn unexpected(command: &'static str) -> Error {
    Error::new(ErrorKind::Backend, UnexpectedReply(command))
}

/// `prefix` as a `SCAN MATCH` glob that matches it literally.
fn escape_glob(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Why a stored key or value is not text. It never quotes the bytes: a store error must not carry
/// session data (the value may also have been written by another program). JSON that is not a
/// session is reported by [`super::decode_record`] the same way.
#[derive(Debug)]
enum Undecodable {
    KeyNotUtf8,
    ValueNotUtf8,
}

impl fmt::Display for Undecodable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Undecodable::KeyNotUtf8 => "stored key is not UTF-8",
            Undecodable::ValueNotUtf8 => "stored value is not UTF-8",
        })
    }
}

impl StdError for Undecodable {}

/// A stored value over the store's size limit. Only the limit is known: the read stopped one
/// byte past it.
#[derive(Debug)]
struct OverLimit {
    limit: usize,
}

impl fmt::Display for OverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session record is over the store's limit of {} bytes",
            self.limit
        )
    }
}

impl StdError for OverLimit {}

#[derive(Debug)]
struct UnexpectedReply(&'static str);

impl fmt::Display for UnexpectedReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unexpected reply to {}", self.0)
    }
}

impl StdError for UnexpectedReply {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ttl_is_rounded_up_to_whole_seconds() {
        assert_eq!(RedisStore::builder("redis://127.0.0.1").ttl_secs, 86_400);
        let ttl = |d| {
            RedisStore::builder("redis://127.0.0.1")
                .with_ttl(d)
                .ttl_secs
        };
        assert_eq!(ttl(Duration::from_millis(1500)), 2);
        assert_eq!(ttl(Duration::from_secs(60)), 60);
        assert_eq!(ttl(Duration::ZERO), 1);
        assert_eq!(ttl(Duration::MAX), MAX_TTL_SECS);
        assert_eq!(
            RedisStore::builder("redis://127.0.0.1")
                .with_scan_count(0)
                .scan_count,
            1
        );
    }

    #[test]
    fn glob_characters_in_the_prefix_match_literally() {
        assert_eq!(escape_glob("sess:"), "sess:");
        assert_eq!(escape_glob(r"a*b?[c]\d"), r"a\*b\?\[c\]\\d");
    }

    #[test]
    fn lock_keys_share_the_session_keys_slot() {
        assert_eq!(lock_key_for("sess:abc").unwrap(), "{sess:abc}:lock");
        assert_eq!(
            lock_key_for("{app}sess:abc").unwrap(),
            "{app}:lock:{app}sess:abc"
        );
        assert_eq!(hash_tag("a{b}c{d}"), Some("b"));
        assert_eq!(hash_tag("a{}b"), None);
        assert!(lock_key_for("sess:{}abc").is_err());
        assert!(lock_key_for("sess:}abc").is_err());
    }

    #[test]
    fn decode_errors_never_quote_the_value() {
        for stored in [
            &br#""secret-token""#[..],
            br#"{"cookie":"secret-token"}"#,
            br#"{"cookie":{},"secret-token""#,
            b"secret-token",
            b"\xff secret-token",
        ] {
            let error = decode(stored).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Decode);
            let mut chain = error.to_string();
            let mut source = error.source();
            while let Some(cause) = source {
                chain.push_str(&format!(": {cause} {cause:?}"));
                source = cause.source();
            }
            assert!(!chain.contains("secret"), "{chain}");
        }
        let record = decode(br#"{"cookie":{"path":"/"},"a":1}"#).unwrap();
        assert_eq!(record.data()["a"], json!(1));
    }

    #[test]
    fn errors_are_classified_by_kind_not_text() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(redis_error(refused).kind(), ErrorKind::Unavailable);
        let timed_out = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(redis_error(timed_out).kind(), ErrorKind::Timeout);
        let config = RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad url"));
        let error = redis_error(config);
        assert_eq!(error.kind(), ErrorKind::Backend);
        assert!(
            error
                .source()
                .unwrap()
                .downcast_ref::<RedisError>()
                .is_some()
        );
    }
}
