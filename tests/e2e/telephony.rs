//! Twilio-style voice webhooks through the real daemon: signatures, one lead and one call
//! activity per call whatever the order of its callbacks, missed calls, withheld callers,
//! and every Twilio fixture of ours and of the shared corpus.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Options, TestDaemon, check_config};

/// The URL Twilio signs in these tests (as the shared contract writes it).
pub const PUBLIC_URL: &str = "https://leads.example.com/v1/intake/telephony/twilio";
const TOKEN: &str = "test-auth-token";

/// A `[[twilio]]` entry named `name`.
pub fn twilio_block(name: &str) -> String {
    format!(
        "[[twilio]]\nname = \"{name}\"\nauth_token = \"{TOKEN}\"\npublic_url = \"{PUBLIC_URL}\"\n\
         source = \"phone-twilio\"\ndefault_region = \"IT\"\n\n"
    )
}

async fn daemon() -> TestDaemon {
    TestDaemon::start_with(Options {
        extra_config: twilio_block("main"),
        ..Options::default()
    })
    .await
}

/// The decoded parameters of a urlencoded body.
fn params(body: &str) -> Vec<(String, String)> {
    ingest::http::body::parse_urlencoded(body.as_bytes())
        .expect("a urlencoded body")
        .fields
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// The signature Twilio sends for `body` posted to `url`.
pub fn sign(url: &str, body: &str) -> String {
    ingest::twilio::signature::sign(TOKEN, url, &params(body))
}

/// POSTs a callback to line `name` with `query`, signed with `signature` (none: no header).
async fn post(
    d: &TestDaemon,
    name: &str,
    query: &str,
    body: &str,
    signature: Option<&str>,
) -> (u16, String, String) {
    let mut url = format!("{}/v1/intake/telephony/twilio/{name}", d.base);
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    let mut request = d
        .http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("x-twilio-signature", signature);
    }
    let response = request.send().await.expect("the daemon answers");
    let status = response.status().as_u16();
    let ctype = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ctype, response.text().await.unwrap_or_default())
}

/// POSTs a correctly signed callback to line `main` without a query string.
async fn post_signed(d: &TestDaemon, body: &str) -> u16 {
    post(d, "main", "", body, Some(&sign(PUBLIC_URL, body)))
        .await
        .0
}

/// A urlencoded body from pairs, encoded as Twilio does.
fn encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One callback of call `sid` from `from` with `status`, plus `extra` parameters.
fn callback(sid: &str, from: &str, status: &str, extra: &[(&str, &str)]) -> String {
    let mut fields = vec![
        ("Called", "+390294759811"),
        ("CallStatus", status),
        ("From", from),
        ("Direction", "inbound"),
        ("CallSid", sid),
        ("To", "+390294759811"),
        ("Caller", from),
        ("AccountSid", "AC00000000000000000000000000000000"),
    ];
    fields.extend_from_slice(extra);
    encode(&fields)
}

/// Every lead with its activities (from `/v1/leads/{id}`).
pub async fn leads_with_activities(d: &TestDaemon) -> Vec<Value> {
    let mut out = Vec::new();
    for lead in d.leads("").await {
        let detail = d.get(&format!("/v1/leads/{}", lead["id"])).await;
        assert_eq!(detail.status, 200, "{}", detail.text());
        out.push(detail.json());
    }
    out
}

/// Call activities by `data.call_id`: (lead, activity) pairs.
pub fn calls_by_id(leads: &[Value]) -> HashMap<String, Vec<(Value, Value)>> {
    let mut out: HashMap<String, Vec<(Value, Value)>> = HashMap::new();
    for lead in leads {
        for activity in lead["activities"].as_array().into_iter().flatten() {
            if let Some(id) = activity["data"]["call_id"].as_str() {
                out.entry(id.to_owned())
                    .or_default()
                    .push((lead.clone(), activity.clone()));
            }
        }
    }
    out
}

/// Waits until `n` leads exist and nothing changed for two seconds; returns them with
/// their activities.
pub async fn settle(d: &TestDaemon, n: usize, bound: Duration) -> Vec<Value> {
    let deadline = Instant::now() + bound;
    let mut last = String::new();
    let mut since = Instant::now();
    loop {
        let leads = d.leads("").await;
        let snapshot = leads
            .iter()
            .map(|l| format!("{}/{}/{}", l["id"], l["inquiry_count"], l["updated_at"]))
            .collect::<Vec<_>>()
            .join(",");
        if snapshot != last {
            last = snapshot;
            since = Instant::now();
        }
        if (leads.len() >= n && since.elapsed() >= Duration::from_secs(2))
            || Instant::now() > deadline
        {
            return leads_with_activities(d).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Inquiries stored so far (leads, duplicates and kept non-leads).
async fn stored_inquiries(d: &TestDaemon) -> i64 {
    let pool = d.db().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM inquiries")
        .fetch_one(&pool)
        .await
        .expect("count inquiries");
    pool.close().await;
    n
}

#[tokio::test]
async fn signatures_good_bad_missing_and_tampered_and_403_stores_nothing() {
    let d = daemon().await;
    let body = callback(
        "CA5160000000000000000000000000001",
        "+393471110001",
        "ringing",
        &[],
    );
    let good = sign(PUBLIC_URL, &body);

    let (status, ctype, text) = post(&d, "main", "", &body, None).await;
    assert_eq!(status, 403, "{text}");
    assert!(
        ctype.contains("json") && text.contains("missing_signature"),
        "{text}"
    );
    let other_token = ingest::twilio::signature::sign("another-token", PUBLIC_URL, &params(&body));
    for (what, signature, sent) in [
        ("a wrong token", other_token.clone(), body.clone()),
        (
            "a tampered body",
            good.clone(),
            body.replace("ringing", "completed"),
        ),
        (
            "an added parameter",
            good.clone(),
            format!("{body}&Digits=1"),
        ),
        ("garbage", "not-base64!".to_owned(), body.clone()),
    ] {
        let (status, _, text) = post(&d, "main", "", &sent, Some(&signature)).await;
        assert_eq!(status, 403, "{what}: {text}");
        assert!(text.contains("bad_signature"), "{what}: {text}");
    }
    // Signed without the query string the request carries: the URL Twilio signed differs.
    let (status, _, _) = post(&d, "main", "x=1", &body, Some(&good)).await;
    assert_eq!(status, 403);
    let (status, _, text) = post(&d, "nope", "", &body, Some(&good)).await;
    assert_eq!(status, 404, "{text}");

    // The right signature, also over the request's own query string.
    let with_query = sign(&format!("{PUBLIC_URL}?line=milano&x=%20y"), &body);
    let (status, ctype, text) =
        post(&d, "main", "line=milano&x=%20y", &body, Some(&with_query)).await;
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("text/xml"), "{ctype}");
    assert!(text.contains("<Response/>"), "{text}");

    let leads = settle(&d, 1, Duration::from_secs(30)).await;
    assert_eq!(leads.len(), 1, "{leads:?}");
    assert_eq!(
        stored_inquiries(&d).await,
        1,
        "only the signed callback is stored"
    );
}

/// One call of the shuffled test: its callbacks in their true order and its final state.
struct Expected {
    sid: String,
    from: String,
    steps: Vec<String>,
    status: &'static str,
    missed: bool,
    duration: Option<u64>,
}

#[tokio::test]
async fn shuffled_callbacks_give_one_lead_and_activity_per_call_with_the_final_state() {
    let d = daemon().await;
    let progress = |seq: &str| -> Vec<(String, String)> {
        vec![
            ("SequenceNumber".into(), seq.into()),
            ("CallbackSource".into(), "call-progress-events".into()),
        ]
    };
    let mut calls: Vec<Expected> = Vec::new();
    for i in 0..12u32 {
        let sid = format!("CA{:032x}", 0x5eed_0000_u64 + u64::from(i));
        let from = format!("+39347222{i:04}");
        let step = |status: &str, extra: Vec<(String, String)>| {
            let extra: Vec<(&str, &str)> = extra
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            callback(&sid, &from, status, &extra)
        };
        let mut steps = vec![step("ringing", Vec::new())];
        let (status, missed, duration) = match i % 4 {
            0 => {
                let mut done = progress("2");
                done.push(("CallDuration".into(), format!("{}", 40 + i)));
                done.push((
                    "RecordingUrl".into(),
                    "https://api.twilio.com/2010-04-01/Accounts/AC0/Recordings/RE1".into(),
                ));
                steps.push(step("in-progress", progress("1")));
                steps.push(step("completed", done));
                ("completed", false, Some(u64::from(40 + i)))
            }
            1 => {
                steps.push(step("no-answer", progress("1")));
                ("no-answer", true, None)
            }
            2 => {
                // The <Dial> went unanswered while the call was in progress, then the call
                // completed: still missed.
                steps.push(step(
                    "in-progress",
                    vec![
                        ("DialCallStatus".into(), "no-answer".into()),
                        (
                            "DialCallSid".into(),
                            "CA0000000000000000000000000000dd00".into(),
                        ),
                    ],
                ));
                let mut done = progress("3");
                done.push(("CallDuration".into(), "20".into()));
                steps.push(step("completed", done));
                ("completed", true, Some(20))
            }
            _ => {
                steps.push(step("busy", progress("1")));
                ("busy", true, None)
            }
        };
        calls.push(Expected {
            sid,
            from,
            steps,
            status,
            missed,
            duration,
        });
    }
    // Newest first (the worst order), each callback also retried once.
    let mut posts: Vec<String> = Vec::new();
    for call in &calls {
        for step in call.steps.iter().rev() {
            posts.push(step.clone());
        }
    }
    posts.extend(posts.clone());
    for body in &posts {
        assert_eq!(post_signed(&d, body).await, 200);
    }
    let leads = settle(&d, calls.len(), Duration::from_secs(60)).await;
    assert_eq!(leads.len(), calls.len());
    let filed = calls_by_id(&leads);
    for Expected {
        sid,
        from,
        status,
        missed,
        duration,
        ..
    } in &calls
    {
        let here = filed.get(sid).cloned().unwrap_or_default();
        assert_eq!(here.len(), 1, "{sid}: one activity");
        let (lead, activity) = &here[0];
        assert_eq!(lead["phone"], from.as_str());
        assert_eq!(lead["channel"], "call");
        assert_eq!(lead["source"], "phone-twilio");
        assert_eq!(activity["kind"], "call");
        assert_eq!(activity["data"]["status"], *status, "{sid}: {activity}");
        assert_eq!(activity["data"]["missed"], *missed, "{sid}: {activity}");
        let tagged = lead["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "missed_call"));
        assert_eq!(tagged, *missed, "{sid}: {lead}");
        if let Some(duration) = duration {
            assert_eq!(activity["data"]["duration_s"], *duration, "{sid}");
        }
    }
    // Every distinct callback once; the retries stored nothing.
    let distinct: std::collections::BTreeSet<&String> = posts.iter().collect();
    assert_eq!(stored_inquiries(&d).await, distinct.len() as i64);
}

#[tokio::test]
async fn withheld_and_sentinel_callers_get_200_and_never_a_lead() {
    let d = daemon().await;
    let numbers = [
        "+266696687",
        "+7378742833",
        "+86282452253",
        "anonymous",
        "restricted",
        "",
    ];
    for (i, number) in numbers.iter().enumerate() {
        let sid = format!("CA{:032x}", 0xa11_0000 + i);
        let body = callback(&sid, number, "no-answer", &[("SequenceNumber", "1")]);
        assert_eq!(post_signed(&d, &body).await, 200, "{number}");
    }
    // Each is kept as an inquiry (counted, auditable) but no lead and no activity.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_inquiries(&d).await < numbers.len() as i64 {
        assert!(
            Instant::now() < deadline,
            "the kept callbacks were not stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(d.leads("").await.is_empty());
    let pool = d.db().await;
    let spam: Vec<Option<String>> = sqlx::query_scalar("SELECT spam_reason FROM inquiries")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    pool.close().await;
    assert_eq!(spam.len(), numbers.len(), "{spam:?}");
    assert!(
        spam.iter().all(|s| s.as_deref() == Some("withheld_caller")),
        "{spam:?}"
    );
}

/// One folder of Twilio callbacks with its `expect.jsonl` (the shared corpus's format):
/// posted in file order, then every call checked.
async fn run_twilio_folder(folder: &Path) {
    let lines: Vec<Value> = std::fs::read_to_string(folder.join("expect.jsonl"))
        .expect("expect.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let d = daemon().await;
    let mut finals: BTreeMap<String, BTreeMap<&str, Value>> = BTreeMap::new();
    let mut froms: BTreeMap<String, String> = BTreeMap::new();
    for e in &lines {
        let file = e["file"].as_str().expect("file");
        let body = std::fs::read_to_string(folder.join(file)).expect("the body");
        let url = e["url"].as_str().expect("url");
        assert!(url.starts_with(PUBLIC_URL), "{file}: {url}");
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let signature = e["x_twilio_signature_sent"]
            .as_str()
            .or(e["x_twilio_signature"].as_str());
        // Our signature of the file must be the one the corpus computed.
        assert_eq!(
            Some(sign(url, &body).as_str()),
            e["x_twilio_signature"].as_str(),
            "{file}"
        );
        let (status, ctype, text) = post(&d, "main", query, &body, signature).await;
        assert_eq!(
            Some(u64::from(status)),
            e["expect_status"].as_u64(),
            "{file}: {text}"
        );
        if status == 200 {
            assert!(
                ctype.contains("xml") && text.contains("<Response"),
                "{file}"
            );
        }
        let sid = e["call_sid"].as_str().expect("call_sid").to_owned();
        let from = params(&body)
            .into_iter()
            .find(|(k, _)| k == "From")
            .map(|(_, v)| v);
        if let Some(from) = from.filter(|f| !f.is_empty()) {
            froms.entry(sid.clone()).or_insert(from);
        }
        if status != 200 {
            finals.entry(sid).or_default();
            continue;
        }
        let f = finals.entry(sid).or_default();
        f.insert("missed", e["missed"].clone());
        if e["creates_lead"] == true {
            f.insert("lead", Value::Bool(true));
            f.insert("phone", e["phone_e164"].clone());
        }
        if e["stale_event"] != true {
            f.insert("status", e["call_status"].clone());
            if !e["call_duration_s"].is_null() {
                f.insert("duration_s", e["call_duration_s"].clone());
            }
        }
        for key in ["recording_sid", "caller_name", "forwarded_from"] {
            if !e[key].is_null() {
                f.insert(key, e[key].clone());
            }
        }
    }
    let want = finals.values().filter(|f| f.contains_key("lead")).count();
    let leads = settle(&d, want, Duration::from_secs(60)).await;
    let calls = calls_by_id(&leads);
    for (sid, f) in &finals {
        let here = calls.get(sid).cloned().unwrap_or_default();
        if !f.contains_key("lead") {
            assert!(here.is_empty(), "{folder:?} {sid}: never a lead, yet filed");
            // Only an E.164 caller can be a person key to look up; the others (a SIP
            // address) have no key to be filed under.
            let e164 = |f: &str| {
                f.strip_prefix('+').is_some_and(|d| {
                    (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
                })
            };
            if let Some(from) = froms.get(sid).filter(|f| e164(f)) {
                assert!(
                    d.leads(&format!("key=phone:{}", percent(from)))
                        .await
                        .is_empty(),
                    "{sid}: its caller became a lead"
                );
            }
            continue;
        }
        assert_eq!(here.len(), 1, "{folder:?} {sid}: one call activity");
        let (lead, activity) = &here[0];
        let data = &activity["data"];
        assert_eq!(lead["channel"], "call", "{sid}");
        assert_eq!(lead["phone"], f["phone"], "{sid}");
        assert_eq!(lead["name"], Value::Null, "{sid}: CNAM is not the name");
        assert_eq!(data["status"], f["status"], "{sid}: {data}");
        assert_eq!(data["missed"], f["missed"], "{sid}: {data}");
        let tagged = lead["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "missed_call"));
        assert_eq!(tagged, f["missed"] == true, "{sid}");
        if let Some(duration) = f.get("duration_s") {
            assert_eq!(&data["duration_s"], duration, "{sid}");
        }
        if let Some(Value::String(recording)) = f.get("recording_sid") {
            assert!(
                data["recording_url"]
                    .as_str()
                    .is_some_and(|u| u.contains(recording.as_str())),
                "{sid}: {data}"
            );
        }
        if let Some(name) = f.get("caller_name") {
            assert_eq!(&data["caller_name"], name, "{sid}");
        }
        if let Some(Value::String(forwarded)) = f.get("forwarded_from") {
            let keys = lead["keys"].to_string();
            assert!(!keys.contains(forwarded.as_str()), "{sid}: {keys}");
        }
    }
    assert_eq!(leads.len(), want, "{folder:?}");
}

#[tokio::test]
async fn a_call_whose_voice_url_and_status_callback_are_two_lines_is_one_lead() {
    let status_url = format!("{PUBLIC_URL}/status");
    let d = TestDaemon::start_with(Options {
        extra_config: format!(
            "{}[[twilio]]\nname = \"status\"\nauth_token = \"{TOKEN}\"\npublic_url = \"{status_url}\"\n\
             source = \"phone-twilio\"\ndefault_region = \"IT\"\n\n",
            twilio_block("main")
        ),
        ..Options::default()
    })
    .await;
    let sid = "CA5170000000000000000000000000001";
    let ringing = callback(sid, "+393471170001", "ringing", &[]);
    assert_eq!(post_signed(&d, &ringing).await, 200);
    let done = callback(
        sid,
        "+393471170001",
        "completed",
        &[
            ("CallbackSource", "call-progress-events"),
            ("SequenceNumber", "2"),
            ("CallDuration", "61"),
        ],
    );
    let signature = sign(&status_url, &done);
    let (status, _, text) = post(&d, "status", "", &done, Some(&signature)).await;
    assert_eq!(status, 200, "{text}");
    let leads = settle(&d, 1, Duration::from_secs(30)).await;
    assert_eq!(leads.len(), 1, "one call, one lead: {leads:?}");
    let calls = calls_by_id(&leads);
    let here = &calls[sid];
    assert_eq!(here.len(), 1, "one call activity");
    assert_eq!(here[0].1["data"]["status"], "completed");
    assert_eq!(here[0].1["data"]["duration_s"], 61);
}

fn fixtures(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/telephony/{kind}"))
}

#[tokio::test]
async fn every_twilio_fixture_of_ours_gives_its_expectations() {
    run_twilio_folder(&fixtures("twilio")).await;
}

#[tokio::test]
async fn every_twilio_callback_of_the_shared_corpus_gives_its_expectations() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/telephony/twilio");
    if !folder.join("expect.jsonl").exists() {
        eprintln!(
            "skipped: {} not found (the shared corpus sits beside the repository in CI)",
            folder.display()
        );
        return;
    }
    run_twilio_folder(&folder).await;
}

#[test]
fn the_contracts_telephony_sections_pass_and_every_problem_names_its_key() {
    let good = format!(
        "{}[[ami]]\nname = \"pbx1\"\nhost = \"127.0.0.1\"\nport = 5038\n\
         user = \"leadpipe\"\nsecret = \"s3cret\"\n\
         inbound_contexts = {{ \"from-trunk-it\" = \"IT\", \"from-trunk-pl\" = \"PL\", \"from-trunk-vn\" = \"VN\" }}\n\
         source = \"phone-pbx1\"\n",
        twilio_block("main")
    );
    let (ok, text) = check_config(&good);
    assert!(ok, "{text}");

    let bad = "[[twilio]]\nname = \"a b\"\npublic_url = \"leads.example.com\"\nsource = \"\"\n\
         default_region = \"XX\"\ncolour = 1\n\n[[ami]]\nname = \"pbx1\"\nhost = \"\"\nuser = \"u\"\n\
         inbound_contexts = { \"from-trunk-it\" = \"Italy\" }\nsource = \"phone\"\n";
    let (ok, text) = check_config(bad);
    assert!(!ok, "{text}");
    for key in [
        "twilio[0].name",
        "twilio[0].auth_token",
        "twilio[0].public_url",
        "twilio[0].source",
        "twilio[0].default_region",
        "twilio[0].colour",
        "ami[0].host",
        "ami[0].secret",
        "ami[0].inbound_contexts.from-trunk-it",
    ] {
        assert!(text.contains(key), "{key} not reported: {text}");
    }
}
