//! chorus-load: sets up N relayed calls over a relay's control API (chorus's
//! HTTP API or rtpengine's ng protocol), sends 20 ms RTP packets both ways
//! from real sockets, and reports received packets, loss, one-way latency
//! percentiles and the relay's CPU time per relayed packet (from /proc).
//!
//! `--target direct` sends peer to peer without a relay: the latency
//! baseline that the relay's added latency is measured against.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Clone, Copy, ValueEnum, PartialEq, Debug)]
enum Target {
    Chorus,
    Rtpengine,
    Direct,
}

#[derive(Parser)]
#[command(about = "Load generator for RTP relays")]
struct Args {
    #[arg(long, value_enum, default_value = "chorus")]
    target: Target,
    /// chorus HTTP API base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// rtpengine ng address.
    #[arg(long, default_value = "127.0.0.1:22222")]
    ng: SocketAddr,
    /// Concurrent calls; each sends 50 packets/s in each direction.
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// Measured seconds (after warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Relay process id, for CPU accounting.
    #[arg(long)]
    pid: Option<u32>,
    /// Generator sockets per side (calls share them).
    #[arg(long, default_value_t = 16)]
    sockets: usize,
    /// Endpoints as real phones are: one socket per leg (`--sockets` is the
    /// number of calls), so each packet finds its receiver asleep in epoll
    /// rather than a shared socket with others queued.
    #[arg(long)]
    endpoints: bool,
    /// Label for the report line.
    #[arg(long, default_value = "")]
    label: String,
    /// The target's name in the report (two instances of one relay, set
    /// up differently); by default the target's kind.
    #[arg(long)]
    name: Option<String>,
    /// Control-plane mode: run this many offer+answer+delete set-ups, no media.
    #[arg(long)]
    setups: Option<usize>,
    /// Control protocol towards chorus in set-up mode (rtpengine: always ng).
    #[arg(long, value_enum, default_value = "ng")]
    proto: Proto,
    /// Set-ups in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Conference mode: this many participants (Opus unless `--pcmu`) join one conference.
    #[arg(long)]
    conference: Option<usize>,
    /// Conference mode: every participant sends audio (otherwise 3 speak and
    /// the rest send silence marked with the RFC 6464 audio level).
    #[arg(long)]
    all_talk: bool,
    /// Conference mode: send no RFC 6464 audio level in the packets (the
    /// mixer must decode everything to know who speaks).
    #[arg(long)]
    no_levels: bool,
    /// Conference mode: the participants are PCMU phones instead of Opus.
    #[arg(long)]
    pcmu: bool,
    /// Conference mode: chorus's mix rate (8000, 16000, 24000, 48000).
    #[arg(long)]
    sample_rate: Option<u32>,
    /// Conference mode against Janus AudioBridge at this HTTP API URL
    /// (e.g. http://127.0.0.1:8088) instead of chorus.
    #[arg(long)]
    janus: Option<String>,
    /// Hostile mode: spray junk and crafted RTP/RTCP at ports MIN-MAX for
    /// `--seconds` (see spray.rs).
    #[arg(long)]
    spray: Option<String>,
    /// Hostile mode: datagrams per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Failover mode: set up `--calls` on `--api`, kill `--pid` after 2 s of
    /// media, measure every receiver's gap for `--seconds`.
    #[arg(long)]
    failover: bool,
    /// Failover mode: the taker's log, for when its takeover started.
    #[arg(long)]
    takeover_log: Option<String>,
    /// Leg A speaks SDES-SRTP, leg B plain RTP: the relay bridges them.
    #[arg(long)]
    srtp: bool,
    /// Leg A sends PCMU, leg B Opus (a browser's codec): the relay
    /// transcodes every packet both ways. Latency is not measured (the
    /// payload carries no send time through a codec).
    #[arg(long)]
    transcode: bool,
    /// Stream every call's leg A (both tracks) to this WebSocket URL
    /// (`record`: record every call instead, with the defaults).
    #[arg(long)]
    stream_url: Option<String>,
    /// Stream format: twilio or raw.
    #[arg(long, default_value = "twilio")]
    stream_format: String,
    /// Raw streams' sample rate.
    #[arg(long)]
    stream_rate: Option<u32>,
    /// Sink mode: a WebSocket server that reads and drops every message.
    #[arg(long)]
    ws_sink: Option<String>,
    /// Echo mode: a do-nothing ng responder on this address (see
    /// ng_echo.rs), the direct run of the control-plane benchmark
    #[arg(long)]
    ng_echo: Option<String>,
}

mod conference;
mod failover;
mod ng_echo;
mod relay_load;
mod setup_rate;
mod spray;
mod srtp;
mod transcode;
mod ws_sink;

#[derive(Clone, Copy, ValueEnum, PartialEq, Debug)]
enum Proto {
    Ng,
    Http,
}

const PACKET: usize = 172;
const LAT_BUCKETS_US: usize = 200_000;

fn main() {
    let args = Args::parse();
    if let Some(range) = &args.spray {
        let (min, max) = range
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .expect("--spray MIN-MAX");
        return spray::run(min, max, args.rate, args.seconds);
    }
    if let Some(listen) = &args.ng_echo {
        return ng_echo::run(listen);
    }
    if let Some(listen) = &args.ws_sink {
        return ws_sink::run(listen);
    }
    if args.failover {
        let pid = args.pid.expect("--failover needs --pid of the instance to kill");
        return failover::run(&args.api, args.calls, pid, args.seconds, args.takeover_log.as_deref());
    }
    if let Some(n) = args.setups {
        return setup_rate::run(&args, n);
    }
    if let Some(n) = args.conference {
        let mixer = match &args.janus {
            Some(url) => conference::Mixer::Janus(url),
            None => conference::Mixer::Chorus(&args.api),
        };
        let load = conference::Load {
            participants: n,
            all_talk: args.all_talk,
            levels: !args.no_levels,
            pcmu: args.pcmu,
            sample_rate: args.sample_rate,
            seconds: args.seconds,
            warmup: args.warmup,
            pid: args.pid,
            label: &args.label,
        };
        return conference::run(mixer, &load);
    }
    relay_load::run(&args);
}

/// CPU time of every process on the host (utime + stime of each, its
/// threads and the kernel's threads included: softirq work on loopback
/// runs in its sender's context), in clock ticks, by process. /proc/stat's
/// totals were tried first: in this project's containers they lag and
/// disagree with the processes' own times.
fn host_ticks() -> std::collections::HashMap<u32, u64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat.get(stat.rfind(')')? + 2..)?;
            let f: Vec<&str> = rest.split(' ').collect();
            Some((pid, f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?))
        })
        .collect()
}

/// What every process running at the end used since `before`.
fn host_ticks_since(before: &std::collections::HashMap<u32, u64>) -> u64 {
    host_ticks()
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

/// USER_HZ on Linux: the unit of /proc's CPU times.
pub(crate) const TICKS_PER_S: f64 = 100.0;

/// utime + stime of a process and its threads, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("process {pid} (the relay or mixer measured) is not running: {e}"));
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn sdp(addr: SocketAddr, version: u32) -> String {
    format!(
        "v=0\r\no=load {version} {version} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

fn sdp_target(sdp: &str) -> SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c= line")
        .trim();
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio ")?.split(' ').next())
        .expect("m= line");
    format!("{ip}:{port}").parse().expect("address")
}

async fn setup_http(api: &str, id: &str, a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let (to_a, to_b, _) = setup_http_with(api, id, sdp(a, 1), sdp(b, 1), serde_json::json!({})).await;
    (to_a, to_b)
}

/// Offer `sa` from A with `options`, answer `sb` from B; returns where A and
/// B send, and the SDP A got (its keys, with SRTP).
async fn setup_http_with(
    api: &str,
    id: &str,
    sa: String,
    sb: String,
    options: serde_json::Value,
) -> (SocketAddr, SocketAddr, String) {
    let c = reqwest::Client::new();
    let offer: serde_json::Value = c
        .post(format!("{api}/v1/calls/{id}/offer"))
        .json(&serde_json::json!({"from_tag": "ta", "sdp": sa, "options": options}))
        .send()
        .await
        .expect("offer sent")
        .json()
        .await
        .expect("offer reply");
    let answer: serde_json::Value = c
        .post(format!("{api}/v1/calls/{id}/answer"))
        .json(&serde_json::json!({"from_tag": "ta", "to_tag": "tb", "sdp": sb}))
        .send()
        .await
        .expect("answer sent")
        .json()
        .await
        .expect("answer reply");
    let o = offer["sdp"].as_str().unwrap_or_else(|| panic!("offer failed: {offer}"));
    let an = answer["sdp"]
        .as_str()
        .unwrap_or_else(|| panic!("answer failed: {answer}"));
    (sdp_target(an), sdp_target(o), an.to_string())
}

fn setup_ng(ng: SocketAddr, id: &str, a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let (to_a, to_b, _) = setup_ng_with(ng, id, &sdp(a, 1), &sdp(b, 1), &[]);
    (to_a, to_b)
}

/// As [`setup_http_with`], over ng with `extra` keys on the offer.
fn setup_ng_with(
    ng: SocketAddr,
    id: &str,
    sa: &str,
    sb: &str,
    extra: &[(&str, &str)],
) -> (SocketAddr, SocketAddr, String) {
    let mut kv = vec![("command", "offer"), ("call-id", id), ("from-tag", "ta"), ("sdp", sa)];
    kv.extend_from_slice(extra);
    let offer = ng_request(ng, &kv);
    let answer = ng_request(
        ng,
        &[
            ("command", "answer"),
            ("call-id", id),
            ("from-tag", "ta"),
            ("to-tag", "tb"),
            ("sdp", sb),
        ],
    );
    (sdp_target(&answer), sdp_target(&offer), answer)
}

/// One ng request with string values; returns the reply's `sdp` (or "").
fn ng_request(ng: SocketAddr, kv: &[(&str, &str)]) -> String {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    ng_request_on(&s, ng, kv)
}

/// One ng request on `s`; returns the reply's `sdp` (or "").
fn ng_request_on(s: &std::net::UdpSocket, ng: SocketAddr, kv: &[(&str, &str)]) -> String {
    let mut msg = format!("{} d", next_cookie()).into_bytes();
    let mut sorted = kv.to_vec();
    sorted.sort();
    for (k, v) in sorted {
        msg.extend(format!("{}:{}{}:", k.len(), k, v.len()).bytes());
        msg.extend(v.bytes());
    }
    msg.push(b'e');
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(&msg, ng).unwrap();
    // One buffer per thread: zeroing 64 KiB per request would be the
    // generator's own cost, charged to no relay but slowing every run.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 65536]);
    }
    let reply = BUF.with_borrow_mut(|buf| {
        let n = s.recv(buf).expect("ng reply");
        String::from_utf8_lossy(&buf[..n]).to_string()
    });
    // Find "3:sdp<len>:<sdp>" in the bencoded reply.
    match reply.find("3:sdp") {
        Some(i) => {
            let rest = &reply[i + 5..];
            let colon = rest.find(':').unwrap();
            let len: usize = rest[..colon].parse().unwrap();
            rest[colon + 1..colon + 1 + len].to_string()
        }
        None => {
            assert!(kv[0].1 == "delete", "ng {} failed: {reply}", kv[0].1);
            String::new()
        }
    }
}

/// Unique within and across runs: relays cache replies by cookie (for
/// retransmissions), so a reused cookie would get an earlier reply.
fn next_cookie() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64);
        nanos.unwrap_or(0) ^ ((std::process::id() as u64) << 32)
    });
    format!("{run:x}-{}", NEXT.fetch_add(1, Relaxed))
}

/// The target's name in the report: `--name`, or its kind.
fn target_name(args: &Args) -> String {
    args.name
        .clone()
        .unwrap_or_else(|| format!("{:?}", args.target).to_lowercase())
}
