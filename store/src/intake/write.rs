//! Writing a planned batch: inquiries, new leads with their keys and first stage, merges,
//! activities (created, or updated in place by their activity key), conversations and tags.
//!
//! The statements are per batch, not per lead (arrays through `unnest`), so a batch of
//! two hundred costs about as many round trips as a batch of one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use ingest::{ActivityKind, EventRef};
use normalizer::IdentityKey;
use normalizer::matching::{Decision as MatchDecision, Match};
use router::Envelope;
use serde_json::value::RawValue;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::plan::{Placements, Plan, StoredActivity};

/// PostgreSQL refuses NUL in text and jsonb; hostile input may carry it. The raw bytes
/// keep the original, the columns get a visible replacement.
pub(super) fn text(value: &str) -> String {
    value.replace('\0', "\u{FFFD}")
}

pub(super) fn opt_text(value: Option<&str>) -> Option<String> {
    value.map(text)
}

/// JSON text bound as `jsonb` as it is, without being parsed into a tree first.
pub(super) type JsonText = Json<Box<RawValue>>;

/// `value` as `jsonb`, serialised once.
pub(super) fn json<T: serde::Serialize>(value: &T) -> JsonText {
    Json(RawValue::from_string(clean_json(value)).unwrap_or_else(|_| RawValue::NULL.to_owned()))
}

/// `value` as a JSON tree, for a document that other values join before it is written.
fn json_value<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::from_str(&clean_json(value)).unwrap_or(serde_json::Value::Null)
}

fn clean_json<T: serde::Serialize>(value: &T) -> String {
    let encoded = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    // A NUL escaped inside JSON text is refused by jsonb too.
    if encoded.contains("\\u0000") {
        encoded.replace("\\u0000", "\\ufffd")
    } else {
        encoded
    }
}

/// Inserts every inquiry that is not a replay; returns the ids actually inserted.
pub(super) async fn insert_inquiries(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[&Envelope],
    plans: &[Plan],
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
    for (envelope, plan) in batch.iter().zip(plans) {
        let inquiry = &envelope.lead.inquiry;
        let (disposition, original) = match plan {
            Plan::Replay => continue,
            Plan::Spam => ("spam", None),
            Plan::Duplicate(first) => ("duplicate", Some(*first)),
            Plan::Unmatched => ("unmatched", None),
            Plan::Lead(MatchDecision::New { .. }) => ("lead", None),
            Plan::Lead(MatchDecision::Merge { .. }) => ("merged", None),
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

/// Inserts new leads with their person keys and first stage-history row; returns the
/// lead id of each inquiry id.
pub(super) async fn insert_leads(
    tx: &mut Transaction<'_, Postgres>,
    leads: &[(usize, &Envelope, &MatchDecision)],
    placements: &Placements,
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
    let mut repeats = Vec::with_capacity(n);
    let mut contact_ids = Vec::with_capacity(n);
    let mut company_ids = Vec::with_capacity(n);
    let mut previous_ids = Vec::with_capacity(n);
    let mut matches = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    for (_, envelope, decision) in leads {
        let MatchDecision::New {
            contact_id,
            company_id,
            is_repeat,
            previous_lead_id,
            reason,
        } = decision
        else {
            continue;
        };
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
        repeats.push(*is_repeat);
        contact_ids.push(*contact_id);
        company_ids.push(*company_id);
        previous_ids.push(*previous_lead_id);
        matches.push(json(reason));
        tags.push(json(&event_tags(inquiry.event.as_ref())));
    }
    let rows = sqlx::query(
        "INSERT INTO leads (inquiry_id, title, name, email, phone, phone_extension, company,
                            message, channel, source, utm, fields, problems, pipeline_id,
                            stage_id, is_repeat, contact_id, company_id, previous_lead_id, match,
                            tags, stage_entered_at, created_at, updated_at)
         SELECT i, t, n, e, p, x, c, m, ch, s, u, f, pr, pl, st, rep, con, com, prev, mat,
                ARRAY(SELECT jsonb_array_elements_text(tg)), $21, $21, $21
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::jsonb[],
                     $13::jsonb[], $14::bigint[], $15::bigint[], $16::bool[], $17::bigint[],
                     $18::bigint[], $19::bigint[], $20::jsonb[], $22::jsonb[])
              WITH ORDINALITY AS r(i, t, n, e, p, x, c, m, ch, s, u, f, pr, pl, st, rep, con, com, prev, mat, tg, ord)
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
    .bind(&repeats)
    .bind(&contact_ids)
    .bind(&company_ids)
    .bind(&previous_ids)
    .bind(&matches)
    .bind(now)
    .bind(&tags)
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

    let (key_leads, keys): (Vec<i64>, Vec<String>) = leads
        .iter()
        .filter_map(|(_, e, _)| {
            lead_of
                .get(&e.lead.inquiry.id.as_uuid())
                .map(|id| (*id, *e))
        })
        .flat_map(|(id, e)| {
            let keys: BTreeSet<String> = e.lead.identity_keys.iter().map(|k| k.as_key()).collect();
            keys.into_iter().map(move |k| (id, k))
        })
        .unzip();
    insert_new_lead_keys(tx, &key_leads, &keys).await?;
    Ok(lead_of)
}

/// Records the keys of leads created in this transaction, each pair once.
///
/// No pair can be on file already (the leads are new) or twice in the lists (each lead's
/// keys are deduplicated), so the insert goes without a conflict arbiter, which cost a
/// fifth of the statement's time.
async fn insert_new_lead_keys(
    tx: &mut Transaction<'_, Postgres>,
    lead_ids: &[i64],
    keys: &[String],
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO lead_identities (key, lead_id)
         SELECT k, l FROM unnest($1::text[], $2::bigint[]) AS t(k, l)",
    )
    .bind(keys)
    .bind(lead_ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One inquiry merged into an open lead.
pub(super) struct MergeRow<'a> {
    /// Its position in the batch.
    pub(super) index: usize,
    pub(super) lead_id: i64,
    pub(super) reason: &'a Match,
    /// The match was by a strong key: the inquiry's keys find the lead from now on.
    pub(super) adopt_keys: bool,
}

/// Adds merged inquiries to their open leads: counts them, fills fields the lead does
/// not have yet (never overwrites), records the merge as an event with the keys it
/// brought, and lets those keys find the lead only when the match was by a strong key.
///
/// A person's inquiries can reach the store out of the order intake accepted them in (one
/// replica spooled an inquiry, or was killed with it on disk, while another filed the
/// person's next one). The order that counts is acceptance: a merged inquiry accepted
/// before the lead's own becomes the lead's first, taking over what the first inquiry
/// decides (the inquiry, channel, source, UTM, fields, and the title and message unless
/// a person edited them), so the lead reads the same whichever order its inquiries were
/// filed in; the timeline already sorts by acceptance.
pub(super) async fn apply_merges(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[&Envelope],
    merges: &[MergeRow<'_>],
) -> Result<(), sqlx::Error> {
    if merges.is_empty() {
        return Ok(());
    }
    // One update per lead: the count, and the first value each empty field can take.
    struct Fill {
        count: i32,
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        extension: Option<String>,
        company: Option<String>,
        tags: BTreeSet<String>,
        /// The merge accepted first, by its place in `merges`.
        first: usize,
    }
    // Fields fill from the earliest accepted inquiry first, as if filed in that order.
    let mut accepted: Vec<usize> = (0..merges.len()).collect();
    accepted.sort_by_key(|&m| (batch[merges[m].index].lead.inquiry.received_at, m));
    let mut fills: Vec<(i64, Fill)> = Vec::new();
    for m in accepted {
        let merge = &merges[m];
        let (lead, lead_id) = (&batch[merge.index].lead, &merge.lead_id);
        let position = match fills.iter().position(|(id, _)| id == lead_id) {
            Some(p) => p,
            None => {
                fills.push((
                    *lead_id,
                    Fill {
                        count: 0,
                        name: None,
                        email: None,
                        phone: None,
                        extension: None,
                        company: None,
                        tags: BTreeSet::new(),
                        first: m,
                    },
                ));
                fills.len() - 1
            }
        };
        let fill = &mut fills[position].1;
        fill.count += 1;
        fill.name = fill.name.take().or_else(|| opt_text(lead.name.as_deref()));
        fill.email = fill
            .email
            .take()
            .or_else(|| lead.email.as_ref().map(|e| e.as_str().to_owned()));
        if fill.phone.is_none() && lead.phone.is_some() {
            fill.phone = lead.phone.as_ref().map(|p| p.as_str().to_owned());
            fill.extension = opt_text(lead.phone_extension.as_deref());
        }
        fill.company = fill
            .company
            .take()
            .or_else(|| opt_text(lead.company.as_deref()));
        fill.tags.extend(event_tags(lead.inquiry.event.as_ref()));
    }
    let ids: Vec<i64> = fills.iter().map(|(id, _)| *id).collect();
    let counts: Vec<i32> = fills.iter().map(|(_, f)| f.count).collect();
    let names: Vec<Option<String>> = fills.iter().map(|(_, f)| f.name.clone()).collect();
    let emails: Vec<Option<String>> = fills.iter().map(|(_, f)| f.email.clone()).collect();
    let phones: Vec<Option<String>> = fills.iter().map(|(_, f)| f.phone.clone()).collect();
    let extensions: Vec<Option<String>> = fills.iter().map(|(_, f)| f.extension.clone()).collect();
    let companies: Vec<Option<String>> = fills.iter().map(|(_, f)| f.company.clone()).collect();
    let tags: Vec<JsonText> = fills.iter().map(|(_, f)| json(&f.tags)).collect();
    let firsts: Vec<&Envelope> = fills
        .iter()
        .map(|(_, f)| batch[merges[f.first].index])
        .collect();
    let first_ids: Vec<Uuid> = firsts.iter().map(|e| e.lead.inquiry.id.as_uuid()).collect();
    let first_received: Vec<DateTime<Utc>> =
        firsts.iter().map(|e| e.lead.inquiry.received_at).collect();
    let first_titles: Vec<String> = firsts.iter().map(|e| text(&e.lead.title())).collect();
    let first_messages: Vec<Option<String>> = firsts
        .iter()
        .map(|e| opt_text(e.lead.message.as_deref()))
        .collect();
    let first_channels: Vec<&str> = firsts
        .iter()
        .map(|e| e.lead.inquiry.channel.as_str())
        .collect();
    let first_sources: Vec<String> = firsts
        .iter()
        .map(|e| text(&e.lead.inquiry.source))
        .collect();
    let first_utms: Vec<JsonText> = firsts.iter().map(|e| json(&e.lead.inquiry.utm)).collect();
    let first_fields: Vec<JsonText> = firsts
        .iter()
        .map(|e| json(&e.lead.inquiry.fields))
        .collect();
    // `o` reads the lead before the update: its first inquiry's acceptance time, and the
    // fields a person has edited (those keep the person's value).
    let reordered = sqlx::query(
        "WITH u AS (
             SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::jsonb[], $9::uuid[],
                                  $10::timestamptz[], $11::text[], $12::text[], $13::text[],
                                  $14::text[], $15::jsonb[], $16::jsonb[])
                 AS u(id, n, name, email, phone, ext, company, tags, inq, received, title,
                      message, channel, source, utm, fields)
         ),
         o AS (
             SELECT l.id, l.inquiry_id AS previous,
                    COALESCE(u.received < i.received_at, false) AS earlier,
                    -- Edits are looked up only for a lead whose first inquiry changes.
                    CASE WHEN u.received < i.received_at THEN
                        ARRAY(SELECT f FROM lead_events e, jsonb_array_elements_text(
                                  CASE WHEN jsonb_typeof(e.data->'fields') = 'array'
                                       THEN e.data->'fields' ELSE '[]' END) AS f
                              WHERE e.lead_id = l.id AND e.kind = 'updated')
                    ELSE '{}'::text[] END AS edited
             FROM leads l JOIN u ON u.id = l.id
             LEFT JOIN inquiries i ON i.id = l.inquiry_id
         )
         UPDATE leads SET
            inquiry_count = leads.inquiry_count + u.n,
            -- An earlier inquiry taking over as the first gives the lead its details, as
            -- if filed in order (a thread belongs to whoever started it); others fill gaps.
            name = CASE WHEN o.earlier AND NOT 'name' = ANY(o.edited)
                        THEN COALESCE(u.name, leads.name) ELSE COALESCE(leads.name, u.name) END,
            email = CASE WHEN o.earlier AND NOT 'email' = ANY(o.edited)
                         THEN COALESCE(u.email, leads.email) ELSE COALESCE(leads.email, u.email) END,
            phone_extension = CASE
                WHEN leads.phone IS NULL THEN u.ext
                WHEN o.earlier AND NOT 'phone' = ANY(o.edited) AND u.phone IS NOT NULL THEN u.ext
                ELSE leads.phone_extension END,
            phone = CASE WHEN o.earlier AND NOT 'phone' = ANY(o.edited)
                         THEN COALESCE(u.phone, leads.phone) ELSE COALESCE(leads.phone, u.phone) END,
            company = CASE WHEN o.earlier AND NOT 'company' = ANY(o.edited)
                           THEN COALESCE(u.company, leads.company)
                           ELSE COALESCE(leads.company, u.company) END,
            tags = ARRAY(SELECT DISTINCT t FROM unnest(
                       leads.tags || ARRAY(SELECT jsonb_array_elements_text(u.tags))) AS t
                     ORDER BY t),
            inquiry_id = CASE WHEN o.earlier THEN u.inq ELSE leads.inquiry_id END,
            channel = CASE WHEN o.earlier THEN u.channel ELSE leads.channel END,
            source = CASE WHEN o.earlier THEN u.source ELSE leads.source END,
            utm = CASE WHEN o.earlier THEN u.utm ELSE leads.utm END,
            fields = CASE WHEN o.earlier THEN u.fields ELSE leads.fields END,
            title = CASE WHEN o.earlier AND NOT 'title' = ANY(o.edited)
                         THEN u.title ELSE leads.title END,
            message = CASE WHEN o.earlier AND NOT 'message' = ANY(o.edited)
                           THEN u.message ELSE leads.message END,
            updated_at = now()
         FROM u JOIN o ON o.id = u.id
         WHERE leads.id = u.id
         RETURNING leads.id, o.previous, u.inq, o.earlier",
    )
    .bind(&ids)
    .bind(&counts)
    .bind(&names)
    .bind(&emails)
    .bind(&phones)
    .bind(&extensions)
    .bind(&companies)
    .bind(&tags)
    .bind(&first_ids)
    .bind(&first_received)
    .bind(&first_titles)
    .bind(&first_messages)
    .bind(&first_channels)
    .bind(&first_sources)
    .bind(&first_utms)
    .bind(&first_fields)
    .fetch_all(&mut **tx)
    .await?;
    reorder_first_inquiries(tx, &reordered).await?;

    let event_leads: Vec<i64> = merges.iter().map(|m| m.lead_id).collect();
    let event_inquiries: Vec<Uuid> = merges
        .iter()
        .map(|m| batch[m.index].lead.inquiry.id.as_uuid())
        .collect();
    let event_data: Vec<JsonText> = merges
        .iter()
        .map(|m| {
            let inquiry = &batch[m.index].lead.inquiry;
            let keys: Vec<String> = batch[m.index]
                .lead
                .identity_keys
                .iter()
                .map(IdentityKey::as_key)
                .collect();
            json(&serde_json::json!({
                "match": m.reason,
                "reason": m.reason.describe(),
                "channel": inquiry.channel,
                "source": inquiry.source,
                "keys": keys,
                "keys_adopted": m.adopt_keys,
            }))
        })
        .collect();
    let rows = sqlx::query(
        "INSERT INTO lead_events (lead_id, kind, inquiry_id, data)
         SELECT l, 'merged', i, d FROM unnest($1::bigint[], $2::uuid[], $3::jsonb[]) AS t(l, i, d)
         RETURNING id, inquiry_id",
    )
    .bind(&event_leads)
    .bind(&event_inquiries)
    .bind(&event_data)
    .fetch_all(&mut **tx)
    .await?;
    let mut event_of: HashMap<Uuid, i64> = HashMap::with_capacity(rows.len());
    for row in &rows {
        event_of.insert(row.try_get("inquiry_id")?, row.try_get("id")?);
    }

    // Every key the inquiry brought is recorded with its merge; adopted ones find the lead.
    let mut event_ids = Vec::new();
    let mut key_leads = Vec::new();
    let mut keys = Vec::new();
    let mut adopted = Vec::new();
    for merge in merges {
        let lead = &batch[merge.index].lead;
        let Some(&event_id) = event_of.get(&lead.inquiry.id.as_uuid()) else {
            continue;
        };
        for key in lead.identity_keys.iter().map(IdentityKey::as_key) {
            event_ids.push(event_id);
            key_leads.push(merge.lead_id);
            keys.push(key);
            adopted.push(merge.adopt_keys);
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH recorded AS (
             INSERT INTO lead_event_keys (event_id, key, adopted)
             SELECT e, k, a FROM unnest($1::bigint[], $2::text[], $3::bool[]) AS t(e, k, a)
             ON CONFLICT DO NOTHING
         )
         INSERT INTO lead_identities (key, lead_id, added_by_event)
         SELECT k, l, e FROM unnest($1::bigint[], $2::text[], $3::bool[], $4::bigint[])
              AS t(e, k, a, l)
         WHERE a
         ON CONFLICT DO NOTHING",
    )
    .bind(&event_ids)
    .bind(&keys)
    .bind(&adopted)
    .bind(&key_leads)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records, for each lead whose first inquiry changed, the change on the lead and in
/// the inquiries' dispositions (the new first made the lead, the old one merged).
async fn reorder_first_inquiries(
    tx: &mut Transaction<'_, Postgres>,
    updated: &[sqlx::postgres::PgRow],
) -> Result<(), sqlx::Error> {
    let mut leads = Vec::new();
    let mut previous = Vec::new();
    let mut firsts = Vec::new();
    for row in updated {
        if row.try_get::<bool, _>("earlier")? {
            leads.push(row.try_get::<i64, _>("id")?);
            previous.push(row.try_get::<Option<Uuid>, _>("previous")?);
            firsts.push(row.try_get::<Uuid, _>("inq")?);
        }
    }
    if leads.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH moved AS (
             SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::uuid[]) AS t(lead, previous, first)
         ),
         events AS (
             INSERT INTO lead_events (lead_id, kind, inquiry_id, data)
             SELECT lead, 'first_inquiry_changed', first,
                    jsonb_build_object(
                        'previous', previous,
                        'reason', 'accepted before the lead''s first inquiry but filed after it')
             FROM moved
         )
         UPDATE inquiries SET disposition = CASE WHEN inquiries.id = m.first THEN 'lead'
                                                 ELSE 'merged' END
         FROM moved m
         WHERE inquiries.id = m.first OR inquiries.id = m.previous",
    )
    .bind(&leads)
    .bind(&previous)
    .bind(&firsts)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The activity key an envelope's event names, as stored.
pub(super) fn activity_key(envelope: &Envelope) -> Option<String> {
    let event = envelope.lead.inquiry.event.as_ref()?;
    event.activity_key.as_deref().map(text)
}

/// The tags an event adds to its lead, cleaned, sorted and without repeats.
fn event_tags(event: Option<&EventRef>) -> BTreeSet<String> {
    event
        .into_iter()
        .flat_map(|e| e.tags.iter())
        .map(|t| text(t.trim()))
        .filter(|t| !t.is_empty())
        .collect()
}

/// A filed envelope and the lead it went to (`merged`: why, when it joined a lead).
pub(super) struct Filed<'a> {
    pub(super) lead_id: i64,
    pub(super) envelope: &'a Envelope,
    pub(super) merged: Option<&'a Match>,
}

/// An activity as it will be written: new (`id` none) or stored and updated.
struct ActivityState {
    id: Option<i64>,
    lead_id: i64,
    kind: ActivityKind,
    channel: &'static str,
    inquiry_id: Uuid,
    key: Option<String>,
    subject: Option<String>,
    body: Option<String>,
    occurred_at: DateTime<Utc>,
    order: Option<i64>,
    data: serde_json::Map<String, serde_json::Value>,
    field_orders: BTreeMap<String, i64>,
}

impl ActivityState {
    /// The activity a filed envelope creates.
    fn created(filed: &Filed<'_>) -> Self {
        let inquiry = &filed.envelope.lead.inquiry;
        let event = inquiry.event.as_ref();
        let mut data = serde_json::Map::new();
        data.insert("attachments".into(), json_value(&inquiry.attachments));
        data.insert("merged".into(), json_value(&filed.merged));
        data.extend(event.map(|e| e.data.clone()).unwrap_or_default());
        let field_orders = event.map_or_else(BTreeMap::new, |e| {
            e.data
                .keys()
                .filter_map(|name| Some((name.clone(), e.field_order(name)?)))
                .collect()
        });
        Self {
            id: None,
            lead_id: filed.lead_id,
            kind: event.map_or(ActivityKind::of_channel(inquiry.channel), |e| e.kind),
            channel: inquiry.channel.as_str(),
            inquiry_id: inquiry.id.as_uuid(),
            key: activity_key(filed.envelope),
            subject: match event {
                // A mail's subject is what its sender wrote, nothing included.
                Some(e) if e.kind == ActivityKind::Email => e.subject.clone(),
                _ => Some(event.and_then(|e| e.subject.clone()).unwrap_or_else(|| {
                    format!("{} inquiry via {}", inquiry.channel, inquiry.source)
                })),
            },
            body: filed.envelope.lead.message.clone(),
            occurred_at: event
                .and_then(|e| e.occurred_at)
                .unwrap_or(inquiry.received_at),
            order: event.and_then(|e| e.order),
            data,
            field_orders,
        }
    }

    /// A stored activity that an event of this batch updates.
    fn stored(key: &str, stored: &StoredActivity, envelope: &Envelope) -> Self {
        let inquiry = &envelope.lead.inquiry;
        Self {
            id: Some(stored.id),
            lead_id: stored.lead_id,
            kind: ActivityKind::of_channel(inquiry.channel),
            channel: inquiry.channel.as_str(),
            inquiry_id: inquiry.id.as_uuid(),
            key: Some(key.to_owned()),
            subject: stored.subject.clone(),
            body: stored.body.clone(),
            occurred_at: stored.occurred_at,
            order: stored.order,
            data: stored.data.clone(),
            field_orders: stored.field_orders.clone(),
        }
    }

    /// Applies a later-filed event of the same activity. A newer event (higher order, or
    /// arriving later where neither has one) replaces what it carries; an older one only
    /// fills what is missing, so a late older event never overwrites a newer one. The
    /// activity keeps the time it began.
    fn apply(&mut self, envelope: &Envelope) {
        let inquiry = &envelope.lead.inquiry;
        if let Some(event) = inquiry.event.as_ref() {
            self.apply_event(event, envelope.lead.message.clone(), inquiry.received_at);
        }
    }

    /// [`Self::apply`] for an event and the text of its inquiry, received at `received_at`.
    fn apply_event(&mut self, event: &EventRef, body: Option<String>, received_at: DateTime<Utc>) {
        let before = self.order;
        let newer = is_newer(event.order, before);
        let subject = event.subject.clone();
        if newer {
            self.subject = subject.or(self.subject.take());
            self.body = body.or(self.body.take());
            self.order = event.order.or(self.order);
        } else {
            self.subject = self.subject.take().or(subject);
            self.body = self.body.take().or(body);
        }
        // Each field by its own order (the event's unless it names one): a newer value
        // replaces, an older one only fills what is missing.
        for (name, value) in &event.data {
            let theirs = event.field_order(name);
            let present = self.data.contains_key(name);
            let ours = self.field_orders.get(name).copied().or(before);
            if !present || is_newer(theirs, ours) {
                self.data.insert(name.clone(), value.clone());
                match theirs {
                    Some(order) => self.field_orders.insert(name.clone(), order),
                    None => self.field_orders.remove(name),
                };
            }
        }
        self.occurred_at = self
            .occurred_at
            .min(event.occurred_at.unwrap_or(received_at));
    }
}

/// Whether an event of order `theirs` is newer than what has order `ours`: a higher
/// order, or, where neither has one, the later arrival; an event without an order is
/// never newer than one with.
fn is_newer(theirs: Option<i64>, ours: Option<i64>) -> bool {
    match (theirs, ours) {
        (Some(new), Some(old)) => new > old,
        (Some(_), None) | (None, None) => true,
        (None, Some(_)) => false,
    }
}

/// Files each envelope as an activity on its lead: a new one, or, for an event whose
/// activity key is already filed (stored, or earlier in this batch), the same activity
/// updated in place. Answers the lead of each waiting follow-up a new activity took in,
/// by inquiry id.
pub(super) async fn write_activities(
    tx: &mut Transaction<'_, Postgres>,
    filed: &[Filed<'_>],
    stored: &HashMap<String, StoredActivity>,
) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let mut states: Vec<ActivityState> = Vec::with_capacity(filed.len());
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for row in filed {
        match activity_key(row.envelope) {
            Some(key) if by_key.contains_key(&key) => states[by_key[&key]].apply(row.envelope),
            Some(key) if stored.contains_key(&key) => {
                let mut state = ActivityState::stored(&key, &stored[&key], row.envelope);
                state.apply(row.envelope);
                by_key.insert(key, states.len());
                states.push(state);
            }
            key => {
                if let Some(key) = key {
                    by_key.insert(key, states.len());
                }
                states.push(ActivityState::created(row));
            }
        }
    }

    let adopted = adopt_follow_ups(tx, &mut states, &by_key).await?;

    let (updates, inserts): (Vec<&ActivityState>, Vec<&ActivityState>) =
        states.iter().partition(|s| s.id.is_some());
    if !inserts.is_empty() {
        let lead_ids: Vec<i64> = inserts.iter().map(|s| s.lead_id).collect();
        let kinds: Vec<&str> = inserts.iter().map(|s| s.kind.as_str()).collect();
        let channels: Vec<&str> = inserts.iter().map(|s| s.channel).collect();
        let inquiry_ids: Vec<Uuid> = inserts.iter().map(|s| s.inquiry_id).collect();
        let keys: Vec<Option<String>> =
            inserts.iter().map(|s| opt_text(s.key.as_deref())).collect();
        let content = ActivityContent::of(&inserts);
        sqlx::query(
            "INSERT INTO activities (lead_id, kind, channel, inquiry_id, activity_key, subject,
                                     body, occurred_at, event_order, data, field_orders)
             SELECT l, k, ch, i, ak, sub, b, at, o, d, fo
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[],
                         $7::text[], $8::timestamptz[], $9::bigint[], $10::jsonb[], $11::jsonb[])
                  WITH ORDINALITY AS t(l, k, ch, i, ak, sub, b, at, o, d, fo, n)
             ORDER BY n",
        )
        .bind(&lead_ids)
        .bind(&kinds)
        .bind(&channels)
        .bind(&inquiry_ids)
        .bind(&keys)
        .bind(&content.subjects)
        .bind(&content.bodies)
        .bind(&content.occurred)
        .bind(&content.orders)
        .bind(&content.data)
        .bind(&content.field_orders)
        .execute(&mut **tx)
        .await?;
    }
    if !updates.is_empty() {
        let ids: Vec<i64> = updates.iter().filter_map(|s| s.id).collect();
        let content = ActivityContent::of(&updates);
        sqlx::query(
            "UPDATE activities a
             SET subject = u.sub, body = u.b, occurred_at = u.at, event_order = u.o, data = u.d,
                 field_orders = u.fo
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[],
                         $6::jsonb[], $7::jsonb[]) AS u(id, sub, b, at, o, d, fo)
             WHERE a.id = u.id",
        )
        .bind(&ids)
        .bind(&content.subjects)
        .bind(&content.bodies)
        .bind(&content.occurred)
        .bind(&content.orders)
        .bind(&content.data)
        .bind(&content.field_orders)
        .execute(&mut **tx)
        .await?;
    }
    Ok(adopted)
}

/// A follow-up kept as `unmatched` that an activity of this batch takes in.
#[derive(sqlx::FromRow)]
struct WaitingFollowUp {
    id: Uuid,
    activity_key: String,
    event: Json<EventRef>,
    message: Option<String>,
    received_at: DateTime<Utc>,
    channel: String,
    source: String,
}

/// Puts on each activity this batch creates the follow-ups of it that were kept as
/// `unmatched` because they came first (a call's recording callback before any status of
/// the call), in the order they arrived, and files them on its lead as merged: a
/// follow-up waits for its activity, it is never lost to an order of delivery.
async fn adopt_follow_ups(
    tx: &mut Transaction<'_, Postgres>,
    states: &mut [ActivityState],
    by_key: &HashMap<String, usize>,
) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let new_keys: Vec<&str> = by_key
        .iter()
        .filter(|(_, i)| states[**i].id.is_none())
        .map(|(key, _)| key.as_str())
        .collect();
    if new_keys.is_empty() {
        return Ok(HashMap::new());
    }
    let mut waiting: Vec<WaitingFollowUp> = sqlx::query_as(
        "UPDATE inquiries SET disposition = 'merged'
         WHERE disposition = 'unmatched' AND payload->'event'->>'activity_key' = ANY($1)
         RETURNING id, payload->'event'->>'activity_key' AS activity_key,
                   payload->'event' AS event, payload->>'message' AS message, received_at,
                   channel, source",
    )
    .bind(&new_keys)
    .fetch_all(&mut **tx)
    .await?;
    if waiting.is_empty() {
        return Ok(HashMap::new());
    }
    waiting.sort_by_key(|w| w.received_at);
    let (mut leads, mut inquiries, mut data) = (Vec::new(), Vec::new(), Vec::new());
    for w in waiting {
        let Some(&i) = by_key.get(&w.activity_key) else {
            continue;
        };
        states[i].apply_event(&w.event, w.message, w.received_at);
        leads.push(states[i].lead_id);
        inquiries.push(w.id);
        data.push(json(&serde_json::json!({
            "match": "follow_up",
            "reason": "a follow-up filed before the activity it belongs to, taken in once that was filed",
            "channel": w.channel,
            "source": w.source,
            "activity_key": w.activity_key,
        })));
    }
    sqlx::query(
        "WITH filed AS (
             INSERT INTO lead_events (lead_id, kind, inquiry_id, data)
             SELECT l, 'merged', i, d FROM unnest($1::bigint[], $2::uuid[], $3::jsonb[]) AS t(l, i, d)
         )
         UPDATE leads SET inquiry_count = leads.inquiry_count + c.n
         FROM (SELECT l, count(*)::int AS n FROM unnest($1::bigint[]) AS l GROUP BY l) AS c
         WHERE leads.id = c.l",
    )
    .bind(&leads)
    .bind(&inquiries)
    .bind(&data)
    .execute(&mut **tx)
    .await?;
    Ok(inquiries.into_iter().zip(leads).collect())
}

/// Records the conversation keys of each filed event for the lead it went to; a key
/// already recorded keeps its lead.
pub(super) async fn record_conversations(
    tx: &mut Transaction<'_, Postgres>,
    filed: &[Filed<'_>],
) -> Result<(), sqlx::Error> {
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    let mut lead_ids = Vec::new();
    let mut inquiry_ids = Vec::new();
    for row in filed {
        let inquiry = &row.envelope.lead.inquiry;
        for key in inquiry.event.iter().flat_map(|e| e.conversation.iter()) {
            let key = text(&key.as_key());
            if seen.insert(key.clone()) {
                keys.push(key);
                lead_ids.push(row.lead_id);
                inquiry_ids.push(inquiry.id.as_uuid());
            }
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO lead_conversations (key, lead_id, inquiry_id)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::uuid[])
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(&keys)
    .bind(&lead_ids)
    .bind(&inquiry_ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
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
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a EventRef>,
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
    company_keys: Vec<String>,
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
                company_keys: lead.company_keys.iter().map(|k| k.as_key()).collect(),
            },
            route: &envelope.route,
            published_at: envelope.published_at,
            event: inquiry.event.as_ref(),
        }
    }
}

/// What activities record, one array per column, for a statement over many of them.
struct ActivityContent {
    subjects: Vec<Option<String>>,
    bodies: Vec<Option<String>>,
    occurred: Vec<DateTime<Utc>>,
    orders: Vec<Option<i64>>,
    data: Vec<JsonText>,
    field_orders: Vec<JsonText>,
}

impl ActivityContent {
    fn of(states: &[&ActivityState]) -> Self {
        Self {
            subjects: states
                .iter()
                .map(|s| opt_text(s.subject.as_deref()))
                .collect(),
            bodies: states.iter().map(|s| opt_text(s.body.as_deref())).collect(),
            occurred: states.iter().map(|s| s.occurred_at).collect(),
            orders: states.iter().map(|s| s.order).collect(),
            data: states.iter().map(|s| json(&s.data)).collect(),
            field_orders: states.iter().map(|s| json(&s.field_orders)).collect(),
        }
    }
}
