//! PostgreSQL storage: inquiries, leads, pipelines, stages and their history.
//!
//! # Layout
//! - [`access`]: roles and the [`Scope`] of leads a caller may see.
//! - [`activities`]: a lead's history and planned work (calls, meetings, tasks), and the
//!   activity view of open leads grouped by when their next activity is due.
//! - [`clients`]: contacts and companies with their identity keys.
//! - [`config`]: the `[database]` section.
//! - [`conversion`]: finishing a lead (converted with contact, company and deal, or
//!   junk) without creating a client twice, and reading deals.
//! - [`connectors`]: per-source leases and cursors of pull connectors
//!   ([`ingest::connector::Leases`]), on sessions of their own.
//! - [`digest`]: stale leads, the once-a-day digest log with its mail, and the abandon
//!   rule.
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
//! - [`people`]: users, teams and hashed API tokens ([`Store::authenticate`]).
//! - [`outbox`]: outgoing mail, queued with the lead it answers ([`AckRules`]), and the
//!   claims of the sender worker.
//! - [`reports`]: the funnel, leads per responsible and time in stage, one statement
//!   each.
//! - [`stages`]: pipelines and stages (admin changes, sync from configuration), moving
//!   and reopening leads with their history.
//! - [`replies`]: replies to a lead through its chat or mail thread, recorded with their
//!   outbound activity, and the claims of the chat reply worker.
//! - [`store`]: the handle to the database ([`Store`]), the schema ([`MIGRATOR`]).
//!
//! SQL lives only in this crate.

pub mod access;
pub mod activities;
pub mod clients;
pub mod config;
pub mod connectors;
pub mod conversion;
pub mod digest;
pub mod error;
pub mod inquiries;
pub mod intake;
pub mod keys;
pub mod leads;
pub mod outbox;
pub mod people;
pub mod replies;
pub mod reports;
pub mod stages;
pub mod store;

pub use access::{Actor, Role, Scope};
pub use activities::{
    ActivityChange, ActivityError, ActivityFilter, ActivityItem, ActivityPage, ActivityView,
    AssignedFilter, DueCursor, NewActivity, ViewQuery,
};
pub use clients::{
    ClientPage, ClientQuery, CompanyView, ContactView, ImportReport, NewCompany, NewContact,
};
pub use config::DatabaseConfig;
pub use connectors::ConnectorLeases;
pub use conversion::{
    ClientLink, ConvertItem, DealPage, DealView, Finish, FinishOutcome, LinkResult, NewDeal,
};
pub use digest::{
    AbandonCandidate, AbandonRule, DigestMail, DigestMoment, DigestRecipient, DigestSchedule,
    DigestSection, StaleLead,
};
pub use error::StoreError;
pub use keys::{KeyStore, KeyStoreOptions};
pub use leads::{
    Activity, BadCursor, BulkOutcome, ClientRef, EditError, LeadCursor, LeadDetail, LeadEvent,
    LeadPage, LeadPatch, LeadQuery, LeadSort, LeadView, NewEmail, NewPhone, NextActivity,
    Responsible, SortField, SortValue, StageChange, StageInfo, StageRef, UserRef,
};
pub use outbox::{AckRules, Acknowledgement, OutboxDepth, OutgoingMail, Template};
pub use people::{
    InvalidPerson, IssuedToken, NewUser, Team, TeamMember, TimeZoneName, TokenHolder, TokenInfo,
    User, UserChanges, UserEmail,
};
pub use replies::{
    ChatPlatform, ChatTarget, MailThread, NewReply, OutgoingReply, RecordedReply, ReplyRoutes,
    ReplyTarget,
};
pub use reports::{FunnelBy, FunnelReport, ReportPeriod, ResponsibleReport, StageTimesReport};
pub use stages::{
    PipelineKind, PipelineSpec, PipelineView, Semantic, StageMove, StagePatch, StageSpec,
    StageView, WorkError,
};
pub use store::{MIGRATOR, Store, ensure_database};
