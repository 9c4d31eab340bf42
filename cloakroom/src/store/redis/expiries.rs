//! What this process knows of when sessions' keys expire, so a read can leave out `PTTL`.
//!
//! The middleware asks when a session expires to decide whether a touch is due
//! ([`Loaded::expires_at`](crate::store::Loaded::expires_at)); a read answers with the key's
//! `PTTL`, a second command beside the `GETRANGE` of the value. But a key's expiry only changes
//! when a client writes (`SET … EX`), touches (`EXPIRE`) or deletes it, and a process that just
//! did one of those, or read the TTL, knows when the key expires at the earliest. So for each
//! session it recently updated, touched or read, the store remembers a fingerprint of the value
//! and that time, and a read that finds the same value takes the time from memory instead of
//! asking.
//!
//! Another client that writes the session changes its value: the fingerprint then differs,
//! the read falls back on the record's own `cookie.expires` (connect-redis and this store both
//! give the key a TTL that reaches it, and a touch only moves it later), and the next read asks
//! `PTTL` again. Another client's touch keeps the value and moves the expiry later, so what is
//! remembered stays a time the key does not expire before: an answer errs early, and at worst
//! a touch is made that was not due. One change goes unseen: another client's touch that
//! shortens the TTL without a write (an Express app that lowers `cookie.maxAge` and saves
//! nothing, or processes configured with different TTLs). So an expiry is remembered for a
//! minute at most ([`TRUSTED_FOR_MS`]), then asked again.
//!
//! Memory is bounded: a fixed number of slots, picked by a hash of the session id; a session
//! whose slot another takes is asked about again. A slot holds hashes and a time, never an id
//! or a value.

use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use foldhash::quality::RandomState;

use crate::id::Id;
use crate::time::Timestamp;

/// Slots per store (and its clones): with 32-byte entries, about 200 KiB.
const SLOTS: usize = 4096;

/// How long an expiry learned by a write, a touch or a `PTTL` is used before the key's TTL is
/// asked again: for at most this long, a read can miss another client's touch that shortened
/// it (then a touch that was due is skipped). At most one `PTTL` a minute for a session read
/// all the time.
const TRUSTED_FOR_MS: i64 = 60_000;

pub(super) struct Expiries {
    /// Randomly seeded, so nobody can aim two ids at one slot or two values at one fingerprint.
    hasher: RandomState,
    slots: Box<[Mutex<Option<Known>>]>,
}

/// What a slot remembers of one session.
#[derive(Clone, Copy)]
pub(super) struct Known {
    id: u64,
    value: u64,
    expires_at: Timestamp,
    /// When the expiry was learned.
    learned_at: Timestamp,
}

impl Expiries {
    pub(super) fn new() -> Self {
        Expiries {
            hasher: RandomState::default(),
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// What is remembered of the session `id` and still trusted `now`, if anything: a read
    /// can then leave out `PTTL` and ask [`expiry`](Self::expiry) with what it finds.
    pub(super) fn recall(&self, id: &Id, now: Timestamp) -> Option<Known> {
        let id = self.hasher.hash_one(id.as_str());
        (*self.slot(id))
            .filter(|known| known.id == id && now.millis_since(known.learned_at) < TRUSTED_FOR_MS)
    }

    /// When the key expires at the earliest, if `value` is what `known` was remembered with;
    /// otherwise the session was written by another client since, and is forgotten.
    pub(super) fn expiry(&self, known: Known, value: &[u8]) -> Option<Timestamp> {
        if self.hasher.hash_one(value) == known.value {
            return Some(known.expires_at);
        }
        let mut slot = self.slot(known.id);
        if slot.is_some_and(|now| now.id == known.id && now.value == known.value) {
            *slot = None;
        }
        None
    }

    /// The session `id` holds `value`, and its key expires no earlier than `expires_at`, as
    /// learned `now`.
    pub(super) fn remember(&self, id: &Id, value: &[u8], expires_at: Timestamp, now: Timestamp) {
        let id = self.hasher.hash_one(id.as_str());
        let value = self.hasher.hash_one(value);
        *self.slot(id) = Some(Known {
            id,
            value,
            expires_at,
            learned_at: now,
        });
    }

    /// This process wrote the session `id` with `value` `now`, giving its key a TTL of
    /// `ttl_secs` (zero or less deletes it).
    pub(super) fn written(&self, id: &Id, value: &[u8], now: Timestamp, ttl_secs: i64) {
        match key_expiry(now, ttl_secs) {
            Some(expires_at) => self.remember(id, value, expires_at, now),
            None => self.forget(id),
        }
    }

    /// This process gave the session's key a TTL of `ttl_secs` `now` (zero or less deletes
    /// it), leaving its value as it was.
    pub(super) fn touched(&self, id: &Id, now: Timestamp, ttl_secs: i64) {
        let Some(expires_at) = key_expiry(now, ttl_secs) else {
            return self.forget(id);
        };
        let id = self.hasher.hash_one(id.as_str());
        if let Some(known) = self.slot(id).as_mut().filter(|known| known.id == id) {
            known.expires_at = expires_at;
            known.learned_at = now;
        }
    }

    /// The session's key is gone, or nothing can be said of it.
    pub(super) fn forget(&self, id: &Id) {
        let id = self.hasher.hash_one(id.as_str());
        let mut slot = self.slot(id);
        if slot.is_some_and(|known| known.id == id) {
            *slot = None;
        }
    }

    pub(super) fn forget_all(&self) {
        for slot in &self.slots {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    fn slot(&self, id: u64) -> std::sync::MutexGuard<'_, Option<Known>> {
        // The low bits: the hash is uniform, so any bits pick the slot as well.
        let slot = &self.slots[id as usize % SLOTS];
        slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// When a key given a TTL of `ttl_secs` `now` expires at the earliest (Redis runs the command
/// after `now`), or `None` when the TTL deletes it.
fn key_expiry(now: Timestamp, ttl_secs: i64) -> Option<Timestamp> {
    (ttl_secs > 0).then(|| now.add_millis(ttl_secs.saturating_mul(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any time: the memory reads no clock.
    fn now() -> Timestamp {
        Timestamp::from_millis(1_000_000)
    }

    #[test]
    fn a_value_remembered_gives_its_expiry_and_another_value_forgets_it() {
        let expiries = Expiries::new();
        let id = Id::from_string("apple".to_owned());
        let at = now().add_millis(3_600_000);
        assert!(expiries.recall(&id, now()).is_none());
        expiries.remember(&id, b"{\"views\":1}", at, now());
        let known = expiries.recall(&id, now()).unwrap();
        assert_eq!(expiries.expiry(known, b"{\"views\":1}"), Some(at));

        expiries.touched(&id, now(), 3_660);
        let known = expiries.recall(&id, now()).unwrap();
        assert_eq!(
            expiries.expiry(known, b"{\"views\":1}"),
            Some(at.add_millis(60_000)),
            "a touch keeps the value and moves the expiry"
        );
        assert_eq!(
            expiries.expiry(known, b"{\"views\":2}"),
            None,
            "written by another client"
        );
        assert!(expiries.recall(&id, now()).is_none(), "and forgotten");
    }

    #[test]
    fn an_expiry_is_trusted_for_a_minute_from_when_it_was_learned() {
        let expiries = Expiries::new();
        let id = Id::from_string("apple".to_owned());
        let at = now().add_millis(3_600_000);
        expiries.remember(&id, b"{}", at, now());
        let later = now().add_millis(TRUSTED_FOR_MS - 1);
        assert!(expiries.recall(&id, later).is_some());
        assert!(
            expiries
                .recall(&id, now().add_millis(TRUSTED_FOR_MS))
                .is_none()
        );
        expiries.touched(&id, later, 3_600);
        assert!(
            expiries
                .recall(&id, now().add_millis(TRUSTED_FOR_MS))
                .is_some(),
            "a touch is learning too"
        );
    }

    #[test]
    fn only_the_session_remembered_is_answered_for() {
        let expiries = Expiries::new();
        let (apple, pear) = (
            Id::from_string("apple".to_owned()),
            Id::from_string("pear".to_owned()),
        );
        expiries.remember(&apple, b"{}", now(), now());
        expiries.touched(&pear, now(), 60);
        expiries.forget(&pear);
        assert!(
            expiries.recall(&pear, now()).is_none(),
            "a touch remembers nothing"
        );
        let known = expiries.recall(&apple, now()).unwrap();
        assert_eq!(expiries.expiry(known, b"{}"), Some(now()));
        expiries.forget(&apple);
        assert!(expiries.recall(&apple, now()).is_none());
        expiries.remember(&apple, b"{}", now(), now());
        expiries.forget_all();
        assert!(expiries.recall(&apple, now()).is_none());
        expiries.written(&apple, b"{}", now(), 60);
        let known = expiries.recall(&apple, now()).unwrap();
        assert_eq!(
            expiries.expiry(known, b"{}"),
            Some(now().add_millis(60_000))
        );
        expiries.touched(&apple, now(), 0);
        assert!(
            expiries.recall(&apple, now()).is_none(),
            "a TTL of zero deletes the key"
        );
    }
}
