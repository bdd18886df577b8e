//! Clients: contacts (people) and companies, and the identity keys that recognise them.

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

/// What a bulk import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Rows stored.
    pub inserted: u64,
    /// Rows skipped because a key already belonged to another client, with the key.
    pub conflicts: Vec<(usize, String)>,
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

    /// Creates many contacts in batched transactions; rows whose keys are taken (by a
    /// stored contact or an earlier row) are reported, not stored.
    pub async fn import_contacts(
        &self,
        contacts: &[(usize, NewContact)],
    ) -> Result<ImportReport, StoreError> {
        let mut report = ImportReport::default();
        let mut tx = self.pool().begin().await?;
        for (line, contact) in contacts {
            sqlx::query("SAVEPOINT row").execute(&mut *tx).await?;
            match insert_contact(&mut tx, contact).await {
                Ok(_) => {
                    sqlx::query("RELEASE SAVEPOINT row")
                        .execute(&mut *tx)
                        .await?;
                    report.inserted += 1;
                }
                Err(StoreError::Conflict(why) | StoreError::NotFound(why)) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT row")
                        .execute(&mut *tx)
                        .await?;
                    report.conflicts.push((*line, why));
                }
                Err(other) => return Err(other),
            }
        }
        tx.commit().await?;
        Ok(report)
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

    /// Creates many companies in one transaction.
    pub async fn import_companies(
        &self,
        companies: &[(usize, NewCompany)],
    ) -> Result<ImportReport, StoreError> {
        let mut tx = self.pool().begin().await?;
        for (_, company) in companies {
            insert_company(&mut tx, company).await?;
        }
        tx.commit().await?;
        Ok(ImportReport {
            inserted: companies.len() as u64,
            conflicts: Vec::new(),
        })
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
