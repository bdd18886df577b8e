//! Leads: every row becomes an inquiry of channel `import`, published through the
//! pipeline with bounded concurrency.
//!
//! A row's inquiry id comes from the source and the row's values as mapped (not from
//! the column order, the line or the rest of the file), so a corrected file files only
//! its corrected rows. Before publishing, the rows filed already are looked up and left
//! out; without the database every row is published and the consumers' unique inquiry
//! id keeps each filed once.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
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
use router::LeadRouter;
use router::backoff::Backoff;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use store::Store;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::file::Chunk;
use super::file::{CsvFile, read_rows};
use super::mapping::Columns;
use super::{Tally, finish, without_credentials};
use crate::pipeline::{CommandPublisher, Pipeline};
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
    let key_rules = settings.key_rules()?;
    let fingerprint = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || file_fingerprint(&path))
            .await
            .map_err(|e| anyhow!("hashing the file stopped unexpectedly: {e}"))??
    };

    let broker = CommandPublisher::connect(&settings.amqp).await?;
    let publisher = broker.publisher.clone();
    let pipeline = Arc::new(
        Pipeline::new(LeadRouter::new(settings.routing.clone()), publisher.clone())
            .with_key_rules(key_rules),
    );

    let (tx, rx) = mpsc::channel(2);
    let reading = {
        let region = region.as_str().to_owned();
        // Identical rows are one inquiry: the first is published, the others named.
        let mut seen: HashMap<InquiryId, usize> = HashMap::new();
        tokio::task::spawn_blocking(move || {
            read_rows(reader, lines, LEADS_CHUNK, true, tx, |line, cells, raw| {
                let inquiry = lead_inquiry(&columns, cells, raw, &region, &source)?;
                match seen.entry(inquiry.id) {
                    Entry::Occupied(first) => Err(format!(
                        "the same values as line {}: one inquiry, filed once",
                        first.get()
                    )),
                    Entry::Vacant(slot) => {
                        slot.insert(line);
                        Ok(LeadRow {
                            line_id: line_based_id(&source, &fingerprint, line),
                            inquiry,
                        })
                    }
                }
            })
        })
    };
    let filed = FiledCheck::new(settings);
    let published = publish_rows(rx, pipeline, filed, bar).await;
    // Closing waits for the confirms still in flight.
    broker.close().await;
    finish(reading, published).await
}

/// A row to publish.
struct LeadRow {
    inquiry: Inquiry,
    /// The id the row had when ids came from the file's hash and the line, so that a
    /// file imported that way is recognised as filed.
    line_id: InquiryId,
}

/// Asks the database which rows are filed already, until it cannot answer.
struct FiledCheck {
    store: Option<Store>,
    url: String,
    /// Why it stopped asking.
    failed: Option<String>,
}

impl FiledCheck {
    fn new(settings: &Settings) -> Self {
        let url = without_credentials(&settings.database.url);
        match Store::connect_lazy(&settings.database) {
            Ok(store) => Self {
                store: Some(store),
                url,
                failed: None,
            },
            Err(error) => Self {
                store: None,
                failed: Some(format!("the database at {url}: {error}")),
                url,
            },
        }
    }

    /// Which of the rows are filed already. When the database cannot answer, none are
    /// taken as filed and later chunks are not asked about: publishing a filed row again
    /// files nothing.
    async fn filed(&mut self, rows: &[(usize, LeadRow)]) -> HashSet<InquiryId> {
        let Some(store) = &self.store else {
            return HashSet::new();
        };
        let ids: Vec<InquiryId> = rows
            .iter()
            .flat_map(|(_, row)| [row.inquiry.id, row.line_id])
            .collect();
        match store.filed_inquiries(&ids).await {
            Ok(filed) => filed,
            Err(error) => {
                tracing::warn!(%error, "Cannot check which rows were filed before; publishing every row.");
                self.failed = Some(format!("the database at {}: {error}", self.url));
                if let Some(store) = self.store.take() {
                    store.close().await;
                }
                HashSet::new()
            }
        }
    }

    async fn close(self) {
        if let Some(store) = self.store {
            store.close().await;
        }
    }
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
    mut rx: mpsc::Receiver<Chunk<LeadRow>>,
    pipeline: Arc<Pipeline>,
    mut filed: FiledCheck,
    bar: &ProgressBar,
) -> anyhow::Result<Tally> {
    let mut state = Publishing::default();
    let mut in_flight: JoinSet<(usize, Published)> = JoinSet::new();
    'reading: while let Some(mut chunk) = rx.recv().await {
        state.tally.take(&mut chunk);
        let known = filed.filed(&chunk.rows).await;
        for (line, row) in chunk.rows {
            if known.contains(&row.inquiry.id) || known.contains(&row.line_id) {
                state.tally.present += 1;
                continue;
            }
            let inquiry = row.inquiry;
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
    state.tally.unchecked = filed.failed.take();
    filed.close().await;
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

/// One row as an inquiry, the way a web form's post becomes one, with the id of its
/// values ([`row_external_id`]).
fn lead_inquiry(
    columns: &Columns,
    cells: &[&str],
    raw: Vec<u8>,
    region: &str,
    source: &str,
) -> Result<Inquiry, String> {
    let pairs: Vec<(String, String)> = columns
        .names
        .iter()
        .zip(cells)
        .map(|(name, cell)| (name, cell.trim()))
        .filter(|(_, cell)| !cell.is_empty())
        .map(|(name, cell)| (name.clone(), cell.to_owned()))
        .collect();
    let external_id = row_external_id(&pairs, region)
        .map_err(|e| format!("cannot make the row's id from its values: {e}"))?;
    let mapped = map_fields(as_values(pairs), None);
    Ok(Inquiry {
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
        event: None,
    })
}

fn as_values(pairs: Vec<(String, String)>) -> Vec<(String, Value)> {
    pairs
        .into_iter()
        .map(|(name, value)| (name, Value::String(value)))
        .collect()
}

/// What a row's id is made of: its values as mapped, every part in a fixed order.
/// Absent parts are left out, so the ids of stored rows stay as they are when a part
/// is added.
#[derive(Serialize)]
struct RowContent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    full_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    company: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    utm: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    fields: BTreeMap<&'a str, &'a Value>,
    /// Where the row has a phone number, the region it is read with.
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
}

/// `row:` and 32 hex digits of the SHA-256 of the row's values as mapped (trimmed,
/// blanks left out). The columns are mapped in name order here, so that which of two
/// columns of one field comes first does not matter either: the id depends neither on
/// the column order, nor on the line, nor on the rest of the file.
fn row_external_id(pairs: &[(String, String)], region: &str) -> serde_json::Result<String> {
    let mut sorted = pairs.to_vec();
    sorted.sort_unstable();
    let mapped = map_fields(as_values(sorted), None);
    let contact = &mapped.contact;
    let content = RowContent {
        full_name: contact.full_name.as_deref(),
        first_name: contact.first_name.as_deref(),
        last_name: contact.last_name.as_deref(),
        email: contact.email.as_deref(),
        phone: contact.phone.as_deref(),
        company: contact.company.as_deref(),
        message: mapped.message.as_deref(),
        utm: &mapped.utm,
        fields: mapped.fields.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        region: contact.phone.as_ref().map(|_| region),
    };
    let json = serde_json::to_vec(&content)?;
    Ok(format!("row:{}", hex(&Sha256::digest(json)[..16])))
}

/// The id a row had when ids came from the file's fingerprint and the line.
fn line_based_id(source: &str, fingerprint: &str, line: usize) -> InquiryId {
    InquiryId::from_external(Channel::Import, source, &format!("{fingerprint}:{line}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// The first 16 hex digits of the file's SHA-256, which with the line made a row's id
/// before ids came from the rows' values.
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
    Ok(hex(&hasher.finalize()[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::ImportKind;
    use crate::import::mapping::field_of;
    use crate::import::test_support::csv_file;

    fn columns(names: &[&str]) -> Columns {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        Columns {
            fields: names
                .iter()
                .map(|n| field_of(n, ImportKind::Leads))
                .collect(),
            names,
        }
    }

    /// The inquiry id of a row under source `crm` and region IT.
    fn id_of(names: &[&str], cells: &[&str]) -> InquiryId {
        lead_inquiry(&columns(names), cells, Vec::new(), "IT", "crm")
            .unwrap()
            .id
    }

    #[test]
    fn a_lead_row_becomes_an_import_inquiry_whose_id_comes_from_its_values() {
        let columns = columns(&[
            "nome",
            "cognome",
            "telefono",
            "azienda",
            "utm_source",
            "prodotto",
        ]);
        let cells = [
            "Sofia",
            "Esposito",
            " 02 8736 1234",
            "Esposito Design",
            "fiera",
            "",
        ];
        let inquiry =
            lead_inquiry(&columns, &cells, b"raw".to_vec(), "IT", "import:x.csv").unwrap();
        assert_eq!(inquiry.channel, Channel::Import);
        let external_id = inquiry.external_id.clone().unwrap();
        assert!(
            external_id.starts_with("row:") && external_id.len() == 4 + 32,
            "{external_id}"
        );
        assert_eq!(
            inquiry.id,
            InquiryId::from_external(Channel::Import, "import:x.csv", &external_id)
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
    fn a_row_id_changes_with_its_values_and_source_but_not_with_column_order_or_spacing() {
        let names = ["nome", "email", "messaggio", "prodotto"];
        let cells = ["Ada", "ada@example.it", "Preventivo", "sedie"];
        let id = id_of(&names, &cells);

        // Column order, spacing around values, blank extra columns, aliases of one field.
        assert_eq!(
            id,
            id_of(
                &["prodotto", "messaggio", "email", "nome"],
                &["sedie", "Preventivo", "ada@example.it", "Ada"]
            )
        );
        assert_eq!(
            id,
            id_of(
                &names,
                &[" Ada ", "ada@example.it\t", "Preventivo", "sedie"]
            )
        );
        assert_eq!(
            id,
            id_of(
                &["nome", "email", "note", "messaggio", "prodotto"],
                &["Ada", "ada@example.it", "", "Preventivo", "sedie"]
            )
        );
        assert_eq!(
            id,
            id_of(&["first_name", "e-mail", "message", "prodotto"], &cells)
        );
        // Two columns of one field: which comes first does not matter.
        let two = id_of(
            &["nome", "email", "e-mail"],
            &["Ada", "ada@example.it", "ada@studio.example.it"],
        );
        assert_eq!(
            two,
            id_of(
                &["e-mail", "nome", "email"],
                &["ada@studio.example.it", "Ada", "ada@example.it"]
            )
        );

        // Any other value, or a custom field under another name, is another inquiry.
        assert_ne!(
            id,
            id_of(&names, &["Ada", "ada@example.it", "Preventivo!", "sedie"])
        );
        assert_ne!(
            id,
            id_of(&["nome", "email", "messaggio", "modello"], &cells)
        );
        let other_source = lead_inquiry(&columns(&names), &cells, Vec::new(), "IT", "web")
            .unwrap()
            .id;
        assert_ne!(id, other_source);

        // The region reads phone numbers: it counts only for a row that has one.
        let without_phone = lead_inquiry(&columns(&names), &cells, Vec::new(), "FR", "crm")
            .unwrap()
            .id;
        assert_eq!(id, without_phone);
        let phone = |region: &str| {
            lead_inquiry(
                &columns(&["nome", "telefono"]),
                &["Ada", "02 8736 1234"],
                Vec::new(),
                region,
                "crm",
            )
            .unwrap()
            .id
        };
        assert_ne!(phone("IT"), phone("FR"));
    }

    #[test]
    fn row_ids_stay_the_same_from_one_version_to_the_next() {
        // Stored inquiries carry these ids: a change here files every imported row again.
        // The SHA-256 of {"first_name":"Ada","email":"ada@example.it","phone":"02 8736 1234",
        // "utm":{"utm_source":"fiera"},"fields":{"prodotto":"sedie"},"region":"IT"}.
        let inquiry = lead_inquiry(
            &columns(&["nome", "email", "telefono", "utm_source", "prodotto"]),
            &["Ada", "ada@example.it", "02 8736 1234", "fiera", "sedie"],
            Vec::new(),
            "IT",
            "crm",
        )
        .unwrap();
        assert_eq!(
            inquiry.external_id.as_deref(),
            Some("row:04f79697fb9782af1cfd5a20b763b015")
        );
    }

    #[test]
    fn the_line_based_id_is_the_fingerprint_and_the_line() {
        assert_eq!(
            line_based_id("import:x.csv", "0123456789abcdef", 4),
            InquiryId::from_external(Channel::Import, "import:x.csv", "0123456789abcdef:4")
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
        let digest = Sha256::digest(b"email\nx@example.com\n");
        assert_eq!(fingerprint, hex(&digest[..8]));
    }
}
