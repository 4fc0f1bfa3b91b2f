//! Offer/answer as RFC 3264 and the proxy's options say, without sockets.

use super::*;

/// Hands out port pairs (or single ports) in order and records which
/// interface each went to.
#[derive(Default)]
struct Ports {
    next: u16,
    given: Vec<(usize, LocalPorts)>,
}

impl Resources for Ports {
    fn fingerprint(&self) -> String {
        "sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF".into()
    }

    fn key_material(&mut self, out: &mut [u8]) -> Result<(), Error> {
        // Deterministic: tests compare rewritten SDP.
        for (i, b) in out.iter_mut().enumerate() {
            *b = i as u8;
        }
        Ok(())
    }

    fn allocate(&mut self, iface: usize, pair: bool) -> Result<LocalPorts, Error> {
        self.next += 2;
        let l = LocalPorts {
            rtp: 30000 + self.next,
            rtcp: pair.then_some(30001 + self.next),
        };
        self.given.push((iface, l));
        Ok(l)
    }
    fn release(&mut self, _: usize, _: LocalPorts) {}
}

const ADV: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1)),
];

fn sdp(ip: &str, port: u16, version: u64, extra: &str) -> Sdp {
    Sdp::parse(&format!(
        "v=0\r\no=- 1 {version} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n{extra}"
    ))
    .unwrap()
}

fn opts() -> Options {
    Options::default()
}

/// The port of the first m= line and the o= version of a rewritten SDP.
fn port_and_version(text: &str) -> (u16, u64) {
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let o = text.lines().find_map(|l| l.strip_prefix("o=")).unwrap();
    (port.parse().unwrap(), o.split(' ').nth(2).unwrap().parse().unwrap())
}

/// An answered call: a offered from 10.0.0.1, b answered from 10.0.0.2.
fn answered(offer_extra: &str, answer_extra: &str, ports: &mut Ports) -> (Session, String, String) {
    let mut s = Session::default();
    let (to_b, _) = s
        .offer("a", &sdp("10.0.0.1", 4000, 1000, offer_extra), &opts(), &ADV, ports)
        .unwrap();
    let (to_a, _) = s
        .answer(
            "a",
            "b",
            &sdp("10.0.0.2", 5000, 2000, answer_extra),
            &opts(),
            &ADV,
            ports,
        )
        .unwrap();
    (s, to_b, to_a)
}

#[test]
fn origin_versions_stay_for_the_same_sdp_and_rise_for_a_changed_one() {
    let mut ports = Ports::default();
    let (mut s, to_b, _) = answered("", "", &mut ports);
    assert_eq!(port_and_version(&to_b).1, 1000, "the first keeps the offerer's version");
    let same = s
        .offer("a", &sdp("10.0.0.1", 4000, 1000, ""), &opts(), &ADV, &mut ports)
        .unwrap()
        .0;
    assert_eq!(same, to_b, "an unchanged re-offer is rewritten identically");
    let hold = s
        .offer(
            "a",
            &sdp("10.0.0.1", 4000, 1000, "a=sendonly\r\n"),
            &opts(),
            &ADV,
            &mut ports,
        )
        .unwrap()
        .0;
    assert_eq!(port_and_version(&hold), (port_and_version(&to_b).0, 1001), "{hold}");
    let higher = s
        .offer("a", &sdp("10.0.0.1", 4000, 1500, ""), &opts(), &ADV, &mut ports)
        .unwrap()
        .0;
    assert_eq!(port_and_version(&higher).1, 1500, "a higher offered version is kept");
}

#[test]
fn the_callee_may_reoffer_and_strangers_may_not() {
    let mut ports = Ports::default();
    let (mut s, _, to_a) = answered("", "", &mut ports);
    let a_port = port_and_version(&to_a).0;
    // A re-INVITE from the callee goes to the caller, on the caller's ports.
    let (to_caller, change) = s
        .offer("b", &sdp("10.0.0.2", 5002, 2001, ""), &opts(), &ADV, &mut ports)
        .unwrap();
    assert_eq!(port_and_version(&to_caller).0, a_port);
    assert_eq!(change.relearn_leg, 1);
    let (back, change) = s
        .answer("b", "a", &sdp("10.0.0.1", 4000, 1001, ""), &opts(), &ADV, &mut ports)
        .unwrap();
    assert_eq!(change.relearn_leg, 0);
    assert_ne!(
        port_and_version(&back).0,
        a_port,
        "the callee's answer points at the callee's side"
    );
    let e = s
        .offer("c", &sdp("10.0.0.3", 6000, 1, ""), &opts(), &ADV, &mut ports)
        .unwrap_err();
    assert!(e.to_string().contains("`a` and `b`"), "{e}");
    assert_eq!(
        (s.leg_by_tag("a"), s.leg_by_tag("b"), s.leg_by_tag("c")),
        (Some(0), Some(1), None)
    );
    assert_eq!(s.all_ports().count(), 2, "one port pair per side");
}

#[test]
fn answers_must_follow_their_offer() {
    let mut ports = Ports::default();
    let mut s = Session::default();
    let e = s
        .answer("a", "b", &sdp("10.0.0.2", 5000, 1, ""), &opts(), &ADV, &mut ports)
        .unwrap_err();
    assert!(e.to_string().contains("no such offer"), "{e}");
    s.offer("a", &sdp("10.0.0.1", 4000, 1, ""), &opts(), &ADV, &mut ports)
        .unwrap();
    let e = s
        .answer("x", "b", &sdp("10.0.0.2", 5000, 1, ""), &opts(), &ADV, &mut ports)
        .unwrap_err();
    assert!(e.to_string().contains("tag `x`"), "{e}");
    // A rejected stream (port 0) in the answer is disabled for both.
    let (to_a, _) = s
        .answer("a", "b", &sdp("10.0.0.2", 0, 1, ""), &opts(), &ADV, &mut ports)
        .unwrap();
    assert_eq!(port_and_version(&to_a).0, 0);
    assert!(!s.streams[0].enabled);
}

#[test]
fn interfaces_are_per_leg_and_fixed_once_a_leg_has_ports() {
    let mut ports = Ports::default();
    let mut s = Session::default();
    let o = Options {
        from_interface: Some(0),
        to_interface: Some(1),
        ..opts()
    };
    let (to_b, _) = s
        .offer("a", &sdp("10.0.0.1", 4000, 1, ""), &o, &ADV, &mut ports)
        .unwrap();
    assert!(
        to_b.contains("c=IN IP4 198.51.100.1"),
        "the callee's side is on interface 1: {to_b}"
    );
    assert_eq!(ports.given[0].0, 1);
    s.answer(
        "a",
        "b",
        &sdp("10.0.0.2", 5000, 1, ""),
        &Options {
            from_interface: Some(1),
            ..opts()
        },
        &ADV,
        &mut ports,
    )
    .unwrap();
    // The callee re-offers naming the same interfaces: fine.
    let same = Options {
        from_interface: Some(1),
        to_interface: Some(0),
        ..opts()
    };
    s.offer("b", &sdp("10.0.0.2", 5000, 2, ""), &same, &ADV, &mut ports)
        .unwrap();
    // Moving the caller's leg to another interface is not.
    let moved = Options {
        to_interface: Some(1),
        ..opts()
    };
    let e = s
        .offer("b", &sdp("10.0.0.2", 5000, 3, ""), &moved, &ADV, &mut ports)
        .unwrap_err();
    assert!(e.to_string().contains("cannot change"), "{e}");
}

#[test]
fn rtcp_mux_follows_the_offerer_the_answerer_and_the_options() {
    let mux = "a=rtcp-mux\r\n";
    // The offerer multiplexes and the answerer agrees: one port each way.
    let mut ports = Ports::default();
    let (s, to_b, to_a) = answered(mux, mux, &mut ports);
    assert!(to_b.contains("a=rtcp-mux") && to_a.contains("a=rtcp-mux"));
    assert!(
        s.streams[0].sides[0].local.unwrap().rtcp.is_none(),
        "the caller's side needs one port"
    );
    assert!(s.streams[0].sides[1].peer.as_ref().unwrap().mux);
    // Demux: chorus does not offer rtcp-mux to the answerer even though the offerer did.
    let mut s = Session::default();
    let demux = Options {
        rtcp_mux: Some(MuxOption::Demux),
        ..opts()
    };
    let (to_b, _) = s
        .offer("a", &sdp("10.0.0.1", 4000, 1, mux), &demux, &ADV, &mut ports)
        .unwrap();
    assert!(!to_b.contains("a=rtcp-mux"), "{to_b}");
    // An answerer that states rtcp-mux it was not offered does not get it.
    let (to_a, _) = s
        .answer("a", "b", &sdp("10.0.0.2", 5000, 1, mux), &opts(), &ADV, &mut ports)
        .unwrap();
    assert!(!s.streams[0].sides[1].peer.as_ref().unwrap().mux);
    assert!(
        to_a.contains("a=rtcp-mux"),
        "the offerer's own rtcp-mux is accepted: {to_a}"
    );
    // Reject: the offerer's rtcp-mux is refused in the answer; it gets a pair.
    let mut ports = Ports::default();
    let mut s = Session::default();
    s.offer("a", &sdp("10.0.0.1", 4000, 1, mux), &opts(), &ADV, &mut ports)
        .unwrap();
    let reject = Options {
        rtcp_mux: Some(MuxOption::Reject),
        ..opts()
    };
    let (to_a, _) = s
        .answer("a", "b", &sdp("10.0.0.2", 5000, 1, mux), &reject, &ADV, &mut ports)
        .unwrap();
    assert!(!to_a.contains("a=rtcp-mux"), "{to_a}");
    assert!(s.streams[0].sides[0].local.unwrap().rtcp.is_some());
    // No rtcp-mux from the offerer: none back, and a port pair.
    let mut ports = Ports::default();
    let (s, _, to_a) = answered("", mux, &mut ports);
    assert!(!to_a.contains("a=rtcp-mux"), "{to_a}");
    assert!(s.streams[0].sides[0].local.unwrap().rtcp.is_some());
}

#[test]
fn rtcp_mux_accepted_on_a_reoffer_uses_the_existing_pair() {
    let mux = "a=rtcp-mux\r\n";
    let mut ports = Ports::default();
    let (mut s, _, _) = answered("", "", &mut ports);
    s.offer("a", &sdp("10.0.0.1", 4000, 1001, mux), &opts(), &ADV, &mut ports)
        .unwrap();
    let (to_a, _) = s
        .answer("a", "b", &sdp("10.0.0.2", 5000, 2001, mux), &opts(), &ADV, &mut ports)
        .unwrap();
    assert!(to_a.contains("a=rtcp-mux"), "{to_a}");
    assert!(s.streams[0].sides[0].local.unwrap().rtcp.is_some(), "the pair stays");
}

#[test]
fn stripping_every_codec_of_a_live_stream_is_refused() {
    let mut s = Session::default();
    let strip = Options {
        strip_codecs: vec!["PCMU".into()],
        ..opts()
    };
    let e = s
        .offer("a", &sdp("10.0.0.1", 4000, 1, ""), &strip, &ADV, &mut Ports::default())
        .unwrap_err();
    assert!(e.to_string().contains("with none"), "{e}");
    // A stream already rejected (port 0) may lose them.
    assert!(s
        .offer("a", &sdp("10.0.0.1", 0, 1, ""), &strip, &ADV, &mut Ports::default())
        .is_ok());
}

#[test]
fn where_media_goes_follows_the_sdp_hold_and_the_sip_source() {
    let peer = |s: &Session| s.streams[0].sides[0].peer.clone().unwrap();
    let mut ports = Ports::default();
    // Hold (RFC 2543 c=0.0.0.0) and a rejected stream: nowhere to send.
    let mut s = Session::default();
    s.offer("a", &sdp("0.0.0.0", 4000, 1, ""), &opts(), &ADV, &mut ports)
        .unwrap();
    assert_eq!((peer(&s).rtp, peer(&s).sdp_ip), (None, None));
    let mut s = Session::default();
    s.offer("a", &sdp("10.0.0.1", 0, 1, ""), &opts(), &ADV, &mut ports)
        .unwrap();
    assert_eq!(peer(&s).rtp, None);
    // SIP-source-address: media to where the SIP came from, RTCP too, even
    // when the SDP names another RTCP address...
    let nat = Options {
        received_from: Some("203.0.113.7".parse().unwrap()),
        sip_source_address: true,
        ..opts()
    };
    let mut s = Session::default();
    s.offer(
        "a",
        &sdp("10.0.0.1", 4000, 1, "a=rtcp:4005 IN IP4 10.0.0.9\r\n"),
        &nat,
        &ADV,
        &mut ports,
    )
    .unwrap();
    assert_eq!(peer(&s).rtp, Some("203.0.113.7:4000".parse().unwrap()));
    assert_eq!(peer(&s).rtcp, Some("203.0.113.7:4005".parse().unwrap()));
    // ...but not for a leg on hold.
    let mut s = Session::default();
    s.offer("a", &sdp("0.0.0.0", 4000, 1, ""), &nat, &ADV, &mut ports)
        .unwrap();
    assert_eq!(peer(&s).rtp, None);
    // Without it, the SDP's own a=rtcp address counts.
    let mut s = Session::default();
    s.offer(
        "a",
        &sdp("10.0.0.1", 4000, 1, "a=rtcp:4005 IN IP4 10.0.0.9\r\n"),
        &opts(),
        &ADV,
        &mut ports,
    )
    .unwrap();
    assert_eq!(peer(&s).rtcp, Some("10.0.0.9:4005".parse().unwrap()));
}

#[test]
fn a_codec_that_cannot_be_transcoded_is_refused_on_an_answer_too() {
    let mut ports = Ports::default();
    let mut s = Session::default();
    s.offer("a", &sdp("10.0.0.1", 4000, 1, ""), &opts(), &ADV, &mut ports)
        .unwrap();
    let bad = Options {
        transcode: vec!["AAA".into()],
        ..opts()
    };
    let err = s
        .answer("a", "b", &sdp("10.0.0.2", 5000, 1, ""), &bad, &ADV, &mut ports)
        .unwrap_err();
    assert!(err.to_string().contains("codec `AAA` cannot be transcoded"), "{err}");
    // Nothing was answered: a correct answer still goes through.
    s.answer("a", "b", &sdp("10.0.0.2", 5000, 1, ""), &opts(), &ADV, &mut ports)
        .unwrap();
}
