//! SDES-SRTP bridging in offer/answer: which side holds which key, and the
//! SDP each leg gets.

use super::super::*;
use crate::sdp::crypto::{Crypto, Suite};

/// Ports in order; key material from a counter, so every key differs.
#[derive(Default)]
struct Res {
    next: u16,
    drawn: u8,
}

impl Resources for Res {
    fn fingerprint(&self) -> String {
        "sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF".into()
    }

    fn allocate(&mut self, _: usize, pair: bool) -> Result<LocalPorts, Error> {
        self.next += 2;
        Ok(LocalPorts {
            rtp: 30000 + self.next,
            rtcp: pair.then_some(30001 + self.next),
        })
    }
    fn release(&mut self, _: usize, _: LocalPorts) {}
    fn key_material(&mut self, out: &mut [u8]) -> Result<(), Error> {
        self.drawn += 1;
        out.fill(self.drawn);
        Ok(())
    }
}

const ADV: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1))];
const PHONE_KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

fn sdp(ip: &str, proto: &str, extra: &str) -> Sdp {
    Sdp::parse(&format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 {proto} 0 8\r\na=rtpmap:0 PCMU/8000\r\n{extra}"
    ))
    .unwrap()
}

fn to(proto: &str) -> Options {
    Options {
        transport_protocol: Some(proto.into()),
        ..Default::default()
    }
}

fn cryptos(text: &str) -> Vec<Crypto> {
    text.lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .map(|v| Crypto::parse(v).unwrap())
        .collect()
}

fn m_line(text: &str) -> &str {
    text.lines().find(|l| l.starts_with("m=")).unwrap()
}

#[test]
fn an_srtp_offerer_facing_a_plain_answerer_is_decrypted_and_answered_with_chorus_key() {
    let mut res = Res::default();
    let mut s = Session::default();
    let offer = sdp(
        "10.0.0.1",
        "RTP/SAVP",
        &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}|1:4\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{PHONE_KEY}\r\n"),
    );
    let (to_b, _) = s.offer("a", &offer, &to("RTP/AVP"), &ADV, &mut res).unwrap();
    assert!(m_line(&to_b).contains(" RTP/AVP 0 8"), "{to_b}");
    assert!(cryptos(&to_b).is_empty(), "the plain leg gets no keys: {to_b}");

    let (to_a, _) = s
        .answer(
            "a",
            "b",
            &sdp("10.0.0.2", "RTP/AVP", ""),
            &Options::default(),
            &ADV,
            &mut res,
        )
        .unwrap();
    assert!(m_line(&to_a).contains(" RTP/SAVP 0 8"), "{to_a}");
    // Tag 1 has an MKI, which chorus does not drive: tag 2 is taken.
    let answered = cryptos(&to_a);
    assert_eq!(answered.len(), 1, "{to_a}");
    assert_eq!((answered[0].tag, answered[0].suite), (2, Suite::AesCm128HmacSha1_32));
    assert_ne!(
        answered[0].to_string().split(' ').nth(2),
        Some(PHONE_KEY),
        "chorus's own key"
    );

    let (theirs, ours) = s.streams[0].sides[0].sdes.as_ref().unwrap().keys().unwrap();
    assert_eq!(
        theirs.master,
        Crypto::parse(&format!("2 AES_CM_128_HMAC_SHA1_32 inline:{PHONE_KEY}"))
            .unwrap()
            .master
    );
    assert_eq!(ours.master, answered[0].master);
    assert!(s.streams[0].sides[1].sdes.is_none(), "the plain side has no keys");
}

#[test]
fn a_plain_offerer_facing_srtp_gets_keys_offered_per_suite_and_the_answer_picks_one() {
    let mut res = Res::default();
    let mut s = Session::default();
    let (to_b, _) = s
        .offer("a", &sdp("10.0.0.1", "RTP/AVP", ""), &to("RTP/SAVP"), &ADV, &mut res)
        .unwrap();
    assert!(m_line(&to_b).contains(" RTP/SAVP 0 8"), "{to_b}");
    let offered = cryptos(&to_b);
    assert_eq!(offered.iter().map(|c| c.suite).collect::<Vec<_>>(), Suite::ALL);
    assert_eq!(offered.iter().map(|c| c.tag).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);

    // The answerer must pick a tag chorus offered, with its suite.
    let bad = sdp(
        "10.0.0.2",
        "RTP/SAVP",
        &format!("a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:{PHONE_KEY}\r\n"),
    );
    let e = s
        .clone()
        .answer("a", "b", &bad, &Options::default(), &ADV, &mut res)
        .unwrap_err();
    assert!(
        e.to_string().contains("tag 4 AES_CM_128_HMAC_SHA1_32 was not offered"),
        "{e}"
    );
    let none = sdp("10.0.0.2", "RTP/SAVP", "");
    let e = s
        .clone()
        .answer("a", "b", &none, &Options::default(), &ADV, &mut res)
        .unwrap_err();
    assert!(e.to_string().contains("no a=crypto"), "{e}");

    let good = sdp(
        "10.0.0.2",
        "RTP/SAVP",
        &format!("a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\n"),
    );
    let (to_a, _) = s.answer("a", "b", &good, &Options::default(), &ADV, &mut res).unwrap();
    assert!(m_line(&to_a).contains(" RTP/AVP 0 8"), "{to_a}");
    assert!(cryptos(&to_a).is_empty(), "{to_a}");
    let (theirs, ours) = s.streams[0].sides[1].sdes.as_ref().unwrap().keys().unwrap();
    assert_eq!(theirs.suite, Suite::AesCm128HmacSha1_80);
    assert_eq!(
        ours.master, offered[3].master,
        "chorus encrypts with the key it offered under tag 4"
    );
}

#[test]
fn a_plain_answer_to_an_srtp_offer_falls_back_to_plain_on_both_legs() {
    let mut res = Res::default();
    let mut s = Session::default();
    s.offer("a", &sdp("10.0.0.1", "RTP/AVP", ""), &to("RTP/SAVP"), &ADV, &mut res)
        .unwrap();
    let (to_a, _) = s
        .answer(
            "a",
            "b",
            &sdp("10.0.0.2", "RTP/AVP", ""),
            &Options::default(),
            &ADV,
            &mut res,
        )
        .unwrap();
    assert!(m_line(&to_a).contains(" RTP/AVP "), "{to_a}");
    assert!(s.streams[0].sides.iter().all(|side| side.sdes.is_none()));
}

#[test]
fn a_re_offer_keeps_chorus_keys_and_a_changed_key_is_taken() {
    let mut res = Res::default();
    let mut s = Session::default();
    let (first, _) = s
        .offer("a", &sdp("10.0.0.1", "RTP/AVP", ""), &to("RTP/SAVP"), &ADV, &mut res)
        .unwrap();
    let answer = sdp(
        "10.0.0.2",
        "RTP/SAVP",
        &format!("a=crypto:1 AEAD_AES_256_GCM inline:{}\r\n", "A".repeat(59)),
    );
    s.answer("a", "b", &answer, &Options::default(), &ADV, &mut res)
        .unwrap();
    let (again, _) = s
        .offer("a", &sdp("10.0.0.1", "RTP/AVP", ""), &to("RTP/SAVP"), &ADV, &mut res)
        .unwrap();
    assert_eq!(
        cryptos(&first)[0],
        cryptos(&again)[0],
        "the agreed key is offered again"
    );
    // The SRTP leg re-keys in its own re-offer towards the plain leg.
    let rekey = sdp(
        "10.0.0.2",
        "RTP/SAVP",
        &format!("a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\n"),
    );
    let (to_a, _) = s.offer("b", &rekey, &to("RTP/AVP"), &ADV, &mut res).unwrap();
    assert!(cryptos(&to_a).is_empty());
    let (theirs, _) = s.streams[0].sides[1].sdes.as_ref().unwrap().keys().unwrap();
    assert_eq!(theirs.suite, Suite::AesCm128HmacSha1_80);
}

#[test]
fn same_transport_on_both_legs_passes_keys_through_untouched() {
    let mut res = Res::default();
    let mut s = Session::default();
    let line = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}");
    let (to_b, _) = s
        .offer(
            "a",
            &sdp("10.0.0.1", "RTP/SAVP", &format!("{line}\r\n")),
            &Options::default(),
            &ADV,
            &mut res,
        )
        .unwrap();
    assert!(to_b.contains(&line) && m_line(&to_b).contains("RTP/SAVP"), "{to_b}");
    assert!(s.streams[0].sides.iter().all(|side| side.sdes.is_none()));
    // AVP to AVPF only changes the profile.
    let mut s = Session::default();
    let (to_b, _) = s
        .offer("a", &sdp("10.0.0.1", "RTP/AVP", ""), &to("RTP/AVPF"), &ADV, &mut res)
        .unwrap();
    assert!(
        m_line(&to_b).contains(" RTP/AVPF 0 8") && cryptos(&to_b).is_empty(),
        "{to_b}"
    );
}

#[test]
fn what_cannot_be_keyed_is_refused_with_the_reason() {
    let mut res = Res::default();
    let offer = |extra: &str, opts: Options| {
        Session::default()
            .offer(
                "a",
                &sdp("10.0.0.1", "RTP/SAVP", extra),
                &opts,
                &ADV,
                &mut Res::default(),
            )
            .unwrap_err()
            .to_string()
    };
    let e = offer("", to("RTP/AVP"));
    assert!(e.contains("stream 1 (audio)") && e.contains("no a=crypto"), "{e}");
    let e = offer(
        &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY} UNENCRYPTED_SRTP\r\n"),
        to("RTP/AVP"),
    );
    assert!(e.contains("UNENCRYPTED_SRTP is not supported"), "{e}");
    let e = offer("a=crypto:1 F8_128_HMAC_SHA1_80 inline:x\r\n", to("RTP/AVP"));
    assert!(e.contains("F8_128_HMAC_SHA1_80"), "{e}");
    let mut no80 = to("RTP/AVP");
    no80.sdes.no = vec![Suite::AesCm128HmacSha1_80];
    let e = offer(
        &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\n"),
        no80,
    );
    assert!(e.contains("excluded by the SDES flags"), "{e}");

    let mut off = to("RTP/SAVP");
    off.sdes.off = true;
    let e = Session::default()
        .offer("a", &sdp("10.0.0.1", "RTP/AVP", ""), &off, &ADV, &mut res)
        .unwrap_err();
    assert!(e.to_string().contains("SDES is off"), "{e}");
    let e = Session::default()
        .offer(
            "a",
            &sdp("10.0.0.1", "UDP/TLS/RTP/SAVPF", ""),
            &to("RTP/AVP"),
            &ADV,
            &mut res,
        )
        .unwrap_err();
    assert!(e.to_string().contains("must state a=fingerprint"), "{e}");
    let (to_browser, _) = Session::default()
        .offer(
            "a",
            &sdp(
                "10.0.0.1",
                "RTP/SAVP",
                &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\n"),
            ),
            &to("UDP/TLS/RTP/SAVPF"),
            &ADV,
            &mut res,
        )
        .unwrap();
    assert!(
        to_browser.contains("a=fingerprint:") && cryptos(&to_browser).is_empty(),
        "SDES to DTLS: {to_browser}"
    );
    assert!(checked_transport("RTP/XYZ".into()).is_err_and(|e| e.status() == 400));

    let mut only = to("RTP/SAVP");
    only.sdes.only = vec![Suite::AeadAes128Gcm];
    let (text, _) = Session::default()
        .offer("a", &sdp("10.0.0.1", "RTP/AVP", ""), &only, &ADV, &mut res)
        .unwrap();
    assert_eq!(
        cryptos(&text).iter().map(|c| (c.tag, c.suite)).collect::<Vec<_>>(),
        [(1, Suite::AeadAes128Gcm)]
    );
}

#[test]
fn keys_survive_the_record_round_trip() {
    let mut res = Res::default();
    let mut s = Session::default();
    s.offer("a", &sdp("10.0.0.1", "RTP/AVP", ""), &to("RTP/SAVP"), &ADV, &mut res)
        .unwrap();
    let answer = sdp(
        "10.0.0.2",
        "RTP/SAVP",
        &format!("a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\r\n"),
    );
    s.answer("a", "b", &answer, &Options::default(), &ADV, &mut res)
        .unwrap();
    let back: Session = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(
        back.streams[0].sides[1].sdes.as_ref().unwrap().keys(),
        s.streams[0].sides[1].sdes.as_ref().unwrap().keys()
    );
}
