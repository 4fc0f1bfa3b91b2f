//! Typed views of the RTCP packet types (RFC 3550 6.4-6.7, RFC 4585 6.1,
//! RFC 3611 3). Each checks its counts and lengths against the body before
//! anything reads it.

use super::{Packet, ReportBlock, SenderInfo, WireError};
use super::{APP, BYE, PSFB, RR, RTPFB, SDES, SR, XR};

/// Length of one reception report block.
const BLOCK_LEN: usize = 24;
/// Sender SSRC plus sender info of an SR.
const SR_FIXED_LEN: usize = 24;

/// What one packet of a compound says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    SenderReport {
        ssrc: u32,
        info: SenderInfo,
        blocks: ReportBlocks<'a>,
    },
    ReceiverReport {
        ssrc: u32,
        blocks: ReportBlocks<'a>,
    },
    /// Source descriptions: `chunks` chunks, each checked to end within the body.
    Sdes {
        chunks: usize,
    },
    Bye {
        sources: usize,
        reason: Option<&'a [u8]>,
    },
    App {
        ssrc: u32,
        name: [u8; 4],
        data: &'a [u8],
    },
    /// Transport-layer (RTPFB) or payload-specific (PSFB) feedback.
    Feedback {
        pt: u8,
        fmt: u8,
        sender: u32,
        media: u32,
        fci: &'a [u8],
    },
    /// Extended reports: `blocks` report blocks, each checked to fit.
    Xr {
        ssrc: u32,
        blocks: usize,
    },
    /// A type in 200..=213 that chorus does not read.
    Other {
        pt: u8,
    },
}

/// The report blocks of an SR or RR: exactly `count` blocks of 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl<'a> ReportBlocks<'a> {
    pub fn len(&self) -> usize {
        self.0.len() / BLOCK_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.0.chunks_exact(BLOCK_LEN).map(ReportBlock::read)
    }
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, WireError> {
    let w = b.get(at..at + 4).ok_or(WireError::Truncated)?;
    Ok(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

/// `count` blocks starting at `start`; extension data may follow (RFC 3550 6.4.1).
fn blocks(body: &[u8], start: usize, count: u8) -> Result<ReportBlocks<'_>, WireError> {
    let end = start + BLOCK_LEN * usize::from(count);
    body.get(start..end).map(ReportBlocks).ok_or(WireError::CountMismatch)
}

impl<'a> Packet<'a> {
    /// Reads the packet according to its type.
    pub fn parse(&self) -> Result<Parsed<'a>, WireError> {
        let body = self.body;
        Ok(match self.pt {
            SR => {
                if body.len() < SR_FIXED_LEN {
                    return Err(WireError::Truncated);
                }
                let ntp = (u64::from(u32_at(body, 4)?) << 32) | u64::from(u32_at(body, 8)?);
                Parsed::SenderReport {
                    ssrc: u32_at(body, 0)?,
                    info: SenderInfo {
                        ntp,
                        rtp_ts: u32_at(body, 12)?,
                        packets: u32_at(body, 16)?,
                        octets: u32_at(body, 20)?,
                    },
                    blocks: blocks(body, SR_FIXED_LEN, self.count)?,
                }
            }
            RR => Parsed::ReceiverReport {
                ssrc: u32_at(body, 0)?,
                blocks: blocks(body, 4, self.count)?,
            },
            SDES => Parsed::Sdes {
                chunks: sdes_chunks(body, self.count)?,
            },
            BYE => bye(body, self.count)?,
            APP => {
                let name = body.get(4..8).ok_or(WireError::Truncated)?;
                Parsed::App {
                    ssrc: u32_at(body, 0)?,
                    name: [name[0], name[1], name[2], name[3]],
                    data: &body[8..],
                }
            }
            RTPFB | PSFB => Parsed::Feedback {
                pt: self.pt,
                fmt: self.count,
                sender: u32_at(body, 0)?,
                media: u32_at(body, 4)?,
                fci: &body[8..],
            },
            XR => Parsed::Xr {
                ssrc: u32_at(body, 0)?,
                blocks: xr_blocks(&body[4..])?,
            },
            pt => Parsed::Other { pt },
        })
    }
}

/// Walks `count` SDES chunks: an SSRC, items (type, length, text) up to a
/// null item, then zeros to the next 32-bit boundary.
fn sdes_chunks(body: &[u8], count: u8) -> Result<usize, WireError> {
    let mut at = 0;
    for _ in 0..count {
        u32_at(body, at)?;
        at += 4;
        // Tolerated: a last chunk that ends with the packet, unterminated.
        while let Some(&kind) = body.get(at) {
            if kind == 0 {
                at = (at + 1).next_multiple_of(4);
                break;
            }
            let len = usize::from(*body.get(at + 1).ok_or(WireError::BadItem)?);
            at += 2 + len;
        }
        if at > body.len() {
            return Err(WireError::BadItem);
        }
    }
    Ok(usize::from(count))
}

fn bye(body: &[u8], count: u8) -> Result<Parsed<'_>, WireError> {
    let ssrcs = 4 * usize::from(count);
    let rest = body.get(ssrcs..).ok_or(WireError::CountMismatch)?;
    let reason = match rest.split_first() {
        None => None,
        Some((&len, text)) => Some(text.get(..usize::from(len)).ok_or(WireError::BadItem)?),
    };
    Ok(Parsed::Bye {
        sources: usize::from(count),
        reason,
    })
}

/// XR report blocks (RFC 3611 3): type, specific byte, length in words.
fn xr_blocks(mut rest: &[u8]) -> Result<usize, WireError> {
    let mut n = 0;
    while !rest.is_empty() {
        let h = rest.get(..4).ok_or(WireError::BadItem)?;
        let len = 4 * (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1);
        rest = rest.get(len..).ok_or(WireError::BadItem)?;
        n += 1;
    }
    Ok(n)
}
