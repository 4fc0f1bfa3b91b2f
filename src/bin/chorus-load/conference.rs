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

/// Which mixer the participants join.
pub enum Mixer<'a> {
    /// chorus's HTTP API base URL.
    Chorus(&'a str),
    /// Janus's HTTP API base URL (AudioBridge with plain-RTP participants).
    Janus(&'a str),
}

/// Creates the conference and joins `socks`; returns where each sends.
fn chorus_setup(rt: &tokio::runtime::Runtime, api: &str, socks: &[UdpSocket]) -> (Vec<SocketAddr>, String) {
    let client = reqwest::Client::new();
    let conf = format!("load-{}", std::process::id());
    rt.block_on(async {
        let r = client
            .post(format!("{api}/v1/conferences"))
            .json(&serde_json::json!({"id": conf, "max_participants": socks.len() + 10}))
            .send()
            .await
            .expect("create conference");
        assert!(
            r.status().is_success(),
            "create: {}",
            r.text().await.unwrap_or_default()
        );
    });
    let mut targets = Vec::new();
    for s in socks {
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
        let spec = negotiate(&parsed.media[0]).unwrap();
        assert_eq!(spec.pt, 111);
        targets.push(SocketAddr::new(parsed.media_address(0).unwrap(), parsed.media[0].port));
    }
    (targets, format!("{api}/v1/conferences/{conf}"))
}

/// The same with Janus AudioBridge: a session, one handle per participant,
/// a room that allows plain-RTP participants, and a join per handle whose
/// event says where Janus listens. Returns the targets and the session URL.
fn janus_setup(rt: &tokio::runtime::Runtime, api: &str, socks: &[UdpSocket]) -> (Vec<SocketAddr>, String) {
    let client = reqwest::Client::new();
    let post = |url: String, body: serde_json::Value| {
        let client = client.clone();
        async move {
            let v: serde_json::Value = client
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("janus")
                .json()
                .await
                .expect("json");
            v
        }
    };
    rt.block_on(async {
        let tx = |i: usize| format!("t{i}");
        let s = post(
            format!("{api}/janus"),
            serde_json::json!({"janus": "create", "transaction": "c"}),
        )
        .await;
        let session = s["data"]["id"].as_u64().expect("session id");
        let surl = format!("{api}/janus/{session}");
        let room = 4321 + std::process::id() as u64 % 1000;
        let mut handles = Vec::new();
        for i in 0..socks.len() {
            let h = post(
                surl.clone(),
                serde_json::json!({"janus": "attach", "plugin": "janus.plugin.audiobridge", "transaction": tx(i)}),
            )
            .await;
            handles.push(h["data"]["id"].as_u64().expect("handle id"));
        }
        let create = serde_json::json!({"janus": "message", "transaction": "room", "body": {
            "request": "create", "room": room, "sampling_rate": 48000, "allow_rtp_participants": true}});
        let r = post(format!("{surl}/{}", handles[0]), create).await;
        assert_eq!(r["plugindata"]["data"]["audiobridge"], "created", "{r}");
        let mut targets: Vec<Option<SocketAddr>> = vec![None; socks.len()];
        for (i, (h, sock)) in handles.iter().zip(socks).enumerate() {
            let port = sock.local_addr().unwrap().port();
            let join = serde_json::json!({"janus": "message", "transaction": tx(i), "body": {
                "request": "join", "room": room, "display": format!("p{i}"),
                "rtp": {"ip": "127.0.0.1", "port": port, "payload_type": 111, "audiolevel_ext": 1, "fec": true}}});
            post(format!("{surl}/{h}"), join).await;
        }
        // Join results arrive as events on the session's long poll.
        let deadline = Instant::now() + Duration::from_secs(30);
        while targets.iter().any(Option::is_none) && Instant::now() < deadline {
            let evs: serde_json::Value = client
                .get(format!("{surl}?maxev=100"))
                .send()
                .await
                .expect("poll")
                .json()
                .await
                .expect("json");
            let list = match evs {
                serde_json::Value::Array(a) => a,
                one => vec![one],
            };
            for ev in list {
                let Some(i) = handles.iter().position(|h| Some(*h) == ev["sender"].as_u64()) else {
                    continue;
                };
                let rtp = &ev["plugindata"]["data"]["rtp"];
                if let (Some(ip), Some(port)) = (rtp["ip"].as_str(), rtp["port"].as_u64()) {
                    targets[i] = Some(SocketAddr::new(ip.parse().expect("ip"), port as u16));
                }
            }
        }
        let targets: Vec<SocketAddr> = targets
            .into_iter()
            .map(|t| t.expect("Janus answered every join"))
            .collect();
        (targets, surl)
    })
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    mixer: Mixer<'_>,
    n: usize,
    all_talk: bool,
    levels: bool,
    seconds: u64,
    warmup: u64,
    pid: Option<u32>,
    label: &str,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let socks: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let t_setup = Instant::now();
    let (targets, teardown) = match mixer {
        Mixer::Chorus(api) => chorus_setup(&rt, api, &socks),
        Mixer::Janus(api) => janus_setup(&rt, api, &socks),
    };
    for s in &socks {
        s.set_nonblocking(true).unwrap();
    }
    let sdp =
        format!("v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 1 {OPUS_OFFER}");
    let spec = negotiate(&Sdp::parse(&sdp).unwrap().media[0]).unwrap();
    let setup_s = t_setup.elapsed().as_secs_f64();

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
        // Janus AudioBridge sends audio without the mix's 3-speaker limit; the
        // same marker works for both.
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
                        if chorus::media::mixer::level::tone_level(&pcm, 48000.0, 2000.0) > 0.05 {
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
                let mut at = 12;
                if levels {
                    pkt[0] |= 0x10;
                    let level = if speaking { 20 } else { 127 };
                    pkt[12..20].copy_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, level, 0, 0]);
                    at = 20;
                }
                pkt[at..at + payload.len()].copy_from_slice(payload);
                let _ = s.send_to(&pkt[..at + payload.len()], targets[i]);
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
    // The mixer's tick duration percentile, from chorus's own histogram.
    let tick_p99_ms = match mixer {
        Mixer::Chorus(api) => rt.block_on(async {
            let text = client
                .get(format!("{api}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            histogram_quantile(&text, "chorus_mixer_tick_seconds", 0.99).map(|s| s * 1000.0)
        }),
        Mixer::Janus(_) => None,
    };
    rt.block_on(async {
        match mixer {
            Mixer::Chorus(_) => drop(client.delete(&teardown).send().await),
            Mixer::Janus(_) => {
                let destroy = serde_json::json!({"janus": "destroy", "transaction": "d"});
                drop(client.post(&teardown).json(&destroy).send().await)
            }
        }
    });
    let report = serde_json::json!({
        "label": label,
        "mode": "conference",
        "mixer": match mixer { Mixer::Chorus(_) => "chorus", Mixer::Janus(_) => "janus" },
        "participants": n,
        "all_talk": all_talk,
        "audio_levels": levels,
        "setup_s": (setup_s * 1000.0).round() / 1000.0,
        "relay_cpu_cores": cores,
        "participants_per_core": cores.map(|c| if c > 0.0 { (n as f64 / c).round() } else { f64::INFINITY }),
        "received_per_s": (received_window as f64 / window).round(),
        "expected_per_s": n as f64 * 50.0,
        "mixer_added_delay_ms": delay,
        "mixer_tick_p99_ms_at_most": tick_p99_ms,
        "sender_ticks": ticks,
        "sender_late_ticks": late,
    });
    println!("{report}");
}

/// The upper bound of the histogram bucket that holds quantile `q` (a
/// Prometheus histogram only says which bucket; this is its ceiling).
fn histogram_quantile(metrics: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    buckets.iter().find(|(_, c)| *c >= q * total).map(|(le, _)| *le)
}
