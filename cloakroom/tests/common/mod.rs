//! Shared helpers for the HTTP-level tests: drive an axum `Router` with `oneshot`, parse
//! `Set-Cookie`, and count what reached the store.
#![allow(dead_code, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use cloakroom::store::{self, ErrorKind, Loaded, SessionStore, SetOutcome, Version};
use cloakroom::{Id, MemoryStore, Record};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The secret express-session's own tests use.
pub const SECRET: &str = "keyboard cat";

/// A real [`MemoryStore`] that counts the calls it receives and can be told to fail, to test the
/// middleware's store traffic and failure policy.
#[derive(Clone, Debug, Default)]
pub struct CountingStore {
    pub inner: MemoryStore,
    pub counts: Arc<Counts>,
    pub fail: Arc<Failures>,
}

#[derive(Debug, Default)]
pub struct Counts {
    pub get: AtomicUsize,
    pub set: AtomicUsize,
    pub destroy: AtomicUsize,
    pub touch: AtomicUsize,
}

/// Switches that make the next calls of a kind fail with the given transience.
#[derive(Debug, Default)]
pub struct Failures {
    pub get: AtomicBool,
    pub set: AtomicBool,
    pub destroy: AtomicBool,
    pub touch: AtomicBool,
    /// Fail as `Unavailable` (transient, 503) instead of `Backend` (500).
    pub transient: AtomicBool,
}

impl Counts {
    pub fn get(&self) -> usize {
        self.get.load(Ordering::SeqCst)
    }
    pub fn set(&self) -> usize {
        self.set.load(Ordering::SeqCst)
    }
    pub fn destroy(&self) -> usize {
        self.destroy.load(Ordering::SeqCst)
    }
    pub fn touch(&self) -> usize {
        self.touch.load(Ordering::SeqCst)
    }
    /// (get, set, touch, destroy), for compact assertions.
    pub fn all(&self) -> (usize, usize, usize, usize) {
        (self.get(), self.set(), self.touch(), self.destroy())
    }
    pub fn reset(&self) {
        for c in [&self.get, &self.set, &self.destroy, &self.touch] {
            c.store(0, Ordering::SeqCst);
        }
    }
}

impl CountingStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn failure(&self, switch: &AtomicBool) -> Result<(), store::Error> {
        if switch.load(Ordering::SeqCst) {
            let kind = if self.fail.transient.load(Ordering::SeqCst) {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Backend
            };
            return Err(store::Error::new(kind, "boom!"));
        }
        Ok(())
    }

    /// How many live sessions the store holds.
    pub async fn len(&self) -> usize {
        self.inner.len().await.unwrap()
    }

    /// The stored record for an id, read straight from the store.
    pub async fn record(&self, id: &str) -> Option<Record> {
        self.inner
            .get(&Id::from_string(id))
            .await
            .unwrap()
            .map(|l| l.record)
    }
}

#[async_trait]
impl SessionStore for CountingStore {
    async fn get(&self, id: &Id) -> Result<Option<Loaded>, store::Error> {
        self.counts.get.fetch_add(1, Ordering::SeqCst);
        self.failure(&self.fail.get)?;
        self.inner.get(id).await
    }
    async fn set(
        &self,
        id: &Id,
        record: &Record,
        expected: Option<&Version>,
    ) -> Result<SetOutcome, store::Error> {
        self.counts.set.fetch_add(1, Ordering::SeqCst);
        self.failure(&self.fail.set)?;
        self.inner.set(id, record, expected).await
    }
    async fn destroy(&self, id: &Id) -> Result<(), store::Error> {
        self.counts.destroy.fetch_add(1, Ordering::SeqCst);
        self.failure(&self.fail.destroy)?;
        self.inner.destroy(id).await
    }
    async fn touch(&self, id: &Id, record: &Record) -> Result<(), store::Error> {
        self.counts.touch.fetch_add(1, Ordering::SeqCst);
        self.failure(&self.fail.touch)?;
        self.inner.touch(id, record).await
    }
    async fn all(&self) -> Result<Vec<(Id, Record)>, store::Error> {
        self.inner.all().await
    }
    async fn len(&self) -> Result<usize, store::Error> {
        self.inner.len().await
    }
    async fn clear(&self) -> Result<(), store::Error> {
        self.inner.clear().await
    }
}

/// A finished response, body read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub extensions: http::Extensions,
    pub body: String,
}

impl Reply {
    /// The session cookie's `Set-Cookie`, parsed; `None` when not sent.
    pub fn session_cookie(&self, name: &str) -> Option<SetCookie> {
        self.set_cookies().into_iter().find(|c| c.name == name)
    }

    /// Every `Set-Cookie`, parsed, in order.
    pub fn set_cookies(&self) -> Vec<SetCookie> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| SetCookie::parse(v.to_str().expect("Set-Cookie is ASCII")))
            .collect()
    }

    /// The `name=value` pair to send back in a `Cookie` header.
    pub fn cookie_pair(&self, name: &str) -> String {
        let cookie = self
            .session_cookie(name)
            .unwrap_or_else(|| panic!("expected a {name} Set-Cookie, got {:?}", self.headers));
        format!("{}={}", cookie.name, cookie.value)
    }
}

/// One `Set-Cookie` header, split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetCookie {
    pub raw: String,
    pub name: String,
    pub value: String,
    /// Attributes in the order sent: (name, value) with `None` for flags.
    pub attributes: Vec<(String, Option<String>)>,
}

impl SetCookie {
    pub fn parse(raw: &str) -> Self {
        let mut parts = raw.split("; ");
        let (name, value) = parts.next().unwrap().split_once('=').expect("name=value");
        let attributes = parts
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (p.to_owned(), None),
            })
            .collect();
        SetCookie {
            raw: raw.to_owned(),
            name: name.to_owned(),
            value: value.to_owned(),
            attributes,
        }
    }

    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn has(&self, flag: &str) -> bool {
        self.attribute(flag).is_some()
    }

    pub fn expires(&self) -> Option<&str> {
        self.attribute("Expires").flatten()
    }

    /// Attribute names in order, e.g. `["Path", "Expires", "HttpOnly"]`.
    pub fn attribute_names(&self) -> Vec<&str> {
        self.attributes.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The session id inside the signed value `s%3A<id>.<mac>`.
    pub fn session_id(&self) -> String {
        let decoded = percent_decode(&self.value);
        let signed = decoded.strip_prefix("s:").expect("signed value");
        signed.rsplit_once('.').expect("id.mac").0.to_owned()
    }
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Sends one request through `app` and reads the whole response.
pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response: Response<Body> = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        extensions: parts.extensions,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET path`, with an optional `Cookie` header.
pub async fn get(app: &Router, path: &str, cookie: Option<&str>) -> Reply {
    let mut builder = Request::get(path);
    if let Some(cookie) = cookie {
        builder = builder.header(http::header::COOKIE, cookie);
    }
    send(app, builder.body(Body::empty()).unwrap()).await
}

/// Parses an IMF-fixdate (`Thu, 01 Jan 1970 00:00:00 GMT`) into milliseconds since the epoch.
pub fn http_date_millis(text: &str) -> i64 {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = text.split([' ', ':']).collect();
    let day: i64 = parts[1].parse().unwrap();
    let month = MONTHS.iter().position(|m| *m == parts[2]).unwrap() as i64 + 1;
    let year: i64 = parts[3].parse().unwrap();
    let (h, m, s): (i64, i64, i64) = (
        parts[4].parse().unwrap(),
        parts[5].parse().unwrap(),
        parts[6].parse().unwrap(),
    );
    // days_from_civil
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + h) * 60 + m) * 60_000 + s * 1000
}
