//! End to end: key presses sent into a relayed call (HTTP and ng `play
//! DTMF`) reach the other phone as RFC 4733 events amid the relayed audio,
//! in one gapless sequence.

mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn key_presses_are_sent_into_a_relayed_call() {
    let d = Daemon::start(109, &[]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, _) = d.call("keys", &a, &b).await;
    for (body, status, says) in [
        (json!({"from_tag": "ta", "digits": "1x"}), 400, "not a key"),
        (json!({"from_tag": "zz", "digits": "1"}), 404, "no leg tagged"),
        (
            json!({"from_tag": "ta", "digits": "1", "duration_ms": 5}),
            400,
            "40 to 5000",
        ),
    ] {
        let (s, r) = d.post("/v1/calls/keys/dtmf", body.clone()).await;
        assert_eq!(s, status, "{body} -> {r}");
        assert!(r["error"]["message"].as_str().unwrap().contains(says), "{body} -> {r}");
    }
    // A talks to B for a second; meanwhile chorus presses 4, then (ng) #.
    let sock = a.rtp.try_clone().unwrap();
    let talk = std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..60u16 {
            let _ = sock.send_to(&rtp(0, 500 + i, 1600 + i as u32 * 160, 77, &[0xff; 160]), to_a);
            std::thread::sleep(
                (start + Duration::from_millis(20 * (i as u64 + 1))).saturating_duration_since(Instant::now()),
            );
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, r) = d
        .post(
            "/v1/calls/keys/dtmf",
            json!({"from_tag": "ta", "digits": "4", "duration_ms": 100}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let ng_req = ngd(&[
        ("command", "play DTMF"),
        ("call-id", "keys"),
        ("from-tag", "ta"),
        ("code", "#"),
    ]);
    let r = tokio::task::block_in_place(|| ng(&d, "k1", &ng_req));
    assert_eq!(r.get("result").and_then(|v| v.as_str()), Some("ok"), "{r}");
    talk.join().unwrap();
    let got = recv_n(&b.rtp, 200);
    let seqs: Vec<u16> = got.iter().map(|(p, _)| u16::from_be_bytes([p[2], p[3]])).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "one gapless sequence: {seqs:?}"
    );
    let events: Vec<&Vec<u8>> = got.iter().map(|(p, _)| p).filter(|p| p[1] & 0x7f == 101).collect();
    let keys: Vec<u8> = events.iter().filter(|p| p[13] & 0x80 != 0).map(|p| p[12]).collect();
    assert_eq!(keys, vec![4, 4, 4, 11, 11, 11], "each key ends three times: {events:?}");
    assert!(
        events.iter().all(|p| p[8..12] == 77u32.to_be_bytes()),
        "on the relayed stream's SSRC"
    );
    let audio = got.len() - events.len();
    assert_eq!(audio, 60, "all the audio is still relayed");
}

/// Keys sent to an SRTP leg (chorus encrypts toward it) are sealed like
/// the relayed packets: libsrtp (pylibsrtp) opens every packet with the
/// key chorus offered, events and audio in one gapless sequence.
#[tokio::test(flavor = "multi_thread")]
async fn key_presses_into_an_srtp_leg_are_sealed_like_its_audio() {
    let d = Daemon::start(116, &[]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let te = "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";
    let sdp = |p: &Peer, proto: &str| {
        format!(
            "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\n{te}",
            p.addr().port()
        )
    };
    let opts = json!({"transport_protocol": "RTP/SAVP", "sdes": {"only": ["AES_CM_128_HMAC_SHA1_80"]}});
    let body = json!({"from_tag": "ta", "sdp": sdp(&a, "RTP/AVP"), "options": opts});
    let (s, offer) = d.post("/v1/calls/sk/offer", body).await;
    assert_eq!(s, 200, "{offer}");
    let offer_sdp = offer["sdp"].as_str().unwrap();
    let inline = offer_sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"))
        .unwrap_or_else(|| panic!("chorus offers its key: {offer_sdp}"));
    let key = chorus::sdp::crypto::Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{inline}"))
        .unwrap()
        .master;
    let answer = format!(
        "{}a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:Hh0cGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIB\r\n",
        sdp(&b, "RTP/SAVP")
    );
    let body = json!({"from_tag": "ta", "to_tag": "tb", "sdp": answer});
    let (s, answered) = d.post("/v1/calls/sk/answer", body).await;
    assert_eq!(s, 200, "{answered}");
    let to_a = sdp_target(answered["sdp"].as_str().unwrap());
    let sock = a.rtp.try_clone().unwrap();
    let talk = std::thread::spawn(move || {
        for i in 0..40u16 {
            let _ = sock.send_to(&rtp(0, 10 + i, i as u32 * 160, 91, &[0xff; 160]), to_a);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, r) = d
        .post("/v1/calls/sk/dtmf", json!({"from_tag": "ta", "digits": "9"}))
        .await;
    assert_eq!(s, 200, "{r}");
    talk.join().unwrap();
    let got = recv_n(&b.rtp, 100);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let lines: String = got.iter().map(|(p, _)| hex(p) + "\n").collect();
    let mut child = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/srtp_check.py"))
        .arg(hex(&key))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs tests/srtp_check.py (scripts/test installs pylibsrtp)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let plain: Vec<Option<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(plain.iter().all(Option::is_some), "libsrtp rejected some: {plain:?}");
    let plain: Vec<Vec<u8>> = plain
        .into_iter()
        .flatten()
        .map(|h| {
            (0..h.len() / 2)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
                .collect()
        })
        .collect();
    let seqs: Vec<u16> = plain.iter().map(|p| u16::from_be_bytes([p[2], p[3]])).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "{seqs:?}");
    let ends: Vec<&Vec<u8>> = plain
        .iter()
        .filter(|p| p[1] & 0x7f == 101 && p[13] & 0x80 != 0)
        .collect();
    assert_eq!(ends.len(), 3, "the key ends three times");
    assert!(ends.iter().all(|p| p[12] == 9));
    assert_eq!(
        plain.len() - plain.iter().filter(|p| p[1] & 0x7f == 101).count(),
        40,
        "all the audio"
    );
}
