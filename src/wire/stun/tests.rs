use super::*;
use proptest::prelude::*;

/// RFC 5769 section 2.1: a Binding request with USERNAME "evtj:h6vY",
/// PRIORITY, ICE-CONTROLLED, MESSAGE-INTEGRITY and FINGERPRINT.
const RFC5769_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf,
    0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65,
    0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51,
    0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20,
    0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2,
    0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];
const RFC5769_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
const TXID: [u8; 12] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];

#[test]
fn the_rfc_5769_request_reads_and_authenticates() {
    let req = parse_request(&RFC5769_REQUEST).unwrap();
    assert_eq!(req.username, "evtj:h6vY");
    assert_eq!(req.priority, Some(0x6e00_01ff));
    assert_eq!(req.controlling, Some(false));
    assert!(!req.use_candidate);
    assert_eq!(req.transaction, TXID);
    assert_eq!(
        check_integrity(&RFC5769_REQUEST, &req, &key(RFC5769_PASSWORD).unwrap()),
        Ok(())
    );
    assert_eq!(
        check_integrity(&RFC5769_REQUEST, &req, &key("wrong").unwrap()),
        Err(StunError::BadIntegrity)
    );
}

#[test]
fn a_changed_byte_fails_the_fingerprint_or_the_integrity() {
    let k = key(RFC5769_PASSWORD).unwrap();
    // Bytes 100 and 101 name the last attribute: changed, it is an unknown
    // one after MESSAGE-INTEGRITY, which STUN ignores (and FINGERPRINT is optional).
    for i in (20..100).chain(102..RFC5769_REQUEST.len()) {
        let mut b = RFC5769_REQUEST;
        b[i] ^= 0x01;
        let verdict = parse_request(&b).and_then(|r| check_integrity(&b, &r, &k));
        assert!(verdict.is_err(), "byte {i} changed and still accepted");
    }
}

/// RFC 5769 sections 2.2 and 2.3: the XOR-MAPPED-ADDRESS of
/// 192.0.2.1:32853 and [2001:db8:1234:5678:11:2233:4455:6677]:32853.
#[test]
fn responses_carry_the_rfc_5769_mapped_addresses_and_verify() {
    let k = key(RFC5769_PASSWORD).unwrap();
    let mut out = [0u8; MAX_RESPONSE];
    let n = write_success(&mut out, &TXID, "192.0.2.1:32853".parse().unwrap(), &k);
    assert_eq!(
        &out[20..32],
        &[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]
    );
    // A response is not a request, but its FINGERPRINT is checked first.
    assert_eq!(parse_request(&out[..n]), Err(StunError::NotBindingRequest));
    let n6 = write_success(
        &mut out,
        &TXID,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap(),
        &k,
    );
    assert_eq!(n6, MAX_RESPONSE);
    assert_eq!(
        &out[20..44],
        &[
            0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25,
            0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9
        ]
    );
    assert_eq!(parse_request(&out[..n6]), Err(StunError::NotBindingRequest));
}

#[test]
fn what_is_not_a_request_says_why() {
    assert!(!is_stun(&[0x80; 40]), "RTP");
    assert!(!is_stun(&[22; 40]), "DTLS");
    let mut b = RFC5769_REQUEST;
    b[3] = 0x5c;
    assert!(matches!(parse_request(&b), Err(StunError::Malformed(_))));
    // Without MESSAGE-INTEGRITY and FINGERPRINT (the last 32 bytes).
    let mut short = RFC5769_REQUEST[..76].to_vec();
    short[3] = 76 - 20;
    assert_eq!(parse_request(&short), Err(StunError::NoIntegrity));
    // An attribute that claims more than the message holds.
    let mut long = short.clone();
    long[62..64].copy_from_slice(&0x0100u16.to_be_bytes());
    assert!(matches!(parse_request(&long), Err(StunError::Malformed(_))));
}

proptest! {
    #[test]
    fn any_datagram_is_read_or_refused_without_panic(mut b in proptest::collection::vec(any::<u8>(), 0..200)) {
        if b.len() >= 8 {
            b[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            b[0] &= 3;
            let len = (b.len().saturating_sub(20)) as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
        }
        if let Ok(r) = parse_request(&b) {
            let _ = check_integrity(&b, &r, &key("x").unwrap());
        }
    }
}
