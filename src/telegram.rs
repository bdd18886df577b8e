//! `leadpipe telegram test|set-webhook`: an operator's tools for one `[[telegram]]` bot.

use anyhow::{Context, anyhow};
use ingest::telegram::{Mode, Telegram, TelegramConfig};

use crate::cli::TelegramCommand;
use crate::settings::Settings;

/// Runs a `telegram` command.
pub(crate) async fn run(settings: Settings, action: TelegramCommand) -> anyhow::Result<()> {
    match action {
        TelegramCommand::Test { name } => {
            let bot = find(&settings, &name)?;
            let api = bot.api()?;
            let me = api
                .get_me()
                .await
                .with_context(|| format!("Telegram bot {name}: getMe at {}", bot.api_base))?;
            let hook = api
                .get_webhook_info()
                .await
                .with_context(|| format!("Telegram bot {name}: getWebhookInfo"))?;
            println!(
                "Telegram bot {name}: @{} ({}, id {}) answers at {}.",
                me.username.as_deref().unwrap_or("?"),
                me.first_name,
                me.id,
                bot.api_base
            );
            println!(
                "  mode:     {}",
                match bot.mode {
                    Mode::Poll => "poll (getUpdates)",
                    Mode::Webhook => "webhook",
                }
            );
            if hook.url.is_empty() {
                println!("  webhook:  none set");
            } else {
                println!("  webhook:  {}", hook.url);
            }
            println!("  pending:  {} update(s)", hook.pending_update_count);
            if let Some(error) = &hook.last_error_message {
                println!("  last delivery error: {error}");
            }
            match (bot.mode, hook.url.is_empty()) {
                (Mode::Poll, false) => println!(
                    "  WARNING: a webhook is set, so Telegram refuses getUpdates: remove it with \
                     `leadpipe telegram set-webhook {name} \"\"` or set mode = \"webhook\"."
                ),
                (Mode::Webhook, true) => println!(
                    "  WARNING: no webhook is set: register one with \
                     `leadpipe telegram set-webhook {name} https://<host>/v1/intake/chat/telegram/{name}`."
                ),
                _ => {}
            }
            Ok(())
        }
        TelegramCommand::SetWebhook { name, url } => {
            let bot = find(&settings, &name)?;
            let url = url.trim();
            if !url.is_empty() {
                if bot.mode != Mode::Webhook {
                    return Err(anyhow!(
                        "Telegram bot {name} is in poll mode: set mode = \"webhook\" and a \
                         secret_token for it first (Telegram refuses getUpdates while a webhook is set)"
                    ));
                }
                if !url.starts_with("https://") {
                    return Err(anyhow!(
                        "Telegram posts only to https URLs: give the public https address of \
                         /v1/intake/chat/telegram/{name}"
                    ));
                }
            }
            let api = bot.api()?;
            api.set_webhook(url, bot.secret_token.as_deref())
                .await
                .with_context(|| format!("Telegram bot {name}: setWebhook"))?;
            if url.is_empty() {
                println!("Telegram bot {name}: webhook removed; getUpdates works again.");
            } else {
                println!(
                    "Telegram bot {name}: webhook set to {url}; Telegram sends the configured \
                     secret_token with every call."
                );
            }
            Ok(())
        }
    }
}

fn find(settings: &Settings, name: &str) -> anyhow::Result<TelegramConfig> {
    let bots = settings
        .connectors
        .get::<Telegram>()
        .cloned()
        .unwrap_or_default();
    bots.iter()
        .find(|b| b.name == name)
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = bots.iter().map(|b| b.name.as_str()).collect();
            anyhow!(
                "no Telegram bot named `{name}` in [[telegram]]; configured: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )
        })
}
