//! What a connector hands its inquiries to, and how it asks about idempotency keys.
//!
//! Both are traits so that ingest never reaches forward into the pipeline or the
//! database: the binary implements [`IntakeSink`] as "normalise and refuse what has no
//! contact" ([`IntakeSink::prepare`]), then "route, publish, wait for the broker's
//! confirm" ([`PreparedInquiry::submit`]), and `store` implements [`IdempotencyKeys`].
//! The two steps let a connector claim an idempotency key only for an inquiry that
//! passed every check that can refuse it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::inquiry::{ContentHash, Inquiry, InquiryId};

/// The inquiry is safely handed on (the broker confirmed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The id the inquiry is filed under.
    pub inquiry_id: InquiryId,
}

/// One field-level problem, shown to the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldProblem {
    /// The field (`email`, `phone`, ...).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Why an inquiry was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// The inquiry can never become a lead as sent (nothing to contact the person by).
    #[error("{message}")]
    Unusable {
        /// A stable machine-readable code, e.g. `no_contact`.
        code: &'static str,
        /// What is wrong and how to fix it.
        message: String,
        /// Field-level details.
        fields: Vec<FieldProblem>,
    },
    /// The pipeline cannot take it right now (broker down or not confirming); retry later.
    #[error("{reason}")]
    Unavailable {
        /// `unavailable` (the broker did not confirm) or `spool_full` (it has not for so
        /// long that the local spool reached its cap).
        code: &'static str,
        /// What is unavailable.
        reason: String,
        /// A hint for the client's `Retry-After`.
        retry_after_secs: u32,
    },
}

/// An inquiry that passed every check the sink makes; nothing is handed on until
/// [`submit`](PreparedInquiry::submit).
#[async_trait]
pub trait PreparedInquiry: Send {
    /// Hands the inquiry on durably, or says why not. `Ok` means it will never be lost.
    async fn submit(self: Box<Self>) -> Result<Accepted, Refusal>;
}

/// Where connectors hand every inquiry.
#[async_trait]
pub trait IntakeSink: Send + Sync + 'static {
    /// Checks the inquiry and readies it, refusing what can never become a lead
    /// ([`Refusal::Unusable`]); hands nothing on yet.
    async fn prepare(&self, inquiry: Inquiry) -> Result<Box<dyn PreparedInquiry>, Refusal>;

    /// Prepares and submits in one go, for callers with nothing to do in between.
    async fn submit(&self, inquiry: Inquiry) -> Result<Accepted, Refusal> {
        self.prepare(inquiry).await?.submit().await
    }
}

/// A request to bind an idempotency key to a submission's content.
#[derive(Debug, Clone, Copy)]
pub struct KeyClaim<'a> {
    /// The namespace of the key (a form's name): keys of different forms never collide.
    pub scope: &'a str,
    /// The client's `Idempotency-Key`.
    pub key: &'a str,
    /// The canonical hash of what was submitted (not of the raw bytes).
    pub content_hash: &'a ContentHash,
    /// The inquiry the key stands for.
    pub inquiry_id: InquiryId,
}

/// What the key store knew about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// First use of the key, or its earlier use expired: now bound to this content.
    Fresh,
    /// The key is bound to the same content: a retry of the same inquiry.
    Replay,
    /// The key is bound to other content: a client bug, refused.
    Conflict,
}

/// The key store could not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("idempotency key store unavailable: {0}")]
pub struct KeyStoreError(pub String);

/// Remembers which content each idempotency key was first used with, until it expires.
#[async_trait]
pub trait IdempotencyKeys: Send + Sync + 'static {
    /// Binds the key to the content if it is new (or expired), else tells how the content
    /// compares.
    async fn claim(&self, claim: KeyClaim<'_>) -> Result<ClaimOutcome, KeyStoreError>;
}
