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
/// Bytes of keys and replies kept at most (a list or query reply can be
/// large); past this, the oldest half goes.
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

#[derive(Default)]
pub struct CookieCache {
    entries: HashMap<Vec<u8>, Entry>,
    /// Bytes of keys and replies held.
    bytes: usize,
}

fn size(key: &[u8], e: &Entry) -> usize {
    key.len() + e.1.as_ref().map_or(0, |r| r.len())
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
        self.make_room(now);
        self.bytes += key.len();
        if let Some(old) = self.entries.insert(key.to_vec(), (now, None)) {
            self.bytes -= size(key, &old);
        }
        Lookup::New
    }

    /// Past either bound: drop what expired, then the oldest half.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < MAX_ENTRIES && self.bytes < MAX_BYTES {
            return;
        }
        self.entries.retain(|_, (at, _)| now.duration_since(*at) < KEEP);
        if self.entries.len() >= MAX_ENTRIES || self.total() >= MAX_BYTES {
            let mut ages: Vec<Instant> = self.entries.values().map(|(at, _)| *at).collect();
            ages.sort_unstable();
            let cut = ages.get(ages.len() / 2).copied().unwrap_or(now);
            self.entries.retain(|_, (at, _)| *at > cut);
        }
        self.bytes = self.total();
    }

    fn total(&self) -> usize {
        self.entries.iter().map(|(k, e)| size(k, e)).sum()
    }

    /// Bytes held (keys and replies).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn finish(&mut self, key: &[u8], now: Instant, reply: Arc<[u8]>) {
        let entry = (now, Some(reply));
        self.bytes += size(key, &entry);
        if let Some(old) = self.entries.insert(key.to_vec(), entry) {
            self.bytes -= size(key, &old);
        }
        self.make_room(now);
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
    fn entries_are_bounded_expired_ones_first_then_the_oldest_half() {
        let mut c = CookieCache::default();
        let t = Instant::now();
        // One old entry that has expired, one recent enough to keep.
        c.finish(b"expired", t, Arc::from(vec![0; 4]));
        c.finish(b"recent", t + KEEP, Arc::from(vec![0; 4]));
        let later = t + KEEP + Duration::from_secs(1);
        // Reaching the bound drops only what expired.
        for i in 0..MAX_ENTRIES as u32 - 2 {
            c.finish(
                &i.to_be_bytes(),
                later + Duration::from_micros(u64::from(i)),
                Arc::from(Vec::new()),
            );
        }
        assert_eq!(c.entries.len(), MAX_ENTRIES - 1);
        assert!(!c.entries.contains_key(&b"expired"[..]));
        assert!(c.entries.contains_key(&b"recent"[..]), "not expired");
        // Past the bound with nothing expired: the entries older than the
        // median go, with the median itself; the newer half stays.
        let newest = MAX_ENTRIES as u32;
        c.finish(
            &newest.to_be_bytes(),
            later + Duration::from_micros(u64::from(newest)),
            Arc::from(Vec::new()),
        );
        assert_eq!(c.entries.len(), MAX_ENTRIES / 2 - 1);
        assert!(c.entries.contains_key(&newest.to_be_bytes()[..]));
        assert!(!c.entries.contains_key(&b"recent"[..]), "the oldest went");
        let median = (MAX_ENTRIES as u32 / 2 - 1).to_be_bytes();
        assert!(!c.entries.contains_key(&median[..]), "the median went");
        let above = (MAX_ENTRIES as u32 / 2).to_be_bytes();
        assert!(c.entries.contains_key(&above[..]), "the one above the median stayed");
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
