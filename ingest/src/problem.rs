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
