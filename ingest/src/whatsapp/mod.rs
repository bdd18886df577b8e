//! The WhatsApp Business Cloud API connector (`[whatsapp]`): the webhook Meta calls,
//! `GET` and `POST /v1/intake/chat/whatsapp`.
//!
//! `GET` is the verification handshake: `hub.mode=subscribe` with the configured
//! `hub.verify_token` (compared in constant time) is answered with `hub.challenge` as
//! text. `POST` carries messages and statuses: `X-Hub-Signature-256` is checked over the
//! raw bytes with the app secret before anything is parsed (403, nothing stored), then
//! every `entry[]` and `changes[]` is walked ([`payload`]). Each message is an inquiry of
//! channel `chat` keyed by the sender's WhatsApp account, with the phone number from
//! `wa_id`; statuses of our own messages are counted and never touch a lead. The POST is
//! answered 200 only once the broker confirmed every inquiry in it, else 503 and Meta
//! sends it again; the inquiry id comes from the message id (`wamid`), so a redelivery
//! files nothing new.

mod config;
pub mod payload;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::{DEFAULT_API_BASE, WhatsappConfig};
pub use payload::{InboundMessage, PayloadError};

use crate::connector::{Checks, ConfigProblem, Connector, ConnectorKind, Deps, HttpConnector};
use crate::event::{ActivityKind, ConversationKey, EventRef};
use crate::http::{self, body::parse_urlencoded, signature};
use crate::inquiry::{Channel, ContactHints, Inquiry, InquiryId, MessengerHandle, RawPayload};
use crate::problem::Problem;
use crate::sink::{IntakeSink, PreparedInquiry, Refusal};

/// Every WhatsApp inquiry's channel.
const CHANNEL: Channel = Channel::Chat;

/// The platform name in person keys (`messenger:whatsapp:<wa_id>`).
pub const PLATFORM: &str = "whatsapp";

/// Where Meta calls.
pub const PATH: &str = "/v1/intake/chat/whatsapp";

/// The header Meta signs every POST in.
const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The WhatsApp connector: `[whatsapp]`, served at `/v1/intake/chat/whatsapp`.
pub struct Whatsapp;

impl ConnectorKind for Whatsapp {
    const SECTION: &'static str = "whatsapp";
    type Config = Option<WhatsappConfig>;

    fn validate(config: &Self::Config, _checks: &Checks<'_>) -> Vec<ConfigProblem> {
        config
            .as_ref()
            .map(WhatsappConfig::problems)
            .unwrap_or_default()
    }

    fn summary(config: &Self::Config) -> Option<String> {
        config.as_ref().map(|c| {
            let replies = if c.sends_replies() {
                "replies on"
            } else {
                "receive only"
            };
            format!("WhatsApp webhook (source {}, {replies})", c.source)
        })
    }

    fn build(config: Self::Config, deps: &Deps) -> Result<Vec<Connector>, ConfigProblem> {
        let Some(config) = config else {
            return Ok(Vec::new());
        };
        if let Some(problem) = config.problems().into_iter().next() {
            return Err(problem);
        }
        let source = config.source.clone();
        let hook = Arc::new(Webhook {
            config,
            sink: deps.sink.clone(),
        });
        Ok(vec![Connector::Http(HttpConnector {
            channel: CHANNEL,
            sources: vec![source],
            routes: Box::new(hook.router()),
        })])
    }
}

/// The webhook with its settings and where its inquiries go.
pub struct Webhook {
    config: WhatsappConfig,
    sink: Arc<dyn IntakeSink>,
}

impl Webhook {
    /// The webhook's routes, state attached.
    pub fn router(self: Arc<Self>) -> OpenApiRouter {
        documented().with_state(self)
    }

    fn source(&self) -> &str {
        &self.config.source
    }

    async fn receive(&self, headers: &HeaderMap, body: Body) -> Result<Response, Problem> {
        let raw = http::read_limited(headers, body, self.config.max_body_bytes).await?;
        let presented = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
        signature::verify(
            self.config.app_secret.as_bytes(),
            SIGNATURE_HEADER,
            presented,
            &raw,
        )
        .map_err(|e| {
            let message = match e {
                signature::SignatureError::Missing(_) => format!(
                    "no {SIGNATURE_HEADER} header: only Meta's signed webhook calls are accepted"
                ),
                _ => format!(
                    "{SIGNATURE_HEADER} does not match the body: check that whatsapp.app_secret is the Meta app's secret"
                ),
            };
            Problem::new(StatusCode::FORBIDDEN, "bad_signature", message)
        })?;
        let walked = payload::walk(&raw)
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string()))?;
        for status in &walked.statuses {
            metrics::counter!("leadpipe_whatsapp_statuses_total", "source" => self.source().to_owned(), "status" => status_label(status)).increment(1);
        }
        for reason in &walked.skipped {
            if *reason == "platform_error" {
                tracing::warn!(
                    source = self.source(),
                    "Meta reported an error in a WhatsApp webhook (`errors` of a change); check the app's webhook status in Meta's dashboard."
                );
            }
            metrics::counter!("leadpipe_whatsapp_skipped_total", "source" => self.source().to_owned(), "reason" => *reason).increment(1);
            tracing::debug!(
                source = self.source(),
                reason,
                "A WhatsApp webhook item is not a message; passed over."
            );
        }
        let content_type = http::content_type(headers);
        let mut prepared = Vec::with_capacity(walked.messages.len());
        for message in walked.messages {
            http::received(CHANNEL, self.source());
            let Some(inquiry) = message_inquiry(self.source(), message, &raw, content_type.clone())
            else {
                continue;
            };
            if let Some(ready) = self.prepare(inquiry).await? {
                prepared.push(ready);
            }
        }
        let count = prepared.len();
        // Every message of the POST is confirmed before Meta hears 200; one that is not
        // makes the whole POST come again, and what was confirmed is then a replay.
        let results =
            futures_util::future::join_all(prepared.into_iter().map(|p| p.submit())).await;
        let mut ids = Vec::with_capacity(count);
        for result in results {
            ids.push(result.map_err(http::refusal_problem)?.inquiry_id);
        }
        crate::connector::record_success(CHANNEL, self.source(), None);
        let body = serde_json::json!({
            "status": "accepted",
            "inquiry_ids": ids,
            "statuses": walked.statuses.len(),
        });
        Ok((StatusCode::OK, axum::Json(body)).into_response())
    }

    /// Readies one inquiry. A message the pipeline can never file as a lead is kept
    /// instead as a non-lead with that reason, so it is stored once and never blocks its
    /// batch; only an unavailable pipeline fails the POST.
    async fn prepare(
        &self,
        mut inquiry: Inquiry,
    ) -> Result<Option<Box<dyn PreparedInquiry>>, Problem> {
        match self.sink.prepare(inquiry.clone()).await {
            Ok(ready) => Ok(Some(ready)),
            Err(Refusal::Unusable { code, .. }) => {
                tracing::warn!(source = self.source(), inquiry_id = %inquiry.id, code, "A WhatsApp message cannot be a lead; kept as a non-lead.");
                metrics::counter!("leadpipe_inquiries_rejected_total", "channel" => CHANNEL.as_str(), "source" => self.source().to_owned(), "reason" => code).increment(1);
                inquiry.spam = Some(code.to_owned());
                match self.sink.prepare(inquiry).await {
                    Ok(ready) => Ok(Some(ready)),
                    Err(Refusal::Unusable { .. }) => Ok(None),
                    Err(unavailable) => Err(http::refusal_problem(unavailable)),
                }
            }
            Err(unavailable) => Err(http::refusal_problem(unavailable)),
        }
    }
}

/// The inquiry of one message received by the webhook of lead source `source`; `None`
/// (counted) when its ids cannot name a conversation.
pub fn message_inquiry(
    source: &str,
    message: InboundMessage,
    raw: &Bytes,
    content_type: Option<String>,
) -> Option<Inquiry> {
    let platform = format!("{PLATFORM}-{}", message.phone_number_id);
    let Ok(conversation) = ConversationKey::chat(&platform, &message.wa_id) else {
        metrics::counter!("leadpipe_whatsapp_skipped_total", "source" => source.to_owned(), "reason" => "malformed_message").increment(1);
        tracing::warn!(
            source,
            "A WhatsApp message with an unusable sender or business number id was passed over."
        );
        return None;
    };
    let occurred_at = message
        .timestamp
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0));
    let mut event = EventRef::new(ActivityKind::Message);
    event.conversation = vec![conversation];
    event.follow_up = message.follow_up;
    event.activity_key = Some(format!("message:{PLATFORM}:{}", message.wamid));
    event.order = occurred_at.map(|t| t.timestamp_millis());
    event.occurred_at = occurred_at;
    let mut data = Map::new();
    data.insert("wamid".into(), message.wamid.clone().into());
    data.insert("direction".into(), "inbound".into());
    data.insert("type".into(), message.kind.clone().into());
    if let Some(reply) = &message.reply_id {
        data.insert("reply_id".into(), reply.clone().into());
    }
    if let Some(referral) = &message.referral {
        data.insert("referral".into(), Value::Object(referral.clone()));
    }
    data.extend(message.data);
    event.data = data;

    let (lead_source, utm) = referral_source(source, message.referral.as_ref());
    // International digits without `+`: always a full number, no region needed. A
    // number change gives the lead the new number, so what the person sends from it
    // finds the same lead.
    let number = message.new_wa_id.as_deref().unwrap_or(&message.wa_id);
    let phone =
        (number.len() >= 6 && number.len() <= 15 && number.bytes().all(|b| b.is_ascii_digit()))
            .then(|| format!("+{number}"));
    Some(Inquiry {
        // The configured source, not a referral's: every delivery of a message has
        // the same id.
        id: InquiryId::from_external(CHANNEL, source, &message.wamid),
        channel: CHANNEL,
        source: lead_source,
        external_id: Some(message.wamid),
        received_at: Utc::now(),
        default_region: None,
        contact: ContactHints {
            full_name: message.name,
            email: message.email,
            phone,
            messenger: Some(MessengerHandle {
                platform: PLATFORM.into(),
                user_id: message.wa_id,
                username: None,
            }),
            ..ContactHints::default()
        },
        message: message.text,
        utm,
        fields: Map::new(),
        attachments: Vec::new(),
        spam: None,
        dedup: None,
        raw: RawPayload {
            content_type,
            body: raw.clone(),
        },
        event: Some(event),
    })
}

/// The lead source and campaign tags of a message: a Click-to-WhatsApp referral names
/// the ad or post that opened the chat (`whatsapp:ad:<ad id>`), and its type, id and
/// headline become `utm_medium`, `utm_campaign` and `utm_content`.
fn referral_source(
    configured: &str,
    referral: Option<&Map<String, Value>>,
) -> (String, std::collections::BTreeMap<String, String>) {
    let mut utm = std::collections::BTreeMap::new();
    let Some(referral) = referral else {
        return (configured.to_owned(), utm);
    };
    let field = |key: &str| {
        referral
            .get(key)
            .and_then(|v| match v {
                Value::String(s) => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
    };
    let kind = field("source_type").unwrap_or_else(|| "referral".into());
    let mut source = format!("{configured}:{kind}");
    if let Some(id) = field("source_id") {
        source.push(':');
        source.push_str(&id);
        utm.insert("utm_campaign".into(), id);
    }
    utm.insert("utm_medium".into(), kind);
    if let Some(headline) = field("headline") {
        utm.insert("utm_content".into(), headline);
    }
    (source, utm)
}

/// A status as a metric label: Meta's four, anything else `other`.
fn status_label(status: &str) -> &'static str {
    match status {
        "sent" => "sent",
        "delivered" => "delivered",
        "read" => "read",
        "failed" => "failed",
        _ => "other",
    }
}

/// The documented routes, before the state is attached.
pub(crate) fn documented() -> OpenApiRouter<Arc<Webhook>> {
    OpenApiRouter::new().routes(routes!(verify, receive))
}

/// Meta's webhook call: messages and statuses of the WhatsApp Business number.
///
/// The signature is checked over the raw body before anything is parsed (403, nothing
/// stored). Answered 200 only once the broker confirmed every message in it, else 503
/// and Meta sends it again; a redelivery files nothing new.
#[utoipa::path(
    post,
    path = "/v1/intake/chat/whatsapp",
    tag = "intake",
    params(
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=<hex HMAC-SHA256>` of the raw body under `whatsapp.app_secret`, as Meta sends it."),
    ),
    request_body(
        description = "A WhatsApp Business Cloud API webhook notification (`object`, `entry[].changes[]`).",
        content((Object = "application/json")),
    ),
    responses(
        (status = 200, description = "Every message in it is confirmed by the broker: `{\"status\": \"accepted\", \"inquiry_ids\": [...], \"statuses\": n}`.", body = Object),
        (status = 400, description = "`body_unreadable` or `malformed_body`: not a webhook notification.", body = Problem),
        (status = 403, description = "`bad_signature`: X-Hub-Signature-256 is missing or does not match.", body = Problem),
        (status = 413, description = "`body_too_large`: over `whatsapp.max_body_bytes`.", body = Problem),
        (status = 503, description = "`unavailable` or `timeout`: Meta retries.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
async fn receive(State(hook): State<Arc<Webhook>>, headers: HeaderMap, body: Body) -> Response {
    match hook.receive(&headers, body).await {
        Ok(response) => response,
        Err(problem) => http::reject(CHANNEL, hook.source(), problem),
    }
}

/// The verification handshake Meta makes when the webhook is set up: the challenge is
/// echoed as text when the verify token matches.
#[utoipa::path(
    get,
    path = "/v1/intake/chat/whatsapp",
    tag = "intake",
    params(
        ("hub.mode" = String, Query, description = "Must be `subscribe`."),
        ("hub.verify_token" = String, Query, description = "Must be `whatsapp.verify_token`."),
        ("hub.challenge" = String, Query, description = "Up to 256 visible ASCII characters, echoed back."),
    ),
    responses(
        (status = 200, description = "The challenge, as text.", content((String = "text/plain"))),
        (status = 400, description = "`malformed_query`, `missing_parameter`, `unsupported_mode` or `malformed_challenge`.", body = Problem),
        (status = 403, description = "`bad_verify_token`.", body = Problem),
    ),
)]
async fn verify(State(hook): State<Arc<Webhook>>, RawQuery(query): RawQuery) -> Response {
    match handshake(
        &hook.config.verify_token,
        query.as_deref().unwrap_or_default(),
    ) {
        Ok(challenge) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            challenge,
        )
            .into_response(),
        Err(problem) => http::reject(CHANNEL, hook.source(), problem),
    }
}

/// The challenge to echo for a query string, or why not.
fn handshake(verify_token: &str, query: &str) -> Result<String, Problem> {
    let parsed = parse_urlencoded(query.as_bytes())
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "malformed_query", e.to_string()))?;
    let param = |name: &str| {
        parsed
            .fields
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned)
    };
    let missing = |name: &str| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "missing_parameter",
            format!(
                "the verification request needs `{name}`: this URL is for Meta's webhook set-up"
            ),
        )
    };
    let mode = param("hub.mode").ok_or_else(|| missing("hub.mode"))?;
    let token = param("hub.verify_token").ok_or_else(|| missing("hub.verify_token"))?;
    let challenge = param("hub.challenge").ok_or_else(|| missing("hub.challenge"))?;
    if mode != "subscribe" {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "unsupported_mode",
            "hub.mode must be `subscribe`",
        ));
    }
    if !same_secret(token.as_bytes(), verify_token.as_bytes()) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "bad_verify_token",
            "hub.verify_token is not this webhook's: type whatsapp.verify_token into Meta's webhook settings",
        ));
    }
    if challenge.len() > 256 || !challenge.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_challenge",
            "hub.challenge must be up to 256 visible ASCII characters",
        ));
    }
    Ok(challenge)
}

/// Compares two secrets in time that depends on neither: their SHA-256 digests are
/// compared whole, so neither a matching prefix nor the length shows in the timing.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(presented), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_echoes_the_challenge_only_for_the_right_token() {
        let q = "hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444";
        assert_eq!(handshake("verify-me", q).unwrap(), "1158201444");
        let wrong = "hub.mode=subscribe&hub.verify_token=verify-mf&hub.challenge=1";
        assert_eq!(handshake("verify-me", wrong).unwrap_err().status, 403);
        for q in [
            "",
            "hub.mode=subscribe&hub.challenge=1",
            "hub.verify_token=verify-me&hub.challenge=1",
            "hub.mode=subscribe&hub.verify_token=verify-me",
        ] {
            assert_eq!(handshake("verify-me", q).unwrap_err().status, 400, "{q}");
        }
        let script = "hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=%3Cscript%3E+x";
        assert_eq!(handshake("verify-me", script).unwrap_err().status, 400);
    }

    #[test]
    fn a_referral_names_the_ad_as_the_source() {
        let referral: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "source_url": "https://fb.me/abc", "source_id": "120208", "source_type": "ad",
            "headline": "Scrivanie -30%", "ctwa_clid": "ARA"
        }))
        .unwrap();
        let (source, utm) = referral_source("whatsapp", Some(&referral));
        assert_eq!(source, "whatsapp:ad:120208");
        assert_eq!(utm["utm_campaign"], "120208");
        assert_eq!(utm["utm_medium"], "ad");
        assert_eq!(utm["utm_content"], "Scrivanie -30%");
        assert_eq!(referral_source("whatsapp", None).0, "whatsapp");
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret(b"verify-me", b"verify-me"));
        assert!(!same_secret(b"verify-me", b"verify-m"));
        assert!(!same_secret(b"", b"x"));
    }
}
