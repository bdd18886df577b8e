//! Telegram updates: one `Update` as the webhook receives it, or a `getUpdates` answer's
//! `result` array as the poller reads it, each update through `read_update`.
#![no_main]

use bytes::Bytes;
use ingest::telegram::update::{BotReading, StartPayloads, Update, Verdict, read_update};
use leadpipe_fuzz::{check_inquiry, received_at};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let bot = BotReading {
        name: "shop".into(),
        source: "telegram-shop".into(),
        default_region: Some("IT".into()),
    };
    let mut starts = StartPayloads::new();
    if let Ok(update) = serde_json::from_slice::<Update>(data) {
        read(&bot, &update, Bytes::copy_from_slice(data), &mut starts);
        return;
    }
    // The poller's path: the answer's `result`, one value at a time.
    let Ok(answer) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Some(Value::Array(updates)) = answer.get("result") else {
        return;
    };
    for value in updates {
        let raw = Bytes::from(serde_json::to_vec(value).expect("a value serializes"));
        if let Ok(update) = serde_json::from_value::<Update>(value.clone()) {
            read(&bot, &update, raw, &mut starts);
        }
    }
});

/// Reads one update twice from the same state: the verdict and any inquiry must be the
/// same both times (a redelivered update is a replay, never a second lead).
fn read(bot: &BotReading, update: &Update, raw: Bytes, starts: &mut StartPayloads) {
    let mut again = starts.clone();
    let first = read_update(bot, update, raw.clone(), starts, received_at());
    let second = read_update(bot, update, raw, &mut again, received_at());
    assert_eq!(
        starts, &again,
        "the deep-link state differs between two reads"
    );
    match (first, second) {
        (Verdict::Inquiry(a), Verdict::Inquiry(b)) => {
            assert_eq!(a, b, "one update read twice gave two inquiries");
            let event = a.event.as_ref().expect("a chat inquiry is an event");
            assert!(!event.conversation.is_empty(), "an event of no chat: {a:?}");
            // A message (not a button press) that can open a lead carries text or a
            // contact card; one without words only follows up, and names its media.
            if event
                .activity_key
                .as_deref()
                .is_some_and(|k| k.starts_with("message:"))
            {
                if event.follow_up {
                    assert!(
                        event.data.get("type").is_some_and(|t| t.is_string()),
                        "a follow-up without its media type: {a:?}"
                    );
                } else {
                    assert!(
                        a.message.as_deref().is_some_and(|m| !m.trim().is_empty()),
                        "a message inquiry without text: {a:?}"
                    );
                }
            }
            check_inquiry(&a);
        }
        (Verdict::Ignored(a), Verdict::Ignored(b)) => assert_eq!(a, b),
        (a, b) => panic!("one update read twice gave {a:?} and {b:?}"),
    }
}
