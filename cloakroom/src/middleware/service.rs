//! [`SessionService`]: puts a lazy [`Session`] in the request, and commits it after the handler.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use tower_service::Service;

use super::ResponseFuture;
use crate::session::{Context, RequestFacts, Session};
use crate::transport::Presented;

/// Marks a request as having arrived over TLS. Insert it into the request extensions from
/// your TLS acceptor; without it (or [`with_proxy`](crate::SessionLayerBuilder::with_proxy)
/// and `X-Forwarded-Proto: https`) a request counts as insecure.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecureConnection;

/// The service made by [`SessionLayer`](crate::SessionLayer).
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    ctx: Arc<Context>,
}

impl<S> SessionService<S> {
    pub(crate) fn new(inner: S, ctx: Arc<Context>) -> Self {
        SessionService { inner, ctx }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<bytes::Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let config = &self.ctx.config;
        // express's gates: an outer session layer already ran, or the path is not under the
        // cookie's path (a plain prefix test, as express).
        if request.extensions().get::<Session>().is_some()
            || !request.uri().path().starts_with(config.cookie.path())
        {
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        let token = match config.transport.header.as_ref() {
            Some(header) => match header.presented(request.headers()) {
                Presented::Token(value) => Some(value),
                Presented::Nothing => None,
                Presented::TooLarge => return ResponseFuture::rejected(token_too_large()),
            },
            None => None,
        };
        let facts = RequestFacts {
            // With a token header the cookie is not looked at (see `with_header_transport`).
            cookie_header: if token.is_none() && config.transport.cookie {
                cookie_header(request.headers())
            } else {
                None
            },
            token,
            secure: is_secure(&request, config.proxy),
            head: config.genid.as_ref().map(|_| head_of(&request)),
        };
        let session = Session::new(Arc::clone(&self.ctx), facts);
        request.extensions_mut().insert(session.clone());
        ResponseFuture::new(self.inner.call(request), session)
    }
}

/// The answer to a token header over [`MAX_TOKEN_HEADER_LEN`](crate::MAX_TOKEN_HEADER_LEN)
/// bytes.
fn token_too_large<B: From<bytes::Bytes>>() -> Response<B> {
    let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    let mut response = Response::new(B::from(bytes::Bytes::from_static(
        b"Request Header Fields Too Large",
    )));
    *response.status_mut() = status;
    response
}

/// express's `issecure`: TLS, or with `proxy`, the first `X-Forwarded-Proto` value.
fn is_secure<B>(request: &Request<B>, trust_proxy: bool) -> bool {
    if request.extensions().get::<SecureConnection>().is_some() {
        return true;
    }
    trust_proxy
        && request
            .headers()
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The `Cookie` header as one value. HTTP/2 may split it into several headers; they are joined
/// with `; `, as Node does, so the first cookie of a name still wins across them.
fn cookie_header(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(COOKIE).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(first.clone());
    };
    let mut joined = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// The request without its body and extensions, for a custom `genid`.
fn head_of<B>(request: &Request<B>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    *head.headers_mut() = request.headers().clone();
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(proto: Option<&str>) -> Request<()> {
        let mut builder = Request::builder();
        if let Some(proto) = proto {
            builder = builder.header("x-forwarded-proto", proto);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn forwarded_proto_is_trusted_only_with_proxy() {
        assert!(is_secure(&request(Some("https")), true));
        assert!(is_secure(&request(Some(" HTTPS , http")), true));
        assert!(!is_secure(&request(Some("http,https")), true));
        assert!(!is_secure(&request(None), true));
        assert!(!is_secure(&request(Some("https")), false));
    }

    #[test]
    fn split_cookie_headers_are_joined_in_order() {
        let mut headers = HeaderMap::new();
        assert_eq!(cookie_header(&headers), None);
        headers.append(COOKIE, HeaderValue::from_static("a=1"));
        assert_eq!(cookie_header(&headers).unwrap(), "a=1");
        headers.append(COOKIE, HeaderValue::from_static("sid=x"));
        headers.append(COOKIE, HeaderValue::from_static("sid=y"));
        assert_eq!(cookie_header(&headers).unwrap(), "a=1; sid=x; sid=y");
    }

    #[test]
    fn secure_connection_marker_counts_without_proxy() {
        let mut request = request(None);
        request.extensions_mut().insert(SecureConnection);
        assert!(is_secure(&request, false));
    }
}
