//! The demo binary, started on a free port and driven over HTTP with a cookie jar, against
//! every store; and its command line.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{
    ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION,
    REFERRER_POLICY, RETRY_AFTER, SET_COOKIE, X_CONTENT_TYPE_OPTIONS,
};

const BIN: &str = env!("CARGO_BIN_EXE_cloakroom-demo");
const SECRET: &str = "demo test secret, obviously fake";

/// A running demo server, stopped with SIGTERM when dropped.
struct Demo {
    child: Option<Child>,
    base: String,
}

impl Demo {
    /// Starts the demo with `args` (plus a free `--addr`) and waits until it answers.
    fn start(args: &[&str]) -> Demo {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new(BIN);
        command
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(args)
            .env_clear();
        Demo::spawn(command, port)
    }

    /// Starts `command`, which listens on 127.0.0.1:`port`, and waits until it answers.
    fn spawn(mut command: Command, port: u16) -> Demo {
        let addr = format!("127.0.0.1:{port}");
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the demo binary starts");
        let demo = Demo {
            child: Some(child),
            base: format!("http://{addr}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the demo did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        demo
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops it with SIGTERM and returns how it exited.
    fn stop(mut self) -> Output {
        let child = self.child.take().expect("running");
        terminate(&child);
        child.wait_with_output().expect("the demo exits")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = child.wait();
        }
    }
}

fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

/// A browser-like client: keeps cookies, does not follow redirects (so tests see the 303s).
fn browser() -> reqwest::Client {
    browser_from(None)
}

/// A browser whose requests come from `source` (any 127.x.y.z reaches the demo on Linux).
fn browser_from(source: Option<&str>) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(source.map(|s| s.parse().unwrap()))
        .build()
        .unwrap()
}

async fn text(client: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let response = client.get(url).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// The anti-forgery token in a page's form.
fn csrf_token(page: &str) -> String {
    let field = "<input type=\"hidden\" name=\"_csrf\" value=\"";
    let start = page
        .find(field)
        .unwrap_or_else(|| panic!("no token field in {page}"))
        + field.len();
    page[start..].split('"').next().unwrap().to_owned()
}

/// The token of the form on `path` (which must answer 200).
async fn form_token(client: &reqwest::Client, demo: &Demo, path: &str) -> String {
    let (status, body) = text(client, &demo.url(path)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    csrf_token(&body)
}

async fn post(
    client: &reqwest::Client,
    demo: &Demo,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    client.post(demo.url(path)).form(form).send().await.unwrap()
}

/// Logs in as a browser does: the form (and its token) first, then the POST.
async fn log_in(
    client: &reqwest::Client,
    demo: &Demo,
    user: &str,
    password: &str,
) -> reqwest::Response {
    let token = form_token(client, demo, "/login").await;
    post(
        client,
        demo,
        "/login",
        &[
            ("username", user),
            ("password", password),
            ("_csrf", &token),
        ],
    )
    .await
}

/// Whether the dashboard greets the user (else it must redirect to the login).
async fn logged_in(client: &reqwest::Client, demo: &Demo) -> bool {
    let response = client.get(demo.url("/dashboard")).send().await.unwrap();
    match response.status() {
        StatusCode::OK => true,
        StatusCode::SEE_OTHER => {
            assert_eq!(response.headers()[LOCATION], "/login");
            false
        }
        other => panic!("/dashboard answered {other}"),
    }
}

const FORGED_FORM: &str = "This form has expired. Reload the page and try again.";

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("connect.sid="))
}

/// Every route, as a visitor would use them.
async fn tour(demo: &Demo) {
    let client = browser();
    for n in 1..=3 {
        let (status, body) = text(&client, &demo.url("/")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(&format!("Number of views {n}")), "{body}");
    }

    let (_, body) = text(&client, &demo.url("/get-session")).await;
    assert!(body.contains("No session data found"), "{body}");
    let (_, body) = text(&client, &demo.url("/set-session")).await;
    assert!(body.contains("Session data set"), "{body}");
    let (_, body) = text(&client, &demo.url("/get-session")).await;
    assert!(
        body.contains("Welcome back, john! You've visited 1 time."),
        "{body}"
    );
    text(&client, &demo.url("/set-session")).await;
    let (_, body) = text(&client, &demo.url("/get-session")).await;
    assert!(body.contains("You've visited 2 times."), "{body}");

    let response = client.get(demo.url("/dashboard")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/login");
    let (status, form) = text(&client, &demo.url("/login")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(form.contains("<form method=\"post\" action=\"/login\">"));
    let login_token = csrf_token(&form);
    assert_eq!(login_token.len(), 43, "32 bytes, base64url: {login_token}");

    // Without the session's token, even the right password does nothing.
    for token in [None, Some("forged"), Some("")] {
        let mut fields = vec![("username", "ann"), ("password", "pa55")];
        fields.extend(token.map(|token| ("_csrf", token)));
        let forged = post(&client, demo, "/login", &fields).await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN, "token {token:?}");
        assert!(session_cookie(&forged).is_none(), "no new session");
        assert!(forged.text().await.unwrap().contains(FORGED_FORM));
    }
    let no_form = client.post(demo.url("/login")).send().await.unwrap();
    assert_eq!(no_form.status(), StatusCode::FORBIDDEN, "no form at all");
    assert!(!logged_in(&client, demo).await);
    let stranger = browser();
    let foreign = post(
        &stranger,
        demo,
        "/login",
        &[
            ("username", "ann"),
            ("password", "pa55"),
            ("_csrf", &login_token),
        ],
    )
    .await;
    assert_eq!(
        foreign.status(),
        StatusCode::FORBIDDEN,
        "a token is good only with its own session"
    );

    // A failed login goes back to the form, which shows the error once (a flash): a reload
    // neither posts the password again nor repeats the message.
    let wrong = log_in(&client, demo, "<b>ann</b>", "nope").await;
    assert_eq!(wrong.status(), StatusCode::SEE_OTHER);
    assert_eq!(wrong.headers()[LOCATION], "/login");
    let (status, body) = text(&client, &demo.url("/login")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body.matches("<p class=\"error\" role=\"alert\">Invalid username or password.</p>")
            .count(),
        1,
        "{body}"
    );
    assert!(!body.contains("ann&lt;"), "the name is not echoed: {body}");
    assert_eq!(
        csrf_token(&body),
        login_token,
        "the same session, the same token"
    );
    let (_, reloaded) = text(&client, &demo.url("/login")).await;
    assert!(!reloaded.contains("Invalid username"), "once: {reloaded}");

    let before = client.get(demo.url("/")).send().await.unwrap();
    let cookie_before = session_cookie(&before);
    let right = log_in(&client, demo, "ann", "pa55").await;
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    assert_eq!(right.headers()[LOCATION], "/dashboard");
    let cookie_after =
        session_cookie(&right).expect("login sends the regenerated session's cookie");
    assert_ne!(
        Some(&cookie_after),
        cookie_before.as_ref(),
        "login regenerates the id"
    );

    let (status, body) = text(&client, &demo.url("/dashboard")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("Welcome ann! This is your dashboard."),
        "{body}"
    );
    assert!(body.contains("Your session expires"), "{body}");
    assert!(
        body.contains("<form method=\"post\" action=\"/logout\">"),
        "{body}"
    );
    assert!(!body.contains("href=\"/logout\""), "no logout link: {body}");
    let token = csrf_token(&body);
    assert_ne!(token, login_token, "login issues a new token");

    // GET, a missing, empty or wrong token, the token from before the login: still logged in.
    let get = client.get(demo.url("/logout")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.headers()[ALLOW], "POST");
    assert!(session_cookie(&get).is_none());
    for fields in [
        &[][..],
        &[("_csrf", "")],
        &[("_csrf", "forged")],
        &[("_csrf", login_token.as_str())],
        &[("csrf", token.as_str())],
    ] {
        let forged = post(&client, demo, "/logout", fields).await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN, "{fields:?}");
        assert!(session_cookie(&forged).is_none(), "{fields:?}");
    }
    assert!(logged_in(&client, demo).await, "still logged in");

    let out = post(&client, demo, "/logout", &[("_csrf", &token)]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(out.headers()[LOCATION], "/login");
    // The notice is a write after `destroy`: a new, empty session, whose cookie replaces the
    // logged-in one.
    let replaced = session_cookie(&out).expect("logout replaces the cookie");
    assert_ne!(replaced, cookie_after, "{replaced}");
    let (status, body) = text(&client, &demo.url("/login")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body.matches("<p class=\"info\" role=\"status\">You have been logged out.</p>")
            .count(),
        1,
        "{body}"
    );
    let (_, reloaded) = text(&client, &demo.url("/login")).await;
    assert!(!reloaded.contains("logged out"), "once: {reloaded}");
    assert!(!logged_in(&client, demo).await, "logged out");
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let old = cookie_after.split(';').next().unwrap();
    let response = replay
        .get(demo.url("/dashboard"))
        .header(reqwest::header::COOKIE, old)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "the logged-in cookie, replayed, is logged out"
    );
}

/// 50 requests at once on one session, as a double-click or two tabs would send them: every
/// one of them counts (the counters use `Session::update`).
async fn parallel_increments(demo: &Demo) {
    let client = browser();
    let at_once = |path: &'static str| {
        let requests: Vec<_> = (0..50)
            .map(|_| {
                let client = client.clone();
                let url = demo.url(path);
                tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
            })
            .collect();
        async move {
            for request in requests {
                assert_eq!(request.await.unwrap(), StatusCode::OK);
            }
        }
    };
    text(&client, &demo.url("/set-session")).await;
    at_once("/set-session").await;
    let (_, body) = text(&client, &demo.url("/get-session")).await;
    assert!(body.contains("You've visited 51 times."), "{body}");
    at_once("/").await;
    let (_, body) = text(&client, &demo.url("/")).await;
    assert!(body.contains("Number of views 51"), "{body}");
}

fn common_args(store: &str) -> Vec<&str> {
    vec!["--store", store, "--secret", SECRET, "--user", "ann:pa55"]
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(cloakroom_testkit::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("sessions.db").display())
}

#[tokio::test]
async fn every_route_on_sqlite() {
    let dir = temp_dir("demo-sqlite-");
    let store = sqlite_url(&dir);
    let demo = Demo::start(&common_args(&store));
    tour(&demo).await;
    parallel_increments(&demo).await;
    drop(demo);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn every_route_in_memory() {
    let demo = Demo::start(&common_args("memory"));
    tour(&demo).await;
    parallel_increments(&demo).await;
}

#[tokio::test]
async fn every_route_on_redis() {
    let url = cloakroom_testkit::server_url(
        "CLOAKROOM_REDIS_URL",
        "./scripts/test.sh starts Redis and sets it",
    );
    let demo = Demo::start(&common_args(&url));
    tour(&demo).await;
    parallel_increments(&demo).await;
}

#[tokio::test]
async fn every_route_on_postgres() {
    let url = cloakroom_testkit::server_url(
        "CLOAKROOM_POSTGRES_URL",
        "./scripts/test.sh starts PostgreSQL and sets it",
    );
    let demo = Demo::start(&common_args(&url));
    tour(&demo).await;
    parallel_increments(&demo).await;
}

#[tokio::test]
async fn every_route_on_mysql() {
    let url = cloakroom_testkit::server_url(
        "CLOAKROOM_MYSQL_URL",
        "./scripts/test.sh starts MariaDB and sets it",
    );
    let demo = Demo::start(&common_args(&url));
    tour(&demo).await;
    parallel_increments(&demo).await;
}

#[tokio::test]
async fn a_login_survives_a_restart_and_the_generated_secret_is_kept() {
    let dir = temp_dir("demo-restart-");
    let store = sqlite_url(&dir);
    let args = ["--store", store.as_str(), "--user", "ann:pa55"];
    let client = browser();
    let first = Demo::start(&args);
    assert_eq!(
        log_in(&client, &first, "ann", "pa55").await.status(),
        StatusCode::SEE_OTHER
    );
    let output = first.stop();
    assert!(
        output.status.success(),
        "SIGTERM is a clean shutdown: {output:?}"
    );
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("no --secret given: generated one"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "plain text in a pipe, no colour codes: {log:?}"
    );
    let secret_file = dir.join("sessions.secret");
    let secret =
        std::fs::read_to_string(&secret_file).expect("the secret is kept beside the database");
    assert!(!log.contains(secret.trim()), "the secret is never logged");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only the owner can read the secret");
    }

    let second = Demo::start(&args);
    let (status, body) = text(&client, &second.url("/dashboard")).await;
    assert_eq!(status, StatusCode::OK, "still logged in after the restart");
    assert!(body.contains("Welcome ann!"), "{body}");
    drop(second);
    std::fs::remove_dir_all(dir).unwrap();
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .output()
        .expect("the demo binary runs")
}

#[test]
fn bad_options_fail_with_the_whole_reason() {
    for (args, names) in [
        (&["--max-age", "ten"][..], "--max-age"),
        (&["--store", "mongodb://db"], "--store"),
        (&["--user", "nocolon"], "--user"),
        (&["--secure", "maybe"], "--secure"),
        (&["--addr", "not-an-address"], "--addr"),
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(names), "names the option: {stderr}");
        assert!(stderr.contains("--help"), "says where to look: {stderr}");
        assert!(
            !stderr.contains('\x1b'),
            "no colour codes in a pipe: {stderr:?}"
        );
    }
}

/// A lifetime without a unit is refused, with the units it could mean: `60000` was 60,000
/// seconds before, where an Express user means milliseconds.
#[test]
fn a_lifetime_needs_its_unit() {
    let output = run(&["--max-age", "60000"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("60000ms") && stderr.contains("60000s"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_store_is_one_line_naming_it() {
    for (store, name) in [
        ("redis://127.0.0.1:1", "Redis at 127.0.0.1:1"),
        (
            "postgres://user:hunter2@127.0.0.1:1/app",
            "PostgreSQL at 127.0.0.1:1/app",
        ),
        (
            "mysql://user:hunter2@127.0.0.1:1/app",
            "MySQL at 127.0.0.1:1/app",
        ),
    ] {
        let output = run(&[
            "--store",
            store,
            "--secret",
            SECRET,
            "--addr",
            "127.0.0.1:0",
        ]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with("cloakroom-demo: "), "{stderr}");
        assert!(last.contains(name), "names the server: {stderr}");
        assert!(
            last.to_lowercase().contains("refused"),
            "says why, not only that it timed out: {stderr}"
        );
        assert!(!stderr.contains("hunter2"), "never the password: {stderr}");
    }
}

#[test]
fn a_missing_sqlite_folder_is_named() {
    let dir = temp_dir("demo-missing-");
    let store = format!("sqlite://{}", dir.join("no/such/folder/s.db").display());
    let output = run(&["--store", &store, "--addr", "127.0.0.1:0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not exist") && stderr.contains("no/such/folder"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "not a secret-file error: {stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A secret with a comma is one secret, from the option and from the variable: a cookie the
/// demo signs with it is refused by a demo given only the part before the comma.
#[tokio::test]
async fn a_secret_with_a_comma_is_one_secret() {
    let dir = temp_dir("demo-comma-");
    let store = sqlite_url(&dir);
    let whole = "first part of a fake test secret, then the rest of it";
    let half = "first part of a fake test secret";
    assert_eq!(half.len(), 32, "long enough to be accepted on its own");
    let start = |secret: &str, by_env: bool| {
        let mut command = Command::new(BIN);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        command
            .env_clear()
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--store", &store, "--user", "ann:pa55"]);
        if by_env {
            command.env("CLOAKROOM_SECRET", secret);
        } else {
            command.args(["--secret", secret]);
        }
        Demo::spawn(command, port)
    };
    for by_env in [false, true] {
        let client = browser();
        let signer = start(whole, by_env);
        assert_eq!(
            log_in(&client, &signer, "ann", "pa55").await.status(),
            StatusCode::SEE_OTHER
        );
        let (status, _) = text(&client, &signer.url("/dashboard")).await;
        assert_eq!(status, StatusCode::OK, "logged in (by_env: {by_env})");
        drop(signer);
        let halved = start(half, by_env);
        let (status, _) = text(&client, &halved.url("/dashboard")).await;
        assert_eq!(
            status,
            StatusCode::SEE_OTHER,
            "a demo with only the part before the comma must not accept the cookie (by_env: {by_env})"
        );
        drop(halved);
        let again = start(whole, by_env);
        let (status, _) = text(&client, &again.url("/dashboard")).await;
        assert_eq!(status, StatusCode::OK, "the whole secret verifies it");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn help_documents_every_option() {
    let output = run(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for option in [
        "--addr",
        "CLOAKROOM_ADDR",
        "--store",
        "CLOAKROOM_STORE",
        "--secret",
        "CLOAKROOM_SECRET",
        "--allow-short-secret",
        "CLOAKROOM_ALLOW_SHORT_SECRET",
        "--cookie-name",
        "--max-age",
        "--rolling",
        "--secure",
        "--trust-proxy",
        "--user",
    ] {
        assert!(help.contains(option), "--help lacks {option}:\n{help}");
    }
}

/// Runs the demo expecting it to refuse to start; fails the test (instead of hanging) if it is
/// still running after 20 s.
fn run_to_refusal(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo binary runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            terminate(&child);
            let output = child.wait_with_output().unwrap();
            panic!(
                "the demo started instead of refusing: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "{output:?}");
    output
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A secret under 32 bytes (the express docs' `keyboard cat`) can be found offline from one
/// cookie: refused, unless `--allow-short-secret` says it is an existing deployment's.
#[tokio::test]
async fn a_short_secret_is_refused_unless_allowed() {
    let short = "keyboard cat";
    for args in [
        &["--store", "memory", "--secret", short][..],
        &["--store", "memory", "--secret", SECRET, "--secret", short],
    ] {
        let output = run_to_refusal(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with("cloakroom-demo: "), "{stderr}");
        assert!(
            last.contains("shorter than 32 bytes") && last.contains("--allow-short-secret"),
            "says why and what to do: {stderr}"
        );
        assert!(!stderr.contains(short), "never the secret: {stderr}");
    }

    let demo = Demo::start(&[
        "--store",
        "memory",
        "--secret",
        short,
        "--allow-short-secret",
        "--user",
        "ann:pa55",
    ]);
    let client = browser();
    assert_eq!(
        log_in(&client, &demo, "ann", "pa55").await.status(),
        StatusCode::SEE_OTHER
    );
    assert!(logged_in(&client, &demo).await);
    let log = String::from_utf8_lossy(&demo.stop().stderr).into_owned();
    assert!(log.contains("--allow-short-secret"), "a warning: {log}");
    assert!(!log.contains(short), "never the secret: {log}");
}

/// A kept secret file others can read is narrowed to 0600 (with a warning, without the
/// secret), and still used.
#[cfg(unix)]
#[tokio::test]
async fn a_secret_file_others_can_read_is_narrowed_to_the_owner() {
    let dir = temp_dir("demo-secret-mode-");
    let store = sqlite_url(&dir);
    let secret_file = dir.join("sessions.secret");
    let secret = "5e".repeat(32);
    std::fs::write(&secret_file, &secret).unwrap();
    set_mode(&secret_file, 0o644);

    let demo = Demo::start(&["--store", &store, "--user", "ann:pa55"]);
    let client = browser();
    assert_eq!(
        log_in(&client, &demo, "ann", "pa55").await.status(),
        StatusCode::SEE_OTHER
    );
    let log = String::from_utf8_lossy(&demo.stop().stderr).into_owned();
    assert!(log.contains("could be read by others (mode 644)"), "{log}");
    assert!(log.contains("using the one kept in"), "{log}");
    assert!(!log.contains(&secret), "never the secret: {log}");
    assert_eq!(mode(&secret_file), 0o600);
    assert_eq!(
        std::fs::read_to_string(&secret_file).unwrap(),
        secret,
        "kept"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A symbolic link where the secret file goes is refused: the demo neither writes through it
/// (a dangling link stays dangling) nor reads, nor changes the mode of, what it points to.
#[cfg(unix)]
#[test]
fn a_symbolic_link_at_the_secret_path_is_refused() {
    let dir = temp_dir("demo-secret-link-");
    let store = sqlite_url(&dir);
    let secret_file = dir.join("sessions.secret");

    let nowhere = dir.join("not-yet-there");
    std::os::unix::fs::symlink(&nowhere, &secret_file).unwrap();
    let output = run_to_refusal(&["--store", &store]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert!(!nowhere.exists(), "nothing written through the link");

    std::fs::remove_file(&secret_file).unwrap();
    let target = dir.join("someone-elses-file");
    let contents = "7a".repeat(32);
    std::fs::write(&target, &contents).unwrap();
    set_mode(&target, 0o644);
    std::os::unix::fs::symlink(&target, &secret_file).unwrap();
    let output = run_to_refusal(&["--store", &store]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert!(!stderr.contains(&contents), "{stderr}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), contents);
    assert_eq!(mode(&target), 0o644, "the target's mode is left alone");
    std::fs::remove_dir_all(dir).unwrap();
}

/// An empty secret file is refused, not overwritten: the demo never writes over a file.
#[test]
fn an_empty_secret_file_is_refused() {
    let dir = temp_dir("demo-secret-empty-");
    let store = sqlite_url(&dir);
    let secret_file = dir.join("sessions.secret");
    std::fs::write(&secret_file, "\n").unwrap();
    let output = run_to_refusal(&["--store", &store]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is empty"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), "\n");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Every response carries the security headers; every HTML page is `no-store`; the pages take
/// their style from `/style.css` (the policy forbids inline style).
#[tokio::test]
async fn every_response_has_the_security_headers() {
    let demo = Demo::start(&common_args("memory"));
    let client = browser();
    let mut responses = Vec::new();
    for path in [
        "/",
        "/set-session",
        "/get-session",
        "/login",
        "/dashboard",
        "/logout",
        "/sessions",
        "/api/sessions",
        "/api/me",
        "/no-such-page",
    ] {
        responses.push((path, client.get(demo.url(path)).send().await.unwrap()));
    }
    responses.push(("POST /logout", post(&client, &demo, "/logout", &[]).await));
    responses.push(("POST /login", post(&client, &demo, "/login", &[]).await));
    responses.push((
        "POST /api/login",
        post(&client, &demo, "/api/login", &[]).await,
    ));
    let wrong = log_in(&client, &demo, "ann", "wrong").await;
    responses.push(("failed login", wrong));
    let right = log_in(&client, &demo, "ann", "pa55").await;
    responses.push(("login", right));
    for path in ["/dashboard", "/sessions", "/api/sessions"] {
        responses.push((path, client.get(demo.url(path)).send().await.unwrap()));
    }
    responses.push((
        "POST /sessions/revoke-others",
        post(&client, &demo, "/sessions/revoke-others", &[]).await,
    ));
    for (what, response) in &responses {
        let headers = response.headers();
        assert_eq!(
            headers[CONTENT_SECURITY_POLICY],
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'",
            "{what}"
        );
        assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
        assert_eq!(headers[REFERRER_POLICY], "same-origin", "{what}");
        assert_eq!(headers[CACHE_CONTROL], "no-store", "{what}");
    }
    for (what, response) in responses {
        let html = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|t| t.to_str().unwrap().starts_with("text/html"));
        let body = response.text().await.unwrap();
        if html {
            assert!(
                body.contains("<link rel=\"stylesheet\" href=\"/style.css\">"),
                "{what}: {body}"
            );
            assert!(
                !body.contains("<style") && !body.contains("style="),
                "{what}: {body}"
            );
        }
    }

    let css = client.get(demo.url("/style.css")).send().await.unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(css.headers()[CONTENT_TYPE], "text/css; charset=utf-8");
    assert_eq!(css.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(
        css.headers()[CACHE_CONTROL],
        "public, max-age=3600",
        "no session data: cacheable"
    );
    assert!(css.text().await.unwrap().contains("body{"));
}

/// Five failed logins for a name, then 429 with Retry-After, before the password is checked
/// (the right one too), from any address; twenty from an address, then 429 for any name from
/// it. Addresses: 127.0.0.1 and 127.0.0.2, both loopback.
#[tokio::test]
async fn failed_logins_are_limited_per_name_and_per_address() {
    let demo = Demo::start(&common_args("memory"));
    let client = browser();
    for attempt in 1..=5 {
        let response = log_in(&client, &demo, "ann", "wrong").await;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "attempt {attempt}"
        );
    }
    let blocked = log_in(&client, &demo, "ann", "pa55").await;
    assert_eq!(
        blocked.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the 6th, right password too"
    );
    let retry_after: u64 = blocked.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=15 * 60).contains(&retry_after), "{retry_after}");
    assert!(session_cookie(&blocked).is_none(), "no login");
    let body = blocked.text().await.unwrap();
    assert!(
        body.contains("Too many failed logins. Try again in 15 minutes."),
        "{body}"
    );
    assert!(!logged_in(&client, &demo).await);

    let elsewhere = browser_from(Some("127.0.0.2"));
    let other_address = log_in(&elsewhere, &demo, "ann", "pa55").await;
    assert_eq!(
        other_address.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the name is blocked from every address"
    );

    // 5 failures so far from 127.0.0.1 (the 429 is not one): 15 more, under other names.
    for name in ["bob", "carol", "dave"] {
        for _ in 0..5 {
            let response = log_in(&client, &demo, name, "wrong").await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{name}");
        }
    }
    let fresh_name = log_in(&client, &demo, "erin", "wrong").await;
    assert_eq!(
        fresh_name.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "20 failures from the address block every name from it"
    );
    let other = log_in(&elsewhere, &demo, "erin", "wrong").await;
    assert_eq!(other.status(), StatusCode::SEE_OTHER, "not other addresses");
}

/// A successful login resets its name's count: 4 failures, a login, 4 failures, a login.
#[tokio::test]
async fn a_successful_login_resets_the_name_count() {
    let demo = Demo::start(&common_args("memory"));
    for round in 0..2 {
        let client = browser();
        for _ in 0..4 {
            let response = log_in(&client, &demo, "ann", "wrong").await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "round {round}");
        }
        let right = log_in(&client, &demo, "ann", "pa55").await;
        assert_eq!(right.status(), StatusCode::SEE_OTHER, "round {round}");
    }
}

/// A client without cookies: `POST /api/login` (JSON) returns the session's token in
/// `X-Session-Token`; `Authorization: Bearer <token>` then reaches the session.
async fn api_login(client: &reqwest::Client, demo: &Demo, body: &str) -> reqwest::Response {
    client
        .post(demo.url("/api/login"))
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// A response's status and JSON body.
async fn json(response: reqwest::Response) -> (StatusCode, serde_json::Value) {
    let status = response.status();
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{status}: {:?}",
        response.headers()
    );
    let body = response.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap())
}

/// `GET path` with `Authorization: <authorization>`.
async fn with_authorization(
    client: &reqwest::Client,
    demo: &Demo,
    path: &str,
    authorization: &str,
) -> reqwest::Response {
    client
        .get(demo.url(path))
        .header(AUTHORIZATION, authorization)
        .send()
        .await
        .unwrap()
}

/// The JSON API for header clients: a login answers the token in `X-Session-Token` (not in the
/// body), the token reaches the session and its place in the session list; no token, a forged
/// one or garbage is simply not logged in (401, JSON), an oversized header is 431; a wrong
/// password is 401, a form or other non-JSON body 415 (so an HTML form on another site cannot
/// post it), bad JSON 400; the failed-login limit applies as to the form.
#[tokio::test]
async fn api_clients_log_in_with_a_bearer_token() {
    let demo = Demo::start(&common_args("memory"));
    // No cookie jar: the token header is all this client has.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let response = api_login(&client, &demo, r#"{"username": "ann", "password": "pa55"}"#).await;
    let token = response
        .headers()
        .get("x-session-token")
        .expect("the token in X-Session-Token")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        token.starts_with("s:") && token.contains('.'),
        "a signed id: {token}"
    );
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, serde_json::json!({ "ok": true }));
    let bearer = format!("Bearer {token}");

    let (status, me) = json(with_authorization(&client, &demo, "/api/me", &bearer).await).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me, serde_json::json!({ "username": "ann" }));

    let anonymous = client.get(demo.url("/api/me")).send().await.unwrap();
    let (status, body) = json(anonymous).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, serde_json::json!({ "error": "not logged in" }));
    let (id, _) = token["s:".len()..].split_once('.').unwrap();
    for forged in [
        "Bearer garbage".to_owned(),
        format!("Bearer s:{id}.forgedsignature"),
        format!("Bearer {token}x"),
        "Bearer ".to_owned(),
    ] {
        let response = with_authorization(&client, &demo, "/api/me", &forged).await;
        let (status, body) = json(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{forged}: {body}");
        assert_eq!(body["error"], "not logged in", "{forged}");
    }
    let huge = format!("Bearer {}", "x".repeat(2000));
    let response = with_authorization(&client, &demo, "/api/me", &huge).await;
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(response.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");

    // The token's session is the user's: listed, marked as this one, by handle (no id).
    let response = with_authorization(&client, &demo, "/api/sessions", &bearer).await;
    let (status, list) = json(response).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["current"], true, "{list}");
    assert!(!list.to_string().contains(id), "no session id: {list}");

    let wrong = api_login(&client, &demo, r#"{"username": "ann", "password": "nope"}"#).await;
    assert!(
        wrong.headers().get("x-session-token").is_none(),
        "no session for a failure"
    );
    let (status, body) = json(wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, serde_json::json!({ "error": "invalid credentials" }));

    // What an HTML form can send (another site's page posting a browser's cookie along): 415.
    let browser = browser();
    let form = browser
        .post(demo.url("/api/login"))
        .form(&[("username", "ann"), ("password", "pa55")])
        .send()
        .await
        .unwrap();
    let (status, body) = json(form).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let plain = browser
        .post(demo.url("/api/login"))
        .header(CONTENT_TYPE, "text/plain")
        .body(r#"{"username": "ann", "password": "pa55"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(session_cookie(&plain).is_none(), "nothing done");
    assert!(!logged_in(&browser, &demo).await);
    for bad in [
        "",
        "{",
        "[]",
        r#"{"username": "ann"}"#,
        r#"{"username": 1, "password": 2}"#,
    ] {
        let (status, body) = json(api_login(&client, &demo, bad).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert!(body["error"].is_string(), "{bad:?}: {body}");
    }

    // The form login's limit: 5 failures for the name (one above), then 429, right password too.
    for _ in 0..4 {
        let response = api_login(&client, &demo, r#"{"username": "ann", "password": "x"}"#).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let blocked = api_login(&client, &demo, r#"{"username": "ann", "password": "pa55"}"#).await;
    let retry_after: u64 = blocked.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=15 * 60).contains(&retry_after), "{retry_after}");
    let (status, body) = json(blocked).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"].is_string(), "{body}");
    // The session logged in before is not affected.
    let response = with_authorization(&client, &demo, "/api/me", &bearer).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// The session id a login's `Set-Cookie` carries (`connect.sid=s%3A<id>.<signature>`).
fn session_id(response: &reqwest::Response) -> String {
    let cookie = session_cookie(response).expect("a session cookie");
    let value = cookie["connect.sid=".len()..].split(';').next().unwrap();
    let signed = value
        .strip_prefix("s%3A")
        .or_else(|| value.strip_prefix("s:"))
        .unwrap_or_else(|| panic!("a signed cookie: {cookie}"));
    signed.split('.').next().unwrap().to_owned()
}

/// `GET /api/sessions`: the status and the body, as JSON.
async fn session_list(client: &reqwest::Client, demo: &Demo) -> (StatusCode, serde_json::Value) {
    let response = client.get(demo.url("/api/sessions")).send().await.unwrap();
    let status = response.status();
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        response.headers()
    );
    let body = response.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap())
}

/// One user, three clients: the list shows three sessions (this one marked, no session id in
/// it), "sign out all other sessions" logs the other two out, one session signs out by its
/// handle, and a handle of another user's session (a second demo, another `--user`, the same
/// store) revokes nothing. Every POST needs the form's token. The names are unique: Redis and
/// PostgreSQL are shared with other tests.
async fn sessions_of_one_user(store: &str) {
    let ann = cloakroom_testkit::unique_name("ann-");
    let bob = cloakroom_testkit::unique_name("bob-");
    let ann_user = format!("{ann}:pa55");
    let bob_user = format!("{bob}:pa55");
    let demo = Demo::start(&["--store", store, "--secret", SECRET, "--user", &ann_user]);
    let other = Demo::start(&["--store", store, "--secret", SECRET, "--user", &bob_user]);

    let (first, second) = (browser(), browser());
    let firefox = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
        .build()
        .unwrap();
    let not_logged_in = session_list(&first, &demo).await;
    assert_eq!(not_logged_in.0, StatusCode::UNAUTHORIZED);
    assert!(not_logged_in.1["error"].is_string(), "{}", not_logged_in.1);
    let page = first.get(demo.url("/sessions")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()[LOCATION], "/login");

    let mut ids = Vec::new();
    for client in [&first, &second, &firefox] {
        let response = log_in(client, &demo, &ann, "pa55").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        ids.push(session_id(&response));
    }
    let response = first.get(demo.url("/api/sessions")).send().await.unwrap();
    let body = response.text().await.unwrap();
    for id in &ids {
        assert!(
            !body.contains(id.as_str()),
            "no session id in the list: {body}"
        );
    }
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 3, "{body}");
    assert_eq!(
        list.iter().filter(|s| s["current"] == true).count(),
        1,
        "{body}"
    );
    assert_eq!(list[0]["current"], true, "this session first: {body}");
    for session in &list {
        for key in ["handle", "created", "last_seen", "expires"] {
            assert!(session[key].is_string(), "{key}: {body}");
        }
    }
    let devices: Vec<&str> = list
        .iter()
        .map(|s| s["info"]["device"].as_str().unwrap())
        .collect();
    assert_eq!(
        devices.iter().filter(|d| **d == "Firefox on Linux").count(),
        1,
        "{body}"
    );
    assert_eq!(
        devices.iter().filter(|d| **d == "Unknown device").count(),
        2,
        "no User-Agent: {body}"
    );

    let (status, html) = text(&first, &demo.url("/sessions")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(html.matches("This session").count(), 1, "{html}");
    assert_eq!(
        html.matches("action=\"/sessions/revoke\"").count(),
        2,
        "{html}"
    );
    assert!(html.contains("Sign out all other sessions"), "{html}");
    let token = csrf_token(&html);
    let (_, dashboard) = text(&first, &demo.url("/dashboard")).await;
    assert!(dashboard.contains("href=\"/sessions\""), "{dashboard}");

    // Another user's handle: 404, and that user is still logged in.
    let bobs = browser();
    assert_eq!(
        log_in(&bobs, &other, &bob, "pa55").await.status(),
        StatusCode::SEE_OTHER
    );
    let (status, bob_list) = session_list(&bobs, &other).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bob_list.as_array().unwrap().len(), 1, "{bob_list}");
    let bob_handle = bob_list[0]["handle"].as_str().unwrap().to_owned();
    for handle in [bob_handle.as_str(), "forged", ""] {
        let response = post(
            &first,
            &demo,
            "/sessions/revoke",
            &[("handle", handle), ("_csrf", &token)],
        )
        .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{handle:?}");
    }
    assert!(
        logged_in(&bobs, &other).await,
        "another user's session stays"
    );

    // Without the token: 403, nobody signed out.
    let another_handle = list[1]["handle"].as_str().unwrap().to_owned();
    for fields in [&[][..], &[("_csrf", "forged")]] {
        let response = post(&first, &demo, "/sessions/revoke-others", fields).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{fields:?}");
        let mut with_handle = fields.to_vec();
        with_handle.push(("handle", another_handle.as_str()));
        let response = post(&first, &demo, "/sessions/revoke", &with_handle).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{fields:?}");
    }
    let (_, still) = session_list(&first, &demo).await;
    assert_eq!(still.as_array().unwrap().len(), 3, "{still}");

    // One session by its handle.
    let response = post(
        &first,
        &demo,
        "/sessions/revoke",
        &[("handle", &another_handle), ("_csrf", &token)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/sessions");
    let (_, html) = text(&first, &demo.url("/sessions")).await;
    assert_eq!(
        html.matches("<p class=\"info\" role=\"status\">Signed out 1 other session.</p>")
            .count(),
        1,
        "{html}"
    );
    let (_, html) = text(&first, &demo.url("/sessions")).await;
    assert!(!html.contains("Signed out"), "shown once: {html}");
    let (_, left) = session_list(&first, &demo).await;
    assert_eq!(left.as_array().unwrap().len(), 2, "{left}");
    let response = post(
        &first,
        &demo,
        "/sessions/revoke",
        &[("handle", &another_handle), ("_csrf", &token)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "revoked already");

    // Every other one, then: the others are logged out, this one is not.
    assert_eq!(
        log_in(&second, &demo, &ann, "pa55").await.status(),
        StatusCode::SEE_OTHER
    );
    let (_, before) = session_list(&first, &demo).await;
    let others = before.as_array().unwrap().len() - 1;
    assert!(others > 0, "{before}");
    let response = post(
        &first,
        &demo,
        "/sessions/revoke-others",
        &[("_csrf", &token)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/sessions");
    let (_, html) = text(&first, &demo.url("/sessions")).await;
    let sessions = if others == 1 { "session" } else { "sessions" };
    let notice =
        format!("<p class=\"info\" role=\"status\">Signed out {others} other {sessions}.</p>");
    assert!(html.contains(&notice), "{html}");
    for client in [&second, &firefox] {
        assert!(!logged_in(client, &demo).await, "signed out elsewhere");
        assert_eq!(
            session_list(client, &demo).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(logged_in(&first, &demo).await, "this session stays");
    let (_, mine) = session_list(&first, &demo).await;
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine[0]["current"], true, "{mine}");
    assert!(
        logged_in(&bobs, &other).await,
        "another user's session stays"
    );
    let (_, html) = text(&first, &demo.url("/sessions")).await;
    assert!(
        !html.contains("/sessions/revoke"),
        "nothing to sign out: {html}"
    );
}

#[tokio::test]
async fn a_user_lists_and_signs_out_their_sessions_on_sqlite() {
    let dir = temp_dir("demo-sessions-");
    sessions_of_one_user(&sqlite_url(&dir)).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_user_lists_and_signs_out_their_sessions_on_redis() {
    let url = cloakroom_testkit::server_url(
        "CLOAKROOM_REDIS_URL",
        "./scripts/test.sh starts Redis and sets it",
    );
    sessions_of_one_user(&url).await;
}

#[tokio::test]
async fn a_user_lists_and_signs_out_their_sessions_on_postgres() {
    let url = cloakroom_testkit::server_url(
        "CLOAKROOM_POSTGRES_URL",
        "./scripts/test.sh starts PostgreSQL and sets it",
    );
    sessions_of_one_user(&url).await;
}

#[tokio::test]
async fn a_user_lists_and_signs_out_their_sessions_on_mysql() {
    let url = cloakroom_testkit::server_url(
        "CLOAKROOM_MYSQL_URL",
        "./scripts/test.sh starts MariaDB and sets it",
    );
    sessions_of_one_user(&url).await;
}
