#!/usr/bin/env bash
# Times lead lists, text search, sorts, cursor pages and the kanban board through the ops
# API over a generated table of LEADS leads (default a million) in database `lpviews`.
# The leads are made with generate_series in SQL (IT/PL/VI/EN names with accents, emails,
# phones, companies, stages, responsible users, tags, a year of creation times), then the
# table is analysed; each request runs RUNS times and the median and slowest are printed.
# REUSE=1 measures the leads a previous run generated again (after a code change).
# Usage: [LEADS=1000000] [RUNS=7] [REUSE=1] [BIN=target/dist/leadpipe] bash scripts/bench_views.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LEADS=${LEADS:-1000000}
RUNS=${RUNS:-7}
BIN=${BIN:-target/dist/leadpipe}
PSQL="psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q"

bash scripts/services.sh >/dev/null
[ -x "$BIN" ] || cargo build --profile dist --quiet --bin leadpipe

config=$(mktemp --suffix=.toml)
log=$(mktemp --suffix=.log)
sed 's/^prefix = "leadpipe"$/prefix = "lpviews"/; s#5432/leadpipe"#5432/lpviews"#; s/^listen = "127.0.0.1:8080"/listen = "127.0.0.1:8097"/' \
  deploy/leadpipe.example.toml > "$config"
token=$(sed -n 's/^admin_token = "\(.*\)"/\1/p' "$config")
base="http://127.0.0.1:8097"

if [ "${REUSE:-0}" = 1 ]; then
  "$BIN" migrate --config "$config" >/dev/null
else
$PSQL -c "DROP DATABASE IF EXISTS lpviews WITH (FORCE)" -c "CREATE DATABASE lpviews"
"$BIN" migrate --config "$config" >/dev/null

t0=$(date +%s.%N)
$PSQL -d lpviews <<SQL
-- The search index is built once after the load, not row by row during it.
DROP INDEX leads_search;
INSERT INTO teams (name) VALUES ('Sales');
INSERT INTO users (name, email, team_id)
SELECT 'Agent ' || g, 'agent' || g || '@example.com', 1 FROM generate_series(1, 20) g;
INSERT INTO inquiries (id, channel, source, received_at, disposition, payload, raw_body)
SELECT md5('lead' || g)::uuid, 'form', 'web-bench', now() - (g % 365) * interval '1 day',
       'lead', '{}', ''::bytea
FROM generate_series(1, $LEADS) g;
WITH names AS (
  SELECT ARRAY['Niccolò','Giulia','Łukasz','Zofia','Nguyễn Văn','Trần Thị','Anna','Đặng Minh',
               'Małgorzata','Francesco','John','Mary','Phạm Quốc','Bogusław','Chiara','Lê Thu'] AS first,
         ARRAY['Bianchi','Żółkiewski','Đức','Hà','Rossi','Wiśniewska','Smith','Hương',
               'Esposito','Kowalski','Brown','Nguyễn','Ricci','Dąbrowski','Phương','Lombardi'] AS last,
         ARRAY['Falegnameria Rossi','Żółkiewski i Synowie','Công ty TNHH An Phát','Acme Inc',
               'Studio Bianchi','Zakład Stolarski','Minh Long Co','Ferramenta Ricci'] AS company
)
INSERT INTO leads (inquiry_id, title, name, email, phone, company, channel, source,
                   pipeline_id, stage_id, stage_entered_at, created_at, updated_at,
                   responsible_id, tags, is_repeat)
SELECT md5('lead' || g)::uuid,
       'Lead ' || g,
       n.first[1 + g % 16] || ' ' || n.last[1 + (g / 16) % 16],
       'person' || g || '@example.' || (ARRAY['it','pl','vn','com'])[1 + g % 4],
       CASE WHEN g % 3 = 0 THEN NULL ELSE '+39' || (3400000000 + g)::text END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE n.company[1 + g % 8] END,
       (ARRAY['form','email','chat','call'])[1 + g % 4], 'web-bench',
       p.id, (SELECT s.id FROM stages s WHERE s.pipeline_id = p.id ORDER BY s.sort_order
              OFFSET g % 7 LIMIT 1),
       now() - (g % 365) * interval '1 day' + (g % 86400) * interval '1 second',
       now() - (g % 365) * interval '1 day',
       now() - (g % 97) * interval '1 hour',
       CASE WHEN g % 4 = 0 THEN NULL ELSE 1 + g % 20 END,
       CASE WHEN g % 50 = 0 THEN ARRAY['vip'] ELSE '{}' END,
       g % 10 = 0
FROM generate_series(1, $LEADS) g, names n, pipelines p WHERE p.code = 'default';
CREATE INDEX leads_search ON leads USING gin (search_text gin_trgm_ops);
VACUUM ANALYZE leads;
SQL
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v n="$LEADS" 'BEGIN {printf "generated %d leads and indexed them in %.0f s\n", n, b - a}'
fi

"$BIN" serve --config "$config" >>"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "$base/readyz" >/dev/null && break
  sleep 0.2
done

# Prints the median and slowest of RUNS requests and what the answer held.
measure() {
  local label=$1 path=$2 times=() body
  for _ in $(seq 1 "$RUNS"); do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $token" "$base$path")")
  done
  body=$(curl -s -H "Authorization: Bearer $token" "$base$path")
  printf '%s\n' "${times[@]}" | sort -n | awk -v label="$label" -v body="$body" '
    { t[NR] = $1 * 1000 }
    END {
      total = body; sub(/.*"total":/, "", total); sub(/[,}].*/, "", total)
      if (body ~ /"columns"/) total = "board"
      printf "| %-46s | %7.1f | %7.1f | %9s |\n", label, t[int((NR + 1) / 2)], t[NR], total
    }'
}

next_cursor() {
  curl -s -H "Authorization: Bearer $token" "$base$1" | sed -n 's/.*"next_cursor":"\([0-9a-f]*\)".*/\1/p'
}

echo "| request | median ms | max ms | total |"
echo "|---|---:|---:|---:|"
measure "newest 50" "/v1/leads?limit=50"
measure "newest 50, stage and responsible" "/v1/leads?limit=50&stage=working&responsible=3"
measure "sort=name, 50" "/v1/leads?sort=name&limit=50"
measure "sort=updated_at asc, 50" "/v1/leads?sort=updated_at&order=asc&limit=50"
c=$(next_cursor "/v1/leads?sort=name&limit=50&stage=open")
measure "sort=name, page 2 (cursor), stage=open" "/v1/leads?sort=name&limit=50&stage=open&cursor=$c"
measure "q=zolkiewski (common)" "/v1/leads?q=zolkiewski&limit=50"
measure "q=person12345 (rare)" "/v1/leads?q=person12345&limit=50"
measure "q=340012 (phone digits)" "/v1/leads?q=340012&limit=50"
measure "q=nguyen van duc + stage=working" "/v1/leads?q=nguyen+van+duc&stage=working&limit=50"
measure "tag=vip" "/v1/leads?tag=vip&limit=50"
measure "kanban, 20 per column" "/v1/pipelines/default/kanban?per_column=20"
measure "kanban, 20 per column, q=rossi" "/v1/pipelines/default/kanban?per_column=20&q=rossi"
