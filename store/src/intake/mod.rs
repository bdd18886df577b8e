//! The consumer's sink: files a batch of envelopes in one transaction (or several, in
//! order, when its locks would not fit in one).
//!
//! Per envelope, in batch order: a replay (inquiry id already stored, or earlier in the
//! batch) changes nothing; spam is kept as an inquiry without a lead; the same content
//! from the same source inside its window is kept as a duplicate of the first; an event
//! whose activity is filed, or whose conversation belongs to a lead, goes onto that lead;
//! anything else goes through the matching rules (`normalizer::matching`): merged into an
//! open lead of the same person (the keys it brings recorded with the merge, and finding
//! the lead only after a match by a strong key), or filed as a new lead (a repeat lead
//! when the person or company is a known client) with its first stage-history row. Each
//! filed inquiry is an activity on its lead, or updates the activity its event names. A
//! new or merged lead from a source with an acknowledgement queues it in the same
//! transaction (`crate::outbox`).
//!
//! - [`plan`]: the locks, the look-ups under them, and the decision for each envelope.
//! - [`write`]: the statements that file what was decided.

mod plan;
mod write;

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use normalizer::matching::Decision as MatchDecision;
use router::{BatchSink, Envelope, SinkError, StoreOutcome};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::error::StoreError;
use crate::outbox::{AckRules, FiledLead, queue_acknowledgements};
use crate::store::Store;
use plan::{Failure, Plan, Planned, lock_keys, plan_batch};
use write::{
    Filed, MergeRow, apply_merges, insert_inquiries, insert_leads, record_conversations,
    write_activities,
};

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

/// Starts a batch's transaction, in the same round trip, with the planner costing a
/// random page read at no more than 1.1.
///
/// The look-ups read the index pages of a batch's few hundred keys, which a steady
/// stream of intake keeps in memory. At the default cost (4, set for spinning disks) the
/// planner prefers to scan a whole key table of up to some 100,000 keys with the list as
/// a filter: 6 ms a batch on average and up to 150 ms under load, where the index takes
/// 0.4. An operator's lower setting stands.
pub(super) const BEGIN_INTAKE: &str = "BEGIN; SELECT set_config('random_page_cost', \
     least(current_setting('random_page_cost')::float8, 1.1)::text, true)";

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
            let mut tx = sqlx::Connection::begin_with(&mut *conn, BEGIN_INTAKE).await?;
            let outcomes = file_batch(&mut tx, batch, self.max_batch_locks, &self.acks).await?;
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

/// Plans the batch, then writes what was decided; answers each envelope's outcome.
async fn file_batch(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[&Envelope],
    max_locks: usize,
    acks: &AckRules,
) -> Result<Vec<StoreOutcome>, Failure> {
    let db = Failure::from;
    let Planned {
        plans,
        placements,
        activities,
    } = plan_batch(tx, batch, max_locks).await?;

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

    // In batch order: events of one activity apply in the order they arrived.
    let mut filed: Vec<(usize, Filed)> = new_leads
        .iter()
        .filter_map(|(i, e, _)| {
            lead_of_index.get(i).map(|id| {
                (
                    *i,
                    Filed {
                        lead_id: *id,
                        envelope: e,
                        merged: None,
                    },
                )
            })
        })
        .collect();
    filed.extend(merges.iter().map(|m| {
        (
            m.index,
            Filed {
                lead_id: m.lead_id,
                envelope: batch[m.index],
                merged: Some(m.reason),
            },
        )
    }));
    filed.sort_by_key(|(index, _)| *index);
    let filed: Vec<Filed> = filed.into_iter().map(|(_, f)| f).collect();
    let adopted = write_activities(tx, &filed, &activities)
        .await
        .map_err(db)?;
    record_conversations(tx, &filed).await.map_err(db)?;
    let acknowledged: Vec<FiledLead> = filed
        .iter()
        .map(|f| FiledLead {
            lead_id: f.lead_id,
            lead: &f.envelope.lead,
        })
        .collect();
    queue_acknowledgements(tx, acks, &acknowledged)
        .await
        .map_err(db)?;

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
                // A follow-up that came first in the batch, taken in by its activity.
                Plan::Unmatched => match adopted.get(&envelope.lead.inquiry.id.as_uuid()) {
                    Some(&lead_id) => StoreOutcome::Merged { lead_id },
                    None => StoreOutcome::Unmatched,
                },
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
