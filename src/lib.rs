//! The leadpipe daemon: wires the connectors, the normaliser, the router and the store.
//!
//! # Layout
//! - [`cli`]: the command line, run with a list of connectors.
//! - [`connectors`]: the list of connectors the daemon runs, their configuration
//!   sections, the supervisor of pull connectors, and what `/readyz` says of each.
//! - [`settings`]: the configuration file and environment overrides, validated at once.
//! - [`telemetry`]: logs (human or JSON) and the Prometheus recorder.
//! - [`pipeline`]: the intake sink: normalise, route, publish, wait for the confirm.
//! - [`api`]: the ops API (`/v1/leads`, `/v1/contacts`, `/v1/companies`) and health
//!   endpoints.
//! - [`clients`]: contacts and companies as typed (API or CSV), parsed at the edge.
//! - [`import`]: `leadpipe import`: contacts and companies in bulk, leads through the pipeline, from CSV.
//! - [`digest`]: `[digest]`, the scheduler of the morning stale-lead mail and the
//!   abandon rule, and `leadpipe digest`.
//! - [`mail`]: `[smtp]` and `[[acknowledgements]]`, and the worker that sends the outbox.
//! - [`replies`]: the chat accounts replies go through, and the worker that sends them.
//! - `people`: `leadpipe user add` and `leadpipe token create|list|revoke`.
//! - [`server`]: serves HTTP with a header-read timeout, a connection limit, the client
//!   address of each request, and a drain with a deadline on stop.
//! - [`startup`]: builds everything, runs it, and shuts down in stages.

pub mod api;
pub mod cli;
pub mod clients;
pub mod connectors;
pub mod digest;
pub mod import;
pub mod mail;
mod mailbox;
pub mod memory;
mod people;
pub mod pipeline;
pub mod replies;
pub mod server;
pub mod settings;
pub mod startup;
mod telegram;
pub mod telemetry;
