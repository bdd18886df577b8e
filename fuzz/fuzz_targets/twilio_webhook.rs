//! Twilio voice callbacks: the form-encoded body read by `parse_urlencoded`, the
//! `X-Twilio-Signature` check over the decoded parameters, and `callback::read`.
#![no_main]

use bytes::Bytes;
use ingest::http::body::parse_urlencoded;
use ingest::twilio::callback::{Line, Reading, read};
use ingest::twilio::signature::{sign, signed_url, verify};
use leadpipe_fuzz::{check_inquiry, received_at};
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "auth-token";
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_urlencoded(data) else {
        return;
    };
    let params: Vec<(String, String)> = parsed
        .fields
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                v.as_str()
                    .expect("urlencoded values are strings")
                    .to_owned(),
            )
        })
        .collect();

    // The signature of the parameters verifies for the URL it was made for, and not for
    // another URL; a presented header made of the input is refused without a panic.
    let url = signed_url(
        "https://leads.example.com/v1/intake/telephony/twilio/main?x=1",
        Some("a=b"),
    );
    assert_eq!(
        url,
        "https://leads.example.com/v1/intake/telephony/twilio/main?a=b"
    );
    let signature = sign(TOKEN, &url, &params);
    assert!(verify(TOKEN, &url, &params, &signature));
    assert!(!verify(
        TOKEN,
        "https://leads.example.com/other",
        &params,
        &signature
    ));
    if let Some((_, value)) = params.first() {
        assert!(!verify(TOKEN, &url, &params, value) || *value == signature);
    }

    let line = Line {
        name: "main",
        source: "twilio-main",
        default_region: Some("IT"),
    };
    let raw = Bytes::copy_from_slice(data);
    let reading = read(
        &line,
        &params,
        raw.clone(),
        Some(CONTENT_TYPE.into()),
        received_at(),
    );
    let again = read(
        &line,
        &params,
        raw,
        Some(CONTENT_TYPE.into()),
        received_at(),
    );
    match (reading, again) {
        (Ok(Reading::Call(a)), Ok(Reading::Call(b))) => {
            assert_eq!(a, b, "a retried callback must be the same inquiry");
            let event = a.event.as_ref().expect("a call callback is an event");
            assert!(!event.conversation.is_empty());
            check_inquiry(&a);
        }
        (
            Ok(Reading::NotALead { reason, inquiry }),
            Ok(Reading::NotALead {
                reason: r2,
                inquiry: i2,
            }),
        ) => {
            assert_eq!((reason, &inquiry), (r2, &i2));
            assert_eq!(inquiry.spam.as_deref(), Some(reason));
            check_inquiry(&inquiry);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("one callback read twice gave {a:?} and {b:?}"),
    }
});
