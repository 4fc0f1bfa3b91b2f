//! A peak limiter instead of clipping: instant attack to keep every sample
//! within full scale, slow release so the gain does not pump.

/// Peaks above this are pulled down (about -0.9 dBFS).
const THRESHOLD: f32 = 0.9;
/// Per-sample gain recovery towards 1.0 (about 100 ms at 48 kHz).
const RELEASE: f32 = 0.0002;

#[derive(Debug, Clone)]
pub struct Limiter {
    gain: f32,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter { gain: 1.0 }
    }
}

impl Limiter {
    pub fn gain(&self) -> f32 {
        self.gain
    }

    /// Limits `frame` in place. The gain needed by the frame's peak is
    /// reached at the frame's start, so no sample exceeds the threshold.
    pub fn process(&mut self, frame: &mut [f32]) {
        let peak = frame.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let needed = if peak * self.gain > THRESHOLD {
            THRESHOLD / peak
        } else {
            self.gain
        };
        // Attack is instant (no sample may exceed the threshold); the gain
        // only ever drops at a frame start, where the mix is already loud.
        self.gain = self.gain.min(needed);
        for x in frame.iter_mut() {
            *x = (*x * self.gain).clamp(-1.0, 1.0);
            self.gain = (self.gain + RELEASE).min(1.0);
            if peak * self.gain > THRESHOLD {
                self.gain = THRESHOLD / peak;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_audio_passes_untouched_and_loud_audio_is_held_under_full_scale() {
        let mut l = Limiter::default();
        let mut quiet = vec![0.5f32; 960];
        l.process(&mut quiet);
        assert!(quiet.iter().all(|&x| x == 0.5));
        let mut loud: Vec<f32> = (0..960).map(|i| 3.0 * (i as f32 * 0.05).sin()).collect();
        l.process(&mut loud);
        assert!(loud.iter().all(|x| x.abs() <= THRESHOLD + 1e-6));
        assert!(l.gain() < 0.35);
        // The gain recovers once the loud part is over.
        for _ in 0..50 {
            let mut q = vec![0.1f32; 960];
            l.process(&mut q);
        }
        assert!(l.gain() > 0.99, "{}", l.gain());
    }
}
