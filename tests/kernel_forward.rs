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
use std::process::Command;
use std::time::Duration;

/// Whether this machine lets a process forward in the kernel: Linux 6.6+
/// (tcx) and a bpf(2) that works (capabilities, no seccomp filter in the
/// way). Probed apart from chorus, so that a chorus that fails to load its
/// program on a machine that allows it fails these tests.
fn machine_allows_ebpf() -> Result<(), String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").map_err(|e| e.to_string())?;
    let mut v = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if (major, minor) < (6, 6) {
        return Err(format!("Linux {} has no tcx (6.6+)", release.trim()));
    }
    // BPF_MAP_CREATE of a one-entry array: map_type 2, key 4, value 4.
    let mut attr = [0u32; 5];
    attr[..4].copy_from_slice(&[2, 4, 4, 1]);
    // SAFETY: a valid bpf_attr prefix for BPF_MAP_CREATE, its size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), std::mem::size_of_val(&attr)) };
    if fd < 0 {
        return Err(format!("bpf(2) refused: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the descriptor just created, closed once.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Skips a kernel-path test, loudly, where the machine does not allow it.
macro_rules! needs_ebpf {
    () => {
        if let Err(why) = machine_allows_ebpf() {
            eprintln!("SKIPPED: kernel forwarding cannot run on this machine: {why}");
            return;
        }
    };
}

/// IPv6 tests skip on a machine where IPv6 is off.
macro_rules! needs_ipv6 {
    () => {
        if UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("SKIPPED: no IPv6 here");
            return;
        }
    };
}

/// Sends, through a raw socket (root), an RTP datagram from `from` to `to`
/// whose UDP header claims 100 bytes more than it carries.
fn lying_datagram(from: SocketAddr, to: SocketAddr) {
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
        panic!("IPv4 only")
    };
    let rtp = rtp(0, 1, 160, 1, &[0xff; 160]);
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend_from_slice(&from.ip().octets());
    p.extend_from_slice(&to.ip().octets());
    p.extend_from_slice(&from.port().to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&((8 + rtp.len() + 100) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum
    p.extend_from_slice(&rtp);
    // The kernel fills in the IP header's total length and checksum.
    let raw = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
    )
    .expect("a raw socket (root)");
    raw.send_to(&p, &SocketAddr::V4(to).into()).unwrap();
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
    needs_ebpf!();
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

    // A datagram from A's own address whose UDP length claims more than
    // it carries is neither forwarded nor counted by the kernel.
    let before = kernel_streams(&d).await.1;
    lying_datagram(a.addr(), to_a);
    assert_eq!(drain(&b.rtp), 0, "the lie is not forwarded");
    assert_eq!(kernel_streams(&d).await.1, before, "nor counted");

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
    needs_ebpf!();
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

/// A second host: a network namespace joined to this one by a veth pair,
/// with checksum offload off at both ends, so every UDP checksum is
/// computed by its sender and verified by its receiver.
struct Host {
    ns: String,
    /// This side's address (chorus's media address) and the other host's.
    here: String,
    there: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2 runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ethtool_off(ns: Option<&str>, dev: &str) {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "ethtool"]);
            c
        }
        None => Command::new("ethtool"),
    };
    let out = c
        .args(["-K", dev, "rx", "off", "tx", "off"])
        .output()
        .expect("ethtool runs");
    assert!(
        out.status.success(),
        "ethtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Host {
    /// Needs root (as the whole suite does); `n` keeps parallel tests apart.
    fn new(n: u8, v6: bool) -> Host {
        let pid = std::process::id();
        let ns = format!("chorus-kf{n}-{pid}");
        let (a, b) = (format!("kfa{n}-{}", pid % 10000), format!("kfb{n}-{}", pid % 10000));
        let (here, there, prefix) = if v6 {
            (format!("fd00:201:{n}::1"), format!("fd00:201:{n}::2"), 64)
        } else {
            (format!("10.201.{n}.1"), format!("10.201.{n}.2"), 24)
        };
        ip(&["netns", "add", &ns]);
        let host = Host { ns, here, there };
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &b, "netns", &host.ns]);
        // nodad: usable at once (IPv6 would first probe for duplicates).
        ip(&["addr", "add", &format!("{}/{prefix}", host.here), "dev", &a, "nodad"]);
        ip(&["link", "set", &a, "up"]);
        let inside = |args: &[&str]| {
            let mut v = vec!["netns", "exec", &host.ns, "ip"];
            v.extend_from_slice(args);
            ip(&v);
        };
        inside(&["addr", "add", &format!("{}/{prefix}", host.there), "dev", &b, "nodad"]);
        inside(&["link", "set", &b, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ethtool_off(None, &a);
        ethtool_off(Some(&host.ns), &b);
        host
    }

    /// Runs `f` on a thread inside the namespace: sockets it makes live there.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("the namespace exists");
            // SAFETY: setns on this thread only, with a namespace descriptor.
            let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the namespace thread ends")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // The veth pair goes with the namespace that holds one end.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Packets the kernel rejected for a bad UDP checksum, seen from inside
/// `host` (over IPv4 and IPv6).
fn csum_errors(host: &Host) -> u64 {
    host.run(|| {
        let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap();
        let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
        let (names, values) = (udp[0].split_whitespace(), udp[1].split_whitespace());
        let v4: u64 = names
            .zip(values)
            .find(|(n, _)| *n == "InCsumErrors")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let snmp6 = std::fs::read_to_string("/proc/net/snmp6").unwrap_or_default();
        let v6: u64 = snmp6
            .lines()
            .find_map(|l| l.strip_prefix("Udp6InCsumErrors"))
            .map_or(0, |v| v.trim().parse().unwrap());
        v4 + v6
    })
}

/// Phones on another host: forwarded out of the interface the route
/// names, every checksum verified by the receiver.
async fn phones_on_another_host(n: u8, v6: bool, slot: u16) {
    let host = Host::new(n, v6);
    let d = Daemon::start(slot, &["--kernel-forward", "on", "--media-bind", &host.here]).await;
    let there = host.there.clone();
    let (mut a, mut b) = host.run(move || (Peer::new(&there), Peer::new(&there)));
    let (to_a, to_b) = d.call("kremote", &a, &b).await;
    assert_eq!(to_a.is_ipv6(), v6);
    let errors = csum_errors(&host);
    // Exchanged from inside the namespace: its sockets are there already,
    // but the reads and writes may run anywhere.
    exchange(&mut a, to_a, &mut b, to_b, 50);
    let m = d.metrics().await;
    let forwarded = metric(&m, "chorus_kernel_forwarded_packets_total");
    assert!(
        forwarded >= 90.0,
        "the kernel forwarded {forwarded} of 100, out of the veth"
    );
    assert_eq!(csum_errors(&host), errors, "no packet with a bad checksum");
}

#[tokio::test(flavor = "multi_thread")]
async fn phones_on_another_host_are_forwarded_out_of_its_interface_with_right_checksums() {
    needs_ebpf!();
    phones_on_another_host(1, false, 120).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_phones_on_another_host_too() {
    needs_ebpf!();
    needs_ipv6!();
    phones_on_another_host(2, true, 126).await;
}

/// Packets sent out of `dev` (this namespace's side of a veth pair).
fn tx_packets(dev: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/tx_packets");
    std::fs::read_to_string(&path).map_or(0, |s| s.trim().parse().unwrap_or(0))
}

/// A route change mid-call: the phones' host becomes reachable by a second
/// link. The kernel-forwarded directions follow it within a few seconds
/// (they are taken back and handed over again with the new egress), where
/// they kept the old interface until the call's next command before.
/// IPv6, which has no reverse-path filter to drop the phones' packets
/// that still come in by the first link.
#[tokio::test(flavor = "multi_thread")]
async fn kernel_forwarding_follows_a_route_change() {
    needs_ebpf!();
    needs_ipv6!();
    let host = Host::new(3, true);
    let pid = std::process::id() % 10000;
    let (first, second) = (format!("kfa3-{pid}"), format!("kfc3-{pid}"));
    let far = format!("kfd3-{pid}");
    ip(&["link", "add", &second, "type", "veth", "peer", "name", &far]);
    ip(&["link", "set", &far, "netns", &host.ns]);
    ip(&["addr", "add", "fd00:202:3::1/64", "dev", &second, "nodad"]);
    ip(&["link", "set", &second, "up"]);
    let inside = |args: &[&str]| ip(&[&["-n", host.ns.as_str()], args].concat());
    inside(&["addr", "add", "fd00:202:3::2/64", "dev", &far, "nodad"]);
    inside(&["link", "set", &far, "up"]);
    // The phones' own address, reached by the first link to begin with.
    inside(&["addr", "add", "fd00:203:3::2/128", "dev", "lo"]);
    let to_phones = |via: &str, dev: &str| ip(&["-6", "route", "replace", "fd00:203:3::2/128", "via", via, "dev", dev]);
    to_phones(&host.there, &first);
    // A neighbour solicitation for a packet from the phones' address (not
    // on the link) comes from the link-local address, which is tentative
    // for its first second: until then nobody answers.
    let tentative = |netns: &[&str], dev: &str| {
        let out = Command::new("ip")
            .args(netns)
            .args(["-6", "addr", "show", "dev", dev])
            .output();
        String::from_utf8_lossy(&out.expect("ip runs").stdout).contains("tentative")
    };
    let b_side = format!("kfb3-{pid}");
    let netns = ["-n", host.ns.as_str()];
    let settled = std::time::Instant::now() + Duration::from_secs(5);
    while tentative(&netns, &b_side) || tentative(&netns, &far) || tentative(&[], &first) || tentative(&[], &second) {
        assert!(std::time::Instant::now() < settled, "IPv6 addresses still tentative");
        std::thread::sleep(Duration::from_millis(100));
    }
    let d = Daemon::start(128, &["--kernel-forward", "on", "--media-bind", &host.here]).await;
    let (mut a, mut b) = host.run(|| (Peer::new("fd00:203:3::2"), Peer::new("fd00:203:3::2")));
    let (to_a, to_b) = d.call("kroute", &a, &b).await;
    exchange(&mut a, to_a, &mut b, to_b, 20);
    assert_eq!(kernel_streams(&d).await.0, 2.0, "both directions in the kernel");

    to_phones("fd00:202:3::2", &second);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (forwarded, by_first, by_second) = (kernel_streams(&d).await.1, tx_packets(&first), tx_packets(&second));
    exchange(&mut a, to_a, &mut b, to_b, 50);
    let more = kernel_streams(&d).await.1 - forwarded;
    let (by_first, by_second) = (tx_packets(&first) - by_first, tx_packets(&second) - by_second);
    assert!(
        by_second >= 100,
        "{by_second} of 100 packets left by the new link ({by_first} by the old)"
    );
    assert!(by_first < 10, "{by_first} packets still left by the old link");
    assert!(
        more >= 90.0,
        "back in the kernel with the new route: {more} of 100 forwarded there"
    );

    // No route for a while (unreachable, not deleted: the machine's default
    // route must not carry test traffic): both directions come back, and
    // the kernel refuses them while it lasts. Once the route returns, they
    // go back to the kernel within seconds, with no new command.
    ip(&["-6", "route", "replace", "unreachable", "fd00:203:3::2/128"]);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(kernel_streams(&d).await.0, 0.0, "taken back: no route");
    for _ in 0..3 {
        a.send_rtp(to_a);
        b.send_rtp(to_b);
    }
    to_phones("fd00:202:3::2", &second);
    let deadline = std::time::Instant::now() + Duration::from_secs(9);
    while kernel_streams(&d).await.0 < 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "still refused after the route came back"
        );
        exchange(&mut a, to_a, &mut b, to_b, 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where the kernel cannot forward (here: an interface that does not
/// exist), `on` refuses to start and says why; `auto` says why and relays
/// in userspace.
#[tokio::test(flavor = "multi_thread")]
async fn without_kernel_forwarding_auto_relays_in_userspace_and_on_refuses_to_start() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("kernel-missing-interface.toml");
    std::fs::write(&config, "kernel_interfaces = [\"nosuch0\"]\n").unwrap();
    let config = config.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["serve", "--config", &config, "--kernel-forward", "on"])
        .args(["--http-listen", "127.0.0.1:0", "--ng-listen", "127.0.0.1:0"])
        .args(["--port-min", "24840", "--port-max", "24879"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without kernel forwarding: {stderr}");
    // Why: the missing interface, or (where the machine allows no eBPF at
    // all) whatever stopped it first.
    let allowed = machine_allows_ebpf().is_ok();
    assert!(
        stderr.contains("kernel_forward") && (stderr.contains("nosuch0") || !allowed),
        "{stderr}"
    );

    let d = Daemon::start(121, &["--config", &config]).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("kauto", &a, &b).await;
    exchange(&mut a, to_a, &mut b, to_b, 20);
    assert_eq!(kernel_streams(&d).await, (0.0, 0.0), "all in userspace");
    let log = std::fs::read_to_string(dir.join("slot-121.log")).unwrap();
    assert!(
        log.contains("relaying in userspace only") && (log.contains("nosuch0") || !allowed),
        "{log}"
    );
}

/// A call whose media flows only through the kernel is alive: the media
/// timeout reads the kernel's last-seen time, and ends the call once the
/// phones stop.
#[tokio::test(flavor = "multi_thread")]
async fn the_media_timeout_sees_what_the_kernel_forwards() {
    needs_ebpf!();
    let d = Daemon::start(122, &["--kernel-forward", "on", "--media-timeout", "1"]).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("kt", &a, &b).await;
    // Two seconds of talk, every packet but the first few in the kernel.
    for _ in 0..40 {
        exchange(&mut a, to_a, &mut b, to_b, 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kernel_streams(&d).await.0, 2.0);
    let (s, _) = d.get("/v1/calls/kt").await;
    assert_eq!(s, 200, "a call talking through the kernel did not time out");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (s, _) = d.get("/v1/calls/kt").await;
    assert_eq!(s, 404, "a silent call timed out");
    assert_eq!(kernel_streams(&d).await.0, 0.0);
}

/// The kernel keeps RFC 3550's interarrival jitter of what it forwards: a
/// call handed over while smooth, whose packets then come 10 ms early and
/// 10 ms late in turn, reports about 10 ms (userspace reported the jitter
/// frozen at the hand-over before).
#[tokio::test(flavor = "multi_thread")]
async fn the_kernel_measures_the_jitter_of_what_it_forwards() {
    needs_ebpf!();
    let d = Daemon::start(127, &["--kernel-forward", "on"]).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("kj", &a, &b).await;
    let jitter = |call: &serde_json::Value| call["legs"][0]["streams"][0]["stats"]["rtp"]["jitter_ms"].as_f64();
    for _ in 0..4 {
        exchange(&mut a, to_a, &mut b, to_b, 1);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(kernel_streams(&d).await.0, 2.0, "both directions in the kernel");
    let (_, call) = d.get("/v1/calls/kj").await;
    let smooth = jitter(&call).unwrap_or(f64::NAN);
    // 20 ms of timestamps per packet, sent 10 then 30 ms apart: |D| = 10 ms.
    for i in 0..80 {
        a.send_rtp(to_a);
        std::thread::sleep(Duration::from_millis(if i % 2 == 0 { 10 } else { 30 }));
    }
    assert_eq!(recv_n(&b.rtp, 80).len(), 80);
    let (_, call) = d.get("/v1/calls/kj").await;
    let measured = jitter(&call).unwrap_or(f64::NAN);
    assert!(smooth < 4.0, "smooth at the hand-over: {smooth} ms");
    assert!(
        (7.0..16.0).contains(&measured),
        "10 ms of jitter measured as {measured} ms: {call}"
    );
    // The final statistics keep it.
    let (_, fin) = d.delete("/v1/calls/kj").await;
    let last = jitter(&fin).unwrap_or(f64::NAN);
    assert!((7.0..16.0).contains(&last), "{fin}");
}

/// New SDP (a re-INVITE moving B to another port) takes the call back
/// from the kernel first: nothing more goes to B's old port.
#[tokio::test(flavor = "multi_thread")]
async fn new_sdp_moves_the_stream_without_a_stale_kernel_entry() {
    needs_ebpf!();
    let d = Daemon::start(123, &["--kernel-forward", "on"]).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("kmove", &a, &b).await;
    exchange(&mut a, to_a, &mut b, to_b, 5);
    assert_eq!(kernel_streams(&d).await.0, 2.0);
    let mut b2 = Peer::new("127.0.0.1");
    let (s, r) = d
        .post("/v1/calls/kmove/offer", json!({"from_tag": "ta", "sdp": a.sdp()}))
        .await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = d
        .post(
            "/v1/calls/kmove/answer",
            json!({"from_tag": "ta", "to_tag": "tb", "sdp": b2.sdp()}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(kernel_streams(&d).await.0, 0.0, "taken back before the change");
    exchange(&mut a, to_a, &mut b2, to_b, 10);
    assert_eq!(drain(&b.rtp), 0, "B's old port gets nothing");
    assert_eq!(kernel_streams(&d).await.0, 2.0, "the new path is in the kernel");
}

/// IPv6 phones: the same forwarding, with chorus's DSCP in the traffic class.
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_calls_are_forwarded_in_the_kernel_too() {
    needs_ebpf!();
    needs_ipv6!();
    let d = Daemon::start(125, &["--kernel-forward", "on", "--media-bind", "::1", "--dscp", "34"]).await;
    let (mut a, mut b) = (Peer::new("::1"), Peer::new("::1"));
    let (to_a, to_b) = d.call("k6", &a, &b).await;
    assert!(to_a.is_ipv6());
    exchange(&mut a, to_a, &mut b, to_b, 3);
    assert_eq!(kernel_streams(&d).await.0, 2.0, "both IPv6 directions in the kernel");
    exchange(&mut a, to_a, &mut b, to_b, 50);
    let (_, forwarded) = kernel_streams(&d).await;
    assert!(forwarded >= 95.0, "the kernel forwarded {forwarded} of 100");
    a.send_rtp(to_a);
    assert_eq!(recv_tclass(&b.rtp), Some(34 << 2), "DSCP 34 in the traffic class");
    let (_, fin) = d.delete("/v1/calls/k6").await;
    let packets = fin["legs"][0]["streams"][0]["stats"]["rtp"]["packets"].as_u64();
    assert_eq!(packets, Some(54), "{fin}");
}

/// `kernel_streams` sizes the kernel's map: past it, calls relay in
/// userspace, and a direction that finds room later goes to the kernel.
#[tokio::test(flavor = "multi_thread")]
async fn past_kernel_streams_calls_relay_in_userspace_until_there_is_room() {
    needs_ebpf!();
    let d = Daemon::start(132, &["--kernel-forward", "on", "--kernel-streams", "2"]).await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("in", &a, &b).await;
    exchange(&mut a, to_a, &mut b, to_b, 3);
    assert_eq!(kernel_streams(&d).await.0, 2.0, "the first call fills the map");
    let (mut c, mut e) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_c, to_e) = d.call("out", &c, &e).await;
    exchange(&mut c, to_c, &mut e, to_e, 20);
    assert_eq!(kernel_streams(&d).await.0, 2.0, "the second relays in userspace");
    let (s, fin) = d.delete("/v1/calls/in").await;
    assert_eq!(s, 200, "{fin}");
    assert_eq!(kernel_streams(&d).await.0, 0.0);
    // Refused directions are offered again after 5 s.
    let until = std::time::Instant::now() + Duration::from_secs(8);
    while kernel_streams(&d).await.0 < 2.0 && std::time::Instant::now() < until {
        exchange(&mut c, to_c, &mut e, to_e, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        kernel_streams(&d).await.0,
        2.0,
        "room again: the second call goes to the kernel"
    );
}
