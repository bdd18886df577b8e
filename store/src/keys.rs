//! Idempotency keys for intake, on a connection pool of their own.

use std::time::Duration;

use async_trait::async_trait;
use ingest::{ClaimOutcome, IdempotencyKeys, KeyClaim, KeyStoreError};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::error::StoreError;

/// How to size the key store's pool and how long a key lives.
#[derive(Debug, Clone, Copy)]
pub struct KeyStoreOptions {
    /// Most connections the key store opens (a few: each claim is one short statement).
    pub max_connections: u32,
    /// How long a claim waits for a free connection before it fails.
    pub acquire_timeout: Duration,
    /// How long a key stays bound to its content.
    pub ttl: Duration,
}

/// Which content each `Idempotency-Key` was first used with, until it expires.
///
/// It has its own small pool: sharing the consumers' pool would let a busy consumer make
/// every look-up time out, and intake would then accept without the check.
#[derive(Clone, Debug)]
pub struct KeyStore {
    pool: PgPool,
    ttl: Duration,
}

impl KeyStore {
    /// A key store whose connections are opened on first use.
    pub fn connect_lazy(url: &str, options: KeyStoreOptions) -> Result<Self, StoreError> {
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Config(format!("database.url: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect.application_name("leadpipe-keys"));
        Ok(Self::from_pool(pool, options.ttl))
    }

    /// Wraps an existing pool (tests).
    pub fn from_pool(pool: PgPool, ttl: Duration) -> Self {
        Self { pool, ttl }
    }

    /// Deletes every expired key, `batch` rows per statement so that no statement holds
    /// many row locks or runs long; returns how many were deleted.
    pub async fn purge_expired(&self, batch: u32) -> Result<u64, StoreError> {
        let batch = batch.max(1);
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                // Expiry is checked again on the row being deleted: a key rebound by a
                // claim in the meantime lives on.
                "DELETE FROM intake_keys
                 WHERE (scope, key) IN
                       (SELECT scope, key FROM intake_keys WHERE expires_at <= now() LIMIT $1)
                   AND expires_at <= now()",
            )
            .bind(i64::from(batch))
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += done;
            if done < u64::from(batch) {
                return Ok(deleted);
            }
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// One claim attempt: `None` when the key's row vanished between the two statements
    /// (it expired and was purged meanwhile).
    async fn try_claim(&self, claim: &KeyClaim<'_>) -> Result<Option<ClaimOutcome>, sqlx::Error> {
        // A new key, or one whose time ran out, is (re)bound to this content; a live key
        // is left alone and yields no row.
        let bound = sqlx::query(
            "INSERT INTO intake_keys (scope, key, body_hash, inquiry_id, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
             ON CONFLICT (scope, key) DO UPDATE
               SET body_hash = excluded.body_hash, inquiry_id = excluded.inquiry_id,
                   created_at = now(), expires_at = excluded.expires_at
               WHERE intake_keys.expires_at <= now()",
        )
        .bind(claim.scope)
        .bind(claim.key)
        .bind(claim.content_hash.as_bytes().as_slice())
        .bind(claim.inquiry_id.as_uuid())
        .bind(self.ttl.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if bound == 1 {
            return Ok(Some(ClaimOutcome::Fresh));
        }
        let stored: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT body_hash FROM intake_keys WHERE scope = $1 AND key = $2 AND expires_at > now()",
        )
        .bind(claim.scope)
        .bind(claim.key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(stored.map(|hash| {
            if hash.as_slice() == claim.content_hash.as_bytes().as_slice() {
                ClaimOutcome::Replay
            } else {
                ClaimOutcome::Conflict
            }
        }))
    }
}

#[async_trait]
impl IdempotencyKeys for KeyStore {
    async fn claim(&self, claim: KeyClaim<'_>) -> Result<ClaimOutcome, KeyStoreError> {
        // The second statement misses the row only if it expired in between; then the
        // key is free and the next attempt binds it.
        for _ in 0..3 {
            match self.try_claim(&claim).await {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => continue,
                Err(error) => return Err(KeyStoreError(error.to_string())),
            }
        }
        Err(KeyStoreError(
            "the key kept expiring while it was being claimed".into(),
        ))
    }
}
