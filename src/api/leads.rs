//! `/v1/leads` and `/v1/leads/{id}`: the leads, their keys, tags, stage history and
//! activities.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ingest::problem::Problem;
use normalizer::IdentityKey;
use store::LeadQuery;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{
    ApiState, Caller, bad_query, page_cursor, page_limit, parse_time, store_problem,
};

/// The lead routes (mounted behind authentication; every role, within its scope).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_leads))
        .routes(routes!(get_lead))
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

/// List leads, newest first, filtered; unknown parameters are refused.
#[utoipa::path(
    get,
    path = "/v1/leads",
    tag = "leads",
    security(("bearer" = [])),
    params(
        ("stage" = Option<String>, Query, description = "Only leads in this stage."),
        ("channel" = Option<String>, Query, description = "Only leads that came by this channel (`form`, `email`, `chat`, `call`, ...)."),
        ("source" = Option<String>, Query, description = "Only leads of this source."),
        ("email" = Option<String>, Query, description = "Only leads of the contact with this address."),
        ("phone" = Option<String>, Query, description = "Only leads of the contact with this number, in E.164 (`%2B39...`)."),
        ("key" = Option<String>, Query, description = "Only leads with this identity key (`email:...`, `phone:+...`)."),
        ("created_after" = Option<String>, Query, format = DateTime, description = "RFC 3339."),
        ("created_before" = Option<String>, Query, format = DateTime, description = "RFC 3339."),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500 (default 50)."),
    ),
    responses(
        (status = 200, description = "A page of leads: `items` and `next_cursor`.", body = Object),
        (status = 400, description = "`bad_query`: an unknown parameter or a value that cannot be used.", body = Problem),
        (status = 401, description = "`missing_token`, `bad_token` or `api_disabled`.", body = Problem),
        (status = 503, description = "`database_unavailable` or `database_error`; or `timeout`.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
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

/// One lead with its keys, tags, stage history and activities.
#[utoipa::path(
    get,
    path = "/v1/leads/{id}",
    tag = "leads",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The lead's id.")),
    responses(
        (status = 200, description = "The lead.", body = Object),
        (status = 401, description = "`missing_token`, `bad_token` or `api_disabled`.", body = Problem),
        (status = 404, description = "`lead_not_found`.", body = Problem),
        (status = 503, description = "`database_unavailable` or `database_error`; or `timeout`.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
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
