#!/usr/bin/env bash
# Writes deploy/leadpipe.link-order: the functions the daemon runs while it serves intake
# (form posts to every form in deploy/leadpipe.example.toml, URL-encoded and JSON, with
# `/readyz` and `/metrics`), busiest first, then those it runs only to start, idle and
# stop. build.rs hands the list to the linker, which lays those functions out in that
# order: the intake path together, and the code run once at start-up in one place
# instead of all over the binary (docs/BENCHMARKS.md, seventh pass, says why). Each
# function is recorded by running the `dist` build under valgrind's callgrind, which
# counts every instruction, so the list does not depend on timing.
#
# Symbol names carry hashes that change with the toolchain and the versions in
# Cargo.lock; run this after changing either. scripts/bench.sh prints how many of the
# listed functions the binary still has (`link order: N of M`).
# Uses the machine's PostgreSQL and RabbitMQ (scripts/services.sh) with a database and
# queues of its own, dropped at the end. About 3 minutes after the build.
# Usage: [NO_BUILD=1] bash scripts/link-order.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=deploy/leadpipe.link-order
PORT=${LINK_ORDER_PORT:-8195}
NAME=lplinkorder

bash scripts/services.sh
if ! command -v valgrind >/dev/null; then
  echo "installing valgrind from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
[ "${NO_BUILD:-0}" = 1 ] || cargo build --profile dist --quiet -p leadpipe --bin leadpipe
BIN=$ROOT/target/dist/leadpipe

work=$(mktemp -d /tmp/lplinkorder.XXXXXX)
config=$work/config.toml
sed "s/^prefix = \"leadpipe\"$/prefix = \"$NAME\"/; s#5432/leadpipe\"#5432/$NAME\"#; s/127.0.0.1:8080/127.0.0.1:$PORT/" \
  deploy/leadpipe.example.toml > "$config"
pid=""
drop() {
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $NAME WITH (FORCE)" 2>/dev/null
  for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^$NAME\." || true); do
    rabbitmqctl -q delete_queue "$q" >/dev/null
  done
  for x in $(rabbitmqctl -q list_exchanges name 2>/dev/null | grep "^$NAME\." || true); do
    rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$x\">>), false, <<\"cli\">>)." >/dev/null
  done
}
cleanup() {
  [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || true
  drop
  rm -rf "$work"
}
trap cleanup EXIT
drop

# The spool is left on: its start-up (opening the journal) is part of every start.
LEADPIPE__SPOOL__DIR=$work/spool valgrind --tool=callgrind --demangle=no --dump-instr=no \
  --compress-strings=no --compress-pos=no --callgrind-out-file="$work/callgrind.out" \
  "$BIN" serve --config "$config" >"$work/daemon.log" 2>&1 &
pid=$!
url=http://127.0.0.1:$PORT
for _ in $(seq 1 600); do
  curl -sf -o /dev/null "$url/readyz" && break
  kill -0 "$pid" 2>/dev/null || { tail -20 "$work/daemon.log" >&2; exit 1; }
  sleep 0.2
done
curl -sf -o /dev/null "$url/readyz" || { echo "the daemon did not become ready" >&2; exit 1; }
# The profile in three parts: callgrind.out.1 start-up, .2 intake, and the last,
# written at exit, idling and stopping.
callgrind_control --dump=start-up "$pid" >/dev/null

posted=0
sent=0
for form in $(sed -n 's/^name = "\(.*\)"$/\1/p' "$config"); do
  for n in 1 2 3 4 5; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST \
      --data-urlencode "name=Persona $n $form" --data-urlencode "email=p$n.$form@example.com" \
      --data-urlencode "phone=+39 333 123 45$n$n" --data-urlencode "message=Preventivo $n" \
      "$url/v1/intake/forms/$form")
    [ "$code" = 202 ] && posted=$((posted + 1))
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      --data "{\"name\":\"Osoba $n\",\"email\":\"j$n.$form@example.pl\",\"phone\":\"+48 601 234 5$n$n\",\"message\":\"Oferta $n\"}" \
      "$url/v1/intake/forms/$form")
    [ "$code" = 202 ] && posted=$((posted + 1))
    sent=$((sent + 2))
  done
done
curl -s -o /dev/null "$url/metrics"
curl -s -o /dev/null "$url/healthz"
callgrind_control --dump=intake "$pid" >/dev/null
# The periodic tasks (broker depths, spool gauges, key purges) run while it idles.
sleep 20
curl -s -o /dev/null "$url/readyz"
kill -TERM "$pid"
wait "$pid" || true
pid=""
echo "$posted of $sent posts accepted under callgrind"
# A refused post would leave its path out of the list's intake part.
if [ "$posted" != "$sent" ]; then
  echo "not every post was accepted; daemon log:" >&2
  tail -20 "$work/daemon.log" >&2
  exit 1
fi

python3 - "$BIN" "$OUT" "$work/callgrind.out.1" "$work/callgrind.out.2" "$work/callgrind.out" <<'EOF'
import collections, os, sys

binary, out, start_up, intake, rest = sys.argv[1:]
binary = os.path.realpath(binary)


def costs(profile):
    """Instructions run in each function of the binary, by mangled name."""
    # Callgrind's format: `ob=` and `fn=` name the object and function that the cost
    # lines after them belong to; the cost line after `calls=` is a call's inclusive
    # cost, which belongs to the callee and is skipped.
    cost = collections.Counter()
    obj = fn = None
    skip_next = False
    with open(profile, errors="replace") as lines:
        for line in lines:
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("fn="):
                # `'2` marks a recursion level of the same function.
                ours = obj and os.path.realpath(obj) == binary
                fn = line[3:].strip().split("'")[0] if ours else None
                if fn:
                    cost[fn] += 0
            elif line.startswith("calls="):
                skip_next = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip_next:
                    skip_next = False
                elif fn:
                    parts = line.split()
                    if len(parts) >= 2:
                        cost[fn] += int(parts[1])
    return cost


def busiest_first(cost, leave_out=()):
    ranked = sorted(cost.items(), key=lambda item: (-item[1], item[0]))
    return [name for name, _ in ranked
            if name not in leave_out and not name.startswith("0x") and name != "(below main)"]


hot = busiest_first(costs(intake))
once = costs(start_up)
once.update(costs(rest))
cold = busiest_first(once, set(hot))
with open(out, "w") as f:
    f.write("# The functions the daemon runs on the intake path, busiest first, then those it\n")
    f.write("# runs only to start, idle and stop: the linker lays them out in this order\n")
    f.write("# (build.rs). Made by scripts/link-order.sh.\n")
    f.write("\n".join(hot + cold) + "\n")
print(f"{len(hot)} functions of the intake path and {len(cold)} others written to {out}")
EOF
