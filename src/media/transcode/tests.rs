use super::*;
use crate::media::codec::{CodecKind, Decoder, Encoder};
use crate::media::mixer::tests::tone_level;

fn spec(kind: CodecKind, pt: u8, ptime: u32, dtmf: Option<u8>) -> CodecSpec {
    CodecSpec::new(kind, pt, if kind == CodecKind::Opus { 2 } else { 1 }, ptime, dtmf, None).unwrap()
}

/// `count` packets of a 1 kHz tone in `s`, as a phone or browser sends them.
fn tone_packets(s: CodecSpec, count: usize) -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(&s).unwrap();
    let n = s.frame_samples();
    (0..count)
        .map(|k| {
            let pcm: Vec<f32> = (0..n)
                .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * (k * n + i) as f32 / s.rate as f32).sin())
                .collect();
            let mut p = vec![0u8; MAX_PACKET];
            let h = write_header(&mut p, s.pt, 1000 + k as u16, 5000 + k as u32 * s.frame_ts(), 77).unwrap();
            let len = enc.encode(&pcm, &mut p[h..]);
            p.truncate(h + len);
            p
        })
        .collect()
}

/// Pushes packets through; returns the output packets.
fn run(t: &mut Transcoder, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = [0u8; MAX_PACKET];
    let mut got = Vec::new();
    for p in packets {
        t.push(p, &mut out, &mut |b, n| got.push(b[..n].to_vec()), &mut |_, _| 0);
    }
    got
}

/// Decodes output packets of codec `s` into PCM at its rate.
fn decode(s: CodecSpec, packets: &[Vec<u8>]) -> Vec<f32> {
    let mut dec = Decoder::new(&s).unwrap();
    let mut pcm = Vec::new();
    let mut frame = Vec::new();
    for p in packets {
        let v = RtpView::parse(p).unwrap();
        let n = dec.decode(Some(v.payload()), s.frame_samples(), &mut frame);
        pcm.extend_from_slice(&frame[..n]);
    }
    pcm
}

fn assert_continuous(s: CodecSpec, packets: &[Vec<u8>]) {
    for w in packets.windows(2) {
        let (a, b) = (RtpView::parse(&w[0]).unwrap(), RtpView::parse(&w[1]).unwrap());
        assert_eq!(b.sequence(), a.sequence().wrapping_add(1));
        assert_eq!(
            b.timestamp(),
            a.timestamp().wrapping_add(s.frame_ts()),
            "{} ptime {}",
            s.name(),
            s.ptime_ms
        );
        assert_eq!((b.payload_type(), b.ssrc()), (s.pt, 9));
    }
}

#[test]
fn a_browser_s_opus_tone_reaches_a_phone_as_pcmu_and_back() {
    let (opus, pcmu) = (spec(CodecKind::Opus, 111, 20, None), spec(CodecKind::Pcmu, 0, 20, None));
    for (from, to) in [(opus, pcmu), (pcmu, opus)] {
        let mut t = Transcoder::new(from, to, 9).unwrap();
        let out = run(&mut t, &tone_packets(from, 50));
        assert!(
            (47..=50).contains(&out.len()),
            "{} -> {}: {} packets",
            from.name(),
            to.name(),
            out.len()
        );
        assert_continuous(to, &out);
        let pcm = decode(to, &out);
        let tail = &pcm[pcm.len() / 2..];
        assert!(
            tone_level(tail, to.rate as f32, 1000.0) > 0.3,
            "{} -> {}",
            from.name(),
            to.name()
        );
        assert!(
            tone_level(tail, to.rate as f32, 2500.0) < 0.05,
            "clean: {} -> {}",
            from.name(),
            to.name()
        );
    }
}

#[test]
fn g722_and_pcma_and_unequal_ptimes_are_carried() {
    let (g722, pcma30) = (spec(CodecKind::G722, 9, 20, None), spec(CodecKind::Pcma, 8, 30, None));
    let mut t = Transcoder::new(g722, pcma30, 9).unwrap();
    // 60 packets of 20 ms are 1.2 s: 40 packets of 30 ms, less the resampler's delay.
    let out = run(&mut t, &tone_packets(g722, 60));
    assert!((38..=40).contains(&out.len()), "{}", out.len());
    assert_continuous(pcma30, &out);
    let pcm = decode(pcma30, &out);
    assert!(tone_level(&pcm[pcm.len() / 2..], 8000.0, 1000.0) > 0.3);
}

#[test]
fn dtmf_crosses_with_its_clock_mapped() {
    let pcmu = spec(CodecKind::Pcmu, 0, 20, Some(101));
    let opus = spec(CodecKind::Opus, 111, 20, Some(110));
    let mut t = Transcoder::new(pcmu, opus, 9).unwrap();
    let mut packets = tone_packets(pcmu, 5);
    // Digit 5, 400 units (50 ms at 8 kHz), at the timestamp after the audio.
    let mut ev = vec![0u8; 16];
    write_header(&mut ev, 101, 1005, 5000 + 5 * 160, 77).unwrap();
    ev[1] |= 0x80;
    ev[12..16].copy_from_slice(&[5, 0x0a, 0x01, 0x90]);
    packets.push(ev);
    let out = run(&mut t, &packets);
    let last = RtpView::parse(out.last().unwrap()).unwrap();
    assert_eq!(last.payload_type(), 110);
    assert!(last.marker());
    assert_eq!(
        last.payload(),
        &[5, 0x0a, 0x09, 0x60],
        "duration 400 at 8 kHz is 2400 at 48 kHz"
    );
    let first = RtpView::parse(&out[0]).unwrap();
    assert_eq!(
        last.timestamp().wrapping_sub(first.timestamp()),
        5 * 960,
        "the event's time, on Opus's clock"
    );
}

#[test]
fn a_short_loss_is_concealed_and_time_runs_on() {
    let (opus, pcmu) = (spec(CodecKind::Opus, 111, 20, None), spec(CodecKind::Pcmu, 0, 20, None));
    let mut t = Transcoder::new(opus, pcmu, 9).unwrap();
    let mut packets = tone_packets(opus, 20);
    packets.remove(10);
    let out = run(&mut t, &packets);
    assert!(out.len() >= 18, "the lost frame is concealed: {}", out.len());
    assert_continuous(pcmu, &out);
}

#[test]
fn foreign_payload_types_and_junk_are_ignored() {
    let (opus, pcmu) = (spec(CodecKind::Opus, 111, 20, None), spec(CodecKind::Pcmu, 0, 20, None));
    let mut t = Transcoder::new(pcmu, opus, 9).unwrap();
    let mut cn = vec![0u8; 13];
    write_header(&mut cn, 13, 1, 160, 77).unwrap();
    let out = run(&mut t, &[cn, vec![0x80], Vec::new(), vec![0xff; 40]]);
    assert!(out.is_empty());
}

#[test]
fn an_application_is_mixed_in_before_the_encode() {
    let (from, to) = (spec(CodecKind::Pcmu, 0, 20, None), spec(CodecKind::Opus, 111, 20, None));
    let mut t = Transcoder::new(from, to, 5).unwrap();
    let (mut out, mut got, mut at) = ([0u8; MAX_PACKET], Vec::new(), 0usize);
    let mut rates = Vec::new();
    for p in tone_packets(from, 100) {
        let emit = &mut |b: &mut [u8; MAX_PACKET], n: usize| got.push(b[..n].to_vec());
        t.push(&p, &mut out, emit, &mut |rate, pcm| {
            rates.push(rate);
            for (i, x) in pcm.iter_mut().enumerate() {
                *x += 0.3 * (2.0 * std::f32::consts::PI * 440.0 * (at + i) as f32 / rate as f32).sin();
            }
            at += pcm.len();
            pcm.len()
        });
    }
    // libopus runs at the phone's rate: the application is resampled to it.
    assert!(rates.iter().all(|&r| r == 8000), "{rates:?}");
    let pcm = decode(to, &got);
    let tail = &pcm[pcm.len() / 4..];
    let (phone, app) = (tone_level(tail, 48000.0, 1000.0), tone_level(tail, 48000.0, 440.0));
    assert!(phone > 0.3 && app > 0.2, "phone {phone}, application {app}");
}
