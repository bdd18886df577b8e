//! How generic event sources are declared (`[[event_sources]]`).

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::connector::{Checks, ConfigProblem};
use crate::http::signature::TimestampPolicy;
use crate::inquiry::Channel;

/// One system that posts events (`[[event_sources]]`): a site chat widget, a call
/// centre, an in-house application.
#[derive(Clone, Deserialize)]
pub struct EventSourceConfig {
    /// URL name: events are posted to `/v1/intake/events/{name}`; also the platform of
    /// its people's messenger ids (`messenger:<name>:<id>`).
    pub name: String,
    /// The lead source recorded on its leads (default: the name).
    #[serde(default)]
    pub source: Option<String>,
    /// Shared secret every post is signed with (HMAC-SHA256, as forms sign).
    #[serde(default)]
    pub secret: Option<String>,
    /// Read the shared secret from this file instead (trailing newline ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// `optional` (default) or `required`: whether every post must sign
    /// `X-Leadpipe-Timestamp`.
    #[serde(default)]
    pub signature_timestamp: TimestampPolicy,
    /// How far a signed timestamp may be from the server's clock, in seconds (300).
    #[serde(default = "default_tolerance")]
    pub signature_tolerance_secs: u64,
    /// The channel of its `message` events (`chat` by default); `call` events are
    /// always channel `call`.
    #[serde(default = "default_channel")]
    pub channel: Channel,
    /// ISO 3166-1 alpha-2 region for phone numbers sent without a country code.
    #[serde(default)]
    pub default_region: Option<String>,
    /// Overrides `[intake] max_body_bytes` for this source.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

fn default_tolerance() -> u64 {
    300
}

fn default_channel() -> Channel {
    Channel::Chat
}

impl fmt::Debug for EventSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSourceConfig")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .field("secret_file", &self.secret_file)
            .field("signature_timestamp", &self.signature_timestamp)
            .field("signature_tolerance_secs", &self.signature_tolerance_secs)
            .field("channel", &self.channel)
            .field("default_region", &self.default_region)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl EventSourceConfig {
    /// The lead source of its inquiries.
    pub fn lead_source(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.name)
    }
}

/// Every problem of the section, with key paths from the file's root.
pub fn problems(sources: &[EventSourceConfig], checks: Option<&Checks<'_>>) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for (index, s) in sources.iter().enumerate() {
        let mut push = |key: &str, problem: String| {
            problems.push((format!("event_sources[{index}].{key}"), problem));
        };
        let name_ok = !s.name.is_empty()
            && s.name.len() <= 64
            && s.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            push(
                "name",
                format!(
                    "`{}` must be 1 to 64 lower-case letters, digits, `-` or `_` (it is part of a URL and of person keys)",
                    s.name
                ),
            );
        }
        if !seen.insert(s.name.as_str()) {
            push(
                "name",
                format!("`{}` is declared twice; names must be unique", s.name),
            );
        }
        if s.source.as_deref().is_some_and(|x| x.trim().is_empty()) {
            push(
                "source",
                "must not be empty: remove it to use the name".into(),
            );
        }
        match (&s.secret, &s.secret_file) {
            (Some(_), Some(_)) => push(
                "secret",
                "set either `secret` or `secret_file`, not both".into(),
            ),
            (None, None) => push(
                "secret",
                "missing: every event source signs its posts; set `secret` (or `secret_file`) to a long random string shared with the sender".into(),
            ),
            (Some(secret), None) if secret.trim().is_empty() => push(
                "secret",
                "must not be empty or blank (an empty key signs anything)".into(),
            ),
            (None, Some(path)) => match crate::forms::read_secret_file(path) {
                Err(error) => push(
                    "secret_file",
                    format!("cannot read {}: {error}", path.display()),
                ),
                Ok(text) if text.trim().is_empty() => push(
                    "secret_file",
                    format!("{} is empty or blank: put the shared secret in it", path.display()),
                ),
                Ok(_) => {}
            },
            _ => {}
        }
        if !(1..=86_400).contains(&s.signature_tolerance_secs) {
            push(
                "signature_tolerance_secs",
                "must be 1 to 86400 seconds".into(),
            );
        }
        if matches!(s.channel, Channel::Call | Channel::Import) {
            push(
                "channel",
                "must be `chat` (default), `form`, `email` or `manual`: call events are always channel `call`".into(),
            );
        }
        if let (Some(region), Some(checks)) = (&s.default_region, checks)
            && let Err(problem) = (checks.region)(region)
        {
            push("default_region", problem);
        }
        if s.max_body_bytes == Some(0) {
            push("max_body_bytes", "must be greater than 0".into());
        }
    }
    problems
}
