//! The message on the wire between intake and the consumers.

use chrono::{DateTime, Utc};
use normalizer::Lead;
use serde::{Deserialize, Serialize};

/// Where a lead goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Code of the pipeline the lead enters.
    pub pipeline: String,
    /// Code of the stage it enters; `None` means the pipeline's initial stage.
    pub stage: Option<String>,
}

/// A normalised lead with its route, as published to a shard queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Version of this message format, so consumers can refuse what they do not know.
    pub version: u16,
    /// The lead.
    pub lead: Lead,
    /// Where it goes.
    pub route: Route,
    /// When intake published it (for consumer lag).
    pub published_at: DateTime<Utc>,
}

/// The message format this build writes and reads.
pub const ENVELOPE_VERSION: u16 = 1;

impl Envelope {
    /// Wraps a routed lead for publishing.
    pub fn new(lead: Lead, route: Route) -> Self {
        Self {
            version: ENVELOPE_VERSION,
            lead,
            route,
            published_at: Utc::now(),
        }
    }

    /// The wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain data structures to JSON cannot fail.
        serde_json::to_vec(self).expect("an envelope always serialises")
    }

    /// Reads wire bytes; an error names what is wrong (the message is then dead-lettered).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|e| format!("undecodable envelope: {e}"))?;
        if envelope.version != ENVELOPE_VERSION {
            return Err(format!(
                "envelope version {} is not {ENVELOPE_VERSION}: a newer or older leadpipe published it",
                envelope.version
            ));
        }
        Ok(envelope)
    }
}
