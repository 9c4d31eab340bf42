//! Thin wrappers over private functions for the cargo-fuzz targets in `fuzz/`. Compiled only
//! with `--cfg fuzzing` (which cargo-fuzz sets); not part of the API.

use std::borrow::Cow;

use http::HeaderValue;

/// [`cookie::find`](crate::cookie::find): the first cookie called `name`, decoded.
pub fn find_cookie<'a>(headers: &'a [HeaderValue], name: &str) -> Option<Cow<'a, str>> {
    crate::cookie::find(headers, name)
}

/// [`cookie::signed_id`](crate::cookie::signed_id): the verified id in the first cookie called
/// `name`, by the layer's fast path; it must agree with [`find_cookie`] then [`Secrets::unsign`].
pub fn signed_id(headers: &[HeaderValue], name: &str, secrets: &Secrets) -> Option<String> {
    crate::cookie::signed_id(headers, name, &secrets.0).map(|id| id.as_str().to_owned())
}

/// The `name=value` pair of the `Set-Cookie` header the layer would write for `value` with
/// default cookie settings, as a browser sends it back; `None` when no header can be written.
pub fn cookie_pair(name: &str, value: &str) -> Option<String> {
    let header = crate::cookie::set_cookie(name, value, &Default::default(), None).ok()?;
    let header = header.to_str().ok()?;
    header.split("; ").next().map(str::to_owned)
}

/// The signing secrets (`Secrets`), newest first.
#[derive(Clone, Debug)]
pub struct Secrets(crate::signing::Secrets);

impl Secrets {
    /// `None` when the list is empty or a secret is empty.
    pub fn new(secrets: &[&[u8]]) -> Option<Self> {
        crate::signing::Secrets::new(secrets).map(Secrets)
    }

    /// `s:<id>.<mac>`, signed with the first secret.
    pub fn sign(&self, id: &str) -> String {
        self.0.sign(id)
    }

    /// The id inside `value` when any secret signed it.
    pub fn unsign<'a>(&self, value: &'a str) -> Option<&'a str> {
        self.0.unsign(value)
    }
}
