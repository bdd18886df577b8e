# Private RabbitMQ and PostgreSQL for the fault suite, sourced by scripts/faults.sh and
# scripts/soak.sh. They run beside the machine's shared services, never instead of them:
# the faults below stop, kill and block them, which must not reach anyone else.
#   RabbitMQ: node lpfaults@localhost, AMQP on 127.0.0.1:$RMQ_PORT (5690), no plugins.
#   PostgreSQL: a cluster initialised in $FAULTS_DIR/pg, port $PG_PORT (5442), trust auth.
# Needs $FAULTS_DIR (a scratch directory). Run as root: PostgreSQL runs as user postgres.

RMQ_NODE=${RMQ_NODE:-lpfaults@localhost}
RMQ_PORT=${RMQ_PORT:-5690}
RMQ_DIST_PORT=${RMQ_DIST_PORT:-25690}
PG_PORT=${PG_PORT:-5442}
RMQ_BIN=/usr/lib/rabbitmq/bin
PG_BIN=$(dirname "$(readlink -f "$(command -v initdb)")")

# The broker's environment: everything under $FAULTS_DIR/rmq, the Erlang cookie in its own
# HOME so rabbitmqctl and the node agree without touching the machine's cookie.
rmq_env() {
  export HOME=$FAULTS_DIR/rmq/home
  export RABBITMQ_NODENAME=$RMQ_NODE RABBITMQ_DIST_PORT=$RMQ_DIST_PORT
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$RMQ_PORT
  export RABBITMQ_MNESIA_BASE=$FAULTS_DIR/rmq/mnesia RABBITMQ_LOG_BASE=$FAULTS_DIR/rmq/log
  export RABBITMQ_PID_FILE=$FAULTS_DIR/rmq/rabbit.pid
  export RABBITMQ_ENABLED_PLUGINS_FILE=$FAULTS_DIR/rmq/enabled_plugins
  export RABBITMQ_CONFIG_FILE=$FAULTS_DIR/rmq/rabbitmq
  export RABBITMQ_ADVANCED_CONFIG_FILE=$FAULTS_DIR/rmq/advanced.config
  export RABBITMQ_CONF_ENV_FILE=$FAULTS_DIR/rmq/rabbitmq-env.conf
}

rmqctl() { (rmq_env && "$RMQ_BIN/rabbitmqctl" -n "$RMQ_NODE" "$@"); }

rmq_start() {
  mkdir -p "$FAULTS_DIR/rmq/home" "$FAULTS_DIR/rmq/log"
  [ -f "$FAULTS_DIR/rmq/enabled_plugins" ] || echo '[].' >"$FAULTS_DIR/rmq/enabled_plugins"
  touch "$FAULTS_DIR/rmq/rabbitmq-env.conf"
  echo 'loopback_users = none' >"$FAULTS_DIR/rmq/rabbitmq.conf"
  [ -f "$FAULTS_DIR/rmq/advanced.config" ] || echo '[].' >"$FAULTS_DIR/rmq/advanced.config"
  (rmq_env && setsid "$RMQ_BIN/rabbitmq-server" >>"$FAULTS_DIR/rmq/server.out" 2>&1 &)
  rmqctl -q wait --timeout 120 "$FAULTS_DIR/rmq/rabbit.pid" >/dev/null
}

# The broker's Erlang VM (beam.smp) process id, for kill -9.
rmq_pid() { cat "$FAULTS_DIR/rmq/rabbit.pid"; }

rmq_stop() { rmqctl -q stop "$FAULTS_DIR/rmq/rabbit.pid" >/dev/null 2>&1 || true; }

rmq_kill9() {
  local pid
  pid=$(rmq_pid)
  kill -9 "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  # epmd stays, which is what a crashed node leaves behind too.
}

# Messages in the private broker's queues (ready + unacknowledged).
rmq_backlog() {
  rmqctl -q list_queues messages 2>/dev/null | awk '$1 ~ /^[0-9]+$/ {s += $1} END {print s + 0}'
}

pg_ctl_() { su postgres -s /bin/sh -c "'$PG_BIN/pg_ctl' -D '$FAULTS_DIR/pg/data' $*"; }

pg_start() {
  if [ ! -d "$FAULTS_DIR/pg/data" ]; then
    mkdir -p "$FAULTS_DIR/pg"
    chown postgres "$FAULTS_DIR/pg"
    su postgres -s /bin/sh -c "'$PG_BIN/initdb' -A trust -U postgres -D '$FAULTS_DIR/pg/data'" >/dev/null
    cat >>"$FAULTS_DIR/pg/data/postgresql.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$FAULTS_DIR/pg'
max_connections = 200
fsync = on
CONF
  fi
  pg_ctl_ -w -t 60 -l "'$FAULTS_DIR/pg/log'" start >/dev/null
}

pg_stop() { pg_ctl_ -w -m "${1:-fast}" stop >/dev/null 2>&1 || true; }

pg_restart_immediate() {
  pg_ctl_ -w -m immediate stop >/dev/null
  pg_ctl_ -w -t 60 -l "'$FAULTS_DIR/pg/log'" start >/dev/null
}

pg_sql() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -v ON_ERROR_STOP=1 "$@"; }

# Writes deploy/leadpipe.example.toml pointed at the private services to file $3: database
# and AMQP prefix $1, HTTP on 127.0.0.1:$2.
private_config() {
  sed -e "s#^url = \"postgres://.*#url = \"postgres://postgres@127.0.0.1:$PG_PORT/$1\"#" \
    -e "s#^url = \"amqp://.*#url = \"amqp://guest:guest@127.0.0.1:$RMQ_PORT/%2f\"#" \
    -e "s#^prefix = \"leadpipe\"#prefix = \"$1\"#" \
    -e "s#^listen = .*#listen = \"127.0.0.1:$2\"#" \
    deploy/leadpipe.example.toml >"$3"
}

services_up() { pg_start && rmq_start; }

services_down() {
  rmq_stop
  pg_stop fast
}

# Builds leadpipe and loadgen unless NO_BUILD=1, with the `dist` profile that
# scripts/run.sh runs; PROFILE=debug uses the debug build (quicker to make, slower to
# run). Sets PROFILE.
build_binaries() {
  PROFILE=${PROFILE:-dist}
  if [ "${NO_BUILD:-0}" != 1 ]; then
    local flag=""
    [ "$PROFILE" = debug ] || flag="--profile $PROFILE"
    CARGO_INCREMENTAL=0 cargo build $flag --quiet -p leadpipe --bin leadpipe --bin loadgen
  fi
}
