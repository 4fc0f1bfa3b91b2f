//! A real browser (Debian's headless Chromium) calls a plain RTP phone
//! through chorus: chorus is the browser's ICE-lite peer and DTLS server,
//! decrypts its SRTP for the phone and encrypts the phone's audio for it.
//! The browser's microphone is a 1 kHz tone (Chromium's fake capture, from
//! a WAV file); the phone hears that tone, and the browser's getStats shows
//! the phone's packets arriving with sound in them.

mod common;
use common::{sdp_target, Daemon};
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>chorus webrtc</title><script>
(async () => {
  const report = (r) => fetch('/result', {method: 'POST', body: JSON.stringify(r)});
  try {
    const media = await navigator.mediaDevices.getUserMedia({audio: {echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
    const pc = new RTCPeerConnection();
    media.getTracks().forEach(t => pc.addTrack(t, media));
    pc.ontrack = (e) => { const a = new Audio(); a.srcObject = e.streams[0]; a.play().catch(() => {}); };
    await pc.setLocalDescription(await pc.createOffer());
    const answer = await (await fetch('/offer', {method: 'POST', body: pc.localDescription.sdp})).text();
    if (!answer.startsWith('v=0')) { report({error: answer}); return; }
    await pc.setRemoteDescription({type: 'answer', sdp: answer});
    await new Promise(r => setTimeout(r, 5000));
    const out = {ice: pc.iceConnectionState, connection: pc.connectionState};
    (await pc.getStats()).forEach(s => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio')
        out.inbound = {packets: s.packetsReceived, level: s.audioLevel, energy: s.totalAudioEnergy, codec: s.codecId};
      if (s.type === 'outbound-rtp' && s.kind === 'audio') out.outbound = {packets: s.packetsSent};
      if (s.type === 'transport') { out.dtls = s.dtlsState; out.srtp = s.srtpCipher; }
    });
    report(out);
  } catch (e) { report({error: String(e)}); }
})();
</script>"#;

/// A 16-bit mono 48 kHz WAV of a 1 kHz tone (Chromium's fake microphone).
fn tone_wav(path: &std::path::Path) {
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

/// The phone: plain RTP/AVP PCMU on a real socket.
fn phone_sdp(port: u16) -> String {
    format!(
        "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

struct Shared {
    daemon_base: String,
    phone_port: u16,
    /// Where the phone sends (chorus's port towards it), once offered.
    to_chorus: Option<SocketAddr>,
    result: Option<Value>,
}

async fn page_server(shared: Arc<Mutex<Shared>>) -> SocketAddr {
    use axum::routing::{get, post};
    let offer_state = shared.clone();
    let app = axum::Router::new()
        .route("/", get(|| async { axum::response::Html(PAGE) }))
        .route(
            "/offer",
            post(move |browser_sdp: String| {
                let shared = offer_state.clone();
                async move { offer(shared, browser_sdp).await }
            }),
        )
        .route(
            "/result",
            post(move |body: String| {
                let shared = shared.clone();
                async move {
                    shared.lock().unwrap().result = Some(serde_json::from_str(&body).unwrap_or(json!({"raw": body})));
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The signalling a proxy would do: the browser's offer to chorus (towards
/// a plain phone), the phone's answer back through chorus.
async fn offer(shared: Arc<Mutex<Shared>>, browser_sdp: String) -> String {
    let (base, phone_port) = {
        let s = shared.lock().unwrap();
        (s.daemon_base.clone(), s.phone_port)
    };
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let body = json!({"from_tag": "browser", "sdp": browser_sdp, "options": {"transport_protocol": "RTP/AVP"}});
    let r: Value = post("/v1/calls/web/offer", body).await.unwrap().json().await.unwrap();
    let Some(to_phone) = r["sdp"].as_str() else {
        return format!("offer refused: {r}");
    };
    shared.lock().unwrap().to_chorus = Some(sdp_target(to_phone));
    let body = json!({"from_tag": "browser", "to_tag": "phone", "sdp": phone_sdp(phone_port)});
    let r: Value = post("/v1/calls/web/answer", body).await.unwrap().json().await.unwrap();
    match r["sdp"].as_str() {
        Some(s) => s.to_string(),
        None => format!("answer refused: {r}"),
    }
}

/// Zero crossings per second of μ-law audio at 8 kHz.
fn crossings_per_second(ulaw: &[u8]) -> f64 {
    let pcm: Vec<i16> = ulaw
        .iter()
        .map(|&u| chorus::media::codec::g711::decode_ulaw(u))
        .collect();
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 / (pcm.len() as f64 / 8000.0)
}

/// Sends a 1 kHz PCMU tone from the phone for `seconds`; returns what the
/// phone received meanwhile (payloads of RTP from chorus).
fn phone_talks_and_listens(phone: &UdpSocket, shared: &Arc<Mutex<Shared>>, seconds: u64) -> Vec<u8> {
    phone.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let mut heard = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut seq = 0u16;
    while start.elapsed() < Duration::from_secs(seconds) {
        let to = shared.lock().unwrap().to_chorus;
        if let Some(to) = to {
            let mut pkt = vec![0u8; 12 + 160];
            chorus::wire::rtp::write_header(&mut pkt, 0, seq, seq as u32 * 160, 0x0bad_cafe).unwrap();
            for (i, b) in pkt[12..].iter_mut().enumerate() {
                let t = (seq as usize * 160 + i) as f64 / 8000.0;
                *b = chorus::media::codec::g711::encode_ulaw(
                    ((t * 2000.0 * std::f64::consts::PI).sin() * 12000.0) as i16,
                );
            }
            let _ = phone.send_to(&pkt, to);
            seq = seq.wrapping_add(1);
        }
        let until = Instant::now() + Duration::from_millis(20);
        while Instant::now() < until {
            if let Ok((n, _)) = phone.recv_from(&mut buf) {
                if n > 12 && buf[1] & 0x7f == 0 {
                    heard.extend_from_slice(&buf[12..n]);
                }
            }
        }
    }
    heard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_and_a_plain_phone_hear_each_other_through_chorus() {
    let d = Daemon::start(42, &[]).await;
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let shared = Arc::new(Mutex::new(Shared {
        daemon_base: d.base.clone(),
        phone_port: phone.local_addr().unwrap().port(),
        to_chorus: None,
        result: None,
    }));
    let page = page_server(shared.clone()).await;
    let dir = std::env::temp_dir().join(format!("chorus-chromium-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("tone.wav");
    tone_wav(&wav);
    let mut browser = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            &format!("--use-file-for-fake-audio-capture={}", wav.display()),
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
            &format!("--user-data-dir={}", dir.join("profile").display()),
            &format!("http://{page}/"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium runs (scripts/test installs Debian's chromium)");
    let talk = {
        let shared = shared.clone();
        let phone = phone.try_clone().unwrap();
        tokio::task::spawn_blocking(move || {
            // Until the call is set up, then 8 s of talking and listening.
            let deadline = Instant::now() + Duration::from_secs(30);
            while shared.lock().unwrap().to_chorus.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            phone_talks_and_listens(&phone, &shared, 8)
        })
    };
    let heard = talk.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let result = loop {
        if let Some(r) = shared.lock().unwrap().result.clone() {
            break r;
        }
        assert!(Instant::now() < deadline, "the page never reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = browser.kill();
    let _ = browser.wait();
    let _ = std::fs::remove_dir_all(&dir);

    eprintln!("browser: {result}");
    assert!(result.get("error").is_none(), "the page: {result}");
    assert_eq!(result["dtls"], "connected", "{result}");
    assert!(
        ["connected", "completed"].contains(&result["ice"].as_str().unwrap_or("")),
        "{result}"
    );
    assert!(result["outbound"]["packets"].as_u64().unwrap_or(0) > 100, "{result}");
    assert!(result["inbound"]["packets"].as_u64().unwrap_or(0) > 100, "{result}");
    assert!(
        result["inbound"]["energy"].as_f64().unwrap_or(0.0) > 0.0,
        "the browser hears sound: {result}"
    );
    let seconds = heard.len() as f64 / 8000.0;
    assert!(seconds > 2.0, "the phone heard {seconds:.1} s of the browser");
    let rate = crossings_per_second(&heard[heard.len() / 2..]);
    assert!(
        (1800.0..2200.0).contains(&rate),
        "the browser's 1 kHz tone crosses zero 2,000 times a second at the phone, not {rate:.0}"
    );
    let (_, call) = d.get("/v1/calls/web").await;
    assert!(
        call["legs"][0]["streams"][0]["stats"]["rtp"]["packets"]
            .as_u64()
            .unwrap_or(0)
            > 100,
        "{call}"
    );
}
