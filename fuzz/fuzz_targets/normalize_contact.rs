//! Contact data as a person typed it, one value a line: region, full name, first name,
//! last name, email, phone, company, message. Each goes through its normalizer
//! (`EmailAddress::parse`, `parse_phone`, `clean_text`, `join_name`) and the whole
//! through `normalize`, as every channel's inquiry does.
#![no_main]

use bytes::Bytes;
use ingest::{Channel, ContactHints, Inquiry, InquiryId, RawPayload};
use leadpipe_fuzz::{check_inquiry, received_at};
use libfuzzer_sys::fuzz_target;
use normalizer::{EmailAddress, Region, clean_text, join_name, normalize, parse_phone};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut next = || lines.next().filter(|l| !l.is_empty()).map(str::to_owned);
    let (region, full, first, last, email, phone, company, message) = (
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
    );

    for value in [&full, &first, &last, &company, &message]
        .into_iter()
        .flatten()
    {
        if let Some(clean) = clean_text(value) {
            assert_eq!(clean.trim(), clean, "clean text with surrounding space");
            assert_eq!(
                clean_text(&clean).as_deref(),
                Some(clean.as_str()),
                "cleaning twice changed it"
            );
        }
    }
    if let Some(name) = join_name(full.as_deref(), first.as_deref(), last.as_deref()) {
        assert!(
            !name.is_empty() && name.trim() == name,
            "a name with surrounding space: {name:?}"
        );
    }

    let email_parsed = email.as_deref().map(EmailAddress::parse);
    if let Some(Ok(address)) = &email_parsed {
        let again = EmailAddress::parse(address.as_str()).unwrap_or_else(|e| {
            panic!("a normalised address {address:?} does not read again: {e}")
        });
        assert_eq!(&again, address, "normalising twice changed the address");
        assert_eq!(
            address.local_part().len() + 1 + address.domain().len(),
            address.as_str().len()
        );
    }

    let region_parsed = region.as_deref().and_then(|r| Region::parse(r).ok());
    if let Some(raw) = &phone {
        if let Ok(parsed) = parse_phone(raw, region_parsed) {
            let e164 = parsed.number.as_str();
            assert!(e164.starts_with('+') && e164[1..].bytes().all(|b| b.is_ascii_digit()));
            assert!((8..=16).contains(&e164.len()), "not E.164: {e164}");
            let again = parse_phone(e164, None).unwrap_or_else(|e| {
                panic!("the E.164 form {e164} of {raw:?} does not read again: {e}")
            });
            assert_eq!(again.number, parsed.number);
            assert_eq!(again.extension, None);
            let same = parse_phone(e164, region_parsed).expect("E.164 reads in any region");
            assert_eq!(same.number, parsed.number);
        }
    }

    let inquiry = Inquiry {
        id: InquiryId::from_external(Channel::Form, "it-contatti", &text),
        channel: Channel::Form,
        source: "it-contatti".into(),
        external_id: None,
        received_at: received_at(),
        default_region: region.clone(),
        contact: ContactHints {
            full_name: full,
            first_name: first,
            last_name: last,
            email: email.clone(),
            phone,
            company,
            messenger: None,
        },
        message,
        utm: Default::default(),
        fields: Default::default(),
        attachments: Vec::new(),
        spam: None,
        dedup: None,
        raw: RawPayload {
            content_type: None,
            body: Bytes::copy_from_slice(data),
        },
        event: None,
    };
    check_inquiry(&inquiry);
    let lead = normalize(inquiry);
    // The lead's address is the one the email normalizer gives for what was typed.
    match (&lead.email, email_parsed) {
        (Some(kept), Some(Ok(parsed))) => assert_eq!(kept, &parsed),
        (Some(kept), _) => panic!("a lead address {kept:?} the normalizer refuses"),
        _ => {}
    }
    if let Some(name) = &lead.name {
        assert!(!name.is_empty() && name.trim() == name);
    }
    let json = serde_json::to_vec(&lead).expect("a lead serializes");
    let back: normalizer::Lead = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("a lead does not read back from its JSON: {e}"));
    assert_eq!(back.email, lead.email);
    assert_eq!(back.phone, lead.phone);
    assert_eq!(back.identity_keys, lead.identity_keys);
});
