//! Relay mode: `--calls` calls set up through the relay (or peer to peer
//! with `--target direct`), each leg a phone sending a 20 ms packet, and a
//! receiver that sleeps in epoll until one comes. Reports loss, one-way
//! latency and CPU per packet: the relay's, the generator's, the host's.

use super::{
    cpu_ticks, host_ticks, host_ticks_since, ng_request, sdp, setup_http, setup_http_with, setup_ng, setup_ng_with,
    srtp, target_name, transcode, ws_sink, Args, Target, LAT_BUCKETS_US, PACKET, TICKS_PER_S,
};
use chorus::media::srtp::{Key, SrtpSide};
use chorus::wire::rtp::write_header;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One call's path: A's socket index, where A sends, B's socket index,
/// where B sends.
type Route = (usize, SocketAddr, usize, SocketAddr);

/// The calls as set up.
struct Calls {
    a_socks: Vec<std::net::UdpSocket>,
    b_socks: Vec<std::net::UdpSocket>,
    routes: Vec<Route>,
    /// The relay's SRTP keys towards each phone A (`--srtp`).
    relay_keys: Vec<Key>,
    /// Seconds the set-ups took (binding the phones' sockets not counted).
    setup_s: f64,
}

/// What the receiver counted.
struct Received {
    /// Per SSRC (2 per call).
    per_ssrc: Vec<u64>,
    /// Latency histogram in µs, the last bucket for anything later.
    lat: Vec<u32>,
    /// Packets in `lat`: those that came while measuring.
    measured: u64,
    /// Everything that arrived (a transcoder sends with its own SSRC).
    all: u64,
}

impl Received {
    /// The latency percentile `p` (0 to 1) in ms.
    fn percentile(&self, p: f64) -> f64 {
        let target = ((self.measured as f64 * p).ceil() as u64).max(1);
        let mut acc = 0u64;
        for (us, &c) in self.lat.iter().enumerate() {
            acc += c as u64;
            if acc >= target {
                return us as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

pub(super) fn run(args: &Args) {
    let base = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let calls = set_up(args, &rt);
    let streams = match &args.stream_url {
        Some(url) => ws_sink::start_streams(&args.api, args.calls, url, &args.stream_format, args.stream_rate),
        None => 0,
    };
    let total_sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let clone_all = |v: &Vec<std::net::UdpSocket>| v.iter().map(|s| s.try_clone().unwrap()).collect::<Vec<_>>();
    let (a_tx, b_tx) = (clone_all(&calls.a_socks), clone_all(&calls.b_socks));
    // Phone A's SRTP: one set of contexts to send with, one to receive with.
    let (phones_tx, phones_rx) = (srtp::phones(&calls.relay_keys), srtp::phones(&calls.relay_keys));
    let calls_setup_s = calls.setup_s;
    let sockets = calls.a_socks.into_iter().chain(calls.b_socks).collect();
    let receiver = spawn_receiver(sockets, phones_rx, args, base, &stop, &measuring);
    let sender = spawn_sender(
        calls.routes,
        (a_tx, b_tx),
        phones_tx,
        args.transcode,
        base,
        &stop,
        &total_sent,
    );

    std::thread::sleep(Duration::from_secs(args.warmup));
    let cpu0 = args.pid.map(cpu_ticks);
    let (host0, self0) = (host_ticks(), cpu_ticks(std::process::id()));
    let sent0 = total_sent.load(Relaxed);
    measuring.store(true, Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(args.seconds));
    measuring.store(false, Relaxed);
    let window = t0.elapsed().as_secs_f64();
    let cpu1 = args.pid.map(cpu_ticks);
    let (host, self1) = (host_ticks_since(&host0), cpu_ticks(std::process::id()));
    let sent_window = total_sent.load(Relaxed) - sent0;
    // Whole-host CPU (every process, interrupts and softirq) and the
    // generator's own, per packet sent in the window.
    let per_packet = |ticks: u64| (sent_window > 0).then(|| ticks as f64 / TICKS_PER_S * 1e6 / sent_window as f64);
    let relay_ticks = cpu0.zip(cpu1).map(|(a, b)| b - a);
    stop.store(true, Relaxed);
    let late_ms = sender.join().unwrap();
    let got = receiver.join().unwrap();
    tear_down(args, &rt);
    let total_recv: u64 = if args.transcode {
        got.all
    } else {
        got.per_ssrc.iter().sum()
    };
    let total = total_sent.load(Relaxed);
    let report = serde_json::json!({
        "label": args.label,
        "target": target_name(args),
        "calls": args.calls,
        "srtp": args.srtp,
        "transcode": args.transcode,
        "streams": streams,
        "stream_format": args.stream_url.as_ref().map(|_| &args.stream_format),
        "setup_s": (calls_setup_s * 1000.0).round() / 1000.0,
        "packets_sent": total,
        "packets_received": total_recv,
        "loss_pct": if total > 0 { (total.saturating_sub(total_recv)) as f64 * 100.0 / total as f64 } else { 0.0 },
        "pps": (sent_window as f64 / window).round(),
        "latency_ms": {
            "p50": got.percentile(0.5), "p99": got.percentile(0.99),
            "p999": got.percentile(0.999), "max": got.percentile(1.0),
        },
        "relay_cpu_us_per_packet": relay_ticks.and_then(per_packet),
        "relay_cpu_cores": relay_ticks.map(|t| t as f64 / TICKS_PER_S / window),
        "host_cpu_us_per_packet": per_packet(host),
        "host_cpu_cores": host as f64 / TICKS_PER_S / window,
        "generator_cpu_us_per_packet": per_packet(self1.saturating_sub(self0)),
        "endpoints": args.endpoints,
        "sender_late_ms": late_ms,
    });
    println!("{report}");
}

/// Binds the phones' sockets and sets up every call through the target.
fn set_up(args: &Args, rt: &tokio::runtime::Runtime) -> Calls {
    let side = |n: usize| -> Vec<std::net::UdpSocket> {
        (0..n)
            .map(|_| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
                let _ = s.set_recv_buffer_size(4 << 20);
                let _ = s.set_send_buffer_size(4 << 20);
                s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
                s.set_nonblocking(true).unwrap();
                s.into()
            })
            .collect()
    };
    let sockets = if args.endpoints {
        args.calls.max(1)
    } else {
        args.sockets
    };
    let (a_socks, b_socks) = (side(sockets), side(sockets));
    let addr = |s: &std::net::UdpSocket| s.local_addr().unwrap();
    let mut routes = Vec::new();
    let mut relay_keys = Vec::new();
    let t_setup = Instant::now();
    for i in 0..args.calls {
        // One socket per leg: call i has A's socket i and B's socket i.
        let (ai, bi) = if args.endpoints {
            (i, i)
        } else {
            (i % sockets, (i * 7 + 3) % sockets)
        };
        let (a, b) = (addr(&a_socks[ai]), addr(&b_socks[bi]));
        let (to_a, to_b) = set_up_call(args, rt, i, (a, b), &mut relay_keys);
        routes.push((ai, to_a, bi, to_b));
    }
    Calls {
        a_socks,
        b_socks,
        routes,
        relay_keys,
        setup_s: t_setup.elapsed().as_secs_f64(),
    }
}

/// Sets up call `i` between phones at `a` and `b`; returns where each
/// sends. With `--srtp`, the relay's key towards A goes to `relay_keys`.
fn set_up_call(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    i: usize,
    (a, b): (SocketAddr, SocketAddr),
    relay_keys: &mut Vec<Key>,
) -> (SocketAddr, SocketAddr) {
    let id = format!("load-{i}");
    match (args.target, args.srtp) {
        (Target::Chorus, false) if args.transcode => {
            let opts = serde_json::json!({"transcode": ["opus"]});
            let answer = transcode::opus_answer(b);
            let (to_a, to_b, _) = rt.block_on(setup_http_with(&args.api, &id, sdp(a, 1), answer, opts));
            (to_a, to_b)
        }
        (_, false) if args.transcode => panic!("--transcode is measured on chorus"),
        (Target::Direct, false) => (b, a),
        (Target::Chorus, false) => rt.block_on(setup_http(&args.api, &id, a, b)),
        (Target::Rtpengine, false) => setup_ng(args.ng, &id, a, b),
        (Target::Direct, true) => panic!("--srtp needs a relay to bridge"),
        (Target::Chorus, true) => {
            let opts = serde_json::json!({"transport_protocol": "RTP/AVP"});
            let (to_a, to_b, to_phone) =
                rt.block_on(setup_http_with(&args.api, &id, srtp::offer_sdp(a, i), sdp(b, 1), opts));
            relay_keys.push(srtp::relay_key(&to_phone));
            (to_a, to_b)
        }
        (Target::Rtpengine, true) => {
            let extra = [("transport-protocol", "RTP/AVP")];
            let (to_a, to_b, to_phone) = setup_ng_with(args.ng, &id, &srtp::offer_sdp(a, i), &sdp(b, 1), &extra);
            relay_keys.push(srtp::relay_key(&to_phone));
            (to_a, to_b)
        }
    }
}

/// The receiver: sleeps in epoll on every phone's socket and counts per
/// SSRC what arrived and how late, until told to stop and quiet for 0.5 s.
fn spawn_receiver(
    sockets: Vec<std::net::UdpSocket>,
    mut phones_rx: Vec<SrtpSide>,
    args: &Args,
    base: Instant,
    stop: &Arc<AtomicBool>,
    measuring: &Arc<AtomicBool>,
) -> JoinHandle<Received> {
    let (stop, measuring) = (stop.clone(), measuring.clone());
    let (n_calls, transcoding) = (args.calls, args.transcode);
    std::thread::spawn(move || {
        let mut poll = Poll::new().unwrap();
        let mut socks: Vec<UdpSocket> = sockets.into_iter().map(UdpSocket::from_std).collect();
        for (i, s) in socks.iter_mut().enumerate() {
            poll.registry().register(s, Token(i), Interest::READABLE).unwrap();
        }
        let mut events = Events::with_capacity(256);
        let mut buf = [0u8; 2048];
        let mut got = Received {
            per_ssrc: vec![0u64; 2 * n_calls],
            lat: vec![0u32; LAT_BUCKETS_US + 1],
            measured: 0,
            all: 0,
        };
        let mut last_rx = Instant::now();
        loop {
            poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
            for ev in events.iter() {
                let s = &socks[ev.token().0];
                while let Ok((mut n, _)) = s.recv_from(&mut buf) {
                    if n < 20 {
                        continue;
                    }
                    let ssrc = u32::from_be_bytes(buf[8..12].try_into().unwrap()) as usize;
                    // B's packets (odd SSRC) reach A encrypted by the relay.
                    if let Some(phone) = phones_rx.get_mut(ssrc / 2).filter(|_| ssrc % 2 == 1) {
                        match phone.unprotect(&mut buf, n, false) {
                            Ok(plain) => n = plain,
                            Err(_) => continue,
                        }
                    }
                    if n < 20 {
                        continue;
                    }
                    got.all += 1;
                    last_rx = Instant::now();
                    if transcoding {
                        continue;
                    }
                    let sent_ns = u64::from_be_bytes(buf[12..20].try_into().unwrap());
                    if let Some(r) = got.per_ssrc.get_mut(ssrc) {
                        *r += 1;
                    }
                    if measuring.load(Relaxed) {
                        let now_ns = base.elapsed().as_nanos() as u64;
                        let us = (now_ns.saturating_sub(sent_ns) / 1000) as usize;
                        got.lat[us.min(LAT_BUCKETS_US)] += 1;
                        got.measured += 1;
                    }
                }
            }
            if stop.load(Relaxed) && last_rx.elapsed() > Duration::from_millis(500) {
                return got;
            }
        }
    })
}

/// The sender: every millisecond, the calls whose turn it is (spread over
/// the 20 ms period), A and B each from its own socket. Returns how many
/// milliseconds it fell more than 5 ms behind.
fn spawn_sender(
    routes: Vec<Route>,
    (a_tx, b_tx): (Vec<std::net::UdpSocket>, Vec<std::net::UdpSocket>),
    mut phones_tx: Vec<SrtpSide>,
    transcoding: bool,
    base: Instant,
    stop: &Arc<AtomicBool>,
    sent: &Arc<AtomicU64>,
) -> JoinHandle<u64> {
    let (stop, sent) = (stop.clone(), sent.clone());
    let opus_frames = transcoding.then(transcode::opus_frames);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500 + chorus::media::srtp::TRAILER];
        let start = Instant::now();
        let mut seq = 0u16;
        let mut tick = 0u64;
        let mut late_ms = 0u64;
        let n = routes.len();
        while !stop.load(Relaxed) {
            let due = start + Duration::from_millis(tick);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else if now - due > Duration::from_millis(5) {
                late_ms += 1;
            }
            let slot = (tick % 20) as usize;
            if slot == 0 {
                seq = seq.wrapping_add(1);
            }
            for i in (slot..n).step_by(20) {
                let (ai, to_a, bi, to_b) = routes[i];
                for (dir, sock, to) in [(0, &a_tx[ai], to_a), (1, &b_tx[bi], to_b)] {
                    let mut len = PACKET;
                    if let Some(frames) = opus_frames.as_ref().filter(|_| dir == 1) {
                        // B speaks Opus: real frames, not a send time.
                        len = transcode::opus_packet(&mut buf, frames, seq, (2 * i + dir) as u32);
                    } else {
                        write_header(&mut buf, 0, seq, seq as u32 * 160, (2 * i + dir) as u32);
                        buf[12..20].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
                    }
                    if let Some(phone) = phones_tx.get_mut(i).filter(|_| dir == 0) {
                        len = phone.protect(&mut buf, PACKET, false).expect("room for the tag");
                    }
                    if sock.send_to(&buf[..len], to).is_ok() {
                        sent.fetch_add(1, Relaxed);
                    }
                }
            }
            tick += 1;
        }
        late_ms
    })
}

/// Deletes the calls the run set up (nothing to delete when direct).
fn tear_down(args: &Args, rt: &tokio::runtime::Runtime) {
    match args.target {
        Target::Chorus => {
            for i in 0..args.calls {
                let _ = rt.block_on(
                    reqwest::Client::new()
                        .delete(format!("{}/v1/calls/load-{i}", args.api))
                        .send(),
                );
            }
        }
        Target::Rtpengine => {
            for i in 0..args.calls {
                let id = format!("load-{i}");
                let _ = ng_request(args.ng, &[("command", "delete"), ("call-id", &id), ("from-tag", "ta")]);
            }
        }
        Target::Direct => {}
    }
}
