//! Replies through a lead's channel: `POST /v1/leads/{id}/messages` on a daemon run in
//! this process (so the test hands it the chat accounts directly), against the real
//! database and broker, with the Telegram Bot API and the WhatsApp Cloud API played by a
//! local stand-in speaking their documented JSON, and mail through a real SMTP server.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use ingest::{
    ActivityKind, Channel, ContactHints, ConversationKey, EventRef, Inquiry, InquiryId, IntakeSink,
    MessengerHandle, RawPayload,
};
use leadpipe::pipeline::Pipeline;
use leadpipe::replies::{ReplyChannels, ReplyPolicy, TelegramBot, WhatsAppAccount};
use leadpipe::settings::Settings;
use leadpipe::startup::Application;
use metrics_exporter_prometheus::PrometheusHandle;
use router::{LeadRouter, Publisher};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::mail::{Sink, header};
use crate::support::{Options, TestDaemon, free_port};

const TOKEN: &str = "123456:TEST";
const PHONE_NUMBER_ID: &str = "109876543210";
const ACCESS_TOKEN: &str = "EAAG-test-token";

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) authorization: Option<String>,
    pub(crate) body: Value,
    at: Instant,
}

/// What the stand-in answers to one request: a status and a JSON body.
type Scripted = (u16, Value);

#[derive(Default)]
struct StandInState {
    seen: Vec<Seen>,
    script: VecDeque<Scripted>,
    delay: Duration,
    next_id: i64,
}

/// The Bot API and the Graph API on loopback: answers from its script first, then
/// success in each platform's format.
#[derive(Clone)]
pub(crate) struct StandIn {
    addr: SocketAddr,
    state: Arc<Mutex<StandInState>>,
}

async fn respond(
    State(state): State<Arc<Mutex<StandInState>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let (scripted, delay, id) = {
        let mut s = state.lock().unwrap();
        s.seen.push(Seen {
            path: uri.path().to_owned(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: Instant::now(),
        });
        s.next_id += 1;
        (s.script.pop_front(), s.delay, s.next_id)
    };
    tokio::time::sleep(delay).await;
    let (status, body) = scripted.unwrap_or_else(|| {
        if uri.path().ends_with("/sendMessage") {
            (
                200,
                json!({"ok": true, "result": {"message_id": 1000 + id, "date": 1_767_000_000,
                       "chat": {"id": 1, "type": "private"}, "text": "..."}}),
            )
        } else {
            (
                200,
                json!({"messaging_product": "whatsapp",
                       "contacts": [{"input": "x", "wa_id": "x"}],
                       "messages": [{"id": format!("wamid.TEST{id}")}]}),
            )
        }
    });
    (StatusCode::from_u16(status).unwrap(), axum::Json(body))
}

impl StandIn {
    /// On a port of its own (0: bound at once, so no other test can take it meanwhile).
    pub(crate) async fn start() -> Self {
        Self::start_on(0).await
    }

    async fn start_on(port: u16) -> Self {
        let state = Arc::new(Mutex::new(StandInState::default()));
        let app = Router::new().fallback(respond).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the stand-in");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn script(&self, answers: Vec<Scripted>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    fn delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub(crate) async fn wait_seen(&self, n: usize, timeout: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.seen();
            if seen.len() >= n || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn telegram_channels(base: &str) -> ReplyChannels {
    let mut channels = ReplyChannels::default();
    channels.telegram.insert(
        "shop".into(),
        TelegramBot {
            api_base: base.into(),
            token: TOKEN.to_owned().into(),
        },
    );
    channels
}

fn whatsapp_channels(base: &str) -> ReplyChannels {
    ReplyChannels {
        whatsapp: Some(WhatsAppAccount {
            api_base: base.into(),
            access_token: ACCESS_TOKEN.to_owned().into(),
            phone_number_id: PHONE_NUMBER_ID.into(),
        }),
        ..ReplyChannels::default()
    }
}

fn quick_policy() -> ReplyPolicy {
    ReplyPolicy {
        max_attempts: 3,
        retry_initial: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        request_timeout: Duration::from_secs(5),
    }
}

/// The metrics recorder is process-wide: installed once for every in-process daemon.
fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| leadpipe::telemetry::init_metrics().expect("a metrics recorder"))
        .clone()
}

/// A daemon running in this process on a [`TestDaemon`]'s database, prefix and port.
struct InProcess {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn settings(daemon: &TestDaemon) -> Settings {
    Settings::load(Some(&daemon.config_path)).unwrap_or_else(|problems| {
        panic!("the test config is valid: {problems:?}");
    })
}

impl InProcess {
    async fn start(daemon: &TestDaemon, channels: ReplyChannels) -> Self {
        Self::start_with(daemon, channels, quick_policy()).await
    }

    async fn start_with(daemon: &TestDaemon, channels: ReplyChannels, policy: ReplyPolicy) -> Self {
        let app = Application::build_with_replies(settings(daemon), metrics(), channels, policy)
            .await
            .expect("the daemon builds");
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(stop.clone()));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = daemon
                .http
                .get(format!("{}/readyz", daemon.base))
                .send()
                .await
                && r.status() == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon was not ready in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { stop, task }
    }

    /// Stops as SIGTERM does, and waits until it has.
    async fn stop(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("the daemon task")
            .expect("the daemon stops cleanly");
    }
}

/// Files `inquiry` through the real pipeline (normalise, route, publish, confirm).
async fn file(daemon: &TestDaemon, inquiry: Inquiry) {
    let settings = settings(daemon);
    let publisher = Publisher::new(settings.amqp.clone());
    let stop = CancellationToken::new();
    let connection = tokio::spawn(publisher.clone().run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !publisher.is_ready().await {
        assert!(Instant::now() < deadline, "the broker is reachable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pipeline = Pipeline::new(LeadRouter::new(settings.routing.clone()), publisher);
    pipeline
        .submit(inquiry)
        .await
        .expect("the pipeline takes the inquiry");
    stop.cancel();
    let _ = connection.await;
}

fn inquiry(channel: Channel, source: &str, external_id: &str, contact: ContactHints) -> Inquiry {
    Inquiry {
        id: InquiryId::from_external(channel, source, external_id),
        channel,
        source: source.into(),
        external_id: Some(external_id.into()),
        received_at: chrono::Utc::now(),
        default_region: None,
        contact,
        message: None,
        utm: Default::default(),
        fields: Default::default(),
        attachments: Vec::new(),
        spam: None,
        dedup: None,
        raw: RawPayload {
            content_type: Some("application/json".into()),
            body: Bytes::from_static(b"{}"),
        },
        event: None,
    }
}

/// A private Telegram message to bot `shop`, as the inbound connector files it.
fn telegram_message(chat_id: i64, message_id: i64, text: &str) -> Inquiry {
    let mut inquiry = inquiry(
        Channel::Chat,
        "telegram-shop",
        &format!("{chat_id}:{message_id}"),
        ContactHints {
            full_name: Some("Giulia Verdi".into()),
            messenger: Some(MessengerHandle {
                platform: "telegram".into(),
                user_id: chat_id.to_string(),
                username: None,
            }),
            ..ContactHints::default()
        },
    );
    inquiry.message = Some(text.into());
    let mut event = EventRef::new(ActivityKind::Message);
    event.conversation =
        vec![ConversationKey::chat("telegram-shop", &chat_id.to_string()).unwrap()];
    event.activity_key = Some(format!("telegram:shop:{chat_id}:{message_id}"));
    event.data.insert("chat_id".into(), json!(chat_id));
    event.data.insert("message_id".into(), json!(message_id));
    inquiry.event = Some(event);
    inquiry
}

/// A WhatsApp text to [`PHONE_NUMBER_ID`] from `wa_id`.
fn whatsapp_message(wa_id: &str, text: &str) -> Inquiry {
    let wamid = format!("wamid.IN{wa_id}");
    let mut inquiry = inquiry(
        Channel::Chat,
        "whatsapp",
        &wamid,
        ContactHints {
            phone: Some(format!("+{wa_id}")),
            messenger: Some(MessengerHandle {
                platform: "whatsapp".into(),
                user_id: wa_id.into(),
                username: None,
            }),
            ..ContactHints::default()
        },
    );
    inquiry.message = Some(text.into());
    let mut event = EventRef::new(ActivityKind::Message);
    event.conversation =
        vec![ConversationKey::chat(&format!("whatsapp-{PHONE_NUMBER_ID}"), wa_id).unwrap()];
    event.activity_key = Some(format!("whatsapp:{wamid}"));
    event.data.insert("wamid".into(), json!(wamid));
    inquiry.event = Some(event);
    inquiry
}

/// A mail from `email` with `message_id`, as the mailbox reader files it.
fn mail_message(email: &str, message_id: &str, subject: &str) -> Inquiry {
    let mut inquiry = inquiry(
        Channel::Email,
        "mail-info",
        message_id,
        ContactHints {
            full_name: Some("Luca Bianchi".into()),
            email: Some(email.into()),
            ..ContactHints::default()
        },
    );
    inquiry.message = Some("Vorrei un preventivo.".into());
    let mut event = EventRef::new(ActivityKind::Email);
    event.conversation = vec![ConversationKey::email_thread(message_id).unwrap()];
    event.activity_key = Some(format!("email:{message_id}"));
    event.subject = Some(subject.into());
    event.data.insert("message_id".into(), json!(message_id));
    inquiry.event = Some(event);
    inquiry
}

/// The id of the one lead holding `key`, once filed.
pub(crate) async fn lead_with_key(daemon: &TestDaemon, key: &str) -> i64 {
    let query = format!("key={}", key.replace('+', "%2B"));
    let leads = daemon
        .wait_for_leads(&query, 1, Duration::from_secs(30))
        .await;
    assert_eq!(leads.len(), 1, "one lead holds {key}: {leads:?}");
    leads[0]["id"].as_i64().unwrap()
}

async fn reply(
    daemon: &TestDaemon,
    lead: i64,
    body: Value,
    key: Option<&str>,
) -> crate::support::Response {
    match key {
        None => {
            daemon
                .post_json(&format!("/v1/leads/{lead}/messages"), body)
                .await
        }
        Some(key) => {
            let response = daemon
                .http
                .post(format!("{}/v1/leads/{lead}/messages", daemon.base))
                .bearer_auth(&daemon.admin)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .expect("the daemon answers");
            crate::support::Response::read(response).await
        }
    }
}

/// The activity `id` of lead `lead` once `data.delivery` is no longer `pending`.
pub(crate) async fn settled(daemon: &TestDaemon, lead: i64, id: i64, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let detail = daemon.get(&format!("/v1/leads/{lead}")).await.json();
        let activity = detail["activities"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["id"] == id).cloned())
            .expect("the reply's activity is on the lead");
        if activity["data"]["delivery"] != "pending" || Instant::now() > deadline {
            return activity;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(daemon: &TestDaemon, line_start: &str) -> f64 {
    let text = daemon
        .http
        .get(format!("{}/metrics", daemon.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_telegram_lead_is_sent_once_through_its_bot_and_marked_sent() {
    let api = StandIn::start().await;
    let daemon = TestDaemon::prepare_with(Options::default()).await;
    let running = InProcess::start(&daemon, telegram_channels(&api.base())).await;
    file(&daemon, telegram_message(777_001, 1, "Avete la taglia M?")).await;
    let lead = lead_with_key(&daemon, "messenger:telegram:777001").await;

    let text = "Ciao Giulia, sì: la M è disponibile. 🙂";
    let accepted = reply(&daemon, lead, json!({"text": text}), Some("k-1")).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let answer = accepted.json();
    assert_eq!(answer["delivery"], "pending", "{answer}");
    assert_eq!(answer["activity"]["kind"], "message");
    assert_eq!(answer["activity"]["channel"], "chat");
    assert_eq!(answer["activity"]["body"], text);
    assert_eq!(answer["activity"]["data"]["direction"], "outbound");
    let id = answer["id"].as_i64().unwrap();

    let seen = api.wait_seen(1, Duration::from_secs(20)).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("/bot{TOKEN}/sendMessage"));
    assert_eq!(seen[0].body, json!({"chat_id": 777_001, "text": text}));

    let activity = settled(&daemon, lead, id, Duration::from_secs(20)).await;
    assert_eq!(activity["data"]["delivery"], "sent", "{activity}");
    assert_eq!(activity["data"]["message_id"], 1001, "{activity}");
    assert_eq!(activity["data"]["chat_id"], 777_001, "{activity}");

    // The same request again is the same reply, never a second message.
    let again = reply(&daemon, lead, json!({"text": text}), Some("k-1")).await;
    assert_eq!(again.status, 202, "{}", again.text());
    assert_eq!(again.json()["id"], id);
    assert_eq!(again.json()["delivery"], "sent");
    reply(&daemon, lead, json!({"text": "altro"}), Some("k-1"))
        .await
        .assert_error(422, "idempotency_key_reused");
    // Concurrent retries of one request: one reply.
    let retries = (0..5).map(|_| reply(&daemon, lead, json!({"text": "Grazie!"}), Some("k-2")));
    let answers = futures_util::future::join_all(retries).await;
    let ids: std::collections::BTreeSet<i64> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, 202, "{}", r.text());
            r.json()["id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one activity for one key: {ids:?}");
    api.wait_seen(2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.seen().len(), 2, "each request sent once");
    assert!(
        metric(&daemon, "leadpipe_replies_sent_total{channel=\"telegram\"}").await >= 1.0,
        "counted"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_whatsapp_lead_goes_to_the_cloud_api_with_the_bearer_token() {
    let api = StandIn::start().await;
    let daemon = TestDaemon::prepare_with(Options::default()).await;
    let running = InProcess::start(&daemon, whatsapp_channels(&api.base())).await;
    file(&daemon, whatsapp_message("393331234567", "Prezzo?")).await;
    let lead = lead_with_key(&daemon, "messenger:whatsapp:393331234567").await;

    let accepted = reply(&daemon, lead, json!({"text": "Buongiorno, 25 €."}), None).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let id = accepted.json()["id"].as_i64().unwrap();
    let seen = api.wait_seen(1, Duration::from_secs(20)).await;
    assert_eq!(
        seen[0].path,
        format!(
            "/{}/{PHONE_NUMBER_ID}/messages",
            leadpipe::replies::GRAPH_VERSION
        )
    );
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
    assert_eq!(
        seen[0].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual",
               "to": "393331234567", "type": "text",
               "text": {"preview_url": false, "body": "Buongiorno, 25 €."}})
    );
    let activity = settled(&daemon, lead, id, Duration::from_secs(20)).await;
    assert_eq!(activity["data"]["delivery"], "sent", "{activity}");
    assert_eq!(activity["data"]["wamid"], "wamid.TEST1", "{activity}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_server_errors_and_a_dead_network_are_retried_until_sent() {
    // Telegram: a 429 asks for 2 s; the retry waits that long, then succeeds.
    let api = StandIn::start().await;
    api.script(vec![(
        429,
        json!({"ok": false, "error_code": 429,
               "description": "Too Many Requests: retry after 2",
               "parameters": {"retry_after": 2}}),
    )]);
    // WhatsApp: nothing listens at first (a network error), then a 503, then success.
    let wa_port = free_port();
    let mut channels = telegram_channels(&api.base());
    channels.whatsapp = whatsapp_channels(&format!("http://127.0.0.1:{wa_port}")).whatsapp;
    let daemon = TestDaemon::prepare_with(Options::default()).await;
    let patient = ReplyPolicy {
        max_attempts: 100,
        ..quick_policy()
    };
    let running = InProcess::start_with(&daemon, channels, patient).await;
    file(&daemon, telegram_message(777_002, 1, "Info")).await;
    file(&daemon, whatsapp_message("48501234567", "Info")).await;
    let tg_lead = lead_with_key(&daemon, "messenger:telegram:777002").await;
    let wa_lead = lead_with_key(&daemon, "messenger:whatsapp:48501234567").await;

    let tg = reply(&daemon, tg_lead, json!({"text": "Subito"}), None)
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let wa = reply(&daemon, wa_lead, json!({"text": "Dzień dobry"}), None)
        .await
        .json()["id"]
        .as_i64()
        .unwrap();

    let seen = api.wait_seen(2, Duration::from_secs(20)).await;
    assert_eq!(seen.len(), 2, "the 429 was retried");
    assert!(
        seen[1].at.duration_since(seen[0].at) >= Duration::from_millis(1_900),
        "the retry waited retry_after: {:?}",
        seen[1].at.duration_since(seen[0].at)
    );
    let activity = settled(&daemon, tg_lead, tg, Duration::from_secs(20)).await;
    assert_eq!(activity["data"]["delivery"], "sent", "{activity}");

    // The WhatsApp reply failed on the network at least once and is still pending.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let detail = daemon.get(&format!("/v1/leads/{wa_lead}")).await.json();
    let pending = detail["activities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == wa)
        .cloned()
        .unwrap();
    assert_eq!(pending["data"]["delivery"], "pending", "{pending}");
    assert!(
        pending["data"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("onnect")),
        "the failure is reported on the lead: {pending}"
    );
    let wa_api = StandIn::start_on(wa_port).await;
    wa_api.script(vec![(
        503,
        json!({"error": {"message": "Service temporarily unavailable", "type": "OAuthException",
                         "code": 2, "fbtrace_id": "A1"}}),
    )]);
    let activity = settled(&daemon, wa_lead, wa, Duration::from_secs(30)).await;
    assert_eq!(activity["data"]["delivery"], "sent", "{activity}");
    assert_eq!(wa_api.seen().len(), 2, "one 503, one success");
    assert!(
        metric(
            &daemon,
            "leadpipe_reply_failures_total{channel=\"telegram\",outcome=\"rate_limited\"}"
        )
        .await
            >= 1.0
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reply_or_one_that_keeps_failing_is_marked_failed_on_the_lead() {
    let api = StandIn::start().await;
    api.script(vec![(
        400,
        json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
    )]);
    let wa_api = StandIn::start().await;
    let server_error = (
        500,
        json!({"error": {"message": "An unknown error occurred", "type": "OAuthException",
                         "code": 1, "fbtrace_id": "B2"}}),
    );
    wa_api.script(vec![
        server_error.clone(),
        server_error.clone(),
        server_error,
    ]);
    let mut channels = telegram_channels(&api.base());
    channels.whatsapp = whatsapp_channels(&wa_api.base()).whatsapp;
    let daemon = TestDaemon::prepare_with(Options::default()).await;
    let running = InProcess::start(&daemon, channels).await;
    file(&daemon, telegram_message(777_003, 1, "Ciao")).await;
    file(&daemon, whatsapp_message("84901234567", "Xin chào")).await;
    let tg_lead = lead_with_key(&daemon, "messenger:telegram:777003").await;
    let wa_lead = lead_with_key(&daemon, "messenger:whatsapp:84901234567").await;

    let tg = reply(&daemon, tg_lead, json!({"text": "Ciao!"}), None)
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let activity = settled(&daemon, tg_lead, tg, Duration::from_secs(20)).await;
    assert_eq!(activity["data"]["delivery"], "failed", "{activity}");
    assert!(
        activity["data"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("chat not found") && !e.contains(TOKEN)),
        "{activity}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(api.seen().len(), 1, "a refusal is not retried");

    let wa = reply(&daemon, wa_lead, json!({"text": "Chào bạn"}), None)
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let activity = settled(&daemon, wa_lead, wa, Duration::from_secs(30)).await;
    assert_eq!(activity["data"]["delivery"], "failed", "{activity}");
    assert_eq!(activity["data"]["attempts"], 3, "{activity}");
    assert_eq!(wa_api.seen().len(), 3, "given up after max_attempts");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_replies_are_being_sent_sends_each_exactly_once() {
    let api = StandIn::start().await;
    api.delay(Duration::from_millis(400));
    let daemon = TestDaemon::prepare_with(Options::default()).await;
    let running = InProcess::start(&daemon, telegram_channels(&api.base())).await;
    file(&daemon, telegram_message(777_004, 1, "Ciao")).await;
    let lead = lead_with_key(&daemon, "messenger:telegram:777004").await;
    let texts: Vec<String> = (1..=8).map(|n| format!("risposta {n}")).collect();
    for text in &texts {
        let r = reply(&daemon, lead, json!({"text": text}), None).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    api.wait_seen(2, Duration::from_secs(20)).await;
    running.stop().await;
    let before = api.seen().len();
    assert!(before < texts.len(), "stopped mid-way ({before} sent)");
    let pool = daemon.db().await;
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM replies GROUP BY state ORDER BY state")
            .fetch_all(&pool)
            .await
            .unwrap();
    let sent = states
        .iter()
        .find(|(s, _)| s == "sent")
        .map_or(0, |(_, n)| *n);
    assert_eq!(
        sent as usize, before,
        "every message sent was marked: {states:?}"
    );
    assert!(
        !states.iter().any(|(s, _)| s == "sending"),
        "nothing left claimed: {states:?}"
    );

    api.delay(Duration::ZERO);
    let running = InProcess::start(&daemon, telegram_channels(&api.base())).await;
    let seen = api.wait_seen(texts.len(), Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut received: Vec<String> = api
        .seen()
        .iter()
        .map(|s| s.body["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    received.sort();
    let mut expected = texts.clone();
    expected.sort();
    assert_eq!(
        received,
        expected,
        "each reply exactly once ({} seen)",
        seen.len()
    );
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM replies WHERE state <> 'sent'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(unsent, 0);
    pool.close().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_that_cannot_be_answered_and_bad_bodies_are_refused_with_reasons() {
    let daemon = TestDaemon::prepare_with(Options::default()).await;
    // No bot configured at all: a Telegram lead cannot be answered here.
    let running = InProcess::start(&daemon, ReplyChannels::default()).await;
    let form = daemon
        .post_form(
            "it-contatti",
            Some("application/x-www-form-urlencoded"),
            "nome=Anna&email=anna.rossi%40esempio-shop.it&messaggio=Salve",
            &[],
        )
        .await;
    assert_eq!(form.status, 202, "{}", form.text());
    let form_lead = lead_with_key(&daemon, "email:anna.rossi@esempio-shop.it").await;
    file(&daemon, telegram_message(777_005, 1, "Ciao")).await;
    let tg_lead = lead_with_key(&daemon, "messenger:telegram:777005").await;
    file(
        &daemon,
        mail_message("luca@bianchi-srl.it", "<q1@bianchi-srl.it>", "Preventivo"),
    )
    .await;
    let mail_lead = lead_with_key(&daemon, "email:luca@bianchi-srl.it").await;

    reply(&daemon, form_lead, json!({"text": "Salve"}), None)
        .await
        .assert_error(409, "no_reply_channel");
    reply(&daemon, tg_lead, json!({"text": "Ciao"}), None)
        .await
        .assert_error(409, "channel_not_configured");
    // A lead from mail with no [smtp] to answer through.
    reply(&daemon, mail_lead, json!({"text": "Ciao"}), None)
        .await
        .assert_error(409, "mail_not_configured");
    reply(&daemon, 999_999, json!({"text": "Ciao"}), None)
        .await
        .assert_error(404, "lead_not_found");
    let by_name = daemon
        .post_json("/v1/leads/abc/messages", json!({"text": "x"}))
        .await;
    by_name.assert_error(404, "lead_not_found");
    reply(&daemon, form_lead, json!({"text": "   "}), None)
        .await
        .assert_error(422, "empty_text");
    reply(&daemon, form_lead, json!({"message": "Ciao"}), None)
        .await
        .assert_error(400, "bad_body");
    let unauthorised = daemon
        .http
        .post(format!("{}/v1/leads/{tg_lead}/messages", daemon.base))
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
    running.stop().await;

    // With the bot configured, an oversized text is refused before anything is recorded.
    let api = StandIn::start().await;
    let running = InProcess::start(&daemon, telegram_channels(&api.base())).await;
    reply(&daemon, tg_lead, json!({"text": "a".repeat(4097)}), None)
        .await
        .assert_error(422, "text_too_long");
    let ok = reply(&daemon, tg_lead, json!({"text": "a".repeat(4096)}), None).await;
    assert_eq!(ok.status, 202, "{}", ok.text());
    let pool = daemon.db().await;
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM replies")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, 1, "only the accepted reply is recorded");
    pool.close().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_lead_from_mail_joins_its_thread_through_the_outbox() {
    let mut sink = Sink::new();
    sink.start().await;
    let daemon = TestDaemon::prepare_with(Options {
        extra_config: sink.config(),
        ..Options::default()
    })
    .await;
    let running = InProcess::start(&daemon, ReplyChannels::default()).await;
    file(
        &daemon,
        mail_message(
            "luca@bianchi-srl.it",
            "<q1@bianchi-srl.it>",
            "Preventivo città",
        ),
    )
    .await;
    let lead = lead_with_key(&daemon, "email:luca@bianchi-srl.it").await;
    let accepted = reply(
        &daemon,
        lead,
        json!({"text": "Gentile Luca,\nin allegato il preventivo."}),
        Some("mail-1"),
    )
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let answer = accepted.json();
    assert_eq!(answer["channel"], "email");
    assert_eq!(answer["activity"]["subject"], "Re: Preventivo città");
    let id = answer["id"].as_i64().unwrap();
    let again = reply(
        &daemon,
        lead,
        json!({"text": "Gentile Luca,\nin allegato il preventivo."}),
        Some("mail-1"),
    )
    .await;
    assert_eq!(again.json()["id"], id);

    let messages = sink.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), 1, "one mail");
    let mail = &messages[0];
    assert_eq!(
        header(mail, "In-Reply-To").as_deref(),
        Some("<q1@bianchi-srl.it>")
    );
    assert_eq!(
        header(mail, "References").as_deref(),
        Some("<q1@bianchi-srl.it>")
    );
    assert_eq!(
        header(mail, "X-RcptTo").as_deref(),
        Some("luca@bianchi-srl.it")
    );
    assert_eq!(header(mail, "Auto-Submitted"), None, "a person wrote it");
    assert!(mail.contains("in allegato il preventivo"), "{mail}");
    let activity = settled(&daemon, lead, id, Duration::from_secs(20)).await;
    assert_eq!(activity["data"]["delivery"], "sent", "{activity}");
    assert_eq!(
        activity["data"]["message_id"].as_str(),
        header(mail, "Message-ID").as_deref(),
        "{activity}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.messages().len(), 1, "sent once");
    running.stop().await;
}
