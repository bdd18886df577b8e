//! The ops API and the health endpoints.
//!
//! Every `/v1/` route needs `Authorization: Bearer <token>`: a user token (`lp_...`) or the
//! bootstrap `api.admin_token`; `/healthz`, `/readyz` and `/metrics` are open (bind them
//! to a private interface or filter them at the proxy).
//!
//! # Layout
//! - [`common`]: the shared state, the [`common::Caller`], query parameters, database
//!   failures as answers.
//! - [`auth`]: the middleware that finds the caller behind a bearer token.
//! - [`leads`]: `/v1/leads` (filters, `?key=`) and `/v1/leads/{id}`.
//! - [`messages`]: `POST /v1/leads/{id}/messages`, a reply through the lead's channel.
//! - [`clients`]: `/v1/contacts` and `/v1/companies`.
//! - [`people`]: `/v1/me`, `/v1/users`, `/v1/teams`, `/v1/tokens`.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//!
//! The parts import only from `common`, and this module only from them.

pub mod auth;
pub mod clients;
pub mod common;
pub mod health;
pub mod leads;
pub mod messages;
pub mod people;

use axum::Router;
use axum::middleware;

pub use common::ApiState;

/// The API and health routes.
pub fn routes(state: ApiState) -> Router {
    let protected = Router::new()
        .merge(leads::routes())
        .merge(messages::routes())
        .merge(clients::routes())
        .merge(axum::Router::from(people::routes()))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .merge(protected)
        .merge(health::routes())
        .with_state(state)
}
