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
