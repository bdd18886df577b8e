# The network fault scenario, sourced by scripts/faults.sh. The daemon reaches the
# private broker and database through scripts/faults/proxy.py (ports RMQ_PORT+1 and
# PG_PORT+1), which delays, stalls or resets their connections on request; HTTP is left
# alone. The proxy stands in for `tc qdisc ... netem` in a network namespace: this
# machine's kernel has neither sch_netem nor sch_prio (`tc qdisc add ... netem` answers
# "Specified qdisc kind is unknown"), and a namespace without them adds nothing.

netem_set() { echo "$*" >"$FAULTS_DIR/netem/mode"; }

scenario_netem() {
  begin netem
  mkdir -p "$FAULTS_DIR/netem"
  netem_set clean
  python3 scripts/faults/proxy.py "$FAULTS_DIR/netem/mode" \
    "$((RMQ_PORT + 1)):$RMQ_PORT" "$((PG_PORT + 1)):$PG_PORT" >"$FAULTS_DIR/netem/proxy.log" 2>&1 &
  local proxy=$!
  sleep 1
  daemon_start 1 \
    LEADPIPE__DATABASE__URL="postgres://postgres@127.0.0.1:$((PG_PORT + 1))/$DB" \
    LEADPIPE__AMQP__URL="amqp://guest:guest@127.0.0.1:$((RMQ_PORT + 1))/%2f"
  daemon_ready 1
  duration=$((DURATION + 40)) load_start 1
  sleep 8
  netem_set delay 200 50
  sleep 15
  netem_set stall
  sleep 15
  netem_set clean
  local k
  for k in 1 2 3; do
    sleep 5
    netem_set reset
  done
  load_wait
  local spooled
  spooled=$(curl -s "$(url 1)/metrics" | awk '/^leadpipe_spool_appended_total/ {s += $2} END {print s + 0}')
  account "broker+db links: delay 200+-50 ms 15 s, stalled 15 s, reset 3 times; $spooled posts spooled"
  kill "$proxy" 2>/dev/null || true
  wait "$proxy" 2>/dev/null || true
}
