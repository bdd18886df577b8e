//! Idempotency keys and content de-duplication: a retry is the same inquiry whatever its
//! encoding, another body under a used key is never silently dropped, a refused body
//! does not burn its key, keys expire, and a busy or locked database never turns a
//! conflict into a lost inquiry.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::support::{Options, Response, TestDaemon};

const URLENCODED: &str = "application/x-www-form-urlencoded";

/// A urlencoded post to the `en-contact` form.
async fn post_contact(daemon: &TestDaemon, body: &str, headers: &[(&str, &str)]) -> Response {
    daemon
        .post_form("en-contact", Some(URLENCODED), body.to_owned(), headers)
        .await
}

fn inquiry_id(response: &Response) -> String {
    assert_eq!(response.status, 202, "{}", response.text());
    response.json()["inquiry_id"]
        .as_str()
        .expect("an inquiry id")
        .to_owned()
}

async fn scalar(pool: &PgPool, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(pool)
        .await
        .expect("a count")
}

/// Polls until `sql` (bound to `bind`) counts at least `n`, or 30 s pass.
async fn wait_for_count(pool: &PgPool, sql: &str, bind: &str, n: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let count = scalar(pool, sql, bind).await;
        if count >= n || Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_refused_for_no_contact_can_be_fixed_and_sent_again_with_the_same_key() {
    let daemon = TestDaemon::start().await;
    let key = [("Idempotency-Key", "fix-and-resend-0001")];
    post_contact(&daemon, "name=Rhea+Lund&email=rhea.lund%40", &key)
        .await
        .assert_error(422, "no_contact");
    let fixed = post_contact(
        &daemon,
        "name=Rhea+Lund&email=rhea.lund%40example.com",
        &key,
    )
    .await;
    inquiry_id(&fixed);
    let leads = daemon
        .wait_for_leads("email=rhea.lund%40example.com", 1, Duration::from_secs(30))
        .await;
    assert_eq!(leads.len(), 1, "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_in_another_encoding_is_the_same_inquiry_and_another_body_is_refused() {
    let daemon = TestDaemon::start().await;
    let key = [("Idempotency-Key", "encoding-retry-0001")];
    let first = daemon
        .post_form(
            "en-demo-request",
            Some("application/json"),
            r#"{"full_name":"Tomas Vik","email":"tomas.vik@example.com","extra":{"a":1,"b":[1,2]}}"#,
            &key,
        )
        .await;
    // Other whitespace and another key order inside an object: the same submission.
    let retry = daemon
        .post_form(
            "en-demo-request",
            Some("application/json; charset=utf-8"),
            "{ \"full_name\" : \"Tomas Vik\",\n  \"email\": \"tomas.vik@example.com\",\n  \"extra\": {\"b\": [1, 2], \"a\": 1} }\n",
            &key,
        )
        .await;
    assert_eq!(inquiry_id(&first), inquiry_id(&retry));

    let multipart = |boundary: &str, message: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nsiri.moe@example.com\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\n{message}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"cv\"; filename=\"cv.txt\"\r\nContent-Type: text/plain\r\n\r\nten years\r\n\
             --{boundary}--\r\n"
        )
    };
    let mkey = [("Idempotency-Key", "encoding-retry-0002")];
    let a = daemon
        .post_form(
            "en-contact",
            Some("multipart/form-data; boundary=----formA1"),
            multipart("----formA1", "Call me"),
            &mkey,
        )
        .await;
    let b = daemon
        .post_form(
            "en-contact",
            Some("multipart/form-data; boundary=----formB2"),
            multipart("----formB2", "Call me"),
            &mkey,
        )
        .await;
    assert_eq!(inquiry_id(&a), inquiry_id(&b));
    daemon
        .post_form(
            "en-contact",
            Some("multipart/form-data; boundary=----formC3"),
            multipart("----formC3", "Call me tomorrow"),
            &mkey,
        )
        .await
        .assert_error(422, "idempotency_key_reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_clicked_multipart_form_is_one_lead_and_the_second_post_a_duplicate() {
    let daemon = TestDaemon::start().await;
    let body = |boundary: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nJuno Park\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\njuno.park@example.com\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\nA quote for 3 desks\r\n\
             --{boundary}--\r\n"
        )
    };
    // Browsers draw a new boundary for every submission.
    for boundary in [
        "----WebKitFormBoundaryAAAAAAAAAAAAAAAA",
        "----WebKitFormBoundaryBBBBBBBBBBBBBBBB",
    ] {
        let r = daemon
            .post_form(
                "en-contact",
                Some(&format!("multipart/form-data; boundary={boundary}")),
                body(boundary),
                &[],
            )
            .await;
        inquiry_id(&r);
    }
    daemon.wait_for_inquiries(2, Duration::from_secs(30)).await;
    let pool = daemon.db().await;
    let dispositions: Vec<String> =
        sqlx::query_scalar("SELECT disposition FROM inquiries ORDER BY received_at")
            .fetch_all(&pool)
            .await
            .expect("dispositions");
    assert_eq!(dispositions, ["lead", "duplicate"], "{}", daemon.log());
    pool.close().await;
    let leads = daemon.leads("email=juno.park%40example.com").await;
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0]["inquiry_count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_key_store_locked_another_body_under_a_used_key_is_accepted_and_filed_too() {
    let daemon = TestDaemon::start().await;
    let key = [("Idempotency-Key", "locked-store-0001")];
    let first = post_contact(
        &daemon,
        "name=Ines+Roth&email=ines.roth%40example.com&message=first",
        &key,
    )
    .await;
    let first_id = inquiry_id(&first);

    // Break the key store for real: hold an exclusive lock on its table, so no look-up
    // can answer in time.
    let pool = daemon.db().await;
    let mut lock = pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE intake_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock the key table");
    let second = post_contact(
        &daemon,
        "name=Ines+Roth&email=ines.roth%40example.com&message=second",
        &key,
    )
    .await;
    let second_id = inquiry_id(&second);
    lock.rollback().await.expect("unlock");
    assert_ne!(
        first_id, second_id,
        "another body under the same key must not be filed as the first one"
    );

    let stored = wait_for_count(
        &pool,
        "SELECT count(*) FROM inquiries WHERE external_id = $1",
        "locked-store-0001",
        2,
    )
    .await;
    assert_eq!(stored, 2, "both bodies are filed\n{}", daemon.log());
    let messages: Vec<String> = sqlx::query_scalar(
        "SELECT body FROM activities WHERE inquiry_id IN ($1::uuid, $2::uuid) ORDER BY id",
    )
    .bind(&first_id)
    .bind(&second_id)
    .fetch_all(&pool)
    .await
    .expect("activities");
    assert_eq!(messages, ["first", "second"]);
    pool.close().await;
    let metrics = daemon.get("/metrics").await.text();
    assert!(
        metrics.contains("leadpipe_idempotency_lookups_degraded_total"),
        "the skipped look-up is counted:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_consumer_pool_does_not_make_intake_skip_the_key_check() {
    let mut daemon = TestDaemon::start().await;
    // One connection for consumers and the API, so one blocked batch takes it all.
    daemon.kill();
    daemon
        .env
        .push(("LEADPIPE__DATABASE__MAX_CONNECTIONS".into(), "1".into()));
    daemon.launch(true).await;

    let key = [("Idempotency-Key", "busy-pool-0001")];
    let first = post_contact(
        &daemon,
        "name=Ola+Berg&email=ola.berg%40example.com&message=first",
        &key,
    )
    .await;
    inquiry_id(&first);
    daemon.wait_for_inquiries(1, Duration::from_secs(30)).await;

    let pool = daemon.db().await;
    let mut lock = pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE inquiries IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock the inquiries");
    let blocker = post_contact(&daemon, "name=Per+Dahl&email=per.dahl%40example.com", &[]).await;
    inquiry_id(&blocker);
    let waiting = wait_for_count(
        &pool,
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = $1 AND wait_event_type = 'Lock'",
        "leadpipe",
        1,
    )
    .await;
    assert_eq!(
        waiting, 1,
        "the consumer holds the only connection, waiting"
    );

    post_contact(
        &daemon,
        "name=Ola+Berg&email=ola.berg%40example.com&message=another",
        &key,
    )
    .await
    .assert_error(422, "idempotency_key_reused");
    lock.rollback().await.expect("unlock");
    assert_eq!(
        daemon.wait_for_inquiries(2, Duration::from_secs(30)).await,
        2
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_free_again_and_expired_keys_are_purged() {
    let daemon = TestDaemon::start_with(Options {
        extra_config: "[intake]\nkey_ttl_secs = 3600\nkey_purge_interval_secs = 1\n".into(),
        ..Options::default()
    })
    .await;
    let key = [("Idempotency-Key", "expiring-0001")];
    let first = post_contact(
        &daemon,
        "name=Aki+Sato&email=aki.sato%40example.com&message=first",
        &key,
    )
    .await;
    let first_id = inquiry_id(&first);
    let pool = daemon.db().await;
    let ttl: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM expires_at - created_at)::float8 FROM intake_keys WHERE key = $1",
    )
    .bind("expiring-0001")
    .fetch_one(&pool)
    .await
    .expect("the claimed key");
    assert_eq!(ttl, 3600.0, "the key lives for key_ttl_secs");

    // Let the key's time run out (its expiry moved into the past, as an hour would).
    let expire = "UPDATE intake_keys SET expires_at = now() - interval '1 second' WHERE key = $1";
    sqlx::query(expire)
        .bind("expiring-0001")
        .execute(&pool)
        .await
        .expect("expire");
    let second = post_contact(
        &daemon,
        "name=Aki+Sato&email=aki.sato%40example.com&message=second",
        &key,
    )
    .await;
    assert_ne!(first_id, inquiry_id(&second));

    sqlx::query(expire)
        .bind("expiring-0001")
        .execute(&pool)
        .await
        .expect("expire");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left = 1;
    while left > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        left = scalar(
            &pool,
            "SELECT count(*) FROM intake_keys WHERE key = $1",
            "expiring-0001",
        )
        .await;
    }
    assert_eq!(left, 0, "the expired key was purged\n{}", daemon.log());
    pool.close().await;
}
