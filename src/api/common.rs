//! What every part of the ops API shares: its state, who is calling ([`Caller`]), query
//! parameters, and database failures as answers.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use std::collections::HashMap;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use ingest::problem::Problem;
use metrics_exporter_prometheus::PrometheusHandle;
use normalizer::KeyRules;
use router::Publisher;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use store::{Actor, Role, Scope, Store, StoreError};

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The database.
    pub store: Store,
    /// The publisher (for readiness).
    pub publisher: Arc<Publisher>,
    /// The local spool web intake falls back to, when enabled (for readiness).
    pub spool: Option<Arc<router::spool::Spool>>,
    /// SHA-256 of the admin token; `None` when no token is configured.
    pub admin_token_hash: Option<[u8; 32]>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Set once the schema is migrated; until then the database is not ready for use.
    pub schema_ready: Arc<AtomicBool>,
    /// Which addresses may be keys, for contacts created over the API.
    pub key_rules: Arc<KeyRules>,
    /// The chat accounts replies can be sent through.
    pub replies: Arc<crate::replies::ReplyChannels>,
    /// The reasons a lead may be finished as junk (`[leads] junk_reasons`).
    pub junk_reasons: Arc<Vec<String>>,
}

impl ApiState {
    /// Hashes the token once so that comparisons take the same time whatever its length.
    pub fn token_hash(token: Option<&SecretString>) -> Option<[u8; 32]> {
        token.map(|t| Sha256::digest(t.expose_secret().as_bytes()).into())
    }
}

/// Who made a request: the user behind the token and the token's role. Handlers take it
/// as `Extension<Caller>`; the authentication middleware puts it there.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user the token belongs to; `None` for the bootstrap admin token from config.
    pub user_id: Option<i64>,
    /// What the token may do.
    pub role: Role,
}

impl Caller {
    /// The bootstrap admin (`api.admin_token`).
    pub fn bootstrap_admin() -> Caller {
        Caller {
            user_id: None,
            role: Role::Admin,
        }
    }

    /// Which leads this caller may see and change.
    pub fn scope(&self) -> Scope {
        self.acting().scope()
    }

    /// The caller as the store's checks and records know them.
    pub fn acting(&self) -> Actor {
        Actor {
            role: self.role,
            user_id: self.user_id,
        }
    }

    /// How the caller is named in stage history and activities (`user:12`, `admin`).
    pub fn actor(&self) -> String {
        self.acting().name()
    }

    /// A 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), Problem> {
        if self.role >= role {
            Ok(())
        } else {
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this needs a token with the {role} role; this one is {}",
                    self.role
                ),
            ))
        }
    }
}

/// A JSON body axum could not take, as a problem naming why (wrong content type,
/// malformed JSON, fields of the wrong type).
pub(crate) fn json_problem(rejection: axum::extract::rejection::JsonRejection) -> Problem {
    let status = rejection.status();
    let code = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        "unsupported_content_type"
    } else if status == StatusCode::UNPROCESSABLE_ENTITY {
        "invalid_fields"
    } else {
        "malformed_body"
    };
    Problem::new(status, code, rejection.body_text())
}

/// A 400 for a query string that cannot be used.
pub(crate) fn bad_query(message: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad_query", message)
}

/// The query string as a map, or a 400 naming what is wrong with it.
pub(crate) fn query_params(
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, Problem> {
    params
        .map(|Query(p)| p)
        .map_err(|e| bad_query(e.body_text()))
}

/// A 400 for a query parameter the endpoint does not take, listing those it does.
pub(crate) fn unknown_param(key: &str, allowed: &[&str]) -> Problem {
    bad_query(format!(
        "unknown parameter `{key}`: use {}",
        allowed.join(", ")
    ))
}

/// The id of the pipeline a query names, or a 400 saying there is none by that code.
pub(crate) async fn known_pipeline(state: &ApiState, code: &str) -> Result<i64, Problem> {
    state
        .store
        .pipeline_id(code)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| bad_query(format!("pipeline: there is no pipeline `{code}`")))
}

/// For `deserialize_with`: tells a field sent as `null` (`Some(None)`) from one left out
/// (`None`, with `#[serde(default)]`).
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A `cursor` query parameter: the id a previous page's `next_cursor` gave.
pub(crate) fn page_cursor(value: &str) -> Result<i64, Problem> {
    value.parse().map_err(|_| {
        bad_query(format!(
            "cursor: `{value}` is not a cursor from next_cursor"
        ))
    })
}

/// A `limit` query parameter: 1 to 500.
pub(crate) fn page_limit(value: &str) -> Result<i64, Problem> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=500).contains(n))
        .ok_or_else(|| bad_query(format!("limit: `{value}` must be 1 to 500")))
}

/// A database failure as an HTTP answer: a plain sentence for the client, the error text
/// (which can name hosts, users and statements) only in the log.
pub(crate) fn store_problem(error: StoreError) -> Problem {
    if error.is_transient() {
        tracing::warn!(%error, "Reading from the database failed; answered 503.");
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database did not answer; retry later",
        );
        p.retry_after_secs = Some(5);
        p
    } else {
        tracing::error!(%error, "Reading from the database failed.");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_error",
            "the database could not answer this query; the error is in the daemon's log",
        )
    }
}

/// A time query parameter in RFC 3339.
pub(crate) fn parse_time(key: &str, value: &str) -> Result<DateTime<Utc>, Problem> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            bad_query(format!(
                "{key}: `{value}` is not an RFC 3339 time like 2026-01-31T09:00:00Z ({e})"
            ))
        })
}
