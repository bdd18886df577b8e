//! The dead-letter queue: what is in it, and putting it back through the pipeline once
//! the cause is fixed.

use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection};

use crate::config::AmqpConfig;
use crate::connect::Brokers;
use crate::envelope::{ENVELOPE_CONTENT_TYPE, Envelope};
use crate::routing::shard_for;
use crate::topology::Topology;

/// One dead-lettered message, as shown to an operator.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The message id (the inquiry id), when set.
    pub message_id: Option<String>,
    /// Why it was dead-lettered (`x-leadpipe-error`, or the broker's `x-death` reason).
    pub error: String,
    /// The queue it came from.
    pub queue: Option<String>,
}

/// What the dead-letter and parked queues hold.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterSummary {
    /// Messages in the dead-letter queue.
    pub total: u32,
    /// Undecodable dead letters set aside in the parked queue.
    pub parked: u32,
    /// The parked queue's name, for operators who inspect or purge it.
    pub parked_queue: String,
    /// The first dead letters, oldest first.
    pub letters: Vec<DeadLetter>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Messages published back to their shard and removed from the dead-letter queue.
    pub replayed: u64,
    /// Undecodable messages moved to the parked queue, out of the replay's way.
    pub parked: u64,
}

/// Why the dead-letter queue could not be read or replayed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The broker failed.
    #[error("message broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker did not take a replayed message.
    #[error(
        "the broker did not confirm a replayed message ({0}); it stays in the dead-letter queue"
    )]
    NotConfirmed(String),
}

fn header_text(headers: &FieldTable, name: &str) -> Option<String> {
    headers
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .and_then(|(_, v)| match v {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        })
}

fn describe(properties: &BasicProperties) -> DeadLetter {
    let headers = properties.headers().clone().unwrap_or_default();
    let error = header_text(&headers, "x-leadpipe-error")
        .or_else(|| {
            header_text(&headers, "x-first-death-reason")
                .map(|r| format!("dead-lettered by the broker: {r}"))
        })
        .unwrap_or_else(|| "no reason recorded".into());
    DeadLetter {
        message_id: properties.message_id().as_ref().map(|s| s.to_string()),
        error,
        queue: header_text(&headers, "x-leadpipe-queue")
            .or_else(|| header_text(&headers, "x-first-death-queue")),
    }
}

async fn open(config: &AmqpConfig) -> Result<(Connection, lapin::Channel, u32), DeadLetterError> {
    let topology = Topology::new(config);
    let connection = Brokers::new(config.broker_urls())
        .connect(&format!("leadpipe dead-letters {}", std::process::id()))
        .await?;
    topology.declare(&connection).await?;
    let channel = connection.create_channel().await?;
    let total = message_count(&channel, &topology.dead_queue()).await?;
    Ok((connection, channel, total))
}

async fn message_count(channel: &lapin::Channel, queue: &str) -> Result<u32, DeadLetterError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    Ok(declared.message_count())
}

/// Counts the dead and parked messages and describes up to `limit` dead letters without
/// removing them.
pub async fn list(config: &AmqpConfig, limit: u32) -> Result<DeadLetterSummary, DeadLetterError> {
    let (connection, channel, total) = open(config).await?;
    let topology = Topology::new(config);
    let parked = message_count(&channel, &topology.parked_queue()).await?;
    let queue = topology.dead_queue();
    let mut out = Vec::new();
    for _ in 0..total.min(limit) {
        let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        out.push(describe(&message.delivery.properties));
    }
    // Closing without acking returns every message to the queue, in order.
    let _ = channel.close(200, "listed".into()).await;
    let _ = connection.close(200, "listed".into()).await;
    Ok(DeadLetterSummary {
        total,
        parked,
        parked_queue: topology.parked_queue(),
        letters: out,
    })
}

/// Publishes each dead letter back to the shard of its lead (after `reroute` updated its
/// route with the current rules), with confirms, and removes it from the dead-letter
/// queue. Messages that cannot be decoded are moved to the parked queue, so that they are
/// neither lost nor read again by every replay.
pub async fn replay(
    config: &AmqpConfig,
    limit: u32,
    reroute: impl Fn(&mut Envelope),
) -> Result<ReplayReport, DeadLetterError> {
    let (connection, channel, total) = open(config).await?;
    let topology = Topology::new(config);
    let publish = connection.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut report = ReplayReport::default();
    // Each message present at the start is looked at once.
    for _ in 0..total.min(limit) {
        let Some(message) = channel
            .basic_get(
                topology.dead_queue().as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let mut envelope = match Envelope::from_bytes(&delivery.data) {
            Ok(envelope) => envelope,
            Err(reason) => {
                tracing::warn!(%reason, "Parking an undecodable dead letter.");
                let parked = publish_confirmed(
                    &publish,
                    "",
                    &topology.parked_queue(),
                    &delivery.data,
                    delivery.properties.clone(),
                )
                .await?;
                if !parked {
                    return Err(DeadLetterError::NotConfirmed(format!(
                        "the parked queue {} is missing",
                        topology.parked_queue()
                    )));
                }
                channel
                    .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                    .await?;
                report.parked += 1;
                continue;
            }
        };
        reroute(&mut envelope);
        let shard = shard_for(&envelope.lead.primary_key(), topology.shards());
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ENVELOPE_CONTENT_TYPE.into())
            .with_message_id(envelope.lead.inquiry.id.to_string().into());
        let routed = publish_confirmed(
            &publish,
            &topology.intake_exchange(),
            &topology.shard_routing_key(shard),
            &envelope.to_bytes(),
            properties,
        )
        .await?;
        if !routed {
            return Err(DeadLetterError::NotConfirmed(format!(
                "shard queue {} went missing during the replay; run the replay again",
                topology.shard_queue(shard)
            )));
        }
        channel
            .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
            .await?;
        report.replayed += 1;
    }
    let _ = channel.close(200, "replayed".into()).await;
    let _ = connection.close(200, "replayed".into()).await;
    Ok(report)
}

/// Publishes `payload` mandatory on a confirm channel with nothing else in flight; true
/// when the broker routed and confirmed it, false when it came back unroutable.
async fn publish_confirmed(
    channel: &lapin::Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> Result<bool, DeadLetterError> {
    let confirmation = tokio::time::timeout(Duration::from_secs(30), async {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                payload,
                properties,
            )
            .await?
            .await
    })
    .await
    .map_err(|_| DeadLetterError::NotConfirmed("timed out".into()))??;
    match confirmation {
        Confirmation::Ack(None) => Ok(true),
        Confirmation::Ack(Some(_)) => Ok(false),
        other => Err(DeadLetterError::NotConfirmed(format!("{other:?}"))),
    }
}
