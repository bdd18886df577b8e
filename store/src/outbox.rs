//! Outgoing mail: acknowledgements queued in the transaction that files their lead, and
//! the claims a sender worker takes on them.
//!
//! Who is acknowledged is decided here, from plain [`AckRules`] the daemon passes in: only
//! a lead that was created or merged from a source with an acknowledgement, only to an
//! address that is one of the lead's person keys (the normalizer's key rules already left
//! out placeholder and role addresses), never to the sending address itself, and never to
//! an address that was queued one in the last 24 hours, so two auto-responders can never
//! answer each other for ever. Inquiries that are not leads (spam, auto-replies, bounces,
//! lists, internal senders) are never filed onto a lead and so never acknowledged.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ingest::Channel;
use normalizer::IdentityKey;
use serde_json::json;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::error::StoreError;
use crate::store::Store;

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["name", "email", "subject", "lead_id", "source"];

/// Names rows' Message-IDs, so one row always gets the same one.
const MESSAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5b1e_0c1e_7a8d_4f3b_9d2e_61f0_a4c3_d2b1);

/// How long after queuing one acknowledgement no other goes to the same address.
const QUIET_HOURS: i32 = 24;

/// A text with `{placeholder}` slots, checked when it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Slot(String),
}

impl Template {
    /// Parses `raw`; `{{` and `}}` are literal braces. Says which placeholder is unknown
    /// or which brace is unclosed.
    pub fn parse(raw: &str) -> Result<Template, String> {
        Self::parse_with(raw, PLACEHOLDERS)
    }

    /// Parses `raw` allowing the placeholders `allowed` (a template of another mail).
    pub fn parse_with(raw: &str, allowed: &[&str]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(format!(
                                    "`{{{name}` is not closed: write {{placeholder}}, or {{{{ for a brace"
                                ));
                            }
                        }
                    }
                    let name = name.trim().to_owned();
                    if !allowed.contains(&name.as_str()) {
                        return Err(format!(
                            "unknown placeholder {{{name}}}: use one of {}",
                            allowed
                                .iter()
                                .map(|p| format!("{{{p}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Slot(name));
                }
                '}' => {
                    return Err("a lone `}`: write }} for a brace".into());
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template(parts))
    }

    /// The text with each slot filled from `values` (an unknown value is left empty).
    pub fn render(&self, values: &HashMap<&str, String>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Slot(name) => out.push_str(values.get(name.as_str()).map_or("", |v| v)),
            }
        }
        out
    }
}

/// The acknowledgement of one source.
#[derive(Debug, Clone)]
pub struct Acknowledgement {
    /// The subject line.
    pub subject: Template,
    /// The plain-text body.
    pub body: Template,
    /// What `{name}` becomes when the lead has no name (`Customer`, `Cliente`).
    pub fallback_name: String,
}

/// What to acknowledge: the acknowledgement of each source, and the sending address.
#[derive(Debug, Clone, Default)]
pub struct AckRules {
    /// The address mail is sent from; never acknowledged, and the Message-IDs' domain.
    pub from: String,
    /// The acknowledgement of each lead source.
    pub by_source: HashMap<String, Acknowledgement>,
}

impl AckRules {
    /// True when no source is acknowledged.
    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }

    pub(crate) fn sending_address(&self) -> String {
        // `Name <addr>` or a bare address.
        let inner = self
            .from
            .rsplit_once('<')
            .map_or(self.from.as_str(), |(_, rest)| rest.trim_end_matches('>'));
        inner.trim().to_lowercase()
    }

    pub(crate) fn message_id_domain(&self) -> String {
        self.sending_address()
            .rsplit_once('@')
            .map(|(_, domain)| domain.to_owned())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "leadpipe.invalid".into())
    }
}

/// One lead event the intake filed: what an acknowledgement is decided from.
pub(crate) struct FiledLead<'a> {
    pub(crate) lead_id: i64,
    pub(crate) lead: &'a normalizer::Lead,
}

/// Queues the acknowledgements `filed` earns, in the filing transaction. The person keys
/// of every lead are locked by the caller, so no other transaction queues to the same
/// address meanwhile.
pub(crate) async fn queue_acknowledgements(
    tx: &mut Transaction<'_, Postgres>,
    rules: &AckRules,
    filed: &[FiledLead<'_>],
) -> Result<(), sqlx::Error> {
    if rules.is_empty() {
        return Ok(());
    }
    let own = rules.sending_address();
    let mut seen: HashSet<String> = HashSet::new();
    let mut rows = Vec::new();
    for FiledLead { lead_id, lead } in filed {
        let inquiry = &lead.inquiry;
        let Some(ack) = rules.by_source.get(&inquiry.source) else {
            continue;
        };
        if inquiry.spam.is_some() {
            continue;
        }
        let Some(email) = &lead.email else { continue };
        let recipient = email.as_str().to_lowercase();
        let is_person_key = lead
            .identity_keys
            .iter()
            .any(|k| matches!(k, IdentityKey::Email(e) if e.eq_ignore_ascii_case(&recipient)));
        if !is_person_key || recipient == own || !seen.insert(recipient.clone()) {
            continue;
        }
        let event = inquiry.event.as_ref();
        let subject = event.and_then(|e| e.subject.clone()).unwrap_or_default();
        let values: HashMap<&str, String> = [
            (
                "name",
                lead.name
                    .clone()
                    .unwrap_or_else(|| ack.fallback_name.clone()),
            ),
            ("email", recipient.clone()),
            ("subject", subject),
            ("lead_id", lead_id.to_string()),
            ("source", inquiry.source.clone()),
        ]
        .into_iter()
        .collect();
        let mut headers = serde_json::Map::new();
        headers.insert("Auto-Submitted".into(), json!("auto-replied"));
        if inquiry.channel == Channel::Email
            && let Some(id) = event
                .and_then(|e| e.data.get("message_id"))
                .and_then(|v| v.as_str())
                .filter(|id| id.starts_with('<') && id.ends_with('>'))
        {
            headers.insert("In-Reply-To".into(), json!(id));
            headers.insert("References".into(), json!(id));
        }
        let dedup_key = format!("ack:{}", inquiry.id);
        let message_id = message_id("ack", &dedup_key, &rules.message_id_domain());
        rows.push(Queued {
            dedup_key,
            lead_id: Some(*lead_id),
            inquiry_id: Some(inquiry.id.as_uuid()),
            recipient,
            subject: clean(&ack.subject.render(&values)),
            body: ack.body.render(&values).replace('\0', "\u{FFFD}"),
            message_id,
            headers: serde_json::Value::Object(headers),
        });
    }
    insert_outbox(tx, &rows, Some(QUIET_HOURS)).await?;
    Ok(())
}

/// One outbox row to queue.
pub(crate) struct Queued {
    pub(crate) dedup_key: String,
    pub(crate) lead_id: Option<i64>,
    pub(crate) inquiry_id: Option<Uuid>,
    pub(crate) recipient: String,
    pub(crate) subject: String,
    pub(crate) body: String,
    pub(crate) message_id: String,
    pub(crate) headers: serde_json::Value,
}

/// Inserts `rows` into the outbox in `tx`, skipping a row whose dedup key is queued
/// already and, with `quiet_hours`, one whose recipient was queued a mail that recently.
/// Answers the ids of the rows inserted, by dedup key.
pub(crate) async fn insert_outbox(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[Queued],
    quiet_hours: Option<i32>,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let queued = sqlx::query(
        "INSERT INTO outbox (dedup_key, lead_id, inquiry_id, recipient, subject, body,
                             message_id, headers)
         SELECT r.* FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::text[],
                                $6::text[], $7::text[], $8::jsonb[])
                AS r(dedup_key, lead_id, inquiry_id, recipient, subject, body, message_id, headers)
         WHERE $9::int IS NULL OR NOT EXISTS (
             SELECT 1 FROM outbox o
             WHERE o.recipient = r.recipient
               AND o.created_at > now() - make_interval(hours => $9))
         ON CONFLICT (dedup_key) DO NOTHING
         RETURNING id, dedup_key",
    )
    .bind(rows.iter().map(|r| r.dedup_key.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.lead_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.inquiry_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.recipient.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.subject.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.body.clone()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.message_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| Json(r.headers.clone()))
            .collect::<Vec<_>>(),
    )
    .bind(quiet_hours)
    .fetch_all(&mut **tx)
    .await?;
    if !queued.is_empty() {
        metrics::counter!("leadpipe_mail_queued_total").increment(queued.len() as u64);
    }
    Ok(queued
        .into_iter()
        .map(|row| (row.get("dedup_key"), row.get("id")))
        .collect())
}

/// The Message-ID of the outbox row `dedup_key` (kind `kind`), in the sender's domain:
/// the same row always gets the same one.
pub(crate) fn message_id(kind: &str, dedup_key: &str, domain: &str) -> String {
    format!(
        "<{kind}.{}@{domain}>",
        Uuid::new_v5(&MESSAGE_ID_NAMESPACE, dedup_key.as_bytes()).simple()
    )
}

/// A subject line is one line: a name with a line break must not add headers.
pub(crate) fn clean(subject: &str) -> String {
    subject
        .replace('\0', "\u{FFFD}")
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A queued mail a worker has claimed.
#[derive(Debug, Clone)]
pub struct OutgoingMail {
    /// The row.
    pub id: i64,
    /// The address it goes to.
    pub recipient: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
    /// Its Message-ID, angle brackets included.
    pub message_id: String,
    /// Further headers by name.
    pub headers: Vec<(String, String)>,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
}

/// The state of the outbox, for the depth gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    /// Waiting to be sent (or to be retried).
    pub pending: i64,
    /// Claimed by a worker now.
    pub sending: i64,
    /// Given up on.
    pub failed: i64,
}

impl OutboxDepth {
    pub(crate) fn from_row(row: &sqlx::postgres::PgRow) -> Self {
        Self {
            pending: row.get("pending"),
            sending: row.get("sending"),
            failed: row.get("failed"),
        }
    }
}

/// The statement that claims up to `$1` due rows of a queue table for `$2` seconds
/// (`state`, `attempts`, `next_attempt_at`, `claimed_until`), returning `returning`.
/// `SKIP LOCKED` lets replicas share one table; a row claimed by a worker that died is
/// due again once its claim lapsed.
pub(crate) fn claim_statement(table: &str, returning: &str) -> String {
    format!(
        "UPDATE {table} SET state = 'sending', attempts = attempts + 1,
                           claimed_until = now() + make_interval(secs => $2)
         WHERE id IN (
             SELECT id FROM {table}
             WHERE (state = 'pending' AND next_attempt_at <= now())
                OR (state = 'sending' AND claimed_until < now())
             ORDER BY next_attempt_at, id
             LIMIT $1
             FOR UPDATE SKIP LOCKED)
         RETURNING {returning}"
    )
}

/// The statement that hands the claimed rows `$1` of a queue table back unsent, as if
/// never attempted.
pub(crate) fn release_statement(table: &str) -> String {
    format!(
        "UPDATE {table} SET state = 'pending', claimed_until = NULL,
                           attempts = greatest(attempts - 1, 0)
         WHERE id = ANY($1) AND state = 'sending'"
    )
}

/// Records a failed attempt at row `$1` of `table` (error `$2`): pending again after
/// `$3` seconds, or `failed` when `$3` is NULL; its activity, if any, shows it.
pub(crate) fn failed_statement(table: &str) -> String {
    format!(
        "WITH m AS (
             UPDATE {table} SET state = CASE WHEN $3::float8 IS NULL THEN 'failed'
                                            ELSE 'pending' END,
                               claimed_until = NULL, last_error = $2,
                               next_attempt_at = CASE WHEN $3::float8 IS NULL
                                                      THEN next_attempt_at
                                                      ELSE now() + make_interval(secs => $3)
                                                 END
             WHERE id = $1
             RETURNING activity_id, attempts)
         UPDATE activities a
         SET data = CASE WHEN $3::float8 IS NULL THEN a.data - 'last_error' ELSE a.data END
                    || CASE WHEN $3::float8 IS NULL
             THEN jsonb_build_object('delivery', 'failed', 'error', $2::text,
                                     'attempts', m.attempts)
             ELSE jsonb_build_object('last_error', $2::text, 'attempts', m.attempts) END
         FROM m WHERE a.id = m.activity_id"
    )
}

/// The statement that counts a queue table's unsent rows by state.
pub(crate) fn depth_statement(table: &str) -> String {
    format!(
        "SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
                count(*) FILTER (WHERE state = 'sending') AS sending,
                count(*) FILTER (WHERE state = 'failed') AS failed
         FROM {table} WHERE state <> 'sent'"
    )
}

impl Store {
    /// Claims up to `limit` mails that are due, each for `lease`: another worker (or this
    /// one after a restart) takes a claimed row again only once its lease lapsed, which
    /// happens only when a worker died between claiming and marking it.
    pub async fn claim_due_mail(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutgoingMail>, StoreError> {
        let rows = sqlx::query(&claim_statement(
            "outbox",
            "id, recipient, subject, body, message_id, headers, attempts, created_at",
        ))
        .bind(limit)
        .bind(lease.as_secs_f64())
        .fetch_all(self.pool())
        .await?;
        let mut mails: Vec<OutgoingMail> = rows
            .into_iter()
            .map(|row| {
                let headers: Json<serde_json::Map<String, serde_json::Value>> = row.get("headers");
                OutgoingMail {
                    id: row.get("id"),
                    recipient: row.get("recipient"),
                    subject: row.get("subject"),
                    body: row.get("body"),
                    message_id: row.get("message_id"),
                    headers: headers
                        .0
                        .into_iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
                        .collect(),
                    attempts: row.get("attempts"),
                    created_at: row.get("created_at"),
                }
            })
            .collect();
        mails.sort_by_key(|m| m.id);
        Ok(mails)
    }

    /// Hands claimed mails back unsent (a stopping worker), as if never attempted.
    pub async fn release_mail(&self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query(&release_statement("outbox"))
            .bind(ids)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records that `id` was sent, and marks the activity of a reply by mail `sent` with
    /// its Message-ID.
    pub async fn mark_mail_sent(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "WITH m AS (
                 UPDATE outbox SET state = 'sent', sent_at = now(), claimed_until = NULL,
                                   last_error = NULL
                 WHERE id = $1
                 RETURNING activity_id, message_id)
             UPDATE activities a
             SET data = (a.data - 'last_error')
                        || jsonb_build_object('delivery', 'sent', 'message_id', m.message_id,
                                              'sent_at', now())
             FROM m WHERE a.id = m.activity_id",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a failed attempt: tried again after `retry_in`, or given up on when `None`.
    /// The activity of a reply by mail shows the error (`last_error` while retried,
    /// `delivery = failed` with `error` once given up on).
    pub async fn mark_mail_failed(
        &self,
        id: i64,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), StoreError> {
        let error = error.replace('\0', "\u{FFFD}");
        sqlx::query(&failed_statement("outbox"))
            .bind(id)
            .bind(&error)
            .bind(retry_in.map(|d| d.as_secs_f64()))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes mail sent longer than `age` ago (it must be longer than a day, which the
    /// once-a-day rule reads); answers how many rows went.
    pub async fn purge_sent_mail(&self, age: Duration) -> Result<u64, StoreError> {
        let age = age.max(Duration::from_secs(2 * 86_400));
        let done = sqlx::query(
            "DELETE FROM outbox
             WHERE state = 'sent' AND sent_at < now() - make_interval(secs => $1)",
        )
        .bind(age.as_secs_f64())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// How many mails wait, are being sent, and were given up on.
    pub async fn outbox_depth(&self) -> Result<OutboxDepth, StoreError> {
        let row = sqlx::query(&depth_statement("outbox"))
            .fetch_one(self.pool())
            .await?;
        Ok(OutboxDepth::from_row(&row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_fills_its_placeholders_and_keeps_doubled_braces() {
        let template = Template::parse("Ciao {name}, {{lead}} n. {lead_id}").unwrap();
        let values: HashMap<&str, String> = [("name", "Anna".to_owned()), ("lead_id", "7".into())]
            .into_iter()
            .collect();
        assert_eq!(template.render(&values), "Ciao Anna, {lead} n. 7");
    }

    #[test]
    fn a_template_names_an_unknown_or_unclosed_placeholder() {
        let unknown = Template::parse("Hi {nome}").unwrap_err();
        assert!(unknown.contains("{nome}"), "{unknown}");
        assert!(Template::parse("Hi {name").is_err());
        assert!(Template::parse("Hi }").is_err());
    }

    #[test]
    fn a_subject_never_spans_lines() {
        assert_eq!(clean("Re: a\r\nBcc: x@y.z"), "Re: a Bcc: x@y.z");
    }
}
