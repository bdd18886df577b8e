//! Configuration: one TOML file plus `LEADPIPE__SECTION__KEY` environment overrides.
//!
//! Unknown keys are errors, and every problem is reported at once with its key path, so an
//! operator fixes a file in one round. (Unknown keys are collected while deserialising
//! rather than refused by serde, which would stop at the first one.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ingest::connector::{Checks, IntakeSettings};
use router::{AmqpConfig, RoutingConfig};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use store::{DatabaseConfig, KeyStoreOptions};

/// The admin token of deploy/leadpipe.example.toml, known to everyone who read it.
const EXAMPLE_ADMIN_TOKEN: &str = "change-me-please";

/// Everything leadpipe can be told.
#[derive(Debug, Deserialize)]
pub struct Settings {
    /// `[http]`: where the HTTP server listens.
    #[serde(default)]
    pub http: HttpSettings,
    /// `[database]`: PostgreSQL.
    #[serde(default = "default_database")]
    pub database: DatabaseConfig,
    /// `[amqp]`: RabbitMQ.
    #[serde(default = "default_amqp")]
    pub amqp: AmqpConfig,
    /// `[spool]`: where web intake keeps what the broker could not confirm in time.
    #[serde(default)]
    pub spool: router::spool::SpoolConfig,
    /// `[api]`: the ops API.
    #[serde(default)]
    pub api: ApiSettings,
    /// `[intake]`: limits shared by every connector.
    #[serde(default)]
    pub intake: IntakeSettings,
    /// `[routing]`: where new leads go.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// `[matching]`: values that never become identity keys, beyond the built-in lists.
    #[serde(default)]
    pub matching: normalizer::MatchingConfig,
    /// The connectors' own sections (`[[forms]]`, ...), read by the kinds the daemon
    /// lists (`crate::connectors`).
    #[serde(skip)]
    pub connectors: crate::connectors::Sections,
    /// `[smtp]`: where outgoing mail is handed over; no mail is sent without it.
    #[serde(default)]
    pub smtp: Option<crate::mail::SmtpSettings>,
    /// `[[acknowledgements]]`: the mail that answers each source's new leads.
    #[serde(default)]
    pub acknowledgements: Vec<crate::mail::AckSettings>,
    /// `[digest]`: the morning mail of stale leads and the abandon rule; off when absent.
    #[serde(default)]
    pub digest: Option<crate::digest::DigestSettings>,
    /// `[log]`: logging.
    #[serde(default)]
    pub log: LogSettings,
    /// `[shutdown]`: how long stopping may take.
    #[serde(default)]
    pub shutdown: ShutdownSettings,
    /// `[[pipelines]]`: lead and deal pipelines with their `[[pipelines.stages]]`, synced
    /// into the database at start (by code; nothing with history is deleted). Without
    /// them the stored pipelines stay as they are.
    #[serde(default)]
    pub pipelines: Vec<store::PipelineSpec>,
    /// `[leads]`: working leads.
    #[serde(default)]
    pub leads: LeadSettings,
}

/// The `[leads]` section.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct LeadSettings {
    /// The reasons a lead may be finished as junk with; reports group by them.
    pub junk_reasons: Vec<String>,
}

impl Default for LeadSettings {
    fn default() -> Self {
        Self {
            junk_reasons: [
                "spam",
                "duplicate",
                "wrong_contact",
                "not_interested",
                "no_budget",
                "out_of_area",
                "other",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        }
    }
}

/// What is wrong with `[[pipelines]]` and `[leads]`, as `(key, problem)`.
fn lead_work_problems(
    pipelines: &[store::PipelineSpec],
    leads: &LeadSettings,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut codes = std::collections::HashSet::new();
    for (i, pipeline) in pipelines.iter().enumerate() {
        for (field, problem) in pipeline.problems() {
            out.push((format!("pipelines[{i}].{field}"), problem));
        }
        if !codes.insert(pipeline.code.as_str()) {
            out.push((
                format!("pipelines[{i}].code"),
                format!(
                    "`{}` is configured twice: pipeline codes are unique",
                    pipeline.code
                ),
            ));
        }
    }
    if leads.junk_reasons.is_empty() {
        out.push((
            "leads.junk_reasons".into(),
            "list at least one reason (such as \"spam\"): without one no lead can be finished as junk".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, reason) in leads.junk_reasons.iter().enumerate() {
        if !store::stages::valid_code(reason) {
            out.push((
                format!("leads.junk_reasons[{i}]"),
                format!("`{reason}` is not a reason code: use 1 to 64 characters a-z, 0-9, _ or -"),
            ));
        }
        if !seen.insert(reason.as_str()) {
            out.push((
                format!("leads.junk_reasons[{i}]"),
                format!("`{reason}` is listed twice"),
            ));
        }
    }
    out
}

fn default_database() -> DatabaseConfig {
    DatabaseConfig::new("postgres://postgres@127.0.0.1:5432/leadpipe")
}

fn default_amqp() -> AmqpConfig {
    AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f", "leadpipe")
}

/// The `[http]` section.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Address and port to listen on.
    pub listen: String,
    /// Longest time a request may take before it is answered 503, in seconds.
    pub request_timeout_secs: u64,
    /// On SIGTERM, how long requests in flight may take to finish before their
    /// connections are closed, in seconds.
    pub shutdown_grace_secs: u64,
    /// How long a client may take to send a request's headers, in seconds; the clock
    /// also runs while a kept-alive connection waits for its next request.
    pub header_read_timeout_secs: u64,
    /// Connections open at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Addresses or networks of reverse proxies whose `X-Forwarded-For` names the client
    /// (for rate limits); from any other peer the header is ignored.
    pub trusted_proxies: Vec<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            request_timeout_secs: 30,
            shutdown_grace_secs: 30,
            header_read_timeout_secs: 10,
            // Far above what form traffic needs (a few dozen requests in flight at the
            // pipeline's ceiling, idle connections closed after the header-read timeout),
            // and at most ~64 KiB of buffers each.
            max_connections: 4096,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The `[shutdown]` section.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct ShutdownSettings {
    /// On SIGTERM, how long consumers may take to store and ack what they hold, in
    /// seconds; this runs alongside the HTTP drain, not after it.
    pub consumer_grace_secs: u64,
    /// On SIGTERM, how long pull connectors may take to publish what they fetched and
    /// commit their cursors, in seconds; what is left is read again on the next start.
    pub connector_grace_secs: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            consumer_grace_secs: 30,
            connector_grace_secs: 30,
        }
    }
}

/// The `[api]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    /// The bootstrap admin's bearer token for the ops API (`Authorization: Bearer <token>`);
    /// users' own tokens come from `leadpipe token create`.
    pub admin_token: Option<SecretString>,
    /// Read the token from this file instead.
    pub admin_token_file: Option<PathBuf>,
}

/// The `[log]` section.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    /// `human` (default) or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `leadpipe=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// `forms.0.foo` (how the deserialiser names it) as `forms[0].foo` (how problems name it).
pub(crate) fn key_path(dotted: &str) -> String {
    let mut out = String::new();
    // `?` marks the inside of an optional section (`smtp.?.host`): not part of the key.
    for segment in dotted.split('.').filter(|s| *s != "?") {
        if !out.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path (`amqp.prefix`, `forms[2].default_region`).
    pub key: String,
    /// What is wrong and what to do.
    pub problem: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

impl Settings {
    /// Loads and validates: the file (if given), then environment overrides, with the
    /// shipped connectors' sections.
    pub fn load(path: Option<&Path>) -> Result<Settings, Vec<ConfigProblem>> {
        Self::load_with(path, &crate::connectors::shipped())
    }

    /// Loads and validates with the sections of `catalogue`'s connectors.
    pub fn load_with(
        path: Option<&Path>,
        catalogue: &crate::connectors::Catalogue,
    ) -> Result<Settings, Vec<ConfigProblem>> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.exists() {
                return Err(vec![ConfigProblem {
                    key: "--config".into(),
                    problem: format!(
                        "{} does not exist (see deploy/leadpipe.example.toml)",
                        path.display()
                    ),
                }]);
            }
            builder = builder.add_source(
                config::File::from(path.to_path_buf()).format(config::FileFormat::Toml),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("LEADPIPE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                // `LEADPIPE__AMQP__URLS=amqp://a,amqp://b`; every other value stays whole.
                .list_separator(",")
                .with_list_parse_key("amqp.urls"),
        );
        let raw = builder.build().map_err(|e| {
            vec![ConfigProblem {
                key: path.map_or("(environment)".into(), |p| p.display().to_string()),
                problem: e.to_string(),
            }]
        })?;

        let mut unknown = Vec::new();
        let mut settings: Settings = serde_ignored::deserialize(raw.clone(), |path| {
            let path = path.to_string();
            // The connectors read their own sections.
            let section = path.split('.').next().unwrap_or_default();
            if !catalogue.has_section(section) {
                unknown.push(key_path(&path));
            }
        })
        .map_err(|e| {
            vec![ConfigProblem {
                key: "(config)".into(),
                problem: e.to_string(),
            }]
        })?;
        let sections = catalogue.load(&raw, &mut unknown);

        let mut problems: Vec<ConfigProblem> = unknown
            .into_iter()
            .map(|key| ConfigProblem {
                problem: "unknown key: remove it or check its spelling (see deploy/leadpipe.example.toml)".into(),
                key,
            })
            .collect();
        match sections {
            Ok(sections) => settings.connectors = sections,
            Err(unreadable) => problems.extend(unreadable),
        }
        problems.extend(settings.problems());
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(problems)
        }
    }

    /// Every semantic problem (values that parse but cannot work).
    fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut push = |key: String, problem: String| out.push(ConfigProblem { key, problem });
        if self.http.listen.parse::<SocketAddr>().is_err() {
            push(
                "http.listen".into(),
                format!(
                    "`{}` is not an address and port like 127.0.0.1:8080",
                    self.http.listen
                ),
            );
        }
        if self.http.header_read_timeout_secs == 0 {
            push(
                "http.header_read_timeout_secs".into(),
                "must be at least 1: without it a client that never finishes its headers holds a connection for ever".into(),
            );
        }
        if self.http.max_connections == 0 {
            push("http.max_connections".into(), "must be at least 1".into());
        }
        if let Err(bad) = crate::server::TrustedProxies::parse(&self.http.trusted_proxies) {
            for (index, problem) in bad {
                push(format!("http.trusted_proxies[{index}]"), problem);
            }
        }
        for (key, problem) in self.database.problems() {
            push(format!("database.{key}"), problem);
        }
        for (key, problem) in self.amqp.problems() {
            push(format!("amqp.{key}"), problem);
        }
        for (key, problem) in self.spool.problems() {
            push(format!("spool.{key}"), problem);
        }
        match (&self.api.admin_token, &self.api.admin_token_file) {
            (Some(_), Some(_)) => push(
                "api.admin_token".into(),
                "set either admin_token or admin_token_file, not both".into(),
            ),
            (Some(token), None) if token.expose_secret().trim().len() < 8 => push(
                "api.admin_token".into(),
                "must be at least 8 characters".into(),
            ),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Err(_) => push(
                    "api.admin_token_file".into(),
                    format!("{} is not a readable file", path.display()),
                ),
                Ok(text) if text.trim().len() < 8 => push(
                    "api.admin_token_file".into(),
                    format!(
                        "{} must hold a token of at least 8 characters",
                        path.display()
                    ),
                ),
                Ok(_) => {}
            },
            _ => {}
        }
        for (key, value) in [
            ("max_body_bytes", self.intake.max_body_bytes as u64),
            ("key_lookup_timeout_ms", self.intake.key_lookup_timeout_ms),
            ("key_ttl_secs", self.intake.key_ttl_secs),
            (
                "key_store_max_connections",
                u64::from(self.intake.key_store_max_connections),
            ),
            (
                "key_purge_interval_secs",
                self.intake.key_purge_interval_secs,
            ),
        ] {
            if value == 0 {
                push(format!("intake.{key}"), "must be greater than 0".into());
            }
        }
        for (key, value, most) in [
            ("key_ttl_secs", self.intake.key_ttl_secs, 366 * 86_400),
            (
                "key_purge_interval_secs",
                self.intake.key_purge_interval_secs,
                86_400,
            ),
        ] {
            if value > most {
                push(format!("intake.{key}"), format!("must be at most {most}"));
            }
        }
        for (key, problem) in crate::mail::problems(self.smtp.as_ref(), &self.acknowledgements) {
            push(key, problem);
        }
        for (key, problem) in crate::digest::problems(self.digest.as_ref(), self.smtp.is_some()) {
            push(key, problem);
        }
        for (key, problem) in self.matching.problems() {
            push(format!("matching.{key}"), problem);
        }
        for (key, problem) in lead_work_problems(&self.pipelines, &self.leads) {
            push(key, problem);
        }
        if self
            .pipelines
            .iter()
            .any(|p| p.code == self.routing.pipeline && p.kind == store::PipelineKind::Deal)
        {
            push(
                "routing.pipeline".into(),
                format!(
                    "`{}` is a deal pipeline: new leads go to a lead pipeline",
                    self.routing.pipeline
                ),
            );
        }
        let region = |code: &str| {
            normalizer::Region::parse(code)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let checks = Checks {
            intake: &self.intake,
            region: &region,
        };
        for (key, problem) in self.connectors.problems(&checks) {
            push(key, problem);
        }
        out
    }

    /// The identity-key rules: the built-in lists with the `[matching]` additions.
    pub fn key_rules(&self) -> anyhow::Result<normalizer::KeyRules> {
        self.matching.rules().map_err(|problems| {
            let problems: Vec<String> = problems
                .into_iter()
                .map(|(key, problem)| format!("matching.{key}: {problem}"))
                .collect();
            anyhow::anyhow!("{}", problems.join("; "))
        })
    }

    /// Settings that work but should not be used in production: `check-config` prints
    /// them loudly (and `--strict` refuses them), `serve` logs them as errors.
    pub fn warnings(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let token = self.admin_token().ok().flatten();
        if token.is_some_and(|t| t.expose_secret().trim() == EXAMPLE_ADMIN_TOKEN) {
            let key = if self.api.admin_token_file.is_some() {
                "api.admin_token_file"
            } else {
                "api.admin_token"
            };
            out.push(ConfigProblem {
                key: key.into(),
                problem: format!(
                    "the example admin token `{EXAMPLE_ADMIN_TOKEN}` is in use: anyone who has read the docs can use the ops API; set your own (e.g. `openssl rand -hex 32`)"
                ),
            });
        }
        out
    }

    /// What the store acknowledges, from `[smtp]` and `[[acknowledgements]]`.
    pub fn ack_rules(&self) -> store::AckRules {
        crate::mail::ack_rules(self.smtp.as_ref(), &self.acknowledgements)
    }

    /// How intake's idempotency-key store is sized, from `[intake]`.
    pub fn key_store_options(&self) -> KeyStoreOptions {
        KeyStoreOptions {
            max_connections: self.intake.key_store_max_connections,
            acquire_timeout: std::time::Duration::from_millis(self.intake.key_lookup_timeout_ms),
            ttl: std::time::Duration::from_secs(self.intake.key_ttl_secs),
        }
    }

    /// The admin token, from the setting or its file.
    pub fn admin_token(&self) -> anyhow::Result<Option<SecretString>> {
        if let Some(token) = &self.api.admin_token {
            return Ok(Some(token.clone()));
        }
        match &self.api.admin_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("api.admin_token_file: cannot read {}: {e}", path.display())
                })?;
                Ok(Some(SecretString::from(text.trim().to_owned())))
            }
            None => Ok(None),
        }
    }
}
