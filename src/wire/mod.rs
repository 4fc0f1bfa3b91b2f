//! Packet formats read on the media path: zero-copy views over received bytes.
//!
//! Nothing here allocates or panics: every accessor is bounds-checked once, at
//! construction, and malformed input becomes a [`WireError`] that the worker
//! counts as a drop reason.

pub mod bencode;
pub mod rtcp;
pub mod rtp;
pub mod stun;

/// Why a datagram is not a packet we relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("shorter than the fixed header")]
    TooShort,
    #[error("RTP/RTCP version is not 2")]
    BadVersion,
    #[error("header fields point past the end of the packet")]
    Truncated,
    #[error("RTCP packet type outside 200..=213")]
    NotRtcp,
    #[error("padding count is zero or longer than the packet")]
    BadPadding,
    #[error("item count does not fit the packet length")]
    CountMismatch,
    #[error("an SDES, BYE or XR item runs past the packet")]
    BadItem,
}

/// Demultiplexes RTP from RTCP on one port (RFC 5761 section 4): RTCP packet
/// types 200..=213 fall in the range 192..=223 of the second byte, which RTP
/// payload types 64..=95 (with the marker bit) would occupy; those are not used.
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 2 && (192..=223).contains(&packet[1])
}
