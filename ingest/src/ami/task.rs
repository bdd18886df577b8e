//! The connection to one PBX: connect, read the banner, log in, follow events, ping,
//! and file calls as they finish. A failure ends the run; the supervisor reconnects with
//! backoff under the PBX's lease, and the calls followed so far survive in the task, so
//! one whose end was missed is still filed (closed by timeout).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

use super::calls::{Closed, Finished, Tracker, is_withheld};
use super::protocol::{self, FrameError, Packet};
use crate::connector::{PullContext, PullError, PullTask};
use crate::event::{ActivityKind, ConversationKey, EventRef};
use crate::inquiry::{Channel, ContactHints, Inquiry, InquiryId, RawPayload};
use crate::sink::Refusal;

/// How long connecting, the banner and the login may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often due calls are looked for.
const TICK: Duration = Duration::from_millis(200);

/// How long an answer to a Ping may take before the connection is taken for dead.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// What one PBX's task needs.
pub struct AmiLink {
    /// The `[[ami]]` name (in ids and keys).
    pub name: String,
    /// Host and port.
    pub address: (String, u16),
    /// Login name.
    pub user: String,
    /// Login secret.
    pub secret: String,
    /// The lead source of its calls.
    pub source: String,
    /// Seconds between keepalive pings.
    pub ping_interval: Duration,
}

/// The pull task of one `[[ami]]` entry.
pub struct AmiTask {
    link: AmiLink,
    tracker: Mutex<Tracker>,
    action_ids: AtomicU64,
}

impl AmiTask {
    /// A task that keeps its calls in `tracker` across reconnects.
    pub fn new(link: AmiLink, tracker: Tracker) -> Self {
        Self {
            link,
            tracker: Mutex::new(tracker),
            action_ids: AtomicU64::new(1),
        }
    }

    fn action_id(&self, what: &str) -> String {
        format!(
            "leadpipe-{what}-{}",
            self.action_ids.fetch_add(1, Ordering::Relaxed)
        )
    }
}

fn source_error(what: impl std::fmt::Display) -> PullError {
    PullError::Source(what.to_string())
}

#[async_trait]
impl PullTask for AmiTask {
    async fn run(&self, ctx: PullContext) -> Result<(), PullError> {
        // One run at a time holds the calls; the supervisor never starts two anyway.
        let mut tracker = self.tracker.lock().await;
        let (host, port) = &self.link.address;
        let stream = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            TcpStream::connect((host.as_str(), *port)),
        )
        .await
        .map_err(|_| source_error(format!("connecting to {host}:{port} timed out")))?
        .map_err(|e| source_error(format!("cannot connect to {host}:{port}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (read_half, mut write_half) = stream.into_split();
        let mut reader = BufReader::new(read_half);
        let banner = tokio::time::timeout(HANDSHAKE_TIMEOUT, protocol::read_line(&mut reader))
            .await
            .map_err(|_| source_error("the PBX sent no banner within 10 s"))?
            .map_err(source_error)?;
        let banner = String::from_utf8_lossy(&banner).into_owned();
        if !banner.contains("Call Manager") {
            return Err(source_error(format!(
                "`{host}:{port}` is not an Asterisk manager port (banner `{}`)",
                banner.chars().take(80).collect::<String>()
            )));
        }
        let login_id = self.action_id("login");
        let login = protocol::action(&[
            ("Action", "Login"),
            ("ActionID", &login_id),
            ("Username", &self.link.user),
            ("Secret", &self.link.secret),
            ("Events", "on"),
        ]);
        write_half
            .write_all(&login)
            .await
            .map_err(|e| source_error(format!("sending the login failed: {e}")))?;

        // Packets are read by a task of their own, so filing a call (which waits for the
        // broker) never leaves a half-read packet behind.
        let (tx, mut rx) = mpsc::channel::<Result<Packet, FrameError>>(1024);
        let reading = tokio::spawn(async move {
            loop {
                let packet = protocol::read_packet(&mut reader).await;
                let end = packet.is_err();
                if tx.send(packet).await.is_err() || end {
                    return;
                }
            }
        });
        let _stop_reading = AbortOnDrop(reading);

        let started = Instant::now();
        let mut logged_in = false;
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_ping = Instant::now() + self.link.ping_interval;
        let mut ping_pending: Option<(String, Instant)> = None;
        loop {
            tokio::select! {
                biased;
                () = ctx.stopped() => {
                    // Finish what is held: closed calls are filed without waiting for
                    // more Cdr records.
                    self.file_due(&ctx, &mut tracker, true).await?;
                    return Ok(());
                }
                packet = rx.recv() => {
                    let packet = match packet {
                        Some(Ok(packet)) => packet,
                        Some(Err(error)) => return Err(source_error(error)),
                        None => return Err(source_error("the PBX connection's reader stopped")),
                    };
                    if let Some(outcome) = packet.response() {
                        let id = packet.get("ActionID");
                        if !logged_in && (id == Some(login_id.as_str()) || id.is_none()) {
                            if !outcome.eq_ignore_ascii_case("Success") {
                                return Err(source_error(format!(
                                    "the PBX refused the login of `{}`: {}; check user and secret in [[ami]] and manager.conf",
                                    self.link.user,
                                    packet.get("Message").unwrap_or(outcome)
                                )));
                            }
                            logged_in = true;
                            tracker.reconnected(Instant::now());
                            tracing::info!(pbx = %self.link.name, %banner, "Logged in to the Asterisk manager.");
                            ctx.succeeded();
                        } else if ping_pending.as_ref().is_some_and(|(p, _)| Some(p.as_str()) == id) {
                            ping_pending = None;
                            ctx.succeeded();
                        }
                        continue;
                    }
                    tracker.observe(&packet, Instant::now(), Utc::now());
                }
                _ = ticker.tick() => {
                    let now = Instant::now();
                    if !logged_in {
                        if now.duration_since(started) > HANDSHAKE_TIMEOUT {
                            return Err(source_error("the PBX did not answer the login within 10 s"));
                        }
                        continue;
                    }
                    if let Some((_, sent)) = &ping_pending
                        && now.duration_since(*sent) > PING_TIMEOUT
                    {
                        return Err(source_error("the PBX did not answer a Ping within 10 s; reconnecting"));
                    }
                    if ping_pending.is_none() && now >= next_ping {
                        let id = self.action_id("ping");
                        write_half
                            .write_all(&protocol::action(&[("Action", "Ping"), ("ActionID", &id)]))
                            .await
                            .map_err(|e| source_error(format!("sending a Ping failed: {e}")))?;
                        ping_pending = Some((id, now));
                        next_ping = now + self.link.ping_interval;
                    }
                    self.file_due(&ctx, &mut tracker, false).await?;
                }
            }
        }
    }
}

impl AmiTask {
    /// Files every call that is due; a call leaves the tracker only once the broker
    /// confirmed it, so a failure files it on the next run.
    async fn file_due(
        &self,
        ctx: &PullContext,
        tracker: &mut Tracker,
        all_closed: bool,
    ) -> Result<(), PullError> {
        for finished in tracker.due(Instant::now(), all_closed) {
            let Some(origin) = &finished.origin else {
                // Internal and outbound calls are no customer's: followed, never filed.
                tracing::debug!(pbx = %self.link.name, linkedid = %finished.linkedid, "Call not inbound; not filed.");
                metrics::counter!("leadpipe_ami_calls_ignored_total", "source" => ctx.source().to_owned(), "reason" => "not_inbound").increment(1);
                tracker.filed(&finished);
                continue;
            };
            let mut inquiry = self.inquiry(&finished);
            let withheld = is_withheld(origin.caller_num.as_deref());
            if withheld {
                inquiry = not_a_lead(inquiry, "withheld_caller");
            }
            let result = match ctx.submit(inquiry.clone()).await {
                Err(Refusal::Unusable { code, .. }) if !withheld => {
                    ctx.submit(not_a_lead(inquiry, code)).await
                }
                other => other,
            };
            match result {
                Ok(_) => {
                    if withheld {
                        metrics::counter!("leadpipe_inquiries_rejected_total", "channel" => Channel::Call.as_str(), "source" => ctx.source().to_owned(), "reason" => "withheld_caller").increment(1);
                    }
                    tracker.filed(&finished);
                    ctx.succeeded();
                }
                Err(refusal) => {
                    tracker.retry_late(&finished);
                    return Err(PullError::Intake(refusal.to_string()));
                }
            }
        }
        Ok(())
    }

    /// The inquiry a finished inbound call files: an event of its one activity.
    fn inquiry(&self, call: &Finished) -> Inquiry {
        let origin = call.origin.as_ref();
        let (how, rank) = match call.closed {
            Closed::Hangup => ("end", 2i64),
            Closed::Timeout => ("timeout", 1i64),
        };
        // The PBX, the call and what makes this filing distinct: how it was closed and
        // which late Cdr update it is. Reading the same call again is a replay.
        let external_id = format!(
            "{}:{}:{how}:{}",
            self.link.name, call.linkedid, call.revision
        );
        let provider = format!("asterisk-{}", self.link.name);
        let mut event = EventRef::new(ActivityKind::Call);
        if let Ok(key) = ConversationKey::call(&provider, &call.linkedid) {
            event.activity_key = Some(key.as_key());
            event.conversation = vec![key];
        }
        event.order = Some((rank << 16) + i64::from(call.revision));
        event.occurred_at = Some(call.started_at);
        let caller = origin.and_then(|o| o.caller_num.clone());
        event.subject = Some(match &caller {
            Some(caller) => format!("Call from {caller}"),
            None => "Call".to_owned(),
        });
        let missed = !call.answered;
        let text = |v: Option<&String>| v.map_or(Value::Null, |v| Value::String(v.clone()));
        let data = &mut event.data;
        data.insert("call_id".into(), Value::String(call.linkedid.clone()));
        data.insert(
            "status".into(),
            Value::String(
                if call.answered {
                    "answered"
                } else {
                    "no-answer"
                }
                .into(),
            ),
        );
        data.insert("direction".into(), Value::String("inbound".into()));
        data.insert("missed".into(), Value::Bool(missed));
        data.insert(
            "duration_s".into(),
            call.duration_s.map_or(Value::Null, Value::from),
        );
        data.insert("recording_url".into(), Value::Null);
        data.insert(
            "caller_name".into(),
            text(origin.and_then(|o| o.caller_name.as_ref())),
        );
        data.insert("did".into(), text(origin.and_then(|o| o.did.as_ref())));
        data.insert("context".into(), text(origin.map(|o| &o.context)));
        data.insert(
            "closed_by".into(),
            Value::String(match call.closed {
                Closed::Hangup => "hangup".into(),
                Closed::Timeout => "timeout".into(),
            }),
        );
        if missed {
            event.tags.push("missed_call".into());
        }
        let raw = serde_json::to_vec(&serde_json::json!({
            "linkedid": call.linkedid,
            "caller_id_num": caller,
            "caller_id_name": origin.and_then(|o| o.caller_name.clone()),
            "context": origin.map(|o| o.context.clone()),
            "did": origin.and_then(|o| o.did.clone()),
            "answered": call.answered,
            "duration_s": call.duration_s,
        }))
        .unwrap_or_default();
        let id = InquiryId::from_external(Channel::Call, &self.link.source, &external_id);
        let mut inquiry = Inquiry::new(id, Channel::Call, self.link.source.clone(), Utc::now());
        inquiry.external_id = Some(external_id);
        inquiry.default_region = origin.map(|o| o.region.clone());
        inquiry.contact.phone = caller;
        inquiry.raw = RawPayload {
            content_type: Some("application/json".into()),
            body: Bytes::from(raw),
        };
        inquiry.event = Some(event);
        inquiry
    }
}

/// The same inquiry kept with its reason, never a lead.
fn not_a_lead(mut inquiry: Inquiry, reason: &str) -> Inquiry {
    inquiry.spam = Some(reason.to_owned());
    inquiry.event = None;
    inquiry.contact = ContactHints::default();
    inquiry
}

/// Stops the reader task when the run ends, whichever way.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
