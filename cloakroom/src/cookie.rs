//! The `Cookie` request header in, the `Set-Cookie` response header out, both as the `cookie`
//! npm package (0.7) that express-session uses: the first cookie of a name wins, values are
//! percent-decoded only when they contain `%`, and attributes are written in express's order.

use std::borrow::Cow;

use http::HeaderValue;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::record::{Priority, SameSite, SessionCookie};
use crate::time::Timestamp;

/// What `encodeURIComponent` leaves as is: letters, digits and `-_.!~*'()`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The value of the first cookie called `name` across all `Cookie` headers (as Node joins them),
/// decoded. `None` when there is no such cookie, or when its value is not UTF-8: in both cases
/// there is nothing that could verify, and a later cookie of the same name is never consulted.
pub(crate) fn find<'a, I>(headers: I, name: &str) -> Option<Cow<'a, str>>
where
    I: IntoIterator<Item = &'a HeaderValue>,
{
    let raw = headers
        .into_iter()
        .flat_map(|header| header.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            (trim(&pair[..eq]) == name.as_bytes()).then(|| unquote(trim(&pair[eq + 1..])))
        })?;
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
    out.extend(utf8_percent_encode(value, URI_COMPONENT));
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
        // §5.3: every attribute, in express's order.
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
