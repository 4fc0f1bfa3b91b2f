//! Ogg Opus files (RFC 7845 in Ogg pages, RFC 3533) for recordings: 16-bit
//! PCM in, 20 ms Opus packets out, paged about once a second. Pure: the
//! recording's task hands it samples and writes the bytes it returns.
//! Files to play are read in `read`.

use opus::{Application, Channels, Encoder};

/// Opus packets per page: a second of audio.
const PACKETS_PER_PAGE: usize = 50;

pub mod read;

/// Ogg's CRC-32: polynomial 0x04c11db7, not reflected, no final XOR.
fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

/// The CRC of what came before (`crc`) and `data`.
fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    data.iter().fold(crc, |crc, &b| {
        let mut c = crc ^ (u32::from(b) << 24);
        for _ in 0..8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04c1_1db7
            } else {
                c << 1
            };
        }
        c
    })
}

/// One Ogg page holding whole `packets` (flags: 2 first page, 4 last).
fn page(serial: u32, seq: u32, granule: u64, flags: u8, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut lacing = Vec::new();
    for p in packets {
        lacing.extend(std::iter::repeat_n(255u8, p.len() / 255));
        lacing.push((p.len() % 255) as u8);
    }
    let mut out = Vec::with_capacity(27 + lacing.len() + packets.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(b"OggS");
    out.push(0);
    out.push(flags);
    out.extend_from_slice(&granule.to_le_bytes());
    out.extend_from_slice(&serial.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(lacing.len() as u8);
    out.extend_from_slice(&lacing);
    for p in packets {
        out.extend_from_slice(p);
    }
    let crc = crc32(&out);
    out[22..26].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Encodes PCM into an Ogg Opus stream.
pub struct OggOpus {
    encoder: Encoder,
    rate: u32,
    channels: usize,
    serial: u32,
    seq: u32,
    /// Granule position (48 kHz samples, pre-skip included) so far.
    granule: u64,
    pre_skip: u16,
    pcm: Vec<i16>,
    packets: Vec<Vec<u8>>,
}

impl OggOpus {
    /// `rate`: 8000, 12000, 16000, 24000 or 48000; 1 or 2 channels.
    pub fn new(rate: u32, channels: usize, serial: u32) -> Result<OggOpus, String> {
        let ch = if channels == 2 {
            Channels::Stereo
        } else {
            Channels::Mono
        };
        let mut encoder = Encoder::new(rate, ch, Application::Voip).map_err(|e| e.to_string())?;
        let lookahead = encoder.get_lookahead().map_err(|e| e.to_string())?;
        // Pre-skip counts 48 kHz samples (RFC 7845 4.2).
        let pre_skip = (lookahead as u32 * (48000 / rate)) as u16;
        Ok(OggOpus {
            encoder,
            rate,
            channels,
            serial,
            seq: 0,
            granule: u64::from(pre_skip),
            pre_skip,
            pcm: Vec::new(),
            packets: Vec::new(),
        })
    }

    /// The two header pages: OpusHead, OpusTags.
    pub fn headers(&mut self) -> Vec<u8> {
        let mut head = b"OpusHead".to_vec();
        head.push(1);
        head.push(self.channels as u8);
        head.extend_from_slice(&self.pre_skip.to_le_bytes());
        head.extend_from_slice(&self.rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        let vendor = b"chorus";
        let mut tags = b"OpusTags".to_vec();
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        let mut out = page(self.serial, 0, 0, 2, &[head]);
        out.extend(page(self.serial, 1, 0, 0, &[tags]));
        self.seq = 2;
        out
    }

    /// Adds interleaved PCM; returns the pages completed.
    pub fn push(&mut self, pcm: &[i16]) -> Result<Vec<u8>, String> {
        self.pcm.extend_from_slice(pcm);
        let frame = (self.rate / 50) as usize * self.channels;
        let mut out = Vec::new();
        while self.pcm.len() >= frame {
            let mut buf = [0u8; 1275];
            let n = self
                .encoder
                .encode(&self.pcm[..frame], &mut buf)
                .map_err(|e| e.to_string())?;
            self.pcm.drain(..frame);
            self.packets.push(buf[..n].to_vec());
            self.granule += 960;
            if self.packets.len() == PACKETS_PER_PAGE {
                out.extend(self.flush(0));
            }
        }
        Ok(out)
    }

    /// The last page (what is left, padded with silence to a whole packet).
    pub fn finish(&mut self) -> Result<Vec<u8>, String> {
        let frame = (self.rate / 50) as usize * self.channels;
        if !self.pcm.is_empty() {
            let pad = frame - self.pcm.len() % frame;
            self.pcm.extend(std::iter::repeat_n(0, pad % frame));
            let rest = std::mem::take(&mut self.pcm);
            let mut out = self.push(&rest)?;
            out.extend(self.flush(4));
            return Ok(out);
        }
        Ok(self.flush(4))
    }

    fn flush(&mut self, flags: u8) -> Vec<u8> {
        let packets = std::mem::take(&mut self.packets);
        let p = page(self.serial, self.seq, self.granule, flags, &packets);
        self.seq += 1;
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_carry_headers_then_audio_with_a_granule_in_48k() {
        let mut o = OggOpus::new(16000, 2, 7).unwrap();
        let mut bytes = o.headers();
        assert_eq!(&bytes[..4], b"OggS");
        assert_eq!(bytes[5], 2, "the first page begins the stream");
        bytes.extend(o.push(&vec![100i16; 320 * 2 * 60]).unwrap());
        bytes.extend(o.finish().unwrap());
        let pages: Vec<usize> = (0..bytes.len() - 3).filter(|&i| &bytes[i..i + 4] == b"OggS").collect();
        assert_eq!(pages.len(), 4, "head, tags, a second, the rest");
        let last = *pages.last().unwrap();
        assert_eq!(bytes[last + 5], 4, "the last page ends the stream");
        let granule = u64::from_le_bytes(bytes[last + 6..last + 14].try_into().unwrap());
        assert_eq!(granule, u64::from(o.pre_skip) + 60 * 960);
    }
}
