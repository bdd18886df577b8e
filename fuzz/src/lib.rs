//! Checks every fuzz target applies to what a parser accepted.
//!
//! The targets feed hostile bytes to the parsers the daemon runs; a parser may refuse
//! them with an error, never panic. What it accepts must also be usable further down:
//! an inquiry travels to the consumer as JSON, so it must read back as itself.

use chrono::{DateTime, TimeZone, Utc};
use ingest::Inquiry;

/// A fixed receive time: the same input must always give the same inquiry.
pub fn received_at() -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600, 0)
        .single()
        .expect("a fixed, valid Unix time")
}

/// Asserts what every accepted inquiry must hold: a source, an id that is not nil, and
/// a JSON form that reads back with the same identity, contact and text.
pub fn check_inquiry(inquiry: &Inquiry) {
    assert!(!inquiry.source.is_empty(), "an inquiry without a source");
    assert!(
        !inquiry.id.as_uuid().is_nil(),
        "an inquiry with the nil id: {inquiry:?}"
    );
    if let Some(event) = &inquiry.event {
        assert!(
            event.activity_key.as_deref().is_none_or(|k| !k.is_empty()),
            "an empty activity key: {event:?}"
        );
    }
    let json = serde_json::to_vec(inquiry).expect("an inquiry always serializes");
    let back: Inquiry = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "an accepted inquiry does not read back from its JSON: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(back.id, inquiry.id);
    assert_eq!(back.channel, inquiry.channel);
    assert_eq!(back.source, inquiry.source);
    assert_eq!(back.external_id, inquiry.external_id);
    assert_eq!(back.contact, inquiry.contact);
    assert_eq!(back.message, inquiry.message);
    assert_eq!(back.utm, inquiry.utm);
    assert_eq!(back.attachments, inquiry.attachments);
    assert_eq!(back.raw, inquiry.raw);
    assert_eq!(back.event.is_some(), inquiry.event.is_some());
    if let (Some(a), Some(b)) = (&back.event, &inquiry.event) {
        assert_eq!(a.conversation, b.conversation);
        assert_eq!(a.activity_key, b.activity_key);
        assert_eq!(a.order, b.order);
    }
}

/// Splits `data` at its first newline: a header line the target reads (a content type,
/// a region) and the bytes after it. Without a newline the whole input is the body.
pub fn split_first_line(data: &[u8]) -> (&str, &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(end) => (
            std::str::from_utf8(&data[..end]).unwrap_or_default(),
            &data[end + 1..],
        ),
        None => ("", data),
    }
}
