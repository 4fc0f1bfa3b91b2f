//! An application's audio (its voice, a file) mixed into the packets
//! relayed to one call leg, packet by packet and in the leg's own codec:
//! the payload decoded, the audio added, encoded again with the same frame
//! length, so the phone's jitter buffer sees the stream it was getting.
//! Pure: the worker hands packets in.
//!
//! - G.711 has no state: a packet with nothing to add is left as it was.
//! - G.722 is ADPCM, and the far decoder follows the encoder's state: once
//!   the first packet is rewritten, every packet goes through chorus's
//!   encoder (one switch of bitstreams, not one per sentence).
//! - Opus: every packet is decoded (so the decoder's state is current when
//!   audio comes), encoded again only while there is audio to add. The
//!   payload changes size.

use super::codec::{CodecKind, CodecSpec, Decoder, Encoder, MAX_PAYLOAD};
use crate::wire::rtp::RtpView;

/// Audio added into a frame: `(rate, samples)` to add into, returns how
/// many samples it added (0: nothing to play).
pub type AddAudio<'a> = dyn FnMut(u32, &mut [f32]) -> usize + 'a;

pub struct Overlay {
    spec: CodecSpec,
    dec: Decoder,
    enc: Encoder,
    pcm: Vec<f32>,
    /// G.722: every packet goes through the encoder since the first did.
    engaged: bool,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Overlay({} pt {})", self.spec.name(), self.spec.pt)
    }
}

impl Overlay {
    pub fn new(codec: &CodecSpec) -> Result<Overlay, String> {
        // Room for the longest packet a phone sends (60 ms). libopus runs
        // at 48 kHz: at 24 kHz, 40 and 60 ms frames came back from a
        // decode and encode at a tenth of their level (tested), and at 16
        // kHz (SILK) it cost more per packet than at 48 (benches/transcode).
        let spec = CodecSpec::new(codec.kind, codec.pt, codec.channels, 60, None, None)?;
        let mut enc = Encoder::new(&spec)?;
        // As the transcoder's: 14% less per packet than 5 (benches/transcode).
        enc.set_complexity(3);
        Ok(Overlay {
            dec: Decoder::new(&spec)?,
            enc,
            pcm: Vec::with_capacity(spec.frame_samples()),
            spec,
            engaged: false,
        })
    }

    /// The payload type it rewrites.
    pub fn pt(&self) -> u8 {
        self.spec.pt
    }

    /// The rate `add` is asked for samples at.
    pub fn rate(&self) -> u32 {
        self.spec.rate
    }

    /// `buf[..n]`: a plain RTP packet about to be relayed to the leg.
    /// Packets of other payload types (telephone-event, comfort noise)
    /// pass as they are. Returns the packet's length, which changes for
    /// Opus; the payload is kept within `buf` and `MAX_PAYLOAD`.
    pub fn apply(&mut self, buf: &mut [u8], n: usize, add: &mut AddAudio<'_>) -> usize {
        let Some((start, end)) = buf.get(..n).and_then(|p| payload_range(p, self.spec.pt)) else {
            return n;
        };
        let Some(payload) = buf.get(start..end) else { return n };
        let samples = self.dec.decode(Some(payload), self.spec.frame_samples(), &mut self.pcm);
        if samples == 0 {
            return n;
        }
        let added = add(self.spec.rate, &mut self.pcm[..samples]);
        self.engaged |= added > 0 && self.spec.kind == CodecKind::G722;
        if added == 0 && !self.engaged {
            return n;
        }
        let limit = buf.len().min(start + MAX_PAYLOAD);
        let Some(out) = buf.get_mut(start..limit) else { return n };
        match self.enc.encode(&self.pcm[..samples], out) {
            // An encoder that refuses (an Opus frame length it cannot
            // make): the packet goes as it came.
            0 => n,
            len => {
                // The padding, if any, went with the old payload.
                buf[0] &= !0x20;
                start + len
            }
        }
    }
}

/// Where the payload of a packet of type `pt` lies, without padding.
fn payload_range(packet: &[u8], pt: u8) -> Option<(usize, usize)> {
    let v = RtpView::parse(packet).ok()?;
    if v.payload_type() != pt {
        return None;
    }
    let start = packet.len() - v.payload().len();
    let pad = match packet[0] & 0x20 {
        0 => 0,
        // parse() checked that the padding fits after the header.
        _ => usize::from(*packet.last()?),
    };
    let end = packet.len().checked_sub(pad)?;
    (end > start).then_some((start, end))
}

#[cfg(test)]
mod tests;
