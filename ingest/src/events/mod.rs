//! Generic events (`[[event_sources]]`): `POST /v1/intake/events/{source}` for site chat
//! widgets, call centres and in-house systems that can sign a JSON post.
//!
//! Checks in order: unknown source (404), body size (413), HMAC-SHA256 signature over
//! the raw body, or over `"{timestamp}.{body}"` with `X-Leadpipe-Timestamp`, exactly as
//! forms sign (401), content type (415: JSON only), JSON (400, `too_deep` past 32
//! levels), then every field of the schema ([`schema`]; 422 `invalid_event` naming each
//! field). A `message` event is one activity of the conversation
//! `chat:<source>:<conversation_id>`; every `call` event of one `conversation_id` updates
//! the one activity of `call:<source>:<conversation_id>`, ordered by `occurred_at`. The
//! inquiry id comes from the source and `event_id`, so a replay files nothing new.

mod config;
pub mod schema;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::EventSourceConfig;
pub use schema::{Direction, Event, EventType};

use crate::connector::{Checks, ConfigProblem, Connector, ConnectorKind, Deps, HttpConnector};
use crate::event::{ActivityKind, ConversationKey, EventRef};
use crate::http::{self, HmacSignature, SignatureCheck, body};
use crate::inquiry::{Channel, ContactHints, Inquiry, InquiryId, MessengerHandle, RawPayload};
use crate::problem::Problem;
use crate::sink::IntakeSink;

/// The header posts are signed in, as for forms.
pub const SIGNATURE_HEADER: &str = "x-leadpipe-signature";

/// The generic events connector: `[[event_sources]]`.
pub struct EventSources;

impl ConnectorKind for EventSources {
    const SECTION: &'static str = "event_sources";
    type Config = Vec<EventSourceConfig>;

    fn validate(config: &Self::Config, checks: &Checks<'_>) -> Vec<ConfigProblem> {
        config::problems(config, Some(checks))
    }

    fn summary(config: &Self::Config) -> Option<String> {
        (!config.is_empty()).then(|| {
            format!(
                "{} event source{}",
                config.len(),
                if config.len() == 1 { "" } else { "s" }
            )
        })
    }

    fn build(config: Self::Config, deps: &Deps) -> Result<Vec<Connector>, ConfigProblem> {
        if config.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(problem) = config::problems(&config, None).into_iter().next() {
            return Err(problem);
        }
        let mut sources = HashMap::new();
        let mut labels = BTreeSet::new();
        for (index, c) in config.into_iter().enumerate() {
            let secret = match (&c.secret, &c.secret_file) {
                (Some(secret), _) => secret.clone(),
                (None, Some(path)) => crate::forms::read_secret_file(path).map_err(|e| {
                    (
                        format!("event_sources[{index}].secret_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?,
                (None, None) => unreachable!("checked above: every source has a secret"),
            };
            let signature = HmacSignature::new(
                secret.into_bytes(),
                SIGNATURE_HEADER.into(),
                c.signature_timestamp,
                c.signature_tolerance_secs,
            );
            let max_body = c.max_body_bytes.unwrap_or(deps.intake.max_body_bytes);
            labels.insert(c.lead_source().to_owned());
            sources.insert(
                c.name.clone(),
                Source {
                    config: c,
                    signature,
                    max_body,
                },
            );
        }
        let intake = Arc::new(EventsIntake {
            sources,
            sink: deps.sink.clone(),
        });
        Ok(vec![Connector::Http(HttpConnector {
            channel: Channel::Chat,
            sources: labels.into_iter().collect(),
            routes: Box::new(intake.router()),
        })])
    }
}

struct Source {
    config: EventSourceConfig,
    signature: HmacSignature,
    max_body: usize,
}

/// Every configured event source, ready to answer posts.
pub struct EventsIntake {
    sources: HashMap<String, Source>,
    sink: Arc<dyn IntakeSink>,
}

impl EventsIntake {
    /// The routes, state attached.
    pub fn router(self: Arc<Self>) -> OpenApiRouter {
        documented().with_state(self)
    }

    async fn accept(
        &self,
        source: &Source,
        headers: &HeaderMap,
        raw_body: Body,
    ) -> Result<Response, Problem> {
        let label = source.config.lead_source();
        let raw = http::read_limited(headers, raw_body, source.max_body).await?;
        http::received(source.config.channel, label);
        source.signature.check(headers, &raw)?;
        let content_type = http::content_type(headers);
        let is_json = content_type.as_deref().is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_type",
                "send the event as application/json",
            ));
        }
        let parsed = body::parse_body(content_type.as_deref(), &raw).map_err(http::body_problem)?;
        let event = schema::read(parsed.fields).map_err(|fields| {
            let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
            Problem {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_event",
                message: format!(
                    "the event does not follow the schema (see README, generic events): {}",
                    names.join(", ")
                ),
                fields,
                retry_after_secs: None,
            }
        })?;
        let inquiry = inquiry(&source.config, event, raw, content_type)?;
        let channel = inquiry.channel;
        let accepted = self
            .sink
            .submit(inquiry)
            .await
            .map_err(http::refusal_problem)?;
        Ok(http::accepted(
            channel,
            label,
            headers,
            accepted.inquiry_id,
            None,
        ))
    }
}

/// The inquiry of one event posted to `config`'s source; refused (422) should its ids not
/// name a conversation.
pub fn inquiry(
    config: &EventSourceConfig,
    event: Event,
    raw: Bytes,
    content_type: Option<String>,
) -> Result<Inquiry, Problem> {
    let name = config.name.as_str();
    let (channel, kind, conversation, activity_key) = match event.kind {
        EventType::Message => (
            config.channel,
            ActivityKind::Message,
            ConversationKey::chat(name, &event.conversation_id),
            format!("message:{name}:{}", event.event_id),
        ),
        EventType::Call => (
            Channel::Call,
            ActivityKind::Call,
            ConversationKey::call(name, &event.conversation_id),
            format!("call:{name}:{}", event.conversation_id),
        ),
    };
    // The schema allows no spaces in ids and configuration none in names, so this holds;
    // a refusal rather than a panic should that ever change.
    let conversation = conversation.map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            format!("conversation_id: {e}"),
        )
    })?;
    let mut data = Map::new();
    data.insert("event_id".into(), event.event_id.clone().into());
    // A message says which way it went; a call event only when it knows, so a later
    // event that does not say keeps what an earlier one did.
    match (event.kind, event.direction) {
        (_, Some(direction)) => {
            data.insert("direction".into(), direction.as_str().into());
        }
        (EventType::Message, None) => {
            data.insert("direction".into(), Direction::Inbound.as_str().into());
        }
        (EventType::Call, None) => {}
    }
    let mut tags = Vec::new();
    if event.kind == EventType::Call {
        // Only what this event says: a later event without a field keeps the earlier
        // event's value on the call's activity.
        data.insert("call_id".into(), event.conversation_id.clone().into());
        if let Some(status) = &event.status {
            data.insert("status".into(), status.clone().into());
        }
        if let Some(d) = event.duration_s {
            data.insert("duration_s".into(), d.into());
        }
        if let Some(missed) = event.missed {
            data.insert("missed".into(), missed.into());
            if missed {
                tags.push("missed_call".to_owned());
            }
        }
        if let Some(url) = &event.recording_url {
            data.insert("recording_url".into(), url.clone().into());
        }
    }
    if let Some(extra) = event.data {
        data.insert("data".into(), Value::Object(extra));
    }
    let mut event_ref = EventRef::new(kind);
    event_ref.conversation = vec![conversation];
    event_ref.activity_key = Some(activity_key);
    event_ref.order = event.occurred_at.map(|t| t.timestamp_millis());
    event_ref.occurred_at = event.occurred_at;
    event_ref.data = data;
    event_ref.tags = tags;
    let person = event.person;
    Ok(Inquiry {
        id: InquiryId::from_external(channel, name, &event.event_id),
        channel,
        source: config.lead_source().to_owned(),
        external_id: Some(event.event_id),
        received_at: Utc::now(),
        default_region: config.default_region.clone(),
        contact: ContactHints {
            full_name: person.name,
            email: person.email,
            phone: person.phone,
            company: person.company,
            messenger: person.messenger_id.map(|id| MessengerHandle {
                platform: name.to_owned(),
                user_id: id,
                username: None,
            }),
            ..ContactHints::default()
        },
        message: event.text,
        utm: Default::default(),
        fields: Map::new(),
        attachments: Vec::new(),
        spam: None,
        dedup: None,
        raw: RawPayload {
            content_type,
            body: raw,
        },
        event: Some(event_ref),
    })
}

/// The documented routes, before the state is attached.
pub(crate) fn documented() -> OpenApiRouter<Arc<EventsIntake>> {
    OpenApiRouter::new().routes(routes!(submit))
}

/// Submit a signed event (a chat message or a call) from a site chat, call centre or
/// in-house system.
///
/// Checks in this order: unknown source (404), body size (413), signature (401),
/// content type (415: JSON only), JSON (400), the event schema (422 `invalid_event`,
/// naming each field), whether it can be a lead (422), the broker's confirm (202, else
/// 503). The inquiry id comes from the source and `event_id`, so a replay files nothing
/// new.
#[utoipa::path(
    post,
    path = "/v1/intake/events/{source}",
    tag = "intake",
    params(
        ("source" = String, Path, description = "The event source's `name` in `[[event_sources]]`."),
        ("X-Leadpipe-Signature" = String, Header, description = "`sha256=<hex HMAC-SHA256>` of the raw body, or of `<timestamp>.<body>` with X-Leadpipe-Timestamp, under the source's secret."),
        ("X-Leadpipe-Timestamp" = Option<i64>, Header, description = "The signing time in Unix seconds; required when the source's `signature_timestamp = \"required\"`."),
    ),
    request_body(
        description = "One event: `event_id`, `type` (`message` or `call`), `conversation_id`, `person`, and the fields of its type (see the README, generic events).",
        content((Object = "application/json")),
    ),
    responses(
        (status = 202, description = "Accepted: the broker confirmed the inquiry (a thank-you page when `Accept` prefers `text/html`).", content(
            (crate::http::IntakeAccepted = "application/json"),
            (String = "text/html"),
        )),
        (status = 400, description = "`body_unreadable`, `malformed_body` or `too_deep`.", body = Problem),
        (status = 401, description = "`bad_signature` or `timestamp_outside_window`.", body = Problem),
        (status = 404, description = "`unknown_source`.", body = Problem),
        (status = 413, description = "`body_too_large`.", body = Problem),
        (status = 415, description = "`unsupported_content_type`: send application/json.", body = Problem),
        (status = 422, description = "`invalid_event` (`fields` names each field) or `no_contact`.", body = Problem),
        (status = 503, description = "`unavailable` (the broker did not confirm; nothing stored) or `timeout`: send the same event again.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
async fn submit(
    State(intake): State<Arc<EventsIntake>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(source) = intake.sources.get(&name) else {
        return http::reject(
            Channel::Chat,
            "event_source",
            Problem::new(
                StatusCode::NOT_FOUND,
                "unknown_source",
                format!(
                    "no event source named `{name}` is configured: check the URL or add an [[event_sources]] entry"
                ),
            ),
        );
    };
    match intake.accept(source, &headers, body).await {
        Ok(response) => response,
        Err(problem) => http::reject(source.config.channel, source.config.lead_source(), problem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source() -> EventSourceConfig {
        serde_json::from_value(json!({"name": "callcentre", "secret": "s", "default_region": "PL"}))
            .unwrap()
    }

    fn event(body: Value) -> Event {
        schema::read(body.as_object().unwrap().clone().into_iter().collect()).unwrap()
    }

    #[test]
    fn a_call_event_carries_only_the_call_fields_it_was_sent() {
        let e = event(
            json!({"event_id": "e9", "type": "call", "conversation_id": "c-1",
            "occurred_at": "2026-05-16T11:00:00Z", "missed": true, "person": {"phone": "601 234 567"}}),
        );
        let i = inquiry(&source(), e, Bytes::from_static(b"{}"), None).unwrap();
        assert_eq!(i.channel, Channel::Call);
        assert_eq!(i.default_region.as_deref(), Some("PL"));
        let ev = i.event.unwrap();
        assert_eq!(ev.kind, ActivityKind::Call);
        assert_eq!(ev.conversation[0].as_key(), "call:callcentre:c-1");
        assert_eq!(ev.activity_key.as_deref(), Some("call:callcentre:c-1"));
        assert_eq!(ev.order, Some(1_778_929_200_000));
        assert_eq!(ev.tags, ["missed_call"]);
        assert_eq!(
            Value::Object(ev.data),
            json!({"event_id": "e9", "call_id": "c-1", "missed": true})
        );
        assert_eq!(
            i.id,
            InquiryId::from_external(Channel::Call, "callcentre", "e9")
        );
    }

    #[test]
    fn a_message_is_its_own_activity_in_its_chat_and_names_its_messenger_account() {
        let e = event(
            json!({"event_id": "m1", "type": "message", "conversation_id": "chat-1",
            "person": {"messenger_id": "visitor-7"}, "text": "Hej"}),
        );
        let i = inquiry(&source(), e, Bytes::new(), None).unwrap();
        assert_eq!(i.channel, Channel::Chat);
        let handle = i.contact.messenger.unwrap();
        assert_eq!(
            (handle.platform.as_str(), handle.user_id.as_str()),
            ("callcentre", "visitor-7")
        );
        let ev = i.event.unwrap();
        assert_eq!(ev.conversation[0].as_key(), "chat:callcentre:chat-1");
        assert_eq!(ev.activity_key.as_deref(), Some("message:callcentre:m1"));
        assert_eq!(ev.data["direction"], "inbound");
        assert_eq!(i.message.as_deref(), Some("Hej"));
    }
}
