//! Every forms case, ours and the shared corpus's, through the real path.
//!
//! The rules are the corpus README's: each case's status, and for accepted ones the lead
//! it creates (or not), with normalised email, phone, name, company, UTM source, exact
//! message and extension. Duplicates and spam make no lead; every lead has the history
//! row of its first stage.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Options, TestDaemon};

struct Case {
    id: String,
    form: String,
    content_type: Option<String>,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    expect: Value,
}

fn load(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).expect("read the cases");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let c: Value = serde_json::from_str(line).expect("a JSON case");
            let body = match &c["body"] {
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
                other => panic!("unexpected body {other}"),
            };
            let headers = c["headers"]
                .as_object()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            Case {
                id: c["id"].as_str().expect("an id").to_owned(),
                form: c["form"].as_str().expect("a form").to_owned(),
                content_type: c["content_type"].as_str().map(str::to_owned),
                body,
                headers,
                expect: c["expect"].clone(),
            }
        })
        .collect()
}

fn creates_lead(c: &Case) -> bool {
    let e = &c.expect;
    e["status"] == 202
        && e["creates_lead"].as_bool().unwrap_or(true)
        && e["duplicate_of"].is_null()
        && !e["spam"].as_bool().unwrap_or(false)
}

/// The leads a case's expectation identifies (by email, else by phone).
fn matching<'a>(leads: &'a [Value], e: &Value) -> Vec<&'a Value> {
    if let Some(email) = e["email"].as_str() {
        leads.iter().filter(|l| l["email"] == email).collect()
    } else if let Some(phone) = e["phone_e164"].as_str() {
        leads.iter().filter(|l| l["phone"] == phone).collect()
    } else {
        Vec::new()
    }
}

async fn run_cases(path: &Path) {
    let cases = load(path);
    assert!(!cases.is_empty(), "no cases in {}", path.display());
    let forms: BTreeSet<String> = cases.iter().map(|c| c.form.clone()).collect();
    let daemon = TestDaemon::start_with(Options {
        forms,
        ..Options::default()
    })
    .await;

    let mut problems = Vec::new();
    for c in &cases {
        let headers: Vec<(&str, &str)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = daemon
            .post_form(&c.form, c.content_type.as_deref(), c.body.clone(), &headers)
            .await;
        let want = c.expect["status"].as_u64().unwrap_or(0) as u16;
        let html = c
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("accept") && v.contains("text/html"));
        if r.status != want {
            problems.push(format!(
                "{}: answered {}, want {want}: {}",
                c.id,
                r.status,
                r.text()
            ));
            continue;
        }
        if want >= 400 {
            let json: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            if !json["error"].is_string() || !json["message"].is_string() {
                problems.push(format!(
                    "{}: error body is not {{error, message}}: {}",
                    c.id,
                    r.text()
                ));
            }
        } else if html {
            let ct = r
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ct.starts_with("text/html") {
                problems.push(format!(
                    "{}: an HTML post got {ct}, want a thank-you page",
                    c.id
                ));
            }
        } else if r.json()["status"] != "accepted" || !r.json()["inquiry_id"].is_string() {
            problems.push(format!(
                "{}: 202 body lacks inquiry_id/status: {}",
                c.id,
                r.text()
            ));
        }
    }

    let want_leads: Vec<&Case> = cases.iter().filter(|c| creates_lead(c)).collect();
    let accepted = cases.iter().filter(|c| c.expect["status"] == 202).count() as i64;
    daemon
        .wait_for_inquiries(accepted, Duration::from_secs(60))
        .await;
    let leads = daemon
        .wait_for_leads("", want_leads.len(), Duration::from_secs(60))
        .await;

    for c in &want_leads {
        let e = &c.expect;
        let found = matching(&leads, e);
        if found.len() != 1 {
            problems.push(format!("{}: {} leads match, want 1", c.id, found.len()));
            continue;
        }
        let lead = found[0];
        for (exp_key, lead_key) in [
            ("email", "email"),
            ("phone_e164", "phone"),
            ("name", "name"),
            ("company", "company"),
            ("phone_extension", "phone_extension"),
            ("message", "message"),
        ] {
            // A key the case does not state is not checked; a stated null must be null.
            if let Some(want) = e.get(exp_key)
                && lead[lead_key] != *want
            {
                problems.push(format!(
                    "{}: {lead_key} = {}, want {want}",
                    c.id, lead[lead_key]
                ));
            }
        }
        if let Some(want) = e.get("utm_source")
            && lead["utm"]["utm_source"] != *want
        {
            problems.push(format!(
                "{}: utm_source = {}, want {want}",
                c.id, lead["utm"]["utm_source"]
            ));
        }
        if lead["stage"]["code"] != "open" || lead["channel"] != "form" {
            problems.push(format!(
                "{}: stage/channel {} {}",
                c.id, lead["stage"], lead["channel"]
            ));
        }
    }

    // Spam and duplicates make no lead of their own.
    for c in cases
        .iter()
        .filter(|c| c.expect["status"] == 202 && !creates_lead(c))
    {
        let found = matching(&leads, &c.expect);
        let original_exists = c.expect["duplicate_of"].is_string();
        let allowed = usize::from(original_exists);
        if found.len() > allowed {
            problems.push(format!("{}: {} leads, want {allowed}", c.id, found.len()));
        }
    }
    if leads.len() != want_leads.len() {
        problems.push(format!(
            "{} leads stored, want {}",
            leads.len(),
            want_leads.len()
        ));
    }

    // Every lead entered its first stage on record, and its inquiry is its first activity.
    let pool = daemon.db().await;
    let without_history: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM leads l WHERE NOT EXISTS
           (SELECT 1 FROM lead_stage_history h WHERE h.lead_id = l.id AND h.from_stage_id IS NULL)",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    if without_history != 0 {
        problems.push(format!(
            "{without_history} leads without a stage history row"
        ));
    }
    let spam_cases = cases
        .iter()
        .filter(|c| c.expect["spam"].as_bool().unwrap_or(false))
        .count() as i64;
    let spam_kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inquiries WHERE disposition = 'spam'")
            .fetch_one(&pool)
            .await
            .expect("count");
    if spam_kept != spam_cases {
        problems.push(format!(
            "{spam_kept} spam inquiries kept, want {spam_cases}"
        ));
    }
    // The raw payload is kept byte for byte.
    let raw_mismatch: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inquiries i JOIN leads l ON l.inquiry_id = i.id WHERE length(i.raw_body) = 0",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    if raw_mismatch != 0 {
        problems.push(format!("{raw_mismatch} leads whose raw payload is empty"));
    }
    pool.close().await;

    let by_id: HashMap<&str, &Case> = cases.iter().map(|c| (c.id.as_str(), c)).collect();
    assert!(by_id.len() == cases.len(), "case ids must be unique");
    assert!(
        problems.is_empty(),
        "{} problems over {} cases from {}:\n{}\n--- daemon log ---\n{}",
        problems.len(),
        cases.len(),
        path.display(),
        problems.join("\n"),
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_of_our_own_form_fixtures_is_answered_and_filed_as_expected() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/forms/cases.jsonl");
    run_cases(&path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_of_the_shared_forms_corpus_is_answered_and_filed_as_expected() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/forms/cases.jsonl");
    if !path.exists() {
        eprintln!(
            "skipped: {} not found (the shared corpus sits beside the repository in CI)",
            path.display()
        );
        return;
    }
    run_cases(&path).await;
}
