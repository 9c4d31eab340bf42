//! Calls to DynamoDB: the timeout around each, and what its failures mean as store errors.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::store::{Error, ErrorKind};

/// A failed call, for a store error's source: the operation, DynamoDB's error code and HTTP
/// status, or the transport's failure. Never DynamoDB's message, which may quote a request's
/// values, and never a key or an item.
#[derive(Debug)]
pub(super) struct CallFailed {
    operation: &'static str,
    code: Option<String>,
    detail: String,
}

impl CallFailed {
    pub(super) fn new(operation: &'static str, detail: impl Into<String>) -> Self {
        CallFailed {
            operation,
            code: None,
            detail: detail.into(),
        }
    }

    /// DynamoDB's error code, for an error it answered with.
    pub(super) fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Display for CallFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DynamoDB {} failed: {}", self.operation, self.detail)
    }
}

impl StdError for CallFailed {}

/// What a call ended with: its output, a failed condition, or a store error.
pub(super) enum Outcome<T> {
    Done(T),
    ConditionFailed,
    /// A conditional write failed its condition after a retry: perhaps on its own first
    /// attempt, landed with its answer lost.
    Retried,
}

impl<T> Outcome<T> {
    pub(super) fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Done(output) => Outcome::Done(f(output)),
            Outcome::ConditionFailed => Outcome::ConditionFailed,
            Outcome::Retried => Outcome::Retried,
        }
    }
}

/// Error codes DynamoDB answers with when it is overloaded or briefly unable to serve: the
/// call may succeed later.
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "LimitExceededException",
    "TransactionInProgressException",
];

/// Runs one call, bounded by `timeout`, classifying its failure. A failed condition is an
/// outcome, not an error.
pub(super) async fn run<T, E, R>(
    operation: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<Outcome<T>, Error>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: fmt::Debug + HasStatus,
{
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            CallFailed::new(operation, format!("no answer within {timeout:?}")),
        )),
        Ok(Ok(output)) => Ok(Outcome::Done(output)),
        Ok(Err(error)) => {
            if error.code() == Some("ConditionalCheckFailedException") {
                return Ok(Outcome::ConditionFailed);
            }
            Err(classify(operation, &error))
        }
    }
}

/// Runs one call that has no condition.
pub(super) async fn plain<T, E, R>(
    operation: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<T, Error>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: fmt::Debug + HasStatus,
{
    match run(operation, timeout, call).await? {
        Outcome::Done(output) => Ok(output),
        Outcome::ConditionFailed | Outcome::Retried => Err(Error::new(
            ErrorKind::Backend,
            CallFailed::new(operation, "an unexpected condition failure"),
        )),
    }
}

/// The HTTP status of a raw response, where there is one.
pub(super) trait HasStatus {
    fn status(&self) -> Option<u16>;
}

impl HasStatus for aws_sdk_dynamodb::config::http::HttpResponse {
    fn status(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

/// The store error a failed call is.
pub(super) fn classify<E, R>(operation: &'static str, error: &SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: fmt::Debug + HasStatus,
{
    let mut code = None;
    let (kind, detail) = match error {
        SdkError::TimeoutError(_) => (ErrorKind::Timeout, "timed out".to_owned()),
        SdkError::DispatchFailure(failure) => {
            let kind = if failure.is_timeout() {
                ErrorKind::Timeout
            } else if failure.is_io() {
                // Refused, reset, closed: DynamoDB (or the stand-in) is not there, or not yet
                // back.
                ErrorKind::Unavailable
            } else if failure.is_user() {
                // No credentials, or an endpoint that cannot be used: configuration.
                ErrorKind::Backend
            } else {
                ErrorKind::Unavailable
            };
            // The transport's own words: addresses and I/O errors, nothing of the request.
            (kind, DisplayErrorContext(error).to_string())
        }
        // A response that could not be read: cut short by a dropped connection.
        SdkError::ResponseError(_) => (
            ErrorKind::Unavailable,
            "the response could not be read".to_owned(),
        ),
        SdkError::ServiceError(service) => {
            code = error.code().map(str::to_owned);
            let name = error.code().unwrap_or("an unnamed error");
            let status = service.raw().status();
            let transient = TRANSIENT_CODES.contains(&name) || status.is_some_and(|s| s >= 500);
            let kind = if transient {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Backend
            };
            let detail = match status {
                Some(status) => format!("{name} (HTTP {status})"),
                None => name.to_owned(),
            };
            (kind, detail)
        }
        // Building the request failed: a bug or a configuration this store cannot use.
        _ => (
            ErrorKind::Backend,
            "the request could not be built".to_owned(),
        ),
    };
    Error::new(
        kind,
        CallFailed {
            operation,
            code,
            detail,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_call_and_never_a_message() {
        let failed = CallFailed::new("PutItem", "ValidationException (HTTP 400)");
        assert_eq!(
            failed.to_string(),
            "DynamoDB PutItem failed: ValidationException (HTTP 400)"
        );
    }
}
