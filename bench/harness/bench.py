#!/usr/bin/env python3
"""cloakroom's benchmark harness (Python 3, standard library only).

Drives the servers of bench/servers and bench/express as docs/benchmark-method.md describes: the server
and its store pinned to CPU 0, wrk pinned to CPU 1, a fresh server per target x route, a short
warm-up, then the measured run. Measures req/s, p50/p99 (wrk), CPU busy share per core
(/proc/stat), server CPU time per request (/proc/<pid>/stat), store round trips per request
(Redis INFO commandstats, Postgres pg_stat_statements, MariaDB's statement counters), and memory
per live session.

Usage (normally through bench/run.sh):
  bench.py run [--quick] [--targets a,b] [--routes r,s] [--million] [--no-memory] [--name N]
  bench.py report RESULTS.json [--name N]  # regenerate bench/RESULTS.md and bench/chart.svg

--name N writes elsewhere, leaving the main run's files alone: bench/results/<date>-N.json,
bench/N.md (upper-cased, e.g. MYSQL-DYNAMODB.md) and bench/chart-N.svg.
"""

import argparse
import asyncio
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVERS_BIN = os.environ.get(
    "BENCH_SERVERS_BIN", os.path.join(BENCH, "target", "release", "bench-servers"))
EXPRESS_JS = os.path.join(BENCH, "express", "server.js")
LUA = os.path.join(BENCH, "session.lua")

ALL_TARGETS = [
    "bare",
    "cloakroom-memory",
    "tower-sessions-memory",
    "express-memory",
    "cloakroom-sqlite",
    "tower-sessions-sqlite",
    "axum-session-sqlite",
    "cloakroom-redis",
    "tower-sessions-redis",
    "axum-session-redis",
    "actix-session-redis",
    "express-redis",
    "cloakroom-postgres",
    "tower-sessions-postgres",
    "axum-session-postgres",
    "cloakroom-mysql",
    "tower-sessions-mysql",
    "cloakroom-dynamodb",
    "tower-sessions-dynamodb",
]
# Measured only when named with --targets: MariaDB and dynalite (started by scripts/services.sh
# like the others), kept out of the default full run so that it stays at about half an hour
# (they would add 36 runs, about 8 minutes). `bench/run.sh --name mysql-dynamodb --targets
# cloakroom-mysql,tower-sessions-mysql,cloakroom-dynamodb,tower-sessions-dynamodb` runs them.
EXTRA_TARGETS = ["cloakroom-mysql", "tower-sessions-mysql", "cloakroom-dynamodb",
                 "tower-sessions-dynamodb"]
DEFAULT_TARGETS = [t for t in ALL_TARGETS if t not in EXTRA_TARGETS]
QUICK_TARGETS = ["bare", "cloakroom-memory", "tower-sessions-memory", "cloakroom-redis"]
ROUTES = ["login", "read", "counter"]
MEMORY_TARGETS = {
    "cloakroom-memory", "tower-sessions-memory", "express-memory",
    "cloakroom-redis", "tower-sessions-redis", "actix-session-redis", "express-redis",
}
SERVER_CPU = "0"
CLIENT_CPU = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def store_of(target):
    for store in ("redis", "postgres", "sqlite", "memory", "mysql", "dynamodb"):
        if target.endswith("-" + store):
            return store
    return None


def peer_of(target):
    """The tower-sessions row a target is compared with: the same store (every store of
    cloakroom's has a tower-sessions counterpart; DynamoDB's is the community
    tower-sessions-dynamodb-store)."""
    return f"tower-sessions-{store_of(target) or 'memory'}"


def peers_of(target):
    """Every other library's target on the same store: what "ahead of every peer" is measured
    against."""
    store = store_of(target)
    return [t for t in ALL_TARGETS
            if t != target and t != "bare" and not t.startswith("cloakroom-")
            and store_of(t) == store]


# ---------------------------------------------------------------- /proc readings


def cpu_times():
    """{cpu: (busy, total)} in clock ticks, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                out[m.group(1)] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def busy_share(before, after):
    share = {}
    for cpu in after:
        db = after[cpu][0] - before[cpu][0]
        dt = after[cpu][1] - before[cpu][1]
        share[cpu] = round(100.0 * db / dt, 1) if dt > 0 else 0.0
    return share


def proc_cpu_seconds(pid, reaped_children=False):
    """utime + stime of a process (all its threads), in seconds; None if gone. With
    `reaped_children`, also the CPU time of its children that exited and were waited for
    (cutime + cstime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        if reaped_children:
            ticks += int(fields[13]) + int(fields[14])
        return ticks / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def tree_cpu_seconds(root):
    """CPU time of a process and of every child it has or had, in seconds; None if the
    process is gone. A child's time moves from its own counters into the parent's reaped
    ones when it exits, so the difference of two readings is what the tree used between them,
    children that came or went in between included (PostgreSQL forks a backend for every
    connection; a pool that closes and opens connections would otherwise hide their work)."""
    own = proc_cpu_seconds(root, reaped_children=True)
    if own is None:
        return None
    return own + sum(proc_cpu_seconds(c, reaped_children=True) or 0.0
                     for c in children_of(root))


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def all_pids():
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def proc_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def children_of(ppid):
    kids = []
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                    kids.append(pid)
        except (OSError, IndexError, ValueError):
            pass
    return kids


# ---------------------------------------------------------------- stores


class Stores:
    """The Redis, Postgres, MariaDB and dynalite started by scripts/services.sh (their URLs in
    the environment)."""

    def __init__(self):
        self.redis_url = os.environ.get("CLOAKROOM_REDIS_URL")
        self.postgres_url = os.environ.get("CLOAKROOM_POSTGRES_URL")
        self.mysql_url = os.environ.get("CLOAKROOM_MYSQL_URL")
        self.dynamodb_url = os.environ.get("CLOAKROOM_DYNAMODB_URL")
        self.services_dir = os.environ.get("CLOAKROOM_SERVICES_DIR")
        self.redis_port = None
        if self.redis_url:
            self.redis_port = re.search(r":(\d+)/?$", self.redis_url).group(1)
        self.pg_statements = False

    # -- processes, pinned to the server core
    def redis_pids(self):
        if not self.services_dir:
            return []
        try:
            with open(os.path.join(self.services_dir, "redis", "redis.pid")) as f:
                return [int(f.read().strip())]
        except OSError:
            return []

    def postgres_pids(self):
        if not self.services_dir:
            return []
        try:
            with open(os.path.join(self.services_dir, "pg", "data", "postmaster.pid")) as f:
                master = int(f.readline().strip())
        except OSError:
            return []
        return [master] + children_of(master)

    def pid_file_pids(self, *path):
        """The process named by a PID file under the services' directory, and its children."""
        if not self.services_dir:
            return []
        try:
            with open(os.path.join(self.services_dir, *path)) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return []
        if not os.path.exists(f"/proc/{pid}"):
            return []
        return [pid] + children_of(pid)

    def mariadb_pids(self):
        # One process (mariadbd; its connections are threads).
        return self.pid_file_pids("mariadb", "mariadb.pid")

    def dynalite_pids(self):
        # One Node process (its PID file is written by services.sh: `node .../dynalite/cli.js`).
        return self.pid_file_pids("dynalite", "dynalite.pid")

    def pids(self, store):
        if store == "redis":
            return self.redis_pids()
        if store == "postgres":
            return self.postgres_pids()
        if store == "mysql":
            return self.mariadb_pids()
        if store == "dynamodb":
            return self.dynalite_pids()
        return []

    def roots(self, store):
        """The process at the top of the store's tree (redis-server, the postmaster, mariadbd,
        dynalite's Node): `tree_cpu_seconds` counts it and its children."""
        return self.pids(store)[:1]

    def pin(self):
        for pid in (self.redis_pids() + self.postgres_pids() + self.mariadb_pids()
                    + self.dynalite_pids()):
            subprocess.run(["taskset", "-a", "-p", "-c", SERVER_CPU, str(pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)

    # -- Redis
    def redis(self, *args):
        out = subprocess.run(["redis-cli", "-p", self.redis_port, *args], capture_output=True,
                             text=True, timeout=30)
        return out.stdout

    def redis_info(self, section):
        info = {}
        for line in self.redis(f"INFO", section).splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                info[k] = v.strip()
        return info

    def redis_commandstats(self):
        calls = {}
        for k, v in self.redis_info("commandstats").items():
            if k.startswith("cmdstat_"):
                m = re.search(r"calls=(\d+)", v)
                calls[k[len("cmdstat_"):]] = int(m.group(1))
        # The harness's own commands are not the server's round trips.
        for own in ("info", "config|resetstat", "config", "flushall", "ping", "dbsize"):
            calls.pop(own, None)
        return calls

    def redis_used_memory(self):
        return int(self.redis_info("memory")["used_memory"])

    # -- Postgres
    def psql(self, sql):
        out = subprocess.run(["psql", self.postgres_url, "-X", "-q", "-A", "-t", "-F", "\t",
                              "-c", sql], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def enable_pg_stat_statements(self):
        """Loads pg_stat_statements (needs a restart of the services' postgres)."""
        if not (self.postgres_url and self.services_dir):
            return
        try:
            self.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.psql("SELECT count(*) FROM pg_stat_statements")
            self.pg_statements = True
            return
        except RuntimeError:
            pass
        data = os.path.join(self.services_dir, "pg", "data")
        as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        try:
            self.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            pg_ctl = shutil.which("pg_ctl", path=bindir_postgres()) or "pg_ctl"
            subprocess.run(as_pg + [pg_ctl, "-D", data, "-w", "-t", "30", "-m", "fast", "restart"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                           check=True)
            self.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.psql("SELECT count(*) FROM pg_stat_statements")
            self.pg_statements = True
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            log(f"pg_stat_statements unavailable ({e}); Postgres round trips not counted")

    def pg_reset(self):
        if self.pg_statements:
            self.psql("SELECT pg_stat_statements_reset()")

    def pg_statement_calls(self):
        if not self.pg_statements:
            return None
        calls = {}
        rows = self.psql(
            "SELECT calls, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND query NOT ILIKE '%pg_stat_statements%'")
        for line in rows.splitlines():
            if "\t" in line:
                n, q = line.split("\t", 1)
                calls[q[:120]] = calls.get(q[:120], 0) + int(n)
        return calls

    def pg_truncate_all(self):
        # tower-sessions keeps its table in a schema of its own (tower_sessions.session).
        tables = self.psql("SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) "
                           "FROM pg_tables WHERE schemaname NOT IN "
                           "('pg_catalog', 'information_schema')").split()
        if tables:
            self.psql("TRUNCATE " + ", ".join(tables))

    # -- MariaDB
    def mysql(self, sql):
        """Runs `sql` with the mariadb client over TCP (root, no password, as services.sh sets
        it up); returns its tab-separated output."""
        m = re.match(r"mysql://([^@/:]+)@([^:/]+):(\d+)/(\w+)", self.mysql_url or "")
        if not m:
            raise RuntimeError(f"cannot read CLOAKROOM_MYSQL_URL {self.mysql_url!r}")
        user, host, port, db = m.groups()
        client = shutil.which("mariadb") or "mysql"
        out = subprocess.run([client, "--no-defaults", "-h", host, "-P", port, "-u", user,
                              "-N", "-B", db, "-e", sql], capture_output=True, text=True,
                             timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"mariadb failed: {out.stderr.strip()}")
        return out.stdout

    def mysql_truncate_all(self):
        # cloakroom's `cloakroom.sessions` (express-mysql-session's table) and tower-sessions'
        # `tower_sessions.session` (a database of its own, made by its migrate()).
        tables = self.mysql(
            "SELECT CONCAT('`', table_schema, '`.`', table_name, '`') FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN "
            "('mysql', 'information_schema', 'performance_schema', 'sys')").split()
        if tables:
            self.mysql("; ".join(f"TRUNCATE TABLE {t}" for t in tables))

    # Statement counters of `SHOW GLOBAL STATUS`: what a client's statements are counted as
    # (a prepared statement's execution counts under its kind, e.g. Com_select, as well as
    # Com_stmt_execute, which is left out so as not to count it twice).
    MYSQL_STATEMENTS = ("Com_select", "Com_insert", "Com_update", "Com_delete", "Com_replace",
                        "Com_insert_select", "Com_begin", "Com_commit", "Com_rollback",
                        "Com_set_option")

    def mysql_status(self):
        status = {}
        for line in self.mysql("SHOW GLOBAL STATUS WHERE Variable_name LIKE 'Com\\_%' "
                               "OR Variable_name = 'Questions'").splitlines():
            if "\t" in line:
                k, v = line.split("\t", 1)
                try:
                    status[k] = int(v)
                except ValueError:
                    pass
        return status

    def mysql_statement_calls(self, before):
        after = self.mysql_status()
        calls = {k[len("Com_"):]: after.get(k, 0) - before.get(k, 0)
                 for k in self.MYSQL_STATEMENTS}
        return {k: v for k, v in calls.items() if v > 0}

    # -- dynalite (DynamoDB's JSON protocol; dynalite checks an Authorization header is there,
    # not its signature)
    def dynamodb(self, operation, body):
        request = urllib.request.Request(
            self.dynamodb_url, data=json.dumps(body).encode(), method="POST", headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": f"DynamoDB_20120810.{operation}",
                "X-Amz-Date": "20260101T000000Z",
                "Authorization": "AWS4-HMAC-SHA256 Credential=bench-fake-access-key-id/20260101/"
                                 "us-east-1/dynamodb/aws4_request, SignedHeaders=host, "
                                 "Signature=0000",
            })
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            answer = json.loads(e.read() or b"{}")
            if "ResourceNotFoundException" in answer.get("__type", ""):
                return None
            raise RuntimeError(f"dynalite {operation}: {e.code} {answer}")

    def dynamodb_delete_tables(self):
        """Deletes every table (the targets create theirs on start) and waits until gone."""
        tables = (self.dynamodb("ListTables", {}) or {}).get("TableNames", [])
        deadline = time.monotonic() + 30
        for table in tables:
            while True:
                try:
                    self.dynamodb("DeleteTable", {"TableName": table})
                    break
                except RuntimeError as e:
                    # A table still being created (or deleted) cannot be deleted yet.
                    if "ResourceInUseException" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        for table in tables:
            while self.dynamodb("DescribeTable", {"TableName": table}) is not None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dynalite: table {table} not deleted after 30 s")
                time.sleep(0.1)

    def reset(self, store):
        if store == "redis":
            self.redis("FLUSHALL")
        elif store == "postgres":
            self.pg_truncate_all()
        elif store == "mysql":
            self.mysql_truncate_all()
        elif store == "dynamodb":
            self.dynamodb_delete_tables()


def bindir_postgres():
    for d in sorted(os.listdir("/usr/lib/postgresql"), reverse=True) if os.path.isdir(
            "/usr/lib/postgresql") else []:
        p = os.path.join("/usr/lib/postgresql", d, "bin")
        if os.path.exists(os.path.join(p, "pg_ctl")):
            return p
    return None


# ---------------------------------------------------------------- servers


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, target, stores, tmpdir, extra=()):
        self.target = target
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        if target.startswith("express-"):
            cmd = ["node", "--expose-gc", EXPRESS_JS, "--target", target, "--port",
                   str(self.port)]
            if stores.redis_url:
                cmd += ["--redis-url", stores.redis_url]
        else:
            cmd = [SERVERS_BIN, "--target", target, "--addr", self.addr]
            if stores.redis_url and target.endswith("-redis"):
                cmd += ["--redis-url", stores.redis_url]
            if target.endswith("-postgres"):
                cmd += ["--postgres-url", stores.postgres_url or ""]
            if target.endswith("-mysql"):
                cmd += ["--mysql-url", stores.mysql_url or ""]
            if target.endswith("-dynamodb"):
                cmd += ["--dynamodb-url", stores.dynamodb_url or ""]
            if target.endswith("-sqlite"):
                path = tempfile.mkstemp(suffix=".db", dir=tmpdir)[1]
                os.unlink(path)
                cmd += ["--sqlite-path", path]
            cmd += list(extra)
        self.cmd = ["taskset", "-c", SERVER_CPU] + cmd
        self.proc = None
        # The SQLite file and its log, deleted when the server stops: a run's log can reach
        # gigabytes, and leaving it for the page cache to write back slows the runs after it.
        self.files = [path + suffix for suffix in ("", "-wal", "-shm")] \
            if target.endswith("-sqlite") else []

    def start(self, timeout=30):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        # Read stdout until "ready"; bounded by the deadline through a reader thread.
        import threading
        ready = threading.Event()

        def watch():
            for line in self.proc.stdout:
                if line.startswith("ready"):
                    ready.set()
            # Drain to EOF so the server never blocks on a full pipe.

        threading.Thread(target=watch, daemon=True).start()
        threading.Thread(target=lambda: self.proc.stderr.read(), daemon=True).start()
        while time.monotonic() < deadline:
            if ready.wait(0.1):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target} exited with {self.proc.returncode} "
                                   f"before ready: {' '.join(self.cmd)}")
        self.stop()
        raise RuntimeError(f"{self.target} not ready after {timeout}s")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for path in self.files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


# ---------------------------------------------------------------- wrk


def wrk(url, duration, mode, threads=1, connections=64):
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s",
           "--latency", "-s", LUA, url, "--", mode]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    for line in out.stdout.splitlines():
        if line.startswith("SESSION_LUA "):
            return json.loads(line[len("SESSION_LUA "):])
    raise RuntimeError(f"wrk gave no summary: {out.stdout[-500:]} {out.stderr[-500:]}")


# ---------------------------------------------------------------- one load run


def idle_check(seconds=0.5):
    a = cpu_times()
    time.sleep(seconds)
    return busy_share(a, cpu_times())


def run_load(target, route, stores, args, tmpdir, extra=()):
    """One measured run of `route` on a fresh server of `target` (with `extra` server flags)."""
    store = store_of(target)
    mode = "bare" if target == "bare" else "session"
    flags = []
    if store in ("redis", "postgres", "mysql", "dynamodb"):
        # dynalite: every table deleted; the server creates its own on start.
        stores.reset(store)
    server = Server(target, stores, tmpdir, extra)
    server.start()
    try:
        if store in ("postgres", "mysql"):
            stores.reset(store)  # the server creates its table on start
        stores.pin()
        url = f"http://{server.addr}/{route}"
        wrk(url, args.warmup, mode, args.wrk_threads)
        before_idle = idle_check()
        for cpu, share in before_idle.items():
            if share > 10:
                flags.append(f"cpu{cpu}-busy-before({share:.0f}%)")
        if store == "redis":
            stores.redis("CONFIG", "RESETSTAT")
        if store == "postgres":
            stores.pg_reset()
        mysql_before = stores.mysql_status() if store == "mysql" else None
        store_roots = stores.roots(store)
        pids_before = all_pids()
        t0 = cpu_times()
        s0 = proc_cpu_seconds(server.pid)
        st0 = {p: tree_cpu_seconds(p) for p in store_roots}
        result = wrk(url, args.duration, mode, args.wrk_threads)
        t1 = cpu_times()
        s1 = proc_cpu_seconds(server.pid)
        st1 = {p: tree_cpu_seconds(p) for p in store_roots}
        store_cpu = sum(st1[p] - st0[p] for p in store_roots
                        if st0[p] is not None and st1[p] is not None)
        new = [p for p in all_pids() - pids_before if p != os.getpid()]
        # A Postgres backend for a new connection of the server's pool is the store at work,
        # not another load.
        own = {"?", "psql", "redis-cli", "taskset", "mariadb"} | (
            {"postgres"} if store == "postgres" else set())
        new_names = sorted({proc_name(p) for p in new} - own)
        if new_names:
            flags.append("new-procs(" + ",".join(new_names) + ")")
        trips = None
        if store == "redis":
            trips = stores.redis_commandstats()
        elif store == "postgres":
            trips = stores.pg_statement_calls()
        elif store == "mysql":
            trips = stores.mysql_statement_calls(mysql_before)
        rss = rss_bytes(server.pid)
        redis_split = None
        if store == "redis":
            try:
                redis_split = redis_round_trips(stores, server.port, route)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                log(f"  MONITOR sample failed: {e}")
    finally:
        server.stop()
        # Out of the measured window: what this run left for the disk to write (an SQLite
        # log, Postgres's pages) is written now, not during the next run.
        os.sync()
    busy = busy_share(t0, t1)
    if busy.get(CLIENT_CPU, 0) >= 95:
        flags.append("client-bound")
    requests = result["requests"]
    seconds = result["duration_us"] / 1e6
    # Non-200 answers reach response() too (wrk's errors_status counts them as well): counting
    # the script's failed checks once covers status, body and cookie.
    errors = (result["errors_connect"] + result["errors_read"] + result["errors_write"]
              + result["errors_timeout"] + (result["responses"] - result["ok"]))
    if result.get("out_of_order"):
        flags.append(f"out-of-order({result['out_of_order']})")
    if result.get("later_cookie"):
        flags.append(f"set-cookie-after-login({result['later_cookie']})")
    row = {
        "target": target,
        "route": route,
        "store": store,
        "requests": requests,
        "seconds": round(seconds, 3),
        "rps": round(requests / seconds, 1) if seconds else 0,
        "p50_ms": round(result["p50_us"] / 1000, 3),
        "p99_ms": round(result["p99_us"] / 1000, 3),
        "max_ms": round(result["max_us"] / 1000, 3),
        "cpu_busy": busy,
        "server_cpu_us_per_req": round((s1 - s0) * 1e6 / requests, 2) if requests else None,
        "store_cpu_us_per_req": (round(store_cpu * 1e6 / requests, 2)
                                 if requests and store_roots else None),
        "errors": errors,
        "logins": result["logins"],
        "rss_after_bytes": rss,
        "flags": flags,
        "wrk": result,
    }
    if trips is not None:
        # Round trips per request of the route (the per-connection logins are a few dozen
        # out of the run's requests; they are included in the totals, see `logins`).
        row["store_calls"] = trips
        total = sum(trips.values())
        row["store_calls_per_req"] = round(total / requests, 3) if requests else None
    if redis_split is not None:
        row["redis_round_trips_per_req"], row["redis_script_commands_per_req"] = redis_split
    return row


def http_get(sock_file, sock, port, path, cookie):
    """One keep-alive GET on an open socket; returns (status line, headers text, body)."""
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = sock_file.readline()
        if not line:
            raise RuntimeError("connection closed")
        head += line
    text = head.decode("latin-1")
    length = int(re.search(r"(?im)^content-length:\s*(\d+)", text).group(1))
    return text, sock_file.read(length)


def redis_round_trips(stores, port, route, samples=200):
    """Redis commands per request, split into client round trips and commands run inside
    scripts (MONITOR tags those `lua`; INFO commandstats counts both). A short sequential
    sample after the measured run, so MONITOR's cost never touches the figures."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        f = sock.makefile("rb")
        cookie = None
        if route != "login":
            text, _ = http_get(f, sock, port, "/login", None)
            m = re.search(r"(?im)^set-cookie:\s*(sid=[^;\r\n]*)", text)
            cookie = m.group(1) if m else None
        # To a file, not a pipe: a full pipe would stall redis-cli and lose the tail.
        with tempfile.TemporaryFile("w+") as sink:
            monitor = subprocess.Popen(["stdbuf", "-oL", "redis-cli", "-p", stores.redis_port,
                                        "MONITOR"],
                                       stdout=sink)
            try:
                time.sleep(0.3)
                for _ in range(samples):
                    http_get(f, sock, port, "/" + route, cookie)
                time.sleep(0.5)
            finally:
                monitor.terminate()
                monitor.wait(10)
            sink.seek(0)
            out = sink.read()
    trips = inner = 0
    for line in out.split("\n"):
        m = re.match(r"[\d.]+ \[\d+ ([^\]]+)\] \"(\w+)", line)
        if not m:
            continue
        if m.group(1) == "lua":
            inner += 1
        else:
            trips += 1
    return round(trips / samples, 2), round(inner / samples, 2)


# ---------------------------------------------------------------- memory per session


async def login_flood(port, count, connections, timeout, expect_cookie):
    """`count` cookie-less GET /login over `connections` keep-alive connections.

    Returns (answers, cookies, failures). Bounded by `timeout` seconds."""
    remaining = [count]
    stats = {"answers": 0, "cookies": 0, "failures": 0}
    request = f"GET /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                text = head.decode("latin-1")
                length = int(re.search(r"(?im)^content-length:\s*(\d+)", text).group(1))
                body = await reader.readexactly(length)
                stats["answers"] += 1
                has_cookie = re.search(r"(?im)^set-cookie:\s*sid=", text) is not None
                stats["cookies"] += has_cookie
                if not text.startswith("HTTP/1.1 200") or body != b"ok" or (
                        expect_cookie and not has_cookie):
                    stats["failures"] += 1
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(connections))), timeout)
    return stats


def node_heap(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__heap", timeout=30) as r:
        return int(r.read().decode().strip().split()[0])


def memory_probe(target, sessions, stores, tmpdir):
    store = store_of(target)
    if store == "redis":
        stores.reset(store)
    server = Server(target, stores, tmpdir)
    server.start()
    row = {"target": target, "sessions": sessions}
    try:
        stores.pin()
        # The flood is a Python client on the client core.
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
        warm = asyncio.run(login_flood(server.port, 2000, 16, 120, True))
        time.sleep(0.5)
        rss0 = rss_bytes(server.pid)
        used0 = stores.redis_used_memory() if store == "redis" else None
        heap0 = node_heap(server.port) if target.startswith("express") else None
        t = time.monotonic()
        flood = asyncio.run(login_flood(server.port, sessions, 16, max(120, sessions / 500), True))
        row["flood_seconds"] = round(time.monotonic() - t, 1)
        time.sleep(0.5)
        rss1 = rss_bytes(server.pid)
        row["rss_before"] = rss0
        row["rss_after"] = rss1
        row["failures"] = warm["failures"] + flood["failures"]
        row["cookies"] = flood["cookies"]
        row["rss_bytes_per_session"] = round((rss1 - rss0) / sessions, 1)
        if store == "redis":
            used1 = stores.redis_used_memory()
            row["redis_used_memory_per_session"] = round((used1 - used0) / sessions, 1)
            row["redis_keys"] = int(stores.redis("DBSIZE").strip() or 0)
        if heap0 is not None:
            heap1 = node_heap(server.port)
            row["node_heap_per_session"] = round((heap1 - heap0) / sessions, 1)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count())))
        server.stop()
    return row


# ---------------------------------------------------------------- table, chart, report


def fmt_ratio(x):
    return "" if x is None else f"{x:.2f}"


DISTURBED = ("busy-before", "new-procs")


def median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def summarize(runs):
    """One row per target x route from its rounds: the medians, each round's figures, and the
    ratios to bare axum and to the peer measured in the same round (median and range)."""
    by_round = {(r["target"], r["route"], r.get("round", 1)): r for r in runs}
    rows = []
    for key in sorted({(r["target"], r["route"]) for r in runs},
                      key=lambda k: (ALL_TARGETS.index(k[0]) if k[0] in ALL_TARGETS else 99,
                                     ROUTES.index(k[1]) if k[1] in ROUTES else 99)):
        mine = sorted((r for r in runs if (r["target"], r["route"]) == key),
                      key=lambda r: r.get("round", 1))
        middle = sorted(mine, key=lambda r: r["rps"])[len(mine) // 2]
        row = dict(middle)
        for field in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req", "store_cpu_us_per_req"):
            values = [r[field] for r in mine if r.get(field) is not None]
            row[field] = round(median(values), 3) if values else None
        row["errors"] = sum(r["errors"] for r in mine)
        row["flags"] = sorted({f for r in mine for f in r["flags"]})
        row["rounds"] = [{"round": r.get("round", 1), "rps": r["rps"], "p50_ms": r["p50_ms"],
                          "p99_ms": r["p99_ms"],
                          "disturbed": any(d in f for f in r["flags"] for d in DISTURBED)}
                         for r in mine]
        for name, others in (("bare", lambda t: ["bare"]), ("tower", lambda t: [peer_of(t)]),
                             ("best", peers_of)):
            ratios = []
            for r in mine:
                # Against the fastest of `others` in the same round.
                rates = [o["rps"] for o in (by_round.get((t, key[1], r.get("round", 1)))
                                            for t in others(key[0])) if o and o["rps"]]
                if rates:
                    ratios.append(r["rps"] / max(rates))
            row[f"vs_{name}_rounds"] = [round(x, 3) for x in ratios]
            row[f"vs_{name}"] = round(median(ratios), 3) if ratios else None
        row["vs_tower_target"] = peer_of(key[0])
        rows.append(row)
    # The peer with the highest median req/s on the store and route: named beside vs_best.
    by = {(r["target"], r["route"]): r for r in rows}
    for row in rows:
        present = [by[(t, row["route"])] for t in peers_of(row["target"])
                   if (t, row["route"]) in by]
        row["vs_best_target"] = max(present, key=lambda r: r["rps"])["target"] if present else None
    return rows


def add_ratios(rows):
    """Ratios for rows of a results file from before alternating rounds (one run each)."""
    by = {(r["target"], r["route"]): r for r in rows}
    for r in rows:
        if "vs_tower_rounds" in r:
            continue
        bare = by.get(("bare", r["route"]))
        peer = by.get((peer_of(r["target"]), r["route"]))
        r["vs_bare"] = round(r["rps"] / bare["rps"], 3) if bare and bare["rps"] else None
        r["vs_tower"] = round(r["rps"] / peer["rps"], 3) if peer and peer["rps"] else None
        r["vs_tower_target"] = peer["target"] if peer else None


def ratio_cell(r, name):
    """`median (min–max)` of the per-round ratios, or the one ratio."""
    rounds = r.get(f"vs_{name}_rounds") or []
    if len(rounds) > 1:
        return f"{fmt_ratio(r.get(f'vs_{name}'))} ({min(rounds):.2f}–{max(rounds):.2f})"
    return fmt_ratio(r.get(f"vs_{name}"))


def best_cell(r):
    """cloakroom's rows only: the ratio to the fastest peer of each round, and who that is."""
    if not r["target"].startswith("cloakroom-") or r.get("vs_best") is None:
        return ""
    return f"{ratio_cell(r, 'best')} {r['vs_best_target']}"


def rps_cell(r):
    rounds = r.get("rounds") or []
    if len(rounds) > 1:
        values = [x["rps"] for x in rounds]
        return f"{r['rps']:,.0f} ({min(values):,.0f}–{max(values):,.0f})"
    return f"{r['rps']:,.0f}"


def disturbed_cell(r):
    rounds = [str(x["round"]) for x in r.get("rounds") or [] if x["disturbed"]]
    return ",".join(rounds)


def store_calls_cell(r):
    if r.get("redis_round_trips_per_req") is not None:
        return f"{r['redis_round_trips_per_req']} (+{r['redis_script_commands_per_req']} in scripts)"
    return "" if r.get("store_calls_per_req") is None else f"{r['store_calls_per_req']}"


def table_lines(rows, markdown):
    head = ["target", "route", "req/s (range)", "p50 ms", "p99 ms", "CPU µs/req",
            "store CPU µs/req", "store calls/req", "vs bare", "vs tower-sessions",
            "vs best peer", "errors",
            "disturbed rounds", "flags"]
    body = []
    for r in rows:
        body.append([
            r["target"], "/" + r["route"], rps_cell(r), f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}", f"{r['server_cpu_us_per_req']}",
            "" if r.get("store_cpu_us_per_req") is None else f"{r['store_cpu_us_per_req']}",
            store_calls_cell(r), ratio_cell(r, "bare"), ratio_cell(r, "tower"), best_cell(r),
            str(r["errors"]),
            disturbed_cell(r), " ".join(r["flags"]),
        ])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return lines
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]


def memory_lines(mem, markdown):
    head = ["target", "live sessions", "RSS bytes/session", "Redis used_memory bytes/session",
            "V8 heapUsed bytes/session", "failures"]
    body = []
    for m in mem:
        body.append([m["target"], f"{m['sessions']:,}", str(m.get("rss_bytes_per_session", "")),
                     str(m.get("redis_used_memory_per_session", "")),
                     str(m.get("node_heap_per_session", "")), str(m.get("failures", ""))])
    if markdown:
        return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [fmt(head)] + [fmt(b) for b in body]


def trips_lines(rows):
    lines = []
    for r in rows:
        if r.get("store_calls"):
            calls = ", ".join(f"{k} {v / r['requests']:.2f}" for k, v in sorted(
                r["store_calls"].items(), key=lambda kv: -kv[1]))
            split = ""
            if r.get("redis_round_trips_per_req") is not None:
                split = (f"; MONITOR sample: {r['redis_round_trips_per_req']} sent by the server "
                         f"under test (pipelined commands count one each), "
                         f"{r['redis_script_commands_per_req']} commands inside scripts")
            lines.append(f"- {r['target']} /{r['route']}: {r['store_calls_per_req']} commands per "
                         f"request ({calls}){split}")
    return lines


def core_lines(rows):
    """Where the shared core goes per request, for targets whose store runs beside the server on
    CPU 0: the server's and the store's CPU time per request, the throughput their sum allows,
    and the throughput the store alone would allow (a server that cost nothing)."""
    lines = []
    for r in rows:
        server, store = r.get("server_cpu_us_per_req"), r.get("store_cpu_us_per_req")
        if not server or not store:
            continue
        both = server + store
        busy = r.get("cpu_busy", {}).get("0")
        lines.append(
            f"- {r['target']} /{r['route']}: server {server:.1f} + store {store:.1f} = "
            f"{both:.1f} µs of CPU 0 per request ({100 * store / both:.0f}% the store's); "
            f"that sum allows {1e6 / both:,.0f} req/s, the store alone {1e6 / store:,.0f}; "
            f"measured {r['rps']:,.0f} ({100 * r['rps'] * both / 1e6:.0f}% of the sum's bound"
            + (f", CPU 0 {busy:.0f}% busy" if busy is not None else "") + ")")
    return lines


COLORS = {"bare": "#999999", "cloakroom": "#1f77b4", "tower-sessions": "#ff7f0e",
          "axum-session": "#9467bd", "actix-session": "#2ca02c", "express": "#d62728"}


def color(target):
    for k, c in COLORS.items():
        if target.startswith(k):
            return c
    return "#8c564b"


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


NETWORKED = ("-redis", "-postgres", "-sqlite", "-mysql", "-dynamodb")


def chart_svg(rows):
    """Grouped bars: req/s per target, one group per route; a dashed line at bare axum."""
    routes = [r for r in ROUTES if any(x["route"] == r for x in rows)]
    targets = [t for t in ALL_TARGETS if t != "bare" and any(x["target"] == t for x in rows)]
    by = {(r["target"], r["route"]): r for r in rows}
    top = max([r["rps"] for r in rows] + [1])
    step = 10 ** (len(str(int(top))) - 1)
    top = ((int(top) // step) + 1) * step
    bar, gap, left, plot_h, top_pad = 18, 28, 70, 300, 40
    group_w = bar * max(len(targets), 1) + gap
    width = max(640, left + group_w * len(routes) + 230)
    height = top_pad + plot_h + 60
    y = lambda v: top_pad + plot_h - plot_h * v / top
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14">Requests per second, one server core '
           f'(higher is better); dashed: bare axum</text>']
    for i in range(0, 6):
        v = top * i / 5
        out.append(f'<line x1="{left}" x2="{left + group_w * len(routes)}" y1="{y(v):.1f}" '
                   f'y2="{y(v):.1f}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">'
                   f'{int(v / 1000)}k</text>')
    for gi, route in enumerate(routes):
        x0 = left + gi * group_w + gap / 2
        for ti, target in enumerate(targets):
            r = by.get((target, route))
            if not r:
                continue
            x = x0 + ti * bar
            out.append(f'<rect x="{x:.1f}" y="{y(r["rps"]):.1f}" width="{bar - 2}" '
                       f'height="{plot_h + top_pad - y(r["rps"]):.1f}" fill="{color(target)}" '
                       f'fill-opacity="{0.55 if target.endswith(NETWORKED) else 1}">'
                       f'<title>{esc(target)} /{route}: {r["rps"]:,.0f} req/s</title></rect>')
        bare = by.get(("bare", route))
        if bare:
            out.append(f'<line x1="{x0 - 4:.1f}" x2="{x0 + bar * len(targets) + 2:.1f}" '
                       f'y1="{y(bare["rps"]):.1f}" y2="{y(bare["rps"]):.1f}" stroke="black" '
                       f'stroke-dasharray="5,3"><title>bare axum /{route}: '
                       f'{bare["rps"]:,.0f} req/s</title></line>')
        out.append(f'<text x="{x0 + bar * len(targets) / 2:.1f}" y="{top_pad + plot_h + 18}" '
                   f'text-anchor="middle">/{route}</text>')
    lx = left + group_w * len(routes) + 20
    for i, target in enumerate(targets):
        ly = top_pad + i * 20
        op = 0.55 if target.endswith(NETWORKED) else 1
        out.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{color(target)}" '
                   f'fill-opacity="{op}"/>')
        out.append(f'<text x="{lx + 18}" y="{ly + 10}">{esc(target)}</text>')
    ly = top_pad + len(targets) * 20 + 6
    out.append(f'<line x1="{lx}" x2="{lx + 12}" y1="{ly}" y2="{ly}" stroke="black" '
               f'stroke-dasharray="5,3"/>')
    out.append(f'<text x="{lx + 18}" y="{ly + 4}">bare axum (no sessions)</text>')
    out.append(f'<text x="{lx}" y="{ly + 24}" fill="#555">pale: a networked or file store</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# The performance goals of the benchmark issue: (target, route, minimum ratio to bare axum).
BARE_GOALS = [("cloakroom-memory", "read", 0.90), ("cloakroom-memory", "counter", 0.80),
              ("cloakroom-memory", "login", 0.75)]
# (target, route, against, minimum ratio): against "tower" is tower-sessions with the same store,
# "best" the fastest peer on that store in the same round (tower-sessions, axum_session,
# actix-session, express-session).
PEER_GOALS = (
    [("cloakroom-memory", route, "tower", 1.0) for route in ROUTES]
    + [("cloakroom-redis", route, "tower", 1.3) for route in ROUTES]
    + [("cloakroom-redis", route, "best", 1.0) for route in ROUTES]
    + [("cloakroom-sqlite", route, "best", 1.5) for route in ROUTES]
    + [("cloakroom-postgres", route, "best", 1.3) for route in ROUTES]
)
# Tail latency without stalls: every cloakroom round's p99 at most this many times its p50.
TAIL_GOAL = 3.0
MEMORY_GOAL_BYTES = 250
MICRO_GOAL_US = 1.0


def goal_line(what, value, goal, unit, at_least=True):
    met = value >= goal if at_least else value <= goal
    if met:
        verdict = "met"
    else:
        gap = (goal - value) / goal if at_least else (value - goal) / goal
        verdict = f"missed by {100 * gap:.0f}%"
    sign = ">=" if at_least else "<="
    return f"- {what}: {value:{unit}} (goal {sign} {goal:{unit}}): {verdict}"


def closing_notes(rows, memory=None, micro=None):
    """Each goal of the benchmark issue that this run measured, and whether it was met."""
    notes = []
    by = {(r["target"], r["route"]): r for r in rows}
    for target, route, goal in BARE_GOALS:
        r = by.get((target, route))
        if r and r.get("vs_bare") is not None:
            notes.append(goal_line(f"{target} /{route} vs bare axum", r["vs_bare"], goal, ".2f"))
    for target, route, against, goal in PEER_GOALS:
        r = by.get((target, route))
        if r and r.get(f"vs_{against}") is not None:
            peer = r["vs_tower_target"] if against == "tower" else f"the best peer ({r['vs_best_target']})"
            notes.append(goal_line(f"{target} /{route} vs {peer}, median of the rounds",
                                   r[f"vs_{against}"], goal, ".2f"))
    for r in rows:
        if not r["target"].startswith("cloakroom-"):
            continue
        tails = [x["p99_ms"] / x["p50_ms"] for x in r.get("rounds") or [] if x["p50_ms"]]
        if tails:
            notes.append(goal_line(f"{r['target']} /{r['route']} p99 / p50, worst round",
                                   max(tails), TAIL_GOAL, ".1f", False))
    for m in memory or []:
        if m["target"] == "cloakroom-memory" and m.get("rss_bytes_per_session"):
            notes.append(goal_line(f"cloakroom-memory RSS per live session at {m['sessions']:,}",
                                   m["rss_bytes_per_session"], MEMORY_GOAL_BYTES, ".0f", False))
    bare_ns = (micro or {}).get("layer/bare", {}).get("median_ns")
    for name in ("no_store/read", "no_store/counter", "no_store/login"):
        m = (micro or {}).get(name)
        if m and bare_ns:
            notes.append(goal_line(f"{name}: per-request work over layer/bare, µs",
                                   (m["median_ns"] - bare_ns) / 1000, MICRO_GOAL_US, ".2f",
                                   False))
    for r in rows:
        if not r["target"].startswith("cloakroom-"):
            continue
        for name, target in (("tower", r.get("vs_tower_target")), ("best", r.get("vs_best_target"))):
            peer = by.get((target, r["route"]))
            if not peer or (name == "best" and target == r.get("vs_tower_target")):
                continue
            notes.append(f"- {r['target']} /{r['route']} vs {peer['target']}: {r['rps']:,.0f} vs "
                         f"{peer['rps']:,.0f} req/s (medians of the rounds), per-round ratio "
                         f"{ratio_cell(r, name)}; p99 {r['p99_ms']:.1f} vs {peer['p99_ms']:.1f} ms")
    return notes


def report_paths(name):
    """(report, chart) paths: the main run's, or a named run's (`--name`), which leave the main
    run's files alone."""
    if not name:
        return os.path.join(BENCH, "RESULTS.md"), os.path.join(BENCH, "chart.svg")
    return (os.path.join(BENCH, name.upper() + ".md"),
            os.path.join(BENCH, f"chart-{name}.svg"))


def write_report(results, md_path, svg_path):
    rows = results["rows"]
    add_ratios(rows)
    with open(svg_path, "w") as f:
        f.write(chart_svg(rows))
    meta = results["meta"]
    name = meta.get("name")
    lines = [
        f"# cloakroom benchmark results{f': {name}' if name else ''}",
        "",
        f"Run {meta['date']} on {meta['host']} ({meta['cpus']} CPUs, {meta['cpu_model']}), "
        + ("QUICK run (development only, not comparable figures)" if meta["quick"]
           else f"a run of chosen targets (`--name {name}`)" if name else "full run") + ": "
        f"wrk -t{meta.get('wrk_threads', 1)} -c64 -d{meta['duration']}s after a {meta['warmup']} s warm-up, "
        f"server and store on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU}. "
        "Method: `docs/benchmark-method.md`; regenerate with "
        + (f"`{meta['command']}`." if meta.get("command") else "`bench/run.sh`."),
        "",
        f"![requests per second]({os.path.basename(svg_path)})",
        "",
        "## Throughput and latency",
        "",
    ]
    lines += table_lines(rows, True)
    lines += [
        "",
        "- *CPU µs/req*: the server process's user+system CPU time during the run divided by the "
        "requests wrk counted. *store CPU µs/req*: the same for redis-server, the postmaster and "
        "every backend it has or had during the run (a pool that closes and opens connections "
        "starts new ones), mariadbd, or dynalite's Node process.",
        "- *vs bare*: req/s divided by bare axum's on the same route. *vs tower-sessions*: "
        "divided by tower-sessions with the same store. *vs best peer* (cloakroom's rows): "
        "divided by the fastest other library on the same store in the same round "
        "(tower-sessions, axum_session, actix-session, express-session), named after the ratio "
        "(the one with the highest median).",
        "- axum_session serves a session it has seen from a process-local cache, so its /read "
        "does no store I/O and its /counter only the write; it re-sends its cookie on every "
        "answer. How each peer is set up: `bench/servers/src/`.",
        "- Each target x route ran in alternating rounds (A B C, then C B A, ...). req/s, p50, "
        "p99 and CPU are the medians of the rounds, req/s with its range; the ratios are the "
        "median (and range) of the per-round ratios, each against the peer measured in the same "
        "round. *disturbed rounds*: rounds during which another process used a core before the "
        "run (`busy-before`) or started during it (`new-procs`).",
        "- `client-bound` flags a run whose client core was at 95% or more: the "
        "load generator, not the server, was the limit.",
        "- *errors*: socket errors, timeouts, non-200 answers, wrong bodies, and /login answers "
        "without the `sid` cookie. `out-of-order(n)`: /counter answers whose number did not "
        "follow the session's previous one, i.e. the script's FIFO matching of answers to "
        "sessions was wrong or a session served two requests at once (see bench/session.lua; "
        "`--wrk-threads 64` matches exactly, at a higher client cost). "
        "`set-cookie-after-login(n)`: answers on /read or /counter that carried a Set-Cookie "
        "(the script then holds that cookie).",
        "- For /read and /counter each of the 64 connections first logs in; those logins are "
        "counted in req/s (64 out of the run's requests).",
        "",
        "## Store round trips per request",
        "",
        "Counted on the store server over the measured run: Redis `INFO commandstats` (after "
        "`CONFIG RESETSTAT`), which counts the commands a script runs as well as the script "
        "call; Postgres `pg_stat_statements` calls (top-level statements, including BEGIN and "
        "COMMIT); MariaDB's `SHOW GLOBAL STATUS` statement counters (`Com_select`, "
        "`Com_insert`, ..., `Com_begin`, `Com_commit`; a prepared statement counts once, under "
        "its kind). dynalite counts nothing. For Redis, a sequential sample of 200 requests under `MONITOR` after the run "
        "splits the commands into those the server under test sent (a pipeline of two counts "
        "two) and those run inside scripts; the table's "
        "*store calls/req* shows that split for Redis rows.",
        "",
    ]
    lines += trips_lines(rows) or ["(no Redis, Postgres or MariaDB rows in this run)"]
    lines += ["", "## Where the server's core goes", "",
              "The server and its store share CPU 0, so their CPU time per request together "
              "bound the throughput; the store's own share is a floor no server can go under "
              "(medians of the rounds).", ""]
    lines += core_lines(rows) or ["(no store measured beside the server in this run)"]
    lines += ["", "## Memory per live session", ""]
    mem = results.get("memory", [])
    if mem:
        lines += [
            "A fresh server, 2,000 warm-up logins, then N cookie-less /login requests over 16 "
            "keep-alive connections; the growth of the server's RSS (and Redis `used_memory`, "
            "and V8 `heapUsed` after a forced GC for Node) divided by N.",
            "",
        ]
        lines += memory_lines(mem, True)
    else:
        lines.append("(not measured in this run)")
    lines += ["", "## Per-request work without store I/O", "",
              "`cargo bench -p cloakroom --bench hot_path` (criterion, on CPU 0): one request "
              "through a tiny axum Router with `oneshot`, no sockets, a `MemoryStore` "
              "(`no_store/*`: a store that does nothing, leaving the layer's own work: parse, "
              "verify, decide, sign, encode); `layer/bare` is the same request without the "
              "session layer. What each line "
              "includes is documented at the top of `cloakroom/benches/hot_path.rs`.", ""]
    micro = results.get("micro") or {}
    lines += micro_lines(micro, True) if micro else ["(not run: `--quick` or `--no-micro`)"]
    lines += ["", "## Goals", "",
              "The benchmark issue's goals that this run measured (medians of this one run), "
              "then cloakroom against tower-sessions on each store and route:", ""]
    notes = closing_notes(rows, results.get("memory"), micro)
    lines += notes or ["(no goal measured in this run)"]
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")


MICRO_ORDER = ["layer/bare", "layer/untouched", "layer/read_no_cookie", "layer/read_bad_signature",
               "layer/read", "layer/counter", "layer/login", "no_store/read", "no_store/counter",
               "no_store/login", "pieces/id_generate", "pieces/record_to_json",
               "pieces/record_from_json"]


def read_micro(criterion_dir):
    """Criterion's median estimates (ns) of cloakroom/benches/hot_path.rs."""
    micro = {}
    for name in MICRO_ORDER:
        path = os.path.join(criterion_dir, name, "new", "estimates.json")
        try:
            with open(path) as f:
                est = json.load(f)
        except (OSError, ValueError):
            continue
        micro[name] = {"median_ns": round(est["median"]["point_estimate"], 1),
                       "mean_ns": round(est["mean"]["point_estimate"], 1)}
    return micro


def micro_lines(micro, markdown):
    bare = micro.get("layer/bare", {}).get("median_ns")
    head = ["benchmark", "median µs", "over layer/bare µs"]
    body = []
    for name in MICRO_ORDER:
        if name in micro:
            m = micro[name]["median_ns"]
            over = (f"{(m - bare) / 1000:.2f}"
                    if bare and name.startswith(("layer/", "no_store/")) else "")
            body.append([name, f"{m / 1000:.3f}", over])
    if markdown:
        return (["| " + " | ".join(head) + " |", "|---|---|---|"]
                + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(b, widths)).rstrip()
            for b in [head] + body]


# ---------------------------------------------------------------- main


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def cmd_run(args):
    targets = args.targets.split(",") if args.targets else (
        QUICK_TARGETS if args.quick else DEFAULT_TARGETS)
    routes = args.routes.split(",") if args.routes else ROUTES
    unknown = [t for t in targets if t not in ALL_TARGETS]
    if unknown:
        sys.exit(f"unknown targets: {', '.join(unknown)} (known: {', '.join(ALL_TARGETS)})")
    if os.cpu_count() < 2:
        sys.exit("needs two CPUs: the server on CPU 0, wrk on CPU 1")
    stores = Stores()
    needs = {store_of(t) for t in targets}
    if "redis" in needs and not stores.redis_url:
        sys.exit("CLOAKROOM_REDIS_URL is not set (run through bench/run.sh)")
    if "postgres" in needs:
        if not stores.postgres_url:
            sys.exit("CLOAKROOM_POSTGRES_URL is not set (run through bench/run.sh)")
        stores.enable_pg_stat_statements()
    if "mysql" in needs and not stores.mysql_url:
        sys.exit("CLOAKROOM_MYSQL_URL is not set (run through bench/run.sh)")
    if "dynamodb" in needs and not stores.dynamodb_url:
        sys.exit("CLOAKROOM_DYNAMODB_URL is not set (run through bench/run.sh)")
    if args.name and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", args.name):
        sys.exit("--name: lower-case letters, digits and hyphens")
    stores.pin()
    tmpdir = tempfile.mkdtemp(prefix="cloakroom-bench.")
    runs, rows, memory = [], [], []
    started = time.monotonic()
    try:
        runs = []
        for route in routes:
            for round_no in range(1, args.rounds + 1):
                # Alternating rounds (A B C, then C B A, ...): a target's place in a round,
                # and a slow patch of the machine, do not favour it.
                order = targets if round_no % 2 else list(reversed(targets))
                for target in order:
                    log(f"{target} /{route}, round {round_no}")
                    try:
                        row = run_load(target, route, stores, args, tmpdir)
                    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                        log(f"  failed: {e}")
                        continue
                    row["round"] = round_no
                    runs.append(row)
                    log(f"  {row['rps']:,.0f} req/s p50 {row['p50_ms']} ms p99 "
                        f"{row['p99_ms']} ms errors {row['errors']} {' '.join(row['flags'])}")
        rows = summarize(runs)
        if not args.no_memory:
            sizes = [args.sessions] + ([1_000_000] if args.million else [])
            for target in targets:
                if target not in MEMORY_TARGETS:
                    continue
                for n in sizes:
                    log(f"memory {target} {n:,} sessions")
                    try:
                        m = memory_probe(target, n, stores, tmpdir)
                    except (RuntimeError, OSError, asyncio.TimeoutError) as e:
                        log(f"  failed: {e!r}")
                        continue
                    memory.append(m)
                    log(f"  {m['rss_bytes_per_session']} RSS bytes/session "
                        f"({m['flood_seconds']} s)")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    results = {
        "meta": {
            "date": now.strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick,
            "duration": args.duration, "warmup": args.warmup, "wrk_threads": args.wrk_threads,
            "rounds": args.rounds,
            "host": socket.gethostname(),
            "cpus": os.cpu_count(), "cpu_model": cpu_model(),
            "pg_stat_statements": stores.pg_statements,
            "elapsed_seconds": round(time.monotonic() - started),
            "name": args.name,
            "command": "bench/run.sh " + " ".join(sys.argv[2:]) if args.name else None,
        },
        "rows": rows,
        "runs": runs,
        "memory": memory,
        "micro": read_micro(args.micro_dir) if args.micro_dir else {},
    }
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    name = (now.strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
            + (f"-{args.name}" if args.name else "") + ".json")
    out = os.path.join(BENCH, "results", name)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    md_path, svg_path = report_paths(args.name)
    write_report(results, md_path, svg_path)
    print()
    print("\n".join(table_lines(rows, False)))
    if memory:
        print()
        print("\n".join(memory_lines(memory, False)))
    trips = trips_lines(rows)
    if trips:
        print("\nStore round trips per request:")
        print("\n".join(trips))
    if results["micro"]:
        print("\nPer-request work without store I/O (criterion):")
        print("\n".join(micro_lines(results["micro"], False)))
    notes = closing_notes(rows, memory, results["micro"])
    if notes:
        print("\nGoals, and cloakroom vs tower-sessions:")
        print("\n".join(notes))
    print(f"\nresults: {out}; report: {os.path.relpath(md_path)}, {os.path.relpath(svg_path)}")


def cmd_report(args):
    with open(args.results) as f:
        results = json.load(f)
    if args.micro_dir:
        results["micro"] = read_micro(args.micro_dir)
        with open(args.results, "w") as f:
            json.dump(results, f, indent=1)
    name = args.name or results["meta"].get("name")
    write_report(results, *report_paths(name))
    print("\n".join(table_lines(results["rows"], False)))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the benchmark")
    r.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up, fewer targets")
    r.add_argument("--targets", help="comma-separated targets (default: all but the MySQL and "
                   "DynamoDB ones, or a few with --quick)")
    r.add_argument("--routes", help="comma-separated routes (default: login,read,counter)")
    r.add_argument("--duration", type=int, help="seconds per measured run (default 10, quick 3)")
    r.add_argument("--warmup", type=int, help="seconds of warm-up (default 2, quick 1)")
    r.add_argument("--sessions", type=int, default=100_000, help="live sessions for the memory probe")
    r.add_argument("--million", action="store_true", help="also probe memory at 1,000,000 sessions")
    r.add_argument("--rounds", type=int, help="alternating rounds per route (default 3, quick 1)")
    r.add_argument("--wrk-threads", type=int, default=1,
                   help="wrk threads (the method: 1; 64 gives each connection its own Lua state, "
                        "so answers are matched to sessions exactly, at a higher client cost)")
    r.add_argument("--micro-dir", help="criterion's output directory, to include hot_path")
    r.add_argument("--no-micro", action="store_true", help="(for run.sh) skip the micro-benchmark")
    r.add_argument("--no-memory", action="store_true", help="skip the memory probe")
    r.add_argument("--name", help="write bench/results/<date>-NAME.json, bench/NAME.md (upper "
                   "case) and bench/chart-NAME.svg instead of the main run's files")
    r.set_defaults(func=cmd_run)
    g = sub.add_parser("report", help="regenerate RESULTS.md and chart.svg from a results file")
    g.add_argument("results")
    g.add_argument("--micro-dir", help="criterion's output directory: refresh the hot_path figures")
    g.add_argument("--name", help="the report of a named run (default: the results file's name, "
                   "if it has one)")
    g.set_defaults(func=cmd_report)
    args = p.parse_args()
    if args.cmd == "run":
        args.duration = args.duration or (3 if args.quick else 10)
        args.warmup = args.warmup or (1 if args.quick else 2)
        args.rounds = args.rounds or (1 if args.quick else 3)
    args.func(args)


if __name__ == "__main__":
    main()
