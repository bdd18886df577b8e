//! Contacts and companies: rows parsed on the reading thread, written in bulk batches.

use std::fmt::Write as _;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use indicatif::ProgressBar;
use ingest::FieldProblem;
use normalizer::{InvalidPhone, KeyRules, Region, join_name};
use router::backoff::Backoff;
use store::clients::IMPORT_BATCH;
use store::{ImportReport, NewCompany, NewContact, StoreError};
use tokio::sync::mpsc;

use super::file::{Chunk, CsvFile, LineTracker, read_rows};
use super::mapping::{Field, first, values};
use super::{ImportKind, Tally, finish, open_store};
use crate::clients::{CompanyInput, ContactInput, parse_company, parse_contact};
use crate::settings::Settings;

/// Attempts to write one batch while the database is unavailable.
const STORE_ATTEMPTS: u32 = 5;

/// Contacts or companies: parsed on the reading thread, written in bulk batches.
pub(super) async fn import_clients(
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
    let key_rules = settings.key_rules()?;
    let store = open_store(settings).await?;
    let region_code = region.map(|r| r.as_str().to_owned());
    let result = match kind {
        ImportKind::Contacts => {
            let parse = move |cells: &[&str]| {
                contact_row(&columns.fields, cells, region_code.as_deref(), &key_rules)
            };
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
                                "running the same import again finds the companies stored so \
                                 far and does not create them twice"
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
            tally.present += report.present;
            tally.updated += report.updated;
            tally.bad.extend(report.skipped);
        }
        bar.set_position(chunk.end.max(bar.position()));
    }
    Ok(tally)
}

fn contact_row(
    fields: &[Field],
    cells: &[&str],
    region: Option<&str>,
    rules: &KeyRules,
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
    parse_contact(input, rules).map_err(|problems| describe(&problems, &emails, &phones, region))
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let contact = contact_row(&fields, &cells, Some("IT"), KeyRules::builtin()).unwrap();
        assert_eq!(contact.name.as_deref(), Some("Niccolò Fabbri"));
        let emails: Vec<&str> = contact.emails.iter().map(|e| e.as_str()).collect();
        assert_eq!(emails, ["niccolo@example.it", "n.fabbri@fabbri.example.it"]);
        // The firm's shared mailbox stays on the contact but is no key.
        let shared: Vec<&str> = contact.shared_emails.iter().map(|e| e.as_str()).collect();
        assert_eq!(shared, ["info@fabbri.example.it"]);
        assert_eq!(contact.phones[0].as_str(), "+390287361234");
        assert_eq!(contact.company_id, Some(7));
    }

    #[test]
    fn a_bad_contact_row_names_the_value_and_what_is_wrong() {
        let fields = [Field::Name, Field::Email, Field::Phone, Field::CompanyId];
        let bad_email = contact_row(
            &fields,
            &["Ada", "ada.example.com", "", ""],
            None,
            KeyRules::builtin(),
        );
        assert_eq!(
            bad_email.unwrap_err(),
            "email `ada.example.com`: no @ in the address"
        );
        let no_region = contact_row(
            &fields,
            &["Ada", "", "347 123 4567", ""],
            None,
            KeyRules::builtin(),
        );
        assert_eq!(
            no_region.unwrap_err(),
            "phone `347 123 4567`: no country code and no default region (give --default-region)"
        );
        let nothing = contact_row(&fields, &["Ada", "", "", ""], None, KeyRules::builtin());
        assert_eq!(nothing.unwrap_err(), "no email address or phone number");
        let company = contact_row(
            &fields,
            &["Ada", "a@example.com", "", "nove"],
            None,
            KeyRules::builtin(),
        );
        assert_eq!(company.unwrap_err(), "company_id `nove` is not a number");
    }
}
