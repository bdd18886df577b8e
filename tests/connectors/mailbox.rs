//! The mailbox connector against the real Dovecot of `scripts/services.sh`: each test
//! creates its own folders and deletes them afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ingest::email::imap::{ImapSession, connect};
use ingest::email::mailbox::{MailboxConfig, TlsMode};
use serde_json::Value;
use sqlx::PgPool;

use crate::daemon::{Daemon, World};

/// `host:port:user:password` of the test IMAP server.
fn server() -> (String, u16, String, String) {
    let spec = std::env::var("LEADPIPE_TEST_IMAP")
        .unwrap_or_else(|_| "127.0.0.1:1143:leadpipe:leadpipe".into());
    let parts: Vec<&str> = spec.splitn(4, ':').collect();
    assert_eq!(
        parts.len(),
        4,
        "LEADPIPE_TEST_IMAP is host:port:user:password"
    );
    (
        parts[0].into(),
        parts[1].parse().expect("a port"),
        parts[2].into(),
        parts[3].into(),
    )
}

fn config(name: &str, folder: &str, region: &str, internal: &[String]) -> MailboxConfig {
    let (host, port, user, password) = server();
    serde_json::from_value(serde_json::json!({
        "name": name, "host": host, "port": port, "tls": "none", "user": user,
        "password": password, "folder": folder, "source": format!("mail-{}", region.to_lowercase()),
        "default_region": region, "internal_domains": internal,
    }))
    .expect("a mailbox entry")
}

fn entry(config: &MailboxConfig) -> String {
    let domains: Vec<String> = config
        .internal_domains
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect();
    let tls = match config.tls {
        TlsMode::None => "none",
        TlsMode::Starttls => "starttls",
        TlsMode::Tls => "tls",
    };
    let ca_file = config
        .ca_file
        .as_ref()
        .map(|path| format!("ca_file = \"{}\"\n", path.display()))
        .unwrap_or_default();
    format!(
        "[[mailboxes]]\nname = \"{}\"\nhost = \"{}\"\nport = {}\ntls = \"{tls}\"\n{ca_file}user = \"{}\"\n\
         password = \"{}\"\nfolder = \"{}\"\nsource = \"{}\"\ndefault_region = \"{}\"\n\
         internal_domains = [{}]\npoll_interval_secs = 1\n\n",
        config.name,
        config.host,
        config.port(),
        config.user,
        config.password.as_deref().unwrap_or_default(),
        config.folder,
        config.source,
        config.default_region.as_deref().unwrap_or_default(),
        domains.join(", ")
    )
}

/// The CA that signed the test servers' certificate (made by `scripts/services.sh`).
fn test_ca() -> PathBuf {
    let dir =
        std::env::var("LEADPIPE_SERVICES_DIR").unwrap_or_else(|_| "/tmp/leadpipe-services".into());
    let path = PathBuf::from(dir).join("tls/ca.pem");
    assert!(
        path.is_file(),
        "{} is missing: bash scripts/services.sh makes the test CA and TLS listeners",
        path.display()
    );
    path
}

/// The port of the test server's implicit-TLS listener.
fn imaps_port() -> u16 {
    std::env::var("LEADPIPE_TEST_IMAPS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1993)
}

/// `config` over TLS in `mode`, trusting the test CA when `trusted`.
fn over_tls(mut config: MailboxConfig, mode: TlsMode, trusted: bool) -> MailboxConfig {
    config.tls = mode;
    if mode == TlsMode::Tls {
        config.port = Some(imaps_port());
    }
    config.ca_file = trusted.then(test_ca);
    config
}

/// A folder of its own on the test server, deleted when dropped.
struct Folder {
    name: String,
}

async fn session() -> ImapSession {
    let probe = config("probe", "INBOX", "IT", &[]);
    let password = probe.password.clone().unwrap_or_default();
    connect(&probe, &password).await.unwrap_or_else(|e| {
        panic!("the test IMAP server is not usable ({e}): bash scripts/services.sh starts it")
    })
}

impl Folder {
    async fn create(tag: &str) -> Self {
        let name = format!(
            "t_{}_{tag}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let mut s = session().await;
        s.create(&name).await.expect("CREATE a test folder");
        let _ = s.logout().await;
        Self { name }
    }

    async fn append(&self, messages: &[Vec<u8>]) {
        let mut s = session().await;
        for raw in messages {
            s.append(&self.name, None, None, raw)
                .await
                .expect("APPEND a message");
        }
        let _ = s.logout().await;
    }

    /// Appends `messages` as received at `date` (`01-Jan-2020 10:00:00 +0000`).
    async fn append_received(&self, messages: &[Vec<u8>], date: &str) {
        let mut s = session().await;
        let quoted = format!("\"{date}\"");
        for raw in messages {
            s.append(&self.name, None, Some(&quoted), raw)
                .await
                .expect("APPEND a message with its date");
        }
        let _ = s.logout().await;
    }

    /// The folder's UIDVALIDITY.
    async fn uid_validity(&self) -> u32 {
        let mut s = session().await;
        let mailbox = s.examine(&self.name).await.expect("EXAMINE");
        let _ = s.logout().await;
        mailbox.uid_validity.expect("a UIDVALIDITY")
    }

    /// Deletes and creates the folder again with `messages`: a new UIDVALIDITY.
    async fn recreate(&self, messages: &[Vec<u8>]) {
        let mut s = session().await;
        s.delete(&self.name).await.expect("DELETE the folder");
        let _ = s.logout().await;
        // A session that had the old folder open (the reader's) may still be clearing
        // it away; Dovecot then refuses an APPEND with "Mailbox was deleted under us".
        // Such a refusal appended nothing, so the folder is made again and refilled.
        for attempt in 1..=5 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut s = session().await;
            let _ = s.delete(&self.name).await;
            s.create(&self.name).await.expect("CREATE it again");
            let mut refused = None;
            for raw in messages {
                if let Err(error) = s.append(&self.name, None, None, raw).await {
                    refused = Some(error);
                    break;
                }
            }
            let _ = s.logout().await;
            match refused {
                None => return,
                Some(error) if attempt == 5 => panic!("APPEND to the recreated folder: {error}"),
                Some(_) => {}
            }
        }
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let mut s = session().await;
                let _ = s.delete(&name).await;
                let _ = s.logout().await;
            });
        })
        .join();
    }
}

/// Per external id (Message-ID with brackets) of the sources `LIKE source`: how many inquiries, their
/// disposition and spam reason, and the lead their activity is on.
#[derive(Debug, Clone, Default)]
struct Filed {
    inquiries: i64,
    disposition: String,
    reason: Option<String>,
    activity_leads: Vec<i64>,
}

async fn filed(pool: &PgPool, source: &str) -> BTreeMap<String, Filed> {
    let rows: Vec<(String, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT external_id, count(*) OVER (PARTITION BY external_id), disposition, spam_reason \
         FROM inquiries WHERE source LIKE $1 AND external_id IS NOT NULL",
    )
    .bind(source)
    .fetch_all(pool)
    .await
    .expect("read inquiries");
    let mut out = BTreeMap::new();
    for (id, n, disposition, reason) in rows {
        out.insert(
            id,
            Filed {
                inquiries: n,
                disposition,
                reason,
                activity_leads: Vec::new(),
            },
        );
    }
    let activities: Vec<(String, i64)> = sqlx::query_as(
        "SELECT a.data->>'message_id', a.lead_id FROM activities a \
         JOIN leads l ON l.id = a.lead_id WHERE a.kind = 'email'",
    )
    .fetch_all(pool)
    .await
    .expect("read activities");
    for (id, lead) in activities {
        out.entry(id).or_default().activity_leads.push(lead);
    }
    out
}

async fn wait_for(
    pool: &PgPool,
    source: &str,
    n: usize,
    bound: Duration,
) -> BTreeMap<String, Filed> {
    let deadline = Instant::now() + bound;
    loop {
        let now = filed(pool, source).await;
        let stored = now.values().filter(|f| f.inquiries > 0).count();
        if stored >= n || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn lead_count(pool: &PgPool, source: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM leads WHERE source = $1")
        .bind(source)
        .fetch_one(pool)
        .await
        .expect("count leads")
}

pub async fn every_fixture_appended_to_a_real_mailbox_gives_its_expectations() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    check_corpus(&root.join("tests/fixtures/email")).await;
    // The shared corpus beside the checkout, where there is one.
    let shared = root.join("../shared/corpus/email");
    if shared.join("expect.jsonl").is_file() {
        check_corpus(&shared).await;
    }
}

async fn check_corpus(dir: &std::path::Path) {
    let lines: Vec<Value> = std::fs::read_to_string(dir.join("expect.jsonl"))
        .expect("the fixtures' expectations")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let by_file: BTreeMap<String, &Value> = lines
        .iter()
        .map(|e| (e["file"].as_str().unwrap_or_default().to_owned(), e))
        .collect();
    let world = World::new().await;
    let mut regions: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in &lines {
        regions
            .entry(e["default_region"].as_str().unwrap_or("US").to_owned())
            .or_default()
            .push(e);
    }
    let mut folders = Vec::new();
    let mut text = String::new();
    for (region, expectations) in &regions {
        let folder = Folder::create(&region.to_lowercase()).await;
        let internal: BTreeSet<String> = expectations
            .iter()
            .flat_map(|e| {
                e["internal_domains"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|d| d.as_str().map(str::to_owned))
            .collect();
        let mut files: Vec<&str> = expectations
            .iter()
            .filter_map(|e| e["file"].as_str())
            .collect();
        files.sort_unstable();
        let raws: Vec<Vec<u8>> = files
            .iter()
            .map(|f| std::fs::read(dir.join(f)).expect("a fixture"))
            .collect();
        folder.append(&raws).await;
        let internal: Vec<String> = internal.into_iter().collect();
        text += &entry(&config(
            &format!("fx-{}", region.to_lowercase()),
            &folder.name,
            region,
            &internal,
        ));
        folders.push(folder);
    }
    let daemon = Daemon::start_with(&world, &text).await;
    let pool = world.db().await;
    let mut all: BTreeMap<String, Filed>;
    let deadline = Instant::now() + Duration::from_secs(90);
    let distinct: BTreeSet<&str> = lines
        .iter()
        .filter_map(|e| e["message_id"].as_str())
        .collect();
    loop {
        all = filed(&pool, "mail-%").await;
        let stored = distinct
            .iter()
            .filter(|id| all.get(**id).is_some_and(|f| f.inquiries > 0))
            .count();
        if stored == distinct.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Let the consumers file what they hold.
    tokio::time::sleep(Duration::from_secs(2)).await;
    all = filed(&pool, "mail-%").await;

    let mut bad = Vec::new();
    for e in &lines {
        let file = e["file"].as_str().unwrap_or_default();
        let id = e["message_id"].as_str().unwrap_or_default();
        let got = all.get(id).cloned().unwrap_or_default();
        if got.inquiries != 1 {
            bad.push(format!(
                "{file}: {} inquiries with {id}, want 1",
                got.inquiries
            ));
            continue;
        }
        if let Some(reason) = e["reason"].as_str() {
            if got.disposition != "spam"
                || got.reason.as_deref() != Some(reason)
                || !got.activity_leads.is_empty()
            {
                bad.push(format!(
                    "{file}: kept as {} ({:?}) with {} activities, want a non-lead for {reason}",
                    got.disposition,
                    got.reason,
                    got.activity_leads.len()
                ));
            }
        } else if let Some(parent) = e["thread_of"].as_str() {
            let parent_id = by_file[parent]["message_id"].as_str().unwrap_or_default();
            let parent_leads = all
                .get(parent_id)
                .map(|f| f.activity_leads.clone())
                .unwrap_or_default();
            if got.activity_leads.len() != 1 || parent_leads.first() != got.activity_leads.first() {
                bad.push(format!(
                    "{file}: on leads {:?}, want the lead of {parent} ({parent_leads:?})",
                    got.activity_leads
                ));
            }
            // A phone the reply adds joins the thread's lead.
            if let (Some(phone), Some(lead)) =
                (e["phone_e164"].as_str(), got.activity_leads.first())
            {
                let keys: Vec<String> =
                    sqlx::query_scalar("SELECT key FROM lead_identities WHERE lead_id = $1")
                        .bind(lead)
                        .fetch_all(&pool)
                        .await
                        .expect("the lead's keys");
                if !keys.iter().any(|k| k == &format!("phone:{phone}")) {
                    bad.push(format!(
                        "{file}: the phone it adds is not among the lead's keys {keys:?}"
                    ));
                }
            }
        } else if e["lead"].as_bool() != Some(true) {
            if e["duplicate_of"].is_null() && !got.activity_leads.is_empty() {
                bad.push(format!(
                    "{file}: never a lead, yet on leads {:?}",
                    got.activity_leads
                ));
            }
        } else {
            if got.activity_leads.len() != 1 {
                bad.push(format!(
                    "{file}: {} activities, want 1",
                    got.activity_leads.len()
                ));
                continue;
            }
            let (email, name, phone): (Option<String>, Option<String>, Option<String>) =
                sqlx::query_as("SELECT email, name, phone FROM leads WHERE id = $1")
                    .bind(got.activity_leads[0])
                    .fetch_one(&pool)
                    .await
                    .expect("the lead");
            if email.as_deref() != e["email"].as_str() || name.as_deref() != e["name"].as_str() {
                bad.push(format!(
                    "{file}: lead {email:?} {name:?}, want {} {}",
                    e["email"], e["name"]
                ));
            }
            // A thread's first mail may get its number from a reply; the others not.
            let is_parent = lines.iter().any(|l| l["thread_of"].as_str() == Some(file));
            if !is_parent && phone.as_deref() != e["phone_e164"].as_str() {
                bad.push(format!(
                    "{file}: lead phone {phone:?}, want {}",
                    e["phone_e164"]
                ));
            }
            if let Some(want) = e["subject"].as_str() {
                let subject: Option<String> = sqlx::query_scalar(
                    "SELECT subject FROM activities WHERE kind = 'email' AND data->>'message_id' = $1",
                )
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("the activity");
                if subject.as_deref() != Some(want) {
                    bad.push(format!(
                        "{file}: activity subject {subject:?}, want {want:?}"
                    ));
                }
            }
        }
    }
    let want_leads = lines
        .iter()
        .filter(|e| e["lead"].as_bool() == Some(true))
        .count() as i64;
    let mut leads = 0;
    for region in regions.keys() {
        leads += lead_count(&pool, &format!("mail-{}", region.to_lowercase())).await;
    }
    if leads != want_leads {
        bad.push(format!("{leads} leads, want {want_leads}"));
    }
    let metrics = daemon.metrics().await;
    if !metrics.contains("leadpipe_mail_rejected_total") {
        bad.push("/metrics has no leadpipe_mail_rejected_total".into());
    }
    pool.close().await;
    assert!(
        bad.is_empty(),
        "{}\nstored: {all:?}\n{}",
        bad.join("\n"),
        daemon.log()
    );
    drop(daemon);
    drop(folders);
}

fn numbered(tag: &str, from: usize, to: usize) -> Vec<Vec<u8>> {
    (from..to)
        .map(|i| {
            format!(
                "From: \"Persona Prova {i}\" <persona.{tag}.{i}@example.it>\r\nTo: vendite@example.it\r\n\
                 Subject: Preventivo {i}\r\nDate: Thu, 15 May 2025 09:00:00 +0200\r\n\
                 Message-ID: <n.{tag}.{i}@example.it>\r\nMIME-Version: 1.0\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\nVorrei un preventivo per {i} sedie.\r\n"
            )
            .into_bytes()
        })
        .collect()
}

/// How many inquiries of `source` are stored.
async fn stored_count(pool: &PgPool, source: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM inquiries WHERE source = $1")
        .bind(source)
        .fetch_one(pool)
        .await
        .expect("count inquiries")
}

async fn cursor(pool: &PgPool, name: &str) -> Option<Value> {
    sqlx::query_scalar("SELECT cursor FROM connector_checkpoints WHERE source_key = $1")
        .bind(format!("email:{name}"))
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

/// `numbered` messages, every tenth of them an auto-reply (kept, counted, never a lead).
fn mixed(tag: &str, from: usize, to: usize) -> Vec<Vec<u8>> {
    numbered(tag, from, to)
        .into_iter()
        .zip(from..to)
        .map(|(raw, i)| {
            if i % 10 == 9 {
                let text = String::from_utf8(raw).expect("ASCII");
                text.replacen(
                    "MIME-Version",
                    "Auto-Submitted: auto-replied\r\nMIME-Version",
                    1,
                )
                .into_bytes()
            } else {
                raw
            }
        })
        .collect()
}

/// What is wrong with `all` for the `mixed` messages `0..n`: each must be one inquiry,
/// one lead, or (every tenth) one non-lead with the reason `auto_reply` on no lead.
fn mixed_problems(all: &BTreeMap<String, Filed>, tag: &str, n: usize) -> Vec<String> {
    let mut bad = Vec::new();
    for i in 0..n {
        let id = format!("<n.{tag}.{i}@example.it>");
        let got = all.get(&id).cloned().unwrap_or_default();
        let rejected = i % 10 == 9;
        let fine = got.inquiries == 1
            && if rejected {
                got.reason.as_deref() == Some("auto_reply") && got.activity_leads.is_empty()
            } else {
                got.reason.is_none() && got.activity_leads.len() == 1
            };
        if !fine {
            bad.push(format!("{id}: {got:?}"));
        }
    }
    if all.len() != n {
        bad.push(format!("{} messages stored, want {n}", all.len()));
    }
    bad
}

pub async fn a_500_message_mailbox_killed_mid_way_then_recreated_files_each_message_exactly_once() {
    const N: usize = 500;
    const LEADS: i64 = (N - N / 10) as i64;
    let world = World::new().await;
    let folder = Folder::create("kill").await;
    let tag = folder.name.clone();
    folder.append(&mixed(&tag, 0, N)).await;
    let mailbox = config("kill", &folder.name, "IT", &[]);
    let mut daemon = Daemon::start_with(&world, &entry(&mailbox)).await;
    let pool = world.db().await;
    // Killed as soon as the reader has moved its cursor past a first batch, so that part
    // of the mailbox, neither none nor all of it, is read when the process dies. Killing by
    // what was read rather than by what was filed keeps the test independent of how long
    // the consumers wait to fill a batch, which may let the reader finish first.
    let deadline = Instant::now() + Duration::from_secs(120);
    let read_at_kill = loop {
        let read = cursor(&pool, "kill")
            .await
            .and_then(|c| c["last_uid"].as_u64())
            .unwrap_or(0);
        if read >= N as u64 / 10 {
            daemon.kill();
            break read;
        }
        assert!(
            Instant::now() < deadline,
            "the mailbox is being read\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let at_kill = stored_count(&pool, "mail-it").await;
    // The cursor may have moved once more between the read and the kill.
    let read_at_kill = cursor(&pool, "kill")
        .await
        .and_then(|c| c["last_uid"].as_u64())
        .unwrap_or(read_at_kill);
    assert!(
        read_at_kill < N as u64,
        "killed with part of the mailbox read: cursor at {read_at_kill} of {N}\n{}",
        daemon.log()
    );
    daemon.launch().await;
    wait_for(&pool, "mail-it", N, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = filed(&pool, "mail-it").await;
    let bad = mixed_problems(&all, &tag, N);
    assert!(
        bad.is_empty(),
        "every message is one lead or one kept auto-reply (killed after {at_kill}):\n{}\n{}",
        bad.join("\n"),
        daemon.log()
    );
    assert_eq!(lead_count(&pool, "mail-it").await, LEADS);
    let metrics = daemon.metrics().await;
    let rejected = crate::daemon::metric(
        &metrics,
        "leadpipe_mail_rejected_total",
        &["reason=\"auto_reply\""],
    );
    assert!(
        rejected.is_some_and(|n| n >= 1.0),
        "the restarted reader counts the auto-replies it read: {rejected:?}"
    );
    // The connector's metrics name the source its mail is filed under and the mailbox
    // that read it.
    let labels = [
        "channel=\"email\"",
        "source=\"mail-it\"",
        "connector=\"kill\"",
    ];
    for name in [
        "leadpipe_connector_up",
        "leadpipe_inquiries_received_total",
        "leadpipe_connector_last_success_timestamp_seconds",
    ] {
        let value = crate::daemon::metric(&metrics, name, &labels);
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{name}{labels:?}: {value:?}\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("source=\"kill\""),
        "no metric takes the mailbox's name for its source:\n{metrics}"
    );
    let before = cursor(&pool, "kill").await.expect("a cursor");
    assert_eq!(
        before["last_uid"], N as u64,
        "the cursor is at the last UID"
    );

    // A new UIDVALIDITY while the daemon is stopped: the folder is read again on the
    // next start, and nothing is filed twice.
    daemon.kill();
    folder.recreate(&mixed(&tag, 0, N)).await;
    daemon.launch().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = cursor(&pool, "kill").await.expect("a cursor");
        if now["uid_validity"] != before["uid_validity"] && now["last_uid"] == N as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recreated folder is read again: {now}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = filed(&pool, "mail-it").await;
    let bad = mixed_problems(&after, &tag, N);
    assert!(
        bad.is_empty(),
        "a re-read files nothing twice:\n{}",
        bad.join("\n")
    );
    assert_eq!(lead_count(&pool, "mail-it").await, LEADS);
    pool.close().await;
    daemon.kill();
    drop(folder);
}

pub async fn two_daemons_on_one_mailbox_never_both_read_it() {
    let world = World::new().await;
    let folder = Folder::create("two").await;
    let tag = folder.name.clone();
    let mailbox = config("two", &folder.name, "IT", &[]);
    let text = entry(&mailbox);
    let first = Daemon::start_with(&world, &text).await;
    assert!(
        first
            .wait_state("two", "running", Duration::from_secs(30))
            .await,
        "{}",
        first.log()
    );
    let second = Daemon::start_with(&world, &text).await;
    assert!(
        second
            .wait_state("two", "standby", Duration::from_secs(30))
            .await,
        "{}",
        second.log()
    );
    folder.append(&numbered(&tag, 0, 100)).await;
    let pool = world.db().await;
    wait_for(&pool, "mail-it", 100, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = filed(&pool, "mail-it").await;
    assert_eq!(all.len(), 100);
    assert!(
        all.values()
            .all(|f| f.inquiries == 1 && f.activity_leads.len() == 1)
    );
    assert_eq!(
        second.connector("two").await["state"],
        "standby",
        "the second never read"
    );
    let read_by_second = crate::daemon::metric(
        &second.metrics().await,
        "leadpipe_inquiries_received_total",
        &["connector=\"two\""],
    );
    assert!(
        read_by_second.is_none_or(|n| n == 0.0),
        "the standby daemon submitted {read_by_second:?}"
    );
    pool.close().await;
    drop((first, second, folder));
}

/// The flags of every message of `folder`, read without changing any.
async fn flags(folder: &str) -> Vec<Vec<String>> {
    let mut s = session().await;
    s.examine(folder).await.expect("EXAMINE");
    let fetched: Vec<_> = s
        .fetch("1:*", "(UID FLAGS)")
        .await
        .expect("FETCH FLAGS")
        .collect()
        .await;
    let mut out: Vec<(u32, Vec<String>)> = fetched
        .into_iter()
        .filter_map(Result::ok)
        .map(|f| {
            let flags = f.flags().map(|flag| format!("{flag:?}")).collect();
            (f.uid.unwrap_or_default(), flags)
        })
        .collect();
    let _ = s.logout().await;
    out.sort();
    out.into_iter().map(|(_, f)| f).collect()
}

pub async fn mail_is_never_marked_read_flagged_only_when_asked_and_a_backfill_files_nothing_twice()
{
    let world = World::new().await;
    let plain = Folder::create("plain").await;
    let flagged = Folder::create("flagged").await;
    let tag = plain.name.clone();
    plain.append(&numbered(&tag, 0, 5)).await;
    flagged.append(&numbered(&tag, 5, 10)).await;
    let text = entry(&config("plain", &plain.name, "IT", &[]))
        + &entry(&config("flagged", &flagged.name, "IT", &[])).replace(
            "poll_interval_secs = 1\n",
            "poll_interval_secs = 1\nprocessed = \"flag\"\n",
        );
    let daemon = Daemon::start_with(&world, &text).await;
    let pool = world.db().await;
    wait_for(&pool, "mail-it", 10, Duration::from_secs(60)).await;
    // The flag follows the cursor's commit by a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cursor(&pool, "flagged")
        .await
        .is_none_or(|c| c["last_uid"] != 5)
    {
        assert!(
            Instant::now() < deadline,
            "the flagged mailbox is read\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for f in flags(&plain.name).await {
        // \\Recent is the server's session flag, not a mark anyone set.
        assert!(
            f.iter().all(|flag| flag == "Recent"),
            "a message of the plain mailbox got flags {f:?}"
        );
    }
    for f in flags(&flagged.name).await {
        assert!(
            f.iter().any(|flag| flag.contains("$Leadpipe"))
                && !f.iter().any(|flag| flag.contains("Seen")),
            "a flagged mailbox's message has $Leadpipe and is still unread: {f:?}"
        );
    }

    let (ok, out) = daemon.command(&["mailbox", "test", "plain"]);
    assert!(ok, "mailbox test succeeds: {out}");
    assert!(
        out.contains("messages:    5")
            && out.contains("UIDVALIDITY: ")
            && out.contains("IDLE:        supported"),
        "{out}"
    );
    let (ok, out) = daemon.command(&["mailbox", "test", "nosuch"]);
    assert!(!ok && out.contains("no mailbox named `nosuch`"), "{out}");

    let before = filed(&pool, "mail-it").await;
    let (ok, out) = daemon.command(&["mailbox", "backfill", "plain", "--since", "2000-01-01"]);
    assert!(ok, "backfill succeeds: {out}");
    assert!(out.contains("5 message(s)"), "{out}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = filed(&pool, "mail-it").await;
    assert_eq!(before.len(), after.len());
    assert!(
        after
            .values()
            .all(|f| f.inquiries == 1 && f.activity_leads.len() == 1),
        "a backfill of filed mail files nothing: {after:?}"
    );
    assert_eq!(lead_count(&pool, "mail-it").await, 10);
    pool.close().await;
    drop((daemon, plain, flagged));
}

/// How many messages `folder` holds.
async fn count(folder: &str) -> u32 {
    let mut s = session().await;
    let mailbox = s.examine(folder).await.expect("EXAMINE");
    let _ = s.logout().await;
    mailbox.exists
}

pub async fn an_oversized_message_is_kept_unread_and_processed_mail_is_moved_after_filing() {
    let world = World::new().await;
    let inbox = Folder::create("in").await;
    let done = Folder::create("done").await;
    let tag = inbox.name.clone();
    let mut messages = numbered(&tag, 0, 3);
    // The middle one is far over the cap: never fetched, kept with its size.
    messages[1].extend(std::iter::repeat_n(b'x', 8000));
    messages[1].extend_from_slice(b"\r\n");
    inbox.append(&messages).await;
    let text = entry(&config("moving", &inbox.name, "IT", &[])).replace(
        "poll_interval_secs = 1\n",
        &format!(
            "poll_interval_secs = 1\nmax_message_bytes = 4096\nprocessed = \"{}\"\n",
            done.name
        ),
    );
    let daemon = Daemon::start_with(&world, &text).await;
    let pool = world.db().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while cursor(&pool, "moving")
        .await
        .is_none_or(|c| c["last_uid"] != 3)
    {
        assert!(
            Instant::now() < deadline,
            "the mailbox is read\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = wait_for(&pool, "mail-it", 3, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leads = lead_count(&pool, "mail-it").await;
    let kept: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT disposition, payload->'fields'->>'error' FROM inquiries WHERE spam_reason = 'unparseable'",
    )
    .fetch_all(&pool)
    .await
    .expect("the kept message");
    pool.close().await;
    assert_eq!(all.len(), 3, "three inquiries: {all:?}\n{}", daemon.log());
    assert_eq!(leads, 2, "the two readable messages are leads");
    assert_eq!(
        kept.len(),
        1,
        "the oversized message is kept once: {kept:?}"
    );
    assert!(
        kept[0]
            .1
            .as_deref()
            .is_some_and(|e| e.contains("max_message_bytes")),
        "its error names the cap: {kept:?}"
    );
    assert_eq!(
        count(&inbox.name).await,
        0,
        "every filed message left the folder"
    );
    assert_eq!(count(&done.name).await, 3, "and is in the processed folder");
    drop((daemon, inbox, done));
}

/// A TCP proxy to the IMAP server whose connections can be frozen: they stay open but
/// carry nothing more, as a connection behind a dead NAT or a hung server does.
struct Proxy {
    port: u16,
    frozen_below: std::sync::Arc<std::sync::atomic::AtomicU64>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    async fn start() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        let (host, port, _, _) = server();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let local = listener.local_addr().expect("an address").port();
        let frozen_below = std::sync::Arc::new(AtomicU64::new(0));
        let next = std::sync::Arc::new(AtomicU64::new(1));
        let frozen = frozen_below.clone();
        let counter = next.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = counter.fetch_add(1, Ordering::SeqCst);
                let Ok(upstream) = tokio::net::TcpStream::connect((host.as_str(), port)).await
                else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(uw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    ),
                    (Box::new(ur), Box::new(cw)),
                ] {
                    let frozen = frozen.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if id < frozen.load(Ordering::SeqCst) {
                                // Silence, with both sockets kept open.
                                std::future::pending::<()>().await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Self {
            port: local,
            frozen_below,
            next,
        }
    }

    /// Every connection open now carries nothing more; new ones work.
    fn freeze(&self) {
        use std::sync::atomic::Ordering;
        self.frozen_below
            .store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

pub async fn a_connection_that_stops_answering_is_noticed_and_the_reader_reconnects() {
    let world = World::new().await;
    let folder = Folder::create("dead").await;
    let tag = folder.name.clone();
    folder.append(&numbered(&tag, 0, 2)).await;
    let proxy = Proxy::start().await;
    let (_, port, _, _) = server();
    let text = entry(&config("dead", &folder.name, "IT", &[]))
        .replace(
            &format!("port = {port}\n"),
            &format!("port = {}\n", proxy.port),
        )
        .replace(
            "poll_interval_secs = 1\n",
            "poll_interval_secs = 1\nidle_interval_secs = 10\n",
        );
    let daemon = Daemon::start_with(&world, &text).await;
    let pool = world.db().await;
    assert_eq!(
        wait_for(&pool, "mail-it", 2, Duration::from_secs(60))
            .await
            .len(),
        2,
        "{}",
        daemon.log()
    );
    // The reader now waits in IDLE on a connection that goes silent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.freeze();
    folder.append(&numbered(&tag, 2, 3)).await;
    let all = wait_for(&pool, "mail-it", 3, Duration::from_secs(150)).await;
    pool.close().await;
    assert_eq!(
        all.len(),
        3,
        "the message that arrived while the connection was silent is read after a \
         reconnect\n{}",
        daemon.log()
    );
    drop((daemon, folder));
}

pub async fn mailboxes_over_starttls_and_implicit_tls_file_their_mail_and_an_untrusted_certificate_is_named()
 {
    let world = World::new().await;
    let starttls = Folder::create("starttls").await;
    let implicit = Folder::create("tls").await;
    let untrusted = Folder::create("untrusted").await;
    let tag = starttls.name.clone();
    starttls.append(&numbered(&tag, 0, 2)).await;
    implicit.append(&numbered(&tag, 2, 4)).await;
    untrusted.append(&numbered(&tag, 4, 5)).await;
    let text = entry(&over_tls(
        config("starttls", &starttls.name, "IT", &[]),
        TlsMode::Starttls,
        true,
    )) + &entry(&over_tls(
        config("implicit", &implicit.name, "IT", &[]),
        TlsMode::Tls,
        true,
    )) + &entry(&over_tls(
        config("untrusted", &untrusted.name, "IT", &[]),
        TlsMode::Tls,
        false,
    ));
    let daemon = Daemon::start_with(&world, &text).await;
    let pool = world.db().await;
    wait_for(&pool, "mail-it", 4, Duration::from_secs(60)).await;
    // The untrusted mailbox would have filed by now if it could.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all: BTreeSet<String> = filed(&pool, "mail-it").await.into_keys().collect();
    let want: BTreeSet<String> = (0..4)
        .map(|i| format!("<n.{tag}.{i}@example.it>"))
        .collect();
    assert_eq!(
        all,
        want,
        "both TLS mailboxes file their mail, the untrusted one nothing\n{}",
        daemon.log()
    );
    for name in ["starttls", "implicit"] {
        let c = cursor(&pool, name).await;
        assert!(
            c.as_ref().is_some_and(|c| c["last_uid"] == 2),
            "{name}: {c:?}"
        );
    }
    assert!(cursor(&pool, "untrusted").await.is_none());
    pool.close().await;

    // The reader's error names the certificate problem, on /readyz and in the log.
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        let entry = daemon.connector("untrusted").await;
        if let Some(error) = entry["last_error"].as_str() {
            break error.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no error for the untrusted mailbox: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        error.contains("certificate is not trusted") && error.contains("ca_file"),
        "{error}"
    );
    let (ok, out) = daemon.command(&["mailbox", "test", "untrusted"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("certificate is not trusted")
            && out.contains("UnknownIssuer")
            && out.contains("ca_file"),
        "mailbox test says plainly why: {out}"
    );
    for name in ["starttls", "implicit"] {
        let (ok, out) = daemon.command(&["mailbox", "test", name]);
        assert!(ok && out.contains("messages:    2"), "{name}: {out}");
    }
    drop((daemon, starttls, implicit, untrusted));
}

pub async fn a_backfill_recovers_mail_the_cursor_passed_over_once_and_reads_nothing_older() {
    let world = World::new().await;
    let folder = Folder::create("backfill").await;
    let tag = folder.name.clone();
    let mailbox = config("missed", &folder.name, "IT", &[]);
    let mut daemon = Daemon::start_with(&world, &entry(&mailbox)).await;
    assert!(
        daemon
            .wait_state("missed", "running", Duration::from_secs(30))
            .await,
        "{}",
        daemon.log()
    );
    daemon.kill();
    // Two messages from long ago, four recent ones; then the cursor is put past all of
    // them, as a database restored from an older backup or an operator's mistake does.
    folder
        .append_received(&numbered(&tag, 0, 2), "01-Jan-2020 10:00:00 +0000")
        .await;
    folder.append(&numbered(&tag, 2, 6)).await;
    let pool = world.db().await;
    sqlx::query(
        "INSERT INTO connector_checkpoints (source_key, cursor) VALUES ($1, $2) \
         ON CONFLICT (source_key) DO UPDATE SET cursor = EXCLUDED.cursor",
    )
    .bind("email:missed")
    .bind(serde_json::json!({"uid_validity": folder.uid_validity().await, "last_uid": 6}))
    .execute(&pool)
    .await
    .expect("set the cursor");
    daemon.launch().await;
    assert!(
        daemon
            .wait_state("missed", "running", Duration::from_secs(30))
            .await,
        "{}",
        daemon.log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        filed(&pool, "mail-it").await.is_empty(),
        "the reader files nothing behind its cursor\n{}",
        daemon.log()
    );

    let recent: BTreeSet<String> = (2..6)
        .map(|i| format!("<n.{tag}.{i}@example.it>"))
        .collect();
    for round in 0..2 {
        let (ok, out) = daemon.command(&["mailbox", "backfill", "missed", "--since", "2024-01-01"]);
        assert!(ok, "backfill {round} succeeds: {out}");
        assert!(
            out.contains("4 message(s)"),
            "only the recent mail is read: {out}"
        );
        wait_for(&pool, "mail-it", 4, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let all = filed(&pool, "mail-it").await;
        let ids: BTreeSet<String> = all.keys().cloned().collect();
        assert_eq!(
            ids, recent,
            "backfill {round}: the recent mail, nothing older"
        );
        assert!(
            all.values()
                .all(|f| f.inquiries == 1 && f.activity_leads.len() == 1),
            "backfill {round}: each message is one inquiry on one lead: {all:?}"
        );
        assert_eq!(lead_count(&pool, "mail-it").await, 4, "backfill {round}");
    }
    assert_eq!(
        cursor(&pool, "missed").await.map(|c| c["last_uid"].clone()),
        Some(serde_json::json!(6)),
        "a backfill leaves the cursor alone"
    );
    pool.close().await;
    drop((daemon, folder));
}

pub async fn a_folder_recreated_under_a_running_reader_is_read_again_at_once_without_duplicates() {
    let world = World::new().await;
    let folder = Folder::create("validity").await;
    let tag = folder.name.clone();
    folder.append(&mixed(&tag, 0, 10)).await;
    // IDLE is re-issued only every 300 s: the reader must notice the change sooner.
    let mailbox = config("validity", &folder.name, "IT", &[]);
    let daemon = Daemon::start_with(&world, &entry(&mailbox)).await;
    let pool = world.db().await;
    wait_for(&pool, "mail-it", 10, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        if let Some(c) = cursor(&pool, "validity").await
            && c["last_uid"] == 10
        {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the folder is read\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Now waiting in IDLE on the folder.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let changed = Instant::now();
    folder.recreate(&mixed(&tag, 0, 20)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = cursor(&pool, "validity").await.expect("a cursor");
        if now["uid_validity"] != before["uid_validity"] && now["last_uid"] == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recreated folder is read again long before the IDLE interval ends: {now}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = changed.elapsed();
    wait_for(&pool, "mail-it", 20, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = filed(&pool, "mail-it").await;
    let bad = mixed_problems(&all, &tag, 20);
    assert!(
        bad.is_empty(),
        "the old messages are not filed twice and the new ones are filed:\n{}",
        bad.join("\n")
    );
    assert_eq!(lead_count(&pool, "mail-it").await, 18);
    assert!(
        took < Duration::from_secs(30) && daemon.log_contains("UIDVALIDITY changed"),
        "the reader noticed the new folder after {took:?}\n{}",
        daemon.log()
    );
    pool.close().await;
    drop((daemon, folder));
}
