//! Who is decoded: plain silence, talkers waiting for a slot, shedding.

use super::*;

/// Syllables as a voice makes them (pitch and loudness change, short
/// pauses), which a VAD calls voice; 0 before `from` tick.
fn voice(k: u32, from: u32, rate: u32, n: usize) -> Vec<f32> {
    let on = k >= from && (k - from) % 15 < 10;
    let pitch = 120.0 + 30.0 * ((k.saturating_sub(from) / 15) % 4) as f32;
    (0..n)
        .map(|j| {
            let t = (k as usize * n + j) as f32 / rate as f32;
            let v: f32 = (1..6)
                .map(|h| 0.08 / h as f32 * (2.0 * std::f32::consts::PI * pitch * h as f32 * t).sin())
                .sum();
            if on {
                v
            } else {
                0.0
            }
        })
        .collect()
}

/// Desk phones: everyone sends every 20 ms, silence included, without
/// audio levels. Listeners are cleared by the estimate (not decoded for the
/// mix), speakers are mixed, and one who starts talking late is picked up
/// within 100 ms.
#[test]
fn plain_silence_is_not_decoded_and_a_new_speaker_is_picked_up_at_once() {
    for codec in [PCMU, OPUS] {
        let t0 = Instant::now();
        let s = spec(codec);
        let mut conf = Conference::new(SpeakerConfig::default());
        let n = 20u32;
        for i in 0..n {
            conf.join(i, s, 100 + i).unwrap();
        }
        let mut enc: Vec<Encoder> = (0..n).map(|_| Encoder::new(&s).unwrap()).collect();
        // Participant 0 talks from the start, participant 1 from tick 100.
        let (late_start, ticks) = (100u32, 200u32);
        let mut started_at = None;
        for k in 0..ticks {
            let now = t0 + Duration::from_millis(20 * u64::from(k));
            for i in 0..n {
                let pcm = match i {
                    0 => voice(k, 0, s.rate, s.frame_samples()),
                    1 => voice(k, late_start, s.rate, s.frame_samples()),
                    _ => vec![0.0; s.frame_samples()],
                };
                let mut pkt = [0u8; 12 + MAX_PAYLOAD];
                let len = enc[i as usize].encode(&pcm, &mut pkt[12..]);
                write_header(&mut pkt, s.pt, k as u16, k * s.frame_ts(), 500 + i);
                conf.handle_rtp(now, i, &pkt[..12 + len]);
            }
            conf.tick(now + Duration::from_millis(1), 0, &mut |_, _, _| {});
            if started_at.is_none() && conf.events.contains(&ConfEvent::StartedSpeaking { participant: 1 }) {
                started_at = Some(k);
            }
        }
        let picked_up = started_at.expect("the late speaker starts speaking") - late_start;
        assert!(picked_up <= 5, "{}: picked up after {picked_up} ticks", s.name());
        let r = conf.report(t0);
        for p in &r[2..] {
            assert!(!p.speaking, "{}: {p:?}", s.name());
            // All but the rotation's forced decodes (one in `ROTATION`).
            assert!(
                p.unmixed_packets_estimated >= 200 - 200 / estimate::ROTATION - 1,
                "{}: listener {} estimated {} of 200",
                s.name(),
                p.id,
                p.unmixed_packets_estimated
            );
        }
        assert!(r[0].mixed && r[1].mixed, "{}: {:?}", s.name(), &r[..2]);
    }
}

/// `n` Opus participants all talking in syllables, out of step, in
/// virtual time.
struct Talkers {
    t0: Instant,
    spec: CodecSpec,
    conf: Conference,
    enc: Vec<Encoder>,
}

impl Talkers {
    fn new(n: u32) -> Talkers {
        let spec = spec(OPUS);
        let mut conf = Conference::new(SpeakerConfig::default());
        for i in 0..n {
            conf.join(i, spec, 10 + i).unwrap();
        }
        let enc = (0..n).map(|_| Encoder::new(&spec).unwrap()).collect();
        Talkers {
            t0: Instant::now(),
            spec,
            conf,
            enc,
        }
    }

    /// Tick `k`: everyone's packet, then the conference's tick.
    fn step(&mut self, k: u32) {
        let (s, now) = (self.spec, self.t0 + Duration::from_millis(20 * u64::from(k)));
        for (i, enc) in self.enc.iter_mut().enumerate() {
            let i = i as u32;
            let pcm = voice(k + 3 * i, 0, s.rate, s.frame_samples());
            let mut pkt = [0u8; 12 + MAX_PAYLOAD];
            let len = enc.encode(&pcm, &mut pkt[12..]);
            write_header(&mut pkt, s.pt, k as u16, k * s.frame_ts(), 900 + i);
            self.conf.handle_rtp(now, i, &pkt[..12 + len]);
        }
        self.conf.tick(now + Duration::from_millis(1), 0, &mut |_, _, _| {});
    }
}

/// Eight Opus talkers, three mixed: the five waiting for a slot keep
/// speaking (their level is measured one tick in four and stands in
/// between), and most of their voiced packets are not decoded.
#[test]
fn talkers_waiting_for_a_slot_are_measured_one_tick_in_four() {
    let mut t = Talkers::new(8);
    for k in 0..200 {
        t.step(k);
    }
    let (conf, t0) = (&t.conf, t.t0);
    let r = conf.report(t0);
    let waiting: Vec<_> = r.iter().filter(|p| !p.mixed).collect();
    assert_eq!(waiting.len(), 5, "{r:?}");
    for p in waiting {
        assert!(p.speaking, "{p:?}");
        // Voiced two thirds of the time, and three of four voiced packets
        // are stood in for while waiting (74-104 here; 27-35 when every
        // voiced packet was decoded, only the pauses estimated).
        assert!(
            p.unmixed_packets_estimated >= 70,
            "participant {}: {} of 200 estimated",
            p.id,
            p.unmixed_packets_estimated
        );
    }
}

/// Degraded for overload, a conference where everyone talks decodes only
/// its one mixed speaker: Opus voices count at a fixed level undecoded,
/// and the rotation's forced decodes stop. Then it recovers.
#[test]
fn shedding_decodes_only_the_mixed_speaker() {
    let mut t = Talkers::new(8);
    for k in 0..50 {
        t.step(k);
    }
    let t0 = t.t0;
    let estimated = |c: &Conference| -> u64 { c.report(t0).iter().map(|p| p.unmixed_packets_estimated).sum() };
    t.conf.degrade(true);
    let before = estimated(&t.conf);
    for k in 50..150 {
        t.step(k);
    }
    let r = t.conf.report(t0);
    assert_eq!(r.iter().filter(|p| p.mixed).count(), 1);
    // 7 not mixed for 100 ticks, none decoded (a few ticks lost to pauses).
    let shed = estimated(&t.conf) - before;
    assert!(shed >= 600, "{shed} of 700 packets shed");
    t.conf.degrade(false);
    for k in 150..200 {
        t.step(k);
    }
    assert_eq!(t.conf.report(t0).iter().filter(|p| p.mixed).count(), 3);
}
