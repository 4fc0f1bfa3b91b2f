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

#[test]
fn relaying_packets_allocates_nothing() {
    let config = Config {
        port_min: 25000,
        port_max: 25039,
        workers: 1,
        media_timeout: 0,
        ..Config::default()
    };
    let started = State::start(config).unwrap();
    let state = started.state;
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = Options::default();
    let (offer, answer) = rt.block_on(async {
        let offer = calls::negotiate(
            &state,
            "c",
            "a",
            calls::Sdpop::Offer,
            &sdp(a.local_addr().unwrap().port()),
            &opts,
        )
        .await
        .unwrap();
        let answer = calls::negotiate(
            &state,
            "c",
            "a",
            calls::Sdpop::Answer { to_tag: "b" },
            &sdp(b.local_addr().unwrap().port()),
            &opts,
        )
        .await
        .unwrap();
        (offer, answer)
    });
    let _ = offer;
    let to_a = target(&answer);
    let mut pkt = [0u8; 172];
    let mut buf = [0u8; 2048];
    // Warm up: first packets latch and may grow nothing, but make sure.
    for seq in 0..10u16 {
        chorus::wire::rtp::write_header(&mut pkt, 0, seq, seq as u32 * 160, 9).unwrap();
        a.send_to(&pkt, to_a).unwrap();
        b.recv_from(&mut buf).unwrap();
    }
    let before = ALLOCS.load(SeqCst);
    for seq in 10..1010u16 {
        chorus::wire::rtp::write_header(&mut pkt, 0, seq, seq as u32 * 160, 9).unwrap();
        a.send_to(&pkt, to_a).unwrap();
        b.recv_from(&mut buf).unwrap();
    }
    let after = ALLOCS.load(SeqCst);
    assert_eq!(after - before, 0, "allocations while relaying 1,000 packets");
}
