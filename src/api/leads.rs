//! `/v1/leads` and `/v1/leads/{id}`: the leads, their keys, tags, stage history and
//! activities; editing one lead, bulk assignment and stage changes; the kanban board of a
//! pipeline (`/v1/pipelines/{code}/kanban`).
//!
//! Every route reads the [`Caller`] and works within its scope: a lead the caller may not
//! see answers exactly as a lead that does not exist.

use std::collections::HashMap;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use ingest::FieldProblem;
use ingest::problem::Problem;
use normalizer::{EmailAddress, IdentityKey, Region, clean_text, parse_phone};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{
    BulkOutcome, EditError, LeadCursor, LeadPage, LeadPatch, LeadQuery, LeadSort, NewEmail,
    NewPhone, Responsible, Role, SortField, StageInfo,
};
use utoipa_axum::router::OpenApiRouter;

use super::common::{
    ApiState, Caller, bad_query, json_problem, page_limit, parse_time, present, query_params,
    store_problem, unknown_param,
};

/// The lead routes (mounted behind the token check).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(list_leads))
        .routes(utoipa_axum::routes!(get_lead, patch_lead))
        .routes(utoipa_axum::routes!(bulk_assign))
        .routes(utoipa_axum::routes!(bulk_stage))
        .routes(utoipa_axum::routes!(kanban))
        .routes(utoipa_axum::routes!(kanban_column))
}

/// The filters every list, board and bulk change understands.
const FILTERS: &[&str] = &[
    "stage",
    "semantic",
    "pipeline",
    "channel",
    "source",
    "email",
    "phone",
    "key",
    "responsible",
    "repeat",
    "tag",
    "q",
    "created_after",
    "created_before",
];

/// Stage semantics a `semantic` filter may name.
const SEMANTICS: &[&str] = &["open", "frozen", "success", "failure", "abandoned"];

/// Turns parameters into a [`LeadQuery`]. Only the names in [`FILTERS`] and in `extra`
/// are accepted, so a typo never silently widens the result (or a bulk change).
fn lead_query(
    params: &HashMap<String, String>,
    extra: &[&str],
    caller: &Caller,
) -> Result<LeadQuery, Problem> {
    let mut query = LeadQuery {
        limit: 50,
        ..LeadQuery::default()
    };
    let mut sort_field: Option<SortField> = None;
    let mut descending: Option<bool> = None;
    let mut cursor: Option<&str> = None;
    for (key, value) in params {
        let value = value.trim();
        let name = key.as_str();
        if !FILTERS.contains(&name) && !extra.contains(&name) {
            let mut known: Vec<&str> = FILTERS.to_vec();
            known.extend_from_slice(extra);
            return Err(unknown_param(name, &known));
        }
        if value.is_empty() {
            return Err(bad_query(format!(
                "{name}: the value is empty; leave the parameter out to not filter by it"
            )));
        }
        match name {
            "stage" => query.stage = Some(value.to_owned()),
            "semantic" => {
                if !SEMANTICS.contains(&value) {
                    return Err(bad_query(format!(
                        "semantic: `{value}` is not a stage semantic; use {}",
                        SEMANTICS.join(", ")
                    )));
                }
                query.semantic = Some(value.to_owned());
            }
            "pipeline" => query.pipeline = Some(value.to_owned()),
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
            "key" => {
                let key = IdentityKey::parse(value).map_err(|e| bad_query(format!("key: {e}")))?;
                query.key = Some(key.as_key());
            }
            "responsible" => {
                query.responsible = Some(match value {
                    "none" => Responsible::Unassigned,
                    "me" => Responsible::User(caller.user_id.ok_or_else(|| {
                        bad_query(
                            "responsible: `me` needs a user's token; the bootstrap admin token belongs to nobody, so name the user id".into(),
                        )
                    })?),
                    id => Responsible::User(id.parse().map_err(|_| {
                        bad_query(format!(
                            "responsible: `{id}` is not a user id; use a number, `me` or `none`"
                        ))
                    })?),
                })
            }
            "repeat" => {
                query.repeat = Some(match value {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(bad_query(format!(
                            "repeat: `{other}` must be true or false"
                        )));
                    }
                })
            }
            "tag" => query.tag = Some(value.to_owned()),
            "q" => {
                if value.chars().count() > 200 {
                    return Err(bad_query(
                        "q: the search text is longer than 200 characters; search for a part of it".into(),
                    ));
                }
                query.q = Some(value.to_owned());
            }
            "created_after" => query.created_after = Some(parse_time(name, value)?),
            "created_before" => query.created_before = Some(parse_time(name, value)?),
            "sort" => {
                sort_field = Some(SortField::parse(value).ok_or_else(|| {
                    bad_query(format!(
                        "sort: `{value}` cannot be sorted by; use id, created_at, updated_at, stage_entered_at or name"
                    ))
                })?)
            }
            "order" => {
                descending = Some(match value {
                    "desc" => true,
                    "asc" => false,
                    other => {
                        return Err(bad_query(format!("order: `{other}` must be asc or desc")));
                    }
                })
            }
            "cursor" => cursor = Some(value),
            "limit" => query.limit = page_limit(value)?,
            "per_column" => {
                query.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| bad_query(format!("per_column: `{value}` must be 1 to 100")))?
            }
            // Read by the caller (bulk changes); listed in `extra`.
            _ => {}
        }
    }
    let field = sort_field.unwrap_or_default();
    query.sort = LeadSort {
        field,
        // Names read A to Z unless asked otherwise; times and ids newest first.
        descending: descending.unwrap_or(field != SortField::Name),
    };
    if let Some(raw) = cursor {
        query.cursor = Some(
            LeadCursor::decode(raw, query.sort).map_err(|e| bad_query(format!("cursor: {e}")))?,
        );
    }
    Ok(query)
}

fn lead_not_found(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "lead_not_found",
        format!("there is no lead with id `{id}`"),
    )
}

fn invalid(field: &str, problem: impl Into<String>) -> Problem {
    let problem = problem.into();
    let mut p = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_fields",
        format!("{field}: {problem}"),
    );
    p.fields = vec![FieldProblem {
        field: field.to_owned(),
        problem,
    }];
    p
}

fn edit_problem(error: EditError, id: &str) -> Problem {
    match error {
        EditError::NotFound(_) => lead_not_found(id),
        EditError::Forbidden(why) => Problem::new(StatusCode::FORBIDDEN, "forbidden", why),
        EditError::Invalid { field, message } => invalid(field, message),
        EditError::Stale { updated_at, .. } => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "lead_changed",
            format!(
                "the lead changed at {} after the version you edited; read it again (its ETag) and reapply your change",
                updated_at.to_rfc3339()
            ),
        ),
        EditError::Store(e) => store_problem(e),
    }
}

/// A lead's version for `ETag` and `If-Match`: its `updated_at` in microseconds.
fn etag(updated_at: DateTime<Utc>) -> String {
    format!("\"{}\"", updated_at.timestamp_micros())
}

/// The version an `If-Match` header names, if one was sent.
fn if_match(headers: &HeaderMap) -> Result<Option<DateTime<Utc>>, Problem> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad_if_match",
            "If-Match must be the lead's ETag as GET /v1/leads/{id} answered it, quotes included",
        )
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    let micros: i64 = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse().ok())
        .ok_or_else(bad)?;
    DateTime::from_timestamp_micros(micros)
        .map(Some)
        .ok_or_else(bad)
}

/// A lead as an answer, with its version as `ETag`.
fn lead_answer(detail: store::LeadDetail) -> Response {
    let tag = etag(detail.lead.updated_at);
    let mut response = Json(detail).into_response();
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// List leads: filters, text search, sort, cursor pages and the total count.
#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/leads",
    tag = "leads",
    params(
        ("stage" = Option<String>, Query, description = "Stage code"),
        ("semantic" = Option<String>, Query, description = "open, frozen, success, failure or abandoned"),
        ("pipeline" = Option<String>, Query, description = "Pipeline code"),
        ("channel" = Option<String>, Query, description = "form, email, chat, call, import"),
        ("source" = Option<String>, Query, description = "Source (form, mailbox, bot, line)"),
        ("email" = Option<String>, Query, description = "Exact email address"),
        ("phone" = Option<String>, Query, description = "Exact E.164 number"),
        ("key" = Option<String>, Query, description = "A person key: email:..., phone:... (a number alone also finds it with any extension), messenger:..."),
        ("responsible" = Option<String>, Query, description = "A user id, `me` or `none` (unassigned)"),
        ("repeat" = Option<bool>, Query, description = "Repeat leads only (true) or first leads only (false)"),
        ("tag" = Option<String>, Query, description = "Leads carrying this tag"),
        ("q" = Option<String>, Query, description = "Text in name, email, phone digits or company, any case and accents"),
        ("created_after" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("created_before" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("sort" = Option<String>, Query, description = "id (default), created_at, updated_at, stage_entered_at or name"),
        ("order" = Option<String>, Query, description = "asc or desc (default desc, asc for name)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page, with the same sort"),
        ("limit" = Option<i64>, Query, description = "1 to 500, default 50"),
    ),
    responses(
        (status = 200, description = "One page of leads and the total", body = LeadPage),
        (status = 400, description = "An unknown parameter, a bad value or a cursor of another sort", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    )
)]
async fn list_leads(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    let params = query_params(params)?;
    let query = lead_query(&params, &["sort", "order", "cursor", "limit"], &caller)?;
    let page = state
        .store
        .list_leads(&caller.scope(), &query)
        .await
        .map_err(store_problem)?;
    Ok(Json(page).into_response())
}

/// One lead with its stage history, activities and events.
#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/leads/{id}",
    tag = "leads",
    params(("id" = i64, Path, description = "Lead id")),
    responses(
        (status = 200, description = "The lead", body = store::LeadDetail),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 404, description = "No such lead in the caller's scope", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    )
)]
async fn get_lead(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let numeric: i64 = id.parse().map_err(|_| lead_not_found(&id))?;
    match state
        .store
        .get_lead(&caller.scope(), numeric)
        .await
        .map_err(store_problem)?
    {
        Some(detail) => Ok(lead_answer(detail)),
        None => Err(lead_not_found(&id)),
    }
}

/// Changes to a lead: a field left out stays as it is, `null` clears it, an empty string
/// is refused.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadChanges {
    /// Short title (cannot be cleared).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    title: Option<Option<String>>,
    /// Person's name.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    name: Option<Option<String>>,
    /// Email address.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    email: Option<Option<String>>,
    /// Phone number; without a country code it is read in `default_region`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    phone: Option<Option<String>>,
    /// Region (ISO 3166 code such as IT) for a phone number typed without country code.
    default_region: Option<String>,
    /// Company name.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    company: Option<Option<String>>,
    /// The inquiry's text.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    message: Option<Option<String>>,
    /// Labels, replacing the current ones; `null` removes all.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    tags: Option<Option<Vec<String>>>,
    /// Who works the lead; `null` puts it back in the unassigned queue.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    responsible_id: Option<Option<i64>>,
}

/// A text field: `null` clears, an empty string is a mistake, never a silent clear.
fn text_change(
    field: &'static str,
    value: Option<Option<String>>,
) -> Result<Option<Option<String>>, Problem> {
    match value {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(text)) => match clean_text(&text) {
            Some(clean) if clean.chars().count() > 2000 => {
                Err(invalid(field, "longer than 2000 characters; shorten it"))
            }
            Some(clean) => Ok(Some(Some(clean))),
            None => Err(invalid(
                field,
                "is empty; send null to clear it or leave the field out to keep it",
            )),
        },
    }
}

/// Checks every field of a PATCH body, all problems at once.
fn lead_patch(changes: LeadChanges, state: &ApiState) -> Result<LeadPatch, Problem> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut patch = LeadPatch::default();
    fn keep(
        problems: &mut Vec<Problem>,
        result: Result<Option<Option<String>>, Problem>,
    ) -> Option<Option<String>> {
        result.unwrap_or_else(|p| {
            problems.push(p);
            None
        })
    }
    match keep(&mut problems, text_change("title", changes.title)) {
        Some(Some(title)) => patch.title = Some(title),
        Some(None) => problems.push(invalid(
            "title",
            "a lead always has a title; send a new one or leave the field out",
        )),
        None => {}
    }
    patch.name = keep(&mut problems, text_change("name", changes.name));
    patch.company = keep(&mut problems, text_change("company", changes.company));
    patch.message = keep(&mut problems, text_change("message", changes.message));
    let email = keep(&mut problems, text_change("email", changes.email));
    let phone = keep(&mut problems, text_change("phone", changes.phone));
    match email {
        None => {}
        Some(None) => patch.email = Some(None),
        Some(Some(raw)) => match EmailAddress::parse(&raw) {
            Ok(address) => {
                patch.email = Some(Some(NewEmail {
                    key: state.key_rules.person_key(&address).map(|k| k.as_key()),
                    address: address.as_str().to_owned(),
                }))
            }
            Err(e) => problems.push(invalid("email", format!("`{raw}` {e}"))),
        },
    }
    let region = match changes.default_region.as_deref().map(Region::parse) {
        None => None,
        Some(Ok(region)) => Some(region),
        Some(Err(e)) => {
            problems.push(invalid("default_region", e.to_string()));
            None
        }
    };
    match phone {
        None => {}
        Some(None) => patch.phone = Some(None),
        Some(Some(raw)) => match parse_phone(&raw, region) {
            Ok(parsed) => {
                patch.phone = Some(Some(NewPhone {
                    key: IdentityKey::phone(&parsed.number, parsed.extension.as_deref()).as_key(),
                    number: parsed.number.as_str().to_owned(),
                    extension: parsed.extension,
                }))
            }
            Err(e) => problems.push(invalid(
                "phone",
                format!(
                    "`{raw}`: {e}; write it with its country code (+39 ...) or send default_region"
                ),
            )),
        },
    }
    match changes.tags {
        None => {}
        Some(None) => patch.tags = Some(Vec::new()),
        Some(Some(tags)) => {
            let mut clean: Vec<String> = Vec::new();
            for tag in tags {
                match clean_text(&tag) {
                    Some(t) if t.chars().count() <= 64 => clean.push(t),
                    Some(_) => problems.push(invalid(
                        "tags",
                        format!("`{tag}` is longer than 64 characters"),
                    )),
                    None => {
                        problems.push(invalid("tags", "a tag is empty; leave it out of the list"))
                    }
                }
            }
            clean.sort();
            clean.dedup();
            patch.tags = Some(clean);
        }
    }
    patch.responsible_id = changes.responsible_id;
    if problems.is_empty() {
        return Ok(patch);
    }
    let mut all = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_fields",
        "some values cannot be used; see fields",
    );
    all.fields = problems.into_iter().flat_map(|p| p.fields).collect();
    Err(all)
}

/// Change a lead's editable fields and who is responsible for it.
#[utoipa::path(
    security(("bearer" = [])),
    patch,
    path = "/v1/leads/{id}",
    tag = "leads",
    params(
        ("id" = i64, Path, description = "Lead id"),
        ("If-Match" = Option<String>, Header, description = "The ETag of the version edited: refused with 412 if the lead changed since"),
    ),
    request_body = LeadChanges,
    responses(
        (status = 200, description = "The lead as it is now", body = store::LeadDetail),
        (status = 400, description = "The body is not JSON", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 403, description = "The role may not assign this user (agents never; supervisors within their team)", body = Problem),
        (status = 404, description = "No such lead in the caller's scope", body = Problem),
        (status = 412, description = "If-Match names an older version of the lead", body = Problem),
        (status = 415, description = "The body is not application/json", body = Problem),
        (status = 422, description = "A value cannot be used (empty string, bad email or phone, unknown or inactive user, unknown field)", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    )
)]
async fn patch_lead(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<LeadChanges>, JsonRejection>,
) -> Result<Response, Problem> {
    let numeric: i64 = id.parse().map_err(|_| lead_not_found(&id))?;
    let expected = if_match(&headers)?;
    let Json(changes) = body.map_err(json_problem)?;
    let mut patch = lead_patch(changes, &state)?;
    patch.if_updated_at = expected;
    let detail = state
        .store
        .update_lead(&caller.acting(), numeric, &patch)
        .await
        .map_err(|e| edit_problem(e, &id))?;
    Ok(lead_answer(detail))
}

/// A bulk change's filter: the list's filters as JSON, `all: true` to match everything.
fn bulk_filter(
    filter: Option<serde_json::Map<String, Value>>,
    caller: &Caller,
) -> Result<LeadQuery, Problem> {
    let Some(filter) = filter else {
        return Err(invalid(
            "filter",
            "is required: the list's filters as an object, or {\"all\": true} for every lead you may see",
        ));
    };
    let mut params = HashMap::new();
    let mut all = false;
    for (key, value) in filter {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) if key == "all" => {
                all = b;
                continue;
            }
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(invalid(
                    "filter",
                    format!("{key}: {other} is not a string, number or boolean"),
                ));
            }
        };
        params.insert(key, text);
    }
    let query = lead_query(&params, &[], caller).map_err(|p| invalid("filter", p.message))?;
    if query.matches_everything() && !all {
        return Err(invalid(
            "filter",
            "matches every lead; send {\"all\": true} if that is what you mean",
        ));
    }
    Ok(query)
}

/// Body of `POST /v1/leads/bulk/assign`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkAssign {
    /// The list's filters (`stage`, `q`, `responsible`, ...), or `{"all": true}`.
    #[schema(value_type = Object)]
    filter: Option<serde_json::Map<String, Value>>,
    /// The user to make responsible; `null` puts the leads back in the unassigned queue.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    responsible_id: Option<Option<i64>>,
}

/// Make one user (or nobody) responsible for every lead a filter matches.
#[utoipa::path(
    security(("bearer" = [])),
    post,
    path = "/v1/leads/bulk/assign",
    tag = "leads",
    request_body = BulkAssign,
    responses(
        (status = 200, description = "What was changed", body = BulkOutcome),
        (status = 400, description = "The body is not JSON", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 403, description = "Agents cannot assign; supervisors only within their team", body = Problem),
        (status = 415, description = "The body is not application/json", body = Problem),
        (status = 422, description = "A missing or unusable filter or user", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    )
)]
async fn bulk_assign(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<BulkAssign>, JsonRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Supervisor)?;
    let Json(body) = body.map_err(json_problem)?;
    let query = bulk_filter(body.filter, &caller)?;
    let Some(responsible) = body.responsible_id else {
        return Err(invalid(
            "responsible_id",
            "is required: a user id, or null for the unassigned queue",
        ));
    };
    let outcome = state
        .store
        .bulk_assign(&caller.acting(), &query, responsible)
        .await
        .map_err(|e| edit_problem(e, ""))?;
    Ok(Json(outcome).into_response())
}

/// Body of `POST /v1/leads/bulk/stage`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkStage {
    /// The list's filters (`stage`, `q`, `responsible`, ...), or `{"all": true}`.
    #[schema(value_type = Object)]
    filter: Option<serde_json::Map<String, Value>>,
    /// Code of the stage to move the leads to (not a success or failure stage).
    stage: Option<String>,
    /// Why, for the stage history.
    reason: Option<String>,
}

/// Move every unfinished lead a filter matches to a stage of its pipeline.
#[utoipa::path(
    security(("bearer" = [])),
    post,
    path = "/v1/leads/bulk/stage",
    tag = "leads",
    request_body = BulkStage,
    responses(
        (status = 200, description = "What was moved and what was skipped", body = BulkOutcome),
        (status = 400, description = "The body is not JSON", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 403, description = "Agents cannot change stages in bulk", body = Problem),
        (status = 415, description = "The body is not application/json", body = Problem),
        (status = 422, description = "A missing or unusable filter or stage, or a finishing stage", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    )
)]
async fn bulk_stage(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<BulkStage>, JsonRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Supervisor)?;
    let Json(body) = body.map_err(json_problem)?;
    let query = bulk_filter(body.filter, &caller)?;
    let Some(stage) = body
        .stage
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Err(invalid(
            "stage",
            "is required: the code of the stage to move to",
        ));
    };
    let reason = match body.reason.as_deref().map(clean_text) {
        Some(None) => {
            return Err(invalid(
                "reason",
                "is empty; leave it out or say why the leads move",
            ));
        }
        Some(Some(r)) => Some(r),
        None => None,
    };
    let outcome = state
        .store
        .bulk_move(&caller.acting(), &query, stage, reason.as_deref())
        .await
        .map_err(|e| edit_problem(e, ""))?;
    Ok(Json(outcome).into_response())
}

/// One column of a kanban board.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KanbanColumn {
    /// The stage.
    stage: StageInfo,
    /// How many leads (matching the filters) are in the stage.
    count: i64,
    /// The first cards, in the board's sort.
    items: Vec<store::LeadView>,
    /// Pass to `GET /v1/pipelines/{code}/kanban/{stage}?cursor=` for more cards.
    next_cursor: Option<String>,
}

/// A pipeline's kanban board.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Kanban {
    /// Pipeline code.
    pipeline: String,
    /// Its active stages in order.
    columns: Vec<KanbanColumn>,
}

fn pipeline_not_found(code: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "pipeline_not_found",
        format!("there is no pipeline `{code}`"),
    )
}

/// The kanban board of a pipeline: per stage its count and first cards.
#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/pipelines/{code}/kanban",
    tag = "leads",
    params(
        ("code" = String, Path, description = "Pipeline code"),
        ("per_column" = Option<i64>, Query, description = "Cards per column, 1 to 100, default 20"),
        ("sort" = Option<String>, Query, description = "As for /v1/leads"),
        ("order" = Option<String>, Query, description = "asc or desc"),
        ("q" = Option<String>, Query, description = "Any of the /v1/leads filters except stage"),
    ),
    responses(
        (status = 200, description = "The board", body = Kanban),
        (status = 400, description = "An unknown parameter or a bad value", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 404, description = "No such pipeline", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    )
)]
async fn kanban(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(code): Path<String>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    let params = query_params(params)?;
    if params.contains_key("stage") || params.contains_key("pipeline") {
        return Err(bad_query(
            "stage and pipeline are the board's columns and path; use GET /v1/pipelines/{code}/kanban/{stage} for one column".into(),
        ));
    }
    let mut query = lead_query(&params, &["sort", "order", "per_column"], &caller)?;
    if !params.contains_key("per_column") {
        query.limit = 20;
    }
    let stages = state
        .store
        .board_stages(&code)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| pipeline_not_found(&code))?;
    let scope = caller.scope();
    let counts: HashMap<i64, i64> = state
        .store
        .count_leads_by_stage(&scope, &query)
        .await
        .map_err(store_problem)?
        .into_iter()
        .collect();
    let mut columns = Vec::with_capacity(stages.len());
    for stage in stages {
        let column = LeadQuery {
            stage_id: Some(stage.id),
            ..query.clone()
        };
        let (items, next_cursor) = state
            .store
            .lead_page(&scope, &column)
            .await
            .map_err(store_problem)?;
        columns.push(KanbanColumn {
            count: counts.get(&stage.id).copied().unwrap_or(0),
            stage,
            items,
            next_cursor,
        });
    }
    Ok(Json(Kanban {
        pipeline: code,
        columns,
    })
    .into_response())
}

/// More cards of one kanban column.
#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/pipelines/{code}/kanban/{stage}",
    tag = "leads",
    params(
        ("code" = String, Path, description = "Pipeline code"),
        ("stage" = String, Path, description = "Stage code"),
        ("cursor" = Option<String>, Query, description = "The column's next_cursor"),
        ("limit" = Option<i64>, Query, description = "1 to 500, default 20"),
    ),
    responses(
        (status = 200, description = "The next cards", body = LeadPage),
        (status = 400, description = "An unknown parameter, a bad value or cursor", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 404, description = "No such pipeline or stage on its board", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    )
)]
async fn kanban_column(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((code, stage)): Path<(String, String)>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    let params = query_params(params)?;
    if params.contains_key("stage") || params.contains_key("pipeline") {
        return Err(bad_query(
            "stage and pipeline are given by the path; leave them out of the query".into(),
        ));
    }
    let mut query = lead_query(&params, &["sort", "order", "cursor", "limit"], &caller)?;
    if !params.contains_key("limit") {
        query.limit = 20;
    }
    let stages = state
        .store
        .board_stages(&code)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| pipeline_not_found(&code))?;
    let Some(column) = stages.into_iter().find(|s| s.code == stage) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "stage_not_found",
            format!("pipeline `{code}` has no active stage `{stage}`"),
        ));
    };
    query.stage_id = Some(column.id);
    let page = state
        .store
        .list_leads(&caller.scope(), &query)
        .await
        .map_err(store_problem)?;
    Ok(Json(page).into_response())
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

    fn list(pairs: &[(&str, &str)]) -> Result<LeadQuery, Problem> {
        lead_query(
            &params(pairs),
            &["sort", "order", "cursor", "limit"],
            &Caller {
                user_id: Some(7),
                role: Role::Agent,
            },
        )
    }

    #[test]
    fn filters_are_parsed_into_a_lead_query() {
        let cursor = LeadCursor {
            sort: LeadSort {
                field: SortField::Name,
                descending: false,
            },
            value: store::SortValue::Text("Ana".into()),
            id: 42,
        };
        let q = list(&[
            ("stage", "open"),
            ("email", " Ana@Example.com "),
            ("phone", "+39 02 1234"),
            ("created_after", "2026-01-01T00:00:00Z"),
            ("limit", "10"),
            ("sort", "name"),
            ("cursor", &cursor.encode()),
            ("key", "phone:+390212345678;ext=12"),
            ("responsible", "me"),
            ("repeat", "false"),
            ("q", "Nguyễn"),
        ])
        .unwrap();
        assert_eq!(q.key.as_deref(), Some("phone:+390212345678;ext=12"));
        assert_eq!(q.stage.as_deref(), Some("open"));
        assert_eq!(q.email.as_deref(), Some("ana@example.com"));
        assert_eq!(q.phone.as_deref(), Some("+39021234"));
        assert_eq!(q.limit, 10);
        assert_eq!(q.cursor, Some(cursor));
        assert_eq!(q.responsible, Some(Responsible::User(7)));
        assert_eq!(q.repeat, Some(false));
        assert!(q.created_after.is_some());
        assert!(!q.matches_everything());
        assert!(list(&[("limit", "5")]).unwrap().matches_everything());
    }

    #[test]
    fn unknown_or_malformed_parameters_are_refused() {
        let id_cursor = LeadCursor {
            sort: LeadSort::default(),
            value: store::SortValue::Id,
            id: 9,
        }
        .encode();
        for bad in [
            vec![("stagee", "open")],
            vec![("limit", "0")],
            vec![("limit", "x")],
            vec![("cursor", "abc")],
            vec![("cursor", "42")],
            vec![("sort", "name"), ("cursor", id_cursor.as_str())],
            vec![("sort", "email")],
            vec![("order", "up")],
            vec![("phone", "0212345")],
            vec![("created_before", "yesterday")],
            vec![("key", "ana@example.com")],
            vec![("semantic", "closed")],
            vec![("repeat", "yes")],
            vec![("responsible", "bob")],
            vec![("stage", " ")],
            vec![("per_column", "5")],
        ] {
            let problem = list(&bad).unwrap_err();
            assert_eq!(problem.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
        let admin = Caller::bootstrap_admin();
        let problem = lead_query(&params(&[("responsible", "me")]), &[], &admin).unwrap_err();
        assert!(
            problem.message.contains("bootstrap admin"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn a_bulk_filter_must_say_all_to_match_everything() {
        let admin = Caller::bootstrap_admin();
        let map = |v: Value| v.as_object().cloned();
        assert!(bulk_filter(None, &admin).is_err());
        assert!(bulk_filter(map(serde_json::json!({})), &admin).is_err());
        assert!(bulk_filter(map(serde_json::json!({"all": false})), &admin).is_err());
        assert!(bulk_filter(map(serde_json::json!({"all": true})), &admin).is_ok());
        assert!(bulk_filter(map(serde_json::json!({"cursor": "x"})), &admin).is_err());
        assert!(bulk_filter(map(serde_json::json!({"stge": "open"})), &admin).is_err());
        let q = bulk_filter(
            map(serde_json::json!({"stage": "open", "responsible": 3})),
            &admin,
        )
        .unwrap();
        assert_eq!(q.responsible, Some(Responsible::User(3)));
    }

    #[test]
    fn empty_text_is_refused_and_null_clears() {
        assert_eq!(text_change("name", None).unwrap(), None);
        assert_eq!(text_change("name", Some(None)).unwrap(), Some(None));
        assert_eq!(
            text_change("name", Some(Some(" Ana ".into()))).unwrap(),
            Some(Some("Ana".into()))
        );
        let problem = text_change("name", Some(Some("  ".into()))).unwrap_err();
        assert_eq!(problem.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem.fields[0].field, "name");
    }
}
