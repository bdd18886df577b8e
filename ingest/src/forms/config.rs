//! How forms are declared in the configuration file (`[[forms]]` and `[intake]`).

use std::path::PathBuf;

use serde::Deserialize;

use super::signature::TimestampPolicy;

/// Intake limits shared by every form (the `[intake]` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IntakeSettings {
    /// Largest accepted request body in bytes, checked before parsing (default 65,536).
    pub max_body_bytes: usize,
    /// An identical submission to the same form within this many seconds is the same
    /// inquiry (a double click); default 600.
    pub dedup_window_secs: u32,
    /// How long an idempotency-key look-up may take before intake accepts without it,
    /// in milliseconds (the inquiry id covers the key and the content, so nothing is
    /// dropped: a retry is still one inquiry, another body under the key its own).
    pub key_lookup_timeout_ms: u64,
    /// Posts a minute one client address may make to one form once its burst is used;
    /// 0 (the default) turns the limit off. Off by default because behind a proxy that
    /// is not listed in `http.trusted_proxies` every visitor shares the proxy's address.
    pub rate_limit_per_minute: u32,
    /// Posts one client address may make to one form at once before the rate applies
    /// (default 10).
    pub rate_limit_burst: u32,
    /// How long an `Idempotency-Key` stays bound to its content, in seconds (default
    /// 86,400: a day); after that the key is free again.
    pub key_ttl_secs: u64,
    /// Connections of the key store's own pool (default 3), kept apart from the
    /// consumers' pool so that a busy consumer never makes intake skip the check.
    pub key_store_max_connections: u32,
    /// How often expired keys are deleted, in seconds (default 300).
    pub key_purge_interval_secs: u64,
}

impl Default for IntakeSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            dedup_window_secs: 600,
            key_lookup_timeout_ms: 500,
            rate_limit_per_minute: 0,
            rate_limit_burst: 10,
            key_ttl_secs: 24 * 60 * 60,
            key_store_max_connections: 3,
            key_purge_interval_secs: 300,
        }
    }
}

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
