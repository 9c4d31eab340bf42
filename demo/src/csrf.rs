//! Synchronizer tokens against cross-site request forgery. Each session holds one random token
//! under [`SESSION_KEY`]; every form carries it in the hidden field [`FIELD`]; every POST must
//! send it back. Another site can make a browser post to the demo (with its cookie: `SameSite`
//! does not stop a sibling subdomain or another port of the same host), but cannot read the
//! token out of the demo's pages.
//!
//! The Express app in `interop/` uses the same key and field, so a form rendered by one server
//! can be posted to the other.

use base64::Engine as _;
use cloakroom::Session;
use subtle::ConstantTimeEq as _;

/// The session key holding the token (a string), shared with `interop/app.js`.
pub(crate) const SESSION_KEY: &str = "csrfToken";

/// The form field carrying the token.
pub(crate) const FIELD: &str = "_csrf";

/// The session's token, issued on first use (the session is then saved, even for a visitor
/// who has done nothing else yet: the token is data).
///
/// `update` keeps a token another request of this session stored meanwhile: when two first
/// requests race, one page shows a token that was not kept, and its form gets the 403 page,
/// which says to reload.
pub(crate) async fn token(session: &Session) -> Result<String, cloakroom::Error> {
    if let Some(token) = stored(session).await? {
        return Ok(token);
    }
    let issued = random_token();
    session
        .update(SESSION_KEY, move |stored: Option<String>| {
            stored.unwrap_or_else(|| issued.clone())
        })
        .await
}

/// Replaces the token with a new one: after a login's `regenerate`, so a token seen before the
/// login is worth nothing after it.
pub(crate) async fn renew(session: &Session) -> Result<(), cloakroom::Error> {
    session.insert(SESSION_KEY, random_token()).await
}

/// Whether `submitted` is the session's token, compared in constant time. A session without
/// one accepts nothing.
pub(crate) async fn verify(session: &Session, submitted: &str) -> Result<bool, cloakroom::Error> {
    let Some(expected) = stored(session).await? else {
        return Ok(false);
    };
    Ok(bool::from(expected.as_bytes().ct_eq(submitted.as_bytes())))
}

/// The stored token; `None` if absent, empty, or not a string (an empty one would match an
/// empty field).
async fn stored(session: &Session) -> Result<Option<String>, cloakroom::Error> {
    let value = session.get_value(SESSION_KEY).await?;
    Ok(value
        .as_ref()
        .and_then(|value| value.as_str())
        .filter(|token| !token.is_empty())
        .map(str::to_owned))
}

/// 32 random bytes, base64url without padding: 43 characters, as Node's
/// `crypto.randomBytes(32).toString('base64url')`.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // As for cloakroom's session ids: without the OS's randomness there is no safe token.
    getrandom::fill(&mut bytes).expect("the OS random number generator must be available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
