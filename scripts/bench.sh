#!/usr/bin/env bash
# Benchmarks the daemon on this machine, broker and database included:
#   1. end to end: N form posts at concurrency C, until every lead is stored;
#   2. intake only (consumers off): how fast posts are confirmed by the broker;
#   3. store only: how fast the consumers file the N messages left queued by 2.
#   4. open loop: posts on a fixed schedule at each of RATES per second for DURATION
#      seconds, latency from the scheduled time (p50/p99/p99.9/max);
#   5. the direct baseline (bench/direct-baseline: axum + sqlx, one INSERT per post, no
#      broker) with the same bodies, closed loop and open loop: the figures that count
#      are leadpipe's as ratios to it.
#   6. the broker's floor (bench/broker-floor): RabbitMQ alone confirming one durable
#      message per post, of the size phase 2 measured, on quorum queues like the
#      daemon's shards, open loop at each of RATES: what of phase 4's latency is the
#      broker's own write.
# Prints loadgen's numbers and the CPU seconds each process used in each phase.
# With CONTACTS=1000000 the directory is first seeded with that many contacts through
# `leadpipe import`, so the matching cost of a large directory shows.
# Before phase 1 it prints the daemon's resident memory at idle, 15 s after `/readyz`,
# and how many of the functions in deploy/leadpipe.link-order the binary still has.
# Usage: N=20000 C=64 [CONTACTS=1000000] [RATES="500 2000"] [DURATION=30] [NO_BUILD=1] bash scripts/bench.sh
# The daemon inherits the environment: LEADPIPE__SPOOL__MODE=always measures that mode.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
C=${C:-64}
CONTACTS=${CONTACTS:-0}
RATES=${RATES:-500 2000}
DURATION=${DURATION:-30}
DIRECT_PORT=${DIRECT_PORT:-8090}

bash scripts/services.sh
if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo build --profile dist --quiet -p leadpipe --bin leadpipe --bin loadgen
  cargo build --profile dist --quiet -p direct-baseline -p broker-floor
fi

config=$(mktemp --suffix=.toml)
log=$(mktemp --suffix=.log)
sed 's/^prefix = "leadpipe"$/prefix = "lpbench"/; s#5432/leadpipe"#5432/lpbench"#' \
  deploy/leadpipe.example.toml > "$config"
port=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$config")

fresh() {
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS lpbench WITH (FORCE)" 2>/dev/null
  for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep '^lpbench\.' || true); do
    rabbitmqctl -q delete_queue "$q" >/dev/null
  done
}

contacts_csv=""
seed() {
  [ "$CONTACTS" -gt 0 ] || return 0
  if [ -z "$contacts_csv" ]; then
    contacts_csv=$(mktemp --suffix=.csv)
    python3 scripts/gen_contacts.py "$CONTACTS" "$contacts_csv"
  fi
  local t0 t1
  t0=$(date +%s.%N)
  local out
  out=$(./target/dist/leadpipe import --config "$config" --kind contacts "$contacts_csv" --default-region IT 2>&1)
  t1=$(date +%s.%N)
  # A directory the import refused would measure an empty one under the wrong label.
  if ! grep -Eq "^ *stored: +$CONTACTS\$" <<<"$out"; then
    echo "the import did not store all $CONTACTS contacts:" >&2
    head -20 <<<"$out" >&2
    exit 1
  fi
  awk -v a="$t0" -v b="$t1" -v n="$CONTACTS" 'BEGIN {printf "seeded %d contacts with leadpipe import in %.1f s\n", n, b - a}'
  # A directory is loaded long before the leads come: measure the steady state, not the
  # import's aftermath (autovacuum, a checkpoint). Only the loaded tables are analysed:
  # statistics taken while `leads` is empty would mislead the planner as it grows.
  psql -h 127.0.0.1 -U postgres -d lpbench -qc 'VACUUM ANALYZE contacts, contact_identities' -c 'CHECKPOINT'
  sleep 15
}

# A live PostgreSQL keeps the planner's statistics current through autovacuum. Where the
# server runs with it off, the tables never get statistics while leads pour in, and the
# planner turns the matching look-ups into scans of every lead (at 2,000 posts/s the
# store fell behind at 1,300 leads/s). The run then stands in for autovacuum's analyse,
# every 10 s, as a live server would.
stand_in_analyse=false
if [ "$(psql -h 127.0.0.1 -U postgres -Atc 'SHOW autovacuum')" = off ]; then
  echo "autovacuum is off on this PostgreSQL: lpbench is analysed every 10 s instead"
  stand_in_analyse=true
fi
analyser=""
start() {
  ./target/dist/leadpipe serve --config "$config" >>"$log" 2>&1 &
  pid=$!
  if $stand_in_analyse; then
    (while sleep 10; do psql -h 127.0.0.1 -U postgres -d lpbench -qc ANALYZE 2>/dev/null; done) &
    analyser=$!
  fi
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
    sleep 0.2
  done
  echo "the daemon did not get ready; log: $log" >&2
  exit 1
}

stop() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -n "$analyser" ]; then
    kill "$analyser" 2>/dev/null || true
    wait "$analyser" 2>/dev/null || true
    analyser=""
  fi
}

# CPU time (user + system, in clock ticks) used so far by live processes named like $1.
cpu() {
  local total=0 p f
  for p in $(pgrep "$1"); do
    f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    set -- $f
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
snapshot() { echo "$(($(cpu '^leadpipe$') + $(cpu '^lpdirect$'))) $(cpu '^beam') $(cpu '^postgres$')"; }
report() {
  local hz
  hz=$(getconf CLK_TCK)
  read -r a1 b1 c1 <<<"$1"
  read -r a2 b2 c2 <<<"$2"
  awk -v a=$((a2 - a1)) -v b=$((b2 - b1)) -v c=$((c2 - c1)) -v hz="$hz" \
    'BEGIN {printf "cpu seconds: server %.2f, rabbitmq %.2f, postgres %.2f\n", a / hz, b / hz, c / hz}'
}
# Runs a command and prints the CPU seconds each process spent meanwhile.
with_cpu() {
  local before
  before=$(snapshot)
  "$@"
  report "$before" "$(snapshot)"
}
TIMEFORMAT='loadgen cpu seconds: %U user + %S system (wall %R s)'

# Filed inquiries, replays (no-op copies of ones already filed) left out, as loadgen counts.
stored() {
  curl -s "http://127.0.0.1:$port/metrics" |
    awk '/^leadpipe_inquiries_stored_total\{/ && !/outcome="replay"/ {s += $2} END {print s + 0}'
}

# The list goes stale as symbol names change with the toolchain and Cargo.lock (build.rs).
listed=$(grep -vc '^#' deploy/leadpipe.link-order || true)
found=$(nm --defined-only ./target/dist/leadpipe | awk '{print $3}' | sort -u |
  comm -12 - <(grep -v '^#' deploy/leadpipe.link-order | sort -u) | wc -l)
echo "link order: $found of $listed listed functions are in the binary (scripts/link-order.sh renews the list)"

echo "== 1. end to end: $N posts at concurrency $C, $CONTACTS contacts on file"
fresh
seed
start
sleep 15
awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s %.1f MiB  ", $1, $2 / 1024} END {print "(idle, 15 s after /readyz)"}' "/proc/$pid/status"
before=$(snapshot)
time ./target/dist/loadgen --url "http://127.0.0.1:$port" --requests "$N" --concurrency "$C" --pid "$pid"
report "$before" "$(snapshot)"
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^leadpipe_(store_batch|intake)_seconds_(sum|count)'
stop

echo "== 2. intake only (LEADPIPE__AMQP__CONSUME=false)"
fresh
seed
export LEADPIPE__AMQP__CONSUME=false
start
before=$(snapshot)
time ./target/dist/loadgen --url "http://127.0.0.1:$port" --requests "$N" --concurrency "$C" --pid "$pid" --intake-only
report "$before" "$(snapshot)"
# The size of one inquiry on the broker, for phase 6 (RabbitMQ 3.10 does not count a
# quorum queue's bytes).
envelope=$(./target/dist/lpbroker --envelope-of lpbench.shard.0) || envelope=1500
echo "one inquiry on the broker: $envelope bytes"
stop
unset LEADPIPE__AMQP__CONSUME

echo "== 3. store only: the consumers file the $N queued messages"
beam0=$(cpu '^beam')
# PostgreSQL's own processes (checkpointer, WAL writer) live on: only their growth counts.
pg0=$(cpu '^postgres$')
t0=$(date +%s.%N)
start
until [ "$(stored)" = "$N" ]; do sleep 0.05; done
t1=$(date +%s.%N)
# Start-up included: the daemon and its connections did not exist before.
report "0 $beam0 $pg0" "$(snapshot)"
awk -v a="$t0" -v b="$t1" -v n="$N" 'BEGIN {printf "stored %d in %.2f s (start-up included): %.0f leads/s\n", n, b - a, n / (b - a)}'
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^leadpipe_store_batch_seconds_(sum|count)'
stop

echo "== 4. open loop: $RATES posts/s for $DURATION s each"
fresh
seed
start
for rate in $RATES; do
  echo "-- leadpipe at $rate/s"
  with_cpu ./target/dist/loadgen --url "http://127.0.0.1:$port" --rate "$rate" --duration "$DURATION" --pid "$pid"
done
stop

echo "== 5. direct baseline (one INSERT per post, no broker), same bodies"
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS lpdirect WITH (FORCE)" -c "CREATE DATABASE lpdirect"
./target/dist/lpdirect --listen "127.0.0.1:$DIRECT_PORT" \
  --database-url postgres://postgres@127.0.0.1:5432/lpdirect >>"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$DIRECT_PORT/" && break
  sleep 0.2
done
before=$(snapshot)
echo "-- direct baseline, closed loop: $N posts at concurrency $C"
time ./target/dist/loadgen --url "http://127.0.0.1:$DIRECT_PORT" --requests "$N" --concurrency "$C" --pid "$pid" --intake-only
report "$before" "$(snapshot)"
for rate in $RATES; do
  echo "-- direct baseline at $rate/s"
  with_cpu ./target/dist/loadgen --url "http://127.0.0.1:$DIRECT_PORT" --rate "$rate" --duration "$DURATION" --pid "$pid" --intake-only
done
stop

echo "== 6. the broker's floor: one durable $envelope-byte message a post, quorum queues"
shards=${LEADPIPE__AMQP__SHARDS:-$(sed -n 's/^#\? *shards = \([0-9]*\).*/\1/p' "$config" | head -1)}
for rate in $RATES; do
  echo "-- RabbitMQ alone at $rate/s"
  with_cpu ./target/dist/lpbroker --rate "$rate" --duration "$DURATION" --bytes "$envelope" --queues "${shards:-4}"
done
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS lpdirect WITH (FORCE)"
fresh
rm -f "$config" "$contacts_csv"
echo "daemon log: $log"
