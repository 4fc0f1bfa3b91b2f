//! RTP fixed header (RFC 3550 section 5.1), as a borrowed view.

use super::WireError;

/// The fixed RTP header is 12 bytes.
pub const RTP_HEADER_LEN: usize = 12;

/// A validated view of an RTP packet. Only the fields the relay needs.
#[derive(Debug, Clone, Copy)]
pub struct RtpView<'a> {
    bytes: &'a [u8],
    payload_offset: usize,
}

impl<'a> RtpView<'a> {
    /// Checks version, CSRC count, header extension length and padding, so that
    /// a packet accepted here can be parsed by any receiver that follows RFC 3550.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        if bytes.len() < RTP_HEADER_LEN {
            return Err(WireError::TooShort);
        }
        if bytes[0] >> 6 != 2 {
            return Err(WireError::BadVersion);
        }
        let csrc_count = (bytes[0] & 0x0f) as usize;
        let mut offset = RTP_HEADER_LEN + 4 * csrc_count;
        if bytes[0] & 0x10 != 0 {
            // Extension header: 16-bit profile, 16-bit length in 32-bit words.
            let ext = bytes.get(offset..offset + 4).ok_or(WireError::Truncated)?;
            offset += 4 + 4 * u16::from_be_bytes([ext[2], ext[3]]) as usize;
        }
        let mut end = bytes.len();
        if bytes[0] & 0x20 != 0 {
            let pad = *bytes.last().ok_or(WireError::Truncated)? as usize;
            if pad == 0 {
                return Err(WireError::Truncated);
            }
            end = end.checked_sub(pad).ok_or(WireError::Truncated)?;
        }
        if offset > end {
            return Err(WireError::Truncated);
        }
        Ok(RtpView {
            bytes,
            payload_offset: offset,
        })
    }

    pub fn marker(&self) -> bool {
        self.bytes[1] & 0x80 != 0
    }
    pub fn payload_type(&self) -> u8 {
        self.bytes[1] & 0x7f
    }
    pub fn sequence(&self) -> u16 {
        u16::from_be_bytes([self.bytes[2], self.bytes[3]])
    }
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.bytes[4], self.bytes[5], self.bytes[6], self.bytes[7]])
    }
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.bytes[8], self.bytes[9], self.bytes[10], self.bytes[11]])
    }
    /// The header extension's profile and data, if the X bit is set.
    pub fn extension(&self) -> Option<(u16, &'a [u8])> {
        if self.bytes[0] & 0x10 == 0 {
            return None;
        }
        let start = RTP_HEADER_LEN + 4 * (self.bytes[0] & 0x0f) as usize;
        // parse() checked that the extension fits before the payload.
        let h = &self.bytes[start..start + 4];
        Some((
            u16::from_be_bytes([h[0], h[1]]),
            &self.bytes[start + 4..self.payload_offset],
        ))
    }

    /// The RFC 6464 audio level (0 = loudest .. 127 = silence, in -dBov)
    /// carried in extension element `id` (RFC 8285 one- or two-byte form).
    pub fn audio_level(&self, id: u8) -> Option<u8> {
        let (profile, data) = self.extension()?;
        let two_byte = match profile {
            0xBEDE => false,
            p if p & 0xfff0 == 0x1000 => true,
            _ => return None,
        };
        let mut i = 0;
        while i < data.len() {
            let (eid, len, hdr) = if two_byte {
                if data[i] == 0 {
                    i += 1; // padding
                    continue;
                }
                (data[i], *data.get(i + 1)? as usize, 2)
            } else {
                if data[i] == 0 {
                    i += 1;
                    continue;
                }
                let b = data[i];
                if b >> 4 == 15 {
                    return None; // reserved: stop parsing (RFC 8285)
                }
                (b >> 4, (b & 0x0f) as usize + 1, 1)
            };
            let value = data.get(i + hdr..i + hdr + len)?;
            if eid == id {
                return value.first().map(|v| v & 0x7f);
            }
            i += hdr + len;
        }
        None
    }

    /// Payload bytes, padding included (the relay forwards packets unchanged).
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[self.payload_offset..]
    }
}

/// Writes a minimal RTP header into `out` (used by tests and the load generator).
/// Returns the header length, or `None` when `out` is too small.
pub fn write_header(out: &mut [u8], pt: u8, seq: u16, ts: u32, ssrc: u32) -> Option<usize> {
    let h = out.get_mut(..RTP_HEADER_LEN)?;
    h[0] = 0x80;
    h[1] = pt & 0x7f;
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&ts.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Some(RTP_HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_fields() {
        let mut b = [0u8; 20];
        write_header(&mut b, 8, 513, 0x01020304, 0xdeadbeef).unwrap();
        b[1] |= 0x80;
        let v = RtpView::parse(&b).unwrap();
        assert!(v.marker());
        assert_eq!(v.payload_type(), 8);
        assert_eq!(v.sequence(), 513);
        assert_eq!(v.timestamp(), 0x01020304);
        assert_eq!(v.ssrc(), 0xdeadbeef);
        assert_eq!(v.payload().len(), 8);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(RtpView::parse(&[0x80; 5]).unwrap_err(), WireError::TooShort);
        assert_eq!(RtpView::parse(&[0x40; 12]).unwrap_err(), WireError::BadVersion);
        // 15 CSRCs announced in a 12-byte packet.
        let mut b = [0u8; 12];
        b[0] = 0x8f;
        assert_eq!(RtpView::parse(&b).unwrap_err(), WireError::Truncated);
        // Extension bit set but no extension header.
        b[0] = 0x90;
        assert_eq!(RtpView::parse(&b).unwrap_err(), WireError::Truncated);
        // Padding longer than the packet.
        let mut p = [0u8; 13];
        p[0] = 0xa0;
        p[12] = 200;
        assert_eq!(RtpView::parse(&p).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn reads_the_audio_level_extension() {
        // X bit, one-byte header extension: id 1, len 1, level 90 with V bit; padding.
        let mut b = vec![
            0x90,
            111,
            0,
            1,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            9,
            0xBE,
            0xDE,
            0,
            1,
            0x10,
            0x80 | 90,
            0,
            0,
        ];
        b.extend_from_slice(&[7; 20]);
        let v = RtpView::parse(&b).unwrap();
        assert_eq!(v.audio_level(1), Some(90));
        assert_eq!(v.audio_level(2), None);
        assert_eq!(v.payload(), &[7; 20]);
    }

    /// An RTP header with the X bit and `ext` as the extension (profile first).
    fn with_extension(ext: &[u8]) -> Vec<u8> {
        let mut b = vec![0x90, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];
        b.extend_from_slice(ext);
        b.extend_from_slice(&[7; 4]);
        b
    }

    #[test]
    fn marker_padding_and_empty_payloads() {
        let mut b = [0u8; 12];
        write_header(&mut b, 8, 1, 2, 3).unwrap();
        let v = RtpView::parse(&b).unwrap();
        assert!(!v.marker(), "PT 8 without M");
        assert_eq!(v.payload(), &[] as &[u8], "a header alone is a valid (empty) packet");
        // Padding: the last byte counts the padding bytes, itself included.
        let mut p = vec![0xa0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 5, 5, 0, 0, 0, 4];
        assert!(RtpView::parse(&p).is_ok());
        *p.last_mut().unwrap() = 0;
        assert_eq!(
            RtpView::parse(&p).unwrap_err(),
            WireError::Truncated,
            "zero padding count"
        );
    }

    #[test]
    fn audio_level_in_every_extension_form() {
        // One-byte form: padding first, an id-3 element of 2 bytes, then id 1.
        let one = with_extension(&[0xBE, 0xDE, 0, 2, 0, 0x31, 1, 2, 0x10, 0x80 | 42, 0, 0]);
        assert_eq!(RtpView::parse(&one).unwrap().audio_level(1), Some(42));
        // Id 15 is reserved: parsing stops there (RFC 8285 section 4.2).
        // (Read past it, the next element would be id 1.)
        let reserved = with_extension(&[0xBE, 0xDE, 0, 1, 0xF0, 0, 0x10, 0x80 | 42]);
        assert_eq!(RtpView::parse(&reserved).unwrap().audio_level(1), None);
        // Two-byte form (profile 0x100x): padding, an id-3 element of 2
        // bytes, then id 1 with one byte.
        let two = with_extension(&[0x10, 0x00, 0, 2, 0, 3, 2, 9, 9, 1, 1, 0x80 | 17]);
        assert_eq!(RtpView::parse(&two).unwrap().audio_level(1), Some(17));
        // Another profile is not an RFC 8285 extension at all, even when its
        // bytes would read as a two-byte element of id 1.
        let other = with_extension(&[0x20, 0x00, 0, 1, 1, 1, 0x80 | 42, 0]);
        assert_eq!(RtpView::parse(&other).unwrap().audio_level(1), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(v) = RtpView::parse(&bytes) {
                prop_assert!(v.payload().len() <= bytes.len() - RTP_HEADER_LEN);
                let _ = (v.sequence(), v.timestamp(), v.ssrc(), v.payload_type(), v.audio_level(1), v.audio_level(14));
            }
        }
    }

    /// A plausible RTP packet: CSRCs, a one- or two-byte header extension
    /// with elements, padding; then one field made to lie (CSRC count,
    /// extension length, padding count) or the end cut off.
    fn packet() -> impl Strategy<Value = Vec<u8>> {
        let ext = prop::option::of((
            any::<bool>(),
            prop::collection::vec((1u8..15, 0u8..4, any::<u8>()), 0..4),
        ));
        (0u8..16, ext, 0usize..40, 0u8..8, 0u8..4, any::<u8>(), 0usize..6).prop_map(
            |(csrcs, ext, payload, pad, lie, value, cut)| {
                let mut b = vec![0x80 | csrcs, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
                b.extend(std::iter::repeat_n(7, 4 * usize::from(csrcs)));
                if let Some((two_byte, elements)) = &ext {
                    b[0] |= 0x10;
                    let mut data = Vec::new();
                    for (id, len, v) in elements {
                        if *two_byte {
                            data.extend([*id, *len + 1]);
                        } else {
                            data.push(id << 4 | len);
                        }
                        data.extend(std::iter::repeat_n(*v, usize::from(*len) + 1));
                    }
                    data.resize(data.len().div_ceil(4) * 4, 0);
                    let profile: u16 = if *two_byte { 0x1000 } else { 0xBEDE };
                    b.extend(profile.to_be_bytes());
                    b.extend(((data.len() / 4) as u16).to_be_bytes());
                    b.extend(data);
                }
                b.extend(std::iter::repeat_n(0x55, payload));
                if pad > 0 {
                    b[0] |= 0x20;
                    b.extend(std::iter::repeat_n(0, usize::from(pad) - 1));
                    b.push(pad);
                }
                match lie {
                    1 => b[0] = (b[0] & 0xf0) | (value & 0x0f),
                    2 if ext.is_some() => {
                        let at = 12 + 4 * usize::from(csrcs) + 2;
                        b[at..at + 2].copy_from_slice(&u16::from(value).to_be_bytes());
                    }
                    3 => *b.last_mut().expect("12 bytes at least") = value,
                    _ => {}
                }
                b.truncate(b.len().saturating_sub(cut * 3));
                b
            },
        )
    }

    proptest! {
        #[test]
        fn damaged_packets_are_errors_not_panics(b in packet()) {
            if let Ok(v) = RtpView::parse(&b) {
                // What the view hands out lies inside the packet.
                prop_assert!(v.payload().len() + RTP_HEADER_LEN <= b.len());
                if let Some((_, ext)) = v.extension() {
                    prop_assert!(ext.len() + v.payload().len() + RTP_HEADER_LEN + 4 <= b.len());
                }
                for id in 0..16 {
                    if let Some(level) = v.audio_level(id) {
                        prop_assert!(level <= 127);
                    }
                }
            }
        }
    }
}
