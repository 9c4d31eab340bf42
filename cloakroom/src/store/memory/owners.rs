//! The memory store's owner index: for each owner, the ids of the sessions written with that
//! owner. Entries are hints: nothing removes an id when its session ends or changes hands;
//! `sessions_of` checks each against the record, and hints of sessions no longer live are
//! dropped when an owner's set doubles and by the sweep.
//!
//! A write of an owned session adds its hint and writes the record under this index's lock,
//! and a hint is dropped only after checking, under the same lock, that its session is not
//! that owner's: so a write can never slip in between the check and the drop and leave a live
//! session unfindable. The lock is always taken before a shard's, never after.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use foldhash::quality::RandomState;

/// The fewest hints an owner holds before a write checks them for dead ones.
const PRUNE_FLOOR: usize = 16;

pub(super) struct Owners {
    by_owner: Mutex<HashMap<Box<str>, Hints, RandomState>>,
}

#[derive(Default)]
struct Hints {
    ids: HashSet<Box<str>, RandomState>,
    /// How many hints to hold before the next check for dead ones: twice what the last check
    /// kept, so checking costs O(1) per write over time.
    prune_at: usize,
}

impl Owners {
    pub(super) fn new(hasher: &RandomState) -> Self {
        Owners {
            by_owner: Mutex::new(HashMap::with_hasher(hasher.clone())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, Hints, RandomState>> {
        // Every change is one map operation: a poisoned lock still guards a consistent map.
        self.by_owner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `id` may belong to `owner`, then runs `write` (the record's write) before
    /// letting go of the index. `is_live` says whether an id still has a live session; it is
    /// asked when the owner's hints have doubled since they were last checked.
    pub(super) fn add_then<T>(
        &self,
        owner: &str,
        id: &str,
        is_live: impl Fn(&str) -> bool,
        write: impl FnOnce() -> T,
    ) -> T {
        let mut by_owner = self.lock();
        let hints = by_owner.entry(owner.into()).or_default();
        if !hints.ids.contains(id) {
            hints.ids.insert(id.into());
            if hints.ids.len() >= hints.prune_at.max(PRUNE_FLOOR) {
                // The id being added is not live until `write` below.
                hints.ids.retain(|hint| **hint == *id || is_live(hint));
                hints.prune_at = hints.ids.len() * 2;
            }
        }
        write()
    }

    /// The ids that may belong to `owner`.
    pub(super) fn hints(&self, owner: &str) -> Vec<Box<str>> {
        self.lock()
            .get(owner)
            .map(|hints| hints.ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops hints that turned out not to be `owner`'s sessions, each only if `still_stale`
    /// says so again under the index's lock (no owned write can come between).
    pub(super) fn forget(
        &self,
        owner: &str,
        stale: &[Box<str>],
        still_stale: impl Fn(&str) -> bool,
    ) {
        if stale.is_empty() {
            return;
        }
        let mut by_owner = self.lock();
        if let Some(hints) = by_owner.get_mut(owner) {
            for id in stale {
                if still_stale(id) {
                    hints.ids.remove(id);
                }
            }
            if hints.ids.is_empty() {
                by_owner.remove(owner);
            }
        }
    }

    /// Drops every hint whose session is no longer live, and owners left with none.
    pub(super) fn sweep(&self, is_live: impl Fn(&str) -> bool) {
        let mut by_owner = self.lock();
        by_owner.retain(|_, hints| {
            hints.ids.retain(|id| is_live(id));
            hints.prune_at = hints.ids.len() * 2;
            !hints.ids.is_empty()
        });
    }

    pub(super) fn clear(&self) {
        self.lock().clear();
    }
}
