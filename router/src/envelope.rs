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

/// Content type of a broker message that carries one envelope.
pub const ENVELOPE_CONTENT_TYPE: &str = "application/json";

/// Content type of a broker message that carries several envelopes, one per line.
///
/// Lines rather than a JSON array: an array would nest every envelope one level deeper,
/// and the deepest body intake accepts would then exceed the JSON reader's depth limit.
/// An envelope in wire form has no raw newline (JSON escapes it inside strings).
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.leadpipe.envelopes+jsonl";

/// Joins envelopes already in wire form into the body of one batch message.
pub fn batch_bytes<'a>(parts: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let size = parts.clone().map(|p| p.len() + 1).sum();
    let mut out = Vec::with_capacity(size);
    for part in parts {
        if !out.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(part);
    }
    out
}

/// One inquiry of a broker message, decoded or not.
#[derive(Debug)]
pub enum Carried {
    /// A readable envelope.
    Envelope(Box<Envelope>),
    /// An element of a batch that cannot be read: its own bytes and why.
    Unreadable {
        /// The element as it was on the wire.
        bytes: Vec<u8>,
        /// What is wrong with it.
        reason: String,
    },
}

/// Reads a broker message of either content type into the inquiries it carries, in order.
///
/// An error means the message as a whole cannot be read (it is then dead-lettered as it
/// is); one unreadable line of a batch is returned as [`Carried::Unreadable`], so that
/// only it is dead-lettered.
pub fn decode_message(content_type: Option<&str>, bytes: &[u8]) -> Result<Vec<Carried>, String> {
    if content_type != Some(BATCH_CONTENT_TYPE) {
        return Envelope::from_bytes(bytes).map(|e| vec![Carried::Envelope(Box::new(e))]);
    }
    let carried: Vec<Carried> = bytes
        .split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| match Envelope::from_bytes(line) {
            Ok(envelope) => Carried::Envelope(Box::new(envelope)),
            Err(reason) => Carried::Unreadable {
                bytes: line.to_vec(),
                reason,
            },
        })
        .collect();
    if carried.is_empty() {
        return Err("a batch message without envelopes".into());
    }
    Ok(carried)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::envelope;

    fn ids(carried: &[Carried]) -> Vec<String> {
        carried
            .iter()
            .map(|c| match c {
                Carried::Envelope(e) => e.lead.inquiry.id.to_string(),
                Carried::Unreadable { reason, .. } => format!("unreadable: {reason}"),
            })
            .collect()
    }

    #[test]
    fn a_batch_carries_its_envelopes_in_order() {
        let all: Vec<Envelope> = (0..3).map(envelope).collect();
        let wire: Vec<Vec<u8>> = all.iter().map(Envelope::to_bytes).collect();
        let body = batch_bytes(wire.iter().map(Vec::as_slice));
        let carried = decode_message(Some(BATCH_CONTENT_TYPE), &body).expect("readable");
        let expected: Vec<String> = all.iter().map(|e| e.lead.inquiry.id.to_string()).collect();
        assert_eq!(ids(&carried), expected);
        // A single envelope is read as before, whatever its content type says.
        let one = decode_message(Some(ENVELOPE_CONTENT_TYPE), &wire[0]).expect("readable");
        assert_eq!(ids(&one), expected[..1]);
        assert_eq!(ids(&decode_message(None, &wire[0]).unwrap()), expected[..1]);
    }

    #[test]
    fn an_unreadable_line_stands_alone_and_an_empty_batch_is_refused() {
        let good = envelope(1);
        let body = batch_bytes(
            [good.to_bytes().as_slice(), b"{\"version\": 1}", b""]
                .into_iter()
                .chain([good.to_bytes().as_slice()]),
        );
        let carried = decode_message(Some(BATCH_CONTENT_TYPE), &body).expect("readable");
        assert_eq!(carried.len(), 3, "{:?}", ids(&carried));
        assert!(matches!(&carried[0], Carried::Envelope(_)));
        match &carried[1] {
            Carried::Unreadable { bytes, reason } => {
                assert_eq!(bytes, b"{\"version\": 1}");
                assert!(reason.contains("undecodable envelope"), "{reason}");
            }
            other => panic!("the second line is unreadable, not {other:?}"),
        }
        assert!(matches!(&carried[2], Carried::Envelope(_)));
        assert!(decode_message(Some(BATCH_CONTENT_TYPE), b"\n \n").is_err());
        // A batch read as a single envelope would be refused whole.
        assert!(decode_message(None, &body).is_err());
    }

    #[test]
    fn a_newline_inside_a_field_does_not_split_an_envelope() {
        let mut lead = envelope(2);
        lead.lead.inquiry.message = Some("first line\nsecond line\r\n".into());
        let body =
            batch_bytes([lead.to_bytes().as_slice(), lead.to_bytes().as_slice()].into_iter());
        let carried = decode_message(Some(BATCH_CONTENT_TYPE), &body).expect("readable");
        assert_eq!(carried.len(), 2);
        match &carried[0] {
            Carried::Envelope(e) => assert_eq!(e.lead.inquiry.message, lead.lead.inquiry.message),
            other => panic!("{other:?}"),
        }
    }
}
