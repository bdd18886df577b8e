//! The direct baseline for benchmarks: what an engineer would write by hand for web-form
//! intake, so leadpipe's figures can be read as ratios to it. axum and sqlx, one
//! autocommit INSERT per post into an indexed table, no broker, no matching, no history.
//!
//! ```text
//! cargo run --release -p direct-baseline --bin lpdirect -- --listen 127.0.0.1:8090 \
//!     --database-url postgres://postgres@127.0.0.1:5432/lpdirect
//! ```
//!
//! It answers `POST /v1/intake/forms/{form}` (urlencoded bodies, as loadgen sends) with
//! 202 once the row is committed, 400 for an empty body, 503 when the
//! database fails.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use clap::Parser;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Runs the direct baseline.
#[derive(Parser)]
#[command(about)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The database (it must exist; the table is created on start).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/lpdirect")]
    database_url: String,
    /// Database connections.
    #[arg(long, default_value_t = 16)]
    pool: u32,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS submissions (
    id          bigserial PRIMARY KEY,
    form        text NOT NULL,
    name        text,
    email       text,
    phone       text,
    company     text,
    message     text,
    fields      jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
)";

/// The first field present among `names`.
fn field(fields: &HashMap<String, String>, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| fields.get(*n))
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim().to_owned())
}

async fn submit(
    State(pool): State<PgPool>,
    Path(form): Path<String>,
    body: Bytes,
) -> (StatusCode, String) {
    let fields: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if fields.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"error":"empty_body"}"#.to_owned(),
        );
    }
    let name = match (
        field(&fields, &["name", "ho_ten"]),
        field(&fields, &["first_name", "nome", "imie"]),
        field(&fields, &["last_name", "cognome", "nazwisko"]),
    ) {
        (Some(n), _, _) => Some(n),
        (None, Some(f), Some(l)) => Some(format!("{f} {l}")),
        (None, f, l) => f.or(l),
    };
    let email = field(&fields, &["email", "e-mail"]).map(|e| e.to_lowercase());
    let phone = field(&fields, &["phone", "telefono", "telefon", "so_dien_thoai"]);
    let company = field(&fields, &["company", "azienda", "firma", "cong_ty"]);
    let message = field(&fields, &["message", "messaggio", "wiadomosc", "noi_dung"]);
    let all = serde_json::to_value(&fields).unwrap_or_default();
    let inserted = sqlx::query_scalar::<_, i64>(
        "INSERT INTO submissions (form, name, email, phone, company, message, fields)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(&form)
    .bind(name)
    .bind(email)
    .bind(phone)
    .bind(company)
    .bind(message)
    .bind(all)
    .fetch_one(&pool)
    .await;
    match inserted {
        Ok(id) => (StatusCode::ACCEPTED, format!(r#"{{"id":{id}}}"#)),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(r#"{{"error":"database","message":{:?}}}"#, e.to_string()),
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = PgPoolOptions::new()
        .max_connections(args.pool)
        .connect(&args.database_url)
        .await?;
    sqlx::query(SCHEMA).execute(&pool).await?;
    for index in [
        "CREATE INDEX IF NOT EXISTS submissions_email ON submissions (email)",
        "CREATE INDEX IF NOT EXISTS submissions_received ON submissions (received_at)",
    ] {
        sqlx::query(index).execute(&pool).await?;
    }
    let app = Router::new()
        .route("/v1/intake/forms/{form}", post(submit))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("direct baseline listening on {}", args.listen);
    axum::serve(listener, app).await?;
    Ok(())
}
