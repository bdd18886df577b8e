//! The intake sink: what every connector hands its inquiries to.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ingest::{Accepted, FieldProblem, Inquiry, IntakeSink, Refusal};
use router::{Envelope, Publisher, Router};

/// Normalise, route, publish, and answer only once the broker confirmed.
pub struct Pipeline {
    router: Router,
    publisher: Arc<Publisher>,
}

impl Pipeline {
    /// A pipeline publishing through `publisher`.
    pub fn new(router: Router, publisher: Arc<Publisher>) -> Self {
        Self { router, publisher }
    }
}

#[async_trait]
impl IntakeSink for Pipeline {
    async fn submit(&self, inquiry: Inquiry) -> Result<Accepted, Refusal> {
        let started = Instant::now();
        let lead = normalizer::normalize(inquiry);
        // Spam is kept whatever it holds; anything else needs a way to reach the person.
        if lead.inquiry.spam.is_none() && !lead.is_contactable() {
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
        let inquiry_id = lead.inquiry.id;
        let channel = lead.inquiry.channel.as_str();
        let route = self.router.route(&lead);
        let envelope = Envelope::new(lead, route);
        self.publisher
            .publish(&envelope)
            .await
            .map_err(|error| Refusal::Unavailable {
                reason: error.to_string(),
                retry_after_secs: 5,
            })?;
        metrics::histogram!("leadpipe_intake_seconds", "channel" => channel)
            .record(started.elapsed().as_secs_f64());
        Ok(Accepted { inquiry_id })
    }
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
        })
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
            Some(envelope.lead.inquiry)
        );
    }
}
