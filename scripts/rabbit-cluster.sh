#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this one machine, for trying failover.
#
#   scripts/rabbit-cluster.sh start       a fresh cluster: lpc1..lpc3, nodes 2 and 3 join 1
#   scripts/rabbit-cluster.sh stop        stops every node (state is kept until the next start)
#   scripts/rabbit-cluster.sh kill N      kill -9 of node N's Erlang VM (a crash, no goodbye)
#   scripts/rabbit-cluster.sh restart N   starts node N again on its own state; it rejoins
#   scripts/rabbit-cluster.sh status      which nodes run, the cluster's view, the queues
#   scripts/rabbit-cluster.sh urls        the three AMQP URLs, comma-separated
#   scripts/rabbit-cluster.sh ctl N ARGS  rabbitmqctl against node N (e.g. ctl 1 list_queues)
#
# Node N is lpcN@localhost, takes AMQP on 127.0.0.1:568N (guest/guest) and Erlang
# distribution on port 2568N. Each node keeps its data, logs and PID file under
# $LEADPIPE_RABBIT_CLUSTER_DIR/lpcN (default /tmp/leadpipe-rabbit-cluster); the nodes share
# an Erlang cookie of their own, run no plugins (so no management listener), and read
# neither /etc/rabbitmq/rabbitmq.conf nor rabbitmq-env.conf. The machine's own RabbitMQ
# node (5672) is never addressed.
set -euo pipefail

STATE=${LEADPIPE_RABBIT_CLUSTER_DIR:-/tmp/leadpipe-rabbit-cluster}
BIN=/usr/lib/rabbitmq/bin
NODES=(1 2 3)

log() { printf 'rabbit-cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

node() { echo "lpc$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
dist_port() { echo $((25680 + $1)); }

check_node_number() {
  case "${1:-}" in
    1 | 2 | 3) ;;
    *) die "a node number is 1, 2 or 3 (got '${1:-}')" ;;
  esac
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Sets NODE_ENV to the environment every rabbitmq command of node $1 runs with.
node_env() {
  local n=$1 dir="$STATE/lpc$1"
  NODE_ENV=(
    HOME="$STATE/home"
    RABBITMQ_NODENAME="$(node "$n")"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$(amqp_port "$n")"
    RABBITMQ_DIST_PORT="$(dist_port "$n")"
    RABBITMQ_CONF_ENV_FILE="$STATE/rabbitmq-env.conf"
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
    RABBITMQ_ENABLED_PLUGINS_FILE="$STATE/enabled_plugins"
    RABBITMQ_MNESIA_BASE="$dir/mnesia"
    RABBITMQ_LOG_BASE="$dir/log"
    RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
    # Erlang distribution on loopback only, like AMQP.
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  )
}

ctl() {
  local n=$1
  shift
  node_env "$n"
  env "${NODE_ENV[@]}" "$BIN/rabbitmqctl" -n "$(node "$n")" "$@"
}

pid_of() {
  local file="$STATE/lpc$1/rabbitmq.pid"
  [ -s "$file" ] && cat "$file"
}

running() {
  local pid
  pid=$(pid_of "$1") && kill -0 "$pid" 2>/dev/null
}

launch() {
  local n=$1 dir="$STATE/lpc$1"
  if running "$n"; then
    log "$(node "$n") already runs (pid $(pid_of "$n"))"
    return 0
  fi
  if port_open "$(amqp_port "$n")"; then
    die "port $(amqp_port "$n") is taken by another process; stop it first"
  fi
  mkdir -p "$dir/mnesia" "$dir/log"
  rm -f "$dir/rabbitmq.pid"
  log "starting $(node "$n") on AMQP port $(amqp_port "$n")"
  # setsid: the node outlives this script and the shell that ran it.
  node_env "$n"
  env "${NODE_ENV[@]}" setsid "$BIN/rabbitmq-server" >"$dir/log/console.log" 2>&1 </dev/null &
}

wait_up() {
  local n=$1
  for _ in $(seq 1 240); do
    [ -s "$STATE/lpc$n/rabbitmq.pid" ] && break
    sleep 0.25
  done
  [ -s "$STATE/lpc$n/rabbitmq.pid" ] || die "$(node "$n") wrote no PID file; see $STATE/lpc$n/log"
  ctl "$n" -q wait --timeout 120 "$STATE/lpc$n/rabbitmq.pid" >/dev/null ||
    die "$(node "$n") did not start; see $STATE/lpc$n/log"
  for _ in $(seq 1 240); do
    port_open "$(amqp_port "$n")" && return 0
    sleep 0.25
  done
  die "$(node "$n") does not listen on $(amqp_port "$n"); see $STATE/lpc$n/log"
}

start() {
  for n in "${NODES[@]}"; do
    running "$n" && die "$(node "$n") still runs: scripts/rabbit-cluster.sh stop first"
  done
  rm -rf "$STATE"
  mkdir -p "$STATE/home"
  # A cookie of this cluster's own: its CLI commands cannot reach any other node.
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/home/.erlang.cookie"
  chmod 400 "$STATE/home/.erlang.cookie"
  : >"$STATE/rabbitmq-env.conf"
  echo '[].' >"$STATE/enabled_plugins"
  for n in "${NODES[@]}"; do
    mkdir -p "$STATE/lpc$n"
    cat >"$STATE/lpc$n/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
loopback_users = none
EOF
  done
  for n in "${NODES[@]}"; do launch "$n"; done
  for n in "${NODES[@]}"; do wait_up "$n"; done
  for n in 2 3; do
    log "$(node "$n") joins $(node 1)"
    ctl "$n" -q stop_app
    ctl "$n" -q join_cluster "$(node 1)"
    ctl "$n" -q start_app
  done
  ctl 1 -q await_online_nodes 3 --timeout 120 >/dev/null 2>&1 || true
  status
}

stop() {
  for n in "${NODES[@]}"; do
    if running "$n"; then
      log "stopping $(node "$n")"
      ctl "$n" -q stop >/dev/null 2>&1 || kill -9 "$(pid_of "$n")" 2>/dev/null || true
    fi
  done
}

kill_node() {
  check_node_number "${1:-}"
  local pid
  pid=$(pid_of "$1") || die "$(node "$1") has no PID file: it never ran"
  kill -0 "$pid" 2>/dev/null || die "$(node "$1") does not run"
  log "kill -9 $(node "$1") (pid $pid)"
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

restart() {
  check_node_number "${1:-}"
  [ -d "$STATE/lpc$1/mnesia" ] || die "$(node "$1") has no state: run start first"
  launch "$1"
  wait_up "$1"
}

status() {
  for n in "${NODES[@]}"; do
    if running "$n"; then
      echo "$(node "$n"): running, pid $(pid_of "$n"), amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"
    else
      echo "$(node "$n"): stopped"
    fi
  done
  for n in "${NODES[@]}"; do
    if running "$n"; then
      echo "running nodes, as $(node "$n") sees them:"
      ctl "$n" -q cluster_status 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' |
        sed -n '/^Running Nodes/,/^Versions/p' | grep '@' || true
      ctl "$n" -q list_queues name type leader members 2>/dev/null || true
      break
    fi
  done
}

urls() {
  local out=() n
  for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"); done
  (IFS=,; echo "${out[*]}")
}

command -v "$BIN/rabbitmq-server" >/dev/null 2>&1 ||
  die "RabbitMQ is not installed ($BIN/rabbitmq-server missing): apt-get install rabbitmq-server"

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  kill) kill_node "${2:-}" ;;
  restart) restart "${2:-}" ;;
  status) status ;;
  urls) urls ;;
  ctl)
    check_node_number "${2:-}"
    n=$2
    shift 2
    ctl "$n" "$@"
    ;;
  *) die "usage: $0 start|stop|kill N|restart N|status|urls|ctl N ARGS" ;;
esac
