//! The tower middleware: [`SessionLayer`] makes [`SessionService`], whose future is
//! [`ResponseFuture`]. The save / touch / set-cookie rules live in one function in `decide`.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;
use foldhash::fast::RandomState;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};

use crate::config::Config;
use crate::error::Error;
use crate::id::Id;
use crate::session::Locking;
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
    pub(crate) write_locks: WriteLocks,
    /// The exclusive session lock, when on.
    pub(crate) locking: Option<Arc<Locking>>,
}

/// Serialises saves of one session within this process. Requests racing on a session then
/// resolve in turn: each may lose one compare-and-set (it loaded an older version), reloads and
/// merges while no one else here can write, and succeeds. Only writers in other processes can
/// make it retry more, and it never holds its turn while it pauses between retries. Striped,
/// so the table stays small: two sessions sharing a stripe merely save one after the other.
pub(crate) struct WriteLocks {
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: RandomState,
}

impl WriteLocks {
    const STRIPES: usize = 1024;

    pub(crate) fn new() -> Self {
        WriteLocks {
            stripes: (0..Self::STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: RandomState::default(),
        }
    }

    pub(crate) fn for_id(&self, id: &Id) -> &tokio::sync::Mutex<()> {
        &self.stripes[self.hasher.hash_one(id.as_str()) as usize % Self::STRIPES]
    }
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
