//! Calls and conferences that ended recently, and why: a proxy that asks
//! about one after chorus ended it (a media timeout, a panic in its
//! processing) gets a 404 that says what happened, not a bare "no call".
//! Bounded: the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Entries kept; a few minutes of churn on a busy instance.
pub const ENDED_KEPT: usize = 4096;

#[derive(Default)]
pub struct Ended {
    reasons: HashMap<String, (&'static str, Instant)>,
    order: VecDeque<String>,
}

impl Ended {
    pub fn record(&mut self, id: &str, reason: &'static str, now: Instant) {
        if self.reasons.insert(id.to_string(), (reason, now)).is_none() {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > ENDED_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.reasons.remove(&old);
            }
        }
    }

    /// ", which ended 3 s ago (internal_error)" or nothing.
    pub fn describe(&self, id: &str, now: Instant) -> String {
        match self.reasons.get(id) {
            Some((reason, at)) => format!(
                ", which ended {} s ago ({reason})",
                now.saturating_duration_since(*at).as_secs()
            ),
            None => String::new(),
        }
    }

    /// A new call or conference took the id: forget the old one's end.
    pub fn forget(&mut self, id: &str) {
        self.reasons.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_says_why() {
        let now = Instant::now();
        let mut e = Ended::default();
        for i in 0..ENDED_KEPT + 10 {
            e.record(&format!("c{i}"), "media_timeout", now);
        }
        assert_eq!(e.describe("c0", now), "");
        assert_eq!(
            e.describe(&format!("c{}", ENDED_KEPT + 9), now),
            ", which ended 0 s ago (media_timeout)"
        );
        assert!(e.order.len() == ENDED_KEPT && e.reasons.len() == ENDED_KEPT);
    }
}
