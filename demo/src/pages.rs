//! The HTML pages, written with maud: small, styled by `/style.css`, working without
//! JavaScript. maud escapes every value it interpolates (`& < > "`), so nothing from a request
//! or a session can become markup; the pages hold no inline style or script, so the
//! Content-Security-Policy can forbid both.
//!
//! `interop/app.js` renders the same texts and the same forms: change both together.

use cloakroom::{SessionInfo, Timestamp};
use maud::{DOCTYPE, Markup, html};

use crate::{csrf, device};

/// The stylesheet, served at `/style.css`.
pub(crate) const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:4rem auto;\
padding:0 1rem;color:#1d232a;background:#f6f4ef}main{background:#fff;border-radius:12px;\
padding:2rem;box-shadow:0 1px 4px #0002}h1{font-size:1.4rem;margin-top:0}label{display:block;\
margin:.8rem 0 .2rem}input{width:100%;padding:.5rem;border:1px solid #bbb;border-radius:6px;\
box-sizing:border-box}button{margin-top:1.2rem;padding:.6rem 1.4rem;border:0;border-radius:6px;\
background:#2f5d50;color:#fff;font-size:1rem;cursor:pointer}.error{color:#a4262c}.info{color:#2f5d50}\
nav a{margin-right:1rem}footer{margin-top:1.5rem;font-size:.85rem;color:#666}\
table{width:100%;border-collapse:collapse;font-size:.9rem}th,td{text-align:left;padding:.4rem .3rem;\
border-bottom:1px solid #ddd;vertical-align:top}td button{margin:0;padding:.3rem .7rem;font-size:.85rem}";

/// A page around `body`.
fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) " · cloakroom" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                main {
                    (body)
                    footer {
                        nav {
                            a href="/" { "Views" }
                            a href="/get-session" { "Session data" }
                            a href="/dashboard" { "Dashboard" }
                        }
                    }
                }
            }
        }
    }
}

/// The hidden field every form carries: the session's anti-forgery token.
fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name=(csrf::FIELD) value=(token); }
}

/// `GET /`.
pub(crate) fn views(views: u64) -> Markup {
    page("Views", html! { h1 { "Number of views " (views) } })
}

/// The one-time messages a page shows (connect-flash's kinds `error` and `info`), taken from the
/// session by the handler: shown once, gone on reload.
#[derive(Default)]
pub(crate) struct Flashes {
    pub error: Vec<String>,
    pub info: Vec<String>,
}

/// The waiting messages, errors first, each in its own paragraph.
fn flashes(flashes: &Flashes) -> Markup {
    html! {
        @for error in &flashes.error {
            p class="error" role="alert" { (error) }
        }
        @for info in &flashes.info {
            p class="info" role="status" { (info) }
        }
    }
}

/// A page with one message.
pub(crate) fn message(text: &str) -> Markup {
    page(text, html! { h1 { (text) } })
}

/// The login form, with the messages left for it (a failed attempt's error, a logout's notice).
pub(crate) fn login(waiting: &Flashes, csrf_token: &str) -> Markup {
    page(
        "Log in",
        html! {
            h1 { "Log in" }
            (flashes(waiting))
            form method="post" action="/login" {
                (csrf_field(csrf_token))
                label for="username" { "Username" }
                input id="username" name="username" autocomplete="username" required;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Log in" }
            }
        },
    )
}

/// The dashboard of a logged-in user, with the logout form (a POST: a link could be followed
/// by another site, or prefetched).
pub(crate) fn dashboard(username: &str, expires: Option<&str>, csrf_token: &str) -> Markup {
    page(
        "Dashboard",
        html! {
            h1 { "Welcome " (username) "! This is your dashboard." }
            @match expires {
                Some(when) => p { "Your session expires " (when) "." },
                None => p { "Your session ends when you close the browser." },
            }
            p { a href="/sessions" { "Your sessions" } ": where you are signed in." }
            form method="post" action="/logout" {
                (csrf_field(csrf_token))
                button type="submit" { "Log out" }
            }
        },
    )
}

/// A time in a session list (UTC), or a dash when the store does not know it.
fn when(time: Option<Timestamp>) -> String {
    time.map_or_else(|| "—".to_owned(), Timestamp::to_http_date)
}

/// `GET /sessions`: the user's sessions, this one first and marked, each other one with its
/// own "Sign out" form (by handle: the page never shows a session id).
pub(crate) fn sessions(list: &[SessionInfo], waiting: &Flashes, csrf_token: &str) -> Markup {
    let others = list.iter().filter(|info| !info.current).count();
    page(
        "Your sessions",
        html! {
            h1 { "Your sessions" }
            (flashes(waiting))
            table {
                thead {
                    tr { th { "Device" } th { "Signed in" } th { "Last seen" } th { "Expires" } th {} }
                }
                tbody {
                    @for info in list {
                        tr {
                            td {
                                (info.info.get("device").and_then(|device| device.as_str()).unwrap_or(device::UNKNOWN))
                            }
                            td { (when(info.created)) }
                            td { (when(info.last_seen)) }
                            td { (when(info.expires)) }
                            td {
                                @if info.current {
                                    strong { "This session" }
                                } @else {
                                    form method="post" action="/sessions/revoke" {
                                        (csrf_field(csrf_token))
                                        input type="hidden" name="handle" value=(info.handle);
                                        button type="submit" { "Sign out" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if others > 0 {
                form method="post" action="/sessions/revoke-others" {
                    (csrf_field(csrf_token))
                    button type="submit" { "Sign out all other sessions" }
                }
            } @else {
                p { "You are signed in nowhere else." }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(handle: &str, current: bool, device: Option<&str>) -> SessionInfo {
        let mut info = serde_json::Map::new();
        if let Some(device) = device {
            info.insert("device".to_owned(), device.into());
        }
        SessionInfo {
            handle: handle.to_owned(),
            current,
            created: Some(Timestamp::from_millis(0)),
            last_seen: None,
            expires: None,
            info,
        }
    }

    #[test]
    fn the_session_list_marks_this_session_and_escapes() {
        let list = [
            listed("h1", true, Some("Firefox on Linux")),
            listed("h\"2", false, Some("<b>x</b>")),
            listed("h3", false, None),
        ];
        let signed_out = Flashes {
            info: vec!["Signed out 1 other session.".to_owned()],
            ..Flashes::default()
        };
        let html = sessions(&list, &signed_out, "T0KEN").into_string();
        assert!(
            html.contains("<p class=\"info\" role=\"status\">Signed out 1 other session.</p>"),
            "{html}"
        );
        assert_eq!(
            html.matches("<tr>").count(),
            4,
            "a header and 3 rows: {html}"
        );
        assert_eq!(html.matches("This session").count(), 1, "{html}");
        assert!(html.contains("<td>Firefox on Linux</td>"), "{html}");
        assert!(
            html.contains("&lt;b&gt;x&lt;/b&gt;") && !html.contains("<b>x"),
            "{html}"
        );
        assert!(html.contains("<td>Unknown device</td>"), "{html}");
        assert!(html.contains("Thu, 01 Jan 1970 00:00:00 GMT"), "{html}");
        assert!(html.contains(
            "<form method=\"post\" action=\"/sessions/revoke\"><input type=\"hidden\" name=\"_csrf\" value=\"T0KEN\"><input type=\"hidden\" name=\"handle\" value=\"h&quot;2\">"
        ), "{html}");
        assert!(
            !html.contains("value=\"h1\""),
            "no button for this session: {html}"
        );
        assert!(html.contains(
            "<form method=\"post\" action=\"/sessions/revoke-others\"><input type=\"hidden\" name=\"_csrf\" value=\"T0KEN\">"
        ), "{html}");
        let alone = sessions(&list[..1], &Flashes::default(), "T0KEN").into_string();
        assert!(
            !alone.contains("/sessions/revoke"),
            "nothing to sign out: {alone}"
        );
    }

    #[test]
    fn escapes_markup() {
        let html = dashboard("<b>ann</b>", Some("soon"), "token").into_string();
        assert!(html.contains("Welcome &lt;b&gt;ann&lt;/b&gt;! This is your dashboard."));
        assert!(!html.contains("<b>ann"));
        let waiting = Flashes {
            error: vec!["<x>".to_owned()],
            info: vec!["\"><img>".to_owned()],
        };
        let html = login(&waiting, "t\"k").into_string();
        assert!(
            html.contains("<p class=\"error\" role=\"alert\">&lt;x&gt;</p>"),
            "{html}"
        );
        assert!(
            html.contains("<p class=\"info\" role=\"status\">&quot;&gt;&lt;img&gt;</p>"),
            "{html}"
        );
        assert!(
            html.contains("<input type=\"hidden\" name=\"_csrf\" value=\"t&quot;k\">"),
            "{html}"
        );
        let html = message("You've & <i>").into_string();
        assert!(
            html.contains("<h1>You've &amp; &lt;i&gt;</h1>"),
            "quotes as typed: {html}"
        );
    }

    /// What interop/app.js renders too (demo/tests/interop.rs reads these from both servers).
    #[test]
    fn forms_carry_the_token() {
        let html = login(&Flashes::default(), "T0KEN").into_string();
        assert!(html.contains(
            "<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"_csrf\" value=\"T0KEN\">"
        ));
        let html = dashboard("ann", None, "T0KEN").into_string();
        assert!(html.contains(
            "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"_csrf\" value=\"T0KEN\"><button type=\"submit\">Log out</button></form>"
        ), "{html}");
        assert!(!html.contains("href=\"/logout\""), "no logout link: {html}");
    }

    /// The Content-Security-Policy allows no inline style or script.
    #[test]
    fn no_inline_style_or_script() {
        for html in [
            views(1),
            message("m"),
            login(
                &Flashes {
                    error: vec!["e".to_owned()],
                    info: vec!["i".to_owned()],
                },
                "t",
            ),
            dashboard("u", Some("soon"), "t"),
            sessions(
                &[listed("h", true, None), listed("i", false, None)],
                &Flashes::default(),
                "t",
            ),
        ] {
            let html = html.into_string();
            assert!(html.contains("<link rel=\"stylesheet\" href=\"/style.css\">"));
            for inline in ["<style", "style=", "<script", "javascript:"] {
                assert!(!html.contains(inline), "{inline} in {html}");
            }
        }
    }
}
