//! Two daemons on one database: one reads the source, the other stands by.

use std::time::{Duration, Instant};

use crate::daemon::{Daemon, FeedEntry, World};
use crate::source::Feed;

const SOURCE: &str = "feed-shared";

pub async fn the_lease_moves_to_the_survivor_within_10_s_of_sigkill_and_the_cursor_resumes_without_gaps_or_repeats()
 {
    let world = World::new().await;
    let feed = Feed::start(0).await;
    feed.add(1, 20);
    let entry = FeedEntry {
        source: SOURCE,
        url: &feed.url,
        batch: 4,
        publish_delay_ms: 20,
    };
    let mut first = Daemon::start(&world, &entry).await;
    assert!(
        first
            .wait_state(SOURCE, "running", Duration::from_secs(30))
            .await,
        "the first daemon takes the lease\n{}",
        first.log()
    );
    let second = Daemon::start(&world, &entry).await;
    assert!(
        second
            .wait_state(SOURCE, "standby", Duration::from_secs(30))
            .await,
        "the second daemon stands by\n{}",
        second.log()
    );

    // The first daemon reads everything there is, then keeps polling.
    let deadline = Instant::now() + Duration::from_secs(60);
    while world.cursor(SOURCE).await != Some(20) {
        assert!(
            Instant::now() < deadline,
            "the cursor reaches 20\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (first_pid, second_pid) = (first.pid(), second.pid());
    assert!(
        feed.requests().iter().all(|r| r.replica == first_pid),
        "only the lease holder reads the source"
    );

    first.kill();
    let killed = Instant::now();
    feed.add(21, 40);

    let taken_over = loop {
        if let Some(request) = feed
            .requests()
            .into_iter()
            .find(|r| r.replica == second_pid)
        {
            break request;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the survivor never read the source\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let waited = taken_over.at.duration_since(killed);
    assert!(
        waited <= Duration::from_secs(10),
        "the lease moved {waited:?} after SIGKILL"
    );
    assert_eq!(
        taken_over.after, 20,
        "the survivor resumes at the committed cursor"
    );

    let stored = world.wait_stored(SOURCE, 40, Duration::from_secs(60)).await;
    assert_eq!(
        stored,
        (1..=40).map(|seq| (seq, 1)).collect::<Vec<_>>(),
        "every item filed exactly once\n{}",
        second.log()
    );
    // The survivor's reads form one chain from the cursor: each asks from where the
    // previous answer ended, so nothing is skipped and nothing read twice.
    let reads: Vec<_> = feed
        .requests()
        .into_iter()
        .filter(|r| r.replica == second_pid)
        .collect();
    let mut expected = 20;
    for read in &reads {
        assert_eq!(read.after, expected, "{reads:?}");
        expected = read.last.unwrap_or(expected);
    }
    assert_eq!(expected, 40, "{reads:?}");
    assert_eq!(world.cursor(SOURCE).await, Some(40));
    assert_eq!(
        second.connector(SOURCE).await["state"],
        "running",
        "{}",
        second.log()
    );
}
