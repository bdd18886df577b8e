//! Routing and everything AMQP.
//!
//! # Layout
//! - [`config`]: the `[amqp]` and `[routing]` settings.
//! - [`routing`]: decides where a lead goes (pipeline, initial stage) and which shard
//!   queue carries it.
//! - [`envelope`]: the message on the wire: a normalised lead plus its route.
//! - [`topology`]: exchanges and queues, declared idempotently on every (re)connect.
//! - [`publisher`]: publishes with publisher confirms; reconnects with backoff.
//! - [`consumer`]: consumes shard queues in batches, hands them to a [`BatchSink`] and
//!   acks only what the sink committed; poison messages go to the dead-letter queue.
//! - [`spool`]: the local journal web intake falls back to while the broker does not
//!   confirm, and its drainer.
//! - [`dead`]: listing and replaying the dead-letter queue.
//! - [`connect`]: connects to the first reachable node of the configured brokers.
//! - [`backoff`]: the shared reconnect delay policy.

pub mod backoff;
pub mod config;
pub mod connect;
pub mod consumer;
pub mod dead;
pub mod envelope;
pub mod publisher;
pub mod routing;
pub mod spool;
pub mod topology;

#[cfg(test)]
mod testing;

pub use config::{AmqpConfig, RoutingConfig};
pub use consumer::{BatchSink, ConsumerSet, SinkError, StoreOutcome};
pub use envelope::{Envelope, Route};
pub use publisher::{PublishError, Publisher, WireEnvelope};
pub use routing::LeadRouter;
pub use topology::Topology;
