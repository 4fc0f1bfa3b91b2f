//! Frame levels in dBov (0 = full-scale square wave), as RFC 6464 reports them.

/// Quietest level reported; RFC 6464 uses 127 for "silence or below".
pub const SILENCE_DBOV: f32 = -127.0;

/// RMS level of a frame in dBov.
pub fn dbov(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return SILENCE_DBOV;
    }
    let ms = frame.iter().map(|x| x * x).sum::<f32>() / frame.len() as f32;
    if ms <= 0.0 {
        return SILENCE_DBOV;
    }
    (10.0 * ms.log10()).max(SILENCE_DBOV)
}

/// Amplitude of the `freq` component of `x` (Goertzel), relative to full
/// scale: a sine of amplitude 0.3 at that frequency measures about 0.3.
pub fn tone_level(x: &[f32], rate: f32, freq: f32) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    let c = 2.0 * (2.0 * std::f32::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s0 = v + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    2.0 * (s1 * s1 + s2 * s2 - c * s1 * s2).max(0.0).sqrt() / x.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_scale_sine_is_minus_3_dbov_and_silence_is_floor() {
        let sine: Vec<f32> = (0..960).map(|i| (i as f32 * 0.0654).sin()).collect();
        assert!((dbov(&sine) + 3.01).abs() < 0.1, "{}", dbov(&sine));
        assert_eq!(dbov(&[0.0; 960]), SILENCE_DBOV);
        assert!((dbov(&[0.1; 960]) + 20.0).abs() < 0.01);
    }
}
