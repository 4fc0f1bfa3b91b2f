//! Kamailio with two chorus instances in one rtpengine set (the shipped
//! configuration with `-A CHORUS_PAIR`), sharing a real redis-server. sipp
//! places 20 calls with RTP from a pcap; one instance is killed with SIGKILL
//! mid-call. Every call's media goes on (the survivor took the dead one's
//! calls over on the same addresses and ports), the re-INVITEs and BYEs
//! still get answers, and `$rtpstat` is still answered at every BYE.

mod common;
use common::redis_server::RedisServer;
use common::sip::*;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CALLS: usize = 20;
const PCAP_PACKETS: usize = 200; // 4 s
const SLOT: u16 = 96; // 200 ports: slots 96..=100

async fn instance(redis: &RedisServer, name: &str, ip: &str) -> Daemon {
    let mut args = redis.chorus_args(name);
    args.extend(["--media-bind".to_string(), ip.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_logged(SLOT, 200, &args, &[], &format!("pair-{name}")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_through_kamailio_survive_killing_one_of_two_instances() {
    require("kamailio");
    require("sipp");
    let redis = RedisServer::start();
    // Both up before Kamailio, whose module disables a node that misses its first ping.
    let a = instance(&redis, "pair-a", "127.0.0.2").await;
    let b = instance(&redis, "pair-b", "127.0.0.3").await;
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-pair");
    std::fs::create_dir_all(&dir).unwrap();
    let (kport, uas_port, uac_port) = (free_udp_port(), free_udp_port(), free_udp_port());
    let echo = Echo::start();
    let (mut kamailio, klog_path) = kamailio(&dir, kport, &[a.ng, b.ng], &["CHORUS_PAIR"]);
    register(kport, uas_port);
    let pcap = dir.join("pcmu-4s.pcap");
    write_pcap(&pcap, PCAP_PACKETS);
    // The re-INVITE (hold) comes 5 s after each call's media starts: after the kill.
    let (uac_xml, uas_xml) = scenarios(&dir, &pcap, echo.port, 5000);
    let uas = callee(&dir, &uas_xml, uas_port, CALLS);
    let mut uac = caller(&dir, &uac_xml, kport, uac_port, CALLS, CALLS, CALLS);

    // All 20 calls are up within about a second; kill A in the middle of their media.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (_, on_a) = a.get("/v1/calls?limit=1000").await;
    let (_, on_b) = b.get("/v1/calls?limit=1000").await;
    let kill = Instant::now();
    drop(a); // SIGKILL
    let uac = tokio::task::spawn_blocking(move || uac.wait()).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = echo.finish();
    drop(uas);
    kamailio.stop();
    let klog = std::fs::read_to_string(&klog_path).unwrap_or_default();
    assert!(
        uac.success(),
        "sipp caller failed ({uac}); see {}/*errors.log and {}",
        dir.display(),
        klog_path.display()
    );

    let (n_a, n_b) = (on_a["total"].as_u64().unwrap(), on_b["total"].as_u64().unwrap());
    assert_eq!(n_a + n_b, CALLS as u64, "every call on one instance: {on_a} {on_b}");
    assert!(n_a > 0 && n_b > 0, "Kamailio spread the calls: {n_a} on A, {n_b} on B");
    // Every call's media, from its chorus address, went on after the kill.
    assert_eq!(seen.len(), CALLS, "one chorus source per call: {:?}", seen.keys());
    let mut from_a = 0;
    for (from, arrivals) in &seen {
        let before = arrivals.iter().filter(|t| **t < kill).count();
        let after = arrivals
            .iter()
            .filter(|t| **t > kill + Duration::from_millis(1200))
            .count();
        assert!(
            before > 0 && after > 0,
            "{from}: {before} packets before the kill, {after} after"
        );
        from_a += usize::from(from.ip().to_string() == "127.0.0.2");
    }
    assert_eq!(from_a as u64, n_a, "A's calls kept A's address");
    // The survivor answered every call's BYE, `$rtpstat` included.
    let stats = rtpstat_packets(&klog);
    assert_eq!(stats.len(), CALLS, "one $rtpstat line per BYE:\n{klog}");
    assert!(stats.iter().all(|&p| p > 0), "{stats:?}");
    let (_, left) = b.get("/v1/calls").await;
    assert_eq!(left["total"], 0, "every call ended on B: {left}");
}
