//! A pull task under the supervisor: restarts with backoff, and a lossless SIGTERM.

use std::time::{Duration, Instant};

use crate::daemon::{Daemon, FeedEntry, World, metric};
use crate::source::Feed;

const SOURCE: &str = "feed-a";

pub async fn a_pull_task_that_fails_twice_is_restarted_with_backoff_and_then_files_its_inquiries() {
    let world = World::new().await;
    let feed = Feed::start(2).await;
    feed.add(1, 5);
    let daemon = Daemon::start(
        &world,
        &FeedEntry {
            source: SOURCE,
            url: &feed.url,
            batch: 10,
            publish_delay_ms: 0,
        },
    )
    .await;

    let stored = world.wait_stored(SOURCE, 5, Duration::from_secs(60)).await;
    assert_eq!(
        stored,
        (1..=5).map(|seq| (seq, 1)).collect::<Vec<_>>(),
        "every item filed once\n{}",
        daemon.log()
    );

    let requests = feed.requests();
    assert!(
        requests.len() >= 3 && requests[0].failed && requests[1].failed && !requests[2].failed,
        "two failed runs, then a good one: {requests:?}"
    );
    // Restarted with a delay that grows (1 s, then 2 s, plus jitter): never a busy loop.
    let first_wait = requests[1].at - requests[0].at;
    let second_wait = requests[2].at - requests[1].at;
    assert!(
        first_wait >= Duration::from_secs(1) && second_wait >= Duration::from_secs(2),
        "restart delays {first_wait:?} then {second_wait:?}"
    );
    assert!(
        requests.iter().all(|r| r.after == 0 || r.after == 5),
        "each run starts from the committed cursor: {requests:?}"
    );
    assert_eq!(world.cursor(SOURCE).await, Some(5));

    let connector = daemon.connector(SOURCE).await;
    assert_eq!(connector["state"], "running", "{connector}");
    assert_eq!(connector["kind"], "pull", "{connector}");
    assert_eq!(connector["restarts"], 2, "{connector}");
    assert!(
        connector["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{connector}"
    );
    let metrics = daemon.metrics().await;
    let labels = ["channel=\"chat\"", "source=\"feed-a\""];
    assert_eq!(
        metric(&metrics, "leadpipe_connector_restarts_total", &labels),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "leadpipe_connector_up", &labels),
        Some(1.0)
    );
    assert!(
        metric(
            &metrics,
            "leadpipe_connector_last_success_timestamp_seconds",
            &labels
        )
        .is_some_and(|t| t > 1.0e9),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "leadpipe_connector_up",
            &["channel=\"form\"", "source=\"web-en-contact\""]
        ),
        Some(1.0),
        "HTTP connectors report up too: {metrics}"
    );
}

pub async fn sigterm_while_a_pull_task_holds_work_loses_nothing() {
    let world = World::new().await;
    let feed = Feed::start(0).await;
    feed.add(1, 30);
    let entry = FeedEntry {
        source: SOURCE,
        url: &feed.url,
        batch: 30,
        publish_delay_ms: 100,
    };
    let mut daemon = Daemon::start(&world, &entry).await;

    // The whole feed is one batch handed on an item every 100 ms: stop in its middle.
    let begun = world.wait_stored(SOURCE, 3, Duration::from_secs(60)).await;
    assert!(begun.len() >= 3, "the batch is under way\n{}", daemon.log());
    assert_eq!(world.cursor(SOURCE).await, None, "nothing committed yet");
    daemon.sigterm();
    let status = daemon.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the daemon exits cleanly after SIGTERM: {status:?}\n{}",
        daemon.log()
    );
    assert_eq!(
        world.cursor(SOURCE).await,
        Some(30),
        "the batch it held was handed on in full and committed\n{}",
        daemon.log()
    );

    // Whatever the consumers had not stored yet is on the broker: the next start files it.
    daemon.launch().await;
    let stored = world.wait_stored(SOURCE, 30, Duration::from_secs(60)).await;
    assert_eq!(
        stored,
        (1..=30).map(|seq| (seq, 1)).collect::<Vec<_>>(),
        "every item filed exactly once\n{}",
        daemon.log()
    );
    let restarted = daemon.pid();
    let deadline = Instant::now() + Duration::from_secs(30);
    let after_restart = loop {
        let reads: Vec<u64> = feed
            .requests()
            .iter()
            .filter(|r| r.replica == restarted)
            .map(|r| r.after)
            .collect();
        if !reads.is_empty() || Instant::now() > deadline {
            break reads;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !after_restart.is_empty() && after_restart.iter().all(|after| *after == 30),
        "the restarted task reads on from the cursor, nothing again: {after_restart:?}\n{}",
        daemon.log()
    );
}
