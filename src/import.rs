//! `leadpipe import`: contacts, companies or leads from a CSV file.
//!
//! Contacts and companies go straight to PostgreSQL in bulk ([`store::Store::import_contacts`]
//! writes a few array statements per 2,000 rows). Leads take the road every channel
//! takes: each row becomes an [`Inquiry`] of channel `import`, normalised and published
//! with confirms by the [`Pipeline`], and filed by the daemon's consumers. A lead's id
//! comes from the file's content and the row's line, so importing the same file again
//! files nothing new.
//!
//! A file is read on a blocking thread that parses rows and hands them over in chunks,
//! so parsing one chunk overlaps with writing or publishing the previous one.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use ingest::forms::fields::map_fields;
use ingest::{Channel, FieldProblem, Inquiry, InquiryId, IntakeSink, RawPayload, Refusal};
use normalizer::{InvalidPhone, Region, join_name};
use router::backoff::Backoff;
use router::{Publisher, Router};
use serde_json::Value;
use sha2::{Digest, Sha256};
use store::clients::IMPORT_BATCH;
use store::{ImportReport, NewCompany, NewContact, Store, StoreError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clients_api::{CompanyInput, ContactInput, parse_company, parse_contact};
use crate::pipeline::Pipeline;
use crate::settings::Settings;

/// Leads being published at once: enough to keep every publisher channel busy while
/// each waits for its confirm.
const LEADS_IN_FLIGHT: usize = 64;
/// Rows per chunk handed from the reading thread to the publishing side.
const LEADS_CHUNK: usize = 256;
/// Attempts to publish one row before it is reported as not published.
const PUBLISH_ATTEMPTS: u32 = 4;
/// Rows in a row that failed for the broker after which the import stops: the broker
/// is down, and every further row would only wait out its retries.
const BROKER_GIVE_UP: usize = LEADS_IN_FLIGHT;
/// How long to wait for the first connection to the broker.
const BROKER_WAIT: Duration = Duration::from_secs(10);
/// Attempts to write one batch while the database is unavailable.
const STORE_ATTEMPTS: u32 = 5;
/// Bad rows printed in full; the rest are counted.
const SHOWN_BAD_ROWS: usize = 100;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportKind {
    /// People: names, email addresses, phone numbers, a company id.
    Contacts,
    /// Companies: a name, a website or domain, phone numbers.
    Companies,
    /// Inquiries to file as leads, one per row.
    Leads,
}

impl ImportKind {
    fn as_str(self) -> &'static str {
        match self {
            ImportKind::Contacts => "contacts",
            ImportKind::Companies => "companies",
            ImportKind::Leads => "leads",
        }
    }

    /// The field names `--map` may name for this kind (leads take any name).
    fn targets(self) -> &'static [&'static str] {
        match self {
            ImportKind::Contacts => &[
                "name",
                "first_name",
                "last_name",
                "email",
                "phone",
                "company_id",
            ],
            ImportKind::Companies => &["name", "domain", "phone"],
            ImportKind::Leads => &[],
        }
    }
}

/// The command's options as given on the command line.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// What the file holds.
    pub kind: ImportKind,
    /// The CSV file.
    pub file: PathBuf,
    /// `HEADER=field` renames, applied before mapping.
    pub maps: Vec<String>,
    /// ISO 3166-1 alpha-2 region for phone numbers without a country code.
    pub default_region: Option<String>,
    /// The leads' source; `import:<file name>` when absent.
    pub source: Option<String>,
    /// The field separator: one character, or `tab`.
    pub delimiter: String,
}

/// What one column of the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    FirstName,
    LastName,
    Email,
    Phone,
    Company,
    CompanyId,
    Domain,
    Other,
}

/// The file's header row, renamed and mapped.
#[derive(Debug, Clone)]
struct Columns {
    /// Header names after `--map`.
    names: Vec<String>,
    /// What each column is.
    fields: Vec<Field>,
}

/// The file, opened: the CSV reader past the header row, what its columns are, and a
/// second handle that counts lines.
struct CsvFile {
    reader: csv::Reader<File>,
    lines: LineTracker,
    columns: Columns,
}

/// One piece of the file, parsed.
struct Chunk<T> {
    rows: Vec<(usize, T)>,
    bad: Vec<(usize, String)>,
    read: u64,
    blank: u64,
    /// Byte offset just past the chunk's last record.
    end: u64,
}

impl<T> Chunk<T> {
    fn new() -> Self {
        Self {
            rows: Vec::new(),
            bad: Vec::new(),
            read: 0,
            blank: 0,
            end: 0,
        }
    }
}

/// Totals for the summary.
#[derive(Debug, Default)]
struct Tally {
    read: u64,
    blank: u64,
    done: u64,
    bad: Vec<(usize, String)>,
}

impl Tally {
    fn take<T>(&mut self, chunk: &mut Chunk<T>) {
        self.read += chunk.read;
        self.blank += chunk.blank;
        self.bad.append(&mut chunk.bad);
    }
}

/// Runs the import and prints a summary. Rows that cannot be imported are reported and
/// do not stop it; an error means the import could not run (or stopped), and says what
/// to do.
pub async fn run(settings: Settings, options: ImportOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let kind = options.kind;
    let delimiter = parse_delimiter(&options.delimiter)?;
    let region = match options.default_region.as_deref() {
        Some(raw) => Some(Region::parse(raw).map_err(|e| {
            anyhow!("--default-region `{raw}`: {e}; give a two-letter ISO 3166-1 code such as IT")
        })?),
        None if kind == ImportKind::Leads => bail!(
            "--kind leads needs --default-region: the region of phone numbers written without \
             a country code, e.g. --default-region IT"
        ),
        None => None,
    };
    if options.source.is_some() && kind != ImportKind::Leads {
        bail!("--source names where leads came from; it is only used with --kind leads");
    }
    let maps = parse_maps(&options.maps, kind)?;

    let path = options.file.as_path();
    let file = File::open(path).with_context(|| {
        format!(
            "Cannot open {}: check the path and that the file is readable",
            path.display()
        )
    })?;
    let length = file
        .metadata()
        .with_context(|| format!("Cannot read {}", path.display()))?
        .len();
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        // Rows with the wrong number of fields are reported one by one, not fatal.
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(file);
    let columns = read_header(&mut reader, path, kind, &maps)?;
    let unused: Vec<&str> = columns
        .names
        .iter()
        .zip(&columns.fields)
        .filter(|(_, f)| kind != ImportKind::Leads && !used_by(kind, **f))
        .map(|(n, _)| n.as_str())
        .collect();
    if !unused.is_empty() {
        println!(
            "Columns not imported (no {} field of that name; name one with --map \"HEADER=field\", \
             fields: {}): {}",
            kind.as_str(),
            kind.targets().join(", "),
            unused
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());

    let csv_file = CsvFile {
        reader,
        lines: LineTracker::open(path)?,
        columns,
    };
    let bar = progress_bar(length);
    let outcome = match kind {
        ImportKind::Contacts | ImportKind::Companies => {
            import_clients(&settings, kind, csv_file, region, &bar).await
        }
        ImportKind::Leads => {
            let source = options
                .source
                .clone()
                .unwrap_or_else(|| format!("import:{file_name}"));
            if source.trim().is_empty() {
                bail!("--source must not be empty");
            }
            let region = region.ok_or_else(|| anyhow!("--kind leads needs --default-region"))?;
            import_leads(&settings, path, csv_file, region, source, &bar).await
        }
    };
    bar.finish_and_clear();
    let mut tally = outcome?;
    tally.bad.sort_by_key(|(line, _)| *line);
    print_summary(kind, &file_name, &tally, started.elapsed());
    Ok(())
}

/// Contacts or companies: parsed on the reading thread, written in bulk batches.
async fn import_clients(
    settings: &Settings,
    kind: ImportKind,
    csv_file: CsvFile,
    region: Option<Region>,
    bar: &ProgressBar,
) -> anyhow::Result<Tally> {
    let CsvFile {
        reader,
        lines,
        columns,
    } = csv_file;
    let store = open_store(settings).await?;
    let region_code = region.map(|r| r.as_str().to_owned());
    let result = match kind {
        ImportKind::Contacts => {
            let parse =
                move |cells: &[&str]| contact_row(&columns.fields, cells, region_code.as_deref());
            load_clients(reader, lines, bar, kind, parse, |rows| {
                let store = store.clone();
                async move { store.import_contacts(rows.as_slice()).await }
            })
            .await
        }
        _ => {
            let parse =
                move |cells: &[&str]| company_row(&columns.fields, cells, region_code.as_deref());
            load_clients(reader, lines, bar, kind, parse, |rows| {
                let store = store.clone();
                async move { store.import_companies(rows.as_slice()).await }
            })
            .await
        }
    };
    store.close().await;
    result
}

/// Parses rows on a reading thread and writes them in bulk batches as they come.
async fn load_clients<T, P, F, Fut>(
    reader: csv::Reader<File>,
    lines: LineTracker,
    bar: &ProgressBar,
    kind: ImportKind,
    mut parse: P,
    write: F,
) -> anyhow::Result<Tally>
where
    T: Send + 'static,
    P: FnMut(&[&str]) -> Result<T, String> + Send + 'static,
    F: Fn(Arc<Vec<(usize, T)>>) -> Fut,
    Fut: Future<Output = Result<ImportReport, StoreError>>,
{
    let (tx, rx) = mpsc::channel(2);
    let reading = tokio::task::spawn_blocking(move || {
        read_rows(reader, lines, IMPORT_BATCH, false, tx, |_, cells, _| {
            parse(cells)
        })
    });
    let written = write_batches(rx, bar, kind, write).await;
    finish(reading, written).await
}

/// Waits for the reading thread and merges its outcome with the writer's.
async fn finish(
    reading: tokio::task::JoinHandle<anyhow::Result<()>>,
    written: anyhow::Result<Tally>,
) -> anyhow::Result<Tally> {
    // The writer's error comes first: when it stops, the reader only sees a closed channel.
    let tally = written?;
    reading
        .await
        .map_err(|e| anyhow!("the file reader stopped unexpectedly: {e}"))??;
    Ok(tally)
}

/// Writes each chunk as one store call, retrying while the database is unavailable.
async fn write_batches<T, F, Fut>(
    mut rx: mpsc::Receiver<Chunk<T>>,
    bar: &ProgressBar,
    kind: ImportKind,
    write: F,
) -> anyhow::Result<Tally>
where
    F: Fn(Arc<Vec<(usize, T)>>) -> Fut,
    Fut: Future<Output = Result<ImportReport, StoreError>>,
{
    let mut tally = Tally::default();
    while let Some(mut chunk) = rx.recv().await {
        tally.take(&mut chunk);
        if !chunk.rows.is_empty() {
            let first = chunk.rows.first().map_or(0, |(line, _)| *line);
            let last = chunk.rows.last().map_or(0, |(line, _)| *line);
            // Shared, so that a retry does not copy the batch.
            let rows = Arc::new(std::mem::take(&mut chunk.rows));
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(16));
            let mut attempt = 1;
            let report = loop {
                match write(rows.clone()).await {
                    Ok(report) => break report,
                    Err(error) if error.is_transient() && attempt < STORE_ATTEMPTS => {
                        let delay = backoff.next_delay();
                        tracing::warn!(%error, retry_in = ?delay, "Cannot write a batch of the import; retrying.");
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                    Err(error) => {
                        let rerun = match kind {
                            ImportKind::Contacts => {
                                "running the same import again skips them, as their keys are taken"
                            }
                            _ => {
                                "running the same import again skips those with a domain; \
                                 the others would be created twice"
                            }
                        };
                        return Err(anyhow!(error).context(format!(
                            "Storing the rows of lines {first} to {last} failed; {} rows before \
                             line {first} are stored ({rerun})",
                            tally.done
                        )));
                    }
                }
            };
            tally.done += report.inserted;
            tally.bad.extend(report.skipped);
        }
        bar.set_position(chunk.end.max(bar.position()));
    }
    Ok(tally)
}

/// Leads: every row becomes an inquiry, published through the pipeline with bounded
/// concurrency.
async fn import_leads(
    settings: &Settings,
    path: &Path,
    csv_file: CsvFile,
    region: Region,
    source: String,
    bar: &ProgressBar,
) -> anyhow::Result<Tally> {
    let CsvFile {
        reader,
        lines,
        columns,
    } = csv_file;
    let fingerprint = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || file_fingerprint(&path))
            .await
            .map_err(|e| anyhow!("hashing the file stopped unexpectedly: {e}"))??
    };

    let publisher = Publisher::new(settings.amqp.clone());
    let stop = CancellationToken::new();
    let connection = tokio::spawn(publisher.clone().run(stop.clone()));
    let ready = tokio::time::timeout(BROKER_WAIT, async {
        while !publisher.is_ready().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if ready.is_err() {
        stop.cancel();
        let _ = connection.await;
        bail!(
            "Cannot reach the message broker at {} within {} s: start RabbitMQ (bash \
             scripts/services.sh) or fix amqp.url (LEADPIPE__AMQP__URL)",
            without_credentials(&settings.amqp.url),
            BROKER_WAIT.as_secs()
        );
    }
    let pipeline = Arc::new(Pipeline::new(
        Router::new(settings.routing.clone()),
        publisher.clone(),
    ));

    let (tx, rx) = mpsc::channel(2);
    let reading = {
        let region = region.as_str().to_owned();
        tokio::task::spawn_blocking(move || {
            read_rows(reader, lines, LEADS_CHUNK, true, tx, |line, cells, raw| {
                Ok(lead_inquiry(
                    &columns,
                    cells,
                    line,
                    raw,
                    &region,
                    &source,
                    &fingerprint,
                ))
            })
        })
    };
    let published = publish_rows(rx, pipeline, bar).await;
    // Closing waits for the confirms still in flight.
    stop.cancel();
    let _ = connection.await;
    finish(reading, published).await
}

/// What became of one row's publication.
enum Published {
    Done,
    Refused(String),
    BrokerFailed(String),
}

/// Totals of the rows published so far, and how many failed for the broker in a row.
#[derive(Default)]
struct Publishing {
    tally: Tally,
    failing_in_a_row: usize,
    last_failure: Option<(usize, String)>,
}

impl Publishing {
    fn settle(&mut self, done: Result<(usize, Published), tokio::task::JoinError>) {
        match done {
            Ok((_, Published::Done)) => {
                self.tally.done += 1;
                self.failing_in_a_row = 0;
            }
            Ok((line, Published::Refused(why))) => self.tally.bad.push((line, why)),
            Ok((line, Published::BrokerFailed(why))) => {
                self.failing_in_a_row += 1;
                self.last_failure = Some((line, why.clone()));
                self.tally.bad.push((line, why));
            }
            Err(error) => self
                .tally
                .bad
                .push((0, format!("publishing a row stopped unexpectedly: {error}"))),
        }
    }

    fn broker_is_down(&self) -> bool {
        self.failing_in_a_row >= BROKER_GIVE_UP
    }
}

async fn publish_rows(
    mut rx: mpsc::Receiver<Chunk<Inquiry>>,
    pipeline: Arc<Pipeline>,
    bar: &ProgressBar,
) -> anyhow::Result<Tally> {
    let mut state = Publishing::default();
    let mut in_flight: JoinSet<(usize, Published)> = JoinSet::new();
    'reading: while let Some(mut chunk) = rx.recv().await {
        state.tally.take(&mut chunk);
        for (line, inquiry) in chunk.rows {
            while in_flight.len() >= LEADS_IN_FLIGHT {
                if let Some(done) = in_flight.join_next().await {
                    state.settle(done);
                }
            }
            if state.broker_is_down() {
                break 'reading;
            }
            let pipeline = pipeline.clone();
            in_flight.spawn(async move { (line, publish_one(&pipeline, inquiry).await) });
        }
        bar.set_position(chunk.end.max(bar.position()));
    }
    while let Some(done) = in_flight.join_next().await {
        state.settle(done);
    }
    if state.broker_is_down() {
        let (line, why) = state.last_failure.unwrap_or_default();
        bail!(
            "The message broker stopped confirming (line {line}: {why}). {} rows were published \
             and stay published; once the broker is back, run the same command again: rows \
             published before are not filed twice",
            state.tally.done
        );
    }
    Ok(state.tally)
}

/// Publishes one row, retrying with backoff while the broker does not confirm.
async fn publish_one(pipeline: &Pipeline, inquiry: Inquiry) -> Published {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
    let mut attempt = 1;
    loop {
        // The id is deterministic, so a retry after a lost confirm files nothing twice.
        match pipeline.submit(inquiry.clone()).await {
            Ok(_) => return Published::Done,
            Err(Refusal::Unusable {
                code,
                message,
                fields,
            }) => return Published::Refused(refusal_reason(code, &message, &fields)),
            Err(Refusal::Unavailable { reason, .. }) => {
                if attempt >= PUBLISH_ATTEMPTS {
                    return Published::BrokerFailed(format!(
                        "not published after {attempt} attempts: {reason}"
                    ));
                }
                tokio::time::sleep(backoff.next_delay()).await;
                attempt += 1;
            }
        }
    }
}

fn refusal_reason(code: &str, message: &str, fields: &[FieldProblem]) -> String {
    let what = if code == "no_contact" {
        "no valid email address or phone number"
    } else {
        message
    };
    let details: Vec<String> = fields
        .iter()
        .map(|p| format!("{}: {}", p.field, p.problem))
        .collect();
    if details.is_empty() {
        what.to_owned()
    } else {
        format!("{what} ({})", details.join("; "))
    }
}

/// Follows the CSV reader through a second handle on the file, counting line breaks:
/// the csv crate's own line numbers fall behind after a quoted field that spans lines.
struct LineTracker {
    reader: BufReader<File>,
    offset: u64,
    line: u64,
}

impl LineTracker {
    fn open(path: &Path) -> anyhow::Result<Self> {
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
fn read_rows<T, F>(
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
fn row_cells(record: &csv::ByteRecord, width: usize) -> Result<Vec<&str>, String> {
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
fn read_header(
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
    for (from, to) in maps {
        let exact: Vec<usize> = (0..names.len()).filter(|&i| names[i] == *from).collect();
        let matches = if exact.is_empty() {
            (0..names.len())
                .filter(|&i| names[i].to_lowercase() == from.to_lowercase())
                .collect()
        } else {
            exact
        };
        if matches.is_empty() {
            bail!(
                "--map \"{from}={to}\": the file has no column `{from}`; its columns are {}",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for i in matches {
            names[i] = to.clone();
        }
    }
    let fields = names.iter().map(|n| field_of(n, kind)).collect();
    Ok(Columns { names, fields })
}

/// What a header means for `kind`: our own aliases first, then those of web forms.
fn field_of(header: &str, kind: ImportKind) -> Field {
    let squashed: String = header
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    match kind {
        ImportKind::Contacts if squashed == "companyid" => return Field::CompanyId,
        ImportKind::Companies
            if ["domain", "dominio", "website", "sito", "sitoweb", "www"]
                .contains(&squashed.as_str()) =>
        {
            return Field::Domain;
        }
        _ => {}
    }
    // The forms connector's aliases decide, so a column is read the way the same field
    // of a web form would be.
    let probe = map_fields(vec![(header.to_owned(), Value::String("x".into()))], None);
    let contact = &probe.contact;
    if contact.full_name.is_some() {
        Field::Name
    } else if contact.first_name.is_some() {
        Field::FirstName
    } else if contact.last_name.is_some() {
        Field::LastName
    } else if contact.email.is_some() {
        Field::Email
    } else if contact.phone.is_some() {
        Field::Phone
    } else if contact.company.is_some() {
        Field::Company
    } else {
        Field::Other
    }
}

/// Whether `kind` imports a column of this field.
fn used_by(kind: ImportKind, field: Field) -> bool {
    match kind {
        ImportKind::Contacts => matches!(
            field,
            Field::Name
                | Field::FirstName
                | Field::LastName
                | Field::Email
                | Field::Phone
                | Field::CompanyId
        ),
        ImportKind::Companies => matches!(
            field,
            Field::Name | Field::Company | Field::Domain | Field::Phone
        ),
        ImportKind::Leads => true,
    }
}

/// `HEADER=field` pairs, checked against the fields of `kind`.
fn parse_maps(maps: &[String], kind: ImportKind) -> anyhow::Result<Vec<(String, String)>> {
    maps.iter()
        .map(|raw| {
            // The last `=`: a header may contain one, a field name never does.
            let (from, to) = raw
                .rsplit_once('=')
                .map(|(f, t)| (f.trim(), t.trim()))
                .filter(|(f, t)| !f.is_empty() && !t.is_empty())
                .ok_or_else(|| {
                    anyhow!(
                        "--map \"{raw}\": write it as \"CSV header=field\", e.g. \"Mail=email\""
                    )
                })?;
            if kind != ImportKind::Leads && !used_by(kind, field_of(to, kind)) {
                bail!(
                    "--map \"{raw}\": `{to}` is not a {} field; use one of {}",
                    kind.as_str(),
                    kind.targets().join(", ")
                );
            }
            Ok((from.to_owned(), to.to_owned()))
        })
        .collect()
}

fn parse_delimiter(raw: &str) -> anyhow::Result<u8> {
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

/// The values of a row's columns of `field`, `;`-separated lists split, blanks dropped.
fn values<'a>(fields: &[Field], cells: &[&'a str], field: Field) -> Vec<&'a str> {
    fields
        .iter()
        .zip(cells)
        .filter(|(f, _)| **f == field)
        .flat_map(|(_, cell)| cell.split(';'))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

/// The first non-blank value of a row's columns of `field`.
fn first<'a>(fields: &[Field], cells: &[&'a str], field: Field) -> Option<&'a str> {
    fields
        .iter()
        .zip(cells)
        .filter(|(f, _)| **f == field)
        .map(|(_, cell)| cell.trim())
        .find(|v| !v.is_empty())
}

fn contact_row(
    fields: &[Field],
    cells: &[&str],
    region: Option<&str>,
) -> Result<NewContact, String> {
    let company_id = match first(fields, cells, Field::CompanyId) {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .map_err(|_| format!("company_id `{raw}` is not a number"))?,
        ),
    };
    let input = ContactInput {
        name: join_name(
            first(fields, cells, Field::Name),
            first(fields, cells, Field::FirstName),
            first(fields, cells, Field::LastName),
        ),
        emails: values(fields, cells, Field::Email)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        phones: values(fields, cells, Field::Phone)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        company_id,
        default_region: region.map(str::to_owned),
    };
    let (emails, phones) = (input.emails.clone(), input.phones.clone());
    parse_contact(input).map_err(|problems| describe(&problems, &emails, &phones, region))
}

fn company_row(
    fields: &[Field],
    cells: &[&str],
    region: Option<&str>,
) -> Result<NewCompany, String> {
    let name = first(fields, cells, Field::Company)
        .or_else(|| first(fields, cells, Field::Name))
        .ok_or_else(|| "no company name".to_owned())?;
    let input = CompanyInput {
        name: name.to_owned(),
        domain: first(fields, cells, Field::Domain).map(str::to_owned),
        phones: values(fields, cells, Field::Phone)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        default_region: region.map(str::to_owned),
    };
    let phones = input.phones.clone();
    parse_company(input).map_err(|problems| describe(&problems, &[], &phones, region))
}

/// Field problems as one line naming the values, e.g. "email `x@`: nothing after the @".
fn describe(
    problems: &[FieldProblem],
    emails: &[String],
    phones: &[String],
    region: Option<&str>,
) -> String {
    let no_country_code = InvalidPhone::NoCountryCode.to_string();
    let mut out = String::new();
    for problem in problems {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let indexed = |prefix: &str| {
            problem
                .field
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|i| i.parse::<usize>().ok())
        };
        if let Some(value) = indexed("emails[").and_then(|i| emails.get(i)) {
            let _ = write!(out, "email `{value}`: {}", problem.problem);
        } else if let Some(value) = indexed("phones[").and_then(|i| phones.get(i)) {
            let _ = write!(out, "phone `{value}`: {}", problem.problem);
            if region.is_none() && problem.problem == no_country_code {
                out.push_str(" (give --default-region)");
            }
        } else if problem.field == "emails" {
            out.push_str("no email address or phone number");
        } else {
            let _ = write!(out, "{}: {}", problem.field, problem.problem);
        }
    }
    out
}

/// One row as an inquiry, the way a web form's post becomes one.
fn lead_inquiry(
    columns: &Columns,
    cells: &[&str],
    line: usize,
    raw: Vec<u8>,
    region: &str,
    source: &str,
    fingerprint: &str,
) -> Inquiry {
    let pairs: Vec<(String, Value)> = columns
        .names
        .iter()
        .zip(cells)
        .filter(|(_, cell)| !cell.trim().is_empty())
        .map(|(name, cell)| (name.clone(), Value::String((*cell).to_owned())))
        .collect();
    let mapped = map_fields(pairs, None);
    let external_id = format!("{fingerprint}:{line}");
    Inquiry {
        id: InquiryId::from_external(Channel::Import, source, &external_id),
        channel: Channel::Import,
        source: source.to_owned(),
        external_id: Some(external_id),
        received_at: Utc::now(),
        default_region: Some(region.to_owned()),
        contact: mapped.contact,
        message: mapped.message,
        utm: mapped.utm,
        fields: mapped.fields,
        attachments: Vec::new(),
        spam: None,
        dedup: None,
        raw: RawPayload {
            content_type: Some("text/csv".into()),
            body: raw.into(),
        },
    }
}

/// The first 16 hex digits of the file's SHA-256: the same file gives the same lead ids.
fn file_fingerprint(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("Cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("Cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let digest = hasher.finalize();
    Ok(digest
        .iter()
        .take(8)
        .fold(String::with_capacity(16), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        }))
}

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let config = &settings.database;
    let advice = || {
        format!(
            "Cannot use the database at {}: start PostgreSQL (bash scripts/services.sh) or fix \
             database.url (LEADPIPE__DATABASE__URL)",
            without_credentials(&config.url)
        )
    };
    let store = Store::connect_lazy(config)?;
    if config.migrate_on_start {
        // As `serve` does: a fresh installation can import before the daemon first ran.
        store::ensure_database(&config.url)
            .await
            .with_context(advice)?;
        store.migrate().await.with_context(advice)?;
    } else {
        store.ping().await.with_context(advice)?;
    }
    Ok(store)
}

/// A URL fit for messages: no user name or password.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

fn progress_bar(length: u64) -> ProgressBar {
    // indicatif draws on stderr and stays silent when that is not a terminal.
    let bar = ProgressBar::new(length);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn print_summary(kind: ImportKind, file_name: &str, tally: &Tally, took: Duration) {
    let rows = tally.read - tally.blank;
    println!(
        "Imported {} from {file_name} in {:.1} s.",
        kind.as_str(),
        took.as_secs_f64()
    );
    println!("  rows read:  {rows}");
    match kind {
        ImportKind::Leads => println!(
            "  published:  {} (the daemon's consumers file them as leads; rows published \
             before are not filed twice)",
            tally.done
        ),
        _ => println!("  stored:     {}", tally.done),
    }
    println!("  skipped:    {}", tally.bad.len());
    if tally.blank > 0 {
        println!("  blank rows ignored: {}", tally.blank);
    }
    if tally.bad.is_empty() {
        return;
    }
    println!("Rows not imported:");
    for (line, why) in tally.bad.iter().take(SHOWN_BAD_ROWS) {
        println!("  line {line}: {why}");
    }
    if tally.bad.len() > SHOWN_BAD_ROWS {
        println!("  ... and {} more", tally.bad.len() - SHOWN_BAD_ROWS);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Each good row's cells and raw bytes, by line.
    type RowsByLine = HashMap<usize, (Vec<String>, Vec<u8>)>;

    /// A file for one test, removed when the test ends.
    struct TempCsv(PathBuf);

    impl std::ops::Deref for TempCsv {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempCsv {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn csv_file(name: &str, contents: &[u8]) -> TempCsv {
        let path = std::env::temp_dir().join(format!(
            "leadpipe-import-{}-{name}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, contents).unwrap();
        TempCsv(path)
    }

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

    #[test]
    fn a_contact_row_takes_every_email_and_phone_column_and_semicolon_lists() {
        let fields = [
            Field::FirstName,
            Field::LastName,
            Field::Email,
            Field::Phone,
            Field::Email,
            Field::CompanyId,
        ];
        let cells = [
            "Niccolò",
            "Fabbri",
            "Niccolo@Example.IT; n.fabbri@fabbri.example.it",
            "02 8736 1234",
            "info@fabbri.example.it",
            " 7 ",
        ];
        let contact = contact_row(&fields, &cells, Some("IT")).unwrap();
        assert_eq!(contact.name.as_deref(), Some("Niccolò Fabbri"));
        let emails: Vec<&str> = contact.emails.iter().map(|e| e.as_str()).collect();
        assert_eq!(
            emails,
            [
                "niccolo@example.it",
                "n.fabbri@fabbri.example.it",
                "info@fabbri.example.it"
            ]
        );
        assert_eq!(contact.phones[0].as_str(), "+390287361234");
        assert_eq!(contact.company_id, Some(7));
    }

    #[test]
    fn a_bad_contact_row_names_the_value_and_what_is_wrong() {
        let fields = [Field::Name, Field::Email, Field::Phone, Field::CompanyId];
        let bad_email = contact_row(&fields, &["Ada", "ada.example.com", "", ""], None);
        assert_eq!(
            bad_email.unwrap_err(),
            "email `ada.example.com`: no @ in the address"
        );
        let no_region = contact_row(&fields, &["Ada", "", "347 123 4567", ""], None);
        assert_eq!(
            no_region.unwrap_err(),
            "phone `347 123 4567`: no country code and no default region (give --default-region)"
        );
        let nothing = contact_row(&fields, &["Ada", "", "", ""], None);
        assert_eq!(nothing.unwrap_err(), "no email address or phone number");
        let company = contact_row(&fields, &["Ada", "a@example.com", "", "nove"], None);
        assert_eq!(company.unwrap_err(), "company_id `nove` is not a number");
    }

    #[test]
    fn a_lead_row_becomes_an_import_inquiry_whose_id_depends_on_file_and_line() {
        let names: Vec<String> = [
            "nome",
            "cognome",
            "telefono",
            "azienda",
            "utm_source",
            "prodotto",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let columns = Columns {
            fields: names
                .iter()
                .map(|n| field_of(n, ImportKind::Leads))
                .collect(),
            names,
        };
        let cells = [
            "Sofia",
            "Esposito",
            "02 8736 1234",
            "Esposito Design",
            "fiera",
            "",
        ];
        let inquiry = lead_inquiry(
            &columns,
            &cells,
            4,
            b"raw".to_vec(),
            "IT",
            "import:x.csv",
            "0123456789abcdef",
        );
        assert_eq!(inquiry.channel, Channel::Import);
        assert_eq!(inquiry.external_id.as_deref(), Some("0123456789abcdef:4"));
        assert_eq!(
            inquiry.id,
            InquiryId::from_external(Channel::Import, "import:x.csv", "0123456789abcdef:4")
        );
        assert_eq!(inquiry.contact.first_name.as_deref(), Some("Sofia"));
        assert_eq!(inquiry.contact.phone.as_deref(), Some("02 8736 1234"));
        assert_eq!(inquiry.contact.company.as_deref(), Some("Esposito Design"));
        assert_eq!(
            inquiry.utm.get("utm_source").map(String::as_str),
            Some("fiera")
        );
        assert!(inquiry.fields.is_empty(), "blank cells are left out");
        assert_eq!(inquiry.raw.content_type.as_deref(), Some("text/csv"));
        assert_eq!(inquiry.default_region.as_deref(), Some("IT"));
    }

    #[test]
    fn urls_in_messages_carry_no_credentials() {
        assert_eq!(
            without_credentials("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(
            without_credentials("postgres://127.0.0.1/x"),
            "postgres://127.0.0.1/x"
        );
    }

    #[test]
    fn the_fingerprint_is_16_hex_digits_of_the_content() {
        let a = csv_file("a.csv", b"email\nx@example.com\n");
        let b = csv_file("b.csv", b"email\nx@example.com\n");
        let fingerprint = file_fingerprint(&a).unwrap();
        assert_eq!(fingerprint.len(), 16);
        assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fingerprint, file_fingerprint(&b).unwrap());
    }
}
