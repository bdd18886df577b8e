//! Web-form bodies: the first line is the declared `Content-Type`, the rest the body.
//! Everything the forms endpoint does with a body it read runs here: the signature
//! check, `parse_body`, the content hash, the mapping of fields to contact data, and
//! the normalizer over the resulting inquiry.
#![no_main]

use bytes::Bytes;
use ingest::http::body::{ParsedBody, parse_body, parse_urlencoded};
use ingest::http::signature::{Presented, SignatureRule, TimestampPolicy, sign_at, verify_request};
use ingest::{Channel, Inquiry, InquiryId, RawPayload, fields::map_fields};
use leadpipe_fuzz::{check_inquiry, received_at, split_first_line};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"form-secret";

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = split_first_line(data);
    check_signatures(content_type, body);

    let content_type = Some(content_type).filter(|c| !c.is_empty());
    let Ok(parsed) = parse_body(content_type, body) else {
        return;
    };
    let content = parsed.content_hash();
    assert_eq!(
        content,
        parsed.clone().content_hash(),
        "the hash is not stable"
    );
    if content_type.is_some_and(|c| c.contains("urlencoded")) {
        urlencoded_round_trip(&parsed);
    }
    if content_type.is_some_and(|c| c.contains("json")) {
        json_round_trip(&parsed);
    }

    let attachments = parsed.attachments.clone();
    let mapped = map_fields(parsed.fields, Some("website"));
    let inquiry = Inquiry {
        id: InquiryId::from_keyed_content(Channel::Form, "it-contatti", "key", &content),
        channel: Channel::Form,
        source: "it-contatti".into(),
        external_id: Some("key".into()),
        received_at: received_at(),
        default_region: Some("IT".into()),
        contact: mapped.contact,
        message: mapped.message,
        utm: mapped.utm,
        fields: mapped.fields,
        attachments,
        spam: mapped.honeypot_filled.then(|| "honeypot".into()),
        dedup: None,
        raw: RawPayload {
            content_type: content_type.map(str::to_owned),
            body: Bytes::copy_from_slice(body),
        },
        event: None,
    };
    check_inquiry(&inquiry);
    let _ = normalizer::normalize(inquiry);
});

/// A body signed with the secret verifies, at its time and inside the window; any other
/// presented header (here the first line of the input) is refused without a panic
/// unless it happens to be that signature.
fn check_signatures(header: &str, body: &[u8]) {
    let rule = SignatureRule {
        header: "x-leadpipe-signature",
        timestamp: TimestampPolicy::Required,
        tolerance_secs: 300,
    };
    let now = 1_767_225_600;
    let good = sign_at(SECRET, now, body);
    let presented = |signature, timestamp| Presented {
        signature: Some(signature),
        timestamp: Some(timestamp),
    };
    assert_eq!(
        verify_request(SECRET, &rule, presented(&good, "1767225600"), now, body),
        Ok(Some(now))
    );
    assert!(verify_request(b"other", &rule, presented(&good, "1767225600"), now, body).is_err());
    let result = verify_request(SECRET, &rule, presented(header, "1767225600"), now, body);
    if result.is_ok() {
        let hex = header.trim();
        let hex = hex
            .strip_prefix("sha256=")
            .or_else(|| hex.strip_prefix("SHA256="))
            .unwrap_or(hex);
        assert_eq!(
            hex.to_ascii_lowercase(),
            good["sha256=".len()..],
            "a wrong signature verified"
        );
    }
}

/// The fields percent-encoded again read back as the same fields.
fn urlencoded_round_trip(parsed: &ParsedBody) {
    let mut encoded = Vec::new();
    for (i, (name, value)) in parsed.fields.iter().enumerate() {
        if i > 0 {
            encoded.push(b'&');
        }
        percent_encode(name.as_bytes(), &mut encoded);
        encoded.push(b'=');
        percent_encode(
            value
                .as_str()
                .expect("urlencoded values are strings")
                .as_bytes(),
            &mut encoded,
        );
    }
    let again = parse_urlencoded(&encoded).expect("re-encoded fields read again");
    assert_eq!(again.fields, parsed.fields);
    assert_eq!(again.content_hash(), parsed.content_hash());
}

fn percent_encode(bytes: &[u8], out: &mut Vec<u8>) {
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
            out.push(*b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

/// The fields written again as compact JSON (repeated names repeated) read back as the
/// same fields with the same content hash: a retry with other whitespace is the same post.
fn json_round_trip(parsed: &ParsedBody) {
    let mut json = String::from("{");
    for (i, (name, value)) in parsed.fields.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&serde_json::to_string(name).expect("a string serializes"));
        json.push(':');
        json.push_str(&serde_json::to_string(value).expect("a value serializes"));
    }
    json.push('}');
    let again = parse_body(Some("application/json"), json.as_bytes())
        .unwrap_or_else(|e| panic!("re-encoded JSON does not read again: {e}\n{json}"));
    assert_eq!(again.fields.len(), parsed.fields.len());
    let names = |p: &ParsedBody| p.fields.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&again), names(parsed));
}
