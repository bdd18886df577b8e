//! Stale leads, the morning digest and the abandon rule.
//!
//! A lead is stale when it has been in an open or frozen stage longer than the stage's
//! `deadline_days` (0 = never stale). Each active user is mailed their own stale leads once
//! a day, after `send_at` in their own time zone; a user who holds an unrevoked
//! supervisor token also gets a second section with the stale leads of the other members
//! of their team. Unassigned leads are in nobody's digest (they are the supervisors' queue
//! in the API, and listing the whole queue to every supervisor each morning would drown
//! their own section).
//!
//! Exactly once per user and local day, whichever replica decides it: the `digest_log`
//! row (primary key user and local date) and the outbox row are inserted in one
//! transaction, the log row with `ON CONFLICT DO NOTHING`, so a second replica racing for
//! the same digest waits for the first one's commit, finds the row and queues nothing.
//! A day without stale leads still writes its log row (no mail): the day is decided once.
//!
//! The abandon rule moves leads nobody touched for N days (no change to the lead, no
//! activity that occurred or was completed, no stage move) from an open-semantic stage to
//! the pipeline's abandoned stage, with a history row by `system`, under a
//! transaction-scoped advisory lock so two replicas never both write the history.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde_json::json;
use sqlx::{Postgres, QueryBuilder, Row};

use crate::access::Scope;
use crate::error::StoreError;
use crate::outbox::{Queued, clean, insert_outbox, message_id};
use crate::store::Store;

/// When digests go out: a local time of day and the zone of users who have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestSchedule {
    /// The local time after which a user's digest is due each day.
    pub send_at: NaiveTime,
    /// The IANA zone of users whose own `time_zone` is empty or unknown to PostgreSQL.
    pub default_zone: String,
}

/// Which moment a digest is computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestMoment {
    /// Now: only users whose local time passed `send_at` today and who have no digest
    /// for today's local date yet.
    Due(DateTime<Utc>),
    /// Now, every user, whether due or sent (a dry run).
    Any(DateTime<Utc>),
    /// `send_at` on this local date in each user's zone, every user (a dry run).
    On(NaiveDate),
}

/// A user a digest is (or would be) sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRecipient {
    /// The user.
    pub user_id: i64,
    /// Their name.
    pub name: String,
    /// Their address.
    pub email: String,
    /// The zone their morning is read in.
    pub time_zone: String,
    /// Their local date the digest belongs to.
    pub local_date: NaiveDate,
    /// The moment stale leads are counted at.
    pub at: DateTime<Utc>,
    /// Whether they hold an unrevoked supervisor token (and get their team's section).
    pub supervisor: bool,
    /// Whether a digest for `local_date` was decided already.
    pub already_logged: bool,
}

/// Which part of a digest a lead is listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestSection {
    /// Leads the recipient is responsible for.
    Own,
    /// Leads of the other members of a supervisor's team.
    Team,
}

/// One stale lead in one recipient's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleLead {
    /// The recipient.
    pub user_id: i64,
    /// Own or team section.
    pub section: DigestSection,
    /// The lead.
    pub lead_id: i64,
    /// Its title.
    pub title: String,
    /// The person's name, if known.
    pub person: Option<String>,
    /// The stage's name.
    pub stage: String,
    /// The responsible user's name.
    pub responsible: String,
    /// Whole days past the stage's deadline (0: less than a day).
    pub days_overdue: i32,
    /// How many stale leads the recipient's section has in all (rows beyond the limit
    /// asked for are counted, not returned).
    pub section_total: i64,
}

/// A rendered digest to queue.
#[derive(Debug, Clone)]
pub struct DigestMail {
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
    /// The sender address (its domain names the Message-ID).
    pub from: String,
}

/// The abandon rule: leads untouched `after_days` days in an open stage are moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonRule {
    /// Days without any touch.
    pub after_days: u32,
    /// The stage code moved to; `None` is each pipeline's first abandoned-semantic stage.
    pub stage_code: Option<String>,
}

/// A lead the abandon rule moves (or would move).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonCandidate {
    /// The lead.
    pub lead_id: i64,
    /// Its title.
    pub title: String,
    /// The stage it is in.
    pub from_stage: String,
    /// The stage it goes to.
    pub to_stage: String,
    /// When it was last touched.
    pub touched_at: DateTime<Utc>,
}

/// The advisory lock key of the abandon rule (one writer across replicas).
const ABANDON_LOCK: &str = "digest:abandon";

impl Store {
    /// The users a digest is due to (or, for a dry run, every active user) at `moment`,
    /// optionally only the one with `email`.
    pub async fn digest_recipients(
        &self,
        schedule: &DigestSchedule,
        moment: DigestMoment,
        email: Option<&str>,
    ) -> Result<Vec<DigestRecipient>, StoreError> {
        let (now, date, due_only) = match moment {
            DigestMoment::Due(now) => (Some(now), None, true),
            DigestMoment::Any(now) => (Some(now), None, false),
            DigestMoment::On(date) => (None, Some(date), false),
        };
        let rows = sqlx::query(
            "WITH u AS (
                 SELECT u.id, u.name, u.email,
                        CASE WHEN u.time_zone IN (SELECT name FROM pg_timezone_names)
                                 THEN u.time_zone
                             -- The setting is checked against chrono-tz's list; should
                             -- PostgreSQL not know it, UTC rather than a failed pass.
                             WHEN $2 IN (SELECT name FROM pg_timezone_names) THEN $2
                             ELSE 'UTC' END AS zone,
                        EXISTS (SELECT 1 FROM api_tokens t
                                WHERE t.user_id = u.id AND t.role = 'supervisor'
                                  AND t.revoked_at IS NULL) AS supervisor
                 FROM users u
                 WHERE u.active AND u.email <> ''
                   AND ($5::text IS NULL OR u.email = lower($5))),
             t AS (
                 SELECT u.*,
                        coalesce($1::timestamptz, ($4::date + $3::time) AT TIME ZONE u.zone) AS at
                 FROM u),
             d AS (
                 SELECT t.*, (t.at AT TIME ZONE t.zone)::date AS local_date,
                        (t.at AT TIME ZONE t.zone)::time AS local_time
                 FROM t)
             SELECT d.id, d.name, d.email, d.zone, d.at, d.local_date, d.supervisor,
                    EXISTS (SELECT 1 FROM digest_log g
                            WHERE g.user_id = d.id AND g.local_date = d.local_date) AS logged
             FROM d
             WHERE NOT $6 OR (d.local_time >= $3::time AND NOT EXISTS (
                 SELECT 1 FROM digest_log g
                 WHERE g.user_id = d.id AND g.local_date = d.local_date))
             ORDER BY d.id",
        )
        .bind(now)
        .bind(&schedule.default_zone)
        .bind(schedule.send_at)
        .bind(date)
        .bind(email)
        .bind(due_only)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| DigestRecipient {
                user_id: row.get("id"),
                name: row.get("name"),
                email: row.get("email"),
                time_zone: row.get("zone"),
                local_date: row.get("local_date"),
                at: row.get("at"),
                supervisor: row.get("supervisor"),
                already_logged: row.get("logged"),
            })
            .collect())
    }

    /// The stale leads of each recipient at their own moment, at most `per_section` of
    /// each section (most overdue first), each row carrying its section's full count, in
    /// one statement: the stale-stage scan runs once for everyone (on
    /// `leads_stage_entered` when few leads are stale) and keeps narrow rows; titles and
    /// names are read only for the rows listed. Ordered by recipient, section,
    /// most overdue first.
    pub async fn stale_leads(
        &self,
        recipients: &[DigestRecipient],
        per_section: usize,
    ) -> Result<Vec<StaleLead>, StoreError> {
        let Some(latest) = recipients.iter().map(|r| r.at).max() else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "WITH r AS (
                 SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bool[])
                        AS r(user_id, at, supervisor)),
             stale AS MATERIALIZED (
                 SELECT l.id, l.responsible_id, l.stage_entered_at, s.id AS stage_id,
                        s.deadline_days
                 FROM stages s
                 -- One range scan of leads_stage_entered per stage; OFFSET 0 keeps the
                 -- planner from flattening it into a hash join over every lead.
                 CROSS JOIN LATERAL (
                     SELECT l.id, l.responsible_id, l.stage_entered_at FROM leads l
                     WHERE l.stage_id = s.id
                       AND l.stage_entered_at < $4::timestamptz - make_interval(days => s.deadline_days)
                       AND l.closed_at IS NULL AND l.responsible_id IS NOT NULL
                     OFFSET 0) l
                 WHERE s.deadline_days > 0 AND s.semantic IN ('open', 'frozen')),
             listed AS (
                 SELECT r.user_id, 'own' AS section, r.at, st.*
                 FROM r JOIN stale st ON st.responsible_id = r.user_id
                 UNION ALL
                 SELECT r.user_id, 'team' AS section, r.at, st.*
                 FROM r
                 JOIN users me ON me.id = r.user_id AND me.team_id IS NOT NULL
                 JOIN users m ON m.team_id = me.team_id AND m.id <> me.id
                 JOIN stale st ON st.responsible_id = m.id
                 WHERE r.supervisor),
             scored AS (
                 SELECT x.*, (floor(extract(epoch FROM x.at - x.stage_entered_at) / 86400)::int
                                 - x.deadline_days) AS days_overdue
                 FROM listed x
                 WHERE x.stage_entered_at < x.at - make_interval(days => x.deadline_days)),
             ranked AS (
                 SELECT s.*,
                        row_number() OVER (PARTITION BY s.user_id, s.section
                                           ORDER BY s.days_overdue DESC, s.id) AS rank,
                        count(*) OVER (PARTITION BY s.user_id, s.section) AS total
                 FROM scored s)
             SELECT x.user_id, x.section, x.id, l.title, l.name AS person, st.name AS stage,
                    x.days_overdue, x.total, resp.name AS responsible
             FROM ranked x
             JOIN leads l ON l.id = x.id
             JOIN stages st ON st.id = x.stage_id
             JOIN users resp ON resp.id = x.responsible_id
             WHERE x.rank <= $5
             ORDER BY x.user_id, x.section, x.rank",
        )
        .bind(recipients.iter().map(|r| r.user_id).collect::<Vec<_>>())
        .bind(recipients.iter().map(|r| r.at).collect::<Vec<_>>())
        .bind(recipients.iter().map(|r| r.supervisor).collect::<Vec<_>>())
        .bind(latest)
        .bind(i64::try_from(per_section).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| StaleLead {
                user_id: row.get("user_id"),
                section: if row.get::<String, _>("section") == "own" {
                    DigestSection::Own
                } else {
                    DigestSection::Team
                },
                lead_id: row.get("id"),
                title: row.get("title"),
                person: row.get("person"),
                stage: row.get("stage"),
                responsible: row.get("responsible"),
                days_overdue: row.get("days_overdue"),
                section_total: row.get("total"),
            })
            .collect())
    }

    /// Decides `recipient`'s digest for their local date: the log row, and the mail when
    /// there is one, in one transaction. Answers false when it was decided already (by
    /// this or another replica), in which case nothing is written.
    pub async fn record_digest(
        &self,
        recipient: &DigestRecipient,
        lead_count: usize,
        mail: Option<&DigestMail>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let logged = sqlx::query(
            "INSERT INTO digest_log (user_id, local_date, lead_count) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, local_date) DO NOTHING",
        )
        .bind(recipient.user_id)
        .bind(recipient.local_date)
        .bind(i32::try_from(lead_count).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        if logged.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(mail) = mail {
            let dedup_key = format!("digest:{}:{}", recipient.user_id, recipient.local_date);
            let domain = crate::outbox::AckRules {
                from: mail.from.clone(),
                by_source: HashMap::new(),
            }
            .message_id_domain();
            let row = Queued {
                message_id: message_id("digest", &dedup_key, &domain),
                dedup_key: dedup_key.clone(),
                lead_id: None,
                inquiry_id: None,
                recipient: recipient.email.to_lowercase(),
                subject: clean(&mail.subject),
                body: mail.body.replace('\0', "\u{FFFD}"),
                headers: json!({"Auto-Submitted": "auto-generated"}),
            };
            let ids = insert_outbox(&mut tx, std::slice::from_ref(&row), None).await?;
            if let Some(id) = ids.get(&dedup_key) {
                sqlx::query(
                    "UPDATE digest_log SET outbox_id = $3 WHERE user_id = $1 AND local_date = $2",
                )
                .bind(recipient.user_id)
                .bind(recipient.local_date)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The leads in `scope` the abandon rule would move at `now`, touching nothing.
    pub async fn untouched_leads(
        &self,
        rule: &AbandonRule,
        scope: &Scope,
        now: DateTime<Utc>,
    ) -> Result<Vec<AbandonCandidate>, StoreError> {
        let mut sql = candidates(rule, scope, now);
        sql.push(" SELECT id, title, from_stage, to_stage, touched_at FROM candidate ORDER BY id");
        let rows = sql.build().fetch_all(self.pool()).await?;
        Ok(rows
            .into_iter()
            .map(|row| AbandonCandidate {
                lead_id: row.get("id"),
                title: row.get("title"),
                from_stage: row.get("from_stage"),
                to_stage: row.get("to_stage"),
                touched_at: row.get("touched_at"),
            })
            .collect())
    }

    /// Moves the leads in `scope` the abandon rule picks at `now` to their abandoned
    /// stage, each with a history row by `system`. Answers how many moved, or `None`
    /// when another replica is applying the rule right now (it moves them).
    pub async fn abandon_untouched(
        &self,
        rule: &AbandonRule,
        scope: &Scope,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(ABANDON_LOCK)
                .fetch_one(&mut *tx)
                .await?;
        if !locked {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut sql = candidates(rule, scope, now);
        sql.push(
            ", moved AS (
                 UPDATE leads l SET stage_id = c.to_stage_id, stage_entered_at = ",
        )
        .push_bind(now)
        .push(", closed_at = ")
        .push_bind(now)
        .push(", updated_at = ")
        .push_bind(now)
        // Re-checked on the row as it is when locked: a lead changed meanwhile stays.
        .push(
            " FROM candidate c
                 WHERE l.id = c.id AND l.stage_id = c.from_stage_id AND l.closed_at IS NULL
                   AND l.updated_at < ",
        )
        .push_bind(cutoff(rule, now))
        .push(
            " RETURNING l.id, c.from_stage_id, c.to_stage_id)
             INSERT INTO lead_stage_history
                 (lead_id, from_stage_id, to_stage_id, changed_at, changed_by, reason)
             SELECT id, from_stage_id, to_stage_id, ",
        )
        .push_bind(now)
        .push(", 'system', ")
        .push_bind(format!("untouched {} days", rule.after_days))
        .push(" FROM moved");
        let moved = sql.build().execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        if moved > 0 {
            metrics::counter!("leadpipe_leads_abandoned_total").increment(moved);
        }
        Ok(Some(moved))
    }
}

fn cutoff(rule: &AbandonRule, now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::days(i64::from(rule.after_days))
}

/// `WITH target AS (...), candidate AS (...)`: the leads in `scope` untouched since the
/// rule's cutoff in an open stage of a pipeline that has the target stage.
fn candidates<'a>(
    rule: &'a AbandonRule,
    scope: &Scope,
    now: DateTime<Utc>,
) -> QueryBuilder<'a, Postgres> {
    let cutoff = cutoff(rule, now);
    let mut sql: QueryBuilder<'a, Postgres> = QueryBuilder::new(
        "WITH target AS (
             SELECT DISTINCT ON (s.pipeline_id) s.pipeline_id, s.id AS stage_id, s.name
             FROM stages s JOIN pipelines p ON p.id = s.pipeline_id
             WHERE p.kind = 'lead' AND s.removed_at IS NULL AND ",
    );
    match &rule.stage_code {
        Some(code) => {
            sql.push("s.code = ").push_bind(code.as_str());
        }
        None => {
            sql.push("s.semantic = 'abandoned'");
        }
    }
    sql.push(
        " ORDER BY s.pipeline_id, s.sort_order, s.id),
         untouched AS (
             SELECT l.id, l.title, cur.id AS from_stage_id, cur.name AS from_stage,
                    t.stage_id AS to_stage_id, t.name AS to_stage,
                    greatest(l.updated_at, l.stage_entered_at,
                             (SELECT max(greatest(a.occurred_at, a.completed_at))
                              FROM activities a WHERE a.lead_id = l.id)) AS touched_at
             FROM stages cur
             JOIN leads l ON l.stage_id = cur.id AND l.stage_entered_at < ",
    )
    .push_bind(cutoff)
    .push(
        " JOIN target t ON t.pipeline_id = l.pipeline_id AND t.stage_id <> cur.id
             WHERE cur.semantic = 'open' AND l.closed_at IS NULL AND l.updated_at < ",
    )
    .push_bind(cutoff);
    scope.push_lead_filter(&mut sql, "l");
    sql.push("), candidate AS (SELECT * FROM untouched WHERE touched_at < ")
        .push_bind(cutoff)
        .push(")");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use sqlx::PgPool;

    fn schedule() -> DigestSchedule {
        DigestSchedule {
            send_at: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
            default_zone: "UTC".into(),
        }
    }

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap()
    }

    async fn user(pool: &PgPool, name: &str, team: Option<i64>, zone: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO users (name, email, team_id, time_zone) VALUES ($1, $2, $3, $4)
             RETURNING id",
        )
        .bind(name)
        .bind(format!("{}@example.com", name.to_lowercase()))
        .bind(team)
        .bind(zone)
        .fetch_one(pool)
        .await
        .unwrap()
    }

    async fn team(pool: &PgPool, name: &str) -> i64 {
        sqlx::query_scalar("INSERT INTO teams (name) VALUES ($1) RETURNING id")
            .bind(name)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    async fn supervisor_token(pool: &PgPool, user_id: i64) {
        sqlx::query(
            "INSERT INTO api_tokens (user_id, role, token_hash, prefix)
             VALUES ($1, 'supervisor', $2, 'lp_')",
        )
        .bind(user_id)
        .bind(uuid::Uuid::new_v4().as_bytes().to_vec())
        .execute(pool)
        .await
        .unwrap();
    }

    /// A lead in the default pipeline's stage `stage`, entered `entered` ago.
    async fn lead(
        pool: &PgPool,
        title: &str,
        stage: &str,
        responsible: Option<i64>,
        entered: chrono::Duration,
    ) -> i64 {
        let inquiry = uuid::Uuid::new_v4();
        sqlx::query(
            "INSERT INTO inquiries (id, channel, source, received_at, disposition, payload, raw_body)
             VALUES ($1, 'form', 'test', now(), 'lead', '{}', '')",
        )
        .bind(inquiry)
        .execute(pool)
        .await
        .unwrap();
        let at = noon() - entered;
        sqlx::query_scalar(
            "INSERT INTO leads (inquiry_id, title, name, channel, source, pipeline_id, stage_id,
                                stage_entered_at, created_at, updated_at, responsible_id)
             SELECT $1, $2, 'Anna', 'form', 'test', p.id, s.id, $4, $4, $4, $5
             FROM pipelines p JOIN stages s ON s.pipeline_id = p.id
             WHERE p.code = 'default' AND s.code = $3
             RETURNING id",
        )
        .bind(inquiry)
        .bind(title)
        .bind(stage)
        .bind(at)
        .bind(responsible)
        .fetch_one(pool)
        .await
        .unwrap()
    }

    fn days(n: i64) -> chrono::Duration {
        chrono::Duration::days(n)
    }

    async fn stale_at(store: &Store, moment: DigestMoment) -> Vec<StaleLead> {
        let recipients = store
            .digest_recipients(&schedule(), moment, None)
            .await
            .unwrap();
        store.stale_leads(&recipients, 100).await.unwrap()
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn stale_leads_count_whole_days_overdue_and_skip_deadline_zero_and_finished_stages(
        pool: PgPool,
    ) {
        let store = Store::from_pool(pool.clone());
        let anna = user(&pool, "Anna", None, "UTC").await;
        // `attempting_contact` has a 3-day deadline, `open` 1 day, `not_engaged` 0.
        let overdue = lead(
            &pool,
            "five days",
            "attempting_contact",
            Some(anna),
            days(5) + chrono::Duration::hours(1),
        )
        .await;
        let barely = lead(
            &pool,
            "just past",
            "open",
            Some(anna),
            days(1) + chrono::Duration::minutes(5),
        )
        .await;
        lead(&pool, "not yet", "attempting_contact", Some(anna), days(2)).await;
        lead(&pool, "never stale", "not_engaged", Some(anna), days(400)).await;
        lead(&pool, "won", "qualified", Some(anna), days(400)).await;
        lead(&pool, "junk", "junk", Some(anna), days(400)).await;
        lead(&pool, "nobody's", "open", None, days(30)).await;

        let stale = stale_at(&store, DigestMoment::Any(noon())).await;
        let seen: Vec<(i64, i32)> = stale.iter().map(|s| (s.lead_id, s.days_overdue)).collect();
        assert_eq!(seen, vec![(overdue, 2), (barely, 0)]);
        assert!(
            stale
                .iter()
                .all(|s| s.section == DigestSection::Own && s.user_id == anna)
        );
        assert_eq!(stale[0].stage, "Attempting contact");
        assert_eq!(stale[0].responsible, "Anna");
        assert!(stale.iter().all(|s| s.section_total == 2));

        // A limit returns the most overdue and still counts the rest.
        let recipients = store
            .digest_recipients(&schedule(), DigestMoment::Any(noon()), None)
            .await
            .unwrap();
        let first = store.stale_leads(&recipients, 1).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].lead_id, first[0].section_total), (overdue, 2));
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn a_supervisor_sees_the_stale_leads_of_their_team_in_a_section_of_its_own(pool: PgPool) {
        let store = Store::from_pool(pool.clone());
        let north = team(&pool, "North").await;
        let south = team(&pool, "South").await;
        let boss = user(&pool, "Boss", Some(north), "UTC").await;
        let agent = user(&pool, "Agent", Some(north), "UTC").await;
        let other = user(&pool, "Other", Some(south), "UTC").await;
        // A member of the team without a supervisor token gets no team section.
        let peer = user(&pool, "Peer", Some(north), "UTC").await;
        supervisor_token(&pool, boss).await;
        let boss_lead = lead(&pool, "boss's", "open", Some(boss), days(3)).await;
        let agent_lead = lead(&pool, "agent's", "open", Some(agent), days(4)).await;
        lead(&pool, "other team", "open", Some(other), days(4)).await;

        let stale = stale_at(&store, DigestMoment::Any(noon())).await;
        let of = |user: i64| -> Vec<(DigestSection, i64)> {
            stale
                .iter()
                .filter(|s| s.user_id == user)
                .map(|s| (s.section, s.lead_id))
                .collect()
        };
        assert_eq!(
            of(boss),
            vec![
                (DigestSection::Own, boss_lead),
                (DigestSection::Team, agent_lead)
            ]
        );
        assert_eq!(of(agent), vec![(DigestSection::Own, agent_lead)]);
        assert_eq!(of(peer), vec![]);
        assert_eq!(of(other).len(), 1);
        let team_row = stale
            .iter()
            .find(|s| s.section == DigestSection::Team)
            .unwrap();
        assert_eq!(team_row.responsible, "Agent");
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn a_digest_is_due_after_send_at_in_the_users_zone_and_decided_once(pool: PgPool) {
        let store = Store::from_pool(pool.clone());
        // 12:00 UTC is 21:00 in Tokyo and 08:00 in New York (EDT from 8 March 2026).
        let tokyo = user(&pool, "Kenji", None, "Asia/Tokyo").await;
        let new_york = user(&pool, "Mary", None, "America/New_York").await;
        let honolulu = user(&pool, "Leilani", None, "Pacific/Honolulu").await;
        let unknown = user(&pool, "Zed", None, "Mars/Olympus").await;
        let due = store
            .digest_recipients(&schedule(), DigestMoment::Due(noon()), None)
            .await
            .unwrap();
        let ids: Vec<i64> = due.iter().map(|r| r.user_id).collect();
        // Honolulu (02:00) is not due; an unknown zone falls back to the default (UTC).
        assert_eq!(ids, vec![tokyo, new_york, unknown]);
        assert!(!ids.contains(&honolulu));
        let kenji = &due[0];
        assert_eq!(
            kenji.local_date,
            NaiveDate::from_ymd_opt(2026, 3, 10).unwrap()
        );
        assert_eq!(due[2].time_zone, "UTC");

        let mail = DigestMail {
            subject: "Stale\r\nBcc: x@y.z".into(),
            body: "body".into(),
            from: "Sales <leads@example.com>".into(),
        };
        assert!(store.record_digest(kenji, 2, Some(&mail)).await.unwrap());
        assert!(!store.record_digest(kenji, 2, Some(&mail)).await.unwrap());
        assert!(store.record_digest(&due[1], 0, None).await.unwrap());
        let outbox: Vec<(String, String, String)> =
            sqlx::query_as("SELECT recipient, subject, message_id FROM outbox")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].0, "kenji@example.com");
        assert_eq!(outbox[0].1, "Stale Bcc: x@y.z");
        assert!(outbox[0].2.ends_with("@example.com>"), "{}", outbox[0].2);
        let logged: Vec<(i64, i32, Option<i64>)> = sqlx::query_as(
            "SELECT user_id, lead_count, outbox_id FROM digest_log ORDER BY user_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(logged.len(), 2);
        assert_eq!((logged[0].0, logged[0].1), (tokyo, 2));
        assert!(logged[0].2.is_some());
        assert_eq!(logged[1], (new_york, 0, None));

        let still_due = store
            .digest_recipients(&schedule(), DigestMoment::Due(noon()), None)
            .await
            .unwrap();
        assert_eq!(
            still_due.iter().map(|r| r.user_id).collect::<Vec<_>>(),
            vec![unknown]
        );
        // Tokyo's next local day starts at 15:00 UTC.
        let later = store
            .digest_recipients(
                &schedule(),
                DigestMoment::Due(noon() + chrono::Duration::hours(14)),
                Some("KENJI@example.com"),
            )
            .await
            .unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(
            later[0].local_date,
            NaiveDate::from_ymd_opt(2026, 3, 11).unwrap()
        );
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn the_abandon_rule_moves_only_untouched_open_leads_once_with_history(pool: PgPool) {
        let store = Store::from_pool(pool.clone());
        let rule = AbandonRule {
            after_days: 10,
            stage_code: None,
        };
        let untouched = lead(&pool, "untouched", "working", None, days(11)).await;
        let recent_activity = lead(&pool, "called", "working", None, days(11)).await;
        sqlx::query("INSERT INTO activities (lead_id, kind, occurred_at) VALUES ($1, 'call', $2)")
            .bind(recent_activity)
            .bind(noon() - days(2))
            .execute(&pool)
            .await
            .unwrap();
        lead(&pool, "young", "working", None, days(9)).await;
        lead(&pool, "frozen", "not_engaged", None, days(100)).await;
        lead(&pool, "won", "qualified", None, days(100)).await;

        let would = store
            .untouched_leads(&rule, &Scope::All, noon())
            .await
            .unwrap();
        assert_eq!(
            would.iter().map(|c| c.lead_id).collect::<Vec<_>>(),
            vec![untouched]
        );
        assert_eq!(would[0].to_stage, "Ignored");
        assert_eq!(
            store
                .abandon_untouched(&rule, &Scope::Own { user_id: 1 }, noon())
                .await
                .unwrap(),
            Some(0),
            "out of scope"
        );
        assert_eq!(
            store
                .abandon_untouched(&rule, &Scope::All, noon())
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(
            store
                .abandon_untouched(&rule, &Scope::All, noon())
                .await
                .unwrap(),
            Some(0)
        );
        let (stage, closed): (String, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT s.code, l.closed_at FROM leads l JOIN stages s ON s.id = l.stage_id
             WHERE l.id = $1",
        )
        .bind(untouched)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((stage.as_str(), closed), ("ignored", Some(noon())));
        let history: Vec<(i64, String, Option<String>)> =
            sqlx::query_as("SELECT lead_id, changed_by, reason FROM lead_stage_history")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            history,
            vec![(untouched, "system".into(), Some("untouched 10 days".into()))]
        );
    }
}
