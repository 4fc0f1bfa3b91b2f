//! BUNDLE in offer/answer: which ports each leg is given, the group lines,
//! and the ports given back.

use super::super::*;

/// Ports in order, and which were given back.
#[derive(Default)]
struct Res {
    next: u16,
    allocated: usize,
    released: Vec<u16>,
}

impl Resources for Res {
    fn fingerprint(&self) -> String {
        "sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF".into()
    }

    fn allocate(&mut self, _: usize, pair: bool) -> Result<LocalPorts, Error> {
        self.next += 2;
        self.allocated += 1;
        Ok(LocalPorts {
            rtp: 30000 + self.next,
            rtcp: pair.then_some(30001 + self.next),
        })
    }
    fn release(&mut self, _: usize, l: LocalPorts) {
        self.released.push(l.rtp);
    }
    fn key_material(&mut self, out: &mut [u8]) -> Result<(), Error> {
        out.fill(self.allocated as u8 + 1);
        Ok(())
    }
}

const ADV: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1))];
const FP: &str =
    "sha-256 AA:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF";

/// A browser's audio and video section, as Chromium writes them.
fn browser_section(kind: &str, port: u16, mid: &str, formats: &str, extra: &str) -> String {
    let maps = match kind {
        "audio" => "a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n",
        _ => "a=rtpmap:96 VP8/90000\r\n",
    };
    format!(
        "m={kind} {port} UDP/TLS/RTP/SAVPF {formats}\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:brws\r\na=ice-pwd:browserpasswordbrowser1\r\na=fingerprint:{FP}\r\na=setup:actpass\r\na=mid:{mid}\r\n{extra}a=rtcp-mux\r\n{maps}"
    )
}

fn browser_offer(video_extra: &str, video_port: u16) -> Sdp {
    Sdp::parse(&format!(
        "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n{}{}",
        browser_section("audio", 9, "0", "111 0", ""),
        browser_section("video", video_port, "1", "96", video_extra)
    ))
    .unwrap()
}

fn phone(ip: &str) -> Sdp {
    Sdp::parse(&format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\nm=video 4002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
    ))
    .unwrap()
}

fn to(proto: &str) -> Options {
    Options {
        transport_protocol: Some(proto.into()),
        ..Default::default()
    }
}

fn ports(text: &str) -> Vec<u16> {
    text.lines()
        .filter_map(|l| l.strip_prefix("m="))
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect()
}

fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn a_browser_offering_a_group_is_answered_on_one_port_and_the_phone_gets_two() {
    let mut res = Res::default();
    let mut s = Session::default();
    let (to_phone, _) = s
        .offer("a", &browser_offer("", 9), &to("RTP/AVP"), &ADV, &mut res)
        .unwrap();
    let p = ports(&to_phone);
    assert!(p[0] != p[1] && p.iter().all(|p| *p != 0), "{to_phone}");
    assert!(
        lines(&to_phone, "a=group").is_empty(),
        "the phone is not bundled: {to_phone}"
    );
    let before = res.allocated;
    let (to_browser, _) = s
        .answer("a", "b", &phone("10.0.0.2"), &Options::default(), &ADV, &mut res)
        .unwrap();
    assert_eq!(res.allocated - before, 1, "one port for the bundle");
    let p = ports(&to_browser);
    assert_eq!(p[0], p[1], "{to_browser}");
    assert_eq!(lines(&to_browser, "a=group:"), ["a=group:BUNDLE 0 1"], "{to_browser}");
    assert_eq!(lines(&to_browser, "a=mid:"), ["a=mid:0", "a=mid:1"]);
    let ufrags = lines(&to_browser, "a=ice-ufrag:");
    assert!(
        ufrags.len() == 2 && ufrags[0] == ufrags[1],
        "one transport: {to_browser}"
    );
    assert_eq!(lines(&to_browser, "a=ice-lite").len(), 1);
    assert_eq!(s.side_ports(1, 0), s.side_ports(0, 0));
    assert_eq!(s.streams[1].sides[0].bundle, Some(0));
    assert_eq!(s.streams[1].sides[0].local, None, "a follower holds no port");
    assert_eq!(
        s.all_ports().count(),
        3,
        "two towards the phone, one towards the browser"
    );
}

#[test]
fn a_bundle_only_section_is_relayed_not_disabled() {
    let mut res = Res::default();
    let mut s = Session::default();
    let offer = browser_offer("a=bundle-only\r\n", 0);
    let (to_phone, _) = s.offer("a", &offer, &to("RTP/AVP"), &ADV, &mut res).unwrap();
    assert!(ports(&to_phone).iter().all(|p| *p != 0), "{to_phone}");
    assert!(!to_phone.contains("bundle-only"), "{to_phone}");
    let (to_browser, _) = s
        .answer("a", "b", &phone("10.0.0.2"), &Options::default(), &ADV, &mut res)
        .unwrap();
    let p = ports(&to_browser);
    assert!(p[0] == p[1] && p[0] != 0, "{to_browser}");
}

#[test]
fn chorus_offers_a_browser_a_group_and_a_kept_group_frees_the_followers_ports() {
    let mut res = Res::default();
    let mut s = Session::default();
    let (to_browser, _) = s
        .offer("a", &phone("10.0.0.1"), &to("UDP/TLS/RTP/SAVPF"), &ADV, &mut res)
        .unwrap();
    let p = ports(&to_browser);
    assert!(p[0] != p[1], "an offer gives each section its own port: {to_browser}");
    assert_eq!(lines(&to_browser, "a=group:"), ["a=group:BUNDLE 0 1"], "{to_browser}");
    assert_eq!(lines(&to_browser, "a=mid:"), ["a=mid:0", "a=mid:1"]);
    let ufrags = lines(&to_browser, "a=ice-ufrag:");
    assert!(ufrags.len() == 2 && ufrags[0] == ufrags[1], "{to_browser}");

    let answer = Sdp::parse(&format!(
        "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n{}{}",
        browser_section("audio", 9, "0", "0", "").replace("actpass", "active"),
        browser_section("video", 9, "1", "96", "").replace("actpass", "active")
    ))
    .unwrap();
    let (to_phone, _) = s
        .answer("a", "b", &answer, &Options::default(), &ADV, &mut res)
        .unwrap();
    assert_eq!(res.released, [p[1]], "the follower's own port goes back");
    assert!(lines(&to_phone, "a=group").is_empty(), "{to_phone}");
    assert_eq!(s.side_ports(1, 1), s.side_ports(0, 1));

    // A re-offer states the bundle's port in both sections.
    let (again, _) = s
        .offer("a", &phone("10.0.0.1"), &to("UDP/TLS/RTP/SAVPF"), &ADV, &mut res)
        .unwrap();
    assert_eq!(ports(&again), [p[0], p[0]], "{again}");
}

#[test]
fn an_answer_without_the_group_keeps_a_port_per_section() {
    let mut res = Res::default();
    let mut s = Session::default();
    let (to_browser, _) = s
        .offer("a", &phone("10.0.0.1"), &to("UDP/TLS/RTP/SAVPF"), &ADV, &mut res)
        .unwrap();
    let answer = Sdp::parse(&format!(
        "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{}{}",
        browser_section("audio", 5000, "0", "0", "").replace("actpass", "active"),
        browser_section("video", 5002, "1", "96", "").replace("actpass", "active")
    ))
    .unwrap();
    s.answer("a", "b", &answer, &Options::default(), &ADV, &mut res)
        .unwrap();
    assert!(res.released.is_empty());
    assert_eq!(s.streams[1].sides[1].bundle, None);
    assert_eq!(s.side_ports(1, 1).map(|l| l.rtp), Some(ports(&to_browser)[1]));
}

#[test]
fn payload_types_of_a_stream_come_from_both_legs() {
    let mut res = Res::default();
    let mut s = Session::default();
    s.offer("a", &browser_offer("", 9), &to("RTP/AVP"), &ADV, &mut res)
        .unwrap();
    s.answer("a", "b", &phone("10.0.0.2"), &Options::default(), &ADV, &mut res)
        .unwrap();
    assert_eq!(s.payload_types(0), 1 << 111 | 1);
    assert_eq!(s.payload_types(1), 1 << 96);
}

/// A crafted offer repeating a mid, and naming one section in two groups:
/// each section is bundled once, no section rides itself, nothing panics.
#[test]
fn repeated_and_shared_mids_bundle_each_section_once() {
    let mut res = Res::default();
    let mut s = Session::default();
    let offer = Sdp::parse(&format!(
        "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 0 1\r\na=group:BUNDLE 1 0\r\n{}{}",
        browser_section("audio", 9, "0", "111 0", ""),
        browser_section("video", 9, "1", "96", "")
    ))
    .unwrap();
    s.offer("a", &offer, &to("RTP/AVP"), &ADV, &mut res).unwrap();
    let (to_browser, _) = s
        .answer("a", "b", &phone("10.0.0.2"), &Options::default(), &ADV, &mut res)
        .unwrap();
    assert_eq!(s.streams[0].sides[0].bundle, None);
    assert_eq!(s.streams[1].sides[0].bundle, Some(0));
    assert_eq!(lines(&to_browser, "a=group:"), ["a=group:BUNDLE 0 1"], "{to_browser}");
    assert!(res.released.is_empty(), "the owner keeps its port");
}
