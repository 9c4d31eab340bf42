//! Who a session belongs to: the [`OwnerPath`] in its data, and the [`OwnerIndex`] stores that
//! find every session of one owner.
//!
//! The owner is read from the session's own data, at a path such as `passport.user` (where
//! passport.js keeps the signed-in user), so a session written by an Express app sharing the
//! store has an owner too. A store's index is derived from that value; nothing else says who
//! owns a session.

use std::fmt;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{Error, Loaded, SessionStore};
use crate::id::Id;

/// Where a session's owner is in its data: a dotted path of object keys, `passport.user` by
/// default (where passport.js keeps the signed-in user, so sessions an Express app signs in
/// are owned too).
///
/// The value there owns the session if it is a non-empty string, or an integer (passport often
/// serializes a numeric user id), read as its decimal text. Anything else, or nothing, means
/// the session has no owner.
///
/// Each segment is 1 to 64 ASCII letters, digits, `_` or `-`, and a path has at most 8: stores
/// write the path into their index definitions (an SQL expression index, for example), so it is
/// kept to characters that need no quoting anywhere.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OwnerPath {
    segments: Box<[Box<str>]>,
}

/// Why a text is not an [`OwnerPath`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid owner path: {0}")]
pub struct InvalidOwnerPath(&'static str);

const MAX_SEGMENTS: usize = 8;
const MAX_SEGMENT_LEN: usize = 64;

impl OwnerPath {
    /// Parses a dotted path, such as `passport.user` or `account.id`.
    pub fn new(path: &str) -> Result<Self, InvalidOwnerPath> {
        let segments: Vec<Box<str>> = path.split('.').map(Box::from).collect();
        if segments.len() > MAX_SEGMENTS {
            return Err(InvalidOwnerPath("more than 8 segments"));
        }
        for segment in &segments {
            if segment.is_empty() || segment.len() > MAX_SEGMENT_LEN {
                return Err(InvalidOwnerPath("a segment is empty or over 64 bytes"));
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(InvalidOwnerPath(
                    "a segment has a character other than A-Z, a-z, 0-9, _ or -",
                ));
            }
        }
        Ok(OwnerPath {
            segments: segments.into_boxed_slice(),
        })
    }

    /// The path's segments, outermost first.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &str> {
        self.segments.iter().map(|segment| &**segment)
    }

    /// The top-level data key the path starts at.
    pub fn key(&self) -> &str {
        &self.segments[0]
    }

    /// The owner `data` names, if any (see the type's docs for what counts).
    pub fn owner_of(&self, data: &Map<String, Value>) -> Option<String> {
        let mut value = data.get(self.key())?;
        for segment in self.segments.iter().skip(1) {
            value = value.as_object()?.get(&**segment)?;
        }
        owner_text(value)
    }

    /// The value to store under [`key`](Self::key) so that the data names `owner`: `current`
    /// (what the key holds now) with the path's innermost field set, and the objects on the way
    /// created or kept. A value on the way that is not an object is replaced by one.
    pub(crate) fn with_owner(&self, current: Option<Value>, owner: &str) -> Value {
        let mut top = current.unwrap_or(Value::Null);
        let mut slot = &mut top;
        for segment in self.segments.iter().skip(1) {
            if !slot.is_object() {
                // It will hold the one field on the path.
                *slot = Value::Object(Map::with_capacity(1));
            }
            slot = slot
                .as_object_mut()
                .expect("made an object just above")
                .entry(segment.to_string())
                .or_insert(Value::Null);
        }
        *slot = Value::String(owner.to_owned());
        top
    }
}

/// A value's owner text: a non-empty string, or an integer's decimal digits.
fn owner_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) if number.is_i64() || number.is_u64() => Some(number.to_string()),
        _ => None,
    }
}

/// `passport.user`, for stores without an owner index (see [`SessionStore::owner_path`]).
pub(crate) static DEFAULT_OWNER_PATH: std::sync::LazyLock<OwnerPath> =
    std::sync::LazyLock::new(OwnerPath::default);

impl Default for OwnerPath {
    /// `passport.user`.
    fn default() -> Self {
        OwnerPath::new("passport.user").expect("a valid path")
    }
}

impl fmt::Display for OwnerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("."))
    }
}

impl fmt::Debug for OwnerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerPath({self})")
    }
}

impl std::str::FromStr for OwnerPath {
    type Err = InvalidOwnerPath;

    fn from_str(path: &str) -> Result<Self, Self::Err> {
        OwnerPath::new(path)
    }
}

/// A store that finds every live session of one owner: the capability behind
/// [`SessionRegistry`](crate::SessionRegistry) ("where am I signed in", "sign out everywhere
/// else", a cap on sessions per user).
///
/// # Contract
/// - [`sessions_of`](Self::sessions_of) is exact: every session it returns is live and names
///   `owner` at the store's [`owner_path`](SessionStore::owner_path) as it returns, with the version and expiry a
///   [`get`](SessionStore::get) would give.
/// - A session is findable from the moment the `set` that named its owner returns, and no
///   longer once it is destroyed, has expired, or a `set` named another owner or none. A store
///   may keep index entries that point at such sessions (hints, filtered out on reading) but
///   must drop them eventually: its index never grows past the live sessions by more than
///   those that ended since it last cleaned up.
/// - Index upkeep never makes a `set`, `touch` or `destroy` of a session without an owner cost
///   more than it did.
///
/// The conformance suite in `cloakroom-testkit` (`owner_index_suite!`) checks all of it.
#[async_trait]
pub trait OwnerIndex: SessionStore {
    /// Every live session `owner` has, as loaded, in no particular order.
    async fn sessions_of(&self, owner: &str) -> Result<Vec<(Id, Loaded)>, Error>;
}

#[async_trait]
impl<S: OwnerIndex + ?Sized> OwnerIndex for std::sync::Arc<S> {
    async fn sessions_of(&self, owner: &str) -> Result<Vec<(Id, Loaded)>, Error> {
        (**self).sessions_of(owner).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(value: Value) -> Map<String, Value> {
        value.as_object().expect("an object").clone()
    }

    #[test]
    fn paths_are_checked() {
        assert!(OwnerPath::new("passport.user").is_ok());
        assert!(OwnerPath::new("user_id").is_ok());
        for bad in [
            "",
            ".",
            "a..b",
            "a.",
            "a b",
            "a'b",
            "a.b.c.d.e.f.g.h.i",
            "ü",
        ] {
            assert!(OwnerPath::new(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(OwnerPath::new(&"x".repeat(65)).is_err());
    }

    #[test]
    fn strings_and_integers_own_other_values_do_not() {
        let path = OwnerPath::default();
        let owner = |value| path.owner_of(&data(json!({ "passport": { "user": value } })));
        assert_eq!(owner(json!("alice")), Some("alice".into()));
        assert_eq!(owner(json!(42)), Some("42".into()));
        assert_eq!(owner(json!(-7)), Some("-7".into()));
        assert_eq!(owner(json!("")), None);
        assert_eq!(owner(json!(4.5)), None);
        assert_eq!(owner(json!(null)), None);
        assert_eq!(owner(json!({ "id": 1 })), None);
        assert_eq!(path.owner_of(&data(json!({ "passport": "alice" }))), None);
        assert_eq!(path.owner_of(&data(json!({}))), None);
    }

    #[test]
    fn writing_keeps_what_else_is_there() {
        let path = OwnerPath::default();
        let written = path.with_owner(Some(json!({ "user": "old", "other": 1 })), "bob");
        assert_eq!(written, json!({ "user": "bob", "other": 1 }));
        assert_eq!(path.with_owner(None, "bob"), json!({ "user": "bob" }));
        assert_eq!(
            path.with_owner(Some(json!(3)), "bob"),
            json!({ "user": "bob" })
        );
        let deep = OwnerPath::new("a.b.c").unwrap();
        assert_eq!(deep.with_owner(None, "x"), json!({ "b": { "c": "x" } }));
        assert_eq!(
            OwnerPath::new("owner").unwrap().with_owner(None, "x"),
            json!("x")
        );
    }
}
