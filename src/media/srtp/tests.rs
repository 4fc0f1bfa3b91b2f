use super::*;
use crate::wire::rtp::write_header;

fn key(suite: Suite, fill: u8) -> Key {
    Key {
        suite,
        master: (0..suite.master_len()).map(|i| fill ^ i as u8).collect(),
    }
}

/// Two ends sharing keys: `a` sends with `k1` and receives with `k2`.
fn pair(suite: Suite) -> (SrtpSide, SrtpSide) {
    let (k1, k2) = (key(suite, 1), key(suite, 2));
    (SrtpSide::new(&k2, &k1).unwrap(), SrtpSide::new(&k1, &k2).unwrap())
}

fn rtp(buf: &mut [u8], seq: u16, ssrc: u32) -> usize {
    let n = 12 + 160;
    write_header(&mut buf[..n], 0, seq, seq as u32 * 160, ssrc).unwrap();
    for (i, b) in buf[12..n].iter_mut().enumerate() {
        *b = i as u8;
    }
    n
}

#[test]
fn every_suite_round_trips_rtp_and_rtcp_in_place() {
    for suite in Suite::ALL {
        let (mut a, mut b) = pair(suite);
        let mut buf = [0u8; 512];
        let n = rtp(&mut buf, 1, 7);
        let plain = buf[..n].to_vec();
        let p = a.protect(&mut buf, n, false).unwrap();
        assert!(p > n, "{suite:?} adds a tag");
        assert_ne!(buf[12..n], plain[12..], "{suite:?} encrypts the payload");
        assert_eq!(buf[..12], plain[..12], "the header stays readable");
        let u = b.unprotect(&mut buf, p, false).unwrap();
        assert_eq!(buf[..u], plain[..], "{suite:?}");

        let rr = [0x80, 201, 0, 1, 0, 0, 0, 7];
        buf[..8].copy_from_slice(&rr);
        let p = a.protect(&mut buf, 8, true).unwrap();
        let u = b.unprotect(&mut buf, p, true).unwrap();
        assert_eq!(buf[..u], rr, "{suite:?} SRTCP");
    }
}

#[test]
fn tampered_replayed_and_wrongly_keyed_packets_are_refused() {
    let (mut a, mut b) = pair(Suite::AesCm128HmacSha1_80);
    let mut buf = [0u8; 512];
    let n = rtp(&mut buf, 1, 7);
    let p = a.protect(&mut buf, n, false).unwrap();
    let sent = buf[..p].to_vec();
    buf[20] ^= 1;
    assert_eq!(b.unprotect(&mut buf, p, false), Err(SrtpError::Unauthentic));
    buf[..p].copy_from_slice(&sent);
    assert_eq!(b.unprotect(&mut buf, p, false), Ok(n));
    buf[..p].copy_from_slice(&sent);
    assert_eq!(b.unprotect(&mut buf, p, false), Err(SrtpError::Unauthentic), "replay");
    // A stranger with another key.
    let mut c = SrtpSide::new(&key(Suite::AesCm128HmacSha1_80, 9), &key(Suite::AesCm128HmacSha1_80, 9)).unwrap();
    buf[..p].copy_from_slice(&sent);
    assert_eq!(c.unprotect(&mut buf, p, false), Err(SrtpError::Unauthentic));
}

#[test]
fn short_and_non_rtp_input_is_malformed_not_a_crash() {
    let (_, mut b) = pair(Suite::AeadAes128Gcm);
    let mut buf = [0u8; 64];
    for len in [0, 1, 7, 11] {
        assert_eq!(b.unprotect(&mut buf, len, false), Err(SrtpError::Malformed), "{len}");
    }
    assert_eq!(
        b.unprotect(&mut buf, 100, false),
        Err(SrtpError::Malformed),
        "len beyond the buffer"
    );
    buf[0] = 0x80;
    assert_eq!(b.unprotect(&mut buf, 12, false), Err(SrtpError::Unauthentic));
    assert_eq!(b.unprotect(&mut buf, 8, true), Err(SrtpError::Unauthentic));
}

#[test]
fn ssrcs_are_capped_and_only_authentic_ones_count() {
    let (mut a, mut b) = pair(Suite::AesCm128HmacSha1_80);
    let mut buf = [0u8; 512];
    // Forged packets with fresh SSRCs do not fill the table.
    for ssrc in 100..200 {
        let n = rtp(&mut buf, 1, ssrc);
        assert_eq!(b.unprotect(&mut buf, n + 10, false), Err(SrtpError::Unauthentic));
    }
    for ssrc in 0..MAX_SSRCS as u32 {
        let n = rtp(&mut buf, 1, ssrc);
        let p = a.protect(&mut buf, n, false).unwrap();
        assert!(b.unprotect(&mut buf, p, false).is_ok(), "{ssrc}");
    }
    let n = rtp(&mut buf, 1, 999);
    assert_eq!(a.protect(&mut buf, n, false), Err(SrtpError::TooManySsrcs));
    // Known SSRCs keep flowing.
    let n = rtp(&mut buf, 2, 3);
    let p = a.protect(&mut buf, n, false).unwrap();
    assert_eq!(b.unprotect(&mut buf, p, false), Ok(n));
}

#[test]
fn protect_needs_room_for_the_tag() {
    let (mut a, _) = pair(Suite::AesCm128HmacSha1_80);
    let mut buf = [0u8; 172 + 5];
    let n = rtp(&mut buf, 1, 7);
    assert_eq!(a.protect(&mut buf, n, false), Err(SrtpError::NoRoom));
}

#[test]
fn keys_are_never_printed_and_a_wrong_length_is_refused() {
    let k = key(Suite::AesCm128HmacSha1_80, 0x5a);
    assert_eq!(format!("{k:?}"), "Key(AES_CM_128_HMAC_SHA1_80)");
    let short = Key {
        suite: Suite::AeadAes256Gcm,
        master: vec![0; 30],
    };
    let e = SrtpSide::new(&short, &k).unwrap_err();
    assert!(e.contains("30 bytes, not 44"), "{e}");
    let s = SrtpSide::new(&k, &k).unwrap();
    assert!(s.has_keys(&k, &k));
    assert!(!s.has_keys(&k, &key(Suite::AesCm128HmacSha1_80, 1)));
}
