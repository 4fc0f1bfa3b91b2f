//! WAV (RIFF, 16-bit PCM) headers for recordings. Pure: the recording's
//! task writes the header with a zero length first and again, with the
//! real length, as the file grows and when it ends.

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
}
