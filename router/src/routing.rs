//! Deciding where a lead goes and which shard carries it.

use normalizer::Lead;

use crate::config::RoutingConfig;
use crate::envelope::Route;

/// Routes leads by the configured rules (named apart from `axum::Router`, which the binary
/// uses beside it).
#[derive(Debug, Clone)]
pub struct LeadRouter {
    config: RoutingConfig,
}

impl LeadRouter {
    /// A router with these rules.
    pub fn new(config: RoutingConfig) -> Self {
        Self { config }
    }

    /// Where this lead goes: the configured pipeline, its initial stage.
    pub fn route(&self, _lead: &Lead) -> Route {
        Route {
            pipeline: self.config.pipeline.clone(),
            stage: None,
        }
    }
}

/// The shard for a key: a stable hash (FNV-1a), so every replica and every version of
/// leadpipe picks the same shard for the same person.
pub fn shard_for(key: &str, shards: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_always_lands_on_the_same_shard() {
        let a = shard_for("email:ana@example.com", 8);
        assert_eq!(a, shard_for("email:ana@example.com", 8));
        assert!(a < 8);
    }

    #[test]
    fn keys_spread_over_all_shards() {
        let mut seen = [0u32; 4];
        for i in 0..4000 {
            seen[shard_for(&format!("email:user{i}@example.com"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "uneven spread: {seen:?}");
    }
}
