//! The HTML pages: small, styled, and working without JavaScript. Everything that comes from a
//! request or a session is escaped.

use std::fmt::Write as _;

/// `text` with `& < > "` escaped: safe in HTML text and in double-quoted attributes, the only
/// kind these pages use (so `'` can stay as it is, and "You've" reads as typed).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:4rem auto;\
padding:0 1rem;color:#1d232a;background:#f6f4ef}main{background:#fff;border-radius:12px;\
padding:2rem;box-shadow:0 1px 4px #0002}h1{font-size:1.4rem;margin-top:0}label{display:block;\
margin:.8rem 0 .2rem}input{width:100%;padding:.5rem;border:1px solid #bbb;border-radius:6px;\
box-sizing:border-box}button{margin-top:1.2rem;padding:.6rem 1.4rem;border:0;border-radius:6px;\
background:#2f5d50;color:#fff;font-size:1rem;cursor:pointer}.error{color:#a4262c}\
nav a{margin-right:1rem}footer{margin-top:1.5rem;font-size:.85rem;color:#666}";

/// A page around `body` (already HTML), with `title` escaped.
fn page(title: &str, body: &str) -> String {
    let mut html = String::with_capacity(STYLE.len() + body.len() + 400);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · cloakroom</title><style>{STYLE}</style></head><body><main>{body}\
         <footer><nav><a href=\"/\">Views</a><a href=\"/get-session\">Session data</a>\
         <a href=\"/dashboard\">Dashboard</a></nav></footer></main></body></html>",
        escape(title)
    );
    html
}

/// `GET /`.
pub(crate) fn views(views: u64) -> String {
    page("Views", &format!("<h1>Number of views {views}</h1>"))
}

/// A page with one message.
pub(crate) fn message(text: &str) -> String {
    page(text, &format!("<h1>{}</h1>", escape(text)))
}

/// The login form, with an error message after a failed attempt.
pub(crate) fn login(error: Option<&str>, username: &str) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(
        "Log in",
        &format!(
            "<h1>Log in</h1>{error}<form method=\"post\" action=\"/login\">\
             <label for=\"username\">Username</label>\
             <input id=\"username\" name=\"username\" autocomplete=\"username\" value=\"{}\" required>\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\">Log in</button></form>",
            escape(username)
        ),
    )
}

/// The dashboard of a logged-in user.
pub(crate) fn dashboard(username: &str, expires: Option<&str>) -> String {
    let expiry = match expires {
        Some(when) => format!("<p>Your session expires {}.</p>", escape(when)),
        None => "<p>Your session ends when you close the browser.</p>".to_owned(),
    };
    page(
        "Dashboard",
        &format!(
            "<h1>Welcome {}! This is your dashboard.</h1>{expiry}\
             <p><a href=\"/logout\">Log out</a></p>",
            escape(username)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; 'y')&lt;/script&gt;"
        );
        let html = dashboard("<b>ann</b>", Some("soon"));
        assert!(html.contains("Welcome &lt;b&gt;ann&lt;/b&gt;! This is your dashboard."));
        assert!(!html.contains("<b>ann"));
        assert!(login(Some("<x>"), "\"><img>").contains("value=\"&quot;&gt;&lt;img&gt;\""));
    }
}
