//! The connector contract: how every channel plugs into the daemon.
//!
//! A connector kind ([`ConnectorKind`]) declares the same things whatever it reads:
//! its configuration section, how that section is checked (every problem as a
//! `(key path, problem)` pair), and what it builds from it: [`Connector`]s, each either
//! an HTTP endpoint set ([`HttpConnector`]: an axum router the daemon's server mounts)
//! or a long-running pull task ([`PullConnector`]: an IMAP reader, a chat poller, a PBX
//! event client) that the daemon runs under a supervisor. Every connector is known by
//! its channel and source, and every metric it reports carries those two labels.
//!
//! A pull task gets a [`PullContext`]: the intake sink (publish and wait for the
//! broker's confirm), its cursor ([`Checkpoints`], written only by the lease holder),
//! and a stop signal. The supervisor holds the source's lease ([`Leases`]) while the
//! task runs, so one replica reads a source at a time, and stops the task when the lease
//! is lost.

mod settings;
pub mod state;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

pub use state::{Checkpoints, Lease, Leases, StateError};

use crate::inquiry::{Channel, Inquiry};
use crate::sink::{Accepted, IdempotencyKeys, IntakeSink, Refusal};

pub use settings::{IntakeSettings, name_problem};

/// One thing wrong with a configuration: the key path (`forms[2].name`) and what is
/// wrong with it and what to do.
pub type ConfigProblem = (String, String);

/// A kind of connector as the daemon lists it: its section, its checks, what it builds.
pub trait ConnectorKind: 'static {
    /// The top-level configuration section it reads (`forms` for `[[forms]]`).
    const SECTION: &'static str;

    /// The section as written; a file without the section gets the default.
    type Config: DeserializeOwned + Default + Clone + std::fmt::Debug + Send + Sync + 'static;

    /// Every problem of the section, with key paths from the file's root.
    fn validate(config: &Self::Config, checks: &Checks<'_>) -> Vec<ConfigProblem>;

    /// What the section declares, for `check-config` ("4 forms"); `None` when nothing.
    fn summary(config: &Self::Config) -> Option<String>;

    /// Builds the connectors of a section that passed [`validate`](Self::validate).
    fn build(config: Self::Config, deps: &Deps) -> Result<Vec<Connector>, ConfigProblem>;
}

/// What a section's validation may consult beyond the section itself.
pub struct Checks<'a> {
    /// The `[intake]` limits.
    pub intake: &'a IntakeSettings,
    /// Checks a phone region code (`IT`) as the normaliser reads it; `Err` says why not.
    pub region: &'a (dyn Fn(&str) -> Result<(), String> + Sync),
}

/// What the daemon hands every connector kind when it builds.
#[derive(Clone)]
pub struct Deps {
    /// The `[intake]` limits every connector shares.
    pub intake: IntakeSettings,
    /// Where inquiries go: normalise, route, publish, confirm.
    pub sink: Arc<dyn IntakeSink>,
    /// The idempotency-key store, for connectors that take client keys.
    pub keys: Arc<dyn IdempotencyKeys>,
}

/// One built connector.
pub enum Connector {
    /// Endpoints the daemon's HTTP server mounts.
    Http(HttpConnector),
    /// A task the daemon runs under its supervisor.
    Pull(PullConnector),
}

impl Connector {
    /// The channel its inquiries carry.
    pub fn channel(&self) -> Channel {
        match self {
            Connector::Http(http) => http.channel,
            Connector::Pull(pull) => pull.channel,
        }
    }
}

/// An HTTP connector: routes over its own state, and the sources they serve.
pub struct HttpConnector {
    /// The channel of its inquiries.
    pub channel: Channel,
    /// Every source it answers for (a form's source), for its `up` metric and `/readyz`.
    pub sources: Vec<String>,
    /// Its routes, state already attached, each documented for `/openapi.json` (boxed:
    /// the description is large beside a pull connector).
    pub routes: Box<utoipa_axum::router::OpenApiRouter>,
}

/// A pull connector: one long-running task reading one source.
pub struct PullConnector {
    /// The channel of its inquiries.
    pub channel: Channel,
    /// The connector's own name (a mailbox's `name`): with the channel, the name of its
    /// lease and cursor, and its `connector` metric label. Several connectors may file
    /// under one source; each has its own name.
    pub name: String,
    /// The source its inquiries are filed under (its `source` metric label).
    pub source: String,
    /// The task.
    pub task: Arc<dyn PullTask>,
}

impl PullConnector {
    /// The key its lease and cursor are kept under: `channel:name`.
    pub fn source_key(&self) -> String {
        source_key(self.channel, &self.name)
    }
}

/// The key a pull connector's lease and cursor are kept under: `channel:name`.
pub fn source_key(channel: Channel, source: &str) -> String {
    format!("{channel}:{source}")
}

/// Why a pull task stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The source failed or refused (connection lost, bad answer); retried with backoff.
    #[error("the source failed: {0}")]
    Source(String),
    /// The cursor could not be read or written; retried with backoff.
    #[error(transparent)]
    State(#[from] StateError),
    /// The pipeline would not take an inquiry (broker away); retried with backoff, from
    /// the last cursor, so nothing unconfirmed is skipped.
    #[error("the pipeline did not take an inquiry: {0}")]
    Intake(String),
}

/// A long-running connector task.
///
/// `run` reads from the source until `ctx` says stop, then finishes the work it holds
/// (publishes what it fetched and commits the cursor) and returns `Ok`. Returning an
/// error ends this run; the supervisor restarts it with backoff, and the task resumes
/// from the last committed cursor.
#[async_trait]
pub trait PullTask: Send + Sync + 'static {
    /// Reads the source until stopped.
    async fn run(&self, ctx: PullContext) -> Result<(), PullError>;
}

/// What a running pull task works with.
pub struct PullContext {
    channel: Channel,
    source: String,
    connector: String,
    sink: Arc<dyn IntakeSink>,
    checkpoints: Arc<dyn Checkpoints>,
    stop: CancellationToken,
}

impl PullContext {
    /// A context for one run (the supervisor builds it).
    pub fn new(
        channel: Channel,
        source: String,
        connector: String,
        sink: Arc<dyn IntakeSink>,
        checkpoints: Arc<dyn Checkpoints>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            channel,
            source,
            connector,
            sink,
            checkpoints,
            stop,
        }
    }

    /// The channel this task reads for.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// The source this task's inquiries are filed under.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The connector's own name (its lease, cursor and `connector` label).
    pub fn connector(&self) -> &str {
        &self.connector
    }

    fn labels(&self) -> Vec<metrics::Label> {
        connector_labels(self.channel, &self.source, Some(&self.connector))
    }

    /// True once the task should stop taking new work.
    pub fn stop_requested(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves when the task should stop taking new work (shutdown, or the lease lost).
    pub async fn stopped(&self) {
        self.stop.cancelled().await
    }

    /// Hands an inquiry on and waits until the broker confirmed it. Only after this
    /// returned `Ok` for everything up to a point may the cursor move past it.
    pub async fn submit(&self, inquiry: Inquiry) -> Result<Accepted, Refusal> {
        metrics::counter!("leadpipe_inquiries_received_total", self.labels()).increment(1);
        let result = self.sink.submit(inquiry).await;
        if let Err(refusal) = &result {
            let reason = match refusal {
                Refusal::Unusable { code, .. } => *code,
                Refusal::Unavailable { code, .. } => *code,
            };
            let mut labels = self.labels();
            labels.push(metrics::Label::new("reason", reason));
            metrics::counter!("leadpipe_inquiries_rejected_total", labels).increment(1);
        }
        result
    }

    /// The cursor last committed for this source, if any.
    pub async fn cursor<T: DeserializeOwned>(&self) -> Result<Option<T>, StateError> {
        match self.checkpoints.load().await? {
            None => Ok(None),
            Some(value) => serde_json::from_value(value).map(Some).map_err(|e| {
                StateError::Corrupt(format!(
                    "the stored cursor of {} does not read as this connector's cursor: {e}",
                    source_key(self.channel, &self.connector)
                ))
            }),
        }
    }

    /// Commits the cursor: call it only once everything before it was confirmed. Counts
    /// as a success of the connector.
    pub async fn commit<T: Serialize>(&self, cursor: &T) -> Result<(), StateError> {
        let value = serde_json::to_value(cursor)
            .map_err(|e| StateError::Corrupt(format!("the cursor does not serialise: {e}")))?;
        self.checkpoints.save(&value).await?;
        self.succeeded();
        Ok(())
    }

    /// Records that the source answered as it should (a poll with nothing new counts).
    pub fn succeeded(&self) {
        record_success(self.channel, &self.source, Some(&self.connector));
    }
}

/// The labels of a connector's metrics: `channel`, `source` (where its inquiries are
/// filed) and, for a pull connector, `connector` (its own name, since several may file
/// under one source).
pub fn connector_labels(
    channel: Channel,
    source: &str,
    connector: Option<&str>,
) -> Vec<metrics::Label> {
    let mut labels = vec![
        metrics::Label::new("channel", channel.as_str()),
        metrics::Label::new("source", source.to_owned()),
    ];
    if let Some(connector) = connector {
        labels.push(metrics::Label::new("connector", connector.to_owned()));
    }
    labels
}

/// Sets `leadpipe_connector_last_success_timestamp_seconds{channel,source[,connector]}`
/// to now.
pub fn record_success(channel: Channel, source: &str, connector: Option<&str>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!(
        "leadpipe_connector_last_success_timestamp_seconds",
        connector_labels(channel, source, connector)
    )
    .set(now);
}

/// Sets `leadpipe_connector_up{channel,source[,connector]}`: 1 while it takes work,
/// else 0.
pub fn record_up(channel: Channel, source: &str, connector: Option<&str>, up: bool) {
    metrics::gauge!(
        "leadpipe_connector_up",
        connector_labels(channel, source, connector)
    )
    .set(if up { 1.0 } else { 0.0 });
}

/// A context is a sink too: what goes through it is counted as this connector's.
#[async_trait]
impl IntakeSink for PullContext {
    async fn prepare(
        &self,
        inquiry: Inquiry,
    ) -> Result<Box<dyn crate::sink::PreparedInquiry>, Refusal> {
        self.sink.prepare(inquiry).await
    }

    async fn submit(&self, inquiry: Inquiry) -> Result<Accepted, Refusal> {
        PullContext::submit(self, inquiry).await
    }
}
