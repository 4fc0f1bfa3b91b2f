//! The conference mixer's 20 ms tick with 10, 100 and 1,000 Opus
//! participants, 3 of them speaking. Listeners either send nothing (DTX,
//! muted phones), or plain silence packets (cleared by the Opus VAD flag,
//! see `mixer::estimate`), or silence marked with RFC 6464 levels.
//! One iteration = every sender's packet for the tick + the tick itself.

use chorus::media::codec::{negotiate, Encoder, MAX_PAYLOAD};
use chorus::media::conference::Conference;
use chorus::media::mixer::speakers::SpeakerConfig;
use chorus::sdp::Sdp;
use chorus::wire::rtp::write_header;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
    let spec = negotiate(&Sdp::parse(sdp).unwrap().media[0]).unwrap();
    let mut enc = Encoder::new(&spec).unwrap();
    let frame = |f: f32, k: usize| -> Vec<f32> {
        (0..960)
            .map(|j| 0.3 * (2.0 * std::f32::consts::PI * f * (k * 960 + j) as f32 / 48000.0).sin())
            .collect()
    };
    // 50 frames of each speaker's tone and of silence, encoded once.
    let encode = |enc: &mut Encoder, pcm: &[f32]| {
        let mut p = [0u8; MAX_PAYLOAD];
        let n = enc.encode(pcm, &mut p);
        p[..n].to_vec()
    };
    let tones: Vec<Vec<Vec<u8>>> = [300.0, 500.0, 700.0]
        .iter()
        .map(|&f| (0..50).map(|k| encode(&mut enc, &frame(f, k))).collect())
        .collect();
    let silence: Vec<Vec<u8>> = (0..50).map(|_| encode(&mut enc, &[0.0; 960])).collect();
    let mut group = c.benchmark_group("mixer_tick");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for n in [10usize, 100, 1000] {
        for (label, listeners_send, marked) in [
            ("listeners_dtx", false, false),
            ("listeners_send_silence", true, false),
            ("listeners_send_silence_marked_rfc6464", true, true),
        ] {
            let mut conf = Conference::new(SpeakerConfig::default());
            for i in 0..n {
                conf.join(i as u32, spec, i as u32 + 1).unwrap();
            }
            let t0 = Instant::now();
            let mut k = 0u32;
            let mut pkt = [0u8; 20 + MAX_PAYLOAD];
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, &n| {
                b.iter(|| {
                    let now = t0 + Duration::from_millis(20 * k as u64);
                    let senders = if listeners_send { n } else { 3 };
                    #[allow(clippy::needless_range_loop)] // i is also the participant id
                    for i in 0..senders {
                        let payload = if i < 3 {
                            &tones[i][k as usize % 50]
                        } else {
                            &silence[k as usize % 50]
                        };
                        write_header(&mut pkt, spec.pt, k as u16, k * 960, 100 + i as u32);
                        let mut at = 12;
                        if marked {
                            // RFC 6464 level: 20 -dBov for speakers, 127 (silence) for listeners.
                            pkt[0] |= 0x10;
                            let level = if i < 3 { 20 } else { 127 };
                            pkt[12..20].copy_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, level, 0, 0]);
                            at = 20;
                        }
                        pkt[at..at + payload.len()].copy_from_slice(payload);
                        conf.handle_rtp(now, i as u32, &pkt[..at + payload.len()]);
                    }
                    let mut sent = 0usize;
                    conf.tick(now + Duration::from_millis(1), 0, &mut |_, _, bytes| {
                        sent += bytes.len()
                    });
                    k += 1;
                    sent
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
