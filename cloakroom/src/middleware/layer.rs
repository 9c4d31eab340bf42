//! [`SessionLayer`] and its builder: express-session's options, by express's names.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use tower_layer::Layer;

use super::{SessionService, default_failure_response};
use crate::config::{Config, ConfigError, CookieOptions, MIN_SECRET_LEN, Unset};
use crate::error::Error;
use crate::events::SessionEvent;
use crate::session::{Context, FailureHandler, Locking, SessionLock, WriteLocks};
use crate::signing::Secrets;
use crate::store::{LockStore, SessionStore};
use crate::transport::TokenHeader;

/// Adds a [`Session`](crate::Session) to every request under the cookie path.
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use cloakroom::{CookieOptions, MemoryStore, Session, SessionLayer};
///
/// # fn main() -> Result<(), cloakroom::ConfigError> {
/// let sessions = SessionLayer::builder(MemoryStore::new())
///     .with_secret("keyboard cat (use a real secret)")
///     .with_cookie(CookieOptions::new().with_max_age(Duration::from_secs(30 * 60)))
///     .build()?;
/// let app: Router = Router::new()
///     .route("/", get(|session: Session| async move {
///         let views: u64 = session.get("views").await?.unwrap_or(0) + 1;
///         session.insert("views", views).await?;
///         Ok::<_, cloakroom::Error>(format!("Number of views {views}"))
///     }))
///     .layer(sessions);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SessionLayer {
    ctx: Arc<Context>,
}

impl SessionLayer {
    /// Starts configuring a layer that keeps its sessions in `store`.
    ///
    /// Any store will do, including one chosen at run time as `Arc<dyn SessionStore>` (a shared
    /// store is a store). Keep a clone of the store to use it beside the layer (to list or
    /// clear sessions, say): every built-in store is cheap to clone and its clones share one
    /// backend.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cloakroom::{MemoryStore, SessionLayer, SessionStore};
    ///
    /// # fn main() -> Result<(), cloakroom::ConfigError> {
    /// let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    /// let layer = SessionLayer::builder(Arc::clone(&store))
    ///     .with_secret("a test secret, not for production use")
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok(()) }
    /// ```
    pub fn builder<S: SessionStore>(store: S) -> SessionLayerBuilder<S> {
        SessionLayerBuilder {
            store: Arc::new(store),
            secrets: Vec::new(),
            short_secrets_allowed: false,
            config: Config::default(),
            locking: None,
            on_failure: Arc::new(default_failure_response),
            #[cfg(feature = "metrics")]
            metrics_label: None,
        }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, Arc::clone(&self.ctx))
    }
}

/// The options of a [`SessionLayer`], named after express-session's. Nothing is checked until
/// [`build`](Self::build).
///
/// `S` is the store's type, so options that need a store capability (such as
/// [`with_session_lock`](Self::with_session_lock)) exist only for stores that have it.
///
/// Give the router the built layer, `.layer(builder.build()?)`: the builder itself is not a
/// layer, and passing it says "the trait bound `SessionLayerBuilder<…>: Layer<…>` is not
/// satisfied".
#[must_use = "call `.build()` to make the layer"]
pub struct SessionLayerBuilder<S> {
    store: Arc<S>,
    /// Checked and turned into signing keys by `build`.
    secrets: Vec<Vec<u8>>,
    short_secrets_allowed: bool,
    config: Config,
    locking: Option<Arc<Locking>>,
    on_failure: FailureHandler,
    /// With [`with_metrics`](Self::with_metrics): the `store` label.
    #[cfg(feature = "metrics")]
    metrics_label: Option<&'static str>,
}

impl<S> std::fmt::Debug for SessionLayerBuilder<S> {
    // The secrets are left out; the store need not be `Debug`-printable here.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayerBuilder")
            .field("config", &self.config)
            .field("secrets", &self.secrets.len())
            .field("session_lock", &self.locking.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: SessionStore> SessionLayerBuilder<S> {
    /// express's `secret`: the key that signs the session cookie. Required.
    ///
    /// ```
    /// # let builder = cloakroom::SessionLayer::builder(cloakroom::MemoryStore::new());
    /// let builder = builder.with_secret(std::env::var("SESSION_SECRET").unwrap_or_default());
    /// ```
    pub fn with_secret(self, secret: impl AsRef<[u8]>) -> Self {
        self.with_secrets([secret])
    }

    /// express's `secret` as a list, for key rotation: the first signs, every one verifies.
    /// Put the new secret first and keep the old one until the cookies it signed have expired.
    pub fn with_secrets<I>(mut self, secrets: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.secrets = secrets.into_iter().map(|s| s.as_ref().to_vec()).collect();
        self
    }

    /// Accepts secrets shorter than 32 bytes, which [`build`](Self::build) otherwise refuses.
    /// For one case only: sharing sessions with an existing Express deployment whose secret is
    /// short, until it can be rotated (put a long secret first with
    /// [`with_secrets`](Self::with_secrets), keep the short one second while its cookies live,
    /// then drop it and this option).
    ///
    /// # Security
    /// Anyone who learns or guesses a secret can sign any session id. A short or memorable
    /// secret ("keyboard cat", the express docs' example) can be found offline from one cookie.
    /// Use 32 random bytes or more, such as `openssl rand -base64 48`.
    pub fn with_short_secrets_allowed(mut self, allowed: bool) -> Self {
        self.short_secrets_allowed = allowed;
        self
    }

    /// express's `name`: the cookie's name (default `connect.sid`).
    ///
    /// For new apps, `__Host-sid` with [`CookieOptions::with_secure`]`(true)` is the safest
    /// name: browsers take a `__Host-` cookie only from a secure page, for the whole host, never
    /// from a sibling subdomain. That matters because a request that carries two cookies of the
    /// session's name is answered with the first (express's rule), and a subdomain can set a
    /// cookie of the same name for the parent domain with a more specific path, which browsers
    /// send first ("cookie tossing"): it can pin a victim's browser to a session of the
    /// attacker's. `build` refuses a `__Host-` name without `Secure`, with a domain, or with a
    /// path other than `/`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// express's `cookie`: the template for each new session's cookie.
    pub fn with_cookie(mut self, cookie: CookieOptions) -> Self {
        self.config.cookie = cookie;
        self
    }

    /// express's `genid`: makes the id of each new session. The default is 24 bytes from the OS
    /// CSPRNG as 32 base64url characters.
    ///
    /// ```
    /// # let builder = cloakroom::SessionLayer::builder(cloakroom::MemoryStore::new());
    /// let builder = builder.with_genid(|_request| format!("app1-{}", cloakroom::Id::generate().as_str()));
    /// ```
    ///
    /// # Security
    /// An id is the only thing between a client and a session: it must be unpredictable. Mix
    /// in [`Id::generate`](crate::Id::generate) rather than replacing it.
    pub fn with_genid<F>(mut self, genid: F) -> Self
    where
        F: Fn(&http::Request<()>) -> String + Send + Sync + 'static,
    {
        self.config.genid = Some(Arc::new(genid));
        self
    }

    /// express's `proxy: true`: trust the first value of `X-Forwarded-Proto` to tell whether
    /// the request was secure (for `Secure` cookies and the `auto` settings). Without it, only
    /// a [`SecureConnection`](crate::SecureConnection) extension marks a request secure.
    ///
    /// # Security
    /// Turn it on only behind a proxy that sets the header itself; otherwise clients choose.
    pub fn with_proxy(mut self, proxy: bool) -> Self {
        self.config.proxy = proxy;
        self
    }

    /// express's `resave`: save loaded sessions on every request they are used in, even when
    /// unchanged. Default false (express 1 defaults to true, with a deprecation warning).
    pub fn with_resave(mut self, resave: bool) -> Self {
        self.config.resave = resave;
        self
    }

    /// express's `saveUninitialized`: save (and send the cookie of) new sessions the handler
    /// did not change. Default false (express 1 defaults to true, with a deprecation warning).
    pub fn with_save_uninitialized(mut self, save_uninitialized: bool) -> Self {
        self.config.save_uninitialized = save_uninitialized;
        self
    }

    /// express's `rolling`: send the cookie, with a renewed expiry, on every response for an
    /// existing session. Default false.
    pub fn with_rolling(mut self, rolling: bool) -> Self {
        self.config.rolling = rolling;
        self
    }

    /// express's `unset`: what [`Session::unset`](crate::Session::unset) does to the stored
    /// session. Default [`Unset::Keep`].
    pub fn with_unset(mut self, unset: Unset) -> Self {
        self.config.unset = unset;
        self
    }

    /// Skips the end-of-request touch (express refreshes a loaded, unchanged session's expiry in
    /// the store on every request) when the store's expiry was refreshed less than this long
    /// ago, like connect-mongo's `touchAfter`. Default zero: every touch is made, as express.
    ///
    /// A read-only request then costs one store round trip instead of two, at the price of the
    /// stored expiry lagging by up to this much (the session may end this much earlier than the
    /// cookie). Stores that do not report their expiry are always touched.
    ///
    /// ```
    /// # let builder = cloakroom::SessionLayer::builder(cloakroom::MemoryStore::new());
    /// let builder = builder.with_touch_after(std::time::Duration::from_secs(60));
    /// ```
    pub fn with_touch_after(mut self, touch_after: Duration) -> Self {
        self.config.touch_after = touch_after;
        self
    }

    /// Also accepts the session's token in a header, for clients that keep no cookies (an API
    /// client, a mobile app): `Authorization: Bearer <token>` with [`TokenHeader::bearer`], or
    /// a header of your naming with [`TokenHeader::named`]. The token is the cookie's value
    /// (`s:<id>.<signature>`), for the same sessions in the same store.
    ///
    /// A request that carries the token header is served by it alone: its cookie is not looked
    /// at, and a new or regenerated id goes back in the response header (with
    /// `Cache-Control: no-store` unless the handler set one), never in a `Set-Cookie`. A
    /// request with no token header is served by its cookie as usual, and gets a token in the
    /// header only if its handler asks with
    /// [`Session::send_token_header`](crate::Session::send_token_header) (a JSON login
    /// endpoint does): a cookie client's scripts never see a token unasked. With the cookie
    /// off, new tokens always go in the header. A malformed or unsigned token is a bad
    /// cookie's equal: a new session, no error. A token header over
    /// [`MAX_TOKEN_HEADER_LEN`](crate::MAX_TOKEN_HEADER_LEN) bytes is answered 431 at once.
    /// See [`TokenHeader`] for why header clients need no CSRF token.
    ///
    /// ```
    /// # let builder = cloakroom::SessionLayer::builder(cloakroom::MemoryStore::new());
    /// let builder = builder.with_header_transport(cloakroom::TokenHeader::bearer());
    /// ```
    pub fn with_header_transport(mut self, header: TokenHeader) -> Self {
        self.config.transport.header = Some(header);
        self
    }

    /// Turns the cookie off (default on), for a service whose clients all use the
    /// [token header](Self::with_header_transport): no `Set-Cookie` is ever sent, and a
    /// request's cookies are ignored. `build` fails without a token header.
    pub fn with_cookie_transport(mut self, cookie: bool) -> Self {
        self.config.transport.cookie = cookie;
        self
    }

    /// Ends a session that has had no request for `timeout` (OWASP suggests 2 to 5 minutes
    /// for high-value applications, 15 to 30 for others), checked when the session is loaded,
    /// on every store and across processes.
    ///
    /// The time of the last request is kept in the session's data (`cloakroom.seen`, see
    /// [`Session::set_owner`](crate::Session::set_owner) for the layout), brought up to date
    /// at most every quarter of `timeout`, so an active session is never taken for idle. An
    /// ended session is destroyed and the request gets a new, empty one. The store's own
    /// expiry (the cookie's, or the store's TTL) still applies, and whichever comes first ends
    /// the session. An Express app sharing the store does not enforce it.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeouts.idle = Some(timeout);
        self
    }

    /// Ends a session `timeout` after it was created, however active it stays (OWASP: both an
    /// idle and an absolute timeout, the latter 4 to 8 hours for a working day's application).
    ///
    /// The deadline is stored with the session when it is first saved
    /// (`cloakroom.deadline`, milliseconds since the epoch), so it holds across restarts and
    /// processes, and no later setting moves it. Neither `rolling`, a touch, nor
    /// [`regenerate`](crate::Session::regenerate) extends it (regenerate keeps the session's
    /// creation time; [`reset_lifetime`](crate::Session::reset_lifetime) starts it over, as a
    /// fresh sign-in should). A cookie with an expiry never outlasts it: its `expires` is cut
    /// to the deadline, so the browser, the store's TTL and an Express app reading the record
    /// all see the session end then.
    pub fn with_absolute_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeouts.absolute = Some(timeout);
        self
    }

    /// Calls `hook` with every [`SessionEvent`] (created, regenerated, destroyed, expired, store
    /// error), for an audit log or counters, as it happens, before the response goes out. Keep
    /// it quick: it runs in the request. A hook that panics is logged and the request goes on.
    /// Hooks run in the order they were added.
    ///
    /// ```
    /// # let builder = cloakroom::SessionLayer::builder(cloakroom::MemoryStore::new());
    /// use cloakroom::SessionEvent;
    /// let builder = builder.with_hook(|event: &SessionEvent| {
    ///     if let SessionEvent::StoreError { error } = event {
    ///         eprintln!("session store: {error}");
    ///     }
    /// });
    /// ```
    pub fn with_hook<F>(mut self, hook: F) -> Self
    where
        F: Fn(&SessionEvent) + Send + Sync + 'static,
    {
        self.config.hooks.add_sync(hook);
        self
    }

    /// Like [`with_hook`](Self::with_hook), for a hook that awaits (a database write, a
    /// message queue): each call runs in a task of its own, so it never holds up the response,
    /// and a panic in it is logged. Without a tokio runtime it is not called.
    pub fn with_async_hook<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(SessionEvent) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.config.hooks.add_async(hook);
        self
    }

    /// Counts sessions and times every store call through the
    /// [`metrics`](https://docs.rs/metrics) facade, to whatever recorder the application
    /// installs (Prometheus, StatsD, …). Off by default: a layer without it runs no metrics
    /// code at all. Needs the `metrics` feature.
    ///
    /// | name | kind | labels | counts |
    /// |---|---|---|---|
    /// | `cloakroom_sessions_created_total` | counter | | new sessions saved |
    /// | `cloakroom_sessions_regenerated_total` | counter | | sessions replaced by `regenerate` |
    /// | `cloakroom_sessions_destroyed_total` | counter | | sessions destroyed by their request |
    /// | `cloakroom_sessions_expired_total` | counter | | signed ids whose session had ended |
    /// | `cloakroom_sessions_loaded_total` | counter | `store` | loads that found a session |
    /// | `cloakroom_sessions_saved_total` | counter | `store` | writes made |
    /// | `cloakroom_sessions_touched_total` | counter | `store` | touches made |
    /// | `cloakroom_save_conflicts_total` | counter | `store` | compare-and-set conflicts (each retried, or refused with 409) |
    /// | `cloakroom_store_call_seconds` | histogram | `store`, `call` | each store call's duration |
    /// | `cloakroom_store_errors_total` | counter | `store`, `call` | failed store calls |
    ///
    /// `store` is the store's type name (`RedisStore`; `dyn` for a store given as a trait
    /// object), `call` one of `get`, `set`, `destroy`, `touch`. No label holds an id or
    /// session data.
    ///
    /// Install the recorder before building the layer: the layer registers its metrics once,
    /// with the recorder installed then, so that a request only bumps counters. Without a
    /// recorder the counters are no-ops and store calls are not timed: what is left is a
    /// branch per store call (`cargo bench --bench instructions` measures it). The metrics
    /// crate cannot say whether a recorder is installed, so a zero-sized recorder (its no-op
    /// one is) is taken for none: it gets the counters, not the timings.
    #[cfg(feature = "metrics")]
    pub fn with_metrics(mut self) -> Self {
        self.metrics_label = Some(crate::metrics::store_label::<S>());
        self
    }

    /// Builds the response sent when the store fails while loading or saving, instead of the
    /// default (503 when transient, else 500, with the reason phrase as the body). The error is
    /// attached to the response extensions either way.
    ///
    /// ```
    /// # let builder = cloakroom::SessionLayer::builder(cloakroom::MemoryStore::new());
    /// let builder = builder.with_failure_response(|error| {
    ///     let mut response = http::Response::new(bytes::Bytes::from_static(b"try again soon"));
    ///     *response.status_mut() = error.status();
    ///     response
    /// });
    /// ```
    pub fn with_failure_response<F>(mut self, on_failure: F) -> Self
    where
        F: Fn(&Error) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.on_failure = Arc::new(on_failure);
        self
    }

    /// Checks the options and builds the layer.
    ///
    /// # Errors
    /// [`ConfigError::MissingSecret`] without a secret, [`ConfigError::EmptySecret`] for an
    /// empty one, [`ConfigError::ShortSecret`] for one under 32 bytes (unless
    /// [`with_short_secrets_allowed`](Self::with_short_secrets_allowed)); an invalid cookie
    /// name, domain or path; [`ConfigError::RejectedByBrowsers`] for a cookie browsers would
    /// drop.
    pub fn build(self) -> Result<SessionLayer, ConfigError> {
        if self.secrets.is_empty() {
            return Err(ConfigError::MissingSecret);
        }
        let secrets = Secrets::new(&self.secrets).ok_or(ConfigError::EmptySecret)?;
        if !self.short_secrets_allowed
            && self
                .secrets
                .iter()
                .any(|secret| secret.len() < MIN_SECRET_LEN)
        {
            return Err(ConfigError::ShortSecret);
        }
        self.config.validate()?;
        #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
        let mut config = self.config;
        #[cfg(feature = "metrics")]
        let metrics = self.metrics_label.map(|label| {
            let lifecycle = crate::metrics::Lifecycle::new();
            config.hooks.add_sync(move |event| lifecycle.count(event));
            crate::metrics::StoreMetrics::new(label)
        });
        Ok(SessionLayer {
            ctx: Arc::new(Context {
                config,
                secrets,
                store: self.store,
                #[cfg(feature = "metrics")]
                metrics,
                on_failure: self.on_failure,
                write_locks: WriteLocks::new(),
                locking: self.locking,
            }),
        })
    }
}

impl<S: LockStore> SessionLayerBuilder<S> {
    /// Turns on the exclusive session lock: one request at a time per session, across every
    /// process sharing the store, as PHP and ASP.NET sessions work. Off by default. See
    /// [`SessionLock`] for what it does and costs.
    ///
    /// Without it, concurrent requests on one session still never lose an update made with
    /// [`Session::update`](crate::Session::update), and a plain `get` then `insert` of a key
    /// another request changed meanwhile fails with [`Error::Conflict`] rather than
    /// overwriting. With it, the plain way is safe too, at the price of requests on one session
    /// waiting for each other.
    pub fn with_session_lock(mut self, lock: SessionLock) -> Self {
        let store: Arc<dyn LockStore> = self.store.clone();
        self.locking = Some(Arc::new(Locking::new(store, lock)));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[test]
    fn a_secret_is_required_when_building() {
        let missing = SessionLayer::builder(MemoryStore::new()).build();
        assert_eq!(missing.unwrap_err(), ConfigError::MissingSecret);
        let empty = SessionLayer::builder(MemoryStore::new())
            .with_secrets(Vec::<String>::new())
            .build();
        assert_eq!(empty.unwrap_err(), ConfigError::MissingSecret);
        let blank = SessionLayer::builder(MemoryStore::new())
            .with_secret("")
            .build();
        assert_eq!(blank.unwrap_err(), ConfigError::EmptySecret);
    }

    #[test]
    fn a_short_secret_needs_the_opt_in() {
        let build = |secrets: &[&str], allowed: bool| {
            SessionLayer::builder(MemoryStore::new())
                .with_secrets(secrets)
                .with_short_secrets_allowed(allowed)
                .build()
                .map(drop)
        };
        let long = "x".repeat(MIN_SECRET_LEN);
        let short = &long[1..];
        assert_eq!(build(&[short], false), Err(ConfigError::ShortSecret));
        assert_eq!(build(&["s"], false), Err(ConfigError::ShortSecret));
        // An old, short secret still verifies cookies: it is as weak as a signing one.
        assert_eq!(build(&[&long, short], false), Err(ConfigError::ShortSecret));
        assert_eq!(build(&[&long], false), Ok(()));
        assert_eq!(build(&[short], true), Ok(()));
        assert_eq!(build(&[&long, "keyboard cat"], true), Ok(()));
        assert_eq!(build(&[""], true), Err(ConfigError::EmptySecret));
    }

    #[test]
    fn cookie_name_is_validated() {
        let bad = SessionLayer::builder(MemoryStore::new())
            .with_secret("a test secret, at least 32 bytes long")
            .with_name("bad name")
            .build();
        assert_eq!(bad.unwrap_err(), ConfigError::InvalidName);
    }
}
