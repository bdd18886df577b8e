//! The ops API and the health endpoints.
//!
//! `/v1/leads` and `/v1/leads/{id}` need `Authorization: Bearer <api.admin_token>`;
//! `/healthz`, `/readyz` and `/metrics` are open (bind them to a private interface or
//! filter them at the proxy).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ingest::problem::Problem;
use metrics_exporter_prometheus::PrometheusHandle;
use router::Publisher;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use store::{LeadQuery, Store, StoreError};
use subtle::ConstantTimeEq;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The database.
    pub store: Store,
    /// The publisher (for readiness).
    pub publisher: Arc<Publisher>,
    /// SHA-256 of the admin token; `None` when no token is configured.
    pub admin_token_hash: Option<[u8; 32]>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Set once the schema is migrated; until then the database is not ready for use.
    pub schema_ready: Arc<AtomicBool>,
}

impl ApiState {
    /// Hashes the token once so that comparisons take the same time whatever its length.
    pub fn token_hash(token: Option<&SecretString>) -> Option<[u8; 32]> {
        token.map(|t| Sha256::digest(t.expose_secret().as_bytes()).into())
    }
}

/// The API and health routes.
pub fn routes(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/v1/leads", get(list_leads))
        .route("/v1/leads/{id}", get(get_lead))
        .merge(crate::clients_api::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .merge(protected)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn require_admin(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.admin_token_hash else {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "api_disabled",
            "the ops API has no token configured: set api.admin_token (or LEADPIPE__API__ADMIN_TOKEN)",
        )
        .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| -> [u8; 32] { Sha256::digest(t.trim().as_bytes()).into() });
    match presented {
        Some(hash) if bool::from(hash.ct_eq(&expected)) => next.run(request).await,
        Some(_) => Problem::new(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "the bearer token is not valid for this API",
        )
        .into_response(),
        None => {
            let mut response = Problem::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "send `Authorization: Bearer <api.admin_token>`",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// A 400 for a query string that cannot be used.
pub(crate) fn bad_query(message: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad_query", message)
}

/// A `cursor` query parameter: the id a previous page's `next_cursor` gave.
pub(crate) fn page_cursor(value: &str) -> Result<i64, Problem> {
    value.parse().map_err(|_| {
        bad_query(format!(
            "cursor: `{value}` is not a cursor from next_cursor"
        ))
    })
}

/// A `limit` query parameter: 1 to 500.
pub(crate) fn page_limit(value: &str) -> Result<i64, Problem> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=500).contains(n))
        .ok_or_else(|| bad_query(format!("limit: `{value}` must be 1 to 500")))
}

/// A database failure as an HTTP answer: a plain sentence for the client, the error text
/// (which can name hosts, users and statements) only in the log.
pub(crate) fn store_problem(error: StoreError) -> Problem {
    if error.is_transient() {
        tracing::warn!(%error, "Reading from the database failed; answered 503.");
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database did not answer; retry later",
        );
        p.retry_after_secs = Some(5);
        p
    } else {
        tracing::error!(%error, "Reading from the database failed.");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_error",
            "the database could not answer this query; the error is in the daemon's log",
        )
    }
}

fn parse_time(key: &str, value: &str) -> Result<DateTime<Utc>, Problem> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            bad_query(format!(
                "{key}: `{value}` is not an RFC 3339 time like 2026-01-31T09:00:00Z ({e})"
            ))
        })
}

/// Turns query parameters into a [`LeadQuery`]; unknown parameters are refused so a typo
/// never silently returns everything.
fn lead_query(params: &HashMap<String, String>) -> Result<LeadQuery, Problem> {
    let mut query = LeadQuery {
        limit: 50,
        ..LeadQuery::default()
    };
    for (key, value) in params {
        let value = value.trim();
        match key.as_str() {
            "stage" => query.stage = Some(value.to_owned()),
            "channel" => query.channel = Some(value.to_owned()),
            "source" => query.source = Some(value.to_owned()),
            "email" => query.email = Some(value.to_lowercase()),
            "phone" => {
                let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
                if !(compact.starts_with('+')
                    && compact.len() > 1
                    && compact[1..].bytes().all(|b| b.is_ascii_digit()))
                {
                    return Err(bad_query(format!(
                        "phone: `{value}` must be in E.164 form, like +390212345678 (URL-encode the + as %2B)"
                    )));
                }
                query.phone = Some(compact);
            }
            "created_after" => query.created_after = Some(parse_time(key, value)?),
            "created_before" => query.created_before = Some(parse_time(key, value)?),
            "cursor" => query.cursor = Some(page_cursor(value)?),
            "limit" => query.limit = page_limit(value)?,
            other => {
                return Err(bad_query(format!(
                    "unknown parameter `{other}`: use stage, channel, source, email, phone, created_after, created_before, cursor or limit"
                )));
            }
        }
    }
    Ok(query)
}

async fn list_leads(
    State(state): State<ApiState>,
    params: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params.map_err(|e| bad_query(e.body_text()))?;
    let query = lead_query(&params)?;
    let page = state
        .store
        .list_leads(&query)
        .await
        .map_err(store_problem)?;
    Ok(Json(page).into_response())
}

async fn get_lead(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "lead_not_found",
            format!("there is no lead with id `{id}`"),
        )
    };
    let numeric: i64 = id.parse().map_err(|_| not_found())?;
    match state.store.get_lead(numeric).await.map_err(store_problem)? {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(not_found()),
    }
}

async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<ApiState>) -> Response {
    let broker = state.publisher.is_ready().await;
    let database = state.schema_ready.load(Ordering::Acquire)
        && matches!(
            tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await,
            Ok(Ok(()))
        );
    let status = if broker && database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |up: bool| if up { "up" } else { "down" };
    (
        status,
        Json(crate::connectors::status::with_connectors(
            serde_json::json!({
                "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
                "broker": word(broker),
                "database": word(database),
            }),
        )),
    )
        .into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_are_parsed_into_a_lead_query() {
        let q = lead_query(&params(&[
            ("stage", "open"),
            ("email", " Ana@Example.com "),
            ("phone", "+39 02 1234"),
            ("created_after", "2026-01-01T00:00:00Z"),
            ("limit", "10"),
            ("cursor", "42"),
        ]))
        .unwrap();
        assert_eq!(q.stage.as_deref(), Some("open"));
        assert_eq!(q.email.as_deref(), Some("ana@example.com"));
        assert_eq!(q.phone.as_deref(), Some("+39021234"));
        assert_eq!(q.limit, 10);
        assert_eq!(q.cursor, Some(42));
        assert!(q.created_after.is_some());
    }

    #[test]
    fn unknown_or_malformed_parameters_are_refused() {
        for bad in [
            params(&[("stagee", "open")]),
            params(&[("limit", "0")]),
            params(&[("limit", "x")]),
            params(&[("cursor", "abc")]),
            params(&[("phone", "0212345")]),
            params(&[("created_before", "yesterday")]),
        ] {
            let problem = lead_query(&bad).unwrap_err();
            assert_eq!(problem.status, StatusCode::BAD_REQUEST);
        }
    }
}
