//! One direction of a transcoded relayed stream: RTP in one codec in, RTP
//! in another out, packet by packet (no jitter buffer: the receiving phone
//! or browser has its own, and a relay should add no delay of its own
//! beyond one frame). Built from the conference's parts: decoder,
//! resampler, encoder. RFC 4733 events cross with their payload type,
//! timestamps and durations mapped to the other side's clock. Pure: the
//! worker passes packets in and sends what comes out.

use super::codec::{CodecKind, CodecSpec, Decoder, Encoder, MAX_PAYLOAD};
use super::overlay::AddAudio;
use super::resample::Resampler;
use crate::wire::rtp::{write_header, RtpView};

/// The resampler takes 20 ms chunks.
const CHUNK_MS: u32 = 20;
/// Longest gap concealed frame by frame; a longer one restarts the timing.
const MAX_CONCEALED: u16 = 3;
/// Output packet buffer: header, the largest frame, and room for SRTP to
/// protect it in place.
pub const MAX_PACKET: usize = 12 + MAX_PAYLOAD + super::srtp::TRAILER;

pub struct Transcoder {
    /// The codecs as agreed (before choosing Opus's working rate).
    asked: (CodecSpec, CodecSpec),
    from: CodecSpec,
    to: CodecSpec,
    dec: Decoder,
    enc: Encoder,
    rs: Resampler,
    /// Decoded samples at `from.rate` not yet resampled (less than a chunk).
    input: Vec<f32>,
    frame: Vec<f32>,
    /// Resampled samples at `to.rate` not yet encoded.
    pending: Vec<f32>,
    /// Output RTP timestamp of `pending[0]`.
    pending_ts: u32,
    /// Input (timestamp, sequence) of the last packet, and the output
    /// timestamp it mapped to.
    last: Option<(u32, u16, u32)>,
    out_seq: u16,
    ssrc: u32,
    marker: bool,
}

impl std::fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transcoder({} -> {})", self.from.name(), self.to.name())
    }
}

impl Transcoder {
    pub fn new(from: CodecSpec, to: CodecSpec, ssrc: u32) -> Result<Transcoder, String> {
        // libopus runs at the other side's rate (8 or 16 kHz against G.711
        // or G.722): no resampling, and narrowband Opus costs less.
        let other = |a: CodecSpec, b: CodecSpec| match (a.kind, b.kind) {
            (CodecKind::Opus, k) if k != CodecKind::Opus => CodecSpec {
                rate: k.pcm_rate(),
                ..a
            },
            _ => a,
        };
        let asked = (from, to);
        let (from, to) = (other(from, to), other(to, from));
        let chunk_in = (from.rate * CHUNK_MS / 1000) as usize;
        let mut enc = Encoder::new(&to)?;
        // What arrives was G.711 or G.722 already: complexity 3 skips SILK's
        // delayed-decision quantizer, a third of a transcoded call's CPU
        // at 5 (perf), for no audible loss on narrowband speech.
        enc.set_complexity(3);
        Ok(Transcoder {
            asked,
            from,
            to,
            dec: Decoder::new(&from)?,
            enc,
            rs: Resampler::new(from.rate, to.rate, chunk_in)?,
            input: Vec::with_capacity(6 * chunk_in),
            frame: Vec::with_capacity(5760),
            pending: Vec::with_capacity(4 * to.frame_samples()),
            pending_ts: 0,
            last: None,
            out_seq: (ssrc as u16).wrapping_mul(31),
            ssrc,
            marker: true,
        })
    }

    pub fn codecs(&self) -> (CodecSpec, CodecSpec) {
        self.asked
    }

    /// One validated RTP packet from the sender. Each packet for the
    /// receiver is written to `out` and handed to `emit` (zero, one or
    /// more per input: ptimes may differ). `add` mixes an application's
    /// audio into each frame before it is encoded (see `media::overlay`).
    pub fn push(
        &mut self,
        packet: &[u8],
        out: &mut [u8; MAX_PACKET],
        emit: &mut dyn FnMut(&mut [u8; MAX_PACKET], usize),
        add: &mut AddAudio<'_>,
    ) {
        let Ok(v) = RtpView::parse(packet) else { return };
        let pt = v.payload_type();
        if Some(pt) == self.from.dtmf_pt {
            return self.event(&v, out, emit);
        }
        if pt != self.from.pt {
            // Comfort noise or a codec not agreed: nothing to carry.
            return;
        }
        let (ts, seq) = (v.timestamp(), v.sequence());
        let out_ts = self.map_timestamp(ts, seq);
        if self.pending.is_empty() && self.input.is_empty() {
            self.pending_ts = out_ts;
        }
        self.marker |= v.marker();
        let n = self
            .dec
            .decode(Some(v.payload()), self.from.frame_samples(), &mut self.frame);
        self.input.extend_from_slice(&self.frame[..n]);
        self.resample();
        self.encode(out, emit, add);
    }

    /// The output timestamp of an input packet; conceals a short loss so
    /// the decoder's state (and Opus's) runs on.
    fn map_timestamp(&mut self, ts: u32, seq: u16) -> u32 {
        let scale = |d: u32| (u64::from(d) * u64::from(self.to.clock_rate) / u64::from(self.from.clock_rate)) as u32;
        let out = match self.last {
            Some((lts, lseq, lout)) => {
                let gap = seq.wrapping_sub(lseq);
                if (2..=MAX_CONCEALED + 1).contains(&gap) {
                    for _ in 1..gap {
                        let n = self.dec.decode(None, self.from.frame_samples(), &mut self.frame);
                        self.input.extend_from_slice(&self.frame[..n]);
                    }
                }
                lout.wrapping_add(scale(ts.wrapping_sub(lts)))
            }
            None => ts,
        };
        self.last = Some((ts, seq, out));
        out
    }

    fn resample(&mut self) {
        let chunk = (self.from.rate * CHUNK_MS / 1000) as usize;
        let mut at = 0;
        while self.input.len() - at >= chunk {
            let converted = self.rs.process(&self.input[at..at + chunk]);
            self.pending.extend_from_slice(converted);
            at += chunk;
        }
        self.input.drain(..at);
    }

    fn encode(
        &mut self,
        out: &mut [u8; MAX_PACKET],
        emit: &mut dyn FnMut(&mut [u8; MAX_PACKET], usize),
        add: &mut AddAudio<'_>,
    ) {
        let frame = self.to.frame_samples();
        while self.pending.len() >= frame {
            add(self.to.rate, &mut self.pending[..frame]);
            let Some(h) = write_header(&mut out[..], self.to.pt, self.out_seq, self.pending_ts, self.ssrc) else {
                return;
            };
            if std::mem::take(&mut self.marker) {
                out[1] |= 0x80;
            }
            let len = self.enc.encode(&self.pending[..frame], &mut out[h..h + MAX_PAYLOAD]);
            self.pending.drain(..frame);
            self.out_seq = self.out_seq.wrapping_add(1);
            self.pending_ts = self.pending_ts.wrapping_add(self.to.frame_ts());
            if len > 0 {
                emit(out, h + len);
            }
        }
    }

    /// An RFC 4733 event: its payload type, timestamp and duration moved
    /// to the receiver's side.
    fn event(
        &mut self,
        v: &RtpView<'_>,
        out: &mut [u8; MAX_PACKET],
        emit: &mut dyn FnMut(&mut [u8; MAX_PACKET], usize),
    ) {
        let (Some(pt), Some(body)) = (self.to.dtmf_pt, v.payload().get(..4)) else {
            return;
        };
        let ts = self.map_timestamp(v.timestamp(), v.sequence());
        let Some(h) = write_header(&mut out[..], pt, self.out_seq, ts, self.ssrc) else {
            return;
        };
        if v.marker() {
            out[1] |= 0x80;
        }
        let duration = u16::from_be_bytes([body[2], body[3]]);
        let scaled = u64::from(duration) * u64::from(self.to.clock_rate) / u64::from(self.from.clock_rate);
        out[h..h + 2].copy_from_slice(&body[..2]);
        out[h + 2..h + 4].copy_from_slice(&(scaled.min(0xffff) as u16).to_be_bytes());
        self.out_seq = self.out_seq.wrapping_add(1);
        emit(out, h + 4);
    }
}

#[cfg(test)]
mod tests;
