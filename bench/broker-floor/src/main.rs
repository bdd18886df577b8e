//! The broker's floor: what RabbitMQ alone takes to confirm one durable message on a
//! quorum queue of this machine, open loop, with nothing of leadpipe around it.
//!
//! Messages of `--bytes` bytes are published on a fixed schedule (`--rate` per second for
//! `--duration` seconds), each on a confirm-mode channel of its own until its confirm
//! arrives, as leadpipe's publisher does, spread over `--queues` quorum queues that a
//! consumer per queue drains and acknowledges, as the store does. Latency runs from each
//! message's scheduled time to its confirm, so a stalled broker shows as latency (no
//! coordinated omission). Set beside leadpipe's open-loop figures, it tells how much of
//! an acknowledgement is the broker's own write and how much leadpipe adds.
//!
//! `--burst K` publishes K messages at each scheduled time (the same rate in groups), and
//! `--ack-every-ms T` acknowledges on a timer as leadpipe's consumers do after their batch
//! wait: with them the broker's CPU per message can be set beside how messages arrive.
//!
//! `--queue-type classic` or `classic-v2` measures RabbitMQ's classic queues instead of
//! quorum queues, to see what the queue type itself costs a message.
//!
//! `--envelope-of QUEUE` instead prints the mean size of one inquiry in the messages
//! waiting on a leadpipe shard queue (a look at up to 100 of them, handed back unacked),
//! so the floor can be measured with messages of the daemon's own size.
//!
//! ```text
//! lpbroker --rate 500 --duration 20 --bytes 1200
//! lpbroker --rate 2000 --duration 15 --burst 4 --ack-every-ms 200
//! lpbroker --rate 500 --duration 15 --ack-every-ms 200 --queue-type classic-v2
//! lpbroker --envelope-of lpbench.shard.0
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::task::JoinSet;

/// Publishes durable messages to broker queues on a schedule and reports confirm latency.
#[derive(Parser)]
#[command(about)]
struct Args {
    /// The broker.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,
    /// Messages per second.
    #[arg(long, required_unless_present = "envelope_of")]
    rate: Option<f64>,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Size of each message body.
    #[arg(long, default_value_t = 1500)]
    bytes: usize,
    /// Quorum queues the messages are spread over (leadpipe's shards).
    #[arg(long, default_value_t = 4)]
    queues: usize,
    /// Messages the consumer of a queue may hold unacknowledged.
    #[arg(long, default_value_t = 200)]
    prefetch: u16,
    /// Messages that share each scheduled time (published together, as a group).
    #[arg(long, default_value_t = 1)]
    burst: usize,
    /// Acknowledge on this period instead of whenever no more is waiting (leadpipe's
    /// consumers hold deliveries for a batch wait before one multiple-ack).
    #[arg(long)]
    ack_every_ms: Option<u64>,
    /// Queue type of the measured queues: `quorum` (leadpipe's), `classic` or `classic-v2`
    /// (RabbitMQ's classic queue with its version 2 index), to see what a queue type costs.
    #[arg(long, value_enum, default_value_t = QueueType::Quorum)]
    queue_type: QueueType,
    /// Print the mean bytes of one inquiry in the messages waiting on this leadpipe shard
    /// queue, and publish nothing.
    #[arg(long)]
    envelope_of: Option<String>,
}

/// The kind of RabbitMQ queue the messages go to.
#[derive(Clone, Copy, ValueEnum)]
enum QueueType {
    /// Replicated Raft log, as leadpipe declares its shards.
    Quorum,
    /// A classic queue with the broker's default index.
    Classic,
    /// A classic queue with the version 2 index.
    ClassicV2,
}

impl QueueType {
    /// The name `--queue-type` takes for it.
    fn name(self) -> String {
        self.to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let connection = Arc::new(
        Connection::connect(
            &args.url,
            ConnectionProperties::default().with_connection_name("lpbroker".into()),
        )
        .await
        .with_context(|| format!("cannot connect to the broker at {}", args.url))?,
    );
    if let Some(queue) = &args.envelope_of {
        let bytes = envelope_bytes(&connection, queue).await;
        let _ = connection.close(200, "done".into()).await;
        println!("{}", bytes?);
        return Ok(());
    }
    let rate = args.rate.unwrap_or_default();
    if !(rate > 0.0 && args.duration > 0.0) || args.queues == 0 {
        anyhow::bail!("--rate, --duration and --queues must be positive");
    }
    let queues: Vec<String> = (0..args.queues)
        .map(|i| format!("lpfloor-{}.q.{i}", std::process::id()))
        .collect();
    let outcome = run(&connection, &args, rate, &queues).await;
    // Durable queues outlive the run otherwise.
    if let Ok(channel) = connection.create_channel().await {
        for queue in &queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "done".into()).await;
    outcome
}

async fn run(
    connection: &Arc<Connection>,
    args: &Args,
    rate: f64,
    queues: &[String],
) -> anyhow::Result<()> {
    let setup = connection.create_channel().await?;
    let mut queue_args = FieldTable::default();
    match args.queue_type {
        QueueType::Quorum => {
            queue_args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        QueueType::ClassicV2 => {
            queue_args.insert("x-queue-version".into(), AMQPValue::LongInt(2));
        }
        QueueType::Classic => {}
    }
    for queue in queues {
        setup
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                queue_args.clone(),
            )
            .await
            .with_context(|| {
                format!(
                    "cannot declare the {} queue {queue}",
                    args.queue_type.name()
                )
            })?;
    }
    let mut consumers = JoinSet::new();
    for queue in queues {
        consumers.spawn(consume(
            connection.create_channel().await?,
            queue.clone(),
            args.prefetch,
            args.ack_every_ms,
        ));
    }

    let pool: Arc<Mutex<Vec<Channel>>> = Arc::default();
    let body: Arc<[u8]> = vec![b'x'; args.bytes].into();
    let total = (rate * args.duration).round() as usize;
    let burst = args.burst.max(1);
    let interval = Duration::from_secs_f64(burst as f64 / rate);
    let start = tokio::time::Instant::now();
    let mut publishes = JoinSet::new();
    let mut late = 0usize;
    for i in 0..total {
        let scheduled = start + interval.mul_f64((i / burst) as f64);
        if tokio::time::Instant::now() > scheduled + Duration::from_millis(1) {
            late += 1;
        }
        tokio::time::sleep_until(scheduled).await;
        let queue = queues[i % queues.len()].clone();
        let (connection, pool, body) = (connection.clone(), pool.clone(), body.clone());
        publishes.spawn(async move {
            let outcome = publish(&connection, &pool, &queue, &body).await;
            (scheduled.elapsed(), outcome)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failures = 0usize;
    while let Some(joined) = publishes.join_next().await {
        let (latency, outcome) = joined?;
        match outcome {
            Ok(()) => latencies.push(latency),
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    eprintln!("lpbroker: a publish failed: {error:#}");
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    consumers.abort_all();
    latencies.sort();
    let ms = |p: f64| percentile(&latencies, p).as_secs_f64() * 1e3;
    println!(
        "lpbroker: {} of {total} confirmed in {elapsed:.1} s ({failures} failed), {} bytes a message, {} {} queues",
        latencies.len(),
        args.bytes,
        queues.len(),
        args.queue_type.name()
    );
    println!(
        "confirm latency: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        ms(50.0),
        ms(99.0),
        ms(99.9),
        ms(100.0)
    );
    if late > 0 {
        println!(
            "generator: {late} messages started later than 1 ms after their scheduled time (counted in latency)"
        );
    }
    if failures > 0 {
        anyhow::bail!("{failures} publishes were not confirmed");
    }
    Ok(())
}

/// Mean bytes of one inquiry in up to 100 messages waiting on `queue`: a batch message
/// carries one envelope a line. A consumer takes them (a shard queue has a single active
/// consumer, so `basic.get` is refused) and they go back unacked when its channel closes.
async fn envelope_bytes(connection: &Connection, queue: &str) -> anyhow::Result<usize> {
    let channel = connection.create_channel().await?;
    channel.basic_qos(100, BasicQosOptions::default()).await?;
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            "lpbroker-look".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("cannot read from the queue {queue}"))?;
    let (mut bytes, mut inquiries) = (0usize, 0usize);
    for _ in 0..100 {
        let next = tokio::time::timeout(Duration::from_millis(500), deliveries.next()).await;
        let Ok(Some(delivery)) = next else {
            break;
        };
        let body = delivery?.data;
        bytes += body.len();
        inquiries += body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
    }
    let _ = channel.close(200, "looked".into()).await;
    if inquiries == 0 {
        anyhow::bail!("the queue {queue} holds no message to measure");
    }
    Ok(bytes / inquiries)
}

/// Publishes one message on a channel of its own and waits for its confirm.
async fn publish(
    connection: &Connection,
    pool: &Mutex<Vec<Channel>>,
    queue: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    let pooled = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let channel = match pooled {
        Some(channel) => channel,
        None => {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channel
        }
    };
    let confirmation = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await?;
    match confirmation {
        Confirmation::Ack(None) => {
            pool.lock().unwrap_or_else(|e| e.into_inner()).push(channel);
            Ok(())
        }
        other => anyhow::bail!("the broker did not confirm the message: {other:?}"),
    }
}

/// Drains `queue`, acknowledging everything received so far whenever no more is waiting.
async fn consume(
    channel: Channel,
    queue: String,
    prefetch: u16,
    ack_every_ms: Option<u64>,
) -> anyhow::Result<()> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            "lpbroker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    if let Some(period) = ack_every_ms {
        let mut tick = tokio::time::interval(Duration::from_millis(period));
        let mut last = None;
        loop {
            tokio::select! {
                next = deliveries.next() => match next {
                    Some(delivery) => last = Some(delivery?.delivery_tag),
                    None => return Ok(()),
                },
                _ = tick.tick() => {
                    if let Some(tag) = last.take() {
                        channel.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
                    }
                }
            }
        }
    }
    while let Some(delivery) = deliveries.next().await {
        let mut last = delivery?.delivery_tag;
        let mut held = 1;
        while held < 100 {
            match futures_util::FutureExt::now_or_never(deliveries.next()) {
                Some(Some(next)) => {
                    last = next?.delivery_tag;
                    held += 1;
                }
                _ => break,
            }
        }
        channel
            .basic_ack(last, BasicAckOptions { multiple: true })
            .await?;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
