//! `leadpipe user add` and `leadpipe token create|list|revoke`: people and their API tokens
//! from the command line, against the configured database.
//!
//! A new token is printed once, on standard output, and never logged.

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use store::{NewUser, Role, Store, User};

use crate::import::open_store;
use crate::settings::Settings;

/// `leadpipe user ...`.
#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Add a user (a person who works leads); give them a token with `token create`.
    Add {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Email address (unique; stored lower-cased).
        #[arg(long)]
        email: String,
        /// The team's name or id; a name no team has yet creates the team.
        #[arg(long)]
        team: Option<String>,
        /// IANA time zone, e.g. Europe/Rome [default: UTC].
        #[arg(long, value_name = "ZONE")]
        time_zone: Option<String>,
    },
}

/// `leadpipe token ...`.
#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Issue an API token and print it once: store it now, it cannot be shown again.
    Create {
        /// The user, by email address or id.
        #[arg(long)]
        user: String,
        /// What the token may do: agent, supervisor or admin.
        #[arg(long)]
        role: Role,
        /// What the token is for (`laptop`, `CRM sync`).
        #[arg(long)]
        label: Option<String>,
    },
    /// List every token (id, user, role, prefix, last use), never the secrets.
    List,
    /// Revoke a token by id: it is refused from the next request on.
    Revoke {
        /// The token's id (from `token list`).
        id: i64,
    },
}

/// Runs a `user` command.
pub(crate) async fn run_user(settings: Settings, action: UserCommand) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    let result = match action {
        UserCommand::Add {
            name,
            email,
            team,
            time_zone,
        } => add_user(&store, &name, &email, team.as_deref(), time_zone.as_deref()).await,
    };
    store.close().await;
    result
}

async fn add_user(
    store: &Store,
    name: &str,
    email: &str,
    team: Option<&str>,
    time_zone: Option<&str>,
) -> anyhow::Result<()> {
    // Check the values before touching the database (and before creating a team).
    NewUser::parse(name, email, time_zone, None)?;
    let team_id = match team {
        None => None,
        Some(team) => {
            let teams = store.list_teams().await?;
            let found = teams
                .iter()
                .find(|t| t.name == team.trim() || t.id.to_string() == team.trim());
            match found {
                Some(t) => Some(t.id),
                None => {
                    let created = store.create_team(team).await?;
                    println!("Created team {} ({}).", created.id, created.name);
                    Some(created.id)
                }
            }
        }
    };
    let user = store
        .create_user(&NewUser::parse(name, email, time_zone, team_id)?)
        .await?;
    println!(
        "Added user {} ({} <{}>, time zone {}).",
        user.id, user.name, user.email, user.time_zone
    );
    Ok(())
}

/// Finds a user by id or email address.
async fn find_user(store: &Store, who: &str) -> anyhow::Result<User> {
    let found = match who.trim().parse::<i64>() {
        Ok(id) => store.get_user(id).await?,
        Err(_) => store.find_user_by_email(who).await?,
    };
    found.ok_or_else(|| anyhow!("there is no user `{who}`: add one with `leadpipe user add`"))
}

/// Runs a `token` command.
pub(crate) async fn run_token(settings: Settings, action: TokenCommand) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    let result = token(&store, action).await;
    store.close().await;
    result
}

async fn token(store: &Store, action: TokenCommand) -> anyhow::Result<()> {
    match action {
        TokenCommand::Create { user, role, label } => {
            let user = find_user(store, &user).await?;
            if !user.active {
                bail!(
                    "user {} ({}) is deactivated: reactivate them (PATCH /v1/users/{} with {{\"active\": true}}) first",
                    user.id,
                    user.email,
                    user.id
                );
            }
            let issued = store
                .create_token(user.id, role, label.as_deref())
                .await
                .context("Issuing the token failed")?;
            tracing::info!(
                token_id = issued.info.id,
                user_id = user.id,
                role = %role,
                "Issued an API token."
            );
            eprintln!(
                "Token {} for {} <{}> with the {role} role. It is shown once; store it now:",
                issued.info.id, user.name, user.email
            );
            println!("{}", issued.token);
        }
        TokenCommand::List => {
            let users = store.list_users().await?;
            let tokens = store.list_tokens(None).await?;
            if tokens.is_empty() {
                println!("No tokens. Issue one with `leadpipe token create`.");
            }
            for t in tokens {
                let email = users
                    .iter()
                    .find(|u| u.id == t.user_id)
                    .map_or("?", |u| u.email.as_str());
                let state = match t.revoked_at {
                    Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                    None => match t.last_used_at {
                        Some(at) => format!("last used {}", at.format("%Y-%m-%d %H:%M")),
                        None => "never used".to_owned(),
                    },
                };
                println!(
                    "{:>5}  {}...  {:<10}  {}  {}{}",
                    t.id,
                    t.prefix,
                    t.role,
                    email,
                    state,
                    t.label.map(|l| format!("  ({l})")).unwrap_or_default()
                );
            }
        }
        TokenCommand::Revoke { id } => match store.revoke_token(id).await? {
            Some(t) => println!("Revoked token {} ({}...).", t.id, t.prefix),
            None => bail!("there is no token {id}: `leadpipe token list` shows the ids"),
        },
    }
    Ok(())
}
