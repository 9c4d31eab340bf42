//! What happens to a session when its response goes out: save, touch, send the cookie, expire
//! it, destroy. Every rule lives in one function, [`decide`], written with express-session's own
//! names (`index.js`), so each of its tests reads as an express behaviour.

use crate::config::{Config, Unset};
use crate::time::Timestamp;

/// What is known at the end of the request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Facts {
    /// The live session, or `None` after `destroy` / `unset` (express: `req.session == null`).
    pub(crate) session: Option<SessionFacts>,
    /// The handler called `unset` (express: assigned `req.session = null`).
    pub(crate) unset_called: bool,
    /// … on the session the request's cookie names.
    pub(crate) cookie_session_unset: bool,
    /// The request's cookie names a session the handler destroyed.
    pub(crate) cookie_session_destroyed: bool,
    /// The request came over a secure connection (express's `issecure`).
    pub(crate) request_secure: bool,
}

/// express's per-session predicates, and what the touch throttle needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionFacts {
    /// `cookieId !== req.sessionID`: the client does not hold this session's cookie yet.
    pub(crate) is_new: bool,
    /// `isModified`: the id changed, or the data (or the session's cookie settings) differ from
    /// what was loaded or generated.
    pub(crate) is_modified: bool,
    /// `isSaved`: the store already holds exactly this data under this id.
    pub(crate) is_saved: bool,
    /// `savedHash` is set: the session was loaded with `resave: false`, or saved explicitly.
    pub(crate) has_saved_hash: bool,
    /// `cookie.expires != null`: not a browser-session cookie.
    pub(crate) has_expires: bool,
    /// `cookie.secure`: the cookie may only travel over a secure connection.
    pub(crate) secure_cookie: bool,
    /// When the store drops the record, as it last said (`None`: it did not say).
    pub(crate) stored_expiry: Option<Timestamp>,
    /// When the store would drop the record if it were touched now.
    pub(crate) touched_expiry: Option<Timestamp>,
}

/// What to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Decision {
    /// `shouldSetCookie`, and the connection allows it: send the session's cookie.
    pub(crate) set_cookie: bool,
    /// Send an expired cookie, so the client drops one naming a destroyed session.
    pub(crate) expire_cookie: bool,
    /// `shouldSave`.
    pub(crate) save: bool,
    /// `shouldTouch`, and the store's expiry is stale enough: refresh it without writing data.
    pub(crate) touch: bool,
    /// `shouldDestroy`: the handler unset the session and `unset` is `destroy`.
    pub(crate) destroy: bool,
}

/// express-session's decisions, plus cloakroom's touch throttle
/// ([`with_touch_after`](crate::SessionLayerBuilder::with_touch_after)).
pub(crate) fn decide(config: &Config, facts: &Facts) -> Decision {
    let should_destroy = facts.unset_called && config.unset == Unset::Destroy;
    // express 2 (and cloakroom) expire the cookie of a session that no longer exists.
    let expire_cookie =
        facts.cookie_session_destroyed || (should_destroy && facts.cookie_session_unset);
    let Some(session) = facts.session else {
        return Decision {
            expire_cookie,
            destroy: should_destroy,
            ..Decision::default()
        };
    };
    let should_set_cookie = if session.is_new {
        config.save_uninitialized || session.is_modified
    } else {
        config.rolling || (session.has_expires && session.is_modified)
    };
    // express: "not secured": a Secure cookie is never sent over a plain connection (the
    // session is still saved).
    let set_cookie = should_set_cookie && (!session.secure_cookie || facts.request_secure);
    let should_save = if !config.save_uninitialized && !session.has_saved_hash && session.is_new {
        session.is_modified
    } else {
        !session.is_saved
    };
    let should_touch = !session.is_new && !should_save;
    Decision {
        set_cookie,
        expire_cookie: !set_cookie && expire_cookie,
        save: should_save,
        touch: should_touch && touch_is_due(config, &session),
        destroy: should_destroy,
    }
}

/// The touch throttle: a touch is due unless it would move the store's expiry by less than
/// `touch_after` (zero: always due, as express). A store that does not say when the record
/// expires is always touched.
fn touch_is_due(config: &Config, session: &SessionFacts) -> bool {
    if config.touch_after.is_zero() {
        return true;
    }
    match (session.stored_expiry, session.touched_expiry) {
        (Some(stored), Some(touched)) => {
            touched.millis_since(stored) >= crate::time::millis(config.touch_after)
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// express-session's option matrix (verified against express-session 1.19 with MemoryStore;
    /// `docs/behaviour.md`): the first request comes without a cookie, the second with the
    /// cookie the first returned.
    struct Options {
        resave: bool,
        save_uninitialized: bool,
        rolling: bool,
    }

    fn config(o: &Options) -> Config {
        Config {
            resave: o.resave,
            save_uninitialized: o.save_uninitialized,
            rolling: o.rolling,
            ..Config::default()
        }
    }

    /// A session's facts with no cookie or throttle concerns.
    fn session(
        is_new: bool,
        is_modified: bool,
        is_saved: bool,
        has_saved_hash: bool,
    ) -> SessionFacts {
        SessionFacts {
            is_new,
            is_modified,
            is_saved,
            has_saved_hash,
            has_expires: true,
            secure_cookie: false,
            stored_expiry: None,
            touched_expiry: None,
        }
    }

    fn facts(session: Option<SessionFacts>) -> Facts {
        Facts {
            session,
            unset_called: false,
            cookie_session_unset: false,
            cookie_session_destroyed: false,
            request_secure: false,
        }
    }

    /// A first request: a freshly generated session, never saved.
    fn first_request(o: &Options, modified: bool) -> Decision {
        decide(
            &config(o),
            &facts(Some(session(true, modified, false, false))),
        )
    }

    /// A second request on a loaded session. `resave: false` sets `savedHash` at load, so the
    /// session counts as saved unless modified.
    fn second_request(o: &Options, modified: bool, has_expires: bool) -> Decision {
        let session = SessionFacts {
            has_expires,
            ..session(false, modified, !o.resave && !modified, !o.resave)
        };
        decide(&config(o), &facts(Some(session)))
    }

    /// A cell of the matrix: cookie sent, and the store call (`set`, `touch` or none).
    fn cell(decision: Decision) -> (bool, &'static str) {
        let call = match (decision.save, decision.touch) {
            (true, _) => "set",
            (false, true) => "touch",
            (false, false) => "-",
        };
        (decision.set_cookie, call)
    }

    /// (resave, saveUninitialized, rolling) → req1 unmodified, req2 unmodified, req2 modified.
    type Row = ((bool, bool, bool), [(bool, &'static str); 3]);
    const MATRIX: [Row; 8] = [
        (
            (true, true, false),
            [(true, "set"), (false, "set"), (true, "set")],
        ),
        (
            (true, true, true),
            [(true, "set"), (true, "set"), (true, "set")],
        ),
        (
            (true, false, false),
            [(false, "-"), (false, "set"), (true, "set")],
        ),
        (
            (true, false, true),
            [(false, "-"), (true, "set"), (true, "set")],
        ),
        (
            (false, true, false),
            [(true, "set"), (false, "touch"), (true, "set")],
        ),
        (
            (false, true, true),
            [(true, "set"), (true, "touch"), (true, "set")],
        ),
        (
            (false, false, false),
            [(false, "-"), (false, "touch"), (true, "set")],
        ),
        (
            (false, false, true),
            [(false, "-"), (true, "touch"), (true, "set")],
        ),
    ];

    #[test]
    fn every_cell_of_the_express_matrix() {
        for ((resave, save_uninitialized, rolling), [req1, req2_unmod, req2_mod]) in MATRIX {
            let o = Options {
                resave,
                save_uninitialized,
                rolling,
            };
            let row =
                format!("resave={resave} saveUninitialized={save_uninitialized} rolling={rolling}");
            assert_eq!(
                cell(first_request(&o, false)),
                req1,
                "{row}: req1 unmodified"
            );
            // A modified first request always saves and sends the cookie.
            assert_eq!(
                cell(first_request(&o, true)),
                (true, "set"),
                "{row}: req1 modified"
            );
            assert_eq!(
                cell(second_request(&o, false, true)),
                req2_unmod,
                "{row}: req2 unmodified"
            );
            assert_eq!(
                cell(second_request(&o, true, true)),
                req2_mod,
                "{row}: req2 modified"
            );
        }
    }

    #[test]
    fn browser_session_cookies_are_not_resent_on_modification_unless_rolling() {
        // The matrix with `cookie: {}`: identical, except "req2 modified, rolling=false" sends no
        // cookie (the browser already holds a cookie that never expires).
        for ((resave, save_uninitialized, rolling), [_, req2_unmod, req2_mod]) in MATRIX {
            let o = Options {
                resave,
                save_uninitialized,
                rolling,
            };
            let expected_mod = if rolling {
                req2_mod
            } else {
                (false, req2_mod.1)
            };
            assert_eq!(cell(second_request(&o, true, false)), expected_mod);
            assert_eq!(cell(second_request(&o, false, false)), req2_unmod);
        }
    }

    #[test]
    fn an_explicit_save_prevents_the_end_of_request_save() {
        let o = Options {
            resave: true,
            save_uninitialized: false,
            rolling: false,
        };
        // New session saved by the handler: no second set, no touch, cookie still sent.
        let new = decide(&config(&o), &facts(Some(session(true, true, true, true))));
        assert_eq!(cell(new), (true, "-"));
        // Existing session saved by the handler: express touches at the end.
        let existing = decide(&config(&o), &facts(Some(session(false, false, true, true))));
        assert_eq!(cell(existing), (false, "touch"));
    }

    #[test]
    fn unset_destroys_only_when_configured() {
        let mut config = Config {
            save_uninitialized: true,
            rolling: true,
            ..Config::default()
        };
        let unset = Facts {
            unset_called: true,
            cookie_session_unset: true,
            ..facts(None)
        };
        assert_eq!(decide(&config, &unset), Decision::default());
        config.unset = Unset::Destroy;
        assert_eq!(
            decide(&config, &unset),
            Decision {
                destroy: true,
                expire_cookie: true,
                ..Decision::default()
            }
        );
        // A session destroyed by `destroy()` (not unset): nothing to store, its cookie expired.
        let destroyed = Facts {
            cookie_session_destroyed: true,
            ..facts(None)
        };
        assert_eq!(
            decide(&config, &destroyed),
            Decision {
                expire_cookie: true,
                ..Decision::default()
            }
        );
    }

    #[test]
    fn a_secure_cookie_never_goes_over_a_plain_connection() {
        let config = Config::default();
        let secure = SessionFacts {
            secure_cookie: true,
            ..session(true, true, false, false)
        };
        let plain = decide(&config, &facts(Some(secure)));
        assert_eq!(
            (plain.set_cookie, plain.save),
            (false, true),
            "saved, not sent"
        );
        let over_tls = Facts {
            request_secure: true,
            ..facts(Some(secure))
        };
        assert!(decide(&config, &over_tls).set_cookie);
    }

    #[test]
    fn a_new_session_after_destroy_sends_its_own_cookie_not_an_expired_one() {
        let config = Config::default();
        let both = Facts {
            cookie_session_destroyed: true,
            ..facts(Some(session(true, true, false, false)))
        };
        let decision = decide(&config, &both);
        assert!(decision.set_cookie && !decision.expire_cookie);
    }

    #[test]
    fn touches_are_throttled_by_touch_after() {
        let config = Config {
            touch_after: std::time::Duration::from_secs(60),
            ..Config::default()
        };
        let now = Timestamp::from_millis(1_000_000);
        let loaded = |stored_ago_ms: i64| SessionFacts {
            stored_expiry: Some(now.add_millis(3_600_000 - stored_ago_ms)),
            touched_expiry: Some(now.add_millis(3_600_000)),
            ..session(false, false, true, true)
        };
        assert!(!decide(&config, &facts(Some(loaded(59_999)))).touch);
        assert!(decide(&config, &facts(Some(loaded(60_000)))).touch);
        let unknown = SessionFacts {
            stored_expiry: None,
            ..loaded(0)
        };
        assert!(
            decide(&config, &facts(Some(unknown))).touch,
            "unknown expiry: touch"
        );
        assert!(
            decide(&Config::default(), &facts(Some(loaded(0)))).touch,
            "no throttle by default"
        );
    }
}
