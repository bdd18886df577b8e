//! Serving HTTP so that slow or abusive clients cannot hold the daemon.
//!
//! axum's own `serve` runs hyper without a timer, which leaves hyper's header-read timeout
//! off, and accepts every connection offered. Here each connection is served by hyper's
//! HTTP/1 server with a timer:
//! - a request's headers must arrive within `http.header_read_timeout_secs`; the clock
//!   starts whenever the server waits for a request, so it also closes idle keep-alive
//!   connections;
//! - at most `http.max_connections` connections are open; past that the server stops
//!   accepting and new connections wait in the kernel's listen backlog;
//! - accept errors such as running out of file descriptors back off instead of spinning;
//! - on stop the listener closes, idle connections close, requests in flight get
//!   `http.shutdown_grace_secs` to finish, and whatever is left is then closed.
//!
//! Every request carries the peer address (`ConnectInfo<SocketAddr>`) and the client
//! address ([`ClientAddr`]): the peer, or the address a trusted proxy forwarded in
//! `X-Forwarded-For`.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ingest::rate_limit::ClientAddr;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::settings::HttpSettings;

/// Logs a request that ended in a server error: a 503 at WARN, since it is a refusal
/// the client is told to retry (the broker or the database is away, the daemon is
/// starting, a request ran out of time) and readiness probes meet it on every poll while
/// the daemon is not ready; any other server error at ERROR.
pub fn log_server_error(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass;
    let latency_ms = latency.as_millis() as u64;
    match class {
        ServerErrorsFailureClass::StatusCode(axum::http::StatusCode::SERVICE_UNAVAILABLE) => {
            tracing::warn!(latency_ms, "Answered 503: the request was refused for now.")
        }
        other => tracing::error!(classification = %other, latency_ms, "The request failed."),
    }
}

/// Answers `503 timeout` with the usual JSON error body when a request (its body
/// included) is not answered within `http.request_timeout_secs`. The work is dropped at
/// that point; a form post it cut short may still have been confirmed, so the client
/// retries with the same `Idempotency-Key`.
pub async fn request_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("leadpipe_http_request_timeouts_total").increment(1);
            let mut problem = ingest::problem::Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request was not answered within {} s (http.request_timeout_secs): \
                     send it again, with the same Idempotency-Key if it had one",
                    limit.as_secs()
                ),
            );
            problem.retry_after_secs = Some(1);
            problem.into_response()
        }
    }
}

/// File descriptors kept back from HTTP connections for the database and broker
/// connections, log files and the listener.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Largest buffered request head (and write buffer) per connection: bounds memory per
/// connection, and a larger head is answered 431.
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;

/// At most one warning a minute about the connection limit: under a flood it is reached
/// on every accept.
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How the server treats its connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long a client may take to send a request's headers (or stay idle between
    /// requests).
    pub header_read_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// On stop, how long requests in flight may take before their connections close.
    pub shutdown_grace: Duration,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
}

impl ServeOptions {
    /// The options of the `[http]` section (validated when the settings were loaded).
    pub fn from_settings(http: &HttpSettings) -> anyhow::Result<Self> {
        let trusted_proxies = TrustedProxies::parse(&http.trusted_proxies).map_err(|bad| {
            let listed: Vec<String> = bad.into_iter().map(|(_, problem)| problem).collect();
            anyhow::anyhow!("http.trusted_proxies: {}", listed.join("; "))
        })?;
        Ok(Self {
            header_read_timeout: Duration::from_secs(http.header_read_timeout_secs),
            max_connections: http.max_connections,
            shutdown_grace: Duration::from_secs(http.shutdown_grace_secs),
            trusted_proxies,
        })
    }
}

/// The networks whose peers are trusted to say, in `X-Forwarded-For`, who the client is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.7`) and networks (`10.0.0.0/8`, `fd00::/8`); every bad
    /// entry is returned with its position.
    pub fn parse(entries: &[String]) -> Result<Self, Vec<(usize, String)>> {
        let mut nets = Vec::with_capacity(entries.len());
        let mut problems = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let text = entry.trim();
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => nets.push(net),
                Err(_) => problems.push((
                    index,
                    format!(
                        "`{entry}` is not an IP address or a network like 10.0.0.0/8 or fd00::/8"
                    ),
                )),
            }
        }
        if problems.is_empty() {
            Ok(Self(nets.into()))
        } else {
            Err(problems)
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`: `peer` itself unless it is a trusted proxy; then the
    /// nearest address in `X-Forwarded-For` that is not a trusted proxy. Proxies append
    /// the address they saw, so the list is read from the right; anything to the left of
    /// the first untrusted address was written by the client and is ignored.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let values: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
        for value in values.into_iter().rev() {
            let Ok(text) = value.to_str() else {
                return client;
            };
            for hop in text.rsplit(',') {
                let Some(ip) = forwarded_ip(hop) else {
                    // A hop we cannot read ends the chain at the last one we trust.
                    return client;
                };
                client = ip;
                if !self.trusts(ip) {
                    return ip;
                }
            }
        }
        client
    }
}

/// One `X-Forwarded-For` hop: an address, optionally with a port (`[v6]:port`, `v4:port`).
fn forwarded_ip(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Serves `app` on `listener` until `stop` fires, then drains; returns when every
/// connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    options: ServeOptions,
    stop: CancellationToken,
) {
    let limit = effective_connection_limit(options.max_connections, open_file_limit());
    if limit < options.max_connections {
        tracing::warn!(
            configured = options.max_connections,
            serving = limit,
            "http.max_connections is more than the open-file limit allows; serving fewer connections so the database and broker connections still fit. Raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) or lower http.max_connections."
        );
    }
    let slots = Arc::new(Semaphore::new(limit));
    let connections = TaskTracker::new();
    let abort = CancellationToken::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_CONNECTION_BUFFER);
    let mut backoff =
        router::backoff::Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    let mut last_limit_warning: Option<Instant> = None;

    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                metrics::counter!("leadpipe_http_connection_limit_reached_total").increment(1);
                if last_limit_warning.is_none_or(|at| at.elapsed() >= LIMIT_WARNING_EVERY) {
                    last_limit_warning = Some(Instant::now());
                    tracing::warn!(
                        limit,
                        "The connection limit is reached; new connections wait in the listen backlog until others close."
                    );
                }
                tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                    _ = stop.cancelled() => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    metrics::counter!("leadpipe_http_accept_errors_total").increment(1);
                    if is_connection_error(&error) {
                        // That one client is gone; the listener is fine.
                        tracing::debug!(%error, "A connection failed while being accepted.");
                        continue;
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?delay, "Cannot accept connections; backing off.");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            },
            _ = stop.cancelled() => break,
        };
        backoff.reset();
        // Answers are small; do not hold them back waiting for the client's ACK.
        let _ = stream.set_nodelay(true);
        let service = ConnectionService {
            app: app.clone(),
            peer,
            proxies: options.trusted_proxies.clone(),
        };
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let slot = Slot::open(permit);
        let (stop, abort) = (stop.clone(), abort.clone());
        connections.spawn(async move {
            let _slot = slot;
            tokio::pin!(connection);
            let mut draining = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            if error.is_timeout() {
                                metrics::counter!("leadpipe_http_header_timeouts_total").increment(1);
                                tracing::debug!(%peer, "Closed a connection that did not send its request headers in time.");
                            } else {
                                tracing::debug!(%peer, %error, "A connection ended with an error.");
                            }
                        }
                        return;
                    }
                    // Finish the request in flight, if any, then close; idle ones close now.
                    _ = stop.cancelled(), if !draining => {
                        connection.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    _ = abort.cancelled() => return,
                }
            }
        });
    }

    drop(listener);
    connections.close();
    tracing::info!(
        open = connections.len(),
        "Stopped accepting connections; finishing requests in flight."
    );
    if tokio::time::timeout(options.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "Connections still open at the end of http.shutdown_grace_secs are closed: slow clients, or requests that did not finish in time (those were not answered)."
        );
        abort.cancel();
        connections.wait().await;
    }
}

/// The per-connection service: adds the peer and client addresses to each request and
/// hands it to the router.
#[derive(Clone)]
struct ConnectionService {
    app: axum::Router,
    peer: SocketAddr,
    proxies: TrustedProxies,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let client = self.proxies.client(self.peer.ip(), request.headers());
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(ClientAddr(client));
        let mut app = self.app.clone();
        tower_service::Service::call(&mut app, request)
    }
}

/// A connection's place under the limit; counted in the open-connections gauge while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn open(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("leadpipe_http_connections_open").increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("leadpipe_http_connections_open").decrement(1.0);
    }
}

/// True for errors that concern one connection only (the listener itself is fine);
/// anything else, such as running out of descriptors or memory, calls for a pause.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// The soft limit on open files, where the system tells it (Linux).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The connection limit that fits under the open-file limit with room for the daemon's
/// own descriptors.
fn effective_connection_limit(configured: usize, open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else {
        return configured;
    };
    let usable = open_files
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(open_files / 2)
        .max(1);
    configured.min(usize::try_from(usable).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        headers
    }

    fn proxies(entries: &[&str]) -> TrustedProxies {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        TrustedProxies::parse(&entries).expect("valid proxies")
    }

    #[test]
    fn a_forwarded_header_counts_only_from_a_trusted_proxy() {
        let trusted = proxies(&["10.0.0.0/8", "fd00::1"]);
        let header = forwarded(&["198.51.100.7"]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &header), ip("198.51.100.7"));
        assert_eq!(trusted.client(ip("fd00::1"), &header), ip("198.51.100.7"));
        assert_eq!(trusted.client(ip("192.0.2.1"), &header), ip("192.0.2.1"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.1.2.3"), &header),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop_and_what_it_wrote_itself_is_ignored() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // The client claimed 203.0.113.50; the outer proxy saw 198.51.100.7; an inner
        // proxy 10.0.0.2 passed it on.
        let header = forwarded(&["203.0.113.50, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &header), ip("198.51.100.7"));
        // Ports and brackets as some proxies write them; mapped IPv4 is IPv4.
        let header = forwarded(&["[2001:db8::5]:4711"]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &header), ip("2001:db8::5"));
        let header = forwarded(&["198.51.100.9:80"]);
        assert_eq!(
            trusted.client(ip("::ffff:10.0.0.1"), &header),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn an_unreadable_or_missing_forwarded_header_leaves_the_last_trusted_hop() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        let header = forwarded(&["198.51.100.7, garbage, 10.0.0.3"]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &header), ip("10.0.0.3"));
    }

    #[test]
    fn trusted_proxies_take_addresses_and_networks_and_name_bad_entries() {
        let entries: Vec<String> = ["10.0.0.1", "10.0.0.0/8", "fd00::/8", "proxy", "10.0.0.0/33"]
            .iter()
            .map(|e| e.to_string())
            .collect();
        let bad: Vec<usize> = TrustedProxies::parse(&entries)
            .expect_err("two bad entries")
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(bad, [3, 4]);
    }

    #[test]
    fn the_connection_limit_leaves_descriptors_for_the_daemon() {
        assert_eq!(effective_connection_limit(4096, None), 4096);
        assert_eq!(effective_connection_limit(4096, Some(65536)), 4096);
        assert_eq!(effective_connection_limit(4096, Some(1024)), 768);
        assert_eq!(effective_connection_limit(4096, Some(300)), 150);
        assert_eq!(effective_connection_limit(10, Some(0)), 1);
    }

    #[test]
    fn only_errors_of_one_connection_are_retried_at_once() {
        assert!(is_connection_error(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        // EMFILE: out of file descriptors.
        assert!(!is_connection_error(&io::Error::from_raw_os_error(24)));
        assert!(!is_connection_error(&io::Error::from(
            io::ErrorKind::OutOfMemory
        )));
    }
}
