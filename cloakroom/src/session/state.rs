//! A session's state within one request: what was loaded or generated, what the handler
//! changed, and how it started (express's `cookieId`, `originalId`, `savedHash`).

use std::hash::{DefaultHasher, Hasher};
use std::io;

use http::HeaderValue;
use serde_json::{Map, Value};

use super::Session;
use super::changes::ChangeSet;
use super::lock;
use crate::cookie;
use crate::error::Error;
use crate::events::SessionEvent;
use crate::id::Id;
use crate::record::Record;
use crate::store::{Loaded, Version};
use crate::time::Timestamp;

/// What the session needs to know about its request.
pub(crate) struct RequestFacts {
    /// The `Cookie` header (several joined), verified only if the session is used; `None`
    /// when a token header decides, or the cookie transport is off.
    pub(crate) cookie_header: Option<HeaderValue>,
    /// The token header's value, when the request carries one (see `transport`).
    pub(crate) token: Option<HeaderValue>,
    /// Whether the request came over a secure connection (express's `issecure`).
    pub(crate) secure: bool,
    /// The request line and headers, kept only for a custom `genid`.
    pub(crate) head: Option<http::Request<()>>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) loaded: bool,
    pub(super) finished: bool,
    /// A store failure that leaves the session unusable; the middleware answers with it.
    pub(super) failure: Option<Error>,
    /// express's `cookieId`: the id in the request's validly signed cookie.
    pub(super) cookie_id: Option<Id>,
    /// express's `originalId`: the id loaded or generated at the start.
    pub(super) original_id: Option<Id>,
    /// express's `savedHash`.
    pub(super) saved: SavedState,
    /// express's `req.session`; `None` after `destroy` or `unset`.
    pub(super) current: Option<Current>,
    /// The expiry was refreshed this request (express touches once).
    pub(super) touched: bool,
    /// The handler called `unset`, and on which session.
    pub(super) unset: Option<Id>,
    /// The handler asked for the token in a response header (`send_token_header`).
    pub(super) token_asked: bool,
    /// Ids destroyed during this request.
    pub(super) destroyed: Vec<Id>,
    /// Ids replaced by `regenerate`: destroyed once the new session is saved.
    pub(super) replaced: Vec<Id>,
    /// Non-fatal store failures, reported when the response goes out.
    pub(super) warnings: Vec<Error>,
    /// The session's lock, while this request holds it (with the session lock on).
    pub(super) lock: Option<lock::Held>,
}

/// What express's `savedHash` records: whether, and as what, the store holds this session.
#[derive(Clone, Copy, Default)]
pub(super) enum SavedState {
    /// Never saved this request (`savedHash` unset).
    #[default]
    Unsaved,
    /// Loaded with `resave: false`: saved as loaded.
    AsLoaded,
    /// Saved by the handler; the fingerprint of the data then.
    Saved(u64),
}

/// The live session.
pub(super) struct Current {
    pub(super) id: Id,
    pub(super) record: Record,
    /// The stored version this state derives from; `None` until first written.
    pub(super) version: Option<Version>,
    /// When the store will drop the record, as it last said (for `touch_after`).
    pub(super) stored_expires_at: Option<Timestamp>,
    pub(super) changes: ChangeSet,
    /// The handler changed the cookie settings since the start (counts as a modification).
    pub(super) cookie_modified: bool,
    /// … and since the last save.
    pub(super) cookie_unsaved: bool,
}

impl Current {
    pub(super) fn is_modified_since_load(&self, original_id: Option<&Id>) -> bool {
        original_id != Some(&self.id)
            || self.cookie_modified
            || self.changes.is_modified(self.record.data())
    }
}

impl Session {
    /// Verifies the cookie and loads its session, or generates a new one (express's
    /// `generate` or `inflate`).
    pub(super) async fn load(&self, state: &mut State) -> Result<(), Error> {
        let ctx = &self.shared.ctx;
        let request = &self.shared.request;
        state.cookie_id = match (&request.token, &ctx.config.transport.header) {
            (Some(value), Some(header)) => header
                .token(value)
                .and_then(|token| ctx.secrets.unsign(token))
                .map(Id::from_string),
            _ => cookie::signed_id(
                request.cookie_header.as_ref(),
                &ctx.config.name,
                &ctx.secrets,
            ),
        };
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
            match ctx.store().get(&id).await {
                Ok(Some(loaded)) if !self.has_ended(loaded.record.data(), Timestamp::now()) => {
                    self.adopt(state, id, loaded);
                    return Ok(());
                }
                // Past its deadline or idle too long: gone for good, like an expired session.
                Ok(Some(_)) => {
                    if let Err(e) = ctx.store().destroy(&id).await {
                        state.warnings.push(Error::Destroy(e));
                    }
                    self.emit(SessionEvent::Expired { id });
                    self.release_lock(state).await;
                }
                // Unknown or expired: a new session with a new id, never the client's. Its
                // id needs no lock: nobody else can know it.
                Ok(None) => {
                    self.emit(SessionEvent::Expired { id });
                    self.release_lock(state).await;
                }
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
    pub(super) fn adopt(&self, state: &mut State, id: Id, loaded: Loaded) {
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
    pub(super) fn generate(&self) -> Current {
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
    pub(super) fn live<'s>(&self, state: &'s mut State) -> &'s mut Current {
        if state.current.is_none() {
            state.current = Some(self.generate());
        }
        state
            .current
            .as_mut()
            .expect("a live session was just ensured")
    }
}

/// A hash of the data as JSON, to tell whether it changed since an explicit save.
pub(super) fn fingerprint(data: &Map<String, Value>) -> u64 {
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
