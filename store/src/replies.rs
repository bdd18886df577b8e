//! Replies to a lead through the channel it came from: where a lead can be answered, the
//! reply recorded with its outbound activity in one transaction, and the claims of the
//! worker that sends chat replies.
//!
//! A reply by chat is a `replies` row; a reply by mail is a row of the mail outbox (sent by
//! the mail worker, with In-Reply-To and References naming the customer's last mail).
//! Either way the lead gets an activity of kind `message` with `data.direction =
//! "outbound"` and `data.delivery` `pending`, then `sent` or `failed`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ingest::ConversationKey;
use serde_json::{Value, json};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use crate::access::Scope;
use crate::error::StoreError;
use crate::leads::Activity;
use crate::outbox::{
    OutboxDepth, claim_statement, depth_statement, failed_statement, release_statement,
};
use crate::store::Store;

/// A messenger a reply can be sent through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatPlatform {
    /// The Telegram Bot API.
    Telegram,
    /// The WhatsApp Business Cloud API.
    WhatsApp,
}

impl ChatPlatform {
    /// The stable lower-case name (`telegram`, `whatsapp`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChatPlatform::Telegram => "telegram",
            ChatPlatform::WhatsApp => "whatsapp",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "telegram" => Some(ChatPlatform::Telegram),
            "whatsapp" => Some(ChatPlatform::WhatsApp),
            _ => None,
        }
    }
}

/// A chat a lead can be answered in, read from one of its conversation keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTarget {
    /// The messenger.
    pub platform: ChatPlatform,
    /// The bot's name (Telegram) or the phone_number_id the chat came to (WhatsApp).
    pub account: String,
    /// The chat id (Telegram) or the customer's wa_id (WhatsApp).
    pub chat_id: String,
}

impl ChatTarget {
    /// The chat a conversation key names: `chat:telegram-<bot name>:<chat id>` or
    /// `chat:whatsapp-<phone_number_id>:<wa_id>`; `None` for any other conversation (a
    /// site chat, a call, a mail thread), which cannot be answered by chat.
    pub fn from_conversation_key(key: &str) -> Option<Self> {
        let ConversationKey::Chat { platform, chat_id } = ConversationKey::parse(key).ok()? else {
            return None;
        };
        let (name, account) = platform.split_once('-')?;
        let platform = ChatPlatform::parse(name)?;
        (!account.is_empty() && !chat_id.is_empty()).then(|| ChatTarget {
            platform,
            account: account.to_owned(),
            chat_id,
        })
    }
}

impl ChatTarget {
    /// A Telegram chat's id and, for a chat of a connected Business account (chat id
    /// `<chat id>@<connection id>`), the connection it is answered through.
    pub fn telegram_chat(&self) -> (&str, Option<&str>) {
        match self.chat_id.split_once('@') {
            Some((id, connection)) if !id.is_empty() => (id, Some(connection)),
            _ => (&self.chat_id, None),
        }
    }
}

/// The mail thread a lead that came by mail is answered in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailThread {
    /// The lead's address.
    pub recipient: String,
    /// The Message-ID of the customer's last mail, angle brackets included.
    pub in_reply_to: String,
    /// The subject line of the answer (`Re: ...`).
    pub subject: String,
}

/// Where a lead can be answered.
#[derive(Debug, Clone, Default)]
pub struct ReplyRoutes {
    /// Its Telegram and WhatsApp chats, the most recently opened first.
    pub chats: Vec<ChatTarget>,
    /// Its mail thread, when the lead came by mail and has an address.
    pub mail: Option<MailThread>,
}

/// Where one reply goes.
#[derive(Debug, Clone)]
pub enum ReplyTarget {
    /// A chat, through the chat worker.
    Chat(ChatTarget),
    /// A mail thread, through the mail outbox.
    Mail(MailThread),
}

/// A reply to record.
#[derive(Debug, Clone)]
pub struct NewReply {
    /// The lead answered.
    pub lead_id: i64,
    /// The text, checked by the caller.
    pub text: String,
    /// The client's `Idempotency-Key`: a request retried with it records nothing new.
    pub idempotency_key: Option<String>,
    /// Where it goes.
    pub target: ReplyTarget,
}

/// What recording a reply did.
#[derive(Debug, Clone)]
pub enum RecordedReply {
    /// Recorded now; its activity.
    Recorded(Activity),
    /// The same request (same key and text) was recorded before; its activity as it is now.
    Replayed(Activity),
    /// The key was used for another text or another lead: nothing recorded.
    KeyReused,
}

/// A claimed chat reply.
#[derive(Debug, Clone)]
pub struct OutgoingReply {
    /// The row.
    pub id: i64,
    /// The lead it answers.
    pub lead_id: i64,
    /// Its activity.
    pub activity_id: i64,
    /// Where it goes.
    pub target: ChatTarget,
    /// The text.
    pub body: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

const ACTIVITY_COLUMNS: &str =
    "id, kind, channel, inquiry_id, subject, body, occurred_at, data, activity_key, lead_id";

fn activity_from_row(row: &PgRow) -> Result<Activity, sqlx::Error> {
    Ok(Activity {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        channel: row.try_get("channel")?,
        inquiry_id: row.try_get("inquiry_id")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        occurred_at: row.try_get("occurred_at")?,
        data: row.try_get("data")?,
    })
}

/// `Re: <subject>`, without stacking a second `Re:`.
fn reply_subject(subject: Option<&str>) -> String {
    let subject = subject.map(str::trim).unwrap_or_default();
    let single_line: String = subject
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if single_line.is_empty() {
        "Re: your message".into()
    } else if single_line
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("re:"))
    {
        single_line
    } else {
        format!("Re: {single_line}")
    }
}

impl Store {
    /// True when mail can be sent (an `[smtp]` sender is configured).
    pub fn sends_mail(&self) -> bool {
        !self.acks.from.trim().is_empty()
    }

    /// Where lead `lead_id` can be answered; `None` when there is no such lead or it is
    /// outside `scope`.
    pub async fn reply_routes(
        &self,
        lead_id: i64,
        scope: &Scope,
    ) -> Result<Option<ReplyRoutes>, StoreError> {
        let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "SELECT l.email,
                    ARRAY(SELECT c.key FROM lead_conversations c
                          WHERE c.lead_id = l.id AND c.key LIKE 'chat:%'
                          ORDER BY c.added_at DESC, c.key) AS chats,
                    EXISTS(SELECT 1 FROM lead_conversations c
                           WHERE c.lead_id = l.id AND c.key LIKE 'email-thread:%') AS by_mail,
                    m.message_id, m.subject
             FROM leads l
             LEFT JOIN LATERAL (
                 SELECT a.data->>'message_id' AS message_id, a.subject
                 FROM activities a
                 WHERE a.lead_id = l.id AND a.kind = 'email' AND a.data ? 'message_id'
                   AND coalesce(a.data->>'direction', 'inbound') <> 'outbound'
                 ORDER BY a.occurred_at DESC, a.id DESC
                 LIMIT 1) m ON true
             WHERE l.id = ",
        );
        sql.push_bind(lead_id);
        scope.push_lead_filter(&mut sql, "l");
        let Some(row) = sql.build().fetch_optional(self.pool()).await? else {
            return Ok(None);
        };
        let chats: Vec<String> = row.try_get("chats")?;
        let email: Option<String> = row.try_get("email")?;
        let by_mail: bool = row.try_get("by_mail")?;
        let message_id: Option<String> = row.try_get("message_id")?;
        let subject: Option<String> = row.try_get("subject")?;
        let mail = match (by_mail, email, message_id) {
            (true, Some(recipient), Some(id)) if id.starts_with('<') && id.ends_with('>') => {
                Some(MailThread {
                    recipient,
                    in_reply_to: id,
                    subject: reply_subject(subject.as_deref()),
                })
            }
            _ => None,
        };
        Ok(Some(ReplyRoutes {
            chats: chats
                .iter()
                .filter_map(|k| ChatTarget::from_conversation_key(k))
                .collect(),
            mail,
        }))
    }

    /// Records a reply and its outbound activity (`delivery = pending`) in one
    /// transaction, queued for its worker. Under an idempotency key the first request
    /// records, and a retry gets the activity as it is now.
    /// A lead outside `scope` is [`StoreError::NotFound`], like a missing one.
    pub async fn record_reply(
        &self,
        reply: &NewReply,
        scope: &Scope,
    ) -> Result<RecordedReply, StoreError> {
        let text = reply.text.replace('\0', "\u{FFFD}");
        let activity_key = reply
            .idempotency_key
            .as_ref()
            .map(|k| format!("reply:{}:{k}", reply.lead_id));
        let mut tx = self.pool().begin().await?;
        // The lead stays (and stays in scope) until the reply is recorded.
        let mut check: QueryBuilder<'_, Postgres> =
            QueryBuilder::new("SELECT l.id FROM leads l WHERE l.id = ");
        check.push_bind(reply.lead_id);
        scope.push_lead_filter(&mut check, "l");
        check.push(" FOR SHARE OF l");
        if check.build().fetch_optional(&mut *tx).await?.is_none() {
            return Err(StoreError::NotFound(format!("lead {}", reply.lead_id)));
        }
        let (channel, subject, data) = match &reply.target {
            ReplyTarget::Chat(chat) => {
                let mut data = json!({
                    "direction": "outbound",
                    "delivery": "pending",
                    "platform": chat.platform.as_str(),
                });
                match chat.platform {
                    ChatPlatform::Telegram => {
                        data["bot"] = json!(chat.account);
                        // Telegram's chat ids are numbers; inbound messages keep them so.
                        let (id, connection) = chat.telegram_chat();
                        data["chat_id"] =
                            id.parse::<i64>().map_or_else(|_| json!(id), |n| json!(n));
                        if let Some(connection) = connection {
                            data["business_connection_id"] = json!(connection);
                        }
                    }
                    ChatPlatform::WhatsApp => {
                        data["phone_number_id"] = json!(chat.account);
                        data["to"] = json!(chat.chat_id);
                    }
                }
                ("chat", None, data)
            }
            ReplyTarget::Mail(thread) => (
                "email",
                Some(thread.subject.clone()),
                json!({
                    "direction": "outbound",
                    "delivery": "pending",
                    "to": thread.recipient,
                    "in_reply_to": thread.in_reply_to,
                }),
            ),
        };
        let inserted = sqlx::query(&format!(
            "INSERT INTO activities (lead_id, kind, channel, subject, body, occurred_at, data,
                                     activity_key)
             VALUES ($1, 'message', $2, $3, $4, now(), $5, $6)
             ON CONFLICT (activity_key) DO NOTHING
             RETURNING {ACTIVITY_COLUMNS}"
        ))
        .bind(reply.lead_id)
        .bind(channel)
        .bind(&subject)
        .bind(&text)
        .bind(Json(&data))
        .bind(&activity_key)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = inserted else {
            // The key was taken, by a committed request (the insert waited for it).
            tx.rollback().await?;
            let row = sqlx::query(&format!(
                "SELECT {ACTIVITY_COLUMNS} FROM activities WHERE activity_key = $1"
            ))
            .bind(&activity_key)
            .fetch_one(self.pool())
            .await?;
            let lead: i64 = row.try_get("lead_id")?;
            let body: Option<String> = row.try_get("body")?;
            return Ok(
                if lead == reply.lead_id && body.as_deref() == Some(text.as_str()) {
                    RecordedReply::Replayed(activity_from_row(&row)?)
                } else {
                    RecordedReply::KeyReused
                },
            );
        };
        let activity = activity_from_row(&row)?;
        match &reply.target {
            ReplyTarget::Chat(chat) => {
                sqlx::query(
                    "INSERT INTO replies (lead_id, activity_id, platform, account, chat_id, body)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(reply.lead_id)
                .bind(activity.id)
                .bind(chat.platform.as_str())
                .bind(&chat.account)
                .bind(&chat.chat_id)
                .bind(&text)
                .execute(&mut *tx)
                .await?;
            }
            ReplyTarget::Mail(thread) => {
                self.queue_reply_mail(&mut tx, reply.lead_id, activity.id, thread, &text)
                    .await?;
            }
        }
        tx.commit().await?;
        metrics::counter!("leadpipe_replies_queued_total", "channel" => reply_channel(&reply.target))
            .increment(1);
        Ok(RecordedReply::Recorded(activity))
    }

    /// Puts a reply by mail in the outbox the mail worker sends (never marked
    /// `Auto-Submitted`: a person wrote it).
    async fn queue_reply_mail(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        lead_id: i64,
        activity_id: i64,
        thread: &MailThread,
        text: &str,
    ) -> Result<(), sqlx::Error> {
        let message_id = format!(
            "<reply.{}@{}>",
            Uuid::new_v4().simple(),
            self.acks.message_id_domain()
        );
        let headers = json!({
            "In-Reply-To": thread.in_reply_to,
            "References": thread.in_reply_to,
        });
        sqlx::query(
            "INSERT INTO outbox (dedup_key, lead_id, recipient, subject, body, message_id,
                                 headers, activity_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(format!("reply:{activity_id}"))
        .bind(lead_id)
        .bind(&thread.recipient)
        .bind(&thread.subject)
        .bind(text)
        .bind(message_id)
        .bind(Json(headers))
        .bind(activity_id)
        .execute(&mut **tx)
        .await?;
        metrics::counter!("leadpipe_mail_queued_total").increment(1);
        Ok(())
    }

    /// Claims up to `limit` chat replies that are due, each for `lease` (see
    /// [`Store::claim_due_mail`]: the same rules).
    pub async fn claim_due_replies(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutgoingReply>, StoreError> {
        let rows = sqlx::query(&claim_statement(
            "replies",
            "id, lead_id, activity_id, platform, account, chat_id, body, attempts, created_at",
        ))
        .bind(limit)
        .bind(lease.as_secs_f64())
        .fetch_all(self.pool())
        .await?;
        let mut replies = Vec::with_capacity(rows.len());
        for row in rows {
            let platform: String = row.try_get("platform")?;
            let Some(platform) = ChatPlatform::parse(&platform) else {
                continue;
            };
            replies.push(OutgoingReply {
                id: row.try_get("id")?,
                lead_id: row.try_get("lead_id")?,
                activity_id: row.try_get("activity_id")?,
                target: ChatTarget {
                    platform,
                    account: row.try_get("account")?,
                    chat_id: row.try_get("chat_id")?,
                },
                body: row.try_get("body")?,
                attempts: row.try_get("attempts")?,
                created_at: row.try_get("created_at")?,
            });
        }
        replies.sort_by_key(|r| r.id);
        Ok(replies)
    }

    /// Hands claimed replies back unsent (a stopping worker), as if never attempted.
    pub async fn release_replies(&self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query(&release_statement("replies"))
            .bind(ids)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records that reply `id` was sent: the row, and its activity (`delivery = sent`
    /// plus `fields`, the platform's id of the message).
    pub async fn mark_reply_sent(
        &self,
        id: i64,
        platform_message_id: &str,
        fields: serde_json::Map<String, Value>,
    ) -> Result<(), StoreError> {
        let mut patch = fields;
        patch.insert("delivery".into(), json!("sent"));
        patch.insert("sent_at".into(), json!(Utc::now()));
        sqlx::query(
            "WITH r AS (
                 UPDATE replies SET state = 'sent', sent_at = now(), claimed_until = NULL,
                                    last_error = NULL, platform_message_id = $2
                 WHERE id = $1
                 RETURNING activity_id)
             UPDATE activities a SET data = (a.data - 'last_error') || $3
             FROM r WHERE a.id = r.activity_id",
        )
        .bind(id)
        .bind(platform_message_id)
        .bind(Json(Value::Object(patch)))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a failed attempt at reply `id`: tried again after `retry_in` (its activity
    /// shows `last_error` and `attempts`), or given up on when `None` (`delivery =
    /// failed`, `error`).
    pub async fn mark_reply_failed(
        &self,
        id: i64,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<(), StoreError> {
        let error = error.replace('\0', "\u{FFFD}");
        sqlx::query(&failed_statement("replies"))
            .bind(id)
            .bind(&error)
            .bind(retry_in.map(|d| d.as_secs_f64()))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// How many chat replies wait, are being sent, and were given up on.
    pub async fn reply_depth(&self) -> Result<OutboxDepth, StoreError> {
        let row = sqlx::query(&depth_statement("replies"))
            .fetch_one(self.pool())
            .await?;
        Ok(OutboxDepth::from_row(&row))
    }
}

/// The `channel` label of a reply's metrics (`telegram`, `whatsapp`, `email`).
pub fn reply_channel(target: &ReplyTarget) -> &'static str {
    match target {
        ReplyTarget::Chat(chat) => chat.platform.as_str(),
        ReplyTarget::Mail(_) => "email",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_keys_name_the_platform_account_and_chat() {
        assert_eq!(
            ChatTarget::from_conversation_key("chat:telegram-shop-2:12345"),
            Some(ChatTarget {
                platform: ChatPlatform::Telegram,
                account: "shop-2".into(),
                chat_id: "12345".into(),
            })
        );
        assert_eq!(
            ChatTarget::from_conversation_key("chat:whatsapp-1099:393331234567"),
            Some(ChatTarget {
                platform: ChatPlatform::WhatsApp,
                account: "1099".into(),
                chat_id: "393331234567".into(),
            })
        );
        let business =
            ChatTarget::from_conversation_key("chat:telegram-shop:42@AQADbPQiAAQ1bA8A").unwrap();
        assert_eq!(business.telegram_chat(), ("42", Some("AQADbPQiAAQ1bA8A")));
        let own = ChatTarget::from_conversation_key("chat:telegram-shop:42").unwrap();
        assert_eq!(own.telegram_chat(), ("42", None));
        for other in [
            "chat:site-widget:abc",
            "chat:telegram:1",
            "email-thread:a@b",
            "call:twilio:CA1",
            "chat:telegram-:1",
        ] {
            assert_eq!(ChatTarget::from_conversation_key(other), None, "{other}");
        }
    }

    #[test]
    fn a_reply_subject_has_one_re() {
        assert_eq!(reply_subject(Some("Preventivo")), "Re: Preventivo");
        assert_eq!(reply_subject(Some("RE: Preventivo")), "RE: Preventivo");
        assert_eq!(reply_subject(Some("a\r\nBcc: x")), "Re: a Bcc: x");
        assert_eq!(reply_subject(None), "Re: your message");
    }
}
