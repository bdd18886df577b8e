//! Reports over the stage history: the funnel by source or channel, leads per
//! responsible user, and how long leads stay in each stage.
//!
//! Each report is one SQL statement over `lead_summary` (no per-lead work in Rust), a
//! row per lead that triggers keep in step with `leads`, `lead_stage_history` and
//! `activities` (migration 0015), narrowed to the caller's [`Scope`]. The period always
//! selects leads by their creation time, `[from, to)`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, QueryBuilder, Row};

use crate::access::Scope;
use crate::error::StoreError;
use crate::store::Store;

/// How the funnel groups leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunnelBy {
    /// By the lead's source (form, mailbox, bot, line).
    Source,
    /// By the channel it came through.
    Channel,
}

impl FunnelBy {
    fn column(self) -> &'static str {
        match self {
            FunnelBy::Source => "source",
            FunnelBy::Channel => "channel",
        }
    }
}

/// Leads created in a period, in one pipeline.
#[derive(Debug, Clone)]
pub struct ReportPeriod {
    /// Leads created at or after this instant.
    pub from: DateTime<Utc>,
    /// Leads created before this instant.
    pub to: DateTime<Utc>,
}

/// A stage of the reported pipeline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReportStage {
    /// Stage code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// `open`, `frozen`, `success`, `failure` or `abandoned`.
    pub semantic: String,
}

/// The funnel of one source or channel.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FunnelGroup {
    /// The source or channel.
    pub key: String,
    /// Leads created in the period.
    pub leads: i64,
    /// Per stage code: how many of these leads ever entered it (each lead once).
    pub reached: BTreeMap<String, i64>,
    /// Leads that reached a success stage.
    pub converted: i64,
    /// `converted` as a percentage of `leads`, one decimal.
    pub converted_pct: f64,
    /// Leads that reached a failure stage.
    pub junk: i64,
    /// `junk` as a percentage of `leads`, one decimal.
    pub junk_pct: f64,
    /// Junk leads per reason (`unspecified` when none was given).
    pub junk_reasons: BTreeMap<String, i64>,
}

/// The funnel report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FunnelReport {
    /// Start of the period (inclusive).
    pub from: DateTime<Utc>,
    /// End of the period (exclusive).
    pub to: DateTime<Utc>,
    /// Pipeline code.
    pub pipeline: String,
    /// `source` or `channel`.
    pub by: String,
    /// The pipeline's stages in order (removed ones included: history names them).
    pub stages: Vec<ReportStage>,
    /// One entry per source or channel, most leads first.
    pub groups: Vec<FunnelGroup>,
}

/// Leads of one responsible user.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResponsibleRow {
    /// The user; `null` for the unassigned queue.
    pub responsible_id: Option<i64>,
    /// The user's name.
    pub name: Option<String>,
    /// Leads created in the period.
    pub total: i64,
    /// Of those, in an open or frozen stage now.
    pub open: i64,
    /// Of those, in a success stage now.
    pub converted: i64,
    /// Of those, in a failure stage now.
    pub junk: i64,
}

/// The per-responsible report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResponsibleReport {
    /// Start of the period (inclusive).
    pub from: DateTime<Utc>,
    /// End of the period (exclusive).
    pub to: DateTime<Utc>,
    /// One row per responsible user, most leads first.
    pub rows: Vec<ResponsibleRow>,
}

/// Time spent in one stage.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StageTime {
    /// Stage code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Stays measured (a lead entering the stage twice counts twice).
    pub stays: i64,
    /// Of those, stays not over yet, counted up to `measured_at`.
    pub ongoing: i64,
    /// Median length of a stay, seconds.
    pub median_secs: Option<f64>,
    /// 90th percentile, seconds.
    pub p90_secs: Option<f64>,
}

/// The stage-times report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StageTimesReport {
    /// Start of the period (inclusive).
    pub from: DateTime<Utc>,
    /// End of the period (exclusive).
    pub to: DateTime<Utc>,
    /// Pipeline code.
    pub pipeline: String,
    /// Stays still going on are counted up to this instant; the final stay in a
    /// success, failure or abandoned stage is not a stay and is left out.
    pub measured_at: DateTime<Utc>,
    /// One entry per stage with at least one stay, in pipeline order.
    pub stages: Vec<StageTime>,
}

fn pct(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 1000.0 / whole as f64).round() / 10.0
    }
}

impl Store {
    /// The id of a pipeline by code; `None` when there is no such pipeline.
    pub async fn pipeline_id(&self, code: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM pipelines WHERE code = $1")
                .bind(code)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// A read-only transaction for a report: enough memory to sort and hash a year of
    /// history without spilling to disk, and no JIT (its compile time, seconds on these
    /// plans, is more than it saves).
    async fn report_session(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION READ ONLY")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SET LOCAL work_mem = '64MB'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
        Ok(tx)
    }

    /// `EXPLAIN (ANALYZE, BUFFERS)` of the three report statements (the funnel by source,
    /// leads per responsible, stage times), each as its plan's lines: for the benchmark.
    pub async fn explain_reports(
        &self,
        scope: &Scope,
        pipeline_id: i64,
        period: &ReportPeriod,
    ) -> Result<Vec<(&'static str, Vec<String>)>, StoreError> {
        const EXPLAIN: &str = "EXPLAIN (ANALYZE, BUFFERS) ";
        let mut out = Vec::new();
        let mut tx = self.report_session().await?;
        for (name, mut sql) in [
            (
                "funnel",
                funnel_sql(EXPLAIN, scope, pipeline_id, FunnelBy::Source, period),
            ),
            ("responsible", responsible_sql(EXPLAIN, scope, period)),
            (
                "stage-times",
                stage_times_sql(EXPLAIN, scope, pipeline_id, period),
            ),
        ] {
            let lines = sql
                .build()
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<Result<Vec<_>, _>>()?;
            out.push((name, lines));
        }
        Ok(out)
    }

    /// The funnel of leads created in `period` in one pipeline, by source or channel.
    pub async fn funnel_report(
        &self,
        scope: &Scope,
        pipeline: &str,
        pipeline_id: i64,
        by: FunnelBy,
        period: &ReportPeriod,
    ) -> Result<FunnelReport, StoreError> {
        let mut sql = funnel_sql("", scope, pipeline_id, by, period);
        let mut tx = self.report_session().await?;
        let rows = sql.build().fetch_all(&mut *tx).await?;
        let mut stages = Vec::new();
        let mut groups: BTreeMap<String, FunnelGroup> = BTreeMap::new();
        for row in &rows {
            let part: i32 = row.try_get("part")?;
            let n: i64 = row.try_get("n")?;
            if part == 0 {
                stages.push(ReportStage {
                    code: row.try_get("k")?,
                    name: row.try_get("k2")?,
                    semantic: row.try_get("k3")?,
                });
                continue;
            }
            let grp: String = row.try_get("grp")?;
            let group = groups.entry(grp.clone()).or_insert_with(|| FunnelGroup {
                key: grp,
                leads: 0,
                reached: BTreeMap::new(),
                converted: 0,
                converted_pct: 0.0,
                junk: 0,
                junk_pct: 0.0,
                junk_reasons: BTreeMap::new(),
            });
            match part {
                1 => group.leads = n,
                2 => {
                    group.reached.insert(row.try_get("k")?, n);
                }
                3 => group.converted = n,
                _ => {
                    group.junk += n;
                    group.junk_reasons.insert(row.try_get("k")?, n);
                }
            }
        }
        let mut groups: Vec<FunnelGroup> = groups
            .into_values()
            .map(|mut g| {
                for stage in &stages {
                    g.reached.entry(stage.code.clone()).or_insert(0);
                }
                g.converted_pct = pct(g.converted, g.leads);
                g.junk_pct = pct(g.junk, g.leads);
                g
            })
            .collect();
        groups.sort_by(|a, b| b.leads.cmp(&a.leads).then_with(|| a.key.cmp(&b.key)));
        Ok(FunnelReport {
            from: period.from,
            to: period.to,
            pipeline: pipeline.to_owned(),
            by: by.column().to_owned(),
            stages,
            groups,
        })
    }

    /// Leads created in `period` (every lead pipeline) per responsible user, by where
    /// they stand now.
    pub async fn responsible_report(
        &self,
        scope: &Scope,
        period: &ReportPeriod,
    ) -> Result<ResponsibleReport, StoreError> {
        let mut sql = responsible_sql("", scope, period);
        let mut tx = self.report_session().await?;
        let rows = sql
            .build()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                Ok(ResponsibleRow {
                    responsible_id: r.try_get("responsible_id")?,
                    name: r.try_get("name")?,
                    total: r.try_get("total")?,
                    open: r.try_get("open")?,
                    converted: r.try_get("converted")?,
                    junk: r.try_get("junk")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(ResponsibleReport {
            from: period.from,
            to: period.to,
            rows,
        })
    }

    /// Median and 90th percentile of the time leads created in `period` spent in each
    /// stage of a pipeline, from consecutive stage-history rows; a stay still going on
    /// counts up to now.
    pub async fn stage_times_report(
        &self,
        scope: &Scope,
        pipeline: &str,
        pipeline_id: i64,
        period: &ReportPeriod,
    ) -> Result<StageTimesReport, StoreError> {
        let mut sql = stage_times_sql("", scope, pipeline_id, period);
        let mut tx = self.report_session().await?;
        let rows = sql.build().fetch_all(&mut *tx).await?;
        let mut measured_at = None;
        let stages = rows
            .iter()
            .map(|r| {
                measured_at = Some(r.try_get("measured_at")?);
                Ok(StageTime {
                    code: r.try_get("code")?,
                    name: r.try_get("name")?,
                    stays: r.try_get("stays")?,
                    ongoing: r.try_get("ongoing")?,
                    median_secs: r.try_get("median_secs")?,
                    p90_secs: r.try_get("p90_secs")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(StageTimesReport {
            from: period.from,
            to: period.to,
            pipeline: pipeline.to_owned(),
            measured_at: measured_at.unwrap_or_else(Utc::now),
            stages,
        })
    }
}

/// The statement of [`Store::funnel_report`], after `prefix` (`EXPLAIN ...` or nothing).
fn funnel_sql(
    prefix: &str,
    scope: &Scope,
    pipeline_id: i64,
    by: FunnelBy,
    period: &ReportPeriod,
) -> QueryBuilder<'static, Postgres> {
    // One pass over the leads' summaries folds them into a few hundred rows (one per
    // group, set of stages reached and junk reason); every figure is summed from those.
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "{prefix}WITH sem AS (
            SELECT coalesce(array_agg(id) FILTER (WHERE semantic = 'success'), '{{}}') AS succ,
                   coalesce(array_agg(id) FILTER (WHERE semantic = 'failure'), '{{}}') AS fail
            FROM stages),
         paths AS (
            SELECT l.{col} AS grp, l.reached, l.junk_reason, count(*) AS n
            FROM lead_summary l
            WHERE l.created_at >= ",
        col = by.column(),
    ));
    sql.push_bind(period.from)
        .push(" AND l.created_at < ")
        .push_bind(period.to)
        .push(" AND l.pipeline_id = ")
        .push_bind(pipeline_id);
    scope.push_lead_filter(&mut sql, "l");
    sql.push(
        " GROUP BY 1, 2, 3)
         SELECT 0 AS part, NULL::text AS grp, s.code AS k, s.name AS k2, s.semantic AS k3,
                s.sort_order::bigint AS n
           FROM stages s WHERE s.pipeline_id = ",
    )
    .push_bind(pipeline_id)
    .push(
        " UNION ALL
         SELECT 1, grp, NULL, NULL, NULL, sum(n)::bigint FROM paths GROUP BY grp
         UNION ALL
         SELECT 2, p.grp, s.code, NULL, NULL, sum(p.n)::bigint
           FROM paths p CROSS JOIN LATERAL unnest(p.reached) AS r(stage_id)
           JOIN stages s ON s.id = r.stage_id GROUP BY p.grp, s.code
         UNION ALL
         SELECT 3, grp, NULL, NULL, NULL, coalesce(sum(n) FILTER (WHERE reached && sem.succ), 0)::bigint
           FROM paths CROSS JOIN sem GROUP BY grp
         UNION ALL
         SELECT 4, grp, coalesce(junk_reason, 'unspecified'), NULL, NULL, sum(n)::bigint
           FROM paths CROSS JOIN sem WHERE reached && sem.fail GROUP BY grp, 3
         ORDER BY 1, 6, 3",
    );
    sql
}

/// The statement of [`Store::responsible_report`], after `prefix` (`EXPLAIN ...` or nothing).
fn responsible_sql(
    prefix: &str,
    scope: &Scope,
    period: &ReportPeriod,
) -> QueryBuilder<'static, Postgres> {
    // Counted per (responsible, stage) first: stages and names are joined to a few
    // hundred rows instead of a row per lead.
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "{prefix}SELECT c.responsible_id, min(u.name) AS name, sum(c.n)::bigint AS total,
                coalesce(sum(c.n) FILTER (WHERE s.semantic IN ('open', 'frozen')), 0)::bigint AS open,
                coalesce(sum(c.n) FILTER (WHERE s.semantic = 'success'), 0)::bigint AS converted,
                coalesce(sum(c.n) FILTER (WHERE s.semantic = 'failure'), 0)::bigint AS junk
         FROM (SELECT l.responsible_id, l.stage_id, count(*) AS n
               FROM lead_summary l
               WHERE l.created_at >= "
    ));
    sql.push_bind(period.from)
        .push(" AND l.created_at < ")
        .push_bind(period.to);
    scope.push_lead_filter(&mut sql, "l");
    sql.push(
        " GROUP BY 1, 2) c
         JOIN stages s ON s.id = c.stage_id
         LEFT JOIN users u ON u.id = c.responsible_id
         GROUP BY c.responsible_id ORDER BY total DESC, c.responsible_id NULLS LAST",
    );
    sql
}

/// The statement of [`Store::stage_times_report`], after `prefix` (`EXPLAIN ...` or nothing).
fn stage_times_sql(
    prefix: &str,
    scope: &Scope,
    pipeline_id: i64,
    period: &ReportPeriod,
) -> QueryBuilder<'static, Postgres> {
    // The summary holds each stay that is over with its length; the last stay (secs
    // NULL in the lockstep unnest) is measured up to now. Lengths are gathered per stage
    // by hashing and sorted once per stage, instead of sorting every stay by stage first.
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "{prefix}WITH stays AS (
            SELECT x.stage_id, x.secs IS NULL AS ongoing,
                   coalesce(x.secs, extract(epoch FROM now() - x.last_at)::float8) AS secs
            FROM (SELECT unnest(l.stay_stage) AS stage_id, unnest(l.stay_secs) AS secs, l.last_at
                  FROM lead_summary l
                  WHERE l.created_at >= "
    ));
    sql.push_bind(period.from)
        .push(" AND l.created_at < ")
        .push_bind(period.to)
        .push(" AND l.pipeline_id = ")
        .push_bind(pipeline_id);
    scope.push_lead_filter(&mut sql, "l");
    sql.push(
        ") x),
         per_stage AS (
            SELECT st.stage_id, count(*) AS stays, count(*) FILTER (WHERE st.ongoing) AS ongoing,
                   array_agg(st.secs) AS secs
            FROM stays st
            WHERE NOT st.ongoing
               OR st.stage_id = ANY (ARRAY(SELECT id FROM stages WHERE semantic IN ('open', 'frozen')))
            GROUP BY st.stage_id)
         SELECT s.code, s.name, p.stays, p.ongoing, m.median_secs, m.p90_secs,
                now() AS measured_at
         FROM per_stage p JOIN stages s ON s.id = p.stage_id
         CROSS JOIN LATERAL (
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS median_secs,
                   percentile_cont(0.9) WITHIN GROUP (ORDER BY v) AS p90_secs
            FROM (SELECT unnest(p.secs) AS v) u) m
         ORDER BY s.sort_order, s.id",
    );
    sql
}
