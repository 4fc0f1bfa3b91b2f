//! Real SIP peers for the interop tests: Kamailio (its rtpengine module
//! pointed at chorus), sipp as caller and callee, an echoing callee socket.
//! Needs `kamailio` and `sipp` (scripts/test installs them) and root (sipp's
//! pcap play uses raw sockets).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// 50 PCMU packets, 20 ms apart, as Ethernet/IPv4/UDP frames (what sipp's
/// play_pcap_audio replays to the callee's media address).
pub fn write_pcap(path: &Path, packets: usize) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for i in 0..packets {
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

pub fn require(tool: &str) {
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
pub fn register(kamailio_port: u16, contact_port: u16) {
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

pub struct Killed(pub std::process::Child);
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
pub struct Group(pub std::process::Child);
impl Group {
    fn signal(&self, sig: &str) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args([sig, "--", &group])
            .stderr(Stdio::null())
            .status();
    }

    /// Whether any process of the group is still alive.
    pub fn any_alive(&self) -> bool {
        Command::new("pgrep")
            .args(["-g", &self.0.id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn stop(&mut self) {
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

/// The callee's media: one socket that records, per source (one chorus
/// port per call), when RTP arrived, and echoes it back.
pub struct Echo {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<HashMap<SocketAddr, Vec<Instant>>>,
}

impl Echo {
    pub fn start() -> Echo {
        let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
        callee.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let port = callee.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen: HashMap<SocketAddr, Vec<Instant>> = HashMap::new();
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = callee.recv_from(&mut buf) {
                    seen.entry(from).or_default().push(Instant::now());
                    let _ = callee.send_to(&buf[..n], from);
                }
            }
            seen
        });
        Echo { port, stop, thread }
    }

    /// Stops; returns the arrival times per source.
    pub fn finish(self) -> HashMap<SocketAddr, Vec<Instant>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Kamailio with the shipped configuration, its ports and rtpengine set
/// replaced for the test, and `defines` (`-A`) set.
pub fn kamailio(dir: &Path, kport: u16, ng: &[SocketAddr], defines: &[&str]) -> (Group, PathBuf) {
    kamailio_ws(dir, kport, 8088, ng, defines)
}

/// As [`kamailio`], with SIP over WebSocket on `ws_port` when `defines`
/// has `WITH_WEBSOCKET`.
pub fn kamailio_ws(dir: &Path, kport: u16, ws_port: u16, ng: &[SocketAddr], defines: &[&str]) -> (Group, PathBuf) {
    let socks: Vec<String> = ng.iter().map(|a| format!("udp:{a}")).collect();
    let cfg = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kamailio/kamailio.cfg"))
        .unwrap()
        .replace("udp:127.0.0.1:5060", &format!("udp:127.0.0.1:{kport}"))
        .replace("tcp:127.0.0.1:8088", &format!("tcp:127.0.0.1:{ws_port}"))
        .replace("udp:127.0.0.1:22222 udp:127.0.0.1:22223", &socks.join(" "))
        .replace("udp:127.0.0.1:22222", &socks[0]);
    let cfg_path = dir.join("kamailio.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let log = dir.join("kamailio.log");
    let mut cmd = Command::new("kamailio");
    cmd.process_group(0)
        .args([
            "-f",
            cfg_path.to_str().unwrap(),
            "-DD",
            "-E",
            "-Y",
            run.to_str().unwrap(),
        ])
        .args(["-P", run.join("kamailio.pid").to_str().unwrap()]);
    for d in defines {
        cmd.args(["-A", d]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("kamailio starts");
    (Group(child), log)
}

/// The sipp scenarios of tests/sipp with this test's pcap, callee port and
/// the caller's pause between its pcap starting and the re-INVITE.
pub fn scenarios(dir: &Path, pcap: &Path, callee_port: u16, pause_ms: u32) -> (PathBuf, PathBuf) {
    let sipp_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp");
    let uac_xml = dir.join("uac.xml");
    let uac = std::fs::read_to_string(sipp_dir.join("uac.xml"))
        .unwrap()
        .replace("PCAP_FILE", pcap.to_str().unwrap())
        .replace(
            "<pause milliseconds=\"1500\"/>",
            &format!("<pause milliseconds=\"{pause_ms}\"/>"),
        );
    std::fs::write(&uac_xml, uac).unwrap();
    let uas_xml = dir.join("uas.xml");
    let uas = std::fs::read_to_string(sipp_dir.join("uas.xml"))
        .unwrap()
        .replace("CALLEE_MEDIA_PORT", &callee_port.to_string());
    std::fs::write(&uas_xml, uas).unwrap();
    (uac_xml, uas_xml)
}

/// The sipp callee, in the background, for `calls` calls.
pub fn callee(dir: &Path, uas_xml: &Path, port: u16, calls: usize) -> Killed {
    Killed(
        Command::new("sipp")
            .args([
                "-sf",
                uas_xml.to_str().unwrap(),
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .args(["-m", &calls.to_string(), "-bg", "-trace_err"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("sipp callee starts"),
    )
}

/// The sipp caller: `calls` calls through Kamailio, `limit` at once, `rate` per second.
pub fn caller(
    dir: &Path,
    uac_xml: &Path,
    kport: u16,
    port: u16,
    calls: usize,
    limit: usize,
    rate: usize,
) -> std::process::Child {
    Command::new("sipp")
        .arg(format!("127.0.0.1:{kport}"))
        .args(["-sf", uac_xml.to_str().unwrap(), "-s", "bob", "-i", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-mp", "46000"])
        .args([
            "-m",
            &calls.to_string(),
            "-l",
            &limit.to_string(),
            "-r",
            &rate.to_string(),
        ])
        .args(["-timeout", "60s", "-timeout_error", "-trace_err"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp caller runs")
}

/// Packet counts of the `$rtpstat` lines Kamailio logged at BYE.
pub fn rtpstat_packets(klog: &str) -> Vec<usize> {
    klog.lines()
        .filter(|l| l.contains("chorus rtpstat call="))
        .map(|line| {
            let rtp = line
                .split("RTP: ")
                .nth(1)
                .unwrap_or_else(|| panic!("no RTP stats: {line}"));
            rtp.split(" bytes, ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}
