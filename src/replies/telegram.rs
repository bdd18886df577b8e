//! `sendMessage` through the Telegram Bot API.
//!
//! `POST {api_base}/bot{token}/sendMessage` with `{"chat_id", "text"}`; the answer is
//! `{"ok": true, "result": {"message_id", ...}}` or `{"ok": false, "error_code",
//! "description", "parameters": {"retry_after"}}`.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use store::ChatTarget;

use super::{Attempt, TelegramBot, describe};

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    ok: bool,
    result: Option<Sent>,
    description: Option<String>,
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Sent {
    message_id: i64,
}

#[derive(Deserialize)]
struct Parameters {
    retry_after: Option<u64>,
}

/// Sends `text` to `target`'s chat as `bot`.
pub(crate) async fn send(
    client: &reqwest::Client,
    bot: &TelegramBot,
    target: &ChatTarget,
    text: &str,
) -> Attempt {
    let (chat_id, connection) = target.telegram_chat();
    let url = format!(
        "{}/bot{}/sendMessage",
        bot.api_base.trim_end_matches('/'),
        bot.token.expose_secret()
    );
    let response = match client
        .post(url)
        .json(&message(chat_id, connection, text))
        .send()
        .await
    {
        Ok(response) => response,
        // The URL carries the bot's token: never let it into a log or a lead.
        Err(error) => return Attempt::Retry(format!("Telegram: {}", describe(error)), None),
    };
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    classify(status, &body)
}

/// The `sendMessage` parameters of `text` to the chat `chat_id`, through a Business
/// account's `connection` when there is one. Private chats have numeric ids; a channel's
/// `@name` stays a string.
fn message(chat_id: &str, connection: Option<&str>, text: &str) -> serde_json::Value {
    let chat = chat_id
        .parse::<i64>()
        .map_or_else(|_| json!(chat_id), |n| json!(n));
    let mut message = json!({"chat_id": chat, "text": text});
    if let Some(connection) = connection {
        message["business_connection_id"] = connection.into();
    }
    message
}

/// What the Bot API's answer `body` with HTTP `status` means for the reply.
fn classify(status: u16, body: &[u8]) -> Attempt {
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        return match answer {
            Some(Answer {
                ok: true,
                result: Some(sent),
                ..
            }) => {
                let mut fields = serde_json::Map::new();
                fields.insert("message_id".into(), json!(sent.message_id));
                Attempt::Sent(sent.message_id.to_string(), fields)
            }
            // Accepted but unreadable: the message is out; sending it again would double it.
            _ => Attempt::Sent(String::new(), serde_json::Map::new()),
        };
    }
    let description = answer
        .as_ref()
        .and_then(|a| a.description.clone())
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
    let error = format!("Telegram answered {status}: {description}");
    if status == 429 {
        let wait = answer
            .and_then(|a| a.parameters)
            .and_then(|p| p.retry_after)
            .map(Duration::from_secs);
        Attempt::RateLimited(error, wait)
    } else if status >= 500 {
        Attempt::Retry(error, None)
    } else {
        // 400 (chat not found, empty text), 403 (the user blocked the bot), 401: sending
        // the same again will not help.
        Attempt::Refused(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_business_chat_is_answered_through_its_connection() {
        let sent = |chat_id: &str| {
            let target = ChatTarget {
                platform: store::ChatPlatform::Telegram,
                account: "shop".into(),
                chat_id: chat_id.into(),
            };
            let (chat, connection) = target.telegram_chat();
            message(chat, connection, "Ciao")
        };
        assert_eq!(sent("42"), json!({"chat_id": 42, "text": "Ciao"}));
        assert_eq!(
            sent("@shop_news"),
            json!({"chat_id": "@shop_news", "text": "Ciao"})
        );
        assert_eq!(
            sent("42@AQADbPQiAAQ1bA8A"),
            json!({"chat_id": 42, "text": "Ciao", "business_connection_id": "AQADbPQiAAQ1bA8A"})
        );
    }

    #[test]
    fn answers_are_read_as_the_bot_api_documents_them() {
        let sent = classify(
            200,
            br#"{"ok":true,"result":{"message_id":42,"date":1,"chat":{"id":7,"type":"private"}}}"#,
        );
        assert!(
            matches!(sent, Attempt::Sent(ref id, ref f) if id == "42" && f["message_id"] == 42)
        );
        let limited = classify(
            429,
            br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#,
        );
        assert!(matches!(limited, Attempt::RateLimited(_, Some(d)) if d == Duration::from_secs(7)));
        assert!(matches!(
            classify(502, b"<html>Bad Gateway</html>"),
            Attempt::Retry(ref e, None) if e.contains("Bad Gateway")
        ));
        assert!(matches!(
            classify(403, br#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#),
            Attempt::Refused(ref e) if e.contains("blocked")
        ));
    }
}
