//! [`Session`]: the request-scoped handle a handler reads and writes (express's `req.session`).
//!
//! The handle is lazy. Nothing happens until the handler calls one of its methods: then the
//! cookie is verified and the record loaded, once. When the response goes out, the middleware
//! asks [`Session::commit`] what to write, using the decision function of
//! [`middleware::decide`](crate::middleware).

use std::hash::{BuildHasher, DefaultHasher, Hasher};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderValue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, MutexGuard};

use crate::cookie;
use crate::error::Error;
use crate::id::Id;
use crate::middleware::Context;
use crate::middleware::decide::{Decision, Facts, SessionFacts, decide};
use crate::record::{Record, SessionCookie};
use crate::store::{Condition, Loaded, SetOutcome, Version};
use crate::time::Timestamp;

use changes::{ChangeSet, Step};
pub(crate) use lock::Locking;
pub use lock::SessionLock;

mod changes;
mod lock;

/// How many rounds a save that keeps losing compare-and-set races makes. Within one process
/// writes to a session take turns, and one turn allows a reload and a second attempt, so one
/// round suffices there; the rest are for writers in other processes, with a growing pause
/// between rounds (taken without holding the turn).
const SAVE_ROUNDS: u32 = 16;
/// Attempts per round: the first, and one after reloading the newer record.
const ATTEMPTS_PER_ROUND: u32 = 2;

/// The session of the current request: express-session's `req.session`.
///
/// Take it as an axum extractor, or from the request extensions in plain tower. It is cheap to
/// clone; every clone is the same session.
///
/// Every method is `async` because the first one to run loads the session from the store.
/// Errors from the store make the middleware answer with its failure response, so a handler can
/// pass them on with `?`.
///
/// ```
/// use cloakroom::Session;
///
/// async fn counter(session: Session) -> Result<String, cloakroom::Error> {
///     let views = session.update("views", |views: Option<u64>| views.unwrap_or(0) + 1).await?;
///     Ok(format!("Number of views {views}"))
/// }
/// ```
///
/// # Concurrent requests
/// Requests on one session can run at the same time (two tabs, a double-click, several
/// processes). None of them loses another's change silently; what happens to a key depends on
/// how this request changed it:
///
/// | the handler | when another request saved the session first |
/// |---|---|
/// | [`update`](Self::update)d the key | the closure runs again on the value the other request stored: nothing is lost |
/// | read it ([`get`](Self::get)), then [`insert`](Self::insert)ed or [`remove`](Self::remove)d it | carried over if the other request left the key alone; otherwise the save fails with [`Error::Conflict`] and the response becomes 409 (nothing of this request is saved) |
/// | wrote it without reading it | this request's value wins, as if it had run second |
/// | did not change it | the other request's value stays |
///
/// So: use [`update`](Self::update) for read-modify-write (counters, carts, lists), or turn on
/// the session lock ([`with_session_lock`](crate::SessionLayerBuilder::with_session_lock)) to
/// make requests on one session take turns, and plain `get` then `insert` safe.
///
/// | store | compare-and-set | `update` re-applied | session lock |
/// |---|---|---|---|
/// | [`MemoryStore`](crate::MemoryStore) | version counter, in process | yes | in-process lock table with leases |
/// | `SqliteStore` | `UPDATE … WHERE sess = <loaded>` | yes | a row in `<table>_lock`, leased, checked by every locked write |
/// | `RedisStore` (and Cluster) | Lua script comparing the loaded value | yes | `SET {key}:lock NX PX`, checked by the write script |
/// | `PostgresStore` | `UPDATE … WHERE sess::text = <loaded>` | yes | a row in `<table>_lock` by the server's clock, checked by every locked write |
///
/// A save that loses a race costs two more store round trips (reload, write) per retry; the
/// lock costs two per request (take, release) plus the wait.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

struct Shared {
    ctx: Arc<Context>,
    request: RequestFacts,
    /// Set by the first method call, so the middleware can skip untouched sessions without
    /// taking the lock.
    used: AtomicBool,
    state: Mutex<State>,
}

impl Drop for Shared {
    /// A request that ends without its commit (the client went away, or the server dropped
    /// the response future) still frees the session's lock, from a task of its own; without a
    /// runtime to run it, the lease runs out by itself.
    fn drop(&mut self) {
        let Some(held) = self.state.get_mut().lock.take() else {
            return;
        };
        let (Some(locking), Ok(runtime)) = (
            self.ctx.locking.clone(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        runtime.spawn(async move {
            if let Err(error) = locking.release(held).await {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to release the lock of an abandoned session; its lease will run out"
                );
            }
        });
    }
}

/// What the session needs to know about its request.
pub(crate) struct RequestFacts {
    /// The `Cookie` header (several joined), verified only if the session is used.
    pub(crate) cookie_header: Option<HeaderValue>,
    /// Whether the request came over a secure connection (spec §4.8).
    pub(crate) secure: bool,
    /// The request line and headers, kept only for a custom `genid`.
    pub(crate) head: Option<http::Request<()>>,
}

#[derive(Default)]
struct State {
    loaded: bool,
    finished: bool,
    /// A store failure that leaves the session unusable; the middleware answers with it.
    failure: Option<Error>,
    /// express's `cookieId`: the id in the request's validly signed cookie.
    cookie_id: Option<Id>,
    /// express's `originalId`: the id loaded or generated at the start.
    original_id: Option<Id>,
    /// express's `savedHash`.
    saved: SavedState,
    /// express's `req.session`; `None` after `destroy` or `unset`.
    current: Option<Current>,
    /// The expiry was refreshed this request (express touches once).
    touched: bool,
    /// The handler called `unset`, and on which session.
    unset: Option<Id>,
    /// Ids destroyed during this request.
    destroyed: Vec<Id>,
    /// Ids replaced by `regenerate`: destroyed once the new session is saved.
    replaced: Vec<Id>,
    /// Non-fatal store failures, reported when the response goes out.
    warnings: Vec<Error>,
    /// The session's lock, while this request holds it (with the session lock on).
    lock: Option<lock::Held>,
}

/// What express's `savedHash` records: whether, and as what, the store holds this session.
#[derive(Clone, Copy, Default)]
enum SavedState {
    /// Never saved this request (`savedHash` unset).
    #[default]
    Unsaved,
    /// Loaded with `resave: false`: saved as loaded.
    AsLoaded,
    /// Saved by the handler; the fingerprint of the data then.
    Saved(u64),
}

/// The live session.
struct Current {
    id: Id,
    record: Record,
    /// The stored version this state derives from; `None` until first written.
    version: Option<Version>,
    /// When the store will drop the record, as it last said (for `touch_after`).
    stored_expires_at: Option<Timestamp>,
    changes: ChangeSet,
    /// The handler changed the cookie settings since the start (counts as a modification).
    cookie_modified: bool,
    /// … and since the last save.
    cookie_unsaved: bool,
}

impl Current {
    fn is_modified_since_load(&self, original_id: Option<&Id>) -> bool {
        original_id != Some(&self.id)
            || self.cookie_modified
            || self.changes.is_modified(self.record.data())
    }
}

/// The end-of-request decisions, before any store call.
pub(crate) struct Plan {
    decision: Decision,
    /// `decision.touch`, unless `touch_after` says the store's expiry is fresh enough.
    touch_due: bool,
    now: Timestamp,
    outcome: Outcome,
}

impl Plan {
    fn needs_store(&self) -> bool {
        self.decision.destroy || self.decision.save || self.touch_due
    }
}

enum Prepared {
    /// Nothing to decide (unused session, or a failure to report).
    Done(Outcome),
    Plan(Plan),
}

/// A commit that must wait for the store.
pub(crate) enum Deferred {
    /// The state was busy; decide later.
    Undecided,
    Decided(Plan),
}

/// What the middleware must do to the response.
#[derive(Default)]
pub(crate) struct Outcome {
    /// A `Set-Cookie` value to append.
    pub(crate) set_cookie: Option<HeaderValue>,
    /// A fatal store failure: answer with the failure response instead.
    pub(crate) failure: Option<Error>,
    /// Non-fatal failures (touch, cleanup after regenerate): logged and attached.
    pub(crate) warnings: Vec<Error>,
}

impl Outcome {
    fn failed(failure: Error, warnings: Vec<Error>) -> Self {
        Outcome {
            set_cookie: None,
            failure: Some(failure),
            warnings,
        }
    }
}

impl Session {
    pub(crate) fn new(ctx: Arc<Context>, request: RequestFacts) -> Self {
        Session {
            shared: Arc::new(Shared {
                ctx,
                request,
                used: AtomicBool::new(false),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The response to send when the store failed: the layer's failure handler.
    pub(crate) fn failure_response(&self, error: &Error) -> http::Response<bytes::Bytes> {
        (self.shared.ctx.on_failure)(error)
    }

    /// Whether any method was called.
    pub(crate) fn was_used(&self) -> bool {
        self.shared.used.load(Ordering::Acquire)
    }

    /// A typed value, or `None` when the key is absent.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails; [`Error::Deserialize`] when the value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let mut state = self.loaded_state().await?;
        let Some(current) = state.current.as_mut() else {
            return Ok(None);
        };
        current.changes.note_read(key);
        let Some(value) = current.record.data().get(key) else {
            return Ok(None);
        };
        T::deserialize(value)
            .map(Some)
            .map_err(|e| Error::Deserialize(Arc::new(e)))
    }

    /// A value as JSON, or `None` when the key is absent.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn get_value(&self, key: &str) -> Result<Option<Value>, Error> {
        let mut state = self.loaded_state().await?;
        let Some(current) = state.current.as_mut() else {
            return Ok(None);
        };
        current.changes.note_read(key);
        Ok(current.record.data().get(key).cloned())
    }

    /// Stores a value under `key`, as JSON. After [`destroy`](Self::destroy) this starts a new
    /// session.
    ///
    /// # Errors
    /// [`Error::Serialize`] when the value cannot be JSON; [`Error::ReservedKey`] for `cookie`;
    /// [`Error::Load`] when the store fails.
    pub async fn insert(&self, key: impl Into<String>, value: impl Serialize) -> Result<(), Error> {
        let value = serde_json::to_value(value).map_err(|e| Error::Serialize(Arc::new(e)))?;
        self.insert_value(key, value).await
    }

    /// Stores a JSON value under `key`.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub async fn insert_value(&self, key: impl Into<String>, value: Value) -> Result<(), Error> {
        let key = key.into();
        if key == "cookie" {
            return Err(Error::ReservedKey);
        }
        let mut state = self.loaded_state().await?;
        let current = self.live(&mut state);
        current
            .changes
            .insert(current.record.data_mut(), key, value);
        Ok(())
    }

    /// Changes the value under `key` with `update`, atomically with respect to every other
    /// request: the way to do read-modify-write (counters, carts, lists) in a session.
    ///
    /// `update` gets the current value (`None` when the key is absent) and returns the new one,
    /// which this returns too. If another request saves the session first, the save re-applies
    /// `update` to the value that request stored, so N concurrent updates make exactly N
    /// applications, across processes too. `update` may therefore run more than once: keep it
    /// a pure function of its argument. It runs while the session is locked for this request,
    /// so it must not block.
    ///
    /// ```
    /// # async fn counter(session: cloakroom::Session) -> Result<(), cloakroom::Error> {
    /// let views = session.update("views", |views: Option<u64>| views.unwrap_or(0) + 1).await?;
    /// # let _ = views;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Deserialize`] when the stored value is not a `T`; [`Error::Serialize`] when the
    /// new one cannot be JSON; [`Error::ReservedKey`] for `cookie`; [`Error::Load`] when the
    /// store fails. At the save, [`Error::Conflict`] if a re-applied `update` meets a value that
    /// is not a `T`.
    pub async fn update<T, F>(&self, key: &str, update: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Fn(Option<T>) -> T + Send + Sync + 'static,
    {
        let result = self
            .try_update(key, move |old| {
                Ok::<T, std::convert::Infallible>(update(old))
            })
            .await?;
        match result {
            Ok(value) => Ok(value),
            Err(never) => match never {},
        }
    }

    /// Like [`update`](Self::update), with a closure that may refuse: `Ok(Err(e))` when it
    /// returns `Err(e)`, and the key is left as it was (the rest of the session is not
    /// affected).
    ///
    /// If a concurrent save makes it re-apply the closure and the closure refuses the newer
    /// value, this request's save fails with [`Error::Conflict`] rather than saving a result the
    /// closure would not have given.
    ///
    /// ```
    /// # async fn take_ticket(session: cloakroom::Session) -> Result<(), cloakroom::Error> {
    /// #[derive(Debug)]
    /// struct SoldOut;
    /// let left = session
    ///     .try_update("tickets", |left: Option<u32>| {
    ///         left.unwrap_or(3).checked_sub(1).ok_or(SoldOut)
    ///     })
    ///     .await?;
    /// match left {
    ///     Ok(left) => println!("{left} tickets left"),
    ///     Err(SoldOut) => println!("sold out"),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`update`](Self::update).
    pub async fn try_update<T, E, F>(&self, key: &str, update: F) -> Result<Result<T, E>, Error>
    where
        T: Serialize + DeserializeOwned + 'static,
        E: 'static,
        F: Fn(Option<T>) -> Result<T, E> + Send + Sync + 'static,
    {
        if key == "cookie" {
            return Err(Error::ReservedKey);
        }
        let mut state = self.loaded_state().await?;
        let current = self.live(&mut state);
        current.changes.note_read(key);
        let old = match current.record.data().get(key) {
            Some(value) => {
                Some(T::deserialize(value).map_err(|e| Error::Deserialize(Arc::new(e)))?)
            }
            None => None,
        };
        let new = match update(old) {
            Ok(new) => new,
            Err(refused) => return Ok(Err(refused)),
        };
        let value = serde_json::to_value(&new).map_err(|e| Error::Serialize(Arc::new(e)))?;
        let step: Step = Arc::new(move |stored: Option<&Value>| {
            let old = match stored {
                Some(value) => Some(T::deserialize(value).ok()?),
                None => None,
            };
            serde_json::to_value(update(old).ok()?).ok()
        });
        current
            .changes
            .update(current.record.data_mut(), key, value, step);
        Ok(Ok(new))
    }

    /// Removes `key`, returning its value.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails; [`Error::Deserialize`] when the value is not a `T`
    /// (it is removed all the same).
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.remove_value(key).await? {
            None => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|e| Error::Deserialize(Arc::new(e))),
        }
    }

    /// Removes `key`, returning its JSON value.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn remove_value(&self, key: &str) -> Result<Option<Value>, Error> {
        let mut state = self.loaded_state().await?;
        let Some(current) = state.current.as_mut() else {
            return Ok(None);
        };
        current.changes.note_read(key);
        let removed = current.record.data_mut().shift_remove(key);
        current.changes.note_write(key, || removed.clone());
        Ok(removed)
    }

    /// Removes every key. The session itself (id, cookie) stays; see [`destroy`](Self::destroy).
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn clear(&self) -> Result<(), Error> {
        let mut state = self.loaded_state().await?;
        if let Some(current) = state.current.as_mut() {
            for (key, value) in current.record.take_data() {
                current.changes.note_write(&key, || Some(value));
            }
        }
        Ok(())
    }

    /// The session's id (express's `req.sessionID`), or `None` once destroyed or unset.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn id(&self) -> Result<Option<Id>, Error> {
        let state = self.loaded_state().await?;
        Ok(state.current.as_ref().map(|c| c.id.clone()))
    }

    /// The session's cookie settings (express's `req.session.cookie`), or `None` once destroyed
    /// or unset.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn cookie(&self) -> Result<Option<SessionCookie>, Error> {
        let state = self.loaded_state().await?;
        Ok(state.current.as_ref().map(|c| c.record.cookie().clone()))
    }

    /// Changes this session's cookie settings. They are stored with the session and apply to
    /// every later response for it, so this is how "remember me" lengthens one session.
    ///
    /// Unlike express, a change here counts as a modification: the session is saved and the new
    /// cookie sent, so the browser learns about it.
    ///
    /// ```
    /// # async fn remember_me(session: cloakroom::Session) -> Result<(), cloakroom::Error> {
    /// use std::time::Duration;
    /// session
    ///     .update_cookie(|cookie| cookie.set_max_age(Some(Duration::from_secs(30 * 86_400))))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn update_cookie(
        &self,
        update: impl FnOnce(&mut SessionCookie),
    ) -> Result<(), Error> {
        let mut state = self.loaded_state().await?;
        let current = self.live(&mut state);
        let before = current.record.cookie().clone();
        update(current.record.cookie_mut());
        if *current.record.cookie() != before {
            current.cookie_modified = true;
            current.cookie_unsaved = true;
        }
        Ok(())
    }

    /// Replaces the session with a new, empty one under a new id (express's `regenerate`), the
    /// defence against session fixation at login. The old record is destroyed only once the new
    /// one is saved, so a failed save never leaves the user with no session at all.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn regenerate(&self) -> Result<(), Error> {
        self.regenerate_inner(false).await
    }

    /// Like [`regenerate`](Self::regenerate), but the new session keeps the data and cookie
    /// settings of the old one: a new id for the same session.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn regenerate_keep_data(&self) -> Result<(), Error> {
        self.regenerate_inner(true).await
    }

    async fn regenerate_inner(&self, keep_data: bool) -> Result<(), Error> {
        let mut state = self.loaded_state().await?;
        let old = state.current.take();
        let mut fresh = self.generate();
        if let Some(old) = old {
            if keep_data {
                fresh.record = old.record;
            }
            if old.version.is_some() || state.cookie_id.as_ref() == Some(&old.id) {
                state.replaced.push(old.id);
            }
        }
        state.current = Some(fresh);
        Ok(())
    }

    /// Deletes the session from the store now, and makes the response expire the client's
    /// cookie. A later write in the same request starts a new session.
    ///
    /// # Errors
    /// [`Error::Destroy`] (or [`Error::Load`]) when the store fails.
    pub async fn destroy(&self) -> Result<(), Error> {
        let mut state = self.loaded_state().await?;
        let mut doomed: Vec<Id> = std::mem::take(&mut state.replaced);
        if let Some(current) = state.current.take() {
            if current.version.is_some() || state.cookie_id.as_ref() == Some(&current.id) {
                doomed.push(current.id);
            }
        }
        for id in doomed {
            if let Err(e) = self.shared.ctx.store.destroy(&id).await {
                let error = Error::Destroy(e);
                state.failure = Some(error.clone());
                return Err(error);
            }
            state.destroyed.push(id);
        }
        Ok(())
    }

    /// express's `req.session = null`: detaches the session from this request. With
    /// [`Unset::Keep`](crate::Unset::Keep) (the default) the stored session is left as it was and
    /// this request's changes are dropped; with [`Unset::Destroy`](crate::Unset::Destroy) it is
    /// destroyed when the response goes out.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn unset(&self) -> Result<(), Error> {
        let mut state = self.loaded_state().await?;
        if let Some(current) = state.current.take() {
            state.unset = Some(current.id);
        }
        Ok(())
    }

    /// Saves the session now (express's `save`). The end-of-request save is skipped unless the
    /// session changes again.
    ///
    /// # Errors
    /// [`Error::Save`] or [`Error::Contended`] when the store fails.
    pub async fn save(&self) -> Result<(), Error> {
        let mut state = self.loaded_state().await?;
        match self.write(&mut state, false).await {
            Ok(()) => Ok(()),
            Err(error) => {
                state.failure = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Replaces the session's data with what the store holds now (express's `reload`), dropping
    /// this request's unsaved changes.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the store no longer has the session; [`Error::Load`] when it fails.
    pub async fn reload(&self) -> Result<(), Error> {
        let mut state = self.loaded_state().await?;
        let Some(id) = state.current.as_ref().map(|c| c.id.clone()) else {
            return Err(Error::NotFound);
        };
        match self.shared.ctx.store.get(&id).await {
            Ok(Some(loaded)) => {
                self.adopt(&mut state, id, loaded);
                Ok(())
            }
            Ok(None) => Err(Error::NotFound),
            Err(e) => {
                let error = Error::Load(e);
                state.failure = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Restarts the session's lifetime from now (express's `touch`): the expiry becomes now plus
    /// the original max-age. This happens once per request anyway; calling it makes a request
    /// that reads nothing take part (with `rolling`, say).
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn touch(&self) -> Result<(), Error> {
        let mut state = self.loaded_state().await?;
        if let Some(current) = state.current.as_mut() {
            current.record.cookie_mut().touch_at(Timestamp::now());
            state.touched = true;
        }
        Ok(())
    }

    /// Locks the state, loading the session first if this is the first use.
    async fn loaded_state(&self) -> Result<MutexGuard<'_, State>, Error> {
        self.shared.used.store(true, Ordering::Release);
        let mut state = self.shared.state.lock().await;
        if state.finished {
            return Err(Error::Finished);
        }
        if let Some(failure) = &state.failure {
            return Err(failure.clone());
        }
        if !state.loaded {
            state.loaded = true;
            self.load(&mut state).await?;
        }
        Ok(state)
    }

    /// Verifies the cookie and loads its session, or generates a new one (spec §4.1 steps 7–8).
    async fn load(&self, state: &mut State) -> Result<(), Error> {
        let ctx = &self.shared.ctx;
        state.cookie_id = cookie::signed_id(
            self.shared.request.cookie_header.as_ref(),
            &ctx.config.name,
            &ctx.config.secrets,
        );
        if let Some(id) = state.cookie_id.clone() {
            // With the session lock on, the lock comes first, so what is loaded is what the
            // previous holder saved.
            if let Some(locking) = &ctx.locking {
                match locking.acquire(&id).await {
                    Ok(held) => state.lock = Some(held),
                    Err(error) => {
                        state.failure = Some(error.clone());
                        return Err(error);
                    }
                }
            }
            match ctx.store.get(&id).await {
                Ok(Some(loaded)) => {
                    self.adopt(state, id, loaded);
                    return Ok(());
                }
                // Unknown or expired: a new session with a new id, never the client's. Its
                // id needs no lock: nobody else can know it.
                Ok(None) => self.release_lock(state).await,
                Err(e) => {
                    let error = Error::Load(e);
                    state.failure = Some(error.clone());
                    return Err(error);
                }
            }
        }
        state.current = Some(self.generate());
        state.original_id = state.current.as_ref().map(|c| c.id.clone());
        state.saved = SavedState::Unsaved;
        Ok(())
    }

    /// Takes a loaded record as the session (express's `inflate`).
    fn adopt(&self, state: &mut State, id: Id, loaded: Loaded) {
        state.original_id = Some(id.clone());
        state.saved = if self.shared.ctx.config.resave {
            SavedState::Unsaved
        } else {
            SavedState::AsLoaded
        };
        state.current = Some(Current {
            id,
            record: loaded.record,
            version: Some(loaded.version),
            stored_expires_at: loaded.expires_at,
            changes: ChangeSet::default(),
            cookie_modified: false,
            cookie_unsaved: false,
        });
    }

    /// A brand-new session: a fresh id and the configured cookie.
    fn generate(&self) -> Current {
        let ctx = &self.shared.ctx;
        let request = &self.shared.request;
        let id = match (&ctx.config.genid, &request.head) {
            (Some(genid), Some(head)) => Id::from_string(genid(head)),
            _ => Id::generate(),
        };
        Current {
            id,
            record: Record::new(
                ctx.config
                    .cookie
                    .session_cookie(Timestamp::now(), request.secure),
                Map::new(),
            ),
            version: None,
            stored_expires_at: None,
            changes: ChangeSet::default(),
            cookie_modified: false,
            cookie_unsaved: false,
        }
    }

    /// The live session, starting a new one if it was destroyed or unset.
    fn live<'s>(&self, state: &'s mut State) -> &'s mut Current {
        if state.current.is_none() {
            state.current = Some(self.generate());
        }
        state
            .current
            .as_mut()
            .expect("a live session was just ensured")
    }

    /// Writes the live session: a new one only if its id is free, an existing one as a
    /// compare-and-set against the version loaded. On a conflict, reload the newer record, carry
    /// this request's changes over (see [`changes`]), and try again.
    ///
    /// `last` says no decision follows (the end-of-request commit), so nothing needs to remember
    /// what was saved.
    async fn write(&self, state: &mut State, last: bool) -> Result<(), Error> {
        let ctx = Arc::clone(&self.shared.ctx);
        let Some(current) = state.current.as_ref() else {
            return Ok(());
        };
        // A session never stored has an id no other request knows yet: it needs no turn.
        let takes_turns = current.version.is_some();
        let id = current.id.clone();
        for round in 0..SAVE_ROUNDS {
            if round > 0 {
                // Only writers in other processes can beat us a whole round: give them room,
                // without holding up this process's other writers meanwhile.
                tokio::time::sleep(backoff(round)).await;
            }
            // No other request in this process writes this session until this round is over.
            let _turn = match takes_turns {
                true => Some(ctx.write_locks.for_id(&id).lock().await),
                false => None,
            };
            for _ in 0..ATTEMPTS_PER_ROUND {
                let current = state
                    .current
                    .as_mut()
                    .expect("checked above; only this loop clears it");
                let mut condition = match &current.version {
                    Some(version) => Condition::version(version),
                    None => Condition::absent(),
                };
                if let Some(held) = state.lock.as_ref().filter(|held| held.id == current.id) {
                    condition = condition.with_lease(&held.lease);
                }
                match ctx.store.set(&current.id, &current.record, condition).await {
                    Ok(SetOutcome::Written(version)) => {
                        current.version = Some(version);
                        current.stored_expires_at =
                            self.store_expiry(&current.record, Timestamp::now());
                        current.cookie_unsaved = false;
                        if !last {
                            current.changes.written(current.record.data());
                            state.saved = SavedState::Saved(fingerprint(current.record.data()));
                        }
                        self.destroy_replaced(state).await;
                        return Ok(());
                    }
                    Ok(SetOutcome::Conflict) if current.version.is_none() => {
                        return Err(Error::IdInUse);
                    }
                    Ok(SetOutcome::Conflict) => {}
                    Ok(SetOutcome::LeaseLost) => return Err(Error::LeaseLost),
                    Err(e) => return Err(Error::Save(e)),
                }
                match ctx.store.get(&current.id).await {
                    Ok(Some(newer)) => {
                        let mut merged = newer.record.into_data();
                        current
                            .changes
                            .rebase(current.record.data(), &mut merged)
                            .map_err(|conflict| Error::Conflict { key: conflict.key })?;
                        current.record.set_data(merged);
                        current.version = Some(newer.version);
                        current.stored_expires_at = newer.expires_at;
                    }
                    // Destroyed (a logout in another tab) or expired meanwhile: never resurrect it.
                    Ok(None) => {
                        tracing::debug!(
                            "session vanished while saving; dropping this request's changes"
                        );
                        state.current = None;
                        return Ok(());
                    }
                    Err(e) => return Err(Error::Load(e)),
                }
            }
        }
        Err(Error::Contended)
    }

    /// Releases the session's lock, if this request holds it. A failure is a warning: the
    /// lease runs out by itself.
    async fn release_lock(&self, state: &mut State) {
        let Some(held) = state.lock.take() else {
            return;
        };
        if let Some(locking) = &self.shared.ctx.locking {
            if let Err(error) = locking.release(held).await {
                state.warnings.push(error);
            }
        }
    }

    /// Destroys the records `regenerate` replaced, now that the new one is saved. A failure is a
    /// warning, not fatal: the new session is safely stored, and the old record holds only what
    /// the session had before it was regenerated.
    async fn destroy_replaced(&self, state: &mut State) {
        for id in std::mem::take(&mut state.replaced) {
            match self.shared.ctx.store.destroy(&id).await {
                Ok(()) => state.destroyed.push(id),
                Err(e) => state.warnings.push(Error::Destroy(e)),
            }
        }
    }

    /// Commits without waiting when the decisions need no store call (the common read-only
    /// request with a throttled touch). Otherwise hands back what [`commit_later`] must finish.
    ///
    /// [`commit_later`]: Self::commit_later
    pub(crate) fn commit_now(&self) -> Result<Outcome, Deferred> {
        // Busy only if a clone of the handle (in a task the handler spawned) is mid-operation.
        let Ok(mut state) = self.shared.state.try_lock() else {
            return Err(Deferred::Undecided);
        };
        // Releasing the session's lock is a store call.
        if state.lock.is_some() {
            return Err(Deferred::Undecided);
        }
        match self.prepare(&mut state) {
            Prepared::Done(outcome) => Ok(outcome),
            Prepared::Plan(plan) if !plan.needs_store() => Ok(self.finish(&state, plan)),
            Prepared::Plan(plan) => Err(Deferred::Decided(plan)),
        }
    }

    /// Finishes a commit that needs the store: destroy, save or touch, then the cookie; then
    /// releases the session's lock, if held, so the next holder loads what this one saved.
    pub(crate) async fn commit_later(&self, deferred: Deferred) -> Outcome {
        let mut state = self.shared.state.lock().await;
        let mut outcome = self.commit_with_store(&mut state, deferred).await;
        if state.lock.is_some() {
            self.release_lock(&mut state).await;
            outcome.warnings.append(&mut state.warnings);
        }
        outcome
    }

    async fn commit_with_store(&self, state: &mut State, deferred: Deferred) -> Outcome {
        let mut plan = match deferred {
            Deferred::Decided(plan) => plan,
            Deferred::Undecided => match self.prepare(state) {
                Prepared::Done(outcome) => return outcome,
                Prepared::Plan(plan) => plan,
            },
        };
        let store = &self.shared.ctx.store;
        if plan.decision.destroy {
            let id = state
                .unset
                .take()
                .expect("destroy is decided only after unset");
            match store.destroy(&id).await {
                Ok(()) => state.destroyed.push(id),
                Err(e) => return Outcome::failed(Error::Destroy(e), plan.outcome.warnings),
            }
        }
        if plan.decision.save {
            if let Err(error) = self.write(state, true).await {
                return Outcome::failed(error, plan.outcome.warnings);
            }
        } else if plan.touch_due {
            if let Some(current) = &state.current {
                if let Err(e) = store.touch(&current.id, &current.record).await {
                    plan.outcome.warnings.push(Error::Touch(e));
                }
            }
        }
        self.finish(state, plan)
    }

    /// The decisions, without any store call: marks the session finished, refreshes the expiry
    /// once, and runs express's decision function.
    fn prepare(&self, state: &mut State) -> Prepared {
        let mut outcome = Outcome::default();
        if state.finished || !state.loaded {
            state.finished = true;
            return Prepared::Done(outcome);
        }
        state.finished = true;
        outcome.warnings = std::mem::take(&mut state.warnings);
        if let Some(failure) = state.failure.take() {
            return Prepared::Done(Outcome::failed(failure, outcome.warnings));
        }
        let now = Timestamp::now();
        if !state.touched {
            if let Some(current) = state.current.as_mut() {
                current.record.cookie_mut().touch_at(now);
            }
        }
        let facts = Facts {
            session: state.current.as_ref().map(|current| SessionFacts {
                is_new: state.cookie_id.as_ref() != Some(&current.id),
                is_modified: current.is_modified_since_load(state.original_id.as_ref()),
                is_saved: self.is_saved(state, current),
                has_saved_hash: !matches!(state.saved, SavedState::Unsaved),
                has_expires: current.record.cookie().expires().is_some(),
            }),
            unset_called: state.unset.is_some(),
        };
        let decision = decide(self.shared.ctx.rules, facts);
        let touch_due = decision.touch
            && state
                .current
                .as_ref()
                .is_some_and(|current| self.touch_is_due(current, now));
        Prepared::Plan(Plan {
            decision,
            touch_due,
            now,
            outcome,
        })
    }

    /// Whether the store's expiry is old enough to refresh (`touch_after`): the expiry a touch
    /// would set (the cookie's, or the store's default lifetime from now) is at least
    /// `touch_after` later than the one the store has.
    fn touch_is_due(&self, current: &Current, now: Timestamp) -> bool {
        let ctx = &self.shared.ctx;
        if ctx.config.touch_after.is_zero() {
            return true;
        }
        match (
            current.stored_expires_at,
            self.store_expiry(&current.record, now),
        ) {
            (Some(stored), Some(wanted)) => {
                let touch_after =
                    i64::try_from(ctx.config.touch_after.as_millis()).unwrap_or(i64::MAX);
                wanted.millis_since(stored) >= touch_after
            }
            // The store does not say when it expires the record: refresh.
            _ => true,
        }
    }

    /// When the store expires `record` if written or touched `now`: at the cookie's expiry, or
    /// after the store's default lifetime for a browser-session cookie.
    fn store_expiry(&self, record: &Record, now: Timestamp) -> Option<Timestamp> {
        record.cookie().expires().or_else(|| {
            let ttl = self.shared.ctx.store.default_ttl()?;
            Some(now.add_millis(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
        })
    }

    /// The cookie half of the commit: the session cookie, or an expired one after `destroy`.
    fn finish(&self, state: &State, plan: Plan) -> Outcome {
        let mut outcome = plan.outcome;
        let request = &self.shared.request;
        if plan.decision.set_cookie {
            if let Some(current) = &state.current {
                let secure_only = current.record.cookie().secure() == Some(true);
                if !secure_only || request.secure {
                    outcome.set_cookie =
                        self.cookie_header(&current.id, current.record.cookie(), None);
                }
            }
        }
        if outcome.set_cookie.is_none() {
            if let Some(cookie_id) = &state.cookie_id {
                if state.destroyed.contains(cookie_id) {
                    let template = self
                        .shared
                        .ctx
                        .config
                        .cookie
                        .session_cookie(plan.now, request.secure);
                    outcome.set_cookie =
                        self.cookie_header(cookie_id, &template, Some(Timestamp::EPOCH));
                }
            }
        }
        outcome
    }

    /// express's `isSaved`: the store holds exactly this data under this id.
    fn is_saved(&self, state: &State, current: &Current) -> bool {
        state.original_id.as_ref() == Some(&current.id)
            && !current.cookie_unsaved
            && match state.saved {
                SavedState::Unsaved => false,
                SavedState::AsLoaded => !current.changes.is_modified(current.record.data()),
                SavedState::Saved(saved) => fingerprint(current.record.data()) == saved,
            }
    }

    fn cookie_header(
        &self,
        id: &Id,
        cookie: &SessionCookie,
        expires: Option<Timestamp>,
    ) -> Option<HeaderValue> {
        let config = &self.shared.ctx.config;
        let value = match expires {
            // An expiring cookie needs no valid value.
            Some(_) => String::new(),
            None => config.secrets.sign(id.as_str()),
        };
        cookie::set_cookie(&config.name, &value, cookie, expires)
            .inspect_err(|invalid| {
                tracing::error!(attribute = invalid.0, "failed to write the session cookie");
            })
            .ok()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// A jittered, growing pause before a retry: up to 0.1 ms × 2^attempt, capped at 50 ms, so
/// writers in several processes stop colliding.
fn backoff(attempt: u32) -> std::time::Duration {
    let ceiling_us = (100u64 << attempt.min(9)).min(50_000);
    let jitter = std::hash::RandomState::new().hash_one(std::time::Instant::now());
    std::time::Duration::from_micros(jitter % ceiling_us + 1)
}

/// A hash of the data as JSON, to tell whether it changed since an explicit save.
fn fingerprint(data: &Map<String, Value>) -> u64 {
    struct HashWriter(DefaultHasher);
    impl io::Write for HashWriter {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut writer = HashWriter(DefaultHasher::new());
    serde_json::to_writer(&mut writer, data).expect("JSON values always serialize");
    writer.0.finish()
}
