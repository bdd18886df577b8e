//! Helpers for the tests that run against the real broker (`LEADPIPE_TEST_AMQP_URL`).

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use crate::config::AmqpConfig;
use crate::topology::Topology;

/// The broker the tests use.
pub fn amqp_url() -> String {
    std::env::var("LEADPIPE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Settings with a prefix of their own, so tests run side by side.
pub fn config() -> AmqpConfig {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut config = AmqpConfig::new(amqp_url(), format!("lpr{}", &token[..12]));
    config.shards = 2;
    config
}

/// A connection to the test broker.
pub async fn connect() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ (is it running? scripts/services.sh starts it)")
}

/// A channel in confirm mode on `connection`, for publishing test messages.
pub async fn confirm_channel(connection: &Connection) -> lapin::Channel {
    let channel = connection.create_channel().await.expect("a channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    channel
}

/// Deletes every queue and exchange of `config`'s prefix.
pub async fn clean_up(config: &AmqpConfig) {
    let topology = Topology::new(config);
    let connection = connect().await;
    for queue in topology.all_queues() {
        // A failed delete closes the channel: one channel each.
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for exchange in [topology.intake_exchange(), topology.dead_exchange()] {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "test cleanup".into()).await;
}

/// Takes every message out of `queue` (none when it does not exist). Shard queues have a
/// single active consumer, which rules out basic.get.
pub async fn drain_deliveries(
    connection: &Connection,
    queue: &str,
) -> Vec<lapin::message::Delivery> {
    let channel = connection.create_channel().await.expect("a channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let mut out = Vec::new();
    let Ok(declared) = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    else {
        return out;
    };
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    for _ in 0..declared.message_count() {
        let delivery = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
            .await
            .expect("a queued message arrives")
            .expect("a delivery")
            .expect("a delivery");
        out.push(delivery);
    }
    let _ = channel.close(200, "drained".into()).await;
    out
}

/// A form inquiry from its own person, ready to publish.
pub fn envelope(i: u32) -> crate::Envelope {
    use ingest::inquiry::{Channel, Inquiry, InquiryId};
    let mut inquiry = Inquiry::new(
        InquiryId::new_unique(),
        Channel::Form,
        "website",
        chrono::Utc::now(),
    );
    inquiry.default_region = Some("IT".into());
    inquiry.contact.email = Some(format!("person{i}@example.com"));
    crate::Envelope::new(
        normalizer::normalize(inquiry),
        crate::Route {
            pipeline: "default".into(),
            stage: None,
        },
    )
}
