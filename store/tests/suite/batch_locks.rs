//! Big batches and PostgreSQL's shared lock table: a batch is filed in as many transactions
//! as its locks need, in order, and acknowledged only when every part is committed.

use crate::support;

use ingest::{ContentDedup, MessengerHandle};
use router::{BatchSink, Envelope, SinkError, StoreOutcome};
use sqlx::PgPool;
use store::{DatabaseConfig, Store};
use support::{count, created, created_in_order, envelope, inquiry};

/// An inquiry with four lock keys: email, phone, messenger account and content.
fn four_keys(i: usize) -> Envelope {
    let mut inquiry = inquiry(
        Some(&format!("Persona {i}")),
        Some(&format!("persona{i}@example.it")),
        Some(&format!("347 {:07}", 1_000_000 + i)),
        None,
    );
    inquiry.contact.messenger = Some(MessengerHandle {
        platform: "telegram".into(),
        user_id: format!("{}", 9_000_000 + i),
        username: None,
    });
    inquiry.dedup = Some(ContentDedup {
        key: format!("content-{i}"),
        window_secs: 600,
    });
    envelope(inquiry)
}

fn store_with(pool: &PgPool, max_batch_locks: usize) -> Store {
    let mut config = DatabaseConfig::new("");
    config.max_batch_locks = max_batch_locks;
    Store::from_pool_with_config(pool.clone(), &config)
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn five_thousand_envelopes_with_four_keys_each_are_stored_on_a_default_server(pool: PgPool) {
    let envelopes: Vec<Envelope> = (0..5_000).map(four_keys).collect();
    assert_eq!(envelopes[0].lead.identity_keys.len(), 3);
    let batch: Vec<&Envelope> = envelopes.iter().collect();
    let store = Store::from_pool(pool.clone());
    let outcomes = store.store_batch(&batch).await.unwrap();
    assert_eq!(outcomes.len(), 5_000);
    // In order: each envelope's outcome names the lead made of it.
    let first = created(&outcomes[0]);
    let last = created(&outcomes[4_999]);
    let (first_email, last_email): (String, String) = sqlx::query_as(
        "SELECT (SELECT email FROM leads WHERE id = $1), (SELECT email FROM leads WHERE id = $2)",
    )
    .bind(first)
    .bind(last)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (first_email.as_str(), last_email.as_str()),
        ("persona0@example.it", "persona4999@example.it")
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM leads").await, 5_000);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_batch_split_by_its_locks_keeps_its_order_and_its_matches(pool: PgPool) {
    let store = store_with(&pool, 16);
    // Sixteen locks: four envelopes of four keys per transaction.
    let mut envelopes: Vec<Envelope> = (0..10).map(four_keys).collect();
    // Later in the batch, in another part: the first person again, by phone only.
    envelopes.push(envelope(inquiry(None, None, Some("347 1000000"), None)));
    let batch: Vec<&Envelope> = envelopes.iter().collect();
    let outcomes = store.store_batch(&batch).await.unwrap();
    let first = created(&outcomes[0]);
    assert_eq!(outcomes[10], StoreOutcome::Merged { lead_id: first });
    created_in_order(&outcomes[..10]);
    // Several transactions really happened: the leads have different transaction ids.
    let transactions = count(&pool, "SELECT count(DISTINCT xmin::text) FROM leads").await;
    assert!(transactions >= 3, "{transactions} transactions");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_part_that_fails_after_others_committed_holds_the_batch_and_the_retry_replays_them(
    pool: PgPool,
) {
    let store = store_with(&pool, 16);
    let envelopes: Vec<Envelope> = (0..8).map(four_keys).collect();
    let batch: Vec<&Envelope> = envelopes.iter().collect();
    // The second part's transaction is cancelled (as a statement timeout would).
    sqlx::raw_sql(
        "CREATE FUNCTION cancel_persona7() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.payload->'normalized'->>'email' = 'persona7@example.it' THEN
             RAISE EXCEPTION 'canceling statement due to statement timeout' USING ERRCODE = '57014';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER cancel_persona7 BEFORE INSERT ON inquiries
           FOR EACH ROW EXECUTE FUNCTION cancel_persona7();",
    )
    .execute(&pool)
    .await
    .unwrap();
    match store.store_batch(&batch).await {
        Err(SinkError::Transient(reason)) => assert!(reason.contains("57014"), "{reason}"),
        other => panic!("expected the batch to be held, got {other:?}"),
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM leads").await,
        4,
        "the first part is committed"
    );

    sqlx::query("DROP TRIGGER cancel_persona7 ON inquiries")
        .execute(&pool)
        .await
        .unwrap();
    let outcomes = store.store_batch(&batch).await.unwrap();
    assert!(
        outcomes[..4].iter().all(|o| *o == StoreOutcome::Replay),
        "{outcomes:?}"
    );
    outcomes[4..].iter().for_each(|o| {
        created(o);
    });
    assert_eq!(count(&pool, "SELECT count(*) FROM leads").await, 8);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_full_lock_table_splits_the_batch_instead_of_retrying_it_whole(pool: PgPool) {
    // No cap of our own: the server's lock table is the limit, and it fits three inquiries
    // per transaction (a real SQLSTATE 53200 from a trigger, so other databases on this
    // server keep their locks).
    let store = store_with(&pool, usize::MAX);
    sqlx::raw_sql(
        "CREATE FUNCTION three_fit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF (SELECT count(*) FROM added) > 3 THEN
             RAISE EXCEPTION 'out of shared memory'
               USING ERRCODE = '53200', HINT = 'You might need to increase max_locks_per_transaction.';
           END IF;
           RETURN NULL;
         END $$;
         CREATE TRIGGER three_fit AFTER INSERT ON inquiries
           REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION three_fit();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let envelopes: Vec<Envelope> = (0..10).map(four_keys).collect();
    let batch: Vec<&Envelope> = envelopes.iter().collect();
    let outcomes = store.store_batch(&batch).await.unwrap();
    created_in_order(&outcomes);
    assert_eq!(count(&pool, "SELECT count(*) FROM leads").await, 10);

    // One inquiry that cannot get its locks is held, not dead-lettered.
    sqlx::query(
        "CREATE OR REPLACE FUNCTION three_fit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'out of shared memory' USING ERRCODE = '53200'; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    let one = four_keys(99);
    assert!(matches!(
        store.store_batch(&[&one]).await,
        Err(SinkError::Transient(_))
    ));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_known_contacts_a_batch_locks_count_against_its_budget(pool: PgPool) {
    let store = store_with(&pool, 16);
    for i in 0..10 {
        store
            .create_contact(&store::NewContact {
                name: Some(format!("Cliente {i}")),
                emails: vec![normalizer::EmailAddress::parse(&format!("c{i}@example.it")).unwrap()],
                ..store::NewContact::default()
            })
            .await
            .unwrap();
    }
    // Ten key locks fit in sixteen; with the ten contacts' locks they do not.
    let envelopes: Vec<Envelope> = (0..10)
        .map(|i| envelope(inquiry(None, Some(&format!("c{i}@example.it")), None, None)))
        .collect();
    let batch: Vec<&Envelope> = envelopes.iter().collect();
    let outcomes = store.store_batch(&batch).await.unwrap();
    created_in_order(&outcomes);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM leads WHERE contact_id IS NOT NULL"
        )
        .await,
        10
    );
    let transactions = count(&pool, "SELECT count(DISTINCT xmin::text) FROM leads").await;
    assert!(transactions >= 2, "{transactions} transactions");
}
