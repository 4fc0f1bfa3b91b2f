use super::*;
use crate::media::codec::negotiate;
use crate::media::mixer::tests::tone_level;
use crate::sdp::Sdp;
use std::collections::HashMap;
use std::time::Duration;

mod speakers;

fn spec(m: &str) -> CodecSpec {
    let s = format!("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{m}");
    negotiate(&Sdp::parse(&s).unwrap().media[0]).unwrap()
}

const PCMU: &str = "m=audio 1 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const OPUS: &str = "m=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
const G722: &str = "m=audio 1 RTP/AVP 9\r\n";

/// Runs a conference in virtual time: participant i sends a tone at
/// `freqs[i]` (0 = silence) with codec `codecs[i]`; returns what each
/// one heard in the last second, decoded, at the codec's rate.
fn run(codecs: &[&str], freqs: &[f32], seconds: u32, mute: Option<u32>) -> (Vec<Vec<f32>>, Conference, Vec<CodecSpec>) {
    let t0 = Instant::now();
    let mut conf = Conference::new(SpeakerConfig::default());
    let specs: Vec<CodecSpec> = codecs.iter().map(|c| spec(c)).collect();
    let mut encoders: Vec<Encoder> = specs.iter().map(|s| Encoder::new(s).unwrap()).collect();
    let mut decoders: Vec<Decoder> = specs.iter().map(|s| Decoder::new(s).unwrap()).collect();
    for (i, s) in specs.iter().enumerate() {
        conf.join(i as u32, *s, 1000 + i as u32).unwrap();
    }
    if let Some(m) = mute {
        conf.control(
            m,
            Controls {
                muted: Some(true),
                ..Default::default()
            },
        );
    }
    let mut heard: Vec<Vec<f32>> = vec![Vec::new(); specs.len()];
    let ticks = seconds * 50;
    let mut last_seq: HashMap<u32, (u16, u32)> = HashMap::new();
    for k in 0..ticks {
        let now = t0 + Duration::from_millis(k as u64 * 20);
        for (i, s) in specs.iter().enumerate() {
            let n = s.frame_samples();
            let f = freqs[i];
            let pcm: Vec<f32> = (0..n)
                .map(|j| 0.3 * (2.0 * std::f32::consts::PI * f * (k as usize * n + j) as f32 / s.rate as f32).sin())
                .collect();
            let mut pkt = [0u8; 12 + MAX_PAYLOAD];
            let len = encoders[i].encode(&pcm, &mut pkt[12..]);
            write_header(&mut pkt, s.pt, k as u16, k * s.frame_ts(), 77 + i as u32);
            conf.handle_rtp(now, i as u32, &pkt[..12 + len]);
        }
        let mut out: Vec<(u32, Vec<u8>)> = Vec::new();
        conf.tick(now + Duration::from_millis(1), 0, &mut |id, rtcp, bytes| {
            if !rtcp {
                out.push((id, bytes.to_vec()))
            }
        });
        for (id, bytes) in out {
            let v = RtpView::parse(&bytes).unwrap();
            let s = &specs[id as usize];
            if let Some((seq, ts)) = last_seq.insert(id, (v.sequence(), v.timestamp())) {
                assert_eq!(v.sequence(), seq.wrapping_add(1), "sequence runs on");
                assert_eq!(v.timestamp(), ts.wrapping_add(s.frame_ts()), "timestamp runs on");
            }
            let mut pcm = Vec::new();
            decoders[id as usize].decode(Some(v.payload()), s.frame_samples(), &mut pcm);
            if k >= ticks - 50 {
                heard[id as usize].extend(pcm);
            }
        }
    }
    (heard, conf, specs)
}

fn lvl(heard: &[f32], spec: &CodecSpec, f: f32) -> f32 {
    tone_level(heard, spec.rate as f32, f)
}

#[test]
fn everyone_hears_the_others_and_nobody_hears_themselves() {
    let (heard, conf, specs) = run(&[PCMU, PCMU, PCMU, PCMU], &[440.0, 1000.0, 0.0, 0.0], 3, None);
    for i in [2, 3] {
        assert!(lvl(&heard[i], &specs[i], 440.0) > 0.1, "listener {i} hears A");
        assert!(lvl(&heard[i], &specs[i], 1000.0) > 0.1, "listener {i} hears B");
    }
    assert!(
        lvl(&heard[0], &specs[0], 440.0) < 0.01 && lvl(&heard[0], &specs[0], 1000.0) > 0.1,
        "A hears only B"
    );
    assert!(
        lvl(&heard[1], &specs[1], 1000.0) < 0.01 && lvl(&heard[1], &specs[1], 440.0) > 0.1,
        "B hears only A"
    );
    // Two mix-minus plus one shared mix, all PCMU: three encodes for four listeners.
    assert_eq!(conf.last_encodes, 3);
}

#[test]
fn mixed_codecs_share_nothing_but_the_mix() {
    let (heard, conf, specs) = run(&[OPUS, G722, PCMU, OPUS], &[440.0, 1000.0, 0.0, 0.0], 3, None);
    for i in [2, 3] {
        assert!(
            lvl(&heard[i], &specs[i], 440.0) > 0.1 && lvl(&heard[i], &specs[i], 1000.0) > 0.1,
            "listener {i}"
        );
    }
    assert!(lvl(&heard[0], &specs[0], 440.0) < 0.02 && lvl(&heard[0], &specs[0], 1000.0) > 0.1);
    assert!(lvl(&heard[1], &specs[1], 1000.0) < 0.02 && lvl(&heard[1], &specs[1], 440.0) > 0.1);
    // minus(A) in Opus, minus(B) in G.722, shared in PCMU and Opus.
    assert_eq!(conf.last_encodes, 4);
}

#[test]
fn a_muted_participant_is_not_heard() {
    let (heard, _, specs) = run(&[PCMU, PCMU, PCMU], &[440.0, 1000.0, 0.0], 2, Some(0));
    assert!(lvl(&heard[2], &specs[2], 440.0) < 0.01, "muted A is not heard");
    assert!(lvl(&heard[2], &specs[2], 1000.0) > 0.1);
}

/// A sends a tone through 10% loss with swapped neighbours; B listens.
/// Every 20 ms frame B hears carries the tone: no gaps.
/// `floor`: the lowest tone level a frame may have (the tone is 0.3; a
/// silent gap measures below 0.001).
fn lossy(codec: &str, floor: f32) {
    let t0 = Instant::now();
    let mut conf = Conference::new(SpeakerConfig::default());
    let s = spec(codec);
    conf.join(0, s, 1).unwrap();
    conf.join(1, s, 2).unwrap();
    let mut enc = Encoder::new(&s).unwrap();
    let mut dec = Decoder::new(&s).unwrap();
    let n = s.frame_samples();
    let mut packets = Vec::new();
    for k in 0..150u32 {
        let pcm: Vec<f32> = (0..n)
            .map(|j| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * (k as usize * n + j) as f32 / s.rate as f32).sin())
            .collect();
        let mut pkt = vec![0u8; 12 + MAX_PAYLOAD];
        let len = enc.encode(&pcm, &mut pkt[12..]);
        write_header(&mut pkt, s.pt, k as u16, k * s.frame_ts(), 5);
        pkt.truncate(12 + len);
        packets.push((k, pkt));
    }
    // Every 10th packet lost; pairs swapped every 7.
    packets.retain(|(k, _)| k % 10 != 9);
    for i in (3..packets.len() - 1).step_by(7) {
        packets.swap(i, i + 1);
    }
    let mut frames: Vec<f32> = Vec::new();
    for (i, (_, pkt)) in packets.iter().enumerate() {
        let now = t0 + Duration::from_millis(20 * i as u64);
        conf.handle_rtp(now, 0, pkt);
        conf.tick(now + Duration::from_millis(1), 0, &mut |id, rtcp, bytes| {
            if id == 1 && !rtcp {
                let v = RtpView::parse(bytes).unwrap();
                let mut pcm = Vec::new();
                dec.decode(Some(v.payload()), n, &mut pcm);
                frames.push(tone_level(&pcm, s.rate as f32, 440.0));
            }
        });
    }
    let gaps: Vec<usize> = frames
        .iter()
        .enumerate()
        .skip(10)
        .filter(|(_, l)| **l < floor)
        .map(|(i, _)| i)
        .collect();
    assert!(gaps.is_empty(), "{codec}: silent frames at {gaps:?}: {frames:?}");
}

#[test]
fn loss_and_reordering_leave_no_gaps_pcmu() {
    // Faded repeats of the last frame: never below a third of the level.
    lossy(PCMU, 0.1);
}

#[test]
fn loss_and_reordering_leave_no_gaps_opus() {
    // Opus concealment dips (to about -20 dB on this pure tone) but never
    // drops out.
    lossy(OPUS, 0.02);
}

/// An RTP packet carrying an RFC 6464 audio level (extension id 1).
fn with_level(pt: u8, seq: u16, ts: u32, ssrc: u32, level: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 12];
    write_header(&mut b, pt, seq, ts, ssrc);
    b[0] |= 0x10;
    b.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, level, 0, 0]);
    b.extend_from_slice(payload);
    b
}

#[test]
fn packets_marked_silent_are_not_decoded() {
    let t0 = Instant::now();
    let mut conf = Conference::new(SpeakerConfig::default());
    let s = spec("m=audio 1 RTP/AVP 0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n");
    assert_eq!(s.audio_level_id, Some(1));
    assert!(s
        .sdp_lines()
        .contains("a=extmap:1/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level"));
    conf.join(1, s, 1).unwrap();
    conf.join(2, s, 2).unwrap();
    let mut enc = Encoder::new(&s).unwrap();
    let mut heard = Vec::new();
    let mut dec = Decoder::new(&s).unwrap();
    for k in 0..100u32 {
        let now = t0 + Duration::from_millis(20 * k as u64);
        let tone: Vec<f32> = (0..160)
            .map(|j| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * (k * 160 + j) as f32 / 8000.0).sin())
            .collect();
        let mut payload = [0u8; 160];
        enc.encode(&tone, &mut payload);
        conf.handle_rtp(now, 1, &with_level(0, k as u16, k * 160, 11, 20, &payload));
        conf.handle_rtp(now, 2, &with_level(0, k as u16, k * 160, 22, 127, &[0xFF; 160]));
        conf.tick(now + Duration::from_millis(1), 0, &mut |id, rtcp, bytes| {
            if id == 2 && k >= 50 && !rtcp {
                let mut pcm = Vec::new();
                dec.decode(Some(RtpView::parse(bytes).unwrap().payload()), 160, &mut pcm);
                heard.extend(pcm);
            }
        });
    }
    let r = conf.report(t0);
    assert_eq!(
        r[1].silent_packets_skipped, 100,
        "the silent listener's packets are skipped"
    );
    assert_eq!(r[0].silent_packets_skipped, 0);
    assert!(tone_level(&heard, 8000.0, 440.0) > 0.1, "the speaker is still heard");
}

#[test]
fn sender_reports_go_out_and_reception_reports_give_rtt_and_loss() {
    let t0 = Instant::now();
    let ntp0: u64 = 3_900_000_000 << 32;
    let ntp_at = |ms: u64| ntp0 + (ms << 32) / 1000;
    let mut conf = Conference::new(SpeakerConfig::default());
    conf.join(1, spec(PCMU), 42).unwrap();
    let mut reports = Vec::new();
    for k in 0..400u64 {
        let now = t0 + Duration::from_millis(20 * k);
        let mut pkt = [0u8; 172];
        write_header(&mut pkt, 0, k as u16 * 2, k as u32 * 320, 777); // every other packet lost
        conf.handle_rtp(now, 1, &pkt);
        conf.tick(now, ntp_at(20 * k), &mut |_, rtcp, bytes| {
            if rtcp {
                reports.push((20 * k, rtcp::read_reports(bytes).unwrap()));
            }
        });
    }
    assert!(
        (1..=3).contains(&reports.len()),
        "one report every 2.5-7.5 s over 8 s: {}",
        reports.len()
    );
    let (at_ms, sr) = &reports[0];
    assert_eq!(sr.sender_ssrc, 42);
    let ntp = sr.sr_ntp.unwrap();
    assert_eq!(ntp, ntp_at(*at_ms));
    let block = sr.blocks[0];
    assert_eq!(block.ssrc, 777);
    assert!(
        (120..=136).contains(&block.fraction_lost),
        "about half lost: {}",
        block.fraction_lost
    );
    // The participant answers 60 ms later, having held our SR for 10 ms.
    let mut rr = Vec::new();
    let ours = ReportBlock {
        ssrc: 42,
        fraction_lost: 13,
        cumulative_lost: 5,
        highest_seq: 100,
        jitter: 80,
        lsr: (ntp >> 16) as u32,
        dlsr: 655,
    };
    rtcp::write_report(&mut rr, 777, None, &[ours], "phone");
    conf.handle_rtcp(t0, ntp_at(at_ms + 60), 1, &rr);
    let r = &conf.report(t0)[0];
    let rtt = r.rtt_ms.unwrap();
    assert!((49.0..=51.0).contains(&rtt), "rtt {rtt}");
    assert_eq!(r.remote_cumulative_lost, Some(5));
    assert_eq!(r.remote_jitter_ms, Some(10.0));
}

#[test]
fn overload_mixes_one_speaker_then_recovers() {
    let (_, mut conf, _) = run(&[PCMU, PCMU, PCMU, PCMU], &[440.0, 700.0, 1000.0, 0.0], 1, None);
    let mixed = |c: &Conference| c.report(Instant::now()).iter().filter(|p| p.mixed).count();
    assert_eq!(mixed(&conf), 3);
    conf.degrade(true);
    let t = Instant::now();
    conf.tick(t, 0, &mut |_, _, _| {});
    assert_eq!(mixed(&conf), 1, "one speaker under overload");
    assert_eq!(conf.last_encodes, 2, "one minus mix and the shared mix");
    conf.degrade(false);
    conf.tick(t, 0, &mut |_, _, _| {});
    assert_eq!(mixed(&conf), 3);
}

#[test]
fn participants_with_different_ptimes_mix_and_packetize_correctly() {
    let codecs = [
        ("m=audio 1 RTP/AVP 0\r\na=ptime:10\r\n", 440.0),
        (
            "m=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=ptime:40\r\n",
            1000.0,
        ),
        ("m=audio 1 RTP/AVP 0\r\na=ptime:60\r\n", 0.0),
        ("m=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n", 0.0),
    ];
    let specs: Vec<CodecSpec> = codecs.iter().map(|(m, _)| spec(m)).collect();
    assert_eq!(specs.iter().map(|s| s.ptime_ms).collect::<Vec<_>>(), [10, 40, 60, 20]);
    let t0 = Instant::now();
    let mut conf = Conference::new(SpeakerConfig::default());
    let mut enc: Vec<Encoder> = specs.iter().map(|s| Encoder::new(s).unwrap()).collect();
    let mut dec: Vec<Decoder> = specs.iter().map(|s| Decoder::new(s).unwrap()).collect();
    for (i, s) in specs.iter().enumerate() {
        conf.join(i as u32, *s, 10 + i as u32).unwrap();
    }
    let mut heard: Vec<Vec<f32>> = vec![Vec::new(); 4];
    let mut last: Vec<Option<(u16, u32)>> = vec![None; 4];
    let mut sent = [0u32; 4];
    for ms in (0..3000u32).step_by(10) {
        let now = t0 + Duration::from_millis(ms as u64);
        for (i, s) in specs.iter().enumerate() {
            if ms % s.ptime_ms != 0 {
                continue;
            }
            let n = s.frame_samples();
            let k = sent[i] as usize;
            let f = codecs[i].1;
            let pcm: Vec<f32> = (0..n)
                .map(|j| 0.3 * (2.0 * std::f32::consts::PI * f * (k * n + j) as f32 / s.rate as f32).sin())
                .collect();
            let mut pkt = vec![0u8; 12 + MAX_PAYLOAD];
            let len = enc[i].encode(&pcm, &mut pkt[12..]);
            write_header(&mut pkt, s.pt, k as u16, k as u32 * s.frame_ts(), 50 + i as u32);
            conf.handle_rtp(now, i as u32, &pkt[..12 + len]);
            sent[i] += 1;
        }
        if ms % 20 == 10 {
            conf.tick(now, 0, &mut |id, rtcp, bytes| {
                if rtcp {
                    return;
                }
                let i = id as usize;
                let v = RtpView::parse(bytes).unwrap();
                if let Some((seq, ts)) = last[i] {
                    assert_eq!(v.sequence(), seq.wrapping_add(1));
                    assert_eq!(v.timestamp(), ts.wrapping_add(specs[i].frame_ts()), "participant {i}");
                }
                last[i] = Some((v.sequence(), v.timestamp()));
                let mut pcm = Vec::new();
                dec[i].decode(Some(v.payload()), specs[i].frame_samples(), &mut pcm);
                assert_eq!(
                    pcm.len(),
                    specs[i].frame_samples(),
                    "a whole {} ms frame",
                    specs[i].ptime_ms
                );
                if ms >= 2000 {
                    heard[i].extend(pcm);
                }
            });
        }
    }
    let lvl = |i: usize, f: f32| tone_level(&heard[i], specs[i].rate as f32, f);
    assert!(
        lvl(0, 440.0) < 0.02 && lvl(0, 1000.0) > 0.1,
        "A: {} {}",
        lvl(0, 440.0),
        lvl(0, 1000.0)
    );
    assert!(
        lvl(1, 1000.0) < 0.02 && lvl(1, 440.0) > 0.1,
        "B: {} {}",
        lvl(1, 1000.0),
        lvl(1, 440.0)
    );
    for i in [2, 3] {
        assert!(
            lvl(i, 440.0) > 0.1 && lvl(i, 1000.0) > 0.1,
            "listener {i}: {} {}",
            lvl(i, 440.0),
            lvl(i, 1000.0)
        );
    }
}

#[test]
fn a_wideband_mix_rate_works_for_g711_and_g722() {
    let t0 = Instant::now();
    let mut conf = Conference::with_rate(SpeakerConfig::default(), 16000);
    let specs = [spec(PCMU), spec(G722), spec(PCMU)];
    for (i, s) in specs.iter().enumerate() {
        conf.join(i as u32, *s, 5 + i as u32).unwrap();
    }
    let mut enc: Vec<Encoder> = specs.iter().map(|s| Encoder::new(s).unwrap()).collect();
    let mut dec = Decoder::new(&specs[2]).unwrap();
    let mut heard = Vec::new();
    for k in 0..100u32 {
        let now = t0 + Duration::from_millis(20 * k as u64);
        for (i, (s, f)) in specs.iter().zip([440.0f32, 1000.0]).enumerate() {
            let n = s.frame_samples();
            let pcm: Vec<f32> = (0..n)
                .map(|j| 0.3 * (2.0 * std::f32::consts::PI * f * (k as usize * n + j) as f32 / s.rate as f32).sin())
                .collect();
            let mut pkt = vec![0u8; 12 + MAX_PAYLOAD];
            let len = enc[i].encode(&pcm, &mut pkt[12..]);
            write_header(&mut pkt, s.pt, k as u16, k * s.frame_ts(), 60 + i as u32);
            conf.handle_rtp(now, i as u32, &pkt[..12 + len]);
        }
        conf.tick(now + Duration::from_millis(1), 0, &mut |id, rtcp, bytes| {
            if id == 2 && !rtcp && k >= 50 {
                let mut pcm = Vec::new();
                dec.decode(Some(RtpView::parse(bytes).unwrap().payload()), 160, &mut pcm);
                heard.extend(pcm);
            }
        });
    }
    assert!(tone_level(&heard, 8000.0, 440.0) > 0.1 && tone_level(&heard, 8000.0, 1000.0) > 0.1);
}

#[test]
fn only_mixed_speakers_are_decoded_when_levels_are_in_the_header() {
    let t0 = Instant::now();
    let mut conf = Conference::new(SpeakerConfig::default());
    let s = spec("m=audio 1 RTP/AVP 0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n");
    let freqs = [300.0f32, 500.0, 700.0, 900.0, 1100.0, 0.0];
    for i in 0..freqs.len() {
        conf.join(i as u32, s, 1 + i as u32).unwrap();
    }
    let mut enc: Vec<Encoder> = freqs.iter().map(|_| Encoder::new(&s).unwrap()).collect();
    let mut dec = Decoder::new(&s).unwrap();
    let mut heard = Vec::new();
    for k in 0..100u32 {
        let now = t0 + Duration::from_millis(20 * k as u64);
        for (i, f) in freqs.iter().enumerate() {
            let pcm: Vec<f32> = (0..160)
                .map(|j| 0.3 * (2.0 * std::f32::consts::PI * f * (k * 160 + j) as f32 / 8000.0).sin())
                .collect();
            let mut payload = [0u8; 160];
            enc[i].encode(&pcm, &mut payload);
            // Five talkers at -20 dBov (the first three a little louder), one listener silent.
            let level = if *f == 0.0 {
                127
            } else if i < 3 {
                18
            } else {
                22
            };
            conf.handle_rtp(
                now,
                i as u32,
                &with_level(0, k as u16, k * 160, 40 + i as u32, level, &payload),
            );
        }
        conf.tick(now + Duration::from_millis(1), 0, &mut |id, rtcp, bytes| {
            if id == 5 && !rtcp && k >= 50 {
                let mut pcm = Vec::new();
                dec.decode(Some(RtpView::parse(bytes).unwrap().payload()), 160, &mut pcm);
                heard.extend(pcm);
            }
        });
    }
    let r = conf.report(t0);
    let mixed: Vec<u32> = r.iter().filter(|p| p.mixed).map(|p| p.id).collect();
    assert_eq!(mixed, [0, 1, 2]);
    for p in &r[3..5] {
        assert!(
            p.unmixed_packets_not_decoded >= 95,
            "talker {} not mixed, not decoded: {}",
            p.id,
            p.unmixed_packets_not_decoded
        );
    }
    for p in &r[..3] {
        assert!(p.unmixed_packets_not_decoded <= 5, "mixed talker {} decoded", p.id);
    }
    for f in [300.0, 500.0, 700.0] {
        assert!(tone_level(&heard, 8000.0, f) > 0.1, "the listener hears {f} Hz");
    }
    assert!(tone_level(&heard, 8000.0, 900.0) < 0.02);
}

#[test]
fn dtmf_is_an_event_not_audio() {
    let t0 = Instant::now();
    let mut conf = Conference::new(SpeakerConfig::default());
    conf.join(1, spec(PCMU), 5).unwrap();
    let mut pkt = [0u8; 16];
    write_header(&mut pkt, 101, 1, 8000, 9);
    pkt[12..16].copy_from_slice(&[5, 0x80 | 10, 0, 160]);
    conf.handle_rtp(t0, 1, &pkt);
    conf.handle_rtp(t0, 1, &pkt); // end packets are repeated
    assert_eq!(
        conf.events,
        [ConfEvent::Dtmf {
            participant: 1,
            digit: '5'
        }]
    );
}
#[test]
fn a_flood_of_dtmf_end_events_is_rate_limited() {
    let t0 = Instant::now();
    let mut conf = Conference::new(SpeakerConfig::default());
    conf.join(1, spec(PCMU), 5).unwrap();
    let mut pkt = [0u8; 16];
    // 1,000 distinct digits in one second, each with its own timestamp.
    for i in 0..1000u32 {
        write_header(&mut pkt, 101, i as u16, i * 160, 9);
        pkt[12..16].copy_from_slice(&[(i % 10) as u8, 0x80 | 10, 0, 160]);
        conf.handle_rtp(t0 + Duration::from_millis(u64::from(i)), 1, &pkt);
    }
    let n = conf.events.len();
    assert!((10..=13).contains(&n), "{n} events from a one-second flood");
}

#[test]
fn a_flood_of_reports_gives_one_sample_per_second() {
    let t0 = Instant::now();
    let mut conf = Conference::new(SpeakerConfig::default());
    conf.join(1, spec(PCMU), 42).unwrap();
    let block = rtcp::ReportBlock {
        ssrc: 42,
        fraction_lost: 10,
        ..Default::default()
    };
    let mut rr = Vec::new();
    rtcp::write_report(&mut rr, 7, None, &[block], "phone");
    for i in 0..1000u64 {
        conf.handle_rtcp(t0 + Duration::from_millis(i * 2), 0, 1, &rr);
    }
    assert_eq!(conf.reported_loss.len(), 2, "two seconds of reports, two samples");
    assert_eq!(conf.report(t0)[0].remote_fraction_lost, Some(10.0 / 256.0));
}

/// A speaker whose packets stop (a phone that hangs up without BYE, a
/// network gone) leaves the speaking state within the hangover.
#[test]
fn a_speaker_that_stops_sending_stops_speaking() {
    let t0 = Instant::now();
    for codec in [PCMU, OPUS] {
        let s = spec(codec);
        let mut conf = Conference::new(SpeakerConfig::default());
        conf.join(0, s, 1000).unwrap();
        conf.join(1, s, 1001).unwrap();
        let mut enc = Encoder::new(&s).unwrap();
        let n = s.frame_samples();
        for k in 0..150u32 {
            let now = t0 + Duration::from_millis(u64::from(k) * 20);
            if k < 50 {
                let pcm: Vec<f32> = (0..n)
                    .map(|j| {
                        0.3 * (2.0 * std::f32::consts::PI * 440.0 * (k as usize * n + j) as f32 / s.rate as f32).sin()
                    })
                    .collect();
                let mut pkt = [0u8; 12 + MAX_PAYLOAD];
                let len = enc.encode(&pcm, &mut pkt[12..]);
                write_header(&mut pkt, s.pt, k as u16, k * s.frame_ts(), 77);
                conf.handle_rtp(now, 0, &pkt[..12 + len]);
            }
            conf.tick(now + Duration::from_millis(1), 0, &mut |_, _, _| {});
        }
        let r = &conf.report(t0)[0];
        assert!(!r.speaking, "{}: {r:?}", s.name());
        assert!(conf.events.contains(&ConfEvent::StartedSpeaking { participant: 0 }));
        assert!(
            conf.events.contains(&ConfEvent::StoppedSpeaking { participant: 0 }),
            "{}: {:?}",
            s.name(),
            conf.events
        );
    }
}

/// In a 16 kHz mix Opus runs at 16 kHz inside chorus (no resampler);
/// participants still send and receive 48 kHz-clocked Opus and hear each
/// other without their own voice.
#[test]
fn opus_in_a_16k_mix_is_heard_without_a_resampler() {
    let t0 = Instant::now();
    let s = spec(OPUS);
    let mut conf = Conference::with_rate(SpeakerConfig::default(), 16000);
    for i in 0..3u32 {
        conf.join(i, s, 40 + i).unwrap();
    }
    assert_eq!(conf.participants[0].spec.rate, 16000);
    let freqs = [440.0f32, 1000.0, 0.0];
    let mut enc: Vec<Encoder> = (0..3).map(|_| Encoder::new(&s).unwrap()).collect();
    let mut dec: Vec<Decoder> = (0..3).map(|_| Decoder::new(&s).unwrap()).collect();
    let mut heard = vec![Vec::new(); 3];
    for k in 0..100u32 {
        let now = t0 + Duration::from_millis(20 * u64::from(k));
        for i in 0..3 {
            let pcm: Vec<f32> = (0..960)
                .map(|j| 0.3 * (2.0 * std::f32::consts::PI * freqs[i] * (k as usize * 960 + j) as f32 / 48000.0).sin())
                .collect();
            let mut pkt = [0u8; 12 + MAX_PAYLOAD];
            let len = enc[i].encode(&pcm, &mut pkt[12..]);
            write_header(&mut pkt, s.pt, k as u16, k * 960, 70 + i as u32);
            conf.handle_rtp(now, i as u32, &pkt[..12 + len]);
        }
        conf.tick(now + Duration::from_millis(1), 0, &mut |id, rtcp, bytes| {
            if !rtcp && k >= 50 {
                let mut pcm = Vec::new();
                dec[id as usize].decode(Some(RtpView::parse(bytes).unwrap().payload()), 960, &mut pcm);
                heard[id as usize].extend(pcm);
            }
        });
    }
    let lvl = |h: &[f32], f: f32| tone_level(h, 48000.0, f);
    assert!(
        lvl(&heard[2], 440.0) > 0.1 && lvl(&heard[2], 1000.0) > 0.1,
        "the listener hears both"
    );
    assert!(
        lvl(&heard[0], 440.0) < 0.02 && lvl(&heard[0], 1000.0) > 0.1,
        "A hears only B"
    );
}

/// Packets that arrive 3 ms past each 20 ms, ticks at 15 ms past: the
/// speaker's audio was due 7 ms (3 ms + the 5 ms target) before the tick.
/// Nobody speaking: no slack.
#[test]
fn slack_is_how_long_before_its_tick_the_main_voice_was_due() {
    let t0 = Instant::now();
    let s = spec(PCMU);
    for (freq, want) in [(440.0, Some(7.0)), (0.0, None)] {
        let mut conf = Conference::new(SpeakerConfig::default());
        let mut enc = Encoder::new(&s).unwrap();
        let mut silence = Encoder::new(&s).unwrap();
        conf.join(1, s, 1000).unwrap();
        conf.join(2, s, 1001).unwrap();
        let n = s.frame_samples();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        for k in 0..50u32 {
            let tone: Vec<f32> = (0..n)
                .map(|j| 0.3 * (2.0 * std::f32::consts::PI * freq * (k as usize * n + j) as f32 / 8000.0).sin())
                .collect();
            for (pid, e, pcm) in [(1, &mut enc, tone), (2, &mut silence, vec![0.0; n])] {
                let mut pkt = [0u8; 12 + MAX_PAYLOAD];
                let len = e.encode(&pcm, &mut pkt[12..]);
                write_header(&mut pkt, s.pt, k as u16, k * s.frame_ts(), 77 + pid);
                conf.handle_rtp(ms(20 * k as u64 + 3), pid, &pkt[..12 + len]);
            }
            conf.tick(ms(20 * k as u64 + 15), 0, &mut |_, _, _| {});
        }
        let slack = conf.slack(ms(20 * 49 + 15)).map(|d| d.as_secs_f64() * 1e3);
        match (slack, want) {
            (Some(got), Some(want)) => assert!((got - want).abs() < 0.5, "{got} ms"),
            (got, want) => assert_eq!(got, want),
        }
    }
}
