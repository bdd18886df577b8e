//! Twilio-style voice webhooks (`[[twilio]]`): `POST /v1/intake/telephony/twilio/{name}`.
//!
//! In the order a request meets them: unknown line (404), body size (413), a missing
//! `X-Twilio-Signature` (403), content type and body (415/400), the signature over the
//! configured `public_url` with the request's own query string and the decoded
//! parameters ([`signature`], 403), the callback read into an event of its call
//! ([`callback`], 400 without a `CallSid`), then the sink: 200 with an empty TwiML
//! `<Response/>` only once the broker confirmed, 503 otherwise. Nothing is handed on
//! before the signature passed.
//!
//! Every callback of one call (the parent `CallSid`) names the conversation and activity
//! `call:twilio:<CallSid>`, so the store files them onto one lead and one activity,
//! in the order of their status and `SequenceNumber` whatever order they arrive in.
//! Withheld callers, outbound calls and dialled legs are kept as inquiries with their
//! reason and never become leads; Twilio still gets its 200 so it does not retry.

pub mod callback;
pub mod signature;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::connector::{
    Checks, ConfigProblem, Connector, ConnectorKind, Deps, HttpConnector, record_success,
};
use crate::http::{self, body};
use crate::inquiry::{Channel, Inquiry};
use crate::problem::Problem;
use crate::sink::{IntakeSink, Refusal};
use callback::{Line, Reading};

/// Calls, as every count and inquiry names them.
const CHANNEL: Channel = Channel::Call;

/// The header Twilio signs its requests with.
const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// The answer to an accepted callback: an empty TwiML document.
const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// One `[[twilio]]` entry: a Twilio account's voice line.
#[derive(Debug, Clone, Deserialize)]
pub struct TwilioConfig {
    /// URL name: callbacks post to `/v1/intake/telephony/twilio/{name}`; part of every
    /// call's conversation key.
    pub name: String,
    /// The account's auth token, which signs every request.
    #[serde(default)]
    pub auth_token: Option<String>,
    /// A file whose first line is the auth token (instead of `auth_token`).
    #[serde(default)]
    pub auth_token_file: Option<std::path::PathBuf>,
    /// The URL Twilio is configured to call, as Twilio sees it (before any proxy); the
    /// request's own query string is appended when the signature is checked.
    pub public_url: String,
    /// The lead source of its calls.
    pub source: String,
    /// Region for caller numbers without a country code (Twilio sends E.164).
    #[serde(default)]
    pub default_region: Option<String>,
    /// Overrides `[intake] max_body_bytes` for this line.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

impl TwilioConfig {
    /// The auth token: `auth_token`, else the first line of `auth_token_file`.
    pub fn resolve_token(&self) -> Result<String, String> {
        if let Some(path) = &self.auth_token_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read the auth token file {}: {e}; check the path and its permissions",
                    path.display()
                )
            })?;
            let line = text.lines().next().unwrap_or_default().trim();
            if line.is_empty() {
                return Err(format!("the auth token file {} is empty", path.display()));
            }
            return Ok(line.to_owned());
        }
        match &self.auth_token {
            Some(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
            _ => Err("no auth token: set `auth_token` or `auth_token_file` (Twilio console, Account Info)".into()),
        }
    }
}

/// The Twilio connector kind: one HTTP endpoint for every `[[twilio]]` line.
pub struct Twilio;

impl ConnectorKind for Twilio {
    const SECTION: &'static str = "twilio";
    type Config = Vec<TwilioConfig>;

    fn validate(lines: &Self::Config, checks: &Checks<'_>) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        for (index, line) in lines.iter().enumerate() {
            let key = |field: &str| format!("twilio[{index}].{field}");
            if let Some(problem) = crate::connector::name_problem(
                &line.name,
                100,
                "line",
                "a URL and of call keys",
                &mut names,
            ) {
                problems.push((key("name"), problem));
            }
            if line.auth_token.is_some() && line.auth_token_file.is_some() {
                problems.push((
                    key("auth_token_file"),
                    "set either `auth_token` or `auth_token_file`, not both".into(),
                ));
            } else if let Err(problem) = line.resolve_token() {
                let field = if line.auth_token_file.is_some() {
                    "auth_token_file"
                } else {
                    "auth_token"
                };
                problems.push((key(field), problem));
            }
            let url = line.public_url.trim();
            if !(url.starts_with("https://") || url.starts_with("http://"))
                || url.contains(char::is_whitespace)
            {
                problems.push((
                    key("public_url"),
                    format!(
                        "`{url}` is not an http(s) URL: write the URL Twilio calls, e.g. https://leads.example.com/v1/intake/telephony/twilio"
                    ),
                ));
            }
            if line.source.trim().is_empty() {
                problems.push((
                    key("source"),
                    "must not be empty (e.g. phone-twilio)".into(),
                ));
            }
            if let Some(region) = &line.default_region
                && let Err(problem) = (checks.region)(region)
            {
                problems.push((key("default_region"), problem));
            }
            if line.max_body_bytes == Some(0) {
                problems.push((key("max_body_bytes"), "must be at least 1".into()));
            }
        }
        problems
    }

    fn summary(lines: &Self::Config) -> Option<String> {
        match lines.len() {
            0 => None,
            1 => Some("1 Twilio line".into()),
            n => Some(format!("{n} Twilio lines")),
        }
    }

    fn build(lines: Self::Config, deps: &Deps) -> Result<Vec<Connector>, ConfigProblem> {
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let mut map = HashMap::new();
        let mut sources = BTreeSet::new();
        for (index, config) in lines.into_iter().enumerate() {
            let token = config
                .resolve_token()
                .map_err(|problem| (format!("twilio[{index}].auth_token"), problem))?;
            sources.insert(config.source.clone());
            let max_body = config.max_body_bytes.unwrap_or(deps.intake.max_body_bytes);
            map.insert(
                config.name.clone(),
                LineState {
                    config,
                    token,
                    max_body,
                },
            );
        }
        let intake = Arc::new(TwilioIntake {
            lines: map,
            sink: deps.sink.clone(),
        });
        Ok(vec![Connector::Http(HttpConnector {
            channel: CHANNEL,
            sources: sources.into_iter().collect(),
            routes: Box::new(documented().with_state(intake)),
        })])
    }
}

struct LineState {
    config: TwilioConfig,
    token: String,
    max_body: usize,
}

pub(crate) struct TwilioIntake {
    lines: HashMap<String, LineState>,
    sink: Arc<dyn IntakeSink>,
}

/// The documented routes, before the state is attached.
pub(crate) fn documented() -> OpenApiRouter<Arc<TwilioIntake>> {
    OpenApiRouter::new().routes(routes!(callback_post))
}

/// A Twilio-style voice status callback for a line.
///
/// Checks in this order: unknown line (404), body size (413), a missing signature
/// (403), content type and body (415/400), the signature over the line's `public_url`,
/// the query string and the parameters (403), the callback (400 without a `CallSid`),
/// then the broker's confirm: 200 with an empty TwiML `<Response/>`, else 503. Withheld
/// callers, outbound calls and dialled legs are kept, never leads, and still get 200.
#[utoipa::path(
    post,
    path = "/v1/intake/telephony/twilio/{name}",
    tag = "intake",
    params(
        ("name" = String, Path, description = "The line's `name` in `[[twilio]]`."),
        ("X-Twilio-Signature" = String, Header, description = "Base64 HMAC-SHA1 over the line's `public_url` (with this request's query string) and the sorted parameters, under the line's `auth_token`."),
    ),
    request_body(description = "The callback's parameters (`CallSid`, `From`, `To`, `CallStatus`, ...).", content((Object = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Confirmed by the broker: an empty TwiML `<Response/>`.", content((String = "text/xml"))),
        (status = 400, description = "`body_unreadable`, `malformed_body` or `not_a_voice_callback`.", body = Problem),
        (status = 403, description = "`missing_signature` or `bad_signature`.", body = Problem),
        (status = 404, description = "`unknown_line`.", body = Problem),
        (status = 413, description = "`body_too_large`.", body = Problem),
        (status = 415, description = "`unsupported_content_type`: callbacks are application/x-www-form-urlencoded.", body = Problem),
        (status = 503, description = "`unavailable` or `timeout`: Twilio retries.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
async fn callback_post(
    State(intake): State<Arc<TwilioIntake>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    intake.handle(&name, query.as_deref(), &headers, body).await
}

impl TwilioIntake {
    async fn handle(
        &self,
        name: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Body,
    ) -> Response {
        let Some(line) = self.lines.get(name) else {
            return http::reject(
                CHANNEL,
                "twilio",
                Problem::new(
                    StatusCode::NOT_FOUND,
                    "unknown_line",
                    format!(
                        "no Twilio line named `{name}` is configured: check the webhook URL or add a [[twilio]] entry"
                    ),
                ),
            );
        };
        let source = line.config.source.as_str();
        let reject = |problem| http::reject(CHANNEL, source, problem);
        let raw = match http::read_limited(headers, body, line.max_body).await {
            Ok(raw) => raw,
            Err(problem) => return reject(problem),
        };
        let Some(presented) = headers
            .get(SIGNATURE_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        else {
            return reject(Problem::new(
                StatusCode::FORBIDDEN,
                "missing_signature",
                "X-Twilio-Signature is missing: only Twilio's signed requests are accepted",
            ));
        };
        let content_type = http::content_type(headers);
        let urlencoded = content_type.as_deref().is_some_and(|ct| {
            ct.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
        if !urlencoded {
            return reject(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_type",
                "Twilio voice callbacks are application/x-www-form-urlencoded: check the webhook's HTTP method is POST",
            ));
        }
        let params: Vec<(String, String)> = match body::parse_urlencoded(&raw) {
            Ok(parsed) => parsed
                .fields
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
                .collect(),
            Err(error) => return reject(http::body_problem(error)),
        };
        let url = signature::signed_url(&line.config.public_url, query);
        if !signature::verify(&line.token, &url, &params, &presented) {
            return reject(Problem::new(
                StatusCode::FORBIDDEN,
                "bad_signature",
                "X-Twilio-Signature does not match: check the line's auth_token and that public_url is the URL Twilio calls",
            ));
        }
        http::received(CHANNEL, source);
        let reading_line = Line {
            name: &line.config.name,
            source,
            default_region: line.config.default_region.as_deref(),
        };
        let reading = match callback::read(&reading_line, &params, raw, content_type, Utc::now()) {
            Ok(reading) => reading,
            Err(error) => {
                return reject(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "not_a_voice_callback",
                    error.to_string(),
                ));
            }
        };
        let result = match reading {
            Reading::Call(inquiry) => match self.sink.submit((*inquiry).clone()).await {
                // A call whose number the pipeline cannot use is kept, never a lead; Twilio
                // must not retry it.
                Err(Refusal::Unusable { code, .. }) => self.keep(source, code, *inquiry).await,
                other => other.map(|_| ()),
            },
            Reading::NotALead { reason, inquiry } => self.keep(source, reason, *inquiry).await,
        };
        match result {
            Ok(()) => {
                record_success(CHANNEL, source, None);
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"))],
                    EMPTY_TWIML,
                )
                    .into_response()
            }
            Err(refusal) => reject(http::refusal_problem(refusal)),
        }
    }

    /// Keeps a callback that is never a lead as an inquiry with its reason, counted.
    async fn keep(
        &self,
        source: &str,
        reason: &'static str,
        mut inquiry: Inquiry,
    ) -> Result<(), Refusal> {
        metrics::counter!("leadpipe_inquiries_rejected_total", "channel" => CHANNEL.as_str(), "source" => source.to_owned(), "reason" => reason).increment(1);
        tracing::debug!(source, reason, inquiry_id = %inquiry.id, "Call callback kept, not a lead.");
        inquiry.spam = Some(reason.to_owned());
        inquiry.event = None;
        inquiry.contact = Default::default();
        self.sink.submit(inquiry).await.map(|_| ())
    }
}
