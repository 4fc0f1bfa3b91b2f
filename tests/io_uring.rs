//! The userspace relay on io_uring (`--io uring`, kernel forwarding off so
//! every packet goes through the worker): calls relay both ways, a flood
//! does not stop a socket, and a deleted call's ports are free at once for
//! the next call. (`worker::uring`'s unit test runs a socket out of
//! receive buffers and back.)

mod common;
use common::*;
use std::time::Duration;

const URING: &[&str] = &["--io", "uring", "--kernel-forward", "off"];

#[tokio::test(flavor = "multi_thread")]
async fn calls_relay_on_io_uring_through_a_flood_and_ports_come_back_at_once() {
    // Two ports per call leg, four per call: the range holds two calls, so
    // the second call after a delete gets the first one's ports again.
    let d = Daemon::start_with_range(124, 8, URING).await;
    let log =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs/slot-124.log"))
            .unwrap();
    assert!(!log.contains("io_uring unavailable"), "{log}");
    for round in 0..3 {
        let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
        let id = format!("u{round}");
        let (to_a, to_b) = d.call(&id, &a, &b).await;
        exchange(&mut a, to_a, &mut b, to_b, 5);
        // A flood from the latched peer: relayed as far as the machine
        // keeps up, and the socket goes on afterwards.
        let burst = 6000;
        for _ in 0..burst {
            a.send_rtp(to_a);
        }
        let flooded = drain(&b.rtp);
        assert!(flooded > 0, "some of the flood went through");
        tokio::time::sleep(Duration::from_millis(100)).await;
        drain(&b.rtp);
        exchange(&mut a, to_a, &mut b, to_b, 5);
        let (s, fin) = d.delete(&format!("/v1/calls/{id}")).await;
        assert_eq!(s, 200, "{fin}");
        let packets = fin["legs"][0]["streams"][0]["stats"]["rtp"]["packets"]
            .as_u64()
            .unwrap();
        assert!(packets >= 10 + flooded as u64, "{packets} counted, {flooded} relayed");
    }
    let m = d.metrics().await;
    assert!(
        metric(&m, "chorus_packets_relayed_total") >= 60.0,
        "sends completed on the ring are counted"
    );
}

/// A send the kernel refuses on the ring (here: to a broadcast address,
/// which needs SO_BROADCAST) is a drop in the call's own statistics, as a
/// refused direct send is, not only in the worker's metric.
#[tokio::test(flavor = "multi_thread")]
async fn a_send_refused_on_the_ring_is_a_drop_of_the_call() {
    let d = Daemon::start_with_range(130, 4, URING).await;
    let (mut a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (s, offer) = d
        .post(
            "/v1/calls/bc/offer",
            serde_json::json!({"from_tag": "ta", "sdp": a.sdp()}),
        )
        .await;
    assert_eq!(s, 200, "{offer}");
    let answer = serde_json::json!({"from_tag": "ta", "to_tag": "tb", "sdp": b.sdp_with("255.255.255.255", "")});
    let (s, answered) = d.post("/v1/calls/bc/answer", answer).await;
    assert_eq!(s, 200, "{answered}");
    let to_a = sdp_target(answered["sdp"].as_str().unwrap());
    for _ in 0..5 {
        a.send_rtp(to_a);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, call) = d.get("/v1/calls/bc").await;
    assert_eq!(s, 200);
    let stats = &call["legs"][0]["streams"][0]["stats"];
    assert_eq!(stats["rtp"]["packets"], 5, "{stats}");
    assert_eq!(stats["dropped"], 5, "{stats}");
    let m = d.metrics().await;
    assert_eq!(metric(&m, "chorus_packets_dropped_total{reason=\"send_failed\"}"), 5.0);
}

/// Datagrams longer than the ring's 2,048-byte buffers: the first is lost
/// (the kernel truncated it), then the socket is read with epoll and the
/// rest arrive whole. A stranger's long datagrams move nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_of_datagrams_longer_than_the_ring_buffers_goes_through() {
    let d = Daemon::start_with_range(131, 4, URING).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("big", &a, &b).await;
    exchange(&mut a, to_a, &mut b, to_b, 2);
    let big = |seq: u16| rtp(96, seq, u32::from(seq) * 3000, 7, &[seq as u8; 3000]);
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 0..3 {
        stranger.send_to(&big(seq), to_a).unwrap();
    }
    for seq in 0..10 {
        a.rtp.send_to(&big(seq), to_a).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = recv_n(&b.rtp, 10);
    assert!(got.len() >= 9, "{} of 10 arrived", got.len());
    let sizes: Vec<usize> = got.iter().map(|(p, _)| p.len()).collect();
    assert!(sizes.iter().all(|&n| n == 3012), "whole: {sizes:?}");
    exchange(&mut a, to_a, &mut b, to_b, 2);
    let log =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs/slot-131.log"))
            .unwrap();
    let moved: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("this socket is read with epoll now"))
        .collect();
    let peer = format!("from={}", a.rtp.local_addr().unwrap());
    assert!(
        moved.len() == 1 && moved[0].contains(&peer),
        "moved once, by {peer}: {moved:?}"
    );
}

/// What the ring had already received when a long datagram moved its
/// socket to epoll is relayed, not dropped with the move: a phone's
/// packets right behind its first long one all arrive.
#[tokio::test(flavor = "multi_thread")]
async fn packets_behind_the_long_datagram_that_moves_a_socket_are_relayed() {
    let d = Daemon::start_with_range(133, 4, URING).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("behind", &a, &b).await;
    exchange(&mut a, to_a, &mut b, to_b, 2);
    a.rtp.send_to(&rtp(96, 100, 0, 7, &[1; 3000]), to_a).unwrap();
    for seq in 101..111u16 {
        a.rtp.send_to(&rtp(96, seq, 0, 7, &[2; 160]), to_a).unwrap();
    }
    let got = recv_n(&b.rtp, 10);
    let seqs: Vec<u16> = got.iter().map(|(p, _)| u16::from_be_bytes([p[2], p[3]])).collect();
    assert_eq!(
        seqs,
        (101..111).collect::<Vec<u16>>(),
        "every packet behind the long one"
    );
}
