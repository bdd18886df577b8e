//! The intake sink: what every connector hands its inquiries to.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ingest::{Accepted, FieldProblem, Inquiry, IntakeSink, Refusal};
use normalizer::KeyRules;
use router::{Envelope, Publisher, Router};

/// Normalise, route, publish, and answer only once the broker confirmed.
pub struct Pipeline {
    router: Router,
    publisher: Arc<Publisher>,
    key_rules: KeyRules,
}

impl Pipeline {
    /// A pipeline publishing through `publisher`, with the built-in key rules.
    pub fn new(router: Router, publisher: Arc<Publisher>) -> Self {
        Self {
            router,
            publisher,
            key_rules: KeyRules::default(),
        }
    }

    /// The same pipeline deciding with `rules` which values may be identity keys.
    pub fn with_key_rules(self, key_rules: KeyRules) -> Self {
        Self { key_rules, ..self }
    }
}

#[async_trait]
impl IntakeSink for Pipeline {
    async fn submit(&self, inquiry: Inquiry) -> Result<Accepted, Refusal> {
        let started = Instant::now();
        let lead = normalizer::normalize_with(inquiry, &self.key_rules);
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
