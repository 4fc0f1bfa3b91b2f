//! Taps on relayed calls and conferences, worker side: a tapped leg's RTP
//! decoded as it passes (what the leg says, what it hears) and cut into
//! 20 ms frames for the application; starting and stopping taps. A call
//! without taps never comes here: its packets cost what they did.

use super::hearing::{self, Hearing};
use super::{CallKey, Runner};
use crate::media::codec::{CodecKind, CodecSpec, Decoder};
use crate::media::conference::Back as Speak;
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
    pub(super) codecs: Vec<CodecSpec>,
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
    pub(super) fn add_back(&mut self, rate: u32, pcm: &mut [f32]) -> usize {
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

    pub(super) fn hears(&self, stream: usize, leg: usize) -> bool {
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

/// Feeds a relayed RTP packet to the call's taps; taps whose task ended
/// (a recording that failed) are let go.
pub(super) fn feed(
    (taps, hearings): (&mut Vec<LegTap>, &mut Vec<Hearing>),
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
        hearing::prune(taps, hearings);
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
        if spec.back != Speak::None {
            hearing::open(call, (stream, leg), spec.id);
            self.fill_at.get_or_insert(Instant::now());
        }
        Ok(())
    }

    /// Stops tap `id` on call or conference `key`.
    pub(super) fn untap(&mut self, key: CallKey, id: u64) -> bool {
        if let Some(&ci) = self.by_key.get(&key) {
            let call = &mut self.calls[ci];
            let before = call.taps.len();
            call.taps.retain(|t| t.id != id);
            hearing::prune(&call.taps, &mut call.hearings);
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
