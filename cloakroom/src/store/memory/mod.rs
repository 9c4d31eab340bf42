//! [`MemoryStore`]: sessions in this process's memory, bounded and expiring.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use foldhash::quality::RandomState;

use super::{
    Condition, DEFAULT_MAX_RECORD_SIZE, Error, Lease, Loaded, LockStore, OwnerIndex, OwnerPath,
    SessionStore, SetOutcome, Version, check_record_size, decode_record,
};
use crate::id::Id;
use crate::record::Record;
use crate::time::Timestamp;

mod owners;
mod queues;

use owners::Owners;
use queues::{Entry, Queues};

/// Shards of a store of up to [`ENTRIES_PER_SHARD`] × 16 sessions (the default 100,000 among
/// them); a larger store gets more, up to [`MAX_SHARDS`] (see [`shard_count`]).
const SHARDS: usize = 16;
/// The most shards of one store.
const MAX_SHARDS: usize = 256;
/// The sessions a shard of a large store holds at most, in round figures: a shard's map grows
/// by doubling, and the doubling holds the shard (and the thread that writes) while every entry
/// moves, so a smaller shard means a shorter pause. bench/run.sh's memory target (2,000,000
/// sessions, about 130,000 logins a second) had a `/login` p99 of 6 to 7 times the median with 16
/// shards, from those pauses, and 2.7 times with 256.
const ENTRIES_PER_SHARD: usize = 8192;
/// Parsed records kept per shard for sessions in use right now (see [`Shard::parsed`]).
const PARSED_SLOTS: usize = 128;
/// The largest JSON scratch buffer a thread keeps between writes (see [`Stored::new`]).
const SCRATCH_KEPT: usize = 64 * 1024;

/// Sessions in this process's memory: for one node, for tests, and for development.
///
/// Unlike express's MemoryStore it does not leak: every record expires (at its cookie's expiry,
/// or after [`with_default_ttl`](MemoryStoreBuilder::with_default_ttl) for browser-session
/// cookies), expired records are swept in the background, and the store holds at most
/// [`with_max_entries`](MemoryStoreBuilder::with_max_entries) sessions. Past that it evicts
/// first the sessions that were used only once (S3-FIFO), so a flood of new sessions, such as a
/// client opening one after another, cannot push out the sessions people keep using. Records
/// are kept as express's JSON, so they behave exactly as in a shared store.
///
/// Sessions are lost when the process exits and are not shared between processes: use the
/// SQLite, Redis or Postgres store for that. Compare-and-set is supported (a version counter).
///
/// Cloning is cheap and every clone is the same store.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    /// Hashes an id once per operation: the shard, the parsed slot and the shard's map all use
    /// that one hash (each its own bits). foldhash, randomly seeded, rather than SipHash: the
    /// ids are the store's own random ones or come from verified cookies, so nobody can pick
    /// colliding keys, and a session id is hashed on every request.
    hasher: RandomState,
    max_entries_per_shard: usize,
    max_record_size: usize,
    default_ttl: Duration,
    sweep_interval: Duration,
    sweeper: Once,
    owner_path: OwnerPath,
    owners: Owners,
}

struct Shard {
    /// The sessions, in their eviction queues. Their maps' hasher is [`Inner::hasher`], so a
    /// lookup can reuse the hash that picked the shard.
    queues: Queues,
    /// Never reused within a shard, so a destroyed-then-recreated record never matches a stale
    /// version.
    last_version: u64,
    /// Records of recently used sessions, already parsed, so a read of an active session skips
    /// the JSON. A slot is picked by the id's hash and holds the version it was parsed at; it is
    /// valid only while the entry still has that version (versions are unique in a shard). The
    /// table is fixed in size, so memory per stored session stays that of its JSON.
    parsed: ParsedTable,
    /// Session locks ([`LockStore`]) by id: only sessions locked right now, or whose holder
    /// went away without releasing (removed when next taken, or by the sweep).
    locks: HashMap<Box<str>, HeldLock, RandomState>,
}

/// A session lock: the holder's token, and when its lease runs out (ms since the epoch).
struct HeldLock {
    token: Box<str>,
    until: i64,
}

/// One session's id and its record's JSON in a single allocation, the id first: with the map's
/// node, a stored session costs two allocations. The map finds it by its id (`Borrow<str>`).
struct Stored {
    text: Box<str>,
    id_len: usize,
}

impl Stored {
    fn new(id: &str, record: &Record) -> Self {
        thread_local! {
            static JSON: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        // The JSON goes to a scratch buffer first so that the stored text is allocated at its
        // exact size: shrinking a bigger buffer would leave a small free hole beside every
        // session (about 30 B per small session).
        let text = JSON.with_borrow_mut(|scratch| {
            scratch.clear();
            record.write_json(scratch);
            let json = std::str::from_utf8(scratch).expect("serde_json writes UTF-8");
            let mut text = String::with_capacity(id.len() + json.len());
            text.push_str(id);
            text.push_str(json);
            // One huge record must not pin its size in every thread.
            if scratch.capacity() > SCRATCH_KEPT {
                *scratch = Vec::new();
            }
            text
        });
        Stored {
            text: text.into_boxed_str(),
            id_len: id.len(),
        }
    }

    fn id(&self) -> &str {
        &self.text[..self.id_len]
    }

    fn json(&self) -> &str {
        &self.text[self.id_len..]
    }
}

impl Borrow<str> for Stored {
    fn borrow(&self) -> &str {
        self.id()
    }
}

// As `str`'s, as `Borrow` requires.
impl Hash for Stored {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl PartialEq for Stored {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Stored {}

/// See [`Shard::parsed`].
struct ParsedTable(Box<[Option<Box<Parsed>>]>);

/// A record as parsed from an entry's JSON at `version`.
struct Parsed {
    version: u64,
    record: Record,
}

impl ParsedTable {
    fn new() -> Self {
        ParsedTable((0..PARSED_SLOTS).map(|_| None).collect())
    }

    /// The parsed record for `version` in `slot`, if cached.
    fn get(&self, slot: usize, version: u64) -> Option<Record> {
        match &self.0[slot] {
            Some(parsed) if parsed.version == version => Some(parsed.record.clone()),
            _ => None,
        }
    }

    fn put(&mut self, slot: usize, version: u64, record: Record) {
        match &mut self.0[slot] {
            Some(parsed) => **parsed = Parsed { version, record },
            empty => *empty = Some(Box::new(Parsed { version, record })),
        }
    }
}

impl Shard {
    fn new(hasher: RandomState) -> Self {
        Shard {
            queues: Queues::new(&hasher),
            last_version: 0,
            parsed: ParsedTable::new(),
            locks: HashMap::with_hasher(hasher),
        }
    }
}

/// Where an id lives: its hash (for the shard's map), its shard and its parsed slot, the latter
/// two from bits the map does not use for buckets or tags.
#[derive(Clone, Copy)]
struct Place {
    hash: u64,
    shard: usize,
    slot: usize,
}

impl Shard {
    fn live(&self, place: Place, id: &str, now: i64) -> Option<(&Stored, &Entry)> {
        self.queues
            .get(place.hash, id)
            .filter(|(_, entry)| entry.expires_at > now)
    }

    fn remove(&mut self, place: Place, id: &str) {
        self.queues.remove(place.hash, id);
    }

    fn next_version(&mut self) -> u64 {
        self.last_version += 1;
        self.last_version
    }

    fn sweep(&mut self, now: i64) -> usize {
        let before = self.queues.len();
        self.queues.retain(|entry| entry.expires_at > now);
        self.locks.retain(|_, lock| lock.until > now);
        before - self.queues.len()
    }

    /// Whether `lease` holds the lock on `id` now.
    fn holds(&self, id: &str, lease: &Lease, now: i64) -> bool {
        self.locks
            .get(id)
            .is_some_and(|lock| lock.until > now && *lock.token == *lease.token())
    }
}

/// Options for a [`MemoryStore`].
#[derive(Clone, Debug)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_entries: usize,
    max_record_size: usize,
    default_ttl: Duration,
    sweep_interval: Duration,
    owner_path: OwnerPath,
}

impl MemoryStoreBuilder {
    /// The most sessions kept (default 100,000). Past it, sessions that were used only once go
    /// first, then the least used of the others (S3-FIFO: see the store's docs). Enforced per
    /// shard (16 of them, or more for over 131,072 sessions, up to 256, so that no shard grows
    /// large), so eviction may start a little before the total is reached when ids hash
    /// unevenly.
    pub fn with_max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries.max(1);
        self
    }

    /// The largest record kept, in bytes of JSON (default
    /// [`DEFAULT_MAX_RECORD_SIZE`], 1 MiB). A bigger save fails
    /// with [`ErrorKind::TooLarge`](super::ErrorKind::TooLarge) and the stored session stays as
    /// it was.
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
    }

    /// How long a session whose cookie has no expiry lives after its last save or touch
    /// (default one day, as connect-redis).
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// How often expired sessions are swept (default one minute). The sweep runs on the tokio
    /// runtime of the first write and stops when the store is dropped.
    pub fn with_sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Where a session's owner is in its data, for [`OwnerIndex`] (default `passport.user`).
    pub fn with_owner_path(mut self, path: OwnerPath) -> Self {
        self.owner_path = path;
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let hasher = RandomState::default();
        let owners = Owners::new(&hasher);
        let shards = shard_count(self.max_entries);
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..shards)
                    .map(|_| Mutex::new(Shard::new(hasher.clone())))
                    .collect(),
                hasher,
                max_entries_per_shard: self.max_entries.div_ceil(shards),
                max_record_size: self.max_record_size,
                default_ttl: self.default_ttl,
                sweep_interval: self.sweep_interval,
                sweeper: Once::new(),
                owners,
                owner_path: self.owner_path,
            }),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store with the default limits (100,000 sessions, one-day default lifetime).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configures a store.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_entries: 100_000,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            default_ttl: Duration::from_secs(86_400),
            sweep_interval: Duration::from_secs(60),
            owner_path: OwnerPath::default(),
        }
    }

    /// Removes every expired record now, returning how many. The background sweep does this
    /// periodically.
    pub fn remove_expired(&self) -> usize {
        self.inner.remove_expired(Timestamp::now().as_millis())
    }

    fn place(&self, id: &Id) -> Place {
        self.inner.place(id.as_str())
    }

    /// The shard `place` is in, locked.
    fn lock(&self, place: Place) -> MutexGuard<'_, Shard> {
        self.inner.lock(place)
    }

    fn expires_at(&self, record: &Record, now: i64) -> i64 {
        record
            .cookie()
            .store_expiry(Timestamp::from_millis(now), self.inner.default_ttl)
            .as_millis()
    }

    /// `set`'s write: the compare-and-set on the record's shard.
    fn write(
        &self,
        id: &Id,
        record: &Record,
        stored: Stored,
        condition: Condition<'_>,
        now: i64,
    ) -> Result<SetOutcome, Error> {
        let expires_at = self.expires_at(record, now);
        let place = self.place(id);
        let mut shard = self.lock(place);
        if let Some(lease) = condition.lease()
            && !shard.holds(id.as_str(), lease, now)
        {
            return Ok(SetOutcome::LeaseLost);
        }
        let version = shard
            .live(place, id.as_str(), now)
            .map(|(_, entry)| entry.version());
        let holds = match condition.expected() {
            None => version.is_none(),
            Some(expected) => version.is_some() && version == expected.as_counter(),
        };
        if !holds {
            return Ok(SetOutcome::Conflict);
        }
        let version = shard.next_version();
        if expires_at <= now {
            // Already expired: delete instead of writing, as connect-redis does.
            shard.remove(place, id.as_str());
            return Ok(SetOutcome::Written(Version::from_counter(version)));
        }
        // The next read of a session being changed (the common case) needs no parse. A new
        // session is not cached: many are never read again (a login that goes nowhere, a
        // flood), and the clone would cost every one of them to save one parse on a first read.
        if condition.expected().is_some() {
            shard.parsed.put(place.slot, version, record.clone());
        }
        shard
            .queues
            .put(place.hash, stored, Entry::new(expires_at, version));
        shard.queues.evict_over(self.inner.max_entries_per_shard);
        Ok(SetOutcome::Written(Version::from_counter(version)))
    }

    fn start_sweeper(&self) {
        self.inner.sweeper.call_once(|| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let store = Arc::downgrade(&self.inner);
            let period = self.inner.sweep_interval;
            runtime.spawn(sweep_forever(store, period));
        });
    }
}

/// How many shards a store of at most `max_entries` sessions has: a power of two, so that a
/// shard's part of the cap stays within a rounding of `max_entries` (see [`ENTRIES_PER_SHARD`]).
fn shard_count(max_entries: usize) -> usize {
    max_entries
        .div_ceil(ENTRIES_PER_SHARD)
        .next_power_of_two()
        .clamp(SHARDS, MAX_SHARDS)
}

impl Inner {
    fn place(&self, id: &str) -> Place {
        let hash = self.hasher.hash_one(id);
        // The map takes bucket bits from the bottom and tag bits from the top; the shard and
        // slot come from the middle, so ids in one shard still spread over all its buckets.
        let middle = (hash >> 32) as usize;
        Place {
            hash,
            shard: middle % self.shards.len(),
            slot: (middle / self.shards.len()) % PARSED_SLOTS,
        }
    }

    /// The shard `place` is in, locked.
    fn lock(&self, place: Place) -> MutexGuard<'_, Shard> {
        // A panic while holding the lock cannot leave an entry half-written (each change is one
        // map operation), so a poisoned shard is still consistent.
        self.shards[place.shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The owner of `id`'s live session now, if it has one. Takes its shard's lock: never call
    /// it holding one.
    fn owner_now(&self, path: &OwnerPath, id: &str, now: i64) -> Option<String> {
        let place = self.place(id);
        let shard = self.lock(place);
        let (stored, _) = shard.live(place, id, now)?;
        let record = decode_record(stored.json()).ok()?;
        path.owner_of(record.data())
    }

    /// Whether `id` has a live session now. Takes its shard's lock: never call it holding one.
    fn is_live(&self, id: &str, now: i64) -> bool {
        let place = self.place(id);
        self.lock(place).live(place, id, now).is_some()
    }

    fn remove_expired(&self, now: i64) -> usize {
        let removed = self
            .shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .sweep(now)
            })
            .sum();
        self.owners.sweep(|id| self.is_live(id, now));
        removed
    }
}

async fn sweep_forever(store: Weak<Inner>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(store) = store.upgrade() else {
            return;
        };
        store.remove_expired(Timestamp::now().as_millis());
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, id: &Id) -> Result<Option<Loaded>, Error> {
        let now = Timestamp::now().as_millis();
        let place = self.place(id);
        let mut guard = self.lock(place);
        let Shard { queues, parsed, .. } = &mut *guard;
        let Some((stored, entry)) = queues.get_mut(place.hash, id.as_str()) else {
            return Ok(None);
        };
        let (expires_at, version) = (entry.expires_at, entry.version());
        if expires_at <= now {
            queues.remove(place.hash, id.as_str());
            return Ok(None);
        }
        entry.note_use();
        let record = match parsed.get(place.slot, version) {
            Some(record) => record,
            None => {
                let record = decode_record(stored.json())?;
                parsed.put(place.slot, version, record.clone());
                record
            }
        };
        Ok(Some(Loaded {
            record,
            version: Version::from_counter(version),
            expires_at: Some(Timestamp::from_millis(expires_at)),
        }))
    }

    async fn set(
        &self,
        id: &Id,
        record: &Record,
        condition: Condition<'_>,
    ) -> Result<SetOutcome, Error> {
        self.start_sweeper();
        let now = Timestamp::now().as_millis();
        let stored = Stored::new(id.as_str(), record);
        check_record_size(stored.json().len(), self.inner.max_record_size)?;
        let write = || self.write(id, record, stored, condition, now);
        match self.inner.owner_path.owner_of(record.data()) {
            // The owner's hint and the record together (see `owners`).
            Some(owner) => {
                let inner = &self.inner;
                inner
                    .owners
                    .add_then(&owner, id.as_str(), |id| inner.is_live(id, now), write)
            }
            None => write(),
        }
    }

    async fn destroy(&self, id: &Id) -> Result<(), Error> {
        let place = self.place(id);
        self.lock(place).remove(place, id.as_str());
        Ok(())
    }

    async fn touch(&self, id: &Id, record: &Record) -> Result<(), Error> {
        let now = Timestamp::now().as_millis();
        let expires_at = self.expires_at(record, now);
        let place = self.place(id);
        let mut shard = self.lock(place);
        if let Some((_, entry)) = shard.queues.get_mut(place.hash, id.as_str()) {
            if entry.expires_at > now && expires_at > now {
                entry.expires_at = expires_at;
                entry.note_use();
            } else {
                shard.queues.remove(place.hash, id.as_str());
            }
        }
        Ok(())
    }

    fn default_ttl(&self) -> Option<Duration> {
        Some(self.inner.default_ttl)
    }

    fn owner_path(&self) -> &OwnerPath {
        &self.inner.owner_path
    }

    async fn all(&self) -> Result<Vec<(Id, Record)>, Error> {
        let now = Timestamp::now().as_millis();
        let mut live = Vec::new();
        for shard in self.inner.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            live.extend(
                shard
                    .queues
                    .iter()
                    .filter(|(_, e)| e.expires_at > now)
                    .map(|(stored, _)| (Id::from_string(stored.id()), stored.json().to_owned())),
            );
        }
        live.into_iter()
            .map(|(id, json)| Ok((id, decode_record(&json)?)))
            .collect()
    }

    async fn len(&self) -> Result<usize, Error> {
        let now = Timestamp::now().as_millis();
        Ok(self
            .inner
            .shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                shard
                    .queues
                    .iter()
                    .filter(|(_, e)| e.expires_at > now)
                    .count()
            })
            .sum())
    }

    async fn clear(&self) -> Result<(), Error> {
        for shard in self.inner.shards.iter() {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .queues
                .clear();
        }
        self.inner.owners.clear();
        Ok(())
    }
}

#[async_trait]
impl OwnerIndex for MemoryStore {
    async fn sessions_of(&self, owner: &str) -> Result<Vec<(Id, Loaded)>, Error> {
        let mut found = Vec::new();
        let mut stale = Vec::new();
        for hint in self.inner.owners.hints(owner) {
            let id = Id::from_string(hint.to_string());
            match self.get(&id).await? {
                Some(loaded)
                    if self
                        .inner
                        .owner_path
                        .owner_of(loaded.record.data())
                        .as_deref()
                        == Some(owner) =>
                {
                    found.push((id, loaded));
                }
                _ => stale.push(hint),
            }
        }
        let now = Timestamp::now().as_millis();
        let path = &self.inner.owner_path;
        self.inner.owners.forget(owner, &stale, |id| {
            self.inner.owner_now(path, id, now).as_deref() != Some(owner)
        });
        Ok(found)
    }
}

#[async_trait]
impl LockStore for MemoryStore {
    async fn try_lock(&self, id: &Id, lease: &Lease) -> Result<bool, Error> {
        self.start_sweeper();
        let now = Timestamp::now().as_millis();
        let until = now.saturating_add(lease.duration_millis());
        let mut shard = self.lock(self.place(id));
        match shard.locks.get_mut(id.as_str()) {
            Some(held) if held.until > now => Ok(false),
            Some(expired) => {
                *expired = HeldLock {
                    token: lease.token().into(),
                    until,
                };
                Ok(true)
            }
            None => {
                shard.locks.insert(
                    id.as_str().into(),
                    HeldLock {
                        token: lease.token().into(),
                        until,
                    },
                );
                Ok(true)
            }
        }
    }

    async fn unlock(&self, id: &Id, lease: &Lease) -> Result<(), Error> {
        let mut shard = self.lock(self.place(id));
        if shard
            .locks
            .get(id.as_str())
            .is_some_and(|held| *held.token == *lease.token())
        {
            shard.locks.remove(id.as_str());
        }
        Ok(())
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field(
                "max_entries",
                &(self.inner.max_entries_per_shard * self.inner.shards.len()),
            )
            .field("default_ttl", &self.inner.default_ttl)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(views: u64, expires_in_ms: Option<i64>) -> Record {
        let mut record = Record::default();
        record.data_mut().insert("views".into(), json!(views));
        if let Some(ms) = expires_in_ms {
            record
                .cookie_mut()
                .set_max_age(Some(Duration::from_millis(ms.unsigned_abs())));
            if ms < 0 {
                record
                    .cookie_mut()
                    .set_expires(Some(Timestamp::now().add_millis(ms)));
            }
        }
        record
    }

    fn written(outcome: SetOutcome) -> Version {
        match outcome {
            SetOutcome::Written(version) => version,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    /// Writes `record` whatever is stored: over the current version, or as a new record.
    async fn put(store: &MemoryStore, id: &Id, record: &Record) -> Version {
        let current = store.get(id).await.unwrap().map(|loaded| loaded.version);
        let condition = match &current {
            Some(version) => Condition::version(version),
            None => Condition::absent(),
        };
        written(store.set(id, record, condition).await.unwrap())
    }

    #[tokio::test]
    async fn set_get_destroy() {
        let store = MemoryStore::new();
        let id = Id::generate();
        assert!(store.get(&id).await.unwrap().is_none());
        put(&store, &id, &record(1, None)).await;
        let loaded = store.get(&id).await.unwrap().unwrap();
        assert_eq!(loaded.record.data()["views"], json!(1));
        store.destroy(&id).await.unwrap();
        assert!(store.get(&id).await.unwrap().is_none());
        store.destroy(&id).await.unwrap();
    }

    #[tokio::test]
    async fn parsed_records_never_answer_for_another_session_or_version() {
        // Far more sessions than parsed slots: slots are shared, and every read must still
        // return its own session's latest data.
        let store = MemoryStore::new();
        let ids: Vec<Id> = (0..5000).map(|_| Id::generate()).collect();
        for (n, id) in ids.iter().enumerate() {
            put(&store, id, &record(n as u64, None)).await;
        }
        for round in 0..2u64 {
            for (n, id) in ids.iter().enumerate().rev() {
                let loaded = store.get(id).await.unwrap().unwrap();
                assert_eq!(
                    loaded.record.data()["views"],
                    json!(n as u64 + round * 10_000)
                );
            }
            for (n, id) in ids.iter().enumerate() {
                let next = record(n as u64 + (round + 1) * 10_000, None);
                put(&store, id, &next).await;
            }
        }
    }

    #[tokio::test]
    async fn a_rewrite_replaces_the_parsed_record() {
        let store = MemoryStore::new();
        let id = Id::generate();
        put(&store, &id, &record(1, None)).await;
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().record.data()["views"],
            json!(1)
        );
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().record.data()["views"],
            json!(1)
        );
        put(&store, &id, &record(2, None)).await;
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().record.data()["views"],
            json!(2)
        );
        store.destroy(&id).await.unwrap();
        put(&store, &id, &record(3, None)).await;
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().record.data()["views"],
            json!(3)
        );
    }

    #[tokio::test]
    async fn compare_and_set() {
        let store = MemoryStore::new();
        let id = Id::generate();
        let v1 = put(&store, &id, &record(1, None)).await;
        assert_eq!(
            store
                .set(&id, &record(9, None), Condition::absent())
                .await
                .unwrap(),
            SetOutcome::Conflict,
            "a new record never replaces a live one"
        );
        let v2 = written(
            store
                .set(&id, &record(2, None), Condition::version(&v1))
                .await
                .unwrap(),
        );
        assert_ne!(v1, v2);
        assert_eq!(
            store
                .set(&id, &record(3, None), Condition::version(&v1))
                .await
                .unwrap(),
            SetOutcome::Conflict
        );
        // Touch keeps the version.
        let before = store.get(&id).await.unwrap().unwrap().expires_at.unwrap();
        store.touch(&id, &record(9, Some(60_000))).await.unwrap();
        let loaded = store.get(&id).await.unwrap().unwrap();
        assert_eq!(loaded.version, v2);
        assert!(
            loaded.expires_at.unwrap() < before,
            "the day-long default became a minute"
        );
        assert_eq!(
            loaded.record.data()["views"],
            json!(2),
            "touch never writes data"
        );
        // A destroyed record is a conflict, never resurrected.
        store.destroy(&id).await.unwrap();
        assert_eq!(
            store
                .set(&id, &record(4, None), Condition::version(&v2))
                .await
                .unwrap(),
            SetOutcome::Conflict
        );
        assert!(store.get(&id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn expiry_on_read_touch_and_sweep() {
        let store = MemoryStore::new();
        let expired = Id::generate();
        put(&store, &expired, &record(1, Some(-1))).await;
        assert!(store.get(&expired).await.unwrap().is_none());

        let short = Id::generate();
        put(&store, &short, &record(1, Some(30))).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(store.get(&short).await.unwrap().is_none());
        // A touch on an expired record does not bring it back.
        store.touch(&short, &record(1, Some(60_000))).await.unwrap();
        assert!(store.get(&short).await.unwrap().is_none());

        let swept = Id::generate();
        put(&store, &swept, &record(1, Some(30))).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.remove_expired(), 1);
        assert_eq!(store.len().await.unwrap(), 0);
    }

    #[test]
    fn a_large_store_has_more_shards_and_the_default_one_sixteen() {
        assert_eq!(shard_count(1), SHARDS);
        assert_eq!(shard_count(100_000), SHARDS);
        assert_eq!(shard_count(131_072), SHARDS);
        assert_eq!(shard_count(131_073), 32);
        assert_eq!(shard_count(ENTRIES_PER_SHARD * 64), 64);
        assert_eq!(shard_count(2_000_000), MAX_SHARDS);
        assert_eq!(shard_count(usize::MAX), MAX_SHARDS);
        let large = MemoryStore::builder().with_max_entries(2_000_000).build();
        assert_eq!(large.inner.shards.len(), MAX_SHARDS);
    }

    #[tokio::test]
    async fn never_holds_more_than_its_room() {
        let store = MemoryStore::builder().with_max_entries(SHARDS).build();
        let ids: Vec<Id> = (0..SHARDS * 8).map(|_| Id::generate()).collect();
        for id in &ids {
            put(&store, id, &record(1, None)).await;
        }
        assert!(store.len().await.unwrap() <= SHARDS);
        // The most recent write survives.
        assert!(store.get(ids.last().unwrap()).await.unwrap().is_some());
    }

    /// The denial of service an LRU list allows: at the cap, a client that opens session after
    /// session (each used once) pushes out the sessions people keep using. Here the flood is
    /// ten times the store's room, and the regulars are used only every two rooms' worth of
    /// the flood, which an LRU list would not survive.
    #[tokio::test]
    async fn a_flood_of_one_time_sessions_leaves_the_sessions_in_use_alone() {
        const ROOM: usize = SHARDS * 100;
        let store = MemoryStore::builder().with_max_entries(ROOM).build();
        let regulars: Vec<Id> = (0..ROOM / 10).map(|_| Id::generate()).collect();
        // Each regular logs in, then comes back once (a read, as any request of theirs does).
        for id in &regulars {
            put(&store, id, &record(1, None)).await;
        }
        for id in &regulars {
            assert!(store.get(id).await.unwrap().is_some());
        }
        for flooded in 1..=ROOM * 10 {
            let one_time = Id::generate();
            written(
                store
                    .set(&one_time, &record(1, None), Condition::absent())
                    .await
                    .unwrap(),
            );
            if flooded % (ROOM * 2) == 0 {
                for id in &regulars {
                    assert!(
                        store.get(id).await.unwrap().is_some(),
                        "a regular session was evicted after {flooded} one-time sessions"
                    );
                }
            }
        }
        for id in &regulars {
            assert!(store.get(id).await.unwrap().is_some());
        }
        assert!(store.len().await.unwrap() <= ROOM);
    }

    #[tokio::test]
    async fn background_sweep_removes_expired_records() {
        let store = MemoryStore::builder()
            .with_sweep_interval(Duration::from_millis(20))
            .build();
        let id = Id::generate();
        put(&store, &id, &record(1, Some(10))).await;
        let shard_len = || {
            store
                .inner
                .shards
                .iter()
                .map(|s| s.lock().unwrap().queues.len())
                .sum::<usize>()
        };
        assert_eq!(shard_len(), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while shard_len() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(shard_len(), 0, "the sweeper removed the expired record");
    }
}
