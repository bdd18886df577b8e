//! The web-form connector: `POST /v1/intake/forms/{form}`.
//!
//! The order of checks is part of the contract: unknown form (404), the client's rate
//! limit (429, `crate::rate_limit`), body size before
//! anything is parsed (413), signature over the raw bytes (401), origin (403), content
//! type and body (415/400, `too_deep` for JSON nested past its limit), the
//! Idempotency-Key's syntax (400), the sink's checks (422 `no_contact`), the key's claim
//! (422 `idempotency_key_reused`), then the sink hands it on (202, 503). The key is
//! claimed last so that a refused body never uses it up. Nothing here touches the
//! database on the way to an answer except that claim, which degrades to accepting when
//! it cannot answer in time (the inquiry id covers key and content, so nothing is lost).

pub mod body;
mod config;
pub mod fields;
pub mod signature;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

pub use config::{FormConfig, IntakeSettings};
pub use signature::TimestampPolicy;

use crate::inquiry::{Channel, ContentDedup, ContentHash, Inquiry, InquiryId, RawPayload};
use crate::problem::Problem;
use crate::rate_limit::RateLimits;
use crate::sink::{ClaimOutcome, IdempotencyKeys, IntakeSink, KeyClaim, Refusal};
use signature::{Presented, SignatureError, SignatureRule};

/// How much of an oversized body is read and thrown away before answering 413, so the
/// client sees the answer instead of a connection reset.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Header clients use to make retries safe.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A form's configuration could not be turned into a working form.
#[derive(Debug, thiserror::Error)]
pub enum FormSetupError {
    /// Two `[[forms]]` share a name.
    #[error("forms[{index}].name: `{name}` is declared twice; form names must be unique")]
    DuplicateName {
        /// Position in the list.
        index: usize,
        /// The repeated name.
        name: String,
    },
    /// The secret file could not be read.
    #[error("forms[{index}].secret_file: cannot read {path}: {source}")]
    SecretFile {
        /// Position in the list.
        index: usize,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A field holds a value that cannot work.
    #[error("forms[{index}].{key}: {problem}")]
    Invalid {
        /// Position in the list.
        index: usize,
        /// The key within the form.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

struct Form {
    config: FormConfig,
    secret: Option<Vec<u8>>,
    max_body: usize,
}

/// Every configured form, ready to answer posts.
pub struct FormsIntake {
    forms: HashMap<String, Form>,
    settings: IntakeSettings,
    sink: Arc<dyn IntakeSink>,
    keys: Arc<dyn IdempotencyKeys>,
    limits: Arc<RateLimits>,
}

/// Checks a list of form declarations without building anything; returns every problem.
pub fn validate_forms(forms: &[FormConfig]) -> Vec<FormSetupError> {
    let mut problems = Vec::new();
    let mut seen = HashMap::new();
    for (index, form) in forms.iter().enumerate() {
        if seen.insert(form.name.as_str(), index).is_some() {
            problems.push(FormSetupError::DuplicateName {
                index,
                name: form.name.clone(),
            });
        }
        let name_ok = !form.name.is_empty()
            && form.name.len() <= 100
            && form
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            problems.push(FormSetupError::Invalid {
                index,
                key: "name",
                problem: format!(
                    "`{}` must be 1 to 100 characters of letters, digits, `-`, `_` or `.` (it is part of a URL)",
                    form.name
                ),
            });
        }
        if form.source.trim().is_empty() {
            problems.push(FormSetupError::Invalid {
                index,
                key: "source",
                problem: "must not be empty: it is recorded on every lead".into(),
            });
        }
        if form.secret.is_some() && form.secret_file.is_some() {
            problems.push(FormSetupError::Invalid {
                index,
                key: "secret",
                problem: "set either `secret` or `secret_file`, not both".into(),
            });
        }
        if let Some(secret) = &form.secret
            && secret.trim().is_empty()
        {
            problems.push(FormSetupError::Invalid {
                index,
                key: "secret",
                problem: "must not be empty or blank (an empty key signs anything); remove it to accept unsigned posts".into(),
            });
        }
        if let Some(path) = &form.secret_file {
            match read_secret_file(path) {
                Err(source) => problems.push(FormSetupError::SecretFile {
                    index,
                    path: path.display().to_string(),
                    source,
                }),
                Ok(secret) if secret.trim().is_empty() => {
                    problems.push(FormSetupError::Invalid {
                        index,
                        key: "secret_file",
                        problem: format!(
                            "{} is empty or blank (an empty key signs anything): put the shared secret in it",
                            path.display()
                        ),
                    });
                }
                Ok(_) => {}
            }
        }
        if form.signature_timestamp == TimestampPolicy::Required
            && form.secret.is_none()
            && form.secret_file.is_none()
        {
            problems.push(FormSetupError::Invalid {
                index,
                key: "signature_timestamp",
                problem: "`required` needs `secret` or `secret_file`: only signed posts carry a timestamp".into(),
            });
        }
        if !(1..=86_400).contains(&form.signature_tolerance_secs) {
            problems.push(FormSetupError::Invalid {
                index,
                key: "signature_tolerance_secs",
                problem: "must be 1 to 86400 seconds".into(),
            });
        }
        if HeaderValue::from_str(&form.signature_header).is_err()
            || axum::http::HeaderName::from_bytes(form.signature_header.as_bytes()).is_err()
        {
            problems.push(FormSetupError::Invalid {
                index,
                key: "signature_header",
                problem: format!("`{}` is not a valid header name", form.signature_header),
            });
        }
        if let Some(0) = form.max_body_bytes {
            problems.push(FormSetupError::Invalid {
                index,
                key: "max_body_bytes",
                problem: "must be greater than 0".into(),
            });
        }
        if let Some(redirect) = &form.redirect
            && !(redirect.starts_with("https://")
                || redirect.starts_with("http://")
                || redirect.starts_with('/'))
        {
            problems.push(FormSetupError::Invalid {
                index,
                key: "redirect",
                problem: format!("`{redirect}` must be an absolute http(s) URL or a path"),
            });
        }
    }
    problems
}

impl FormsIntake {
    /// Builds the intake from configuration; reads secret files.
    pub fn new(
        settings: IntakeSettings,
        forms: Vec<FormConfig>,
        sink: Arc<dyn IntakeSink>,
        keys: Arc<dyn IdempotencyKeys>,
    ) -> Result<Self, FormSetupError> {
        if let Some(problem) = validate_forms(&forms).into_iter().next() {
            return Err(problem);
        }
        let mut map = HashMap::new();
        for (index, config) in forms.into_iter().enumerate() {
            let secret = match (&config.secret, &config.secret_file) {
                (Some(secret), _) => Some(secret.as_bytes().to_vec()),
                (None, Some(path)) => {
                    let text =
                        read_secret_file(path).map_err(|source| FormSetupError::SecretFile {
                            index,
                            path: path.display().to_string(),
                            source,
                        })?;
                    Some(text.into_bytes())
                }
                (None, None) => None,
            };
            let max_body = config.max_body_bytes.unwrap_or(settings.max_body_bytes);
            map.insert(
                config.name.clone(),
                Form {
                    config,
                    secret,
                    max_body,
                },
            );
        }
        let limits = RateLimits::new(&settings, map.values().map(|f| &f.config));
        Ok(Self {
            forms: map,
            settings,
            sink,
            keys,
            limits,
        })
    }

    /// The routes of this connector, ready to be merged into the daemon's router.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/v1/intake/forms/{form}",
                post(submit_form).options(preflight),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                limit_rate,
            ))
            .with_state(self)
    }

    async fn handle(&self, form_name: &str, headers: &HeaderMap, body: Body) -> Response {
        let Some(form) = self.forms.get(form_name) else {
            return reject(
                "form",
                Problem::new(
                    StatusCode::NOT_FOUND,
                    "unknown_form",
                    format!(
                        "no form named `{form_name}` is configured: check the URL or add a [[forms]] entry"
                    ),
                ),
            );
        };
        let source = form.config.source.as_str();
        let cors = cors_headers(form, headers);
        let outcome = self.accept(form, headers, body).await;
        let mut response = match outcome {
            Ok(response) => response,
            Err(problem) => reject(source, problem),
        };
        response.headers_mut().extend(cors);
        response
    }

    async fn accept(
        &self,
        form: &Form,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, Problem> {
        let raw = read_limited(headers, body, form.max_body).await?;
        metrics::counter!("leadpipe_inquiries_received_total", "channel" => "form", "source" => form.config.source.clone()).increment(1);

        if let Some(secret) = &form.secret {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let rule = SignatureRule {
                header: &form.config.signature_header,
                timestamp: form.config.signature_timestamp,
                tolerance_secs: form.config.signature_tolerance_secs,
            };
            let presented = Presented {
                signature: header(&form.config.signature_header),
                timestamp: header(signature::TIMESTAMP_HEADER),
            };
            signature::verify_request(secret, &rule, presented, Utc::now().timestamp(), &raw)
                .map_err(|e| {
                    let code = match e {
                        SignatureError::OutsideWindow { .. } => "timestamp_outside_window",
                        _ => "bad_signature",
                    };
                    Problem::new(StatusCode::UNAUTHORIZED, code, e.to_string())
                })?;
        }
        if !origin_allowed(form, headers) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "this form does not accept posts from the page's origin: add it to the form's allowed_origins",
            ));
        }

        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let parsed = body::parse_body(content_type.as_deref(), &raw).map_err(|e| match e {
            body::BodyError::MissingContentType | body::BodyError::UnsupportedContentType(_) => {
                Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_content_type",
                    e.to_string(),
                )
            }
            body::BodyError::Malformed(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string())
            }
            body::BodyError::TooDeep { .. } => {
                Problem::new(StatusCode::BAD_REQUEST, "too_deep", e.to_string())
            }
        })?;
        let content = parsed.content_hash();
        let mapped = fields::map_fields(parsed.fields, form.config.honeypot.as_deref());

        let key = idempotency_key(headers)?;
        let id = match &key {
            Some(key) => {
                InquiryId::from_keyed_content(Channel::Form, &form.config.name, key, &content)
            }
            None => InquiryId::new_unique(),
        };
        let spam = mapped.honeypot_filled.then(|| {
            format!(
                "honeypot field `{}` was filled",
                form.config.honeypot.as_deref().unwrap_or_default()
            )
        });
        if spam.is_some() {
            metrics::counter!("leadpipe_inquiries_spam_total", "channel" => "form", "source" => form.config.source.clone()).increment(1);
        }
        // A signed post is checked for identical content even under a key: a captured
        // post replayed with a fresh Idempotency-Key is then a duplicate.
        let dedup = (key.is_none() || form.secret.is_some()).then(|| ContentDedup {
            key: content_key(&form.config.name, &content),
            window_secs: self.settings.dedup_window_secs,
        });
        let inquiry = Inquiry {
            id,
            channel: Channel::Form,
            source: form.config.source.clone(),
            external_id: key.clone(),
            received_at: Utc::now(),
            default_region: Some(form.config.default_region.clone()),
            contact: mapped.contact,
            message: mapped.message,
            utm: mapped.utm,
            fields: mapped.fields,
            attachments: parsed.attachments,
            spam,
            dedup,
            raw: RawPayload {
                content_type,
                body: raw,
            },
            event: None,
        };

        // The key is claimed only for an inquiry nothing else will refuse, so a sender who
        // fixes a refused body can send it again under the same key.
        let prepared = self.sink.prepare(inquiry).await.map_err(refusal_problem)?;
        if let Some(key) = &key {
            self.check_key(form, key, &content, id).await?;
        }
        let accepted = prepared.submit().await.map_err(refusal_problem)?;
        Ok(success(form, headers, accepted.inquiry_id))
    }

    async fn check_key(
        &self,
        form: &Form,
        key: &str,
        content: &ContentHash,
        inquiry_id: InquiryId,
    ) -> Result<(), Problem> {
        let claim = KeyClaim {
            scope: &form.config.name,
            key,
            content_hash: content,
            inquiry_id,
        };
        let timeout = Duration::from_millis(self.settings.key_lookup_timeout_ms);
        match tokio::time::timeout(timeout, self.keys.claim(claim)).await {
            Ok(Ok(ClaimOutcome::Fresh | ClaimOutcome::Replay)) => Ok(()),
            Ok(Ok(ClaimOutcome::Conflict)) => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different body: use a new key for a new submission",
            )),
            Ok(Err(error)) => {
                // The id covers the key and the content: a retry is still one inquiry and
                // another body under this key is filed as its own, never dropped. Only the
                // 422 for the client's reused key is lost while the key store is away.
                tracing::warn!(%error, form = %form.config.name, %inquiry_id, "Idempotency key look-up failed; accepting without it.");
                metrics::counter!("leadpipe_idempotency_lookups_degraded_total").increment(1);
                Ok(())
            }
            Err(_) => {
                tracing::warn!(form = %form.config.name, %inquiry_id, "Idempotency key look-up timed out; accepting without it.");
                metrics::counter!("leadpipe_idempotency_lookups_degraded_total").increment(1);
                Ok(())
            }
        }
    }
}

/// What the sender is told when the sink refuses an inquiry.
fn refusal_problem(refusal: Refusal) -> Problem {
    match refusal {
        Refusal::Unusable {
            code,
            message,
            fields,
        } => Problem {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message,
            fields,
            retry_after_secs: None,
        },
        // The reason (library error text) is the sink's to log; the sender gets a sentence.
        Refusal::Unavailable {
            reason: _,
            retry_after_secs,
        } => Problem {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message:
                "the message broker did not confirm the inquiry; nothing was stored, retry later"
                    .into(),
            fields: Vec::new(),
            retry_after_secs: Some(retry_after_secs),
        },
    }
}

async fn submit_form(
    State(intake): State<Arc<FormsIntake>>,
    Path(form): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    intake.handle(&form, &headers, body).await
}

/// Answers 429 before the body is read when the client is over its form's quota; the
/// answer carries the form's CORS headers so a page's script can read it.
async fn limit_rate(
    State(intake): State<Arc<FormsIntake>>,
    Path(form): Path<String>,
    request: Request,
    next: Next,
) -> Response {
    let Some((source, problem)) = intake.limits.refusal(&form, &request) else {
        return next.run(request).await;
    };
    let mut response = reject(source, problem);
    if let Some(form) = intake.forms.get(&form) {
        response
            .headers_mut()
            .extend(cors_headers(form, request.headers()));
    }
    response
}

async fn preflight(
    State(intake): State<Arc<FormsIntake>>,
    Path(form): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(form) = intake.forms.get(&form) else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "unknown_form",
            format!("no form named `{form}` is configured"),
        )
        .into_response();
    };
    let cors = cors_headers(form, &headers);
    if cors.is_empty() {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this form does not accept posts from the page's origin: add it to the form's allowed_origins",
        )
        .into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.extend(cors);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    let allow_headers = format!(
        "content-type, idempotency-key, {}, {}",
        form.config.signature_header,
        signature::TIMESTAMP_HEADER
    );
    if let Ok(v) = HeaderValue::from_str(&allow_headers) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(600));
    response
}

pub(crate) fn reject(source: &str, problem: Problem) -> Response {
    metrics::counter!("leadpipe_inquiries_rejected_total", "channel" => "form", "source" => source.to_owned(), "reason" => problem.code).increment(1);
    tracing::debug!(source, code = problem.code, status = problem.status.as_u16(), message = %problem.message, "Form post refused.");
    problem.into_response()
}

/// Reads the body up to `limit` bytes; larger bodies are refused before any parsing.
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than this form's limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > limit as u64) {
        drain(&mut stream).await;
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.map_or(4096, |n| n as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            tracing::debug!(%error, "Reading a form body failed.");
            Problem::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                "the request body could not be read to its end (did the connection break off?): send it again",
            )
        })?;
        if buf.len() + chunk.len() > limit {
            drain(&mut stream).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Reads and discards what is left of a refused body, up to a bound and a deadline.
async fn drain(stream: &mut axum::body::BodyDataStream) {
    let work = async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), work).await;
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bad = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good choice)",
        )
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(text.to_owned()))
}

fn content_key(form: &str, content: &ContentHash) -> String {
    let mut hasher = Sha256::new();
    hasher.update(form.as_bytes());
    hasher.update([0x1f]);
    hasher.update(content.as_bytes());
    hex::encode(hasher.finalize())
}

/// A secret file's content without its trailing line break.
fn read_secret_file(path: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

fn origin_allowed(form: &Form, headers: &HeaderMap) -> bool {
    let allowed = &form.config.allowed_origins;
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(_) if allowed.is_empty() => true,
        Some(origin) => allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin)),
    }
}

fn cors_headers(form: &Form, headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let Some(origin) = headers.get(header::ORIGIN) else {
        return out;
    };
    let listed = origin.to_str().is_ok_and(|o| {
        form.config
            .allowed_origins
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(o))
    });
    if listed {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    out
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            let html = accept.find("text/html");
            let json = accept.find("application/json");
            match (html, json) {
                (Some(h), Some(j)) => h < j,
                (Some(_), None) => true,
                _ => false,
            }
        })
}

fn success(form: &Form, headers: &HeaderMap, inquiry_id: InquiryId) -> Response {
    if wants_html(headers) {
        if let Some(redirect) = &form.config.redirect
            && let Ok(location) = HeaderValue::from_str(redirect)
        {
            return (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
        }
        return (
            StatusCode::ACCEPTED,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            THANK_YOU_PAGE,
        )
            .into_response();
    }
    let body = serde_json::json!({"inquiry_id": inquiry_id, "status": "accepted"});
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

const THANK_YOU_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Thank you</title></head>\
<body style=\"font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem\">\
<h1>Thank you!</h1><p>We have received your message and will get back to you soon.</p>\
<p><a href=\"javascript:history.back()\">Back</a></p></body></html>\n";
