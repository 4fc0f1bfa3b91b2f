//! Who might be speaking, before paying for a full decode. A conference of
//! desk phones sends a packet every 20 ms from everyone, silence included,
//! without RFC 6464 levels: decoding (and resampling) every one of them is
//! what bounds a large conference. For a participant that is not mixed:
//!
//! - G.711 and G.722 decode for a few table lookups per sample; the level
//!   is measured on that, at the codec's rate, and the resampler to the
//!   mix rate (the real cost) runs only for those mixed.
//! - Opus carries its encoder's voice-activity decision in the clear: the
//!   first bit of a SILK or hybrid frame's range-coded data is the VAD flag
//!   of its first 20 ms (RFC 6716 section 4.2.3; a bit of probability 1/2
//!   is the top bit of the first byte). A packet of one byte or less is
//!   DTX or silence. Those without voice are not decoded.
//!
//! Whoever the estimate cannot clear is decoded; and every participant is
//! decoded anyway once in `ROTATION` ticks, so an encoder whose VAD is
//! wrong (or absent) is still heard within a second.

/// Ticks between the forced decodes of one participant (1 s): 20 Opus
/// decodes a tick in a conference of 1,000, a third of its core cost.
pub const ROTATION: u64 = 50;

/// The level (-dBov) an Opus packet with voice stands for when the mixer
/// sheds decoding for overload: a talker at a usual level.
pub const SHED_VOICE_LEVEL: u8 = 30;

/// What an Opus packet's first bytes say about voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    /// The encoder found no voice (VAD 0), or the packet is DTX/silence.
    No,
    /// The encoder found voice.
    Yes,
    /// CELT-only or framing the flag cannot be read from: decode to know.
    Unknown,
}

/// The VAD flag of an Opus packet's first frame, where it can be read.
pub fn opus_voice(packet: &[u8]) -> Voice {
    let Some(&toc) = packet.first() else {
        return Voice::No;
    };
    let Some(&first) = packet.get(1) else {
        // A TOC byte alone: a frame of zero length (DTX, RFC 6716 3.2.1).
        return Voice::No;
    };
    let config = toc >> 3;
    let code = toc & 3;
    // Configs 0-15 are SILK-only and hybrid; codes 0 and 1 put the first
    // frame's data right after the TOC byte.
    if config >= 16 || code > 1 {
        return Voice::Unknown;
    }
    if first & 0x80 != 0 {
        Voice::Yes
    } else {
        Voice::No
    }
}

/// Whether participant number `index` gets its forced decode on tick `tick`.
pub fn rotation_due(tick: u64, index: usize) -> bool {
    (tick + index as u64) % ROTATION == 0
}

/// Ticks between the decodes of an Opus participant whose encoder keeps
/// saying voice while it is not mixed (a talker waiting for a slot, an
/// open microphone in a noisy room): its level is measured on one tick in
/// `VOICE_REFRESH` and stands in between. A voice that starts is decoded
/// at once, so a new speaker is still picked up on its first packet.
pub const VOICE_REFRESH: u64 = 4;

/// Whether participant `index` has its voice level measured on `tick`.
pub fn voice_refresh_due(tick: u64, index: usize) -> bool {
    (tick + index as u64) % VOICE_REFRESH == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{CodecKind, CodecSpec, Encoder, MAX_PAYLOAD};
    use proptest::prelude::*;

    fn opus() -> CodecSpec {
        let s = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let spec = crate::media::codec::negotiate(&crate::sdp::Sdp::parse(s).unwrap().media[0]).unwrap();
        assert_eq!(spec.kind, CodecKind::Opus);
        spec
    }

    /// What chorus's own encoder (libopus, VoIP) makes of `pcm` frames.
    fn voices(frames: impl Iterator<Item = Vec<f32>>) -> Vec<Voice> {
        let mut enc = Encoder::new(&opus()).unwrap();
        frames
            .map(|pcm| {
                let mut p = [0u8; MAX_PAYLOAD];
                let n = enc.encode(&pcm, &mut p);
                opus_voice(&p[..n])
            })
            .collect()
    }

    /// Syllables: 200 ms of a voiced buzz (pitch changing per syllable,
    /// harmonics as in a vowel), then 100 ms of silence.
    fn syllables(k: usize) -> Vec<f32> {
        let (syllable, at) = (k / 15, k % 15);
        if at >= 10 {
            return vec![0.0; 960];
        }
        let pitch = 110.0 + 40.0 * (syllable % 4) as f32;
        (0..960)
            .map(|j| {
                let t = (k * 960 + j) as f32 / 48000.0;
                (1..8)
                    .map(|h| 0.05 / h as f32 * (2.0 * std::f32::consts::PI * pitch * h as f32 * t).sin())
                    .sum()
            })
            .collect()
    }

    #[test]
    fn libopus_flags_each_syllable_at_once_and_silence_never() {
        let silence = voices((0..50).map(|_| vec![0.0; 960]));
        assert!(silence.iter().all(|v| *v == Voice::No), "{silence:?}");
        let speech = voices((0..150).map(syllables));
        for syllable in 0..10 {
            let onset = &speech[syllable * 15..syllable * 15 + 2];
            assert!(
                onset.contains(&Voice::Yes),
                "syllable {syllable} starts unflagged: {speech:?}"
            );
        }
        // A steady tone is what VAD learns to call noise: the rotation
        // (and decoding whoever is mixed) covers that.
        let steady = voices((0..50).map(|k| syllables(k % 10)));
        assert_eq!(steady[0], Voice::Yes);
    }

    #[test]
    fn framing_the_flag_cannot_be_read_from_is_unknown() {
        assert_eq!(opus_voice(&[]), Voice::No);
        assert_eq!(opus_voice(&[0x08]), Voice::No);
        assert_eq!(opus_voice(&[0x08, 0x80]), Voice::Yes);
        assert_eq!(opus_voice(&[0x09, 0x00]), Voice::No, "code 1: two equal frames");
        assert_eq!(opus_voice(&[0x0a, 0x80]), Voice::Unknown, "code 2: a length first");
        assert_eq!(opus_voice(&[0x80, 0x80]), Voice::Unknown, "CELT-only");
    }

    #[test]
    fn every_participant_is_decoded_once_per_rotation() {
        for index in 0..60 {
            let due = (0..ROTATION).filter(|t| rotation_due(*t, index)).count();
            assert_eq!(due, 1);
        }
    }

    proptest! {
        #[test]
        fn any_bytes_give_an_answer(bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
            let _ = opus_voice(&bytes);
        }
    }
}
