//! Fixed-ratio resampling between a codec's rate and the mix rate (rubato's
//! FFT resampler, one 20 ms chunk in, one out, no allocation per call).
//!
//! The FFT resampler delays by half its FFT block: one block per 20 ms
//! chunk cost 10 ms each way, 20 ms of a G.711 participant's round trip
//! through a 48 kHz mix. Four blocks per chunk cost 2.5 ms each way; the
//! anti-aliasing cutoff comes down a little (still above telephone band).

use audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Resampler as _, WindowFunction};

/// FFT blocks per 20 ms chunk: 5 ms each.
const SUB_CHUNKS: usize = 4;

pub struct Resampler {
    fft: Option<Fft<f32>>,
    out: Vec<f32>,
    chunk_in: usize,
}

impl Resampler {
    /// Converts `chunk_in` samples at `from` Hz into chunks at `to` Hz.
    pub fn new(from: u32, to: u32, chunk_in: usize) -> Result<Self, String> {
        if from == to {
            return Ok(Resampler {
                fft: None,
                out: Vec::with_capacity(chunk_in),
                chunk_in,
            });
        }
        let (from, to) = (from as usize, to as usize);
        let window = WindowFunction::BlackmanHarris2;
        let fft = Fft::<f32>::new_custom(from, to, chunk_in, SUB_CHUNKS, 1, window, FixedSync::Input)
            .map_err(|e| e.to_string())?;
        let out = vec![0.0; fft.output_frames_max()];
        Ok(Resampler {
            fft: Some(fft),
            out,
            chunk_in,
        })
    }

    /// Resamples one chunk (shorter input is padded with silence).
    pub fn process(&mut self, input: &[f32]) -> &[f32] {
        let Some(fft) = &mut self.fft else {
            self.out.clear();
            self.out.extend_from_slice(input);
            self.out.resize(self.chunk_in, 0.0);
            return &self.out;
        };
        let mut padded = [0.0f32; 2880];
        let inp: &[f32] = if input.len() == self.chunk_in {
            input
        } else {
            let n = input.len().min(self.chunk_in).min(padded.len());
            padded[..n].copy_from_slice(&input[..n]);
            &padded[..self.chunk_in.min(padded.len())]
        };
        let frames_out = fft.output_frames_next();
        let Ok(adapter_in) = SequentialSlice::new(inp, 1, inp.len()) else {
            return &[];
        };
        let out_len = self.out.len();
        let Ok(mut adapter_out) = SequentialSlice::new_mut(&mut self.out, 1, out_len) else {
            return &[];
        };
        match fft.process_into_buffer(&adapter_in, &mut adapter_out, None) {
            Ok((_, written)) => &self.out[..written.min(frames_out)],
            Err(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::mixer::tests::tone_level;

    #[test]
    fn the_delay_each_way_is_a_few_milliseconds() {
        for (from, to, chunk) in [
            (8000, 48000, 160),
            (48000, 8000, 960),
            (16000, 48000, 320),
            (48000, 16000, 960),
        ] {
            let r = Resampler::new(from, to, chunk).unwrap();
            let delay_ms = r.fft.as_ref().unwrap().output_delay() as f64 * 1000.0 / to as f64;
            assert!(delay_ms <= 3.0, "{from} -> {to}: {delay_ms} ms");
        }
    }

    #[test]
    fn a_tone_survives_8k_to_48k_and_back() {
        let mut up = Resampler::new(8000, 48000, 160).unwrap();
        let mut down = Resampler::new(48000, 8000, 960).unwrap();
        let mut last = Vec::new();
        for k in 0..10 {
            let frame: Vec<f32> = (0..160)
                .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * (k * 160 + i) as f32 / 8000.0).sin())
                .collect();
            let hi = up.process(&frame).to_vec();
            assert_eq!(hi.len(), 960);
            assert!(tone_level(&hi, 48000.0, 1000.0) > 0.3 || k == 0);
            last = down.process(&hi).to_vec();
            assert_eq!(last.len(), 160);
        }
        assert!(
            tone_level(&last, 8000.0, 1000.0) > 0.4,
            "{}",
            tone_level(&last, 8000.0, 1000.0)
        );
    }
}
