#!/usr/bin/env bash
# What a filled spool costs: how long a daemon takes to start when its spool holds N
# entries from a crashed run, how much memory it then holds, and how fast the entries
# reach the database once the broker is back. Against the private RabbitMQ and
# PostgreSQL of the fault suite (scripts/faults/services.sh), never the machine's shared
# ones. Not part of CI.
#   1. a daemon starts on an empty spool and is killed -9, then started again: the
#      start-up time of an empty spool, for comparison;
#   2. RabbitMQ is stopped and the load generator posts N forms at concurrency C: every
#      accepted post goes to the spool;
#   3. the daemon is killed -9 and started again with the broker still down: the time
#      from starting the process to `/readyz` answering 200 (degraded: intake runs on the
#      spool), and the resident memory then;
#   4. RabbitMQ starts again: the time until the spool is empty and until every accepted
#      post is stored, checked by scripts/faults/check.py (every 2xx stored exactly once).
# DROP_CACHES=1 empties the page cache before the restart (root only), so the journal is
# read from disk as after a reboot.
# Usage: [N=200000] [C=64] [DROP_CACHES=1] [KEEP=1] [PROFILE=dist] [NO_BUILD=1] bash scripts/spool-startup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${N:-200000}
C=${C:-64}
KEEP=${KEEP:-0}
FAULTS_DIR=$(mktemp -d /tmp/lpspool.XXXXXX)
chmod 755 "$FAULTS_DIR"
export FAULTS_DIR
# Ports of its own, so it can share the machine with a soak or the fault suite.
export RMQ_NODE=lpspool@localhost RMQ_PORT=5696 RMQ_DIST_PORT=25696 PG_PORT=5448
source scripts/faults/services.sh
DB=lpspool
PORT=8198
URL=http://127.0.0.1:$PORT
pid=""

cleanup() {
  [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then
    echo "services kept: files in $FAULTS_DIR" >&2
  else
    services_down
    cp "$FAULTS_DIR/daemon.log" "/tmp/lpspool-$(date +%s).log" 2>/dev/null || true
    rm -rf "$FAULTS_DIR"
  fi
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# Entries and bytes in the spool, from `/readyz` (read when asked; the gauges in
# `/metrics` are refreshed every 250 ms to a second).
spool_depth() {
  curl -s -m 2 "$URL/readyz" | python3 -c 'import json, sys; s = json.load(sys.stdin)["spool"]; print(s["entries"], s["bytes"])'
}
rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status"; }

# Starts the daemon; sets pid, and ready_ms to the milliseconds until `/readyz` answers 200.
start_timed() {
  local t0
  t0=$(now_ms)
  LEADPIPE__SPOOL__DIR=$FAULTS_DIR/spool LEADPIPE__LOG__LEVEL=warn \
    "./target/$PROFILE/leadpipe" serve --config "$FAULTS_DIR/leadpipe.toml" >>"$FAULTS_DIR/daemon.log" 2>&1 &
  pid=$!
  until curl -sf -o /dev/null -m 1 "$URL/readyz"; do
    kill -0 "$pid" 2>/dev/null || { echo "the daemon exited; see $FAULTS_DIR/daemon.log" >&2; exit 1; }
    sleep 0.01
  done
  ready_ms=$(($(now_ms) - t0))
}

kill9() {
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  pid=""
}

build_binaries
services_up
private_config "$DB" "$PORT" "$FAULTS_DIR/leadpipe.toml"

# The first start creates the database, its schema and the broker's queues.
start_timed
kill9
start_timed
empty_ms=$ready_ms
sleep 2
empty_rss=$(rss_mib)
echo "empty spool: ready after $empty_ms ms, RSS $empty_rss MiB"

rmq_stop
"./target/$PROFILE/loadgen" --url "$URL" --requests "$N" --concurrency "$C" --intake-only \
  --record "$FAULTS_DIR/record.tsv" | tee "$FAULTS_DIR/loadgen.out"
read -r entries bytes < <(spool_depth)
before_rss=$(rss_mib)
echo "spool: $entries entries, $bytes bytes; daemon RSS $before_rss MiB"
kill9
if [ "${DROP_CACHES:-0}" = 1 ]; then
  # A cold start: the journal is read from disk, not from the page cache.
  sync
  echo 3 >/proc/sys/vm/drop_caches
fi

start_timed
full_ms=$ready_ms
sleep 2
full_rss=$(rss_mib)
echo "spool of $entries entries: ready (degraded) after $full_ms ms, RSS $full_rss MiB"

t0=$(now_ms)
rmq_start
until [ "$(spool_depth | cut -d' ' -f1)" = 0 ]; do sleep 0.2; done
drain_ms=$(($(now_ms) - t0))
echo "broker back: spool empty after $drain_ms ms (broker start-up included), RSS $(rss_mib) MiB"
set +e
python3 scripts/faults/check.py --psql "psql -h 127.0.0.1 -p $PG_PORT -U postgres -d $DB" \
  --backlog-cmd "FAULTS_DIR=$FAULTS_DIR bash $ROOT/scripts/faults/backlog.sh $DB $URL" \
  --timeout 600 "$FAULTS_DIR/record.tsv"
rc=$?
set -e
stored_ms=$(($(now_ms) - t0))
echo "every accepted post accounted for $stored_ms ms after the broker was started (check.py's 10 s settle included); RSS $(rss_mib) MiB"
exit "$rc"
