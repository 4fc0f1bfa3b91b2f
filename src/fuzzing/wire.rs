//! Packet views: RTP, RTCP, bencode.

use crate::wire::{bencode, rtcp, rtp::RtpView};

pub(super) fn rtp(data: &[u8]) {
    let Ok(v) = RtpView::parse(data) else { return };
    let _ = (v.marker(), v.payload_type(), v.sequence(), v.timestamp(), v.ssrc());
    if let Some((_, ext)) = v.extension() {
        assert!(ext.len() + 16 <= data.len(), "extension inside the packet");
    }
    for id in 0..16 {
        if let Some(level) = v.audio_level(id) {
            assert!(level <= 127);
        }
    }
    assert!(v.payload().len() + 12 <= data.len(), "payload inside the packet");
}

pub(super) fn rtcp(data: &[u8]) {
    let walked: Vec<_> = rtcp::Compound::new(data).collect();
    match rtcp::validate_compound(data) {
        Ok(n) => {
            assert_eq!(n, walked.len());
            let body: usize = walked.iter().flatten().map(|p| p.body.len() + 4).sum();
            assert!(body <= data.len(), "bodies inside the datagram");
            for p in walked.iter().flatten() {
                if let Ok(rtcp::Parsed::SenderReport { blocks, .. } | rtcp::Parsed::ReceiverReport { blocks, .. }) =
                    p.parse()
                {
                    assert_eq!(blocks.iter().count(), blocks.len());
                    assert!(blocks.len() <= usize::from(p.count));
                }
            }
        }
        Err(_) => assert!(data.len() < 4 || walked.last().is_some_and(|r| r.is_err())),
    }
    if let Ok(r) = rtcp::read_reports(data) {
        assert!(r.blocks.len() * 24 <= data.len());
    }
}

/// An `a=crypto` value from a peer: read or refused, and what is read is
/// written back to the same key.
pub(super) fn sdes(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = crate::sdp::crypto::Crypto::parse(&text) {
        let again = crate::sdp::crypto::Crypto::parse(&c.to_string()).expect("chorus's own a=crypto reads");
        assert_eq!(again, c, "a=crypto round-trips");
    }
}

/// The SRTP stage on a hostile datagram: the first byte picks the suite
/// and RTP or RTCP. Unprotecting it fails cleanly or yields no more than it
/// read; protecting it and unprotecting at the other end gives it back.
pub(super) fn srtp(data: &[u8]) {
    use crate::media::srtp::{Key, SrtpSide, TRAILER};
    use crate::sdp::crypto::Suite;
    let Some((&pick, packet)) = data.split_first() else {
        return;
    };
    let suite = Suite::ALL[usize::from(pick) % Suite::ALL.len()];
    let rtcp = pick & 0x80 != 0;
    let key = |fill: u8| Key {
        suite,
        master: vec![fill; suite.master_len()],
    };
    let (k1, k2) = (key(1), key(2));
    let mut near = SrtpSide::new(&k2, &k1).expect("valid keys");
    let mut far = SrtpSide::new(&k1, &k2).expect("valid keys");
    let mut buf = vec![0u8; packet.len() + TRAILER];
    buf[..packet.len()].copy_from_slice(packet);
    if let Ok(n) = near.unprotect(&mut buf, packet.len(), rtcp) {
        assert!(n <= packet.len(), "unprotect grew the packet");
    }
    buf[..packet.len()].copy_from_slice(packet);
    if let Ok(n) = near.protect(&mut buf, packet.len(), rtcp) {
        assert!(n <= packet.len() + TRAILER);
        let back = far
            .unprotect(&mut buf, n, rtcp)
            .expect("the peer reads what chorus protected");
        assert_eq!(&buf[..back], packet, "SRTP round-trips");
    }
}

pub(super) fn bencode(data: &[u8]) {
    let Ok(v) = bencode::decode(data) else { return };
    // Encoding sorts dict keys, so the canonical form is a fixed point.
    let mut canonical = Vec::new();
    v.encode(&mut canonical);
    let again = bencode::decode(&canonical).expect("chorus's own encoding decodes");
    let mut twice = Vec::new();
    again.encode(&mut twice);
    assert_eq!(canonical, twice, "bencode encoding is canonical");
}
