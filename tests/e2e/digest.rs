//! The morning digest of stale leads and the abandon rule, with two daemons on one
//! database and broker, mail captured by a real SMTP server.

use std::process::Command;
use std::time::Duration;

use chrono::{Timelike, Utc};
use sqlx::PgPool;

use crate::mail::{Sink, header};
use crate::support::{Options, TestDaemon, check_config, free_port, spool_dir};

/// `send_at` one minute ago in UTC (midnight in the first minutes of the day), so every
/// UTC user is due now and the test never waits for the clock.
fn send_at_just_passed() -> String {
    let now = Utc::now();
    let minutes = now.hour() * 60 + now.minute();
    if minutes < 2 {
        "00:00".into()
    } else {
        let m = minutes - 1;
        format!("{:02}:{:02}", m / 60, m % 60)
    }
}

fn digest_section(abandon_after_days: u32) -> String {
    format!(
        "[digest]\nsend_at = \"{}\"\ntime_zone = \"UTC\"\nsubject = \"{{count}} stale leads for {{name}}\"\n\
         max_leads = 10\nlead_url = \"https://crm.example.com/leads/{{id}}\"\n\
         abandon_after_days = {abandon_after_days}\n\n",
        send_at_just_passed()
    )
}

/// Runs the binary with `args` and the daemon's config: (succeeded, stdout + stderr).
fn leadpipe(daemon: &TestDaemon, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leadpipe"))
        .args(args)
        .arg("--config")
        .arg(&daemon.config_path)
        .output()
        .expect("run leadpipe");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn team(db: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar("INSERT INTO teams (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn user(db: &PgPool, name: &str, team: Option<i64>, active: bool) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO users (name, email, team_id, active) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(name)
    .bind(format!("{}@example.com", name.to_lowercase()))
    .bind(team)
    .bind(active)
    .fetch_one(db)
    .await
    .unwrap()
}

/// A lead of the default pipeline in stage `stage`, entered (and last changed) `days` ago.
async fn lead(db: &PgPool, title: &str, stage: &str, responsible: Option<i64>, days: i32) -> i64 {
    let inquiry = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO inquiries (id, channel, source, received_at, disposition, payload, raw_body)
         VALUES ($1, 'form', 'test', now(), 'lead', '{}', '')",
    )
    .bind(inquiry)
    .execute(db)
    .await
    .unwrap();
    sqlx::query_scalar(
        "INSERT INTO leads (inquiry_id, title, name, channel, source, pipeline_id, stage_id,
                            stage_entered_at, created_at, updated_at, responsible_id)
         SELECT $1, $2, 'Marco Bianchi', 'form', 'test', p.id, s.id,
                now() - make_interval(days => $4, hours => 1), now() - make_interval(days => $4),
                now() - make_interval(days => $4), $5
         FROM pipelines p JOIN stages s ON s.pipeline_id = p.id
         WHERE p.code = 'default' AND s.code = $3
         RETURNING id",
    )
    .bind(inquiry)
    .bind(title)
    .bind(stage)
    .bind(days)
    .bind(responsible)
    .fetch_one(db)
    .await
    .unwrap()
}

/// A daemon's database migrated, with no process running yet.
async fn prepared(extra_config: String) -> (TestDaemon, PgPool) {
    let daemon = TestDaemon::prepare_with(Options {
        extra_config,
        ..Options::default()
    })
    .await;
    let (ok, out) = leadpipe(&daemon, &["migrate"]);
    assert!(ok, "migrate: {out}");
    let db = daemon.db().await;
    (daemon, db)
}

/// Users and leads: Anna (agent) has two stale leads and a fresh one, Bruno supervises
/// her team and has none of his own, Carla has nothing stale, Dora is inactive.
struct People {
    anna: i64,
    bruno: i64,
    carla: i64,
    anna_stale: [i64; 2],
    untouched: i64,
    touched: i64,
}

async fn people(db: &PgPool) -> People {
    let north = team(db, "North").await;
    let anna = user(db, "Anna", Some(north), true).await;
    let bruno = user(db, "Bruno", Some(north), true).await;
    let carla = user(db, "Carla", None, true).await;
    let dora = user(db, "Dora", None, false).await;
    sqlx::query(
        "INSERT INTO api_tokens (user_id, role, token_hash, prefix)
         VALUES ($1, 'supervisor', sha256('bruno'::bytea), 'lp_b')",
    )
    .bind(bruno)
    .execute(db)
    .await
    .unwrap();
    // attempting_contact: 3-day deadline; open: 1 day; not_engaged: never stale.
    let first = lead(db, "Preventivo tetto", "attempting_contact", Some(anna), 8).await;
    let second = lead(db, "Richiamami", "open", Some(anna), 2).await;
    lead(db, "Fresh", "attempting_contact", Some(anna), 1).await;
    lead(db, "Parked", "not_engaged", Some(carla), 90).await;
    lead(db, "Dora's", "open", Some(dora), 9).await;
    // Unassigned: in nobody's digest, only the abandon rule's business.
    let untouched = lead(db, "Untouched", "working", None, 40).await;
    let touched = lead(db, "Called last week", "working", None, 40).await;
    sqlx::query(
        "INSERT INTO activities (lead_id, kind, occurred_at) VALUES ($1, 'call', now() - interval '6 days')",
    )
    .bind(touched)
    .execute(db)
    .await
    .unwrap();
    People {
        anna,
        bruno,
        carla,
        anna_stale: [first, second],
        untouched,
        touched,
    }
}

/// A second daemon on `first`'s database and broker (its own port and spool).
async fn twin(first: &TestDaemon) -> TestDaemon {
    let second = TestDaemon::prepare_with(Options::default()).await;
    let config = std::fs::read_to_string(&first.config_path).expect("the first config");
    let port = second.base.rsplit(':').next().expect("a port");
    let first_port = first.base.rsplit(':').next().expect("a port");
    let config = config.replace(
        &format!("listen = \"127.0.0.1:{first_port}\""),
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let config = config.replace(
        &spool_dir(&first.prefix).display().to_string(),
        &spool_dir(&second.prefix).display().to_string(),
    );
    std::fs::write(&second.config_path, config).expect("write the second config");
    second
}

/// The body of `message`, quoted-printable decoded when it is sent so (long lines are).
fn body(message: &str) -> String {
    let raw = message.split_once("\n\n").map_or("", |(_, b)| b);
    if !header(message, "Content-Transfer-Encoding")
        .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"))
    {
        return raw.to_owned();
    }
    let joined = raw.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn two_daemons_send_each_user_one_digest_and_a_restart_sends_nothing_more() {
    let mut sink = Sink::new();
    sink.start().await;
    let (mut first, db) = prepared(format!("{}{}", sink.config(), digest_section(30))).await;
    let p = people(&db).await;
    let mut second = twin(&first).await;
    tokio::join!(first.launch(true), second.launch(true));

    // Anna's own digest and Bruno's team digest; Carla has nothing stale.
    let messages = sink.wait_for(2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let messages_later = sink.messages();
    assert_eq!(
        messages_later.len(),
        2,
        "{messages:?}; logs: {}\n{}",
        first.log(),
        second.log()
    );
    let to = |who: &str| {
        messages_later
            .iter()
            .find(|m| header(m, "To").as_deref() == Some(who))
            .unwrap_or_else(|| panic!("a digest to {who}: {messages_later:?}"))
    };
    let anna = to("anna@example.com");
    assert_eq!(
        header(anna, "Subject").as_deref(),
        Some("2 stale leads for Anna")
    );
    assert_eq!(
        header(anna, "Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    let text = body(anna);
    assert!(
        text.contains(&format!(
            "- #{} Preventivo tetto (Marco Bianchi): stage Attempting contact, 5 days overdue\n  https://crm.example.com/leads/{}",
            p.anna_stale[0], p.anna_stale[0]
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "- #{} Richiamami (Marco Bianchi): stage Open, 1 day overdue",
            p.anna_stale[1]
        )),
        "{text}"
    );
    assert!(
        !text.contains("Fresh") && !text.contains("Your team"),
        "{text}"
    );
    let bruno = body(to("bruno@example.com"));
    assert!(bruno.contains("Your team's leads (2):"), "{bruno}");
    assert!(bruno.contains("Anna, stage Attempting contact"), "{bruno}");
    assert!(!bruno.contains("Your leads"), "{bruno}");

    let log: Vec<(i64, i32, bool)> = sqlx::query_as(
        "SELECT user_id, lead_count, outbox_id IS NOT NULL FROM digest_log ORDER BY user_id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        log,
        vec![(p.anna, 2, true), (p.bruno, 2, true), (p.carla, 0, false)]
    );

    // The abandon rule moved exactly the untouched lead, with one history row, although
    // both daemons applied it.
    let history: Vec<(i64, String, Option<String>, String)> = sqlx::query_as(
        "SELECT h.lead_id, h.changed_by, h.reason, s.code FROM lead_stage_history h
         JOIN stages s ON s.id = h.to_stage_id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        history,
        vec![(
            p.untouched,
            "system".into(),
            Some("untouched 30 days".into()),
            "ignored".into()
        )]
    );
    let touched_stage: String = sqlx::query_scalar(
        "SELECT s.code FROM leads l JOIN stages s ON s.id = l.stage_id WHERE l.id = $1",
    )
    .bind(p.touched)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(touched_stage, "working");

    // A restart decides nothing again.
    first.kill();
    second.kill();
    first.launch(true).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sink.messages().len(), 2, "log: {}", first.log());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM digest_log")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, 3);
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(outbox, 2);
    db.close().await;
}

#[tokio::test]
async fn a_dry_run_prints_each_digest_and_the_abandon_moves_and_writes_nothing_and_send_now_queues_once()
 {
    // Only the config is needed: the dry run never talks to the mail server.
    let smtp = format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"leads@example.com\"\n\n",
        free_port()
    );
    let (daemon, db) = prepared(format!("{smtp}{}", digest_section(30))).await;
    let p = people(&db).await;

    let (ok, out) = leadpipe(&daemon, &["digest", "--dry-run"]);
    assert!(ok, "{out}");
    assert!(out.contains("To: Anna <anna@example.com>"), "{out}");
    assert!(out.contains("Subject: 2 stale leads for Anna"), "{out}");
    assert!(
        out.contains(&format!(
            "- #{} Preventivo tetto (Marco Bianchi): stage Attempting contact, 5 days overdue",
            p.anna_stale[0]
        )),
        "{out}"
    );
    assert!(out.contains("To: Carla <carla@example.com>"), "{out}");
    assert!(out.contains("No stale leads: no mail"), "{out}");
    assert!(!out.contains("dora@example.com"), "{out}");
    assert!(
        out.contains("Abandon rule (untouched 30 days): 1 lead(s) would move."),
        "{out}"
    );
    assert!(
        out.contains(&format!("- #{} Untouched: Working -> Ignored", p.untouched)),
        "{out}"
    );

    // One user, on a later date: the lead in `open` is further overdue then.
    let later = (Utc::now() + chrono::Duration::days(3))
        .date_naive()
        .to_string();
    let (ok, out) = leadpipe(
        &daemon,
        &[
            "digest",
            "--dry-run",
            "--user",
            "Anna@Example.com",
            "--date",
            &later,
        ],
    );
    assert!(ok, "{out}");
    assert!(!out.contains("To: Bruno"), "{out}");
    assert!(out.contains(&format!("Local date: {later} (UTC)")), "{out}");
    assert!(
        out.contains("Richiamami (Marco Bianchi): stage Open, 4 days overdue"),
        "{out}"
    );

    for (table, expected) in [
        ("digest_log", 0_i64),
        ("outbox", 0),
        ("lead_stage_history", 0),
    ] {
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(count, expected, "{table}");
    }

    // --send-now queues what is due, once; a dry run then says the day is decided.
    let (ok, out) = leadpipe(&daemon, &["digest", "--send-now"]);
    assert!(ok && out.contains("Queued 2 digest(s)"), "{out}");
    let (ok, out) = leadpipe(&daemon, &["digest", "--send-now"]);
    assert!(ok && out.contains("Queued 0 digest(s)"), "{out}");
    let (queued, logged): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM digest_log)")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((queued, logged), (2, 3));
    let (ok, out) = leadpipe(
        &daemon,
        &["digest", "--dry-run", "--user", "anna@example.com"],
    );
    assert!(ok && out.contains("was decided already"), "{out}");
    let (ok, out) = leadpipe(&daemon, &["digest"]);
    assert!(!ok && out.contains("--dry-run"), "{out}");
    db.close().await;
}

#[test]
fn digest_settings_are_checked_with_their_keys() {
    let (ok, out) = check_config("[digest]\nsend_at = \"8 am\"\ntime_zone = \"Europe/Atlantis\"\n");
    assert!(!ok, "{out}");
    assert!(
        out.contains("digest.send_at: `8 am` is not a time of day"),
        "{out}"
    );
    assert!(out.contains("digest.time_zone: `Europe/Atlantis`"), "{out}");
    assert!(
        out.contains("digest.enabled: the digest is mailed through [smtp], which is missing"),
        "{out}"
    );
    let (ok, out) = check_config("[digest]\nenabled = false\nabandon_after_days = 30\n");
    assert!(ok, "{out}");
    let (ok, out) = check_config("[digest]\nenabled = false\nsend_att = \"08:00\"\n");
    assert!(!ok && out.contains("digest.send_att: unknown key"), "{out}");
}
