//! `/healthz` (the process is alive), `/readyz` (broker connected, database answering)
//! and `/metrics` (Prometheus); open, so bind them to a private interface or filter them
//! at the proxy.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::ApiState;

/// The health and metrics routes.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\"}`.", body = Object)),
)]
async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// The broker is connected and the database answers (with each connector's state).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready: `status`, `broker`, `database` and `connectors`.", body = Object),
        (status = 503, description = "Not ready: the same body with `status: not_ready` and what is down.", body = Object),
    ),
)]
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

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "The Prometheus text format.", content((String = "text/plain")))),
)]
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
