//! Reception reports: the SR/RR compound chorus sends, and what it reads
//! from the compounds participants send.

use super::{Compound, Parsed, WireError};

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

    /// Reads a block from exactly 24 bytes (callers slice with `chunks_exact`).
    pub(super) fn read(b: &[u8]) -> ReportBlock {
        let w = |i: usize| {
            b.get(i..i + 4)
                .map_or(0, |w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        };
        let lost = w(4) & 0xff_ffff;
        ReportBlock {
            ssrc: w(0),
            fraction_lost: (w(4) >> 24) as u8,
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

/// Reads the SR and RR packets of a compound; other packets are checked and
/// skipped. Any malformed packet rejects the whole compound (RFC 3550 A.2).
pub fn read_reports(bytes: &[u8]) -> Result<Received, WireError> {
    if bytes.len() < 4 {
        return Err(WireError::TooShort);
    }
    let mut r = Received::default();
    for packet in Compound::new(bytes) {
        match packet?.parse()? {
            Parsed::SenderReport { ssrc, info, blocks } => {
                r.sender_ssrc = ssrc;
                r.sr_ntp = Some(info.ntp);
                r.blocks.extend(blocks.iter());
            }
            Parsed::ReceiverReport { ssrc, blocks } => {
                r.sender_ssrc = ssrc;
                r.blocks.extend(blocks.iter());
            }
            _ => {}
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtcp::validate_compound;

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
