//! End to end: the control API's errors, port exhaustion, media timeout,
//! authentication and documentation.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

fn assert_error(status: u16, body: &serde_json::Value, want_status: u16, code: &str, msg_part: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains(msg_part), "message `{msg}` lacks `{msg_part}`");
}

#[tokio::test]
async fn every_error_has_its_status_code_and_message() {
    let d = Daemon::start(20, &[]).await;
    let a = Peer::new("127.0.0.1");
    // Malformed JSON and missing fields.
    let r = d
        .http
        .post(format!("{}/v1/calls/x/offer", d.base))
        .body("{\"from_tag\":")
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    assert_error(s, &r.json().await.unwrap(), 400, "bad_request", "invalid JSON body");
    let (s, b) = d.post("/v1/calls/x/offer", json!({"from_tag": "a"})).await;
    assert_error(s, &b, 400, "bad_request", "missing field `sdp`");
    let (s, b) = d
        .post(
            "/v1/calls/x/offer",
            json!({"from_tag": "a", "sdp": a.sdp(), "options": {"icee": "remove"}}),
        )
        .await;
    assert_error(s, &b, 400, "bad_request", "unknown field `icee`");
    // Malformed SDP: the message names the line.
    let bad = a.sdp().replace("m=audio ", "m=audio x");
    let (s, b) = d.post("/v1/calls/x/offer", json!({"from_tag": "a", "sdp": bad})).await;
    assert_error(s, &b, 400, "bad_sdp", "SDP line 6 `m=audio x");
    let (s, b) = d
        .post("/v1/calls/x/offer", json!({"from_tag": "a", "sdp": "hello"}))
        .await;
    assert_error(s, &b, 400, "bad_sdp", "SDP line 1");
    // A failed first offer leaves no call behind.
    assert_error(
        d.get("/v1/calls/x").await.0,
        &d.get("/v1/calls/x").await.1,
        404,
        "not_found",
        "no call `x`",
    );
    // Unknown call ids.
    let (s, b) = d.delete("/v1/calls/nope").await;
    assert_error(s, &b, 404, "not_found", "no call `nope`");
    let (s, b) = d.post("/v1/calls/nope/delete", json!({})).await;
    assert_error(s, &b, 404, "not_found", "no call `nope`");
    // Answer without offer.
    let (s, b) = d
        .post(
            "/v1/calls/nope/answer",
            json!({"from_tag": "a", "to_tag": "b", "sdp": a.sdp()}),
        )
        .await;
    assert_error(s, &b, 409, "conflict", "has no offer");
    // Answer naming another offerer; answer with a different number of streams.
    let (s, _) = d
        .post("/v1/calls/y/offer", json!({"from_tag": "a", "sdp": a.sdp()}))
        .await;
    assert_eq!(s, 200);
    let (s, b) = d
        .post(
            "/v1/calls/y/answer",
            json!({"from_tag": "zz", "to_tag": "b", "sdp": a.sdp()}),
        )
        .await;
    assert_error(s, &b, 409, "conflict", "tag `zz`");
    let two = a.sdp() + "m=video 9000 RTP/AVP 96\r\n";
    let (s, b) = d
        .post(
            "/v1/calls/y/answer",
            json!({"from_tag": "a", "to_tag": "b", "sdp": two}),
        )
        .await;
    assert_error(s, &b, 409, "conflict", "answer has 2 m= lines but the offer had 1");
    // A third party's offer on an existing call.
    let (s, b) = d
        .post("/v1/calls/y/offer", json!({"from_tag": "q", "sdp": a.sdp()}))
        .await;
    assert_error(s, &b, 409, "conflict", "offer from tag `q`");
    // Unknown interface; delete naming a tag the call lacks.
    let (s, b) = d
        .post(
            "/v1/calls/y/offer",
            json!({"from_tag": "a", "sdp": a.sdp(), "options": {"to_interface": "dmz"}}),
        )
        .await;
    assert_error(s, &b, 400, "bad_request", "no interface named `dmz`");
    let (s, b) = d.delete("/v1/calls/y?from_tag=other").await;
    assert_error(s, &b, 404, "not_found", "no leg with tag `other`");
    let (s, _) = d.delete("/v1/calls/y?from_tag=a").await;
    assert_eq!(s, 200);
    // Unknown endpoint.
    let (s, b) = d.get("/v2/whatever").await;
    assert_error(s, &b, 404, "not_found", "no such endpoint");
    // Every refusal was counted by endpoint and result.
    let m = d.metrics().await;
    assert_eq!(
        metric(
            &m,
            "chorus_control_requests_total{endpoint=\"offer\",result=\"bad_sdp\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "chorus_control_requests_total{endpoint=\"answer\",result=\"conflict\"}"
        ),
        3.0,
        "two answers without an offer, one whose m= lines differ from the offer's"
    );
}

#[tokio::test]
async fn exhausted_ports_get_503_while_calls_flow_and_delete_frees_them() {
    // Four ports: exactly one call without rtcp-mux (a pair on each side).
    let d = Daemon::start_with_range(21, 4, &[]).await;
    let (mut a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("first", &a, &b).await;
    let (c, e) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (s, body) = d
        .post("/v1/calls/second/offer", json!({"from_tag": "ta", "sdp": c.sdp()}))
        .await;
    assert_error(
        s,
        &body,
        503,
        "ports_exhausted",
        "no free media ports on interface `default`",
    );
    // The first call keeps flowing.
    for _ in 0..5 {
        a.send_rtp(to_a);
    }
    assert_eq!(recv_n(&b.rtp, 5).len(), 5);
    let m = d.metrics().await;
    assert_eq!(metric(&m, "chorus_ports_free{interface=\"default\"}"), 0.0);
    // Delete frees the ports; the next call gets the very same ones.
    let (s, fin) = d.post("/v1/calls/first/delete", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(fin["legs"][0]["streams"][0]["stats"]["rtp"]["packets"], 5);
    let (s, _) = d.get("/v1/calls/first").await;
    assert_eq!(s, 404);
    let (to_c, to_e) = d.call("second", &c, &e).await;
    let mut got = [to_c.port(), to_e.port()];
    let mut had = [to_a.port(), to_b.port()];
    got.sort();
    had.sort();
    assert_eq!(got, had);
    let m = d.metrics().await;
    assert_eq!(metric(&m, "chorus_calls_active"), 1.0);
}

#[tokio::test]
async fn media_timeout_ends_the_call_and_posts_the_callback() {
    let (url, mut rx) = callback_server().await;
    let d = Daemon::start(22, &["--media-timeout", "1", "--callback-url", &url]).await;
    let (mut a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, _) = d.call("silent", &a, &b).await;
    // Media keeps it alive...
    for _ in 0..6 {
        a.send_rtp(to_a);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        d.get("/v1/calls/silent").await.0,
        200,
        "a call with media does not time out"
    );
    // ...and silence ends it.
    let notice = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("callback within 5 s")
        .unwrap();
    assert_eq!(notice["event"], "media_timeout");
    assert_eq!(notice["call_id"], "silent");
    assert_eq!(notice["call"]["legs"][0]["streams"][0]["stats"]["rtp"]["packets"], 6);
    assert_eq!(d.get("/v1/calls/silent").await.0, 404);
    let m = d.metrics().await;
    assert_eq!(metric(&m, "chorus_calls_timed_out_total"), 1.0);
    // Its four ports' sockets are parked for the next call, as a delete's.
    assert_eq!(metric(&m, "chorus_ports_parked{interface=\"default\"}"), 4.0);
}

#[tokio::test]
async fn token_is_required_when_configured() {
    // The token comes from the environment, as the README advises.
    let d = Daemon::start_full(23, PORTS_PER_SLOT, &[], &[("CHORUS_TOKEN", "s3cret")]).await;
    let a = Peer::new("127.0.0.1");
    let (s, b) = d
        .post("/v1/calls/t/offer", json!({"from_tag": "a", "sdp": a.sdp()}))
        .await;
    assert_error(s, &b, 401, "unauthorized", "bearer token");
    let r = d
        .http
        .post(format!("{}/v1/calls/t/offer", d.base))
        .bearer_auth("s3cret")
        .json(&json!({"from_tag": "a", "sdp": a.sdp()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(d.get("/healthz").await.0, 200);
    assert_eq!(d.get("/readyz").await.0, 200);
}

#[tokio::test]
async fn lists_calls_in_pages_and_serves_its_openapi_document() {
    let d = Daemon::start(24, &[]).await;
    let a = Peer::new("127.0.0.1");
    for id in ["c", "a", "b"] {
        let (s, _) = d
            .post(
                &format!("/v1/calls/{id}/offer"),
                json!({"from_tag": "t", "sdp": a.sdp()}),
            )
            .await;
        assert_eq!(s, 200);
    }
    let (_, p1) = d.get("/v1/calls?limit=2").await;
    assert_eq!(p1["calls"], json!(["a", "b"]));
    assert_eq!(p1["total"], 3);
    assert_eq!(p1["next_offset"], 2);
    let (_, p2) = d.get("/v1/calls?limit=2&offset=2").await;
    assert_eq!(p2["calls"], json!(["c"]));
    assert_eq!(p2["next_offset"], serde_json::Value::Null);
    let (s, b) = d.get("/v1/calls?limit=0").await;
    assert_error(s, &b, 400, "bad_request", "limit");
    let (s, b) = d.get("/v1/calls?limit=many").await;
    assert_error(s, &b, 400, "bad_request", "invalid query string");
    let (s, b) = d.delete("/v1/calls/a?form_tag=x").await;
    assert_error(s, &b, 400, "bad_request", "unknown field `form_tag`");

    let (s, doc) = d.get("/openapi.json").await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    // Every documented path answers something other than "no such endpoint".
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let path = path
            .replace("{call_id}", "a")
            .replace("{conf_id}", "c")
            .replace("{pid}", "1");
        for op in ops.as_object().unwrap().keys() {
            let r = d
                .http
                .request(op.to_uppercase().parse().unwrap(), format!("{}{path}", d.base))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            assert_ne!(
                body["error"]["message"], "no such endpoint; see /openapi.json",
                "{op} {path}"
            );
        }
    }
}

#[tokio::test]
async fn sigterm_drains_refuses_new_calls_and_keeps_existing_ones() {
    let mut d = Daemon::start(25, &["--drain-timeout", "20"]).await;
    let (mut a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, _) = d.call("ongoing", &a, &b).await;
    // An empty conference does not hold the drain up.
    let (s, _) = d.post("/v1/conferences", json!({"id": "empty"})).await;
    assert_eq!(s, 200);
    let pid = d.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, body) = d.get("/readyz").await;
    assert_error(s, &body, 503, "draining", "draining");
    let c = Peer::new("127.0.0.1");
    let (s, body) = d
        .post("/v1/calls/new/offer", json!({"from_tag": "ta", "sdp": c.sdp()}))
        .await;
    assert_error(s, &body, 503, "draining", "takes no new calls");
    // ng ping is no longer pong, so Kamailio's rtpengine module picks another node.
    let ping = ng(&d, "p1", &ngd(&[("command", "ping")]));
    assert_eq!(ping.get("result").and_then(|v| v.as_str()), Some("error"), "{ping}");
    a.send_rtp(to_a);
    assert_eq!(recv_n(&b.rtp, 1).len(), 1, "the ongoing call still flows");
    let (s, _) = d.delete("/v1/calls/ongoing").await;
    assert_eq!(s, 200);
    // With no calls and no participants left, chorus exits well before the drain timeout.
    let status = d
        .wait_exit(Duration::from_secs(5))
        .expect("chorus exits after the last call");
    assert!(status.success(), "{status:?}");
}

/// Every refusal is the API's JSON error, including the ones the HTTP
/// framework makes itself; hostile ids and headers are refused.
#[tokio::test]
async fn refusals_are_json_errors_and_hostile_ids_and_headers_are_refused() {
    let d = Daemon::start(73, &[]).await;
    let url = |p: &str| format!("{}{p}", d.base);
    let r = d.http.put(url("/v1/calls/x/offer")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: serde_json::Value = r.json().await.expect("405 is JSON");
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");

    // Its own client: the server closes the connection of an oversized body.
    let big = vec![b'x'; 2 << 20];
    let r = reqwest::Client::new()
        .post(url("/v1/calls/x/offer"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.expect("413 is JSON");
    assert_eq!(v["error"]["code"], "too_large", "{v}");

    let peer = Peer::new("127.0.0.1");
    for id in ["nul%00byte", "tab%09", "new%0Aline"] {
        let (s, v) = d
            .post(
                &format!("/v1/calls/{id}/offer"),
                json!({"from_tag": "a", "sdp": peer.sdp()}),
            )
            .await;
        assert_eq!(s, 400, "{id}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("call id contains"),
            "{v}"
        );
    }
    let long = "x".repeat(300);
    let (s, _) = d
        .post(
            &format!("/v1/calls/{long}/offer"),
            json!({"from_tag": "a", "sdp": peer.sdp()}),
        )
        .await;
    assert_eq!(s, 400);

    let r = d
        .http
        .get(url("/v1/calls"))
        .header("x-padding", "y".repeat(64 << 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let v: serde_json::Value = r.json().await.expect("431 is JSON");
    assert_eq!(v["error"]["code"], "headers_too_large", "{v}");
    let (s, _) = d.get("/v1/calls").await;
    assert_eq!(s, 200, "normal requests still served");
}

/// Every limit a remote party could push against is a setting, answers
/// with an error that names it, and is counted.
#[tokio::test]
async fn limits_refuse_clearly_and_are_counted() {
    let args = [
        "--max-calls",
        "1",
        "--max-sdp-media",
        "1",
        "--max-participants",
        "2",
        "--max-requests-per-second",
        "30",
    ];
    let d = Daemon::start(75, &args).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (s, v) = d
        .post("/v1/calls/one/offer", json!({"from_tag": "a", "sdp": a.sdp()}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = d
        .post("/v1/calls/two/offer", json!({"from_tag": "a", "sdp": b.sdp()}))
        .await;
    assert_eq!(s, 503, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("max_calls"), "{v}");
    let two_media = b.sdp_with("127.0.0.1", "m=video 5000 RTP/AVP 96\r\n");
    let (s, v) = d
        .post(
            "/v1/calls/one/answer",
            json!({"from_tag": "a", "to_tag": "b", "sdp": two_media}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("max_sdp_media"), "{v}");
    let (s, v) = d.post("/v1/conferences", json!({"max_participants": 5})).await;
    assert_eq!(s, 400, "{v}");

    let mut limited = 0;
    for _ in 0..60 {
        let (s, v) = d.get("/v1/calls").await;
        if s == 429 {
            assert_eq!(v["error"]["code"], "limit", "{v}");
            limited += 1;
        }
    }
    assert!(limited >= 20, "{limited} of 60 refused at 30 per second");
    let m = d.metrics().await;
    assert_eq!(metric(&m, "chorus_limit_refusals_total{limit=\"calls\"}"), 1.0);
    assert_eq!(metric(&m, "chorus_limit_refusals_total{limit=\"sdp_media\"}"), 1.0);
    assert!(metric(&m, "chorus_limit_refusals_total{limit=\"requests_per_second\"}") >= 20.0);
}

/// A port of the range that another process holds is skipped while it is
/// held, and is back in the pool afterwards: it is not lost for good.
#[tokio::test]
async fn a_port_held_elsewhere_is_skipped_and_not_lost() {
    let d = Daemon::start(76, &[]).await;
    let squatters: Vec<std::net::UdpSocket> = (0..4)
        .map(|i| std::net::UdpSocket::bind(("127.0.0.1", d.port_min + i)).unwrap())
        .collect();
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, to_b) = d.call("skip", &a, &b).await;
    for port in [to_a.port(), to_b.port()] {
        assert!(port >= d.port_min + 4, "chorus skipped the held ports, took {port}");
    }
    drop(squatters);
    let (s, _) = d.delete("/v1/calls/skip").await;
    assert_eq!(s, 200);
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "chorus_ports_free{interface=\"default\"}"),
        f64::from(PORTS_PER_SLOT)
    );
}

/// RFC 4733 key presses on a relayed call reach the callback once each,
/// with the leg that pressed them, while the packets still go through.
#[tokio::test]
async fn dtmf_on_a_relayed_call_reaches_the_callback() {
    let (url, mut rx) = callback_server().await;
    let d = Daemon::start(87, &["--callback-url", &url]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, _) = d.call("keys", &a, &b).await;
    // Key 5 for 100 ms: two updates, then the end three times (RFC 4733 2.5.1.4).
    let mut pkt = [0u8; 16];
    for (i, (end, duration)) in [(false, 160u16), (false, 480), (true, 800), (true, 800), (true, 800)]
        .into_iter()
        .enumerate()
    {
        chorus::wire::rtp::write_header(&mut pkt, 101, 10 + i as u16, 4000, a.ssrc).unwrap();
        pkt[12..16].copy_from_slice(&[5, if end { 0x8a } else { 0x0a }, (duration >> 8) as u8, duration as u8]);
        a.rtp.send_to(&pkt, to_a).unwrap();
    }
    let notice = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("callback within 5 s")
        .unwrap();
    assert_eq!(notice["event"], "dtmf", "{notice}");
    assert_eq!(
        (
            &notice["call_id"],
            &notice["from_tag"],
            &notice["digit"],
            &notice["duration_ms"]
        ),
        (&json!("keys"), &json!("ta"), &json!("5"), &json!(100))
    );
    // Once: the repeated ends are not new presses.
    let again = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    assert!(again.is_err(), "a second callback: {again:?}");
    // And the packets went through to the other leg.
    let mut buf = [0u8; 64];
    b.rtp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (n, _) = b.rtp.recv_from(&mut buf).expect("the telephone events are relayed");
    assert_eq!(&buf[12..n.min(16)], &[5, 0x0a, 0, 160]);
}
