//! The ng cookie cache: proxies retransmit over UDP, and a retransmitted
//! command must get the first reply, not run twice (an offer run twice would
//! allocate ports twice). Like rtpengine, replies are kept for a while.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a reply is kept for retransmissions (Kamailio retries within ~1 s).
pub const KEEP: Duration = Duration::from_secs(30);
/// Entries kept at most (two generations of half each).
const MAX_ENTRIES: usize = 100_000;
/// Bytes of keys and replies kept at most (a list or query reply can be
/// large), give or take a reply: two generations of half each.
pub const MAX_BYTES: usize = 64 << 20;

pub enum Lookup {
    /// First time: run the command, then `finish`.
    New,
    /// Running now: drop the retransmission, the first reply is on its way.
    InFlight,
    /// Done: send this reply again.
    Done(Arc<[u8]>),
}

/// When the command started or finished, and its reply once there is one.
type Entry = (Instant, Option<Arc<[u8]>>);

/// Two generations: new entries go into the young one; when it holds half
/// the bounds, or is KEEP old, it becomes the old one and the old one goes
/// whole. No scan and no sort, whatever the load: an entry lives for at
/// least one generation (half the bounds' worth of commands, or KEEP).
#[derive(Default)]
pub struct CookieCache {
    young: Generation,
    old: Generation,
}

#[derive(Default)]
struct Generation {
    entries: HashMap<Vec<u8>, Entry>,
    /// Bytes of keys and replies held.
    bytes: usize,
    /// When its first entry came.
    since: Option<Instant>,
}

fn size(key: &[u8], e: &Entry) -> usize {
    key.len() + e.1.as_ref().map_or(0, |r| r.len())
}

impl Generation {
    fn put(&mut self, key: &[u8], entry: Entry) {
        self.since.get_or_insert(entry.0);
        self.bytes += size(key, &entry);
        if let Some(e) = self.entries.get_mut(key) {
            let old = std::mem::replace(e, entry);
            self.bytes -= size(key, &old);
        } else {
            self.entries.insert(key.to_vec(), entry);
        }
    }
}

impl CookieCache {
    /// `key` is the cookie plus whatever identifies the sender.
    pub fn begin(&mut self, key: &[u8], now: Instant) -> Lookup {
        let found = self.young.entries.get(key).or_else(|| self.old.entries.get(key));
        if let Some((at, reply)) = found {
            if now.duration_since(*at) < KEEP {
                return match reply {
                    Some(r) => Lookup::Done(r.clone()),
                    None => Lookup::InFlight,
                };
            }
        }
        self.age(now);
        self.young.put(key, (now, None));
        Lookup::New
    }

    pub fn finish(&mut self, key: &[u8], now: Instant, reply: Arc<[u8]>) {
        let entry = (now, Some(reply));
        if self.young.entries.contains_key(key) {
            return self.young.put(key, entry);
        }
        if self.old.entries.contains_key(key) {
            return self.old.put(key, entry);
        }
        self.age(now);
        self.young.put(key, entry);
    }

    /// The young generation grows old once it holds half of either bound,
    /// or has for KEEP; the old one then goes.
    fn age(&mut self, now: Instant) {
        let y = &self.young;
        let full = y.entries.len() >= MAX_ENTRIES / 2 || y.bytes >= MAX_BYTES / 2;
        if full || y.since.is_some_and(|t| now.duration_since(t) >= KEEP) {
            self.old = std::mem::take(&mut self.young);
        }
    }

    /// Bytes held (keys and replies).
    pub fn bytes(&self) -> usize {
        self.young.bytes + self.old.bytes
    }

    #[cfg(test)]
    fn total(&self) -> usize {
        [&self.young, &self.old]
            .iter()
            .flat_map(|g| g.entries.iter())
            .map(|(k, e)| size(k, e))
            .sum()
    }

    #[cfg(test)]
    fn holds(&self, key: &[u8]) -> bool {
        self.young.entries.contains_key(key) || self.old.entries.contains_key(key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.entries.len() + self.old.entries.len()
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
        c.finish(b"k", t, Arc::from(b"reply".to_vec()));
        assert!(matches!(c.begin(b"k", t + Duration::from_secs(1)), Lookup::Done(r) if &r[..] == b"reply"));
        assert!(matches!(c.begin(b"k", t + KEEP + Duration::from_secs(1)), Lookup::New));
    }

    #[test]
    fn the_byte_count_is_exact_through_replacements_and_expiry() {
        let mut c = CookieCache::default();
        let t = Instant::now();
        for round in 0..3u64 {
            let at = t + KEEP * round as u32;
            for k in [&b"a"[..], b"bb", b"ccc"] {
                c.begin(k, at);
                assert_eq!(c.bytes(), c.total());
                c.finish(k, at, Arc::from(vec![1; 10 + round as usize]));
                assert_eq!(c.bytes(), c.total());
            }
        }
        // A reply is kept for KEEP exactly: at KEEP the command runs again.
        assert!(matches!(c.begin(b"a", t + KEEP * 2 + KEEP), Lookup::New));
        assert!(matches!(
            c.begin(b"bb", t + KEEP * 2 + KEEP - Duration::from_millis(1)),
            Lookup::Done(_)
        ));
    }

    #[test]
    fn entries_are_bounded_and_the_newest_half_stays() {
        let mut c = CookieCache::default();
        let t = Instant::now();
        let n = MAX_ENTRIES as u32 * 3;
        for i in 0..n {
            let at = t + Duration::from_micros(u64::from(i));
            assert!(matches!(c.begin(&i.to_be_bytes(), at), Lookup::New));
            c.finish(&i.to_be_bytes(), at, Arc::from(Vec::new()));
            assert!(c.len() <= MAX_ENTRIES, "{} entries after {i}", c.len());
        }
        // The last half of the bound's worth is always there.
        for i in n - MAX_ENTRIES as u32 / 2..n {
            assert!(c.holds(&i.to_be_bytes()), "{i} went");
        }
        assert!(!c.holds(&0u32.to_be_bytes()));
        assert_eq!(c.bytes(), c.total());
    }

    #[test]
    fn a_command_that_outlives_a_generation_still_gets_its_reply_kept() {
        let mut c = CookieCache::default();
        let t = Instant::now();
        assert!(matches!(c.begin(b"slow", t), Lookup::New));
        // KEEP later the young generation ages: "slow" is old now.
        c.begin(b"other", t + KEEP);
        c.finish(b"slow", t + KEEP, Arc::from(b"late".to_vec()));
        let r = c.begin(b"slow", t + KEEP + Duration::from_secs(1));
        assert!(matches!(r, Lookup::Done(r) if &r[..] == b"late"));
        assert_eq!(c.bytes(), c.total());
    }

    #[test]
    fn big_replies_are_bounded_in_bytes() {
        let mut c = CookieCache::default();
        let t = Instant::now();
        let reply: Arc<[u8]> = Arc::from(vec![0u8; 1 << 20]);
        for i in 0..200u32 {
            let key = i.to_be_bytes();
            assert!(matches!(c.begin(&key, t), Lookup::New));
            c.finish(&key, t + Duration::from_millis(u64::from(i)), reply.clone());
            assert!(c.bytes() <= MAX_BYTES + (1 << 20) + 8, "{} bytes", c.bytes());
        }
        assert_eq!(c.bytes(), c.total());
        // The newest reply is still there for a retransmission.
        assert!(matches!(c.begin(&199u32.to_be_bytes(), t), Lookup::Done(_)));
    }
}
