//! Test harness: a real chorus process, driven over real HTTP, with real UDP
//! peers on loopback.
#![allow(dead_code)]

pub mod redis_server;
pub mod sip;
pub mod ws;

use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A chorus daemon owned by one test. Each test passes its own `slot`, so
/// that tests running in parallel use disjoint media port ranges.
pub struct Daemon {
    child: Child,
    pub base: String,
    /// The ng protocol's UDP address.
    pub ng: SocketAddr,
    pub port_min: u16,
    pub http: reqwest::Client,
}

pub const PORTS_PER_SLOT: u16 = 40;

impl Daemon {
    pub async fn start(slot: u16, extra: &[&str]) -> Daemon {
        Self::start_with_range(slot, PORTS_PER_SLOT, extra).await
    }

    pub async fn start_with_range(slot: u16, ports: u16, extra: &[&str]) -> Daemon {
        Self::start_full(slot, ports, extra, &[]).await
    }

    pub async fn start_full(slot: u16, ports: u16, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::start_logged(slot, ports, extra, env, &format!("slot-{slot}")).await
    }

    /// As `start_full`, logging to target/test-logs/<log>.log (two daemons
    /// sharing a slot's ports on different addresses).
    pub async fn start_logged(slot: u16, ports: u16, extra: &[&str], env: &[(&str, &str)], log: &str) -> Daemon {
        // Below Linux's ephemeral range (32768+), so test sockets bound to
        // port 0 never take a port chorus expects to have.
        let port_min = 20000 + slot * PORTS_PER_SLOT;
        let http_port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        // Each daemon logs to target/test-logs/slot-<n>.log (read it when a test fails).
        let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let recordings = logs.join(format!("{log}-recordings")).display().to_string();
        let log = std::fs::File::create(logs.join(format!("{log}.log"))).unwrap();
        let ng_port = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_chorus"))
            .args(["serve", "--http-listen", &format!("127.0.0.1:{http_port}")])
            .args(["--ng-listen", &format!("127.0.0.1:{ng_port}")])
            .args(["--port-min", &port_min.to_string()])
            .args(["--port-max", &(port_min + ports - 1).to_string()])
            .args(if extra.contains(&"--workers") {
                &[][..]
            } else {
                &["--workers", "2"][..]
            })
            .args(extra)
            // Recordings stay under target/ (a test's own flag comes first).
            .args(if extra.contains(&"--recording-dir") {
                vec![]
            } else {
                vec!["--recording-dir".to_string(), recordings]
            })
            .env("CHORUS_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("chorus binary starts");
        let d = Daemon {
            child,
            base: format!("http://127.0.0.1:{http_port}"),
            ng: SocketAddr::from(([127, 0, 0, 1], ng_port)),
            port_min,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = d.http.get(format!("{}/healthz", d.base)).send().await {
                if r.status().is_success() {
                    return d;
                }
            }
            assert!(Instant::now() < deadline, "chorus did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PATCH, path, body).await
    }

    async fn send_json(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let r = self.http.request(method, url).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self.http.delete(format!("{}{path}", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A PCMU phone (rtcp-mux) joins conference `conf`: its socket, where
    /// it sends, and its participant id.
    pub async fn join_pcmu(&self, conf: &str) -> (UdpSocket, SocketAddr, u64) {
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sdp = format!(
            "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtcp-mux\r\n",
            phone.local_addr().unwrap().port()
        );
        let (s, r) = self
            .post(&format!("/v1/conferences/{conf}/participants"), json!({"sdp": sdp}))
            .await;
        assert_eq!(s, 200, "{r}");
        let to = sdp_target(r["sdp"].as_str().unwrap());
        (phone, to, r["participant_id"].as_u64().unwrap())
    }

    /// Offer from `a`'s socket and answer from `b`'s; returns chorus's ports
    /// for each: (where A sends, where B sends).
    pub async fn call(&self, id: &str, a: &Peer, b: &Peer) -> (SocketAddr, SocketAddr) {
        let (s, offer) = self
            .post(
                &format!("/v1/calls/{id}/offer"),
                json!({"from_tag": "ta", "sdp": a.sdp()}),
            )
            .await;
        assert_eq!(s, 200, "{offer}");
        let (s, answer) = self
            .post(
                &format!("/v1/calls/{id}/answer"),
                json!({"from_tag": "ta", "to_tag": "tb", "sdp": b.sdp()}),
            )
            .await;
        assert_eq!(s, 200, "{answer}");
        (
            sdp_target(answer["sdp"].as_str().unwrap()),
            sdp_target(offer["sdp"].as_str().unwrap()),
        )
    }
}

/// Counts a metric's value in a Prometheus text exposition.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A SIP phone's media socket pair (RTP and RTCP) on a loopback address.
pub struct Peer {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub ssrc: u32,
    seq: u16,
}

impl Peer {
    pub fn new(ip: &str) -> Peer {
        // Find an even/odd pair of free ports.
        for _ in 0..100 {
            let rtp = UdpSocket::bind(format!("{ip}:0")).unwrap();
            let port = rtp.local_addr().unwrap().port();
            if port % 2 != 0 {
                continue;
            }
            if let Ok(rtcp) = UdpSocket::bind(format!("{ip}:{}", port + 1)) {
                for s in [&rtp, &rtcp] {
                    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                }
                return Peer {
                    rtp,
                    rtcp,
                    ssrc: port as u32 * 7919,
                    seq: 1000,
                };
            }
        }
        panic!("no free port pair");
    }

    pub fn addr(&self) -> SocketAddr {
        self.rtp.local_addr().unwrap()
    }

    /// A plain desk-phone style SDP pointing at this peer.
    pub fn sdp(&self) -> String {
        self.sdp_with(&format!("{}", self.addr().ip()), "")
    }

    pub fn sdp_with(&self, conn_ip: &str, extra_media_lines: &str) -> String {
        let fam = if conn_ip.contains(':') { "IP6" } else { "IP4" };
        format!(
            "v=0\r\no=phone 1000 1000 IN {fam} {conn_ip}\r\ns=call\r\nc=IN {fam} {conn_ip}\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n{extra_media_lines}",
            self.addr().port()
        )
    }

    /// Sends one 20 ms PCMU packet from the RTP socket.
    pub fn send_rtp(&mut self, to: SocketAddr) {
        self.send_rtp_from(&self.rtp.try_clone().unwrap(), to);
    }

    pub fn send_rtp_from(&mut self, from: &UdpSocket, to: SocketAddr) {
        let mut b = [0u8; 172];
        chorus::wire::rtp::write_header(&mut b, 0, self.seq, self.seq as u32 * 160, self.ssrc).unwrap();
        self.seq = self.seq.wrapping_add(1);
        from.send_to(&b, to).unwrap();
    }

    pub fn send_rtcp(&self, from: &UdpSocket, to: SocketAddr) {
        let rr = rtcp_rr(self.ssrc);
        from.send_to(&rr, to).unwrap();
    }
}

pub fn rtcp_rr(ssrc: u32) -> [u8; 8] {
    let s = ssrc.to_be_bytes();
    [0x80, 201, 0, 1, s[0], s[1], s[2], s[3]]
}

/// Receives datagrams until `n` arrived or the socket times out; returns
/// them with their source.
pub fn recv_n(sock: &UdpSocket, n: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while out.len() < n {
        match sock.recv_from(&mut buf) {
            Ok((len, from)) => out.push((buf[..len].to_vec(), from)),
            Err(_) => break,
        }
    }
    out
}

/// Sends `n` packets each way, one at a time, and checks each arrives
/// intact from the chorus port it was sent to on the other side.
pub fn exchange(a: &mut Peer, to_a: SocketAddr, b: &mut Peer, to_b: SocketAddr, n: usize) {
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

/// Drains whatever is queued on a socket; returns how many datagrams.
pub fn drain(sock: &UdpSocket) -> usize {
    let t = sock.read_timeout().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let n = recv_n(sock, usize::MAX).len();
    sock.set_read_timeout(t).unwrap();
    n
}

/// The media address a rewritten SDP points to (first stream).
pub fn sdp_target(sdp: &str) -> SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 ").or_else(|| l.strip_prefix("c=IN IP6 ")))
        .expect("c= line");
    let port: u16 = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio line");
    SocketAddr::new(ip.trim().parse().unwrap(), port)
}

/// The `a=rtcp:` port of the first stream, if stated.
pub fn sdp_rtcp_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=rtcp:")?.split(' ').next()?.parse().ok())
}

/// Sends one ng message over UDP and returns the reply's dictionary.
pub fn ng(d: &Daemon, cookie: &str, msg: &chorus::wire::bencode::Value) -> chorus::wire::bencode::Value {
    let raw = ng_raw(d, format!("{cookie} {msg}").as_bytes());
    let text = String::from_utf8_lossy(&raw).to_string();
    let (c, body) = text.split_once(' ').expect("reply has a cookie");
    assert_eq!(c, cookie);
    chorus::wire::bencode::decode(body.as_bytes()).expect("reply is bencode")
}

pub fn ng_raw(d: &Daemon, bytes: &[u8]) -> Vec<u8> {
    ng_raw_from(&UdpSocket::bind("127.0.0.1:0").unwrap(), d, bytes)
}

/// As a proxy does: one socket, so retransmissions come from the same address.
pub fn ng_raw_from(s: &UdpSocket, d: &Daemon, bytes: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(bytes, d.ng).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.recv(&mut buf).expect("ng reply within 2 s");
    buf.truncate(n);
    buf
}

/// An ng dictionary from string pairs; values starting with `[` are lists.
pub fn ngd(items: &[(&str, &str)]) -> chorus::wire::bencode::Value {
    use chorus::wire::bencode::Value;
    Value::Dict(
        items
            .iter()
            .map(|(k, v)| {
                let v = match v.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
                    Some(list) => Value::List(list.split(',').filter(|s| !s.is_empty()).map(Value::str).collect()),
                    None => Value::str(v),
                };
                (k.as_bytes().to_vec(), v)
            })
            .collect(),
    )
}

/// An HTTP server standing in for the proxy's callback endpoint: returns its
/// URL and the JSON bodies POSTed to it.
pub async fn callback_server() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// A 16-bit mono 48 kHz WAV of a 1 kHz tone (Chromium's fake microphone).
pub fn tone_wav(path: &std::path::Path) {
    let rate = 48000u32;
    let samples: Vec<i16> = (0..rate * 10)
        .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * 1000.0 / rate as f64).sin() * 12000.0) as i16)
        .collect();
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    std::fs::write(path, w).unwrap();
}

/// Debian's Chromium, headless, on `url`: its microphone plays `wav`, and
/// WebRTC may use loopback (where the tests' chorus listens).
pub fn chromium(url: &str, profile: &std::path::Path, wav: &std::path::Path) -> Child {
    Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            &format!("--use-file-for-fake-audio-capture={}", wav.display()),
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
            &format!("--user-data-dir={}", profile.display()),
            url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium runs (scripts/test installs Debian's chromium)")
}

/// 20 ms of a tone as PCMU (amplitude 8000), continuing from sample `at`.
pub fn pcmu(freq: f32, at: usize) -> Vec<u8> {
    let pcm: Vec<i16> = (0..160)
        .map(|i| (8000.0 * (2.0 * std::f32::consts::PI * freq * (at + i) as f32 / 8000.0).sin()) as i16)
        .collect();
    let mut out = vec![0u8; 160];
    chorus::media::codec::g711::Law::Ulaw.encode(&pcm, &mut out);
    out
}

/// An RTP packet with `payload`.
pub fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 12 + payload.len()];
    chorus::wire::rtp::write_header(&mut b, pt, seq, ts, ssrc).unwrap();
    b[12..].copy_from_slice(payload);
    b
}

/// What a PCMU phone hears on `sock` for `secs`, decoded, with arrival times.
pub fn listen_pcmu(sock: &UdpSocket, secs: f32) -> Vec<(Instant, Vec<f32>)> {
    let end = Instant::now() + Duration::from_secs_f32(secs);
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut heard = Vec::new();
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let mut pcm = vec![0i16; n.saturating_sub(12)];
            chorus::media::codec::g711::Law::Ulaw.decode(&buf[12..n], &mut pcm);
            heard.push((Instant::now(), pcm.into_iter().map(|s| s as f32 / 32768.0).collect()));
        }
    }
    heard
}

/// The samples heard from `from` to `to`.
pub fn window(heard: &[(Instant, Vec<f32>)], from: Instant, to: Instant) -> Vec<f32> {
    heard
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .flat_map(|(_, p)| p.iter().copied())
        .collect()
}

/// `count` packets of a 1 kHz tone in `spec`, from sequence `seq0`, as a
/// phone or browser sends them.
pub fn codec_tone(spec: chorus::media::codec::CodecSpec, count: usize, seq0: u16) -> Vec<Vec<u8>> {
    let mut enc = chorus::media::codec::Encoder::new(&spec).unwrap();
    let n = spec.frame_samples();
    (0..count)
        .map(|k| {
            let pcm: Vec<f32> = (0..n)
                .map(|i| 0.4 * (2.0 * std::f32::consts::PI * 1000.0 * (k * n + i) as f32 / spec.rate as f32).sin())
                .collect();
            let mut p = vec![0u8; 1500];
            let ts = (k as u32) * spec.frame_ts();
            let h = chorus::wire::rtp::write_header(&mut p, spec.pt, seq0.wrapping_add(k as u16), ts, 4242).unwrap();
            let len = enc.encode(&pcm, &mut p[h..]);
            p.truncate(h + len);
            p
        })
        .collect()
}

/// Receives one datagram and returns the TOS byte it arrived with.
pub fn recv_tos(sock: &UdpSocket) -> Option<u8> {
    recv_marking(sock, libc::IPPROTO_IP, libc::IP_RECVTOS, libc::IP_TOS)
}

/// Receives one IPv6 datagram and returns its traffic class.
pub fn recv_tclass(sock: &UdpSocket) -> Option<u8> {
    recv_marking(sock, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, libc::IPV6_TCLASS)
}

/// Receives one datagram with `recv_opt` on and returns the first byte of
/// its `kind` control message (IP_TOS is a byte, IPV6_TCLASS an int in
/// host order: its low byte comes first here).
fn recv_marking(sock: &UdpSocket, level: libc::c_int, recv_opt: libc::c_int, kind: libc::c_int) -> Option<u8> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(sock);
    let on: libc::c_int = 1;
    // SAFETY: fd is a live UDP socket; the option value is a c_int.
    let r = unsafe { libc::setsockopt(fd, level, recv_opt, &on as *const _ as *const libc::c_void, 4) };
    assert_eq!(r, 0);
    let mut buf = [0u8; 2048];
    let mut cmsg = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr points at buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    // SAFETY: as above; the socket has a read timeout, so this returns.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    assert!(n > 0, "no packet");
    // SAFETY: walking the control messages the kernel just wrote.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == level && (*c).cmsg_type == kind {
                return Some(*libc::CMSG_DATA(c));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    None
}
