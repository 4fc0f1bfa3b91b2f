//! `--srtp`: leg A of every call is an SDES-SRTP phone (RTP/SAVP,
//! AES_CM_128_HMAC_SHA1_80), leg B plain RTP/AVP, and the relay bridges
//! them (`transport-protocol: RTP/AVP` on the offer): it decrypts A's
//! packets and encrypts B's. The generator encrypts what A sends and
//! decrypts what A receives, each call with its own keys.

use chorus::media::srtp::{Key, SrtpSide};
use chorus::sdp::crypto::{Crypto, Suite};
use std::net::SocketAddr;

const SUITE: Suite = Suite::AesCm128HmacSha1_80;

/// Phone A's key in call `i` (distinct per call; not secret, it is a test).
pub(crate) fn phone_key(i: usize) -> Key {
    let seed = (i as u64).to_be_bytes();
    Key {
        suite: SUITE,
        master: (0..SUITE.master_len())
            .map(|j| seed[j % 8] ^ (j as u8).wrapping_mul(37))
            .collect(),
    }
}

/// A's offer: RTP/SAVP with its key.
pub(crate) fn offer_sdp(addr: SocketAddr, i: usize) -> String {
    let k = phone_key(i);
    let crypto = Crypto::ours(1, k.suite, k.master);
    format!(
        "v=0\r\no=load 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:{crypto}\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

/// The relay's key towards A, from the SDP A got back.
pub(crate) fn relay_key(sdp: &str) -> Key {
    let c = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .map(Crypto::parse)
        .unwrap_or_else(|| panic!("the relay answered A without a=crypto: {sdp}"))
        .unwrap_or_else(|e| panic!("the relay's a=crypto: {e}"));
    assert_eq!(c.suite, SUITE, "the relay answered with another suite");
    Key::from(&c)
}

/// A's SRTP contexts for every call, indexed by call.
pub(crate) fn phones(relay_keys: &[Key]) -> Vec<SrtpSide> {
    relay_keys
        .iter()
        .enumerate()
        .map(|(i, k)| SrtpSide::new(k, &phone_key(i)).expect("valid keys"))
        .collect()
}
