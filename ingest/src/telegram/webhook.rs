//! Webhook mode: `POST /v1/intake/chat/telegram/{name}`, one Update per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::update::{
    BotReading, StartPayloads, Update, Verdict, forget_start, read_update, start_taken,
};
use super::{count_ignored, count_refused};
use crate::connector::record_success;
use crate::http::{read_limited, received, refusal_problem, reject};
use crate::inquiry::Channel;
use crate::problem::Problem;
use crate::sink::{IntakeSink, Refusal};

/// The header Telegram sends the webhook's secret in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// A bot that takes webhook calls.
pub struct HookBot {
    /// How its updates are read.
    pub reading: BotReading,
    /// The secret Telegram sends back; `None` for a bot in poll mode (it takes no calls).
    pub secret: Option<String>,
}

/// What the webhook endpoint works with.
pub struct HookState {
    bots: HashMap<String, HookBot>,
    sink: Arc<dyn IntakeSink>,
    max_body_bytes: usize,
    // Deep-link payloads per bot, waiting for the chat's next inquiry. Kept in this
    // process: a restart between `/start <payload>` and the first question forgets it.
    starts: Mutex<HashMap<String, StartPayloads>>,
}

/// The webhook routes for `bots`, documented.
pub fn routes(
    bots: Vec<HookBot>,
    sink: Arc<dyn IntakeSink>,
    max_body_bytes: usize,
) -> OpenApiRouter {
    let state = HookState {
        bots: bots
            .into_iter()
            .map(|b| (b.reading.name.clone(), b))
            .collect(),
        sink,
        max_body_bytes,
        starts: Mutex::new(HashMap::new()),
    };
    documented().with_state(Arc::new(state))
}

/// The documented routes, before the state is attached.
pub(crate) fn documented() -> OpenApiRouter<Arc<HookState>> {
    OpenApiRouter::new().routes(routes!(take))
}

/// Telegram's webhook call for a bot in webhook mode: one Update.
///
/// The secret token is checked before the body is read (403, nothing stored). An update
/// that is not an inquiry, or that can never be a lead, is still answered 200 so that
/// Telegram does not send it again; 503 only when the broker did not confirm.
#[utoipa::path(
    post,
    path = "/v1/intake/chat/telegram/{name}",
    tag = "intake",
    params(
        ("name" = String, Path, description = "The bot's `name` in `[[telegram]]`."),
        ("X-Telegram-Bot-Api-Secret-Token" = String, Header, description = "The bot's `secret_token`, as Telegram sends it."),
    ),
    request_body(description = "One Telegram Bot API Update.", content((Object = "application/json"))),
    responses(
        (status = 200, description = "Filed (`inquiry_id`), or passed over (`ignored` or `refused` with the reason).", body = Object),
        (status = 400, description = "`body_unreadable` or `bad_json`: not one Update as JSON.", body = Problem),
        (status = 403, description = "`bad_secret_token`.", body = Problem),
        (status = 404, description = "`unknown_bot`, or `not_a_webhook_bot` for a bot in poll mode.", body = Problem),
        (status = 413, description = "`body_too_large`: over `intake.max_body_bytes`.", body = Problem),
        (status = 503, description = "`unavailable` or `timeout`: Telegram retries.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
async fn take(
    State(state): State<Arc<HookState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(bot) = state.bots.get(&name) else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "unknown_bot",
            format!("no Telegram bot named `{name}` is configured in [[telegram]]"),
        )
        .into_response();
    };
    let source = bot.reading.source.as_str();
    let Some(secret) = &bot.secret else {
        return reject(
            Channel::Chat,
            source,
            Problem::new(
                StatusCode::NOT_FOUND,
                "not_a_webhook_bot",
                format!(
                    "Telegram bot `{name}` is polled (mode = \"poll\"), so it takes no webhook calls"
                ),
            ),
        );
    };
    // Checked before the body is read or parsed: a wrong or missing secret stores nothing.
    let presented = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same_secret(presented, secret.as_bytes()) {
        return reject(
            Channel::Chat,
            source,
            Problem::new(
                StatusCode::FORBIDDEN,
                "bad_secret_token",
                "the X-Telegram-Bot-Api-Secret-Token header is missing or wrong",
            ),
        );
    }
    let raw = match read_limited(&headers, body, state.max_body_bytes).await {
        Ok(raw) => raw,
        Err(problem) => return reject(Channel::Chat, source, problem),
    };
    received(Channel::Chat, source);
    let update: Update = match serde_json::from_slice(&raw) {
        Ok(update) => update,
        Err(error) => {
            return reject(
                Channel::Chat,
                source,
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!("the body is not one Telegram Update as JSON: {error}"),
                ),
            );
        }
    };
    let verdict = {
        let mut starts = state.starts.lock().unwrap_or_else(|p| p.into_inner());
        let chats = starts.entry(name.clone()).or_default();
        read_update(&bot.reading, &update, Bytes::clone(&raw), chats, Utc::now())
    };
    let update_id = update.update_id;
    match verdict {
        Verdict::Ignored(reason) => {
            tracing::debug!(bot = %name, update_id, reason, "Telegram update is not an inquiry.");
            count_ignored(&bot.reading, reason);
            ok(json!({"ok": true, "ignored": reason}))
        }
        Verdict::Inquiry(inquiry) => {
            let taken = start_taken(&inquiry);
            let handed_on = |taken| {
                let mut starts = state.starts.lock().unwrap_or_else(|p| p.into_inner());
                forget_start(starts.entry(name.clone()).or_default(), taken);
            };
            match state.sink.submit(*inquiry).await {
                Ok(accepted) => {
                    handed_on(taken);
                    record_success(Channel::Chat, source, None);
                    ok(json!({"ok": true, "inquiry_id": accepted.inquiry_id}))
                }
                // Telegram sends a refused update again and again; a content refusal cannot
                // change, so it is counted and answered 200.
                Err(Refusal::Unusable { code, message, .. }) => {
                    tracing::warn!(bot = %name, update_id, code, %message, "A Telegram update was refused by the pipeline.");
                    handed_on(taken);
                    count_refused(&bot.reading, code);
                    ok(json!({"ok": true, "refused": code}))
                }
                // Telegram sends it again; the deep-link payload waits for that retry.
                Err(refusal) => reject(Channel::Chat, source, refusal_problem(refusal)),
            }
        }
    }
}

fn ok(body: serde_json::Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Compares in constant time: both sides are hashed first, so neither the content nor
/// the length of the secret shows in the time taken.
fn same_secret(presented: &[u8], secret: &[u8]) -> bool {
    let a = Sha256::digest(presented);
    let b = Sha256::digest(secret);
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0 && !presented.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inquiry::Inquiry;
    use crate::sink::{Accepted, PreparedInquiry};
    use async_trait::async_trait;
    use axum::http::Request;
    use tower::ServiceExt;

    /// Refuses the first `outages` submits as the broker not confirming, then keeps
    /// what it is handed.
    #[derive(Default)]
    struct FlakySink {
        outages: Mutex<u32>,
        kept: Mutex<Vec<Inquiry>>,
    }

    struct Ready(Arc<FlakySink>, Inquiry);

    #[async_trait]
    impl PreparedInquiry for Ready {
        async fn submit(self: Box<Self>) -> Result<Accepted, Refusal> {
            let mut outages = self.0.outages.lock().unwrap();
            if *outages > 0 {
                *outages -= 1;
                return Err(Refusal::Unavailable {
                    code: "unavailable",
                    reason: "the broker did not confirm".into(),
                    retry_after_secs: 1,
                });
            }
            let inquiry_id = self.1.id;
            self.0.kept.lock().unwrap().push(self.1);
            Ok(Accepted { inquiry_id })
        }
    }

    #[async_trait]
    impl IntakeSink for Arc<FlakySink> {
        async fn prepare(&self, inquiry: Inquiry) -> Result<Box<dyn PreparedInquiry>, Refusal> {
            Ok(Box::new(Ready(Arc::clone(self), inquiry)))
        }
    }

    async fn post(router: &axum::Router, update: serde_json::Value) -> StatusCode {
        let request = Request::post("/v1/intake/chat/telegram/shop")
            .header(SECRET_HEADER, "s3cret")
            .header("content-type", "application/json")
            .body(Body::from(update.to_string()))
            .unwrap();
        router.clone().oneshot(request).await.unwrap().status()
    }

    fn message(update_id: i64, text: &str) -> serde_json::Value {
        json!({"update_id": update_id, "message": {
            "message_id": update_id, "from": {"id": 42, "first_name": "Anna"},
            "chat": {"id": 42, "type": "private"}, "date": 1_700_000_000, "text": text}})
    }

    #[tokio::test]
    async fn a_deep_link_survives_an_update_the_broker_did_not_take() {
        let sink = Arc::new(FlakySink::default());
        let bot = HookBot {
            reading: BotReading {
                name: "shop".into(),
                source: "telegram".into(),
                default_region: None,
            },
            secret: Some("s3cret".into()),
        };
        let (router, _) = routes(vec![bot], Arc::new(Arc::clone(&sink)), 1 << 16).split_for_parts();
        assert_eq!(
            post(&router, message(1, "/start promo_7")).await,
            StatusCode::OK
        );
        *sink.outages.lock().unwrap() = 1;
        let question = message(2, "Ciao, un preventivo?");
        assert_eq!(
            post(&router, question.clone()).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(post(&router, question).await, StatusCode::OK);
        assert_eq!(post(&router, message(3, "Grazie")).await, StatusCode::OK);
        let kept = sink.kept.lock().unwrap();
        let sources: Vec<_> = kept
            .iter()
            .map(|i| i.utm.get("utm_source").cloned())
            .collect();
        assert_eq!(sources, [Some("promo_7".to_owned()), None]);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc-123", b"abc-123"));
        assert!(!same_secret(b"abc-12", b"abc-123"));
        assert!(!same_secret(b"", b""));
        assert!(!same_secret(b"abc-124", b"abc-123"));
    }
}
