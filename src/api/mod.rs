//! The ops API and the health endpoints.
//!
//! `/v1/leads`, `/v1/contacts` and `/v1/companies` need
//! `Authorization: Bearer <api.admin_token>`; `/healthz`, `/readyz` and `/metrics` are
//! open (bind them to a private interface or filter them at the proxy).
//!
//! # Layout
//! - [`common`]: the shared state, the admin-token check, query parameters, database
//!   failures as answers.
//! - [`leads`]: `/v1/leads` (filters, `?key=`) and `/v1/leads/{id}`.
//! - [`messages`]: `POST /v1/leads/{id}/messages`, a reply through the lead's channel.
//! - [`clients`]: `/v1/contacts` and `/v1/companies`.
//! - [`activities`]: a lead's history and planned work, "my tasks", and the activity
//!   view (`/v1/leads/{id}/activities`, `/v1/activities`, `/v1/views/activities`).
//! - [`reports`]: the funnel, leads per responsible, time in stage (`/v1/reports/...`).
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//!
//! The parts import only from `common`, and this module only from them.

pub mod activities;
pub mod clients;
pub mod common;
pub mod health;
pub mod leads;
pub mod messages;
pub mod reports;

use axum::Router;
use axum::middleware;

pub use common::ApiState;

/// The API and health routes.
pub fn routes(state: ApiState) -> Router {
    let protected = Router::new()
        .merge(leads::routes())
        .merge(messages::routes())
        .merge(clients::routes())
        .merge(axum::Router::from(activities::routes()))
        .merge(axum::Router::from(reports::routes()))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            common::require_admin,
        ));
    Router::new()
        .merge(protected)
        .merge(health::routes())
        .with_state(state)
}
