//! Control request rate per source IP: a token bucket each, so one client
//! (a looping script, an attacker on the control network) cannot starve
//! the proxy's requests. The table is bounded: idle sources are forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sources remembered at most; past this, idle ones are dropped first.
const MAX_SOURCES: usize = 65_536;
/// A source that sent nothing for this long starts with a full bucket anyway.
const IDLE: Duration = Duration::from_secs(10);

pub struct RateLimiter {
    per_second: f64,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl RateLimiter {
    /// `per_second` requests per source per second, with bursts of as many;
    /// 0 turns the limit off.
    pub fn new(per_second: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_second),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `ip`; false when its bucket is empty.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.per_second == 0.0 {
            return true;
        }
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&ip) {
            self.buckets
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < IDLE);
            if self.buckets.len() >= MAX_SOURCES {
                // Every source is busy: forget them all rather than grow.
                self.buckets.clear();
            }
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((self.per_second, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.per_second);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_rate_and_others_are_unaffected() {
        let mut r = RateLimiter::new(100);
        let t = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let allowed = (0..500).filter(|_| r.allow(a, t)).count();
        assert_eq!(allowed, 100, "a burst of the rate");
        assert!(r.allow(b, t), "another source is not limited");
        assert!(r.allow(a, t + Duration::from_millis(20)), "tokens come back");
        assert!(RateLimiter::new(0).allow(a, t));
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut r = RateLimiter::new(10);
        let t = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            r.allow(IpAddr::from(i.to_be_bytes()), t);
        }
        assert!(r.buckets.len() <= MAX_SOURCES);
    }
}
