//! Sending mail: the `[smtp]` and `[[acknowledgements]]` settings, and the worker that
//! sends what the store queued in its outbox.
//!
//! The worker claims due rows (`FOR UPDATE SKIP LOCKED`, so replicas share the outbox),
//! sends each with the Message-ID the row was queued with, and marks it sent. A failed
//! attempt is retried with exponential backoff; a permanent refusal (5xx) or running out
//! of attempts gives the row up, counted and logged. Sending never touches a lead.
//!
//! Delivery is at-least-once across crashes and exactly once otherwise: on a stop the
//! worker finishes the mail in hand and marks it before it returns, so a restart never
//! sends again; only a process that dies between the server's acceptance and the mark
//! sends that row again once its claim lapses, with the same Message-ID, so the resend is
//! recognisable (and mail clients that de-duplicate by Message-ID show it once). Losing
//! an acknowledgement silently was judged worse than a rare, identifiable second copy.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use store::{AckRules, Acknowledgement, OutgoingMail, Store, Template};
use tokio_util::sync::CancellationToken;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a relay on loopback only).
    None,
    /// Plain text upgraded with STARTTLS, which must succeed (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// The `[smtp]` section: where outgoing mail is handed over.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SmtpSettings {
    /// The server's host name (also the name its certificate must carry).
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: SmtpTls,
    /// A PEM file of CA certificates trusted besides the system's (a private CA).
    pub ca_file: Option<PathBuf>,
    /// The login, if the server wants one.
    pub user: Option<String>,
    /// The password for `user`.
    pub password: Option<SecretString>,
    /// Read the password from this file instead.
    pub password_file: Option<PathBuf>,
    /// The sender: `leads@example.com` or `Sales <leads@example.com>`.
    pub from: String,
    /// Longest wait for the server to connect or answer one command, in seconds.
    pub timeout_secs: u64,
    /// Attempts before a mail is given up on.
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds; it doubles with each attempt.
    pub retry_initial_ms: u64,
    /// Longest delay between two attempts, in seconds.
    pub retry_max_secs: u64,
    /// How often the outbox is checked for due mail, in milliseconds.
    pub poll_interval_ms: u64,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 25,
            tls: SmtpTls::Starttls,
            ca_file: None,
            user: None,
            password: None,
            password_file: None,
            from: String::new(),
            timeout_secs: 30,
            max_attempts: 10,
            retry_initial_ms: 30_000,
            retry_max_secs: 3_600,
            poll_interval_ms: 1_000,
        }
    }
}

/// One `[[acknowledgements]]` entry: the mail that answers a source's new leads.
#[derive(Debug, Clone, Deserialize)]
pub struct AckSettings {
    /// The lead source answered (a form's or a mailbox's `source`).
    pub source: String,
    /// The subject line, with placeholders.
    pub subject: String,
    /// The plain-text body, with placeholders, in the source's language.
    pub body: String,
    /// What `{name}` becomes when the lead has no name.
    #[serde(default)]
    pub fallback_name: String,
    /// False keeps the entry but sends nothing.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// Every problem of `[smtp]` and `[[acknowledgements]]`, as (key path, problem).
pub fn problems(smtp: Option<&SmtpSettings>, acks: &[AckSettings]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut push = |key: &str, problem: String| out.push((key.to_owned(), problem));
    if let Some(smtp) = smtp {
        if smtp.host.trim().is_empty() {
            push(
                "smtp.host",
                "is missing: the SMTP server's host name".into(),
            );
        }
        if smtp.port == 0 {
            push(
                "smtp.port",
                "must be a port such as 25, 587 (starttls) or 465 (tls)".into(),
            );
        }
        if let Err(problem) = smtp.from.parse::<Mailbox>() {
            push(
                "smtp.from",
                format!(
                    "`{}` is not a sender such as `leads@example.com` or `Sales <leads@example.com>`: {problem}",
                    smtp.from
                ),
            );
        }
        if let Some(path) = &smtp.ca_file {
            if smtp.tls == SmtpTls::None {
                push(
                    "smtp.ca_file",
                    "is used only with tls = \"starttls\" or \"tls\"".into(),
                );
            } else if let Err(problem) = ingest::email::tls::read_ca_file(path) {
                push("smtp.ca_file", problem);
            }
        }
        match (&smtp.password, &smtp.password_file) {
            (Some(_), Some(_)) => push(
                "smtp.password",
                "set either password or password_file, not both".into(),
            ),
            (None, Some(path)) if std::fs::read_to_string(path).is_err() => push(
                "smtp.password_file",
                format!("{} is not a readable file", path.display()),
            ),
            _ => {}
        }
        let has_password = smtp.password.is_some() || smtp.password_file.is_some();
        if smtp.user.is_some() != has_password {
            push(
                "smtp.user",
                "user and a password (password or password_file) go together: set both or neither"
                    .into(),
            );
        }
        for (key, value) in [
            ("smtp.timeout_secs", smtp.timeout_secs),
            ("smtp.max_attempts", u64::from(smtp.max_attempts)),
            ("smtp.retry_initial_ms", smtp.retry_initial_ms),
            ("smtp.retry_max_secs", smtp.retry_max_secs),
            ("smtp.poll_interval_ms", smtp.poll_interval_ms),
        ] {
            if value == 0 {
                push(key, "must be greater than 0".into());
            }
        }
    }
    let mut sources = HashSet::new();
    for (index, ack) in acks.iter().enumerate() {
        let key = |field: &str| format!("acknowledgements[{index}].{field}");
        if smtp.is_none() && ack.enabled {
            out.push((
                format!("acknowledgements[{index}]"),
                "needs an [smtp] section to send through (or set enabled = false)".into(),
            ));
        }
        if ack.source.trim().is_empty() {
            out.push((
                key("source"),
                "is missing: the lead source to answer".into(),
            ));
        } else if !sources.insert(ack.source.as_str()) {
            out.push((
                key("source"),
                format!(
                    "`{}` is answered by an earlier entry already: keep one per source",
                    ack.source
                ),
            ));
        }
        for (field, text) in [("subject", &ack.subject), ("body", &ack.body)] {
            if text.trim().is_empty() {
                out.push((key(field), "is empty".into()));
            } else if let Err(problem) = Template::parse(text) {
                out.push((key(field), problem));
            }
        }
    }
    out
}

/// What the store queues, from the enabled entries (settings already validated).
pub fn ack_rules(smtp: Option<&SmtpSettings>, acks: &[AckSettings]) -> AckRules {
    let Some(smtp) = smtp else {
        return AckRules::default();
    };
    let by_source = acks
        .iter()
        .filter(|a| a.enabled)
        .filter_map(|a| {
            Some((
                a.source.clone(),
                Acknowledgement {
                    subject: Template::parse(&a.subject).ok()?,
                    body: Template::parse(&a.body).ok()?,
                    fallback_name: a.fallback_name.clone(),
                },
            ))
        })
        .collect();
    AckRules {
        from: smtp.from.clone(),
        by_source,
    }
}

/// TLS towards `settings.host`: the system's roots and those of `ca_file`, on rustls.
fn tls_parameters(settings: &SmtpSettings) -> anyhow::Result<TlsParameters> {
    let mut builder = TlsParameters::builder(settings.host.clone());
    if let Some(path) = &settings.ca_file {
        for cert in ingest::email::tls::read_ca_file(path)
            .map_err(|problem| anyhow::anyhow!("smtp.ca_file: {problem}"))?
        {
            let cert = Certificate::from_der(cert.to_vec())
                .map_err(|e| anyhow::anyhow!("smtp.ca_file: {}: {e}", path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build_rustls()
        .map_err(|e| anyhow::anyhow!("smtp.tls: cannot set up TLS: {e}"))
}

/// The delay after failed attempt number `attempts`: the initial delay, doubled with
/// each further attempt, never above the ceiling.
fn retry_delay(settings: &SmtpSettings, attempts: i32) -> Duration {
    backoff_delay(
        Duration::from_millis(settings.retry_initial_ms),
        Duration::from_secs(settings.retry_max_secs),
        attempts,
    )
}

/// The delay after failed attempt number `attempts` of an outgoing message: `initial`,
/// doubled with each further attempt, never above `ceiling`.
pub(crate) fn backoff_delay(initial: Duration, ceiling: Duration, attempts: i32) -> Duration {
    let doubled = initial.saturating_mul(1u32 << (attempts.clamp(1, 20) - 1));
    doubled.min(ceiling)
}

/// Records an outcome of sending, retrying while the database is briefly away (a mark
/// that never lands means the row is sent again once its claim lapses).
pub(crate) async fn record_with_retries<F, Fut>(record: F) -> Result<(), store::StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), store::StoreError>>,
{
    let mut delay = Duration::from_millis(200);
    let mut last = None;
    for _ in 0..6 {
        match record().await {
            Ok(()) => return Ok(()),
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    Err(last.unwrap_or_else(|| store::StoreError::Unavailable("no attempt made".into())))
}

/// Sends the outbox's due mail until stopped.
pub struct Sender {
    store: Store,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    settings: SmtpSettings,
}

/// How long sent mail stays in the outbox (for operators; the once-a-day rule needs one).
const SENT_KEPT: Duration = Duration::from_secs(30 * 86_400);

/// Mails claimed at once.
const CLAIM_BATCH: i64 = 20;

impl Sender {
    /// A sender through the server of `settings` (validated).
    pub fn new(store: Store, settings: &SmtpSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("smtp.from: {e}"))?;
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
                .port(settings.port)
                .timeout(Some(Duration::from_secs(settings.timeout_secs)));
        builder = match settings.tls {
            SmtpTls::None => builder.tls(Tls::None),
            SmtpTls::Starttls => builder.tls(Tls::Required(tls_parameters(settings)?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls_parameters(settings)?)),
        };
        if let Some(user) = &settings.user {
            let password = match (&settings.password, &settings.password_file) {
                (Some(password), _) => password.expose_secret().to_owned(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| {
                        anyhow::anyhow!("smtp.password_file: cannot read {}: {e}", path.display())
                    })?
                    .trim()
                    .to_owned(),
                (None, None) => String::new(),
            };
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Self {
            store,
            transport: builder.build(),
            from,
            settings: settings.clone(),
        })
    }

    /// How long a claim lasts: well beyond the longest a send may take (a few commands,
    /// each within the timeout), so only a dead worker's claim ever lapses.
    fn lease(&self) -> Duration {
        Duration::from_secs((self.settings.timeout_secs * 6).max(60))
    }

    /// Claims, sends and marks until `stop` fires; the mail in hand is finished first.
    pub async fn run(self, stop: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let mut db_backoff =
            router::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut gauge_due = tokio::time::Instant::now();
        let mut purge_due = tokio::time::Instant::now();
        tracing::info!(host = %self.settings.host, port = self.settings.port, "Sending queued mail.");
        while !stop.is_cancelled() {
            if tokio::time::Instant::now() >= purge_due {
                match self.store.purge_sent_mail(SENT_KEPT).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "Purged old sent mail from the outbox."),
                    Err(error) => {
                        tracing::warn!(%error, "Could not purge old sent mail; trying again in an hour.")
                    }
                }
                purge_due = tokio::time::Instant::now() + Duration::from_secs(3_600);
            }
            if tokio::time::Instant::now() >= gauge_due {
                self.publish_depth().await;
                gauge_due = tokio::time::Instant::now() + Duration::from_secs(5);
            }
            let wait = match self.store.claim_due_mail(CLAIM_BATCH, self.lease()).await {
                Ok(mails) if mails.is_empty() => poll,
                Ok(mails) => {
                    db_backoff.reset();
                    let mut mails = mails.into_iter();
                    for mail in mails.by_ref() {
                        self.deliver(mail).await;
                        if stop.is_cancelled() {
                            break;
                        }
                    }
                    let unsent: Vec<i64> = mails.map(|m| m.id).collect();
                    if !unsent.is_empty()
                        && let Err(error) = self.store.release_mail(&unsent).await
                    {
                        tracing::warn!(%error, "Could not hand back claimed mail on stopping; it is sent once its claim lapses.");
                    }
                    self.publish_depth().await;
                    Duration::ZERO
                }
                Err(error) => {
                    let delay = db_backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?delay, "Cannot read the outbox; mail waits until the database is back.");
                    delay
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
        tracing::info!("Mail sender stopped.");
    }

    async fn publish_depth(&self) {
        if let Ok(depth) = self.store.outbox_depth().await {
            for (state, value) in [
                ("pending", depth.pending),
                ("sending", depth.sending),
                ("failed", depth.failed),
            ] {
                metrics::gauge!("leadpipe_mail_outbox", "state" => state).set(value as f64);
            }
        }
    }

    /// Sends one claimed mail and records the outcome.
    async fn deliver(&self, mail: OutgoingMail) {
        let result = match build_message(&self.from, &mail) {
            Ok(message) => self
                .transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| (e.is_permanent(), e.to_string())),
            // A mail that cannot even be built will never send.
            Err(problem) => Err((true, problem)),
        };
        let mark = match result {
            Ok(()) => {
                metrics::counter!("leadpipe_mail_sent_total").increment(1);
                tracing::info!(outbox_id = mail.id, message_id = %mail.message_id, "Mail sent.");
                record_with_retries(|| self.store.mark_mail_sent(mail.id)).await
            }
            Err((permanent, error)) => {
                let give_up = permanent || mail.attempts >= self.settings.max_attempts as i32;
                let outcome = if give_up { "given_up" } else { "retry" };
                metrics::counter!("leadpipe_mail_send_failures_total", "outcome" => outcome)
                    .increment(1);
                let retry_in = (!give_up).then(|| retry_delay(&self.settings, mail.attempts));
                if give_up {
                    tracing::error!(outbox_id = mail.id, attempts = mail.attempts, %error,
                        "Giving up on a mail: the server refused it or kept failing; the lead is unaffected. See outbox.last_error.");
                } else {
                    tracing::warn!(outbox_id = mail.id, attempts = mail.attempts, %error, ?retry_in,
                        "Sending a mail failed; it is tried again later.");
                }
                record_with_retries(|| self.store.mark_mail_failed(mail.id, &error, retry_in)).await
            }
        };
        if let Err(error) = mark {
            tracing::error!(outbox_id = mail.id, %error,
                "Could not record what happened to a mail; it is tried again once its claim lapses.");
        }
    }
}

/// The mail of an outbox row, with its own Message-ID and stored headers.
fn build_message(from: &Mailbox, mail: &OutgoingMail) -> Result<Message, String> {
    let to: Mailbox = mail
        .recipient
        .parse()
        .map_err(|e| format!("the recipient `{}` is not an address: {e}", mail.recipient))?;
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .message_id(Some(mail.message_id.clone()))
        .date_now()
        .header(ContentType::TEXT_PLAIN);
    let mut extra = Vec::new();
    for (name, value) in &mail.headers {
        match name.as_str() {
            "In-Reply-To" => builder = builder.in_reply_to(value.clone()),
            "References" => builder = builder.references(value.clone()),
            _ => extra.push((name, value)),
        }
    }
    let mut message = builder
        .body(mail.body.clone())
        .map_err(|e| format!("the mail cannot be built: {e}"))?;
    for (name, value) in extra {
        let name = HeaderName::new_from_ascii(name.clone())
            .map_err(|e| format!("header `{name}`: {e}"))?;
        message
            .headers_mut()
            .insert_raw(HeaderValue::new(name, value.clone()));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp() -> SmtpSettings {
        SmtpSettings {
            host: "127.0.0.1".into(),
            from: "leads@example.com".into(),
            ..SmtpSettings::default()
        }
    }

    fn ack(source: &str, body: &str) -> AckSettings {
        AckSettings {
            source: source.into(),
            subject: "Grazie".into(),
            body: body.into(),
            fallback_name: String::new(),
            enabled: true,
        }
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let bad = SmtpSettings {
            host: " ".into(),
            port: 0,
            from: "not an address".into(),
            user: Some("u".into()),
            timeout_secs: 0,
            ..SmtpSettings::default()
        };
        let acks = [ack("website-it", "Ciao {nome}"), ack("website-it", "ok")];
        let keys: Vec<String> = problems(Some(&bad), &acks)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "smtp.host",
                "smtp.port",
                "smtp.from",
                "smtp.user",
                "smtp.timeout_secs",
                "acknowledgements[0].body",
                "acknowledgements[1].source",
            ]
        );
        assert!(problems(Some(&smtp()), &[ack("website-it", "Ciao {name}")]).is_empty());
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_a_problem_of_smtp_ca_file() {
        let path = std::env::temp_dir().join(format!("lp-not-pem-{}", std::process::id()));
        std::fs::write(&path, "just text\n").unwrap();
        let settings = SmtpSettings {
            tls: SmtpTls::Tls,
            ca_file: Some(path.clone()),
            ..smtp()
        };
        let found = problems(Some(&settings), &[]);
        let _ = std::fs::remove_file(&path);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "smtp.ca_file");
        assert!(found[0].1.contains("no certificate"), "{found:?}");
    }

    #[test]
    fn an_acknowledgement_needs_smtp_unless_disabled() {
        let mut entry = ack("website-it", "Ciao");
        assert_eq!(problems(None, std::slice::from_ref(&entry)).len(), 1);
        entry.enabled = false;
        assert!(problems(None, &[entry.clone()]).is_empty());
        assert!(ack_rules(Some(&smtp()), &[entry]).is_empty());
    }

    #[test]
    fn a_mail_in_a_thread_carries_its_references_and_marks_itself_automatic() {
        let mail = OutgoingMail {
            id: 1,
            recipient: "luca@bianchi.it".into(),
            subject: "Re: Preventivo città".into(),
            body: "Gentile Luca,\ngrazie.".into(),
            message_id: "<ack.1@example.com>".into(),
            headers: vec![
                ("Auto-Submitted".into(), "auto-replied".into()),
                ("In-Reply-To".into(), "<q1@bianchi.it>".into()),
                ("References".into(), "<q1@bianchi.it>".into()),
            ],
            attempts: 1,
            created_at: chrono::Utc::now(),
        };
        let from: Mailbox = "Vendite <leads@example.com>".parse().unwrap();
        let wire = String::from_utf8(build_message(&from, &mail).unwrap().formatted()).unwrap();
        for line in [
            "Message-ID: <ack.1@example.com>\r\n",
            "In-Reply-To: <q1@bianchi.it>\r\n",
            "References: <q1@bianchi.it>\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "To: luca@bianchi.it\r\n",
        ] {
            assert!(wire.contains(line), "{line} missing from:\n{wire}");
        }
        // The non-ASCII subject is an encoded word, not raw bytes.
        assert!(
            wire.contains("Subject: Re: Preventivo =?utf-8?b?"),
            "{wire}"
        );
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_ceiling() {
        let settings = SmtpSettings {
            retry_initial_ms: 1_000,
            retry_max_secs: 5,
            ..smtp()
        };
        let sender_delay = |attempts| retry_delay(&settings, attempts);
        assert_eq!(sender_delay(1), Duration::from_secs(1));
        assert_eq!(sender_delay(2), Duration::from_secs(2));
        assert_eq!(sender_delay(3), Duration::from_secs(4));
        assert_eq!(sender_delay(4), Duration::from_secs(5));
        assert_eq!(sender_delay(40), Duration::from_secs(5));
    }
}
