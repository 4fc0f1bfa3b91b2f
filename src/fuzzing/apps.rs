//! What applications and operators feed the audio taps: messages an
//! application sends back over its WebSocket, and WAV files to play.

use super::Input;
use crate::media::tap::{Back, Playout, Tap, BACK_FRAMES};
use crate::streams::backlog::{Backlog, BACKLOG_SECONDS, MAX_MARKS};
use crate::streams::format::{parse, Format, Incoming, Wire};

/// A sequence of messages from an application (each: format, text or
/// binary, length, bytes) through parsing, the backlog and the worker's
/// playout: nothing panics, the backlog and the ring stay bounded.
pub(super) fn app_stream(data: &[u8]) {
    let mut input = Input(data);
    let format = if input.u8() & 1 == 0 {
        Format::Twilio
    } else {
        Format::Raw
    };
    let rate = [8000, 16000, 24000, 48000][usize::from(input.u8() & 3)];
    let tap = Tap::default();
    let mut back = Backlog::new(rate);
    let mut playout = Playout::new(48000);
    while !input.is_empty() {
        let kind = input.u8();
        let len = usize::from(input.u8()) * 4;
        let body = input.bytes(len);
        let msg = match kind & 1 {
            0 => Wire::Text(String::from_utf8_lossy(body).into_owned()),
            _ => Wire::Binary(body.to_vec()),
        };
        match parse(format, &msg) {
            Ok(Incoming::Audio(pcm)) => {
                back.audio(&pcm);
            }
            Ok(Incoming::Mark(name)) => back.mark(name),
            Ok(Incoming::Clear) => {
                back.clear(&tap);
            }
            Ok(Incoming::Ignored) | Err(_) => {}
        }
        back.top_up(&tap);
        if kind & 2 == 0 && playout.next(&tap) {
            assert_eq!(playout.frame.len(), 960, "a whole frame at the mix rate");
        }
        assert!(back.queued() <= rate as usize * BACKLOG_SECONDS);
        assert!(back.marks.len() <= MAX_MARKS);
        assert!(tap.back_len() <= BACK_FRAMES);
    }
    while let Some(b) = tap.take_back() {
        if let Back::Audio { len, .. } = b {
            assert!(len <= crate::media::tap::FRAME_MAX);
        }
    }
}

/// A file to play (WAV or Ogg Opus): read or refused; what is read fits
/// in the file, or (Opus) in the bound on decoded samples.
pub(super) fn wav(data: &[u8]) {
    if let Ok((rate, pcm)) = crate::media::wav::read(data) {
        assert!(crate::media::wav::RATES.contains(&rate));
        assert!(pcm.len() * 2 <= data.len());
    }
    if let Ok((rate, pcm)) = crate::media::ogg::read::decode(data) {
        assert_eq!(rate, crate::media::ogg::read::RATE);
        assert!(pcm.len() <= crate::media::ogg::read::MAX_SAMPLES);
    }
}

/// An application's audio mixed into packets relayed to a call leg (what
/// the other party sent, any bytes): the first byte picks the leg's codec
/// and whether audio plays; every packet is rewritten or left, within its
/// buffer, and a rewritten one is still RTP of the leg's payload type.
pub(super) fn overlay(data: &[u8]) {
    use crate::media::codec::{CodecKind, CodecSpec};
    use crate::media::overlay::Overlay;
    let mut input = super::Input(data);
    let pick = input.u8();
    let kind = [CodecKind::Pcmu, CodecKind::Pcma, CodecKind::G722, CodecKind::Opus][usize::from(pick & 3)];
    let Ok(spec) = CodecSpec::new(kind, 96, 2, 20, None, None) else {
        return;
    };
    let Ok(mut o) = Overlay::new(&spec) else { return };
    let playing = pick & 4 != 0;
    let mut buf = [0u8; 1600];
    while !input.is_empty() {
        let len = usize::from(input.u16() % 1400);
        let packet = input.bytes(len);
        let n = packet.len();
        buf[..n].copy_from_slice(packet);
        let out = o.apply(&mut buf, n, &mut |_, pcm| {
            if !playing {
                return 0;
            }
            pcm.iter_mut().for_each(|x| *x += 0.25);
            pcm.len()
        });
        assert!(out <= buf.len());
        if out != n || buf[..n] != *packet {
            let v = crate::wire::rtp::RtpView::parse(&buf[..out]).expect("a rewritten packet is RTP");
            assert_eq!(v.payload_type(), 96);
        }
    }
}
