//! Raw RFC 5322 messages through `read_message`, the mailbox connector's one entry
//! point (mail-parser, legacy charsets, HTML to text, quoted replies, phone numbers in
//! the text, auto-reply and bounce rules), then the normalizer.
#![no_main]

use ingest::Channel;
use ingest::email::{MailVerdict, MailboxReading, read_message};
use leadpipe_fuzz::{check_inquiry, received_at};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reading = MailboxReading {
        mailbox: "vendite".into(),
        source: "mail-it".into(),
        default_region: Some("IT".into()),
        internal_domains: vec!["example.it".into()],
    };
    let verdict = read_message(data, &reading, received_at());
    let again = read_message(data, &reading, received_at());
    assert_eq!(verdict, again, "one message read twice gave two verdicts");

    let inquiry = verdict.inquiry();
    assert_eq!(inquiry.channel, Channel::Email);
    assert_eq!(inquiry.source, "mail-it");
    check_inquiry(inquiry);
    match &verdict {
        MailVerdict::Lead(inquiry) => {
            assert!(inquiry.spam.is_none(), "a lead marked as spam: {inquiry:?}");
        }
        // What `MailVerdict` promises of a non-lead: its reason in `spam`, no contact
        // data, nothing to thread it onto a lead by.
        MailVerdict::NotALead { reason, inquiry } => {
            assert_eq!(inquiry.spam.as_deref(), Some(reason.as_str()));
            let contact = &inquiry.contact;
            assert!(
                contact.email.is_none()
                    && contact.phone.is_none()
                    && contact.full_name.is_none()
                    && contact.first_name.is_none()
                    && contact.last_name.is_none()
                    && contact.company.is_none(),
                "a non-lead with contact data: {inquiry:?}"
            );
            if let Some(event) = &inquiry.event {
                assert!(
                    event.conversation.is_empty() && event.activity_key.is_none(),
                    "a non-lead that can be threaded: {event:?}"
                );
            }
        }
    }
    let _ = normalizer::normalize(verdict.into_inquiry());
});
