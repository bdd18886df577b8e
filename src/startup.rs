//! Builds the daemon, runs it, and shuts down in stages.
//!
//! Stopping goes through explicit stages, each waiting on the parts it names and each
//! part against its own deadline:
//! 1. **Stop taking work.** The HTTP server closes its listener and its idle
//!    connections, pull connectors are told to stop, consumers cancel their
//!    subscriptions.
//! 2. **Finish what is held.** Requests in flight finish, each waiting for its broker
//!    confirm (`http.shutdown_grace_secs`); pull connectors publish what they fetched and
//!    commit their cursors (`shutdown.connector_grace_secs`); consumers store and ack
//!    what they received (`shutdown.consumer_grace_secs`). Consumers drain beside
//!    intake, not after it: nothing intake still publishes needs this replica's
//!    consumers (it waits on the broker), and a slow client must not hold them.
//! 3. **Empty the spool** while the broker confirms (`shutdown.connector_grace_secs`);
//!    what is left stays on disk for the next start.
//! 4. **Close the publisher**, once intake is done: no request or pull task can still be
//!    waiting for a confirm, which is what makes SIGTERM lossless.
//! 5. **Close the database pools.**

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use ingest::Channel;
use ingest::connector::{Connector, Deps, Leases, PullConnector};
use router::spool::Spool;
use router::{ConsumerSet, LeadRouter, Publisher};
use store::{ConnectorLeases, KeyStore, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;

use crate::api::{ApiState, application};
use crate::connectors::status::{Entry, Kind, State};
use crate::connectors::supervisor;
use crate::pipeline::Pipeline;
use crate::replies::{ReplyChannels, ReplyPolicy};
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
    spool: Option<Arc<Spool>>,
    serve_options: ServeOptions,
    schema_ready: Arc<AtomicBool>,
    /// The channel and source of every HTTP connector.
    http_sources: Vec<(Channel, String)>,
    pulls: Vec<PullConnector>,
    pull_shared: supervisor::Shared,
    replies: Arc<ReplyChannels>,
    reply_policy: ReplyPolicy,
}

impl Application {
    /// Builds every part and binds the listener (port 0 picks a free port).
    pub async fn build(
        settings: Settings,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> anyhow::Result<Self> {
        let replies = ReplyChannels::from_settings(&settings);
        Self::build_with_replies(settings, metrics, replies, ReplyPolicy::default()).await
    }

    /// Builds every part, sending chat replies through `replies` with `policy`.
    pub async fn build_with_replies(
        settings: Settings,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
        replies: ReplyChannels,
        reply_policy: ReplyPolicy,
    ) -> anyhow::Result<Self> {
        let replies = Arc::new(replies);
        let store =
            Store::connect_lazy(&settings.database)?.with_acknowledgements(settings.ack_rules());
        let keys = KeyStore::connect_lazy(&settings.database.url, settings.key_store_options())?;
        let leases: Arc<dyn Leases> = Arc::new(ConnectorLeases::new(&settings.database.url)?);
        let publisher = Publisher::new(settings.amqp.clone());
        let pipeline = || -> anyhow::Result<Pipeline> {
            Ok(
                Pipeline::new(LeadRouter::new(settings.routing.clone()), publisher.clone())
                    .with_key_rules(settings.key_rules()?),
            )
        };
        let spool = if settings.spool.enabled {
            let dir = settings.spool.dir_for(&settings.http.listen);
            Some(Spool::open(&settings.spool, &dir).map_err(|error| match error {
                router::spool::SpoolError::InUse(_) => anyhow::anyhow!("Cannot start: {error}"),
                other => anyhow::anyhow!(
                    "Cannot open the spool directory {}: {other}; fix spool.dir or its permissions",
                    dir.display()
                ),
            })?)
        } else {
            None
        };
        // Web intake falls back to the spool; pull connectors do not need it (they do
        // not move their cursor until the broker confirmed).
        let web_pipeline = match &spool {
            Some(spool) => pipeline()?.with_spool(spool.clone()),
            None => pipeline()?,
        };
        let pipeline = Arc::new(pipeline()?);
        let deps = Deps {
            intake: settings.intake.clone(),
            sink: Arc::new(web_pipeline),
            keys: Arc::new(keys.clone()),
        };
        let connectors = settings
            .connectors
            .build(&deps)
            .map_err(|problem| anyhow::anyhow!("Failed to set up the connectors: {problem}"))?;
        let mut intake = Vec::new();
        let (mut http_sources, mut pulls) = (Vec::new(), Vec::new());
        for connector in connectors {
            match connector {
                Connector::Http(http) => {
                    http_sources.extend(http.sources.into_iter().map(|s| (http.channel, s)));
                    intake.push(*http.routes);
                }
                Connector::Pull(pull) => pulls.push(pull),
            }
        }
        let schema_ready = Arc::new(AtomicBool::new(false));
        let api = ApiState {
            schema_ready: schema_ready.clone(),
            store: store.clone(),
            publisher: publisher.clone(),
            spool: spool.clone(),
            admin_token_hash: ApiState::token_hash(settings.admin_token()?.as_ref()),
            metrics,
            key_rules: Arc::new(settings.key_rules()?),
            replies: replies.clone(),
            junk_reasons: Arc::new(settings.leads.junk_reasons.clone()),
        };
        let app = application(api, intake)
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_secs(settings.http.request_timeout_secs),
                crate::server::request_deadline,
            ))
            .layer(TraceLayer::new_for_http().on_failure(crate::server::log_server_error));

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
        let pull_shared = supervisor::Shared {
            sink: pipeline,
            leases,
            schema_ready: schema_ready.clone(),
        };
        Ok(Self {
            listener,
            app,
            settings,
            store,
            keys,
            publisher,
            spool,
            serve_options,
            schema_ready,
            http_sources,
            pulls,
            pull_shared,
            replies,
            reply_policy,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` fires, then shuts down in stages without losing or
    /// duplicating anything.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            app,
            settings,
            store,
            keys,
            publisher,
            spool,
            serve_options,
            schema_ready,
            http_sources,
            pulls,
            pull_shared,
            replies,
            reply_policy,
        } = self;

        // Phonenumber metadata loads lazily; pay for it before the first request.
        normalizer::phone::warm_up();

        // One token and tracker per part that stops on its own schedule.
        let broker = TaskTracker::new();
        let broker_stop = CancellationToken::new();
        broker.spawn(publisher.clone().run(broker_stop.clone()));
        if let Some(spool) = &spool {
            broker.spawn(spool.clone().drain(publisher.clone(), broker_stop.clone()));
        }

        let consumers = TaskTracker::new();
        let consumers_stop = CancellationToken::new();
        consumers.spawn(crate::memory::trim_periodically(
            Duration::from_secs(10),
            consumers_stop.clone(),
        ));
        // Key upkeep is database work in the background: it stops with the consumers.
        consumers.spawn(crate::pipeline::purge_expired_keys(
            keys.clone(),
            Duration::from_secs(settings.intake.key_purge_interval_secs),
            consumers_stop.clone(),
        ));
        {
            let store = store.clone();
            let settings_db = settings.database.clone();
            let settings_pipelines = settings.pipelines.clone();
            let amqp = settings.amqp.clone();
            let consumers_inner = consumers.clone();
            let consumers_stop = consumers_stop.clone();
            // Sending mail is database work beside the consumers, once the schema is ready.
            let sender = settings
                .smtp
                .as_ref()
                .map(|smtp| crate::mail::Sender::new(store.clone(), smtp))
                .transpose()?;
            let reply_sender =
                crate::replies::ReplySender::new(store.clone(), replies, reply_policy)?;
            // The stale-lead digest and the abandon rule, when `[digest]` asks for either.
            let digest = match &settings.digest {
                Some(section) => {
                    let from = settings.smtp.as_ref().map_or("", |s| s.from.as_str());
                    let plan = crate::digest::DigestPlan::new(section, from)?;
                    (plan.enabled && settings.smtp.is_some() || plan.abandon.is_some())
                        .then(|| crate::digest::Scheduler::new(store.clone(), plan))
                }
                None => None,
            };
            consumers.spawn(async move {
                if settings_db.migrate_on_start
                    && !migrate_until_done(&store, &settings_db.url, &consumers_stop).await
                {
                    return;
                }
                warn_if_statistics_go_stale(&store).await;
                if !settings_pipelines.is_empty() {
                    sync_pipelines(&store, &settings_pipelines).await;
                }
                schema_ready.store(true, Ordering::Release);
                if let Some(sender) = sender {
                    consumers_inner.spawn(sender.run(consumers_stop.clone()));
                }
                consumers_inner.spawn(reply_sender.run(consumers_stop.clone()));
                if let Some(digest) = digest {
                    consumers_inner.spawn(digest.run(consumers_stop.clone()));
                }
                if amqp.consume {
                    ConsumerSet::new(amqp, Arc::new(store)).spawn(&consumers_inner, consumers_stop);
                }
            });
        }

        let intake_stop = CancellationToken::new();
        let pull_tasks = TaskTracker::new();
        let pull_count = pulls.len();
        for pull in pulls {
            pull_tasks.spawn(supervisor::supervise(
                pull,
                pull_shared.clone(),
                intake_stop.clone(),
            ));
        }
        pull_tasks.close();
        let http_entries: Vec<Entry> = http_sources
            .iter()
            .map(|(channel, source)| {
                Entry::register(*channel, source, None, Kind::Http, State::Running)
            })
            .collect();

        let addr = listener.local_addr()?;
        tracing::info!(%addr, http_sources = http_entries.len(), pull_connectors = pull_count, "Listening.");

        let signal = async {
            stop.cancelled().await;
            tracing::info!("Stopping: intake and consumers stop taking work.");
            intake_stop.cancel();
            consumers_stop.cancel();
            for entry in &http_entries {
                entry.set(State::Stopping);
            }
        };
        let http = async {
            crate::server::serve(listener, app, serve_options, intake_stop.clone()).await;
            for entry in &http_entries {
                entry.set(State::Stopped);
            }
        };
        let connector_grace = Duration::from_secs(settings.shutdown.connector_grace_secs);
        let pull = async {
            intake_stop.cancelled().await;
            if tokio::time::timeout(connector_grace, pull_tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    "Pull connectors did not finish within shutdown.connector_grace_secs; what they had not committed is read again on the next start."
                );
            }
        };
        let spool_grace = Duration::from_secs(settings.shutdown.connector_grace_secs);
        let intake = async {
            tokio::join!(http, pull);
            tracing::info!("Intake stopped.");
            // What the spool holds goes to the broker now if it can, so a stop leaves
            // nothing for the next start to publish; what cannot stays on disk for it.
            if let Some(spool) = &spool {
                let flushed = tokio::time::timeout(spool_grace, async {
                    while !spool.is_empty() && publisher.is_ready().await {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
                if flushed.is_err() {
                    tracing::warn!(
                        "The spool did not empty within shutdown.connector_grace_secs; the next start publishes the rest."
                    );
                }
            }
        };
        let consumer_grace = Duration::from_secs(settings.shutdown.consumer_grace_secs);
        let consumers_done = async {
            consumers_stop.cancelled().await;
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
        tokio::join!(signal, intake, consumers_done);

        // Only now can nothing still be waiting for a confirm.
        tracing::info!("Closing the broker connection.");
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
        if let Some(spool) = spool {
            let depth = spool.depth();
            if depth.entries > 0 {
                tracing::warn!(
                    entries = depth.entries,
                    "Stopping with entries in the spool; the next start publishes them."
                );
            }
            spool.close().await;
        }
        tracing::info!("Stopped.");
        Ok(())
    }
}

/// Builds the daemon from `settings` and serves until SIGTERM or SIGINT.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let metrics = crate::telemetry::init_metrics()?;
    let app = Application::build(settings, metrics.clone()).await?;
    let stop = CancellationToken::new();
    // The recorder keeps every histogram sample until it is folded into the buckets, and
    // only rendering `/metrics` or an upkeep does that: without one, a daemon nobody
    // scrapes would grow by a sample for each request and each stored batch.
    let upkeep_stop = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => metrics.run_upkeep(),
                _ = upkeep_stop.cancelled() => break,
            }
        }
    });
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("Stop signal received.");
        trigger.cancel();
    });
    app.run_until_stopped(stop).await
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

/// Says so once at start-up when PostgreSQL will not keep the planner's statistics
/// current: the store keeps working, but slows down as the tables grow.
async fn warn_if_statistics_go_stale(store: &Store) {
    match store.statistics_upkeep_off().await {
        Ok(off) if !off.is_empty() => tracing::warn!(
            settings = %off.join(", "),
            "PostgreSQL's autovacuum does not run, so the tables' statistics go stale and \
             filing leads slows down as they grow; turn it on in postgresql.conf, or run \
             ANALYZE on the leadpipe database every few minutes."
        ),
        Ok(_) => {}
        Err(error) => tracing::debug!(%error, "Could not read PostgreSQL's autovacuum settings."),
    }
}

/// Runs `round` every `period` until `stop`, the first time one period after the start
/// (at start the schema may still be migrating); a round that overruns delays the next
/// rather than bunching them.
pub(crate) async fn run_every<F, Fut>(period: Duration, stop: CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        round().await;
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

/// Brings the stored pipelines in line with `[[pipelines]]`; what an operator must see
/// (a stage still holding leads, a kind that cannot change) is logged. A failure is
/// logged and the stored pipelines stay as they were.
async fn sync_pipelines(store: &Store, pipelines: &[store::PipelineSpec]) {
    match store.sync_pipelines(pipelines).await {
        Ok(notes) => {
            for note in notes {
                tracing::warn!(%note, "A configured pipeline differs from the stored one.");
            }
        }
        Err(error) => tracing::error!(
            %error,
            "Failed to apply [[pipelines]] to the database; the stored pipelines stay as they were."
        ),
    }
}
