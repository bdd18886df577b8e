//! Idempotency keys for intake.

use async_trait::async_trait;
use ingest::{ClaimOutcome, IdempotencyKeys, KeyClaim, KeyStoreError};
use sqlx::Row;

use crate::Store;

#[async_trait]
impl IdempotencyKeys for Store {
    async fn claim(&self, claim: KeyClaim<'_>) -> Result<ClaimOutcome, KeyStoreError> {
        // The no-op update makes RETURNING yield the existing row on a conflict;
        // xmax = 0 tells a fresh insert from an existing row.
        let row = sqlx::query(
            "INSERT INTO intake_keys (scope, key, body_hash, inquiry_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (scope, key) DO UPDATE SET scope = excluded.scope
             RETURNING body_hash, (xmax = 0) AS fresh",
        )
        .bind(claim.scope)
        .bind(claim.key)
        .bind(claim.body_hash.as_slice())
        .bind(claim.inquiry_id.as_uuid())
        .fetch_one(self.pool())
        .await
        .map_err(|e| KeyStoreError(e.to_string()))?;
        let fresh: bool = row
            .try_get("fresh")
            .map_err(|e| KeyStoreError(e.to_string()))?;
        let stored: Vec<u8> = row
            .try_get("body_hash")
            .map_err(|e| KeyStoreError(e.to_string()))?;
        Ok(if fresh {
            ClaimOutcome::Fresh
        } else if stored.as_slice() == claim.body_hash.as_slice() {
            ClaimOutcome::Replay
        } else {
            ClaimOutcome::Conflict
        })
    }
}
