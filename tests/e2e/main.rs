//! End-to-end tests: the real `leadpipe` binary against the real PostgreSQL and RabbitMQ.
//!
//! Every test starts its own daemon with a fresh database and a fresh AMQP prefix, and
//! drops both afterwards, so tests run in parallel and leave nothing behind.

mod support;

mod activities;
mod asterisk;
mod broker_seams;
mod chat_replies;
mod clients;
mod config;
mod contract;
mod delivery;
mod digest;
mod errors;
mod events;
mod failover;
mod forms_corpus;
mod held_batches;
mod idempotency;
mod import;
mod keys;
mod mail;
mod matching_seams;
mod observing;
mod ops;
mod permissions;
mod replies;
mod slow_clients;
mod spool;
mod stages;
mod telephony;
mod views;
mod whatsapp;
