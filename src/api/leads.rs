//! `/v1/leads` and `/v1/leads/{id}`: the leads, their keys, tags, stage history and
//! activities.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use ingest::problem::Problem;
use normalizer::IdentityKey;
use store::LeadQuery;

use super::common::{
    ApiState, Caller, bad_query, page_cursor, page_limit, parse_time, store_problem,
};

/// The lead routes (mounted behind authentication; every role, within its scope).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/leads", get(list_leads))
        .route("/v1/leads/{id}", get(get_lead))
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
            "key" => {
                let key = IdentityKey::parse(value).map_err(|e| bad_query(format!("key: {e}")))?;
                query.key = Some(key.as_key());
            }
            "cursor" => query.cursor = Some(page_cursor(value)?),
            "limit" => query.limit = page_limit(value)?,
            other => {
                return Err(bad_query(format!(
                    "unknown parameter `{other}`: use stage, channel, source, email, phone, key, created_after, created_before, cursor or limit"
                )));
            }
        }
    }
    Ok(query)
}

async fn list_leads(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params.map_err(|e| bad_query(e.body_text()))?;
    let query = lead_query(&params)?;
    let page = state
        .store
        .list_leads(&query, &caller.scope())
        .await
        .map_err(store_problem)?;
    Ok(Json(page).into_response())
}

async fn get_lead(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
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
    // A lead outside the caller's scope answers exactly like a missing one.
    match state
        .store
        .get_lead(numeric, &caller.scope())
        .await
        .map_err(store_problem)?
    {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(not_found()),
    }
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
            ("key", "phone:+390212345678;ext=12"),
        ]))
        .unwrap();
        assert_eq!(q.key.as_deref(), Some("phone:+390212345678;ext=12"));
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
            params(&[("key", "ana@example.com")]),
        ] {
            let problem = lead_query(&bad).unwrap_err();
            assert_eq!(problem.status, StatusCode::BAD_REQUEST);
        }
    }
}
