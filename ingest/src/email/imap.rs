//! The mailbox reader: a pull task that reads one IMAP folder into the pipeline.
//!
//! - It reads with `BODY.PEEK[]` only, from a read-only `EXAMINE` unless `processed`
//!   asks to flag or move: the mailbox is never marked read.
//! - Its cursor is the folder's UIDVALIDITY and the last UID whose inquiry (and every
//!   one before it) the broker confirmed; a restart resumes right after it. When the
//!   UIDVALIDITY changed, the folder is read again from the start: inquiry ids come from
//!   the Message-ID and the mailbox, so what was filed is a no-op in the store.
//! - Between batches it waits in IDLE (re-issued every `idle_interval_secs`, so a dead
//!   connection is noticed) or polls with NOOP; every command has a deadline. Any failure
//!   ends the run and the supervisor reconnects with backoff.
//! - A message that cannot be read is still an inquiry (kept raw with its reason), so a
//!   bad message can never block or loop the mailbox.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::{Client, Session};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::{StreamExt, future};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::mailbox::{MailboxConfig, PROCESSED_KEYWORD, Processed, TlsMode};
use super::{read_message, unparseable};
use crate::connector::{PullContext, PullError, PullTask};
use crate::inquiry::Inquiry;
use crate::sink::{IntakeSink, Refusal};

/// How long any one command may take before the connection counts as dead.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How many messages one FETCH asks for; their inquiries are submitted together and the
/// cursor moves once all are confirmed.
const BATCH: usize = 50;
/// How many bytes of mail one FETCH may bring in (at least one message), so a batch of
/// large messages is read in parts rather than held in memory at once.
const BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// The cursor of one mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailCursor {
    /// The folder's UIDVALIDITY the UID belongs to.
    pub uid_validity: u32,
    /// The last UID whose inquiry, and every one before it, the broker confirmed.
    pub last_uid: u32,
}

/// Something went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// Connecting, TLS, or a command failed or timed out.
    #[error("{0}")]
    Connection(String),
    /// The server refused the login.
    #[error("the server refused the login of {user}: {reason}; check user and password")]
    Login {
        /// The user.
        user: String,
        /// What the server said.
        reason: String,
    },
}

impl From<ImapError> for PullError {
    fn from(error: ImapError) -> Self {
        PullError::Source(error.to_string())
    }
}

/// A plain or TLS connection, as one type for the IMAP client.
#[derive(Debug)]
pub enum Stream {
    /// No TLS.
    Plain(TcpStream),
    /// TLS (implicit or after STARTTLS).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A logged-in session.
pub type ImapSession = Session<Stream>;

/// Runs `what` with the command deadline.
async fn timed<T, E: std::fmt::Display>(
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ImapError::Connection(format!("{what}: {error}"))),
        Err(_) => Err(ImapError::Connection(format!(
            "{what}: no answer within {} s",
            COMMAND_TIMEOUT.as_secs()
        ))),
    }
}

async fn start_tls(tcp: TcpStream, config: &MailboxConfig) -> Result<Stream, ImapError> {
    let host = config.host.as_str();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| ImapError::Connection(format!("`{host}` is not a TLS server name: {e}")))?;
    let tls_config = super::tls::client_config(config.ca_file.as_deref())
        .map_err(|e| ImapError::Connection(format!("TLS set-up: {e}")))?;
    let address = format!("{host}:{}", config.port());
    let handshake = TlsConnector::from(Arc::new(tls_config)).connect(name, tcp);
    match tokio::time::timeout(COMMAND_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
        Ok(Err(error)) => Err(ImapError::Connection(format!(
            "TLS with {address}: {}",
            super::tls::explain_handshake_error(&error)
        ))),
        Err(_) => Err(ImapError::Connection(format!(
            "TLS with {address}: no handshake within {} s",
            COMMAND_TIMEOUT.as_secs()
        ))),
    }
}

/// Connects and logs in as `config` says.
pub async fn connect(config: &MailboxConfig, password: &str) -> Result<ImapSession, ImapError> {
    let address = format!("{}:{}", config.host, config.port());
    let tcp = timed(
        &format!("connect to {address}"),
        TcpStream::connect(&address),
    )
    .await?;
    let _ = tcp.set_nodelay(true);
    let stream = match config.tls {
        TlsMode::Tls => start_tls(tcp, config).await?,
        TlsMode::None => Stream::Plain(tcp),
        TlsMode::Starttls => {
            let mut client = Client::new(tcp);
            timed("greeting", async {
                client
                    .read_response()
                    .await
                    .and_then(|r| r.ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into()))
            })
            .await?;
            timed(
                "STARTTLS",
                client.run_command_and_check_ok("STARTTLS", None),
            )
            .await?;
            start_tls(client.into_inner(), config).await?
        }
    };
    let mut client = Client::new(stream);
    if config.tls != TlsMode::Starttls {
        timed("greeting", async {
            client
                .read_response()
                .await
                .and_then(|r| r.ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into()))
        })
        .await?;
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, client.login(&config.user, password)).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err((error, _))) => Err(ImapError::Login {
            user: config.user.clone(),
            reason: error.to_string(),
        }),
        Err(_) => Err(ImapError::Connection("login: no answer".into())),
    }
}

/// What `leadpipe mailbox test` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// The folder examined.
    pub folder: String,
    /// Its UIDVALIDITY.
    pub uid_validity: Option<u32>,
    /// How many messages it holds.
    pub messages: u32,
    /// The next UID the server will give.
    pub uid_next: Option<u32>,
    /// Whether the server offers IDLE.
    pub idle: bool,
    /// Whether it offers MOVE (for `processed = "<folder>"`).
    pub moves: bool,
}

/// Logs in, examines the folder and reports what it sees; changes nothing.
pub async fn probe(config: &MailboxConfig, password: &str) -> Result<Probe, ImapError> {
    let mut session = connect(config, password).await?;
    let caps = timed("CAPABILITY", session.capabilities()).await?;
    let mailbox = timed(
        &format!("EXAMINE {}", config.folder),
        session.examine(&config.folder),
    )
    .await?;
    let probe = Probe {
        folder: config.folder.clone(),
        uid_validity: mailbox.uid_validity,
        messages: mailbox.exists,
        uid_next: mailbox.uid_next,
        idle: caps.has_str("IDLE"),
        moves: caps.has_str("MOVE"),
    };
    let _ = timed("LOGOUT", session.logout()).await;
    Ok(probe)
}

/// One message as fetched.
struct Fetched {
    uid: u32,
    raw: Option<Vec<u8>>,
    internal_date: Option<DateTime<Utc>>,
    size: Option<u32>,
}

/// Reads one mailbox; the daemon runs it under its supervisor.
pub struct MailboxTask {
    config: MailboxConfig,
    password: String,
}

impl MailboxTask {
    /// A reader of `config`'s folder, logging in with `password`.
    pub fn new(config: MailboxConfig, password: String) -> Self {
        Self { config, password }
    }

    async fn open(&self) -> Result<(ImapSession, u32, bool), ImapError> {
        let mut session = connect(&self.config, &self.password).await?;
        let caps = timed("CAPABILITY", session.capabilities()).await?;
        let idle = caps.has_str("IDLE");
        let folder = &self.config.folder;
        // Read-only unless the mailbox is to be marked: EXAMINE can never set \Seen.
        let mailbox = if self.config.processed() == Processed::None {
            timed(&format!("EXAMINE {folder}"), session.examine(folder)).await?
        } else {
            timed(&format!("SELECT {folder}"), session.select(folder)).await?
        };
        let validity = mailbox.uid_validity.ok_or_else(|| {
            ImapError::Connection(format!("the server gave no UIDVALIDITY for {folder}"))
        })?;
        Ok((session, validity, idle))
    }
}

/// UIDs above `after` in the selected folder, ascending.
async fn uids_after(session: &mut ImapSession, after: u32) -> Result<Vec<u32>, ImapError> {
    let found = timed(
        "UID SEARCH",
        session.uid_search(format!("UID {}:*", after.saturating_add(1))),
    )
    .await?;
    drain(session);
    // `n:*` always names the last message, even when its UID is below n.
    let mut uids: Vec<u32> = found.into_iter().filter(|&u| u > after).collect();
    uids.sort_unstable();
    Ok(uids)
}

/// UIDs of messages received on or after `since`, ascending.
async fn uids_since(session: &mut ImapSession, since: NaiveDate) -> Result<Vec<u32>, ImapError> {
    let found = timed(
        "UID SEARCH SINCE",
        session.uid_search(format!("SINCE {}", since.format("%-d-%b-%Y"))),
    )
    .await?;
    drain(session);
    let mut uids: Vec<u32> = found.into_iter().collect();
    uids.sort_unstable();
    Ok(uids)
}

/// Drops the untagged responses the session queued (EXISTS, FLAGS...): the reader asks
/// for what it needs, and a full queue would stall the connection.
fn drain(session: &mut ImapSession) {
    while session.unsolicited_responses.try_recv().is_ok() {}
}

fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Fetches the longest prefix of `uids` within [`BATCH_BYTES`] (at least one message):
/// one [`Fetched`] per UID of that prefix, in order.
async fn fetch(
    session: &mut ImapSession,
    uids: &[u32],
    max_bytes: u32,
) -> Result<Vec<Fetched>, ImapError> {
    let set = uid_set(uids);
    // Sizes first, so that an oversized message is never pulled into memory.
    let sizes: BTreeMap<u32, (u32, Option<DateTime<Utc>>)> =
        timed("UID FETCH RFC822.SIZE", async {
            let mut stream = session
                .uid_fetch(&set, "(UID INTERNALDATE RFC822.SIZE)")
                .await?;
            let mut sizes = BTreeMap::new();
            while let Some(item) = stream.next().await {
                let item = item?;
                if let (Some(uid), Some(size)) = (item.uid, item.size) {
                    let date = item.internal_date().map(|d| d.with_timezone(&Utc));
                    sizes.insert(uid, (size, date));
                }
            }
            Ok::<_, async_imap::error::Error>(sizes)
        })
        .await?;
    // The longest prefix of `uids` within the byte budget, at least one message.
    let mut budget = 0u64;
    let take = uids
        .iter()
        .take_while(|u| {
            let size = sizes
                .get(u)
                .map_or(0, |&(s, _)| if s > max_bytes { 0 } else { u64::from(s) });
            let first = budget == 0;
            budget += size;
            first || budget <= BATCH_BYTES
        })
        .count()
        .max(1);
    let uids = &uids[..take.min(uids.len())];
    let wanted: Vec<u32> = uids
        .iter()
        .copied()
        .filter(|u| sizes.get(u).is_none_or(|&(s, _)| s <= max_bytes))
        .collect();
    let mut bodies: BTreeMap<u32, Fetched> = BTreeMap::new();
    if !wanted.is_empty() {
        let set = uid_set(&wanted);
        let fetched = timed("UID FETCH BODY.PEEK[]", async {
            let mut stream = session
                .uid_fetch(&set, "(UID INTERNALDATE RFC822.SIZE BODY.PEEK[])")
                .await?;
            let mut out = Vec::new();
            while let Some(item) = stream.next().await {
                out.push(item?);
            }
            Ok::<_, async_imap::error::Error>(out)
        })
        .await?;
        for item in fetched {
            let Some(uid) = item.uid else { continue };
            bodies.insert(
                uid,
                Fetched {
                    uid,
                    raw: item.body().map(<[u8]>::to_vec),
                    internal_date: item.internal_date().map(|d| d.with_timezone(&Utc)),
                    size: item.size,
                },
            );
        }
    }
    drain(session);
    // Every UID asked for is answered, so a message the server no longer has (expunged
    // meanwhile) or one too large is passed over rather than waited for.
    Ok(uids
        .iter()
        .map(|&uid| {
            bodies.remove(&uid).unwrap_or(Fetched {
                uid,
                raw: None,
                internal_date: sizes.get(&uid).and_then(|&(_, date)| date),
                size: sizes.get(&uid).map(|&(size, _)| size),
            })
        })
        .collect())
}

/// How one message went.
enum Outcome {
    /// Filed (a lead, an activity, or kept as a non-lead).
    Filed,
    /// Gone from the folder between SEARCH and FETCH.
    Gone,
}

/// Reads one fetched message into its inquiry and hands it on, waiting for the confirm.
/// A refusal for its content keeps it as a non-lead with the refusal's code; only an
/// unavailable pipeline is an error (the batch is retried from the cursor).
async fn file_message(
    sink: &dyn IntakeSink,
    config: &MailboxConfig,
    message: &Fetched,
    counted: impl Fn(&str),
) -> Result<Outcome, Refusal> {
    let received = message.internal_date.unwrap_or_else(Utc::now);
    let reading = config.reading();
    let verdict = match &message.raw {
        Some(raw) => read_message(raw, &reading, received),
        None => match message.size {
            Some(size) if size > config.max_message_bytes => {
                let why = format!(
                    "the message is {size} bytes, over max_message_bytes ({}); read it in a \
                     mail client",
                    config.max_message_bytes
                );
                // Stands for the message, so that it is one inquiry however often it is seen.
                let marker = format!(
                    "{}\n{}\n{size}\n{:?}",
                    config.name, config.folder, message.internal_date
                );
                unparseable(marker.as_bytes(), &reading, received, &why)
            }
            _ => return Ok(Outcome::Gone),
        },
    };
    let reason = verdict.reason().map(|r| r.as_str().to_owned());
    if let Some(reason) = verdict.reason() {
        tracing::info!(mailbox = %config.name, uid = message.uid, %reason, "kept as an inquiry, not a lead");
    }
    counted(reason.as_deref().unwrap_or("lead"));
    let inquiry = verdict.into_inquiry();
    match sink.submit(inquiry.clone()).await {
        Ok(_) => Ok(Outcome::Filed),
        Err(Refusal::Unusable { code, .. }) => {
            // Kept as a non-lead so the message is counted and never read again.
            counted(code);
            sink.submit(kept_as_not_a_lead(inquiry, code)).await?;
            Ok(Outcome::Filed)
        }
        Err(unavailable) => Err(unavailable),
    }
}

/// The inquiry as a non-lead with `reason`, with nothing that could thread it.
fn kept_as_not_a_lead(mut inquiry: Inquiry, reason: &str) -> Inquiry {
    inquiry.spam = Some(reason.to_owned());
    if let Some(event) = &mut inquiry.event {
        event.conversation.clear();
        event.activity_key = None;
    }
    inquiry
}

/// Counts `leadpipe_mail_rejected_total{mailbox, reason}` for a non-lead.
fn count_not_a_lead(mailbox: &str, reason: &str) {
    if reason != "lead" {
        metrics::counter!("leadpipe_mail_rejected_total", "mailbox" => mailbox.to_owned(), "reason" => reason.to_owned()).increment(1);
    }
}

/// Files a batch: every message's inquiry submitted at once, all confirmed or an error.
async fn file_batch(
    sink: &dyn IntakeSink,
    config: &MailboxConfig,
    batch: &[Fetched],
) -> Result<(), PullError> {
    let name = config.name.as_str();
    let results = future::join_all(batch.iter().map(|message| {
        file_message(sink, config, message, |reason| {
            count_not_a_lead(name, reason)
        })
    }))
    .await;
    for result in results {
        match result {
            Ok(Outcome::Filed | Outcome::Gone) => {}
            Err(refusal) => return Err(PullError::Intake(refusal.to_string())),
        }
    }
    Ok(())
}

async fn mark_processed(
    session: &mut ImapSession,
    processed: &Processed,
    uids: &[u32],
) -> Result<(), ImapError> {
    let set = uid_set(uids);
    match processed {
        Processed::None => {}
        Processed::Flag => {
            timed("UID STORE", async {
                let stream = session
                    .uid_store(&set, format!("+FLAGS.SILENT ({PROCESSED_KEYWORD})"))
                    .await?;
                stream.collect::<Vec<_>>().await;
                Ok::<_, async_imap::error::Error>(())
            })
            .await?;
        }
        Processed::Move(folder) => {
            timed("UID MOVE", session.uid_mv(&set, folder)).await?;
        }
    }
    drain(session);
    Ok(())
}

#[async_trait]
impl PullTask for MailboxTask {
    async fn run(&self, ctx: PullContext) -> Result<(), PullError> {
        let (mut session, validity, idle) = self.open().await?;
        let processed = self.config.processed();
        let mut cursor = match ctx.cursor::<MailCursor>().await? {
            Some(cursor) if cursor.uid_validity == validity => cursor,
            previous => {
                if previous.is_some() {
                    tracing::warn!(mailbox = %self.config.name, folder = %self.config.folder, "the folder's UIDVALIDITY changed: reading it again from the start (filed messages are not filed twice)");
                }
                MailCursor {
                    uid_validity: validity,
                    last_uid: 0,
                }
            }
        };
        ctx.succeeded();
        loop {
            if ctx.stop_requested() {
                break;
            }
            let uids = uids_after(&mut session, cursor.last_uid).await?;
            let mut pending = uids.as_slice();
            while !pending.is_empty() && !ctx.stop_requested() {
                let chunk = &pending[..pending.len().min(BATCH)];
                let fetched = fetch(&mut session, chunk, self.config.max_message_bytes).await?;
                let read = &chunk[..fetched.len()];
                file_batch(ctx_sink(&ctx), &self.config, &fetched).await?;
                mark_processed(&mut session, &processed, read).await?;
                cursor.last_uid = *read.last().unwrap_or(&cursor.last_uid);
                ctx.commit(&cursor).await?;
                pending = &pending[read.len()..];
            }
            if ctx.stop_requested() {
                break;
            }
            if !uids.is_empty() {
                continue;
            }
            ctx.succeeded();
            session = if idle {
                wait_idle(session, &ctx, self.config.idle_interval_secs).await?
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(self.config.poll_interval_secs)) => {}
                    _ = ctx.stopped() => {}
                }
                timed("NOOP", session.noop()).await?;
                session
            };
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
        Ok(())
    }
}

fn ctx_sink(ctx: &PullContext) -> &dyn IntakeSink {
    ctx
}

/// Waits in IDLE until the server reports a change, the IDLE interval ends, or the task
/// is asked to stop; then ends IDLE and hands the session back.
async fn wait_idle(
    session: ImapSession,
    ctx: &PullContext,
    interval_secs: u64,
) -> Result<ImapSession, PullError> {
    let mut handle = session.idle();
    timed("IDLE", handle.init()).await?;
    {
        let (wait, interrupt) = handle.wait_with_timeout(Duration::from_secs(interval_secs));
        tokio::pin!(wait);
        tokio::select! {
            result = &mut wait => {
                use async_imap::extensions::idle::IdleResponse;
                use async_imap::imap_proto::{Response, Status};
                match result.map_err(|e| PullError::Source(format!("IDLE: {e}")))? {
                    // Dovecot says BYE to the sessions of a folder that was deleted or
                    // recreated; the next session reads its new UIDVALIDITY.
                    IdleResponse::NewData(data)
                        if matches!(data.parsed(), Response::Data { status: Status::Bye, .. }) =>
                    {
                        return Err(PullError::Source(
                            "the server ended the session during IDLE (BYE: the folder may \
                             have been deleted or recreated); reconnecting"
                                .into(),
                        ));
                    }
                    // Only the stop branch below interrupts: this is the stream's end.
                    IdleResponse::ManualInterrupt => {
                        return Err(PullError::Source(
                            "the server closed the connection during IDLE; reconnecting".into(),
                        ));
                    }
                    IdleResponse::NewData(_) | IdleResponse::Timeout => {}
                }
            }
            _ = ctx.stopped() => {
                drop(interrupt);
                let _ = tokio::time::timeout(COMMAND_TIMEOUT, wait).await;
            }
        }
    }
    let mut session = timed("DONE", handle.done()).await?;
    drain(&mut session);
    Ok(session)
}

/// What a backfill read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Backfilled {
    /// Messages found in the date range.
    pub messages: usize,
    /// Of those, read as non-leads.
    pub not_leads: usize,
}

/// Reads every message received on or after `since` again and hands it to `sink`; what
/// was filed already is a no-op in the store. Never moves the cursor or marks messages.
pub async fn backfill(
    config: &MailboxConfig,
    password: &str,
    since: NaiveDate,
    sink: &dyn IntakeSink,
) -> Result<Backfilled, PullError> {
    let mut session = connect(config, password).await?;
    timed(
        &format!("EXAMINE {}", config.folder),
        session.examine(&config.folder),
    )
    .await?;
    let uids = uids_since(&mut session, since).await?;
    let mut done = Backfilled::default();
    let not_leads = std::sync::atomic::AtomicUsize::new(0);
    let mut pending = uids.as_slice();
    while !pending.is_empty() {
        let chunk = &pending[..pending.len().min(BATCH)];
        let fetched = fetch(&mut session, chunk, config.max_message_bytes).await?;
        pending = &pending[fetched.len()..];
        let results = future::join_all(fetched.iter().map(|message| {
            file_message(sink, config, message, |reason| {
                if reason != "lead" {
                    not_leads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        }))
        .await;
        for result in results {
            result.map_err(|refusal| PullError::Intake(refusal.to_string()))?;
        }
        done.messages += fetched.len();
    }
    done.not_leads = not_leads.into_inner();
    let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
    Ok(done)
}

impl MailboxTask {
    /// The mailbox's settings.
    pub fn config(&self) -> &MailboxConfig {
        &self.config
    }
}
