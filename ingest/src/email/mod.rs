//! Reading mail: one message's raw bytes, as a mailbox holds them, become an inquiry of
//! channel `email`, or an inquiry kept with the reason it is not a lead.
//!
//! This is the reading half of the email channel; it does no I/O, so the mailbox
//! connector (which fetches, checkpoints and submits) and the tests share it.
//!
//! - **Who**: the From name and address. A machine notification (sent from a `noreply@`
//!   kind of address, or one whose body labels a person's name or address beside a
//!   Reply-To other than its sender) names its customer in the labelled lines or table of
//!   its body and in Reply-To; the machine sender is never the lead.
//! - **What**: the decoded Subject and the text part (an HTML-only mail turned into
//!   readable text), in NFC whatever the charset and transfer encoding were; attachments
//!   are described (name, type, size) and their content left out of the inquiry.
//! - **Phone**: the first number written in the sender's own text (body and signature,
//!   not the quoted mail below a reply), as typed: the normalizer reads it with the
//!   mailbox's region.
//! - **Where it belongs**: conversation keys from the message's own Message-ID, then
//!   In-Reply-To, then every id of References (never the Subject), so a reply joins the
//!   lead of its thread; one activity per message.
//! - **Never a lead**: see [`NotALeadReason`].

mod attachments;
mod classify;
pub mod imap;
mod labelled;
pub mod mailbox;
mod phones;
mod text;
pub mod tls;
mod words;

use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{Addr, Message, MessageParser, MimeHeaders, PartType};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use crate::event::{ActivityKind, ConversationKey, EventRef};
use crate::inquiry::{Channel, ContactHints, Inquiry, InquiryId, RawPayload};

/// The settings of one mailbox that matter for reading its mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxReading {
    /// The mailbox's configured name; with the Message-ID it makes the inquiry id.
    pub mailbox: String,
    /// The source its leads are filed under (`mail-it`).
    pub source: String,
    /// ISO 3166-1 alpha-2 region for phone numbers written without a country code.
    pub default_region: Option<String>,
    /// The company's own domains: mail from them (or their subdomains) is never a lead.
    pub internal_domains: Vec<String>,
}

/// Why a message is kept but never becomes a lead, nor joins one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotALeadReason {
    /// An automatic reply: RFC 3834 `Auto-Submitted` other than `no`, `X-Autoreply` and
    /// the like, `Precedence: junk`, `Precedence: bulk|list` on a reply or with an
    /// auto-responder's sign, an Exchange out-of-office reply.
    AutoReply,
    /// A bounce or delivery report: `multipart/report`, a delivery-status part, mail from
    /// MAILER-DAEMON or postmaster, an empty `Return-Path`.
    Bounce,
    /// Mailing-list and bulk mail (`List-Id`, `List-Unsubscribe`, `Precedence: bulk|list`
    /// other than a machine's notification naming an outside customer).
    MailingList,
    /// From one of the mailbox's internal domains: a colleague, not a customer.
    InternalSender,
    /// Not readable as a mail; the error says why.
    Unparseable(String),
}

impl NotALeadReason {
    /// The stable name used in storage and metrics (`auto_reply`, `bounce`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            NotALeadReason::AutoReply => "auto_reply",
            NotALeadReason::Bounce => "bounce",
            NotALeadReason::MailingList => "mailing_list",
            NotALeadReason::InternalSender => "internal_sender",
            NotALeadReason::Unparseable(_) => "unparseable",
        }
    }
}

impl fmt::Display for NotALeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotALeadReason::Unparseable(error) => write!(f, "unparseable: {error}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// What one message is.
///
/// Both kinds carry an inquiry, so every message is kept and counted once whatever it
/// is. A non-lead's inquiry has its reason in [`Inquiry::spam`] (the store keeps such
/// inquiries and never makes or touches a lead with them), no contact data (nothing may
/// be taken from a bounce or an out-of-office reply), and an event without conversation
/// or activity keys, so it can never be threaded onto a lead.
#[derive(Debug, Clone, PartialEq)]
pub enum MailVerdict {
    /// A customer's mail: a new lead, or an activity on the lead of its thread.
    Lead(Inquiry),
    /// Kept with its reason; never a lead.
    NotALead {
        /// Why it is not a lead.
        reason: NotALeadReason,
        /// The message as an inquiry, its reason in `spam`.
        inquiry: Inquiry,
    },
}

impl MailVerdict {
    /// The inquiry, whichever kind the message is.
    pub fn inquiry(&self) -> &Inquiry {
        match self {
            MailVerdict::Lead(inquiry) | MailVerdict::NotALead { inquiry, .. } => inquiry,
        }
    }

    /// The inquiry, taken out.
    pub fn into_inquiry(self) -> Inquiry {
        match self {
            MailVerdict::Lead(inquiry) | MailVerdict::NotALead { inquiry, .. } => inquiry,
        }
    }

    /// Why it is not a lead; `None` for a lead.
    pub fn reason(&self) -> Option<&NotALeadReason> {
        match self {
            MailVerdict::Lead(_) => None,
            MailVerdict::NotALead { reason, .. } => Some(reason),
        }
    }
}

/// The media type of the raw payload kept for a mail.
pub const RAW_CONTENT_TYPE: &str = "message/rfc822";

/// Reads one message as `reading`'s mailbox received it at `received_at`. Never fails:
/// what cannot be read is a [`NotALeadReason::Unparseable`] non-lead, kept raw.
pub fn read_message(
    raw: &[u8],
    reading: &MailboxReading,
    received_at: DateTime<Utc>,
) -> MailVerdict {
    let message = match MessageParser::default().parse(raw) {
        Some(message) if !message.headers().is_empty() => message,
        _ => {
            return unparseable(
                raw,
                reading,
                received_at,
                "no header section could be read (is it a mail at all?)",
            );
        }
    };
    // Headers written as raw 8-bit text in the body's charset (no encoded words) come out
    // of the parser as U+FFFD; read them again in that charset.
    let headers = legacy_headers(&message, raw);
    let headers = headers.as_ref().unwrap_or(&message);
    let from =
        first_address(headers, Field::From).or_else(|| first_address(headers, Field::Sender));
    let reply_to = first_address(headers, Field::ReplyTo);
    let subject = headers
        .header_raw("Subject")
        .and_then(words::decode)
        .or_else(|| headers.subject().map(str::to_owned))
        .map(|s| s.nfc().collect::<String>().trim().to_owned());
    if from.as_ref().and_then(|a| a.address.as_deref()).is_none()
        && reply_to
            .as_ref()
            .and_then(|a| a.address.as_deref())
            .is_none()
    {
        return unparseable(raw, reading, received_at, "it has no From address");
    }
    Reader {
        raw,
        reading,
        received_at,
        message: &message,
        from,
        reply_to,
        subject,
    }
    .read()
}

/// The header section of `message` read again in the charset of its first text part,
/// when it holds 8-bit text that is not UTF-8 and the parser could not decode it.
fn legacy_headers(message: &Message<'_>, raw: &[u8]) -> Option<Message<'static>> {
    let end = (message.root_part().offset_body as usize).min(raw.len());
    let block = &raw[..end];
    if block.is_ascii() || std::str::from_utf8(block).is_ok() {
        return None;
    }
    let charset = message
        .text_body
        .iter()
        .chain(&message.html_body)
        .filter_map(|&id| message.parts.get(id as usize))
        .find_map(|part| part.content_type()?.attribute("charset"))?;
    let decode = charset_decoder(charset.as_bytes())?;
    let mut utf8 = decode(block).into_bytes();
    utf8.extend_from_slice(b"\r\n");
    MessageParser::default()
        .parse(&utf8[..])
        .map(Message::into_owned)
}

/// A name and an address as a header gives them, decoded and in NFC.
#[derive(Debug, Clone, Default)]
struct Person {
    name: Option<String>,
    address: Option<String>,
}

#[derive(Clone, Copy)]
enum Field {
    From,
    Sender,
    ReplyTo,
}

fn first_address(message: &Message<'_>, field: Field) -> Option<Person> {
    let address = match field {
        Field::From => message.from(),
        Field::Sender => message.sender(),
        Field::ReplyTo => message.reply_to(),
    }?;
    let addr: &Addr<'_> = address.first()?;
    let address = addr
        .address
        .as_deref()
        .map(str::trim)
        .filter(|a| a.contains('@'))
        .map(|a| a.nfc().collect::<String>());
    Some(Person {
        name: addr
            .name
            .as_deref()
            .and_then(|n| display_name(n, address.as_deref())),
        address,
    })
}

/// A display name as the person wrote it, or `None` when it is no name: empty, an
/// address (`"sales@example.com" <sales@example.com>`), or quotes around nothing.
fn display_name(raw: &str, address: Option<&str>) -> Option<String> {
    let name: String = raw.nfc().collect();
    let name = name
        .trim()
        .trim_matches(|c| matches!(c, '"' | '\'' | '‘' | '’' | '“' | '”'))
        .trim();
    let is_address = name.contains('@') || address.is_some_and(|a| a.eq_ignore_ascii_case(name));
    (!name.is_empty() && !is_address).then(|| name.to_owned())
}

struct Reader<'a> {
    raw: &'a [u8],
    reading: &'a MailboxReading,
    received_at: DateTime<Utc>,
    message: &'a Message<'a>,
    from: Option<Person>,
    reply_to: Option<Person>,
    subject: Option<String>,
}

impl Reader<'_> {
    fn read(self) -> MailVerdict {
        let message = self.message;
        let (message_id, generated_id) = match message.message_id().map(str::trim) {
            Some(id) if ConversationKey::email_thread(id).is_ok() => (id.to_owned(), false),
            _ => (hashed_message_id(self.raw), true),
        };
        let (body, cut) = text::tidy(&body_text(message));
        let own = text::own_text(&body);
        let sender = self.from.as_ref().and_then(|p| p.address.clone());
        let labelled = labelled::labelled_fields(&own);
        let reply_to = self.reply_to.clone().filter(|p| {
            p.address
                .as_deref()
                .is_some_and(|a| !classify::is_machine_address(a))
        });

        // A notification names its customer in its labelled lines and Reply-To.
        let labelled_email = labelled.contact.email.as_deref().map(str::trim);
        let reply_to_address = reply_to.as_ref().and_then(|p| p.address.as_deref());
        // A person writing from one address with Reply-To another is still the sender;
        // a body that labels a name or an address beside that Reply-To is a form's.
        let labels_someone = labelled_email.is_some()
            || labelled.contact.full_name.is_some()
            || labelled.contact.first_name.is_some()
            || labelled.contact.last_name.is_some();
        let replies_elsewhere = reply_to_address.is_some_and(|r| {
            !sender.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(r))
                && labelled_email.is_none_or(|l| l.eq_ignore_ascii_case(r))
        });
        let notification = sender.as_deref().is_some_and(classify::is_machine_address)
            || (labels_someone && replies_elsewhere);
        let customer_address = labelled_email.or(reply_to_address);
        let customer_outside = notification
            && customer_address
                .is_some_and(|a| !classify::is_internal(a, &self.reading.internal_domains));

        let described = attachments::describe(message, self.raw);
        let mut data = Map::new();
        data.insert("message_id".into(), json!(format!("<{message_id}>")));
        data.insert("attachments".into(), Value::Array(described.data.clone()));
        if described.omitted > 0 {
            data.insert("attachments_omitted".into(), json!(described.omitted));
        }
        if generated_id {
            data.insert("message_id_generated".into(), json!(true));
        }
        let mut fields = Map::new();
        if let Some(from) = &self.from {
            fields.insert("from".into(), json!(from.address));
        }
        if let Some(reply_to) = &self.reply_to {
            fields.insert("reply_to".into(), json!(reply_to.address));
        }
        if cut {
            fields.insert("text_truncated".into(), json!(true));
        }

        let mut event = EventRef::new(ActivityKind::Email);
        event.subject = self.subject.clone().filter(|s| !s.is_empty());
        event.occurred_at = message
            .date()
            .filter(|d| d.is_valid())
            .and_then(|d| DateTime::from_timestamp(d.to_timestamp(), 0));
        event.data = data;

        let raw_kept = attachments::without_attachment_content(message, self.raw);
        let mut inquiry = Inquiry {
            id: InquiryId::from_external(Channel::Email, &self.reading.mailbox, &message_id),
            channel: Channel::Email,
            source: self.reading.source.clone(),
            external_id: Some(format!("<{message_id}>")),
            received_at: self.received_at,
            default_region: self.reading.default_region.clone(),
            contact: ContactHints::default(),
            message: Some(body).filter(|b| !b.is_empty()),
            utm: Default::default(),
            fields,
            attachments: described.attachments,
            spam: None,
            dedup: None,
            raw: RawPayload {
                content_type: Some(RAW_CONTENT_TYPE.into()),
                body: Bytes::from(raw_kept),
            },
            event: None,
        };

        let reason = classify::not_a_lead(
            message,
            sender.as_deref(),
            &self.reading.internal_domains,
            customer_outside,
        );
        if let Some(reason) = reason {
            if reason == NotALeadReason::Bounce {
                let undeliverable = undeliverable_recipients(message);
                if !undeliverable.is_empty() {
                    inquiry
                        .fields
                        .insert("undeliverable".into(), json!(undeliverable));
                }
            }
            inquiry.spam = Some(reason.as_str().to_owned());
            inquiry.event = Some(event);
            return MailVerdict::NotALead { reason, inquiry };
        }

        let (contact, extra) = if notification {
            notification_contact(labelled, reply_to)
        } else {
            let phones = phones::phone_candidates(&own);
            (
                ContactHints {
                    full_name: self.from.as_ref().and_then(|p| p.name.clone()),
                    email: sender.clone(),
                    phone: phones.first().cloned(),
                    ..Default::default()
                },
                phone_list(phones),
            )
        };
        inquiry.contact = contact;
        for (name, value) in extra {
            // What the mail itself says (its From, its Reply-To) is not overwritten by a
            // label of the same name.
            inquiry.fields.entry(name).or_insert(value);
        }

        event.conversation = conversation_keys(message, &message_id);
        event.activity_key = Some(format!("email:{message_id}"));
        inquiry.event = Some(event);
        MailVerdict::Lead(inquiry)
    }
}

/// The customer a notification names: its labelled lines first, then Reply-To; every
/// other labelled value kept as a field, as a form's would be.
fn notification_contact(
    labelled: crate::forms::fields::MappedFields,
    reply_to: Option<Person>,
) -> (ContactHints, Map<String, Value>) {
    let mut contact = labelled.contact;
    let reply_to = reply_to.unwrap_or_default();
    if contact.email.is_none() {
        contact.email = reply_to.address;
    }
    if contact.full_name.is_none() && contact.first_name.is_none() && contact.last_name.is_none() {
        contact.full_name = reply_to.name;
    }
    let mut fields = labelled.fields;
    if contact.phone.is_none() {
        // A number the customer wrote in the message, never one of the notification's own.
        let phones = labelled
            .message
            .as_deref()
            .map(phones::phone_candidates)
            .unwrap_or_default();
        contact.phone = phones.first().cloned();
        fields.extend(phone_list(phones));
    }
    (contact, fields)
}

/// Every number found, when there is more than the one taken as the phone.
fn phone_list(phones: Vec<String>) -> Map<String, Value> {
    let mut fields = Map::new();
    if phones.len() > 1 {
        fields.insert("phone_numbers".into(), json!(phones));
    }
    fields
}

/// The message's own id, then In-Reply-To, then each id of References, each once.
fn conversation_keys(message: &Message<'_>, own: &str) -> Vec<ConversationKey> {
    let ids = std::iter::once(own.to_owned())
        .chain(classify::message_ids(message.in_reply_to()))
        .chain(classify::message_ids(message.references()));
    let mut keys: Vec<ConversationKey> = Vec::new();
    for id in ids {
        if let Ok(key) = ConversationKey::email_thread(&id)
            && !keys.contains(&key)
        {
            keys.push(key);
        }
    }
    keys
}

/// The text of every body part, HTML turned into text, in order; the HTML alternative when
/// the plain one is empty.
fn body_text(message: &Message<'_>) -> String {
    let read = |ids: &[u32]| {
        let mut texts = Vec::new();
        for &id in ids {
            let Some(part) = message.parts.get(id as usize) else {
                continue;
            };
            match &part.body {
                PartType::Text(text) => {
                    let attribute = |name: &str| {
                        part.content_type()
                            .and_then(|ct| ct.attribute(name))
                            .is_some_and(|v| {
                                v.trim().eq_ignore_ascii_case(if name == "format" {
                                    "flowed"
                                } else {
                                    "yes"
                                })
                            })
                    };
                    if attribute("format") {
                        texts.push(text::unflow(text, attribute("delsp")));
                    } else {
                        texts.push(text.to_string());
                    }
                }
                PartType::Html(html) => texts.push(text::html_to_text(html)),
                _ => {}
            }
        }
        texts.join("\n\n")
    };
    let plain = read(&message.text_body);
    if plain.trim().is_empty() {
        read(&message.html_body)
    } else {
        plain
    }
}

/// A Message-ID for a message without one: the SHA-256 of its bytes, so reading the same
/// message again gives the same id.
fn hashed_message_id(raw: &[u8]) -> String {
    format!(
        "{}@sha256.leadpipe.invalid",
        hex::encode(Sha256::digest(raw))
    )
}

/// The recipients a delivery report says could not be reached (`Final-Recipient`).
fn undeliverable_recipients(message: &Message<'_>) -> Vec<String> {
    let mut found = Vec::new();
    for part in &message.parts {
        if !(part.is_content_type("message", "delivery-status")
            || part.is_content_type("message", "global-delivery-status"))
        {
            continue;
        }
        let text = String::from_utf8_lossy(part.contents());
        for line in text.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("final-recipient") {
                let address = value.rsplit(';').next().unwrap_or("").trim();
                if address.contains('@') && !found.iter().any(|f| f == address) {
                    found.push(address.to_owned());
                }
            }
        }
    }
    found
}

/// A message that could not be read: kept raw with the error, its id from its bytes.
/// A message kept as unreadable; its id is the hash of `raw` (the message, or what
/// stands for it when it was not fetched).
pub(crate) fn unparseable(
    raw: &[u8],
    reading: &MailboxReading,
    received_at: DateTime<Utc>,
    error: &str,
) -> MailVerdict {
    let message_id = hashed_message_id(raw);
    let reason = NotALeadReason::Unparseable(error.to_owned());
    let mut event = EventRef::new(ActivityKind::Email);
    event
        .data
        .insert("message_id".into(), json!(format!("<{message_id}>")));
    event
        .data
        .insert("message_id_generated".into(), json!(true));
    let mut fields = Map::new();
    fields.insert("error".into(), json!(error));
    let inquiry = Inquiry {
        id: InquiryId::from_external(Channel::Email, &reading.mailbox, &message_id),
        channel: Channel::Email,
        source: reading.source.clone(),
        external_id: Some(format!("<{message_id}>")),
        received_at,
        default_region: reading.default_region.clone(),
        contact: ContactHints::default(),
        message: None,
        utm: Default::default(),
        fields,
        attachments: Vec::new(),
        spam: Some(reason.as_str().to_owned()),
        dedup: None,
        raw: RawPayload {
            content_type: Some(RAW_CONTENT_TYPE.into()),
            body: Bytes::copy_from_slice(raw),
        },
        event: Some(event),
    };
    MailVerdict::NotALead { reason, inquiry }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(region: &str, internal: &[&str]) -> MailboxReading {
        MailboxReading {
            mailbox: "vendite-it".into(),
            source: "mail-it".into(),
            default_region: Some(region.into()),
            internal_domains: internal.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn read(raw: &str, internal: &[&str]) -> MailVerdict {
        read_bytes(raw.replace('\n', "\r\n").as_bytes(), internal)
    }

    fn read_bytes(raw: &[u8], internal: &[&str]) -> MailVerdict {
        read_message(raw, &reading("IT", internal), DateTime::UNIX_EPOCH)
    }

    fn reason(raw: &str) -> Option<String> {
        read(raw, &[]).reason().map(|r| r.as_str().to_owned())
    }

    const PLAIN: &str = "From: Anna Neri <anna.neri@example.it>\nTo: vendite@example.it\nSubject: Preventivo\nMessage-ID: <m1@example.it>\n";

    #[test]
    fn a_customers_mail_is_a_lead_threaded_by_its_ids_and_never_its_subject() {
        let raw = format!(
            "{PLAIN}In-Reply-To: <m0@example.it>\nReferences: <r1@example.it> <m0@example.it>\n <r2@example.it>\n\nBuongiorno, sono al 347 123 4567.\n"
        );
        let verdict = read(&raw, &[]);
        let MailVerdict::Lead(inquiry) = &verdict else {
            panic!("not a lead: {verdict:?}");
        };
        let event = inquiry.event.as_ref().unwrap();
        let keys: Vec<String> = event.conversation.iter().map(|k| k.as_key()).collect();
        assert_eq!(
            keys,
            [
                "email-thread:m1@example.it",
                "email-thread:m0@example.it",
                "email-thread:r1@example.it",
                "email-thread:r2@example.it"
            ]
        );
        assert_eq!(event.activity_key.as_deref(), Some("email:m1@example.it"));
        assert_eq!(event.subject.as_deref(), Some("Preventivo"));
        assert_eq!(
            inquiry.id,
            InquiryId::from_external(Channel::Email, "vendite-it", "m1@example.it")
        );
        assert_eq!(inquiry.contact.full_name.as_deref(), Some("Anna Neri"));
        assert_eq!(inquiry.contact.phone.as_deref(), Some("347 123 4567"));
        assert_eq!(inquiry.raw.content_type.as_deref(), Some(RAW_CONTENT_TYPE));
        assert_eq!(
            inquiry.raw.body.as_ref(),
            raw.replace('\n', "\r\n").as_bytes()
        );
    }

    #[test]
    fn the_same_message_in_another_mailbox_is_another_inquiry() {
        let raw = format!("{PLAIN}\nCiao\n").replace('\n', "\r\n");
        let here = read_bytes(raw.as_bytes(), &[]).into_inquiry().id;
        let mut other = reading("IT", &[]);
        other.mailbox = "info-it".into();
        let there = read_message(raw.as_bytes(), &other, Utc::now())
            .into_inquiry()
            .id;
        assert_ne!(here, there);
    }

    #[test]
    fn each_never_a_lead_rule_has_its_reason() {
        let cases = [
            ("Auto-Submitted: auto-replied\n", Some("auto_reply")),
            (
                "Auto-Submitted: auto-generated; owner-email=\"x@example.it\"\n",
                Some("auto_reply"),
            ),
            ("Auto-Submitted: no\n", None),
            ("Auto-Submitted: No (sent by a person)\n", None),
            ("Auto-Submitted: (comment) no\n", None),
            (
                "Auto-Submitted: auto-replied (vacation)\n",
                Some("auto_reply"),
            ),
            ("X-Autoreply: yes\n", Some("auto_reply")),
            ("X-Autoreply: no\n", None),
            ("X-Autoreply: no (a person wrote this)\n", None),
            ("X-Autoreply: (responder) yes\n", Some("auto_reply")),
            ("X-Autorespond: Vacation\n", Some("auto_reply")),
            ("Precedence: auto_reply\n", Some("auto_reply")),
            // Bulk mail without list headers is still not a lead; with a reply's sign
            // it is an auto-responder's, and vacation(1) marks its replies "junk".
            ("Precedence: bulk\n", Some("mailing_list")),
            ("Precedence: list\n", Some("mailing_list")),
            ("Precedence: junk\n", Some("auto_reply")),
            (
                "Precedence: bulk\nIn-Reply-To: <m0@example.it>\n",
                Some("auto_reply"),
            ),
            (
                "X-Precedence: Bulk\nReferences: <m0@example.it>\n",
                Some("auto_reply"),
            ),
            ("Precedence: first-class\n", None),
            (
                "Precedence: junk\nX-Auto-Response-Suppress: OOF, AutoReply\n",
                Some("auto_reply"),
            ),
            (
                "X-MS-Exchange-Inbox-Rules-Loop: anna@example.it\n",
                Some("auto_reply"),
            ),
            ("Return-Path: <>\n", Some("bounce")),
            ("Return-Path: <anna.neri@example.it>\n", None),
            ("X-Failed-Recipients: x@example.it\n", Some("bounce")),
            (
                "Content-Type: multipart/report; report-type=disposition-notification; boundary=b\n",
                Some("bounce"),
            ),
            ("List-Id: <clienti.example.it>\n", Some("mailing_list")),
            (
                "List-Unsubscribe: <mailto:u@example.it>\n",
                Some("mailing_list"),
            ),
        ];
        for (header, want) in cases {
            let raw = format!("{PLAIN}{header}\n--b\nContent-Type: text/plain\n\nCiao\n--b--\n");
            let raw = if header.contains("multipart") {
                raw
            } else {
                format!("{PLAIN}{header}\nCiao, 347 123 4567\n")
            };
            assert_eq!(reason(&raw).as_deref(), want, "{header}");
        }
        let daemon = "From: Mail Delivery Subsystem <MAILER-DAEMON@example.com>\nSubject: Undelivered\n\nsorry\n";
        assert_eq!(reason(daemon).as_deref(), Some("bounce"));
        let mut ooo = PLAIN.replace("Preventivo", "Automatic reply: Preventivo");
        ooo.push_str("X-Auto-Response-Suppress: All\n\nAway\n");
        assert_eq!(reason(&ooo).as_deref(), Some("auto_reply"));
    }

    #[test]
    fn a_non_lead_keeps_its_reason_and_gives_nothing_to_take_or_thread() {
        let raw = format!(
            "{PLAIN}In-Reply-To: <m0@example.it>\nAuto-Submitted: auto-replied\n\nFuori ufficio, 347 123 4567\n"
        );
        let MailVerdict::NotALead { reason, inquiry } = read(&raw, &[]) else {
            panic!("an auto-reply is a lead");
        };
        assert_eq!(reason, NotALeadReason::AutoReply);
        assert_eq!(inquiry.spam.as_deref(), Some("auto_reply"));
        assert_eq!(inquiry.contact, ContactHints::default());
        let event = inquiry.event.unwrap();
        assert!(event.conversation.is_empty() && event.activity_key.is_none());
        assert_eq!(event.data["message_id"], "<m1@example.it>");
        assert_eq!(
            inquiry.message.as_deref(),
            Some("Fuori ufficio, 347 123 4567")
        );
    }

    #[test]
    fn internal_mail_is_not_a_lead_unless_a_machine_sends_it_for_an_outside_customer() {
        let colleague = "From: Marta <marta@example-company.it>\nMessage-ID: <c@x>\n\nciao\n";
        assert_eq!(
            read(colleague, &["example-company.it"]).reason(),
            Some(&NotALeadReason::InternalSender)
        );
        assert!(read(colleague, &[]).reason().is_none());
        let mailer = "From: Sito <noreply@example-company.it>\nReply-To: Ugo <ugo@example.it>\nMessage-ID: <f@x>\n\nNome: Ugo Riva\n";
        let verdict = read(mailer, &["example-company.it"]);
        assert!(verdict.reason().is_none());
        assert_eq!(
            verdict.inquiry().contact.email.as_deref(),
            Some("ugo@example.it")
        );
        // Shops mark their notifications bulk and ask for no automatic answers.
        let bulk = format!("Precedence: bulk\nX-Auto-Response-Suppress: All\n{mailer}");
        let verdict = read(&bulk, &["example-company.it"]);
        assert!(verdict.reason().is_none(), "{verdict:?}");
        let newsletter = "From: Sito <noreply@example-company.it>\nPrecedence: bulk\nX-Auto-Response-Suppress: All\nMessage-ID: <f@x>\n\nOfferte!\n";
        assert!(read(newsletter, &["example-company.it"]).reason().is_some());
        let inside = "From: Sito <noreply@example-company.it>\nReply-To: <marta@example-company.it>\nMessage-ID: <f@x>\n\nNome: Marta\n";
        assert_eq!(
            read(inside, &["example-company.it"]).reason(),
            Some(&NotALeadReason::InternalSender)
        );
    }

    #[test]
    fn a_notification_is_read_from_its_labelled_lines_never_from_its_sender() {
        // A person's address as sender, but the body repeats the Reply-To address.
        let shop = "From: Negozio <negozio@shop.example.it>\nReply-To: Ada Bassi <ada.bassi@example.it>\nMessage-ID: <n@x>\n\nTelefono negozio: 02 1111 2222\n\nNome: Ada\nCognome: Bassi\nEmail: ada.bassi@example.it\nMessaggio: richiamatemi al 333 444 5555\n";
        let contact = read(shop, &[]).into_inquiry().contact;
        assert_eq!(contact.email.as_deref(), Some("ada.bassi@example.it"));
        assert_eq!(contact.first_name.as_deref(), Some("Ada"));
        assert_eq!(contact.last_name.as_deref(), Some("Bassi"));
        assert_eq!(contact.phone.as_deref(), Some("333 444 5555"));
        // A no-reply sender with nothing labelled: the name comes from Reply-To, and the
        // sender is never the contact.
        let bare = "From: Shop <no-reply@shop.example.it>\nMessage-ID: <n2@x>\n\nNuovo ordine.\n";
        let contact = read(bare, &[]).into_inquiry().contact;
        assert_eq!(contact, ContactHints::default());
    }

    #[test]
    fn unreadable_mail_is_kept_raw_with_the_error_under_an_id_from_its_bytes() {
        for raw in [
            &b""[..],
            b"not a mail\r\n",
            b"Subject: no sender\r\n\r\nhi\r\n",
        ] {
            let verdict = read_bytes(raw, &[]);
            let Some(NotALeadReason::Unparseable(error)) = verdict.reason() else {
                panic!("{raw:?} read as {verdict:?}");
            };
            assert!(!error.is_empty());
            let inquiry = verdict.inquiry();
            assert_eq!(inquiry.raw.body.as_ref(), raw);
            assert_eq!(inquiry.fields["error"], error.as_str());
            assert_eq!(read_bytes(raw, &[]).inquiry().id, inquiry.id);
        }
        assert_ne!(
            read_bytes(b"one", &[]).inquiry().id,
            read_bytes(b"two", &[]).inquiry().id
        );
    }

    #[test]
    fn a_subject_whose_letter_is_split_between_encoded_words_comes_out_whole() {
        let raw: &[u8] = b"From: =?UTF-8?Q?=C5=81ukasz?= <l@example.pl>\r\nMessage-ID: <split@x>\r\nSubject: =?UTF-8?B?xQ==?=\r\n =?UTF-8?B?gWFkbmUg8J8=?= =?UTF-8?B?qpE=?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nDzien dobry, 601 234 567\r\n";
        let inquiry = read_bytes(raw, &[]).into_inquiry();
        let event = inquiry.event.as_ref().unwrap();
        assert_eq!(event.subject.as_deref(), Some("Ładne 🪑"));
    }

    #[test]
    fn a_name_in_rfc_2231_segments_is_decoded_as_one_in_its_first_segments_charset() {
        let raw: &[u8] = b"From: a@example.pl\r\nMessage-ID: <seg@x>\r\nContent-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n--BB\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nW zalaczniku, 601 234 567\r\n--BB\r\nContent-Type: application/pdf;\r\n name*0*=windows-1250''Wycena%20dla%20%8Cl%B9ska;\r\n name*1*=%20%9Cwi%EAtego.pdf\r\nContent-Disposition: attachment;\r\n filename*0*=windows-1250''Wycena%20dla%20%8Cl%B9ska;\r\n filename*1*=%20%9Cwi%EAtego.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--BB\r\nContent-Type: text/plain; name*0*=utf-8''Gi%C3%A1%20b%C3; name*1*=%A1o.txt\r\n\r\nx\r\n--BB--\r\n";
        let inquiry = read_bytes(raw, &[]).into_inquiry();
        let data = &inquiry.event.as_ref().unwrap().data["attachments"];
        let names: Vec<&Value> = data
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["name"])
            .collect();
        assert_eq!(
            names,
            [
                &json!("Wycena dla Śląska świętego.pdf"),
                &json!("Giá báo.txt")
            ]
        );
    }

    #[test]
    fn attachments_are_described_in_their_own_bytes_and_left_out_of_the_raw_payload() {
        let raw: &[u8] = b"From: a@example.it\r\nMessage-ID: <att@x>\r\nContent-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n--BB\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nVedi allegati, 347 123 4567\r\n--BB\r\nContent-Type: text/plain; charset=iso-8859-2\r\nContent-Disposition: attachment; filename*0*=iso-8859-2''%A3%F3d%BC; filename*1=\"_lista.txt\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\nZa\xbf\xf3\xb3\xe6 g\xea\xb6l\xb1\r\nline2\r\n\r\n--BB\r\nContent-Type: text/csv; name=\"=?UTF-8?B?Y2VubsOpLmNzdg==?=\"\r\nContent-Disposition: attachment\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na;b=3Dc\r\nd=\r\ne\r\n--BB\r\nContent-Type: image/png; name=logo.png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--BB\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d.it\r\nSubject: inner\r\n\r\ninner body\r\n--BB--\r\n";
        let inquiry = read_bytes(raw, &[]).into_inquiry();
        let data = &inquiry.event.as_ref().unwrap().data["attachments"];
        let described: Vec<(Value, Value, Value)> = data
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["name"].clone(),
                    a["content_type"].clone(),
                    a["size"].clone(),
                )
            })
            .collect();
        assert_eq!(
            described,
            [
                (json!("Łódź_lista.txt"), json!("text/plain"), json!(21)),
                (json!("cenné.csv"), json!("text/csv"), json!(9)),
                (json!("logo.png"), json!("image/png"), json!(8)),
                (json!(null), json!("message/rfc822"), json!(42)),
            ]
        );
        assert_eq!(inquiry.attachments.len(), 4);
        assert_eq!(inquiry.attachments[2].size, 8);
        assert_eq!(
            inquiry.attachments[2].sha256.as_deref(),
            Some(hex::encode(Sha256::digest(b"\x89PNG\r\n\x1a\n")).as_str())
        );
        let kept = inquiry.raw.body.as_ref();
        for content in [&b"line2"[..], b"a;b=3Dc", b"iVBORw0KGgo", b"inner body"] {
            assert!(!kept.windows(content.len()).any(|w| w == content));
        }
        let again = read_bytes(kept, &[]).into_inquiry();
        assert_eq!(again.id, inquiry.id);
        assert_eq!(again.message, inquiry.message);
        assert_eq!(again.contact, inquiry.contact);
        assert_eq!(
            again.message.as_deref(),
            Some("Vedi allegati, 347 123 4567")
        );
    }

    #[test]
    fn raw_8bit_headers_are_read_in_the_charset_of_the_text() {
        let raw: &[u8] = b"From: \xa3ukasz \xaf\xf3\xb3kiewski <l@example.pl>\r\nSubject: Zapytanie \xb3\xf3d\xbc\r\nMessage-ID: <r8@x>\r\nContent-Type: text/plain; charset=iso-8859-2\r\nContent-Transfer-Encoding: 8bit\r\n\r\nDzie\xf1 dobry\r\n";
        let inquiry = read_bytes(raw, &[]).into_inquiry();
        assert_eq!(
            inquiry.contact.full_name.as_deref(),
            Some("Łukasz Żółkiewski")
        );
        let event = inquiry.event.unwrap();
        assert_eq!(event.subject.as_deref(), Some("Zapytanie łódź"));
        assert_eq!(inquiry.message.as_deref(), Some("Dzień dobry"));
    }

    #[test]
    fn flowed_text_is_joined_where_its_sender_wrapped_it() {
        let raw = format!(
            "{PLAIN}Content-Type: text/plain; charset=utf-8; format=flowed\n\nBuongiorno, chiamatemi al 347 \n123 4567 dopo le 15.\n\n> Il vostro listino \n> del 2025\n"
        );
        let inquiry = read(&raw, &[]).into_inquiry();
        assert_eq!(inquiry.contact.phone.as_deref(), Some("347 123 4567"));
        assert_eq!(
            inquiry.message.as_deref(),
            Some(
                "Buongiorno, chiamatemi al 347 123 4567 dopo le 15.\n\n> Il vostro listino del 2025"
            )
        );
        let deleted = format!(
            "{PLAIN}Content-Type: text/plain; format=flowed; delsp=yes\n\nNumero: 3471 \n234567\n"
        );
        let inquiry = read(&deleted, &[]).into_inquiry();
        assert_eq!(inquiry.contact.phone.as_deref(), Some("3471234567"));
    }

    #[test]
    fn an_empty_plain_part_gives_way_to_the_html_one() {
        let raw = format!(
            "{PLAIN}Content-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/plain\n\n \n--b\nContent-Type: text/html\n\n<p>Chiamatemi al <b>347 123 4567</b></p>\n--b--\n"
        );
        let inquiry = read(&raw, &[]).into_inquiry();
        assert_eq!(
            inquiry.message.as_deref(),
            Some("Chiamatemi al 347 123 4567")
        );
        assert_eq!(inquiry.contact.phone.as_deref(), Some("347 123 4567"));
    }

    #[test]
    fn a_form_relayed_by_a_person_s_address_is_read_as_a_notification() {
        let relayed = "From: Negozio <ordini@shop.example.it>\nReply-To: <ugo.riva@example.it>\nMessage-ID: <o@x>\n\nNome: Ugo Riva\nTelefono: 333 444 5555\n\nOrdini - 02 1111 2222\n";
        let contact = read(relayed, &[]).into_inquiry().contact;
        assert_eq!(contact.email.as_deref(), Some("ugo.riva@example.it"));
        assert_eq!(contact.first_name.as_deref(), Some("Ugo Riva"));
        assert_eq!(contact.phone.as_deref(), Some("333 444 5555"));
        // A person who only sets Reply-To elsewhere is still the sender.
        let person = "From: Anna Neri <anna@work.example.it>\nReply-To: <anna.neri@example.it>\nMessage-ID: <p@x>\n\nSalve, sono Anna.\nTel: 347 123 4567\n";
        let contact = read(person, &[]).into_inquiry().contact;
        assert_eq!(contact.email.as_deref(), Some("anna@work.example.it"));
        assert_eq!(contact.full_name.as_deref(), Some("Anna Neri"));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_read_without_panicking(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let verdict = read_bytes(&raw, &["example.it"]);
            proptest::prop_assert_eq!(verdict.inquiry().channel, Channel::Email);
        }

        #[test]
        fn any_text_in_a_mail_reads_without_panicking(body in "\\PC{0,300}", html in proptest::bool::ANY) {
            let kind = if html { "text/html" } else { "text/plain" };
            let raw = format!("{PLAIN}Content-Type: {kind}; charset=utf-8\nReply-To: <x@example.it>\n\n{body}\n");
            let verdict = read(&raw, &[]);
            proptest::prop_assert!(verdict.inquiry().event.is_some());
        }
    }
}
