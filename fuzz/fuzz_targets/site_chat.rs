//! Generic signed JSON events (site chat, call centres): the timestamped signature
//! check, the JSON body through `parse_body`, the schema through `schema::read`, and the
//! inquiry of every event the schema accepts.
#![no_main]

use bytes::Bytes;
use ingest::events::{EventSourceConfig, inquiry, schema};
use ingest::http::body::parse_body;
use ingest::http::signature::{Presented, SignatureRule, TimestampPolicy, sign_at, verify_request};
use leadpipe_fuzz::check_inquiry;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"sitechat-secret";

fuzz_target!(|data: &[u8]| {
    let rule = SignatureRule {
        header: "x-leadpipe-signature",
        timestamp: TimestampPolicy::Required,
        tolerance_secs: 300,
    };
    let now = 1_767_225_600;
    let signature = sign_at(SECRET, now - 299, data);
    let presented = Presented {
        signature: Some(&signature),
        timestamp: Some("1767225301"),
    };
    assert_eq!(
        verify_request(SECRET, &rule, presented, now, data),
        Ok(Some(now - 299))
    );
    assert!(verify_request(SECRET, &rule, presented, now + 2, data).is_err());

    let content_type = "application/json";
    let Ok(parsed) = parse_body(Some(content_type), data) else {
        return;
    };
    let Ok(event) = schema::read(parsed.fields) else {
        return;
    };
    assert!(!event.event_id.is_empty() && !event.conversation_id.is_empty());
    let config: EventSourceConfig = serde_json::from_value(serde_json::json!({
        "name": "sitechat",
        "default_region": "IT",
    }))
    .expect("a minimal event source reads");
    // Every event the schema accepts names a conversation: no 422 after the schema.
    let inquiry = inquiry(
        &config,
        event,
        Bytes::copy_from_slice(data),
        Some(content_type.into()),
    )
    .unwrap_or_else(|p| panic!("an event the schema accepted was refused: {p:?}"));
    check_inquiry(&inquiry);
    let _ = normalizer::normalize(inquiry);
});
