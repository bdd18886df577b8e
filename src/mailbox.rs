//! `leadpipe mailbox test|backfill`: an operator's tools for one `[[mailboxes]]` entry.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use ingest::email::imap;
use ingest::email::mailbox::{MailboxConfig, Mailboxes};
use router::LeadRouter;

use crate::cli::Mailbox;
use crate::pipeline::{CommandPublisher, Pipeline};
use crate::settings::Settings;

/// Runs a `mailbox` command.
pub(crate) async fn run(settings: Settings, action: Mailbox) -> anyhow::Result<()> {
    match action {
        Mailbox::Test { name } => {
            let config = find(&settings, &name)?;
            let password = config.resolve_password().map_err(|e| anyhow!("{e}"))?;
            let probe = imap::probe(&config, &password).await.with_context(|| {
                format!(
                    "mailbox {name}: cannot read {}:{} as {}",
                    config.host,
                    config.port(),
                    config.user
                )
            })?;
            println!(
                "Mailbox {name}: logged in to {}:{} as {}.",
                config.host,
                config.port(),
                config.user
            );
            println!("  folder:      {}", probe.folder);
            println!(
                "  UIDVALIDITY: {}",
                probe
                    .uid_validity
                    .map_or("(not given)".into(), |v| v.to_string())
            );
            println!("  messages:    {}", probe.messages);
            println!(
                "  IDLE:        {}",
                if probe.idle {
                    "supported (new mail is read at once)"
                } else {
                    "not supported (polled every poll_interval_secs)"
                }
            );
            println!(
                "  MOVE:        {}",
                if probe.moves {
                    "supported"
                } else {
                    "not supported"
                }
            );
            Ok(())
        }
        Mailbox::Backfill { name, since } => {
            let config = find(&settings, &name)?;
            let password = config.resolve_password().map_err(|e| anyhow!("{e}"))?;
            let broker = CommandPublisher::connect(&settings.amqp).await?;
            let publisher = broker.publisher.clone();
            let pipeline = Arc::new(
                Pipeline::new(LeadRouter::new(settings.routing.clone()), publisher.clone())
                    .with_key_rules(settings.key_rules()?),
            );
            let result = imap::backfill(&config, &password, since, pipeline.as_ref()).await;
            broker.close().await;
            let done = result.with_context(|| format!("mailbox {name}: backfill stopped"))?;
            println!(
                "Mailbox {name}: {} message(s) since {since} handed on ({} not leads); \
                 those filed before are unchanged.",
                done.messages, done.not_leads
            );
            Ok(())
        }
    }
}

fn find(settings: &Settings, name: &str) -> anyhow::Result<MailboxConfig> {
    let mailboxes = settings
        .connectors
        .get::<Mailboxes>()
        .cloned()
        .unwrap_or_default();
    mailboxes
        .iter()
        .find(|m| m.name == name)
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = mailboxes.iter().map(|m| m.name.as_str()).collect();
            anyhow!(
                "no mailbox named `{name}` in [[mailboxes]]; configured: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )
        })
}
