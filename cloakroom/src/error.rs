//! The error a [`Session`](crate::Session) method returns.

use std::sync::Arc;

use http::StatusCode;

use crate::store;

/// Why a session operation failed.
///
/// Store failures ([`Load`](Error::Load), [`Save`](Error::Save), [`Destroy`](Error::Destroy),
/// [`Contended`](Error::Contended)) also make the middleware answer the request with its fixed
/// failure response, whatever the handler returns, so a handler may simply pass them on with `?`.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed while loading the session.
    #[error("failed to load session")]
    Load(#[source] store::Error),
    /// The store failed while saving the session.
    #[error("failed to save session")]
    Save(#[source] store::Error),
    /// The store failed while destroying the session.
    #[error("failed to destroy session")]
    Destroy(#[source] store::Error),
    /// The store failed while refreshing the session's expiry. Logged, not fatal: the response
    /// goes out as the handler made it.
    #[error("failed to touch session")]
    Touch(#[source] store::Error),
    /// Other requests kept changing the session while this one tried to save it.
    #[error("failed to save session: too many concurrent writes")]
    Contended,
    /// [`reload`](crate::Session::reload) found no session in the store. express: `failed to
    /// load session`.
    #[error("failed to load session: not in the store")]
    NotFound,
    /// A value could not be turned into JSON.
    #[error("failed to serialize session value")]
    Serialize(#[source] Arc<serde_json::Error>),
    /// A stored value could not be read as the type asked for.
    #[error("failed to deserialize session value")]
    Deserialize(#[source] Arc<serde_json::Error>),
    /// `cookie` is the one top-level key a session cannot hold: express keeps the cookie
    /// settings under it.
    #[error("failed to insert session value: `cookie` is reserved")]
    ReservedKey,
    /// The session was used after its response had been sent (for example from a spawned task).
    #[error("session used after its response was sent")]
    Finished,
}

impl Error {
    /// Whether trying again later may succeed (the store is down, slow, or contended).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Load(e) | Error::Save(e) | Error::Destroy(e) | Error::Touch(e) => {
                e.is_transient()
            }
            Error::Contended => true,
            _ => false,
        }
    }

    /// The status of the fixed failure response: 503 when transient, else 500.
    pub fn status(&self) -> StatusCode {
        if self.is_transient() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Error {
    /// A fixed, opaque response: the status from [`Error::status`] and its reason phrase.
    /// Nothing of the cause reaches the client.
    fn into_response(self) -> axum_core::response::Response {
        let status = self.status();
        (status, status.canonical_reason().unwrap_or("Error")).into_response()
    }
}
