//! The consumer's sink: files a batch of envelopes in one transaction.
//!
//! Per envelope, in batch order: a replay (inquiry id already stored, or earlier in the
//! batch) changes nothing; spam is kept as an inquiry without a lead; the same content
//! from the same source inside its window is kept as a duplicate of the first; anything
//! else becomes a lead in its pipeline's initial stage, with the stage-history row and the
//! inquiry as its first activity.
//!
//! The statements are per batch, not per lead (arrays through `unnest`), so a batch of
//! two hundred costs about as many round trips as a batch of one.

use std::collections::{HashMap, HashSet};

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

/// A source and a content hash: what makes two inquiries "the same submission".
type ContentKey = (String, String);

/// What becomes of one envelope, decided before anything is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Decision {
    Replay,
    Spam,
    Duplicate(Uuid),
    Lead,
}

#[async_trait]
impl BatchSink for Store {
    #[tracing::instrument(name = "Store lead batch", skip_all, fields(batch = batch.len()))]
    async fn store_batch(&self, batch: &[&Envelope]) -> Result<Vec<StoreOutcome>, SinkError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(|e| classify(e.into(), None))?;
        let outcomes = file_batch(&mut tx, batch).await?;
        tx.commit().await.map_err(|e| classify(e.into(), None))?;
        Ok(outcomes)
    }
}

fn classify(error: StoreError, index: Option<usize>) -> SinkError {
    if error.is_transient() {
        SinkError::Transient(error.to_string())
    } else {
        SinkError::Permanent {
            index,
            reason: error.to_string(),
        }
    }
}

fn dedup_lock_key(source: &str, key: &str) -> String {
    format!("dedup\u{1f}{source}\u{1f}{key}")
}

async fn file_batch(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[&Envelope],
) -> Result<Vec<StoreOutcome>, SinkError> {
    let db = |e: sqlx::Error| classify(e.into(), None);

    // Replicas may file the same content at once; the locks make check and insert one
    // step per key. Sorted, so two batches never wait on each other in a cycle.
    let mut lock_keys: Vec<String> = batch
        .iter()
        .map(|e| &e.lead.inquiry)
        .filter(|i| i.spam.is_none())
        .filter_map(|i| i.dedup.as_ref().map(|d| dedup_lock_key(&i.source, &d.key)))
        .collect();
    lock_keys.sort();
    lock_keys.dedup();
    if !lock_keys.is_empty() {
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))
             FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
        )
        .bind(&lock_keys)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }

    let ids: Vec<Uuid> = batch.iter().map(|e| e.lead.inquiry.id.as_uuid()).collect();
    let stored: HashSet<Uuid> =
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM inquiries WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await
            .map_err(db)?
            .into_iter()
            .collect();

    // Earlier inquiries with the same content, to tell a double click from a new lead.
    let (sources, keys): (Vec<String>, Vec<String>) = batch
        .iter()
        .map(|e| &e.lead.inquiry)
        .filter_map(|i| i.dedup.as_ref().map(|d| (text(&i.source), d.key.clone())))
        .unzip();
    let mut originals: HashMap<ContentKey, Vec<(Uuid, DateTime<Utc>)>> = HashMap::new();
    if !keys.is_empty() {
        let rows = sqlx::query(
            "SELECT i.source, i.dedup_key, i.id, i.received_at FROM inquiries i
             JOIN unnest($1::text[], $2::text[]) AS k(source, dedup_key)
               ON i.source = k.source AND i.dedup_key = k.dedup_key
             WHERE i.disposition <> 'duplicate'",
        )
        .bind(&sources)
        .bind(&keys)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        for row in rows {
            let entry = (
                row.try_get::<String, _>("source").map_err(db)?,
                row.try_get::<String, _>("dedup_key").map_err(db)?,
            );
            originals.entry(entry).or_default().push((
                row.try_get("id").map_err(db)?,
                row.try_get("received_at").map_err(db)?,
            ));
        }
    }

    let mut seen = HashSet::new();
    let mut decisions = Vec::with_capacity(batch.len());
    for envelope in batch {
        let inquiry = &envelope.lead.inquiry;
        let id = inquiry.id.as_uuid();
        let decision = if stored.contains(&id) || !seen.insert(id) {
            Decision::Replay
        } else if inquiry.spam.is_some() {
            Decision::Spam
        } else if let Some(dedup) = &inquiry.dedup {
            let window = chrono::Duration::seconds(i64::from(dedup.window_secs));
            let entry = originals
                .entry((text(&inquiry.source), dedup.key.clone()))
                .or_default();
            match entry
                .iter()
                .find(|(_, at)| (*at - inquiry.received_at).abs() <= window)
            {
                Some((first, _)) => Decision::Duplicate(*first),
                None => {
                    entry.push((id, inquiry.received_at));
                    Decision::Lead
                }
            }
        } else {
            Decision::Lead
        };
        decisions.push(decision);
    }

    // Resolve routes first: an unknown pipeline is this envelope's fault, not the batch's.
    let mut placements: HashMap<(String, Option<String>), Placement> = HashMap::new();
    for (index, (envelope, decision)) in batch.iter().zip(&decisions).enumerate() {
        if *decision == Decision::Lead {
            placement(
                tx,
                &mut placements,
                &envelope.route.pipeline,
                envelope.route.stage.as_deref(),
            )
            .await
            .map_err(|e| classify(e, Some(index)))?;
        }
    }

    let inserted = insert_inquiries(tx, batch, &decisions).await.map_err(db)?;
    let new_leads: Vec<(usize, &Envelope)> = batch
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            decisions[*i] == Decision::Lead && inserted.contains(&e.lead.inquiry.id.as_uuid())
        })
        .map(|(i, e)| (i, *e))
        .collect();
    let lead_ids = insert_leads(tx, &new_leads, &placements)
        .await
        .map_err(db)?;

    Ok(batch
        .iter()
        .zip(&decisions)
        .map(|(envelope, decision)| {
            let id = envelope.lead.inquiry.id.as_uuid();
            if !inserted.contains(&id) {
                // Stored by someone else between our look-up and our insert.
                return StoreOutcome::Replay;
            }
            match decision {
                Decision::Replay => StoreOutcome::Replay,
                Decision::Spam => StoreOutcome::Spam,
                Decision::Duplicate(_) => StoreOutcome::Duplicate,
                Decision::Lead => match lead_ids.get(&id) {
                    Some(&lead_id) => StoreOutcome::LeadCreated { lead_id },
                    None => StoreOutcome::Replay,
                },
            }
        })
        .collect())
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

/// Inserts every inquiry that is not a replay; returns the ids actually inserted.
async fn insert_inquiries(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[&Envelope],
    decisions: &[Decision],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let mut ids = Vec::new();
    let mut channels = Vec::new();
    let mut sources = Vec::new();
    let mut external_ids = Vec::new();
    let mut received = Vec::new();
    let mut dispositions = Vec::new();
    let mut duplicate_of = Vec::new();
    let mut spam_reasons = Vec::new();
    let mut dedup_keys = Vec::new();
    let mut payloads = Vec::new();
    let mut content_types = Vec::new();
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for (envelope, decision) in batch.iter().zip(decisions) {
        let inquiry = &envelope.lead.inquiry;
        let (disposition, original) = match decision {
            Decision::Replay => continue,
            Decision::Spam => ("spam", None),
            Decision::Duplicate(first) => ("duplicate", Some(*first)),
            Decision::Lead => ("lead", None),
        };
        ids.push(inquiry.id.as_uuid());
        channels.push(inquiry.channel.as_str());
        sources.push(text(&inquiry.source));
        external_ids.push(opt_text(inquiry.external_id.as_deref()));
        received.push(inquiry.received_at);
        dispositions.push(disposition);
        duplicate_of.push(original);
        spam_reasons.push(opt_text(inquiry.spam.as_deref()));
        dedup_keys.push(inquiry.dedup.as_ref().map(|d| d.key.clone()));
        payloads.push(json(&InquiryPayload::from(*envelope)));
        content_types.push(opt_text(inquiry.raw.content_type.as_deref()));
        bodies.push(inquiry.raw.body.to_vec());
    }
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO inquiries (id, channel, source, external_id, received_at, disposition,
                                duplicate_of, spam_reason, dedup_key, payload, raw_content_type, raw_body)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                              $6::text[], $7::uuid[], $8::text[], $9::text[], $10::jsonb[],
                              $11::text[], $12::bytea[])
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(&ids)
    .bind(&channels)
    .bind(&sources)
    .bind(&external_ids)
    .bind(&received)
    .bind(&dispositions)
    .bind(&duplicate_of)
    .bind(&spam_reasons)
    .bind(&dedup_keys)
    .bind(&payloads)
    .bind(&content_types)
    .bind(&bodies)
    .fetch_all(&mut **tx)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// Inserts the leads with their first stage-history row and first activity; returns the
/// lead id of each inquiry id.
async fn insert_leads(
    tx: &mut Transaction<'_, Postgres>,
    leads: &[(usize, &Envelope)],
    placements: &HashMap<(String, Option<String>), Placement>,
) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    if leads.is_empty() {
        return Ok(HashMap::new());
    }
    let now: DateTime<Utc> = Utc::now();
    let n = leads.len();
    let mut inquiry_ids = Vec::with_capacity(n);
    let mut titles = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut emails = Vec::with_capacity(n);
    let mut phones = Vec::with_capacity(n);
    let mut extensions = Vec::with_capacity(n);
    let mut companies = Vec::with_capacity(n);
    let mut messages = Vec::with_capacity(n);
    let mut channels = Vec::with_capacity(n);
    let mut sources = Vec::with_capacity(n);
    let mut utms = Vec::with_capacity(n);
    let mut fields = Vec::with_capacity(n);
    let mut problems = Vec::with_capacity(n);
    let mut pipeline_ids = Vec::with_capacity(n);
    let mut stage_ids = Vec::with_capacity(n);
    for (_, envelope) in leads {
        let lead = &envelope.lead;
        let inquiry = &lead.inquiry;
        let place = placements
            .get(&(
                envelope.route.pipeline.clone(),
                envelope.route.stage.clone(),
            ))
            .copied()
            .ok_or_else(|| sqlx::Error::Protocol("route resolved before insert".into()))?;
        inquiry_ids.push(inquiry.id.as_uuid());
        titles.push(text(&lead.title()));
        names.push(opt_text(lead.name.as_deref()));
        emails.push(lead.email.as_ref().map(|e| e.as_str().to_owned()));
        phones.push(lead.phone.as_ref().map(|p| p.as_str().to_owned()));
        extensions.push(opt_text(lead.phone_extension.as_deref()));
        companies.push(opt_text(lead.company.as_deref()));
        messages.push(opt_text(lead.message.as_deref()));
        channels.push(inquiry.channel.as_str());
        sources.push(text(&inquiry.source));
        utms.push(json(&inquiry.utm));
        fields.push(json(&inquiry.fields));
        problems.push(json(&lead.problems));
        pipeline_ids.push(place.pipeline_id);
        stage_ids.push(place.stage_id);
    }
    let rows = sqlx::query(
        "INSERT INTO leads (inquiry_id, title, name, email, phone, phone_extension, company,
                            message, channel, source, utm, fields, problems, pipeline_id,
                            stage_id, stage_entered_at, created_at, updated_at)
         SELECT i, t, n, e, p, x, c, m, ch, s, u, f, pr, pl, st, $16, $16, $16
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::jsonb[],
                     $13::jsonb[], $14::bigint[], $15::bigint[])
              WITH ORDINALITY AS r(i, t, n, e, p, x, c, m, ch, s, u, f, pr, pl, st, ord)
         ORDER BY ord
         RETURNING id, inquiry_id, stage_id",
    )
    .bind(&inquiry_ids)
    .bind(&titles)
    .bind(&names)
    .bind(&emails)
    .bind(&phones)
    .bind(&extensions)
    .bind(&companies)
    .bind(&messages)
    .bind(&channels)
    .bind(&sources)
    .bind(&utms)
    .bind(&fields)
    .bind(&problems)
    .bind(&pipeline_ids)
    .bind(&stage_ids)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;

    let mut lead_of = HashMap::with_capacity(n);
    let mut history_leads = Vec::with_capacity(n);
    let mut history_stages = Vec::with_capacity(n);
    for row in &rows {
        let lead_id: i64 = row.try_get("id")?;
        lead_of.insert(row.try_get::<Uuid, _>("inquiry_id")?, lead_id);
        history_leads.push(lead_id);
        history_stages.push(row.try_get::<i64, _>("stage_id")?);
    }

    sqlx::query(
        "INSERT INTO lead_stage_history (lead_id, from_stage_id, to_stage_id, changed_at, changed_by, reason)
         SELECT l, NULL, s, $3, 'leadpipe', 'new lead' FROM unnest($1::bigint[], $2::bigint[]) AS t(l, s)",
    )
    .bind(&history_leads)
    .bind(&history_stages)
    .bind(now)
    .execute(&mut **tx)
    .await?;

    let mut activity_leads = Vec::with_capacity(n);
    let mut subjects = Vec::with_capacity(n);
    let mut occurred = Vec::with_capacity(n);
    let mut data = Vec::with_capacity(n);
    for (_, envelope) in leads {
        let inquiry = &envelope.lead.inquiry;
        activity_leads.push(lead_of.get(&inquiry.id.as_uuid()).copied());
        subjects.push(format!(
            "{} inquiry via {}",
            inquiry.channel,
            text(&inquiry.source)
        ));
        occurred.push(inquiry.received_at);
        data.push(json(
            &serde_json::json!({ "attachments": inquiry.attachments }),
        ));
    }
    sqlx::query(
        "INSERT INTO activities (lead_id, kind, channel, inquiry_id, subject, body, occurred_at, data)
         SELECT l, 'inquiry', ch, i, sub, b, at, d
         FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[], $7::jsonb[])
              AS t(l, ch, i, sub, b, at, d)
         WHERE l IS NOT NULL",
    )
    .bind(&activity_leads)
    .bind(&channels)
    .bind(&inquiry_ids)
    .bind(&subjects)
    .bind(&messages)
    .bind(&occurred)
    .bind(&data)
    .execute(&mut **tx)
    .await?;

    Ok(lead_of)
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
