#!/usr/bin/env bash
# Smoke check of the benchmark's servers: each target, fresh, on a free port, must give the same
# answers as every other before its figures mean anything.
#
#   bench/servers/smoke.sh [TARGET...]      (default: every target)
#
# Per session target: GET /login sets a browser-session `sid` cookie and answers "ok"; /read with
# it answers "user: bench" and sends no cookie (rolling false); /counter answers 1 then 2; /read
# without a cookie answers "user: none" and sends no cookie (saveUninitialized false); SIGTERM
# stops the server. `bare` has no sessions: no cookie, "user: bench" always, a global counter.
#
# Builds the release binary (CARGO_TARGET_DIR defaults to bench/target) and installs the Node
# packages when missing. Starts its own throw-away Redis, and PostgreSQL through
# scripts/services.sh (with MariaDB and dynalite) when a Postgres, MySQL or DynamoDB target is
# checked; stops them at the end.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bench=$(dirname "$here")
repo=$(dirname "$bench")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$bench/target}
bin=$CARGO_TARGET_DIR/release/bench-servers

all_targets=(bare cloakroom-memory cloakroom-sqlite cloakroom-redis cloakroom-postgres
  tower-sessions-memory tower-sessions-redis actix-session-redis express-memory express-redis)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")

log() { printf '[smoke] %s\n' "$*" >&2; }

work=$(mktemp -d /tmp/bench-smoke.XXXXXX)
redis_port=
services_started=
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  [ -n "$redis_port" ] && redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1
  if [ -n "$services_started" ]; then
    stop_services
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

needs() { # needs WORD: true when a selected target's name contains WORD
  local t
  for t in "${targets[@]}"; do [[ $t == *"$1"* ]] && return 0; done
  return 1
}

# --- build and services ------------------------------------------------------------------
if needs bare || needs cloakroom || needs tower || needs actix; then
  log "building bench-servers (release)"
  (cd "$bench" && cargo build --release --quiet) || { log "build failed"; exit 1; }
fi
if needs express && [ ! -d "$bench/express/node_modules" ]; then
  (cd "$bench/express" && npm ci --no-audit --no-fund --silent) || { log "npm ci failed"; exit 1; }
fi
if needs redis; then
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$work" --logfile "$work/redis.log" || { log "redis did not start"; exit 1; }
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis_url="redis://127.0.0.1:$redis_port"
fi
if needs postgres || needs mysql || needs dynamodb; then
  # shellcheck source=../../scripts/services.sh
  source "$repo/scripts/services.sh"
  services_started=1
  start_services || { log "services did not start"; exit 1; }
fi

# --- checks ------------------------------------------------------------------------------
passed=0
failed=0
failures=()
current=
fail() { failures+=("$current: $*"); log "FAIL $current: $*"; return 1; }

# get PATH [COOKIE]: sets $body and $set_cookie (the sid Set-Cookie line, without the header name)
get() {
  local path=$1 cookie=${2:-} headers=$work/headers
  local args=(-sS --max-time 10 -D "$headers" -o "$work/body")
  [ -n "$cookie" ] && args+=(-H "Cookie: $cookie")
  local status
  status=$(curl "${args[@]}" -w '%{http_code}' "http://$addr$path") || { fail "GET $path: curl failed"; return 1; }
  body=$(cat "$work/body")
  set_cookie=$(tr -d '\r' <"$headers" | sed -n 's/^[Ss]et-[Cc]ookie: *\(sid=.*\)$/\1/p')
  [ "$status" = 200 ] || { fail "GET $path: status $status, body '$body'"; return 1; }
}

expect() { # expect WHAT ACTUAL WANTED
  [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
}

check_sessions() {
  get /login || return 1
  expect "/login body" "$body" ok || return 1
  [ -n "$set_cookie" ] || { fail "/login sent no sid cookie"; return 1; }
  if grep -qiE 'expires=|max-age=' <<<"$set_cookie"; then
    fail "/login cookie is not a browser-session cookie"
    return 1
  fi
  local cookie=${set_cookie%%;*}

  get /read "$cookie" || return 1
  expect "/read with the cookie" "$body" "user: bench" || return 1
  [ -z "$set_cookie" ] || { fail "/read re-sent the cookie (rolling should be off)"; return 1; }

  get /counter "$cookie" || return 1
  expect "first /counter" "$body" 1 || return 1
  [ -n "$set_cookie" ] && cookie=${set_cookie%%;*} # as a browser would
  get /counter "$cookie" || return 1
  expect "second /counter" "$body" 2 || return 1

  get /read || return 1
  expect "/read without a cookie" "$body" "user: none" || return 1
  [ -z "$set_cookie" ] || { fail "/read without a cookie sent one (saveUninitialized should be off)"; return 1; }
}

check_bare() {
  get /login || return 1
  expect "/login body" "$body" ok || return 1
  [ -z "$set_cookie" ] || { fail "bare /login sent a cookie"; return 1; }
  get /read || return 1
  expect "/read" "$body" "user: bench" || return 1
  get /counter || return 1
  expect "first /counter" "$body" 1 || return 1
  get /counter || return 1
  expect "second /counter" "$body" 2 || return 1
}

check_heap() {
  get /__heap || return 1
  [[ $body =~ ^[0-9]+$ ]] || fail "/__heap: got '$body', want a byte count"
}

# start TARGET: starts the server on a free port, sets $server_pid and $addr
start() {
  local target=$1 cmd
  case $target in
    express-*)
      cmd=(node --expose-gc "$bench/express/server.js" --target "$target" --port 0)
      [ "$target" = express-redis ] && cmd+=(--redis-url "$redis_url")
      ;;
    *)
      cmd=("$bin" --target "$target" --addr 127.0.0.1:0)
      case $target in
        *-redis) cmd+=(--redis-url "$redis_url") ;;
        cloakroom-postgres) cmd+=(--postgres-url "$CLOAKROOM_POSTGRES_URL") ;;
        *-mysql) cmd+=(--mysql-url "$CLOAKROOM_MYSQL_URL") ;;
        *-dynamodb) cmd+=(--dynamodb-url "$CLOAKROOM_DYNAMODB_URL") ;;
        cloakroom-sqlite) cmd+=(--sqlite-path "$work/sessions.db") ;;
      esac
      ;;
  esac
  : >"$work/stdout"
  "${cmd[@]}" >"$work/stdout" 2>"$work/stderr" &
  server_pid=$!
  local line
  for _ in $(seq 300); do
    line=$(head -n1 "$work/stdout")
    if [[ $line == ready\ * ]]; then
      addr=${line#ready }
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  fail "did not print 'ready <addr>' (stderr: $(head -c 2000 "$work/stderr"))"
  return 1
}

# stop: SIGTERM, and the server must be gone within 5 s
stop() {
  kill -TERM "$server_pid" 2>/dev/null
  for _ in $(seq 50); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      wait "$server_pid" 2>/dev/null
      server_pid=
      return 0
    fi
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null
  server_pid=
  fail "did not exit within 5 s of SIGTERM"
}

for target in "${targets[@]}"; do
  current=$target
  before=${#failures[@]}
  if start "$target"; then
    case $target in
      bare) check_bare ;;
      express-*) check_sessions && check_heap ;;
      *) check_sessions ;;
    esac
    stop
  fi
  if [ ${#failures[@]} -eq "$before" ]; then
    passed=$((passed + 1))
    log "ok   $target"
  else
    failed=$((failed + 1))
  fi
done

for f in "${failures[@]}"; do log "failed: $f"; done
echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
