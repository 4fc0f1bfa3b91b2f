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
    let kinds: Vec<_> = Compound::new(&p).map(|p| p.unwrap().parse().unwrap()).collect();
    assert!(matches!(kinds[0], Parsed::ReceiverReport { ssrc: 0x01020304, blocks } if blocks.is_empty()));
    assert_eq!(kinds[1], Parsed::Sdes { chunks: 1 });
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

/// The datagram that stopped a media worker: an RR whose length field says
/// zero words (a bare header), followed by a second packet. The old reader
/// sliced the 4-byte packet and then read its SSRC at offset 4.
#[test]
fn zero_length_report_followed_by_another_is_an_error_not_a_panic() {
    let crafted = [0x81, 201, 0, 0, 0x80, 201, 0, 1, 1, 2, 3, 4];
    assert_eq!(validate_compound(&crafted), Ok(2));
    assert_eq!(read_reports(&crafted), Err(WireError::Truncated));
    // A count the length cannot hold.
    let overcount = [0x9f, 201, 0, 1, 1, 2, 3, 4];
    assert_eq!(read_reports(&overcount), Err(WireError::CountMismatch));
    // Padding longer than the packet.
    let overpad = [0xa0, 201, 0, 1, 1, 2, 3, 0xff];
    assert_eq!(read_reports(&overpad), Err(WireError::BadPadding));
}

#[test]
fn every_packet_type_parses() {
    let mut c = Vec::new();
    write_report(&mut c, 9, None, &[ReportBlock::default()], "cname");
    c.extend_from_slice(&[0x81, BYE, 0, 2, 0, 0, 0, 9, 3, b'b', b'y', b'e']);
    c.extend_from_slice(&[0x80, APP, 0, 2, 0, 0, 0, 9, b'n', b'a', b'm', b'e']);
    c.extend_from_slice(&[0x81, RTPFB, 0, 3, 0, 0, 0, 9, 0, 0, 0, 7, 0, 1, 0, 0]);
    c.extend_from_slice(&[0x81, PSFB, 0, 2, 0, 0, 0, 9, 0, 0, 0, 7]);
    c.extend_from_slice(&[0x80, XR, 0, 3, 0, 0, 0, 9, 4, 0, 0, 1, 0, 0, 0, 0]);
    let parsed: Vec<_> = Compound::new(&c).map(|p| p.unwrap().parse().unwrap()).collect();
    assert_eq!(parsed.len(), 7);
    assert!(matches!(parsed[0], Parsed::ReceiverReport { ssrc: 9, blocks } if blocks.len() == 1));
    assert_eq!(parsed[1], Parsed::Sdes { chunks: 1 });
    assert_eq!(
        parsed[2],
        Parsed::Bye {
            sources: 1,
            reason: Some(b"bye")
        }
    );
    assert!(matches!(parsed[3], Parsed::App { name, .. } if &name == b"name"));
    assert!(matches!(parsed[4], Parsed::Feedback { pt: RTPFB, fmt: 1, media: 7, fci, .. } if fci.len() == 4));
    assert!(matches!(parsed[5], Parsed::Feedback { pt: PSFB, fmt: 1, .. }));
    assert_eq!(parsed[6], Parsed::Xr { ssrc: 9, blocks: 1 });
}

/// One well-formed packet of type `pt` with `count` items and `extra` words of body.
fn packet(pt: u8, count: u8, body_words: usize, pad: u8, fill: u8) -> Vec<u8> {
    let count = count & 0x1f;
    let mut body = vec![fill; 4 * body_words];
    if pad > 0 {
        body.extend(std::iter::repeat_n(0, usize::from(pad) - 1));
        body.push(pad);
    }
    let words = body.len().div_ceil(4);
    body.resize(words * 4, 0);
    let mut p = vec![0x80 | if pad > 0 { 0x20 } else { 0 } | count, pt];
    p.extend_from_slice(&(words as u16).to_be_bytes());
    p.extend_from_slice(&body);
    p
}

/// Compounds built from plausible packets, then damaged where parsers trust
/// the input: the length word, the count, the padding octet, the end.
fn compound() -> impl Strategy<Value = Vec<u8>> {
    let one = (
        200u8..=213,
        0u8..32,
        0usize..12,
        prop_oneof![Just(0u8), 1u8..8],
        any::<u8>(),
    )
        .prop_map(|(pt, count, words, pad, fill)| packet(pt, count, words, pad, fill));
    let damage = prop_oneof![
        Just(None),
        (any::<prop::sample::Index>(), any::<u16>()).prop_map(|(i, v)| Some((i, 2usize, v))),
        (any::<prop::sample::Index>(), any::<u16>()).prop_map(|(i, v)| Some((i, 0usize, v))),
        (any::<prop::sample::Index>(), any::<u16>()).prop_map(|(i, v)| Some((i, 99usize, v))),
    ];
    (prop::collection::vec(one, 1..5), damage, 0usize..4).prop_map(|(packets, damage, cut)| {
        let mut offsets = Vec::new();
        let mut bytes = Vec::new();
        for p in packets {
            offsets.push(bytes.len());
            bytes.extend(p);
        }
        if let Some((i, field, v)) = damage {
            let at = offsets[i.index(offsets.len())];
            match field {
                // Length word.
                2 => bytes[at + 2..at + 4].copy_from_slice(&(v % 16).to_be_bytes()),
                // Count and padding bit.
                0 => bytes[at] = 0x80 | (v as u8 & 0x3f),
                // Last octet (the padding count when P is set).
                _ => *bytes.last_mut().unwrap() = v as u8,
            }
        }
        bytes.truncate(bytes.len().saturating_sub(cut * 3));
        bytes
    })
}

proptest! {
    #[test]
    fn damaged_compounds_are_errors_not_panics(bytes in compound()) {
        let walked: Vec<_> = Compound::new(&bytes).collect();
        let valid = validate_compound(&bytes);
        if let Ok(n) = valid {
            // The walk accounts for every byte.
            prop_assert_eq!(n, walked.len());
            prop_assert!(n * 4 <= bytes.len());
            for p in walked.iter().flatten() {
                let _ = p.parse();
            }
        } else {
            prop_assert!(walked.last().is_some_and(|r| r.is_err()) || bytes.len() < 4);
        }
        if let Ok(r) = read_reports(&bytes) {
            prop_assert!(valid.is_ok());
            prop_assert!(r.blocks.len() * 24 <= bytes.len());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(n) = validate_compound(&bytes) {
            prop_assert!(n >= 1 && n * 4 <= bytes.len());
        }
        let _ = read_reports(&bytes);
    }
}
