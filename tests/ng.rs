//! rtpengine's ng protocol over UDP and HTTP: commands, flags, retransmissions,
//! malformed input.

mod common;
use chorus::wire::bencode::{self, Value};
use common::*;

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no `{key}` in {v}"))
}

fn int(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for k in path {
        cur = cur.get(k).unwrap_or_else(|| panic!("no `{k}` in {v}"));
    }
    match cur {
        Value::Int(i) => *i,
        other => panic!("{other} is not an integer"),
    }
}

/// The streams of a tag's first media in a query reply.
fn streams_of(q: &Value, tag: &str) -> Vec<Value> {
    let medias = q.get("tags").and_then(|t| t.get(tag)).and_then(|t| t.get("medias"));
    let Some(Value::List(medias)) = medias else {
        panic!("no medias for `{tag}` in {q}")
    };
    match medias.first().and_then(|m| m.get("streams")) {
        Some(Value::List(streams)) => streams.clone(),
        _ => panic!("no streams for `{tag}` in {q}"),
    }
}

fn flags(stream: &Value) -> Vec<String> {
    match stream.get("flags") {
        Some(Value::List(f)) => f.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => panic!("no flags in {stream}"),
    }
}

#[tokio::test]
async fn ping_offer_answer_query_list_delete_over_udp_with_media() {
    let d = Daemon::start(30, &[]).await;
    assert_eq!(s(&ng(&d, "c1", &ngd(&[("command", "ping")])), "result"), "pong");
    let (mut a, mut b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let offer = ng(
        &d,
        "c2",
        &ngd(&[
            ("command", "offer"),
            ("call-id", "k1"),
            ("from-tag", "fa"),
            ("sdp", &a.sdp()),
            ("label", "caller"),
        ]),
    );
    assert_eq!(s(&offer, "result"), "ok", "{offer}");
    let answer = ng(
        &d,
        "c3",
        &ngd(&[
            ("command", "answer"),
            ("call-id", "k1"),
            ("from-tag", "fa"),
            ("to-tag", "tb"),
            ("sdp", &b.sdp()),
        ]),
    );
    assert_eq!(s(&answer, "result"), "ok", "{answer}");
    let (to_a, to_b) = (sdp_target(s(&answer, "sdp")), sdp_target(s(&offer, "sdp")));
    // Before any media, no stream is confirmed (latched).
    let q = ng(&d, "c4a", &ngd(&[("command", "query"), ("call-id", "k1")]));
    assert!(!flags(&streams_of(&q, "fa")[0]).contains(&"confirmed".into()), "{q}");
    for _ in 0..5 {
        a.send_rtp(to_a);
    }
    b.send_rtp(to_b);
    assert_eq!(recv_n(&b.rtp, 5).len(), 5);
    assert_eq!(recv_n(&a.rtp, 1).len(), 1);
    // One RTCP report, and one datagram too short to be RTP (an error).
    let to_a_rtcp = std::net::SocketAddr::new(to_a.ip(), to_a.port() + 1);
    a.send_rtcp(&a.rtcp, to_a_rtcp);
    assert_eq!(recv_n(&b.rtcp, 1).len(), 1);
    a.rtp.send_to(b"xyz", to_a).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));

    let q = ng(&d, "c4", &ngd(&[("command", "query"), ("call-id", "k1")]));
    assert_eq!(s(&q, "result"), "ok");
    assert_eq!(int(&q, &["totals", "RTP", "packets"]), 6, "{q}");
    assert_eq!(int(&q, &["totals", "RTP", "bytes"]), 6 * 172, "{q}");
    assert_eq!(int(&q, &["totals", "RTP", "errors"]), 1, "{q}");
    assert_eq!(int(&q, &["totals", "RTCP", "packets"]), 1, "{q}");
    assert_eq!(int(&q, &["totals", "RTCP", "bytes"]), 8, "{q}");
    let fa = q.get("tags").unwrap().get("fa").unwrap();
    assert_eq!(s(fa, "label"), "caller");
    let Some(Value::List(medias)) = fa.get("medias") else {
        panic!("{q}")
    };
    assert_eq!(int(&medias[0], &["index"]), 1, "{q}");
    let streams = streams_of(&q, "fa");
    assert_eq!(int(&streams[0], &["local port"]), to_a.port() as i64);
    assert_eq!(int(&streams[0], &["stats", "packets"]), 5);
    assert_eq!(int(&streams[0], &["stats", "errors"]), 1);
    assert_eq!(int(&streams[0], &["endpoint", "port"]), a.addr().port() as i64);
    assert_eq!(flags(&streams[0]), ["RTP", "filled", "confirmed"], "{q}");
    assert_eq!(flags(&streams[1]), ["RTCP", "filled"], "latching is an RTP matter: {q}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let last = int(&streams[0], &["last packet"]);
    assert!((now - 5..=now).contains(&last), "last packet {last}, now {now}");
    // A second later, the last packet is that much in the past.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let later = ng(&d, "c4b", &ngd(&[("command", "query"), ("call-id", "k1")]));
    let last_later = int(&streams_of(&later, "fa")[0], &["last packet"]);
    // Seconds are whole on both sides: the last packet may round up to the
    // second after `now`, never past it (adding the idle time would).
    let now = now + 1;
    assert!(
        (now - 5..=now).contains(&last_later),
        "last packet {last_later}, now {now}"
    );

    let list = ng(&d, "c5", &ngd(&[("command", "list")]));
    assert_eq!(list.get("calls"), Some(&Value::List(vec![Value::str("k1")])));
    // Both front doors see the same call.
    let (status, http) = d.get("/v1/calls/k1").await;
    assert_eq!(status, 200);
    assert_eq!(http["legs"][0]["streams"][0]["stats"]["rtp"]["packets"], 5);

    let stats = ng(&d, "c6", &ngd(&[("command", "statistics")]));
    assert_eq!(int(&stats, &["statistics", "currentstatistics", "sessionsown"]), 1);
    assert_eq!(
        int(&stats, &["statistics", "totalstatistics", "relayedpackets"]),
        7,
        "six RTP, one RTCP"
    );
    assert_eq!(
        int(&stats, &["statistics", "totalstatistics", "managedsessions"]),
        1,
        "ended plus active"
    );

    let del = ng(
        &d,
        "c7",
        &ngd(&[("command", "delete"), ("call-id", "k1"), ("from-tag", "fa")]),
    );
    assert_eq!(s(&del, "result"), "ok");
    assert_eq!(int(&del, &["totals", "RTP", "packets"]), 6);
    let gone = ng(&d, "c8", &ngd(&[("command", "query"), ("call-id", "k1")]));
    assert_eq!(s(&gone, "result"), "error");
    assert_eq!(s(&gone, "error-reason"), "no call `k1`, which ended 0 s ago (deleted)");
    let stats = ng(&d, "c9", &ngd(&[("command", "statistics")]));
    assert_eq!(
        int(&stats, &["statistics", "totalstatistics", "managedsessions"]),
        1,
        "{stats}"
    );

    // `limit`, as an integer or a string; none or 0 means 32.
    for id in ["l1", "l2"] {
        d.call(id, &Peer::new("127.0.0.1"), &Peer::new("127.0.0.1")).await;
    }
    let listed = |cookie: &str, limit: Option<Value>| {
        let mut items = vec![(b"command".to_vec(), Value::str("list"))];
        items.extend(limit.map(|l| (b"limit".to_vec(), l)));
        match ng(&d, cookie, &Value::Dict(items)).get("calls") {
            Some(Value::List(l)) => l.len(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(listed("l-int", Some(Value::Int(1))), 1);
    assert_eq!(listed("l-str", Some(Value::str("1"))), 1);
    assert_eq!(listed("l-zero", Some(Value::Int(0))), 2);
    assert_eq!(listed("l-none", None), 2);
}

#[tokio::test]
async fn retransmitted_commands_get_the_cached_reply_and_run_once() {
    let d = Daemon::start(31, &[]).await;
    let a = Peer::new("127.0.0.1");
    let msg = ngd(&[
        ("command", "offer"),
        ("call-id", "r1"),
        ("from-tag", "fa"),
        ("sdp", &a.sdp()),
    ]);
    let proxy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let first = ng_raw_from(&proxy, &d, format!("same {msg}").as_bytes());
    let again = ng_raw_from(&proxy, &d, format!("same {msg}").as_bytes());
    assert_eq!(first, again, "byte-identical reply");
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "chorus_control_requests_total{endpoint=\"ng:offer\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "chorus_control_requests_total{endpoint=\"ng\",result=\"retransmission\"}"
        ),
        1.0
    );
    // One offer took one port pair (facing the callee), not two.
    assert_eq!(
        metric(&m, "chorus_ports_free{interface=\"default\"}"),
        (PORTS_PER_SLOT - 2) as f64
    );
    // A new cookie is a new command.
    let other = ng(&d, "other", &msg);
    assert_eq!(s(&other, "result"), "ok");
}

#[tokio::test]
async fn malformed_messages_get_precise_errors_and_nothing_breaks() {
    let d = Daemon::start(32, &[]).await;
    let reply = |raw: &[u8]| String::from_utf8_lossy(&ng_raw(&d, raw)).to_string();
    let r = reply(b"x1 d7:command4:pinge");
    assert!(r.starts_with("x1 "), "{r}");
    let r = reply(b"x2 d7:command");
    assert!(
        r.contains("error-reason") && r.contains("malformed bencode at byte 10"),
        "{r}"
    );
    let r = reply(b"x3 li1ee");
    assert!(r.contains("not a dictionary"), "{r}");
    // 32,000 nested lists in one datagram (crashes rtpengine 10.5).
    let mut bomb = b"x4 ".to_vec();
    bomb.extend(std::iter::repeat_n(b'l', 32_000));
    bomb.extend(std::iter::repeat_n(b'e', 32_000));
    let r = reply(&bomb);
    assert!(r.contains("nested deeper than 16 levels"), "{r}");
    let e = ng(&d, "x5", &ngd(&[("command", "bogus")]));
    assert!(s(&e, "error-reason").contains("unknown or unsupported command `bogus`"));
    let e = ng(
        &d,
        "x6",
        &ngd(&[("command", "offer"), ("from-tag", "a"), ("sdp", "v=0")]),
    );
    assert_eq!(s(&e, "error-reason"), "missing `call-id`");
    let e = ng(
        &d,
        "x7",
        &ngd(&[
            ("command", "offer"),
            ("call-id", "m"),
            ("from-tag", "a"),
            ("sdp", "v=0\r\nhello\r\n"),
        ]),
    );
    assert!(s(&e, "error-reason").starts_with("SDP line 2 `hello`"), "{e}");
    let e = ng(
        &d,
        "x8",
        &ngd(&[
            ("command", "answer"),
            ("call-id", "none"),
            ("from-tag", "a"),
            ("to-tag", "b"),
            ("sdp", "v=0"),
        ]),
    );
    assert_eq!(s(&e, "result"), "error");
    let e = ng(&d, "x9", &ngd(&[("command", "delete"), ("call-id", "none")]));
    assert_eq!(s(&e, "error-reason"), "no call `none`");
    // Still serving, over both doors.
    assert_eq!(s(&ng(&d, "x10", &ngd(&[("command", "ping")])), "result"), "pong");
    assert_eq!(d.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn flags_and_keys_shape_the_rewritten_sdp() {
    let d = Daemon::start(33, &[]).await;
    let a = Peer::new("127.0.0.1");
    let base = a
        .sdp_with(
            "127.0.0.1",
            "a=rtpmap:8 PCMA/8000\r\na=ice-ufrag:abcd\r\na=candidate:1 1 UDP 1 10.0.0.1 4000 typ host\r\n",
        )
        .replace("RTP/AVP 0 101", "RTP/AVP 0 8 101");
    let offer = |cookie: &str, id: &str, extra: &[(&str, &str)]| {
        let mut items = vec![
            ("command", "offer"),
            ("call-id", id),
            ("from-tag", "fa"),
            ("sdp", base.as_str()),
        ];
        items.extend_from_slice(extra);
        ng(&d, cookie, &ngd(&items))
    };
    // ICE removal, codec strip, origin replacement, rtcp-mux offer.
    let r = offer(
        "f1",
        "f1",
        &[
            ("ICE", "remove"),
            ("replace", "[origin]"),
            ("rtcp-mux", "[offer]"),
            ("flags", "[trust-address,symmetric]"),
        ],
    );
    let sdp = s(&r, "sdp");
    assert!(!sdp.contains("a=ice-ufrag") && !sdp.contains("a=candidate"), "{sdp}");
    assert!(sdp.contains("o=phone 1000 1000 IN IP4 127.0.0.1\r\n"), "{sdp}");
    assert!(sdp.contains("a=rtcp-mux\r\n"));
    assert!(r.get("warning").is_none(), "{r}");
    let mut codec = ngd(&[
        ("command", "offer"),
        ("call-id", "f2"),
        ("from-tag", "fa"),
        ("sdp", &base),
    ]);
    if let Value::Dict(items) = &mut codec {
        items.push((b"codec".to_vec(), ngd(&[("strip", "[PCMA,101]")])));
    }
    let r = ng(&d, "f2", &codec);
    let sdp = s(&r, "sdp");
    assert!(sdp.contains(" RTP/AVP 0\r\n"), "{sdp}");
    assert!(!sdp.contains("PCMA") && !sdp.contains("telephone-event"), "{sdp}");
    // One codec may be given as a plain string rather than a list.
    if let Value::Dict(items) = &mut codec {
        items.retain(|(k, _)| k.as_slice() != b"codec");
        items.push((b"codec".to_vec(), ngd(&[("strip", "PCMA")])));
    }
    let r = ng(&d, "f2b", &codec);
    assert!(s(&r, "sdp").contains(" RTP/AVP 0 101\r\n"), "{r}");
    // codec-accept is rtpengine's, not chorus's: refused by name.
    if let Value::Dict(items) = &mut codec {
        items.retain(|(k, _)| k.as_slice() != b"codec");
        items.push((b"codec".to_vec(), ngd(&[("accept", "PCMA")])));
    }
    let r = ng(&d, "f2c", &codec);
    assert!(s(&r, "error-reason").contains("codec-accept is not supported"), "{r}");
    // Unknown keys and flags, and a record-call value that means nothing:
    // warnings, not errors.
    let r = offer(
        "f3",
        "f3",
        &[
            ("flags", "[fancy-flag]"),
            ("no-such-key", "1"),
            ("record-call", "maybe"),
        ],
    );
    assert_eq!(s(&r, "result"), "ok");
    let w = s(&r, "warning");
    assert!(
        w.contains("no-such-key") && w.contains("fancy-flag") && w.contains("record-call `maybe`"),
        "{w}"
    );
    // What chorus cannot do is an error that says so.
    let r = offer("f4", "f4", &[("ICE", "force")]);
    assert!(
        s(&r, "error-reason").contains("ICE-lite agent only towards WebRTC legs"),
        "{r}"
    );
    // SDES-SRTP towards the receiver, suites chosen by flag and by list.
    let r = offer(
        "f5",
        "f5",
        &[
            ("transport-protocol", "RTP/SAVPF"),
            (
                "flags",
                "[SDES-only-AES_CM_128_HMAC_SHA1_80,SDES-only-AEAD_AES_128_GCM]",
            ),
            ("SDES", "[no-AEAD_AES_128_GCM]"),
            ("DTLS", "passive"),
        ],
    );
    let sdp = s(&r, "sdp");
    assert!(sdp.contains(" RTP/SAVPF 0 8 101\r\n"), "{sdp}");
    let keys: Vec<&str> = sdp.lines().filter(|l| l.starts_with("a=crypto:")).collect();
    assert_eq!(keys.len(), 1, "{sdp}");
    assert!(
        keys[0].starts_with("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{sdp}"
    );
    assert!(r.get("warning").is_none(), "DTLS=passive is understood: {r}");
    // Towards a browser: chorus is its ICE-lite peer and DTLS server.
    let r = offer(
        "f5b",
        "f5b",
        &[
            ("transport-protocol", "UDP/TLS/RTP/SAVPF"),
            ("ICE", "force"),
            ("flags", "[generate-mid]"),
        ],
    );
    let sdp = s(&r, "sdp");
    assert!(sdp.contains(" UDP/TLS/RTP/SAVPF 0 8 101\r\n"), "{sdp}");
    for line in [
        "a=mid:0\r\n",
        "a=ice-lite\r\n",
        "a=setup:actpass\r\n",
        "a=fingerprint:sha-256 ",
        "a=ice-ufrag:",
        "a=ice-pwd:",
        "a=rtcp-mux\r\n",
        " typ host\r\n",
    ] {
        assert!(sdp.contains(line), "{line} in {sdp}");
    }
    assert!(!sdp.contains("a=crypto"), "{sdp}");
    let r = offer("f5c", "f5c", &[("flags", "[SDES-no-AES_CM_999]")]);
    assert!(
        s(&r, "error-reason").contains("unknown crypto suite `AES_CM_999`"),
        "{r}"
    );
    let r = offer("f6", "f6", &[("direction", "[default,dmz]")]);
    assert!(s(&r, "error-reason").contains("no interface named `dmz`"), "{r}");
    let r = offer("f7", "f7", &[("address-family", "IP6")]);
    assert!(s(&r, "error-reason").contains("address-family IP6"), "{r}");
    let r = offer("f8", "f8", &[("media-address", "198.51.100.9")]);
    assert!(s(&r, "sdp").contains("c=IN IP4 198.51.100.9\r\n"));
    let r = offer(
        "f9",
        "f9",
        &[("transport-protocol", "RTP/AVP"), ("direction", "[default,default]")],
    );
    assert_eq!(s(&r, "result"), "ok", "{r}");
}

#[tokio::test]
async fn received_from_and_sip_source_address_serve_natted_phones() {
    let d = Daemon::start(34, &[]).await;
    let (mut a, b) = (Peer::new("127.0.0.3"), Peer::new("127.0.0.1"));
    // The phone's SDP shows its private address; the SIP source is 127.0.0.3.
    let sdp = a.sdp_with("10.1.2.3", "");
    let mut msg = ngd(&[
        ("command", "offer"),
        ("call-id", "n"),
        ("from-tag", "fa"),
        ("sdp", &sdp),
        ("flags", "[SIP-source-address]"),
    ]);
    if let Value::Dict(items) = &mut msg {
        items.push((
            b"received-from".to_vec(),
            Value::List(vec![Value::str("IP4"), Value::str("127.0.0.3")]),
        ));
    }
    let offer = ng(&d, "n1", &msg);
    assert_eq!(s(&offer, "result"), "ok", "{offer}");
    let answer = ng(
        &d,
        "n2",
        &ngd(&[
            ("command", "answer"),
            ("call-id", "n"),
            ("from-tag", "fa"),
            ("to-tag", "tb"),
            ("sdp", &b.sdp()),
        ]),
    );
    let (to_a, to_b) = (sdp_target(s(&answer, "sdp")), sdp_target(s(&offer, "sdp")));
    // B's media goes to the SIP source address before A has sent anything.
    let mut b = b;
    b.send_rtp(to_b);
    assert_eq!(
        recv_n(&a.rtp, 1).len(),
        1,
        "media reaches the phone at its public address"
    );
    a.send_rtp(to_a);
    assert_eq!(recv_n(&b.rtp, 1).len(), 1);
}

#[tokio::test]
async fn ng_over_http_behaves_like_udp() {
    let d = Daemon::start(35, &[]).await;
    let a = Peer::new("127.0.0.1");
    let msg = ngd(&[
        ("command", "offer"),
        ("call-id", "h"),
        ("from-tag", "fa"),
        ("sdp", &a.sdp()),
    ]);
    let r = d
        .http
        .post(format!("{}/ng", d.base))
        .body(format!("hc1 {msg}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.bytes().await.unwrap();
    let (cookie, rest) = body.split_at(4);
    assert_eq!(cookie, b"hc1 ");
    let v = bencode::decode(rest).unwrap();
    assert_eq!(s(&v, "result"), "ok");
    assert!(s(&v, "sdp").contains("m=audio "));
    let r = d
        .http
        .post(format!("{}/ng", d.base))
        .body("no-space")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

/// Over HTTP as over UDP, the reply cache is keyed by cookie and sender: two
/// proxies that pick the same cookie each get the reply to their own command.
#[tokio::test]
async fn http_ng_replies_are_never_shared_between_proxies() {
    let d = Daemon::start(74, &[]).await;
    let proxy = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let ask = |client: reqwest::Client, body: String| {
        let url = format!("{}/ng", d.base);
        async move { client.post(url).body(body).send().await.unwrap().text().await.unwrap() }
    };
    let ping = ask(proxy([127, 0, 0, 1]), "same d7:command4:pinge".into()).await;
    assert!(ping.contains("pong"), "{ping}");
    let list = ask(proxy([127, 0, 0, 2]), "same d7:command4:liste".into()).await;
    assert!(!list.contains("pong") && list.contains("calls"), "{list}");
    // The first proxy's retransmission still gets its own reply.
    let again = ask(proxy([127, 0, 0, 1]), "same d7:command4:pinge".into()).await;
    assert_eq!(again, ping);
}

/// Past `max_requests_per_second`, a proxy's command is answered with the
/// reason under its own cookie, but only when that reply is no bigger than the
/// request: a spoofed source cannot use chorus to amplify a flood.
#[tokio::test]
async fn rate_limited_ng_commands_get_the_reason_without_amplification() {
    let d = Daemon::start(36, &["--max-requests-per-second", "3"]).await;
    let proxy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    proxy
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let padding = "p".repeat(200);
    for i in 0..6 {
        let long = format!("long{i} d7:command4:ping7:padding{}:{padding}e", padding.len());
        proxy.send_to(long.as_bytes(), d.ng).unwrap();
    }
    for i in 0..3 {
        proxy
            .send_to(format!("short{i} d7:command4:pinge").as_bytes(), d.ng)
            .unwrap();
    }
    let mut replies = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = proxy.recv(&mut buf) {
        replies.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    replies.sort();
    let (pongs, refused): (Vec<_>, Vec<_>) = replies.iter().partition(|r| r.contains("pong"));
    assert_eq!(pongs.len(), 3, "three admitted: {replies:?}");
    assert_eq!(
        refused.len(),
        3,
        "the other long ones refused, the short ones silent: {replies:?}"
    );
    for r in refused {
        assert!(r.starts_with("long"), "{r}");
        let (cookie, body) = r.split_once(' ').unwrap();
        assert!(cookie.len() == 5, "the request's own cookie: {r}");
        let v = bencode::decode(body.as_bytes()).unwrap();
        assert_eq!(s(&v, "result"), "error");
        assert_eq!(
            s(&v, "error-reason"),
            "more than 3 control requests per second from 127.0.0.1"
        );
    }
}
