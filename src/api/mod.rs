//! The ops API and the health endpoints.
//!
//! `/v1/leads`, `/v1/contacts` and `/v1/companies` need
//! `Authorization: Bearer <api.admin_token>`; `/healthz`, `/readyz` and `/metrics` are
//! open (bind them to a private interface or filter them at the proxy).
//!
//! # Layout
//! - [`common`]: the shared state, the admin-token check, query parameters, database
//!   failures as answers.
//! - [`leads`]: `/v1/leads` (filters, search, sorts, cursors), `/v1/leads/{id}` (read and
//!   `PATCH`), `/v1/leads/bulk/{assign,stage}` and `/v1/pipelines/{code}/kanban`.
//! - [`messages`]: `POST /v1/leads/{id}/messages`, a reply through the lead's channel.
//! - [`clients`]: `/v1/contacts` and `/v1/companies`.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//!
//! The parts import only from `common`, and this module only from them.

pub mod clients;
pub mod common;
pub mod health;
pub mod leads;
pub mod messages;

use axum::Router;
use axum::middleware;

pub use common::ApiState;

/// The API and health routes.
pub fn routes(state: ApiState) -> Router {
    let protected = Router::new()
        .merge(axum::Router::from(leads::routes()))
        .merge(messages::routes())
        .merge(clients::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            common::require_admin,
        ));
    Router::new()
        .merge(protected)
        .merge(health::routes())
        .with_state(state)
}
