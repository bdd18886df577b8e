//! Slow and abusive clients: header-read timeout, connection limit, rate limits, and a
//! SIGTERM that neither waits on trickling connections nor loses an acknowledged post.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::support::{Options, TestDaemon, temp_file};

const URLENCODED: &str = "application/x-www-form-urlencoded";

/// The start of a request whose headers never end.
const PARTIAL_HEAD: &[u8] =
    b"POST /v1/intake/forms/en-contact HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

fn socket_addr(daemon: &TestDaemon) -> SocketAddr {
    daemon
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the daemon's address")
}

/// A client that opens a new connection for every request (no pooled connection to be
/// cut by the daemon's idle limit between requests), optionally from a given loopback
/// address.
fn fresh_client(from: Option<IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .local_address(from)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// Opens a connection, sends a request head that never ends, and adds one byte to it every
/// `every`. Resolves to true once the daemon closes the connection, false at `give_up`.
/// `connected` counts connections whose first bytes are sent.
async fn trickle(
    addr: SocketAddr,
    every: Duration,
    give_up: Duration,
    connected: Arc<AtomicUsize>,
) -> bool {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(PARTIAL_HEAD).await.expect("write");
    connected.fetch_add(1, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + give_up;
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                // The daemon may answer before closing; keep reading until it closes.
                Ok(n) if n > 0 => continue,
                _ => return true,
            },
            _ = tokio::time::sleep(every) => {
                if stream.write_all(b"a").await.is_err() {
                    return true;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

/// Starts `n` trickling connections and waits until each has sent its first bytes.
async fn start_trickles(
    addr: SocketAddr,
    n: usize,
    every: Duration,
    give_up: Duration,
) -> JoinSet<bool> {
    let connected = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..n {
        set.spawn(trickle(addr, every, give_up, connected.clone()));
    }
    while connected.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    set
}

/// A complete urlencoded POST to `form` on a raw connection.
fn raw_post(form: &str, body: &str) -> String {
    format!(
        "POST /v1/intake/forms/{form} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {URLENCODED}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads until the end of the first response's head; returns what was read.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "the connection closed early: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The sum of every sample of a metric whose line contains all of `labels`.
async fn metric(daemon: &TestDaemon, name: &str, labels: &[&str]) -> f64 {
    let text = fresh_client(None)
        .get(format!("{}/metrics", daemon.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with(name) && labels.iter().all(|l| line.contains(l)))
        .filter(|line| {
            let rest = &line[name.len()..];
            rest.starts_with('{') || rest.starts_with(' ')
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Asserts that the process exits with success within a minute (its deadlines are a few
/// seconds; the header-read timeouts in these tests are minutes); kills it otherwise.
async fn assert_exits_cleanly(child: &mut Child, daemon: &TestDaemon, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut status: Option<ExitStatus> = None;
    while status.is_none() && Instant::now() < deadline {
        status = child.try_wait().ok().flatten();
        if status.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "the daemon exits cleanly {when}: {status:?}\n{}",
        daemon.log()
    );
}

/// Waits until every shard queue has no consumer; false at `bound`.
async fn consumers_gone(prefix: &str, bound: Duration) -> bool {
    let conn = Connection::connect(&crate::support::amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let deadline = Instant::now() + bound;
    let mut gone = false;
    while Instant::now() < deadline && !gone {
        let channel = conn.create_channel().await.expect("a channel");
        let mut total = 0;
        for shard in 0..2 {
            let queue = channel
                .queue_declare(
                    format!("{prefix}.shard.{shard}").as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("the shard queue exists");
            total += queue.consumer_count();
        }
        let _ = channel.close(200, "checked".into()).await;
        gone = total == 0;
        if !gone {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let _ = conn.close(200, "done".into()).await;
    gone
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_trickle_their_headers_are_closed_after_the_header_read_timeout() {
    let daemon = TestDaemon::start_with(Options {
        http: "header_read_timeout_secs = 2\n".into(),
        ..Default::default()
    })
    .await;
    let addr = socket_addr(&daemon);
    // A byte every half second: never idle, never finished.
    let mut trickles = start_trickles(
        addr,
        300,
        Duration::from_millis(500),
        Duration::from_secs(60),
    )
    .await;

    // Meanwhile the daemon answers real posts.
    let client = fresh_client(None);
    for i in 0..20 {
        let r = client
            .post(format!("{}/v1/intake/forms/en-contact", daemon.base))
            .header("content-type", URLENCODED)
            .body(format!("name=Busy+Day+{i}&email=busy{i}%40example.com"))
            .send()
            .await
            .expect("the daemon answers while slow clients hang on");
        assert_eq!(r.status(), 202);
    }

    let mut closed = 0;
    while let Some(result) = trickles.join_next().await {
        if result.expect("a trickle task") {
            closed += 1;
        }
    }
    assert_eq!(
        closed,
        300,
        "every trickling connection is closed by the daemon\n{}",
        daemon.log()
    );
    assert!(
        metric(&daemon, "leadpipe_http_header_timeouts_total", &[]).await >= 300.0,
        "header timeouts are counted"
    );
    assert_eq!(
        daemon.wait_for_inquiries(20, Duration::from_secs(30)).await,
        20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let daemon = TestDaemon::start_with(Options {
        http: "header_read_timeout_secs = 2\n".into(),
        ..Default::default()
    })
    .await;
    let mut stream = TcpStream::connect(socket_addr(&daemon))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The connection is kept alive, then closed once it has idled past the timeout.
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the idle connection is still open\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_new_connections_wait_until_others_close() {
    let daemon = TestDaemon::start_with(Options {
        http: "max_connections = 3\nheader_read_timeout_secs = 120\n".into(),
        ..Default::default()
    })
    .await;
    let addr = socket_addr(&daemon);
    // As many hanging connections as the limit (the harness may hold one more, idle).
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(PARTIAL_HEAD).await.expect("write");
        holders.push(stream);
    }

    let mut waiting = TcpStream::connect(addr)
        .await
        .expect("the kernel still takes the connection");
    waiting
        .write_all(
            raw_post(
                "en-contact",
                "name=Patient+Client&email=patient%40example.com",
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(2), waiting.read(&mut first)).await;
    assert!(
        early.is_err(),
        "a connection past the limit was served while the limit was reached"
    );

    drop(holders);
    let head = tokio::time::timeout(Duration::from_secs(30), read_head(&mut waiting))
        .await
        .expect("the waiting connection is served once others close");
    assert!(head.starts_with("HTTP/1.1 202"), "{head}");

    // The daemon is back to normal.
    let r = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=After+Limit&email=after.limit%40example.com",
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(metric(&daemon, "leadpipe_http_connection_limit_reached_total", &[]).await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_trickling_connections_open_exits_within_its_grace_and_stores_every_202() {
    let mut daemon = TestDaemon::start_with(Options {
        // Only the shutdown deadline can end these connections in time.
        http: "header_read_timeout_secs = 300\nshutdown_grace_secs = 3\n".into(),
        ..Default::default()
    })
    .await;
    let addr = socket_addr(&daemon);
    let trickles =
        start_trickles(addr, 200, Duration::from_secs(1), Duration::from_secs(120)).await;

    // Load from four clients until the daemon stops taking connections.
    let next = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut load = JoinSet::new();
    for _ in 0..4 {
        let next = next.clone();
        let answered = answered.clone();
        let url = format!("{}/v1/intake/forms/en-contact", daemon.base);
        load.spawn(async move {
            let client = fresh_client(None);
            let mut statuses = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= 2000 {
                    return statuses;
                }
                let sent = client
                    .post(&url)
                    .header("content-type", URLENCODED)
                    .body(format!("name=Stop+Test+{i}&email=sigslow{i}%40example.com"))
                    .send()
                    .await;
                match sent {
                    Ok(r) => {
                        statuses.push((i, r.status().as_u16()));
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => return statuses,
                }
            }
        });
    }
    // Wait for answers, not for posts sent: a post in flight when the signal lands may
    // meet a connection the daemon is closing, and its client sees an error, not a 202.
    while answered.load(Ordering::SeqCst) < 60 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut child = daemon.take_child().expect("a running daemon");
    sigterm(&child);
    assert_exits_cleanly(&mut child, &daemon, "within its grace period").await;
    assert!(daemon.log().contains("Stopped."), "{}", daemon.log());

    let mut acked = Vec::new();
    while let Some(statuses) = load.join_next().await {
        for (i, status) in statuses.expect("a load task") {
            assert_eq!(status, 202, "post {i} answered {status}");
            acked.push(i);
        }
    }
    assert!(acked.len() >= 60, "{} acknowledged", acked.len());
    drop(trickles);

    daemon.launch(true).await;
    let pool = daemon.db().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let stored: HashMap<String, i64> = loop {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT email, count(*) FROM leads WHERE email LIKE 'sigslow%' GROUP BY email",
        )
        .fetch_all(&pool)
        .await
        .expect("count leads");
        let map: HashMap<String, i64> = rows.into_iter().collect();
        if acked
            .iter()
            .all(|i| map.contains_key(&format!("sigslow{i}@example.com")))
            || Instant::now() > deadline
        {
            break map;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    pool.close().await;
    let lost: Vec<&usize> = acked
        .iter()
        .filter(|i| !stored.contains_key(&format!("sigslow{i}@example.com")))
        .collect();
    let doubled: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        lost.is_empty() && doubled.is_empty(),
        "{} acknowledged, lost {lost:?}, doubled {doubled:?}",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_consumers_stop_at_once_while_a_request_in_flight_still_gets_its_202() {
    let mut daemon = TestDaemon::start_with(Options {
        http: "header_read_timeout_secs = 300\nshutdown_grace_secs = 120\n".into(),
        ..Default::default()
    })
    .await;
    let body = "name=Late+Post&email=late.post%40example.com&message=sent+during+shutdown";
    let mut stream = TcpStream::connect(socket_addr(&daemon))
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/intake/forms/en-contact HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {URLENCODED}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // 100 Continue: the request is in the handler, reading its body.
    let interim = read_head(&mut stream).await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    let (start, rest) = body.split_at(10);
    stream.write_all(start.as_bytes()).await.expect("write");

    let mut child = daemon.take_child().expect("a running daemon");
    sigterm(&child);
    assert!(
        consumers_gone(&daemon.prefix, Duration::from_secs(30)).await,
        "consumers stop without waiting for HTTP clients\n{}",
        daemon.log()
    );
    assert!(
        child.try_wait().expect("the process").is_none(),
        "the daemon is still finishing the request in flight"
    );

    stream.write_all(rest.as_bytes()).await.expect("write");
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert_exits_cleanly(&mut child, &daemon, "once its last request is answered").await;

    daemon.launch(true).await;
    let leads = daemon
        .wait_for_leads("email=late.post%40example.com", 1, Duration::from_secs(30))
        .await;
    assert_eq!(leads.len(), 1, "{}", daemon.log());
}

/// Posts a valid form from `client` and returns the status, `Retry-After` and body.
async fn post_from(
    client: &reqwest::Client,
    daemon: &TestDaemon,
    form: &str,
    n: usize,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, String) {
    let mut request = client
        .post(format!("{}/v1/intake/forms/{form}", daemon.base))
        .header("content-type", URLENCODED)
        .body(format!("name=Rate+Test&email=rate{n}%40example.com"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let r = request.send().await.expect("the daemon answers");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry, r.text().await.unwrap_or_default())
}

fn assert_rate_limited(answer: &(u16, Option<String>, String)) {
    let (status, retry, body) = answer;
    assert_eq!(*status, 429, "{body}");
    let secs: u64 = retry
        .as_deref()
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&secs), "Retry-After: {secs}");
    let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(json["error"], "rate_limited", "{body}");
    assert!(
        json["message"].as_str().is_some_and(|m| m.len() > 10),
        "{body}"
    );
}

const RATE_LIMITS: &str = "[[forms]]\nname = \"en-generous\"\nsource = \"web-en-generous\"\ndefault_region = \"US\"\nrate_limit_per_minute = 600\nrate_limit_burst = 20\n\n\
     [intake]\nrate_limit_per_minute = 1\nrate_limit_burst = 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_over_a_forms_rate_limit_get_429_while_other_forms_and_addresses_go_through() {
    let daemon = TestDaemon::start_with(Options {
        extra_config: RATE_LIMITS.into(),
        ..Default::default()
    })
    .await;
    let a = fresh_client(Some("127.0.0.2".parse().unwrap()));
    let b = fresh_client(Some("127.0.0.3".parse().unwrap()));

    for n in 0..2 {
        let answer = post_from(&a, &daemon, "en-contact", n, &[]).await;
        assert_eq!(answer.0, 202, "{}", answer.2);
    }
    assert_rate_limited(&post_from(&a, &daemon, "en-contact", 2, &[]).await);
    // A form with its own, higher limit is unaffected.
    for n in 3..13 {
        let answer = post_from(&a, &daemon, "en-generous", n, &[]).await;
        assert_eq!(answer.0, 202, "{}", answer.2);
    }
    // Another address has its own allowance.
    let answer = post_from(&b, &daemon, "en-contact", 13, &[]).await;
    assert_eq!(answer.0, 202, "{}", answer.2);

    assert!(
        metric(
            &daemon,
            "leadpipe_inquiries_rejected_total",
            &["reason=\"rate_limited\"", "source=\"web-en-contact\""]
        )
        .await
            >= 1.0
    );
    // Refused posts are not stored.
    assert_eq!(
        daemon.wait_for_inquiries(13, Duration::from_secs(30)).await,
        13
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_script_over_the_limit_can_read_its_429() {
    let daemon = TestDaemon::start_with(Options {
        extra_config: "[[forms]]\nname = \"en-widget\"\nsource = \"web-en-widget\"\n\
             default_region = \"US\"\nallowed_origins = [\"https://shop.example.com\"]\n\
             rate_limit_per_minute = 1\nrate_limit_burst = 1\n"
            .into(),
        ..Default::default()
    })
    .await;
    let client = fresh_client(Some("127.0.0.4".parse().unwrap()));
    let origin = [("origin", "https://shop.example.com")];
    let first = post_from(&client, &daemon, "en-widget", 0, &origin).await;
    assert_eq!(first.0, 202, "{}", first.2);

    let over = client
        .post(format!("{}/v1/intake/forms/en-widget", daemon.base))
        .header("content-type", URLENCODED)
        .header("origin", "https://shop.example.com")
        .body("name=Rate+Test&email=rate1%40example.com")
        .send()
        .await
        .expect("the daemon answers");
    assert_eq!(over.status().as_u16(), 429);
    // Without the CORS header the browser hides the answer from the page's script, which
    // then cannot tell a busy form from a network failure.
    assert_eq!(
        over.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://shop.example.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited_and_an_untrusted_header_is_ignored()
{
    let daemon = TestDaemon::start_with(Options {
        extra_config: RATE_LIMITS.into(),
        http: "trusted_proxies = [\"127.0.0.9/32\"]\n".into(),
        ..Default::default()
    })
    .await;
    let proxy = fresh_client(Some("127.0.0.9".parse().unwrap()));
    let stranger = fresh_client(Some("127.0.0.2".parse().unwrap()));

    // Through the proxy, each forwarded client has its own allowance.
    let first = [("x-forwarded-for", "198.51.100.7")];
    for n in 0..2 {
        let answer = post_from(&proxy, &daemon, "en-contact", n, &first).await;
        assert_eq!(answer.0, 202, "{}", answer.2);
    }
    assert_rate_limited(&post_from(&proxy, &daemon, "en-contact", 2, &first).await);
    // A client cannot escape by prepending an address: the proxy appends the real one.
    let spoofed = [("x-forwarded-for", "203.0.113.50, 198.51.100.7")];
    assert_rate_limited(&post_from(&proxy, &daemon, "en-contact", 3, &spoofed).await);
    let second = [("x-forwarded-for", "198.51.100.8")];
    let answer = post_from(&proxy, &daemon, "en-contact", 4, &second).await;
    assert_eq!(answer.0, 202, "{}", answer.2);

    // A peer that is not a trusted proxy is limited by its own address, whatever it claims.
    for (n, claimed) in [(5, "192.0.2.1"), (6, "192.0.2.2"), (7, "192.0.2.3")] {
        let answer = post_from(
            &stranger,
            &daemon,
            "en-contact",
            n,
            &[("x-forwarded-for", claimed)],
        )
        .await;
        if n < 7 {
            assert_eq!(answer.0, 202, "{}", answer.2);
        } else {
            assert_rate_limited(&answer);
        }
    }
}

#[test]
fn connection_and_rate_limit_settings_are_checked_with_their_keys() {
    let config = "[http]\nlisten = \"127.0.0.1:8080\"\nmax_connections = 0\nheader_read_timeout_secs = 0\n\
         trusted_proxies = [\"10.0.0.0/8\", \"not-a-network\"]\n\n\
         [intake]\nrate_limit_per_minute = 10\nrate_limit_burst = 0\n\n\
         [[forms]]\nname = \"it-contatti\"\nsource = \"website-it\"\ndefault_region = \"IT\"\nrate_limit_per_minute = 5\nrate_limit_burst = 0\n";
    let path = temp_file("limits.toml", config.as_bytes());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadpipe"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run leadpipe check-config");
    let _ = std::fs::remove_file(path);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    for key in [
        "http.max_connections",
        "http.header_read_timeout_secs",
        "http.trusted_proxies[1]",
        "intake.rate_limit_burst",
        "forms[0].rate_limit_burst",
    ] {
        assert!(text.contains(key), "no problem reported for {key}:\n{text}");
    }
    assert!(!text.contains("trusted_proxies[0]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stuck_in_the_database_does_not_hold_the_shutdown_past_its_deadline() {
    let mut daemon = TestDaemon::start_with(Options {
        extra_config: "[shutdown]\nconsumer_grace_secs = 2\n".into(),
        ..Default::default()
    })
    .await;
    let first = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=Before+Lock&email=before.lock%40example.com",
            &[],
        )
        .await;
    assert_eq!(first.status, 202, "{}", first.text());
    assert_eq!(
        daemon.wait_for_inquiries(1, Duration::from_secs(30)).await,
        1
    );

    // Hold the table the consumer must write to.
    let pool = daemon.db().await;
    let mut lock = pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE inquiries IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock the table");
    let stuck = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=Stuck+Consumer&email=stuck.consumer%40example.com",
            &[],
        )
        .await;
    assert_eq!(stuck.status, 202, "{}", stuck.text());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer never reached the lock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut child = daemon.take_child().expect("a running daemon");
    sigterm(&child);
    assert_exits_cleanly(&mut child, &daemon, "once the consumers' deadline passed").await;
    assert!(
        daemon.log().contains("shutdown.consumer_grace_secs"),
        "{}",
        daemon.log()
    );
    lock.rollback().await.expect("release the lock");

    // The unacked message was redelivered and is stored once.
    daemon.launch(true).await;
    let leads = daemon
        .wait_for_leads(
            "email=stuck.consumer%40example.com",
            1,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(leads.len(), 1, "{}", daemon.log());
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_backs_off_and_recovers() {
    let daemon = TestDaemon::start_with(Options {
        http: "header_read_timeout_secs = 120\n".into(),
        ..Default::default()
    })
    .await;
    let pid = daemon.pid().expect("a running daemon");
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon's descriptors")
        .count();
    // Room for a few more connections only.
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={}:", open + 8))
        .status()
        .expect("run prlimit");
    assert!(status.success());

    let addr = socket_addr(&daemon);
    let mut holders = Vec::new();
    for _ in 0..30 {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("the kernel takes the connection");
        stream.write_all(PARTIAL_HEAD).await.expect("write");
        holders.push(stream);
    }
    // Give the accept loop time to run into the limit again and again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(holders);

    let r = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=After+Emfile&email=after.emfile%40example.com",
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let errors = metric(&daemon, "leadpipe_http_accept_errors_total", &[]).await;
    // A loop that retried at once would fail hundreds of thousands of times a second.
    assert!(
        (1.0..1000.0).contains(&errors),
        "{errors} accept errors\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_gets_a_json_503_naming_the_limit() {
    let daemon = TestDaemon::start_with(Options {
        http: "request_timeout_secs = 1\n".into(),
        ..Default::default()
    })
    .await;
    let mut stream = TcpStream::connect(socket_addr(&daemon))
        .await
        .expect("connect");
    // The head arrives at once; the body is promised but trickles in too slowly.
    stream
        .write_all(
            format!(
                "POST /v1/intake/forms/en-contact HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: {URLENCODED}\r\nContent-Length: 100\r\n\r\nname=Slow"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&answer).contains('}') {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer\n{}", daemon.log());
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").expect("a head") + 4..];
    let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(json["error"], "timeout", "{body}");
    assert!(
        json["message"].as_str().is_some_and(|m| m.contains("1 s")),
        "{body}"
    );
}
