//! What a pull connector keeps between runs and replicas: its cursor and its lease.
//!
//! Both are traits so that ingest runs no SQL; `store` implements them on PostgreSQL.
//! A lease is held by one session; the cursor is written through the lease, so a
//! replica that lost its lease can no longer move the cursor.

use std::sync::Arc;

use async_trait::async_trait;

/// The cursor store could not answer, or held something unreadable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    /// The database could not be reached or refused the statement.
    #[error("connector state unavailable: {0}")]
    Unavailable(String),
    /// The lease's session is gone: another replica may hold the source now.
    #[error("the lease on {0} was lost; another replica may read the source now")]
    LeaseLost(String),
    /// The stored cursor is not what the connector expects.
    #[error("{0}")]
    Corrupt(String),
}

/// Where one source's cursor is kept (an IMAP UIDVALIDITY and last UID, a chat update
/// offset): read on start, written only after the broker confirmed every inquiry up to
/// it.
#[async_trait]
pub trait Checkpoints: Send + Sync {
    /// The last committed cursor, `None` before the first commit.
    async fn load(&self) -> Result<Option<serde_json::Value>, StateError>;

    /// Replaces the cursor.
    async fn save(&self, cursor: &serde_json::Value) -> Result<(), StateError>;
}

/// Hands out per-source leases, so that one replica reads a source at a time.
#[async_trait]
pub trait Leases: Send + Sync + 'static {
    /// Takes the lease on `source_key` if nobody holds it; `None` when another replica
    /// does. Never waits for the holder.
    async fn try_acquire(&self, source_key: &str) -> Result<Option<Box<dyn Lease>>, StateError>;
}

/// A held lease on one source.
#[async_trait]
pub trait Lease: Send + Sync {
    /// The source's cursor, written through this lease: a commit after the lease was
    /// lost fails instead of moving the cursor under another replica.
    fn checkpoints(&self) -> Arc<dyn Checkpoints>;

    /// Resolves once the lease is lost (its session ended); the task must stop then.
    async fn lost(&self) -> StateError;

    /// Gives the lease up, so another replica can take it at once.
    async fn release(self: Box<Self>);
}
