//! Per-source rate limits for form posts: `429 Too Many Requests` with `Retry-After`.
//!
//! Each form may allow a burst of posts per source and then a steady rate per minute
//! (`[intake] rate_limit_per_minute` / `rate_limit_burst`, overridden per form). A source
//! is the client address the HTTP server resolved ([`ClientAddr`]): an IPv4 address, or
//! the /64 network of an IPv6 address, because one IPv6 host usually holds a whole /64.
//!
//! The limit is the generic cell rate algorithm: one instant per source and form (the
//! "theoretical arrival time"), so the state is small. A source whose instant has passed
//! is indistinguishable from a new one and is swept out, which loses nothing; when more
//! than [`MAX_TRACKED_SOURCES`] are live at once, those closest to a fresh allowance are
//! forgotten first, so memory stays bounded whatever the number of addresses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{Method, StatusCode};

use crate::connector::IntakeSettings;
use crate::forms::FormConfig;
use crate::problem::Problem;

/// How many (form, source) pairs are remembered at most, about 5 MiB.
pub const MAX_TRACKED_SOURCES: usize = 100_000;

/// How often sources whose allowance is whole again are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The client a request came from, as the HTTP server resolved it: the peer address, or
/// the address a trusted proxy forwarded. The server puts it into every request's
/// extensions; a request without one is not rate limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// A burst of posts and then a steady rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Time between two posts at the steady rate.
    interval: Duration,
    /// Posts allowed at once.
    burst: u32,
}

impl Quota {
    /// `per_minute` posts a minute after a burst of `burst`; `None` when either is 0 (off).
    pub fn new(per_minute: u32, burst: u32) -> Option<Self> {
        (per_minute > 0 && burst > 0).then(|| Self {
            interval: Duration::from_secs(60) / per_minute,
            burst,
        })
    }

    /// The quota a form runs with: its own values, else the `[intake]` defaults.
    pub fn for_form(settings: &IntakeSettings, form: &FormConfig) -> Option<Self> {
        Self::new(
            form.rate_limit_per_minute
                .unwrap_or(settings.rate_limit_per_minute),
            form.rate_limit_burst.unwrap_or(settings.rate_limit_burst),
        )
    }

    /// The next arrival time after a post at `now`, or how long to wait when over quota.
    fn admit(&self, tat: Option<Instant>, now: Instant) -> Result<Instant, Duration> {
        let next = tat.map_or(now, |t| t.max(now)) + self.interval;
        let ahead = next.duration_since(now);
        let allowed = self.interval.saturating_mul(self.burst);
        if ahead <= allowed {
            Ok(next)
        } else {
            Err(ahead - allowed)
        }
    }
}

/// Every rate-limit setting that cannot work, as (key, problem) pairs.
pub fn problems(settings: &IntakeSettings, forms: &[FormConfig]) -> Vec<(String, String)> {
    let zero_burst = "must be at least 1 when a rate is set (0 would refuse every post); set rate_limit_per_minute = 0 to turn the limit off";
    let mut out = Vec::new();
    let default_broken = settings.rate_limit_per_minute > 0 && settings.rate_limit_burst == 0;
    if default_broken {
        out.push(("intake.rate_limit_burst".to_owned(), zero_burst.to_owned()));
    }
    for (index, form) in forms.iter().enumerate() {
        let per_minute = form
            .rate_limit_per_minute
            .unwrap_or(settings.rate_limit_per_minute);
        let burst = form.rate_limit_burst.unwrap_or(settings.rate_limit_burst);
        // A burst inherited from a broken default is reported once, at the default.
        let inherited = default_broken && form.rate_limit_burst.is_none();
        if per_minute > 0 && burst == 0 && !inherited {
            out.push((
                format!("forms[{index}].rate_limit_burst"),
                zero_burst.to_owned(),
            ));
        }
    }
    out
}

/// Where a request goes under its form's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Within the quota, or the form has none.
    Allowed,
    /// Over the quota: retry after this long.
    Limited(Duration),
}

/// The part of an address that identifies a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl SourceKey {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

struct FormLimit {
    /// Position of the form, part of the table key.
    slot: usize,
    quota: Quota,
    /// The lead source, for the rejection metric.
    source: String,
}

struct Table {
    /// Theoretical arrival time per (form slot, source).
    next: HashMap<(usize, SourceKey), Instant>,
    last_sweep: Instant,
}

impl Table {
    /// Forgets sources whose allowance is whole again; nothing is lost by that.
    fn sweep(&mut self, now: Instant) {
        self.next.retain(|_, at| *at > now);
        self.last_sweep = now;
    }

    /// Frees room when the table is full: sweeps, and if every source is still live,
    /// forgets the tenth whose allowance is closest to whole (they lose the least).
    fn make_room(&mut self, now: Instant, capacity: usize) {
        self.sweep(now);
        if self.next.len() < capacity {
            return;
        }
        let mut times: Vec<Instant> = self.next.values().copied().collect();
        let cut = times.len() / 10;
        let (_, threshold, _) = times.select_nth_unstable(cut);
        let threshold = *threshold;
        self.next.retain(|_, at| *at > threshold);
    }
}

/// The rate limits of every form that has one.
pub struct RateLimits {
    forms: HashMap<String, FormLimit>,
    // std Mutex: held for a hash-map step, never across an await.
    table: Mutex<Table>,
    capacity: usize,
}

impl RateLimits {
    /// Limits for `forms` under the `[intake]` defaults.
    pub fn new<'a>(
        settings: &IntakeSettings,
        forms: impl IntoIterator<Item = &'a FormConfig>,
    ) -> Arc<Self> {
        Arc::new(Self::with_capacity(settings, forms, MAX_TRACKED_SOURCES))
    }

    fn with_capacity<'a>(
        settings: &IntakeSettings,
        forms: impl IntoIterator<Item = &'a FormConfig>,
        capacity: usize,
    ) -> Self {
        let forms = forms
            .into_iter()
            .filter_map(|form| Some((form, Quota::for_form(settings, form)?)))
            .enumerate()
            .map(|(slot, (form, quota))| {
                let limit = FormLimit {
                    slot,
                    quota,
                    source: form.source.clone(),
                };
                (form.name.clone(), limit)
            })
            .collect();
        Self {
            forms,
            table: Mutex::new(Table {
                next: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            capacity: capacity.max(1),
        }
    }

    /// Counts a post from `client` to `form` at `now` (time is a parameter so that tests
    /// need no clock).
    fn check(&self, form: &str, client: IpAddr, now: Instant) -> Verdict {
        let Some(limit) = self.forms.get(form) else {
            return Verdict::Allowed;
        };
        let key = (limit.slot, SourceKey::of(client));
        // A poisoned lock only means another request panicked mid-update; the table is
        // still a valid map of instants.
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.duration_since(table.last_sweep) >= SWEEP_EVERY {
            table.sweep(now);
        }
        let known = table.next.get(&key).copied();
        match limit.quota.admit(known, now) {
            Ok(next) => {
                if known.is_none() && table.next.len() >= self.capacity {
                    table.make_room(now, self.capacity);
                }
                table.next.insert(key, next);
                metrics::gauge!("leadpipe_rate_limit_sources").set(table.next.len() as f64);
                Verdict::Allowed
            }
            Err(wait) => Verdict::Limited(wait),
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next
            .len()
    }
}

impl RateLimits {
    /// The 429 refusal for a post over its form's quota, with the source it counts
    /// against, or `None` when it may go on. Only posts count (a CORS preflight is free),
    /// and a request without a resolved [`ClientAddr`] is not limited.
    pub fn refusal(&self, form: &str, request: &Request) -> Option<(&str, Problem)> {
        if request.method() != Method::POST {
            return None;
        }
        let ClientAddr(ip) = request.extensions().get::<ClientAddr>().copied()?;
        let Verdict::Limited(wait) = self.check(form, ip, Instant::now()) else {
            return None;
        };
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let secs = u32::try_from(secs.max(1)).unwrap_or(u32::MAX);
        let source = self.forms.get(form).map_or("", |l| l.source.as_str());
        let mut problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many posts to this form from your address: retry in {secs} second{}",
                if secs == 1 { "" } else { "s" }
            ),
        );
        problem.retry_after_secs = Some(secs);
        Some((source, problem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(name: &str, per_minute: Option<u32>, burst: Option<u32>) -> FormConfig {
        let mut config: FormConfig = serde_json::from_value(serde_json::json!({
            "name": name, "source": format!("web-{name}"), "default_region": "US",
        }))
        .expect("a form");
        config.rate_limit_per_minute = per_minute;
        config.rate_limit_burst = burst;
        config
    }

    fn defaults(per_minute: u32, burst: u32) -> IntakeSettings {
        IntakeSettings {
            rate_limit_per_minute: per_minute,
            rate_limit_burst: burst,
            ..IntakeSettings::default()
        }
    }

    /// A hand-driven clock.
    struct Clock {
        now: Instant,
    }

    impl Clock {
        fn new() -> Self {
            Self {
                now: Instant::now(),
            }
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    /// A post to `form` from the address `from` at the clock's time.
    fn post(limits: &RateLimits, form: &str, from: &str, clock: &Clock) -> Verdict {
        limits.check(form, ip(from), clock.now)
    }

    #[test]
    fn a_burst_is_allowed_then_posts_wait_for_the_steady_rate() {
        let limits = RateLimits::with_capacity(&defaults(6, 3), [&form("f", None, None)], 100);
        let mut clock = Clock::new();
        for _ in 0..3 {
            assert_eq!(post(&limits, "f", "192.0.2.1", &clock), Verdict::Allowed);
        }
        // Six a minute: one every ten seconds.
        assert_eq!(
            post(&limits, "f", "192.0.2.1", &clock),
            Verdict::Limited(Duration::from_secs(10))
        );
        clock.advance(Duration::from_secs(4));
        assert_eq!(
            post(&limits, "f", "192.0.2.1", &clock),
            Verdict::Limited(Duration::from_secs(6))
        );
        clock.advance(Duration::from_secs(6));
        assert_eq!(post(&limits, "f", "192.0.2.1", &clock), Verdict::Allowed);
        assert!(matches!(
            post(&limits, "f", "192.0.2.1", &clock),
            Verdict::Limited(_)
        ));
        // After a quiet spell the whole burst is back.
        clock.advance(Duration::from_secs(30));
        for _ in 0..3 {
            assert_eq!(post(&limits, "f", "192.0.2.1", &clock), Verdict::Allowed);
        }
    }

    #[test]
    fn forms_and_sources_have_separate_allowances_and_a_form_can_opt_out() {
        let forms = [
            form("tight", None, None),
            form("loose", Some(600), Some(50)),
            form("open", Some(0), None),
        ];
        let limits = RateLimits::with_capacity(&defaults(1, 1), &forms, 100);
        let clock = Clock::new();
        assert_eq!(
            post(&limits, "tight", "192.0.2.1", &clock),
            Verdict::Allowed
        );
        assert!(matches!(
            post(&limits, "tight", "192.0.2.1", &clock),
            Verdict::Limited(_)
        ));
        assert_eq!(
            post(&limits, "tight", "192.0.2.2", &clock),
            Verdict::Allowed
        );
        for _ in 0..50 {
            assert_eq!(
                post(&limits, "loose", "192.0.2.1", &clock),
                Verdict::Allowed
            );
            assert_eq!(post(&limits, "open", "192.0.2.1", &clock), Verdict::Allowed);
            assert_eq!(
                post(&limits, "unknown", "192.0.2.1", &clock),
                Verdict::Allowed
            );
        }
    }

    #[test]
    fn an_ipv6_64_network_is_one_source_and_mapped_ipv4_is_ipv4() {
        let limits = RateLimits::with_capacity(&defaults(1, 1), [&form("f", None, None)], 100);
        let clock = Clock::new();
        assert_eq!(
            post(&limits, "f", "2001:db8:1:2::1", &clock),
            Verdict::Allowed
        );
        assert!(matches!(
            post(&limits, "f", "2001:db8:1:2:ffff::9", &clock),
            Verdict::Limited(_)
        ));
        assert_eq!(
            post(&limits, "f", "2001:db8:1:3::1", &clock),
            Verdict::Allowed
        );
        assert_eq!(post(&limits, "f", "198.51.100.4", &clock), Verdict::Allowed);
        assert!(matches!(
            post(&limits, "f", "::ffff:198.51.100.4", &clock),
            Verdict::Limited(_)
        ));
    }

    #[test]
    fn sources_with_a_whole_allowance_are_swept_out() {
        let limits = RateLimits::with_capacity(&defaults(60, 2), [&form("f", None, None)], 1000);
        let mut clock = Clock::new();
        for n in 0..200u32 {
            limits.check("f", IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)), clock.now);
        }
        assert_eq!(limits.tracked(), 200);
        clock.advance(SWEEP_EVERY);
        post(&limits, "f", "192.0.2.1", &clock);
        assert_eq!(limits.tracked(), 1);
    }

    #[test]
    fn a_flood_of_addresses_never_grows_the_table_past_its_capacity() {
        let limits = RateLimits::with_capacity(&defaults(1, 5), [&form("f", None, None)], 1000);
        let mut clock = Clock::new();
        // A heavy client, then a flood of one-post addresses.
        for _ in 0..5 {
            post(&limits, "f", "192.0.2.1", &clock);
        }
        for n in 0..10_000u32 {
            clock.advance(Duration::from_millis(1));
            assert_eq!(
                limits.check("f", IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)), clock.now),
                Verdict::Allowed
            );
            assert!(limits.tracked() <= 1000);
        }
        // The heavy client is remembered: its allowance was furthest from whole.
        assert!(matches!(
            post(&limits, "f", "192.0.2.1", &clock),
            Verdict::Limited(_)
        ));
    }

    #[test]
    fn a_rate_without_a_burst_is_a_problem_and_zero_turns_the_limit_off() {
        assert_eq!(Quota::new(0, 10), None);
        let forms = [
            form("a", Some(5), Some(0)),
            form("b", Some(0), Some(0)),
            form("c", None, None),
            form("d", Some(5), None),
        ];
        let keys: Vec<String> = problems(&defaults(10, 0), &forms)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(
            keys,
            ["intake.rate_limit_burst", "forms[0].rate_limit_burst"]
        );
        // With the limit off by default, a form that turns it on needs a burst of its own.
        let keys: Vec<String> = problems(&defaults(0, 0), &forms[1..])
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, ["forms[2].rate_limit_burst"]);
    }
}
