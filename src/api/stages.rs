//! Pipelines and stages (admin writes, any role reads), moving, reopening and finishing
//! leads, and the deals conversions make.
//!
//! - `GET /v1/pipelines`, `POST /v1/pipelines`, `POST /v1/pipelines/{code}/stages`,
//!   `PATCH|DELETE /v1/pipelines/{code}/stages/{stage}`, `PUT /v1/pipelines/{code}/order`
//! - `POST /v1/leads/{id}/stage`, `POST /v1/leads/{id}/reopen` (admin),
//!   `POST /v1/leads/{id}/finish`
//! - `GET /v1/deals`, `GET /v1/deals/{id}`

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ingest::problem::Problem;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use store::{
    ConvertItem, DealPage, DealView, Finish, FinishOutcome, NewDeal, PipelineSpec, PipelineView,
    Role, StageMove, StagePatch, StageSpec, StageView, WorkError,
};
use utoipa_axum::router::OpenApiRouter;

use super::common::{
    ApiState, Caller, page_cursor, page_limit, query_params, store_problem, unknown_param,
};

/// The pipeline, lead-work and deal routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(list_pipelines, create_pipeline))
        .routes(utoipa_axum::routes!(add_stage))
        .routes(utoipa_axum::routes!(update_stage, remove_stage))
        .routes(utoipa_axum::routes!(reorder_stages))
        .routes(utoipa_axum::routes!(move_stage))
        .routes(utoipa_axum::routes!(reopen_lead))
        .routes(utoipa_axum::routes!(finish_lead))
        .routes(utoipa_axum::routes!(list_deals))
        .routes(utoipa_axum::routes!(get_deal))
}

fn bad_body(message: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad_body", message)
}

fn unprocessable(code: &'static str, message: String) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// Reads a JSON body into `T`; serde names the field that is wrong.
fn parse_body<T: DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, Problem> {
    serde_json::from_slice(body)
        .map_err(|e| bad_body(format!("send a JSON object like {shape}: {e}")))
}

/// The fields a stage takes in a request body.
const STAGE_FIELDS: &[&str] = &[
    "code",
    "name",
    "color",
    "colour",
    "semantic",
    "deadline_days",
    "initial",
    "active",
    "order",
];

/// Refuses a field `allowed` does not list, so a typo is never silently ignored.
fn known_fields(value: &Value, allowed: &[&str], at: &str) -> Result<(), Problem> {
    if let Some(object) = value.as_object()
        && let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str()))
    {
        return Err(bad_body(format!(
            "{at}unknown field `{unknown}`: use {}",
            allowed.join(", ")
        )));
    }
    Ok(())
}

/// Reads a body as JSON, checks its fields with `check`, then reads it into `T`.
fn parse_checked<T: DeserializeOwned>(
    body: &[u8],
    shape: &str,
    check: impl Fn(&Value) -> Result<(), Problem>,
) -> Result<T, Problem> {
    let value: Value = parse_body(body, shape)?;
    check(&value)?;
    serde_json::from_value(value)
        .map_err(|e| bad_body(format!("send a JSON object like {shape}: {e}")))
}

fn work_problem(error: WorkError) -> Problem {
    match error {
        WorkError::NotFound(message) => Problem::new(StatusCode::NOT_FOUND, "not_found", message),
        WorkError::Conflict { code, message } => Problem::new(StatusCode::CONFLICT, code, message),
        WorkError::Invalid { code, message } => unprocessable(code, message),
        WorkError::Store(e) => store_problem(e),
    }
}

fn lead_id(raw: &str) -> Result<i64, Problem> {
    raw.parse::<i64>().map_err(|_| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no lead with id `{raw}`"),
        )
    })
}

fn check_spec(problems: Vec<(String, String)>) -> Result<(), Problem> {
    if problems.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = problems
        .into_iter()
        .map(|(field, problem)| format!("{field}: {problem}"))
        .collect();
    Err(unprocessable("invalid_fields", text.join("; ")))
}

/// Every pipeline with its stages and how many leads (or deals) each holds.
#[utoipa::path(get, security(("bearer" = [])), path = "/v1/pipelines", tag = "pipelines",
    responses(
        (status = 200, description = "Pipelines with their stages", body = Vec<PipelineView>),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ))]
async fn list_pipelines(State(state): State<ApiState>) -> Result<Response, Problem> {
    let pipelines = state.store.list_pipelines().await.map_err(store_problem)?;
    Ok(Json(pipelines).into_response())
}

/// Creates a pipeline with its stages (admin).
#[utoipa::path(post, security(("bearer" = [])), path = "/v1/pipelines", tag = "pipelines",
    request_body = PipelineSpec,
    responses(
        (status = 201, description = "The pipeline", body = PipelineView),
        (status = 400, description = "The body is not such a JSON object", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 403, description = "Not an admin token", body = Problem),
        (status = 409, description = "`pipeline_exists`", body = Problem),
        (status = 422, description = "`invalid_fields`: codes, colours, initial stage", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ))]
async fn create_pipeline(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let spec: PipelineSpec = parse_checked(
        &body,
        r##"{"code": "partners", "name": "Partners", "kind": "lead", "stages": [{"code": "new", "name": "New", "color": "#2196F3", "semantic": "open", "initial": true}]}"##,
        |value| {
            known_fields(value, &["code", "name", "kind", "stages"], "")?;
            for (i, stage) in value["stages"].as_array().into_iter().flatten().enumerate() {
                known_fields(stage, STAGE_FIELDS, &format!("stages[{i}]: "))?;
            }
            Ok(())
        },
    )?;
    check_spec(spec.problems())?;
    let view = state
        .store
        .create_pipeline(&spec)
        .await
        .map_err(work_problem)?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Adds a stage to a pipeline (admin).
#[utoipa::path(post, security(("bearer" = [])), path = "/v1/pipelines/{code}/stages", tag = "pipelines",
    params(("code" = String, Path, description = "Pipeline code")),
    request_body = StageSpec,
    responses(
        (status = 201, description = "The stage", body = StageView),
        (status = 400, description = "The body is not such a JSON object", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 403, description = "Not an admin token", body = Problem),
        (status = 404, description = "No such pipeline", body = Problem),
        (status = 409, description = "`stage_exists`", body = Problem),
        (status = 422, description = "`invalid_fields`", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ))]
async fn add_stage(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(code): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let spec: StageSpec = parse_checked(
        &body,
        r##"{"code": "demo", "name": "Demo booked", "color": "#9C27B0", "semantic": "open", "deadline_days": 5}"##,
        |value| known_fields(value, STAGE_FIELDS, ""),
    )?;
    check_spec(spec.problems())?;
    let view = state
        .store
        .add_stage(&code, &spec)
        .await
        .map_err(work_problem)?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Changes a stage: name, order, colour, active, semantic, deadline_days, initial (admin).
/// History keeps pointing at the same stage.
#[utoipa::path(patch, security(("bearer" = [])), path = "/v1/pipelines/{code}/stages/{stage}", tag = "pipelines",
    params(("code" = String, Path, description = "Pipeline code"),
           ("stage" = String, Path, description = "Stage code")),
    request_body = StagePatch,
    responses(
        (status = 200, description = "The stage", body = StageView),
        (status = 400, description = "The body is not such a JSON object", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 403, description = "Not an admin token", body = Problem),
        (status = 404, description = "No such pipeline or stage", body = Problem),
        (status = 409, description = "`stage_in_use` (a meaning change while it holds leads) or `stage_removed`", body = Problem),
        (status = 422, description = "`invalid_fields` or `initial_stage`", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ))]
async fn update_stage(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((code, stage)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let patch: StagePatch = parse_body(
        &body,
        r##"{"name": "Contacted", "order": 25, "color": "#FF9800", "active": true, "semantic": "open", "deadline_days": 3}"##,
    )?;
    let mut problems = Vec::new();
    if let Some(name) = &patch.name
        && name.trim().is_empty()
    {
        problems.push(("name".into(), "is empty: give the stage a name".into()));
    }
    if let Some(color) = &patch.color
        && !store::stages::valid_color(color)
    {
        problems.push((
            "color".into(),
            format!("`{color}` is not a colour like #2196F3"),
        ));
    }
    if patch.deadline_days.is_some_and(|d| d > 3650) {
        problems.push((
            "deadline_days".into(),
            "must be at most 3650 (0 = never stale)".into(),
        ));
    }
    check_spec(problems)?;
    let view = state
        .store
        .update_stage(&code, &stage, &patch)
        .await
        .map_err(work_problem)?;
    Ok(Json(view).into_response())
}

/// Removes a stage (admin). It stays for history (`removed_at`) and is refused while it
/// holds leads.
#[utoipa::path(delete, security(("bearer" = [])), path = "/v1/pipelines/{code}/stages/{stage}", tag = "pipelines",
    params(("code" = String, Path, description = "Pipeline code"),
           ("stage" = String, Path, description = "Stage code")),
    responses(
        (status = 200, description = "The removed stage", body = StageView),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 403, description = "Not an admin token", body = Problem),
        (status = 404, description = "No such pipeline or stage", body = Problem),
        (status = 409, description = "`stage_in_use` naming how many leads, or `initial_stage`", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ))]
async fn remove_stage(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((code, stage)): Path<(String, String)>,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let view = state
        .store
        .remove_stage(&code, &stage)
        .await
        .map_err(work_problem)?;
    Ok(Json(view).into_response())
}

/// The new order of a pipeline's stages.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    /// Every stage code that is not removed, once, in the new order.
    stages: Vec<String>,
}

/// Reorders a pipeline's stages (admin).
#[utoipa::path(put, security(("bearer" = [])), path = "/v1/pipelines/{code}/order", tag = "pipelines",
    params(("code" = String, Path, description = "Pipeline code")),
    request_body = OrderBody,
    responses(
        (status = 200, description = "The pipeline", body = PipelineView),
        (status = 400, description = "The body is not such a JSON object", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 403, description = "Not an admin token", body = Problem),
        (status = 404, description = "No such pipeline", body = Problem),
        (status = 422, description = "`bad_order`: not every stage listed once", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ))]
async fn reorder_stages(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(code): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let order: OrderBody = parse_body(&body, r#"{"stages": ["open", "working", "qualified"]}"#)?;
    let view = state
        .store
        .reorder_stages(&code, &order.stages)
        .await
        .map_err(work_problem)?;
    Ok(Json(view).into_response())
}

/// A stage move or a reopening.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    /// Stage code in the lead's pipeline.
    stage: String,
    /// Why, kept in the history row.
    #[serde(default)]
    reason: Option<String>,
}

const MAX_REASON: usize = 2000;

fn check_reason(reason: Option<&str>) -> Result<Option<&str>, Problem> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(unprocessable(
            "invalid_fields",
            format!("reason: at most {MAX_REASON} characters"),
        ));
    }
    Ok(reason)
}

/// A stage move or reopening, parsed from the path and the body.
struct MoveRequest {
    id: i64,
    stage: String,
    reason: Option<String>,
}

/// Parses a lead id and a [`MoveBody`]; `example` is the body shown when it is not one.
fn move_request(id: &str, body: &[u8], example: &str) -> Result<MoveRequest, Problem> {
    let id = lead_id(id)?;
    let body: MoveBody = parse_body(body, example)?;
    let reason = check_reason(body.reason.as_deref())?.map(str::to_owned);
    Ok(MoveRequest {
        id,
        stage: body.stage.trim().to_owned(),
        reason,
    })
}

/// Moves a lead to another stage of its pipeline, with a history row.
#[utoipa::path(post, security(("bearer" = [])), path = "/v1/leads/{id}/stage", tag = "leads",
    params(("id" = i64, Path, description = "Lead id")),
    request_body = MoveBody,
    responses(
        (status = 200, description = "The recorded move", body = StageMove),
        (status = 400, description = "The body is not such a JSON object", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 404, description = "No such lead in the caller's scope", body = Problem),
        (status = 409, description = "`lead_finished` (reopening is admin-only), `use_finish` (a success or failure stage), `same_stage`", body = Problem),
        (status = 422, description = "`unknown_stage`, `stage_of_another_pipeline`, `stage_removed`, `stage_inactive`", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ))]
async fn move_stage(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let req = move_request(
        &id,
        &body,
        r#"{"stage": "working", "reason": "called back"}"#,
    )?;
    let moved = state
        .store
        .move_lead_stage(
            &caller.scope(),
            req.id,
            &req.stage,
            req.reason.as_deref(),
            &caller.actor(),
        )
        .await
        .map_err(work_problem)?;
    Ok(Json(moved).into_response())
}

/// Reopens a finished lead into an open or frozen stage (admin); recorded in the history
/// and as a lead event.
#[utoipa::path(post, security(("bearer" = [])), path = "/v1/leads/{id}/reopen", tag = "leads",
    params(("id" = i64, Path, description = "Lead id")),
    request_body = MoveBody,
    responses(
        (status = 200, description = "The recorded move", body = StageMove),
        (status = 400, description = "The body is not such a JSON object", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 403, description = "Not an admin token", body = Problem),
        (status = 404, description = "No such lead", body = Problem),
        (status = 409, description = "`lead_not_finished`", body = Problem),
        (status = 422, description = "`unknown_stage`, `stage_finished`, `stage_removed`, `stage_inactive`", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ))]
async fn reopen_lead(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let req = move_request(
        &id,
        &body,
        r#"{"stage": "working", "reason": "client called back"}"#,
    )?;
    let moved = state
        .store
        .reopen_lead(req.id, &req.stage, req.reason.as_deref(), &caller.actor())
        .await
        .map_err(work_problem)?;
    Ok(Json(moved).into_response())
}

/// How to finish a lead.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FinishBody {
    /// `converted` or `junk`.
    outcome: String,
    /// For `converted`: what to create or link, e.g. `{"type": "contact"}`,
    /// `{"type": "company", "name": "...", "domain": "..."}`,
    /// `{"type": "deal", "title": "...", "amount": "1500.00", "currency": "EUR"}`,
    /// `{"link": {"contact_id": 12}}`, `{"link": {"company_id": 3}}`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    create: Vec<Value>,
    /// For `junk`: one of the configured `[leads] junk_reasons`.
    #[serde(default)]
    reason: Option<String>,
    /// For `junk`: a note kept in the history row.
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactItem {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompanyItem {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DealItem {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    amount: Option<Value>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    pipeline: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkTarget {
    #[serde(default)]
    contact_id: Option<i64>,
    #[serde(default)]
    company_id: Option<i64>,
}

/// An amount: a decimal string or number, at least 0, at most two decimals, as stored.
fn parse_amount(field: &str, value: &Value) -> Result<String, Problem> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let ok = !whole.is_empty()
        && whole.len() <= 16
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.len() <= 2
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && !(text.contains('.') && fraction.is_empty());
    if ok {
        Ok(text)
    } else {
        Err(unprocessable(
            "invalid_fields",
            format!(
                "{field}: `{value}` is not an amount: give a number of at least 0 with at most two decimals, like \"1500.50\""
            ),
        ))
    }
}

/// A currency: three upper-case letters (ISO 4217); lower case is upper-cased.
fn parse_currency(field: &str, raw: &str) -> Result<String, Problem> {
    let code = raw.trim().to_ascii_uppercase();
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err(unprocessable(
            "invalid_fields",
            format!("{field}: `{raw}` is not an ISO 4217 currency code like EUR"),
        ))
    }
}

/// Reads the `create` list: at most one contact, one company and one deal.
fn convert_items(create: &[Value]) -> Result<Vec<ConvertItem>, Problem> {
    let mut items = Vec::new();
    let (mut contacts, mut companies, mut deals) = (0, 0, 0);
    for (i, raw) in create.iter().enumerate() {
        let field = format!("create[{i}]");
        let object = raw.as_object().ok_or_else(|| {
            bad_body(format!("{field}: give an object like {{\"type\": \"contact\"}} or {{\"link\": {{\"contact_id\": 12}}}}"))
        })?;
        let shaped = |e: serde_json::Error| bad_body(format!("{field}: {e}"));
        if let Some(link) = object.get("link") {
            if object.len() != 1 {
                return Err(bad_body(format!("{field}: a link item holds only `link`")));
            }
            let target: LinkTarget = serde_json::from_value(link.clone()).map_err(shaped)?;
            match (target.contact_id, target.company_id) {
                (Some(id), None) => {
                    contacts += 1;
                    items.push(ConvertItem::LinkContact(id));
                }
                (None, Some(id)) => {
                    companies += 1;
                    items.push(ConvertItem::LinkCompany(id));
                }
                _ => {
                    return Err(bad_body(format!(
                        "{field}.link: give exactly one of contact_id or company_id"
                    )));
                }
            }
            continue;
        }
        let mut rest = object.clone();
        let kind = rest.remove("type");
        let rest = Value::Object(rest);
        match kind.as_ref().and_then(Value::as_str) {
            Some("contact") => {
                let item: ContactItem = serde_json::from_value(rest).map_err(shaped)?;
                contacts += 1;
                items.push(ConvertItem::Contact { name: item.name });
            }
            Some("company") => {
                let item: CompanyItem = serde_json::from_value(rest).map_err(shaped)?;
                companies += 1;
                items.push(ConvertItem::Company {
                    name: item.name,
                    domain: item.domain,
                });
            }
            Some("deal") => {
                let item: DealItem = serde_json::from_value(rest).map_err(shaped)?;
                deals += 1;
                let amount = item
                    .amount
                    .as_ref()
                    .filter(|a| !a.is_null())
                    .map(|a| parse_amount(&format!("{field}.amount"), a))
                    .transpose()?;
                let currency = item
                    .currency
                    .as_deref()
                    .map(|c| parse_currency(&format!("{field}.currency"), c))
                    .transpose()?;
                if amount.is_some() && currency.is_none() {
                    return Err(unprocessable(
                        "invalid_fields",
                        format!("{field}.currency: an amount needs its currency, like \"EUR\""),
                    ));
                }
                items.push(ConvertItem::Deal(NewDeal {
                    title: item.title,
                    amount,
                    currency,
                    pipeline: item.pipeline,
                }));
            }
            _ => {
                return Err(bad_body(format!(
                    "{field}.type: use \"contact\", \"company\" or \"deal\" (or an item {{\"link\": {{...}}}})"
                )));
            }
        }
    }
    for (count, what) in [
        (contacts, "contact"),
        (companies, "company"),
        (deals, "deal"),
    ] {
        if count > 1 {
            return Err(unprocessable(
                "invalid_fields",
                format!("create: at most one {what} (created or linked) per conversion"),
            ));
        }
    }
    Ok(items)
}

/// Finishes a lead: converted (contact, company and deal created or linked, never a second
/// record for a known person or firm; a repeat lead converts only to a deal) or junk with a
/// configured reason. One transaction.
#[utoipa::path(post, security(("bearer" = [])), path = "/v1/leads/{id}/finish", tag = "leads",
    params(("id" = i64, Path, description = "Lead id")),
    request_body = FinishBody,
    responses(
        (status = 200, description = "What finishing did", body = FinishOutcome),
        (status = 400, description = "The body is not such a JSON object", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 404, description = "No such lead in the caller's scope", body = Problem),
        (status = 409, description = "`lead_finished`, `repeat_lead`, `no_finishing_stage`", body = Problem),
        (status = 422, description = "`unknown_junk_reason` (lists the reasons), `invalid_fields`, `unknown_contact`, `unknown_company`, `company_name_missing`, `unknown_deal_pipeline`", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ))]
async fn finish_lead(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let id = lead_id(&id)?;
    let body: FinishBody = parse_body(
        &body,
        r#"{"outcome": "converted", "create": [{"type": "contact"}, {"type": "deal", "amount": "1500.00", "currency": "EUR"}]} or {"outcome": "junk", "reason": "spam"}"#,
    )?;
    let finish = match body.outcome.as_str() {
        "converted" => {
            if body.reason.is_some() || body.note.is_some() {
                return Err(unprocessable(
                    "invalid_fields",
                    "reason, note: only a junk outcome takes a reason".into(),
                ));
            }
            Finish::Converted(convert_items(&body.create)?)
        }
        "junk" => {
            if !body.create.is_empty() {
                return Err(unprocessable(
                    "invalid_fields",
                    "create: a junk outcome creates nothing".into(),
                ));
            }
            let reasons = &state.junk_reasons;
            let reason = body.reason.as_deref().map(str::trim).unwrap_or_default();
            if !reasons.iter().any(|r| r == reason) {
                return Err(unprocessable(
                    "unknown_junk_reason",
                    format!(
                        "reason: `{reason}` is not a junk reason; use one of: {}",
                        reasons.join(", ")
                    ),
                ));
            }
            Finish::Junk {
                reason: reason.to_owned(),
                note: check_reason(body.note.as_deref())?.map(str::to_owned),
            }
        }
        other => {
            return Err(unprocessable(
                "invalid_fields",
                format!("outcome: `{other}` is not an outcome; use converted or junk"),
            ));
        }
    };
    let outcome = state
        .store
        .finish_lead(&caller.scope(), id, &finish, &caller.actor())
        .await
        .map_err(work_problem)?;
    Ok(Json(outcome).into_response())
}

/// Deals the caller may see (through their lead or as responsible), newest first.
#[utoipa::path(get, security(("bearer" = [])), path = "/v1/deals", tag = "deals",
    params(("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
           ("limit" = Option<i64>, Query, description = "1 to 500, default 50")),
    responses(
        (status = 200, description = "A page of deals", body = DealPage),
        (status = 400, description = "A query parameter cannot be used", body = Problem),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ))]
async fn list_deals(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let (mut cursor, mut limit) = (None, 50);
    for (key, value) in &query_params(params)? {
        match key.as_str() {
            "cursor" => cursor = Some(page_cursor(value)?),
            "limit" => limit = page_limit(value)?,
            other => return Err(unknown_param(other, &["cursor", "limit"])),
        }
    }
    let page = state
        .store
        .list_deals(&caller.scope(), cursor, limit)
        .await
        .map_err(store_problem)?;
    Ok(Json(page).into_response())
}

/// One deal.
#[utoipa::path(get, security(("bearer" = [])), path = "/v1/deals/{id}", tag = "deals",
    params(("id" = i64, Path, description = "Deal id")),
    responses(
        (status = 200, description = "The deal", body = DealView),
        (status = 401, description = "No or a bad token", body = Problem),
        (status = 404, description = "No such deal in the caller's scope", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ))]
async fn get_deal(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no deal with id `{id}`"),
        )
    };
    let deal_id: i64 = id.parse().map_err(|_| not_found())?;
    let deal: DealView = state
        .store
        .get_deal(&caller.scope(), deal_id)
        .await
        .map_err(store_problem)?
        .ok_or_else(not_found)?;
    Ok(Json(deal).into_response())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_route_is_described_with_its_error_answers() {
        let (_, api) = routes().split_for_parts();
        let paths: Vec<&str> = api.paths.paths.keys().map(String::as_str).collect();
        for path in [
            "/v1/pipelines",
            "/v1/pipelines/{code}/stages",
            "/v1/pipelines/{code}/stages/{stage}",
            "/v1/pipelines/{code}/order",
            "/v1/leads/{id}/stage",
            "/v1/leads/{id}/reopen",
            "/v1/leads/{id}/finish",
            "/v1/deals",
            "/v1/deals/{id}",
        ] {
            assert!(paths.contains(&path), "{path} in {paths:?}");
        }
        let finish = serde_json::to_value(&api.paths.paths["/v1/leads/{id}/finish"]).unwrap();
        for status in ["200", "400", "401", "404", "409", "422", "503"] {
            assert!(
                finish["post"]["responses"][status].is_object(),
                "finish answers {status}: {finish}"
            );
        }
        let schemas = serde_json::to_value(&api.components).unwrap();
        assert!(schemas["schemas"]["Problem"].is_object(), "{schemas}");
    }

    #[test]
    fn amounts_and_currencies_are_checked() {
        assert_eq!(parse_amount("a", &json!("1500.50")).unwrap(), "1500.50");
        assert_eq!(parse_amount("a", &json!(12)).unwrap(), "12");
        for bad in [
            json!("-1"),
            json!("1."),
            json!("1.234"),
            json!("1e5"),
            json!(true),
        ] {
            assert!(parse_amount("a", &bad).is_err(), "{bad}");
        }
        assert_eq!(parse_currency("c", "eur").unwrap(), "EUR");
        assert!(parse_currency("c", "EURO").is_err());
        assert!(parse_currency("c", "E1R").is_err());
    }
}
