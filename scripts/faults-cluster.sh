#!/usr/bin/env bash
# Fault scenario: a broker node dies under load.
#
# Starts the three-node RabbitMQ cluster of scripts/rabbit-cluster.sh, runs the daemon
# with amqp.urls naming all three nodes, sends an open-loop load (loadgen, RATE posts a
# second for DURATION seconds), kill -9s the node the daemon's publisher is connected to
# KILL_AT seconds in, starts it again RESTART_AT seconds in, and then counts what the
# database holds for every post the loadgen recorded (scripts/faults/check.py). Prints
# accepted / refused / stored / lost / duplicated and exits non-zero if anything accepted
# was lost or stored twice.
#
# Uses a database of its own on the PostgreSQL at PGHOST (default 127.0.0.1:5432, user
# postgres, created and dropped here) and an AMQP prefix of its own; the machine's
# RabbitMQ on 5672 is not touched. The cluster is stopped at the end unless
# KEEP_CLUSTER=1.
#
# Usage: [RATE=300] [DURATION=60] [KILL_AT=20] [RESTART_AT=40] bash scripts/faults-cluster.sh
# (BIN=target/debug BUILD=0 runs binaries built earlier instead of building release ones.)
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-300}
DURATION=${DURATION:-60}
KILL_AT=${KILL_AT:-20}
RESTART_AT=${RESTART_AT:-40}
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
export PGHOST PGPORT

log() { printf 'faults-cluster: %s\n' "$*" >&2; }
cluster() { bash scripts/rabbit-cluster.sh "$@"; }

if ! command -v /usr/lib/rabbitmq/bin/rabbitmq-server >/dev/null 2>&1; then
  log "skipped: rabbitmq-server is not installed (apt-get install rabbitmq-server)"
  exit 0
fi

BIN=${BIN:-target/dist}
if [ "${BUILD:-1}" = 1 ]; then
  log "building the release binaries"
  cargo build --profile dist --quiet -p leadpipe --bin leadpipe --bin loadgen
fi
for binary in leadpipe loadgen; do
  [ -x "$BIN/$binary" ] || { log "$BIN/$binary is missing: build it or leave BUILD unset"; exit 1; }
done

token=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
db="lpcluster_$token"
prefix="lpcluster$token"
work=$(mktemp -d /tmp/leadpipe-faults-cluster.XXXXXX)
config="$work/leadpipe.toml"
daemon_log="$work/leadpipe.log"
load_log="$work/loadgen.log"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
daemon_pid=""

cleanup() {
  if [ -n "$daemon_pid" ]; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  psql -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    cluster stop || true
  fi
  log "daemon and loadgen logs kept in $work"
}
trap cleanup EXIT
# A signal (a timeout, Ctrl-C) ends the run through the same clean-up.
trap 'exit 130' INT
trap 'exit 143' TERM

cluster stop >/dev/null 2>&1 || true
cluster start >/dev/null
urls=$(cluster urls)

psql -U postgres -d postgres -qc "CREATE DATABASE $db" >/dev/null
{
  printf '[http]\nlisten = "127.0.0.1:%s"\n\n' "$port"
  printf '[database]\nurl = "postgres://postgres@%s:%s/%s"\n\n' "$PGHOST" "$PGPORT" "$db"
  printf '[amqp]\nurls = [%s]\nprefix = "%s"\n\n' \
    "$(echo "$urls" | sed 's/[^,]*/"&"/g; s/,/, /g')" "$prefix"
  printf '[spool]\ndir = "%s/spool"\n\n' "$work"
  printf '[api]\nadmin_token = "faults-cluster-%s"\n\n' "$token"
  printf '[log]\nformat = "json"\n\n'
  for form in it-contatti:IT pl-kontakt:PL vn-lien-he:VN en-contact:US; do
    printf '[[forms]]\nname = "%s"\nsource = "web-%s"\ndefault_region = "%s"\nhoneypot = "website"\n\n' \
      "${form%%:*}" "${form%%:*}" "${form##*:}"
  done
} >"$config"

"$BIN/leadpipe" serve --config "$config" >>"$daemon_log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 150); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { log "the daemon did not get ready; see $daemon_log"; exit 1; }

# Quorum queues need a majority: every shard queue has a member on each node.
members=$(cluster ctl 1 -q list_queues name type members 2>/dev/null | grep "^$prefix" || true)
log "queues of $prefix (name, type, members):"
printf '%s\n' "$members" >&2
if [ -z "$members" ] || ! printf '%s\n' "$members" | awk '
    { n = 0; for (i = 1; i <= 3; i++) if (index($0, "lpc" i "@localhost")) n++; if (n < 3) bad = 1 }
    END { exit bad }'; then
  log "a queue does not have a member on every node"
  exit 1
fi

# The node the publisher is connected to: the last "Connected" line of the publisher.
publisher_node() {
  python3 - "$daemon_log" <<'PY'
import json, sys
node = ""
for line in open(sys.argv[1], errors="replace"):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get("message") == "Connected to the message broker." and \
            str(event.get("connection", "")).startswith("leadpipe publisher"):
        node = event.get("node", "")
print(node)
PY
}
node=$(publisher_node)
victim=$(echo "$node" | sed -n 's/^[^:]*:568\([1-3]\)\/.*$/\1/p')
[ -n "$victim" ] || { log "cannot tell which node the publisher uses (log says '$node')"; exit 1; }
log "the publisher is connected to lpc$victim@localhost ($node)"

record="$work/record.tsv"
"$BIN/loadgen" --url "http://127.0.0.1:$port" --rate "$RATE" --duration "$DURATION" \
  --drain-timeout 300 --record "$record" >"$load_log" 2>&1 &
load_pid=$!
sleep "$KILL_AT"
cluster kill "$victim"
log "killed lpc$victim@localhost at ${KILL_AT}s: readyz $(curl -s "http://127.0.0.1:$port/readyz" | head -c 300)"
sleep $((RESTART_AT - KILL_AT))
log "publisher now on $(publisher_node); restarting lpc$victim@localhost at ${RESTART_AT}s"
cluster restart "$victim" >/dev/null
load_status=0
wait "$load_pid" || load_status=$?
cat "$load_log" >&2
[ -s "$record" ] || { log "loadgen recorded nothing (exit $load_status)"; exit 1; }

# The same accounting as scripts/faults.sh: every post the loadgen recorded, against the
# database once the spool and the queues are empty (check.py waits for that).
backlog() {
  local queued spooled
  queued=$(cluster ctl 1 -q list_queues name messages 2>/dev/null |
    awk -v p="$prefix.shard." 'index($1, p) == 1 {s += $2} END {print s + 0}')
  spooled=$(curl -s "http://127.0.0.1:$port/metrics" |
    awk '/^leadpipe_spool_entries / {print $2 + 0}')
  echo $((queued + ${spooled:-0}))
}
export -f backlog cluster
export prefix port
check_status=0
line=$(python3 scripts/faults/check.py --psql "psql -h $PGHOST -p $PGPORT -U postgres -d $db" \
  --settle 10 --timeout 300 --backlog-cmd "bash -c backlog" "$record") || check_status=$?

echo "cluster: publisher's node lpc$victim killed at ${KILL_AT}s, restarted at ${RESTART_AT}s, $RATE posts/s for ${DURATION}s"
echo "cluster: ${line:-no account (check.py exit $check_status)}"
cluster ctl 1 -q list_queues name type leader members 2>/dev/null | grep "^$prefix" >&2 || true
exit "$check_status"
