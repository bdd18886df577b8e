//! Clients: contacts (people) and companies, and the identity keys that recognise them.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use normalizer::company::company_key;
use normalizer::{CompanyKey, IdentityKey};
use normalizer::{EmailAddress, PhoneE164};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use crate::error::StoreError;
use crate::store::Store;

/// A contact to create; values are already normalised.
#[derive(Debug, Clone, Default)]
pub struct NewContact {
    /// The person's name as typed.
    pub name: Option<String>,
    /// Email addresses (each identifies this person).
    pub emails: Vec<EmailAddress>,
    /// Addresses the person lists that identify nobody (role mailboxes, placeholders):
    /// kept on the contact, never a key.
    pub shared_emails: Vec<EmailAddress>,
    /// Phone numbers (each identifies this person).
    pub phones: Vec<PhoneE164>,
    /// The company the person works for.
    pub company_id: Option<i64>,
}

impl NewContact {
    fn shared_email_values(&self) -> Vec<&str> {
        let mut values: Vec<&str> = self
            .shared_emails
            .iter()
            .map(EmailAddress::as_str)
            .collect();
        values.sort_unstable();
        values.dedup();
        values
    }
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// Rows that filled in empty fields of a client stored before.
    pub updated: u64,
    /// Rows that are a client stored before, left as it is.
    pub present: u64,
    /// Rows not stored: the line they came from and why, in line order per batch.
    pub skipped: Vec<(usize, String)>,
}

impl ImportReport {
    fn absorb(&mut self, other: ImportReport) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.present += other.present;
        self.skipped.extend(other.skipped);
    }
}

const CONTACT_COLUMNS: &str = "SELECT c.id, c.name, c.company_id, c.created_at, c.updated_at,
        COALESCE(array_agg(ci.value ORDER BY ci.key) FILTER (WHERE ci.kind = 'email'), '{}')
            || c.shared_emails AS emails,
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
        .map(IdentityKey::email)
        .chain(contact.phones.iter().map(|p| IdentityKey::phone(p, None)))
        .map(|key| (key.as_key(), key.kind(), key.value().to_owned()))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The company keys of a new company.
fn company_keys(company: &NewCompany) -> Vec<String> {
    let phones: Vec<&str> = company.phones.iter().map(PhoneE164::as_str).collect();
    keys_of_company(&company.name, company.domain.as_deref(), &phones)
}

/// The keys of a company with this name, domain and phone numbers (E.164).
fn keys_of_company(name: &str, domain: Option<&str>, phones: &[impl AsRef<str>]) -> Vec<String> {
    let mut keys: Vec<String> = domain
        .iter()
        .map(|d| CompanyKey::Domain((*d).to_owned()).as_key())
        .chain(company_key(name).map(|k| CompanyKey::Name(k).as_key()))
        .chain(phones.iter().map(|p| CompanyKey::phone_key(p.as_ref())))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

async fn insert_contact(
    tx: &mut Transaction<'_, Postgres>,
    contact: &NewContact,
) -> Result<i64, StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO contacts (name, company_id, shared_emails) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(contact.name.as_deref())
    .bind(contact.company_id)
    .bind(contact.shared_email_values())
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
            sql.push(" AND (c.id IN (SELECT contact_id FROM contact_identities WHERE key = ")
                .push_bind(key.clone())
                .push(")");
            // A shared mailbox is no key, but everyone who lists it is found by it.
            match IdentityKey::parse(key) {
                Ok(IdentityKey::Email(address)) => sql
                    .push(" OR c.shared_emails @> ARRAY[")
                    .push_bind(address)
                    .push("]::text[])"),
                _ => sql.push(")"),
            };
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
    /// array statements per batch, so that importing a file again creates nothing twice.
    /// A row whose domain a stored company holds is that company (counted as present); one
    /// whose domain an earlier row has is skipped with its line and the reason. A row
    /// without a domain is, among the stored companies and earlier rows of its name key,
    /// the oldest sharing one of its phone numbers; failing that, the oldest (a row
    /// without phone numbers) or the oldest without phone numbers (which takes the row's:
    /// updated; nothing else is changed). It is counted as present, or skipped naming
    /// the earlier row. Two firms of one name are created when both have phone numbers
    /// and share none.
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

/// What becomes of one row of a batch.
enum Verdict {
    /// It is stored.
    Insert,
    /// It is not, for this reason.
    Skip(String),
    /// One of its keys is held by an earlier row of the batch (an index into the batch);
    /// the reason names that row's new id once it has one.
    SameAs(String, usize),
    /// It is a client stored before, left as it is.
    Present,
    /// It is a company stored before (this id), which takes the row's phone numbers
    /// because it has none.
    Update(i64),
    /// It is the company of an earlier row of the batch without a domain (an index into
    /// the batch), found by this name key; `filled`: that row had no phone numbers and
    /// takes this row's.
    SameCompany {
        first: usize,
        key: String,
        filled: bool,
    },
}

/// The report of a filed batch: what was counted, and each row kept out with its line
/// and why, naming the new id of the earlier row it repeats (`client`: "contact" or
/// "company").
fn batch_report<T>(
    batch: &[(usize, T)],
    verdicts: Vec<Verdict>,
    new_ids: &HashMap<usize, i64>,
    client: &str,
) -> ImportReport {
    let mut report = ImportReport::default();
    let new_id = |first: usize| new_ids.get(&first).copied().unwrap_or_default();
    for ((line, _), verdict) in batch.iter().zip(verdicts) {
        match verdict {
            Verdict::Insert => report.inserted += 1,
            Verdict::Present => report.present += 1,
            Verdict::Update(_) => report.updated += 1,
            Verdict::Skip(why) => report.skipped.push((*line, why)),
            Verdict::SameAs(key, first) => report.skipped.push((
                *line,
                format!(
                    "{key} already belongs to {client} {}, imported from line {}",
                    new_id(first),
                    batch[first].0
                ),
            )),
            Verdict::SameCompany { first, key, filled } => report.skipped.push((
                *line,
                format!(
                    "the same company as line {} (company {}, {key}){}",
                    batch[first].0,
                    new_id(first),
                    if filled {
                        "; its phone numbers were added there"
                    } else {
                        ""
                    }
                ),
            )),
        }
    }
    report
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
        // Arrays of arrays must be rectangular in PostgreSQL: each row's list goes as JSON.
        let shared: Vec<serde_json::Value> = chosen
            .iter()
            .map(|&i| serde_json::json!(batch[i].1.shared_email_values()))
            .collect();
        // Rows come back in the order of `ord`, so the n-th id is the n-th chosen row.
        let ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO contacts (name, company_id, shared_emails)
             SELECT name, company_id, ARRAY(SELECT jsonb_array_elements_text(shared))
             FROM unnest($1::text[], $2::int8[], $3::jsonb[]) WITH ORDINALITY
                  AS t(name, company_id, shared, ord)
             ORDER BY ord
             RETURNING id",
        )
        .bind(&names)
        .bind(&companies)
        .bind(&shared)
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

    Ok(batch_report(batch, verdicts, &new_ids, "contact"))
}

/// A company that a row without a domain may be: one stored before, or an earlier row
/// of the batch.
struct Candidate {
    target: Target,
    /// Its phone numbers (E.164).
    phones: Vec<String>,
}

#[derive(Clone, Copy)]
enum Target {
    Stored(i64),
    Row(usize),
}

/// Which of the companies sharing a name (oldest first) a row without a domain is: the
/// oldest that shares one of its phone numbers; failing that, the oldest of all when the
/// row has no phone numbers, or the oldest without phone numbers when it has some. Two
/// firms of one name are told apart by their phone numbers; where one side has none,
/// nothing tells them apart. `None`: a company of its own.
fn same_company(candidates: &[Candidate], phones: &[String]) -> Option<usize> {
    candidates
        .iter()
        .position(|c| c.phones.iter().any(|p| phones.contains(p)))
        .or_else(|| {
            if phones.is_empty() {
                (!candidates.is_empty()).then_some(0)
            } else {
                candidates.iter().position(|c| c.phones.is_empty())
            }
        })
}

/// Files one batch of companies inside `tx`: one look-up of taken domains, one of the
/// companies holding the names of rows without a domain, one insert of the companies,
/// one update of those given phone numbers, and their keys.
async fn import_company_batch(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[(usize, NewCompany)],
) -> Result<ImportReport, StoreError> {
    // Company keys may be shared (two firms of one name), so no unique index keeps two
    // imports from creating one company without a domain twice: imports take turns.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('import:companies', 0))")
        .execute(&mut **tx)
        .await?;

    let mut phones: Vec<Vec<String>> = batch
        .iter()
        .map(|(_, c)| c.phones.iter().map(|p| p.as_str().to_owned()).collect())
        .collect();
    let domain_keys: Vec<Option<String>> = batch
        .iter()
        .map(|(_, c)| {
            c.domain
                .as_ref()
                .map(|d| CompanyKey::Domain(d.clone()).as_key())
        })
        .collect();
    let name_keys: Vec<Option<String>> = batch
        .iter()
        .map(|(_, c)| company_key(&c.name).map(|k| CompanyKey::Name(k).as_key()))
        .collect();
    let taken = taken_company_keys(tx, domain_keys.iter().flatten()).await?;
    let mut candidates = name_candidates(
        tx,
        domain_keys
            .iter()
            .zip(&name_keys)
            .filter(|(domain, _)| domain.is_none())
            .filter_map(|(_, name)| name.as_ref()),
    )
    .await?;

    let mut claimed: HashMap<&str, usize> = HashMap::new();
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(batch.len());
    for (index, (domain_key, name_key)) in domain_keys.iter().zip(&name_keys).enumerate() {
        let verdict = match (domain_key, name_key) {
            (Some(key), _) => {
                if taken.contains_key(key) {
                    Verdict::Present
                } else if let Some(first) = claimed.get(key.as_str()) {
                    Verdict::SameAs(key.clone(), *first)
                } else {
                    claimed.insert(key, index);
                    Verdict::Insert
                }
            }
            (None, Some(name)) => {
                let known = candidates.entry(name.clone()).or_default();
                match same_company(known, &phones[index]) {
                    None => Verdict::Insert,
                    Some(i) => {
                        let filled = known[i].phones.is_empty() && !phones[index].is_empty();
                        if filled {
                            known[i].phones = phones[index].clone();
                        }
                        match known[i].target {
                            Target::Stored(id) if filled => Verdict::Update(id),
                            Target::Stored(_) => Verdict::Present,
                            Target::Row(first) => {
                                if filled {
                                    phones[first] = phones[index].clone();
                                }
                                Verdict::SameCompany {
                                    first,
                                    key: name.clone(),
                                    filled,
                                }
                            }
                        }
                    }
                }
            }
            // A name that is nothing but a legal form has no key to match by.
            (None, None) => Verdict::Insert,
        };
        if let (Verdict::Insert, Some(name)) = (&verdict, name_key) {
            // Later rows of the batch without a domain may be this company.
            candidates.entry(name.clone()).or_default().push(Candidate {
                target: Target::Row(index),
                phones: phones[index].clone(),
            });
        }
        verdicts.push(verdict);
    }

    let chosen: Vec<usize> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| matches!(v, Verdict::Insert))
        .map(|(i, _)| i)
        .collect();
    let mut new_ids: HashMap<usize, i64> = HashMap::with_capacity(chosen.len());
    let mut keys = Vec::new();
    let mut owners = Vec::new();
    if !chosen.is_empty() {
        let names: Vec<&str> = chosen.iter().map(|&i| batch[i].1.name.as_str()).collect();
        let domains: Vec<Option<&str>> = chosen
            .iter()
            .map(|&i| batch[i].1.domain.as_deref())
            .collect();
        // A row's phones travel as one comma-joined string: PostgreSQL arrays cannot be
        // ragged, and an E.164 number never contains a comma.
        let joined: Vec<String> = chosen.iter().map(|&i| phones[i].join(",")).collect();
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
        .bind(&joined)
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
        for &i in &chosen {
            let (_, company) = &batch[i];
            for key in keys_of_company(&company.name, company.domain.as_deref(), &phones[i]) {
                keys.push(key);
                owners.push(new_ids[&i]);
            }
        }
    }

    let updates: Vec<(i64, String)> = verdicts
        .iter()
        .zip(&phones)
        .filter_map(|(verdict, phones)| match verdict {
            Verdict::Update(id) => Some((*id, phones.join(","))),
            _ => None,
        })
        .collect();
    let mut lost_updates = 0;
    if !updates.is_empty() {
        let (ids, joined): (Vec<i64>, Vec<String>) = updates.iter().cloned().unzip();
        // Only a company that still has no phone numbers takes the row's: one given
        // numbers meanwhile (through the API) is left as it is.
        let updated: HashSet<i64> = sqlx::query_scalar(
            "UPDATE companies c SET phones = string_to_array(t.phones, ','), updated_at = now()
             FROM unnest($1::int8[], $2::text[]) AS t(id, phones)
             WHERE c.id = t.id AND c.phones = '{}'
             RETURNING c.id",
        )
        .bind(&ids)
        .bind(&joined)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
        lost_updates = updates.len() - updated.len();
        for (id, joined) in &updates {
            if updated.contains(id) {
                for phone in joined.split(',') {
                    keys.push(CompanyKey::phone_key(phone));
                    owners.push(*id);
                }
            }
        }
    }
    if !keys.is_empty() {
        sqlx::query(
            "INSERT INTO company_identities (key, company_id)
             SELECT * FROM unnest($1::text[], $2::int8[]) ON CONFLICT DO NOTHING",
        )
        .bind(&keys)
        .bind(&owners)
        .execute(&mut **tx)
        .await?;
    }

    let mut report = batch_report(batch, verdicts, &new_ids, "company");
    report.updated -= lost_updates as u64;
    report.present += lost_updates as u64;
    Ok(report)
}

/// Of `keys`, those a stored company holds, with the oldest holder.
async fn taken_company_keys<'k>(
    tx: &mut Transaction<'_, Postgres>,
    keys: impl Iterator<Item = &'k String>,
) -> Result<HashMap<String, i64>, StoreError> {
    let mut wanted: Vec<&str> = keys.map(String::as_str).collect();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(sqlx::query_as(
        "SELECT key, min(company_id) FROM company_identities
         WHERE key = ANY($1) GROUP BY key",
    )
    .bind(&wanted)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect())
}

/// The stored companies holding each of the name keys, oldest first, with their phones.
async fn name_candidates<'k>(
    tx: &mut Transaction<'_, Postgres>,
    keys: impl Iterator<Item = &'k String>,
) -> Result<HashMap<String, Vec<Candidate>>, StoreError> {
    let mut wanted: Vec<&str> = keys.map(String::as_str).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut candidates: HashMap<String, Vec<Candidate>> = HashMap::new();
    if wanted.is_empty() {
        return Ok(candidates);
    }
    let rows: Vec<(String, i64, Vec<String>)> = sqlx::query_as(
        "SELECT ci.key, c.id, c.phones
         FROM company_identities ci JOIN companies c ON c.id = ci.company_id
         WHERE ci.key = ANY($1)
         ORDER BY c.id",
    )
    .bind(&wanted)
    .fetch_all(&mut **tx)
    .await?;
    for (key, id, phones) in rows {
        candidates.entry(key).or_default().push(Candidate {
            target: Target::Stored(id),
            phones,
        });
    }
    Ok(candidates)
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
            ..NewContact::default()
        }
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn people_sharing_a_mailbox_are_imported_as_contacts_of_their_own(pool: PgPool) {
        let store = Store::from_pool(pool);
        let sharing = |name: &str, phone_number: &str, shared: &[&str]| NewContact {
            shared_emails: shared.iter().map(|e| email(e)).collect(),
            ..contact(name, &[], &[phone_number], None)
        };
        let rows = vec![
            (
                2,
                sharing("Anna Conti", "+39 347 111 2233", &["info@example.it"]),
            ),
            (
                3,
                sharing(
                    "Marco Galli",
                    "+39 347 444 5566",
                    &["noreply@example.it", "info@example.it", "info@example.it"],
                ),
            ),
            (4, sharing("Nobody", "+39 347 777 8899", &[])),
        ];
        let report = store.import_contacts(&rows).await.unwrap();
        assert_eq!(
            (report.inserted, report.skipped.len()),
            (3, 0),
            "{report:?}"
        );

        let query = |key: &str| ClientQuery {
            key: Some(key.into()),
            cursor: None,
            limit: 10,
        };
        let listing = store
            .list_contacts(&query("email:info@example.it"))
            .await
            .unwrap();
        let mut emails: Vec<(Option<String>, Vec<String>)> = listing
            .items
            .into_iter()
            .map(|c| (c.name, c.emails))
            .collect();
        emails.sort();
        assert_eq!(
            emails,
            vec![
                (Some("Anna Conti".into()), vec!["info@example.it".into()]),
                (
                    Some("Marco Galli".into()),
                    vec!["info@example.it".into(), "noreply@example.it".into()]
                ),
            ]
        );
        let shared_keys: i64 =
            sqlx::query_scalar("SELECT count(*) FROM contact_identities WHERE kind = 'email'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(shared_keys, 0, "a shared mailbox is no key");
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
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

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
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

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
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
        assert_eq!(report.inserted, 2);
        assert_eq!(
            report.present, 1,
            "line 3 is company {}, stored before",
            known.id
        );
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
        let rossi = store
            .list_companies(&ClientQuery {
                key: Some("name:studio rossi".into()),
                limit: 10,
                ..ClientQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(
            rossi.items.len(),
            1,
            "two rows with nothing to tell them apart"
        );
        assert_eq!(
            report.skipped,
            vec![
                (
                    4,
                    format!(
                        "domain:zolkiewski.example.pl already belongs to company {}, imported from line 2",
                        zolkiewski.id
                    )
                ),
                (
                    6,
                    format!(
                        "the same company as line 5 (company {}, name:studio rossi)",
                        rossi.items[0].id
                    )
                ),
            ]
        );
    }

    fn company(name: &str, domain: Option<&str>, phones: &[&str]) -> NewCompany {
        NewCompany {
            name: name.into(),
            domain: domain.map(str::to_owned),
            phones: phones.iter().map(|p| phone(p)).collect(),
        }
    }

    /// Id, name and phones of the companies holding `key`, oldest first.
    async fn holding(pool: &PgPool, key: &str) -> Vec<(i64, String, Vec<String>)> {
        sqlx::query_as(
            "SELECT id, name, phones FROM companies
             WHERE id IN (SELECT company_id FROM company_identities WHERE key = $1) ORDER BY id",
        )
        .bind(key)
        .fetch_all(pool)
        .await
        .unwrap()
    }

    async fn company_count(pool: &PgPool) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM companies")
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn a_company_without_a_domain_is_matched_by_its_name_and_told_apart_by_its_phones(
        pool: PgPool,
    ) {
        let store = Store::from_pool(pool.clone());
        let rossi = store
            .create_company(&company("Studio Rossi S.r.l.", None, &["+39 02 1234 5678"]))
            .await
            .unwrap();
        let bar = store
            .create_company(&company("Bar Centrale", None, &[]))
            .await
            .unwrap();
        store
            .create_company(&company("Ferramenta Gallo", Some("gallo.example.it"), &[]))
            .await
            .unwrap();
        let rows = vec![
            (2, company("Studio Rossi", None, &[])),
            (3, company("STUDIO ROSSI", None, &["+39 02 1234 5678"])),
            (4, company("Studio Rossi", None, &["+39 06 1234 5678"])),
            (
                5,
                company(
                    "Studio Rossi Srl",
                    None,
                    &["+39 06 1234 5678", "+39 06 9999 0000"],
                ),
            ),
            (6, company("Bar Centrale", None, &["+39 051 123 4567"])),
            (7, company("Ferramenta Gallo", None, &[])),
            (8, company("Nuova Ditta", None, &[])),
            (
                9,
                company("Nuova Ditta S.p.A.", None, &["+39 02 5555 5555"]),
            ),
        ];
        let report = store.import_companies(&rows).await.unwrap();
        let rossi_roma = holding(&pool, "phone:+390612345678").await;
        let nuova = holding(&pool, "name:nuova ditta").await;
        assert_eq!(rossi_roma.len(), 1, "{rossi_roma:?}");
        assert_eq!(nuova.len(), 1, "{nuova:?}");
        assert_eq!(
            report,
            ImportReport {
                inserted: 2,
                updated: 1,
                present: 3,
                skipped: vec![
                    (
                        5,
                        format!(
                            "the same company as line 4 (company {}, name:studio rossi)",
                            rossi_roma[0].0
                        )
                    ),
                    (
                        9,
                        format!(
                            "the same company as line 8 (company {}, name:nuova ditta); its phone \
                             numbers were added there",
                            nuova[0].0
                        )
                    ),
                ],
            }
        );
        let rossi_all = holding(&pool, "name:studio rossi").await;
        assert_eq!(
            rossi_all.iter().map(|c| c.0).collect::<Vec<_>>(),
            [rossi.id, rossi_roma[0].0],
            "two firms of one name"
        );
        assert_eq!(
            rossi_roma[0].2,
            ["+390612345678"],
            "only empty fields are filled"
        );
        assert_eq!(
            holding(&pool, "phone:+390511234567").await,
            [(
                bar.id,
                "Bar Centrale".to_owned(),
                vec!["+390511234567".to_owned()]
            )],
            "a stored company without phones takes the row's"
        );
        assert_eq!(nuova[0].2, ["+390255555555"]);
        assert_eq!(holding(&pool, "phone:+390255555555").await.len(), 1);
        assert_eq!(company_count(&pool).await, 5);

        let again = store.import_companies(&rows).await.unwrap();
        assert_eq!(
            again,
            ImportReport {
                present: 8,
                ..ImportReport::default()
            }
        );
        assert_eq!(company_count(&pool).await, 5);
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn two_company_imports_at_once_create_a_company_without_a_domain_once(pool: PgPool) {
        let store = Store::from_pool(pool.clone());
        let rows = vec![
            (2, company("Studio Verdi", None, &[])),
            (3, company("Trattoria Lucia", None, &["+39 02 4444 4444"])),
        ];
        // The first import's batch is filed but not committed yet.
        let mut first = pool.begin().await.unwrap();
        let filed = import_company_batch(&mut first, &rows).await.unwrap();
        assert_eq!(filed.inserted, 2);
        let first_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *first)
            .await
            .unwrap();

        let second = tokio::spawn({
            let store = store.clone();
            let rows = rows.clone();
            async move { store.import_companies(&rows).await }
        });
        // Until the second import waits for the first (or has finished without waiting).
        loop {
            let waiting: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                                WHERE wait_event = 'advisory' AND pid <> $1
                                  AND datname = current_database())",
            )
            .bind(first_pid)
            .fetch_one(&pool)
            .await
            .unwrap();
            if waiting || second.is_finished() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        first.commit().await.unwrap();
        let report = second.await.unwrap().unwrap();
        assert_eq!(
            report,
            ImportReport {
                present: 2,
                ..ImportReport::default()
            }
        );
        assert_eq!(company_count(&pool).await, 2);
    }
}
