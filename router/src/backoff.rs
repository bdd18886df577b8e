//! Reconnect delays: exponential with jitter, so a fleet does not retry in lock step and
//! nothing spins while a peer is down.

use std::time::Duration;

/// An exponential backoff from `initial` to `max`, with up to 25% jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay to wait; each call doubles the base up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter_range = base.as_millis() as u64 / 4;
        let jitter = if jitter_range == 0 {
            0
        } else {
            // A cheap, dependency-free jitter source: the clock's sub-second noise.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64)
                .unwrap_or(0);
            nanos % jitter_range
        };
        base + Duration::from_millis(jitter)
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(126));
        for _ in 0..10 {
            b.next_delay();
        }
        let capped = b.next_delay();
        assert!(capped >= Duration::from_secs(1) && capped <= Duration::from_millis(1250));
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(126));
    }
}
