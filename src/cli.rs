//! The command line: parses arguments and runs the command with a list of connectors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::connectors::Catalogue;
use crate::settings::{LogFormat, Settings};
use crate::telemetry;

/// leadpipe catches every sales inquiry (web forms, mailboxes, chats and phone calls) and
/// files each one, exactly once, as a CRM lead in PostgreSQL.
///
/// Quick start: `leadpipe serve --config deploy/leadpipe.example.toml`, then post a form
/// to http://127.0.0.1:8080/v1/intake/forms/<name> and list leads at /v1/leads.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Configuration file (TOML). Environment variables LEADPIPE__SECTION__KEY override
    /// it, e.g. LEADPIPE__API__ADMIN_TOKEN. Without a file, built-in defaults point at a
    /// local PostgreSQL and RabbitMQ.
    #[arg(
        long,
        short,
        global = true,
        env = "LEADPIPE_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    /// Log format; overrides [log] format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: form intake, consumers, ops API, health and metrics.
    Serve,
    /// Apply database migrations (creating the database if needed) and exit.
    Migrate,
    /// Check the configuration, print every problem with its key, and exit non-zero if any.
    /// Settings that work but are unsafe (the example admin token) are printed as
    /// warnings.
    CheckConfig {
        /// Treat warnings as problems (for deployment pipelines).
        #[arg(long)]
        strict: bool,
    },
    /// Inspect or replay the dead-letter queue (messages that could not be stored).
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Check or backfill a mailbox of the `[[mailboxes]]` section.
    #[command(subcommand)]
    Mailbox(Mailbox),
    /// Check a bot of the `[[telegram]]` section or register its webhook.
    #[command(subcommand)]
    Telegram(TelegramCommand),
    /// The morning digest of stale leads: print what would be sent (`--dry-run`) or
    /// queue what is due now (`--send-now`).
    Digest {
        /// Print, per user, the recipient, subject and body that would be sent, and the
        /// leads the abandon rule would move; touches nothing.
        #[arg(long, conflicts_with = "send_now")]
        dry_run: bool,
        /// Queue the digests that are due now (the daemon's mail sender delivers them);
        /// a digest decided already for today is not queued again.
        #[arg(long)]
        send_now: bool,
        /// With --dry-run: compute for `send_at` on this local date instead of now.
        #[arg(long, value_name = "YYYY-MM-DD", requires = "dry_run")]
        date: Option<chrono::NaiveDate>,
        /// Only the user with this email address.
        #[arg(long, value_name = "EMAIL")]
        user: Option<String>,
    },
    /// Add the people who work leads.
    #[command(subcommand)]
    User(crate::people::UserCommand),
    /// Issue, list or revoke users' API tokens (shown once, stored hashed).
    #[command(subcommand)]
    Token(crate::people::TokenCommand),
    /// Import contacts, companies or leads from a CSV file with a header row.
    ///
    /// Contacts and companies are written to PostgreSQL in bulk. Leads are published to
    /// the broker like any other inquiry (channel `import`) and filed by the daemon's
    /// consumers; importing the same file again files nothing new. Rows that cannot be
    /// imported are listed with their line numbers and do not stop the import.
    Import {
        /// What the file holds.
        #[arg(long, value_enum)]
        kind: crate::import::ImportKind,
        /// The CSV file (UTF-8, the first row names the columns).
        #[arg(value_name = "FILE.csv")]
        file: PathBuf,
        /// Rename a column before mapping, e.g. --map "Mail privata=email"; repeatable.
        #[arg(long = "map", value_name = "HEADER=FIELD")]
        map: Vec<String>,
        /// Region (ISO 3166-1, e.g. IT) of phone numbers without a country code;
        /// required for leads.
        #[arg(long, value_name = "XX")]
        default_region: Option<String>,
        /// Where the leads came from [default: import:<file name>].
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// The field separator: one character, or `tab`.
        #[arg(long, default_value = ",")]
        delimiter: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum Mailbox {
    /// Log in to a `[[mailboxes]]` entry and report its folder, UIDVALIDITY, message count
    /// and IDLE support; changes nothing.
    Test {
        /// The mailbox's `name`.
        name: String,
    },
    /// Read the messages received on or after a date again (after an outage) and file
    /// them; messages filed already are no-ops. The cursor and the mailbox are untouched.
    Backfill {
        /// The mailbox's `name`.
        name: String,
        /// The first day to read, as YYYY-MM-DD.
        #[arg(long, value_name = "YYYY-MM-DD")]
        since: chrono::NaiveDate,
    },
}

#[derive(Subcommand)]
pub(crate) enum TelegramCommand {
    /// Ask the Bot API who the bot is (getMe) and whether a webhook is set
    /// (getWebhookInfo); changes nothing.
    Test {
        /// The bot's `name`.
        name: String,
    },
    /// Register the URL Telegram posts the bot's updates to, with its `secret_token`
    /// (the bot must be in webhook mode); an empty URL ("") removes the webhook.
    SetWebhook {
        /// The bot's `name`.
        name: String,
        /// The public https URL of /v1/intake/chat/telegram/NAME.
        url: String,
    },
}

#[derive(Subcommand)]
enum DeadLetters {
    /// Show how many messages are dead-lettered and why, without removing them.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Route each dead letter again with the current configuration and publish it back
    /// to its shard; undecodable ones stay. Fix the cause first.
    Replay {
        /// Replay at most this many.
        #[arg(long, default_value_t = 100_000)]
        limit: u32,
    },
}

/// Runs the command line with the connectors of `catalogue` (the binary passes
/// [`crate::connectors::shipped`]).
pub fn run(catalogue: Catalogue) -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load_with(cli.config.as_deref(), &catalogue) {
        Ok(settings) => settings,
        Err(problems) => {
            eprintln!(
                "The configuration has {} problem{}:",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            for problem in &problems {
                eprintln!("  {problem}");
            }
            return ExitCode::from(2);
        }
    };
    let warnings = settings.warnings();
    if let Command::CheckConfig { strict } = cli.command {
        for warning in &warnings {
            eprintln!("WARNING: {warning}");
        }
        if strict && !warnings.is_empty() {
            eprintln!(
                "Refused (--strict): {} warning{} above.",
                warnings.len(),
                if warnings.len() == 1 { "" } else { "s" }
            );
            return ExitCode::from(2);
        }
        let mut declared = vec![format!("listening on {}", settings.http.listen)];
        declared.extend(settings.connectors.summaries());
        declared.push(format!("AMQP prefix `{}`", settings.amqp.prefix));
        println!("Configuration OK: {}.", declared.join(", "));
        return ExitCode::SUCCESS;
    }

    let format = cli.log_format.unwrap_or(settings.log.format);
    telemetry::init_logs(format, &settings.log.level);
    // One TLS provider for every client (AMQP, PostgreSQL); installing it once up front
    // avoids a run-time panic when more than one could be chosen.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("Cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => {
                for warning in &warnings {
                    tracing::error!(key = %warning.key, "{}", warning.problem);
                }
                crate::startup::serve(settings).await
            }
            Command::Migrate => migrate(settings).await,
            Command::DeadLetters(action) => dead_letters(settings, action).await,
            Command::Mailbox(action) => crate::mailbox::run(settings, action).await,
            Command::Telegram(action) => crate::telegram::run(settings, action).await,
            Command::CheckConfig { .. } => Ok(()),
            Command::Digest {
                dry_run,
                send_now,
                date,
                user,
            } => {
                let command = crate::digest::DigestCommand {
                    dry_run,
                    send_now,
                    date,
                    user,
                };
                crate::digest::run(settings, command).await
            }
            Command::User(action) => crate::people::run_user(settings, action).await,
            Command::Token(action) => crate::people::run_token(settings, action).await,
            Command::Import {
                kind,
                file,
                map,
                default_region,
                source,
                delimiter,
            } => {
                let options = crate::import::ImportOptions {
                    kind,
                    file,
                    maps: map,
                    default_region,
                    source,
                    delimiter,
                };
                crate::import::run(settings, options).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    store::ensure_database(&settings.database.url).await?;
    let store = store::Store::connect_lazy(&settings.database)?;
    store.migrate().await?;
    println!("Migrations applied.");
    store.close().await;
    Ok(())
}

async fn dead_letters(settings: Settings, action: DeadLetters) -> anyhow::Result<()> {
    match action {
        DeadLetters::List { limit } => {
            let summary = router::dead::list(&settings.amqp, limit).await?;
            println!("{} message(s) in the dead-letter queue.", summary.total);
            if summary.parked > 0 {
                println!(
                    "{} undecodable message(s) parked in {} (kept for inspection; replay \
                     never touches them).",
                    summary.parked, summary.parked_queue
                );
            }
            for letter in summary.letters {
                println!(
                    "- {} from {}: {}",
                    letter.message_id.as_deref().unwrap_or("(no id)"),
                    letter.queue.as_deref().unwrap_or("(unknown queue)"),
                    letter.error
                );
            }
        }
        DeadLetters::Replay { limit } => {
            let routes = router::LeadRouter::new(settings.routing.clone());
            let report = router::dead::replay(&settings.amqp, limit, |envelope| {
                envelope.route = routes.route(&envelope.lead);
            })
            .await?;
            println!(
                "Replayed {} message(s); parked {} undecodable one(s).",
                report.replayed, report.parked
            );
        }
    }
    Ok(())
}
