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

/// One reception report block (RFC 3550 section 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// 24-bit signed cumulative loss.
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR from `ssrc`.
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

impl ReportBlock {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        let lost = (self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0xff_ffff;
        out.extend_from_slice(&((self.fraction_lost as u32) << 24 | lost).to_be_bytes());
        for v in [self.highest_seq, self.jitter, self.lsr, self.dlsr] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    fn read(b: &[u8]) -> ReportBlock {
        let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let lost = w(4) & 0xff_ffff;
        ReportBlock {
            ssrc: w(0),
            fraction_lost: b[4],
            cumulative_lost: ((lost << 8) as i32) >> 8,
            highest_seq: w(8),
            jitter: w(12),
            lsr: w(16),
            dlsr: w(20),
        }
    }
}

/// Sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp.
    pub ntp: u64,
    pub rtp_ts: u32,
    pub packets: u32,
    pub octets: u32,
}

/// Appends an SR (with `info`) or, without it, an RR, then an SDES CNAME:
/// the compound RFC 3550 asks for.
pub fn write_report(out: &mut Vec<u8>, ssrc: u32, info: Option<SenderInfo>, blocks: &[ReportBlock], cname: &str) {
    let blocks = &blocks[..blocks.len().min(31)];
    let words = 1 + if info.is_some() { 5 } else { 0 } + 6 * blocks.len();
    out.push(0x80 | blocks.len() as u8);
    out.push(if info.is_some() { 200 } else { 201 });
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(i) = info {
        out.extend_from_slice(&i.ntp.to_be_bytes());
        for v in [i.rtp_ts, i.packets, i.octets] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    for b in blocks {
        b.write(out);
    }
    // SDES: one chunk, CNAME item, null terminator, padded to 32 bits.
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let chunk_len = 4 + 2 + cname.len() + 1;
    let padded = chunk_len.div_ceil(4) * 4;
    out.push(0x81);
    out.push(202);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(cname.len() as u8);
    out.extend_from_slice(cname);
    out.extend(std::iter::repeat_n(0u8, padded - chunk_len + 1));
}

/// What a received compound says: the sender's SR timestamp (for our LSR)
/// and the report blocks it carries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub sender_ssrc: u32,
    pub sr_ntp: Option<u64>,
    pub blocks: Vec<ReportBlock>,
}

/// Reads SR and RR packets of a validated compound; other packets are skipped.
pub fn read_reports(bytes: &[u8]) -> Result<Received, WireError> {
    validate_compound(bytes)?;
    let mut r = Received::default();
    let mut off = 0;
    while off + 8 <= bytes.len() {
        let count = (bytes[off] & 0x1f) as usize;
        let pt = bytes[off + 1];
        let len = 4 * (u16::from_be_bytes([bytes[off + 2], bytes[off + 3]]) as usize + 1);
        let pkt = &bytes[off..off + len];
        let first_block = match pt {
            200 if pkt.len() >= 28 => {
                r.sender_ssrc = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
                r.sr_ntp = Some(u64::from_be_bytes(pkt[8..16].try_into().expect("8 bytes")));
                Some(28)
            }
            201 => {
                r.sender_ssrc = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
                Some(8)
            }
            _ => None,
        };
        if let Some(start) = first_block {
            for i in 0..count {
                let at = start + 24 * i;
                if let Some(b) = pkt.get(at..at + 24) {
                    r.blocks.push(ReportBlock::read(b));
                }
            }
        }
        off += len;
    }
    Ok(r)
}

#[cfg(test)]
mod report_tests {
    use super::*;

    #[test]
    fn sr_with_block_and_cname_round_trips() {
        let block = ReportBlock {
            ssrc: 7,
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_seq: 70_000,
            jitter: 12,
            lsr: 0xdead_beef,
            dlsr: 65536,
        };
        let info = SenderInfo {
            ntp: 0x0102_0304_0506_0708,
            rtp_ts: 160,
            packets: 50,
            octets: 8000,
        };
        let mut out = Vec::new();
        write_report(&mut out, 99, Some(info), &[block], "chorus@example");
        assert_eq!(validate_compound(&out), Ok(2));
        let r = read_reports(&out).unwrap();
        assert_eq!((r.sender_ssrc, r.sr_ntp), (99, Some(info.ntp)));
        assert_eq!(r.blocks, [block]);
        let mut rr = Vec::new();
        write_report(&mut rr, 5, None, &[], "x");
        assert_eq!(validate_compound(&rr), Ok(2));
        assert_eq!(read_reports(&rr).unwrap().sr_ntp, None);
    }

    proptest::proptest! {
        #[test]
        fn reading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = read_reports(&bytes);
        }
    }
}
