//! Interop with real software: Kamailio (registrar + proxy, its rtpengine
//! module pointed at chorus's ng socket) and sipp as caller and callee.
//! Calls carry RTP from a pcap through chorus, are re-INVITEd to hold, and
//! end with BYE. Needs `kamailio` and `sipp` (scripts/test installs them)
//! and root (sipp's pcap play uses raw sockets).

mod common;
use common::sip::*;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CALLS: usize = 3;
const PCAP_PACKETS: usize = 50;

#[tokio::test(flavor = "multi_thread")]
async fn kamailio_and_sipp_place_calls_through_chorus() {
    require("kamailio");
    require("sipp");
    let d = Daemon::start(40, &[]).await;
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop");
    std::fs::create_dir_all(&dir).unwrap();
    let (kport, uas_port, uac_port) = (free_udp_port(), free_udp_port(), free_udp_port());
    let echo = Echo::start();
    let (mut kamailio, klog_path) = kamailio(&dir, kport, &[d.ng], &[]);
    register(kport, uas_port);

    let pcap = dir.join("pcmu-1s.pcap");
    write_pcap(&pcap, PCAP_PACKETS);
    let (uac_xml, uas_xml) = scenarios(&dir, &pcap, echo.port, 1500);
    let uas = callee(&dir, &uas_xml, uas_port, CALLS);
    let uac = caller(&dir, &uac_xml, kport, uac_port, CALLS, 1, 2)
        .wait()
        .expect("sipp caller runs");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = echo.finish();
    drop(uas);
    kamailio.stop();
    assert!(!kamailio.any_alive(), "every Kamailio process ended");
    let klog = std::fs::read_to_string(&klog_path).unwrap_or_default();
    assert!(
        uac.success(),
        "sipp caller failed ({uac}); see target/interop/*errors.log and {}",
        klog_path.display()
    );

    // Every call's RTP reached the callee, each call from its own chorus port.
    assert_eq!(seen.len(), CALLS, "one chorus source port per call: {seen:?}");
    for (from, arrivals) in &seen {
        assert!(
            from.port() >= d.port_min && from.port() < d.port_min + PORTS_PER_SLOT,
            "{from} is chorus's"
        );
        assert_eq!(arrivals.len(), PCAP_PACKETS, "callee got the whole pcap from {from}");
    }
    // chorus's own per-call statistics, read by Kamailio's $rtpstat at BYE,
    // agree: the caller's packets plus the callee's echoes.
    let stats = rtpstat_packets(&klog);
    assert_eq!(
        stats,
        vec![2 * PCAP_PACKETS; CALLS],
        "one $rtpstat line per BYE:\n{klog}"
    );
    // Nothing is left in chorus after the BYEs.
    let (_, list) = d.get("/v1/calls").await;
    assert_eq!(list["total"], 0, "{list}");
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "chorus_control_requests_total{endpoint=\"ng:offer\",result=\"ok\"}"),
        2.0 * CALLS as f64
    );
    assert_eq!(
        metric(
            &m,
            "chorus_control_requests_total{endpoint=\"ng:delete\",result=\"ok\"}"
        ),
        CALLS as f64
    );
}
