//! PostgresStore against a PostgreSQL cluster the test starts for itself (so it can kill it,
//! restart it and stall it without disturbing other tests): requests fail fast with the opaque
//! 503 while the server is down or stalled, the same app recovers by itself, and what was
//! committed before the fault is still there.
#![cfg(feature = "postgres")]

mod common;

use std::fs::{self, File};
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use cloakroom::store::ErrorKind;
use cloakroom::store::postgres::PostgresStore;
use cloakroom_testkit::unique_name;
use common::{Reply, assert_failure_response, counter_app, get};

const MISSING: &str = "PostgreSQL's server binaries (initdb, postgres, pg_isready) were not found \
                       in /usr/lib/postgresql/*/bin or on PATH: ./scripts/test.sh installs it \
                       (Debian package postgresql)";

/// A PostgreSQL cluster of its own: initdb into a temporary directory, one `postgres` child on a
/// free 127.0.0.1 port (unix sockets in the same directory), killed and removed when dropped.
/// As root, the server runs as the `postgres` user (PostgreSQL refuses root), as
/// `scripts/services.sh` runs it.
struct PostgresServer {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    as_root: bool,
    child: Option<Child>,
}

impl PostgresServer {
    fn start() -> Self {
        let bindir = pg_bindir().expect(MISSING);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(unique_name("cloakroom-pg-faults-"));
        fs::create_dir_all(dir.join("socket")).unwrap();
        let as_root = fs::metadata("/proc/self").unwrap().uid() == 0;
        let mut server = PostgresServer {
            bindir,
            dir,
            port,
            as_root,
            child: None,
        };
        if as_root {
            // The postgres user must reach its data directory and write its socket.
            let (uid, gid) = postgres_user();
            fs::set_permissions(
                &server.dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            std::os::unix::fs::chown(server.dir.join("socket"), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&server.dir, Some(uid), Some(gid)).unwrap();
        }
        let log = server.log_file("initdb.log");
        let status = server
            .command("initdb")
            .arg("-D")
            .arg(server.dir.join("data"))
            .args(["-U", "postgres", "-A", "trust", "--no-sync"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .expect(MISSING);
        assert!(
            status.success(),
            "initdb failed: {}",
            server.log_tail("initdb.log")
        );
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `program` from the server's binaries, run as the postgres user when we are root
    /// (`setpriv` execs it, so the child's pid is the program's own).
    fn command(&self, program: &str) -> Command {
        let program = self.bindir.join(program);
        if self.as_root {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
                .arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn log_file(&self, name: &str) -> File {
        let file = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(name))
            .unwrap();
        if self.as_root {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(self.dir.join(name), Some(uid), Some(gid)).unwrap();
        }
        file
    }

    /// The last lines of a log (the server's own messages; it logs no session data).
    fn log_tail(&self, name: &str) -> String {
        let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Starts the server (again) on the same port and data directory, with fsync on (a
    /// committed transaction is durable), and waits until it accepts connections.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = self.log_file("server.log");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.join("socket"))
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(MISSING);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "postgres exited with {status}: {}",
                    self.log_tail("server.log")
                );
            }
            let ready = Command::new(self.bindir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .expect(MISSING);
            if ready.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "postgres on port {} did not start in 30 s: {}",
            self.port,
            self.log_tail("server.log")
        );
    }

    fn postmaster_pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9` of the postmaster and every process it forked (backends, checkpointer, WAL
    /// writer, ...): connections drop at once and nothing is shut down cleanly, so the next
    /// start runs crash recovery.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let children = children_of(child.id());
        let mut pids = vec![child.id()];
        pids.extend(&children);
        send_signal("-KILL", &pids);
        child.wait().unwrap();
        // Orphans are reaped by init; a new postmaster starts once none is left alive.
        let deadline = Instant::now() + Duration::from_secs(10);
        while children.iter().any(|&pid| is_alive(pid)) {
            assert!(Instant::now() < deadline, "backends still alive after 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -STOP` of the postmaster and then of every process it forked: the stall. Sockets
    /// stay open (the kernel even completes new TCP handshakes) and nothing answers.
    fn stop(&self) {
        let postmaster = self.postmaster_pid();
        send_signal("-STOP", &[postmaster]);
        // Stopped, the postmaster forks no more backends: this list is complete.
        send_signal("-STOP", &children_of(postmaster));
    }

    /// `kill -CONT` of every process `stop` stopped.
    fn resume(&self) {
        let postmaster = self.postmaster_pid();
        let mut pids = children_of(postmaster);
        pids.push(postmaster);
        send_signal("-CONT", &pids);
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // SIGKILL ends stopped processes too.
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Debian installs the server binaries off PATH, in `/usr/lib/postgresql/<version>/bin` (the
/// newest is used); elsewhere they are on PATH.
fn pg_bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let debian = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin);
    debian.or_else(|| std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| has_server(dir)))
}

/// The `postgres` user's uid and gid, creating the user (as `scripts/services.sh` does) when
/// missing.
fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        output.status.success().then(|| {
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .unwrap()
        })
    };
    if id("-u").is_none() {
        let status = Command::new("useradd")
            .args(["--system", "--no-create-home", "postgres"])
            .status()
            .unwrap();
        assert!(status.success(), "useradd postgres failed");
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// The processes whose parent is `pid`, from `/proc/<pid>/stat` (field 4, after the command
/// name in parentheses).
fn children_of(pid: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let child: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            let (_, after_name) = stat.rsplit_once(')')?;
            let parent: u32 = after_name.split_whitespace().nth(1)?.parse().ok()?;
            (parent == pid).then_some(child)
        })
        .collect()
}

/// Whether `pid` exists and is not a zombie.
fn is_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// `kill <signal> <pids>`. A backend may exit between the listing and the signal (its client
/// went away): `kill` still signals the others and reports the missing one, which is fine.
fn send_signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let status = Command::new("kill")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success() || pids.iter().any(|&pid| !is_alive(pid)),
        "kill {signal} failed"
    );
}

/// The store's timeout: each store call gives up after this.
const TIMEOUT: Duration = Duration::from_millis(500);

/// What a failing request may take beyond [`TIMEOUT`] on a busy machine.
const SLACK: Duration = Duration::from_secs(1);

/// Longer than any request may take: a hang check, not a benchmark.
const HANG: Duration = Duration::from_secs(5);

/// `/` counts views (reads and writes the session).
fn app(store: PostgresStore) -> Router {
    counter_app(store, Duration::from_secs(600))
}

async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("hung for more than {limit:?}"))
}

/// One request that must finish within [`HANG`], and how long it took.
async fn timed_request(app: &Router, cookie: Option<&str>) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = within(HANG, get(app, "/", cookie)).await;
    (reply, started.elapsed())
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

/// A request that fails with the 503 within the timeout and slack, returning its store error's
/// kind and how long it took.
async fn fails_fast(app: &Router, cookie: Option<&str>) -> (ErrorKind, Duration) {
    let (reply, took) = timed_request(app, cookie).await;
    let kind = store_error_kind(&reply);
    assert!(took <= TIMEOUT + SLACK, "the 503 took {took:?}");
    (kind, took)
}

/// Sends requests until one succeeds, for at most 30 s; the others must fail fast with the 503.
/// Returns the reply and how long recovery took.
async fn until_recovered(app: &Router, cookie: &str) -> (Reply, Duration) {
    let started = Instant::now();
    loop {
        let (reply, _) = timed_request(app, Some(cookie)).await;
        if reply.status == StatusCode::OK {
            return (reply, started.elapsed());
        }
        store_error_kind(&reply);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not back in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` requests at once, each on a new session; returns each reply with how long it took.
async fn concurrently(app: &Router, n: usize) -> Vec<(Reply, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { timed_request(&app, None).await })
        })
        .collect();
    let mut replies = Vec::with_capacity(n);
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    replies
}

/// More than the pool's connections (sqlx's default of 10 for a pool made from a URL), so some
/// requests wait for a connection rather than for the server.
const CROWD: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_fast_while_postgres_is_down_or_stalled_and_recover_without_a_restart() {
    let mut server = PostgresServer::start();
    let store = PostgresStore::builder(server.url())
        .with_create_table_if_missing(true)
        .with_prune_interval(None)
        .with_timeout(TIMEOUT)
        .build()
        .await
        .unwrap();
    let (fsync,): (String,) = sqlx::query_as("SHOW fsync")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(fsync, "on", "committed must mean durable");
    // One app and one store for the whole test: nothing is rebuilt after a fault.
    let app = app(store);
    let (first, _) = timed_request(&app, None).await;
    assert_eq!(first.body, "views 1");
    let pair = first.cookie_pair("connect.sid");
    let (reply, _) = timed_request(&app, Some(&pair)).await;
    assert_eq!(reply.body, "views 2");

    // Killed: pooled connections are dead and new ones are refused.
    server.kill();
    for _ in 0..5 {
        let (kind, took) = fails_fast(&app, Some(&pair)).await;
        eprintln!("killed: 503 ({kind:?}) in {took:?}");
    }
    for (reply, took) in concurrently(&app, CROWD).await {
        store_error_kind(&reply);
        assert!(took <= TIMEOUT + SLACK, "the 503 took {took:?}");
    }

    // Restarted on the same port and data: the same app uses it again, and the session
    // committed before the kill survived crash recovery.
    let started = Instant::now();
    server.restart();
    let restarted = started.elapsed();
    let (reply, recovered) = until_recovered(&app, &pair).await;
    eprintln!("restart took {restarted:?}; first success {recovered:?} after");
    assert_eq!(
        reply.body, "views 3",
        "the session committed before the kill"
    );

    // Stalled: connections stay open and nothing answers, so the timeout decides. Each timed-out
    // connection keeps its pool slot until the server answers its check, so the crowd also
    // finds the pool exhausted.
    server.stop();
    for _ in 0..3 {
        let (kind, took) = fails_fast(&app, Some(&pair)).await;
        eprintln!("stalled: 503 ({kind:?}) in {took:?}");
        assert_eq!(kind, ErrorKind::Timeout);
        assert!(
            took >= TIMEOUT - Duration::from_millis(100),
            "gave up early: {took:?}"
        );
    }
    let mut slowest = Duration::ZERO;
    for (reply, took) in concurrently(&app, CROWD).await {
        assert_eq!(store_error_kind(&reply), ErrorKind::Timeout);
        assert!(took <= TIMEOUT + SLACK, "the 503 took {took:?}");
        slowest = slowest.max(took);
    }
    eprintln!("stalled, {CROWD} at once: slowest 503 in {slowest:?}");

    // Resumed: the cut-short connections are checked and reused or replaced, and the session
    // is intact (nothing was written during the stall).
    server.resume();
    let (reply, recovered) = until_recovered(&app, &pair).await;
    eprintln!("resumed: first success {recovered:?} after");
    assert_eq!(
        reply.body, "views 4",
        "the session written before the stall"
    );

    // The pool is whole again: a crowd of new sessions all succeed.
    for (reply, _) in concurrently(&app, CROWD).await {
        assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
        assert_eq!(reply.body, "views 1");
    }
    let (reply, _) = timed_request(&app, Some(&pair)).await;
    assert_eq!(reply.body, "views 5");
}
