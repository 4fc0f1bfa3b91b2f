//! End to end: live audio to applications over WebSocket. A real
//! WebSocket server (tokio-tungstenite) stands for the application; phones
//! send real G.711 tones over UDP; what the application gets is decoded and
//! checked by spectrum, and what it sends back is heard by a participant.

mod common;
use base64::Engine as _;
use chorus::media::mixer::level::tone_level;
use common::ws::*;
use common::*;
use serde_json::{json, Value};
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// A relayed call's leg, both tracks, Twilio Media Streams JSON: the
/// message sequence, the tones on each track, a key press, and the stop.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_leg_streams_both_tracks_in_twilio_format() {
    let (url, mut conns) = ws_app().await;
    let d = Daemon::start(88, &[]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("st", &a, &b).await;
    let (s, r) = d
        .post(
            "/v1/calls/st/streams",
            json!({"url": url, "from_tag": "ta", "tracks": "both",
                   "headers": {"Authorization": "Bearer k1"}, "custom_parameters": {"agent": "7"}}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let sid = r["stream_id"].as_str().unwrap().to_string();
    let mut conn = accept(&mut conns).await;
    assert!(conn.headers.contains(&("authorization".into(), "Bearer k1".into())));
    let connected = conn.json().await;
    let mut sent = vec![connected.to_string()];
    assert_eq!(
        (&connected["event"], &connected["protocol"]),
        (&json!("connected"), &json!("Call"))
    );
    let start = conn.json().await;
    sent.push(start.to_string());
    assert_eq!(start["event"], "start", "{start}");
    assert_eq!(start["streamSid"], json!(sid));
    assert_eq!(start["start"]["callSid"], "st");
    assert_eq!(start["start"]["tracks"], json!(["inbound", "outbound"]));
    assert_eq!(start["start"]["customParameters"], json!({"agent": "7"}));
    assert_eq!(
        start["start"]["mediaFormat"],
        json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
    );
    // The tapped leg (a) says 440 Hz, the other (b) 1000 Hz; then a presses 7.
    let ta = send_tone(a.rtp.try_clone().unwrap(), to_a, 440.0, 50, a.ssrc);
    let tb = send_tone(b.rtp.try_clone().unwrap(), to_b, 1000.0, 50, b.ssrc);
    ta.join().unwrap();
    tb.join().unwrap();
    for (i, end) in [false, true, true].into_iter().enumerate() {
        let ev = [7, if end { 0x8a } else { 0x0a }, 3, 0x20];
        a.rtp
            .send_to(&rtp(101, 60 + i as u16, 8000, a.ssrc, &ev), to_a)
            .unwrap();
    }
    let mut tracks: [Vec<f32>; 2] = Default::default();
    let mut stamps: [Vec<u64>; 2] = Default::default();
    let mut seq = 1u64;
    let digit = loop {
        let m = conn.json().await;
        sent.push(m.to_string());
        seq += 1;
        assert_eq!(m["sequenceNumber"], json!(seq.to_string()), "{m}");
        assert_eq!(m["streamSid"], json!(sid));
        match m["event"].as_str().unwrap() {
            "media" => {
                let k = (m["media"]["track"] == "outbound") as usize;
                stamps[k].push(m["media"]["timestamp"].as_str().unwrap().parse().unwrap());
                tracks[k].extend(mulaw_payload(&m));
            }
            "dtmf" => break m,
            e => panic!("unexpected {e}: {m}"),
        }
    };
    assert_eq!(digit["dtmf"], json!({"track": "inbound_track", "digit": "7"}));
    for (k, st) in stamps.iter().enumerate() {
        assert!(st.len() >= 45, "track {k}: {} frames", st.len());
        assert!(st.windows(2).all(|w| w[1] == w[0] + 20), "track {k}: {st:?}");
    }
    let level = |k: usize, f| tone_level(&tracks[k], 8000.0, f);
    assert!(level(0, 440.0) > 0.1 && level(0, 1000.0) < 0.01, "inbound: what a says");
    assert!(
        level(1, 1000.0) > 0.1 && level(1, 440.0) < 0.01,
        "outbound: what a hears"
    );
    // The relay went on as before.
    assert!(drain(&b.rtp) >= 45, "b heard a");
    let (s, list) = d.get("/v1/calls/st/streams").await;
    assert_eq!((s, &list["streams"][0]["stream_id"]), (200, &json!(sid)), "{list}");
    let (s, r) = d.delete(&format!("/v1/calls/st/streams/{sid}")).await;
    assert_eq!(s, 200, "{r}");
    let stop = conn.json().await;
    assert_eq!(
        (&stop["event"], &stop["stop"]["callSid"]),
        (&json!("stop"), &json!("st")),
        "{stop}"
    );
    sent.push(stop.to_string());
    twilio_check(&sent);
    assert!(matches!(conn.next().await, Message::Close(_)));
    let metrics = d.metrics().await;
    assert!(
        metric(
            &metrics,
            "chorus_audio_stream_frames_total{outcome=\"sent\",target=\"call\"}"
        ) >= 90.0
    );
}

/// The messages, against streamdouble's reading of Twilio's documentation.
fn twilio_check(messages: &[String]) {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/twilio_check.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().unwrap();
    for m in messages {
        writeln!(stdin, "{m}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'streamdouble'"),
        "streamdouble is not installed: run scripts/test, which installs it"
    );
    assert!(out.status.success(), "{err}{}", String::from_utf8_lossy(&out.stdout));
}

/// An application on a conference's mix speaks back: the participant hears
/// it, the application does not hear itself, a mark comes back once its
/// audio played, and `clear` silences it at once.
#[tokio::test(flavor = "multi_thread")]
async fn an_application_listens_to_a_conference_and_speaks_into_it() {
    let (url, mut conns) = ws_app().await;
    let d = Daemon::start(89, &[]).await;
    let (s, r) = d.post("/v1/conferences", json!({"id": "room"})).await;
    assert_eq!(s, 200, "{r}");
    let (phone, to, _) = d.join_pcmu("room").await;
    let (s, r) = d
        .post(
            "/v1/conferences/room/streams",
            json!({"url": url, "bidirectional": true}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let mut conn = accept(&mut conns).await;
    assert_eq!(conn.json().await["event"], "connected");
    let start = conn.json().await;
    assert_eq!(start["start"]["callSid"], "room");
    let sid = start["streamSid"].clone();
    let p = phone.try_clone().unwrap();
    let heard = std::thread::spawn(move || listen_pcmu(&p, 4.0));
    let talk = send_tone(phone, to, 440.0, 200, 4242);
    // One second of 1000 Hz at once (faster than real time, as TTS sends), then a mark.
    let t0 = Instant::now();
    for i in 0..50 {
        let payload = base64::engine::general_purpose::STANDARD.encode(pcmu(1000.0, i * 160));
        conn.send(json!({"event": "media", "streamSid": sid, "media": {"payload": payload}}));
    }
    conn.send(json!({"event": "mark", "streamSid": sid, "mark": {"name": "said"}}));
    let mut app_heard = Vec::new();
    let mark = loop {
        let m = conn.json().await;
        match m["event"].as_str().unwrap() {
            "media" => app_heard.extend(mulaw_payload(&m)),
            "mark" => break (m, t0.elapsed()),
            e => panic!("unexpected {e}"),
        }
    };
    assert_eq!(mark.0["mark"]["name"], "said");
    assert!(
        mark.1 >= Duration::from_millis(900) && mark.1 < Duration::from_millis(2500),
        "the mark came back {:?} after a second of audio",
        mark.1
    );
    // Now five seconds of it, cleared after 300 ms (barge-in).
    for i in 0..250 {
        let payload = base64::engine::general_purpose::STANDARD.encode(pcmu(1000.0, i * 160));
        conn.send(json!({"event": "media", "streamSid": sid, "media": {"payload": payload}}));
    }
    conn.send(json!({"event": "mark", "streamSid": sid, "mark": {"name": "long"}}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cleared = Instant::now();
    conn.send(json!({"event": "clear", "streamSid": sid}));
    let long = loop {
        let m = conn.json().await;
        if m["event"] == "mark" {
            break m;
        }
    };
    assert_eq!(long["mark"]["name"], "long", "a cleared mark comes back at once");
    assert!(cleared.elapsed() < Duration::from_millis(500));
    talk.join().unwrap();
    let heard = heard.join().unwrap();
    let said = window(&heard, t0 + Duration::from_millis(300), t0 + Duration::from_millis(900));
    assert!(
        tone_level(&said, 8000.0, 1000.0) > 0.05,
        "the phone hears the application"
    );
    let after = window(
        &heard,
        cleared + Duration::from_millis(200),
        cleared + Duration::from_millis(900),
    );
    assert!(!after.is_empty());
    assert!(tone_level(&after, 8000.0, 1000.0) < 0.01, "nothing of it after clear");
    // The application hears the phone, not itself.
    assert!(
        tone_level(&app_heard, 8000.0, 440.0) > 0.05,
        "the application hears the phone"
    );
    assert!(
        tone_level(&app_heard, 8000.0, 1000.0) < 0.01,
        "the application hears itself"
    );
}

/// What a user sees going wrong: precise refusals, an application that is
/// down (events say so, the call goes on), one that drops the connection
/// (chorus reconnects and starts afresh), and a raw stereo stream of a
/// participant that ends with its conference.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_reconnects_and_raw_stereo() {
    let (url, mut conns) = ws_app().await;
    let d = Daemon::start(101, &[]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    d.call("c1", &a, &b).await;
    for (path, body, status, says) in [
        (
            "/v1/calls/c1/streams",
            json!({"url": "http://x/", "from_tag": "ta"}),
            400,
            "ws://",
        ),
        ("/v1/calls/c1/streams", json!({"url": url}), 400, "from_tag"),
        (
            "/v1/calls/c1/streams",
            json!({"url": url, "from_tag": "zz"}),
            404,
            "no leg tagged `zz`",
        ),
        (
            "/v1/calls/nope/streams",
            json!({"url": url, "from_tag": "ta"}),
            404,
            "no call `nope`",
        ),
        (
            "/v1/calls/c1/streams",
            json!({"url": url, "from_tag": "ta", "sample_rate": 16000}),
            400,
            "format raw",
        ),
    ] {
        let (s, r) = d.post(path, body.clone()).await;
        assert_eq!(s, status, "{body} -> {r}");
        assert!(r["error"]["message"].as_str().unwrap().contains(says), "{body} -> {r}");
    }
    // An application that is down: the stream starts, the events say why it waits.
    let (s, r) = d.post("/v1/conferences", json!({"id": "r1"})).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = d
        .post("/v1/conferences/r1/streams", json!({"url": "ws://127.0.0.1:9/down"}))
        .await;
    assert_eq!(s, 200, "{r}");
    let down_sid = r["stream_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, conf) = d.get("/v1/conferences/r1").await;
        let events = conf["events"].as_array().unwrap();
        if let Some(e) = events.iter().find(|e| e["event"] == "stream_disconnected") {
            assert_eq!(e["stream_id"], json!(down_sid), "{e}");
            assert!(e["reason"].as_str().unwrap().contains("refused"), "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "no stream_disconnected event: {conf}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _) = d.delete(&format!("/v1/conferences/r1/streams/{down_sid}")).await;
    assert_eq!(s, 200);
    // A participant in raw stereo at 16 kHz: it says 440 Hz (left).
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sdp = format!(
        "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtcp-mux\r\n",
        phone.local_addr().unwrap().port()
    );
    let (s, r) = d.post("/v1/conferences/r1/participants", json!({"sdp": sdp})).await;
    assert_eq!(s, 200, "{r}");
    let to = sdp_target(r["sdp"].as_str().unwrap());
    let pid = r["participant_id"].as_u64().unwrap();
    let body = json!({"url": url, "participant": pid, "format": "raw", "sample_rate": 16000,
                      "channels": 2, "tracks": "both"});
    let (s, r) = d.post("/v1/conferences/r1/streams", body).await;
    assert_eq!(s, 200, "{r}");
    let mut conn = accept(&mut conns).await;
    let start = conn.json().await;
    assert_eq!(
        (
            &start["event"],
            &start["sample_rate"],
            &start["channels"],
            &start["encoding"]
        ),
        (&json!("start"), &json!(16000), &json!(2), &json!("pcm_s16le")),
        "{start}"
    );
    // The application drops the connection: chorus comes back with a new start.
    let _ = conn.tx.send(Message::Close(None));
    let mut conn = accept(&mut conns).await;
    assert_eq!(conn.json().await["event"], "start", "a fresh start after reconnecting");
    send_tone(phone.try_clone().unwrap(), to, 440.0, 60, 99).join().unwrap();
    let (mut left, mut right) = (Vec::new(), Vec::new());
    while left.len() < 16000 {
        if let Message::Binary(b) = conn.next().await {
            assert_eq!(b.len() % 4, 0);
            for f in b.chunks_exact(4) {
                left.push(i16::from_le_bytes([f[0], f[1]]) as f32 / 32768.0);
                right.push(i16::from_le_bytes([f[2], f[3]]) as f32 / 32768.0);
            }
        }
    }
    assert!(
        tone_level(&left, 16000.0, 440.0) > 0.05,
        "left: what the participant says"
    );
    assert!(
        tone_level(&right, 16000.0, 440.0) < 0.01,
        "right: what it hears (alone: nothing)"
    );
    // The conference ends: the stream stops.
    let (s, _) = d.delete("/v1/conferences/r1").await;
    assert_eq!(s, 200);
    let stop = loop {
        if let Message::Text(t) = conn.next().await {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    assert_eq!(stop["event"], "stop", "{stop}");
    let metrics = d.metrics().await;
    assert!(metric(&metrics, "chorus_audio_stream_connections_total{outcome=\"lost\"}") >= 1.0);
    assert!(metric(&metrics, "chorus_audio_stream_connections_total{outcome=\"failed\"}") >= 1.0);
}

/// The proxy starts and stops a stream over ng (`start stream`, `stop stream`).
#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_starts_and_stops_a_stream_over_ng() {
    let (url, mut conns) = ws_app().await;
    let d = Daemon::start(102, &[]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    d.call("ngc", &a, &b).await;
    let start = ngd(&[
        ("command", "start stream"),
        ("call-id", "ngc"),
        ("from-tag", "tb"),
        ("url", &url),
        ("format", "raw"),
        ("sample-rate", "8000"),
    ]);
    let r = tokio::task::block_in_place(|| ng(&d, "s1", &start));
    assert_eq!(r.get("result").and_then(|v| v.as_str()), Some("ok"), "{r}");
    assert!(r.get("warning").is_none(), "{r}");
    let sid = r
        .get("stream-id")
        .and_then(|v| v.as_str())
        .expect("stream-id")
        .to_string();
    let mut conn = accept(&mut conns).await;
    let open = conn.json().await;
    assert_eq!(
        (&open["stream_id"], &open["party"], &open["sample_rate"]),
        (&json!(sid), &json!("tb"), &json!(8000))
    );
    let stop = ngd(&[("command", "stop stream"), ("call-id", "ngc"), ("stream-id", &sid)]);
    let r = tokio::task::block_in_place(|| ng(&d, "s2", &stop));
    assert_eq!(r.get("result").and_then(|v| v.as_str()), Some("ok"), "{r}");
    assert_eq!(conn.json().await["event"], "stop");
    let again = tokio::task::block_in_place(|| ng(&d, "s3", &stop));
    assert_eq!(again.get("result").and_then(|v| v.as_str()), Some("error"));
    let reason = again
        .get("error-reason")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    assert!(reason.contains("no stream"), "{reason}");
}

/// A call's live events (server-sent): a key press and its stream's
/// trouble arrive as they happen, and the event stream ends with the call.
#[tokio::test(flavor = "multi_thread")]
async fn a_calls_events_arrive_live() {
    let d = Daemon::start(108, &[]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, _) = d.call("ev", &a, &b).await;
    let (s, r) = d.get("/v1/calls/nope/events").await;
    assert_eq!(s, 404, "{r}");
    let mut resp = d
        .http
        .get(format!("{}/v1/calls/ev/events", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for (i, end) in [false, true, true].into_iter().enumerate() {
        let ev = [9, if end { 0x8a } else { 0x0a }, 3, 0x20];
        a.rtp.send_to(&rtp(101, 10 + i as u16, 800, a.ssrc, &ev), to_a).unwrap();
    }
    let (s, r) = d
        .post(
            "/v1/calls/ev/streams",
            json!({"url": "ws://127.0.0.1:9/", "from_tag": "ta"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let mut text = String::new();
    while !(text.contains("event: dtmf") && text.contains("event: stream_disconnected")) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no more events within 5 s: {text}"))
            .unwrap()
            .expect("the event stream is open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.contains(r#""digit":"9""#) && text.contains(r#""from_tag":"ta""#),
        "{text}"
    );
    let (s, _) = d.delete("/v1/calls/ev").await;
    assert_eq!(s, 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream ends with the call");
}

/// An application on a relayed G.711 call speaks to the tapped leg: that
/// phone hears it mixed with the other party, the mark comes back once it
/// played, and `clear` silences it; the other party never hears it.
#[tokio::test(flavor = "multi_thread")]
async fn an_application_speaks_into_a_relayed_call() {
    let (url, mut conns) = ws_app().await;
    let d = Daemon::start(110, &[]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("agent", &a, &b).await;
    let (s, r) = d
        .post(
            "/v1/calls/agent/streams",
            json!({"url": url, "from_tag": "tb", "bidirectional": true}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let mut conn = accept(&mut conns).await;
    assert_eq!(conn.json().await["event"], "connected");
    let sid = conn.json().await["streamSid"].clone();
    // A says 440 Hz to B for 3 s; B says nothing but keeps sending silence.
    let talk_a = send_tone(a.rtp.try_clone().unwrap(), to_a, 440.0, 150, 41);
    let bsock = b.rtp.try_clone().unwrap();
    let talk_b = std::thread::spawn(move || {
        for i in 0..150u16 {
            let _ = bsock.send_to(&rtp(0, i, i as u32 * 160, 42, &[0xff; 160]), to_b);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let heard_b = {
        let s = b.rtp.try_clone().unwrap();
        std::thread::spawn(move || listen_pcmu(&s, 3.0))
    };
    let heard_a = {
        let s = a.rtp.try_clone().unwrap();
        std::thread::spawn(move || listen_pcmu(&s, 3.0))
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    for i in 0..50 {
        let payload = base64::engine::general_purpose::STANDARD.encode(pcmu(1000.0, i * 160));
        conn.send(json!({"event": "media", "streamSid": sid, "media": {"payload": payload}}));
    }
    conn.send(json!({"event": "mark", "streamSid": sid, "mark": {"name": "spoken"}}));
    let mark = loop {
        let m = conn.json().await;
        if m["event"] == "mark" {
            break t0.elapsed();
        }
    };
    assert!(
        mark >= Duration::from_millis(900) && mark < Duration::from_millis(2500),
        "mark after {mark:?}"
    );
    for i in 0..100 {
        let payload = base64::engine::general_purpose::STANDARD.encode(pcmu(1000.0, i * 160));
        conn.send(json!({"event": "media", "streamSid": sid, "media": {"payload": payload}}));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cleared = Instant::now();
    conn.send(json!({"event": "clear", "streamSid": sid}));
    talk_a.join().unwrap();
    talk_b.join().unwrap();
    let (heard_b, heard_a) = (heard_b.join().unwrap(), heard_a.join().unwrap());
    let at = |ms| t0 + Duration::from_millis(ms);
    let during = window(&heard_b, at(200), at(800));
    assert!(tone_level(&during, 8000.0, 1000.0) > 0.05, "B hears the application");
    assert!(tone_level(&during, 8000.0, 440.0) > 0.05, "and A, mixed");
    let after = window(
        &heard_b,
        cleared + Duration::from_millis(200),
        cleared + Duration::from_millis(800),
    );
    assert!(tone_level(&after, 8000.0, 1000.0) < 0.01, "nothing of it after clear");
    assert!(tone_level(&after, 8000.0, 440.0) > 0.05, "A goes on");
    let a_heard = window(&heard_a, at(200), at(800));
    assert!(
        tone_level(&a_heard, 8000.0, 1000.0) < 0.01,
        "A never hears the application"
    );
}
