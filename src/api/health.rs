//! `/healthz` (the process is alive), `/readyz` (broker connected, database answering;
//! `degraded` while intake runs on the local spool, also while the broker blocks
//! publishing)
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
        (status = 200, description = "Ready: `status`, `broker` (`up`, `down` or `blocked`), `database` and `connectors`; `status: degraded` with a `reason` while intake runs on the spool.", body = Object),
        (status = 503, description = "Not ready: the same body with `status: not_ready` and what is down.", body = Object),
    ),
)]
async fn readyz(State(state): State<ApiState>) -> Response {
    let connected = state.publisher.is_ready().await;
    // A memory or disk alarm on the broker: connected, but every publish would wait.
    let blocked = state.publisher.blocked().await;
    let broker = connected && blocked.is_none();
    let database = state.schema_ready.load(Ordering::Acquire)
        && matches!(
            tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await,
            Ok(Ok(()))
        );
    // With a spool, intake keeps accepting while the broker is away: degraded, not down.
    let spool = state.spool.as_ref().map(|s| (s.depth(), s.is_full()));
    let spooling = spool.is_some_and(|(_, full)| !full);
    let backlog = state.spool.as_ref().is_some_and(|s| s.is_behind());
    let (status, word_status) = match (broker, database) {
        (true, true) if backlog => (StatusCode::OK, "degraded"),
        (true, true) => (StatusCode::OK, "ready"),
        (false, true) if spooling => (StatusCode::OK, "degraded"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
    };
    let word = |up: bool| if up { "up" } else { "down" };
    let broker_word = if blocked.is_some() {
        "blocked"
    } else {
        word(connected)
    };
    let mut body = serde_json::json!({
        "status": word_status,
        "broker": broker_word,
        "database": word(database),
    });
    // A degraded replica stays in the load balancer; `reason` tells its operator why.
    if word_status == "degraded" {
        let cause = match (&blocked, connected) {
            (Some(why), _) => format!(
                "the message broker blocked publishing ({why}): a memory or disk alarm on it"
            ),
            (None, false) => "the message broker is unreachable".to_owned(),
            (None, true) => "inquiries accepted earlier wait in the local spool".to_owned(),
        };
        body["reason"] = serde_json::json!(format!("{cause}; intake writes to the local spool"));
    }
    if let Some((depth, full)) = spool {
        body["spool"] = serde_json::json!({
            "entries": depth.entries,
            "bytes": depth.bytes,
            "oldest_age_secs": depth.oldest_age_secs,
            "full": full,
        });
    }
    (
        status,
        Json(crate::connectors::status::with_connectors(body)),
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
