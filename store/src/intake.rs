//! The consumer's sink: files a batch of envelopes in one transaction (or several, in
//! order, when its locks would not fit in one).
//!
//! Per envelope, in batch order: a replay (inquiry id already stored, or earlier in the
//! batch) changes nothing; spam is kept as an inquiry without a lead; the same content
//! from the same source inside its window is kept as a duplicate of the first; anything
//! else goes through the matching rules (`normalizer::matching`): merged into an open lead
//! of the same person (the keys it brings recorded with the merge, and finding the lead
//! only after a match by a strong key), or filed as a new lead (a repeat lead when the
//! person or company is a known client) with its first stage-history row, and the inquiry
//! as an activity.
//!
//! Before looking anything up, the transaction takes advisory locks on every person key
//! and content key of the batch, in sorted order, and after finding the contacts those
//! keys belong to, on those contacts: two consumers (or replicas) filing the same person
//! at the same moment, by the same key or by two keys of one contact, take turns, so they
//! end with one open lead.
//!
//! The statements are per batch, not per lead (arrays through `unnest`), so a batch of
//! two hundred costs about as many round trips as a batch of one.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use normalizer::matching::{
    Decision as MatchDecision, Directory, Match, Person, decide, dialled_number,
};
use normalizer::{CompanyKey, IdentityKey};
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
#[derive(Clone, PartialEq, Eq)]
enum Plan {
    Replay,
    Spam,
    Duplicate(Uuid),
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
        self.companies.get(&format!("phone:{number}")).copied()
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
}

/// A stored strong key (`email:...`, `messenger:...`) as the matching rules know it.
fn strong_key(stored: &str) -> Option<IdentityKey> {
    let (kind, value) = stored.split_once(':')?;
    match kind {
        "email" => Some(IdentityKey::Email(value.to_owned())),
        "messenger" => Some(IdentityKey::Messenger(value.to_owned())),
        _ => None,
    }
}

fn person(name: Option<String>, stored_keys: Vec<String>) -> Person {
    Person {
        name,
        strong_keys: stored_keys.iter().filter_map(|k| strong_key(k)).collect(),
    }
}

#[async_trait]
impl BatchSink for Store {
    #[tracing::instrument(name = "Store lead batch", skip_all, fields(batch = batch.len()))]
    async fn store_batch(&self, batch: &[&Envelope]) -> Result<Vec<StoreOutcome>, SinkError> {
        let result = self.file_in_parts(batch).await;
        if let Some(first) = batch.first() {
            let first = first.lead.inquiry.id.as_uuid();
            match &result {
                Err(Failure { error, .. }) if error.is_transient() => {
                    self.held.refused(first, batch.len(), error)
                }
                _ => self.held.settled(first),
            }
        }
        result.map_err(|Failure { error, index }| classify(error, index))
    }
}

/// Batches the database keeps refusing for reasons of its own, by their first inquiry (the
/// consumer retries the same batch until it is stored). Nothing is lost while a batch is
/// held, but an operator must hear of it: after `alert_after` it is logged as an ERROR
/// (again every `alert_after`), and `leadpipe_store_held_seconds` shows the longest wait.
#[derive(Debug)]
pub(crate) struct HeldBatches {
    alert_after: Duration,
    batches: Mutex<HashMap<Uuid, Held>>,
}

#[derive(Debug)]
struct Held {
    since: Instant,
    last_attempt: Instant,
    reported: Option<Instant>,
}

impl HeldBatches {
    /// A batch not retried for this long was given up (its consumer stopped) and no longer
    /// counts as held.
    const FORGOTTEN_AFTER: Duration = Duration::from_secs(600);

    pub(crate) fn new(alert_after: Duration) -> Self {
        Self {
            alert_after,
            batches: Mutex::new(HashMap::new()),
        }
    }

    fn refused(&self, first: Uuid, size: usize, error: &StoreError) {
        let now = Instant::now();
        // std Mutex: never held across an await.
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        let held = batches.entry(first).or_insert(Held {
            since: now,
            last_attempt: now,
            reported: None,
        });
        held.last_attempt = now;
        let waited = now - held.since;
        if waited >= self.alert_after && held.reported.is_none_or(|at| now - at >= self.alert_after)
        {
            held.reported = Some(now);
            tracing::error!(
                held_secs = waited.as_secs(),
                batch = size,
                %error,
                "The database keeps refusing a batch of leads; it is held on the broker and \
                 filed as soon as the database accepts it."
            );
        }
        Self::publish(&mut batches, now);
    }

    fn settled(&self, first: Uuid) {
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        if batches.remove(&first).is_some() {
            Self::publish(&mut batches, Instant::now());
        }
    }

    fn publish(batches: &mut HashMap<Uuid, Held>, now: Instant) {
        batches.retain(|_, held| now - held.last_attempt < Self::FORGOTTEN_AFTER);
        let longest = batches
            .values()
            .map(|held| now - held.since)
            .max()
            .unwrap_or_default();
        metrics::gauge!("leadpipe_store_held_seconds").set(longest.as_secs_f64());
    }
}

/// Why a transaction filed nothing: the error, and the envelope at fault when known.
struct Failure {
    error: StoreError,
    index: Option<usize>,
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self {
            error: error.into(),
            index: None,
        }
    }
}

impl Store {
    /// Files `batch` in as many transactions, one after the other and in order, as its
    /// advisory locks need: each takes at most `max_batch_locks`, and a part the server's
    /// lock table cannot hold (SQLSTATE 53200) is halved and tried again. Answers only when
    /// every part is committed; when a later part fails, the consumer retries the whole
    /// batch, and the parts already committed are then replays that change nothing.
    async fn file_in_parts(&self, batch: &[&Envelope]) -> Result<Vec<StoreOutcome>, Failure> {
        let mut parts: VecDeque<Range<usize>> = parts_within(batch, self.max_batch_locks).into();
        let mut outcomes = Vec::with_capacity(batch.len());
        while let Some(part) = parts.pop_front() {
            match self.file_in_one_transaction(&batch[part.clone()]).await {
                Ok(filed) => outcomes.extend(filed),
                Err(Failure {
                    error: StoreError::OutOfLocks(reason),
                    ..
                }) if part.len() > 1 => {
                    tracing::warn!(
                        %reason,
                        part = part.len(),
                        "A batch needs more locks than one transaction may take; filing it in \
                         halves."
                    );
                    let middle = part.start + part.len() / 2;
                    parts.push_front(middle..part.end);
                    parts.push_front(part.start..middle);
                }
                Err(Failure { error, index }) => {
                    return Err(Failure {
                        error,
                        index: index.map(|i| part.start + i),
                    });
                }
            }
        }
        Ok(outcomes)
    }

    /// Files `batch` in one transaction. When the database refused the work for reasons
    /// of its own, the connection is closed rather than returned to the pool: a session
    /// can carry what caused it (a read-only default after a failover, plans cached for a
    /// schema that changed), and the retry should start from a fresh one.
    async fn file_in_one_transaction(
        &self,
        batch: &[&Envelope],
    ) -> Result<Vec<StoreOutcome>, Failure> {
        let mut conn = self.pool().acquire().await?;
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let outcomes = file_batch(&mut tx, batch, self.max_batch_locks).await?;
            tx.commit().await?;
            Ok(outcomes)
        }
        .await;
        if let Err(Failure {
            error: StoreError::Unavailable(_),
            ..
        }) = &result
        {
            conn.close_on_drop();
        }
        result
    }
}

/// Consecutive ranges of `batch` whose distinct lock keys each fit in `max_locks` (an
/// envelope that alone needs more still gets a part of its own).
fn parts_within(batch: &[&Envelope], max_locks: usize) -> Vec<Range<usize>> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut keys: HashSet<String> = HashSet::new();
    for (index, envelope) in batch.iter().enumerate() {
        let own = lock_keys(envelope);
        let added = own.iter().filter(|k| !keys.contains(*k)).count();
        if index > start && keys.len() + added > max_locks {
            parts.push(start..index);
            start = index;
            keys.clear();
        }
        keys.extend(own);
    }
    if start < batch.len() {
        parts.push(start..batch.len());
    }
    parts
}

/// The advisory lock keys an envelope needs: its content key (so replicas agree on which
/// copy of a double click is the original) and its person keys.
fn lock_keys(envelope: &Envelope) -> Vec<String> {
    let inquiry = &envelope.lead.inquiry;
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
        .collect()
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

async fn file_batch(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[&Envelope],
    max_locks: usize,
) -> Result<Vec<StoreOutcome>, Failure> {
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
                    .map(|n| format!("phone:{n}")),
            )
        })
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
            // Later inquiries in the batch see what this one changes, as they would in the
            // next batch.
            match &decision {
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
                }
                MatchDecision::Merge {
                    lead_id,
                    adopt_keys: true,
                    ..
                } => snapshot.add_lead_keys(*lead_id, &envelope.lead.identity_keys),
                MatchDecision::Merge { .. } => {}
            }
            Plan::Lead(decision)
        };
        plans.push(plan);
    }

    // Resolve routes first: an unknown pipeline is this envelope's fault, not the batch's.
    let mut placements: HashMap<(String, Option<String>), Placement> = HashMap::new();
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

    let inserted = insert_inquiries(tx, batch, &plans).await.map_err(db)?;
    let new_leads: Vec<(usize, &Envelope, &MatchDecision)> = batch
        .iter()
        .zip(&plans)
        .enumerate()
        .filter_map(|(i, (e, plan))| match plan {
            Plan::Lead(d @ MatchDecision::New { .. })
                if inserted.contains(&e.lead.inquiry.id.as_uuid()) =>
            {
                Some((i, *e, d))
            }
            _ => None,
        })
        .collect();
    let created = insert_leads(tx, &new_leads, &placements)
        .await
        .map_err(db)?;
    let lead_of_index: HashMap<usize, i64> = new_leads
        .iter()
        .filter_map(|(i, e, _)| {
            created
                .get(&e.lead.inquiry.id.as_uuid())
                .map(|id| (*i, *id))
        })
        .collect();

    // Merges, with targets created earlier in this batch resolved to their ids.
    let mut merges: Vec<MergeRow> = Vec::new();
    for (index, (envelope, plan)) in batch.iter().zip(&plans).enumerate() {
        if let Plan::Lead(MatchDecision::Merge {
            lead_id,
            adopt_keys,
            reason,
        }) = plan
            && inserted.contains(&envelope.lead.inquiry.id.as_uuid())
        {
            let target = if *lead_id < 0 {
                let origin = (-1 - *lead_id) as usize;
                *lead_of_index.get(&origin).ok_or_else(|| Failure {
                    error: StoreError::Unavailable(
                        "a lead this batch meant to open was stored elsewhere first; retrying"
                            .into(),
                    ),
                    index: None,
                })?
            } else {
                *lead_id
            };
            merges.push(MergeRow {
                index,
                lead_id: target,
                reason,
                adopt_keys: *adopt_keys,
            });
        }
    }
    apply_merges(tx, batch, &merges).await.map_err(db)?;

    let mut activity_rows: Vec<(i64, &Envelope, Option<&Match>)> = new_leads
        .iter()
        .filter_map(|(i, e, _)| lead_of_index.get(i).map(|id| (*id, *e, None)))
        .collect();
    activity_rows.extend(
        merges
            .iter()
            .map(|m| (m.lead_id, batch[m.index], Some(m.reason))),
    );
    insert_activities(tx, &activity_rows).await.map_err(db)?;

    let merged_into: HashMap<usize, i64> = merges.iter().map(|m| (m.index, m.lead_id)).collect();
    Ok(batch
        .iter()
        .zip(&plans)
        .enumerate()
        .map(|(index, (envelope, plan))| {
            if !inserted.contains(&envelope.lead.inquiry.id.as_uuid()) {
                // Stored by someone else between our look-up and our insert.
                return StoreOutcome::Replay;
            }
            match plan {
                Plan::Replay => StoreOutcome::Replay,
                Plan::Spam => StoreOutcome::Spam,
                Plan::Duplicate(_) => StoreOutcome::Duplicate,
                Plan::Lead(MatchDecision::New { .. }) => match lead_of_index.get(&index) {
                    Some(&lead_id) => StoreOutcome::LeadCreated { lead_id },
                    None => StoreOutcome::Replay,
                },
                Plan::Lead(MatchDecision::Merge { .. }) => match merged_into.get(&index) {
                    Some(&lead_id) => StoreOutcome::Merged { lead_id },
                    None => StoreOutcome::Replay,
                },
            }
        })
        .collect())
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
        let rows = sqlx::query(
            "SELECT li.key,
                    array_agg(l.id ORDER BY l.id)
                        FILTER (WHERE s.semantic IN ('open', 'frozen')) AS open_ids,
                    max(l.id) FILTER (WHERE s.semantic NOT IN ('open', 'frozen')) AS closed_id
             FROM lead_identities li
             JOIN leads l ON l.id = li.lead_id
             JOIN stages s ON s.id = l.stage_id
             WHERE li.key = ANY($1)
             GROUP BY li.key",
        )
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
                          WHERE k.contact_id = c.id AND k.kind <> 'phone' ORDER BY k.key)
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
                          WHERE li.lead_id = l.id AND li.key NOT LIKE 'phone:%' ORDER BY li.key)
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
async fn insert_leads(
    tx: &mut Transaction<'_, Postgres>,
    leads: &[(usize, &Envelope, &MatchDecision)],
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
    let mut repeats = Vec::with_capacity(n);
    let mut contact_ids = Vec::with_capacity(n);
    let mut company_ids = Vec::with_capacity(n);
    let mut previous_ids = Vec::with_capacity(n);
    let mut matches = Vec::with_capacity(n);
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
    }
    let rows = sqlx::query(
        "INSERT INTO leads (inquiry_id, title, name, email, phone, phone_extension, company,
                            message, channel, source, utm, fields, problems, pipeline_id,
                            stage_id, is_repeat, contact_id, company_id, previous_lead_id, match,
                            stage_entered_at, created_at, updated_at)
         SELECT i, t, n, e, p, x, c, m, ch, s, u, f, pr, pl, st, rep, con, com, prev, mat, $21, $21, $21
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::jsonb[],
                     $13::jsonb[], $14::bigint[], $15::bigint[], $16::bool[], $17::bigint[],
                     $18::bigint[], $19::bigint[], $20::jsonb[])
              WITH ORDINALITY AS r(i, t, n, e, p, x, c, m, ch, s, u, f, pr, pl, st, rep, con, com, prev, mat, ord)
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
        .flat_map(|(id, e)| e.lead.identity_keys.iter().map(move |k| (id, k.as_key())))
        .unzip();
    insert_lead_keys(tx, &key_leads, &keys).await?;
    Ok(lead_of)
}

async fn insert_lead_keys(
    tx: &mut Transaction<'_, Postgres>,
    lead_ids: &[i64],
    keys: &[String],
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO lead_identities (key, lead_id)
         SELECT k, l FROM unnest($1::text[], $2::bigint[]) AS t(k, l)
         ON CONFLICT DO NOTHING",
    )
    .bind(keys)
    .bind(lead_ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One inquiry merged into an open lead.
struct MergeRow<'a> {
    /// Its position in the batch.
    index: usize,
    lead_id: i64,
    reason: &'a Match,
    /// The match was by a strong key: the inquiry's keys find the lead from now on.
    adopt_keys: bool,
}

/// Adds merged inquiries to their open leads: counts them, fills fields the lead does
/// not have yet (never overwrites), records the merge as an event with the keys it
/// brought, and lets those keys find the lead only when the match was by a strong key.
async fn apply_merges(
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
    }
    let mut fills: Vec<(i64, Fill)> = Vec::new();
    for merge in merges {
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
    }
    let ids: Vec<i64> = fills.iter().map(|(id, _)| *id).collect();
    let counts: Vec<i32> = fills.iter().map(|(_, f)| f.count).collect();
    let names: Vec<Option<String>> = fills.iter().map(|(_, f)| f.name.clone()).collect();
    let emails: Vec<Option<String>> = fills.iter().map(|(_, f)| f.email.clone()).collect();
    let phones: Vec<Option<String>> = fills.iter().map(|(_, f)| f.phone.clone()).collect();
    let extensions: Vec<Option<String>> = fills.iter().map(|(_, f)| f.extension.clone()).collect();
    let companies: Vec<Option<String>> = fills.iter().map(|(_, f)| f.company.clone()).collect();
    sqlx::query(
        "UPDATE leads SET
            inquiry_count = leads.inquiry_count + u.n,
            name = COALESCE(leads.name, u.name),
            email = COALESCE(leads.email, u.email),
            phone_extension = CASE WHEN leads.phone IS NULL THEN u.ext ELSE leads.phone_extension END,
            phone = COALESCE(leads.phone, u.phone),
            company = COALESCE(leads.company, u.company),
            updated_at = now()
         FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
              AS u(id, n, name, email, phone, ext, company)
         WHERE leads.id = u.id",
    )
    .bind(&ids)
    .bind(&counts)
    .bind(&names)
    .bind(&emails)
    .bind(&phones)
    .bind(&extensions)
    .bind(&companies)
    .execute(&mut **tx)
    .await?;

    let event_leads: Vec<i64> = merges.iter().map(|m| m.lead_id).collect();
    let event_inquiries: Vec<Uuid> = merges
        .iter()
        .map(|m| batch[m.index].lead.inquiry.id.as_uuid())
        .collect();
    let event_data: Vec<Json<serde_json::Value>> = merges
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

/// Each filed inquiry becomes an activity on its lead (the first one, or a merged one).
async fn insert_activities(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(i64, &Envelope, Option<&Match>)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut lead_ids = Vec::with_capacity(rows.len());
    let mut channels = Vec::with_capacity(rows.len());
    let mut inquiry_ids = Vec::with_capacity(rows.len());
    let mut subjects = Vec::with_capacity(rows.len());
    let mut bodies = Vec::with_capacity(rows.len());
    let mut occurred = Vec::with_capacity(rows.len());
    let mut data = Vec::with_capacity(rows.len());
    for (lead_id, envelope, merged) in rows {
        let inquiry = &envelope.lead.inquiry;
        lead_ids.push(*lead_id);
        channels.push(inquiry.channel.as_str());
        inquiry_ids.push(inquiry.id.as_uuid());
        subjects.push(format!(
            "{} inquiry via {}",
            inquiry.channel,
            text(&inquiry.source)
        ));
        bodies.push(opt_text(envelope.lead.message.as_deref()));
        occurred.push(inquiry.received_at);
        data.push(json(&serde_json::json!({
            "attachments": inquiry.attachments,
            "merged": merged,
        })));
    }
    sqlx::query(
        "INSERT INTO activities (lead_id, kind, channel, inquiry_id, subject, body, occurred_at, data)
         SELECT l, 'inquiry', ch, i, sub, b, at, d
         FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[], $7::jsonb[])
              AS t(l, ch, i, sub, b, at, d)",
    )
    .bind(&lead_ids)
    .bind(&channels)
    .bind(&inquiry_ids)
    .bind(&subjects)
    .bind(&bodies)
    .bind(&occurred)
    .bind(&data)
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
        }
    }
}
