//! What the file's columns mean: header names mapped to fields with the same aliases as
//! web forms (plus the import's own), `--map` renames, and a row's values by field.

use anyhow::{anyhow, bail};
use ingest::fields::map_fields;
use serde_json::Value;

use super::ImportKind;

/// What one column of the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
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
pub(super) struct Columns {
    /// Header names after `--map`.
    pub(super) names: Vec<String>,
    /// What each column is.
    pub(super) fields: Vec<Field>,
}

/// Applies `--map` to the header names and says what each column is.
pub(super) fn apply_maps(
    mut names: Vec<String>,
    kind: ImportKind,
    maps: &[(String, String)],
) -> anyhow::Result<Columns> {
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
pub(super) fn field_of(header: &str, kind: ImportKind) -> Field {
    let squashed: String = header
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    match kind {
        ImportKind::Contacts if squashed == "companyid" => return Field::CompanyId,
        ImportKind::Companies if ingest::fields::is_website_field(header) => {
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
pub(super) fn used_by(kind: ImportKind, field: Field) -> bool {
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
pub(super) fn parse_maps(
    maps: &[String],
    kind: ImportKind,
) -> anyhow::Result<Vec<(String, String)>> {
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

/// The values of a row's columns of `field`, `;`-separated lists split, blanks dropped.
pub(super) fn values<'a>(fields: &[Field], cells: &[&'a str], field: Field) -> Vec<&'a str> {
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
pub(super) fn first<'a>(fields: &[Field], cells: &[&'a str], field: Field) -> Option<&'a str> {
    fields
        .iter()
        .zip(cells)
        .filter(|(f, _)| **f == field)
        .map(|(_, cell)| cell.trim())
        .find(|v| !v.is_empty())
}
