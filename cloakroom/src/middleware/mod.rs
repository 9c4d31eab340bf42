//! The tower middleware: [`SessionLayer`] makes [`SessionService`], whose future is
//! [`ResponseFuture`]. It only wires tower to the session: what a request's session does, and
//! every rule of what happens when the response goes out, live in the `session` module.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};

use crate::error::Error;

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{SessionLayer, SessionLayerBuilder};
pub use service::{SecureConnection, SessionService};

/// The default failure response: the status from [`Error::status`] (409, 503 or 500) and its
/// reason phrase. Opaque: nothing of the cause is sent.
pub(crate) fn default_failure_response(error: &Error) -> Response<Bytes> {
    let status = error.status();
    let mut response = Response::new(Bytes::from_static(
        status.canonical_reason().unwrap_or("Error").as_bytes(),
    ));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
