//! Arbitrary bytes as the `Cookie` header of a request through the real `SessionLayer` over a
//! `MemoryStore` that holds one session. The answer is always 200 with no `Set-Cookie` (the
//! handler only reads), and the stored session's data comes back exactly when the header's first
//! `connect.sid` cookie is that session's signed cookie; any other header gets a fresh session.
#![no_main]

mod shared;

use std::convert::Infallible;

use bytes::Bytes;
use cloakroom::fuzzing::find_cookie;
use cloakroom::{Id, MemoryStore, Record, Session, SessionLayer, SessionStore};
use http::{HeaderValue, Request, Response, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

type App = BoxCloneService<Request<()>, Response<Bytes>, Infallible>;

/// "known" when the session holds the stored session's data, "new" when it is empty.
async fn handler(request: Request<()>) -> Result<Response<Bytes>, Infallible> {
    let session = request
        .extensions()
        .get::<Session>()
        .cloned()
        .expect("the layer puts a session in the request");
    let body = match session.get::<String>("user").await {
        Ok(Some(user)) if user == "fuzz" => "known",
        Ok(None) => "new",
        Ok(Some(_)) => "someone else",
        Err(_) => "error",
    };
    Ok(Response::new(Bytes::from_static(body.as_bytes())))
}

fn setup() -> (Runtime, App) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let store = MemoryStore::new();
    let mut record = Record::default();
    record.data_mut().insert("user".to_owned(), "fuzz".into());
    runtime
        .block_on(store.set(
            &Id::from_string(shared::KNOWN_ID),
            &record,
            cloakroom::store::Condition::absent(),
        ))
        .expect("the memory store takes the known session");
    // The fuzzing secret is short, and the seeds are signed with it.
    let layer = SessionLayer::builder(store)
        .with_secret(shared::SECRET)
        .with_short_secrets_allowed(true)
        .build()
        .expect("a valid configuration");
    let app = BoxCloneService::new(layer.layer(service_fn(handler)));
    (runtime, app)
}

thread_local! {
    static APP: (Runtime, App) = setup();
}

fuzz_target!(|data: &[u8]| {
    let Ok(cookie) = HeaderValue::from_bytes(data) else {
        return;
    };
    let secrets = shared::secrets();
    let expected = match find_cookie(std::slice::from_ref(&cookie), shared::COOKIE_NAME) {
        Some(value) if secrets.unsign(&value) == Some(shared::KNOWN_ID) => "known",
        _ => "new",
    };
    let request = Request::get("/")
        .header(header::COOKIE, cookie)
        .body(())
        .expect("a valid request");
    let response = APP.with(|(runtime, app)| {
        runtime
            .block_on(app.clone().oneshot(request))
            .expect("infallible")
    });
    assert!(response.status() == StatusCode::OK, "not a 200");
    assert!(
        response.body().as_ref() == expected.as_bytes(),
        "the wrong session answered"
    );
    assert!(
        !response.headers().contains_key(header::SET_COOKIE),
        "a read-only request set a cookie"
    );
});
