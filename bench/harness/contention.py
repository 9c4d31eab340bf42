#!/usr/bin/env python3
"""Tail latency when the server's core is contended: the benchmark's usual runs
(docs/benchmark-method.md: a fresh server and its store on CPU 0, wrk -c64 on CPU 1, one session
per connection), with a busy loop at nice 10 on CPU 0 for the whole run, so the server and its
store get the core only in the slices the scheduler leaves them. A write path that stalls (a
request waiting on a retry's back-off, or queued behind another) shows as a p99 far above p50
here first.

cloakroom and tower-sessions alternate (A B, then B A) for each store and route, at least three
rounds each; the report gives each run's p50, p99 and req/s, and per round the ratio of
cloakroom's p99 to tower-sessions' (under 1: cloakroom's tail is shorter), then the median and the
range. Every run is flagged busy (the busy loop is the point); other flags are as in the main
benchmark. Writes bench/results/contention-<date>.json and bench/CONTENTION.md.

Usage (normally through bench/run.sh --contention):
  contention.py [--stores redis,memory,sqlite,postgres] [--routes counter,read,login]
                [--rounds 3] [--duration 8] [--warmup 2]
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the harness's measuring code)

STORES = ["redis", "memory", "sqlite", "postgres"]
ROUTES = ["counter", "read", "login"]
PEER = "tower-sessions"
# The busy loop's own limit, so it never outlives a run even if this script is killed.
BUSY_LOOP_MAX_SECONDS = 120


class BusyLoop:
    """`sh -c 'while :; do :; done'` on the server's CPU at nice 10, bounded by `timeout`."""

    def __enter__(self):
        self.proc = subprocess.Popen(
            ["taskset", "-c", bench.SERVER_CPU, "nice", "-n", "10", "timeout",
             str(BUSY_LOOP_MAX_SECONDS), "sh", "-c", "while :; do :; done"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        return self

    def __exit__(self, *exc):
        # Its own process group (start_new_session): stop exactly what was started here.
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def measure(args):
    stores = bench.Stores()
    wanted = args.stores.split(",")
    unknown = [s for s in wanted if s not in STORES]
    if unknown:
        sys.exit(f"unknown stores: {', '.join(unknown)} (known: {', '.join(STORES)})")
    for store, url in (("redis", stores.redis_url), ("postgres", stores.postgres_url)):
        if store in wanted and not url:
            sys.exit(f"no {store} server in the environment (run through bench/run.sh --contention)")
    if "postgres" in wanted:
        stores.enable_pg_stat_statements()
    stores.pin()
    tmpdir = tempfile.mkdtemp(prefix="cloakroom-contention.")
    runs = []
    try:
        for store in wanted:
            targets = [f"cloakroom-{store}", f"{PEER}-{store}"]
            for route in args.routes.split(","):
                for round_no in range(1, args.rounds + 1):
                    order = targets if round_no % 2 else list(reversed(targets))
                    for target in order:
                        bench.log(f"{target} /{route} under contention, round {round_no}")
                        try:
                            with BusyLoop():
                                row = bench.run_load(target, route, stores, args, tmpdir)
                        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                            bench.log(f"  failed: {e}")
                            continue
                        row["round"] = round_no
                        runs.append(row)
                        bench.log(f"  {row['rps']:,.0f} req/s p50 {row['p50_ms']} ms "
                                  f"p99 {row['p99_ms']} ms errors {row['errors']}")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return runs


def summary(runs):
    """One row per store and route: both libraries' medians, and the per-round p99 ratios."""
    rows = []
    keys = sorted({(r["store"], r["route"]) for r in runs},
                  key=lambda k: (STORES.index(k[0]), ROUTES.index(k[1])))
    for store, route in keys:
        mine = {r["round"]: r for r in runs
                if r["store"] == store and r["route"] == route and r["target"].startswith("cloakroom")}
        peer = {r["round"]: r for r in runs
                if r["store"] == store and r["route"] == route and r["target"].startswith(PEER)}
        rounds = sorted(set(mine) & set(peer))
        p99_ratios = [mine[n]["p99_ms"] / peer[n]["p99_ms"] for n in rounds if peer[n]["p99_ms"]]
        rps_ratios = [mine[n]["rps"] / peer[n]["rps"] for n in rounds if peer[n]["rps"]]

        def med(side, field):
            values = [r[field] for r in side.values()]
            return statistics.median(values) if values else None

        rows.append({
            "store": store, "route": route, "rounds": len(rounds),
            "cloakroom": {f: med(mine, f) for f in ("rps", "p50_ms", "p99_ms")},
            "peer": {f: med(peer, f) for f in ("rps", "p50_ms", "p99_ms")},
            "p99_ratios": p99_ratios, "rps_ratios": rps_ratios,
            "errors": sum(r["errors"] for r in list(mine.values()) + list(peer.values())),
        })
    return rows


def fmt_range(values, digits=2):
    if not values:
        return "n/a"
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}–{max(values):.{digits}f})")


def write_report(results, path):
    meta, runs = results["meta"], results["runs"]
    lines = [
        "# Tail latency on a contended core",
        "",
        f"Run {meta['date']} on {meta['host']} ({meta['cpus']} CPUs, {meta['cpu_model']}): "
        f"cloakroom and {PEER} alternating, {meta['rounds']} rounds; "
        f"wrk -t{meta['wrk_threads']} -c64 -d{meta['duration']}s after a {meta['warmup']} s "
        "warm-up on CPU 1; the server and its store on CPU 0 with a busy loop at nice 10 "
        "(`taskset -c 0 nice -n 10 sh -c 'while :; do :; done'`) for the whole run. "
        "Regenerate with `bench/run.sh --contention`.",
        "",
        "p99 ratio: cloakroom's p99 over tower-sessions' in the same round (under 1: "
        "cloakroom's tail is shorter); req/s ratio likewise. Medians of the rounds, range in "
        "brackets.",
        "",
        "| store | route | cloakroom req/s, p50 / p99 ms | tower-sessions req/s, p50 / p99 ms "
        "| p99 ratio | req/s ratio | cloakroom p99 ÷ p50 | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary(runs):
        mine, peer = row["cloakroom"], row["peer"]
        spread = (mine["p99_ms"] / mine["p50_ms"]) if mine["p50_ms"] else None
        lines.append(
            f"| {row['store']} | /{row['route']} "
            f"| {mine['rps']:,.0f}, {mine['p50_ms']:.2f} / {mine['p99_ms']:.2f} "
            f"| {peer['rps']:,.0f}, {peer['p50_ms']:.2f} / {peer['p99_ms']:.2f} "
            f"| {fmt_range(row['p99_ratios'])} | {fmt_range(row['rps_ratios'])} "
            f"| {spread:.1f} | {row['errors']} |")
    lines += ["", "## Every run", "",
              "| target | route | round | req/s | p50 ms | p99 ms | max ms | errors | flags |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['target']} | /{r['route']} | {r['round']} | {r['rps']:,.0f} "
                     f"| {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['errors']} "
                     f"| {' '.join(r['flags'])} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stores", default="redis", help="comma-separated stores (default redis)")
    p.add_argument("--routes", default=",".join(ROUTES), help="comma-separated routes")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--duration", type=int, default=8, help="seconds per measured run (default 8)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up (default 2)")
    p.add_argument("--wrk-threads", type=int, default=1,
                   help="wrk threads (default 1, as the main benchmark and the issue's recipe)")
    args = p.parse_args()
    if os.cpu_count() < 2:
        sys.exit("needs two CPUs: the server on CPU 0, wrk on CPU 1")
    unknown = [r for r in args.routes.split(",") if r not in ROUTES]
    if unknown:
        sys.exit(f"unknown routes: {', '.join(unknown)}")
    started = time.monotonic()
    runs = measure(args)
    now = datetime.datetime.now(datetime.timezone.utc)
    results = {
        "meta": {
            "date": now.strftime("%Y-%m-%d %H:%M UTC"), "rounds": args.rounds,
            "wrk_threads": args.wrk_threads, "duration": args.duration, "warmup": args.warmup,
            "host": socket.gethostname(), "cpus": os.cpu_count(), "cpu_model": bench.cpu_model(),
            "elapsed_seconds": round(time.monotonic() - started),
        },
        "runs": runs,
    }
    os.makedirs(os.path.join(bench.BENCH, "results"), exist_ok=True)
    out = os.path.join(bench.BENCH, "results", "contention-" + now.strftime("%Y-%m-%d") + ".json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    report = os.path.join(bench.BENCH, "CONTENTION.md")
    write_report(results, report)
    with open(report) as f:
        print(f.read())
    print(f"results: {out}; report: {report}")


if __name__ == "__main__":
    main()
