//! How the signed session id travels between client and server: in the cookie (express's way,
//! for browsers), in a header ([`TokenHeader`], for API and mobile clients), or either.
//!
//! The token in a header is the cookie's value before URL-encoding, `s:<id>.<signature>`: the
//! same id, the same signature and the same store, so one session can be reached both ways.

use http::header::{AUTHORIZATION, HeaderName};
use http::{HeaderMap, HeaderValue};

/// The longest token header accepted, in bytes. A token is about 80 bytes (`s:`, a 32-character
/// id, a dot, a 43-character signature); a longer header is refused with 431 before anything
/// else is done.
pub const MAX_TOKEN_HEADER_LEN: usize = 1024;

/// The header a session token travels in, for clients that do not keep cookies: an API
/// client, a mobile app, a CLI. Turn it on with
/// [`with_header_transport`](crate::SessionLayerBuilder::with_header_transport).
///
/// - [`TokenHeader::bearer`]: the client sends `Authorization: Bearer <token>`, and a new token
///   comes back in `X-Session-Token`.
/// - [`TokenHeader::named`]: one header both ways, such as `X-Session-Token` (Spring Session's
///   `X-Auth-Token` works too).
///
/// A new or regenerated session's token is sent in the response header (never in the body,
/// which caches and logs keep), with `Cache-Control: no-store` unless the handler set its own
/// Cache-Control; a destroyed session's header comes back empty, telling the client to forget
/// its token.
///
/// Header clients need no CSRF token. A browser attaches cookies to every request to the site,
/// including those another site's page makes it send (a form posted from elsewhere): that is
/// what forgery exploits, and why cookie clients need a token in their forms. A header is only
/// sent when the client's own code sets it, and a page from another origin cannot set it on a
/// request to yours without your CORS consent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenHeader {
    request: HeaderName,
    bearer: bool,
    response: HeaderName,
}

impl TokenHeader {
    /// `Authorization: Bearer <token>` on requests; new tokens in `X-Session-Token` on
    /// responses (change it with [`with_response_header`](Self::with_response_header)). An
    /// `Authorization` header of another scheme (`Basic`, say) is not a token: the request is
    /// treated as if it had none.
    pub fn bearer() -> Self {
        TokenHeader {
            request: AUTHORIZATION,
            bearer: true,
            response: HeaderName::from_static("x-session-token"),
        }
    }

    /// `name: <token>` on requests and responses alike.
    pub fn named(name: HeaderName) -> Self {
        TokenHeader {
            request: name.clone(),
            bearer: false,
            response: name,
        }
    }

    /// Sends new tokens in `name` instead.
    #[must_use]
    pub fn with_response_header(mut self, name: HeaderName) -> Self {
        self.response = name;
        self
    }

    /// The header requests carry the token in.
    pub fn request_header(&self) -> &HeaderName {
        &self.request
    }

    /// The header responses carry a new token in.
    pub fn response_header(&self) -> &HeaderName {
        &self.response
    }

    /// What a request presents in this header.
    pub(crate) fn presented(&self, headers: &HeaderMap) -> Presented {
        let Some(value) = headers.get(&self.request) else {
            return Presented::Nothing;
        };
        if value.len() > MAX_TOKEN_HEADER_LEN {
            return Presented::TooLarge;
        }
        if self.bearer && !has_bearer_scheme(value.as_bytes()) {
            return Presented::Nothing;
        }
        Presented::Token(value.clone())
    }

    /// The token text in a header value [`presented`](Self::presented) accepted; `None` when it
    /// is not text (so it cannot verify).
    pub(crate) fn token<'a>(&self, value: &'a HeaderValue) -> Option<&'a str> {
        let text = value.to_str().ok()?;
        let token = if self.bearer {
            text.get(BEARER.len()..)?
        } else {
            text
        };
        Some(token.trim_matches(' '))
    }
}

const BEARER: &str = "Bearer ";

/// Whether a header value starts with the `Bearer` scheme (case-insensitive, RFC 9110 §11.1).
fn has_bearer_scheme(value: &[u8]) -> bool {
    value.len() >= BEARER.len() && value[..BEARER.len()].eq_ignore_ascii_case(BEARER.as_bytes())
}

/// What a request carries in the token header.
#[derive(Debug)]
pub(crate) enum Presented {
    /// No token header (or, for `Authorization`, another scheme): the cookie decides.
    Nothing,
    /// A token header, not yet verified: it decides, the cookie is not looked at.
    Token(HeaderValue),
    /// Longer than [`MAX_TOKEN_HEADER_LEN`]: refused with 431.
    TooLarge,
}

/// Which ways the session id travels: the layer's transport settings.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    /// The cookie (on by default).
    pub(crate) cookie: bool,
    /// A token header (off by default).
    pub(crate) header: Option<TokenHeader>,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            cookie: true,
            header: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_tokens_are_read_from_authorization() {
        let bearer = TokenHeader::bearer();
        let token = |value: &str| match bearer.presented(&headers(&AUTHORIZATION, value)) {
            Presented::Token(value) => bearer.token(&value).map(str::to_owned),
            Presented::Nothing => None,
            Presented::TooLarge => Some("too large".into()),
        };
        assert_eq!(token("Bearer s:abc.def"), Some("s:abc.def".into()));
        assert_eq!(token("bearer  s:abc.def "), Some("s:abc.def".into()));
        assert_eq!(token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(token("Bearer"), None);
        assert_eq!(
            token(&format!("Bearer {}", "x".repeat(2000))),
            Some("too large".into())
        );
        assert!(matches!(
            bearer.presented(&HeaderMap::new()),
            Presented::Nothing
        ));
    }

    #[test]
    fn a_named_header_is_taken_whole() {
        let name = HeaderName::from_static("x-session-token");
        let named = TokenHeader::named(name.clone());
        let Presented::Token(value) = named.presented(&headers(&name, "s:abc.def")) else {
            panic!("a token")
        };
        assert_eq!(named.token(&value), Some("s:abc.def"));
        assert_eq!(named.response_header(), &name);
    }
}
