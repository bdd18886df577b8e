//! Activities: a lead's communication history and its planned work (calls, meetings,
//! tasks with a due time and an assignee), and the activity view that groups open leads
//! by when their next planned activity is due.
//!
//! Channel history (form, email, message, call, ... written by intake and replies) has a
//! channel; planned work has none and has a due time. Only planned work can be changed
//! here. Every read and change takes the caller's [`Scope`]: an activity on a lead out
//! of scope is reported exactly like a missing one.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use crate::access::{Actor, Role, Scope};
use crate::error::StoreError;
use crate::leads::NextActivity;
use crate::store::Store;

/// The kinds of planned work.
pub const PLANNED_KINDS: [&str; 3] = ["call", "meeting", "task"];

/// What can go wrong when adding or changing planned work.
#[derive(Debug, thiserror::Error)]
pub enum ActivityError {
    /// No such lead or activity in the caller's scope.
    #[error("{0}")]
    NotFound(String),
    /// The activity is channel history, which is never edited.
    #[error(
        "activity {0} is communication history recorded from a channel; only planned calls, meetings and tasks can be changed"
    )]
    HistoryRow(i64),
    /// The activity is done; a completed activity is history.
    #[error("activity {0} is already completed; plan a new one instead")]
    Completed(i64),
    /// The caller may not assign work to this user.
    #[error("{0}")]
    AssignmentForbidden(String),
    /// The assignee does not exist or is deactivated.
    #[error("{0}")]
    BadAssignee(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ActivityError {
    fn from(error: sqlx::Error) -> Self {
        ActivityError::Store(error.into())
    }
}

/// One activity on a lead: history from a channel, or planned work.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActivityItem {
    /// Activity id.
    pub id: i64,
    /// The lead it belongs to.
    pub lead_id: i64,
    /// `call`, `meeting`, `task` for planned work; `form`, `email`, `message`, `call`,
    /// `import`, `note` for history.
    pub kind: String,
    /// The channel of communication history; `null` for planned work.
    pub channel: Option<String>,
    /// True for planned work (editable until completed), false for channel history.
    pub planned: bool,
    /// Subject line.
    pub subject: Option<String>,
    /// Text.
    pub body: Option<String>,
    /// When it happened (planned work: when it is due, then when it was completed).
    pub occurred_at: DateTime<Utc>,
    /// When planned work is due.
    pub due_at: Option<DateTime<Utc>>,
    /// Whether it is done (history is always done).
    pub done: bool,
    /// When planned work was completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Who is to do planned work.
    pub assignee_id: Option<i64>,
    /// Who planned it (`user:12`, `admin`).
    pub created_by: Option<String>,
    /// A meeting's length.
    pub duration_minutes: Option<i64>,
    /// What came of it, given when it was completed.
    pub result: Option<String>,
    /// The channel's fields for history (see the channel contract).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// One page of activities.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActivityPage {
    /// The activities.
    pub items: Vec<ActivityItem>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters for [`Store::list_lead_activities`].
#[derive(Debug, Clone, Default)]
pub struct ActivityFilter {
    /// Only planned work (`true`) or only channel history (`false`).
    pub planned: Option<bool>,
    /// Only done (`true`) or only not done (`false`).
    pub done: Option<bool>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Continue after this activity id.
    pub cursor: Option<i64>,
    /// Page size (1 to 500).
    pub limit: i64,
}

/// Filters for [`Store::list_assigned_activities`] ("my tasks").
#[derive(Debug, Clone, Default)]
pub struct AssignedFilter {
    /// The assignee.
    pub assignee_id: i64,
    /// Only work due before this instant.
    pub due_before: Option<DateTime<Utc>>,
    /// Only done (`true`) or not done (`false`).
    pub done: Option<bool>,
    /// Continue after this position (from `next_cursor`).
    pub cursor: Option<DueCursor>,
    /// Page size (1 to 500).
    pub limit: i64,
}

/// A position in a list ordered by due time then id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueCursor {
    /// Microseconds since the epoch of the last due time shown; `None` for "no due time".
    pub due_micros: Option<i64>,
    /// The last id shown.
    pub id: i64,
}

impl DueCursor {
    /// Reads a cursor written by [`DueCursor::encode`].
    pub fn parse(raw: &str) -> Option<DueCursor> {
        let (due, id) = raw.split_once('.')?;
        let id = id.parse().ok()?;
        let due_micros = if due == "none" {
            None
        } else {
            Some(due.parse().ok()?)
        };
        Some(DueCursor { due_micros, id })
    }

    /// The cursor as a string (`<micros>.<id>` or `none.<id>`).
    pub fn encode(due: Option<DateTime<Utc>>, id: i64) -> String {
        match due {
            Some(t) => format!("{}.{id}", t.timestamp_micros()),
            None => format!("none.{id}"),
        }
    }

    fn due(&self) -> Option<DateTime<Utc>> {
        self.due_micros.and_then(DateTime::from_timestamp_micros)
    }
}

/// New planned work on a lead.
#[derive(Debug, Clone)]
pub struct NewActivity {
    /// `call`, `meeting` or `task`.
    pub kind: String,
    /// What it is about.
    pub subject: String,
    /// Details.
    pub body: Option<String>,
    /// When it is due.
    pub due_at: DateTime<Utc>,
    /// Who does it; `None`: the caller, else the lead's responsible.
    pub assignee_id: Option<i64>,
    /// A meeting's length.
    pub duration_minutes: Option<i64>,
}

/// Changes to planned work; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ActivityChange {
    /// New due time.
    pub due_at: Option<DateTime<Utc>>,
    /// New assignee.
    pub assignee_id: Option<i64>,
    /// New subject.
    pub subject: Option<String>,
    /// New body (`Some(None)` clears it).
    pub body: Option<Option<String>>,
}

const COLUMNS: &str = "a.id, a.lead_id, a.kind, a.channel, a.subject, a.body, a.occurred_at,
    a.due_at, a.done, a.completed_at, a.assignee_id, a.created_by, a.data,
    (a.channel IS NULL AND a.due_at IS NOT NULL) AS planned";

fn item_from_row(row: &PgRow) -> Result<ActivityItem, sqlx::Error> {
    let data: serde_json::Value = row.try_get("data")?;
    let planned: bool = row.try_get("planned")?;
    let (duration_minutes, result) = if planned {
        (
            data.get("duration_minutes").and_then(|v| v.as_i64()),
            data.get("result")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        )
    } else {
        (None, None)
    };
    Ok(ActivityItem {
        id: row.try_get("id")?,
        lead_id: row.try_get("lead_id")?,
        kind: row.try_get("kind")?,
        channel: row.try_get("channel")?,
        planned,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        occurred_at: row.try_get("occurred_at")?,
        due_at: row.try_get("due_at")?,
        done: row.try_get("done")?,
        completed_at: row.try_get("completed_at")?,
        assignee_id: row.try_get("assignee_id")?,
        created_by: row.try_get("created_by")?,
        duration_minutes,
        result,
        data,
    })
}

fn lead_not_found(lead_id: i64) -> ActivityError {
    ActivityError::NotFound(format!("there is no lead with id `{lead_id}`"))
}

fn activity_not_found(id: i64) -> ActivityError {
    ActivityError::NotFound(format!("there is no activity with id `{id}`"))
}

impl Store {
    /// The lead's responsible user when the lead is in `scope`; `None` when it is not
    /// (or does not exist).
    async fn lead_in_scope(
        &self,
        scope: &Scope,
        lead_id: i64,
    ) -> Result<Option<Option<i64>>, StoreError> {
        let mut sql =
            QueryBuilder::<Postgres>::new("SELECT l.responsible_id FROM leads l WHERE l.id = ");
        sql.push_bind(lead_id);
        scope.push_lead_filter(&mut sql, "l");
        let row = sql.build().fetch_optional(self.pool()).await?;
        Ok(row
            .map(|r| r.try_get::<Option<i64>, _>("responsible_id"))
            .transpose()?)
    }

    /// A lead's activities, history and planned, most recently recorded first.
    pub async fn list_lead_activities(
        &self,
        scope: &Scope,
        lead_id: i64,
        filter: &ActivityFilter,
    ) -> Result<ActivityPage, ActivityError> {
        if self.lead_in_scope(scope, lead_id).await?.is_none() {
            return Err(lead_not_found(lead_id));
        }
        let limit = filter.limit.clamp(1, 500);
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {COLUMNS} FROM activities a WHERE a.lead_id = "
        ));
        sql.push_bind(lead_id);
        match filter.planned {
            Some(true) => sql.push(" AND a.channel IS NULL AND a.due_at IS NOT NULL"),
            Some(false) => sql.push(" AND NOT (a.channel IS NULL AND a.due_at IS NOT NULL)"),
            None => &mut sql,
        };
        if let Some(done) = filter.done {
            sql.push(" AND a.done = ").push_bind(done);
        }
        if let Some(kind) = &filter.kind {
            sql.push(" AND a.kind = ").push_bind(kind.clone());
        }
        if let Some(cursor) = filter.cursor {
            sql.push(" AND a.id < ").push_bind(cursor);
        }
        sql.push(" ORDER BY a.id DESC LIMIT ").push_bind(limit + 1);
        let rows = sql.build().fetch_all(self.pool()).await?;
        let mut items = rows
            .iter()
            .map(item_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|a| a.id.to_string())
        } else {
            None
        };
        Ok(ActivityPage { items, next_cursor })
    }

    /// Planned work assigned to a user, on leads in `scope`, soonest due first.
    pub async fn list_assigned_activities(
        &self,
        scope: &Scope,
        filter: &AssignedFilter,
    ) -> Result<ActivityPage, ActivityError> {
        let limit = filter.limit.clamp(1, 500);
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {COLUMNS} FROM activities a JOIN leads l ON l.id = a.lead_id
             WHERE a.channel IS NULL AND a.due_at IS NOT NULL AND a.assignee_id = "
        ));
        sql.push_bind(filter.assignee_id);
        scope.push_lead_filter(&mut sql, "l");
        if let Some(done) = filter.done {
            sql.push(" AND a.done = ").push_bind(done);
        }
        if let Some(before) = filter.due_before {
            sql.push(" AND a.due_at < ").push_bind(before);
        }
        if let Some(cursor) = filter
            .cursor
            .as_ref()
            .and_then(|c| c.due().map(|d| (d, c.id)))
        {
            sql.push(" AND (a.due_at, a.id) > (")
                .push_bind(cursor.0)
                .push(", ")
                .push_bind(cursor.1)
                .push(")");
        }
        sql.push(" ORDER BY a.due_at, a.id LIMIT ")
            .push_bind(limit + 1);
        let rows = sql.build().fetch_all(self.pool()).await?;
        let mut items = rows
            .iter()
            .map(item_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|a| DueCursor::encode(a.due_at, a.id))
        } else {
            None
        };
        Ok(ActivityPage { items, next_cursor })
    }

    /// Checks that `actor` may give work to `assignee`: agents only to themselves,
    /// supervisors to their team, admins to anyone; the assignee must exist and be active.
    async fn check_assignee(&self, actor: &Actor, assignee: i64) -> Result<(), ActivityError> {
        let Some(facts) = self.assignee_facts(actor, assignee).await? else {
            return Err(ActivityError::BadAssignee(format!(
                "assignee_id: there is no user with id {assignee}"
            )));
        };
        let allowed = match (actor.role, actor.user_id) {
            (Role::Admin, _) | (_, None) => true,
            (_, Some(me)) if me == assignee => true,
            (Role::Supervisor, Some(_)) => facts.in_actor_team,
            (Role::Agent, Some(_)) => false,
        };
        if !allowed {
            return Err(ActivityError::AssignmentForbidden(match actor.role {
                Role::Agent => format!(
                    "assignee_id: an agent may assign work only to themselves, not to user {assignee}"
                ),
                _ => format!(
                    "assignee_id: user {assignee} is not in your team; a supervisor assigns work within their team"
                ),
            }));
        }
        if !facts.active {
            return Err(ActivityError::BadAssignee(format!(
                "assignee_id: user {assignee} is deactivated; assign the work to an active user"
            )));
        }
        Ok(())
    }

    /// Plans a call, meeting or task on a lead in the actor's scope; the lead counts as
    /// touched (its `updated_at` moves).
    pub async fn add_activity(
        &self,
        actor: &Actor,
        lead_id: i64,
        new: &NewActivity,
    ) -> Result<ActivityItem, ActivityError> {
        let Some(responsible) = self.lead_in_scope(&actor.scope(), lead_id).await? else {
            return Err(lead_not_found(lead_id));
        };
        let assignee = new.assignee_id.or(actor.user_id).or(responsible);
        // An explicit choice is checked; the defaults (the actor, the lead's own
        // responsible) are always allowed, but a deactivated one is still refused.
        if let Some(assignee) = assignee {
            let check = if new.assignee_id.is_some() {
                *actor
            } else {
                Actor {
                    role: Role::Admin,
                    ..*actor
                }
            };
            self.check_assignee(&check, assignee).await?;
        }
        let mut data = serde_json::Map::new();
        if let Some(minutes) = new.duration_minutes {
            data.insert("duration_minutes".into(), minutes.into());
        }
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(&format!(
            "WITH a AS (
                INSERT INTO activities (lead_id, kind, subject, body, occurred_at, due_at, done,
                                        data, assignee_id, created_by)
                VALUES ($1, $2, $3, $4, $5, $5, false, $6, $7, $8)
                RETURNING *)
             SELECT {COLUMNS} FROM a"
        ))
        .bind(lead_id)
        .bind(&new.kind)
        .bind(&new.subject)
        .bind(&new.body)
        .bind(new.due_at)
        .bind(serde_json::Value::Object(data))
        .bind(assignee)
        .bind(actor.name())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE leads SET updated_at = now() WHERE id = $1")
            .bind(lead_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(item_from_row(&row)?)
    }

    /// The activity with this id when its lead is in `scope`, locked for change.
    async fn planned_for_change(
        &self,
        tx: &mut sqlx::PgConnection,
        scope: &Scope,
        id: i64,
    ) -> Result<ActivityItem, ActivityError> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {COLUMNS} FROM activities a JOIN leads l ON l.id = a.lead_id WHERE a.id = "
        ));
        sql.push_bind(id);
        scope.push_lead_filter(&mut sql, "l");
        sql.push(" FOR UPDATE OF a");
        let row = sql
            .build()
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| activity_not_found(id))?;
        let item = item_from_row(&row)?;
        if !item.planned {
            return Err(ActivityError::HistoryRow(id));
        }
        Ok(item)
    }

    /// Reschedules, reassigns or rewords planned work that is not done yet.
    pub async fn update_activity(
        &self,
        actor: &Actor,
        id: i64,
        change: &ActivityChange,
    ) -> Result<ActivityItem, ActivityError> {
        let mut tx = self.pool().begin().await?;
        let current = self.planned_for_change(&mut tx, &actor.scope(), id).await?;
        if current.done {
            return Err(ActivityError::Completed(id));
        }
        if let Some(assignee) = change.assignee_id
            && current.assignee_id != Some(assignee)
        {
            self.check_assignee(actor, assignee).await?;
        }
        let row = sqlx::query(&format!(
            "WITH a AS (
                UPDATE activities SET
                    due_at = coalesce($2, due_at),
                    occurred_at = coalesce($2, occurred_at),
                    assignee_id = coalesce($3, assignee_id),
                    subject = coalesce($4, subject),
                    body = CASE WHEN $5 THEN $6 ELSE body END
                WHERE id = $1
                RETURNING *)
             SELECT {COLUMNS} FROM a"
        ))
        .bind(id)
        .bind(change.due_at)
        .bind(change.assignee_id)
        .bind(&change.subject)
        .bind(change.body.is_some())
        .bind(change.body.clone().flatten())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(item_from_row(&row)?)
    }

    /// Marks planned work done (with an optional result); completing it again changes
    /// nothing and answers the same. The lead counts as touched.
    pub async fn complete_activity(
        &self,
        actor: &Actor,
        id: i64,
        result: Option<&str>,
    ) -> Result<ActivityItem, ActivityError> {
        let mut tx = self.pool().begin().await?;
        let current = self.planned_for_change(&mut tx, &actor.scope(), id).await?;
        if current.done {
            return Ok(current);
        }
        let row = sqlx::query(&format!(
            "WITH a AS (
                UPDATE activities SET
                    done = true, completed_at = now(), occurred_at = now(),
                    data = CASE WHEN $2::text IS NULL THEN data
                                ELSE data || jsonb_build_object('result', $2::text) END
                WHERE id = $1
                RETURNING *)
             SELECT {COLUMNS} FROM a"
        ))
        .bind(id)
        .bind(result)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE leads SET updated_at = now() WHERE id = $1")
            .bind(current.lead_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(item_from_row(&row)?)
    }

    /// A user's time zone (`UTC` when the user is unknown or has none).
    pub async fn user_time_zone(&self, user_id: Option<i64>) -> Result<String, StoreError> {
        let Some(user_id) = user_id else {
            return Ok("UTC".to_owned());
        };
        let zone: Option<String> = sqlx::query_scalar("SELECT time_zone FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(zone.unwrap_or_else(|| "UTC".to_owned()))
    }

    /// True when PostgreSQL knows `zone` as a time zone name (`Europe/Warsaw`).
    pub async fn is_time_zone(&self, zone: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
                .bind(zone)
                .fetch_one(self.pool())
                .await?,
        )
    }
}

/// The groups of the activity view, in the order they are shown.
pub const VIEW_GROUPS: [&str; 6] = [
    "overdue",
    "today",
    "this_week",
    "next_week",
    "later",
    "none",
];

/// Filters and paging for [`Store::activity_view`].
#[derive(Debug, Clone, Default)]
pub struct ViewQuery {
    /// The IANA time zone whose days and weeks (starting on Monday) bound the groups.
    pub time_zone: String,
    /// Only leads with this responsible user.
    pub responsible_id: Option<i64>,
    /// Only leads in this pipeline (code).
    pub pipeline: Option<String>,
    /// Only this group (for paging through one group).
    pub group: Option<String>,
    /// Continue this group after this position (needs `group`).
    pub cursor: Option<DueCursor>,
    /// Leads per group (1 to 500).
    pub limit: i64,
}

/// A lead in the activity view.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ViewLead {
    /// Lead id.
    pub id: i64,
    /// Short title.
    pub title: String,
    /// Person's name.
    pub name: Option<String>,
    /// Current stage code.
    pub stage: String,
    /// Who works the lead.
    pub responsible_id: Option<i64>,
    /// The earliest planned activity not done yet; `null` in the `none` group.
    pub next_activity: Option<NextActivity>,
}

/// One group of the activity view.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ViewGroup {
    /// `overdue`, `today`, `this_week`, `next_week`, `later` or `none`.
    pub group: String,
    /// How many leads the group holds in all.
    pub count: i64,
    /// The first leads, soonest due first (the `none` group by lead id).
    pub items: Vec<ViewLead>,
    /// Pass with `group` as `cursor` for the group's next page; `null` on its last page.
    pub next_cursor: Option<String>,
}

/// Open leads grouped by when their next activity is due.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActivityView {
    /// The time zone whose days bound the groups.
    pub time_zone: String,
    /// The instant the groups were computed at; due before it is overdue.
    pub now: DateTime<Utc>,
    /// Start of tomorrow in the time zone (the end of `today`).
    pub tomorrow_starts_at: DateTime<Utc>,
    /// Start of next week (Monday 00:00) in the time zone (the end of `this_week`).
    pub next_week_starts_at: DateTime<Utc>,
    /// Start of the week after next (the end of `next_week`).
    pub later_starts_at: DateTime<Utc>,
    /// The groups, in order.
    pub groups: Vec<ViewGroup>,
}

impl Store {
    /// Open leads (stage semantic `open` or `frozen`) in `scope`, grouped by their
    /// earliest not-done planned activity: overdue, today, this week, next week, later,
    /// none; days and weeks (Monday first) are those of `query.time_zone`. One statement.
    pub async fn activity_view(
        &self,
        scope: &Scope,
        query: &ViewQuery,
    ) -> Result<ActivityView, StoreError> {
        let limit = query.limit.clamp(1, 500);
        let mut sql = QueryBuilder::<Postgres>::new("WITH b AS (SELECT now() AS now_, ");
        // Local midnights: the local wall time truncated, read back in the same zone.
        for (i, (name, offset)) in [("day", "1 day"), ("week", "7 days"), ("week", "14 days")]
            .iter()
            .enumerate()
        {
            if i > 0 {
                sql.push(", ");
            }
            sql.push(format!("(date_trunc('{name}', now() AT TIME ZONE "))
                .push_bind(query.time_zone.clone())
                .push(format!(") + interval '{offset}') AT TIME ZONE "))
                .push_bind(query.time_zone.clone())
                .push(format!(" AS b{i}"));
        }
        // Counts come from an index-only scan of the summaries of leads in open stages;
        // each group's page is a range of the (next_due, lead_id) index read in order, so
        // neither walks the activities of every open lead.
        sql.push(
            "), counted AS (
                SELECT CASE WHEN l.next_due IS NULL THEN 'none'
                            WHEN l.next_due < b.now_ THEN 'overdue'
                            WHEN l.next_due < b.b0 THEN 'today'
                            WHEN l.next_due < b.b1 THEN 'this_week'
                            WHEN l.next_due < b.b2 THEN 'next_week'
                            ELSE 'later' END AS grp,
                       count(*) AS total
                FROM lead_summary l CROSS JOIN b
                WHERE l.stage_id = ANY (ARRAY(SELECT id FROM stages WHERE semantic IN ('open', 'frozen')))",
        );
        push_view_filters(&mut sql, scope, query);
        sql.push(
            " GROUP BY 1),
             ranges AS (
                SELECT r.grp, r.lo, r.hi FROM b CROSS JOIN LATERAL (VALUES
                    ('overdue', '-infinity'::timestamptz, b.now_), ('today', b.now_, b.b0),
                    ('this_week', b.b0, b.b1), ('next_week', b.b1, b.b2),
                    ('later', b.b2, 'infinity'::timestamptz)) AS r(grp, lo, hi)
                WHERE true",
        );
        if let Some(group) = &query.group {
            sql.push(" AND r.grp = ").push_bind(group.clone());
        }
        sql.push(
            "), paged AS (
                SELECT r.grp, x.id, x.due_at FROM ranges r CROSS JOIN LATERAL (
                    SELECT l.lead_id AS id, l.next_due AS due_at FROM lead_summary l
                    WHERE l.next_due >= r.lo AND l.next_due < r.hi
                      AND l.stage_id = ANY (ARRAY(SELECT id FROM stages WHERE semantic IN ('open', 'frozen')))",
        );
        push_view_filters(&mut sql, scope, query);
        match query.cursor {
            Some(cursor) => match cursor.due() {
                Some(due) => sql
                    .push(" AND (l.next_due, l.lead_id) > (")
                    .push_bind(due)
                    .push(", ")
                    .push_bind(cursor.id)
                    .push(")"),
                None => sql.push(" AND l.lead_id > ").push_bind(cursor.id),
            },
            None => &mut sql,
        };
        sql.push(" ORDER BY l.next_due, l.lead_id LIMIT ")
            .push_bind(limit + 1)
            .push(
                ") x
                 UNION ALL
                 SELECT 'none', x.id, x.due_at FROM (
                    SELECT l.lead_id AS id, l.next_due AS due_at FROM lead_summary l
                    WHERE l.next_due IS NULL AND l.stage_id = ANY (ARRAY(SELECT id FROM stages WHERE semantic IN ('open', 'frozen')))",
            );
        push_view_filters(&mut sql, scope, query);
        // A cursor with a due time is past every lead without one.
        if query.group.as_deref().is_some_and(|g| g != "none")
            || query.cursor.is_some_and(|c| c.due().is_some())
        {
            sql.push(" AND false");
        }
        if let Some(cursor) = query.cursor {
            sql.push(" AND l.lead_id > ").push_bind(cursor.id);
        }
        // Ordered by the (NULL) due time too, so the index's order serves it.
        sql.push(" ORDER BY l.next_due, l.lead_id LIMIT ")
            .push_bind(limit + 1)
            .push(
                ") x) SELECT b.now_, b.b0, b.b1, b.b2, g.grp, g.total, p.id, ld.title, ld.name,
                          s.code AS stage, ld.responsible_id, n.id AS act_id, n.kind, n.subject,
                          p.due_at, n.assignee_id
                   FROM b
                   LEFT JOIN counted g ON true
                   LEFT JOIN paged p ON p.grp = g.grp
                   LEFT JOIN leads ld ON ld.id = p.id
                   LEFT JOIN stages s ON s.id = ld.stage_id
                   LEFT JOIN LATERAL (
                       SELECT a.id, a.kind, a.subject, a.assignee_id
                       FROM activities a
                       WHERE a.lead_id = p.id AND NOT a.done AND a.due_at IS NOT NULL
                       ORDER BY a.due_at, a.id LIMIT 1) n ON true
                   ORDER BY g.grp, p.due_at, p.id",
            );
        let rows = sql.build().fetch_all(self.pool()).await?;
        let first = rows
            .first()
            .ok_or_else(|| StoreError::Unavailable("the activity view returned no row".into()))?;
        let mut view = ActivityView {
            time_zone: query.time_zone.clone(),
            now: first.try_get("now_")?,
            tomorrow_starts_at: first.try_get("b0")?,
            next_week_starts_at: first.try_get("b1")?,
            later_starts_at: first.try_get("b2")?,
            groups: VIEW_GROUPS
                .iter()
                .filter(|g| query.group.as_deref().is_none_or(|only| only == **g))
                .map(|g| ViewGroup {
                    group: (*g).to_owned(),
                    count: 0,
                    items: Vec::new(),
                    next_cursor: None,
                })
                .collect(),
        };
        for row in &rows {
            let Some(grp) = row.try_get::<Option<String>, _>("grp")? else {
                continue;
            };
            let Some(group) = view.groups.iter_mut().find(|g| g.group == grp) else {
                continue;
            };
            group.count = row.try_get("total")?;
            let Some(id) = row.try_get::<Option<i64>, _>("id")? else {
                continue;
            };
            let due_at: Option<DateTime<Utc>> = row.try_get("due_at")?;
            let next_activity = match (row.try_get::<Option<i64>, _>("act_id")?, due_at) {
                (Some(act_id), Some(due_at)) => Some(NextActivity {
                    id: act_id,
                    kind: row.try_get("kind")?,
                    subject: row.try_get("subject")?,
                    due_at,
                    assignee_id: row.try_get("assignee_id")?,
                }),
                _ => None,
            };
            group.items.push(ViewLead {
                id,
                title: row.try_get("title")?,
                name: row.try_get("name")?,
                stage: row.try_get("stage")?,
                responsible_id: row.try_get("responsible_id")?,
                next_activity,
            });
        }
        for group in &mut view.groups {
            if group.items.len() as i64 > limit {
                group.items.truncate(limit as usize);
                group.next_cursor = group
                    .items
                    .last()
                    .map(|l| DueCursor::encode(l.next_activity.as_ref().map(|a| a.due_at), l.id));
            }
        }
        Ok(view)
    }
}

/// The caller's scope and the view's own filters, on the summary row `l`.
fn push_view_filters(sql: &mut QueryBuilder<'_, Postgres>, scope: &Scope, query: &ViewQuery) {
    scope.push_lead_filter(sql, "l");
    if let Some(responsible) = query.responsible_id {
        sql.push(" AND l.responsible_id = ").push_bind(responsible);
    }
    if let Some(pipeline) = &query.pipeline {
        sql.push(" AND l.pipeline_id = (SELECT p.id FROM pipelines p WHERE p.code = ")
            .push_bind(pipeline.clone())
            .push(")");
    }
}
