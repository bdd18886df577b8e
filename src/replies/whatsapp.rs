//! Text messages through the WhatsApp Business Cloud API.
//!
//! `POST {api_base}/{phone_number_id}/messages` with `Authorization: Bearer
//! <access_token>` and `{"messaging_product": "whatsapp", "recipient_type": "individual",
//! "to": <wa_id>, "type": "text", "text": {"preview_url": false, "body": ...}}`; the answer
//! is `{"messages": [{"id": "wamid..."}], ...}` or `{"error": {"message", "type", "code",
//! "error_subcode", "fbtrace_id"}}`.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use super::{Attempt, WhatsAppAccount, describe};

/// The Graph API version used when `api_base` names none.
pub const GRAPH_VERSION: &str = "v21.0";

/// Graph API error codes that mean "too many, later" even when the status is 400.
const THROTTLED: &[i64] = &[4, 80007, 130429, 131048, 131056];

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    messages: Vec<Message>,
    error: Option<GraphError>,
}

#[derive(Deserialize)]
struct Message {
    id: String,
}

#[derive(Deserialize)]
struct GraphError {
    message: Option<String>,
    code: Option<i64>,
}

/// The messages endpoint of `phone_number_id` under `api_base`, which may name its Graph
/// API version (`https://graph.facebook.com/v21.0`) or not (then [`GRAPH_VERSION`]).
pub fn messages_url(api_base: &str, phone_number_id: &str) -> String {
    let base = api_base.trim_end_matches('/');
    let last = base.rsplit('/').next().unwrap_or_default();
    let versioned = last.strip_prefix('v').is_some_and(|v| {
        !v.is_empty()
            && v.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    if versioned {
        format!("{base}/{phone_number_id}/messages")
    } else {
        format!("{base}/{GRAPH_VERSION}/{phone_number_id}/messages")
    }
}

/// Sends `text` to `wa_id` from `account`.
pub(crate) async fn send(
    client: &reqwest::Client,
    account: &WhatsAppAccount,
    wa_id: &str,
    text: &str,
) -> Attempt {
    let body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": wa_id,
        "type": "text",
        "text": {"preview_url": false, "body": text},
    });
    let response = match client
        .post(messages_url(&account.api_base, &account.phone_number_id))
        .bearer_auth(account.access_token.expose_secret())
        .json(&body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return Attempt::Retry(format!("WhatsApp: {}", describe(error)), None),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let raw = response.bytes().await.unwrap_or_default();
    classify(status, retry_after, &raw)
}

/// What the Graph API's answer `raw` with HTTP `status` (and `Retry-After`) means.
fn classify(status: u16, retry_after: Option<Duration>, raw: &[u8]) -> Attempt {
    let answer: Option<Answer> = serde_json::from_slice(raw).ok();
    if (200..300).contains(&status) {
        return match answer.and_then(|a| a.messages.into_iter().next()) {
            Some(message) => {
                let mut fields = serde_json::Map::new();
                fields.insert("wamid".into(), json!(message.id));
                Attempt::Sent(message.id, fields)
            }
            // Accepted but unreadable: the message is out; sending it again would double it.
            None => Attempt::Sent(String::new(), serde_json::Map::new()),
        };
    }
    let error = answer.and_then(|a| a.error);
    let code = error.as_ref().and_then(|e| e.code);
    let message = error
        .and_then(|e| e.message)
        .unwrap_or_else(|| String::from_utf8_lossy(raw).chars().take(300).collect());
    let text = match code {
        Some(code) => format!("WhatsApp answered {status} (code {code}): {message}"),
        None => format!("WhatsApp answered {status}: {message}"),
    };
    if status == 429 || code.is_some_and(|c| THROTTLED.contains(&c)) {
        Attempt::RateLimited(text, retry_after)
    } else if status >= 500 {
        Attempt::Retry(text, retry_after)
    } else {
        // A bad recipient, an expired token, a message outside the 24-hour window: the
        // same request will not succeed later.
        Attempt::Refused(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_the_cloud_api_documents_them() {
        let sent = classify(
            200,
            None,
            br#"{"messaging_product":"whatsapp","contacts":[{"input":"39333","wa_id":"39333"}],"messages":[{"id":"wamid.HBg"}]}"#,
        );
        assert!(
            matches!(sent, Attempt::Sent(ref id, ref f) if id == "wamid.HBg" && f["wamid"] == "wamid.HBg")
        );
        // Throttling comes as a 400 with its own code.
        let throttled = classify(
            400,
            None,
            br#"{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429,"fbtrace_id":"x"}}"#,
        );
        assert!(matches!(throttled, Attempt::RateLimited(ref e, None) if e.contains("130429")));
        assert!(matches!(
            classify(503, Some(Duration::from_secs(3)), b""),
            Attempt::Retry(_, Some(d)) if d == Duration::from_secs(3)
        ));
        let expired = classify(
            401,
            None,
            br#"{"error":{"message":"Error validating access token","type":"OAuthException","code":190,"fbtrace_id":"y"}}"#,
        );
        assert!(matches!(expired, Attempt::Refused(ref e) if e.contains("access token")));
    }

    #[test]
    fn the_messages_url_keeps_a_version_or_adds_one() {
        assert_eq!(
            messages_url("https://graph.facebook.com/v19.0/", "1099"),
            "https://graph.facebook.com/v19.0/1099/messages"
        );
        assert_eq!(
            messages_url("http://127.0.0.1:9000", "1099"),
            format!("http://127.0.0.1:9000/{GRAPH_VERSION}/1099/messages")
        );
        assert_eq!(
            messages_url("https://graph.facebook.com", "7"),
            format!("https://graph.facebook.com/{GRAPH_VERSION}/7/messages")
        );
    }
}
