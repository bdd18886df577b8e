//! `leadpipe import`: the real binary loading CSV files into the daemon's database and
//! broker.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::TestDaemon;

const URLENCODED: &str = "application/x-www-form-urlencoded";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

/// Runs `leadpipe import --config <the daemon's file> ARGS` with extra environment.
async fn import(daemon: &TestDaemon, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadpipe"));
    command
        .arg("import")
        .arg("--config")
        .arg(&daemon.config_path)
        .args(args)
        .env("RUST_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the import finishes within 2 minutes")
        .expect("run leadpipe import")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a successful run and returns what it printed.
fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

fn assert_line(summary: &str, expected: &str) {
    assert!(
        summary.lines().any(|l| l.trim() == expected),
        "no line `{expected}` in:\n{summary}"
    );
}

/// The one contact holding `email`.
async fn contact_by_email(daemon: &TestDaemon, email: &str) -> Value {
    let page = daemon
        .get(&format!("/v1/contacts?email={}", email.replace('@', "%40")))
        .await
        .json();
    let items = page["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "one contact with {email}: {page}");
    items[0].clone()
}

/// The daemon's `leadpipe_inquiries_stored_total` for one outcome.
async fn stored_total(daemon: &TestDaemon, outcome: &str) -> f64 {
    let text = daemon.get("/metrics").await.text();
    let label = format!("outcome=\"{outcome}\"");
    text.lines()
        .filter(|l| l.starts_with("leadpipe_inquiries_stored_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_contacts_are_recognised_when_they_write_and_bad_rows_are_reported_by_line() {
    let daemon = TestDaemon::start().await;

    let companies = import(
        &daemon,
        &[
            "--kind",
            "companies",
            fixture("companies.csv").to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let summary = succeeded(&companies);
    assert_line(&summary, "rows read:  6");
    assert_line(&summary, "stored:     4");
    assert_line(
        &summary,
        "line 6: domain:fabbri-arredamenti.example.it already belongs to company 1, imported from line 2",
    );
    assert!(summary.contains("line 7: domain: `gmail.com`"), "{summary}");
    let zolkiewski = daemon
        .get("/v1/companies?domain=zolkiewski.example.pl")
        .await
        .json();
    assert_eq!(
        zolkiewski["items"][0]["name"],
        "Żółkiewski i Synowie Sp. z o.o."
    );
    assert_eq!(
        zolkiewski["items"][0]["phones"],
        serde_json::json!(["+48221234567", "+48601234500"])
    );

    let contacts_file = fixture("contacts.csv");
    let contacts_args = [
        "--kind",
        "contacts",
        contacts_file.to_str().unwrap(),
        "--map",
        "Email secondaria=email",
        "--default-region",
        "IT",
    ];
    let summary = succeeded(&import(&daemon, &contacts_args, &[]).await);
    assert_line(&summary, "rows read:  11");
    assert_line(&summary, "stored:     7");
    assert_line(&summary, "skipped:    4");
    assert_line(
        &summary,
        "line 7: email `giuseppe.verdi(at)example.it`: no @ in the address",
    );
    let niccolo = contact_by_email(&daemon, "niccolo.fabbri@example.it").await;
    assert_line(
        &summary,
        &format!(
            "line 8: email:niccolo.fabbri@example.it already belongs to contact {}, imported from line 2",
            niccolo["id"]
        ),
    );
    assert_line(&summary, "line 9: 9 fields where the header has 7");
    assert_line(&summary, "line 11: company 99 does not exist");
    assert!(
        summary.contains("`Note`"),
        "unused columns are named: {summary}"
    );

    // Several emails in one cell, a second email column, the company, names as typed.
    assert_eq!(
        niccolo["emails"],
        serde_json::json!([
            "n.fabbri@fabbri-arredamenti.example.it",
            "niccolo.fabbri@example.it"
        ])
    );
    assert_eq!(niccolo["phones"], serde_json::json!(["+390287361234"]));
    assert_eq!(niccolo["company_id"], 1);
    assert_eq!(niccolo["name"], "Niccolò Fabbri");
    let lukasz = contact_by_email(&daemon, "biuro@zolkiewski.example.pl").await;
    assert_eq!(lukasz["name"], "Łukasz Żółkiewski");
    assert_eq!(lukasz["phones"], serde_json::json!(["+48601234567"]));
    let mai = contact_by_email(&daemon, "mai.nguyen@minhphat.example.vn").await;
    assert_eq!(mai["name"], "Nguyễn Thị Mai");
    assert_eq!(mai["company_id"], 3);
    let oliver = contact_by_email(&daemon, "oliver.hughes@acme-widgets.example.co.uk").await;
    assert_eq!(
        oliver["company_id"], 4,
        "the line after a quoted line break"
    );
    let emily = contact_by_email(&daemon, "emily@clarke.example.co.uk").await;
    assert_eq!(emily["emails"].as_array().map(Vec::len), Some(2));
    let giulia = daemon
        .get("/v1/contacts?phone=%2B393471234567")
        .await
        .json();
    assert_eq!(giulia["items"][0]["name"], "Giulia Romano");

    // Importing the same file again stores nobody twice.
    let again = succeeded(&import(&daemon, &contacts_args, &[]).await);
    assert_line(&again, "stored:     0");
    assert_line(&again, "skipped:    11");

    // Niccolò writes through a web form with his second address: a known contact.
    let response = daemon
        .post_form(
            "it-contatti",
            Some(URLENCODED),
            "nome=Niccol%C3%B2&cognome=Fabbri&email=N.Fabbri%40Fabbri-Arredamenti.example.it&messaggio=Nuovo+ordine&website=",
            &[],
        )
        .await;
    assert_eq!(response.status, 202, "{}", response.text());
    let leads = daemon.wait_for_leads("", 1, Duration::from_secs(30)).await;
    assert_eq!(leads.len(), 1, "{}", daemon.log());
    let lead = &leads[0];
    assert_eq!(lead["is_repeat"], true, "{lead}");
    assert_eq!(lead["match"]["rule"], "known_contact", "{lead}");
    assert_eq!(lead["client"]["contact_id"], niccolo["id"]);
    assert_eq!(lead["client"]["company_id"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_leads_go_through_the_pipeline_once_however_often_the_file_is_imported() {
    let daemon = TestDaemon::start().await;
    let file = fixture("leads.csv");
    let args = [
        "--kind",
        "leads",
        file.to_str().unwrap(),
        "--default-region",
        "IT",
    ];

    let summary = succeeded(&import(&daemon, &args, &[]).await);
    assert_line(&summary, "rows read:  4");
    assert!(summary.contains("published:  3"), "{summary}");
    assert_line(
        &summary,
        "line 4: no valid email address or phone number (email: missing; phone: missing)",
    );

    let leads = daemon
        .wait_for_leads("channel=import", 3, Duration::from_secs(30))
        .await;
    assert_eq!(leads.len(), 3, "{}", daemon.log());
    assert!(leads.iter().all(|l| l["source"] == "import:leads.csv"));
    let sofia = leads
        .iter()
        .find(|l| l["email"] == "sofia.esposito@example.it")
        .expect("Sofia's lead");
    assert_eq!(sofia["name"], "Sofia Esposito");
    assert_eq!(sofia["company"], "Esposito Design S.r.l.");
    assert_eq!(sofia["message"], "Vorrei un preventivo per 12 scrivanie");
    assert_eq!(sofia["utm"]["utm_source"], "newsletter");
    assert_eq!(sofia["fields"]["prodotto"], "scrivanie");
    let marco = leads
        .iter()
        .find(|l| l["phone"] == "+390287369999")
        .expect("Marco's lead, his number read as Italian");
    assert_eq!(marco["message"], "Richiamatemi dopo le 15, grazie");
    let anna = leads
        .iter()
        .find(|l| l["email"] == "anna.russo@example.it")
        .expect("Anna's lead");
    assert_eq!(anna["phone"], "+393331234567");
    assert_eq!(anna["phone_extension"], "12");

    // The raw payload is the row as it is in the file.
    let pool = daemon.db().await;
    let (content_type, raw): (Option<String>, Vec<u8>) =
        sqlx::query_as("SELECT raw_content_type, raw_body FROM inquiries WHERE id = $1")
            .bind(uuid::Uuid::parse_str(marco["inquiry_id"].as_str().unwrap()).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(content_type.as_deref(), Some("text/csv"));
    assert_eq!(
        String::from_utf8(raw).unwrap(),
        "Marco,Bianchi,,02 8736 9999,,\"Richiamatemi dopo le 15, grazie\",,sedute"
    );

    // The same file again: every row is published again and filed as a replay.
    let replays_before = stored_total(&daemon, "replay").await;
    let again = succeeded(&import(&daemon, &args, &[]).await);
    assert!(again.contains("published:  3"), "{again}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_total(&daemon, "replay").await < replays_before + 3.0 {
        assert!(
            Instant::now() < deadline,
            "the second import was not filed as replays; log: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(daemon.leads("").await.len(), 3, "no second lead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_cannot_run_exits_non_zero_and_says_what_to_do() {
    let daemon = TestDaemon::start().await;
    let leads = fixture("leads.csv");
    let contacts = fixture("contacts.csv");

    let missing = import(
        &daemon,
        &["--kind", "contacts", "/nonexistent/contacts.csv"],
        &[],
    )
    .await;
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("Cannot open /nonexistent/contacts.csv"),
        "{}",
        stderr(&missing)
    );

    let no_region = import(&daemon, &["--kind", "leads", leads.to_str().unwrap()], &[]).await;
    assert!(!no_region.status.success());
    assert!(
        stderr(&no_region).contains("--default-region"),
        "{}",
        stderr(&no_region)
    );

    let bad_map = import(
        &daemon,
        &[
            "--kind",
            "contacts",
            contacts.to_str().unwrap(),
            "--map",
            "Note=message",
        ],
        &[],
    )
    .await;
    assert!(!bad_map.status.success());
    assert!(
        stderr(&bad_map).contains("not a contacts field"),
        "{}",
        stderr(&bad_map)
    );

    let no_database = import(
        &daemon,
        &["--kind", "contacts", contacts.to_str().unwrap()],
        &[(
            "LEADPIPE__DATABASE__URL",
            "postgres://postgres@127.0.0.1:1/nowhere",
        )],
    )
    .await;
    assert!(!no_database.status.success());
    assert!(
        stderr(&no_database).contains("Cannot use the database at postgres://127.0.0.1:1/nowhere"),
        "{}",
        stderr(&no_database)
    );

    let no_broker = import(
        &daemon,
        &[
            "--kind",
            "leads",
            leads.to_str().unwrap(),
            "--default-region",
            "IT",
        ],
        &[("LEADPIPE__AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f")],
    )
    .await;
    assert!(!no_broker.status.success());
    assert!(
        stderr(&no_broker).contains("Cannot reach the message broker"),
        "{}",
        stderr(&no_broker)
    );
    assert!(
        daemon.leads("").await.is_empty(),
        "nothing was imported by the failed runs"
    );
}
