//! ITU-T G.711 μ-law and A-law, the segment algorithm of the reference
//! implementation (Sun Microsystems' public-domain g711.c), with decoding by
//! table. Tested exhaustively over all codes and all 65,536 inputs.

const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
/// μ-law bias, in the 14-bit domain the encoder works in.
const ULAW_BIAS14: i32 = 0x84 >> 2;
const ULAW_CLIP14: i32 = 8159;

fn segment(v: i32, ends: &[i32; 8]) -> usize {
    ends.iter().position(|&e| v <= e).unwrap_or(8)
}

/// Encodes one sample to μ-law.
pub fn encode_ulaw(pcm: i16) -> u8 {
    let mut v = (pcm as i32) >> 2;
    let mask = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    let v = v.min(ULAW_CLIP14) + ULAW_BIAS14;
    let seg = segment(v, &SEG_UEND);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    (((seg as i32) << 4 | ((v >> (seg + 1)) & 0x0F)) ^ mask) as u8
}

const fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let t = ((((u & 0x0F) as i32) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// Encodes one sample to A-law.
pub fn encode_alaw(pcm: i16) -> u8 {
    let mut v = (pcm as i32) >> 3;
    let mask = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &SEG_AEND);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mantissa = if seg < 2 { (v >> 1) & 0x0F } else { (v >> seg) & 0x0F };
    ((((seg as i32) << 4) | mantissa) ^ mask) as u8
}

const fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    t = match seg {
        0 => t + 8,
        1 => t + 0x108,
        _ => (t + 0x108) << (seg - 1),
    };
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

macro_rules! decode_table {
    ($f:ident) => {{
        let mut t = [0i16; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = $f(i as u8);
            i += 1;
        }
        t
    }};
}

const ULAW_TABLE: [i16; 256] = decode_table!(ulaw_to_linear);
const ALAW_TABLE: [i16; 256] = decode_table!(alaw_to_linear);

pub fn decode_ulaw(u: u8) -> i16 {
    ULAW_TABLE[u as usize]
}

pub fn decode_alaw(a: u8) -> i16 {
    ALAW_TABLE[a as usize]
}

/// Which law: PCMU (payload type 0) or PCMA (8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Ulaw,
    Alaw,
}

impl Law {
    /// Decodes `payload` into `out` (one sample per byte); returns the count.
    pub fn decode(self, payload: &[u8], out: &mut [i16]) -> usize {
        let n = payload.len().min(out.len());
        let t = match self {
            Law::Ulaw => &ULAW_TABLE,
            Law::Alaw => &ALAW_TABLE,
        };
        for (o, &b) in out[..n].iter_mut().zip(payload) {
            *o = t[b as usize];
        }
        n
    }

    /// Encodes `pcm` into `out`; returns the count.
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) -> usize {
        let n = pcm.len().min(out.len());
        let f = match self {
            Law::Ulaw => encode_ulaw,
            Law::Alaw => encode_alaw,
        };
        for (o, &s) in out[..n].iter_mut().zip(pcm) {
            *o = f(s);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // From the reference tables: silence, full scale, smallest steps.
        assert_eq!(decode_ulaw(0xFF), 0);
        assert_eq!(decode_ulaw(0x7F), 0);
        assert_eq!(decode_ulaw(0x80), 32124);
        assert_eq!(decode_ulaw(0x00), -32124);
        assert_eq!(decode_ulaw(0xFE), 8);
        assert_eq!(decode_alaw(0xD5), 8);
        assert_eq!(decode_alaw(0x55), -8);
        assert_eq!(decode_alaw(0xAA), 32256);
        assert_eq!(decode_alaw(0x2A), -32256);
        assert_eq!(encode_ulaw(0), 0xFF);
        assert_eq!(encode_alaw(0), 0xD5);
        assert_eq!(encode_ulaw(i16::MAX), 0x80);
        assert_eq!(encode_ulaw(i16::MIN), 0x00);
        assert_eq!(encode_alaw(i16::MAX), 0xAA);
        assert_eq!(encode_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            // μ-law 0x7F is "negative zero"; zero encodes as 0xFF.
            let want = if c == 0x7F { 0xFF } else { c };
            assert_eq!(encode_ulaw(decode_ulaw(c)), want, "μ-law {c:#04x}");
            assert_eq!(encode_alaw(decode_alaw(c)), c, "A-law {c:#04x}");
        }
    }

    #[test]
    fn every_input_lands_on_the_nearest_level_and_is_monotonic() {
        for law in [Law::Ulaw, Law::Alaw] {
            let enc = |x: i16| {
                if law == Law::Ulaw {
                    encode_ulaw(x)
                } else {
                    encode_alaw(x)
                }
            };
            let dec = |c: u8| {
                if law == Law::Ulaw {
                    decode_ulaw(c)
                } else {
                    decode_alaw(c)
                }
            };
            let mut levels: Vec<i16> = (0..=255u8).map(dec).collect();
            levels.sort_unstable();
            levels.dedup();
            let mut prev = i16::MIN;
            for x in i16::MIN..=i16::MAX {
                let y = dec(enc(x));
                assert!(y >= prev, "{law:?}: not monotonic at {x}");
                prev = y;
                // The chosen level is within one step of the best one.
                let best = levels.iter().min_by_key(|l| (x as i32 - **l as i32).abs()).unwrap();
                let i = levels.binary_search(best).unwrap();
                let step = levels.get(i + 1).copied().unwrap_or(*best) as i32
                    - levels.get(i.saturating_sub(1)).copied().unwrap_or(*best) as i32;
                assert!(
                    (y as i32 - *best as i32).abs() <= step,
                    "{law:?}: {x} -> {y}, best {best}"
                );
            }
        }
    }

    #[test]
    fn bulk_calls_match_single_samples() {
        let pcm: Vec<i16> = (0..160).map(|i| ((i as f64 / 10.0).sin() * 12000.0) as i16).collect();
        let mut enc = [0u8; 160];
        let mut dec = [0i16; 160];
        for law in [Law::Ulaw, Law::Alaw] {
            assert_eq!(law.encode(&pcm, &mut enc), 160);
            assert_eq!(law.decode(&enc, &mut dec), 160);
            let snr_ok = pcm.iter().zip(&dec).all(|(a, b)| (*a as i32 - *b as i32).abs() < 1100);
            assert!(snr_ok, "{law:?}");
        }
    }
}
