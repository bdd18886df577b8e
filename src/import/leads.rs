//! Leads: every row becomes an inquiry of channel `import`, published through the
//! pipeline with bounded concurrency.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use indicatif::ProgressBar;
use ingest::forms::fields::map_fields;
use ingest::{Channel, FieldProblem, Inquiry, InquiryId, IntakeSink, RawPayload, Refusal};
use normalizer::Region;
use router::backoff::Backoff;
use router::{Publisher, Router};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::file::Chunk;
use super::file::{Columns, CsvFile, read_rows};
use super::{Tally, finish, without_credentials};
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

/// Leads: every row becomes an inquiry, published through the pipeline with bounded
/// concurrency.
pub(super) async fn import_leads(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::ImportKind;
    use crate::import::file::field_of;
    use crate::import::test_support::csv_file;

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
    fn the_fingerprint_is_16_hex_digits_of_the_content() {
        let a = csv_file("a.csv", b"email\nx@example.com\n");
        let b = csv_file("b.csv", b"email\nx@example.com\n");
        let fingerprint = file_fingerprint(&a).unwrap();
        assert_eq!(fingerprint.len(), 16);
        assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fingerprint, file_fingerprint(&b).unwrap());
    }
}
