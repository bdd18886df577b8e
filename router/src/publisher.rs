//! Publishing with publisher confirms.
//!
//! A publish succeeds only when the broker confirmed the message (for quorum queues: once
//! a majority stored it). Intake answers its client from that result, so an error here is
//! a 503 to the client and never a silent loss. The connection is kept by a maintenance
//! task that reconnects with backoff; while the broker is away, publishes fail fast
//! instead of piling up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::AmqpConfig;
use crate::envelope::Envelope;
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
}

struct Live {
    connection: Connection,
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Live {
    fn healthy(&self) -> bool {
        self.connection.status().connected() && self.channels.iter().all(|c| c.status().connected())
    }
}

/// Publishes envelopes to the shard queues, with confirms.
pub struct Publisher {
    config: AmqpConfig,
    topology: Topology,
    live: RwLock<Option<Arc<Live>>>,
}

impl Publisher {
    /// A publisher that is not yet connected; call [`Publisher::run`] to connect.
    pub fn new(config: AmqpConfig) -> Arc<Self> {
        Arc::new(Self {
            topology: Topology::new(&config),
            config,
            live: RwLock::new(None),
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

    /// Keeps the connection up until `shutdown`: connects, declares the topology,
    /// watches the connection, reconnects with backoff, and reports queue depths.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut depth_tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            let healthy = self.live.read().await.as_ref().is_some_and(|l| l.healthy());
            if !healthy {
                self.live.write().await.take();
                match self.connect().await {
                    Ok(live) => {
                        tracing::info!(prefix = %self.config.prefix, "Connected to the message broker.");
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
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = depth_tick.tick() => self.report_depths().await,
                _ = shutdown.cancelled() => break,
            }
        }
        self.close().await;
    }

    /// Closes the connection after the confirms in flight arrived.
    pub async fn close(&self) {
        if let Some(live) = self.live.write().await.take() {
            for channel in &live.channels {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), channel.wait_for_confirms()).await;
            }
            let _ = live
                .connection
                .close(200, "leadpipe shutting down".into())
                .await;
        }
    }

    async fn connect(&self) -> lapin::Result<Live> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("leadpipe publisher {}", std::process::id()).into());
        let connection = Connection::connect(&self.config.url, props).await?;
        let setup = connection.create_channel().await?;
        self.topology.declare(&setup).await?;
        let _ = setup.close(200, "topology declared".into()).await;
        let mut channels = Vec::with_capacity(self.config.publisher_channels.into());
        for _ in 0..self.config.publisher_channels {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channels.push(channel);
        }
        Ok(Live {
            connection,
            channels,
            next: AtomicUsize::new(0),
        })
    }

    /// Publishes one envelope to its shard and waits for the broker's confirm.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), PublishError> {
        let live = self
            .live
            .read()
            .await
            .clone()
            .filter(|l| l.healthy())
            .ok_or_else(|| PublishError::Unavailable("not connected".into()))?;
        let channel =
            &live.channels[live.next.fetch_add(1, Ordering::Relaxed) % live.channels.len()];
        let shard = shard_for(&envelope.lead.primary_key(), self.topology.shards());
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(envelope.lead.inquiry.id.to_string().into())
            .with_timestamp(envelope.published_at.timestamp().max(0) as u64);
        let payload = envelope.to_bytes();
        let timeout = Duration::from_millis(self.config.confirm_timeout_ms);
        let confirm = async {
            channel
                .basic_publish(
                    self.topology.intake_exchange().into(),
                    self.topology.shard_routing_key(shard).into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &payload,
                    properties,
                )
                .await?
                .await
        };
        let outcome = match tokio::time::timeout(timeout, confirm).await {
            Err(_) => Err(PublishError::Timeout(timeout)),
            Ok(Err(error)) => {
                self.forget(&live).await;
                Err(PublishError::Unavailable(error.to_string()))
            }
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                // A missing queue: reconnecting re-declares the topology.
                self.forget(&live).await;
                Err(PublishError::Unroutable(returned.reply_text.to_string()))
            }
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Unavailable(
                "publisher confirms are not enabled on this channel".into(),
            )),
        };
        match &outcome {
            Ok(()) => metrics::counter!("leadpipe_inquiries_published_total").increment(1),
            Err(error) => {
                metrics::counter!("leadpipe_publish_failures_total").increment(1);
                tracing::warn!(%error, inquiry_id = %envelope.lead.inquiry.id, "Publishing failed; the client is told to retry.");
            }
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
