//! The `[amqp]` and `[routing]` sections.

use serde::Deserialize;

/// How to reach RabbitMQ and how leadpipe uses it (the `[amqp]` section).
#[derive(Debug, Clone, Deserialize)]
pub struct AmqpConfig {
    /// One broker's AMQP URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`: the same as
    /// `urls` with one element. Set `url` or `urls`, not both.
    #[serde(default)]
    pub url: Option<String>,
    /// The AMQP URLs of a RabbitMQ cluster's nodes. Every connection tries them in order,
    /// beginning after the node it last lost or could not reach, and stays with the first
    /// that answers. In the environment: `LEADPIPE__AMQP__URLS=amqp://a,amqp://b`.
    #[serde(default)]
    pub urls: Option<Vec<String>>,
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
    /// How long a consumer waits to fill a batch once it has one lead, in milliseconds
    /// (not while it catches up on a backlog: then a batch closes when the queue runs dry).
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// Most batches the consumers file at once while they keep up; a full batch (a
    /// backlog) is filed without waiting for its turn.
    #[serde(default = "default_steady_batches")]
    pub steady_batches: u16,
    /// How long intake waits for the broker's confirm before answering 503, in milliseconds.
    #[serde(default = "default_confirm_timeout_ms")]
    pub confirm_timeout_ms: u64,
    /// Redeliveries after which the broker dead-letters a message (a crash loop backstop).
    #[serde(default = "default_delivery_limit")]
    pub delivery_limit: u32,
    /// Channels the publisher spreads its messages over.
    #[serde(default = "default_publisher_channels")]
    pub publisher_channels: u16,
    /// Most inquiries carried by one broker message. Inquiries for the same shard that
    /// arrive while its messages are in flight share the next one, and its confirm; 1
    /// publishes every inquiry on its own.
    #[serde(default = "default_publish_batch")]
    pub publish_batch: u16,
    /// Broker messages awaiting their confirm at once per shard queue.
    #[serde(default = "default_publish_in_flight")]
    pub publish_in_flight: u16,
    /// Run the consumers in this process (turn off for intake-only replicas).
    #[serde(default = "default_true")]
    pub consume: bool,
}

fn default_shards() -> u16 {
    4
}
fn default_prefetch() -> u16 {
    64
}
fn default_batch_size() -> usize {
    200
}
fn default_batch_wait_ms() -> u64 {
    // A lead filed 200 ms later is no loss to anyone; at a few hundred posts a second,
    // batches of one or two leads each cost a transaction, a WAL flush and every
    // statement's overhead, and their CPU and disk flushes delayed the broker's confirms:
    // at 500 posts/s the median acknowledgement went from 9.6 ms at 5 ms to 4.8 ms at
    // 50 ms, and p99 from a mean of 7.1 ms at 50 ms to 6.2 ms at 200 ms.
    200
}
fn default_steady_batches() -> u16 {
    // The store's work comes in bursts (a batch every batch_wait_ms per shard, each a few
    // milliseconds of the database's CPU per dozen leads). Several at once took both of
    // a two-core machine's cores away from intake for that long, and the
    // acknowledgement's p99 at 2,000 posts/s was 20-26 ms against 13-15 ms one at a time
    // (docs/BENCHMARKS.md, fifteenth pass). Catching up, full batches run side by side.
    1
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
fn default_publish_batch() -> u16 {
    64
}
fn default_publish_in_flight() -> u16 {
    // Few messages in flight make the waiting inquiries share them: at 2 a shard sends
    // its next message as soon as either confirm arrives.
    2
}
fn default_true() -> bool {
    true
}

/// The largest frame leadpipe asks the broker for, in bytes, unless the URL says
/// otherwise (`?frame_max=...`).
///
/// The AMQP client keeps a send and a receive buffer of 32 frames per connection, zeroed
/// and so resident from the start. At RabbitMQ's 128 KiB default that is 8 MiB per
/// connection, 40 MiB for the publisher and four shard consumers, to carry messages of a
/// few kilobytes. A larger message still goes through: its body is split over frames.
pub const DEFAULT_FRAME_MAX: u32 = 16_384;

fn url_with_frame_max(url: &str) -> String {
    let query = url.split_once('?').map(|(_, query)| query);
    if query.is_some_and(|q| q.split('&').any(|pair| pair.starts_with("frame_max="))) {
        return url.to_owned();
    }
    let separator = match query {
        None => '?',
        Some("") => return format!("{url}frame_max={DEFAULT_FRAME_MAX}"),
        Some(_) => '&',
    };
    format!("{url}{separator}frame_max={DEFAULT_FRAME_MAX}")
}

impl AmqpConfig {
    /// A configuration with defaults for everything but the URL and prefix.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            urls: None,
            prefix: prefix.into(),
            shards: default_shards(),
            prefetch: default_prefetch(),
            batch_size: default_batch_size(),
            batch_wait_ms: default_batch_wait_ms(),
            steady_batches: default_steady_batches(),
            confirm_timeout_ms: default_confirm_timeout_ms(),
            delivery_limit: default_delivery_limit(),
            publisher_channels: default_publisher_channels(),
            publish_batch: default_publish_batch(),
            publish_in_flight: default_publish_in_flight(),
            consume: true,
        }
    }

    /// The same settings with several broker URLs (the nodes of one cluster).
    pub fn with_urls(mut self, urls: Vec<String>) -> Self {
        self.url = None;
        self.urls = Some(urls);
        self
    }

    /// The broker URLs to try, in order: `urls`, or `url` as a list of one.
    pub fn broker_urls(&self) -> Vec<String> {
        match (&self.urls, &self.url) {
            (Some(urls), _) => urls.iter().map(|u| u.trim().to_owned()).collect(),
            (None, Some(url)) => vec![url.trim().to_owned()],
            (None, None) => Vec::new(),
        }
    }

    /// The same configuration, each broker URL proposing [`DEFAULT_FRAME_MAX`] when it names
    /// no `frame_max` of its own.
    pub fn with_frame_max_default(mut self) -> Self {
        self.url = self.url.as_deref().map(url_with_frame_max);
        for url in self.urls.iter_mut().flatten() {
            *url = url_with_frame_max(url);
        }
        self
    }

    /// Every problem with these settings, as `(key, problem)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let key = if self.urls.is_some() { "urls" } else { "url" };
        match (&self.url, &self.urls) {
            (Some(_), Some(_)) => out.push((
                "urls",
                "is set together with amqp.url: keep one of them (urls = [...] for a cluster, \
                 url for a single broker)"
                    .into(),
            )),
            (None, None) => out.push((
                "url",
                "is missing: set amqp.url for a single broker or amqp.urls = [...] for the \
                 nodes of a cluster (e.g. url = \"amqp://guest:guest@127.0.0.1:5672/%2f\")"
                    .into(),
            )),
            (None, Some(urls)) if urls.is_empty() => out.push((
                "urls",
                "is empty: list at least one broker URL, or use amqp.url".into(),
            )),
            _ => {
                for (n, url) in self.broker_urls().iter().enumerate() {
                    let which = if key == "urls" {
                        format!("entry {} ", n + 1)
                    } else {
                        String::new()
                    };
                    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                        out.push((
                            key,
                            format!(
                                "{which}must start with amqp:// or amqps:// \
                                 (e.g. amqp://guest:guest@127.0.0.1:5672/%2f)"
                            ),
                        ));
                    } else if url.parse::<lapin::uri::AMQPUri>().is_err() {
                        out.push((key, format!("{which}is not a valid AMQP URL")));
                    }
                }
            }
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
        if self.steady_batches == 0 {
            out.push((
                "steady_batches",
                "must be at least 1 (raise it up to shards to file partial batches side by side)"
                    .into(),
            ));
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
        if self.publish_batch == 0 || self.publish_batch > 1_000 {
            out.push(("publish_batch", "must be between 1 and 1000".into()));
        }
        if self.publish_in_flight == 0 || self.publish_in_flight > self.publisher_channels {
            out.push((
                "publish_in_flight",
                "must be at least 1 and at most publisher_channels".into(),
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(config: &AmqpConfig) -> Vec<&'static str> {
        config.problems().into_iter().map(|(key, _)| key).collect()
    }

    #[test]
    fn one_url_is_a_list_of_one() {
        let config = AmqpConfig::new("amqp://127.0.0.1:5672/%2f", "leadpipe");
        assert!(config.problems().is_empty());
        assert_eq!(config.broker_urls(), vec!["amqp://127.0.0.1:5672/%2f"]);
    }

    #[test]
    fn a_list_of_urls_keeps_its_order() {
        let config = AmqpConfig::new("amqp://unused/%2f", "leadpipe").with_urls(vec![
            "amqp://127.0.0.1:5681/%2f".into(),
            " amqp://127.0.0.1:5682/%2f".into(),
        ]);
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        assert_eq!(
            config.broker_urls(),
            vec!["amqp://127.0.0.1:5681/%2f", "amqp://127.0.0.1:5682/%2f"]
        );
    }

    #[test]
    fn a_url_without_frame_max_proposes_the_default() {
        let plain = AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f", "p");
        assert_eq!(
            plain.with_frame_max_default().broker_urls()[0],
            "amqp://guest:guest@127.0.0.1:5672/%2f?frame_max=16384"
        );
        let other = AmqpConfig::new("amqp://h/%2f?heartbeat=30", "p");
        assert_eq!(
            other.with_frame_max_default().broker_urls()[0],
            "amqp://h/%2f?heartbeat=30&frame_max=16384"
        );
        let cluster = AmqpConfig::new("amqp://unused/%2f", "p")
            .with_urls(vec!["amqp://a/%2f".into(), "amqp://b/%2f".into()])
            .with_frame_max_default();
        assert_eq!(
            cluster.broker_urls(),
            vec![
                "amqp://a/%2f?frame_max=16384",
                "amqp://b/%2f?frame_max=16384"
            ]
        );
        let empty = AmqpConfig::new("amqp://h/%2f?", "p");
        assert_eq!(
            empty.with_frame_max_default().broker_urls()[0],
            "amqp://h/%2f?frame_max=16384"
        );
    }

    #[test]
    fn url_and_urls_together_or_neither_are_problems() {
        let mut both = AmqpConfig::new("amqp://127.0.0.1:5672/%2f", "leadpipe");
        both.urls = Some(vec!["amqp://127.0.0.1:5681/%2f".into()]);
        assert_eq!(keys(&both), vec!["urls"]);

        let mut neither = AmqpConfig::new("amqp://127.0.0.1:5672/%2f", "leadpipe");
        neither.url = None;
        assert_eq!(keys(&neither), vec!["url"]);

        let empty = AmqpConfig::new("amqp://unused/%2f", "leadpipe").with_urls(Vec::new());
        assert_eq!(keys(&empty), vec!["urls"]);
    }

    #[test]
    fn steady_batches_of_zero_is_a_problem() {
        let mut config = AmqpConfig::new("amqp://127.0.0.1:5672/%2f", "leadpipe");
        assert_eq!(config.steady_batches, 1);
        config.steady_batches = 0;
        assert_eq!(keys(&config), vec!["steady_batches"]);
    }

    #[test]
    fn each_listed_url_is_checked() {
        let config = AmqpConfig::new("amqp://unused/%2f", "leadpipe").with_urls(vec![
            "amqp://127.0.0.1:5681/%2f".into(),
            "http://127.0.0.1:5682/".into(),
        ]);
        let problems = config.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "urls");
        assert!(problems[0].1.starts_with("entry 2 "), "{problems:?}");
    }

    #[test]
    fn a_frame_max_in_the_url_is_kept_and_parses() {
        let own = AmqpConfig::new("amqp://h/%2f?heartbeat=30&frame_max=131072", "p");
        let kept = own.with_frame_max_default();
        assert_eq!(
            kept.broker_urls(),
            vec!["amqp://h/%2f?heartbeat=30&frame_max=131072"]
        );
        let uri: lapin::uri::AMQPUri = AmqpConfig::new("amqp://h/%2f", "p")
            .with_frame_max_default()
            .broker_urls()[0]
            .parse()
            .expect("a valid AMQP URL");
        assert_eq!(uri.query.frame_max, Some(DEFAULT_FRAME_MAX));
    }
}
