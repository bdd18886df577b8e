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
//! The steps webhooks share with forms are in [`crate::http`]; this module holds what is
//! a form's own: its declaration, its CORS answers and how its fields become an inquiry.

mod config;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use crate::fields;
pub use crate::http::{body, signature};
pub use config::FormConfig;
pub use signature::TimestampPolicy;

use crate::connector::{
    Checks, ConfigProblem, Connector, ConnectorKind, Deps, HttpConnector, IntakeSettings,
};
use crate::http::{self, HandOn, HmacSignature, SignatureCheck};
use crate::inquiry::{Channel, ContentDedup, ContentHash, Inquiry, InquiryId, RawPayload};
use crate::problem::Problem;
use crate::rate_limit::RateLimits;
use crate::sink::{IdempotencyKeys, IntakeSink, KeyClaim};

/// The forms channel, as every count and inquiry names it.
const CHANNEL: Channel = Channel::Form;

pub fn validate_forms(forms: &[FormConfig]) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut push = |index: usize, key: &str, problem: String| {
        problems.push((format!("forms[{index}].{key}"), problem));
    };
    let mut seen = HashMap::new();
    for (index, form) in forms.iter().enumerate() {
        if seen.insert(form.name.as_str(), index).is_some() {
            push(
                index,
                "name",
                format!(
                    "`{}` is declared twice; form names must be unique",
                    form.name
                ),
            );
        }
        let name_ok = !form.name.is_empty()
            && form.name.len() <= 100
            && form
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            push(
                index,
                "name",
                format!(
                    "`{}` must be 1 to 100 characters of letters, digits, `-`, `_` or `.` (it is part of a URL)",
                    form.name
                ),
            );
        }
        if form.source.trim().is_empty() {
            push(
                index,
                "source",
                "must not be empty: it is recorded on every lead".into(),
            );
        }
        if form.secret.is_some() && form.secret_file.is_some() {
            push(
                index,
                "secret",
                "set either `secret` or `secret_file`, not both".into(),
            );
        }
        if let Some(secret) = &form.secret
            && secret.trim().is_empty()
        {
            push(index, "secret", "must not be empty or blank (an empty key signs anything); remove it to accept unsigned posts".into());
        }
        if let Some(path) = &form.secret_file {
            match read_secret_file(path) {
                Err(error) => push(
                    index,
                    "secret_file",
                    format!("cannot read {}: {error}", path.display()),
                ),
                Ok(secret) if secret.trim().is_empty() => {
                    push(
                        index,
                        "secret_file",
                        format!(
                            "{} is empty or blank (an empty key signs anything): put the shared secret in it",
                            path.display()
                        ),
                    );
                }
                Ok(_) => {}
            }
        }
        if form.signature_timestamp == TimestampPolicy::Required
            && form.secret.is_none()
            && form.secret_file.is_none()
        {
            push(
                index,
                "signature_timestamp",
                "`required` needs `secret` or `secret_file`: only signed posts carry a timestamp"
                    .into(),
            );
        }
        if !(1..=86_400).contains(&form.signature_tolerance_secs) {
            push(
                index,
                "signature_tolerance_secs",
                "must be 1 to 86400 seconds".into(),
            );
        }
        if HeaderValue::from_str(&form.signature_header).is_err()
            || axum::http::HeaderName::from_bytes(form.signature_header.as_bytes()).is_err()
        {
            push(
                index,
                "signature_header",
                format!("`{}` is not a valid header name", form.signature_header),
            );
        }
        if let Some(0) = form.max_body_bytes {
            push(index, "max_body_bytes", "must be greater than 0".into());
        }
        if let Some(redirect) = &form.redirect
            && !(redirect.starts_with("https://")
                || redirect.starts_with("http://")
                || redirect.starts_with('/'))
        {
            push(
                index,
                "redirect",
                format!("`{redirect}` must be an absolute http(s) URL or a path"),
            );
        }
    }
    problems
}

/// The forms connector: `[[forms]]`, served at `POST /v1/intake/forms/{form}`.
pub struct Forms;

impl ConnectorKind for Forms {
    const SECTION: &'static str = "forms";
    type Config = Vec<FormConfig>;

    fn validate(forms: &Self::Config, checks: &Checks<'_>) -> Vec<ConfigProblem> {
        let mut problems = validate_forms(forms);
        problems.extend(crate::rate_limit::problems(checks.intake, forms));
        for (index, form) in forms.iter().enumerate() {
            if let Err(problem) = (checks.region)(&form.default_region) {
                problems.push((format!("forms[{index}].default_region"), problem));
            }
        }
        problems
    }

    fn summary(forms: &Self::Config) -> Option<String> {
        Some(format!(
            "{} form{}",
            forms.len(),
            if forms.len() == 1 { "" } else { "s" }
        ))
    }

    fn build(forms: Self::Config, deps: &Deps) -> Result<Vec<Connector>, ConfigProblem> {
        let sources: BTreeSet<String> = forms.iter().map(|f| f.source.clone()).collect();
        let intake = FormsIntake::new(
            deps.intake.clone(),
            forms,
            deps.sink.clone(),
            deps.keys.clone(),
        )?;
        Ok(vec![Connector::Http(HttpConnector {
            channel: CHANNEL,
            sources: sources.into_iter().collect(),
            routes: Box::new(Arc::new(intake).router()),
        })])
    }
}

struct Form {
    config: FormConfig,
    signature: Option<HmacSignature>,
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

impl FormsIntake {
    /// Builds the intake from configuration; reads secret files.
    pub fn new(
        settings: IntakeSettings,
        forms: Vec<FormConfig>,
        sink: Arc<dyn IntakeSink>,
        keys: Arc<dyn IdempotencyKeys>,
    ) -> Result<Self, ConfigProblem> {
        if let Some(problem) = validate_forms(&forms).into_iter().next() {
            return Err(problem);
        }
        let mut map = HashMap::new();
        for (index, config) in forms.into_iter().enumerate() {
            let secret = match (&config.secret, &config.secret_file) {
                (Some(secret), _) => Some(secret.as_bytes().to_vec()),
                (None, Some(path)) => {
                    let text = read_secret_file(path).map_err(|error| {
                        (
                            format!("forms[{index}].secret_file"),
                            format!("cannot read {}: {error}", path.display()),
                        )
                    })?;
                    Some(text.into_bytes())
                }
                (None, None) => None,
            };
            let max_body = config.max_body_bytes.unwrap_or(settings.max_body_bytes);
            let signature = secret.map(|secret| {
                HmacSignature::new(
                    secret,
                    config.signature_header.clone(),
                    config.signature_timestamp,
                    config.signature_tolerance_secs,
                )
            });
            map.insert(
                config.name.clone(),
                Form {
                    config,
                    signature,
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

    /// The routes of this connector, documented and ready to be merged into the
    /// daemon's router.
    pub fn router(self: Arc<Self>) -> OpenApiRouter {
        documented()
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                limit_rate,
            ))
            .with_state(self)
    }

    async fn handle(&self, form_name: &str, headers: &HeaderMap, body: Body) -> Response {
        let Some(form) = self.forms.get(form_name) else {
            return http::reject(
                CHANNEL,
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
            Err(problem) => http::reject(CHANNEL, source, problem),
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
        let source = form.config.source.as_str();
        let raw = http::read_limited(headers, body, form.max_body).await?;
        http::received(CHANNEL, source);
        if let Some(signature) = &form.signature {
            signature.check(headers, &raw)?;
        }
        if headers
            .get(header::ORIGIN)
            .is_some_and(|origin| listed_origin(form, origin).is_none())
        {
            return Err(origin_refused());
        }

        let content_type = http::content_type(headers);
        let parsed = body::parse_body(content_type.as_deref(), &raw).map_err(http::body_problem)?;
        let content = parsed.content_hash();
        let mapped = fields::map_fields(parsed.fields, form.config.honeypot.as_deref());

        let key = http::idempotency_key(headers)?;
        let id = match &key {
            Some(key) => InquiryId::from_keyed_content(CHANNEL, &form.config.name, key, &content),
            None => InquiryId::new_unique(),
        };
        let spam = mapped.honeypot_filled.then(|| {
            format!(
                "honeypot field `{}` was filled",
                form.config.honeypot.as_deref().unwrap_or_default()
            )
        });
        if spam.is_some() {
            http::spam(CHANNEL, source);
        }
        // A signed post is checked for identical content even under a key: a captured
        // post replayed with a fresh Idempotency-Key is then a duplicate.
        let dedup = (key.is_none() || form.signature.is_some()).then(|| ContentDedup {
            key: content_key(&form.config.name, &content),
            window_secs: self.settings.dedup_window_secs,
        });
        let inquiry = Inquiry {
            id,
            channel: CHANNEL,
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

        let claim = key.as_deref().map(|key| KeyClaim {
            scope: &form.config.name,
            key,
            content_hash: &content,
            inquiry_id: id,
        });
        let how = HandOn {
            sink: self.sink.as_ref(),
            keys: self.keys.as_ref(),
            claim,
            key_timeout: Duration::from_millis(self.settings.key_lookup_timeout_ms),
        };
        let accepted = http::hand_on(inquiry, how).await?;
        Ok(http::accepted(
            CHANNEL,
            source,
            headers,
            accepted.inquiry_id,
            form.config.redirect.as_deref(),
        ))
    }
}

/// The documented routes, before the state is attached (`/openapi.json` lists them
/// whether or not forms are configured).
pub(crate) fn documented() -> OpenApiRouter<Arc<FormsIntake>> {
    OpenApiRouter::new().routes(routes!(submit_form, preflight))
}

/// Submit a web form.
///
/// The body is the form's fields as `application/x-www-form-urlencoded`,
/// `multipart/form-data` (files become attachments) or a flat `application/json`
/// object; field names are mapped to contact data, message, campaign tags and custom
/// fields. Checks in this order: unknown form (404), the client's rate limit (429), body
/// size (413), signature (401, forms with a secret), `Origin` (403, when sent), content
/// type and body (415/400), `Idempotency-Key` (400), whether the inquiry can be a lead
/// (422), the key's claim (422), the broker's confirm (202, else 503). A browser that
/// prefers `text/html` gets a thank-you page, or a 303 to the form's `redirect`.
#[utoipa::path(
    post,
    path = "/v1/intake/forms/{form}",
    tag = "intake",
    params(
        ("form" = String, Path, description = "The form's `name` in `[[forms]]`."),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; a retry with the same key and body files nothing new, the same key with another body is a 422."),
        ("X-Leadpipe-Signature" = Option<String>, Header, description = "`sha256=<hex HMAC-SHA256>` of the raw body (or of `<timestamp>.<body>` with X-Leadpipe-Timestamp) under the form's secret; required when the form has a `secret`. The header name is the form's `signature_header`."),
        ("X-Leadpipe-Timestamp" = Option<i64>, Header, description = "The signing time in Unix seconds; required when the form's `signature_timestamp = \"required\"`."),
        ("Origin" = Option<String>, Header, description = "When sent, must be one of the form's `allowed_origins`."),
    ),
    request_body(
        description = "The form's fields.",
        content(
            (Object = "application/x-www-form-urlencoded"),
            (Object = "multipart/form-data"),
            (Object = "application/json"),
        ),
    ),
    responses(
        (status = 202, description = "Accepted: the broker confirmed the inquiry. JSON, or a thank-you page for a browser.", content(
            (crate::http::IntakeAccepted = "application/json"),
            (String = "text/html"),
        )),
        (status = 303, description = "Accepted, for a browser, when the form has a `redirect`.", headers(("Location" = String, description = "The form's `redirect`."))),
        (status = 400, description = "`body_unreadable`, `malformed_body`, `too_deep` or `invalid_idempotency_key`.", body = Problem),
        (status = 401, description = "`bad_signature` or `timestamp_outside_window` (forms with a secret).", body = Problem),
        (status = 403, description = "`origin_not_allowed`: the `Origin` is not in the form's `allowed_origins`.", body = Problem),
        (status = 404, description = "`unknown_form`.", body = Problem),
        (status = 413, description = "`body_too_large`: over the form's `max_body_bytes`.", body = Problem),
        (status = 415, description = "`unsupported_content_type`.", body = Problem),
        (status = 422, description = "`no_contact` (nothing to reach the person by, `fields` says what) or `idempotency_key_reused`.", body = Problem),
        (status = 429, description = "`rate_limited`: too many posts from this address.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
        (status = 503, description = "`unavailable` (the broker did not confirm; nothing stored) or `timeout`: retry, with the same Idempotency-Key.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
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
    let mut response = http::reject(CHANNEL, source, problem);
    if let Some(form) = intake.forms.get(&form) {
        response
            .headers_mut()
            .extend(cors_headers(form, request.headers()));
    }
    response
}

/// CORS preflight for a form posted from a page's script.
#[utoipa::path(
    options,
    path = "/v1/intake/forms/{form}",
    tag = "intake",
    params(
        ("form" = String, Path, description = "The form's `name` in `[[forms]]`."),
        ("Origin" = String, Header, description = "The page's origin; must be one of the form's `allowed_origins`."),
    ),
    responses(
        (status = 204, description = "The origin may post: the CORS headers allow POST with Content-Type, Idempotency-Key and the signature headers."),
        (status = 403, description = "`origin_not_allowed`.", body = Problem),
        (status = 404, description = "`unknown_form`.", body = Problem),
    ),
)]
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
        return origin_refused().into_response();
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

fn content_key(form: &str, content: &ContentHash) -> String {
    let mut hasher = Sha256::new();
    hasher.update(form.as_bytes());
    hasher.update([0x1f]);
    hasher.update(content.as_bytes());
    hex::encode(hasher.finalize())
}

/// A secret file's content without its trailing line break.
pub(crate) fn read_secret_file(path: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// The request's `Origin` when the form lists it (or allows any); `None` otherwise.
fn listed_origin<'a>(form: &Form, origin: &'a HeaderValue) -> Option<&'a HeaderValue> {
    let allowed = &form.config.allowed_origins;
    // A form that lists no origins takes posts from anywhere, but sends no CORS headers.
    let open = allowed.is_empty();
    let listed = origin
        .to_str()
        .is_ok_and(|o| http::origin_listed(allowed, o));
    (open || listed).then_some(origin)
}

fn origin_refused() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "this form does not accept posts from the page's origin: add it to the form's allowed_origins",
    )
}

/// The CORS headers of an answer to a page on a listed origin; none for other pages.
fn cors_headers(form: &Form, headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let Some(origin) = headers.get(header::ORIGIN) else {
        return out;
    };
    if !form.config.allowed_origins.is_empty()
        && let Some(origin) = listed_origin(form, origin)
    {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    out
}
