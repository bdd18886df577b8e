#!/usr/bin/env bash
# Prints how much is still on its way to the database: messages in the private broker's
# queues of one prefix (ready and unacknowledged, dead-letter queues left out: what sits
# there is not coming) plus entries in the daemons' spools.
# Usage: FAULTS_DIR=... backlog.sh PREFIX URL...
set -uo pipefail
source "$(dirname "$0")/services.sh"
prefix=$1
shift
queued=$(rmqctl -q list_queues name messages 2>/dev/null |
  awk -v p="$prefix." 'index($1, p) == 1 && $1 !~ /dead|dlq|dlx/ && $2 ~ /^[0-9]+$/ {s += $2} END {print s + 0}')
spooled=0
for url in "$@"; do
  n=$(curl -s -m 2 "$url/metrics" | awk '/^leadpipe_spool_entries/ {s += $2} END {print s + 0}')
  spooled=$((spooled + ${n:-0}))
done
echo $((queued + spooled))
