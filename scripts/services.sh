# Throw-away servers for the test suite, on free 127.0.0.1 ports:
#   - a standalone Redis             -> CLOAKROOM_REDIS_URL
#   - a Redis Cluster of 3 masters   -> CLOAKROOM_REDIS_CLUSTER_URLS (comma-separated)
#   - a PostgreSQL server            -> CLOAKROOM_POSTGRES_URL
#   - a MariaDB server               -> CLOAKROOM_MYSQL_URL
#   - dynalite (DynamoDB stand-in)   -> CLOAKROOM_DYNAMODB_URL (its http:// endpoint)
# Installs Debian's redis-server, postgresql and mariadb-server when they are missing. Data lives
# in one temporary directory, removed by stop_services.
#
# Usage (bash):  source scripts/services.sh; start_services; trap stop_services EXIT
# Each server's log is kept in $CLOAKROOM_SERVICES_DIR while it runs.

services_log() { printf '[services] %s\n' "$*" >&2; }

# The PostgreSQL binaries directory (Debian installs them off PATH).
pg_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

install_services_if_missing() {
  local wanted=()
  command -v redis-server >/dev/null 2>&1 || wanted+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || wanted+=(redis-tools)
  pg_bindir >/dev/null 2>&1 || wanted+=(postgresql)
  command -v mariadbd >/dev/null 2>&1 || wanted+=(mariadb-server)
  command -v mariadb >/dev/null 2>&1 || wanted+=(mariadb-client)
  [ ${#wanted[@]} -eq 0 ] && return 0
  services_log "installing ${wanted[*]} (Debian packages)"
  if [ "$(id -u)" -ne 0 ]; then
    services_log "not root: install them with: sudo apt-get install -y ${wanted[*]}"
    return 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${wanted[@]}" >/dev/null
}

# A free TCP port on 127.0.0.1 whose +10000 neighbour (Redis Cluster's bus port) is free too.
free_port() {
  python3 - <<'PY'
import random, socket
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
while True:
    port = random.randint(20000, 40000)
    if free(port) and free(port + 10000):
        print(port)
        break
PY
}

wait_for() { # wait_for SECONDS COMMAND...: retry COMMAND until it succeeds or time runs out
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.1
  done
}

start_redis_node() { # start_redis_node PORT DIR [extra redis-server args...]
  local port=$1 dir=$2; shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --save '' --appendonly no \
    --daemonize yes --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@"
  wait_for 10 redis-cli -p "$port" ping || { services_log "redis on $port did not start"; return 1; }
}

start_services() {
  install_services_if_missing || return 1
  CLOAKROOM_SERVICES_DIR=$(mktemp -d /tmp/cloakroom-services.XXXXXX)
  chmod 755 "$CLOAKROOM_SERVICES_DIR" # the postgres user must reach its data dir
  export CLOAKROOM_SERVICES_DIR
  local dir=$CLOAKROOM_SERVICES_DIR

  local redis_port; redis_port=$(free_port)
  start_redis_node "$redis_port" "$dir/redis" || return 1
  export CLOAKROOM_REDIS_URL="redis://127.0.0.1:$redis_port"
  services_log "redis on 127.0.0.1:$redis_port"

  local cluster_ports=() urls=() port
  for _ in 1 2 3; do
    port=$(free_port)
    start_redis_node "$port" "$dir/cluster-$port" --cluster-enabled yes \
      --cluster-config-file "$dir/cluster-$port/nodes.conf" --cluster-node-timeout 2000 || return 1
    cluster_ports+=("$port"); urls+=("redis://127.0.0.1:$port")
  done
  redis-cli --cluster create "${cluster_ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
    >"$dir/cluster-create.log" 2>&1 || { services_log "cluster create failed: $dir/cluster-create.log"; return 1; }
  cluster_ok() { redis-cli -p "$1" cluster info | grep -q 'cluster_state:ok'; }
  for port in "${cluster_ports[@]}"; do
    wait_for 20 cluster_ok "$port" || { services_log "cluster node $port not ready"; return 1; }
  done
  CLOAKROOM_REDIS_CLUSTER_URLS=$(IFS=,; echo "${urls[*]}")
  export CLOAKROOM_REDIS_CLUSTER_URLS
  services_log "redis cluster on ${cluster_ports[*]}"

  # PostgreSQL refuses to run as root: run it as the postgres user when we are root.
  local bindir pg_port as_pg=()
  bindir=$(pg_bindir) || return 1
  pg_port=$(free_port)
  mkdir -p "$dir/pg/data" "$dir/pg/socket"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir/pg" postgres
    chown -R postgres "$dir/pg"
    as_pg=(runuser -u postgres --)
  fi
  "${as_pg[@]}" "$bindir/initdb" -D "$dir/pg/data" -U postgres -A trust --no-sync >"$dir/pg/initdb.log" 2>&1 ||
    { services_log "initdb failed: $dir/pg/initdb.log"; return 1; }
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 30 \
    -o "-p $pg_port -k $dir/pg/socket -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null || { services_log "postgres did not start: $dir/pg/server.log"; return 1; }
  export CLOAKROOM_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
  services_log "postgres on 127.0.0.1:$pg_port"

  start_mariadb "$dir/mariadb" || return 1
  start_dynalite "$dir/dynalite" || return 1
}

# dynalite, pinned in scripts/dynalite/package-lock.json (installed with `npm ci` when missing),
# on 127.0.0.1, data in memory. Its PID file is how stop_services finds it.
start_dynalite() { # start_dynalite DIR
  local dir=$1 port root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  if [ ! -f "$root/dynalite/node_modules/dynalite/cli.js" ]; then
    command -v npm >/dev/null 2>&1 || { services_log "dynalite needs Node.js 20 or later and npm"; return 1; }
    npm ci --prefix "$root/dynalite" --no-audit --no-fund >/dev/null 2>&1 ||
      { services_log "npm ci --prefix scripts/dynalite failed"; return 1; }
  fi
  port=$(free_port)
  mkdir -p "$dir"
  # Tables leave the CREATING state after 50 ms rather than dynalite's 500, so the many tables
  # the tests create cost little, and a store still waits for one at least once.
  setsid node "$root/dynalite/node_modules/dynalite/cli.js" --port "$port" --host 127.0.0.1 \
    --createTableMs 50 --deleteTableMs 50 --updateTableMs 50 \
    </dev/null >"$dir/dynalite.log" 2>&1 &
  echo $! >"$dir/dynalite.pid"
  wait_for 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" ||
    { services_log "dynalite did not start: $dir/dynalite.log"; return 1; }
  export CLOAKROOM_DYNAMODB_URL="http://127.0.0.1:$port"
  services_log "dynalite on 127.0.0.1:$port"
}

# A MariaDB server with its data in DIR, TCP on 127.0.0.1 only, a root without password, and
# a database `cloakroom`. It refuses to run as root: run it as the mysql user when we are root.
start_mariadb() { # start_mariadb DIR
  local dir=$1 port as_mysql=() user=()
  port=$(free_port)
  mkdir -p "$dir/data"
  if [ "$(id -u)" -eq 0 ]; then
    id mysql >/dev/null 2>&1 || useradd --system --home-dir "$dir" mysql
    chown -R mysql "$dir"
    as_mysql=(runuser -u mysql --)
    user=(--user=mysql)
  fi
  "${as_mysql[@]}" mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
    --skip-test-db >"$dir/install.log" 2>&1 || { services_log "mariadb-install-db failed: $dir/install.log"; return 1; }
  # No --daemonize: setsid detaches it; its PID file is how stop_services finds it.
  setsid mariadbd --no-defaults "${user[@]}" --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
    --socket="$dir/mariadb.sock" --pid-file="$dir/mariadb.pid" --log-error="$dir/server.log" \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci --max-connections=300 \
    --innodb-flush-log-at-trx-commit=0 --innodb-buffer-pool-size=64M --skip-log-bin </dev/null >/dev/null 2>&1 &
  wait_for 30 mariadb-admin --no-defaults --socket="$dir/mariadb.sock" -u root ping ||
    { services_log "mariadb did not start: $dir/server.log"; return 1; }
  # `root@localhost` need not match a TCP client at 127.0.0.1 (it does not where the server
  # resolves no names): allow 127.0.0.1 explicitly.
  mariadb --no-defaults --socket="$dir/mariadb.sock" -u root -e \
    "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; CREATE DATABASE IF NOT EXISTS cloakroom" ||
    { services_log "mariadb setup failed"; return 1; }
  export CLOAKROOM_MYSQL_URL="mysql://root@127.0.0.1:$port/cloakroom"
  services_log "mariadb on 127.0.0.1:$port"
}

# Stops what start_services started. Needs only CLOAKROOM_SERVICES_DIR, so it also works from
# another shell: CLOAKROOM_SERVICES_DIR=/tmp/cloakroom-services.XXXX bash -c '. scripts/services.sh; stop_services'
stop_services() {
  local dir=${CLOAKROOM_SERVICES_DIR:-}
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  local as_pg=()
  [ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
  local pidfile
  for pidfile in "$dir"/redis/redis.pid "$dir"/cluster-*/redis.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
  done
  if [ -f "$dir/mariadb/mariadb.pid" ]; then
    # A clean shutdown; its files are removed below only once it has exited.
    local mariadb_pid; mariadb_pid=$(cat "$dir/mariadb/mariadb.pid")
    kill "$mariadb_pid" 2>/dev/null && wait_for 30 bash -c "! kill -0 $mariadb_pid"
  fi
  [ -f "$dir/dynalite/dynalite.pid" ] && kill "$(cat "$dir/dynalite/dynalite.pid")" 2>/dev/null
  if [ -f "$dir/pg/data/postmaster.pid" ]; then
    "${as_pg[@]}" "$(pg_bindir)/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1
  fi
  rm -rf "$dir"
  services_log "stopped and removed $dir"
}
