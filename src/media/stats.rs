//! Receive statistics for one RTP source (RFC 3550 appendix A.1 and A.8).

use serde::Serialize;
use std::time::{Duration, Instant};

/// A jump larger than this is a restart of the sequence, not loss (A.1).
const MAX_DROPOUT: u16 = 3000;
/// Packets this far behind are late duplicates or misordered (A.1).
const MAX_MISORDER: u16 = 100;
const SEQ_MOD: u32 = 1 << 16;

/// Sequence tracking of one SSRC, per RFC 3550 A.1.
#[derive(Debug, Clone, Default)]
struct SeqState {
    ssrc: u32,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u64,
    /// Set after a large jump: the next packet must follow it to restart.
    bad_seq: Option<u16>,
    /// Jitter in timestamp units, scaled by 16 as in A.8.
    jitter_q4: u64,
    jitter_clock: u32,
    last_transit: Option<i64>,
}

/// What [`SeqState::update`] made of a packet.
#[derive(Debug, PartialEq)]
enum SeqOutcome {
    Received,
    Duplicate,
    /// First packet after a jump of more than `MAX_DROPOUT`: wait for a second.
    Probing,
    /// The sender restarted its sequence: start over from this packet.
    Restarted,
}

impl SeqState {
    fn new(ssrc: u32, seq: u16) -> Self {
        SeqState {
            ssrc,
            base_seq: seq as u32,
            max_seq: seq,
            received: 1,
            ..Default::default()
        }
    }

    fn extended_max(&self) -> u64 {
        self.cycles as u64 + self.max_seq as u64
    }

    fn expected(&self) -> u64 {
        (self.extended_max() + 1).saturating_sub(self.base_seq as u64)
    }

    fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// A.1 `update_seq`.
    fn update(&mut self, seq: u16) -> SeqOutcome {
        let delta = seq.wrapping_sub(self.max_seq);
        if delta == 0 {
            return SeqOutcome::Duplicate;
        }
        if delta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += SEQ_MOD;
            }
            self.max_seq = seq;
        } else if delta <= u16::MAX - MAX_MISORDER {
            if self.bad_seq == Some(seq) {
                return SeqOutcome::Restarted;
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return SeqOutcome::Probing;
        }
        // else: misordered within MAX_MISORDER, counted as received.
        self.bad_seq = None;
        self.received += 1;
        SeqOutcome::Received
    }
}

/// Statistics of everything one party sent to one chorus port.
#[derive(Debug, Clone, Default)]
pub struct RtpStats {
    pub packets: u64,
    pub bytes: u64,
    /// Losses of SSRCs that were replaced (re-INVITE, new call leg).
    lost_before: u64,
    seq: Option<SeqState>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Expected and received at the last reception report (A.3).
    expected_prior: u64,
    received_prior: u64,
}

/// The numbers of an RFC 3550 reception report block about one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reception {
    pub ssrc: u32,
    pub fraction_lost: u8,
    pub cumulative_lost: i32,
    pub extended_max_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
}

/// What the API shows of an [`RtpStats`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsReport {
    pub packets: u64,
    pub bytes: u64,
    pub lost: u64,
    pub jitter_ms: f64,
    pub ssrc: Option<u32>,
    /// Seconds between the first and the last packet.
    pub active_s: f64,
    /// Seconds since the last packet, if any arrived.
    pub idle_s: Option<f64>,
}

impl RtpStats {
    /// The SSRC last seen in order, once RTP came.
    pub fn ssrc(&self) -> Option<u32> {
        self.seq.as_ref().map(|s| s.ssrc)
    }

    /// Accounts one RTP packet. `clock_rate` is the payload type's RTP clock
    /// (Hz); 0 when unknown, which skips the jitter estimate.
    pub fn on_rtp(&mut self, now: Instant, len: usize, ssrc: u32, seq: u16, ts: u32, clock_rate: u32) {
        self.packets += 1;
        self.bytes += len as u64;
        self.first.get_or_insert(now);
        self.last = Some(now);
        let s = match &mut self.seq {
            Some(s) if s.ssrc == ssrc => match s.update(seq) {
                SeqOutcome::Received => s,
                SeqOutcome::Duplicate | SeqOutcome::Probing => return,
                SeqOutcome::Restarted => {
                    // The packet before this one was the first of the new run.
                    self.lost_before += s.lost();
                    let (clock, jitter) = (s.jitter_clock, s.jitter_q4);
                    *s = SeqState::new(ssrc, seq.wrapping_sub(1));
                    s.received = 2;
                    s.max_seq = seq;
                    s.jitter_clock = clock;
                    s.jitter_q4 = jitter;
                    s
                }
            },
            other => {
                if let Some(old) = other.take() {
                    self.lost_before += old.lost();
                }
                other.insert(SeqState::new(ssrc, seq))
            }
        };
        if clock_rate == 0 {
            return;
        }
        let first = self.first.unwrap_or(now); // set above
        let arrival = (now.duration_since(first).as_nanos() * clock_rate as u128 / 1_000_000_000) as i64;
        let transit = arrival.wrapping_sub(ts as i64);
        if let Some(last) = s.last_transit {
            // Timestamps wrap at 2^32; the difference of two transits is small.
            let d = (transit - last).unsigned_abs() % (1 << 32);
            let d = d.min((1 << 32) - d);
            // A.8: J += (|D| - J) / 16, kept scaled by 16.
            s.jitter_q4 = (s.jitter_q4 + d).saturating_sub((s.jitter_q4 + 8) >> 4);
        }
        s.last_transit = Some(transit);
        s.jitter_clock = clock_rate;
    }

    /// Accounts a packet that is counted but not sequence-tracked (RTCP, non-RTP).
    pub fn on_other(&mut self, now: Instant, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// A reception report about the current source, with the fraction lost
    /// since the previous report (RFC 3550 A.3). `None` before any RTP.
    pub fn reception(&mut self) -> Option<Reception> {
        let s = self.seq.as_ref()?;
        let expected = s.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = s.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = s.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        Some(Reception {
            ssrc: s.ssrc,
            fraction_lost,
            cumulative_lost: s.lost().min(0x7f_ffff) as i32,
            extended_max_seq: s.extended_max() as u32,
            jitter: (s.jitter_q4 >> 4) as u32,
        })
    }

    pub fn last_packet(&self) -> Option<Instant> {
        self.last
    }

    /// The extended highest sequence number of the current source.
    pub fn extended_max_seq(&self) -> Option<u32> {
        self.seq.as_ref().map(|s| s.extended_max() as u32)
    }

    /// The interarrival jitter so far, scaled by 16, and the RTP clock (Hz)
    /// it is counted in; `None` before any packet with a known clock.
    pub fn jitter_q4(&self) -> Option<(u64, u32)> {
        self.seq
            .as_ref()
            .filter(|s| s.jitter_clock > 0)
            .map(|s| (s.jitter_q4, s.jitter_clock))
    }

    /// Accounts RTP the kernel forwarded for this source (`offload`):
    /// `packets` more received, up to `seq_max` (extended), the last at `last`;
    /// `jitter` is the kernel's estimate (scaled by 16) and its clock, which
    /// goes on from the one it was handed.
    pub fn on_forwarded(
        &mut self,
        packets: u64,
        bytes: u64,
        last: Option<Instant>,
        seq_max: u32,
        jitter: Option<(u64, u32)>,
    ) {
        if packets == 0 {
            return;
        }
        self.packets += packets;
        self.bytes += bytes;
        self.last = self.last.max(last);
        if let Some(s) = &mut self.seq {
            s.received += packets;
            if let Some((q4, clock)) = jitter {
                (s.jitter_q4, s.jitter_clock) = (q4, clock);
                // The kernel's transit has another origin: the next packet
                // userspace sees starts a new difference.
                s.last_transit = None;
            }
            // Ahead of what userspace saw (by less than half the space):
            // the kernel applied A.1's rule to every packet in between.
            let ahead = seq_max.wrapping_sub(s.extended_max() as u32);
            if ahead != 0 && ahead < 1 << 31 {
                s.cycles = seq_max & !0xffff;
                s.max_seq = seq_max as u16;
            }
        }
    }

    pub fn report(&self, now: Instant) -> StatsReport {
        let (lost, jitter_ms, ssrc) = match &self.seq {
            Some(s) => {
                let jitter_ms = if s.jitter_clock > 0 {
                    (s.jitter_q4 as f64 / 16.0) * 1000.0 / s.jitter_clock as f64
                } else {
                    0.0
                };
                (self.lost_before + s.lost(), jitter_ms, Some(s.ssrc))
            }
            None => (self.lost_before, 0.0, None),
        };
        let secs = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
        StatsReport {
            packets: self.packets,
            bytes: self.bytes,
            lost,
            jitter_ms: (jitter_ms * 1000.0).round() / 1000.0,
            ssrc,
            active_s: match (self.first, self.last) {
                (Some(f), Some(l)) => secs(l - f),
                _ => 0.0,
            },
            idle_s: self.last.map(|l| secs(now.saturating_duration_since(l))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_jitter_replaces_the_estimate_and_the_next_difference_starts_over() {
        let t0 = Instant::now();
        let mut s = RtpStats::default();
        feed(&mut s, t0, &[1, 2, 3]);
        assert_eq!(s.jitter_q4(), Some((0, 8000)));
        // 10 ms at 8 kHz, scaled by 16.
        s.on_forwarded(50, 50 * 172, Some(t0), 53, Some((80 * 16, 8000)));
        assert_eq!(s.report(t0).jitter_ms, 10.0);
        // A packet userspace sees next, far off the old transit: no new
        // difference is taken against a transit of another origin.
        s.on_rtp(t0 + Duration::from_secs(5), 172, 7, 54, 54 * 160, 8000);
        assert_eq!(s.report(t0).jitter_ms, 10.0);
    }

    fn feed(stats: &mut RtpStats, t0: Instant, seqs: &[u16]) {
        for (i, &seq) in seqs.iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * i as u64);
            stats.on_rtp(now, 172, 7, seq, seq as u32 * 160, 8000);
        }
    }

    #[test]
    fn packets_forwarded_in_the_kernel_count_as_received_in_sequence() {
        let t0 = Instant::now();
        let mut s = RtpStats::default();
        feed(&mut s, t0, &[65530, 65531]);
        assert_eq!(s.extended_max_seq(), Some(65531));
        // The kernel forwarded 65532..=65535 and 0..=9 (14), and missed one.
        let last = t0 + Duration::from_millis(400);
        s.on_forwarded(13, 13 * 160, Some(last), 65536 + 9, None);
        let r = s.report(last);
        assert_eq!((r.packets, r.lost), (15, 1));
        assert_eq!(s.extended_max_seq(), Some(65536 + 9));
        assert_eq!(s.last_packet(), Some(last));
        // Userspace goes on where the kernel stopped: no loss, no restart.
        s.on_rtp(last, 172, 7, 10, 10 * 160, 8000);
        assert_eq!(s.report(last).lost, 1);
    }

    #[test]
    fn counts_loss_from_gaps() {
        let t0 = Instant::now();
        let mut s = RtpStats::default();
        feed(&mut s, t0, &[10, 11, 13, 14, 17]);
        let r = s.report(t0);
        assert_eq!(r.packets, 5);
        assert_eq!(r.lost, 3);
    }

    #[test]
    fn reordering_and_duplicates_are_not_loss() {
        let t0 = Instant::now();
        let mut s = RtpStats::default();
        feed(&mut s, t0, &[1, 3, 2, 4, 4, 5]);
        assert_eq!(s.report(t0).lost, 0);
    }

    #[test]
    fn reception_reports_give_the_fraction_lost_per_interval() {
        let t0 = Instant::now();
        let mut s = RtpStats::default();
        feed(&mut s, t0, &[1, 2, 3, 4]);
        let r = s.reception().unwrap();
        assert_eq!((r.fraction_lost, r.cumulative_lost, r.extended_max_seq), (0, 0, 4));
        feed(&mut s, t0, &[5, 7, 9]); // 2 of 5 lost in this interval
        let r = s.reception().unwrap();
        assert_eq!((r.fraction_lost, r.cumulative_lost), ((2 * 256 / 5) as u8, 2));
    }

    #[test]
    fn sequence_wrap_is_not_loss() {
        let t0 = Instant::now();
        let mut s = RtpStats::default();
        feed(&mut s, t0, &[65534, 65535, 0, 1]);
        assert_eq!(s.report(t0).lost, 0);
    }

    #[test]
    fn sequence_restart_is_not_loss() {
        let t0 = Instant::now();
        let mut s = RtpStats::default();
        feed(&mut s, t0, &[100, 101, 40000, 40001, 40002]);
        assert_eq!(s.report(t0).lost, 0);
    }

    #[test]
    fn steady_stream_has_no_jitter_and_delayed_packet_has_some() {
        let t0 = Instant::now();
        let mut s = RtpStats::default();
        feed(&mut s, t0, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(s.report(t0).jitter_ms, 0.0);
        // One packet 40 ms late: D = 320 samples, J = 320/16 = 20 samples = 2.5 ms.
        let late = t0 + Duration::from_millis(20 * 6 + 40);
        s.on_rtp(late, 172, 7, 7, 7 * 160, 8000);
        let j = s.report(late).jitter_ms;
        assert!((j - 2.5).abs() < 0.01, "jitter {j}");
    }
}
