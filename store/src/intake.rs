//! The consumer's sink: files a batch of envelopes in one transaction.
//!
//! Per envelope, in order: a replay (inquiry id already stored) changes nothing; spam is
//! kept as an inquiry without a lead; the same content from the same source inside its
//! window is kept as a duplicate of the first; anything else becomes a lead in its
//! pipeline's initial stage, with the stage-history row and the inquiry as its first
//! activity. The common case is one statement per envelope.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use router::{BatchSink, Envelope, SinkError, StoreOutcome};
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::{Store, StoreError};

/// PostgreSQL refuses NUL in text and jsonb; hostile input may carry it. The raw bytes
/// keep the original, the columns get a visible replacement.
fn text(value: &str) -> String {
    value.replace('\0', "\u{FFFD}")
}

fn opt_text(value: Option<&str>) -> Option<String> {
    value.map(text)
}

fn json<T: serde::Serialize>(value: &T) -> Json<serde_json::Value> {
    let encoded = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    // A NUL escaped inside JSON text is refused by jsonb too.
    let cleaned = encoded.replace("\\u0000", "\\ufffd");
    Json(serde_json::from_str(&cleaned).unwrap_or(serde_json::Value::Null))
}

/// Pipeline and stage ids a route resolves to.
#[derive(Clone, Copy)]
struct Placement {
    pipeline_id: i64,
    stage_id: i64,
}

#[async_trait]
impl BatchSink for Store {
    async fn store_batch(&self, batch: &[&Envelope]) -> Result<Vec<StoreOutcome>, SinkError> {
        let mut tx = self.pool().begin().await.map_err(transient)?;
        let mut placements: HashMap<(String, Option<String>), Placement> = HashMap::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for (index, envelope) in batch.iter().enumerate() {
            let outcome = store_one(&mut tx, envelope, &mut placements)
                .await
                .map_err(|e| classify(e, index))?;
            outcomes.push(outcome);
        }
        tx.commit().await.map_err(transient)?;
        Ok(outcomes)
    }
}

fn transient(error: sqlx::Error) -> SinkError {
    match StoreError::from(error) {
        StoreError::Unavailable(reason) => SinkError::Transient(reason),
        other => SinkError::Permanent {
            index: None,
            reason: other.to_string(),
        },
    }
}

fn classify(error: StoreError, index: usize) -> SinkError {
    if error.is_transient() {
        SinkError::Transient(error.to_string())
    } else {
        SinkError::Permanent {
            index: Some(index),
            reason: error.to_string(),
        }
    }
}

async fn placement(
    tx: &mut Transaction<'_, Postgres>,
    cache: &mut HashMap<(String, Option<String>), Placement>,
    pipeline: &str,
    stage: Option<&str>,
) -> Result<Placement, StoreError> {
    let key = (pipeline.to_owned(), stage.map(str::to_owned));
    if let Some(found) = cache.get(&key) {
        return Ok(*found);
    }
    let row = sqlx::query(
        "SELECT p.id AS pipeline_id, s.id AS stage_id
         FROM pipelines p JOIN stages s ON s.pipeline_id = p.id
         WHERE p.code = $1 AND (($2::text IS NULL AND s.is_initial) OR s.code = $2)",
    )
    .bind(pipeline)
    .bind(stage)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| {
        StoreError::Rejected(format!(
            "no pipeline `{pipeline}` with stage `{}`: check [routing] pipeline",
            stage.unwrap_or("(initial)")
        ))
    })?;
    let found = Placement {
        pipeline_id: row.try_get("pipeline_id")?,
        stage_id: row.try_get("stage_id")?,
    };
    cache.insert(key, found);
    Ok(found)
}

async fn store_one(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &Envelope,
    placements: &mut HashMap<(String, Option<String>), Placement>,
) -> Result<StoreOutcome, StoreError> {
    let lead = &envelope.lead;
    let inquiry = &lead.inquiry;
    let id = inquiry.id.as_uuid();

    let mut duplicate_of: Option<Uuid> = None;
    if let Some(dedup) = &inquiry.dedup
        && inquiry.spam.is_none()
    {
        // Replicas may file the same content at once; the lock makes the check and the
        // insert one step for this key.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("dedup\u{1f}{}\u{1f}{}", inquiry.source, dedup.key))
            .execute(&mut **tx)
            .await?;
        let window = chrono::Duration::seconds(i64::from(dedup.window_secs));
        duplicate_of = sqlx::query_scalar(
            "SELECT id FROM inquiries
             WHERE source = $1 AND dedup_key = $2 AND id <> $3
               AND received_at BETWEEN $4 AND $5 AND disposition <> 'duplicate'
             ORDER BY received_at LIMIT 1",
        )
        .bind(text(&inquiry.source))
        .bind(&dedup.key)
        .bind(id)
        .bind(inquiry.received_at - window)
        .bind(inquiry.received_at + window)
        .fetch_optional(&mut **tx)
        .await?;
    }

    let disposition = if inquiry.spam.is_some() {
        "spam"
    } else if duplicate_of.is_some() {
        "duplicate"
    } else {
        "lead"
    };

    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO inquiries (id, channel, source, external_id, received_at, disposition,
                                duplicate_of, spam_reason, dedup_key, payload, raw_content_type, raw_body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(id)
    .bind(inquiry.channel.as_str())
    .bind(text(&inquiry.source))
    .bind(opt_text(inquiry.external_id.as_deref()))
    .bind(inquiry.received_at)
    .bind(disposition)
    .bind(duplicate_of)
    .bind(opt_text(inquiry.spam.as_deref()))
    .bind(inquiry.dedup.as_ref().map(|d| d.key.clone()))
    .bind(json(&InquiryPayload::from(envelope)))
    .bind(opt_text(inquiry.raw.content_type.as_deref()))
    .bind(inquiry.raw.body.as_ref())
    .fetch_optional(&mut **tx)
    .await?;
    if inserted.is_none() {
        return Ok(StoreOutcome::Replay);
    }
    match disposition {
        "spam" => return Ok(StoreOutcome::Spam),
        "duplicate" => return Ok(StoreOutcome::Duplicate),
        _ => {}
    }

    let place = placement(
        tx,
        placements,
        &envelope.route.pipeline,
        envelope.route.stage.as_deref(),
    )
    .await?;
    let now: DateTime<Utc> = Utc::now();
    let lead_id: i64 = sqlx::query_scalar(
        "WITH lead AS (
             INSERT INTO leads (inquiry_id, title, name, email, phone, phone_extension, company,
                                message, channel, source, utm, fields, problems, pipeline_id,
                                stage_id, stage_entered_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $16)
             RETURNING id
         ), history AS (
             INSERT INTO lead_stage_history (lead_id, from_stage_id, to_stage_id, changed_at, changed_by, reason)
             SELECT id, NULL, $15, $16, 'leadpipe', 'new lead from ' || $9 || ' inquiry' FROM lead
         ), activity AS (
             INSERT INTO activities (lead_id, kind, channel, inquiry_id, subject, body, occurred_at, data)
             SELECT id, 'inquiry', $9, $1, $17, $8, $18, $19 FROM lead
         )
         SELECT id FROM lead",
    )
    .bind(id)
    .bind(text(&lead.title()))
    .bind(opt_text(lead.name.as_deref()))
    .bind(lead.email.as_ref().map(|e| e.as_str().to_owned()))
    .bind(lead.phone.as_ref().map(|p| p.as_str().to_owned()))
    .bind(opt_text(lead.phone_extension.as_deref()))
    .bind(opt_text(lead.company.as_deref()))
    .bind(opt_text(lead.message.as_deref()))
    .bind(inquiry.channel.as_str())
    .bind(text(&inquiry.source))
    .bind(json(&inquiry.utm))
    .bind(json(&inquiry.fields))
    .bind(json(&lead.problems))
    .bind(place.pipeline_id)
    .bind(place.stage_id)
    .bind(now)
    .bind(format!("{} inquiry via {}", inquiry.channel, text(&inquiry.source)))
    .bind(inquiry.received_at)
    .bind(json(&serde_json::json!({ "attachments": inquiry.attachments })))
    .fetch_one(&mut **tx)
    .await?;
    Ok(StoreOutcome::LeadCreated { lead_id })
}

/// What is kept of an envelope beside the raw bytes: everything but the bytes themselves.
#[derive(serde::Serialize)]
struct InquiryPayload<'a> {
    contact: &'a ingest::ContactHints,
    message: Option<&'a str>,
    utm: &'a std::collections::BTreeMap<String, String>,
    fields: &'a serde_json::Map<String, serde_json::Value>,
    attachments: &'a [ingest::Attachment],
    default_region: Option<&'a str>,
    normalized: Normalized<'a>,
    route: &'a router::Route,
    published_at: DateTime<Utc>,
}

#[derive(serde::Serialize)]
struct Normalized<'a> {
    name: Option<&'a str>,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    phone_extension: Option<&'a str>,
    company: Option<&'a str>,
    problems: &'a [ingest::FieldProblem],
    identity_keys: Vec<String>,
}

impl<'a> From<&'a Envelope> for InquiryPayload<'a> {
    fn from(envelope: &'a Envelope) -> Self {
        let lead = &envelope.lead;
        let inquiry = &lead.inquiry;
        Self {
            contact: &inquiry.contact,
            message: inquiry.message.as_deref(),
            utm: &inquiry.utm,
            fields: &inquiry.fields,
            attachments: &inquiry.attachments,
            default_region: inquiry.default_region.as_deref(),
            normalized: Normalized {
                name: lead.name.as_deref(),
                email: lead.email.as_ref().map(|e| e.as_str()),
                phone: lead.phone.as_ref().map(|p| p.as_str()),
                phone_extension: lead.phone_extension.as_deref(),
                company: lead.company.as_deref(),
                problems: &lead.problems,
                identity_keys: lead.identity_keys.iter().map(|k| k.as_key()).collect(),
            },
            route: &envelope.route,
            published_at: envelope.published_at,
        }
    }
}
