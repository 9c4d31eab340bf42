#!/usr/bin/env bash
# cloakroom's benchmark, one command: builds the servers, starts Redis, PostgreSQL, MariaDB and
# dynalite (scripts/services.sh), runs every target x route as docs/benchmark-method.md
# describes, measures memory per live session, and writes bench/results/<date>.json,
# bench/RESULTS.md and bench/chart.svg.
#
# Usage: bench/run.sh [--quick] [--targets a,b] [--routes r,s] [--million] [--no-memory] [--name N]
#        bench/run.sh --variants [--stores a,b] [--rounds N] [--duration S]
#        bench/run.sh --owner-index [--stores a,b] [--rounds N] [--duration S]
#        bench/run.sh --contention [--stores a,b] [--routes r,s] [--rounds N] [--duration S]
#   --quick      3 s runs after a 1 s warm-up, a few targets (development only)
#   --targets    comma-separated: bare, cloakroom-{memory,sqlite,redis,postgres},
#                tower-sessions-{memory,sqlite,redis,postgres}, axum-session-{sqlite,redis,postgres},
#                actix-session-redis, express-memory, express-redis; and, only when named here,
#                cloakroom-{mysql,dynamodb}, tower-sessions-{mysql,dynamodb}
#   --name N     write bench/results/<date>-N.json, bench/N.md (upper case) and bench/chart-N.svg,
#                leaving the main run's files alone. The MySQL and DynamoDB comparison:
#                bench/run.sh --name mysql-dynamodb --no-memory --no-micro --duration 8 \
#                  --targets cloakroom-mysql,tower-sessions-mysql,cloakroom-dynamodb,tower-sessions-dynamodb
#   --million    also measure memory at 1,000,000 live sessions (slow)
#   --no-micro   skip the criterion micro-benchmark (cloakroom/benches/hot_path.rs; skipped
#                by --quick too)
#   --variants   instead: what cloakroom's concurrency guarantees cost (/counter with insert,
#                update and the session lock, in alternating rounds; bench/harness/variants.py)
#   --contention instead: cloakroom and tower-sessions in alternating rounds with a busy loop
#                at nice 10 on the server's CPU, for tail latency under contention (Redis by
#                default; bench/harness/contention.py, writes bench/CONTENTION.md)
#   --owner-index  instead: what the owner index costs at login (/login plain and with
#                Session::set_owner, alternating rounds; writes bench/OWNER-INDEX.md)
# Other options are passed to bench/harness/bench.py run (see its --help).
#
# Needs: 2 CPUs, cargo, node and npm, wrk, taskset, python3; Redis, PostgreSQL and MariaDB are
# installed by scripts/services.sh when missing (as root), dynalite with npm.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "$bench_dir")
cd "$repo_dir"

for tool in cargo wrk taskset python3; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 1; }
done

echo "[bench] building the servers (release)" >&2
(cd bench && CARGO_TARGET_DIR="$bench_dir/target" cargo build --release --quiet)

if [ "${1:-}" = "--contention" ]; then
  shift
  # shellcheck source=../scripts/services.sh
  source scripts/services.sh
  trap stop_services EXIT
  start_services
  python3 bench/harness/contention.py "$@"
  exit
fi

if [ "${1:-}" = "--variants" ] || [ "${1:-}" = "--owner-index" ]; then
  family=counter
  [ "$1" = "--owner-index" ] && family=login
  shift
  # shellcheck source=../scripts/services.sh
  source scripts/services.sh
  trap stop_services EXIT
  start_services
  python3 bench/harness/variants.py --family "$family" "$@"
  exit
fi

wants_node=1
case " $* " in
  *" --targets "*) [[ "$*" == *express* ]] || wants_node=0 ;;
  *" --quick "*) wants_node=0 ;;
esac
if [ "$wants_node" -eq 1 ]; then
  command -v npm >/dev/null || { echo "run.sh: node and npm are required for express" >&2; exit 1; }
  echo "[bench] npm ci (bench/express)" >&2
  (cd bench/express && npm ci --no-audit --no-fund --silent)
fi

micro_args=()
case " $* " in
  *" --quick "* | *" --no-micro "*) ;;
  *)
    echo "[bench] micro-benchmark: cargo bench -p cloakroom --bench hot_path (CPU 0)" >&2
    taskset -c 0 cargo bench --quiet -p cloakroom --bench hot_path >&2
    micro_args=(--micro-dir "$repo_dir/target/criterion")
    ;;
esac

# shellcheck source=../scripts/services.sh
source scripts/services.sh
trap stop_services EXIT
start_services

python3 bench/harness/bench.py run "${micro_args[@]}" "$@"
