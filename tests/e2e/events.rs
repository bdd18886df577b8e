//! Generic events against the real daemon: every case of
//! `tests/fixtures/chat/events/cases.jsonl` posted in order, then the leads and
//! activities they must have made (a call updated in place, a replay, refusals naming
//! their fields, signatures).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Options, Response, TestDaemon};

const CONFIG: &str = "[[event_sources]]\nname = \"sitechat\"\nsecret = \"site-chat-secret\"\ndefault_region = \"IT\"\n\n\
[[event_sources]]\nname = \"callcentre\"\nsecret = \"call-centre-secret\"\ndefault_region = \"PL\"\nsignature_timestamp = \"required\"\n\n";

fn secret(source: &str) -> &'static [u8] {
    match source {
        "sitechat" => b"site-chat-secret",
        _ => b"call-centre-secret",
    }
}

fn cases() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/events/cases.jsonl");
    let mut cases: Vec<Value> = std::fs::read_to_string(path)
        .expect("cases.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a case"))
        .collect();
    // A replay's body is its original's.
    for i in 0..cases.len() {
        if let Some(other) = cases[i]["same_body_as"].as_str() {
            let body = cases
                .iter()
                .find(|c| c["id"] == other)
                .expect("the original")["body"]
                .clone();
            cases[i]["body"] = body;
        }
    }
    cases
}

async fn post(daemon: &TestDaemon, case: &Value, body: &[u8]) -> Response {
    let source = case["source"].as_str().unwrap();
    let mut request = daemon
        .http
        .post(format!("{}/v1/intake/events/{source}", daemon.base))
        .header(
            "content-type",
            case["content_type"].as_str().unwrap_or("application/json"),
        )
        .body(body.to_vec());
    let now = chrono::Utc::now().timestamp();
    use ingest::http::signature::{sign, sign_at};
    request = match case["sign"].as_str().unwrap() {
        "timestamp" => request
            .header("x-leadpipe-timestamp", now.to_string())
            .header("x-leadpipe-signature", sign_at(secret(source), now, body)),
        "body" => request.header("x-leadpipe-signature", sign(secret(source), body)),
        "wrong" => request.header("x-leadpipe-signature", sign(b"not-the-secret", body)),
        _ => request,
    };
    Response::read(request.send().await.expect("the daemon answers")).await
}

/// The activities a case's event created or updated: by its event id for a message, by
/// its call's id for a call.
fn activities_of<'a>(case: &Value, all: &'a [(Value, Vec<Value>)]) -> Vec<(&'a Value, &'a Value)> {
    let body = &case["body"];
    let call = body["type"] == "call";
    all.iter()
        .flat_map(|(lead, acts)| acts.iter().map(move |a| (lead, a)))
        .filter(|(_, a)| {
            if call {
                a["data"]["call_id"] == body["conversation_id"]
            } else {
                a["data"]["event_id"] == body["event_id"] && a["kind"] == "message"
            }
        })
        .collect()
}

/// Whether every field of `want` is in `got` with that value (objects compared the same
/// way, recursively).
fn holds(got: &Value, want: &Value) -> bool {
    match want {
        Value::Object(fields) => fields.iter().all(|(k, v)| holds(&got[k], v)),
        _ => got == want,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_case_answers_and_files_as_expected() {
    let daemon = TestDaemon::start_with(Options {
        extra_config: CONFIG.into(),
        ..Options::default()
    })
    .await;
    let cases = cases();
    let mut bodies: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut stored = 0;
    let mut bad = Vec::new();
    for case in &cases {
        let id = case["id"].as_str().unwrap();
        let body = match (&case["same_body_as"], &case["body"]) {
            (Value::String(other), _) => bodies[other].clone(),
            (_, Value::String(text)) => text.as_bytes().to_vec(),
            (_, object) => serde_json::to_vec(object).unwrap(),
        };
        bodies.insert(id.to_owned(), body.clone());
        let expect = &case["expect"];
        let r = post(&daemon, case, &body).await;
        let status = i64::from(r.status);
        if status != expect["status"].as_i64().unwrap() {
            bad.push(format!("{id}: answered {status}: {}", r.text()));
            continue;
        }
        if status >= 400 {
            let json = r.json();
            if json["error"] != expect["error"] {
                bad.push(format!(
                    "{id}: error {}, want {}",
                    json["error"], expect["error"]
                ));
            }
            for field in expect["fields"].as_array().into_iter().flatten() {
                let named = json["fields"]
                    .as_array()
                    .is_some_and(|fs| fs.iter().any(|f| &f["field"] == field));
                if !named {
                    bad.push(format!(
                        "{id}: the answer does not name {field}: {}",
                        r.text()
                    ));
                }
            }
            continue;
        }
        if expect.get("replay_of").is_none() {
            stored += 1;
        }
        // Each event is filed before the next is sent, so the order of the cases is the
        // order of filing.
        let got = daemon
            .wait_for_inquiries(stored, Duration::from_secs(20))
            .await;
        if got != stored {
            bad.push(format!("{id}: {got} inquiries stored, want {stored}"));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    if daemon
        .wait_for_inquiries(stored + 1, Duration::from_millis(10))
        .await
        != stored
    {
        bad.push(
            "more inquiries stored than accepted events (a replay or a refusal was filed)".into(),
        );
    }
    let mut all = Vec::new();
    for lead in daemon.leads("").await {
        let detail = daemon
            .get(&format!("/v1/leads/{}", lead["id"]))
            .await
            .json();
        all.push((
            lead,
            detail["activities"].as_array().cloned().unwrap_or_default(),
        ));
    }
    let creators = cases
        .iter()
        .filter(|c| c["expect"]["creates_lead"] == true)
        .count();
    if all.len() != creators {
        bad.push(format!("{} leads, want {creators}", all.len()));
    }
    let lead_of = |case: &Value| {
        activities_of(case, &all)
            .first()
            .map(|(l, _)| l["id"].clone())
    };
    let by_id: BTreeMap<&str, &Value> = cases
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c))
        .collect();
    for case in cases.iter().filter(|c| c["expect"]["status"] == 202) {
        let id = case["id"].as_str().unwrap();
        let expect = &case["expect"];
        let found = activities_of(case, &all);
        if found.len() != 1 {
            bad.push(format!(
                "{id}: {} activities for its event, want 1",
                found.len()
            ));
            continue;
        }
        let (lead, activity) = found[0];
        if let Some(want) = expect.get("lead") {
            for (field, value) in want.as_object().unwrap() {
                let ok = match (field.as_str(), value) {
                    ("keys" | "tags", Value::Array(items)) => items.iter().all(|i| {
                        lead[field.as_str()]
                            .as_array()
                            .is_some_and(|have| have.contains(i))
                    }),
                    _ => &lead[field.as_str()] == value,
                };
                if !ok {
                    bad.push(format!(
                        "{id}: lead {field} {}, want {value}",
                        lead[field.as_str()]
                    ));
                }
            }
        }
        if let Some(other) = expect["joins"].as_str().or(expect["replay_of"].as_str())
            && lead_of(by_id[other]) != Some(lead["id"].clone())
        {
            bad.push(format!("{id}: not on the lead of {other}"));
        }
        if let Some(want) = expect.get("activity")
            && !holds(activity, want)
        {
            bad.push(format!("{id}: activity {activity}, want {want}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
