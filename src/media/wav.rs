//! WAV (RIFF, 16-bit PCM): headers for recordings, and reading files to
//! play. Pure: the recording's task writes the header with a zero length
//! first and again, with the real length, as the file grows and when it
//! ends; a file to play is checked chunk by chunk before a sample is read.

/// Bytes in the header this module writes.
pub const HEADER_LEN: usize = 44;

/// The 44-byte header of a 16-bit PCM WAV file with `data_bytes` of samples.
pub fn header(rate: u32, channels: u16, data_bytes: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let block = channels * 2;
    let mut put = |at: usize, b: &[u8]| h[at..at + b.len()].copy_from_slice(b);
    put(0, b"RIFF");
    put(4, &(36u32.saturating_add(data_bytes)).to_le_bytes());
    put(8, b"WAVEfmt ");
    put(16, &16u32.to_le_bytes());
    put(20, &1u16.to_le_bytes()); // PCM
    put(22, &channels.to_le_bytes());
    put(24, &rate.to_le_bytes());
    put(28, &(rate * block as u32).to_le_bytes());
    put(32, &block.to_le_bytes());
    put(34, &16u16.to_le_bytes());
    put(36, b"data");
    put(40, &data_bytes.to_le_bytes());
    h
}

/// Rates a file to play may have (20 ms of it must fit a tap's frame).
pub const RATES: std::ops::RangeInclusive<u32> = 8000..=48000;

/// A 16-bit PCM WAV file's rate and its samples, channels averaged to mono.
pub fn read(bytes: &[u8]) -> Result<(u32, Vec<i16>), String> {
    let u16_at = |b: &[u8], at: usize| b.get(at..at + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let u32_at = |b: &[u8], at: usize| b.get(at..at + 4).map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]));
    if bytes.get(..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err("not a WAV file (no RIFF/WAVE header)".into());
    }
    let (mut at, mut fmt, mut data) = (12usize, None, None);
    while let (Some(id), Some(len)) = (bytes.get(at..at + 4), u32_at(bytes, at + 4)) {
        let body = at + 8;
        let end = body.saturating_add(len as usize).min(bytes.len());
        match id {
            b"fmt " => {
                let f = &bytes[body..end];
                let field = |o| u16_at(f, o).ok_or("a short fmt chunk");
                fmt = Some((
                    field(0)?,
                    field(2)?,
                    u32_at(f, 4).ok_or("a short fmt chunk")?,
                    field(14)?,
                ));
            }
            b"data" => data = Some(&bytes[body..end]),
            _ => {}
        }
        // Chunks are padded to an even length.
        at = body.saturating_add(len as usize).saturating_add(len as usize & 1);
    }
    let (format, channels, rate, bits) = fmt.ok_or("no fmt chunk")?;
    let data = data.ok_or("no data chunk")?;
    if format != 1 || bits != 16 {
        return Err(format!(
            "only 16-bit PCM WAV is played (this is format {format}, {bits} bits)"
        ));
    }
    if !(1..=2).contains(&channels) || !RATES.contains(&rate) {
        return Err(format!(
            "{channels} channels at {rate} Hz: 1 or 2 channels, 8000 to 48000 Hz"
        ));
    }
    let ch = channels as usize;
    let pcm = data
        .chunks_exact(2 * ch)
        .map(|frame| {
            let sum: i32 = frame
                .chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]]) as i32)
                .sum();
            (sum / ch as i32) as i16
        })
        .collect();
    Ok((rate, pcm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stereo_16k_header() {
        let h = header(16000, 2, 64000);
        assert_eq!(&h[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 64036);
        assert_eq!(u16::from_le_bytes(h[22..24].try_into().unwrap()), 2);
        assert_eq!(
            u32::from_le_bytes(h[28..32].try_into().unwrap()),
            64000,
            "bytes per second"
        );
        assert_eq!(u32::from_le_bytes(h[40..44].try_into().unwrap()), 64000);
    }

    #[test]
    fn what_was_written_reads_back_as_mono() {
        let mut file = header(8000, 2, 8).to_vec();
        for (l, r) in [(100i16, 300i16), (-4, 4)] {
            file.extend_from_slice(&l.to_le_bytes());
            file.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(read(&file), Ok((8000, vec![200, 0])));
    }

    #[test]
    fn files_it_cannot_play_say_why() {
        let mut float = header(8000, 1, 0);
        float[20] = 3;
        for (bytes, says) in [
            (&b"RIFX"[..], "not a WAV"),
            (&float[..], "16-bit PCM"),
            (&header(96000, 1, 0)[..], "8000 to 48000"),
            (&header(8000, 1, 0)[..36], "no data"),
        ] {
            let e = read(bytes).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    proptest::proptest! {
        /// Any bytes: read or refused, never a panic.
        #[test]
        fn any_bytes(tail in proptest::collection::vec(0u8.., 0..200), len in 0u32..u32::MAX) {
            let mut b = header(8000, 1, len).to_vec();
            b.extend_from_slice(&tail);
            let _ = read(&b);
            let _ = read(&tail);
        }
    }
}
