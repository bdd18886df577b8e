//! Events and conversations: many inquiries (a mail thread's replies, a chat's messages and
//! edits, a call's status callbacks) belong to one conversation, and some of them update
//! one activity in place instead of adding another.
//!
//! The inquiry id stays the id of one event, so a replay of the same event is still a
//! no-op; an [`EventRef`] says where the event belongs.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::inquiry::Channel;

/// What an activity on a lead records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// A web-form submission.
    Form,
    /// A mail.
    Email,
    /// A chat message.
    Message,
    /// A phone call.
    Call,
    /// A row of an imported file.
    Import,
    /// Something typed in by a person.
    Note,
}

impl ActivityKind {
    /// The stable lower-case name used in storage and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Form => "form",
            ActivityKind::Email => "email",
            ActivityKind::Message => "message",
            ActivityKind::Call => "call",
            ActivityKind::Import => "import",
            ActivityKind::Note => "note",
        }
    }

    /// What an inquiry of `channel` records when its connector does not say.
    pub fn of_channel(channel: Channel) -> Self {
        match channel {
            Channel::Form => ActivityKind::Form,
            Channel::Email => ActivityKind::Email,
            Channel::Chat => ActivityKind::Message,
            Channel::Call => ActivityKind::Call,
            Channel::Import => ActivityKind::Import,
            Channel::Manual => ActivityKind::Note,
        }
    }
}

impl fmt::Display for ActivityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A conversation key that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` is not a conversation key: {problem}")]
pub struct InvalidConversationKey {
    key: String,
    problem: &'static str,
}

/// One name of a conversation. As a string: `email-thread:<message id>`,
/// `chat:<platform>:<chat id>` or `call:<provider>:<call id>`.
///
/// A chat or call id is unique only within its platform or provider account, so a
/// connector names the account in `platform` / `provider` where ids could repeat across
/// accounts (two Asterisk servers: `asterisk-pbx1`, `asterisk-pbx2`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConversationKey {
    /// A mail thread, named by one Message-ID in it (without the angle brackets).
    EmailThread(String),
    /// A chat on a messenger platform.
    Chat {
        /// `telegram`, `whatsapp`, a generic source's name.
        platform: String,
        /// The platform's id of the chat.
        chat_id: String,
    },
    /// A phone call, all its legs and status callbacks.
    Call {
        /// `twilio`, `asterisk-pbx1`, ...
        provider: String,
        /// The provider's id of the call (Twilio parent CallSid, Asterisk Linkedid).
        call_id: String,
    },
}

impl ConversationKey {
    /// The thread a Message-ID (or an id from In-Reply-To or References) names; angle
    /// brackets and surrounding space are dropped.
    pub fn email_thread(message_id: &str) -> Result<Self, InvalidConversationKey> {
        let id = message_id.trim();
        let id = id
            .strip_prefix('<')
            .and_then(|i| i.strip_suffix('>'))
            .unwrap_or(id);
        let key = Self::EmailThread(id.to_owned());
        key.check()?;
        Ok(key)
    }

    /// A chat on `platform`.
    pub fn chat(platform: &str, chat_id: &str) -> Result<Self, InvalidConversationKey> {
        let key = Self::Chat {
            platform: platform.to_owned(),
            chat_id: chat_id.to_owned(),
        };
        key.check()?;
        Ok(key)
    }

    /// A call through `provider`.
    pub fn call(provider: &str, call_id: &str) -> Result<Self, InvalidConversationKey> {
        let key = Self::Call {
            provider: provider.to_owned(),
            call_id: call_id.to_owned(),
        };
        key.check()?;
        Ok(key)
    }

    /// Reads a key written by [`ConversationKey::as_key`].
    pub fn parse(raw: &str) -> Result<Self, InvalidConversationKey> {
        let invalid = |problem| InvalidConversationKey {
            key: raw.to_owned(),
            problem,
        };
        let (kind, rest) = raw
            .split_once(':')
            .ok_or_else(|| invalid("it has no `kind:` prefix"))?;
        let key = match kind {
            "email-thread" => Self::EmailThread(rest.to_owned()),
            "chat" | "call" => {
                let (account, id) = rest
                    .split_once(':')
                    .ok_or_else(|| invalid("it needs `<platform>:<id>` after the kind"))?;
                let (account, id) = (account.to_owned(), id.to_owned());
                if kind == "chat" {
                    Self::Chat {
                        platform: account,
                        chat_id: id,
                    }
                } else {
                    Self::Call {
                        provider: account,
                        call_id: id,
                    }
                }
            }
            _ => return Err(invalid("the kind is not email-thread, chat or call")),
        };
        key.check().map_err(|e| invalid(e.problem))?;
        Ok(key)
    }

    fn check(&self) -> Result<(), InvalidConversationKey> {
        let invalid = |problem| InvalidConversationKey {
            key: self.as_key(),
            problem,
        };
        let no_space =
            |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        match self {
            Self::EmailThread(id) if !no_space(id) => Err(invalid(
                "a Message-ID is not empty and has no spaces or control characters",
            )),
            Self::Chat {
                platform: account,
                chat_id: id,
            }
            | Self::Call {
                provider: account,
                call_id: id,
            } if !no_space(account) || account.contains(':') || !no_space(id) => Err(invalid(
                "the platform has no `:`, and neither it nor the id is empty or has spaces or control characters",
            )),
            _ => Ok(()),
        }
    }

    /// The key as one string, e.g. `call:twilio:CA123`.
    pub fn as_key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmailThread(id) => write!(f, "email-thread:{id}"),
            Self::Chat { platform, chat_id } => write!(f, "chat:{platform}:{chat_id}"),
            Self::Call { provider, call_id } => write!(f, "call:{provider}:{call_id}"),
        }
    }
}

impl Serialize for ConversationKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConversationKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Where one event belongs: its conversation, the activity it creates or updates, and its
/// place in that activity's history. Forms carry none: each submission is an activity of
/// its own, matched by the person alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRef {
    /// What the event is on the lead.
    pub kind: ActivityKind,
    /// Every name of its conversation this event knows, its own first: a mail's Message-ID,
    /// then In-Reply-To and References; a chat; a call. An event of a conversation that
    /// belongs to a lead is filed onto that lead, before any person-key matching.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conversation: Vec<ConversationKey>,
    /// The activity this event creates or updates in place (one per call, one per chat
    /// message so an edit replaces its text); `None`: an activity of its own. Unique across
    /// leads, so it names the channel and account (`call:twilio:CA123`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_key: Option<String>,
    /// Where the event stands in its activity's history (a sequence number, a time in
    /// milliseconds): an event of a higher order is newer. An older event arriving late
    /// only fills what the activity does not have yet; it never overwrites a newer one.
    /// `None`: the order of arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<i64>,
    /// When it happened as the sender tells (a mail's Date, a message's date); the time
    /// leadpipe received it when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// The activity's subject (a mail's decoded Subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The channel's fields for the activity's `data` (`message_id`, `call_id`, `status`,
    /// ...); a newer event's values replace an older one's, key by key.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// `data` fields that stand elsewhere in the activity's history than the event itself,
    /// with their own order: a call's `<Dial>` outcome decides `missed` against every
    /// status callback, and a value the event does not know yet (`null`) yields to any
    /// known one. Fields not listed have the event's `order`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub field_orders: std::collections::BTreeMap<String, i64>,
    /// Tags the event adds to its lead (`missed_call`); tags are never removed by events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// True when the event only ever adds to a lead that already has its conversation or
    /// its person (a sticker, a photo without a caption): alone it says nothing to open a
    /// lead on, so without one it is kept as `unmatched` and starts none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_up: bool,
}

impl EventRef {
    /// An event of `kind` with nothing else known yet.
    pub fn new(kind: ActivityKind) -> Self {
        Self {
            kind,
            conversation: Vec::new(),
            activity_key: None,
            order: None,
            occurred_at: None,
            subject: None,
            data: serde_json::Map::new(),
            field_orders: std::collections::BTreeMap::new(),
            tags: Vec::new(),
            follow_up: false,
        }
    }

    /// Sets a `data` field only the activity's first event decides (the update that began
    /// a chat message): a later event, an edit say, fills it where missing and never
    /// replaces it, because its order is below every other.
    pub fn keep_first(&mut self, name: &str, value: serde_json::Value) {
        self.data.insert(name.to_owned(), value);
        self.field_orders.insert(name.to_owned(), i64::MIN);
    }

    /// The order of one `data` field of this event: its own, else the event's.
    pub fn field_order(&self, field: &str) -> Option<i64> {
        self.field_orders.get(field).copied().or(self.order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_keys_read_back_what_they_write() {
        for key in [
            ConversationKey::email_thread(" <a.b@mail.example.it> ").unwrap(),
            ConversationKey::chat("telegram", "-100123").unwrap(),
            ConversationKey::call("twilio", "CA42").unwrap(),
        ] {
            assert_eq!(ConversationKey::parse(&key.as_key()).unwrap(), key);
            let json = serde_json::to_string(&key).unwrap();
            assert_eq!(serde_json::from_str::<ConversationKey>(&json).unwrap(), key);
        }
        assert_eq!(
            ConversationKey::email_thread("<a.b@mail.example.it>")
                .unwrap()
                .as_key(),
            "email-thread:a.b@mail.example.it"
        );
    }

    #[test]
    fn malformed_conversation_keys_are_refused_with_a_reason() {
        for raw in [
            "",
            "call",
            "call:twilio",
            "call::CA1",
            "chat:tele gram:1",
            "call:twilio:CA\u{0}1",
            "fax:1:2",
            "email-thread:",
        ] {
            let error = ConversationKey::parse(raw).unwrap_err();
            assert!(error.to_string().contains("is not a conversation key"));
        }
        assert!(ConversationKey::email_thread("<>").is_err());
        assert!(ConversationKey::chat("whatsapp", "").is_err());
    }

    #[test]
    fn an_event_survives_the_wire_and_a_bare_one_stays_small() {
        let mut event = EventRef::new(ActivityKind::Call);
        event.conversation = vec![ConversationKey::call("twilio", "CA1").unwrap()];
        event.activity_key = Some("call:twilio:CA1".into());
        event.order = Some(3);
        event.data.insert("status".into(), "completed".into());
        event.tags.push("missed_call".into());
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["conversation"][0], "call:twilio:CA1");
        assert_eq!(serde_json::from_value::<EventRef>(json).unwrap(), event);
        assert_eq!(
            serde_json::to_value(EventRef::new(ActivityKind::Email)).unwrap(),
            serde_json::json!({"kind": "email"})
        );
    }
}
