//! Poll mode: `getUpdates` long polling under the source's lease, the offset kept in the
//! source's cursor and moved only once every update before it was confirmed.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{ApiError, BotApi};
use super::update::{
    BotReading, StartPayloads, Update, Verdict, forget_start, read_update, start_taken,
};
use super::{count_ignored, count_refused};
use crate::connector::{PullContext, PullError, PullTask};
use crate::sink::Refusal;

/// The cursor of a polled bot: the next `getUpdates` offset and the deep-link payloads
/// waiting for their chat's next inquiry (kept with the offset, so a restart neither
/// forgets one nor applies one twice).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PollCursor {
    /// The next `offset` (the highest confirmed `update_id` + 1); none before the first.
    #[serde(default)]
    pub offset: Option<i64>,
    /// `/start` payloads by chat id.
    #[serde(default, skip_serializing_if = "StartPayloads::is_empty")]
    pub starts: StartPayloads,
}

/// One polled bot.
pub struct PollTask {
    reading: BotReading,
    api: BotApi,
    timeout_secs: u64,
}

impl PollTask {
    /// A poller for a bot; `timeout_secs` is the long poll's wait.
    pub fn new(reading: BotReading, api: BotApi, timeout_secs: u64) -> Self {
        Self {
            reading,
            api,
            timeout_secs,
        }
    }

    /// Files one batch in order; returns the cursor to commit once all is confirmed.
    async fn file(
        &self,
        ctx: &PullContext,
        cursor: &PollCursor,
        updates: Vec<Value>,
    ) -> Result<PollCursor, PullError> {
        let mut next = cursor.clone();
        let bot = &self.reading;
        for value in updates {
            let update_id = value.get("update_id").and_then(Value::as_i64);
            // Telegram never sends a confirmed update again; a stand-in or a proxy might.
            if let (Some(id), Some(offset)) = (update_id, cursor.offset)
                && id < offset
            {
                continue;
            }
            if let Some(id) = update_id {
                next.offset = Some(next_offset(next.offset, id));
            }
            let raw = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
            let update: Update = match serde_json::from_value(value) {
                Ok(update) => update,
                Err(error) => {
                    tracing::warn!(bot = %bot.name, update_id, %error, "A Telegram update does not read; skipped.");
                    count_ignored(bot, "unreadable");
                    continue;
                }
            };
            match read_update(bot, &update, raw, &mut next.starts, Utc::now()) {
                Verdict::Ignored(reason) => {
                    tracing::debug!(bot = %bot.name, update_id, reason, "Telegram update is not an inquiry.");
                    count_ignored(bot, reason);
                }
                Verdict::Inquiry(inquiry) => {
                    // `next` is committed only when the whole batch is handed on.
                    forget_start(&mut next.starts, start_taken(&inquiry));
                    match ctx.submit(*inquiry).await {
                        Ok(_) => {}
                        Err(Refusal::Unusable { code, message, .. }) => {
                            // Sending it again changes nothing: count it and go on, so one
                            // update cannot block the bot.
                            tracing::warn!(bot = %bot.name, update_id, code, %message, "A Telegram update was refused by the pipeline.");
                            count_refused(bot, code);
                        }
                        Err(Refusal::Unavailable { reason, .. }) => {
                            return Err(PullError::Intake(reason));
                        }
                    }
                }
            }
        }
        Ok(next)
    }
}

/// The `getUpdates` offset that confirms update `id`: one past the highest seen. An id at
/// the top of the range (only a hostile or broken peer sends one) keeps the offset there
/// instead of overflowing.
fn next_offset(current: Option<i64>, id: i64) -> i64 {
    let after = id.saturating_add(1);
    current.map_or(after, |o| o.max(after))
}

#[async_trait]
impl PullTask for PollTask {
    async fn run(&self, ctx: PullContext) -> Result<(), PullError> {
        let mut cursor: PollCursor = ctx.cursor().await?.unwrap_or_default();
        let bot = &self.reading.name;
        loop {
            if ctx.stop_requested() {
                return Ok(());
            }
            let fetched = tokio::select! {
                _ = ctx.stopped() => return Ok(()),
                fetched = self.api.get_updates(cursor.offset, self.timeout_secs) => fetched,
            };
            let updates = match fetched {
                Ok(updates) => updates,
                Err(ApiError::RetryAfter { retry_after }) => {
                    tracing::warn!(%bot, retry_after, "Telegram asks to wait before polling again.");
                    tokio::select! {
                        _ = ctx.stopped() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(retry_after)) => continue,
                    }
                }
                Err(error) => {
                    return Err(PullError::Source(format!("Telegram bot {bot}: {error}")));
                }
            };
            if updates.is_empty() {
                ctx.succeeded();
                continue;
            }
            // The batch is finished even when a stop arrives meanwhile: it was fetched,
            // and committing it saves reading it again.
            let next = self.file(&ctx, &cursor, updates).await?;
            if next != cursor {
                ctx.commit(&next).await?;
                cursor = next;
            } else {
                ctx.succeeded();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_offset;

    #[test]
    fn the_offset_is_one_past_the_highest_update_and_never_overflows() {
        assert_eq!(next_offset(None, 41), 42);
        assert_eq!(next_offset(Some(50), 41), 50);
        assert_eq!(next_offset(Some(42), 99), 100);
        assert_eq!(next_offset(None, i64::MAX), i64::MAX);
        assert_eq!(next_offset(Some(7), i64::MAX), i64::MAX);
    }
}
