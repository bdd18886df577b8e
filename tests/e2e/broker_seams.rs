//! Broker seams: the daemon keeps its promises when the broker's topology is broken
//! underneath it (a shard queue or the dead-letter queue deleted, queues declared by an
//! older release, undecodable dead letters).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::support::{TestDaemon, amqp_connect, publish_raw, queue_counts, wait_for_ready};

const URLENCODED: &str = "application/x-www-form-urlencoded";

/// The email of test person `i`.
fn seam_email(i: usize) -> String {
    format!("seam{i}@example.com")
}

/// What intake answered one person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accepted,
    /// 503: the broker returned the message, lost the connection or did not confirm in
    /// time; the client retries with the same Idempotency-Key.
    Refused,
    Other(Option<u16>),
}

/// Posts each of `people` to `en-contact` at `concurrency`, each with its own
/// Idempotency-Key.
async fn post_people(
    http: reqwest::Client,
    base: String,
    prefix: String,
    people: Vec<usize>,
    concurrency: usize,
) -> HashMap<usize, Answer> {
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for i in people {
        let http = http.clone();
        let url = format!("{base}/v1/intake/forms/en-contact");
        let key = format!("{prefix}-seam-{i}");
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            let body = format!("name=Seam+Test+{i}&email=seam{i}%40example.com&message=seam");
            let response = http
                .post(url)
                .header("content-type", URLENCODED)
                .header("idempotency-key", key)
                .timeout(Duration::from_secs(20))
                .body(body)
                .send()
                .await;
            let answer = match response {
                Ok(r) if r.status() == 202 => Answer::Accepted,
                Ok(r) if r.status() == 503 => Answer::Refused,
                Ok(r) => Answer::Other(Some(r.status().as_u16())),
                Err(_) => Answer::Other(None),
            };
            (i, answer)
        });
    }
    let mut out = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, answer) = joined.expect("a request task");
        out.insert(i, answer);
    }
    out
}

/// How many leads each test person has.
async fn stored_people(pool: &sqlx::PgPool) -> HashMap<String, i64> {
    sqlx::query_as("SELECT email, count(*) FROM leads WHERE email LIKE 'seam%' GROUP BY email")
        .fetch_all(pool)
        .await
        .expect("count leads")
        .into_iter()
        .collect()
}

/// Waits until every accepted person of `people` is stored and `queue` has a consumer
/// and no ready message: nothing for that queue is in flight or waiting any more.
async fn wait_until_settled(
    pool: &sqlx::PgPool,
    queue: &str,
    people: &HashSet<usize>,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let stored = stored_people(pool).await;
        if people.iter().all(|i| stored.contains_key(&seam_email(*i)))
            && let Some((messages, consumers)) = queue_counts(queue).await
            && messages == 0
            && consumers > 0
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_queue_deleted_under_load_never_turns_a_returned_message_into_a_202() {
    use lapin::options::QueueDeleteOptions;

    // At least CYCLES deletions; more, up to MAX_CYCLES, while none has yet met a publish:
    // the consumer declares its queue again within milliseconds, and on a loaded machine
    // the posts of a cycle can all come after that.
    const CYCLES: usize = 12;
    const MAX_CYCLES: usize = 36;
    let mut daemon = TestDaemon::start().await;
    daemon.kill();
    // Many publishes in flight at once, each on a channel of its own.
    daemon.env = vec![("LEADPIPE__AMQP__PUBLISHER_CHANNELS".into(), "16".into())];
    daemon.launch(true).await;
    let pool = daemon.db().await;
    let shard0 = format!("{}.shard.0", daemon.prefix);
    // People of shard 1 keep the channels busy with publishes that are routed; people of
    // shard 0 meet the deleted queue. (The shard is chosen by the person's email key.)
    let (mut lane0, mut lane1): (Vec<usize>, Vec<usize>) = (0..MAX_CYCLES * 200)
        .partition(|i| router::routing::shard_for(&format!("email:{}", seam_email(*i)), 2) == 0);
    let amqp = amqp_connect().await;
    let mut answers: HashMap<usize, Answer> = HashMap::new();
    let mut accepted0: HashSet<usize> = HashSet::new();
    let mut deletions = 0;
    let mut settled = true;
    for cycle in 0..MAX_CYCLES {
        if cycle >= CYCLES
            && publish_failures(&daemon.get("/metrics").await.text(), "unroutable") > 0
        {
            break;
        }
        // Deleting a queue drops what it holds and confirms what is on its way to it
        // (RabbitMQ's semantics): delete it only once everything accepted for it is stored
        // and no publish for it is in flight, so whatever is lost afterwards is leadpipe's
        // doing.
        if !wait_until_settled(&pool, &shard0, &accepted0, Duration::from_secs(20)).await {
            settled = false;
            break;
        }
        let busy = lane1.split_off(lane1.len().saturating_sub(100));
        let busy = tokio::spawn(post_people(
            daemon.http.clone(),
            daemon.base.clone(),
            daemon.prefix.clone(),
            busy,
            32,
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let channel = amqp.create_channel().await.expect("a channel");
        channel
            .queue_delete(shard0.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete the shard queue");
        let _ = channel.close(200, "deleted".into()).await;
        deletions += 1;
        let hit = lane0.split_off(lane0.len().saturating_sub(60));
        let hit = post_people(
            daemon.http.clone(),
            daemon.base.clone(),
            daemon.prefix.clone(),
            hit,
            32,
        )
        .await;
        accepted0.extend(
            hit.iter()
                .filter(|(_, a)| **a == Answer::Accepted)
                .map(|(i, _)| *i),
        );
        answers.extend(hit);
        answers.extend(busy.await.expect("the busy lane"));
    }
    let _ = amqp.close(200, "done".into()).await;

    let with = |answer: Answer| -> HashSet<usize> {
        answers
            .iter()
            .filter(|(_, a)| **a == answer)
            .map(|(i, _)| *i)
            .collect()
    };
    let (accepted, refused) = (with(Answer::Accepted), with(Answer::Refused));
    let other: Vec<(&usize, &Answer)> = answers
        .iter()
        .filter(|(_, a)| matches!(a, Answer::Other(_)))
        .collect();
    assert!(other.is_empty(), "only 202 or 503: {other:?}");

    // Everything routed is consumed: both shards settle, every 202 is stored.
    for shard in 0..2 {
        let queue = format!("{}.shard.{shard}", daemon.prefix);
        wait_until_settled(&pool, &queue, &accepted, Duration::from_secs(30)).await;
    }
    // Let a would-be duplicate or a late message arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = stored_people(&pool).await;
    pool.close().await;
    let metrics = daemon.get("/metrics").await.text();
    let failures = |reason: &str| publish_failures(&metrics, reason);
    let (unroutable, timed_out) = (failures("unroutable"), failures("timeout"));

    let is_stored = |i: &usize| stored.contains_key(&seam_email(*i));
    let mut refused_but_stored: Vec<&usize> = refused.iter().filter(|i| is_stored(i)).collect();
    refused_but_stored.sort();
    let mut accepted_but_lost: Vec<&usize> = accepted.iter().filter(|i| !is_stored(i)).collect();
    accepted_but_lost.sort();
    let doubled: Vec<(&String, &i64)> = stored.iter().filter(|(_, n)| **n > 1).collect();
    // A publish that timed out may have been stored after all (its client's retry with the
    // same key is then a no-op); a returned one never is.
    assert!(
        refused_but_stored.len() as u64 <= timed_out
            && accepted_but_lost.is_empty()
            && doubled.is_empty(),
        "{} accepted, {} refused ({unroutable} returned, {timed_out} timed out) after \
         {deletions} deletions: {} refused but stored (e.g. {:?}), {} accepted but lost \
         (e.g. {:?}), {} stored twice\n{}",
        accepted.len(),
        refused.len(),
        refused_but_stored.len(),
        refused_but_stored.iter().take(5).collect::<Vec<_>>(),
        accepted_but_lost.len(),
        accepted_but_lost.iter().take(5).collect::<Vec<_>>(),
        doubled.len(),
        daemon.log()
    );
    assert!(
        settled && deletions >= CYCLES,
        "the shard queue came back and was consumed after each deletion ({deletions} made)\n{}",
        daemon.log()
    );
    assert!(
        unroutable > 0,
        "deleting the shard queue {deletions} times made some publishes unroutable \
         ({} accepted, {} refused)",
        accepted.len(),
        refused.len(),
    );
    // Five in eight posts go to the other shard, whose queue was never touched.
    assert!(
        accepted.len() > answers.len() / 2,
        "publishes to the intact shard went through: {} of {} accepted ({unroutable} returned)",
        accepted.len(),
        answers.len(),
    );
}

/// `leadpipe_publish_failures_total{reason}` from a `/metrics` page (0 when absent).
fn publish_failures(metrics: &str, reason: &str) -> u64 {
    let series = format!("leadpipe_publish_failures_total{{reason=\"{reason}\"}}");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_queues_deleted_underneath_are_declared_and_consumed_again() {
    use lapin::options::QueueDeleteOptions;

    let daemon = TestDaemon::start().await;
    let pool = daemon.db().await;
    for shard in 0..2 {
        let queue = format!("{}.shard.{shard}", daemon.prefix);
        assert!(
            wait_until_settled(&pool, &queue, &HashSet::new(), Duration::from_secs(30)).await,
            "{queue} is consumed"
        );
        let amqp = amqp_connect().await;
        let channel = amqp.create_channel().await.expect("a channel");
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete a shard queue");
        let _ = amqp.close(200, "deleted".into()).await;
    }

    // A client retries a 503 with the same Idempotency-Key, as the Retry-After asks.
    for i in 0..20 {
        let key = format!("{}-back-{i}", daemon.prefix);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = daemon
                .post_form(
                    "en-contact",
                    Some(URLENCODED),
                    format!("name=Back+{i}&email=back{i}%40example.com"),
                    &[("Idempotency-Key", key.as_str())],
                )
                .await;
            if r.status == 202 {
                break;
            }
            assert_eq!(r.status, 503, "{}", r.text());
            assert!(Instant::now() < deadline, "still 503: {}", r.text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    pool.close().await;
    let stored = daemon.wait_for_inquiries(20, Duration::from_secs(30)).await;
    assert_eq!(stored, 20, "every 202 is filed\n{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_whose_queue_was_deleted_waits_for_it_instead_of_being_lost() {
    use lapin::options::QueueDeleteOptions;

    let daemon = TestDaemon::start().await;
    let pool = daemon.db().await;
    let shard0 = format!("{}.shard.0", daemon.prefix);
    assert!(
        wait_until_settled(&pool, &shard0, &HashSet::new(), Duration::from_secs(30)).await,
        "{shard0} is consumed"
    );
    pool.close().await;
    let dead = format!("{}.dead", daemon.prefix);
    let amqp = amqp_connect().await;
    let channel = amqp.create_channel().await.expect("a channel");
    channel
        .queue_delete(dead.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete the dead-letter queue");
    let _ = amqp.close(200, "deleted".into()).await;

    // A message the consumer cannot decode can only be dead-lettered.
    publish_raw(&daemon.prefix, 0, b"this is not an envelope").await;

    let counts = wait_for_ready(&dead, 1, Duration::from_secs(30)).await;
    assert_eq!(
        counts.map(|(ready, _)| ready),
        Some(1),
        "the dead letter reached the dead-letter queue once it was back\n{}",
        daemon.log()
    );
    assert_eq!(
        queue_counts(&shard0).await.map(|(ready, _)| ready),
        Some(0),
        "and left its shard queue"
    );
}
