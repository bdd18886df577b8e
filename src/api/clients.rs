//! `/v1/contacts` and `/v1/companies`: the clients leads are matched against.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ingest::FieldProblem;
use ingest::problem::Problem;
use normalizer::company::domain_key;
use normalizer::{CompanyKey, EmailAddress, IdentityKey, parse_phone};
use store::{ClientQuery, StoreError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{
    ApiState, bad_query, json_problem, page_cursor, page_limit, query_params, store_problem,
    unknown_param,
};
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

/// Create a contact; its identities must not belong to another contact.
#[utoipa::path(
    post,
    path = "/v1/contacts",
    tag = "clients",
    security(("bearer" = [])),
    request_body(content = crate::clients::ContactInput, content_type = "application/json"),
    responses(
        (status = 201, description = "Created: the stored contact, values normalised.", body = store::ContactView),
        (status = 400, description = "`malformed_body`: not JSON.", body = Problem),
        (status = 401, description = "`missing_token`, `bad_token` or `api_disabled`.", body = Problem),
        (status = 409, description = "`identity_taken`: an address or number belongs to another contact.", body = Problem),
        (status = 415, description = "`unsupported_content_type`: send application/json.", body = Problem),
        (status = 422, description = "`invalid_fields` (`fields` names each) or `unknown_reference`.", body = Problem),
        (status = 503, description = "`database_unavailable` or `database_error`; or `timeout`.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
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

/// Create a company; its identities must not belong to another company.
#[utoipa::path(
    post,
    path = "/v1/companies",
    tag = "clients",
    security(("bearer" = [])),
    request_body(content = crate::clients::CompanyInput, content_type = "application/json"),
    responses(
        (status = 201, description = "Created: the stored company, values normalised.", body = store::CompanyView),
        (status = 400, description = "`malformed_body`: not JSON.", body = Problem),
        (status = 401, description = "`missing_token`, `bad_token` or `api_disabled`.", body = Problem),
        (status = 409, description = "`identity_taken`: an address or number belongs to another company.", body = Problem),
        (status = 415, description = "`unsupported_content_type`: send application/json.", body = Problem),
        (status = 422, description = "`invalid_fields` (`fields` names each) or `unknown_reference`.", body = Problem),
        (status = 503, description = "`database_unavailable` or `database_error`; or `timeout`.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
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
    let params = query_params(params)?;
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
                let mut known = key_params.to_vec();
                known.extend(["cursor", "limit"]);
                return Err(unknown_param(other, &known));
            }
        }
    }
    Ok(query)
}

/// List contacts, newest first, optionally by one identity.
#[utoipa::path(
    get,
    path = "/v1/contacts",
    tag = "clients",
    security(("bearer" = [])),
    params(
        ("email" = Option<String>, Query, description = "A contact with this address."),
        ("phone" = Option<String>, Query, description = "A contact with this number, in E.164 (`%2B39...`)."),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500 (default 50)."),
    ),
    responses(
        (status = 200, description = "A page: `items` and `next_cursor`.", body = store::ClientPage<store::ContactView>),
        (status = 400, description = "`bad_query`: an unknown parameter or a value that cannot be used.", body = Problem),
        (status = 401, description = "`missing_token`, `bad_token` or `api_disabled`.", body = Problem),
        (status = 503, description = "`database_unavailable` or `database_error`; or `timeout`.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
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

/// List companies, newest first, optionally by one identity.
#[utoipa::path(
    get,
    path = "/v1/companies",
    tag = "clients",
    security(("bearer" = [])),
    params(
        ("domain" = Option<String>, Query, description = "The company with this domain."),
        ("phone" = Option<String>, Query, description = "A company with this number, in E.164 (`%2B39...`)."),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500 (default 50)."),
    ),
    responses(
        (status = 200, description = "A page: `items` and `next_cursor`.", body = store::ClientPage<store::CompanyView>),
        (status = 400, description = "`bad_query`: an unknown parameter or a value that cannot be used.", body = Problem),
        (status = 401, description = "`missing_token`, `bad_token` or `api_disabled`.", body = Problem),
        (status = 503, description = "`database_unavailable` or `database_error`; or `timeout`.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
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

/// One contact.
#[utoipa::path(
    get,
    path = "/v1/contacts/{id}",
    tag = "clients",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The contact's id.")),
    responses(
        (status = 200, description = "The contact.", body = store::ContactView),
        (status = 401, description = "`missing_token`, `bad_token` or `api_disabled`.", body = Problem),
        (status = 404, description = "`not_found`.", body = Problem),
        (status = 503, description = "`database_unavailable` or `database_error`; or `timeout`.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
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

/// One company.
#[utoipa::path(
    get,
    path = "/v1/companies/{id}",
    tag = "clients",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The company's id.")),
    responses(
        (status = 200, description = "The company.", body = store::CompanyView),
        (status = 401, description = "`missing_token`, `bad_token` or `api_disabled`.", body = Problem),
        (status = 404, description = "`not_found`.", body = Problem),
        (status = 503, description = "`database_unavailable` or `database_error`; or `timeout`.", body = Problem, headers(("Retry-After" = u32, description = "Seconds to wait."))),
    ),
)]
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
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_contacts, create_contact))
        .routes(routes!(get_contact))
        .routes(routes!(list_companies, create_company))
        .routes(routes!(get_company))
}
