//! `/v1/me`, `/v1/users`, `/v1/teams` and `/v1/tokens`: the people who work leads and
//! their API tokens.
//!
//! What each endpoint needs is decided in one place, [`Action::needs`]: any role reads
//! `/v1/me`, supervisors and admins read users and teams (to assign leads), and only
//! admins change people or see and issue tokens. A token's secret is in the answer that
//! creates it and nowhere else.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ingest::FieldProblem;
use ingest::problem::Problem;
use serde::{Deserialize, Serialize};
use store::{
    InvalidPerson, NewUser, Role, Scope, StoreError, Team, TimeZoneName, TokenInfo, User,
    UserChanges, UserEmail,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::common::{ApiState, Caller, json_problem, present, store_problem};

/// What a caller asks to do with people; [`Action::needs`] says which role that takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read one's own user and role (`/v1/me`).
    ReadSelf,
    /// Read users and teams.
    ReadPeople,
    /// Create and change users and teams.
    ManagePeople,
    /// List, issue and revoke tokens.
    ManageTokens,
}

impl Action {
    /// The least role that may do this: the only place the people endpoints' rules live.
    pub fn needs(self) -> Role {
        match self {
            Action::ReadSelf => Role::Agent,
            Action::ReadPeople => Role::Supervisor,
            Action::ManagePeople | Action::ManageTokens => Role::Admin,
        }
    }
}

fn allow(caller: &Caller, action: Action) -> Result<(), Problem> {
    caller.require(action.needs())
}

/// The people routes (mounted behind authentication).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(get_me))
        .routes(utoipa_axum::routes!(list_users, create_user))
        .routes(utoipa_axum::routes!(get_user, update_user))
        .routes(utoipa_axum::routes!(list_teams, create_team))
        .routes(utoipa_axum::routes!(rename_team))
        .routes(utoipa_axum::routes!(list_tokens, create_token))
        .routes(utoipa_axum::routes!(revoke_token))
}

fn invalid(errors: Vec<InvalidPerson>) -> Problem {
    let mut p = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_fields",
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    );
    p.fields = errors
        .into_iter()
        .map(|e| FieldProblem {
            field: e.field.to_owned(),
            problem: e.message,
        })
        .collect();
    p
}

fn not_found(what: &str, id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("there is no {what} with id `{id}`"),
    )
}

fn parse_id(what: &str, raw: &str) -> Result<i64, Problem> {
    raw.parse().map_err(|_| not_found(what, raw))
}

/// A store refusal as an answer: taken names 409, unknown references 422.
fn people_problem(error: StoreError) -> Problem {
    match error {
        StoreError::Conflict(why) => Problem::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!("{why}: use another value or change the existing one"),
        ),
        StoreError::NotFound(why) | StoreError::Rejected(why) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_fields", why)
        }
        other => store_problem(other),
    }
}

/// Who the caller is.
#[derive(Serialize, ToSchema)]
pub struct Me {
    /// The token's role.
    pub role: String,
    /// Which leads the caller sees: `all`, `team` or `own`.
    pub scope: String,
    /// The user behind the token; `null` for the bootstrap admin token.
    pub user: Option<User>,
}

#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/me",
    tag = "people",
    responses(
        (status = 200, description = "The caller's user, role and lead scope", body = Me),
        (status = 401, description = "No token, or not a valid one", body = Problem, content_type = "application/json"),
        (status = 503, description = "The database did not answer", body = Problem, content_type = "application/json"),
    )
)]
async fn get_me(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Me>, Problem> {
    allow(&caller, Action::ReadSelf)?;
    let user = match caller.user_id {
        Some(id) => state.store.get_user(id).await.map_err(store_problem)?,
        None => None,
    };
    let scope = match caller.scope() {
        Scope::All => "all",
        Scope::Team { .. } => "team",
        Scope::Own { .. } => "own",
    };
    Ok(Json(Me {
        role: caller.role.to_string(),
        scope: scope.to_owned(),
        user,
    }))
}

/// A list of users.
#[derive(Serialize, ToSchema)]
pub struct UserList {
    /// Every user, by id.
    pub items: Vec<User>,
}

#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/users",
    tag = "people",
    responses(
        (status = 200, description = "Every user, by id", body = UserList),
        (status = 401, description = "No token, or not a valid one", body = Problem, content_type = "application/json"),
        (status = 403, description = "Needs the supervisor role", body = Problem, content_type = "application/json"),
        (status = 503, description = "The database did not answer", body = Problem, content_type = "application/json"),
    )
)]
async fn list_users(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<UserList>, Problem> {
    allow(&caller, Action::ReadPeople)?;
    let items = state.store.list_users().await.map_err(store_problem)?;
    Ok(Json(UserList { items }))
}

/// A new user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Display name.
    pub name: String,
    /// Email address (stored lower-cased; unique).
    pub email: String,
    /// IANA time zone such as `Europe/Rome`; `UTC` when left out.
    pub time_zone: Option<String>,
    /// The team to join.
    pub team_id: Option<i64>,
}

#[utoipa::path(
    security(("bearer" = [])),
    post,
    path = "/v1/users",
    tag = "people",
    request_body = CreateUser,
    responses(
        (status = 201, description = "The user", body = User),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/json"),
        (status = 415, description = "The body is not sent as application/json", body = Problem, content_type = "application/json"),
        (status = 401, description = "No token, or not a valid one", body = Problem, content_type = "application/json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/json"),
        (status = 409, description = "The email belongs to another user", body = Problem, content_type = "application/json"),
        (status = 422, description = "A field cannot be used (see fields)", body = Problem, content_type = "application/json"),
        (status = 503, description = "The database did not answer", body = Problem, content_type = "application/json"),
    )
)]
async fn create_user(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<CreateUser>, JsonRejection>,
) -> Result<Response, Problem> {
    allow(&caller, Action::ManagePeople)?;
    let Json(body) = body.map_err(json_problem)?;
    let user = NewUser::parse(
        &body.name,
        &body.email,
        body.time_zone.as_deref(),
        body.team_id,
    )
    .map_err(|e| invalid(vec![e]))?;
    let created = state
        .store
        .create_user(&user)
        .await
        .map_err(people_problem)?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/users/{id}",
    tag = "people",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 401, description = "No token, or not a valid one", body = Problem, content_type = "application/json"),
        (status = 403, description = "Needs the supervisor role", body = Problem, content_type = "application/json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/json"),
        (status = 503, description = "The database did not answer", body = Problem, content_type = "application/json"),
    )
)]
async fn get_user(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<User>, Problem> {
    allow(&caller, Action::ReadPeople)?;
    let numeric = parse_id("user", &id)?;
    state
        .store
        .get_user(numeric)
        .await
        .map_err(store_problem)?
        .map(Json)
        .ok_or_else(|| not_found("user", &id))
}

/// Changes to a user; keys left out stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// Display name.
    pub name: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// IANA time zone.
    pub time_zone: Option<String>,
    /// `false` deactivates the user: their tokens stop working at once.
    pub active: Option<bool>,
    /// A team id, or `null` to leave the team.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub team_id: Option<Option<i64>>,
}

#[utoipa::path(
    security(("bearer" = [])),
    patch,
    path = "/v1/users/{id}",
    tag = "people",
    params(("id" = i64, Path, description = "User id")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The user as changed", body = User),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/json"),
        (status = 415, description = "The body is not sent as application/json", body = Problem, content_type = "application/json"),
        (status = 401, description = "No token, or not a valid one", body = Problem, content_type = "application/json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/json"),
        (status = 409, description = "The email belongs to another user", body = Problem, content_type = "application/json"),
        (status = 422, description = "A field cannot be used (see fields)", body = Problem, content_type = "application/json"),
        (status = 503, description = "The database did not answer", body = Problem, content_type = "application/json"),
    )
)]
async fn update_user(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<UpdateUser>, JsonRejection>,
) -> Result<Json<User>, Problem> {
    allow(&caller, Action::ManagePeople)?;
    let numeric = parse_id("user", &id)?;
    let Json(body) = body.map_err(json_problem)?;
    let mut errors = Vec::new();
    let mut changes = UserChanges {
        active: body.active,
        team_id: body.team_id,
        ..UserChanges::default()
    };
    if let Some(name) = &body.name {
        match UserChanges::name(name) {
            Ok(n) => changes.name = Some(n),
            Err(e) => errors.push(e),
        }
    }
    if let Some(email) = &body.email {
        match UserEmail::parse(email) {
            Ok(e) => changes.email = Some(e),
            Err(e) => errors.push(e),
        }
    }
    if let Some(zone) = &body.time_zone {
        match TimeZoneName::parse(zone) {
            Ok(z) => changes.time_zone = Some(z),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    state
        .store
        .update_user(numeric, &changes)
        .await
        .map_err(people_problem)?
        .map(Json)
        .ok_or_else(|| not_found("user", &id))
}

/// A list of teams.
#[derive(Serialize, ToSchema)]
pub struct TeamList {
    /// Every team with its members, by id.
    pub items: Vec<Team>,
}

#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/teams",
    tag = "people",
    responses(
        (status = 200, description = "Every team with its members", body = TeamList),
        (status = 401, description = "No token, or not a valid one", body = Problem, content_type = "application/json"),
        (status = 403, description = "Needs the supervisor role", body = Problem, content_type = "application/json"),
        (status = 503, description = "The database did not answer", body = Problem, content_type = "application/json"),
    )
)]
async fn list_teams(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<TeamList>, Problem> {
    allow(&caller, Action::ReadPeople)?;
    let items = state.store.list_teams().await.map_err(store_problem)?;
    Ok(Json(TeamList { items }))
}

/// A team's name, to create or rename it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamName {
    /// Unique name.
    pub name: String,
}

#[utoipa::path(
    security(("bearer" = [])),
    post,
    path = "/v1/teams",
    tag = "people",
    request_body = TeamName,
    responses(
        (status = 201, description = "The team", body = Team),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/json"),
        (status = 415, description = "The body is not sent as application/json", body = Problem, content_type = "application/json"),
        (status = 401, description = "No token, or not a valid one", body = Problem, content_type = "application/json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/json"),
        (status = 409, description = "A team has this name", body = Problem, content_type = "application/json"),
        (status = 422, description = "The name cannot be used", body = Problem, content_type = "application/json"),
        (status = 503, description = "The database did not answer", body = Problem, content_type = "application/json"),
    )
)]
async fn create_team(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<TeamName>, JsonRejection>,
) -> Result<Response, Problem> {
    allow(&caller, Action::ManagePeople)?;
    let Json(body) = body.map_err(json_problem)?;
    let team = state
        .store
        .create_team(&body.name)
        .await
        .map_err(people_problem)?;
    Ok((StatusCode::CREATED, Json(team)).into_response())
}

#[utoipa::path(
    security(("bearer" = [])),
    patch,
    path = "/v1/teams/{id}",
    tag = "people",
    params(("id" = i64, Path, description = "Team id")),
    request_body = TeamName,
    responses(
        (status = 200, description = "The team as renamed", body = Team),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/json"),
        (status = 415, description = "The body is not sent as application/json", body = Problem, content_type = "application/json"),
        (status = 401, description = "No token, or not a valid one", body = Problem, content_type = "application/json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/json"),
        (status = 404, description = "No such team", body = Problem, content_type = "application/json"),
        (status = 409, description = "Another team has this name", body = Problem, content_type = "application/json"),
        (status = 422, description = "The name cannot be used", body = Problem, content_type = "application/json"),
        (status = 503, description = "The database did not answer", body = Problem, content_type = "application/json"),
    )
)]
async fn rename_team(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<TeamName>, JsonRejection>,
) -> Result<Json<Team>, Problem> {
    allow(&caller, Action::ManagePeople)?;
    let numeric = parse_id("team", &id)?;
    let Json(body) = body.map_err(json_problem)?;
    state
        .store
        .rename_team(numeric, &body.name)
        .await
        .map_err(people_problem)?
        .map(Json)
        .ok_or_else(|| not_found("team", &id))
}

/// A list of tokens, without secrets.
#[derive(Serialize, ToSchema)]
pub struct TokenList {
    /// The user's tokens, newest first.
    pub items: Vec<TokenInfo>,
}

#[utoipa::path(
    security(("bearer" = [])),
    get,
    path = "/v1/users/{id}/tokens",
    tag = "people",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The user's tokens, newest first, without secrets", body = TokenList),
        (status = 401, description = "No token, or not a valid one", body = Problem, content_type = "application/json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/json"),
        (status = 503, description = "The database did not answer", body = Problem, content_type = "application/json"),
    )
)]
async fn list_tokens(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TokenList>, Problem> {
    allow(&caller, Action::ManageTokens)?;
    let numeric = parse_id("user", &id)?;
    if state
        .store
        .get_user(numeric)
        .await
        .map_err(store_problem)?
        .is_none()
    {
        return Err(not_found("user", &id));
    }
    let items = state
        .store
        .list_tokens(Some(numeric))
        .await
        .map_err(store_problem)?;
    Ok(Json(TokenList { items }))
}

/// A token to issue.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// `agent`, `supervisor` or `admin`.
    pub role: String,
    /// What the token is for (`laptop`, `CRM sync`).
    pub label: Option<String>,
}

/// A token just issued: the only answer that carries its secret.
#[derive(Serialize, ToSchema)]
pub struct IssuedTokenBody {
    /// The secret: send it as `Authorization: Bearer <token>`. It is not shown again.
    pub token: String,
    /// The stored part of the token.
    #[serde(flatten)]
    pub info: TokenInfo,
}

#[utoipa::path(
    security(("bearer" = [])),
    post,
    path = "/v1/users/{id}/tokens",
    tag = "people",
    params(("id" = i64, Path, description = "User id")),
    request_body = CreateToken,
    responses(
        (status = 201, description = "The token, with its secret shown this once", body = IssuedTokenBody),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = "application/json"),
        (status = 415, description = "The body is not sent as application/json", body = Problem, content_type = "application/json"),
        (status = 401, description = "No token, or not a valid one", body = Problem, content_type = "application/json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/json"),
        (status = 422, description = "The role or label cannot be used, or the user is deactivated", body = Problem, content_type = "application/json"),
        (status = 503, description = "The database did not answer", body = Problem, content_type = "application/json"),
    )
)]
async fn create_token(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> Result<Response, Problem> {
    allow(&caller, Action::ManageTokens)?;
    let numeric = parse_id("user", &id)?;
    let Json(body) = body.map_err(json_problem)?;
    let role: Role = body.role.parse().map_err(|message| {
        invalid(vec![InvalidPerson {
            field: "role",
            message,
        }])
    })?;
    if state
        .store
        .get_user(numeric)
        .await
        .map_err(store_problem)?
        .is_none()
    {
        return Err(not_found("user", &id));
    }
    let issued = state
        .store
        .create_token(numeric, role, body.label.as_deref())
        .await
        .map_err(people_problem)?;
    tracing::info!(
        token_id = issued.info.id,
        user_id = numeric,
        role = %role,
        by = %caller.actor(),
        "Issued an API token."
    );
    Ok((
        StatusCode::CREATED,
        Json(IssuedTokenBody {
            token: issued.token,
            info: issued.info,
        }),
    )
        .into_response())
}

#[utoipa::path(
    security(("bearer" = [])),
    delete,
    path = "/v1/tokens/{id}",
    tag = "people",
    params(("id" = i64, Path, description = "Token id")),
    responses(
        (status = 200, description = "The token, revoked (revoking again changes nothing)", body = TokenInfo),
        (status = 401, description = "No token, or not a valid one", body = Problem, content_type = "application/json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/json"),
        (status = 404, description = "No such token", body = Problem, content_type = "application/json"),
        (status = 503, description = "The database did not answer", body = Problem, content_type = "application/json"),
    )
)]
async fn revoke_token(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, Problem> {
    allow(&caller, Action::ManageTokens)?;
    let numeric = parse_id("token", &id)?;
    let revoked = state
        .store
        .revoke_token(numeric)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| not_found("token", &id))?;
    tracing::info!(token_id = numeric, by = %caller.actor(), "Revoked an API token.");
    Ok(Json(revoked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admins_manage_and_supervisors_read() {
        let caller = |role| Caller {
            user_id: Some(1),
            role,
        };
        let table = [
            (Action::ReadSelf, [true, true, true]),
            (Action::ReadPeople, [false, true, true]),
            (Action::ManagePeople, [false, false, true]),
            (Action::ManageTokens, [false, false, true]),
        ];
        for (action, allowed) in table {
            for (role, ok) in [Role::Agent, Role::Supervisor, Role::Admin]
                .into_iter()
                .zip(allowed)
            {
                let got = allow(&caller(role), action);
                assert_eq!(got.is_ok(), ok, "{action:?} as {role}");
                if let Err(p) = got {
                    assert_eq!(p.status, StatusCode::FORBIDDEN);
                }
            }
        }
    }

    #[test]
    fn every_people_route_is_described_with_its_error_answers() {
        let (_, api) = routes().split_for_parts();
        let doc = serde_json::to_value(&api).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let mut seen = Vec::new();
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                seen.push(format!("{} {path}", method.to_uppercase()));
                let responses = op["responses"].as_object().unwrap();
                assert!(responses.contains_key("401"), "{method} {path}");
                assert!(responses.contains_key("503"), "{method} {path}");
                let writes = method != "get";
                assert_eq!(
                    responses.contains_key("403"),
                    path != "/v1/me",
                    "{method} {path}"
                );
                if writes && method != "delete" {
                    assert!(responses.contains_key("422"), "{method} {path}");
                }
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "DELETE /v1/tokens/{id}",
                "GET /v1/me",
                "GET /v1/teams",
                "GET /v1/users",
                "GET /v1/users/{id}",
                "GET /v1/users/{id}/tokens",
                "PATCH /v1/teams/{id}",
                "PATCH /v1/users/{id}",
                "POST /v1/teams",
                "POST /v1/users",
                "POST /v1/users/{id}/tokens",
            ]
        );
        assert!(doc["components"]["schemas"]["Problem"].is_object());
    }

    #[test]
    fn a_null_team_leaves_the_team_and_a_missing_one_keeps_it() {
        let leave: UpdateUser = serde_json::from_str(r#"{"team_id": null}"#).unwrap();
        assert_eq!(leave.team_id, Some(None));
        let keep: UpdateUser = serde_json::from_str(r#"{"name": "Ana"}"#).unwrap();
        assert_eq!(keep.team_id, None);
        let join: UpdateUser = serde_json::from_str(r#"{"team_id": 4}"#).unwrap();
        assert_eq!(join.team_id, Some(Some(4)));
        assert!(serde_json::from_str::<UpdateUser>(r#"{"role": "admin"}"#).is_err());
    }
}
