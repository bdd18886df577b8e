//! Table tests from the form corpora: every accepted case's body, parsed and mapped as
//! intake does, normalises to the expected email, phone, extension, name and company.
//! Runs on the project's own fixtures always, and on the shared corpus where it exists.

use std::path::Path;

use ingest::forms::{body::parse_body, fields::map_fields};
use ingest::{Channel, Inquiry, InquiryId, RawPayload};
use serde_json::Value;

fn region_of(form: &str) -> &'static str {
    match form.split('-').next() {
        Some("it") => "IT",
        Some("pl") => "PL",
        Some("vn") => "VN",
        _ => "US",
    }
}

fn body_of(case: &Value) -> Vec<u8> {
    match &case["body"] {
        Value::String(s) => s.clone().into_bytes(),
        Value::Object(o) => {
            let part = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let times = o.get("times").and_then(Value::as_u64).unwrap_or(0) as usize;
            format!(
                "{}{}{}",
                part("prefix"),
                part("repeat").repeat(times),
                part("suffix")
            )
            .into_bytes()
        }
        _ => Vec::new(),
    }
}

fn check_file(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).expect("read the cases");
    let mut problems = Vec::new();
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).expect("a JSON case");
        let expect = &case["expect"];
        if expect["status"] != 202 {
            continue;
        }
        let id = case["id"].as_str().unwrap_or("?");
        let form = case["form"].as_str().unwrap_or("");
        let body = body_of(&case);
        let parsed = match parse_body(case["content_type"].as_str(), &body) {
            Ok(parsed) => parsed,
            Err(e) => {
                problems.push(format!("{id}: body refused: {e}"));
                continue;
            }
        };
        let mapped = map_fields(parsed.fields, Some("website"));
        let lead = normalizer::normalize(Inquiry {
            id: InquiryId::new_unique(),
            channel: Channel::Form,
            source: form.into(),
            external_id: None,
            received_at: chrono::Utc::now(),
            default_region: Some(region_of(form).into()),
            contact: mapped.contact,
            message: mapped.message,
            utm: mapped.utm,
            fields: mapped.fields,
            attachments: parsed.attachments,
            spam: None,
            dedup: None,
            raw: RawPayload {
                content_type: None,
                body: body.into(),
            },
            event: None,
        });
        let got = [
            ("email", lead.email.as_ref().map(|e| e.as_str().to_owned())),
            (
                "phone_e164",
                lead.phone.as_ref().map(|p| p.as_str().to_owned()),
            ),
            ("phone_extension", lead.phone_extension.clone()),
            ("name", lead.name.clone()),
            ("company", lead.company.clone()),
            ("message", lead.message.clone()),
        ];
        for (key, value) in got {
            if let Some(want) = expect.get(key) {
                let value = value.map(Value::String).unwrap_or(Value::Null);
                if &value != want {
                    problems.push(format!("{id}: {key} = {value}, want {want}"));
                }
            }
        }
        checked += 1;
    }
    assert!(
        problems.is_empty(),
        "{} problems in {}:\n{}",
        problems.len(),
        path.display(),
        problems.join("\n")
    );
    checked
}

#[test]
fn our_form_fixtures_normalise_as_expected() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/forms/cases.jsonl");
    assert!(check_file(&path) >= 30);
}

#[test]
fn the_shared_form_corpus_normalises_as_expected() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/forms/cases.jsonl");
    if !path.exists() {
        eprintln!(
            "skipped: {} not found (the shared corpus sits beside the repository in CI)",
            path.display()
        );
        return;
    }
    assert!(check_file(&path) >= 20);
}
