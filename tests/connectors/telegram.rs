//! The Telegram connector against a stand-in Bot API (an axum server speaking its JSON:
//! `getUpdates` with offset semantics, 429 with `retry_after`, a broken answer) and the
//! real daemon, broker and database: every expectation of the fixtures (and of the shared
//! corpus where present) by polling and by webhook, a restart that files nothing again,
//! a kill mid-stream that loses and doubles nothing, and a webhook secret that guards.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::daemon::{Daemon, World, metric};

const TOKEN: &str = "424242:TEST-token-Secret_part";
const SECRET: &str = "hook-secret_42";

/// What the stand-in does to the next calls instead of answering.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// HTTP 429 with `parameters.retry_after`.
    RetryAfter(u64),
    /// Headers, then the connection breaks off mid-body.
    Broken,
}

#[derive(Default)]
struct ApiState {
    batches: Vec<Vec<Value>>,
    at: usize,
    faults: VecDeque<Fault>,
    /// When each getUpdates call arrived, and what fault it got.
    calls: Vec<(Instant, Option<Fault>)>,
    /// A pause before each answer with updates, so a test can stop the daemon mid-stream.
    delay: Duration,
    /// Every call's method and parameters, in arrival order.
    asked: Vec<(String, HashMap<String, Value>)>,
}

impl ApiState {
    /// The `allowed_updates` of the first call of `method`.
    fn allowed_updates(&self, method: &str) -> Vec<String> {
        self.asked
            .iter()
            .find(|(m, _)| m == method)
            .and_then(|(_, params)| params.get("allowed_updates"))
            .and_then(Value::as_array)
            .map(|kinds| {
                kinds
                    .iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The update kinds leadpipe must ask Telegram for, by polling and webhook alike.
const WANTED_UPDATES: [&str; 5] = [
    "message",
    "edited_message",
    "callback_query",
    "business_message",
    "edited_business_message",
];

/// A stand-in Bot API: hands out batches in order, the next only once `offset` passed
/// every `update_id` of the current one (until then the current batch comes again).
#[derive(Clone)]
struct BotApi {
    state: Arc<Mutex<ApiState>>,
    url: String,
}

impl BotApi {
    async fn start(batches: Vec<Vec<Value>>, faults: &[Fault]) -> Self {
        let state = Arc::new(Mutex::new(ApiState {
            batches,
            faults: faults.iter().copied().collect(),
            ..ApiState::default()
        }));
        let app = Router::new().fallback(answer).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { state, url }
    }

    fn done(&self) -> bool {
        let s = self.state.lock().unwrap();
        s.at >= s.batches.len()
    }

    fn at(&self) -> usize {
        self.state.lock().unwrap().at
    }

    fn rewind(&self) {
        self.state.lock().unwrap().at = 0;
    }

    async fn wait_done(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if self.done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.done()
    }
}

async fn answer(
    State(state): State<Arc<Mutex<ApiState>>>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut params: HashMap<String, Value> = query
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) {
        params.extend(map);
    }
    let path = uri.path();
    let Some(method) = path
        .strip_prefix(&format!("/bot{TOKEN}/"))
        .map(str::to_owned)
    else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"ok": false, "error_code": 404, "description": "Not Found"})),
        )
            .into_response();
    };
    state
        .lock()
        .unwrap()
        .asked
        .push((method.clone(), params.clone()));
    let number = |v: Option<&Value>| match v {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    match method.as_str() {
        "getUpdates" => {
            let offset = number(params.get("offset"));
            let (batch, fault, delay) = {
                let mut s = state.lock().unwrap();
                let fault = s.faults.pop_front();
                s.calls.push((Instant::now(), fault));
                if fault.is_none() {
                    while let Some(offset) = offset {
                        let Some(batch) = s.batches.get(s.at) else {
                            break;
                        };
                        let top = batch
                            .iter()
                            .filter_map(|u| u["update_id"].as_i64())
                            .max()
                            .unwrap_or(-1);
                        if offset > top {
                            s.at += 1;
                        } else {
                            break;
                        }
                    }
                }
                (
                    s.batches.get(s.at).cloned().unwrap_or_default(),
                    fault,
                    s.delay,
                )
            };
            match fault {
                Some(Fault::RetryAfter(secs)) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({
                        "ok": false, "error_code": 429,
                        "description": format!("Too Many Requests: retry after {secs}"),
                        "parameters": {"retry_after": secs}
                    })),
                )
                    .into_response(),
                Some(Fault::Broken) => {
                    let broken = futures_util::stream::iter([
                        Ok::<_, std::io::Error>(Bytes::from_static(b"{\"ok\":true,\"res")),
                        Err(std::io::Error::other("connection reset")),
                    ]);
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Body::from_stream(broken))
                        .unwrap()
                }
                None => {
                    if batch.is_empty() {
                        let wait = number(params.get("timeout")).unwrap_or(0).clamp(0, 1);
                        tokio::time::sleep(Duration::from_millis(wait as u64 * 300)).await;
                    } else if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    axum::Json(json!({"ok": true, "result": batch})).into_response()
                }
            }
        }
        "getMe" => axum::Json(json!({"ok": true, "result": {
            "id": 424242, "is_bot": true, "first_name": "Stand-in", "username": "StandInBot"}}))
        .into_response(),
        "getWebhookInfo" => axum::Json(json!({"ok": true, "result": {
            "url": "", "has_custom_certificate": false, "pending_update_count": 0}}))
        .into_response(),
        _ => axum::Json(json!({"ok": true, "result": true})).into_response(),
    }
}

fn bot_entry(name: &str, mode: &str, api: &str, source: &str) -> String {
    format!(
        "[[telegram]]\nname = \"{name}\"\ntoken = \"{TOKEN}\"\napi_base = \"{api}\"\n\
         mode = \"{mode}\"\nsecret_token = \"{SECRET}\"\nsource = \"{source}\"\n\
         poll_timeout_secs = 1\n\n"
    )
}

/// A folder of `getUpdates` files with its `expect.jsonl`.
struct Folder {
    path: PathBuf,
    batches: Vec<Vec<Value>>,
    lines: Vec<Value>,
}

fn folders() -> Vec<Folder> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![read_folder(&root.join("tests/fixtures/chat/telegram"))];
    let shared = root.join("../shared/corpus/chat/telegram");
    if shared.join("expect.jsonl").exists() {
        out.push(read_folder(&shared));
    } else {
        println!(
            "(the shared corpus is not here: {} skipped)",
            shared.display()
        );
    }
    out
}

fn read_folder(path: &Path) -> Folder {
    let text = std::fs::read_to_string(path.join("expect.jsonl")).expect("expect.jsonl");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an expectation"))
        .collect();
    let mut files: Vec<String> = lines
        .iter()
        .map(|l| l["file"].as_str().unwrap().to_owned())
        .collect();
    files.sort();
    files.dedup();
    let batches = files
        .iter()
        .map(|f| {
            let doc: Value =
                serde_json::from_slice(&std::fs::read(path.join(f)).expect("a getUpdates file"))
                    .expect("JSON");
            doc["result"].as_array().cloned().unwrap_or_default()
        })
        .collect();
    Folder {
        path: path.to_owned(),
        batches,
        lines,
    }
}

/// The ops API of one daemon.
struct Ops {
    base: String,
    admin: String,
    http: reqwest::Client,
}

impl Ops {
    fn new(daemon: &Daemon, world: &World) -> Self {
        Self {
            base: daemon.base.clone(),
            admin: world.admin.clone(),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("the daemon answers");
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.expect("JSON")
    }

    async fn leads(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_owned();
            if let Some(c) = &cursor {
                q = format!("{q}{}cursor={c}", if q.is_empty() { "" } else { "&" });
            }
            let page = self
                .get(&format!(
                    "/v1/leads{}",
                    if q.is_empty() {
                        String::new()
                    } else {
                        format!("?{q}")
                    }
                ))
                .await;
            out.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"]
                .as_i64()
                .map(|c| c.to_string())
                .or_else(|| page["next_cursor"].as_str().map(str::to_owned))
            {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    async fn by_key(&self, key: &str) -> Vec<Value> {
        let encoded: String = key
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.leads(&format!("key={encoded}")).await
    }

    /// (lead, activity) of every lead.
    async fn activities(&self, leads: &[Value]) -> Vec<(Value, Value)> {
        let mut out = Vec::new();
        for lead in leads {
            let full = self.get(&format!("/v1/leads/{}", lead["id"])).await;
            for a in full["activities"].as_array().cloned().unwrap_or_default() {
                out.push((lead.clone(), a));
            }
        }
        out
    }

    /// Waits until there are `want` leads or more and nothing changed for 2 s.
    async fn settle(&self, want: usize, bound: Duration) -> Vec<Value> {
        let deadline = Instant::now() + bound;
        let (mut last, mut since) = (String::new(), Instant::now());
        loop {
            let leads = self.leads("").await;
            let mut snap: Vec<String> = leads
                .iter()
                .map(|l| format!("{}:{}:{}", l["id"], l["inquiry_count"], l["updated_at"]))
                .collect();
            snap.sort();
            let snap = snap.join(",");
            if snap != last {
                (last, since) = (snap, Instant::now());
            }
            if (leads.len() >= want && since.elapsed() >= Duration::from_secs(2))
                || Instant::now() > deadline
            {
                return leads;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn fresh(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|e| e["redelivery"] != true).collect()
}

fn wanted_leads(lines: &[Value]) -> usize {
    fresh(lines)
        .iter()
        .filter(|e| e["creates_lead"] == true)
        .count()
}

/// Every expectation of a folder, as problem lines (empty when all hold).
async fn check(ops: &Ops, folder: &Folder, source: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let leads = ops.leads("").await;
    let mut acts: HashMap<i64, Vec<(Value, Value)>> = HashMap::new();
    for (lead, a) in ops.activities(&leads).await {
        if let Some(id) = a["data"]["update_id"].as_i64() {
            acts.entry(id).or_default().push((lead, a));
        }
    }
    let lines = &folder.lines;
    let fresh = fresh(lines);
    let name = |e: &Value| format!("{}#{}", e["file"].as_str().unwrap_or("?"), e["update_id"]);
    let creators: Vec<&Value> = fresh
        .iter()
        .filter(|e| e["creates_lead"] == true)
        .map(|e| &e["telegram_user_id"])
        .collect();
    let filed: Vec<i64> = fresh
        .iter()
        .filter(|e| {
            e["creates_lead"] == true
                || (!e["joins_update_id"].is_null() && e["kind"] != "edited_message")
        })
        .filter_map(|e| e["update_id"].as_i64())
        .collect();
    let mut last_text: BTreeMap<i64, String> = BTreeMap::new();
    for e in &fresh {
        if let Some(text) = e["text"].as_str() {
            let edit = e["kind"] == "edited_message" && !e["joins_update_id"].is_null();
            let at = if edit {
                &e["joins_update_id"]
            } else {
                &e["update_id"]
            };
            last_text.insert(at.as_i64().unwrap(), text.to_owned());
        }
    }
    for e in lines {
        let id = e["update_id"].as_i64().unwrap();
        let n = acts.get(&id).map_or(0, Vec::len);
        let want = usize::from(filed.contains(&id));
        if n != want {
            bad.push(format!(
                "{}: {n} activities with its update_id, want {want}",
                name(e)
            ));
        }
    }
    for e in &fresh {
        let user = &e["telegram_user_id"];
        if e["creates_lead"] == true {
            let got = ops.by_key(&format!("messenger:telegram:{user}")).await;
            if got.len() != 1 {
                bad.push(format!(
                    "{}: {} leads with its messenger key, want 1",
                    name(e),
                    got.len()
                ));
                continue;
            }
            let lead = &got[0];
            let mut want = vec![
                ("channel", lead["channel"].clone(), json!("chat")),
                ("source", lead["source"].clone(), json!(source)),
                ("name", lead["name"].clone(), e["name"].clone()),
            ];
            if !e["phone_e164"].is_null() {
                want.push(("phone", lead["phone"].clone(), e["phone_e164"].clone()));
            }
            if !e["email"].is_null() {
                want.push(("email", lead["email"].clone(), e["email"].clone()));
            }
            if let Some(utm) = e.get("utm_source") {
                want.push(("utm_source", lead["utm"]["utm_source"].clone(), utm.clone()));
            }
            for (kind, field) in [("phone", "phone_e164"), ("email", "email")] {
                let mut theirs: Vec<String> = fresh
                    .iter()
                    .filter(|x| &x["telegram_user_id"] == user && x[field].is_string())
                    .map(|x| format!("{kind}:{}", x[field].as_str().unwrap()))
                    .collect();
                theirs.sort();
                theirs.dedup();
                let mut have: Vec<String> = lead["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter(|k| k.starts_with(&format!("{kind}:")))
                    .map(str::to_owned)
                    .collect();
                have.sort();
                if have != theirs {
                    bad.push(format!(
                        "{}: {kind} keys {have:?}, want {theirs:?}",
                        name(e)
                    ));
                }
            }
            for (field, got, wanted) in want {
                if got != wanted {
                    bad.push(format!("{}: {field} is {got}, want {wanted}", name(e)));
                }
            }
        } else if let Some(joins) = e["joins_update_id"].as_i64() {
            let target = acts.get(&joins);
            let mine = acts.get(&e["update_id"].as_i64().unwrap());
            if e["kind"] == "edited_message" {
                if let Some(t) = target
                    && t[0].1["data"]["edited_at"].is_null()
                {
                    bad.push(format!(
                        "{}: the edited activity has no data.edited_at",
                        name(e)
                    ));
                }
            } else if let (Some(m), Some(t)) = (mine, target)
                && m[0].0["id"] != t[0].0["id"]
            {
                bad.push(format!("{}: not on the lead of update {joins}", name(e)));
            }
        } else if !user.is_null()
            && !creators.contains(&user)
            && !ops
                .by_key(&format!("messenger:telegram:{user}"))
                .await
                .is_empty()
        {
            bad.push(format!("{}: never a lead, yet its sender has one", name(e)));
        }
    }
    for (id, text) in &last_text {
        if let Some(a) = acts.get(id)
            && a[0].1["body"].as_str() != Some(text.as_str())
        {
            bad.push(format!(
                "update {id}: body {}, want {text:?}",
                a[0].1["body"]
            ));
        }
    }
    if leads.len() != wanted_leads(lines) {
        bad.push(format!(
            "{}: {} leads, want {}",
            folder.path.display(),
            leads.len(),
            wanted_leads(lines)
        ));
    }
    bad
}

async fn snapshot(ops: &Ops) -> Vec<String> {
    let leads = ops.leads("").await;
    let mut out: Vec<String> = ops
        .activities(&leads)
        .await
        .iter()
        .map(|(l, a)| {
            format!(
                "{}|{}|{}|{}",
                l["id"], a["id"], a["body"], l["inquiry_count"]
            )
        })
        .collect();
    out.sort();
    out
}

/// Polled: a 429 and a broken answer first (waited out, retried), every expectation, then
/// a SIGKILL and a restart with the stand-in serving from its first batch again: nothing
/// is filed twice.
pub async fn every_expectation_holds_by_polling_and_a_restart_files_nothing_again() {
    for folder in folders() {
        let world = World::new().await;
        let api = BotApi::start(
            folder.batches.clone(),
            &[Fault::RetryAfter(2), Fault::Broken],
        )
        .await;
        let mut daemon = Daemon::start_with(
            &world,
            &bot_entry("shop", "poll", &api.url, "telegram-shop"),
        )
        .await;
        let ops = Ops::new(&daemon, &world);
        assert!(
            api.wait_done(Duration::from_secs(60)).await,
            "{}: the poller never confirmed every batch (at {}); log: {}",
            folder.path.display(),
            api.at(),
            daemon.log()
        );
        let calls = api.state.lock().unwrap().calls.clone();
        let after_429 = calls[1].0.duration_since(calls[0].0);
        assert!(
            after_429 >= Duration::from_millis(1900),
            "the call after a 429 with retry_after 2 came after {after_429:?}"
        );
        assert!(matches!(calls[1].1, Some(Fault::Broken)));
        assert_eq!(
            api.state.lock().unwrap().allowed_updates("getUpdates"),
            WANTED_UPDATES,
            "business chats are asked for"
        );
        ops.settle(wanted_leads(&folder.lines), Duration::from_secs(30))
            .await;
        let problems = check(&ops, &folder, "telegram-shop").await;
        assert!(
            problems.is_empty(),
            "poll: {problems:#?}\nlog: {}",
            daemon.log()
        );
        let log = std::fs::read_to_string(format!(
            "{}/leadpipe-tests/{}-{}.log",
            std::env::temp_dir().display(),
            world.prefix,
            daemon.base.rsplit(':').next().unwrap()
        ))
        .unwrap_or_default();
        assert!(
            !log.contains("Secret_part"),
            "the bot token appears in the log"
        );
        let metrics = daemon.metrics().await;
        assert!(
            metric(
                &metrics,
                "leadpipe_telegram_ignored_total",
                &["reason=\"start_command\""]
            )
            .is_some_and(|n| n >= 1.0),
            "ignored updates are counted by reason"
        );

        let before = snapshot(&ops).await;
        daemon.kill();
        api.rewind();
        daemon.launch().await;
        assert!(
            api.wait_done(Duration::from_secs(60)).await,
            "after a restart the poller never got past batch {}",
            api.at()
        );
        ops.settle(wanted_leads(&folder.lines), Duration::from_secs(10))
            .await;
        assert_eq!(
            snapshot(&ops).await,
            before,
            "a restart filed something again"
        );
    }
}

/// Webhook mode: a wrong or missing secret is 403 and stores nothing, an unknown bot 404,
/// bad JSON 400; then every update posted once (a redelivery twice) gives every
/// expectation.
pub async fn every_expectation_holds_by_webhook_and_a_bad_secret_stores_nothing() {
    for folder in folders() {
        let world = World::new().await;
        let api = BotApi::start(Vec::new(), &[]).await;
        let daemon = Daemon::start_with(
            &world,
            &format!(
                "{}{}",
                bot_entry("hook", "webhook", &api.url, "telegram-hook"),
                bot_entry("polled", "poll", &api.url, "telegram-polled")
            ),
        )
        .await;
        let ops = Ops::new(&daemon, &world);
        let http = reqwest::Client::new();
        let path = format!("{}/v1/intake/chat/telegram/hook", daemon.base);
        let post = |url: String, body: Vec<u8>, secret: Option<&str>| {
            let mut r = http
                .post(url)
                .header("content-type", "application/json")
                .body(body);
            if let Some(s) = secret {
                r = r.header("X-Telegram-Bot-Api-Secret-Token", s);
            }
            r.send()
        };
        let first = serde_json::to_vec(&folder.batches[0][0]).unwrap();
        for secret in [Some("hook-secret_41"), None, Some("")] {
            let r = post(path.clone(), first.clone(), secret).await.unwrap();
            assert_eq!(r.status(), 403, "secret {secret:?}");
            let body: Value = r.json().await.expect("a JSON refusal");
            assert_eq!(body["error"], "bad_secret_token");
        }
        let r = post(
            format!("{}/v1/intake/chat/telegram/nobody", daemon.base),
            first.clone(),
            Some(SECRET),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 404);
        let r = post(
            format!("{}/v1/intake/chat/telegram/polled", daemon.base),
            first.clone(),
            Some(SECRET),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 404, "a polled bot takes no webhook calls");
        let r = post(
            path.clone(),
            b"{\"update_id\": 1, \"message\": ".to_vec(),
            Some(SECRET),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pool = world.db().await;
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM inquiries")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(stored, 0, "a refused webhook call stored an inquiry");

        for update in folder.batches.iter().flatten() {
            let r = post(
                path.clone(),
                serde_json::to_vec(update).unwrap(),
                Some(SECRET),
            )
            .await
            .unwrap();
            assert_eq!(r.status(), 200, "update {}", update["update_id"]);
        }
        ops.settle(wanted_leads(&folder.lines), Duration::from_secs(30))
            .await;
        let problems = check(&ops, &folder, "telegram-hook").await;
        assert!(
            problems.is_empty(),
            "webhook: {problems:#?}\nlog: {}",
            daemon.log()
        );
        pool.close().await;
    }
}

/// A long stream killed mid-way (SIGKILL while a batch is in flight) and restarted: every
/// update is filed exactly once, every person has one lead.
pub async fn a_kill_mid_stream_loses_and_doubles_nothing() {
    let people = 30;
    let mut batches = Vec::new();
    let mut update_id = 500_000_000i64;
    for round in 0..3 {
        for chunk in (0..people).collect::<Vec<i64>>().chunks(3) {
            let mut batch = Vec::new();
            for &p in chunk {
                update_id += 1;
                let user = 9_100_000_000 + p;
                batch.push(json!({"update_id": update_id, "message": {
                    "message_id": round + 1,
                    "from": {"id": user, "is_bot": false, "first_name": format!("Ospite{p}")},
                    "chat": {"id": user, "type": "private"},
                    "date": 1_767_300_000 + update_id % 100_000,
                    "text": format!("Domanda {round} dal cliente {p}")
                }}));
            }
            batches.push(batch);
        }
    }
    let total = update_id - 500_000_000;
    let world = World::new().await;
    let api = BotApi::start(batches, &[]).await;
    api.state.lock().unwrap().delay = Duration::from_millis(150);
    let mut daemon = Daemon::start_with(
        &world,
        &bot_entry("stream", "poll", &api.url, "telegram-stream"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.at() < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        api.at() >= 10,
        "the poller did not get going; log: {}",
        daemon.log()
    );
    daemon.kill();
    daemon.launch().await;
    assert!(
        api.wait_done(Duration::from_secs(90)).await,
        "after the restart the poller never finished (at {})",
        api.at()
    );
    let ops = Ops::new(&daemon, &world);
    let leads = ops.settle(people as usize, Duration::from_secs(30)).await;
    assert_eq!(leads.len(), people as usize, "one lead per person");
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for (_, a) in ops.activities(&leads).await {
        *seen
            .entry(a["data"]["update_id"].as_i64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(seen.len() as i64, total, "every update has its activity");
    assert!(seen.values().all(|&n| n == 1), "an update was filed twice");
    let pool = world.db().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM inquiries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, total, "each update is one inquiry");
    pool.close().await;
}

/// `telegram test` asks getMe and getWebhookInfo; `set-webhook` refuses a polled bot.
pub async fn the_telegram_commands_talk_to_the_bot_api() {
    let world = World::new().await;
    let api = BotApi::start(Vec::new(), &[]).await;
    let daemon = Daemon::start_with(
        &world,
        &format!(
            "{}{}",
            bot_entry("hook", "webhook", &api.url, "telegram-hook"),
            bot_entry("polled", "poll", &api.url, "telegram-polled")
        ),
    )
    .await;
    let (ok, out) = daemon.command(&["telegram", "test", "hook"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("@StandInBot") && out.contains("no webhook is set"),
        "{out}"
    );
    let (ok, out) = daemon.command(&[
        "telegram",
        "set-webhook",
        "hook",
        "https://leads.example.com/v1/intake/chat/telegram/hook",
    ]);
    assert!(ok, "{out}");
    assert_eq!(
        api.state.lock().unwrap().allowed_updates("setWebhook"),
        WANTED_UPDATES
    );
    let (ok, out) = daemon.command(&[
        "telegram",
        "set-webhook",
        "polled",
        "https://x.example.com/",
    ]);
    assert!(!ok && out.contains("poll mode"), "{out}");
    let (ok, out) = daemon.command(&["telegram", "test", "nobody"]);
    assert!(!ok && out.contains("hook, polled"), "{out}");
    assert!(!out.contains("Secret_part"), "{out}");
}
