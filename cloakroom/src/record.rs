//! What a store persists: express-session's JSON, `cookie` first (its fields in express's
//! order), then the session data in insertion order.
//!
//! ```json
//! {"cookie":{"originalMaxAge":60000,"expires":"2026-11-22T09:36:51.973Z","httpOnly":true,"path":"/"},"views":1}
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// How deeply a session value may nest, arrays and objects inside one another, counting the
/// value itself: checked by [`Session::insert`](crate::Session::insert) and its kin, which
/// refuse a deeper value with [`Error::TooDeep`](crate::Error::TooDeep) and change nothing.
///
/// Why a limit: every store reads a record back through a JSON parser that stops at some depth
/// (serde_json at 128 levels, which counts the record's own object too), so a deeper value would
/// save and then never load again. 64 leaves room for the record's levels and for the parsers of
/// other programs sharing the store. The same limit holds on every store.
pub const MAX_VALUE_DEPTH: usize = 64;

/// Whether `value` nests deeper than `limit` levels (a scalar is one level; `[[1]]` three). Walks
/// the value without recursion, so no value, however deep, can overflow the stack here.
pub(crate) fn nests_deeper_than(value: &Value, limit: usize) -> bool {
    if !matches!(value, Value::Array(_) | Value::Object(_)) {
        // The common case, a scalar, without setting up the walk.
        return limit < 1;
    }
    let mut pending = vec![(value, 1)];
    while let Some((value, depth)) = pending.pop() {
        if depth > limit {
            return true;
        }
        match value {
            Value::Array(items) => pending.extend(items.iter().map(|item| (item, depth + 1))),
            Value::Object(map) => pending.extend(map.values().map(|item| (item, depth + 1))),
            _ => {}
        }
    }
    false
}

/// One session as a store keeps it: its cookie settings and its data.
///
/// Cloning is cheap: the data is shared until one of the clones changes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    cookie: SessionCookie,
    data: Arc<Map<String, Value>>,
}

impl Record {
    /// A record of `cookie` and `data`. A top-level `cookie` key in `data` is never written: the
    /// cookie settings take that place in the JSON.
    pub fn new(cookie: SessionCookie, data: Map<String, Value>) -> Self {
        Record {
            cookie,
            data: Arc::new(data),
        }
    }

    /// The session's own cookie settings, persisted so they stick on later requests.
    pub fn cookie(&self) -> &SessionCookie {
        &self.cookie
    }

    /// The cookie settings, to change.
    pub fn cookie_mut(&mut self) -> &mut SessionCookie {
        &mut self.cookie
    }

    /// The session data, in insertion order.
    pub fn data(&self) -> &Map<String, Value> {
        &self.data
    }

    /// The data, to change (copied first if another clone shares it).
    pub fn data_mut(&mut self) -> &mut Map<String, Value> {
        Arc::make_mut(&mut self.data)
    }

    /// Replaces the data.
    pub(crate) fn set_data(&mut self, data: Map<String, Value>) {
        self.data = Arc::new(data);
    }

    /// The data, owned (copied only if another clone shares it).
    pub(crate) fn into_data(self) -> Map<String, Value> {
        Arc::unwrap_or_clone(self.data)
    }

    /// Takes the data out, leaving it empty.
    pub(crate) fn take_data(&mut self) -> Map<String, Value> {
        std::mem::take(self.data_mut())
    }

    /// The record as express-session writes it (`JSON.stringify(session)`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record always serializes: its keys are strings")
    }

    /// Appends [`to_json`](Self::to_json)'s text to `out`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("a record always serializes: its keys are strings");
    }

    /// Reads a record written by express-session or by [`to_json`](Self::to_json).
    ///
    /// # Errors
    /// [`DecodeError`] when the text is not a JSON object, lacks an object under `cookie`, or has
    /// a `cookie.expires` that is not an ISO-8601 date. The error says what is wrong and where,
    /// and never quotes the text (it is session data, and errors get logged).
    pub fn from_json(json: &str) -> Result<Self, DecodeError> {
        serde_json::from_str(json).map_err(DecodeError::from)
    }
}

/// Why a text is not an express-session record: what is wrong and where, without quoting any of
/// it (the parser's own message can quote the text, which is session data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    category: serde_json::error::Category,
    line: usize,
    column: usize,
}

impl From<serde_json::Error> for DecodeError {
    fn from(error: serde_json::Error) -> Self {
        DecodeError {
            category: error.classify(),
            line: error.line(),
            column: error.column(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problem = match self.category {
            serde_json::error::Category::Io => "an I/O error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "JSON that is not an express-session record",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        write!(
            f,
            "stored session is {problem} (line {}, column {})",
            self.line, self.column
        )
    }
}

impl std::error::Error for DecodeError {}

/// `SameSite` as persisted with a session (`auto` is resolved when the session is created).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SameSite {
    /// `SameSite=Strict` (express: `true` or `"strict"`).
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None`; browsers require `Secure` with it.
    None,
}

/// The `Priority` cookie attribute (a Chrome extension express supports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Priority {
    /// `Priority=Low`.
    Low,
    /// `Priority=Medium`.
    Medium,
    /// `Priority=High`.
    High,
}

/// A session's cookie settings: express-session's `req.session.cookie`.
///
/// They are stored with the session, so a change (a longer lifetime for "remember me", say)
/// applies to every later response for that session, and changing the layer's configuration
/// does not alter sessions that already exist (as in express).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionCookie {
    // Milliseconds; signed because records written by express can hold a negative value.
    original_max_age: Option<i64>,
    partitioned: Option<bool>,
    priority: Option<Priority>,
    expires: Option<Timestamp>,
    secure: Option<bool>,
    http_only: bool,
    domain: Option<String>,
    /// Borrowed for the default `/`, so most sessions' cookies allocate nothing.
    path: Cow<'static, str>,
    same_site: Option<SameSite>,
}

impl Default for SessionCookie {
    /// express's `new Cookie()`: path `/`, `HttpOnly`, no expiry (a browser-session cookie).
    fn default() -> Self {
        SessionCookie {
            original_max_age: None,
            partitioned: None,
            priority: None,
            expires: None,
            secure: None,
            http_only: true,
            domain: None,
            path: Cow::Borrowed("/"),
            same_site: None,
        }
    }
}

impl SessionCookie {
    /// When the cookie (and the session) expires; `None` for a browser-session cookie.
    pub fn expires(&self) -> Option<Timestamp> {
        self.expires
    }

    /// The lifetime each refresh grants (express's `originalMaxAge`); `None` for a
    /// browser-session cookie or a fixed expiry date that is not renewed.
    pub fn original_max_age(&self) -> Option<Duration> {
        self.original_max_age
            .map(|ms| Duration::from_millis(ms.max(0).unsigned_abs()))
    }

    /// When a store drops a record with this cookie, written or touched at `now`: at the
    /// cookie's expiry, or `default_ttl` after `now` for a browser-session cookie (the store's
    /// own default lifetime). For stores.
    pub fn store_expiry(&self, now: Timestamp, default_ttl: Duration) -> Timestamp {
        self.expires
            .unwrap_or_else(|| now.add_millis(crate::time::millis(default_ttl)))
    }

    /// Time left before expiry (express's `cookie.maxAge` getter); zero once expired.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age_at(Timestamp::now())
    }

    pub(crate) fn max_age_at(&self, now: Timestamp) -> Option<Duration> {
        self.expires
            .map(|at| Duration::from_millis(at.millis_since(now).max(0).unsigned_abs()))
    }

    /// Sets the lifetime from now, and the lifetime later refreshes grant (express's
    /// `cookie.maxAge = ms`). `None` makes it a browser-session cookie.
    pub fn set_max_age(&mut self, max_age: Option<Duration>) {
        self.set_max_age_at(max_age, Timestamp::now());
    }

    pub(crate) fn set_max_age_at(&mut self, max_age: Option<Duration>, now: Timestamp) {
        let ms = max_age.map(crate::time::millis);
        self.original_max_age = ms;
        self.expires = ms.map(|ms| now.add_millis(ms));
    }

    /// Sets a fixed expiry (express's `cookie.expires = date`); the time left becomes the
    /// lifetime later refreshes grant.
    pub fn set_expires(&mut self, expires: Option<Timestamp>) {
        let now = Timestamp::now();
        self.expires = expires;
        self.original_max_age = expires.map(|at| at.millis_since(now));
    }

    /// Moves the expiry to `now + original_max_age` (express's `session.touch()`).
    pub(crate) fn touch_at(&mut self, now: Timestamp) {
        if let Some(ms) = self.original_max_age {
            self.expires = Some(now.add_millis(ms));
        }
    }

    /// Whether the cookie carries `HttpOnly` (default true).
    pub fn http_only(&self) -> bool {
        self.http_only
    }

    /// Sets `HttpOnly`.
    ///
    /// # Security
    /// Without it, page scripts (and so any XSS) can read the session cookie.
    pub fn set_http_only(&mut self, http_only: bool) {
        self.http_only = http_only;
    }

    /// `Some(true)` when the cookie is `Secure` (and is then only sent over HTTPS).
    pub fn secure(&self) -> Option<bool> {
        self.secure
    }

    /// Sets `Secure`. A secure cookie is not sent on a plain-HTTP request, though the session is
    /// still saved (as in express).
    pub fn set_secure(&mut self, secure: Option<bool>) {
        self.secure = secure;
    }

    /// The `SameSite` attribute.
    pub fn same_site(&self) -> Option<SameSite> {
        self.same_site
    }

    /// Sets `SameSite`.
    pub fn set_same_site(&mut self, same_site: Option<SameSite>) {
        self.same_site = same_site;
    }

    /// `Some(true)` when the cookie is `Partitioned` (CHIPS).
    pub fn partitioned(&self) -> Option<bool> {
        self.partitioned
    }

    /// Sets `Partitioned`.
    pub fn set_partitioned(&mut self, partitioned: Option<bool>) {
        self.partitioned = partitioned;
    }

    /// The `Priority` attribute.
    pub fn priority(&self) -> Option<Priority> {
        self.priority
    }

    /// Sets `Priority`.
    pub fn set_priority(&mut self, priority: Option<Priority>) {
        self.priority = priority;
    }

    /// The `Domain` attribute.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// Sets `Domain`. An invalid domain means no cookie is sent (logged), as express fails to
    /// serialize it.
    pub fn set_domain(&mut self, domain: Option<String>) {
        self.domain = domain;
    }

    /// The `Path` attribute (default `/`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Sets `Path`.
    pub fn set_path(&mut self, path: impl Into<String>) {
        self.path = shared_path(&path.into());
    }
}

/// A path, borrowed when it is the default `/`.
fn shared_path(path: &str) -> Cow<'static, str> {
    if path == "/" {
        Cow::Borrowed("/")
    } else {
        Cow::Owned(path.to_owned())
    }
}

impl Serialize for SessionCookie {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // express's `Cookie.prototype.data` order; unset optional fields are left out, as
        // `JSON.stringify` drops `undefined`.
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("originalMaxAge", &self.original_max_age)?;
        if let Some(partitioned) = self.partitioned {
            map.serialize_entry("partitioned", &partitioned)?;
        }
        if let Some(priority) = self.priority {
            map.serialize_entry(
                "priority",
                match priority {
                    Priority::Low => "low",
                    Priority::Medium => "medium",
                    Priority::High => "high",
                },
            )?;
        }
        map.serialize_entry("expires", &self.expires.map(Timestamp::to_iso8601))?;
        if let Some(secure) = self.secure {
            map.serialize_entry("secure", &secure)?;
        }
        map.serialize_entry("httpOnly", &self.http_only)?;
        if let Some(domain) = &self.domain {
            map.serialize_entry("domain", domain)?;
        }
        map.serialize_entry("path", &self.path)?;
        if let Some(same_site) = self.same_site {
            map.serialize_entry(
                "sameSite",
                match same_site {
                    SameSite::Strict => "strict",
                    SameSite::Lax => "lax",
                    SameSite::None => "none",
                },
            )?;
        }
        map.end()
    }
}

/// The keys of express's cookie object; anything else is skipped.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum CookieField {
    OriginalMaxAge,
    Partitioned,
    Priority,
    Expires,
    Secure,
    HttpOnly,
    Domain,
    Path,
    SameSite,
    #[serde(other)]
    Other,
}

/// One cookie field as express may have written it: express stores whatever the app assigned,
/// so each field is read loosely (JavaScript truthiness for flags) without building a
/// `serde_json::Value`.
enum Loose<'de> {
    Null,
    Bool(bool),
    Number(f64),
    Text(std::borrow::Cow<'de, str>),
    /// An array or object: truthy, otherwise meaningless here.
    Composite,
}

impl Loose<'_> {
    fn truthy(&self) -> bool {
        match self {
            Loose::Null => false,
            Loose::Bool(b) => *b,
            Loose::Number(n) => *n != 0.0 && !n.is_nan(),
            Loose::Text(text) => !text.is_empty(),
            Loose::Composite => true,
        }
    }

    /// `null` reads as unset; anything else by its truthiness.
    fn flag(&self) -> Option<bool> {
        (!matches!(self, Loose::Null)).then(|| self.truthy())
    }

    fn lowercase(&self) -> Option<String> {
        match self {
            Loose::Text(text) => Some(text.to_ascii_lowercase()),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Loose<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LooseVisitor;

        impl<'de> Visitor<'de> for LooseVisitor {
            type Value = Loose<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Loose<'de>, E> {
                Ok(Loose::Null)
            }
            fn visit_none<E>(self) -> Result<Loose<'de>, E> {
                Ok(Loose::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Loose<'de>, E> {
                Ok(Loose::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Loose<'de>, E> {
                Ok(Loose::Number(n as f64))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Loose<'de>, E> {
                Ok(Loose::Number(n as f64))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Loose<'de>, E> {
                Ok(Loose::Number(n))
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Loose<'de>, E> {
                Ok(Loose::Text(text.into()))
            }
            fn visit_str<E>(self, text: &str) -> Result<Loose<'de>, E> {
                Ok(Loose::Text(text.to_owned().into()))
            }
            fn visit_string<E>(self, text: String) -> Result<Loose<'de>, E> {
                Ok(Loose::Text(text.into()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<'de>, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Loose::Composite)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<'de>, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Loose::Composite)
            }
        }

        deserializer.deserialize_any(LooseVisitor)
    }
}

impl<'de> Deserialize<'de> for SessionCookie {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CookieVisitor;

        impl<'de> Visitor<'de> for CookieVisitor {
            type Value = SessionCookie;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a cookie object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SessionCookie, A::Error> {
                // Fields express never wrote keep `SessionCookie::default()`'s values, as
                // express's `new Cookie(stored)` does.
                let mut cookie = SessionCookie::default();
                while let Some(field) = map.next_key::<CookieField>()? {
                    let value: Loose<'de> = map.next_value()?;
                    match field {
                        CookieField::OriginalMaxAge => {
                            cookie.original_max_age = match value {
                                Loose::Number(ms) if ms.is_finite() => Some(ms.round() as i64),
                                _ => None,
                            };
                        }
                        CookieField::Expires => {
                            cookie.expires = match value {
                                Loose::Null | Loose::Bool(false) => None,
                                Loose::Text(text) => {
                                    Some(Timestamp::parse_iso8601(&text).ok_or_else(|| {
                                        de::Error::custom("cookie.expires is not an ISO-8601 date")
                                    })?)
                                }
                                Loose::Number(ms) => Some(Timestamp::from_millis(ms as i64)),
                                _ => return Err(de::Error::custom("cookie.expires is not a date")),
                            };
                        }
                        CookieField::Partitioned => cookie.partitioned = value.flag(),
                        CookieField::Secure => cookie.secure = value.flag(),
                        CookieField::HttpOnly => cookie.http_only = value.flag().unwrap_or(true),
                        CookieField::Domain => {
                            cookie.domain = match value {
                                Loose::Text(domain) => Some(domain.into_owned()),
                                _ => None,
                            };
                        }
                        CookieField::Path => {
                            if let Loose::Text(path) = value {
                                cookie.path = shared_path(&path);
                            }
                        }
                        CookieField::Priority => {
                            cookie.priority = match value.lowercase().as_deref() {
                                Some("low") => Some(Priority::Low),
                                Some("medium") => Some(Priority::Medium),
                                Some("high") => Some(Priority::High),
                                _ => None,
                            };
                        }
                        CookieField::SameSite => {
                            cookie.same_site = match value {
                                Loose::Bool(true) => Some(SameSite::Strict),
                                _ => match value.lowercase().as_deref() {
                                    Some("strict") => Some(SameSite::Strict),
                                    Some("lax") => Some(SameSite::Lax),
                                    Some("none") => Some(SameSite::None),
                                    _ => None,
                                },
                            };
                        }
                        CookieField::Other => {}
                    }
                }
                Ok(cookie)
            }
        }

        deserializer.deserialize_map(CookieVisitor)
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1 + self.data.len()))?;
        map.serialize_entry("cookie", &self.cookie)?;
        for (key, value) in self.data.iter() {
            if key != "cookie" {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RecordVisitor;

        impl<'de> Visitor<'de> for RecordVisitor {
            type Value = Record;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a session object with a `cookie` object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
                let mut cookie = None;
                let mut data = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "cookie" {
                        cookie = Some(map.next_value::<SessionCookie>()?);
                    } else {
                        // A repeated key keeps its first position and its last value, as
                        // `JSON.parse` does.
                        data.insert(key, map.next_value()?);
                    }
                }
                let cookie = cookie.ok_or_else(|| de::Error::missing_field("cookie"))?;
                Ok(Record::new(cookie, data))
            }
        }

        deserializer.deserialize_map(RecordVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_every_array_and_object() {
        assert!(!nests_deeper_than(&json!(1), 1));
        assert!(nests_deeper_than(&json!("a"), 0));
        assert!(nests_deeper_than(&json!([1]), 1));
        assert!(!nests_deeper_than(&json!([[1]]), 3));
        assert!(nests_deeper_than(&json!([[1]]), 2));
        assert!(!nests_deeper_than(&json!({"a": [], "b": {"c": 1}}), 3));
        assert!(nests_deeper_than(&json!({"a": [], "b": {"c": [1]}}), 3));
        // Wide is not deep.
        assert!(!nests_deeper_than(&json!([[1], [2], [3], {"x": 4}]), 3));
    }

    #[test]
    fn default_record_matches_express() {
        // docs/wire-formats.md: default options, a new session.
        assert_eq!(
            Record::default().to_json(),
            r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}}"#
        );
    }

    #[test]
    fn full_record_matches_express_byte_for_byte() {
        // docs/wire-formats.md, verified against express-session 1.19.0.
        let express = r#"{"cookie":{"originalMaxAge":60000,"partitioned":true,"priority":"high","expires":"2026-11-22T09:36:51.973Z","secure":false,"httpOnly":true,"domain":"example.com","path":"/","sameSite":"lax"},"views":1,"nested":{"a":[1,2],"d":"1970-01-01T00:00:00.000Z"}}"#;
        let record = Record::from_json(express).unwrap();
        assert_eq!(
            record.cookie().original_max_age(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(record.cookie().same_site(), Some(SameSite::Lax));
        assert_eq!(record.data()["views"], json!(1));
        assert_eq!(record.to_json(), express);
    }

    #[test]
    fn data_keeps_insertion_order() {
        let mut record = Record::default();
        for key in ["zeta", "alpha", "mid"] {
            record.data_mut().insert(key.into(), json!(key));
        }
        assert!(
            record
                .to_json()
                .ends_with(r#""zeta":"zeta","alpha":"alpha","mid":"mid"}"#)
        );
    }

    #[test]
    fn reads_express_loose_forms() {
        let record = Record::from_json(
            r#"{"cookie":{"originalMaxAge":false,"expires":false,"httpOnly":0,"secure":"yes","sameSite":true,"priority":"HIGH"},"save":1}"#,
        )
        .unwrap();
        let cookie = record.cookie();
        assert_eq!(cookie.original_max_age(), None);
        assert_eq!(cookie.expires(), None);
        assert!(!cookie.http_only());
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.same_site(), Some(SameSite::Strict));
        assert_eq!(cookie.priority(), Some(Priority::High));
        assert_eq!(cookie.path(), "/");
        // A key express reserves (`save`) is kept as data.
        assert_eq!(record.data()["save"], json!(1));
    }

    #[test]
    fn refuses_records_without_a_usable_cookie() {
        for bad in [
            r#"{"views":1}"#,
            r#"{"cookie":null}"#,
            r#"{"cookie":"x"}"#,
            r#"{"cookie":{"expires":"yesterday"}}"#,
            r#"[1]"#,
            "not json",
        ] {
            assert!(Record::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_survive_load_and_save_unchanged() {
        // Found by the `record` fuzz target: without serde_json's `float_roundtrip`, the text
        // written for this number parsed back one ULP off, so it drifted on every save.
        let json = r#"{"cookie":{},"n":-92233720368547700000000000000000000000075808}"#;
        let record = Record::from_json(json).unwrap();
        let again = Record::from_json(&record.to_json()).unwrap();
        assert_eq!(again, record);
        assert_eq!(record.data()["n"], json!(-9.22337203685477e43));
    }

    #[test]
    fn nested_cookie_keys_are_data() {
        let record = Record::from_json(r#"{"cookie":{},"user":{"cookie":1}}"#).unwrap();
        assert_eq!(record.data()["user"], json!({"cookie": 1}));
    }

    #[test]
    fn max_age_sets_expiry_and_touch_renews_it() {
        let now = Timestamp::from_millis(1_000_000);
        let mut cookie = SessionCookie::default();
        cookie.set_max_age_at(Some(Duration::from_millis(2000)), now);
        assert_eq!(cookie.expires(), Some(now.add_millis(2000)));
        assert_eq!(cookie.max_age_at(now), Some(Duration::from_millis(2000)));
        cookie.touch_at(now.add_millis(500));
        assert_eq!(cookie.expires(), Some(now.add_millis(2500)));
        // express's originalMaxAge can drift by a millisecond; ours stays exact.
        assert_eq!(cookie.original_max_age(), Some(Duration::from_millis(2000)));
        cookie.set_max_age_at(None, now);
        assert_eq!((cookie.expires(), cookie.original_max_age()), (None, None));
    }
}
