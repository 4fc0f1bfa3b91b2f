//! Failover for real: two instances on their own loopback addresses share
//! a redis-server; one is killed with SIGKILL while phones send RTP in calls
//! and in a conference; the other takes the calls and the conference over
//! on the same addresses and ports. Every phone's media resumes within a
//! second of the kill, no call is lost or duplicated, and the killed
//! instance, restarted, takes new calls again.

mod common;

use common::redis_server::RedisServer;
use common::{sdp_target, Daemon, Peer};
use serde_json::json;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALLS: usize = 10;
const SLOT: u16 = 90; // 200 ports from here: slots 90..=94
const PORTS: u16 = 200;

async fn instance(redis: &RedisServer, name: &str, ip: &str) -> Daemon {
    let mut args = redis.chorus_args(name);
    args.extend(["--media-bind".to_string(), ip.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_logged(SLOT, PORTS, &args, &[], &format!("failover-{name}")).await
}

/// One phone: its socket, where it sends, and when packets reached it.
struct Phone {
    sock: UdpSocket,
    to: SocketAddr,
    arrivals: Vec<Instant>,
}

/// Sends 20 ms packets from every phone and records arrivals until `stop`.
fn run_phones(mut phones: Vec<Phone>, stop: Arc<AtomicBool>) -> Vec<Phone> {
    let mut buf = [0u8; 2048];
    let mut seq = 0u16;
    let mut next = Instant::now();
    while !stop.load(Relaxed) {
        for (i, p) in phones.iter_mut().enumerate() {
            let mut pkt = [0u8; 172];
            chorus::wire::rtp::write_header(&mut pkt, 0, seq, u32::from(seq) * 160, 1000 + i as u32).unwrap();
            let _ = p.sock.send_to(&pkt, p.to);
        }
        seq = seq.wrapping_add(1);
        next += Duration::from_millis(20);
        while Instant::now() < next {
            for p in phones.iter_mut() {
                while let Ok((_, _)) = p.sock.recv_from(&mut buf) {
                    p.arrivals.push(Instant::now());
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    phones
}

/// The longest silence a phone heard around `kill`: from its last packet
/// before the kill to its first after.
fn gap(p: &Phone, kill: Instant) -> Option<Duration> {
    let before = p.arrivals.iter().rev().find(|t| **t <= kill)?;
    let after = p.arrivals.iter().find(|t| **t > kill)?;
    Some(*after - *before)
}

#[tokio::test]
async fn killing_an_instance_costs_its_calls_under_a_second_of_media() {
    let redis = RedisServer::start();
    let a = instance(&redis, "fo-a", "127.0.0.2").await;
    let b = instance(&redis, "fo-b", "127.0.0.3").await;
    let mut phones = Vec::new();
    for i in 0..CALLS {
        let (pa, pb) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
        let id = format!("call-{i}");
        let (s, offer) = a
            .post(
                &format!("/v1/calls/{id}/offer"),
                json!({"from_tag": "x", "sdp": pa.sdp()}),
            )
            .await;
        assert_eq!(s, 200, "{offer}");
        let body = json!({"from_tag": "x", "to_tag": "y", "sdp": pb.sdp()});
        let (s, answer) = a.post(&format!("/v1/calls/{id}/answer"), body).await;
        assert_eq!(s, 200, "{answer}");
        for (peer, sdp) in [(pa, &answer), (pb, &offer)] {
            let to = sdp_target(sdp["sdp"].as_str().unwrap());
            assert_eq!(to.ip().to_string(), "127.0.0.2");
            peer.rtp.set_nonblocking(true).unwrap();
            phones.push(Phone {
                sock: peer.rtp,
                to,
                arrivals: Vec::new(),
            });
        }
    }
    // A conference of three phones on A as well.
    let (s, room) = a.post("/v1/conferences", json!({"id": "room"})).await;
    assert_eq!(s, 200, "{room}");
    for _ in 0..3 {
        let p = Peer::new("127.0.0.1");
        let (s, joined) = a
            .post("/v1/conferences/room/participants", json!({"sdp": p.sdp()}))
            .await;
        assert_eq!(s, 200, "{joined}");
        let to = sdp_target(joined["sdp"].as_str().unwrap());
        assert_eq!(to.ip().to_string(), "127.0.0.2");
        p.rtp.set_nonblocking(true).unwrap();
        phones.push(Phone {
            sock: p.rtp,
            to,
            arrivals: Vec::new(),
        });
    }
    // Let every record reach Redis and media flow, then kill A.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let media = std::thread::spawn({
        let stop = stop.clone();
        move || run_phones(phones, stop)
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    let kill = Instant::now();
    drop(a); // SIGKILL
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Relaxed);
    let phones = media.join().unwrap();

    let mut gaps: Vec<Duration> = Vec::new();
    for (i, p) in phones.iter().enumerate() {
        let g = gap(p, kill)
            .unwrap_or_else(|| panic!("phone {i} heard nothing after the kill ({} before)", p.arrivals.len()));
        gaps.push(g);
    }
    gaps.sort();
    let (median, max) = (gaps[gaps.len() / 2], gaps[gaps.len() - 1]);
    eprintln!(
        "media gap after kill -9 over {} phones: median {median:?}, max {max:?}",
        gaps.len()
    );
    assert!(max < Duration::from_secs(1), "media gap {max:?} (median {median:?})");

    // B holds every call once, and the conference with its three phones.
    let (_, list) = b.get("/v1/calls?limit=1000").await;
    assert_eq!(list["total"], CALLS, "{list}");
    let (s, room) = b.get("/v1/conferences/room").await;
    assert_eq!(s, 200, "{room}");
    assert_eq!(room["participants"].as_array().map(Vec::len), Some(3), "{room}");
    // A newcomer joins it on B, on the conference's address, with a new id.
    let p = Peer::new("127.0.0.1");
    let (s, joined) = b
        .post("/v1/conferences/room/participants", json!({"sdp": p.sdp()}))
        .await;
    assert_eq!(s, 200, "{joined}");
    assert_eq!(joined["participant_id"], 4, "{joined}");
    assert!(
        joined["sdp"].as_str().unwrap().contains("c=IN IP4 127.0.0.2"),
        "{joined}"
    );
    let (_, inst) = b.get("/v1/instances").await;
    let state_of = |id: &str| {
        inst["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .map(|i| i["state"].clone())
    };
    assert_eq!(state_of("fo-a"), Some(json!("dead")), "{inst}");
    assert_eq!(state_of("fo-b"), Some(json!("serving")), "{inst}");
    // The calls are B's now: a re-INVITE reaches it and keeps the address.
    let p = Peer::new("127.0.0.1");
    let (s, re) = b
        .post("/v1/calls/call-0/offer", json!({"from_tag": "x", "sdp": p.sdp()}))
        .await;
    assert_eq!(s, 200, "{re}");
    assert!(re["sdp"].as_str().unwrap().contains("c=IN IP4 127.0.0.2"), "{re}");

    // A restarted takes new calls again.
    let a = instance(&redis, "fo-a", "127.0.0.2").await;
    let (pa, pb) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (a_to, b_to) = a.call("after", &pa, &pb).await;
    let (mut pa, mut pb) = (pa, pb);
    for _ in 0..5 {
        pa.send_rtp(a_to);
        pb.send_rtp(b_to);
    }
    assert_eq!(
        (common::recv_n(&pb.rtp, 5).len(), common::recv_n(&pa.rtp, 5).len()),
        (5, 5)
    );
    let (_, list) = a.get("/v1/calls").await;
    assert_eq!(list["calls"], json!(["after"]), "{list}");
}

/// Fencing: an instance that stalls past its heartbeat (SIGSTOP here) may
/// have been taken over meanwhile. When it resumes it lets go of what a peer
/// owns now, without writing over the peer's records, and keeps the rest.
#[tokio::test]
async fn a_stalled_instance_lets_go_of_what_a_peer_took_over() {
    use redis::Commands;
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let mut args = redis.chorus_args("st-a");
    args.extend(["--media-bind".to_string(), "127.0.0.2".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = Daemon::start_logged(95, 40, &args, &[], "fence-a").await;
    let mut peers = Vec::new();
    for id in ["kept", "taken"] {
        let (pa, pb) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
        let targets = a.call(id, &pa, &pb).await;
        peers.push((pa, pb, targets));
    }
    let (s, _) = a.post("/v1/conferences", json!({"id": "taken-room"})).await;
    assert_eq!(s, 200);
    let record = |conn: &mut redis::Connection, key: &str| -> Option<serde_json::Value> {
        let text: Option<String> = conn.get(key).unwrap();
        text.map(|t| serde_json::from_str(&t).unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while record(&mut conn, "chorus:conference:taken-room").is_none() {
        assert!(Instant::now() < deadline, "no conference record");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &a.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    // Its heartbeat expires (3 beats of 100 ms); a peer takes two things over.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let beat: Option<String> = conn.get("chorus:instance:st-a").unwrap();
    assert!(beat.is_none(), "the stalled instance's heartbeat expired");
    for key in ["chorus:call:taken", "chorus:conference:taken-room"] {
        let mut r = record(&mut conn, key).unwrap();
        r["owner"] = json!("st-b");
        let _: () = conn.set(key, r.to_string()).unwrap();
    }
    signal("-CONT");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, calls) = a.get("/v1/calls").await;
        let (_, confs) = a.get("/v1/conferences").await;
        if calls["calls"] == json!(["kept"]) && confs["total"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{calls} {confs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = a.metrics().await;
    assert_eq!(common::metric(&m, "chorus_fenced_total{kind=\"call\"}"), 1.0, "{m}");
    assert_eq!(common::metric(&m, "chorus_fenced_total{kind=\"conference\"}"), 1.0);
    // The peer's records stand; the kept call's is still this instance's.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(record(&mut conn, "chorus:call:taken").unwrap()["owner"], "st-b");
    assert_eq!(
        record(&mut conn, "chorus:conference:taken-room").unwrap()["owner"],
        "st-b"
    );
    assert_eq!(record(&mut conn, "chorus:call:kept").unwrap()["owner"], "st-a");
    // The kept call's media flows on.
    let (pa, pb, (a_to, b_to)) = &mut peers[0];
    for _ in 0..5 {
        pa.send_rtp(*a_to);
        pb.send_rtp(*b_to);
    }
    assert_eq!(
        (common::recv_n(&pb.rtp, 5).len(), common::recv_n(&pa.rtp, 5).len()),
        (5, 5)
    );
}

/// A call's stream to an application, its recording and a looped playback
/// go on after a takeover: the taker connects to the application again
/// under the same stream id (a fresh `start`), the recording goes on in
/// its next file, and the loop plays again under its id.
#[tokio::test(flavor = "multi_thread")]
async fn streams_and_recordings_go_on_after_a_takeover() {
    use common::ws::{accept, mulaw_payload, send_tone, ws_app};
    let redis = RedisServer::start();
    let start = |name: &'static str, ip: &'static str| {
        let mut args = redis.chorus_args(name);
        args.extend(["--media-bind".to_string(), ip.to_string()]);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Daemon::start_logged(115, 40, &args, &[], name).await
        }
    };
    let a = start("tk-a", "127.0.0.4").await;
    let b = start("tk-b", "127.0.0.5").await;
    let (app, mut conns) = ws_app().await;
    let (pa, pb) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (a_to, _) = a.call("tk", &pa, &pb).await;
    let (s, r) = a
        .post("/v1/calls/tk/streams", json!({"url": app, "from_tag": "ta"}))
        .await;
    assert_eq!(s, 200, "{r}");
    let sid = r["stream_id"].as_str().unwrap().to_string();
    let (s, r) = a.post("/v1/calls/tk/recordings", json!({"from_tag": "ta"})).await;
    assert_eq!(s, 200, "{r}");
    let rid = r["recording_id"].as_str().unwrap().to_string();
    let body = json!({"from_tag": "tb", "tone": {"frequency": 700, "ms": 1000}, "loop": true});
    let (s, r) = a.post("/v1/calls/tk/playbacks", body).await;
    assert_eq!(s, 200, "{r}");
    let pid = r["playback_id"].as_str().unwrap().to_string();
    // A speaks 440 Hz for 5 s; the application hears it on A.
    let talk = send_tone(pa.rtp.try_clone().unwrap(), a_to, 440.0, 250, 0x44);
    let mut first = accept(&mut conns).await;
    assert_eq!(first.json().await["event"], "connected");
    assert_eq!(first.json().await["start"]["streamSid"], json!(sid));
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(a); // SIGKILL
             // B takes the call over and connects to the application afresh.
    let mut again = accept(&mut conns).await;
    assert_eq!(again.json().await["event"], "connected");
    let start_msg = again.json().await;
    assert_eq!(start_msg["start"]["streamSid"], json!(sid), "{start_msg}");
    assert_eq!(start_msg["start"]["callSid"], "tk", "{start_msg}");
    let mut heard = Vec::new();
    while heard.len() < 8000 {
        let m = again.json().await;
        if m["event"] == "media" {
            heard.extend(mulaw_payload(&m));
        }
    }
    let level = chorus::media::mixer::level::tone_level(&heard, 8000.0, 440.0);
    assert!(level > 0.2, "A's tone through B: {level}");
    // B plays the loop to leg B again, under its id: B's phone hears it
    // under A's tone.
    let (_, plays) = b.get("/v1/calls/tk/playbacks").await;
    assert_eq!(plays["playbacks"][0]["playback_id"], json!(pid), "{plays}");
    let rb = pb.rtp.try_clone().unwrap();
    // What waited in the socket from before does not count.
    rb.set_nonblocking(true).unwrap();
    while rb.recv_from(&mut [0u8; 2048]).is_ok() {}
    rb.set_nonblocking(false).unwrap();
    let heard = tokio::task::block_in_place(|| common::listen_pcmu(&rb, 0.6));
    let w: Vec<f32> = heard.into_iter().flat_map(|(_, x)| x).collect();
    let played = chorus::media::mixer::level::tone_level(&w, 8000.0, 700.0);
    assert!(played > 0.05, "the loop on B after the takeover: {played}");
    // B lists both under their ids; the recording writes its next part.
    let (_, streams) = b.get("/v1/calls/tk/streams").await;
    assert_eq!(streams["streams"][0]["stream_id"], json!(sid), "{streams}");
    let (_, recs) = b.get("/v1/calls/tk/recordings").await;
    let file = recs["recordings"][0]["file"].as_str().unwrap_or_default().to_string();
    assert!(file.ends_with(&format!("{rid}-1.wav")), "{recs}");
    talk.join().unwrap();
    let (s, _) = b.delete(&format!("/v1/calls/tk/recordings/{rid}")).await;
    assert_eq!(s, 200);
    let bytes = std::fs::read(&file).unwrap();
    let (rate, pcm) = chorus::media::wav::read(&bytes).unwrap();
    let x: Vec<f32> = pcm.iter().map(|&s| s as f32 / 32768.0).collect();
    assert!(x.len() > rate as usize, "{} samples", x.len());
    let level = chorus::media::mixer::level::tone_level(&x, rate as f32, 440.0);
    assert!(level > 0.1, "the recording's second part holds A's tone: {level}");
}
