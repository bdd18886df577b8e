//! PostgreSQL storage: inquiries, leads, pipelines, stages and their history.
//!
//! # Layout
//! - [`access`]: roles and the [`Scope`] of leads a caller may see.
//! - [`clients`]: contacts and companies with their identity keys.
//! - [`config`]: the `[database]` section.
//! - [`connectors`]: per-source leases and cursors of pull connectors
//!   ([`ingest::connector::Leases`]), on sessions of their own.
//! - [`error`]: SQLSTATE mapped to what callers can act on, in one place.
//! - [`intake`]: the consumer's sink ([`router::BatchSink`]): one transaction per batch
//!   (several, in order, when its locks would not fit), inquiry id unique so redeliveries
//!   change nothing; batches the database refuses are held and reported.
//! - [`inquiries`]: which inquiries are filed, for the leads import.
//! - [`keys`]: idempotency keys for intake ([`ingest::IdempotencyKeys`]) on a pool of
//!   their own, with expiry and a batched purge.
//! - [`leads`]: leads for the ops API, always within a [`Scope`]: filtered, searched and
//!   sorted lists with keyset cursors and totals, the kanban columns, editing one lead,
//!   bulk assignment and stage changes.
//! - [`outbox`]: outgoing mail, queued with the lead it answers ([`AckRules`]), and the
//!   claims of the sender worker.
//! - [`replies`]: replies to a lead through its chat or mail thread, recorded with their
//!   outbound activity, and the claims of the chat reply worker.
//! - [`store`]: the handle to the database ([`Store`]), the schema ([`MIGRATOR`]).
//!
//! SQL lives only in this crate.

pub mod access;
pub mod clients;
pub mod config;
pub mod connectors;
pub mod error;
pub mod inquiries;
pub mod intake;
pub mod keys;
pub mod leads;
pub mod outbox;
pub mod replies;
pub mod store;

pub use access::{Role, Scope};
pub use clients::{
    ClientPage, ClientQuery, CompanyView, ContactView, ImportReport, NewCompany, NewContact,
};
pub use config::DatabaseConfig;
pub use connectors::ConnectorLeases;
pub use error::StoreError;
pub use keys::{KeyStore, KeyStoreOptions};
pub use leads::{
    Activity, BadCursor, BulkOutcome, ClientRef, EditError, Editor, LeadCursor, LeadDetail,
    LeadEvent, LeadPage, LeadPatch, LeadQuery, LeadSort, LeadView, NewEmail, NewPhone,
    NextActivity, Responsible, SortField, SortValue, StageChange, StageInfo, StageRef, UserRef,
};
pub use outbox::{AckRules, Acknowledgement, OutboxDepth, OutgoingMail, Template};
pub use replies::{
    ChatPlatform, ChatTarget, MailThread, NewReply, OutgoingReply, RecordedReply, ReplyRoutes,
    ReplyTarget,
};
pub use store::{MIGRATOR, Store, ensure_database};
