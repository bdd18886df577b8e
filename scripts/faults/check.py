#!/usr/bin/env python3
"""Compares what the load generator was told with what the database holds.

Reads one or more `loadgen --record` files (email<TAB>part<TAB>status per post), waits
until the stored inquiries stop changing, and prints one line:

  accepted=A refused=R stored=S lost=L duplicated=D order_violations=O filed_late=F

accepted: posts answered 2xx; refused: any other answer or none (the client was told);
stored: accepted posts filed exactly once; lost: accepted posts never filed; duplicated:
posts filed more than once (more than one inquiry, lead or activity for one post);
order_violations: with several posts per person, people whose lead does not read in the
order they posted (its first inquiry is not their earliest filed post, or its timeline
lists their posts out of order); filed_late: people whose posts reached the database out
of that order, which the store corrects (informational). Exits 1 when lost, duplicated or
order_violations is not zero, 2 when the database cannot be read, 3 when accepted posts
are missing but the broker or a spool still holds messages at the timeout (undrained,
not proven lost).

A post is found in the database by its raw body: the unique address lg<run>-<i>@
example.com (URL-encoded) and, for several posts per person, "(part N of K)".

Usage: check.py --psql 'psql -h 127.0.0.1 -p 5442 -U postgres -d lpfaults' \
           [--settle 10] [--timeout 180] [--backlog-cmd CMD] RECORD...
"""

import argparse
import collections
import shlex
import subprocess
import sys
import time

# One row per stored inquiry of a load generator run: email, part, disposition, the number
# of leads whose own inquiry it is, and the number of activities recording it.
QUERY = r"""
WITH i AS (
    SELECT id, disposition, convert_from(raw_body, 'UTF8') AS body
    FROM inquiries
    WHERE raw_body LIKE '%lg%40example.com%'::bytea
),
l AS (SELECT inquiry_id, count(*) AS n FROM leads GROUP BY inquiry_id),
a AS (
    SELECT inquiry_id, count(*) AS n, min(id) AS first,
           min(extract(epoch FROM occurred_at)) AS at
    FROM activities WHERE inquiry_id IS NOT NULL GROUP BY inquiry_id
)
SELECT replace(substring(i.body FROM 'lg[0-9a-f]+-[0-9]+%40example\.com'), '%40', '@'),
       coalesce(substring(i.body FROM '%28part\+([0-9]+)\+of'), '1'),
       i.disposition,
       coalesce(l.n, 0),
       coalesce(a.n, 0),
       coalesce(a.first, 0),
       coalesce(a.at, 0)
FROM i
LEFT JOIN l ON l.inquiry_id = i.id
LEFT JOIN a ON a.inquiry_id = i.id
"""


def read_records(paths):
    """{(email, part): status} and the order in which each person's posts were accepted."""
    answers = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 3:
                    continue
                email, part, status = fields
                answers[(email, int(part))] = status
    return answers


def stored_rows(psql):
    out = subprocess.run(
        shlex.split(psql) + ["-qAtF", "\t", "-v", "ON_ERROR_STOP=1", "-c", QUERY],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    rows = []
    for line in out.stdout.splitlines():
        email, part, disposition, leads, activities, first_activity, at = line.split("\t")
        rows.append((email, int(part), disposition, int(leads), int(activities),
                     int(first_activity), float(at)))
    return rows


def backlog(cmd):
    if not cmd:
        return 0
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False)
    try:
        return int(out.stdout.strip() or "0")
    except ValueError:
        return 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", nargs="+")
    parser.add_argument("--psql", required=True, help="psql command line for the database")
    parser.add_argument("--settle", type=float, default=10, help="seconds without change that mean drained")
    parser.add_argument("--timeout", type=float, default=180, help="longest wait for the drain, seconds")
    parser.add_argument("--backlog-cmd", help="prints messages still queued; drained only at 0")
    args = parser.parse_args()

    answers = read_records(args.records)
    accepted = {key for key, status in answers.items() if status.startswith("2")}
    refused = len(answers) - len(accepted)

    # Drained: every accepted post stored (or nothing changed for `settle` seconds) and
    # the broker holds nothing more; then one more settle period, so late duplicates show.
    deadline = time.monotonic() + args.timeout
    last, since = None, time.monotonic()
    pending = 0
    while True:
        try:
            rows = stored_rows(args.psql)
        except RuntimeError as error:
            if time.monotonic() > deadline:
                print(f"cannot read the database: {error}", file=sys.stderr)
                sys.exit(2)
            time.sleep(1)
            continue
        snapshot = len(rows)
        now = time.monotonic()
        if snapshot != last:
            last, since = snapshot, now
        quiet = now - since >= args.settle
        pending = backlog(args.backlog_cmd) if quiet or now > deadline else pending
        if (quiet and pending == 0) or now > deadline:
            break
        time.sleep(1)

    per_post = collections.defaultdict(list)
    for row in rows:
        per_post[(row[0], row[1])].append(row)
    # Posts of this run only: the records name them (other runs share the database).
    ours = {key: rows for key, rows in per_post.items() if key in answers}
    def doubled(found):
        return len(found) > 1 or sum(r[3] for r in found) > 1 or sum(r[4] for r in found) > 1

    duplicated = sum(1 for found in ours.values() if doubled(found))
    lost = sorted(key for key in accepted if key not in ours)
    stored = sum(1 for key in accepted if key in ours and not doubled(ours[key]))
    # Refused posts may still have been filed (the answer was lost, not the post): fine,
    # but counted, since a client that retries would file them twice.
    refused_but_stored = sum(1 for key in answers if key not in accepted and key in ours)

    # Order, as the lead shows it: the lead's own inquiry (its first) is the earliest
    # post of the person that was filed, and the timeline (activities by the time intake
    # accepted each post) lists the accepted posts in the order they were sent.
    violations = []
    people = collections.defaultdict(list)
    for key in accepted:
        if key in ours and ours[key][0][5] > 0:
            people[key[0]].append(key[1])
    stored_parts = collections.defaultdict(list)
    for email, part in ours:
        stored_parts[email].append(part)
    for email, parts in people.items():
        filed = sorted(stored_parts[email])
        firsts = [part for part in filed if ours[(email, part)][0][3] > 0]
        timeline = [part for _, part in sorted((ours[(email, p)][0][6], p) for p in parts)]
        if firsts != filed[:1] or timeline != sorted(parts):
            violations.append((email, firsts, timeline))
    # Informational: people whose posts reached the database out of the order they were
    # sent (several daemons, one of them spooling or killed with posts in its spool);
    # the store puts such a post in its place, which the check above holds it to.
    filed_late = 0
    for email, parts in people.items():
        by_filing = [part for _, part in sorted((ours[(email, p)][0][5], p) for p in parts)]
        if by_filing != sorted(parts):
            filed_late += 1

    print(
        f"accepted={len(accepted)} refused={refused} stored={stored} lost={len(lost)} "
        f"duplicated={duplicated} order_violations={len(violations)} "
        f"filed_late={filed_late} "
        f"refused_but_stored={refused_but_stored}"
        + (f" still_queued={pending}" if pending else "")
    )
    for key in lost[:10]:
        print(f"  lost: {key[0]} part {key[1]}", file=sys.stderr)
    for email, firsts, timeline in violations[:10]:
        print(f"  out of order: {email} lead's first part {firsts}, timeline {timeline}",
              file=sys.stderr)
    if duplicated or violations:
        sys.exit(1)
    if lost:
        # Not drained in time: the posts may still be on their way, not lost.
        sys.exit(3 if pending else 1)
    sys.exit(0)


if __name__ == "__main__":
    main()
