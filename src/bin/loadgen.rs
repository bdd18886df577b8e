//! Load generator: posts realistic form submissions to a running leadpipe, waits until all
//! are stored, and prints throughput, acknowledgement latency and the daemon's peak memory.
//!
//! ```text
//! cargo run --release --bin loadgen -- --url http://127.0.0.1:8080 \
//!     --requests 20000 --concurrency 64 --pid $(pgrep -f 'leadpipe serve')
//! ```

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
    /// LEADPIPE__AMQP__CONSUME=false).
    #[arg(long)]
    intake_only: bool,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let metrics_url = format!("{}/metrics", args.url);
    let stored_before = counter(
        &client.get(&metrics_url).send().await?.text().await?,
        "leadpipe_inquiries_stored_total",
        None,
    );
    let run = format!(
        "{:x}",
        std::process::id() ^ (chrono::Utc::now().timestamp() as u32)
    );

    println!(
        "loadgen: {} requests, concurrency {}, forms {:?}, run {run}",
        args.requests, args.concurrency, args.forms
    );
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..args.requests {
        let permit = gate.clone().acquire_owned().await?;
        let client = client.clone();
        let form = args.forms[i % args.forms.len()].clone();
        let url = format!("{}/v1/intake/forms/{form}", args.url);
        let body = body(&form, &run, i);
        tasks.spawn(async move {
            let sent = Instant::now();
            let result = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await;
            drop(permit);
            let status = result.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, sent.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(args.requests);
    let mut errors = 0usize;
    while let Some(joined) = tasks.join_next().await {
        let (status, latency) = joined?;
        if status == 202 {
            latencies.push(latency);
        } else {
            errors += 1;
        }
    }
    let intake_elapsed = started.elapsed();
    let accepted = latencies.len();

    latencies.sort();
    println!("accepted:        {accepted} (errors {errors})");
    println!(
        "accepted/s:      {:.0}  (intake phase {:.2} s)",
        accepted as f64 / intake_elapsed.as_secs_f64(),
        intake_elapsed.as_secs_f64()
    );
    println!(
        "ack latency:     p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    if args.intake_only {
        report_rss(args.pid);
        return Ok(());
    }

    // Wait for the consumers to store everything that was acknowledged.
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout);
    let stored = loop {
        let text = client.get(&metrics_url).send().await?.text().await?;
        let stored = counter(&text, "leadpipe_inquiries_stored_total", None) - stored_before;
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
    report_rss(args.pid);
    if stored < accepted {
        anyhow::bail!("only {stored} of {accepted} acknowledged leads were stored in time");
    }
    Ok(())
}
