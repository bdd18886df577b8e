//! Connectors: everything that turns what arrives into an [`Inquiry`].
//!
//! # Layout
//! - [`connector`]: the contract every connector follows ([`connector::ConnectorKind`]):
//!   its configuration section and checks, and what it builds: HTTP routes or a pull
//!   task run under the daemon's supervisor, with its cursor ([`connector::Checkpoints`])
//!   and lease ([`connector::Leases`]) behind traits `store` implements.
//! - [`http`]: the steps every HTTP connector shares: body limit, signature hook,
//!   idempotency key, hand-on to the sink, JSON refusals, HTML and redirect answers; the
//!   body parsers ([`http::body`]) and HMAC signatures ([`http::signature`]).
//! - [`email`]: reading one mail message into an email inquiry, or a non-lead kept with
//!   its reason (auto-reply, bounce, list, internal sender, unparseable).
//! - [`inquiry`]: the one shape every connector produces, and its deterministic id.
//! - [`event`]: where an event belongs: its conversation ([`ConversationKey`]), the
//!   activity it creates or updates in place, its order ([`EventRef`]).
//! - [`fold`]: the one accent-folding routine (names for matching, field names for
//!   mapping).
//! - [`sink`]: the small traits a connector hands its work to ([`IntakeSink`], in two
//!   steps: prepare, then submit) and asks about idempotency keys ([`IdempotencyKeys`]);
//!   the binary and `store` implement them.
//! - [`fields`]: field names sorted into contact data, message, campaign tags and custom
//!   fields (forms and the CSV import read names the same way).
//! - [`forms`]: the web-form connector, `POST /v1/intake/forms/{form}`.
//! - [`events`]: generic signed JSON events (site chat, call centres, in-house systems),
//!   `POST /v1/intake/events/{source}`.
//! - [`whatsapp`]: the WhatsApp Business Cloud API webhook, `GET`/`POST /v1/intake/chat/whatsapp`.
//! - [`telegram`]: the Telegram connector (`[[telegram]]`): poll or webhook per bot.
//! - [`ami`]: the Asterisk Manager Interface client, a pull connector per PBX.
//! - [`twilio`]: Twilio-style voice webhooks, `POST /v1/intake/telephony/twilio/{name}`.
//! - [`problem`]: the JSON error body every HTTP endpoint answers with.
//! - [`contract`]: the intake endpoints as `/openapi.json` describes them.
//! - [`rate_limit`]: per-source, per-form rate limits on posts (429 with `Retry-After`),
//!   and [`rate_limit::ClientAddr`], the client address the HTTP server resolved.
//!
//! A new channel is a new folder here with a [`connector::ConnectorKind`], and one line
//! in the binary's list of connectors.

pub mod ami;
pub mod connector;
pub mod contract;
pub mod email;
pub mod event;
pub mod events;
pub mod fields;
pub mod fold;
pub mod forms;
pub mod http;
pub mod inquiry;
pub mod problem;
pub mod rate_limit;
pub mod sink;
pub mod telegram;
pub mod twilio;
pub mod whatsapp;

pub use event::{ActivityKind, ConversationKey, EventRef, InvalidConversationKey};
pub use inquiry::{
    Attachment, Channel, ContactHints, ContentDedup, ContentHash, Inquiry, InquiryId,
    MessengerHandle, RawPayload,
};
pub use sink::{
    Accepted, ClaimOutcome, FieldProblem, IdempotencyKeys, IntakeSink, KeyClaim, KeyStoreError,
    PreparedInquiry, Refusal,
};
