//! Builds the daemon, serves, and shuts down in order.
//!
//! Shutdown order is what makes SIGTERM lossless: first the HTTP server stops taking
//! connections and finishes the requests in flight (each waits for its broker confirm);
//! then the consumers cancel their subscriptions and store and ack what they hold; last
//! the publisher closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use ingest::forms::FormsIntake;
use router::{ConsumerSet, Publisher, Router as LeadRouter};
use store::{KeyStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::api::{ApiState, routes};
use crate::pipeline::Pipeline;
use crate::settings::Settings;

/// A built daemon, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    app: axum::Router,
    settings: Settings,
    store: Store,
    keys: KeyStore,
    publisher: Arc<Publisher>,
    tracker: TaskTracker,
    broker_stop: CancellationToken,
    consumers_stop: CancellationToken,
    schema_ready: Arc<AtomicBool>,
}

impl Application {
    /// Builds every part and binds the listener (port 0 picks a free port).
    pub async fn build(
        settings: Settings,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> anyhow::Result<Self> {
        let store = Store::connect_lazy(&settings.database)?;
        let keys = KeyStore::connect_lazy(&settings.database.url, settings.key_store_options())?;
        let publisher = Publisher::new(settings.amqp.clone());
        let pipeline = Arc::new(Pipeline::new(
            LeadRouter::new(settings.routing.clone()),
            publisher.clone(),
        ));
        let forms = Arc::new(
            FormsIntake::new(
                settings.intake.clone(),
                settings.forms.clone(),
                pipeline,
                Arc::new(keys.clone()),
            )
            .context("Failed to set up the forms")?,
        );
        let schema_ready = Arc::new(AtomicBool::new(false));
        let api = ApiState {
            schema_ready: schema_ready.clone(),
            store: store.clone(),
            publisher: publisher.clone(),
            admin_token_hash: ApiState::token_hash(settings.admin_token()?.as_ref()),
            metrics,
        };
        let app = axum::Router::new()
            .merge(forms.router())
            .merge(routes(api))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_secs(settings.http.request_timeout_secs),
            ))
            .layer(TraceLayer::new_for_http());

        let addr: SocketAddr = settings
            .http
            .listen
            .parse()
            .context("http.listen is not an address")?;
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!(
                "Cannot listen on {addr}: is another process using the port? Change http.listen"
            )
        })?;
        Ok(Self {
            listener,
            app,
            settings,
            store,
            keys,
            publisher,
            tracker: TaskTracker::new(),
            broker_stop: CancellationToken::new(),
            consumers_stop: CancellationToken::new(),
            schema_ready,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` fires, then shuts down without losing or duplicating anything.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            app,
            settings,
            store,
            keys,
            publisher,
            tracker,
            broker_stop,
            consumers_stop,
            schema_ready,
        } = self;

        // Phonenumber metadata loads lazily; pay for it before the first request.
        normalizer::phone::warm_up();

        tracker.spawn(publisher.clone().run(broker_stop.clone()));
        tracker.spawn(crate::pipeline::purge_expired_keys(
            keys.clone(),
            Duration::from_secs(settings.intake.key_purge_interval_secs),
            consumers_stop.clone(),
        ));
        {
            let store = store.clone();
            let settings_db = settings.database.clone();
            let amqp = settings.amqp.clone();
            let tracker2 = tracker.clone();
            let consumers_stop = consumers_stop.clone();
            tracker.spawn(async move {
                if settings_db.migrate_on_start
                    && !migrate_until_done(&store, &settings_db.url, &consumers_stop).await
                {
                    return;
                }
                schema_ready.store(true, Ordering::Release);
                if amqp.consume {
                    ConsumerSet::new(amqp, Arc::new(store)).spawn(&tracker2, consumers_stop);
                }
            });
        }

        let addr = listener.local_addr()?;
        tracing::info!(%addr, forms = settings.forms.len(), "Listening.");
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await
            .context("The HTTP server failed")?;
        tracing::info!("Intake stopped; finishing in-flight work.");

        consumers_stop.cancel();
        tracker.close();
        let grace = Duration::from_secs(settings.http.shutdown_grace_secs);
        // Consumers first (they may still dead-letter through their own connections), then
        // the publisher.
        let consumers_done = async {
            while tracker.len() > 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(grace, consumers_done).await.is_err() {
            tracing::warn!(
                "Consumers did not finish within the grace period; unacked messages stay on the broker."
            );
        }
        broker_stop.cancel();
        if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("The publisher did not close in time.");
        }
        store.close().await;
        keys.close().await;
        tracing::info!("Stopped.");
        Ok(())
    }
}

/// Applies migrations, retrying with backoff while the database is away. Returns false
/// when asked to stop first.
async fn migrate_until_done(store: &Store, url: &str, stop: &CancellationToken) -> bool {
    let mut backoff =
        router::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let attempt = async {
            store::ensure_database(url).await?;
            store.migrate().await
        };
        match attempt.await {
            Ok(()) => {
                tracing::info!("Database schema is up to date.");
                return true;
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "Cannot prepare the database; leads queue up on the broker until it is back.");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return false,
                }
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
