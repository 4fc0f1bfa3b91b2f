//! Taps on relayed calls and conferences, worker side: a tapped leg's RTP
//! decoded as it passes (what the leg says, what it hears) and cut into
//! 20 ms frames for the application; starting and stopping taps. A call
//! without taps never comes here: its packets cost what they did.

use super::{CallKey, Runner};
use crate::media::codec::{CodecKind, CodecSpec, Decoder};
use crate::media::conference::Back as Speak;
use crate::media::overlay::Overlay;
use crate::media::tap::{Framer, Out, Playout, TapHandle, Track};
use crate::wire::rtp::RtpView;
use crate::worker::{TapSpec, WorkerError};
use std::time::Instant;

/// One application listening to one leg of a call.
pub(super) struct LegTap {
    id: u64,
    /// The call's stream it listens on, and the leg.
    stream: usize,
    leg: usize,
    tracks: [bool; 2],
    rate: u32,
    tap: TapHandle,
    codecs: Vec<CodecSpec>,
    /// Per track: the payload type being decoded and its decoder.
    decoders: [Option<(u8, Decoder)>; 2],
    framers: [Framer; 2],
    decoded: Vec<f32>,
    /// The application's audio for the tapped leg.
    back: Option<Back>,
}

/// An application's audio on its way into a leg: paced 20 ms frames at
/// the rate the leg's codec runs at, and what is left of them after the
/// last packet.
struct Back {
    playout: Playout,
    fifo: Vec<f32>,
}

impl Back {
    fn new(rate: u32) -> Back {
        Back {
            playout: Playout::new(rate),
            fifo: Vec::with_capacity(rate as usize * 60 / 1000),
        }
    }
}

/// The decoder and encoder mixing applications' audio into the packets
/// relayed to one leg, while a bidirectional tap on it lasts.
pub(super) struct LegOverlay {
    stream: usize,
    leg: usize,
    overlay: Overlay,
}

impl LegTap {
    /// An RTP packet on `stream` that leg `from` sent (plain, already relayed).
    fn packet(&mut self, now: Instant, stream: usize, from: usize, rtp: &[u8], digit: Option<char>) {
        if stream != self.stream || !self.tap.wants() {
            return;
        }
        // What the tapped leg sends is its inbound track; the other leg's, outbound.
        let track = if from == self.leg { 0 } else { 1 };
        if !self.tracks[track] {
            return;
        }
        if let (Some(d), 0) = (digit, track) {
            self.tap.push(Out::Dtmf(d));
        }
        let Ok(v) = RtpView::parse(rtp) else { return };
        let pt = v.payload_type();
        if self.decoders[track].as_ref().is_none_or(|(p, _)| *p != pt) {
            // A codec change (or DTMF, comfort noise: no decoder, skipped).
            self.decoders[track] = self.decoder_for(pt).map(|d| (pt, d));
        }
        let Some((_, dec)) = &mut self.decoders[track] else {
            return;
        };
        let payload = v.payload();
        if payload.is_empty() {
            return;
        }
        let rate = match dec {
            Decoder::G711(..) => 8000,
            Decoder::G722(..) => 16000,
            Decoder::Opus(..) => self.rate,
        };
        // Up to 60 ms at the rate: the largest frame a phone sends.
        dec.decode(Some(payload), rate as usize * 60 / 1000, &mut self.decoded);
        self.framers[track].push(&self.decoded, rate, now, &self.tap);
    }

    /// Adds the application's next samples at `rate` into `pcm`; how many
    /// it added.
    fn add_back(&mut self, rate: u32, pcm: &mut [f32]) -> usize {
        let Some(b) = &mut self.back else { return 0 };
        if b.playout.rate() != rate {
            // The leg's codec changed: what was queued at the old rate goes.
            *b = Back::new(rate);
        }
        while b.fifo.len() < pcm.len() && b.playout.next(&self.tap) {
            b.fifo.extend_from_slice(&b.playout.frame);
        }
        let take = pcm.len().min(b.fifo.len());
        for (s, x) in pcm.iter_mut().zip(b.fifo.drain(..take)) {
            *s += x;
        }
        take
    }

    fn hears(&self, stream: usize, leg: usize) -> bool {
        self.stream == stream && self.leg == leg && self.back.is_some()
    }

    fn decoder_for(&self, pt: u8) -> Option<Decoder> {
        let c = self.codecs.iter().find(|c| c.pt == pt)?;
        // Room for a 60 ms packet; Opus decoded straight at the stream's rate.
        let mut spec = CodecSpec::new(c.kind, c.pt, c.channels, 60, None, None).ok()?;
        if c.kind == CodecKind::Opus {
            spec.rate = self.rate;
        }
        Decoder::new(&spec).ok()
    }
}

/// Adds the audio of applications speaking to leg `to` of `stream` into
/// `pcm` (at `rate`); how many samples the longest of them added.
pub(super) fn add_back(taps: &mut [LegTap], stream: usize, to: usize, rate: u32, pcm: &mut [f32]) -> usize {
    taps.iter_mut()
        .filter(|t| t.hears(stream, to))
        .map(|t| t.add_back(rate, pcm))
        .max()
        .unwrap_or(0)
}

/// Mixes applications' audio into the RTP packet `buf[..n]` about to be
/// relayed to leg `to` of `stream`, in its codec; the packet's new length.
pub(super) fn mix_into(
    taps: &mut [LegTap],
    overlays: &mut Vec<LegOverlay>,
    (stream, to): (usize, usize),
    buf: &mut [u8],
    n: usize,
) -> usize {
    let Some(first) = taps.iter().find(|t| t.hears(stream, to)) else {
        return n;
    };
    let Some(pt) = buf
        .get(..n)
        .and_then(|b| RtpView::parse(b).ok())
        .map(|v| v.payload_type())
    else {
        return n;
    };
    let at = overlays.iter().position(|o| (o.stream, o.leg) == (stream, to));
    let i = match at {
        Some(i) if overlays[i].overlay.pt() == pt => i,
        _ => {
            // The first packet, or a codec change; telephone-event and
            // comfort noise have no codec here and pass as they are.
            let Some(overlay) = first
                .codecs
                .iter()
                .find(|c| c.pt == pt)
                .and_then(|c| Overlay::new(c).ok())
            else {
                return n;
            };
            let o = LegOverlay {
                stream,
                leg: to,
                overlay,
            };
            match at {
                Some(i) => {
                    overlays[i] = o;
                    i
                }
                None => {
                    overlays.push(o);
                    overlays.len() - 1
                }
            }
        }
    };
    overlays[i]
        .overlay
        .apply(buf, n, &mut |rate, pcm| add_back(taps, stream, to, rate, pcm))
}

/// Overlays on legs no application speaks to any more are let go.
pub(super) fn prune(taps: &[LegTap], overlays: &mut Vec<LegOverlay>) {
    overlays.retain(|o| taps.iter().any(|t| t.hears(o.stream, o.leg)));
}

/// Feeds a relayed RTP packet to the call's taps; taps whose task ended
/// (a recording that failed) are let go.
pub(super) fn feed(
    (taps, overlays): (&mut Vec<LegTap>, &mut Vec<LegOverlay>),
    now: Instant,
    (stream, from): (usize, usize),
    rtp: &[u8],
    digit: Option<char>,
) {
    for t in taps.iter_mut() {
        t.packet(now, stream, from, rtp, digit);
    }
    if taps.iter().any(|t| t.tap.is_closed()) {
        taps.retain(|t| !t.tap.is_closed());
        prune(taps, overlays);
    }
}

impl Runner {
    pub(super) fn tap_call(
        &mut self,
        key: CallKey,
        (stream, leg): (usize, usize),
        codecs: Vec<CodecSpec>,
        spec: TapSpec,
    ) -> Result<(), WorkerError> {
        let no = |what: &str| WorkerError::NoTapPoint(what.to_string());
        let ci = *self.by_key.get(&key).ok_or_else(|| no("the call has ended"))?;
        let call = &mut self.calls[ci];
        if stream >= call.streams.len() || leg > 1 {
            return Err(no("the call has no such stream"));
        }
        let rate = match spec.rate {
            8000 | 12000 | 16000 | 24000 | 48000 => spec.rate,
            _ => 48000,
        };
        call.taps.push(LegTap {
            id: spec.id,
            stream,
            leg,
            tracks: spec.tracks,
            rate,
            tap: TapHandle(spec.tap),
            codecs,
            decoders: [None, None],
            framers: [Framer::new(Track::Inbound), Framer::new(Track::Outbound)],
            decoded: Vec::with_capacity(2880),
            // The rate is set by the first packet to the leg (its codec's).
            back: (spec.back != Speak::None).then(|| Back::new(8000)),
        });
        Ok(())
    }

    /// Stops tap `id` on call or conference `key`.
    pub(super) fn untap(&mut self, key: CallKey, id: u64) -> bool {
        if let Some(&ci) = self.by_key.get(&key) {
            let call = &mut self.calls[ci];
            let before = call.taps.len();
            call.taps.retain(|t| t.id != id);
            prune(&call.taps, &mut call.overlays);
            return call.taps.len() != before;
        }
        match self.conf_by_key.get(&key) {
            Some(&ci) => self.conferences[ci].core.remove_tap(id),
            None => false,
        }
    }

    pub(super) fn tap_conference(
        &mut self,
        key: CallKey,
        point: crate::media::conference::TapPoint,
        spec: TapSpec,
    ) -> Result<(), WorkerError> {
        let ci = *self
            .conf_by_key
            .get(&key)
            .ok_or_else(|| WorkerError::NoTapPoint("the conference has ended".into()))?;
        self.conferences[ci]
            .core
            .add_tap(spec.id, point, spec.tracks, spec.back, spec.tap)
            .map_err(WorkerError::NoTapPoint)
    }
}
