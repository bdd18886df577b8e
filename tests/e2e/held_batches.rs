//! A database that refuses writes for reasons of its own (read-only after a failover) holds
//! the leads on the broker: nothing is dead-lettered, an operator hears of it, and the leads
//! are filed once the database accepts writes again.

use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use sqlx::{Connection as _, PgConnection};

use crate::support::{TestDaemon, admin_database_url, amqp_url};

const URLENCODED: &str = "application/x-www-form-urlencoded";

/// Messages waiting in the daemon's dead-letter queue.
async fn dead_letters(daemon: &TestDaemon) -> u32 {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = conn.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            format!("{}.dead", daemon.prefix).as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the dead-letter queue exists");
    let _ = conn.close(200, "test".into()).await;
    queue.message_count()
}

/// The value of an unlabelled gauge in the daemon's metrics, if it is there.
async fn gauge(daemon: &TestDaemon, name: &str) -> Option<f64> {
    let text = daemon.get("/metrics").await.text();
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
}

/// Sets or clears the read-only default of the daemon's database and ends its sessions, as
/// a failover onto a standby (or back) does.
async fn set_read_only(daemon: &TestDaemon, on: bool) {
    let db = daemon.db_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = PgConnection::connect(&admin_database_url()).await.unwrap();
    let setting = if on {
        "SET default_transaction_read_only = on"
    } else {
        "RESET default_transaction_read_only"
    };
    sqlx::query(&format!("ALTER DATABASE \"{db}\" {setting}"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&db)
        .execute(&mut admin)
        .await
        .unwrap();
    let _ = admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_holds_the_leads_and_files_them_when_it_is_writable_again() {
    let mut daemon = TestDaemon::start().await;
    // Report a held batch after one second instead of a minute.
    daemon.kill();
    daemon
        .env
        .push(("LEADPIPE__DATABASE__HOLD_ALERT_SECS".into(), "1".into()));
    daemon.launch(true).await;

    set_read_only(&daemon, true).await;
    for i in 0..6 {
        let r = daemon
            .post_form(
                "it-contatti",
                Some(URLENCODED),
                format!("nome=Persona+{i}&email=persona{i}%40example.it"),
                &[],
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
    }

    // Held, visibly: the gauge grows and the log has the ERROR with its reason.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = gauge(&daemon, "leadpipe_store_held_seconds").await;
        if held.is_some_and(|s| s >= 1.0) && daemon.log().contains("keeps refusing a batch") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no held batch reported (gauge {held:?})\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(daemon.log().contains("25006"), "{}", daemon.log());
    assert_eq!(dead_letters(&daemon).await, 0, "{}", daemon.log());
    let pool = daemon.db().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM inquiries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    pool.close().await;

    set_read_only(&daemon, false).await;
    let leads = daemon
        .wait_for_leads("source=web-it-contatti", 6, Duration::from_secs(60))
        .await;
    assert_eq!(leads.len(), 6, "{}", daemon.log());
    assert_eq!(dead_letters(&daemon).await, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge(&daemon, "leadpipe_store_held_seconds").await != Some(0.0) {
        assert!(Instant::now() < deadline, "the held gauge returns to 0");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
