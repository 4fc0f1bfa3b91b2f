//! Audio for a call leg that is relayed nothing (put on hold, or a party
//! that sends no packets while silent): once nothing has gone to the leg
//! for `QUIET`, an application's audio (hold music, an announcement, a
//! voice) is sent to it as a stream of chorus's own, 20 ms frames in the
//! leg's codec, until relayed packets come again (then `overlay` mixes it
//! under them). Its own SSRC keeps the two numberings apart: the phone
//! sees a change of source, as when a PBX starts music on hold, never a
//! sequence number going back. Pure: the worker passes the time in.

use super::codec::{CodecSpec, Encoder, MAX_PAYLOAD};
use super::overlay::AddAudio;
use crate::wire::rtp::write_header;
use std::time::{Duration, Instant};

/// Nothing relayed to the leg for this long: chorus's stream takes over.
pub const QUIET: Duration = Duration::from_millis(60);
const FRAME: Duration = Duration::from_millis(20);

pub struct Filler {
    spec: CodecSpec,
    enc: Encoder,
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// When the last packet was relayed to the leg.
    relayed: Option<Instant>,
    /// When the last frame of chorus's own went, and when the next is due.
    sent: Option<Instant>,
    next: Option<Instant>,
    pcm: Vec<f32>,
}

impl std::fmt::Debug for Filler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filler({} ssrc {:#x})", self.spec.name(), self.ssrc)
    }
}

impl Filler {
    /// Frames in `codec` (its payload type, 20 ms), as source `ssrc`.
    pub fn new(codec: &CodecSpec, ssrc: u32) -> Result<Filler, String> {
        let spec = CodecSpec::new(codec.kind, codec.pt, codec.channels, 20, None, None)?;
        Ok(Filler {
            enc: Encoder::new(&spec)?,
            pcm: Vec::with_capacity(spec.frame_samples()),
            spec,
            ssrc,
            seq: (ssrc >> 16) as u16,
            ts: ssrc.rotate_left(7),
            relayed: None,
            sent: None,
            next: None,
        })
    }

    /// A packet was relayed to the leg at `now`.
    pub fn relayed(&mut self, now: Instant) {
        self.relayed = Some(now);
        self.next = None;
    }

    /// When a frame of chorus's own is due: `QUIET` after the last relayed
    /// packet, on its 20 ms grid (`now` when nothing holds it back).
    pub fn due_at(&self, now: Instant) -> Instant {
        let quiet = self.relayed.map_or(now, |t| t + QUIET);
        quiet.max(self.next.unwrap_or(now))
    }

    /// Whether a frame of chorus's own is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.due_at(now)
    }

    /// The next frame, with what `add` gives, as an RTP packet in `out`;
    /// its length. None when there is nothing to play (the stream pauses;
    /// its clock runs on).
    pub fn packet(&mut self, now: Instant, out: &mut [u8], add: &mut AddAudio<'_>) -> Option<usize> {
        self.pcm.clear();
        self.pcm.resize(self.spec.frame_samples(), 0.0);
        if add(self.spec.rate, &mut self.pcm) == 0 {
            self.next = None;
            return None;
        }
        // After a pause the timestamp moves on by the time that passed.
        let resumed = match self.sent {
            Some(t) if now.saturating_duration_since(t) < FRAME * 2 => false,
            Some(t) => {
                let frames = now.saturating_duration_since(t).as_millis() / FRAME.as_millis();
                let gap = (frames.saturating_sub(1) as u32).wrapping_mul(self.spec.frame_ts());
                self.ts = self.ts.wrapping_add(gap);
                true
            }
            None => true,
        };
        let h = write_header(out, self.spec.pt, self.seq, self.ts, self.ssrc)?;
        if resumed {
            out[1] |= 0x80;
        }
        let room = out.len().min(h + MAX_PAYLOAD);
        let len = self.enc.encode(&self.pcm, out.get_mut(h..room)?);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(self.spec.frame_ts());
        self.sent = Some(now);
        // On a 20 ms grid; a worker far behind starts a new one.
        self.next = Some(match self.next {
            Some(t) if now.saturating_duration_since(t) < FRAME * 3 => t + FRAME,
            _ => now + FRAME,
        });
        (len > 0).then_some(h + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{CodecKind, Decoder};
    use crate::media::mixer::level::tone_level;
    use crate::wire::rtp::RtpView;

    #[test]
    fn a_quiet_leg_gets_a_paced_stream_of_its_own_until_packets_come() {
        let spec = CodecSpec::new(CodecKind::Opus, 111, 2, 20, None, None).unwrap();
        let mut f = Filler::new(&spec, 0x1234_5678).unwrap();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        f.relayed(t0);
        assert!(!f.due(ms(40)), "packets flow");
        assert!(f.due(ms(60)), "quiet");
        let mut at = 0usize;
        let mut tone = |rate: u32, pcm: &mut [f32]| {
            for (i, x) in pcm.iter_mut().enumerate() {
                *x += 0.3 * (2.0 * std::f32::consts::PI * 500.0 * (at + i) as f32 / rate as f32).sin();
            }
            at += pcm.len();
            pcm.len()
        };
        let (mut dec, mut pcm, mut frame) = (Decoder::new(&spec).unwrap(), Vec::new(), Vec::new());
        let mut out = [0u8; 1500];
        let mut headers = Vec::new();
        for k in 0..50u64 {
            let now = ms(60 + 20 * k);
            assert!(f.due(now) && !f.due(now - Duration::from_millis(1)) || k == 0);
            let n = f.packet(now, &mut out, &mut tone).unwrap();
            let v = RtpView::parse(&out[..n]).unwrap();
            headers.push((v.sequence(), v.timestamp(), v.ssrc(), v.marker()));
            dec.decode(Some(v.payload()), 960, &mut frame);
            pcm.extend_from_slice(&frame);
        }
        assert!(tone_level(&pcm[4800..], 48000.0, 500.0) > 0.2);
        assert!(headers[0].3 && !headers[1].3, "the marker starts the stream");
        for w in headers.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1));
            assert_eq!(w[1].1, w[0].1.wrapping_add(960));
            assert_eq!(w[1].2, 0x1234_5678);
        }
        // Nothing to play: the stream pauses; after 200 ms its clock has moved on.
        assert_eq!(f.packet(ms(1060), &mut out, &mut |_, _| 0), None);
        let n = f.packet(ms(1260), &mut out, &mut tone).unwrap();
        let v = RtpView::parse(&out[..n]).unwrap();
        let last = headers.last().unwrap();
        assert_eq!(v.sequence(), last.0.wrapping_add(1));
        assert!(v.marker());
        assert_eq!(
            v.timestamp(),
            last.1.wrapping_add(960 * 11),
            "220 ms after the last frame"
        );
        // A relayed packet: the leg hears the other party again.
        f.relayed(ms(1270));
        assert!(!f.due(ms(1290)));
    }
}
