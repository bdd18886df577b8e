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

/// How many rows a table of the daemon's database holds.
async fn count(daemon: &TestDaemon, table: &str) -> i64 {
    let pool = daemon.db().await;
    let sql = format!("SELECT count(*) FROM {table}");
    let count = sqlx::query_scalar(&sql)
        .fetch_one(&pool)
        .await
        .expect("count rows");
    pool.close().await;
    count
}

/// How many inquiries the daemon's consumers have filed (leads, merges, duplicates, spam).
async fn inquiry_count(daemon: &TestDaemon) -> i64 {
    count(daemon, "inquiries").await
}

/// Runs `leadpipe import --kind leads FILE --default-region IT` with more arguments.
async fn import_leads(
    daemon: &TestDaemon,
    file: &Path,
    more: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let path = file.to_str().expect("a UTF-8 path");
    let mut args = vec!["--kind", "leads", path, "--default-region", "IT"];
    args.extend_from_slice(more);
    import(daemon, &args, env).await
}

/// The companies holding a key (`name:...`, `phone:...`), oldest first.
async fn companies_with_key(daemon: &TestDaemon, key: &str) -> Vec<(i64, String, Vec<String>)> {
    let pool = daemon.db().await;
    let rows = sqlx::query_as(
        "SELECT c.id, c.name, c.phones FROM companies c
         WHERE c.id IN (SELECT company_id FROM company_identities WHERE key = $1) ORDER BY c.id",
    )
    .bind(key)
    .fetch_all(&pool)
    .await
    .expect("companies by key");
    pool.close().await;
    rows
}

async fn company_count(daemon: &TestDaemon) -> i64 {
    count(daemon, "companies").await
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

    let summary = succeeded(&import_leads(&daemon, &file, &[], &[]).await);
    assert_line(&summary, "rows read:  4");
    assert_line(&summary, "published:  3");
    assert_line(&summary, "already filed: 0");
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

    // The same file again: every row was filed before, so nothing is published.
    let again = succeeded(&import_leads(&daemon, &file, &[], &[]).await);
    assert_line(&again, "published:  0");
    assert_line(&again, "already filed: 3");
    assert_eq!(inquiry_count(&daemon).await, 3, "nothing filed twice");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrected_leads_file_files_only_the_corrected_row_whatever_the_column_order() {
    let daemon = TestDaemon::start().await;
    let run = |name: &'static str| {
        let daemon = &daemon;
        async move {
            let more = ["--source", "crm-export"];
            succeeded(&import_leads(daemon, &fixture(name), &more, &[]).await)
        }
    };

    let first = run("leads.csv").await;
    assert_line(&first, "published:  3");
    let leads = daemon.wait_for_leads("", 3, Duration::from_secs(30)).await;
    assert_eq!(leads.len(), 3, "{}", daemon.log());

    // The same rows in another column and row order, a blank line between them.
    let reordered = run("leads_reordered.csv").await;
    assert_line(&reordered, "rows read:  4");
    assert_line(&reordered, "published:  0");
    assert_line(&reordered, "already filed: 3");
    assert_eq!(inquiry_count(&daemon).await, 3);

    // Marco's number corrected: only his row is new.
    let corrected = run("leads_corrected.csv").await;
    assert_line(&corrected, "published:  1");
    assert_line(&corrected, "already filed: 2");
    let leads = daemon.wait_for_leads("", 4, Duration::from_secs(30)).await;
    assert_eq!(leads.len(), 4, "{}", daemon.log());
    assert!(
        leads.iter().any(|l| l["phone"] == "+390287369998"),
        "the corrected row is a lead: {leads:?}"
    );
    assert_eq!(inquiry_count(&daemon).await, 4, "exactly one more inquiry");

    // And once more: nothing.
    let again = run("leads_corrected.csv").await;
    assert_line(&again, "published:  0");
    assert_line(&again, "already filed: 3");
    assert_eq!(inquiry_count(&daemon).await, 4);
    assert_eq!(daemon.leads("").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_rows_of_one_file_are_one_inquiry_and_the_repeat_is_named() {
    let daemon = TestDaemon::start().await;
    let file = fixture("leads_repeated.csv");
    let summary = succeeded(&import_leads(&daemon, &file, &[], &[]).await);
    assert_line(&summary, "rows read:  3");
    assert_line(&summary, "published:  2");
    assert_line(&summary, "skipped:    1");
    assert_line(
        &summary,
        "line 4: the same values as line 2: one inquiry, filed once",
    );
    let leads = daemon.wait_for_leads("", 2, Duration::from_secs(30)).await;
    assert_eq!(leads.len(), 2, "{}", daemon.log());
    let giorgio = leads
        .iter()
        .find(|l| l["email"] == "giorgio.conti@example.it")
        .expect("Giorgio's lead");
    assert_eq!(giorgio["inquiry_count"], 1, "{giorgio}");
    assert_eq!(inquiry_count(&daemon).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_filed_under_line_based_ids_are_recognised_as_filed() {
    use ingest::{Channel, InquiryId};
    use sha2::{Digest, Sha256};

    let daemon = TestDaemon::start().await;
    let file = fixture("leads.csv");
    // Earlier versions named a row by the first 8 bytes of the file's SHA-256 and its line.
    let digest = Sha256::digest(std::fs::read(&file).unwrap());
    let fingerprint: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let sofia = InquiryId::from_external(
        Channel::Import,
        "import:leads.csv",
        &format!("{fingerprint}:2"),
    );
    let pool = daemon.db().await;
    sqlx::query(
        "INSERT INTO inquiries (id, channel, source, external_id, received_at, disposition,
                                payload, raw_body)
         VALUES ($1, 'import', 'import:leads.csv', $2, now(), 'lead', '{}', '')",
    )
    .bind(sofia.as_uuid())
    .bind(format!("{fingerprint}:2"))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let summary = succeeded(&import_leads(&daemon, &file, &[], &[]).await);
    assert_line(&summary, "published:  2");
    assert_line(&summary, "already filed: 1");
    let leads = daemon.wait_for_leads("", 2, Duration::from_secs(30)).await;
    assert_eq!(leads.len(), 2, "{}", daemon.log());
    assert!(
        leads
            .iter()
            .all(|l| l["email"] != "sofia.esposito@example.it"),
        "{leads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leads_import_without_the_database_publishes_every_row_and_says_so() {
    let daemon = TestDaemon::start().await;
    let file = fixture("leads.csv");
    let no_database = [(
        "LEADPIPE__DATABASE__URL",
        "postgres://postgres@127.0.0.1:1/nowhere",
    )];
    let first = succeeded(&import_leads(&daemon, &file, &[], &[]).await);
    assert_line(&first, "published:  3");
    assert_eq!(
        daemon.wait_for_inquiries(3, Duration::from_secs(30)).await,
        3
    );

    let blind = succeeded(&import_leads(&daemon, &file, &[], &no_database).await);
    assert_line(&blind, "published:  3");
    assert!(
        blind.contains("Cannot check which rows were filed before")
            && blind.contains("postgres://127.0.0.1:1/nowhere"),
        "{blind}"
    );
    // Published again and filed as replays: still three inquiries and three leads.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_total(&daemon, "replay").await < 3.0 {
        assert!(
            Instant::now() < deadline,
            "the rows were not filed as replays; log: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(inquiry_count(&daemon).await, 3);
    assert_eq!(daemon.leads("").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companies_without_a_domain_are_created_once_however_often_they_are_imported() {
    let daemon = TestDaemon::start().await;
    let run = |name: &'static str| {
        let file = fixture(name);
        let daemon = &daemon;
        async move {
            let path = file.to_str().unwrap().to_owned();
            succeeded(&import(daemon, &["--kind", "companies", &path], &[]).await)
        }
    };

    let first = run("companies_without_domains.csv").await;
    assert_line(&first, "rows read:  6");
    assert_line(&first, "stored:     5");
    assert_line(&first, "skipped:    1");
    let bianchi = companies_with_key(&daemon, "name:studio bianchi").await;
    assert_eq!(bianchi.len(), 1, "{bianchi:?}");
    assert_line(
        &first,
        &format!(
            "line 5: the same company as line 4 (company {}, name:studio bianchi)",
            bianchi[0].0
        ),
    );
    // Two firms of one name, told apart by their phone numbers.
    let rossi = companies_with_key(&daemon, "name:studio rossi").await;
    assert_eq!(rossi.len(), 2, "{rossi:?}");
    assert_eq!(rossi[0].2, ["+390212345678"]);
    assert_eq!(rossi[1].2, ["+390612345678"]);

    let again = run("companies_without_domains.csv").await;
    assert_line(&again, "stored:     0");
    assert_line(&again, "already stored: 6");
    assert_line(&again, "skipped:    0");
    assert_eq!(company_count(&daemon).await, 5);

    let reordered = run("companies_without_domains_reordered.csv").await;
    assert_line(&reordered, "stored:     0");
    assert_line(&reordered, "already stored: 6");
    assert_eq!(company_count(&daemon).await, 5);

    // Bar Centrale now has a number, and a third Studio Rossi with its own number.
    let corrected = run("companies_without_domains_corrected.csv").await;
    assert_line(&corrected, "stored:     1");
    assert_line(&corrected, "updated:    1");
    assert_line(&corrected, "already stored: 5");
    assert_eq!(company_count(&daemon).await, 6);
    let bar = companies_with_key(&daemon, "phone:+390511234567").await;
    assert_eq!(bar.len(), 1, "{bar:?}");
    assert_eq!(bar[0].1, "Bar Centrale");
    assert_eq!(bar[0].2, ["+390511234567"]);
    assert_eq!(
        companies_with_key(&daemon, "name:studio rossi").await.len(),
        3
    );

    let last = run("companies_without_domains_corrected.csv").await;
    assert_line(&last, "stored:     0");
    assert_line(&last, "updated:    0");
    assert_line(&last, "already stored: 7");
    assert_eq!(company_count(&daemon).await, 6);
}
