//! What a request changed in its session's data, kept so that a save that lost a race with
//! another request can be carried over onto the newer record without losing either side.
//!
//! The rule, per key this request changed since its last write:
//! - changed with [`Session::update`](crate::Session::update): the update closures are
//!   re-applied, in order, to the newer stored value (so N concurrent updates make N
//!   applications);
//! - read (`get`, `get_value`, `remove`) and then set or removed outright: carried over if the
//!   newer record still holds the value this request read; if another request changed the key
//!   meanwhile, the save is a [`Conflict`]: the write was computed from a value that is no
//!   longer current, and overwriting would lose the other change;
//! - set or removed without being read (a blind write): carried over whatever the newer record
//!   holds, as if this request had run after the other;
//! - keys this request did not change take the newer record's values.
//!
//! Every outcome is one a serial order of the two requests could have given, except that a
//! request reading one key and writing another is not checked (write skew).

use std::sync::Arc;

use serde_json::{Map, Value};

/// One update closure, type-erased: the key's stored value in, its new value out, or `None` when
/// the closure refuses that value (it returned an error, or the value is not of its type).
pub(crate) type Step = Arc<dyn Fn(Option<&Value>) -> Option<Value> + Send + Sync>;

/// A key whose change cannot be carried over onto the newer record.
#[derive(Debug)]
pub(crate) struct Conflict {
    pub(crate) key: String,
}

/// The keys this request changed, in the order it first changed them.
#[derive(Default)]
pub(crate) struct ChangeSet {
    entries: Vec<Entry>,
    /// Keys the handler read: a plain write to one of them depends on what was read.
    reads: Vec<Box<str>>,
}

struct Entry {
    key: String,
    /// The value when the session was loaded or created: express's `isModified` compares with
    /// it.
    loaded: Option<Value>,
    /// The value the store held when this request last loaded or wrote it. A plain write of a
    /// key the handler read conflicts when the store no longer holds it.
    synced: Synced,
    pending: Pending,
}

/// How a key was changed since the last write.
enum Pending {
    /// Not since the last write.
    Clean,
    /// Set or removed outright.
    Written,
    /// Only through update closures: these, in order.
    Updated(Vec<Step>),
}

/// What the store held of a key at the last load or write.
enum Synced {
    /// What was loaded (no copy needed until the first write).
    AsLoaded,
    /// This (`None`: the key was absent).
    Value(Option<Value>),
}

impl Entry {
    fn synced(&self) -> Option<&Value> {
        match &self.synced {
            Synced::AsLoaded => self.loaded.as_ref(),
            Synced::Value(value) => value.as_ref(),
        }
    }
}

impl ChangeSet {
    fn entry(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|entry| entry.key == key)
    }

    /// Records that the handler read `key`.
    pub(crate) fn note_read(&mut self, key: &str) {
        if !self.reads.iter().any(|read| **read == *key) {
            self.reads.push(key.into());
        }
    }

    fn was_read(&self, key: &str) -> bool {
        self.reads.iter().any(|read| **read == *key)
    }

    /// Inserts `value` into `data` as a plain write.
    pub(crate) fn insert(&mut self, data: &mut Map<String, Value>, key: String, value: Value) {
        match self.entry(&key) {
            Some(entry) => {
                entry.pending = Pending::Written;
                data.insert(key, value);
            }
            None => {
                let before = data.insert(key.clone(), value);
                self.entries.push(Entry {
                    key,
                    loaded: before,
                    synced: Synced::AsLoaded,
                    pending: Pending::Written,
                });
            }
        }
    }

    /// Records a plain write of `key` (a removal), whose value before it was `before`.
    pub(crate) fn note_write(&mut self, key: &str, before: impl FnOnce() -> Option<Value>) {
        match self.entry(key) {
            Some(entry) => entry.pending = Pending::Written,
            None => self.entries.push(Entry {
                key: key.to_owned(),
                loaded: before(),
                synced: Synced::AsLoaded,
                pending: Pending::Written,
            }),
        }
    }

    /// Inserts `value`, the result of `step` applied to the key's current value, into `data`.
    pub(crate) fn update(
        &mut self,
        data: &mut Map<String, Value>,
        key: &str,
        value: Value,
        step: Step,
    ) {
        match self.entry(key) {
            Some(entry) => {
                match &mut entry.pending {
                    Pending::Clean => entry.pending = Pending::Updated(vec![step]),
                    Pending::Updated(steps) => steps.push(step),
                    // A plain write is re-checked, not replayed: the update on top of it
                    // stands or falls with it.
                    Pending::Written => {}
                }
                put(data, key, value);
            }
            None => {
                let before = put(data, key, value);
                self.entries.push(Entry {
                    key: key.to_owned(),
                    loaded: before,
                    synced: Synced::AsLoaded,
                    pending: Pending::Updated(vec![step]),
                });
            }
        }
    }

    /// Whether any changed key now holds something other than its value at load. This compares
    /// data, so setting a key back to what it was is no modification.
    pub(crate) fn is_modified(&self, data: &Map<String, Value>) -> bool {
        self.entries
            .iter()
            .any(|entry| data.get(&entry.key) != entry.loaded.as_ref())
    }

    /// Carries this request's changes since its last write (`data` is its view) onto `newer`, a
    /// record another request wrote meanwhile. On success `newer` holds the merge, and the
    /// change set counts `newer`'s values as what the store holds. On a conflict nothing
    /// changes here (`newer` may be half-merged: discard it).
    pub(crate) fn rebase(
        &mut self,
        data: &Map<String, Value>,
        newer: &mut Map<String, Value>,
    ) -> Result<(), Conflict> {
        let stored = self.merge(data, newer)?;
        for (entry, theirs) in self.entries.iter_mut().zip(stored) {
            entry.synced = Synced::Value(theirs);
        }
        Ok(())
    }

    /// [`rebase`](Self::rebase) onto a record that may not be what the store holds (the last
    /// write of this process, which another process may have overwritten since): only a
    /// successful write makes it so, and the write then resets the change set anyway.
    pub(crate) fn merge_onto(
        &self,
        data: &Map<String, Value>,
        newer: &mut Map<String, Value>,
    ) -> Result<(), Conflict> {
        self.merge(data, newer).map(drop)
    }

    /// Merges into `newer`; returns, per entry, the value `newer` had before.
    fn merge(
        &self,
        data: &Map<String, Value>,
        newer: &mut Map<String, Value>,
    ) -> Result<Vec<Option<Value>>, Conflict> {
        let mut stored = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            let theirs = newer.get(&entry.key).cloned();
            let merged = match &entry.pending {
                Pending::Clean => None,
                Pending::Written => {
                    let ours = data.get(&entry.key);
                    let base = entry.synced();
                    if ours == base {
                        // No net change of ours to carry.
                        None
                    } else if theirs.as_ref() == base || !self.was_read(&entry.key) {
                        Some(ours.cloned())
                    } else {
                        return Err(Conflict {
                            key: entry.key.clone(),
                        });
                    }
                }
                Pending::Updated(steps) => {
                    let mut value = theirs.clone();
                    for step in steps {
                        value = Some(step(value.as_ref()).ok_or_else(|| Conflict {
                            key: entry.key.clone(),
                        })?);
                    }
                    Some(value)
                }
            };
            if let Some(merged) = merged {
                match merged {
                    Some(value) => {
                        newer.insert(entry.key.clone(), value);
                    }
                    None => {
                        newer.shift_remove(&entry.key);
                    }
                }
            }
            stored.push(theirs);
        }
        Ok(stored)
    }

    /// The store now holds `data`: nothing is pending any more.
    pub(crate) fn written(&mut self, data: &Map<String, Value>) {
        for entry in &mut self.entries {
            entry.synced = Synced::Value(data.get(&entry.key).cloned());
            entry.pending = Pending::Clean;
        }
    }
}

/// Sets `key` in `data` to `value`, returning what it held; a key already there keeps its
/// place and is not copied (an update most often changes a key the session already has).
fn put(data: &mut Map<String, Value>, key: &str, value: Value) -> Option<Value> {
    match data.get_mut(key) {
        Some(slot) => Some(std::mem::replace(slot, value)),
        None => data.insert(key.to_owned(), value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test maps are objects"),
        }
    }

    fn add(n: u64) -> Step {
        Arc::new(move |old| Some(json!(old.and_then(Value::as_u64).unwrap_or(0) + n)))
    }

    #[test]
    fn updates_are_replayed_on_the_newer_value() {
        let mut data = map(json!({"n": 1}));
        let mut changes = ChangeSet::default();
        changes.update(&mut data, "n", json!(2), add(1));
        changes.update(&mut data, "n", json!(4), add(2));
        let mut newer = map(json!({"n": 10, "other": true}));
        changes.rebase(&data, &mut newer).unwrap();
        assert_eq!(newer, map(json!({"n": 13, "other": true})));
        // Again onto an even newer record: still only this request's two steps.
        let mut newest = map(json!({"n": 20}));
        changes.rebase(&newer, &mut newest).unwrap();
        assert_eq!(newest["n"], json!(23));
    }

    #[test]
    fn a_write_after_a_read_merges_unless_the_key_changed_meanwhile() {
        let mut data = map(json!({"a": 1, "b": 1}));
        let mut changes = ChangeSet::default();
        changes.note_read("a");
        changes.insert(&mut data, "a".into(), json!(2));
        // Another request changed only `b`: ours carries over.
        let mut newer = map(json!({"a": 1, "b": 5}));
        changes.rebase(&data, &mut newer).unwrap();
        assert_eq!(newer, map(json!({"a": 2, "b": 5})));
        // Another request changed `a` too, even to what we wrote (both incremented 1): a
        // conflict naming it.
        for theirs in [7, 2] {
            let mut newer = map(json!({"a": theirs, "b": 1}));
            assert_eq!(changes.rebase(&data, &mut newer).unwrap_err().key, "a");
        }
    }

    #[test]
    fn a_blind_write_wins() {
        let mut data = map(json!({"a": 1}));
        let mut changes = ChangeSet::default();
        changes.insert(&mut data, "a".into(), json!(2));
        let mut newer = map(json!({"a": 7}));
        changes.rebase(&data, &mut newer).unwrap();
        assert_eq!(newer["a"], json!(2));
    }

    #[test]
    fn a_removal_after_a_read_is_checked() {
        let mut data = map(json!({"a": 1}));
        let mut changes = ChangeSet::default();
        changes.note_read("a");
        let removed = data.shift_remove("a");
        changes.note_write("a", || removed.clone());
        let mut newer = map(json!({"a": 1, "b": 2}));
        changes.rebase(&data, &mut newer).unwrap();
        assert_eq!(newer, map(json!({"b": 2})));
        let mut changed = map(json!({"a": 3}));
        assert!(changes.rebase(&data, &mut changed).is_err());
    }

    #[test]
    fn nothing_is_replayed_twice_after_a_write() {
        let mut data = map(json!({}));
        let mut changes = ChangeSet::default();
        changes.update(&mut data, "n", json!(1), add(1));
        changes.written(&data);
        assert!(changes.is_modified(&data), "still modified since load");
        let mut newer = map(json!({"n": 5}));
        changes.rebase(&data, &mut newer).unwrap();
        assert_eq!(
            newer["n"],
            json!(5),
            "the written update is not applied again"
        );
    }

    #[test]
    fn a_refusing_step_is_a_conflict() {
        let mut data = map(json!({"n": 1}));
        let mut changes = ChangeSet::default();
        let refuse_big: Step = Arc::new(|old| {
            let n = old.and_then(Value::as_u64).unwrap_or(0);
            (n < 5).then(|| json!(n + 1))
        });
        changes.update(&mut data, "n", json!(2), refuse_big);
        let mut newer = map(json!({"n": 9}));
        assert_eq!(changes.rebase(&data, &mut newer).unwrap_err().key, "n");
    }

    #[test]
    fn a_write_after_an_update_is_checked_not_replayed() {
        let mut data = map(json!({"n": 1}));
        let mut changes = ChangeSet::default();
        changes.update(&mut data, "n", json!(2), add(1));
        changes.note_read("n");
        changes.insert(&mut data, "n".into(), json!(4));
        let mut newer = map(json!({"n": 2}));
        assert!(changes.rebase(&data, &mut newer).is_err());
    }
}
