//! DynamoDbStore against a dynalite the test starts for itself (so it can kill and restart it
//! without disturbing other tests), keeping its data on disk so the table and the sessions
//! outlive the restart: requests fail with the opaque 503 while it is down, under load too,
//! nothing panics, and the same app recovers by itself once it is back.
#![cfg(feature = "dynamodb")]

mod common;

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use cloakroom::store::dynamodb::DynamoDbStore;
use cloakroom_testkit::unique_name;
use common::{Reply, assert_failure_response, counter_app, get};

const MISSING: &str = "dynalite is not installed: run npm ci --prefix scripts/dynalite \
                       (./scripts/test.sh does), with Node.js 20 or later on PATH";

/// dynalite on a free 127.0.0.1 port, its LevelDB data in a temporary directory; killed and
/// removed when dropped.
struct Dynalite {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Dynalite {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(unique_name("cloakroom-dynalite-faults-"));
        fs::create_dir_all(dir.join("data")).unwrap();
        let mut server = Dynalite {
            dir,
            port,
            child: None,
        };
        server.restart();
        server
    }

    fn cli() -> PathBuf {
        let cli = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts/dynalite/node_modules/dynalite/cli.js");
        assert!(cli.is_file(), "{MISSING}");
        cli
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts dynalite (again) on the same port and data, and waits until it accepts
    /// connections.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("dynalite.log"))
            .unwrap();
        let child = Command::new("node")
            .arg(Self::cli())
            .args(["--port", &self.port.to_string(), "--host", "127.0.0.1"])
            .arg("--path")
            .arg(self.dir.join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(MISSING);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dynalite exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "dynalite did not start in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dynalite.log")).unwrap_or_default()
    }

    /// SIGKILL: connections drop at once.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Dynalite {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The store's timeout: each store call gives up after this.
const TIMEOUT: Duration = Duration::from_millis(800);

/// Longer than any request may take: a hang check, not a benchmark.
const HANG: Duration = Duration::from_secs(10);

async fn request(app: &Router, cookie: Option<&str>) -> Reply {
    tokio::time::timeout(HANG, get(app, "/", cookie))
        .await
        .unwrap_or_else(|_| panic!("a request hung for more than {HANG:?}"))
}

/// A failure must be the opaque 503 of a transient store error.
fn assert_transient_failure(reply: &Reply) {
    match assert_failure_response(reply, StatusCode::SERVICE_UNAVAILABLE) {
        cloakroom::Error::Load(error) | cloakroom::Error::Save(error) => {
            assert!(error.is_transient(), "{error:?}");
        }
        other => panic!("expected a store failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_while_dynalite_is_down_and_recover_without_a_restart() {
    let mut server = Dynalite::start();
    let store = DynamoDbStore::builder()
        .with_endpoint_url(server.url())
        .with_region("us-east-1")
        .with_credentials("AKIDFAKEFAKEFAKE", "fake-secret-for-tests")
        .with_table_name(unique_name("faults-"))
        .with_create_table_if_missing(true)
        .with_timeout(TIMEOUT)
        .build()
        .await
        .unwrap();
    // One app and one store for the whole test: nothing is rebuilt after the fault.
    let app = counter_app(store, Duration::from_secs(600));
    let first = request(&app, None).await;
    assert_eq!(first.body, "views 1", "{first:?}");
    let pair = first.cookie_pair("connect.sid");
    assert_eq!(request(&app, Some(&pair)).await.body, "views 2");

    // Down, under load: every request fails with the 503, none hangs or panics.
    server.kill();
    let load: Vec<_> = (0..32)
        .map(|n| {
            let app = app.clone();
            let cookie = (n % 2 == 0).then(|| pair.clone());
            tokio::spawn(async move { request(&app, cookie.as_deref()).await })
        })
        .collect();
    for task in load {
        let reply = task.await.expect("no request panicked");
        assert_transient_failure(&reply);
    }

    // Back on the same port and data: the same app serves again, and the session is kept.
    server.restart();
    let started = Instant::now();
    let reply = loop {
        let reply = request(&app, Some(&pair)).await;
        if reply.status == StatusCode::OK {
            break reply;
        }
        assert_transient_failure(&reply);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not back in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reply.body, "views 3", "the session outlived the restart");
    let fresh = request(&app, None).await;
    assert_eq!(fresh.body, "views 1");
}
