use super::*;
use crate::media::mixer::tests::tone_level;
use crate::wire::rtp::write_header;
use proptest::prelude::*;

fn spec(kind: CodecKind, pt: u8, ptime: u32) -> CodecSpec {
    CodecSpec::new(
        kind,
        pt,
        if kind == CodecKind::Opus { 2 } else { 1 },
        ptime,
        Some(101),
        None,
    )
    .unwrap()
}

fn sine(freq: f32, rate: u32, at: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| 0.3 * (2.0 * std::f32::consts::PI * freq * (at + i) as f32 / rate as f32).sin())
        .collect()
}

/// `count` packets of a 440 Hz tone in `s`, as the other party sends them.
fn tone_packets(s: CodecSpec, count: usize) -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(&s).unwrap();
    let n = s.frame_samples();
    (0..count)
        .map(|k| {
            let mut p = vec![0u8; 2048];
            let h = write_header(&mut p, s.pt, k as u16, k as u32 * s.frame_ts(), 9).unwrap();
            let len = enc.encode(&sine(440.0, s.rate, k * n, n), &mut p[h..]);
            p.truncate(h + len);
            p
        })
        .collect()
}

/// Passes `packets` through an overlay that adds a 1 kHz tone while
/// `playing(k)`; returns what the leg receives.
fn overlaid(s: CodecSpec, packets: &[Vec<u8>], playing: impl Fn(usize) -> bool) -> Vec<Vec<u8>> {
    let mut o = Overlay::new(&s).unwrap();
    let mut at = 0;
    packets
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let mut buf = vec![0u8; 2048];
            buf[..p.len()].copy_from_slice(p);
            let n = o.apply(&mut buf, p.len(), &mut |rate, pcm| {
                if !playing(k) {
                    return 0;
                }
                let tone = sine(1000.0, rate, at, pcm.len());
                for (x, y) in pcm.iter_mut().zip(tone) {
                    *x += y;
                }
                at += pcm.len();
                pcm.len()
            });
            buf.truncate(n);
            buf
        })
        .collect()
}

fn decoded(s: CodecSpec, packets: &[Vec<u8>]) -> Vec<f32> {
    let mut dec = Decoder::new(&s).unwrap();
    let (mut pcm, mut frame) = (Vec::new(), Vec::new());
    for p in packets {
        let v = RtpView::parse(p).unwrap();
        let n = dec.decode(Some(v.payload()), s.frame_samples(), &mut frame);
        pcm.extend_from_slice(&frame[..n]);
    }
    pcm
}

#[test]
fn every_codec_carries_the_application_under_the_other_party() {
    for kind in [CodecKind::Pcmu, CodecKind::Pcma, CodecKind::G722, CodecKind::Opus] {
        for ptime in [20, 60] {
            let s = spec(kind, if kind == CodecKind::Opus { 111 } else { 0 }, ptime);
            let packets = tone_packets(s, 3000 / ptime as usize);
            let out = overlaid(s, &packets, |_| true);
            // Skip the first half second: the codecs settle.
            let pcm = decoded(s, &out);
            let tail = &pcm[pcm.len() / 6..];
            let rate = s.rate as f32;
            let (a, b) = (tone_level(tail, rate, 440.0), tone_level(tail, rate, 1000.0));
            assert!(
                a > 0.2 && b > 0.2,
                "{kind:?} {ptime} ms: other party {a}, application {b}"
            );
            for (p, q) in packets.iter().zip(&out) {
                assert_eq!(p[..12], q[..12], "{kind:?}: the header stays");
            }
        }
    }
}

#[test]
fn with_nothing_to_add_packets_pass_as_they_came() {
    for kind in [CodecKind::Pcmu, CodecKind::Opus] {
        let s = spec(kind, 8, 20);
        let packets = tone_packets(s, 20);
        assert_eq!(overlaid(s, &packets, |_| false), packets, "{kind:?}");
        // Opus: only the packets with audio to add change.
        let out = overlaid(s, &packets, |k| (5..10).contains(&k));
        let changed: Vec<usize> = (0..20).filter(|&k| out[k] != packets[k]).collect();
        assert!(
            !changed.is_empty() && changed.iter().all(|k| (5..10).contains(k)),
            "{kind:?}: {changed:?}"
        );
    }
}

#[test]
fn g722_stays_rewritten_once_it_starts() {
    let s = spec(CodecKind::G722, 9, 20);
    let packets = tone_packets(s, 20);
    let out = overlaid(s, &packets, |k| k == 3);
    assert_eq!(out[..3], packets[..3]);
    assert!((3..20).all(|k| out[k].len() == packets[k].len()));
    assert!(
        out[10..] != packets[10..],
        "chorus's encoder keeps the far decoder's state"
    );
}

#[test]
fn other_payload_types_and_padding() {
    let s = spec(CodecKind::Opus, 111, 20);
    let mut o = Overlay::new(&s).unwrap();
    let mut add = |_: u32, pcm: &mut [f32]| pcm.len();
    // A telephone-event packet passes untouched.
    let mut ev = [0u8; 16];
    write_header(&mut ev, 101, 1, 1, 1).unwrap();
    let before = ev;
    assert_eq!(o.apply(&mut ev, 16, &mut add), 16);
    assert_eq!(ev, before);
    // A padded Opus packet loses its padding with its old payload.
    let mut p = tone_packets(s, 1).remove(0);
    p[0] |= 0x20;
    p.extend_from_slice(&[0, 0, 3]);
    let mut buf = vec![0u8; 2048];
    buf[..p.len()].copy_from_slice(&p);
    let n = o.apply(&mut buf, p.len(), &mut add);
    let v = RtpView::parse(&buf[..n]).unwrap();
    assert_eq!(buf[0] & 0x20, 0);
    assert!(!v.payload().is_empty());
}

proptest! {
    /// Whatever a sender put in the packet, the overlay neither panics
    /// nor writes past the buffer.
    #[test]
    fn any_packet_is_rewritten_or_left(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        kind in prop_oneof![Just(CodecKind::Pcmu), Just(CodecKind::G722), Just(CodecKind::Opus)],
        room in 0usize..64,
        typed: bool,
    ) {
        let s = spec(kind, 0, 20);
        let mut o = Overlay::new(&s).unwrap();
        let mut buf = bytes.clone();
        if typed && buf.len() >= 2 {
            // A version-2 header of the overlay's type: the payload is decoded.
            buf[0] = 0x80 | (buf[0] & 0x3f);
            buf[1] &= 0x80;
        }
        let len = buf.len();
        buf.resize(len + room, 0);
        let n = o.apply(&mut buf, len, &mut |_, pcm| pcm.len());
        prop_assert!(n <= buf.len());
    }
}
