//! Storage errors, with SQLSTATE mapped in one place.
//!
//! Only the data itself can be wrong for good: a value PostgreSQL refuses (class 22), a
//! constraint it breaks (23), a value too big for a limit (54), a value sqlx cannot encode.
//! Everything else is about the database, not the data (unreachable, read-only after a
//! failover, a revoked grant, a column missing while a migration rolls out, out of
//! resources, an internal error): retrying the same work later succeeds once an operator or
//! the database itself has fixed it, so it is transient and the work is held, never
//! dead-lettered.

/// What went wrong in the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot do the work now (unreachable, read-only, a missing grant or
    /// column, out of resources): retry later; the message says what an operator can do.
    #[error("the database cannot do this right now: {0}")]
    Unavailable(String),
    /// The shared lock table is full (SQLSTATE 53200): retry with fewer locks at a time.
    #[error("the database's lock table is full: {0}")]
    OutOfLocks(String),
    /// The database refused the data; retrying the same data will not help.
    #[error("the database refused the data: {0}")]
    Rejected(String),
    /// A schema migration failed.
    #[error("applying database migrations failed: {0}")]
    Migration(String),
    /// A setting is unusable.
    #[error("invalid database setting: {0}")]
    Config(String),
    /// A referenced row does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The data collides with what is stored (a unique key is taken).
    #[error("conflict: {0}")]
    Conflict(String),
}

impl StoreError {
    /// True when retrying the same work later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::OutOfLocks(_))
    }
}

/// True for the SQLSTATE classes that say the data itself is wrong.
fn is_data_error(code: &str) -> bool {
    ["22", "23", "54"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// What an operator can do about a database condition that holds leads back.
fn operator_hint(code: &str) -> &'static str {
    match code {
        "25006" => {
            "the database is read-only (a standby after a failover, or \
             default_transaction_read_only is on); leads wait until it accepts writes"
        }
        "42501" => {
            "leadpipe's database role lacks a privilege: grant it and the held leads are filed"
        }
        "0A000" => "the schema changed under an open connection; reconnecting",
        "53200" => {
            "too many locks at once; the batch is filed in smaller transactions \
             (see database.max_batch_locks)"
        }
        _ => match code.get(..2).unwrap_or_default() {
            "08" => "the connection to the database failed; reconnecting",
            "25" => "the database refused the transaction in its current state",
            "28" => "the database refused leadpipe's credentials: check database.url",
            "3D" | "3F" => "the database or schema does not exist: check database.url",
            "40" => "the transaction collided with another one",
            "42" => {
                "the schema does not match this leadpipe (a migration still rolling out?): \
                 run `leadpipe migrate` with this version; leads wait until it matches"
            }
            "53" => "the database is out of resources (connections, memory or disk)",
            "55" => "a database object is busy or locked",
            "57" => "the database is shutting down, restarting or cancelled the statement",
            "58" | "XX" => "the database reported a system or internal error: check its log",
            _ => "the database cannot do this right now",
        },
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                let detail = format!("{error} (SQLSTATE {code})");
                match code.as_str() {
                    "23505" => StoreError::Conflict(detail),
                    "23503" => StoreError::NotFound(detail),
                    "53200" => {
                        StoreError::OutOfLocks(format!("{detail}: {}", operator_hint(&code)))
                    }
                    _ if is_data_error(&code) => StoreError::Rejected(detail),
                    _ => StoreError::Unavailable(format!("{detail}: {}", operator_hint(&code))),
                }
            }
            sqlx::Error::RowNotFound => StoreError::NotFound(error.to_string()),
            sqlx::Error::Encode(_) => StoreError::Rejected(error.to_string()),
            // A column or type that is not what this build expects: a schema mid-migration.
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. } => StoreError::Unavailable(format!(
                "{error}: the schema does not match this leadpipe (a migration still rolling \
                 out?); leads wait until it matches"
            )),
            _ => StoreError::Unavailable(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_data_classes_are_permanent() {
        for code in ["22001", "22P02", "23502", "23514", "54000"] {
            assert!(is_data_error(code), "{code}");
        }
        for code in [
            "25006", "42501", "42703", "42P01", "08006", "40001", "53200", "57014", "58030",
            "XX000", "0A000", "55P03", "",
        ] {
            assert!(!is_data_error(code), "{code}");
        }
    }
}
