//! The error a [`Session`](crate::Session) method returns.

use std::sync::Arc;

use http::StatusCode;

use crate::store;

/// Why a session operation failed.
///
/// Store failures ([`Load`](Error::Load), [`Save`](Error::Save), [`Destroy`](Error::Destroy),
/// [`Contended`](Error::Contended), [`Lock`](Error::Lock), [`LockTimeout`](Error::LockTimeout))
/// and refused saves ([`Conflict`](Error::Conflict), [`LeaseLost`](Error::LeaseLost),
/// [`IdInUse`](Error::IdInUse)) also make the middleware answer the request with its fixed
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
    /// Another request changed `key` after this one read it, and this request wrote the key
    /// with a plain `insert` or `remove` (or an update closure refused the newer value). The
    /// save is refused rather than overwriting the other change; answered with 409 Conflict.
    /// Use [`Session::update`](crate::Session::update) for read-modify-write, or the session
    /// lock, to never see this.
    #[error("failed to save session: `{key}` was changed by another request")]
    Conflict {
        /// The session key written from a value that is no longer current.
        key: String,
    },
    /// A new session's id is already taken in the store (a custom
    /// [`with_genid`](crate::SessionLayerBuilder::with_genid) repeated an id). Nothing was
    /// written: the other session is never overwritten.
    #[error("failed to save session: its new id is already in use")]
    IdInUse,
    /// The session's lock stayed busy for the whole wait
    /// ([`SessionLock::with_wait`](crate::SessionLock::with_wait)). Answered with 503.
    #[error("timed out waiting for the session's lock")]
    LockTimeout,
    /// This request held the session's lock longer than its lease
    /// ([`SessionLock::with_lease`](crate::SessionLock::with_lease)), so its changes were not
    /// saved: another request may have taken the session meanwhile. Answered with 409.
    #[error("failed to save session: the session's lock lease ran out")]
    LeaseLost,
    /// The store failed while taking or releasing the session's lock.
    #[error("failed to lock or unlock session")]
    Lock(#[source] store::Error),
    /// [`reload`](crate::Session::reload) found no session in the store. express: `failed to
    /// load session`.
    #[error("failed to load session: not in the store")]
    NotFound,
    /// A value could not be turned into JSON.
    #[error("failed to store session key `{key}`: the value cannot be JSON")]
    Serialize {
        /// The session key.
        key: String,
        /// serde_json's error.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// A stored value is not of the type asked for. The message names the key and the type,
    /// never the value (it is session data).
    #[error("failed to read session key `{key}` as {expected}")]
    Deserialize {
        /// The session key.
        key: String,
        /// The Rust type asked for.
        expected: &'static str,
    },
    /// A value nests deeper than [`MAX_VALUE_DEPTH`](crate::MAX_VALUE_DEPTH) levels; it was not
    /// stored, and the session is as it was.
    #[error("failed to store session key `{key}`: the value nests deeper than {limit} levels")]
    TooDeep {
        /// The session key.
        key: String,
        /// The limit, [`MAX_VALUE_DEPTH`](crate::MAX_VALUE_DEPTH).
        limit: usize,
    },
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
            Error::Load(e)
            | Error::Save(e)
            | Error::Destroy(e)
            | Error::Touch(e)
            | Error::Lock(e) => e.is_transient(),
            Error::Contended | Error::LockTimeout => true,
            _ => false,
        }
    }

    /// The status of the fixed failure response: 409 when the request's changes conflict with
    /// another request's ([`Conflict`](Error::Conflict), [`LeaseLost`](Error::LeaseLost)), 503
    /// when transient, else 500.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Conflict { .. } | Error::LeaseLost => StatusCode::CONFLICT,
            _ if self.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl Error {
    /// The error for a stored value under `key` that is not a `T`.
    pub(crate) fn deserialize<T>(key: &str) -> Self {
        Error::Deserialize {
            key: key.to_owned(),
            expected: std::any::type_name::<T>(),
        }
    }

    /// The error for a value under `key` that cannot be JSON.
    pub(crate) fn serialize(key: &str, source: serde_json::Error) -> Self {
        Error::Serialize {
            key: key.to_owned(),
            source: Arc::new(source),
        }
    }
}

/// An error a handler returned, as the layer finds it in the response's extensions to log it
/// (see the [`IntoResponse`](axum_core::response::IntoResponse) impl of [`Error`]).
#[derive(Clone, Debug)]
pub(crate) struct FromHandler(pub(crate) Error);

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Error {
    /// A fixed, opaque response: the status from [`Error::status`] and its reason phrase.
    /// Nothing of the cause reaches the client; the session layer logs it (without values or
    /// ids).
    fn into_response(self) -> axum_core::response::Response {
        let status = self.status();
        let mut response = (status, status.canonical_reason().unwrap_or("Error")).into_response();
        response.extensions_mut().insert(FromHandler(self));
        response
    }
}

/// An error and its causes on one line, each cause once: a cause whose text the line already
/// holds is left out (drivers often repeat their source's message in their own).
pub(crate) struct Report<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = error.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused (os error 111)")]
    struct Io;

    #[derive(Debug, thiserror::Error)]
    #[error("Connection refused (os error 111): connection refused (os error 111)")]
    struct Driver(#[source] Io);

    #[test]
    fn a_report_prints_each_cause_once() {
        let error = Error::Load(store::Error::new(store::ErrorKind::Unavailable, Driver(Io)));
        assert_eq!(
            Report(&error).to_string(),
            "failed to load session: session store unavailable: Connection refused (os error \
             111): connection refused (os error 111)"
        );
    }

    #[test]
    fn type_errors_name_the_key_and_type_never_the_value() {
        let error = Error::deserialize::<u64>("views");
        assert_eq!(
            error.to_string(),
            "failed to read session key `views` as u64"
        );
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
