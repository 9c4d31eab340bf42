//! What happens to a session when its response goes out: save, touch, set the cookie, destroy.
//!
//! One function, [`decide`], with express-session's own names (`index.js`, spec §4.4), so each
//! of its tests reads as an express behaviour.

use crate::config::Unset;

/// The options the decision reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    pub(crate) save_uninitialized: bool,
    pub(crate) rolling: bool,
    pub(crate) unset: Unset,
}

/// What is known about the session at the end of the request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Facts {
    /// The live session, or `None` after `destroy` / `unset` (express: `req.session == null`).
    pub(crate) session: Option<SessionFacts>,
    /// The handler called `unset` (express: assigned `req.session = null`).
    pub(crate) unset_called: bool,
}

/// express's per-session predicates.
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
}

/// What to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Decision {
    /// `shouldSetCookie`.
    pub(crate) set_cookie: bool,
    /// `shouldSave`.
    pub(crate) save: bool,
    /// `shouldTouch`: refresh the expiry in the store without writing data.
    pub(crate) touch: bool,
    /// `shouldDestroy`: the handler unset the session and `unset` is `destroy`.
    pub(crate) destroy: bool,
}

/// express-session's four decisions (spec §4.4).
pub(crate) fn decide(rules: Rules, facts: Facts) -> Decision {
    let should_destroy = facts.unset_called && rules.unset == Unset::Destroy;
    let Some(session) = facts.session else {
        return Decision {
            destroy: should_destroy,
            ..Decision::default()
        };
    };
    let should_set_cookie = if session.is_new {
        rules.save_uninitialized || session.is_modified
    } else {
        rules.rolling || (session.has_expires && session.is_modified)
    };
    let should_save = if !rules.save_uninitialized && !session.has_saved_hash && session.is_new {
        session.is_modified
    } else {
        !session.is_saved
    };
    let should_touch = !session.is_new && !should_save;
    Decision {
        set_cookie: should_set_cookie,
        save: should_save,
        touch: should_touch,
        destroy: should_destroy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's §4.7 matrix (verified against express-session 1.19 with MemoryStore): the first
    /// request comes without a cookie, the second with the cookie the first returned.
    struct Options {
        resave: bool,
        save_uninitialized: bool,
        rolling: bool,
    }

    fn rules(o: &Options) -> Rules {
        Rules {
            save_uninitialized: o.save_uninitialized,
            rolling: o.rolling,
            unset: Unset::Keep,
        }
    }

    /// A first request: a freshly generated session, never saved.
    fn first_request(o: &Options, modified: bool) -> Decision {
        decide(
            rules(o),
            Facts {
                session: Some(SessionFacts {
                    is_new: true,
                    is_modified: modified,
                    is_saved: false,
                    has_saved_hash: false,
                    has_expires: true,
                }),
                unset_called: false,
            },
        )
    }

    /// A second request on a loaded session. `resave: false` sets `savedHash` at load, so the
    /// session counts as saved unless modified.
    fn second_request(o: &Options, modified: bool, has_expires: bool) -> Decision {
        decide(
            rules(o),
            Facts {
                session: Some(SessionFacts {
                    is_new: false,
                    is_modified: modified,
                    is_saved: !o.resave && !modified,
                    has_saved_hash: !o.resave,
                    has_expires,
                }),
                unset_called: false,
            },
        )
    }

    /// A cell as the spec writes it: cookie sent, and the store call (`set`, `touch` or none).
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
        let new = decide(
            rules(&o),
            Facts {
                session: Some(SessionFacts {
                    is_new: true,
                    is_modified: true,
                    is_saved: true,
                    has_saved_hash: true,
                    has_expires: true,
                }),
                unset_called: false,
            },
        );
        assert_eq!(cell(new), (true, "-"));
        // Existing session saved by the handler: express touches at the end.
        let existing = decide(
            rules(&o),
            Facts {
                session: Some(SessionFacts {
                    is_new: false,
                    is_modified: false,
                    is_saved: true,
                    has_saved_hash: true,
                    has_expires: true,
                }),
                unset_called: false,
            },
        );
        assert_eq!(cell(existing), (false, "touch"));
    }

    #[test]
    fn unset_destroys_only_when_configured() {
        let mut rules = Rules {
            save_uninitialized: true,
            rolling: true,
            unset: Unset::Keep,
        };
        let unset = Facts {
            session: None,
            unset_called: true,
        };
        assert_eq!(decide(rules, unset), Decision::default());
        rules.unset = Unset::Destroy;
        assert_eq!(
            decide(rules, unset),
            Decision {
                destroy: true,
                ..Decision::default()
            }
        );
        // A session destroyed by `destroy()` (not unset) has nothing left to decide.
        let destroyed = Facts {
            session: None,
            unset_called: false,
        };
        assert_eq!(decide(rules, destroyed), Decision::default());
    }
}
