//! Attachments described (name, type, size, digest), never carried: the raw message an
//! inquiry keeps has every attachment's content cut out, so no file travels on the queue.

use std::borrow::Cow;

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Encoding, Message, MessagePart, MimeHeaders, PartType};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use crate::http::body::percent_decode;
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
        let name = segmented_name(part, raw)
            .or_else(|| part.attachment_name().map(str::to_owned))
            .map(|n| {
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

/// A name sent in RFC 2231 segments (`filename*0*=`, `filename*1*=` ...), read from the
/// part's own header and decoded as one string in the first segment's charset. The
/// parser decodes each segment on its own, so a character of a legacy charset in a later
/// segment, or one split between two segments, would come out mangled.
fn segmented_name(part: &MessagePart<'_>, raw: &[u8]) -> Option<String> {
    let headers = raw.get(part.offset_header as usize..part.offset_body as usize)?;
    let headers = String::from_utf8_lossy(headers);
    [
        ("content-disposition", "filename"),
        ("content-type", "name"),
    ]
    .into_iter()
    .find_map(|(header, parameter)| {
        let value = header_value(&headers, header)?;
        join_segments(&value, parameter)
    })
}

/// The unfolded value of the first header called `name` in a block of header lines.
fn header_value(headers: &str, name: &str) -> Option<String> {
    let mut lines = headers.split('\n').map(|l| l.trim_end_matches('\r'));
    while let Some(line) = lines.next() {
        let Some((field, first)) = line.split_once(':') else {
            continue;
        };
        if !field.trim().eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = first.to_owned();
        for folded in lines.by_ref() {
            if !folded.starts_with([' ', '\t']) {
                break;
            }
            value.push_str(folded);
        }
        return Some(value);
    }
    None
}

/// `parameter`'s numbered segments in a header value, joined and decoded; `None` when it
/// is not sent in segments (the parser reads a single value right).
fn join_segments(value: &str, parameter: &str) -> Option<String> {
    let mut segments: Vec<(u32, bool, &str)> = Vec::new();
    for item in split_parameters(value) {
        let Some((key, raw_value)) = item.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let Some(rest) = key
            .get(..parameter.len() + 1)
            .filter(|head| head.eq_ignore_ascii_case(&format!("{parameter}*")))
            .map(|_| &key[parameter.len() + 1..])
        else {
            continue;
        };
        let (number, extended) = match rest.strip_suffix('*') {
            Some(number) => (number, true),
            None => (rest, false),
        };
        let Ok(index) = number.parse::<u32>() else {
            continue;
        };
        segments.push((index, extended, raw_value.trim()));
    }
    segments.sort_by_key(|&(index, ..)| index);
    if segments.first().is_none_or(|&(index, ..)| index != 0) {
        return None;
    }
    let mut charset = None;
    let mut bytes = Vec::new();
    for (index, extended, text) in segments {
        if extended {
            let mut encoded = text;
            if index == 0 {
                let mut pieces = text.splitn(3, '\'');
                if let (Some(set), Some(_language), Some(rest)) =
                    (pieces.next(), pieces.next(), pieces.next())
                {
                    charset = Some(set).filter(|s| !s.is_empty());
                    encoded = rest;
                }
            }
            bytes.extend(percent_decode(encoded.as_bytes(), false));
        } else {
            bytes.extend_from_slice(text.trim_matches('"').as_bytes());
        }
    }
    let decoded = charset
        .and_then(|set| charset_decoder(set.as_bytes()))
        .map_or_else(
            || String::from_utf8_lossy(&bytes).into_owned(),
            |decode| decode(&bytes),
        );
    Some(decoded).filter(|name| !name.trim().is_empty())
}

/// A header value's `;`-separated parameters, a quoted string's `;` kept inside it.
fn split_parameters(value: &str) -> Vec<&str> {
    let (mut items, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items
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
