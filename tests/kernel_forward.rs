//! Kernel forwarding (`--kernel-forward on`, eBPF on tcx): once both legs
//! of a plain call are latched, their RTP goes through the kernel, and the
//! phones cannot tell: every packet arrives, from chorus's ports, with the
//! DSCP chorus marks; statistics, loss and metrics count it; RTCP, key
//! presses and foreign sources still meet the userspace relay; a recording
//! takes the call back to userspace; the delete ends the forwarding.

mod common;
use common::*;
use serde_json::json;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Sends `n` packets each way, one at a time, and checks each arrives
/// intact from chorus's port (`from_*`).
fn exchange(a: &mut Peer, to_a: SocketAddr, b: &mut Peer, to_b: SocketAddr, n: usize) {
    for _ in 0..n {
        a.send_rtp(to_a);
        let got = recv_n(&b.rtp, 1);
        assert_eq!(got.len(), 1, "B got A's packet");
        assert_eq!((got[0].0.len(), got[0].1), (172, to_b), "intact, from chorus's port");
        b.send_rtp(to_b);
        let got = recv_n(&a.rtp, 1);
        assert_eq!(got.len(), 1, "A got B's packet");
        assert_eq!(got[0].1, to_a);
    }
}

async fn kernel_streams(d: &Daemon) -> (f64, f64) {
    let m = d.metrics().await;
    (
        metric(&m, "chorus_kernel_streams"),
        metric(&m, "chorus_kernel_forwarded_packets_total"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_latched_plain_call_is_forwarded_in_the_kernel_and_counted() {
    let d = Daemon::start(118, &["--kernel-forward", "on", "--dscp", "34"]).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("kf", &a, &b).await;
    exchange(&mut a, to_a, &mut b, to_b, 3);
    assert_eq!(kernel_streams(&d).await.0, 2.0, "both directions in the kernel");
    exchange(&mut a, to_a, &mut b, to_b, 100);
    let (_, forwarded) = kernel_streams(&d).await;
    assert!(forwarded >= 190.0, "the kernel forwarded {forwarded} of 200");
    let m = d.metrics().await;
    assert!(
        metric(&m, "chorus_packets_relayed_total") >= 206.0,
        "relayed counts the kernel's too"
    );

    // Marked as chorus marks its own packets.
    a.send_rtp(to_a);
    assert_eq!(
        recv_tos(&b.rtp),
        Some(34 << 2),
        "DSCP 34 on a packet the kernel forwarded"
    );

    // Five packets A never sent: the kernel's sequence tracking shows the loss.
    for _ in 0..5 {
        a.send_rtp_from(&UdpSocket::bind("127.0.0.1:0").unwrap(), "127.0.0.1:9".parse().unwrap());
    }
    a.send_rtp(to_a);
    assert_eq!(recv_n(&b.rtp, 1).len(), 1);
    let (_, call) = d.get("/v1/calls/kf").await;
    let stats = &call["legs"][0]["streams"][0]["stats"]["rtp"];
    assert_eq!(
        (stats["packets"].as_u64(), stats["lost"].as_u64()),
        (Some(105), Some(5)),
        "{call}"
    );

    // A third party spraying A's port: still dropped, by the userspace relay.
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..4 {
        a.send_rtp_from(&attacker, to_a);
    }
    assert_eq!(drain(&b.rtp), 0, "foreign packets are not forwarded");
    // RTCP and a key press take the userspace path and arrive.
    a.send_rtcp(
        &a.rtcp.try_clone().unwrap(),
        SocketAddr::new(to_a.ip(), to_a.port() + 1),
    );
    assert_eq!(recv_n(&b.rtcp, 1).len(), 1, "RTCP relayed");
    let event = rtp(101, 2000, 0, a.ssrc, &[1, 0x8a, 0, 160]);
    a.rtp.send_to(&event, to_a).unwrap();
    let got = recv_n(&b.rtp, 1);
    assert_eq!(got.first().map(|g| g.0[1] & 0x7f), Some(101), "telephone event relayed");
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "chorus_packets_dropped_total{reason=\"foreign_source\"}"),
        4.0
    );

    // The delete's final statistics include what the kernel forwarded, and
    // nothing is forwarded after it.
    let (s, fin) = d.delete("/v1/calls/kf").await;
    assert_eq!(s, 200);
    let packets = |leg: usize| fin["legs"][leg]["streams"][0]["stats"]["rtp"]["packets"].as_u64();
    assert_eq!((packets(0), packets(1)), (Some(106), Some(103)), "{fin}");
    assert_eq!(kernel_streams(&d).await.0, 0.0);
    a.send_rtp(to_a);
    assert_eq!(drain(&b.rtp), 0, "no forwarding after the delete");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recording_takes_the_call_back_to_userspace() {
    let d = Daemon::start(119, &["--kernel-forward", "on"]).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("kr", &a, &b).await;
    exchange(&mut a, to_a, &mut b, to_b, 3);
    assert_eq!(kernel_streams(&d).await.0, 2.0);
    let (s, r) = d.post("/v1/calls/kr/recordings", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(kernel_streams(&d).await.0, 0.0, "a tap needs every packet");
    let before = kernel_streams(&d).await.1;
    exchange(&mut a, to_a, &mut b, to_b, 50);
    assert_eq!(kernel_streams(&d).await.1, before, "nothing more through the kernel");
    let id = r["recording_id"].as_str().unwrap();
    let (s, _) = d.delete(&format!("/v1/calls/kr/recordings/{id}")).await;
    assert_eq!(s, 200);
    // Once the recording stops, the next packets hand the call back.
    exchange(&mut a, to_a, &mut b, to_b, 2);
    assert_eq!(kernel_streams(&d).await.0, 2.0, "back in the kernel");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, fin) = d.delete("/v1/calls/kr").await;
    let packets = fin["legs"][0]["streams"][0]["stats"]["rtp"]["packets"].as_u64();
    assert_eq!(packets, Some(55), "{fin}");
}
