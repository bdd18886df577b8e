//! Finishing a lead: converted (creating or linking a contact, a company and a deal) or
//! junk (with a reason), and reading deals.
//!
//! A conversion never makes a second contact or company for someone already known: the
//! lead's person keys are looked up in `contact_identities` and its company keys in
//! `company_identities` first, and a match is linked instead. The look-up runs under
//! transaction advisory locks on those keys, taken in sorted order and spelled as intake
//! spells its person locks, so two conversions of the same new person (and an inquiry
//! filed meanwhile) take turns: the second sees the contact the first created. A contact
//! or company made here gets its identity keys at once, so the person's next inquiry is
//! a repeat lead.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use normalizer::company::{company_key, domain_key};
use normalizer::matching::Person;
use normalizer::{CompanyKey, IdentityKey};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use crate::access::Scope;
use crate::error::StoreError;
use crate::stages::{
    LockedLead, Semantic, StageMove, Target, WorkError, conflict, invalid, lock_lead, record_move,
};
use crate::store::Store;

/// A deal to create from the lead.
#[derive(Clone, Debug, Default)]
pub struct NewDeal {
    /// Title; the lead's title when absent.
    pub title: Option<String>,
    /// Amount as a checked decimal string (`1500.50`), at least 0.
    pub amount: Option<String>,
    /// ISO 4217 code, upper-case.
    pub currency: Option<String>,
    /// Deal pipeline code; the first deal pipeline when absent.
    pub pipeline: Option<String>,
}

/// One thing a conversion makes or links.
#[derive(Clone, Debug)]
pub enum ConvertItem {
    /// A contact from the lead's person (its name may be given).
    Contact {
        /// Name; the lead's when absent.
        name: Option<String>,
    },
    /// A company from the lead's company (name and domain may be given).
    Company {
        /// Name; the lead's company when absent.
        name: Option<String>,
        /// The company's website or domain.
        domain: Option<String>,
    },
    /// A deal.
    Deal(NewDeal),
    /// Link an existing contact.
    LinkContact(i64),
    /// Link an existing company.
    LinkCompany(i64),
}

/// How a lead is finished.
#[derive(Clone, Debug)]
pub enum Finish {
    /// Converted, making or linking these (at most one contact, company and deal).
    Converted(Vec<ConvertItem>),
    /// Junk, for a reason the caller checked against the configured list.
    Junk {
        /// The reason code.
        reason: String,
        /// A note for the history row.
        note: Option<String>,
    },
}

/// How a client ended up on the lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkResult {
    /// Made by this conversion.
    Created,
    /// Asked to be created, but the person or firm was known: the stored one is linked.
    LinkedExisting,
    /// Linked by id, as asked.
    Linked,
    /// The repeat lead's client, linked before.
    ExistingClient,
}

/// A client linked by a conversion.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ClientLink {
    /// Contact or company id.
    pub id: i64,
    /// How it was linked.
    pub result: LinkResult,
}

/// A deal as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DealView {
    /// Deal id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Amount as a decimal string.
    pub amount: Option<String>,
    /// ISO 4217 code.
    pub currency: Option<String>,
    /// Contact.
    pub contact_id: Option<i64>,
    /// Company.
    pub company_id: Option<i64>,
    /// The lead it came from.
    pub lead_id: Option<i64>,
    /// Pipeline code.
    pub pipeline: String,
    /// Stage code.
    pub stage: String,
    /// Responsible user.
    pub responsible_id: Option<i64>,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// What finishing did.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct FinishOutcome {
    /// The lead.
    pub lead_id: i64,
    /// `converted` or `junk`.
    pub outcome: String,
    /// The stage move.
    #[serde(rename = "move")]
    pub stage_move: StageMove,
    /// The contact now linked.
    pub contact: Option<ClientLink>,
    /// The company now linked.
    pub company: Option<ClientLink>,
    /// The deal made.
    pub deal: Option<DealView>,
    /// The junk reason.
    pub junk_reason: Option<String>,
}

/// A page of deals, newest first.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DealPage {
    /// The deals.
    pub items: Vec<DealView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

const DEAL_COLUMNS: &str =
    "SELECT d.id, d.title, d.amount::text AS amount, d.currency, d.contact_id,
        d.company_id, d.lead_id, p.code AS pipeline, s.code AS stage, d.responsible_id,
        d.created_by, d.created_at
     FROM deals d JOIN pipelines p ON p.id = d.pipeline_id JOIN stages s ON s.id = d.stage_id
     LEFT JOIN leads l ON l.id = d.lead_id";

fn deal_from_row(row: &PgRow) -> Result<DealView, sqlx::Error> {
    Ok(DealView {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        contact_id: row.try_get("contact_id")?,
        company_id: row.try_get("company_id")?,
        lead_id: row.try_get("lead_id")?,
        pipeline: row.try_get("pipeline")?,
        stage: row.try_get("stage")?,
        responsible_id: row.try_get("responsible_id")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Narrows a deal query to the caller: a deal is in scope when its lead is, or when the
/// caller is responsible for it.
fn push_deal_filter(sql: &mut QueryBuilder<'_, Postgres>, scope: &Scope) {
    let user = match *scope {
        Scope::All => return,
        Scope::Own { user_id } | Scope::Team { user_id } => user_id,
    };
    sql.push(" AND (d.responsible_id = ")
        .push_bind(user)
        .push(" OR (l.id IS NOT NULL");
    scope.push_lead_filter(sql, "l");
    sql.push("))");
}

/// What the lead carries into a conversion.
struct LeadFacts {
    title: String,
    name: Option<String>,
    company: Option<String>,
    responsible_id: Option<i64>,
    is_repeat: bool,
    contact_id: Option<i64>,
    company_id: Option<i64>,
    person_keys: Vec<String>,
    company_keys: Vec<String>,
}

async fn lead_facts(
    executor: impl sqlx::PgExecutor<'_>,
    id: i64,
) -> Result<Option<LeadFacts>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT l.title, l.name, l.company, l.responsible_id, l.is_repeat, l.contact_id,
                l.company_id,
                ARRAY(SELECT li.key FROM lead_identities li WHERE li.lead_id = l.id ORDER BY li.key)
                    AS person_keys,
                COALESCE(ARRAY(SELECT jsonb_array_elements_text(
                    i.payload -> 'normalized' -> 'company_keys')), '{}') AS company_keys
         FROM leads l JOIN inquiries i ON i.id = l.inquiry_id WHERE l.id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await?;
    row.map(|row| {
        Ok(LeadFacts {
            title: row.try_get("title")?,
            name: row.try_get("name")?,
            company: row.try_get("company")?,
            responsible_id: row.try_get("responsible_id")?,
            is_repeat: row.try_get("is_repeat")?,
            contact_id: row.try_get("contact_id")?,
            company_id: row.try_get("company_id")?,
            person_keys: row.try_get("person_keys")?,
            company_keys: row.try_get("company_keys")?,
        })
    })
    .transpose()
}

/// The company keys a company made from the lead (with the given name and domain) holds.
fn wanted_company_keys(
    facts: &LeadFacts,
    name: Option<&str>,
    domain: Option<&str>,
) -> Result<(String, Option<String>, Vec<String>), WorkError> {
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        // The lead keeps its company as typed; a company's name does not keep the padding.
        .or_else(|| {
            facts
                .company
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            invalid(
                "company_name_missing",
                "the lead names no company: give the company a name ({\"type\": \"company\", \"name\": \"...\"}) or link one",
            )
        })?;
    let domain = match domain {
        Some(raw) => Some(domain_key(raw).ok_or_else(|| {
            invalid(
                "bad_domain",
                format!("create[].domain: `{raw}` is not a company domain or website"),
            )
        })?),
        None => facts
            .company_keys
            .iter()
            .find_map(|k| k.strip_prefix("domain:").map(str::to_owned)),
    };
    let mut keys: Vec<String> = domain
        .iter()
        .map(|d| CompanyKey::Domain(d.clone()).as_key())
        .chain(company_key(&name).map(|k| CompanyKey::Name(k).as_key()))
        .collect();
    keys.sort();
    keys.dedup();
    Ok((name, domain, keys))
}

/// Takes the advisory locks of these keys, sorted, as intake spells them.
async fn lock_keys(
    tx: &mut Transaction<'_, Postgres>,
    keys: &BTreeSet<String>,
) -> Result<(), sqlx::Error> {
    let keys: Vec<&String> = keys.iter().collect();
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))
         FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
    )
    .bind(keys)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The finishing stage of the lead's pipeline with this semantic.
async fn finishing_stage(
    tx: &mut Transaction<'_, Postgres>,
    lead: &LockedLead,
    semantic: Semantic,
) -> Result<Target, WorkError> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT id, code FROM stages
         WHERE pipeline_id = $1 AND semantic = $2 AND removed_at IS NULL AND active
         ORDER BY sort_order, id LIMIT 1",
    )
    .bind(lead.pipeline_id)
    .bind(semantic.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let (id, code) = row.ok_or_else(|| {
        conflict(
            "no_finishing_stage",
            format!(
                "lead {}'s pipeline has no active {semantic} stage: an admin adds one (POST /v1/pipelines/{{code}}/stages)",
                lead.id
            ),
        )
    })?;
    Ok(Target { id, code, semantic })
}

async fn insert_contact(
    tx: &mut Transaction<'_, Postgres>,
    name: Option<&str>,
    company_id: Option<i64>,
    keys: &[String],
) -> Result<i64, WorkError> {
    let id: i64 =
        sqlx::query_scalar("INSERT INTO contacts (name, company_id) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(company_id)
            .fetch_one(&mut **tx)
            .await?;
    // The same (key, kind, value) rows the client API writes. A key another contact holds
    // (a shared phone number of someone evidently else) stays with that contact.
    let parsed: Vec<IdentityKey> = keys
        .iter()
        .filter_map(|k| IdentityKey::from_stored(k))
        .collect();
    let names: Vec<String> = parsed.iter().map(IdentityKey::as_key).collect();
    let kinds: Vec<&str> = parsed.iter().map(IdentityKey::kind).collect();
    let values: Vec<&str> = parsed.iter().map(IdentityKey::value).collect();
    sqlx::query(
        "INSERT INTO contact_identities (key, contact_id, kind, value)
         SELECT k, $4, kind, v FROM unnest($1::text[], $2::text[], $3::text[]) AS t(k, kind, v)
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(&names)
    .bind(&kinds)
    .bind(&values)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

async fn insert_company(
    tx: &mut Transaction<'_, Postgres>,
    name: &str,
    domain: Option<&str>,
    keys: &[String],
) -> Result<i64, WorkError> {
    let id: i64 =
        sqlx::query_scalar("INSERT INTO companies (name, domain) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(domain)
            .fetch_one(&mut **tx)
            .await?;
    sqlx::query(
        "INSERT INTO company_identities (key, company_id)
         SELECT k, $2 FROM unnest($1::text[]) AS t(k) ON CONFLICT DO NOTHING",
    )
    .bind(keys)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

async fn insert_deal(
    tx: &mut Transaction<'_, Postgres>,
    deal: &NewDeal,
    facts: &LeadFacts,
    lead_id: i64,
    contact_id: Option<i64>,
    company_id: Option<i64>,
    actor: &str,
) -> Result<i64, WorkError> {
    let placement: Option<(i64, i64)> = sqlx::query_as(
        "SELECT p.id, s.id FROM pipelines p JOIN stages s ON s.pipeline_id = p.id AND s.is_initial
         WHERE p.kind = 'deal' AND ($1::text IS NULL OR p.code = $1)
         ORDER BY p.id LIMIT 1",
    )
    .bind(deal.pipeline.as_deref())
    .fetch_optional(&mut **tx)
    .await?;
    let (pipeline_id, stage_id) = placement.ok_or_else(|| {
        invalid(
            "unknown_deal_pipeline",
            match &deal.pipeline {
                Some(code) => format!(
                    "there is no deal pipeline `{code}` with an initial stage: pick one from GET /v1/pipelines"
                ),
                None => "there is no deal pipeline with an initial stage: configure one ([[pipelines]] kind = \"deal\")".to_owned(),
            },
        )
    })?;
    let title = deal
        .title
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(&facts.title);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO deals (title, amount, currency, contact_id, company_id, lead_id, pipeline_id,
                            stage_id, responsible_id, created_by)
         VALUES ($1, $2::numeric, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(title)
    .bind(deal.amount.as_deref())
    .bind(deal.currency.as_deref())
    .bind(contact_id)
    .bind(company_id)
    .bind(lead_id)
    .bind(pipeline_id)
    .bind(stage_id)
    .bind(facts.responsible_id)
    .bind(actor)
    .fetch_one(&mut **tx)
    .await?;
    Ok(id)
}

impl Store {
    /// Finishes a lead in one transaction with the lead row locked: converted (moving to
    /// its pipeline's success stage, making or linking clients and a deal) or junk (the
    /// failure stage, with the reason kept on the lead). A finished lead is refused.
    pub async fn finish_lead(
        &self,
        scope: &Scope,
        lead_id: i64,
        finish: &Finish,
        actor: &str,
    ) -> Result<FinishOutcome, WorkError> {
        // The keys to lock are read before the transaction; a lead outside the scope is
        // found missing by the locked read below.
        let Some(before) = lead_facts(self.pool(), lead_id).await? else {
            return Err(WorkError::NotFound(format!(
                "there is no lead with id `{lead_id}`"
            )));
        };
        // Every key a conversion may look up is locked before the lead row, so no two
        // transactions wait on each other in a cycle.
        let mut locked: BTreeSet<String> = BTreeSet::new();
        if let Finish::Converted(items) = finish {
            locked.extend(
                before
                    .person_keys
                    .iter()
                    .map(|k| format!("person\u{1f}{k}")),
            );
            locked.extend(
                before
                    .company_keys
                    .iter()
                    .map(|k| format!("company\u{1f}{k}")),
            );
            locked.extend(
                before
                    .company
                    .as_deref()
                    .and_then(company_key)
                    .map(|k| format!("company\u{1f}{}", CompanyKey::Name(k).as_key())),
            );
            for item in items {
                if let ConvertItem::Company { name, domain } = item
                    && (name.is_some() || domain.is_some())
                {
                    // A refusal is answered after the scope check, by `convert`.
                    if let Ok((_, _, keys)) =
                        wanted_company_keys(&before, name.as_deref(), domain.as_deref())
                    {
                        locked.extend(keys.iter().map(|k| format!("company\u{1f}{k}")));
                    }
                }
            }
        }
        let mut tx = self.pool().begin().await?;
        lock_keys(&mut tx, &locked).await?;
        let lead = lock_lead(&mut tx, scope, lead_id).await?;
        if lead.semantic.is_finished() {
            return Err(conflict(
                "lead_finished",
                format!(
                    "lead {lead_id} is finished already (stage `{}`, {}): an admin can reopen it with POST /v1/leads/{lead_id}/reopen",
                    lead.stage_code, lead.semantic
                ),
            ));
        }
        let facts = lead_facts(&mut *tx, lead_id)
            .await?
            .ok_or_else(|| WorkError::NotFound(format!("there is no lead with id `{lead_id}`")))?;
        let outcome = match finish {
            Finish::Junk { reason, note } => {
                let target = finishing_stage(&mut tx, &lead, Semantic::Failure).await?;
                let history = match note.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
                    Some(note) => format!("{reason}: {note}"),
                    None => reason.clone(),
                };
                let stage_move =
                    record_move(&mut tx, &lead, &target, Some(&history), actor).await?;
                sqlx::query("UPDATE leads SET junk_reason = $2 WHERE id = $1")
                    .bind(lead_id)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
                FinishOutcome {
                    lead_id,
                    outcome: "junk".into(),
                    stage_move,
                    contact: None,
                    company: None,
                    deal: None,
                    junk_reason: Some(reason.clone()),
                }
            }
            Finish::Converted(items) => {
                let mut outcome = convert(&mut tx, &lead, &facts, items, actor, &locked).await?;
                let target = finishing_stage(&mut tx, &lead, Semantic::Success).await?;
                outcome.stage_move =
                    record_move(&mut tx, &lead, &target, Some("converted"), actor).await?;
                outcome
            }
        };
        sqlx::query("INSERT INTO lead_events (lead_id, kind, data) VALUES ($1, $2, $3)")
            .bind(lead_id)
            .bind(&outcome.outcome)
            .bind(sqlx::types::Json(serde_json::json!({
                "by": actor,
                "contact": outcome.contact,
                "company": outcome.company,
                "deal_id": outcome.deal.as_ref().map(|d| d.id),
                "junk_reason": outcome.junk_reason,
            })))
            .execute(&mut *tx)
            .await?;
        let deal_id = outcome.deal.as_ref().map(|d| d.id);
        tx.commit().await?;
        let mut outcome = outcome;
        if let Some(id) = deal_id {
            outcome.deal = self.get_deal(&Scope::All, id).await?;
        }
        Ok(outcome)
    }

    /// Deals the caller may see, newest first.
    pub async fn list_deals(
        &self,
        scope: &Scope,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<DealPage, StoreError> {
        let limit = limit.clamp(1, 500);
        let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(DEAL_COLUMNS);
        sql.push(" WHERE true");
        push_deal_filter(&mut sql, scope);
        if let Some(cursor) = cursor {
            sql.push(" AND d.id < ").push_bind(cursor);
        }
        sql.push(" ORDER BY d.id DESC LIMIT ").push_bind(limit + 1);
        let rows = sql.build().fetch_all(self.pool()).await?;
        let mut items = rows
            .iter()
            .map(deal_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|d| d.id.to_string())
        } else {
            None
        };
        Ok(DealPage { items, next_cursor })
    }

    /// One deal, if the caller may see it.
    pub async fn get_deal(&self, scope: &Scope, id: i64) -> Result<Option<DealView>, StoreError> {
        let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(DEAL_COLUMNS);
        sql.push(" WHERE d.id = ").push_bind(id);
        push_deal_filter(&mut sql, scope);
        let row = sql.build().fetch_optional(self.pool()).await?;
        Ok(row.as_ref().map(deal_from_row).transpose()?)
    }
}

/// The contact the lead's person is, by the rules intake matches with: one holding a
/// strong key (email, messenger account) of the lead; failing that, one holding its phone
/// number that is not evidently someone else (another name and another address). Returns
/// the contact and its company.
async fn known_contact(
    tx: &mut Transaction<'_, Postgres>,
    facts: &LeadFacts,
) -> Result<Option<(i64, Option<i64>)>, WorkError> {
    if facts.person_keys.is_empty() {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT DISTINCT ON (c.id) c.id, c.company_id, c.name, ci.kind,
                ARRAY(SELECT k.key FROM contact_identities k WHERE k.contact_id = c.id
                      ORDER BY k.key) AS keys
         FROM contact_identities ci JOIN contacts c ON c.id = ci.contact_id
         WHERE ci.key = ANY($1)
         ORDER BY c.id, ci.kind <> 'phone' DESC",
    )
    .bind(&facts.person_keys)
    .fetch_all(&mut **tx)
    .await?;
    let person = |name: Option<String>, keys: &[String]| Person {
        name,
        strong_keys: keys
            .iter()
            .filter_map(|k| IdentityKey::from_stored(k))
            .filter(IdentityKey::is_strong)
            .collect(),
    };
    let me = person(facts.name.clone(), &facts.person_keys);
    let mut by_phone = None;
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let company: Option<i64> = row.try_get("company_id")?;
        let kind: String = row.try_get("kind")?;
        if kind != "phone" {
            return Ok(Some((id, company)));
        }
        let keys: Vec<String> = row.try_get("keys")?;
        if by_phone.is_none()
            && me
                .differs_from(&person(row.try_get("name")?, &keys))
                .is_none()
        {
            by_phone = Some((id, company));
        }
    }
    Ok(by_phone)
}

/// Makes or links the clients and the deal of a conversion and sets the lead's links.
async fn convert(
    tx: &mut Transaction<'_, Postgres>,
    lead: &LockedLead,
    facts: &LeadFacts,
    items: &[ConvertItem],
    actor: &str,
    locked: &BTreeSet<String>,
) -> Result<FinishOutcome, WorkError> {
    let repeat = facts.is_repeat || facts.contact_id.is_some();
    let mut contact: Option<ClientLink> = None;
    let mut company: Option<ClientLink> = None;
    if repeat {
        if let Some(item) = items.iter().find(|i| !matches!(i, ConvertItem::Deal(_))) {
            let what = match item {
                ConvertItem::Contact { .. } => "create a contact",
                ConvertItem::Company { .. } => "create a company",
                _ => "link another client",
            };
            return Err(conflict(
                "repeat_lead",
                format!(
                    "lead {} is a repeat lead of a known client (contact {}, company {}): it converts to a deal only, linked to that client; it cannot {what}",
                    lead.id,
                    facts.contact_id.map_or("none".into(), |c| c.to_string()),
                    facts.company_id.map_or("none".into(), |c| c.to_string()),
                ),
            ));
        }
        contact = facts.contact_id.map(|id| ClientLink {
            id,
            result: LinkResult::ExistingClient,
        });
        company = facts.company_id.map(|id| ClientLink {
            id,
            result: LinkResult::ExistingClient,
        });
    }
    let known_contact = known_contact(tx, facts).await?;

    // Companies first: a new contact works for the company this conversion links.
    for item in items {
        match item {
            ConvertItem::LinkCompany(id) => {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM companies WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut **tx)
                        .await?;
                if found.is_none() {
                    return Err(invalid(
                        "unknown_company",
                        format!("create[].link.company_id: there is no company {id}"),
                    ));
                }
                company = Some(ClientLink {
                    id: *id,
                    result: LinkResult::Linked,
                });
            }
            ConvertItem::Company { name, domain } => {
                if let Some((_, Some(company_id))) = known_contact {
                    company = Some(ClientLink {
                        id: company_id,
                        result: LinkResult::LinkedExisting,
                    });
                    continue;
                }
                let (name, domain, keys) =
                    wanted_company_keys(facts, name.as_deref(), domain.as_deref())?;
                // Locked before the lead row, unless the lead changed since (a merge brought
                // a company name): those few are locked now.
                let late: BTreeSet<String> = keys
                    .iter()
                    .map(|k| format!("company\u{1f}{k}"))
                    .filter(|k| !locked.contains(k))
                    .collect();
                lock_keys(tx, &late).await?;
                // A firm is also known by a number it lists that the person dialled from.
                let mut look_up = keys.clone();
                look_up.extend(
                    facts
                        .person_keys
                        .iter()
                        .filter(|k| k.starts_with("phone:"))
                        .map(|k| k.split(";ext=").next().unwrap_or(k).to_owned()),
                );
                let existing: Option<i64> = sqlx::query_scalar(
                    "SELECT min(company_id) FROM company_identities WHERE key = ANY($1)",
                )
                .bind(&look_up)
                .fetch_one(&mut **tx)
                .await?;
                company = Some(match existing {
                    Some(id) => ClientLink {
                        id,
                        result: LinkResult::LinkedExisting,
                    },
                    None => ClientLink {
                        id: insert_company(tx, &name, domain.as_deref(), &keys).await?,
                        result: LinkResult::Created,
                    },
                });
            }
            _ => {}
        }
    }
    for item in items {
        match item {
            ConvertItem::LinkContact(id) => {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM contacts WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut **tx)
                        .await?;
                if found.is_none() {
                    return Err(invalid(
                        "unknown_contact",
                        format!("create[].link.contact_id: there is no contact {id}"),
                    ));
                }
                contact = Some(ClientLink {
                    id: *id,
                    result: LinkResult::Linked,
                });
            }
            ConvertItem::Contact { name } => {
                contact = Some(match known_contact {
                    Some((id, _)) => ClientLink {
                        id,
                        result: LinkResult::LinkedExisting,
                    },
                    None => {
                        let name = name
                            .as_deref()
                            .map(str::trim)
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned)
                            .or_else(|| facts.name.clone());
                        ClientLink {
                            id: insert_contact(
                                tx,
                                name.as_deref(),
                                company.as_ref().map(|c| c.id),
                                &facts.person_keys,
                            )
                            .await?,
                            result: LinkResult::Created,
                        }
                    }
                });
            }
            _ => {}
        }
    }
    let contact_id = contact.as_ref().map(|c| c.id);
    let company_id = company.as_ref().map(|c| c.id);
    let mut deal = None;
    for item in items {
        if let ConvertItem::Deal(new) = item {
            let id = insert_deal(tx, new, facts, lead.id, contact_id, company_id, actor).await?;
            deal = Some(DealView {
                id,
                title: String::new(),
                amount: None,
                currency: None,
                contact_id,
                company_id,
                lead_id: Some(lead.id),
                pipeline: String::new(),
                stage: String::new(),
                responsible_id: facts.responsible_id,
                created_by: actor.to_owned(),
                created_at: Utc::now(),
            });
        }
    }
    sqlx::query(
        "UPDATE leads SET contact_id = COALESCE($2, contact_id), company_id = COALESCE($3, company_id)
         WHERE id = $1",
    )
    .bind(lead.id)
    .bind(contact_id)
    .bind(company_id)
    .execute(&mut **tx)
    .await?;
    Ok(FinishOutcome {
        lead_id: lead.id,
        outcome: "converted".into(),
        stage_move: StageMove {
            lead_id: lead.id,
            from: lead.stage_code.clone(),
            to: String::new(),
            changed_at: Utc::now(),
            changed_by: actor.to_owned(),
            reason: None,
        },
        contact,
        company,
        deal,
        junk_reason: None,
    })
}
