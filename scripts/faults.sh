#!/usr/bin/env bash
# The fault suite: the daemon under a steady open-loop load from loadgen while its
# process, broker, database or network fail, and afterwards an account of every post.
# Each scenario records accepted (2xx), refused (any other answer, or none), stored
# (exactly once), lost (2xx never stored), duplicated (stored more than once) and, where
# people send several posts, order violations; the invariant is every 2xx stored exactly
# once. Refused posts are allowed: the client was told.
#
# Scenarios (default: all but soak, in this order):
#   sigkill       kill -9 of the daemon at 20 random moments, restarted each time
#   sigterm       SIGTERM under load (twice), restarted each time
#   rabbit-stop   the broker stopped for 30 s under load
#   rabbit-kill   the broker killed with -9, restarted after 30 s
#   pg-restart    PostgreSQL restarted in immediate mode under load
#   pg-terminate  every connection of the daemon to PostgreSQL killed, three times
#   three         three daemons on one broker and database, people posting 5 numbered
#                 messages each across them; one daemon's broker link stalled, then the
#                 daemon killed -9 with posts in its spool, and restarted
#   alarm         broker memory alarm, then disk alarm (connection.blocked) for 20 s each
#   netem         the daemon's broker and database connections delayed, stalled and reset
#                 through a fault proxy (scripts/faults/netem.sh says why not tc netem)
#   cluster       a three-node broker cluster, the publisher's node killed (scripts/faults-cluster.sh)
#
# Everything runs against a private RabbitMQ (port 5690) and PostgreSQL (port 5442)
# started here, never the machine's shared ones (scripts/faults/services.sh); both are
# removed at the end unless KEEP=1. Each scenario has a database and queue prefix of its
# own. Needs root (PostgreSQL runs as user postgres), python3 and psql.
#
# Usage: [RATE=300] [DURATION=40] [KEEP=1] [NO_BUILD=1] [PROFILE=debug] [HTTP_BASE=8190] bash scripts/faults.sh [scenario...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RATE=${RATE:-300}
DURATION=${DURATION:-40}
KEEP=${KEEP:-0}
# Daemon N listens on HTTP_BASE + N. With other RMQ_NODE, RMQ_PORT, RMQ_DIST_PORT, PG_PORT
# and HTTP_BASE two suites can run side by side.
HTTP_BASE=${HTTP_BASE:-8190}
ALL="sigkill sigterm rabbit-stop rabbit-kill pg-restart pg-terminate three alarm netem cluster"
SCENARIOS=${*:-$ALL}

FAULTS_DIR=$(mktemp -d /tmp/lpfaults.XXXXXX)
chmod 755 "$FAULTS_DIR"
export FAULTS_DIR
source scripts/faults/services.sh
RESULTS=$FAULTS_DIR/results.txt
: >"$RESULTS"
declare -A PIDS=()

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
  local n
  for n in "${!PIDS[@]}"; do kill -9 "${PIDS[$n]}" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then
    say "services kept: RabbitMQ $RMQ_NODE on $RMQ_PORT, PostgreSQL on $PG_PORT, files in $FAULTS_DIR"
  else
    services_down
    rm -rf "$FAULTS_DIR"
  fi
}
trap cleanup EXIT

build_binaries
LEADPIPE=$ROOT/target/$PROFILE/leadpipe
LOADGEN=$ROOT/target/$PROFILE/loadgen

source scripts/faults/netem.sh
say "starting the private PostgreSQL (port $PG_PORT) and RabbitMQ ($RMQ_NODE, port $RMQ_PORT)"
services_up

CONFIG=$FAULTS_DIR/leadpipe.toml
sed -e "s#^url = \"postgres://.*#url = \"postgres://postgres@127.0.0.1:$PG_PORT/lpfaults\"#" \
  -e "s#^url = \"amqp://.*#url = \"amqp://guest:guest@127.0.0.1:$RMQ_PORT/%2f\"#" \
  deploy/leadpipe.example.toml >"$CONFIG"

# The scenario being run: its database, queue prefix and files.
SCEN=""
DB=""
HOST=127.0.0.1

begin() {
  SCEN=$1
  DB=lpf_${SCEN//-/_}
  mkdir -p "$FAULTS_DIR/$SCEN"
  pg_sql -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
  say "== $SCEN"
}

url() { echo "http://$HOST:$((HTTP_BASE + $1))"; }

# Starts daemon N (1, 2, 3) of the scenario; waits until it answers /healthz (not
# /readyz: some scenarios start it while the broker is away). Extra env pairs may follow.
daemon_start() {
  local n=$1
  shift
  env LEADPIPE__HTTP__LISTEN="$HOST:$((HTTP_BASE + n))" \
    LEADPIPE__DATABASE__URL="postgres://postgres@127.0.0.1:$PG_PORT/$DB" \
    LEADPIPE__AMQP__URL="amqp://guest:guest@127.0.0.1:$RMQ_PORT/%2f" \
    LEADPIPE__AMQP__PREFIX="$DB" \
    LEADPIPE__SPOOL__DIR="$FAULTS_DIR/$SCEN/spool$n" \
    LEADPIPE__LOG__LEVEL=warn "$@" \
    "$LEADPIPE" serve --config "$CONFIG" >>"$FAULTS_DIR/$SCEN/daemon$n.log" 2>&1 &
  PIDS[$n]=$!
  local i
  for i in $(seq 1 300); do
    curl -s -o /dev/null -m 1 "$(url "$n")/healthz" && return 0
    kill -0 "${PIDS[$n]}" 2>/dev/null || break
    sleep 0.2
  done
  say "daemon $n did not start; log: $FAULTS_DIR/$SCEN/daemon$n.log"
  tail -5 "$FAULTS_DIR/$SCEN/daemon$n.log" >&2
  return 1
}

# Waits until daemon N answers /readyz 200 (broker and database both reachable).
daemon_ready() {
  local i
  for i in $(seq 1 600); do
    curl -sf -o /dev/null -m 1 "$(url "$1")/readyz" && return 0
    sleep 0.2
  done
  say "daemon $1 never became ready"
  return 1
}

daemon_signal() {
  local n=$1 sig=$2
  kill "-$sig" "${PIDS[$n]}" 2>/dev/null || true
  wait "${PIDS[$n]}" 2>/dev/null || true
  unset "PIDS[$n]"
}

daemon_stop_all() {
  local n
  for n in "${!PIDS[@]}"; do daemon_signal "$n" TERM; done
}

# Starts the load in the background: RATE people a second for DURATION seconds (override
# with `rate=...`, `duration=...`, `extra=...` before the call) against daemons "$@".
LOADPID=""
load_start() {
  local urls="" n
  for n in "$@"; do urls="$urls${urls:+,}$(url "$n")"; done
  "$LOADGEN" --url "$urls" --rate "${rate:-$RATE}" --duration "${duration:-$DURATION}" \
    --intake-only --record "$FAULTS_DIR/$SCEN/record.tsv" ${extra:-} \
    >"$FAULTS_DIR/$SCEN/loadgen.out" 2>&1 &
  LOADPID=$!
}

load_wait() { wait "$LOADPID" || say "loadgen ended with an error: $(tail -1 "$FAULTS_DIR/$SCEN/loadgen.out")"; }

# Waits for the drain and accounts for every post; one table row per scenario.
account() {
  local note=${1:-} urls=() n line rc latency dead
  for n in "${!PIDS[@]}"; do urls+=("$(url "$n")"); done
  set +e
  line=$(python3 scripts/faults/check.py --psql "psql -h 127.0.0.1 -p $PG_PORT -U postgres -d $DB" \
    --settle 10 --timeout 300 \
    --backlog-cmd "FAULTS_DIR=$FAULTS_DIR bash $ROOT/scripts/faults/backlog.sh $DB ${urls[*]}" \
    "$FAULTS_DIR/$SCEN/record.tsv" 2>"$FAULTS_DIR/$SCEN/check.err")
  rc=$?
  set -e
  latency=$(sed -n 's/^ack latency: *//p' "$FAULTS_DIR/$SCEN/loadgen.out" | sed 's/, p99.9 [^,]*//')
  dead=$(rmqctl -q list_queues name messages 2>/dev/null | awk -v q="$DB.dead" '$1 == q {print $2}')
  local verdict=PASS
  [ "$rc" = 0 ] || verdict=FAIL
  [ "$rc" != 3 ] || verdict=UNDRAINED
  [ -n "$line" ] || line="no account (check.py exit $rc)"
  printf '%-13s %s %s | dead-lettered=%s | %s | %s\n' "$SCEN" "$verdict" "$line" "${dead:-0}" "$latency" "$note" | tee -a "$RESULTS"
  [ -s "$FAULTS_DIR/$SCEN/check.err" ] && sed 's/^/    /' "$FAULTS_DIR/$SCEN/check.err" | head -10 >&2
  daemon_stop_all
}

# A random pause between $1 and $2 seconds (decimals allowed).
pause() { sleep "$(awk -v a="$1" -v b="$2" 'BEGIN {srand(); printf "%.2f", a + rand() * (b - a)}')"; }

scenario_sigkill() {
  begin sigkill
  daemon_start 1
  daemon_ready 1
  duration=90 load_start 1
  local k
  for k in $(seq 1 20); do
    pause 1 3.5
    daemon_signal 1 KILL
    daemon_start 1
  done
  load_wait
  account "20 kill -9 at random moments, each followed by a restart"
}

scenario_sigterm() {
  begin sigterm
  daemon_start 1
  daemon_ready 1
  load_start 1
  local k
  for k in 1 2; do
    pause 8 14
    daemon_signal 1 TERM
    daemon_start 1
  done
  load_wait
  account "SIGTERM twice, restarted each time"
}

broker_outage() {
  local how=$1
  begin "rabbit-$how"
  daemon_start 1
  daemon_ready 1
  duration=$((DURATION + 30)) load_start 1
  sleep 10
  if [ "$how" = stop ]; then rmq_stop; else rmq_kill9; fi
  sleep 30
  rmq_start
  load_wait
  local spooled
  spooled=$(curl -s "$(url 1)/metrics" | awk '/^leadpipe_spool_appended_total/ {s += $2} END {print s + 0}')
  account "broker $how for 30 s; $spooled posts went through the spool"
}

scenario_rabbit-stop() { broker_outage stop; }
scenario_rabbit-kill() { broker_outage kill; }

scenario_pg-restart() {
  begin pg-restart
  daemon_start 1
  daemon_ready 1
  load_start 1
  sleep 12
  pg_restart_immediate
  sleep 8
  pg_restart_immediate
  load_wait
  account "PostgreSQL restarted in immediate mode twice"
}

scenario_pg-terminate() {
  begin pg-terminate
  daemon_start 1
  daemon_ready 1
  load_start 1
  local k killed
  for k in 1 2 3; do
    sleep 9
    killed=$(pg_sql -d postgres -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '$DB' AND pid <> pg_backend_pid()")
    say "terminated $killed connections"
  done
  load_wait
  account "all connections to the database terminated three times"
}

scenario_three() {
  begin three
  # Daemon 2 reaches the broker through a fault proxy: its link is stalled shortly before
  # it is killed, so it dies with posts in its spool (confirms stopped coming) while the
  # other two file the same people's next posts. Restarted, it drains them late; the
  # store must still give each person's lead their posts in the order they were sent.
  echo clean >"$FAULTS_DIR/three/link"
  python3 scripts/faults/proxy.py "$FAULTS_DIR/three/link" "$((RMQ_PORT + 2)):$RMQ_PORT" \
    >"$FAULTS_DIR/three/proxy.log" 2>&1 &
  local proxy=$! via="LEADPIPE__AMQP__URL=amqp://guest:guest@127.0.0.1:$((RMQ_PORT + 2))/%2f"
  sleep 1
  daemon_start 1
  daemon_ready 1
  daemon_start 2 "$via"
  daemon_start 3
  daemon_ready 2
  daemon_ready 3
  # People a second: every one sends 5 posts in sequence, taking turns over the daemons.
  rate=$((RATE / 5)) extra="--per-person 5" load_start 1 2 3
  sleep 9
  echo stall >"$FAULTS_DIR/three/link"
  sleep 3
  daemon_signal 2 KILL
  echo clean >"$FAULTS_DIR/three/link"
  local spooled
  spooled=$(find "$FAULTS_DIR/three/spool2" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}')
  sleep 8
  daemon_start 2 "$via"
  load_wait
  account "3 daemons, 5 numbered posts per person; daemon 2's broker link stalled 3 s, then it was killed -9 for 8 s with $spooled bytes in its spool"
  kill "$proxy" 2>/dev/null || true
  wait "$proxy" 2>/dev/null || true
}

scenario_alarm() {
  begin alarm
  daemon_start 1
  daemon_ready 1
  duration=$((DURATION + 20)) load_start 1
  sleep 8
  rmqctl -q set_vm_memory_high_watermark 0.00001 >/dev/null
  sleep 20
  rmqctl -q set_vm_memory_high_watermark 0.4 >/dev/null
  sleep 8
  rmqctl -q set_disk_free_limit 100000GB >/dev/null
  sleep 20
  rmqctl -q set_disk_free_limit 50MB >/dev/null
  load_wait
  local spooled
  spooled=$(curl -s "$(url 1)/metrics" | awk '/^leadpipe_spool_appended_total/ {s += $2} END {print s + 0}')
  account "memory alarm 20 s, then disk alarm 20 s; $spooled posts went through the spool"
}

scenario_cluster() {
  # ---- cluster: a three-node RabbitMQ cluster and broker URL failover --------------
  # scripts/faults-cluster.sh runs it on its own three nodes (5681-5683) against the
  # shared PostgreSQL, with the same accounting.
  begin cluster
  local line rc
  set +e
  BIN=$ROOT/target/$PROFILE BUILD=0 bash scripts/faults-cluster.sh \
    >"$FAULTS_DIR/cluster/out.txt" 2>"$FAULTS_DIR/cluster/err.txt"
  rc=$?
  set -e
  line=$(sed -n 's/^cluster: accepted=/accepted=/p' "$FAULTS_DIR/cluster/out.txt")
  local verdict=PASS
  [ "$rc" = 0 ] || verdict=FAIL
  [ "$rc" != 3 ] || verdict=UNDRAINED
  printf '%-13s %s %s | publisher node killed and restarted under load\n' cluster "$verdict" \
    "${line:-no account (exit $rc; see $FAULTS_DIR/cluster/err.txt)}" | tee -a "$RESULTS"
}

for s in $SCENARIOS; do
  if ! declare -F "scenario_$s" >/dev/null; then
    say "unknown scenario $s (known: $ALL)"
    exit 2
  fi
  "scenario_$s" || printf '%-13s FAIL scenario aborted (exit %s)\n' "$s" "$?" | tee -a "$RESULTS"
  daemon_stop_all
done

echo
echo "fault suite $(date -u +%Y-%m-%dT%H:%MZ), $RATE posts/s open loop, $(nproc) cores"
echo "scenario      verdict account | broker dead letters | loadgen ack latency | what happened"
cat "$RESULTS"
! grep -qE ' (FAIL|UNDRAINED) ' "$RESULTS"
