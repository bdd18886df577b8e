//! Observing leads: each lead's person keys and tags, `?key=`, and the shape of its
//! activities, as every channel's checks read them.

use std::time::Duration;

use serde_json::Value;

use crate::support::TestDaemon;

const URLENCODED: &str = "application/x-www-form-urlencoded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_show_their_keys_and_tags_and_are_found_by_any_key_they_hold() {
    let daemon = TestDaemon::start().await;
    let posts = [
        "nome=Aldo&cognome=Neri&email=Aldo.Neri%40example.it&telefono=02+1234+5678&messaggio=Preventivo",
        // The same person again with a mobile: merged by the email, the mobile finds the lead.
        "nome=Aldo&cognome=Neri&email=aldo.neri%40example.it&telefono=347+555+0101&messaggio=Sollecito",
        "nome=Bice&cognome=Rossi&email=bice.rossi%40example.it",
    ];
    for (i, body) in posts.into_iter().enumerate() {
        let r = daemon
            .post_form("it-contatti", Some(URLENCODED), body, &[])
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
        // One at a time, so the second finds the first's lead.
        daemon
            .wait_for_inquiries(i as i64 + 1, Duration::from_secs(30))
            .await;
    }

    let aldo = daemon.leads("key=email%3Aaldo.neri%40example.it").await;
    assert_eq!(aldo.len(), 1, "{aldo:?}");
    let aldo = &aldo[0];
    assert_eq!(
        aldo["keys"],
        serde_json::json!([
            "email:aldo.neri@example.it",
            "phone:+390212345678",
            "phone:+393475550101"
        ])
    );
    assert_eq!(aldo["tags"], serde_json::json!([]));
    assert_eq!(aldo["inquiry_count"], 2);
    for key in [
        "phone%3A%2B393475550101",
        "phone:%2B390212345678",
        // Typed as a person would: the address is normalised first.
        "email%3AALDO.NERI%40Example.IT",
    ] {
        let found = daemon.leads(&format!("key={key}")).await;
        assert_eq!(
            found.iter().map(|l| l["id"].clone()).collect::<Vec<_>>(),
            vec![aldo["id"].clone()],
            "{key}"
        );
    }
    assert!(
        daemon
            .leads("key=messenger%3Atelegram%3A4242")
            .await
            .is_empty()
    );
    assert_eq!(daemon.leads("").await.len(), 2);

    // A malformed key is a 400 naming the problem, never an empty list.
    for bad in [
        "key=aldo.neri%40example.it",
        "key=email%3Anot-an-address",
        "key=phone%3A021234567",
        "key=messenger%3Atelegram",
        "key=fax%3A%2B39021234567",
    ] {
        let r = daemon.get(&format!("/v1/leads?{bad}")).await;
        r.assert_error(400, "bad_query");
        let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains("is not a person key"), "{bad}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_activity_says_what_it_records_where_it_came_from_and_when() {
    let daemon = TestDaemon::start().await;
    let r = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=Dan+Pike&email=dan.pike%40example.com&message=Need+a+quote",
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let inquiry_id = r.json()["inquiry_id"].clone();
    let leads = daemon.wait_for_leads("", 1, Duration::from_secs(30)).await;
    let id = leads[0]["id"].as_i64().unwrap();
    let detail = daemon.get(&format!("/v1/leads/{id}")).await.json();
    assert_eq!(
        detail["keys"],
        serde_json::json!(["email:dan.pike@example.com"])
    );
    let activities = detail["activities"].as_array().unwrap();
    assert_eq!(activities.len(), 1);
    let activity = &activities[0];
    assert_eq!(activity["kind"], "form");
    assert_eq!(activity["channel"], "form");
    assert_eq!(activity["inquiry_id"], inquiry_id);
    assert_eq!(activity["subject"], "form inquiry via web-en-contact");
    assert_eq!(activity["body"], "Need a quote");
    assert!(
        activity["occurred_at"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{activity}"
    );
    assert!(matches!(activity["data"], Value::Object(_)), "{activity}");
}
