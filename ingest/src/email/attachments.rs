//! Attachments described (name, type, size, digest), never carried: the raw message an
//! inquiry keeps has every attachment's content cut out, so no file travels on the queue.

use std::borrow::Cow;

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Encoding, Message, MessagePart, MimeHeaders, PartType};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use crate::inquiry::Attachment;

/// Most attachments described on one message; the rest are counted, not listed.
pub(crate) const MAX_ATTACHMENTS: usize = 100;
/// Longest attachment name kept, in characters.
const MAX_NAME_CHARS: usize = 255;

/// What a message's attachments are, for the inquiry and for the activity's `data`.
pub(crate) struct Described {
    /// One per attachment, up to [`MAX_ATTACHMENTS`].
    pub attachments: Vec<Attachment>,
    /// `[{name, content_type, size}]` for the activity.
    pub data: Vec<Value>,
    /// Attachments past [`MAX_ATTACHMENTS`].
    pub omitted: usize,
}

/// Describes every attachment of `message`, whose bytes are `raw`.
pub(crate) fn describe(message: &Message<'_>, raw: &[u8]) -> Described {
    let mut described = Described {
        attachments: Vec::new(),
        data: Vec::new(),
        omitted: 0,
    };
    for (index, part) in message.attachments().enumerate() {
        if index >= MAX_ATTACHMENTS {
            described.omitted += 1;
            continue;
        }
        let name = part.attachment_name().map(|n| {
            n.nfc()
                .filter(|c| !c.is_control())
                .take(MAX_NAME_CHARS)
                .collect::<String>()
        });
        let content_type = part.content_type().map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        });
        let content = transfer_decoded(part, raw);
        let content: &[u8] = &content;
        described.data.push(json!({
            "name": name,
            "content_type": content_type,
            "size": content.len(),
        }));
        described.attachments.push(Attachment {
            field: format!("part-{}", index + 1),
            filename: name,
            content_type,
            size: content.len() as u64,
            sha256: Some(hex::encode(Sha256::digest(content))),
        });
    }
    described
}

/// The bytes of an attachment after its transfer encoding is undone, as the sender's
/// program wrote the file: a text attachment keeps its own charset (the parser would
/// have turned it into UTF-8, which changes its size).
fn transfer_decoded<'a>(part: &'a MessagePart<'_>, raw: &'a [u8]) -> Cow<'a, [u8]> {
    match &part.body {
        // A forwarded mail's size is that of the mail as it was attached.
        PartType::Message(inner) => Cow::Borrowed(inner.raw_message()),
        PartType::Text(_) | PartType::Html(_) => {
            let body = raw
                .get(part.offset_body as usize..part.offset_end as usize)
                .unwrap_or_default();
            let decoded = match part.encoding {
                Encoding::Base64 => base64_decode(body),
                Encoding::QuotedPrintable => quoted_printable_decode(body),
                Encoding::None => None,
            };
            decoded.map_or(Cow::Borrowed(body), Cow::Owned)
        }
        _ => Cow::Borrowed(part.contents()),
    }
}

/// `raw` with the body of every attachment removed (its headers kept, so what it was
/// can still be read); the text parts stay byte for byte.
pub(crate) fn without_attachment_content(message: &Message<'_>, raw: &[u8]) -> Vec<u8> {
    let mut cuts: Vec<(usize, usize)> = message
        .attachments
        .iter()
        .filter_map(|&id| message.parts.get(id as usize))
        .map(|part| (part.offset_body as usize, part.offset_end as usize))
        .filter(|&(start, end)| start < end && end <= raw.len())
        .collect();
    cuts.sort_unstable();
    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    for (start, end) in cuts {
        if start < at {
            // Nested inside a part already cut.
            continue;
        }
        out.extend_from_slice(&raw[at..start]);
        at = end;
    }
    out.extend_from_slice(&raw[at..]);
    out
}
