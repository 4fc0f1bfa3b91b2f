//! The SRTP stage of one side of a stream (RFC 3711, 7714): what the leg
//! sends is authenticated and decrypted with the leg's key, what goes to it
//! is encrypted with chorus's key. libsrtp2 does the cryptography, in place
//! in the worker's receive buffer: no allocation per packet.
//!
//! libsrtp keeps one stream (replay window, rollover counter) per SSRC it
//! sees. A leg could send ever new SSRCs and grow that without bound, so a
//! side accepts at most [`MAX_SSRCS`]; an inbound SSRC counts only once a
//! packet with it has authenticated, so a stranger without the key cannot
//! use up the table.

use crate::sdp::crypto::Suite;
use srtp::vec_like::{BufferTooShortError, VecLike};
use srtp::{CryptoPolicy, Session, StreamPolicy};
use std::fmt;

/// Room after a packet that protecting it may use (tag, SRTCP index, MKI).
pub const TRAILER: usize = srtp::sys::SRTP_MAX_TRAILER_LEN as usize;
/// Distinct SSRCs one side decrypts, and as many it encrypts.
pub const MAX_SSRCS: usize = 16;

/// One master key: the suite and key || salt, `suite.master_len()` bytes.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Key {
    #[serde(with = "suite_name")]
    pub suite: Suite,
    pub master: Vec<u8>,
}

impl From<&crate::sdp::crypto::Crypto> for Key {
    fn from(c: &crate::sdp::crypto::Crypto) -> Key {
        Key {
            suite: c.suite,
            master: c.master.clone(),
        }
    }
}

impl fmt::Debug for Key {
    // Never print key material (logs, panics).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.suite.name())
    }
}

/// Why a packet did not pass the SRTP stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    /// Too short to be SRTP or SRTCP.
    Malformed,
    /// Authentication failed, or a replay.
    Unauthentic,
    /// A new SSRC beyond [`MAX_SSRCS`].
    TooManySsrcs,
    /// No room for the tag (a datagram within `TRAILER` of 64 KiB).
    NoRoom,
}

/// The two contexts of one side.
pub struct SrtpSide {
    inbound: Context,
    outbound: Context,
    /// The keys, to tell an unchanged re-INVITE from a re-key.
    keys: (Key, Key),
}

impl fmt::Debug for SrtpSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SrtpSide(in {:?}, out {:?})", self.keys.0, self.keys.1)
    }
}

struct Context {
    session: Session,
    ssrcs: [u32; MAX_SSRCS],
    known: usize,
}

impl SrtpSide {
    /// `theirs` decrypts what the leg sends; `ours` encrypts what it gets.
    pub fn new(theirs: &Key, ours: &Key) -> Result<SrtpSide, String> {
        Ok(SrtpSide {
            inbound: Context::new(theirs, false)?,
            outbound: Context::new(ours, true)?,
            keys: (theirs.clone(), ours.clone()),
        })
    }

    /// Whether this side already runs with these keys (keeps its replay
    /// windows and rollover counters across a re-INVITE that changed nothing).
    pub fn has_keys(&self, theirs: &Key, ours: &Key) -> bool {
        self.keys.0 == *theirs && self.keys.1 == *ours
    }

    /// Authenticates and decrypts `buf[..len]` in place; returns the
    /// plaintext length.
    pub fn unprotect(&mut self, buf: &mut [u8], len: usize, rtcp: bool) -> Result<usize, SrtpError> {
        let ssrc = ssrc_of(buf.get(..len).ok_or(SrtpError::Malformed)?, rtcp)?;
        let c = &mut self.inbound;
        let known = c.knows(ssrc);
        if !known && c.known == MAX_SSRCS {
            return Err(SrtpError::TooManySsrcs);
        }
        let mut b = InPlace { buf, len };
        let r = if rtcp {
            c.session.unprotect_rtcp(&mut b)
        } else {
            c.session.unprotect(&mut b)
        };
        r.map_err(|_| SrtpError::Unauthentic)?;
        if !known {
            c.learn(ssrc);
        }
        Ok(b.len)
    }

    /// Encrypts `buf[..len]` in place, using up to [`TRAILER`] bytes after
    /// it; returns the protected length.
    pub fn protect(&mut self, buf: &mut [u8], len: usize, rtcp: bool) -> Result<usize, SrtpError> {
        let ssrc = ssrc_of(buf.get(..len).ok_or(SrtpError::Malformed)?, rtcp)?;
        let c = &mut self.outbound;
        if !c.knows(ssrc) {
            if c.known == MAX_SSRCS {
                return Err(SrtpError::TooManySsrcs);
            }
            c.learn(ssrc);
        }
        let mut b = InPlace { buf, len };
        let r = if rtcp {
            c.session.protect_rtcp(&mut b)
        } else {
            c.session.protect(&mut b)
        };
        // The only failure with a valid key and header is a buffer too small.
        r.map_err(|_| SrtpError::NoRoom)?;
        Ok(b.len)
    }
}

impl Context {
    fn new(key: &Key, outbound: bool) -> Result<Context, String> {
        if key.master.len() != key.suite.master_len() {
            return Err(format!(
                "{} key is {} bytes, not {}",
                key.suite.name(),
                key.master.len(),
                key.suite.master_len()
            ));
        }
        let (rtp, rtcp) = policies(key.suite);
        let policy = StreamPolicy {
            rtp,
            rtcp,
            key: &key.master,
            ..Default::default()
        };
        let session = if outbound {
            Session::with_outbound_template(policy)
        } else {
            Session::with_inbound_template(policy)
        };
        Ok(Context {
            session: session.map_err(|e| format!("libsrtp refused the {} key: {e}", key.suite.name()))?,
            ssrcs: [0; MAX_SSRCS],
            known: 0,
        })
    }

    fn knows(&self, ssrc: u32) -> bool {
        self.ssrcs[..self.known].contains(&ssrc)
    }

    fn learn(&mut self, ssrc: u32) {
        if let Some(slot) = self.ssrcs.get_mut(self.known) {
            *slot = ssrc;
            self.known += 1;
        }
    }
}

/// libsrtp policies for a suite. SRTCP keeps an 80-bit tag with the 32-bit
/// RTP suites (RFC 4568 section 6.2.1).
fn policies(suite: Suite) -> (CryptoPolicy, CryptoPolicy) {
    match suite {
        Suite::AesCm128HmacSha1_80 => (
            CryptoPolicy::aes_cm_128_hmac_sha1_80(),
            CryptoPolicy::aes_cm_128_hmac_sha1_80(),
        ),
        Suite::AesCm128HmacSha1_32 => (
            CryptoPolicy::aes_cm_128_hmac_sha1_32(),
            CryptoPolicy::aes_cm_128_hmac_sha1_80(),
        ),
        Suite::AesCm256HmacSha1_80 => (
            CryptoPolicy::aes_cm_256_hmac_sha1_80(),
            CryptoPolicy::aes_cm_256_hmac_sha1_80(),
        ),
        Suite::AesCm256HmacSha1_32 => (
            CryptoPolicy::aes_cm_256_hmac_sha1_32(),
            CryptoPolicy::aes_cm_256_hmac_sha1_80(),
        ),
        Suite::AeadAes128Gcm => (CryptoPolicy::aes_gcm_128_16_auth(), CryptoPolicy::aes_gcm_128_16_auth()),
        Suite::AeadAes256Gcm => (CryptoPolicy::aes_gcm_256_16_auth(), CryptoPolicy::aes_gcm_256_16_auth()),
    }
}

/// The SSRC in an RTP (bytes 8..12) or RTCP (bytes 4..8) header, after a
/// check that the header is there at all.
fn ssrc_of(packet: &[u8], rtcp: bool) -> Result<u32, SrtpError> {
    let (at, min) = if rtcp { (4, 8) } else { (8, 12) };
    if packet.len() < min || packet.first().map(|b| b >> 6) != Some(2) {
        return Err(SrtpError::Malformed);
    }
    let b: [u8; 4] = packet
        .get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or(SrtpError::Malformed)?;
    Ok(u32::from_be_bytes(b))
}

/// A packet in a fixed buffer, for libsrtp's in-place calls.
struct InPlace<'a> {
    buf: &'a mut [u8],
    len: usize,
}

// The srtp crate's trait for in-place buffers declares `unsafe fn`s: its
// contract is that `reserve` succeeds only when the buffer really has the
// room, and `len` never exceeds the buffer. Both are kept below with
// checked arithmetic; nothing here dereferences a pointer.
#[allow(unsafe_code)]
impl VecLike for InPlace<'_> {
    fn as_mut_bytes(&mut self) -> &mut [u8] {
        let len = self.len.min(self.buf.len());
        &mut self.buf[..len]
    }

    unsafe fn reserve(&mut self, additional: usize) -> Result<(), BufferTooShortError> {
        match self.len.checked_add(additional) {
            Some(need) if need <= self.buf.len() => Ok(()),
            need => Err(BufferTooShortError {
                requested_capacity: need.unwrap_or(usize::MAX),
            }),
        }
    }

    unsafe fn set_len(&mut self, new_len: usize) {
        self.len = new_len.min(self.buf.len());
    }
}

mod suite_name {
    use crate::sdp::crypto::Suite;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &Suite, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Suite, D::Error> {
        let name = String::deserialize(d)?;
        Suite::from_name(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown crypto suite {name}")))
    }
}

#[cfg(test)]
mod tests;
