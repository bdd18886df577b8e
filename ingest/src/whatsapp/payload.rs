//! Reading a Cloud API webhook body: every `entry[]`, every `changes[]`, every message
//! and status, into [`InboundMessage`]s and counted statuses.
//!
//! The walk is lenient per item and strict about the whole: a body that is not a JSON
//! object is refused, while one message Meta sent in a shape this code does not know is
//! skipped with its reason (and counted), so it cannot hold back the rest of its batch
//! (Meta would redeliver the whole POST forever).

use serde_json::{Map, Value};

/// One inbound message from a customer, as the webhook described it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// The business number's id the message was sent to (`metadata.phone_number_id`).
    pub phone_number_id: String,
    /// The sender's WhatsApp id (international digits, no `+`).
    pub wa_id: String,
    /// The sender's profile name, as sent (it may be a nickname).
    pub name: Option<String>,
    /// An email address from a contact card the sender shared of themselves.
    pub email: Option<String>,
    /// The message id (`wamid...`).
    pub wamid: String,
    /// When it was sent, in Unix seconds.
    pub timestamp: Option<i64>,
    /// The message `type` as sent (`text`, `image`, `interactive`, ...).
    pub kind: String,
    /// The text it carries: the body, a caption, a button's title, a location described.
    pub text: Option<String>,
    /// The id of the reply button or list row tapped, or a template button's payload.
    pub reply_id: Option<String>,
    /// A Click-to-WhatsApp ad or post that opened the chat, as sent.
    pub referral: Option<Map<String, Value>>,
    /// Channel fields kept on the activity as sent (`context`, `location`, media, ...).
    pub data: Map<String, Value>,
    /// The message only adds to the sender's lead and opens none (a number change, a
    /// chat opened without a word, a reaction taken back).
    pub follow_up: bool,
    /// The sender's new WhatsApp id, from a system message saying they changed number.
    pub new_wa_id: Option<String>,
}

/// What one webhook body holds.
#[derive(Debug, Default)]
pub struct Walked {
    /// Every inbound message, in body order.
    pub messages: Vec<InboundMessage>,
    /// The `status` of every status update (`sent`, `delivered`, `read`, `failed`).
    pub statuses: Vec<String>,
    /// Items passed over, with why (`malformed_message`, `other_field`, ...).
    pub skipped: Vec<&'static str>,
}

/// Why a body cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object with an `entry` array.
    #[error(
        "the body is not a WhatsApp webhook: expected an object with an `entry` array (object `whatsapp_business_account`)"
    )]
    NotAWebhook,
}

/// Reads a webhook body.
pub fn walk(raw: &[u8]) -> Result<Walked, PayloadError> {
    let doc: Value =
        serde_json::from_slice(raw).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let entries = doc
        .get("entry")
        .and_then(Value::as_array)
        .ok_or(PayloadError::NotAWebhook)?;
    let mut walked = Walked::default();
    if doc.get("object").and_then(Value::as_str) != Some("whatsapp_business_account") {
        walked.skipped.push("not_whatsapp_business_account");
        return Ok(walked);
    }
    for entry in entries {
        for change in array(entry, "changes") {
            if change.get("field").and_then(Value::as_str) != Some("messages") {
                walked.skipped.push("other_field");
                continue;
            }
            let Some(value) = change.get("value") else {
                walked.skipped.push("malformed_change");
                continue;
            };
            walk_value(value, &mut walked);
        }
    }
    Ok(walked)
}

fn walk_value(value: &Value, walked: &mut Walked) {
    let phone_number_id = value
        .pointer("/metadata/phone_number_id")
        .and_then(text_of)
        .unwrap_or_default();
    let contacts = array(value, "contacts");
    // Meta reports problems of its own (an undeliverable webhook item) in `errors`.
    for _ in array(value, "errors") {
        walked.skipped.push("platform_error");
    }
    for status in array(value, "statuses") {
        walked.statuses.push(
            status
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
        );
    }
    for message in array(value, "messages") {
        match read_message(message, &phone_number_id, contacts) {
            Ok(m) => walked.messages.push(m),
            Err(reason) => walked.skipped.push(reason),
        }
    }
}

fn read_message(
    message: &Value,
    phone_number_id: &str,
    contacts: &[Value],
) -> Result<InboundMessage, &'static str> {
    let str_at = |key: &str| message.get(key).and_then(text_of);
    let (Some(wamid), Some(wa_id)) = (str_at("id"), str_at("from").map(|f| wa_digits(&f))) else {
        return Err("malformed_message");
    };
    if phone_number_id.is_empty() {
        return Err("malformed_message");
    }
    let kind = str_at("type").unwrap_or_else(|| "unknown".into());
    // The contact entry of the sender; a lone entry is the sender's whatever it says.
    let sender = contacts
        .iter()
        .find(|c| c.get("wa_id").and_then(text_of).map(|w| wa_digits(&w)) == Some(wa_id.clone()))
        .or(match contacts {
            [only] => Some(only),
            _ => None,
        });
    let name = sender
        .and_then(|c| c.pointer("/profile/name"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let mut out = InboundMessage {
        phone_number_id: phone_number_id.to_owned(),
        wa_id,
        name,
        email: None,
        wamid,
        timestamp: str_at("timestamp").and_then(|t| t.trim().parse().ok()),
        kind: kind.clone(),
        text: None,
        reply_id: None,
        referral: message.get("referral").and_then(Value::as_object).cloned(),
        data: Map::new(),
        follow_up: false,
        new_wa_id: None,
    };
    let part = message.get(&kind);
    match kind.as_str() {
        "text" => out.text = part.and_then(|t| t.get("body")).and_then(text_of),
        "interactive" => read_interactive(part, &mut out),
        "button" => {
            out.text = part.and_then(|b| b.get("text")).and_then(text_of);
            out.reply_id = part.and_then(|b| b.get("payload")).and_then(text_of);
        }
        "image" | "video" | "audio" | "document" | "sticker" => {
            let Some(media) = part.and_then(Value::as_object) else {
                return Err("malformed_message");
            };
            out.text = media.get("caption").and_then(text_of);
            let mut attachment = Map::new();
            attachment.insert("type".into(), kind.clone().into());
            for key in ["id", "mime_type", "sha256", "filename", "animated", "voice"] {
                if let Some(v) = media.get(key) {
                    let name = if key == "id" { "media_id" } else { key };
                    attachment.insert(name.into(), v.clone());
                }
            }
            out.data
                .insert("attachments".into(), Value::Array(vec![attachment.into()]));
        }
        "location" => {
            let Some(place) = part.and_then(Value::as_object) else {
                return Err("malformed_message");
            };
            out.text = Some(describe_location(place));
            out.data.insert("location".into(), place.clone().into());
        }
        "contacts" => {
            let cards = part.and_then(Value::as_array).cloned().unwrap_or_default();
            out.email = own_card_email(&cards, &out.wa_id);
            let lines: Vec<String> = cards.iter().filter_map(describe_card).collect();
            out.text = (!lines.is_empty()).then(|| lines.join("\n"));
            out.data.insert("shared_contacts".into(), cards.into());
        }
        "reaction" => {
            // A reaction taken back carries no emoji: part of the chat, but nothing to
            // open a lead on.
            out.text = part.and_then(|r| r.get("emoji")).and_then(text_of);
            out.follow_up = out.text.is_none();
            if out.follow_up {
                out.data.insert("reaction_removed".into(), true.into());
            }
            if let Some(to) = part.and_then(|r| r.get("message_id")) {
                out.data.insert("reaction_to".into(), to.clone());
            }
        }
        "order" => {
            out.text = part.and_then(|o| o.get("text")).and_then(text_of);
            if let Some(order) = part {
                out.data.insert("order".into(), order.clone());
            }
        }
        // A customer's number change and the welcome request of a chat opened from a
        // link belong to the chat's history, but say nothing to open a lead on. A
        // number change names the new id (`new_wa_id`; `wa_id` in older versions).
        "system" | "request_welcome" => {
            out.follow_up = true;
            if let Some(system) = part.and_then(Value::as_object) {
                out.text = system.get("body").and_then(text_of);
                out.new_wa_id = ["new_wa_id", "wa_id"]
                    .iter()
                    .find_map(|k| system.get(*k).and_then(text_of))
                    .map(|w| wa_digits(&w))
                    .filter(|w| *w != out.wa_id);
                out.data.insert("system".into(), system.clone().into());
            }
        }
        _ => {
            // Content Meta could not deliver (`unsupported`) or a type added later: the
            // person did write, so it is filed, with what Meta said about it.
            if let Some(errors) = message.get("errors") {
                out.data.insert("errors".into(), errors.clone());
            }
        }
    }
    if let Some(context) = message.get("context") {
        out.data.insert("context".into(), context.clone());
    }
    Ok(out)
}

fn read_interactive(part: Option<&Value>, out: &mut InboundMessage) {
    let Some(part) = part else { return };
    let Some(kind) = part.get("type").and_then(Value::as_str) else {
        return;
    };
    let Some(reply) = part.get(kind) else { return };
    out.data.insert("interactive_type".into(), kind.into());
    match kind {
        "nfm_reply" => {
            out.text = reply.get("body").and_then(text_of);
            if let Some(response) = reply.get("response_json") {
                out.data.insert("flow_response".into(), response.clone());
            }
        }
        _ => {
            out.reply_id = reply.get("id").and_then(text_of);
            let title = reply.get("title").and_then(text_of);
            let description = reply.get("description").and_then(text_of);
            out.text = match (title, description) {
                (Some(t), Some(d)) => Some(format!("{t}\n{d}")),
                (t, d) => t.or(d),
            };
        }
    }
}

/// `Name, address (lat, lon)`, leaving out what was not sent.
fn describe_location(place: &Map<String, Value>) -> String {
    let mut parts: Vec<String> = ["name", "address"]
        .iter()
        .filter_map(|k| place.get(*k).and_then(text_of))
        .collect();
    let coordinate = |k: &str| place.get(k).map(|v| v.to_string());
    if let (Some(lat), Some(lon)) = (coordinate("latitude"), coordinate("longitude")) {
        parts.push(format!("({lat}, {lon})"));
    }
    if let Some(url) = place.get("url").and_then(text_of) {
        parts.push(url);
    }
    if parts.is_empty() {
        "location".into()
    } else {
        parts.join(", ")
    }
}

/// One line per shared card: the formatted name, then its numbers and addresses. A card
/// is someone the sender knows, never the sender's own data (see [`own_card_email`]).
fn describe_card(card: &Value) -> Option<String> {
    let name = card.pointer("/name/formatted_name").and_then(text_of);
    let mut items: Vec<String> = array(card, "phones")
        .iter()
        .filter_map(|p| p.get("phone").and_then(text_of))
        .collect();
    items.extend(
        array(card, "emails")
            .iter()
            .filter_map(|e| e.get("email").and_then(text_of)),
    );
    match (name, items.is_empty()) {
        (None, true) => None,
        (Some(name), true) => Some(name),
        (None, false) => Some(items.join(", ")),
        (Some(name), false) => Some(format!("{name}: {}", items.join(", "))),
    }
}

/// A WhatsApp number as the digits Meta sends: one sender whether or not a relay
/// added a leading `+`.
fn wa_digits(raw: &str) -> String {
    let trimmed = raw.trim();
    trimmed.strip_prefix('+').unwrap_or(trimmed).to_owned()
}

/// The email of a card whose WhatsApp number is the sender's own: the only card whose
/// data is the sender's.
fn own_card_email(cards: &[Value], wa_id: &str) -> Option<String> {
    cards
        .iter()
        .find(|card| {
            array(card, "phones").iter().any(|p| {
                p.get("wa_id")
                    .and_then(text_of)
                    .is_some_and(|w| wa_digits(&w) == wa_id)
            })
        })
        .and_then(|card| array(card, "emails").first())
        .and_then(|e| e.get("email"))
        .and_then(text_of)
}

fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A non-empty string, or a number written as one (ids and timestamps are strings in
/// Meta's documents; a number is read the same).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]
        }))
        .unwrap()
    }

    fn one(message: Value) -> InboundMessage {
        let walked = walk(&body(json!({
            "metadata": {"phone_number_id": "555"},
            "contacts": [{"profile": {"name": "Anna"}, "wa_id": "48600111222"}],
            "messages": [message]
        })))
        .unwrap();
        assert_eq!(walked.messages.len(), 1, "{:?}", walked.skipped);
        walked.messages.into_iter().next().unwrap()
    }

    #[test]
    fn a_text_message_names_its_sender_number_and_business_line() {
        let m = one(
            json!({"from": "48600111222", "id": "wamid.A", "timestamp": "1700000000",
                            "type": "text", "text": {"body": "Dzień dobry"}}),
        );
        assert_eq!(m.wa_id, "48600111222");
        assert_eq!(m.name.as_deref(), Some("Anna"));
        assert_eq!(m.phone_number_id, "555");
        assert_eq!(m.text.as_deref(), Some("Dzień dobry"));
        assert_eq!(m.timestamp, Some(1_700_000_000));
    }

    #[test]
    fn a_sender_number_with_a_leading_plus_is_the_same_sender() {
        let walked = walk(&body(json!({
            "metadata": {"phone_number_id": "555"},
            "contacts": [{"profile": {"name": "Anna"}, "wa_id": "+48600111222"},
                         {"profile": {"name": "Other"}, "wa_id": "48600999888"}],
            "messages": [{"from": "+48600111222", "id": "w", "type": "contacts",
                "contacts": [{"phones": [{"phone": "+48 600 111 222", "wa_id": "48600111222"}],
                              "emails": [{"email": "anna@example.pl"}]}]}]
        })))
        .unwrap();
        let m = &walked.messages[0];
        assert_eq!(m.wa_id, "48600111222");
        assert_eq!(m.name.as_deref(), Some("Anna"));
        assert_eq!(m.email.as_deref(), Some("anna@example.pl"));
    }

    #[test]
    fn replies_carry_the_id_of_what_was_tapped() {
        let button = one(
            json!({"from": "48600111222", "id": "w1", "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Tak"}}}),
        );
        assert_eq!(button.reply_id.as_deref(), Some("yes"));
        assert_eq!(button.text.as_deref(), Some("Tak"));
        let list = one(
            json!({"from": "48600111222", "id": "w2", "type": "interactive",
            "interactive": {"type": "list_reply", "list_reply": {"id": "row-2", "title": "Biurka", "description": "180x80"}}}),
        );
        assert_eq!(list.reply_id.as_deref(), Some("row-2"));
        assert_eq!(list.text.as_deref(), Some("Biurka\n180x80"));
        let template = one(json!({"from": "48600111222", "id": "w3", "type": "button",
            "button": {"text": "Call me", "payload": "CALLBACK"}}));
        assert_eq!(template.reply_id.as_deref(), Some("CALLBACK"));
    }

    #[test]
    fn media_keeps_its_caption_as_text_and_its_id_as_an_attachment_reference() {
        let m = one(json!({"from": "48600111222", "id": "w", "type": "document",
            "document": {"caption": "Rzut biura", "filename": "plan.pdf", "mime_type": "application/pdf", "id": "998877"}}));
        assert_eq!(m.text.as_deref(), Some("Rzut biura"));
        assert_eq!(
            m.data["attachments"],
            json!([{"type": "document", "media_id": "998877", "mime_type": "application/pdf", "filename": "plan.pdf"}])
        );
    }

    #[test]
    fn a_shared_card_gives_an_email_only_when_it_is_the_senders_own() {
        let card = |wa: &str| {
            json!({"name": {"formatted_name": "Jan Nowak"},
            "phones": [{"phone": "+48 600 999 888", "wa_id": wa}], "emails": [{"email": "jan@example.pl"}]})
        };
        let other = one(
            json!({"from": "48600111222", "id": "w", "type": "contacts", "contacts": [card("48600999888")]}),
        );
        assert_eq!(other.email, None);
        assert_eq!(
            other.text.as_deref(),
            Some("Jan Nowak: +48 600 999 888, jan@example.pl")
        );
        let own = one(
            json!({"from": "48600111222", "id": "w", "type": "contacts", "contacts": [card("48600111222")]}),
        );
        assert_eq!(own.email.as_deref(), Some("jan@example.pl"));
    }

    #[test]
    fn statuses_and_broken_items_are_never_messages() {
        let walked = walk(&body(json!({
            "metadata": {"phone_number_id": "555"},
            "statuses": [{"id": "w", "status": "read", "recipient_id": "48600111222"}],
            "messages": [{"type": "text", "text": {"body": "no id"}}]
        })))
        .unwrap();
        assert!(walked.messages.is_empty());
        assert_eq!(walked.statuses, ["read"]);
        assert_eq!(walked.skipped, ["malformed_message"]);
    }

    #[test]
    fn number_changes_welcome_requests_and_withdrawn_reactions_only_follow_up() {
        let changed = one(json!({"from": "48600111222", "id": "s", "type": "system",
            "system": {"body": "Anna changed from +48 600 111 222 to +48 600 333 444",
                       "new_wa_id": "48600333444", "type": "user_changed_number"}}));
        assert!(changed.follow_up);
        assert_eq!(changed.new_wa_id.as_deref(), Some("48600333444"));
        assert_eq!(
            changed.text.as_deref(),
            Some("Anna changed from +48 600 111 222 to +48 600 333 444")
        );
        let older = one(json!({"from": "48600111222", "id": "s2", "type": "system",
            "system": {"body": "changed", "wa_id": "+48600333444", "type": "customer_changed_number"}}));
        assert_eq!(older.new_wa_id.as_deref(), Some("48600333444"));
        let welcome = one(json!({"from": "48600111222", "id": "w", "type": "request_welcome"}));
        assert!(welcome.follow_up && welcome.text.is_none());
        let withdrawn = one(json!({"from": "48600111222", "id": "r", "type": "reaction",
            "reaction": {"message_id": "wamid.OURS", "emoji": ""}}));
        assert!(withdrawn.follow_up);
        assert_eq!(withdrawn.data["reaction_to"], "wamid.OURS");
        let reaction = one(
            json!({"from": "48600111222", "id": "r2", "type": "reaction",
            "reaction": {"message_id": "wamid.OURS", "emoji": "👍"}}),
        );
        assert!(!reaction.follow_up);
        assert_eq!(reaction.text.as_deref(), Some("👍"));
    }

    #[test]
    fn a_body_that_is_no_webhook_is_refused() {
        assert!(matches!(walk(b"{"), Err(PayloadError::NotJson(_))));
        assert_eq!(walk(b"[]").unwrap_err(), PayloadError::NotAWebhook);
        assert_eq!(
            walk(b"{\"object\":\"page\"}").unwrap_err(),
            PayloadError::NotAWebhook
        );
    }
}
