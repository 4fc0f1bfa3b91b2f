//! One transcoded packet, each way between a PCMU phone and an Opus
//! endpoint: the transcoder's CPU per packet, without the syscalls. Also
//! prints how late a tone's onset comes out (the codecs' own delay). And
//! one packet with an application's audio mixed in, in each codec.

use chorus::media::codec::{CodecKind, CodecSpec, Decoder, Encoder};
use chorus::media::transcode::{Transcoder, MAX_PACKET};
use chorus::wire::rtp::{write_header, RtpView};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn spec(kind: CodecKind, pt: u8) -> CodecSpec {
    CodecSpec::new(kind, pt, if kind == CodecKind::Opus { 2 } else { 1 }, 20, None, None).unwrap()
}

/// `count` packets of `s`: silence for the first `silent`, then a 1 kHz tone.
fn packets(s: CodecSpec, count: usize, silent: usize) -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(&s).unwrap();
    let n = s.frame_samples();
    (0..count)
        .map(|k| {
            let pcm: Vec<f32> = (0..n)
                .map(|i| {
                    let t = (k * n + i) as f32 / s.rate as f32;
                    if k < silent {
                        0.0
                    } else {
                        0.5 * (2.0 * std::f32::consts::PI * 1000.0 * t).sin()
                    }
                })
                .collect();
            let mut p = vec![0u8; MAX_PACKET];
            let h = write_header(&mut p, s.pt, k as u16, k as u32 * s.frame_ts(), 5).unwrap();
            let len = enc.encode(&pcm, &mut p[h..]);
            p.truncate(h + len);
            p
        })
        .collect()
}

/// Milliseconds from the tone's onset in the input to the first loud sample out.
fn onset_delay_ms(from: CodecSpec, to: CodecSpec) -> f64 {
    let mut t = Transcoder::new(from, to, 9).unwrap();
    let mut out = [0u8; MAX_PACKET];
    let mut dec = Decoder::new(&to).unwrap();
    let (mut pcm, mut frame) = (Vec::new(), Vec::new());
    for p in packets(from, 50, 25) {
        t.push(
            &p,
            &mut out,
            &mut |b, n| {
                let v = RtpView::parse(&b[..n]).unwrap();
                let got = dec.decode(Some(v.payload()), to.frame_samples(), &mut frame);
                pcm.extend_from_slice(&frame[..got]);
            },
            &mut |_, _| 0,
        );
    }
    let onset = pcm.iter().position(|x| x.abs() > 0.1).unwrap_or(pcm.len());
    (onset as f64 - 25.0 * to.frame_samples() as f64) * 1000.0 / to.rate as f64
}

fn bench(c: &mut Criterion) {
    let (pcmu, opus) = (spec(CodecKind::Pcmu, 0), spec(CodecKind::Opus, 96));
    for (name, from, to) in [("pcmu_to_opus", pcmu, opus), ("opus_to_pcmu", opus, pcmu)] {
        println!(
            "transcode/{name}: tone onset {:.1} ms later at the output",
            onset_delay_ms(from, to)
        );
        let input = packets(from, 50, 0);
        let mut t = Transcoder::new(from, to, 9).unwrap();
        let mut out = [0u8; MAX_PACKET];
        let mut k = 0usize;
        c.bench_function(&format!("transcode/{name}"), |b| {
            b.iter(|| {
                // Sequence and timestamp run on, as a live stream's do.
                let mut p = input[k % input.len()].clone();
                write_header(&mut p, from.pt, k as u16, k as u32 * from.frame_ts(), 5).unwrap();
                k += 1;
                t.push(
                    black_box(&p),
                    &mut out,
                    &mut |b, n| {
                        black_box(&b[..n]);
                    },
                    &mut |_, _| 0,
                );
            })
        });
    }
}

/// Audio mixed into packets relayed to a leg (`media::overlay`), per
/// packet: while an application plays (decode, add, encode) and while it
/// is silent (Opus still decodes; G.722, once started, still encodes).
fn overlay(c: &mut Criterion) {
    use chorus::media::overlay::Overlay;
    for (name, s) in [
        ("pcmu", spec(CodecKind::Pcmu, 0)),
        ("g722", spec(CodecKind::G722, 9)),
        ("opus", spec(CodecKind::Opus, 96)),
    ] {
        let input = packets(s, 50, 0);
        for playing in [true, false] {
            let mut o = Overlay::new(&s).unwrap();
            let mut buf = vec![0u8; 2048];
            let mut k = 0usize;
            let label = if playing { "playing" } else { "silent" };
            c.bench_function(&format!("overlay/{name}_{label}"), |b| {
                b.iter(|| {
                    let p = &input[k % input.len()];
                    k += 1;
                    buf[..p.len()].copy_from_slice(p);
                    let n = o.apply(&mut buf, p.len(), &mut |_, pcm| {
                        if !playing {
                            return 0;
                        }
                        for x in pcm.iter_mut() {
                            *x += 0.1;
                        }
                        pcm.len()
                    });
                    black_box(&buf[..n]);
                })
            });
        }
    }
}

criterion_group!(benches, bench, overlay);
criterion_main!(benches);
