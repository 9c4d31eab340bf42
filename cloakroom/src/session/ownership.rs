//! Who a session belongs to and what is recorded about it: [`Session::set_owner`],
//! [`Session::set_session_info`], [`Session::reset_lifetime`], and the end-of-request upkeep
//! of the session's lifetime (see [`lifetime`](super::lifetime)).

use serde_json::{Map, Value};

use super::Session;
use super::decide::Decision;
use super::lifetime::{self, META_KEY, Meta, Patch};
use super::state::Current;
use crate::error::Error;
use crate::time::Timestamp;

impl Session {
    /// Marks the session as `owner`'s (a user id, say), so a
    /// [`SessionRegistry`](crate::SessionRegistry) can list it among that user's sessions,
    /// revoke it, and count it against a cap. Call it at login, after
    /// [`regenerate`](Self::regenerate).
    ///
    /// The owner is written into the session's data at the store's
    /// [`owner_path`](crate::SessionStore::owner_path), `passport.user` by default: where
    /// passport.js keeps the signed-in user, so an Express app sharing the store sees the same
    /// user signed in, and sessions it signs in are owned too. The session's metadata starts
    /// then as well, under the `cloakroom` key:
    ///
    /// ```json
    /// {"cookie": {…}, "passport": {"user": "alice"},
    ///  "cloakroom": {"created": 1764633600000, "seen": 1764637200000,
    ///                "deadline": 1764662400000, "info": {"device": "Firefox on Linux"}}}
    /// ```
    ///
    /// `created` is when the session started, `seen` its last request (brought up to date at
    /// most once a minute, or more often for an idle timeout), `deadline` the end an
    /// [absolute timeout](crate::SessionLayerBuilder::with_absolute_timeout) set, and `info`
    /// what [`set_session_info`](Self::set_session_info) recorded. Times are milliseconds since
    /// the epoch.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn set_owner(&self, owner: &str) -> Result<(), Error> {
        let path = self.shared.ctx.store().owner_path();
        let timeouts = self.shared.ctx.config.timeouts;
        let mut state = self.loaded_state().await?;
        let current = self.live(&mut state);
        let key = path.key().to_owned();
        let value = path.with_owner(current.record.data().get(&key).cloned(), owner);
        let start = lifetime::start(Timestamp::now(), timeouts, false);
        if current.version.is_none() {
            // Never stored (a login, after `regenerate`): no other request knows the id, so
            // there is no newer record to carry these onto, and plain writes will do.
            let meta = start.apply(current.record.data().get(META_KEY));
            let data = current.record.data_mut();
            current.changes.insert(data, key, value);
            current.changes.insert(data, META_KEY.to_owned(), meta);
            return Ok(());
        }
        let (path, owner) = (path.clone(), owner.to_owned());
        current.changes.update(
            current.record.data_mut(),
            &key,
            value,
            std::sync::Arc::new(move |stored| Some(path.with_owner(stored.cloned(), &owner))),
        );
        patch_meta(current, start);
        Ok(())
    }

    /// The session's owner (see [`set_owner`](Self::set_owner)), if it has one.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn owner(&self) -> Result<Option<String>, Error> {
        let path = self.shared.ctx.store().owner_path();
        let state = self.loaded_state().await?;
        Ok(state
            .current
            .as_ref()
            .and_then(|current| path.owner_of(current.record.data())))
    }

    /// Records `info` with the session for its owner's session list (a short device
    /// description, say: never anything secret, it is shown to the user). Replaces what was
    /// recorded before.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn set_session_info(&self, info: Map<String, Value>) -> Result<(), Error> {
        let timeouts = self.shared.ctx.config.timeouts;
        let mut state = self.loaded_state().await?;
        let current = self.live(&mut state);
        let patch = lifetime::start(Timestamp::now(), timeouts, false).set("info", info.into());
        patch_meta(current, patch);
        Ok(())
    }

    /// Starts the session's lifetime over: its creation time becomes now, and so does the
    /// start of its [absolute timeout](crate::SessionLayerBuilder::with_absolute_timeout).
    /// [`regenerate`](Self::regenerate) keeps both; call this after it when a sign-in should
    /// count as a new session.
    ///
    /// # Errors
    /// [`Error::Load`] when the store fails.
    pub async fn reset_lifetime(&self) -> Result<(), Error> {
        let timeouts = self.shared.ctx.config.timeouts;
        let mut state = self.loaded_state().await?;
        let current = self.live(&mut state);
        patch_meta(current, lifetime::start(Timestamp::now(), timeouts, true));
        Ok(())
    }

    /// The end-of-request upkeep of the session's metadata, once `decision` is made: a session
    /// being saved gets its lifetime started (or its `seen` brought up to date), a stored one
    /// whose `seen` is stale is saved for that alone, and a cookie with an expiry never
    /// outlasts the session's deadline. Only for sessions with metadata, or with timeouts on.
    pub(super) fn keep_lifetime(
        &self,
        current: &mut Current,
        decision: &mut Decision,
        now: Timestamp,
    ) {
        let config = &self.shared.ctx.config;
        let has_meta = current.record.data().contains_key(META_KEY);
        if decision.destroy || !(has_meta || config.timeouts.any()) {
            return;
        }
        let mut meta = Meta::read(current.record.data());
        let every = lifetime::seen_every(config.timeouts, config.touch_after);
        let stale = meta
            .seen
            .is_none_or(|seen| now.millis_since(seen) >= crate::time::millis(every));
        let unstarted = meta.created.is_none()
            || (config.timeouts.absolute.is_some() && meta.deadline.is_none());
        // A save writes `seen` only when it is stale: within the granularity it need not move,
        // and a session started during this request (at login, say) is up to date.
        if (decision.save && (stale || unstarted)) || (stale && current.version.is_some()) {
            patch_meta(current, lifetime::start(now, config.timeouts, false));
            meta = Meta::read(current.record.data());
            decision.save = true;
            decision.touch = false;
        }
        if let (Some(deadline), Some(expires)) = (meta.deadline, current.record.cookie().expires())
            && expires > deadline
        {
            current.record.cookie_mut().set_expires(Some(deadline));
        }
    }

    /// Whether a loaded session has ended by its own metadata: past its deadline, or idle for
    /// longer than the layer's idle timeout.
    pub(super) fn has_ended(&self, data: &Map<String, Value>, now: Timestamp) -> bool {
        // One lookup for the common session without metadata.
        data.contains_key(META_KEY)
            && Meta::read(data).has_ended(now, self.shared.ctx.config.timeouts.idle)
    }
}

/// Applies `patch` to the session's metadata as an update step, so it carries over onto a
/// record another request saves meanwhile.
fn patch_meta(current: &mut Current, patch: Patch) {
    let value = patch.apply(current.record.data().get(META_KEY));
    current.changes.update(
        current.record.data_mut(),
        META_KEY,
        value,
        patch.into_step(),
    );
}
