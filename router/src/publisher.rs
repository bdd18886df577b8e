//! Publishing with publisher confirms.
//!
//! A publish succeeds only when the broker confirmed the message (for quorum queues: once
//! a majority stored it). Intake answers its client from that result, so an error here is
//! a 503 to the client and never a silent loss. The connection is kept by a maintenance
//! task that reconnects with backoff; while the broker is away, publishes fail fast
//! instead of piling up.
//!
//! # One publish per channel at a time
//!
//! Every message is published `mandatory`, so one the broker cannot route (its shard
//! queue was deleted) comes back as a `basic.return` ahead of its confirm. lapin keeps
//! returned messages in one queue per channel and hands the oldest to whichever confirm
//! of that channel completes next (`returned_messages.rs`, `acknowledgement.rs`). With
//! several publishes in flight on a channel, the broker's return for message X can
//! therefore be attached to the confirm of an earlier message Y that was routed and
//! stored: Y's client would get a 503 and X's a 202 for a message that was dropped.
//!
//! The publisher therefore keeps a pool of confirm-mode channels and checks one out
//! exclusively for each publish until its confirm arrived. A channel then never has more
//! than one confirm outstanding, so a return on it can only belong to that publish. A
//! channel that saw a return, a nack, an error or no confirm in time is closed rather
//! than reused: it may still owe a confirm, or hold state for the queue that went away.
//! The pool holds up to `publisher_channels` channels, opened on demand; throughput is
//! about that many divided by the confirm latency (1-2 ms for a local quorum queue), and
//! publishes beyond it wait for a channel within their confirm timeout.
//!
//! # Many inquiries per broker message
//!
//! Each shard has at most `publish_in_flight` messages awaiting their confirm. Envelopes
//! that arrive meanwhile wait, and the next message carries all of them (up to
//! `publish_batch`, one envelope per line, content type [`BATCH_CONTENT_TYPE`]); every
//! waiting caller gets that message's outcome. An idle shard sends at once, so a lone post
//! pays nothing for this, and under load the broker stores, replicates and confirms one
//! message for many posts. A return or nack of a batch fails every inquiry in it, which is
//! what each caller is told; the consumer stores the envelopes of a batch in order and
//! dead-letters an unreadable or unstorable one alone.
//!
//! A return means a shard queue is missing. The maintenance task then declares the
//! topology again on the same connection, so the queue is back within milliseconds and
//! no other publish in flight is disturbed. (An alternate exchange would turn returns
//! into a catch-all queue instead, which then needs its own draining and alarms; a
//! 503 the client retries with its Idempotency-Key is simpler and loses nothing.)
//!
//! # Blocked by the broker
//!
//! During a memory or disk alarm RabbitMQ sends `connection.blocked` and stops reading
//! from publishing connections, so a publish would only end at its timeout. While the
//! connection is blocked, publishes fail at once with [`PublishError::Blocked`] (intake
//! then writes to its spool), until `connection.unblocked`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::{Notify, RwLock, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::AmqpConfig;
use crate::connect::Brokers;
use crate::envelope::{BATCH_CONTENT_TYPE, ENVELOPE_CONTENT_TYPE, Envelope, batch_bytes};
use crate::routing::shard_for;
use crate::topology::Topology;

/// Why a message was not confirmed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// No working connection to the broker.
    #[error("the message broker is unavailable: {0}")]
    Unavailable(String),
    /// The broker refused to take responsibility for the message.
    #[error("the message broker refused the message (nack)")]
    Nacked,
    /// No queue was bound for the message's routing key.
    #[error("the message broker could not route the message: {0}")]
    Unroutable(String),
    /// No confirm arrived in time; the message may or may not be stored.
    #[error("the message broker did not confirm within {0:?}")]
    Timeout(Duration),
    /// The broker blocked publishing (a memory or disk alarm); nothing was sent.
    #[error("the message broker blocked publishing ({0}); free memory or disk space on it")]
    Blocked(String),
}

impl PublishError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Nacked => "nacked",
            Self::Unroutable(_) => "unroutable",
            Self::Timeout(_) => "timeout",
            Self::Blocked(_) => "blocked",
        }
    }
}

/// How long after a return the publisher waits before it declares the topology again.
const REDECLARE_GRACE: Duration = Duration::from_millis(250);

/// A connection and its pool of confirm-mode channels.
struct Live {
    connection: Connection,
    /// Channels whose last publish was confirmed, with the generation they were opened
    /// in. std Mutex: never held across `.await`.
    idle: Mutex<Vec<(u64, Channel)>>,
    /// Bumped when a queue turned out to be missing: channels of an older generation are
    /// closed instead of reused.
    generation: AtomicU64,
    /// One permit per channel the pool may have; a publish holds one until its confirm.
    slots: Semaphore,
    size: u32,
    /// The reason of the broker's last `connection.blocked`; std Mutex, never held
    /// across `.await`.
    blocked_reason: Arc<Mutex<Option<String>>>,
    /// Stops the task that follows the connection's events when this goes.
    _events: tokio_util::sync::DropGuard,
}

impl Live {
    fn healthy(&self) -> bool {
        self.connection.status().connected()
    }

    /// Why the broker blocked this connection, while it does.
    fn blocked(&self) -> Option<String> {
        if !self.connection.status().blocked() {
            return None;
        }
        let reason = self
            .blocked_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(reason.unwrap_or_else(|| "a resource alarm".into()))
    }

    /// An idle channel of the current generation, or a new one when none is left.
    async fn checkout(&self) -> lapin::Result<(u64, Channel)> {
        let generation = self.generation.load(Ordering::Acquire);
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some((g, channel)) if g == generation && channel.status().connected() => {
                    return Ok((g, channel));
                }
                // Dropping the last handle closes the channel.
                Some(_) => continue,
                None => break,
            }
        }
        let channel = self.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok((generation, channel))
    }

    fn checkin(&self, generation: u64, channel: Channel) {
        if generation == self.generation.load(Ordering::Acquire) {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((generation, channel));
        }
    }

    /// Closes every idle channel and keeps busy ones from coming back to the pool.
    ///
    /// A channel that published to a quorum queue keeps its state for that queue. When the
    /// queue is deleted and declared again under the same name, such a channel does not
    /// always learn of it, and RabbitMQ 3.10 then confirms what it publishes to the new
    /// queue without ever enqueueing it. Channels opened after the queue went missing
    /// have no such state.
    fn retire_channels(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Most bytes of envelopes joined into one broker message (one envelope alone may be
/// larger).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// An envelope waiting for a broker message of its shard.
struct Waiting {
    payload: Vec<u8>,
    /// The inquiry id, the message id of a broker message it opens.
    inquiry_id: String,
    published_at: chrono::DateTime<chrono::Utc>,
    reply: oneshot::Sender<Result<(), PublishError>>,
}

/// An envelope in wire form with what publishing it needs, so that a spooled entry is
/// published as it was written instead of being decoded and encoded again.
#[derive(Debug, Clone)]
pub struct WireEnvelope {
    /// The key its shard is chosen by: the lead's primary key.
    pub shard_key: String,
    /// The inquiry id, the message id of a broker message it opens.
    pub inquiry_id: String,
    /// When intake published it.
    pub published_at: chrono::DateTime<chrono::Utc>,
    /// The envelope's bytes ([`Envelope::to_bytes`]).
    pub payload: Vec<u8>,
}

impl WireEnvelope {
    /// An envelope's wire form.
    pub fn of(envelope: &Envelope) -> Self {
        Self {
            shard_key: envelope.lead.primary_key(),
            inquiry_id: envelope.lead.inquiry.id.to_string(),
            published_at: envelope.published_at,
            payload: envelope.to_bytes(),
        }
    }
}

/// What waits for one shard, and how many tasks are sending it.
#[derive(Default)]
struct ShardWaiting {
    waiting: VecDeque<Waiting>,
    senders: usize,
}

/// Publishes envelopes to the shard queues, with confirms.
pub struct Publisher {
    config: AmqpConfig,
    topology: Topology,
    live: RwLock<Option<Arc<Live>>>,
    brokers: Brokers,
    /// Set when a message came back unroutable (a queue is missing), with `redeclare`
    /// woken; cleared when the topology is declared again.
    missing_queue: AtomicBool,
    redeclare: Notify,
    /// Per shard: envelopes waiting to be sent. std Mutex, never held across `.await`.
    waiting: Vec<Mutex<ShardWaiting>>,
}

impl Publisher {
    /// A publisher that is not yet connected; call [`Publisher::run`] to connect.
    pub fn new(config: AmqpConfig) -> Arc<Self> {
        let config = config.with_frame_max_default();
        Arc::new(Self {
            topology: Topology::new(&config),
            brokers: Brokers::new(config.broker_urls()),
            waiting: (0..config.shards)
                .map(|_| Mutex::new(ShardWaiting::default()))
                .collect(),
            config,
            live: RwLock::new(None),
            missing_queue: AtomicBool::new(false),
            redeclare: Notify::new(),
        })
    }

    /// The topology this publisher declares.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// True when connected and able to publish.
    pub async fn is_ready(&self) -> bool {
        self.live.read().await.as_ref().is_some_and(|l| l.healthy())
    }

    /// Why the broker blocks publishing (a memory or disk alarm), while it does.
    pub async fn blocked(&self) -> Option<String> {
        self.live
            .read()
            .await
            .as_ref()
            .filter(|l| l.healthy())
            .and_then(|l| l.blocked())
    }

    /// Keeps the connection up until `shutdown`: connects, declares the topology (again
    /// whenever a message came back unroutable), watches the connection, reconnects with
    /// backoff, and reports queue depths.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut depth_tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            let healthy = self.live.read().await.as_ref().is_some_and(|l| l.healthy());
            if !healthy {
                self.live.write().await.take();
                match self.connect().await {
                    Ok(live) => {
                        tracing::info!(prefix = %self.config.prefix, "The publisher is connected.");
                        *self.live.write().await = Some(Arc::new(live));
                        backoff.reset();
                    }
                    Err(error) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(%error, retry_in = ?delay, "Cannot connect to the message broker; intake answers 503 until it is back.");
                        metrics::counter!("leadpipe_broker_connect_failures_total").increment(1);
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => continue,
                            _ = shutdown.cancelled() => break,
                        }
                    }
                }
            }
            let blocked = self.blocked().await.is_some();
            metrics::gauge!("leadpipe_broker_blocked").set(if blocked { 1.0 } else { 0.0 });
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = depth_tick.tick() => self.report_depths().await,
                _ = self.redeclare.notified() => self.declare_again().await,
                _ = shutdown.cancelled() => break,
            }
        }
        self.close().await;
    }

    /// Closes the connection after the confirms in flight arrived.
    pub async fn close(&self) {
        if let Some(live) = self.live.write().await.take() {
            // Every publish in flight holds a slot until its confirm.
            let _ =
                tokio::time::timeout(Duration::from_secs(5), live.slots.acquire_many(live.size))
                    .await;
            live.slots.close();
            let _ = live
                .connection
                .close(200, "leadpipe shutting down".into())
                .await;
        }
    }

    async fn connect(&self) -> lapin::Result<Live> {
        let connection = self
            .brokers
            .connect(&format!("leadpipe publisher {}", std::process::id()))
            .await?;
        let blocked_reason = Arc::new(Mutex::new(None));
        let events = CancellationToken::new();
        tokio::spawn(follow_blocking(
            connection.events_listener(),
            blocked_reason.clone(),
            events.clone(),
        ));
        // Also stops the task when declaring fails and the connection is dropped.
        let events = events.drop_guard();
        self.topology.declare(&connection).await?;
        let size = u32::from(self.config.publisher_channels);
        Ok(Live {
            connection,
            idle: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            slots: Semaphore::new(size as usize),
            size,
            blocked_reason,
            _events: events,
        })
    }

    /// Declares the topology again on the live connection: a message came back unroutable.
    async fn declare_again(&self) {
        // The consumers of a deleted quorum queue learn about it some 30 ms after the
        // deletion, and a queue declared again before that keeps their subscriptions
        // attached but silent (RabbitMQ 3.10). They declare their own queue once they
        // know; this is the fallback for a shard nobody consumes right now.
        if !self.missing_queue.load(Ordering::Acquire) {
            return;
        }
        tokio::time::sleep(REDECLARE_GRACE).await;
        // Returns that arrived during the grace are answered by this declaration.
        if !self.missing_queue.swap(false, Ordering::AcqRel) {
            return;
        }
        let Some(live) = self.live.read().await.clone() else {
            return;
        };
        metrics::counter!("leadpipe_topology_redeclared_total").increment(1);
        match self.topology.declare(&live.connection).await {
            Ok(()) => tracing::warn!(
                prefix = %self.config.prefix,
                "A message could not be routed; declared the exchanges and queues again."
            ),
            Err(error) => {
                tracing::warn!(%error, "Cannot declare the exchanges and queues again; reconnecting.");
                self.forget(&live).await;
            }
        }
    }

    /// Publishes one envelope to its shard and waits for the broker's confirm.
    ///
    /// The envelope joins the inquiries waiting for its shard. A shard has at most
    /// `publish_in_flight` broker messages awaiting their confirm; when one is confirmed,
    /// everything that waited meanwhile (up to `publish_batch` inquiries) goes in the next
    /// message. An idle shard publishes at once, so batching costs a lone post nothing,
    /// and under load one confirm (and one broker message) serves many posts.
    pub async fn publish(self: &Arc<Self>, envelope: &Envelope) -> Result<(), PublishError> {
        self.publish_wire(WireEnvelope::of(envelope)).await
    }

    /// Publishes an envelope already in wire form (a spooled entry), as
    /// [`Publisher::publish`] does.
    pub async fn publish_wire(self: &Arc<Self>, wire: WireEnvelope) -> Result<(), PublishError> {
        let inquiry_id = wire.inquiry_id.clone();
        let outcome = self.publish_batched(wire).await;
        match &outcome {
            Ok(()) => metrics::counter!("leadpipe_inquiries_published_total").increment(1),
            Err(error) => {
                metrics::counter!("leadpipe_publish_failures_total", "reason" => error.reason())
                    .increment(1);
                tracing::warn!(%error, %inquiry_id, "Publishing failed; the client is told to retry.");
            }
        }
        outcome
    }

    async fn publish_batched(self: &Arc<Self>, wire: WireEnvelope) -> Result<(), PublishError> {
        // Fail fast, as an unbatched publish would, rather than queue behind a broker
        // that is away or blocking.
        {
            let live = self.live.read().await;
            let live = live
                .as_ref()
                .filter(|l| l.healthy())
                .ok_or_else(|| PublishError::Unavailable("not connected".into()))?;
            if let Some(reason) = live.blocked() {
                return Err(PublishError::Blocked(reason));
            }
        }
        let shard = shard_for(&wire.shard_key, self.topology.shards());
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            payload: wire.payload,
            inquiry_id: wire.inquiry_id,
            published_at: wire.published_at,
            reply,
        };
        let start_sender = {
            let mut queue = self.waiting[usize::from(shard)]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            queue.waiting.push_back(waiting);
            let start = queue.senders < usize::from(self.config.publish_in_flight);
            if start {
                queue.senders += 1;
            }
            start
        };
        if start_sender {
            tokio::spawn(self.clone().send_waiting(shard));
        }
        // The sender's own publish is bounded by the confirm timeout; this bounds the wait
        // in the queue too. A caller that gave up is left out of the message if it has
        // not been sent yet.
        let timeout = Duration::from_millis(self.config.confirm_timeout_ms);
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(PublishError::Unavailable(
                "the publisher stopped before the message was sent".into(),
            )),
            Err(_) => Err(PublishError::Timeout(timeout)),
        }
    }

    /// Sends what waits for `shard`, one broker message at a time, until nothing does.
    async fn send_waiting(self: Arc<Self>, shard: u16) {
        let most = usize::from(self.config.publish_batch);
        loop {
            let batch: Vec<Waiting> = {
                let mut queue = self.waiting[usize::from(shard)]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let mut batch = Vec::new();
                let mut bytes = 0;
                while batch.len() < most && bytes < MAX_BATCH_BYTES {
                    let Some(next) = queue.waiting.pop_front() else {
                        break;
                    };
                    // Its caller gave up (timed out or went away): it was told the publish
                    // failed, so it is not sent.
                    if next.reply.is_closed() {
                        continue;
                    }
                    bytes += next.payload.len();
                    batch.push(next);
                }
                if batch.is_empty() {
                    queue.senders -= 1;
                    return;
                }
                batch
            };
            let oldest = batch.iter().map(|w| w.published_at).min();
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(batch[0].inquiry_id.as_str().into())
                .with_timestamp(oldest.map_or(0, |t| t.timestamp().max(0) as u64));
            let outcome = if let [one] = batch.as_slice() {
                let properties = properties.with_content_type(ENVELOPE_CONTENT_TYPE.into());
                self.publish_to(shard, &one.payload, properties).await
            } else {
                let body = batch_bytes(batch.iter().map(|w| w.payload.as_slice()));
                let properties = properties.with_content_type(BATCH_CONTENT_TYPE.into());
                self.publish_to(shard, &body, properties).await
            };
            metrics::histogram!("leadpipe_publish_batch_inquiries").record(batch.len() as f64);
            for waiting in batch {
                let _ = waiting.reply.send(outcome.clone());
            }
        }
    }

    /// Publishes `payload` to `shard` on a channel of its own and waits for the confirm.
    async fn publish_to(
        &self,
        shard: u16,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let live = self
            .live
            .read()
            .await
            .clone()
            .filter(|l| l.healthy())
            .ok_or_else(|| PublishError::Unavailable("not connected".into()))?;
        if let Some(reason) = live.blocked() {
            return Err(PublishError::Blocked(reason));
        }
        let timeout = Duration::from_millis(self.config.confirm_timeout_ms);
        // When the timeout drops this future, the channel goes with it, and lapin closes a
        // channel whose last handle is dropped: one that still owes a confirm is never
        // reused.
        let attempt = async {
            let _slot = live
                .slots
                .acquire()
                .await
                .map_err(|_| PublishError::Unavailable("the publisher is closing".into()))?;
            let (generation, channel) = live.checkout().await.map_err(broken)?;
            let confirmation = channel
                .basic_publish(
                    self.topology.intake_exchange().into(),
                    self.topology.shard_routing_key(shard).into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    payload,
                    properties,
                )
                .await
                .map_err(broken)?
                .await
                .map_err(broken)?;
            match confirmation {
                Confirmation::Ack(None) => {
                    live.checkin(generation, channel);
                    Ok(())
                }
                Confirmation::Ack(Some(returned)) => {
                    live.retire_channels();
                    self.missing_queue.store(true, Ordering::Release);
                    self.redeclare.notify_one();
                    Err(PublishError::Unroutable(returned.reply_text.to_string()))
                }
                Confirmation::Nack(_) => Err(PublishError::Nacked),
                Confirmation::NotRequested => Err(PublishError::Unavailable(
                    "publisher confirms are not enabled on this channel".into(),
                )),
            }
        };
        let outcome = tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(Err(PublishError::Timeout(timeout)));
        if matches!(outcome, Err(PublishError::Unavailable(_))) && !live.healthy() {
            self.forget(&live).await;
        }
        outcome
    }

    /// Drops a broken connection so the maintenance task replaces it.
    async fn forget(&self, broken: &Arc<Live>) {
        let mut guard = self.live.write().await;
        if guard.as_ref().is_some_and(|l| Arc::ptr_eq(l, broken)) {
            guard.take();
        }
    }

    async fn report_depths(&self) {
        let Some(live) = self.live.read().await.clone() else {
            return;
        };
        let Ok(channel) = live.connection.create_channel().await else {
            return;
        };
        for queue in self.topology.all_queues() {
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            match channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
            {
                Ok(q) => {
                    metrics::gauge!("leadpipe_queue_messages", "queue" => queue.clone())
                        .set(f64::from(q.message_count()));
                }
                Err(_) => break,
            }
        }
        let _ = channel.close(200, "depths read".into()).await;
    }
}

/// Records why the broker blocks the connection and logs when it starts and stops, until
/// `stop` (the connection was replaced) or the connection's end.
async fn follow_blocking(
    events: impl futures_util::Stream<Item = lapin::Event> + Send + 'static,
    reason: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
) {
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = stop.cancelled() => None,
        };
        match event {
            None => break,
            Some(lapin::Event::ConnectionBlocked(why)) => {
                tracing::error!(reason = %why, "The message broker blocked publishing (a memory or disk alarm); intake writes to the spool, or answers 503 without one, until the alarm clears.");
                *reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            }
            Some(lapin::Event::ConnectionUnblocked) => {
                tracing::info!("The message broker unblocked publishing.");
                reason.lock().unwrap_or_else(|e| e.into_inner()).take();
            }
            Some(_) => {}
        }
    }
}

/// A channel or connection failure, as the client sees it.
fn broken(error: lapin::Error) -> PublishError {
    PublishError::Unavailable(error.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use lapin::options::QueueDeleteOptions;
    use tokio::task::JoinSet;

    use super::*;
    use crate::testing;

    /// Takes every message out of `queue` (none when it does not exist) and counts each
    /// message id. (Shard queues have a single active consumer, which rules out basic.get.)
    async fn drain(connection: &Connection, queue: &str) -> HashMap<String, u32> {
        let mut ids = HashMap::new();
        for delivery in testing::drain_deliveries(connection, queue).await {
            let id = delivery.properties.message_id().clone();
            *ids.entry(id.map(|s| s.to_string()).unwrap_or_default())
                .or_default() += 1;
        }
        ids
    }

    /// A connected publisher whose shard 0 queue was deleted underneath it.
    struct Rig {
        publisher: Arc<Publisher>,
        topology: Topology,
        broker: Connection,
        stop: CancellationToken,
        maintenance: tokio::task::JoinHandle<()>,
    }

    impl Rig {
        async fn with_shard0_deleted(config: &AmqpConfig) -> Self {
            let publisher = Publisher::new(config.clone());
            let stop = CancellationToken::new();
            let maintenance = tokio::spawn(publisher.clone().run(stop.clone()));
            while !publisher.is_ready().await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let topology = publisher.topology().clone();
            let broker = testing::connect().await;
            let channel = broker.create_channel().await.expect("a channel");
            channel
                .queue_delete(
                    topology.shard_queue(0).as_str().into(),
                    QueueDeleteOptions::default(),
                )
                .await
                .expect("delete shard 0");
            Self {
                publisher,
                topology,
                broker,
                stop,
                maintenance,
            }
        }

        /// Whether the publisher declared shard 0 again within 10 s: it takes messages.
        async fn shard0_came_back(&self) -> bool {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let probe = BasicProperties::default().with_message_id("probe".into());
                if self.publisher.publish_to(0, b"{}", probe).await.is_ok() {
                    return true;
                }
                if tokio::time::Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        async fn finish(self, config: &AmqpConfig) {
            let _ = self.broker.close(200, "done".into()).await;
            self.stop.cancel();
            let _ = self.maintenance.await;
            testing::clean_up(config).await;
        }
    }

    /// Checks that each publish was told what became of its message (`copies` says how
    /// many copies were queued; a timeout may have been stored or not), and that some came
    /// back unroutable.
    fn assert_each_was_told_the_truth<K: Clone + Ord + std::fmt::Debug>(
        outcomes: &HashMap<K, Result<(), PublishError>>,
        copies: impl Fn(&K) -> u32,
    ) {
        let mut wrong = Vec::new();
        let mut returned = 0;
        for (key, outcome) in outcomes {
            let copies = copies(key);
            let consistent = match outcome {
                Ok(()) => copies == 1,
                Err(PublishError::Timeout(_)) => copies <= 1,
                Err(PublishError::Unroutable(_)) => {
                    returned += 1;
                    copies == 0
                }
                Err(_) => copies == 0,
            };
            if !consistent {
                wrong.push((key.clone(), outcome.clone(), copies));
            }
        }
        wrong.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(
            wrong.is_empty(),
            "{} of {} publishes were told something else than what became of their message \
             ({returned} returned), e.g. {:?}",
            wrong.len(),
            outcomes.len(),
            &wrong[..wrong.len().min(6)]
        );
        assert!(
            returned > 0,
            "the deleted queue made some publishes unroutable"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_inquiry_of_a_batch_learns_what_became_of_its_message() {
        let mut config = testing::config();
        // One message in flight per shard: whatever arrives meanwhile shares the next.
        config.publish_in_flight = 1;
        let rig = Rig::with_shard0_deleted(&config).await;
        let (publisher, topology) = (rig.publisher.clone(), rig.topology.clone());

        let mut tasks = JoinSet::new();
        for i in 0..1200u32 {
            let publisher = publisher.clone();
            tasks.spawn(async move {
                let envelope = testing::envelope(i);
                let outcome = publisher.publish(&envelope).await;
                (envelope.lead.inquiry.id.to_string(), outcome)
            });
        }
        let mut outcomes = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            let (id, outcome) = joined.expect("a publish task");
            outcomes.insert(id, outcome);
        }

        let came_back = rig.shard0_came_back().await;

        // Every inquiry that reached a queue, however it was carried.
        let mut copies: HashMap<String, u32> = HashMap::new();
        let mut shared = 0;
        for shard in 0..2 {
            for delivery in
                testing::drain_deliveries(&rig.broker, &topology.shard_queue(shard)).await
            {
                let content_type = delivery
                    .properties
                    .content_type()
                    .as_ref()
                    .map(|t| t.as_str());
                let Ok(carried) = crate::envelope::decode_message(content_type, &delivery.data)
                else {
                    continue; // a probe
                };
                if carried.len() > 1 {
                    shared += 1;
                }
                for item in carried {
                    if let crate::envelope::Carried::Envelope(e) = item {
                        *copies.entry(e.lead.inquiry.id.to_string()).or_default() += 1;
                    }
                }
            }
        }
        rig.finish(&config).await;

        assert_each_was_told_the_truth(&outcomes, |id| copies.get(id).copied().unwrap_or(0));
        assert!(
            shared > 0,
            "under load, broker messages carried several inquiries"
        );
        assert!(came_back, "the deleted queue was declared again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_publish_learns_whether_its_own_message_was_routed() {
        let config = testing::config();
        let rig = Rig::with_shard0_deleted(&config).await;
        let (publisher, topology) = (rig.publisher.clone(), rig.topology.clone());

        // Many publishes at once: those for shard 0 find no queue (until the publisher
        // declares it again), those for shard 1 are routed.
        let mut tasks = JoinSet::new();
        for i in 0..1024u32 {
            let publisher = publisher.clone();
            tasks.spawn(async move {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(i.to_string().into());
                let outcome = publisher
                    .publish_to((i % 2) as u16, b"{}", properties)
                    .await;
                (i, outcome)
            });
        }
        let mut outcomes = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            let (i, outcome) = joined.expect("a publish task");
            outcomes.insert(i, outcome);
        }

        // The publisher declares the missing queue again: shard 0 takes messages again.
        let came_back = rig.shard0_came_back().await;

        let mut queued: [HashMap<String, u32>; 2] = Default::default();
        for (shard, ids) in queued.iter_mut().enumerate() {
            *ids = drain(&rig.broker, &topology.shard_queue(shard as u16)).await;
        }
        rig.finish(&config).await;

        assert_each_was_told_the_truth(&outcomes, |i| {
            queued[(i % 2) as usize]
                .get(&i.to_string())
                .copied()
                .unwrap_or(0)
        });
        assert!(came_back, "the deleted queue was declared again");
    }
}
