//! `leadpipe import`: contacts, companies or leads from a CSV file.
//!
//! Contacts and companies go straight to PostgreSQL in bulk ([`store::Store::import_contacts`]
//! writes a few array statements per 2,000 rows). Leads take the road every channel
//! takes: each row becomes an [`ingest::Inquiry`] of channel `import`, normalised and
//! published with confirms by the [`crate::pipeline::Pipeline`], and filed by the daemon's
//! consumers. A lead's id comes from the source and the row's values, so importing the
//! same file again files nothing new, and a corrected file only its corrected rows;
//! companies without a domain are found again by their name and phone numbers.
//!
//! A file is read on a blocking thread that parses rows and hands them over in chunks,
//! so parsing one chunk overlaps with writing or publishing the previous one.
//!
//! # Layout
//! - `file`: the CSV file: its header row, rows with their line numbers and raw bytes.
//! - `mapping`: what each column means (the forms' field aliases plus the import's own,
//!   `--map`), and a row's values by field.
//! - `clients`: contacts and companies, written in bulk batches through `store`.
//! - `leads`: rows as inquiries, published through the pipeline.
//! - `report`: the totals and the summary printed at the end.

mod clients;
mod file;
mod leads;
mod mapping;
mod report;

use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use normalizer::Region;
use store::Store;

use crate::settings::Settings;
use clients::import_clients;
use file::{CsvFile, LineTracker, parse_delimiter, read_header};
use leads::import_leads;
use mapping::{parse_maps, used_by};
use report::{Tally, print_summary};

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

/// The configured database, migrated first when `database.migrate_on_start` is on (as
/// `serve` does), so a fresh installation can be used before the daemon first ran.
pub(crate) async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
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
pub(crate) fn without_credentials(url: &str) -> String {
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

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};

    /// A file for one test, removed when the test ends.
    pub(crate) struct TempCsv(PathBuf);

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

    pub(crate) fn csv_file(name: &str, contents: &[u8]) -> TempCsv {
        let path = std::env::temp_dir().join(format!(
            "leadpipe-import-{}-{name}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, contents).unwrap();
        TempCsv(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
