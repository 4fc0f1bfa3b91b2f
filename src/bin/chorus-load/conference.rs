//! Conference load: N Opus participants join one chorus conference over the
//! HTTP API and send 20 ms packets from real sockets (real Opus frames,
//! encoded once and replayed). Reports the relay's CPU per participant, what
//! arrived, and the mixer's added delay: speaker 0 switches its tone from
//! 700 Hz to 2,000 Hz at a known instant; a listener decodes what it gets
//! and notes when 2,000 Hz appears.

use chorus::media::codec::{negotiate, Decoder, Encoder, MAX_PAYLOAD};
use chorus::sdp::Sdp;
use chorus::wire::rtp::{write_header, RtpView};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OPUS_OFFER: &str = "RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";

fn tone(freq: f32, k: usize) -> Vec<f32> {
    (0..960)
        .map(|j| 0.3 * (2.0 * std::f32::consts::PI * freq * (k * 960 + j) as f32 / 48000.0).sin())
        .collect()
}

fn goertzel(x: &[f32], freq: f32) -> f32 {
    let c = 2.0 * (2.0 * std::f32::consts::PI * freq / 48000.0).cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s0 = v + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    2.0 * (s1 * s1 + s2 * s2 - c * s1 * s2).max(0.0).sqrt() / x.len() as f32
}

pub fn run(api: &str, n: usize, all_talk: bool, seconds: u64, warmup: u64, pid: Option<u32>, label: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let conf = format!("load-{}", std::process::id());
    rt.block_on(async {
        let r = client
            .post(format!("{api}/v1/conferences"))
            .json(&serde_json::json!({"id": conf, "max_participants": n + 10}))
            .send()
            .await
            .expect("create conference");
        assert!(
            r.status().is_success(),
            "create: {}",
            r.text().await.unwrap_or_default()
        );
    });
    let mut socks = Vec::new();
    let mut targets = Vec::new();
    let mut spec = None;
    let t_setup = Instant::now();
    for _ in 0..n {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let offer = format!("v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} {OPUS_OFFER}a=rtcp-mux\r\n");
        let v: serde_json::Value = rt.block_on(async {
            let r = client
                .post(format!("{api}/v1/conferences/{conf}/participants"))
                .json(&serde_json::json!({"sdp": offer}))
                .send()
                .await
                .expect("join");
            r.json().await.expect("join reply")
        });
        let answer = v["sdp"].as_str().unwrap_or_else(|| panic!("join failed: {v}"));
        let parsed = Sdp::parse(answer).unwrap();
        spec.get_or_insert(negotiate(&parsed.media[0]).unwrap());
        let ip = parsed.media_address(0).unwrap();
        targets.push(SocketAddr::new(ip, parsed.media[0].port));
        s.set_nonblocking(true).unwrap();
        socks.push(s);
    }
    let setup_s = t_setup.elapsed().as_secs_f64();
    let spec = spec.expect("at least one participant");
    // Real Opus frames, encoded once: three speakers' tones, speaker 0's
    // marker tone, and silence.
    let mut enc = Encoder::new(&spec).unwrap();
    let mut encode = |pcm: &[f32]| {
        let mut p = [0u8; MAX_PAYLOAD];
        let len = enc.encode(pcm, &mut p);
        p[..len].to_vec()
    };
    let talk: Vec<Vec<Vec<u8>>> = [700.0, 500.0, 300.0]
        .iter()
        .map(|&f| (0..50).map(|k| encode(&tone(f, k))).collect())
        .collect();
    let marker: Vec<Vec<u8>> = (0..50).map(|k| encode(&tone(2000.0, k))).collect();
    let silence: Vec<Vec<u8>> = (0..50).map(|_| encode(&[0.0; 960])).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let marker_sent_at = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    // Receiver: counts everything; decodes what listener n-1 hears to find the marker.
    let recv_socks: Vec<UdpSocket> = socks.iter().map(|s| s.try_clone().unwrap()).collect();
    let (stop_r, received_r, marker_r) = (stop.clone(), received.clone(), marker_sent_at.clone());
    let receiver = std::thread::spawn(move || {
        let mut dec = Decoder::new(&spec).unwrap();
        let mut pcm = Vec::new();
        let mut buf = [0u8; 2048];
        let mut delay_ms = None;
        let listener = recv_socks.len() - 1;
        while !stop_r.load(Relaxed) {
            let mut got = false;
            for (i, s) in recv_socks.iter().enumerate() {
                while let Ok(n) = s.recv(&mut buf) {
                    got = true;
                    received_r.fetch_add(1, Relaxed);
                    if i == listener && delay_ms.is_none() && marker_r.load(Relaxed) != 0 {
                        let Ok(v) = RtpView::parse(&buf[..n]) else { continue };
                        if v.payload_type() != spec.pt {
                            continue;
                        }
                        dec.decode(Some(v.payload()), 960, &mut pcm);
                        if goertzel(&pcm, 2000.0) > 0.05 {
                            let now = t0.elapsed().as_micros() as u64;
                            delay_ms = Some((now - marker_r.load(Relaxed)) as f64 / 1000.0);
                        }
                    }
                }
            }
            if !got {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        delay_ms
    });
    // Sender: every 20 ms, one packet per participant, with its audio level.
    let (stop_s, marker_s) = (stop.clone(), marker_sent_at.clone());
    let send_socks: Vec<UdpSocket> = socks.iter().map(|s| s.try_clone().unwrap()).collect();
    let marker_tick = ((warmup + seconds / 2) * 50) as usize;
    let sender = std::thread::spawn(move || {
        let mut pkt = [0u8; 20 + MAX_PAYLOAD];
        let mut k = 0usize;
        let mut late = 0u64;
        while !stop_s.load(Relaxed) {
            let due = t0 + Duration::from_millis(20 * k as u64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else if now - due > Duration::from_millis(10) {
                late += 1;
            }
            for (i, s) in send_socks.iter().enumerate() {
                let speaking = all_talk || i < 3;
                let payload = match (i, speaking) {
                    (0, _) if k >= marker_tick => {
                        if k == marker_tick {
                            marker_s.store(t0.elapsed().as_micros() as u64, Relaxed);
                        }
                        &marker[k % 50]
                    }
                    (_, true) => &talk[i % 3][k % 50],
                    (_, false) => &silence[k % 50],
                };
                write_header(&mut pkt, spec.pt, k as u16, (k * 960) as u32, 0x5000 + i as u32);
                pkt[0] |= 0x10;
                let level = if speaking { 20 } else { 127 };
                pkt[12..20].copy_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, level, 0, 0]);
                pkt[20..20 + payload.len()].copy_from_slice(payload);
                let _ = s.send_to(&pkt[..20 + payload.len()], targets[i]);
            }
            k += 1;
        }
        (k, late)
    });
    std::thread::sleep(Duration::from_secs(warmup));
    let cpu0 = pid.map(super::cpu_ticks);
    let r0 = received.load(Relaxed);
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let window = w0.elapsed().as_secs_f64();
    let cpu1 = pid.map(super::cpu_ticks);
    let received_window = received.load(Relaxed) - r0;
    stop.store(true, Relaxed);
    let (ticks, late) = sender.join().unwrap();
    let delay = receiver.join().unwrap();
    let cores = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some((b - a) as f64 / 100.0 / window),
        _ => None,
    };
    rt.block_on(async {
        let _ = client.delete(format!("{api}/v1/conferences/{conf}")).send().await;
    });
    let report = serde_json::json!({
        "label": label,
        "mode": "conference",
        "participants": n,
        "all_talk": all_talk,
        "setup_s": (setup_s * 1000.0).round() / 1000.0,
        "relay_cpu_cores": cores,
        "participants_per_core": cores.map(|c| if c > 0.0 { (n as f64 / c).round() } else { f64::INFINITY }),
        "received_per_s": (received_window as f64 / window).round(),
        "expected_per_s": n as f64 * 50.0,
        "mixer_added_delay_ms": delay,
        "sender_ticks": ticks,
        "sender_late_ticks": late,
    });
    println!("{report}");
}
