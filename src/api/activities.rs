//! Activities and the activity view: a lead's communication history and planned work
//! (`/v1/leads/{id}/activities`, `/v1/activities`, `/v1/activities/{id}`,
//! `/v1/activities/{id}/complete`) and open leads grouped by when their next activity is
//! due (`/v1/views/activities`).
//!
//! Everything is narrowed to the caller's lead scope: an activity on a lead the caller
//! may not see answers 404 like a missing one. Channel history is never changed here.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ingest::problem::Problem;
use serde::Deserialize;
use store::activities::{PLANNED_KINDS, VIEW_GROUPS};
use store::{
    ActivityChange, ActivityError, ActivityFilter, ActivityItem, ActivityPage, ActivityView,
    AssignedFilter, DueCursor, NewActivity, ViewQuery,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{
    ApiState, Caller, bad_query, known_pipeline, page_cursor, page_limit, parse_time, present,
    query_params, store_problem, unknown_param,
};

/// Longest subject accepted, in characters.
const MAX_SUBJECT: usize = 500;
/// Longest body or result accepted, in characters.
const MAX_TEXT: usize = 20_000;
/// Longest meeting accepted: a day.
const MAX_MEETING_MINUTES: i64 = 24 * 60;

/// The activity routes (mounted behind the API token check).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_lead_activities, add_activity))
        .routes(routes!(list_assigned_activities))
        .routes(routes!(update_activity))
        .routes(routes!(complete_activity))
        .routes(routes!(activity_view))
}

fn not_found(what: &str, id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("there is no {what} with id `{id}`"),
    )
}

fn bad_body(message: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad_body", message)
}

fn invalid(message: String) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
}

fn activity_problem(error: ActivityError) -> Problem {
    match error {
        ActivityError::NotFound(m) => Problem::new(StatusCode::NOT_FOUND, "not_found", m),
        e @ ActivityError::HistoryRow(_) => {
            Problem::new(StatusCode::CONFLICT, "history_activity", e.to_string())
        }
        e @ ActivityError::Completed(_) => {
            Problem::new(StatusCode::CONFLICT, "activity_completed", e.to_string())
        }
        ActivityError::AssignmentForbidden(m) => {
            Problem::new(StatusCode::FORBIDDEN, "assignment_forbidden", m)
        }
        ActivityError::BadAssignee(m) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_assignee", m)
        }
        ActivityError::Store(e) => store_problem(e),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, Problem> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad_query(format!("{key}: `{value}` must be true or false"))),
    }
}

fn parse_id(key: &str, value: &str) -> Result<i64, Problem> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| bad_query(format!("{key}: `{value}` is not a user id")))
}

/// An RFC 3339 time in a JSON body.
fn body_time(field: &str, value: &str) -> Result<DateTime<Utc>, Problem> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            invalid(format!(
                "{field}: `{value}` is not an RFC 3339 time like 2026-01-31T09:00:00+01:00 ({e})"
            ))
        })
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), Problem> {
    let n = value.chars().count();
    if n > max {
        return Err(invalid(format!(
            "{field} is {n} characters long; at most {max} are kept: shorten it"
        )));
    }
    Ok(())
}

/// Query of `GET /v1/leads/{id}/activities`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct LeadActivitiesParams {
    /// `true`: only planned calls, meetings and tasks; `false`: only channel history.
    planned: Option<bool>,
    /// `true`: only done; `false`: only not done.
    done: Option<bool>,
    /// Only this kind (`call`, `meeting`, `task`, `email`, `message`, ...).
    kind: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
}

/// A lead's activities, channel history and planned work, most recently recorded first.
#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/leads/{id}/activities",
    params(("id" = i64, Path, description = "Lead id"), LeadActivitiesParams),
    responses(
        (status = 200, description = "One page of activities", body = ActivityPage),
        (status = 400, description = "A query parameter cannot be used", body = Problem),
        (status = 401, description = "No valid token", body = Problem),
        (status = 404, description = "No such lead in the caller's scope", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ),
    tag = "activities"
)]
async fn list_lead_activities(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    let lead_id: i64 = id.parse().map_err(|_| not_found("lead", &id))?;
    let mut filter = ActivityFilter {
        limit: 50,
        ..ActivityFilter::default()
    };
    for (key, value) in query_params(params)? {
        let value = value.trim();
        match key.as_str() {
            "planned" => filter.planned = Some(parse_bool(&key, value)?),
            "done" => filter.done = Some(parse_bool(&key, value)?),
            "kind" => filter.kind = Some(value.to_owned()),
            "cursor" => filter.cursor = Some(page_cursor(value)?),
            "limit" => filter.limit = page_limit(value)?,
            other => {
                return Err(unknown_param(
                    other,
                    &["planned", "done", "kind", "cursor", "limit"],
                ));
            }
        }
    }
    let page = state
        .store
        .list_lead_activities(&caller.scope(), lead_id, &filter)
        .await
        .map_err(activity_problem)?;
    Ok(axum::Json(page).into_response())
}

/// Body of `POST /v1/leads/{id}/activities`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewActivityBody {
    /// `call`, `meeting` or `task`.
    kind: String,
    /// What it is about.
    subject: String,
    /// Details.
    #[serde(default)]
    body: Option<String>,
    /// When it is due, RFC 3339 with an offset (`2026-01-31T09:00:00+01:00`).
    due_at: String,
    /// Who does it; default: the caller's user, else the lead's responsible.
    #[serde(default)]
    assignee_id: Option<i64>,
    /// A meeting's length in minutes (meetings only), 1 to 1440.
    #[serde(default)]
    duration_minutes: Option<i64>,
}

fn parse_new(body: &[u8]) -> Result<NewActivity, Problem> {
    let parsed: NewActivityBody = serde_json::from_slice(body).map_err(|e| {
        bad_body(format!(
            "send a JSON object with kind, subject and due_at (and optionally body, assignee_id, duration_minutes): {e}"
        ))
    })?;
    let kind = parsed.kind.trim().to_ascii_lowercase();
    if !PLANNED_KINDS.contains(&kind.as_str()) {
        return Err(invalid(format!(
            "kind: `{}` cannot be planned; use call, meeting or task",
            parsed.kind
        )));
    }
    let subject = parsed.subject.trim().to_owned();
    if subject.is_empty() {
        return Err(invalid("subject is empty: say what is to be done".into()));
    }
    check_text("subject", &subject, MAX_SUBJECT)?;
    if let Some(body) = &parsed.body {
        check_text("body", body, MAX_TEXT)?;
    }
    let due_at = body_time("due_at", &parsed.due_at)?;
    if let Some(minutes) = parsed.duration_minutes {
        if kind != "meeting" {
            return Err(invalid(format!(
                "duration_minutes: only a meeting has a duration, not a {kind}"
            )));
        }
        if !(1..=MAX_MEETING_MINUTES).contains(&minutes) {
            return Err(invalid(format!(
                "duration_minutes: {minutes} must be 1 to {MAX_MEETING_MINUTES}"
            )));
        }
    }
    if let Some(id) = parsed.assignee_id
        && id <= 0
    {
        return Err(invalid(format!("assignee_id: {id} is not a user id")));
    }
    Ok(NewActivity {
        kind,
        subject,
        body: parsed.body.filter(|b| !b.trim().is_empty()),
        due_at,
        assignee_id: parsed.assignee_id,
        duration_minutes: parsed.duration_minutes,
    })
}

/// Plans a call, meeting or task on a lead; the lead counts as touched.
#[utoipa::path(
    security(("bearer" = [])),
    post,
    path = "/v1/leads/{id}/activities",
    params(("id" = i64, Path, description = "Lead id")),
    request_body(content = NewActivityBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The planned activity", body = ActivityItem),
        (status = 400, description = "The body is not the expected JSON object", body = Problem),
        (status = 401, description = "No valid token", body = Problem),
        (status = 403, description = "The caller may not assign work to this user", body = Problem),
        (status = 404, description = "No such lead in the caller's scope", body = Problem),
        (status = 422, description = "A field's value cannot be used, or the assignee is unknown or deactivated", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ),
    tag = "activities"
)]
async fn add_activity(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let lead_id: i64 = id.parse().map_err(|_| not_found("lead", &id))?;
    let new = parse_new(&body)?;
    let actor = caller.acting();
    let item = state
        .store
        .add_activity(&actor, lead_id, &new)
        .await
        .map_err(activity_problem)?;
    Ok((StatusCode::CREATED, axum::Json(item)).into_response())
}

/// Query of `GET /v1/activities`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct AssignedParams {
    /// `me` (the caller's user) or a user id.
    assignee: String,
    /// Only work due before this RFC 3339 time.
    due_before: Option<String>,
    /// `false`: open work only; `true`: completed only.
    done: Option<bool>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
}

/// Planned work assigned to a user ("my tasks"), soonest due first, on leads in scope.
#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/activities",
    params(AssignedParams),
    responses(
        (status = 200, description = "One page of planned activities", body = ActivityPage),
        (status = 400, description = "A query parameter cannot be used", body = Problem),
        (status = 401, description = "No valid token", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ),
    tag = "activities"
)]
async fn list_assigned_activities(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    let mut filter = AssignedFilter {
        limit: 50,
        ..AssignedFilter::default()
    };
    let mut assignee = None;
    for (key, value) in query_params(params)? {
        let value = value.trim();
        match key.as_str() {
            "assignee" if value == "me" => {
                assignee = Some(caller.user_id.ok_or_else(|| {
                    bad_query(
                        "assignee: the bootstrap admin token has no user; give a user id".into(),
                    )
                })?)
            }
            "assignee" => assignee = Some(parse_id(&key, value)?),
            "due_before" => filter.due_before = Some(parse_time(&key, value)?),
            "done" => filter.done = Some(parse_bool(&key, value)?),
            "cursor" => {
                filter.cursor = Some(DueCursor::parse(value).ok_or_else(|| {
                    bad_query(format!(
                        "cursor: `{value}` is not a cursor from next_cursor"
                    ))
                })?)
            }
            "limit" => filter.limit = page_limit(value)?,
            other => {
                return Err(unknown_param(
                    other,
                    &["assignee", "due_before", "done", "cursor", "limit"],
                ));
            }
        }
    }
    filter.assignee_id =
        assignee.ok_or_else(|| bad_query("assignee: required; give `me` or a user id".into()))?;
    let page = state
        .store
        .list_assigned_activities(&caller.scope(), &filter)
        .await
        .map_err(activity_problem)?;
    Ok(axum::Json(page).into_response())
}

/// Body of `PATCH /v1/activities/{id}`: every field optional, at least one given.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityChangeBody {
    /// New due time, RFC 3339.
    #[serde(default)]
    due_at: Option<String>,
    /// New assignee.
    #[serde(default)]
    assignee_id: Option<i64>,
    /// New subject.
    #[serde(default)]
    subject: Option<String>,
    /// New details; `null` clears them.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    body: Option<Option<String>>,
}

fn parse_change(body: &[u8]) -> Result<ActivityChange, Problem> {
    let parsed: ActivityChangeBody = serde_json::from_slice(body).map_err(|e| {
        bad_body(format!(
            "send a JSON object with any of due_at, assignee_id, subject, body: {e}"
        ))
    })?;
    let mut change = ActivityChange::default();
    if let Some(due) = &parsed.due_at {
        change.due_at = Some(body_time("due_at", due)?);
    }
    if let Some(id) = parsed.assignee_id {
        if id <= 0 {
            return Err(invalid(format!("assignee_id: {id} is not a user id")));
        }
        change.assignee_id = Some(id);
    }
    if let Some(subject) = &parsed.subject {
        let subject = subject.trim();
        if subject.is_empty() {
            return Err(invalid("subject is empty: say what is to be done".into()));
        }
        check_text("subject", subject, MAX_SUBJECT)?;
        change.subject = Some(subject.to_owned());
    }
    if let Some(body) = parsed.body {
        if let Some(text) = &body {
            check_text("body", text, MAX_TEXT)?;
        }
        change.body = Some(body.filter(|b| !b.trim().is_empty()));
    }
    if change.due_at.is_none()
        && change.assignee_id.is_none()
        && change.subject.is_none()
        && change.body.is_none()
    {
        return Err(bad_body(
            "nothing to change: give due_at, assignee_id, subject or body".into(),
        ));
    }
    Ok(change)
}

/// Reschedules, reassigns or rewords planned work that is not done; channel history
/// and completed work answer 409.
#[utoipa::path(
    security(("bearer" = [])),
    patch,
    path = "/v1/activities/{id}",
    params(("id" = i64, Path, description = "Activity id")),
    request_body(content = ActivityChangeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The changed activity", body = ActivityItem),
        (status = 400, description = "The body is not the expected JSON object or changes nothing", body = Problem),
        (status = 401, description = "No valid token", body = Problem),
        (status = 403, description = "The caller may not assign work to this user", body = Problem),
        (status = 404, description = "No such activity on a lead in the caller's scope", body = Problem),
        (status = 409, description = "The activity is channel history or already completed", body = Problem),
        (status = 422, description = "A field's value cannot be used, or the assignee is unknown or deactivated", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ),
    tag = "activities"
)]
async fn update_activity(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let activity_id: i64 = id.parse().map_err(|_| not_found("activity", &id))?;
    let change = parse_change(&body)?;
    let item = state
        .store
        .update_activity(&caller.acting(), activity_id, &change)
        .await
        .map_err(activity_problem)?;
    Ok(axum::Json(item).into_response())
}

/// Body of `POST /v1/activities/{id}/complete` (may be empty).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// What came of it.
    #[serde(default)]
    result: Option<String>,
}

/// Marks planned work done; completing it again answers the same and changes nothing.
/// The lead counts as touched.
#[utoipa::path(
    security(("bearer" = [])),
    post,
    path = "/v1/activities/{id}/complete",
    params(("id" = i64, Path, description = "Activity id")),
    request_body(content = Option<CompleteBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The completed activity", body = ActivityItem),
        (status = 400, description = "The body is not the expected JSON object", body = Problem),
        (status = 401, description = "No valid token", body = Problem),
        (status = 404, description = "No such activity on a lead in the caller's scope", body = Problem),
        (status = 409, description = "The activity is channel history", body = Problem),
        (status = 422, description = "The result is too long", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ),
    tag = "activities"
)]
async fn complete_activity(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let activity_id: i64 = id.parse().map_err(|_| not_found("activity", &id))?;
    let result = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let parsed: CompleteBody = serde_json::from_slice(&body).map_err(|e| {
            bad_body(format!(
                "send no body or a JSON object {{\"result\": \"...\"}}: {e}"
            ))
        })?;
        if let Some(r) = &parsed.result {
            check_text("result", r, MAX_TEXT)?;
        }
        parsed.result.filter(|r| !r.trim().is_empty())
    };
    let item = state
        .store
        .complete_activity(&caller.acting(), activity_id, result.as_deref())
        .await
        .map_err(activity_problem)?;
    Ok(axum::Json(item).into_response())
}

/// Query of `GET /v1/views/activities`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ViewParams {
    /// Only leads with this responsible user.
    responsible: Option<i64>,
    /// Only leads in this pipeline (code).
    pipeline: Option<String>,
    /// An IANA time zone for the day boundaries; default: the caller's (UTC for the
    /// bootstrap admin).
    tz: Option<String>,
    /// Only this group: overdue, today, this_week, next_week, later or none.
    group: Option<String>,
    /// The group's `next_cursor` (needs `group`).
    cursor: Option<String>,
    /// Leads per group, 1 to 500 (default 20).
    limit: Option<i64>,
}

/// Open leads grouped by when their next planned activity is due: overdue, today,
/// this week, next week, later, none. Days are the caller's (or `tz`'s); weeks start
/// on Monday.
#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/views/activities",
    params(ViewParams),
    responses(
        (status = 200, description = "The groups with counts and their first leads", body = ActivityView),
        (status = 400, description = "A query parameter cannot be used", body = Problem),
        (status = 401, description = "No valid token", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ),
    tag = "activities"
)]
async fn activity_view(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    let mut query = ViewQuery {
        limit: 20,
        ..ViewQuery::default()
    };
    let mut tz = None;
    let mut cursor = None;
    for (key, value) in query_params(params)? {
        let value = value.trim();
        match key.as_str() {
            "responsible" => query.responsible_id = Some(parse_id(&key, value)?),
            "pipeline" => query.pipeline = Some(value.to_owned()),
            "tz" => tz = Some(value.to_owned()),
            "group" => {
                if !VIEW_GROUPS.contains(&value) {
                    return Err(bad_query(format!(
                        "group: `{value}` is not a group; use overdue, today, this_week, next_week, later or none"
                    )));
                }
                query.group = Some(value.to_owned());
            }
            "cursor" => cursor = Some(value.to_owned()),
            "limit" => query.limit = page_limit(value)?,
            other => {
                return Err(unknown_param(
                    other,
                    &["responsible", "pipeline", "tz", "group", "cursor", "limit"],
                ));
            }
        }
    }
    if let Some(raw) = cursor {
        if query.group.is_none() {
            return Err(bad_query(
                "cursor: a cursor pages through one group; give group too".into(),
            ));
        }
        query.cursor = Some(DueCursor::parse(&raw).ok_or_else(|| {
            bad_query(format!("cursor: `{raw}` is not a cursor from next_cursor"))
        })?);
    }
    if let Some(pipeline) = &query.pipeline {
        known_pipeline(&state, pipeline).await?;
    }
    query.time_zone = match tz {
        Some(zone) => {
            if !state
                .store
                .is_time_zone(&zone)
                .await
                .map_err(store_problem)?
            {
                return Err(bad_query(format!(
                    "tz: `{zone}` is not a time zone; use an IANA name like Europe/Warsaw"
                )));
            }
            zone
        }
        None => state
            .store
            .user_time_zone(caller.user_id)
            .await
            .map_err(store_problem)?,
    };
    let view = state
        .store
        .activity_view(&caller.scope(), &query)
        .await
        .map_err(store_problem)?;
    Ok(axum::Json(view).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_activity_needs_a_plannable_kind_a_subject_and_a_due_time() {
        let ok = parse_new(
            br#"{"kind":"Meeting","subject":" Demo ","due_at":"2026-03-02T10:00:00+01:00","duration_minutes":30}"#,
        )
        .unwrap();
        assert_eq!(ok.kind, "meeting");
        assert_eq!(ok.subject, "Demo");
        assert_eq!(ok.due_at.to_rfc3339(), "2026-03-02T09:00:00+00:00");
        for (body, status, needle) in [
            (
                r#"{"kind":"email","subject":"x","due_at":"2026-03-02T10:00:00Z"}"#,
                422,
                "kind",
            ),
            (
                r#"{"kind":"call","subject":"  ","due_at":"2026-03-02T10:00:00Z"}"#,
                422,
                "subject",
            ),
            (
                r#"{"kind":"call","subject":"x","due_at":"tomorrow"}"#,
                422,
                "due_at",
            ),
            (
                r#"{"kind":"call","subject":"x","due_at":"2026-03-02T10:00:00Z","duration_minutes":5}"#,
                422,
                "duration_minutes",
            ),
            (
                r#"{"kind":"meeting","subject":"x","due_at":"2026-03-02T10:00:00Z","duration_minutes":0}"#,
                422,
                "duration_minutes",
            ),
            (
                r#"{"kind":"call","subject":"x","due_at":"2026-03-02T10:00:00Z","assignee_id":-1}"#,
                422,
                "assignee_id",
            ),
            (
                r#"{"kind":"call","subject":"x","due_at":"2026-03-02T10:00:00Z","extra":1}"#,
                400,
                "extra",
            ),
            (r#"[1]"#, 400, "JSON object"),
        ] {
            let problem = parse_new(body.as_bytes()).unwrap_err();
            assert_eq!(problem.status.as_u16(), status, "{body}");
            assert!(
                problem.message.contains(needle),
                "{body}: {}",
                problem.message
            );
        }
    }

    #[test]
    fn a_change_tells_a_cleared_body_from_an_absent_one() {
        let cleared = parse_change(br#"{"body":null}"#).unwrap();
        assert_eq!(cleared.body, Some(None));
        let moved = parse_change(br#"{"due_at":"2026-03-02T10:00:00Z"}"#).unwrap();
        assert!(moved.body.is_none() && moved.due_at.is_some());
        assert_eq!(parse_change(b"{}").unwrap_err().status.as_u16(), 400);
    }
    #[test]
    fn every_route_documents_its_answers() {
        let api = serde_json::to_value(routes().get_openapi()).unwrap();
        let paths = &api["paths"];
        let expect = [
            (
                "/v1/leads/{id}/activities",
                "get",
                &["200", "400", "401", "404", "503"][..],
            ),
            (
                "/v1/leads/{id}/activities",
                "post",
                &["201", "400", "401", "403", "404", "422", "503"],
            ),
            ("/v1/activities", "get", &["200", "400", "401", "503"]),
            (
                "/v1/activities/{id}",
                "patch",
                &["200", "400", "401", "403", "404", "409", "422", "503"],
            ),
            (
                "/v1/activities/{id}/complete",
                "post",
                &["200", "400", "401", "404", "409", "422", "503"],
            ),
            ("/v1/views/activities", "get", &["200", "400", "401", "503"]),
        ];
        for (path, method, statuses) in expect {
            let op = &paths[path][method];
            let mut answers: Vec<&str> = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} is documented"))
                .keys()
                .map(String::as_str)
                .collect();
            answers.sort();
            assert_eq!(answers, statuses, "{method} {path}");
        }
        let problem = &paths["/v1/activities/{id}"]["patch"]["responses"]["409"]["content"]["application/json"]
            ["schema"]["$ref"];
        assert_eq!(problem, "#/components/schemas/Problem");
        assert!(api["components"]["schemas"]["ActivityItem"].is_object());
    }
}
