//! Connectors: everything that turns what arrives into an [`Inquiry`].
//!
//! # Layout
//! - [`inquiry`]: the one shape every connector produces, and its deterministic id.
//! - [`sink`]: the small traits a connector hands its work to ([`IntakeSink`], in two
//!   steps: prepare, then submit) and asks about idempotency keys ([`IdempotencyKeys`]);
//!   the binary and `store` implement them.
//! - [`forms`]: the web-form connector, `POST /v1/intake/forms/{form}`.
//! - [`problem`]: the JSON error body every HTTP endpoint answers with.
//! - [`rate_limit`]: per-source, per-form rate limits on posts (429 with `Retry-After`),
//!   and [`rate_limit::ClientAddr`], the client address the HTTP server resolved.

pub mod forms;
pub mod inquiry;
pub mod problem;
pub mod rate_limit;
pub mod sink;

pub use inquiry::{
    Attachment, Channel, ContactHints, ContentDedup, ContentHash, Inquiry, InquiryId,
    MessengerHandle, RawPayload,
};
pub use sink::{
    Accepted, ClaimOutcome, FieldProblem, IdempotencyKeys, IntakeSink, KeyClaim, KeyStoreError,
    PreparedInquiry, Refusal,
};
