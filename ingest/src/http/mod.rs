//! The steps every HTTP connector takes, in one place, so that a webhook behaves like a
//! form where they share a concern.
//!
//! In the order a request meets them: the body is read up to a limit before anything
//! is parsed ([`read_limited`], 413), the signature is checked over the raw bytes
//! ([`SignatureCheck`], 401), the body is parsed by its declared type ([`body`],
//! [`body_problem`]: 415/400), an `Idempotency-Key` is read ([`idempotency_key`]), and
//! the inquiry goes through the sink in two steps with the key claimed between them
//! ([`hand_on`]: 422 for what can never be a lead or a reused key, 503 when the broker
//! cannot confirm). Refusals are JSON problems ([`refusal_problem`], [`reject`]);
//! success is JSON, a thank-you page or a redirect ([`accepted`]). Every count carries
//! the connector's channel and source.

pub mod body;
pub mod signature;

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::StreamExt;

use crate::connector::record_success;
use crate::inquiry::{Channel, Inquiry, InquiryId};
use crate::problem::Problem;
use crate::sink::{Accepted, ClaimOutcome, IdempotencyKeys, IntakeSink, KeyClaim, Refusal};
use signature::{Presented, SignatureError, SignatureRule, TimestampPolicy};

/// How much of an oversized body is read and thrown away before answering 413, so the
/// client sees the answer instead of a connection reset.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Header clients use to make retries safe.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Counts a request that reached a connector with a readable body.
pub fn received(channel: Channel, source: &str) {
    metrics::counter!("leadpipe_inquiries_received_total", "channel" => channel.as_str(), "source" => source.to_owned()).increment(1);
}

/// Counts an inquiry recognised as spam (kept, never a lead).
pub fn spam(channel: Channel, source: &str) {
    metrics::counter!("leadpipe_inquiries_spam_total", "channel" => channel.as_str(), "source" => source.to_owned()).increment(1);
}

/// Answers a refused request: counted by channel, source and reason, logged at debug
/// (refusals are the sender's business, not the operator's).
pub fn reject(channel: Channel, source: &str, problem: Problem) -> Response {
    metrics::counter!("leadpipe_inquiries_rejected_total", "channel" => channel.as_str(), "source" => source.to_owned(), "reason" => problem.code).increment(1);
    tracing::debug!(%channel, source, code = problem.code, status = problem.status.as_u16(), message = %problem.message, "Intake request refused.");
    problem.into_response()
}

/// Reads the body up to `limit` bytes; larger bodies are refused before any parsing.
pub async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Problem> {
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
            tracing::debug!(%error, "Reading a request body failed.");
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

/// How an endpoint checks that a request is authentic, over the raw
/// bytes before anything is parsed.
pub trait SignatureCheck: Send + Sync {
    /// `Ok` for an authentic request, else the 401 to answer.
    fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Problem>;
}

/// HMAC-SHA256 with a shared secret over the body, or over `"{timestamp}.{body}"` with a
/// signed `X-Leadpipe-Timestamp` inside a tolerance window (the scheme of forms).
#[derive(Debug, Clone)]
pub struct HmacSignature {
    secret: Vec<u8>,
    header: String,
    timestamp: TimestampPolicy,
    tolerance_secs: u64,
}

impl HmacSignature {
    /// A check with `secret`, reading the signature from `header`.
    pub fn new(
        secret: Vec<u8>,
        header: String,
        timestamp: TimestampPolicy,
        tolerance_secs: u64,
    ) -> Self {
        Self {
            secret,
            header,
            timestamp,
            tolerance_secs,
        }
    }
}

impl SignatureCheck for HmacSignature {
    fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Problem> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let rule = SignatureRule {
            header: &self.header,
            timestamp: self.timestamp,
            tolerance_secs: self.tolerance_secs,
        };
        let presented = Presented {
            signature: header(&self.header),
            timestamp: header(signature::TIMESTAMP_HEADER),
        };
        signature::verify_request(&self.secret, &rule, presented, Utc::now().timestamp(), body)
            .map(|_| ())
            .map_err(|e| {
                let code = match e {
                    SignatureError::OutsideWindow { .. } => "timestamp_outside_window",
                    _ => "bad_signature",
                };
                Problem::new(StatusCode::UNAUTHORIZED, code, e.to_string())
            })
    }
}

/// The declared `Content-Type`, as text.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// What the sender is told about a body that does not read as its declared type.
pub fn body_problem(error: body::BodyError) -> Problem {
    match error {
        body::BodyError::MissingContentType | body::BodyError::UnsupportedContentType(_) => {
            Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_type",
                error.to_string(),
            )
        }
        body::BodyError::Malformed(_) => {
            Problem::new(StatusCode::BAD_REQUEST, "malformed_body", error.to_string())
        }
        body::BodyError::TooDeep { .. } => {
            Problem::new(StatusCode::BAD_REQUEST, "too_deep", error.to_string())
        }
    }
}

/// The request's `Idempotency-Key`: 1 to 255 visible ASCII characters, or a 400.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
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

/// How an inquiry is handed on: where, and the key to claim on the way, if any.
pub struct HandOn<'a> {
    /// The sink.
    pub sink: &'a dyn IntakeSink,
    /// The key store.
    pub keys: &'a dyn IdempotencyKeys,
    /// The client's key, bound to the submission's content.
    pub claim: Option<KeyClaim<'a>>,
    /// How long the key store may take before the inquiry is accepted without it.
    pub key_timeout: Duration,
}

/// Prepares the inquiry (the sink may refuse it), claims the key, then submits and waits
/// for the broker's confirm. The key is claimed only for an inquiry nothing else will
/// refuse, so a sender who fixes a refused body can send it again under the same key.
pub async fn hand_on(inquiry: Inquiry, how: HandOn<'_>) -> Result<Accepted, Problem> {
    let prepared = how.sink.prepare(inquiry).await.map_err(refusal_problem)?;
    if let Some(claim) = how.claim {
        claim_key(how.keys, claim, how.key_timeout).await?;
    }
    prepared.submit().await.map_err(refusal_problem)
}

/// Binds the key to the content; a key bound to other content is a 422. A key store
/// that cannot answer in time lets the inquiry through.
async fn claim_key(
    keys: &dyn IdempotencyKeys,
    claim: KeyClaim<'_>,
    timeout: Duration,
) -> Result<(), Problem> {
    let (scope, inquiry_id) = (claim.scope, claim.inquiry_id);
    match tokio::time::timeout(timeout, keys.claim(claim)).await {
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
            tracing::warn!(%error, scope, %inquiry_id, "Idempotency key look-up failed; accepting without it.");
            metrics::counter!("leadpipe_idempotency_lookups_degraded_total").increment(1);
            Ok(())
        }
        Err(_) => {
            tracing::warn!(scope, %inquiry_id, "Idempotency key look-up timed out; accepting without it.");
            metrics::counter!("leadpipe_idempotency_lookups_degraded_total").increment(1);
            Ok(())
        }
    }
}

/// What the sender is told when the sink refuses an inquiry.
pub fn refusal_problem(refusal: Refusal) -> Problem {
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
            code,
            reason: _,
            retry_after_secs,
        } => Problem {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            message: if code == "spool_full" {
                "the message broker has been unreachable so long that the local spool is full; nothing was stored, retry later"
            } else {
                "the message broker did not confirm the inquiry; nothing was stored, retry later"
            }
            .into(),
            fields: Vec::new(),
            retry_after_secs: Some(retry_after_secs),
        },
    }
}

/// Whether the client prefers HTML to JSON (a browser posting a plain HTML form).
pub fn wants_html(headers: &HeaderMap) -> bool {
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

/// The JSON answer to an accepted inquiry, as `/openapi.json` describes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct IntakeAccepted {
    /// The inquiry's id: the same for a retry under the same `Idempotency-Key` or
    /// external id.
    #[schema(format = Uuid, example = "0193a5c2-7f1e-7c3a-9d1e-2b4f5a6c7d8e")]
    inquiry_id: String,
    /// Always `accepted`.
    #[schema(example = "accepted")]
    status: String,
}

/// The answer to an accepted inquiry: `202` with its id as JSON; for a browser a
/// thank-you page, or `303` to `redirect` when one is set. Counts as a success of the
/// connector.
pub fn accepted(
    channel: Channel,
    source: &str,
    headers: &HeaderMap,
    inquiry_id: InquiryId,
    redirect: Option<&str>,
) -> Response {
    record_success(channel, source, None);
    if wants_html(headers) {
        if let Some(location) = redirect.and_then(|r| HeaderValue::from_str(r).ok()) {
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

/// Whether `origin` is in an allow-list (`*` allows any; case does not matter).
pub fn origin_listed(allowed: &[String], origin: &str) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

const THANK_YOU_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Thank you</title></head>\
<body style=\"font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem\">\
<h1>Thank you!</h1><p>We have received your message and will get back to you soon.</p>\
<p><a href=\"javascript:history.back()\">Back</a></p></body></html>\n";
