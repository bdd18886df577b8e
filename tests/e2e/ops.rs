//! The ops API: authentication, filters, pagination, detail, health and metrics.

use std::time::Duration;

use crate::support::TestDaemon;

const URLENCODED: &str = "application/x-www-form-urlencoded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leads_api_needs_the_admin_token() {
    let daemon = TestDaemon::start().await;
    let none = daemon
        .http
        .get(format!("{}/v1/leads", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    assert!(none.headers().contains_key("www-authenticate"));
    let wrong = daemon
        .http
        .get(format!("{}/v1/leads", daemon.base))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "bad_token");
    assert_eq!(daemon.get("/v1/leads").await.status, 200);
    // Health and metrics need no token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = daemon
            .http
            .get(format!("{}{path}", daemon.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_are_listed_newest_first_with_filters_and_cursor_pages() {
    let daemon = TestDaemon::start().await;
    let posts = [
        (
            "it-contatti",
            "nome=Aldo&cognome=Neri&email=aldo.neri%40example.it&telefono=02+1234+5678&utm_source=google",
        ),
        (
            "it-contatti",
            "nome=Bice&cognome=Rossi&email=bice.rossi%40example.it",
        ),
        (
            "pl-kontakt",
            "imie=Celina&nazwisko=Mazur&e-mail=celina%40example.pl&telefon=601+234+567",
        ),
        ("en-contact", "name=Dan+Pike&email=dan.pike%40example.com"),
        (
            "en-contact",
            "name=Eve+Stone&email=eve.stone%40example.com&phone=%28212%29+555-0101",
        ),
    ];
    for (form, body) in posts {
        // Distinct arrival order, so "newest first" is meaningful.
        let r = daemon.post_form(form, Some(URLENCODED), body, &[]).await;
        assert_eq!(r.status, 202, "{}", r.text());
        daemon
            .wait_for_leads(
                "",
                daemon.leads("").await.len() + 1,
                Duration::from_secs(30),
            )
            .await;
    }

    let all = daemon.leads("").await;
    assert_eq!(all.len(), 5);
    let ids: Vec<i64> = all.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");
    assert_eq!(all[0]["email"], "eve.stone@example.com");

    // Pages of two, following the cursor, give the same five.
    let page = daemon.get("/v1/leads?limit=2").await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let paged = daemon.leads("limit=2").await;
    assert_eq!(
        paged.iter().map(|l| l["id"].clone()).collect::<Vec<_>>(),
        all.iter().map(|l| l["id"].clone()).collect::<Vec<_>>()
    );

    assert_eq!(daemon.leads("source=web-it-contatti").await.len(), 2);
    assert_eq!(daemon.leads("email=ALDO.NERI%40example.it").await.len(), 1);
    assert_eq!(daemon.leads("phone=%2B48601234567").await.len(), 1);
    assert_eq!(daemon.leads("stage=open&channel=form").await.len(), 5);
    assert_eq!(daemon.leads("stage=junk").await.len(), 0);
    assert_eq!(
        daemon
            .leads("created_after=2000-01-01T00:00:00Z")
            .await
            .len(),
        5
    );
    assert_eq!(
        daemon
            .leads("created_before=2000-01-01T00:00:00Z")
            .await
            .len(),
        0
    );

    let lead = &daemon.leads("email=aldo.neri%40example.it").await[0];
    for key in [
        "id",
        "name",
        "email",
        "phone",
        "company",
        "channel",
        "source",
        "stage",
        "created_at",
        "stage_entered_at",
        "utm",
        "fields",
    ] {
        assert!(lead.get(key).is_some(), "lead JSON has {key}: {lead}");
    }
    assert_eq!(lead["stage"]["code"], "open");
    assert_eq!(lead["stage"]["semantic"], "open");
    assert_eq!(lead["utm"]["utm_source"], "google");

    let bad = daemon.get("/v1/leads?limit=9999").await;
    bad.assert_error(400, "bad_query");
    daemon
        .get("/v1/leads?colour=red")
        .await
        .assert_error(400, "bad_query");
    daemon
        .get("/v1/leads/999999")
        .await
        .assert_error(404, "lead_not_found");
    daemon
        .get("/v1/leads/abc")
        .await
        .assert_error(404, "lead_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_received_published_stored_and_rejected() {
    let daemon = TestDaemon::start().await;
    let ok = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=Max&email=max%40example.com",
            &[],
        )
        .await;
    assert_eq!(ok.status, 202);
    let bad = daemon
        .post_form("en-contact", Some(URLENCODED), "name=Max", &[])
        .await;
    assert_eq!(bad.status, 422);
    daemon.wait_for_leads("", 1, Duration::from_secs(30)).await;
    let text = daemon.get("/metrics").await.text();
    for needle in [
        "leadpipe_inquiries_received_total",
        "leadpipe_inquiries_published_total",
        "leadpipe_inquiries_stored_total{outcome=\"lead_created\"}",
        "reason=\"no_contact\"",
        "leadpipe_intake_seconds",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_connections_killed_underneath_are_replaced_without_losing_leads() {
    let daemon = TestDaemon::start().await;
    let first = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=Una&email=una%40example.com",
            &[],
        )
        .await;
    assert_eq!(first.status, 202);
    daemon.wait_for_leads("", 1, Duration::from_secs(30)).await;

    // Break the real thing: terminate every server connection of the daemon's database.
    let admin = sqlx::PgPool::connect(&crate::support::admin_database_url())
        .await
        .unwrap();
    let db_name = daemon.db_url.rsplit('/').next().unwrap().to_owned();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = $1 AND pid <> pg_backend_pid()) t",
    )
    .bind(&db_name)
    .fetch_one(&admin)
    .await
    .unwrap();
    admin.close().await;
    assert!(killed > 0, "the daemon had connections to kill");

    for i in 0..20 {
        let r = daemon
            .post_form(
                "en-contact",
                Some(URLENCODED),
                format!("name=After+{i}&email=after{i}%40example.com"),
                &[],
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let leads = daemon.wait_for_leads("", 21, Duration::from_secs(60)).await;
    assert_eq!(leads.len(), 21, "{}", daemon.log());
    let mut ready = false;
    for _ in 0..50 {
        if daemon.get("/readyz").await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ready, "ready again after the outage");
}

/// The broker's ids (Erlang pids) of the connections a daemon process opened (its
/// connection names carry its pid).
fn broker_connections_of(pid: u32) -> Vec<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| {
            line.contains(&format!("leadpipe publisher {pid}\""))
                || line.contains(&format!("leadpipe consumer {pid} "))
        })
        .filter_map(|line| line.split('\t').next().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_connections_closed_underneath_are_reopened_without_losing_leads() {
    let daemon = TestDaemon::start().await;
    let pid = daemon.pid().expect("a running daemon");
    let first = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=Vic&email=vic%40example.com",
            &[],
        )
        .await;
    assert_eq!(first.status, 202);
    daemon.wait_for_leads("", 1, Duration::from_secs(30)).await;

    let names = broker_connections_of(pid);
    assert!(
        names.len() >= 2,
        "publisher and consumer connections: {names:?}"
    );
    for name in &names {
        let closed = std::process::Command::new("rabbitmqctl")
            .args(["-q", "close_connection", name, "closed by a leadpipe test"])
            .output()
            .expect("rabbitmqctl");
        assert!(
            closed.status.success() && closed.stderr.is_empty(),
            "close {name}: {}",
            String::from_utf8_lossy(&closed.stderr)
        );
    }

    // While it reconnects intake may answer 503 (never 500); every 202 must be stored.
    let mut accepted = 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while accepted < 21 && std::time::Instant::now() < deadline {
        let r = daemon
            .post_form(
                "en-contact",
                Some(URLENCODED),
                format!("name=Reconnect+{i}&email=reconnect{i}%40example.com"),
                &[],
            )
            .await;
        i += 1;
        match r.status {
            202 => accepted += 1,
            503 => {
                assert!(r.headers.contains_key("retry-after"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert_eq!(accepted, 21, "intake recovered\n{}", daemon.log());
    let leads = daemon.wait_for_leads("", 21, Duration::from_secs(60)).await;
    assert_eq!(leads.len(), 21, "{}", daemon.log());
    assert!(
        daemon.log().contains("reconnecting")
            || daemon.log().contains("Connected to the message broker"),
        "{}",
        daemon.log()
    );
}
