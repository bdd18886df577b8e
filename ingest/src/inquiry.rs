//! The one shape every connector produces: an [`Inquiry`].

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::EventRef;

/// Namespace for deterministic inquiry ids (UUID v5 over the source and the external id).
const INQUIRY_NAMESPACE: Uuid = Uuid::from_u128(0x6c65_6164_7069_7065_8000_0000_0000_0001);

/// Which kind of connector an inquiry came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A web form posting to the intake endpoint.
    Form,
    /// A message pulled from a mailbox.
    Email,
    /// A chat platform (Telegram, WhatsApp, site chat).
    Chat,
    /// A phone call (telephony webhooks, Asterisk).
    Call,
    /// A row of an imported file.
    Import,
    /// Typed in by a person through the API.
    Manual,
}

impl Channel {
    /// The stable lower-case name used in storage, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Form => "form",
            Channel::Email => "email",
            Channel::Chat => "chat",
            Channel::Call => "call",
            Channel::Import => "import",
            Channel::Manual => "manual",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of one inquiry: equal ids mean "the same inquiry", however often it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InquiryId(Uuid);

impl InquiryId {
    /// A deterministic id from where the inquiry came from and the id the sender gave it,
    /// so that a redelivery or replay maps onto the same inquiry.
    pub fn from_external(channel: Channel, source: &str, external_id: &str) -> Self {
        let name = format!("{channel}\u{1f}{source}\u{1f}{external_id}");
        Self(Uuid::new_v5(&INQUIRY_NAMESPACE, name.as_bytes()))
    }

    /// A deterministic id for a submission sent under a client's key (an
    /// `Idempotency-Key`): the same key with the same content is the same inquiry, and the
    /// same key with other content another one, so no body is ever filed as another's
    /// replay, even when nobody could check the key.
    pub fn from_keyed_content(
        channel: Channel,
        source: &str,
        key: &str,
        content: &ContentHash,
    ) -> Self {
        let name = format!(
            "{channel}\u{1f}{source}\u{1f}{key}\u{1f}{}",
            content.to_hex()
        );
        Self(Uuid::new_v5(&INQUIRY_NAMESPACE, name.as_bytes()))
    }

    /// A fresh, time-ordered id for an inquiry that carries no external id of its own.
    pub fn new_unique() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps a stored id.
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for InquiryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// SHA-256 of a submission's content in one canonical form, so that the same submission
/// sent again (another multipart boundary, other JSON whitespace) hashes the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// Wraps a digest computed elsewhere.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest in lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// What the sender told us about the person, exactly as received (before normalisation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactHints {
    /// A single full-name field ("full_name", "ho_ten", a display name).
    pub full_name: Option<String>,
    /// A first-name field ("first_name", "nome", "imie").
    pub first_name: Option<String>,
    /// A last-name field ("last_name", "cognome", "nazwisko").
    pub last_name: Option<String>,
    /// The email address as typed.
    pub email: Option<String>,
    /// The phone number as typed, extension included.
    pub phone: Option<String>,
    /// The company name as typed.
    pub company: Option<String>,
    /// The person's account on a messenger (chat channels fill it).
    #[serde(default)]
    pub messenger: Option<MessengerHandle>,
}

/// An account on a chat platform: which platform, and the platform's stable user id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessengerHandle {
    /// The platform (`telegram`, `whatsapp`, `site-chat`).
    pub platform: String,
    /// The platform's stable id for the person (not a changeable username).
    pub user_id: String,
    /// The changeable username or handle, for display.
    #[serde(default)]
    pub username: Option<String>,
}

/// A file that came with an inquiry; only its description is kept in the inquiry itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The form field (or MIME part) it came in.
    pub field: String,
    /// The file name the sender gave, if any.
    pub filename: Option<String>,
    /// The declared media type, if any.
    pub content_type: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the bytes (absent in inquiries published by older versions).
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Content-based de-duplication: the same key from the same source inside the window is
/// the same inquiry (a double click, a resubmitted page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentDedup {
    /// Hex SHA-256 over the form and the submission's [`ContentHash`].
    pub key: String,
    /// How long an identical submission counts as a repeat, in seconds.
    pub window_secs: u32,
}

/// The bytes that arrived, kept verbatim for audit and re-processing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawPayload {
    /// The declared media type (a `Content-Type` header, a MIME type).
    pub content_type: Option<String>,
    /// The exact bytes.
    #[serde(with = "base64_bytes")]
    pub body: Bytes,
}

/// One inquiry as a connector saw it: who, what, from where, and the raw bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inquiry {
    /// Deterministic identity (see [`InquiryId`]).
    pub id: InquiryId,
    /// The connector kind.
    pub channel: Channel,
    /// Which form, mailbox, bot or line it came through.
    pub source: String,
    /// The id the sender gave it (Idempotency-Key, Message-ID, update id, call id).
    pub external_id: Option<String>,
    /// When leadpipe received it.
    pub received_at: DateTime<Utc>,
    /// ISO 3166-1 alpha-2 region for phone numbers written without a country code.
    pub default_region: Option<String>,
    /// What the sender told us about the person.
    pub contact: ContactHints,
    /// The free text of the inquiry.
    pub message: Option<String>,
    /// Campaign tags (`utm_source`, `utm_medium`, ...), keyed by their full names.
    pub utm: BTreeMap<String, String>,
    /// Every other field, kept with its JSON type (repeated keys become arrays).
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Files that came with it (described, not stored inline).
    pub attachments: Vec<Attachment>,
    /// Why this is spam (a filled honeypot, ...); spam is kept but never becomes a lead.
    pub spam: Option<String>,
    /// Content-based de-duplication, for inquiries without an external id.
    pub dedup: Option<ContentDedup>,
    /// The bytes that arrived.
    pub raw: RawPayload,
    /// Where this event belongs (its conversation and the activity it creates or updates);
    /// `None` for inquiries that stand alone, such as form submissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventRef>,
}

impl Inquiry {
    /// An inquiry with its identity and nothing else yet: no contact, text, fields or
    /// bytes; the connector fills in what it has.
    pub fn new(
        id: InquiryId,
        channel: Channel,
        source: impl Into<String>,
        received_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            channel,
            source: source.into(),
            external_id: None,
            received_at,
            default_region: None,
            contact: ContactHints::default(),
            message: None,
            utm: BTreeMap::new(),
            fields: serde_json::Map::new(),
            attachments: Vec::new(),
            spam: None,
            dedup: None,
            raw: RawPayload {
                content_type: None,
                body: Bytes::new(),
            },
            event: None,
        }
    }
}

mod base64_bytes {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyed_id_depends_on_the_channel_source_key_and_content() {
        let one = ContentHash::from_bytes([1; 32]);
        let two = ContentHash::from_bytes([2; 32]);
        let id = |channel, source, key, content| {
            InquiryId::from_keyed_content(channel, source, key, content)
        };
        let base = id(Channel::Form, "f", "k", &one);
        assert_eq!(base, id(Channel::Form, "f", "k", &one));
        for other in [
            id(Channel::Form, "f", "k", &two),
            id(Channel::Form, "f", "k2", &one),
            id(Channel::Form, "g", "k", &one),
            id(Channel::Chat, "f", "k", &one),
        ] {
            assert_ne!(base, other);
        }
    }
}
