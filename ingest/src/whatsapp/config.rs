//! How the WhatsApp Business Cloud API account is declared (`[whatsapp]`, one table).

use std::fmt;

use serde::Deserialize;

use crate::connector::ConfigProblem;

/// The Graph API version the messages endpoint is reached through by default.
pub const DEFAULT_API_BASE: &str = "https://graph.facebook.com/v21.0";

/// The `[whatsapp]` section: one WhatsApp Business account's webhook, and what outbound
/// replies need to send through the Cloud API.
#[derive(Clone, Deserialize)]
pub struct WhatsappConfig {
    /// The Meta app's secret: every webhook POST is signed with it (`X-Hub-Signature-256`).
    pub app_secret: String,
    /// The token typed into Meta's webhook settings; the verification GET must echo it.
    pub verify_token: String,
    /// The lead source recorded on every lead from WhatsApp (a Click-to-WhatsApp ad's
    /// referral refines it).
    #[serde(default = "default_source")]
    pub source: String,
    /// The Cloud API access token outbound replies send with (never logged).
    #[serde(default)]
    pub access_token: Option<String>,
    /// The business phone number's id outbound replies are sent from.
    #[serde(default)]
    pub phone_number_id: Option<String>,
    /// The Graph API base outbound replies call (tests point it at a local server).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Largest webhook body accepted, in bytes (default 1 MiB: Meta batches messages).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_source() -> String {
    "whatsapp".into()
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.into()
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

// Secrets never reach a log line, a panic message or `check-config`'s output.
impl fmt::Debug for WhatsappConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |set: bool| if set { "<hidden>" } else { "<unset>" };
        f.debug_struct("WhatsappConfig")
            .field("app_secret", &hidden(!self.app_secret.is_empty()))
            .field("verify_token", &hidden(!self.verify_token.is_empty()))
            .field("source", &self.source)
            .field("access_token", &hidden(self.access_token.is_some()))
            .field("phone_number_id", &self.phone_number_id)
            .field("api_base", &self.api_base)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl WhatsappConfig {
    /// Whether replies can be sent from this number (an access token and a phone number
    /// id are both set; the reply sender builds the messages URL from them).
    pub fn sends_replies(&self) -> bool {
        self.access_token.is_some() && self.phone_number_id.is_some()
    }

    /// Every problem of the section, with key paths from the file's root.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut push = |key: &str, problem: &str| {
            problems.push((format!("whatsapp.{key}"), problem.to_owned()));
        };
        if self.app_secret.trim().is_empty() {
            push(
                "app_secret",
                "must not be empty or blank (an empty key signs anything): copy the app secret from the Meta app's basic settings",
            );
        }
        if self.verify_token.trim().is_empty() {
            push(
                "verify_token",
                "must not be empty or blank: choose a random string and type the same into Meta's webhook settings",
            );
        }
        if self.source.trim().is_empty() {
            push("source", "must not be empty: it is recorded on every lead");
        }
        match self.access_token.as_deref() {
            Some(token) if token.trim().is_empty() || token.chars().any(char::is_whitespace) => {
                push(
                    "access_token",
                    "must be a Cloud API access token without spaces; remove the key to receive only",
                )
            }
            _ => {}
        }
        match self.phone_number_id.as_deref() {
            Some(id) if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) => push(
                "phone_number_id",
                "must be the digits of the business phone number's id (WhatsApp Manager, API setup)",
            ),
            _ => {}
        }
        if self.access_token.is_some() != self.phone_number_id.is_some() {
            push(
                if self.access_token.is_some() {
                    "phone_number_id"
                } else {
                    "access_token"
                },
                "replies need both `access_token` and `phone_number_id`: set both, or neither to receive only",
            );
        }
        let base = self.api_base.as_str();
        let scheme_ok = base.starts_with("https://") || base.starts_with("http://");
        if !scheme_ok || base.parse::<axum::http::Uri>().is_err() || base.contains(['?', '#']) {
            push(
                "api_base",
                "must be an http(s) URL without query, like https://graph.facebook.com/v21.0",
            );
        }
        if self.max_body_bytes == 0 {
            push("max_body_bytes", "must be greater than 0");
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WhatsappConfig {
        WhatsappConfig {
            app_secret: "s3cret-app".into(),
            verify_token: "verify-me".into(),
            source: "whatsapp".into(),
            access_token: Some("EAAG-token".into()),
            phone_number_id: Some("110011223344556".into()),
            api_base: DEFAULT_API_BASE.into(),
            max_body_bytes: 1024,
        }
    }

    #[test]
    fn a_complete_section_has_no_problems_and_sends_replies() {
        let c = config();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert!(c.sends_replies());
    }

    #[test]
    fn every_bad_key_is_named() {
        let c = WhatsappConfig {
            app_secret: " ".into(),
            verify_token: String::new(),
            source: String::new(),
            access_token: Some("has space".into()),
            phone_number_id: Some("12ab".into()),
            api_base: "ftp://x".into(),
            max_body_bytes: 0,
        };
        let keys: Vec<String> = c.problems().into_iter().map(|(k, _)| k).collect();
        for key in [
            "app_secret",
            "verify_token",
            "source",
            "access_token",
            "phone_number_id",
            "api_base",
            "max_body_bytes",
        ] {
            assert!(keys.contains(&format!("whatsapp.{key}")), "{key}: {keys:?}");
        }
        let half = WhatsappConfig {
            phone_number_id: None,
            ..config()
        };
        assert_eq!(half.problems()[0].0, "whatsapp.phone_number_id");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let text = format!("{:?}", config());
        for secret in ["s3cret-app", "verify-me", "EAAG-token"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
