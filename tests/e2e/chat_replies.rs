//! Where inbound chat meets outbound replies: the daemon's own `[[telegram]]` and
//! `[whatsapp]` settings, an update and a webhook filed by the real connectors, and a reply
//! to each lead sent back through the same bot or number. The platforms are played by the
//! stand-in of `replies.rs`.

use std::time::Duration;

use serde_json::json;

use crate::replies::{StandIn, lead_with_key, settled};
use crate::support::{Options, Response, TestDaemon};

const TOKEN: &str = "424242:SEAM";
const SECRET: &str = "seam-secret-token";
const APP_SECRET: &str = "seam-app-secret";
const PHONE_NUMBER_ID: &str = "106540352242922";
const ACCESS_TOKEN: &str = "EAAG-seam-token";

fn config(api: &str) -> String {
    format!(
        "[[telegram]]\nname = \"seam\"\ntoken = \"{TOKEN}\"\napi_base = \"{api}\"\nmode = \"webhook\"\n\
         secret_token = \"{SECRET}\"\nsource = \"telegram-seam\"\n\n\
         [whatsapp]\napp_secret = \"{APP_SECRET}\"\nverify_token = \"verify\"\nsource = \"whatsapp\"\n\
         access_token = \"{ACCESS_TOKEN}\"\nphone_number_id = \"{PHONE_NUMBER_ID}\"\napi_base = \"{api}/v21.0\"\n\n"
    )
}

async fn send(request: reqwest::RequestBuilder) -> Response {
    Response::read(request.send().await.expect("the daemon answers")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_from_a_configured_bot_or_number_is_answered_through_it() {
    let api = StandIn::start().await;
    let daemon = TestDaemon::start_with(Options {
        extra_config: config(&api.base()),
        ..Options::default()
    })
    .await;

    let update = json!({"update_id": 5001, "message": {
        "message_id": 17, "date": 1_767_200_000,
        "from": {"id": 930_001, "is_bot": false, "first_name": "Agnieszka", "last_name": "Wójcik"},
        "chat": {"id": 930_001, "type": "private", "first_name": "Agnieszka"},
        "text": "Dzień dobry, czy sofa jest dostępna w kolorze szarym?"}});
    let filed = send(
        daemon
            .http
            .post(format!("{}/v1/intake/chat/telegram/seam", daemon.base))
            .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
            .json(&update),
    )
    .await;
    assert_eq!(filed.status, 200, "{}", filed.text());

    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "390212345678", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Trần Minh Khoa"}, "wa_id": "84912345678"}],
        "messages": [{"from": "84912345678", "id": "wamid.SEAM1", "timestamp": "1767200100",
                      "type": "text", "text": {"body": "Cho tôi hỏi giá ghế sofa?"}}]}}]}]})
    .to_string();
    let signature = ingest::http::signature::sign(APP_SECRET.as_bytes(), body.as_bytes());
    let filed = send(
        daemon
            .http
            .post(format!("{}/v1/intake/chat/whatsapp", daemon.base))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body),
    )
    .await;
    assert_eq!(filed.status, 200, "{}", filed.text());

    let telegram_lead = lead_with_key(&daemon, "messenger:telegram:930001").await;
    let whatsapp_lead = lead_with_key(&daemon, "messenger:whatsapp:84912345678").await;

    let text = "Tak, szary jest dostępny od ręki.";
    let accepted = daemon
        .post_json(
            &format!("/v1/leads/{telegram_lead}/messages"),
            json!({"text": text}),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let telegram_reply = accepted.json()["id"].as_i64().unwrap();
    let seen = api.wait_seen(1, Duration::from_secs(20)).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, format!("/bot{TOKEN}/sendMessage"));
    assert_eq!(seen[0].body, json!({"chat_id": 930_001, "text": text}));
    let activity = settled(
        &daemon,
        telegram_lead,
        telegram_reply,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(activity["data"]["delivery"], "sent", "{activity}");

    let text = "Dạ, ghế sofa giá 12.500.000 ₫.";
    let accepted = daemon
        .post_json(
            &format!("/v1/leads/{whatsapp_lead}/messages"),
            json!({"text": text}),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let whatsapp_reply = accepted.json()["id"].as_i64().unwrap();
    let seen = api.wait_seen(2, Duration::from_secs(20)).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].path, format!("/v21.0/{PHONE_NUMBER_ID}/messages"));
    assert_eq!(
        seen[1].authorization.as_deref(),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
    assert_eq!(seen[1].body["to"], "84912345678", "{:?}", seen[1].body);
    assert_eq!(seen[1].body["text"]["body"], text, "{:?}", seen[1].body);
    let activity = settled(
        &daemon,
        whatsapp_lead,
        whatsapp_reply,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(activity["data"]["delivery"], "sent", "{activity}");
}
