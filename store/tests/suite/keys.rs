//! The idempotency-key store against a real, freshly migrated database.

use std::time::Duration;

use ingest::{Channel, ClaimOutcome, ContentHash, IdempotencyKeys, InquiryId, KeyClaim};
use sqlx::PgPool;
use store::KeyStore;

const HOUR: Duration = Duration::from_secs(3600);
const ONE: ContentHash = ContentHash::from_bytes([1; 32]);
const TWO: ContentHash = ContentHash::from_bytes([2; 32]);

fn claim<'a>(scope: &'a str, key: &'a str, hash: &'a ContentHash) -> KeyClaim<'a> {
    KeyClaim {
        scope,
        key,
        content_hash: hash,
        inquiry_id: InquiryId::from_keyed_content(Channel::Form, scope, key, hash),
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_idempotency_key_is_fresh_once_then_a_replay_or_a_conflict(pool: PgPool) {
    let keys = KeyStore::from_pool(pool, HOUR);
    let fresh = keys.claim(claim("it-contatti", "k-1", &ONE)).await;
    assert_eq!(fresh.unwrap(), ClaimOutcome::Fresh);
    let replay = keys.claim(claim("it-contatti", "k-1", &ONE)).await;
    assert_eq!(replay.unwrap(), ClaimOutcome::Replay);
    let conflict = keys.claim(claim("it-contatti", "k-1", &TWO)).await;
    assert_eq!(conflict.unwrap(), ClaimOutcome::Conflict);
    let other_scope = keys.claim(claim("pl-kontakt", "k-1", &TWO)).await;
    assert_eq!(other_scope.unwrap(), ClaimOutcome::Fresh);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_key_lives_for_its_ttl_and_once_expired_is_fresh_for_any_body(pool: PgPool) {
    let keys = KeyStore::from_pool(pool.clone(), HOUR);
    keys.claim(claim("f", "k", &ONE)).await.unwrap();
    let lifetime: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM expires_at - created_at)::float8 FROM intake_keys",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(lifetime, 3600.0);

    sqlx::query("UPDATE intake_keys SET expires_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    let reused = keys.claim(claim("f", "k", &TWO)).await;
    assert_eq!(reused.unwrap(), ClaimOutcome::Fresh);
    // Now bound to the new body.
    let replay = keys.claim(claim("f", "k", &TWO)).await;
    assert_eq!(replay.unwrap(), ClaimOutcome::Replay);
    let conflict = keys.claim(claim("f", "k", &ONE)).await;
    assert_eq!(conflict.unwrap(), ClaimOutcome::Conflict);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn purging_deletes_every_expired_key_and_keeps_the_live_ones(pool: PgPool) {
    let keys = KeyStore::from_pool(pool.clone(), HOUR);
    sqlx::query(
        "INSERT INTO intake_keys (scope, key, body_hash, inquiry_id, expires_at)
         SELECT 'f', 'old-' || n, '\\x00', gen_random_uuid(), now() - interval '1 minute'
         FROM generate_series(1, 2500) AS n",
    )
    .execute(&pool)
    .await
    .unwrap();
    for key in ["live-1", "live-2", "live-3"] {
        keys.claim(claim("f", key, &ONE)).await.unwrap();
    }
    assert_eq!(keys.purge_expired(1000).await.unwrap(), 2500);
    assert_eq!(count(&pool, "SELECT count(*) FROM intake_keys").await, 3);
    assert_eq!(keys.purge_expired(1000).await.unwrap(), 0);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_key_store_whose_database_refuses_reports_an_error(pool: PgPool) {
    let keys = KeyStore::from_pool(pool.clone(), HOUR);
    pool.close().await;
    assert!(keys.claim(claim("f", "k", &ONE)).await.is_err());
}
