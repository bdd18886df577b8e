//! The ops API, the health endpoints and the contract, and the one place every HTTP
//! route is assembled.
//!
//! Every `/v1/` route needs `Authorization: Bearer <token>`: a user token (`lp_...`) or the
//! bootstrap `api.admin_token`; `/healthz`, `/readyz`, `/metrics` and `/openapi.json` are
//! open (bind them to a private interface or filter them at the proxy).
//!
//! # Layout
//! - [`common`]: the shared state, the [`common::Caller`], query parameters, database
//!   failures as answers.
//! - [`auth`]: the middleware that finds the caller behind a bearer token.
//! - [`leads`]: `/v1/leads` (filters, search, sorts, cursors), `/v1/leads/{id}` (read and
//!   `PATCH`), `/v1/leads/bulk/{assign,stage}` and `/v1/pipelines/{code}/kanban`.
//! - [`messages`]: `POST /v1/leads/{id}/messages`, a reply through the lead's channel.
//! - [`stages`]: pipelines and stages, moving, reopening and finishing leads, deals.
//! - [`clients`]: `/v1/contacts` and `/v1/companies`.
//! - [`people`]: `/v1/me`, `/v1/users`, `/v1/teams`, `/v1/tokens`.
//! - [`activities`]: a lead's history and planned work, "my tasks", and the activity
//!   view (`/v1/leads/{id}/activities`, `/v1/activities`, `/v1/views/activities`).
//! - [`reports`]: the funnel, leads per responsible, time in stage (`/v1/reports/...`).
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`contract`]: `/openapi.json`, assembled from the same registrations as the router.
//!
//! Every module returns a `utoipa_axum::router::OpenApiRouter` whose handlers are
//! registered with `routes!` and annotated with `#[utoipa::path]`; [`application`] mounts
//! them and describes them in one step. A new module is one `.merge(...)` line in
//! [`protected_routes`] or [`open_routes`]. The parts import only from `common`, and this
//! module only from them.

pub mod activities;
pub mod auth;
pub mod clients;
pub mod common;
pub mod contract;
pub mod health;
pub mod leads;
pub mod messages;
pub mod people;
pub mod reports;
pub mod stages;

use axum::middleware;
use axum::{Extension, Router};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use common::ApiState;

/// The ops API, behind the token: one `.merge(module::routes())` per module.
pub fn protected_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .merge(leads::routes())
        .merge(messages::routes())
        .merge(clients::routes())
        .merge(people::routes())
        .merge(stages::routes())
        .merge(activities::routes())
        .merge(reports::routes())
}

/// The open routes: health, metrics and the contract.
pub fn open_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .merge(health::routes())
        .merge(contract::routes())
}

/// The description of every endpoint leadpipe can serve, without building any state:
/// what `/openapi.json` serves on a daemon with every connector configured.
pub fn described() -> OpenApi {
    contract::document([
        protected_routes().into_openapi(),
        open_routes().into_openapi(),
        ingest::contract::intake_api(),
    ])
}

/// Every HTTP route of the daemon: the configured intake connectors' routes, the ops API
/// behind the token and the open routes, with `/openapi.json` built from the very same
/// registrations. Unknown paths and methods get a JSON problem.
pub fn application(state: ApiState, intake: Vec<OpenApiRouter>) -> Router {
    let (protected, protected_api) = protected_routes().split_for_parts();
    let protected = protected.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ));
    let (open, open_api) = open_routes().split_for_parts();
    let mut parts = vec![protected_api, open_api, ingest::contract::intake_api()];
    let mut app = Router::new();
    for connector in intake {
        let (routes, api) = connector.split_for_parts();
        app = app.merge(routes);
        parts.push(api);
    }
    let document = contract::Contract::render(&contract::document(parts));
    app.merge(Router::new().merge(protected).merge(open).with_state(state))
        .fallback(contract::no_route)
        .method_not_allowed_fallback(contract::method_not_allowed)
        .layer(Extension(document))
}
