//! Key presses chorus sends into a relayed stream (RFC 4733): each event
//! rides the stream it is injected into, one event packet after each
//! relayed packet (same SSRC and clock), so it needs no timer of its own.
//! Every packet relayed after an event packet has its sequence number
//! moved up by the events sent, so the receiver sees one gapless sequence.
//! Pure: the worker hands it each relayed packet's header fields.

use std::collections::VecDeque;

/// End packets per event (RFC 4733 2.5.1.4 asks for three).
const ENDS: u8 = 3;
/// Relayed packets left between two events.
const GAP: u8 = 3;
/// Key presses waiting at most.
pub const MAX_QUEUED: usize = 64;

/// The RFC 4733 event code of a key, if it is one.
pub fn code(key: char) -> Option<u8> {
    match key {
        '0'..='9' => Some(key as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(key as u8 - b'A' + 12),
        'a'..='d' => Some(key as u8 - b'a' + 12),
        _ => None,
    }
}

struct Event {
    code: u8,
    start_ts: u32,
    ends_left: u8,
    first: bool,
}

pub struct DtmfOut {
    /// The receiving leg's telephone-event payload type.
    pt: u8,
    volume: u8,
    /// The event's RTP clock (the leg's codec's: 8000, or 48000 with Opus).
    clock: u32,
    /// Each key and its duration in RTP clock units.
    keys: VecDeque<(u8, u32)>,
    current: Option<(Event, u32)>,
    gap: u8,
    /// Added to the sequence number of every packet relayed to the leg.
    pub shift: u16,
}

impl DtmfOut {
    pub fn new(pt: u8) -> Self {
        DtmfOut {
            pt,
            volume: 10,
            clock: 8000,
            keys: VecDeque::new(),
            current: None,
            gap: 0,
            shift: 0,
        }
    }

    /// Queues `codes`, each `duration_ms` long, as events of type `pt` on
    /// a `clock` Hz RTP clock; false when too many wait.
    pub fn queue(&mut self, codes: &[u8], duration_ms: u32, volume: u8, (pt, clock): (u8, u32)) -> bool {
        if self.keys.len() + codes.len() > MAX_QUEUED {
            return false;
        }
        self.pt = pt & 0x7f;
        self.volume = volume.min(63);
        // Events queued earlier keep the clock they were measured in.
        if self.keys.is_empty() && self.current.is_none() {
            self.clock = clock.clamp(8000, 48000);
        }
        let units = |ms: u32| ms.clamp(40, 5000) * (self.clock / 1000);
        self.keys.extend(codes.iter().map(|&c| (c, units(duration_ms))));
        true
    }

    /// Whether an event is being sent or waits.
    pub fn busy(&self) -> bool {
        self.current.is_some() || !self.keys.is_empty()
    }

    /// After a relayed RTP packet (its SSRC, its sequence number as sent,
    /// and timestamp): the event packet to send next into `out`, if any.
    pub fn after(&mut self, ssrc: u32, seq: u16, ts: u32, out: &mut [u8; 16]) -> Option<usize> {
        if self.current.is_none() {
            if self.gap > 0 {
                self.gap -= 1;
                return None;
            }
            let (code, length) = self.keys.pop_front()?;
            let ev = Event {
                code,
                start_ts: ts,
                ends_left: ENDS,
                first: true,
            };
            self.current = Some((ev, length));
        }
        let (ev, length) = self.current.as_mut()?;
        // The event lasts from its start to the end of this packet (20 ms).
        let duration = ts.wrapping_sub(ev.start_ts).wrapping_add(self.clock / 50).min(0xffff);
        let end = duration >= *length || ev.ends_left < ENDS;
        let duration = if end { (*length).min(0xffff) } else { duration };
        if end {
            ev.ends_left -= 1;
        }
        self.shift = self.shift.wrapping_add(1);
        out[0] = 0x80;
        out[1] = self.pt | if ev.first { 0x80 } else { 0 };
        out[2..4].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
        out[4..8].copy_from_slice(&ev.start_ts.to_be_bytes());
        out[8..12].copy_from_slice(&ssrc.to_be_bytes());
        out[12] = ev.code;
        out[13] = if end { 0x80 } else { 0 } | self.volume;
        out[14..16].copy_from_slice(&(duration as u16).to_be_bytes());
        ev.first = false;
        if ev.ends_left == 0 {
            self.current = None;
            self.gap = GAP;
        }
        Some(16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_updates_then_three_ends_in_one_gapless_sequence() {
        let mut d = DtmfOut::new(101);
        assert!(d.queue(&[code('5').unwrap()], 100, 10, (101, 8000)));
        let mut out = [0u8; 16];
        let mut sent = Vec::new();
        for (seq, i) in (1000u16..).zip(0..12u32) {
            // A relayed packet goes out with the shift applied.
            let relayed = seq.wrapping_add(d.shift);
            if let Some(n) = d.after(7, relayed, 8000 + i * 160, &mut out) {
                sent.push(out[..n].to_vec());
            }
        }
        assert_eq!(sent.len(), 5 + 3 - 1, "updates until 100 ms, then the end three times");
        assert_eq!(sent[0][1], 0x80 | 101, "marker on the first");
        let ends: Vec<_> = sent.iter().filter(|p| p[13] & 0x80 != 0).collect();
        assert_eq!(ends.len(), 3);
        assert!(ends.iter().all(|p| u16::from_be_bytes([p[14], p[15]]) == 800));
        assert!(sent.iter().all(|p| p[4..8] == 8000u32.to_be_bytes() && p[12] == 5));
        assert_eq!(d.shift, 7);
        assert!(!d.busy());
    }

    #[test]
    fn keys_are_checked_and_bounded() {
        assert_eq!(code('#'), Some(11));
        assert_eq!(code('x'), None);
        let mut d = DtmfOut::new(101);
        assert!(!d.queue(&[1; MAX_QUEUED + 1], 100, 10, (101, 8000)));
    }

    #[test]
    fn on_a_48_khz_clock_durations_are_in_its_units() {
        let mut d = DtmfOut::new(101);
        assert!(d.queue(&[code('1').unwrap()], 100, 10, (110, 48000)));
        let mut out = [0u8; 16];
        let mut sent = Vec::new();
        for (seq, i) in (7u16..).zip(0..12u32) {
            if let Some(n) = d.after(9, seq.wrapping_add(d.shift), i * 960, &mut out) {
                sent.push(out[..n].to_vec());
            }
        }
        let durations: Vec<u16> = sent.iter().map(|p| u16::from_be_bytes([p[14], p[15]])).collect();
        assert_eq!(durations, vec![960, 1920, 2880, 3840, 4800, 4800, 4800]);
        assert!(sent.iter().all(|p| p[1] & 0x7f == 110));
    }
}
