//! Reading Ogg Opus files to play (RFC 3533 pages, RFC 7845 headers):
//! every page checked (capture pattern, version, CRC, lengths) before its
//! packets are used, packets joined across pages, decoded to 48 kHz mono.
//! Only the first logical stream is read. Pure: bytes in, samples out.

use super::crc32_update;

/// The most samples a file may decode to: as many as the largest WAV file
/// to play holds (100 MB of 16-bit samples), 17 minutes at 48 kHz.
pub const MAX_SAMPLES: usize = 50 << 20;

/// The rate files are decoded at.
pub const RATE: u32 = 48000;

/// A file's audio at `RATE`, channels mixed to mono, pre-skip removed.
pub fn decode(bytes: &[u8]) -> Result<(u32, Vec<i16>), String> {
    let mut s = Stream::default();
    let mut at = 0;
    while at < bytes.len() {
        at = page(bytes, at, &mut s)?;
    }
    match s.decoder {
        None => Err("not an Ogg Opus file: no OpusHead".into()),
        Some(_) if s.packets < 3 => Err("the Ogg Opus file holds no audio".into()),
        Some(_) => Ok((RATE, s.pcm)),
    }
}

#[derive(Default)]
struct Stream {
    serial: Option<u32>,
    /// A packet continued on the next page.
    partial: Vec<u8>,
    packets: usize,
    decoder: Option<opus::Decoder>,
    pre_skip: usize,
    pcm: Vec<i16>,
}

/// Checks the page at `at`, hands its whole packets on; where the next
/// page starts.
fn page(bytes: &[u8], at: usize, s: &mut Stream) -> Result<usize, String> {
    let bad = |what: &str| format!("not an Ogg Opus file: {what} in the page at byte {at}");
    let h = bytes.get(at..at + 27).ok_or_else(|| bad("a truncated header"))?;
    if &h[..4] != b"OggS" || h[4] != 0 {
        return Err(bad("no OggS version 0"));
    }
    let segments = usize::from(h[26]);
    let lacing = bytes
        .get(at + 27..at + 27 + segments)
        .ok_or_else(|| bad("truncated lacing"))?;
    let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
    let end = at + 27 + segments + body_len;
    let whole = bytes.get(at..end).ok_or_else(|| bad("a truncated body"))?;
    let crc = crc32_update(crc32_update(crc32_update(0, &whole[..22]), &[0; 4]), &whole[26..]);
    if crc.to_le_bytes() != whole[22..26] {
        return Err(bad("a wrong CRC"));
    }
    let serial = u32::from_le_bytes([h[14], h[15], h[16], h[17]]);
    if *s.serial.get_or_insert(serial) != serial {
        // Another logical stream, multiplexed: not ours.
        return Ok(end);
    }
    let mut body = &whole[27 + segments..];
    for &l in lacing {
        let (seg, rest) = body.split_at(usize::from(l));
        body = rest;
        s.partial.extend_from_slice(seg);
        if l < 255 {
            let packet = std::mem::take(&mut s.partial);
            s.packet(&packet)?;
            s.partial = packet;
            s.partial.clear();
        }
    }
    Ok(end)
}

impl Stream {
    fn packet(&mut self, p: &[u8]) -> Result<(), String> {
        self.packets += 1;
        match self.packets {
            1 => self.head(p),
            2 if p.starts_with(b"OpusTags") => Ok(()),
            2 => Err("not an Ogg Opus file: no OpusTags".into()),
            n => self.audio(p, n),
        }
    }

    fn head(&mut self, p: &[u8]) -> Result<(), String> {
        if p.len() < 19 || !p.starts_with(b"OpusHead") {
            return Err("not an Ogg Opus file: no OpusHead".into());
        }
        // Version 1 (any minor, RFC 7845 5.1); mapping family 0 is mono or stereo.
        if p[8] >> 4 != 0 || !(1..=2).contains(&p[9]) || p[18] != 0 {
            return Err("only mono and stereo Ogg Opus files (version 1, mapping family 0) are played".into());
        }
        self.pre_skip = usize::from(u16::from_le_bytes([p[10], p[11]]));
        let d = opus::Decoder::new(RATE, opus::Channels::Mono).map_err(|e| e.to_string())?;
        self.decoder = Some(d);
        Ok(())
    }

    fn audio(&mut self, p: &[u8], n: usize) -> Result<(), String> {
        let Some(d) = &mut self.decoder else { return Ok(()) };
        if p.is_empty() {
            return Ok(());
        }
        // A packet holds at most 120 ms.
        let mut buf = [0i16; 5760];
        let got = d
            .decode(p, &mut buf, false)
            .map_err(|e| format!("Ogg Opus packet {n} does not decode: {e}"))?;
        let skip = self.pre_skip.min(got);
        self.pre_skip -= skip;
        if self.pcm.len() + got - skip > MAX_SAMPLES {
            return Err(format!(
                "the file plays for more than {} minutes",
                MAX_SAMPLES / RATE as usize / 60
            ));
        }
        self.pcm.extend_from_slice(&buf[skip..got]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::OggOpus;
    use super::*;
    use crate::media::mixer::level::tone_level;
    use proptest::prelude::*;

    fn file(rate: u32, channels: usize, seconds: usize) -> Vec<u8> {
        let mut o = OggOpus::new(rate, channels, 5).unwrap();
        let mut bytes = o.headers();
        let n = rate as usize * seconds;
        let pcm: Vec<i16> = (0..n)
            .flat_map(|i| {
                let s = (8000.0 * (2.0 * std::f32::consts::PI * 500.0 * i as f32 / rate as f32).sin()) as i16;
                std::iter::repeat_n(s, channels)
            })
            .collect();
        bytes.extend(o.push(&pcm).unwrap());
        bytes.extend(o.finish().unwrap());
        bytes
    }

    #[test]
    fn a_file_chorus_recorded_plays_back() {
        for (rate, channels) in [(16000, 1), (48000, 2)] {
            let (r, pcm) = decode(&file(rate, channels, 2)).unwrap();
            assert_eq!(r, RATE);
            // Two seconds, less the encoder's delay (pre-skip).
            assert!((2 * 48000 - 960..=2 * 48000).contains(&pcm.len()), "{}", pcm.len());
            let x: Vec<f32> = pcm[4800..].iter().map(|&s| s as f32 / 32768.0).collect();
            assert!(tone_level(&x, 48000.0, 500.0) > 0.2, "{rate} Hz, {channels} channels");
        }
    }

    #[test]
    fn damaged_files_say_what_is_wrong() {
        let good = file(16000, 1, 1);
        let mut crc = good.clone();
        crc[good.len() - 10] ^= 1;
        let mut head = good.clone();
        head[28..36].copy_from_slice(b"OpusHeaX");
        for (bytes, says) in [
            ([b"RIFF".as_slice(), &[0; 40]].concat(), "OggS"),
            (good[..good.len() - 5].to_vec(), "truncated"),
            (crc, "CRC"),
            (good[..good.len() / 8].to_vec(), "truncated"),
        ] {
            let e = decode(&bytes).unwrap_err();
            assert!(e.contains(says), "{says}: {e}");
        }
        // A changed byte fails its page's CRC before the header is read.
        assert!(decode(&head).unwrap_err().contains("CRC"));
    }

    #[test]
    fn the_fuzz_seeds_reach_the_decoder() {
        for name in ["ogg_opus", "ogg_split_packet"] {
            let path = format!("{}/fuzz/corpus/wav/{name}", env!("CARGO_MANIFEST_DIR"));
            let (_, pcm) = decode(&std::fs::read(path).unwrap()).expect(name);
            assert!(!pcm.is_empty(), "{name}");
        }
    }

    /// Each page's CRC computed again, as far as the pages hold together.
    fn recrc(b: &mut [u8]) {
        let mut at = 0;
        while at + 27 <= b.len() {
            let seg = usize::from(b[at + 26]);
            let Some(lacing) = b.get(at + 27..at + 27 + seg) else {
                return;
            };
            let end = at + 27 + seg + lacing.iter().map(|&l| usize::from(l)).sum::<usize>();
            if end > b.len() {
                return;
            }
            b[at + 22..at + 26].fill(0);
            let c = super::super::crc32(&b[at..end]);
            b[at + 22..at + 26].copy_from_slice(&c.to_le_bytes());
            at = end;
        }
    }

    proptest! {
        /// Any bytes, and any damage to a good file, are read or refused.
        #[test]
        fn any_bytes_are_read_or_refused(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        ) {
            let _ = decode(&bytes);
            let mut good = file(8000, 1, 1);
            for (at, x) in flips {
                let i = at % good.len();
                good[i] ^= x;
            }
            // With the CRCs made right again, the damage reaches the
            // headers and the Opus packets.
            recrc(&mut good);
            if let Ok((_, pcm)) = decode(&good) {
                prop_assert!(pcm.len() <= MAX_SAMPLES);
            }
        }
    }
}
