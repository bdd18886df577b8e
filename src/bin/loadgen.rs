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
//! Fault runs (scripts/faults.sh) add `--record FILE`, one line per post with its email,
//! part number and answer, which scripts/faults/check.py compares with what was stored;
//! `--per-person K` makes every person send K numbered posts one after another, to check
//! that one person's inquiries are filed in the order they were accepted; several
//! comma-separated `--url`s spread each person's posts over several daemons.
//!
//! ```text
//! cargo run --release --bin loadgen -- --url http://127.0.0.1:8080 \
//!     --requests 20000 --concurrency 64 --pid $(pgrep -f 'leadpipe serve')
//! cargo run --release --bin loadgen -- --url http://127.0.0.1:8080 --rate 2000 --duration 30
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Posts N form submissions at concurrency C and measures the pipeline end to end.
#[derive(Parser)]
#[command(about)]
struct Args {
    /// Base URL of the daemon; several, comma-separated, take turns post by post.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
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
    /// Appends one line per post to this file: `email<TAB>part<TAB>status`, the status
    /// being the HTTP code or `error` when no answer came.
    #[arg(long)]
    record: Option<std::path::PathBuf>,
    /// Open loop: writes one line per person to this file, `scheduled<TAB>latency<TAB>status`
    /// (milliseconds from the start of the run, and of its first post), to see when in a
    /// run the slow answers came.
    #[arg(long, requires = "rate")]
    timeline: Option<std::path::PathBuf>,
    /// Posts each person sends, one after the other (the next once the previous was
    /// answered), numbered in the message as "(part N of K)"; requests and rate count
    /// people, not posts.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    per_person: u32,
}

/// The email address of person `i` of a run: the key that ties a post to what was stored.
fn email(run: &str, i: usize) -> String {
    format!("lg{run}-{i}@example.com")
}

/// A realistic submission; every `i` is another person (unique email, phone and company),
/// so nothing is merged unless the run means it to be. `part` numbers one of a person's
/// several posts in the message, which also keeps them from being the same content.
fn body(form: &str, run: &str, i: usize, part: Option<(u32, u32)>) -> String {
    let email = email(run, i).replace('@', "%40");
    let part = part.map_or(String::new(), |(n, k)| format!("+%28part+{n}+of+{k}%29"));
    match form.split('-').next() {
        Some("it") => format!(
            "nome=Niccol%C3%B2&cognome=Fabbri+{i}&email={email}&telefono=%2B39+02+{:08}&azienda=Fabbri+Arredamenti+{i}+S.r.l.&messaggio=Buongiorno%2C%0D%0Avorremmo+un+preventivo+per+12+scrivanie.{part}&website=&utm_source=google&utm_medium=cpc",
            i % 100_000_000
        ),
        Some("pl") => format!(
            "imie=%C5%81ukasz&nazwisko=%C5%BB%C3%B3%C5%82kiewski&e-mail={email}&telefon=6{:08}&firma=%C5%BB%C3%B3%C5%82kiewski+{i}+Sp.+z+o.o.&wiadomosc=Prosimy+o+ofert%C4%99+na+40+krzese%C5%82.{part}&website=",
            i % 100_000_000
        ),
        Some("vn") => format!(
            "ho_ten=Nguy%E1%BB%85n+Th%E1%BB%8B+Thu+H%C3%A0&email={email}&so_dien_thoai=09{:08}&cong_ty=C%C3%B4ng+ty+TNHH+Sao+Mai+{i}&noi_dung=C%E1%BA%A7n+b%C3%A1o+gi%C3%A1+25+b%E1%BB%99+b%C3%A0n+gh%E1%BA%BF.{part}",
            i % 100_000_000
        ),
        _ => format!(
            "first_name=Sarah&last_name=O%27Connor&email={email}&phone=%28415%29+{:03}-{:04}+ext.+204&company=Harbor+%26+Pine+{i}+LLC&message=Need+a+quote+for+30+desks.{part}&utm_source=google",
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

/// Inquiries stored so far, summed over the daemons' metrics. A `replay` is a copy of an
/// inquiry already filed (published again after a crash, or from the spool after a
/// confirm came too late), so it is left out: counting it would end the wait for the
/// acknowledged posts before all of them are filed.
async fn stored_total(client: &reqwest::Client, urls: &[String]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for url in urls {
        let text = client
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        total += counter(&text, "leadpipe_inquiries_stored_total", None)
            - counter(
                &text,
                "leadpipe_inquiries_stored_total",
                Some("outcome=\"replay\""),
            );
    }
    Ok(total)
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

/// What a run sends, shared by every person's task.
struct Plan {
    urls: Vec<String>,
    forms: Vec<String>,
    run: String,
    per_person: u32,
}

/// One post's answer: which of the person's posts it was, the HTTP status (0: no answer
/// at all) and its latency.
struct Answer {
    part: u32,
    status: u16,
    latency: Duration,
}

/// What a run collected: the latency of every accepted post, the other answers by
/// status, and the record file when one was asked for.
struct Outcome {
    latencies: Vec<Duration>,
    errors: BTreeMap<u16, usize>,
    record: Option<BufWriter<File>>,
    /// The timeline file and the time between two people's scheduled starts.
    timeline: Option<(BufWriter<File>, Duration)>,
}

impl Outcome {
    fn new(capacity: usize, record: Option<&Path>) -> anyhow::Result<Self> {
        let record = match record {
            Some(path) => Some(BufWriter::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open the record file {}", path.display()))?,
            )),
            None => None,
        };
        Ok(Self {
            latencies: Vec::with_capacity(capacity),
            errors: BTreeMap::new(),
            record,
            timeline: None,
        })
    }

    /// Also writes the timeline of an open loop whose people start `interval` apart.
    fn with_timeline(mut self, path: Option<&Path>, interval: Duration) -> anyhow::Result<Self> {
        if let Some(path) = path {
            let file = File::create(path)
                .with_context(|| format!("cannot create the timeline file {}", path.display()))?;
            self.timeline = Some((BufWriter::new(file), interval));
        }
        Ok(self)
    }

    fn collect(&mut self, plan: &Plan, person: usize, answers: Vec<Answer>) -> anyhow::Result<()> {
        if let (Some((timeline, interval)), Some(first)) = (&mut self.timeline, answers.first()) {
            writeln!(
                timeline,
                "{:.3}\t{:.3}\t{}",
                interval.mul_f64(person as f64).as_secs_f64() * 1e3,
                first.latency.as_secs_f64() * 1e3,
                first.status
            )?;
        }
        for answer in answers {
            if (200..300).contains(&answer.status) {
                self.latencies.push(answer.latency);
            } else {
                *self.errors.entry(answer.status).or_default() += 1;
            }
            if let Some(record) = &mut self.record {
                let status = match answer.status {
                    0 => "error".to_owned(),
                    code => code.to_string(),
                };
                writeln!(
                    record,
                    "{}\t{}\t{status}",
                    email(&plan.run, person),
                    answer.part
                )?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(record) = &mut self.record {
            record.flush().context("cannot write the record file")?;
        }
        if let Some((timeline, _)) = &mut self.timeline {
            timeline.flush().context("cannot write the timeline file")?;
        }
        Ok(())
    }
}

/// How many requests ended without an HTTP answer; the first few are printed with their
/// cause, so a run that counts some says why.
static TRANSPORT_ERRORS: AtomicUsize = AtomicUsize::new(0);

async fn post(client: &reqwest::Client, url: String, body: String) -> u16 {
    match client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(error) => {
            if TRANSPORT_ERRORS.fetch_add(1, Ordering::Relaxed) < 10 {
                // `{:#}` prints the whole chain of causes.
                eprintln!("loadgen: no answer: {:#}", anyhow::Error::new(error));
            }
            0
        }
    }
}

/// Person `i`'s posts, each sent once the previous one was answered, taking turns over
/// the daemons; the first post's latency counts from `from` (its scheduled time in the
/// open loop), each later one's from the previous answer.
async fn person(
    client: reqwest::Client,
    plan: Arc<Plan>,
    i: usize,
    mut from: tokio::time::Instant,
) -> Vec<Answer> {
    let form = &plan.forms[i % plan.forms.len()];
    let k = plan.per_person;
    let mut answers = Vec::with_capacity(k as usize);
    for part in 1..=k {
        let url = &plan.urls[(i + part as usize) % plan.urls.len()];
        let url = format!("{url}/v1/intake/forms/{form}");
        let body = body(form, &plan.run, i, (k > 1).then_some((part, k)));
        let status = post(&client, url, body).await;
        answers.push(Answer {
            part,
            status,
            latency: from.elapsed(),
        });
        from = tokio::time::Instant::now();
    }
    answers
}

/// C people sending at all times, as fast as the server answers.
async fn closed_loop(
    client: &reqwest::Client,
    args: &Args,
    plan: &Arc<Plan>,
) -> anyhow::Result<Outcome> {
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = JoinSet::new();
    let mut outcome = Outcome::new(
        args.requests * plan.per_person as usize,
        args.record.as_deref(),
    )?;
    for i in 0..args.requests {
        let permit = gate.clone().acquire_owned().await?;
        let (client, shared) = (client.clone(), plan.clone());
        tasks.spawn(async move {
            let answers = person(client, shared, i, tokio::time::Instant::now()).await;
            drop(permit);
            (i, answers)
        });
        while let Some(joined) = tasks.try_join_next() {
            let (i, answers) = joined?;
            outcome.collect(plan, i, answers)?;
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, answers) = joined?;
        outcome.collect(plan, i, answers)?;
    }
    outcome.finish()?;
    Ok(outcome)
}

/// People start on a fixed schedule; latency from each one's scheduled time, so time a
/// post waited to be sent (the generator itself falling behind) counts against the
/// server too, never hides.
async fn open_loop(
    client: &reqwest::Client,
    args: &Args,
    plan: &Arc<Plan>,
    rate: f64,
    duration: f64,
) -> anyhow::Result<Outcome> {
    let total = (rate * duration).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    let mut outcome = Outcome::new(total * plan.per_person as usize, args.record.as_deref())?
        .with_timeline(args.timeline.as_deref(), interval)?;
    let mut late = 0usize;
    for i in 0..total {
        let scheduled = start + interval.mul_f64(i as f64);
        if tokio::time::Instant::now() > scheduled + Duration::from_millis(1) {
            late += 1;
        }
        tokio::time::sleep_until(scheduled).await;
        let (client, shared) = (client.clone(), plan.clone());
        tasks.spawn(async move { (i, person(client, shared, i, scheduled).await) });
        // Reap finished posts as we go so memory stays flat on long runs.
        while let Some(joined) = tasks.try_join_next() {
            let (i, answers) = joined?;
            outcome.collect(plan, i, answers)?;
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, answers) = joined?;
        outcome.collect(plan, i, answers)?;
    }
    outcome.finish()?;
    if late > 0 {
        println!(
            "generator:       {late} people started later than 1 ms after their scheduled time (counted in latency)"
        );
    }
    Ok(outcome)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(args.rate.unwrap_or(0.0) as usize / 10))
        // The daemon closes a connection idle for `http.header_read_timeout_secs` (10 s by
        // default); one reused just as it closes ends without an answer, so idle ones are
        // dropped well before that.
        .pool_idle_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()?;
    // The direct baseline has no metrics; it stores before it answers (--intake-only).
    let stored_before = if args.intake_only {
        0.0
    } else {
        stored_total(&client, &args.url).await?
    };
    let run = format!(
        "{:x}",
        std::process::id() ^ (chrono::Utc::now().timestamp() as u32)
    );

    let plan = Arc::new(Plan {
        urls: args.url.clone(),
        forms: args.forms.clone(),
        run: run.clone(),
        per_person: args.per_person,
    });
    let started = Instant::now();
    let outcome = match (args.rate, args.duration) {
        (Some(rate), Some(duration)) => {
            if !(rate > 0.0 && duration > 0.0) {
                anyhow::bail!("--rate and --duration must be positive");
            }
            println!(
                "loadgen: open loop, {rate} people/s for {duration} s, {} posts each, forms {:?}, run {run}",
                args.per_person, args.forms
            );
            open_loop(&client, &args, &plan, rate, duration).await?
        }
        _ => {
            println!(
                "loadgen: {} people, concurrency {}, {} posts each, forms {:?}, run {run}",
                args.requests, args.concurrency, args.per_person, args.forms
            );
            closed_loop(&client, &args, &plan).await?
        }
    };
    let intake_elapsed = started.elapsed();
    let (mut latencies, errors) = (outcome.latencies, outcome.errors);
    let accepted = latencies.len();
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
        let stored = stored_total(&client, &args.url).await? - stored_before;
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
