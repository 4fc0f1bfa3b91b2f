//! The ng cookie cache: proxies retransmit over UDP, and a retransmitted
//! command must get the first reply, not run twice (an offer run twice would
//! allocate ports twice). Like rtpengine, replies are kept for a while.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a reply is kept for retransmissions (Kamailio retries within ~1 s).
pub const KEEP: Duration = Duration::from_secs(30);
/// Entries kept at most; past this, the oldest half goes.
const MAX_ENTRIES: usize = 100_000;

pub enum Lookup {
    /// First time: run the command, then `finish`.
    New,
    /// Running now: drop the retransmission, the first reply is on its way.
    InFlight,
    /// Done: send this reply again.
    Done(Arc<Vec<u8>>),
}

/// When the command started or finished, and its reply once there is one.
type Entry = (Instant, Option<Arc<Vec<u8>>>);

#[derive(Default)]
pub struct CookieCache {
    entries: HashMap<Vec<u8>, Entry>,
}

impl CookieCache {
    /// `key` is the cookie plus whatever identifies the sender.
    pub fn begin(&mut self, key: &[u8], now: Instant) -> Lookup {
        if let Some((at, reply)) = self.entries.get(key) {
            if now.duration_since(*at) < KEEP {
                return match reply {
                    Some(r) => Lookup::Done(r.clone()),
                    None => Lookup::InFlight,
                };
            }
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, (at, _)| now.duration_since(*at) < KEEP);
            if self.entries.len() >= MAX_ENTRIES {
                let mut ages: Vec<Instant> = self.entries.values().map(|(at, _)| *at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                self.entries.retain(|_, (at, _)| *at > cut);
            }
        }
        self.entries.insert(key.to_vec(), (now, None));
        Lookup::New
    }

    pub fn finish(&mut self, key: &[u8], now: Instant, reply: Arc<Vec<u8>>) {
        self.entries.insert(key.to_vec(), (now, Some(reply)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_get_the_first_reply() {
        let mut c = CookieCache::default();
        let t = Instant::now();
        assert!(matches!(c.begin(b"k", t), Lookup::New));
        assert!(matches!(c.begin(b"k", t), Lookup::InFlight));
        c.finish(b"k", t, Arc::new(b"reply".to_vec()));
        assert!(matches!(c.begin(b"k", t + Duration::from_secs(1)), Lookup::Done(r) if r.as_slice() == b"reply"));
        assert!(matches!(c.begin(b"k", t + KEEP + Duration::from_secs(1)), Lookup::New));
    }
}
