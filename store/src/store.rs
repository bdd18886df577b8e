//! The handle to the database ([`Store`]), the embedded schema ([`MIGRATOR`]), and
//! creating the database on a fresh machine.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseConfig;
use crate::error::StoreError;
use crate::intake;
use crate::outbox::AckRules;

/// The schema, embedded in the binary; applied by `leadpipe migrate` and on start-up.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    pub(crate) held: Arc<intake::HeldBatches>,
    pub(crate) max_batch_locks: usize,
    pub(crate) acks: Arc<AckRules>,
}

impl Store {
    /// A store whose connections are opened on first use, so the daemon starts (and takes
    /// inquiries) while the database is still away.
    pub fn connect_lazy(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let options: PgConnectOptions = config
            .url
            .parse()
            .map_err(|e| StoreError::Config(format!("database.url: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
            .connect_lazy_with(options.application_name("leadpipe"));
        Ok(Self::from_pool_with_config(pool, config))
    }

    /// Wraps an existing pool (tests), with the default limits.
    pub fn from_pool(pool: PgPool) -> Self {
        Self::from_pool_with_config(pool, &DatabaseConfig::new(""))
    }

    /// Wraps an existing pool, with the limits of `config` (its URL is not used).
    pub fn from_pool_with_config(pool: PgPool, config: &DatabaseConfig) -> Self {
        Self {
            pool,
            held: Arc::new(intake::HeldBatches::new(Duration::from_secs(
                config.hold_alert_secs,
            ))),
            max_batch_locks: config.max_batch_locks,
            acks: Arc::new(AckRules::default()),
        }
    }

    /// The same store, queuing the acknowledgements `rules` ask for as it files leads.
    pub fn with_acknowledgements(self, rules: AckRules) -> Self {
        Self {
            acks: Arc::new(rules),
            ..self
        }
    }

    /// The pool, for callers in this workspace that need one (tests, tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// The server settings, as `name = value`, that keep autovacuum from analysing the
    /// tables; empty when it runs. Matching and the lists are planned from those
    /// statistics: without them the planner scans every lead for each batch's look-ups
    /// once the tables have grown.
    pub async fn statistics_upkeep_off(&self) -> Result<Vec<String>, StoreError> {
        let off: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, setting FROM pg_settings
             WHERE name IN ('autovacuum', 'track_counts') AND setting <> 'on'
             ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(off
            .into_iter()
            .map(|(name, value)| format!("{name} = {value}"))
            .collect())
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the database named in `url` if it does not exist yet (a fresh machine).
pub async fn ensure_database(url: &str) -> Result<(), StoreError> {
    use sqlx::migrate::MigrateDatabase;
    if !sqlx::Postgres::database_exists(url).await? {
        tracing::info!("Creating the database.");
        match sqlx::Postgres::create_database(url).await {
            Ok(()) => {}
            // Another replica created it meanwhile (42P04 duplicate_database).
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
