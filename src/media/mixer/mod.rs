//! The conference mixer's core: levels, active-speaker selection, mix-minus
//! and a limiter. Pure, on 20 ms frames of mono f32 samples at the mix rate
//! (full scale = 1.0).
//!
//! Cost grows with speakers, not listeners: each tick produces one shared
//! mix (all active speakers) plus one mix-minus per active speaker; every
//! listener gets the shared mix, so it is encoded once per codec setting.

pub mod estimate;
pub mod level;
pub mod limiter;
pub mod speakers;

use limiter::Limiter;

/// Identifies a participant within a conference.
pub type ParticipantId = u32;

/// Which mix a participant hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MixId {
    /// All active speakers: what listeners hear.
    Shared,
    /// All active speakers but this one: what an active speaker hears.
    Minus(ParticipantId),
    /// What this participant hears, with an application whispering to it
    /// (built and encoded for it alone, outside `Mixes`).
    Own(ParticipantId),
}

/// One tick's mixes, limited and ready to encode.
#[derive(Debug, Default)]
pub struct Mixes {
    pub shared: Vec<f32>,
    pub minus: Vec<(ParticipantId, Vec<f32>)>,
}

impl Mixes {
    pub fn get(&self, id: MixId) -> &[f32] {
        match id {
            MixId::Shared => &self.shared,
            MixId::Minus(p) | MixId::Own(p) => self
                .minus
                .iter()
                .find(|(q, _)| *q == p)
                .map(|(_, m)| m.as_slice())
                .unwrap_or(&self.shared),
        }
    }
}

/// Builds the shared mix and the mix-minus of each speaker, with one
/// limiter per output so that one loud mix never ducks another.
#[derive(Debug, Default)]
pub struct MixMinus {
    shared_limiter: Limiter,
    limiters: Vec<(ParticipantId, Limiter)>,
    mixes: Mixes,
}

impl MixMinus {
    /// `speakers`: (id, frame, gain) of the active speakers; all frames have
    /// `frame_len` samples. Reuses its buffers from tick to tick; the
    /// speakers come as an iterator (walked a few times), so the caller
    /// need not collect them either.
    pub fn mix<'f, I>(&mut self, speakers: I, frame_len: usize) -> &Mixes
    where
        I: Iterator<Item = (ParticipantId, &'f [f32], f32)> + Clone,
    {
        let shared = &mut self.mixes.shared;
        shared.clear();
        shared.resize(frame_len, 0.0);
        for (_, frame, gain) in speakers.clone() {
            for (s, x) in shared.iter_mut().zip(frame.iter()) {
                *s += x * gain;
            }
        }
        // Minus mixes: shared minus own contribution (before limiting).
        let speaking = |p: &ParticipantId| speakers.clone().any(|(q, _, _)| q == *p);
        self.mixes.minus.retain(|(p, _)| speaking(p));
        self.limiters.retain(|(p, _)| speaking(p));
        for (id, frame, gain) in speakers.clone() {
            let slot = match self.mixes.minus.iter().position(|(p, _)| *p == id) {
                Some(i) => i,
                None => {
                    self.mixes.minus.push((id, Vec::new()));
                    self.mixes.minus.len() - 1
                }
            };
            let m = &mut self.mixes.minus[slot].1;
            m.clear();
            m.extend(shared.iter().zip(frame.iter()).map(|(s, x)| s - x * gain));
            let lim = match self.limiters.iter().position(|(p, _)| *p == id) {
                Some(i) => &mut self.limiters[i].1,
                None => {
                    self.limiters.push((id, Limiter::default()));
                    &mut self.limiters.last_mut().expect("just pushed").1
                }
            };
            lim.process(m);
        }
        self.shared_limiter.process(&mut self.mixes.shared);
        &self.mixes
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub use super::level::tone_level;

    pub fn tone(freq: f32, amp: f32, n: usize, start: usize) -> Vec<f32> {
        (0..n)
            .map(|i| amp * (2.0 * std::f32::consts::PI * freq * (start + i) as f32 / 48000.0).sin())
            .collect()
    }

    #[test]
    fn nobody_hears_themselves() {
        let mut mm = MixMinus::default();
        let a = tone(440.0, 0.3, 960, 0);
        let b = tone(1000.0, 0.3, 960, 0);
        let mixes = mm.mix([(1, a.as_slice(), 1.0), (2, b.as_slice(), 1.0)].into_iter(), 960);
        let lvl = |m: &[f32], f| tone_level(m, 48000.0, f);
        assert!(lvl(mixes.get(MixId::Shared), 440.0) > 0.25 && lvl(mixes.get(MixId::Shared), 1000.0) > 0.25);
        let for_a = mixes.get(MixId::Minus(1));
        assert!(lvl(for_a, 440.0) < 0.01 && lvl(for_a, 1000.0) > 0.25, "A hears only B");
        let for_b = mixes.get(MixId::Minus(2));
        assert!(lvl(for_b, 1000.0) < 0.01 && lvl(for_b, 440.0) > 0.25, "B hears only A");
        // A non-speaker asking for a minus mix gets the shared one.
        assert_eq!(mixes.get(MixId::Minus(9)), mixes.get(MixId::Shared));
    }

    #[test]
    fn eight_loud_speakers_do_not_clip() {
        let mut mm = MixMinus::default();
        let frames: Vec<Vec<f32>> = (0..8).map(|i| tone(300.0 + 100.0 * i as f32, 0.9, 960, 0)).collect();
        let speakers: Vec<(ParticipantId, &[f32], f32)> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| (i as u32, f.as_slice(), 1.0))
            .collect();
        for _ in 0..10 {
            let mixes = mm.mix(speakers.iter().copied(), 960);
            assert!(mixes.shared.iter().all(|s| s.abs() <= 1.0), "shared mix clips");
            for (_, m) in &mixes.minus {
                assert!(m.iter().all(|s| s.abs() <= 1.0), "a minus mix clips");
            }
        }
    }
}
