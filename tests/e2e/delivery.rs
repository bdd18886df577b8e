//! Delivery guarantees: a 202 is durable, replays make no second lead, and a daemon
//! killed or stopped mid-load loses and duplicates nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::support::TestDaemon;

const URLENCODED: &str = "application/x-www-form-urlencoded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_means_the_lead_and_its_stage_history_are_in_postgresql() {
    let daemon = TestDaemon::start().await;
    let r = daemon
        .post_form(
            "it-contatti",
            Some(URLENCODED),
            "nome=Ottavio&cognome=Serra&email=ottavio.serra%40example.it&telefono=02+4455+6677",
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let inquiry_id: uuid::Uuid = r.json()["inquiry_id"].as_str().unwrap().parse().unwrap();

    daemon.wait_for_inquiries(1, Duration::from_secs(30)).await;
    let pool = daemon.db().await;
    let (lead_id, phone, stage): (i64, Option<String>, String) = sqlx::query_as(
        "SELECT l.id, l.phone, s.code FROM leads l JOIN stages s ON s.id = l.stage_id WHERE l.inquiry_id = $1",
    )
    .bind(inquiry_id)
    .fetch_one(&pool)
    .await
    .expect("the acknowledged lead is stored");
    assert_eq!(phone.as_deref(), Some("+390244556677"));
    assert_eq!(stage, "open");
    let history: Vec<(Option<i64>, String, String)> = sqlx::query_as(
        "SELECT h.from_stage_id, s.code, h.changed_by FROM lead_stage_history h
         JOIN stages s ON s.id = h.to_stage_id WHERE h.lead_id = $1",
    )
    .bind(lead_id)
    .fetch_all(&pool)
    .await
    .expect("history");
    assert_eq!(
        history,
        vec![(None, "open".to_owned(), "leadpipe".to_owned())]
    );
    let raw: Vec<u8> = sqlx::query_scalar("SELECT raw_body FROM inquiries WHERE id = $1")
        .bind(inquiry_id)
        .fetch_one(&pool)
        .await
        .expect("raw payload");
    assert_eq!(
        raw,
        b"nome=Ottavio&cognome=Serra&email=ottavio.serra%40example.it&telefono=02+4455+6677"
    );
    pool.close().await;

    let detail = daemon.get(&format!("/v1/leads/{lead_id}")).await.json();
    assert_eq!(detail["stage_history"][0]["to"], "open");
    assert_eq!(detail["activities"][0]["kind"], "form");
    assert_eq!(
        detail["activities"][0]["inquiry_id"],
        inquiry_id.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replay_makes_no_second_lead_and_another_body_is_refused() {
    let daemon = TestDaemon::start().await;
    let body = "first_name=Nora&last_name=Quill&email=nora.quill%40example.com&message=Quote";
    let key = [("Idempotency-Key", "3c0a9d2e-1111-4e5f-8a9b-000000000001")];
    let first = daemon
        .post_form("en-contact", Some(URLENCODED), body, &key)
        .await;
    assert_eq!(first.status, 202, "{}", first.text());
    let replay = daemon
        .post_form("en-contact", Some(URLENCODED), body, &key)
        .await;
    assert_eq!(replay.status, 202, "{}", replay.text());
    assert_eq!(first.json()["inquiry_id"], replay.json()["inquiry_id"]);

    let other = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            format!("{body}+again"),
            &key,
        )
        .await;
    other.assert_error(422, "idempotency_key_reused");

    // The same key on another form is another inquiry.
    let elsewhere = daemon
        .post_form(
            "en-demo-request",
            Some(URLENCODED),
            "full_name=Nora+Quill&email=nora.q2%40example.com",
            &key,
        )
        .await;
    assert_eq!(elsewhere.status, 202, "{}", elsewhere.text());
    assert_ne!(first.json()["inquiry_id"], elsewhere.json()["inquiry_id"]);

    daemon.wait_for_inquiries(2, Duration::from_secs(30)).await;
    // Give a would-be second lead time to appear.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leads = daemon.leads("email=nora.quill%40example.com").await;
    assert_eq!(leads.len(), 1, "one lead for one idempotency key");
}

/// Posts forms `from..to` at `concurrency`; calls `on_progress(done)` as answers arrive.
/// Returns each index's status (None when the connection failed).
async fn post_load(
    daemon: &TestDaemon,
    range: std::ops::Range<usize>,
    concurrency: usize,
    stop_after: usize,
    stop: impl FnOnce() + Send + 'static,
) -> HashMap<usize, Option<u16>> {
    let done = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for i in range {
        let http = daemon.http.clone();
        let url = format!("{}/v1/intake/forms/en-contact", daemon.base);
        let done = done.clone();
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            let body = format!("name=Load+Test+{i}&email=load{i}%40example.com&message=load");
            let status = http
                .post(url)
                .header("content-type", URLENCODED)
                .timeout(Duration::from_secs(15))
                .body(body)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            done.fetch_add(1, Ordering::SeqCst);
            (i, status)
        });
    }
    let watcher_done = done.clone();
    let watcher = tokio::spawn(async move {
        while watcher_done.load(Ordering::SeqCst) < stop_after {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::task::spawn_blocking(stop).await.expect("stop");
    });
    let mut out = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, status) = joined.expect("a request task");
        out.insert(i, status);
    }
    watcher.await.expect("the watcher");
    out
}

/// Checks that every acknowledged index is stored exactly once.
async fn assert_exactly_once(daemon: &TestDaemon, acked: &HashSet<usize>) {
    let pool = daemon.db().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let stored: HashMap<String, i64> = loop {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT email, count(*) FROM leads WHERE email LIKE 'load%' GROUP BY email",
        )
        .fetch_all(&pool)
        .await
        .expect("count leads");
        let map: HashMap<String, i64> = rows.into_iter().collect();
        let missing = acked
            .iter()
            .filter(|i| !map.contains_key(&format!("load{i}@example.com")))
            .count();
        if missing == 0 || std::time::Instant::now() > deadline {
            break map;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    pool.close().await;
    let lost: Vec<&usize> = acked
        .iter()
        .filter(|i| !stored.contains_key(&format!("load{i}@example.com")))
        .collect();
    let doubled: Vec<(&String, &i64)> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        lost.is_empty() && doubled.is_empty(),
        "{} acknowledged, {} lost (e.g. {:?}), {} doubled (e.g. {:?})\n{}",
        acked.len(),
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>(),
        doubled.len(),
        doubled.iter().take(5).collect::<Vec<_>>(),
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_messages_queued_and_under_load_loses_and_duplicates_nothing() {
    let mut daemon = TestDaemon::start().await;
    daemon.kill();

    // Phase 1: intake only, so every acknowledged message is still queued at the kill.
    daemon.env = vec![("LEADPIPE__AMQP__CONSUME".into(), "false".into())];
    daemon.launch(true).await;
    let queued = post_load(&daemon, 0..200, 16, 200, || {}).await;
    let mut acked: HashSet<usize> = queued
        .iter()
        .filter(|(_, s)| **s == Some(202))
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(acked.len(), 200, "all intake-only posts are acknowledged");
    assert_eq!(
        daemon
            .wait_for_inquiries(1, Duration::from_millis(300))
            .await,
        0
    );
    daemon.kill();

    // Phase 2: consumers on; kill halfway through a second load.
    daemon.env.clear();
    daemon.launch(true).await;
    let config = daemon.config_path.clone();
    let loaded = post_load(&daemon, 200..1000, 16, 400, move || {
        // The daemon is the only leadpipe process using this config file.
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-f", &config.display().to_string()])
            .status();
    })
    .await;
    daemon.kill();
    let second: HashSet<usize> = loaded
        .iter()
        .filter(|(_, s)| **s == Some(202))
        .map(|(i, _)| *i)
        .collect();
    assert!(second.len() < 800, "the kill landed during the load");
    assert!(
        !second.is_empty(),
        "something was acknowledged before the kill"
    );
    acked.extend(second);

    daemon.launch(true).await;
    assert_exactly_once(&daemon, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_work_and_exits_cleanly() {
    let mut daemon = TestDaemon::start().await;
    let mut child = daemon.take_child().expect("a running daemon");
    let clean_exit = Arc::new(std::sync::Mutex::new(None));
    let exit_slot = clean_exit.clone();
    let loaded = post_load(&daemon, 0..600, 16, 200, move || {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..800 {
            if let Ok(Some(status)) = child.try_wait() {
                *exit_slot.lock().unwrap() = Some(status.success());
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        *exit_slot.lock().unwrap() = Some(false);
    })
    .await;
    assert_eq!(
        *clean_exit.lock().unwrap(),
        Some(true),
        "the daemon exited cleanly after SIGTERM"
    );
    assert!(
        daemon.log().contains("Stopped."),
        "a clean shutdown is logged:\n{}",
        daemon.log()
    );
    let acked: HashSet<usize> = loaded
        .iter()
        .filter(|(_, s)| **s == Some(202))
        .map(|(i, _)| *i)
        .collect();
    assert!(!acked.is_empty());
    // Nothing answered 5xx: requests either finished or were never taken.
    assert!(
        loaded.values().all(|s| matches!(s, None | Some(202))),
        "statuses: {:?}",
        loaded.values().collect::<HashSet<_>>()
    );
    daemon.kill();
    daemon.launch(true).await;
    assert_exactly_once(&daemon, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_goes_to_the_dead_letter_queue_with_its_error_and_the_shard_moves_on() {
    use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
    use lapin::types::AMQPValue;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let daemon = TestDaemon::start().await;
    let conn = Connection::connect(&crate::support::amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for shard in 0..2 {
        let confirm = channel
            .basic_publish(
                format!("{}.intake", daemon.prefix).as_str().into(),
                format!("shard.{shard}").as_str().into(),
                BasicPublishOptions::default(),
                b"{\"not\": \"an envelope\"",
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    let dead_queue = format!("{}.dead", daemon.prefix);
    let mut dead = Vec::new();
    for _ in 0..150 {
        if let Some(message) = channel
            .basic_get(dead_queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            dead.push(message);
            if dead.len() == 2 {
                break;
            }
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        dead.len(),
        2,
        "both poison messages dead-lettered\n{}",
        daemon.log()
    );
    for message in &dead {
        assert_eq!(message.delivery.data, b"{\"not\": \"an envelope\"");
        let headers = message
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        let error = headers
            .inner()
            .iter()
            .find(|(k, _)| k.as_str() == "x-leadpipe-error")
            .and_then(|(_, v)| match v {
                AMQPValue::LongString(s) => Some(s.to_string()),
                _ => None,
            })
            .expect("the error is attached");
        assert!(error.contains("undecodable envelope"), "{error}");
    }
    let _ = conn.close(200, "done".into()).await;

    // The shards are not blocked.
    let r = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=After+Poison&email=after.poison%40example.com",
            &[],
        )
        .await;
    assert_eq!(r.status, 202);
    let leads = daemon
        .wait_for_leads(
            "email=after.poison%40example.com",
            1,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(leads.len(), 1);
}

/// A form inquiry as intake would publish it, routed to `pipeline`.
fn form_envelope(name: &str, email: &str, pipeline: &str) -> router::Envelope {
    use ingest::inquiry::{Channel, Inquiry, InquiryId};
    let mut inquiry = Inquiry::new(
        InquiryId::new_unique(),
        Channel::Form,
        "en-contact",
        chrono::Utc::now(),
    );
    inquiry.default_region = Some("GB".into());
    inquiry.contact.full_name = Some(name.into());
    inquiry.contact.email = Some(email.into());
    inquiry.message = Some("A quote, please".into());
    router::Envelope::new(
        normalizer::normalize(inquiry),
        router::Route {
            pipeline: pipeline.into(),
            stage: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_envelope_of_a_batch_message_is_dead_lettered_alone_and_the_others_are_filed() {
    use lapin::options::BasicGetOptions;

    let daemon = TestDaemon::start().await;
    let first = form_envelope("Ann Batch", "ann.batch@example.com", "default");
    let unroutable = form_envelope("Bob Batch", "bob.batch@example.com", "no-such-pipeline");
    let last = form_envelope("Cy Batch", "cy.batch@example.com", "default");
    let body = [
        first.to_bytes(),
        b"{\"not\": \"an envelope\"}".to_vec(),
        unroutable.to_bytes(),
        last.to_bytes(),
    ]
    .join(&b'\n');
    crate::support::publish_raw_with(
        &daemon.prefix,
        0,
        &body,
        lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(router::envelope::BATCH_CONTENT_TYPE.into()),
    )
    .await;

    for email in ["ann.batch%40example.com", "cy.batch%40example.com"] {
        let leads = daemon
            .wait_for_leads(&format!("email={email}"), 1, Duration::from_secs(30))
            .await;
        assert_eq!(leads.len(), 1, "{email} is filed\n{}", daemon.log());
    }
    let dead_queue = format!("{}.dead", daemon.prefix);
    let counts = crate::support::wait_for_ready(&dead_queue, 2, Duration::from_secs(30)).await;
    assert_eq!(counts.map(|c| c.0), Some(2), "{}", daemon.log());
    let amqp = crate::support::amqp_connect().await;
    let channel = amqp.create_channel().await.unwrap();
    let mut letters = Vec::new();
    while let Some(message) = channel
        .basic_get(dead_queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        letters.push(message.delivery);
    }
    let _ = amqp.close(200, "done".into()).await;
    assert_eq!(letters.len(), 2);
    // Each dead letter is the bad envelope alone, not the batch: a replay files it once
    // and repeats none of the others.
    let garbage = letters
        .iter()
        .find(|d| d.data == b"{\"not\": \"an envelope\"}")
        .expect("the unreadable line is dead-lettered alone");
    assert_eq!(
        garbage
            .properties
            .content_type()
            .as_ref()
            .map(|t| t.as_str()),
        Some("application/json")
    );
    let lettered = letters
        .iter()
        .find(|d| d.data != garbage.data)
        .expect("the unroutable envelope is dead-lettered");
    let decoded = router::Envelope::from_bytes(&lettered.data).expect("a single envelope");
    assert_eq!(decoded.lead.inquiry.id, unroutable.lead.inquiry.id);
    assert_eq!(
        lettered
            .properties
            .message_id()
            .as_ref()
            .map(|t| t.to_string()),
        Some(unroutable.lead.inquiry.id.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_dead_lettered_for_a_bad_route_is_filed_after_the_fix_and_a_replay_and_garbage_is_parked()
 {
    let mut daemon = TestDaemon::start_with(crate::support::Options {
        extra_config: "[routing]\npipeline = \"no-such-pipeline\"\n".into(),
        ..Default::default()
    })
    .await;
    let r = daemon
        .post_form(
            "it-contatti",
            Some(URLENCODED),
            "nome=Rita&cognome=Lodi&email=rita.lodi%40example.it",
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    // The consumer cannot file it and dead-letters it with the reason.
    let mut dead = false;
    for _ in 0..100 {
        if daemon
            .get("/metrics")
            .await
            .text()
            .contains("leadpipe_dead_lettered_total{")
        {
            dead = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dead, "{}", daemon.log());
    // A message nobody can decode is dead-lettered too.
    crate::support::publish_raw(&daemon.prefix, 0, b"not an envelope").await;
    let dead_queue = format!("{}.dead", daemon.prefix);
    let counts = crate::support::wait_for_ready(&dead_queue, 2, Duration::from_secs(30)).await;
    assert_eq!(counts.map(|c| c.0), Some(2), "{}", daemon.log());
    daemon.kill();

    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadpipe"))
            .args(args)
            .arg("--config")
            .arg(&daemon.config_path)
            .output()
            .expect("run leadpipe");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = cli(&["dead-letters", "list"]);
    assert!(listed.contains("2 message(s)"), "{listed}");
    assert!(listed.contains("no-such-pipeline"), "{listed}");
    assert!(listed.contains("undecodable envelope"), "{listed}");

    // The operator fixes the route, replays, and starts the daemon again.
    let config = std::fs::read_to_string(&daemon.config_path).unwrap();
    std::fs::write(
        &daemon.config_path,
        config.replace("pipeline = \"no-such-pipeline\"", "pipeline = \"default\""),
    )
    .unwrap();
    let replayed = cli(&["dead-letters", "replay"]);
    assert!(
        replayed.contains("Replayed 1 message(s); parked 1 undecodable"),
        "{replayed}"
    );
    // The undecodable one is set aside, not read again by the next replay.
    let listed = cli(&["dead-letters", "list"]);
    assert!(
        listed.contains("0 message(s) in the dead-letter queue"),
        "{listed}"
    );
    assert!(
        listed.contains("1 undecodable message(s) parked"),
        "{listed}"
    );
    let replayed = cli(&["dead-letters", "replay"]);
    assert!(
        replayed.contains("Replayed 0 message(s); parked 0"),
        "{replayed}"
    );
    daemon.launch(true).await;
    let leads = daemon
        .wait_for_leads("email=rita.lodi%40example.it", 1, Duration::from_secs(30))
        .await;
    assert_eq!(leads.len(), 1, "{}", daemon.log());
    assert_eq!(leads[0]["pipeline"], "default");
}
