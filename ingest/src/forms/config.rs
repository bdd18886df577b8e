//! How forms are declared in the configuration file (`[[forms]]`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::http::signature::TimestampPolicy;

/// One web form (`[[forms]]`): where it posts, what its data means, how it is protected.
#[derive(Debug, Clone, Deserialize)]
pub struct FormConfig {
    /// URL name: the form posts to `/v1/intake/forms/{name}`.
    pub name: String,
    /// The lead source recorded on every lead from this form (e.g. `website-it`).
    pub source: String,
    /// ISO 3166-1 alpha-2 region for phone numbers typed without a country code.
    pub default_region: String,
    /// A hidden field real people leave empty; a filled one marks the post as spam.
    #[serde(default)]
    pub honeypot: Option<String>,
    /// Shared secret: when set, every post must carry a valid HMAC-SHA256 signature.
    #[serde(default)]
    pub secret: Option<String>,
    /// Read the shared secret from this file instead (trailing newline ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Header carrying the signature, `sha256=<hex of HMAC-SHA256(secret, raw body)>`, or
    /// of `"{timestamp}.{raw body}"` when `X-Leadpipe-Timestamp` is sent.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// `optional` (default): a post may sign the body alone or a timestamp and the body;
    /// `required`: every post must sign `X-Leadpipe-Timestamp`, which bounds replays.
    #[serde(default)]
    pub signature_timestamp: TimestampPolicy,
    /// How far a signed timestamp may be from the server's clock, in seconds (default 300).
    #[serde(default = "default_signature_tolerance_secs")]
    pub signature_tolerance_secs: u64,
    /// Browser origins allowed to post from JavaScript (CORS); `*` allows any.
    /// When set, a post carrying another `Origin` is refused.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Where a plain HTML form post is sent after success (a `303 See Other`).
    #[serde(default)]
    pub redirect: Option<String>,
    /// Overrides `[intake] max_body_bytes` for this form.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Overrides `[intake] rate_limit_per_minute` for this form (0 turns it off here).
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
    /// Overrides `[intake] rate_limit_burst` for this form.
    #[serde(default)]
    pub rate_limit_burst: Option<u32>,
}

fn default_signature_header() -> String {
    "x-leadpipe-signature".to_owned()
}

fn default_signature_tolerance_secs() -> u64 {
    300
}
