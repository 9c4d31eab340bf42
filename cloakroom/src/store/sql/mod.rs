//! What the SQL stores share: their statements (written once over a [`Dialect`]), the store
//! operations on them ([`ops`], over a [`Backend`]), connect-pg-simple's expiry rule (and
//! express-mysql-session's rounding), table names, sqlx error kinds, and the background pruning
//! task. Each store keeps only what differs: its
//! driver, its dialect, how it opens and creates its tables.

use std::error::Error as StdError;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::error::DatabaseError;
use tokio::sync::oneshot;

use super::{Error, ErrorKind, Version};
use crate::record::Record;
use crate::time::Timestamp;

#[cfg(any(feature = "postgres", feature = "mysql"))]
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) mod batch;
pub(crate) mod ops;
mod statements;

pub(crate) use ops::{Arg, Backend, LoadableRow, Settings};
pub(crate) use statements::{Dialect, Statement, Statements};

/// The [`SessionStore`](crate::store::SessionStore), [`LockStore`](crate::store::LockStore)
/// and [`OwnerIndex`](crate::store::OwnerIndex) impls of an SQL store, written once: each call
/// is the shared operation in [`ops`] on the store's `inner` (an `Arc` of its [`Backend`], with
/// its [`Settings`] in `settings`). Each store's module docs say what its tables and indexes are.
macro_rules! impl_sql_store {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::store::SessionStore for $store {
            fn owner_path(&self) -> &$crate::store::OwnerPath {
                &self.inner.settings.owner_path
            }

            async fn get(
                &self,
                id: &$crate::Id,
            ) -> Result<Option<$crate::store::Loaded>, $crate::store::Error> {
                $crate::store::sql::ops::get(&*self.inner, id).await
            }

            async fn set(
                &self,
                id: &$crate::Id,
                record: &$crate::Record,
                condition: $crate::store::Condition<'_>,
            ) -> Result<$crate::store::SetOutcome, $crate::store::Error> {
                $crate::store::sql::ops::set(&*self.inner, id, record, condition).await
            }

            async fn destroy(&self, id: &$crate::Id) -> Result<(), $crate::store::Error> {
                $crate::store::sql::ops::destroy(&*self.inner, id).await
            }

            async fn touch(
                &self,
                id: &$crate::Id,
                record: &$crate::Record,
            ) -> Result<(), $crate::store::Error> {
                $crate::store::sql::ops::touch(&*self.inner, id, record).await
            }

            fn default_ttl(&self) -> Option<::std::time::Duration> {
                Some(self.inner.settings.default_ttl)
            }

            async fn all(&self) -> Result<Vec<($crate::Id, $crate::Record)>, $crate::store::Error> {
                $crate::store::sql::ops::all(&*self.inner).await
            }

            async fn len(&self) -> Result<usize, $crate::store::Error> {
                $crate::store::sql::ops::len(&*self.inner).await
            }

            async fn clear(&self) -> Result<(), $crate::store::Error> {
                $crate::store::sql::ops::clear(&*self.inner).await
            }
        }

        /// Session locks are rows of a second table (see the store's module docs).
        #[::async_trait::async_trait]
        impl $crate::store::LockStore for $store {
            async fn try_lock(
                &self,
                id: &$crate::Id,
                lease: &$crate::store::Lease,
            ) -> Result<bool, $crate::store::Error> {
                $crate::store::sql::ops::try_lock(&*self.inner, id, lease).await
            }

            async fn unlock(
                &self,
                id: &$crate::Id,
                lease: &$crate::store::Lease,
            ) -> Result<(), $crate::store::Error> {
                $crate::store::sql::ops::unlock(&*self.inner, id, lease).await
            }
        }

        /// Sessions by owner, through an index on the owner in the data (see the store's
        /// module docs).
        #[::async_trait::async_trait]
        impl $crate::store::OwnerIndex for $store {
            async fn sessions_of(
                &self,
                owner: &str,
            ) -> Result<Vec<($crate::Id, $crate::store::Loaded)>, $crate::store::Error> {
                $crate::store::sql::ops::sessions_of(&*self.inner, owner).await
            }
        }
    };
}
pub(crate) use impl_sql_store;

/// How long one store call may take by default, the wait for a connection or a busy file
/// included.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a pooled connection may sit unused before it is checked when taken (see
/// [`pool_options`]).
#[cfg(any(feature = "postgres", feature = "mysql"))]
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The options of a pool the store opens itself (not one given to `builder_with_pool`), for a
/// database server. sqlx's default checks every connection with a round trip (a ping) each time
/// one is taken: a second round trip for every query. A connection used within the last
/// second is handed out as it is; one that sat unused longer is checked first, so after a
/// server restart the dead connections left in the pool are replaced rather than failing
/// requests.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn pool_options<DB: sqlx::Database>() -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        // sqlx's own default is 30 s: too long to hold a web request while the database is
        // down.
        .acquire_timeout(DEFAULT_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for < CHECK_IDLE_AFTER {
                    return Ok(true);
                }
                // A failed ping drops the connection; the pool opens another.
                Ok(sqlx::Connection::ping(connection).await.is_ok())
            })
        })
}

/// How long a record whose cookie has no expiry lives: connect-pg-simple's `ttl` default (one day).
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(86_400);

/// How often expired records are deleted: connect-pg-simple's `pruneSessionInterval` default.
pub(crate) const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(900);

/// The shortest prune interval accepted, so a zero cannot make the task spin.
const MIN_PRUNE_INTERVAL: Duration = Duration::from_millis(1);

/// How a store makes whole seconds of the milliseconds it is given: connect-pg-simple rounds
/// up (`Math.ceil`), express-mysql-session to the nearest (`Math.round`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rounding {
    Up,
    // Only MySQL rounds to the nearest second.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    Nearest,
}

impl Rounding {
    /// Milliseconds since the epoch as whole seconds, as JavaScript's `Math.ceil(ms / 1000)` or
    /// `Math.round(ms / 1000)` (halves go up, also below zero).
    pub(crate) fn seconds(self, ms: i64) -> i64 {
        match self {
            Rounding::Up => ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0),
            Rounding::Nearest => ms.saturating_add(500).div_euclid(1000),
        }
    }
}

/// connect-pg-simple's `currentTimestamp()` (express-mysql-session's `Math.round(Date.now() /
/// 1000)`): now, in whole seconds. A record is live while its expiry is at least this.
pub(crate) fn now_seconds(rounding: Rounding, now: Timestamp) -> i64 {
    rounding.seconds(now.as_millis())
}

/// connect-pg-simple's `_getExpireTime` (express-mysql-session's `expires`): the cookie's
/// expiry in whole seconds, or, for a browser-session cookie, `now + ttl`.
pub(crate) fn expire_seconds(
    rounding: Rounding,
    record: &Record,
    now: Timestamp,
    default_ttl: Duration,
) -> i64 {
    rounding.seconds(record.cookie().store_expiry(now, default_ttl).as_millis())
}

/// A prune interval as the builders store it: `None` disables pruning.
pub(crate) fn prune_interval(interval: Option<Duration>) -> Option<Duration> {
    interval.map(|interval| interval.max(MIN_PRUNE_INTERVAL))
}

/// A name a SQL store was given that it refuses to put in its SQL.
///
/// Names are spliced into statements (SQL has no parameters for them), so only plain names are
/// accepted and they are always quoted: double-quoted, as connect-pg-simple quotes them, so
/// the case is kept (`Sessions` and `sessions` are different tables), or in MySQL, quoted with
/// backticks, as express-mysql-session quotes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidName {
    /// The table name is not 1 to 63 ASCII letters, digits and underscores, starting with a
    /// letter or an underscore.
    #[error(
        "invalid table name: use 1 to 63 ASCII letters, digits and underscores, not starting with a digit"
    )]
    Table,
    /// The schema name is not 1 to 63 ASCII letters, digits and underscores, starting with a
    /// letter or an underscore.
    #[error(
        "invalid schema name: use 1 to 63 ASCII letters, digits and underscores, not starting with a digit"
    )]
    Schema,
    /// A column name is not 1 to 63 ASCII letters, digits and underscores, starting with a
    /// letter or an underscore.
    #[error(
        "invalid column name: use 1 to 63 ASCII letters, digits and underscores, not starting with a digit"
    )]
    Column,
    /// The time zone is not a name such as `Europe/Berlin`, `UTC` or `UTC+3`.
    #[error(
        "invalid time zone: use a name made of ASCII letters, digits and `_ + - / : .` (such as Europe/Berlin)"
    )]
    TimeZone,
}

/// PostgreSQL keeps 63 bytes of a name (`NAMEDATALEN - 1`) and silently cuts the rest.
const MAX_IDENTIFIER_LEN: usize = 63;

/// Whether `name` is a plain SQL identifier: ASCII letters, digits and underscores, not starting
/// with a digit, at most 63 bytes. Such a name needs no escaping inside double quotes.
pub(crate) fn is_plain_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    name.len() <= MAX_IDENTIFIER_LEN
        && (first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `"name"` (MySQL quotes with backticks instead): a name made of ASCII letters, digits and underscores (a plain identifier, or one
/// derived from it, such as an index name), quoted. Such a name needs no escaping.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn quoted(name: &str) -> String {
    debug_assert!(
        name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "only validated names are quoted"
    );
    format!("\"{name}\"")
}

/// The index connect-pg-simple's `table.sql` puts on `expire` (`IDX_session_expire` for the
/// default table), named after the table so two tables can share a schema.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn expire_index_name(table: &str) -> String {
    derived_name("IDX_", table, "_expire")
}

/// The index on the sessions' owners (`session_owner_idx` for the default table).
pub(crate) fn owner_index_name(table: &str) -> String {
    derived_name("", table, "_owner_idx")
}

/// The table of session locks beside the sessions' table (`session_lock` for the default table).
pub(crate) fn lock_table_name(table: &str) -> String {
    derived_name("", table, "_lock")
}

/// `prefix + table + suffix`, with the table part shortened as PostgreSQL shortens the names it
/// makes, so the whole fits in 63 bytes and never collides with the table's own name.
pub(crate) fn derived_name(prefix: &str, table: &str, suffix: &str) -> String {
    let room = MAX_IDENTIFIER_LEN - prefix.len() - suffix.len();
    // Plain identifiers are ASCII, so any byte index is a character boundary.
    let table = table.get(..room).unwrap_or(table);
    format!("{prefix}{table}{suffix}")
}

/// A driver error as a store error, keeping the driver's error as the source. `database_kind`
/// classifies errors the server returned, by their code.
pub(crate) fn store_error(
    error: sqlx::Error,
    database_kind: fn(&dyn DatabaseError) -> ErrorKind,
) -> Error {
    let kind = match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ErrorKind::Unavailable,
        sqlx::Error::PoolTimedOut => ErrorKind::Timeout,
        sqlx::Error::Database(database) => database_kind(&**database),
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => ErrorKind::Decode,
        sqlx::Error::Encode(_) => ErrorKind::Encode,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, error)
}

/// The `sess` text a compare-and-set expects: the versions of the SQL stores are the `sess` they
/// loaded. A version of another kind (a counter) never matches.
pub(crate) fn expected_sess(version: &Version) -> Option<&str> {
    version
        .as_bytes()
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
}

/// Stops the pruning task when dropped (the task waits on the other end of this channel).
pub(crate) struct PruneTask {
    _stop: oneshot::Sender<()>,
}

/// Starts pruning `store` every `interval` (each delay randomized to 50–150 %, as
/// connect-pg-simple does, so several processes sharing a table do not prune in step). The task
/// holds only a weak reference: it ends when the store's [`PruneTask`] is dropped, and never
/// keeps the store alive. A failed prune is logged and the task carries on.
///
/// # Panics
/// Outside a tokio runtime.
pub(crate) fn spawn_pruner<S: Backend>(store: Weak<S>, interval: Duration) -> PruneTask {
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(prune_forever(store, interval, stopped));
    PruneTask { _stop: stop }
}

async fn prune_forever<S: Backend>(
    store: Weak<S>,
    interval: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        // The receiver resolves (with an error) as soon as the store drops its sender.
        if tokio::time::timeout(randomized(interval), &mut stopped)
            .await
            .is_ok()
        {
            return;
        }
        let Some(store) = store.upgrade() else {
            return;
        };
        if let Err(error) = ops::prune(&*store).await {
            tracing::warn!(
                store = S::STORE,
                error = &error as &dyn StdError,
                "failed to prune expired sessions; retrying at the next interval"
            );
        }
        // Not held across the wait: the store must be free to go.
        drop::<Arc<S>>(store);
    }
}

/// `interval` scaled by a random factor in 50–150 % (connect-pg-simple's
/// `delay / 2 + delay * Math.random()`).
fn randomized(interval: Duration) -> Duration {
    // Spreading the load is all the randomness is for: without it, use the interval itself.
    let random = getrandom::u32().unwrap_or(u32::MAX / 2);
    interval.mul_f64(0.5 + f64::from(random) / f64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SessionCookie;

    fn with_expiry(expires: Option<i64>) -> Record {
        let mut cookie = SessionCookie::default();
        if let Some(ms) = expires {
            cookie.set_expires(Some(Timestamp::from_millis(ms)));
        }
        Record::new(cookie, serde_json::Map::new())
    }

    #[test]
    fn seconds_round_up_as_math_ceil() {
        let ceil_seconds = |ms| Rounding::Up.seconds(ms);
        assert_eq!(ceil_seconds(0), 0);
        assert_eq!(ceil_seconds(1), 1);
        assert_eq!(ceil_seconds(999), 1);
        assert_eq!(ceil_seconds(1000), 1);
        assert_eq!(ceil_seconds(1001), 2);
        assert_eq!(ceil_seconds(-1), 0);
        assert_eq!(ceil_seconds(-1000), -1);
        assert_eq!(ceil_seconds(-1001), -1);
    }

    #[test]
    fn seconds_round_to_the_nearest_as_math_round() {
        let round_seconds = |ms| Rounding::Nearest.seconds(ms);
        assert_eq!(round_seconds(1_700_000_001_500), 1_700_000_002);
        assert_eq!(round_seconds(1_700_000_001_499), 1_700_000_001);
        assert_eq!(round_seconds(0), 0);
        // Math.round(-1.5) is -1, Math.round(-1.501) is -2.
        assert_eq!(round_seconds(-1500), -1);
        assert_eq!(round_seconds(-1501), -2);
        assert_eq!(round_seconds(i64::MAX), i64::MAX / 1000);
    }

    #[test]
    fn expire_is_the_cookie_expiry_rounded_up() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let record = with_expiry(Some(1_800_000_000_001));
        assert_eq!(
            expire_seconds(Rounding::Up, &record, now, DEFAULT_TTL),
            1_800_000_001
        );
        let record = with_expiry(Some(1_800_000_000_000));
        assert_eq!(
            expire_seconds(Rounding::Up, &record, now, DEFAULT_TTL),
            1_800_000_000
        );
    }

    #[test]
    fn browser_session_cookies_live_for_the_ttl() {
        let now = Timestamp::from_millis(1_700_000_000_250);
        let record = with_expiry(None);
        // Math.ceil(1700000000.25 + 86400)
        assert_eq!(
            expire_seconds(Rounding::Up, &record, now, DEFAULT_TTL),
            1_700_086_401
        );
        assert_eq!(
            expire_seconds(Rounding::Up, &record, now, Duration::from_secs(60)),
            1_700_000_061
        );
        assert_eq!(now_seconds(Rounding::Up, now), 1_700_000_001);
    }

    #[test]
    fn only_plain_identifiers_are_accepted() {
        for good in ["session", "Session", "_s", "s_2", &"a".repeat(63)] {
            assert!(is_plain_identifier(good), "{good}");
        }
        for bad in [
            "",
            "1session",
            "ses sion",
            "ses\"sion",
            "s;drop table x",
            "a.b",
            "s-1",
            "sé",
            "s$",
            &"a".repeat(64),
        ] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
        assert_eq!(owner_index_name("session"), "session_owner_idx");
        let longest = "t".repeat(63);
        assert_eq!(
            derived_name("IDX_", &longest, "_expire"),
            format!("IDX_{}_expire", &longest[..52])
        );
        #[cfg(any(feature = "postgres", feature = "sqlite"))]
        {
            assert_eq!(quoted("session"), "\"session\"");
            assert_eq!(expire_index_name("session"), "IDX_session_expire");
        }
    }

    #[test]
    fn error_kinds() {
        let kind = |error: sqlx::Error| store_error(error, |_| ErrorKind::Backend).kind();
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(kind(sqlx::Error::Io(refused)), ErrorKind::Unavailable);
        assert_eq!(kind(sqlx::Error::PoolClosed), ErrorKind::Unavailable);
        assert_eq!(kind(sqlx::Error::PoolTimedOut), ErrorKind::Timeout);
        assert_eq!(kind(sqlx::Error::RowNotFound), ErrorKind::Backend);
        assert_eq!(kind(sqlx::Error::Decode("bad".into())), ErrorKind::Decode);
        let error = store_error(sqlx::Error::PoolTimedOut, |_| ErrorKind::Backend);
        assert!(
            error
                .source()
                .unwrap()
                .downcast_ref::<sqlx::Error>()
                .is_some(),
            "the driver's error is the source"
        );
    }

    #[test]
    fn randomized_delays_stay_within_half_and_one_and_a_half() {
        let interval = Duration::from_secs(900);
        for _ in 0..1000 {
            let delay = randomized(interval);
            assert!(
                delay >= interval / 2 && delay <= interval * 3 / 2,
                "{delay:?}"
            );
        }
    }
}
