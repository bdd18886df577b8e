//! The WhatsApp webhook against the real daemon: every body of our fixtures and of the
//! shared corpus (where present) with its expectations, the verification handshake,
//! signatures, redelivery, and a broker that cannot confirm.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Options, Response, TestDaemon, check_config};

const PATH: &str = "/v1/intake/chat/whatsapp";
const APP_SECRET: &str = "test-app-secret";
const CONFIG: &str = "[whatsapp]\napp_secret = \"test-app-secret\"\nverify_token = \"verify-me\"\nsource = \"whatsapp\"\n\n";

async fn daemon() -> TestDaemon {
    TestDaemon::start_with(Options {
        extra_config: CONFIG.into(),
        ..Options::default()
    })
    .await
}

async fn post(daemon: &TestDaemon, body: &[u8], signature: Option<&str>) -> Response {
    let mut request = daemon
        .http
        .post(format!("{}{PATH}", daemon.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        request = request.header("x-hub-signature-256", sig);
    }
    let response = request.send().await.expect("the daemon answers");
    Response::read(response).await
}

fn sign(body: &[u8]) -> String {
    ingest::http::signature::sign(APP_SECRET.as_bytes(), body)
}

/// Every folder with WhatsApp bodies and expectations: ours, the shared corpus, and
/// `<dir>/chat/whatsapp` of every folder in `LEADPIPE_CORPORA`.
fn folders() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![root.join("tests/fixtures/chat/whatsapp")];
    let shared = root.join("../shared/corpus/chat/whatsapp");
    if shared.join("expect.jsonl").exists() {
        out.push(shared);
    } else {
        eprintln!(
            "skipping the shared WhatsApp corpus: {} is not there",
            shared.display()
        );
    }
    // Other corpora of the same layout, as the mail corpus test reads them.
    for dir in std::env::var("LEADPIPE_CORPORA")
        .unwrap_or_default()
        .split(':')
    {
        let folder = Path::new(dir).join("chat/whatsapp");
        if !dir.is_empty() && folder.join("expect.jsonl").exists() {
            out.push(folder);
        }
    }
    out
}

/// (wamid, sender, reply id, referral) of every message of a body; every number it
/// names; every status id.
type Parts = (
    Vec<(String, String, Option<String>, Option<Value>)>,
    BTreeSet<String>,
    BTreeSet<String>,
);

fn parts(raw: &[u8]) -> Parts {
    let (mut messages, mut numbers, mut statuses) = (Vec::new(), BTreeSet::new(), BTreeSet::new());
    let doc: Value = serde_json::from_slice(raw).expect("fixture bodies are JSON");
    let text = |v: &Value| v.as_str().map(str::to_owned);
    // A relay may prefix the sender's digits with `+`; the sender is the digits.
    let number = |v: &Value| v.as_str().map(|n| n.trim_start_matches('+').to_owned());
    for entry in doc["entry"].as_array().into_iter().flatten() {
        for change in entry["changes"].as_array().into_iter().flatten() {
            let v = &change["value"];
            for c in v["contacts"].as_array().into_iter().flatten() {
                numbers.extend(number(&c["wa_id"]));
            }
            for s in v["statuses"].as_array().into_iter().flatten() {
                numbers.extend(number(&s["recipient_id"]));
                statuses.extend(text(&s["id"]));
            }
            for m in v["messages"].as_array().into_iter().flatten() {
                let inter = &m["interactive"];
                let reply = inter["type"]
                    .as_str()
                    .and_then(|t| text(&inter[t]["id"]))
                    .or_else(|| text(&m["button"]["payload"]));
                let referral = m.get("referral").cloned();
                let from = number(&m["from"]).unwrap_or_default();
                numbers.insert(from.clone());
                messages.push((text(&m["id"]).unwrap_or_default(), from, reply, referral));
            }
        }
    }
    (messages, numbers, statuses)
}

/// Every lead with its activities.
async fn leads_with_activities(daemon: &TestDaemon) -> Vec<(Value, Vec<Value>)> {
    let mut out = Vec::new();
    for lead in daemon.leads("").await {
        let detail = daemon
            .get(&format!("/v1/leads/{}", lead["id"]))
            .await
            .json();
        let activities = detail["activities"].as_array().cloned().unwrap_or_default();
        out.push((lead, activities));
    }
    out
}

async fn check_folder(folder: &Path) -> Vec<String> {
    let name = folder.display().to_string();
    let lines: Vec<Value> = std::fs::read_to_string(folder.join("expect.jsonl"))
        .expect("expect.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an expectation line"))
        .collect();
    let daemon = daemon().await;
    let mut bad = Vec::new();
    let mut raws = BTreeMap::new();
    for e in &lines {
        let file = e["file"].as_str().unwrap();
        let raw = std::fs::read(folder.join(file)).expect("a fixture body");
        let header = e["x_hub_signature_256_sent"]
            .as_str()
            .or(e["x_hub_signature_256"].as_str())
            .unwrap();
        if e["x_hub_signature_256"].as_str() != Some(sign(&raw).as_str()) {
            bad.push(format!("{file}: x_hub_signature_256 is not this body's"));
        }
        let r = post(&daemon, &raw, Some(header)).await;
        if i64::from(r.status) != e["expect_status"].as_i64().unwrap() {
            bad.push(format!(
                "{file}: answered {}, want {}: {}",
                r.status,
                e["expect_status"],
                r.text()
            ));
        }
        raws.insert(file.to_owned(), raw);
    }
    let ok = |e: &&Value| e["expect_status"] == 200;
    let mut wanted = BTreeMap::new(); // wamid -> (sender, reply, referral, line, messages in its file)
    let mut named = BTreeMap::new();
    let mut status_ids = BTreeSet::new();
    for e in &lines {
        let (messages, numbers, statuses) = parts(&raws[e["file"].as_str().unwrap()]);
        let count = messages.len();
        for (wamid, from, reply, referral) in messages {
            if ok(&e) && e.get("duplicate_of").is_none_or(Value::is_null) {
                wanted.insert(wamid, (from, reply, referral, e.clone(), count));
            }
        }
        for n in numbers {
            named.entry(n).or_insert_with(|| e["file"].clone());
        }
        status_ids.extend(statuses);
    }
    let made: BTreeMap<String, (Value, Value)> = lines
        .iter()
        .filter(ok)
        .flat_map(|e| {
            e["leads"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|l| (l["wa_id"].as_str().unwrap().to_owned(), (e.clone(), l)))
        })
        .collect();
    let stored = daemon
        .wait_for_inquiries(wanted.len() as i64, Duration::from_secs(30))
        .await;
    if stored != wanted.len() as i64 {
        bad.push(format!(
            "{name}: {stored} inquiries stored, want {}",
            wanted.len()
        ));
    }
    let all = leads_with_activities(&daemon).await;
    let mut by_wamid: BTreeMap<String, Vec<(&Value, &Value)>> = BTreeMap::new();
    for (lead, activities) in &all {
        for a in activities {
            if let Some(w) = a["data"]["wamid"].as_str() {
                by_wamid.entry(w.to_owned()).or_default().push((lead, a));
            }
        }
    }
    for (wamid, (from, reply, referral, e, count)) in &wanted {
        let here = by_wamid.get(wamid).cloned().unwrap_or_default();
        let file = e["file"].as_str().unwrap();
        if here.len() != 1 {
            bad.push(format!("{file} {wamid}: {} activities, want 1", here.len()));
            continue;
        }
        let (lead, a) = here[0];
        let key = format!("messenger:whatsapp:{from}");
        if !lead["keys"]
            .as_array()
            .is_some_and(|k| k.contains(&Value::from(key)))
        {
            bad.push(format!(
                "{file}: on a lead without the sender's messenger key"
            ));
        }
        if a["kind"] != "message" || a["channel"] != "chat" || a["data"]["direction"] != "inbound" {
            bad.push(format!("{file}: activity kind/channel/direction: {a}"));
        }
        if let Some(reply) = reply
            && a["data"]["reply_id"].as_str() != Some(reply.as_str())
        {
            bad.push(format!(
                "{file}: data.reply_id {}, want {reply}",
                a["data"]["reply_id"]
            ));
        }
        if let Some(text) = e["text"].as_str()
            && *count == 1
            && a["body"].as_str() != Some(text)
        {
            bad.push(format!("{file}: body {}, want {text:?}", a["body"]));
        }
        // A number change gives the lead the new number.
        if let Some(phone) = e["adds_phone_e164"].as_str() {
            let key = Value::from(format!("phone:{phone}"));
            if !lead["keys"].as_array().is_some_and(|k| k.contains(&key)) {
                bad.push(format!("{file}: {key} is not among its lead's keys"));
            }
        }
        if let (Some(referral), Some(source)) = (referral, e["source"].as_object()) {
            for (k, v) in source {
                if &a["data"]["referral"][k] != v || &referral[k] != v {
                    bad.push(format!(
                        "{file}: data.referral.{k} {}, want {v}",
                        a["data"]["referral"][k]
                    ));
                }
            }
        }
    }
    for (wamid, here) in &by_wamid {
        if !wanted.contains_key(wamid) {
            bad.push(format!(
                "{wamid}: {} activities, but must not be filed",
                here.len()
            ));
        }
    }
    for id in &status_ids {
        if by_wamid.contains_key(id) {
            bad.push(format!("status {id} was filed as an activity"));
        }
    }
    for (wa_id, (e, l)) in &made {
        let file = e["file"].as_str().unwrap();
        let got = daemon
            .leads(&format!("key=messenger%3Awhatsapp%3A{wa_id}"))
            .await;
        if got.len() != 1 {
            bad.push(format!("{file}: {} leads for {wa_id}, want 1", got.len()));
            continue;
        }
        let lead = &got[0];
        let phone_key = Value::from(format!("phone:{}", l["phone_e164"].as_str().unwrap()));
        let checks = [
            ("channel", lead["channel"].clone(), Value::from("chat")),
            ("name", lead["name"].clone(), l["name"].clone()),
            ("phone", lead["phone"].clone(), l["phone_e164"].clone()),
            (
                "phone key",
                Value::from(
                    lead["keys"]
                        .as_array()
                        .is_some_and(|k| k.contains(&phone_key)),
                ),
                Value::from(true),
            ),
        ];
        for (field, got, want) in checks {
            if got != want {
                bad.push(format!("{file}: lead {field} {got}, want {want}"));
            }
        }
        let source = lead["source"].as_str().unwrap_or_default();
        let source_ok = if e["source"].is_object() {
            source.starts_with("whatsapp:")
        } else {
            source == "whatsapp"
        };
        if !source_ok {
            bad.push(format!("{file}: lead source {source:?}"));
        }
    }
    for (wa_id, file) in &named {
        if !made.contains_key(wa_id)
            && !daemon
                .leads(&format!("key=messenger%3Awhatsapp%3A{wa_id}"))
                .await
                .is_empty()
        {
            bad.push(format!("{file}: {wa_id} must not have a lead, yet has one"));
        }
    }
    if all.len() != made.len() {
        bad.push(format!("{name}: {} leads, want {}", all.len(), made.len()));
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_and_corpus_body_files_as_expected() {
    let mut bad = Vec::new();
    for folder in folders() {
        bad.extend(check_folder(&folder).await);
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verification_handshake_echoes_the_challenge_only_for_the_verify_token() {
    let daemon = daemon().await;
    let get = |query: &'static str| {
        let url = format!("{}{PATH}?{query}", daemon.base);
        let http = daemon.http.clone();
        async move { Response::read(http.get(url).send().await.unwrap()).await }
    };
    let r = get("hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444").await;
    assert_eq!((r.status, r.text().as_str()), (200, "1158201444"));
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    get("hub.mode=subscribe&hub.verify_token=verify-you&hub.challenge=1")
        .await
        .assert_error(403, "bad_verify_token");
    get("hub.mode=subscribe&hub.challenge=1")
        .await
        .assert_error(400, "missing_parameter");
    get("").await.assert_error(400, "missing_parameter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_missing_or_garbled_signature_or_a_tampered_body_is_403_and_stores_nothing() {
    let daemon = daemon().await;
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/whatsapp");
    let raw = std::fs::read(folder.join("03_template_button_en.json")).unwrap();
    let other = ingest::http::signature::sign(b"another-app-secret", &raw);
    let mut tampered = raw.clone();
    let at = tampered.windows(4).position(|w| w == b"Mike").unwrap();
    tampered[at] = b'N';
    for (body, sig) in [
        (&raw, Some(other.as_str())),
        (&raw, None),
        (&raw, Some("sha256=zz")),
        (&tampered, Some(sign(&raw).as_str())),
    ] {
        post(&daemon, body, sig)
            .await
            .assert_error(403, "bad_signature");
    }
    // The same body signed right goes through: only it is stored.
    let r = post(&daemon, &raw, Some(&sign(&raw))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        daemon.wait_for_inquiries(1, Duration::from_secs(20)).await,
        1
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leads = daemon.leads("").await;
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0]["name"], "Mike R.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_batch_answers_the_same_ids_and_stores_nothing_new() {
    let daemon = daemon().await;
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/whatsapp");
    let raw = std::fs::read(folder.join("01_batch_two_users.json")).unwrap();
    let first = post(&daemon, &raw, Some(&sign(&raw))).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["inquiry_ids"].as_array().unwrap().len(), 2);
    assert_eq!(
        daemon.wait_for_inquiries(2, Duration::from_secs(20)).await,
        2
    );
    let again = post(&daemon, &raw, Some(&sign(&raw))).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["inquiry_ids"], first.json()["inquiry_ids"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        daemon.wait_for_inquiries(3, Duration::from_secs(2)).await,
        2
    );
    let leads = daemon.leads("").await;
    assert_eq!(leads.len(), 2, "two users, two leads");
    for lead in &leads {
        assert_eq!(lead["inquiry_count"], 1, "{lead}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_alone_are_answered_200_and_never_touch_a_lead() {
    let daemon = daemon().await;
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/whatsapp");
    let raw = std::fs::read(folder.join("06_statuses_batch.json")).unwrap();
    let r = post(&daemon, &raw, Some(&sign(&raw))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["statuses"], 2);
    assert_eq!(r.json()["inquiry_ids"], serde_json::json!([]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        daemon.wait_for_inquiries(1, Duration::from_secs(1)).await,
        0
    );
    let metrics = daemon.get("/metrics").await.text();
    assert!(
        metrics
            .contains("leadpipe_whatsapp_statuses_total{source=\"whatsapp\",status=\"failed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_cannot_confirm_gives_503_so_meta_retries() {
    // Without a spool (with one, the post is kept locally and answered 200).
    let daemon = TestDaemon::start_with(Options {
        extra_config: format!("{CONFIG}\n[spool]\nenabled = false\n"),
        amqp_url: Some("amqp://guest:guest@127.0.0.1:1/%2f".into()),
        no_wait_ready: true,
        ..Options::default()
    })
    .await;
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/whatsapp");
    let raw = std::fs::read(folder.join("01_batch_two_users.json")).unwrap();
    post(&daemon, &raw, Some(&sign(&raw)))
        .await
        .assert_error(503, "unavailable");
}

#[test]
fn whatsapp_and_event_source_settings_are_checked_with_their_keys_and_secrets_stay_hidden() {
    let good = "[whatsapp]\napp_secret = \"app-secret-4471\"\nverify_token = \"verify-9921\"\n\
                access_token = \"EAAG-token-5531\"\nphone_number_id = \"110011223344556\"\n\n\
                [[event_sources]]\nname = \"sitechat\"\nsecret = \"site-secret-7781\"\ndefault_region = \"IT\"\n";
    let (ok, text) = check_config(good);
    assert!(ok, "{text}");
    assert!(
        text.contains("WhatsApp webhook") && text.contains("1 event source"),
        "{text}"
    );

    let bad = "[whatsapp]\napp_secret = \"\"\nverify_token = \"verify-9921\"\naccess_token = \"EAAG-token-5531\"\n\
               api_base = \"graph.facebook.com\"\ncolour = 1\n\n\
               [[event_sources]]\nname = \"Site Chat\"\ndefault_region = \"XX\"\nchannel = \"call\"\n";
    let (ok, text) = check_config(bad);
    assert!(!ok, "{text}");
    for key in [
        "whatsapp.app_secret",
        "whatsapp.phone_number_id",
        "whatsapp.api_base",
        "whatsapp.colour",
        "event_sources[0].name",
        "event_sources[0].secret",
        "event_sources[0].default_region",
        "event_sources[0].channel",
    ] {
        assert!(text.contains(key), "{key} not reported: {text}");
    }
    for secret in ["verify-9921", "EAAG-token-5531"] {
        assert!(!text.contains(secret), "a secret was printed: {text}");
    }
    let (ok, text) = check_config("[whatsapp]\napp_secret = \"x\"\n");
    assert!(!ok && text.contains("whatsapp.verify_token"), "{text}");
}
