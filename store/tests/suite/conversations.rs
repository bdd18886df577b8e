//! Events and conversations: events of one call, chat or mail thread, in whatever order
//! and however often they arrive, end as one lead with one activity per activity key in
//! its newest state.

use crate::support;

use chrono::DateTime;
use ingest::{ActivityKind, Channel, ConversationKey, EventRef, Inquiry, InquiryId};
use router::{BatchSink, Envelope, StoreOutcome};
use serde_json::json;
use sqlx::PgPool;
use store::{LeadDetail, LeadQuery, Store};
use support::{count, created, envelope, own_store};

const CALLER: &str = "347 555 0101";

/// A status callback of call `call_id`: its sequence number, status and extra fields.
fn call_event(call_id: &str, seq: i64, status: &str, extra: serde_json::Value) -> Envelope {
    let mut inquiry = support::inquiry(None, None, Some(CALLER), None);
    inquiry.channel = Channel::Call;
    inquiry.source = "phone-twilio".into();
    inquiry.id =
        InquiryId::from_external(Channel::Call, "phone-twilio", &format!("{call_id}:{seq}"));
    inquiry.external_id = Some(format!("{call_id}:{seq}"));
    inquiry.message = None;
    let mut event = EventRef::new(ActivityKind::Call);
    event.conversation = vec![ConversationKey::call("twilio", call_id).unwrap()];
    event.activity_key = Some(format!("call:twilio:{call_id}"));
    event.order = Some(seq);
    event.occurred_at = DateTime::from_timestamp(1_764_000_000 + seq, 0);
    event.data.insert("call_id".into(), json!(call_id));
    event.data.insert("status".into(), json!(status));
    if let serde_json::Value::Object(extra) = extra {
        event.data.extend(extra);
    }
    inquiry.event = Some(event);
    envelope(inquiry)
}

/// A Telegram message (`edit` none) or an edit of it, with the text and the edit time.
fn chat_event(update_id: i64, message_id: i64, text: &str, edited_at: Option<i64>) -> Envelope {
    let mut inquiry = support::inquiry(Some("Minh Anh"), None, None, None);
    inquiry.channel = Channel::Chat;
    inquiry.source = "telegram-shop".into();
    inquiry.id = InquiryId::from_external(Channel::Chat, "telegram-shop", &update_id.to_string());
    inquiry.contact.messenger = Some(ingest::MessengerHandle {
        platform: "telegram".into(),
        user_id: "777".into(),
        username: None,
    });
    inquiry.message = Some(text.into());
    let mut event = EventRef::new(ActivityKind::Message);
    event.conversation = vec![ConversationKey::chat("telegram", "777").unwrap()];
    event.activity_key = Some(format!("chat:telegram:777:{message_id}"));
    // The message's date orders its versions: the original, then each edit.
    event.order = Some(edited_at.unwrap_or(1_700_000_000));
    match edited_at {
        Some(at) => {
            event.data.insert("edited_at".into(), json!(at));
        }
        None => {
            event.data.insert("update_id".into(), json!(update_id));
            event.data.insert("message_id".into(), json!(message_id));
        }
    }
    inquiry.event = Some(event);
    envelope(inquiry)
}

/// A mail from `from`, with its Message-ID and the ids it answers (In-Reply-To, References).
fn mail(from: &str, message_id: &str, answers: &[&str], phone: Option<&str>) -> Inquiry {
    let mut inquiry = support::inquiry(None, Some(from), phone, None);
    inquiry.channel = Channel::Email;
    inquiry.source = "mail-it".into();
    inquiry.id = InquiryId::from_external(Channel::Email, "mail-it", message_id);
    let mut event = EventRef::new(ActivityKind::Email);
    event.conversation = std::iter::once(message_id)
        .chain(answers.iter().copied())
        .map(|id| ConversationKey::email_thread(id).unwrap())
        .collect();
    event.subject = Some(format!("Re: preventivo ({message_id})"));
    event.data.insert("message_id".into(), json!(message_id));
    inquiry.event = Some(event);
    inquiry
}

async fn only_lead(store: &Store) -> LeadDetail {
    let page = store
        .list_leads(
            &store::Scope::All,
            &LeadQuery {
                limit: 10,
                ..LeadQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1, "one lead: {:?}", page.items);
    store
        .get_lead(&store::Scope::All, page.items[0].id)
        .await
        .unwrap()
        .unwrap()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn call_events_out_of_order_and_replayed_end_as_one_lead_and_one_activity_in_its_newest_state(
    pool: PgPool,
) {
    let store = Store::from_pool(pool.clone());
    let ringing = call_event("CA1", 0, "ringing", json!({"direction": "inbound"}));
    let completed = call_event("CA1", 2, "completed", json!({"duration_s": 42}));
    // Late: older than `completed`, and the only one that knows the caller's name.
    let in_progress = call_event(
        "CA1",
        1,
        "in-progress",
        json!({"caller_name": "ROSSI MARIO", "duration_s": 0}),
    );
    let first = store.store_batch(&[&ringing]).await.unwrap();
    let lead_id = created(&first[0]);
    assert_eq!(
        store.store_batch(&[&completed]).await.unwrap(),
        vec![StoreOutcome::Merged { lead_id }]
    );
    assert_eq!(
        store.store_batch(&[&in_progress]).await.unwrap(),
        vec![StoreOutcome::Merged { lead_id }]
    );
    // Replays, alone and beside a new event, change nothing.
    assert_eq!(
        store.store_batch(&[&completed, &ringing]).await.unwrap(),
        vec![StoreOutcome::Replay, StoreOutcome::Replay]
    );

    let lead = only_lead(&store).await;
    assert_eq!(lead.activities.len(), 1, "{:?}", lead.activities);
    let call = &lead.activities[0];
    assert_eq!(call.kind, "call");
    assert_eq!(call.channel.as_deref(), Some("call"));
    assert_eq!(call.inquiry_id, Some(ringing.lead.inquiry.id.as_uuid()));
    assert_eq!(
        call.data["status"], "completed",
        "a late older event never wins"
    );
    assert_eq!(call.data["duration_s"], 42);
    assert_eq!(call.data["direction"], "inbound");
    assert_eq!(
        call.data["caller_name"], "ROSSI MARIO",
        "it fills what was missing"
    );
    assert_eq!(
        call.occurred_at,
        ringing
            .lead
            .inquiry
            .event
            .as_ref()
            .unwrap()
            .occurred_at
            .unwrap(),
        "the call began with its first event"
    );
    assert_eq!(lead.lead.keys, vec!["phone:+393475550101"]);
    assert_eq!(count(&pool, "SELECT count(*) FROM inquiries").await, 3);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM lead_conversations").await,
        1
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn call_events_out_of_order_in_one_batch_end_the_same(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let ringing = call_event("CA2", 0, "ringing", json!({}));
    let in_progress = call_event("CA2", 1, "in-progress", json!({"caller_name": "BIANCHI"}));
    let completed = call_event("CA2", 2, "completed", json!({"duration_s": 7}));
    let outcomes = store
        .store_batch(&[&completed, &ringing, &completed, &in_progress])
        .await
        .unwrap();
    let lead_id = created(&outcomes[0]);
    assert_eq!(
        outcomes[1..],
        [
            StoreOutcome::Merged { lead_id },
            StoreOutcome::Replay,
            StoreOutcome::Merged { lead_id }
        ]
    );
    let lead = only_lead(&store).await;
    assert_eq!(lead.activities.len(), 1);
    let data = &lead.activities[0].data;
    assert_eq!(
        (&data["status"], &data["duration_s"], &data["caller_name"]),
        (&json!("completed"), &json!(7), &json!("BIANCHI"))
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_edit_replaces_its_message_text_and_a_late_original_never_undoes_it(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let original = chat_event(100, 5, "Quanto costa?", None);
    let edit = chat_event(101, 5, "Quanto costa la consegna?", Some(1_700_000_300));
    let next = chat_event(102, 6, "Grazie", None);
    // The edit arrives first; the original comes later, redelivered by the platform.
    let lead_id = created(&store.store_batch(&[&edit]).await.unwrap()[0]);
    store.store_batch(&[&original, &next]).await.unwrap();
    store.store_batch(&[&original]).await.unwrap();

    let lead = only_lead(&store).await;
    assert_eq!(lead.lead.id, lead_id);
    let bodies: Vec<(&str, Option<&str>)> = lead
        .activities
        .iter()
        .map(|a| (a.kind.as_str(), a.body.as_deref()))
        .collect();
    assert_eq!(bodies.len(), 2, "one activity per message: {bodies:?}");
    assert!(bodies.contains(&("message", Some("Quanto costa la consegna?"))));
    assert!(bodies.contains(&("message", Some("Grazie"))));
    let edited = lead
        .activities
        .iter()
        .find(|a| a.body.as_deref() == Some("Quanto costa la consegna?"))
        .unwrap();
    assert_eq!(edited.data["edited_at"], 1_700_000_300);
    assert_eq!(
        edited.data["update_id"], 100,
        "the original fills its own fields"
    );
    assert_eq!(lead.lead.keys, vec!["messenger:telegram:777"]);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_reply_in_a_mail_thread_joins_the_threads_lead_whoever_sends_it(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    // Someone else's open lead holds the number the reply will bring.
    let other = envelope(support::inquiry(
        Some("Paolo Neri"),
        Some("paolo@neri.example.it"),
        Some("02 8736 9999"),
        None,
    ));
    let other_id = created(&store.store_batch(&[&other]).await.unwrap()[0]);
    let root = envelope(mail(
        "anna@studio.example.it",
        "<root@studio.example.it>",
        &[],
        None,
    ));
    let anna = created(&store.store_batch(&[&root]).await.unwrap()[0]);
    // A colleague answers in the thread, giving a number; by its keys alone it would join
    // Paolo's lead or open one of its own.
    let reply = envelope(mail(
        "giulia@studio.example.it",
        "<reply@studio.example.it>",
        &["<root@studio.example.it>"],
        Some("02 8736 9999"),
    ));
    // A reply to the reply names only its parent.
    let second = envelope(mail(
        "anna@studio.example.it",
        "<second@studio.example.it>",
        &["<reply@studio.example.it>"],
        None,
    ));
    assert_eq!(
        store.store_batch(&[&reply, &second]).await.unwrap(),
        vec![
            StoreOutcome::Merged { lead_id: anna },
            StoreOutcome::Merged { lead_id: anna }
        ]
    );
    let lead = store
        .get_lead(&store::Scope::All, anna)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lead.activities.len(), 3, "one activity per mail");
    assert!(lead.activities.iter().all(|a| a.kind == "email"));
    assert_eq!(
        lead.activities[1].subject.as_deref(),
        Some("Re: preventivo (<reply@studio.example.it>)")
    );
    assert_eq!(
        lead.lead.keys,
        vec![
            "email:anna@studio.example.it",
            "email:giulia@studio.example.it",
            "phone:+390287369999"
        ]
    );
    assert_eq!(lead.lead.inquiry_count, 3);
    assert_eq!(lead.events[0].data["match"]["rule"], "conversation");
    let paolo = store
        .get_lead(&store::Scope::All, other_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paolo.lead.inquiry_count, 1, "Paolo's lead is untouched");
    assert_eq!(
        store
            .list_leads(
                &store::Scope::All,
                &LeadQuery {
                    key: Some("email:giulia@studio.example.it".into()),
                    limit: 10,
                    ..LeadQuery::default()
                }
            )
            .await
            .unwrap()
            .items
            .iter()
            .map(|l| l.id)
            .collect::<Vec<_>>(),
        vec![anna]
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_missed_call_tags_its_lead_once(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let mut no_answer = call_event("CA3", 1, "no-answer", json!({"missed": true}));
    no_answer
        .lead
        .inquiry
        .event
        .as_mut()
        .unwrap()
        .tags
        .push("missed_call".into());
    let mut again = call_event("CA4", 1, "no-answer", json!({"missed": true}));
    again.lead.inquiry.event.as_mut().unwrap().tags = vec![" missed_call ".into(), "".into()];
    let lead_id = created(&store.store_batch(&[&no_answer]).await.unwrap()[0]);
    assert_eq!(
        store.store_batch(&[&again]).await.unwrap(),
        vec![StoreOutcome::Merged { lead_id }]
    );
    let lead = only_lead(&store).await;
    assert_eq!(lead.lead.tags, vec!["missed_call"]);
    assert_eq!(lead.activities.len(), 2, "two calls, two activities");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn first_events_of_new_conversations_on_two_consumers_make_one_lead_each(pool: PgPool) {
    // Two events of each conversation share no person key (one brings the phone, the other
    // the email), so only the conversation tells they belong together.
    const CONVERSATIONS: usize = 30;
    let side = |i: usize, by_phone: bool| {
        let mut inquiry = if by_phone {
            support::inquiry(None, None, Some(&format!("347 {:07}", 2_000_000 + i)), None)
        } else {
            support::inquiry(None, Some(&format!("caller{i}@example.it")), None, None)
        };
        inquiry.channel = Channel::Call;
        let mut event = EventRef::new(ActivityKind::Call);
        event.conversation =
            vec![ConversationKey::call("asterisk-pbx1", &format!("17000.{i}")).unwrap()];
        event.activity_key = Some(format!("call:asterisk-pbx1:17000.{i}"));
        event.order = Some(i64::from(by_phone));
        inquiry.event = Some(event);
        envelope(inquiry)
    };
    let phones: Vec<Envelope> = (0..CONVERSATIONS).map(|i| side(i, true)).collect();
    let emails: Vec<Envelope> = (0..CONVERSATIONS).map(|i| side(i, false)).collect();
    let (one, two) = (own_store(&pool), own_store(&pool));
    for i in 0..CONVERSATIONS {
        // Both consumers file the first event of a new conversation at the same moment.
        let (by_phone, by_email) = ([&phones[i]], [&emails[i]]);
        let (a, b) = tokio::join!(one.store_batch(&by_phone), two.store_batch(&by_email));
        let outcomes = [a.unwrap().remove(0), b.unwrap().remove(0)];
        let created = outcomes
            .iter()
            .filter(|o| matches!(o, StoreOutcome::LeadCreated { .. }))
            .count();
        assert_eq!(created, 1, "conversation {i}: {outcomes:?}");
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM leads").await,
        CONVERSATIONS as i64
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM activities").await,
        CONVERSATIONS as i64
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM leads l WHERE (SELECT count(*) FROM lead_identities li
                                                 WHERE li.lead_id = l.id) = 2"
        )
        .await,
        CONVERSATIONS as i64,
        "each lead holds both sides' keys"
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_first_events_own_fields_survive_a_newer_event(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let with_first = |update_id: i64, text: &str, edited_at: Option<i64>| {
        let mut envelope = chat_event(update_id, 8, text, edited_at);
        let event = envelope.lead.inquiry.event.as_mut().unwrap();
        event.keep_first("update_id", json!(update_id));
        envelope
    };
    let original = with_first(300, "Avete scaffali?", None);
    let edit = with_first(301, "Avete scaffali in rovere?", Some(1_700_000_600));
    store.store_batch(&[&original]).await.unwrap();
    store.store_batch(&[&edit]).await.unwrap();
    let lead = only_lead(&store).await;
    let activity = &lead.activities[0];
    assert_eq!(lead.activities.len(), 1);
    assert_eq!(activity.body.as_deref(), Some("Avete scaffali in rovere?"));
    assert_eq!(activity.data["edited_at"], 1_700_000_600);
    assert_eq!(
        activity.data["update_id"], 300,
        "the update that began the message names it"
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_follow_up_joins_its_conversations_lead_and_never_opens_one(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let sticker = |update_id: i64, message_id: i64| {
        let mut envelope = chat_event(update_id, message_id, "👍", None);
        envelope.lead.inquiry.event.as_mut().unwrap().follow_up = true;
        envelope
    };
    // Alone, before anything was said: kept, no lead.
    let early = sticker(400, 1);
    assert_eq!(
        store.store_batch(&[&early]).await.unwrap(),
        vec![StoreOutcome::Unmatched]
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM leads").await, 0);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inquiries WHERE disposition = 'unmatched'"
        )
        .await,
        1
    );
    // Redelivered: a replay, still no lead.
    assert_eq!(
        store.store_batch(&[&early]).await.unwrap(),
        vec![StoreOutcome::Replay]
    );
    // After the question in the same batch, and in a later one: on the question's lead.
    let question = chat_event(401, 2, "Avete scaffali?", None);
    let after = sticker(402, 3);
    let outcomes = store.store_batch(&[&question, &after]).await.unwrap();
    let lead_id = created(&outcomes[0]);
    assert_eq!(outcomes[1], StoreOutcome::Merged { lead_id });
    let later = sticker(403, 4);
    assert_eq!(
        store.store_batch(&[&later]).await.unwrap(),
        vec![StoreOutcome::Merged { lead_id }]
    );
    let lead = only_lead(&store).await;
    assert_eq!(lead.activities.len(), 3, "{:?}", lead.activities);
}

/// A recording callback of call `call_id`: no caller, no status, only the recording.
fn recording_event(call_id: &str) -> Envelope {
    let mut inquiry = call_event(
        call_id,
        0,
        "",
        json!({"recording_url": format!("https://api.twilio.com/recordings/RE-{call_id}")}),
    )
    .lead
    .inquiry;
    inquiry.id = InquiryId::from_external(Channel::Call, "phone-twilio", &format!("{call_id}:rec"));
    inquiry.contact.phone = None;
    let event = inquiry.event.as_mut().unwrap();
    event.data.remove("status");
    event.order = None;
    event.follow_up = true;
    envelope(inquiry)
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_follow_up_of_a_call_filed_before_the_call_is_on_its_activity_once_the_call_is(
    pool: PgPool,
) {
    let store = Store::from_pool(pool.clone());
    // In an earlier batch than the call's first status, and in the same batch before it.
    let early = recording_event("CA7");
    assert_eq!(
        store.store_batch(&[&early]).await.unwrap(),
        vec![StoreOutcome::Unmatched]
    );
    let completed = call_event("CA7", 2, "completed", json!({"duration_s": 47}));
    let lead_id = created(&store.store_batch(&[&completed]).await.unwrap()[0]);
    let same_batch = recording_event("CA8");
    let ringing = call_event("CA8", 0, "ringing", json!({}));
    let outcomes = store.store_batch(&[&same_batch, &ringing]).await.unwrap();
    assert_eq!(
        outcomes,
        vec![
            StoreOutcome::Merged { lead_id },
            StoreOutcome::Merged { lead_id }
        ],
        "the recording is on the call the batch filed after it; one caller, one lead"
    );

    let lead = only_lead(&store).await;
    assert_eq!(lead.activities.len(), 2, "{:?}", lead.activities);
    for call in &lead.activities {
        let id = call.data["call_id"].as_str().unwrap();
        assert_eq!(
            call.data["recording_url"],
            format!("https://api.twilio.com/recordings/RE-{id}"),
            "{id}"
        );
    }
    let seven = lead
        .activities
        .iter()
        .find(|a| a.data["call_id"] == "CA7")
        .unwrap();
    assert_eq!(seven.data["status"], "completed");
    assert_eq!(seven.data["duration_s"], 47);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM inquiries WHERE disposition = 'unmatched'"
        )
        .await,
        0,
        "both follow-ups are on the lead now"
    );
    // Redelivered, the recording is a replay and changes nothing.
    assert_eq!(
        store.store_batch(&[&early]).await.unwrap(),
        vec![StoreOutcome::Replay]
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_mail_without_a_subject_has_none_on_its_activity(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let mut inquiry = mail(
        "anna@studio.example.it",
        "<bare@studio.example.it>",
        &[],
        None,
    );
    inquiry.event.as_mut().unwrap().subject = None;
    let lead_id = support::created(&store.store_batch(&[&envelope(inquiry)]).await.unwrap()[0]);
    let lead = store
        .get_lead(&store::Scope::All, lead_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lead.activities.len(), 1);
    assert_eq!(lead.activities[0].subject, None, "{:?}", lead.activities[0]);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_thread_filed_out_of_order_belongs_to_whoever_started_it(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let mut root = mail(
        "anna@studio.example.it",
        "<root@studio.example.it>",
        &[],
        None,
    );
    root.contact.full_name = Some("Anna Conti".into());
    let mut reply = mail(
        "giulia@studio.example.it",
        "<reply@studio.example.it>",
        &["<root@studio.example.it>"],
        Some("02 8736 9999"),
    );
    reply.contact.full_name = Some("Giulia Sala".into());
    reply.received_at = root.received_at + chrono::Duration::seconds(1);
    // The colleague's reply reaches the store first (another shard), and opens the lead.
    let lead_id = created(&store.store_batch(&[&envelope(reply)]).await.unwrap()[0]);
    assert_eq!(
        store.store_batch(&[&envelope(root)]).await.unwrap(),
        vec![StoreOutcome::Merged { lead_id }]
    );
    let lead = only_lead(&store).await.lead;
    assert_eq!(
        (lead.name.as_deref(), lead.email.as_deref()),
        (Some("Anna Conti"), Some("anna@studio.example.it")),
        "the person who started the thread"
    );
    // What only the reply gave stays.
    assert_eq!(lead.phone.as_deref(), Some("+390287369999"));
    assert!(
        lead.keys
            .contains(&"email:giulia@studio.example.it".to_owned())
    );
}
