//! Logs and metrics.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::LogFormat;

/// Installs the global log subscriber; `RUST_LOG` overrides `level`.
pub fn init_logs(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // A second initialisation (tests) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Human => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// Installs the Prometheus recorder and returns the handle `/metrics` renders.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let latency_buckets = [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "leadpipe_inquiries_received_total",
        "Inquiries that reached a connector, by channel and source."
    );
    describe_counter!(
        "leadpipe_inquiries_rejected_total",
        "Inquiries refused at intake, by channel, source and reason."
    );
    describe_counter!(
        "leadpipe_http_request_timeouts_total",
        "Requests answered 503 because they took longer than http.request_timeout_secs."
    );
    describe_counter!(
        "leadpipe_inquiries_spam_total",
        "Inquiries recognised as spam at intake (kept, never a lead)."
    );
    describe_counter!(
        "leadpipe_inquiries_published_total",
        "Inquiries the broker confirmed."
    );
    describe_counter!(
        "leadpipe_inquiries_stored_total",
        "Inquiries committed to PostgreSQL, by outcome (lead_created, replay, duplicate, spam)."
    );
    describe_counter!(
        "leadpipe_dead_lettered_total",
        "Messages moved to the dead-letter queue because they can never be stored."
    );
    describe_gauge!(
        "leadpipe_broker_blocked",
        "1 while RabbitMQ blocks the publisher's connection (a memory or disk alarm): web posts go to the spool."
    );
    describe_gauge!(
        "leadpipe_queue_messages",
        "Messages waiting in each queue (consumer lag in messages)."
    );
    describe_gauge!(
        "leadpipe_consumer_lag_seconds",
        "Age of the oldest message in the last batch a consumer stored."
    );
    describe_gauge!(
        "leadpipe_store_held_seconds",
        "How long the database has been refusing the longest-held batch (0 when none is held)."
    );
    describe_histogram!(
        "leadpipe_intake_seconds",
        "Time from a parsed inquiry to the broker's confirm."
    );
    describe_histogram!(
        "leadpipe_store_batch_seconds",
        "Time to store and commit one batch."
    );
    describe_histogram!(
        "leadpipe_store_turn_wait_seconds",
        "Time a batch waited for its turn at the store (amqp.steady_batches; 0 for full batches)."
    );
    describe_gauge!(
        "leadpipe_http_connections_open",
        "HTTP connections open now (at most http.max_connections)."
    );
    describe_counter!(
        "leadpipe_http_connection_limit_reached_total",
        "Times the server stopped accepting because http.max_connections were open."
    );
    describe_counter!(
        "leadpipe_http_header_timeouts_total",
        "Connections closed because a request's headers did not arrive within http.header_read_timeout_secs (including idle keep-alive connections)."
    );
    describe_counter!(
        "leadpipe_http_accept_errors_total",
        "Failed accepts (e.g. out of file descriptors); the server backs off on them."
    );
    describe_gauge!(
        "leadpipe_rate_limit_sources",
        "Client addresses the form rate limits currently remember."
    );
}
