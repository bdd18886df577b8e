#!/usr/bin/env bash
# Benchmarks the reports on a generated database of N leads (default a million):
#   1. creates a scratch database (lpreports), applies the schema, and generates N leads
#      arriving evenly over the last 365 days from 8 sources and 5 channels, 50 users in 5 teams, with a
#      stage history shaped like a sales funnel (open -> attempting contact -> working ->
#      qualified, junk along the way, about 2.5 history rows per lead), all in SQL;
#   2. runs each report through the store (the daemon's own code) for 30, 90 and 365
#      days, as an admin and as a supervisor, printing the median of 3 runs, and prints
#      EXPLAIN ANALYZE of each statement over 365 days; then the activity view (planned
#      work on 70 % of the open leads) as an admin, a supervisor and an agent, and the
#      exact total of the unfiltered lead list.
# The database is dropped at the end unless KEEP=1.
# Usage: [N=1000000] [KEEP=1] bash scripts/report-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
DB=lpreports
PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qX)

"${PSQL[@]}" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
"${PSQL[@]}" -c "CREATE DATABASE $DB"
trap '[ "${KEEP:-0}" = 1 ] || "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT
for f in store/migrations/*.sql; do
  "${PSQL[@]}" -d "$DB" -1 -f "$f"
done

start=$(date +%s)
"${PSQL[@]}" -d "$DB" <<SQL
SET synchronous_commit = off;
-- The data is consistent by construction: skip the per-row foreign-key triggers.
SET session_replication_role = replica;
SELECT setseed(0.42);
INSERT INTO teams (name) SELECT 'Team ' || t FROM generate_series(1, 5) t;
INSERT INTO users (name, email, team_id)
SELECT 'User ' || u, 'user' || u || '@bench.example', 1 + u % 5 FROM generate_series(1, 50) u;

-- One plan per lead: when it was created, where from, and the dice for its path.
CREATE UNLOGGED TABLE plan AS
SELECT g AS n, gen_random_uuid() AS inquiry,
       -- Leads arrive in id order, as they do in production, a few minutes apart.
       now() - ($N - g) * (interval '365 days' / $N) - random() * interval '10 minutes' AS created,
       (ARRAY['web-en','web-it','web-pl','mail-sales','mail-info','telegram','whatsapp','phone'])
           [1 + floor(random() * 8)::int] AS source,
       (ARRAY['form','email','chat','call','import'])[1 + floor(random() * 5)::int] AS channel,
       CASE WHEN random() < 0.1 THEN NULL ELSE 1 + floor(random() * 50)::bigint END AS responsible,
       random() AS r1, random() AS r2, random() AS r3, random() AS r4
FROM generate_series(1, $N) g;

CREATE TEMP TABLE st AS
SELECT s.code, s.id FROM stages s JOIN pipelines p ON p.id = s.pipeline_id WHERE p.code = 'default';

-- The path: 10 % junk at once; 65 % attempt contact, of those 30 % junk, 50 % work
-- (half of them qualify); the rest stay where they are.
CREATE UNLOGGED TABLE moves AS
SELECT n, 'open'::text AS code, created AS at FROM plan
UNION ALL
SELECT n, 'junk', created + r2 * interval '48 hours' FROM plan WHERE r1 < 0.1
UNION ALL
SELECT n, 'attempting_contact', created + r2 * interval '24 hours' FROM plan
WHERE r1 >= 0.1 AND r1 < 0.75
UNION ALL
SELECT n, 'junk', created + r2 * interval '24 hours' + r3 * interval '72 hours' FROM plan
WHERE r1 >= 0.1 AND r1 < 0.75 AND r3 < 0.3
UNION ALL
SELECT n, 'working', created + r2 * interval '24 hours' + r3 * interval '96 hours' FROM plan
WHERE r1 >= 0.1 AND r1 < 0.75 AND r3 >= 0.3 AND r3 < 0.8
UNION ALL
SELECT n, 'qualified',
       created + r2 * interval '24 hours' + r3 * interval '96 hours' + r4 * interval '200 hours'
FROM plan WHERE r1 >= 0.1 AND r1 < 0.75 AND r3 >= 0.3 AND r3 < 0.8 AND r4 < 0.5;

CREATE UNLOGGED TABLE last_move AS
SELECT DISTINCT ON (n) n, code, at FROM moves ORDER BY n, at DESC;

INSERT INTO inquiries (id, channel, source, received_at, disposition, payload, raw_body)
SELECT inquiry, channel, source, created, 'lead', '{}', '' FROM plan;

INSERT INTO leads (id, inquiry_id, title, name, channel, source, pipeline_id, stage_id,
                   stage_entered_at, created_at, updated_at, responsible_id, closed_at,
                   junk_reason)
SELECT p.n, p.inquiry, 'Inquiry ' || p.n, 'Person ' || p.n, p.channel, p.source,
       (SELECT id FROM pipelines WHERE code = 'default'), st.id, m.at, p.created, m.at,
       p.responsible,
       CASE WHEN m.code IN ('junk', 'qualified') THEN m.at END,
       CASE WHEN m.code = 'junk' THEN
           (ARRAY['spam','wrong number','no budget','duplicate'])[1 + floor(p.r4 * 4)::int] END
FROM plan p JOIN last_move m ON m.n = p.n JOIN st ON st.code = m.code;
SELECT setval('leads_id_seq', $N);

INSERT INTO lead_stage_history (lead_id, from_stage_id, to_stage_id, changed_at, changed_by)
SELECT m.n, lag(st.id) OVER (PARTITION BY m.n ORDER BY m.at), st.id, m.at, 'bench'
FROM moves m JOIN st ON st.code = m.code;

-- Planned work on 70 % of the open leads, due from 10 days ago to 30 days ahead.
INSERT INTO activities (lead_id, kind, subject, occurred_at, due_at, done, assignee_id,
                        created_by)
SELECT l.id, (ARRAY['call', 'meeting', 'task'])[1 + l.id % 3], 'Follow up', d.at, d.at,
       false, l.responsible_id, 'bench'
FROM leads l JOIN stages s ON s.id = l.stage_id
CROSS JOIN LATERAL (SELECT now() + ((l.id * 7919) % 4000 / 100.0 - 10) * interval '1 day'
                    AS at) d
WHERE s.semantic IN ('open', 'frozen') AND l.id % 10 < 7;

DROP TABLE plan, moves, last_move;
-- The replica role skipped the triggers that keep lead_summary; fill it in one pass.
SELECT lead_summary_rebuild();
VACUUM ANALYZE;
SQL
echo "generated $N leads in $(( $(date +%s) - start )) s:"
"${PSQL[@]}" -d "$DB" -c "SELECT (SELECT count(*) FROM leads) AS leads,
  (SELECT count(*) FROM lead_stage_history) AS history_rows,
  pg_size_pretty(pg_database_size(current_database())) AS size"

REPORT_BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" \
  cargo test -j2 -q -p store --test suite report_bench -- --ignored --nocapture
