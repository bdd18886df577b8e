//! Asterisk Manager Interface (`[[ami]]`): a pull connector per PBX that logs in over
//! TCP, follows call events grouped by `Linkedid` and files each inbound call once,
//! answered or missed, as a lead or an activity on one.
//!
//! - [`protocol`]: the AMI framing (banner, `Key: Value` lines, packets ended by an empty
//!   line).
//! - [`calls`]: which events make one call, whether it is inbound (its first channel's
//!   dialplan context is one of `inbound_contexts`), answered (any leg) and over.
//! - [`task`]: the connection: login, events, `Action: Ping` keepalive, filing.
//!
//! One connection per PBX across replicas: the supervisor holds the lease of
//! `call:asterisk-<name>` while the task runs.

pub mod calls;
pub mod protocol;
pub mod task;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::connector::{Checks, ConfigProblem, Connector, ConnectorKind, Deps, PullConnector};
use crate::inquiry::Channel;
use calls::{Rules, Tracker};
use task::{AmiLink, AmiTask};

/// One `[[ami]]` entry: an Asterisk server's manager interface.
#[derive(Debug, Clone, Deserialize)]
pub struct AmiConfig {
    /// The PBX's name: in its lease, its calls' ids and keys (`call:asterisk-<name>:...`).
    pub name: String,
    /// The manager's host name or address.
    pub host: String,
    /// Its port (default 5038).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The manager user (`manager.conf`).
    pub user: String,
    /// Its secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file whose first line is the secret (instead of `secret`).
    #[serde(default)]
    pub secret_file: Option<std::path::PathBuf>,
    /// Dialplan contexts calls enter through from outside, each with the phone region of
    /// its trunk: only calls entering through one of them are inbound.
    pub inbound_contexts: BTreeMap<String, String>,
    /// The lead source of its calls.
    pub source: String,
    /// Seconds between keepalive pings (default 20).
    #[serde(default = "default_ping")]
    pub ping_interval_secs: u64,
    /// Milliseconds a call waits after its last hangup for its `Cdr` records (default 1500).
    #[serde(default = "default_cdr_wait")]
    pub cdr_wait_ms: u64,
    /// Seconds a call that was in progress when the connection dropped waits for an event
    /// after the reconnect before it is closed by timeout and filed (default 30).
    #[serde(default = "default_orphan")]
    pub orphan_timeout_secs: u64,
    /// Seconds a call may go without any event before it is closed by timeout (default
    /// 14,400: four hours).
    #[serde(default = "default_silence")]
    pub max_call_secs: u64,
}

fn default_port() -> u16 {
    5038
}
fn default_ping() -> u64 {
    20
}
fn default_cdr_wait() -> u64 {
    1500
}
fn default_orphan() -> u64 {
    30
}
fn default_silence() -> u64 {
    4 * 3600
}

impl AmiConfig {
    /// The secret: `secret`, else the first line of `secret_file`.
    pub fn resolve_secret(&self) -> Result<String, String> {
        if let Some(path) = &self.secret_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read the secret file {}: {e}; check the path and its permissions",
                    path.display()
                )
            })?;
            let line = text.lines().next().unwrap_or_default().trim_end();
            if line.is_empty() {
                return Err(format!("the secret file {} is empty", path.display()));
            }
            return Ok(line.to_owned());
        }
        match &self.secret {
            Some(secret) if !secret.is_empty() => Ok(secret.clone()),
            _ => Err("no secret: set `secret` or `secret_file` (the manager user's secret in manager.conf)".into()),
        }
    }

    /// The name its lease and status are kept under.
    pub fn lease_name(&self) -> String {
        format!("asterisk-{}", self.name)
    }
}

/// The AMI connector kind: one pull task per `[[ami]]` entry.
pub struct Ami;

impl ConnectorKind for Ami {
    const SECTION: &'static str = "ami";
    type Config = Vec<AmiConfig>;

    fn validate(pbxs: &Self::Config, checks: &Checks<'_>) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        for (index, pbx) in pbxs.iter().enumerate() {
            let key = |field: &str| format!("ami[{index}].{field}");
            if let Some(problem) =
                crate::connector::name_problem(&pbx.name, 100, "PBX", "call keys", &mut names)
            {
                problems.push((key("name"), problem));
            }
            if pbx.host.trim().is_empty() {
                problems.push((key("host"), "must not be empty".into()));
            }
            if pbx.port == 0 {
                problems.push((key("port"), "must be a port number from 1 to 65535".into()));
            }
            if pbx.user.trim().is_empty() {
                problems.push((key("user"), "must not be empty".into()));
            }
            if pbx.secret.is_some() && pbx.secret_file.is_some() {
                problems.push((
                    key("secret_file"),
                    "set either `secret` or `secret_file`, not both".into(),
                ));
            } else if let Err(problem) = pbx.resolve_secret() {
                let field = if pbx.secret_file.is_some() {
                    "secret_file"
                } else {
                    "secret"
                };
                problems.push((key(field), problem));
            }
            if pbx.inbound_contexts.is_empty() {
                problems.push((
                    key("inbound_contexts"),
                    "list at least one inbound context with its region, e.g. { \"from-trunk-it\" = \"IT\" }: without one no call is inbound".into(),
                ));
            }
            for (context, region) in &pbx.inbound_contexts {
                if let Err(problem) = (checks.region)(region) {
                    problems.push((format!("ami[{index}].inbound_contexts.{context}"), problem));
                }
            }
            if pbx.source.trim().is_empty() {
                problems.push((key("source"), "must not be empty (e.g. phone-pbx1)".into()));
            }
            if pbx.ping_interval_secs == 0 {
                problems.push((key("ping_interval_secs"), "must be at least 1".into()));
            }
            if pbx.orphan_timeout_secs == 0 {
                problems.push((key("orphan_timeout_secs"), "must be at least 1".into()));
            }
            if pbx.max_call_secs < 60 {
                problems.push((key("max_call_secs"), "must be at least 60".into()));
            }
        }
        problems
    }

    fn summary(pbxs: &Self::Config) -> Option<String> {
        match pbxs.len() {
            0 => None,
            1 => Some("1 Asterisk PBX".into()),
            n => Some(format!("{n} Asterisk PBXs")),
        }
    }

    fn build(pbxs: Self::Config, _deps: &Deps) -> Result<Vec<Connector>, ConfigProblem> {
        let mut built = Vec::new();
        for (index, pbx) in pbxs.into_iter().enumerate() {
            let secret = pbx
                .resolve_secret()
                .map_err(|problem| (format!("ami[{index}].secret"), problem))?;
            let tracker = Tracker::new(Rules {
                inbound_contexts: pbx.inbound_contexts.clone(),
                cdr_wait: Duration::from_millis(pbx.cdr_wait_ms),
                orphan_timeout: Duration::from_secs(pbx.orphan_timeout_secs),
                max_silence: Duration::from_secs(pbx.max_call_secs),
            });
            let link = AmiLink {
                name: pbx.name.clone(),
                address: (pbx.host.clone(), pbx.port),
                user: pbx.user.clone(),
                secret,
                source: pbx.source.clone(),
                ping_interval: Duration::from_secs(pbx.ping_interval_secs),
            };
            built.push(Connector::Pull(PullConnector {
                channel: Channel::Call,
                // The lease belongs to the PBX, not to its source: two PBXs may file
                // under one source, and each needs its one connection.
                name: pbx.lease_name(),
                source: pbx.source.clone(),
                task: Arc::new(AmiTask::new(link, tracker)),
            }));
        }
        Ok(built)
    }
}
