//! Clients: contacts (people) and companies, and the identity keys that recognise them.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use normalizer::company::company_key;
use normalizer::{EmailAddress, PhoneE164};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use crate::{Store, StoreError};

/// A contact to create; values are already normalised.
#[derive(Debug, Clone, Default)]
pub struct NewContact {
    /// The person's name as typed.
    pub name: Option<String>,
    /// Email addresses (each identifies this person).
    pub emails: Vec<EmailAddress>,
    /// Phone numbers (each identifies this person).
    pub phones: Vec<PhoneE164>,
    /// The company the person works for.
    pub company_id: Option<i64>,
}

/// A company to create; values are already normalised.
#[derive(Debug, Clone, Default)]
pub struct NewCompany {
    /// The company name as written.
    pub name: String,
    /// Its own domain (canonical, not a free-mail one).
    pub domain: Option<String>,
    /// Its phone numbers.
    pub phones: Vec<PhoneE164>,
}

/// A stored contact.
#[derive(Debug, Clone, Serialize)]
pub struct ContactView {
    /// Contact id.
    pub id: i64,
    /// Name.
    pub name: Option<String>,
    /// Normalised email addresses.
    pub emails: Vec<String>,
    /// E.164 phone numbers.
    pub phones: Vec<String>,
    /// Company.
    pub company_id: Option<i64>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A stored company.
#[derive(Debug, Clone, Serialize)]
pub struct CompanyView {
    /// Company id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Its own domain.
    pub domain: Option<String>,
    /// E.164 phone numbers.
    pub phones: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Paging and filters for client lists.
#[derive(Debug, Clone, Default)]
pub struct ClientQuery {
    /// Only the client holding this key (`email:...`, `phone:...`, `domain:...`).
    pub key: Option<String>,
    /// Continue after this id.
    pub cursor: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// One page of clients, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct ClientPage<T> {
    /// The clients.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// Rows per transaction in [`Store::import_contacts`] and [`Store::import_companies`]:
/// large enough that the four statements of a batch cost little per row, small enough
/// that a batch's arrays stay a few hundred kilobytes.
pub const IMPORT_BATCH: usize = 2_000;

/// What a bulk import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Rows stored.
    pub inserted: u64,
    /// Rows not stored: the line they came from and why, in line order per batch.
    pub skipped: Vec<(usize, String)>,
}

impl ImportReport {
    fn absorb(&mut self, other: ImportReport) {
        self.inserted += other.inserted;
        self.skipped.extend(other.skipped);
    }
}

const CONTACT_COLUMNS: &str = "SELECT c.id, c.name, c.company_id, c.created_at, c.updated_at,
        COALESCE(array_agg(ci.value ORDER BY ci.key) FILTER (WHERE ci.kind = 'email'), '{}') AS emails,
        COALESCE(array_agg(ci.value ORDER BY ci.key) FILTER (WHERE ci.kind = 'phone'), '{}') AS phones
     FROM contacts c LEFT JOIN contact_identities ci ON ci.contact_id = c.id";

fn contact_from_row(row: &PgRow) -> Result<ContactView, sqlx::Error> {
    Ok(ContactView {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        emails: row.try_get("emails")?,
        phones: row.try_get("phones")?,
        company_id: row.try_get("company_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn company_from_row(row: &PgRow) -> Result<CompanyView, sqlx::Error> {
    Ok(CompanyView {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        domain: row.try_get("domain")?,
        phones: row.try_get("phones")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The person keys of a new contact: `(key, kind, value)`.
fn contact_keys(contact: &NewContact) -> Vec<(String, &'static str, String)> {
    let mut keys: Vec<(String, &'static str, String)> = contact
        .emails
        .iter()
        .map(|e| {
            (
                format!("email:{}", e.as_str()),
                "email",
                e.as_str().to_owned(),
            )
        })
        .chain(contact.phones.iter().map(|p| {
            (
                format!("phone:{}", p.as_str()),
                "phone",
                p.as_str().to_owned(),
            )
        }))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The company keys of a new company.
fn company_keys(company: &NewCompany) -> Vec<String> {
    let mut keys: Vec<String> = company
        .domain
        .iter()
        .map(|d| format!("domain:{d}"))
        .chain(company_key(&company.name).map(|k| format!("name:{k}")))
        .chain(
            company
                .phones
                .iter()
                .map(|p| format!("phone:{}", p.as_str())),
        )
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

async fn insert_contact(
    tx: &mut Transaction<'_, Postgres>,
    contact: &NewContact,
) -> Result<i64, StoreError> {
    let id: i64 =
        sqlx::query_scalar("INSERT INTO contacts (name, company_id) VALUES ($1, $2) RETURNING id")
            .bind(contact.name.as_deref())
            .bind(contact.company_id)
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::NotFound(_) => StoreError::NotFound(format!(
                    "company {} does not exist",
                    contact.company_id.unwrap_or_default()
                )),
                other => other,
            })?;
    let keys = contact_keys(contact);
    let (names, (kinds, values)): (Vec<String>, (Vec<&str>, Vec<String>)) =
        keys.into_iter().map(|(k, kind, v)| (k, (kind, v))).unzip();
    // A key that belongs to someone else names its owner, so the caller can say who.
    let taken: Option<(String, i64)> = sqlx::query_as(
        "SELECT key, contact_id FROM contact_identities WHERE key = ANY($1) ORDER BY key LIMIT 1",
    )
    .bind(&names)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some((key, owner)) = taken {
        return Err(StoreError::Conflict(format!(
            "{key} already belongs to contact {owner}"
        )));
    }
    sqlx::query(
        "INSERT INTO contact_identities (key, contact_id, kind, value)
         SELECT k, $4, kind, v FROM unnest($1::text[], $2::text[], $3::text[]) AS t(k, kind, v)",
    )
    .bind(&names)
    .bind(&kinds)
    .bind(&values)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

impl Store {
    /// Creates a contact with its identity keys; a key owned by another contact is a
    /// [`StoreError::Conflict`] naming the owner.
    pub async fn create_contact(&self, contact: &NewContact) -> Result<ContactView, StoreError> {
        let mut tx = self.pool().begin().await?;
        let id = insert_contact(&mut tx, contact).await?;
        tx.commit().await?;
        self.get_contact(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("contact {id}")))
    }

    /// Creates many contacts, [`IMPORT_BATCH`] rows per transaction, with a handful of
    /// array statements per batch. A row is skipped, with its line and the reason, when
    /// its company does not exist or one of its keys belongs to a stored contact or to an
    /// earlier row (the first row holding a key wins).
    pub async fn import_contacts(
        &self,
        contacts: &[(usize, NewContact)],
    ) -> Result<ImportReport, StoreError> {
        self.import_in_batches(contacts).await
    }

    /// One contact.
    pub async fn get_contact(&self, id: i64) -> Result<Option<ContactView>, StoreError> {
        let sql = format!("{CONTACT_COLUMNS} WHERE c.id = $1 GROUP BY c.id");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(contact_from_row).transpose()?)
    }

    /// Contacts, newest first, optionally the one holding a key.
    pub async fn list_contacts(
        &self,
        query: &ClientQuery,
    ) -> Result<ClientPage<ContactView>, StoreError> {
        let limit = query.limit.clamp(1, 500);
        let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(CONTACT_COLUMNS);
        sql.push(" WHERE true");
        if let Some(key) = &query.key {
            sql.push(" AND c.id IN (SELECT contact_id FROM contact_identities WHERE key = ")
                .push_bind(key.clone())
                .push(")");
        }
        if let Some(cursor) = query.cursor {
            sql.push(" AND c.id < ").push_bind(cursor);
        }
        sql.push(" GROUP BY c.id ORDER BY c.id DESC LIMIT ")
            .push_bind(limit + 1);
        let rows = sql.build().fetch_all(self.pool()).await?;
        let mut items = rows
            .iter()
            .map(contact_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(&mut items, limit, |c| c.id))
    }

    /// Creates a company with its keys (domain, folded name, phones).
    pub async fn create_company(&self, company: &NewCompany) -> Result<CompanyView, StoreError> {
        let mut tx = self.pool().begin().await?;
        let id = insert_company(&mut tx, company).await?;
        tx.commit().await?;
        self.get_company(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("company {id}")))
    }

    /// Creates many companies, [`IMPORT_BATCH`] rows per transaction, with a handful of
    /// array statements per batch. A row whose domain a stored company or an earlier row
    /// already has is skipped with its line and the reason, so importing a file twice
    /// does not double the companies that have a domain; names may be shared.
    pub async fn import_companies(
        &self,
        companies: &[(usize, NewCompany)],
    ) -> Result<ImportReport, StoreError> {
        self.import_in_batches(companies).await
    }

    /// One company.
    pub async fn get_company(&self, id: i64) -> Result<Option<CompanyView>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, domain, phones, created_at, updated_at FROM companies WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(company_from_row).transpose()?)
    }

    /// Companies, newest first, optionally those holding a key.
    pub async fn list_companies(
        &self,
        query: &ClientQuery,
    ) -> Result<ClientPage<CompanyView>, StoreError> {
        let limit = query.limit.clamp(1, 500);
        let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "SELECT id, name, domain, phones, created_at, updated_at FROM companies WHERE true",
        );
        if let Some(key) = &query.key {
            sql.push(" AND id IN (SELECT company_id FROM company_identities WHERE key = ")
                .push_bind(key.clone())
                .push(")");
        }
        if let Some(cursor) = query.cursor {
            sql.push(" AND id < ").push_bind(cursor);
        }
        sql.push(" ORDER BY id DESC LIMIT ").push_bind(limit + 1);
        let rows = sql.build().fetch_all(self.pool()).await?;
        let mut items = rows
            .iter()
            .map(company_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(&mut items, limit, |c| c.id))
    }
}

async fn insert_company(
    tx: &mut Transaction<'_, Postgres>,
    company: &NewCompany,
) -> Result<i64, StoreError> {
    let phones: Vec<String> = company
        .phones
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO companies (name, domain, phones) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(&company.name)
    .bind(company.domain.as_deref())
    .bind(&phones)
    .fetch_one(&mut **tx)
    .await?;
    let keys = company_keys(company);
    sqlx::query(
        "INSERT INTO company_identities (key, company_id)
         SELECT k, $2 FROM unnest($1::text[]) AS t(k) ON CONFLICT DO NOTHING",
    )
    .bind(&keys)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Runs a batch again when it lost a race: another writer took a key between the
/// batch's look-up and its insert (the unique index refused the batch, which rolled
/// back). The next attempt sees that key as taken and skips its row.
/// Rows that are imported a batch per transaction.
trait BatchImport: Sized {
    /// Files one batch inside `tx`.
    async fn file_batch(
        tx: &mut Transaction<'_, Postgres>,
        batch: &[(usize, Self)],
    ) -> Result<ImportReport, StoreError>;
}

impl BatchImport for NewContact {
    async fn file_batch(
        tx: &mut Transaction<'_, Postgres>,
        batch: &[(usize, Self)],
    ) -> Result<ImportReport, StoreError> {
        import_contact_batch(tx, batch).await
    }
}

impl BatchImport for NewCompany {
    async fn file_batch(
        tx: &mut Transaction<'_, Postgres>,
        batch: &[(usize, Self)],
    ) -> Result<ImportReport, StoreError> {
        import_company_batch(tx, batch).await
    }
}

impl Store {
    /// Files rows [`IMPORT_BATCH`] at a time, one transaction each. A batch that loses a
    /// race for a key (a concurrent writer took it after the look-up) is run again, up to
    /// three times, and then sees the key as taken.
    async fn import_in_batches<T: BatchImport>(
        &self,
        rows: &[(usize, T)],
    ) -> Result<ImportReport, StoreError> {
        let mut report = ImportReport::default();
        for batch in rows.chunks(IMPORT_BATCH) {
            let mut tries = 0;
            let done = loop {
                tries += 1;
                let attempt = async {
                    let mut tx = self.pool().begin().await?;
                    let done = T::file_batch(&mut tx, batch).await?;
                    tx.commit().await?;
                    Ok(done)
                };
                match attempt.await {
                    Err(StoreError::Conflict(_)) if tries < 3 => continue,
                    other => break other?,
                }
            };
            report.absorb(done);
        }
        Ok(report)
    }
}

/// Why a row was kept out of a batch.
enum Verdict {
    /// It is stored.
    Insert,
    /// It is not, for this reason.
    Skip(String),
    /// One of its keys is held by an earlier row of the batch (an index into the batch);
    /// the reason names that row's new id once it has one.
    SameAs(String, usize),
}

/// Files one batch of contacts inside `tx`: one look-up of taken keys, one of the
/// companies referred to, one insert of the contacts and one of their keys.
async fn import_contact_batch(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[(usize, NewContact)],
) -> Result<ImportReport, StoreError> {
    let keys: Vec<Vec<(String, &'static str, String)>> =
        batch.iter().map(|(_, c)| contact_keys(c)).collect();
    let mut wanted: Vec<&str> = keys.iter().flatten().map(|(k, _, _)| k.as_str()).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let taken: HashMap<String, i64> =
        sqlx::query_as("SELECT key, contact_id FROM contact_identities WHERE key = ANY($1)")
            .bind(&wanted)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();

    let mut company_ids: Vec<i64> = batch.iter().filter_map(|(_, c)| c.company_id).collect();
    company_ids.sort_unstable();
    company_ids.dedup();
    let companies: HashSet<i64> = if company_ids.is_empty() {
        HashSet::new()
    } else {
        // KEY SHARE keeps the companies from being deleted before this batch commits.
        sqlx::query_scalar("SELECT id FROM companies WHERE id = ANY($1) FOR KEY SHARE")
            .bind(&company_ids)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect()
    };

    let mut claimed: HashMap<&str, usize> = HashMap::new();
    let verdicts: Vec<Verdict> = batch
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(index, ((_, contact), keys))| {
            if let Some(company) = contact.company_id.filter(|id| !companies.contains(id)) {
                return Verdict::Skip(format!("company {company} does not exist"));
            }
            if let Some((key, owner)) = keys
                .iter()
                .find_map(|(k, _, _)| taken.get(k).map(|owner| (k, owner)))
            {
                return Verdict::Skip(format!("{key} already belongs to contact {owner}"));
            }
            if let Some((key, first)) = keys
                .iter()
                .find_map(|(k, _, _)| claimed.get(k.as_str()).map(|first| (k, *first)))
            {
                return Verdict::SameAs(key.clone(), first);
            }
            for (key, _, _) in keys {
                claimed.insert(key, index);
            }
            Verdict::Insert
        })
        .collect();

    let chosen: Vec<usize> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| matches!(v, Verdict::Insert))
        .map(|(i, _)| i)
        .collect();
    let mut new_ids: HashMap<usize, i64> = HashMap::with_capacity(chosen.len());
    if !chosen.is_empty() {
        let names: Vec<Option<&str>> = chosen.iter().map(|&i| batch[i].1.name.as_deref()).collect();
        let companies: Vec<Option<i64>> = chosen.iter().map(|&i| batch[i].1.company_id).collect();
        // Rows come back in the order of `ord`, so the n-th id is the n-th chosen row.
        let ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO contacts (name, company_id)
             SELECT name, company_id
             FROM unnest($1::text[], $2::int8[]) WITH ORDINALITY AS t(name, company_id, ord)
             ORDER BY ord
             RETURNING id",
        )
        .bind(&names)
        .bind(&companies)
        .fetch_all(&mut **tx)
        .await?;
        if ids.len() != chosen.len() {
            return Err(StoreError::Rejected(format!(
                "{} contacts inserted for {} rows",
                ids.len(),
                chosen.len()
            )));
        }
        new_ids.extend(chosen.iter().copied().zip(ids));

        let mut key_names = Vec::new();
        let mut owners = Vec::new();
        let mut kinds = Vec::new();
        let mut values = Vec::new();
        for &i in &chosen {
            for (key, kind, value) in &keys[i] {
                key_names.push(key.as_str());
                owners.push(new_ids[&i]);
                kinds.push(*kind);
                values.push(value.as_str());
            }
        }
        sqlx::query(
            "INSERT INTO contact_identities (key, contact_id, kind, value)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[])",
        )
        .bind(&key_names)
        .bind(&owners)
        .bind(&kinds)
        .bind(&values)
        .execute(&mut **tx)
        .await?;
    }

    let mut report = ImportReport {
        inserted: chosen.len() as u64,
        skipped: Vec::new(),
    };
    for ((line, _), verdict) in batch.iter().zip(verdicts) {
        match verdict {
            Verdict::Insert => {}
            Verdict::Skip(why) => report.skipped.push((*line, why)),
            Verdict::SameAs(key, first) => report.skipped.push((
                *line,
                format!(
                    "{key} already belongs to contact {}, imported from line {}",
                    new_ids.get(&first).copied().unwrap_or_default(),
                    batch[first].0
                ),
            )),
        }
    }
    Ok(report)
}

/// Files one batch of companies inside `tx`: one look-up of taken domains, one insert
/// of the companies and one of their keys.
async fn import_company_batch(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[(usize, NewCompany)],
) -> Result<ImportReport, StoreError> {
    let domain_keys: Vec<Option<String>> = batch
        .iter()
        .map(|(_, c)| c.domain.as_ref().map(|d| format!("domain:{d}")))
        .collect();
    let mut wanted: Vec<&str> = domain_keys.iter().flatten().map(String::as_str).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let taken: HashMap<String, i64> = if wanted.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as(
            "SELECT key, min(company_id) FROM company_identities
             WHERE key = ANY($1) GROUP BY key",
        )
        .bind(&wanted)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect()
    };

    let mut claimed: HashMap<&str, usize> = HashMap::new();
    let verdicts: Vec<Verdict> = domain_keys
        .iter()
        .enumerate()
        .map(|(index, key)| match key {
            None => Verdict::Insert,
            Some(key) => {
                if let Some(owner) = taken.get(key) {
                    Verdict::Skip(format!("{key} already belongs to company {owner}"))
                } else if let Some(first) = claimed.get(key.as_str()) {
                    Verdict::SameAs(key.clone(), *first)
                } else {
                    claimed.insert(key, index);
                    Verdict::Insert
                }
            }
        })
        .collect();

    let chosen: Vec<usize> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| matches!(v, Verdict::Insert))
        .map(|(i, _)| i)
        .collect();
    let mut new_ids: HashMap<usize, i64> = HashMap::with_capacity(chosen.len());
    if !chosen.is_empty() {
        let names: Vec<&str> = chosen.iter().map(|&i| batch[i].1.name.as_str()).collect();
        let domains: Vec<Option<&str>> = chosen
            .iter()
            .map(|&i| batch[i].1.domain.as_deref())
            .collect();
        // A row's phones travel as one comma-joined string: PostgreSQL arrays cannot be
        // ragged, and an E.164 number never contains a comma.
        let phones: Vec<String> = chosen
            .iter()
            .map(|&i| {
                batch[i]
                    .1
                    .phones
                    .iter()
                    .map(PhoneE164::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO companies (name, domain, phones)
             SELECT name, domain, COALESCE(string_to_array(NULLIF(phones, ''), ','), '{}')
             FROM unnest($1::text[], $2::text[], $3::text[])
                  WITH ORDINALITY AS t(name, domain, phones, ord)
             ORDER BY ord
             RETURNING id",
        )
        .bind(&names)
        .bind(&domains)
        .bind(&phones)
        .fetch_all(&mut **tx)
        .await?;
        if ids.len() != chosen.len() {
            return Err(StoreError::Rejected(format!(
                "{} companies inserted for {} rows",
                ids.len(),
                chosen.len()
            )));
        }
        new_ids.extend(chosen.iter().copied().zip(ids));

        let mut keys = Vec::new();
        let mut owners = Vec::new();
        for &i in &chosen {
            for key in company_keys(&batch[i].1) {
                keys.push(key);
                owners.push(new_ids[&i]);
            }
        }
        sqlx::query(
            "INSERT INTO company_identities (key, company_id)
             SELECT * FROM unnest($1::text[], $2::int8[]) ON CONFLICT DO NOTHING",
        )
        .bind(&keys)
        .bind(&owners)
        .execute(&mut **tx)
        .await?;
    }

    let mut report = ImportReport {
        inserted: chosen.len() as u64,
        skipped: Vec::new(),
    };
    for ((line, _), verdict) in batch.iter().zip(verdicts) {
        match verdict {
            Verdict::Insert => {}
            Verdict::Skip(why) => report.skipped.push((*line, why)),
            Verdict::SameAs(key, first) => report.skipped.push((
                *line,
                format!(
                    "{key} already belongs to company {}, imported from line {}",
                    new_ids.get(&first).copied().unwrap_or_default(),
                    batch[first].0
                ),
            )),
        }
    }
    Ok(report)
}

fn page<T: Clone>(items: &mut Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> ClientPage<T> {
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|c| id(c).to_string())
    } else {
        None
    };
    ClientPage {
        items: std::mem::take(items),
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use normalizer::parse_phone;
    use sqlx::PgPool;

    fn email(raw: &str) -> EmailAddress {
        EmailAddress::parse(raw).expect("a valid address")
    }

    fn phone(raw: &str) -> PhoneE164 {
        parse_phone(raw, None).expect("a valid number").number
    }

    fn contact(name: &str, emails: &[&str], phones: &[&str], company: Option<i64>) -> NewContact {
        NewContact {
            name: Some(name.into()),
            emails: emails.iter().map(|e| email(e)).collect(),
            phones: phones.iter().map(|p| phone(p)).collect(),
            company_id: company,
        }
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_contact_import_skips_taken_repeated_and_orphan_rows_and_names_their_lines(
        pool: PgPool,
    ) {
        let store = Store::from_pool(pool);
        let known = store
            .create_contact(&contact("Giada Fontana", &["giada@example.it"], &[], None))
            .await
            .unwrap();
        let company = store
            .create_company(&NewCompany {
                name: "Fontana Design S.r.l.".into(),
                domain: Some("fontana.example.it".into()),
                phones: Vec::new(),
            })
            .await
            .unwrap();
        let rows = vec![
            (
                2,
                contact(
                    "Łukasz Żółkiewski",
                    &["lukasz@example.pl", "biuro@example.pl"],
                    &["+48 601 234 567"],
                    None,
                ),
            ),
            (3, contact("Giada F.", &["giada@example.it"], &[], None)),
            (
                4,
                contact("Biuro", &["x@example.pl"], &["+48601234567"], None),
            ),
            (5, contact("Nobody", &["nobody@example.it"], &[], Some(999))),
            (
                7,
                contact("Nguyễn Thị Mai", &["mai@example.vn"], &[], Some(company.id)),
            ),
        ];
        let report = store.import_contacts(&rows).await.unwrap();
        assert_eq!(report.inserted, 2);
        let lukasz = store
            .list_contacts(&ClientQuery {
                key: Some("email:biuro@example.pl".into()),
                limit: 10,
                ..ClientQuery::default()
            })
            .await
            .unwrap()
            .items
            .remove(0);
        assert_eq!(lukasz.emails, ["biuro@example.pl", "lukasz@example.pl"]);
        assert_eq!(lukasz.phones, ["+48601234567"]);
        assert_eq!(
            report.skipped,
            vec![
                (
                    3,
                    format!(
                        "email:giada@example.it already belongs to contact {}",
                        known.id
                    )
                ),
                (
                    4,
                    format!(
                        "phone:+48601234567 already belongs to contact {}, imported from line 2",
                        lukasz.id
                    )
                ),
                (5, "company 999 does not exist".to_owned()),
            ]
        );
        let mai = store
            .list_contacts(&ClientQuery {
                key: Some("email:mai@example.vn".into()),
                limit: 10,
                ..ClientQuery::default()
            })
            .await
            .unwrap()
            .items
            .remove(0);
        assert_eq!(mai.company_id, Some(company.id));
        assert_eq!(mai.name.as_deref(), Some("Nguyễn Thị Mai"));
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_contact_import_over_several_batches_gives_each_row_its_own_keys(pool: PgPool) {
        let store = Store::from_pool(pool.clone());
        let total = IMPORT_BATCH + 500;
        let mut rows: Vec<(usize, NewContact)> = (0..total)
            .map(|i| {
                let address = format!("person{i}@example.com");
                (
                    i + 2,
                    contact(&format!("Person {i}"), &[&address], &[], None),
                )
            })
            .collect();
        // A later batch repeats a key of the first one.
        rows[IMPORT_BATCH + 10].1 = contact("Copy", &["person5@example.com"], &[], None);
        let report = store.import_contacts(&rows).await.unwrap();
        assert_eq!(report.inserted as usize, total - 1);
        let first: i64 = sqlx::query_scalar(
            "SELECT contact_id FROM contact_identities WHERE key = 'email:person5@example.com'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            report.skipped,
            vec![(
                IMPORT_BATCH + 12,
                format!("email:person5@example.com already belongs to contact {first}")
            )]
        );
        // Every key points at the contact made from its own row.
        let mismatched: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM contact_identities ci JOIN contacts c ON c.id = ci.contact_id
             WHERE ci.key <> 'email:person' || substr(c.name, 8) || '@example.com'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(mismatched, 0);
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_company_import_keeps_one_company_per_domain_and_stores_phones(pool: PgPool) {
        let store = Store::from_pool(pool);
        let known = store
            .create_company(&NewCompany {
                name: "Fabbri Arredamenti S.r.l.".into(),
                domain: Some("fabbri.example.it".into()),
                phones: Vec::new(),
            })
            .await
            .unwrap();
        let company = |name: &str, domain: Option<&str>, phones: &[&str]| NewCompany {
            name: name.into(),
            domain: domain.map(str::to_owned),
            phones: phones.iter().map(|p| phone(p)).collect(),
        };
        let rows = vec![
            (
                2,
                company(
                    "Żółkiewski i Synowie",
                    Some("zolkiewski.example.pl"),
                    &["+48 22 123 45 67", "+48 601 234 567"],
                ),
            ),
            (3, company("Fabbri again", Some("fabbri.example.it"), &[])),
            (
                4,
                company("Żółkiewski Sp. z o.o.", Some("zolkiewski.example.pl"), &[]),
            ),
            (5, company("Studio Rossi", None, &[])),
            (6, company("Studio Rossi", None, &[])),
        ];
        let report = store.import_companies(&rows).await.unwrap();
        assert_eq!(report.inserted, 3);
        let zolkiewski = store
            .list_companies(&ClientQuery {
                key: Some("domain:zolkiewski.example.pl".into()),
                limit: 10,
                ..ClientQuery::default()
            })
            .await
            .unwrap()
            .items
            .remove(0);
        assert_eq!(zolkiewski.phones, ["+48221234567", "+48601234567"]);
        assert_eq!(
            report.skipped,
            vec![
                (
                    3,
                    format!(
                        "domain:fabbri.example.it already belongs to company {}",
                        known.id
                    )
                ),
                (
                    4,
                    format!(
                        "domain:zolkiewski.example.pl already belongs to company {}, imported from line 2",
                        zolkiewski.id
                    )
                ),
            ]
        );
        let rossi = store
            .list_companies(&ClientQuery {
                key: Some("name:studio rossi".into()),
                limit: 10,
                ..ClientQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(rossi.items.len(), 2, "names may be shared");
        assert!(rossi.items.iter().all(|c| c.phones.is_empty()));
    }
}
