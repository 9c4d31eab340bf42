//! [`Session`]: the request-scoped handle a handler reads and writes (express's `req.session`),
//! and everything that happens to it within a request.
//!
//! The handle is lazy. Nothing happens until the handler calls one of its methods: then the
//! cookie is verified and the record loaded, once (`state`). When the response goes out, the
//! middleware asks the session to commit (`commit`), and every rule of what to save, touch or
//! send lives in one function (`decide`). A save that loses a race with another request carries
//! this request's changes over (`changes`); the opt-in session lock is `lock`. The middleware
//! only wires tower to these.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use crate::error::Error;
use crate::events::SessionEvent;
use crate::id::Id;
use crate::record::{MAX_VALUE_DEPTH, SessionCookie, nests_deeper_than};
use crate::time::Timestamp;

use changes::Step;
pub(crate) use commit::{Commit, Outcome};
pub(crate) use context::{Context, FailureHandler};
pub(crate) use lock::Locking;
pub use lock::SessionLock;
pub(crate) use state::RequestFacts;
use state::State;
pub(crate) use turns::WriteLocks;

mod changes;
mod commit;
mod context;
mod decide;
mod flash;
mod lifetime;
mod lock;
mod ownership;
mod state;
mod store_calls;
mod turns;

pub use flash::FLASH_KEY;
pub(crate) use lifetime::Meta;

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

    /// A session that belongs to no request, for unit tests of handlers: new and empty, kept in
    /// a fresh [`MemoryStore`](crate::MemoryStore), never committed. Call the handler with a
    /// clone, then read what it left in the session.
    ///
    /// ```
    /// use cloakroom::Session;
    ///
    /// async fn count_view(session: Session) -> Result<u64, cloakroom::Error> {
    ///     session.update("views", |views: Option<u64>| views.unwrap_or(0) + 1).await
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cloakroom::Error> {
    /// let session = Session::detached();
    /// assert_eq!(count_view(session.clone()).await?, 1);
    /// assert_eq!(count_view(session.clone()).await?, 2);
    /// assert_eq!(session.get::<u64>("views").await?, Some(2));
    /// # Ok(()) }
    /// ```
    pub fn detached() -> Self {
        let ctx = Context {
            config: crate::config::Config::default(),
            secrets: crate::signing::Secrets::new([crate::id::Id::generate().as_str()])
                .expect("a generated id is a non-empty secret"),
            store: Arc::new(crate::MemoryStore::new()),
            #[cfg(feature = "metrics")]
            metrics: None,
            on_failure: Arc::new(crate::middleware::default_failure_response),
            write_locks: WriteLocks::new(),
            locking: None,
        };
        Session::new(
            Arc::new(ctx),
            RequestFacts {
                cookie_header: None,
                token: None,
                secure: false,
                head: None,
            },
        )
    }

    /// The response to send when the store failed: the layer's failure handler.
    pub(crate) fn failure_response(&self, error: &Error) -> http::Response<bytes::Bytes> {
        (self.shared.ctx.on_failure)(error)
    }

    /// Whether any method was called.
    /// Tells the layer's hooks of `event`.
    pub(crate) fn emit(&self, event: SessionEvent) {
        let hooks = &self.shared.ctx.config.hooks;
        if !hooks.is_empty() {
            hooks.emit(event);
        }
    }

    /// Tells the layer's hooks of a store failure.
    pub(crate) fn emit_store_error(&self, error: &Error) {
        self.shared.ctx.config.hooks.store_error(error);
    }

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
            .map_err(|_| Error::deserialize::<T>(key))
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
    /// [`Error::Serialize`] when the value cannot be JSON; [`Error::TooDeep`] when it nests
    /// deeper than [`MAX_VALUE_DEPTH`](crate::MAX_VALUE_DEPTH); [`Error::ReservedKey`] for
    /// `cookie`; [`Error::Load`] when the store fails. On an error the session is unchanged.
    pub async fn insert(&self, key: impl Into<String>, value: impl Serialize) -> Result<(), Error> {
        let key = key.into();
        let value = serde_json::to_value(value).map_err(|e| Error::serialize(&key, e))?;
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
        let value = checked_depth(&key, value)?;
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
            Some(value) => Some(T::deserialize(value).map_err(|_| Error::deserialize::<T>(key))?),
            None => None,
        };
        let new = match update(old) {
            Ok(new) => new,
            Err(refused) => return Ok(Err(refused)),
        };
        let value = serde_json::to_value(&new).map_err(|e| Error::serialize(key, e))?;
        let value = checked_depth(key, value)?;
        let step: Step = Arc::new(move |stored: Option<&Value>| {
            let old = match stored {
                Some(value) => Some(T::deserialize(value).ok()?),
                None => None,
            };
            let new = serde_json::to_value(update(old).ok()?).ok()?;
            (!nests_deeper_than(&new, MAX_VALUE_DEPTH)).then_some(new)
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
                .map_err(|_| Error::deserialize::<T>(key)),
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
    /// `async`, like every method, because the id is known only once the session is loaded:
    /// a request whose cookie is missing, forged or names a session the store no longer holds
    /// gets a fresh id, and finding that out takes the cookie check and a store read. Later
    /// calls in the same request cost a lock, nothing more.
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
            } else if let Some(meta) = old.record.data().get(lifetime::META_KEY) {
                // The new id is the same session's: its creation time and deadline stay.
                fresh.changes.insert(
                    fresh.record.data_mut(),
                    lifetime::META_KEY.to_owned(),
                    meta.clone(),
                );
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
        if let Some(current) = state.current.take()
            && (current.version.is_some() || state.cookie_id.as_ref() == Some(&current.id))
        {
            doomed.push(current.id);
        }
        for id in doomed {
            if let Err(e) = self.shared.ctx.store().destroy(&id).await {
                let error = Error::Destroy(e);
                state.failure = Some(error.clone());
                return Err(error);
            }
            self.emit(SessionEvent::Destroyed { id: id.clone() });
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
        match self.shared.ctx.store().get(&id).await {
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

    /// Sends this session's token in the response header of the
    /// [header transport](crate::SessionLayerBuilder::with_header_transport) when the
    /// session's id is sent at all (a new or regenerated session), for a client that logs in
    /// without a token yet: a JSON login endpoint calls it. Requests that came with a token get
    /// their new token in the header anyway, and a cookie client never gets one unless asked
    /// like this: a token in a header is readable by the page's scripts, where an `HttpOnly`
    /// cookie is not. Does nothing without a token header configured.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn send_token_header(&self) -> Result<(), Error> {
        let mut state = self.loaded_state().await?;
        state.token_asked = true;
        Ok(())
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
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// `value` for `key` as it may be stored, or [`Error::TooDeep`].
fn checked_depth(key: &str, value: Value) -> Result<Value, Error> {
    if nests_deeper_than(&value, MAX_VALUE_DEPTH) {
        return Err(Error::TooDeep {
            key: key.to_owned(),
            limit: MAX_VALUE_DEPTH,
        });
    }
    Ok(value)
}
