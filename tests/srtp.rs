//! SDES-SRTP through chorus with real SRTP peers (GStreamer's srtpenc and
//! srtpdec, from Debian), each heard by its 1 kHz tone:
//! - two RTP/SAVP legs: relayed as is, keys pass through, chorus holds none;
//! - an SRTP leg facing a plain one (`transport_protocol`): chorus decrypts
//!   what the SRTP leg sends and encrypts what it receives, with AES-CM and
//!   AES-GCM keys.

mod common;
use chorus::sdp::crypto::{Crypto, Suite};
use common::{metric, sdp_target, Daemon, Peer};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// 30 bytes of master key and salt (AES_CM_128_HMAC_SHA1_80).
const OFFERER_KEY: &str = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e";
/// The same bytes in base64, as SDP carries them.
const OFFERER_INLINE: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e";
const ANSWERER_INLINE: &str = "Hh0cGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIB";

fn savp_sdp(port: u16, inline: &str) -> String {
    format!(
        "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{inline}\r\n"
    )
}

/// Two free even ports (RTP), found by binding and letting go.
fn free_ports() -> (u16, u16) {
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    (a.addr().port(), b.addr().port())
}

fn gst(pipeline: &str) -> Child {
    Command::new("gst-launch-1.0")
        .arg("-q")
        .arg("-e")
        .args(pipeline.split_whitespace())
        .stdout(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0 runs (scripts/test installs GStreamer)")
}

/// Whether some process holds UDP `port` (read from /proc, so the check
/// never takes the port itself).
fn udp_port_bound(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let suffix = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|local| local.ends_with(&suffix))
}

/// Zero crossings per second of 16-bit little-endian mono at 8 kHz.
fn crossings_per_second(pcm: &[u8]) -> f64 {
    let samples: Vec<i16> = pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let crossings = samples.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 / (samples.len() as f64 / 8000.0)
}

#[tokio::test]
async fn sdes_legs_pass_through_and_a_real_receiver_hears_the_tone() {
    let d = Daemon::start(37, &[]).await;
    let (sender_port, receiver_port) = free_ports();
    let (s, offer) = d
        .post(
            "/v1/calls/srtp/offer",
            json!({"from_tag": "a", "sdp": savp_sdp(sender_port, OFFERER_INLINE)}),
        )
        .await;
    assert_eq!(s, 200, "{offer}");
    let body = json!({"from_tag": "a", "to_tag": "b", "sdp": savp_sdp(receiver_port, ANSWERER_INLINE)});
    let (s, answer) = d.post("/v1/calls/srtp/answer", body).await;
    assert_eq!(s, 200, "{answer}");
    let (offer_sdp, answer_sdp) = (offer["sdp"].as_str().unwrap(), answer["sdp"].as_str().unwrap());
    assert!(offer_sdp.contains("RTP/SAVP 0\r\n"), "{offer_sdp}");
    // The offerer's key reaches the answerer, byte for byte.
    let crypto = offer_sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .map(chorus::sdp::crypto::Crypto::parse);
    let master: Vec<u8> = (0..30)
        .map(|i| u8::from_str_radix(&OFFERER_KEY[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert_eq!(crypto.map(|c| c.map(|c| c.master)), Some(Ok(master)), "{offer_sdp}");
    assert!(
        answer_sdp.contains(ANSWERER_INLINE),
        "and the answerer's the offerer: {answer_sdp}"
    );
    let to_chorus = sdp_target(answer_sdp);

    let caps = srtp_caps(OFFERER_KEY, "aes-128-icm", "hmac-sha1-80", 4660);
    let pcm = tone_through(
        &format!("udpsrc port={receiver_port} caps={caps} ! srtpdec"),
        &srtpenc(OFFERER_KEY, "aes-128-icm", "hmac-sha1-80"),
        receiver_port,
        sender_port,
        to_chorus.port(),
    )
    .await;
    assert_tone(&pcm);
    let (_, call) = d.get("/v1/calls/srtp").await;
    assert_eq!(call["legs"][0]["streams"][0]["stats"]["rtp"]["packets"], 100, "{call}");
}

fn srtp_caps(key_hex: &str, cipher: &str, auth: &str, ssrc: u32) -> String {
    format!(
        "application/x-srtp,media=(string)audio,clock-rate=(int)8000,encoding-name=(string)PCMU,\
         payload=(int)0,ssrc=(uint){ssrc},srtp-key=(buffer){key_hex},srtp-cipher=(string){cipher},\
         srtp-auth=(string){auth},srtcp-cipher=(string){cipher},srtcp-auth=(string){auth}"
    )
}

fn srtpenc(key_hex: &str, cipher: &str, auth: &str) -> String {
    format!("srtpenc key={key_hex} rtp-cipher={cipher} rtp-auth={auth} rtcp-cipher={cipher} rtcp-auth={auth}")
}

const PLAIN_CAPS: &str =
    "application/x-rtp,media=(string)audio,clock-rate=(int)8000,encoding-name=(string)PCMU,payload=(int)0";

/// Sends 2 s of a 1 kHz PCMU tone from `sender_port` to chorus at
/// `to_chorus` (`encrypt`: an srtpenc element, or `identity`), receives on
/// `receiver_port` through `source` (udpsrc and any srtpdec), and returns
/// the decoded audio (16-bit, 8 kHz).
async fn tone_through(source: &str, encrypt: &str, receiver_port: u16, sender_port: u16, to_chorus: u16) -> Vec<u8> {
    let out = std::env::temp_dir().join(format!("chorus-srtp-{}-{receiver_port}.raw", std::process::id()));
    let mut receiver = gst(&format!(
        "{source} ! rtppcmudepay ! mulawdec ! audioconvert ! audio/x-raw,format=S16LE ! filesink location={}",
        out.display()
    ));
    // Until the receiver holds its port (GStreamer's first run scans plugins).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !udp_port_bound(receiver_port) {
        assert!(
            std::time::Instant::now() < deadline,
            "the receiver never bound its port"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = gst(&format!(
        "audiotestsrc freq=1000 num-buffers=100 samplesperbuffer=160 ! audio/x-raw,rate=8000,channels=1 \
         ! mulawenc ! rtppcmupay ssrc=4660 ! application/x-rtp ! {encrypt} \
         ! udpsink host=127.0.0.1 port={to_chorus} bind-port={sender_port} sync=true"
    ))
    .wait_with_output()
    .unwrap();
    assert!(sent.status.success(), "sender: {sent:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SIGINT with -e: the receiver flushes what it decoded and exits.
    let _ = Command::new("kill").args(["-INT", &receiver.id().to_string()]).status();
    let status = receiver.wait().unwrap();
    assert!(status.success(), "receiver: {status:?}");
    let pcm = std::fs::read(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    pcm
}

fn assert_tone(pcm: &[u8]) {
    let seconds = pcm.len() as f64 / 16000.0;
    assert!(seconds >= 1.5, "decoded {seconds:.2} s of the 2 s sent");
    // The middle half: a conference's mix starts and ends with silence.
    let rate = crossings_per_second(&pcm[pcm.len() / 4 / 2 * 2..pcm.len() * 3 / 4 / 2 * 2]);
    assert!(
        (1900.0..2100.0).contains(&rate),
        "a 1 kHz tone crosses zero 2,000 times a second, not {rate:.0}"
    );
}

fn avp_sdp(port: u16) -> String {
    format!(
        "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

fn cryptos(sdp: &str) -> Vec<Crypto> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| Crypto::parse(v).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A phone on RTP/SAVP calls a plain RTP/AVP one: chorus decrypts the
/// phone's SRTP (AES-CM-128, HMAC-SHA1-80) and the plain phone hears it.
#[tokio::test]
async fn an_srtp_phone_is_decrypted_for_a_plain_one() {
    let d = Daemon::start(38, &[]).await;
    let (sender_port, receiver_port) = free_ports();
    let body = json!({"from_tag": "a", "sdp": savp_sdp(sender_port, OFFERER_INLINE), "options": {"transport_protocol": "RTP/AVP"}});
    let (s, offer) = d.post("/v1/calls/bridge-in/offer", body).await;
    assert_eq!(s, 200, "{offer}");
    let offer_sdp = offer["sdp"].as_str().unwrap();
    assert!(
        offer_sdp.contains("RTP/AVP 0\r\n") && cryptos(offer_sdp).is_empty(),
        "{offer_sdp}"
    );
    let body = json!({"from_tag": "a", "to_tag": "b", "sdp": avp_sdp(receiver_port)});
    let (s, answer) = d.post("/v1/calls/bridge-in/answer", body).await;
    assert_eq!(s, 200, "{answer}");
    let answer_sdp = answer["sdp"].as_str().unwrap();
    assert!(answer_sdp.contains("RTP/SAVP 0\r\n"), "{answer_sdp}");
    let ours = cryptos(answer_sdp);
    assert_eq!(ours.len(), 1, "{answer_sdp}");
    assert_eq!((ours[0].tag, ours[0].suite), (1, Suite::AesCm128HmacSha1_80));
    assert!(!answer_sdp.contains(OFFERER_INLINE), "chorus answers with its own key");

    let pcm = tone_through(
        &format!("udpsrc port={receiver_port} caps={PLAIN_CAPS}"),
        &srtpenc(OFFERER_KEY, "aes-128-icm", "hmac-sha1-80"),
        receiver_port,
        sender_port,
        sdp_target(answer_sdp).port(),
    )
    .await;
    assert_tone(&pcm);
    let (_, call) = d.get("/v1/calls/bridge-in").await;
    assert_eq!(call["legs"][0]["streams"][0]["stats"]["rtp"]["packets"], 100, "{call}");
    assert_eq!(call["legs"][0]["streams"][0]["stats"]["dropped"], 0, "{call}");

    // Forged SRTP from the phone's own address (a valid header, no key):
    // dropped, counted, and nothing reaches the plain phone.
    let phone = std::net::UdpSocket::bind(("127.0.0.1", sender_port)).unwrap();
    let plain = std::net::UdpSocket::bind(("127.0.0.1", receiver_port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    for seq in 200..203u16 {
        let mut forged = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
        forged[2..4].copy_from_slice(&seq.to_be_bytes());
        forged.extend_from_slice(&[0x55; 170]);
        phone.send_to(&forged, sdp_target(answer_sdp)).unwrap();
    }
    assert!(plain.recv_from(&mut [0u8; 512]).is_err(), "a forged packet got through");
    let m = d.metrics().await;
    assert_eq!(metric(&m, "chorus_packets_dropped_total{reason=\"srtp\"}"), 3.0);
}

/// A plain phone calls an SRTP one that picks AES-GCM from chorus's offer:
/// chorus encrypts with the key it offered under that tag.
#[tokio::test]
async fn a_plain_phone_is_encrypted_for_an_srtp_one_with_gcm() {
    let d = Daemon::start(39, &[]).await;
    let (sender_port, receiver_port) = free_ports();
    let body = json!({"from_tag": "a", "sdp": avp_sdp(sender_port), "options": {"transport_protocol": "RTP/SAVP",
                      "sdes": {"only": ["AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"]}}});
    let (s, offer) = d.post("/v1/calls/bridge-out/offer", body).await;
    assert_eq!(s, 200, "{offer}");
    let offer_sdp = offer["sdp"].as_str().unwrap();
    let offered = cryptos(offer_sdp);
    let suites: Vec<Suite> = offered.iter().map(|c| c.suite).collect();
    assert_eq!(
        suites,
        [Suite::AeadAes128Gcm, Suite::AesCm128HmacSha1_80],
        "{offer_sdp}"
    );
    let gcm = &offered[0];
    // The answerer keys its own sending with another GCM key under tag 1.
    let answer = format!(
        "{}a=crypto:{} AEAD_AES_128_GCM inline:{}\r\n",
        avp_sdp(receiver_port).replace("RTP/AVP", "RTP/SAVP"),
        gcm.tag,
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpbXA=="
    );
    let body = json!({"from_tag": "a", "to_tag": "b", "sdp": answer});
    let (s, answered) = d.post("/v1/calls/bridge-out/answer", body).await;
    assert_eq!(s, 200, "{answered}");
    let answer_sdp = answered["sdp"].as_str().unwrap();
    assert!(
        answer_sdp.contains("RTP/AVP 0\r\n") && cryptos(answer_sdp).is_empty(),
        "{answer_sdp}"
    );

    let caps = srtp_caps(&hex(&gcm.master), "aes-128-gcm", "null", 4660);
    let pcm = tone_through(
        &format!("udpsrc port={receiver_port} caps={caps} ! srtpdec"),
        "identity",
        receiver_port,
        sender_port,
        sdp_target(answer_sdp).port(),
    )
    .await;
    assert_tone(&pcm);
}

/// Keys chorus cannot use are refused with the reason, and nothing is created.
#[tokio::test]
async fn unusable_keys_are_refused_with_the_reason() {
    let d = Daemon::start(41, &[]).await;
    let mki = savp_sdp(40000, &format!("{OFFERER_INLINE}|1:4"));
    let body = json!({"from_tag": "a", "sdp": mki, "options": {"transport_protocol": "RTP/AVP"}});
    let (s, e) = d.post("/v1/calls/bad-keys/offer", body).await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("MKI"), "{e}");
    // SDES on one leg, DTLS on the other: chorus holds keys on both.
    let sdes = savp_sdp(40000, OFFERER_INLINE);
    let body = json!({"from_tag": "a", "sdp": sdes, "options": {"transport_protocol": "UDP/TLS/RTP/SAVPF"}});
    let (s, r) = d.post("/v1/calls/dtls/offer", body).await;
    assert_eq!(s, 200, "{r}");
    let to_browser = r["sdp"].as_str().unwrap();
    assert!(
        to_browser.contains("a=fingerprint:sha-256 ") && !to_browser.contains("a=crypto"),
        "{to_browser}"
    );
    // An MKI is refused towards a browser as towards a plain leg.
    let mki = savp_sdp(40002, &format!("{OFFERER_INLINE}|1:4"));
    let body = json!({"from_tag": "a", "sdp": mki, "options": {"transport_protocol": "UDP/TLS/RTP/SAVPF"}});
    let (s, e) = d.post("/v1/calls/dtls-mki/offer", body).await;
    assert_eq!(s, 400, "{e}");
    let body = json!({"from_tag": "a", "sdp": avp_sdp(40000), "options": {"transport_protocol": "RTP/SAVP", "sdes": {"only": ["AES_CM_999"]}}});
    let (s, e) = d.post("/v1/calls/suite/offer", body).await;
    assert_eq!(s, 400, "{e}");
    // SDES off leaves an RTP/SAVP leg made from a plain one without keys.
    let body = json!({"from_tag": "a", "sdp": avp_sdp(40000), "options": {"transport_protocol": "RTP/SAVPF", "sdes": {"off": true}}});
    let (s, e) = d.post("/v1/calls/sdes-off/offer", body).await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("SDES is off"), "{e}");
    let (s, _) = d.get("/v1/calls/bad-keys").await;
    assert_eq!(s, 404);
}

/// A conference participant's SDP: PCMU, on `proto`, with `extra` lines.
fn participant_sdp(port: u16, proto: &str, extra: &str) -> String {
    format!(
        "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=rtcp-mux\r\n{extra}"
    )
}

/// SDES-SRTP participants in a conference, with real SRTP peers: chorus
/// encrypts the mix for one (srtpdec hears a plain phone's tone) and
/// decrypts another's speech (a plain phone hears srtpenc's tone).
#[tokio::test]
async fn sdes_participants_in_a_conference_hear_and_are_heard() {
    let d = Daemon::start(45, &[]).await;
    let crypto = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{OFFERER_INLINE}\r\n");
    for (conf, srtp_listens) in [("hear", true), ("heard", false)] {
        let (s, r) = d.post("/v1/conferences", json!({"id": conf})).await;
        assert_eq!(s, 200, "{r}");
        let (plain_port, srtp_port) = free_ports();
        let path = format!("/v1/conferences/{conf}/participants");
        let join = |port: u16, proto: &str, extra: &str| {
            let body = json!({"sdp": participant_sdp(port, proto, extra)});
            d.post(&path, body)
        };
        let (s, plain) = join(plain_port, "RTP/AVP", "").await;
        assert_eq!(s, 200, "{plain}");
        let (s, secure) = join(srtp_port, "RTP/SAVP", &crypto).await;
        assert_eq!(s, 200, "{secure}");
        let answer = secure["sdp"].as_str().unwrap();
        assert!(answer.contains(" RTP/SAVP 0\r\n"), "{answer}");
        let ours = cryptos(answer);
        assert_eq!(ours.len(), 1, "{answer}");
        assert!(!answer.contains(OFFERER_INLINE), "chorus answers with its own key");
        let pcm = if srtp_listens {
            // The plain phone talks; the SRTP participant decrypts the mix.
            // chorus states the mix's SSRC (srtpdec keys by SSRC).
            let ssrc = answer
                .lines()
                .find_map(|l| l.strip_prefix("a=ssrc:")?.split(' ').next()?.parse().ok())
                .expect("a=ssrc in chorus's answer");
            let caps = srtp_caps(&hex(&ours[0].master), "aes-128-icm", "hmac-sha1-80", ssrc);
            let to_chorus = sdp_target(plain["sdp"].as_str().unwrap()).port();
            let source = format!("udpsrc port={srtp_port} caps={caps} ! srtpdec");
            tone_through(&source, "identity", srtp_port, plain_port, to_chorus).await
        } else {
            // The SRTP participant talks; the plain phone hears it.
            let to_chorus = sdp_target(answer).port();
            let source = format!("udpsrc port={plain_port} caps={PLAIN_CAPS}");
            let encrypt = srtpenc(OFFERER_KEY, "aes-128-icm", "hmac-sha1-80");
            tone_through(&source, &encrypt, plain_port, srtp_port, to_chorus).await
        };
        assert_tone(&pcm);
    }
}
