//! Several streams of a call on one browser transport (BUNDLE, RFC 8843).
//! The owner stream holds the socket, ICE, DTLS and SRTP; a follower's
//! side holds only its relay state. What arrives on the owner's socket is
//! decrypted there and then handed to the stream it belongs to: RTP by
//! payload type, RTCP by the SSRCs it names. What a follower sends to the
//! browser leaves through the owner's socket, sealed with its keys.

use super::WStream;
use crate::wire;

/// Which stream of the call a plain packet from a browser on the owner's
/// transport (`owner`, side `side`) belongs to.
pub(super) fn demux(streams: &[WStream], owner: usize, side: usize, packet: &[u8]) -> usize {
    if !streams.get(owner).is_some_and(|w| w.has_followers[side]) {
        return owner;
    }
    let followers = || {
        streams
            .iter()
            .enumerate()
            .filter_map(move |(i, w)| Some((i, w.bundle[side]?)).filter(|(_, b)| b.owner == owner))
    };
    if wire::is_rtcp(packet) {
        // The sender's SSRC (bytes 4..8), else the first report block's source.
        let ssrc_at = |at: usize| {
            packet
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let block = match packet.get(1) {
            Some(200) => ssrc_at(28),
            _ => ssrc_at(8),
        };
        let sender = ssrc_at(4);
        return followers()
            .find(|(i, _)| {
                let w = &streams[*i].relay.sides;
                let (theirs, ours) = (w[side].rtp.ssrc(), w[1 - side].rtp.ssrc());
                (sender.is_some() && sender == theirs) || (block.is_some() && block == ours)
            })
            .map_or(owner, |(i, _)| i);
    }
    let Some(pt) = packet.get(1).map(|b| b & 0x7f) else {
        return owner;
    };
    followers()
        .find(|(_, b)| b.pts & (1u128 << pt) != 0)
        .map_or(owner, |(i, _)| i)
}

/// A follower's side learns where the browser is from its owner's (ICE
/// decides it there), for both of stream `i`'s sides that ride a bundle.
pub(super) fn sync_latch(streams: &mut [WStream], i: usize) {
    for side in 0..2 {
        let Some(b) = streams.get(i).and_then(|w| w.bundle[side]) else {
            continue;
        };
        let Some(latched) = streams.get(b.owner).map(|w| w.relay.sides[side].latched()) else {
            continue;
        };
        let s = &mut streams[i].relay.sides[side];
        if s.latched() != latched {
            s.set_latched(latched);
        }
    }
}

/// Marks each owner whose transport other streams ride.
pub(super) fn mark_owners(streams: &mut [WStream]) {
    for side in 0..2 {
        for w in streams.iter_mut() {
            w.has_followers[side] = false;
        }
        for i in 0..streams.len() {
            if let Some(b) = streams[i].bundle[side] {
                if let Some(o) = streams.get_mut(b.owner) {
                    o.has_followers[side] = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::relay::StreamKind;
    use crate::worker::Bundled;
    use proptest::prelude::*;

    /// Audio (owner, stream 0) and video (stream 1) bundled on side 0.
    fn bundled() -> Vec<WStream> {
        let mut s = vec![WStream::new(StreamKind::Rtp), WStream::new(StreamKind::Rtp)];
        s[1].bundle[0] = Some(Bundled { owner: 0, pts: 1 << 96 });
        mark_owners(&mut s);
        s
    }

    fn rtp(pt: u8, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        crate::wire::rtp::write_header(&mut p, pt, 1, 160, ssrc).unwrap();
        p
    }

    #[test]
    fn rtp_goes_by_payload_type_and_rtcp_by_the_ssrcs_it_names() {
        let mut s = bundled();
        assert!(s[0].has_followers[0] && !s[0].has_followers[1]);
        assert_eq!(demux(&s, 0, 0, &rtp(111, 1)), 0);
        assert_eq!(demux(&s, 0, 0, &rtp(96, 2)), 1);
        // Not bundled on side 1: always the stream itself.
        assert_eq!(demux(&s, 0, 1, &rtp(96, 2)), 0);
        // The video stream has seen SSRC 2 from the browser: its RR goes there.
        let now = std::time::Instant::now();
        let from = "127.0.0.1:5000".parse().unwrap();
        s[1].relay.sides[0].set_latched(Some(from));
        s[1].relay.sides[0].receive(now, from, &rtp(96, 2), false).unwrap();
        let rr = |sender: u32| [[0x80, 201, 0, 1], sender.to_be_bytes()].concat();
        assert_eq!(demux(&s, 0, 0, &rr(2)), 1);
        assert_eq!(demux(&s, 0, 0, &rr(7)), 0, "unknown sources go to the owner");
    }

    #[test]
    fn a_follower_learns_where_the_browser_is_from_its_owner() {
        let mut s = bundled();
        let at = "127.0.0.1:5000".parse().unwrap();
        s[0].relay.sides[0].set_latched(Some(at));
        sync_latch(&mut s, 1);
        assert_eq!(s[1].relay.sides[0].latched(), Some(at));
        s[0].relay.sides[0].set_latched(None); // consent expired
        sync_latch(&mut s, 1);
        assert_eq!(s[1].relay.sides[0].latched(), None);
    }

    proptest! {
        /// Whatever the browser sends, demux names a stream of the call.
        #[test]
        fn any_datagram_is_given_to_a_stream_of_the_call(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                                        owner in 0usize..3, side in 0usize..2) {
            let s = bundled();
            let i = demux(&s, owner, side, &bytes);
            prop_assert!(i == owner || (i < s.len() && s[i].bundle[side].is_some()));
        }
    }
}
