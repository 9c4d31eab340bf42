//! The store operations the SQL stores share, written once over a [`Backend`] that runs the
//! statements on its own driver. Every call is bounded by the store's timeout.

use std::future::Future;
use std::time::Duration;

use super::statements::{Statement, Statements};
use super::{Rounding, expected_sess, expire_seconds, now_seconds};
use crate::id::Id;
use crate::record::Record;
use crate::store::{
    Condition, Error, ErrorKind, Lease, Loaded, OwnerPath, SetOutcome, Version, check_record_size,
    decode_record,
};
use crate::time::Timestamp;

/// One bind parameter.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

/// A row read to be loaded: `sid`, `sess` (NULL when over the size limit), its length in bytes,
/// and the expiry in milliseconds.
pub(crate) type LoadableRow = (String, Option<String>, i64, i64);

/// A compare-and-set of one session's data, as [`Statements::replace`] takes it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replacement<'a> {
    /// The new `sess`.
    pub(crate) sess: &'a str,
    /// Its expiry, in the expiry column's whole seconds.
    pub(crate) expire: i64,
    pub(crate) sid: &'a str,
    /// The `sess` the row must still hold.
    pub(crate) expected: &'a str,
    /// Now, in the same seconds: the row must be live then.
    pub(crate) now: i64,
}

impl<'a> Replacement<'a> {
    /// `replace`'s parameters.
    pub(crate) fn args(&self) -> [Arg<'a>; 5] {
        [
            Arg::Text(self.sess),
            Arg::Int(self.expire),
            Arg::Text(self.sid),
            Arg::Text(self.expected),
            Arg::Int(self.now),
        ]
    }
}

/// The options every SQL store has.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// How long a record whose cookie has no expiry lives after its last save or touch.
    pub(crate) default_ttl: Duration,
    /// The largest record written or read, in bytes of JSON.
    pub(crate) max_record_size: usize,
    /// How long one store call may take.
    pub(crate) timeout: Duration,
    /// Where a session's owner is in its data (the owner index is on it).
    pub(crate) owner_path: OwnerPath,
}

/// A database the SQL operations run on: it binds [`Arg`]s to its driver's queries.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The store's name in log events.
    const STORE: &'static str;

    /// How the expiry column's whole seconds are made.
    const ROUNDING: Rounding = Rounding::Up;

    fn statements(&self) -> &Statements;

    fn settings(&self) -> &Settings;

    /// Classifies a driver error (by the database's own codes) as a store error.
    fn error(error: sqlx::Error) -> Error;

    /// Runs a statement; returns the rows it affected.
    fn execute(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// Runs a `SELECT count(*)`.
    fn count(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;

    /// Runs a query for one row: `sess` (NULL when over the size limit), its length in bytes,
    /// and the expiry in milliseconds.
    fn fetch_one_record(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Option<(Option<String>, i64, i64)>, sqlx::Error>> + Send;

    /// Runs `get` for the session `sid`, live at `now` (seconds), with `sess` within
    /// `max_size` bytes. A backend may answer reads that wait at the same time with one query.
    fn get_row(
        &self,
        sid: &str,
        now: i64,
        max_size: i64,
    ) -> impl Future<Output = Result<Option<(Option<String>, i64, i64)>, sqlx::Error>> + Send {
        async move {
            let args = [Arg::Text(sid), Arg::Int(now), Arg::Int(max_size)];
            self.fetch_one_record(&self.statements().get, &args).await
        }
    }

    /// Runs `replace`; returns whether it wrote. A backend may run compare-and-sets that wait at
    /// the same time as one statement.
    fn replace(
        &self,
        write: Replacement<'_>,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send {
        async move {
            Ok(self
                .execute(&self.statements().replace, &write.args())
                .await?
                > 0)
        }
    }

    /// Runs a query for rows of `sid`, `sess` (NULL when over the size limit) and its length in
    /// bytes.
    fn fetch_records(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<(String, Option<String>, i64)>, sqlx::Error>> + Send;

    /// Runs a query for [`LoadableRow`]s.
    fn fetch_loadable_records(
        &self,
        sql: &Statement,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<LoadableRow>, sqlx::Error>> + Send;

    /// Makes sure the locks' table exists before its first use.
    fn ensure_lock_table(&self) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }

    /// Whether the locks' table exists (so pruning has locks to remove).
    fn has_lock_table(&self) -> bool {
        true
    }
}

/// Now in the expiry column's whole seconds.
fn now_s<B: Backend>() -> i64 {
    now_seconds(B::ROUNDING, Timestamp::now())
}

/// Runs `insert`; where it finds the key taken (a dialect without a conditional upsert), runs
/// `replace_dead`, with the same arguments, which takes the row over only if it is dead (an
/// expired session, a run-out lease). Returns whether either wrote. Each statement is atomic;
/// a row that changes between them only makes the answer "taken", which it was.
async fn insert_unless_live<B: Backend>(
    backend: &B,
    insert: &Statement,
    replace_dead: &Statement,
    args: &[Arg<'_>],
) -> Result<bool, sqlx::Error> {
    match backend.execute(insert, args).await {
        Ok(inserted) => Ok(inserted > 0),
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            Ok(backend.execute(replace_dead, args).await? > 0)
        }
        Err(error) => Err(error),
    }
}

/// Runs `call`, bounded by the store's timeout. When it runs out, the call's future is
/// dropped, and with it any connection it holds (the driver closes it or checks it before
/// reuse).
async fn bounded<B: Backend, T>(
    backend: &B,
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(backend.settings().timeout, call).await {
        Ok(result) => result.map_err(B::error),
        Err(elapsed) => Err(Error::new(ErrorKind::Timeout, elapsed)),
    }
}

/// The size limit as the statements' parameter: a limit past `i64::MAX` is no limit there.
fn max_size_arg<B: Backend>(backend: &B) -> Arg<'static> {
    Arg::Int(max_size(backend))
}

fn max_size<B: Backend>(backend: &B) -> i64 {
    i64::try_from(backend.settings().max_record_size).unwrap_or(i64::MAX)
}

/// The `sess` a read returned, checked against the size limit. The statements return its length
/// always and its text only within the limit, so a record over it (written by another program,
/// or before the limit was lowered) is refused here without ever having been transferred.
fn within_limit<B: Backend>(backend: &B, sess: Option<String>, len: i64) -> Result<String, Error> {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    check_record_size(len, backend.settings().max_record_size)?;
    sess.ok_or_else(|| Error::new(ErrorKind::Backend, MissingText))
}

/// A read that returned no `sess` text for a record within the size limit: the statements never
/// do.
#[derive(Debug, thiserror::Error)]
#[error("the database returned no session text for a record within the size limit")]
struct MissingText;

pub(crate) async fn get<B: Backend>(backend: &B, id: &Id) -> Result<Option<Loaded>, Error> {
    let row = bounded(
        backend,
        backend.get_row(id.as_str(), now_s::<B>(), max_size(backend)),
    )
    .await?;
    let Some((sess, sess_len, expires_ms)) = row else {
        return Ok(None);
    };
    loaded(backend, sess, sess_len, expires_ms).map(Some)
}

/// A row a read returned, as loaded: its version is the `sess` text, its expiry the `expire`
/// column. Every read that returns a [`Loaded`] builds it here, so they all agree with `get`.
fn loaded<B: Backend>(
    backend: &B,
    sess: Option<String>,
    sess_len: i64,
    expires_ms: i64,
) -> Result<Loaded, Error> {
    let sess = within_limit(backend, sess, sess_len)?;
    let record = decode_record(&sess)?;
    Ok(Loaded {
        record,
        version: Version::from_bytes(sess.into_bytes()),
        expires_at: Some(Timestamp::from_millis(expires_ms)),
    })
}

/// Every live session whose data names `owner` at the store's owner path, found through the
/// owner index. The SQL finds candidates; [`OwnerPath::owner_of`] decides, since the
/// database's text of a value that owns nothing (a float, an object) can equal `owner` too.
///
/// A candidate over the size limit, or that does not decode, fails the whole call, as in
/// `get` and `all`: skipped, it would be a session "sign out everywhere" never ends.
pub(crate) async fn sessions_of<B: Backend>(
    backend: &B,
    owner: &str,
) -> Result<Vec<(Id, Loaded)>, Error> {
    let args = [
        Arg::Text(owner),
        Arg::Int(now_s::<B>()),
        max_size_arg(backend),
    ];
    let rows = bounded(
        backend,
        backend.fetch_loadable_records(&backend.statements().sessions_of, &args),
    )
    .await?;
    let path = &backend.settings().owner_path;
    let mut found = Vec::with_capacity(rows.len());
    for (sid, sess, sess_len, expires_ms) in rows {
        let loaded = loaded(backend, sess, sess_len, expires_ms)?;
        if path.owner_of(loaded.record.data()).as_deref() == Some(owner) {
            found.push((Id::from_string(sid), loaded));
        }
    }
    Ok(found)
}

/// A conditional write. A new session is an insert that replaces only an expired row; an
/// existing one an `UPDATE … WHERE sess = <loaded>` (with a lease, `AND EXISTS` the lock row);
/// a record that has already expired is deleted instead of written, under the same condition.
pub(crate) async fn set<B: Backend>(
    backend: &B,
    id: &Id,
    record: &Record,
    condition: Condition<'_>,
) -> Result<SetOutcome, Error> {
    let settings = backend.settings();
    let statements = backend.statements();
    let now = Timestamp::now();
    let now_s = now_seconds(B::ROUNDING, now);
    let expire_s = expire_seconds(B::ROUNDING, record, now, settings.default_ttl);
    let expired = expire_s < now_s;
    let json = record.to_json();
    check_record_size(json.len(), settings.max_record_size)?;
    let written = SetOutcome::Written(Version::from_bytes(json.as_bytes()));
    let sid = Arg::Text(id.as_str());
    let Some(version) = condition.expected() else {
        if expired {
            // Nothing to create; but an id that is taken is still taken.
            let live = bounded(
                backend,
                backend.count(&statements.is_live, &[sid, Arg::Int(now_s)]),
            )
            .await?;
            return Ok(if live > 0 {
                SetOutcome::Conflict
            } else {
                written
            });
        }
        let args = [Arg::Text(&json), Arg::Int(expire_s), sid, Arg::Int(now_s)];
        let insert = insert_unless_live(
            backend,
            &statements.insert,
            &statements.replace_expired,
            &args,
        );
        return Ok(if bounded(backend, insert).await? {
            written
        } else {
            SetOutcome::Conflict
        });
    };
    let Some(expected) = expected_sess(version) else {
        return Ok(SetOutcome::Conflict);
    };
    let write = Replacement {
        sess: &json,
        expire: expire_s,
        sid: id.as_str(),
        expected,
        now: now_s,
    };
    let (sql, mut args) = match (expired, condition.lease()) {
        // The common write, which a backend may run together with others.
        (false, None) => {
            return Ok(if bounded(backend, backend.replace(write)).await? {
                written
            } else {
                SetOutcome::Conflict
            });
        }
        (false, Some(_)) => (&statements.replace_leased, write.args().to_vec()),
        (true, lease) => {
            let sql = match lease {
                None => &statements.delete_if_unchanged,
                Some(_) => &statements.delete_if_unchanged_leased,
            };
            (sql, vec![sid, Arg::Text(expected), Arg::Int(now_s)])
        }
    };
    if let Some(lease) = condition.lease() {
        args.push(Arg::Text(lease.token()));
    }
    if bounded(backend, backend.execute(sql, &args)).await? > 0 {
        return Ok(written);
    }
    match condition.lease() {
        Some(lease) if !holds_lock(backend, id, lease).await? => Ok(SetOutcome::LeaseLost),
        _ => Ok(SetOutcome::Conflict),
    }
}

pub(crate) async fn destroy<B: Backend>(backend: &B, id: &Id) -> Result<(), Error> {
    let args = [Arg::Text(id.as_str())];
    bounded(
        backend,
        backend.execute(&backend.statements().delete, &args),
    )
    .await?;
    Ok(())
}

/// Moves `expire` only, and only on a live row: a touch never brings a session back.
pub(crate) async fn touch<B: Backend>(backend: &B, id: &Id, record: &Record) -> Result<(), Error> {
    let now = Timestamp::now();
    let expire_s = expire_seconds(B::ROUNDING, record, now, backend.settings().default_ttl);
    let args = [
        Arg::Int(expire_s),
        Arg::Text(id.as_str()),
        Arg::Int(now_seconds(B::ROUNDING, now)),
    ];
    bounded(backend, backend.execute(&backend.statements().touch, &args)).await?;
    Ok(())
}

/// Every live record. One over the size limit fails the whole call with
/// [`ErrorKind::TooLarge`], as an undecodable one does with [`ErrorKind::Decode`].
pub(crate) async fn all<B: Backend>(backend: &B) -> Result<Vec<(Id, Record)>, Error> {
    let args = [Arg::Int(now_s::<B>()), max_size_arg(backend)];
    let rows = bounded(
        backend,
        backend.fetch_records(&backend.statements().all, &args),
    )
    .await?;
    rows.into_iter()
        .map(|(sid, sess, sess_len)| {
            let sess = within_limit(backend, sess, sess_len)?;
            Ok((Id::from_string(sid), decode_record(&sess)?))
        })
        .collect()
}

pub(crate) async fn len<B: Backend>(backend: &B) -> Result<usize, Error> {
    let args = [Arg::Int(now_s::<B>())];
    let count = bounded(backend, backend.count(&backend.statements().len, &args)).await?;
    // `count(*)` is never negative; saturate where usize is narrower.
    Ok(usize::try_from(count).unwrap_or(usize::MAX))
}

pub(crate) async fn clear<B: Backend>(backend: &B) -> Result<(), Error> {
    bounded(backend, backend.execute(&backend.statements().clear, &[])).await?;
    Ok(())
}

/// Deletes the expired rows, and the locks whose holders went away without releasing them.
/// Not bounded by the store's timeout: no request waits for it, and deleting many rows can take
/// longer.
pub(crate) async fn prune<B: Backend>(backend: &B) -> Result<u64, Error> {
    let statements = backend.statements();
    let args = [Arg::Int(now_s::<B>())];
    let pruned = backend
        .execute(&statements.prune, &args)
        .await
        .map_err(B::error)?;
    if backend.has_lock_table() {
        backend
            .execute(&statements.prune_locks, &[])
            .await
            .map_err(B::error)?;
    }
    Ok(pruned)
}

pub(crate) async fn try_lock<B: Backend>(
    backend: &B,
    id: &Id,
    lease: &Lease,
) -> Result<bool, Error> {
    backend.ensure_lock_table().await?;
    let args = [
        Arg::Text(id.as_str()),
        Arg::Text(lease.token()),
        Arg::Int(lease.duration_millis()),
    ];
    let statements = backend.statements();
    let lock = insert_unless_live(backend, &statements.lock, &statements.relock, &args);
    bounded(backend, lock).await
}

pub(crate) async fn unlock<B: Backend>(backend: &B, id: &Id, lease: &Lease) -> Result<(), Error> {
    backend.ensure_lock_table().await?;
    let args = [Arg::Text(id.as_str()), Arg::Text(lease.token())];
    bounded(
        backend,
        backend.execute(&backend.statements().unlock, &args),
    )
    .await?;
    Ok(())
}

/// Whether `lease` holds the lock on `id` now.
async fn holds_lock<B: Backend>(backend: &B, id: &Id, lease: &Lease) -> Result<bool, Error> {
    let args = [Arg::Text(id.as_str()), Arg::Text(lease.token())];
    let held = bounded(
        backend,
        backend.count(&backend.statements().holds_lock, &args),
    )
    .await?;
    Ok(held > 0)
}
