//! End to end: chorus relays RTP and RTCP between two real UDP peers.

mod common;
use common::*;
use serde_json::json;
use std::net::UdpSocket;
use std::time::Duration;

#[tokio::test]
async fn relays_rtp_and_rtcp_both_ways_and_reports_counts() {
    let d = Daemon::start(0, &[]).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_chorus_from_a, to_chorus_from_b) = d.call("c1", &a, &b).await;
    assert_ne!(to_chorus_from_a, to_chorus_from_b);
    for _ in 0..10 {
        a.send_rtp(to_chorus_from_a);
    }
    let got = recv_n(&b.rtp, 10);
    assert_eq!(got.len(), 10, "B got A's packets");
    // Packets arrive unchanged, from chorus's B-facing port.
    assert_eq!(got[0].1, to_chorus_from_b);
    assert_eq!(u32::from_be_bytes(got[0].0[8..12].try_into().unwrap()), a.ssrc);
    for _ in 0..7 {
        b.send_rtp(to_chorus_from_b);
    }
    assert_eq!(recv_n(&a.rtp, 7).len(), 7, "A got B's packets");

    // RTCP: odd port next to RTP, both ways, arriving on the peers' RTCP ports.
    let rtcp_a = std::net::SocketAddr::new(to_chorus_from_a.ip(), to_chorus_from_a.port() + 1);
    let rtcp_b = std::net::SocketAddr::new(to_chorus_from_b.ip(), to_chorus_from_b.port() + 1);
    a.send_rtcp(&a.rtcp, rtcp_a);
    b.send_rtcp(&b.rtcp, rtcp_b);
    let at_b = recv_n(&b.rtcp, 1);
    assert_eq!(at_b.len(), 1, "B got A's RTCP on its RTCP port");
    assert_eq!(at_b[0].0, rtcp_rr(a.ssrc));
    assert_eq!(recv_n(&a.rtcp, 1).len(), 1, "A got B's RTCP");

    let (s, call) = d.get("/v1/calls/c1").await;
    assert_eq!(s, 200);
    assert_eq!(call["legs"][0]["streams"][0]["stats"]["latched"], true);

    let (s, fin) = d.delete("/v1/calls/c1").await;
    assert_eq!(s, 200, "{fin}");
    let leg_a = &fin["legs"][0]["streams"][0]["stats"];
    let leg_b = &fin["legs"][1]["streams"][0]["stats"];
    assert_eq!(fin["legs"][0]["tag"], "ta");
    assert_eq!(leg_a["rtp"]["packets"], 10);
    assert_eq!(leg_a["rtp"]["bytes"], 1720);
    assert_eq!(leg_a["rtp"]["lost"], 0);
    assert_eq!(leg_a["rtcp_packets"], 1);
    assert_eq!(leg_b["rtp"]["packets"], 7);
    assert!(fin["duration_s"].as_f64().unwrap() >= 0.0);
    let (s, _) = d.get("/v1/calls/c1").await;
    assert_eq!(s, 404);
    let m = d.metrics().await;
    assert_eq!(metric(&m, "chorus_packets_relayed_total"), 19.0);
}

#[tokio::test]
async fn loss_is_counted_from_sequence_gaps() {
    let d = Daemon::start(1, &[]).await;
    let (mut a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, _) = d.call("loss", &a, &b).await;
    let sock = a.rtp.try_clone().unwrap();
    for i in 0..20 {
        if i % 5 == 4 {
            a.send_rtp_from(&UdpSocket::bind("127.0.0.1:0").unwrap(), "127.0.0.1:9".parse().unwrap());
        } else {
            a.send_rtp_from(&sock, to_a);
        }
    }
    assert_eq!(recv_n(&b.rtp, 16).len(), 16);
    let (_, fin) = d.delete("/v1/calls/loss").await;
    assert_eq!(fin["legs"][0]["streams"][0]["stats"]["rtp"]["lost"], 3, "{fin}");
}

#[tokio::test]
async fn latches_to_a_nat_source_port_and_sends_back_there() {
    let d = Daemon::start(2, &[]).await;
    let (mut a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("nat", &a, &b).await;
    // A's SDP names a.rtp, but its NAT maps media to another port.
    let nat = UdpSocket::bind("127.0.0.1:0").unwrap();
    nat.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    a.send_rtp_from(&nat, to_a);
    assert_eq!(recv_n(&b.rtp, 1).len(), 1);
    let mut b = b;
    b.send_rtp(to_b);
    assert_eq!(recv_n(&nat, 1).len(), 1, "B's media goes to the latched NAT port");
    assert_eq!(drain(&a.rtp), 0, "not to the SDP port");
}

#[tokio::test]
async fn injected_packets_are_dropped_before_and_after_latching() {
    let d = Daemon::start(3, &[]).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("bleed", &a, &b).await;
    // An attacker on another host sprays chorus's port before the phone speaks.
    let attacker = UdpSocket::bind("127.0.0.2:0").unwrap();
    attacker.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    for _ in 0..5 {
        a.send_rtp_from(&attacker, to_a);
    }
    assert_eq!(drain(&b.rtp), 0, "attacker's packets are not forwarded");
    b.send_rtp(to_b);
    assert_eq!(drain(&attacker), 0, "attacker does not learn B's media");
    assert_eq!(recv_n(&a.rtp, 1).len(), 1, "A still gets B's media");
    // A latches; then a third socket on A's own IP is foreign.
    a.send_rtp(to_a);
    assert_eq!(recv_n(&b.rtp, 1).len(), 1);
    let same_host = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..4 {
        a.send_rtp_from(&same_host, to_a);
    }
    assert_eq!(drain(&b.rtp), 0);
    b.send_rtp(to_b);
    assert_eq!(recv_n(&a.rtp, 1).len(), 1, "media still goes to the latched peer");
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "chorus_packets_dropped_total{reason=\"unknown_source\"}"),
        5.0
    );
    assert_eq!(
        metric(&m, "chorus_packets_dropped_total{reason=\"foreign_source\"}"),
        4.0
    );
    let (_, fin) = d.delete("/v1/calls/bleed").await;
    assert_eq!(fin["legs"][0]["streams"][0]["stats"]["dropped"], 9);
    assert_eq!(fin["legs"][0]["streams"][0]["stats"]["rtp"]["packets"], 1);
}

#[tokio::test]
async fn signalling_source_address_lets_a_natted_phone_latch() {
    let d = Daemon::start(4, &[]).await;
    let (mut a, b) = (Peer::new("127.0.0.3"), Peer::new("127.0.0.1"));
    // The phone is behind NAT: its SDP shows a private address.
    let sdp = a.sdp_with("10.20.30.40", "");
    let (s, offer) = d
        .post(
            "/v1/calls/natted/offer",
            json!({"from_tag": "ta", "sdp": sdp, "options": {"received_from": "127.0.0.3"}}),
        )
        .await;
    assert_eq!(s, 200, "{offer}");
    let (s, answer) = d
        .post(
            "/v1/calls/natted/answer",
            json!({"from_tag": "ta", "to_tag": "tb", "sdp": b.sdp()}),
        )
        .await;
    assert_eq!(s, 200);
    let to_a = sdp_target(answer["sdp"].as_str().unwrap());
    a.send_rtp(to_a);
    assert_eq!(recv_n(&b.rtp, 1).len(), 1, "media from the SIP source IP latches");
    // Without received_from, the same media is refused.
    let (mut c, e) = (Peer::new("127.0.0.3"), Peer::new("127.0.0.1"));
    let (s, _) = d
        .post(
            "/v1/calls/strict/offer",
            json!({"from_tag": "ta", "sdp": c.sdp_with("10.20.30.40", "")}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, answer) = d
        .post(
            "/v1/calls/strict/answer",
            json!({"from_tag": "ta", "to_tag": "tb", "sdp": e.sdp()}),
        )
        .await;
    c.send_rtp(sdp_target(answer["sdp"].as_str().unwrap()));
    assert_eq!(drain(&e.rtp), 0);
    // any_source relaxes the rule explicitly.
    let (s, _) = d
        .post(
            "/v1/calls/strict/offer",
            json!({"from_tag": "ta", "sdp": c.sdp_with("10.20.30.40", ""), "options": {"any_source": true}}),
        )
        .await;
    assert_eq!(s, 200);
    c.send_rtp(sdp_target(answer["sdp"].as_str().unwrap()));
    assert_eq!(recv_n(&e.rtp, 1).len(), 1);
}

#[tokio::test]
async fn reoffer_holds_and_resumes_on_the_same_ports() {
    let d = Daemon::start(5, &[]).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (s, offer1) = d
        .post("/v1/calls/hold/offer", json!({"from_tag": "ta", "sdp": a.sdp()}))
        .await;
    assert_eq!(s, 200);
    let (_, answer1) = d
        .post(
            "/v1/calls/hold/answer",
            json!({"from_tag": "ta", "to_tag": "tb", "sdp": b.sdp()}),
        )
        .await;
    let offer1 = offer1["sdp"].as_str().unwrap().to_string();
    let answer1 = answer1["sdp"].as_str().unwrap().to_string();
    let (to_a, to_b) = (sdp_target(&answer1), sdp_target(&offer1));
    a.send_rtp(to_a);
    assert_eq!(recv_n(&b.rtp, 1).len(), 1);

    // Hold: A re-INVITEs with sendonly and a new o= version.
    let hold = a.sdp().replace("1000 1000", "1000 1001") + "a=sendonly\r\n";
    let (s, offer2) = d
        .post("/v1/calls/hold/offer", json!({"from_tag": "ta", "sdp": hold}))
        .await;
    assert_eq!(s, 200, "{offer2}");
    let offer2 = offer2["sdp"].as_str().unwrap();
    assert_eq!(sdp_target(offer2), to_b, "same port for B");
    assert!(offer2.contains("a=sendonly\r\n"));
    assert!(offer2.contains("o=phone 1000 1001 "));
    let (_, answer2) = d
        .post(
            "/v1/calls/hold/answer",
            json!({"from_tag": "ta", "to_tag": "tb", "sdp": b.sdp() + "a=recvonly\r\n"}),
        )
        .await;
    let answer2 = answer2["sdp"].as_str().unwrap();
    assert_eq!(sdp_target(answer2), to_a, "same port for A");
    assert!(answer2.contains("a=recvonly\r\n"));
    // B's SDP did not change its version but chorus's rewrite did: version goes up.
    assert!(answer2.contains("o=phone 1000 1001 "), "{answer2}");
    // Music on hold flows from A to B.
    a.send_rtp(to_a);
    assert_eq!(recv_n(&b.rtp, 1).len(), 1);

    // Resume.
    let resume = a.sdp().replace("1000 1000", "1000 1002");
    let (_, offer3) = d
        .post("/v1/calls/hold/offer", json!({"from_tag": "ta", "sdp": resume}))
        .await;
    assert_eq!(sdp_target(offer3["sdp"].as_str().unwrap()), to_b);
    d.post(
        "/v1/calls/hold/answer",
        json!({"from_tag": "ta", "to_tag": "tb", "sdp": b.sdp()}),
    )
    .await;
    a.send_rtp(to_a);
    b.send_rtp(to_b);
    assert_eq!(recv_n(&b.rtp, 1).len(), 1);
    assert_eq!(recv_n(&a.rtp, 1).len(), 1);
    // Repeating the same answer changes nothing, not even the version.
    let (_, again) = d
        .post(
            "/v1/calls/hold/answer",
            json!({"from_tag": "ta", "to_tag": "tb", "sdp": b.sdp()}),
        )
        .await;
    let (_, again2) = d
        .post(
            "/v1/calls/hold/answer",
            json!({"from_tag": "ta", "to_tag": "tb", "sdp": b.sdp()}),
        )
        .await;
    assert_eq!(again["sdp"], again2["sdp"]);
}

#[tokio::test]
async fn reinvite_from_the_callee_and_a_new_peer_address() {
    let d = Daemon::start(6, &[]).await;
    let (mut a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("callee", &a, &b).await;
    // B moves to a new socket and re-INVITEs (from-tag is B's now).
    let mut b2 = Peer::new("127.0.0.1");
    let (s, offer) = d
        .post("/v1/calls/callee/offer", json!({"from_tag": "tb", "sdp": b2.sdp()}))
        .await;
    assert_eq!(s, 200, "{offer}");
    assert_eq!(
        sdp_target(offer["sdp"].as_str().unwrap()),
        to_a,
        "A keeps sending to the same port"
    );
    let (s, answer) = d
        .post(
            "/v1/calls/callee/answer",
            json!({"from_tag": "tb", "to_tag": "ta", "sdp": a.sdp()}),
        )
        .await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(sdp_target(answer["sdp"].as_str().unwrap()), to_b);
    a.send_rtp(to_a);
    assert_eq!(recv_n(&b2.rtp, 1).len(), 1, "A's media reaches B's new address");
    assert_eq!(drain(&b.rtp), 0);
    b2.send_rtp(to_b);
    assert_eq!(recv_n(&a.rtp, 1).len(), 1);
}

#[tokio::test]
async fn rtcp_mux_is_demultiplexed_for_a_peer_without_it() {
    let d = Daemon::start(7, &[]).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let sdp_a = a.sdp_with("127.0.0.1", "a=rtcp-mux\r\n");
    let (_, offer) = d
        .post(
            "/v1/calls/mux/offer",
            json!({"from_tag": "ta", "sdp": sdp_a, "options": {"rtcp_mux": "demux"}}),
        )
        .await;
    let offer = offer["sdp"].as_str().unwrap();
    assert!(!offer.contains("a=rtcp-mux"), "demux: B is not offered rtcp-mux");
    let (_, answer) = d
        .post(
            "/v1/calls/mux/answer",
            json!({"from_tag": "ta", "to_tag": "tb", "sdp": b.sdp()}),
        )
        .await;
    let answer = answer["sdp"].as_str().unwrap();
    assert!(answer.contains("a=rtcp-mux"), "A's rtcp-mux is accepted");
    let (to_a, to_b) = (sdp_target(answer), sdp_target(offer));
    // A multiplexes: RTP and RTCP to one port; B gets them on two.
    a.send_rtp(to_a);
    a.send_rtcp(&a.rtp, to_a);
    assert_eq!(recv_n(&b.rtp, 1).len(), 1);
    assert_eq!(recv_n(&b.rtcp, 1)[0].0, rtcp_rr(a.ssrc));
    // B's RTCP goes to chorus's odd port and reaches A's one port.
    b.send_rtp(to_b);
    b.send_rtcp(&b.rtcp, std::net::SocketAddr::new(to_b.ip(), to_b.port() + 1));
    let at_a = recv_n(&a.rtp, 2);
    assert_eq!(at_a.len(), 2);
    assert!(at_a.iter().any(|(p, _)| p[..] == rtcp_rr(b.ssrc)));
    // A muxed side needs one port only.
    let (_, q) = d.get("/v1/calls/mux").await;
    assert_eq!(q["legs"][0]["streams"][0]["local_rtcp"], serde_json::Value::Null);
}

#[tokio::test]
async fn ipv6_calls_are_relayed() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    }
    let d = Daemon::start(8, &["--media-bind", "::1"]).await;
    let (mut a, mut b) = (Peer::new("::1"), Peer::new("::1"));
    let (s, offer) = d
        .post("/v1/calls/v6/offer", json!({"from_tag": "ta", "sdp": a.sdp()}))
        .await;
    assert_eq!(s, 200, "{offer}");
    let offer = offer["sdp"].as_str().unwrap();
    assert!(offer.contains("c=IN IP6 ::1\r\n"), "{offer}");
    let (_, answer) = d
        .post(
            "/v1/calls/v6/answer",
            json!({"from_tag": "ta", "to_tag": "tb", "sdp": b.sdp()}),
        )
        .await;
    let (to_a, to_b) = (sdp_target(answer["sdp"].as_str().unwrap()), sdp_target(offer));
    a.send_rtp(to_a);
    b.send_rtp(to_b);
    assert_eq!(recv_n(&b.rtp, 1).len(), 1);
    assert_eq!(recv_n(&a.rtp, 1).len(), 1);
}

#[tokio::test]
async fn a_flood_on_one_port_does_not_stop_other_calls() {
    let d = Daemon::start(9, &[]).await;
    let (mut a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (mut c, e) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, _) = d.call("flooded", &a, &b).await;
    let (to_c, _) = d.call("quiet", &c, &e).await;
    let junk_target = to_a;
    let flood = std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.2:0").unwrap();
        for i in 0..60_000u32 {
            let _ = s.send_to(&i.to_be_bytes(), junk_target);
        }
    });
    for _ in 0..50 {
        c.send_rtp(to_c);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(recv_n(&e.rtp, 50).len(), 50, "the quiet call lost nothing");
    flood.join().unwrap();
    // The port's receive buffer may still hold the flood's tail (the kernel
    // drops what does not fit, a real packet too): relaying resumes once
    // the worker has read it, within the phone's next few packets.
    let resumed = (0..25).any(|_| {
        a.send_rtp(to_a);
        recv_n(&b.rtp, 1).len() == 1
    });
    assert!(resumed, "the flooded port still relays");
    let (s, _) = d.get("/healthz").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn non_rtp_streams_are_relayed_as_opaque_udp() {
    let d = Daemon::start(10, &[]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let fax = |p: &Peer| {
        format!(
            "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=image {} udptl t38\r\na=T38FaxVersion:0\r\n",
            p.addr().port()
        )
    };
    let (_, offer) = d
        .post("/v1/calls/fax/offer", json!({"from_tag": "ta", "sdp": fax(&a)}))
        .await;
    let (_, answer) = d
        .post(
            "/v1/calls/fax/answer",
            json!({"from_tag": "ta", "to_tag": "tb", "sdp": fax(&b)}),
        )
        .await;
    let port = |s: &str| -> u16 {
        s.lines()
            .find_map(|l| l.strip_prefix("m=image ")?.split(' ').next()?.parse().ok())
            .unwrap()
    };
    let to_a = format!("127.0.0.1:{}", port(answer["sdp"].as_str().unwrap()));
    a.rtp.send_to(b"\x00\x01udptl-not-rtp", &to_a).unwrap();
    let got = recv_n(&b.rtp, 1);
    assert_eq!(got[0].0, b"\x00\x01udptl-not-rtp");
    let _ = offer;
}

/// The socket inode /proc/net/udp shows for a local port, if one is bound.
fn udp_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let local = format!(":{port:04X} ");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let matches = f.get(1)?.ends_with(local.trim_end());
        matches.then(|| f.get(9)?.parse().ok()).flatten()
    })
}

/// An ended call's sockets stay bound for the next call on their ports (no
/// socket, bind and close per port), and in between the ports look closed.
#[tokio::test]
async fn ports_of_an_ended_call_keep_their_sockets_for_the_next() {
    let d = Daemon::start_with_range(129, 4, &[]).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("first", &a, &b).await;
    exchange(&mut a, to_a, &mut b, to_b, 3);
    let inodes: Vec<_> = [to_a, to_b].iter().map(|t| udp_inode(t.port())).collect();
    assert!(inodes.iter().all(Option::is_some), "{inodes:?}");
    let (s, fin) = d.delete("/v1/calls/first").await;
    assert_eq!(s, 200, "{fin}");
    assert_eq!(inodes, [to_a, to_b].map(|t| udp_inode(t.port())), "still bound");
    let parked = |m: &str| metric(m, "chorus_ports_parked{interface=\"default\"}");
    assert_eq!(parked(&d.metrics().await), 4.0);
    // A late packet is refused as by a closed port, and never relayed.
    let late = UdpSocket::bind("127.0.0.1:0").unwrap();
    late.connect(to_a).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    late.send(&rtp(0, 1, 160, 7, &[0; 160])).unwrap();
    let refused = late.recv(&mut [0u8; 8]).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
    // The next call gets the same ports (four in the range) and sockets.
    let (mut c, mut e) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_c, to_e) = d.call("second", &c, &e).await;
    let mut now: Vec<_> = [to_c, to_e].iter().map(|t| udp_inode(t.port())).collect();
    let mut before = inodes.clone();
    now.sort();
    before.sort();
    assert_eq!(now, before, "the same sockets serve the next call");
    assert_eq!(parked(&d.metrics().await), 0.0);
    exchange(&mut c, to_c, &mut e, to_e, 3);
    assert_eq!(drain(&c.rtp) + drain(&e.rtp) + drain(&a.rtp) + drain(&b.rtp), 0);
    let (s, fin) = d.delete("/v1/calls/second").await;
    assert_eq!(s, 200, "{fin}");
    assert_eq!(fin["legs"][0]["streams"][0]["stats"]["rtp"]["packets"], 3, "{fin}");
}
