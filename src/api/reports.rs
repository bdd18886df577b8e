//! Reports (`/v1/reports/funnel`, `/v1/reports/responsible`,
//! `/v1/reports/stage-times`) over leads created in a period: supervisors see their
//! team's leads, admins all, agents none.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use ingest::problem::Problem;
use serde::Deserialize;
use store::{FunnelBy, FunnelReport, ReportPeriod, ResponsibleReport, Role, StageTimesReport};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{
    ApiState, Caller, bad_query, known_pipeline, parse_time, query_params, store_problem,
    unknown_param,
};

/// The longest period a report covers.
const MAX_DAYS: i64 = 400;
/// The period when none is given: the last 30 days.
const DEFAULT_DAYS: i64 = 30;

/// The report routes (mounted behind the API token check).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(funnel))
        .routes(routes!(responsible))
        .routes(routes!(stage_times))
}

/// The parameters every report reads; `allowed` names the ones this report takes.
struct ReportParams {
    period: ReportPeriod,
    pipeline: String,
    by: FunnelBy,
}

fn report_params(
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<ReportParams, Problem> {
    let params = query_params(params)?;
    let mut from = None;
    let mut to = None;
    let mut out = ReportParams {
        period: ReportPeriod {
            from: Utc::now(),
            to: Utc::now(),
        },
        pipeline: "default".to_owned(),
        by: FunnelBy::Source,
    };
    for (key, value) in &params {
        let value = value.trim();
        if !allowed.contains(&key.as_str()) {
            return Err(unknown_param(key, allowed));
        }
        match key.as_str() {
            "from" => from = Some(parse_time(key, value)?),
            "to" => to = Some(parse_time(key, value)?),
            "pipeline" => out.pipeline = value.to_owned(),
            "by" => {
                out.by = match value {
                    "source" => FunnelBy::Source,
                    "channel" => FunnelBy::Channel,
                    _ => {
                        return Err(bad_query(format!(
                            "by: `{value}` is not a grouping; use source or channel"
                        )));
                    }
                }
            }
            _ => unreachable!("only allowed parameters get here"),
        }
    }
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or(to - Duration::days(DEFAULT_DAYS));
    if from >= to {
        return Err(bad_query(format!(
            "from: {from} is not before to ({to}); the period is [from, to)"
        )));
    }
    if to - from > Duration::days(MAX_DAYS) {
        return Err(bad_query(format!(
            "from: the period from {from} to {to} is longer than {MAX_DAYS} days; report on a shorter one"
        )));
    }
    out.period = ReportPeriod { from, to };
    Ok(out)
}

/// Query of `GET /v1/reports/funnel`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct FunnelParams {
    /// Leads created at or after this RFC 3339 time (default: 30 days before `to`).
    from: Option<String>,
    /// Leads created before this RFC 3339 time (default: now); at most 400 days after
    /// `from`.
    to: Option<String>,
    /// Pipeline code (default `default`).
    pipeline: Option<String>,
    /// `source` (default) or `channel`.
    by: Option<String>,
}

/// The funnel by source or channel: leads, how many reached each stage (each lead once
/// per stage, from the stage history), converted and junk shares, junk reasons.
#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/reports/funnel",
    params(FunnelParams),
    responses(
        (status = 200, description = "The funnel", body = FunnelReport),
        (status = 400, description = "A query parameter cannot be used", body = Problem),
        (status = 401, description = "No valid token", body = Problem),
        (status = 403, description = "Agents do not see reports", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ),
    tag = "reports"
)]
async fn funnel(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Supervisor)?;
    let p = report_params(params, &["from", "to", "pipeline", "by"])?;
    let pipeline_id = known_pipeline(&state, &p.pipeline).await?;
    let report = state
        .store
        .funnel_report(&caller.scope(), &p.pipeline, pipeline_id, p.by, &p.period)
        .await
        .map_err(store_problem)?;
    Ok(axum::Json(report).into_response())
}

/// Query of `GET /v1/reports/responsible`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct PeriodParams {
    /// Leads created at or after this RFC 3339 time (default: 30 days before `to`).
    from: Option<String>,
    /// Leads created before this RFC 3339 time (default: now); at most 400 days after
    /// `from`.
    to: Option<String>,
}

/// Leads created in the period per responsible user: total, open, converted, junk (by
/// the stage each lead is in now).
#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/reports/responsible",
    params(PeriodParams),
    responses(
        (status = 200, description = "One row per responsible user", body = ResponsibleReport),
        (status = 400, description = "A query parameter cannot be used", body = Problem),
        (status = 401, description = "No valid token", body = Problem),
        (status = 403, description = "Agents do not see reports", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ),
    tag = "reports"
)]
async fn responsible(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Supervisor)?;
    let p = report_params(params, &["from", "to"])?;
    let report = state
        .store
        .responsible_report(&caller.scope(), &p.period)
        .await
        .map_err(store_problem)?;
    Ok(axum::Json(report).into_response())
}

/// Query of `GET /v1/reports/stage-times`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct StageTimesParams {
    /// Leads created at or after this RFC 3339 time (default: 30 days before `to`).
    from: Option<String>,
    /// Leads created before this RFC 3339 time (default: now); at most 400 days after
    /// `from`.
    to: Option<String>,
    /// Pipeline code (default `default`).
    pipeline: Option<String>,
}

/// Median and 90th percentile time in each stage, from consecutive stage-history rows;
/// a stay still going on counts up to `measured_at`.
#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/reports/stage-times",
    params(StageTimesParams),
    responses(
        (status = 200, description = "Time in each stage", body = StageTimesReport),
        (status = 400, description = "A query parameter cannot be used", body = Problem),
        (status = 401, description = "No valid token", body = Problem),
        (status = 403, description = "Agents do not see reports", body = Problem),
        (status = 503, description = "The database did not answer", body = Problem),
    ),
    tag = "reports"
)]
async fn stage_times(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    caller.require(Role::Supervisor)?;
    let p = report_params(params, &["from", "to", "pipeline"])?;
    let pipeline_id = known_pipeline(&state, &p.pipeline).await?;
    let report = state
        .store
        .stage_times_report(&caller.scope(), &p.pipeline, pipeline_id, &p.period)
        .await
        .map_err(store_problem)?;
    Ok(axum::Json(report).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<Query<HashMap<String, String>>, QueryRejection> {
        Ok(Query(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    #[test]
    fn a_period_must_be_ordered_and_at_most_400_days() {
        let all = ["from", "to", "pipeline", "by"];
        let ok = report_params(
            q(&[
                ("from", "2026-01-01T00:00:00Z"),
                ("to", "2026-02-01T00:00:00Z"),
                ("by", "channel"),
            ]),
            &all,
        )
        .unwrap();
        assert_eq!(ok.by, FunnelBy::Channel);
        assert_eq!((ok.period.to - ok.period.from).num_days(), 31);
        for (bad, needle) in [
            (
                q(&[
                    ("from", "2026-02-01T00:00:00Z"),
                    ("to", "2026-01-01T00:00:00Z"),
                ]),
                "from",
            ),
            (
                q(&[
                    ("from", "2024-01-01T00:00:00Z"),
                    ("to", "2026-01-01T00:00:00Z"),
                ]),
                "400 days",
            ),
            (q(&[("from", "last week")]), "from"),
            (q(&[("by", "city")]), "by"),
            (q(&[("limit", "3")]), "limit"),
        ] {
            let p = report_params(bad, &all).err().expect(needle);
            assert_eq!(p.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(p.message.contains(needle), "{}", p.message);
        }
        let p = report_params(q(&[("by", "source")]), &["from", "to"])
            .err()
            .unwrap();
        assert!(p.message.contains("unknown parameter `by`"));
    }
}
