//! Conference load: N Opus (or PCMU) participants join one chorus
//! conference over the HTTP API and send 20 ms packets from real sockets
//! (real frames, encoded once and replayed), spread over each 20 ms as
//! independent phones would send them. Reports the mixer's CPU per
//! participant, what arrived (and the worst-served listener), and the
//! mixer's added delay: speaker 0's tone switches from 700 Hz to 2,000 Hz
//! every second; a listener decodes what it gets and notes how long after
//! each switch 2,000 Hz appears (p50 and p99). That includes the codecs'
//! own delay (Opus: 6.5 ms of look-ahead in the speaker's encoder and again
//! in the mix's; G.711 none).

use chorus::media::codec::{negotiate, Decoder, Encoder, MAX_PAYLOAD};
use chorus::sdp::Sdp;
use chorus::wire::rtp::{write_header, RtpView};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OPUS_OFFER: &str = "RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
const PCMU_OFFER: &str =
    "RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";

/// Frame `k` of a tone at `rate` Hz, `n` samples a frame.
fn tone(freq: f32, k: usize, rate: u32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|j| 0.3 * (2.0 * std::f32::consts::PI * freq * (k * n + j) as f32 / rate as f32).sin())
        .collect()
}

/// What one run sends.
pub struct Load<'a> {
    pub participants: usize,
    /// Everyone talks; otherwise 3 speak and the rest send silence.
    pub all_talk: bool,
    /// RFC 6464 levels in every packet (silence marked as such).
    pub levels: bool,
    /// PCMU phones instead of Opus.
    pub pcmu: bool,
    /// chorus's mix rate (its default when `None`).
    pub sample_rate: Option<u32>,
    pub seconds: u64,
    pub warmup: u64,
    pub pid: Option<u32>,
    pub label: &'a str,
}

/// Which mixer the participants join.
pub enum Mixer<'a> {
    /// chorus's HTTP API base URL.
    Chorus(&'a str),
    /// Janus's HTTP API base URL (AudioBridge with plain-RTP participants).
    Janus(&'a str),
}

/// Creates the conference and joins `socks`; returns where each sends.
fn chorus_setup(
    rt: &tokio::runtime::Runtime,
    api: &str,
    socks: &[UdpSocket],
    codec: &str,
    sample_rate: Option<u32>,
) -> (Vec<SocketAddr>, String) {
    let client = reqwest::Client::new();
    let conf = format!("load-{}", std::process::id());
    let mut body = serde_json::json!({"id": conf, "max_participants": socks.len()});
    if let Some(rate) = sample_rate {
        body["sample_rate"] = rate.into();
    }
    rt.block_on(async {
        let r = client
            .post(format!("{api}/v1/conferences"))
            .json(&body)
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
        let offer = format!("v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} {codec}a=rtcp-mux\r\n");
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
        assert!(codec.starts_with(&format!("RTP/AVP {}\r", spec.pt)), "{answer}");
        targets.push(SocketAddr::new(parsed.media_address(0).unwrap(), parsed.media[0].port));
    }
    (targets, format!("{api}/v1/conferences/{conf}"))
}

/// The same with Janus AudioBridge: a session, one handle per participant,
/// a room that allows plain-RTP participants, and a join per handle whose
/// event says where Janus listens. Returns the targets and the session URL.
fn janus_setup(rt: &tokio::runtime::Runtime, api: &str, socks: &[UdpSocket], pcmu: bool) -> (Vec<SocketAddr>, String) {
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
            let (codec, pt) = if pcmu { ("pcmu", 0) } else { ("opus", 111) };
            let join = serde_json::json!({"janus": "message", "transaction": tx(i), "body": {
                "request": "join", "room": room, "display": format!("p{i}"), "codec": codec,
                "rtp": {"ip": "127.0.0.1", "port": port, "payload_type": pt, "audiolevel_ext": 1, "fec": true}}});
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

/// Frame `k` of a voice: syllables of 200 ms (a buzz at `pitch` with its
/// harmonics, as a vowel; the pitch moves per syllable) and 100 ms pauses.
/// Encoders' voice detection calls it voice, as it would speech; a steady
/// tone it learns to call noise within a second.
fn voice(pitch: f32, k: usize, rate: u32, n: usize) -> Vec<f32> {
    let on = k % 15 < 10;
    let f0 = pitch * (1.0 + 0.15 * ((k / 15) % 3) as f32);
    (0..n)
        .map(|j| {
            let t = (k * n + j) as f32 / rate as f32;
            let v: f32 = (1..8)
                .map(|h| 0.08 / h as f32 * (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin())
                .sum();
            if on {
                v
            } else {
                0.0
            }
        })
        .collect()
}

/// The frames every participant replays, encoded once: talkers' voices
/// (150 frames each), silence, and speaker 0's second: 500 ms of the
/// 2,000 Hz marker, then 500 ms of 700 Hz, from one encoder (a real
/// phone's onset, not a switch between two encoders' streams).
struct Frames {
    talk: Vec<Vec<Vec<u8>>>,
    cycle: Vec<Vec<u8>>,
    silence: Vec<Vec<u8>>,
}

impl Frames {
    fn new(spec: &chorus::media::codec::CodecSpec) -> Frames {
        let mut enc = Encoder::new(spec).unwrap();
        let (rate, n) = (spec.rate, spec.frame_samples());
        let mut encode = |pcm: &[f32]| {
            let mut p = [0u8; MAX_PAYLOAD];
            let len = enc.encode(pcm, &mut p);
            p[..len].to_vec()
        };
        // Every tone has a whole number of periods in 20 ms: frames loop
        // without a phase jump. Two seconds encoded, the second kept.
        let mut cycle: Vec<Vec<u8>> = (0..100)
            .map(|k| encode(&tone(if k % 50 < 25 { 2000.0 } else { 700.0 }, k, rate, n)))
            .collect();
        cycle.drain(..50);
        let talk = [110.0, 150.0, 210.0]
            .iter()
            .map(|&p| (0..150).map(|k| encode(&voice(p, k, rate, n))).collect())
            .collect();
        Frames {
            talk,
            cycle,
            silence: (0..50).map(|k| encode(&tone(0.0, k, rate, n))).collect(),
        }
    }
}

/// Shared between the sender, the receiver and the run.
struct Shared {
    stop: AtomicBool,
    /// Packets each participant received.
    received: Vec<AtomicU64>,
    /// When the latest marker switch was sent (µs since t0).
    onset_us: AtomicU64,
}

/// Counts what every participant receives; decodes what the last one (a
/// listener) hears and returns the delay of each marker onset (ms). It
/// sleeps in epoll until a packet comes, as phones' sockets would.
fn receive(socks: Vec<UdpSocket>, spec: chorus::media::codec::CodecSpec, shared: Arc<Shared>, t0: Instant) -> Vec<f64> {
    use mio::{Events, Interest, Poll, Token};
    let mut dec = Decoder::new(&spec).unwrap();
    let (mut pcm, mut buf) = (Vec::new(), [0u8; 2048]);
    let (mut delays, mut hearing, mut last_onset) = (Vec::new(), false, 0);
    let listener = socks.len() - 1;
    let mut poll = Poll::new().unwrap();
    let mut socks: Vec<mio::net::UdpSocket> = socks.into_iter().map(mio::net::UdpSocket::from_std).collect();
    for (i, s) in socks.iter_mut().enumerate() {
        poll.registry().register(s, Token(i), Interest::READABLE).unwrap();
    }
    let mut events = Events::with_capacity(1024);
    while !shared.stop.load(Relaxed) {
        if poll.poll(&mut events, Some(Duration::from_millis(50))).is_err() {
            continue;
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(s) = socks.get(i) else { continue };
            // Edge-triggered: read until the socket is empty.
            while let Ok(n) = s.recv(&mut buf) {
                shared.received[i].fetch_add(1, Relaxed);
                let Ok(v) = RtpView::parse(&buf[..n]) else { continue };
                if i != listener || v.payload_type() != spec.pt {
                    continue;
                }
                dec.decode(Some(v.payload()), spec.frame_samples(), &mut pcm);
                let level = chorus::media::mixer::level::tone_level(&pcm, spec.rate as f32, 2000.0);
                let onset = shared.onset_us.load(Relaxed);
                if !hearing && level > 0.05 && onset != 0 && onset != last_onset {
                    delays.push((t0.elapsed().as_micros() as u64).saturating_sub(onset) as f64 / 1000.0);
                    last_onset = onset;
                }
                hearing = if hearing { level > 0.02 } else { level > 0.05 };
            }
        }
    }
    delays
}

/// Sends every 20 ms one packet per participant, participant i at i/n of
/// the period (phones are not in step); returns ticks sent and late ones.
fn send(
    socks: Vec<UdpSocket>,
    targets: Vec<SocketAddr>,
    frames: Frames,
    spec: chorus::media::codec::CodecSpec,
    load: (bool, bool, usize),
    shared: Arc<Shared>,
    t0: Instant,
) -> (usize, u64) {
    let (all_talk, levels, first_marker) = load;
    let n = socks.len();
    let mut pkt = [0u8; 20 + MAX_PAYLOAD];
    let (mut k, mut late) = (0usize, 0u64);
    const SLOTS: usize = 10;
    while !shared.stop.load(Relaxed) {
        for slot in 0..SLOTS {
            let due = t0 + Duration::from_micros(20_000 * k as u64 + 2_000 * slot as u64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else if slot == 0 && now - due > Duration::from_millis(10) {
                late += 1;
            }
            for i in (slot * n / SLOTS)..((slot + 1) * n / SLOTS) {
                let speaking = all_talk || i < 3;
                let payload = match (i, speaking) {
                    (0, _) => {
                        // A marker onset every second once the warm-up is over.
                        if k >= first_marker && k % 50 == 0 {
                            shared.onset_us.store(t0.elapsed().as_micros() as u64, Relaxed);
                        }
                        &frames.cycle[k % 50]
                    }
                    // Talkers out of step with each other.
                    (_, true) => &frames.talk[i % 3][(k + 7 * i) % 150],
                    (_, false) => &frames.silence[k % 50],
                };
                let ts = (k * spec.frame_ts() as usize) as u32;
                write_header(&mut pkt, spec.pt, k as u16, ts, 0x5000 + i as u32);
                let mut at = 12;
                if levels {
                    pkt[0] |= 0x10;
                    let level = if speaking { 20 } else { 127 };
                    pkt[12..20].copy_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, level, 0, 0]);
                    at = 20;
                }
                pkt[at..at + payload.len()].copy_from_slice(payload);
                let _ = socks[i].send_to(&pkt[..at + payload.len()], targets[i]);
            }
        }
        k += 1;
    }
    (k, late)
}

/// The value at quantile `q` of `v` (sorted here), if any.
fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied()
}

pub fn run(mixer: Mixer<'_>, load: &Load<'_>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let n = load.participants;
    let socks: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let offer = if load.pcmu { PCMU_OFFER } else { OPUS_OFFER };
    let t_setup = Instant::now();
    let (targets, teardown) = match mixer {
        Mixer::Chorus(api) => chorus_setup(&rt, api, &socks, offer, load.sample_rate),
        Mixer::Janus(api) => janus_setup(&rt, api, &socks, load.pcmu),
    };
    for s in &socks {
        s.set_nonblocking(true).unwrap();
    }
    let sdp = format!("v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 1 {offer}");
    let spec = negotiate(&Sdp::parse(&sdp).unwrap().media[0]).unwrap();
    let setup_s = t_setup.elapsed().as_secs_f64();
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        received: (0..n).map(|_| AtomicU64::new(0)).collect(),
        onset_us: AtomicU64::new(0),
    });
    let t0 = Instant::now();
    let clones = |v: &[UdpSocket]| -> Vec<UdpSocket> { v.iter().map(|s| s.try_clone().unwrap()).collect() };
    let receiver = {
        let (socks, shared) = (clones(&socks), shared.clone());
        std::thread::spawn(move || receive(socks, spec, shared, t0))
    };
    let sender = {
        let (socks, shared, frames) = (clones(&socks), shared.clone(), Frames::new(&spec));
        let plan = (load.all_talk, load.levels, (load.warmup * 50) as usize);
        std::thread::spawn(move || send(socks, targets, frames, spec, plan, shared, t0))
    };
    std::thread::sleep(Duration::from_secs(load.warmup));
    let counts = || -> Vec<u64> { shared.received.iter().map(|c| c.load(Relaxed)).collect() };
    let metrics = || match mixer {
        Mixer::Chorus(api) => rt.block_on(metrics_text(&client, api)).unwrap_or_default(),
        Mixer::Janus(_) => String::new(),
    };
    let me = std::process::id();
    let (m0, cpu0, r0, w0) = (metrics(), load.pid.map(super::cpu_ticks), counts(), Instant::now());
    let gen0 = super::cpu_ticks(me);
    std::thread::sleep(Duration::from_secs(load.seconds));
    let (window, cpu1, r1) = (w0.elapsed().as_secs_f64(), load.pid.map(super::cpu_ticks), counts());
    let gen_cores = (super::cpu_ticks(me) - gen0) as f64 / super::TICKS_PER_S / window;
    let m1 = metrics();
    shared.stop.store(true, Relaxed);
    let (ticks, late) = sender.join().unwrap();
    let mut delays = receiver.join().unwrap();
    let cores = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some((b - a) as f64 / super::TICKS_PER_S / window),
        _ => None,
    };
    let per_s: Vec<f64> = r0.iter().zip(&r1).map(|(a, b)| (b - a) as f64 / window).collect();
    let listeners = if load.all_talk { &per_s[..] } else { &per_s[3.min(n)..] };
    let worst_listener = listeners.iter().copied().fold(f64::INFINITY, f64::min);
    // Over the window only: the histograms' and counters' differences.
    let tick_p99_ms = window_quantile(&m0, &m1, "chorus_mixer_tick_seconds", 0.99).map(|s| s * 1000.0);
    let late_ticks = counter(&m1, "chorus_mixer_late_ticks_total") - counter(&m0, "chorus_mixer_late_ticks_total");
    let overloaded = counter(&m1, "chorus_mixer_overloaded_workers");
    rt.block_on(tear_down(&client, &mixer, &teardown));
    let round = |v: Option<f64>| v.map(|x| (x * 10.0).round() / 10.0);
    let report = serde_json::json!({
        "label": load.label,
        "mode": "conference",
        "mixer": match mixer { Mixer::Chorus(_) => "chorus", Mixer::Janus(_) => "janus" },
        "codec": spec.name(),
        "participants": n,
        "all_talk": load.all_talk,
        "audio_levels": load.levels,
        "setup_s": (setup_s * 1000.0).round() / 1000.0,
        "relay_cpu_cores": cores,
        "generator_cpu_cores": (gen_cores * 1000.0).round() / 1000.0,
        "participants_per_core": cores.map(|c| if c > 0.0 { (n as f64 / c).round() } else { f64::INFINITY }),
        "received_per_s": per_s.iter().sum::<f64>().round(),
        "expected_per_s": n as f64 * 50.0,
        "worst_listener_packets_per_s": (worst_listener * 10.0).round() / 10.0,
        "mixer_added_delay_ms_p50": round(quantile(&mut delays, 0.5)),
        "mixer_added_delay_ms_p99": round(quantile(&mut delays, 0.99)),
        "marker_onsets_heard": delays.len(),
        "mixer_tick_p99_ms_at_most": tick_p99_ms,
        "mixer_late_ticks": late_ticks,
        "mixer_overloaded_at_end": overloaded,
        "sender_ticks": ticks,
        "sender_late_ticks": late,
    });
    println!("{report}");
}

/// Ends the conference (chorus) or the Janus session.
async fn tear_down(client: &reqwest::Client, mixer: &Mixer<'_>, url: &str) {
    match mixer {
        Mixer::Chorus(_) => drop(client.delete(url).send().await),
        Mixer::Janus(_) => {
            let destroy = serde_json::json!({"janus": "destroy", "transaction": "d"});
            drop(client.post(url).json(&destroy).send().await)
        }
    }
}

/// An unlabelled metric's value in a scrape (0 when absent).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_text(client: &reqwest::Client, api: &str) -> Option<String> {
    client
        .get(format!("{api}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// A histogram's cumulative buckets (upper bound, count).
fn buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The upper bound of the histogram bucket that holds quantile `q` of what
/// was observed between two scrapes (a Prometheus histogram only says
/// which bucket; this is its ceiling).
fn window_quantile(before: &str, after: &str, name: &str, q: f64) -> Option<f64> {
    let (b0, b1) = (buckets(before, name), buckets(after, name));
    let buckets: Vec<(f64, f64)> = b1
        .iter()
        .map(|&(le, c)| (le, c - b0.iter().find(|(l, _)| *l == le).map_or(0.0, |x| x.1)))
        .collect();
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    buckets.iter().find(|(_, c)| *c >= q * total).map(|(le, _)| *le)
}
