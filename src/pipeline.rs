//! The intake sink: what every connector hands its inquiries to, and the upkeep of the
//! idempotency keys intake claims.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ingest::{Accepted, Channel, FieldProblem, Inquiry, IntakeSink, PreparedInquiry, Refusal};
use normalizer::KeyRules;
use router::spool::{Spool, SpoolError};
use router::{Envelope, LeadRouter, Publisher};
use store::KeyStore;
use tokio_util::sync::CancellationToken;

/// Normalise, refuse what has no contact, route, publish, and answer only once the
/// broker confirmed (or, with a spool, once the local spool holds it durably).
pub struct Pipeline {
    router: LeadRouter,
    publisher: Arc<Publisher>,
    key_rules: KeyRules,
    spool: Option<Arc<Spool>>,
}

impl Pipeline {
    /// A pipeline publishing through `publisher`, with the built-in key rules.
    pub fn new(router: LeadRouter, publisher: Arc<Publisher>) -> Self {
        Self {
            router,
            publisher,
            key_rules: KeyRules::default(),
            spool: None,
        }
    }

    /// The same pipeline falling back to `spool` when the broker does not confirm in
    /// time (web intake: a browser does not retry a post).
    pub fn with_spool(self, spool: Arc<Spool>) -> Self {
        Self {
            spool: Some(spool),
            ..self
        }
    }

    /// The same pipeline deciding with `rules` which values may be identity keys.
    pub fn with_key_rules(self, key_rules: KeyRules) -> Self {
        Self { key_rules, ..self }
    }
}

/// A normalised, routed lead waiting to be published.
struct RoutedLead {
    envelope: Envelope,
    publisher: Arc<Publisher>,
    spool: Option<Arc<Spool>>,
    started: Instant,
}

#[async_trait]
impl IntakeSink for Pipeline {
    async fn prepare(&self, inquiry: Inquiry) -> Result<Box<dyn PreparedInquiry>, Refusal> {
        let started = Instant::now();
        let lead = normalizer::normalize_with(inquiry, &self.key_rules);
        // Spam is kept whatever it holds; an event of a conversation (a reply in a mail
        // thread) joins the lead that already knows the person; anything else needs a way
        // to reach the person.
        let in_conversation = lead
            .inquiry
            .event
            .as_ref()
            .is_some_and(|event| !event.conversation.is_empty());
        // A call is known only by its caller's number: one that opens the call with a
        // caller that is no number (a SIP address, an app client, too few digits) would
        // open a lead nobody can call back. A follow-up only joins a lead already filed.
        let unusable_caller = lead.inquiry.channel == Channel::Call
            && lead.problems.iter().any(|p| p.field == "phone")
            && !lead.inquiry.event.as_ref().is_some_and(|e| e.follow_up);
        let needs_contact = !in_conversation || unusable_caller;
        if lead.inquiry.spam.is_none() && needs_contact && !lead.is_contactable() {
            let mut fields = lead.problems.clone();
            for field in ["email", "phone"] {
                if !fields.iter().any(|p| p.field == field) {
                    fields.push(FieldProblem {
                        field: field.into(),
                        problem: "missing".into(),
                    });
                }
            }
            return Err(Refusal::Unusable {
                code: "no_contact",
                message:
                    "nothing to contact the person by: send a valid email address or phone number"
                        .into(),
                fields,
            });
        }
        let route = self.router.route(&lead);
        Ok(Box::new(RoutedLead {
            envelope: Envelope::new(lead, route),
            publisher: self.publisher.clone(),
            spool: self.spool.clone(),
            started,
        }))
    }
}

#[async_trait]
impl PreparedInquiry for RoutedLead {
    async fn submit(self: Box<Self>) -> Result<Accepted, Refusal> {
        let inquiry = &self.envelope.lead.inquiry;
        let (inquiry_id, channel) = (inquiry.id, inquiry.channel.as_str());
        match &self.spool {
            None => self.publisher.publish(&self.envelope).await.map_err(|error| {
                tracing::warn!(%error, %inquiry_id, "Publishing failed; the sender is told to retry later.");
                Refusal::Unavailable {
                    code: "unavailable",
                    reason: error.to_string(),
                    retry_after_secs: 5,
                }
            })?,
            Some(spool) => {
                // A person whose earlier post waits in the spool queues behind it, so one
                // person's inquiries reach the broker in the order they came; so does
                // everyone while the broker is failing.
                let published = !spool.takes_every_post()
                    && !spool.must_follow(&self.envelope)
                    && match tokio::time::timeout(spool.after(), self.publisher.publish(&self.envelope))
                        .await
                    {
                        Ok(Ok(())) => true,
                        Ok(Err(error)) => {
                            tracing::warn!(%error, %inquiry_id, "Publishing failed; the inquiry goes to the local spool.");
                            spool.broker_failed();
                            false
                        }
                        Err(_) => {
                            tracing::warn!(%inquiry_id, "The broker did not confirm within spool.after_ms; the inquiry goes to the local spool.");
                            spool.broker_failed();
                            false
                        }
                    };
                if !published {
                    spool.append(&self.envelope).await.map_err(|error| {
                        tracing::error!(%error, %inquiry_id, "Spooling failed; the sender is told to retry later.");
                        Refusal::Unavailable {
                            code: if matches!(error, SpoolError::Full(_)) {
                                "spool_full"
                            } else {
                                "unavailable"
                            },
                            reason: error.to_string(),
                            retry_after_secs: 5,
                        }
                    })?;
                    metrics::counter!("leadpipe_inquiries_spooled_total", "channel" => channel)
                        .increment(1);
                }
            }
        }
        metrics::histogram!("leadpipe_intake_seconds", "channel" => channel)
            .record(self.started.elapsed().as_secs_f64());
        Ok(Accepted { inquiry_id })
    }
}

/// A publisher connected for a one-off command (an import, a backfill), with the task
/// that keeps its connection.
pub(crate) struct CommandPublisher {
    /// The connected publisher.
    pub(crate) publisher: Arc<Publisher>,
    stop: CancellationToken,
    connection: tokio::task::JoinHandle<()>,
}

impl CommandPublisher {
    /// How long a command waits for the broker before it gives up.
    const BROKER_WAIT: Duration = Duration::from_secs(10);

    /// Connects, or says how to make the broker reachable.
    pub(crate) async fn connect(config: &router::AmqpConfig) -> anyhow::Result<Self> {
        let publisher = Publisher::new(config.clone());
        let stop = CancellationToken::new();
        let connection = tokio::spawn(publisher.clone().run(stop.clone()));
        let ready = tokio::time::timeout(Self::BROKER_WAIT, async {
            while !publisher.is_ready().await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let session = Self {
            publisher,
            stop,
            connection,
        };
        if ready.is_err() {
            session.close().await;
            anyhow::bail!(
                "Cannot reach the message broker at {} within {} s: start RabbitMQ (bash \
                 scripts/services.sh) or fix amqp.url or amqp.urls (LEADPIPE__AMQP__URL)",
                config
                    .broker_urls()
                    .iter()
                    .map(|url| crate::import::without_credentials(url))
                    .collect::<Vec<_>>()
                    .join(", "),
                Self::BROKER_WAIT.as_secs()
            );
        }
        Ok(session)
    }

    /// Closes the connection after the confirms still in flight arrived.
    pub(crate) async fn close(self) {
        self.stop.cancel();
        let _ = self.connection.await;
    }
}

/// Expired keys deleted per statement.
const PURGE_BATCH: u32 = 1_000;

/// Deletes expired idempotency keys every `every` until `stop`; a failed round is logged
/// and the next one tries again (an expired key is free whether purged or not).
pub async fn purge_expired_keys(keys: KeyStore, every: Duration, stop: CancellationToken) {
    let keys = &keys;
    crate::startup::run_every(every, stop, move || async move {
        match keys.purge_expired(PURGE_BATCH).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "Expired idempotency keys purged."),
            Err(error) => {
                tracing::warn!(%error, "Purging expired idempotency keys failed; trying again later.")
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use ingest::forms::{body, fields};
    use ingest::{Channel, Inquiry, InquiryId, RawPayload};
    use router::{Envelope, Route};

    /// A JSON form body whose custom field `deep` nests `depth` levels in all, sent twice
    /// so that the field becomes an array (one more level) as a repeated name does.
    fn deep_body(depth: usize) -> Vec<u8> {
        let inner = depth - 1;
        let deep = format!("{}1{}", "[".repeat(inner), "]".repeat(inner));
        format!(r#"{{"email":"deep@example.com","deep":{deep},"deep":{deep}}}"#).into_bytes()
    }

    fn inquiry_from(raw: Vec<u8>) -> Option<Inquiry> {
        let parsed = body::parse_body(Some("application/json"), &raw).ok()?;
        let mapped = fields::map_fields(parsed.fields, None);
        Some(Inquiry {
            id: InquiryId::new_unique(),
            channel: Channel::Form,
            source: "deep".into(),
            external_id: None,
            received_at: chrono::Utc::now(),
            default_region: Some("US".into()),
            contact: mapped.contact,
            message: mapped.message,
            utm: BTreeMap::new(),
            fields: mapped.fields,
            attachments: parsed.attachments,
            spam: None,
            dedup: None,
            raw: RawPayload {
                content_type: Some("application/json".into()),
                body: Bytes::from(raw),
            },
            event: None,
        })
    }

    fn pipeline() -> super::Pipeline {
        super::Pipeline::new(
            router::LeadRouter::new(Default::default()),
            router::Publisher::new(router::AmqpConfig::new("amqp://127.0.0.1:1", "unused")),
        )
    }

    #[tokio::test]
    async fn an_event_of_a_conversation_is_taken_without_contact_data_and_nothing_else_is() {
        use ingest::IntakeSink;
        use ingest::event::{ActivityKind, ConversationKey, EventRef};

        let mut inquiry = inquiry_from(br#"{"message":"see below"}"#.to_vec()).expect("a body");
        assert!(inquiry.contact.email.is_none() && inquiry.contact.phone.is_none());
        let refused = pipeline().prepare(inquiry.clone()).await;
        assert!(
            matches!(
                refused,
                Err(ingest::Refusal::Unusable {
                    code: "no_contact",
                    ..
                })
            ),
            "no contact and no conversation must be refused"
        );
        let mut event = EventRef::new(ActivityKind::Email);
        inquiry.event = Some(event.clone());
        assert!(pipeline().prepare(inquiry.clone()).await.is_err());
        event.conversation = vec![ConversationKey::email_thread("a1@example.com").expect("a key")];
        inquiry.event = Some(event);
        assert!(
            pipeline().prepare(inquiry).await.is_ok(),
            "an event naming a conversation goes to the store, which files it on its thread"
        );
    }

    #[tokio::test]
    async fn a_call_whose_caller_is_no_number_is_refused_unless_it_only_follows_up() {
        use ingest::IntakeSink;
        use ingest::event::{ActivityKind, ConversationKey, EventRef};

        let mut inquiry = inquiry_from(br#"{"message":"a call"}"#.to_vec()).expect("a body");
        inquiry.channel = Channel::Call;
        inquiry.default_region = Some("IT".into());
        let mut event = EventRef::new(ActivityKind::Call);
        event.conversation = vec![ConversationKey::call("twilio", "CA1").expect("a key")];
        inquiry.event = Some(event);
        for caller in ["sip:alice@pbx.example.net", "client:agent7", "+39123"] {
            let mut call = inquiry.clone();
            call.contact.phone = Some(caller.into());
            let refused = pipeline().prepare(call.clone()).await;
            assert!(
                matches!(
                    refused,
                    Err(ingest::Refusal::Unusable {
                        code: "no_contact",
                        ..
                    })
                ),
                "{caller}: a call's caller that is no number must not open an empty lead"
            );
            call.event.as_mut().expect("an event").follow_up = true;
            assert!(
                pipeline().prepare(call).await.is_ok(),
                "{caller}: a follow-up only joins a lead the call already has"
            );
        }
        let mut call = inquiry.clone();
        call.contact.phone = Some("+393389012345".into());
        assert!(pipeline().prepare(call).await.is_ok());
        assert!(
            pipeline().prepare(inquiry).await.is_ok(),
            "a call event naming no caller (a generic source's update) goes to the store"
        );
    }

    #[test]
    fn the_deepest_body_intake_accepts_is_readable_by_the_consumer() {
        // Probe for the deepest body intake takes, whatever the limit is.
        let deepest = (2..=600)
            .take_while(|&depth| inquiry_from(deep_body(depth)).is_some())
            .last()
            .expect("a shallow body is accepted");
        let inquiry = inquiry_from(deep_body(deepest)).expect("accepted");
        let envelope = Envelope::new(
            normalizer::normalize(inquiry),
            Route {
                pipeline: "default".into(),
                stage: None,
            },
        );
        let decoded = Envelope::from_bytes(&envelope.to_bytes());
        assert!(
            decoded.is_ok(),
            "a body nested {deepest} levels is accepted but the consumer cannot read it: {:?}",
            decoded.err()
        );
        assert_eq!(
            decoded.ok().map(|e| e.lead.inquiry),
            Some(envelope.lead.inquiry.clone())
        );
        // Carried among others in one broker message, it is no deeper.
        let wire = envelope.to_bytes();
        let body = router::envelope::batch_bytes([wire.as_slice(), wire.as_slice()].into_iter());
        let carried =
            router::envelope::decode_message(Some(router::envelope::BATCH_CONTENT_TYPE), &body)
                .expect("a readable batch");
        assert!(
            carried
                .iter()
                .all(|c| matches!(c, router::envelope::Carried::Envelope(e) if e.lead.inquiry == envelope.lead.inquiry)),
            "a body nested {deepest} levels is unreadable inside a batch: {carried:?}"
        );
    }
}
