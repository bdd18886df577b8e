//! A small Bot API client: `getUpdates`, `getMe`, `getWebhookInfo`, `setWebhook`.
//!
//! The token is part of every URL path (`{api_base}/bot<token>/<method>`), so no error
//! this module returns carries a URL or the token: request errors are stripped of their
//! URL and any text is scrubbed of the token before it leaves.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The updates asked for, by polling and webhook alike: a chat with the bot, and the
/// chats of a Telegram Business account the bot is connected to.
const ALLOWED_UPDATES: [&str; 5] = [
    "message",
    "edited_message",
    "callback_query",
    "business_message",
    "edited_business_message",
];

/// Why a Bot API call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Telegram asks to wait (HTTP 429); `retry_after` seconds.
    #[error("Telegram asks to wait {retry_after} s before the next call (too many requests)")]
    RetryAfter {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// `getUpdates` is refused because a webhook is set (HTTP 409).
    #[error(
        "Telegram refuses getUpdates while a webhook is set for this bot ({0}): \
         set mode = \"webhook\" for it, or remove the webhook with \
         `leadpipe telegram set-webhook NAME \"\"`"
    )]
    WebhookSet(String),
    /// The token was refused (HTTP 401 or 404).
    #[error("Telegram refused the bot token ({0}): check the bot's `token` (from @BotFather)")]
    Unauthorized(String),
    /// Telegram answered with an error.
    #[error("Telegram answered {status}: {description}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Telegram's description.
        description: String,
    },
    /// The request did not get an answer (connection refused, timeout, TLS).
    #[error("the Bot API could not be reached: {0}")]
    Network(String),
    /// The answer is not the Bot API's JSON.
    #[error("the Bot API's answer does not read: {0}")]
    Unreadable(String),
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error_code: Option<u16>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

/// A client for one bot.
#[derive(Clone)]
pub struct BotApi {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotApi")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// What `getMe` says about the bot.
#[derive(Debug, Clone, Deserialize)]
pub struct BotUser {
    /// The bot's user id.
    pub id: i64,
    /// Its display name.
    #[serde(default)]
    pub first_name: String,
    /// Its `@username`.
    #[serde(default)]
    pub username: Option<String>,
}

/// What `getWebhookInfo` says.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookInfo {
    /// The webhook's URL; empty when none is set (then `getUpdates` works).
    #[serde(default)]
    pub url: String,
    /// Updates waiting to be delivered.
    #[serde(default)]
    pub pending_update_count: u64,
    /// Telegram's last delivery error, if any.
    #[serde(default)]
    pub last_error_message: Option<String>,
}

impl BotApi {
    /// A client for the bot with `token` at `api_base` (`https://api.telegram.org`);
    /// `timeout` bounds each call (a long poll's wait included).
    pub fn new(api_base: &str, token: &str, timeout: Duration) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .build()
            .map_err(|e| ApiError::Network(describe(&e, token)))?;
        Ok(Self {
            http,
            base: api_base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    /// `getUpdates` from `offset`, waiting up to `timeout_secs` for something new. Each
    /// update comes back as its JSON value, so one that does not read cannot hide the
    /// others.
    pub async fn get_updates(
        &self,
        offset: Option<i64>,
        timeout_secs: u64,
    ) -> Result<Vec<Value>, ApiError> {
        let mut params = json!({ "timeout": timeout_secs, "allowed_updates": ALLOWED_UPDATES });
        if let Some(offset) = offset {
            params["offset"] = offset.into();
        }
        self.call("getUpdates", params).await
    }

    /// `getMe`.
    pub async fn get_me(&self) -> Result<BotUser, ApiError> {
        self.call("getMe", json!({})).await
    }

    /// `getWebhookInfo`.
    pub async fn get_webhook_info(&self) -> Result<WebhookInfo, ApiError> {
        self.call("getWebhookInfo", json!({})).await
    }

    /// `setWebhook` with the URL Telegram should post to and the secret it sends back in
    /// `X-Telegram-Bot-Api-Secret-Token`; an empty URL removes the webhook.
    pub async fn set_webhook(&self, url: &str, secret_token: Option<&str>) -> Result<(), ApiError> {
        let mut params = json!({
            "url": url,
            "allowed_updates": ALLOWED_UPDATES,
        });
        if let Some(secret) = secret_token.filter(|_| !url.is_empty()) {
            params["secret_token"] = secret.into();
        }
        let _: Value = self.call("setWebhook", params).await?;
        Ok(())
    }

    async fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, ApiError> {
        let url = format!("{}/bot{}/{method}", self.base, self.token);
        let response = self
            .http
            .post(url)
            .json(&params)
            .send()
            .await
            .map_err(|e| ApiError::Network(describe(&e, &self.token)))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Network(describe(&e, &self.token)))?;
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::Unreadable(format!("HTTP {status}, not the Bot API's JSON ({e})"))
        })?;
        let code = answer.error_code.unwrap_or(status);
        if answer.ok && (200..300).contains(&status) {
            let result = answer.result.unwrap_or(Value::Null);
            return serde_json::from_value(result)
                .map_err(|e| ApiError::Unreadable(format!("{method}: {e}")));
        }
        let description = scrub(
            answer.description.as_deref().unwrap_or("no description"),
            &self.token,
        );
        Err(match code {
            429 => ApiError::RetryAfter {
                retry_after: answer
                    .parameters
                    .and_then(|p| p.retry_after)
                    .unwrap_or(5)
                    .clamp(1, 3600),
            },
            409 => ApiError::WebhookSet(description),
            401 | 404 => ApiError::Unauthorized(format!("{code} {description}")),
            _ => ApiError::Refused {
                status: code,
                description,
            },
        })
    }
}

/// A request error as text: without its URL (the token is in its path), with its causes.
fn describe(error: &reqwest::Error, token: &str) -> String {
    let mut text = if error.is_timeout() {
        "no answer in time".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    scrub(&text, token)
}

/// `text` with every occurrence of the token (and its secret half) replaced.
fn scrub(text: &str, token: &str) -> String {
    let mut out = text.to_owned();
    if !token.is_empty() {
        out = out.replace(token, "<token>");
    }
    if let Some((_, secret)) = token.split_once(':')
        && secret.len() >= 4
    {
        out = out.replace(secret, "<token>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_survives_in_error_text() {
        let token = "123456:SECRET-part";
        assert_eq!(
            scrub("bad url https://x/bot123456:SECRET-part/getMe", token),
            "bad url https://x/bot<token>/getMe"
        );
        assert_eq!(scrub("…SECRET-part…", token), "…<token>…");
    }
}
