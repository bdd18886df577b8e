//! Builders shared by the store's integration tests.

use bytes::Bytes;
use chrono::Utc;
use ingest::{Channel, ContactHints, Inquiry, InquiryId, RawPayload};
use router::{Envelope, Route, StoreOutcome};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use store::Store;

/// A web-form inquiry from Italy with the given contact data.
pub fn inquiry(
    name: Option<&str>,
    email: Option<&str>,
    phone: Option<&str>,
    company: Option<&str>,
) -> Inquiry {
    let mut inquiry = Inquiry::new(
        InquiryId::new_unique(),
        Channel::Form,
        "website-it",
        Utc::now(),
    );
    inquiry.default_region = Some("IT".into());
    inquiry.contact = ContactHints {
        full_name: name.map(str::to_owned),
        email: email.map(str::to_owned),
        phone: phone.map(str::to_owned),
        company: company.map(str::to_owned),
        ..ContactHints::default()
    };
    inquiry.message = Some("Preventivo".into());
    inquiry.raw = RawPayload {
        content_type: None,
        body: Bytes::from_static(b"x"),
    };
    inquiry
}

/// The inquiry normalised and routed to the default pipeline.
pub fn envelope(inquiry: Inquiry) -> Envelope {
    Envelope::new(
        normalizer::normalize(inquiry),
        Route {
            pipeline: "default".into(),
            stage: None,
        },
    )
}

/// The lead id of a new lead (panics on any other outcome).
pub fn created(outcome: &StoreOutcome) -> i64 {
    match outcome {
        StoreOutcome::LeadCreated { lead_id } => *lead_id,
        other => panic!("expected a new lead, got {other:?}"),
    }
}

/// A store with its own pool on the test database: its connections open only when first
/// used, so they see session defaults changed after this call.
pub fn own_store(pool: &PgPool) -> Store {
    Store::from_pool(
        PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with((*pool.connect_options()).clone()),
    )
}

/// The test database's name.
pub async fn database_name(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// How many rows `sql` counts.
pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Runs one statement on the test database.
pub async fn execute(pool: &PgPool, sql: &str) {
    sqlx::query(sql).execute(pool).await.unwrap();
}

/// The leads a batch created, asserting they were filed in batch order.
pub fn created_in_order(outcomes: &[StoreOutcome]) -> Vec<i64> {
    let ids: Vec<i64> = outcomes.iter().map(created).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "filed in batch order: {ids:?}"
    );
    ids
}
