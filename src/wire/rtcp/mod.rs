//! RTCP compound packets (RFC 3550 section 6), as borrowed views.
//!
//! Every length, count and padding field here comes from the network. The
//! rule (str0m's): an error means bad input, a panic means a bug. So the
//! walker checks each header against what is left of the datagram before it
//! slices, and the typed views check counts against lengths before they read.
//! A crafted compound (a zero-length packet followed by another, a count
//! larger than the packet, padding longer than the packet) is an error.

mod report;
mod view;

pub use report::{read_reports, write_report, Received, ReportBlock, SenderInfo};
pub use view::{Parsed, ReportBlocks};

use super::WireError;

pub const SR: u8 = 200;
pub const RR: u8 = 201;
pub const SDES: u8 = 202;
pub const BYE: u8 = 203;
pub const APP: u8 = 204;
pub const RTPFB: u8 = 205;
pub const PSFB: u8 = 206;
pub const XR: u8 = 207;

/// One packet of a compound: its header fields and its body (the bytes after
/// the 4-byte header, padding removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The 5-bit count field (report count, source count or feedback type).
    pub count: u8,
    pub pt: u8,
    pub body: &'a [u8],
}

/// Walks the packets of a compound. After the first error it yields nothing.
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

impl<'a> Compound<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Compound { rest: bytes }
    }

    fn next_packet(&mut self) -> Result<Packet<'a>, WireError> {
        let header = self.rest.get(..4).ok_or(WireError::Truncated)?;
        if header[0] >> 6 != 2 {
            return Err(WireError::BadVersion);
        }
        if !(200..=213).contains(&header[1]) {
            return Err(WireError::NotRtcp);
        }
        let len = 4 * (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1);
        let packet = self.rest.get(..len).ok_or(WireError::Truncated)?;
        let padded = header[0] & 0x20 != 0;
        let body_end = if padded {
            // RFC 3550 6.4.1: the last octet counts the padding, itself
            // included; it may not reach into the header.
            let pad = usize::from(packet[len - 1]);
            if pad == 0 || pad > len - 4 {
                return Err(WireError::BadPadding);
            }
            len - pad
        } else {
            len
        };
        self.rest = &self.rest[len..];
        Ok(Packet {
            count: header[0] & 0x1f,
            pt: header[1],
            body: &packet[4..body_end],
        })
    }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<Packet<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.next_packet();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

/// Validates an RTCP compound packet the way RFC 3550 A.2 suggests: version 2,
/// a known packet type, and lengths that add up exactly to the datagram.
/// Returns the number of packets in the compound. This is the relay's check:
/// it does not look inside the packets, which it forwards unchanged.
pub fn validate_compound(bytes: &[u8]) -> Result<usize, WireError> {
    if bytes.len() < 4 {
        return Err(WireError::TooShort);
    }
    let mut count = 0;
    for p in Compound::new(bytes) {
        p?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests;
