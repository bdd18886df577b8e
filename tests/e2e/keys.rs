//! Which values become identity keys, in the running daemon: placeholder addresses and
//! role mailboxes (built-in and configured in `[matching]`) stay on the lead but never
//! merge strangers, and an address that cannot exist is answered, not filed.

use std::time::Duration;

use crate::support::{Options, TestDaemon};

const URLENCODED: &str = "application/x-www-form-urlencoded";

async fn post(daemon: &TestDaemon, email: &str, message: &str) {
    let body = format!(
        "nome=Cliente&email={}&messaggio={message}&website=",
        email.replace('@', "%40")
    );
    let r = daemon
        .post_form("it-contatti", Some(URLENCODED), body, &[])
        .await;
    assert_eq!(r.status, 202, "{email}: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mailboxes_never_merge_strangers_and_configured_ones_count_too() {
    let daemon = TestDaemon::start_with(Options {
        extra_config: "[matching]\nrole_mailboxes = [\"magazzino\"]\n".into(),
        ..Options::default()
    })
    .await;
    // Two people behind each shared mailbox, and one person writing twice.
    for (email, message) in [
        ("magazzino@fabbri.example.it", "Preventivo+cucina"),
        ("magazzino@fabbri.example.it", "Ordine+sedie"),
        ("info@rossi.example.it", "Preventivo+tavolo"),
        ("info@rossi.example.it", "Reclamo+consegna"),
        ("test@test.com", "Prova"),
        ("test@test.com", "Prova+due"),
        ("anna.bianchi@fabbri.example.it", "Preventivo"),
        ("anna.bianchi@fabbri.example.it", "Ancora+io"),
    ] {
        post(&daemon, email, message).await;
    }
    assert_eq!(
        daemon.wait_for_inquiries(8, Duration::from_secs(60)).await,
        8
    );
    for (email, leads) in [
        ("magazzino@fabbri.example.it", 2),
        ("info@rossi.example.it", 2),
        ("test@test.com", 2),
        ("anna.bianchi@fabbri.example.it", 1),
    ] {
        let found = daemon
            .leads(&format!("email={}", email.replace('@', "%40")))
            .await;
        assert_eq!(found.len(), leads, "{email}: {found:#?}");
        for lead in &found {
            assert_eq!(lead["email"], email, "the address stays on the lead");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_under_a_mistyped_top_level_domain_is_answered_not_filed() {
    let daemon = TestDaemon::start().await;
    let r = daemon
        .post_form(
            "it-contatti",
            Some(URLENCODED),
            "nome=Marco&email=marco%40gmail.c&messaggio=Preventivo&website=",
            &[],
        )
        .await;
    r.assert_error(422, "no_contact");
    let body = r.json();
    let email = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "email")
        .cloned()
        .unwrap_or_default();
    assert!(
        email["problem"]
            .as_str()
            .unwrap_or("")
            .contains("one letter"),
        "{body}"
    );
}
