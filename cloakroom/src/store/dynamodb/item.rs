//! connect-dynamodb's item layout and expiry arithmetic: no I/O here.
//!
//! An item is `{ <hash key>: S "<prefix><sid>", expires: N, type: S "connect-session",
//! sess: S "<express's JSON>" }`, plus, from this store only, `owner: S` for an owned session.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::time::Timestamp;

/// connect-dynamodb's attribute names, fixed in its code.
pub(super) const EXPIRES: &str = "expires";
pub(super) const TYPE: &str = "type";
pub(super) const SESS: &str = "sess";
/// connect-dynamodb's `type` value.
pub(super) const SESSION_TYPE: &str = "connect-session";

/// DynamoDB's largest item: 400 KB, names and values included.
pub(super) const MAX_ITEM_SIZE: usize = 400 * 1024;
/// The most an `N` value takes in DynamoDB's item size arithmetic.
const MAX_NUMBER_SIZE: usize = 21;

/// An item as read: what `get` needs from it.
pub(super) enum Stored {
    /// No item, or one Node's `get` reads as absent: no `sess` string (a touch stub), or
    /// expired.
    Absent,
    /// A live session's stored JSON, and when it expires (`None`: an item without `expires`
    /// never does).
    Live {
        json: String,
        expires_at: Option<Timestamp>,
    },
}

/// Reads an item as connect-dynamodb's `get` does, at `now`.
pub(super) fn read(item: Option<HashMap<String, AttributeValue>>, now: Timestamp) -> Stored {
    let Some(mut item) = item else {
        return Stored::Absent;
    };
    let Some(AttributeValue::S(json)) = item.remove(SESS) else {
        return Stored::Absent;
    };
    let expires = match item.get(EXPIRES) {
        Some(AttributeValue::N(text)) => parse_seconds(text),
        // Node reads `+item.expires.N`: an attribute of another type is `NaN`, never expired.
        _ => None,
    };
    match expires {
        Some(seconds) if is_expired(seconds, now) => Stored::Absent,
        Some(seconds) => Stored::Live {
            json,
            expires_at: Some(death(seconds)),
        },
        None => Stored::Live {
            json,
            expires_at: None,
        },
    }
}

/// Node's rule: expired once `Math.floor(Date.now() / 1000) >= +expires`.
pub(super) fn is_expired(expires: f64, now: Timestamp) -> bool {
    whole_seconds(now) as f64 >= expires
}

/// The moment an item with `expires` stops being read: the first whole second not below it.
fn death(expires: f64) -> Timestamp {
    let seconds = expires.ceil();
    // Far past or future values saturate, as the float-to-int cast does.
    Timestamp::from_millis((seconds * 1000.0) as i64)
}

/// `expires` as a number of seconds, if it is one DynamoDB could have stored.
pub(super) fn parse_seconds(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite())
}

/// `Math.floor(now / 1000)`.
pub(super) fn whole_seconds(now: Timestamp) -> i64 {
    now.as_millis().div_euclid(1000)
}

/// connect-dynamodb's `expires`, in milliseconds: `floor(now / 1000)` seconds, plus the
/// cookie's remaining `maxAge` (its expiry minus `now`), or plus `default_ttl_ms` for a cookie
/// without one.
pub(super) fn expires_millis(
    cookie_expires: Option<Timestamp>,
    default_ttl_ms: i64,
    now: Timestamp,
) -> i64 {
    let base = whole_seconds(now).saturating_mul(1000);
    let remaining = match cookie_expires {
        Some(expires) => expires.millis_since(now),
        None => default_ttl_ms,
    };
    base.saturating_add(remaining)
}

/// Milliseconds as seconds in JavaScript's number text: `1700000059.993`, `1700000060`.
pub(super) fn seconds_text(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let magnitude = ms.unsigned_abs();
    let (whole, fraction) = (magnitude / 1000, magnitude % 1000);
    if fraction == 0 {
        return format!("{sign}{whole}");
    }
    let digits = format!("{fraction:03}");
    format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
}

/// Whether `expires_ms` (from [`expires_millis`]) is already over at `now` by Node's rule: such
/// a record is deleted rather than written.
pub(super) fn expires_already(expires_ms: i64, now: Timestamp) -> bool {
    whole_seconds(now).saturating_mul(1000) >= expires_ms
}

/// The item connect-dynamodb's `set` writes, with the owner attribute when there is one.
pub(super) fn session_item(
    hash_key: &str,
    key: String,
    expires_ms: i64,
    json: String,
    owner: Option<(&str, String)>,
) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::with_capacity(5);
    item.insert(hash_key.to_owned(), AttributeValue::S(key));
    item.insert(
        EXPIRES.to_owned(),
        AttributeValue::N(seconds_text(expires_ms)),
    );
    item.insert(TYPE.to_owned(), AttributeValue::S(SESSION_TYPE.to_owned()));
    item.insert(SESS.to_owned(), AttributeValue::S(json));
    if let Some((attribute, owner)) = owner {
        item.insert(attribute.to_owned(), AttributeValue::S(owner));
    }
    item
}

/// An upper bound of the size DynamoDB counts for [`session_item`]: each attribute's name
/// and value in UTF-8 bytes, a number counted at its largest.
pub(super) fn item_size(
    hash_key: &str,
    key: &str,
    json: &str,
    owner: Option<(&str, &str)>,
) -> usize {
    let mut size = hash_key.len() + key.len();
    size += EXPIRES.len() + MAX_NUMBER_SIZE;
    size += TYPE.len() + SESSION_TYPE.len();
    size += SESS.len() + json.len();
    if let Some((attribute, owner)) = owner {
        size += attribute.len() + owner.len();
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn item(pairs: &[(&str, AttributeValue)]) -> Option<HashMap<String, AttributeValue>> {
        Some(
            pairs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.clone()))
                .collect(),
        )
    }

    fn n(text: &str) -> AttributeValue {
        AttributeValue::N(text.to_owned())
    }

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_owned())
    }

    fn is_live(stored: &Stored) -> bool {
        matches!(stored, Stored::Live { .. })
    }

    #[test]
    fn expires_is_written_as_connect_dynamodb_writes_it() {
        let now = at(1_700_000_000_000);
        // Cookie maxAge 60000 at that moment.
        let ms = expires_millis(Some(now.add_millis(60_000)), 86_400_000, now);
        assert_eq!(seconds_text(ms), "1700000060");
        // No maxAge: a day.
        assert_eq!(
            seconds_text(expires_millis(None, 86_400_000, now)),
            "1700086400"
        );
        // maxAge is the time left, counted from the floored second.
        let later = at(1_700_000_000_007);
        let ms = expires_millis(Some(at(1_700_000_060_000)), 86_400_000, later);
        assert_eq!(seconds_text(ms), "1700000059.993");
        assert_eq!(seconds_text(1_700_000_059_990), "1700000059.99");
        assert_eq!(seconds_text(1_700_000_059_500), "1700000059.5");
        assert_eq!(seconds_text(-1_500), "-1.5");
        assert_eq!(seconds_text(0), "0");
    }

    #[test]
    fn expiry_is_read_as_connect_dynamodb_reads_it() {
        let now = at(1_700_000_000_123);
        let session = |expires: AttributeValue| {
            read(
                item(&[("id", s("sess:x")), ("sess", s("{}")), ("expires", expires)]),
                now,
            )
        };
        assert!(!is_live(&session(n("1700000000"))), "the floored second");
        assert!(is_live(&session(n("1700000000.5"))));
        assert!(is_live(&session(n("1700000059.993"))));
        assert!(!is_live(&session(n("1699999999.999"))));
        // Another type is NaN to Node: never expired.
        assert!(is_live(&session(s("1"))));
        // No expires: never expires.
        let forever = read(item(&[("id", s("sess:x")), ("sess", s("{}"))]), now);
        assert!(matches!(
            forever,
            Stored::Live {
                expires_at: None,
                ..
            }
        ));
        let Stored::Live {
            expires_at: Some(death),
            ..
        } = session(n("1700000000.5"))
        else {
            panic!("live")
        };
        assert_eq!(death, at(1_700_000_001_000));
    }

    #[test]
    fn stubs_and_other_shapes_read_as_absent() {
        let now = at(1_700_000_000_000);
        // What Node's touch of a destroyed session leaves.
        let stub = item(&[("id", s("sess:x")), ("expires", n("1800000000"))]);
        assert!(!is_live(&read(stub, now)));
        // `sess` as a map: Node's get gives null.
        let map = item(&[
            ("id", s("sess:x")),
            ("sess", AttributeValue::M(HashMap::new())),
        ]);
        assert!(!is_live(&read(map, now)));
        assert!(!is_live(&read(None, now)));
    }

    #[test]
    fn an_expiry_already_over_is_seen() {
        let now = at(1_700_000_000_500);
        assert!(expires_already(1_700_000_000_000, now));
        assert!(expires_already(1_699_999_999_999, now));
        assert!(!expires_already(1_700_000_000_001, now));
    }

    #[test]
    fn item_size_counts_names_and_values() {
        let item = session_item("id", "sess:abc".into(), 0, "{}".into(), None);
        assert_eq!(item.len(), 4);
        assert_eq!(
            item_size("id", "sess:abc", "{}", None),
            2 + 8 + 7 + 21 + 4 + 15 + 4 + 2
        );
        assert_eq!(
            item_size("id", "sess:abc", "{}", Some(("owner", "al"))),
            2 + 8 + 7 + 21 + 4 + 15 + 4 + 2 + 5 + 2
        );
    }
}
