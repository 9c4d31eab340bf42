#!/usr/bin/env python3
"""What cloakroom's concurrency guarantees cost: `/counter` on each cloakroom store, written three
ways, measured in alternating rounds (insert, update, locked, then locked, update, insert, ...):

- insert: a plain `get` then `insert` (what express-session apps do; refused with 409 when another
  request changed the key meanwhile);
- update: `Session::update`, re-applied on a conflict (the documented read-modify-write);
- locked: `get` then `insert` under the exclusive session lock (`with_session_lock`).

Each run is the benchmark's usual one (docs/benchmark-method.md): a fresh server on CPU 0 with its
store, wrk on CPU 1, 64 connections with one session each; but wrk runs one thread per
connection (-t64), so each connection keeps its own session exactly and no two requests ever
touch one session at once: the figures are the cost of each way when nothing conflicts. (With
-t1, wrk's script can only match answers to sessions first in, first out, and now and then
sends two requests on one session at once.) Prints each round, the
ratio to `insert` per round, the median and the spread; writes bench/results/variants-<date>.json
and bench/VARIANTS.md.

Usage (normally through bench/run.sh --variants):
  variants.py [--stores memory,sqlite,redis,postgres] [--rounds 3] [--duration 8] [--warmup 2]
  variants.py --report bench/results/variants-DATE.json   # rewrite bench/VARIANTS.md
"""

import argparse
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the harness's measuring code)

VARIANTS = {
    "insert": ["--counter", "insert"],
    "update": ["--counter", "update"],
    "locked": ["--counter", "insert", "--session-lock"],
}
# What naming an owner at login costs (the owner index): `/login` plain, then with
# `Session::set_owner`; ratios to `plain`.
LOGIN_VARIANTS = {
    "plain": [],
    "owned": ["--owned-login"],
}
# Per family: the route measured, its variants (the first is the base of the ratios), and the
# report it writes.
FAMILIES = {
    "counter": ("counter", VARIANTS, "VARIANTS.md"),
    "login": ("login", LOGIN_VARIANTS, "OWNER-INDEX.md"),
}
STORES = ["memory", "sqlite", "redis", "postgres"]


def measure(args):
    stores = bench.Stores()
    wanted = args.stores.split(",")
    unknown = [s for s in wanted if s not in STORES]
    if unknown:
        sys.exit(f"unknown stores: {', '.join(unknown)} (known: {', '.join(STORES)})")
    if "redis" in wanted and not stores.redis_url:
        sys.exit("CLOAKROOM_REDIS_URL is not set (run through bench/run.sh --variants)")
    if "postgres" in wanted and not stores.postgres_url:
        sys.exit("CLOAKROOM_POSTGRES_URL is not set (run through bench/run.sh --variants)")
    if "postgres" in wanted:
        stores.enable_pg_stat_statements()
    stores.pin()
    tmpdir = tempfile.mkdtemp(prefix="cloakroom-variants.")
    runs = []
    try:
        for store in wanted:
            target = f"cloakroom-{store}"
            route, variants, _ = FAMILIES[args.family]
            for round_no in range(1, args.rounds + 1):
                # A B C, then C B A: a variant's place in the round does not favour it.
                order = list(variants.items())
                if round_no % 2 == 0:
                    order.reverse()
                for variant, extra in order:
                    bench.log(f"{target} /{route} {variant}, round {round_no}")
                    try:
                        row = bench.run_load(target, route, stores, args, tmpdir, extra)
                    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                        bench.log(f"  failed: {e}")
                        continue
                    row["variant"], row["round"] = variant, round_no
                    runs.append(row)
                    bench.log(f"  {row['rps']:,.0f} req/s p50 {row['p50_ms']} ms "
                              f"p99 {row['p99_ms']} ms errors {row['errors']} "
                              f"{' '.join(row['flags'])}")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return runs


def summary_lines(runs, family="counter"):
    """A markdown table: per store and variant, req/s per round, the median, the spread, and the
    ratio to the family's first variant in the same round (median and spread of those ratios)."""
    _, variants, _ = FAMILIES[family]
    base = next(iter(variants))
    lines = [
        f"| store | variant | req/s per round | median | ratio to {base} per round | median ratio "
        "| server CPU µs per request (median) | p50 / p99 ms (median) | store calls per request "
        "| errors | flags |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for store in STORES:
        of_store = [r for r in runs if r["store"] == store]
        if not of_store:
            continue
        insert_by_round = {r["round"]: r["rps"] for r in of_store if r["variant"] == base}
        for variant in variants:
            rows = [r for r in of_store if r["variant"] == variant]
            if not rows:
                continue
            rps = [r["rps"] for r in rows]
            ratios = [r["rps"] / insert_by_round[r["round"]] for r in rows
                      if insert_by_round.get(r["round"])]
            calls = [r["store_calls_per_req"] for r in rows if r.get("store_calls_per_req")]
            calls_cell = f"{statistics.median(calls):.2f}" if calls else "–"
            flags = sorted({f for r in rows for f in r["flags"]})
            lines.append(
                f"| {store} | {variant} | {' / '.join(f'{x:,.0f}' for x in rps)} "
                f"| {statistics.median(rps):,.0f} "
                f"| {' / '.join(f'{x:.3f}' for x in ratios)} "
                f"| {statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f}) "
                f"| {statistics.median(r['server_cpu_us_per_req'] for r in rows):.1f} "
                f"| {statistics.median(r['p50_ms'] for r in rows):.2f} / "
                f"{statistics.median(r['p99_ms'] for r in rows):.2f} "
                f"| {calls_cell} | {sum(r['errors'] for r in rows)} | {' '.join(flags) or '–'} |")
    return lines


def write_report(results, path):
    meta = results["meta"]
    family = meta.get("family", "counter")
    if family == "login":
        return write_login_report(results, path)
    text = [
        "# What the concurrency guarantees cost",
        "",
        f"Run {meta['date']} on {meta['host']} ({meta['cpus']} CPUs, {meta['cpu_model']}): "
        f"`/counter` on each cloakroom store, {meta['rounds']} alternating rounds "
        f"(insert, update, locked, then the reverse order); wrk -t{meta['wrk_threads']} -c64 -d{meta['duration']}s after a "
        f"{meta['warmup']} s warm-up, server and store on CPU 0, wrk on CPU 1, one session per "
        "connection and one thread per connection, so no two requests share a session: the "
        "cost of each way when nothing conflicts. Regenerate with `bench/run.sh --variants`.",
        "",
        "- **insert**: `get` then `insert` (a stale write is refused with 409).",
        "- **update**: `Session::update` (re-applied on a conflict; the documented way).",
        "- **locked**: `get` then `insert` under `with_session_lock` (one request at a time per "
        "session).",
        "",
    ] + summary_lines(results["runs"]) + [
        "",
        "Store calls per request count what the store's server saw (Redis commands, Postgres "
        "statements); memory and SQLite are in-process and not counted. Where wrk's core is "
        "saturated (`client-bound`, the memory store), req/s is the client's ceiling: compare "
        "the server's CPU per request instead.",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(text))


def write_login_report(results, path):
    meta = results["meta"]
    text = [
        "# What the owner index costs at login",
        "",
        f"Run {meta['date']} on {meta['host']} ({meta['cpus']} CPUs, {meta['cpu_model']}): "
        f"`/login` on each cloakroom store, {meta['rounds']} alternating rounds (plain, owned, "
        f"then the reverse order); wrk -t{meta['wrk_threads']} -c64 -d{meta['duration']}s after "
        f"a {meta['warmup']} s warm-up, server and store on CPU 0, wrk on CPU 1. Regenerate "
        "with `bench/run.sh --owner-index`.",
        "",
        "- **plain**: a new session with `user` set (the benchmark's usual `/login`).",
        "- **owned**: the same, plus `Session::set_owner` (one of 100,000 users in turn: two or three sessions each in a run), so the "
        "store's owner index is written and the session's metadata (`cloakroom`: created, seen) "
        "is stored with it.",
        "",
    ] + summary_lines(results["runs"], "login") + [
        "",
        "The goal (issue 16): owned costs at most 25% more than plain, i.e. a median ratio of "
        "at least 0.80. Store calls per request count what the store's server saw (Redis "
        "commands, Postgres statements); memory and SQLite are in-process and not counted.",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(text))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stores", default=",".join(STORES), help="comma-separated cloakroom stores")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--duration", type=int, default=8, help="seconds per measured run (default 8)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up (default 2)")
    p.add_argument("--wrk-threads", type=int, default=64,
                   help="wrk threads (default 64: one per connection, so sessions never overlap)")
    p.add_argument("--family", choices=sorted(FAMILIES), default="counter",
                   help="counter: the concurrency variants; login: plain vs owned login")
    p.add_argument("--report", metavar="RESULTS.json",
                   help="only rewrite bench/VARIANTS.md from an earlier run's results")
    args = p.parse_args()
    if args.report:
        with open(args.report) as f:
            results = json.load(f)
        family = results["meta"].get("family", "counter")
        write_report(results, os.path.join(bench.BENCH, FAMILIES[family][2]))
        print("\n".join(summary_lines(results["runs"], family)))
        return
    if os.cpu_count() < 2:
        sys.exit("needs two CPUs: the server on CPU 0, wrk on CPU 1")
    started = time.monotonic()
    runs = measure(args)
    now = datetime.datetime.now(datetime.timezone.utc)
    results = {
        "meta": {
            "date": now.strftime("%Y-%m-%d %H:%M UTC"), "rounds": args.rounds,
            "family": args.family,
            "wrk_threads": args.wrk_threads,
            "duration": args.duration, "warmup": args.warmup, "host": socket.gethostname(),
            "cpus": os.cpu_count(), "cpu_model": bench.cpu_model(),
            "elapsed_seconds": round(time.monotonic() - started),
        },
        "runs": runs,
    }
    os.makedirs(os.path.join(bench.BENCH, "results"), exist_ok=True)
    prefix = "variants-" if args.family == "counter" else "owner-index-"
    out = os.path.join(bench.BENCH, "results", prefix + now.strftime("%Y-%m-%d") + ".json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    report = os.path.join(bench.BENCH, FAMILIES[args.family][2])
    write_report(results, report)
    print("\n".join(summary_lines(runs, args.family)))
    print(f"\nresults: {out}; report: {report}")


if __name__ == "__main__":
    main()
