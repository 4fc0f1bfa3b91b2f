//! RTCP compound packets (RFC 3550 section 6): validation only, for the relay.

use super::WireError;

/// Validates an RTCP compound packet the way RFC 3550 A.2 suggests: version 2,
/// a known packet type, and lengths that add up exactly to the datagram.
/// Returns the number of packets in the compound.
pub fn validate_compound(bytes: &[u8]) -> Result<usize, WireError> {
    if bytes.len() < 4 {
        return Err(WireError::TooShort);
    }
    let mut offset = 0;
    let mut count = 0;
    while offset < bytes.len() {
        let header = bytes.get(offset..offset + 4).ok_or(WireError::Truncated)?;
        if header[0] >> 6 != 2 {
            return Err(WireError::BadVersion);
        }
        if !(200..=213).contains(&header[1]) {
            return Err(WireError::NotRtcp);
        }
        let words = u16::from_be_bytes([header[2], header[3]]) as usize;
        offset += 4 * (words + 1);
        count += 1;
    }
    if offset != bytes.len() {
        return Err(WireError::Truncated);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_rr_plus_sdes() {
        // RR with no report blocks (8 bytes) + SDES with one empty chunk (8 bytes).
        let p = [
            0x80, 201, 0, 1, 1, 2, 3, 4, //
            0x81, 202, 0, 1, 1, 2, 3, 4,
        ];
        assert_eq!(validate_compound(&p), Ok(2));
    }

    #[test]
    fn rejects_bad_lengths_and_types() {
        assert_eq!(
            validate_compound(&[0x80, 201, 0, 5, 0, 0, 0, 0]),
            Err(WireError::Truncated)
        );
        assert_eq!(validate_compound(&[0x80, 96, 0, 0]), Err(WireError::NotRtcp));
        assert_eq!(validate_compound(&[0x80, 201]), Err(WireError::TooShort));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(n) = validate_compound(&bytes) {
                prop_assert!(n >= 1 && n * 4 <= bytes.len());
            }
        }
    }
}
