//! The relay's packet path allocates nothing: a counting allocator watches
//! the whole process while packets flow through an in-process chorus.

use chorus::config::Config;
use chorus::control::{calls, State};
use chorus::session::Options;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, SeqCst);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, SeqCst);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn sdp(port: u16) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n")
}

fn target(sdp: &str) -> SocketAddr {
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio ")?.split(' ').next()?.parse::<u16>().ok());
    SocketAddr::from(([127, 0, 0, 1], port.unwrap()))
}

/// Offer and answer over the control plane's own functions.
fn call(
    state: &State,
    rt: &tokio::runtime::Runtime,
    id: &str,
    offer: &str,
    answer: &str,
    opts: &Options,
) -> (String, String) {
    rt.block_on(async {
        let offer = calls::negotiate(state, id, "a", calls::Sdpop::Offer, offer, opts)
            .await
            .unwrap();
        let answer = calls::negotiate(
            state,
            id,
            "a",
            calls::Sdpop::Answer { to_tag: "b" },
            answer,
            &Options::default(),
        )
        .await
        .unwrap();
        (offer, answer)
    })
}

/// Allocations in the whole process while `send` runs for 1,000 packets,
/// after 10 to warm up (latching, first SSRCs).
fn allocations(mut send: impl FnMut(u16)) -> u64 {
    for seq in 0..10u16 {
        send(seq);
    }
    let before = ALLOCS.load(SeqCst);
    for seq in 10..1010u16 {
        send(seq);
    }
    ALLOCS.load(SeqCst) - before
}

/// One test, so no other test's allocations run alongside the count.
#[test]
fn relaying_packets_allocates_nothing_plain_or_srtp() {
    let config = Config {
        port_min: 25000,
        port_max: 25039,
        workers: 1,
        media_timeout: 0,
        ..Config::default()
    };
    let started = State::start(config).unwrap();
    let state = started.state;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let (_, answer) = call(
        &state,
        &rt,
        "c",
        &sdp(a.local_addr().unwrap().port()),
        &sdp(b.local_addr().unwrap().port()),
        &Options::default(),
    );
    let to_a = target(&answer);
    let mut pkt = [0u8; 172];
    let mut buf = [0u8; 2048];
    let n = allocations(|seq| {
        chorus::wire::rtp::write_header(&mut pkt, 0, seq, seq as u32 * 160, 9).unwrap();
        a.send_to(&pkt, to_a).unwrap();
        b.recv_from(&mut buf).unwrap();
    });
    assert_eq!(n, 0, "allocations while relaying 1,000 packets");
    srtp_bridging_allocates_nothing(&state, &rt);
    mixing_allocates_nothing(&state, &rt);
}

/// A conference of four phones (two talking, two sending plain silence)
/// for 100 ticks in real time: receiving, the jitter buffers, the estimate,
/// decoding, mixing, encoding and sending allocate nothing per packet or
/// per tick. (libopus allocates with C's malloc, unseen here; it does so
/// when an encoder or decoder is made, never per frame.)
fn mixing_allocates_nothing(state: &State, rt: &tokio::runtime::Runtime) {
    use chorus::control::conference_commands::{create, join, CreateOptions};
    use chorus::media::codec::{g711, MAX_PAYLOAD};
    let opts = CreateOptions {
        id: Some("m".into()),
        ..CreateOptions::default()
    };
    rt.block_on(create(state, opts)).unwrap();
    let phones: Vec<(UdpSocket, SocketAddr)> = (0..4)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            let offer = sdp(s.local_addr().unwrap().port()) + "a=rtcp-mux\r\n";
            let r = rt.block_on(join(state, "m", &offer, Default::default())).unwrap();
            let to = target(r["sdp"].as_str().unwrap());
            (s, to)
        })
        .collect();
    let mut pkt = [0u8; 12 + MAX_PAYLOAD];
    let mut buf = [0u8; 2048];
    let mut heard = [0u32; 4];
    let mut tick = |k: u16| {
        for (i, (s, to)) in phones.iter().enumerate() {
            chorus::wire::rtp::write_header(&mut pkt, 0, k, u32::from(k) * 160, 0x100 + i as u32).unwrap();
            for (j, b) in pkt[12..172].iter_mut().enumerate() {
                let t = (usize::from(k) * 160 + j) as f32 / 8000.0;
                let f = [440.0, 1000.0, 0.0, 0.0][i];
                *b = g711::encode_ulaw((0.3 * 32767.0 * (2.0 * std::f32::consts::PI * f * t).sin()) as i16);
            }
            s.send_to(&pkt[..172], *to).unwrap();
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                // RTP with sound in it (not silence, not RTCP).
                if n == 172 && buf[12..n].iter().any(|b| *b != 0xff && *b != 0x7f) {
                    heard[i] += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // One second to start: latching, first SSRCs, speakers, encoders.
    for k in 0..50 {
        tick(k);
    }
    let before = ALLOCS.load(SeqCst);
    for k in 50..150 {
        tick(k);
    }
    let n = ALLOCS.load(SeqCst) - before;
    // The count is the whole process's. Once in a full suite run on a busy
    // machine it was 4 (not reproduced alone, nor under a CPU hog): most
    // likely a phone starved for a tick, so a speaker stopped and started,
    // and a speaker event grew a list once (the worker's event list, or the
    // control plane's history). Anything the tick or a packet allocated
    // would be hundreds here: 100 ticks, 400 packets in, 400 out.
    assert!(n < 20, "{n} allocations while mixing 100 ticks of four phones");
    assert!(heard.iter().all(|h| *h > 100), "every phone heard the mix: {heard:?}");
}

/// An SRTP phone facing a plain one: chorus decrypts one way and encrypts
/// the other, in place. (libsrtp allocates with C's malloc, which this
/// allocator does not see; it does so per new SSRC, never per packet.)
fn srtp_bridging_allocates_nothing(state: &State, rt: &tokio::runtime::Runtime) {
    use chorus::media::srtp::{Key, SrtpSide};
    use chorus::sdp::crypto::{Crypto, Suite};
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let phone = Crypto::ours(1, Suite::AesCm128HmacSha1_80, (0..30).collect());
    let offer = sdp(a.local_addr().unwrap().port()).replace("RTP/AVP", "RTP/SAVP") + &format!("a=crypto:{phone}\r\n");
    let opts = Options {
        transport_protocol: Some("RTP/AVP".into()),
        ..Options::default()
    };
    let (_, answer) = call(state, rt, "s", &offer, &sdp(b.local_addr().unwrap().port()), &opts);
    let chorus_key = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| Crypto::parse(v).unwrap())
        .expect("chorus answers with its key");
    let mut srtp = SrtpSide::new(&Key::from(&chorus_key), &Key::from(&phone)).unwrap();
    let to_a = target(&answer);
    let mut buf = [0u8; 2048];
    let n = allocations(|seq| {
        let mut pkt = [0u8; 172 + chorus::media::srtp::TRAILER];
        chorus::wire::rtp::write_header(&mut pkt, 0, seq, seq as u32 * 160, 9).unwrap();
        let len = srtp.protect(&mut pkt, 172, false).unwrap();
        a.send_to(&pkt[..len], to_a).unwrap();
        let (got, from_chorus) = b.recv_from(&mut buf).unwrap();
        assert_eq!(got, 172, "the plain phone gets plain RTP");
        // And back: chorus encrypts for the SRTP phone.
        b.send_to(&buf[..got], from_chorus).unwrap();
        let (got, _) = a.recv_from(&mut buf).unwrap();
        assert_eq!(srtp.unprotect(&mut buf, got, false), Ok(172));
    });
    assert_eq!(n, 0, "allocations while bridging 1,000 packets each way");
}
