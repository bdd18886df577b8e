//! The Telegram connector: `[[telegram]]`, one entry per bot.
//!
//! - [`update`]: the Bot API's Update as it arrives and the rules that make one an
//!   inquiry (or not, with a reason).
//! - [`api`]: the Bot API calls, with the token kept out of every error.
//! - [`poll`]: poll mode, `getUpdates` under the source's lease and cursor.
//! - [`webhook`]: webhook mode, `POST /v1/intake/chat/telegram/{name}`.

pub mod api;
pub mod poll;
pub mod update;
pub mod webhook;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::connector::{
    Checks, ConfigProblem, Connector, ConnectorKind, Deps, HttpConnector, PullConnector,
};
use crate::inquiry::Channel;
use update::BotReading;

/// How a bot receives its updates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The daemon asks (`getUpdates` long polling).
    #[default]
    Poll,
    /// Telegram posts each update to `/v1/intake/chat/telegram/{name}`.
    Webhook,
}

/// One `[[telegram]]` entry as written.
#[derive(Clone, Deserialize)]
pub struct TelegramConfig {
    /// The bot's name here: in the webhook path, keys and commands; unique.
    pub name: String,
    /// The bot token from @BotFather (`123456:ABC...`); the environment variable
    /// `LEADPIPE_TELEGRAM_<NAME>_TOKEN` overrides it.
    #[serde(default)]
    pub token: String,
    /// The Bot API's address (default `https://api.telegram.org`).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// `poll` (default) or `webhook`.
    #[serde(default)]
    pub mode: Mode,
    /// The secret Telegram sends in `X-Telegram-Bot-Api-Secret-Token` (webhook mode).
    #[serde(default)]
    pub secret_token: Option<String>,
    /// The source its leads are filed under.
    pub source: String,
    /// Region for phone numbers written without a country code.
    #[serde(default)]
    pub default_region: Option<String>,
    /// How long one `getUpdates` waits for something new, in seconds (default 30).
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_secs: u64,
}

// The token and the secret stay out of debug output and logs.
impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("name", &self.name)
            .field("api_base", &self.api_base)
            .field("mode", &self.mode)
            .field("source", &self.source)
            .field("default_region", &self.default_region)
            .field("poll_timeout_secs", &self.poll_timeout_secs)
            .finish_non_exhaustive()
    }
}

fn default_api_base() -> String {
    "https://api.telegram.org".into()
}
fn default_poll_timeout() -> u64 {
    30
}

impl TelegramConfig {
    /// The environment variable that overrides the token: `LEADPIPE_TELEGRAM_<NAME>_TOKEN`,
    /// the name upper-cased with `_` for anything that is not a letter or digit.
    pub fn token_env(&self) -> String {
        let name: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("LEADPIPE_TELEGRAM_{name}_TOKEN")
    }

    /// The token: the environment override, else `token`.
    pub fn resolve_token(&self) -> String {
        match std::env::var(self.token_env()) {
            Ok(value) if !value.trim().is_empty() => value.trim().to_owned(),
            _ => self.token.trim().to_owned(),
        }
    }

    /// What reading its updates needs.
    pub fn reading(&self) -> BotReading {
        BotReading {
            name: self.name.clone(),
            source: self.source.clone(),
            default_region: self.default_region.clone(),
        }
    }

    /// A Bot API client for it; each call may take the long poll's wait and a margin.
    pub fn api(&self) -> Result<api::BotApi, api::ApiError> {
        api::BotApi::new(
            &self.api_base,
            &self.resolve_token(),
            Duration::from_secs(self.poll_timeout_secs + 15),
        )
    }

    /// The source key of its poller (`telegram-<name>`): its lease and cursor.
    pub fn poll_source(&self) -> String {
        format!("{}-{}", update::PLATFORM, self.name)
    }
}

/// Counts an update that is not an inquiry, by bot and reason.
pub(crate) fn count_ignored(bot: &BotReading, reason: &'static str) {
    metrics::counter!("leadpipe_telegram_ignored_total", "bot" => bot.name.clone(), "reason" => reason).increment(1);
}

/// Counts an update whose inquiry the pipeline refused, by bot and code.
pub(crate) fn count_refused(bot: &BotReading, code: &'static str) {
    metrics::counter!("leadpipe_telegram_ignored_total", "bot" => bot.name.clone(), "reason" => code).increment(1);
}

/// The Telegram connector kind: a poller per bot in poll mode, one webhook endpoint.
pub struct Telegram;

impl ConnectorKind for Telegram {
    const SECTION: &'static str = "telegram";
    type Config = Vec<TelegramConfig>;

    fn validate(bots: &Self::Config, checks: &Checks<'_>) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        for (index, bot) in bots.iter().enumerate() {
            let key = |field: &str| format!("telegram[{index}].{field}");
            if let Some(problem) =
                crate::connector::name_problem(&bot.name, 64, "bot", "the webhook path", &mut names)
            {
                problems.push((key("name"), problem));
            }
            let token = bot.resolve_token();
            let token_ok = token.split_once(':').is_some_and(|(id, secret)| {
                !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_digit())
                    && !secret.is_empty()
                    && secret.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
            });
            if !token_ok {
                problems.push((
                    key("token"),
                    format!(
                        "is missing or not a bot token: write it as @BotFather gave it \
                         (`123456:ABC-DEF...`), here or in {}",
                        bot.token_env()
                    ),
                ));
            }
            let base = bot.api_base.trim();
            if !(base.starts_with("https://") || base.starts_with("http://"))
                || base.contains(char::is_whitespace)
            {
                problems.push((
                    key("api_base"),
                    "must be an http(s) URL such as https://api.telegram.org".into(),
                ));
            }
            match (&bot.mode, &bot.secret_token) {
                (Mode::Webhook, None) => problems.push((
                    key("secret_token"),
                    "webhook mode needs a secret_token (1 to 256 of A-Z, a-z, 0-9, `_`, `-`): \
                     Telegram sends it with every call and calls without it are refused"
                        .into(),
                )),
                (_, Some(secret))
                    if secret.is_empty()
                        || secret.len() > 256
                        || !secret
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
                {
                    problems.push((
                        key("secret_token"),
                        "must be 1 to 256 of A-Z, a-z, 0-9, `_` and `-` (Telegram's rule)".into(),
                    ))
                }
                _ => {}
            }
            if bot.source.trim().is_empty() {
                problems.push((
                    key("source"),
                    "must not be empty (e.g. telegram-shop)".into(),
                ));
            }
            if let Some(region) = &bot.default_region
                && let Err(problem) = (checks.region)(region)
            {
                problems.push((key("default_region"), problem));
            }
            if bot.poll_timeout_secs > 50 {
                problems.push((
                    key("poll_timeout_secs"),
                    "must be at most 50 (Telegram holds a long poll for up to 50 s)".into(),
                ));
            }
        }
        problems
    }

    fn summary(bots: &Self::Config) -> Option<String> {
        if bots.is_empty() {
            return None;
        }
        Some(format!(
            "{} Telegram bot{}",
            bots.len(),
            if bots.len() == 1 { "" } else { "s" }
        ))
    }

    fn build(bots: Self::Config, deps: &Deps) -> Result<Vec<Connector>, ConfigProblem> {
        if bots.is_empty() {
            return Ok(Vec::new());
        }
        let mut built = Vec::new();
        let mut hooks = Vec::new();
        let mut sources = Vec::new();
        for (index, bot) in bots.into_iter().enumerate() {
            let reading = bot.reading();
            match bot.mode {
                Mode::Poll => {
                    let api = bot
                        .api()
                        .map_err(|e| (format!("telegram[{index}].api_base"), e.to_string()))?;
                    built.push(Connector::Pull(PullConnector {
                        channel: Channel::Chat,
                        // Lease and cursor belong to the bot: two bots may share a source.
                        name: bot.poll_source(),
                        source: bot.source.clone(),
                        task: Arc::new(poll::PollTask::new(
                            reading.clone(),
                            api,
                            bot.poll_timeout_secs,
                        )),
                    }));
                    hooks.push(webhook::HookBot {
                        reading,
                        secret: None,
                    });
                }
                Mode::Webhook => {
                    sources.push(reading.source.clone());
                    hooks.push(webhook::HookBot {
                        reading,
                        secret: bot.secret_token.clone(),
                    });
                }
            }
        }
        sources.sort();
        sources.dedup();
        built.push(Connector::Http(HttpConnector {
            channel: Channel::Chat,
            sources,
            routes: Box::new(webhook::routes(
                hooks,
                deps.sink.clone(),
                deps.intake.max_body_bytes,
            )),
        }));
        Ok(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bot(extra: serde_json::Value) -> TelegramConfig {
        let mut entry = json!({"name": "shop", "token": "123456:TEST", "source": "telegram-shop"});
        for (k, v) in extra.as_object().unwrap() {
            entry[k] = v.clone();
        }
        serde_json::from_value(entry).expect("a [[telegram]] entry")
    }

    fn problems(bots: Vec<TelegramConfig>) -> Vec<String> {
        let intake = crate::connector::IntakeSettings::default();
        let region = |r: &str| {
            if r.len() == 2 {
                Ok(())
            } else {
                Err(format!("`{r}` is not a region"))
            }
        };
        let checks = Checks {
            intake: &intake,
            region: &region,
        };
        Telegram::validate(&bots, &checks)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn the_contracts_entry_reads_with_its_defaults() {
        let b = bot(json!({"mode": "webhook", "secret_token": "s3cret_-x"}));
        assert_eq!(b.api_base, "https://api.telegram.org");
        assert_eq!(b.poll_timeout_secs, 30);
        assert_eq!(b.poll_source(), "telegram-shop");
        assert!(problems(vec![b, bot(json!({"name": "other"}))]).is_empty());
        assert!(!format!("{:?}", bot(json!({}))).contains("TEST"));
    }

    #[test]
    fn every_problem_is_named_by_its_key_path() {
        let found = problems(vec![
            bot(json!({"name": "shop bot", "token": "nope", "api_base": "ftp://x"})),
            bot(json!({"mode": "webhook", "source": " "})),
            bot(
                json!({"secret_token": "has space", "default_region": "Italy",
                       "poll_timeout_secs": 90}),
            ),
        ]);
        assert_eq!(
            found,
            [
                "telegram[0].name",
                "telegram[0].token",
                "telegram[0].api_base",
                "telegram[1].secret_token",
                "telegram[1].source",
                "telegram[2].name",
                "telegram[2].secret_token",
                "telegram[2].default_region",
                "telegram[2].poll_timeout_secs",
            ]
        );
    }
}
