//! The [`SessionStore`] trait: where sessions live between requests.
//!
//! A store keeps [`Record`]s by [`Id`]. The middleware calls it at most a few times a request:
//! `get` when the handler first uses its session, then `set` or `touch` once the handler is done.
//! Stores are object-safe (`Arc<dyn SessionStore>`), so handlers never name the store type.
//!
//! # Writing a store
//! Implement the four required methods with the contracts below (with
//! [`#[cloakroom::async_trait]`](crate::async_trait) on the `impl` block), and run the
//! conformance suite in `cloakroom-testkit` against a real server. Errors carry an [`ErrorKind`]; `Unavailable`
//! and `Timeout` tell the middleware the failure is transient (it answers 503 rather than 500).
//! An error's message and source must never contain a session id or session data.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::id::Id;
use crate::record::Record;
use crate::time::Timestamp;

#[cfg(any(feature = "postgres", feature = "mysql", feature = "dynamodb"))]
mod batch;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(any(feature = "redis", feature = "dynamodb"))]
mod join;
pub mod memory;
#[cfg(feature = "mysql")]
pub mod mysql;
mod owner;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use owner::{InvalidOwnerPath, OwnerIndex, OwnerPath};

/// A record as loaded, with the version a later compare-and-set must match.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The stored session.
    pub record: Record,
    /// Identifies this exact stored state; see [`SessionStore::set`].
    pub version: Version,
    /// When the store will drop the record, if it knows (a touch moves it without rewriting
    /// the record, so it can be later than `record.cookie.expires()`). The middleware uses it to
    /// skip touches that are not due; `None` means every touch is made.
    pub expires_at: Option<Timestamp>,
}

/// An opaque token for one stored state of a record: a counter, or the stored bytes themselves
/// (a store without counters can compare what it loaded with what it holds now).
///
/// A `touch` must not change it; a `set` that changes the stored record must. (A version made
/// from the stored bytes stays the same when identical bytes are written again, which is
/// harmless: the state is the same.)
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Version(VersionRepr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum VersionRepr {
    Counter(u64),
    Bytes(Arc<[u8]>),
}

impl Version {
    /// A version from a counter the store increments on every write.
    pub fn from_counter(counter: u64) -> Self {
        Version(VersionRepr::Counter(counter))
    }

    /// A version from bytes that identify the stored state (the stored text, or a digest of it).
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Self {
        Version(VersionRepr::Bytes(bytes.into()))
    }

    /// The counter, if this version was made by [`from_counter`](Self::from_counter).
    pub fn as_counter(&self) -> Option<u64> {
        match &self.0 {
            VersionRepr::Counter(counter) => Some(*counter),
            VersionRepr::Bytes(_) => None,
        }
    }

    /// The bytes, if this version was made by [`from_bytes`](Self::from_bytes).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.0 {
            VersionRepr::Counter(_) => None,
            VersionRepr::Bytes(bytes) => Some(bytes),
        }
    }
}

impl fmt::Debug for Version {
    // A version may be the stored session itself: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            VersionRepr::Counter(counter) => write!(f, "Version({counter})"),
            VersionRepr::Bytes(bytes) => write!(f, "Version(<{} bytes>)", bytes.len()),
        }
    }
}

/// What must hold for [`SessionStore::set`] to write: the record is absent (a new session), or
/// still at the version this request loaded; and, with a [`Lease`], the session's lock is still
/// held by that lease (the fencing check of [`LockStore`]).
#[derive(Clone, Copy, Debug)]
pub struct Condition<'a> {
    expected: Option<&'a Version>,
    lease: Option<&'a Lease>,
}

impl<'a> Condition<'a> {
    /// Write only if no live record has the id: the first save of a new session. A record
    /// already there (another session's, with a custom id generator) is a
    /// [`SetOutcome::Conflict`], never overwritten; an expired one counts as absent.
    pub fn absent() -> Self {
        Condition {
            expected: None,
            lease: None,
        }
    }

    /// Write only if the stored record is still at `version` (compare-and-set).
    pub fn version(version: &'a Version) -> Self {
        Condition {
            expected: Some(version),
            lease: None,
        }
    }

    /// … and only while `lease` still holds the session's lock.
    #[must_use]
    pub fn with_lease(mut self, lease: &'a Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The version the stored record must be at; `None` when it must be absent.
    pub fn expected(&self) -> Option<&'a Version> {
        self.expected
    }

    /// The lease that must still hold the session's lock, if any.
    pub fn lease(&self) -> Option<&'a Lease> {
        self.lease
    }
}

/// What a [`SessionStore::set`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetOutcome {
    /// The record was written; this is its new version.
    Written(Version),
    /// Nothing was written: the stored record is not what the [`Condition`] expected (another
    /// request wrote it, it was destroyed or expired, or, for a new session, the id is taken).
    Conflict,
    /// Nothing was written: the condition's [`Lease`] no longer holds the session's lock (it
    /// expired, and another request may have taken the lock).
    LeaseLost,
}

/// The store behind a session layer.
///
/// Every method is called with the session's id. Expiry is the store's job: the middleware never
/// checks `cookie.expires` itself, so a store must not return an expired record.
///
/// Writes are conditional ([`Condition`]): a store must be able to create a record only if it is
/// absent, and replace it only if it is still at the version loaded, atomically. That is what
/// keeps concurrent requests from losing each other's changes; the conformance suite in
/// `cloakroom-testkit` checks it.
#[async_trait]
pub trait SessionStore: fmt::Debug + Send + Sync + 'static {
    /// Loads a record.
    ///
    /// Returns `None` when the id is unknown or the record has expired (an expired record may be
    /// deleted as a side effect). The version identifies what was loaded.
    async fn get(&self, id: &Id) -> Result<Option<Loaded>, Error>;

    /// Writes a record if `condition` holds, atomically: check and write are one step, so no
    /// other writer can come between them.
    ///
    /// - [`Condition::absent`]: creates the record only if no live record has the id (an expired
    ///   one may be replaced); otherwise [`SetOutcome::Conflict`].
    /// - [`Condition::version`]: replaces the record only if the stored one is still at that
    ///   version; otherwise nothing changes and the result is [`SetOutcome::Conflict`]. A record
    ///   that no longer exists is a conflict too, so a concurrent logout is never undone.
    /// - With a lease ([`Condition::with_lease`], only for stores that implement [`LockStore`]):
    ///   and only while that lease holds the session's lock; otherwise
    ///   [`SetOutcome::LeaseLost`].
    ///
    /// The record's expiry is `record.cookie.expires()`; a store picks its own default lifetime
    /// for records without one, and deletes a record whose expiry has passed instead of writing
    /// it (under the same condition).
    async fn set(
        &self,
        id: &Id,
        record: &Record,
        condition: Condition<'_>,
    ) -> Result<SetOutcome, Error>;

    /// Deletes a record. Deleting an unknown id is not an error.
    async fn destroy(&self, id: &Id) -> Result<(), Error>;

    /// Extends a record's life to `record.cookie.expires()` (or the store's default lifetime).
    ///
    /// Only the expiry may change: never the data, and never the version, so a touch cannot
    /// undo or conflict with a concurrent write. An unknown or expired id is left alone (a
    /// touch racing a destroy must not bring the session back).
    async fn touch(&self, id: &Id, record: &Record) -> Result<(), Error>;

    /// How long the store keeps a record whose cookie has no expiry (a browser-session cookie),
    /// counted from its last save or touch; `None` if it does not expire such records. The
    /// middleware uses it with [`Loaded::expires_at`] to skip touches that are not due.
    fn default_ttl(&self) -> Option<Duration> {
        None
    }

    /// Where a session's owner is in its data: what [`Session::set_owner`](crate::Session::set_owner)
    /// writes, and, for a store that implements [`OwnerIndex`], what it indexes. The default
    /// is `passport.user`; a store with an owner index lets its builder choose.
    fn owner_path(&self) -> &OwnerPath {
        &owner::DEFAULT_OWNER_PATH
    }

    /// Every live record. Optional: the default reports [`ErrorKind::Unsupported`].
    async fn all(&self) -> Result<Vec<(Id, Record)>, Error> {
        Err(Error::unsupported())
    }

    /// How many live records there are. Optional: the default reports
    /// [`ErrorKind::Unsupported`].
    async fn len(&self) -> Result<usize, Error> {
        Err(Error::unsupported())
    }

    /// Whether there are no live records. Defaults to asking [`len`](Self::len).
    async fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len().await? == 0)
    }

    /// Deletes every record. Optional: the default reports [`ErrorKind::Unsupported`].
    async fn clear(&self) -> Result<(), Error> {
        Err(Error::unsupported())
    }
}

/// A shared store is a store, so an app can keep a handle (for `all`, or a store chosen at run
/// time as `Arc<dyn SessionStore>`) while the layer uses it.
#[async_trait]
impl<S: SessionStore + ?Sized> SessionStore for Arc<S> {
    async fn get(&self, id: &Id) -> Result<Option<Loaded>, Error> {
        (**self).get(id).await
    }
    async fn set(
        &self,
        id: &Id,
        record: &Record,
        condition: Condition<'_>,
    ) -> Result<SetOutcome, Error> {
        (**self).set(id, record, condition).await
    }
    async fn destroy(&self, id: &Id) -> Result<(), Error> {
        (**self).destroy(id).await
    }
    async fn touch(&self, id: &Id, record: &Record) -> Result<(), Error> {
        (**self).touch(id, record).await
    }
    fn default_ttl(&self) -> Option<Duration> {
        (**self).default_ttl()
    }
    fn owner_path(&self) -> &OwnerPath {
        (**self).owner_path()
    }
    async fn all(&self) -> Result<Vec<(Id, Record)>, Error> {
        (**self).all().await
    }
    async fn len(&self) -> Result<usize, Error> {
        (**self).len().await
    }
    async fn is_empty(&self) -> Result<bool, Error> {
        (**self).is_empty().await
    }
    async fn clear(&self) -> Result<(), Error> {
        (**self).clear().await
    }
}

/// A store that can lock a session for one request at a time: the store side of
/// [`SessionLayerBuilder::with_session_lock`](crate::SessionLayerBuilder::with_session_lock).
///
/// A lock is a lease: it is held by one [`Lease`] (a random token) until released or until its
/// time is up, so a holder that crashed frees the session by itself. Writes made under a lock
/// carry the lease in their [`Condition`], and a store must refuse them
/// ([`SetOutcome::LeaseLost`]) once the lease no longer holds the lock: a holder that was paused
/// past its lease cannot overwrite the work of the next holder (a fencing check).
///
/// Locks are separate from records: locking an id that has no record is allowed (and does not
/// create one), and destroying a record leaves its lock alone.
#[async_trait]
pub trait LockStore: SessionStore {
    /// Takes the lock on `id` for `lease`, unless another lease holds it and has not run out.
    /// Returns whether the lock was taken. Never waits: the middleware retries.
    async fn try_lock(&self, id: &Id, lease: &Lease) -> Result<bool, Error>;

    /// Releases the lock on `id` if `lease` still holds it; otherwise does nothing.
    async fn unlock(&self, id: &Id, lease: &Lease) -> Result<(), Error>;
}

#[async_trait]
impl<S: LockStore + ?Sized> LockStore for Arc<S> {
    async fn try_lock(&self, id: &Id, lease: &Lease) -> Result<bool, Error> {
        (**self).try_lock(id, lease).await
    }
    async fn unlock(&self, id: &Id, lease: &Lease) -> Result<(), Error> {
        (**self).unlock(id, lease).await
    }
}

/// One holder's claim on a session's lock: a random token and how long the claim lasts.
#[derive(Clone, PartialEq, Eq)]
pub struct Lease {
    token: Box<str>,
    duration: Duration,
}

impl Lease {
    /// A new lease with a random 128-bit token, lasting `duration` from when it is taken.
    ///
    /// # Panics
    /// If the operating system cannot provide randomness.
    pub fn new(duration: Duration) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random number generator must be available");
        let mut token = [0u8; 32];
        for (pair, byte) in token.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        Lease {
            token: std::str::from_utf8(&token).expect("hex is ASCII").into(),
            duration,
        }
    }

    /// The token that identifies this holder (32 hexadecimal characters).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// How long the lock lasts once taken.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// [`duration`](Self::duration) in whole milliseconds, at least one.
    pub fn duration_millis(&self) -> i64 {
        crate::time::millis(self.duration).max(1)
    }
}

impl fmt::Debug for Lease {
    // The token is a write capability: keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

/// Reads a stored record (express's JSON) for a store: [`Record::from_json`], with its error
/// as an [`ErrorKind::Decode`] store error (which, like it, never quotes the text).
///
/// # Errors
/// [`ErrorKind::Decode`] when the text is not an express-session record.
pub fn decode_record(json: &str) -> Result<Record, Error> {
    Record::from_json(json).map_err(|error| Error::new(ErrorKind::Decode, error))
}

/// The largest record, in bytes of JSON, that the built-in stores write or read unless told
/// otherwise (`with_max_record_size` on each store's builder): 1 MiB. A session that big is a
/// bug or an attack (an app copying user input into the session), and every request for it
/// would move it to and from the store.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 1024 * 1024;

/// Checks a record's JSON length against a store's limit, for a store: [`ErrorKind::TooLarge`]
/// when it is over. Call it after encoding a record to write (the write then does not happen)
/// and before decoding one read (a record written by another program, or before the limit was
/// lowered); the middleware answers both with its opaque failure response.
///
/// # Errors
/// [`ErrorKind::TooLarge`] when `len` is over `max_size`.
pub fn check_record_size(len: usize, max_size: usize) -> Result<(), Error> {
    if len > max_size {
        return Err(Error::new(
            ErrorKind::TooLarge,
            TooLarge {
                len,
                limit: max_size,
            },
        ));
    }
    Ok(())
}

/// A record over the store's size limit: its size only, never its content.
#[derive(Debug)]
struct TooLarge {
    len: usize,
    limit: usize,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session record is {} bytes, over the store's limit of {}",
            self.len, self.limit
        )
    }
}

impl StdError for TooLarge {}

/// What kind of failure a store reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend could not be reached (connection refused or lost). Transient.
    Unavailable,
    /// The backend did not answer in time. Transient.
    Timeout,
    /// The backend answered with an error.
    Backend,
    /// A record could not be encoded for the backend.
    Encode,
    /// A stored record could not be decoded (not JSON, or no `cookie`).
    Decode,
    /// A record is larger than the store's limit (see [`DEFAULT_MAX_RECORD_SIZE`]): not
    /// written, or not read.
    TooLarge,
    /// The store does not implement this optional operation.
    Unsupported,
}

/// A store failure: a kind, and the driver's own error as its [`source`](StdError::source).
///
/// Cheap to clone (the source is shared), so it can travel in response extensions.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl Error {
    /// An error of `kind` caused by `source`.
    pub fn new(kind: ErrorKind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Error {
            kind,
            source: Some(Arc::from(source.into())),
        }
    }

    /// An error of `kind` with no underlying cause.
    pub fn from_kind(kind: ErrorKind) -> Self {
        Error { kind, source: None }
    }

    /// The [`ErrorKind::Unsupported`] error of the optional methods.
    pub fn unsupported() -> Self {
        Self::from_kind(ErrorKind::Unsupported)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether trying again later may succeed (the backend is down or slow).
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("store::Error")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ErrorKind::Unavailable => "session store unavailable",
            ErrorKind::Timeout => "session store timed out",
            ErrorKind::Backend => "session store failed",
            ErrorKind::Encode => "failed to encode session record",
            ErrorKind::Decode => "failed to decode session record",
            ErrorKind::TooLarge => "session record over the store's size limit",
            ErrorKind::Unsupported => "operation not supported by this session store",
        })
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_kinds() {
        assert!(Error::from_kind(ErrorKind::Unavailable).is_transient());
        assert!(Error::from_kind(ErrorKind::Timeout).is_transient());
        assert!(!Error::from_kind(ErrorKind::Backend).is_transient());
        assert!(!Error::unsupported().is_transient());
    }

    #[test]
    fn source_is_kept_not_flattened() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = Error::new(ErrorKind::Unavailable, io);
        let source = error.source().unwrap();
        assert_eq!(
            source.downcast_ref::<std::io::Error>().unwrap().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
        assert_eq!(error.to_string(), "session store unavailable");
    }

    #[test]
    fn decode_errors_never_quote_the_record() {
        let error = decode_record(r#"{"cookie":"secret-session-data"}"#).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Decode);
        let source = error.source().unwrap().to_string();
        assert!(!source.contains("secret"), "{source}");
        assert_eq!(
            source,
            "stored session is JSON that is not an express-session record (line 1, column 31)"
        );
    }

    #[test]
    fn version_debug_hides_bytes() {
        let version = Version::from_bytes(b"{\"secret\":1}".to_vec());
        assert_eq!(format!("{version:?}"), "Version(<12 bytes>)");
        assert_eq!(Version::from_counter(7).as_counter(), Some(7));
    }
}
