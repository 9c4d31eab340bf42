//! The demo binary, started on a free port and driven over HTTP with a cookie jar, against
//! every store; and its command line.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};

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
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn text(client: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let response = client.get(url).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn log_in(
    client: &reqwest::Client,
    demo: &Demo,
    user: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(demo.url("/login"))
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap()
}

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

    let wrong = log_in(&client, demo, "<b>ann</b>", "nope").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body = wrong.text().await.unwrap();
    assert!(body.contains("Invalid username or password."), "{body}");
    assert!(
        body.contains("value=\"&lt;b&gt;ann&lt;/b&gt;\""),
        "escaped: {body}"
    );

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
    assert!(body.contains("href=\"/logout\""), "{body}");

    let out = client.get(demo.url("/logout")).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(out.headers()[LOCATION], "/login");
    let expired = session_cookie(&out).expect("logout expires the cookie");
    assert!(
        expired.contains("Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
        "{expired}"
    );
    let response = client.get(demo.url("/dashboard")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "logged out");
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
        (&["--store", "mysql://db"], "--store"),
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
    let whole = "comma, then more of the same test secret";
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
        let half = start("comma", by_env);
        let (status, _) = text(&client, &half.url("/dashboard")).await;
        assert_eq!(
            status,
            StatusCode::SEE_OTHER,
            "a demo with only `comma` must not accept the cookie (by_env: {by_env})"
        );
        drop(half);
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
