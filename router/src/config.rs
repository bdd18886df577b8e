//! The `[amqp]` and `[routing]` sections.

use serde::Deserialize;

/// How to reach RabbitMQ and how leadpipe uses it (the `[amqp]` section).
#[derive(Debug, Clone, Deserialize)]

pub struct AmqpConfig {
    /// AMQP URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// Every exchange and queue name starts with this (several installations can share
    /// one broker, and tests use one prefix each).
    pub prefix: String,
    /// Number of shard queues; one person's inquiries always use the same shard.
    /// Changing it on a running installation strands messages in the old queues.
    #[serde(default = "default_shards")]
    pub shards: u16,
    /// Unacknowledged deliveries a consumer may hold per shard.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Most leads stored in one database transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a consumer waits to fill a batch once it has one lead, in milliseconds.
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// How long intake waits for the broker's confirm before answering 503, in milliseconds.
    #[serde(default = "default_confirm_timeout_ms")]
    pub confirm_timeout_ms: u64,
    /// Redeliveries after which the broker dead-letters a message (a crash loop backstop).
    #[serde(default = "default_delivery_limit")]
    pub delivery_limit: u32,
    /// Channels the publisher spreads its messages over.
    #[serde(default = "default_publisher_channels")]
    pub publisher_channels: u16,
    /// Run the consumers in this process (turn off for intake-only replicas).
    #[serde(default = "default_true")]
    pub consume: bool,
}

fn default_shards() -> u16 {
    4
}
fn default_prefetch() -> u16 {
    256
}
fn default_batch_size() -> usize {
    200
}
fn default_batch_wait_ms() -> u64 {
    5
}
fn default_confirm_timeout_ms() -> u64 {
    5_000
}
fn default_delivery_limit() -> u32 {
    20
}
fn default_publisher_channels() -> u16 {
    // One publish per channel at a time: this is how many confirms can be outstanding.
    64
}
fn default_true() -> bool {
    true
}

impl AmqpConfig {
    /// A configuration with defaults for everything but the URL and prefix.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            shards: default_shards(),
            prefetch: default_prefetch(),
            batch_size: default_batch_size(),
            batch_wait_ms: default_batch_wait_ms(),
            confirm_timeout_ms: default_confirm_timeout_ms(),
            delivery_limit: default_delivery_limit(),
            publisher_channels: default_publisher_channels(),
            consume: true,
        }
    }

    /// Every problem with these settings, as `(key, problem)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            out.push((
                "url",
                "must start with amqp:// or amqps:// (e.g. amqp://guest:guest@127.0.0.1:5672/%2f)"
                    .into(),
            ));
        } else if self.url.parse::<lapin::uri::AMQPUri>().is_err() {
            out.push(("url", "is not a valid AMQP URL".into()));
        }
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 100
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !prefix_ok {
            out.push((
                "prefix",
                "must be 1 to 100 characters of letters, digits, `-`, `_` or `.`".into(),
            ));
        }
        if self.shards == 0 || self.shards > 256 {
            out.push(("shards", "must be between 1 and 256".into()));
        }
        if self.prefetch == 0 {
            out.push(("prefetch", "must be at least 1".into()));
        }
        if self.batch_size == 0 || self.batch_size > 5_000 {
            out.push(("batch_size", "must be between 1 and 5000".into()));
        }
        if self.confirm_timeout_ms == 0 {
            out.push(("confirm_timeout_ms", "must be greater than 0".into()));
        }
        if self.delivery_limit == 0 {
            out.push(("delivery_limit", "must be at least 1".into()));
        }
        if self.publisher_channels == 0 || self.publisher_channels > 1024 {
            out.push(("publisher_channels", "must be between 1 and 1024".into()));
        }
        out
    }
}

/// Where new leads go (the `[routing]` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RoutingConfig {
    /// Code of the pipeline new leads enter.
    pub pipeline: String,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            pipeline: "default".into(),
        }
    }
}
