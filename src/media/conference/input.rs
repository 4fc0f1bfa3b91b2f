//! What participants send: RTP into their jitter buffers (DTMF as events,
//! packets marked silent kept as gaps), RTCP for round-trip time and loss.

use super::*;

impl Conference {
    /// An RTP packet from participant `id` (source already checked).
    pub fn handle_rtp(&mut self, now: Instant, id: ParticipantId, bytes: &[u8]) {
        let Ok(v) = RtpView::parse(bytes) else { return };
        let Some(p) = self.index.get(&id).map(|&i| &mut self.participants[i]) else {
            return;
        };
        p.rx.on_rtp(
            now,
            bytes.len(),
            v.ssrc(),
            v.sequence(),
            v.timestamp(),
            p.spec.clock_rate,
        );
        if p.remote_ssrc.is_some_and(|s| s != v.ssrc()) {
            p.jitter.restart();
        }
        p.remote_ssrc = Some(v.ssrc());
        if Some(v.payload_type()) == p.spec.dtmf_pt {
            // RFC 4733: reported once, at the end.
            if let Some(d) = p.dtmf.end(now, v.timestamp(), v.payload()) {
                self.events.push(ConfEvent::Dtmf {
                    participant: id,
                    digit: d.digit,
                });
            }
            return; // never mixed into audio
        }
        if v.payload_type() == p.spec.pt {
            // RFC 6464: a packet the sender marks as silence is not decoded
            // (unless the participant is speaking: let its voice fade out).
            // An empty payload keeps its place in the jitter buffer.
            let level = p.spec.audio_level_id.and_then(|id| v.audio_level(id));
            let quiet = level.is_some_and(|l| l >= SILENT_LEVEL);
            if quiet && !self.speakers.is_speaking(id) {
                p.skipped += 1;
                p.jitter.push_with_level(now, v.sequence(), v.timestamp(), &[], level);
            } else {
                p.jitter
                    .push_with_level(now, v.sequence(), v.timestamp(), v.payload(), level);
            }
        }
    }

    /// An RTCP compound from participant `id`: remember its SR for our
    /// reports, and take RTT and loss from its blocks about our stream.
    /// `ntp_now` is the wall clock as a 64-bit NTP timestamp.
    pub fn handle_rtcp(&mut self, now: Instant, ntp_now: u64, id: ParticipantId, bytes: &[u8]) {
        let Ok(r) = rtcp::read_reports(bytes) else { return };
        let Some(p) = self.index.get(&id).map(|&i| &mut self.participants[i]) else {
            return;
        };
        if let Some(ntp) = r.sr_ntp {
            p.last_sr = Some(((ntp >> 16) as u32, now));
        }
        // Samples for the metrics: one report per participant per interval
        // counts; a flood of reports is not a flood of samples.
        let sample = p
            .sampled_at
            .is_none_or(|at| now.saturating_duration_since(at) >= RTCP_SAMPLE_GAP);
        for b in r.blocks.iter().filter(|b| b.ssrc == p.ssrc) {
            if !sample {
                p.remote = Some(*b);
                continue;
            }
            p.sampled_at = Some(now);
            p.remote = Some(*b);
            self.reported_loss.push(b.fraction_lost as f64 / 256.0);
            if b.lsr != 0 {
                let rtt = ((ntp_now >> 16) as u32).wrapping_sub(b.lsr).wrapping_sub(b.dlsr);
                // More than a minute is a clock mix-up, not a path.
                if rtt < 60 << 16 {
                    p.rtt_ms = Some(rtt as f64 * 1000.0 / 65536.0);
                    self.rtt_seconds.push(rtt as f64 / 65536.0);
                }
            }
        }
    }
}
