//! Builds the daemon, runs it, and shuts down in order.
//!
//! On stop two things happen at once, each against its own deadline: the HTTP server
//! stops taking connections and finishes the requests in flight (each waits for its broker
//! confirm, `http.shutdown_grace_secs`), and the consumers cancel their subscriptions and
//! store and ack what they hold (`shutdown.consumer_grace_secs`). Consumers do not need
//! HTTP, so a slow client cannot keep them running. The publisher closes last, once no
//! request can still be answered 202: that order is what makes SIGTERM lossless.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use ingest::forms::FormsIntake;
use router::{ConsumerSet, LeadRouter, Publisher};
use store::{KeyStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;

use crate::api::{ApiState, routes};
use crate::pipeline::Pipeline;
use crate::server::ServeOptions;
use crate::settings::Settings;

/// A built daemon, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    app: axum::Router,
    settings: Settings,
    store: Store,
    keys: KeyStore,
    publisher: Arc<Publisher>,
    serve_options: ServeOptions,
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
        let pipeline = Arc::new(
            Pipeline::new(LeadRouter::new(settings.routing.clone()), publisher.clone())
                .with_key_rules(settings.key_rules()?),
        );
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
            key_rules: Arc::new(settings.key_rules()?),
        };
        let app = axum::Router::new()
            .merge(forms.router())
            .merge(routes(api))
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_secs(settings.http.request_timeout_secs),
                crate::server::request_deadline,
            ))
            .layer(TraceLayer::new_for_http());

        let serve_options = ServeOptions::from_settings(&settings.http)?;
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
            serve_options,
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
            serve_options,
            schema_ready,
        } = self;

        // Phonenumber metadata loads lazily; pay for it before the first request.
        normalizer::phone::warm_up();

        // One tracker per part that stops on its own schedule.
        let broker = TaskTracker::new();
        let broker_stop = CancellationToken::new();
        broker.spawn(publisher.clone().run(broker_stop.clone()));

        let consumers = TaskTracker::new();
        let consumers_stop = CancellationToken::new();
        // Key upkeep is database work in the background: it stops with the consumers.
        consumers.spawn(crate::pipeline::purge_expired_keys(
            keys.clone(),
            Duration::from_secs(settings.intake.key_purge_interval_secs),
            consumers_stop.clone(),
        ));
        {
            let store = store.clone();
            let settings_db = settings.database.clone();
            let amqp = settings.amqp.clone();
            let consumers_inner = consumers.clone();
            let consumers_stop = consumers_stop.clone();
            consumers.spawn(async move {
                if settings_db.migrate_on_start
                    && !migrate_until_done(&store, &settings_db.url, &consumers_stop).await
                {
                    return;
                }
                schema_ready.store(true, Ordering::Release);
                if amqp.consume {
                    ConsumerSet::new(amqp, Arc::new(store)).spawn(&consumers_inner, consumers_stop);
                }
            });
        }

        let addr = listener.local_addr()?;
        tracing::info!(%addr, forms = settings.forms.len(), "Listening.");
        let http = crate::server::serve(listener, app, serve_options, stop.clone());
        let consumer_grace = Duration::from_secs(settings.shutdown.consumer_grace_secs);
        let consumers_done = async {
            stop.cancelled().await;
            consumers_stop.cancel();
            consumers.close();
            if tokio::time::timeout(consumer_grace, consumers.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "Consumers did not finish within shutdown.consumer_grace_secs; unacked messages stay on the broker."
                );
            } else {
                tracing::info!("Consumers stopped.");
            }
        };
        tokio::join!(http, consumers_done);
        tracing::info!("Intake stopped; closing the broker connection.");

        // Only now can no request still be waiting for a confirm.
        broker_stop.cancel();
        broker.close();
        if tokio::time::timeout(Duration::from_secs(10), broker.wait())
            .await
            .is_err()
        {
            tracing::warn!("The publisher did not close in time.");
        }
        // A consumer past its deadline may still hold a database connection.
        if tokio::time::timeout(Duration::from_secs(5), store.close())
            .await
            .is_err()
        {
            tracing::warn!("The database pool did not close in time.");
        }
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
