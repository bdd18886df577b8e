//! Storage errors, with SQLSTATE mapped in one place.

/// What went wrong in the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time: retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
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
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                // 08: connection; 40: serialisation failure or deadlock; 53: out of
                // resources; 57: operator intervention (shutdown, statement timeout).
                let transient = ["08", "40", "53", "57", "58"]
                    .iter()
                    .any(|class| code.starts_with(class));
                if transient {
                    StoreError::Unavailable(format!("{error} (SQLSTATE {code})"))
                } else if code == "23505" {
                    StoreError::Conflict(format!("{error} (SQLSTATE {code})"))
                } else if code == "23503" {
                    StoreError::NotFound(format!("{error} (SQLSTATE {code})"))
                } else {
                    StoreError::Rejected(format!("{error} (SQLSTATE {code})"))
                }
            }
            sqlx::Error::RowNotFound => StoreError::NotFound(error.to_string()),
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::Encode(_) => StoreError::Rejected(error.to_string()),
            _ => StoreError::Unavailable(error.to_string()),
        }
    }
}
