//! A per-participant jitter buffer for the conference mixer. Pure: the
//! caller passes arrival times and asks for packets on its own schedule.
//!
//! Packets are keyed by extended sequence number and played at
//! `due = base_time + (ts - base_ts) / rate + target`, where the base maps
//! RTP time to local time from the earliest-arriving packet seen (so the
//! buffer never adds more than `target` to the fastest path). The target
//! follows the measured interarrival jitter (RFC 3550 A.8) between bounds.
//! A missing packet is declared lost only once a later one is due, so
//! reordering within the target costs nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Packets held at most; more means the sender is far ahead (or hostile).
pub const MAX_PACKETS: usize = 64;
/// The least delay added: the mixer's tick meets arrivals at a random
/// phase anyway (10 ms on average), so a path without jitter needs little.
pub const MIN_TARGET: Duration = Duration::from_millis(5);
/// Pops a whole packet behind (net of those that were not) before one is
/// skipped: half a second at least, so a passing burst costs no audio.
const CATCH_UP_POPS: u32 = 25;
pub const MAX_TARGET: Duration = Duration::from_millis(200);
/// Payload buffers kept for reuse.
const SPARE_BUFFERS: usize = 8;
/// Added to three times the jitter: scheduling noise on the mixer's side.
const SAFETY: Duration = Duration::from_millis(2);
/// A timestamp jump beyond this (in seconds) re-bases the clock mapping.
const REBASE_SECONDS: f64 = 2.0;
/// Largest payload kept: an Opus frame is at most 1,275 bytes, 60 ms of
/// G.711 480. Bigger ones are dropped, so a sender of 64 KB datagrams holds
/// at most `MAX_PACKETS` × this much.
pub const MAX_PAYLOAD_BYTES: usize = 1500;
/// Sequence numbers this far behind the next to play, or this far ahead of
/// the highest seen, are not reordering (RFC 3550 A.1's MAX_MISORDER and
/// MAX_DROPOUT): two in a row mean the sender restarted its numbering.
const MAX_MISORDER: u64 = 100;
const MAX_DROPOUT: u64 = 3000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub seq: u64,
    pub ts: u32,
    pub payload: Vec<u8>,
    /// RFC 6464 audio level (-dBov, 127 = silence) from the header, if sent.
    pub level: Option<u8>,
}

/// What the buffer hands the decoder.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop {
    /// The next packet, in order.
    Packet(Packet),
    /// The next packet is missing and a later one is due: conceal one packet.
    Lost,
    /// Nothing is due yet (start-up, silence, DTX, or waiting on jitter).
    Empty,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JitterStats {
    pub received: u64,
    pub played: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicates: u64,
    /// Dropped to bring the delay down, or because the buffer was full.
    pub dropped: u64,
    /// Payloads over `MAX_PAYLOAD_BYTES`, not kept.
    pub oversized: u64,
    /// Times the sender restarted its stream (new SSRC or sequence numbering).
    pub restarts: u64,
}

#[derive(Debug)]
pub struct JitterBuffer {
    rate: f64,
    /// Nominal packet spacing, from the timestamps seen (defaults to 20 ms).
    spacing: Duration,
    queue: BTreeMap<u64, (Packet, Instant)>,
    /// Highest extended sequence seen, for unwrapping.
    max_seq: Option<u64>,
    /// The next sequence number to play.
    next: Option<u64>,
    base: Option<(Instant, u32)>,
    last_ts: Option<u32>,
    /// Interarrival jitter in seconds (A.8 estimator).
    jitter: f64,
    last_transit: Option<f64>,
    target: Duration,
    /// A packet far outside the sequence window: if the next one follows
    /// it, the stream restarted.
    far: Option<u64>,
    /// Timestamp of the last packet played.
    played_ts: Option<u32>,
    /// Payload buffers handed back after playing, for the next packets.
    spare: Vec<Vec<u8>>,
    /// Pops that found the packet after the one played due too, less those
    /// that did not (see `CATCH_UP_POPS`).
    behind: u32,
    pub stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(clock_rate: u32) -> Self {
        JitterBuffer {
            rate: clock_rate.max(1) as f64,
            spacing: Duration::from_millis(20),
            queue: BTreeMap::new(),
            max_seq: None,
            next: None,
            base: None,
            last_ts: None,
            jitter: 0.0,
            last_transit: None,
            target: MIN_TARGET,
            far: None,
            played_ts: None,
            spare: Vec::new(),
            behind: 0,
            stats: JitterStats::default(),
        }
    }

    /// Takes back a played packet's payload buffer for reuse (a few are
    /// kept: as many as are ever queued at once, in practice).
    pub fn recycle(&mut self, payload: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(payload);
        }
    }

    /// The current playout delay target.
    pub fn target(&self) -> Duration {
        self.target
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The packet that will play next, if it has arrived (for Opus in-band
    /// FEC: after a `Lost`, the next packet carries the lost one's redundancy).
    pub fn peek_next(&self) -> Option<&Packet> {
        self.queue.get(&self.next?).map(|(p, _)| p)
    }

    /// `seq` extended to 64 bits around the highest sequence number seen.
    fn extended(&self, seq: u16) -> u64 {
        let Some(max) = self.max_seq else {
            return (1u64 << 16) + seq as u64; // room to go back below the first
        };
        let delta = seq.wrapping_sub(max as u16) as i16 as i64;
        (max as i64 + delta).max(0) as u64
    }

    /// Forgets the stream (the sender restarted it: a new SSRC, or a new
    /// sequence numbering after a re-INVITE) so its packets are not
    /// dropped as late for minutes. Statistics carry on.
    pub fn restart(&mut self) {
        while let Some((_, (p, _))) = self.queue.pop_first() {
            self.recycle(p.payload);
        }
        self.max_seq = None;
        self.next = None;
        self.base = None;
        self.last_ts = None;
        self.last_transit = None;
        self.far = None;
        self.played_ts = None;
        self.stats.restarts += 1;
    }

    /// Is `e` outside the window of reordering? Two such packets in a row
    /// restart the stream at the second; a lone one is dropped.
    fn out_of_window(&mut self, e: u64) -> bool {
        let behind = self.next.is_some_and(|n| n > e + MAX_MISORDER);
        let ahead = self.max_seq.is_some_and(|m| e > m + MAX_DROPOUT);
        if !behind && !ahead {
            self.far = None;
            return false;
        }
        if self.far.is_some_and(|f| f + 1 == e) {
            self.restart();
            return false;
        }
        self.far = Some(e);
        true
    }

    /// Offset of `ts` from the base in seconds (wrap-aware, signed).
    fn since_base(&self, ts: u32) -> Option<f64> {
        let (_, bts) = self.base?;
        Some(ts.wrapping_sub(bts) as i32 as f64 / self.rate)
    }

    fn due(&self, ts: u32) -> Option<Instant> {
        let (bt, _) = self.base?;
        let off = self.since_base(ts)?;
        let nominal = if off >= 0.0 {
            bt + Duration::from_secs_f64(off)
        } else {
            bt.checked_sub(Duration::from_secs_f64(-off))?
        };
        Some(nominal + self.target)
    }

    /// When the packet played last was due to play.
    pub fn last_played_due(&self) -> Option<Instant> {
        self.due(self.played_ts?)
    }

    /// Accepts a received packet.
    pub fn push(&mut self, now: Instant, seq: u16, ts: u32, payload: &[u8]) {
        self.push_with_level(now, seq, ts, payload, None)
    }

    /// As [`push`](Self::push), with the packet's RFC 6464 audio level.
    pub fn push_with_level(&mut self, now: Instant, seq: u16, ts: u32, payload: &[u8], level: Option<u8>) {
        self.stats.received += 1;
        if payload.len() > MAX_PAYLOAD_BYTES {
            self.stats.oversized += 1;
            return;
        }
        if self.out_of_window(self.extended(seq)) {
            self.stats.late += 1;
            return;
        }
        // After a restart the numbering starts afresh around this packet.
        let e = self.extended(seq);
        // The packet right after the newest: its step is the ptime (a step
        // across a loss is not).
        let consecutive = self.max_seq.is_some_and(|m| m + 1 == e);
        if self.max_seq.is_none_or(|m| e > m) {
            self.max_seq = Some(e);
        }
        if self.next.is_some_and(|n| e < n) {
            self.stats.late += 1;
            return;
        }
        if self.queue.contains_key(&e) {
            self.stats.duplicates += 1;
            return;
        }
        self.update_clock(now, ts);
        if let Some(last) = self.last_ts {
            let step = ts.wrapping_sub(last) as i32;
            if step > 0 && (step as f64 / self.rate) < 0.2 && consecutive {
                self.spacing = Duration::from_secs_f64(step as f64 / self.rate);
            }
        }
        if self.max_seq == Some(e) {
            self.last_ts = Some(ts);
        }
        if self.queue.len() >= MAX_PACKETS {
            // Full: the sender is far ahead; drop the oldest.
            if let Some((_, (p, _))) = self.queue.pop_first() {
                self.recycle(p.payload);
            }
            self.stats.dropped += 1;
        }
        self.queue.insert(
            e,
            (
                Packet {
                    seq: e,
                    ts,
                    payload: {
                        // A buffer played earlier, refilled: no allocation per packet.
                        let mut v = self.spare.pop().unwrap_or_default();
                        v.clear();
                        v.extend_from_slice(payload);
                        v
                    },
                    level,
                },
                now,
            ),
        );
        if self.next.is_none() {
            self.next = Some(e);
        }
    }

    fn update_clock(&mut self, now: Instant, ts: u32) {
        let Some((bt, _)) = self.base else {
            self.base = Some((now, ts));
            return;
        };
        let off = self.since_base(ts).unwrap_or(0.0);
        if off.abs() > REBASE_SECONDS + now.saturating_duration_since(bt).as_secs_f64() {
            // The sender's clock jumped (new SSRC, restart): map afresh.
            self.base = Some((now, ts));
            self.last_transit = None;
            return;
        }
        // transit = arrival - nominal; a packet earlier than the base path
        // moves the base so that `due` keeps at most `target` of delay.
        let transit = now.saturating_duration_since(bt).as_secs_f64() - off;
        if transit < 0.0 {
            let shift = Duration::from_secs_f64(-transit);
            self.base = Some((
                bt.checked_sub(shift).unwrap_or(bt),
                self.base.map(|b| b.1).unwrap_or(ts),
            ));
        }
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit.max(0.0));
        // Three times the jitter covers nearly all arrivals of a Gaussian-ish path.
        let want = Duration::from_secs_f64(self.jitter * 3.0) + SAFETY;
        self.target = want.clamp(MIN_TARGET, MAX_TARGET);
    }

    /// The next thing to decode at `now`.
    pub fn pop(&mut self, now: Instant) -> Pop {
        let Some(next) = self.next else { return Pop::Empty };
        // More queued than the target needs: drop one to bring delay down.
        let excess = self.target.as_secs_f64() / self.spacing.as_secs_f64().max(1e-3) + 3.0;
        if self.queue.len() as f64 > excess {
            if let Some((seq, (p, _))) = self.queue.pop_first() {
                self.recycle(p.payload);
                self.stats.dropped += 1;
                self.next = Some(seq + 1);
                return self.pop(now);
            }
        }
        if let Some((p, _)) = self.queue.get(&next) {
            if self.due(p.ts).is_some_and(|d| d <= now) {
                // One packet a pop: packets that became due together (ticks
                // held up while participants joined, a burst) would keep
                // the delay they added for the whole call. Behind for long
                // enough, skip one and play the next. A late packet now and
                // then (the next one not there yet) only slows the count.
                let after = self.queue.get(&(next + 1)).and_then(|(q, _)| self.due(q.ts));
                self.behind = if after.is_some_and(|d| d <= now) {
                    self.behind + 1
                } else {
                    self.behind.saturating_sub(1)
                };
                if self.behind >= CATCH_UP_POPS {
                    self.behind = 0;
                    if let Some((p, _)) = self.queue.remove(&next) {
                        self.recycle(p.payload);
                    }
                    self.stats.dropped += 1;
                    self.next = Some(next + 1);
                    return self.pop(now);
                }
                let (p, _) = self.queue.remove(&next).expect("present: checked above");
                self.next = Some(next + 1);
                self.stats.played += 1;
                self.played_ts = Some(p.ts);
                return Pop::Packet(p);
            }
            return Pop::Empty;
        }
        // `next` is missing: lost once a later packet is due, or once its
        // own time (one spacing after the last played) has come while a
        // later one waits (reordered by more than the target). Without a
        // later one it is a pause (DTX, the end of a talk spurt): no loss.
        let own_time = self
            .played_ts
            .and_then(|ts| self.due(ts.wrapping_add((self.spacing.as_secs_f64() * self.rate) as u32)))
            .is_some_and(|d| d <= now);
        match self.queue.first_key_value() {
            Some((_, (p, _))) if own_time || self.due(p.ts).is_some_and(|d| d <= now) => {
                self.next = Some(next + 1);
                self.stats.lost += 1;
                Pop::Lost
            }
            _ => Pop::Empty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS20: Duration = Duration::from_millis(20);

    /// Feeds packets (seq, arrival offset ms) and pops every 20 ms from t0
    /// for `ticks` ticks; returns the sequence of pops (seq, 'L' lost, '.' empty).
    fn run(arrivals: &[(u16, u64)], ticks: usize) -> (Vec<String>, JitterBuffer) {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(8000);
        let mut events: Vec<(u64, Option<u16>)> = arrivals.iter().map(|&(s, at)| (at, Some(s))).collect();
        events.extend((0..ticks).map(|i| (i as u64 * 20 + 1, None)));
        events.sort_by_key(|e| (e.0, e.1.is_none()));
        let first = arrivals.first().map(|a| a.0).unwrap_or(0);
        let mut out = Vec::new();
        for (at, ev) in events {
            let now = t0 + Duration::from_millis(at);
            match ev {
                // Timestamps advance 160 per packet from the first, across seq wrap.
                Some(seq) => jb.push(now, seq, seq.wrapping_sub(first) as u32 * 160, &[seq as u8]),
                None => out.push(match jb.pop(now) {
                    Pop::Packet(p) => ((p.seq - (1 << 16)) as u16).to_string(),
                    Pop::Lost => "L".into(),
                    Pop::Empty => ".".into(),
                }),
            }
        }
        (out, jb)
    }

    fn played(out: &[String]) -> Vec<String> {
        out.iter().filter(|s| *s != ".").cloned().collect()
    }

    #[test]
    fn in_order_packets_play_in_order_after_the_target_delay() {
        let arrivals: Vec<(u16, u64)> = (0..50).map(|i| (i, i as u64 * 20)).collect();
        let (out, jb) = run(&arrivals, 60);
        let want: Vec<String> = (0..50).map(|i: u16| i.to_string()).collect();
        assert_eq!(played(&out), want);
        assert_eq!(out.iter().take_while(|s| *s == ".").count(), 1, "{out:?}");
        assert_eq!(jb.stats.lost, 0);
        assert_eq!(jb.target(), MIN_TARGET);
    }

    /// Three packets held up together: once the later ones show the path,
    /// playing one a tick would keep a packet of extra delay for good;
    /// after half a second behind, one is skipped and the rest play at the
    /// target again.
    #[test]
    fn a_backlog_is_caught_up_after_half_a_second() {
        let mut arrivals: Vec<(u16, u64)> = vec![(0, 40), (1, 40), (2, 40)];
        arrivals.extend((3..150).map(|i| (i, i as u64 * 20)));
        let (out, jb) = run(&arrivals, 150);
        assert_eq!(jb.stats.dropped, 1, "{out:?}");
        // At the end, the packet played at tick t arrived just before it.
        let last: u16 = out[149].parse().unwrap();
        assert_eq!(last, 148, "{out:?}");
        assert_eq!(jb.stats.lost, 0);
    }

    #[test]
    fn swapped_neighbours_cost_nothing() {
        let mut arrivals: Vec<(u16, u64)> = (0..40).map(|i| (i, i as u64 * 20)).collect();
        for i in (1..40).step_by(4) {
            let (a, b) = (arrivals[i].1, arrivals[i + 1].1);
            arrivals[i].1 = b;
            arrivals[i + 1].1 = a;
        }
        let (out, jb) = run(&arrivals, 50);
        let want: Vec<String> = (0..40).map(|i: u16| i.to_string()).collect();
        assert_eq!(played(&out), want);
        assert_eq!((jb.stats.lost, jb.stats.late), (0, 0));
    }

    #[test]
    fn lost_packets_are_reported_once_each_and_duplicates_dropped() {
        let arrivals: Vec<(u16, u64)> = (0..40)
            .filter(|i| i % 10 != 5)
            .map(|i| (i, i as u64 * 20))
            .chain([(7, 150), (8, 161)])
            .collect();
        let (out, jb) = run(&arrivals, 50);
        let p = played(&out);
        assert_eq!(p.len(), 40, "{p:?}");
        for i in [5usize, 15, 25, 35] {
            assert_eq!(p[i], "L", "{p:?}");
        }
        assert_eq!(jb.stats.lost, 4);
        assert_eq!(jb.stats.duplicates, 2);
    }

    /// A packet overtaken by the next one beyond the target is concealed
    /// when its own time comes (and dropped as late when it arrives); a
    /// pause with nothing queued is no loss.
    #[test]
    fn a_packet_reordered_past_the_target_is_concealed_and_a_pause_is_not_a_loss() {
        let mut arrivals: Vec<(u16, u64)> = (0..30).filter(|&i| i != 10).map(|i| (i, i as u64 * 20)).collect();
        arrivals.push((10, 10 * 20 + 25));
        // A pause: 30..40 come after a 200 ms gap in arrivals, timestamps continuous.
        arrivals.extend((30..40).map(|i| (i, i as u64 * 20 + 200)));
        let (out, jb) = run(&arrivals, 70);
        let p = played(&out);
        assert_eq!(p[10], "L", "{out:?}");
        assert_eq!(p[11], "11", "{p:?}");
        assert_eq!(jb.stats.late, 1, "{p:?}");
        assert_eq!(jb.stats.lost, 1, "the pause lost nothing: {p:?}");
        assert_eq!(p.len(), 40, "{p:?}");
    }

    #[test]
    fn late_packets_are_dropped_and_counted() {
        let mut arrivals: Vec<(u16, u64)> = (0..20).filter(|&i| i != 3).map(|i| (i, i as u64 * 20)).collect();
        arrivals.push((3, 400));
        let (out, jb) = run(&arrivals, 30);
        assert_eq!(played(&out)[3], "L");
        assert_eq!(jb.stats.late, 1);
    }

    #[test]
    fn the_target_grows_with_jitter_and_stays_bounded() {
        // ±30 ms of arrival jitter.
        let arrivals: Vec<(u16, u64)> = (0..200)
            .map(|i| (i, i as u64 * 20 + [0, 30, 10, 25, 5][i as usize % 5]))
            .collect();
        let (out, jb) = run(&arrivals, 230);
        assert!(jb.target() > Duration::from_millis(40), "{:?}", jb.target());
        assert!(jb.target() <= MAX_TARGET);
        let p = played(&out);
        let lost = p.iter().filter(|s| *s == "L").count();
        assert!(lost <= 4, "{lost} lost while the target adapted: {p:?}");
    }

    #[test]
    fn sequence_wrap_is_seamless() {
        let arrivals: Vec<(u16, u64)> = (0..20u16).map(|i| (65530u16.wrapping_add(i), i as u64 * 20)).collect();
        let (out, jb) = run(&arrivals, 25);
        assert_eq!(played(&out).len(), 20);
        assert_eq!(jb.stats.lost, 0);
    }

    /// A phone restarting its stream after a re-INVITE: new sequence
    /// numbers far from the old ones, new timestamps. Played within two
    /// packets, not dropped as late.
    #[test]
    fn a_sequence_restart_is_followed_not_dropped() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(8000);
        let mut t = t0;
        for i in 0..50u16 {
            jb.push(t, 30000 + i, u32::from(i) * 160, &[1]);
            let _ = jb.pop(t + MS20);
            t += MS20;
        }
        let mut played = 0;
        for i in 0..50u16 {
            jb.push(t, 5 + i, 900_000 + u32::from(i) * 160, &[2]);
            if let Pop::Packet(p) = jb.pop(t + MS20) {
                played += usize::from(p.payload == [2]);
            }
            t += MS20;
        }
        assert!(played >= 45, "{played} of 50 restarted packets played: {:?}", jb.stats);
        assert_eq!(jb.stats.restarts, 1);
        // A lone stray far packet is dropped, it does not restart the stream.
        jb.push(t, 40000, 0, &[3]);
        assert_eq!(jb.stats.restarts, 1);
    }

    /// The window's edges (RFC 3550 A.1): exactly MAX_MISORDER behind or
    /// MAX_DROPOUT ahead is still the same stream; one further, twice in a
    /// row, is a restart.
    #[test]
    fn the_sequence_window_has_exact_edges() {
        let t = Instant::now();
        let ahead = |jump: u16| {
            let mut jb = JitterBuffer::new(8000);
            jb.push(t, 1000, 0, &[1]);
            jb.push(t, 1000 + jump, 160, &[2]);
            jb.push(t, 1001 + jump, 320, &[3]);
            jb.stats.restarts
        };
        assert_eq!(ahead(MAX_DROPOUT as u16), 0);
        assert_eq!(ahead(MAX_DROPOUT as u16 + 1), 1);
        let behind = |gap: u16| {
            let mut jb = JitterBuffer::new(8000);
            for i in 0..150u16 {
                jb.push(t, 1000 + i, u32::from(i) * 160, &[1]);
                let _ = jb.pop(t + Duration::from_secs(10));
            }
            let next = 1150u16;
            jb.push(t, next - gap, 0, &[2]);
            jb.push(t, next - gap + 1, 160, &[3]);
            (jb.stats.restarts, jb.stats.late)
        };
        assert_eq!(behind(MAX_MISORDER as u16), (0, 2), "late, not a restart");
        assert_eq!(behind(MAX_MISORDER as u16 + 2).0, 1);
    }

    #[test]
    fn length_and_the_next_packet_are_reported() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(8000);
        assert!(jb.is_empty() && jb.peek_next().is_none());
        for seq in [1u16, 3, 4] {
            jb.push(t, seq, u32::from(seq) * 160, &[seq as u8]);
        }
        assert_eq!((jb.len(), jb.is_empty()), (3, false));
        assert_eq!(jb.peek_next().map(|p| p.payload.clone()), Some(vec![1]));
        let late = t + Duration::from_secs(1);
        assert!(matches!(jb.pop(late), Pop::Packet(_)));
        assert_eq!(jb.pop(late), Pop::Lost);
        // After a loss, the next packet is there for Opus FEC to look at.
        assert_eq!(jb.peek_next().map(|p| p.payload.clone()), Some(vec![3]));
        assert_eq!(jb.len(), 2);
    }

    #[test]
    fn oversized_payloads_are_not_kept() {
        let mut jb = JitterBuffer::new(8000);
        let now = Instant::now();
        for i in 0..200u16 {
            jb.push(now, i, u32::from(i) * 160, &vec![0u8; 65_000]);
        }
        assert!(jb.is_empty());
        assert_eq!(jb.stats.oversized, 200);
        jb.push(now, 0, 0, &[0u8; MAX_PAYLOAD_BYTES]);
        assert_eq!(jb.len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn any_arrival_pattern_plays_in_order_without_panicking(
            ops in proptest::collection::vec((proptest::prelude::any::<u16>(), 0u32..100_000, 0u64..2_000, proptest::prelude::any::<bool>()), 0..300)
        ) {
            let t0 = Instant::now();
            let mut jb = JitterBuffer::new(8000);
            // (restarts when the last packet played, its sequence number)
            let mut last_played: Option<(u64, u64)> = None;
            for (seq, ts, at, is_pop) in ops {
                let now = t0 + Duration::from_millis(at);
                if is_pop {
                    if let Pop::Packet(p) = jb.pop(now) {
                        // In order within one numbering; a restart (two far
                        // packets in a row) starts a new one.
                        let restarts = jb.stats.restarts;
                        proptest::prop_assert!(
                            last_played.is_none_or(|(r, l)| r != restarts || p.seq > l),
                            "played {} after {:?}", p.seq, last_played
                        );
                        last_played = Some((restarts, p.seq));
                    }
                } else {
                    jb.push(now, seq, ts, &[1, 2, 3]);
                }
                proptest::prop_assert!(jb.len() <= MAX_PACKETS);
            }
        }
    }

    #[test]
    fn a_flood_is_bounded() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(8000);
        for i in 0..10_000u32 {
            jb.push(t0, i as u16, i * 160, &[0; 160]);
        }
        assert!(jb.len() <= MAX_PACKETS);
        let _ = MS20;
    }
}
