//! What cloakroom keeps about a session beside the application's data: when it was created,
//! when it was last seen, the deadline no activity moves (the absolute timeout), and what the
//! application records for the session list. All of it lives in the session's own data, under
//! [`META_KEY`], so it is stored with the session on every store, in the same write, and an
//! Express app sharing the store keeps it as it keeps any other key.
//!
//! ```json
//! {"cookie": {…}, "passport": {"user": "alice"},
//!  "cloakroom": {"created": 1764633600000, "seen": 1764637200000,
//!                "deadline": 1764662400000, "info": {"device": "Firefox on Linux"}}}
//! ```
//!
//! Times are milliseconds since the epoch (JavaScript's `Date.now()`). Changes are made as
//! update steps ([`Patch`]), so they carry over onto a record another request saved meanwhile
//! like [`Session::update`](crate::Session::update)'s do, without overwriting its fields.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::changes::Step;
use crate::config::Timeouts;
use crate::time::{Timestamp, millis};

/// The data key of the metadata object.
pub(crate) const META_KEY: &str = "cloakroom";

/// How often `seen` is brought up to date at most, when no idle timeout asks for more.
const SEEN_EVERY: Duration = Duration::from_secs(60);

/// The session's lifetime, as read from its metadata; absent or malformed fields read as
/// `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Meta {
    pub(crate) created: Option<Timestamp>,
    pub(crate) seen: Option<Timestamp>,
    pub(crate) deadline: Option<Timestamp>,
}

impl Meta {
    pub(crate) fn read(data: &Map<String, Value>) -> Self {
        let Some(Value::Object(meta)) = data.get(META_KEY) else {
            return Meta::default();
        };
        // One pass over a handful of fields costs less than three hashed lookups.
        let mut read = Meta::default();
        for (field, value) in meta {
            let slot = match field.as_str() {
                "created" => &mut read.created,
                "seen" => &mut read.seen,
                "deadline" => &mut read.deadline,
                _ => continue,
            };
            *slot = value.as_i64().map(Timestamp::from_millis);
        }
        read
    }

    /// What the application recorded for the session list (`info`), empty if nothing.
    pub(crate) fn info(data: &Map<String, Value>) -> Map<String, Value> {
        match data.get(META_KEY).and_then(|meta| meta.get("info")) {
            Some(Value::Object(info)) => info.clone(),
            _ => Map::new(),
        }
    }

    /// Whether a session with this metadata has ended at `now`: past its deadline, or unseen
    /// for longer than `idle`.
    pub(crate) fn has_ended(&self, now: Timestamp, idle: Option<Duration>) -> bool {
        if self.deadline.is_some_and(|deadline| deadline <= now) {
            return true;
        }
        match (idle, self.seen.or(self.created)) {
            (Some(idle), Some(seen)) => now.millis_since(seen) >= millis(idle),
            _ => false,
        }
    }
}

/// How stale `seen` may get before a request brings it up to date: a quarter of the idle
/// timeout (so an active session is never taken for idle), else a minute or `touch_after`,
/// whichever is longer.
pub(crate) fn seen_every(timeouts: Timeouts, touch_after: Duration) -> Duration {
    let every = SEEN_EVERY.max(touch_after);
    match timeouts.idle {
        Some(idle) => every.min(idle / 4),
        None => every,
    }
}

/// Changes to the metadata object, as a value to store now and a step to replay on a newer one.
#[derive(Clone, Default)]
pub(crate) struct Patch {
    /// The fields, in the order they were given: each set whatever it held, or (`fill`) only
    /// where absent: the creation time and the deadline of a session that already has them
    /// stay.
    fields: Vec<(&'static str, Value, Rule)>,
}

/// How a [`Patch`] sets a field.
#[derive(Clone, Copy, PartialEq)]
enum Rule {
    Set,
    Fill,
}

impl Patch {
    /// A patch with room for `fields` fields, so a lifetime's start allocates once.
    fn with_capacity(fields: usize) -> Self {
        Patch {
            fields: Vec::with_capacity(fields),
        }
    }

    pub(crate) fn set(mut self, field: &'static str, value: Value) -> Self {
        self.fields.push((field, value, Rule::Set));
        self
    }

    pub(crate) fn fill(mut self, field: &'static str, value: Value) -> Self {
        self.fields.push((field, value, Rule::Fill));
        self
    }

    /// The metadata object `stored` (what the data holds under [`META_KEY`]) becomes.
    pub(crate) fn apply(&self, stored: Option<&Value>) -> Value {
        let mut meta = match stored {
            Some(Value::Object(meta)) => meta.clone(),
            _ => Map::with_capacity(self.fields.len()),
        };
        // Fills first, as they always were: a field both filled and set ends set.
        for (field, value, _) in self.fields.iter().filter(|(.., rule)| *rule == Rule::Fill) {
            if meta.get(*field).is_none_or(Value::is_null) {
                meta.insert((*field).to_owned(), value.clone());
            }
        }
        for (field, value, _) in self.fields.iter().filter(|(.., rule)| *rule == Rule::Set) {
            meta.insert((*field).to_owned(), value.clone());
        }
        Value::Object(meta)
    }

    pub(crate) fn into_step(self) -> Step {
        Arc::new(move |stored| Some(self.apply(stored)))
    }
}

/// The patch that starts a session's lifetime at `now` (or keeps the one it has, with
/// `restart` false): `created`, `seen`, and the deadline if there is an absolute timeout.
pub(crate) fn start(now: Timestamp, timeouts: Timeouts, restart: bool) -> Patch {
    let at = |time: Timestamp| Value::from(time.as_millis());
    let deadline = timeouts
        .absolute
        .map(|absolute| at(now.add_millis(millis(absolute))));
    // Room for `info` too, which `set_session_info` adds.
    let patch = Patch::with_capacity(4).set("seen", at(now));
    match (restart, deadline) {
        (true, Some(deadline)) => patch.set("created", at(now)).set("deadline", deadline),
        (true, None) => patch.set("created", at(now)),
        (false, Some(deadline)) => patch.fill("created", at(now)).fill("deadline", deadline),
        (false, None) => patch.fill("created", at(now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn metadata_reads_leniently() {
        let stored = data(json!({ "cloakroom": {
            "created": 1000, "seen": "soon", "deadline": 5000, "info": { "device": "x" } } }));
        let meta = Meta::read(&stored);
        assert_eq!(meta.created, Some(Timestamp::from_millis(1000)));
        assert_eq!(meta.seen, None);
        assert_eq!(meta.deadline, Some(Timestamp::from_millis(5000)));
        assert_eq!(Meta::info(&stored)["device"], "x");
        assert_eq!(
            Meta::read(&data(json!({ "cloakroom": 3 }))),
            Meta::default()
        );
    }

    #[test]
    fn ended_by_deadline_or_idleness() {
        let meta = Meta {
            created: Some(Timestamp::from_millis(0)),
            seen: Some(Timestamp::from_millis(10_000)),
            deadline: Some(Timestamp::from_millis(100_000)),
        };
        let idle = Some(Duration::from_secs(30));
        assert!(!meta.has_ended(Timestamp::from_millis(39_999), idle));
        assert!(meta.has_ended(Timestamp::from_millis(40_000), idle));
        assert!(!meta.has_ended(Timestamp::from_millis(99_999), None));
        assert!(meta.has_ended(Timestamp::from_millis(100_000), None));
    }

    #[test]
    fn a_start_keeps_an_existing_creation_and_deadline_unless_restarted() {
        let timeouts = Timeouts {
            idle: None,
            absolute: Some(Duration::from_secs(10)),
        };
        let stored = json!({ "created": 1, "deadline": 2, "info": { "a": 1 } });
        let kept = start(Timestamp::from_millis(5000), timeouts, false).apply(Some(&stored));
        assert_eq!(
            kept,
            json!({ "created": 1, "deadline": 2, "info": { "a": 1 }, "seen": 5000 })
        );
        let restarted = start(Timestamp::from_millis(5000), timeouts, true).apply(Some(&stored));
        assert_eq!(
            restarted,
            json!({ "created": 5000, "deadline": 15000, "info": { "a": 1 }, "seen": 5000 })
        );
        let fresh = start(Timestamp::from_millis(5000), timeouts, false).apply(None);
        assert_eq!(
            fresh,
            json!({ "seen": 5000, "created": 5000, "deadline": 15000 })
        );
    }

    #[test]
    fn seen_is_refreshed_often_enough_for_the_idle_timeout() {
        let none = Timeouts::default();
        assert_eq!(seen_every(none, Duration::ZERO), SEEN_EVERY);
        assert_eq!(
            seen_every(none, Duration::from_secs(300)),
            Duration::from_secs(300)
        );
        let idle = Timeouts {
            idle: Some(Duration::from_secs(120)),
            absolute: None,
        };
        assert_eq!(seen_every(idle, Duration::ZERO), Duration::from_secs(30));
    }
}
