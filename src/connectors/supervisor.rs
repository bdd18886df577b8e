//! Runs pull connectors: each under its source's lease, restarted with backoff when it
//! fails, stopped when the lease is lost or the daemon stops.
//!
//! One supervisor task per pull connector loops through: wait for the schema; take the
//! lease (another replica holding it means standby, asking again every
//! [`LEASE_RETRY`] plus jitter); run the task with a context whose stop signal fires on
//! shutdown or when the lease is lost; give the lease up; after a failure wait a delay
//! that doubles from [`RESTART_FIRST`] to [`RESTART_MAX`], with jitter, so a broken
//! source is never retried in a busy loop. A run that lasted [`HEALTHY_RUN`] starts the
//! delays over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ingest::IntakeSink;
use ingest::connector::{Lease, Leases, PullConnector, PullContext, PullError};
use router::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use super::status::{Entry, Kind, State};

/// How often a standby replica asks for a lease another one holds (plus up to a quarter
/// more, so replicas do not ask in step).
pub const LEASE_RETRY: Duration = Duration::from_secs(2);

/// The delay before the first restart of a failed task.
pub const RESTART_FIRST: Duration = Duration::from_secs(1);

/// The longest delay between restarts.
pub const RESTART_MAX: Duration = Duration::from_secs(60);

/// A run this long counts as healthy: the next failure waits [`RESTART_FIRST`] again.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What every supervised task shares.
#[derive(Clone)]
pub struct Shared {
    /// Where inquiries go.
    pub sink: Arc<dyn IntakeSink>,
    /// Where leases come from.
    pub leases: Arc<dyn Leases>,
    /// Set once the schema is migrated (the cursor table exists).
    pub schema_ready: Arc<AtomicBool>,
}

/// Supervises one pull connector until `stop`; returns once its task finished what it
/// held and its lease is given up.
pub async fn supervise(connector: PullConnector, shared: Shared, stop: CancellationToken) {
    let (channel, source, name, key) = (
        connector.channel,
        connector.source.clone(),
        connector.name.clone(),
        connector.source_key(),
    );
    let entry = Entry::register(channel, &source, Some(&name), Kind::Pull, State::Starting);
    while !shared.schema_ready.load(Ordering::Acquire) {
        if pause(Duration::from_millis(200), &stop).await {
            entry.set(State::Stopped);
            return;
        }
    }
    let mut restarts = Backoff::new(RESTART_FIRST, RESTART_MAX);
    let mut standby = Backoff::new(LEASE_RETRY, LEASE_RETRY);
    loop {
        let Some(lease) = take_lease(&shared, &key, &entry, &mut standby, &stop).await else {
            break;
        };
        entry.set(State::Running);
        tracing::info!(%channel, connector = %name, %source, "Connector running: this replica holds its lease.");
        let started = Instant::now();
        let outcome = run_once(&connector, &shared, lease.as_ref(), &entry, &stop).await;
        lease.release().await;
        let error = match outcome {
            Ok(()) if stop.is_cancelled() => break,
            Ok(()) => "the task ended without being asked to stop".to_owned(),
            Err(error) => error.to_string(),
        };
        if stop.is_cancelled() {
            tracing::warn!(%channel, connector = %name, %source, %error, "Connector failed while stopping; it resumes from its last cursor on the next start.");
            break;
        }
        if started.elapsed() >= HEALTHY_RUN {
            restarts.reset();
        }
        let delay = restarts.next_delay();
        entry.failed(&error);
        tracing::warn!(%channel, connector = %name, %source, %error, retry_in = ?delay, "Connector failed; restarting it from its last cursor after a delay.");
        if pause(delay, &stop).await {
            break;
        }
    }
    entry.set(State::Stopped);
    tracing::info!(%channel, connector = %name, %source, "Connector stopped.");
}

/// Takes the source's lease, waiting in standby while another replica holds it; `None`
/// when asked to stop first.
async fn take_lease(
    shared: &Shared,
    key: &str,
    entry: &Entry,
    standby: &mut Backoff,
    stop: &CancellationToken,
) -> Option<Box<dyn Lease>> {
    let mut unavailable = Backoff::new(RESTART_FIRST, RESTART_MAX);
    loop {
        let delay = match shared.leases.try_acquire(key).await {
            Ok(Some(lease)) => return Some(lease),
            Ok(None) => {
                entry.set(State::Standby);
                standby.next_delay()
            }
            Err(error) => {
                let delay = unavailable.next_delay();
                tracing::warn!(source = %key, %error, retry_in = ?delay, "Cannot ask for a connector's lease; asking again later.");
                delay
            }
        };
        if pause(delay, stop).await {
            return None;
        }
    }
}

/// One run of the task, stopped early when the lease is lost.
async fn run_once(
    connector: &PullConnector,
    shared: &Shared,
    lease: &dyn Lease,
    entry: &Entry,
    stop: &CancellationToken,
) -> Result<(), PullError> {
    let run_stop = stop.child_token();
    let ctx = PullContext::new(
        connector.channel,
        connector.source.clone(),
        connector.name.clone(),
        shared.sink.clone(),
        lease.checkpoints(),
        run_stop.clone(),
    );
    let run = connector.task.run(ctx);
    tokio::pin!(run);
    let stopping = async {
        stop.cancelled().await;
        entry.set(State::Stopping);
        std::future::pending().await
    };
    tokio::select! {
        outcome = &mut run => outcome,
        never = stopping => never,
        lost = lease.lost() => {
            // Another replica may take the source now: stop taking work, finish what is
            // held (its commit fails, so the new holder re-reads it and the ids make
            // that a no-op).
            run_stop.cancel();
            let _ = run.await;
            Err(PullError::State(lost))
        }
    }
}

/// Waits `delay`; true when asked to stop first.
async fn pause(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.cancelled() => true,
    }
}
