//! Encoded words (RFC 2047) read as one text: adjacent words of one charset are joined
//! as bytes before they are decoded, so a character that a sender's program split
//! between two words (an emoji, a Polish letter at a fold) comes out whole. The parser
//! decodes each word on its own.

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::decoders::quoted_printable::quoted_printable_decode_char;

/// A header's raw value decoded; `None` when it holds no encoded word or one that cannot
/// be read (the parser's reading stands then).
pub(crate) fn decode(raw: &str) -> Option<String> {
    if !raw.contains("=?") {
        return None;
    }
    let unfolded = raw.replace("\r\n", "").replace('\n', "");
    let mut out = String::new();
    // The charset and bytes of the encoded words read since the last plain text.
    let mut pending: Option<(String, Vec<u8>)> = None;
    let mut gap = String::new();
    let mut rest = unfolded.as_str();
    while !rest.is_empty() {
        if let Some((charset, bytes, after)) = rest.strip_prefix("=?").and_then(encoded_word) {
            // Blanks between two encoded words are no part of the text; before the first
            // one after plain text they are.
            if pending.is_none() {
                out.push_str(&gap);
            }
            gap.clear();
            match &mut pending {
                Some((open, held)) if open.eq_ignore_ascii_case(&charset) => held.extend(bytes),
                _ => {
                    flush(&mut out, pending.take())?;
                    pending = Some((charset, bytes));
                }
            }
            rest = after;
            continue;
        }
        let c = rest.chars().next()?;
        rest = &rest[c.len_utf8()..];
        if c == ' ' || c == '\t' {
            gap.push(c);
            continue;
        }
        flush(&mut out, pending.take())?;
        out.push_str(&gap);
        gap.clear();
        out.push(c);
    }
    flush(&mut out, pending)?;
    out.push_str(&gap);
    Some(out)
}

/// One encoded word after its `=?`: its charset, its bytes, and the text after its `?=`.
fn encoded_word(text: &str) -> Option<(String, Vec<u8>, &str)> {
    let (charset, text) = text.split_once('?')?;
    let (encoding, text) = text.split_once('?')?;
    let (payload, after) = text.split_once("?=")?;
    if charset.is_empty() || payload.contains([' ', '\t', '?']) {
        return None;
    }
    // RFC 2231 lets a language follow the charset: `utf-8*pl`.
    let charset = charset.split('*').next().unwrap_or(charset).to_owned();
    let bytes = match encoding {
        "B" | "b" => base64_decode(payload.as_bytes())?,
        "Q" | "q" => q_decode(payload),
        _ => return None,
    };
    Some((charset, bytes, after))
}

fn q_decode(payload: &str) -> Vec<u8> {
    let bytes = payload.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&high), Some(&low)) => quoted_printable_decode_char(high, low),
                    _ => None,
                };
                if let Some(value) = hex {
                    out.push(value);
                    i += 3;
                    continue;
                }
                out.push(b);
            }
            other => out.push(other),
        }
        i += 1;
    }
    out
}

fn flush(out: &mut String, pending: Option<(String, Vec<u8>)>) -> Option<()> {
    if let Some((charset, bytes)) = pending {
        let folded: String = charset
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        // UTF-8 and its subset ASCII have no decoder there: they are read as they are.
        if folded.ends_with("utf8") || folded == "usascii" || folded == "ascii" {
            out.push_str(&String::from_utf8_lossy(&bytes));
        } else {
            let decode = charset_decoder(charset.as_bytes())?;
            out.push_str(&decode(&bytes));
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_between_two_words_comes_out_whole() {
        let cases = [
            ("=?UTF-8?B?xQ==?=\r\n =?UTF-8?B?gXVrYXN6?=", "Łukasz"),
            (
                "=?UTF-8?Q?=F0=9F?= =?utf-8?Q?=AA=91_Sedie?= per sala",
                "🪑 Sedie per sala",
            ),
            ("Re: =?ISO-8859-2?Q?=A3=F3d=BC?= oferta", "Re: Łódź oferta"),
            (
                "=?windows-1250?Q?Wycena?= =?utf-8?B?IMWbd2nEmXQ=?=",
                "Wycena święt",
            ),
            ("a =?utf-8*pl?Q?=C5=81?=  b", "a Ł  b"),
        ];
        for (raw, expected) in cases {
            assert_eq!(decode(raw).as_deref(), Some(expected), "{raw:?}");
        }
    }

    #[test]
    fn text_without_a_readable_word_is_left_to_the_parser() {
        assert_eq!(decode("Preventivo"), None);
        assert_eq!(decode("=?x-unknown?Q?abc?="), None);
        // Not an encoded word: kept as written.
        assert_eq!(decode("1 =? 2").as_deref(), Some("1 =? 2"));
    }
}
