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
