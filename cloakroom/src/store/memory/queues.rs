//! Which sessions a full shard of the memory store lets go: S3-FIFO (Yang et al., "FIFO queues
//! are all you need for cache eviction", SOSP 2023), without its ghost queue.
//!
//! A new session enters a small queue, about a tenth of the shard's room. When the shard is
//! over its room and the small queue over its share, the small queue's oldest session leaves:
//! to the main queue if it was used again since it came in, out of the store if not. The main
//! queue also lets its oldest go, but gives each session one more round per use since its last
//! round (up to three). So a flood of sessions that are each used once (a client opening
//! session after session) only churns the small queue: it cannot push out the sessions people
//! keep coming back to, however long it lasts. An LRU list evicts any session that goes
//! unused while a shard's room of new sessions arrives.
//!
//! A use only bumps a counter in the entry; nothing moves on a hit, which costs less than an
//! LRU list's move to the back.
//!
//! The paper's ghost queue (ids lately evicted from the small queue, admitted straight to the
//! main one when they come back) is left out: an evicted session is gone, so its id does not
//! come back.

use std::hash::BuildHasher;

use foldhash::quality::RandomState;
use hashlink::LinkedHashMap;
use hashlink::linked_hash_map::{RawEntryMut, RawOccupiedEntryMut};

use super::Stored;

/// What the store keeps beside a session's id and JSON.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    /// Milliseconds since the epoch.
    pub(super) expires_at: i64,
    /// The version (a shard's counter, far below 2^62) in the low 62 bits, the uses since the
    /// entry's last round in the queue in the top two: one word, where a third field would
    /// add 8 bytes to every session.
    version_and_uses: u64,
}

const USE_SHIFT: u32 = 62;
const VERSION_MASK: u64 = (1 << USE_SHIFT) - 1;
/// The most uses an entry counts: the most extra rounds it can earn in the main queue.
const MAX_USES: u64 = 3;

impl Entry {
    pub(super) fn new(expires_at: i64, version: u64) -> Self {
        debug_assert!(version <= VERSION_MASK, "a shard never writes 2^62 times");
        Entry {
            expires_at,
            version_and_uses: version & VERSION_MASK,
        }
    }

    pub(super) fn version(self) -> u64 {
        self.version_and_uses & VERSION_MASK
    }

    fn uses(self) -> u64 {
        self.version_and_uses >> USE_SHIFT
    }

    /// Counts a use (a read, a write or a touch of the session).
    pub(super) fn note_use(&mut self) {
        if self.uses() < MAX_USES {
            self.version_and_uses += 1 << USE_SHIFT;
        }
    }

    fn set_uses(&mut self, uses: u64) {
        self.version_and_uses = self.version() | (uses << USE_SHIFT);
    }
}

/// One shard's sessions, in its two queues. Every lookup takes the id's hash from the store's
/// hasher, which both maps share.
pub(super) struct Queues {
    /// Sessions new to the shard, oldest first.
    small: Queue,
    /// Sessions that were used again while in the small queue, oldest round first.
    main: Queue,
}

impl Queues {
    pub(super) fn new(hasher: &RandomState) -> Self {
        Queues {
            small: LinkedHashMap::with_hasher(hasher.clone()),
            main: LinkedHashMap::with_hasher(hasher.clone()),
        }
    }

    pub(super) fn get(&self, hash: u64, id: &str) -> Option<(&Stored, &Entry)> {
        // Most lookups are of sessions in use, which live in the main queue.
        [&self.main, &self.small]
            .into_iter()
            .find_map(|queue| queue.raw_entry().from_key_hashed_nocheck(hash, id))
    }

    /// The stored session and its entry, to read or change in place.
    pub(super) fn get_mut(&mut self, hash: u64, id: &str) -> Option<(&Stored, &mut Entry)> {
        for queue in [&mut self.main, &mut self.small] {
            if let RawEntryMut::Occupied(found) =
                queue.raw_entry_mut().from_key_hashed_nocheck(hash, id)
            {
                let (stored, entry) = found.into_key_value();
                return Some((&*stored, entry));
            }
        }
        None
    }

    pub(super) fn remove(&mut self, hash: u64, id: &str) {
        for queue in [&mut self.main, &mut self.small] {
            if let RawEntryMut::Occupied(found) =
                queue.raw_entry_mut().from_key_hashed_nocheck(hash, id)
            {
                found.remove();
                return;
            }
        }
    }

    /// Stores a session: in place if the shard has it (a use), else as new, in the small queue.
    pub(super) fn put(&mut self, hash: u64, stored: Stored, entry: Entry) {
        if let RawEntryMut::Occupied(found) = self
            .main
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, stored.id())
        {
            return rewrite(found, stored, entry);
        }
        match self
            .small
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, stored.id())
        {
            RawEntryMut::Occupied(found) => rewrite(found, stored, entry),
            RawEntryMut::Vacant(vacant) => {
                vacant.insert_hashed_nocheck(hash, stored, entry);
            }
        }
    }

    /// Evicts sessions until at most `room` are left.
    pub(super) fn evict_over(&mut self, room: usize) {
        let small_room = (room / 10).max(1);
        while self.len() > room {
            if self.small.len() > small_room || self.main.is_empty() {
                let Some((stored, mut entry)) = self.small.pop_front() else {
                    return;
                };
                if entry.uses() > 0 {
                    // Used again while new: it earns its place in the main queue.
                    entry.set_uses(0);
                    let hash = hash_of(&self.main, &stored);
                    push_back(&mut self.main, hash, stored, entry);
                }
            } else {
                let Some((stored, mut entry)) = self.main.pop_front() else {
                    return;
                };
                if entry.uses() > 0 {
                    // Each use since its last round buys one more; uses are capped, so this
                    // loop ends within a few rounds of the queue.
                    entry.set_uses(entry.uses() - 1);
                    let hash = hash_of(&self.main, &stored);
                    push_back(&mut self.main, hash, stored, entry);
                }
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.small.len() + self.main.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Stored, &Entry)> {
        self.main.iter().chain(self.small.iter())
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        self.small.retain(|_, entry| keep(entry));
        self.main.retain(|_, entry| keep(entry));
    }

    pub(super) fn clear(&mut self) {
        self.small.clear();
        self.main.clear();
    }
}

type Queue = LinkedHashMap<Stored, Entry, RandomState>;

/// Replaces a stored session in place (it keeps its place in its queue), counting a use.
fn rewrite(
    mut found: RawOccupiedEntryMut<'_, Stored, Entry, RandomState>,
    stored: Stored,
    mut entry: Entry,
) {
    entry.set_uses(found.get().uses());
    entry.note_use();
    found.replace_key(stored);
    found.replace_value(entry);
}

fn hash_of(queue: &Queue, stored: &Stored) -> u64 {
    queue.hasher().hash_one(stored.id())
}

/// Adds a session the queue does not hold at its back, its hash already known.
fn push_back(queue: &mut Queue, hash: u64, stored: Stored, entry: Entry) {
    if let RawEntryMut::Vacant(vacant) = queue
        .raw_entry_mut()
        .from_key_hashed_nocheck(hash, stored.id())
    {
        vacant.insert_hashed_nocheck(hash, stored, entry);
    }
}
