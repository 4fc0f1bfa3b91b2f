//! `--transcode`: leg A is a PCMU phone, leg B an Opus endpoint (a
//! browser's codec). The offer asks chorus to add Opus (`transcode`), B
//! answers Opus only, so chorus decodes, resamples and encodes every
//! packet both ways. B sends real Opus frames (a 1 kHz tone encoded once,
//! replayed), so chorus's decoder does real work.

use chorus::media::codec::{CodecKind, CodecSpec, Encoder};
use chorus::wire::rtp::write_header;
use std::net::SocketAddr;

/// The payload type chorus gives the Opus it adds (the first free one).
const OPUS_PT: u8 = 96;

/// B's answer: Opus only.
pub(crate) fn opus_answer(addr: SocketAddr) -> String {
    format!(
        "v=0\r\no=load 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {OPUS_PT}\r\na=rtpmap:{OPUS_PT} opus/48000/2\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

/// One second of a 1 kHz tone as 20 ms Opus frames.
pub(crate) fn opus_frames() -> Vec<Vec<u8>> {
    let spec = CodecSpec::new(CodecKind::Opus, OPUS_PT, 2, 20, None, None).expect("opus spec");
    let mut enc = Encoder::new(&spec).expect("opus encoder");
    (0..50)
        .map(|k| {
            let pcm: Vec<f32> = (0..960)
                .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 1000.0 * (k * 960 + i) as f32 / 48000.0).sin())
                .collect();
            let mut out = vec![0u8; 1275];
            let n = enc.encode(&pcm, &mut out);
            out.truncate(n);
            out
        })
        .collect()
}

/// An Opus RTP packet in `buf`: its length.
pub(crate) fn opus_packet(buf: &mut [u8], frames: &[Vec<u8>], seq: u16, ssrc: u32) -> usize {
    let frame = &frames[usize::from(seq) % frames.len()];
    let h = write_header(buf, OPUS_PT, seq, u32::from(seq) * 960, ssrc).expect("room for a header");
    buf[h..h + frame.len()].copy_from_slice(frame);
    h + frame.len()
}
