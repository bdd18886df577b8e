//! Connector leases and cursors against a real, freshly migrated database.

use std::time::Duration;

use ingest::connector::{Lease, Leases, StateError};
use serde_json::json;
use sqlx::PgPool;
use store::ConnectorLeases;

fn leases(pool: &PgPool) -> ConnectorLeases {
    ConnectorLeases::from_options((*pool.connect_options()).clone())
}

async fn take(leases: &ConnectorLeases, key: &str) -> Option<Box<dyn Lease>> {
    leases.try_acquire(key).await.expect("the database answers")
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn one_holder_at_a_time_and_a_released_lease_is_free_at_once(pool: PgPool) {
    let (one, two) = (leases(&pool), leases(&pool));
    let held = take(&one, "chat:bot-a")
        .await
        .expect("a free lease is taken");
    assert!(
        take(&two, "chat:bot-a").await.is_none(),
        "a held lease is refused"
    );
    assert!(
        take(&two, "chat:bot-b").await.is_some(),
        "another source has its own lease"
    );
    held.release().await;
    assert!(
        take(&two, "chat:bot-a").await.is_some(),
        "a released lease is free"
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_cursor_is_kept_per_source_and_survives_its_lease(pool: PgPool) {
    let leases = leases(&pool);
    let lease = take(&leases, "email:sales").await.expect("free");
    let cursor = lease.checkpoints();
    assert_eq!(
        cursor.load().await.unwrap(),
        None,
        "no cursor before the first commit"
    );
    cursor
        .save(&json!({"uidvalidity": 7, "uid": 41}))
        .await
        .unwrap();
    cursor
        .save(&json!({"uidvalidity": 7, "uid": 42}))
        .await
        .unwrap();
    lease.release().await;

    let other = take(&leases, "email:support").await.expect("free");
    assert_eq!(other.checkpoints().load().await.unwrap(), None);
    let again = take(&leases, "email:sales").await.expect("free again");
    assert_eq!(
        again.checkpoints().load().await.unwrap(),
        Some(json!({"uidvalidity": 7, "uid": 42}))
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_lease_whose_session_ends_is_lost_cannot_move_the_cursor_and_is_free_for_others(
    pool: PgPool,
) {
    let (one, two) = (leases(&pool), leases(&pool));
    let lease = take(&one, "call:pbx").await.expect("free");
    let cursor = lease.checkpoints();
    cursor.save(&json!(10)).await.unwrap();

    // The holder's session ends as when its process dies or the server drops it.
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'leadpipe-lease' AND datname = current_database()) t",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(ended, 1);

    let lost = tokio::time::timeout(Duration::from_secs(15), lease.lost())
        .await
        .expect("the holder learns of the loss within a few seconds");
    assert!(matches!(lost, StateError::LeaseLost(_)), "{lost:?}");
    assert!(
        cursor.save(&json!(11)).await.is_err(),
        "a lost lease cannot move the cursor"
    );
    let next = take(&two, "call:pbx")
        .await
        .expect("the lock went with the session");
    assert_eq!(next.checkpoints().load().await.unwrap(), Some(json!(10)));
}
