//! SDES-SRTP between two RTP/SAVP legs, relayed as is: both `a=crypto`
//! lines pass through unchanged, and a real SRTP receiver (GStreamer's
//! srtpdec, from Debian) decrypts and hears the real sender's 1 kHz tone
//! (srtpenc) through chorus. chorus holds no keys on this path.

mod common;
use common::{sdp_target, Daemon, Peer};
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

    let out = std::env::temp_dir().join(format!("chorus-srtp-{}.raw", std::process::id()));
    let caps = format!(
        "application/x-srtp,media=(string)audio,clock-rate=(int)8000,encoding-name=(string)PCMU,\
         payload=(int)0,ssrc=(uint)4660,srtp-key=(buffer){OFFERER_KEY},srtp-cipher=(string)aes-128-icm,\
         srtp-auth=(string)hmac-sha1-80,srtcp-cipher=(string)aes-128-icm,srtcp-auth=(string)hmac-sha1-80"
    );
    let mut receiver = gst(&format!(
        "udpsrc port={receiver_port} caps={caps} ! srtpdec ! rtppcmudepay ! mulawdec ! audioconvert \
         ! audio/x-raw,format=S16LE ! filesink location={}",
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
         ! mulawenc ! rtppcmupay ssrc=4660 ! application/x-rtp ! srtpenc key={OFFERER_KEY} \
         rtp-cipher=aes-128-icm rtp-auth=hmac-sha1-80 rtcp-cipher=aes-128-icm rtcp-auth=hmac-sha1-80 \
         ! udpsink host=127.0.0.1 port={} bind-port={sender_port} sync=true",
        to_chorus.port()
    ))
    .wait_with_output()
    .unwrap();
    assert!(sent.status.success(), "sender: {sent:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SIGINT with -e: the receiver flushes what it decrypted and exits.
    let _ = Command::new("kill").args(["-INT", &receiver.id().to_string()]).status();
    let status = receiver.wait().unwrap();
    assert!(status.success(), "receiver: {status:?}");

    let pcm = std::fs::read(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let seconds = pcm.len() as f64 / 16000.0;
    assert!(seconds >= 1.5, "decrypted {seconds:.2} s of the 2 s sent");
    let rate = crossings_per_second(&pcm);
    assert!(
        (1900.0..2100.0).contains(&rate),
        "a 1 kHz tone crosses zero 2,000 times a second, not {rate:.0}"
    );
    let (_, call) = d.get("/v1/calls/srtp").await;
    assert_eq!(call["legs"][0]["streams"][0]["stats"]["rtp"]["packets"], 100, "{call}");
}
