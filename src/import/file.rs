//! The CSV file: its header row (mapped by [`super::mapping`]), its rows read with their
//! line numbers and raw bytes on a blocking thread, handed over in chunks.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use tokio::sync::mpsc;

use super::ImportKind;
use super::mapping::{Columns, apply_maps};

/// The file, opened: the CSV reader past the header row, what its columns are, and a
/// second handle that counts lines.
pub(super) struct CsvFile {
    pub(super) reader: csv::Reader<File>,
    pub(super) lines: LineTracker,
    pub(super) columns: Columns,
}

/// One piece of the file, parsed.
pub(super) struct Chunk<T> {
    pub(super) rows: Vec<(usize, T)>,
    pub(super) bad: Vec<(usize, String)>,
    pub(super) read: u64,
    pub(super) blank: u64,
    /// Byte offset just past the chunk's last record.
    pub(super) end: u64,
}

impl<T> Chunk<T> {
    pub(super) fn new() -> Self {
        Self {
            rows: Vec::new(),
            bad: Vec::new(),
            read: 0,
            blank: 0,
            end: 0,
        }
    }
}

/// Follows the CSV reader through a second handle on the file, counting line breaks:
/// the csv crate's own line numbers fall behind after a quoted field that spans lines.
pub(super) struct LineTracker {
    pub(super) reader: BufReader<File>,
    pub(super) offset: u64,
    pub(super) line: u64,
}

impl LineTracker {
    pub(super) fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("Cannot open {}", path.display()))?;
        Ok(Self {
            reader: BufReader::with_capacity(1 << 16, file),
            offset: 0,
            line: 1,
        })
    }

    /// Moves forward to `offset`, counting the line breaks passed (and keeping the bytes
    /// passed when asked); returns the line number there.
    fn advance(&mut self, offset: u64, mut keep: Option<&mut Vec<u8>>) -> std::io::Result<u64> {
        while self.offset < offset {
            let buffer = self.reader.fill_buf()?;
            if buffer.is_empty() {
                break;
            }
            let n = usize::try_from(offset - self.offset)
                .map_or(buffer.len(), |wanted| wanted.min(buffer.len()));
            let passed = &buffer[..n];
            self.line += passed.iter().filter(|b| **b == b'\n').count() as u64;
            if let Some(keep) = keep.as_deref_mut() {
                keep.extend_from_slice(passed);
            }
            self.reader.consume(n);
            self.offset += n as u64;
        }
        Ok(self.line)
    }

    /// Steps over blank lines before a record (the csv reader skips them silently), but
    /// not past `limit`.
    fn skip_line_breaks(&mut self, limit: u64) -> std::io::Result<()> {
        while self.offset < limit {
            match self.reader.fill_buf()?.first() {
                Some(b'\r' | b'\n') => {
                    self.advance(self.offset + 1, None)?;
                }
                _ => break,
            }
        }
        Ok(())
    }
}

/// Reads every record after the header, parses it with `parse` (given its line, its
/// cells and, with `keep_raw`, its bytes as they are in the file), and sends chunks of
/// `chunk_rows` good rows, with the bad rows met on the way, to `out`.
pub(super) fn read_rows<T, F>(
    mut reader: csv::Reader<File>,
    mut lines: LineTracker,
    chunk_rows: usize,
    keep_raw: bool,
    out: mpsc::Sender<Chunk<T>>,
    mut parse: F,
) -> anyhow::Result<()>
where
    F: FnMut(usize, &[&str], Vec<u8>) -> Result<T, String>,
{
    let width = reader
        .byte_headers()
        .map(csv::ByteRecord::len)
        .unwrap_or_default();
    let mut record = csv::ByteRecord::new();
    let mut chunk = Chunk::new();
    let mut last_line = 1;
    loop {
        let more = reader
            .read_byte_record(&mut record)
            .with_context(|| format!("Cannot read the file after line {last_line}"))?;
        if !more {
            break;
        }
        let start = record.position().map_or(0, csv::Position::byte);
        let end = reader.position().byte();
        let tracked = lines.advance(start, None).and_then(|_| {
            lines.skip_line_breaks(end)?;
            let line = lines.line;
            let mut raw = Vec::new();
            if keep_raw {
                lines.advance(end, Some(&mut raw))?;
                while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    raw.pop();
                }
            }
            Ok((line, raw))
        });
        let (line, raw) =
            tracked.with_context(|| format!("Cannot read the file after line {last_line}"))?;
        let line = usize::try_from(line).unwrap_or(usize::MAX);
        last_line = line;
        chunk.read += 1;
        chunk.end = end;
        match row_cells(&record, width) {
            Err(why) => chunk.bad.push((line, why)),
            Ok(cells) if cells.iter().all(|c| c.trim().is_empty()) => chunk.blank += 1,
            Ok(cells) => match parse(line, &cells, raw) {
                Ok(row) => chunk.rows.push((line, row)),
                Err(why) => chunk.bad.push((line, why)),
            },
        }
        if chunk.rows.len() >= chunk_rows {
            let full = std::mem::replace(&mut chunk, Chunk::new());
            if out.blocking_send(full).is_err() {
                // The writer stopped; it reports why.
                return Ok(());
            }
        }
    }
    let _ = out.blocking_send(chunk);
    Ok(())
}

/// A record's fields as text, or why the row is unusable.
pub(super) fn row_cells(record: &csv::ByteRecord, width: usize) -> Result<Vec<&str>, String> {
    if record.len() != width {
        return Err(format!(
            "{} fields where the header has {width}",
            record.len()
        ));
    }
    record
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            std::str::from_utf8(cell).map_err(|_| {
                format!(
                    "field {} is not valid UTF-8 (save the file as UTF-8)",
                    i + 1
                )
            })
        })
        .collect()
}

/// Reads the header row, applies `--map` and says what each column is.
pub(super) fn read_header(
    reader: &mut csv::Reader<File>,
    path: &Path,
    kind: ImportKind,
    maps: &[(String, String)],
) -> anyhow::Result<Columns> {
    let header = reader
        .byte_headers()
        .with_context(|| format!("Cannot read the header row of {}", path.display()))?
        .clone();
    if header.is_empty() || header.iter().all(|h| h.iter().all(u8::is_ascii_whitespace)) {
        bail!(
            "{} has no header row: the first line must name the columns",
            path.display()
        );
    }
    let mut names = Vec::with_capacity(header.len());
    for (i, raw) in header.iter().enumerate() {
        let name = std::str::from_utf8(raw).map_err(|_| {
            anyhow!(
                "Column {} of the header row of {} is not valid UTF-8: save the file as UTF-8",
                i + 1,
                path.display()
            )
        })?;
        // The reader strips a byte-order mark at the start; this covers one it missed.
        let name = name.trim_start_matches('\u{feff}').trim();
        names.push(if name.is_empty() {
            format!("column {}", i + 1)
        } else {
            name.to_owned()
        });
    }
    apply_maps(names, kind, maps)
}

pub(super) fn parse_delimiter(raw: &str) -> anyhow::Result<u8> {
    match raw {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ => match raw.as_bytes() {
            [byte] if byte.is_ascii() && *byte != b'"' && *byte != b'\n' && *byte != b'\r' => {
                Ok(*byte)
            }
            _ => bail!(
                "--delimiter `{raw}`: give one ASCII character such as , or ; (or `tab`), \
                 other than a quote or a line break"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::import::mapping::{Field, field_of, parse_maps};
    use crate::import::report::Tally;
    use crate::import::test_support::csv_file;

    /// Each good row's cells and raw bytes, by line.
    type RowsByLine = HashMap<usize, (Vec<String>, Vec<u8>)>;

    fn open(path: &Path, delimiter: u8) -> csv::Reader<File> {
        csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .from_reader(File::open(path).unwrap())
    }

    /// Reads a whole file the way the command does, keeping each row's raw bytes.
    fn read_all(
        path: &Path,
        kind: ImportKind,
        maps: &[(String, String)],
    ) -> (Columns, Tally, RowsByLine) {
        let mut reader = open(path, b',');
        let columns = read_header(&mut reader, path, kind, maps).unwrap();
        let (tx, mut rx) = mpsc::channel(100);
        let lines = LineTracker::open(path).unwrap();
        read_rows(reader, lines, 2, true, tx, |_, cells, raw| {
            Ok((
                cells.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>(),
                raw,
            ))
        })
        .unwrap();
        let mut tally = Tally::default();
        let mut rows = Vec::new();
        while let Ok(mut chunk) = rx.try_recv() {
            tally.take(&mut chunk);
            rows.append(&mut chunk.rows);
        }
        (columns, tally, rows.into_iter().collect())
    }

    #[test]
    fn rows_keep_their_line_numbers_and_raw_bytes_past_a_bom_and_quoted_line_breaks() {
        let path = csv_file(
            "lines.csv",
            "\u{feff}nome,email,note\r\nAda,ada@example.com,\"riga uno\r\nriga due\"\r\n,,\r\nBob,bob@example.com,x,y\r\nÇa,\"c@example.fr\",ok\r\n\r\n\nDé,d@example.fr,\"a\nb\nc\"\nEnd,e@example.fr,"
                .as_bytes(),
        );
        let (columns, tally, rows) = read_all(&path, ImportKind::Leads, &[]);
        assert_eq!(columns.names, ["nome", "email", "note"]);
        assert_eq!(tally.read, 6);
        assert_eq!(tally.blank, 1);
        assert_eq!(
            tally.bad,
            vec![(5, "4 fields where the header has 3".to_owned())]
        );
        assert_eq!(
            rows[&2].0,
            ["Ada", "ada@example.com", "riga uno\r\nriga due"]
        );
        assert_eq!(
            rows[&2].1,
            b"Ada,ada@example.com,\"riga uno\r\nriga due\"".to_vec()
        );
        assert_eq!(rows[&6].1, "Ça,\"c@example.fr\",ok".as_bytes().to_vec());
        assert_eq!(
            rows[&9].1,
            "Dé,d@example.fr,\"a\nb\nc\"".as_bytes().to_vec()
        );
        assert_eq!(rows[&12].1, b"End,e@example.fr,".to_vec());
    }

    #[test]
    fn invalid_utf8_is_a_bad_row_with_its_line() {
        let path = csv_file(
            "latin1.csv",
            b"name,email\nOk,ok@example.com\nJos\xe9,jose@example.es\n",
        );
        let (_, tally, rows) = read_all(&path, ImportKind::Contacts, &[]);
        assert_eq!(rows.len(), 1);
        assert_eq!(tally.bad.len(), 1);
        assert_eq!(tally.bad[0].0, 3);
        assert!(tally.bad[0].1.contains("UTF-8"), "{}", tally.bad[0].1);
    }

    #[test]
    fn headers_map_with_the_form_aliases_plus_our_own_and_map_renames_first() {
        let contact = |h: &str| field_of(h, ImportKind::Contacts);
        assert_eq!(contact("Nome"), Field::FirstName);
        assert_eq!(contact("Cognome"), Field::LastName);
        assert_eq!(contact("E-mail"), Field::Email);
        assert_eq!(contact("Telefono"), Field::Phone);
        assert_eq!(contact("Họ tên"), Field::Name);
        assert_eq!(contact("Company ID"), Field::CompanyId);
        assert_eq!(contact("Azienda"), Field::Company);
        assert_eq!(contact("Website"), Field::Other);
        let company = |h: &str| field_of(h, ImportKind::Companies);
        assert_eq!(company("Sito web"), Field::Domain);
        assert_eq!(company("WWW"), Field::Domain);
        assert_eq!(company("Ragione sociale"), Field::Company);
        assert_eq!(company("company_id"), Field::Other);

        let path = csv_file("maps.csv", b"Mail privata,Nome\nx@example.it,Ada\n");
        let maps = parse_maps(&["mail PRIVATA=email".into()], ImportKind::Contacts).unwrap();
        let mut reader = open(&path, b',');
        let columns = read_header(&mut reader, &path, ImportKind::Contacts, &maps).unwrap();
        assert_eq!(columns.fields, [Field::Email, Field::FirstName]);
        let missing = parse_maps(&["Altro=email".into()], ImportKind::Contacts).unwrap();
        let mut reader = open(&path, b',');
        let error = read_header(&mut reader, &path, ImportKind::Contacts, &missing).unwrap_err();
        assert!(error.to_string().contains("`Mail privata`"), "{error}");
    }

    #[test]
    fn map_targets_and_delimiters_are_checked_before_anything_runs() {
        assert!(parse_maps(&["Nota=message".into()], ImportKind::Contacts).is_err());
        assert!(parse_maps(&["no equals sign".into()], ImportKind::Contacts).is_err());
        assert!(parse_maps(&["Nota=message".into()], ImportKind::Leads).is_ok());
        assert!(parse_maps(&["Sito=domain".into()], ImportKind::Companies).is_ok());
        assert_eq!(parse_delimiter(",").unwrap(), b',');
        assert_eq!(parse_delimiter(";").unwrap(), b';');
        assert_eq!(parse_delimiter("tab").unwrap(), b'\t');
        assert!(parse_delimiter(";;").is_err());
        assert!(parse_delimiter("\"").is_err());
        assert!(parse_delimiter("§").is_err());
    }
}
