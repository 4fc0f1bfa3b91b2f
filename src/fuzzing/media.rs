//! The media core over virtual time: jitter buffer, relay decision, a
//! conference's participant input through its ticks.

use super::Input;
use crate::media::codec::{negotiate, CodecSpec};
use crate::media::conference::{Conference, Controls};
use crate::media::jitter::{JitterBuffer, Pop, MAX_PACKETS};
use crate::media::mixer::speakers::SpeakerConfig;
use crate::media::relay::{PacketKind, PeerSpec, RelayStream, Side, StreamKind};
use crate::sdp::Sdp;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Pushes and pops in any order, with any sequence numbers and timestamps,
/// over a clock that only moves forward.
pub(super) fn jitter(data: &[u8]) {
    let mut input = Input(data);
    let rate = [8000, 16000, 48000][usize::from(input.u8() % 3)];
    let mut jb = JitterBuffer::new(rate);
    let mut now = Instant::now();
    while !input.is_empty() {
        now += Duration::from_millis(u64::from(input.u8()));
        if input.u8() % 3 == 0 {
            let _ = matches!(jb.pop(now), Pop::Packet(_) | Pop::Lost | Pop::Empty);
        } else {
            let (seq, ts) = (input.u16(), input.u32());
            let len = usize::from(input.u8());
            jb.push(now, seq, ts, input.bytes(len));
        }
        assert!(jb.len() <= MAX_PACKETS, "the buffer is bounded");
    }
}

/// A source address from a small set, so that latching and foreign
/// sources both happen.
fn addr(input: &mut Input) -> SocketAddr {
    let b = input.u8();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, b & 3)), 5000 + u16::from(b >> 2 & 3))
}

fn peer(input: &mut Input) -> PeerSpec {
    let flags = input.u8();
    let mut p = PeerSpec::unknown(if flags & 1 == 0 {
        StreamKind::Rtp
    } else {
        StreamKind::Raw
    });
    p.rtp = (flags & 2 != 0).then(|| addr(input));
    p.rtcp = (flags & 4 != 0).then(|| addr(input));
    p.mux = flags & 8 != 0;
    p.sdp_ip = p.rtp.map(|a| a.ip());
    p.any_source = flags & 16 != 0;
    p
}

/// The relay decision on arbitrary packets from arbitrary sources. Once a
/// side has latched, RTP is forwarded only from the latched address.
pub(super) fn relay(data: &[u8]) {
    let mut input = Input(data);
    let mut stream = RelayStream {
        sides: [Side::new(peer(&mut input)), Side::new(peer(&mut input))],
    };
    let mut now = Instant::now();
    while !input.is_empty() {
        let op = input.u8();
        now += Duration::from_millis(u64::from(op >> 4));
        if op & 15 == 15 {
            let leg = usize::from(input.u8() & 1);
            stream.sides[leg].update(peer(&mut input));
            continue;
        }
        let (leg, on_rtcp) = (usize::from(op & 1), op & 2 != 0);
        let from = addr(&mut input);
        let len = usize::from(input.u8());
        let bytes = input.bytes(len);
        let latched = stream.sides[leg].latched();
        if let Ok(fwd) = stream.handle_packet(now, leg, from, bytes, on_rtcp) {
            if fwd.kind == PacketKind::Rtp {
                assert!(latched.is_none_or(|l| l == from), "RTP only from the latched source");
            }
        }
    }
}

fn spec(media: &str) -> CodecSpec {
    let sdp = format!("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 5000 {media}");
    let parsed = Sdp::parse(&sdp).expect("a fixed SDP parses");
    negotiate(&parsed.media[0]).expect("a fixed SDP negotiates")
}

/// Three participants (PCMU with DTMF, Opus, G.722 at 40 ms) send whatever
/// the input says, RTP and RTCP, while the conference ticks every 20 ms.
pub(super) fn conference(data: &[u8]) {
    let mut input = Input(data);
    let mut conf = Conference::new(SpeakerConfig::default());
    let specs = [
        "RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        "RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n",
        "RTP/AVP 9\r\na=ptime:40\r\n",
    ];
    for (id, m) in specs.iter().enumerate() {
        let id = id as u32 + 1;
        conf.join(id, spec(m), id * 1000).expect("fixed participants join");
    }
    let mut now = Instant::now();
    let mut next_tick = now;
    let mut sent = 0usize;
    while !input.is_empty() {
        let op = input.u8();
        now += Duration::from_millis(u64::from(op >> 3));
        let id = u32::from(op & 3);
        match (id, op >> 2 & 1) {
            (0, _) => {
                let c = input.u8();
                conf.control(
                    1 + u32::from(c % 3),
                    Controls {
                        muted: Some(c & 4 != 0),
                        deaf: Some(c & 8 != 0),
                        gain: Some(f32::from(c >> 4) / 4.0),
                    },
                );
                // Overload: one speaker, nobody else decoded (or back).
                conf.degrade(input.u8() & 1 != 0);
            }
            (_, 0) => {
                let len = usize::from(input.u16() % 1500);
                conf.handle_rtp(now, id, input.bytes(len));
            }
            _ => {
                let len = usize::from(input.u8());
                conf.handle_rtcp(now, u64::from(input.u32()) << 16, id, input.bytes(len));
            }
        }
        while next_tick <= now {
            conf.tick(next_tick, 0, &mut |_, _, bytes| sent += bytes.len().min(1));
            next_tick += Duration::from_millis(20);
        }
    }
    let _ = conf.report(now);
}

/// A browser's side as the network feeds it: datagrams that may be STUN
/// (raw, or a check signed with the right password around fuzzed
/// attributes) or DTLS, in any order. A check with the right password is
/// answered with a response that carries a valid FINGERPRINT; nothing else
/// is answered; DTLS garbage fails the stream, never the process.
pub(super) fn webrtc(data: &[u8]) {
    use crate::media::dtls::{Dtls, Fingerprint, Identity};
    use crate::media::ice::IceLite;
    use crate::wire::stun::{self, StunError, MAX_RESPONSE};
    static IDENTITY: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
    let id = IDENTITY.get_or_init(|| Identity::generate().expect("identity"));
    let fp = Fingerprint::parse(&id.fingerprint).expect("own fingerprint");
    let mut ice = IceLite::new("chorus", "fuzzpassword0123456789", Some("web")).expect("ice");
    let mut dtls = Dtls::server(id, fp).expect("dtls");
    let mut input = Input(data);
    let now = Instant::now();
    let from = SocketAddr::from(([127, 0, 0, 1], 5000));
    let mut out = [0u8; MAX_RESPONSE];
    while !input.is_empty() {
        let op = input.u8();
        let len = usize::from(input.u8());
        let body = input.bytes(len);
        match op % 3 {
            0 => {
                if let Ok(c) = ice.on_stun(now, from, body, &mut out) {
                    assert_eq!(stun::parse_request(&out[..c.len]), Err(StunError::NotBindingRequest));
                }
            }
            1 => {
                let check = signed_check(body, "chorus:web", "fuzzpassword0123456789");
                let c = ice
                    .on_stun(now, from, &check, &mut out)
                    .expect("a correctly signed check");
                assert_eq!(stun::parse_request(&out[..c.len]), Err(StunError::NotBindingRequest));
                assert!(ice.is_validated(from));
            }
            _ => {
                let mut sent = Vec::new();
                let _ = dtls.on_datagram(now, body, &mut sent);
            }
        }
    }
}

/// A Binding request with USERNAME `user`, the fuzzed bytes as an unknown
/// comprehension-optional attribute, and MESSAGE-INTEGRITY with `pwd`.
fn signed_check(extra: &[u8], user: &str, pwd: &str) -> Vec<u8> {
    let mut b = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    b.extend_from_slice(&[9; 12]);
    for (kind, value) in [(0x0006u16, user.as_bytes()), (0x8055, extra)] {
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&(value.len() as u16).to_be_bytes());
        b.extend_from_slice(value);
        b.resize(b.len().next_multiple_of(4), 0);
    }
    let len = (b.len() + 24 - 20) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let key = crate::wire::stun::key(pwd).expect("key");
    let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &key).expect("signer");
    s.update(&b).expect("hmac");
    let mac = s.sign_to_vec().expect("hmac");
    b.extend_from_slice(&0x0008u16.to_be_bytes());
    b.extend_from_slice(&20u16.to_be_bytes());
    b.extend_from_slice(&mac);
    b
}
