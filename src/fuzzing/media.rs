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
