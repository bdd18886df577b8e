//! Replies through a lead's chat: the accounts they are sent from, and the worker that
//! sends what the store queued.
//!
//! The worker claims due `replies` rows (`FOR UPDATE SKIP LOCKED`, the same claim as the
//! mail outbox, so replicas share the table), sends each through the Telegram Bot API
//! (`telegram`) or the WhatsApp Cloud API (`whatsapp`), and marks the row and its
//! activity `sent` with the platform's id of the message. Rate limits (Telegram's 429 with
//! `parameters.retry_after`, WhatsApp's 429 and throttling codes), server errors and
//! network errors are retried with backoff; any other refusal, or running out of
//! attempts, marks the reply `failed` with the error, on the lead.
//!
//! Delivery is at-least-once across crashes and exactly once otherwise, for the reasons
//! given for mail (`crate::mail`): on a stop the reply in hand is finished and marked,
//! claimed replies not started are handed back. Neither platform de-duplicates a send, so
//! a process that dies between the platform's acceptance and the mark sends that reply a
//! second time once its claim lapses.

mod telegram;
mod whatsapp;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use store::{ChatPlatform, ChatTarget, OutgoingReply, Store};
use tokio_util::sync::CancellationToken;

use crate::mail::{backoff_delay, record_with_retries};
pub use whatsapp::{GRAPH_VERSION, messages_url};

/// One Telegram bot replies are sent as.
#[derive(Debug, Clone)]
pub struct TelegramBot {
    /// The Bot API's base URL (`https://api.telegram.org`).
    pub api_base: String,
    /// The bot's token.
    pub token: SecretString,
}

/// The WhatsApp Business number replies are sent from.
#[derive(Debug, Clone)]
pub struct WhatsAppAccount {
    /// The Graph API's base URL, with or without its version
    /// (`https://graph.facebook.com/v21.0`).
    pub api_base: String,
    /// A system user's access token with `whatsapp_business_messaging`.
    pub access_token: SecretString,
    /// The id of the business phone number.
    pub phone_number_id: String,
}

/// The chat accounts replies can be sent through.
#[derive(Debug, Clone, Default)]
pub struct ReplyChannels {
    /// Telegram bots by name (the name in `chat:telegram-<name>:<chat id>`).
    pub telegram: HashMap<String, TelegramBot>,
    /// The WhatsApp Business number.
    pub whatsapp: Option<WhatsAppAccount>,
}

impl ReplyChannels {
    /// What the configuration allows: fed by `[[telegram]]` (name, token, api_base) and
    /// `[whatsapp]` (access_token, phone_number_id, api_base).
    pub fn from_settings(settings: &crate::settings::Settings) -> Self {
        let whatsapp = settings
            .connectors
            .get::<ingest::whatsapp::Whatsapp>()
            .and_then(Option::as_ref)
            .and_then(|c| {
                Some(WhatsAppAccount {
                    api_base: c.api_base.clone(),
                    access_token: SecretString::from(c.access_token.clone()?),
                    phone_number_id: c.phone_number_id.clone()?,
                })
            });
        let telegram = settings
            .connectors
            .get::<ingest::telegram::Telegram>()
            .into_iter()
            .flatten()
            .map(|bot| {
                let sender = TelegramBot {
                    api_base: bot.api_base.clone(),
                    token: SecretString::from(bot.resolve_token()),
                };
                (bot.name.clone(), sender)
            })
            .collect();
        Self { telegram, whatsapp }
    }

    /// True when a reply to `chat` can be sent: its bot, or its WhatsApp number, is
    /// configured.
    pub fn can_send(&self, chat: &ChatTarget) -> bool {
        match chat.platform {
            ChatPlatform::Telegram => self.telegram.contains_key(&chat.account),
            ChatPlatform::WhatsApp => self
                .whatsapp
                .as_ref()
                .is_some_and(|w| w.phone_number_id == chat.account),
        }
    }
}

/// How the worker retries and paces itself.
#[derive(Debug, Clone)]
pub struct ReplyPolicy {
    /// Attempts before a reply is given up on.
    pub max_attempts: i32,
    /// Delay before the first retry; it doubles with each attempt.
    pub retry_initial: Duration,
    /// Longest delay between two attempts.
    pub retry_max: Duration,
    /// How often the table is checked for due replies.
    pub poll_interval: Duration,
    /// Longest wait for one request to a platform.
    pub request_timeout: Duration,
}

impl Default for ReplyPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(3_600),
            poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What one attempt at sending came to.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The platform took it: its id of the message, and the fields the activity gets.
    Sent(String, serde_json::Map<String, serde_json::Value>),
    /// The platform asked to slow down, after the given time if it said.
    RateLimited(String, Option<Duration>),
    /// A server or network failure: try again later (after the given time if said).
    Retry(String, Option<Duration>),
    /// Refused for good.
    Refused(String),
}

/// A failed request with its causes ("connection refused", "timed out"), never its URL,
/// which carries a bot's token.
pub(crate) fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Replies claimed at once.
const CLAIM_BATCH: i64 = 20;

/// Sends the queued chat replies until stopped.
pub struct ReplySender {
    store: Store,
    channels: Arc<ReplyChannels>,
    policy: ReplyPolicy,
    client: reqwest::Client,
}

impl ReplySender {
    /// A worker sending through `channels`.
    pub fn new(
        store: Store,
        channels: Arc<ReplyChannels>,
        policy: ReplyPolicy,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(policy.request_timeout)
            .connect_timeout(policy.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("leadpipe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("Cannot set up the HTTP client for replies: {e}"))?;
        Ok(Self {
            store,
            channels,
            policy,
            client,
        })
    }

    /// How long a claim lasts: well beyond one request, so only a dead worker's claim
    /// ever lapses.
    fn lease(&self) -> Duration {
        (self.policy.request_timeout * 4).max(Duration::from_secs(60))
    }

    /// Claims, sends and marks until `stop` fires; the reply in hand is finished first.
    pub async fn run(self, stop: CancellationToken) {
        let mut db_backoff =
            router::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut gauge_due = tokio::time::Instant::now();
        while !stop.is_cancelled() {
            if tokio::time::Instant::now() >= gauge_due {
                self.publish_depth().await;
                gauge_due = tokio::time::Instant::now() + Duration::from_secs(5);
            }
            let wait = match self
                .store
                .claim_due_replies(CLAIM_BATCH, self.lease())
                .await
            {
                Ok(replies) if replies.is_empty() => self.policy.poll_interval,
                Ok(replies) => {
                    db_backoff.reset();
                    let mut replies = replies.into_iter();
                    for reply in replies.by_ref() {
                        self.deliver(reply).await;
                        if stop.is_cancelled() {
                            break;
                        }
                    }
                    let unsent: Vec<i64> = replies.map(|r| r.id).collect();
                    if !unsent.is_empty()
                        && let Err(error) = self.store.release_replies(&unsent).await
                    {
                        tracing::warn!(%error, "Could not hand back claimed replies on stopping; they are sent once their claim lapses.");
                    }
                    self.publish_depth().await;
                    Duration::ZERO
                }
                Err(error) => {
                    let delay = db_backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?delay, "Cannot read the queued replies; they wait until the database is back.");
                    delay
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
        tracing::info!("Reply sender stopped.");
    }

    async fn publish_depth(&self) {
        if let Ok(depth) = self.store.reply_depth().await {
            for (state, value) in [
                ("pending", depth.pending),
                ("sending", depth.sending),
                ("failed", depth.failed),
            ] {
                metrics::gauge!("leadpipe_reply_outbox", "state" => state).set(value as f64);
            }
        }
    }

    /// One attempt at `reply` through its platform.
    async fn attempt(&self, reply: &OutgoingReply) -> Attempt {
        let target = &reply.target;
        match target.platform {
            ChatPlatform::Telegram => match self.channels.telegram.get(&target.account) {
                Some(bot) => telegram::send(&self.client, bot, target, &reply.body).await,
                None => Attempt::Retry(
                    format!(
                        "no Telegram bot named `{}` is configured to send from",
                        target.account
                    ),
                    None,
                ),
            },
            ChatPlatform::WhatsApp => match &self.channels.whatsapp {
                Some(account) if account.phone_number_id == target.account => {
                    whatsapp::send(&self.client, account, &target.chat_id, &reply.body).await
                }
                _ => Attempt::Retry(
                    format!(
                        "the WhatsApp number {} is not configured to send from",
                        target.account
                    ),
                    None,
                ),
            },
        }
    }

    /// Sends one claimed reply and records the outcome on it and its activity.
    async fn deliver(&self, reply: OutgoingReply) {
        let channel = reply.target.platform.as_str();
        let mark = match self.attempt(&reply).await {
            Attempt::Sent(platform_id, fields) => {
                metrics::counter!("leadpipe_replies_sent_total", "channel" => channel).increment(1);
                tracing::info!(reply_id = reply.id, lead_id = reply.lead_id, channel, platform_message_id = %platform_id, "Reply sent.");
                record_with_retries(|| {
                    self.store
                        .mark_reply_sent(reply.id, &platform_id, fields.clone())
                })
                .await
            }
            Attempt::Refused(error) => self.failed(&reply, error, None, None).await,
            Attempt::RateLimited(error, wait) => {
                self.failed(&reply, error, wait, Some("rate_limited")).await
            }
            Attempt::Retry(error, wait) => self.failed(&reply, error, wait, Some("retry")).await,
        };
        if let Err(error) = mark {
            tracing::error!(reply_id = reply.id, %error,
                "Could not record what happened to a reply; it is tried again once its claim lapses.");
        }
    }

    /// Records a failed attempt: retried after `wait` (or the backoff) and counted as
    /// `retryable` (`retry`, `rate_limited`), or given up on when refused for good
    /// (`None`) or out of attempts.
    async fn failed(
        &self,
        reply: &OutgoingReply,
        error: String,
        wait: Option<Duration>,
        retryable: Option<&'static str>,
    ) -> Result<(), store::StoreError> {
        let channel = reply.target.platform.as_str();
        let give_up = retryable.is_none() || reply.attempts >= self.policy.max_attempts;
        let retry_in = (!give_up).then(|| {
            wait.unwrap_or_else(|| {
                backoff_delay(
                    self.policy.retry_initial,
                    self.policy.retry_max,
                    reply.attempts,
                )
            })
        });
        let outcome = match retryable {
            Some(outcome) if !give_up => outcome,
            _ => "given_up",
        };
        metrics::counter!("leadpipe_reply_failures_total", "channel" => channel, "outcome" => outcome)
            .increment(1);
        if give_up {
            tracing::error!(reply_id = reply.id, lead_id = reply.lead_id, channel, attempts = reply.attempts, %error,
                "Giving up on a reply: the platform refused it or kept failing; the lead's activity shows the error.");
        } else {
            tracing::warn!(reply_id = reply.id, lead_id = reply.lead_id, channel, attempts = reply.attempts, %error, ?retry_in,
                "Sending a reply failed; it is tried again later.");
        }
        record_with_retries(|| self.store.mark_reply_failed(reply.id, &error, retry_in)).await
    }
}
