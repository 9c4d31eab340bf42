//! The device a session list names: "Firefox on Linux", from the `User-Agent` header.
//!
//! The summary is built only from fixed words, never from the header's text: the header is
//! whatever the client sent, and the list shows it to the user (and to their other devices).

/// Longest summary this module makes (it never echoes the header, so this only bounds it).
pub(crate) const MAX_LEN: usize = 40;

/// What a session list shows when the header says nothing recognisable.
pub(crate) const UNKNOWN: &str = "Unknown device";

/// A short description of the browser and system a `User-Agent` names: "Chrome on Linux",
/// "Safari on iOS", "Firefox" (system unknown), or [`UNKNOWN`].
pub(crate) fn describe(user_agent: Option<&str>) -> String {
    let Some(agent) = user_agent else {
        return UNKNOWN.to_owned();
    };
    let summary = match (browser(agent), system(agent)) {
        (Some(browser), Some(system)) => format!("{browser} on {system}"),
        (Some(name), None) | (None, Some(name)) => name.to_owned(),
        (None, None) => UNKNOWN.to_owned(),
    };
    debug_assert!(summary.len() <= MAX_LEN);
    summary
}

/// The browser, most specific first: Edge and Opera say "Chrome" too, Chrome says "Safari".
fn browser(agent: &str) -> Option<&'static str> {
    const BROWSERS: &[(&str, &str)] = &[
        ("Edg/", "Edge"),
        ("EdgA/", "Edge"),
        ("EdgiOS/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("FxiOS/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("CriOS/", "Chrome"),
        ("Chromium/", "Chromium"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ];
    BROWSERS
        .iter()
        .find(|(marker, _)| agent.contains(marker))
        .map(|(_, name)| *name)
}

/// The operating system, most specific first: Android says "Linux", iOS says "like Mac OS X".
fn system(agent: &str) -> Option<&'static str> {
    const SYSTEMS: &[(&str, &str)] = &[
        ("Windows", "Windows"),
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("CrOS", "ChromeOS"),
        ("Macintosh", "macOS"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ];
    SYSTEMS
        .iter()
        .find(|(marker, _)| agent.contains(marker))
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_common_browsers_and_systems() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                "Firefox on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/131.0.0.0 Safari/537.36",
                "Chrome on Windows",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
                "Edge on Windows",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
                 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
                "Safari on iOS",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, \
                 like Gecko) Version/17.5 Safari/605.1.15",
                "Safari on macOS",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/131.0.0.0 Mobile Safari/537.36",
                "Chrome on Android",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 HeadlessChrome/131.0.0.0 Safari/537.36",
                "Chrome on Linux",
            ),
            ("curl/8.5.0", "curl"),
        ];
        for (agent, expected) in cases {
            assert_eq!(describe(Some(agent)), expected, "{agent}");
        }
    }

    #[test]
    fn never_echoes_the_header() {
        assert_eq!(describe(None), UNKNOWN);
        assert_eq!(describe(Some("")), UNKNOWN);
        assert_eq!(describe(Some("<script>alert(1)</script>")), UNKNOWN);
        let long = format!("{} Firefox/1 Linux", "x".repeat(100_000));
        assert_eq!(describe(Some(&long)), "Firefox on Linux");
        for agent in ["Windows <b>", "Firefox/<img src=x>", "\u{1F600}"] {
            let summary = describe(Some(agent));
            assert!(summary.len() <= MAX_LEN, "{summary}");
            assert!(!summary.contains('<'), "{summary}");
        }
    }
}
