//! Contacts and companies over HTTP, and leads matched against them.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::TestDaemon;

const URLENCODED: &str = "application/x-www-form-urlencoded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_and_companies_are_created_normalised_and_refused_when_unusable() {
    let daemon = TestDaemon::start().await;
    let company = daemon.post_json(
        "/v1/companies",
        json!({"name": "Żółkiewski i Synowie Sp. z o.o.", "domain": "https://www.zolkiewski.example.pl/", "phones": []}),
    )
    .await;
    assert_eq!(company.status, 201, "{}", company.text());
    let company = company.json();
    assert_eq!(company["domain"], "zolkiewski.example.pl");

    let contact = daemon
        .post_json(
            "/v1/contacts",
            json!({"name": " Łukasz Żółkiewski ", "emails": ["Lukasz@Zolkiewski.Example.PL"],
               "phones": ["601 234 567"], "default_region": "PL", "company_id": company["id"]}),
        )
        .await;
    assert_eq!(contact.status, 201, "{}", contact.text());
    let contact = contact.json();
    assert_eq!(contact["name"], "Łukasz Żółkiewski");
    assert_eq!(contact["emails"], json!(["lukasz@zolkiewski.example.pl"]));
    assert_eq!(contact["phones"], json!(["+48601234567"]));
    assert_eq!(contact["company_id"], company["id"]);

    // The same email again belongs to that contact already.
    daemon
        .post_json(
            "/v1/contacts",
            json!({"emails": ["lukasz@zolkiewski.example.pl"]}),
        )
        .await
        .assert_error(409, "identity_taken");
    daemon
        .post_json(
            "/v1/contacts",
            json!({"emails": ["not-an-address"], "phones": ["brak"], "default_region": "PL"}),
        )
        .await
        .assert_error(422, "invalid_fields");
    daemon
        .post_json("/v1/contacts", json!({"emails": [], "phones": []}))
        .await
        .assert_error(422, "invalid_fields");
    daemon
        .post_json("/v1/contacts", json!({"email": "typo@example.pl"}))
        .await
        .assert_error(422, "invalid_fields");
    daemon
        .post_json("/v1/companies", json!({"name": "X", "domain": "gmail.com"}))
        .await
        .assert_error(422, "invalid_fields");
    daemon
        .post_json(
            "/v1/contacts",
            json!({"emails": ["a@b.example.com"], "company_id": 999999}),
        )
        .await
        .assert_error(422, "unknown_reference");

    let found = daemon
        .get("/v1/contacts?email=LUKASZ%40zolkiewski.example.pl")
        .await
        .json();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    let by_phone = daemon.get("/v1/contacts?phone=%2B48601234567").await.json();
    assert_eq!(by_phone["items"][0]["id"], contact["id"]);
    let by_domain = daemon
        .get("/v1/companies?domain=zolkiewski.example.pl")
        .await
        .json();
    assert_eq!(by_domain["items"][0]["id"], company["id"]);
    assert_eq!(
        daemon
            .get(&format!("/v1/contacts/{}", contact["id"]))
            .await
            .status,
        200
    );
    daemon
        .get("/v1/companies/424242")
        .await
        .assert_error(404, "not_found");
    let unauthenticated = daemon
        .http
        .get(format!("{}/v1/contacts", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_from_known_clients_and_returning_people_say_how_they_were_matched() {
    let daemon = TestDaemon::start().await;
    let contact = daemon.post_json(
        "/v1/contacts",
        json!({"name": "Federica Mancini", "emails": ["federica.mancini@libero.it"], "phones": ["+39 338 765 4321"]}),
    )
    .await
    .json();

    // A known contact: a repeat lead linked to the client.
    let r = daemon
        .post_form(
            "it-richiamami",
            Some(URLENCODED),
            "full_name=Federica+Mancini&tel=338+765+4321&website=",
            &[],
        )
        .await;
    assert_eq!(r.status, 202);
    let leads = daemon.wait_for_leads("", 1, Duration::from_secs(30)).await;
    let lead = &leads[0];
    assert_eq!(lead["is_repeat"], true);
    assert_eq!(lead["client"]["contact_id"], contact["id"]);
    assert_eq!(lead["match"]["rule"], "known_contact");
    assert_eq!(lead["match"]["key"], "phone:+393387654321");
    assert_eq!(lead["inquiry_count"], 1);

    // The same person writes again: merged into the open lead, not a second lead.
    let r = daemon
        .post_form(
            "it-contatti",
            Some(URLENCODED),
            "nome=Federica&cognome=Mancini&email=Federica.Mancini%40libero.it&messaggio=Ancora+io&website=",
            &[],
        )
        .await;
    assert_eq!(r.status, 202);
    let mut merged = Value::Null;
    for _ in 0..100 {
        merged = daemon
            .get(&format!("/v1/leads/{}", lead["id"]))
            .await
            .json();
        if merged["inquiry_count"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(merged["inquiry_count"], 2, "{merged}");
    assert_eq!(
        merged["email"], "federica.mancini@libero.it",
        "an empty field is filled"
    );
    assert_eq!(merged["activities"].as_array().unwrap().len(), 2);
    assert_eq!(merged["events"][0]["kind"], "merged");
    assert_eq!(daemon.leads("").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_mailbox_is_kept_on_each_contact_and_identifies_none_of_them() {
    let daemon = TestDaemon::start().await;
    let mut ids = Vec::new();
    for (name, phone) in [
        ("Anna Conti", "+39 347 111 2233"),
        ("Marco Galli", "+39 347 444 5566"),
    ] {
        let contact = daemon.post_json(
            "/v1/contacts",
            json!({"name": name, "emails": ["Info@Conti-Galli.example.it", "noreply@conti-galli.example.it"],
                   "phones": [phone]}),
        )
        .await;
        assert_eq!(contact.status, 201, "{name}: {}", contact.text());
        let contact = contact.json();
        assert_eq!(
            contact["emails"],
            json!([
                "info@conti-galli.example.it",
                "noreply@conti-galli.example.it"
            ]),
            "{contact}"
        );
        ids.push(contact["id"].clone());
    }
    assert_ne!(ids[0], ids[1], "two people, two contacts");

    // Looking the mailbox up finds everyone who lists it.
    let page = daemon
        .get("/v1/contacts?email=info%40conti-galli.example.it")
        .await
        .json();
    let found: Vec<Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(found.len(), 2, "{page}");

    // An inquiry from the shared mailbox is nobody's repeat lead.
    let r = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=Someone&email=info%40conti-galli.example.it&message=hello",
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let leads = daemon
        .wait_for_leads(
            "email=info%40conti-galli.example.it",
            1,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(leads.len(), 1, "{}", daemon.log());
    assert_eq!(leads[0]["is_repeat"], false, "{}", leads[0]);
    assert!(leads[0]["client"]["contact_id"].is_null(), "{}", leads[0]);
}
