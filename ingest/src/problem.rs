//! The JSON error body every HTTP endpoint answers with: `{"error": code, "message": text}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::sink::FieldProblem;

/// An HTTP error answer: a status, a stable code and a sentence for a person.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code (`unknown_form`, `body_too_large`, ...).
    pub code: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
    /// Field-level details, when there are any.
    pub fields: Vec<FieldProblem>,
    /// Seconds for a `Retry-After` header (503 answers).
    pub retry_after_secs: Option<u32>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[FieldProblem]>::is_empty")]
    fields: &'a [FieldProblem],
}

/// The error body as `/openapi.json` describes it (the serialised form of [`Problem`]).
#[derive(utoipa::ToSchema)]
#[schema(as = Problem)]
#[allow(dead_code)]
struct ProblemSchema {
    /// A stable machine-readable code (`unknown_form`, `bad_token`, `not_found`, ...).
    #[schema(example = "invalid_fields")]
    error: String,
    /// What went wrong and what to do about it.
    #[schema(example = "some values cannot be used; see fields")]
    message: String,
    /// Field-level details; absent when there are none.
    #[schema(required = false)]
    fields: Vec<FieldProblem>,
}

impl utoipa::PartialSchema for Problem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <ProblemSchema as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Problem {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Problem")
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <ProblemSchema as utoipa::ToSchema>::schemas(schemas);
    }
}

impl Problem {
    /// A problem with no field details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            retry_after_secs: None,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            message: &self.message,
            fields: &self.fields,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
