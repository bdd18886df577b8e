//! A pull connector that exists only in the test suite: it reads numbered items from an
//! HTTP feed the test runs (a chat platform's update API in miniature) and files each as
//! an inquiry of channel `chat`.
//!
//! It follows the contract as a real pull connector must: it resumes from its
//! committed cursor, hands each item on and waits for the broker's confirm, commits the
//! cursor only after the whole batch was confirmed, and finishes the batch it holds
//! when asked to stop. It tells the feed which process asks (`x-replica`), so a test
//! can see which replica reads.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ingest::connector::{
    Checks, ConfigProblem, Connector, ConnectorKind, Deps, PullConnector, PullContext, PullError,
    PullTask,
};
use ingest::{Channel, ContactHints, Inquiry, InquiryId, RawPayload, Refusal};
use serde::{Deserialize, Serialize};

/// The `[[test_feeds]]` connector kind.
pub struct TestFeeds;

/// One `[[test_feeds]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct FeedConfig {
    /// The source its inquiries carry, and the name of its lease and cursor.
    pub source: String,
    /// The feed's base URL.
    pub url: String,
    /// Items asked for at once.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// A pause after each item is confirmed, so a test can catch a batch in flight.
    #[serde(default)]
    pub publish_delay_ms: u64,
}

fn default_batch() -> u32 {
    10
}

/// One item of the feed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// Position in the feed, from 1.
    pub seq: u64,
    /// The sender's address.
    pub email: String,
    /// The sender's name.
    pub name: String,
}

impl ConnectorKind for TestFeeds {
    const SECTION: &'static str = "test_feeds";
    type Config = Vec<FeedConfig>;

    fn validate(feeds: &Self::Config, _checks: &Checks<'_>) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        for (index, feed) in feeds.iter().enumerate() {
            if feed.source.trim().is_empty() {
                problems.push((
                    format!("test_feeds[{index}].source"),
                    "must not be empty".into(),
                ));
            }
            if !feed.url.starts_with("http://") {
                problems.push((
                    format!("test_feeds[{index}].url"),
                    "must be an http:// URL".into(),
                ));
            }
            if feed.batch == 0 {
                problems.push((
                    format!("test_feeds[{index}].batch"),
                    "must be at least 1".into(),
                ));
            }
        }
        problems
    }

    fn summary(feeds: &Self::Config) -> Option<String> {
        (!feeds.is_empty()).then(|| format!("{} test feeds", feeds.len()))
    }

    fn build(feeds: Self::Config, _deps: &Deps) -> Result<Vec<Connector>, ConfigProblem> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ("test_feeds".to_owned(), e.to_string()))?;
        Ok(feeds
            .into_iter()
            .map(|config| {
                Connector::Pull(PullConnector {
                    channel: Channel::Chat,
                    name: config.source.clone(),
                    source: config.source.clone(),
                    task: Arc::new(Feed {
                        config,
                        http: http.clone(),
                    }),
                })
            })
            .collect())
    }
}

struct Feed {
    config: FeedConfig,
    http: reqwest::Client,
}

impl Feed {
    async fn fetch(&self, after: u64) -> Result<Vec<Item>, PullError> {
        let source = |e: String| PullError::Source(e);
        let response = self
            .http
            .get(format!(
                "{}/items?after={after}&limit={}",
                self.config.url, self.config.batch
            ))
            .header("x-replica", std::process::id().to_string())
            .send()
            .await
            .map_err(|e| source(e.to_string()))?;
        if !response.status().is_success() {
            return Err(source(format!("the feed answered {}", response.status())));
        }
        response.json().await.map_err(|e| source(e.to_string()))
    }

    fn inquiry(&self, item: &Item) -> Inquiry {
        let raw = serde_json::to_vec(item).unwrap_or_default();
        Inquiry {
            id: InquiryId::from_external(Channel::Chat, &self.config.source, &item.seq.to_string()),
            channel: Channel::Chat,
            source: self.config.source.clone(),
            external_id: Some(item.seq.to_string()),
            received_at: chrono::Utc::now(),
            default_region: None,
            contact: ContactHints {
                full_name: Some(item.name.clone()),
                email: Some(item.email.clone()),
                ..ContactHints::default()
            },
            message: Some(format!("feed item {}", item.seq)),
            utm: Default::default(),
            fields: Default::default(),
            attachments: Vec::new(),
            spam: None,
            dedup: None,
            raw: RawPayload {
                content_type: Some("application/json".into()),
                body: Bytes::from(raw),
            },
            event: None,
        }
    }
}

#[async_trait]
impl PullTask for Feed {
    async fn run(&self, ctx: PullContext) -> Result<(), PullError> {
        let mut cursor: u64 = ctx.cursor().await?.unwrap_or(0);
        while !ctx.stop_requested() {
            let items = self.fetch(cursor).await?;
            let Some(last) = items.last().map(|item| item.seq) else {
                ctx.succeeded();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = ctx.stopped() => {}
                }
                continue;
            };
            // A fetched batch is work held: it is handed on in full, stop or not.
            for item in &items {
                match ctx.submit(self.inquiry(item)).await {
                    Ok(_) => {}
                    Err(Refusal::Unavailable { reason, .. }) => {
                        return Err(PullError::Intake(reason));
                    }
                    Err(refusal @ Refusal::Unusable { .. }) => {
                        return Err(PullError::Source(format!(
                            "item {} cannot become a lead: {refusal}",
                            item.seq
                        )));
                    }
                }
                tokio::time::sleep(Duration::from_millis(self.config.publish_delay_ms)).await;
            }
            ctx.commit(&last).await?;
            cursor = last;
        }
        Ok(())
    }
}
