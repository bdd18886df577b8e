//! `POST /v1/leads/{id}/messages`: a reply to the lead through the channel it came from.
//!
//! The reply goes to the lead's most recently opened Telegram or WhatsApp chat whose bot
//! or number is configured, else, for a lead that came by mail, to its mail thread (the
//! mail outbox, answering the customer's last mail). It is recorded with an outbound
//! activity (`delivery = pending`) in one transaction and answered 202; a worker sends it
//! and marks the activity `sent` or `failed`. Under an `Idempotency-Key` a retried request
//! records and sends nothing new.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ingest::problem::Problem;
use serde::Deserialize;
use serde_json::json;
use store::{Activity, ChatPlatform, NewReply, RecordedReply, ReplyTarget, Scope, StoreError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{ApiState, Caller, store_problem};

/// Telegram's and WhatsApp's limit on a text message, in UTF-16 code units (what Telegram
/// counts); both allow 4096.
const MAX_CHAT_TEXT: usize = 4096;

/// A mail body longer than this is refused: a reply is something a person typed.
const MAX_MAIL_TEXT: usize = 100_000;

/// The message routes (mounted behind authentication; every role, within its scope).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(post_message))
}

/// A reply to send.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    /// The text; not blank, at most 4096 UTF-16 units for a chat.
    text: String,
}

fn bad_body(message: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad_body", message)
}

/// Reads `{"text": "..."}`; the text must have something besides white space.
fn parse_body(body: &[u8]) -> Result<String, Problem> {
    let parsed: MessageBody = serde_json::from_slice(body).map_err(|e| {
        bad_body(format!(
            "send a JSON object {{\"text\": \"...\"}} and nothing else: {e}"
        ))
    })?;
    if parsed.text.trim().is_empty() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_text",
            "text is empty: write the message to send",
        ));
    }
    Ok(parsed.text)
}

/// Refuses a text longer than `target`'s channel takes.
fn check_length(text: &str, target: &ReplyTarget) -> Result<(), Problem> {
    let (length, limit, channel) = match target {
        ReplyTarget::Chat(chat) => (
            text.encode_utf16().count(),
            MAX_CHAT_TEXT,
            match chat.platform {
                ChatPlatform::Telegram => "Telegram",
                ChatPlatform::WhatsApp => "WhatsApp",
            },
        ),
        ReplyTarget::Mail(_) => (text.chars().count(), MAX_MAIL_TEXT, "a mail reply"),
    };
    if length > limit {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "text_too_long",
            format!(
                "text is {length} characters long; {channel} takes at most {limit}: shorten it or send it in parts"
            ),
        ));
    }
    Ok(())
}

fn conflict(code: &'static str, message: String) -> Problem {
    Problem::new(StatusCode::CONFLICT, code, message)
}

/// Picks where lead `id`'s reply goes, or says why it cannot be answered here.
async fn choose_target(state: &ApiState, id: i64, scope: &Scope) -> Result<ReplyTarget, Problem> {
    let routes = state
        .store
        .reply_routes(id, scope)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| not_found(&id.to_string()))?;
    if let Some(chat) = routes.chats.iter().find(|c| state.replies.can_send(c)) {
        return Ok(ReplyTarget::Chat(chat.clone()));
    }
    if let Some(thread) = routes.mail {
        if !state.store.sends_mail() {
            return Err(conflict(
                "mail_not_configured",
                format!(
                    "lead {id} came by mail, but no mail server is configured to answer it: set up [smtp]"
                ),
            ));
        }
        return Ok(ReplyTarget::Mail(thread));
    }
    if let Some(chat) = routes.chats.first() {
        let what = match chat.platform {
            ChatPlatform::Telegram => format!(
                "Telegram bot `{}`, which is not configured to send: add it to [[telegram]]",
                chat.account
            ),
            ChatPlatform::WhatsApp => format!(
                "WhatsApp number {}, which is not configured to send: set [whatsapp] access_token and phone_number_id",
                chat.account
            ),
        };
        return Err(conflict(
            "channel_not_configured",
            format!("lead {id} chats through the {what}"),
        ));
    }
    Err(conflict(
        "no_reply_channel",
        format!(
            "lead {id} has no Telegram or WhatsApp chat and no mail thread to answer in (it came from a web form, a call, an import or a generic event): contact the person directly"
        ),
    ))
}

fn not_found(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "lead_not_found",
        format!("there is no lead with id `{id}`"),
    )
}

/// The 202 answer: the activity, its delivery state, and where the reply goes.
fn accepted(activity: Activity, replayed: bool) -> Response {
    let delivery = activity
        .data
        .get("delivery")
        .cloned()
        .unwrap_or(json!("pending"));
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({
            "id": activity.id,
            "delivery": delivery,
            "channel": activity.channel,
            "activity": activity,
        })),
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Reply to a lead through the channel it came from (its Telegram or WhatsApp chat,
/// else its mail thread); recorded as an outbound activity and sent by a worker.
#[utoipa::path(
    post,
    path = "/v1/leads/{id}/messages",
    tag = "leads",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "The lead's id."),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; a retry with the same key records and sends nothing new."),
    ),
    request_body(content = MessageBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Recorded, to be sent: `id`, `delivery`, `channel` and the `activity`.", body = Object, headers(("Idempotent-Replayed" = Option<String>, description = "`true` when this answers a retry."))),
        (status = 400, description = "`bad_body` (not `{\"text\": ...}`) or `invalid_idempotency_key`.", body = Problem),
        (status = 401, description = "`missing_token`, `bad_token` or `api_disabled`.", body = Problem),
        (status = 404, description = "`lead_not_found`.", body = Problem),
        (status = 409, description = "`no_reply_channel`, `channel_not_configured` or `mail_not_configured`.", body = Problem),
        (status = 422, description = "`empty_text`, `text_too_long` or `idempotency_key_reused`.", body = Problem, example = json!({"error": "empty_text", "message": "text is empty: write the message to send"})),
        (status = 503, description = "`database_unavailable` or `database_error`; or `timeout`.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
async fn post_message(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let lead_id: i64 = id.parse().map_err(|_| not_found(&id))?;
    let idempotency_key = ingest::http::idempotency_key(&headers)?;
    let text = parse_body(&body)?;
    let scope = caller.scope();
    let target = choose_target(&state, lead_id, &scope).await?;
    check_length(&text, &target)?;
    let reply = NewReply {
        lead_id,
        text,
        idempotency_key,
        target,
    };
    match state.store.record_reply(&reply, &scope).await {
        Ok(RecordedReply::Recorded(activity)) => Ok(accepted(activity, false)),
        Ok(RecordedReply::Replayed(activity)) => Ok(accepted(activity, true)),
        Ok(RecordedReply::KeyReused) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for another message: use a new key for a new message",
        )),
        // The lead was deleted (or left the caller's scope) between the look-up and the
        // insert.
        Err(StoreError::NotFound(_)) => Err(not_found(&id)),
        Err(error) => Err(store_problem(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::{ChatTarget, MailThread};

    fn telegram() -> ReplyTarget {
        ReplyTarget::Chat(ChatTarget {
            platform: ChatPlatform::Telegram,
            account: "shop".into(),
            chat_id: "1".into(),
        })
    }

    #[test]
    fn a_body_is_one_non_empty_text() {
        assert_eq!(parse_body(br#"{"text":"Ciao"}"#).unwrap(), "Ciao");
        for (body, status) in [
            (&br#"{"text":"  \n"}"#[..], StatusCode::UNPROCESSABLE_ENTITY),
            (br#"{"text":""}"#, StatusCode::UNPROCESSABLE_ENTITY),
            (br#"{"txt":"Ciao"}"#, StatusCode::BAD_REQUEST),
            (br#"{"text":"Ciao","to":"x"}"#, StatusCode::BAD_REQUEST),
            (br#"{"text":5}"#, StatusCode::BAD_REQUEST),
            (b"text=Ciao", StatusCode::BAD_REQUEST),
            (b"", StatusCode::BAD_REQUEST),
        ] {
            assert_eq!(
                parse_body(body).unwrap_err().status,
                status,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn chat_texts_are_capped_at_4096_utf16_units() {
        assert!(check_length(&"a".repeat(4096), &telegram()).is_ok());
        assert!(check_length(&"a".repeat(4097), &telegram()).is_err());
        // An emoji is two UTF-16 units, as Telegram counts them.
        assert!(check_length(&"😀".repeat(2049), &telegram()).is_err());
        let mail = ReplyTarget::Mail(MailThread {
            recipient: "a@b.it".into(),
            in_reply_to: "<x@b.it>".into(),
            subject: "Re: x".into(),
        });
        assert!(check_length(&"a".repeat(5000), &mail).is_ok());
    }
}
