//! The `Cookie` request header in, the `Set-Cookie` response header out, both as the `cookie`
//! npm package (0.7) that express-session uses: the first cookie of a name wins, values are
//! percent-decoded only when they contain `%`, and attributes are written in express's order.
//!
//! Written by hand rather than with the `cookie` crate, which gives other bytes: it writes the
//! attributes in another order and has no `Priority`, and it decodes the escapes of a value that
//! express keeps raw because one escape is malformed (test `the_cookie_crate_differs_from_express`).
//! Reading a session cookie is also on every request's path, and this needs no allocation.

use std::borrow::Cow;

use http::HeaderValue;

use crate::id::Id;
use crate::record::{Priority, SameSite, SessionCookie};
use crate::signing::{MAC_BASE64_LEN, Secrets};
use crate::time::Timestamp;

/// Whether `encodeURIComponent` leaves the byte as is: letters, digits and `-_.!~*'()`.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// The value of the first cookie called `name` across all `Cookie` headers (as Node joins them),
/// decoded. `None` when there is no such cookie, or when its value is not UTF-8: in both cases
/// there is nothing that could verify, and a later cookie of the same name is never consulted.
#[cfg(any(test, fuzzing))]
pub(crate) fn find<'a, I>(headers: I, name: &str) -> Option<Cow<'a, str>>
where
    I: IntoIterator<Item = &'a HeaderValue>,
{
    decode(find_raw(headers, name)?)
}

/// The session id in the first cookie called `name`, if its signature verifies: what
/// [`find`] then [`Secrets::unsign`] give, without copying the value in the common case.
pub(crate) fn signed_id<'a, I>(headers: I, name: &str, secrets: &Secrets) -> Option<Id>
where
    I: IntoIterator<Item = &'a HeaderValue>,
{
    let raw = find_raw(headers, name)?;
    match express_signed(raw) {
        Some((id, mac)) => secrets.verifies(id, &mac).then(|| Id::from_string(id)),
        None => secrets.unsign(&decode(raw)?).map(Id::from_string),
    }
}

/// The id and the decoded signature of a value as express writes it, `s%3A<id>.<mac>` with no
/// escape in the id and only `%2B` / `%2F` in the mac; `None` for anything else, which takes
/// the general path. Decoding such a value changes nothing else, so no copy of it is needed.
fn express_signed(raw: &[u8]) -> Option<(&str, [u8; MAC_BASE64_LEN])> {
    let signed = raw.strip_prefix(b"s%3A")?;
    let dot = signed.iter().rposition(|&b| b == b'.')?;
    let (id, escaped) = (&signed[..dot], &signed[dot + 1..]);
    if id.contains(&b'%') {
        return None;
    }
    let id = std::str::from_utf8(id).ok()?;
    if !escaped.contains(&b'%') {
        return Some((id, escaped.try_into().ok()?));
    }
    let mut mac = [0u8; MAC_BASE64_LEN];
    let mut len = 0;
    let mut rest = escaped;
    while let Some((&first, tail)) = rest.split_first() {
        let (byte, tail) = match (first, tail) {
            (b'%', [b'2', b'B' | b'b', tail @ ..]) => (b'+', tail),
            (b'%', [b'2', b'F' | b'f', tail @ ..]) => (b'/', tail),
            (b'%', _) => return None,
            (byte, tail) => (byte, tail),
        };
        *mac.get_mut(len)? = byte;
        len += 1;
        rest = tail;
    }
    (len == MAC_BASE64_LEN).then_some((id, mac))
}

/// The raw value of the first cookie called `name`: trimmed and unquoted, not decoded.
fn find_raw<'a, I>(headers: I, name: &str) -> Option<&'a [u8]>
where
    I: IntoIterator<Item = &'a HeaderValue>,
{
    headers
        .into_iter()
        .flat_map(|header| header.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            (trim(&pair[..eq]) == name.as_bytes()).then(|| unquote(trim(&pair[eq + 1..])))
        })
}

/// A raw value as the `cookie` package decodes it: percent-decoded only when it contains `%`,
/// kept raw when that fails; `None` when it is not UTF-8.
fn decode(raw: &[u8]) -> Option<Cow<'_, str>> {
    let raw = std::str::from_utf8(raw).ok()?;
    Some(if raw.contains('%') {
        decode_uri_component(raw).map_or(Cow::Borrowed(raw), Cow::Owned)
    } else {
        Cow::Borrowed(raw)
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        [b'"'] => &[],
        _ => value,
    }
}

/// `encodeURIComponent`, appended to `out`: every byte of the UTF-8 text that is not
/// unreserved becomes `%XX`. Runs of unreserved characters (all of an id, most of a signature)
/// are copied as one slice.
fn encode_uri_component(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut rest = text;
    while let Some(at) = rest.bytes().position(|b| !is_unreserved(b)) {
        out.push_str(&rest[..at]);
        let char_len = rest[at..].chars().next().map_or(1, char::len_utf8);
        for &byte in &rest.as_bytes()[at..at + char_len] {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        rest = &rest[at + char_len..];
    }
    out.push_str(rest);
}

/// `decodeURIComponent`, which fails as a whole on a malformed escape or on bytes that are not
/// UTF-8; the caller then keeps the raw value, as the `cookie` package does.
fn decode_uri_component(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(percent) = rest.iter().position(|&b| b == b'%') {
        out.extend_from_slice(&rest[..percent]);
        let hex = rest.get(percent + 1..percent + 3)?;
        out.push(hex_value(hex[0])? << 4 | hex_value(hex[1])?);
        rest = &rest[percent + 3..];
    }
    out.extend_from_slice(rest);
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// True when `name` is a valid cookie name (an RFC 7230 token), as the `cookie` package checks.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// True when `domain` passes the `cookie` package's domain check (an optional leading dot, then
/// dot-separated labels of letters, digits and inner hyphens).
pub(crate) fn is_valid_domain(domain: &str) -> bool {
    let domain = domain.strip_prefix('.').unwrap_or(domain);
    !domain.is_empty()
        && domain.split('.').all(|label| {
            let bytes = label.as_bytes();
            (1..=63).contains(&bytes.len())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

/// True when `path` is printable ASCII without `;`, as the `cookie` package checks.
pub(crate) fn is_valid_path(path: &str) -> bool {
    path.bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b';')
}

/// Why a `Set-Cookie` header could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidAttribute(pub(crate) &'static str);

/// `name=<encodeURIComponent(value)>; Domain=…; Path=…; Expires=…; HttpOnly; Secure;
/// Partitioned; Priority=…; SameSite=…`, each attribute only when set, in express's order.
/// `expires` overrides the cookie's own expiry (used to write an already-expired cookie).
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    cookie: &SessionCookie,
    expires: Option<Timestamp>,
) -> Result<HeaderValue, InvalidAttribute> {
    let mut out = String::with_capacity(160);
    out.push_str(name);
    out.push('=');
    encode_uri_component(value, &mut out);
    if let Some(domain) = cookie.domain() {
        if !is_valid_domain(domain) {
            return Err(InvalidAttribute("domain"));
        }
        out.push_str("; Domain=");
        out.push_str(domain);
    }
    if !is_valid_path(cookie.path()) {
        return Err(InvalidAttribute("path"));
    }
    out.push_str("; Path=");
    out.push_str(cookie.path());
    if let Some(expires) = expires.or(cookie.expires()) {
        out.push_str("; Expires=");
        out.push_str(&expires.to_http_date());
    }
    if cookie.http_only() {
        out.push_str("; HttpOnly");
    }
    if cookie.secure() == Some(true) {
        out.push_str("; Secure");
    }
    if cookie.partitioned() == Some(true) {
        out.push_str("; Partitioned");
    }
    if let Some(priority) = cookie.priority() {
        out.push_str(match priority {
            Priority::Low => "; Priority=Low",
            Priority::Medium => "; Priority=Medium",
            Priority::High => "; Priority=High",
        });
    }
    if let Some(same_site) = cookie.same_site() {
        out.push_str(match same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
    }
    HeaderValue::try_from(out).map_err(|_| InvalidAttribute("value"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The shortcut in `signed_id` gives what decoding then verifying gives.
        #[test]
        fn signed_id_agrees_with_find_then_unsign(
            prefix in "(s:|s%3A|s%3a|%73:|)",
            id in "[A-Za-z0-9_%:.-]{0,12}",
            tamper in any::<bool>(),
            escape_in_mac in 0..3u8,
        ) {
            let secrets = Secrets::new(["keyboard cat"]).unwrap();
            let signed = secrets.sign(&id);
            let mut value = format!("{prefix}{}", signed.strip_prefix("s:").unwrap());
            if tamper {
                value.push('A');
            }
            match escape_in_mac {
                1 => value = value.replace('/', "%2F").replace('+', "%2B"),
                2 => value = value.replace('/', "%2f").replace('+', "%2b").replace('.', "%2E"),
                _ => {}
            }
            let header = HeaderValue::from_str(&format!("a=1; sid={value}")).unwrap();
            let expected = find([&header], "sid")
                .and_then(|decoded| secrets.unsign(&decoded).map(str::to_owned));
            let got = signed_id([&header], "sid", &secrets);
            prop_assert_eq!(got.as_ref().map(Id::as_str), expected.as_deref());
        }

        #[test]
        fn encodes_as_encode_uri_component(text in any::<String>()) {
            use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
            const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
                .remove(b'-').remove(b'_').remove(b'.').remove(b'!').remove(b'~')
                .remove(b'*').remove(b'\'').remove(b'(').remove(b')');
            let mut ours = String::new();
            encode_uri_component(&text, &mut ours);
            prop_assert_eq!(ours, utf8_percent_encode(&text, URI_COMPONENT).to_string());
        }
    }

    fn find_in(headers: &[&str], name: &str) -> Option<String> {
        let values: Vec<HeaderValue> = headers
            .iter()
            .map(|h| HeaderValue::from_str(h).unwrap())
            .collect();
        find(&values, name).map(Cow::into_owned)
    }

    #[test]
    fn finds_and_trims() {
        assert_eq!(find_in(&["a=1; sid = x ;b=2"], "sid").as_deref(), Some("x"));
        assert_eq!(
            find_in(&["a=1;\tsid=\"quoted\""], "sid").as_deref(),
            Some("quoted")
        );
        assert_eq!(find_in(&["a=1"], "sid"), None);
        assert_eq!(find_in(&[""], "sid"), None);
        assert_eq!(find_in(&["sid"], "sid"), None, "a pair needs '='");
        assert_eq!(find_in(&["junk; sid=v"], "sid").as_deref(), Some("v"));
        assert_eq!(find_in(&["sid="], "sid").as_deref(), Some(""));
        assert_eq!(find_in(&["sid=\""], "sid").as_deref(), Some(""));
    }

    #[test]
    fn first_cookie_of_a_name_wins_across_headers() {
        assert_eq!(
            find_in(&["sid=one; sid=two"], "sid").as_deref(),
            Some("one")
        );
        assert_eq!(
            find_in(&["a=1", "sid=one", "sid=two"], "sid").as_deref(),
            Some("one")
        );
    }

    #[test]
    fn decodes_only_when_percent_is_present_and_keeps_raw_on_bad_escapes() {
        assert_eq!(find_in(&["sid=s%3Aab.c"], "sid").as_deref(), Some("s:ab.c"));
        assert_eq!(find_in(&["sid=a+b"], "sid").as_deref(), Some("a+b"));
        assert_eq!(
            find_in(&["sid=s%3Aab%zz"], "sid").as_deref(),
            Some("s%3Aab%zz")
        );
        assert_eq!(find_in(&["sid=%FF"], "sid").as_deref(), Some("%FF"));
        assert_eq!(find_in(&["sid=%C3%BC"], "sid").as_deref(), Some("ü"));
    }

    #[test]
    fn non_utf8_first_value_hides_later_ones() {
        let header = HeaderValue::from_bytes(b"sid=\xff\xfe; sid=ok").unwrap();
        assert_eq!(find([&header], "sid"), None);
    }

    #[test]
    fn spec_serialization_example() {
        // docs/wire-formats.md: every attribute, in express's order.
        let mut cookie = SessionCookie::default();
        cookie.set_domain(Some("example.com".into()));
        cookie.set_http_only(true);
        cookie.set_partitioned(Some(true));
        cookie.set_priority(Some(Priority::High));
        cookie.set_same_site(Some(SameSite::Lax));
        let expires = Timestamp::parse_iso8601("2026-11-22T09:36:51.973Z");
        let header = set_cookie(
            "connect.sid",
            "s:apple.D8Y+pkTAmeR0PobOhY4G97PRW+j7bUnP/5m6/On1MCU",
            &cookie,
            expires,
        )
        .unwrap();
        assert_eq!(
            header,
            "connect.sid=s%3Aapple.D8Y%2BpkTAmeR0PobOhY4G97PRW%2Bj7bUnP%2F5m6%2FOn1MCU; \
             Domain=example.com; Path=/; Expires=Sun, 22 Nov 2026 09:36:51 GMT; HttpOnly; \
             Partitioned; Priority=High; SameSite=Lax"
        );
    }

    #[test]
    fn default_cookie_is_path_and_http_only() {
        let header = set_cookie("connect.sid", "s:%.x", &SessionCookie::default(), None).unwrap();
        assert_eq!(header, "connect.sid=s%3A%25.x; Path=/; HttpOnly");
    }

    #[test]
    fn refuses_attribute_injection() {
        let mut cookie = SessionCookie::default();
        cookie.set_domain(Some("example.com; Secure".into()));
        assert_eq!(
            set_cookie("sid", "v", &cookie, None),
            Err(InvalidAttribute("domain"))
        );
    }

    /// Why this module does not use the `cookie` crate: for the same cookie it writes other bytes
    /// than express-session, and it reads a value express keeps raw differently.
    #[test]
    fn the_cookie_crate_differs_from_express() {
        let crate_written = cookie::Cookie::build(("connect.sid", "v"))
            .domain("example.com")
            .path("/")
            .http_only(true)
            .same_site(cookie::SameSite::Lax)
            .build()
            .to_string();
        assert_eq!(
            crate_written,
            "connect.sid=v; HttpOnly; SameSite=Lax; Path=/; Domain=example.com"
        );
        let mut ours = SessionCookie::default();
        ours.set_domain(Some("example.com".into()));
        ours.set_same_site(Some(SameSite::Lax));
        assert_eq!(
            set_cookie("connect.sid", "v", &ours, None).unwrap(),
            "connect.sid=v; Domain=example.com; Path=/; HttpOnly; SameSite=Lax"
        );

        // One malformed escape: express keeps the whole value raw; the crate decodes the rest.
        let header = "sid=a%ZZ%41";
        let crate_read = cookie::Cookie::split_parse_encoded(header)
            .flatten()
            .find(|c| c.name() == "sid")
            .map(|c| c.value().to_owned());
        assert_eq!(crate_read.as_deref(), Some("a%ZZA"));
        assert_eq!(find_in(&[header], "sid").as_deref(), Some("a%ZZ%41"));
    }

    #[test]
    fn validators() {
        assert!(is_valid_name("connect.sid"));
        assert!(!is_valid_name("bad name"));
        assert!(!is_valid_name(""));
        assert!(is_valid_domain(".example.com"));
        assert!(!is_valid_domain("-bad.com"));
        assert!(!is_valid_domain("a..b"));
        assert!(is_valid_path("/admin"));
        assert!(!is_valid_path("/a;b"));
        assert!(!is_valid_path("/a\nb"));
    }
}
