//! The local spool: while the broker cannot confirm, web intake keeps answering 202 from a
//! durable journal, and everything it accepted is filed exactly once when the broker is
//! back, in the order it came.

use std::time::Duration;

use crate::support::{Options, TestDaemon, amqp_url};

const URLENCODED: &str = "application/x-www-form-urlencoded";
const NOWHERE: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

/// A daemon whose broker is unreachable, spooling after `after_ms`.
async fn daemon_without_broker(extra_env: &[(&str, &str)]) -> TestDaemon {
    let mut daemon = TestDaemon::prepare_with(Options {
        amqp_url: Some(NOWHERE.into()),
        ..Options::default()
    })
    .await;
    daemon
        .env
        .push(("LEADPIPE__SPOOL__AFTER_MS".into(), "300".into()));
    for (k, v) in extra_env {
        daemon.env.push(((*k).into(), (*v).into()));
    }
    // Ready means degraded here: the database answers and the spool takes intake.
    daemon.launch(true).await;
    daemon
}

fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_keeps_answering_through_the_spool_and_files_everything_once_after_a_crash() {
    let mut daemon = daemon_without_broker(&[]).await;
    // Ten people write once and one person three times, in between: the drainer
    // publishes different people's entries together, one person's strictly in turn.
    let mut others = 0..10;
    for word in ["first", "second", "third"] {
        let r = daemon
            .post_form(
                "it-contatti",
                Some(URLENCODED),
                format!("nome=Lia&cognome=Neri&email=lia.neri%40example.it&messaggio={word}"),
                &[],
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
        for i in others.by_ref().take(5) {
            let r = daemon
                .post_form(
                    "en-contact",
                    Some(URLENCODED),
                    format!("name=Spooled+{i}&email=spooled{i}%40example.com"),
                    &[],
                )
                .await;
            assert_eq!(r.status, 202, "{}\n{}", r.text(), daemon.log());
        }
    }
    let ready = daemon.get("/readyz").await;
    assert_eq!(ready.status, 200, "degraded, not down: {}", ready.text());
    let body = ready.json();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["broker"], "down");
    assert_eq!(body["spool"]["entries"], 13, "{body}");
    assert_eq!(body["spool"]["full"], false);
    // The gauges follow within a drain round (a quarter of a second while the broker is
    // away).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = daemon.get("/metrics").await.text();
        if gauge(&metrics, "leadpipe_spool_entries") == Some(13.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leadpipe_spool_entries is 13:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The process dies with everything still spooled; the next one has the broker.
    daemon.kill();
    daemon.env.push(("LEADPIPE__AMQP__URL".into(), amqp_url()));
    daemon.launch(true).await;
    let stored = daemon.wait_for_inquiries(13, Duration::from_secs(60)).await;
    assert_eq!(stored, 13, "{}", daemon.log());
    let pool = daemon.db().await;
    let leads: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(leads, 11, "ten people and Lia");
    let messages: Vec<String> = sqlx::query_scalar(
        "SELECT a.body FROM activities a JOIN leads l ON l.id = a.lead_id
         WHERE l.email = 'lia.neri@example.it' ORDER BY a.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        messages,
        ["first", "second", "third"],
        "filed in the order posted"
    );
    // Nothing is published twice: a short wait shows no more inquiries arriving.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again: i64 = sqlx::query_scalar("SELECT count(*) FROM inquiries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(again, 13);
    pool.close().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = daemon.get("/readyz").await.json();
        if ready["status"] == "ready" {
            assert_eq!(ready["spool"]["entries"], 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the spool drained: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_a_plain_503_naming_it() {
    let daemon = daemon_without_broker(&[
        ("LEADPIPE__SPOOL__MAX_BYTES", "8192"),
        ("LEADPIPE__SPOOL__SEGMENT_BYTES", "4096"),
    ])
    .await;
    let mut accepted = 0;
    let refusal = loop {
        let r = daemon
            .post_form(
                "en-contact",
                Some(URLENCODED),
                format!("name=Full+{accepted}&email=full{accepted}%40example.com"),
                &[],
            )
            .await;
        if r.status != 202 {
            break r;
        }
        accepted += 1;
        assert!(accepted < 50, "the cap never bit");
    };
    assert!(accepted >= 1, "the spool took something first");
    refusal.assert_error(503, "spool_full");
    assert!(refusal.headers.contains_key("retry-after"));
    let ready = daemon.get("/readyz").await;
    assert_eq!(ready.status, 503, "full and no broker: not ready");
    assert_eq!(ready.json()["spool"]["full"], true);
}

/// The sum of a counter's series (over its labels), 0 when absent.
fn counter_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_that_rolls_segments_while_it_drains_empties_completely() {
    // Posts spool as soon as a confirm takes over a millisecond, and segments hold a few
    // entries each: the drainer keeps reaching the end of the segment being written just
    // as the writer moves on to the next one.
    let mut daemon = TestDaemon::prepare_with(Options::default()).await;
    for (k, v) in [
        ("LEADPIPE__SPOOL__AFTER_MS", "1"),
        ("LEADPIPE__SPOOL__SEGMENT_BYTES", "4096"),
    ] {
        daemon.env.push((k.into(), v.into()));
    }
    daemon.launch(true).await;
    const POSTS: usize = 3_000;
    const PEOPLE: usize = 1_000;
    let daemon = std::sync::Arc::new(daemon);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..48)
        .map(|_| {
            let (daemon, next) = (daemon.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= POSTS {
                        return;
                    }
                    let person = i % PEOPLE;
                    let r = daemon
                        .post_form(
                            "en-contact",
                            Some(URLENCODED),
                            format!(
                                "name=Roll+{person}&email=roll{person}%40example.com&message=post+{i}"
                            ),
                            &[],
                        )
                        .await;
                    assert_eq!(r.status, 202, "{}", r.text());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("a poster");
    }
    let metrics = daemon.get("/metrics").await.text();
    let spooled = counter_sum(&metrics, "leadpipe_inquiries_spooled_total");
    assert!(
        spooled >= 100.0,
        "the load went through the spool ({spooled} spooled); the test needs it to"
    );
    let stored = daemon
        .wait_for_inquiries(POSTS as i64, Duration::from_secs(90))
        .await;
    let ready = daemon.get("/readyz").await.json();
    assert_eq!(
        stored,
        POSTS as i64,
        "every accepted post is filed while the daemon runs; spool: {}\n{}",
        ready["spool"],
        daemon.log()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = daemon.get("/readyz").await.json();
        if ready["spool"]["entries"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the spool drained: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_post_spooled_each_is_filed_once_in_order_and_a_stop_empties_the_journal() {
    let mut daemon = TestDaemon::prepare_with(Options::default()).await;
    daemon
        .env
        .push(("LEADPIPE__SPOOL__MODE".into(), "always".into()));
    // A broker that does not confirm within the default second would spool anyway: a
    // minute shows that every post goes to the journal because of the mode alone.
    daemon
        .env
        .push(("LEADPIPE__SPOOL__AFTER_MS".into(), "60000".into()));
    daemon.launch(true).await;
    const PEOPLE: usize = 120;
    const ROUNDS: usize = 3;
    const POSTERS: usize = 24;
    let daemon = std::sync::Arc::new(daemon);
    // Each poster writes for its own people, one post at a time, so every person's posts
    // have an order.
    let posters: Vec<_> = (0..POSTERS)
        .map(|poster| {
            let daemon = daemon.clone();
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    for person in (poster..PEOPLE).step_by(POSTERS) {
                        let r = daemon
                            .post_form(
                                "en-contact",
                                Some(URLENCODED),
                                format!(
                                    "name=Always+{person}&email=always{person}%40example.com&message=round+{round}"
                                ),
                                &[],
                            )
                            .await;
                        assert_eq!(r.status, 202, "{}", r.text());
                    }
                }
            })
        })
        .collect();
    for poster in posters {
        poster.await.expect("a poster");
    }
    let metrics = daemon.get("/metrics").await.text();
    assert_eq!(
        counter_sum(&metrics, "leadpipe_inquiries_spooled_total"),
        (PEOPLE * ROUNDS) as f64,
        "every post went through the journal"
    );

    // Stopped at once: the stop publishes what the journal still holds before it closes.
    let mut daemon = std::sync::Arc::into_inner(daemon).expect("the posters are done");
    let mut child = daemon.take_child().expect("a running daemon");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("the daemon exits");
    assert!(status.success(), "a clean exit: {}", daemon.log());
    assert!(
        !daemon.log().contains("Stopping with entries in the spool"),
        "the stop emptied the journal:\n{}",
        daemon.log()
    );
    assert!(
        !crate::support::spool_dir(&daemon.prefix).exists(),
        "an empty journal leaves no files"
    );

    daemon.launch(true).await;
    let stored = daemon
        .wait_for_inquiries((PEOPLE * ROUNDS) as i64, Duration::from_secs(90))
        .await;
    assert_eq!(stored, (PEOPLE * ROUNDS) as i64, "{}", daemon.log());
    let pool = daemon.db().await;
    let leads: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(leads, PEOPLE as i64, "one lead a person");
    let out_of_order: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT l.email, array_agg(a.body ORDER BY a.id) FROM activities a
         JOIN leads l ON l.id = a.lead_id GROUP BY l.email
         HAVING array_agg(a.body ORDER BY a.id) <> ARRAY['round 0', 'round 1', 'round 2']",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        out_of_order.is_empty(),
        "each person's posts in order: {out_of_order:?}"
    );
    pool.close().await;
    let ready = daemon.get("/readyz").await.json();
    assert_eq!(ready["status"], "ready", "{ready}");
}
