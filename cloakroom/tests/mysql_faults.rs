//! MySqlStore against a MariaDB server the test starts for itself (so it can kill, restart and
//! stall it without disturbing other tests): while requests keep coming, the server is killed
//! and restarted, then stalled and resumed. Requests fail with the opaque 503 while it is down
//! or stalled (no panic, no hang), the same app recovers by itself, and what was committed
//! before the fault is still there.
#![cfg(feature = "mysql")]

mod common;

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use cloakroom::store::ErrorKind;
use cloakroom::store::mysql::MySqlStore;
use cloakroom_testkit::unique_name;
use common::{Reply, assert_failure_response, counter_app, get};

const MISSING: &str = "MariaDB's server (mariadbd, mariadb-install-db) was not found on PATH: \
                       ./scripts/test.sh installs it (Debian packages mariadb-server and \
                       mariadb-client)";

/// A MariaDB server of its own: `mariadb-install-db` into a temporary directory, one `mariadbd`
/// child on a free 127.0.0.1 port, killed and removed when dropped. As root, it runs as the
/// `mysql` user (`--user`; the Debian package creates it), as `scripts/services.sh` runs it.
struct MariaDbServer {
    dir: PathBuf,
    port: u16,
    as_root: bool,
    child: Option<Child>,
}

impl MariaDbServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(unique_name("cloakroom-mariadb-faults-"));
        fs::create_dir_all(dir.join("data")).unwrap();
        let as_root = fs::metadata("/proc/self").unwrap().uid() == 0;
        let mut server = MariaDbServer {
            dir,
            port,
            as_root,
            child: None,
        };
        if as_root {
            let (uid, gid) = mysql_user();
            for path in [server.dir.clone(), server.dir.join("data")] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            }
        }
        let log = server.log_file("install.log");
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", server.dir.join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if as_root {
            install.arg("--user=mysql");
        }
        let status = install
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .expect(MISSING);
        assert!(
            status.success(),
            "mariadb-install-db failed: {}",
            server.log_tail("install.log")
        );
        server.restart();
        server.client(
            "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; \
             GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; \
             CREATE DATABASE IF NOT EXISTS cloakroom",
        );
        server
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/cloakroom", self.port)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("mariadb.sock")
    }

    /// Runs SQL through the unix socket as root.
    fn client(&self, sql: &str) {
        let status = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "-e", sql])
            .stdin(Stdio::null())
            .status()
            .expect(MISSING);
        assert!(status.success(), "mariadb client failed");
    }

    fn log_file(&self, name: &str) -> File {
        let path = self.dir.join(name);
        let file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        if self.as_root {
            let (uid, gid) = mysql_user();
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        }
        file
    }

    /// The last lines of a log (the server's own messages; it logs no session data).
    fn log_tail(&self, name: &str) -> String {
        let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Starts the server (again) on the same port and data directory, flushing every commit
    /// (a committed transaction is durable), and waits until it accepts connections.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new("mariadbd");
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!(
                "--log-error={}",
                self.dir.join("server.log").display()
            ))
            .args([
                "--innodb-flush-log-at-trx-commit=1",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
            ]);
        if self.as_root {
            command.arg("--user=mysql");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(MISSING);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mariadbd exited with {status}: {}",
                    self.log_tail("server.log")
                );
            }
            let ready = Command::new("mariadb-admin")
                .arg("--no-defaults")
                .arg(format!("--socket={}", self.socket().display()))
                .args(["-u", "root", "--connect-timeout=1", "ping"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect(MISSING);
            if ready.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "mariadbd on port {} did not start in 30 s: {}",
            self.port,
            self.log_tail("server.log")
        );
    }

    /// `kill -9`: connections drop at once and nothing is shut down cleanly, so the next start
    /// runs crash recovery.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().unwrap();
        }
    }

    /// `kill -STOP`: the stall. Sockets stay open (the kernel even completes new TCP
    /// handshakes) and nothing answers.
    fn stop(&self) {
        signal("-STOP", self.child.as_ref().expect("running").id());
    }

    fn resume(&self) {
        signal("-CONT", self.child.as_ref().expect("running").id());
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The `mysql` user's uid and gid (the Debian package creates the user).
fn mysql_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, "mysql"])
            .output()
            .expect("id runs");
        assert!(output.status.success(), "{MISSING}");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

fn signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} failed");
}

/// The store's timeout: each store call gives up after this.
const TIMEOUT: Duration = Duration::from_millis(500);

/// Longer than any request may take: a hang check.
const HANG: Duration = Duration::from_secs(10);

async fn request(app: &Router, cookie: Option<&str>) -> Reply {
    tokio::time::timeout(HANG, get(app, "/", cookie))
        .await
        .unwrap_or_else(|_| panic!("a request hung for more than {HANG:?}"))
}

/// The kind of the store error behind a failure response, which must be the opaque 503 of a
/// transient failure.
fn store_error_kind(reply: &Reply) -> ErrorKind {
    match assert_failure_response(reply, StatusCode::SERVICE_UNAVAILABLE) {
        cloakroom::Error::Load(error) | cloakroom::Error::Save(error) => {
            assert!(error.is_transient(), "{error:?}");
            error.kind()
        }
        other => panic!("expected a store failure, got {other:?}"),
    }
}

/// Requests that keep coming, each on a new session, from `WORKERS` tasks, until stopped:
/// each must succeed or fail with the transient 503 (checked as it comes back), and the
/// counts say which happened since the last look.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    unavailable: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// More than the pool's connections (sqlx's default of 10), so some wait for a connection.
const WORKERS: usize = 12;

impl Load {
    fn start(app: &Router) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let unavailable = Arc::new(AtomicUsize::new(0));
        let tasks = (0..WORKERS)
            .map(|_| {
                let (app, stop) = (app.clone(), stop.clone());
                let (ok, unavailable) = (ok.clone(), unavailable.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let reply = request(&app, None).await;
                        if reply.status == StatusCode::OK {
                            assert_eq!(reply.body, "views 1");
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            store_error_kind(&reply);
                            unavailable.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            unavailable,
            tasks,
        }
    }

    /// Waits (at most 60 s) until `counter` has grown by `n` since it is called.
    async fn until(&self, what: &str, counter: &AtomicUsize, n: usize) {
        let from = counter.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(60);
        while counter.load(Ordering::Relaxed) < from + n {
            assert!(Instant::now() < deadline, "no {what} in 60 s");
            assert!(
                self.tasks.iter().all(|task| !task.is_finished()),
                "a worker failed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the workers, failing the test if one failed.
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a worker failed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_while_mariadb_is_down_or_stalled_and_recover_without_a_restart() {
    let mut server = MariaDbServer::start();
    let store = MySqlStore::builder(server.url())
        .with_create_table_if_missing(true)
        .with_prune_interval(None)
        .with_timeout(TIMEOUT)
        .build()
        .await
        .unwrap();
    // One app and one store for the whole test: nothing is rebuilt after a fault.
    let app = counter_app(store, Duration::from_secs(600));
    let first = request(&app, None).await;
    assert_eq!(first.body, "views 1");
    let pair = first.cookie_pair("connect.sid");
    assert_eq!(request(&app, Some(&pair)).await.body, "views 2");

    let load = Load::start(&app);
    load.until("success", &load.ok, WORKERS).await;

    // Killed under load: pooled connections are dead and new ones are refused.
    server.kill();
    load.until("503", &load.unavailable, WORKERS).await;
    let reply = request(&app, Some(&pair)).await;
    eprintln!("killed: 503 ({:?})", store_error_kind(&reply));

    // Restarted on the same port and data: the same app uses it again, and the session
    // committed before the kill survived crash recovery.
    server.restart();
    load.until("success after the restart", &load.ok, WORKERS)
        .await;
    assert_eq!(
        until_ok(&app, &pair).await.body,
        "views 3",
        "the session committed before the kill"
    );

    // Stalled under load: connections stay open and nothing answers, so the timeout decides.
    server.stop();
    load.until("503 while stalled", &load.unavailable, WORKERS)
        .await;
    let reply = request(&app, Some(&pair)).await;
    assert_eq!(store_error_kind(&reply), ErrorKind::Timeout);

    // Resumed: the cut-short connections are checked and reused or replaced.
    server.resume();
    load.until("success after the stall", &load.ok, WORKERS)
        .await;
    load.finish().await;
    assert_eq!(
        until_ok(&app, &pair).await.body,
        "views 4",
        "the session written before the stall"
    );
}

/// Sends requests on the session `cookie` until one succeeds, for at most 30 s; the others
/// must fail with the transient 503 (a pooled connection the fault broke).
async fn until_ok(app: &Router, cookie: &str) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = request(app, Some(cookie)).await;
        if reply.status == StatusCode::OK {
            return reply;
        }
        store_error_kind(&reply);
        assert!(Instant::now() < deadline, "not back in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
