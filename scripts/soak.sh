#!/usr/bin/env bash
# The soak: one daemon under a steady open-loop load for DURATION seconds (default an
# hour) at RATE posts a second, against the private RabbitMQ and PostgreSQL of the fault
# suite (scripts/faults/services.sh), never the machine's shared ones. Every 10 s it
# samples the daemon's resident memory (VmRSS), open file descriptors and spool use into
# a CSV; at the end it prints the first, last and largest memory and descriptor counts
# and accounts for every post (scripts/faults/check.py: every 2xx stored exactly once).
# Not part of CI.
# RATE defaults to half of CAPACITY (accepted/s measured by scripts/bench.sh's closed
# loop on the same machine); one of the two must be given.
# Usage: CAPACITY=3000 [DURATION=3600] [RATE=...] [CSV=soak.csv] [KEEP=1] [PROFILE=debug] bash scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-3600}
if [ -z "${RATE:-}" ]; then
  [ -n "${CAPACITY:-}" ] || { echo "give CAPACITY (accepted/s measured by scripts/bench.sh) or RATE" >&2; exit 2; }
  RATE=$((CAPACITY / 2))
fi
KEEP=${KEEP:-0}
FAULTS_DIR=$(mktemp -d /tmp/lpsoak.XXXXXX)
chmod 755 "$FAULTS_DIR"
export FAULTS_DIR
CSV=${CSV:-$FAULTS_DIR/soak.csv}
# Ports of its own, so a soak and the fault suite can share the machine.
export RMQ_NODE=lpsoak@localhost RMQ_PORT=5695 RMQ_DIST_PORT=25695 PG_PORT=5447
source scripts/faults/services.sh
DB=lpsoak
PORT=8199
pid=""
sampler=""

cleanup() {
  [ -z "$sampler" ] || kill "$sampler" 2>/dev/null || true
  [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then
    echo "services kept: files in $FAULTS_DIR" >&2
  else
    services_down
    # The samples and the daemon's log outlive the run's directory, so a surprise in
    # either can still be looked into.
    local stamp
    stamp=$(date +%s)
    [ "$CSV" != "$FAULTS_DIR/soak.csv" ] || cp "$CSV" "/tmp/lpsoak-$stamp.csv"
    cp "$FAULTS_DIR/daemon.log" "/tmp/lpsoak-$stamp.log" 2>/dev/null || true
    rm -rf "$FAULTS_DIR"
  fi
}
trap cleanup EXIT

build_binaries
services_up
private_config "$DB" "$PORT" "$FAULTS_DIR/leadpipe.toml"
LEADPIPE__SPOOL__DIR=$FAULTS_DIR/spool LEADPIPE__LOG__LEVEL=warn \
  "./target/$PROFILE/leadpipe" serve --config "$FAULTS_DIR/leadpipe.toml" >"$FAULTS_DIR/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  curl -sf -o /dev/null -m 1 "http://127.0.0.1:$PORT/readyz" && break
  sleep 0.2
done

# Besides memory and descriptors: how many posts went through the spool so far, and how
# many entries wait in it now (a daemon under a steady load should leave it again).
echo "seconds,rss_kib,open_fds,spooled_total,spool_entries" >"$CSV"
sample() {
  local t0 now rss fds spool
  t0=$(date +%s)
  while kill -0 "$pid" 2>/dev/null; do
    now=$(($(date +%s) - t0))
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
    spool=$(curl -s -m 2 "http://127.0.0.1:$PORT/metrics" |
      awk '/^leadpipe_inquiries_spooled_total[{ ]/ {s += $NF} /^leadpipe_spool_entries / {e = $2}
        END {printf "%d,%d", s, e}')
    echo "$now,$rss,$fds,$spool" >>"$CSV"
    sleep 10
  done
}
sample &
sampler=$!

echo "soak: $RATE posts/s for $DURATION s, daemon pid $pid, samples in $CSV"
"./target/$PROFILE/loadgen" --url "http://127.0.0.1:$PORT" --rate "$RATE" --duration "$DURATION" \
  --intake-only --record "$FAULTS_DIR/record.tsv" | tee "$FAULTS_DIR/loadgen.out"
set +e
python3 scripts/faults/check.py --psql "psql -h 127.0.0.1 -p $PG_PORT -U postgres -d $DB" \
  --backlog-cmd "FAULTS_DIR=$FAULTS_DIR bash $ROOT/scripts/faults/backlog.sh $DB http://127.0.0.1:$PORT" \
  "$FAULTS_DIR/record.tsv"
rc=$?
set -e
kill "$sampler" 2>/dev/null || true
sampler=""
awk -F, 'NR == 2 {r1 = $2; f1 = $3} NR > 1 {r = $2; f = $3; if ($2 > rm) rm = $2; if ($3 > fm) fm = $3; n++}
  END {printf "samples %d: RSS first %.1f MiB, last %.1f MiB, max %.1f MiB; open fds first %d, last %d, max %d\n",
       n, r1 / 1024, r / 1024, rm / 1024, f1, f, fm}' "$CSV"
exit "$rc"
