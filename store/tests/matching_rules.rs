//! Matching seams inside the consumer's transaction: concurrent inquiries of one known
//! contact, shared numbers, and what a merge may add to a lead.

mod support;

use std::time::{Duration, Instant};

use router::{BatchSink, StoreOutcome};
use sqlx::PgPool;
use store::{NewContact, Store};
use support::{count, envelope, inquiry, own_store};

fn email(raw: &str) -> normalizer::EmailAddress {
    normalizer::EmailAddress::parse(raw).unwrap()
}

fn phone(raw: &str) -> normalizer::PhoneE164 {
    normalizer::parse_phone(raw, None).unwrap().number
}

/// Waits until `n` sessions on the test database wait for a lock.
async fn until_waiting_for_locks(pool: &PgPool, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = count(
            pool,
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await;
        if waiting >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} of {n} sessions wait for a lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_known_contact_writing_by_email_and_by_phone_at_once_gets_one_open_lead(pool: PgPool) {
    let contact = Store::from_pool(pool.clone())
        .create_contact(&NewContact {
            name: Some("Marta Galli".into()),
            emails: vec![email("marta@galli.example.it")],
            phones: vec![phone("+39 02 8736 5511")],
            company_id: None,
        })
        .await
        .unwrap();
    // Two consumers (two shards: one keyed by the email, one by the phone), each with its
    // own connections. Neither inquiry has a key of the other.
    let (by_email, by_phone) = (own_store(&pool), own_store(&pool));
    let e = envelope(inquiry(
        Some("Marta Galli"),
        Some("marta@galli.example.it"),
        None,
        None,
    ));
    let p = envelope(inquiry(
        Some("Marta Galli"),
        None,
        Some("02 8736 5511"),
        None,
    ));

    // New leads wait until both transactions have looked the contact up: the moment two
    // consumers race in production.
    let mut gate = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE leads IN SHARE MODE")
        .execute(&mut *gate)
        .await
        .unwrap();
    let first = tokio::spawn(async move { by_email.store_batch(&[&e]).await.unwrap() });
    let second = tokio::spawn(async move { by_phone.store_batch(&[&p]).await.unwrap() });
    until_waiting_for_locks(&pool, 2).await;
    gate.commit().await.unwrap();

    let mut outcomes = vec![
        first.await.unwrap()[0].clone(),
        second.await.unwrap()[0].clone(),
    ];
    outcomes.sort_by_key(|o| o.label());
    let StoreOutcome::LeadCreated { lead_id } = outcomes[0] else {
        panic!("{outcomes:?}");
    };
    assert_eq!(
        outcomes[1],
        StoreOutcome::Merged { lead_id },
        "{outcomes:?}"
    );
    let (leads, linked): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE contact_id = $1) FROM leads")
            .bind(contact.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((leads, linked), (1, 1));
}
