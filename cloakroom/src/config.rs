//! express-session's options: the cookie template and the rules, validated once when the layer is
//! built.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cookie;
use crate::events::Hooks;
use crate::record::{Priority, SameSite, SessionCookie};
use crate::time::Timestamp;
use crate::transport::Transport;

/// The template for each new session's cookie: express's `cookie` option.
///
/// Sessions that already exist keep the settings they were created with (they are stored with
/// the session), as in express.
///
/// ```
/// use std::time::Duration;
/// use cloakroom::{CookieOptions, SameSite};
///
/// let cookie = CookieOptions::new()
///     .with_max_age(Duration::from_secs(30 * 60))
///     .with_same_site(SameSite::Lax)
///     .with_secure_auto();
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct CookieOptions {
    domain: Option<String>,
    lifetime: Lifetime,
    http_only: bool,
    partitioned: Option<bool>,
    path: String,
    priority: Option<Priority>,
    same_site: Option<Resolved<SameSite>>,
    secure: Option<Resolved<bool>>,
}

/// How long a new session's cookie lives. express: `maxAge` and `expires`, the last one set wins.
#[derive(Clone, Copy, Debug)]
enum Lifetime {
    BrowserSession,
    MaxAge(Duration),
    Until(SystemTime),
}

/// A fixed value, or express's `'auto'`: decided per session from whether the request that
/// created it was secure, then stored.
#[derive(Clone, Copy, Debug)]
enum Resolved<T> {
    Fixed(T),
    Auto,
}

impl Default for CookieOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl CookieOptions {
    /// express's defaults: path `/`, `HttpOnly`, no `Secure`, no `SameSite`, and no expiry (a
    /// browser-session cookie).
    pub fn new() -> Self {
        CookieOptions {
            domain: None,
            lifetime: Lifetime::BrowserSession,
            http_only: true,
            partitioned: None,
            path: "/".to_owned(),
            priority: None,
            same_site: None,
            secure: None,
        }
    }

    /// `Domain`: the cookie is sent to this domain and its subdomains.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// express's `cookie.maxAge`: each session's cookie expires this long after it was last
    /// refreshed. Replaces an earlier [`with_expires`](Self::with_expires).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.lifetime = Lifetime::MaxAge(max_age);
        self
    }

    /// express's `cookie.expires`: a fixed expiry for every new session. Replaces an earlier
    /// [`with_max_age`](Self::with_max_age). express advises `max_age` instead.
    pub fn with_expires(mut self, expires: SystemTime) -> Self {
        self.lifetime = Lifetime::Until(expires);
        self
    }

    /// A browser-session cookie (no `Expires`), the default. The store still expires the record
    /// after its own default lifetime.
    pub fn with_browser_session(mut self) -> Self {
        self.lifetime = Lifetime::BrowserSession;
        self
    }

    /// `HttpOnly` (default true).
    ///
    /// # Security
    /// Turning it off lets page scripts, and so any XSS, read the session cookie.
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// `Partitioned` (CHIPS).
    pub fn with_partitioned(mut self, partitioned: bool) -> Self {
        self.partitioned = Some(partitioned);
        self
    }

    /// `Path` (default `/`). Also a gate, as in express: the middleware ignores requests whose
    /// path does not start with it (a plain prefix test, so `/foo` also covers `/foobar`).
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// `Priority`.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// `SameSite`.
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = Some(Resolved::Fixed(same_site));
        self
    }

    /// express's `sameSite: 'auto'`: `None` for sessions created over a secure connection,
    /// `Lax` otherwise, decided once per session and stored.
    pub fn with_same_site_auto(mut self) -> Self {
        self.same_site = Some(Resolved::Auto);
        self
    }

    /// `Secure`. A secure cookie is not sent on a plain-HTTP request (the session is still saved,
    /// as in express); see [`with_proxy`](crate::SessionLayerBuilder::with_proxy).
    ///
    /// # Security
    /// Leaving it off lets the cookie travel over plain HTTP, where it can be read.
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = Some(Resolved::Fixed(secure));
        self
    }

    /// express's `secure: 'auto'`: `Secure` for sessions created over a secure connection,
    /// decided once per session and stored.
    pub fn with_secure_auto(mut self) -> Self {
        self.secure = Some(Resolved::Auto);
        self
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// A new session's cookie, with `auto` values resolved for this request.
    pub(crate) fn session_cookie(&self, now: Timestamp, secure_request: bool) -> SessionCookie {
        let mut cookie = SessionCookie::default();
        cookie.set_domain(self.domain.clone());
        cookie.set_http_only(self.http_only);
        cookie.set_partitioned(self.partitioned);
        cookie.set_path(self.path.clone());
        cookie.set_priority(self.priority);
        cookie.set_same_site(self.same_site.map(|same_site| match same_site {
            Resolved::Fixed(same_site) => same_site,
            Resolved::Auto if secure_request => SameSite::None,
            Resolved::Auto => SameSite::Lax,
        }));
        cookie.set_secure(self.secure.map(|secure| match secure {
            Resolved::Fixed(secure) => secure,
            Resolved::Auto => secure_request,
        }));
        match self.lifetime {
            Lifetime::BrowserSession => {}
            Lifetime::MaxAge(max_age) => cookie.set_max_age_at(Some(max_age), now),
            Lifetime::Until(expires) => {
                cookie.set_expires(Some(Timestamp::from_system_time(expires)));
            }
        }
        cookie
    }

    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        if let Some(domain) = &self.domain
            && !cookie::is_valid_domain(domain)
        {
            return Err(ConfigError::InvalidDomain);
        }
        if !cookie::is_valid_path(&self.path) || self.path.is_empty() {
            return Err(ConfigError::InvalidPath);
        }
        self.check_browser_rules(name)
    }

    /// The rules browsers enforce on a cookie's name and attributes: a cookie that breaks one
    /// is dropped by the browser without a word, so every session would look new. `secure:
    /// auto` counts as `Secure`: it is set on every secure request, and browsers take no
    /// `Secure` (or prefixed) cookie from a plain-HTTP page anyway.
    fn check_browser_rules(&self, name: &str) -> Result<(), ConfigError> {
        use ConfigError::RejectedByBrowsers;
        let secure = matches!(self.secure, Some(Resolved::Fixed(true) | Resolved::Auto));
        // Browsers compare the prefixes case-insensitively.
        let has_prefix = |prefix: &str| {
            name.get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
        };
        if has_prefix("__Host-") && (!secure || self.domain.is_some() || self.path != "/") {
            return Err(RejectedByBrowsers(
                "a `__Host-` cookie must be Secure, have no Domain, and have the path `/`",
            ));
        }
        if has_prefix("__Secure-") && !secure {
            return Err(RejectedByBrowsers("a `__Secure-` cookie must be Secure"));
        }
        let may_be_same_site_none = matches!(
            self.same_site,
            Some(Resolved::Fixed(SameSite::None) | Resolved::Auto)
        );
        if may_be_same_site_none && !secure {
            return Err(RejectedByBrowsers(
                "a `SameSite=None` cookie must be Secure",
            ));
        }
        if self.partitioned == Some(true) && !secure {
            return Err(RejectedByBrowsers("a `Partitioned` cookie must be Secure"));
        }
        Ok(())
    }
}

/// express's `unset`: what happens to the stored session when the handler calls
/// [`Session::unset`](crate::Session::unset) (express: `req.session = null`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unset {
    /// Leave the stored session as it was; this request's changes are dropped (the default).
    #[default]
    Keep,
    /// Destroy the stored session when the response is sent.
    Destroy,
}

/// Makes a session id for a new session: express's `genid`.
pub(crate) type Genid = Arc<dyn Fn(&http::Request<()>) -> String + Send + Sync>;

/// The fewest bytes a secret may have, unless short secrets are allowed: the size of the
/// HMAC-SHA256 key, so the key, not the secret, bounds what a guess has to cover.
pub(crate) const MIN_SECRET_LEN: usize = 32;

/// Why a session layer could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No secret was given. express: `secret option required for sessions`.
    #[error("secret option required for sessions")]
    MissingSecret,
    /// A secret was empty, or the list of secrets was.
    #[error("session secrets must not be empty")]
    EmptySecret,
    /// A secret was shorter than 32 bytes, and short secrets were not allowed.
    #[error(
        "session secrets must be at least 32 bytes (with_short_secrets_allowed(true) accepts \
         the short secret of an existing Express deployment)"
    )]
    ShortSecret,
    /// The cookie name is not a valid token.
    #[error("cookie name is invalid")]
    InvalidName,
    /// The cookie domain is not a valid domain.
    #[error("cookie domain is invalid")]
    InvalidDomain,
    /// The cookie path is empty, or has a `;` or a character outside printable ASCII.
    #[error("cookie path is invalid")]
    InvalidPath,
    /// The cookie's name and attributes break a rule browsers enforce (a `__Host-` or
    /// `__Secure-` name, `SameSite=None` or `Partitioned`, each without `Secure`), so browsers
    /// would drop it. The message says which rule.
    #[error("browsers would reject this session cookie: {0}")]
    RejectedByBrowsers(&'static str),
    /// The cookie transport was turned off and no token header turned on: the session id
    /// would have no way to travel.
    #[error("with the cookie off, sessions need a token header (with_header_transport)")]
    NoTransport,
}

/// Every option of a layer but its secrets, in one place: the builder sets them, `build`
/// validates them, and the middleware and the decision rules read them.
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) cookie: CookieOptions,
    pub(crate) genid: Option<Genid>,
    pub(crate) proxy: bool,
    pub(crate) resave: bool,
    pub(crate) save_uninitialized: bool,
    pub(crate) rolling: bool,
    pub(crate) unset: Unset,
    pub(crate) touch_after: Duration,
    pub(crate) timeouts: Timeouts,
    pub(crate) transport: Transport,
    pub(crate) hooks: Hooks,
}

/// The session timeouts a layer enforces on load (see `session::lifetime`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Timeouts {
    /// Ends a session unseen for this long.
    pub(crate) idle: Option<Duration>,
    /// Ends a session this long after it was created, however active.
    pub(crate) absolute: Option<Duration>,
}

impl Timeouts {
    pub(crate) fn any(self) -> bool {
        self.idle.is_some() || self.absolute.is_some()
    }
}

impl Default for Config {
    /// express-session's defaults, except `resave` and `saveUninitialized`, which are false.
    fn default() -> Self {
        Config {
            name: "connect.sid".to_owned(),
            cookie: CookieOptions::new(),
            genid: None,
            proxy: false,
            resave: false,
            save_uninitialized: false,
            rolling: false,
            unset: Unset::Keep,
            touch_after: Duration::ZERO,
            timeouts: Timeouts::default(),
            transport: Transport::default(),
            hooks: Hooks::default(),
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !cookie::is_valid_name(&self.name) {
            return Err(ConfigError::InvalidName);
        }
        if !self.transport.cookie && self.transport.header.is_none() {
            return Err(ConfigError::NoTransport);
        }
        self.cookie.validate(&self.name)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("cookie", &self.cookie)
            .field("genid", &self.genid.as_ref().map(|_| "custom"))
            .field("proxy", &self.proxy)
            .field("resave", &self.resave)
            .field("save_uninitialized", &self.save_uninitialized)
            .field("rolling", &self.rolling)
            .field("unset", &self.unset)
            .field("touch_after", &self.touch_after)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_values_resolve_from_the_request() {
        let options = CookieOptions::new()
            .with_secure_auto()
            .with_same_site_auto();
        let now = Timestamp::now();
        let secure = options.session_cookie(now, true);
        assert_eq!(
            (secure.secure(), secure.same_site()),
            (Some(true), Some(SameSite::None))
        );
        let plain = options.session_cookie(now, false);
        assert_eq!(
            (plain.secure(), plain.same_site()),
            (Some(false), Some(SameSite::Lax))
        );
    }

    fn checked(name: &str, cookie: CookieOptions) -> Result<(), ConfigError> {
        let config = Config {
            name: name.to_owned(),
            cookie,
            ..Config::default()
        };
        config.validate()
    }

    #[test]
    fn cookies_browsers_would_drop_are_refused() {
        let secure = || CookieOptions::new().with_secure(true);
        let refused = [
            ("__Host-sid", CookieOptions::new()),
            ("__Host-sid", CookieOptions::new().with_secure(false)),
            ("__host-sid", CookieOptions::new()),
            ("__Host-sid", secure().with_domain("example.com")),
            ("__Host-sid", secure().with_path("/app")),
            ("__Secure-sid", CookieOptions::new()),
            ("sid", CookieOptions::new().with_same_site(SameSite::None)),
            ("sid", CookieOptions::new().with_same_site_auto()),
            ("sid", CookieOptions::new().with_partitioned(true)),
        ];
        for (name, cookie) in refused {
            let refused = checked(name, cookie.clone());
            assert!(
                matches!(refused, Err(ConfigError::RejectedByBrowsers(_))),
                "{name} {cookie:?}: {refused:?}"
            );
        }
        let accepted = [
            ("__Host-sid", secure()),
            ("__Host-sid", CookieOptions::new().with_secure_auto()),
            (
                "__Secure-sid",
                secure().with_domain("example.com").with_path("/app"),
            ),
            (
                "sid",
                secure()
                    .with_same_site(SameSite::None)
                    .with_partitioned(true),
            ),
            (
                "sid",
                CookieOptions::new()
                    .with_secure_auto()
                    .with_same_site_auto(),
            ),
            ("sid", CookieOptions::new().with_same_site(SameSite::Lax)),
            ("sid", CookieOptions::new().with_partitioned(false)),
        ];
        for (name, cookie) in accepted {
            assert_eq!(checked(name, cookie.clone()), Ok(()), "{name} {cookie:?}");
        }
    }

    #[test]
    fn last_lifetime_wins() {
        let now = Timestamp::now();
        let cookie = CookieOptions::new()
            .with_expires(SystemTime::UNIX_EPOCH)
            .with_max_age(Duration::from_secs(5))
            .session_cookie(now, false);
        assert_eq!(cookie.expires(), Some(now.add_millis(5000)));
        let cookie = CookieOptions::new()
            .with_max_age(Duration::from_secs(5))
            .with_expires(SystemTime::UNIX_EPOCH)
            .session_cookie(now, false);
        assert_eq!(cookie.expires(), Some(Timestamp::EPOCH));
    }

    #[test]
    fn validates_domain_and_path() {
        assert_eq!(
            CookieOptions::new().with_domain("a b").validate("sid"),
            Err(ConfigError::InvalidDomain)
        );
        assert_eq!(
            CookieOptions::new().with_path("/a;b").validate("sid"),
            Err(ConfigError::InvalidPath)
        );
        assert!(
            CookieOptions::new()
                .with_domain(".example.com")
                .validate("sid")
                .is_ok()
        );
    }
}
