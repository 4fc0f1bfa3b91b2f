//! RFC 4733 telephone events (DTMF), reported once each, at their end.
//! The end packet is sent three times and every packet of one event shares
//! its RTP timestamp; a new timestamp is a new event. Ends closer together
//! than `MIN_GAP` are not reported: a flood of end packets is not typing.

use std::time::{Duration, Instant};

pub const MIN_GAP: Duration = Duration::from_millis(80);

/// One finished key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    pub digit: char,
    /// How long the key was held, in the event's clock units.
    pub duration: u16,
}

/// What one sender's telephone events have been so far.
#[derive(Debug, Default, Clone)]
pub struct Detector {
    last_ts: Option<u32>,
    last_at: Option<Instant>,
}

impl Detector {
    /// The digit whose event ends with this packet (its RTP timestamp and
    /// RFC 4733 payload: event, E|R|volume, duration), the first time only.
    pub fn end(&mut self, now: Instant, timestamp: u32, payload: &[u8]) -> Option<Digit> {
        let [event, flags, d0, d1, ..] = *payload else {
            return None;
        };
        if flags & 0x80 == 0 || self.last_ts == Some(timestamp) {
            return None;
        }
        if self
            .last_at
            .is_some_and(|at| now.saturating_duration_since(at) < MIN_GAP)
        {
            return None;
        }
        self.last_ts = Some(timestamp);
        self.last_at = Some(now);
        Some(Digit {
            digit: digit(event)?,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }
}

/// The key of an RFC 4733 event code (0-9, *, #, A-D); others are not keys.
pub fn digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_event_is_reported_once_at_its_end() {
        let t0 = Instant::now();
        let mut d = Detector::default();
        // Key 5 held: two packets without the end bit, then the end three times.
        assert_eq!(d.end(t0, 1000, &[5, 0x0a, 0, 160]), None);
        assert_eq!(d.end(t0, 1000, &[5, 0x0a, 1, 64]), None);
        let five = Some(Digit {
            digit: '5',
            duration: 800,
        });
        assert_eq!(d.end(t0, 1000, &[5, 0x8a, 3, 32]), five);
        assert_eq!(d.end(t0, 1000, &[5, 0x8a, 3, 32]), None, "repeated end");
        // The next key, a new timestamp, later.
        let later = t0 + MIN_GAP;
        assert_eq!(d.end(later, 2000, &[11, 0x8a, 0, 160]).map(|x| x.digit), Some('#'));
        // A flood of ends with new timestamps: not typing.
        assert_eq!(d.end(later, 3000, &[1, 0x80, 0, 160]), None);
        assert_eq!(d.end(later, 4000, &[1, 0x80]), None, "short payload");
    }

    proptest! {
        #[test]
        fn any_payload_gives_an_answer(payload in proptest::collection::vec(any::<u8>(), 0..8), ts: u32) {
            let mut d = Detector::default();
            let got = d.end(Instant::now(), ts, &payload);
            if let Some(x) = got {
                prop_assert!(payload.len() >= 4 && payload[0] <= 15 && payload[1] & 0x80 != 0);
                prop_assert_eq!(Some(x.digit), digit(payload[0]));
            }
        }
    }
}
