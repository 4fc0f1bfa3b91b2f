//! STUN (RFC 8489) as an ICE-lite agent needs it (RFC 8445 section 2.5):
//! read a Binding request, check its short-term credentials, and write the
//! success response. Every length is checked against the datagram; nothing
//! is indexed on trust.

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use std::net::SocketAddr;

const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const HEADER: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const PRIORITY: u16 = 0x0024;
const USE_CANDIDATE: u16 = 0x0025;
const FINGERPRINT: u16 = 0x8028;
const ICE_CONTROLLED: u16 = 0x8029;
const ICE_CONTROLLING: u16 = 0x802a;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// The longest response [`write_success`] writes (IPv6).
pub const MAX_RESPONSE: usize = HEADER + 24 + 24 + 8;

/// Whether a datagram is STUN (RFC 7983: first byte 0..=3, and the cookie).
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= HEADER && b[0] < 4 && b[4..8] == MAGIC
}

/// Why a datagram is not a usable Binding request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunError {
    Malformed(&'static str),
    /// A valid STUN message of another kind (indication, response, TURN).
    NotBindingRequest,
    NoIntegrity,
    BadIntegrity,
    BadFingerprint,
}

/// A Binding request, as read (integrity not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRequest<'a> {
    pub transaction: [u8; 12],
    /// `<receiver's ufrag>:<sender's ufrag>`.
    pub username: &'a str,
    pub priority: Option<u32>,
    pub use_candidate: bool,
    /// The sender's role and tie-breaker: true when it is controlling.
    pub controlling: Option<bool>,
    /// Where MESSAGE-INTEGRITY starts.
    integrity_at: usize,
}

/// Reads a Binding request; a FINGERPRINT, when present, must be correct.
pub fn parse_request(b: &[u8]) -> Result<BindingRequest<'_>, StunError> {
    if !is_stun(b) {
        return Err(StunError::Malformed("not STUN"));
    }
    let declared = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if declared + HEADER != b.len() || declared % 4 != 0 {
        return Err(StunError::Malformed("length does not match the datagram"));
    }
    let mut req = BindingRequest {
        transaction: b[8..20].try_into().map_err(|_| StunError::Malformed("header"))?,
        username: "",
        priority: None,
        use_candidate: false,
        controlling: None,
        integrity_at: 0,
    };
    let mut at = HEADER;
    while at < b.len() {
        let (kind, value) = attribute(b, at)?;
        let next = at + 4 + value.len().next_multiple_of(4);
        if req.integrity_at != 0 && kind != FINGERPRINT {
            // After MESSAGE-INTEGRITY only FINGERPRINT counts (RFC 8489 14.5).
            at = next;
            continue;
        }
        match kind {
            USERNAME => {
                req.username = std::str::from_utf8(value).map_err(|_| StunError::Malformed("USERNAME is not UTF-8"))?;
            }
            PRIORITY => req.priority = Some(u32::from_be_bytes(fixed(value)?)),
            USE_CANDIDATE => req.use_candidate = true,
            ICE_CONTROLLING => req.controlling = Some(true),
            ICE_CONTROLLED => req.controlling = Some(false),
            MESSAGE_INTEGRITY => {
                if value.len() != 20 {
                    return Err(StunError::Malformed("MESSAGE-INTEGRITY is not 20 bytes"));
                }
                req.integrity_at = at;
            }
            FINGERPRINT => {
                if next != b.len() {
                    return Err(StunError::Malformed("FINGERPRINT is not last"));
                }
                let want = u32::from_be_bytes(fixed(value)?);
                if crc32(&b[..at]) ^ FINGERPRINT_XOR != want {
                    return Err(StunError::BadFingerprint);
                }
            }
            _ => {}
        }
        at = next;
    }
    if u16::from_be_bytes([b[0], b[1]]) != BINDING_REQUEST {
        return Err(StunError::NotBindingRequest);
    }
    if req.integrity_at == 0 {
        return Err(StunError::NoIntegrity);
    }
    Ok(req)
}

/// Checks MESSAGE-INTEGRITY (HMAC-SHA1 keyed with the receiver's password).
pub fn check_integrity(b: &[u8], req: &BindingRequest<'_>, key: &PKey<Private>) -> Result<(), StunError> {
    let at = req.integrity_at;
    let (Some(covered), Some(mac)) = (b.get(HEADER..at), b.get(at + 4..at + 24)) else {
        return Err(StunError::NoIntegrity);
    };
    // The length field as if the message ended after MESSAGE-INTEGRITY.
    let len = u16::try_from(at + 24 - HEADER).map_err(|_| StunError::Malformed("too long"))?;
    let mut header = [0u8; HEADER];
    header.copy_from_slice(&b[..HEADER]);
    header[2..4].copy_from_slice(&len.to_be_bytes());
    let ok = hmac(key, &[&header, covered]).is_some_and(|m| openssl::memcmp::eq(&m, mac));
    ok.then_some(()).ok_or(StunError::BadIntegrity)
}

/// Writes a Binding success response to `req` into `out`, telling the
/// sender its address; returns its length ([`MAX_RESPONSE`] at most).
pub fn write_success(
    out: &mut [u8; MAX_RESPONSE],
    transaction: &[u8; 12],
    mapped: SocketAddr,
    key: &PKey<Private>,
) -> usize {
    out[0..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out[4..8].copy_from_slice(&MAGIC);
    out[8..20].copy_from_slice(transaction);
    let mut at = HEADER;
    let port = mapped.port() ^ 0x2112;
    let (family, addr_len) = if mapped.is_ipv4() { (1u8, 4) } else { (2u8, 16) };
    out[at..at + 2].copy_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
    out[at + 2..at + 4].copy_from_slice(&(4 + addr_len as u16).to_be_bytes());
    out[at + 4] = 0;
    out[at + 5] = family;
    out[at + 6..at + 8].copy_from_slice(&port.to_be_bytes());
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC);
    mask[4..].copy_from_slice(transaction);
    let (v4, v6);
    let ip: &[u8] = match mapped {
        SocketAddr::V4(a) => {
            v4 = a.ip().octets();
            &v4
        }
        SocketAddr::V6(a) => {
            v6 = a.ip().octets();
            &v6
        }
    };
    for (i, (o, m)) in ip.iter().zip(&mask).enumerate() {
        out[at + 8 + i] = o ^ m;
    }
    at += 8 + addr_len;
    // MESSAGE-INTEGRITY over everything so far, the length counting it.
    out[2..4].copy_from_slice(&((at + 24 - HEADER) as u16).to_be_bytes());
    let mac = hmac(key, &[&out[..at]]).unwrap_or_default();
    out[at..at + 2].copy_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
    out[at + 2..at + 4].copy_from_slice(&20u16.to_be_bytes());
    out[at + 4..at + 24].copy_from_slice(mac.get(..20).unwrap_or(&[0; 20]));
    at += 24;
    out[2..4].copy_from_slice(&((at + 8 - HEADER) as u16).to_be_bytes());
    let fp = crc32(&out[..at]) ^ FINGERPRINT_XOR;
    out[at..at + 2].copy_from_slice(&FINGERPRINT.to_be_bytes());
    out[at + 2..at + 4].copy_from_slice(&4u16.to_be_bytes());
    out[at + 4..at + 8].copy_from_slice(&fp.to_be_bytes());
    at + 8
}

/// The HMAC key for a password (short-term credentials: the password itself).
pub fn key(password: &str) -> Result<PKey<Private>, String> {
    PKey::hmac(password.as_bytes()).map_err(|e| format!("HMAC key: {e}"))
}

fn hmac(key: &PKey<Private>, parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut s = Signer::new(MessageDigest::sha1(), key).ok()?;
    for p in parts {
        s.update(p).ok()?;
    }
    s.sign_to_vec().ok()
}

/// One attribute at `at`: its type and value, bounds-checked.
fn attribute(b: &[u8], at: usize) -> Result<(u16, &[u8]), StunError> {
    let head = b.get(at..at + 4).ok_or(StunError::Malformed("truncated attribute"))?;
    let kind = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let value = b
        .get(at + 4..at + 4 + len)
        .ok_or(StunError::Malformed("attribute longer than the message"))?;
    if at + 4 + len.next_multiple_of(4) > b.len() {
        return Err(StunError::Malformed("attribute padding beyond the message"));
    }
    Ok((kind, value))
}

fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], StunError> {
    v.try_into()
        .map_err(|_| StunError::Malformed("attribute of the wrong size"))
}

/// CRC-32 (ISO 3309, as FINGERPRINT uses): a checksum, not cryptography.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data
        .iter()
        .fold(!0u32, |c, &b| TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8))
}

#[cfg(test)]
mod tests;
