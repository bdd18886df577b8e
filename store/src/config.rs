//! The `[database]` section.

use serde::Deserialize;

/// How to reach PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    /// PostgreSQL URL, e.g. `postgres://postgres@127.0.0.1:5432/leadpipe`.
    pub url: String,
    /// Most connections the pool opens.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long to wait for a free connection before a query fails, in milliseconds.
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// Apply pending migrations when `serve` starts.
    #[serde(default = "default_true")]
    pub migrate_on_start: bool,
    /// After how many seconds a batch the database keeps refusing (read-only, a missing
    /// grant or column) is reported as an ERROR; it is held and retried, never dropped.
    #[serde(default = "default_hold_alert_secs")]
    pub hold_alert_secs: u64,
    /// Most advisory locks one transaction of a consumer batch takes; a batch that needs
    /// more is filed in several transactions, in order.
    #[serde(default = "default_max_batch_locks")]
    pub max_batch_locks: usize,
}

fn default_max_connections() -> u32 {
    10
}
fn default_acquire_timeout_ms() -> u64 {
    3_000
}
fn default_true() -> bool {
    true
}
fn default_hold_alert_secs() -> u64 {
    60
}
fn default_max_batch_locks() -> usize {
    1_000
}

impl DatabaseConfig {
    /// A configuration with defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: default_max_connections(),
            acquire_timeout_ms: default_acquire_timeout_ms(),
            migrate_on_start: true,
            hold_alert_secs: default_hold_alert_secs(),
            max_batch_locks: default_max_batch_locks(),
        }
    }

    /// Every problem with these settings, as `(key, problem)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            out.push((
                "url",
                "must start with postgres:// (e.g. postgres://postgres@127.0.0.1:5432/leadpipe)"
                    .into(),
            ));
        } else if let Err(e) = self.url.parse::<sqlx::postgres::PgConnectOptions>() {
            out.push(("url", format!("is not a valid PostgreSQL URL: {e}")));
        }
        if self.max_connections == 0 {
            out.push(("max_connections", "must be at least 1".into()));
        }
        if self.max_batch_locks < 16 {
            out.push((
                "max_batch_locks",
                "must be at least 16 (one inquiry can need a handful of locks); the default is \
                 1000"
                    .into(),
            ));
        }
        if self.hold_alert_secs == 0 {
            out.push((
                "hold_alert_secs",
                "must be at least 1 (a refused batch is always retried; this only says when \
                 to report it)"
                    .into(),
            ));
        }
        out
    }
}
