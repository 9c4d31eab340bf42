//! [`ResponseFuture`]: runs the handler, then commits the session before the response leaves.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, SET_COOKIE};
use http::{HeaderValue, Response};
use pin_project_lite::pin_project;

use crate::error::{FromHandler, Report};
use crate::session::{Commit, Outcome, Session};

type CommitFuture<B> = Pin<Box<dyn Future<Output = Response<B>> + Send>>;

pin_project! {
    /// The response future of [`SessionService`](super::SessionService).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Handler {
            #[pin]
            future: F,
            session: Option<Session>,
        },
        Commit {
            future: CommitFuture<B>,
        },
        /// Answered without the handler (a token header over the limit).
        Rejected {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn new(future: F, session: Session) -> Self {
        ResponseFuture {
            state: State::Handler {
                future,
                session: Some(session),
            },
        }
    }

    pub(crate) fn rejected(response: Response<B>) -> Self {
        ResponseFuture {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }

    pub(crate) fn passthrough(future: F) -> Self {
        ResponseFuture {
            state: State::Handler {
                future,
                session: None,
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<Bytes> + Send + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Handler { future, session } => {
                    let response = ready!(future.poll(cx))?;
                    // Only a used session has anything to commit: untouched requests pay no
                    // allocation, lock or store call here.
                    let Some(session) = session.take().filter(Session::was_used) else {
                        return Poll::Ready(Ok(response));
                    };
                    match session.commit() {
                        Commit::Ready(outcome) => {
                            return Poll::Ready(Ok(apply(&session, outcome, response)));
                        }
                        Commit::Later(pending) => {
                            let future = Box::pin(async move {
                                let outcome = session.commit_later(pending).await;
                                apply(&session, outcome, response)
                            });
                            this.state.set(State::Commit { future });
                        }
                    }
                }
                StateProj::Commit { future } => return future.as_mut().poll(cx).map(Ok),
                StateProj::Rejected { response } => {
                    let response = response.take().expect("a future is not polled after Ready");
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

/// Sets the cookie the commit decided on, or swaps in the failure response when the store
/// failed; logs what went wrong, once.
fn apply<B: From<Bytes>>(
    session: &Session,
    outcome: Outcome,
    mut response: Response<B>,
) -> Response<B> {
    for warning in &outcome.warnings {
        tracing::warn!(error = %Report(warning), "session store call failed");
        session.emit_store_error(warning);
    }
    if let Some(failure) = outcome.failure {
        session.emit_store_error(&failure);
        tracing::error!(
            error = %Report(&failure),
            transient = failure.is_transient(),
            "session store failed; answering with the failure response"
        );
        let mut failed = session.failure_response(&failure).map(B::from);
        failed.extensions_mut().insert(failure);
        return failed;
    }
    // A session error the handler answered with (a value of the wrong type, say): the client
    // got the opaque status; the log says which key and why.
    if let Some(FromHandler(error)) = response.extensions_mut().remove::<FromHandler>() {
        tracing::error!(error = %Report(&error), "session error in the handler");
        response.extensions_mut().insert(error);
    }
    if let Some(cookie) = outcome.set_cookie {
        // Appended, so Set-Cookie headers the handler wrote are kept (ours goes last, as express).
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    if let Some((name, token)) = outcome.token {
        let headers = response.headers_mut();
        headers.insert(name, token);
        // A token in a cached answer would hand the session to whoever gets the copy.
        if !headers.contains_key(CACHE_CONTROL) {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    if let Some(warning) = outcome.warnings.into_iter().last() {
        response.extensions_mut().insert(warning);
    }
    response
}
