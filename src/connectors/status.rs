//! What each connector is doing, for `/readyz` and `leadpipe_connector_up`.
//!
//! Every connector sets its `up` gauge; `/readyz` lists the pull connectors (an HTTP
//! connector is up exactly when the server answers, so listing it would say nothing).
//!
//! One registry per process, like the metrics recorder: a daemon is one process, and
//! the health handler reads it without being handed anything.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use ingest::Channel;
use ingest::connector::{connector_labels, record_up};
use serde::Serialize;

/// How a connector gets its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Requests come to its HTTP routes.
    Http,
    /// A task pulls from the source.
    Pull,
}

/// Where a connector stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for the database schema before it may take its lease.
    Starting,
    /// Another replica holds the source's lease; this one takes over when it is free.
    Standby,
    /// Taking work.
    Running,
    /// Its last run failed; it restarts after a delay.
    Backoff,
    /// Finishing what it holds before the daemon stops.
    Stopping,
    /// Stopped.
    Stopped,
}

/// One connector as `/readyz` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorStatus {
    /// Its channel.
    pub channel: Channel,
    /// Its source (where its inquiries are filed).
    pub source: String,
    /// A pull connector's own name (a mailbox's name): several may share a source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// HTTP or pull.
    pub kind: Kind,
    /// Where it stands.
    pub state: State,
    /// Since when.
    pub since: DateTime<Utc>,
    /// How often its task was restarted after a failure.
    pub restarts: u64,
    /// Why its last run failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

static REGISTRY: Mutex<BTreeMap<(&'static str, String), ConnectorStatus>> =
    Mutex::new(BTreeMap::new());

fn registry() -> MutexGuard<'static, BTreeMap<(&'static str, String), ConnectorStatus>> {
    // A panic while holding this lock leaves plain data behind; keep serving it.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connector's entry; updating it also sets `leadpipe_connector_up`.
#[derive(Debug, Clone)]
pub struct Entry {
    channel: Channel,
    source: String,
    connector: Option<String>,
}

impl Entry {
    /// Registers a connector in `state`: an HTTP connector by its source, a pull
    /// connector by its own name too.
    pub fn register(
        channel: Channel,
        source: &str,
        connector: Option<&str>,
        kind: Kind,
        state: State,
    ) -> Self {
        let entry = Self {
            channel,
            source: source.to_owned(),
            connector: connector.map(str::to_owned),
        };
        registry().insert(
            entry.key(),
            ConnectorStatus {
                channel,
                source: source.to_owned(),
                connector: entry.connector.clone(),
                kind,
                state,
                since: Utc::now(),
                restarts: 0,
                last_error: None,
            },
        );
        record_up(channel, source, connector, state == State::Running);
        entry
    }

    /// Its key in the registry: the name of a pull connector, else its source.
    fn key(&self) -> (&'static str, String) {
        (
            self.channel.as_str(),
            self.connector
                .clone()
                .unwrap_or_else(|| self.source.clone()),
        )
    }

    /// Moves to `state` (the time is kept when the state does not change).
    pub fn set(&self, state: State) {
        self.update(|status| {
            if status.state != state {
                status.state = state;
                status.since = Utc::now();
            }
        });
        record_up(
            self.channel,
            &self.source,
            self.connector.as_deref(),
            state == State::Running,
        );
    }

    /// Records a failed run: counted as a restart, its error kept for `/readyz`.
    pub fn failed(&self, error: &str) {
        self.update(|status| {
            status.restarts += 1;
            status.last_error = Some(error.to_owned());
        });
        metrics::counter!(
            "leadpipe_connector_restarts_total",
            connector_labels(self.channel, &self.source, self.connector.as_deref())
        )
        .increment(1);
        self.set(State::Backoff);
    }

    fn update(&self, change: impl FnOnce(&mut ConnectorStatus)) {
        if let Some(status) = registry().get_mut(&self.key()) {
            change(status);
        }
    }
}

/// Every pull connector's status.
pub fn report() -> Vec<ConnectorStatus> {
    registry()
        .values()
        .filter(|status| status.kind == Kind::Pull)
        .cloned()
        .collect()
}

/// The `/readyz` body with `"connectors"` (the pull connectors) added when there are any.
pub fn with_connectors(mut body: serde_json::Value) -> serde_json::Value {
    let connectors = report();
    if let (false, Some(fields)) = (connectors.is_empty(), body.as_object_mut()) {
        fields.insert("connectors".into(), serde_json::json!(connectors));
    }
    body
}
