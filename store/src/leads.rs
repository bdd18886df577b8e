//! Reading leads for the ops API.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::access::Scope;
use crate::error::StoreError;
use crate::store::Store;

/// Filters and paging for [`Store::list_leads`]; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct LeadQuery {
    /// Stage code.
    pub stage: Option<String>,
    /// Channel name (`form`, `email`, ...).
    pub channel: Option<String>,
    /// Lead source.
    pub source: Option<String>,
    /// Normalised email address.
    pub email: Option<String>,
    /// E.164 phone number.
    pub phone: Option<String>,
    /// A person key the lead holds (`email:...`, `phone:...`, `messenger:...`), as stored.
    pub key: Option<String>,
    /// Only leads created at or after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only leads created before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Continue after this lead id (from a previous page's `next_cursor`).
    pub cursor: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// A stage as shown on a lead.
#[derive(Debug, Clone, Serialize)]
pub struct StageRef {
    /// Stage code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// `open`, `frozen`, `success`, `failure` or `abandoned`.
    pub semantic: String,
    /// Display colour.
    pub color: String,
}

/// A lead as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LeadView {
    /// Lead id.
    pub id: i64,
    /// Short title for lists.
    pub title: String,
    /// Person's name.
    pub name: Option<String>,
    /// Normalised email.
    pub email: Option<String>,
    /// E.164 phone.
    pub phone: Option<String>,
    /// Phone extension.
    pub phone_extension: Option<String>,
    /// Company name.
    pub company: Option<String>,
    /// The inquiry's text.
    pub message: Option<String>,
    /// Channel it came through.
    pub channel: String,
    /// Source (form, mailbox, bot, line).
    pub source: String,
    /// Pipeline code.
    pub pipeline: String,
    /// Current stage.
    pub stage: StageRef,
    /// Campaign tags.
    pub utm: serde_json::Value,
    /// Custom fields.
    pub fields: serde_json::Value,
    /// Values that were sent but could not be used.
    pub problems: serde_json::Value,
    /// The inquiry that created the lead.
    pub inquiry_id: Uuid,
    /// Inquiries filed on this lead (the first plus merged ones).
    pub inquiry_count: i32,
    /// True when the person or company was already a client.
    pub is_repeat: bool,
    /// The client this lead belongs to, when known.
    pub client: ClientRef,
    /// The person's previous, closed lead.
    pub previous_lead_id: Option<i64>,
    /// The person keys that find the lead (`email:<addr>`, `phone:<e164>`,
    /// `messenger:<platform>:<id>`), sorted.
    pub keys: Vec<String>,
    /// Labels (`missed_call`), sorted.
    pub tags: Vec<String>,
    /// How the lead was matched: `{rule, key, target}`.
    #[serde(rename = "match")]
    pub matched: serde_json::Value,
    /// When the lead was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// When it entered its current stage.
    pub stage_entered_at: DateTime<Utc>,
}

/// The client a lead is linked to.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRef {
    /// Linked contact.
    pub contact_id: Option<i64>,
    /// Linked company.
    pub company_id: Option<i64>,
}

/// Something that happened to a lead besides stage changes (a merged inquiry, ...).
#[derive(Debug, Clone, Serialize)]
pub struct LeadEvent {
    /// `merged`, ...
    pub kind: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The inquiry involved, if any.
    pub inquiry_id: Option<Uuid>,
    /// Details (for a merge: the match and its reason).
    pub data: serde_json::Value,
}

/// One page of leads, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct LeadPage {
    /// The leads.
    pub items: Vec<LeadView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One stage change.
#[derive(Debug, Clone, Serialize)]
pub struct StageChange {
    /// Previous stage code (`null` for the entry into the first stage).
    pub from: Option<String>,
    /// New stage code.
    pub to: String,
    /// When.
    pub changed_at: DateTime<Utc>,
    /// Who (a user, or `leadpipe`).
    pub changed_by: String,
    /// Why.
    pub reason: Option<String>,
}

/// One activity on a lead.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    /// Activity id.
    pub id: i64,
    /// `form`, `email`, `message`, `call`, `import`, `note`.
    pub kind: String,
    /// Channel, for communication.
    pub channel: Option<String>,
    /// The inquiry it records, if any.
    pub inquiry_id: Option<Uuid>,
    /// Subject line.
    pub subject: Option<String>,
    /// Text.
    pub body: Option<String>,
    /// When it happened (or is due).
    pub occurred_at: DateTime<Utc>,
    /// The channel's fields (attachments, message and call details; see the channel
    /// contract), plus `merged`: why the inquiry joined the lead, when it did.
    pub data: serde_json::Value,
}

/// A lead with its stage history and activities.
#[derive(Debug, Clone, Serialize)]
pub struct LeadDetail {
    /// The lead.
    #[serde(flatten)]
    pub lead: LeadView,
    /// Every stage change, oldest first.
    pub stage_history: Vec<StageChange>,
    /// Activities, oldest first.
    pub activities: Vec<Activity>,
    /// Other events (merges), oldest first.
    pub events: Vec<LeadEvent>,
}

const LEAD_COLUMNS: &str =
    "SELECT l.id, l.title, l.name, l.email, l.phone, l.phone_extension, l.company,
        l.message, l.channel, l.source, p.code AS pipeline, s.code AS stage_code,
        s.name AS stage_name, s.semantic AS stage_semantic, s.color AS stage_color, l.utm,
        l.fields, l.problems, l.inquiry_id, l.created_at, l.updated_at, l.stage_entered_at,
        l.inquiry_count, l.is_repeat, l.contact_id, l.company_id, l.previous_lead_id, l.match,
        l.tags,
        ARRAY(SELECT li.key FROM lead_identities li WHERE li.lead_id = l.id ORDER BY li.key)
            AS keys
     FROM leads l JOIN stages s ON s.id = l.stage_id JOIN pipelines p ON p.id = l.pipeline_id";

fn lead_from_row(row: &PgRow) -> Result<LeadView, sqlx::Error> {
    Ok(LeadView {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
        phone_extension: row.try_get("phone_extension")?,
        company: row.try_get("company")?,
        message: row.try_get("message")?,
        channel: row.try_get("channel")?,
        source: row.try_get("source")?,
        pipeline: row.try_get("pipeline")?,
        stage: StageRef {
            code: row.try_get("stage_code")?,
            name: row.try_get("stage_name")?,
            semantic: row.try_get("stage_semantic")?,
            color: row.try_get("stage_color")?,
        },
        utm: row.try_get("utm")?,
        fields: row.try_get("fields")?,
        problems: row.try_get("problems")?,
        inquiry_id: row.try_get("inquiry_id")?,
        inquiry_count: row.try_get("inquiry_count")?,
        is_repeat: row.try_get("is_repeat")?,
        client: ClientRef {
            contact_id: row.try_get("contact_id")?,
            company_id: row.try_get("company_id")?,
        },
        previous_lead_id: row.try_get("previous_lead_id")?,
        keys: row.try_get("keys")?,
        tags: row.try_get("tags")?,
        matched: row.try_get("match")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        stage_entered_at: row.try_get("stage_entered_at")?,
    })
}

impl Store {
    /// Leads matching `query` within `scope`, newest first, one page at a time.
    pub async fn list_leads(
        &self,
        query: &LeadQuery,
        scope: &Scope,
    ) -> Result<LeadPage, StoreError> {
        let limit = query.limit.clamp(1, 500);
        let mut sql: QueryBuilder<'_, sqlx::Postgres> = QueryBuilder::new(LEAD_COLUMNS);
        sql.push(" WHERE true");
        scope.push_lead_filter(&mut sql, "l");
        if let Some(stage) = &query.stage {
            sql.push(" AND s.code = ").push_bind(stage.clone());
        }
        if let Some(channel) = &query.channel {
            sql.push(" AND l.channel = ").push_bind(channel.clone());
        }
        if let Some(source) = &query.source {
            sql.push(" AND l.source = ").push_bind(source.clone());
        }
        if let Some(email) = &query.email {
            sql.push(" AND l.email = ").push_bind(email.clone());
        }
        if let Some(phone) = &query.phone {
            sql.push(" AND l.phone = ").push_bind(phone.clone());
        }
        if let Some(key) = &query.key {
            sql.push(
                " AND EXISTS (SELECT 1 FROM lead_identities li WHERE li.lead_id = l.id AND li.key = ",
            )
            .push_bind(key.clone())
            .push(")");
        }
        if let Some(after) = query.created_after {
            sql.push(" AND l.created_at >= ").push_bind(after);
        }
        if let Some(before) = query.created_before {
            sql.push(" AND l.created_at < ").push_bind(before);
        }
        if let Some(cursor) = query.cursor {
            sql.push(" AND l.id < ").push_bind(cursor);
        }
        // One row more than asked tells whether there is a next page.
        sql.push(" ORDER BY l.id DESC LIMIT ").push_bind(limit + 1);
        let rows = sql.build().fetch_all(self.pool()).await?;
        let mut items = rows
            .iter()
            .map(lead_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|l| l.id.to_string())
        } else {
            None
        };
        Ok(LeadPage { items, next_cursor })
    }

    /// One lead with its stage history and activities; `None` when there is no such lead
    /// or it is outside `scope` (the two look the same).
    pub async fn get_lead(&self, id: i64, scope: &Scope) -> Result<Option<LeadDetail>, StoreError> {
        let mut sql: QueryBuilder<'_, sqlx::Postgres> = QueryBuilder::new(LEAD_COLUMNS);
        sql.push(" WHERE l.id = ").push_bind(id);
        scope.push_lead_filter(&mut sql, "l");
        let Some(row) = sql.build().fetch_optional(self.pool()).await? else {
            return Ok(None);
        };
        let lead = lead_from_row(&row)?;
        let stage_history = sqlx::query(
            "SELECT f.code AS from_code, t.code AS to_code, h.changed_at, h.changed_by, h.reason
             FROM lead_stage_history h
             LEFT JOIN stages f ON f.id = h.from_stage_id
             JOIN stages t ON t.id = h.to_stage_id
             WHERE h.lead_id = $1 ORDER BY h.changed_at, h.id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(StageChange {
                from: r.try_get("from_code")?,
                to: r.try_get("to_code")?,
                changed_at: r.try_get("changed_at")?,
                changed_by: r.try_get("changed_by")?,
                reason: r.try_get("reason")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let activities = sqlx::query(
            "SELECT id, kind, channel, inquiry_id, subject, body, occurred_at, data
             FROM activities WHERE lead_id = $1 ORDER BY occurred_at, id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(Activity {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                channel: r.try_get("channel")?,
                inquiry_id: r.try_get("inquiry_id")?,
                subject: r.try_get("subject")?,
                body: r.try_get("body")?,
                occurred_at: r.try_get("occurred_at")?,
                data: r.try_get("data")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let events = sqlx::query(
            "SELECT kind, at, inquiry_id, data FROM lead_events WHERE lead_id = $1 ORDER BY at, id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(LeadEvent {
                kind: r.try_get("kind")?,
                at: r.try_get("at")?,
                inquiry_id: r.try_get("inquiry_id")?,
                data: r.try_get("data")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(LeadDetail {
            lead,
            stage_history,
            activities,
            events,
        }))
    }

    /// How many inquiries have each disposition (`lead`, `duplicate`, `spam`).
    pub async fn inquiry_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT disposition, count(*) AS n FROM inquiries GROUP BY disposition ORDER BY disposition",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("disposition")?, r.try_get("n")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
