//! The people who work leads: users, teams, and the API tokens they authenticate with.
//!
//! A token is `lp_` followed by 32 random bytes in unpadded base64url. Only its SHA-256 is
//! stored, with its first characters (the prefix) to tell tokens apart in listings; the
//! token itself is shown once, when it is created.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use normalizer::EmailAddress;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::access::{Actor, Role};
use crate::error::StoreError;
use crate::store::Store;

/// What every token starts with, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "lp_";

/// How many characters of a token are kept to tell it apart (`lp_` plus eight).
const SHOWN_PREFIX_CHARS: usize = 11;

/// The longest name or label accepted.
const MAX_NAME_CHARS: usize = 200;

/// A value a person typed that cannot be stored, naming the field and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidPerson {
    /// The field (`email`, `time_zone`, `name`, ...).
    pub field: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

impl InvalidPerson {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A user's email address: validated and lower-cased; only [`UserEmail::parse`] builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEmail(String);

impl UserEmail {
    /// Validates and lower-cases `raw`.
    pub fn parse(raw: &str) -> Result<Self, InvalidPerson> {
        EmailAddress::parse(raw)
            .map(|e| UserEmail(e.as_str().to_lowercase()))
            .map_err(|e| {
                InvalidPerson::new(
                    "email",
                    format!("`{}` is not a usable address: {e}", raw.trim()),
                )
            })
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IANA time zone name (`Europe/Rome`, `UTC`); only [`TimeZoneName::parse`] builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeZoneName(String);

impl TimeZoneName {
    /// Checks `raw` against the IANA time zone database compiled into leadpipe.
    pub fn parse(raw: &str) -> Result<Self, InvalidPerson> {
        let trimmed = raw.trim();
        trimmed
            .parse::<chrono_tz::Tz>()
            .map(|tz| TimeZoneName(tz.name().to_owned()))
            .map_err(|_| {
                InvalidPerson::new(
                    "time_zone",
                    format!(
                        "`{trimmed}` is not an IANA time zone: use a name like Europe/Rome, America/New_York or UTC (case matters)"
                    ),
                )
            })
    }

    /// The zone's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name or label: trimmed, not empty, at most 200 characters.
fn check_name(field: &'static str, raw: &str) -> Result<String, InvalidPerson> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(InvalidPerson::new(field, "is empty: give a name"));
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(InvalidPerson::new(
            field,
            format!("is longer than {MAX_NAME_CHARS} characters: shorten it"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(InvalidPerson::new(
            field,
            "contains control characters: use plain text on one line",
        ));
    }
    Ok(trimmed.to_owned())
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct User {
    /// User id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Lower-cased email address.
    pub email: String,
    /// IANA time zone.
    pub time_zone: String,
    /// False once deactivated: the user's tokens stop working.
    pub active: bool,
    /// The user's team.
    pub team_id: Option<i64>,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When the user was last changed.
    pub updated_at: DateTime<Utc>,
}

/// A new user, validated.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: UserEmail,
    /// Time zone (UTC when not given).
    pub time_zone: TimeZoneName,
    /// Team.
    pub team_id: Option<i64>,
}

impl NewUser {
    /// Validates what a person typed.
    pub fn parse(
        name: &str,
        email: &str,
        time_zone: Option<&str>,
        team_id: Option<i64>,
    ) -> Result<Self, InvalidPerson> {
        Ok(NewUser {
            name: check_name("name", name)?,
            email: UserEmail::parse(email)?,
            time_zone: TimeZoneName::parse(time_zone.unwrap_or("UTC"))?,
            team_id,
        })
    }
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    /// New display name.
    pub name: Option<String>,
    /// New email address.
    pub email: Option<UserEmail>,
    /// New time zone.
    pub time_zone: Option<TimeZoneName>,
    /// `false` deactivates, `true` reactivates.
    pub active: Option<bool>,
    /// `Some(None)` takes the user out of their team.
    pub team_id: Option<Option<i64>>,
}

impl UserChanges {
    /// A validated display name for [`UserChanges::name`].
    pub fn name(raw: &str) -> Result<String, InvalidPerson> {
        check_name("name", raw)
    }
}

/// A team with its members.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Team {
    /// Team id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// When the team was created.
    pub created_at: DateTime<Utc>,
    /// The users in the team, by id.
    pub members: Vec<TeamMember>,
}

/// A member as listed on a team.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct TeamMember {
    /// User id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Whether the user is active.
    pub active: bool,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct TokenInfo {
    /// Token id (for revoking).
    pub id: i64,
    /// The user it belongs to.
    pub user_id: i64,
    /// `agent`, `supervisor` or `admin`.
    pub role: String,
    /// The token's first characters.
    pub prefix: String,
    /// What the token is for.
    pub label: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked token is refused.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just created: the only time its secret is available.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The secret, to hand to the user once.
    pub token: String,
    /// The stored part.
    pub info: TokenInfo,
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenHolder {
    /// The token's id.
    pub token_id: i64,
    /// The user.
    pub user_id: i64,
    /// The token's role.
    pub role: Role,
}

/// SHA-256 of a token, as stored.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// A fresh token: `lp_` and 32 random bytes in unpadded base64url.
fn generate_token() -> Result<String, StoreError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| {
        StoreError::Unavailable(format!(
            "the operating system's random number generator failed ({e}); no token was created"
        ))
    })?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret)))
}

const USER_COLUMNS: &str =
    "SELECT id, name, email, time_zone, active, team_id, created_at, updated_at FROM users";
const TOKEN_COLUMNS: &str =
    "SELECT id, user_id, role, prefix, label, created_at, last_used_at, revoked_at FROM api_tokens";

fn user_from_row(row: &PgRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        time_zone: row.try_get("time_zone")?,
        active: row.try_get("active")?,
        team_id: row.try_get("team_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn token_from_row(row: &PgRow) -> Result<TokenInfo, sqlx::Error> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        role: row.try_get("role")?,
        prefix: row.try_get("prefix")?,
        label: row.try_get("label")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// Names what a unique or foreign key refused in a user write.
fn user_write_error(error: sqlx::Error, email: Option<&str>, team: Option<i64>) -> StoreError {
    match StoreError::from(error) {
        StoreError::Conflict(_) => StoreError::Conflict(format!(
            "email: a user with {} exists already",
            email.unwrap_or("this address")
        )),
        StoreError::NotFound(_) => StoreError::NotFound(format!(
            "team_id: there is no team {}",
            team.map(|t| t.to_string()).unwrap_or_default()
        )),
        other => other,
    }
}

/// What the assignment rules need to know about a user work would be given to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AssigneeFacts {
    /// The user may still be given work.
    pub active: bool,
    /// The user is in the acting user's team (both in one, not none).
    pub in_actor_team: bool,
}

impl Store {
    /// The facts about user `user` that decide whether `actor` may give them work;
    /// `None` when there is no such user.
    pub(crate) async fn assignee_facts(
        &self,
        actor: &Actor,
        user: i64,
    ) -> Result<Option<AssigneeFacts>, StoreError> {
        let row = sqlx::query(
            "SELECT u.active,
                    coalesce(u.team_id = (SELECT c.team_id FROM users c WHERE c.id = $2), false)
                        AS in_actor_team
             FROM users u WHERE u.id = $1",
        )
        .bind(user)
        .bind(actor.user_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(AssigneeFacts {
                active: row.try_get("active")?,
                in_actor_team: row.try_get("in_actor_team")?,
            })
        })
        .transpose()
    }

    /// Creates a user; a taken email is [`StoreError::Conflict`], an unknown team
    /// [`StoreError::NotFound`].
    pub async fn create_user(&self, user: &NewUser) -> Result<User, StoreError> {
        let row = sqlx::query(
            "INSERT INTO users (name, email, time_zone, team_id) VALUES ($1, $2, $3, $4)
             RETURNING id, name, email, time_zone, active, team_id, created_at, updated_at",
        )
        .bind(&user.name)
        .bind(user.email.as_str())
        .bind(user.time_zone.as_str())
        .bind(user.team_id)
        .fetch_one(self.pool())
        .await
        .map_err(|e| user_write_error(e, Some(user.email.as_str()), user.team_id))?;
        Ok(user_from_row(&row)?)
    }

    /// One user.
    pub async fn get_user(&self, id: i64) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("{USER_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// The user with this email address (compared lower-cased).
    pub async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("{USER_COLUMNS} WHERE email = lower($1)"))
            .bind(email.trim())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Every user, by id.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!("{USER_COLUMNS} ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Applies `changes` to user `id`; `None` when there is no such user.
    pub async fn update_user(
        &self,
        id: i64,
        changes: &UserChanges,
    ) -> Result<Option<User>, StoreError> {
        let (set_team, team) = match changes.team_id {
            Some(team) => (true, team),
            None => (false, None),
        };
        let email = changes.email.as_ref().map(|e| e.as_str().to_owned());
        let row = sqlx::query(
            "UPDATE users SET
                 name = coalesce($2, name),
                 email = coalesce($3, email),
                 time_zone = coalesce($4, time_zone),
                 active = coalesce($5, active),
                 team_id = CASE WHEN $6 THEN $7 ELSE team_id END,
                 updated_at = now()
             WHERE id = $1
             RETURNING id, name, email, time_zone, active, team_id, created_at, updated_at",
        )
        .bind(id)
        .bind(changes.name.as_deref())
        .bind(email.as_deref())
        .bind(changes.time_zone.as_ref().map(|t| t.as_str()))
        .bind(changes.active)
        .bind(set_team)
        .bind(team)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| user_write_error(e, email.as_deref(), team))?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Creates a team; a taken name is [`StoreError::Conflict`].
    pub async fn create_team(&self, name: &str) -> Result<Team, StoreError> {
        let name = check_name("name", name).map_err(|e| StoreError::Rejected(e.to_string()))?;
        let row = sqlx::query("INSERT INTO teams (name) VALUES ($1) RETURNING id, created_at")
            .bind(&name)
            .fetch_one(self.pool())
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("name: a team named `{name}` exists already"))
                }
                other => other,
            })?;
        Ok(Team {
            id: row.try_get("id")?,
            name,
            created_at: row.try_get("created_at")?,
            members: Vec::new(),
        })
    }

    /// Renames team `id`; `None` when there is no such team.
    pub async fn rename_team(&self, id: i64, name: &str) -> Result<Option<Team>, StoreError> {
        let name = check_name("name", name).map_err(|e| StoreError::Rejected(e.to_string()))?;
        let updated = sqlx::query("UPDATE teams SET name = $2 WHERE id = $1")
            .bind(id)
            .bind(&name)
            .execute(self.pool())
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("name: a team named `{name}` exists already"))
                }
                other => other,
            })?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(self.list_teams().await?.into_iter().find(|t| t.id == id))
    }

    /// Every team with its members, by id.
    pub async fn list_teams(&self) -> Result<Vec<Team>, StoreError> {
        let teams = sqlx::query("SELECT id, name, created_at FROM teams ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        let members = sqlx::query(
            "SELECT id, name, email, active, team_id FROM users
             WHERE team_id IS NOT NULL ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(teams.len());
        for row in &teams {
            let id: i64 = row.try_get("id")?;
            let mut team = Team {
                id,
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
                members: Vec::new(),
            };
            for m in &members {
                if m.try_get::<i64, _>("team_id")? == id {
                    team.members.push(TeamMember {
                        id: m.try_get("id")?,
                        name: m.try_get("name")?,
                        email: m.try_get("email")?,
                        active: m.try_get("active")?,
                    });
                }
            }
            out.push(team);
        }
        Ok(out)
    }

    /// Creates a token with `role` for user `user_id` and returns its secret, the only
    /// time it is available. An unknown or inactive user is [`StoreError::NotFound`].
    pub async fn create_token(
        &self,
        user_id: i64,
        role: Role,
        label: Option<&str>,
    ) -> Result<IssuedToken, StoreError> {
        let label = label
            .map(|l| check_name("label", l))
            .transpose()
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        let token = generate_token()?;
        let prefix: String = token.chars().take(SHOWN_PREFIX_CHARS).collect();
        let row = sqlx::query(
            "INSERT INTO api_tokens (user_id, role, token_hash, prefix, label)
             SELECT u.id, $2, $3, $4, $5 FROM users u WHERE u.id = $1 AND u.active
             RETURNING id, user_id, role, prefix, label, created_at, last_used_at, revoked_at",
        )
        .bind(user_id)
        .bind(role.as_str())
        .bind(&token_hash(&token)[..])
        .bind(&prefix)
        .bind(label.as_deref())
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "user: there is no active user {user_id}; tokens are only issued to active users"
            ))
        })?;
        Ok(IssuedToken {
            token,
            info: token_from_row(&row)?,
        })
    }

    /// Tokens, newest first, without secrets: a user's, or everyone's.
    pub async fn list_tokens(&self, user_id: Option<i64>) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(&format!(
            "{TOKEN_COLUMNS} WHERE ($1::bigint IS NULL OR user_id = $1) ORDER BY id DESC"
        ))
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(token_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Revokes token `id` (revoking twice keeps the first time); `None` when there is no
    /// such token.
    pub async fn revoke_token(&self, id: i64) -> Result<Option<TokenInfo>, StoreError> {
        let row = sqlx::query(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
             RETURNING id, user_id, role, prefix, label, created_at, last_used_at, revoked_at",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(token_from_row).transpose()?)
    }

    /// Who `token` belongs to: `None` for an unknown or revoked token or an inactive user.
    /// Records the use at most once a minute per token, so busy clients do not write on
    /// every request; a database that cannot record it (read-only after a failover) still
    /// authenticates.
    pub async fn authenticate(&self, token: &str) -> Result<Option<TokenHolder>, StoreError> {
        if !token.trim().starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT t.id, t.user_id, t.role,
                    (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')
                        AS stale
             FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.active",
        )
        .bind(&token_hash(token)[..])
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let role: String = row.try_get("role")?;
        let holder = TokenHolder {
            token_id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            role: role.parse().map_err(StoreError::Unavailable)?,
        };
        if row.try_get::<bool, _>("stale")? {
            let touched = sqlx::query(
                "UPDATE api_tokens SET last_used_at = now()
                 WHERE id = $1
                   AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
            )
            .bind(holder.token_id)
            .execute(self.pool())
            .await;
            if let Err(error) = touched {
                let error = StoreError::from(error);
                tracing::warn!(%error, token_id = holder.token_id, "Could not record a token's use.");
            }
        }
        Ok(Some(holder))
    }

    /// True when some token could authenticate (not revoked, its user active).
    pub async fn any_usable_token(&self) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS(SELECT 1 FROM api_tokens t JOIN users u ON u.id = t.user_id
                           WHERE t.revoked_at IS NULL AND u.active)",
        )
        .fetch_one(self.pool())
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            UserEmail::parse(" Ana.Rossi@Example.COM ")
                .unwrap()
                .as_str(),
            "ana.rossi@example.com"
        );
        for bad in ["", "ana", "ana@", "a@b@c.it", "ana@example"] {
            assert_eq!(UserEmail::parse(bad).unwrap_err().field, "email", "{bad}");
        }
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert_eq!(
            TimeZoneName::parse("Europe/Rome").unwrap().as_str(),
            "Europe/Rome"
        );
        assert_eq!(TimeZoneName::parse("UTC").unwrap().as_str(), "UTC");
        for bad in ["", "Mars/Olympus", "CEST+1", "europe/rome;drop"] {
            let e = TimeZoneName::parse(bad).unwrap_err();
            assert_eq!(e.field, "time_zone");
            assert!(e.message.contains("Europe/Rome"));
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(check_name("name", "  Ana ").unwrap(), "Ana");
        assert!(check_name("name", "   ").is_err());
        assert!(check_name("name", &"x".repeat(201)).is_err());
        assert!(check_name("name", "a\nb").is_err());
    }

    #[test]
    fn tokens_are_long_random_and_recognisable() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        // 32 bytes in unpadded base64url.
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a[3..]).unwrap().len(), 32);
        assert_ne!(token_hash(&a), token_hash(&b));
    }
}
