//! End to end: recordings of calls and conferences, checked with sox and
//! by spectrum, their metadata, pauses and key presses; a recording that
//! cannot be written is an event, and the call goes on.

mod common;
use chorus::media::mixer::level::tone_level;
use common::*;
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Both phones send their tone, 20 ms at a time, for `ticks` ticks from `from`.
fn talk(a: &UdpSocket, to_a: SocketAddr, b: &UdpSocket, to_b: SocketAddr, from: usize, ticks: usize) {
    let start = Instant::now();
    for i in from..from + ticks {
        let _ = a.send_to(&rtp(0, i as u16, i as u32 * 160, 11, &pcmu(440.0, i * 160)), to_a);
        let _ = b.send_to(&rtp(0, i as u16, i as u32 * 160, 22, &pcmu(1000.0, i * 160)), to_b);
        let due = start + Duration::from_millis(20 * (i - from + 1) as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
}

/// The metadata JSON, once the recording's task wrote it.
async fn metadata(path: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str(&text) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "no metadata at {}", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn soxi(flag: &str, file: &Path) -> String {
    let out = std::process::Command::new("soxi")
        .arg(flag)
        .arg(file)
        .output()
        .expect("soxi runs (scripts/test installs sox)");
    assert!(
        out.status.success(),
        "soxi {flag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The samples of each channel of a 16-bit WAV file.
fn channels(file: &Path, n: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(file).unwrap();
    let mut ch = vec![Vec::new(); n];
    for (i, s) in bytes[44..].chunks_exact(2).enumerate() {
        ch[i % n].push(i16::from_le_bytes([s[0], s[1]]) as f32 / 32768.0);
    }
    ch
}

/// A call recorded in stereo (the offerer left, the answerer right), paused
/// for a while, with a key press: sox reads it, each side is its own tone,
/// and the metadata says who, how long, the pause and the digit.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_is_recorded_one_party_per_channel() {
    let d = Daemon::start(103, &[]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("rec", &a, &b).await;
    let (s, r) = d
        .post("/v1/calls/rec/recordings", json!({"details": {"agent": "7"}}))
        .await;
    assert_eq!(s, 200, "{r}");
    let id = r["recording_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("RE"), "{r}");
    let file = PathBuf::from(r["file"].as_str().unwrap());
    let meta_path = PathBuf::from(r["metadata"].as_str().unwrap());
    let (ra, rb) = (a.rtp.try_clone().unwrap(), b.rtp.try_clone().unwrap());
    tokio::task::spawn_blocking(move || talk(&ra, to_a, &rb, to_b, 0, 50))
        .await
        .unwrap();
    let (s, r) = d
        .patch(&format!("/v1/calls/rec/recordings/{id}"), json!({"paused": true}))
        .await;
    assert_eq!((s, &r["paused"]), (200, &json!(true)), "{r}");
    let (ra, rb) = (a.rtp.try_clone().unwrap(), b.rtp.try_clone().unwrap());
    tokio::task::spawn_blocking(move || talk(&ra, to_a, &rb, to_b, 50, 25))
        .await
        .unwrap();
    let (s, _) = d
        .patch(&format!("/v1/calls/rec/recordings/{id}"), json!({"paused": false}))
        .await;
    assert_eq!(s, 200);
    for (i, end) in [false, true, true].into_iter().enumerate() {
        let ev = [4, if end { 0x8a } else { 0x0a }, 3, 0x20];
        a.rtp.send_to(&rtp(101, 80 + i as u16, 9000, 11, &ev), to_a).unwrap();
    }
    let (ra, rb) = (a.rtp.try_clone().unwrap(), b.rtp.try_clone().unwrap());
    tokio::task::spawn_blocking(move || talk(&ra, to_a, &rb, to_b, 75, 50))
        .await
        .unwrap();
    let (s, list) = d.get("/v1/calls/rec/recordings").await;
    assert_eq!((s, &list["recordings"][0]["recording_id"]), (200, &json!(id)), "{list}");
    let (s, r) = d.delete(&format!("/v1/calls/rec/recordings/{id}")).await;
    assert_eq!(s, 200, "{r}");
    let meta = metadata(&meta_path).await;
    assert_eq!(
        (
            &meta["call_id"],
            &meta["channels"],
            &meta["sample_rate"],
            &meta["party"]
        ),
        (&json!("rec"), &json!(2), &json!(16000), &json!("ta")),
        "{meta}"
    );
    assert_eq!(meta["details"], json!({"agent": "7"}));
    assert_eq!(meta["pauses"].as_array().map(Vec::len), Some(1), "{meta}");
    assert_eq!(meta["dtmf"][0]["digit"], "4", "{meta}");
    let secs = meta["seconds"].as_f64().unwrap();
    assert!((1.7..2.3).contains(&secs), "2 s of 2.5 were recorded: {meta}");
    assert_eq!(soxi("-c", &file), "2");
    assert_eq!(soxi("-r", &file), "16000");
    let sox_secs: f64 = soxi("-D", &file).parse().unwrap();
    assert!(
        (sox_secs - secs).abs() < 0.01,
        "sox reads {sox_secs} s, the metadata says {secs}"
    );
    let ch = channels(&file, 2);
    assert!(
        tone_level(&ch[0], 16000.0, 440.0) > 0.05 && tone_level(&ch[0], 16000.0, 1000.0) < 0.01,
        "left: a"
    );
    assert!(
        tone_level(&ch[1], 16000.0, 1000.0) > 0.05 && tone_level(&ch[1], 16000.0, 440.0) < 0.01,
        "right: b"
    );
    // The call went on being relayed throughout.
    assert!(drain(&b.rtp) > 100);
}

/// rtpengine's ng commands record the call; a recording that cannot be
/// written (its directory cannot be made) is an event to the callback,
/// and the call is still relayed.
#[tokio::test(flavor = "multi_thread")]
async fn ng_records_and_a_failed_recording_is_an_event() {
    let (cb, mut events) = callback_server().await;
    let dir = std::env::temp_dir().join(format!("chorus-rec-{}", std::process::id()));
    let d = Daemon::start(104, &["--callback-url", &cb, "--recording-dir", dir.to_str().unwrap()]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("ngrec", &a, &b).await;
    let start = ngd(&[("command", "start recording"), ("call-id", "ngrec")]);
    let r = tokio::task::block_in_place(|| ng(&d, "r1", &start));
    assert_eq!(r.get("result").and_then(|v| v.as_str()), Some("ok"), "{r}");
    let id = r
        .get("recording-id")
        .and_then(|v| v.as_str())
        .expect("recording-id")
        .to_string();
    let (ra, rb) = (a.rtp.try_clone().unwrap(), b.rtp.try_clone().unwrap());
    tokio::task::spawn_blocking(move || talk(&ra, to_a, &rb, to_b, 0, 25))
        .await
        .unwrap();
    let stop = ngd(&[("command", "stop recording"), ("call-id", "ngrec")]);
    let r = tokio::task::block_in_place(|| ng(&d, "r2", &stop));
    assert_eq!(r.get("result").and_then(|v| v.as_str()), Some("ok"), "{r}");
    let meta = metadata(&dir.join(format!("{id}.json"))).await;
    assert!(meta["seconds"].as_f64().unwrap() > 0.3, "{meta}");
    let stopped = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (&stopped["event"], &stopped["recording_id"]),
        (&json!("recording_stopped"), &json!(id))
    );
    // A directory that cannot be made: /dev/null is no directory.
    let bad = Daemon::start(105, &["--callback-url", &cb, "--recording-dir", "/dev/null/recordings"]).await;
    let (c, e) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_c, to_e) = bad.call("norec", &c, &e).await;
    let (s, r) = bad.post("/v1/calls/norec/recordings", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let failed = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed["event"], "recording_failed", "{failed}");
    assert!(
        failed["reason"].as_str().unwrap().contains("/dev/null/recordings"),
        "{failed}"
    );
    let (rc, re) = (c.rtp.try_clone().unwrap(), e.rtp.try_clone().unwrap());
    tokio::task::spawn_blocking(move || talk(&rc, to_c, &re, to_e, 0, 10))
        .await
        .unwrap();
    assert!(drain(&e.rtp) >= 9, "the call is still relayed");
    let metrics = bad.metrics().await;
    assert_eq!(metric(&metrics, "chorus_recordings_total{result=\"failed\"}"), 1.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A conference's mix recorded to Ogg Opus: opusinfo finds a valid stream
/// of the right length, and opusdec's audio holds the speaker's tone.
#[tokio::test(flavor = "multi_thread")]
async fn a_conference_mix_is_recorded_to_ogg_opus() {
    let d = Daemon::start(107, &[]).await;
    let (s, r) = d.post("/v1/conferences", json!({"id": "oggroom"})).await;
    assert_eq!(s, 200, "{r}");
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sdp = format!(
        "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtcp-mux\r\n",
        phone.local_addr().unwrap().port()
    );
    let (s, r) = d
        .post("/v1/conferences/oggroom/participants", json!({"sdp": sdp}))
        .await;
    assert_eq!(s, 200, "{r}");
    let to = sdp_target(r["sdp"].as_str().unwrap());
    let (s, r) = d
        .post(
            "/v1/conferences/oggroom/recordings",
            json!({"format": "ogg", "sample_rate": 16000}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let id = r["recording_id"].as_str().unwrap().to_string();
    let file = PathBuf::from(r["file"].as_str().unwrap());
    assert_eq!(file.extension().unwrap(), "ogg");
    let meta_path = PathBuf::from(r["metadata"].as_str().unwrap());
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        for i in 0..75usize {
            let _ = phone.send_to(&rtp(0, i as u16, i as u32 * 160, 33, &pcmu(440.0, i * 160)), to);
            std::thread::sleep(
                (start + Duration::from_millis(20 * (i as u64 + 1))).saturating_duration_since(Instant::now()),
            );
        }
    })
    .await
    .unwrap();
    let (s, _) = d.delete(&format!("/v1/conferences/oggroom/recordings/{id}")).await;
    assert_eq!(s, 200);
    let meta = metadata(&meta_path).await;
    assert_eq!(
        (&meta["format"], &meta["conference"], &meta["channels"]),
        (&json!("ogg"), &json!("oggroom"), &json!(1))
    );
    let info = std::process::Command::new("opusinfo")
        .arg(&file)
        .output()
        .expect("opusinfo (opus-tools)");
    let text = String::from_utf8_lossy(&info.stdout).to_string() + &String::from_utf8_lossy(&info.stderr);
    assert!(info.status.success() && !text.contains("WARNING"), "{text}");
    assert!(
        text.contains("Channels: 1") && text.contains("Original sample rate: 16000"),
        "{text}"
    );
    let decoded = file.with_extension("decoded.wav");
    let st = std::process::Command::new("opusdec")
        .args(["--quiet", "--rate", "16000"])
        .arg(&file)
        .arg(&decoded)
        .status()
        .expect("opusdec (opus-tools)");
    assert!(st.success());
    let secs: f64 = soxi("-D", &decoded).parse().unwrap();
    let recorded = meta["seconds"].as_f64().unwrap();
    assert!(
        (secs - recorded).abs() < 0.03,
        "opusdec: {secs} s, metadata: {recorded} s"
    );
    assert!(recorded > 1.2, "{meta}");
    let pcm = &channels(&decoded, 1)[0];
    assert!(
        tone_level(pcm, 16000.0, 440.0) > 0.05,
        "the speaker is in the recording"
    );
}

/// Kamailio's `record-call=on` on the offer records the call from then
/// on, once however many times it is sent; `off` stops the recording.
#[tokio::test(flavor = "multi_thread")]
async fn the_record_call_flag_records_a_call_set_up_over_ng() {
    let d = Daemon::start(117, &[]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (sa, sb) = (a.sdp(), b.sdp());
    let offer = ngd(&[
        ("command", "offer"),
        ("call-id", "flagged"),
        ("from-tag", "ta"),
        ("sdp", &sa),
        ("record-call", "on"),
    ]);
    let r = tokio::task::block_in_place(|| ng(&d, "f1", &offer));
    assert_eq!(r.get("result").and_then(|v| v.as_str()), Some("ok"), "{r}");
    let (_, recs) = d.get("/v1/calls/flagged/recordings").await;
    assert_eq!(recs["recordings"].as_array().map(Vec::len), Some(1), "{recs}");
    let answer = ngd(&[
        ("command", "answer"),
        ("call-id", "flagged"),
        ("from-tag", "ta"),
        ("to-tag", "tb"),
        ("sdp", &sb),
        ("record-call", "yes"),
    ]);
    let r = tokio::task::block_in_place(|| ng(&d, "f2", &answer));
    assert_eq!(r.get("result").and_then(|v| v.as_str()), Some("ok"), "{r}");
    let (_, again) = d.get("/v1/calls/flagged/recordings").await;
    assert_eq!(again["recordings"], recs["recordings"], "still the one recording");
    let file = PathBuf::from(recs["recordings"][0]["file"].as_str().unwrap());
    let reoffer = ngd(&[
        ("command", "offer"),
        ("call-id", "flagged"),
        ("from-tag", "ta"),
        ("sdp", &sa),
        ("record-call", "off"),
    ]);
    let r = tokio::task::block_in_place(|| ng(&d, "f3", &reoffer));
    assert_eq!(r.get("result").and_then(|v| v.as_str()), Some("ok"), "{r}");
    let (_, none) = d.get("/v1/calls/flagged/recordings").await;
    assert_eq!(none["recordings"], json!([]), "{none}");
    let meta = metadata(&file.with_extension("json")).await;
    assert_eq!(meta["recording_id"], recs["recordings"][0]["recording_id"], "{meta}");
}
