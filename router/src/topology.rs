//! Exchanges and queues. Declared on every (re)connect: declarations are idempotent, and a
//! broker that lost its definitions gets them back.
//!
//! ```text
//! {prefix}.intake (direct) --shard.N--> {prefix}.shard.N (quorum, single active consumer)
//!                                              | rejected / over delivery limit
//! {prefix}.dead   (fanout) ------------------> {prefix}.dead (quorum)
//! ```

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use crate::config::AmqpConfig;

/// The names and arguments of everything leadpipe declares on the broker.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    shards: u16,
    delivery_limit: u32,
}

impl Topology {
    /// The topology for these settings.
    pub fn new(config: &AmqpConfig) -> Self {
        Self {
            prefix: config.prefix.clone(),
            shards: config.shards,
            delivery_limit: config.delivery_limit,
        }
    }

    /// Number of shard queues.
    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The exchange intake publishes to.
    pub fn intake_exchange(&self) -> String {
        format!("{}.intake", self.prefix)
    }

    /// The dead-letter exchange.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The dead-letter queue.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The queue of shard `n`.
    pub fn shard_queue(&self, n: u16) -> String {
        format!("{}.shard.{n}", self.prefix)
    }

    /// The routing key that reaches shard `n`.
    pub fn shard_routing_key(&self, n: u16) -> String {
        format!("shard.{n}")
    }

    /// Every queue name, for operators and clean-up.
    pub fn all_queues(&self) -> Vec<String> {
        let mut out: Vec<String> = (0..self.shards).map(|n| self.shard_queue(n)).collect();
        out.push(self.dead_queue());
        out
    }

    /// Declares exchanges, queues and bindings on a channel of its own.
    pub async fn declare(&self, connection: &Connection) -> lapin::Result<()> {
        self.declare_shards(connection, 0..self.shards).await
    }

    /// Declares the exchanges, the dead-letter queue and the queue of shard `n` only.
    ///
    /// A consumer declares no other shard's queue: RabbitMQ tells the consumers of a
    /// deleted quorum queue about it some 30 ms later, and a queue of the same name
    /// declared before that keeps their subscriptions attached but silent (3.10). Each
    /// consumer declares its own queue after it learned that the old one is gone.
    pub async fn declare_shard(&self, connection: &Connection, n: u16) -> lapin::Result<()> {
        self.declare_shards(connection, n..n + 1).await
    }

    async fn declare_shards(
        &self,
        connection: &Connection,
        shards: std::ops::Range<u16>,
    ) -> lapin::Result<()> {
        let channel = connection.create_channel().await?;
        self.declare_on(&channel, shards).await?;
        let _ = channel.close(200, "topology declared".into()).await;
        Ok(())
    }

    async fn declare_on(
        &self,
        channel: &Channel,
        shards: std::ops::Range<u16>,
    ) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.intake_exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_exchange().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;

        let mut dead_args = FieldTable::default();
        dead_args.insert("x-queue-type".into(), long_string("quorum"));
        channel
            .queue_declare(
                self.dead_queue().into(),
                QueueDeclareOptions::durable(),
                dead_args,
            )
            .await?;
        channel
            .queue_bind(
                self.dead_queue().into(),
                self.dead_exchange().into(),
                ShortString::from(""),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        for n in shards {
            channel
                .queue_declare(
                    self.shard_queue(n).into(),
                    QueueDeclareOptions::durable(),
                    self.shard_arguments(),
                )
                .await?;
            channel
                .queue_bind(
                    self.shard_queue(n).into(),
                    self.intake_exchange().into(),
                    self.shard_routing_key(n).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    fn shard_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        // Quorum queues: confirmed messages survive a broker restart, and confirm latency
        // stays flat under load.
        args.insert("x-queue-type".into(), long_string("quorum"));
        // One consumer per shard at a time keeps one person's inquiries in order across
        // replicas.
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(self.delivery_limit.min(i32::MAX as u32) as i32),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.dead_exchange()),
        );
        args
    }
}

/// True when the broker refused an operation with this channel-level error (which also
/// closed the channel).
pub(crate) fn is_soft_error(error: &lapin::Error, code: AMQPSoftError) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if *e.kind() == AMQPErrorKind::Soft(code))
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}
