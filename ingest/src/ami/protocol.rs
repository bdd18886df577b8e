//! The Asterisk Manager Interface framing: a one-line banner, then packets of
//! `Key: Value` lines ended by CRLF, each packet ended by an empty line. A value may
//! contain `:` (only the first one separates), keys repeat in some events, and bytes are
//! not always UTF-8 (caller names from a trunk), so lines are read as bytes.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use unicode_normalization::UnicodeNormalization;

/// Longest line accepted; a PBX that sends more is not speaking AMI.
const MAX_LINE: usize = 64 * 1024;

/// Most lines in one packet.
const MAX_LINES: usize = 4096;

/// One packet: an event, a response, or anything else the PBX sent, fields in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packet {
    /// Every `Key: Value` pair, in order; a line without `:` has an empty value.
    pub fields: Vec<(String, String)>,
}

impl Packet {
    /// The first value of `key` (compared without case, as Asterisk does), trimmed.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim())
    }

    /// The value of `key` unless it is empty or AMI's placeholder `<unknown>`.
    pub fn known(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| is_known(v))
    }

    /// The event's name (`Event: Hangup`), if it is an event.
    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// The response's outcome (`Response: Success`), if it is a response.
    pub fn response(&self) -> Option<&str> {
        self.get("Response")
    }

    /// Reads one packet's lines (without their line ends): UTF-8, or Latin-1 where a
    /// line is not (a trunk's caller name typed on an older PBX), in NFC.
    pub fn parse(lines: &[Vec<u8>]) -> Self {
        let fields = lines
            .iter()
            .map(|line| {
                let text = decode(line);
                match text.split_once(':') {
                    Some((key, value)) => (
                        key.trim().to_owned(),
                        value.strip_prefix(' ').unwrap_or(value).to_owned(),
                    ),
                    None => (text.trim().to_owned(), String::new()),
                }
            })
            .collect();
        Self { fields }
    }
}

/// Whether a value is a value: not empty and not `<unknown>`.
pub fn is_known(value: &str) -> bool {
    let value = value.trim();
    !value.is_empty() && !value.eq_ignore_ascii_case("<unknown>")
}

/// Why reading from the PBX failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection ended.
    #[error("the PBX closed the connection")]
    Closed,
    /// Reading failed.
    #[error("reading from the PBX failed: {0}")]
    Io(#[from] std::io::Error),
    /// What arrived is not AMI.
    #[error("the PBX sent something that is not AMI: {0}")]
    NotAmi(&'static str),
}

/// Reads one line without its line end (`\r\n`, or a bare `\n`).
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Err(FrameError::Closed);
        }
        match available.iter().position(|b| *b == b'\n') {
            Some(end) => {
                line.extend_from_slice(&available[..end]);
                reader.consume(end + 1);
                break;
            }
            None => {
                let n = available.len();
                line.extend_from_slice(available);
                reader.consume(n);
            }
        }
        if line.len() > MAX_LINE {
            return Err(FrameError::NotAmi("a line longer than 64 KiB"));
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

/// Reads one packet: lines up to the empty line that ends it. Empty lines between
/// packets are skipped.
pub async fn read_packet<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Packet, FrameError> {
    let mut lines = Vec::new();
    loop {
        let line = read_line(reader).await?;
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(Packet::parse(&lines));
        }
        lines.push(line);
        if lines.len() > MAX_LINES {
            return Err(FrameError::NotAmi("a packet of more than 4096 lines"));
        }
    }
}

/// An action as the wire wants it: `Key: Value` lines with CRLF, then an empty line.
pub fn action(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in fields {
        // A value cannot carry a line break into the next field.
        let value: String = value.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        out.extend_from_slice(format!("{key}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One line's text: UTF-8 as Asterisk writes it, else each byte as its Latin-1 character
/// (never a replacement character that loses the name), composed (NFC).
fn decode(line: &[u8]) -> String {
    match std::str::from_utf8(line) {
        Ok(text) => text.nfc().collect(),
        Err(_) => line.iter().map(|&b| char::from(b)).nfc().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn packets_end_at_an_empty_line_and_values_keep_their_colons() {
        let wire: &[u8] = b"Asterisk Call Manager/9.0.0\r\nResponse: Success\r\nActionID: a:1\r\n\r\n\
            \r\nEvent: Cdr\nStartTime: 2025-05-15 10:30:01\r\nCallerID: \"\" <33>\r\nAccountCode: \r\n\r\n";
        let mut reader = tokio::io::BufReader::with_capacity(3, wire);
        assert_eq!(
            read_line(&mut reader).await.unwrap(),
            b"Asterisk Call Manager/9.0.0"
        );
        let login = read_packet(&mut reader).await.unwrap();
        assert_eq!(login.response(), Some("Success"));
        assert_eq!(login.get("actionid"), Some("a:1"));
        let cdr = read_packet(&mut reader).await.unwrap();
        assert_eq!(cdr.event(), Some("Cdr"));
        assert_eq!(cdr.get("StartTime"), Some("2025-05-15 10:30:01"));
        assert_eq!(cdr.get("CallerID"), Some("\"\" <33>"));
        assert_eq!(cdr.known("AccountCode"), None);
        assert!(matches!(
            read_packet(&mut reader).await,
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn a_name_in_latin_1_or_decomposed_comes_out_whole_and_composed() {
        let packet = Packet::parse(&[
            b"CallerIDName: Nicol\xf2 Bianchi".to_vec(),
            "ConnectedLineName: Nguye\u{302}\u{303}n"
                .as_bytes()
                .to_vec(),
        ]);
        assert_eq!(packet.get("CallerIDName"), Some("Nicolò Bianchi"));
        assert_eq!(packet.get("ConnectedLineName"), Some("Nguyễn"));
    }

    #[test]
    fn unknown_placeholders_are_absent_values() {
        let packet = Packet::parse(&[
            b"CallerIDName: <unknown>".to_vec(),
            b"CallerIDNum: 201".to_vec(),
        ]);
        assert_eq!(packet.known("CallerIDName"), None);
        assert_eq!(packet.known("CallerIDNum"), Some("201"));
    }

    #[test]
    fn actions_are_crlf_lines_and_an_empty_line() {
        assert_eq!(
            action(&[("Action", "Ping"), ("ActionID", "p\r\n1")]),
            b"Action: Ping\r\nActionID: p1\r\n\r\n"
        );
    }
}
