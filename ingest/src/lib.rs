//! Connectors: everything that turns what arrives into an [`Inquiry`].
//!
//! # Layout
//! - [`inquiry`]: the one shape every connector produces, and its deterministic id.
//! - [`event`]: where an event belongs: its conversation ([`ConversationKey`]), the
//!   activity it creates or updates in place, its order ([`EventRef`]).
//! - [`fold`]: the one accent-folding routine (names for matching, field names for
//!   mapping).
//! - [`sink`]: the small traits a connector hands its work to ([`IntakeSink`], in two
//!   steps: prepare, then submit) and asks about idempotency keys ([`IdempotencyKeys`]);
//!   the binary and `store` implement them.
//! - [`forms`]: the web-form connector, `POST /v1/intake/forms/{form}`.
//! - [`problem`]: the JSON error body every HTTP endpoint answers with.
//! - [`rate_limit`]: per-source, per-form rate limits on posts (429 with `Retry-After`),
//!   and [`rate_limit::ClientAddr`], the client address the HTTP server resolved.

pub mod email;
pub mod event;
pub mod fold;
pub mod forms;
pub mod inquiry;
pub mod problem;
pub mod rate_limit;
pub mod sink;

pub use event::{ActivityKind, ConversationKey, EventRef, InvalidConversationKey};
pub use inquiry::{
    Attachment, Channel, ContactHints, ContentDedup, ContentHash, Inquiry, InquiryId,
    MessengerHandle, RawPayload,
};
pub use sink::{
    Accepted, ClaimOutcome, FieldProblem, IdempotencyKeys, IntakeSink, KeyClaim, KeyStoreError,
    PreparedInquiry, Refusal,
};
