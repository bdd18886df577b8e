//! Planning a batch: the locks it takes, what it looks up under them, and what becomes of
//! each envelope (replay, spam, duplicate, a new lead or a merge), decided before anything
//! is written.
//!
//! Before looking anything up, the transaction takes advisory locks on every person key,
//! content key, conversation key and activity key of the batch, in sorted order, and after
//! finding the contacts those keys belong to, on those contacts: two consumers (or
//! replicas) filing the same person, or two events of one conversation, at the same moment
//! take turns, so they end with one lead.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use ingest::ConversationKey;
use normalizer::matching::{Decision as MatchDecision, Directory, Person, decide, dialled_number};
use normalizer::{CompanyKey, IdentityKey};
use router::Envelope;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::write::{activity_key, text};
use crate::error::StoreError;

/// Why a transaction filed nothing: the error, and the envelope at fault when known.
pub(super) struct Failure {
    pub(super) error: StoreError,
    pub(super) index: Option<usize>,
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self {
            error: error.into(),
            index: None,
        }
    }
}

/// Pipeline and stage ids a route resolves to.
#[derive(Clone, Copy)]
pub(super) struct Placement {
    pub(super) pipeline_id: i64,
    pub(super) stage_id: i64,
}

/// Placements by route (pipeline, stage).
pub(super) type Placements = HashMap<(String, Option<String>), Placement>;

/// A source and a content hash: what makes two inquiries "the same submission".
type ContentKey = (String, String);

/// What becomes of one envelope, decided before anything is written.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Plan {
    Replay,
    Spam,
    Duplicate(Uuid),
    /// A follow-up event with no lead to add to: kept, starts none.
    Unmatched,
    /// A lead decision; a merge target below zero is a lead created earlier in this batch
    /// (`-1 - index`).
    Lead(MatchDecision),
}

/// What the batch's look-ups found, kept up to date as the batch is decided so that later
/// envelopes see the leads earlier ones create.
#[derive(Default)]
struct Snapshot {
    /// Open or frozen leads by look-up key, oldest first.
    open: HashMap<String, Vec<i64>>,
    closed: HashMap<String, i64>,
    contacts: HashMap<String, i64>,
    contact_leads: HashMap<i64, i64>,
    contact_company: HashMap<i64, i64>,
    /// Companies by company key, including the `phone:` numbers they list.
    companies: HashMap<String, i64>,
    lead_people: HashMap<i64, Person>,
    contact_people: HashMap<i64, Person>,
    /// The lead of each conversation key, by its string.
    conversations: HashMap<String, i64>,
    /// The lead of each activity key.
    activity_leads: HashMap<String, i64>,
    /// The activities the batch's activity keys name, as stored.
    activities: HashMap<String, StoredActivity>,
}

impl Snapshot {
    /// Lets `keys` find `lead_id` from now on.
    fn add_lead_keys(&mut self, lead_id: i64, keys: &[IdentityKey]) {
        for key in keys {
            let leads = self.open.entry(key.as_key()).or_default();
            if !leads.contains(&lead_id) {
                leads.push(lead_id);
            }
        }
        if let Some(person) = self.lead_people.get_mut(&lead_id) {
            for key in keys.iter().filter(|k| k.is_strong()) {
                if !person.strong_keys.contains(key) {
                    person.strong_keys.push(key.clone());
                }
            }
        }
    }
}

impl Directory for Snapshot {
    fn open_leads(&self, key: &IdentityKey) -> Vec<i64> {
        self.open.get(&key.as_key()).cloned().unwrap_or_default()
    }
    fn contact(&self, key: &IdentityKey) -> Option<i64> {
        self.contacts.get(&key.as_key()).copied()
    }
    fn open_lead_of_contact(&self, contact_id: i64) -> Option<i64> {
        self.contact_leads.get(&contact_id).copied()
    }
    fn company_of_contact(&self, contact_id: i64) -> Option<i64> {
        self.contact_company.get(&contact_id).copied()
    }
    fn company(&self, key: &CompanyKey) -> Option<i64> {
        self.companies.get(&key.as_key()).copied()
    }
    fn company_by_phone(&self, number: &str) -> Option<i64> {
        self.companies.get(&CompanyKey::phone_key(number)).copied()
    }
    fn closed_lead(&self, key: &IdentityKey) -> Option<i64> {
        self.closed.get(&key.as_key()).copied()
    }
    fn lead_person(&self, lead_id: i64) -> Option<&Person> {
        self.lead_people.get(&lead_id)
    }
    fn contact_person(&self, contact_id: i64) -> Option<&Person> {
        self.contact_people.get(&contact_id)
    }
    fn activity_lead(&self, activity_key: &str) -> Option<i64> {
        self.activity_leads.get(&text(activity_key)).copied()
    }
    fn conversation_lead(&self, key: &ConversationKey) -> Option<i64> {
        self.conversations.get(&text(&key.as_key())).copied()
    }
}

fn person(name: Option<String>, stored_keys: Vec<String>) -> Person {
    Person {
        name,
        strong_keys: stored_keys
            .iter()
            .filter_map(|k| IdentityKey::from_stored(k))
            .filter(IdentityKey::is_strong)
            .collect(),
    }
}

/// An activity an event may update in place, as stored.
#[derive(Clone, Debug)]
pub(super) struct StoredActivity {
    pub(super) id: i64,
    pub(super) lead_id: i64,
    pub(super) subject: Option<String>,
    pub(super) body: Option<String>,
    pub(super) occurred_at: DateTime<Utc>,
    pub(super) order: Option<i64>,
    pub(super) data: serde_json::Map<String, serde_json::Value>,
    /// The order of each data field whose order is not `order` (migration 0010).
    pub(super) field_orders: std::collections::BTreeMap<String, i64>,
}

/// What planning a batch decided, and what writing it needs of the look-ups.
pub(super) struct Planned {
    /// One plan per envelope, in batch order.
    pub(super) plans: Vec<Plan>,
    /// Where new leads go.
    pub(super) placements: Placements,
    /// The stored activities the batch's events update.
    pub(super) activities: HashMap<String, StoredActivity>,
}

/// Takes the batch's locks, looks up what it needs under them, and decides every
/// envelope in batch order, each seeing what the ones before it decided.
pub(super) async fn plan_batch(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[&Envelope],
    max_locks: usize,
) -> Result<Planned, Failure> {
    let db = Failure::from;

    let person_keys: Vec<String> = batch
        .iter()
        .flat_map(|e| e.lead.identity_keys.iter().map(IdentityKey::as_key))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Company keys, and the numbers dialled: a company may list one as its own.
    let company_keys: Vec<String> = batch
        .iter()
        .flat_map(|e| {
            e.lead.company_keys.iter().map(CompanyKey::as_key).chain(
                e.lead
                    .identity_keys
                    .iter()
                    .filter_map(dialled_number)
                    .map(CompanyKey::phone_key),
            )
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let conversation_keys: Vec<String> = batch
        .iter()
        .filter_map(|e| e.lead.inquiry.event.as_ref())
        .flat_map(|event| event.conversation.iter().map(|k| text(&k.as_key())))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let activity_keys: Vec<String> = batch
        .iter()
        .filter_map(|e| activity_key(e))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    // Sorted, so two batches never wait on each other in a cycle.
    let lock_keys: Vec<String> = batch
        .iter()
        .flat_map(|e| lock_keys(e))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    lock_in_order(tx, &lock_keys).await.map_err(db)?;

    let ids: Vec<Uuid> = batch.iter().map(|e| e.lead.inquiry.id.as_uuid()).collect();
    let stored: HashSet<Uuid> =
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM inquiries WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await
            .map_err(db)?
            .into_iter()
            .collect();

    let mut originals = content_originals(tx, batch).await.map_err(db)?;
    // The contacts a part's keys belong to are locked too; a part of several envelopes
    // that would then go over its lock budget is filed in halves instead.
    let budget = if batch.len() > 1 {
        max_locks.saturating_sub(lock_keys.len())
    } else {
        usize::MAX
    };
    let mut snapshot = look_up(tx, &person_keys, &company_keys, budget).await?;
    look_up_conversations(tx, &mut snapshot, &conversation_keys, &activity_keys)
        .await
        .map_err(db)?;

    let mut seen = HashSet::new();
    let mut plans = Vec::with_capacity(batch.len());
    for (index, envelope) in batch.iter().enumerate() {
        let inquiry = &envelope.lead.inquiry;
        let id = inquiry.id.as_uuid();
        let plan = if stored.contains(&id) || !seen.insert(id) {
            Plan::Replay
        } else if inquiry.spam.is_some() {
            Plan::Spam
        } else if let Some(first) = repeated_content(&mut originals, envelope) {
            Plan::Duplicate(first)
        } else {
            let decision = decide(&envelope.lead, &snapshot);
            let follow_up = inquiry.event.as_ref().is_some_and(|e| e.follow_up);
            if follow_up && matches!(decision, MatchDecision::New { .. }) {
                plans.push(Plan::Unmatched);
                continue;
            }
            // Later inquiries in the batch see what this one changes, as they would in the
            // next batch.
            let target = match &decision {
                MatchDecision::New { contact_id, .. } => {
                    let placeholder = -1 - index as i64;
                    snapshot
                        .lead_people
                        .insert(placeholder, Person::of(&envelope.lead));
                    snapshot.add_lead_keys(placeholder, &envelope.lead.identity_keys);
                    if let Some(contact_id) = contact_id {
                        snapshot
                            .contact_leads
                            .entry(*contact_id)
                            .or_insert(placeholder);
                    }
                    placeholder
                }
                MatchDecision::Merge {
                    lead_id,
                    adopt_keys,
                    ..
                } => {
                    if *adopt_keys {
                        snapshot.add_lead_keys(*lead_id, &envelope.lead.identity_keys);
                    }
                    *lead_id
                }
            };
            if let Some(event) = &inquiry.event {
                for key in &event.conversation {
                    let key = text(&key.as_key());
                    snapshot.conversations.entry(key).or_insert(target);
                }
                if let Some(key) = activity_key(envelope) {
                    snapshot.activity_leads.entry(key).or_insert(target);
                }
            }
            Plan::Lead(decision)
        };
        plans.push(plan);
    }

    // Resolve routes first: an unknown pipeline is this envelope's fault, not the batch's.
    let mut placements = Placements::new();
    for (index, (envelope, plan)) in batch.iter().zip(&plans).enumerate() {
        if let Plan::Lead(MatchDecision::New { .. }) = plan {
            placement(
                tx,
                &mut placements,
                &envelope.route.pipeline,
                envelope.route.stage.as_deref(),
            )
            .await
            .map_err(|error| Failure {
                error,
                index: Some(index),
            })?;
        }
    }
    Ok(Planned {
        plans,
        placements,
        activities: snapshot.activities,
    })
}

/// The advisory lock keys an envelope needs: its content key (so replicas agree on which
/// copy of a double click is the original), its person keys, and its conversation and
/// activity keys (so two events of a new conversation, filed on two shards, make one lead).
pub(super) fn lock_keys(envelope: &Envelope) -> Vec<String> {
    let inquiry = &envelope.lead.inquiry;
    let event = inquiry.event.as_ref().filter(|_| inquiry.spam.is_none());
    let conversation = event
        .into_iter()
        .flat_map(|e| e.conversation.iter())
        .map(|k| format!("conversation\u{1f}{}", text(&k.as_key())));
    let activity = event
        .and_then(|_| activity_key(envelope))
        .map(|k| format!("activity\u{1f}{k}"));
    inquiry
        .dedup
        .as_ref()
        .filter(|_| inquiry.spam.is_none())
        .map(|d| format!("dedup\u{1f}{}\u{1f}{}", inquiry.source, d.key))
        .into_iter()
        .chain(
            envelope
                .lead
                .identity_keys
                .iter()
                .map(|k| format!("person\u{1f}{}", k.as_key())),
        )
        .chain(conversation)
        .chain(activity)
        .collect()
}

/// The leads of the batch's conversation keys, and the activities its activity keys name
/// (read under their locks, so no other transaction is filing them meanwhile).
async fn look_up_conversations(
    tx: &mut Transaction<'_, Postgres>,
    snapshot: &mut Snapshot,
    conversation_keys: &[String],
    activity_keys: &[String],
) -> Result<(), sqlx::Error> {
    if !conversation_keys.is_empty() {
        let rows = sqlx::query("SELECT key, lead_id FROM lead_conversations WHERE key = ANY($1)")
            .bind(conversation_keys)
            .fetch_all(&mut **tx)
            .await?;
        for row in rows {
            snapshot
                .conversations
                .insert(row.try_get("key")?, row.try_get("lead_id")?);
        }
    }
    if !activity_keys.is_empty() {
        let rows = sqlx::query(
            "SELECT id, lead_id, activity_key, subject, body, occurred_at, event_order, data,
                    field_orders
             FROM activities WHERE activity_key = ANY($1)",
        )
        .bind(activity_keys)
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let key: String = row.try_get("activity_key")?;
            let data = match row.try_get::<serde_json::Value, _>("data")? {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            };
            let stored = StoredActivity {
                id: row.try_get("id")?,
                lead_id: row.try_get("lead_id")?,
                subject: row.try_get("subject")?,
                body: row.try_get("body")?,
                occurred_at: row.try_get("occurred_at")?,
                order: row.try_get("event_order")?,
                data,
                // A map that does not read (written by hand) falls back to `event_order`.
                field_orders: serde_json::from_value(row.try_get("field_orders")?)
                    .unwrap_or_default(),
            };
            snapshot.activity_leads.insert(key.clone(), stored.lead_id);
            snapshot.activities.insert(key, stored);
        }
    }
    Ok(())
}

/// Earlier inquiries with the same content as any in the batch, to tell a double click
/// from a new inquiry.
async fn content_originals(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[&Envelope],
) -> Result<HashMap<ContentKey, Vec<(Uuid, DateTime<Utc>)>>, sqlx::Error> {
    let (sources, keys): (Vec<String>, Vec<String>) = batch
        .iter()
        .map(|e| &e.lead.inquiry)
        .filter_map(|i| i.dedup.as_ref().map(|d| (text(&i.source), d.key.clone())))
        .unzip();
    let mut originals: HashMap<ContentKey, Vec<(Uuid, DateTime<Utc>)>> = HashMap::new();
    if keys.is_empty() {
        return Ok(originals);
    }
    let rows = sqlx::query(
        "SELECT i.source, i.dedup_key, i.id, i.received_at FROM inquiries i
         JOIN unnest($1::text[], $2::text[]) AS k(source, dedup_key)
           ON i.source = k.source AND i.dedup_key = k.dedup_key
         WHERE i.disposition <> 'duplicate'",
    )
    .bind(&sources)
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        originals
            .entry((row.try_get("source")?, row.try_get("dedup_key")?))
            .or_default()
            .push((row.try_get("id")?, row.try_get("received_at")?));
    }
    Ok(originals)
}

/// The first inquiry with the same content inside the window, if any; otherwise this one
/// becomes the original for the rest of the batch.
fn repeated_content(
    originals: &mut HashMap<ContentKey, Vec<(Uuid, DateTime<Utc>)>>,
    envelope: &Envelope,
) -> Option<Uuid> {
    let inquiry = &envelope.lead.inquiry;
    let dedup = inquiry.dedup.as_ref()?;
    let window = chrono::Duration::seconds(i64::from(dedup.window_secs));
    let entry = originals
        .entry((text(&inquiry.source), dedup.key.clone()))
        .or_default();
    match entry
        .iter()
        .find(|(_, at)| (*at - inquiry.received_at).abs() <= window)
    {
        Some((first, _)) => Some(*first),
        None => {
            entry.push((inquiry.id.as_uuid(), inquiry.received_at));
            None
        }
    }
}

/// Per person key: the open (or frozen) leads that carry it, and the newest closed one.
const LEADS_BY_KEY: &str = "\
    SELECT li.key,
           array_agg(l.id ORDER BY l.id)
               FILTER (WHERE s.semantic IN ('open', 'frozen')) AS open_ids,
           max(l.id) FILTER (WHERE s.semantic NOT IN ('open', 'frozen')) AS closed_id
    FROM lead_identities li
    JOIN leads l ON l.id = li.lead_id
    JOIN stages s ON s.id = l.stage_id
    WHERE li.key = ANY($1)
    GROUP BY li.key";

/// Leads, contacts and companies holding any of the batch's keys.
///
/// The key locks taken before keep this batch's keys to itself, but one contact has
/// several keys: an inquiry by its email and one by its phone, filed by two consumers, take
/// no common key lock. So the contacts found are locked as well (sorted, and always after
/// every key lock, so no two transactions wait on each other in a cycle), and their open
/// leads are read only once those locks are held: whichever transaction comes second sees
/// the lead the first one opened. At most `lock_budget` contacts are locked; more is
/// [`StoreError::OutOfLocks`], and the part is filed in halves.
async fn look_up(
    tx: &mut Transaction<'_, Postgres>,
    person_keys: &[String],
    company_keys: &[String],
    lock_budget: usize,
) -> Result<Snapshot, Failure> {
    let mut snapshot = Snapshot::default();
    if !person_keys.is_empty() {
        let rows = sqlx::query(LEADS_BY_KEY)
            .bind(person_keys)
            .fetch_all(&mut **tx)
            .await?;
        for row in rows {
            let key: String = row.try_get("key")?;
            if let Some(ids) = row.try_get::<Option<Vec<i64>>, _>("open_ids")? {
                snapshot.open.insert(key.clone(), ids);
            }
            if let Some(id) = row.try_get::<Option<i64>, _>("closed_id")? {
                snapshot.closed.insert(key, id);
            }
        }
        let rows = sqlx::query(
            "SELECT ci.key, ci.contact_id, c.company_id, c.name,
                    ARRAY(SELECT k.key FROM contact_identities k
                          WHERE k.contact_id = c.id ORDER BY k.key)
                        AS strong_keys
             FROM contact_identities ci JOIN contacts c ON c.id = ci.contact_id
             WHERE ci.key = ANY($1)",
        )
        .bind(person_keys)
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let contact_id: i64 = row.try_get("contact_id")?;
            snapshot.contacts.insert(row.try_get("key")?, contact_id);
            snapshot.contact_people.insert(
                contact_id,
                person(row.try_get("name")?, row.try_get("strong_keys")?),
            );
            if let Some(company_id) = row.try_get::<Option<i64>, _>("company_id")? {
                snapshot.contact_company.insert(contact_id, company_id);
            }
        }
        let contact_ids: Vec<i64> = snapshot
            .contacts
            .values()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if contact_ids.len() > lock_budget {
            return Err(Failure {
                error: StoreError::OutOfLocks(format!(
                    "{} known contacts take the part over database.max_batch_locks",
                    contact_ids.len()
                )),
                index: None,
            });
        }
        if !contact_ids.is_empty() {
            let lock_keys: Vec<String> = contact_ids
                .iter()
                .map(|id| format!("contact\u{1f}{id}"))
                .collect();
            lock_in_order(tx, &lock_keys).await?;
            let rows = sqlx::query(
                "SELECT l.contact_id, min(l.id) AS lead_id
                 FROM leads l JOIN stages s ON s.id = l.stage_id
                 WHERE l.contact_id = ANY($1) AND s.semantic IN ('open', 'frozen')
                 GROUP BY l.contact_id",
            )
            .bind(&contact_ids)
            .fetch_all(&mut **tx)
            .await?;
            for row in rows {
                snapshot
                    .contact_leads
                    .insert(row.try_get("contact_id")?, row.try_get("lead_id")?);
            }
        }
    }
    // Who is behind the leads found: telling two people on one number apart needs it.
    let lead_ids: Vec<i64> = snapshot
        .open
        .values()
        .flatten()
        .chain(snapshot.closed.values())
        .chain(snapshot.contact_leads.values())
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !lead_ids.is_empty() {
        let rows = sqlx::query(
            "SELECT l.id, l.name,
                    ARRAY(SELECT li.key FROM lead_identities li
                          WHERE li.lead_id = l.id ORDER BY li.key)
                        AS strong_keys
             FROM leads l WHERE l.id = ANY($1)",
        )
        .bind(&lead_ids)
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            snapshot.lead_people.insert(
                row.try_get("id")?,
                person(row.try_get("name")?, row.try_get("strong_keys")?),
            );
        }
    }
    if !company_keys.is_empty() {
        let rows = sqlx::query(
            "SELECT key, min(company_id) AS company_id FROM company_identities
             WHERE key = ANY($1) GROUP BY key",
        )
        .bind(company_keys)
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            snapshot
                .companies
                .insert(row.try_get("key")?, row.try_get("company_id")?);
        }
    }
    Ok(snapshot)
}

/// Takes a transaction-scoped advisory lock on each key, in the order given.
async fn lock_in_order(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[String],
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))
         FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
    )
    .bind(keys)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn placement(
    tx: &mut Transaction<'_, Postgres>,
    cache: &mut Placements,
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

#[cfg(test)]
mod tests {
    use sqlx::{Connection, PgPool};

    use super::*;
    use crate::intake::BEGIN_INTAKE;

    /// EXPLAIN's plan of the leads look-up for `keys`, in a transaction begun with `begin`
    /// on a session at PostgreSQL's default costs.
    async fn plan_of_leads_by_key(pool: &PgPool, begin: &str, keys: &[String]) -> String {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::raw_sql("SET random_page_cost = 4")
            .execute(&mut *conn)
            .await
            .unwrap();
        let mut tx = conn.begin_with(begin.to_owned()).await.unwrap();
        let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {LEADS_BY_KEY}"))
            .bind(keys)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        lines.join("\n")
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn a_batchs_keys_are_looked_up_through_the_index_of_a_mid_sized_key_table(pool: PgPool) {
        // 20,000 leads with an email and a phone key each, loaded without triggers (their
        // checks and summaries are not what this is about).
        sqlx::raw_sql(
            "SET session_replication_role = replica;
             INSERT INTO leads (inquiry_id, title, channel, source, pipeline_id, stage_id,
                                stage_entered_at)
             SELECT gen_random_uuid(), 'Inquiry', 'web', 'site', s.pipeline_id, s.id, now()
             FROM generate_series(1, 20000), (SELECT * FROM stages WHERE is_initial LIMIT 1) s;
             INSERT INTO lead_identities (key, lead_id)
             SELECT 'email:person' || id || '@example.com', id FROM leads
             UNION ALL SELECT 'phone:+39333' || lpad(id::text, 7, '0'), id FROM leads;
             RESET session_replication_role;
             ANALYZE;",
        )
        .execute(&pool)
        .await
        .unwrap();
        // A batch's worth: half of the keys known, half new.
        let keys: Vec<String> = (0..300)
            .map(|i| match i % 2 {
                0 => format!("email:person{}@example.com", i * 60 + 1),
                _ => format!("email:new{i}@example.com"),
            })
            .collect();

        let plain = plan_of_leads_by_key(&pool, "BEGIN", &keys).await;
        assert!(
            plain.contains("Seq Scan on lead_identities"),
            "at the default costs the look-up was not planned as a scan of the table, so \
             this table is too small or too large to tell:\n{plain}"
        );
        let intake = plan_of_leads_by_key(&pool, BEGIN_INTAKE, &keys).await;
        assert!(
            intake.contains("lead_identities_pkey")
                && !intake.contains("Seq Scan on lead_identities"),
            "the intake's look-up scans the key table instead of its index:\n{intake}"
        );
    }
}
