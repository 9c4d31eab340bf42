//! The tower middleware: [`SessionLayer`] makes [`SessionService`], whose future is
//! [`ResponseFuture`]. The save / touch / set-cookie rules live in one function in `decide`.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};

use crate::config::Config;
use crate::error::Error;
use crate::store::SessionStore;

pub(crate) mod decide;
mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{SessionLayer, SessionLayerBuilder};
pub use service::{SecureConnection, SessionService};

/// Builds the response sent instead of the handler's when the store fails.
pub(crate) type FailureHandler = Arc<dyn Fn(&Error) -> Response<Bytes> + Send + Sync>;

/// Everything a layer shares with its services and sessions.
pub(crate) struct Context {
    pub(crate) config: Config,
    pub(crate) rules: decide::Rules,
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) on_failure: FailureHandler,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The default failure response: the status from [`Error::status`] (503 when the store is down
/// or slow, else 500) and its reason phrase. Opaque: nothing of the cause is sent.
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
