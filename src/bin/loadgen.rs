//! Load generator: posts realistic form submissions to a running leadpipe (or to the
//! direct baseline, `direct_baseline`), waits until all are stored, and prints
//! throughput, acknowledgement latency and the daemon's peak memory.
//!
//! Two modes:
//! - closed loop (`--requests N --concurrency C`): C posts in flight at all times, as
//!   fast as the server answers; measures capacity.
//! - open loop (`--rate R --duration S`): posts sent on a fixed schedule whatever the
//!   server does, latency measured from each post's scheduled time, so a stalled server
//!   shows as latency instead of silently slowing the generator down (no coordinated
//!   omission).
//!
//! ```text
//! cargo run --release --bin loadgen -- --url http://127.0.0.1:8080 \
//!     --requests 20000 --concurrency 64 --pid $(pgrep -f 'leadpipe serve')
//! cargo run --release --bin loadgen -- --url http://127.0.0.1:8080 --rate 2000 --duration 30
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Posts N form submissions at concurrency C and measures the pipeline end to end.
#[derive(Parser)]
#[command(about)]
struct Args {
    /// Base URL of the daemon.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Number of submissions.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Forms to spread the load over (they must exist in the daemon's config).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "it-contatti,pl-kontakt,vn-lien-he,en-contact"
    )]
    forms: Vec<String>,
    /// The daemon's process id, to report its peak resident memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Longest wait for the consumers to store everything, in seconds.
    #[arg(long, default_value_t = 300)]
    drain_timeout: u64,
    /// Measure intake only: do not wait for the consumers (for a daemon run with
    /// LEADPIPE__AMQP__CONSUME=false, or for the direct baseline, which stores before it
    /// answers).
    #[arg(long)]
    intake_only: bool,
    /// Open loop: posts per second, sent on schedule whatever the server does.
    #[arg(long, requires = "duration")]
    rate: Option<f64>,
    /// Open loop: seconds to keep sending.
    #[arg(long, requires = "rate")]
    duration: Option<f64>,
}

/// A realistic submission; every `i` is another person (unique email, phone and company),
/// so nothing is merged unless the run means it to be.
fn body(form: &str, run: &str, i: usize) -> String {
    let email = format!("lg{run}-{i}%40example.com");
    match form.split('-').next() {
        Some("it") => format!(
            "nome=Niccol%C3%B2&cognome=Fabbri+{i}&email={email}&telefono=%2B39+02+{:08}&azienda=Fabbri+Arredamenti+{i}+S.r.l.&messaggio=Buongiorno%2C%0D%0Avorremmo+un+preventivo+per+12+scrivanie.&website=&utm_source=google&utm_medium=cpc",
            i % 100_000_000
        ),
        Some("pl") => format!(
            "imie=%C5%81ukasz&nazwisko=%C5%BB%C3%B3%C5%82kiewski&e-mail={email}&telefon=6{:08}&firma=%C5%BB%C3%B3%C5%82kiewski+{i}+Sp.+z+o.o.&wiadomosc=Prosimy+o+ofert%C4%99+na+40+krzese%C5%82.&website=",
            i % 100_000_000
        ),
        Some("vn") => format!(
            "ho_ten=Nguy%E1%BB%85n+Th%E1%BB%8B+Thu+H%C3%A0&email={email}&so_dien_thoai=09{:08}&cong_ty=C%C3%B4ng+ty+TNHH+Sao+Mai+{i}&noi_dung=C%E1%BA%A7n+b%C3%A1o+gi%C3%A1+25+b%E1%BB%99+b%C3%A0n+gh%E1%BA%BF.",
            i % 100_000_000
        ),
        _ => format!(
            "first_name=Sarah&last_name=O%27Connor&email={email}&phone=%28415%29+{:03}-{:04}+ext.+204&company=Harbor+%26+Pine+{i}+LLC&message=Need+a+quote+for+30+desks.&utm_source=google",
            200 + (i / 10_000) % 800,
            i % 10_000
        ),
    }
}

/// Reads a counter's total from Prometheus text (summing every label set).
fn counter(metrics: &str, name: &str, label: Option<&str>) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && label.is_none_or(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn report_rss(pid: Option<u32>) {
    if let Some(pid) = pid {
        match peak_rss_kib(pid) {
            Some(kib) => println!("daemon peak RSS: {:.1} MiB", kib as f64 / 1024.0),
            None => println!("daemon peak RSS: unknown (no /proc/{pid}/status)"),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// What a run collected: the latency of every accepted post, and the other answers by
/// status (0: no answer at all).
type Outcome = (Vec<Duration>, BTreeMap<u16, usize>);

async fn post(client: &reqwest::Client, url: String, body: String) -> u16 {
    client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn collect(outcome: &mut Outcome, status: u16, latency: Duration) {
    if status == 202 {
        outcome.0.push(latency);
    } else {
        *outcome.1.entry(status).or_default() += 1;
    }
}

/// C posts in flight at all times; latency from each post's own start.
async fn closed_loop(client: &reqwest::Client, args: &Args, run: &str) -> anyhow::Result<Outcome> {
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = JoinSet::new();
    for i in 0..args.requests {
        let permit = gate.clone().acquire_owned().await?;
        let client = client.clone();
        let form = &args.forms[i % args.forms.len()];
        let url = format!("{}/v1/intake/forms/{form}", args.url);
        let body = body(form, run, i);
        tasks.spawn(async move {
            let sent = Instant::now();
            let status = post(&client, url, body).await;
            drop(permit);
            (status, sent.elapsed())
        });
    }
    let mut outcome = (Vec::with_capacity(args.requests), BTreeMap::new());
    while let Some(joined) = tasks.join_next().await {
        let (status, latency) = joined?;
        collect(&mut outcome, status, latency);
    }
    Ok(outcome)
}

/// Posts on a fixed schedule; latency from each post's scheduled time, so time a post
/// waited to be sent (the generator itself falling behind) counts against the server
/// too, never hides.
async fn open_loop(
    client: &reqwest::Client,
    args: &Args,
    run: &str,
    rate: f64,
    duration: f64,
) -> anyhow::Result<Outcome> {
    let total = (rate * duration).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    let mut outcome = (Vec::with_capacity(total), BTreeMap::new());
    let mut late = 0usize;
    for i in 0..total {
        let scheduled = start + interval.mul_f64(i as f64);
        if tokio::time::Instant::now() > scheduled + Duration::from_millis(1) {
            late += 1;
        }
        tokio::time::sleep_until(scheduled).await;
        let client = client.clone();
        let form = &args.forms[i % args.forms.len()];
        let url = format!("{}/v1/intake/forms/{form}", args.url);
        let body = body(form, run, i);
        tasks.spawn(async move {
            let status = post(&client, url, body).await;
            (status, scheduled.elapsed())
        });
        // Reap finished posts as we go so memory stays flat on long runs.
        while let Some(joined) = tasks.try_join_next() {
            let (status, latency) = joined?;
            collect(&mut outcome, status, latency);
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let (status, latency) = joined?;
        collect(&mut outcome, status, latency);
    }
    if late > 0 {
        println!(
            "generator:       {late} posts left later than 1 ms after their scheduled time (counted in latency)"
        );
    }
    Ok(outcome)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(args.rate.unwrap_or(0.0) as usize / 10))
        .timeout(Duration::from_secs(30))
        .build()?;
    let metrics_url = format!("{}/metrics", args.url);
    // The direct baseline has no metrics; it stores before it answers (--intake-only).
    let stored_before = if args.intake_only {
        0.0
    } else {
        counter(
            &client.get(&metrics_url).send().await?.text().await?,
            "leadpipe_inquiries_stored_total",
            None,
        )
    };
    let run = format!(
        "{:x}",
        std::process::id() ^ (chrono::Utc::now().timestamp() as u32)
    );

    let started = Instant::now();
    let (latencies, errors) = match (args.rate, args.duration) {
        (Some(rate), Some(duration)) => {
            if !(rate > 0.0 && duration > 0.0) {
                anyhow::bail!("--rate and --duration must be positive");
            }
            println!(
                "loadgen: open loop, {rate} posts/s for {duration} s, forms {:?}, run {run}",
                args.forms
            );
            open_loop(&client, &args, &run, rate, duration).await?
        }
        _ => {
            println!(
                "loadgen: {} requests, concurrency {}, forms {:?}, run {run}",
                args.requests, args.concurrency, args.forms
            );
            closed_loop(&client, &args, &run).await?
        }
    };
    let intake_elapsed = started.elapsed();
    let accepted = latencies.len();
    let mut latencies = latencies;
    latencies.sort();
    let refused: usize = errors.values().sum();
    println!("accepted:        {accepted} (refused or failed {refused}: {errors:?})");
    println!(
        "accepted/s:      {:.0}  (intake phase {:.2} s)",
        accepted as f64 / intake_elapsed.as_secs_f64(),
        intake_elapsed.as_secs_f64()
    );
    println!(
        "ack latency:     p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.9).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    if args.intake_only {
        report_rss(args.pid);
        return Ok(());
    }

    // Wait for the consumers to store everything that was acknowledged.
    let mut backlog_max = 0.0f64;
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
    let stored = loop {
        let text = client.get(&metrics_url).send().await?.text().await?;
        let stored = counter(&text, "leadpipe_inquiries_stored_total", None) - stored_before;
        backlog_max = backlog_max.max(accepted as f64 - stored);
        if stored as usize >= accepted || Instant::now() > deadline {
            break stored as usize;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let end_to_end = started.elapsed();
    println!(
        "stored/s:        {:.0}  (end to end {:.2} s, {stored} stored)",
        stored as f64 / end_to_end.as_secs_f64(),
        end_to_end.as_secs_f64()
    );
    println!(
        "drain backlog:   {backlog_max:.0} acknowledged but not yet stored when sending ended"
    );
    report_rss(args.pid);
    if stored < accepted {
        anyhow::bail!("only {stored} of {accepted} acknowledged leads were stored in time");
    }
    Ok(())
}
