//! `/v1/contacts` and `/v1/companies`: the clients leads are matched against.

use std::collections::HashMap;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ingest::FieldProblem;
use ingest::problem::Problem;
use normalizer::company::domain_key;
use normalizer::{CompanyKey, EmailAddress, IdentityKey, parse_phone};
use store::{ClientQuery, StoreError};

use super::common::{ApiState, bad_query, page_cursor, page_limit, store_problem};
use crate::clients::{CompanyInput, ContactInput, parse_company, parse_contact};

fn unusable(fields: Vec<FieldProblem>) -> Problem {
    let mut p = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_fields",
        "some values cannot be used; see fields",
    );
    p.fields = fields;
    p
}

fn json_problem(rejection: JsonRejection) -> Problem {
    let status = rejection.status();
    let code = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        "unsupported_content_type"
    } else if status == StatusCode::UNPROCESSABLE_ENTITY {
        "invalid_fields"
    } else {
        "malformed_body"
    };
    Problem::new(status, code, rejection.body_text())
}

fn client_problem(error: StoreError) -> Problem {
    match error {
        StoreError::Conflict(why) => Problem::new(
            StatusCode::CONFLICT,
            "identity_taken",
            format!("{why}: add the value to that contact instead"),
        ),
        StoreError::NotFound(why) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_reference",
            format!("{why}: create it first or leave the field out"),
        ),
        other => store_problem(other),
    }
}

async fn create_contact(
    State(state): State<ApiState>,
    body: Result<Json<ContactInput>, JsonRejection>,
) -> Result<Response, Problem> {
    let Json(input) = body.map_err(json_problem)?;
    let contact = parse_contact(input, &state.key_rules).map_err(unusable)?;
    let stored = state
        .store
        .create_contact(&contact)
        .await
        .map_err(client_problem)?;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

async fn create_company(
    State(state): State<ApiState>,
    body: Result<Json<CompanyInput>, JsonRejection>,
) -> Result<Response, Problem> {
    let Json(input) = body.map_err(json_problem)?;
    let company = parse_company(input).map_err(unusable)?;
    let stored = state
        .store
        .create_company(&company)
        .await
        .map_err(client_problem)?;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

/// Reads `limit`, `cursor` and one key filter out of the query string.
fn client_query(
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
    key_params: &[&str],
) -> Result<ClientQuery, Problem> {
    let Query(params) = params.map_err(|e| bad_query(e.body_text()))?;
    let mut query = ClientQuery {
        limit: 50,
        ..ClientQuery::default()
    };
    for (name, value) in &params {
        let value = value.trim();
        match name.as_str() {
            "limit" => query.limit = page_limit(value)?,
            "cursor" => query.cursor = Some(page_cursor(value)?),
            "email" if key_params.contains(&"email") => {
                let email =
                    EmailAddress::parse(value).map_err(|e| bad_query(format!("email: {e}")))?;
                query.key = Some(IdentityKey::email(&email).as_key());
            }
            "phone" if key_params.contains(&"phone") => {
                let phone = parse_phone(value, None)
                    .map_err(|e| bad_query(format!("phone: {e} (use E.164, + as %2B)")))?;
                query.key = Some(IdentityKey::phone(&phone.number, None).as_key());
            }
            "domain" if key_params.contains(&"domain") => {
                let domain = domain_key(value).ok_or_else(|| {
                    bad_query(format!("domain: `{value}` is not a company domain"))
                })?;
                query.key = Some(CompanyKey::Domain(domain).as_key());
            }
            other => {
                return Err(bad_query(format!(
                    "unknown parameter `{other}`: use {}, cursor or limit",
                    key_params.join(", ")
                )));
            }
        }
    }
    Ok(query)
}

async fn list_contacts(
    State(state): State<ApiState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    let query = client_query(params, &["email", "phone"])?;
    let page = state
        .store
        .list_contacts(&query)
        .await
        .map_err(store_problem)?;
    Ok(Json(page).into_response())
}

async fn list_companies(
    State(state): State<ApiState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    let query = client_query(params, &["domain", "phone"])?;
    let page = state
        .store
        .list_companies(&query)
        .await
        .map_err(store_problem)?;
    Ok(Json(page).into_response())
}

fn not_found(what: &str, id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("there is no {what} with id `{id}`"),
    )
}

async fn get_contact(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let numeric: i64 = id.parse().map_err(|_| not_found("contact", &id))?;
    match state
        .store
        .get_contact(numeric)
        .await
        .map_err(store_problem)?
    {
        Some(contact) => Ok(Json(contact).into_response()),
        None => Err(not_found("contact", &id)),
    }
}

async fn get_company(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let numeric: i64 = id.parse().map_err(|_| not_found("company", &id))?;
    match state
        .store
        .get_company(numeric)
        .await
        .map_err(store_problem)?
    {
        Some(company) => Ok(Json(company).into_response()),
        None => Err(not_found("company", &id)),
    }
}

/// The client routes (mounted behind the admin token).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/contacts", get(list_contacts).post(create_contact))
        .route("/v1/contacts/{id}", get(get_contact))
        .route("/v1/companies", get(list_companies).post(create_company))
        .route("/v1/companies/{id}", get(get_company))
}
