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
