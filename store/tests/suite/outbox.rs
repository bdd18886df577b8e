//! Acknowledgements are queued with the lead they answer: once per lead event, only to a
//! person's own address, never twice to one address within 24 hours; and the worker's
//! claims never hand one row to two workers.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use ingest::{ActivityKind, Channel, ConversationKey, EventRef, InquiryId};
use router::{BatchSink, Envelope};
use serde_json::json;
use sqlx::{PgPool, Row};
use store::{AckRules, Acknowledgement, Store, Template};
use support::{count, created, envelope, inquiry};

fn rules() -> AckRules {
    let ack = |subject: &str, body: &str| Acknowledgement {
        subject: Template::parse(subject).unwrap(),
        body: Template::parse(body).unwrap(),
        fallback_name: "Cliente".into(),
    };
    AckRules {
        from: "Vendite <leads@example.com>".into(),
        by_source: HashMap::from([
            (
                "website-it".to_owned(),
                ack(
                    "Grazie {name}",
                    "Ciao {name}, abbiamo ricevuto la richiesta n. {lead_id}.",
                ),
            ),
            (
                "mail-it".to_owned(),
                ack("Re: {subject}", "Gentile {name}, grazie per la mail."),
            ),
        ]),
    }
}

fn store(pool: &PgPool) -> Store {
    Store::from_pool(pool.clone()).with_acknowledgements(rules())
}

fn form(name: &str, email: &str) -> Envelope {
    envelope(inquiry(Some(name), Some(email), None, None))
}

fn mail(name: &str, email: &str, message_id: &str, subject: &str) -> Envelope {
    let mut inquiry = inquiry(Some(name), Some(email), None, None);
    inquiry.channel = Channel::Email;
    inquiry.source = "mail-it".into();
    inquiry.id = InquiryId::from_external(Channel::Email, "vendite-it", message_id);
    inquiry.external_id = Some(message_id.into());
    let mut event = EventRef::new(ActivityKind::Email);
    event.conversation = vec![ConversationKey::email_thread(message_id).unwrap()];
    event.subject = Some(subject.into());
    event.data.insert("message_id".into(), json!(message_id));
    inquiry.event = Some(event);
    envelope(inquiry)
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_form_lead_queues_its_acknowledgement_once_even_when_redelivered(pool: PgPool) {
    let store = store(&pool);
    let lead = form("Anna Rossi", "Anna.Rossi@Example.it");
    let outcomes = store.store_batch(&[&lead]).await.unwrap();
    let lead_id = created(&outcomes[0]);
    store.store_batch(&[&lead]).await.unwrap();

    let rows = sqlx::query(
        "SELECT recipient, subject, body, message_id, headers, state, lead_id FROM outbox",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get::<String, _>("recipient"), "anna.rossi@example.it");
    assert_eq!(row.get::<String, _>("subject"), "Grazie Anna Rossi");
    assert_eq!(
        row.get::<String, _>("body"),
        format!("Ciao Anna Rossi, abbiamo ricevuto la richiesta n. {lead_id}.")
    );
    assert!(
        row.get::<String, _>("message_id")
            .ends_with("@example.com>")
    );
    assert_eq!(
        row.get::<serde_json::Value, _>("headers"),
        json!({"Auto-Submitted": "auto-replied"})
    );
    assert_eq!(row.get::<String, _>("state"), "pending");
    assert_eq!(row.get::<Option<i64>, _>("lead_id"), Some(lead_id));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_mail_lead_is_answered_in_its_thread(pool: PgPool) {
    let store = store(&pool);
    let lead = mail(
        "Luca Bianchi",
        "luca@bianchi.it",
        "<q1@bianchi.it>",
        "Preventivo",
    );
    store.store_batch(&[&lead]).await.unwrap();
    let row = sqlx::query("SELECT subject, headers FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("subject"), "Re: Preventivo");
    assert_eq!(
        row.get::<serde_json::Value, _>("headers"),
        json!({
            "Auto-Submitted": "auto-replied",
            "In-Reply-To": "<q1@bianchi.it>",
            "References": "<q1@bianchi.it>",
        })
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn role_placeholder_and_own_addresses_spam_and_other_sources_are_never_acknowledged(
    pool: PgPool,
) {
    let store = store(&pool);
    let role = form("Ufficio", "info@azienda.it");
    let placeholder = form("Test", "test@example.com");
    let own = form("Noi", "leads@example.com");
    let mut spam = inquiry(Some("Bot"), Some("bot@spam.example.org"), None, None);
    spam.spam = Some("honeypot".into());
    let spam = envelope(spam);
    let mut other = inquiry(Some("Jan"), Some("jan@firma.pl"), None, None);
    other.source = "website-pl".into();
    let other = envelope(other);
    store
        .store_batch(&[&role, &placeholder, &own, &spam, &other])
        .await
        .unwrap();
    assert_eq!(count(&pool, "SELECT count(*) FROM leads").await, 4);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 0);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn one_address_gets_one_acknowledgement_in_24_hours(pool: PgPool) {
    let store = store(&pool);
    // Two mails from one person: the second merges into the lead of the first.
    let first = mail("Luca", "luca@bianchi.it", "<a@bianchi.it>", "Uno");
    let second = mail("Luca", "luca@bianchi.it", "<b@bianchi.it>", "Due");
    store.store_batch(&[&first]).await.unwrap();
    store.store_batch(&[&second]).await.unwrap();
    // Both in one batch, from another person.
    let third = form("Anna", "anna@rossi.it");
    let fourth = form("Anna", "anna@rossi.it");
    store.store_batch(&[&third, &fourth]).await.unwrap();
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM outbox WHERE recipient = 'luca@bianchi.it'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM outbox WHERE recipient = 'anna@rossi.it'"
        )
        .await,
        1
    );

    // A day later the address may be answered again.
    support::execute(
        &pool,
        "UPDATE outbox SET created_at = now() - interval '25 hours'",
    )
    .await;
    let later = mail("Luca", "luca@bianchi.it", "<c@bianchi.it>", "Tre");
    store.store_batch(&[&later]).await.unwrap();
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM outbox WHERE recipient = 'luca@bianchi.it'"
        )
        .await,
        2
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_claim_is_taken_once_until_its_lease_lapses(pool: PgPool) {
    let store = store(&pool);
    store
        .store_batch(&[&form("Anna", "anna@rossi.it")])
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    let claimed = store.claim_due_mail(10, lease).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempts, 1);
    assert!(store.claim_due_mail(10, lease).await.unwrap().is_empty());

    // A failed attempt comes back once its delay has passed.
    store
        .mark_mail_failed(claimed[0].id, "connection refused", Some(Duration::ZERO))
        .await
        .unwrap();
    let again = store.claim_due_mail(10, lease).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);

    // A worker that died holding the claim: the row is taken again once the lease lapsed.
    support::execute(
        &pool,
        "UPDATE outbox SET claimed_until = now() - interval '1 second'",
    )
    .await;
    let retaken = store.claim_due_mail(10, lease).await.unwrap();
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].message_id, claimed[0].message_id);

    store.mark_mail_sent(retaken[0].id).await.unwrap();
    assert!(store.claim_due_mail(10, lease).await.unwrap().is_empty());
    let depth = store.outbox_depth().await.unwrap();
    assert_eq!((depth.pending, depth.sending, depth.failed), (0, 0, 0));

    // Sent mail is kept for a while, then purged.
    let month = Duration::from_secs(30 * 86_400);
    assert_eq!(store.purge_sent_mail(month).await.unwrap(), 0);
    support::execute(
        &pool,
        "UPDATE outbox SET sent_at = now() - interval '31 days'",
    )
    .await;
    assert_eq!(store.purge_sent_mail(month).await.unwrap(), 1);
}
