//! The store's integration tests, one binary: each module is one concern, and they
//! share the builders in `support` (one link instead of one per file).

mod support;

mod activities;
mod batch_locks;
mod connector_leases;
mod conversations;
mod intake;
mod keys;
mod lead_summary;
mod matching;
mod matching_rules;
mod migrations;
mod outbox;
mod people;
mod replies;
mod report_bench;
mod search_text;
mod stages;
mod storage_errors;
mod views;
