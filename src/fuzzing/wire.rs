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
