//! The deployment the project is for, end to end: a browser (headless
//! Chromium running JsSIP) calls a SIP phone (sipp) over SIP on WebSocket
//! through Kamailio, whose rtpengine module drives chorus over ng with the
//! shipped configuration (`deploy/kamailio/kamailio.cfg`, WITH_WEBSOCKET).
//! The browser's leg is DTLS-SRTP, the phone's plain RTP/AVP. sipp answers
//! the call with this test's socket as its media address: the phone hears
//! the browser's 1 kHz tone there and plays its own 1 kHz tone back, which
//! the browser recognises (WebAudio's analyser) beside its getStats.

mod common;
use common::sip::{free_udp_port, kamailio_ws, register, require, Killed};
use common::{tone_wav, Daemon};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// JsSIP bundled for the browser by scripts/test (npm's jssip, esbuild).
fn jssip_bundle() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/jssip/jssip.js");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which bundles JsSIP from npm",
        p.display()
    );
    p
}

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><script src="/jssip.js"></script><script>
const report = (r) => fetch('/result', {method: 'POST', body: JSON.stringify(r)});
const [ws, target] = location.hash.slice(1).split('|');
try {
  const ua = new JsSIP.UA({sockets: [new JsSIP.WebSocketInterface(ws)], uri: 'sip:alice@127.0.0.1', register: false});
  let analyser, ctx;
  ua.on('connected', () => {
    const session = ua.call(target, {
      mediaConstraints: {audio: {echoCancellation: false, noiseSuppression: false, autoGainControl: false}, video: false},
      pcConfig: {iceServers: []},
    });
    // JsSIP creates the peer connection inside call(): listen on it now.
    session.connection.addEventListener('track', (t) => {
      const stream = new MediaStream([t.track]);
      const a = new Audio(); a.srcObject = stream; a.play().catch(() => {});
      ctx = new AudioContext();
      analyser = ctx.createAnalyser(); analyser.fftSize = 4096;
      ctx.createMediaStreamSource(stream).connect(analyser);
    });
    session.on('failed', (e) => report({error: 'call failed: ' + e.cause}));
    session.on('confirmed', async () => {
      await new Promise(r => setTimeout(r, 5000));
      const pc = session.connection;
      const out = {ice: pc.iceConnectionState};
      (await pc.getStats()).forEach(s => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') out.inbound = {packets: s.packetsReceived, energy: s.totalAudioEnergy};
        if (s.type === 'outbound-rtp' && s.kind === 'audio') out.outbound = {packets: s.packetsSent};
        if (s.type === 'transport') out.dtls = s.dtlsState;
      });
      if (analyser) {
        const d = new Float32Array(analyser.frequencyBinCount);
        analyser.getFloatFrequencyData(d);
        let peak = 0;
        for (let i = 1; i < d.length; i++) if (d[i] > d[peak]) peak = i;
        out.peak_hz = peak * ctx.sampleRate / analyser.fftSize;
        out.peak_db = d[peak];
      }
      session.terminate();
      report(out);
    });
  });
  ua.start();
} catch (e) { report({error: String(e)}); }
</script>"#;

/// The page, JsSIP, and where the page's report lands.
async fn page_server(result: Arc<Mutex<Option<Value>>>) -> SocketAddr {
    use axum::routing::{get, post};
    let js = std::fs::read_to_string(jssip_bundle()).unwrap();
    let app = axum::Router::new()
        .route("/", get(|| async { axum::response::Html(PAGE) }))
        .route(
            "/jssip.js",
            get(move || {
                let js = js.clone();
                async move { ([("content-type", "text/javascript")], js) }
            }),
        )
        .route(
            "/result",
            post(move |body: String| {
                let result = result.clone();
                async move {
                    *result.lock().unwrap() = Some(serde_json::from_str(&body).unwrap_or(json!({"raw": body})));
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jssip_browser_calls_a_sip_phone_through_kamailio_and_chorus() {
    require("kamailio");
    require("sipp");
    require("chromium");
    let d = Daemon::start(50, &[]).await;
    let dir = std::env::temp_dir().join(format!("chorus-webrtc-sip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (kport, ws_port) = (free_udp_port(), free_udp_port());
    let (_kamailio, klog) = kamailio_ws(&dir, kport, ws_port, &[d.ng], &["WITH_WEBSOCKET"]);
    // The phone: sipp answers, with this test's socket as its media.
    let media = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sipp_port = free_udp_port();
    let uas = dir.join("uas.xml");
    std::fs::write(
        &uas,
        UAS.replace("MEDIA_PORT", &media.local_addr().unwrap().port().to_string()),
    )
    .unwrap();
    register(kport, sipp_port);
    let _phone = Killed(
        Command::new("sipp")
            .args([
                "-sf",
                uas.to_str().unwrap(),
                "-i",
                "127.0.0.1",
                "-p",
                &sipp_port.to_string(),
            ])
            .args(["-m", "1", "-bg"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("sipp runs"),
    );
    let phone = tokio::task::spawn_blocking(move || phone_media(&media, Duration::from_secs(15)));
    let result = Arc::new(Mutex::new(None));
    let page = page_server(result.clone()).await;
    let target = format!("sip:bob@127.0.0.1:{kport}");
    let wav = dir.join("tone.wav");
    tone_wav(&wav);
    let url = format!("http://{page}/#ws://127.0.0.1:{ws_port}|{target}");
    let mut browser = common::chromium(&url, &dir.join("profile"), &wav);
    let deadline = Instant::now() + Duration::from_secs(40);
    let r = loop {
        if let Some(r) = result.lock().unwrap().clone() {
            break r;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(&klog).unwrap_or_default();
            panic!(
                "the page never reported; Kamailio's log:\n{}",
                &log[log.len().saturating_sub(3000)..]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = browser.kill();
    let _ = browser.wait();
    let heard = phone.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let pcm: Vec<i16> = heard
        .iter()
        .map(|&u| chorus::media::codec::g711::decode_ulaw(u))
        .collect();
    assert!(pcm.len() > 8000 * 2, "the phone heard {} s", pcm.len() / 8000);
    let tail = &pcm[pcm.len() / 2..];
    let rate = tail.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64 / (tail.len() as f64 / 8000.0);
    assert!(
        (1800.0..2200.0).contains(&rate),
        "the phone hears the browser's 1 kHz tone: {rate:.0} crossings/s"
    );
    assert!(r.get("error").is_none(), "the page: {r}");
    assert_eq!(r["dtls"], "connected", "{r}");
    assert!(r["outbound"]["packets"].as_u64().unwrap_or(0) > 100, "{r}");
    assert!(
        r["inbound"]["packets"].as_u64().unwrap_or(0) > 100,
        "the phone's echo came back: {r}"
    );
    assert!(r["inbound"]["energy"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    let peak = r["peak_hz"].as_f64().unwrap_or(0.0);
    assert!(
        (950.0..1050.0).contains(&peak),
        "the browser hears its own 1 kHz tone back, not {peak:.0} Hz: {r}"
    );
}

/// sipp as the callee: answers PCMU with MEDIA_PORT (the test's socket).
const UAS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="callee with the test's media">
  <recv request="INVITE" crlf="true"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]bob[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:bob@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=bob 2000 2000 IN IP4 [local_ip]
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio MEDIA_PORT RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv

]]></send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"#;

/// The phone's media for `how_long`: what it hears (μ-law payloads), and
/// its own 1 kHz tone sent back to wherever the call's media comes from.
fn phone_media(sock: &std::net::UdpSocket, how_long: Duration) -> Vec<u8> {
    sock.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let (start, mut heard, mut buf) = (Instant::now(), Vec::new(), [0u8; 2048]);
    let (mut peer, mut seq, mut next) = (None, 0u16, Instant::now());
    while start.elapsed() < how_long {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n > 12 && buf[1] & 0x7f == 0 {
                heard.extend_from_slice(&buf[12..n]);
                peer = Some(from);
            }
        }
        if let (Some(to), true) = (peer, Instant::now() >= next) {
            let mut pkt = [0u8; 172];
            chorus::wire::rtp::write_header(&mut pkt, 0, seq, u32::from(seq) * 160, 0x5151).unwrap();
            for (i, b) in pkt[12..].iter_mut().enumerate() {
                let t = (usize::from(seq) * 160 + i) as f64 / 8000.0;
                let s = (t * 2000.0 * std::f64::consts::PI).sin() * 12000.0;
                *b = chorus::media::codec::g711::encode_ulaw(s as i16);
            }
            let _ = sock.send_to(&pkt, to);
            seq = seq.wrapping_add(1);
            next = Instant::now().max(next) + Duration::from_millis(20);
        }
    }
    heard
}
