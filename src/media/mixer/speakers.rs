//! Who is speaking, and which few are mixed. Levels with hysteresis: a
//! participant starts speaking after `on_frames` frames above `on_dbov` and
//! stops after `off_frames` frames below `off_dbov` (a hangover that rides
//! over pauses between words). Of those speaking, the loudest `max_active`
//! are mixed; an incumbent keeps its place unless a newcomer is louder by
//! `replace_margin_db`, so the mix does not flap between similar voices.

use super::ParticipantId;

#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    pub max_active: usize,
    pub on_dbov: f32,
    pub off_dbov: f32,
    pub on_frames: u32,
    pub off_frames: u32,
    pub replace_margin_db: f32,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            max_active: 3,
            on_dbov: -45.0,
            off_dbov: -52.0,
            on_frames: 2,
            off_frames: 25,
            replace_margin_db: 6.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeakerEvent {
    Started(ParticipantId),
    Stopped(ParticipantId),
}

#[derive(Debug, Clone)]
struct State {
    id: ParticipantId,
    /// Smoothed level in dBov.
    level: f32,
    speaking: bool,
    run: u32,
    active: bool,
}

#[derive(Debug, Default)]
pub struct Speakers {
    pub config: SpeakerConfig,
    states: Vec<State>,
    /// Participant id -> index in `states`: lookups stay O(1) with 1,000 participants.
    index: std::collections::HashMap<ParticipantId, usize>,
}

impl Speakers {
    pub fn new(config: SpeakerConfig) -> Self {
        Speakers {
            config,
            states: Vec::new(),
            index: Default::default(),
        }
    }

    pub fn remove(&mut self, id: ParticipantId) {
        self.states.retain(|s| s.id != id);
        self.index = self.states.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    }

    fn state(&self, id: ParticipantId) -> Option<&State> {
        self.index.get(&id).map(|&i| &self.states[i])
    }

    /// Whether `id` is mixed this tick.
    pub fn is_active(&self, id: ParticipantId) -> bool {
        self.state(id).is_some_and(|s| s.active)
    }

    pub fn active(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.states.iter().filter(|s| s.active).map(|s| s.id)
    }

    pub fn level(&self, id: ParticipantId) -> Option<f32> {
        self.state(id).map(|s| s.level)
    }

    pub fn is_speaking(&self, id: ParticipantId) -> bool {
        self.state(id).is_some_and(|s| s.speaking)
    }

    /// One tick: every participant's frame level in dBov (silence, muted or
    /// no audio: `level::SILENCE_DBOV`). Appends speaking changes to `events`.
    pub fn update(&mut self, levels: &[(ParticipantId, f32)], events: &mut Vec<SpeakerEvent>) {
        let c = &self.config;
        for &(id, db) in levels {
            let i = match self.index.get(&id) {
                Some(&i) => i,
                None => {
                    self.index.insert(id, self.states.len());
                    self.states.push(State {
                        id,
                        level: db,
                        speaking: false,
                        run: 0,
                        active: false,
                    });
                    self.states.len() - 1
                }
            };
            let s = &mut self.states[i];
            s.level += (db - s.level) * 0.3;
            if s.speaking {
                s.run = if db < c.off_dbov { s.run + 1 } else { 0 };
                if s.run >= c.off_frames {
                    s.speaking = false;
                    s.run = 0;
                    events.push(SpeakerEvent::Stopped(id));
                }
            } else {
                s.run = if db > c.on_dbov { s.run + 1 } else { 0 };
                if s.run >= c.on_frames {
                    s.speaking = true;
                    s.run = 0;
                    events.push(SpeakerEvent::Started(id));
                }
            }
        }
        for s in &mut self.states {
            if !s.speaking {
                s.active = false;
            }
        }
        // A lowered limit (overload) drops the quietest first.
        while self.states.iter().filter(|s| s.active).count() > self.config.max_active {
            let quietest = self
                .states
                .iter_mut()
                .filter(|s| s.active)
                .min_by(|a, b| a.level.total_cmp(&b.level))
                .expect("more active than the limit, so at least one");
            quietest.active = false;
        }
        // Fill free slots with the loudest speakers, then let a much louder
        // newcomer replace the quietest incumbent.
        loop {
            let active = self.states.iter().filter(|s| s.active).count();
            let candidate = self
                .states
                .iter()
                .enumerate()
                .filter(|(_, s)| s.speaking && !s.active)
                .max_by(|a, b| a.1.level.total_cmp(&b.1.level))
                .map(|(i, s)| (i, s.level));
            let Some((ci, clevel)) = candidate else { break };
            if active < self.config.max_active {
                self.states[ci].active = true;
                continue;
            }
            let quietest = self
                .states
                .iter()
                .enumerate()
                .filter(|(_, s)| s.active)
                .min_by(|a, b| a.1.level.total_cmp(&b.1.level))
                .map(|(i, s)| (i, s.level));
            match quietest {
                Some((qi, qlevel)) if clevel > qlevel + self.config.replace_margin_db => {
                    self.states[qi].active = false;
                    self.states[ci].active = true;
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::mixer::level::SILENCE_DBOV;

    fn tick(s: &mut Speakers, levels: &[(ParticipantId, f32)]) -> Vec<SpeakerEvent> {
        let mut ev = Vec::new();
        s.update(levels, &mut ev);
        ev
    }

    fn active(s: &Speakers) -> Vec<ParticipantId> {
        let mut v: Vec<_> = s.active().collect();
        v.sort();
        v
    }

    #[test]
    fn the_loudest_three_of_five_are_mixed() {
        let mut s = Speakers::default();
        let levels = [(1, -20.0), (2, -30.0), (3, -25.0), (4, -35.0), (5, -22.0)];
        let mut events = Vec::new();
        for _ in 0..5 {
            events.extend(tick(&mut s, &levels));
        }
        assert_eq!(active(&s), [1, 3, 5]);
        assert_eq!(events.len(), 5, "all five speak: {events:?}");
    }

    #[test]
    fn pauses_between_words_keep_the_speaker() {
        let mut s = Speakers::default();
        for _ in 0..5 {
            tick(&mut s, &[(1, -20.0)]);
        }
        for _ in 0..10 {
            assert!(tick(&mut s, &[(1, SILENCE_DBOV)]).is_empty());
        }
        assert_eq!(active(&s), [1], "a 200 ms pause is not the end");
        let mut stopped = Vec::new();
        for _ in 0..30 {
            stopped.extend(tick(&mut s, &[(1, SILENCE_DBOV)]));
        }
        assert_eq!(stopped, [SpeakerEvent::Stopped(1)]);
        assert!(active(&s).is_empty());
    }

    #[test]
    fn incumbents_yield_only_to_a_clearly_louder_voice() {
        let mut s = Speakers::new(SpeakerConfig {
            max_active: 1,
            ..SpeakerConfig::default()
        });
        for _ in 0..10 {
            tick(&mut s, &[(1, -30.0), (2, SILENCE_DBOV)]);
        }
        for _ in 0..20 {
            tick(&mut s, &[(1, -30.0), (2, -27.0)]);
        }
        assert_eq!(active(&s), [1], "3 dB louder is not enough");
        for _ in 0..20 {
            tick(&mut s, &[(1, -30.0), (2, -15.0)]);
        }
        assert_eq!(active(&s), [2]);
    }

    #[test]
    fn a_click_does_not_start_speaking() {
        let mut s = Speakers::default();
        tick(&mut s, &[(1, -10.0)]);
        assert!(tick(&mut s, &[(1, SILENCE_DBOV)]).is_empty());
        assert!(active(&s).is_empty());
    }
}
