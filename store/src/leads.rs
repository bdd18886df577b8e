//! Leads for the ops API: filtered, sorted and searched lists with keyset cursors, the
//! kanban board, editing one lead and changing many in one statement.
//!
//! Every function takes the caller's [`Scope`], so a lead outside it behaves exactly like
//! one that does not exist.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::access::{Actor, Role, Scope};
use crate::error::StoreError;
use crate::store::Store;

/// Filters, sort and paging for [`Store::list_leads`]; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct LeadQuery {
    /// Stage code.
    pub stage: Option<String>,
    /// Stage id (the kanban board's columns).
    pub stage_id: Option<i64>,
    /// Stage semantic: `open`, `frozen`, `success`, `failure` or `abandoned`.
    pub semantic: Option<String>,
    /// Pipeline code.
    pub pipeline: Option<String>,
    /// Channel name (`form`, `email`, ...).
    pub channel: Option<String>,
    /// Lead source.
    pub source: Option<String>,
    /// Normalised email address.
    pub email: Option<String>,
    /// E.164 phone number.
    pub phone: Option<String>,
    /// A person key the lead holds (`email:...`, `phone:...`, `messenger:...`); a number
    /// without `;ext=` also finds the leads that hold it with an extension.
    pub key: Option<String>,
    /// Who is responsible: a user, or nobody (the unassigned queue).
    pub responsible: Option<Responsible>,
    /// Only repeat leads (`true`) or only first ones (`false`).
    pub repeat: Option<bool>,
    /// Only leads carrying this tag.
    pub tag: Option<String>,
    /// Text search over name, email, phone digits and company, ignoring case and accents.
    pub q: Option<String>,
    /// Only leads created at or after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only leads created before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// The order of the list.
    pub sort: LeadSort,
    /// Continue after this position (from a previous page's `next_cursor`).
    pub cursor: Option<LeadCursor>,
    /// Page size.
    pub limit: i64,
}

impl LeadQuery {
    /// True when no filter narrows the leads (bulk changes demand an explicit `all`).
    pub fn matches_everything(&self) -> bool {
        self.stage.is_none()
            && self.stage_id.is_none()
            && self.semantic.is_none()
            && self.pipeline.is_none()
            && self.channel.is_none()
            && self.source.is_none()
            && self.email.is_none()
            && self.phone.is_none()
            && self.key.is_none()
            && self.responsible.is_none()
            && self.repeat.is_none()
            && self.tag.is_none()
            && self.q.is_none()
            && self.created_after.is_none()
            && self.created_before.is_none()
    }
}

/// The `responsible` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Responsible {
    /// Leads this user works.
    User(i64),
    /// Leads nobody works yet.
    Unassigned,
}

/// What a list can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortField {
    /// Lead id: the order leads were filed in.
    #[default]
    Id,
    /// Creation time.
    CreatedAt,
    /// Last change.
    UpdatedAt,
    /// Entry into the current stage.
    StageEnteredAt,
    /// Person's name (leads without one first).
    Name,
}

impl SortField {
    /// The name used in `sort=` and in cursors.
    pub fn as_str(self) -> &'static str {
        match self {
            SortField::Id => "id",
            SortField::CreatedAt => "created_at",
            SortField::UpdatedAt => "updated_at",
            SortField::StageEnteredAt => "stage_entered_at",
            SortField::Name => "name",
        }
    }

    /// The field named `name`, if it is one.
    pub fn parse(name: &str) -> Option<SortField> {
        [
            SortField::Id,
            SortField::CreatedAt,
            SortField::UpdatedAt,
            SortField::StageEnteredAt,
            SortField::Name,
        ]
        .into_iter()
        .find(|f| f.as_str() == name)
    }

    /// The SQL expression sorted on; the same expression is indexed (0014_views.sql).
    fn expr(self) -> &'static str {
        match self {
            SortField::Id => "l.id",
            SortField::CreatedAt => "l.created_at",
            SortField::UpdatedAt => "l.updated_at",
            SortField::StageEnteredAt => "l.stage_entered_at",
            SortField::Name => "coalesce(l.name, '')",
        }
    }
}

/// A sort field and its direction; the lead id breaks ties in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeadSort {
    /// What to sort by.
    pub field: SortField,
    /// Largest first.
    pub descending: bool,
}

impl Default for LeadSort {
    /// Newest lead first, as the list always was.
    fn default() -> Self {
        LeadSort {
            field: SortField::Id,
            descending: true,
        }
    }
}

/// The sort value of the last lead on a page.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    /// The id alone is the position.
    Id,
    /// A time column.
    Time(DateTime<Utc>),
    /// The name.
    Text(String),
}

/// Where a page ended: the sort it was made under, the last lead's sort value and id.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadCursor {
    /// The sort the cursor belongs to.
    pub sort: LeadSort,
    /// The last lead's sort value.
    pub value: SortValue,
    /// The last lead's id.
    pub id: i64,
}

/// A cursor that was not made by [`LeadCursor::encode`] for this sort.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCursor {
    /// Not a cursor at all.
    #[error("`{0}` is not a cursor from next_cursor")]
    Malformed(String),
    /// A cursor of another sort order.
    #[error("the cursor belongs to sort={0}; repeat the sort and order it was made with")]
    OtherSort(String),
}

impl LeadCursor {
    /// The position after `lead` under `sort`.
    pub fn after(lead: &LeadView, sort: LeadSort) -> LeadCursor {
        let value = match sort.field {
            SortField::Id => SortValue::Id,
            SortField::CreatedAt => SortValue::Time(lead.created_at),
            SortField::UpdatedAt => SortValue::Time(lead.updated_at),
            SortField::StageEnteredAt => SortValue::Time(lead.stage_entered_at),
            SortField::Name => SortValue::Text(lead.name.clone().unwrap_or_default()),
        };
        LeadCursor {
            sort,
            value,
            id: lead.id,
        }
    }

    /// An opaque, URL-safe string (hex of `field|dir|value|id`).
    pub fn encode(&self) -> String {
        let value = match &self.value {
            SortValue::Id => String::new(),
            SortValue::Time(t) => t.timestamp_micros().to_string(),
            SortValue::Text(s) => s.clone(),
        };
        let dir = if self.sort.descending { "d" } else { "a" };
        let plain = format!("{}|{dir}|{}|{value}", self.sort.field.as_str(), self.id);
        let mut out = String::with_capacity(plain.len() * 2);
        for b in plain.bytes() {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// Reads a cursor back; it must have been made under `sort`.
    pub fn decode(raw: &str, sort: LeadSort) -> Result<LeadCursor, BadCursor> {
        let malformed = || BadCursor::Malformed(raw.chars().take(80).collect());
        if !raw.len().is_multiple_of(2) || raw.len() > 4096 {
            return Err(malformed());
        }
        let bytes = (0..raw.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(raw.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(malformed)?;
        let plain = String::from_utf8(bytes).map_err(|_| malformed())?;
        let mut parts = plain.splitn(4, '|');
        let (Some(field), Some(dir), Some(id), Some(value)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let field = SortField::parse(field).ok_or_else(malformed)?;
        let descending = match dir {
            "d" => true,
            "a" => false,
            _ => return Err(malformed()),
        };
        if field != sort.field || descending != sort.descending {
            return Err(BadCursor::OtherSort(format!(
                "{}&order={}",
                field.as_str(),
                if descending { "desc" } else { "asc" }
            )));
        }
        let id: i64 = id.parse().map_err(|_| malformed())?;
        let value = match field {
            SortField::Id => SortValue::Id,
            SortField::Name => SortValue::Text(value.to_owned()),
            _ => {
                let micros: i64 = value.parse().map_err(|_| malformed())?;
                SortValue::Time(DateTime::from_timestamp_micros(micros).ok_or_else(malformed)?)
            }
        };
        Ok(LeadCursor { sort, value, id })
    }
}

/// The person responsible for a lead.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserRef {
    /// User id.
    pub id: i64,
    /// Display name.
    pub name: String,
}

/// The earliest open planned activity of a lead.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NextActivity {
    /// Activity id.
    pub id: i64,
    /// `call`, `meeting`, `task`, ...
    pub kind: String,
    /// What it is about.
    pub subject: Option<String>,
    /// When it is due.
    pub due_at: DateTime<Utc>,
    /// Who is to do it.
    pub assignee_id: Option<i64>,
}

/// A stage as shown on a lead.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    #[schema(value_type = Object)]
    pub utm: serde_json::Value,
    /// Custom fields.
    #[schema(value_type = Object)]
    pub fields: serde_json::Value,
    /// Values that were sent but could not be used.
    #[schema(value_type = Object)]
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
    /// `messenger:<platform>:<id>`; a number given with an extension both as
    /// `phone:<e164>` and as `phone:<e164>;ext=<n>`), sorted.
    pub keys: Vec<String>,
    /// Labels (`missed_call`), sorted.
    pub tags: Vec<String>,
    /// How the lead was matched: `{rule, key, target}`.
    #[serde(rename = "match")]
    #[schema(value_type = Object)]
    pub matched: serde_json::Value,
    /// When the lead was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// When it entered its current stage.
    pub stage_entered_at: DateTime<Utc>,
    /// Who works the lead; `null` while it waits in the unassigned queue.
    pub responsible: Option<UserRef>,
    /// The earliest planned activity not yet done, or `null`.
    pub next_activity: Option<NextActivity>,
}

/// The client a lead is linked to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClientRef {
    /// Linked contact.
    pub contact_id: Option<i64>,
    /// Linked company.
    pub company_id: Option<i64>,
}

/// Something that happened to a lead besides stage changes (a merged inquiry, ...).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LeadEvent {
    /// `merged`, ...
    pub kind: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The inquiry involved, if any.
    pub inquiry_id: Option<Uuid>,
    /// Details (for a merge: the match and its reason).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// One page of leads in the order asked for.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LeadPage {
    /// The leads.
    pub items: Vec<LeadView>,
    /// Pass as `cursor` (with the same sort) to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// How many leads match the filters, over all pages.
    pub total: i64,
}

/// One stage change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A lead with its stage history and activities.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
        l.tags, l.responsible_id, ru.name AS responsible_name,
        na.id AS next_id, na.kind AS next_kind, na.subject AS next_subject,
        na.due_at AS next_due_at, na.assignee_id AS next_assignee_id,
        ARRAY(SELECT DISTINCT k.key FROM lead_identities li,
                LATERAL (VALUES (li.key), (CASE WHEN li.key LIKE 'phone:%'
                                                THEN split_part(li.key, ';ext=', 1)
                                                ELSE li.key END)) k(key)
              WHERE li.lead_id = l.id ORDER BY k.key) AS keys
     FROM leads l JOIN stages s ON s.id = l.stage_id JOIN pipelines p ON p.id = l.pipeline_id
     LEFT JOIN users ru ON ru.id = l.responsible_id
     LEFT JOIN LATERAL (
        SELECT a.id, a.kind, a.subject, a.due_at, a.assignee_id FROM activities a
        WHERE a.lead_id = l.id AND NOT a.done AND a.due_at IS NOT NULL
        ORDER BY a.due_at, a.id LIMIT 1
     ) na ON true";

/// The tables the filters refer to, without the columns a page shows.
const LEAD_FROM: &str = " FROM leads l JOIN stages s ON s.id = l.stage_id \
     JOIN pipelines p ON p.id = l.pipeline_id";

/// Stage semantics of a finished lead: bulk moves skip these.
const FINISHED: &str = "('success', 'failure', 'abandoned')";

fn lead_from_row(row: &PgRow) -> Result<LeadView, sqlx::Error> {
    let responsible_id: Option<i64> = row.try_get("responsible_id")?;
    let responsible_name: Option<String> = row.try_get("responsible_name")?;
    let next_id: Option<i64> = row.try_get("next_id")?;
    let next_activity = match (
        next_id,
        row.try_get::<Option<DateTime<Utc>>, _>("next_due_at")?,
    ) {
        (Some(id), Some(due_at)) => Some(NextActivity {
            id,
            kind: row.try_get("next_kind")?,
            subject: row.try_get("next_subject")?,
            due_at,
            assignee_id: row.try_get("next_assignee_id")?,
        }),
        _ => None,
    };
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
        responsible: responsible_id.map(|id| UserRef {
            id,
            name: responsible_name.unwrap_or_default(),
        }),
        next_activity,
    })
}

/// What a text search looks for: the digits when the text reads like a phone number (so
/// `347 123` finds `+39347123...`), otherwise the text folded in SQL like the index.
enum SearchPattern {
    Digits(String),
    Text(String),
}

fn search_pattern(q: &str) -> SearchPattern {
    let digits: String = q.chars().filter(char::is_ascii_digit).collect();
    let phone_like = q
        .chars()
        .all(|c| c.is_ascii_digit() || " +-()./".contains(c));
    if phone_like && digits.len() >= 3 {
        return SearchPattern::Digits(format!("%{digits}%"));
    }
    // LIKE's wildcards and escape typed by a person are literal characters.
    let mut escaped = String::with_capacity(q.len());
    for c in q.trim().chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    SearchPattern::Text(escaped)
}

/// Appends ` AND ...` for every filter of `query` (not the cursor) to a statement over
/// `leads l`, `stages s` and `pipelines p`, then the caller's scope.
fn push_filters(sql: &mut QueryBuilder<'_, Postgres>, query: &LeadQuery, scope: &Scope) {
    if let Some(stage) = &query.stage {
        sql.push(" AND s.code = ").push_bind(stage.clone());
    }
    if let Some(stage_id) = query.stage_id {
        sql.push(" AND l.stage_id = ").push_bind(stage_id);
    }
    if let Some(semantic) = &query.semantic {
        sql.push(" AND s.semantic = ").push_bind(semantic.clone());
    }
    if let Some(pipeline) = &query.pipeline {
        sql.push(" AND p.code = ").push_bind(pipeline.clone());
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
        sql.push(" AND l.id IN (SELECT li.lead_id FROM lead_identities li WHERE li.key = ")
            .push_bind(key.clone());
        // A number alone also finds the leads that hold it with an extension: the
        // number is theirs, the extension only tells the desks behind it apart.
        if key.starts_with("phone:") && !key.contains(";ext=") {
            sql.push(
                " UNION ALL SELECT li.lead_id FROM lead_identities li \
                 WHERE li.key LIKE 'phone:%;ext=%' AND split_part(li.key, ';ext=', 1) = ",
            )
            .push_bind(key.clone());
        }
        sql.push(")");
    }
    match query.responsible {
        Some(Responsible::User(id)) => {
            sql.push(" AND l.responsible_id = ").push_bind(id);
        }
        Some(Responsible::Unassigned) => {
            sql.push(" AND l.responsible_id IS NULL");
        }
        None => {}
    }
    if let Some(repeat) = query.repeat {
        sql.push(" AND l.is_repeat = ").push_bind(repeat);
    }
    if let Some(tag) = &query.tag {
        sql.push(" AND l.tags @> ARRAY[")
            .push_bind(tag.clone())
            .push("]::text[]");
    }
    if let Some(q) = &query.q {
        // `search_text` is generated by the same folding (0014_views.sql) and
        // trigram-indexed (leads_search).
        sql.push(" AND l.search_text LIKE ");
        match search_pattern(q) {
            SearchPattern::Digits(pattern) => {
                sql.push_bind(pattern);
            }
            SearchPattern::Text(text) => {
                sql.push("'%' || lead_search_fold(")
                    .push_bind(text)
                    .push(") || '%'");
            }
        }
    }
    if let Some(after) = query.created_after {
        sql.push(" AND l.created_at >= ").push_bind(after);
    }
    if let Some(before) = query.created_before {
        sql.push(" AND l.created_at < ").push_bind(before);
    }
    scope.push_lead_filter(sql, "l");
}

/// Appends the keyset condition, the order and the limit.
fn push_page(sql: &mut QueryBuilder<'_, Postgres>, query: &LeadQuery, limit: i64) {
    let sort = query.sort;
    let expr = sort.field.expr();
    let op = if sort.descending { "<" } else { ">" };
    if let Some(cursor) = &query.cursor {
        match &cursor.value {
            SortValue::Id => {
                sql.push(format!(" AND l.id {op} ")).push_bind(cursor.id);
            }
            SortValue::Time(t) => {
                sql.push(format!(" AND ({expr}, l.id) {op} ("))
                    .push_bind(*t)
                    .push(", ")
                    .push_bind(cursor.id)
                    .push(")");
            }
            SortValue::Text(v) => {
                sql.push(format!(" AND ({expr}, l.id) {op} ("))
                    .push_bind(v.clone())
                    .push(", ")
                    .push_bind(cursor.id)
                    .push(")");
            }
        }
    }
    let dir = if sort.descending { "DESC" } else { "ASC" };
    if sort.field == SortField::Id {
        sql.push(format!(" ORDER BY l.id {dir}"));
    } else {
        sql.push(format!(" ORDER BY {expr} {dir}, l.id {dir}"));
    }
    sql.push(" LIMIT ").push_bind(limit);
}

/// A stage of a pipeline, as a kanban column shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StageInfo {
    /// Stage id.
    #[serde(skip)]
    pub id: i64,
    /// Stage code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// `open`, `frozen`, `success`, `failure` or `abandoned`.
    pub semantic: String,
    /// Display colour.
    pub color: String,
    /// Position on the board.
    pub sort_order: i32,
}

/// A change to one lead: `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct LeadPatch {
    /// New title (a title cannot be cleared).
    pub title: Option<String>,
    /// Person's name.
    pub name: Option<Option<String>>,
    /// Email address, normalised, with its person key when it has one.
    pub email: Option<Option<NewEmail>>,
    /// Phone number in E.164 with its extension and person key.
    pub phone: Option<Option<NewPhone>>,
    /// Company name.
    pub company: Option<Option<String>>,
    /// The inquiry's text.
    pub message: Option<Option<String>>,
    /// Labels, replacing the old ones (sorted, without duplicates).
    pub tags: Option<Vec<String>>,
    /// Who works the lead; `Some(None)` puts it back into the unassigned queue.
    pub responsible_id: Option<Option<i64>>,
    /// Change only if the lead was last changed at exactly this time (`If-Match`), so
    /// two people editing one lead do not overwrite each other unknowingly.
    pub if_updated_at: Option<DateTime<Utc>>,
}

/// A checked email address for a lead.
#[derive(Debug, Clone)]
pub struct NewEmail {
    /// The lower-cased address.
    pub address: String,
    /// Its person key (`email:...`), unless the address is shared (role mailboxes).
    pub key: Option<String>,
}

/// A checked phone number for a lead.
#[derive(Debug, Clone)]
pub struct NewPhone {
    /// E.164.
    pub number: String,
    /// Extension, if one was typed.
    pub extension: Option<String>,
    /// Its person key (`phone:+39...;ext=12`).
    pub key: String,
}

/// Why a change to leads was not made.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// No such lead in the caller's scope.
    #[error("there is no lead with id {0}")]
    NotFound(i64),
    /// The caller's role does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// The lead changed after the version the caller edited (`If-Match`).
    #[error("lead {id} changed at {updated_at}")]
    Stale {
        /// The lead.
        id: i64,
        /// When it last changed.
        updated_at: DateTime<Utc>,
    },
    /// A value cannot be used: the field and why.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for EditError {
    fn from(e: sqlx::Error) -> Self {
        EditError::Store(e.into())
    }
}

/// What a bulk change did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BulkOutcome {
    /// Leads the filter matched in the caller's scope.
    pub matched: i64,
    /// Leads changed.
    pub changed: i64,
    /// Leads that already had the value.
    pub unchanged: i64,
    /// Leads left alone because they are finished (success, failure or abandoned).
    pub skipped_finished: i64,
    /// Leads left alone because their pipeline has no such usable stage.
    pub skipped_other_pipeline: i64,
}

impl Store {
    /// Leads matching `query` in `scope`, in the query's order, one page at a time, with
    /// the number of leads matching over all pages.
    pub async fn list_leads(
        &self,
        scope: &Scope,
        query: &LeadQuery,
    ) -> Result<LeadPage, StoreError> {
        let (items, next_cursor) = self.lead_page(scope, query).await?;
        let total = if query.cursor.is_none() && next_cursor.is_none() {
            items.len() as i64
        } else {
            self.count_leads(scope, query).await?
        };
        Ok(LeadPage {
            items,
            next_cursor,
            total,
        })
    }

    /// One page of leads and the cursor of the next, without counting.
    pub async fn lead_page(
        &self,
        scope: &Scope,
        query: &LeadQuery,
    ) -> Result<(Vec<LeadView>, Option<String>), StoreError> {
        let limit = query.limit.clamp(1, 500);
        let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(LEAD_COLUMNS);
        sql.push(" WHERE true");
        push_filters(&mut sql, query, scope);
        // One row more than asked tells whether there is a next page.
        push_page(&mut sql, query, limit + 1);
        let rows = sql.build().fetch_all(self.pool()).await?;
        let mut items = rows
            .iter()
            .map(lead_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items
                .last()
                .map(|l| LeadCursor::after(l, query.sort).encode())
        } else {
            None
        };
        Ok((items, next_cursor))
    }

    /// How many leads match `query`'s filters in `scope`, per stage id, in one scan (a
    /// board counts all its columns at once).
    pub async fn count_leads_by_stage(
        &self,
        scope: &Scope,
        query: &LeadQuery,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new("SELECT l.stage_id, count(*)");
        sql.push(LEAD_FROM).push(" WHERE true");
        push_filters(&mut sql, query, scope);
        sql.push(" GROUP BY l.stage_id");
        Ok(sql
            .build_query_as::<(i64, i64)>()
            .fetch_all(self.pool())
            .await?)
    }

    /// How many leads match `query`'s filters in `scope`.
    pub async fn count_leads(&self, scope: &Scope, query: &LeadQuery) -> Result<i64, StoreError> {
        let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new("SELECT count(*)");
        // Every lead has exactly one stage and one pipeline (foreign keys, NOT NULL), so
        // the joins only matter to filters on their columns; without them an unfiltered
        // count is an index-only scan of the narrowest index of leads, not a hash join
        // of every lead.
        if query.stage.is_some() || query.semantic.is_some() || query.pipeline.is_some() {
            sql.push(LEAD_FROM);
        } else {
            sql.push(" FROM leads l");
        }
        sql.push(" WHERE true");
        push_filters(&mut sql, query, scope);
        Ok(sql.build_query_scalar().fetch_one(self.pool()).await?)
    }

    /// The stages of a lead pipeline a board shows (active, not removed, in order);
    /// `None` when there is no such pipeline.
    pub async fn board_stages(&self, pipeline: &str) -> Result<Option<Vec<StageInfo>>, StoreError> {
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM pipelines WHERE code = $1")
            .bind(pipeline)
            .fetch_optional(self.pool())
            .await?;
        let Some(pipeline_id) = exists else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT id, code, name, semantic, color, sort_order FROM stages
             WHERE pipeline_id = $1 AND active AND removed_at IS NULL
             ORDER BY sort_order, id",
        )
        .bind(pipeline_id)
        .fetch_all(self.pool())
        .await?;
        let stages = rows
            .iter()
            .map(|r| {
                Ok(StageInfo {
                    id: r.try_get("id")?,
                    code: r.try_get("code")?,
                    name: r.try_get("name")?,
                    semantic: r.try_get("semantic")?,
                    color: r.try_get("color")?,
                    sort_order: r.try_get("sort_order")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(stages))
    }

    /// One lead in `scope` with its stage history and activities.
    pub async fn get_lead(&self, scope: &Scope, id: i64) -> Result<Option<LeadDetail>, StoreError> {
        let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(LEAD_COLUMNS);
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

    /// Checks that `editor` may make `responsible` (a user id, or `None` for nobody)
    /// responsible for leads: agents may not assign, supervisors only within their team,
    /// and the user must exist and be active.
    async fn check_responsible(
        &self,
        editor: &Actor,
        responsible: Option<i64>,
    ) -> Result<(), EditError> {
        if editor.role < Role::Supervisor {
            return Err(EditError::Forbidden(
                "agents cannot change who is responsible for a lead; ask a supervisor".into(),
            ));
        }
        let Some(target) = responsible else {
            return Ok(());
        };
        let Some(facts) = self.assignee_facts(editor, target).await? else {
            return Err(EditError::Invalid {
                field: "responsible_id",
                message: format!("there is no user {target}; list users to find the id"),
            });
        };
        if !facts.active {
            return Err(EditError::Invalid {
                field: "responsible_id",
                message: format!("user {target} is deactivated; choose an active user"),
            });
        }
        if editor.role == Role::Supervisor && editor.user_id != Some(target) && !facts.in_actor_team
        {
            return Err(EditError::Forbidden(format!(
                "user {target} is not in your team; a supervisor assigns leads to their team only"
            )));
        }
        Ok(())
    }

    /// Changes the fields `patch` names on one lead in the editor's scope, keeps its
    /// person keys in step with its email and phone, and records what changed. Answers
    /// the lead as it is now.
    pub async fn update_lead(
        &self,
        editor: &Actor,
        id: i64,
        patch: &LeadPatch,
    ) -> Result<LeadDetail, EditError> {
        let scope = editor.scope();
        if let Some(responsible) = patch.responsible_id {
            self.check_responsible(editor, responsible).await?;
        }
        let mut tx = self.pool().begin().await.map_err(StoreError::from)?;
        let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "SELECT l.title, l.name, l.email, l.phone, l.phone_extension, l.company, l.message,
                    l.tags, l.responsible_id, l.updated_at FROM leads l WHERE l.id = ",
        );
        sql.push_bind(id);
        scope.push_lead_filter(&mut sql, "l");
        sql.push(" FOR UPDATE OF l");
        let Some(old) = sql.build().fetch_optional(&mut *tx).await? else {
            return Err(EditError::NotFound(id));
        };
        let updated_at: DateTime<Utc> = old.try_get("updated_at")?;
        if patch
            .if_updated_at
            .is_some_and(|expected| expected != updated_at)
        {
            return Err(EditError::Stale { id, updated_at });
        }
        let old_email: Option<String> = old.try_get("email")?;
        let old_phone: Option<String> = old.try_get("phone")?;
        let old_extension: Option<String> = old.try_get("phone_extension")?;

        let mut changed: Vec<&'static str> = Vec::new();
        let mut update: QueryBuilder<'_, Postgres> =
            QueryBuilder::new("UPDATE leads SET updated_at = now()");
        let mut set_text = |column: &'static str, new: Option<String>, changed: &mut Vec<_>| {
            let current: Option<String> = old.try_get(column).ok().flatten();
            if current != new {
                update.push(format!(", {column} = ")).push_bind(new);
                changed.push(column);
            }
        };
        if let Some(title) = &patch.title {
            set_text("title", Some(title.clone()), &mut changed);
        }
        if let Some(name) = &patch.name {
            set_text("name", name.clone(), &mut changed);
        }
        if let Some(company) = &patch.company {
            set_text("company", company.clone(), &mut changed);
        }
        if let Some(message) = &patch.message {
            set_text("message", message.clone(), &mut changed);
        }
        if let Some(email) = &patch.email {
            set_text(
                "email",
                email.as_ref().map(|e| e.address.clone()),
                &mut changed,
            );
        }
        if let Some(phone) = &patch.phone {
            let number = phone.as_ref().map(|p| p.number.clone());
            let extension = phone.as_ref().and_then(|p| p.extension.clone());
            if number != old_phone || extension != old_extension {
                set_text("phone", number, &mut changed);
                if extension != old_extension {
                    update.push(", phone_extension = ").push_bind(extension);
                    if !changed.contains(&"phone") {
                        changed.push("phone");
                    }
                }
            }
        }
        if let Some(tags) = &patch.tags {
            let current: Vec<String> = old.try_get("tags")?;
            if &current != tags {
                update.push(", tags = ").push_bind(tags.clone());
                changed.push("tags");
            }
        }
        if let Some(responsible) = patch.responsible_id {
            let current: Option<i64> = old.try_get("responsible_id")?;
            if current != responsible {
                update.push(", responsible_id = ").push_bind(responsible);
                changed.push("responsible_id");
            }
        }
        if changed.is_empty() {
            tx.rollback().await.map_err(StoreError::from)?;
        } else {
            update.push(" WHERE id = ").push_bind(id);
            update.build().execute(&mut *tx).await?;
            // The person keys follow the email and phone, so the next inquiry from the
            // new address finds this lead and one from the old address does not.
            if changed.contains(&"email") {
                if let Some(old) = &old_email {
                    sqlx::query("DELETE FROM lead_identities WHERE lead_id = $1 AND key = $2")
                        .bind(id)
                        .bind(format!("email:{old}"))
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(Some(NewEmail { key: Some(key), .. })) = &patch.email {
                    insert_identity(&mut tx, id, key).await?;
                }
            }
            if changed.contains(&"phone") {
                if let Some(old) = &old_phone {
                    sqlx::query(
                        "DELETE FROM lead_identities WHERE lead_id = $1
                           AND (key = $2 OR starts_with(key, $3))",
                    )
                    .bind(id)
                    .bind(format!("phone:{old}"))
                    .bind(format!("phone:{old};ext="))
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(Some(phone)) = &patch.phone {
                    insert_identity(&mut tx, id, &phone.key).await?;
                }
            }
            sqlx::query("INSERT INTO lead_events (lead_id, kind, data) VALUES ($1, 'updated', $2)")
                .bind(id)
                .bind(serde_json::json!({"fields": changed, "by": editor.name()}))
                .execute(&mut *tx)
                .await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        self.get_lead(&scope, id)
            .await?
            .ok_or(EditError::NotFound(id))
    }

    /// Makes `responsible` (or nobody) responsible for every lead `filter` matches in the
    /// editor's scope, in one statement, and records an `assigned` event on each.
    pub async fn bulk_assign(
        &self,
        editor: &Actor,
        filter: &LeadQuery,
        responsible: Option<i64>,
    ) -> Result<BulkOutcome, EditError> {
        self.check_responsible(editor, responsible).await?;
        let mut sql: QueryBuilder<'_, Postgres> =
            QueryBuilder::new("WITH matched AS (SELECT l.id, l.responsible_id");
        sql.push(LEAD_FROM).push(" WHERE true");
        push_filters(&mut sql, filter, &editor.scope());
        // Locks in id order, like every other writer of many leads, so two bulk changes
        // never deadlock each other.
        sql.push(" ORDER BY l.id FOR UPDATE OF l), changed AS (UPDATE leads l SET responsible_id = ")
            .push_bind(responsible)
            .push(", updated_at = now() FROM matched m WHERE l.id = m.id AND m.responsible_id IS DISTINCT FROM ")
            .push_bind(responsible)
            .push(" RETURNING l.id, m.responsible_id AS previous), events AS (INSERT INTO lead_events (lead_id, kind, data) SELECT id, 'assigned', jsonb_build_object('from', previous, 'to', ")
            .push_bind(responsible)
            .push("::bigint, 'by', ")
            .push_bind(editor.name())
            .push("::text, 'bulk', true) FROM changed) SELECT (SELECT count(*) FROM matched) AS matched, (SELECT count(*) FROM changed) AS changed");
        let row = sql.build().fetch_one(self.pool()).await?;
        let matched: i64 = row.try_get("matched")?;
        let changed: i64 = row.try_get("changed")?;
        Ok(BulkOutcome {
            matched,
            changed,
            unchanged: matched - changed,
            skipped_finished: 0,
            skipped_other_pipeline: 0,
        })
    }

    /// Moves every unfinished lead `filter` matches in the editor's scope to the stage
    /// `stage` of its pipeline, in one statement, with a history row for each move.
    /// Finished leads are skipped and counted; finishing stages are refused.
    pub async fn bulk_move(
        &self,
        editor: &Actor,
        filter: &LeadQuery,
        stage: &str,
        reason: Option<&str>,
    ) -> Result<BulkOutcome, EditError> {
        let targets = sqlx::query(
            "SELECT s.semantic FROM stages s JOIN pipelines p ON p.id = s.pipeline_id
             WHERE s.code = $1 AND s.active AND s.removed_at IS NULL AND p.kind = 'lead'",
        )
        .bind(stage)
        .fetch_all(self.pool())
        .await?;
        if targets.is_empty() {
            return Err(EditError::Invalid {
                field: "stage",
                message: format!(
                    "no lead pipeline has an active stage `{stage}`; use a stage code from GET /v1/pipelines/{{code}}/kanban"
                ),
            });
        }
        for row in &targets {
            let semantic: String = row.try_get("semantic")?;
            if semantic == "success" || semantic == "failure" {
                return Err(EditError::Invalid {
                    field: "stage",
                    message: format!(
                        "`{stage}` finishes a lead ({semantic}); finish leads one by one with POST /v1/leads/{{id}}/finish"
                    ),
                });
            }
        }
        let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "WITH matched AS (SELECT l.id, l.stage_id AS from_id, s.semantic AS from_semantic, t.id AS to_id",
        );
        sql.push(LEAD_FROM)
            .push(
                " LEFT JOIN stages t ON t.pipeline_id = l.pipeline_id AND t.active \
                 AND t.removed_at IS NULL AND t.semantic NOT IN ('success', 'failure') AND t.code = ",
            )
            .push_bind(stage.to_owned())
            .push(" WHERE true");
        push_filters(&mut sql, filter, &editor.scope());
        sql.push(format!(
            " ORDER BY l.id FOR UPDATE OF l), \
             movable AS (SELECT * FROM matched WHERE from_semantic NOT IN {FINISHED} \
                 AND to_id IS NOT NULL AND to_id <> from_id), \
             moved AS (UPDATE leads l SET stage_id = m.to_id, stage_entered_at = now(), \
                 updated_at = now() FROM movable m WHERE l.id = m.id RETURNING l.id), \
             history AS (INSERT INTO lead_stage_history \
                 (lead_id, from_stage_id, to_stage_id, changed_by, reason) \
                 SELECT m.id, m.from_id, m.to_id, "
        ))
        .push_bind(editor.name())
        .push(", ")
        .push_bind(reason.map(str::to_owned))
        .push(format!(
            " FROM movable m JOIN moved USING (id)) \
             SELECT count(*) AS matched, \
               (SELECT count(*) FROM moved) AS changed, \
               count(*) FILTER (WHERE from_semantic IN {FINISHED}) AS skipped_finished, \
               count(*) FILTER (WHERE from_semantic NOT IN {FINISHED} AND to_id IS NULL) \
                   AS skipped_other_pipeline, \
               count(*) FILTER (WHERE from_semantic NOT IN {FINISHED} AND to_id = from_id) \
                   AS unchanged \
             FROM matched"
        ));
        let row = sql.build().fetch_one(self.pool()).await?;
        Ok(BulkOutcome {
            matched: row.try_get("matched")?,
            changed: row.try_get("changed")?,
            unchanged: row.try_get("unchanged")?,
            skipped_finished: row.try_get("skipped_finished")?,
            skipped_other_pipeline: row.try_get("skipped_other_pipeline")?,
        })
    }

    /// How many inquiries have each disposition (`lead`, `merged`, `duplicate`, `spam`,
    /// `unmatched`).
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

async fn insert_identity(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    lead_id: i64,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO lead_identities (key, lead_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(key)
    .bind(lead_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorts() -> Vec<LeadSort> {
        let mut out = Vec::new();
        for field in ["id", "created_at", "updated_at", "stage_entered_at", "name"] {
            for descending in [true, false] {
                out.push(LeadSort {
                    field: SortField::parse(field).unwrap(),
                    descending,
                });
            }
        }
        out
    }

    #[test]
    fn a_cursor_reads_back_as_itself_under_its_own_sort_only() {
        let time = DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap();
        for sort in sorts() {
            let value = match sort.field {
                SortField::Id => SortValue::Id,
                SortField::Name => SortValue::Text("Nguyễn | Văn".into()),
                _ => SortValue::Time(time),
            };
            let cursor = LeadCursor {
                sort,
                value,
                id: 42,
            };
            let encoded = cursor.encode();
            assert!(encoded.bytes().all(|b| b.is_ascii_hexdigit()), "{encoded}");
            assert_eq!(LeadCursor::decode(&encoded, sort), Ok(cursor));
            let other = LeadSort {
                descending: !sort.descending,
                ..sort
            };
            assert!(matches!(
                LeadCursor::decode(&encoded, other),
                Err(BadCursor::OtherSort(_))
            ));
        }
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        for raw in ["42", "zz", "", "6964", "69647c647c78", "ff00ff00"] {
            assert!(
                LeadCursor::decode(raw, LeadSort::default()).is_err(),
                "{raw} was taken for a cursor"
            );
        }
    }

    #[test]
    fn phone_like_searches_look_for_digits_and_text_keeps_wildcards_literal() {
        assert!(
            matches!(search_pattern("+39 347-123"), SearchPattern::Digits(d) if d == "%39347123%")
        );
        assert!(matches!(search_pattern("12"), SearchPattern::Text(t) if t == "12"));
        assert!(
            matches!(search_pattern(" 50%_off\\ "), SearchPattern::Text(t) if t == "50\\%\\_off\\\\")
        );
    }
}
