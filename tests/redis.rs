//! Shared state in a real redis-server: records written at command
//! boundaries, a killed instance restarted under the same name takes its
//! calls back on the same ports, and Redis going away costs no call.

mod common;

use common::redis_server::RedisServer;
use common::{recv_n, Daemon, Peer};
use redis::Commands;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

async fn start(slot: u16, redis: &RedisServer, name: &str) -> Daemon {
    let args = redis.chorus_args(name);
    Daemon::start(slot, &args.iter().map(String::as_str).collect::<Vec<_>>()).await
}

/// Polls until `f` holds, for up to five seconds.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn record(conn: &mut redis::Connection, id: &str) -> Option<Value> {
    let text: Option<String> = conn.get(format!("chorus:call:{id}")).unwrap();
    text.map(|t| serde_json::from_str(&t).unwrap())
}

/// RTP both ways through a call: A's packets reach B and B's reach A.
fn flows(a: &mut Peer, b: &mut Peer, a_to: SocketAddr, b_to: SocketAddr) -> (usize, usize) {
    for _ in 0..5 {
        a.send_rtp(a_to);
        b.send_rtp(b_to);
    }
    (recv_n(&b.rtp, 5).len(), recv_n(&a.rtp, 5).len())
}

#[tokio::test]
async fn a_killed_instance_restarted_under_its_name_takes_its_calls_back() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let d = start(79, &redis, "node-a").await;
    let mut peers: Vec<(Peer, Peer, SocketAddr, SocketAddr)> = Vec::new();
    for i in 0..3 {
        let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
        let (a_to, b_to) = d.call(&format!("c{i}"), &a, &b).await;
        peers.push((a, b, a_to, b_to));
    }
    // Records land at command boundaries, with the owner and both legs.
    // (The offer's record may land first; the answer's follows.)
    let answered = |r: &Value| r["session"]["legs"][1]["tag"] == "tb";
    let rec = eventually("c2's answered record", || record(&mut conn, "c2").filter(answered)).await;
    assert_eq!(rec["owner"], "node-a");
    let owned: Vec<String> = conn.smembers("chorus:owner:node-a").unwrap();
    assert_eq!(owned.len(), 3, "{owned:?}");
    for (a, b, a_to, b_to) in &mut peers {
        assert_eq!(flows(a, b, *a_to, *b_to), (5, 5));
    }
    // A deleted call's record goes with it.
    let (s, _) = d.delete("/v1/calls/c0").await;
    assert_eq!(s, 200);
    eventually("c0's record removed", || {
        record(&mut conn, "c0").is_none().then_some(())
    })
    .await;

    // A conference's record carries its participants.
    let (s, _) = d
        .post("/v1/conferences", json!({"id": "room", "max_speakers": 2}))
        .await;
    assert_eq!(s, 200);
    let phone = Peer::new("127.0.0.1");
    let (s, joined) = d
        .post("/v1/conferences/room/participants", json!({"sdp": phone.sdp()}))
        .await;
    assert_eq!(s, 200, "{joined}");
    let (s, _) = d
        .patch(
            "/v1/conferences/room/participants/1",
            json!({"muted": true, "gain": 0.5}),
        )
        .await;
    assert_eq!(s, 200);
    let conf = eventually("room's record with its muted participant", || {
        let text: Option<String> = conn.get("chorus:conference:room").unwrap();
        let v: Value = serde_json::from_str(&text?).unwrap();
        (v["participants"][0]["controls"]["muted"] == true).then_some(v)
    })
    .await;
    assert_eq!(
        (&conf["owner"], &conf["max_speakers"]),
        (&json!("node-a"), &json!(2)),
        "{conf}"
    );
    assert_eq!(conf["participants"][0]["codec"]["kind"], "Pcmu", "{conf}");

    drop(d); // SIGKILL: no goodbye, the records stay.
    let d = start(79, &redis, "node-a").await;
    let t0 = Instant::now();
    let calls = loop {
        let (_, v) = d.get("/v1/calls").await;
        if v["total"] == 2 || t0.elapsed() > Duration::from_secs(5) {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(calls["calls"], json!(["c1", "c2"]), "{calls}");
    // Then its conference, whole: it is not seen before its participants are back.
    let room = loop {
        let (s, room) = d.get("/v1/conferences/room").await;
        if s == 200 || t0.elapsed() > Duration::from_secs(5) {
            break room;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (room["participants"].as_array().map(Vec::len), &room["max_speakers"]),
        (Some(1), &json!(2)),
        "{room}"
    );
    let p = &room["participants"][0];
    assert_eq!(
        (&p["id"], &p["muted"], &p["gain"]),
        (&json!(1), &json!(true), &json!(0.5)),
        "{room}"
    );
    // Same ports: the phones keep sending where they were told.
    for (a, b, a_to, b_to) in peers.iter_mut().skip(1) {
        assert_eq!(flows(a, b, *a_to, *b_to), (5, 5), "after the restart");
    }
    let m = d.metrics().await;
    assert_eq!(
        common::metric(&m, "chorus_calls_restored_total{result=\"ok\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        common::metric(&m, "chorus_conferences_restored_total{result=\"ok\"}"),
        1.0,
        "{m}"
    );
    // The heartbeat says so within a beat or two.
    let t0 = Instant::now();
    loop {
        let (s, inst) = d.get("/v1/instances").await;
        assert_eq!(s, 200, "{inst}");
        let me = inst["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == "node-a")
            .cloned();
        if me.as_ref().is_some_and(|m| m["state"] == "serving" && m["calls"] == 2) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "{inst}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn calls_go_on_while_redis_is_down_and_records_are_written_again_after() {
    let mut redis = RedisServer::start();
    let d = start(80, &redis, "node-b").await;
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (a_to, b_to) = d.call("before", &a, &b).await;
    eventually("the record", || record(&mut redis.conn(), "before")).await;

    redis.stop();
    let t0 = Instant::now();
    loop {
        let (_, r) = d.get("/readyz").await;
        if r["redis"] == "down" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "readyz never said redis is down: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, r) = d.get("/readyz").await;
    assert_eq!((s, &r["status"]), (200, &json!("ready")), "still ready: {r}");
    assert_eq!(common::metric(&d.metrics().await, "chorus_redis_up"), 0.0);
    // Commands and media go on.
    assert_eq!(flows(&mut a, &mut b, a_to, b_to), (5, 5));
    let (mut c, mut e) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (c_to, e_to) = d.call("during", &c, &e).await;
    assert_eq!(flows(&mut c, &mut e, c_to, e_to), (5, 5));
    let (s, _) = d.delete("/v1/calls/before").await;
    assert_eq!(s, 200);
    let (s, _) = d.post("/v1/conferences", json!({"id": "while-down"})).await;
    assert_eq!(s, 200);

    // Redis comes back empty: what this instance holds is written again.
    redis.restart();
    let mut conn = redis.conn();
    let rec = eventually("the record of the call made while redis was down", || {
        record(&mut conn, "during")
    })
    .await;
    assert_eq!(rec["owner"], "node-b");
    assert!(record(&mut conn, "before").is_none());
    let conf = eventually("the record of the conference made while redis was down", || {
        conn.get::<_, Option<String>>("chorus:conference:while-down").unwrap()
    })
    .await;
    assert!(conf.contains("\"owner\":\"node-b\""), "{conf}");
    let listed: Vec<String> = conn.smembers("chorus:owner-conferences:node-b").unwrap();
    assert_eq!(listed, ["while-down"]);
    let (_, r) = d.get("/readyz").await;
    assert_eq!(r["redis"], "up");
}

#[tokio::test]
async fn two_live_instances_cannot_share_a_name() {
    let redis = RedisServer::start();
    let _first = start(81, &redis, "twin").await;
    let url = redis.url();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["serve", "--http-listen", "127.0.0.1:0", "--ng-listen", "127.0.0.1:0"])
        .args(["--port-min", "23240", "--port-max", "23279"])
        .args([
            "--redis-url",
            &url,
            "--instance-id",
            "twin",
            "--redis-heartbeat-ms",
            "100",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("instance_id `twin` is in use"), "{err}");
}

#[tokio::test]
async fn commands_reaching_another_instance_are_forwarded_to_the_owner() {
    let redis = RedisServer::start();
    let a = start(82, &redis, "fwd-a").await;
    let b = start(83, &redis, "fwd-b").await;
    let (mut pa, mut pb) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    // Offer on A, answer on B: a round-robin balancer in front of both.
    let (s, offer) = a
        .post("/v1/calls/rr/offer", json!({"from_tag": "ta", "sdp": pa.sdp()}))
        .await;
    assert_eq!(s, 200, "{offer}");
    let (s, answer) = b
        .post(
            "/v1/calls/rr/answer",
            json!({"from_tag": "ta", "to_tag": "tb", "sdp": pb.sdp()}),
        )
        .await;
    assert_eq!(s, 200, "{answer}");
    let (a_to, b_to) = (
        common::sdp_target(answer["sdp"].as_str().unwrap()),
        common::sdp_target(offer["sdp"].as_str().unwrap()),
    );
    // A's ports, from A's range: the call lives on A only.
    assert!(
        a_to.port() >= a.port_min && a_to.port() < a.port_min + common::PORTS_PER_SLOT,
        "{a_to}"
    );
    assert_eq!(flows(&mut pa, &mut pb, a_to, b_to), (5, 5));
    let (s, q) = b.get("/v1/calls/rr").await;
    assert_eq!((s, q["answered"].clone()), (200, json!(true)), "{q}");
    let (_, listed) = b.get("/v1/calls").await;
    assert_eq!(listed["total"], 0, "B holds nothing itself: {listed}");
    // The ng door forwards too (Kamailio's rtpengine set without Call-ID hashing).
    let q = common::ng(&b, "c1", &common::ngd(&[("command", "query"), ("call-id", "rr")]));
    assert_eq!(q.get("result").and_then(|v| v.as_str()), Some("ok"), "{q}");
    // A request another instance forwarded is answered where it lands, never
    // forwarded again (two instances that disagree cannot bounce it).
    let forwarded = reqwest::Client::new()
        .post(format!("{}/ng", b.base))
        .header("x-chorus-forwarded", "fwd-a")
        .body("c2 d7:call-id2:rr7:command5:querye")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(forwarded.contains("no call `rr`"), "{forwarded}");
    let (s, _) = b.delete("/v1/calls/rr").await;
    assert_eq!(s, 200);
    let (s, gone) = a.get("/v1/calls/rr").await;
    assert_eq!(s, 404, "{gone}");
    let m = b.metrics().await;
    assert_eq!(
        common::metric(&m, "chorus_forwarded_requests_total{result=\"ok\"}"),
        4.0,
        "{m}"
    );
    // Unknown calls are still answered here, precisely.
    let (s, e) = b.get("/v1/calls/nobody").await;
    assert_eq!((s, e["error"]["code"].clone()), (404, json!("not_found")), "{e}");
}

#[tokio::test]
async fn conference_commands_reaching_another_instance_are_forwarded() {
    let redis = RedisServer::start();
    let a = start(85, &redis, "conf-a").await;
    let b = start(86, &redis, "conf-b").await;
    let (s, c) = a.post("/v1/conferences", json!({"id": "room"})).await;
    assert_eq!(s, 200, "{c}");
    // A join by SDP through B lands in A's conference, on A's ports.
    let phone = Peer::new("127.0.0.1");
    let t0 = Instant::now();
    let joined = loop {
        let (s, j) = b
            .post("/v1/conferences/room/participants", json!({"sdp": phone.sdp()}))
            .await;
        if s == 200 || t0.elapsed() > Duration::from_secs(3) {
            break (s, j);
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // until A's record is written
    };
    assert_eq!(joined.0, 200, "{}", joined.1);
    let to = common::sdp_target(joined.1["sdp"].as_str().unwrap());
    assert!(
        to.port() >= a.port_min && to.port() < a.port_min + common::PORTS_PER_SLOT,
        "{to}"
    );
    let (s, q) = b.get("/v1/conferences/room").await;
    assert_eq!((s, q["participants"].as_array().map(Vec::len)), (200, Some(1)), "{q}");
    // The id is taken service-wide.
    let (s, e) = b.post("/v1/conferences", json!({"id": "room"})).await;
    assert_eq!(s, 409, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("conf-a"), "{e}");
    // The event stream is not buffered through B: B points at A.
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_follow
        .get(format!("{}/v1/conferences/room/events", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 307);
    assert_eq!(
        r.headers()["location"],
        format!("{}/v1/conferences/room/events", a.base).as_str()
    );
    // A leg of a call on B moves into A's conference: B re-points it with a
    // re-offer, and the phone keeps its ports on B.
    let (mut pa, mut pb) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (pa_to, _) = b.call("on-b", &pa, &pb).await;
    let (s, moved) = b
        .post(
            "/v1/conferences/room/participants",
            json!({"call_id": "on-b", "from_tag": "ta"}),
        )
        .await;
    assert_eq!(s, 200, "{moved}");
    assert_eq!(
        (&moved["participant_id"], &moved["bridged_by"]),
        (&json!(2), &json!("conf-b")),
        "{moved}"
    );
    let (_, q) = a.get("/v1/conferences/room").await;
    assert_eq!(q["participants"].as_array().map(Vec::len), Some(2), "{q}");
    // The first participant and the moved phone hear each other.
    let mut phone = phone;
    for _ in 0..25 {
        phone.send_rtp(to);
        pa.send_rtp(pa_to);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (heard_by_pa, heard_by_phone) = (recv_n(&pa.rtp, 10), recv_n(&phone.rtp, 10));
    assert_eq!((heard_by_pa.len(), heard_by_phone.len()), (10, 10));
    assert!(
        heard_by_pa.iter().all(|(_, from)| *from == pa_to),
        "from its own port on B"
    );
    assert!(recv_n(&pb.rtp, 1).is_empty(), "the other party is cut off");
    let _ = &mut pb;
    // A move the conference refuses leaves the call as it was.
    let (s, _) = a
        .post("/v1/conferences", json!({"id": "tiny", "max_participants": 1}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = a
        .post(
            "/v1/conferences/tiny/participants",
            json!({"sdp": Peer::new("127.0.0.1").sdp()}),
        )
        .await;
    assert_eq!(s, 200);
    let mut conn = redis.conn();
    eventually("tiny's record", || {
        conn.get::<_, Option<String>>("chorus:conference:tiny").unwrap()
    })
    .await;
    let (mut pc, mut pd) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (c_to, d_to) = b.call("stays", &pc, &pd).await;
    let (s, e) = b
        .post(
            "/v1/conferences/tiny/participants",
            json!({"call_id": "stays", "from_tag": "ta"}),
        )
        .await;
    assert_eq!(s, 409, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("is full"), "{e}");
    assert_eq!(flows(&mut pc, &mut pd, c_to, d_to), (5, 5), "the call goes on");
    // A leg of a call on neither instance: a precise 404.
    let (s, e) = b
        .post(
            "/v1/conferences/room/participants",
            json!({"call_id": "nowhere", "from_tag": "ta"}),
        )
        .await;
    assert_eq!(s, 404, "{e}");
    let (s, _) = b.delete("/v1/conferences/room").await;
    assert_eq!(s, 200);
    let (s, _) = a.get("/v1/conferences/room").await;
    assert_eq!(s, 404);
}
