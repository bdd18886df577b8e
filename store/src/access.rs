//! Who is asking: the role of an API token and which leads it may see.
//!
//! Every query that reads or changes leads takes a [`Scope`] and narrows itself with
//! [`Scope::push_lead_filter`], so a lead outside the caller's scope is indistinguishable
//! from one that does not exist.

use std::fmt;
use std::str::FromStr;

use sqlx::{Postgres, QueryBuilder};

/// Who acts on leads: the token's role and its user (none for the bootstrap admin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The token's role.
    pub role: Role,
    /// The user behind the token; `None` for the bootstrap admin.
    pub user_id: Option<i64>,
}

impl Actor {
    /// The leads this actor may see and change.
    pub fn scope(&self) -> Scope {
        Scope::of(self.role, self.user_id)
    }

    /// How history, activities and logs name the actor (`user:12`, `admin`).
    pub fn name(&self) -> String {
        match self.user_id {
            Some(id) => format!("user:{id}"),
            None => "admin".to_owned(),
        }
    }
}

/// What an API token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Works the leads assigned to them.
    Agent,
    /// Works and assigns the leads of their team, and the unassigned queue.
    Supervisor,
    /// Everything, including users, tokens, pipelines and stages.
    Admin,
}

impl Role {
    /// The role as stored and as written in the API (`agent`, `supervisor`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "agent" => Ok(Role::Agent),
            "supervisor" => Ok(Role::Supervisor),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "`{other}` is not a role: use agent, supervisor or admin"
            )),
        }
    }
}

/// Which leads a caller may see and change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every lead (admins, the bootstrap token, the daemon's own jobs).
    All,
    /// Leads whose responsible user is in this user's team, the user's own, and the
    /// unassigned queue (supervisors).
    Team {
        /// The supervisor.
        user_id: i64,
    },
    /// Only leads whose responsible user is this one (agents).
    Own {
        /// The agent.
        user_id: i64,
    },
}

impl Scope {
    /// The scope a role gives a user.
    pub fn of(role: Role, user_id: Option<i64>) -> Scope {
        match (role, user_id) {
            (Role::Admin, _) | (_, None) => Scope::All,
            (Role::Supervisor, Some(user_id)) => Scope::Team { user_id },
            (Role::Agent, Some(user_id)) => Scope::Own { user_id },
        }
    }

    /// Appends ` AND <the lead is in scope>` for a query whose leads row is `lead`
    /// (an alias such as `l`).
    pub fn push_lead_filter(&self, sql: &mut QueryBuilder<'_, Postgres>, lead: &str) {
        match *self {
            Scope::All => {}
            Scope::Own { user_id } => {
                sql.push(format!(" AND {lead}.responsible_id = "))
                    .push_bind(user_id);
            }
            Scope::Team { user_id } => {
                sql.push(format!(
                    " AND ({lead}.responsible_id IS NULL OR {lead}.responsible_id = "
                ))
                .push_bind(user_id)
                .push(format!(
                    " OR {lead}.responsible_id IN (SELECT m.id FROM users m JOIN users s \
                         ON s.team_id = m.team_id WHERE s.id = "
                ))
                .push_bind(user_id)
                .push("))");
            }
        }
    }

    /// Whether a lead with this responsible user is in scope, for checks made in Rust
    /// (`team` lists the user ids of the caller's team, the caller included).
    pub fn allows(&self, responsible: Option<i64>, team: &[i64]) -> bool {
        match *self {
            Scope::All => true,
            Scope::Own { user_id } => responsible == Some(user_id),
            Scope::Team { user_id } => match responsible {
                None => true,
                Some(r) => r == user_id || team.contains(&r),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_from_their_names_only() {
        assert_eq!("Agent".parse::<Role>(), Ok(Role::Agent));
        assert_eq!(" supervisor ".parse::<Role>(), Ok(Role::Supervisor));
        assert!(
            "root"
                .parse::<Role>()
                .unwrap_err()
                .contains("agent, supervisor or admin")
        );
        assert!(Role::Agent < Role::Supervisor && Role::Supervisor < Role::Admin);
    }

    #[test]
    fn a_scope_follows_the_role() {
        assert_eq!(Scope::of(Role::Admin, Some(3)), Scope::All);
        assert_eq!(Scope::of(Role::Agent, None), Scope::All);
        assert_eq!(Scope::of(Role::Agent, Some(3)), Scope::Own { user_id: 3 });
        let team = Scope::of(Role::Supervisor, Some(3));
        assert!(team.allows(None, &[3, 4]));
        assert!(team.allows(Some(4), &[3, 4]));
        assert!(!team.allows(Some(5), &[3, 4]));
        assert!(!Scope::Own { user_id: 3 }.allows(None, &[]));
    }

    #[test]
    fn the_filter_binds_the_user() {
        let mut sql = QueryBuilder::<Postgres>::new("SELECT 1 FROM leads l WHERE true");
        Scope::Own { user_id: 7 }.push_lead_filter(&mut sql, "l");
        assert_eq!(
            sql.sql(),
            "SELECT 1 FROM leads l WHERE true AND l.responsible_id = $1"
        );
        let mut sql = QueryBuilder::<Postgres>::new("WHERE true");
        Scope::All.push_lead_filter(&mut sql, "l");
        assert_eq!(sql.sql(), "WHERE true");
    }
}
