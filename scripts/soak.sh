#!/usr/bin/env bash
# Soak test: the demo under a bounded load on loopback, with sessions being created, used,
# destroyed and expiring all the time. Checks that memory stays flat once the live session
# count is stable, that no response is an error, and that p99 latency stays steady.
#
# Usage: scripts/soak.sh [--minutes N] [--store sqlite|memory] [--connections N]
#   --minutes      total load time, in 1-minute wrk slices (default 10)
#   --store        the demo's store: sqlite (default, the demo's own default, in a temporary
#                  directory) or memory
#   --connections  wrk connections (default 32)
#
# Builds the demo in release mode, starts it on a free 127.0.0.1 port with a 20-second max-age
# (so sessions expire continually and their number settles), and drives it with wrk and
# scripts/soak.lua (installs Debian's wrk when missing). With two or more CPUs the demo is pinned
# to CPU 0 and wrk to CPU 1. After each slice it records requests, req/s, p50/p99 latency,
# errors, the demo's RSS and (SQLite) the live session count; at the end it prints a table and
# a verdict, writes both to target/soak/<UTC time>-<store>.md, and exits non-zero if the verdict
# fails (record the last results in the README's soak section):
#   - no error responses in any slice;
#   - RSS at the end at most RSS_GROWTH_PCT % above RSS after the baseline slice (the 3rd, or
#     the one before last in shorter runs), by which time the session count is stable;
#   - p99 of the last slice at most P99_FACTOR times the median slice p99.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=10
STORE=sqlite
CONNECTIONS=32
SLICE_SECONDS=60
MAX_AGE=20s
RSS_GROWTH_PCT=10
P99_FACTOR=3

while [ $# -gt 0 ]; do
  case $1 in
    --minutes) MINUTES=$2; shift 2 ;;
    --store) STORE=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $MINUTES in '' | *[!0-9]* | 0) echo "soak.sh: --minutes takes a whole number >= 1" >&2; exit 2 ;; esac
case $STORE in sqlite | memory) ;; *) echo "soak.sh: --store is sqlite or memory" >&2; exit 2 ;; esac

log() { printf '[soak] %s\n' "$*" >&2; }

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    log "wrk is missing: sudo apt-get install -y wrk"; exit 1
  fi
  log "installing wrk (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

log "building the demo (release)"
cargo build --release -q -p cloakroom-demo
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
demo_bin=$target_dir/release/cloakroom-demo

work=$(mktemp -d /tmp/cloakroom-soak.XXXXXX)
demo_pid=
cleanup() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
db=$work/sessions.db
case $STORE in
  sqlite) store_url=sqlite://$db ;;
  memory) store_url=memory ;;
esac

pin_demo=() pin_wrk=()
if [ "$(nproc)" -ge 2 ]; then
  pin_demo=(taskset -c 0) pin_wrk=(taskset -c 1)
else
  log "one CPU: the demo and wrk share it (no pinning)"
fi

# A secret of its own, so the demo writes no secret file; never printed.
secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
CLOAKROOM_SECRET=$secret "${pin_demo[@]}" "$demo_bin" --addr "127.0.0.1:$port" --store "$store_url" \
  --max-age "$MAX_AGE" >"$work/demo.log" 2>&1 &
demo_pid=$!
unset secret
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/login" 2>/dev/null && break
  kill -0 "$demo_pid" 2>/dev/null || { log "the demo exited:"; cat "$work/demo.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$port/login" || { log "the demo did not start"; exit 1; }
log "demo (pid $demo_pid) on 127.0.0.1:$port, store $STORE, max-age $MAX_AGE; $MINUTES x ${SLICE_SECONDS}s slices, $CONNECTIONS connections"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$demo_pid/status"; }

# Live sessions (expire >= now, the store's own rule) and all rows, read-only; "-" for memory.
sessions() {
  [ "$STORE" = sqlite ] || { echo "- -"; return; }
  python3 - "$db" <<'PY'
import math, sqlite3, sys, time
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=5)
now = math.ceil(time.time())
live = db.execute("SELECT count(*) FROM session WHERE expire >= ?", (now,)).fetchone()[0]
rows = db.execute("SELECT count(*) FROM session").fetchone()[0]
print(live, rows)
PY
}

declare -a S_RPS S_P50 S_P99 S_ERR S_REQ S_RSS S_LIVE S_ROWS
for slice in $(seq "$MINUTES"); do
  out=$(timeout --signal=INT $((SLICE_SECONDS + 30)) "${pin_wrk[@]}" wrk -t1 -c"$CONNECTIONS" \
    -d"${SLICE_SECONDS}s" --timeout 2s -s scripts/soak.lua "http://127.0.0.1:$port/") ||
    { log "wrk failed in slice $slice"; printf '%s\n' "$out" >&2; exit 1; }
  kill -0 "$demo_pid" 2>/dev/null || { log "the demo died in slice $slice:"; tail -20 "$work/demo.log" >&2; exit 1; }
  line=$(printf '%s\n' "$out" | grep '^SOAK ') || { log "no result from wrk"; printf '%s\n' "$out" >&2; exit 1; }
  field() { printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  i=$((slice - 1))
  S_REQ[i]=$(field requests); S_RPS[i]=$(field rps); S_P50[i]=$(field p50_ms); S_P99[i]=$(field p99_ms)
  S_ERR[i]=$(field errors); S_RSS[i]=$(rss_kib)
  read -r S_LIVE[i] S_ROWS[i] < <(sessions)
  log "slice $slice: ${S_RPS[i]} req/s, p50 ${S_P50[i]} ms, p99 ${S_P99[i]} ms, errors ${S_ERR[i]}, RSS $((S_RSS[i] / 1024)) MiB, live sessions ${S_LIVE[i]}"
done

# The table, the verdict and the file.
stamp=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p "$target_dir/soak"
report=$target_dir/soak/$stamp-$STORE.md
baseline=$((MINUTES >= 4 ? 3 : (MINUTES >= 2 ? MINUTES - 1 : 1)))
{
  echo "Soak $(date -u '+%Y-%m-%d %H:%M UTC'): demo with store $STORE, max-age $MAX_AGE, wrk -t1 -c$CONNECTIONS, $MINUTES x ${SLICE_SECONDS}s slices"
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(uname -sr); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "| slice | requests | req/s | p50 ms | p99 ms | errors | RSS MiB | live sessions | rows |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for i in $(seq 0 $((MINUTES - 1))); do
    printf '| %d | %s | %s | %s | %s | %s | %.1f | %s | %s |\n' $((i + 1)) "${S_REQ[i]}" "${S_RPS[i]}" \
      "${S_P50[i]}" "${S_P99[i]}" "${S_ERR[i]}" "$(echo "${S_RSS[i]}" | awk '{ print $1 / 1024 }')" \
      "${S_LIVE[i]}" "${S_ROWS[i]}"
  done
  echo
  python3 - "$baseline" "$RSS_GROWTH_PCT" "$P99_FACTOR" "${S_ERR[*]}" "${S_RSS[*]}" "${S_P99[*]}" \
    "${S_LIVE[*]}" <<'PY'
import statistics, sys
baseline, growth_max, factor = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
errors = [int(x) for x in sys.argv[4].split()]
rss = [int(x) for x in sys.argv[5].split()]
p99 = [float(x) for x in sys.argv[6].split()]
live = sys.argv[7].split()
if live[0] != "-":
    print(f"Live sessions: {live[baseline - 1]} after slice {baseline}, {live[-1]} at the end "
          f"(not judged).")
growth = (rss[-1] - rss[baseline - 1]) / rss[baseline - 1] * 100
median = statistics.median(p99)
checks = [
    (sum(errors) == 0, f"errors {sum(errors)} (want 0)"),
    (growth <= growth_max,
     f"RSS {growth:+.1f}% from slice {baseline} to slice {len(rss)} (want <= {growth_max:g}%)"),
    (p99[-1] <= factor * median,
     f"last p99 {p99[-1]:.2f} ms vs median slice p99 {median:.2f} ms (want <= {factor:g}x)"),
]
ok = all(passed for passed, _ in checks)
print(("Verdict: PASS" if ok else "Verdict: FAIL") + ": " + "; ".join(text for _, text in checks))
PY
} | tee "$report"
log "written to $report"
grep -q '^Verdict: PASS' "$report"
