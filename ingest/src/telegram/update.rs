//! The Bot API's `Update` as it arrives, and the rules that make one an inquiry.
//!
//! Only the fields the rules read are typed; everything else stays in the raw payload.
//! What is an inquiry: a private chat's message with content (text, a caption, a shared
//! contact), an edit of one (it updates the message's activity in place), the same from
//! a customer in a chat of a Telegram Business account the bot is connected to, and a
//! button press (`callback_query`). Group, supergroup and channel traffic, membership updates,
//! bots, service messages and `/start` are not; a `/start <payload>` deep link is kept
//! for the chat's next inquiry as its `utm_source`.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::{ActivityKind, ConversationKey, EventRef};
use crate::inquiry::{Channel, ContactHints, Inquiry, InquiryId, MessengerHandle, RawPayload};

/// The messenger platform name in person keys (`messenger:telegram:<user id>`).
pub const PLATFORM: &str = "telegram";

/// One Bot API `Update`; exactly one of its optional parts is set.
#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    /// Telegram's sequential id; the poller's offset and the inquiry id derive from it.
    pub update_id: i64,
    /// A new message.
    #[serde(default)]
    pub message: Option<Message>,
    /// A new version of a message the bot knows.
    #[serde(default)]
    pub edited_message: Option<Message>,
    /// A channel post.
    #[serde(default)]
    pub channel_post: Option<serde::de::IgnoredAny>,
    /// An edited channel post.
    #[serde(default)]
    pub edited_channel_post: Option<serde::de::IgnoredAny>,
    /// A message in a chat of a Telegram Business account the bot is connected to.
    #[serde(default)]
    pub business_message: Option<Message>,
    /// A new version of such a message.
    #[serde(default)]
    pub edited_business_message: Option<Message>,
    /// A button of an inline keyboard pressed.
    #[serde(default)]
    pub callback_query: Option<CallbackQuery>,
    /// The bot's own membership of a chat changed.
    #[serde(default)]
    pub my_chat_member: Option<serde::de::IgnoredAny>,
    /// Someone's membership of a chat changed.
    #[serde(default)]
    pub chat_member: Option<serde::de::IgnoredAny>,
    /// Someone asked to join a chat.
    #[serde(default)]
    pub chat_join_request: Option<serde::de::IgnoredAny>,
}

/// A message (the fields the rules read).
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// Unique within its chat.
    pub message_id: i64,
    /// The sender; absent in channels.
    #[serde(default)]
    pub from: Option<User>,
    /// The chat it belongs to.
    pub chat: Chat,
    /// When it was sent (Unix seconds).
    #[serde(default)]
    pub date: i64,
    /// When it was last edited (Unix seconds).
    #[serde(default)]
    pub edit_date: Option<i64>,
    /// Its text.
    #[serde(default)]
    pub text: Option<String>,
    /// Marked parts of the text (offsets in UTF-16 units).
    #[serde(default)]
    pub entities: Vec<Entity>,
    /// A media caption.
    #[serde(default)]
    pub caption: Option<String>,
    /// Marked parts of the caption.
    #[serde(default)]
    pub caption_entities: Vec<Entity>,
    /// A shared contact.
    #[serde(default)]
    pub contact: Option<Contact>,
    /// The Telegram Business connection a business chat's message came through.
    #[serde(default)]
    pub business_connection_id: Option<String>,
    /// Members added (a service message).
    #[serde(default)]
    pub new_chat_members: Option<serde::de::IgnoredAny>,
    /// A member left (a service message).
    #[serde(default)]
    pub left_chat_member: Option<serde::de::IgnoredAny>,
    /// Every other field as sent: media, a location, service fields.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A Telegram user.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    /// The user id (up to 52 bits).
    pub id: i64,
    /// True for bots.
    #[serde(default)]
    pub is_bot: bool,
    /// First name.
    #[serde(default)]
    pub first_name: String,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// `@username` without the `@`.
    #[serde(default)]
    pub username: Option<String>,
}

/// A chat: private, group, supergroup or channel.
#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    /// The chat id (negative for groups and channels).
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A marked part of a text.
#[derive(Debug, Clone, Deserialize)]
pub struct Entity {
    /// `phone_number`, `email`, `bot_command`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Start, in UTF-16 code units.
    pub offset: usize,
    /// Length, in UTF-16 code units.
    pub length: usize,
}

/// A shared contact card.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contact {
    /// The number, international digits with or without `+`.
    pub phone_number: String,
    /// First name on the card.
    #[serde(default)]
    pub first_name: String,
    /// Last name on the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// The Telegram user the card belongs to, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
}

/// A pressed inline-keyboard button.
#[derive(Debug, Clone, Deserialize)]
pub struct CallbackQuery {
    /// Unique id of the press.
    pub id: String,
    /// Who pressed it.
    pub from: User,
    /// The bot's message the button belongs to (absent for inline-mode messages).
    #[serde(default)]
    pub message: Option<CallbackMessage>,
    /// The button's data.
    #[serde(default)]
    pub data: Option<String>,
}

/// The message a button belongs to (perhaps no longer accessible: only chat and id).
#[derive(Debug, Clone, Deserialize)]
pub struct CallbackMessage {
    /// The message id.
    pub message_id: i64,
    /// Its chat.
    pub chat: Chat,
}

/// `/start` deep-link payloads waiting for their chat's next inquiry, by chat id.
pub type StartPayloads = BTreeMap<String, String>;

/// What a bot's updates are read with.
#[derive(Debug, Clone)]
pub struct BotReading {
    /// The bot's configured name (in keys and the inquiry id).
    pub name: String,
    /// The source its leads are filed under.
    pub source: String,
    /// Region for phone numbers written without a country code.
    pub default_region: Option<String>,
}

impl BotReading {
    /// `telegram-<name>`: the account part of conversation and activity keys.
    pub fn account(&self) -> String {
        format!("{PLATFORM}-{}", self.name)
    }

    /// The conversation key of a chat: `chat:telegram-<bot>:<chat id>`.
    pub fn conversation(&self, chat_id: i64) -> Option<ConversationKey> {
        ConversationKey::chat(&self.account(), &chat_id.to_string()).ok()
    }

    /// The conversation key of a chat of a connected Telegram Business account:
    /// `chat:telegram-<bot>:<chat id>@<connection id>`, what a reply is sent through.
    pub fn business_conversation(&self, chat_id: i64, connection: &str) -> Option<ConversationKey> {
        ConversationKey::chat(&self.account(), &format!("{chat_id}@{connection}")).ok()
    }
}

/// What an update is.
#[derive(Debug)]
pub enum Verdict {
    /// An inquiry to hand on.
    Inquiry(Box<Inquiry>),
    /// Nothing to file; the reason is counted and logged.
    Ignored(&'static str),
}

/// Reads one update. `starts` holds the deep-link payloads seen before (a `/start
/// <payload>` adds one, the chat's next inquiry carries it); `raw` is the update as it
/// arrived, kept as the inquiry's payload. The payload stays until [`forget_start`]:
/// an inquiry the broker did not take is sent again and must carry it again.
pub fn read_update(
    bot: &BotReading,
    update: &Update,
    raw: Bytes,
    starts: &mut StartPayloads,
    received_at: DateTime<Utc>,
) -> Verdict {
    if update.channel_post.is_some() || update.edited_channel_post.is_some() {
        return Verdict::Ignored("channel_post");
    }
    if update.my_chat_member.is_some()
        || update.chat_member.is_some()
        || update.chat_join_request.is_some()
    {
        return Verdict::Ignored("membership");
    }
    let business = update
        .business_message
        .as_ref()
        .map(|m| (m, false))
        .or(update.edited_business_message.as_ref().map(|m| (m, true)));
    let (message, edited) = match (&update.message, &update.edited_message, business) {
        (Some(m), _, _) => (m, false),
        (None, Some(m), _) => (m, true),
        (None, None, Some(found)) => found,
        (None, None, None) => {
            return match &update.callback_query {
                Some(press) => read_callback(bot, update.update_id, press, raw, received_at),
                None => Verdict::Ignored("unsupported_update"),
            };
        }
    };
    if message.new_chat_members.is_some() || message.left_chat_member.is_some() {
        return Verdict::Ignored("membership");
    }
    match message.chat.kind.as_str() {
        "private" => {}
        "channel" => return Verdict::Ignored("channel_post"),
        _ => return Verdict::Ignored("group_chat"),
    }
    let Some(from) = &message.from else {
        return Verdict::Ignored("no_sender");
    };
    if from.is_bot {
        return Verdict::Ignored("bot_sender");
    }
    // In a business account's private chat the other side is the chat itself; a message
    // from anyone else there is the account's owner (or staff) answering.
    let business = business.is_some();
    if business && from.id != message.chat.id {
        return Verdict::Ignored("business_reply");
    }
    if !edited && let Some(payload) = message.text.as_deref().and_then(start_command) {
        if !payload.is_empty() {
            starts.insert(message.chat.id.to_string(), payload.to_owned());
        }
        return Verdict::Ignored("start_command");
    }
    let text = message
        .text
        .as_deref()
        .map(|t| (t, &message.entities))
        .or_else(|| {
            message
                .caption
                .as_deref()
                .map(|c| (c, &message.caption_entities))
        })
        .filter(|(t, _)| !t.trim().is_empty());
    let media = media(&message.other);
    // Words (text, a caption, a card) can open a lead; media alone only adds to one.
    let worded = text.is_some() || message.contact.is_some();
    if !worded && media.is_none() {
        return Verdict::Ignored("no_content");
    }

    let mut contact = person(from);
    if let Some((text, entities)) = text {
        contact.phone = marked(text, entities, "phone_number");
        contact.email = marked(text, entities, "email");
    }
    // A contact card is the sender's own number only when it names the sender; a card
    // of someone else is kept with the message, never as this person's phone.
    if let Some(card) = &message.contact
        && card.user_id == Some(from.id)
    {
        contact.phone = Some(international(&card.phone_number));
    }
    let body = match (text, &message.contact) {
        (Some((text, _)), _) => Some(text.to_owned()),
        (None, Some(card)) => Some(describe(card)),
        (None, None) => media.as_ref().and_then(|m| m.words.clone()),
    };

    let chat_id = message.chat.id;
    // A business chat is answered through its connection, so it is a conversation of
    // its own: `chat:telegram-<bot>:<chat id>@<connection id>`.
    let connection = message
        .business_connection_id
        .as_deref()
        .filter(|_| business);
    let conversation = match connection {
        Some(connection) => bot.business_conversation(chat_id, connection),
        None => bot.conversation(chat_id),
    };
    let Some(conversation) = conversation else {
        return Verdict::Ignored("unreadable");
    };
    let mut event = EventRef::new(ActivityKind::Message);
    event.conversation = vec![conversation];
    event.follow_up = !worded;
    // A business chat numbers its messages apart from the bot's own chat with the same
    // person, so its messages have keys of their own.
    event.activity_key = Some(match connection {
        Some(connection) => format!(
            "message:{}:{chat_id}:business-{connection}:{}",
            bot.account(),
            message.message_id
        ),
        _ => format!("message:{}:{chat_id}:{}", bot.account(), message.message_id),
    });
    let changed = if edited {
        message.edit_date.unwrap_or(message.date)
    } else {
        message.date
    };
    event.order = Some(changed.saturating_mul(1000));
    event.occurred_at = at(message.date);
    // The update that began the activity names it for good; an edit's own update id is
    // kept beside it.
    event.keep_first("update_id", update.update_id.into());
    let data = &mut event.data;
    if edited {
        data.insert("edit_update_id".into(), update.update_id.into());
    }
    data.insert("message_id".into(), message.message_id.into());
    data.insert("chat_id".into(), chat_id.into());
    data.insert("direction".into(), "inbound".into());
    if let Some(connection) = connection {
        data.insert("business_connection_id".into(), connection.into());
    }
    if edited && let Some(when) = at(changed) {
        data.insert("edited_at".into(), when.to_rfc3339().into());
    }
    if let Some(card) = &message.contact {
        data.insert(
            "contact".into(),
            serde_json::to_value(card).unwrap_or_default(),
        );
    }
    if let Some(media) = media {
        data.insert("type".into(), media.kind.into());
        data.extend(media.data);
    }
    // The deep link names the source of the chat's next lead, so only something that
    // can open one takes it.
    let start = (!event.follow_up)
        .then(|| starts.get(&chat_id.to_string()).cloned())
        .flatten();
    Verdict::Inquiry(Box::new(inquiry(
        bot,
        update.update_id,
        contact,
        body,
        event,
        raw,
        start,
        received_at,
    )))
}

/// What a message holds besides words: its kind, the activity's fields and, where the
/// media says something, a line of text (a sticker's emoji, a place, a poll's question).
struct Media {
    kind: &'static str,
    data: Map<String, Value>,
    words: Option<String>,
}

/// Files sent as media; a photo comes in several sizes, the last the largest.
const FILES: [&str; 8] = [
    "photo",
    "video",
    "video_note",
    "voice",
    "audio",
    "document",
    "animation",
    "sticker",
];

fn media(other: &Map<String, Value>) -> Option<Media> {
    let words_at = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
    };
    if let Some((kind, part)) = FILES.iter().find_map(|k| other.get(*k).map(|v| (*k, v))) {
        let file = match part {
            Value::Array(sizes) => sizes.last()?,
            one => one,
        };
        let mut attachment = Map::new();
        attachment.insert("type".into(), kind.into());
        for key in ["file_id", "file_unique_id", "mime_type", "file_name"] {
            if let Some(v) = file.get(key) {
                attachment.insert(key.into(), v.clone());
            }
        }
        let mut data = Map::new();
        data.insert("attachments".into(), vec![Value::Object(attachment)].into());
        let words = (kind == "sticker")
            .then(|| words_at(file, "emoji"))
            .flatten();
        return Some(Media { kind, data, words });
    }
    let place = |v: &Value| {
        let coordinate = |k: &str| v.get(k).filter(|c| c.is_number()).map(Value::to_string);
        coordinate("latitude")
            .zip(coordinate("longitude"))
            .map(|(lat, lon)| format!("({lat}, {lon})"))
    };
    let (kind, part, words) = if let Some(venue) = other.get("venue") {
        let line: Vec<String> = [words_at(venue, "title"), words_at(venue, "address")]
            .into_iter()
            .flatten()
            .chain(venue.get("location").and_then(place))
            .collect();
        ("venue", venue, (!line.is_empty()).then(|| line.join(", ")))
    } else if let Some(location) = other.get("location") {
        ("location", location, place(location))
    } else if let Some(poll) = other.get("poll") {
        ("poll", poll, words_at(poll, "question"))
    } else if let Some(dice) = other.get("dice") {
        ("dice", dice, words_at(dice, "emoji"))
    } else {
        return None;
    };
    let mut data = Map::new();
    data.insert(kind.into(), part.clone());
    Some(Media { kind, data, words })
}

fn read_callback(
    bot: &BotReading,
    update_id: i64,
    press: &CallbackQuery,
    raw: Bytes,
    received_at: DateTime<Utc>,
) -> Verdict {
    // A press on an inline-mode message has no chat of ours to belong to.
    let Some(message) = &press.message else {
        return Verdict::Ignored("inline_callback");
    };
    if message.chat.kind != "private" {
        return Verdict::Ignored("group_chat");
    }
    if press.from.is_bot {
        return Verdict::Ignored("bot_sender");
    }
    let chat_id = message.chat.id;
    let Some(conversation) = bot.conversation(chat_id) else {
        return Verdict::Ignored("unreadable");
    };
    let mut event = EventRef::new(ActivityKind::Message);
    event.conversation = vec![conversation];
    // A button belongs to a message of ours: pressing it answers the bot, it does not
    // start an inquiry of its own.
    event.follow_up = true;
    event.activity_key = Some(format!("callback:{}:{}", bot.account(), press.id));
    let data = &mut event.data;
    data.insert("update_id".into(), update_id.into());
    data.insert("message_id".into(), message.message_id.into());
    data.insert("chat_id".into(), chat_id.into());
    data.insert("direction".into(), "inbound".into());
    data.insert("callback_query_id".into(), press.id.clone().into());
    if let Some(value) = &press.data {
        data.insert("callback_data".into(), value.clone().into());
    }
    Verdict::Inquiry(Box::new(inquiry(
        bot,
        update_id,
        person(&press.from),
        press.data.clone(),
        event,
        raw,
        None,
        received_at,
    )))
}

/// The chat and deep-link payload an inquiry carries, for [`forget_start`] once it is
/// handed on.
pub fn start_taken(inquiry: &Inquiry) -> Option<(String, String)> {
    let payload = inquiry.utm.get("utm_source")?;
    let chat = inquiry.event.as_ref()?.data.get("chat_id")?.as_i64()?;
    Some((chat.to_string(), payload.clone()))
}

/// Forgets a payload whose inquiry was handed on; a newer `/start` in the same chat
/// meanwhile is kept for the chat's next inquiry.
pub fn forget_start(starts: &mut StartPayloads, taken: Option<(String, String)>) {
    if let Some((chat, payload)) = taken
        && starts.get(&chat) == Some(&payload)
    {
        starts.remove(&chat);
    }
}

#[allow(clippy::too_many_arguments)]
fn inquiry(
    bot: &BotReading,
    update_id: i64,
    contact: ContactHints,
    message: Option<String>,
    event: EventRef,
    raw: Bytes,
    start_payload: Option<String>,
    received_at: DateTime<Utc>,
) -> Inquiry {
    let mut utm = BTreeMap::new();
    if let Some(payload) = start_payload {
        utm.insert("utm_source".to_owned(), payload);
    }
    Inquiry {
        // A redelivered update (same bot, same update id) is the same inquiry: a replay.
        id: InquiryId::from_external(
            Channel::Chat,
            &bot.source,
            &format!("{}:{update_id}", bot.account()),
        ),
        channel: Channel::Chat,
        source: bot.source.clone(),
        external_id: Some(update_id.to_string()),
        received_at,
        default_region: bot.default_region.clone(),
        contact,
        message,
        utm,
        fields: serde_json::Map::new(),
        attachments: Vec::new(),
        spam: None,
        dedup: None,
        raw: RawPayload {
            content_type: Some("application/json".into()),
            body: raw,
        },
        event: Some(event),
    }
}

/// The person behind a Telegram user: names as sent, the messenger handle.
fn person(user: &User) -> ContactHints {
    ContactHints {
        first_name: Some(user.first_name.clone()).filter(|n| !n.trim().is_empty()),
        last_name: user.last_name.clone().filter(|n| !n.trim().is_empty()),
        messenger: Some(MessengerHandle {
            platform: PLATFORM.into(),
            user_id: user.id.to_string(),
            username: user.username.clone(),
        }),
        ..ContactHints::default()
    }
}

/// The payload of a `/start` command (empty for a bare one); `None` for other text,
/// and for words typed after `/start`, which are no deep link's payload (Telegram's
/// are at most 64 of `A-Z a-z 0-9 _ -`) but a question.
fn start_command(text: &str) -> Option<&str> {
    let text = text.trim();
    let (command, rest) = text.split_at(text.find(char::is_whitespace).unwrap_or(text.len()));
    let name = command.split('@').next().unwrap_or(command);
    let payload = rest.trim();
    let deep_link = payload.len() <= 64
        && payload
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    (name == "/start" && deep_link).then_some(payload)
}

/// The first text Telegram marked as `kind` (offsets in UTF-16 units, as the Bot API
/// counts them).
fn marked(text: &str, entities: &[Entity], kind: &str) -> Option<String> {
    let units: Vec<u16> = text.encode_utf16().collect();
    entities.iter().filter(|e| e.kind == kind).find_map(|e| {
        let end = e.offset.checked_add(e.length)?;
        let part = String::from_utf16(units.get(e.offset..end)?).ok()?;
        Some(part.trim().to_owned()).filter(|p| !p.is_empty())
    })
}

/// A contact card's number is international digits, with or without the `+`.
fn international(number: &str) -> String {
    let number = number.trim();
    if number.starts_with('+') {
        number.to_owned()
    } else {
        format!("+{number}")
    }
}

fn describe(card: &Contact) -> String {
    let name = [Some(card.first_name.as_str()), card.last_name.as_deref()]
        .into_iter()
        .flatten()
        .filter(|n| !n.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    format!("Contact: {name} {}", international(&card.phone_number)).replace("  ", " ")
}

fn at(unix: i64) -> Option<DateTime<Utc>> {
    (unix > 0)
        .then(|| Utc.timestamp_opt(unix, 0).single())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bot() -> BotReading {
        BotReading {
            name: "shop".into(),
            source: "telegram-shop".into(),
            default_region: None,
        }
    }

    fn private(message: serde_json::Value) -> serde_json::Value {
        let mut m = json!({
            "message_id": 10,
            "from": {"id": 42, "is_bot": false, "first_name": "Anna", "last_name": "Rossi"},
            "chat": {"id": 42, "type": "private", "first_name": "Anna"},
            "date": 1_700_000_000
        });
        for (k, v) in message.as_object().unwrap() {
            m[k] = v.clone();
        }
        m
    }

    fn read(update: serde_json::Value, starts: &mut StartPayloads) -> Verdict {
        let raw = Bytes::from(serde_json::to_vec(&update).unwrap());
        let update: Update = serde_json::from_value(update).unwrap();
        read_update(&bot(), &update, raw, starts, Utc::now())
    }

    fn inquiry_of(verdict: Verdict) -> Inquiry {
        match verdict {
            Verdict::Inquiry(i) => *i,
            Verdict::Ignored(reason) => panic!("ignored: {reason}"),
        }
    }

    #[test]
    fn entity_offsets_are_utf16_units_past_emoji() {
        // Two emoji (two UTF-16 units each) before the number and the address.
        let text = "🙏🙏 call +48 601 234 567 or a.b@example.pl";
        let phone_at = "🙏🙏 call ".encode_utf16().count();
        let mail_at = "🙏🙏 call +48 601 234 567 or ".encode_utf16().count();
        let update = json!({"update_id": 1, "message": private(json!({
            "text": text,
            "entities": [
                {"type": "phone_number", "offset": phone_at, "length": 15},
                {"type": "email", "offset": mail_at, "length": 14}
            ]
        }))});
        let inquiry = inquiry_of(read(update, &mut StartPayloads::new()));
        assert_eq!(inquiry.contact.phone.as_deref(), Some("+48 601 234 567"));
        assert_eq!(inquiry.contact.email.as_deref(), Some("a.b@example.pl"));
        assert_eq!(inquiry.message.as_deref(), Some(text));
        // An entity past the end of the text is no hint, and no panic.
        let update = json!({"update_id": 2, "message": private(json!({
            "text": "🙏", "entities": [{"type": "phone_number", "offset": 1, "length": 9}]
        }))});
        assert_eq!(
            inquiry_of(read(update, &mut StartPayloads::new()))
                .contact
                .phone,
            None
        );
    }

    #[test]
    fn a_deep_link_waits_for_the_chats_next_inquiry_only() {
        let mut starts = StartPayloads::new();
        let start =
            json!({"update_id": 1, "message": private(json!({"text": "/start promo_Vi-1"}))});
        assert!(matches!(
            read(start, &mut starts),
            Verdict::Ignored("start_command")
        ));
        let bare = json!({"update_id": 2, "message": private(json!({"text": "/start"}))});
        assert!(matches!(
            read(bare, &mut starts),
            Verdict::Ignored("start_command")
        ));
        let first = json!({"update_id": 3, "message": private(json!({"text": "Ciao"}))});
        let inquiry = inquiry_of(read(first.clone(), &mut starts));
        assert_eq!(
            inquiry.utm.get("utm_source").map(String::as_str),
            Some("promo_Vi-1")
        );
        // Not handed on (the broker refused): the retry still carries the payload.
        let again = inquiry_of(read(first, &mut starts));
        assert_eq!(again.utm, inquiry.utm);
        forget_start(&mut starts, start_taken(&again));
        let second = json!({"update_id": 4, "message": private(json!({"text": "Ancora"}))});
        assert!(inquiry_of(read(second, &mut starts)).utm.is_empty());
    }

    #[test]
    fn a_deep_link_waits_past_what_cannot_open_a_lead_and_words_after_start_are_a_question() {
        let mut starts = StartPayloads::new();
        let start = json!({"update_id": 1, "message": private(json!({"text": "/start ig_promo"}))});
        read(start, &mut starts);
        let sticker = json!({"update_id": 2, "message": private(json!({
            "sticker": {"file_id": "CAAD1", "emoji": "👋"}}))});
        let sticker = inquiry_of(read(sticker, &mut starts));
        assert!(sticker.utm.is_empty() && start_taken(&sticker).is_none());
        let press = json!({"update_id": 3, "callback_query": {
            "id": "cb1", "from": {"id": 42, "first_name": "Anna"},
            "message": {"message_id": 11, "chat": {"id": 42, "type": "private"}, "date": 0},
            "data": "cennik"}});
        assert!(inquiry_of(read(press, &mut starts)).utm.is_empty());
        let question =
            json!({"update_id": 4, "message": private(json!({"text": "Avete scrivanie?"}))});
        let question = inquiry_of(read(question, &mut starts));
        assert_eq!(
            question.utm.get("utm_source").map(String::as_str),
            Some("ig_promo")
        );
        let typed = "/start Buongiorno, vorrei un preventivo per 6 sedie";
        let typed_update = json!({"update_id": 5, "message": private(json!({"text": typed}))});
        let inquiry = inquiry_of(read(typed_update, &mut StartPayloads::new()));
        assert_eq!(inquiry.message.as_deref(), Some(typed));
        assert!(!inquiry.event.unwrap().follow_up);
        let long = format!("/start {}", "a".repeat(65));
        let long_update = json!({"update_id": 6, "message": private(json!({"text": long}))});
        assert!(matches!(
            read(long_update, &mut StartPayloads::new()),
            Verdict::Inquiry(_)
        ));
    }

    #[test]
    fn a_newer_deep_link_outlives_the_hand_off_of_an_older_one() {
        let mut starts = StartPayloads::new();
        let start = |payload: &str| json!({"update_id": 1, "message": private(json!({"text": format!("/start {payload}")}))});
        read(start("old"), &mut starts);
        let question = json!({"update_id": 2, "message": private(json!({"text": "Ciao"}))});
        let taken = start_taken(&inquiry_of(read(question, &mut starts)));
        read(start("new"), &mut starts);
        forget_start(&mut starts, taken);
        assert_eq!(starts.get("42").map(String::as_str), Some("new"));
    }

    #[test]
    fn only_the_senders_own_contact_is_their_phone() {
        let own = json!({"update_id": 1, "message": private(json!({
            "contact": {"phone_number": "393331234567", "first_name": "Anna", "user_id": 42}
        }))});
        let inquiry = inquiry_of(read(own, &mut StartPayloads::new()));
        assert_eq!(inquiry.contact.phone.as_deref(), Some("+393331234567"));
        let other = json!({"update_id": 2, "message": private(json!({
            "contact": {"phone_number": "+48601000111", "first_name": "Jan", "user_id": 77}
        }))});
        let inquiry = inquiry_of(read(other, &mut StartPayloads::new()));
        assert_eq!(inquiry.contact.phone, None);
        assert_eq!(inquiry.event.unwrap().data["contact"]["user_id"], 77);
    }

    #[test]
    fn an_edit_names_its_messages_activity_with_a_later_order() {
        let original = json!({"update_id": 1, "message": private(json!({"text": "a"}))});
        let edit = json!({"update_id": 2, "edited_message": private(json!({
            "text": "b", "edit_date": 1_700_000_060
        }))});
        let a = inquiry_of(read(original, &mut StartPayloads::new()));
        let b = inquiry_of(read(edit, &mut StartPayloads::new()));
        let (ea, eb) = (a.event.unwrap(), b.event.unwrap());
        assert_eq!(
            ea.activity_key.as_deref(),
            Some("message:telegram-shop:42:10")
        );
        assert_eq!(ea.activity_key, eb.activity_key);
        assert_eq!(ea.conversation[0].as_key(), "chat:telegram-shop:42");
        assert!(eb.order > ea.order);
        assert!(eb.data.contains_key("edited_at") && !ea.data.contains_key("edited_at"));
        assert_eq!(ea.data["update_id"], 1);
        assert_eq!(eb.data["update_id"], 2);
        assert_eq!(eb.field_order("update_id"), Some(i64::MIN));
        assert_eq!(eb.data["edit_update_id"], 2);
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn groups_channels_members_bots_and_empty_messages_are_not_inquiries() {
        let mut starts = StartPayloads::new();
        let group = json!({"update_id": 1, "message": {
            "message_id": 1, "from": {"id": 5, "first_name": "M"},
            "chat": {"id": -100, "type": "supergroup"}, "date": 1, "text": "hi"}});
        assert!(matches!(
            read(group, &mut starts),
            Verdict::Ignored("group_chat")
        ));
        let channel = json!({"update_id": 2, "channel_post": {"message_id": 1}});
        assert!(matches!(
            read(channel, &mut starts),
            Verdict::Ignored("channel_post")
        ));
        let member = json!({"update_id": 3, "my_chat_member": {"chat": {"id": 1}}});
        assert!(matches!(
            read(member, &mut starts),
            Verdict::Ignored("membership")
        ));
        let pinned = json!({"update_id": 4, "message": private(json!({"pinned_message": {}}))});
        assert!(matches!(
            read(pinned, &mut starts),
            Verdict::Ignored("no_content")
        ));
        let mut from_bot = private(json!({"text": "x"}));
        from_bot["from"]["is_bot"] = true.into();
        let bot_msg = json!({"update_id": 5, "message": from_bot});
        assert!(matches!(
            read(bot_msg, &mut starts),
            Verdict::Ignored("bot_sender")
        ));
    }

    #[test]
    fn media_without_words_only_follows_up() {
        let sticker = json!({"update_id": 1, "message": private(json!({
            "sticker": {"file_id": "CAAD1", "emoji": "👍", "is_animated": false}}))});
        let inquiry = inquiry_of(read(sticker, &mut StartPayloads::new()));
        let event = inquiry.event.as_ref().unwrap();
        assert!(event.follow_up);
        assert_eq!(inquiry.message.as_deref(), Some("👍"));
        assert_eq!(event.data["type"], "sticker");
        assert_eq!(
            event.data["attachments"],
            json!([{"type": "sticker", "file_id": "CAAD1"}])
        );
        let photo = json!({"update_id": 2, "message": private(json!({"photo": [
            {"file_id": "small", "width": 90, "height": 90},
            {"file_id": "large", "width": 1280, "height": 1280}]}))});
        let inquiry = inquiry_of(read(photo, &mut StartPayloads::new()));
        assert_eq!(inquiry.message, None);
        let event = inquiry.event.unwrap();
        assert!(event.follow_up);
        assert_eq!(event.data["attachments"][0]["file_id"], "large");
        let place = json!({"update_id": 3, "message": private(json!({
            "location": {"latitude": 45.07, "longitude": 7.68}}))});
        let inquiry = inquiry_of(read(place, &mut StartPayloads::new()));
        assert_eq!(inquiry.message.as_deref(), Some("(45.07, 7.68)"));
        assert_eq!(inquiry.event.unwrap().data["location"]["latitude"], 45.07);
        // A caption is words: a photo with one opens a lead like any message.
        let captioned = json!({"update_id": 4, "message": private(json!({
            "photo": [{"file_id": "p1"}], "caption": "Questo tavolo, 180x90"}))});
        let inquiry = inquiry_of(read(captioned, &mut StartPayloads::new()));
        let event = inquiry.event.unwrap();
        assert!(!event.follow_up);
        assert_eq!(event.data["attachments"][0]["file_id"], "p1");
    }

    #[test]
    fn a_business_chats_customer_is_read_and_its_owners_answers_are_not() {
        let business = |from: i64, message_id: i64, text: &str| {
            json!({"update_id": 20 + message_id, "business_message": {
                "business_connection_id": "bc-77", "message_id": message_id,
                "from": {"id": from, "first_name": "Lan", "last_name": "Trần"},
                "chat": {"id": 42, "type": "private", "first_name": "Lan"},
                "date": 1_700_000_000, "text": text}})
        };
        let question = inquiry_of(read(
            business(42, 10, "Cho mình hỏi giá ghế công thái học?"),
            &mut StartPayloads::new(),
        ));
        assert_eq!(question.contact.first_name.as_deref(), Some("Lan"));
        assert_eq!(
            question.message.as_deref(),
            Some("Cho mình hỏi giá ghế công thái học?")
        );
        let event = question.event.unwrap();
        assert!(!event.follow_up);
        assert_eq!(
            event.conversation[0].as_key(),
            "chat:telegram-shop:42@bc-77",
            "answered through the connection"
        );
        assert_eq!(
            event.activity_key.as_deref(),
            Some("message:telegram-shop:42:business-bc-77:10"),
            "apart from message 10 of the bot's own chat"
        );
        assert_eq!(event.data["business_connection_id"], "bc-77");
        assert!(matches!(
            read(
                business(9001, 11, "Dạ, 2.100.000đ ạ"),
                &mut StartPayloads::new()
            ),
            Verdict::Ignored("business_reply")
        ));
        let mut edit = business(42, 10, "Cho mình hỏi giá 10 ghế?");
        edit["edited_business_message"] = edit["business_message"].take();
        edit.as_object_mut().unwrap().remove("business_message");
        edit["edited_business_message"]["edit_date"] = 1_700_000_060.into();
        let edit = inquiry_of(read(edit, &mut StartPayloads::new()));
        assert_eq!(
            edit.event.unwrap().activity_key.as_deref(),
            Some("message:telegram-shop:42:business-bc-77:10")
        );
    }

    #[test]
    fn a_button_press_is_its_own_activity() {
        let press = json!({"update_id": 9, "callback_query": {
            "id": "cb77", "from": {"id": 42, "first_name": "Anna"},
            "message": {"message_id": 11, "chat": {"id": 42, "type": "private"}, "date": 0},
            "data": "price_list"}});
        let inquiry = inquiry_of(read(press, &mut StartPayloads::new()));
        let event = inquiry.event.unwrap();
        assert_eq!(
            event.activity_key.as_deref(),
            Some("callback:telegram-shop:cb77")
        );
        assert_eq!(event.data["update_id"], 9);
        assert_eq!(inquiry.message.as_deref(), Some("price_list"));
        assert!(event.follow_up, "a button press never opens a lead");
    }
}
