#!/usr/bin/env bash
# What Redis itself spends per request of each benchmark route, for cloakroom and for
# tower-sessions: the floor below which no client library can take Redis's share of the shared
# core (bench/run.sh pins the server and redis-server to one CPU).
#
# Starts its own redis-server on a free 127.0.0.1 port, pinned to CPU 0, and runs redis-benchmark
# on CPU 1 for each command the two libraries send, with values of the size they store, deeply
# pipelined (-P 16) so that Redis's CPU is the limit: µs per command = 1e6 / commands per second.
# Commands run in alternating rounds (A B C ..., then reversed); prints the median and range of
# each, and the sum per route.
#
# Usage: bench/redis-floor.sh [--rounds N] [--requests N]
set -euo pipefail

rounds=3
requests=400000
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --requests) requests="$2"; shift 2 ;;
    *) echo "usage: bench/redis-floor.sh [--rounds N] [--requests N]" >&2; exit 2 ;;
  esac
done
for tool in redis-server redis-benchmark redis-cli taskset python3; do
  command -v "$tool" >/dev/null || { echo "redis-floor.sh: $tool is required (apt-get install redis-server)" >&2; exit 1; }
done

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
  >"$dir/log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

cli() { redis-cli -p "$port" "$@"; }

# Keys and values of the sizes each library stores after a few /counter requests (read back with
# STRLEN from the benchmark's servers): cloakroom (and connect-redis) `sess:` and a 32-character
# id, the express JSON (101 bytes for views 3, 105 here); tower-sessions a 22-character id and a
# MessagePack record of 56 bytes.
record='{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"user":"bench","views":12345}'
tower=$(python3 -c 'print("x" * 56)')
key='sess:0123456789abcdefghijklmnopqrstuv'
tower_key='0123456789abcdefghijkl'
cli set "$key" "$record" >/dev/null
cli set "$tower_key" "$tower" >/dev/null
# cloakroom's compare-and-set script for a write without a lease, as store/redis/mod.rs sends it.
cas=$(python3 - "$PWD/cloakroom/src/store/redis/mod.rs" <<'EOF'
import re, sys
source = open(sys.argv[1]).read()
print(re.search(r'static REPLACE: .*?Script::new\(\s*r"(.*?)",\n', source, re.S).group(1))
EOF
)
sha=$(cli script load "$cas")

names=(cloakroom-getrange cloakroom-set-nx cloakroom-cas tower-get tower-set tower-set-nx)
command_of() {
  case "$1" in
    cloakroom-getrange) echo "getrange $key 0 5242880" ;;
    cloakroom-set-nx) echo "set sess:__rand_int__ $record EX 86400 NX" ;;
    # The stored value equals the expected one, so every call writes (the common case).
    cloakroom-cas) echo "evalsha $sha 1 $key $record $record 86400" ;;
    tower-get) echo "get $tower_key" ;;
    tower-set) echo "set $tower_key $tower EXAT 4102444800" ;;
    tower-set-nx) echo "set tower:__rand_int__ $tower EXAT 4102444800 NX" ;;
  esac
}

out="$dir/rates"
for round in $(seq "$rounds"); do
  order=("${names[@]}")
  if [ $((round % 2)) -eq 0 ]; then
    order=(); for ((i = ${#names[@]} - 1; i >= 0; i--)); do order+=("${names[$i]}"); done
  fi
  for name in "${order[@]}"; do
    # shellcheck disable=SC2046
    rate=$(taskset -c 1 redis-benchmark -p "$port" -c 32 -P 16 -n "$requests" -r 1000000 -q \
      $(command_of "$name") 2>/dev/null | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
    echo "$name $round $rate" >>"$out"
    cli flushall >/dev/null
    cli set "$key" "$record" >/dev/null
    cli set "$tower_key" "$tower" >/dev/null
  done
done

python3 - "$out" "$rounds" <<'EOF'
import statistics, sys
rates = {}
for line in open(sys.argv[1]):
    name, _, rate = line.split()
    rates.setdefault(name, []).append(float(rate))
us = {name: [1e6 / r for r in values] for name, values in rates.items()}
med = {name: statistics.median(values) for name, values in us.items()}
print(f"Redis CPU per command (redis-benchmark -P 16, {sys.argv[2]} alternating rounds): median (range) µs")
for name, values in us.items():
    print(f"  {name:20} {med[name]:.2f} ({min(values):.2f}-{max(values):.2f})")
# A cloakroom read sends `PTTL` too only when the process does not know when the key expires:
# in the benchmark, once a minute per session at most (see store/redis/expiries.rs).
routes = {
    "cloakroom /read": ["cloakroom-getrange"],
    "cloakroom /counter": ["cloakroom-getrange", "cloakroom-cas"],
    "cloakroom /login": ["cloakroom-set-nx"],
    "tower-sessions /read": ["tower-get"],
    "tower-sessions /counter": ["tower-get", "tower-set"],
    "tower-sessions /login": ["tower-set-nx"],
}
print("Per request, the sum of its commands' medians:")
for route, names in routes.items():
    print(f"  {route:24} {sum(med[n] for n in names):.2f} µs")
EOF
