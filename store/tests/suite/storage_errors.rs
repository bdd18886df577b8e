//! What the consumer's sink answers when the database, not the data, is the problem: the
//! batch is held (a transient error), never dead-lettered, and the same batch is stored
//! once the database is fixed.

use crate::support;

use router::{BatchSink, SinkError, StoreOutcome};
use sqlx::PgPool;
use store::Store;
use support::{count, created, database_name, envelope, execute, inquiry, own_store};

fn expect_transient(result: Result<Vec<StoreOutcome>, SinkError>, sqlstate: &str) -> String {
    match result {
        Err(SinkError::Transient(reason)) => {
            assert!(reason.contains(sqlstate), "{reason}");
            reason
        }
        other => panic!("expected a transient error with SQLSTATE {sqlstate}, got {other:?}"),
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_read_only_database_holds_the_batch_until_it_accepts_writes(pool: PgPool) {
    let db = database_name(&pool).await;
    // What a failover onto a standby looks like to new connections.
    execute(
        &pool,
        &format!("ALTER DATABASE \"{db}\" SET default_transaction_read_only = on"),
    )
    .await;
    let store = own_store(&pool);
    let e = envelope(inquiry(
        Some("Rita Neri"),
        Some("rita@example.it"),
        None,
        None,
    ));

    let reason = expect_transient(store.store_batch(&[&e]).await, "25006");
    assert!(reason.contains("read-only"), "says what is wrong: {reason}");
    assert!(
        expect_transient(store.store_batch(&[&e]).await, "25006").contains("read-only"),
        "still held on the next attempt"
    );

    execute(
        &pool,
        &format!("ALTER DATABASE \"{db}\" RESET default_transaction_read_only"),
    )
    .await;
    // The same store and the same batch: the held lead is filed once.
    created(&store.store_batch(&[&e]).await.unwrap()[0]);
    assert_eq!(count(&pool, "SELECT count(*) FROM leads").await, 1);
    store.close().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_revoked_grant_holds_the_batch_until_it_is_granted_again(pool: PgPool) {
    // Roles belong to the whole server: drop this one even when the test fails.
    let role = format!("lp_writer_{}", uuid::Uuid::new_v4().simple());
    let outcome = tokio::spawn(grant_revoked_then_restored(pool.clone(), role.clone())).await;
    for sql in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        execute(&pool, &sql).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

async fn grant_revoked_then_restored(pool: PgPool, role: String) {
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"),
        format!("REVOKE INSERT ON leads FROM {role}"),
    ] {
        execute(&pool, &sql).await;
    }
    let options = (*pool.connect_options()).clone().username(&role);
    let store = Store::from_pool(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(options),
    );
    let e = envelope(inquiry(
        None,
        Some("ugo@example.it"),
        Some("02 8736 1234"),
        None,
    ));

    let reason = expect_transient(store.store_batch(&[&e]).await, "42501");
    assert!(reason.contains("privilege"), "says what to do: {reason}");
    assert_eq!(count(&pool, "SELECT count(*) FROM inquiries").await, 0);

    execute(&pool, &format!("GRANT INSERT ON leads TO {role}")).await;
    // The same store and the same batch.
    created(&store.store_batch(&[&e]).await.unwrap()[0]);
    store.close().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_column_missing_mid_migration_holds_the_batch_until_it_is_back(pool: PgPool) {
    let store = own_store(&pool);
    let first = envelope(inquiry(None, Some("first@example.it"), None, None));
    created(&store.store_batch(&[&first]).await.unwrap()[0]);

    execute(
        &pool,
        "ALTER TABLE leads RENAME COLUMN problems TO problems_old",
    )
    .await;
    let e = envelope(inquiry(None, Some("second@example.it"), None, None));
    let reason = expect_transient(store.store_batch(&[&e]).await, "42703");
    assert!(reason.contains("migrat"), "points at the schema: {reason}");

    execute(
        &pool,
        "ALTER TABLE leads RENAME COLUMN problems_old TO problems",
    )
    .await;
    created(&store.store_batch(&[&e]).await.unwrap()[0]);
    store.close().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn data_the_database_refuses_is_still_a_permanent_error(pool: PgPool) {
    let store = own_store(&pool);
    // A company name longer than a btree index entry can hold is the data's fault (54000).
    execute(&pool, "CREATE INDEX leads_company_test ON leads (company)").await;
    // Pseudo-random letters: nothing for the index to compress.
    let mut seed: u32 = 7;
    let huge: String = (0..20_000)
        .map(|_| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            char::from(b'a' + ((seed >> 16) % 26) as u8)
        })
        .collect();
    let e = envelope(inquiry(None, Some("big@example.it"), None, Some(&huge)));
    match store.store_batch(&[&e]).await {
        Err(SinkError::Permanent { reason, .. }) => assert!(reason.contains("54000"), "{reason}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
    store.close().await;
}
