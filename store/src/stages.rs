//! Pipelines and their stages: the admin changes, the sync from configuration, and moving
//! a lead between stages (with its history row) or reopening a finished one.
//!
//! Stages are never deleted: history rows point at them. Removing one sets `removed_at`,
//! and only once no lead (or deal) sits in it. Renaming or reordering changes the stage
//! row only, so every history row keeps pointing at the same stage.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use crate::access::Scope;
use crate::error::StoreError;
use crate::store::Store;

/// What a stage means for the leads in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Semantic {
    /// Being worked.
    Open,
    /// Parked, still in progress (intake treats it as open).
    Frozen,
    /// Finished: converted.
    Success,
    /// Finished: junk.
    Failure,
    /// Finished: given up.
    Abandoned,
}

impl Semantic {
    /// The name as stored and written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Semantic::Open => "open",
            Semantic::Frozen => "frozen",
            Semantic::Success => "success",
            Semantic::Failure => "failure",
            Semantic::Abandoned => "abandoned",
        }
    }

    /// Reads a stored name.
    pub fn parse(value: &str) -> Option<Semantic> {
        Some(match value {
            "open" => Semantic::Open,
            "frozen" => Semantic::Frozen,
            "success" => Semantic::Success,
            "failure" => Semantic::Failure,
            "abandoned" => Semantic::Abandoned,
            _ => return None,
        })
    }

    /// True for success, failure and abandoned: the lead is no longer worked (intake
    /// files a new inquiry from the person as a new or repeat lead, not a merge).
    pub fn is_finished(self) -> bool {
        !matches!(self, Semantic::Open | Semantic::Frozen)
    }
}

impl fmt::Display for Semantic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a pipeline holds leads or deals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PipelineKind {
    /// Leads.
    #[default]
    Lead,
    /// Deals made by converting leads.
    Deal,
}

impl PipelineKind {
    /// The name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineKind::Lead => "lead",
            PipelineKind::Deal => "deal",
        }
    }
}

/// A stage as configured or sent to the admin API.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
pub struct StageSpec {
    /// Stable code (`a-z`, `0-9`, `_`, `-`), used by the API and in history.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Display colour, `#RRGGBB`.
    #[serde(alias = "colour")]
    pub color: String,
    /// What the stage means.
    pub semantic: Semantic,
    /// Days a lead may stay before it is stale; 0 = never stale.
    #[serde(default)]
    pub deadline_days: u32,
    /// The stage new leads (or deals) enter; exactly one per pipeline.
    #[serde(default)]
    pub initial: bool,
    /// An inactive stage takes no new leads but keeps those it has.
    #[serde(default = "yes")]
    pub active: bool,
    /// Position; when absent, the stage's place in the list (or after the last stage).
    #[serde(default)]
    pub order: Option<i32>,
}

fn yes() -> bool {
    true
}

/// A pipeline as configured or sent to the admin API.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
pub struct PipelineSpec {
    /// Stable code (`default`, `deals`, ...).
    pub code: String,
    /// Display name.
    pub name: String,
    /// `lead` or `deal`.
    #[serde(default)]
    pub kind: PipelineKind,
    /// The stages, in display order.
    #[serde(default)]
    pub stages: Vec<StageSpec>,
}

/// True for a code of 1 to 64 characters `a-z`, `0-9`, `_`, `-`.
pub fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// True for `#RRGGBB`.
pub fn valid_color(color: &str) -> bool {
    color.len() == 7 && color.starts_with('#') && color[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl StageSpec {
    /// What is wrong with this stage, as `(field, problem)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !valid_code(&self.code) {
            out.push((
                "code".into(),
                format!(
                    "`{}` is not a code: use 1 to 64 characters a-z, 0-9, _ or -",
                    self.code
                ),
            ));
        }
        if self.name.trim().is_empty() {
            out.push(("name".into(), "is empty: give the stage a name".into()));
        }
        if !valid_color(&self.color) {
            out.push((
                "color".into(),
                format!("`{}` is not a colour like #2196F3", self.color),
            ));
        }
        if self.deadline_days > 3650 {
            out.push((
                "deadline_days".into(),
                "must be at most 3650 (0 = never stale)".into(),
            ));
        }
        if self.initial && self.semantic.is_finished() {
            out.push((
                "initial".into(),
                format!(
                    "a {} stage cannot be initial: new leads enter an open or frozen stage",
                    self.semantic
                ),
            ));
        }
        out
    }
}

impl PipelineSpec {
    /// What is wrong with this pipeline, as `(field path, problem)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !valid_code(&self.code) {
            out.push((
                "code".into(),
                format!(
                    "`{}` is not a code: use 1 to 64 characters a-z, 0-9, _ or -",
                    self.code
                ),
            ));
        }
        if self.name.trim().is_empty() {
            out.push(("name".into(), "is empty: give the pipeline a name".into()));
        }
        if self.stages.is_empty() {
            out.push(("stages".into(), "list at least one stage".into()));
        }
        let mut seen = HashSet::new();
        for (i, stage) in self.stages.iter().enumerate() {
            for (field, problem) in stage.problems() {
                out.push((format!("stages[{i}].{field}"), problem));
            }
            if !seen.insert(stage.code.as_str()) {
                out.push((
                    format!("stages[{i}].code"),
                    format!("`{}` is listed twice: stage codes are unique", stage.code),
                ));
            }
        }
        let initial = self.stages.iter().filter(|s| s.initial).count();
        if !self.stages.is_empty() && initial != 1 {
            out.push((
                "stages".into(),
                format!("mark exactly one stage `initial = true` (found {initial})"),
            ));
        }
        out
    }
}

/// A stage as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StageView {
    /// Stage id.
    pub id: i64,
    /// Code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Position (ascending).
    pub order: i32,
    /// `#RRGGBB`.
    pub color: String,
    /// What the stage means.
    pub semantic: Semantic,
    /// Days before a lead in it is stale; 0 = never.
    pub deadline_days: i32,
    /// New leads enter here.
    pub initial: bool,
    /// Takes leads.
    pub active: bool,
    /// When the stage was removed; removed stages stay for history.
    pub removed_at: Option<DateTime<Utc>>,
    /// Leads (or deals) in the stage now.
    pub count: i64,
}

/// A pipeline with its stages.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PipelineView {
    /// Pipeline id.
    pub id: i64,
    /// Code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// `lead` or `deal`.
    pub kind: PipelineKind,
    /// Stages in order, removed ones last.
    pub stages: Vec<StageView>,
}

/// Changes to a stage; absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StagePatch {
    /// Display name.
    pub name: Option<String>,
    /// Position.
    pub order: Option<i32>,
    /// `#RRGGBB`.
    #[serde(alias = "colour")]
    pub color: Option<String>,
    /// Takes new leads.
    pub active: Option<bool>,
    /// What the stage means.
    pub semantic: Option<Semantic>,
    /// Days before stale; 0 = never.
    pub deadline_days: Option<u32>,
    /// Make this the pipeline's initial stage (only `true`).
    pub initial: Option<bool>,
}

/// Why a change to pipelines or a lead's stage was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// No such lead, pipeline, stage or deal (or out of the caller's scope).
    #[error("{0}")]
    NotFound(String),
    /// The change collides with the current state (a code taken, a stage in use, a
    /// finished lead); `code` is the stable answer code.
    #[error("{message}")]
    Conflict {
        /// Stable code (`stage_in_use`, `lead_finished`, ...).
        code: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// The request names something unusable (an inactive stage, a bad value).
    #[error("{message}")]
    Invalid {
        /// Stable code.
        code: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for WorkError {
    fn from(e: sqlx::Error) -> Self {
        WorkError::Store(e.into())
    }
}

pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> WorkError {
    WorkError::Conflict {
        code,
        message: message.into(),
    }
}

pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> WorkError {
    WorkError::Invalid {
        code,
        message: message.into(),
    }
}

/// A lead's stage change as recorded.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StageMove {
    /// The lead.
    pub lead_id: i64,
    /// Stage code before.
    pub from: String,
    /// Stage code now.
    pub to: String,
    /// When.
    pub changed_at: DateTime<Utc>,
    /// Who (`user:12`, `admin`).
    pub changed_by: String,
    /// Why, as given.
    pub reason: Option<String>,
}

const STAGE_COLUMNS: &str =
    "SELECT s.id, s.pipeline_id, s.code, s.name, s.sort_order, s.color, s.semantic,
        s.deadline_days, s.is_initial, s.active, s.removed_at,
        CASE WHEN p.kind = 'deal'
             THEN (SELECT count(*) FROM deals d WHERE d.stage_id = s.id)
             ELSE (SELECT count(*) FROM leads l WHERE l.stage_id = s.id) END AS count
     FROM stages s JOIN pipelines p ON p.id = s.pipeline_id";

fn stage_from_row(row: &PgRow) -> Result<StageView, sqlx::Error> {
    let semantic: String = row.try_get("semantic")?;
    Ok(StageView {
        id: row.try_get("id")?,
        code: row.try_get("code")?,
        name: row.try_get("name")?,
        order: row.try_get("sort_order")?,
        color: row.try_get("color")?,
        semantic: Semantic::parse(&semantic).unwrap_or(Semantic::Open),
        deadline_days: row.try_get("deadline_days")?,
        initial: row.try_get("is_initial")?,
        active: row.try_get("active")?,
        removed_at: row.try_get("removed_at")?,
        count: row.try_get("count")?,
    })
}

/// A pipeline row, locked for the change.
struct PipelineRow {
    id: i64,
    kind: String,
}

async fn lock_pipeline(
    tx: &mut Transaction<'_, Postgres>,
    code: &str,
) -> Result<PipelineRow, WorkError> {
    let row = sqlx::query("SELECT id, kind FROM pipelines WHERE code = $1 FOR UPDATE")
        .bind(code)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| WorkError::NotFound(format!("there is no pipeline `{code}`")))?;
    Ok(PipelineRow {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
    })
}

async fn stage_in(
    tx: &mut Transaction<'_, Postgres>,
    pipeline: &str,
    pipeline_id: i64,
    code: &str,
) -> Result<StageView, WorkError> {
    let sql = format!("{STAGE_COLUMNS} WHERE s.pipeline_id = $1 AND s.code = $2");
    let row = sqlx::query(&sql)
        .bind(pipeline_id)
        .bind(code)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| {
            WorkError::NotFound(format!("pipeline `{pipeline}` has no stage `{code}`"))
        })?;
    Ok(stage_from_row(&row)?)
}

async fn next_order(
    tx: &mut Transaction<'_, Postgres>,
    pipeline_id: i64,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(max(sort_order), 0) + 10 FROM stages WHERE pipeline_id = $1",
    )
    .bind(pipeline_id)
    .fetch_one(&mut **tx)
    .await
}

/// Inserts or updates one stage by code; `removed_at` is cleared (a configured stage is
/// present again).
async fn upsert_stage(
    tx: &mut Transaction<'_, Postgres>,
    pipeline_id: i64,
    stage: &StageSpec,
    order: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stages (pipeline_id, code, name, sort_order, color, semantic, deadline_days,
                             is_initial, active)
         VALUES ($1, $2, $3, $4, $5, $6, $7, false, $8)
         ON CONFLICT (pipeline_id, code) DO UPDATE
            SET name = EXCLUDED.name, sort_order = EXCLUDED.sort_order, color = EXCLUDED.color,
                semantic = EXCLUDED.semantic, deadline_days = EXCLUDED.deadline_days,
                active = EXCLUDED.active, removed_at = NULL",
    )
    .bind(pipeline_id)
    .bind(&stage.code)
    .bind(stage.name.trim())
    .bind(order)
    .bind(stage.color.to_ascii_uppercase())
    .bind(stage.semantic.as_str())
    .bind(stage.deadline_days as i32)
    .bind(stage.active)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Makes `code` the pipeline's only initial stage.
async fn set_initial(
    tx: &mut Transaction<'_, Postgres>,
    pipeline_id: i64,
    code: &str,
) -> Result<(), sqlx::Error> {
    // Clear first: the unique index allows one initial stage per pipeline at any moment.
    sqlx::query(
        "UPDATE stages SET is_initial = false WHERE pipeline_id = $1 AND is_initial AND code <> $2",
    )
    .bind(pipeline_id)
    .bind(code)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE stages SET is_initial = true WHERE pipeline_id = $1 AND code = $2")
        .bind(pipeline_id)
        .bind(code)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// How many leads (or deals, in a deal pipeline) sit in a stage.
async fn holding(
    tx: &mut Transaction<'_, Postgres>,
    kind: &str,
    stage_id: i64,
) -> Result<i64, sqlx::Error> {
    let sql = if kind == "deal" {
        "SELECT count(*) FROM deals WHERE stage_id = $1"
    } else {
        "SELECT count(*) FROM leads WHERE stage_id = $1"
    };
    sqlx::query_scalar(sql)
        .bind(stage_id)
        .fetch_one(&mut **tx)
        .await
}

impl Store {
    /// Every pipeline with its stages (removed stages included, marked).
    pub async fn list_pipelines(&self) -> Result<Vec<PipelineView>, StoreError> {
        let pipelines = sqlx::query("SELECT id, code, name, kind FROM pipelines ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        let sql = format!(
            "{STAGE_COLUMNS} ORDER BY s.pipeline_id, s.removed_at IS NOT NULL, s.sort_order, s.id"
        );
        let stages = sqlx::query(&sql).fetch_all(self.pool()).await?;
        let mut out = Vec::with_capacity(pipelines.len());
        for row in &pipelines {
            let id: i64 = row.try_get("id")?;
            let kind: String = row.try_get("kind")?;
            let mut items = Vec::new();
            for stage in &stages {
                if stage.try_get::<i64, _>("pipeline_id")? == id {
                    items.push(stage_from_row(stage)?);
                }
            }
            out.push(PipelineView {
                id,
                code: row.try_get("code")?,
                name: row.try_get("name")?,
                kind: if kind == "deal" {
                    PipelineKind::Deal
                } else {
                    PipelineKind::Lead
                },
                stages: items,
            });
        }
        Ok(out)
    }

    /// One pipeline with its stages.
    pub async fn get_pipeline(&self, code: &str) -> Result<Option<PipelineView>, StoreError> {
        Ok(self
            .list_pipelines()
            .await?
            .into_iter()
            .find(|p| p.code == code))
    }

    /// Creates a pipeline with its stages (the spec is checked by the caller).
    pub async fn create_pipeline(&self, spec: &PipelineSpec) -> Result<PipelineView, WorkError> {
        let mut tx = self.pool().begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO pipelines (code, name, kind) VALUES ($1, $2, $3)
             ON CONFLICT (code) DO NOTHING RETURNING id",
        )
        .bind(&spec.code)
        .bind(spec.name.trim())
        .bind(spec.kind.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Err(conflict(
                "pipeline_exists",
                format!(
                    "a pipeline `{}` exists already: add stages to it or pick another code",
                    spec.code
                ),
            ));
        };
        for (i, stage) in spec.stages.iter().enumerate() {
            upsert_stage(
                &mut tx,
                id,
                stage,
                stage.order.unwrap_or((i as i32 + 1) * 10),
            )
            .await?;
        }
        if let Some(initial) = spec.stages.iter().find(|s| s.initial) {
            set_initial(&mut tx, id, &initial.code).await?;
        }
        tx.commit().await?;
        self.get_pipeline(&spec.code)
            .await?
            .ok_or_else(|| WorkError::NotFound(format!("pipeline `{}`", spec.code)))
    }

    /// Adds a stage to a pipeline (checked by the caller); `initial` moves the initial
    /// mark to it.
    pub async fn add_stage(
        &self,
        pipeline: &str,
        stage: &StageSpec,
    ) -> Result<StageView, WorkError> {
        let mut tx = self.pool().begin().await?;
        let p = lock_pipeline(&mut tx, pipeline).await?;
        let taken: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
            "SELECT removed_at FROM stages WHERE pipeline_id = $1 AND code = $2",
        )
        .bind(p.id)
        .bind(&stage.code)
        .fetch_optional(&mut *tx)
        .await?;
        match taken {
            Some(None) => {
                return Err(conflict(
                    "stage_exists",
                    format!(
                        "pipeline `{pipeline}` has a stage `{}` already: change it with PATCH",
                        stage.code
                    ),
                ));
            }
            Some(Some(_)) => {
                return Err(conflict(
                    "stage_exists",
                    format!(
                        "pipeline `{pipeline}` had a stage `{}` (removed; history still names it): pick another code",
                        stage.code
                    ),
                ));
            }
            None => {}
        }
        let order = match stage.order {
            Some(order) => order,
            None => next_order(&mut tx, p.id).await?,
        };
        upsert_stage(&mut tx, p.id, stage, order).await?;
        if stage.initial {
            set_initial(&mut tx, p.id, &stage.code).await?;
        }
        let view = stage_in(&mut tx, pipeline, p.id, &stage.code).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Changes a stage. A stage holding leads keeps its meaning's side (a stage leads are
    /// worked in cannot become a finished one, and back); the initial stage stays active
    /// and open; a removed stage cannot be changed.
    pub async fn update_stage(
        &self,
        pipeline: &str,
        code: &str,
        patch: &StagePatch,
    ) -> Result<StageView, WorkError> {
        let mut tx = self.pool().begin().await?;
        let p = lock_pipeline(&mut tx, pipeline).await?;
        let found = stage_in(&mut tx, pipeline, p.id, code).await?;
        // Lock the row and count again: a lead moved in meanwhile waits (moves read the
        // stage FOR SHARE), so the count below stays true until commit.
        sqlx::query("SELECT 1 FROM stages WHERE id = $1 FOR UPDATE")
            .bind(found.id)
            .execute(&mut *tx)
            .await?;
        let current = stage_in(&mut tx, pipeline, p.id, code).await?;
        if current.removed_at.is_some() {
            return Err(conflict(
                "stage_removed",
                format!("stage `{code}` of pipeline `{pipeline}` is removed and cannot change"),
            ));
        }
        if let Some(semantic) = patch.semantic
            && semantic.is_finished() != current.semantic.is_finished()
            && current.count > 0
        {
            return Err(conflict(
                "stage_in_use",
                format!(
                    "stage `{code}` holds {} and cannot turn from {} to {semantic}: move them first",
                    plural(current.count, &p.kind),
                    current.semantic
                ),
            ));
        }
        let semantic = patch.semantic.unwrap_or(current.semantic);
        let initial = current.initial || patch.initial == Some(true);
        if patch.initial == Some(false) && current.initial {
            return Err(invalid(
                "initial_stage",
                format!(
                    "to move the initial mark, set `initial: true` on another stage of `{pipeline}`"
                ),
            ));
        }
        if initial && (semantic.is_finished() || !patch.active.unwrap_or(current.active)) {
            return Err(invalid(
                "initial_stage",
                format!(
                    "`{code}` is the initial stage of `{pipeline}`: it must stay active and open or frozen (make another stage initial first)"
                ),
            ));
        }
        sqlx::query(
            "UPDATE stages SET name = COALESCE($2, name), sort_order = COALESCE($3, sort_order),
                    color = COALESCE($4, color), active = COALESCE($5, active),
                    semantic = COALESCE($6, semantic), deadline_days = COALESCE($7, deadline_days)
             WHERE id = $1",
        )
        .bind(current.id)
        .bind(patch.name.as_deref().map(str::trim))
        .bind(patch.order)
        .bind(patch.color.as_deref().map(str::to_ascii_uppercase))
        .bind(patch.active)
        .bind(patch.semantic.map(Semantic::as_str))
        .bind(patch.deadline_days.map(|d| d as i32))
        .execute(&mut *tx)
        .await?;
        if patch.initial == Some(true) && !current.initial {
            set_initial(&mut tx, p.id, code).await?;
        }
        let view = stage_in(&mut tx, pipeline, p.id, code).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Removes a stage (soft: `removed_at`, inactive). Refused while it holds leads or
    /// deals (`stage_in_use`, naming how many) and for the initial stage.
    pub async fn remove_stage(&self, pipeline: &str, code: &str) -> Result<StageView, WorkError> {
        let mut tx = self.pool().begin().await?;
        let p = lock_pipeline(&mut tx, pipeline).await?;
        let current = stage_in(&mut tx, pipeline, p.id, code).await?;
        if current.removed_at.is_some() {
            return Ok(current);
        }
        if current.initial {
            return Err(conflict(
                "initial_stage",
                format!(
                    "`{code}` is the initial stage of `{pipeline}`: make another stage initial first"
                ),
            ));
        }
        // Lock the stage row: a lead moved into it meanwhile waits (moves read it FOR SHARE).
        sqlx::query("SELECT 1 FROM stages WHERE id = $1 FOR UPDATE")
            .bind(current.id)
            .execute(&mut *tx)
            .await?;
        let count = holding(&mut tx, &p.kind, current.id).await?;
        if count > 0 {
            return Err(conflict(
                "stage_in_use",
                format!(
                    "stage `{code}` still holds {}: move them to another stage first",
                    plural(count, &p.kind)
                ),
            ));
        }
        sqlx::query("UPDATE stages SET removed_at = now(), active = false WHERE id = $1")
            .bind(current.id)
            .execute(&mut *tx)
            .await?;
        let view = stage_in(&mut tx, pipeline, p.id, code).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Puts the pipeline's stages in the order given; `codes` lists every stage that is
    /// not removed, each once.
    pub async fn reorder_stages(
        &self,
        pipeline: &str,
        codes: &[String],
    ) -> Result<PipelineView, WorkError> {
        let mut tx = self.pool().begin().await?;
        let p = lock_pipeline(&mut tx, pipeline).await?;
        let present: Vec<String> = sqlx::query_scalar(
            "SELECT code FROM stages WHERE pipeline_id = $1 AND removed_at IS NULL ORDER BY sort_order, id",
        )
        .bind(p.id)
        .fetch_all(&mut *tx)
        .await?;
        let given: HashSet<&str> = codes.iter().map(String::as_str).collect();
        let wanted: HashSet<&str> = present.iter().map(String::as_str).collect();
        if given.len() != codes.len() || given != wanted {
            return Err(invalid(
                "bad_order",
                format!(
                    "list every stage of `{pipeline}` once; its stages are: {}",
                    present.join(", ")
                ),
            ));
        }
        sqlx::query(
            "UPDATE stages s SET sort_order = t.n * 10
             FROM unnest($2::text[]) WITH ORDINALITY AS t(code, n)
             WHERE s.pipeline_id = $1 AND s.code = t.code",
        )
        .bind(p.id)
        .bind(codes)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_pipeline(pipeline)
            .await?
            .ok_or_else(|| WorkError::NotFound(format!("there is no pipeline `{pipeline}`")))
    }

    /// Brings the database in line with configured pipelines: each pipeline and stage is
    /// upserted by code; a stored stage the configuration no longer lists is removed when
    /// empty, and kept (reported) while it holds leads. Pipelines the configuration does
    /// not name are left alone. Returns what needs an operator's attention.
    pub async fn sync_pipelines(&self, specs: &[PipelineSpec]) -> Result<Vec<String>, StoreError> {
        let mut notes = Vec::new();
        let mut tx = self.pool().begin().await?;
        // Replicas starting together apply the configuration one after the other.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('sync:pipelines', 0))")
            .execute(&mut *tx)
            .await?;
        for spec in specs {
            let row: Option<(i64, String)> =
                sqlx::query_as("SELECT id, kind FROM pipelines WHERE code = $1 FOR UPDATE")
                    .bind(&spec.code)
                    .fetch_optional(&mut *tx)
                    .await?;
            let id = match row {
                Some((id, kind)) => {
                    if kind != spec.kind.as_str() {
                        notes.push(format!(
                            "pipeline `{}` is stored as a {kind} pipeline; the configuration says {}: kept as {kind}",
                            spec.code,
                            spec.kind.as_str()
                        ));
                    }
                    sqlx::query("UPDATE pipelines SET name = $2 WHERE id = $1")
                        .bind(id)
                        .bind(spec.name.trim())
                        .execute(&mut *tx)
                        .await?;
                    id
                }
                None => {
                    sqlx::query_scalar(
                        "INSERT INTO pipelines (code, name, kind) VALUES ($1, $2, $3) RETURNING id",
                    )
                    .bind(&spec.code)
                    .bind(spec.name.trim())
                    .bind(spec.kind.as_str())
                    .fetch_one(&mut *tx)
                    .await?
                }
            };
            for (i, stage) in spec.stages.iter().enumerate() {
                upsert_stage(
                    &mut tx,
                    id,
                    stage,
                    stage.order.unwrap_or((i as i32 + 1) * 10),
                )
                .await?;
            }
            if let Some(initial) = spec.stages.iter().find(|s| s.initial) {
                set_initial(&mut tx, id, &initial.code).await?;
            }
            let listed: Vec<String> = spec.stages.iter().map(|s| s.code.clone()).collect();
            let leftovers: Vec<(i64, String, bool)> = sqlx::query_as(
                "SELECT id, code, is_initial FROM stages
                 WHERE pipeline_id = $1 AND removed_at IS NULL AND NOT (code = ANY($2))",
            )
            .bind(id)
            .bind(&listed)
            .fetch_all(&mut *tx)
            .await?;
            let kind: String = sqlx::query_scalar("SELECT kind FROM pipelines WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            for (stage_id, code, _) in leftovers {
                let count = holding(&mut tx, &kind, stage_id).await?;
                if count > 0 {
                    notes.push(format!(
                        "stage `{code}` of pipeline `{}` is no longer configured but holds {}: it stays until they are moved",
                        spec.code,
                        plural(count, &kind)
                    ));
                } else {
                    sqlx::query(
                        "UPDATE stages SET removed_at = now(), active = false, is_initial = false WHERE id = $1",
                    )
                    .bind(stage_id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(notes)
    }

    /// Moves a lead to another open or frozen (or abandoned) stage of its pipeline, with a
    /// history row. Refused for a finished lead, a stage of another pipeline, a removed or
    /// inactive stage, and success/failure stages (those are reached by finishing).
    pub async fn move_lead_stage(
        &self,
        scope: &Scope,
        lead_id: i64,
        stage: &str,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<StageMove, WorkError> {
        let mut tx = self.pool().begin().await?;
        let lead = lock_lead(&mut tx, scope, lead_id).await?;
        if lead.semantic.is_finished() {
            return Err(conflict(
                "lead_finished",
                format!(
                    "lead {lead_id} is finished (stage `{}`, {}): it cannot move; an admin can reopen it with POST /v1/leads/{lead_id}/reopen",
                    lead.stage_code, lead.semantic
                ),
            ));
        }
        let target = target_stage(&mut tx, &lead, stage).await?;
        if matches!(target.semantic, Semantic::Success | Semantic::Failure) {
            return Err(conflict(
                "use_finish",
                format!(
                    "`{stage}` is a {} stage: finish the lead with POST /v1/leads/{lead_id}/finish (outcome converted or junk)",
                    target.semantic
                ),
            ));
        }
        if target.id == lead.stage_id {
            return Err(conflict(
                "same_stage",
                format!("lead {lead_id} is in stage `{stage}` already"),
            ));
        }
        let moved = record_move(&mut tx, &lead, &target, reason, actor).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Reopens a finished lead into an open or frozen stage of its pipeline (an admin's
    /// action): a history row and a `reopened` lead event; `closed_at` and `junk_reason`
    /// are cleared. Client links and deals stay.
    pub async fn reopen_lead(
        &self,
        lead_id: i64,
        stage: &str,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<StageMove, WorkError> {
        let mut tx = self.pool().begin().await?;
        let lead = lock_lead(&mut tx, &Scope::All, lead_id).await?;
        if !lead.semantic.is_finished() {
            return Err(conflict(
                "lead_not_finished",
                format!(
                    "lead {lead_id} is being worked (stage `{}`): move it with POST /v1/leads/{lead_id}/stage",
                    lead.stage_code
                ),
            ));
        }
        let target = target_stage(&mut tx, &lead, stage).await?;
        if target.semantic.is_finished() {
            return Err(invalid(
                "stage_finished",
                format!(
                    "`{stage}` is a {} stage: reopen into an open or frozen stage",
                    target.semantic
                ),
            ));
        }
        let moved = record_move(&mut tx, &lead, &target, reason, actor).await?;
        sqlx::query("UPDATE leads SET closed_at = NULL, junk_reason = NULL WHERE id = $1")
            .bind(lead_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO lead_events (lead_id, kind, data) VALUES ($1, 'reopened', $2)")
            .bind(lead_id)
            .bind(sqlx::types::Json(serde_json::json!({
                "from": moved.from, "to": moved.to, "by": actor, "reason": reason,
            })))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(moved)
    }
}

fn plural(count: i64, kind: &str) -> String {
    let noun = if kind == "deal" { "deal" } else { "lead" };
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// A lead row locked for a change.
pub(crate) struct LockedLead {
    pub(crate) id: i64,
    pub(crate) pipeline_id: i64,
    pub(crate) stage_id: i64,
    pub(crate) stage_code: String,
    pub(crate) semantic: Semantic,
}

/// Locks lead `id` if it is in `scope`; otherwise it does not exist.
pub(crate) async fn lock_lead(
    tx: &mut Transaction<'_, Postgres>,
    scope: &Scope,
    id: i64,
) -> Result<LockedLead, WorkError> {
    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT l.id, l.pipeline_id, l.stage_id, s.code, s.semantic
         FROM leads l JOIN stages s ON s.id = l.stage_id WHERE l.id = ",
    );
    sql.push_bind(id);
    scope.push_lead_filter(&mut sql, "l");
    sql.push(" FOR UPDATE OF l");
    let row = sql
        .build()
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| WorkError::NotFound(format!("there is no lead with id `{id}`")))?;
    let semantic: String = row.try_get("semantic")?;
    Ok(LockedLead {
        id,
        pipeline_id: row.try_get("pipeline_id")?,
        stage_id: row.try_get("stage_id")?,
        stage_code: row.try_get("code")?,
        semantic: Semantic::parse(&semantic).unwrap_or(Semantic::Open),
    })
}

/// A stage a lead may enter.
pub(crate) struct Target {
    pub(crate) id: i64,
    pub(crate) code: String,
    pub(crate) semantic: Semantic,
}

/// The stage `code` of the lead's pipeline, refused when it is removed or inactive, or
/// belongs to another pipeline. The row is locked FOR SHARE so it is not removed under
/// the move.
pub(crate) async fn target_stage(
    tx: &mut Transaction<'_, Postgres>,
    lead: &LockedLead,
    code: &str,
) -> Result<Target, WorkError> {
    let row = sqlx::query(
        "SELECT id, code, semantic, active, removed_at FROM stages
         WHERE pipeline_id = $1 AND code = $2 FOR SHARE",
    )
    .bind(lead.pipeline_id)
    .bind(code)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        let pipeline: String = sqlx::query_scalar("SELECT code FROM pipelines WHERE id = $1")
            .bind(lead.pipeline_id)
            .fetch_one(&mut **tx)
            .await?;
        let elsewhere: Option<String> = sqlx::query_scalar(
            "SELECT p.code FROM stages s JOIN pipelines p ON p.id = s.pipeline_id
             WHERE s.code = $1 ORDER BY p.id LIMIT 1",
        )
        .bind(code)
        .fetch_optional(&mut **tx)
        .await?;
        return Err(match elsewhere {
            Some(other) => invalid(
                "stage_of_another_pipeline",
                format!(
                    "stage `{code}` belongs to pipeline `{other}`; lead {} is in pipeline `{pipeline}`: pick one of its stages (GET /v1/pipelines)",
                    lead.id
                ),
            ),
            None => invalid(
                "unknown_stage",
                format!(
                    "pipeline `{pipeline}` has no stage `{code}`: pick one from GET /v1/pipelines"
                ),
            ),
        });
    };
    if row
        .try_get::<Option<DateTime<Utc>>, _>("removed_at")?
        .is_some()
    {
        return Err(invalid(
            "stage_removed",
            format!("stage `{code}` was removed: pick another stage"),
        ));
    }
    if !row.try_get::<bool, _>("active")? {
        return Err(invalid(
            "stage_inactive",
            format!(
                "stage `{code}` is inactive and takes no leads: pick another stage or activate it"
            ),
        ));
    }
    let semantic: String = row.try_get("semantic")?;
    Ok(Target {
        id: row.try_get("id")?,
        code: row.try_get("code")?,
        semantic: Semantic::parse(&semantic).unwrap_or(Semantic::Open),
    })
}

/// Moves the locked lead into `target`: history row, stage and times; `closed_at` is set
/// when the target finishes the lead.
pub(crate) async fn record_move(
    tx: &mut Transaction<'_, Postgres>,
    lead: &LockedLead,
    target: &Target,
    reason: Option<&str>,
    actor: &str,
) -> Result<StageMove, WorkError> {
    let changed_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO lead_stage_history (lead_id, from_stage_id, to_stage_id, changed_by, reason)
         VALUES ($1, $2, $3, $4, $5) RETURNING changed_at",
    )
    .bind(lead.id)
    .bind(lead.stage_id)
    .bind(target.id)
    .bind(actor)
    .bind(reason)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE leads SET stage_id = $2, stage_entered_at = $3, updated_at = $3,
                closed_at = CASE WHEN $4 THEN $3 ELSE NULL END
         WHERE id = $1",
    )
    .bind(lead.id)
    .bind(target.id)
    .bind(changed_at)
    .bind(target.semantic.is_finished())
    .execute(&mut **tx)
    .await?;
    Ok(StageMove {
        lead_id: lead.id,
        from: lead.stage_code.clone(),
        to: target.code.clone(),
        changed_at,
        changed_by: actor.to_owned(),
        reason: reason.map(str::to_owned),
    })
}
