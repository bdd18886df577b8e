//! Outgoing mail on a real SMTP server: an aiosmtpd process per test, keeping every message
//! it accepts in a Maildir of its own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Row;

use crate::support::{Options, TestDaemon, free_port};

const URLENCODED: &str = "application/x-www-form-urlencoded";

/// An SMTP server that keeps what it is sent, on its own port and Maildir.
pub(crate) struct Sink {
    port: u16,
    maildir: PathBuf,
    child: Option<Child>,
    /// `none`, `starttls` (required by the sink) or `tls`.
    tls: &'static str,
    /// Whether the daemon is told to trust the test CA.
    trusted: bool,
}

/// The test servers' TLS files (made by `scripts/services.sh`): CA, certificate, key.
fn test_tls_files() -> (PathBuf, PathBuf, PathBuf) {
    let dir = PathBuf::from(
        std::env::var("LEADPIPE_SERVICES_DIR").unwrap_or_else(|_| "/tmp/leadpipe-services".into()),
    )
    .join("tls");
    let files = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    assert!(
        files.0.is_file() && files.1.is_file() && files.2.is_file(),
        "{} lacks the test CA and certificate: bash scripts/services.sh makes them",
        dir.display()
    );
    files
}

impl Sink {
    /// A sink on a free port, not started yet.
    pub(crate) fn new() -> Self {
        let maildir = std::env::temp_dir()
            .join("leadpipe-tests")
            .join(format!("sink-{}", uuid::Uuid::new_v4().simple()));
        Self {
            port: free_port(),
            maildir,
            child: None,
            tls: "none",
            trusted: true,
        }
    }

    /// A sink speaking TLS as `mode` says (`starttls`, required, or `tls`), with the test
    /// certificate; `trusted` names the test CA in the daemon's `ca_file`.
    fn with_tls(mode: &'static str, trusted: bool) -> Self {
        let mut sink = Self::new();
        sink.tls = mode;
        sink.trusted = trusted;
        sink
    }

    /// Starts the server and waits until it accepts connections.
    pub(crate) async fn start(&mut self) {
        // Debian's interpreter, which has python3-aiosmtpd (scripts/services.sh installs it).
        let mut command = Command::new("/usr/bin/python3");
        command
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port));
        if self.tls != "none" {
            let (_, cert, key) = test_tls_files();
            let (cert_flag, key_flag) = if self.tls == "tls" {
                ("--smtpscert", "--smtpskey")
            } else {
                ("--tlscert", "--tlskey")
            };
            command.arg(cert_flag).arg(cert).arg(key_flag).arg(key);
        }
        let child = command
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd (scripts/services.sh installs python3-aiosmtpd)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `[smtp]` section that sends here, retrying quickly.
    pub(crate) fn config(&self) -> String {
        let ca_file = if self.tls != "none" && self.trusted {
            format!("ca_file = \"{}\"\n", test_tls_files().0.display())
        } else {
            String::new()
        };
        format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"{}\"\n{ca_file}from = \"Vendite <leads@example.com>\"\n\
             timeout_secs = 5\nretry_initial_ms = 200\nretry_max_secs = 1\npoll_interval_ms = 100\n\n",
            self.port, self.tls
        )
    }

    /// Every message received so far, as text.
    pub(crate) fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path()).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).replace("\r\n", "\n"))
            .collect()
    }

    /// Waits until at least `n` messages arrived.
    pub(crate) async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n || Instant::now() > deadline {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

/// The value of header `name` in `message` (first occurrence, unfolded).
pub(crate) fn header(message: &str, name: &str) -> Option<String> {
    let head = message.split("\n\n").next().unwrap_or_default();
    let mut lines = head.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some((key, value)) = line.split_once(':')
            && key.eq_ignore_ascii_case(name)
        {
            let mut value = value.trim().to_owned();
            while lines.peek().is_some_and(|l| l.starts_with([' ', '\t'])) {
                value.push(' ');
                value.push_str(lines.next().unwrap_or_default().trim());
            }
            return Some(value);
        }
    }
    None
}

fn acknowledgement(source: &str) -> String {
    format!(
        "[[acknowledgements]]\nsource = \"{source}\"\nsubject = \"Grazie {{name}}, richiesta {{lead_id}}\"\n\
         body = \"\"\"\nCiao {{name}},\nabbiamo ricevuto la richiesta n. {{lead_id}} ({{source}}).\n\"\"\"\n\
         fallback_name = \"Cliente\"\n\n"
    )
}

async fn start_daemon(sink: &Sink) -> TestDaemon {
    TestDaemon::start_with(Options {
        extra_config: format!("{}{}", sink.config(), acknowledgement("web-it-contatti")),
        ..Options::default()
    })
    .await
}

async fn post(daemon: &TestDaemon, body: &str) {
    let response = daemon
        .post_form("it-contatti", Some(URLENCODED), body.to_owned(), &[])
        .await;
    assert_eq!(response.status, 202, "{}", response.text());
}

/// Waits until every outbox row is sent; answers how many there are.
async fn wait_all_sent(daemon: &TestDaemon, timeout: Duration) -> i64 {
    let db = daemon.db().await;
    let deadline = Instant::now() + timeout;
    loop {
        let row = sqlx::query(
            "SELECT count(*) AS all_rows, count(*) FILTER (WHERE state = 'sent') AS sent FROM outbox",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        let (all, sent): (i64, i64) = (row.get("all_rows"), row.get("sent"));
        if all > 0 && all == sent {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{sent} of {all} mails sent after {timeout:?}; log: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_form_lead_is_acknowledged_once_with_its_headers_and_body_even_across_a_restart() {
    let mut sink = Sink::new();
    sink.start().await;
    let mut daemon = start_daemon(&sink).await;
    post(
        &daemon,
        "nome=Anna&cognome=Rossi&email=Anna.Rossi%40studio-rossi.it&messaggio=Preventivo",
    )
    .await;
    let leads = daemon.wait_for_leads("", 1, Duration::from_secs(30)).await;
    let lead_id = leads[0]["id"].as_i64().expect("a lead id");

    let messages = sink.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), 1, "log: {}", daemon.log());
    let message = &messages[0];
    assert_eq!(
        header(message, "To").as_deref(),
        Some("anna.rossi@studio-rossi.it")
    );
    assert_eq!(
        header(message, "From").as_deref(),
        Some("Vendite <leads@example.com>")
    );
    assert_eq!(
        header(message, "Subject"),
        Some(format!("Grazie Anna Rossi, richiesta {lead_id}"))
    );
    assert_eq!(
        header(message, "Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert_eq!(header(message, "In-Reply-To"), None);
    assert_eq!(
        header(message, "X-RcptTo").as_deref(),
        Some("anna.rossi@studio-rossi.it")
    );
    assert!(
        header(message, "Content-Type").is_some_and(|c| c.starts_with("text/plain")),
        "{message}"
    );
    let body = message
        .split_once("\n\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert!(
        body.contains(&format!(
            "Ciao Anna Rossi,\nabbiamo ricevuto la richiesta n. {lead_id} (web-it-contatti)."
        )),
        "{message}"
    );
    let db = daemon.db().await;
    let stored: String = sqlx::query_scalar("SELECT message_id FROM outbox")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(header(message, "Message-ID"), Some(stored));

    // Killed once the mail is marked sent, started again: nothing goes out twice.
    wait_all_sent(&daemon, Duration::from_secs(30)).await;
    daemon.kill();
    daemon.launch(true).await;
    // A second lead proves the restarted sender works before the count is checked.
    post(
        &daemon,
        "nome=Luca&cognome=Bianchi&email=luca%40bianchi-srl.it&messaggio=Info",
    )
    .await;
    let messages = sink.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), 2, "log: {}", daemon.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recipients: Vec<Option<String>> = sink
        .messages()
        .iter()
        .map(|m| header(m, "X-RcptTo"))
        .collect();
    assert_eq!(recipients.len(), 2, "{recipients:?}");
    assert!(recipients.contains(&Some("luca@bianchi-srl.it".into())));
}

#[tokio::test]
async fn role_addresses_and_repeat_writers_within_a_day_get_no_acknowledgement() {
    let mut sink = Sink::new();
    sink.start().await;
    let daemon = start_daemon(&sink).await;
    post(
        &daemon,
        "nome=Ufficio&email=info%40azienda-verdi.it&messaggio=Listino",
    )
    .await;
    post(
        &daemon,
        "nome=Marco&cognome=Neri&email=marco%40neri.it&messaggio=Primo",
    )
    .await;
    post(
        &daemon,
        "nome=Marco&cognome=Neri&email=marco%40neri.it&messaggio=Secondo",
    )
    .await;
    daemon.wait_for_inquiries(3, Duration::from_secs(30)).await;
    assert_eq!(wait_all_sent(&daemon, Duration::from_secs(30)).await, 1);
    // Generous time for anything wrongly queued or sent to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        header(&messages[0], "X-RcptTo").as_deref(),
        Some("marco@neri.it")
    );
}

#[tokio::test]
async fn a_server_that_is_down_delays_mail_but_not_leads() {
    let mut sink = Sink::new();
    let daemon = start_daemon(&sink).await;
    post(
        &daemon,
        "nome=Giulia&cognome=Conti&email=giulia%40conti.it&messaggio=Urgente",
    )
    .await;
    daemon.wait_for_leads("", 1, Duration::from_secs(30)).await;

    // The mail is retried while nothing listens, and stays queued.
    let db = daemon.db().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = sqlx::query("SELECT state, attempts, last_error FROM outbox")
            .fetch_one(&db)
            .await
            .unwrap();
        let attempts: i32 = row.get("attempts");
        if attempts >= 2 {
            // Between two attempts, or claimed for the next one: never given up on.
            let state = row.get::<String, _>("state");
            assert!(state == "pending" || state == "sending", "{state}");
            assert!(row.get::<Option<String>, _>("last_error").is_some());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retry within 30 s; log: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Back up: the mail goes out, once.
    sink.start().await;
    wait_all_sent(&daemon, Duration::from_secs(30)).await;
    let messages = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        header(&messages[0], "X-RcptTo").as_deref(),
        Some("giulia@conti.it")
    );
    let metrics = daemon.get("/metrics").await.text();
    assert!(metrics.contains("leadpipe_mail_sent_total 1"), "{metrics}");
    assert!(
        metrics.contains("leadpipe_mail_send_failures_total{outcome=\"retry\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn acknowledgements_are_delivered_over_starttls_and_implicit_tls_to_a_trusted_server_only() {
    for mode in ["starttls", "tls"] {
        let mut sink = Sink::with_tls(mode, true);
        sink.start().await;
        let daemon = start_daemon(&sink).await;
        post(
            &daemon,
            "nome=Anna&cognome=Rossi&email=anna%40studio-rossi.it&messaggio=Preventivo",
        )
        .await;
        assert_eq!(wait_all_sent(&daemon, Duration::from_secs(30)).await, 1);
        let messages = sink.wait_for(1, Duration::from_secs(10)).await;
        assert_eq!(messages.len(), 1, "{mode}: log: {}", daemon.log());
        assert_eq!(
            header(&messages[0], "X-RcptTo").as_deref(),
            Some("anna@studio-rossi.it"),
            "{mode}"
        );
        assert_eq!(
            header(&messages[0], "Auto-Submitted").as_deref(),
            Some("auto-replied"),
            "{mode}"
        );
    }

    // Without ca_file the private CA is not trusted: nothing is sent, and the outbox
    // row says why.
    let mut sink = Sink::with_tls("tls", false);
    sink.start().await;
    let daemon = start_daemon(&sink).await;
    post(
        &daemon,
        "nome=Luca&cognome=Bianchi&email=luca%40bianchi-srl.it&messaggio=Info",
    )
    .await;
    let db = daemon.db().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        let row = sqlx::query("SELECT state, last_error FROM outbox")
            .fetch_optional(&db)
            .await
            .unwrap();
        if let Some(error) = row
            .as_ref()
            .and_then(|r| r.get::<Option<String>, _>("last_error"))
        {
            assert_ne!(row.unwrap().get::<String, _>("state"), "sent");
            break error;
        }
        assert!(
            Instant::now() < deadline,
            "no failed attempt within 30 s; log: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(error.contains("certificate"), "{error}");
    assert!(sink.messages().is_empty());
}
