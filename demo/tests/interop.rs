//! Express interop: the cloakroom demo and a real Express app (express-session 1.19 with
//! connect-redis, connect-pg-simple or express-mysql-session; `interop/app.js`) share one store,
//! one secret list and one cookie name, so they share one login, and the forms' anti-forgery
//! token (session key `csrfToken`, field `_csrf`): a form either serves can be posted to the
//! other. Every scenario runs on Redis, on PostgreSQL and on MariaDB, and all but two on
//! DynamoDB (connect-dynamodb on dynalite, `dynamodb::*`), with both servers started on free
//! ports for that test only.
//!
//! Cookies: a [`Browser`] is one reqwest client with its own cookie jar. A jar, like a
//! browser, keys cookies by host and not by port, so one `Browser` talking to both
//! `127.0.0.1` ports sends the cookie either server set to both. Where a test needs to present
//! a cookie the jar would not (one the browser already dropped, or one from another server to
//! replay), it starts a fresh `Browser` holding exactly that cookie ([`Browser::holding`]).
//!
//! Needs `npm ci --prefix interop` (./scripts/test.sh runs it) and the servers of
//! ./scripts/test.sh (`CLOAKROOM_REDIS_URL`, `CLOAKROOM_POSTGRES_URL`, `CLOAKROOM_MYSQL_URL`,
//! `CLOAKROOM_DYNAMODB_URL`); `redis-cli`, `psql`, `mariadb` and, for DynamoDB, node with the
//! AWS SDK for JavaScript read the raw records.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloakroom::store::{Condition, SessionStore, SetOutcome};
use reqwest::cookie::{CookieStore as _, Jar};
use reqwest::header::{DATE, LOCATION, SET_COOKIE};
use reqwest::{StatusCode, Url};
use serde_json::Value;

const DEMO_BIN: &str = env!("CARGO_BIN_EXE_cloakroom-demo");
const SECRET: &str = "interop test secret, obviously fake";
const NEW_SECRET: &str = "interop new secret, obviously fake";
const OLD_SECRET: &str = "interop old secret, obviously fake";
const UNKNOWN_SECRET: &str = "a fake secret neither server knows";
const USER: &str = "ann";
const PASSWORD: &str = "pa55";
/// Both servers' session lifetime by default: 30 minutes.
const MAX_AGE_MS: i64 = 30 * 60 * 1000;

// ---------------------------------------------------------------------------------------------
// Servers

/// Which session store both servers use.
#[derive(Clone)]
enum Store {
    Redis(String),
    Postgres(String),
    Mysql(String),
    /// `dynamodb://HOST:PORT/TABLE`: connect-dynamodb and the demo on dynalite.
    Dynamodb(String),
}

/// The DynamoDB table both servers share (dynalite keeps it for the whole test run).
const DYNAMODB_TABLE: &str = "interop-sessions";
/// Obviously fake credentials for dynalite, which checks none, given to the demo through the
/// standard AWS variables (and no instance metadata is ever asked for).
const AWS_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "AKIDFAKEINTEROPTEST"),
    ("AWS_SECRET_ACCESS_KEY", "fake-interop-test-secret"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// The cloakroom store on the shared DynamoDB table, as the demo opens it (with the table made
/// if missing: the owner index and TTL).
async fn dynamodb_store(url: &str) -> cloakroom::DynamoDbStore {
    let rest = url.strip_prefix("dynamodb://").expect("a dynamodb:// URL");
    let (host, table) = rest.split_once('/').expect("dynamodb://HOST:PORT/TABLE");
    cloakroom::DynamoDbStore::builder()
        .with_endpoint_url(format!("http://{host}"))
        .with_region("us-east-1")
        .with_credentials(AWS_ENV[0].1, AWS_ENV[1].1)
        .with_table_name(table)
        .with_create_table_if_missing(true)
        .build()
        .await
        .expect("the DynamoDB table")
}

impl Store {
    fn redis() -> Store {
        Store::Redis(cloakroom_testkit::server_url(
            "CLOAKROOM_REDIS_URL",
            "./scripts/test.sh starts Redis and sets it",
        ))
    }

    fn postgres() -> Store {
        Store::Postgres(cloakroom_testkit::server_url(
            "CLOAKROOM_POSTGRES_URL",
            "./scripts/test.sh starts PostgreSQL and sets it",
        ))
    }

    fn mysql() -> Store {
        Store::Mysql(cloakroom_testkit::server_url(
            "CLOAKROOM_MYSQL_URL",
            "./scripts/test.sh starts MariaDB and sets it",
        ))
    }

    /// dynalite, with the shared table made before either server starts (connect-dynamodb
    /// would make one too, but does not wait for it to be ready).
    fn dynamodb() -> Store {
        static TABLE_READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        let endpoint = cloakroom_testkit::server_url(
            "CLOAKROOM_DYNAMODB_URL",
            "./scripts/test.sh starts dynalite and sets it",
        );
        let host = endpoint
            .strip_prefix("http://")
            .expect("an http:// endpoint");
        let url = format!("dynamodb://{host}/{DYNAMODB_TABLE}");
        TABLE_READY.get_or_init(|| {
            let url = url.clone();
            // Its own runtime: the caller's may be a current-thread one, which cannot block.
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(dynamodb_store(&url));
            })
            .join()
            .expect("the interop table is made");
        });
        Store::Dynamodb(url)
    }

    fn url(&self) -> &str {
        match self {
            Store::Redis(url) | Store::Postgres(url) | Store::Mysql(url) | Store::Dynamodb(url) => {
                url
            }
        }
    }

    /// The record stored for `sid`, read with the server's own client (not through cloakroom
    /// or Express): its JSON text, verbatim, and `expiry`: for Redis the key's TTL in seconds;
    /// for PostgreSQL and MySQL the `expire` (`expires`) column minus the JSON's
    /// `cookie.expires`, in seconds.
    fn raw(&self, sid: &str) -> Option<RawRecord> {
        assert!(
            sid.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "not a session id: {sid:?}"
        );
        match self {
            Store::Redis(url) => {
                let key = format!("sess:{sid}");
                let json = tool("redis-cli", &["-u", url, "--raw", "GET", &key]);
                if json.is_empty() {
                    return None;
                }
                let ttl = tool("redis-cli", &["-u", url, "--raw", "TTL", &key]);
                Some(RawRecord {
                    json,
                    expiry: ttl.parse().expect("TTL is a number"),
                })
            }
            Store::Postgres(url) => {
                let sql = format!(
                    "SELECT sess::text, extract(epoch from expire) \
                     - extract(epoch from (sess->'cookie'->>'expires')::timestamptz) \
                     FROM session WHERE sid = '{sid}'"
                );
                let out = tool(
                    "psql",
                    &[url, "-X", "-A", "-t", "-q", "-F", "\t", "-c", &sql],
                );
                let (json, expiry) = out.rsplit_once('\t')?;
                Some(RawRecord {
                    json: json.to_owned(),
                    expiry: expiry.parse().expect("a number of seconds"),
                })
            }
            Store::Mysql(url) => {
                // `cookie.expires` is UTC: the session's time zone must be too. `--raw`: the JSON
                // as stored, without the batch mode's escaping.
                let sql = format!(
                    "SET time_zone = '+00:00'; SELECT data, expires - UNIX_TIMESTAMP(STR_TO_DATE(\
                     JSON_VALUE(data, '$.cookie.expires'), '%Y-%m-%dT%H:%i:%s.%fZ')) \
                     FROM sessions WHERE session_id = '{sid}'"
                );
                let url = Url::parse(url).expect("a mysql:// URL");
                let port = url.port().unwrap_or(3306).to_string();
                let out = tool(
                    "mariadb",
                    &[
                        "--no-defaults",
                        "--batch",
                        "--raw",
                        "--skip-column-names",
                        "-h",
                        url.host_str().expect("a host"),
                        "-P",
                        &port,
                        "-u",
                        url.username(),
                        url.path().trim_start_matches('/'),
                        "-e",
                        &sql,
                    ],
                );
                let (json, expiry) = out.rsplit_once('\t')?;
                Some(RawRecord {
                    json: json.to_owned(),
                    expiry: expiry.parse().expect("a number of seconds"),
                })
            }
            // With the AWS SDK for JavaScript, as connect-dynamodb reads: a consistent GetItem.
            Store::Dynamodb(url) => {
                let rest = url.strip_prefix("dynamodb://").expect("a dynamodb:// URL");
                let (host, table) = rest.split_once('/').expect("HOST:PORT/TABLE");
                let output = Command::new("node")
                    .current_dir(interop_dir())
                    .args(["-e", DYNAMODB_RAW_JS])
                    .arg(format!("http://{host}"))
                    .arg(table)
                    .arg(format!("sess:{sid}"))
                    .envs(AWS_ENV)
                    .stdin(Stdio::null())
                    .output()
                    .expect("node runs");
                assert!(
                    output.status.success(),
                    "reading the item failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                let out = String::from_utf8(output.stdout).expect("UTF-8 output");
                let (json, expiry) = out.rsplit_once('\t')?;
                Some(RawRecord {
                    json: json.to_owned(),
                    expiry: expiry.parse().expect("a number of seconds"),
                })
            }
        }
    }
}

/// Prints the item's `sess` and, after a tab, `expires` minus the JSON's `cookie.expires` in
/// seconds; nothing for no item (or a stub without `sess`). Arguments: endpoint, table, key.
const DYNAMODB_RAW_JS: &str = r"
const { DynamoDBClient, GetItemCommand } = require('@aws-sdk/client-dynamodb');
const [endpoint, table, key] = process.argv.slice(1);
const client = new DynamoDBClient({ endpoint, region: process.env.AWS_REGION });
client.send(new GetItemCommand({ TableName: table, Key: { id: { S: key } }, ConsistentRead: true }))
  .then(({ Item }) => {
    if (!Item || !Item.sess) return;
    const json = Item.sess.S;
    const expires = Number(Item.expires.N) - Date.parse(JSON.parse(json).cookie.expires) / 1000;
    process.stdout.write(`${json}\t${expires}`);
  })
  .catch((error) => { process.stderr.write(String(error)); process.exit(1); });
";

/// A record as the store holds it.
#[derive(Debug)]
struct RawRecord {
    json: String,
    expiry: f64,
}

impl RawRecord {
    fn value(&self) -> Value {
        serde_json::from_str(&self.json)
            .unwrap_or_else(|e| panic!("the stored record is not JSON ({e}): {}", self.json))
    }
}

/// Runs a command-line client and returns its trimmed stdout; fails the test if it fails.
fn tool(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): ./scripts/services.sh installs it")
        });
    assert!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .trim()
        .to_owned()
}

/// Server starts happen one at a time: the first PostgreSQL start creates the shared
/// `session` table, and two creating it at once could collide.
static STARTS: Mutex<()> = Mutex::new(());

/// A running server (the cloakroom demo or the Express app), stopped when dropped. Its stderr
/// goes to a log file, shown when it fails to start.
struct Server {
    name: &'static str,
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl Server {
    /// The cloakroom demo on `store`, signing with `secrets[0]`, verifying with all.
    fn cloakroom(store: &Store, secrets: &[&str], extra: &[&str]) -> Server {
        Server::cloakroom_as(USER, store, secrets, extra)
    }

    /// As [`cloakroom`](Self::cloakroom), with `user` as the account that can log in.
    fn cloakroom_as(user: &str, store: &Store, secrets: &[&str], extra: &[&str]) -> Server {
        let port = free_port();
        let mut command = Command::new(DEMO_BIN);
        command
            .env_clear()
            .envs(
                match store {
                    Store::Dynamodb(_) => &AWS_ENV[..],
                    _ => &AWS_ENV[..0],
                }
                .iter()
                .copied(),
            )
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--store", store.url()])
            .args(["--user", &format!("{user}:{PASSWORD}")])
            .args(extra);
        for secret in secrets {
            command.args(["--secret", secret]);
        }
        Server::spawn("cloakroom", command, port)
    }

    /// The Express app (`interop/app.js`) on `store`, signing with `secrets[0]`.
    fn express(store: &Store, secrets: &[&str], max_age_ms: Option<u64>) -> Server {
        Server::express_as(USER, store, secrets, max_age_ms)
    }

    /// As [`express`](Self::express), with `user` as the account that can log in.
    fn express_as(user: &str, store: &Store, secrets: &[&str], max_age_ms: Option<u64>) -> Server {
        let app = interop_dir().join("app.js");
        let port = free_port();
        let mut command = Command::new("node");
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("STORE", store.url())
            .env("SECRETS", secrets.join("\n"))
            .env("USER", format!("{user}:{PASSWORD}"))
            .arg(app);
        if let Some(ms) = max_age_ms {
            command.env("COOKIE_MAX_AGE_MS", ms.to_string());
        }
        Server::spawn("express", command, port)
    }

    fn spawn(name: &'static str, mut command: Command, port: u16) -> Server {
        let log = std::env::temp_dir().join(cloakroom_testkit::unique_name("interop-log-"));
        let stderr = File::create(&log).expect("a log file");
        let _one_at_a_time = STARTS.lock().unwrap_or_else(|e| e.into_inner());
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut server = Server {
            name,
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                panic!(
                    "{name} did not start listening on {port} ({}); its log:\n{}",
                    exited.map_or("timed out after 20 s".to_owned(), |s| s.to_string()),
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `interop/`, with its node_modules: a missing install fails the test, saying how to fix it.
fn interop_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop");
    for package in [
        "express",
        "express-session",
        "connect-redis",
        "connect-pg-simple",
        "connect-dynamodb",
        "@aws-sdk/client-dynamodb",
    ] {
        assert!(
            dir.join("node_modules").join(package).is_dir(),
            "interop/node_modules/{package} is missing: run npm ci --prefix interop \
             (./scripts/test.sh does)"
        );
    }
    dir
}

// ---------------------------------------------------------------------------------------------
// Browsers

/// One browser: a client with its own cookie jar (shared by every 127.0.0.1 port), not
/// following redirects so tests see the 303s.
struct Browser {
    client: reqwest::Client,
    jar: Arc<Jar>,
}

/// What a request got back.
struct Reply {
    status: StatusCode,
    location: Option<String>,
    date: Option<String>,
    /// The `connect.sid` Set-Cookie header, if any.
    set_cookie: Option<String>,
    body: String,
}

impl Browser {
    fn new() -> Browser {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Browser { client, jar }
    }

    /// A fresh browser holding exactly this `connect.sid` value (as a session cookie).
    fn holding(value: &str) -> Browser {
        let browser = Browser::new();
        browser
            .jar
            .add_cookie_str(&format!("connect.sid={value}; Path=/"), &local());
        browser
    }

    /// The `connect.sid` value the jar would send now.
    fn cookie(&self) -> Option<String> {
        let header = self.jar.cookies(&local())?;
        header
            .to_str()
            .unwrap()
            .split("; ")
            .find_map(|pair| pair.strip_prefix("connect.sid="))
            .map(str::to_owned)
    }

    async fn get(&self, server: &Server, path: &str) -> Reply {
        let response = self.client.get(server.url(path)).send().await;
        reply(server, path, response).await
    }

    async fn post(&self, server: &Server, path: &str, form: &[(&str, &str)]) -> Reply {
        let response = self.client.post(server.url(path)).form(form).send().await;
        reply(server, &format!("POST {path}"), response).await
    }

    /// The anti-forgery token of the form `path` on `server` shows.
    async fn form_token(&self, server: &Server, path: &str) -> String {
        let page = self.get(server, path).await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "{} {path}: {}",
            server.name,
            page.body
        );
        csrf_token(&page.body)
            .unwrap_or_else(|| panic!("{} {path}: no token field in {}", server.name, page.body))
    }

    /// Logs in on `server` with the form (and its token) `server` shows.
    async fn log_in(&self, server: &Server, password: &str) -> Reply {
        self.log_in_with_form_of(server, server, password).await
    }

    /// Logs in on `server` with the form `form_server` shows.
    async fn log_in_with_form_of(
        &self,
        form_server: &Server,
        server: &Server,
        password: &str,
    ) -> Reply {
        let token = self.form_token(form_server, "/login").await;
        self.post(
            server,
            "/login",
            &[
                ("username", USER),
                ("password", password),
                ("_csrf", &token),
            ],
        )
        .await
    }

    /// Logs in on `server` as `user` (a server started with that account).
    async fn log_in_as(&self, server: &Server, user: &str) {
        let token = self.form_token(server, "/login").await;
        let form = [
            ("username", user),
            ("password", PASSWORD),
            ("_csrf", &token),
        ];
        let reply = self.post(server, "/login", &form).await;
        assert_eq!(
            reply.status,
            StatusCode::SEE_OTHER,
            "{}: {}",
            server.name,
            reply.body
        );
    }

    /// Logs out on `server` with the button of the dashboard `form_server` shows.
    async fn log_out_with_form_of(&self, form_server: &Server, server: &Server) -> Reply {
        let token = self.form_token(form_server, "/dashboard").await;
        self.post(server, "/logout", &[("_csrf", &token)]).await
    }

    /// `/` on `server`: the view count it shows.
    async fn views(&self, server: &Server) -> u64 {
        let reply = self.get(server, "/").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{}: {}",
            server.name,
            reply.body
        );
        let start = reply
            .body
            .find("Number of views ")
            .unwrap_or_else(|| panic!("{}: no view count in {}", server.name, reply.body));
        reply.body[start + "Number of views ".len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a count")
    }

    /// Whether `server`'s dashboard greets the user (else it must redirect to the login).
    async fn logged_in(&self, server: &Server) -> bool {
        let reply = self.get(server, "/dashboard").await;
        match reply.status {
            StatusCode::OK => {
                assert!(
                    reply
                        .body
                        .contains(&format!("Welcome {USER}! This is your dashboard.")),
                    "{}: {}",
                    server.name,
                    reply.body
                );
                true
            }
            StatusCode::SEE_OTHER => {
                assert_eq!(reply.location.as_deref(), Some("/login"), "{}", server.name);
                false
            }
            other => panic!(
                "{}: /dashboard answered {other}: {}",
                server.name, reply.body
            ),
        }
    }
}

async fn reply(server: &Server, what: &str, response: reqwest::Result<reqwest::Response>) -> Reply {
    let response =
        response.unwrap_or_else(|e| panic!("{} {what}: request failed: {e}", server.name));
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let (location, date) = (header(LOCATION), header(DATE));
    let set_cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("connect.sid="));
    Reply {
        status: response.status(),
        location,
        date,
        set_cookie,
        body: response.text().await.unwrap_or_default(),
    }
}

fn local() -> Url {
    "http://127.0.0.1/".parse().unwrap()
}

/// The token in a page's hidden `_csrf` field, written alike by both servers.
fn csrf_token(page: &str) -> Option<String> {
    let field = "<input type=\"hidden\" name=\"_csrf\" value=\"";
    let start = page.find(field)? + field.len();
    let token = page[start..].split('"').next()?;
    assert!(
        token.len() == 43
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "32 random bytes in base64url: {token}"
    );
    Some(token.to_owned())
}

const FORGED_FORM: &str = "This form has expired. Reload the page and try again.";

/// The session id inside a `connect.sid` value `s%3A<id>.<signature>`.
fn sid_of(value: &str) -> String {
    let signed = value
        .strip_prefix("s%3A")
        .unwrap_or_else(|| panic!("not a signed express-session cookie: {value}"));
    signed.rsplit_once('.').expect("id.signature").0.to_owned()
}

/// The value of a `connect.sid=<value>; …` Set-Cookie header.
fn value_of(set_cookie: &str) -> String {
    set_cookie
        .strip_prefix("connect.sid=")
        .and_then(|rest| rest.split(';').next())
        .expect("connect.sid=…")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The Set-Cookie shape

/// Checks `header` is `connect.sid=s%3A<32 base64url>.<43 base64, URL-encoded>; Path=/;
/// Expires=<IMF-fixdate>; HttpOnly; SameSite=Lax` exactly as express-session writes it, and
/// returns the attribute names in order (to compare the two servers) and the expiry instant.
fn check_shape(server: &str, header: &str) -> (Vec<String>, i64) {
    let mut parts = header.split("; ");
    let value = value_of(parts.next().unwrap());
    let signed = value
        .strip_prefix("s%3A")
        .unwrap_or_else(|| panic!("{server}: the value must start with s%3A: {header}"));
    let (sid, encoded_signature) = signed.split_once('.').expect("id.signature");
    assert!(
        sid.len() == 32
            && sid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{server}: the id must be 32 base64url characters: {header}"
    );
    let signature = encoded_signature.replace("%2B", "+").replace("%2F", "/");
    assert!(
        signature.len() == 43
            && signature
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
        "{server}: the signature must be 43 base64 characters without padding: {header}"
    );
    assert!(
        !encoded_signature.contains(['+', '/', '=']),
        "{server}: + and / must be URL-encoded like encodeURIComponent: {header}"
    );
    let mut names = Vec::new();
    let mut expires = None;
    for attribute in parts {
        let (name, value) = attribute.split_once('=').unwrap_or((attribute, ""));
        match name {
            "Path" => assert_eq!(value, "/", "{server}: {header}"),
            "Expires" => expires = Some(parse_http_date(value)),
            "SameSite" => assert_eq!(value, "Lax", "{server}: {header}"),
            "HttpOnly" => assert_eq!(value, "", "{server}: {header}"),
            other => panic!("{server}: unexpected attribute {other}: {header}"),
        }
        names.push(name.to_owned());
    }
    assert_eq!(
        names,
        ["Path", "Expires", "HttpOnly", "SameSite"],
        "{server}: attributes and their order: {header}"
    );
    (names, expires.expect("an Expires attribute"))
}

/// Seconds since the Unix epoch of an IMF-fixdate (`Sun, 22 Nov 2026 09:36:51 GMT`), checking
/// its exact form, weekday included.
fn parse_http_date(text: &str) -> i64 {
    imf_fixdate(text).unwrap_or_else(|| panic!("not an IMF-fixdate: {text:?}"))
}

fn imf_fixdate(text: &str) -> Option<i64> {
    let fields: Vec<&str> = text.split(' ').collect();
    let [weekday, day, month, year, time, "GMT"] = fields[..] else {
        return None;
    };
    let weekdays = ["Thu,", "Fri,", "Sat,", "Sun,", "Mon,", "Tue,", "Wed,"];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = i64::try_from(months.iter().position(|m| *m == month)?).ok()? + 1;
    if day.len() != 2 || year.len() != 4 || time.len() != 8 {
        return None;
    }
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time
        .split(':')
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms[..] else { return None };
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (weekday == weekdays[usize::try_from(days.rem_euclid(7)).ok()?])
        .then_some(days * 86_400 + h * 3600 + m * 60 + s)
}

// ---------------------------------------------------------------------------------------------
// Scenarios, each run on Redis and on PostgreSQL

/// A login on either server is a login on both, and a logout on either ends it on both (the
/// record is gone: even the old cookie, replayed, is no longer logged in; the browser holds a new
/// session's cookie, the one carrying the logout notice). Each form is taken from one server
/// and posted to the other: each accepts the other's token.
async fn one_login(store: Store) {
    let cloakroom = Server::cloakroom(&store, &[SECRET], &[]);
    let express = Server::express(&store, &[SECRET], None);

    for (first, second) in [(&express, &cloakroom), (&cloakroom, &express)] {
        let browser = Browser::new();
        assert!(!browser.logged_in(second).await);
        let wrong = browser.log_in(first, "wrong").await;
        assert_eq!(wrong.status, StatusCode::SEE_OTHER, "{}", first.name);
        assert_eq!(wrong.location.as_deref(), Some("/login"), "{}", first.name);
        let login = browser.log_in_with_form_of(second, first, PASSWORD).await;
        assert_eq!(login.status, StatusCode::SEE_OTHER, "{}", first.name);
        assert_eq!(login.location.as_deref(), Some("/dashboard"));
        assert!(
            login.set_cookie.is_some(),
            "{}: login sets the cookie",
            first.name
        );
        assert!(
            browser.logged_in(second).await,
            "logged in on {}, so logged in on {}",
            first.name,
            second.name
        );
        assert!(browser.logged_in(first).await);

        // Log out on the other server.
        let cookie = browser.cookie().expect("a session cookie");
        let sid = sid_of(&cookie);
        assert!(store.raw(&sid).is_some(), "the login is stored");
        let out = browser.log_out_with_form_of(first, second).await;
        assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", second.name);
        assert_eq!(out.location.as_deref(), Some("/login"));
        let fresh = out
            .set_cookie
            .expect("logout sends the new session's cookie");
        assert_ne!(
            sid_of(&value_of(&fresh)),
            sid,
            "{}: a new session for the notice",
            second.name
        );
        assert_ne!(
            browser.cookie().as_deref(),
            Some(cookie.as_str()),
            "the browser dropped the logged-in cookie"
        );
        assert!(
            !browser.logged_in(first).await,
            "logged out on {}",
            second.name
        );
        assert!(store.raw(&sid).is_none(), "the record is destroyed");
        let replay = Browser::holding(&cookie);
        assert!(
            !replay.logged_in(first).await,
            "the old cookie, replayed to {}, is not logged in",
            first.name
        );
    }
}

/// On both servers: GET /logout and a POST without the session's token change nothing (still
/// logged in on both, no cookie sent); a login POST without it logs nobody in; a login issues a
/// new token (the one from before it is refused after it).
async fn forged_forms_change_nothing(store: Store) {
    let cloakroom = Server::cloakroom(&store, &[SECRET], &[]);
    let express = Server::express(&store, &[SECRET], None);

    for server in [&cloakroom, &express] {
        let visitor = Browser::new();
        let before = visitor.form_token(server, "/login").await;
        for fields in [
            &[("username", USER), ("password", PASSWORD)][..],
            &[
                ("username", USER),
                ("password", PASSWORD),
                ("_csrf", "forged"),
            ],
            &[("username", USER), ("password", PASSWORD), ("_csrf", "")],
        ] {
            let forged = visitor.post(server, "/login", fields).await;
            assert_eq!(
                forged.status,
                StatusCode::FORBIDDEN,
                "{}: {fields:?}",
                server.name
            );
            assert!(
                forged.body.contains(FORGED_FORM),
                "{}: {}",
                server.name,
                forged.body
            );
            assert!(forged.set_cookie.is_none(), "{}: no login", server.name);
        }
        assert!(!visitor.logged_in(&cloakroom).await && !visitor.logged_in(&express).await);
        assert_eq!(
            visitor.log_in(server, PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        let after = visitor.form_token(server, "/dashboard").await;
        assert_ne!(before, after, "{}: a login issues a new token", server.name);
    }

    let browser = Browser::new();
    assert_eq!(
        browser.log_in(&express, PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let current = browser.form_token(&express, "/login").await;
    for server in [&cloakroom, &express] {
        let get = browser.get(server, "/logout").await;
        assert_eq!(
            get.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{}",
            server.name
        );
        assert!(
            get.body
                .contains("Log out with the button on your dashboard."),
            "{}: {}",
            server.name,
            get.body
        );
        assert!(get.set_cookie.is_none(), "{}", server.name);
        let other_session = Browser::new().form_token(server, "/login").await;
        for fields in [
            &[][..],
            &[("_csrf", "forged")],
            &[("_csrf", other_session.as_str())],
        ] {
            let forged = browser.post(server, "/logout", fields).await;
            assert_eq!(
                forged.status,
                StatusCode::FORBIDDEN,
                "{}: {fields:?}",
                server.name
            );
            assert!(
                forged.body.contains(FORGED_FORM),
                "{}: {}",
                server.name,
                forged.body
            );
            assert!(forged.set_cookie.is_none(), "{}", server.name);
        }
        assert!(browser.logged_in(&cloakroom).await, "after {}", server.name);
        assert!(browser.logged_in(&express).await, "after {}", server.name);
        assert_eq!(
            browser.form_token(server, "/dashboard").await,
            current,
            "{}: one token per session",
            server.name
        );
    }
}

/// One visit counter and one set of session data, whichever server answers.
async fn one_counter(store: Store) {
    let cloakroom = Server::cloakroom(&store, &[SECRET], &[]);
    let express = Server::express(&store, &[SECRET], None);
    let browser = Browser::new();
    for (n, server) in [&cloakroom, &express, &cloakroom, &express]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            browser.views(server).await,
            n as u64 + 1,
            "on {}",
            server.name
        );
    }
    let none = browser.get(&express, "/get-session").await;
    assert!(none.body.contains("No session data found"), "{}", none.body);
    for server in [&express, &cloakroom, &express] {
        let set = browser.get(server, "/set-session").await;
        assert!(set.body.contains("Session data set"), "{}", set.body);
    }
    for server in [&cloakroom, &express] {
        let got = browser.get(server, "/get-session").await;
        assert!(
            got.body
                .contains("Welcome back, john! You've visited 3 times."),
            "{}: {}",
            server.name,
            got.body
        );
    }
}

/// The visit count `/get-session` on `server` shows.
async fn visits(browser: &Browser, server: &Server) -> u64 {
    let reply = browser.get(server, "/get-session").await;
    let start = reply
        .body
        .find("You've visited ")
        .unwrap_or_else(|| panic!("{}: no visit count in {}", server.name, reply.body));
    reply.body[start + "You've visited ".len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count")
}

/// Express and cloakroom writing one session at the same time. cloakroom's writes are
/// conditional: a change Express made after cloakroom loaded the session is never overwritten
/// (cloakroom's compare-and-set fails, and its update is re-applied onto Express's value).
/// connect-redis and connect-pg-simple write unconditionally, so an Express request that loaded
/// the session before a cloakroom write overwrites it: while Express writes too, increments can
/// be lost on Express's side, never on cloakroom's. Every request still succeeds.
async fn concurrent_writers(store: Store) {
    let cloakroom = Server::cloakroom(&store, &[SECRET], &[]);
    let express = Server::express(&store, &[SECRET], None);
    let browser = Browser::new();
    browser.get(&express, "/set-session").await;
    let id = cloakroom::Id::from_string(sid_of(&browser.cookie().expect("a session")));
    let rust: Box<dyn SessionStore> = match &store {
        Store::Redis(url) => Box::new(cloakroom::RedisStore::connect(url).await.unwrap()),
        Store::Postgres(url) => Box::new(cloakroom::PostgresStore::connect(url).await.unwrap()),
        Store::Mysql(url) => Box::new(cloakroom::MySqlStore::connect(url).await.unwrap()),
        Store::Dynamodb(url) => Box::new(dynamodb_store(url).await),
    };
    let loaded = rust.get(&id).await.unwrap().expect("Express's session");
    browser.get(&express, "/set-session").await;
    let outcome = rust
        .set(&id, &loaded.record, Condition::version(&loaded.version))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        SetOutcome::Conflict,
        "cloakroom sees the write Express made after it loaded"
    );
    browser.get(&cloakroom, "/set-session").await;
    assert_eq!(visits(&browser, &express).await, 3);

    let requests: Vec<_> = (0..40)
        .map(|n| {
            let server_url = if n % 2 == 0 { &cloakroom } else { &express }.url("/set-session");
            let client = browser.client.clone();
            tokio::spawn(async move { client.get(server_url).send().await.map(|r| r.status()) })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap(), StatusCode::OK);
    }
    let after = visits(&browser, &cloakroom).await;
    assert!(
        (4..=43).contains(&after),
        "40 increments at once, Express's unconditional: got {after}"
    );
}

/// Both servers write the same Set-Cookie, attribute for attribute, with Expires exactly the
/// max age after the Date header; and each accepts the other's cookie.
async fn same_set_cookie(store: Store) {
    let cloakroom = Server::cloakroom(&store, &[SECRET], &[]);
    let express = Server::express(&store, &[SECRET], None);
    let mut shapes = Vec::new();
    for (issuer, other) in [(&cloakroom, &express), (&express, &cloakroom)] {
        let browser = Browser::new();
        for reply in [
            browser.get(issuer, "/").await,
            browser.log_in(issuer, PASSWORD).await,
        ] {
            let header = reply
                .set_cookie
                .unwrap_or_else(|| panic!("{} sets the session cookie", issuer.name));
            let (names, expires) = check_shape(issuer.name, &header);
            let date = parse_http_date(&reply.date.expect("a Date header"));
            let lifetime = expires - date;
            assert!(
                (MAX_AGE_MS / 1000 - 1..=MAX_AGE_MS / 1000).contains(&lifetime),
                "{}: Expires is {lifetime} s after Date: {header}",
                issuer.name
            );
            shapes.push(names);
        }
        // The other server accepts this cookie (the login above), and a modified session makes
        // it send the very same value back: same id, signed with the same first secret.
        let issued = browser.cookie().expect("a cookie");
        assert!(browser.logged_in(other).await, "{} accepts it", other.name);
        let views = browser.get(other, "/").await;
        assert!(views.body.contains("Number of views 1"), "{}", views.body);
        let resent = views
            .set_cookie
            .expect("a modified session resends the cookie");
        check_shape(other.name, &resent);
        assert_eq!(
            value_of(&resent),
            issued,
            "{} re-signs identically",
            other.name
        );
    }
    assert!(shapes.windows(2).all(|w| w[0] == w[1]), "{shapes:?}");
}

/// With secrets [new, old] on both: a cookie signed with `old` (by either server started with
/// only `old`) is accepted by both and re-signed with `new` identically by both; a cookie
/// signed with a secret neither knows starts a fresh session on both.
async fn secret_rotation(store: Store) {
    let old_cloakroom = Server::cloakroom(&store, &[OLD_SECRET], &[]);
    let old_express = Server::express(&store, &[OLD_SECRET], None);
    let cloakroom = Server::cloakroom(&store, &[NEW_SECRET, OLD_SECRET], &[]);
    let express = Server::express(&store, &[NEW_SECRET, OLD_SECRET], None);
    let stranger = Server::cloakroom(&store, &[UNKNOWN_SECRET], &[]);

    for issuer in [&old_cloakroom, &old_express] {
        let browser = Browser::new();
        assert_eq!(
            browser.log_in(issuer, PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        let old_cookie = browser.cookie().expect("a cookie signed with old");
        let mut resigned = Vec::new();
        for server in [&cloakroom, &express] {
            let replay = Browser::holding(&old_cookie);
            assert!(
                replay.logged_in(server).await,
                "{} accepts a cookie {} signed with the old secret",
                server.name,
                issuer.name
            );
            let views = replay.get(server, "/").await;
            let header = views
                .set_cookie
                .expect("a modified session resends the cookie");
            check_shape(server.name, &header);
            resigned.push(value_of(&header));
        }
        assert_eq!(
            sid_of(&resigned[0]),
            sid_of(&old_cookie),
            "the same session"
        );
        assert_ne!(resigned[0], old_cookie, "re-signed with the new secret");
        assert_eq!(
            resigned[0], resigned[1],
            "cloakroom and express re-sign the old cookie the same way"
        );
    }

    let browser = Browser::new();
    assert_eq!(browser.views(&stranger).await, 1);
    assert_eq!(
        browser.log_in(&stranger, PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        browser.views(&stranger).await,
        1,
        "login regenerated the session"
    );
    let forged = browser
        .cookie()
        .expect("a cookie signed with an unknown secret");
    for server in [&cloakroom, &express] {
        let replay = Browser::holding(&forged);
        assert!(
            !replay.logged_in(server).await,
            "{} rejects an unknown signature",
            server.name
        );
        let replay = Browser::holding(&forged);
        let views = replay.get(server, "/").await;
        assert!(
            views.body.contains("Number of views 1"),
            "{}: a fresh session: {}",
            server.name,
            views.body
        );
        let fresh = views.set_cookie.expect("a fresh session's cookie");
        assert_ne!(
            sid_of(&value_of(&fresh)),
            sid_of(&forged),
            "{}",
            server.name
        );
    }
}

/// A record cloakroom writes is what connect-redis / connect-pg-simple would write (same
/// cookie fields, same TTL or `expire` column), and Express loads it with the same
/// `cookie.expires` and `originalMaxAge`.
async fn cloakroom_records_load_in_express(store: Store) {
    let cloakroom = Server::cloakroom(&store, &[SECRET], &[]);
    let express = Server::express(&store, &[SECRET], None);

    let by_cloakroom = Browser::new();
    assert_eq!(by_cloakroom.views(&cloakroom).await, 1);
    let by_express = Browser::new();
    assert_eq!(by_express.views(&express).await, 1);
    let records: Vec<RawRecord> = [&by_cloakroom, &by_express]
        .iter()
        .map(|b| {
            let sid = sid_of(&b.cookie().expect("a cookie"));
            store.raw(&sid).expect("a stored record")
        })
        .collect();
    let (ours, theirs) = (records[0].value(), records[1].value());

    // The same top-level and cookie keys, in the same order.
    let keys = |v: &Value, path: &str| -> Vec<String> {
        v.pointer(path)
            .and_then(Value::as_object)
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(keys(&ours, ""), ["cookie", "views"], "{}", records[0].json);
    assert_eq!(keys(&ours, ""), keys(&theirs, ""));
    assert_eq!(
        keys(&ours, "/cookie"),
        keys(&theirs, "/cookie"),
        "cookie fields: cloakroom wrote {} and express wrote {}",
        records[0].json,
        records[1].json
    );
    assert_eq!(ours["cookie"]["originalMaxAge"], Value::from(MAX_AGE_MS));
    assert!(
        close_to(&theirs["cookie"]["originalMaxAge"], MAX_AGE_MS),
        "{}",
        records[1].json
    );
    for (field, value) in [
        ("httpOnly", Value::from(true)),
        ("path", Value::from("/")),
        ("sameSite", Value::from("lax")),
    ] {
        assert_eq!(ours["cookie"][field], value, "{field}: {}", records[0].json);
        assert_eq!(
            theirs["cookie"][field], value,
            "{field}: {}",
            records[1].json
        );
    }
    let expires = ours["cookie"]["expires"]
        .as_str()
        .expect("expires")
        .to_owned();
    assert!(
        expires.len() == 24 && expires.ends_with('Z') && expires.as_bytes()[19] == b'.',
        "ISO-8601 with milliseconds, like Date.toJSON: {expires}"
    );
    match store {
        // connect-redis sets the TTL to ceil((expires - now) / 1 s).
        Store::Redis(_) => {
            for record in &records {
                assert!(
                    (MAX_AGE_MS as f64 / 1000.0 - 5.0..=MAX_AGE_MS as f64 / 1000.0)
                        .contains(&record.expiry),
                    "TTL {} for {}",
                    record.expiry,
                    record.json
                );
            }
        }
        // connect-pg-simple stores expire = to_timestamp(ceil(expires / 1 s)).
        Store::Postgres(_) => {
            let (a, b) = (records[0].expiry, records[1].expiry);
            assert!(
                (a - b).abs() < 1.0,
                "expire column minus cookie.expires: cloakroom {a} s, express {b} s"
            );
        }
        // connect-dynamodb stores expires = floor(now / 1 s) + maxAge / 1 s, and cloakroom
        // the same: up to a second before cookie.expires.
        Store::Dynamodb(_) => {
            for record in &records {
                assert!(
                    (-1.1..=0.1).contains(&record.expiry),
                    "expires minus cookie.expires: {} s for {}",
                    record.expiry,
                    record.json
                );
            }
        }
        // express-mysql-session stores expires = Math.round(cookie.expires / 1 s).
        Store::Mysql(_) => {
            for record in &records {
                assert!(
                    (-0.5..=0.5).contains(&record.expiry),
                    "expires column minus cookie.expires: {} s for {}",
                    record.expiry,
                    record.json
                );
            }
        }
    }

    // Express loads cloakroom's record: same lifetime, and the same data.
    let cookie = by_cloakroom.get(&express, "/cookie").await;
    assert_eq!(cookie.status, StatusCode::OK);
    let loaded: Value = serde_json::from_str(&cookie.body).expect("JSON");
    assert_eq!(
        loaded["originalMaxAge"],
        Value::from(MAX_AGE_MS),
        "{loaded}"
    );
    assert_eq!(loaded["expires"], Value::from(expires), "{loaded}");
    assert_eq!(by_cloakroom.views(&express).await, 2);
}

/// Short-lived records written by either server expire on the other: the stored lifetime
/// (`originalMaxAge`) is kept when the other server saves the session, and once it has passed
/// the cookie, replayed, starts a fresh session.
async fn short_records_expire_on_the_other_server(store: Store) {
    const SHORT_MS: u64 = 1500;
    let short_express = Server::express(&store, &[SECRET], Some(SHORT_MS));
    let short_cloakroom = Server::cloakroom(&store, &[SECRET], &["--max-age", "1500ms"]);
    let cloakroom = Server::cloakroom(&store, &[SECRET], &[]);
    let express = Server::express(&store, &[SECRET], None);

    let mut cookies = Vec::new();
    for (writer, reader) in [(&short_express, &cloakroom), (&short_cloakroom, &express)] {
        let browser = Browser::new();
        assert_eq!(browser.views(writer).await, 1);
        let cookie = browser.cookie().expect("a cookie");
        let sid = sid_of(&cookie);
        let written = store.raw(&sid).expect("stored").value();
        let lifetime = &written["cookie"]["originalMaxAge"];
        assert!(
            close_to(lifetime, SHORT_MS as i64),
            "{}: {written}",
            writer.name
        );
        // The other server, configured with 30 minutes, loads it and keeps its 1.5 s.
        assert_eq!(Browser::holding(&cookie).views(reader).await, 2);
        let saved = store.raw(&sid).expect("still stored").value();
        let kept = &saved["cookie"]["originalMaxAge"];
        match reader.name {
            "cloakroom" => assert_eq!(kept, lifetime, "cloakroom keeps it exactly: {saved}"),
            _ => assert!(
                close_to(kept, lifetime.as_i64().expect("ms")),
                "express keeps it (within its 1 ms drift): {saved}"
            ),
        }
        cookies.push((cookie, reader));
    }

    // Bounded: one wait past the 1.5 s lifetime (Redis TTLs are whole seconds, rounded up).
    tokio::time::sleep(Duration::from_millis(2600)).await;
    for (cookie, reader) in cookies {
        let sid = sid_of(&cookie);
        assert_eq!(
            Browser::holding(&cookie).views(reader).await,
            1,
            "{} starts a fresh session once the record expired",
            reader.name
        );
        if let Store::Redis(_) = store {
            assert!(store.raw(&sid).is_none(), "Redis dropped the expired key");
        }
    }
}

/// express-session touches the store on a request that does not save (connect-redis `EXPIRE`,
/// connect-pg-simple `UPDATE … expire`): the record's JSON, `cookie.expires` included, stays as
/// it was, only the store's expiry moves. cloakroom goes by the store's expiry, as Express
/// does: past the stored `cookie.expires` but within the touched expiry, the session lives.
async fn express_touches_are_honoured(store: Store) {
    const SHORT_MS: u64 = 2000;
    let express = Server::express(&store, &[SECRET], Some(SHORT_MS));
    let cloakroom = Server::cloakroom(&store, &[SECRET], &[]);
    let browser = Browser::new();
    let written_at = Instant::now();
    assert_eq!(browser.views(&express).await, 1);
    let cookie = browser.cookie().expect("a cookie");
    let sid = sid_of(&cookie);
    let before = store.raw(&sid).expect("stored").json;

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let touch = Browser::holding(&cookie).get(&express, "/cookie").await;
    assert_eq!(touch.status, StatusCode::OK);
    assert!(
        touch.set_cookie.is_none(),
        "an unmodified session is only touched"
    );
    let after = store.raw(&sid).expect("still stored").json;
    assert_eq!(before, after, "a touch leaves the JSON as it was");

    // Past the stored cookie.expires (2 s), within the touched expiry (1.2 s + 2 s).
    tokio::time::sleep(Duration::from_millis(2400).saturating_sub(written_at.elapsed())).await;
    assert!(
        written_at.elapsed() < Duration::from_millis(3000),
        "the test ran too slowly"
    );
    assert_eq!(
        Browser::holding(&cookie).views(&cloakroom).await,
        2,
        "cloakroom honours the expiry express's touch set"
    );
}

/// Whether a stored `originalMaxAge` is `ms`, or `ms - 1`: express-session computes it as
/// `expires - Date.now()` right after setting `expires = Date.now() + ms`, so it loses a
/// millisecond whenever the clock ticks in between (cloakroom's is always exact).
fn close_to(value: &Value, ms: i64) -> bool {
    value.as_i64().is_some_and(|v| v == ms || v == ms - 1)
}

/// A login on the Express app is one of the user's sessions on cloakroom's "Your sessions"
/// (PostgreSQL's owner index is an expression index on `sess`, MySQL's a generated column of
/// `data`, so a row Express writes is indexed as it is written), and "sign out all other
/// sessions" on cloakroom signs the Express login out, on Express too.
#[tokio::test]
async fn express_logins_are_listed_and_revoked_on_postgres() {
    express_logins_are_listed_and_revoked(Store::postgres()).await;
}

#[tokio::test]
async fn express_logins_are_listed_and_revoked_on_mysql() {
    express_logins_are_listed_and_revoked(Store::mysql()).await;
}

async fn express_logins_are_listed_and_revoked(store: Store) {
    // A user of this test only: other tests log in and out as `ann` on the same database.
    let user = cloakroom_testkit::unique_name("user");
    let cloakroom = Server::cloakroom_as(&user, &store, &[SECRET], &[]);
    let express = Server::express_as(&user, &store, &[SECRET], None);
    let on_express = Browser::new();
    on_express.log_in_as(&express, &user).await;
    let on_cloakroom = Browser::new();
    on_cloakroom.log_in_as(&cloakroom, &user).await;

    let list = on_cloakroom.get(&cloakroom, "/api/sessions").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let list: Vec<Value> = serde_json::from_str(&list.body).expect("a JSON array");
    assert_eq!(list.len(), 2, "the Express login is listed: {list:?}");
    assert_eq!(list[0]["current"], Value::Bool(true));
    assert_eq!(list[1]["current"], Value::Bool(false));
    let express_sid = sid_of(&on_express.cookie().expect("Express set its cookie"));
    assert!(!serde_json::to_string(&list).unwrap().contains(&express_sid));

    let token = on_cloakroom.form_token(&cloakroom, "/sessions").await;
    let out = on_cloakroom
        .post(&cloakroom, "/sessions/revoke-others", &[("_csrf", &token)])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    assert!(
        store.raw(&express_sid).is_none(),
        "the Express session is deleted"
    );
    let dashboard = on_express.get(&express, "/dashboard").await;
    assert_eq!(
        dashboard.status,
        StatusCode::SEE_OTHER,
        "signed out on Express too"
    );
    let dashboard = on_cloakroom.get(&cloakroom, "/dashboard").await;
    assert_eq!(dashboard.status, StatusCode::OK, "this session stays");
}

macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn redis() {
                super::$scenario(super::Store::redis()).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$scenario(super::Store::postgres()).await;
            }

            #[tokio::test]
            async fn mysql() {
                super::$scenario(super::Store::mysql()).await;
            }
        }
    )*};
}

/// One-time messages cross over: connect-flash on Express and `Session::flash` on cloakroom
/// keep them alike (`"flash": {"error": […]}`), so a failed login on one server shows its error
/// on the other's login page, once; a failed login posted to one with the other's form, the
/// same; and a logout's notice on one shows on the other.
async fn flashes_cross_over(store: Store) {
    let cloakroom = Server::cloakroom(&store, &[SECRET], &[]);
    let express = Server::express(&store, &[SECRET], None);
    let error = "<p class=\"error\" role=\"alert\">Invalid username or password.</p>";
    let notice = "<p class=\"info\" role=\"status\">You have been logged out.</p>";

    for (first, second) in [(&express, &cloakroom), (&cloakroom, &express)] {
        let browser = Browser::new();
        // Failed on `first`, shown on `second`, then gone from both.
        let wrong = browser.log_in(first, "wrong").await;
        assert_eq!(wrong.status, StatusCode::SEE_OTHER, "{}", first.name);
        assert_eq!(wrong.location.as_deref(), Some("/login"), "{}", first.name);
        let page = browser.get(second, "/login").await;
        assert_eq!(page.status, StatusCode::OK, "{}", second.name);
        assert_eq!(
            page.body.matches(error).count(),
            1,
            "{} shows {}'s error once: {}",
            second.name,
            first.name,
            page.body
        );
        for server in [second, first] {
            let again = browser.get(server, "/login").await;
            assert!(
                !again.body.contains("Invalid username"),
                "{}: shown once only: {}",
                server.name,
                again.body
            );
        }

        // The form of `first` posted to `second`: the error is shown by `first`.
        let wrong = browser.log_in_with_form_of(first, second, "wrong").await;
        assert_eq!(wrong.status, StatusCode::SEE_OTHER, "{}", second.name);
        assert_eq!(wrong.location.as_deref(), Some("/login"));
        let page = browser.get(first, "/login").await;
        assert_eq!(page.body.matches(error).count(), 1, "{}", page.body);

        // A logout on `first` leaves its notice for `second`.
        let login = browser.log_in(first, PASSWORD).await;
        assert_eq!(login.status, StatusCode::SEE_OTHER, "{}", first.name);
        let out = browser.log_out_with_form_of(first, first).await;
        assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", first.name);
        assert_eq!(out.location.as_deref(), Some("/login"));
        let page = browser.get(second, "/login").await;
        assert_eq!(
            page.body.matches(notice).count(),
            1,
            "{} shows {}'s logout notice: {}",
            second.name,
            first.name,
            page.body
        );
        let again = browser.get(first, "/login").await;
        assert!(!again.body.contains("logged out"), "{}", again.body);
        assert!(!browser.logged_in(second).await);
    }
}

on_every_store!(
    one_login,
    flashes_cross_over,
    forged_forms_change_nothing,
    one_counter,
    same_set_cookie,
    secret_rotation,
    cloakroom_records_load_in_express,
    short_records_expire_on_the_other_server,
    express_touches_are_honoured,
    concurrent_writers,
);

/// Every scenario on DynamoDB (connect-dynamodb 3.0.5 on dynalite), as `dynamodb::<scenario>`,
/// but `express_touches_are_honoured`: connect-dynamodb's `expires` is
/// `floor(now_s) + maxAge`, so a session ends up to a second before its cookie (on Node as on
/// cloakroom, which reads it the same way), and that scenario's 400 ms margin past the stored
/// `cookie.expires` falls inside that second. cloakroom's reading of Node's touches (and of the
/// stubs they leave) is tested in `cloakroom/tests/dynamodb_store.rs`. Nor
/// `express_logins_are_listed_and_revoked`: sessions Express writes have no `owner` attribute
/// until cloakroom saves or touches them (see docs/choosing-a-store.md).
macro_rules! on_dynamodb {
    ($($scenario:ident),* $(,)?) => {
        mod dynamodb {$(
            #[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Store::dynamodb()).await;
            }
        )*}
    };
}

on_dynamodb!(
    one_login,
    flashes_cross_over,
    forged_forms_change_nothing,
    one_counter,
    same_set_cookie,
    secret_rotation,
    cloakroom_records_load_in_express,
    short_records_expire_on_the_other_server,
    concurrent_writers,
);

#[test]
fn http_dates_parse() {
    assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
    assert_eq!(
        parse_http_date("Sun, 22 Nov 2026 09:36:51 GMT"),
        1_795_340_211
    );
}
