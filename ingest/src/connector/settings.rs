//! The `[intake]` section: limits every connector shares; and the rule for connector
//! entry names.

use std::collections::BTreeSet;

use serde::Deserialize;

/// Checks one entry's `name` (`[[twilio]]`, `[[ami]]`, ...): 1 to `max` ASCII letters,
/// digits, `-` or `_`, since it becomes part of URLs and keys, and not taken by an
/// earlier entry of its section (`seen` collects them). `what` names the kind of entry in
/// the message ("bot", "PBX"), `used_in` why the syntax matters.
pub fn name_problem(
    name: &str,
    max: usize,
    what: &str,
    used_in: &str,
    seen: &mut BTreeSet<String>,
) -> Option<String> {
    let well_formed = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        Some(format!(
            "`{name}` must be 1 to {max} letters, digits, `-` or `_` (it is part of {used_in})"
        ))
    } else if !seen.insert(name.to_owned()) {
        Some(format!(
            "`{name}` names another {what} too: give each its own name"
        ))
    } else {
        None
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_refused_for_its_syntax_or_for_being_taken() {
        let mut seen = BTreeSet::new();
        assert_eq!(
            name_problem("pbx-1_a", 10, "PBX", "call keys", &mut seen),
            None
        );
        let taken = name_problem("pbx-1_a", 10, "PBX", "call keys", &mut seen).unwrap();
        assert!(taken.contains("names another PBX"), "{taken}");
        for bad in ["", "with space", "ünï", "a/b", "elevenchars"] {
            let problem = name_problem(bad, 10, "PBX", "call keys", &mut seen)
                .unwrap_or_else(|| panic!("`{bad}` is refused"));
            assert!(problem.contains("must be 1 to 10"), "{problem}");
        }
    }
}
