//! Consuming the shard queues in batches.
//!
//! Each shard queue has one task with its own connection. It gathers up to `batch_size`
//! inquiries or `prefetch` deliveries (waiting at most `batch_wait_ms` once it has one;
//! while it catches up on a backlog, only until the queue runs dry), hands them to the
//! [`BatchSink`] in one call (at most `steady_batches` partial batches of all shards at
//! once; a full one, a backlog, goes straight in), and acks them with one multiple-ack
//! only after the sink committed. A database outage holds the batch and retries with
//! backoff (nothing is requeued, so nothing counts against the delivery limit); a message
//! the sink can never store goes to the dead-letter queue with the error attached, then
//! is acked.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::protocol::AMQPSoftError;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::config::AmqpConfig;
use crate::connect::Brokers;
use crate::envelope::{
    BATCH_CONTENT_TYPE, Carried, ENVELOPE_CONTENT_TYPE, Envelope, decode_message,
};
use crate::topology::{Topology, is_soft_error};

/// What the sink did with one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// A new lead was filed.
    LeadCreated {
        /// Its id.
        lead_id: i64,
    },
    /// The inquiry was added to an open lead of the same person.
    Merged {
        /// The lead it joined.
        lead_id: i64,
    },
    /// The inquiry id was already stored: a redelivery or replay, nothing changed.
    Replay,
    /// The same content reached the same source inside its window: kept, no new lead.
    Duplicate,
    /// Spam: kept and counted, no lead.
    Spam,
    /// A follow-up (a sticker, a photo without a caption) with no lead to add to: kept
    /// and counted, no lead.
    Unmatched,
}

impl StoreOutcome {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            StoreOutcome::LeadCreated { .. } => "lead_created",
            StoreOutcome::Merged { .. } => "merged",
            StoreOutcome::Replay => "replay",
            StoreOutcome::Duplicate => "duplicate",
            StoreOutcome::Spam => "spam",
            StoreOutcome::Unmatched => "unmatched",
        }
    }
}

/// Why a batch was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying as is (the database is unreachable, a serialisation failure).
    #[error("transient storage failure: {0}")]
    Transient(String),
    /// Retrying will not help; `index` names the culprit when known.
    #[error("permanent storage failure: {reason}")]
    Permanent {
        /// Position of the failing envelope in the batch, when known.
        index: Option<usize>,
        /// What went wrong.
        reason: String,
    },
}

/// Where consumers hand their batches: one transaction per call, all or nothing.
#[async_trait]
pub trait BatchSink: Send + Sync + 'static {
    /// Stores every envelope of the batch in one transaction and says what became of each.
    async fn store_batch(&self, batch: &[&Envelope]) -> Result<Vec<StoreOutcome>, SinkError>;
}

/// Why a consumer session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the dead-letter queue did not confirm a message: {0}")]
    DeadLetter(String),
    #[error("stopping while the database is unavailable; the batch stays on the broker")]
    Abandoned,
    #[error("the broker ended the subscription (was the queue deleted?)")]
    CancelledByBroker,
}

/// The consumers of every shard queue.
pub struct ConsumerSet {
    config: AmqpConfig,
    topology: Topology,
    sink: Arc<dyn BatchSink>,
    /// Turns for filing a partial batch (`steady_batches` at once).
    turns: Semaphore,
}

impl ConsumerSet {
    /// Consumers for the configured shards, storing into `sink`.
    pub fn new(config: AmqpConfig, sink: Arc<dyn BatchSink>) -> Self {
        let config = config.with_frame_max_default();
        Self {
            topology: Topology::new(&config),
            turns: Semaphore::new(usize::from(config.steady_batches.max(1))),
            config,
            sink,
        }
    }

    /// Starts one task per shard on `tracker`. On `shutdown` each cancels its
    /// subscription, stores and acks what it already received, and closes.
    pub fn spawn(self, tracker: &TaskTracker, shutdown: CancellationToken) {
        let shared = Arc::new(self);
        for shard in 0..shared.topology.shards() {
            let me = shared.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move { me.run_shard(shard, shutdown).await });
        }
    }

    async fn run_shard(self: Arc<Self>, shard: u16, shutdown: CancellationToken) {
        let queue = self.topology.shard_queue(shard);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let brokers = Brokers::new(self.config.broker_urls());
        while !shutdown.is_cancelled() {
            match self.session(shard, &brokers, &shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(error) => {
                    if shutdown.is_cancelled() {
                        tracing::info!(%queue, %error, "Consumer stopped.");
                        break;
                    }
                    let delay = if matches!(error, SessionError::CancelledByBroker) {
                        // Not a failure of ours: the queue went away, and the next session
                        // declares it again, so there is nothing to wait for.
                        backoff.reset();
                        Duration::ZERO
                    } else {
                        backoff.next_delay()
                    };
                    tracing::warn!(%queue, %error, retry_in = ?delay, "Consumer lost its session; reconnecting.");
                    metrics::counter!("leadpipe_consumer_restarts_total").increment(1);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
    }

    async fn session(
        &self,
        shard: u16,
        brokers: &Brokers,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), SessionError> {
        let queue = self.topology.shard_queue(shard);
        let connection = brokers
            .connect(&format!(
                "leadpipe consumer {} shard {shard}",
                std::process::id()
            ))
            .await?;
        self.topology.declare_shard(&connection, shard).await?;
        let dead_channel = connection.create_channel().await?;
        dead_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mut announced = false;
        loop {
            let channel = connection.create_channel().await?;
            let end = self
                .subscription(
                    shard,
                    &channel,
                    &dead_channel,
                    shutdown,
                    backoff,
                    &mut announced,
                )
                .await;
            // Closing the channel hands back to the queue anything delivered to it that
            // was not acked.
            let _ = channel.close(200, "subscription ended".into()).await;
            match end? {
                SubscriptionEnd::Renew => continue,
                SubscriptionEnd::Finished => break,
            }
        }
        let _ = connection.close(200, "leadpipe shutting down".into()).await;
        tracing::info!(%queue, "Consumer finished its in-flight work.");
        Ok(())
    }

    /// One subscription to the shard queue on `channel`, until shutdown, an error, or an
    /// idle spell after which it is renewed.
    async fn subscription(
        &self,
        shard: u16,
        channel: &Channel,
        dead_channel: &Channel,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
        announced: &mut bool,
    ) -> Result<SubscriptionEnd, SessionError> {
        let queue = self.topology.shard_queue(shard);
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("leadpipe-{}-shard-{shard}", std::process::id());
        let mut deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| {
                if is_soft_error(&error, AMQPSoftError::NOTFOUND) {
                    SessionError::CancelledByBroker
                } else {
                    error.into()
                }
            })?;
        if !*announced {
            tracing::info!(%queue, "Consuming.");
            *announced = true;
        }

        let batch_wait = Duration::from_millis(self.config.batch_wait_ms);
        let quiet_gap = CATCH_UP_GAP.min(batch_wait);
        let most_unacked = usize::from(self.config.prefetch);
        // A new subscription may face a backlog (a restart, a reconnect): it starts as
        // catching up, and waits to fill batches only once the queue ran dry.
        let mut behind = true;
        let mut cancel_deadline: Option<Instant> = None;
        loop {
            let first = tokio::select! {
                next = deliveries.next() => next,
                _ = shutdown.cancelled(), if cancel_deadline.is_none() => {
                    // Stop the flow, then store what is already on its way to us.
                    channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await?;
                    cancel_deadline = Some(Instant::now() + Duration::from_secs(10));
                    continue;
                }
                _ = sleep_until_opt(cancel_deadline) => return Ok(SubscriptionEnd::Finished),
                _ = tokio::time::sleep(RENEW_WHEN_IDLE), if cancel_deadline.is_none() => {
                    return Ok(SubscriptionEnd::Renew);
                }
            };
            // The stream ends when the subscription does: cancelled by us on shutdown, or
            // by the broker when its queue goes away.
            let mut ended = first.is_none();
            if let Some(first) = first {
                let first = first?;
                // Counted in inquiries: a batch message carries several.
                let mut inquiries = carried_count(&first);
                let mut batch = vec![first];
                let fill_until = Instant::now() + batch_wait;
                let mut full = false;
                loop {
                    // The broker sends no more than `prefetch` unacked messages: a batch
                    // holding them all cannot grow however long it waits.
                    if inquiries >= self.config.batch_size || batch.len() >= most_unacked {
                        full = true;
                        break;
                    }
                    // Catching up, the broker streams what it holds back to back: a quiet
                    // moment means the queue ran dry, and its tail goes in at once.
                    let until = if behind {
                        fill_until.min(Instant::now() + quiet_gap)
                    } else {
                        fill_until
                    };
                    match tokio::time::timeout_at(until, deliveries.next()).await {
                        Ok(Some(Ok(delivery))) => {
                            inquiries += carried_count(&delivery);
                            batch.push(delivery);
                        }
                        Ok(Some(Err(error))) => return Err(error.into()),
                        Ok(None) => {
                            ended = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                behind = full;
                self.process(&queue, channel, dead_channel, batch, full, shutdown)
                    .await?;
            }
            if ended {
                if cancel_deadline.is_some() {
                    return Ok(SubscriptionEnd::Finished);
                }
                // A new session declares the queue again and resubscribes.
                return Err(SessionError::CancelledByBroker);
            }
            backoff.reset();
        }
    }

    /// Stores a batch (isolating poison messages) and acks it.
    async fn process(
        &self,
        queue: &str,
        channel: &Channel,
        dead_channel: &Channel,
        batch: Vec<Delivery>,
        full: bool,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let Some(last_tag) = batch.last().map(|d| d.delivery_tag) else {
            return Ok(());
        };
        // Each readable envelope with the delivery that carried it.
        let mut envelopes: Vec<(usize, Envelope)> = Vec::with_capacity(batch.len());
        for (i, delivery) in batch.iter().enumerate() {
            let content_type = delivery
                .properties
                .content_type()
                .as_ref()
                .map(|t| t.as_str());
            match decode_message(content_type, &delivery.data) {
                Ok(carried) => {
                    for item in carried {
                        match item {
                            Carried::Envelope(envelope) => envelopes.push((i, *envelope)),
                            Carried::Unreadable { bytes, reason } => {
                                let letter = Letter::part_of(delivery, bytes, None);
                                dead_letter(dead_channel, &self.topology, queue, letter, &reason)
                                    .await?
                            }
                        }
                    }
                }
                Err(reason) => {
                    let letter = Letter::whole(delivery);
                    dead_letter(dead_channel, &self.topology, queue, letter, &reason).await?
                }
            }
        }
        let letter = |k: usize| {
            let (i, envelope) = &envelopes[k];
            let delivery = &batch[*i];
            if is_batch(delivery) {
                let id = envelope.lead.inquiry.id.to_string();
                Letter::part_of(delivery, envelope.to_bytes(), Some(id))
            } else {
                Letter::whole(delivery)
            }
        };
        // Groups still to store; a group that fails permanently without naming the culprit
        // is split in halves until the poison message stands alone.
        let mut groups: VecDeque<Vec<usize>> = VecDeque::new();
        groups.push_back((0..envelopes.len()).collect());
        let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        while let Some(mut group) = groups.pop_front() {
            while !group.is_empty() {
                let items: Vec<&Envelope> = group.iter().map(|&k| &envelopes[k].1).collect();
                // Held for one attempt only, so a batch the database keeps refusing does
                // not stop the other shards. The semaphore is never closed.
                let waited = Instant::now();
                let (stored, took) = {
                    let _turn = if full {
                        None
                    } else {
                        self.turns.acquire().await.ok()
                    };
                    metrics::histogram!("leadpipe_store_turn_wait_seconds")
                        .record(waited.elapsed().as_secs_f64());
                    let started = Instant::now();
                    (self.sink.store_batch(&items).await, started.elapsed())
                };
                match stored {
                    Ok(outcomes) => {
                        metrics::histogram!("leadpipe_store_batch_seconds")
                            .record(took.as_secs_f64());
                        for outcome in &outcomes {
                            metrics::counter!("leadpipe_inquiries_stored_total", "outcome" => outcome.label()).increment(1);
                        }
                        retry.reset();
                        break;
                    }
                    Err(SinkError::Transient(reason)) => {
                        if shutdown.is_cancelled() {
                            return Err(SessionError::Abandoned);
                        }
                        let delay = retry.next_delay();
                        tracing::warn!(%queue, %reason, retry_in = ?delay, "Cannot store a batch; holding it and retrying.");
                        metrics::counter!("leadpipe_store_retries_total").increment(1);
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.cancelled() => return Err(SessionError::Abandoned),
                        }
                    }
                    Err(SinkError::Permanent {
                        index: Some(i),
                        reason,
                    }) if i < group.len() => {
                        let k = group.remove(i);
                        dead_letter(dead_channel, &self.topology, queue, letter(k), &reason)
                            .await?;
                    }
                    Err(SinkError::Permanent { reason, .. }) => {
                        if group.len() == 1 {
                            dead_letter(
                                dead_channel,
                                &self.topology,
                                queue,
                                letter(group[0]),
                                &reason,
                            )
                            .await?;
                            break;
                        }
                        let tail = group.split_off(group.len() / 2);
                        groups.push_front(tail);
                        groups.push_front(std::mem::take(&mut group));
                    }
                }
            }
        }

        channel
            .basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await?;
        Ok(())
    }
}

/// How long a subscription may see no delivery before it is renewed on a fresh channel.
///
/// A quorum queue deleted and declared again within milliseconds (RabbitMQ 3.10) can keep
/// a subscription that the broker still counts but never delivers to, without sending a
/// cancel; what the queue hands to it waits, unacked, on that channel. Renewing an idle
/// subscription closes such a channel, which returns those messages to the queue, and
/// subscribes afresh. An idle consumer holds nothing, so renewing costs nothing else.
const RENEW_WHEN_IDLE: Duration = Duration::from_secs(5);

/// How long a consumer that is catching up waits for the next delivery before it takes
/// the queue for dry: far longer than the broker needs between messages it holds, far
/// shorter than `batch_wait_ms`.
const CATCH_UP_GAP: Duration = Duration::from_millis(5);

/// How a subscription ended without an error.
enum SubscriptionEnd {
    /// Idle for a while: subscribe again on a fresh channel.
    Renew,
    /// Shutdown: what arrived is stored and acked.
    Finished,
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How many inquiries a delivery carries, without decoding it.
fn carried_count(delivery: &Delivery) -> usize {
    if is_batch(delivery) {
        delivery.data.iter().filter(|&&b| b == b'\n').count() + 1
    } else {
        1
    }
}

/// Whether a delivery carries several envelopes.
fn is_batch(delivery: &Delivery) -> bool {
    delivery
        .properties
        .content_type()
        .as_ref()
        .is_some_and(|t| t.as_str() == BATCH_CONTENT_TYPE)
}

/// What goes to the dead-letter queue: a whole delivery, or one envelope of a batch.
struct Letter<'a> {
    delivery: &'a Delivery,
    /// The envelope's own bytes when it is one of a batch.
    part: Option<(Vec<u8>, Option<String>)>,
}

impl<'a> Letter<'a> {
    fn whole(delivery: &'a Delivery) -> Self {
        Self {
            delivery,
            part: None,
        }
    }

    fn part_of(delivery: &'a Delivery, bytes: Vec<u8>, message_id: Option<String>) -> Self {
        Self {
            delivery,
            part: Some((bytes, message_id)),
        }
    }
}

/// Publishes a copy of the delivery (or of one envelope of it) to the dead-letter exchange
/// with the error attached, and waits for the confirm; the caller acks the original
/// afterwards. One envelope of a batch goes alone, as a message of one envelope, so that
/// replaying it later does not repeat the batch's other inquiries.
async fn dead_letter(
    channel: &Channel,
    topology: &Topology,
    queue: &str,
    letter: Letter<'_>,
    reason: &str,
) -> Result<(), SessionError> {
    tracing::error!(%queue, %reason, "A message can never be stored; moving it to the dead-letter queue.");
    metrics::counter!("leadpipe_dead_lettered_total", "queue" => queue.to_owned()).increment(1);
    let delivery = letter.delivery;
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(
        "x-leadpipe-error".into(),
        AMQPValue::LongString(LongString::from(reason.as_bytes().to_vec())),
    );
    headers.insert(
        "x-leadpipe-queue".into(),
        AMQPValue::LongString(LongString::from(queue.as_bytes().to_vec())),
    );
    headers.insert(
        "x-leadpipe-failed-at".into(),
        AMQPValue::LongString(LongString::from(Utc::now().to_rfc3339().into_bytes())),
    );
    let (data, message_id, content_type) = match &letter.part {
        Some((bytes, id)) => (
            bytes.as_slice(),
            id.clone().map(Into::into),
            ENVELOPE_CONTENT_TYPE,
        ),
        None => (
            delivery.data.as_slice(),
            delivery.properties.message_id().clone(),
            delivery
                .properties
                .content_type()
                .as_ref()
                .map_or(ENVELOPE_CONTENT_TYPE, |t| t.as_str()),
        ),
    };
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers)
        .with_content_type(content_type.into());
    let properties = match message_id {
        Some(id) => properties.with_message_id(id),
        None => properties,
    };
    let confirmation = channel
        .basic_publish(
            topology.dead_exchange().into(),
            "".into(),
            // Mandatory: without a dead-letter queue the broker would confirm the copy and
            // drop it, and acking the original would lose the inquiry.
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            data,
            properties,
        )
        .await?
        .await?;
    // One dead letter at a time on this channel: a return can only be this message's.
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => {
            metrics::counter!("leadpipe_dead_letter_failures_total", "queue" => queue.to_owned())
                .increment(1);
            Err(SessionError::DeadLetter(
                "the dead-letter queue is missing; the message stays in its queue until the \
                 queue is declared again"
                    .into(),
            ))
        }
        other => Err(SessionError::DeadLetter(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;

    use super::*;
    use crate::testing;

    /// Records the size of every batch it is handed and files nothing, taking `hold` over
    /// each; counts how many batches it held at once.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<usize>>,
        hold: Duration,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    #[async_trait]
    impl BatchSink for Recorder {
        async fn store_batch(&self, batch: &[&Envelope]) -> Result<Vec<StoreOutcome>, SinkError> {
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most_in_flight.fetch_max(now, SeqCst);
            tokio::time::sleep(self.hold).await;
            self.batches.lock().unwrap().push(batch.len());
            self.in_flight.fetch_sub(1, SeqCst);
            Ok(batch.iter().map(|_| StoreOutcome::Replay).collect())
        }
    }

    impl Recorder {
        fn batches(&self) -> Vec<usize> {
            self.batches.lock().unwrap().clone()
        }

        /// Waits until `n` envelopes were handed over, or `within` passed.
        async fn wait_for(&self, n: usize, within: Duration) -> usize {
            let deadline = Instant::now() + within;
            loop {
                let seen: usize = self.batches().iter().sum();
                if seen >= n || Instant::now() >= deadline {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// A shard consumer set over `config` with the queues declared, and its recorder.
    struct Rig {
        config: AmqpConfig,
        recorder: Arc<Recorder>,
        tracker: TaskTracker,
        stop: CancellationToken,
        channel: Channel,
        connection: lapin::Connection,
    }

    impl Rig {
        async fn new(prefetch: u16, batch_size: usize, batch_wait_ms: u64) -> Self {
            let mut config = testing::config();
            config.prefetch = prefetch;
            config.batch_size = batch_size;
            config.batch_wait_ms = batch_wait_ms;
            let connection = testing::connect().await;
            Topology::new(&config)
                .declare(&connection)
                .await
                .expect("declare the topology");
            let channel = testing::confirm_channel(&connection).await;
            Self {
                config,
                recorder: Arc::default(),
                tracker: TaskTracker::new(),
                stop: CancellationToken::new(),
                channel,
                connection,
            }
        }

        /// Puts `n` one-envelope messages on shard 0's queue, each confirmed.
        async fn enqueue(&self, n: u32) {
            self.enqueue_on(0, n).await
        }

        /// Puts `n` one-envelope messages on `shard`'s queue, each confirmed.
        async fn enqueue_on(&self, shard: u16, n: u32) {
            let queue = Topology::new(&self.config).shard_queue(shard);
            for i in 0..n {
                let confirm = self
                    .channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &testing::envelope(i).to_bytes(),
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type(ENVELOPE_CONTENT_TYPE.into()),
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("confirm");
                assert!(matches!(confirm, Confirmation::Ack(None)), "{confirm:?}");
            }
        }

        fn start(&self) {
            ConsumerSet::new(self.config.clone(), self.recorder.clone())
                .spawn(&self.tracker, self.stop.clone());
        }

        async fn finish(self) {
            self.stop.cancel();
            self.tracker.close();
            self.tracker.wait().await;
            testing::clean_up(&self.config).await;
        }
    }

    /// Long enough that a batch waiting it out could never pass the test's deadline.
    const FOREVER_MS: u64 = 120_000;
    const DEADLINE: Duration = Duration::from_secs(15);

    /// The batches in which a consumer starting on `n` queued messages files them all.
    async fn batches_for_backlog(prefetch: u16, batch_size: usize, n: u32) -> Vec<usize> {
        let rig = Rig::new(prefetch, batch_size, FOREVER_MS).await;
        rig.enqueue(n).await;
        rig.start();
        let seen = rig.recorder.wait_for(n as usize, DEADLINE).await;
        let batches = rig.recorder.batches();
        rig.finish().await;
        assert_eq!(seen, n as usize, "batches so far: {batches:?}");
        batches
    }

    #[tokio::test]
    async fn a_backlog_beyond_the_prefetch_is_filed_without_waiting_for_fuller_batches() {
        // The broker sends no more than `prefetch` unacked messages, so a batch that holds
        // them all can grow no further however long it waits.
        let batches = batches_for_backlog(8, 200, 30).await;
        assert!(batches.iter().all(|&n| n <= 8), "{batches:?}");
    }

    #[tokio::test]
    async fn the_tail_of_a_backlog_is_filed_at_once() {
        // After full batches the consumer is catching up: what is left once the queue runs
        // dry goes in at once rather than after batch_wait_ms (a restarted daemon's
        // backlog must not end with every shard's last batch held back).
        assert_eq!(batches_for_backlog(64, 10, 25).await, vec![10, 10, 5]);
    }

    #[tokio::test]
    async fn a_consumer_that_caught_up_waits_to_fill_its_next_batch() {
        let rig = Rig::new(64, 200, 1_500).await;
        rig.start();
        rig.enqueue(1).await;
        assert_eq!(rig.recorder.wait_for(1, DEADLINE).await, 1);
        // A trickle after the queue ran dry: one transaction for the three, not three.
        for _ in 0..3 {
            rig.enqueue(1).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seen = rig.recorder.wait_for(4, DEADLINE).await;
        let batches = rig.recorder.batches();
        rig.finish().await;
        assert_eq!(seen, 4, "batches so far: {batches:?}");
        assert_eq!(batches, vec![1, 3]);
    }

    /// The most batches the sink held at once when every shard's consumer got `per_shard`
    /// messages at about the same time, with batches of `batch_size`.
    async fn most_at_once(steady_batches: u16, batch_size: usize, per_shard: u32) -> usize {
        let mut rig = Rig::new(64, batch_size, 50).await;
        rig.config.shards = 3;
        rig.config.steady_batches = steady_batches;
        Topology::new(&rig.config)
            .declare(&rig.connection)
            .await
            .expect("declare the topology");
        rig.recorder = Arc::new(Recorder {
            hold: Duration::from_millis(300),
            ..Recorder::default()
        });
        rig.start();
        // Subscribed and idle: what comes next is a steady trickle, not a backlog.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for shard in 0..3 {
            rig.enqueue_on(shard, per_shard).await;
        }
        let n = 3 * per_shard as usize;
        let seen = rig.recorder.wait_for(n, DEADLINE).await;
        let most = rig.recorder.most_in_flight.load(SeqCst);
        let batches = rig.recorder.batches();
        rig.finish().await;
        assert_eq!(seen, n, "batches so far: {batches:?}");
        most
    }

    #[tokio::test]
    async fn partial_batches_of_all_shards_take_turns() {
        assert_eq!(most_at_once(1, 200, 1).await, 1);
    }

    #[tokio::test]
    async fn more_steady_batches_are_filed_side_by_side() {
        // The same trickle with a turn per shard: the test above could not pass by chance.
        assert!(most_at_once(3, 200, 1).await > 1);
    }

    #[tokio::test]
    async fn full_batches_do_not_wait_for_a_turn() {
        // Batches of 2 from 4 waiting messages a shard: each is full, a backlog.
        assert!(most_at_once(1, 2, 4).await > 1);
    }
}
