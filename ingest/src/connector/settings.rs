//! The `[intake]` section: limits every connector shares.

use serde::Deserialize;

/// Intake limits shared by every connector (the `[intake]` section).
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
