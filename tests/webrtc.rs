//! A real browser (Debian's headless Chromium) calls a plain RTP phone
//! through chorus: chorus is the browser's ICE-lite peer and DTLS server,
//! decrypts its SRTP for the phone and encrypts the phone's audio for it.
//! The browser's microphone is a 1 kHz tone (Chromium's fake capture, from
//! a WAV file); the phone hears that tone, and the browser's getStats shows
//! the phone's packets arriving with sound in them.

mod common;
use chorus::media::srtp::{Key, SrtpSide};
use chorus::sdp::crypto::Crypto;
use common::{sdp_target, tone_wav, Daemon};
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The browser's page: `?offer` sends an offer and takes the answer back;
/// `?answer` takes chorus's offer and answers it. Either way it reports
/// the call's statistics after 5 s.
const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>chorus webrtc</title><script>
(async () => {
  const who = location.hash.slice(1);
  const report = (r) => fetch('/result?' + who, {method: 'POST', body: JSON.stringify(r)});
  try {
    const media = await navigator.mediaDevices.getUserMedia(
      {audio: {echoCancellation: false, noiseSuppression: false, autoGainControl: false},
       video: location.search.includes('video')});
    const pc = new RTCPeerConnection();
    media.getTracks().forEach(t => pc.addTrack(t, media));
    pc.ontrack = (e) => {
      if (e.track.kind !== 'audio') return;
      const a = new Audio(); a.srcObject = new MediaStream([e.track]); a.play().catch(() => {});
    };
    if (location.search.startsWith('?offer')) {
      await pc.setLocalDescription(await pc.createOffer());
      const answer = await (await fetch('/offer', {method: 'POST', body: pc.localDescription.sdp})).text();
      if (!answer.startsWith('v=0')) { report({error: answer}); return; }
      await pc.setRemoteDescription({type: 'answer', sdp: answer});
    } else {
      const offer = await (await fetch('/remote-offer')).text();
      if (!offer.startsWith('v=0')) { report({error: offer}); return; }
      await pc.setRemoteDescription({type: 'offer', sdp: offer});
      await pc.setLocalDescription(await pc.createAnswer());
      const r = await (await fetch('/answer', {method: 'POST', body: pc.localDescription.sdp})).text();
      if (r !== 'ok') { report({error: r}); return; }
    }
    // Received sound over time: totalAudioEnergy every 500 ms for 8 s.
    const series = [];
    for (let i = 0; i < 16; i++) {
      await new Promise(r => setTimeout(r, 500));
      (await pc.getStats()).forEach(s => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') series.push(s.totalAudioEnergy || 0);
      });
    }
    const out = {ice: pc.iceConnectionState, connection: pc.connectionState, series};
    const stats = await pc.getStats();
    stats.forEach(s => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio')
        out.inbound = {packets: s.packetsReceived, level: s.audioLevel, energy: s.totalAudioEnergy,
                       codec: (stats.get(s.codecId) || {}).mimeType};
      if (s.type === 'outbound-rtp' && s.kind === 'audio') out.outbound = {packets: s.packetsSent};
      if (s.type === 'inbound-rtp' && s.kind === 'video') out.video_in = s.packetsReceived;
      if (s.type === 'outbound-rtp' && s.kind === 'video') out.video_out = s.packetsSent;
      if (s.type === 'transport') {
        out.dtls = s.dtlsState; out.srtp = s.srtpCipher; out.transports = (out.transports || 0) + 1;
      }
    });
    report(out);
  } catch (e) { report({error: String(e)}); }
})();
</script>"#;

/// The phone: plain RTP/AVP PCMU on a real socket.
fn phone_sdp(port: u16) -> String {
    format!(
        "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// Who answers the browser that offers, or who offers to the browser that answers.
#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    BrowserCallsPhone,
    PhoneCallsBrowser,
    BrowserCallsBrowser,
    BrowserJoinsConference,
    /// The phone offers PCMU; the browser is offered only Opus, and chorus
    /// transcodes.
    PhoneCallsBrowserInOpus,
    /// The phone's offer makes chorus the DTLS client (`dtls: active`).
    PhoneCallsBrowserChorusActive,
    /// A browser and a video phone, audio and video both ways; the
    /// browser offers BUNDLE.
    BrowserCallsVideoPhone,
    /// A video phone calls a browser: chorus offers it BUNDLE.
    VideoPhoneCallsBrowser,
    /// An SDES-SRTP phone calls a browser: keys on both legs.
    SdesPhoneCallsBrowser,
}

struct Shared {
    scenario: Scenario,
    daemon_base: String,
    phone_port: u16,
    /// The video phone's video port (0: no video).
    video_port: u16,
    /// Where the phone sends (chorus's port towards it), once known.
    to_chorus: Option<SocketAddr>,
    /// Where the video phone sends its video.
    video_to: Option<SocketAddr>,
    /// chorus's offer for an answering browser.
    offer_for_browser: Option<String>,
    /// chorus's answer for an offering browser (browser to browser).
    answer_for_browser: Option<String>,
    /// chorus's answer to a phone that offered (its SRTP key, for SDES).
    answer_to_phone: Option<String>,
    results: std::collections::HashMap<String, Value>,
}

type State = Arc<Mutex<Shared>>;

async fn page_server(shared: State) -> SocketAddr {
    use axum::extract::RawQuery;
    use axum::routing::{get, post};
    let (s1, s2, s3, s4) = (shared.clone(), shared.clone(), shared.clone(), shared);
    let app = axum::Router::new()
        .route("/", get(|| async { axum::response::Html(PAGE) }))
        .route("/offer", post(move |sdp: String| browser_offers(s1.clone(), sdp)))
        .route(
            "/remote-offer",
            get(move || wait_for(s2.clone(), |s| s.offer_for_browser.clone())),
        )
        .route("/answer", post(move |sdp: String| browser_answers(s3.clone(), sdp)))
        .route(
            "/result",
            post(move |RawQuery(who): RawQuery, body: String| {
                let shared = s4.clone();
                async move {
                    let v = serde_json::from_str(&body).unwrap_or(json!({"raw": body}));
                    shared.lock().unwrap().results.insert(who.unwrap_or_default(), v);
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Polls `get` on the shared state for up to 30 s.
async fn wait_for(shared: State, get: impl Fn(&Shared) -> Option<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(v) = get(&shared.lock().unwrap()) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    "timed out".into()
}

/// One request to chorus's HTTP API, as a proxy would make it; the SDP of
/// the reply, or the error as text.
async fn chorus(shared: &State, path: &str, body: Value) -> Result<String, String> {
    let base = shared.lock().unwrap().daemon_base.clone();
    let r: Value = reqwest::Client::new()
        .post(format!("{base}/v1/calls/web/{path}"))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    r["sdp"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{path} refused: {r}"))
}

/// An offering browser: towards the phone (which answers at once) or
/// towards the other browser (whose answer comes through `/answer`).
async fn browser_offers(shared: State, sdp: String) -> String {
    let (scenario, phone_port, video_port) = {
        let s = shared.lock().unwrap();
        (s.scenario, s.phone_port, s.video_port)
    };
    if scenario == Scenario::BrowserJoinsConference {
        return join_conference(&shared, sdp).await;
    }
    let to = if matches!(scenario, Scenario::BrowserCallsPhone | Scenario::BrowserCallsVideoPhone) {
        "RTP/AVP"
    } else {
        "UDP/TLS/RTP/SAVPF"
    };
    let body = json!({"from_tag": "a", "sdp": sdp, "options": {"transport_protocol": to}});
    let onward = match chorus(&shared, "offer", body).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    if scenario == Scenario::BrowserCallsBrowser {
        shared.lock().unwrap().offer_for_browser = Some(onward);
        return wait_for(shared, |s| s.answer_for_browser.clone()).await;
    }
    {
        let mut s = shared.lock().unwrap();
        s.to_chorus = Some(sdp_target(&onward));
        s.video_to = video_target(&onward);
    }
    let mut answer = phone_sdp(phone_port);
    if video_port != 0 {
        // The video phone takes the browser's VP8.
        let vp8 = sdp
            .lines()
            .find_map(|l| l.strip_prefix("a=rtpmap:")?.strip_suffix(" VP8/90000"))
            .unwrap_or("96");
        answer += &format!("m=video {video_port} RTP/AVP {vp8}\r\na=rtpmap:{vp8} VP8/90000\r\n");
    }
    let body = json!({"from_tag": "a", "to_tag": "b", "sdp": answer});
    chorus(&shared, "answer", body).await.unwrap_or_else(|e| e)
}

/// The browser joins conference `room` with its offer; chorus's answer.
async fn join_conference(shared: &State, sdp: String) -> String {
    let base = shared.lock().unwrap().daemon_base.clone();
    let r: Value = reqwest::Client::new()
        .post(format!("{base}/v1/conferences/room/participants"))
        .json(&json!({"sdp": sdp}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The phones start talking now.
    shared.lock().unwrap().to_chorus = Some(SocketAddr::from(([0, 0, 0, 0], 0)));
    r["sdp"]
        .as_str()
        .map_or_else(|| format!("join refused: {r}"), str::to_string)
}

/// An answering browser's SDP, through chorus to whoever offered.
async fn browser_answers(shared: State, sdp: String) -> String {
    let body = json!({"from_tag": "a", "to_tag": "b", "sdp": sdp});
    match chorus(&shared, "answer", body).await {
        Ok(back) => {
            let mut s = shared.lock().unwrap();
            match s.scenario {
                Scenario::BrowserCallsBrowser => s.answer_for_browser = Some(back),
                _ => {
                    s.to_chorus = Some(sdp_target(&back));
                    s.video_to = video_target(&back);
                    s.answer_to_phone = Some(back);
                }
            }
            "ok".into()
        }
        Err(e) => e,
    }
}

/// chorus's address for a video phone's video (the `m=video` port).
fn video_target(sdp: &str) -> Option<SocketAddr> {
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=video "))?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some(SocketAddr::new(sdp_target(sdp).ip(), port))
}

/// The video phone for 10 s: counts the video it gets and, once it knows
/// where to, sends 30 VP8 packets a second (a key frame's first packet
/// each time; the browser counts them, it need not show them).
fn video_phone(video: UdpSocket, shared: State, pt: u8) -> u64 {
    video.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let (start, mut buf, mut n) = (Instant::now(), [0u8; 2048], 0u64);
    let (mut seq, mut next_send) = (0u16, Instant::now());
    while start.elapsed() < Duration::from_secs(10) {
        if video.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        let to = shared.lock().unwrap().video_to;
        if let Some(to) = to.filter(|_| Instant::now() >= next_send) {
            let mut pkt = [0u8; 12 + 11];
            chorus::wire::rtp::write_header(&mut pkt, pt, seq, u32::from(seq) * 3000, 0x0f1d_e000).unwrap();
            pkt[1] |= 0x80; // marker: one packet per frame
                            // VP8 descriptor (S, partition 0), then a key frame header (RFC 7741).
            pkt[12..].copy_from_slice(&[0x10, 0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
            let _ = video.send_to(&pkt, to);
            seq = seq.wrapping_add(1);
            next_send += Duration::from_millis(33);
        }
    }
    n
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
    let (Some(to), answer) = ({
        let s = shared.lock().unwrap();
        (s.to_chorus, s.answer_to_phone.clone())
    }) else {
        return Vec::new();
    };
    // An SDES phone decrypts with the key chorus answered it with.
    let srtp = answer.filter(|a| a.contains("a=crypto:")).map(|a| {
        let c = Crypto::parse(a.lines().find_map(|l| l.strip_prefix("a=crypto:")).unwrap()).unwrap();
        let mine = Crypto::parse(&format!("1 {}", sdes_phone_key())).unwrap();
        SrtpSide::new(&Key::from(&c), &Key::from(&mine)).unwrap()
    });
    let talk = Duration::ZERO..Duration::from_secs(seconds);
    secure_phones_talk_and_listen(&[(phone, to, talk)], &mut [srtp], seconds).remove(0)
}

/// The SDES phone's own key (AES_CM_128_HMAC_SHA1_80), as its a=crypto says.
fn sdes_phone_key() -> String {
    "AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR".into()
}

/// Phones, each sending a 1 kHz PCMU tone to its address during its window
/// and listening all along, for `seconds`; what each heard (RTP payloads).
fn phones_talk_and_listen(
    phones: &[(&UdpSocket, SocketAddr, std::ops::Range<Duration>)],
    seconds: u64,
) -> Vec<Vec<u8>> {
    let mut plain: Vec<Option<SrtpSide>> = phones.iter().map(|_| None).collect();
    secure_phones_talk_and_listen(phones, &mut plain, seconds)
}

/// As [`phones_talk_and_listen`], each phone with SRTP where `srtp` has it.
fn secure_phones_talk_and_listen(
    phones: &[(&UdpSocket, SocketAddr, std::ops::Range<Duration>)],
    srtp: &mut [Option<SrtpSide>],
    seconds: u64,
) -> Vec<Vec<u8>> {
    for (sock, _, _) in phones {
        sock.set_nonblocking(true).unwrap();
    }
    let mut heard = vec![Vec::new(); phones.len()];
    let mut buf = [0u8; 2048 + chorus::media::srtp::TRAILER];
    let start = Instant::now();
    let mut seq = 0u16;
    while start.elapsed() < Duration::from_secs(seconds) {
        let tick = start + Duration::from_millis(20) * u32::from(seq);
        for (i, (sock, to, talk)) in phones.iter().enumerate() {
            if !talk.contains(&start.elapsed()) {
                continue;
            }
            let mut pkt = vec![0u8; 12 + 160 + chorus::media::srtp::TRAILER];
            chorus::wire::rtp::write_header(&mut pkt, 0, seq, seq as u32 * 160, 0x0bad_0000 + i as u32).unwrap();
            for (j, b) in pkt[12..172].iter_mut().enumerate() {
                let t = (seq as usize * 160 + j) as f64 / 8000.0;
                let s = (t * 2000.0 * std::f64::consts::PI).sin() * 12000.0;
                *b = chorus::media::codec::g711::encode_ulaw(s as i16);
            }
            let len = match &mut srtp[i] {
                Some(s) => s.protect(&mut pkt, 172, false).unwrap(),
                None => 172,
            };
            let _ = sock.send_to(&pkt[..len], to);
        }
        seq = seq.wrapping_add(1);
        while Instant::now() < tick + Duration::from_millis(20) {
            for (i, (sock, _, _)) in phones.iter().enumerate() {
                while let Ok((mut n, _)) = sock.recv_from(&mut buf) {
                    if let Some(s) = &mut srtp[i] {
                        let Ok(plain) = s.unprotect(&mut buf, n, false) else {
                            continue;
                        };
                        n = plain;
                    }
                    if n > 12 && buf[1] & 0x7f == 0 {
                        heard[i].extend_from_slice(&buf[12..n]);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    heard
}

/// A headless Chromium on `page` (`?offer` or `?answer`, `#name` for its report).
fn browser(
    page: SocketAddr,
    mode: &str,
    name: &str,
    dir: &std::path::Path,
    wav: &std::path::Path,
) -> std::process::Child {
    common::chromium(&format!("http://{page}/?{mode}#{name}"), &dir.join(name), wav)
}

/// Runs one scenario on its own chorus: the browsers' reports by name, and
/// what the phone heard.
/// What a scenario left: the pages' reports, what the phones heard, the
/// daemon (for queries), and how many video packets the phone got.
type Outcome = (std::collections::HashMap<String, Value>, Vec<Vec<u8>>, Daemon, u64);

async fn run(slot: u16, scenario: Scenario) -> Outcome {
    let d = Daemon::start(slot, &[]).await;
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let video = UdpSocket::bind("127.0.0.1:0").unwrap();
    let video_port = video.local_addr().unwrap().port();
    let with_video = matches!(
        scenario,
        Scenario::BrowserCallsVideoPhone | Scenario::VideoPhoneCallsBrowser
    );
    let shared = Arc::new(Mutex::new(Shared {
        scenario,
        daemon_base: d.base.clone(),
        phone_port: phone.local_addr().unwrap().port(),
        video_port: video_port * u16::from(with_video),
        to_chorus: None,
        video_to: None,
        offer_for_browser: None,
        answer_for_browser: None,
        answer_to_phone: None,
        results: Default::default(),
    }));
    // Chromium's first VP8 payload type, which both scenarios use.
    let video_count = {
        let shared = shared.clone();
        std::thread::spawn(move || video_phone(video, shared, 96))
    };
    let page = page_server(shared.clone()).await;
    let dir = std::env::temp_dir().join(format!("chorus-chromium-{}-{slot}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("tone.wav");
    tone_wav(&wav);
    let browsers = start_browsers(scenario, &d, &shared, page, &dir, &wav).await;
    let heard = match scenario {
        Scenario::BrowserCallsBrowser => Vec::new(),
        Scenario::BrowserJoinsConference => two_phones_in_the_room(&d, &shared).await,
        _ => {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                while shared.lock().unwrap().to_chorus.is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                vec![phone_talks_and_listens(&phone, &shared, 8)]
            })
            .await
            .unwrap()
        }
    };
    let want = browsers.len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while shared.lock().unwrap().results.len() < want {
        assert!(
            Instant::now() < deadline,
            "a page never reported: {:?}",
            shared.lock().unwrap().results
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for mut b in browsers {
        let _ = b.kill();
        let _ = b.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let results = shared.lock().unwrap().results.clone();
    (results, heard, d, video_count.join().unwrap())
}

/// The browsers of a scenario, after what must happen before they load
/// (chorus's offer for an answering browser, the conference).
async fn start_browsers(
    scenario: Scenario,
    d: &Daemon,
    shared: &State,
    page: SocketAddr,
    dir: &std::path::Path,
    wav: &std::path::Path,
) -> Vec<std::process::Child> {
    let phone_port = shared.lock().unwrap().phone_port;
    let mut browsers = Vec::new();
    match scenario {
        Scenario::BrowserCallsPhone => browsers.push(browser(page, "offer", "a", dir, wav)),
        Scenario::BrowserCallsVideoPhone => browsers.push(browser(page, "offer&video", "a", dir, wav)),
        Scenario::PhoneCallsBrowser
        | Scenario::VideoPhoneCallsBrowser
        | Scenario::PhoneCallsBrowserInOpus
        | Scenario::PhoneCallsBrowserChorusActive
        | Scenario::SdesPhoneCallsBrowser => {
            let mut options = json!({"transport_protocol": "UDP/TLS/RTP/SAVPF"});
            if scenario == Scenario::PhoneCallsBrowserInOpus {
                options["transcode"] = json!(["opus"]);
                options["mask_codecs"] = json!(["PCMU"]);
            }
            if scenario == Scenario::PhoneCallsBrowserChorusActive {
                options["dtls"] = json!("active");
            }
            let mut sdp = phone_sdp(phone_port);
            if scenario == Scenario::VideoPhoneCallsBrowser {
                let video_port = shared.lock().unwrap().video_port;
                sdp += &format!("m=video {video_port} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n");
            }
            if scenario == Scenario::SdesPhoneCallsBrowser {
                sdp = sdp.replace("RTP/AVP", "RTP/SAVP") + &format!("a=crypto:1 {}\r\n", sdes_phone_key());
            }
            let body = json!({"from_tag": "a", "sdp": sdp, "options": options});
            let offer = chorus(shared, "offer", body).await.unwrap();
            shared.lock().unwrap().offer_for_browser = Some(offer);
            let mode = match scenario {
                Scenario::VideoPhoneCallsBrowser => "answer&video",
                _ => "answer",
            };
            browsers.push(browser(page, mode, "b", dir, wav));
        }
        Scenario::BrowserCallsBrowser => {
            browsers.push(browser(page, "offer", "a", dir, wav));
            browsers.push(browser(page, "answer", "b", dir, wav));
        }
        Scenario::BrowserJoinsConference => {
            let (s, r) = d.post("/v1/conferences", json!({"id": "room"})).await;
            assert_eq!(s, 200, "{r}");
            browsers.push(browser(page, "offer", "a", dir, wav));
        }
    }
    browsers
}

/// Two plain phones join `room`; once the browser has joined, phone 0
/// talks for 4 s, then phone 1 for 4 s, both listening all along.
async fn two_phones_in_the_room(d: &Daemon, shared: &State) -> Vec<Vec<u8>> {
    let mut phones = Vec::new();
    for _ in 0..2 {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sdp = phone_sdp(sock.local_addr().unwrap().port()) + "a=rtcp-mux\r\n";
        let (s, r) = d.post("/v1/conferences/room/participants", json!({"sdp": sdp})).await;
        assert_eq!(s, 200, "{r}");
        phones.push((sock, sdp_target(r["sdp"].as_str().unwrap())));
    }
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while shared.lock().unwrap().to_chorus.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let four = Duration::from_secs(4);
        let plan = [
            (&phones[0].0, phones[0].1, Duration::ZERO..four),
            (&phones[1].0, phones[1].1, four..four * 2),
        ];
        phones_talk_and_listen(&plan, 8)
    })
    .await
    .unwrap()
}

/// What the browser saw: DTLS-SRTP up, media both ways, sound coming in.
fn assert_browser_connected(r: &Value) {
    assert!(r.get("error").is_none(), "the page: {r}");
    assert_eq!(r["dtls"], "connected", "{r}");
    assert!(
        ["connected", "completed"].contains(&r["ice"].as_str().unwrap_or("")),
        "{r}"
    );
    assert!(r["outbound"]["packets"].as_u64().unwrap_or(0) > 100, "{r}");
    assert!(r["inbound"]["packets"].as_u64().unwrap_or(0) > 100, "{r}");
    assert!(
        r["inbound"]["energy"].as_f64().unwrap_or(0.0) > 0.0,
        "the browser hears sound: {r}"
    );
}

/// The phone heard the browser's 1 kHz tone.
fn assert_phone_heard_tone(heard: &[u8]) {
    let seconds = heard.len() as f64 / 8000.0;
    assert!(seconds > 2.0, "the phone heard {seconds:.1} s of the browser");
    let rate = crossings_per_second(&heard[heard.len() / 2..]);
    assert!(
        (1800.0..2200.0).contains(&rate),
        "the browser's 1 kHz tone crosses zero 2,000 times a second at the phone, not {rate:.0}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_calls_a_plain_phone_and_they_hear_each_other() {
    let (results, heard, d, _) = run(42, Scenario::BrowserCallsPhone).await;
    assert_browser_connected(&results["a"]);
    assert_phone_heard_tone(&heard[0]);
    let (_, call) = d.get("/v1/calls/web").await;
    assert!(
        call["legs"][0]["streams"][0]["stats"]["rtp"]["packets"]
            .as_u64()
            .unwrap_or(0)
            > 100,
        "{call}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_phone_calls_a_browser_and_they_hear_each_other() {
    let (results, heard, _d, _) = run(43, Scenario::PhoneCallsBrowser).await;
    assert_browser_connected(&results["b"]);
    assert_phone_heard_tone(&heard[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_talk_through_chorus() {
    let (results, _, d, _) = run(44, Scenario::BrowserCallsBrowser).await;
    assert_browser_connected(&results["a"]);
    assert_browser_connected(&results["b"]);
    // The media went through chorus, both ways.
    let (_, call) = d.get("/v1/calls/web").await;
    for leg in 0..2 {
        let packets = call["legs"][leg]["streams"][0]["stats"]["rtp"]["packets"]
            .as_u64()
            .unwrap_or(0);
        assert!(packets > 100, "leg {leg}: {call}");
    }
}

/// The meeting chorus is for: a browser joins a conference with two phones.
/// It hears the first phone, then the second (its received energy rises in
/// each one's turn), and both phones hear the browser's tone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_in_a_conference_hears_both_phones_and_is_heard() {
    let (results, heard, _d, _) = run(46, Scenario::BrowserJoinsConference).await;
    let r = &results["a"];
    assert_browser_connected(r);
    let series: Vec<f64> = r["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap_or(0.0))
        .collect();
    assert_eq!(series.len(), 16, "{r}");
    // Samples every 500 ms: phone 0 alone in 1.0–3.5 s, phone 1 alone in 5.0–7.5 s.
    let rise = |from: usize, to: usize| series[to] - series[from];
    assert!(rise(1, 6) > 0.01, "the browser hears the first phone: {series:?}");
    assert!(rise(9, 14) > 0.01, "the browser hears the second phone: {series:?}");
    for (i, h) in heard.iter().enumerate() {
        assert!(h.len() > 8000 * 4, "phone {i} heard {} s", h.len() / 8000);
        assert_phone_heard_tone(h);
    }
}

/// A phone in PCMU and a browser in Opus: chorus transcodes between them
/// (and SRTP on the browser's side), and each hears the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pcmu_phone_and_a_browser_in_opus_hear_each_other_through_the_transcoder() {
    let (results, heard, _d, _) = run(49, Scenario::PhoneCallsBrowserInOpus).await;
    let r = &results["b"];
    assert_browser_connected(r);
    assert_eq!(r["inbound"]["codec"], "audio/opus", "{r}");
    assert_phone_heard_tone(&heard[0]);
}

/// chorus as the DTLS client: it offers `a=setup:active`, the browser
/// answers passive, and chorus starts the handshake once ICE has checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chorus_as_dtls_client_to_a_browser() {
    let (results, heard, _d, _) = run(51, Scenario::PhoneCallsBrowserChorusActive).await;
    assert_browser_connected(&results["b"]);
    assert_phone_heard_tone(&heard[0]);
}

/// What a browser with a video phone saw: one transport (BUNDLE) for
/// audio and video, and the phone's video arriving on it.
fn assert_bundled_video(r: &Value, video_at_phone: u64) {
    assert_browser_connected(r);
    assert_eq!(r["transports"], 1, "audio and video share one transport: {r}");
    assert!(
        r["video_in"].as_u64().unwrap_or(0) > 50,
        "the phone's video reaches the browser: {r}"
    );
    assert!(video_at_phone > 50, "the phone got {video_at_phone} video packets");
}

/// Audio and video between a browser (which offers BUNDLE) and a video
/// phone on plain RTP: chorus answers the group, so the browser has one
/// ICE and DTLS transport for both, and the phone one port for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_and_a_video_phone_share_audio_and_video_over_one_bundle() {
    let (results, heard, _d, video) = run(52, Scenario::BrowserCallsVideoPhone).await;
    assert_bundled_video(&results["a"], video);
    assert_phone_heard_tone(&heard[0]);
}

/// A video phone calls a browser: chorus offers the browser a BUNDLE
/// group, the browser keeps it, and audio and video flow on one transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_phone_calls_a_browser_which_takes_the_offered_bundle() {
    let (results, heard, _d, video) = run(54, Scenario::VideoPhoneCallsBrowser).await;
    assert_bundled_video(&results["b"], video);
    assert_phone_heard_tone(&heard[0]);
}

/// An SDES-SRTP phone and a browser: chorus decrypts the phone's SRTP and
/// encrypts it again with the DTLS keys, and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdes_phone_and_a_browser_hear_each_other() {
    let (results, heard, _d, _) = run(53, Scenario::SdesPhoneCallsBrowser).await;
    assert_browser_connected(&results["b"]);
    assert_phone_heard_tone(&heard[0]);
}
