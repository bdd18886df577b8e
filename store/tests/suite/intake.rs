//! The consumer's sink and the key store against a real, freshly migrated database.

use crate::support;

use std::collections::BTreeMap;

use bytes::Bytes;
use ingest::{ContentDedup, Inquiry, InquiryId, RawPayload};
use router::{BatchSink, SinkError, StoreOutcome};
use sqlx::PgPool;
use store::Store;
use support::{count, envelope};

/// A form inquiry from Giada Fontana with campaign tags and the given raw body.
fn inquiry(email: &str, body: &str) -> Inquiry {
    let mut inquiry = support::inquiry(
        Some("Giada Fontana"),
        Some(email),
        Some("02 8736 1234"),
        None,
    );
    inquiry.message = Some("Preventivo per 4 scrivanie".into());
    inquiry.utm = BTreeMap::from([("utm_source".to_owned(), "google".to_owned())]);
    inquiry.raw = RawPayload {
        content_type: Some("application/x-www-form-urlencoded".into()),
        body: Bytes::from(body.to_owned()),
    };
    inquiry
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_new_inquiry_becomes_a_lead_in_the_initial_stage_with_history_and_activity(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let e = envelope(inquiry("giada.fontana@example.it", "a=1"));
    let outcomes = store.store_batch(&[&e]).await.unwrap();
    let StoreOutcome::LeadCreated { lead_id } = outcomes[0] else {
        panic!("{outcomes:?}");
    };
    let detail = store
        .get_lead(&store::Scope::All, lead_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.lead.phone.as_deref(), Some("+390287361234"));
    assert_eq!(detail.lead.stage.code, "open");
    assert_eq!(detail.stage_history.len(), 1);
    assert_eq!(detail.stage_history[0].from, None);
    assert_eq!(detail.activities.len(), 1);
    assert_eq!(detail.activities[0].kind, "form");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inquiries WHERE disposition = 'lead'"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_redelivered_inquiry_changes_nothing(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let e = envelope(inquiry("ugo@example.it", "a=1"));
    store.store_batch(&[&e]).await.unwrap();
    let again = store.store_batch(&[&e, &e]).await.unwrap();
    assert_eq!(again, vec![StoreOutcome::Replay, StoreOutcome::Replay]);
    assert_eq!(count(&pool, "SELECT count(*) FROM leads").await, 1);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_same_content_inside_its_window_is_a_duplicate_and_outside_it_a_new_inquiry(
    pool: PgPool,
) {
    let store = Store::from_pool(pool.clone());
    let dedup = ContentDedup {
        key: "same-content".into(),
        window_secs: 600,
    };
    let mut first = inquiry("dup@example.it", "a=1");
    first.dedup = Some(dedup.clone());
    let mut second = first.clone();
    second.id = InquiryId::new_unique();
    second.received_at = first.received_at + chrono::Duration::seconds(2);
    let mut later = first.clone();
    later.id = InquiryId::new_unique();
    later.received_at = first.received_at + chrono::Duration::seconds(3600);

    // In one batch, the second sees the first.
    let (a, b, c) = (envelope(first), envelope(second), envelope(later));
    let outcomes = store.store_batch(&[&a, &b, &c]).await.unwrap();
    assert!(matches!(outcomes[0], StoreOutcome::LeadCreated { .. }));
    assert_eq!(outcomes[1], StoreOutcome::Duplicate);
    // Outside the window it is a new inquiry of the same person: it joins the open lead.
    assert!(matches!(outcomes[2], StoreOutcome::Merged { .. }));
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inquiries WHERE duplicate_of IS NOT NULL"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn spam_is_kept_as_an_inquiry_and_never_becomes_a_lead(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let mut spam = inquiry("bot@example.com", "website=http://x");
    spam.spam = Some("honeypot field `website` was filled".into());
    let e = envelope(spam);
    assert_eq!(
        store.store_batch(&[&e]).await.unwrap(),
        vec![StoreOutcome::Spam]
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM leads").await, 0);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inquiries WHERE disposition = 'spam'"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn nul_characters_from_hostile_input_are_stored_not_refused(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let mut hostile = inquiry("nul@example.com", "message=a%00b");
    hostile.message = Some("a\0b".into());
    hostile.contact.company = Some("Evil\0 Corp".into());
    hostile
        .fields
        .insert("x\0".into(), serde_json::json!("y\0"));
    let e = envelope(hostile);
    let outcomes = store.store_batch(&[&e]).await.unwrap();
    assert!(matches!(outcomes[0], StoreOutcome::LeadCreated { .. }));
    let raw: Vec<u8> = sqlx::query_scalar("SELECT raw_body FROM inquiries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(raw, b"message=a%00b", "the raw bytes are kept exactly");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_unknown_pipeline_is_a_permanent_error_naming_the_envelope(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let good = envelope(inquiry("good@example.it", "a=1"));
    let mut other_person = inquiry("bad@example.it", "a=2");
    other_person.contact.phone = None;
    let mut bad = envelope(other_person);
    bad.route.pipeline = "no-such-pipeline".into();
    match store.store_batch(&[&good, &bad]).await {
        Err(SinkError::Permanent {
            index: Some(1),
            reason,
        }) => {
            assert!(reason.contains("no-such-pipeline"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // All or nothing: the good one was rolled back with the batch.
    assert_eq!(count(&pool, "SELECT count(*) FROM leads").await, 0);
}
