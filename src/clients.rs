//! Contacts and companies as a person typed them (an API request, a CSV row), parsed at
//! the edge with the same rules as inquiries, so a contact created by hand or imported
//! matches the leads its person sends.

use ingest::FieldProblem;
use normalizer::company::domain_key;
use normalizer::{EmailAddress, KeyRules, PhoneE164, Region, clean_text, parse_phone};
use serde::Deserialize;
use store::{NewCompany, NewContact};

/// A contact as typed.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    /// Name as typed.
    #[serde(default)]
    pub name: Option<String>,
    /// Email addresses.
    #[serde(default)]
    pub emails: Vec<String>,
    /// Phone numbers; without a country code they need `default_region`.
    #[serde(default)]
    pub phones: Vec<String>,
    /// The contact's company.
    #[serde(default)]
    pub company_id: Option<i64>,
    /// ISO 3166-1 alpha-2 region for phone numbers without a country code.
    #[serde(default)]
    pub default_region: Option<String>,
}

/// A company as typed.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanyInput {
    /// Name as written.
    pub name: String,
    /// Its website or domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Phone numbers; without a country code they need `default_region`.
    #[serde(default)]
    pub phones: Vec<String>,
    /// ISO 3166-1 alpha-2 region for phone numbers without a country code.
    #[serde(default)]
    pub default_region: Option<String>,
}

fn region(raw: Option<&str>, problems: &mut Vec<FieldProblem>) -> Option<Region> {
    let raw = raw?;
    match Region::parse(raw) {
        Ok(region) => Some(region),
        Err(e) => {
            problems.push(FieldProblem {
                field: "default_region".into(),
                problem: e.to_string(),
            });
            None
        }
    }
}

fn phones(
    raw: &[String],
    region: Option<Region>,
    problems: &mut Vec<FieldProblem>,
) -> Vec<PhoneE164> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, p)| match parse_phone(p, region) {
            Ok(parsed) => Some(parsed.number),
            Err(e) => {
                problems.push(FieldProblem {
                    field: format!("phones[{i}]"),
                    problem: e.to_string(),
                });
                None
            }
        })
        .collect()
}

/// Normalises a contact, or lists every field that cannot be used.
///
/// Addresses the key rules say identify nobody (role mailboxes, placeholders) are kept
/// as the contact's shared addresses rather than as keys.
pub fn parse_contact(
    input: ContactInput,
    rules: &KeyRules,
) -> Result<NewContact, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let region = region(input.default_region.as_deref(), &mut problems);
    let emails: Vec<EmailAddress> = input
        .emails
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match EmailAddress::parse(e) {
            Ok(email) => Some(email),
            Err(err) => {
                problems.push(FieldProblem {
                    field: format!("emails[{i}]"),
                    problem: err.to_string(),
                });
                None
            }
        })
        .collect();
    let phones = phones(&input.phones, region, &mut problems);
    if problems.is_empty() && emails.is_empty() && phones.is_empty() {
        problems.push(FieldProblem {
            field: "emails".into(),
            problem: "a contact needs at least one email address or phone number".into(),
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let (emails, shared_emails) = emails
        .into_iter()
        .partition(|email| rules.person_key(email).is_some());
    Ok(NewContact {
        name: input.name.as_deref().and_then(clean_text),
        emails,
        shared_emails,
        phones,
        company_id: input.company_id,
    })
}

/// Normalises a company, or lists every field that cannot be used.
pub fn parse_company(input: CompanyInput) -> Result<NewCompany, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let region = region(input.default_region.as_deref(), &mut problems);
    let name = clean_text(&input.name);
    if name.is_none() {
        problems.push(FieldProblem {
            field: "name".into(),
            problem: "must not be empty".into(),
        });
    }
    let domain = match input.domain.as_deref().filter(|d| !d.trim().is_empty()) {
        None => None,
        Some(raw) => match domain_key(raw) {
            Some(domain) => Some(domain),
            None => {
                problems.push(FieldProblem {
                    field: "domain".into(),
                    problem: format!(
                        "`{raw}` is not a company domain (invalid, or a free-mail provider)"
                    ),
                });
                None
            }
        },
    };
    let phones = phones(&input.phones, region, &mut problems);
    match name {
        Some(name) if problems.is_empty() => Ok(NewCompany {
            name,
            domain,
            phones,
        }),
        _ => Err(problems),
    }
}
