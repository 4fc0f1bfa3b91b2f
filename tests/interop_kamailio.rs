//! Interop with real software: Kamailio (registrar + proxy, its rtpengine
//! module pointed at chorus's ng socket) and sipp as caller and callee.
//! Calls carry RTP from a pcap through chorus, are re-INVITEd to hold, and
//! end with BYE. Needs `kamailio` and `sipp` (scripts/test installs them)
//! and root (sipp's pcap play uses raw sockets).

mod common;
use common::*;
use std::collections::HashMap;
use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALLS: usize = 3;
const PCAP_PACKETS: usize = 50;

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// 50 PCMU packets, 20 ms apart, as Ethernet/IPv4/UDP frames (what sipp's
/// play_pcap_audio replays to the callee's media address).
fn write_pcap(path: &Path) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for i in 0..PCAP_PACKETS {
        let mut rtp = vec![0xffu8; 172];
        chorus::wire::rtp::write_header(&mut rtp, 0, i as u16, i as u32 * 160, 0x5151).unwrap();
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
            127,
            0,
            0,
            1,
            127,
            0,
            0,
            1,
        ];
        let sum: u32 = ip.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&[0x13, 0x88, 0x13, 0x88, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
        frame.extend_from_slice(&rtp);
        let usec = i * 20_000;
        out.extend_from_slice(&((usec / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((usec % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).unwrap();
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(
        found,
        "`{tool}` is not installed: run scripts/test, which installs kamailio and sip-tester"
    );
}

/// Registers bob's contact (the sipp callee) with Kamailio; retries while it starts.
fn register(kamailio_port: u16, contact_port: u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let me = s.local_addr().unwrap().port();
    let msg = format!(
        "REGISTER sip:127.0.0.1:{kamailio_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-reg-{me}\r\n\
         From: <sip:bob@127.0.0.1>;tag=reg{me}\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: reg-{me}@127.0.0.1\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:bob@127.0.0.1:{contact_port}>\r\nExpires: 300\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        s.send_to(msg.as_bytes(), ("127.0.0.1", kamailio_port)).unwrap();
        if let Ok(n) = s.recv(&mut buf) {
            let reply = String::from_utf8_lossy(&buf[..n]);
            assert!(reply.starts_with("SIP/2.0 200"), "REGISTER refused: {reply}");
            return;
        }
    }
    panic!("Kamailio did not answer REGISTER within 15 s");
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kamailio in a process group of its own: its main process forks workers,
/// and a SIGKILL to the main process alone would leave them running with
/// their sockets. Stopped with SIGTERM to the group (Kamailio's own clean
/// shutdown), then SIGKILL to whatever is left after 3 s.
struct Group(std::process::Child);
impl Group {
    fn signal(&self, sig: &str) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args([sig, "--", &group])
            .stderr(Stdio::null())
            .status();
    }

    /// Whether any process of the group is still alive.
    fn any_alive(&self) -> bool {
        Command::new("pgrep")
            .args(["-g", &self.0.id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn stop(&mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        let _ = self.0.try_wait();
        while self.any_alive() && Instant::now() < deadline {
            let _ = self.0.try_wait();
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal("-KILL");
        let _ = self.0.wait();
    }
}
impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kamailio_and_sipp_place_calls_through_chorus() {
    require("kamailio");
    require("sipp");
    let d = Daemon::start(40, &[]).await;
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop");
    std::fs::create_dir_all(&dir).unwrap();
    let (kport, uas_port, uac_port, uac_media) = (free_udp_port(), free_udp_port(), free_udp_port(), 46000);

    // The callee's media: a real socket that counts RTP per source and echoes it.
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    callee.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let callee_port = callee.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let echo = std::thread::spawn(move || {
        let mut counts: HashMap<std::net::SocketAddr, usize> = HashMap::new();
        let mut buf = [0u8; 2048];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = callee.recv_from(&mut buf) {
                *counts.entry(from).or_default() += 1;
                let _ = callee.send_to(&buf[..n], from);
            }
        }
        counts
    });

    // Kamailio with the shipped configuration, on test ports.
    let cfg = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kamailio/kamailio.cfg"))
        .unwrap()
        .replace("udp:127.0.0.1:5060", &format!("udp:127.0.0.1:{kport}"))
        .replace("udp:127.0.0.1:22222", &format!("udp:{}", d.ng));
    let cfg_path = dir.join("kamailio.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let klog_path = dir.join("kamailio.log");
    let mut kamailio = Group(
        Command::new("kamailio")
            .process_group(0)
            .args([
                "-f",
                cfg_path.to_str().unwrap(),
                "-DD",
                "-E",
                "-Y",
                run.to_str().unwrap(),
            ])
            .args(["-P", run.join("kamailio.pid").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&klog_path).unwrap())
            .spawn()
            .expect("kamailio starts"),
    );
    register(kport, uas_port);

    let pcap = dir.join("pcmu-1s.pcap");
    write_pcap(&pcap);
    let sipp_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp");
    let uac_xml = dir.join("uac.xml");
    std::fs::write(
        &uac_xml,
        std::fs::read_to_string(sipp_dir.join("uac.xml"))
            .unwrap()
            .replace("PCAP_FILE", pcap.to_str().unwrap()),
    )
    .unwrap();
    let uas_xml = dir.join("uas.xml");
    std::fs::write(
        &uas_xml,
        std::fs::read_to_string(sipp_dir.join("uas.xml"))
            .unwrap()
            .replace("CALLEE_MEDIA_PORT", &callee_port.to_string()),
    )
    .unwrap();
    let uas = Killed(
        Command::new("sipp")
            .args([
                "-sf",
                uas_xml.to_str().unwrap(),
                "-i",
                "127.0.0.1",
                "-p",
                &uas_port.to_string(),
            ])
            .args(["-m", &CALLS.to_string(), "-bg", "-trace_err"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("sipp callee starts"),
    );
    let uac = Command::new("sipp")
        .arg(format!("127.0.0.1:{kport}"))
        .args(["-sf", uac_xml.to_str().unwrap(), "-s", "bob", "-i", "127.0.0.1"])
        .args(["-p", &uac_port.to_string(), "-mp", &uac_media.to_string()])
        .args([
            "-m",
            &CALLS.to_string(),
            "-l",
            "1",
            "-r",
            "2",
            "-timeout",
            "60s",
            "-timeout_error",
            "-trace_err",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sipp caller runs");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let counts = echo.join().unwrap();
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
    assert_eq!(counts.len(), CALLS, "one chorus source port per call: {counts:?}");
    for (from, n) in &counts {
        assert!(
            from.port() >= d.port_min && from.port() < d.port_min + PORTS_PER_SLOT,
            "{from} is chorus's"
        );
        assert_eq!(*n, PCAP_PACKETS, "callee got the whole pcap from {from}");
    }
    // chorus's own per-call statistics, read by Kamailio's $rtpstat at BYE,
    // agree: the caller's packets plus the callee's echoes.
    let stats: Vec<&str> = klog.lines().filter(|l| l.contains("chorus rtpstat call=")).collect();
    assert_eq!(stats.len(), CALLS, "one $rtpstat line per BYE:\n{klog}");
    for line in stats {
        let rtp = line
            .split("RTP: ")
            .nth(1)
            .unwrap_or_else(|| panic!("no RTP stats: {line}"));
        let packets: usize = rtp
            .split(" bytes, ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(packets, 2 * PCAP_PACKETS, "{line}");
    }
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
