//! Failure isolation over real sockets: a crafted datagram from a conference
//! participant, or a panic in one call's processing, costs that call at most;
//! every other call and conference on the same worker keeps flowing.

mod common;
use common::*;
use serde_json::json;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PCMU: &str = "RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// A conference participant that sends 20 ms PCMU packets until dropped.
struct Talker {
    sock: UdpSocket,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Talker {
    async fn join(d: &Daemon, conf: &str) -> Talker {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let port = sock.local_addr().unwrap().port();
        let sdp = format!(
            "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} {PCMU}a=rtcp-mux\r\n"
        );
        let (s, r) = d
            .post(&format!("/v1/conferences/{conf}/participants"), json!({ "sdp": sdp }))
            .await;
        assert_eq!(s, 200, "{r}");
        let to = sdp_target(r["sdp"].as_str().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, flag) = (sock.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || {
            let mut pkt = [0xffu8; 172];
            for seq in 0u16.. {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                chorus::wire::rtp::write_header(&mut pkt, 0, seq, u32::from(seq) * 160, port.into()).unwrap();
                let _ = tx.send_to(&pkt, to);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Talker { sock, to, stop }
    }

    /// RTP packets heard over `window` (the mixer sends one every 20 ms).
    fn heard(&self, window: Duration) -> usize {
        let end = std::time::Instant::now() + window;
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while std::time::Instant::now() < end {
            if let Ok(len) = self.sock.recv(&mut buf) {
                n += usize::from(!chorus::wire::is_rtcp(&buf[..len]));
            }
        }
        n
    }
}

impl Drop for Talker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Relays `n` packets from `a` through chorus and counts what reaches `b`.
fn relayed(a: &mut Peer, to: SocketAddr, b: &Peer, n: usize) -> usize {
    for _ in 0..n {
        a.send_rtp(to);
    }
    recv_n(&b.rtp, n).len()
}

/// The datagram that used to stop the media worker hosting a conference: an
/// RR whose length says zero words, followed by a second packet.
#[tokio::test]
async fn a_crafted_rtcp_compound_from_a_participant_harms_no_one() {
    let d = Daemon::start(70, &["--workers", "1"]).await;
    let (mut a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_a, _) = d.call("bystander", &a, &b).await;
    let (s, _) = d.post("/v1/conferences", json!({ "id": "room" })).await;
    assert_eq!(s, 200);
    let (attacker, listener) = (Talker::join(&d, "room").await, Talker::join(&d, "room").await);
    assert!(listener.heard(Duration::from_millis(300)) >= 10, "the mix flows");

    let crafted = [0x81, 201, 0, 0, 0x80, 201, 0, 1, 1, 2, 3, 4];
    for _ in 0..20 {
        attacker.sock.send_to(&crafted, attacker.to).unwrap();
    }
    let heard = listener.heard(Duration::from_millis(400));
    assert!(heard >= 15, "the conference keeps mixing: {heard} packets in 400 ms");
    assert_eq!(
        relayed(&mut a, to_a, &b, 10),
        10,
        "the relayed call on the same worker flows"
    );
    let (s, r) = d.get("/v1/conferences/room").await;
    assert_eq!(s, 200, "{r}");
    // Nobody was dropped from the conference, and nothing was read from the junk.
    let parts = r["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{r}");
    assert!(parts.iter().all(|p| p["rtt_ms"].is_null()), "{r}");
    let m = d.metrics().await;
    assert_eq!(metric(&m, "chorus_worker_panics_total"), 0.0);
}

/// The next callback whose event is `event` (conference events come too).
#[cfg(feature = "test-hooks")]
async fn callback(rx: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>, event: &str) -> serde_json::Value {
    loop {
        let v = tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no `{event}` callback within 3 s"))
            .unwrap();
        if v["event"] == event {
            return v;
        }
    }
}

#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_panic_in_one_call_or_conference_ends_only_that_one() {
    let (url, mut callbacks) = callback_server().await;
    let d = Daemon::start(71, &["--workers", "1", "--callback-url", &url]).await;
    let (mut a1, b1) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (mut a2, b2) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to_victim, _) = d.call("victim", &a1, &b1).await;
    let (to_other, _) = d.call("other", &a2, &b2).await;
    let (s, _) = d.post("/v1/conferences", json!({ "id": "room" })).await;
    assert_eq!(s, 200);
    let (_t1, listener) = (Talker::join(&d, "room").await, Talker::join(&d, "room").await);
    assert_eq!(relayed(&mut a1, to_victim, &b1, 5), 5);

    // A bug in the victim's packet processing.
    let (s, r) = d.post("/v1/test/panic/calls/victim", json!({})).await;
    assert_eq!(s, 200, "{r}");
    a1.send_rtp(to_victim);
    let cb = callback(&mut callbacks, "internal_error").await;
    assert_eq!(
        (cb["event"].as_str(), cb["call_id"].as_str()),
        (Some("internal_error"), Some("victim"))
    );
    let (s, r) = d.get("/v1/calls/victim").await;
    assert_eq!(s, 404);
    assert!(
        r["error"]["message"].as_str().unwrap().contains("internal_error"),
        "{r}"
    );
    assert_eq!(relayed(&mut a2, to_other, &b2, 10), 10, "the other call flows");
    assert!(listener.heard(Duration::from_millis(300)) >= 10, "the conference mixes");

    // A bug in the conference's tick.
    let (s, r) = d.post("/v1/test/panic/conferences/room", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let cb = callback(&mut callbacks, "conference_failed").await;
    assert_eq!(cb["conference"], "room", "{cb}");
    let (s, _) = d.get("/v1/conferences/room").await;
    assert_eq!(s, 404);
    assert_eq!(relayed(&mut a2, to_other, &b2, 10), 10, "the other call still flows");

    // The worker still takes new calls, and says it is healthy. (On another
    // address: the failed conference's ports go back to the pool while its
    // listener still sends to them from 127.0.0.1, and a new call given one
    // of those ports would rightly latch onto whoever sends first.)
    let (mut a3, b3) = (Peer::new("127.0.0.3"), Peer::new("127.0.0.3"));
    let (to_new, _) = d.call("new", &a3, &b3).await;
    assert_eq!(relayed(&mut a3, to_new, &b3, 10), 10);
    let (s, _) = d.get("/healthz").await;
    assert_eq!(s, 200);
    let m = d.metrics().await;
    assert_eq!(metric(&m, "chorus_worker_panics_total"), 2.0);
    assert_eq!(metric(&m, "chorus_workers_dead"), 0.0);
    // The ended call's and conference's ports went back to the pool.
    let (s, r) = d.delete("/v1/calls/other").await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = d.delete("/v1/calls/new").await;
    assert_eq!(s, 200, "{r}");
    let free = metric(&m, "chorus_ports_free{interface=\"default\"}");
    let m = d.metrics().await;
    assert_eq!(metric(&m, "chorus_ports_free{interface=\"default\"}"), free + 8.0);
    assert_eq!(
        metric(&m, "chorus_ports_free{interface=\"default\"}"),
        f64::from(PORTS_PER_SLOT)
    );
}

#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_panic_in_the_worker_loop_ends_its_calls_and_the_worker_restarts() {
    let (url, mut callbacks) = callback_server().await;
    let d = Daemon::start(72, &["--workers", "1", "--callback-url", &url]).await;
    let (a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    d.call("held", &a, &b).await;
    let (s, r) = d.post("/v1/test/panic/workers/0", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let cb = callback(&mut callbacks, "internal_error").await;
    assert_eq!(cb["call_id"], "held");
    let (s, _) = d.get("/healthz").await;
    assert_eq!(s, 200, "the restarted worker is healthy");
    let (mut a2, b2) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let (to, _) = d.call("after", &a2, &b2).await;
    assert_eq!(relayed(&mut a2, to, &b2, 10), 10, "the restarted worker relays");
    let m = d.metrics().await;
    assert_eq!(metric(&m, "chorus_worker_restarts_total"), 1.0);
    assert_eq!(
        metric(&m, "chorus_ports_free{interface=\"default\"}"),
        f64::from(PORTS_PER_SLOT) - 4.0,
        "only the new call holds ports"
    );
}

#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_dead_worker_fails_health_checks_and_gets_no_calls() {
    let d = Daemon::start(78, &["--workers", "2"]).await;
    let (s, r) = d.post("/v1/test/kill/workers/0", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let mut dead = false;
    for _ in 0..150 {
        let (s, r) = d.get("/healthz").await;
        if s == 503 {
            assert_eq!(r["dead_workers"], json!([0]), "{r}");
            dead = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dead, "/healthz reports the dead worker");
    let (s, r) = d.get("/readyz").await;
    assert_eq!(s, 503, "{r}");
    // Every new call lands on the live worker and relays.
    for i in 0..4 {
        let (mut a, b) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
        let (to, _) = d.call(&format!("after-{i}"), &a, &b).await;
        assert_eq!(relayed(&mut a, to, &b, 5), 5, "call {i} relays");
    }
    let m = d.metrics().await;
    assert_eq!(metric(&m, "chorus_workers_dead"), 1.0);
}
