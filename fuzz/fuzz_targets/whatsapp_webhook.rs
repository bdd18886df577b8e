//! WhatsApp Cloud API webhook bodies: the `X-Hub-Signature-256` check, `walk` over every
//! entry and change, and the inquiry of every message found.
#![no_main]

use bytes::Bytes;
use ingest::http::signature::{sign, verify};
use ingest::whatsapp::{message_inquiry, payload::walk};
use leadpipe_fuzz::check_inquiry;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"app-secret";
const HEADER: &str = "x-hub-signature-256";

fuzz_target!(|data: &[u8]| {
    // Meta's signature over the exact bytes verifies; over any other bytes it does not.
    let signature = sign(SECRET, data);
    assert_eq!(verify(SECRET, HEADER, Some(&signature), data), Ok(()));
    let mut tampered = data.to_vec();
    tampered.push(b' ');
    assert!(verify(SECRET, HEADER, Some(&signature), &tampered).is_err());
    // Whatever arrives in the header is refused without a panic.
    let presented = String::from_utf8_lossy(data.get(..80).unwrap_or(data));
    let _ = verify(SECRET, HEADER, Some(&presented), data);

    let Ok(walked) = walk(data) else {
        return;
    };
    let raw = Bytes::copy_from_slice(data);
    for message in walked.messages {
        assert!(
            !message.wamid.is_empty() && !message.wa_id.is_empty(),
            "a message without its ids: {message:?}"
        );
        assert!(!message.phone_number_id.is_empty());
        if let Some(inquiry) = message_inquiry("whatsapp", message, &raw, None) {
            assert!(inquiry.source.starts_with("whatsapp"));
            check_inquiry(&inquiry);
        }
    }
});
