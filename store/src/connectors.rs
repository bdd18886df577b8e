//! Leases and cursors of pull connectors ([`ingest::connector::Leases`],
//! [`ingest::connector::Checkpoints`]).
//!
//! A lease is a session advisory lock held on a connection of its own, outside every
//! pool: the lock lives exactly as long as that session. A keeper pings the session
//! every [`PING_EVERY`]; when a ping fails or hangs the connection is closed and the
//! lease reported lost, so the task stops. If the holder's process dies, PostgreSQL
//! ends its session and drops the lock at once, and another replica's next attempt
//! takes it. The cursor (`connector_checkpoints`) is read and written over the same
//! session, so once the lease is gone no write can move the cursor under the new
//! holder.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ingest::connector::{Checkpoints, Lease, Leases, StateError};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::{Mutex, oneshot, watch};

use crate::StoreError;

/// The first key of every lease's two-key advisory lock: leases never share a lock with
/// the one-key locks consumer batches take.
const LEASE_CLASS: i32 = 0x4c50_0001;

/// How often a held lease's session is checked.
const PING_EVERY: Duration = Duration::from_secs(2);

/// How long a check or a cursor statement may take before the lease counts as lost.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening a lease's connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Hands out per-source leases, each on a connection of its own.
#[derive(Clone, Debug)]
pub struct ConnectorLeases {
    options: PgConnectOptions,
}

impl ConnectorLeases {
    /// Leases on the database at `url`; nothing is opened until one is asked for.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Config(format!("database.url: {e}")))?;
        Ok(Self::from_options(options))
    }

    /// Leases on the database `options` reach (tests).
    pub fn from_options(options: PgConnectOptions) -> Self {
        Self {
            options: options.application_name("leadpipe-lease"),
        }
    }
}

#[async_trait]
impl Leases for ConnectorLeases {
    async fn try_acquire(&self, source_key: &str) -> Result<Option<Box<dyn Lease>>, StateError> {
        let unavailable = |e: String| StateError::Unavailable(e);
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, self.options.connect())
            .await
            .map_err(|_| unavailable("connecting to the database timed out".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let taken = tokio::time::timeout(
            STATEMENT_TIMEOUT,
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1, hashtext($2))")
                .bind(LEASE_CLASS)
                .bind(source_key)
                .fetch_one(&mut conn),
        )
        .await
        .map_err(|_| unavailable("taking the lease timed out".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
        if !taken {
            let _ = tokio::time::timeout(STATEMENT_TIMEOUT, conn.close()).await;
            return Ok(None);
        }
        let session = Arc::new(Session {
            key: source_key.to_owned(),
            conn: Mutex::new(Some(conn)),
            lost: watch::channel(None).0,
        });
        let (release, released) = oneshot::channel();
        tokio::spawn(keep(session.clone(), released));
        Ok(Some(Box::new(PgLease {
            session,
            release: Some(release),
        })))
    }
}

/// The lease's session, shared by its keeper and its cursor.
struct Session {
    key: String,
    /// `None` once the session is closed.
    conn: Mutex<Option<PgConnection>>,
    /// Set once the lease is lost.
    lost: watch::Sender<Option<StateError>>,
}

impl Session {
    /// Closes the session (which releases the lock) and tells the holder, once.
    async fn end(&self, conn: &mut Option<PgConnection>, why: Option<String>) {
        if let Some(conn) = conn.take() {
            let _ = tokio::time::timeout(STATEMENT_TIMEOUT, conn.close()).await;
        }
        if let Some(why) = why {
            tracing::warn!(source = %self.key, %why, "A connector lost its lease; it stops until it takes the lease again.");
            self.lost
                .send_replace(Some(StateError::LeaseLost(self.key.clone())));
        }
    }
}

/// Pings the session until the lease is released, dropped or lost.
async fn keep(session: Arc<Session>, mut released: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PING_EVERY) => {}
            // Released, or the lease handle dropped without a release: close either way.
            _ = &mut released => {
                session.end(&mut *session.conn.lock().await, None).await;
                return;
            }
        }
        let mut conn = session.conn.lock().await;
        let Some(open) = conn.as_mut() else { return };
        let why = match tokio::time::timeout(STATEMENT_TIMEOUT, open.ping()).await {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => error.to_string(),
            Err(_) => "the database did not answer a check of the lease's session in time".into(),
        };
        session.end(&mut conn, Some(why)).await;
        return;
    }
}

/// A held lease on one source.
struct PgLease {
    session: Arc<Session>,
    release: Option<oneshot::Sender<()>>,
}

#[async_trait]
impl Lease for PgLease {
    fn checkpoints(&self) -> Arc<dyn Checkpoints> {
        Arc::new(LeaseCheckpoints(self.session.clone()))
    }

    async fn lost(&self) -> StateError {
        let mut lost = self.session.lost.subscribe();
        loop {
            if let Some(error) = lost.borrow_and_update().clone() {
                return error;
            }
            if lost.changed().await.is_err() {
                return StateError::LeaseLost(self.session.key.clone());
            }
        }
    }

    async fn release(mut self: Box<Self>) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
        self.session
            .end(&mut *self.session.conn.lock().await, None)
            .await;
    }
}

/// One statement on a borrowed connection.
type Statement<'c, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// The source's cursor, over the lease's session.
struct LeaseCheckpoints(Arc<Session>);

impl LeaseCheckpoints {
    /// Runs one statement on the session; a failure ends the lease, since the session's
    /// state (and so the lock) is then unknown.
    async fn on_session<T, F>(&self, statement: F) -> Result<T, StateError>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> Statement<'c, T>,
    {
        let session = &self.0;
        let mut conn = session.conn.lock().await;
        let Some(open) = conn.as_mut() else {
            return Err(StateError::LeaseLost(session.key.clone()));
        };
        let why = match tokio::time::timeout(STATEMENT_TIMEOUT, statement(open)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => error.to_string(),
            Err(_) => "a cursor statement did not finish in time".into(),
        };
        session.end(&mut conn, Some(why.clone())).await;
        Err(StateError::Unavailable(why))
    }
}

#[async_trait]
impl Checkpoints for LeaseCheckpoints {
    async fn load(&self) -> Result<Option<serde_json::Value>, StateError> {
        let key = self.0.key.clone();
        self.on_session(move |conn| {
            Box::pin(async move {
                sqlx::query_scalar::<_, serde_json::Value>(
                    "SELECT cursor FROM connector_checkpoints WHERE source_key = $1",
                )
                .bind(key)
                .fetch_optional(conn)
                .await
            })
        })
        .await
    }

    async fn save(&self, cursor: &serde_json::Value) -> Result<(), StateError> {
        let key = self.0.key.clone();
        let cursor = cursor.clone();
        self.on_session(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO connector_checkpoints (source_key, cursor) VALUES ($1, $2)
                     ON CONFLICT (source_key) DO UPDATE
                       SET cursor = excluded.cursor, updated_at = now()",
                )
                .bind(key)
                .bind(cursor)
                .execute(conn)
                .await
                .map(|_| ())
            })
        })
        .await
    }
}
