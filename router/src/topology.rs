//! Exchanges and queues. Declared on every (re)connect: declarations are idempotent, and a
//! broker that lost its definitions gets them back.
//!
//! ```text
//! {prefix}.intake (direct) --shard.N--> {prefix}.shard.N (quorum, single active consumer)
//!                                              | rejected / over delivery limit
//! {prefix}.dead   (fanout) ------------------> {prefix}.dead (quorum)
//!                                              | undecodable, on replay
//!                                              v
//!                                       {prefix}.parked (quorum)
//! ```
//!
//! Shard queues dead-letter at least once: a message that reaches the delivery limit is
//! moved only once the dead-letter queue confirmed it, so a missing dead-letter queue
//! holds it back instead of dropping it (RabbitMQ requires `x-overflow = reject-publish`
//! for that; no length limit is set, so nothing is rejected for length).

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

    /// Where dead letters that cannot be decoded are kept, out of the replay's way.
    pub fn parked_queue(&self) -> String {
        format!("{}.parked", self.prefix)
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
        out.push(self.parked_queue());
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
        let mut channel = connection.create_channel().await?;
        self.declare_exchanges(&channel).await?;
        let quorum = || {
            let mut args = FieldTable::default();
            args.insert("x-queue-type".into(), long_string("quorum"));
            args
        };
        channel = self
            .declare_queue(connection, channel, &self.dead_queue(), quorum())
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
        channel = self
            .declare_queue(connection, channel, &self.parked_queue(), quorum())
            .await?;
        for n in shards {
            channel = self
                .declare_queue(
                    connection,
                    channel,
                    &self.shard_queue(n),
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
        let _ = channel.close(200, "topology declared".into()).await;
        Ok(())
    }

    async fn declare_exchanges(&self, channel: &Channel) -> lapin::Result<()> {
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
            .await
    }

    /// Declares a durable queue with `args`, and keeps a queue of that name declared
    /// earlier with other arguments (by an older release) rather than failing.
    ///
    /// The broker refuses a declaration whose arguments differ from the existing queue's
    /// with 406 and closes the channel; a fresh channel then checks that the queue exists.
    /// Returns the channel to go on with.
    async fn declare_queue(
        &self,
        connection: &Connection,
        channel: Channel,
        queue: &str,
        args: FieldTable,
    ) -> lapin::Result<Channel> {
        match channel
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
            .await
        {
            Ok(_) => Ok(channel),
            Err(error) if is_soft_error(&error, AMQPSoftError::PRECONDITIONFAILED) => {
                let channel = connection.create_channel().await?;
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                channel
                    .queue_declare(queue.into(), passive, FieldTable::default())
                    .await?;
                metrics::gauge!("leadpipe_queue_outdated", "queue" => queue.to_owned()).set(1.0);
                tracing::warn!(
                    %queue,
                    %error,
                    "This queue exists with other arguments than this release declares (an \
                     older release made it); it is used as it is. Shard queues made before \
                     at-least-once dead-lettering can drop a message that reaches the \
                     delivery limit while the dead-letter queue is missing. To upgrade a \
                     queue: stop every leadpipe, wait until `rabbitmqctl list_queues` shows \
                     it empty, delete it, and start leadpipe again."
                );
                Ok(channel)
            }
            Err(error) => Err(error),
        }
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
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
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

#[cfg(test)]
mod tests {
    use lapin::BasicProperties;
    use lapin::options::BasicPublishOptions;

    use super::*;
    use crate::testing;

    /// The shard arguments a release before at-least-once dead-lettering declared.
    fn older_release_arguments(topology: &Topology) -> FieldTable {
        let mut args = topology.shard_arguments();
        let mut inner = args.inner().clone();
        inner.remove(&ShortString::from("x-dead-letter-strategy"));
        inner.remove(&ShortString::from("x-overflow"));
        args = FieldTable::from(inner);
        args
    }

    #[tokio::test]
    async fn shard_queues_are_declared_to_dead_letter_at_least_once() {
        let config = testing::config();
        let topology = Topology::new(&config);
        let connection = testing::connect().await;
        topology.declare(&connection).await.expect("declare");

        // The broker compares a declaration's arguments with the queue's own: one
        // without the strategy is refused, so the queue has it.
        let channel = connection.create_channel().await.expect("a channel");
        let refused = channel
            .queue_declare(
                topology.shard_queue(0).as_str().into(),
                QueueDeclareOptions::durable(),
                older_release_arguments(&topology),
            )
            .await
            .expect_err("the queue has other arguments");
        assert!(
            is_soft_error(&refused, AMQPSoftError::PRECONDITIONFAILED),
            "{refused}"
        );
        let _ = connection.close(200, "done".into()).await;
        testing::clean_up(&config).await;
    }

    #[tokio::test]
    async fn a_queue_an_older_release_declared_is_kept_and_still_routed_to() {
        let config = testing::config();
        let topology = Topology::new(&config);
        let connection = testing::connect().await;
        let channel = connection.create_channel().await.expect("a channel");
        channel
            .queue_declare(
                topology.shard_queue(1).as_str().into(),
                QueueDeclareOptions::durable(),
                older_release_arguments(&topology),
            )
            .await
            .expect("declare as an older release did");

        topology
            .declare(&connection)
            .await
            .expect("declaring over an older queue succeeds");

        let publish = testing::confirm_channel(&connection).await;
        for shard in 0..topology.shards() {
            let confirmation = publish
                .basic_publish(
                    topology.intake_exchange().as_str().into(),
                    topology.shard_routing_key(shard).as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    b"{}",
                    BasicProperties::default(),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert!(
                matches!(confirmation, lapin::Confirmation::Ack(None)),
                "shard {shard} is bound: {confirmation:?}"
            );
        }
        let _ = connection.close(200, "done".into()).await;
        testing::clean_up(&config).await;
    }
}
