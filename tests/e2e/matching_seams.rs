//! Matching across shards and through the whole daemon: a known contact writing by email
//! and by phone at the same moment, and a shared switchboard number.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::TestDaemon;

const URLENCODED: &str = "application/x-www-form-urlencoded";
const SHARDS: u16 = 4;

/// Creates a client over the API and returns it.
async fn create(daemon: &TestDaemon, path: &str, body: Value) -> Value {
    let response = daemon.post_json(path, body).await;
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()
}

/// A daemon with more shard consumers than the default test daemon.
async fn daemon_with_shards() -> TestDaemon {
    let mut daemon = TestDaemon::start().await;
    daemon.kill();
    daemon
        .env
        .push(("LEADPIPE__AMQP__SHARDS".into(), SHARDS.to_string()));
    daemon.launch(true).await;
    daemon
}

/// Italian numbers whose person key and the email's land on different shards, so two
/// consumers file them at the same time.
fn contacts(n: usize) -> Vec<(String, String)> {
    (0..)
        .map(|i| {
            (
                format!("cliente{i}@galli.example.it"),
                format!("+3902873{:05}", 10_000 + i),
            )
        })
        .filter(|(email, phone)| {
            router::routing::shard_for(&format!("email:{email}"), SHARDS)
                != router::routing::shard_for(&format!("phone:{phone}"), SHARDS)
        })
        .take(n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inquiries_by_a_known_contacts_email_and_phone_end_in_one_open_lead() {
    let daemon = daemon_with_shards().await;
    let people = contacts(6);
    let mut ids = Vec::new();
    for (i, (email, phone)) in people.iter().enumerate() {
        let contact = create(
            &daemon,
            "/v1/contacts",
            json!({"name": format!("Cliente {i}"), "emails": [email], "phones": [phone]}),
        )
        .await;
        ids.push(contact["id"].as_i64().unwrap());
    }

    // Every post at once: half by the contact's email, half by its phone.
    let mut posts = tokio::task::JoinSet::new();
    for (i, (email, phone)) in people.iter().enumerate() {
        for j in 0..8 {
            let body = if j % 2 == 0 {
                format!(
                    "nome=Cliente+{i}&email={}&messaggio=n.{j}",
                    email.replace('@', "%40")
                )
            } else {
                format!(
                    "nome=Cliente+{i}&telefono={}&messaggio=n.{j}",
                    phone.replace('+', "%2B")
                )
            };
            let (http, url) = (
                daemon.http.clone(),
                format!("{}/v1/intake/forms/it-contatti", daemon.base),
            );
            posts.spawn(async move {
                http.post(url)
                    .header("content-type", URLENCODED)
                    .body(body)
                    .send()
                    .await
                    .expect("the daemon answers")
                    .status()
                    .as_u16()
            });
        }
    }
    while let Some(status) = posts.join_next().await {
        assert_eq!(status.unwrap(), 202);
    }
    let total = (people.len() * 8) as i64;
    assert_eq!(
        daemon
            .wait_for_inquiries(total, Duration::from_secs(60))
            .await,
        total,
        "{}",
        daemon.log()
    );

    let pool = daemon.db().await;
    for id in ids {
        let leads: Vec<(i64, i32)> =
            sqlx::query_as("SELECT id, inquiry_count FROM leads WHERE contact_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(leads.len(), 1, "contact {id}: {leads:?}");
        assert_eq!(leads[0].1, 8, "contact {id}: every inquiry on its one lead");
    }
    let leads: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(leads, people.len() as i64);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_behind_one_switchboard_get_a_lead_each_and_each_says_why() {
    let daemon = TestDaemon::start().await;
    let post = |body: &'static str| daemon.post_form("it-contatti", Some(URLENCODED), body, &[]);
    let r =
        post("nome=Anna&cognome=Conti&email=anna%40studio.example.it&telefono=02+8736+1234").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let anna = daemon
        .wait_for_leads("email=anna%40studio.example.it", 1, Duration::from_secs(30))
        .await;
    assert_eq!(anna.len(), 1, "{}", daemon.log());
    let r =
        post("nome=Bruno&cognome=Sala&email=bruno%40studio.example.it&telefono=02+8736+1234").await;
    assert_eq!(r.status, 202, "{}", r.text());
    // Desk 12 behind the same switchboard, no name: a person of its own.
    let r = post("telefono=02+8736+1234+int.+12").await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        daemon.wait_for_inquiries(3, Duration::from_secs(30)).await,
        3,
        "{}",
        daemon.log()
    );

    let leads = daemon.leads("").await;
    assert_eq!(leads.len(), 3, "{leads:#?}");
    let bruno = leads
        .iter()
        .find(|l| l["email"] == "bruno@studio.example.it")
        .expect("a lead of Bruno's own");
    assert_eq!(bruno["match"]["rule"], "new");
    let why = bruno["match"]["set_aside"].to_string();
    assert!(
        why.contains(&format!("lead {}", anna[0]["id"]))
            && why.contains("a different email and name"),
        "{}",
        bruno["match"]
    );
}
