//! [`SessionRegistry`]: every session of one user, to list, revoke, and cap.

use std::cmp::Reverse;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::id::Id;
use crate::session::{Meta, Session};
use crate::store::{Loaded, OwnerIndex};
use crate::time::Timestamp;

/// Every session of a user, on a store with an [`OwnerIndex`]: "where am I signed in", "sign
/// out everywhere else", an administrator revoking a stolen session, at most N devices.
///
/// Sessions belong to a user once [`Session::set_owner`] names them (at login), or when an
/// Express app sharing the store signed them in with passport (`passport.user`). A revoked
/// session is deleted from the store, so its next request, on any process, finds no session.
///
/// The list never shows session ids: each session has a [`handle`](SessionInfo::handle), a
/// digest of its id that cannot be turned back into it, and that only revokes a session of the
/// user it is given with. A handle from another user, forged, or of a session that has ended
/// revokes nothing.
///
/// ```
/// use cloakroom::{MemoryStore, Session, SessionLayer, SessionRegistry};
///
/// # async fn example(session: Session) -> Result<(), cloakroom::Error> {
/// let store = MemoryStore::new();
/// let layer = SessionLayer::builder(store.clone()).with_secret("an example secret of 32 bytes or more").build();
/// let registry = SessionRegistry::new(store);
///
/// // At login:
/// session.regenerate().await?;
/// session.set_owner("alice").await?;
/// // "Sign out everywhere else":
/// let revoked = registry.revoke_others("alice", &session).await?;
/// # let _ = (layer, revoked);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionRegistry<S> {
    store: S,
}

/// What [`SessionRegistry::make_room`] does when a user is at the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtLimit {
    /// Revoke the sessions seen least recently, to make room.
    RevokeOldest,
    /// Refuse: the caller turns the login down.
    Refuse,
}

/// What [`SessionRegistry::make_room`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// There is room now; this many sessions were revoked for it.
    Admitted {
        /// How many sessions were revoked to make room.
        revoked: usize,
    },
    /// The user is at the cap and [`AtLimit::Refuse`] was asked for: nothing was revoked.
    Refused,
}

/// One session of a user, as [`SessionRegistry::list`] gives it. Serializes (for a JSON API)
/// as `{"handle", "current", "created", "last_seen", "expires", "info"}`, times as ISO 8601
/// text or `null`.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionInfo {
    /// Revokes this session with [`SessionRegistry::revoke`], for its owner only.
    pub handle: String,
    /// This is the session of the request that asked.
    pub current: bool,
    /// When it started (`None` for a session signed in by an app that does not record it).
    pub created: Option<Timestamp>,
    /// Its last request, to within a minute (or a quarter of the idle timeout).
    pub last_seen: Option<Timestamp>,
    /// When the store will drop it unless it is used again.
    pub expires: Option<Timestamp>,
    /// What [`Session::set_session_info`] recorded.
    pub info: Map<String, Value>,
}

impl Serialize for SessionInfo {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        let time = |time: Option<Timestamp>| time.map(Timestamp::to_iso8601);
        let mut info = serializer.serialize_struct("SessionInfo", 6)?;
        info.serialize_field("handle", &self.handle)?;
        info.serialize_field("current", &self.current)?;
        info.serialize_field("created", &time(self.created))?;
        info.serialize_field("last_seen", &time(self.last_seen))?;
        info.serialize_field("expires", &time(self.expires))?;
        info.serialize_field("info", &self.info)?;
        info.end()
    }
}

/// A session's handle: the first 128 bits of SHA-256 over a fixed label and the id, base64url.
/// The id has at least 128 bits of randomness (cloakroom's and express's), so the handle
/// reveals nothing usable about it.
fn handle_of(id: &Id) -> String {
    let digest = Sha256::new()
        .chain_update(b"cloakroom session handle\0")
        .chain_update(id.as_str().as_bytes())
        .finalize();
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

impl<S: OwnerIndex> SessionRegistry<S> {
    /// A registry over `store` (the same store the layer uses, or a clone of it).
    pub fn new(store: S) -> Self {
        SessionRegistry { store }
    }

    /// The live sessions of `owner`, `current`'s first, then the most recently seen.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn list(&self, owner: &str, current: &Session) -> Result<Vec<SessionInfo>, Error> {
        let current = current.id().await?;
        let mut list: Vec<SessionInfo> = self
            .sessions(owner)
            .await?
            .into_iter()
            .map(|(id, loaded)| {
                let meta = Meta::read(loaded.record.data());
                SessionInfo {
                    handle: handle_of(&id),
                    current: current.as_ref() == Some(&id),
                    created: meta.created,
                    last_seen: meta.seen.or(meta.created),
                    expires: loaded.expires_at.or(loaded.record.cookie().expires()),
                    info: Meta::info(loaded.record.data()),
                }
            })
            .collect();
        list.sort_by_key(|info| (Reverse(info.current), Reverse(info.last_seen)));
        Ok(list)
    }

    /// Revokes the session of `owner` that `handle` names. `false` when `owner` has no live
    /// session with that handle (another user's, forged, or ended): nothing was revoked.
    ///
    /// # Errors
    /// [`Error::Load`] or [`Error::Destroy`] when the store fails.
    pub async fn revoke(&self, owner: &str, handle: &str) -> Result<bool, Error> {
        let Some((id, _)) = self
            .sessions(owner)
            .await?
            .into_iter()
            .find(|(id, _)| handle_of(id) == handle)
        else {
            return Ok(false);
        };
        self.store.destroy(&id).await.map_err(Error::Destroy)?;
        Ok(true)
    }

    /// Revokes every session of `owner` (after a password reset, say), returning how many.
    ///
    /// # Errors
    /// [`Error::Load`] or [`Error::Destroy`] when the store fails.
    pub async fn revoke_all(&self, owner: &str) -> Result<usize, Error> {
        self.revoke_where(owner, |_| true).await
    }

    /// Revokes every session of `owner` but `current`'s ("sign out everywhere else"),
    /// returning how many.
    ///
    /// # Errors
    /// [`Error::Load`] or [`Error::Destroy`] when the store fails.
    pub async fn revoke_others(&self, owner: &str, current: &Session) -> Result<usize, Error> {
        let current = current.id().await?;
        self.revoke_where(owner, |id| current.as_ref() != Some(id))
            .await
    }

    /// Makes room for one more session of `owner` (call it at login, before
    /// [`Session::set_owner`]) under a cap of `limit` sessions: with
    /// [`AtLimit::RevokeOldest`], revokes the sessions seen least recently until `owner` has
    /// fewer than `limit` besides `current`'s; with [`AtLimit::Refuse`], revokes nothing and
    /// says [`Admission::Refused`] if `owner` has `limit` already.
    ///
    /// The count and the login are not one atomic step: two logins of one user at the same
    /// moment can both be admitted, leaving the user one session over the cap until the next
    /// login.
    ///
    /// # Errors
    /// [`Error::Load`] or [`Error::Destroy`] when the store fails.
    pub async fn make_room(
        &self,
        owner: &str,
        limit: usize,
        at_limit: AtLimit,
        current: &Session,
    ) -> Result<Admission, Error> {
        let current = current.id().await?;
        let mut others: Vec<(Id, Option<Timestamp>)> = self
            .sessions(owner)
            .await?
            .into_iter()
            .filter(|(id, _)| current.as_ref() != Some(id))
            .map(|(id, loaded)| {
                let meta = Meta::read(loaded.record.data());
                (id, meta.seen.or(meta.created))
            })
            .collect();
        if others.len() < limit {
            return Ok(Admission::Admitted { revoked: 0 });
        }
        if at_limit == AtLimit::Refuse {
            return Ok(Admission::Refused);
        }
        // Least recently seen first; a session with no record of it counts as the oldest.
        others.sort_by_key(|(_, seen)| *seen);
        let excess = others.len() + 1 - limit.max(1);
        for (id, _) in others.iter().take(excess) {
            self.store.destroy(id).await.map_err(Error::Destroy)?;
        }
        Ok(Admission::Admitted { revoked: excess })
    }

    async fn sessions(&self, owner: &str) -> Result<Vec<(Id, Loaded)>, Error> {
        self.store.sessions_of(owner).await.map_err(Error::Load)
    }

    async fn revoke_where(
        &self,
        owner: &str,
        revoke: impl Fn(&Id) -> bool,
    ) -> Result<usize, Error> {
        let mut revoked = 0;
        for (id, _) in self.sessions(owner).await? {
            if revoke(&id) {
                self.store.destroy(&id).await.map_err(Error::Destroy)?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }
}

impl<S> fmt::Debug for SessionRegistry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRegistry").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_fixed_digests_of_the_id() {
        let id = Id::from_string("abc".to_owned());
        assert_eq!(
            handle_of(&id),
            handle_of(&Id::from_string("abc".to_owned()))
        );
        assert_ne!(
            handle_of(&id),
            handle_of(&Id::from_string("abd".to_owned()))
        );
        assert_eq!(handle_of(&id).len(), 22);
        assert!(!handle_of(&id).contains("abc"));
    }
}
