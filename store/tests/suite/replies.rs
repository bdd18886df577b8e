//! Replies: where a lead can be answered, recorded with their activity in one
//! transaction, once per idempotency key, and claimed by one worker at a time with the
//! activity following every mark.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use ingest::{ActivityKind, Channel, ConversationKey, EventRef, InquiryId};
use router::{BatchSink, Envelope};
use serde_json::{Value, json};
use sqlx::PgPool;
use store::{AckRules, ChatPlatform, ChatTarget, NewReply, RecordedReply, ReplyTarget, Store};
use support::{created, envelope, inquiry};

fn store(pool: &PgPool) -> Store {
    Store::from_pool(pool.clone()).with_acknowledgements(AckRules {
        from: "Vendite <leads@example.com>".into(),
        by_source: HashMap::new(),
    })
}

fn telegram(chat_id: &str, update: &str) -> Envelope {
    let mut inquiry = inquiry(Some("Giulia"), None, None, None);
    inquiry.channel = Channel::Chat;
    inquiry.source = "telegram-shop".into();
    inquiry.id = InquiryId::from_external(Channel::Chat, "telegram-shop", update);
    inquiry.contact.messenger = Some(ingest::MessengerHandle {
        platform: "telegram".into(),
        user_id: chat_id.into(),
        username: None,
    });
    let mut event = EventRef::new(ActivityKind::Message);
    event.conversation = vec![ConversationKey::chat("telegram-shop", chat_id).unwrap()];
    inquiry.event = Some(event);
    envelope(inquiry)
}

fn mail(email: &str, message_id: &str, subject: &str) -> Envelope {
    let mut inquiry = inquiry(Some("Luca"), Some(email), None, None);
    inquiry.channel = Channel::Email;
    inquiry.source = "mail-it".into();
    inquiry.id = InquiryId::from_external(Channel::Email, "vendite-it", message_id);
    let mut event = EventRef::new(ActivityKind::Email);
    event.conversation = vec![ConversationKey::email_thread(message_id).unwrap()];
    event.subject = Some(subject.into());
    event.data.insert("message_id".into(), json!(message_id));
    inquiry.event = Some(event);
    envelope(inquiry)
}

async fn activity_data(pool: &PgPool, id: i64) -> Value {
    sqlx::query_scalar("SELECT data FROM activities WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn recorded(outcome: RecordedReply) -> i64 {
    match outcome {
        RecordedReply::Recorded(activity) => activity.id,
        other => panic!("recorded, not {other:?}"),
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_chat_lead_is_answered_in_its_chat_once_per_key(pool: PgPool) {
    let store = store(&pool);
    let lead = created(&store.store_batch(&[&telegram("555", "1")]).await.unwrap()[0]);
    let routes = store
        .reply_routes(lead, &store::Scope::All)
        .await
        .unwrap()
        .expect("the lead");
    let chat = ChatTarget {
        platform: ChatPlatform::Telegram,
        account: "shop".into(),
        chat_id: "555".into(),
    };
    assert_eq!(routes.chats, vec![chat.clone()]);
    assert!(routes.mail.is_none());
    assert!(
        store
            .reply_routes(lead + 1000, &store::Scope::All)
            .await
            .unwrap()
            .is_none()
    );

    let reply = NewReply {
        lead_id: lead,
        text: "Ciao".into(),
        idempotency_key: Some("k".into()),
        target: ReplyTarget::Chat(chat),
    };
    let first = recorded(
        store
            .record_reply(&reply, &store::Scope::All)
            .await
            .unwrap(),
    );
    match store
        .record_reply(&reply, &store::Scope::All)
        .await
        .unwrap()
    {
        RecordedReply::Replayed(activity) => assert_eq!(activity.id, first),
        other => panic!("a replay, not {other:?}"),
    }
    let other_text = NewReply {
        text: "Salve".into(),
        ..reply.clone()
    };
    assert!(matches!(
        store
            .record_reply(&other_text, &store::Scope::All)
            .await
            .unwrap(),
        RecordedReply::KeyReused
    ));
    assert_eq!(
        support::count(&pool, "SELECT count(*) FROM replies").await,
        1
    );
    let data = activity_data(&pool, first).await;
    assert_eq!(data["direction"], "outbound");
    assert_eq!(data["delivery"], "pending");
    assert_eq!(data["chat_id"], 555);

    // Claimed once; a failure waits its delay and shows on the activity.
    let lease = Duration::from_secs(60);
    let claimed = store.claim_due_replies(10, lease).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(store.claim_due_replies(10, lease).await.unwrap().is_empty());
    store
        .mark_reply_failed(claimed[0].id, "Telegram answered 502", Some(Duration::ZERO))
        .await
        .unwrap();
    let data = activity_data(&pool, first).await;
    assert_eq!(
        (data["delivery"].clone(), data["attempts"].clone()),
        (json!("pending"), json!(1))
    );
    assert_eq!(data["last_error"], "Telegram answered 502");

    // A stopping worker hands its claim back as never attempted.
    let again = store.claim_due_replies(10, lease).await.unwrap();
    assert_eq!(again[0].attempts, 2);
    store.release_replies(&[again[0].id]).await.unwrap();
    let again = store.claim_due_replies(10, lease).await.unwrap();
    assert_eq!(again[0].attempts, 2);

    // A worker that died holding it: taken again only once the lease lapsed.
    assert!(store.claim_due_replies(10, lease).await.unwrap().is_empty());
    support::execute(
        &pool,
        "UPDATE replies SET claimed_until = now() - interval '1 second'",
    )
    .await;
    let retaken = store.claim_due_replies(10, lease).await.unwrap();
    assert_eq!(retaken.len(), 1);
    let mut fields = serde_json::Map::new();
    fields.insert("message_id".into(), json!(99));
    store
        .mark_reply_sent(retaken[0].id, "99", fields)
        .await
        .unwrap();
    let data = activity_data(&pool, first).await;
    assert_eq!(data["delivery"], "sent");
    assert_eq!(data["message_id"], 99);
    assert!(data.get("last_error").is_none(), "{data}");
    let depth = store.reply_depth().await.unwrap();
    assert_eq!((depth.pending, depth.sending, depth.failed), (0, 0, 0));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_mail_lead_is_answered_in_its_thread_and_the_mail_marks_its_activity(pool: PgPool) {
    let store = store(&pool);
    assert!(store.sends_mail());
    let lead = created(
        &store
            .store_batch(&[&mail("luca@bianchi.it", "<q1@bianchi.it>", "Preventivo")])
            .await
            .unwrap()[0],
    );
    let routes = store
        .reply_routes(lead, &store::Scope::All)
        .await
        .unwrap()
        .expect("the lead");
    assert!(routes.chats.is_empty());
    let thread = routes.mail.expect("a mail thread");
    assert_eq!(thread.recipient, "luca@bianchi.it");
    assert_eq!(thread.in_reply_to, "<q1@bianchi.it>");
    assert_eq!(thread.subject, "Re: Preventivo");

    let id = recorded(
        store
            .record_reply(
                &NewReply {
                    lead_id: lead,
                    text: "Gentile Luca, ecco il preventivo.".into(),
                    idempotency_key: None,
                    target: ReplyTarget::Mail(thread),
                },
                &store::Scope::All,
            )
            .await
            .unwrap(),
    );
    let claimed = store
        .claim_due_mail(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let mail = &claimed[0];
    assert_eq!(mail.subject, "Re: Preventivo");
    assert!(
        mail.message_id.ends_with("@example.com>"),
        "{}",
        mail.message_id
    );
    let headers: HashMap<_, _> = mail.headers.iter().cloned().collect();
    assert_eq!(headers["In-Reply-To"], "<q1@bianchi.it>");
    assert_eq!(headers["References"], "<q1@bianchi.it>");
    assert!(!headers.contains_key("Auto-Submitted"), "a person wrote it");

    store
        .mark_mail_failed(mail.id, "550 mailbox unavailable", None)
        .await
        .unwrap();
    let data = activity_data(&pool, id).await;
    assert_eq!(data["delivery"], "failed");
    assert_eq!(data["error"], "550 mailbox unavailable");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_form_lead_has_nowhere_to_be_answered(pool: PgPool) {
    let store = store(&pool);
    let lead = created(
        &store
            .store_batch(&[&envelope(inquiry(
                Some("Anna"),
                Some("anna@rossi.it"),
                None,
                None,
            ))])
            .await
            .unwrap()[0],
    );
    let routes = store
        .reply_routes(lead, &store::Scope::All)
        .await
        .unwrap()
        .expect("the lead");
    assert!(routes.chats.is_empty() && routes.mail.is_none());
    assert!(!Store::from_pool(pool.clone()).sends_mail());
}
