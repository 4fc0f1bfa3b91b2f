//! End to end: a WAV file and a tone played into a conference are heard by
//! a participant (decoded, by spectrum); a loop plays until stopped; files
//! that cannot be played are refused with the reason. Played into a call
//! leg in each codec, transcoded or not, under the other party.

mod common;
use chorus::media::codec::{CodecKind, CodecSpec, Decoder};
use chorus::media::mixer::level::tone_level;
use chorus::wire::rtp::RtpView;
use common::*;
use serde_json::json;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn level(heard: &[(Instant, Vec<f32>)], from: Instant, to: Instant, freq: f32) -> f32 {
    let w = window(heard, from, to);
    assert!(!w.is_empty(), "nothing heard in the window");
    tone_level(&w, 8000.0, freq)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_and_a_tone_are_heard_in_a_conference() {
    let media = std::env::temp_dir().join(format!("chorus-media-{}", std::process::id()));
    std::fs::create_dir_all(&media).unwrap();
    // Half a second of 600 Hz, 16 kHz stereo.
    let n = 8000;
    let mut wav = chorus::media::wav::header(16000, 2, (n * 4) as u32).to_vec();
    for i in 0..n {
        let s = (9000.0 * (2.0 * std::f32::consts::PI * 600.0 * i as f32 / 16000.0).sin()) as i16;
        wav.extend_from_slice(&s.to_le_bytes());
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(media.join("hello.wav"), &wav).unwrap();
    std::fs::write(media.join("notes.txt"), b"not audio").unwrap();
    // An Ogg Opus file, made by opusenc (opus-tools) from a second of 800 Hz.
    let mut wav = chorus::media::wav::header(48000, 1, 96000).to_vec();
    for i in 0..48000 {
        let s = (9000.0 * (2.0 * std::f32::consts::PI * 800.0 * i as f32 / 48000.0).sin()) as i16;
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(media.join("tone.wav"), &wav).unwrap();
    let st = std::process::Command::new("opusenc")
        .args(["--quiet", "tone.wav", "tone.opus"])
        .current_dir(&media)
        .status()
        .expect("opusenc (opus-tools)");
    assert!(st.success());
    let d = Daemon::start(106, &["--media-dir", media.to_str().unwrap()]).await;
    let (s, r) = d.post("/v1/conferences", json!({"id": "hall"})).await;
    assert_eq!(s, 200, "{r}");
    let (phone, to, _) = d.join_pcmu("hall").await;
    // The phone sends silence (so chorus latches its address).
    let p = phone.try_clone().unwrap();
    std::thread::spawn(move || {
        for i in 0..150u16 {
            let _ = p.send_to(&rtp(0, i, i as u32 * 160, 5, &[0xff; 160]), to);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    for (body, status, says) in [
        (json!({"file": "../etc/passwd"}), 400, "plain file name"),
        (json!({"file": "nope.wav"}), 404, "nope.wav"),
        (json!({"file": "notes.txt"}), 400, "not a WAV or Ogg Opus"),
        (
            json!({"file": "hello.wav", "tone": {"frequency": 1, "ms": 1}}),
            400,
            "one of",
        ),
        (json!({"tone": {"frequency": 9000, "ms": 100}}), 400, "4000"),
    ] {
        let (s, r) = d.post("/v1/conferences/hall/playbacks", body.clone()).await;
        assert_eq!(s, status, "{body} -> {r}");
        assert!(r["error"]["message"].as_str().unwrap().contains(says), "{body} -> {r}");
    }
    let t0 = Instant::now();
    let (s, r) = d
        .post("/v1/conferences/hall/playbacks", json!({"file": "hello.wav"}))
        .await;
    assert_eq!(s, 200, "{r}");
    let heard = tokio::task::block_in_place(|| listen_pcmu(&phone, 1.0));
    let t = |ms| t0 + Duration::from_millis(ms);
    assert!(level(&heard, t(100), t(450), 600.0) > 0.05, "the file is heard");
    assert!(level(&heard, t(700), t(1000), 600.0) < 0.01, "and ends");
    let (_, conf) = d.get("/v1/conferences/hall").await;
    let finished = conf["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "playback_finished");
    assert!(finished, "{conf}");
    // The Ogg Opus file.
    let (s, r) = d
        .post("/v1/conferences/hall/playbacks", json!({"file": "tone.opus"}))
        .await;
    assert_eq!(s, 200, "{r}");
    let t0 = Instant::now();
    let heard = tokio::task::block_in_place(|| listen_pcmu(&phone, 1.4));
    let t = |ms| t0 + Duration::from_millis(ms);
    assert!(
        level(&heard, t(200), t(800), 800.0) > 0.05,
        "the Ogg Opus file is heard"
    );
    assert!(level(&heard, t(1200), t(1400), 800.0) < 0.01, "and ends");
    // A tone in a loop, until stopped.
    let (s, r) = d
        .post(
            "/v1/conferences/hall/playbacks",
            json!({"tone": {"frequency": 1000, "ms": 200}, "loop": true}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let id = r["playback_id"].as_str().unwrap().to_string();
    let t1 = Instant::now();
    let heard = tokio::task::block_in_place(|| listen_pcmu(&phone, 0.8));
    assert!(
        level(
            &heard,
            t1 + Duration::from_millis(200),
            t1 + Duration::from_millis(800),
            1000.0
        ) > 0.05,
        "the loop goes on past its 200 ms"
    );
    let (s, list) = d.get("/v1/conferences/hall/playbacks").await;
    assert_eq!((s, &list["playbacks"][0]["playback_id"]), (200, &json!(id)), "{list}");
    let (s, _) = d.delete(&format!("/v1/conferences/hall/playbacks/{id}")).await;
    assert_eq!(s, 200);
    let t2 = Instant::now();
    let heard = tokio::task::block_in_place(|| listen_pcmu(&phone, 0.6));
    assert!(
        level(
            &heard,
            t2 + Duration::from_millis(250),
            t2 + Duration::from_millis(600),
            1000.0
        ) < 0.01,
        "stopped"
    );
    let _ = std::fs::remove_dir_all(&media);
}

/// A tone played to one leg of a relayed G.711 call, twice, under the
/// other party; ng `play media` plays a file there and `stop media` stops it.
#[tokio::test(flavor = "multi_thread")]
async fn a_tone_and_a_file_are_played_to_a_call_leg() {
    let media = std::env::temp_dir().join(format!("chorus-media-call-{}", std::process::id()));
    std::fs::create_dir_all(&media).unwrap();
    let mut wav = chorus::media::wav::header(8000, 1, 8000 * 2 * 5).to_vec();
    for i in 0..8000 * 5 {
        let s = (9000.0 * (2.0 * std::f32::consts::PI * 900.0 * i as f32 / 8000.0).sin()) as i16;
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(media.join("hold.wav"), &wav).unwrap();
    let d = Daemon::start(111, &["--media-dir", media.to_str().unwrap()]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("pb", &a, &b).await;
    // Both phones send silence for 3 s, so packets flow both ways.
    let (sa, sb) = (a.rtp.try_clone().unwrap(), b.rtp.try_clone().unwrap());
    let talk = std::thread::spawn(move || {
        for i in 0..150u16 {
            let _ = sa.send_to(&rtp(0, i, i as u32 * 160, 51, &[0xff; 160]), to_a);
            let _ = sb.send_to(&rtp(0, i, i as u32 * 160, 52, &[0xff; 160]), to_b);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (ra, rb) = (a.rtp.try_clone().unwrap(), b.rtp.try_clone().unwrap());
    let heard_a = std::thread::spawn(move || listen_pcmu(&ra, 3.0));
    let heard_b = std::thread::spawn(move || listen_pcmu(&rb, 3.0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let (s, r) = d
        .post(
            "/v1/calls/pb/playbacks",
            json!({"from_tag": "tb", "tone": {"frequency": 600, "ms": 300}, "times": 2}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["times"], 2, "{r}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let t1 = Instant::now();
    let play = ngd(&[
        ("command", "play media"),
        ("call-id", "pb"),
        ("from-tag", "tb"),
        ("file", "hold.wav"),
    ]);
    let r = tokio::task::block_in_place(|| ng(&d, "p1", &play));
    assert_eq!(r.get("result").and_then(|v| v.as_str()), Some("ok"), "{r}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stop = ngd(&[("command", "stop media"), ("call-id", "pb")]);
    let r = tokio::task::block_in_place(|| ng(&d, "p2", &stop));
    assert_eq!(r.get("result").and_then(|v| v.as_str()), Some("ok"), "{r}");
    let t2 = Instant::now();
    talk.join().unwrap();
    let (heard_a, heard_b) = (heard_a.join().unwrap(), heard_b.join().unwrap());
    let ms = |t: Instant, n| t + Duration::from_millis(n);
    assert!(
        level(&heard_b, ms(t0, 350), ms(t0, 550), 600.0) > 0.05,
        "the second play of the tone"
    );
    assert!(
        level(&heard_b, ms(t0, 800), ms(t1, 0), 600.0) < 0.01,
        "twice, then no more"
    );
    assert!(level(&heard_b, ms(t1, 200), ms(t1, 600), 900.0) > 0.05, "the file");
    assert!(level(&heard_b, ms(t2, 250), ms(t2, 600), 900.0) < 0.01, "stopped");
    assert!(
        level(&heard_a, ms(t0, 0), ms(t2, 0), 600.0) < 0.01,
        "the other leg hears none of it"
    );
    assert!(
        level(&heard_a, ms(t0, 0), ms(t2, 0), 900.0) < 0.01,
        "the other leg hears none of it"
    );
    let _ = std::fs::remove_dir_all(&media);
}

/// An SDP with one audio line in `c`'s codec.
fn sdp_for(port: u16, c: CodecSpec) -> String {
    let rtpmap = match c.kind {
        CodecKind::Opus => format!("a=rtpmap:{} opus/48000/2\r\n", c.pt),
        _ => format!("a=rtpmap:{} {}/8000\r\n", c.pt, c.name()),
    };
    format!(
        "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP {}\r\n{rtpmap}a=ptime:20\r\n",
        c.pt
    )
}

/// A tone played to an Opus leg, a G.722 leg and a transcoded (Opus)
/// leg is heard there in the leg's codec, under the other party's 1 kHz.
#[tokio::test(flavor = "multi_thread")]
async fn a_tone_is_played_into_opus_g722_and_transcoded_legs() {
    let d = Daemon::start(112, &[]).await;
    let opus = CodecSpec::new(CodecKind::Opus, 96, 2, 20, None, None).unwrap();
    let g722 = CodecSpec::new(CodecKind::G722, 9, 1, 20, None, None).unwrap();
    let pcmu = CodecSpec::new(CodecKind::Pcmu, 0, 1, 20, None, None).unwrap();
    for (id, ca, cb) in [("opus", opus, opus), ("g722", g722, g722), ("transcoded", pcmu, opus)] {
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        let offer = sdp_for(a.local_addr().unwrap().port(), ca);
        let body = json!({"from_tag": "a", "sdp": offer, "options": {"transcode": ["opus"]}});
        let (s, r) = d.post(&format!("/v1/calls/{id}/offer"), body).await;
        assert_eq!(s, 200, "{r}");
        let answer = sdp_for(b.local_addr().unwrap().port(), cb);
        let body = json!({"from_tag": "a", "to_tag": "b", "sdp": answer});
        let (s, r) = d.post(&format!("/v1/calls/{id}/answer"), body).await;
        assert_eq!(s, 200, "{r}");
        let a_to = sdp_target(r["sdp"].as_str().unwrap());
        let packets = codec_tone(ca, 110, 0);
        let talk = std::thread::spawn(move || {
            for p in packets {
                let _ = a.send_to(&p, a_to);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        // While A talks (2.2 s): after that, the tone goes on alone.
        let listen = std::thread::spawn(move || {
            b.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let (start, mut got) = (Instant::now(), Vec::new());
            let mut buf = [0u8; 2048];
            while let (Ok((n, _)), true) = (b.recv_from(&mut buf), start.elapsed() < Duration::from_millis(2100)) {
                got.push((Instant::now(), buf[..n].to_vec()));
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        let t0 = Instant::now();
        let body = json!({"from_tag": "b", "tone": {"frequency": 600, "ms": 5000}});
        let (s, r) = d.post(&format!("/v1/calls/{id}/playbacks"), body).await;
        assert_eq!(s, 200, "{id}: {r}");
        talk.join().unwrap();
        let got = listen.join().unwrap();
        assert!(got.len() > 90, "{id}: {} packets", got.len());
        assert!(got.iter().all(|(_, p)| p[1] & 0x7f == cb.pt), "{id}: all in B's codec");
        // Decoded in order; before the play and from 300 ms after it.
        let mut dec = Decoder::new(&cb).unwrap();
        let (mut before, mut during, mut frame) = (Vec::new(), Vec::new(), Vec::new());
        for (at, p) in &got {
            let v = RtpView::parse(p).unwrap();
            let n = dec.decode(Some(v.payload()), cb.frame_samples(), &mut frame);
            if *at + Duration::from_millis(50) < t0 {
                before.extend_from_slice(&frame[..n]);
            } else if *at > t0 + Duration::from_millis(300) && *at < t0 + Duration::from_millis(1300) {
                during.extend_from_slice(&frame[..n]);
            }
        }
        let rate = cb.rate as f32;
        let before = &before[before.len() / 3..];
        assert!(tone_level(before, rate, 600.0) < 0.02, "{id}: no tone before the play");
        let (phone, played) = (tone_level(&during, rate, 1000.0), tone_level(&during, rate, 600.0));
        assert!(
            phone > 0.2 && played > 0.05,
            "{id}: the other party {phone}, the tone {played}"
        );
    }
}

/// A playback named for one participant (a whisper) is heard by that
/// participant alone; the others hear the conference as before.
#[tokio::test(flavor = "multi_thread")]
async fn a_whisper_is_heard_by_one_participant_alone() {
    let d = Daemon::start(113, &[]).await;
    let (s, r) = d.post("/v1/conferences", json!({"id": "desk"})).await;
    assert_eq!(s, 200, "{r}");
    let mut phones = Vec::new();
    for ssrc in [71u32, 72] {
        let (phone, to, pid) = d.join_pcmu("desk").await;
        let p = phone.try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..100u16 {
                let _ = p.send_to(&rtp(0, i, i as u32 * 160, ssrc, &[0xff; 160]), to);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        phones.push((phone, pid));
    }
    let body = json!({"tone": {"frequency": 700, "ms": 5000}, "participant": 999});
    let (s, r) = d.post("/v1/conferences/desk/playbacks", body).await;
    assert_eq!(s, 404, "{r}");
    let body = json!({"tone": {"frequency": 700, "ms": 5000}, "participant": phones[0].1});
    let (s, r) = d.post("/v1/conferences/desk/playbacks", body).await;
    assert_eq!(s, 200, "{r}");
    let t0 = Instant::now();
    let (a, b) = (phones[0].0.try_clone().unwrap(), phones[1].0.try_clone().unwrap());
    let heard_b = std::thread::spawn(move || listen_pcmu(&b, 1.2));
    let heard_a = tokio::task::block_in_place(|| listen_pcmu(&a, 1.2));
    let heard_b = heard_b.join().unwrap();
    let t = |ms| t0 + Duration::from_millis(ms);
    assert!(
        level(&heard_a, t(300), t(1100), 700.0) > 0.05,
        "the participant hears the whisper"
    );
    assert!(level(&heard_b, t(100), t(1100), 700.0) < 0.01, "the other does not");
    let (_, list) = d.get("/v1/conferences/desk/playbacks").await;
    assert_eq!(list["playbacks"][0]["target"]["participant"], phones[0].1, "{list}");
}

/// A leg relayed nothing (the other party put it on hold) hears what is
/// played as a stream of chorus's own, paced at 20 ms; when the other
/// party sends again, it hears that party with the music under it, and
/// chorus's own stream stops.
#[tokio::test(flavor = "multi_thread")]
async fn a_leg_on_hold_hears_music_on_a_stream_of_its_own() {
    let d = Daemon::start(114, &[]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, _) = d.call("hold", &a, &b).await;
    let body = json!({"from_tag": "tb", "tone": {"frequency": 500, "ms": 60000}, "loop": true});
    let (s, r) = d.post("/v1/calls/hold/playbacks", body).await;
    assert_eq!(s, 200, "{r}");
    let rb = b.rtp.try_clone().unwrap();
    rb.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let t0 = Instant::now();
    let listen = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while t0.elapsed() < Duration::from_millis(2000) {
            if let Ok((n, _)) = rb.recv_from(&mut buf) {
                got.push((Instant::now(), buf[..n].to_vec()));
            }
        }
        got
    });
    // A is silent for a second, then speaks (1 kHz) for a second.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let sa = a.rtp.try_clone().unwrap();
    let talk = std::thread::spawn(move || {
        for i in 0..50u16 {
            let _ = sa.send_to(&rtp(0, i, i as u32 * 160, 0xA, &pcmu(1000.0, i as usize * 160)), to_a);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    talk.join().unwrap();
    let got = listen.join().unwrap();
    let ssrc = |p: &[u8]| u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
    let held: Vec<&Vec<u8>> = got
        .iter()
        .filter(|(at, _)| *at < t0 + Duration::from_millis(950))
        .map(|(_, p)| p)
        .collect();
    assert!(
        held.len() >= 35,
        "chorus's own stream: {} packets in 950 ms",
        held.len()
    );
    let own = ssrc(held[0]);
    assert!(own != 0xA && held.iter().all(|p| ssrc(p) == own && p[1] & 0x7f == 0));
    let seqs: Vec<u16> = held.iter().map(|p| u16::from_be_bytes([p[2], p[3]])).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "{seqs:?}");
    let audio = |ps: &[&Vec<u8>]| -> Vec<f32> {
        let mut pcm = vec![0i16; 160];
        ps.iter()
            .flat_map(|p| {
                chorus::media::codec::g711::Law::Ulaw.decode(&p[12..], &mut pcm);
                pcm.iter().map(|&s| s as f32 / 32768.0).collect::<Vec<_>>()
            })
            .collect()
    };
    assert!(tone_level(&audio(&held[5..]), 8000.0, 500.0) > 0.1, "the music on hold");
    let back: Vec<&Vec<u8>> = got
        .iter()
        .filter(|(at, _)| *at > t0 + Duration::from_millis(1200) && *at < t0 + Duration::from_millis(1900))
        .map(|(_, p)| p)
        .collect();
    assert!(back.iter().all(|p| ssrc(p) == 0xA), "A's stream alone once A speaks");
    let pcm = audio(&back);
    assert!(
        tone_level(&pcm, 8000.0, 1000.0) > 0.2 && tone_level(&pcm, 8000.0, 500.0) > 0.1,
        "A, the music under it"
    );
}
